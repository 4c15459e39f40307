//! Seed 004 over IKEv2 through the simulator: a peer (deputy's plain Initiator or
//! Responder, standing in for any IKEv2 endpoint), the delegating terminal and the
//! substitution server, each on its own host. Each test tells one flow or one refusal of
//! the seed and asserts what every party saw.

mod common;

use deputy::ikev2::{FailReason, IkeEvent, Initiator, Responder};
use deputy::keyx::ike::{Terminal, TerminalEvent, TerminalFailure};
use deputy::keyx::messages::AuthResult;
use deputy::sim::Sim;

use common::keyx::*;

fn established_child(events: &[IkeEvent]) -> Option<deputy::ipsec::ChildSa> {
    events.iter().find_map(|e| match e {
        IkeEvent::ChildSaEstablished { child, .. } => Some((**child).clone()),
        _ => None,
    })
}

/// A Fig. 12 world whose peer started, run until everything settled.
fn fig12_started(sim: &mut Sim, spec: &Spec) -> common::keyx::World {
    let w = fig12(sim, spec);
    sim.with_actor(w.peer, |p: &mut Initiator, now| p.start(now))
        .unwrap()
        .unwrap();
    settle(sim);
    w
}

fn failures(events: &[TerminalEvent]) -> Vec<TerminalFailure> {
    events
        .iter()
        .filter_map(|e| match e {
            TerminalEvent::Failed { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

/// Fig. 12: the peer initiates; the terminal answers with the server's IKE_SA_INIT, asks
/// the server to authenticate the peer, gets SK_d and sets up the Child SA itself.
#[test]
fn peer_initiated_terminal_responds_fig12() {
    let mut sim = Sim::new(1);
    let spec = Spec::default();
    let w = fig12_started(&mut sim, &spec);

    let peer_events = ike_events(&mut sim, w.peer);
    let peer_child = established_child(&peer_events).expect("peer has a Child SA");
    assert!(peer_events.iter().any(|e| matches!(
        e,
        IkeEvent::IkeSaEstablished { peer_id, .. }
            if *peer_id == deputy::ikev2::Identity::Fqdn(TERMINAL_ID.into())
    )));

    let t_events = terminal_events(&mut sim, w.terminal);
    assert!(failures(&t_events).is_empty(), "{t_events:?}");
    let t_child = established_child(&terminal_ike(&t_events)).expect("terminal has a Child SA");
    // The same keys on both ends, crossed.
    assert_eq!(t_child.spi_in, peer_child.spi_out);
    assert_eq!(t_child.spi_out, peer_child.spi_in);
    assert_eq!(t_child.keys_in, peer_child.keys_out);
    assert_eq!(t_child.keys_out, peer_child.keys_in);
    // Installed into the terminal's own data plane, and ESP flows both ways.
    let t = sim.actor::<Terminal>(w.terminal).unwrap();
    assert!(t.data_plane().sa(t_child.spi_in).is_some());
    assert_eq!(t.exchange_count(), 0);
    let mut peer = peer_plane(&sim, peer_child);
    let now = sim.now();
    let out = udp_packet([192, 0, 2, 20], [192, 0, 2, 10], b"from the terminal");
    let back = udp_packet([192, 0, 2, 10], [192, 0, 2, 20], b"from the peer");
    sim.with_actor(w.terminal, |t: &mut Terminal, _| {
        assert_eq!(esp_across(now, t.data_plane_mut(), &mut peer, &out).0, out);
        assert_eq!(
            esp_across(now, &mut peer, t.data_plane_mut(), &back).0,
            back
        );
    })
    .unwrap();

    // The server ran one Diffie-Hellman, authenticated one peer, released SK_d once.
    let s = sim.actor::<Server>(w.server).unwrap();
    let c = s.dispatcher().protocol().counters();
    assert_eq!(c.diffie_hellman, 1);
    assert_eq!(c.authenticated, 1);
    assert_eq!(c.keys_released, 1);
}

/// The terminal initiates toward a responding peer (beyond the seed's figures).
#[test]
fn terminal_initiates() {
    let mut sim = Sim::new(2);
    let spec = Spec::default();
    let w = peer_responds(&mut sim, &spec);
    sim.with_actor(w.terminal, |t: &mut Terminal, now| {
        t.initiate(
            now,
            addr(PEER, 500),
            deputy::ikev2::Identity::Fqdn(PEER_ID.into()),
        )
    })
    .unwrap()
    .unwrap();
    settle(&mut sim);

    let t_events = terminal_events(&mut sim, w.terminal);
    assert!(failures(&t_events).is_empty(), "{t_events:?}");
    let t_child = established_child(&terminal_ike(&t_events)).expect("terminal has a Child SA");
    let p = sim.actor::<Responder>(w.peer).unwrap();
    let id = p.established()[0];
    let p_child = p.child_sa(id).unwrap();
    assert_eq!(t_child.keys_in, p_child.keys_out);
    assert_eq!(t_child.keys_out, p_child.keys_in);
    let c = server_counters(&sim, w.server);
    assert_eq!((c.diffie_hellman, c.keys_released), (1, 1));
}

/// S43: a peer that authenticates but is not in the policy database is refused; no key is
/// released; the peer hears AUTHENTICATION_FAILED.
#[test]
fn policy_database_refuses_the_peer() {
    let mut sim = Sim::new(3);
    let spec = Spec {
        allowed: vec![deputy::keyx::PeerPattern::Domain(
            "elsewhere.example".into(),
        )],
        ..Spec::default()
    };
    let w = fig12_started(&mut sim, &spec);
    let t_events = terminal_events(&mut sim, w.terminal);
    assert_eq!(failures(&t_events), vec![TerminalFailure::PolicyDenied]);
    assert!(established_child(&terminal_ike(&t_events)).is_none());
    let peer_events = ike_events(&mut sim, w.peer);
    assert!(peer_events.iter().any(|e| matches!(
        e,
        IkeEvent::Failed {
            reason: FailReason::AuthenticationFailed,
            ..
        }
    )));
    let c = server_counters(&sim, w.server);
    assert_eq!((c.policy_refused, c.keys_released), (1, 0));
}

/// S42: a peer whose AUTH does not verify (here: a wrong PSK) is refused.
#[test]
fn bad_peer_signature_is_refused() {
    use common::certs::{Alg, key, spki_der};
    use deputy::ikev2::auth::{AuthKeyDb, Credential, Signer};
    // A MAC under the wrong PSK, and a signature under a key other than the one the
    // server's authentication-key database pins for the peer's identity.
    let pinned = {
        let mut db = AuthKeyDb::new();
        db.pin_public_key(
            deputy::ikev2::Identity::Fqdn(PEER_ID.into()),
            &spki_der(&key(Alg::Ed25519, 61)),
        )
        .unwrap();
        db
    };
    let signer = Signer::new(key(Alg::Ed25519, 62), Vec::new()).unwrap();
    let cases = [
        Spec {
            peer_psk: b"not the psk the server holds".to_vec(),
            ..Spec::default()
        },
        Spec {
            auth_db: pinned.clone(),
            peer: Some(deputy::ikev2::IkeConfig::with_credential(
                deputy::ikev2::Identity::Fqdn(PEER_ID.into()),
                Credential::Signature(signer),
                {
                    let mut db = AuthKeyDb::new();
                    db.set_any_peer_psk(Some(IKE_PSK));
                    db
                },
                ANCHOR,
            )),
            ..Spec::default()
        },
    ];
    for (i, spec) in cases.iter().enumerate() {
        let mut sim = Sim::new(4);
        let w = fig12_started(&mut sim, spec);
        let t_events = terminal_events(&mut sim, w.terminal);
        assert_eq!(
            failures(&t_events),
            vec![TerminalFailure::NotAuthenticated(AuthResult::BadAuth)],
            "case {i}"
        );
        let c = server_counters(&sim, w.server);
        assert_eq!((c.auth_refused, c.keys_released), (1, 0), "case {i}");
    }
}

/// Phase 2 without the server (Fig. 13): a Child SA rekey asks nothing of the server.
#[test]
fn child_rekey_without_pfs_needs_no_server() {
    let mut sim = Sim::new(5);
    let spec = Spec::default();
    let w = fig12_started(&mut sim, &spec);
    let _ = terminal_events(&mut sim, w.terminal);
    let requests = sim
        .actor::<Terminal>(w.terminal)
        .unwrap()
        .counters()
        .requests;
    sim.with_actor(w.peer, |p: &mut Initiator, now| p.rekey_child(now))
        .unwrap()
        .unwrap();
    settle(&mut sim);
    let t_events = terminal_events(&mut sim, w.terminal);
    let rekeyed = terminal_ike(&t_events)
        .into_iter()
        .find_map(|e| match e {
            IkeEvent::ChildSaRekeyed { child, .. } => Some(*child),
            _ => None,
        })
        .expect("the terminal rekeyed the Child SA");
    let p = sim.actor::<Initiator>(w.peer).unwrap();
    let p_child = p.child_sa().unwrap();
    assert_eq!(rekeyed.keys_in, p_child.keys_out);
    let t = sim.actor::<Terminal>(w.terminal).unwrap();
    assert_eq!(t.counters().requests, requests, "no delegation request");
    assert!(t.data_plane().sa(rekeyed.spi_in).is_some());
}

/// The terminal's data plane holds one SA pair here: a Child SA rekey's new SA does not
/// fit while the old one stands, and the terminal says so rather than losing it quietly.
#[test]
fn a_child_sa_the_data_plane_refuses_is_reported() {
    let mut sim = Sim::new(15);
    let spec = Spec {
        plane: deputy::ipsec::DataPlaneConfig {
            max_sas: 1,
            ..Default::default()
        },
        ..Spec::default()
    };
    let w = fig12_started(&mut sim, &spec);
    let _ = terminal_events(&mut sim, w.terminal);
    sim.with_actor(w.peer, |p: &mut Initiator, now| p.rekey_child(now))
        .unwrap()
        .unwrap();
    settle(&mut sim);
    let t_events = terminal_events(&mut sim, w.terminal);
    let new = terminal_ike(&t_events)
        .into_iter()
        .find_map(|e| match e {
            IkeEvent::ChildSaRekeyed { child, .. } => Some(child.spi_in),
            _ => None,
        })
        .expect("rekeyed");
    assert!(t_events.iter().any(|e| matches!(
        e,
        TerminalEvent::ChildSaNotInstalled { spi_in, .. } if *spi_in == new
    )));
}

/// No server: the exchange fails with a typed reason, no key is set, and the terminal
/// keeps working (its tables are empty again).
#[test]
fn server_unreachable_fails_cleanly() {
    let mut sim = Sim::new(6);
    let spec = Spec {
        server_up: false,
        ..Spec::default()
    };
    let w = fig12_started(&mut sim, &spec);
    let t_events = terminal_events(&mut sim, w.terminal);
    let f = failures(&t_events);
    assert!(!f.is_empty(), "{t_events:?}");
    assert!(
        f.iter().all(|r| matches!(
            r,
            TerminalFailure::ServerUnreachable | TerminalFailure::Timeout
        )),
        "{f:?}"
    );
    let t = sim.actor::<Terminal>(w.terminal).unwrap();
    assert_eq!((t.exchange_count(), t.ike_sa_count()), (0, 0));
}

/// 10% loss, duplication and reordering on every hop: IKE retransmits, the channel's TCP
/// recovers, and the exchange still completes once.
#[test]
fn loss_and_reordering_are_survived() {
    for seed in 10..14 {
        let mut sim = Sim::new(seed);
        let spec = Spec {
            link: deputy::sim::LinkConfig {
                loss: 0.1,
                duplicate: 0.05,
                reorder: 0.1,
                reorder_delay: std::time::Duration::from_millis(20),
                ..Default::default()
            },
            ..Spec::default()
        };
        let w = fig12_started(&mut sim, &spec);
        let t_events = terminal_events(&mut sim, w.terminal);
        let children = terminal_ike(&t_events)
            .iter()
            .filter(|e| matches!(e, IkeEvent::ChildSaEstablished { .. }))
            .count();
        assert_eq!(children, 1, "seed {seed}: {t_events:?}");
        let c = server_counters(&sim, w.server);
        assert_eq!(
            c.diffie_hellman, 1,
            "seed {seed}: one DH, however often asked"
        );
    }
}

// ------------------------------------------------- the server's rules, message by message

mod direct {
    //! The substitution server's dispatcher driven message by message, with a real peer
    //! (deputy's Initiator) whose IKE_AUTH is opened with the keys the server released.

    use super::*;
    use deputy::ikev2::codec::{Payload, encode_chain};
    use deputy::ikev2::keys::{IkeKeys, SecretBytes};
    use deputy::ikev2::sk::SkCipher;
    use deputy::ikev2::{IkeConfig, InitiatorConfig};
    use deputy::keyx::ike::IkeSubstitute;
    use deputy::keyx::messages::{
        AuthRequest, Body, ErrorCode, KEYGEN_RESPONSE, KeyGenRequest, Message, Protocol, Role,
        StartOutcome, StartRequest, Transform,
    };
    use deputy::keyx::{Bounds, Direction, Dispatcher, PeerPattern, PolicyDb, SealContext};
    use deputy::{Actor, Input, Output};

    pub const SESSION: u64 = 0x5E55_1011;

    pub struct Direct {
        pub d: Dispatcher<IkeSubstitute>,
        pub peer: deputy::ikev2::Initiator,
        pub terminal: String,
        pub now: deputy::Instant,
    }

    pub fn every_transform() -> Vec<Transform> {
        vec![
            Transform {
                kind: 1,
                id: 12,
                key_bits: 128,
            },
            Transform {
                kind: 1,
                id: 28,
                key_bits: 0,
            },
            Transform {
                kind: 1,
                id: 20,
                key_bits: 128,
            },
            Transform {
                kind: 1,
                id: 20,
                key_bits: 256,
            },
            Transform {
                kind: 2,
                id: 5,
                key_bits: 0,
            },
            Transform {
                kind: 3,
                id: 12,
                key_bits: 0,
            },
        ]
    }

    pub fn direct(bounds: Bounds) -> Direct {
        let sim = Sim::new(77);
        let mut policy = PolicyDb::new();
        let peer_id = PeerPattern::Exactly(deputy::ikev2::Identity::Fqdn(PEER_ID.into()));
        policy
            .allow(&TERMINAL_NAME.into(), Direction::ToTerminal, peer_id)
            .unwrap();
        let d = Dispatcher::new(
            substitute(&sim, &Spec::default(), policy),
            bounds,
            deputy::wire::Limits::default(),
        );
        let peer = deputy::ikev2::Initiator::new(
            InitiatorConfig {
                ike: IkeConfig::new(deputy::ikev2::Identity::Fqdn(PEER_ID.into()), IKE_PSK),
                local: addr(PEER, 500),
                remote: addr(TERMINAL, 500),
            },
            Box::new(sim.rng("direct-peer")),
        )
        .unwrap();
        Direct {
            d,
            peer,
            terminal: TERMINAL_NAME.into(),
            now: deputy::Instant::ZERO,
        }
    }

    impl Direct {
        pub fn send(&mut self, seq: u32, body: Body) -> Option<Vec<u8>> {
            let bytes = Message {
                session: SESSION,
                seq,
                body,
            }
            .encode()
            .unwrap();
            self.d.handle(self.now, &self.terminal, &bytes)
        }

        pub fn ask(&mut self, seq: u32, body: Body) -> Body {
            let answer = self.send(seq, body).expect("an answer");
            Message::decode(&answer, &deputy::wire::Limits::default())
                .unwrap()
                .body
        }

        fn peer_sends(&mut self) -> Vec<u8> {
            let mut sent = None;
            while let Some(o) = self.peer.poll_output() {
                if let Output::Transmit(t) = o {
                    sent = Some(t.data);
                }
            }
            sent.expect("the peer sent a message")
        }

        /// S3-S4 with the peer's real IKE_SA_INIT request.
        pub fn start(&mut self, transforms: Vec<Transform>) -> Body {
            self.peer.start(self.now).unwrap();
            let init = self.peer_sends();
            self.ask(
                0,
                Body::StartRequest(StartRequest {
                    protocol: Protocol::Ikev2,
                    role: Role::Responder,
                    local: addr(TERMINAL, 500),
                    remote: addr(PEER, 500),
                    peer_message: Some(init),
                    transforms,
                    peer_id: None,
                }),
            )
        }

        /// S6-S7, then the peer's IKE_AUTH opened with the released keys: the proof it
        /// carries, ready for S9.
        pub fn keygen_and_peer_proof(&mut self) -> AuthRequest {
            let Body::KeyGenResponse(k) =
                self.ask(1, Body::KeyGenRequest(KeyGenRequest { peer_message: None }))
            else {
                panic!("no key generation response");
            };
            let response = k.message.unwrap();
            self.peer
                .handle_input(
                    self.now,
                    Input::Datagram {
                        from: addr(TERMINAL, 500),
                        to: addr(PEER, 500),
                        data: &response,
                    },
                )
                .unwrap();
            let ike_auth = self.peer_sends();
            let ctx = SealContext {
                msg_type: KEYGEN_RESPONSE,
                session: SESSION,
                seq: 1,
            };
            let plain = deputy::keyx::seal::open(&delegation_key(), ctx, &k.sealed.unwrap())
                .expect("sealed for this terminal");
            let mut fields = Vec::new();
            let mut rest = &plain[..];
            while rest.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                fields.push(SecretBytes::from_slice(&rest[2..2 + len]));
                rest = &rest[2 + len..];
            }
            let [sk_ei, sk_er, sk_ai, sk_ar] = <[SecretBytes; 4]>::try_from(fields).unwrap();
            let keys = IkeKeys {
                sk_d: SecretBytes::from_slice(&[]),
                sk_ai,
                sk_ar,
                sk_ei,
                sk_er,
                sk_pi: SecretBytes::from_slice(&[]),
                sk_pr: SecretBytes::from_slice(&[]),
            };
            let suite = deputy::ikev2::IkeSuite {
                encr: deputy::ikev2::Encr::AesCbc128,
                integ: Some(deputy::ikev2::Integ::HmacSha256_128),
                prf: deputy::ikev2::Prf::HmacSha256,
                group: deputy::crypto::dh::Group::X25519,
            };
            let limits = deputy::ikev2::codec::Limits::default();
            let sk = SkCipher::new(&suite, &keys, false).unwrap();
            let payloads = sk
                .open_raw(&ike_auth, &limits)
                .unwrap()
                .payloads(&limits)
                .unwrap();
            let proof: Vec<Payload> = payloads
                .into_iter()
                .filter(|p| matches!(p, Payload::IdI(_) | Payload::IdR(_) | Payload::Auth(_)))
                .collect();
            let (first_payload, payloads) = encode_chain(&proof).unwrap();
            AuthRequest {
                first_payload,
                payloads,
            }
        }
    }

    pub fn proceeds(b: &Body) -> bool {
        matches!(b, Body::StartResponse(r) if matches!(r.outcome, StartOutcome::Proceed { .. }))
    }

    pub fn error(b: &Body) -> Option<ErrorCode> {
        match b {
            Body::ErrorResponse(c) => Some(*c),
            _ => None,
        }
    }
}

use deputy::keyx::messages::{Body, ErrorCode};
use direct::*;

/// S45 before S42/S43: the key request is refused (OutOfState), and so is one after an
/// authentication that failed.
#[test]
fn key_request_before_authentication_is_refused() {
    let mut x = direct(deputy::keyx::Bounds::default());
    assert!(proceeds(&x.start(every_transform())));
    let mut proof = x.keygen_and_peer_proof();
    assert_eq!(
        error(&x.ask(2, Body::KeyRequest)),
        Some(ErrorCode::OutOfState)
    );
    // A tampered AUTH: S42 says no; the key stays refused.
    let last = proof.payloads.len() - 1;
    proof.payloads[last] ^= 1;
    let Body::AuthResponse(a) = x.ask(2, Body::AuthRequest(proof)) else {
        panic!("no authentication response");
    };
    assert_eq!(a.auth, AuthResult::BadAuth);
    assert!(!a.accepted() && a.local_auth.is_none());
    assert_eq!(
        error(&x.ask(3, Body::KeyRequest)),
        Some(ErrorCode::OutOfState)
    );
    assert_eq!(x.d.protocol().counters().keys_released, 0);
}

/// A key request repeated (the terminal lost the answer) gets the same bytes from the
/// cache: no second computation, no second key.
#[test]
fn repeated_key_request_answered_from_cache() {
    let mut x = direct(deputy::keyx::Bounds::default());
    assert!(proceeds(&x.start(every_transform())));
    let proof = x.keygen_and_peer_proof();
    let Body::AuthResponse(a) = x.ask(2, Body::AuthRequest(proof)) else {
        panic!("no authentication response");
    };
    assert!(a.accepted(), "{a:?}");
    let first = x.send(3, Body::KeyRequest).unwrap();
    let again = x.send(3, Body::KeyRequest).unwrap();
    assert_eq!(first, again);
    let c = x.d.protocol().counters();
    assert_eq!((c.diffie_hellman, c.keys_released), (1, 1));
    assert_eq!(x.d.counters().answered_from_cache, 1);
}

/// S49: a message of a type nobody knows is discarded and counted, with no answer and the
/// session untouched.
#[test]
fn unknown_message_is_discarded_s49() {
    let mut x = direct(deputy::keyx::Bounds::default());
    assert!(proceeds(&x.start(every_transform())));
    let mut unknown = deputy::keyx::messages::Message {
        session: SESSION,
        seq: 1,
        body: Body::KeyRequest,
    }
    .encode()
    .unwrap();
    unknown[3] = 0x6E; // the header's type byte: inside the keyx range, unassigned
    assert_eq!(x.d.handle(x.now, &x.terminal, &unknown), None);
    assert_eq!(x.d.counters().unknown_discarded, 1);
    // The session goes on at the same sequence number.
    let proof = x.keygen_and_peer_proof();
    let Body::AuthResponse(a) = x.ask(2, Body::AuthRequest(proof)) else {
        panic!("no authentication response");
    };
    assert!(a.accepted());
}

/// S35: the server picks from the peer's offer only what the terminal can run.
#[test]
fn start_chooses_from_the_peers_offer() {
    let mut sim = Sim::new(8);
    let spec = Spec {
        // The peer prefers ChaCha20-Poly1305; the terminal runs only AES-CBC/HMAC.
        peer_ike: |ike| {
            ike.ike_proposals = vec![
                deputy::ikev2::IkeProposal::chacha20poly1305(&[deputy::crypto::dh::Group::X25519]),
                deputy::ikev2::IkeProposal::aes128_sha256(&[deputy::crypto::dh::Group::X25519]),
            ]
        },
        terminal: |t| {
            t.ike_algorithms = vec![deputy::ikev2::IkeProposal::aes128_sha256(&[
                deputy::crypto::dh::Group::X25519,
            ])]
        },
        ..Spec::default()
    };
    let w = fig12_started(&mut sim, &spec);
    let t_events = terminal_events(&mut sim, w.terminal);
    let suite = terminal_ike(&t_events)
        .into_iter()
        .find_map(|e| match e {
            IkeEvent::IkeSaEstablished { suite, .. } => Some(suite),
            _ => None,
        })
        .expect("established");
    assert_eq!(suite.encr, deputy::ikev2::Encr::AesCbc128);

    // And with nothing in common the peer hears NO_PROPOSAL_CHOSEN from the terminal.
    let mut x = direct(deputy::keyx::Bounds::default());
    let only_gcm = vec![
        deputy::keyx::messages::Transform {
            kind: 1,
            id: 20,
            key_bits: 192,
        },
        deputy::keyx::messages::Transform {
            kind: 2,
            id: 5,
            key_bits: 0,
        },
    ];
    let Body::StartResponse(r) = x.start(only_gcm) else {
        panic!("no start response");
    };
    assert_eq!(
        r.outcome,
        deputy::keyx::messages::StartOutcome::NoProposalChosen
    );
    assert_eq!(
        x.d.len(),
        0,
        "a start that does not proceed opens no session"
    );
}

/// The bounds: the terminal's exchanges, the server's sessions per terminal.
#[test]
fn every_bound_is_enforced() {
    // Terminal: one exchange at a time.
    let mut sim = Sim::new(9);
    let spec = Spec {
        terminal: |t| t.max_exchanges = 1,
        ..Spec::default()
    };
    let w = peer_responds(&mut sim, &spec);
    let id = deputy::ikev2::Identity::Fqdn(PEER_ID.into());
    let (first, second) = sim
        .with_actor(w.terminal, |t: &mut Terminal, now| {
            let a = t.initiate(now, addr(PEER, 500), id.clone());
            let b = t.initiate(now, addr(PEER, 500), id.clone());
            (a, b)
        })
        .unwrap();
    assert!(first.is_ok());
    assert!(matches!(
        second,
        Err(deputy::Error::CapacityExceeded {
            what: "delegated exchanges",
            bound: 1
        })
    ));

    // Server: one session per terminal; the second start is refused with SessionLimit.
    let mut x = direct(deputy::keyx::Bounds {
        sessions_per_terminal: 1,
        ..deputy::keyx::Bounds::default()
    });
    assert!(proceeds(&x.start(every_transform())));
    let other = deputy::keyx::messages::Message {
        session: SESSION + 1,
        seq: 0,
        body: Body::StartRequest(deputy::keyx::messages::StartRequest {
            protocol: deputy::keyx::messages::Protocol::Ikev2,
            role: deputy::keyx::messages::Role::Initiator,
            local: addr(TERMINAL, 500),
            remote: addr(PEER, 500),
            peer_message: None,
            transforms: every_transform(),
            peer_id: Some(id.payload_body()),
        }),
    }
    .encode()
    .unwrap();
    let answer = x.d.handle(x.now, &x.terminal, &other).unwrap();
    let body = deputy::keyx::messages::Message::decode(&answer, &deputy::wire::Limits::default())
        .unwrap()
        .body;
    assert_eq!(error(&body), Some(ErrorCode::SessionLimit));

    // Server: provisioned terminals.
    let sim = Sim::new(10);
    let mut ike = deputy::keyx::ike::IkeSubstitute::new(
        deputy::keyx::PolicyDb::new(),
        1,
        ANCHOR,
        Box::new(sim.rng("bound")),
    );
    let profile = |id: &str| deputy::keyx::ike::IkeProfile {
        local_id: deputy::ikev2::Identity::Fqdn(id.into()),
        credential: Spec::default().credential,
        auth_db: Spec::default().auth_db,
        ike_proposals: deputy::ikev2::IkeConfig::new(
            deputy::ikev2::Identity::Fqdn(id.into()),
            IKE_PSK,
        )
        .ike_proposals,
        delegation_key: delegation_key(),
        force_encap: false,
    };
    ike.provision("one".into(), profile("one.example")).unwrap();
    ike.provision("one".into(), profile("one.example")).unwrap();
    assert!(matches!(
        ike.provision("two".into(), profile("two.example")),
        Err(deputy::Error::CapacityExceeded {
            what: "provisioned terminals",
            bound: 1
        })
    ));

    // Terminal: IKE SAs held. With room for one, a second peer's IKE_SA_INIT is refused
    // while the first SA stands.
    let mut sim = Sim::new(13);
    let spec = Spec {
        terminal: |t| t.max_ike_sas = 1,
        ..Spec::default()
    };
    let w = fig12_started(&mut sim, &spec);
    assert_eq!(sim.actor::<Terminal>(w.terminal).unwrap().ike_sa_count(), 1);
    let refused = sim
        .with_actor(w.terminal, |t: &mut Terminal, now| {
            t.initiate(now, addr(PEER, 500), id.clone())
        })
        .unwrap();
    assert!(matches!(
        refused,
        Err(deputy::Error::CapacityExceeded {
            what: "IKE SAs",
            bound: 1
        })
    ));
}

/// S1-S2: every delegation message travels inside the secure channel: no deputy message of
/// the delegation range appears in clear on the wire, while the exchange did happen.
#[test]
fn prearranged_key_protects_every_message() {
    let mut sim = Sim::new(11);
    let w = fig12_started(&mut sim, &Spec::default());
    let c = server_counters(&sim, w.server);
    assert_eq!(c.keys_released, 1);
    let pcap = sim.pcap_bytes();
    let clear = pcap
        .windows(4)
        .filter(|w| w[..2] == *b"DP" && w[2] == 1 && (0x60..=0x69).contains(&w[3]))
        .count();
    assert_eq!(clear, 0, "a delegation message header in clear");
    // The channel's own records do appear (the positive control of the search).
    let records = pcap
        .windows(3)
        .filter(|w| w[..2] == *b"DP" && w[2] == 1)
        .count();
    assert!(records > 0);
}

mod arbitrary_sequences {
    //! Arbitrary delegation-message sequences into the server's IKE work after a genuine
    //! start: no panic, every answer decodes, and SK_d is never released unless an
    //! authentication response of the same session said authenticated and allowed.

    use super::direct::*;
    use deputy::keyx::messages::{AuthRequest, Body, KeyGenRequest, Message, Relay};
    use proptest::prelude::*;

    fn body() -> impl Strategy<Value = (u32, Body)> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..200);
        let seq = 0u32..6;
        prop_oneof![
            (seq.clone(), proptest::option::of(bytes.clone()))
                .prop_map(|(s, m)| (s, Body::KeyGenRequest(KeyGenRequest { peer_message: m }))),
            (seq.clone(), any::<u8>(), bytes.clone()).prop_map(|(s, f, p)| (
                s,
                Body::AuthRequest(AuthRequest {
                    first_payload: f,
                    payloads: p,
                })
            )),
            seq.clone().prop_map(|s| (s, Body::KeyRequest)),
            (seq, bytes).prop_map(|(s, d)| (s, Body::Relay(Relay { data: d }))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5EED_0004),
            ..ProptestConfig::default()
        })]
        #[test]
        fn arbitrary_delegation_sequences_never_panic_or_leak_keys(
            genuine_keygen in any::<bool>(),
            steps in proptest::collection::vec(body(), 0..12),
        ) {
            let mut x = direct(deputy::keyx::Bounds::default());
            prop_assert!(proceeds(&x.start(every_transform())));
            if genuine_keygen {
                let _ = x.keygen_and_peer_proof();
            }
            for (seq, b) in steps {
                let Some(answer) = x.send(seq, b) else { continue };
                let m = Message::decode(&answer, &deputy::wire::Limits::default());
                prop_assert!(m.is_ok(), "an answer that does not decode");
                if let Ok(Message { body: Body::KeyResponse(_), .. }) = m {
                    prop_assert!(false, "SK_d released without authentication");
                }
            }
            prop_assert_eq!(x.d.protocol().counters().keys_released, 0);
            prop_assert!(x.d.protocol().counters().diffie_hellman <= 1);
        }
    }
}

// ------------------------------------------------------------------- certificates

mod certificates {
    //! S42 with certificates: the server signs with the terminal's key and checks the
    //! peer's chain against its authentication-key database, then S43 its policy.

    use super::*;
    use common::certs::{Alg, Issued, leaf, root};
    use deputy::ikev2::auth::{AuthKeyDb, Credential, Signer};
    use deputy::ikev2::{Identity, IkeConfig};

    fn signer(l: &Issued) -> Signer {
        Signer::new(l.key.clone(), vec![l.der.clone()]).unwrap()
    }

    fn db(ca: &Issued) -> AuthKeyDb {
        let mut db = AuthKeyDb::new();
        db.add_trust_anchor(&ca.der).unwrap();
        db
    }

    /// A world where the terminal's server holds a certificate from `ca` and trusts `ca`;
    /// the peer holds `peer_cert` and trusts `ca`.
    pub fn spec(alg: Alg, ca: &Issued, peer_cert: &Issued) -> Spec {
        let terminal_cert = leaf(alg, 21, TERMINAL_ID, ca);
        Spec {
            credential: Credential::Signature(signer(&terminal_cert)),
            auth_db: db(ca),
            peer: Some(IkeConfig::with_certificate(
                Identity::Fqdn(PEER_ID.into()),
                signer(peer_cert),
                db(ca),
                ANCHOR,
            )),
            ..Spec::default()
        }
    }

    fn run_fig12(
        spec: &Spec,
        seed: u64,
    ) -> (
        Vec<TerminalEvent>,
        Vec<IkeEvent>,
        deputy::keyx::ike::IkeSubstituteCounters,
    ) {
        let mut sim = Sim::new(seed);
        let w = fig12_started(&mut sim, spec);
        let c = server_counters(&sim, w.server);
        (
            terminal_events(&mut sim, w.terminal),
            ike_events(&mut sim, w.peer),
            c,
        )
    }

    /// ECDSA P-256 and Ed25519 certificates, both roles: the peer's chain is checked at the
    /// server and the policy consulted; the terminal never sees a private key.
    #[test]
    fn authentication_checks_certificate_and_policy() {
        for alg in [Alg::P256, Alg::Ed25519] {
            let ca = root(alg, 20, "CN=keyx test CA");
            let peer_cert = leaf(alg, 22, PEER_ID, &ca);
            let spec = spec(alg, &ca, &peer_cert);

            // Fig. 12 with certificates.
            let (t, p, c) = run_fig12(&spec, 30);
            assert!(failures(&t).is_empty(), "{alg:?}: {t:?}");
            let t_child = established_child(&terminal_ike(&t)).expect("terminal Child SA");
            let p_child = established_child(&p).expect("peer Child SA");
            assert_eq!(t_child.keys_in, p_child.keys_out);
            assert!(p.iter().any(|e| matches!(
                e,
                IkeEvent::IkeSaEstablished { peer_id, .. }
                    if *peer_id == Identity::Fqdn(TERMINAL_ID.into())
            )));
            assert_eq!((c.authenticated, c.proofs, c.keys_released), (1, 1, 1));

            // The terminal initiates, with certificates.
            let mut sim = Sim::new(31);
            let w = peer_responds(&mut sim, &spec);
            sim.with_actor(w.terminal, |t: &mut Terminal, now| {
                t.initiate(now, addr(PEER, 500), Identity::Fqdn(PEER_ID.into()))
            })
            .unwrap()
            .unwrap();
            settle(&mut sim);
            let t = terminal_events(&mut sim, w.terminal);
            assert!(failures(&t).is_empty(), "{alg:?} initiator: {t:?}");
            assert!(established_child(&terminal_ike(&t)).is_some());

            // S43 after S42: an authenticated peer the policy does not list.
            let denied = Spec {
                allowed: vec![deputy::keyx::PeerPattern::Domain(
                    "elsewhere.example".into(),
                )],
                ..spec
            };
            let (t, _, c) = run_fig12(&denied, 32);
            assert_eq!(failures(&t), vec![TerminalFailure::PolicyDenied]);
            assert_eq!(
                (c.authenticated, c.policy_refused, c.keys_released),
                (0, 1, 0)
            );
        }
    }

    /// S42 refusals with certificates, each with its own result.
    #[test]
    fn bad_certificates_are_refused_with_their_reason() {
        let ca = root(Alg::P256, 40, "CN=keyx test CA");
        let stranger_ca = root(Alg::P256, 41, "CN=someone else's CA");
        let cases: [(Issued, AuthResult); 2] = [
            (
                leaf(Alg::P256, 42, PEER_ID, &stranger_ca),
                AuthResult::UnknownCa,
            ),
            (
                leaf(Alg::P256, 43, "not-the-peer.example", &ca),
                AuthResult::IdentityMismatch,
            ),
        ];
        for (peer_cert, expected) in cases {
            let mut spec = spec(Alg::P256, &ca, &peer_cert);
            if expected == AuthResult::UnknownCa {
                // The peer itself trusts our CA, so only the server's check can fail.
                spec.peer = Some(IkeConfig::with_certificate(
                    deputy::ikev2::Identity::Fqdn(PEER_ID.into()),
                    signer(&peer_cert),
                    db(&ca),
                    ANCHOR,
                ));
            }
            let (t, p, c) = run_fig12(&spec, 50);
            assert_eq!(
                failures(&t),
                vec![TerminalFailure::NotAuthenticated(expected)],
                "{t:?}"
            );
            assert!(p.iter().any(|e| matches!(e, IkeEvent::Failed { .. })));
            assert_eq!((c.auth_refused, c.keys_released), (1, 0));
        }
    }
}

/// An IKE SA rekey needs a Diffie-Hellman: the terminal holds the peer's CREATE_CHILD_SA,
/// the server makes the new share and g^ir, the terminal derives the new IKE SA from its
/// SK_d; the Child SA moves over and keeps working, and later exchanges need no server.
#[test]
fn ike_rekey_goes_through_the_server() {
    let mut sim = Sim::new(12);
    let w = fig12_started(&mut sim, &Spec::default());
    let _ = terminal_events(&mut sim, w.terminal);
    let _ = ike_events(&mut sim, w.peer);
    sim.with_actor(w.peer, |p: &mut Initiator, now| p.rekey_ike(now))
        .unwrap()
        .unwrap();
    settle(&mut sim);

    let rekeyed = |events: &[IkeEvent]| {
        events.iter().find_map(|e| match e {
            IkeEvent::IkeSaRekeyed { old, new, .. } => Some((*old, *new)),
            _ => None,
        })
    };
    let p_events = ike_events(&mut sim, w.peer);
    let t_events = terminal_events(&mut sim, w.terminal);
    assert!(failures(&t_events).is_empty(), "{t_events:?}");
    let (p_old, p_new) = rekeyed(&p_events).expect("the peer rekeyed");
    let (t_old, t_new) = rekeyed(&terminal_ike(&t_events)).expect("the terminal rekeyed");
    assert_eq!((p_old, p_new), (t_old, t_new));
    let c = server_counters(&sim, w.server);
    assert_eq!((c.diffie_hellman, c.ike_rekeys), (2, 1));

    // The new IKE SA works on its own: a liveness check and a Child SA rekey, no server.
    let requests = sim
        .actor::<Terminal>(w.terminal)
        .unwrap()
        .counters()
        .requests;
    sim.with_actor(w.terminal, |t: &mut Terminal, now| {
        t.send_liveness(now, t_new)
    })
    .unwrap()
    .unwrap();
    sim.with_actor(w.peer, |p: &mut Initiator, now| p.rekey_child(now))
        .unwrap()
        .unwrap();
    settle(&mut sim);
    let t_events = terminal_ike(&terminal_events(&mut sim, w.terminal));
    assert!(
        t_events
            .iter()
            .any(|e| matches!(e, IkeEvent::LivenessConfirmed { id } if *id == t_new))
    );
    let child = t_events
        .iter()
        .find_map(|e| match e {
            IkeEvent::ChildSaRekeyed { id, child, .. } if *id == t_new => Some(child.clone()),
            _ => None,
        })
        .expect("the Child SA rekeyed on the new IKE SA");
    let p_child = sim
        .actor::<Initiator>(w.peer)
        .unwrap()
        .child_sa()
        .unwrap()
        .clone();
    assert_eq!(child.keys_in, p_child.keys_out);
    let t = sim.actor::<Terminal>(w.terminal).unwrap();
    assert_eq!(t.counters().requests, requests);
    assert_eq!(t.established(), vec![t_new]);
}

/// The terminal rekeys its IKE SA itself: the server makes the share (start, key
/// generation), the peer answers, the server turns the answer into g^ir, and the terminal
/// derives the new IKE SA and deletes the old one. Both roles of the original exchange.
#[test]
fn terminal_rekeys_its_ike_sa_through_the_server() {
    for peer_initiated in [true, false] {
        let mut sim = Sim::new(14);
        let spec = Spec::default();
        let w = if peer_initiated {
            fig12_started(&mut sim, &spec)
        } else {
            let w = peer_responds(&mut sim, &spec);
            sim.with_actor(w.terminal, |t: &mut Terminal, now| {
                t.initiate(
                    now,
                    addr(PEER, 500),
                    deputy::ikev2::Identity::Fqdn(PEER_ID.into()),
                )
            })
            .unwrap()
            .unwrap();
            settle(&mut sim);
            w
        };
        let _ = ike_events(&mut sim, w.peer);
        let t_events = terminal_events(&mut sim, w.terminal);
        let old = terminal_ike(&t_events)
            .into_iter()
            .find_map(|e| match e {
                IkeEvent::IkeSaEstablished { id, .. } => Some(id),
                _ => None,
            })
            .expect("established");
        sim.with_actor(w.terminal, |t: &mut Terminal, now| t.rekey_ike(now, old))
            .unwrap()
            .unwrap();
        settle(&mut sim);
        let t_events = terminal_events(&mut sim, w.terminal);
        assert!(failures(&t_events).is_empty(), "{t_events:?}");
        let new = terminal_ike(&t_events)
            .into_iter()
            .find_map(|e| match e {
                IkeEvent::IkeSaRekeyed {
                    old: o,
                    new,
                    initiated: true,
                } if o == old => Some(new),
                _ => None,
            })
            .expect("the terminal rekeyed its IKE SA");
        let p_events = ike_events(&mut sim, w.peer);
        assert!(p_events.iter().any(|e| matches!(
            e,
            IkeEvent::IkeSaRekeyed { new: n, initiated: false, .. } if *n == new
        )));
        let c = server_counters(&sim, w.server);
        assert_eq!((c.diffie_hellman, c.ike_rekeys), (2, 1));
        // The new SA works, and the old one is gone on both sides.
        sim.with_actor(w.terminal, |t: &mut Terminal, now| {
            t.send_liveness(now, new)
        })
        .unwrap()
        .unwrap();
        settle(&mut sim);
        let t_events = terminal_ike(&terminal_events(&mut sim, w.terminal));
        assert!(
            t_events
                .iter()
                .any(|e| matches!(e, IkeEvent::LivenessConfirmed { id } if *id == new))
        );
        assert_eq!(
            sim.actor::<Terminal>(w.terminal).unwrap().established(),
            vec![new]
        );
    }
}

/// A record damaged on the terminal's channel to the server breaks that channel; the
/// terminal opens it again, sends its waiting request once more, and the exchange
/// completes with one Diffie-Hellman (a repeated request is answered from the cache).
#[test]
fn a_broken_server_channel_is_opened_again_and_the_exchange_completes() {
    use deputy::sim::fault::{Fault, FaultAction};
    for nth in 1..4 {
        let mut sim = Sim::new(20 + nth);
        let spec = Spec::default();
        let w = fig12(&mut sim, &spec);
        let damage = Fault::new(FaultAction::flip(8))
            .from_node(w.terminal)
            .dst_port(SERVER_PORT)
            .when(|p| p.payload.len() > 20)
            .nth(nth);
        let fault = sim.add_fault(damage).unwrap();
        sim.with_actor(w.peer, |p: &mut Initiator, now| p.start(now))
            .unwrap()
            .unwrap();
        settle(&mut sim);
        assert_eq!(sim.fault_stats(fault).unwrap().applied, 1, "nth {nth}");
        let t_events = terminal_events(&mut sim, w.terminal);
        assert!(failures(&t_events).is_empty(), "nth {nth}: {t_events:?}");
        assert!(t_events.contains(&TerminalEvent::ServerLost), "nth {nth}");
        let connected = t_events
            .iter()
            .filter(|e| **e == TerminalEvent::ServerConnected)
            .count();
        assert_eq!(connected, 2, "nth {nth}: {t_events:?}");
        assert!(
            established_child(&terminal_ike(&t_events)).is_some(),
            "nth {nth}"
        );
        let c = server_counters(&sim, w.server);
        assert_eq!((c.diffie_hellman, c.keys_released), (1, 1), "nth {nth}");
    }
}

/// NAT-T (RFC 7296 §2.23, RFC 3948): a terminal behind a NAPT router initiates; the NAT
/// detection payloads the server built with the terminal's own address reveal the NAT, IKE
/// moves to port 4500 with the non-ESP marker, and both ends' Child SAs are
/// UDP-encapsulated toward each other's outside address.
#[test]
fn a_terminal_behind_a_nat_moves_to_4500_and_encapsulates_esp() {
    use common::Build;
    use deputy::ikev2::{Responder, ResponderConfig};
    let mut sim = Sim::new(16);
    let spec = Spec::default();
    let internet = sim.net("internet", "192.0.2.0/24");
    let lan = sim.net("terminal-lan", "10.1.0.0/24");
    sim.napt(
        "home-router",
        (lan, "10.1.0.1"),
        (internet, "192.0.2.99"),
        deputy::sim::NatConfig::default(),
    );
    let peer = Responder::new(
        ResponderConfig::new(peer_ike(&spec)),
        Box::new(sim.rng("peer")),
        sim.now(),
    )
    .unwrap();
    let peer = sim.host("peer", internet, PEER, peer);
    let server = server_actor(&sim, &spec);
    let server = sim.host("server", internet, SERVER, server);
    sim.listen(server, SERVER_PORT).unwrap();
    let t_spec = Spec {
        terminal: |t| {
            t.local = "10.1.0.20:500".parse().unwrap();
            t.server_local = "10.1.0.20:0".parse().unwrap();
        },
        ..Spec::default()
    };
    let terminal = terminal_actor(&sim, &t_spec);
    let terminal = sim.host("terminal", lan, "10.1.0.20", terminal);
    sim.with_actor(terminal, |t: &mut Terminal, now| {
        t.initiate(
            now,
            addr(PEER, 500),
            deputy::ikev2::Identity::Fqdn(PEER_ID.into()),
        )
    })
    .unwrap()
    .unwrap();
    settle(&mut sim);
    let t_events = terminal_events(&mut sim, terminal);
    assert!(failures(&t_events).is_empty(), "{t_events:?}");
    assert!(terminal_ike(&t_events).iter().any(|e| matches!(
        e,
        IkeEvent::IkeSaEstablished { udp_encap: true, local, .. } if local.port() == 4500
    )));
    let t_child = established_child(&terminal_ike(&t_events)).expect("Child SA");
    let encap = t_child.encap.expect("UDP-encapsulated");
    assert_eq!(encap.remote, addr(PEER, 4500));
    let p = sim.actor::<Responder>(peer).unwrap();
    let p_child = p.child_sa(p.established()[0]).unwrap().clone();
    assert_eq!(
        p_child.encap.map(|e| e.remote.ip()),
        Some("192.0.2.99".parse().unwrap())
    );
    assert_eq!(t_child.keys_in, p_child.keys_out);
}

/// The terminal answers a COOKIE challenge and INVALID_KE_PAYLOAD itself (the server
/// decided the group at S35; a stateless cookie needs no server): the peer offers its key
/// share in MODP-2048, the server takes X25519 only, and the terminal is "under load"
/// (cookie threshold 0). The peer comes back twice and the exchange completes with one
/// Diffie-Hellman at the server.
#[test]
fn the_terminal_answers_cookie_and_invalid_ke_itself() {
    use deputy::crypto::dh::Group;
    use deputy::ikev2::IkeProposal;
    let mut sim = Sim::new(17);
    let spec = Spec {
        terminal: |t| t.cookie_threshold = 0,
        peer_ike: |ike| {
            ike.ike_proposals = vec![IkeProposal::aes128_sha256(&[
                Group::Modp2048,
                Group::X25519,
            ])]
        },
        server_proposals: vec![IkeProposal::aes128_sha256(&[Group::X25519])],
        ..Spec::default()
    };
    let w = fig12_started(&mut sim, &spec);
    let t_events = terminal_events(&mut sim, w.terminal);
    assert!(failures(&t_events).is_empty(), "{t_events:?}");
    let suite = terminal_ike(&t_events)
        .into_iter()
        .find_map(|e| match e {
            IkeEvent::IkeSaEstablished { suite, .. } => Some(suite),
            _ => None,
        })
        .expect("established");
    // The peer's first share was MODP-2048: it ended in X25519 only after the terminal's
    // INVALID_KE_PAYLOAD.
    assert_eq!(suite.group, Group::X25519);
    let t = sim.actor::<Terminal>(w.terminal).unwrap();
    assert!(t.counters().cookies >= 1);
    let c = server_counters(&sim, w.server);
    assert_eq!(c.diffie_hellman, 1);
}

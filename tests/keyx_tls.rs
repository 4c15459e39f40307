//! Seed 004 over TLS 1.3 (Fig. 14, S321-S331 at the terminal, S351-S358 at the server),
//! through the simulator: the peer is rustls, unmodified; the terminal relays the handshake
//! to the substitution server (rustls on the terminal's behalf) and then runs the record
//! layer itself. Each test asserts what each party saw.

mod common;

use std::time::Duration;

use common::tls::*;
use deputy::keyx::messages::{AuthResult, ErrorCode};
use deputy::keyx::tls::{Terminal, TerminalEvent, TerminalFailure, TlsConnId, TlsSubstitute};
use deputy::keyx::{PeerPattern, SubstitutionServer};
use deputy::sim::Sim;
use deputy::tls::{CipherSuite, TlsError};

fn server_counters(sim: &mut Sim, w: &World) -> deputy::keyx::tls::TlsSubstituteCounters {
    sim.with_actor(w.server, |s: &mut SubstitutionServer<TlsSubstitute>, _| {
        s.protocol_mut().counters()
    })
    .unwrap()
}

/// Fig. 14 up to S331: the terminal as client; returns its connection.
fn client_up(sim: &mut Sim, spec: &Spec) -> (World, TlsConnId, Vec<TerminalEvent>) {
    let w = fig14(sim, spec);
    let conn = connect(sim, &w);
    settle(sim);
    let events = terminal_events(sim, w.terminal);
    assert_eq!(
        established(&events),
        Some(conn),
        "the terminal's keys are set (S331): {events:?}"
    );
    (w, conn, events)
}

/// The terminal as server; returns the peer's stream and the terminal's connection.
fn server_up(
    sim: &mut Sim,
    spec: &Spec,
) -> (World, deputy::StreamId, TlsConnId, Vec<TerminalEvent>) {
    let w = terminal_serves(sim, spec);
    let stream = peer_connects(sim, &w);
    settle(sim);
    let events = terminal_events(sim, w.terminal);
    let conn = established(&events).unwrap_or_else(|| panic!("established: {events:?}"));
    assert!(peer_view(sim, &w, |c| c.handshake_done));
    (w, stream, conn, events)
}

#[test]
fn terminal_client_handshake_fig14() {
    let mut sim = Sim::new(1);
    let (w, conn, _) = client_up(&mut sim, &Spec::default());
    // The peer completed an ordinary TLS 1.3 handshake with the terminal's address.
    assert!(peer_view(&mut sim, &w, |c| c.handshake_done && c.error.is_none()));
    // The server ran it: one handshake, the peer authenticated, keys released once.
    let c = server_counters(&mut sim, &w);
    assert_eq!((c.handshakes, c.authenticated, c.keys_released), (1, 1, 1));
    // The terminal relayed the peer's flight and set the keys; its record layer starts
    // at the sequence numbers the handshake left.
    let layer_seq = sim
        .with_actor(w.terminal, |t: &mut Terminal, _| {
            let l = t.record_layer(conn).unwrap();
            (l.tx_seq(), l.rx_seq())
        })
        .unwrap();
    assert_eq!(layer_seq.0, 0);
    assert!(
        sim.with_actor(w.terminal, |t: &mut Terminal, _| t
            .counters()
            .records_relayed)
            .unwrap()
            >= 1
    );
}

#[test]
fn terminal_server_handshake() {
    let mut sim = Sim::new(2);
    let (w, _stream, conn, events) = server_up(&mut sim, &Spec::default());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, TerminalEvent::Accepted { .. }))
    );
    // The server's tickets went out before any data (as many as the client asked for):
    // the terminal's send sequence starts behind them.
    let tx = sim
        .with_actor(w.terminal, |t: &mut Terminal, _| {
            t.record_layer(conn).unwrap().tx_seq()
        })
        .unwrap();
    let tickets = peer_view(&mut sim, &w, |c| c.tickets);
    assert!(
        tickets >= 1 && tx >= 1,
        "{tickets} tickets, send sequence {tx}"
    );
    let c = server_counters(&mut sim, &w);
    assert_eq!((c.authenticated, c.keys_released), (1, 1));
}

#[test]
fn every_suite_both_roles() {
    for (i, (theirs, ours)) in [
        (
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
            CipherSuite::Aes128GcmSha256,
        ),
        (
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            CipherSuite::Aes256GcmSha384,
        ),
        (
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            CipherSuite::Chacha20Poly1305Sha256,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let spec = Spec {
            peer_suites: vec![theirs],
            ..Spec::default()
        };
        let mut sim = Sim::new(10 + i as u64);
        let (w, conn, _) = client_up(&mut sim, &spec);
        terminal_send(&mut sim, &w, conn, b"ping");
        settle(&mut sim);
        assert_eq!(peer_view(&mut sim, &w, |c| c.received.clone()), b"ping");
        assert_eq!(peer_view(&mut sim, &w, |c| c.suite), Some(theirs));
        let suite = sim
            .with_actor(w.terminal, |t: &mut Terminal, _| {
                t.record_layer(conn).unwrap().suite()
            })
            .unwrap();
        assert_eq!(suite, ours);

        let mut sim = Sim::new(20 + i as u64);
        let (w, stream, conn, _) = server_up(&mut sim, &spec);
        sim.with_actor(w.peer, |p: &mut TlsPeer, _| p.send(stream, b"hello"))
            .unwrap();
        settle(&mut sim);
        assert_eq!(data_of(&terminal_events(&mut sim, w.terminal)), b"hello");
        terminal_send(&mut sim, &w, conn, b"world");
        settle(&mut sim);
        assert_eq!(peer_view(&mut sim, &w, |c| c.received.clone()), b"world");
    }
}

#[test]
fn records_flow_both_ways_after_handoff() {
    let mut sim = Sim::new(3);
    let (w, conn, _) = client_up(&mut sim, &Spec::default());
    let before = server_counters(&mut sim, &w);
    let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    terminal_send(&mut sim, &w, conn, &big);
    peer_do(&mut sim, &w, |p, id| p.send(id, b"from the peer"));
    settle(&mut sim);
    assert_eq!(peer_view(&mut sim, &w, |c| c.received.clone()), big);
    assert_eq!(
        data_of(&terminal_events(&mut sim, w.terminal)),
        b"from the peer"
    );
    // The server never saw application data: nothing more was asked of it.
    let after = server_counters(&mut sim, &w);
    assert_eq!(before, after);
}

#[test]
fn terminal_initiated_keyupdate() {
    let mut sim = Sim::new(4);
    let (w, conn, _) = client_up(&mut sim, &Spec::default());
    sim.with_actor(w.terminal, |t: &mut Terminal, now| {
        t.update_keys(now, conn, false)
    })
    .unwrap()
    .unwrap();
    settle(&mut sim);
    terminal_send(&mut sim, &w, conn, b"after update");
    settle(&mut sim);
    // The peer followed the new key (it decrypts what came after).
    assert_eq!(
        peer_view(&mut sim, &w, |c| c.received.clone()),
        b"after update"
    );
    let events = terminal_events(&mut sim, w.terminal);
    assert!(
        events.contains(&TerminalEvent::KeysUpdated {
            conn,
            send: true,
            receive: false
        }),
        "{events:?}"
    );
    assert_eq!(server_counters(&mut sim, &w).key_updates, 1);
}

#[test]
fn peer_keyupdate_not_requested() {
    // rustls sends KeyUpdate(update_not_requested) when it answers one that requested:
    // the terminal asks, the peer answers, the terminal takes the peer's next key.
    let mut sim = Sim::new(5);
    let (w, conn, _) = client_up(&mut sim, &Spec::default());
    sim.with_actor(w.terminal, |t: &mut Terminal, now| {
        t.update_keys(now, conn, true)
    })
    .unwrap()
    .unwrap();
    settle(&mut sim);
    peer_do(&mut sim, &w, |p, id| {
        p.send(id, b"under the peer's new key")
    });
    settle(&mut sim);
    let events = terminal_events(&mut sim, w.terminal);
    assert_eq!(data_of(&events), b"under the peer's new key");
    assert!(events.contains(&TerminalEvent::KeysUpdated {
        conn,
        send: false,
        receive: true
    }));
    // Our send key moved once (we asked), the receive key once (the peer's answer).
    assert_eq!(server_counters(&mut sim, &w).key_updates, 2);
}

#[test]
fn peer_keyupdate_requested_is_answered_before_data() {
    let mut sim = Sim::new(6);
    let (w, conn, _) = client_up(&mut sim, &Spec::default());
    peer_do(&mut sim, &w, |p, id| assert!(p.key_update(id)));
    // Data the application sends while the answer is with the server waits behind it.
    sim.run_for(Duration::from_millis(1)).unwrap();
    terminal_send(&mut sim, &w, conn, b"after our answer");
    settle(&mut sim);
    let events = terminal_events(&mut sim, w.terminal);
    assert!(events.contains(&TerminalEvent::KeysUpdated {
        conn,
        send: true,
        receive: true
    }));
    // The peer decrypted our data: it came under our new key, after our KeyUpdate.
    assert_eq!(
        peer_view(&mut sim, &w, |c| c.received.clone()),
        b"after our answer"
    );
    assert!(peer_view(&mut sim, &w, |c| c.error.is_none()));
}

#[test]
fn confidentiality_limit_triggers_keyupdate() {
    let spec = Spec {
        // Ask for new keys as soon as a few records are left before the limit.
        terminal: |t| {
            t.record.tx_update_margin = CipherSuite::Aes128GcmSha256.confidentiality_limit() - 3;
        },
        peer_suites: vec![rustls::CipherSuite::TLS13_AES_128_GCM_SHA256],
        ..Spec::default()
    };
    let mut sim = Sim::new(7);
    let (w, conn, _) = client_up(&mut sim, &spec);
    for i in 0..6u8 {
        terminal_send(&mut sim, &w, conn, &[i; 10]);
    }
    settle(&mut sim);
    let events = terminal_events(&mut sim, w.terminal);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, TerminalEvent::KeysUpdated { send: true, .. })),
        "{events:?}"
    );
    let want: Vec<u8> = (0..6u8).flat_map(|i| [i; 10]).collect();
    assert_eq!(peer_view(&mut sim, &w, |c| c.received.clone()), want);
}

#[test]
fn keyupdate_flood_is_bounded() {
    let spec = Spec {
        terminal: |t| t.record.max_key_updates = 3,
        ..Spec::default()
    };
    let mut sim = Sim::new(8);
    let (w, conn, _) = client_up(&mut sim, &spec);
    for _ in 0..5 {
        peer_do(&mut sim, &w, |p, id| {
            p.key_update(id);
        });
        settle(&mut sim);
    }
    let events = terminal_events(&mut sim, w.terminal);
    assert!(
        events.iter().any(|e| matches!(
            e,
            TerminalEvent::Failed {
                conn: c,
                reason: TerminalFailure::Record(TlsError::KeyUpdateFlood(_))
            } if *c == conn
        )),
        "{events:?}"
    );
    // The server served at most the bound (plus our own answers), not the flood.
    assert!(server_counters(&mut sim, &w).key_updates <= 6);
}

#[test]
fn session_tickets_reach_the_server() {
    let mut sim = Sim::new(9);
    // The peer sends its two tickets after our Finished; they reach the server.
    let (w, conn, events) = client_up(&mut sim, &Spec::default());
    let relayed = events
        .iter()
        .filter(|e| matches!(e, TerminalEvent::TicketRelayed { conn: c } if *c == conn))
        .count();
    assert_eq!(relayed, 2, "{events:?}");
    assert_eq!(server_counters(&mut sim, &w).tickets, 2);
    // A second connection to the same name resumes with them.
    let conn2 = connect(&mut sim, &w);
    settle(&mut sim);
    assert_eq!(
        established(&terminal_events(&mut sim, w.terminal)),
        Some(conn2)
    );
    assert_eq!(server_counters(&mut sim, &w).resumed, 1);
}

#[test]
fn policy_database_refuses_the_peer() {
    // Client role: the name is not one this terminal may reach (S351).
    let spec = Spec {
        allowed: vec![PeerPattern::Exactly(deputy::ikev2::Identity::Fqdn(
            "elsewhere.example".into(),
        ))],
        ..Spec::default()
    };
    let mut sim = Sim::new(30);
    let w = fig14(&mut sim, &spec);
    let conn = connect(&mut sim, &w);
    settle(&mut sim);
    let events = terminal_events(&mut sim, w.terminal);
    assert!(events.contains(&TerminalEvent::Failed {
        conn,
        reason: TerminalFailure::PolicyDenied
    }));
    assert_eq!(server_counters(&mut sim, &w).handshakes, 0);

    // Server role: the client's certificate verifies but its name may not reach us (S354):
    // access_denied to the peer, no keys.
    let mut sim = Sim::new(31);
    let w = terminal_serves(&mut sim, &spec);
    peer_connects(&mut sim, &w);
    settle(&mut sim);
    let events = terminal_events(&mut sim, w.terminal);
    assert!(
        events.iter().any(|e| matches!(
            e,
            TerminalEvent::Failed {
                reason: TerminalFailure::PolicyDenied,
                ..
            }
        )),
        "{events:?}"
    );
    assert!(established(&events).is_none());
    let err = peer_view(&mut sim, &w, |c| c.error.clone());
    assert_eq!(
        err,
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::AccessDenied
        ))
    );
    let c = server_counters(&mut sim, &w);
    assert_eq!((c.policy_refused, c.keys_released), (1, 0));
}

#[test]
fn untrusted_certificate_is_refused() {
    let spec = Spec {
        peer_cert: |p| &p.rogue_peer,
        ..Spec::default()
    };
    let mut sim = Sim::new(32);
    let w = fig14(&mut sim, &spec);
    let conn = connect(&mut sim, &w);
    settle(&mut sim);
    let events = terminal_events(&mut sim, w.terminal);
    assert!(
        events.contains(&TerminalEvent::Failed {
            conn,
            reason: TerminalFailure::NotAuthenticated(AuthResult::UnknownCa)
        }),
        "{events:?}"
    );
    // The peer heard the alert rustls chose (unknown_ca), protected as the handshake
    // requires, and no keys were released.
    let err = peer_view(&mut sim, &w, |c| c.error.clone());
    assert_eq!(
        err,
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::UnknownCA
        ))
    );
    let c = server_counters(&mut sim, &w);
    assert_eq!((c.auth_refused, c.keys_released), (1, 0));
}

#[test]
fn tampered_record_is_rejected() {
    let mut sim = Sim::new(33);
    let (w, conn, _) = client_up(&mut sim, &Spec::default());
    // An on-path attacker's record: right header, garbage body.
    let mut forged = vec![23, 3, 3, 0, 40];
    forged.extend_from_slice(&[0x5A; 40]);
    peer_do(&mut sim, &w, |p, id| p.raw(id, forged));
    settle(&mut sim);
    let events = terminal_events(&mut sim, w.terminal);
    assert!(
        events.iter().any(|e| matches!(
            e,
            TerminalEvent::Failed {
                conn: c,
                reason: TerminalFailure::Record(TlsError::BadRecordMac)
            } if *c == conn
        )),
        "{events:?}"
    );
    // The terminal told the peer why (bad_record_mac) before closing.
    let err = peer_view(&mut sim, &w, |c| c.error.clone());
    assert_eq!(
        err,
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::BadRecordMac
        ))
    );
}

#[test]
fn truncation_without_close_notify_is_reported() {
    let mut sim = Sim::new(34);
    let (w, conn, _) = client_up(&mut sim, &Spec::default());
    peer_do(&mut sim, &w, |p, id| {
        p.send(id, b"last words");
        p.drop_stream(id);
    });
    settle(&mut sim);
    let events = terminal_events(&mut sim, w.terminal);
    assert_eq!(data_of(&events), b"last words");
    assert!(
        events.contains(&TerminalEvent::Truncated { conn }),
        "{events:?}"
    );
    assert!(!events.contains(&TerminalEvent::Closed { conn }));
}

#[test]
fn close_notify_both_ways() {
    // The peer closes first.
    let mut sim = Sim::new(35);
    let (w, conn, _) = client_up(&mut sim, &Spec::default());
    peer_do(&mut sim, &w, |p, id| {
        p.close_notify(id);
        p.drop_stream(id);
    });
    settle(&mut sim);
    let events = terminal_events(&mut sim, w.terminal);
    assert!(events.contains(&TerminalEvent::PeerClosed { conn }));
    assert!(events.contains(&TerminalEvent::Closed { conn }));
    // The terminal closes first; the peer sees close_notify, and the server forgets the
    // session.
    let mut sim = Sim::new(36);
    let (w, conn, _) = client_up(&mut sim, &Spec::default());
    let sessions = |sim: &mut Sim| {
        sim.with_actor(w.server, |s: &mut SubstitutionServer<TlsSubstitute>, _| {
            s.dispatcher().len()
        })
        .unwrap()
    };
    assert_eq!(sessions(&mut sim), 1);
    sim.with_actor(w.terminal, |t: &mut Terminal, now| t.close(now, conn))
        .unwrap()
        .unwrap();
    settle(&mut sim);
    assert!(peer_view(&mut sim, &w, |c| c.close_notify));
    assert!(terminal_events(&mut sim, w.terminal).contains(&TerminalEvent::Closed { conn }));
    assert_eq!(sessions(&mut sim), 0);
}

#[test]
fn server_unreachable_fails_cleanly() {
    let spec = Spec {
        server_up: false,
        ..Spec::default()
    };
    let mut sim = Sim::new(37);
    let w = fig14(&mut sim, &spec);
    let conn = connect(&mut sim, &w);
    sim.run_for(Duration::from_secs(60)).unwrap();
    let events = terminal_events(&mut sim, w.terminal);
    assert!(
        events.iter().any(|e| matches!(
            e,
            TerminalEvent::Failed {
                conn: c,
                reason: TerminalFailure::ServerUnreachable | TerminalFailure::Timeout
            } if *c == conn
        )),
        "{events:?}"
    );
    // The peer saw a connection close, never a key share.
    assert!(!peer_view(&mut sim, &w, |c| c.handshake_done));
    assert_eq!(
        sim.with_actor(w.terminal, |t: &mut Terminal, _| t.connection_count())
            .unwrap(),
        0
    );
}

#[test]
fn bytes_after_the_split_are_not_lost() {
    // Terminal as server: the client sends its Finished and its first request in one
    // segment. The server's rustls takes the Finished only; the request belongs to the
    // terminal's record layer.
    let mut sim = Sim::new(38);
    let w = terminal_serves(&mut sim, &Spec::default());
    let stream = peer_connects(&mut sim, &w);
    // rustls (client) lets data be written before the handshake completes: it goes out
    // right behind the Finished.
    sim.with_actor(w.peer, |p: &mut TlsPeer, _| {
        p.send(stream, b"GET / HTTP/1.1\r\n\r\n")
    })
    .unwrap();
    settle(&mut sim);
    let events = terminal_events(&mut sim, w.terminal);
    assert!(established(&events).is_some(), "{events:?}");
    assert_eq!(data_of(&events), b"GET / HTTP/1.1\r\n\r\n");
}

#[test]
fn hello_retry_request_loops_key_generation() {
    // The peer takes only P-256, the server's ClientHello offers X25519 first: the peer
    // answers HelloRetryRequest, the terminal asks for key generation again (S12 → S5).
    let spec = Spec {
        peer_groups: vec![rustls::NamedGroup::secp256r1],
        ..Spec::default()
    };
    let mut sim = Sim::new(39);
    let (w, conn, _) = client_up(&mut sim, &spec);
    terminal_send(&mut sim, &w, conn, b"after a retry");
    settle(&mut sim);
    assert_eq!(
        peer_view(&mut sim, &w, |c| c.received.clone()),
        b"after a retry"
    );
}

#[test]
fn an_unknown_terminal_is_not_served() {
    // A session for a terminal the server was not provisioned for is refused typed.
    let mut sim = Sim::new(40);
    let w = fig14(&mut sim, &Spec::default());
    sim.with_actor(w.server, |s: &mut SubstitutionServer<TlsSubstitute>, _| {
        *s.protocol_mut() = TlsSubstitute::new(
            deputy::keyx::PolicyDb::new(),
            1,
            ANCHOR,
            Box::new(rand_chacha::ChaCha20Rng::from_seed([1; 32])),
        );
    })
    .unwrap();
    let conn = connect(&mut sim, &w);
    settle(&mut sim);
    assert!(
        terminal_events(&mut sim, w.terminal).contains(&TerminalEvent::Failed {
            conn,
            reason: TerminalFailure::Server(ErrorCode::NotProvisioned)
        })
    );
}

use rand_core::SeedableRng;

/// The server's dispatcher alone, for requests no honest terminal sends.
fn bare_server(sim: &Sim) -> deputy::keyx::Dispatcher<TlsSubstitute> {
    let spec = Spec::default();
    let mut policy = deputy::keyx::PolicyDb::new();
    for p in &spec.allowed {
        policy
            .allow(
                &TERMINAL_NAME.into(),
                deputy::keyx::Direction::FromTerminal,
                p.clone(),
            )
            .unwrap();
    }
    let tls = substitute(sim, &spec, &Pki::new(), policy);
    deputy::keyx::Dispatcher::new(
        tls,
        deputy::keyx::Bounds::default(),
        deputy::wire::Limits::default(),
    )
}

fn ask(
    d: &mut deputy::keyx::Dispatcher<TlsSubstitute>,
    seq: u32,
    body: deputy::keyx::Body,
) -> deputy::keyx::Body {
    let bytes = deputy::keyx::Message {
        session: 9,
        seq,
        body,
    }
    .encode()
    .unwrap();
    let answer = d
        .handle(deputy::Instant::from_secs(1), &TERMINAL_NAME.into(), &bytes)
        .unwrap();
    deputy::keyx::Message::decode(&answer, &deputy::wire::Limits::default())
        .unwrap()
        .body
}

#[test]
fn a_broken_handshake_record_fails_the_session_once_typed() {
    use deputy::keyx::{AuthRequest, Body, KeyGenRequest, Protocol, Role, StartRequest};

    // Found by the keyx_tls_server fuzz target: a record rustls refuses while framing must
    // not be read a second time (rustls would send a second fatal alert).
    let sim = Sim::new(41);
    let mut d = bare_server(&sim);
    let start = StartRequest {
        protocol: Protocol::Tls13,
        role: Role::Initiator,
        local: addr(TERMINAL, 40000),
        remote: addr(PEER, TLS_PORT),
        peer_message: None,
        transforms: CipherSuite::ALL
            .iter()
            .map(|s| deputy::keyx::tls::suite_transform(*s))
            .collect(),
        peer_id: Some(PEER_NAME.as_bytes().to_vec()),
    };
    assert!(matches!(
        ask(&mut d, 0, Body::StartRequest(start)),
        Body::StartResponse(_)
    ));
    let hello = ask(
        &mut d,
        1,
        Body::KeyGenRequest(KeyGenRequest { peer_message: None }),
    );
    assert!(matches!(hello, Body::KeyGenResponse(k) if k.message.is_some()));
    // The peer's "flight": a record of an unknown content type, which rustls refuses
    // while framing (and answers with an alert, once).
    let garbage = vec![0xFF, 0, 0, 0, 0, 0x3A, 0x4D];
    let refused = ask(
        &mut d,
        2,
        Body::AuthRequest(AuthRequest {
            first_payload: 0,
            payloads: garbage.clone(),
        }),
    );
    let Body::AuthResponse(a) = refused else {
        panic!("{refused:?}");
    };
    assert_eq!(a.auth, AuthResult::ProtocolViolation);
    assert!(a.local_auth.is_some(), "the alert to send the peer");
    // The session is refused for good: more records are out of state, nothing panics.
    let again = ask(
        &mut d,
        3,
        Body::AuthRequest(AuthRequest {
            first_payload: 0,
            payloads: garbage,
        }),
    );
    assert_eq!(again, Body::ErrorResponse(ErrorCode::OutOfState));
}

#[test]
fn every_bound_is_enforced() {
    // Connections: the third is refused; accepted streams beyond the bound are closed.
    let spec = Spec {
        terminal: |t| {
            t.max_connections = 2;
            t.max_buffered = 1024;
            t.max_relays = 1;
        },
        ..Spec::default()
    };
    let mut sim = Sim::new(42);
    let w = fig14(&mut sim, &spec);
    let first = connect(&mut sim, &w);
    connect(&mut sim, &w);
    let third = sim
        .with_actor(w.terminal, |t: &mut Terminal, now| {
            t.connect(now, addr(PEER, TLS_PORT), PEER_NAME)
        })
        .unwrap();
    assert!(
        matches!(
            third,
            Err(deputy::Error::CapacityExceeded {
                what: "TLS connections",
                bound: 2
            })
        ),
        "{third:?}"
    );
    // Data sent before the keys waits, up to `max_buffered`.
    let early = sim
        .with_actor(w.terminal, |t: &mut Terminal, now| {
            t.send(now, first, &[1; 1000]).unwrap();
            t.send(now, first, &[2; 100])
        })
        .unwrap();
    assert!(
        matches!(
            early,
            Err(deputy::Error::CapacityExceeded { bound: 1024, .. })
        ),
        "{early:?}"
    );
    settle(&mut sim);
    let events = terminal_events(&mut sim, w.terminal);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, TerminalEvent::Established { .. }))
            .count(),
        2
    );
    // Relays: with one queued at most, a burst of own key updates is refused beyond it
    // (one in flight, one queued).
    let burst: Vec<_> = sim
        .with_actor(w.terminal, |t: &mut Terminal, now| {
            (0..3).map(|_| t.update_keys(now, first, false)).collect()
        })
        .unwrap();
    assert!(burst[0].is_ok() && burst[1].is_ok());
    assert!(
        matches!(
            burst[2],
            Err(deputy::Error::CapacityExceeded {
                what: "TLS relays waiting",
                bound: 1
            })
        ),
        "{burst:?}"
    );
    settle(&mut sim);
    let events = terminal_events(&mut sim, w.terminal);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, TerminalEvent::KeysUpdated { conn, .. } if *conn == first))
            .count(),
        2
    );
}

#[test]
fn key_log_lines_are_nss_format_and_bounded() {
    let mut sim = Sim::new(44);
    let spec = Spec {
        key_log: true,
        ..Spec::default()
    };
    let (w, _conn, _) = client_up(&mut sim, &spec);
    let lines = sim
        .with_actor(w.server, |s: &mut SubstitutionServer<TlsSubstitute>, _| {
            s.protocol_mut().take_key_log()
        })
        .unwrap();
    // A TLS 1.3 handshake's four secrets and the exporter's: label, client random (32
    // octets), secret, in hex.
    for label in [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "SERVER_TRAFFIC_SECRET_0",
    ] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{label} in {lines:?}"));
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 3);
        assert_eq!(fields[1].len(), 64);
        assert!(fields[2].len() >= 64 && fields[2].chars().all(|c| c.is_ascii_hexdigit()));
    }
    // Taken lines are gone; the bound keeps the newest.
    let mut sim = Sim::new(45);
    let w = fig14(&mut sim, &Spec::default());
    sim.with_actor(w.server, |s: &mut SubstitutionServer<TlsSubstitute>, _| {
        s.protocol_mut().log_keys(2)
    })
    .unwrap();
    connect(&mut sim, &w);
    settle(&mut sim);
    let lines = sim
        .with_actor(w.server, |s: &mut SubstitutionServer<TlsSubstitute>, _| {
            s.protocol_mut().take_key_log()
        })
        .unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let again = sim
        .with_actor(w.server, |s: &mut SubstitutionServer<TlsSubstitute>, _| {
            s.protocol_mut().take_key_log()
        })
        .unwrap();
    assert!(again.is_empty());
}

//! deputy's IKEv2 initiator against deputy's IKEv2 responder, in process: a tiny loop moves
//! datagrams between the two actors (optionally through a NAPT box and with losses) and
//! advances virtual time to the next timer.

use std::net::SocketAddr;
use std::time::Duration;

use deputy::crypto::dh::Group;
use deputy::ikev2::auth::{AuthKeyDb, Credential, Signer};
use deputy::ikev2::codec::{Message, Payload};
use deputy::ikev2::consts::{exchange, notify};
use deputy::ikev2::{
    AuthFailure, ChildMode, FailReason, Identity, IkeConfig, IkeEvent, IkeProposal, Initiator,
    InitiatorConfig, Responder, ResponderConfig,
};
use deputy::ipsec::{
    Action, ChildSa, DataPlane, DataPlaneConfig, Direction, Inbound, Mode, Outbound, Policy,
    Protected, Selector, Suite, TrafficSelector,
};
use deputy::{Actor, Error, Input, Instant, Output, Transmit};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

mod common;

const PSK: &[u8] = b"correct horse battery staple";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn rng(seed: u64) -> deputy::Rng {
    Box::new(ChaCha20Rng::seed_from_u64(seed))
}

fn i_config(local: &str) -> InitiatorConfig {
    let mut ike = IkeConfig::new(Identity::Fqdn("appliance.example".into()), PSK);
    ike.remote_id = Some(Identity::Fqdn("gateway.example".into()));
    InitiatorConfig {
        ike,
        local: addr(local),
        remote: addr(R_ADDR),
    }
}

fn r_config() -> ResponderConfig {
    let mut ike = IkeConfig::new(Identity::Fqdn("gateway.example".into()), PSK);
    ike.remote_id = None;
    ResponderConfig::new(ike)
}

const I_ADDR: &str = "10.0.0.1:500";
const R_ADDR: &str = "198.51.100.2:500";
const NAT_PUBLIC: &str = "203.0.113.5";

/// Which way a datagram went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ToResponder,
    ToInitiator,
}

/// One datagram on the wire, as sent (before any NAT rewriting).
#[derive(Clone, Debug)]
struct Sent {
    at: Instant,
    dir: Dir,
    t: Transmit,
    dropped: bool,
}

type DropRule = Box<dyn FnMut(&Sent, usize) -> bool>;

struct Net {
    now: Instant,
    inits: Vec<Initiator>,
    resp: Responder,
    i_events: Vec<Vec<IkeEvent>>,
    r_events: Vec<IkeEvent>,
    i_errors: Vec<Error>,
    r_errors: Vec<Error>,
    log: Vec<Sent>,
    /// Decides losses: (datagram, its index in the log) → drop?
    drop: DropRule,
    /// NAPT in front of initiator 0: private port → public port.
    nat: bool,
}

impl Net {
    fn new(i: InitiatorConfig, r: ResponderConfig) -> Net {
        Self::many(vec![i], r)
    }

    fn many(is: Vec<InitiatorConfig>, r: ResponderConfig) -> Net {
        let n = is.len();
        Net {
            now: Instant::ZERO,
            inits: is
                .into_iter()
                .enumerate()
                .map(|(k, c)| Initiator::new(c, rng(100 + k as u64)).unwrap())
                .collect(),
            resp: Responder::new(r, rng(7), Instant::ZERO).unwrap(),
            i_events: vec![Vec::new(); n],
            r_events: Vec::new(),
            i_errors: Vec::new(),
            r_errors: Vec::new(),
            log: Vec::new(),
            drop: Box::new(|_, _| false),
            nat: false,
        }
    }

    fn nat_out(&self, a: SocketAddr) -> SocketAddr {
        // Endpoint-independent mapping: 10.0.0.1:p → 203.0.113.5:(40000 + p).
        SocketAddr::new(NAT_PUBLIC.parse().unwrap(), 40000 + a.port())
    }

    fn nat_in(&self, a: SocketAddr) -> SocketAddr {
        SocketAddr::new(addr(I_ADDR).ip(), a.port() - 40000)
    }

    /// Neither side refused any input.
    fn assert_no_errors(&self) {
        assert!(
            self.i_errors.is_empty() && self.r_errors.is_empty(),
            "{:?} {:?}",
            self.i_errors,
            self.r_errors
        );
    }

    /// Move every queued datagram; returns whether anything moved.
    fn deliver(&mut self) -> bool {
        let mut moved = false;
        loop {
            let mut batch: Vec<(usize, Dir, Transmit)> = Vec::new();
            for (k, i) in self.inits.iter_mut().enumerate() {
                while let Some(o) = i.poll_output() {
                    match o {
                        Output::Transmit(t) => batch.push((k, Dir::ToResponder, t)),
                        Output::Event(e) => self.i_events[k].push(e),
                        other => panic!("unexpected output {other:?}"),
                    }
                }
            }
            while let Some(o) = self.resp.poll_output() {
                match o {
                    Output::Transmit(t) => {
                        let who = self.initiator_for(t.to);
                        batch.push((who, Dir::ToInitiator, t));
                    }
                    Output::Event(e) => self.r_events.push(e),
                    other => panic!("unexpected output {other:?}"),
                }
            }
            if batch.is_empty() {
                return moved;
            }
            moved = true;
            for (who, dir, t) in batch {
                let mut sent = Sent {
                    at: self.now,
                    dir,
                    t,
                    dropped: false,
                };
                let idx = self.log.len();
                sent.dropped = (self.drop)(&sent, idx);
                self.log.push(sent.clone());
                if sent.dropped {
                    continue;
                }
                let t = sent.t;
                match dir {
                    Dir::ToResponder => {
                        let from = if self.nat && who == 0 {
                            self.nat_out(t.from)
                        } else {
                            t.from
                        };
                        let input = Input::Datagram {
                            from,
                            to: t.to,
                            data: &t.data,
                        };
                        if let Err(e) = self.resp.handle_input(self.now, input) {
                            self.r_errors.push(e);
                        }
                    }
                    Dir::ToInitiator => {
                        let to = if self.nat && who == 0 {
                            self.nat_in(t.to)
                        } else {
                            t.to
                        };
                        let input = Input::Datagram {
                            from: t.from,
                            to,
                            data: &t.data,
                        };
                        if let Err(e) = self.inits[who].handle_input(self.now, input) {
                            self.i_errors.push(e);
                        }
                    }
                }
            }
        }
    }

    fn initiator_for(&self, to: SocketAddr) -> usize {
        if self.nat && to.ip() == NAT_PUBLIC.parse::<std::net::IpAddr>().unwrap() {
            return 0;
        }
        self.inits
            .iter()
            .position(|i| i.ike_addresses().0.ip() == to.ip())
            .unwrap_or(0)
    }

    /// Deliver, then follow timers up to `horizon` from now.
    fn run_for(&mut self, horizon: Duration) {
        let end = self.now + horizon;
        for _ in 0..10_000 {
            self.deliver();
            let next = self
                .inits
                .iter()
                .filter_map(|i| i.poll_timeout())
                .chain(self.resp.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    for i in &mut self.inits {
                        i.handle_timeout(self.now);
                    }
                    self.resp.handle_timeout(self.now);
                }
                _ => {
                    self.deliver();
                    self.now = end;
                    return;
                }
            }
        }
        panic!("the exchange did not settle");
    }

    fn start(&mut self, k: usize) {
        self.inits[k].start(self.now).unwrap();
        self.run_for(Duration::from_secs(1));
    }

    fn i_child(&self, k: usize) -> ChildSa {
        self.inits[k]
            .child_sa()
            .expect("initiator Child SA")
            .clone()
    }

    fn r_child(&self, k: usize) -> ChildSa {
        let id = self.inits[k].ike_sa_id().unwrap();
        self.resp.child_sa(id).expect("responder Child SA").clone()
    }

    fn exchanges(&self, dir: Dir, ex: u8) -> Vec<&Sent> {
        self.log
            .iter()
            .filter(|s| s.dir == dir && ike_bytes(&s.t)[18] == ex)
            .collect()
    }
}

/// The IKE message in a datagram (non-ESP marker removed).
fn ike_bytes(t: &Transmit) -> &[u8] {
    if t.to.port() == 4500 || t.from.port() == 4500 {
        assert_eq!(&t.data[..4], &[0, 0, 0, 0], "non-ESP marker");
        &t.data[4..]
    } else {
        &t.data
    }
}

fn has_event(events: &[IkeEvent], f: impl Fn(&IkeEvent) -> bool) -> bool {
    events.iter().any(f)
}

/// Whether the IKE event that handed over the Child SA with inbound SPI `spi_in` says we
/// initiated the exchange that created it.
fn initiated(events: &[IkeEvent], spi_in: u32) -> Option<bool> {
    events.iter().rev().find_map(|e| match e {
        IkeEvent::ChildSaEstablished {
            child, initiated, ..
        }
        | IkeEvent::ChildSaRekeyed {
            child, initiated, ..
        } if child.spi_in == spi_in => Some(*initiated),
        _ => None,
    })
}

/// The pair was created by an exchange that initiator 0 of `net` initiated.
fn assert_initiator_initiated(net: &Net, i: &ChildSa, r: &ChildSa) {
    assert_eq!(initiated(&net.i_events[0], i.spi_in), Some(true));
    assert_eq!(initiated(&net.r_events, r.spi_in), Some(false));
}

/// The pair was created by an exchange the responder initiated (a rekey it started).
fn assert_responder_initiated(net: &Net, i: &ChildSa, r: &ChildSa) {
    assert_eq!(initiated(&net.r_events, r.spi_in), Some(true));
    assert_eq!(initiated(&net.i_events[0], i.spi_in), Some(false));
}

fn assert_child_pair(net: &Net, i: &ChildSa, r: &ChildSa, suite: Suite) {
    assert_eq!(i.suite, suite);
    assert_eq!(r.suite, suite);
    assert_eq!(i.spi_in, r.spi_out);
    assert_eq!(i.spi_out, r.spi_in);
    assert_eq!(i.keys_out, r.keys_in, "initiator→responder keys agree");
    assert_eq!(i.keys_in, r.keys_out, "responder→initiator keys agree");
    assert_ne!(i.keys_out, i.keys_in, "the two directions differ");
    for k in [&i.keys_out, &i.keys_in] {
        assert_eq!(
            k.encryption.len(),
            suite.cipher_key_len() + suite.salt_len()
        );
        assert_eq!(k.integrity.len(), suite.integrity_key_len());
    }
    assert_eq!(i.local_ts, r.remote_ts);
    assert_eq!(i.remote_ts, r.local_ts);
    assert_initiator_initiated(net, i, r);
    assert_eq!(i.mode.is_transport(), r.mode.is_transport());
    // Each side's tunnel endpoints are its IKE endpoints.
    for (c, actor_addrs) in [(i, Some(net.inits[0].ike_addresses())), (r, None)] {
        if let (Mode::Tunnel { local, remote }, Some(e)) = (c.mode, c.encap) {
            assert_eq!((local, remote), (e.local.ip(), e.remote.ip()));
        }
        if let (Mode::Tunnel { local, remote }, Some((l, r))) = (c.mode, actor_addrs) {
            assert_eq!((local, remote), (l.ip(), r.ip()));
        }
    }
    // The data plane takes the value as it is.
    i.validate().unwrap();
    r.validate().unwrap();
    // Debug must not print key material.
    let dbg = format!("{i:?}");
    assert!(dbg.contains("SaKeys { encryption: <"));
}

fn established(net: &Net) {
    assert!(
        net.inits[0].is_established(),
        "initiator events: {:?}, errors: {:?}, responder: {:?} {:?}",
        net.i_events[0],
        net.i_errors,
        net.r_events,
        net.r_errors
    );
    assert_eq!(net.resp.established().len(), 1);
}

#[test]
fn every_suite_and_group_establishes_with_identical_keys() {
    let cases: Vec<(IkeProposal, Suite)> = vec![
        (
            IkeProposal::aes128_sha256(&[Group::Modp2048]),
            Suite::AesCbc128HmacSha256,
        ),
        (
            IkeProposal::aes128_sha256(&[Group::X25519]),
            Suite::AesCbc128HmacSha256,
        ),
        (
            IkeProposal::aes128_sha256(&[Group::X25519]),
            Suite::AesCbc256HmacSha256,
        ),
        (
            IkeProposal::chacha20poly1305(&[Group::X25519]),
            Suite::ChaCha20Poly1305,
        ),
        (
            IkeProposal::chacha20poly1305(&[Group::Modp2048]),
            Suite::AesGcm128,
        ),
        (
            IkeProposal::aes_gcm16(128, &[Group::X25519]),
            Suite::AesGcm128,
        ),
        (
            IkeProposal::aes_gcm16(256, &[Group::Modp2048]),
            Suite::AesGcm256,
        ),
        (
            IkeProposal::aes_gcm16(256, &[Group::X25519]),
            Suite::ChaCha20Poly1305,
        ),
    ];
    for (ike, esp) in cases {
        let mut ic = i_config(I_ADDR);
        ic.ike.ike_proposals = vec![ike.clone()];
        ic.ike.esp_proposals = vec![esp];
        let mut rc = r_config();
        rc.ike.ike_proposals = vec![ike.clone()];
        rc.ike.esp_proposals = vec![esp];
        let mut net = Net::new(ic, rc);
        net.start(0);
        established(&net);
        let (i, r) = (net.i_child(0), net.r_child(0));
        assert_child_pair(&net, &i, &r, esp);
        assert!(i.encap.is_none() && r.encap.is_none());
        assert_eq!(
            i.mode,
            Mode::Tunnel {
                local: addr(I_ADDR).ip(),
                remote: addr(R_ADDR).ip()
            }
        );
        let suite = net.i_events[0]
            .iter()
            .find_map(|e| match e {
                IkeEvent::IkeSaEstablished { suite, peer_id, .. } => {
                    assert_eq!(peer_id, &Identity::Fqdn("gateway.example".into()));
                    Some(*suite)
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(suite.encr, ike.encr);
        assert_eq!(suite.group, ike.groups[0]);
        assert!(has_event(&net.r_events, |e| matches!(
            e,
            IkeEvent::IkeSaEstablished { peer_id: Identity::Fqdn(n), initiator: false, .. }
                if n == "appliance.example"
        )));
        // Exactly four datagrams: no retransmission without loss.
        assert_eq!(net.log.len(), 4, "{ike:?}");
        assert!(net.i_errors.is_empty() && net.r_errors.is_empty());
    }
}

#[test]
fn lost_messages_are_retransmitted_bit_identically_and_replayed() {
    let mut net = Net::new(i_config(I_ADDR), r_config());
    // Lose the first IKE_SA_INIT request and the first IKE_AUTH response.
    let (mut lost_init, mut lost_auth) = (false, false);
    net.drop = Box::new(move |s, _| {
        let ex = ike_bytes(&s.t)[18];
        if s.dir == Dir::ToResponder && ex == exchange::IKE_SA_INIT && !lost_init {
            lost_init = true;
            return true;
        }
        if s.dir == Dir::ToInitiator && ex == exchange::IKE_AUTH && !lost_auth {
            lost_auth = true;
            return true;
        }
        false
    });
    net.start(0);
    net.run_for(Duration::from_secs(5));
    established(&net);
    assert_child_pair(
        &net,
        &net.i_child(0),
        &net.r_child(0),
        Suite::AesCbc128HmacSha256,
    );

    let inits = net.exchanges(Dir::ToResponder, exchange::IKE_SA_INIT);
    assert_eq!(inits.len(), 2);
    assert!(inits[0].dropped && !inits[1].dropped);
    assert_eq!(
        inits[0].t.data, inits[1].t.data,
        "bit-identical retransmission"
    );
    assert_eq!(inits[1].at - inits[0].at, Duration::from_millis(500));

    let auth_req = net.exchanges(Dir::ToResponder, exchange::IKE_AUTH);
    assert_eq!(auth_req.len(), 2);
    assert_eq!(
        auth_req[0].t.data, auth_req[1].t.data,
        "bit-identical IKE_AUTH"
    );
    let auth_resp = net.exchanges(Dir::ToInitiator, exchange::IKE_AUTH);
    assert_eq!(auth_resp.len(), 2);
    assert!(auth_resp[0].dropped);
    assert_eq!(
        auth_resp[0].t.data, auth_resp[1].t.data,
        "responder replays its cache"
    );
    // The responder authenticated the IKE SA once, not twice.
    let n = net
        .r_events
        .iter()
        .filter(|e| matches!(e, IkeEvent::ChildSaEstablished { .. }))
        .count();
    assert_eq!(n, 1);
}

#[test]
fn retransmission_backs_off_and_then_fails() {
    let mut net = Net::new(i_config(I_ADDR), r_config());
    net.drop = Box::new(|s, _| s.dir == Dir::ToResponder);
    net.start(0);
    net.run_for(Duration::from_secs(120));
    let sent: Vec<Instant> = net.log.iter().map(|s| s.at).collect();
    let ms: Vec<u64> = sent.iter().map(|t| t.as_nanos() / 1_000_000).collect();
    assert_eq!(ms, vec![0, 500, 1500, 3500, 7500, 15500]);
    assert!(net.log.windows(2).all(|w| w[0].t.data == w[1].t.data));
    assert!(has_event(&net.i_events[0], |e| matches!(
        e,
        IkeEvent::Failed {
            reason: FailReason::Timeout,
            ..
        }
    )));
    assert_eq!(net.inits[0].poll_timeout(), None);
    // The initiator may start over.
    net.inits[0].start(net.now).unwrap();
}

#[test]
fn cookie_demand_is_answered() {
    // With forced encapsulation too: its made-up NAT_DETECTION_SOURCE_IP is one of the
    // payloads RFC 7296 §2.6 says the retry repeats unchanged.
    for force_encap in [false, true] {
        cookie_demand_is_answered_with(force_encap);
    }
}

fn cookie_demand_is_answered_with(force_encap: bool) {
    let mut rc = r_config();
    rc.cookie_threshold = 0;
    let mut ic = i_config(I_ADDR);
    ic.ike.force_encap = force_encap;
    let mut net = Net::new(ic, rc);
    net.start(0);
    established(&net);
    let reqs = net.exchanges(Dir::ToResponder, exchange::IKE_SA_INIT);
    assert_eq!(reqs.len(), 2);
    let first = Message::decode(ike_bytes(&reqs[0].t), &Default::default()).unwrap();
    let second = Message::decode(ike_bytes(&reqs[1].t), &Default::default()).unwrap();
    assert!(first.notify(notify::COOKIE).is_none());
    match &second.payloads[0] {
        Payload::Notify(n) => assert_eq!(n.ty, notify::COOKIE, "COOKIE comes first"),
        other => panic!("first payload {other:?}"),
    }
    // Everything else unchanged.
    assert_eq!(&second.payloads[1..], &first.payloads[..]);
    let answer = net.exchanges(Dir::ToInitiator, exchange::IKE_SA_INIT)[0];
    let answer = Message::decode(ike_bytes(&answer.t), &Default::default()).unwrap();
    assert_eq!(answer.header.spi_r, [0; 8]);
    assert_eq!(answer.payloads.len(), 1);
    assert_eq!(net.resp.half_open_count(), 0);
}

#[test]
fn invalid_ke_payload_makes_the_initiator_switch_groups() {
    for (offer, accept) in [
        (vec![Group::X25519, Group::Modp2048], Group::Modp2048),
        (vec![Group::Modp2048, Group::X25519], Group::X25519),
    ] {
        let mut ic = i_config(I_ADDR);
        ic.ike.ike_proposals = vec![IkeProposal::aes128_sha256(&offer)];
        let mut rc = r_config();
        rc.ike.ike_proposals = vec![IkeProposal::aes128_sha256(&[accept])];
        let mut net = Net::new(ic, rc);
        net.start(0);
        established(&net);
        let answers = net.exchanges(Dir::ToInitiator, exchange::IKE_SA_INIT);
        let first = Message::decode(ike_bytes(&answers[0].t), &Default::default()).unwrap();
        let n = first.notify(notify::INVALID_KE_PAYLOAD).unwrap();
        assert_eq!(n.data, accept.id().to_be_bytes());
        assert!(has_event(&net.i_events[0], |e| matches!(
            e,
            IkeEvent::IkeSaEstablished { suite, .. } if suite.group == accept
        )));
        assert_child_pair(
            &net,
            &net.i_child(0),
            &net.r_child(0),
            Suite::AesCbc128HmacSha256,
        );
    }
}

#[test]
fn nat_is_detected_and_ike_moves_to_4500() {
    let mut net = Net::new(i_config(I_ADDR), r_config());
    net.nat = true;
    net.start(0);
    established(&net);
    let (i, r) = (net.i_child(0), net.r_child(0));
    let (ie, re) = (i.encap.unwrap(), r.encap.unwrap());
    assert_eq!(ie.local, addr("10.0.0.1:4500"));
    assert_eq!(ie.remote, addr("198.51.100.2:4500"));
    // The responder answers the NAT's public address and port.
    assert_eq!(re.remote, addr("203.0.113.5:44500"));
    assert_eq!(re.local, addr("198.51.100.2:4500"));
    for s in net.exchanges(Dir::ToResponder, exchange::IKE_AUTH) {
        assert_eq!(s.t.to.port(), 4500);
        assert_eq!(&s.t.data[..4], &[0; 4]);
    }
    for s in net.exchanges(Dir::ToInitiator, exchange::IKE_AUTH) {
        assert_eq!(s.t.to, addr("203.0.113.5:44500"));
        assert_eq!(s.t.from.port(), 4500);
    }
    assert_child_pair(&net, &i, &r, Suite::AesCbc128HmacSha256);
    // Later exchanges stay on 4500 through the NAT.
    net.inits[0].send_liveness(net.now).unwrap();
    net.run_for(Duration::from_secs(1));
    assert!(has_event(&net.i_events[0], |e| matches!(
        e,
        IkeEvent::LivenessConfirmed { .. }
    )));
    // A NAT keepalive on 4500 is ignored.
    let ka = Input::Datagram {
        from: addr("203.0.113.5:44500"),
        to: addr("198.51.100.2:4500"),
        data: &[0xff],
    };
    net.resp.handle_input(net.now, ka).unwrap();
    // An ESP packet (non-zero SPI) on 4500 is not IKE.
    let esp = Input::Datagram {
        from: addr("203.0.113.5:44500"),
        to: addr("198.51.100.2:4500"),
        data: &[0, 0, 1, 0, 0, 0, 0, 1, 9, 9],
    };
    assert!(net.resp.handle_input(net.now, esp).is_err());
}

#[test]
fn forced_encapsulation_without_nat() {
    for force_initiator in [true, false] {
        let mut ic = i_config(I_ADDR);
        let mut rc = r_config();
        if force_initiator {
            ic.ike.force_encap = true;
        } else {
            rc.ike.force_encap = true;
        }
        let mut net = Net::new(ic, rc);
        net.start(0);
        established(&net);
        let (i, r) = (net.i_child(0), net.r_child(0));
        let (ie, re) = (i.encap.unwrap(), r.encap.unwrap());
        assert_eq!(ie.remote.port(), 4500);
        assert_eq!(re.remote, addr("10.0.0.1:4500"));
    }
}

#[test]
fn child_sa_rekey_from_either_side() {
    let mut net = Net::new(i_config(I_ADDR), r_config());
    net.start(0);
    established(&net);
    let old = net.i_child(0);
    net.inits[0].rekey_child(net.now).unwrap();
    net.run_for(Duration::from_secs(1));
    let new_i = net.i_child(0);
    let new_r = net.r_child(0);
    assert_ne!(new_i.spi_in, old.spi_in);
    assert_ne!(new_i.keys_out, old.keys_out, "fresh nonces give fresh keys");
    assert_child_pair(&net, &new_i, &new_r, Suite::AesCbc128HmacSha256);
    for ev in [&net.i_events[0], &net.r_events] {
        assert!(has_event(ev, |e| matches!(
            e,
            IkeEvent::ChildSaRekeyed { .. }
        )));
        assert!(has_event(ev, |e| matches!(
            e,
            IkeEvent::ChildSaDeleted { spi_in, .. } if *spi_in == old.spi_in || *spi_in == old.spi_out
        )));
    }
    assert_eq!(net.inits[0].child_sas().len(), 1);
    let id = net.inits[0].ike_sa_id().unwrap();
    assert_eq!(net.resp.child_sas(id).len(), 1);

    // The responder rekeys too; then the initiator's view is the exchange responder's.
    let before = net.i_child(0);
    net.resp.rekey_child(net.now, id).unwrap();
    net.run_for(Duration::from_secs(1));
    let (i, r) = (net.i_child(0), net.r_child(0));
    assert_ne!(i.spi_in, before.spi_in);
    assert_eq!(i.spi_in, r.spi_out);
    assert_eq!(i.keys_out, r.keys_in);
    assert_eq!(i.keys_in, r.keys_out);
    assert_responder_initiated(&net, &i, &r);
    assert_eq!(net.inits[0].child_sas().len(), 1);
    net.assert_no_errors();
}

#[test]
fn delete_child_then_ike() {
    let mut net = Net::new(i_config(I_ADDR), r_config());
    net.start(0);
    established(&net);
    let c = net.i_child(0);
    net.inits[0].delete_child(net.now).unwrap();
    net.run_for(Duration::from_secs(1));
    assert!(net.inits[0].child_sa().is_none());
    let id = net.inits[0].ike_sa_id().unwrap();
    assert!(net.resp.child_sa(id).is_none());
    assert!(has_event(&net.r_events, |e| matches!(
        e,
        IkeEvent::ChildSaDeleted { spi_in, spi_out, .. } if *spi_in == c.spi_out && *spi_out == c.spi_in
    )));
    // Nothing left to rekey.
    assert!(net.inits[0].rekey_child(net.now).is_err());

    net.inits[0].delete_ike(net.now).unwrap();
    net.run_for(Duration::from_secs(1));
    assert!(has_event(&net.i_events[0], |e| matches!(
        e,
        IkeEvent::IkeSaDeleted { by_peer: false, .. }
    )));
    assert!(has_event(&net.r_events, |e| matches!(
        e,
        IkeEvent::IkeSaDeleted { by_peer: true, .. }
    )));
    assert_eq!(net.resp.ike_sa_count(), 0);
    assert!(!net.inits[0].is_established());
    assert!(matches!(
        net.inits[0].send_liveness(net.now),
        Err(Error::Ike(deputy::ikev2::IkeError::NotEstablished))
    ));
}

#[test]
fn responder_deletes_ike_sa() {
    let mut net = Net::new(i_config(I_ADDR), r_config());
    net.start(0);
    let id = net.inits[0].ike_sa_id().unwrap();
    net.resp.delete_ike(net.now, id).unwrap();
    net.run_for(Duration::from_secs(1));
    assert!(has_event(&net.i_events[0], |e| matches!(
        e,
        IkeEvent::IkeSaDeleted { by_peer: true, .. }
    )));
    assert!(has_event(&net.i_events[0], |e| matches!(
        e,
        IkeEvent::ChildSaDeleted { .. }
    )));
    assert_eq!(net.resp.ike_sa_count(), 0);
}

#[test]
fn liveness_both_ways_and_the_command_queue_bound() {
    let mut net = Net::new(i_config(I_ADDR), r_config());
    net.start(0);
    let id = net.inits[0].ike_sa_id().unwrap();
    net.resp.send_liveness(net.now, id).unwrap();
    net.run_for(Duration::from_secs(1));
    assert!(has_event(&net.r_events, |e| matches!(
        e,
        IkeEvent::LivenessConfirmed { .. }
    )));
    let informational = net.exchanges(Dir::ToInitiator, exchange::INFORMATIONAL);
    assert_eq!(informational.len(), 1);

    // Window size 1: further commands queue, up to the bound.
    net.inits[0].send_liveness(net.now).unwrap();
    for _ in 0..8 {
        net.inits[0].send_liveness(net.now).unwrap();
    }
    assert!(matches!(
        net.inits[0].send_liveness(net.now),
        Err(Error::CapacityExceeded {
            what: "IKE command queue",
            bound: 8
        })
    ));
    net.run_for(Duration::from_secs(1));
    let n = net.i_events[0]
        .iter()
        .filter(|e| matches!(e, IkeEvent::LivenessConfirmed { .. }))
        .count();
    assert_eq!(n, 9);
    // Message IDs went up one by one.
    let ids: Vec<u32> = net
        .exchanges(Dir::ToResponder, exchange::INFORMATIONAL)
        .iter()
        .filter(|s| ike_bytes(&s.t)[19] & 0x20 == 0)
        .map(|s| u32::from_be_bytes(ike_bytes(&s.t)[20..24].try_into().unwrap()))
        .collect();
    assert_eq!(ids, (2..11).collect::<Vec<u32>>());
}

#[test]
fn wrong_psk_is_authentication_failed() {
    let mut rc = r_config();
    rc.ike.credential = Credential::Psk(deputy::ikev2::SecretBytes::from_slice(b"another secret"));
    rc.ike.auth_db.set_any_peer_psk(Some(b"another secret"));
    let mut net = Net::new(i_config(I_ADDR), rc);
    net.start(0);
    assert!(!net.inits[0].is_established());
    assert!(has_event(&net.r_events, |e| matches!(
        e,
        IkeEvent::Failed {
            reason: FailReason::PeerAuth(AuthFailure::BadAuth),
            ..
        }
    )));
    assert!(has_event(&net.i_events[0], |e| matches!(
        e,
        IkeEvent::Failed {
            reason: FailReason::AuthenticationFailed,
            ..
        }
    )));
    assert!(net.resp.established().is_empty());
    // The refused SA lingers only to replay its answer, then goes.
    net.run_for(Duration::from_secs(60));
    assert_eq!(net.resp.ike_sa_count(), 0);
}

#[test]
fn wrong_identity_is_refused() {
    let mut ic = i_config(I_ADDR);
    ic.ike.remote_id = Some(Identity::Fqdn("someone-else.example".into()));
    let mut net = Net::new(ic, r_config());
    net.start(0);
    assert!(has_event(&net.i_events[0], |e| matches!(
        e,
        IkeEvent::Failed {
            reason: FailReason::IdentityMismatch,
            ..
        }
    )));
    // The initiator told the responder, which dropped the SA.
    assert!(has_event(&net.r_events, |e| matches!(
        e,
        IkeEvent::Failed {
            reason: FailReason::AuthenticationFailed,
            ..
        }
    )));
}

#[test]
fn no_proposal_chosen() {
    let mut ic = i_config(I_ADDR);
    ic.ike.ike_proposals = vec![IkeProposal::aes128_sha256(&[Group::X25519])];
    let mut rc = r_config();
    rc.ike.ike_proposals = vec![IkeProposal::chacha20poly1305(&[Group::X25519])];
    let mut net = Net::new(ic, rc);
    net.start(0);
    assert!(has_event(&net.i_events[0], |e| matches!(
        e,
        IkeEvent::Failed {
            reason: FailReason::PeerNotify(notify::NO_PROPOSAL_CHOSEN),
            ..
        }
    )));

    // ESP mismatch: the IKE SA comes up, the Child SA does not.
    let mut ic = i_config(I_ADDR);
    ic.ike.esp_proposals = vec![Suite::AesGcm256];
    let mut rc = r_config();
    rc.ike.esp_proposals = vec![Suite::ChaCha20Poly1305];
    let mut net = Net::new(ic, rc);
    net.start(0);
    established(&net);
    for ev in [&net.i_events[0], &net.r_events] {
        assert!(has_event(ev, |e| matches!(
            e,
            IkeEvent::ChildSaFailed {
                notify: notify::NO_PROPOSAL_CHOSEN,
                ..
            }
        )));
    }
}

#[test]
fn traffic_selectors_are_narrowed_or_refused() {
    let mut ic = i_config(I_ADDR);
    ic.ike.ts_local = vec![TrafficSelector::prefix("10.0.0.0".parse().unwrap(), 8)];
    ic.ike.ts_remote = vec![TrafficSelector::any_v4()];
    let mut rc = r_config();
    rc.ike.ts_local = vec![TrafficSelector::prefix("192.168.7.0".parse().unwrap(), 24)];
    rc.ike.ts_remote = vec![TrafficSelector::prefix("10.0.0.0".parse().unwrap(), 24)];
    let mut net = Net::new(ic.clone(), rc.clone());
    net.start(0);
    let i = net.i_child(0);
    assert_eq!(
        i.local_ts,
        vec![TrafficSelector::prefix("10.0.0.0".parse().unwrap(), 24)]
    );
    assert_eq!(
        i.remote_ts,
        vec![TrafficSelector::prefix("192.168.7.0".parse().unwrap(), 24)]
    );
    assert_child_pair(&net, &i, &net.r_child(0), Suite::AesCbc128HmacSha256);

    rc.ike.ts_remote = vec![TrafficSelector::prefix("172.16.0.0".parse().unwrap(), 12)];
    let mut net = Net::new(ic, rc);
    net.start(0);
    established(&net);
    assert!(has_event(&net.i_events[0], |e| matches!(
        e,
        IkeEvent::ChildSaFailed {
            notify: notify::TS_UNACCEPTABLE,
            ..
        }
    )));
}

#[test]
fn transport_mode_is_negotiated() {
    let mut ic = i_config(I_ADDR);
    ic.ike.mode = ChildMode::Transport;
    let mut rc = r_config();
    rc.ike.mode = ChildMode::Transport;
    let mut net = Net::new(ic.clone(), rc);
    net.start(0);
    assert_eq!(net.i_child(0).mode, Mode::Transport);
    assert_eq!(net.r_child(0).mode, Mode::Transport);
    // A responder that only does tunnel mode answers without USE_TRANSPORT_MODE.
    let mut net = Net::new(ic, r_config());
    net.start(0);
    assert!(matches!(net.i_child(0).mode, Mode::Tunnel { .. }));
}

#[test]
fn responder_bounds_are_enforced() {
    // Three initiators whose IKE_AUTH never arrives: they stay half-open.
    let cfgs: Vec<InitiatorConfig> = (1..=3)
        .map(|k| i_config(&format!("10.0.0.{k}:500")))
        .collect();
    let mut rc = r_config();
    rc.max_half_open = 2;
    rc.cookie_threshold = 100;
    let mut net = Net::many(cfgs, rc);
    net.drop =
        Box::new(|s, _| s.dir == Dir::ToResponder && ike_bytes(&s.t)[18] == exchange::IKE_AUTH);
    for k in 0..3 {
        net.inits[k].start(net.now).unwrap();
        net.deliver();
    }
    assert_eq!(net.resp.half_open_count(), 2);
    assert!(net.r_errors.iter().any(|e| matches!(
        e,
        Error::CapacityExceeded {
            what: "half-open IKE SAs",
            bound: 2
        }
    )));
    // Half-open SAs expire.
    net.run_for(Duration::from_secs(31));
    assert_eq!(net.resp.half_open_count(), 0);

    // The total bound.
    let cfgs: Vec<InitiatorConfig> = (1..=2)
        .map(|k| i_config(&format!("10.0.0.{k}:500")))
        .collect();
    let mut rc = r_config();
    rc.max_ike_sas = 1;
    let mut net = Net::many(cfgs, rc);
    net.start(0);
    net.start(1);
    assert!(net.inits[0].is_established());
    assert!(!net.inits[1].is_established());
    assert_eq!(net.resp.ike_sa_count(), 1);
    assert!(net.r_errors.iter().any(|e| matches!(
        e,
        Error::CapacityExceeded {
            what: "IKE SAs",
            bound: 1
        }
    )));
}

#[test]
fn unsupported_critical_payload_is_answered() {
    // Build a valid-looking IKE_SA_INIT with an unknown payload type 200 marked critical.
    let mut net = Net::new(i_config(I_ADDR), r_config());
    net.inits[0].start(net.now).unwrap();
    let Some(Output::Transmit(t)) = net.inits[0].poll_output() else {
        panic!("no request");
    };
    let mut m = Message::decode(&t.data, &Default::default()).unwrap();
    m.payloads
        .push(Payload::Unknown(deputy::ikev2::codec::UnknownPayload {
            ty: 200,
            data: vec![1, 2, 3],
        }));
    let mut bytes = m.encode().unwrap();
    // The unknown payload is the last: its generic header is 7 bytes from the end.
    let at = bytes.len() - 7;
    bytes[at + 1] |= 0x80;
    let input = Input::Datagram {
        from: t.from,
        to: t.to,
        data: &bytes,
    };
    assert!(net.resp.handle_input(net.now, input).is_err());
    let Some(Output::Transmit(answer)) = net.resp.poll_output() else {
        panic!("no answer");
    };
    let a = Message::decode(&answer.data, &Default::default()).unwrap();
    let n = a.notify(notify::UNSUPPORTED_CRITICAL_PAYLOAD).unwrap();
    assert_eq!(n.data, vec![200]);
    // Not critical: skipped, and the exchange proceeds.
    bytes[at + 1] &= 0x7f;
    let input = Input::Datagram {
        from: t.from,
        to: t.to,
        data: &bytes,
    };
    net.resp.handle_input(net.now, input).unwrap();
    assert_eq!(net.resp.half_open_count(), 1);
}

#[test]
fn garbage_never_panics_either_actor() {
    let mut net = Net::new(i_config(I_ADDR), r_config());
    net.start(0);
    established(&net);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let captured: Vec<Vec<u8>> = net.log.iter().map(|s| s.t.data.clone()).collect();
    for round in 0..2000 {
        let mut data = captured[round % captured.len()].clone();
        // Flip a few bytes (xorshift).
        for _ in 0..(1 + round % 4) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % data.len();
            data[i] ^= (x >> 32) as u8 | 1;
        }
        if round % 7 == 0 {
            data.truncate((x as usize) % data.len());
        }
        let input = Input::Datagram {
            from: addr(I_ADDR),
            to: addr(R_ADDR),
            data: &data,
        };
        let _ = net.resp.handle_input(net.now, input);
        let input = Input::Datagram {
            from: addr(R_ADDR),
            to: addr(I_ADDR),
            data: &data,
        };
        let _ = net.inits[0].handle_input(net.now, input);
        while net.resp.poll_output().is_some() {}
        while net.inits[0].poll_output().is_some() {}
    }
    // The established SA survived the noise.
    net.inits[0].send_liveness(net.now).unwrap();
    net.run_for(Duration::from_secs(1));
    assert!(has_event(&net.i_events[0], |e| matches!(
        e,
        IkeEvent::LivenessConfirmed { .. }
    )));
}

#[test]
fn child_sa_table_is_bounded_during_a_rekey() {
    let mut net = Net::new(i_config(I_ADDR), r_config());
    net.start(0);
    let id = net.inits[0].ike_sa_id().unwrap();
    // Lose the initiator's Delete of the old Child SA: both SAs stay installed meanwhile.
    net.drop = Box::new(|s, _| {
        s.dir == Dir::ToResponder && ike_bytes(&s.t)[18] == exchange::INFORMATIONAL
    });
    net.inits[0].rekey_child(net.now).unwrap();
    net.deliver();
    assert_eq!(net.resp.child_sas(id).len(), 2);
    assert_eq!(net.inits[0].child_sas().len(), 2);
    // A further rekey is refused on both sides until the old SA is gone.
    assert!(matches!(
        net.resp.rekey_child(net.now, id),
        Err(Error::Ike(deputy::ikev2::IkeError::RekeyPending))
    ));
    // The delete is retransmitted; once it gets through, the table shrinks again.
    net.drop = Box::new(|_, _| false);
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.resp.child_sas(id).len(), 1);
    assert_eq!(net.inits[0].child_sas().len(), 1);
    net.resp.rekey_child(net.now, id).unwrap();
    net.run_for(Duration::from_secs(1));
    let (i, r) = (net.i_child(0), net.r_child(0));
    assert_responder_initiated(&net, &i, &r);
    assert_eq!((i.spi_in, i.spi_out), (r.spi_out, r.spi_in));
    assert_eq!(i.keys_out, r.keys_in);
    assert_eq!(i.keys_in, r.keys_out);
}

// ------------------------------------------------------------------ IKE + ESP end to end

/// An IPv4 UDP packet `src:1000 -> dst:2000` with `body`, built with etherparse.
fn udp_packet(src: [u8; 4], dst: [u8; 4], body: &[u8]) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ipv4(src, dst, 64).udp(1000, 2000);
    let mut out = Vec::with_capacity(builder.size(body.len()));
    builder.write(&mut out, body).unwrap();
    out
}

fn data_plane(seed: u64, local: &str, remote: &str) -> DataPlane {
    let mut dp = DataPlane::new(DataPlaneConfig::default(), rng(seed)).unwrap();
    dp.add_policy(Policy::new(
        Selector::parse(local, remote).unwrap(),
        Direction::Both,
        Action::Protect,
    ))
    .unwrap();
    dp
}

/// Protect `packet` on `from`, carry it to `to` (raw ESP, or ESP-in-UDP on the SA's
/// encapsulation endpoints), unprotect it there and check it arrives whole through `spi`.
fn esp_carries(from: &mut DataPlane, to: &mut DataPlane, packet: &[u8], spi: u32) {
    let now = Instant::ZERO;
    let out = from.protect(now, packet).unwrap();
    let inbound = match out {
        Outbound::Protected(Protected::Ip(esp)) => to.unprotect(now, &esp).unwrap(),
        Outbound::Protected(Protected::Udp(d)) => {
            assert_eq!(d.from.port(), 4500);
            assert_eq!(d.to.port(), 4500);
            to.unprotect_datagram(now, d.from, d.to, &d.payload)
                .unwrap()
        }
        other => panic!("not protected: {other:?}"),
    };
    assert_eq!(
        inbound,
        Inbound::Packet {
            spi,
            packet: packet.to_vec()
        }
    );
}

/// Issue 5's in-process acceptance test: for each suite, deputy's initiator and responder
/// complete IKE_SA_INIT (through a COOKIE demand and an INVALID_KE_PAYLOAD round) and
/// IKE_AUTH with a Child SA while the first IKE_AUTH request is lost (so it is
/// retransmitted); each side installs its Child SA into its own ESP data plane as it is,
/// and protected packets flow both ways. Then a rekey: the new SAs carry traffic, the old
/// ones are deleted on both sides.
#[test]
fn negotiated_child_sas_carry_esp_both_ways_for_every_suite() {
    type MakeProposal = fn(&[Group]) -> IkeProposal;
    let cases: [(MakeProposal, Suite, bool); 6] = [
        (
            IkeProposal::aes128_sha256,
            Suite::AesCbc128HmacSha256,
            false,
        ),
        (IkeProposal::aes128_sha256, Suite::AesCbc256HmacSha256, true),
        (IkeProposal::chacha20poly1305, Suite::ChaCha20Poly1305, true),
        (
            IkeProposal::chacha20poly1305,
            Suite::ChaCha20Poly1305,
            false,
        ),
        (
            |g: &[Group]| IkeProposal::aes_gcm16(128, g),
            Suite::AesGcm128,
            true,
        ),
        (
            |g: &[Group]| IkeProposal::aes_gcm16(256, g),
            Suite::AesGcm256,
            false,
        ),
    ];
    for (n, (proposal, esp, encap)) in cases.into_iter().enumerate() {
        // The initiator sends X25519 first; the responder only takes MODP-2048 (or the
        // other way round), so IKE_SA_INIT needs an INVALID_KE_PAYLOAD round.
        let (offer, accept) = if n % 2 == 0 {
            (vec![Group::X25519, Group::Modp2048], Group::Modp2048)
        } else {
            (vec![Group::Modp2048, Group::X25519], Group::X25519)
        };
        let mut ic = i_config(I_ADDR);
        ic.ike.ike_proposals = vec![proposal(&offer)];
        ic.ike.esp_proposals = vec![esp];
        ic.ike.ts_local = vec![TrafficSelector::prefix("10.1.0.0".parse().unwrap(), 16)];
        ic.ike.ts_remote = vec![TrafficSelector::prefix("10.2.0.0".parse().unwrap(), 16)];
        ic.ike.force_encap = encap;
        let mut rc = r_config();
        rc.ike.ike_proposals = vec![proposal(&[accept])];
        rc.ike.esp_proposals = vec![esp];
        rc.ike.ts_local = vec![TrafficSelector::prefix("10.2.0.0".parse().unwrap(), 16)];
        rc.ike.ts_remote = vec![TrafficSelector::prefix("10.1.0.0".parse().unwrap(), 16)];
        rc.cookie_threshold = 0;
        let mut net = Net::new(ic, rc);
        let mut lost = false;
        net.drop = Box::new(move |s, _| {
            let lose = s.dir == Dir::ToResponder && ike_bytes(&s.t)[18] == exchange::IKE_AUTH;
            let first = lose && !lost;
            lost |= lose;
            first
        });
        net.start(0);
        net.run_for(Duration::from_secs(5));
        established(&net);

        // COOKIE, then INVALID_KE_PAYLOAD, then the real answer.
        let answers = net.exchanges(Dir::ToInitiator, exchange::IKE_SA_INIT);
        assert_eq!(answers.len(), 3, "case {n}");
        let cookie = Message::decode(ike_bytes(&answers[0].t), &Default::default()).unwrap();
        assert!(cookie.notify(notify::COOKIE).is_some(), "case {n}");
        let ke = Message::decode(ike_bytes(&answers[1].t), &Default::default()).unwrap();
        assert_eq!(
            ke.notify(notify::INVALID_KE_PAYLOAD).unwrap().data,
            accept.id().to_be_bytes()
        );
        // The lost IKE_AUTH request went again, bit for bit.
        let auth = net.exchanges(Dir::ToResponder, exchange::IKE_AUTH);
        assert_eq!(auth.len(), 2, "case {n}");
        assert!(auth[0].dropped && !auth[1].dropped);
        assert_eq!(auth[0].t.data, auth[1].t.data);

        let (i, r) = (net.i_child(0), net.r_child(0));
        assert_child_pair(&net, &i, &r, esp);
        assert_eq!(i.encap.is_some(), encap, "case {n}");

        // Each side installs what its IKE engine handed over, unchanged.
        let mut dp_i = data_plane(1, "10.1.0.0/16", "10.2.0.0/16");
        let mut dp_r = data_plane(2, "10.2.0.0/16", "10.1.0.0/16");
        assert!(dp_i.install(Instant::ZERO, i.clone()).unwrap().is_empty());
        assert!(dp_r.install(Instant::ZERO, r.clone()).unwrap().is_empty());
        let there = udp_packet([10, 1, 0, 5], [10, 2, 0, 9], b"ping from the initiator");
        let back = udp_packet([10, 2, 0, 9], [10, 1, 0, 5], b"pong from the responder");
        for _ in 0..3 {
            esp_carries(&mut dp_i, &mut dp_r, &there, r.spi_in);
            esp_carries(&mut dp_r, &mut dp_i, &back, i.spi_in);
        }
        assert_eq!(dp_i.sa_stats(i.spi_in).unwrap().outbound.packets, 3);
        assert_eq!(dp_r.sa_stats(r.spi_in).unwrap().inbound.packets, 3);

        // Rekey: the new pair installs beside the old one and takes over at once; the old
        // one is deleted on both sides.
        net.inits[0].rekey_child(net.now).unwrap();
        net.run_for(Duration::from_secs(1));
        let (i2, r2) = (net.i_child(0), net.r_child(0));
        assert_ne!(i2.spi_in, i.spi_in);
        assert_child_pair(&net, &i2, &r2, esp);
        dp_i.install(net.now, i2.clone()).unwrap();
        dp_r.install(net.now, r2.clone()).unwrap();
        for (events, dp) in [(&net.i_events[0], &mut dp_i), (&net.r_events, &mut dp_r)] {
            for e in events {
                if let IkeEvent::ChildSaDeleted { spi_in, .. } = e {
                    dp.remove(*spi_in).unwrap();
                }
            }
            assert_eq!(dp.sa_count(), 1);
        }
        esp_carries(&mut dp_i, &mut dp_r, &there, r2.spi_in);
        esp_carries(&mut dp_r, &mut dp_i, &back, i2.spi_in);
        // And the handed-over value survives its wire form for a terminal.
        assert_eq!(ChildSa::decode(&i2.encode().unwrap()).unwrap(), i2);
        assert!(
            net.i_errors.is_empty() && net.r_errors.is_empty(),
            "case {n}"
        );
    }
}

// ------------------------------------------------------------------ IKE SA rekeying

fn rekeyed(events: &[IkeEvent]) -> Vec<(deputy::ikev2::IkeSaId, deputy::ikev2::IkeSaId, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            IkeEvent::IkeSaRekeyed {
                old,
                new,
                initiated,
            } => Some((*old, *new, *initiated)),
            _ => None,
        })
        .collect()
}

/// (SPIi, SPIr, flags, message ID) of the IKE message in a logged datagram.
fn ike_header(s: &Sent) -> ([u8; 8], [u8; 8], u8, u32) {
    let b = ike_bytes(&s.t);
    (
        b[..8].try_into().unwrap(),
        b[8..16].try_into().unwrap(),
        b[19],
        u32::from_be_bytes(b[20..24].try_into().unwrap()),
    )
}

/// Regression test for the first interop finding: strongSwan rekeys the IKE SA (every 4 h
/// by default) and the engine used to answer NO_PROPOSAL_CHOSEN, so charon retried until
/// the IKE SA's hard lifetime and then tore the tunnel down. Now both ends rekey the IKE
/// SA (RFC 7296 §1.3.2, §2.18) from either side, through an INVALID_KE_PAYLOAD round and
/// a lost answer; the Child SAs carry on unchanged, the new SA's message IDs start at 0,
/// the old SA is deleted without touching the Child SAs, and Child SA rekeys afterwards
/// derive from the new SK_d on both ends.
#[test]
fn ike_sa_rekey_from_either_side_keeps_the_child_sas() {
    let mut ic = i_config(I_ADDR);
    // The initiator prefers X25519; the responder takes only MODP-2048: IKE_SA_INIT and
    // the initiator's IKE SA rekey both need an INVALID_KE_PAYLOAD round.
    ic.ike.ike_proposals = vec![IkeProposal::aes128_sha256(&[
        Group::X25519,
        Group::Modp2048,
    ])];
    ic.ike.keep_keys_for_dissection = true;
    let mut rc = r_config();
    rc.ike.ike_proposals = vec![IkeProposal::aes128_sha256(&[Group::Modp2048])];
    rc.ike.keep_keys_for_dissection = true;
    let mut net = Net::new(ic, rc);
    net.start(0);
    established(&net);
    let first = net.inits[0].ike_sa_id().unwrap();
    let child = net.i_child(0);
    let before_keys = net.inits[0].ike_keys_for_dissection().unwrap();

    // The initiator rekeys; the answer carrying the new IKE SA (the second answer, after
    // INVALID_KE_PAYLOAD) is lost once.
    let mut answers = 0;
    net.drop = Box::new(move |s, _| {
        if s.dir == Dir::ToInitiator && ike_bytes(&s.t)[18] == exchange::CREATE_CHILD_SA {
            answers += 1;
            return answers == 2;
        }
        false
    });
    net.log.clear();
    net.inits[0].rekey_ike(net.now).unwrap();
    net.run_for(Duration::from_secs(5));
    let second = net.inits[0].ike_sa_id().unwrap();
    assert_ne!(second, first);
    assert_eq!(rekeyed(&net.i_events[0]), vec![(first, second, true)]);
    assert_eq!(rekeyed(&net.r_events), vec![(first, second, false)]);
    assert_eq!(
        net.resp.established(),
        vec![second],
        "the old IKE SA is gone"
    );
    assert_eq!(net.resp.ike_sa_count(), 1);
    // INVALID_KE_PAYLOAD round, then a retransmission the responder answered from its
    // cache.
    let reqs = net.exchanges(Dir::ToResponder, exchange::CREATE_CHILD_SA);
    assert_eq!(
        reqs.len(),
        3,
        "KE in X25519, KE in MODP-2048, its retransmission"
    );
    assert_eq!(reqs[1].t.data, reqs[2].t.data);
    let answers = net.exchanges(Dir::ToInitiator, exchange::CREATE_CHILD_SA);
    assert_eq!(answers.len(), 3);
    assert!(answers[1].dropped && !answers[2].dropped);
    assert_eq!(
        answers[1].t.data, answers[2].t.data,
        "replayed from the cache"
    );
    // The old SA was deleted, and nobody reported its Child SAs deleted.
    for ev in [&net.i_events[0], &net.r_events] {
        assert!(!has_event(ev, |e| matches!(
            e,
            IkeEvent::ChildSaDeleted { .. }
        )));
        assert!(!has_event(ev, |e| matches!(
            e,
            IkeEvent::IkeSaDeleted { .. }
        )));
    }
    let deletes = net.exchanges(Dir::ToResponder, exchange::INFORMATIONAL);
    assert_eq!(deletes.len(), 1);
    assert_eq!(ike_header(deletes[0]).0, first.spi_i, "on the old SA");
    // The Child SA is unchanged on both ends.
    assert_eq!(net.i_child(0), child);
    assert_eq!(net.r_child(0).spi_in, child.spi_out);
    // New keys; the new SA's requests start at message ID 0.
    let after_keys = net.inits[0].ike_keys_for_dissection().unwrap();
    assert_eq!(
        (after_keys.spi_i, after_keys.spi_r),
        (second.spi_i, second.spi_r)
    );
    assert_ne!(after_keys.sk_ei, before_keys.sk_ei);
    assert_eq!(
        net.resp.ike_keys_for_dissection(second).unwrap(),
        after_keys
    );
    net.log.clear();
    net.inits[0].send_liveness(net.now).unwrap();
    net.run_for(Duration::from_secs(1));
    let live = net.exchanges(Dir::ToResponder, exchange::INFORMATIONAL);
    assert_eq!(ike_header(live[0]), (second.spi_i, second.spi_r, 0x08, 0));
    assert!(has_event(&net.i_events[0], |e| matches!(
        e,
        IkeEvent::LivenessConfirmed { id } if *id == second
    )));

    // A Child SA rekey on the new IKE SA: both ends derive from the new SK_d.
    net.inits[0].rekey_child(net.now).unwrap();
    net.run_for(Duration::from_secs(1));
    let (i, r) = (net.i_child(0), net.r_child(0));
    assert_ne!(i.spi_in, child.spi_in);
    assert_child_pair(&net, &i, &r, Suite::AesCbc128HmacSha256);

    // Now the responder rekeys: it becomes the initiator of the third IKE SA.
    net.resp.rekey_ike(net.now, second).unwrap();
    net.run_for(Duration::from_secs(1));
    let third = net.inits[0].ike_sa_id().unwrap();
    assert_ne!(third, second);
    assert_eq!(rekeyed(&net.r_events)[1], (second, third, true));
    assert_eq!(rekeyed(&net.i_events[0])[1], (second, third, false));
    assert_eq!(net.resp.established(), vec![third]);
    // Requests in both directions on it, flags right: the responder actor is its
    // initiator now.
    net.log.clear();
    net.resp.send_liveness(net.now, third).unwrap();
    net.inits[0].send_liveness(net.now).unwrap();
    net.run_for(Duration::from_secs(1));
    for (dir, flags) in [(Dir::ToInitiator, 0x08), (Dir::ToResponder, 0x00)] {
        let reqs: Vec<_> = net
            .exchanges(dir, exchange::INFORMATIONAL)
            .into_iter()
            .filter(|s| ike_header(s).2 & 0x20 == 0)
            .collect();
        assert_eq!(reqs.len(), 1);
        assert_eq!(ike_header(reqs[0]), (third.spi_i, third.spi_r, flags, 0));
    }
    assert!(has_event(&net.r_events, |e| matches!(
        e,
        IkeEvent::LivenessConfirmed { id } if *id == third
    )));
    // Child SA rekeys from both ends, then the delete, work on the third IKE SA.
    let before = net.i_child(0);
    net.resp.rekey_child(net.now, third).unwrap();
    net.run_for(Duration::from_secs(1));
    let (i, r) = (net.i_child(0), net.r_child(0));
    assert_ne!(i.spi_in, before.spi_in);
    assert_responder_initiated(&net, &i, &r);
    assert_eq!(
        (i.keys_in.clone(), i.keys_out.clone()),
        (r.keys_out.clone(), r.keys_in.clone())
    );
    net.inits[0].delete_ike(net.now).unwrap();
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.resp.ike_sa_count(), 0);
    assert!(has_event(&net.r_events, |e| matches!(
        e,
        IkeEvent::IkeSaDeleted { id, by_peer: true } if *id == third
    )));
    net.assert_no_errors();
}

#[test]
fn ike_sa_rekey_refusals_keep_the_sa() {
    let mut net = Net::new(i_config(I_ADDR), r_config());
    net.start(0);
    let id = net.inits[0].ike_sa_id().unwrap();
    // A rekey while our own request is outstanding is answered TEMPORARY_FAILURE: lose the
    // responder's liveness answer so its request stays outstanding.
    net.drop = Box::new(|s, _| {
        s.dir == Dir::ToResponder && ike_bytes(&s.t)[18] == exchange::INFORMATIONAL
    });
    net.resp.send_liveness(net.now, id).unwrap();
    net.deliver();
    net.drop = Box::new(|_, _| false);
    net.inits[0].rekey_ike(net.now).unwrap();
    net.deliver();
    assert!(has_event(&net.i_events[0], |e| matches!(
        e,
        IkeEvent::IkeSaRekeyFailed {
            notify: notify::TEMPORARY_FAILURE,
            ..
        }
    )));
    assert_eq!(net.inits[0].ike_sa_id(), Some(id));
    net.run_for(Duration::from_secs(5));
    // The IKE SA works as before, and a later rekey goes through.
    net.inits[0].rekey_ike(net.now).unwrap();
    net.run_for(Duration::from_secs(1));
    assert_ne!(net.inits[0].ike_sa_id(), Some(id));
    assert_eq!(net.resp.established().len(), 1);
}

/// Old IKE SAs of rekeys are bounded at the responder: a peer that rekeys again and again
/// without ever deleting the old SAs gets TEMPORARY_FAILURE once `max_ike_sas` of them
/// wait; when they are gone, rekeys go through again.
#[test]
fn retiring_ike_sas_are_bounded() {
    let mut rc = r_config();
    rc.max_ike_sas = 2;
    let mut net = Net::new(i_config(I_ADDR), rc);
    net.start(0);
    // The initiator's Deletes of the old SAs never arrive.
    net.drop = Box::new(|s, _| {
        s.dir == Dir::ToResponder && ike_bytes(&s.t)[18] == exchange::INFORMATIONAL
    });
    for _ in 0..2 {
        net.inits[0].rekey_ike(net.now).unwrap();
        net.deliver();
    }
    assert_eq!(rekeyed(&net.r_events).len(), 2);
    assert_eq!(net.resp.ike_sa_count(), 3, "one live IKE SA, two retiring");
    net.inits[0].rekey_ike(net.now).unwrap();
    net.deliver();
    assert!(has_event(&net.i_events[0], |e| matches!(
        e,
        IkeEvent::IkeSaRekeyFailed {
            notify: notify::TEMPORARY_FAILURE,
            ..
        }
    )));
    assert_eq!(net.resp.ike_sa_count(), 3);
    // The old SAs give up waiting after the retransmission span; then rekeys work again.
    net.run_for(Duration::from_secs(40));
    assert_eq!(net.resp.ike_sa_count(), 1);
    net.drop = Box::new(|_, _| false);
    net.inits[0].rekey_ike(net.now).unwrap();
    net.run_for(Duration::from_secs(1));
    assert_eq!(rekeyed(&net.r_events).len(), 3);
    assert_eq!(net.resp.ike_sa_count(), 1);
    assert_eq!(
        net.resp.established(),
        vec![net.inits[0].ike_sa_id().unwrap()]
    );
}

/// Regression test for the second interop finding: a peer that restarts (charon after a
/// reboot, or after losing its state) comes back with a new IKE SA whose IKE_AUTH carries
/// INITIAL_CONTACT. The responder used to keep the old IKE SA and its Child SAs forever
/// (it runs no dead-peer detection of its own), so each restart left stale SAs behind —
/// stale keys at the terminal — until the table bound refused new peers. Now the
/// responder forgets the other IKE SAs of the same authenticated identity (RFC 7296 §2.4)
/// and reports them deleted; other identities are not touched.
#[test]
fn initial_contact_replaces_the_stale_ike_sa_of_a_restarted_peer() {
    let mut other = i_config("10.0.0.3:500");
    other.ike.local_id = Identity::Fqdn("another.example".into());
    // Initiator 1 is initiator 0 after a restart: same identity, new address, no state.
    let mut net = Net::many(
        vec![i_config(I_ADDR), i_config("10.0.0.2:500"), other],
        r_config(),
    );
    net.start(0);
    net.start(2);
    let stale = net.inits[0].ike_sa_id().unwrap();
    let stale_child = net.r_child(0);
    let bystander = net.inits[2].ike_sa_id().unwrap();
    assert_eq!(net.resp.ike_sa_count(), 2);

    net.start(1);
    assert!(net.inits[1].is_established());
    let fresh = net.inits[1].ike_sa_id().unwrap();
    assert_eq!(net.resp.ike_sa_count(), 2, "the stale IKE SA is gone");
    let mut established = net.resp.established();
    established.sort();
    let mut want = vec![fresh, bystander];
    want.sort();
    assert_eq!(established, want);
    assert!(has_event(&net.r_events, |e| matches!(
        e,
        IkeEvent::ChildSaDeleted { id, spi_in, .. } if *id == stale && *spi_in == stale_child.spi_in
    )));
    assert!(has_event(&net.r_events, |e| matches!(
        e,
        IkeEvent::IkeSaDeleted { id, by_peer: true } if *id == stale
    )));
    assert!(net.resp.child_sa(bystander).is_some());
    // The stale SA's messages are now unknown to the responder.
    net.inits[0].send_liveness(net.now).unwrap();
    net.run_for(Duration::from_secs(1));
    assert!(
        net.r_errors
            .iter()
            .any(|e| matches!(e, Error::Ike(deputy::ikev2::IkeError::UnknownSpi)))
    );
}

/// Commands issued while our IKE SA rekey is outstanding wait in the queue and move to
/// the new IKE SA with the Child SAs; they must then run there, not stall forever.
#[test]
fn commands_queued_behind_an_ike_sa_rekey_run_on_the_new_sa() {
    let mut net = Net::new(i_config(I_ADDR), r_config());
    net.start(0);
    established(&net);
    let first = net.inits[0].ike_sa_id().unwrap();
    let child = net.i_child(0);
    net.inits[0].rekey_ike(net.now).unwrap();
    net.inits[0].send_liveness(net.now).unwrap();
    net.inits[0].rekey_child(net.now).unwrap();
    net.run_for(Duration::from_secs(5));
    let second = net.inits[0].ike_sa_id().unwrap();
    assert_ne!(second, first);
    assert!(
        has_event(&net.i_events[0], |e| matches!(
            e,
            IkeEvent::LivenessConfirmed { id } if *id == second
        )),
        "{:?}",
        net.i_events[0]
    );
    let (i, r) = (net.i_child(0), net.r_child(0));
    assert_ne!(i.spi_in, child.spi_in, "the queued Child SA rekey ran");
    assert_child_pair(&net, &i, &r, Suite::AesCbc128HmacSha256);
    assert!(net.i_errors.is_empty() && net.r_errors.is_empty());
}

/// Each configuration rule has its own error, and the actors refuse commands and inputs
/// they cannot take with a typed error rather than a catch-all.
#[test]
fn each_broken_configuration_rule_has_its_own_error() {
    use deputy::ikev2::IkeError as E;
    type Breaker = fn(&mut IkeConfig);
    let cases: [(Breaker, E); 6] = [
        (|c| c.ike_proposals.clear(), E::BadIkeProposals),
        (|c| c.esp_proposals.clear(), E::NoEspProposals),
        (|c| c.ts_local.clear(), E::BadTrafficSelectorCount),
        (
            |c| c.child_lifetime.soft_time = Some(Duration::from_secs(7200)),
            E::SoftLifetimeBeyondHard,
        ),
        (|c| c.retransmit.max_tries = 0, E::BadRetransmit),
        (|c| c.limits.max_payloads = 0, E::LimitsTooSmall),
    ];
    for (breaker, want) in cases {
        let mut cfg = i_config(I_ADDR);
        breaker(&mut cfg.ike);
        assert_eq!(cfg.ike.validate(), Err(Error::Ike(want)));
        assert_eq!(
            Initiator::new(cfg, rng(1)).err(),
            Some(Error::Ike(want)),
            "{want:?}"
        );
    }
    let mut r = r_config();
    r.max_ike_sas = 0;
    assert_eq!(
        Responder::new(r, rng(2), Instant::ZERO).err(),
        Some(Error::Ike(E::ZeroBound))
    );
    // A second start, and a stream event, are refused with their own errors.
    let mut i = Initiator::new(i_config(I_ADDR), rng(3)).unwrap();
    i.start(Instant::ZERO).unwrap();
    assert_eq!(i.start(Instant::ZERO), Err(Error::Ike(E::AlreadyStarted)));
    let mut resp = Responder::new(r_config(), rng(4), Instant::ZERO).unwrap();
    let packet = Input::Packet {
        iface: deputy::IfaceId(0),
        data: &[0x45],
    };
    assert_eq!(
        resp.handle_input(Instant::ZERO, packet),
        Err(Error::Ike(E::NotADatagram))
    );
}

// ------------------------------------------------------------ certificate authentication

mod cert {
    use super::*;
    use common::certs::{self, Alg, DAY, Issued, NOW, Spec};
    use deputy::UnixTime;
    use deputy::ikev2::codec::{CertReq, Limits};
    use deputy::ikev2::consts::cert_encoding;

    pub const I_ID: &str = "appliance.example";
    pub const R_ID: &str = "gateway.example";

    /// The wall-clock time at Instant::ZERO: the tests' NOW.
    pub const ANCHOR: UnixTime = UnixTime(NOW);

    pub fn signer(leaf: &Issued, chain: &[&Issued]) -> Signer {
        let mut ders = vec![leaf.der.clone()];
        ders.extend(chain.iter().map(|c| c.der.clone()));
        Signer::new(leaf.key.clone(), ders).unwrap()
    }

    pub fn db(anchors: &[&Issued]) -> AuthKeyDb {
        let mut db = AuthKeyDb::new();
        for a in anchors {
            db.add_trust_anchor(&a.der).unwrap();
        }
        db
    }

    /// An initiator and a responder, each with a leaf of `alg` issued by its own CA's
    /// intermediate-less root, trusting `i_trusts` / `r_trusts`.
    pub fn configs(
        i_leaf: &Issued,
        i_chain: &[&Issued],
        i_trusts: &[&Issued],
        r_leaf: &Issued,
        r_trusts: &[&Issued],
    ) -> (InitiatorConfig, ResponderConfig) {
        let mut ike = IkeConfig::with_certificate(
            Identity::Fqdn(I_ID.into()),
            signer(i_leaf, i_chain),
            db(i_trusts),
            ANCHOR,
        );
        ike.remote_id = Some(Identity::Fqdn(R_ID.into()));
        let ic = InitiatorConfig {
            ike,
            local: addr(I_ADDR),
            remote: addr(R_ADDR),
        };
        let ike = IkeConfig::with_certificate(
            Identity::Fqdn(R_ID.into()),
            signer(r_leaf, &[]),
            db(r_trusts),
            ANCHOR,
        );
        (ic, ResponderConfig::new(ike))
    }

    fn failed(events: &[IkeEvent]) -> Vec<FailReason> {
        events
            .iter()
            .filter_map(|e| match e {
                IkeEvent::Failed { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    fn init_response(net: &Net) -> Message {
        let sent = net.exchanges(Dir::ToInitiator, exchange::IKE_SA_INIT);
        Message::decode(ike_bytes(&sent.last().unwrap().t), &Limits::default()).unwrap()
    }

    #[test]
    fn ecdsa_and_ed25519_certificates_establish_in_both_roles() {
        for (i_alg, r_alg) in [
            (Alg::P256, Alg::P256),
            (Alg::Ed25519, Alg::Ed25519),
            (Alg::P256, Alg::Ed25519),
            (Alg::Ed25519, Alg::P256),
        ] {
            let i_ca = certs::root(i_alg, 1, "Appliance CA");
            let r_ca = certs::root(r_alg, 2, "Gateway CA");
            let inter = certs::issue(
                &Spec::ca("Appliance sub-CA"),
                certs::key(r_alg, 5),
                Some(&i_ca),
                5,
            );
            let i_leaf = certs::leaf(i_alg, 3, I_ID, &inter);
            let r_leaf = certs::leaf(r_alg, 4, R_ID, &r_ca);
            let (ic, rc) = configs(&i_leaf, &[&inter], &[&r_ca], &r_leaf, &[&i_ca]);
            let mut net = Net::new(ic, rc);
            // An hour after the anchor: validity is judged at anchor + now.
            net.now = Instant::from_secs(3600);
            net.start(0);
            established(&net);
            net.assert_no_errors();
            assert_child_pair(
                &net,
                &net.i_child(0),
                &net.r_child(0),
                Suite::AesCbc128HmacSha256,
            );
            assert!(has_event(&net.i_events[0], |e| matches!(
                e,
                IkeEvent::IkeSaEstablished { peer_id, .. } if *peer_id == Identity::Fqdn(R_ID.into())
            )));
            // IKE_SA_INIT: SIGNATURE_HASH_ALGORITHMS both ways, the responder's CERTREQ
            // names the anchor it trusts.
            let resp = init_response(&net);
            assert!(resp.notify(notify::SIGNATURE_HASH_ALGORITHMS).is_some());
            let req: Vec<&CertReq> = resp
                .payloads
                .iter()
                .filter_map(|p| match p {
                    Payload::CertReq(r) => Some(r),
                    _ => None,
                })
                .collect();
            assert_eq!(req.len(), 1);
            assert_eq!(req[0].encoding, cert_encoding::X509_SIGNATURE);
            assert!(db(&[&i_ca]).requested_by(&req));
            let sent = net.exchanges(Dir::ToResponder, exchange::IKE_SA_INIT);
            let init = Message::decode(ike_bytes(&sent[0].t), &Limits::default()).unwrap();
            assert!(init.notify(notify::SIGNATURE_HASH_ALGORITHMS).is_some());
        }
    }

    #[test]
    fn a_certificate_side_meets_a_psk_side() {
        // The initiator signs; the responder proves with a PSK the initiator's database
        // holds for it.
        let ca = certs::root(Alg::P256, 1, "CA");
        let i_leaf = certs::leaf(Alg::P256, 3, I_ID, &ca);
        let mut i_db = AuthKeyDb::new();
        i_db.add_peer_psk(Identity::Fqdn(R_ID.into()), PSK).unwrap();
        let ike = IkeConfig::with_certificate(
            Identity::Fqdn(I_ID.into()),
            signer(&i_leaf, &[]),
            i_db,
            ANCHOR,
        );
        let ic = InitiatorConfig {
            ike,
            local: addr(I_ADDR),
            remote: addr(R_ADDR),
        };
        let mut rc = r_config();
        rc.ike.auth_db = db(&[&ca]);
        rc.ike.time_anchor = ANCHOR;
        let mut net = Net::new(ic, rc);
        net.start(0);
        established(&net);
        net.assert_no_errors();
    }

    /// Each refusal: the verifying side's typed reason, and AUTHENTICATION_FAILED for the
    /// other.
    #[test]
    fn certificate_refusals_are_typed_on_the_verifying_side() {
        let ca = certs::root(Alg::P256, 1, "CA");
        let other_ca = certs::root(Alg::Ed25519, 9, "Other CA");
        let r_leaf = certs::leaf(Alg::Ed25519, 4, R_ID, &ca);
        let good_i = certs::leaf(Alg::P256, 3, I_ID, &ca);
        let mut spec = Spec::leaf(I_ID);
        spec.not_after = NOW - DAY;
        let expired = certs::issue(&spec, certs::key(Alg::P256, 3), Some(&ca), 3);
        let mut spec = Spec::leaf(I_ID);
        spec.not_before = NOW + DAY;
        let early = certs::issue(&spec, certs::key(Alg::P256, 3), Some(&ca), 3);
        let wrong_name = certs::leaf(Alg::P256, 3, "intruder.example", &ca);
        let foreign = certs::leaf(Alg::P256, 3, I_ID, &other_ca);
        let cases: Vec<(&str, &Issued, AuthFailure)> = vec![
            ("wrong CA", &foreign, AuthFailure::UnknownCa),
            ("expired", &expired, AuthFailure::Expired),
            ("not yet valid", &early, AuthFailure::NotYetValid),
            ("wrong identity", &wrong_name, AuthFailure::IdentityMismatch),
        ];
        for (what, i_leaf, want) in cases {
            let (ic, rc) = configs(i_leaf, &[], &[&ca], &r_leaf, &[&ca]);
            let mut net = Net::new(ic, rc);
            net.start(0);
            assert!(!net.inits[0].is_established(), "{what}");
            assert_eq!(
                failed(&net.r_events),
                vec![FailReason::PeerAuth(want)],
                "{what}"
            );
            assert_eq!(
                failed(&net.i_events[0]),
                vec![FailReason::AuthenticationFailed],
                "{what}: the responder answered AUTHENTICATION_FAILED"
            );
        }
        // The initiator refuses the responder's certificate: it tells the responder in an
        // INFORMATIONAL, which drops the SA.
        let (ic, rc) = configs(&good_i, &[], &[&other_ca], &r_leaf, &[&ca]);
        let mut net = Net::new(ic, rc);
        net.start(0);
        assert_eq!(
            failed(&net.i_events[0]),
            vec![FailReason::PeerAuth(AuthFailure::UnknownCa)]
        );
        assert_eq!(
            failed(&net.r_events),
            vec![FailReason::AuthenticationFailed]
        );
        // Validity follows the clock: the responder's leaf (30 days) has expired for an
        // initiator 31 days after the anchor.
        let (ic, rc) = configs(&good_i, &[], &[&ca], &r_leaf, &[&ca]);
        let mut net = Net::new(ic, rc);
        net.now = Instant::from_secs(31 * DAY);
        net.start(0);
        assert_eq!(
            failed(&net.r_events),
            vec![FailReason::PeerAuth(AuthFailure::Expired)],
            "the initiator's leaf expired as well"
        );
    }

    /// A signature altered in flight (re-sealed with the IKE SA's keys, so the SK payload
    /// is intact): the responder refuses with BadAuth and answers AUTHENTICATION_FAILED.
    #[test]
    fn tampered_auth_is_bad_auth() {
        use deputy::ikev2::keys::{IkeKeys, SecretBytes};
        use deputy::ikev2::sk::SkCipher;
        use deputy::ikev2::{IkeSuite, Prf};
        for alg in [Alg::P256, Alg::Ed25519] {
            let ca = certs::root(alg, 1, "CA");
            let i_leaf = certs::leaf(alg, 3, I_ID, &ca);
            let r_leaf = certs::leaf(alg, 4, R_ID, &ca);
            let (mut ic, rc) = configs(&i_leaf, &[], &[&ca], &r_leaf, &[&ca]);
            ic.ike.keep_keys_for_dissection = true;
            let mut net = Net::new(ic, rc);
            // Hold back every IKE_AUTH request; forge one from the first.
            net.drop = Box::new(|s, _| {
                s.dir == Dir::ToResponder && ike_bytes(&s.t)[18] == exchange::IKE_AUTH
            });
            net.start(0);
            let original = net.exchanges(Dir::ToResponder, exchange::IKE_AUTH)[0]
                .t
                .clone();
            let k = net.inits[0].ike_keys_for_dissection().unwrap();
            let suite = IkeSuite {
                encr: k.encr,
                integ: k.integ,
                prf: Prf::HmacSha256,
                group: Group::X25519,
            };
            let keys = IkeKeys {
                sk_d: SecretBytes::default(),
                sk_ai: k.sk_ai.clone(),
                sk_ar: k.sk_ar.clone(),
                sk_ei: k.sk_ei.clone(),
                sk_er: k.sk_er.clone(),
                sk_pi: SecretBytes::default(),
                sk_pr: SecretBytes::default(),
            };
            let limits = Limits::default();
            let (header, mut inner) = SkCipher::new(&suite, &keys, false)
                .unwrap()
                .open(ike_bytes(&original), &limits)
                .unwrap();
            let mut certs_seen = 0;
            for p in &mut inner {
                match p {
                    Payload::Auth(a) => {
                        let n = a.data.len();
                        a.data[n - 2] ^= 0x10;
                    }
                    Payload::Cert(_) => certs_seen += 1,
                    _ => {}
                }
            }
            assert_eq!(certs_seen, 1, "the leaf travels in a CERT payload");
            assert!(inner.iter().any(|p| matches!(p, Payload::CertReq(_))));
            let forged = SkCipher::new(&suite, &keys, true)
                .unwrap()
                .seal(&header, &inner, &mut *rng(5))
                .unwrap();
            net.drop = Box::new(|_, _| false);
            net.resp
                .handle_input(
                    net.now,
                    Input::Datagram {
                        from: original.from,
                        to: original.to,
                        data: &forged,
                    },
                )
                .unwrap();
            net.run_for(Duration::from_secs(1));
            assert_eq!(
                failed(&net.r_events),
                vec![FailReason::PeerAuth(AuthFailure::BadAuth)]
            );
            assert_eq!(
                failed(&net.i_events[0]),
                vec![FailReason::AuthenticationFailed]
            );
        }
    }
}

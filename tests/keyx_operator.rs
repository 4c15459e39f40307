//! Seed 003 through the simulator: subscribers without IKE behind service controls, the
//! key-exchange proxies and the authentication server on the core, a peer (deputy's IKEv2
//! endpoint with ESP) behind its access router. Each test tells one flow or refusal of
//! the seed and asserts what each party saw.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::inline::{
    Ike, Peer, Spec, Tap, echo_reply, key, ping, received, terminal_actor, terminal_events,
    terminal_send, udp,
};
use common::ip;
use common::operator::*;
use deputy::IfaceId;
use deputy::ikev2::IkeEvent;
use deputy::keyx::ikeless::{Sent, Terminal, TerminalEvent};
use deputy::keyx::inline::ProxyEvent;
use deputy::keyx::operator::{AuthServer, OperatorEvent, ServiceControl};
use deputy::keyx::transfer::{self, Envelope, Transfer};
use deputy::sim::{DatagramProbe, NodeId, PacketProbe, RawIp};

const T1: &str = "10.1.0.5";

fn installed(te: &[TerminalEvent]) -> Vec<(u32, Option<u32>)> {
    te.iter()
        .filter_map(|e| match e {
            TerminalEvent::KeysInstalled {
                spi_in, replaces, ..
            } => Some((*spi_in, *replaces)),
            _ => None,
        })
        .collect()
}

fn proxy_negotiations(evs: &[OperatorEvent]) -> Vec<(u64, IpAddr, bool)> {
    evs.iter()
        .filter_map(|e| match e {
            OperatorEvent::Proxy(ProxyEvent::Negotiating {
                terminal,
                peer,
                initiator,
            }) => Some((*terminal, *peer, *initiator)),
            _ => None,
        })
        .collect()
}

fn peer_events(op: &mut Op) -> Vec<IkeEvent> {
    let peer = op.peer.unwrap();
    op.sim
        .with_actor(peer, |p: &mut Peer, _| p.ike_events.clone())
        .unwrap()
}

fn peer_received(op: &mut Op) -> Vec<(Vec<u8>, bool)> {
    let peer = op.peer.unwrap();
    op.sim
        .with_actor(peer, |p: &mut Peer, _| std::mem::take(&mut p.received))
        .unwrap()
}

/// The subscriber `n` asks for keys toward the peer (Fig. 8) and the world settles.
fn subscriber_starts(op: &mut Op, n: usize, from: &str, to: &str) -> Vec<TerminalEvent> {
    let t = op.subscribers[n].1;
    assert!(matches!(
        terminal_send(&mut op.sim, t, ping(from, to, 1)),
        Sent::Held(_)
    ));
    op.run(Duration::from_secs(10));
    terminal_events(&mut op.sim, t)
}

/// The inner packet of the first IP-in-IP key transfer on a tap: (outer, inner) headers.
fn first_transfer(tap: &Tap) -> (common::inline::Seen, Vec<u8>) {
    tap.seen()
        .into_iter()
        .find_map(|p| {
            (p.protocol == 4).then(|| {
                let inner = p.payload.clone();
                (p, inner)
            })
        })
        .expect("no key transfer on the access network")
}

#[test]
fn profile_installed_at_attach() {
    let mut op = one_subscriber(1, false);
    // The authentication server sent the subscriber's profile to the service control it
    // attached at, over the channel; the service control holds it.
    let evs = op.sc_events(0);
    assert!(evs.contains(&OperatorEvent::ProfileInstalled { subscriber: 1 }));
    let p = op.sc(0).profile(1).expect("profile held");
    assert_eq!(p.addresses, vec![ip(T1)]);
    let auth = op.auth.unwrap();
    let sent: Vec<OperatorEvent> = common::events(&mut op.sim, auth);
    assert!(sent.contains(&OperatorEvent::ProfileSent {
        control: ip("203.0.113.1")
    }));
    // The link to the proxy is up (ESP tunnel, negotiated with IKEv2).
    assert!(op.sc(0).link_up());
    assert_eq!(
        op.proxy_actor(0).links().collect::<Vec<_>>(),
        vec![ip("203.0.113.1")]
    );
}

#[test]
fn subscriber_initiated_flow() {
    let mut op = one_subscriber(2, false);
    let te = subscriber_starts(&mut op, 0, T1, PEER);
    assert_eq!(installed(&te).len(), 1, "{te:?}");
    // The held ping left protected and its answer came back protected.
    assert!(received(&te).iter().any(|(_, protected)| *protected));
    assert!(
        peer_received(&mut op)
            .iter()
            .any(|(p, protected)| *protected && *p == ping(T1, PEER, 1))
    );
    // The proxy negotiated as the subscriber (Fig. 11, S33) …
    let pe = op.proxy_events(0);
    assert_eq!(proxy_negotiations(&pe), vec![(1, ip(PEER), true)]);
    // … and the peer believes it talked to the subscriber: its IKE SA is with the
    // subscriber's address, and nothing that reached the peer network names the proxy.
    assert!(peer_events(&mut op).iter().any(|e| matches!(e,
        IkeEvent::IkeSaEstablished { remote, .. } if remote.ip() == ip(T1))));
    let sc = op.sc(0).stats();
    assert!(
        sc.diverted >= 2 && sc.relayed >= 2 && sc.transfers >= 1,
        "{sc:?}"
    );
}

#[test]
fn peer_initiated_flow_fig16() {
    let mut op = one_subscriber(3, true);
    let peer = op.peer.unwrap();
    op.sim
        .command(peer, |p: &mut Peer, now| {
            if let Ike::Initiator(i) = &mut p.ike {
                i.start(now)?;
            }
            p.pump(now);
            Ok(())
        })
        .unwrap();
    op.run(Duration::from_secs(15));
    // The subscriber installed keys it never asked for (Fig. 16, arrow 3).
    let t = op.subscribers[0].1;
    let te = terminal_events(&mut op.sim, t);
    assert_eq!(installed(&te).len(), 1, "{te:?}");
    assert!(
        !te.iter().any(|e| matches!(e, TerminalEvent::Ipsec(_))),
        "no acquire: it did not ask"
    );
    let pe = op.proxy_events(0);
    assert_eq!(proxy_negotiations(&pe), vec![(1, ip(PEER), false)]);
    // Arrow 4: the peer pings the subscriber through ESP; the answer comes back.
    op.sim
        .command(peer, |p: &mut Peer, now| p.send(now, &ping(PEER, T1, 2)))
        .unwrap();
    op.run(Duration::from_secs(1));
    let got = received(&terminal_events(&mut op.sim, t));
    assert_eq!(got.len(), 1);
    assert!(got[0].1);
    let reply = echo_reply(&got[0].0).unwrap();
    terminal_send(&mut op.sim, t, reply);
    op.run(Duration::from_secs(1));
    assert!(
        peer_received(&mut op)
            .iter()
            .any(|(_, protected)| *protected)
    );
}

#[test]
fn non_matching_traffic_is_routed_normally() {
    let mut op = one_subscriber(4, false);
    let web = op
        .sim
        .add_host(
            "web",
            op.peer_net,
            ip("198.51.100.80"),
            DatagramProbe::new(53).echoing(),
        )
        .unwrap();
    let t = op.subscribers[0].1;
    // A clear datagram to another host: S21-S23 no, S24 routed, both ways.
    assert_eq!(
        terminal_send(&mut op.sim, t, udp(T1, 4000, "198.51.100.80", 53, b"q")),
        Sent::Clear
    );
    op.run(Duration::from_secs(1));
    assert_eq!(common::probe_take(&mut op.sim, web).len(), 1);
    let back = received(&terminal_events(&mut op.sim, t));
    assert_eq!(back.len(), 1);
    assert!(!back[0].1);
    let sc = op.sc(0).stats();
    assert_eq!((sc.diverted, sc.routed), (0, 2));
    // ESP between subscriber and peer is routed too (not diverted): only key exchange is.
    subscriber_starts(&mut op, 0, T1, PEER);
    let diverted = op.sc(0).stats().diverted;
    let t = op.subscribers[0].1;
    assert_eq!(
        terminal_send(&mut op.sim, t, ping(T1, PEER, 7)),
        Sent::Protected
    );
    op.run(Duration::from_secs(1));
    let sc = op.sc(0).stats();
    assert_eq!(sc.diverted, diverted);
    assert!(sc.routed >= 4);
}

#[test]
fn key_transfer_outer_header_rewritten_fig14() {
    let mut op = one_subscriber(5, false);
    subscriber_starts(&mut op, 0, T1, PEER);
    // Fig. 14(B) on the access network: outer header service control → subscriber,
    // inner header peer → subscriber, UDP 500, the marker.
    let (outer, inner) = first_transfer(&op.controls[0].access_tap);
    assert_eq!((outer.src, outer.dst), (ip("10.1.0.1"), ip(T1)));
    let i = deputy::ipsec::parse_packet(&inner).unwrap();
    assert_eq!((i.src, i.dst, i.dst_port), (ip(PEER), ip(T1), Some(500)));
    assert!(transfer::is_marked(&inner[i.header_len + 8..]));
    // Fig. 14(A) on the core: proxy → service control, inside the link's ESP only.
    assert!(
        op.core_tap
            .seen()
            .iter()
            .any(|p| p.protocol == 50 && p.src == ip("203.0.113.10") && p.dst == ip("203.0.113.1"))
    );
    assert!(!op.core_tap.seen().iter().any(|p| p.transfer(None)));
}

#[test]
fn key_transfer_is_sealed_for_the_subscriber() {
    let mut op = one_subscriber(6, false);
    subscriber_starts(&mut op, 0, T1, PEER);
    let tap = &op.controls[0].access_tap;
    let installs: Vec<Vec<u8>> = tap
        .seen()
        .into_iter()
        .filter(|p| p.protocol == 4)
        .filter_map(|p| {
            let i = deputy::ipsec::parse_packet(&p.payload).ok()?;
            let body = p.payload[i.header_len + 8..].to_vec();
            (Envelope::parse(&body).ok()?.msg_type == transfer::msg::INSTALL).then_some(body)
        })
        .collect();
    assert_eq!(installs.len(), 1);
    let Transfer::Install(i) = Envelope::parse(&installs[0])
        .unwrap()
        .open(&key(1))
        .unwrap()
    else {
        panic!()
    };
    let secret = i.child.keys_in.encryption.clone();
    assert!(!installs[0].windows(secret.len()).any(|w| w == secret));
    assert!(
        Envelope::parse(&installs[0])
            .unwrap()
            .open(&key(2))
            .is_err()
    );
    // Nothing on the core or the access network carries the keys in clear.
    for p in op.core_tap.seen().iter().chain(tap.seen().iter()) {
        assert!(!p.payload.windows(secret.len()).any(|w| w == secret));
    }
}

#[test]
fn spoofed_encapsulation_is_refused() {
    let mut op = one_subscriber(7, false);
    // An attacker on the core wants the service control to emit a packet with the
    // subscriber's source address: it sends IP-in-IP, and ESP that does not open, to the
    // service control, once with the proxy's address forged as the source.
    let rogue = op
        .sim
        .add_host("rogue", op.core, ip("203.0.113.66"), PacketProbe::new())
        .unwrap();
    let inner = udp(T1, 500, PEER, 500, b"spoofed IKE");
    let sc = ip("203.0.113.1");
    let forged = [
        deputy::ipsec::encapsulate(ip("203.0.113.66"), sc, &inner).unwrap(),
        deputy::ipsec::encapsulate(ip("203.0.113.10"), sc, &inner).unwrap(),
        {
            let mut esp = deputy::ipsec::encapsulate(ip("203.0.113.10"), sc, &inner).unwrap();
            esp[9] = 50; // protocol ESP, the "ESP" being the inner packet's bytes
            let sum = [0u8, 0];
            esp[10..12].copy_from_slice(&sum);
            let c = !ones(&esp[..20]);
            esp[10..12].copy_from_slice(&c.to_be_bytes());
            esp
        },
    ];
    for p in forged {
        op.sim
            .command(rogue, |r: &mut PacketProbe, _| r.emit(IfaceId(0), p))
            .unwrap();
    }
    op.run(Duration::from_secs(1));
    assert!(op.sc(0).stats().link_refused >= 3, "{:?}", op.sc(0).stats());
    // Nothing with the subscriber's address left toward the peer.
    assert!(!op.core_tap.seen().iter().any(|p| p.src == ip(T1)));
}

/// The one's-complement sum of 16-bit words (for a forged IPv4 header's checksum).
fn ones(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[test]
fn unknown_subscriber_request_is_refused() {
    // Subscriber 9 has a profile (so its request is diverted) but the proxy holds no
    // secrets for it; subscriber 8 has no profile at all (nothing is diverted).
    let mut op = Op::new(8);
    op.proxy("203.0.113.10", &[1]);
    op.control(1, "203.0.113.10");
    op.subscriber(9, 0, "10.1.0.9", PEER);
    op.subscriber(8, 0, "10.1.0.8", PEER);
    op.peer(None);
    op.finish();
    op.attach(9, 0);
    let nine = subscriber_starts(&mut op, 0, "10.1.0.9", PEER);
    assert!(installed(&nine).is_empty());
    assert!(
        nine.iter()
            .any(|e| matches!(e, TerminalEvent::TriggerUnanswered { .. }))
    );
    assert!(op.proxy_actor(0).engine().stats().transfer_refused >= 1);
    assert!(proxy_negotiations(&op.proxy_events(0)).is_empty());
    // Without a profile the request goes where it is addressed — the peer, which has no
    // IKE SA with those SPIs — and nothing is negotiated either.
    let eight = subscriber_starts(&mut op, 1, "10.1.0.8", PEER);
    assert!(installed(&eight).is_empty());
    assert!(peer_events(&mut op).is_empty());
}

/// Two constrained ends: subscriber 1 behind SC 1 and subscriber 2 behind SC 2; T1 pings
/// T2 through ESP and T2 answers.
fn both_ends(op: &mut Op) {
    let t1 = op.subscribers[0].1;
    let t2 = op.subscribers[1].1;
    let te1 = subscriber_starts(op, 0, T1, "10.2.0.5");
    assert_eq!(installed(&te1).len(), 1, "{te1:?}");
    let te2 = terminal_events(&mut op.sim, t2);
    assert_eq!(installed(&te2).len(), 1, "{te2:?}");
    let got = received(&te2);
    assert!(got.iter().any(|(_, p)| *p), "{got:?}");
    let reply = echo_reply(&got[0].0).unwrap();
    assert_eq!(terminal_send(&mut op.sim, t2, reply), Sent::Protected);
    op.run(Duration::from_secs(1));
    assert!(got_protected(op, t1));
}

/// Whether `t`'s application received something through ESP since the last look.
fn got_protected(op: &mut Op, t: NodeId) -> bool {
    received(&terminal_events(&mut op.sim, t))
        .iter()
        .any(|(_, p)| *p)
}

#[test]
fn both_ends_constrained_two_proxies() {
    let mut op = Op::new(9);
    op.proxy("203.0.113.10", &[1]);
    op.proxy("203.0.113.11", &[2]);
    op.control(1, "203.0.113.10");
    op.control(2, "203.0.113.11");
    op.subscriber(1, 0, T1, "10.2.0.5");
    op.subscriber(2, 1, "10.2.0.5", T1);
    op.finish();
    op.attach(1, 0);
    op.attach(2, 1);
    both_ends(&mut op);
    // IKE ran between the two proxies, each as its own subscriber.
    assert_eq!(
        proxy_negotiations(&op.proxy_events(0)),
        vec![(1, ip("10.2.0.5"), true)]
    );
    assert_eq!(
        proxy_negotiations(&op.proxy_events(1)),
        vec![(2, ip(T1), false)]
    );
}

#[test]
fn both_ends_constrained_one_proxy() {
    // Note 6: the two proxies are one server. It holds both sessions of one exchange —
    // the initiator as subscriber 1, the responder as subscriber 2 — each sealed to its
    // own subscriber; the IKE between them really travels through both service controls.
    let mut op = Op::new(10);
    op.proxy("203.0.113.10", &[1, 2]);
    op.control(1, "203.0.113.10");
    op.control(2, "203.0.113.10");
    op.subscriber(1, 0, T1, "10.2.0.5");
    op.subscriber(2, 1, "10.2.0.5", T1);
    op.finish();
    op.attach(1, 0);
    op.attach(2, 1);
    both_ends(&mut op);
    let mut n = proxy_negotiations(&op.proxy_events(0));
    n.sort();
    assert_eq!(n, vec![(1, ip("10.2.0.5"), true), (2, ip(T1), false)]);
    assert!(op.sc(0).stats().relayed >= 2 && op.sc(1).stats().diverted >= 2);
}

#[test]
fn several_service_controls_nearest_proxy() {
    let mut op = Op::new(11);
    op.proxy("203.0.113.10", &[1]);
    op.proxy("203.0.113.11", &[2]);
    op.control(1, "203.0.113.10");
    op.control(2, "203.0.113.11");
    op.subscriber(1, 0, T1, PEER);
    op.subscriber(2, 1, "10.2.0.5", PEER);
    op.peer(None);
    op.finish();
    op.attach(1, 0);
    op.attach(2, 1);
    assert_eq!(installed(&subscriber_starts(&mut op, 0, T1, PEER)).len(), 1);
    assert_eq!(
        installed(&subscriber_starts(&mut op, 1, "10.2.0.5", PEER)).len(),
        1
    );
    // Each service control used its own nearest proxy, and only that one.
    assert_eq!(
        proxy_negotiations(&op.proxy_events(0)),
        vec![(1, ip(PEER), true)]
    );
    assert_eq!(
        proxy_negotiations(&op.proxy_events(1)),
        vec![(2, ip(PEER), true)]
    );
    assert_eq!(
        op.proxy_actor(0).links().collect::<Vec<_>>(),
        vec![ip("203.0.113.1")]
    );
    assert_eq!(
        op.proxy_actor(1).links().collect::<Vec<_>>(),
        vec![ip("203.0.113.2")]
    );
}

#[test]
fn subscriber_moves_to_another_service_control() {
    let mut op = Op::new(12);
    op.proxy("203.0.113.10", &[1]);
    op.proxy("203.0.113.11", &[1]);
    op.control(1, "203.0.113.10");
    op.control(2, "203.0.113.11");
    op.subscriber(1, 0, T1, PEER);
    op.peer(None);
    op.finish();
    op.attach(1, 0);
    assert_eq!(installed(&subscriber_starts(&mut op, 0, T1, PEER)).len(), 1);
    // The subscriber moves to SC 2's cell and gets 10.2.0.5 there; the authentication
    // server moves the profile: installed at SC 2, withdrawn at SC 1.
    let spec = Spec {
        peer_addr: PEER.into(),
        ..Spec::default()
    };
    let moved = terminal_actor(&op.sim, &spec, 1, "10.2.0.5", "subscriber1-moved");
    let access2 = op.controls[1].access;
    let node = op
        .sim
        .add_host("subscriber1-at-sc2", access2, ip("10.2.0.5"), moved)
        .unwrap();
    op.sim.set_raw_ip(node, RawIp::All).unwrap();
    op.subscribers.push((1, node, ip("10.2.0.5")));
    let auth = op.auth.unwrap();
    let sc2 = op.controls[1].core_addr;
    op.sim
        .command(auth, |a: &mut AuthServer, _| {
            a.attach_at(1, sc2, vec![ip("10.2.0.5")])
        })
        .unwrap();
    op.run(Duration::from_secs(1));
    assert!(
        op.sc_events(0)
            .contains(&OperatorEvent::ProfileWithdrawn { subscriber: 1 })
    );
    assert!(
        op.sc(0).profile(1).is_none(),
        "nothing left diverted at the old one"
    );
    assert!(op.sc(1).profile(1).is_some());
    // Traffic is rekeyed through the new service control and its nearest proxy.
    let diverted_at_old = op.sc(0).stats().diverted;
    let te = subscriber_starts(&mut op, 1, "10.2.0.5", PEER);
    assert_eq!(installed(&te).len(), 1, "{te:?}");
    assert!(received(&te).iter().any(|(_, p)| *p));
    assert_eq!(
        proxy_negotiations(&op.proxy_events(1)),
        vec![(1, ip(PEER), true)]
    );
    assert_eq!(op.sc(0).stats().diverted, diverted_at_old);
}

#[test]
fn rekey_reaches_the_subscriber() {
    let mut op = one_subscriber(13, false);
    let first = installed(&subscriber_starts(&mut op, 0, T1, PEER));
    assert_eq!(first.len(), 1);
    let peer = op.peer.unwrap();
    op.sim
        .command(peer, |p: &mut Peer, now| {
            if let Ike::Responder(r) = &mut p.ike {
                let id = r.established()[0];
                r.rekey_child(now, id)?;
            }
            p.pump(now);
            Ok(())
        })
        .unwrap();
    op.run(Duration::from_secs(10));
    let t = op.subscribers[0].1;
    let te = terminal_events(&mut op.sim, t);
    let second = installed(&te);
    assert_eq!(second.len(), 1, "{te:?}");
    assert_eq!(second[0].1, Some(first[0].0));
    assert!(te.iter().any(|e| matches!(e,
        TerminalEvent::KeysDeleted { spis } if spis == &vec![first[0].0])));
    assert_eq!(
        terminal_send(&mut op.sim, t, ping(T1, PEER, 9)),
        Sent::Protected
    );
    op.run(Duration::from_secs(1));
    assert!(got_protected(&mut op, t));
}

/// Regression (found by the `operator_control` fuzz target and by the interop run): a new
/// service control left its link's IKE_SA_INIT inside its initiator until the first
/// retransmission timer, so the link came up a retransmission interval late, the request
/// left twice, and the proxy's second answer failed at the service control.
#[test]
fn link_ike_starts_at_once() {
    let mut op = Op::new(15);
    op.proxy("203.0.113.10", &[1]);
    op.control(1, "203.0.113.10");
    op.run(Duration::from_millis(100));
    assert!(op.sc(0).link_up());
    let from_sc: Vec<_> = op
        .core_tap
        .seen()
        .into_iter()
        .filter(|p| p.src == ip("203.0.113.1") && p.ports == Some((500, 500)))
        .collect();
    assert_eq!(from_sc.len(), 2, "IKE_SA_INIT and IKE_AUTH, once each");
}

#[test]
fn proxy_unreachable_fails_cleanly() {
    let mut op = Op::new(14);
    // The service control's proxy does not exist.
    op.control(1, "203.0.113.99");
    op.subscriber(1, 0, T1, PEER);
    op.peer(None);
    op.finish();
    op.attach(1, 0);
    assert!(!op.sc(0).link_up());
    let te = subscriber_starts(&mut op, 0, T1, PEER);
    op.run(Duration::from_secs(10));
    let te: Vec<_> = te
        .into_iter()
        .chain(terminal_events(&mut op.sim, op.subscribers[0].1))
        .collect();
    assert!(installed(&te).is_empty());
    assert!(
        te.iter()
            .any(|e| matches!(e, TerminalEvent::TriggerUnanswered { .. }))
    );
    assert!(op.sc(0).stats().link_down >= 1);
    // Nothing left in clear, nothing reached the peer.
    assert!(!op.core_tap.seen().iter().any(|p| p.src == ip(T1)));
    assert!(peer_events(&mut op).is_empty());
}

#[test]
fn every_bound_is_enforced() {
    // Profiles per service control.
    let mut op = Op::new(15);
    op.proxy("203.0.113.10", &[1, 2]);
    op.control_with(1, "203.0.113.10", |c| c.max_profiles = 1);
    op.subscriber(1, 0, T1, PEER);
    op.subscriber(2, 0, "10.1.0.6", PEER);
    op.finish();
    op.attach(1, 0);
    op.attach(2, 0);
    let sc = op.controls[0].node;
    assert!(op.sim.faults(sc).unwrap().iter().any(|f| f.error
        == deputy::Error::CapacityExceeded {
            what: "service profiles",
            bound: 1
        }));
    assert_eq!(op.sc(0).profile_count(), 1);
    // Conditions per profile.
    let mut big = deputy::keyx::operator::ServiceProfile::ike(3, ip("10.1.0.7"));
    big.conditions = vec![big.conditions[0]; deputy::keyx::operator::profile::MAX_CONDITIONS + 1];
    assert!(big.encode_install().is_err());
    // Channels at the authentication server.
    let auth = op.auth.unwrap();
    let r = op.sim.command(auth, |a: &mut AuthServer, _| {
        (1..=8u8).try_for_each(|n| a.attach(1, ip(&format!("203.0.113.{}", 100 + n))))
    });
    assert_eq!(
        r,
        Err(deputy::Error::CapacityExceeded {
            what: "service-control channels",
            bound: 8
        })
    );
    // Links at the proxy.
    let mut op = Op::new(16);
    let proxy = op.proxy("203.0.113.10", &[1]);
    op.control(1, "203.0.113.10");
    op.control(2, "203.0.113.10");
    let _ = proxy;
    // (The second link is refused once the bound of one is reached.)
    let mut op2 = Op::new(17);
    {
        let cfg = {
            let mut c = deputy::keyx::operator::KeyExchangeProxyConfig::new(
                ip("203.0.113.10"),
                deputy::ikev2::IkeConfig::new(
                    deputy::ikev2::Identity::Fqdn("proxy.operator.example".into()),
                    LINK_PSK,
                ),
            );
            c.max_links = 1;
            c
        };
        let p = deputy::keyx::operator::KeyExchangeProxy::new(
            cfg,
            store(&[1]),
            Box::new(op2.sim.rng("p")),
            op2.sim.now(),
        )
        .unwrap();
        let node = op2
            .sim
            .add_host("proxy", op2.core, ip("203.0.113.10"), p)
            .unwrap();
        op2.sim.set_raw_ip(node, RawIp::All).unwrap();
        op2.proxies.push(node);
    }
    op2.control(1, "203.0.113.10");
    op2.control(2, "203.0.113.10");
    op2.run(Duration::from_secs(3));
    assert_eq!(op2.proxy_actor(0).links().count(), 1);
    assert!(
        op2.sim
            .faults(op2.proxies[0])
            .unwrap()
            .iter()
            .any(|f| f.error
                == deputy::Error::CapacityExceeded {
                    what: "service-control links",
                    bound: 1
                })
    );
    let _ = (
        &mut op,
        ServiceControl::link_up,
        NodeId::from_index(0),
        Terminal::stats,
    );
}

//! Seed 001 through the simulator: the inline key-exchange proxy on the path between a peer
//! (deputy's IKEv2 endpoint with ESP) and IKE-less terminals. Each test tells one flow or
//! refusal of the seed's Figs. 3 and 4 and asserts what each party saw.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::inline::*;
use common::ip;
use deputy::ikev2::IkeEvent;
use deputy::ipsec::{Action, Direction, Policy, PortRange, Selector};
use deputy::keyx::ikeless::{Sent, Terminal, TerminalEvent};
use deputy::keyx::inline::{InlineProxy, ProxyEvent};
use deputy::keyx::transfer::{self, Envelope, Transfer};
use deputy::sim::Sim;
use deputy::sim::fault::{Fault, FaultAction};
use deputy::{Actor, IfaceId, Input};

fn installed(te: &[TerminalEvent]) -> Vec<(u32, u32, Option<u32>)> {
    te.iter()
        .filter_map(|e| match e {
            TerminalEvent::KeysInstalled {
                spi_in,
                spi_out,
                replaces,
            } => Some((*spi_in, *spi_out, *replaces)),
            _ => None,
        })
        .collect()
}

fn negotiations(pe: &[ProxyEvent]) -> Vec<(u64, IpAddr, bool)> {
    pe.iter()
        .filter_map(|e| match e {
            ProxyEvent::Negotiating {
                terminal,
                peer,
                initiator,
            } => Some((*terminal, *peer, *initiator)),
            _ => None,
        })
        .collect()
}

/// The terminal pings the peer through ESP and gets the answer: the data plane carries.
fn echo_through_esp(sim: &mut Sim, w: &World, t: deputy::sim::NodeId, me: &str, seq: u16) {
    let peer = ip(&sim_peer_addr(sim, w));
    let sent = terminal_send(sim, t, echo(ip(me), peer, 7, seq, true, b"x"));
    assert_eq!(sent, Sent::Protected);
    sim.run_for(Duration::from_secs(1)).unwrap();
    let got = received(&terminal_events(sim, t));
    assert!(
        got.iter()
            .any(|(p, protected)| *protected && echo_reply(p).is_none()),
        "no protected echo reply: {got:?}"
    );
}

fn sim_peer_addr(sim: &Sim, w: &World) -> String {
    sim.address(w.peer).unwrap().unwrap().to_string()
}

/// The terminal's flow of Fig. 4 up to installed keys; returns the first SA's SPIs.
fn fig4(sim: &mut Sim, w: &World) -> (u32, u32) {
    let t = w.terminals[0];
    assert!(matches!(
        terminal_send(sim, t, ping(T1, PEER, 1)),
        Sent::Held(_)
    ));
    settle(sim);
    let te = terminal_events(sim, t);
    let got = installed(&te);
    assert_eq!(got.len(), 1, "{te:?}");
    (got[0].0, got[0].1)
}

/// The peer starts IKE toward terminal 1 (Fig. 3) and the world settles.
fn fig3(sim: &mut Sim) -> World {
    let spec = Spec {
        peer_initiates_to: Some(1),
        ..Spec::default()
    };
    let w = world(sim, &spec);
    peer_start(sim, &w);
    settle(sim);
    w
}

// ------------------------------------------------------------------ Fig. 3

#[test]
fn fig3_peer_initiated_s1_to_s9() {
    let mut sim = Sim::new(1);
    let w = fig3(&mut sim);
    // S7-S9 at the proxy: negotiated as the terminal's responder, stored, pushed, acked.
    let pe = proxy_events(&mut sim, &w);
    assert_eq!(negotiations(&pe), vec![(1, ip(PEER), false)]);
    let stored = pe
        .iter()
        .find_map(|e| match e {
            ProxyEvent::SaStored { spi_in, .. } => Some(*spi_in),
            _ => None,
        })
        .expect("S8");
    assert!(pe.contains(&ProxyEvent::KeysPushed {
        terminal: 1,
        spi_in: stored,
        again: false
    }));
    assert!(pe.contains(&ProxyEvent::KeysAcknowledged {
        terminal: 1,
        spi_in: stored
    }));
    // The peer's IKE SA is with the terminal's address: it never saw a proxy.
    let ike = peer_ike_events(&mut sim, &w);
    assert!(ike.iter().any(|e| matches!(e,
        IkeEvent::IkeSaEstablished { remote, .. } if remote.ip() == ip(T1))));
    // The terminal installed the keys the proxy stored, once.
    let te = terminal_events(&mut sim, w.terminals[0]);
    assert_eq!(installed(&te).len(), 1);
    assert_eq!(installed(&te)[0].0, stored);
    // The peer pings the terminal through ESP; the terminal's application sees it
    // protected and its answer goes back protected.
    peer_send(&mut sim, &w, ping(PEER, T1, 3));
    sim.run_for(Duration::from_secs(1)).unwrap();
    let got = received(&terminal_events(&mut sim, w.terminals[0]));
    assert_eq!(got.len(), 1);
    assert!(got[0].1, "arrived protected");
    let reply = echo_reply(&got[0].0).unwrap();
    terminal_send(&mut sim, w.terminals[0], reply);
    sim.run_for(Duration::from_secs(1)).unwrap();
    let at_peer = peer_received(&mut sim, &w);
    assert!(at_peer.iter().any(|(_, protected)| *protected));
    // No packet on the Internet carries an address other than the peer's and the
    // terminal's: the proxy has none (¶0026).
    let seen = w.internet_tap.seen();
    assert!(!seen.is_empty());
    for p in seen {
        assert!([ip(PEER), ip(T1)].contains(&p.src) && [ip(PEER), ip(T1)].contains(&p.dst));
    }
}

#[test]
fn s1_policy_discard_drops() {
    let mut sim = Sim::new(2);
    let spec = Spec {
        proxy: |c| {
            // Discard UDP from the peer to port 9 (as the seed's row 3 discards).
            c.policy.push(Policy::new(
                Selector::parse("192.0.2.1/32", "198.51.100.10/32")
                    .unwrap()
                    .protocol(17)
                    .dst_ports(PortRange::single(9)),
                Direction::Inbound,
                Action::Discard,
            ));
            // And a discard row on UDP 500 from a second peer: S1 runs before S3, so no
            // negotiation can ever start from it.
            c.policy.push(Policy::new(
                Selector::parse("192.0.2.2/32", "0.0.0.0/0")
                    .unwrap()
                    .protocol(17)
                    .dst_ports(PortRange::single(500)),
                Direction::Inbound,
                Action::Discard,
            ));
        },
        ..Spec::default()
    };
    let w = world(&mut sim, &spec);
    // A second peer really starts IKE toward the terminal from 192.0.2.2.
    let second = Peer::new(
        &sim,
        Ike::Initiator(Box::new(
            deputy::ikev2::Initiator::new(
                deputy::ikev2::InitiatorConfig {
                    ike: peer_ike(&spec),
                    local: "192.0.2.2:500".parse().unwrap(),
                    remote: format!("{T1}:500").parse().unwrap(),
                },
                Box::new(sim.rng("second")),
            )
            .unwrap(),
        )),
    );
    let second = sim
        .add_host("peer-2", w.internet, ip("192.0.2.2"), second)
        .unwrap();
    sim.set_raw_ip(second, deputy::sim::RawIp::All).unwrap();
    // S1 → S2: the peer's datagram to port 9 is dropped.
    inject_internet(&mut sim, &w, udp(PEER, 1000, T1, 9, b"dropped"));
    assert_eq!(proxy_stats(&mut sim, &w).policy_drops, 1);
    // The second peer's IKE_SA_INIT and every retransmission of it are dropped at S1,
    // before S3 could see key exchange: no negotiation starts.
    sim.command(second, |p: &mut Peer, now| {
        if let Ike::Initiator(i) = &mut p.ike {
            i.start(now)?;
        }
        p.pump(now);
        Ok(())
    })
    .unwrap();
    sim.run_for(Duration::from_secs(40)).unwrap();
    assert!(proxy_stats(&mut sim, &w).policy_drops >= 3);
    assert!(received(&terminal_events(&mut sim, w.terminals[0])).is_empty());
    assert!(negotiations(&proxy_events(&mut sim, &w)).is_empty());
    let failed: Vec<IkeEvent> = sim
        .with_actor(second, |p: &mut Peer, _| p.ike_events.clone())
        .unwrap();
    assert!(
        failed.iter().any(|e| matches!(e, IkeEvent::Failed { .. })),
        "{failed:?}"
    );
}

/// Lose `count` key-transfer messages of type `ty` on the LAN: to terminal 1, or from it.
fn lose(
    sim: &mut Sim,
    w: &World,
    ty: u8,
    to_terminal: bool,
    count: u64,
) -> deputy::sim::fault::FaultId {
    sim.add_fault(
        Fault::new(FaultAction::Drop)
            .on_network(w.lan)
            .when(move |p| {
                (if to_terminal { p.dst } else { p.src }) == ip(T1)
                    && transfer::is_marked(p.payload)
                    && Envelope::parse(p.payload).is_ok_and(|e| e.msg_type == ty)
            })
            .nth(0)
            .count(count),
    )
    .unwrap()
}

/// Put `packet` on the Internet side of the proxy, as if the peer had sent it.
fn inject_internet(sim: &mut Sim, w: &World, packet: Vec<u8>) {
    sim.command(w.proxy, |p: &mut InlineProxy, now| {
        p.handle_input(
            now,
            Input::Packet {
                iface: IfaceId(0),
                data: &packet,
            },
        )
    })
    .unwrap();
}

#[test]
fn s4_non_key_exchange_is_forwarded() {
    let mut sim = Sim::new(3);
    let w = world(&mut sim, &Spec::default());
    // A clear datagram from a host the terminal's policy bypasses.
    let other = sim
        .add_host(
            "web",
            w.internet,
            ip("192.0.2.80"),
            deputy::sim::DatagramProbe::new(80),
        )
        .unwrap();
    sim.with_actor(other, |p: &mut deputy::sim::DatagramProbe, _| {
        p.send(format!("{T1}:53").parse().unwrap(), b"hello".to_vec())
    })
    .unwrap()
    .unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    let got = received(&terminal_events(&mut sim, w.terminals[0]));
    assert_eq!(got.len(), 1);
    assert!(!got[0].1, "in clear");
    // Byte-identical on both sides of the proxy: no TTL decrement, no rewrite.
    let from_web = |t: &Tap| {
        t.seen()
            .into_iter()
            .find(|p| p.src == ip("192.0.2.80"))
            .unwrap()
    };
    let (sent, forwarded) = (from_web(&w.internet_tap), from_web(&w.lan_tap));
    assert_eq!(sent, forwarded, "same TTL, same bytes");
    assert_eq!(got[0].0.len(), forwarded.len);
    assert!(got[0].0.ends_with(&forwarded.payload));
    assert_eq!(proxy_stats(&mut sim, &w).forwarded_in, 1);
}

#[test]
fn s5_unknown_terminal_is_dropped() {
    let mut sim = Sim::new(4);
    // The peer starts IKE toward 198.51.100.20, a host behind the proxy that is no
    // delegated terminal (an ordinary host: it would not answer anyway).
    let spec = Spec {
        terminals: vec![(1, T1.into()), (9, "198.51.100.20".into())],
        peer_initiates_to: Some(9),
        ..Spec::default()
    };
    let mut spec = spec;
    spec.bound = true;
    let w = world(&mut sim, &spec);
    // Host 9 is in the world but not in the proxy's address store nor its secure store.
    sim.command(w.proxy, |p: &mut InlineProxy, _| {
        p.unbind(9);
        p.store_mut().remove(9);
        Ok(())
    })
    .unwrap();
    peer_start(&mut sim, &w);
    settle(&mut sim);
    let stats = proxy_stats(&mut sim, &w);
    assert!(stats.unknown_terminal_drops >= 1);
    assert!(negotiations(&proxy_events(&mut sim, &w)).is_empty());
    // Nothing reached the host: S5 → S2.
    assert!(
        w.lan_tap
            .seen()
            .iter()
            .all(|p| p.dst != ip("198.51.100.20"))
    );
}

// ------------------------------------------------------------------ Fig. 4

#[test]
fn fig4_terminal_initiated_s11_to_s19() {
    let mut sim = Sim::new(5);
    let w = world(&mut sim, &Spec::default());
    let (spi_in, _) = fig4(&mut sim, &w);
    let pe = proxy_events(&mut sim, &w);
    assert_eq!(negotiations(&pe), vec![(1, ip(PEER), true)]);
    assert!(pe.contains(&ProxyEvent::KeysAcknowledged {
        terminal: 1,
        spi_in
    }));
    // The peer answered the held echo through ESP: the terminal got the reply protected.
    let at_peer = peer_received(&mut sim, &w);
    assert_eq!(at_peer.len(), 1);
    assert!(at_peer[0].1);
    let ike = peer_ike_events(&mut sim, &w);
    assert!(ike.iter().any(|e| matches!(e,
        IkeEvent::IkeSaEstablished { remote, .. } if remote.ip() == ip(T1))));
    echo_through_esp(&mut sim, &w, w.terminals[0], T1, 2);
}

#[test]
fn triggering_packet_is_held_then_sent_protected() {
    let mut sim = Sim::new(6);
    let w = world(&mut sim, &Spec::default());
    let ping1 = ping(T1, PEER, 1);
    fig4(&mut sim, &w);
    // The ping never crossed either network in clear…
    for tap in [&w.lan_tap, &w.internet_tap] {
        assert!(!tap.seen().iter().any(|p| p.protocol == 1));
    }
    // …the trigger went to the peer's address (the proxy took it on the way)…
    assert!(w.lan_tap.seen().iter().any(|p| {
        p.src == ip(T1) && p.dst == ip(PEER) && p.transfer(Some(transfer::msg::TRIGGER))
    }));
    assert!(!w.internet_tap.seen().iter().any(|p| p.transfer(None)));
    // …and the peer received exactly that packet, through ESP.
    let at_peer = peer_received(&mut sim, &w);
    assert_eq!(at_peer, vec![(ping1, true)]);
}

#[test]
fn s6_stored_valid_sa_is_reused() {
    // Fig. 3: the peer starts. The proxy's IKE_AUTH answer and its first key transfer are
    // both lost, so the peer retransmits IKE_AUTH: S6 finds the IKE SA in the store (the
    // engine answers from its cache) and the stored keys, never acknowledged, go to the
    // terminal again — the same message, no second negotiation.
    let mut sim = Sim::new(7);
    let spec = Spec {
        peer_initiates_to: Some(1),
        // The proxy's own retry is slower than the peer's, so the peer's retransmission
        // is what brings the keys again.
        proxy: |c| c.retry.initial = Duration::from_secs(2),
        ..Spec::default()
    };
    let w = world(&mut sim, &spec);
    let lost_auth = sim
        .add_fault(
            Fault::new(FaultAction::Drop)
                .on_network(w.internet)
                .src_ip(ip(T1))
                .nth(1),
        )
        .unwrap();
    let lost_install = lose(&mut sim, &w, transfer::msg::INSTALL, true, 1);
    peer_start(&mut sim, &w);
    settle(&mut sim);
    assert_eq!(sim.fault_stats(lost_auth).unwrap().applied, 1);
    assert_eq!(sim.fault_stats(lost_install).unwrap().applied, 1);
    let pe = proxy_events(&mut sim, &w);
    assert_eq!(negotiations(&pe).len(), 1, "{pe:?}");
    assert!(
        pe.iter()
            .any(|e| matches!(e, ProxyEvent::KeysPushed { again: true, .. })),
        "S6 pushed the stored keys again: {pe:?}"
    );
    let ike = peer_ike_events(&mut sim, &w);
    assert_eq!(
        ike.iter()
            .filter(|e| matches!(e, IkeEvent::ChildSaEstablished { .. }))
            .count(),
        1
    );
    let te = terminal_events(&mut sim, w.terminals[0]);
    assert_eq!(installed(&te).len(), 1, "installed once: {te:?}");
}

#[test]
fn lost_install_is_retransmitted_as_the_same_message() {
    let mut sim = Sim::new(35);
    let w = world(&mut sim, &Spec::default());
    let lost = lose(&mut sim, &w, transfer::msg::INSTALL, true, 1);
    fig4(&mut sim, &w);
    assert_eq!(sim.fault_stats(lost).unwrap().applied, 1);
    let pe = proxy_events(&mut sim, &w);
    assert_eq!(negotiations(&pe).len(), 1);
    // The retry timer resent the very message (one KeysPushed, one sequence number).
    let installs: Vec<u32> = w
        .lan_tap
        .seen()
        .iter()
        .filter(|p| p.transfer(Some(transfer::msg::INSTALL)))
        .map(|p| Envelope::parse(&p.payload).unwrap().seq)
        .collect();
    assert!(
        installs.len() >= 2 && installs.iter().all(|s| *s == installs[0]),
        "{installs:?}"
    );
    assert_eq!(
        pe.iter()
            .filter(|e| matches!(e, ProxyEvent::KeysPushed { .. }))
            .count(),
        1
    );
}

#[test]
fn reboot_with_an_unacknowledged_sa_rekeys_it() {
    // Every ack from the terminal is lost: the proxy never learns that the keys were
    // installed — and used (the held ping left under them). After the terminal restarts
    // they must not come back: its sequence numbers would restart under the same key.
    let mut sim = Sim::new(36);
    let spec = Spec::default();
    let w = world(&mut sim, &spec);
    let acks = lose(&mut sim, &w, transfer::msg::ACK, false, 100);
    let (first, _) = fig4(&mut sim, &w);
    assert!(sim.fault_stats(acks).unwrap().applied >= 1);
    assert!(
        !sim.actor::<InlineProxy>(w.proxy)
            .unwrap()
            .acknowledged(1, first)
    );
    assert!(
        !peer_received(&mut sim, &w).is_empty(),
        "the keys were used"
    );
    sim.remove_fault(acks).unwrap();
    proxy_events(&mut sim, &w);
    let fresh = terminal_actor(&sim, &spec, 1, T1, "terminal1-rebooted");
    sim.with_actor(w.terminals[0], |t: &mut Terminal, _| *t = fresh)
        .unwrap();
    assert!(matches!(
        terminal_send(&mut sim, w.terminals[0], ping(T1, PEER, 2)),
        Sent::Held(_)
    ));
    settle(&mut sim);
    let pe = proxy_events(&mut sim, &w);
    assert!(pe.contains(&ProxyEvent::Rekeying {
        terminal: 1,
        spi_in: first
    }));
    assert!(!pe.iter().any(|e| matches!(e,
        ProxyEvent::KeysPushed { spi_in, .. } if *spi_in == first)));
    let got = installed(&terminal_events(&mut sim, w.terminals[0]));
    assert!(
        !got.is_empty() && got.iter().all(|(spi, _, _)| *spi != first),
        "{got:?}"
    );
}

#[test]
fn soft_expiry_rekeys_once_then_the_old_sa_is_deleted() {
    let mut sim = Sim::new(37);
    let spec = Spec {
        ike: |c| {
            c.child_lifetime.soft_time = Some(Duration::from_secs(20));
            c.child_lifetime.hard_time = Some(Duration::from_secs(40));
        },
        ..Spec::default()
    };
    let w = world(&mut sim, &spec);
    let (first, _) = fig4(&mut sim, &w);
    proxy_events(&mut sim, &w);
    sim.run_for(Duration::from_secs(25)).unwrap();
    let pe = proxy_events(&mut sim, &w);
    let rekeys: Vec<_> = pe
        .iter()
        .filter(|e| matches!(e, ProxyEvent::Rekeying { .. }))
        .collect();
    assert_eq!(rekeys.len(), 1, "{pe:?}");
    let ike = peer_ike_events(&mut sim, &w);
    assert_eq!(
        ike.iter()
            .filter(|e| matches!(e, IkeEvent::ChildSaRekeyed { .. }))
            .count(),
        1
    );
    let te = terminal_events(&mut sim, w.terminals[0]);
    assert!(installed(&te).iter().any(|(_, _, r)| *r == Some(first)));
    assert!(te.iter().any(|e| matches!(e,
        TerminalEvent::KeysDeleted { spis } if spis == &vec![first])));
}

#[test]
fn a_host_with_its_own_ike_passes_when_listed() {
    // 198.51.100.30 runs IKE itself; the proxy is told to let it (the seed would drop).
    let mut sim = Sim::new(38);
    let spec = Spec {
        proxy: |c| c.own_ike = vec![ip("198.51.100.30")],
        ..Spec::default()
    };
    let w = world(&mut sim, &spec);
    let own = Peer::new(
        &sim,
        Ike::Responder(Box::new(
            deputy::ikev2::Responder::new(
                deputy::ikev2::ResponderConfig::new(peer_ike(&spec)),
                Box::new(sim.rng("own")),
                sim.now(),
            )
            .unwrap(),
        )),
    );
    let own = sim
        .add_host("own-ike", w.lan, ip("198.51.100.30"), own)
        .unwrap();
    sim.set_raw_ip(own, deputy::sim::RawIp::All).unwrap();
    let initiator = Peer::new(
        &sim,
        Ike::Initiator(Box::new(
            deputy::ikev2::Initiator::new(
                deputy::ikev2::InitiatorConfig {
                    ike: peer_ike(&spec),
                    local: "192.0.2.5:500".parse().unwrap(),
                    remote: "198.51.100.30:500".parse().unwrap(),
                },
                Box::new(sim.rng("far")),
            )
            .unwrap(),
        )),
    );
    let far = sim
        .add_host("far", w.internet, ip("192.0.2.5"), initiator)
        .unwrap();
    sim.set_raw_ip(far, deputy::sim::RawIp::All).unwrap();
    sim.command(far, |p: &mut Peer, now| {
        if let Ike::Initiator(i) = &mut p.ike {
            i.start(now)?;
        }
        p.pump(now);
        Ok(())
    })
    .unwrap();
    settle(&mut sim);
    let ike: Vec<IkeEvent> = sim
        .with_actor(far, |p: &mut Peer, _| p.ike_events.clone())
        .unwrap();
    assert!(
        ike.iter()
            .any(|e| matches!(e, IkeEvent::ChildSaEstablished { .. })),
        "{ike:?}"
    );
    assert!(negotiations(&proxy_events(&mut sim, &w)).is_empty());
}

#[test]
fn expired_sa_is_renegotiated() {
    let mut sim = Sim::new(8);
    let spec = Spec {
        ike: |c| {
            c.child_lifetime.soft_time = None;
            c.child_lifetime.hard_time = Some(Duration::from_secs(30));
        },
        ..Spec::default()
    };
    let w = world(&mut sim, &spec);
    let (first, _) = fig4(&mut sim, &w);
    sim.run_for(Duration::from_secs(40)).unwrap();
    let pe = proxy_events(&mut sim, &w);
    assert!(pe.contains(&ProxyEvent::SaRemoved {
        terminal: 1,
        spi_in: first
    }));
    // Expired means not valid (S16 no): the next packet negotiates afresh (S17).
    let t = w.terminals[0];
    assert!(matches!(
        terminal_send(&mut sim, t, ping(T1, PEER, 5)),
        Sent::Held(_)
    ));
    settle(&mut sim);
    let pe = proxy_events(&mut sim, &w);
    assert_eq!(negotiations(&pe), vec![(1, ip(PEER), true)]);
    let again = installed(&terminal_events(&mut sim, t));
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].0, first);
}

#[test]
fn used_keys_are_never_pushed_again() {
    let mut sim = Sim::new(9);
    let spec = Spec::default();
    let w = world(&mut sim, &spec);
    let (first, _) = fig4(&mut sim, &w);
    proxy_events(&mut sim, &w);
    // The terminal restarts: a new boot nonce, an empty data plane. Its keys were
    // acknowledged (and used): pushing them again would restart its ESP sequence numbers
    // under the same key.
    let fresh = terminal_actor(&sim, &spec, 1, T1, "terminal1-rebooted");
    sim.with_actor(w.terminals[0], |t: &mut Terminal, _| *t = fresh)
        .unwrap();
    let t = w.terminals[0];
    assert!(matches!(
        terminal_send(&mut sim, t, ping(T1, PEER, 9)),
        Sent::Held(_)
    ));
    settle(&mut sim);
    let pe = proxy_events(&mut sim, &w);
    assert!(
        pe.iter()
            .any(|e| matches!(e, ProxyEvent::TerminalBound { rebooted: true, .. }))
    );
    assert!(pe.contains(&ProxyEvent::Rekeying {
        terminal: 1,
        spi_in: first
    }));
    assert!(
        negotiations(&pe).is_empty(),
        "rekeyed under the stored IKE SA: {pe:#?}"
    );
    let te = terminal_events(&mut sim, t);
    let got = installed(&te);
    assert!(!got.is_empty(), "{te:?}");
    assert!(got.iter().all(|(spi, _, _)| *spi != first), "{got:?}");
    // The peer rekeyed the Child SA (CREATE_CHILD_SA), no new IKE SA.
    let ike = peer_ike_events(&mut sim, &w);
    assert!(
        ike.iter()
            .any(|e| matches!(e, IkeEvent::ChildSaRekeyed { .. }))
    );
    assert_eq!(
        ike.iter()
            .filter(|e| matches!(e, IkeEvent::IkeSaEstablished { .. }))
            .count(),
        1
    );
    // The held ping left under the new keys.
    assert!(
        peer_received(&mut sim, &w)
            .iter()
            .any(|(p, protected)| *protected && *p == ping(T1, PEER, 9))
    );
}

#[test]
fn two_terminals_same_peer_get_their_own_sas() {
    let mut sim = Sim::new(10);
    let spec = Spec {
        terminals: vec![(1, T1.into()), (2, T2.into())],
        ..Spec::default()
    };
    let w = world(&mut sim, &spec);
    terminal_send(&mut sim, w.terminals[0], ping(T1, PEER, 1));
    terminal_send(&mut sim, w.terminals[1], ping(T2, PEER, 1));
    settle(&mut sim);
    let a = installed(&terminal_events(&mut sim, w.terminals[0]));
    let b = installed(&terminal_events(&mut sim, w.terminals[1]));
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_ne!(a[0].0, b[0].0);
    // One IKE SA per terminal, each from that terminal's address (¶0032).
    let ike = peer_ike_events(&mut sim, &w);
    let mut remotes: Vec<IpAddr> = ike
        .iter()
        .filter_map(|e| match e {
            IkeEvent::IkeSaEstablished { remote, .. } => Some(remote.ip()),
            _ => None,
        })
        .collect();
    remotes.sort();
    assert_eq!(remotes, vec![ip(T1), ip(T2)]);
    // Terminal 2 cannot open terminal 1's install: each is sealed to its own key.
    let for_t1 = w
        .lan_tap
        .seen()
        .into_iter()
        .find(|p| p.dst == ip(T1) && p.transfer(Some(transfer::msg::INSTALL)))
        .unwrap()
        .payload;
    assert!(Envelope::parse(&for_t1).unwrap().open(&key(2)).is_err());
    assert!(Envelope::parse(&for_t1).unwrap().open(&key(1)).is_ok());
    echo_through_esp(&mut sim, &w, w.terminals[0], T1, 2);
    echo_through_esp(&mut sim, &w, w.terminals[1], T2, 2);
}

#[test]
fn address_acquisition_learns_a_new_terminal() {
    let mut sim = Sim::new(11);
    let spec = Spec {
        bound: false,
        peer_initiates_to: Some(1),
        ..Spec::default()
    };
    let w = world(&mut sim, &spec);
    sim.add_host(
        "web",
        w.internet,
        ip("192.0.2.80"),
        deputy::sim::DatagramProbe::new(53),
    )
    .unwrap();
    // Not in the address store yet: the peer's IKE is dropped (S5).
    peer_start(&mut sim, &w);
    sim.run_for(Duration::from_millis(100)).unwrap();
    assert!(
        proxy_stats(&mut sim, &w).unknown_terminal_drops >= 1,
        "{:?} {:?}",
        proxy_stats(&mut sim, &w),
        sim.faults(w.proxy)
    );
    // The terminal sends something (a clear datagram elsewhere): the proxy learns the
    // address, solicits, and the sealed announce binds it.
    terminal_send(
        &mut sim,
        w.terminals[0],
        udp(T1, 4000, "192.0.2.80", 53, b"q"),
    );
    sim.run_for(Duration::from_secs(1)).unwrap();
    let pe = proxy_events(&mut sim, &w);
    assert!(
        pe.contains(&ProxyEvent::TerminalBound {
            terminal: 1,
            address: ip(T1),
            rebooted: false
        }),
        "{pe:?} {:?} {:?} {:?}",
        sim.faults(w.proxy),
        sim.faults(w.terminals[0]),
        sim.peek_events(w.terminals[0])
    );
    let proxy = sim.actor::<InlineProxy>(w.proxy).unwrap();
    assert_eq!(proxy.terminal_at(ip(T1)), Some(1));
    // The peer's retransmitted IKE_SA_INIT now gets through: S5 yes … S9.
    settle(&mut sim);
    assert_eq!(
        installed(&terminal_events(&mut sim, w.terminals[0])).len(),
        1
    );
}

#[test]
fn seed_policy_table_examples() {
    // The three rows of Fig. 2 as the seed reads them: packets *sent by the peer*.
    let rows = |c: &mut deputy::keyx::inline::ProxyConfig| {
        c.policy = vec![
            Policy::new(
                Selector::parse("10.0.0.1/32", "10.0.0.0/24")
                    .unwrap()
                    .protocol(6),
                Direction::Inbound,
                Action::Bypass,
            ),
            Policy::new(
                Selector::parse("2001::1/128", "2001::2/128")
                    .unwrap()
                    .protocol(17)
                    .src_ports(PortRange::single(137))
                    .dst_ports(PortRange::single(137)),
                Direction::Inbound,
                Action::Bypass,
            ),
            // ICMPv6 type 135 (neighbour solicitation) in the source-port column.
            Policy::new(
                Selector::parse("2001::1/128", "2001::2/128")
                    .unwrap()
                    .protocol(58)
                    .src_ports(PortRange::single(135)),
                Direction::Inbound,
                Action::Discard,
            ),
        ];
        // What no row matches is discarded here, so each bypass is the rows' doing.
        c.default_action = Action::Discard;
    };
    // A world with the peer at `peer` and the terminal at `me`, each on its own network.
    let table_world = |sim: &mut Sim, peer: &str, internet: &str, lan: &str, me: &str| {
        let spec = Spec {
            peer_addr: peer.into(),
            internet: ("internet".into(), internet.into()),
            lan: ("lan".into(), lan.into()),
            terminals: vec![(1, me.into())],
            proxy: rows,
            protect: false,
            ..Spec::default()
        };
        world(sim, &spec)
    };
    // IPv4: row 1.
    let mut sim = Sim::new(12);
    let w = table_world(
        &mut sim,
        "10.0.0.1",
        "10.0.0.0/28",
        "10.0.0.128/25",
        "10.0.0.130",
    );
    let tcp = {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 130], 64)
            .tcp(4000, 80, 1, 1000)
            .write(&mut out, b"GET")
            .unwrap();
        out
    };
    inject_internet(&mut sim, &w, tcp.clone());
    inject_internet(&mut sim, &w, udp("10.0.0.1", 137, "10.0.0.130", 137, b"nb"));
    sim.run_for(Duration::from_secs(1)).unwrap();
    let got = received(&terminal_events(&mut sim, w.terminals[0]));
    assert_eq!(
        got,
        vec![(tcp, false)],
        "row 1 bypasses TCP; UDP is no row's: default"
    );
    // The same packet *from* the terminal matches no row as written: the default.
    let back = udp("10.0.0.130", 80, "10.0.0.1", 4000, b"x");
    terminal_send(&mut sim, w.terminals[0], back);
    sim.run_for(Duration::from_secs(1)).unwrap();
    assert!(peer_received(&mut sim, &w).is_empty());
    assert_eq!(proxy_stats(&mut sim, &w).policy_drops, 2);

    // IPv6: rows 2 and 3.
    let mut sim = Sim::new(13);
    let w = table_world(&mut sim, "2001::1", "2001::/127", "2001::2/127", "2001::2");
    let netbios = udp("2001::1", 137, "2001::2", 137, b"nb");
    let ns = {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv6(ip6("2001::1"), ip6("2001::2"), 255)
            .icmpv6(etherparse::Icmpv6Type::Unknown {
                type_u8: 135,
                code_u8: 0,
                bytes5to8: [0; 4],
            })
            .write(&mut out, &[0; 16])
            .unwrap();
        out
    };
    let echo6 = echo(ip("2001::1"), ip("2001::2"), 1, 1, true, b"e");
    for p in [netbios.clone(), ns, echo6] {
        inject_internet(&mut sim, &w, p);
    }
    sim.run_for(Duration::from_secs(1)).unwrap();
    let got = received(&terminal_events(&mut sim, w.terminals[0]));
    // Row 2 passes NetBIOS; row 3 discards type 135; the echo is no row's (default).
    assert_eq!(got, vec![(netbios, false)]);
    assert_eq!(proxy_stats(&mut sim, &w).policy_drops, 2);
}

fn ip6(s: &str) -> [u8; 16] {
    match ip(s) {
        IpAddr::V6(a) => a.octets(),
        _ => panic!(),
    }
}

#[test]
fn ipv6_terminal() {
    let mut sim = Sim::new(14);
    let spec = Spec {
        ike: |c| {
            c.ts_local = vec![deputy::ipsec::TrafficSelector::any_v6()];
            c.ts_remote = vec![deputy::ipsec::TrafficSelector::any_v6()];
        },
        ..Spec::ipv6()
    };
    let w = world(&mut sim, &spec);
    let t = w.terminals[0];
    let me = "2001:db8:1::10";
    assert!(matches!(
        terminal_send(
            &mut sim,
            t,
            echo(ip(me), ip("2001:db8::1"), 7, 1, true, b"v6")
        ),
        Sent::Held(_)
    ));
    settle(&mut sim);
    let te = terminal_events(&mut sim, t);
    assert_eq!(installed(&te).len(), 1, "{te:?}");
    assert!(received(&te).iter().any(|(_, p)| *p));
    let ike = peer_ike_events(&mut sim, &w);
    assert!(ike.iter().any(|e| matches!(e,
        IkeEvent::IkeSaEstablished { remote, .. } if remote.ip() == ip(me))));
}

// ------------------------------------------------------------------ the key transfer

#[test]
fn key_transfer_is_sealed_and_acknowledged() {
    let mut sim = Sim::new(15);
    let w = world(&mut sim, &Spec::default());
    let (spi_in, _) = fig4(&mut sim, &w);
    let msgs = w.lan_tap.seen();
    let seen = msgs
        .iter()
        .find(|p| p.transfer(Some(transfer::msg::INSTALL)))
        .unwrap();
    let install = &seen.payload;
    // From the peer's address to the terminal's: the proxy used no address of its own.
    assert_eq!((seen.src, seen.dst), (ip(PEER), ip(T1)));
    // Sealed: the keys do not appear on the wire; only the terminal's key opens it.
    let Transfer::Install(i) = Envelope::parse(install).unwrap().open(&key(1)).unwrap() else {
        panic!("not an install");
    };
    assert_eq!(i.child.spi_in, spi_in);
    let secret = i.child.keys_in.encryption.clone();
    assert!(!install.windows(secret.len()).any(|w| w == secret));
    assert!(Envelope::parse(install).unwrap().open(&key(2)).is_err());
    // Acknowledged by the terminal, toward the peer's address (the proxy takes it).
    let acks: Vec<_> = msgs
        .iter()
        .filter(|p| p.src == ip(T1) && p.dst == ip(PEER) && p.transfer(Some(transfer::msg::ACK)))
        .collect();
    assert_eq!(acks.len(), 1);
    let proxy = sim.actor::<InlineProxy>(w.proxy).unwrap();
    assert!(proxy.acknowledged(1, spi_in));
}

#[test]
fn replayed_key_transfer_is_refused() {
    let mut sim = Sim::new(16);
    let spec = Spec::default();
    let w = world(&mut sim, &spec);
    fig4(&mut sim, &w);
    let seen = w
        .lan_tap
        .seen()
        .into_iter()
        .find(|p| p.transfer(Some(transfer::msg::INSTALL)))
        .unwrap();
    let install = udp(PEER, 500, T1, 500, &seen.payload);
    let t = w.terminals[0];
    let deliver = |sim: &mut Sim, p: Vec<u8>| {
        sim.with_actor(t, |term: &mut Terminal, now| {
            term.handle_input(
                now,
                Input::Packet {
                    iface: IfaceId(0),
                    data: &p,
                },
            )
        })
        .unwrap()
    };
    // A replay to the same boot of the terminal installs nothing again.
    let sas = sim.actor::<Terminal>(t).unwrap().data_plane().sa_count();
    let _ = deliver(&mut sim, install.clone());
    assert_eq!(
        sim.actor::<Terminal>(t).unwrap().data_plane().sa_count(),
        sas
    );
    assert_eq!(sim.actor::<Terminal>(t).unwrap().stats().replayed, 1);
    assert!(installed(&terminal_events(&mut sim, t)).is_empty());
    // After a restart (a new boot nonce) it is refused outright.
    let fresh = terminal_actor(&sim, &spec, 1, T1, "rebooted");
    sim.with_actor(t, |term: &mut Terminal, _| *term = fresh)
        .unwrap();
    let r = deliver(&mut sim, install);
    assert_eq!(
        r,
        Err(deputy::Error::Transfer(
            deputy::keyx::transfer::TransferError::StaleNonce
        ))
    );
    assert_eq!(sim.actor::<Terminal>(t).unwrap().data_plane().sa_count(), 0);
}

#[test]
fn peer_rekey_reaches_the_terminal() {
    let mut sim = Sim::new(17);
    let w = fig3(&mut sim);
    let first = installed(&terminal_events(&mut sim, w.terminals[0]));
    assert_eq!(first.len(), 1);
    sim.command(w.peer, |p: &mut Peer, now| {
        match &mut p.ike {
            Ike::Initiator(i) => i.rekey_child(now)?,
            Ike::Responder(_) => unreachable!(),
        }
        p.pump(now);
        Ok(())
    })
    .unwrap();
    settle(&mut sim);
    let te = terminal_events(&mut sim, w.terminals[0]);
    let second = installed(&te);
    assert_eq!(second.len(), 1, "{te:?}");
    assert_eq!(
        second[0].2,
        Some(first[0].0),
        "the install names the SA it rekeys"
    );
    assert!(
        te.iter().any(|e| matches!(e,
        TerminalEvent::KeysDeleted { spis } if spis == &vec![first[0].0])),
        "{te:#?} {:#?}",
        proxy_events(&mut sim, &w)
    );
    // Traffic flows on the new SA.
    peer_send(&mut sim, &w, ping(PEER, T1, 4));
    sim.run_for(Duration::from_secs(1)).unwrap();
    let got = received(&terminal_events(&mut sim, w.terminals[0]));
    assert_eq!(got.len(), 1);
    assert!(got[0].1);
}

// ------------------------------------------------------------------ ¶0025

#[test]
fn management_requires_authentication() {
    use deputy::channel::{
        ChannelClient, ChannelEvent, ClientCertPolicy, ClientConfig, ServerConfig,
    };
    use deputy::crypto::cert::{CertificateAuthority, TrustStore};
    use deputy::keyx::inline::ManagementConfig;
    use deputy::keyx::inline::manage::{ManagementOp, Outcome, decode_answer};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::sync::Arc;

    const ANCHOR: deputy::UnixTime = deputy::UnixTime(1_800_000_000);
    let mut rng = ChaCha20Rng::seed_from_u64(25);
    let ca = CertificateAuthority::generate("operator CA", &mut rng);
    let trust = TrustStore::with(ca.certificate().clone());
    let proxy_id = ca
        .issue_identity("proxy.example", &[], ANCHOR, 86_400, &mut rng)
        .unwrap();
    let admin_id = ca
        .issue_identity("admin.example", &[], ANCHOR, 86_400, &mut rng)
        .unwrap();
    // The channel asks for a client certificate but lets clients without one finish the
    // handshake: their requests must then be refused by the proxy itself.
    let mut server = ServerConfig::with_certificate(proxy_id, ANCHOR);
    server.client_certs = ClientCertPolicy::Optional(trust.clone());
    let mut sim = Sim::new(25);
    let spec = Spec {
        management: Some((
            "192.0.2.254".into(),
            ManagementConfig {
                channel: Arc::new(server),
                max_sessions: 2,
            },
        )),
        ..Spec::default()
    };
    let w = world(&mut sim, &spec);
    let mgmt: std::net::SocketAddr = format!("192.0.2.254:{MGMT_PORT}").parse().unwrap();
    let discard_port_9 = ManagementOp::AddPolicy(Policy::new(
        Selector::parse("192.0.2.0/24", "198.51.100.10/32")
            .unwrap()
            .protocol(17)
            .dst_ports(PortRange::single(9)),
        Direction::Inbound,
        Action::Discard,
    ));
    let ask = |sim: &mut Sim, name: &str, addr: &str, cfg: ClientConfig| {
        let client = ChannelClient::new(
            Arc::new(cfg),
            format!("{addr}:0").parse().unwrap(),
            mgmt,
            Box::new(sim.rng(name)),
        );
        let node = sim.add_host(name, w.internet, ip(addr), client).unwrap();
        sim.command(node, |c: &mut ChannelClient, now| {
            c.connect(now)?;
            c.send(&discard_port_9.encode(1).unwrap())
        })
        .unwrap();
        sim.run_for(Duration::from_secs(2)).unwrap();
        let evs: Vec<ChannelEvent> = common::events(sim, node);
        evs.iter()
            .find_map(|e| match e {
                ChannelEvent::Received { data, .. } => Some(decode_answer(data).unwrap()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no answer: {evs:?}"))
    };
    // An anonymous client: the channel is up, the request is refused, nothing changes.
    let anonymous = ClientConfig::with_ca(trust.clone(), "proxy.example", ANCHOR);
    assert_eq!(
        ask(&mut sim, "anon", "192.0.2.60", anonymous),
        (1, Outcome::NotAuthenticated)
    );
    let pe = proxy_events(&mut sim, &w);
    assert!(pe.contains(&ProxyEvent::ManagementRefused));
    assert_eq!(
        sim.actor::<InlineProxy>(w.proxy)
            .unwrap()
            .policy()
            .entries()
            .len(),
        0
    );
    assert_eq!(proxy_stats(&mut sim, &w).management_refused, 1);
    // The administrator with a certificate of the operator's CA: the row is added.
    let admin = ClientConfig::with_client_certificate(trust, "proxy.example", admin_id, ANCHOR);
    assert_eq!(
        ask(&mut sim, "admin", "192.0.2.50", admin),
        (1, Outcome::Done)
    );
    let pe = proxy_events(&mut sim, &w);
    assert!(pe.iter().any(|e| matches!(
        e,
        ProxyEvent::ManagementChange {
            done: true,
            op: ManagementOp::AddPolicy(_),
            ..
        }
    )));
    // It takes effect: the peer's datagram to port 9 is dropped at S1.
    let before = proxy_stats(&mut sim, &w).policy_drops;
    inject_internet(&mut sim, &w, udp(PEER, 1000, T1, 9, b"x"));
    assert_eq!(proxy_stats(&mut sim, &w).policy_drops, before + 1);
    // A third session is over the bound of two: its stream is closed at once.
    let late = ChannelClient::new(
        Arc::new(ClientConfig::with_ca(
            TrustStore::with(ca.certificate().clone()),
            "proxy.example",
            ANCHOR,
        )),
        "192.0.2.70:0".parse().unwrap(),
        mgmt,
        Box::new(sim.rng("late")),
    );
    let late = sim
        .add_host("late", w.internet, ip("192.0.2.70"), late)
        .unwrap();
    sim.command(late, |c: &mut ChannelClient, now| {
        c.connect(now).map(|_| ())
    })
    .unwrap();
    sim.run_for(Duration::from_secs(2)).unwrap();
    assert!(sim.faults(w.proxy).unwrap().iter().any(|f| f.error
        == deputy::Error::CapacityExceeded {
            what: "management sessions",
            bound: 2
        }));
    // Management traffic is consumed: none of it reached the terminal side.
    assert!(
        w.lan_tap
            .seen()
            .iter()
            .all(|p| ![ip("192.0.2.50"), ip("192.0.2.60")].contains(&p.src))
    );
}

// ------------------------------------------------------------------ ¶0027, bounds

#[test]
fn bridge_and_in_gateway_placements() {
    // (a) A two-port bridge with no address (and the NIC placement, which is the same
    // two-interface actor between one terminal and its wire): the other tests' world.
    let mut sim = Sim::new(26);
    let w = world(&mut sim, &Spec::default());
    fig4(&mut sim, &w);
    assert!(
        sim.address(w.proxy).unwrap().is_none(),
        "the bridge has no address"
    );

    // (b) In series inside a gateway, with the gateway's NAPT after the proxy: the proxy
    // negotiates from the terminal's private address, IKE finds the NAT and moves to UDP
    // 4500, and the terminal's ESP travels in UDP through the NAPT.
    use deputy::sim::{NatConfig, RawIp};
    let mut sim = Sim::new(27);
    let spec = Spec {
        terminals: vec![(1, "192.168.1.10".into())],
        ..Spec::default()
    };
    let home = sim
        .add_network("home", "192.168.1.0/25", Default::default())
        .unwrap();
    let inside = sim
        .add_network("gw-inside", "192.168.1.128/25", Default::default())
        .unwrap();
    let internet = sim
        .add_network("internet", "192.0.2.0/24", Default::default())
        .unwrap();
    let proxy = proxy_actor(&sim, &spec);
    let proxy = sim.add_inline("proxy", inside, home, proxy).unwrap();
    sim.add_napt(
        "napt",
        inside,
        ip("192.168.1.129"),
        internet,
        ip("192.0.2.254"),
        NatConfig::default(),
    )
    .unwrap();
    let peer = Peer::new(
        &sim,
        Ike::Responder(Box::new(
            deputy::ikev2::Responder::new(
                deputy::ikev2::ResponderConfig::new(peer_ike(&spec)),
                Box::new(sim.rng("peer")),
                sim.now(),
            )
            .unwrap(),
        )),
    );
    let peer = sim.add_host("peer", internet, ip(PEER), peer).unwrap();
    sim.set_raw_ip(peer, RawIp::All).unwrap();
    let t = terminal_actor(&sim, &spec, 1, "192.168.1.10", "terminal");
    let t = sim
        .add_host("terminal", home, ip("192.168.1.10"), t)
        .unwrap();
    sim.set_raw_ip(t, RawIp::All).unwrap();
    let inside_tap = Tap::on(&mut sim, inside);
    assert!(matches!(
        terminal_send(&mut sim, t, ping("192.168.1.10", PEER, 1)),
        Sent::Held(_)
    ));
    settle(&mut sim);
    let te = terminal_events(&mut sim, t);
    assert_eq!(installed(&te).len(), 1, "{te:?}");
    assert!(
        received(&te).iter().any(|(_, protected)| *protected),
        "the echo reply came back through ESP in UDP: {te:?}"
    );
    let ike: Vec<IkeEvent> = sim
        .with_actor(peer, |p: &mut Peer, _| p.ike_events.clone())
        .unwrap();
    assert!(ike.iter().any(|e| matches!(e,
        IkeEvent::IkeSaEstablished { udp_encap: true, remote, .. } if remote.ip() == ip("192.0.2.254"))));
    // Everything the proxy put toward the gateway carries the terminal's address.
    let from_proxy: Vec<_> = inside_tap
        .seen()
        .into_iter()
        .filter(|p| p.src != ip(PEER))
        .collect();
    assert!(!from_proxy.is_empty());
    assert!(from_proxy.iter().all(|p| p.src == ip("192.168.1.10")));
    let _ = proxy;
}

/// Terminal 1 also protects its traffic to `peer`.
fn protect_toward(sim: &mut Sim, t: deputy::sim::NodeId, peer: &str) {
    let sel = Selector::parse("198.51.100.10/32", &format!("{peer}/32")).unwrap();
    sim.command(t, |term: &mut Terminal, _| {
        term.data_plane_mut()
            .add_policy(Policy::new(sel, Direction::Both, Action::Protect))
            .map(|_| ())
            .map_err(deputy::Error::from)
    })
    .unwrap();
}

#[test]
fn every_bound_is_enforced() {
    use deputy::sim::DatagramProbe;
    // The learned-address table: three hosts appear, two are remembered.
    let mut sim = Sim::new(28);
    let spec = Spec {
        bound: false,
        proxy: |c| c.max_learned = 2,
        ..Spec::default()
    };
    let w = world(&mut sim, &spec);
    sim.add_host("web", w.internet, ip("192.0.2.80"), DatagramProbe::new(53))
        .unwrap();
    for (i, a) in ["198.51.100.20", "198.51.100.21", "198.51.100.22"]
        .iter()
        .enumerate()
    {
        let h = sim
            .add_host(&format!("host{i}"), w.lan, ip(a), DatagramProbe::new(9))
            .unwrap();
        sim.command(h, |p: &mut DatagramProbe, _| {
            p.send("192.0.2.80:53".parse().unwrap(), b"hi".to_vec())
        })
        .unwrap();
    }
    sim.run_for(Duration::from_millis(100)).unwrap();
    assert_eq!(
        sim.actor::<InlineProxy>(w.proxy).unwrap().learned().count(),
        2
    );

    // The address store.
    let spec = Spec {
        proxy: |c| c.max_addresses = 1,
        ..Spec::default()
    };
    let mut sim = Sim::new(29);
    let w = world(&mut sim, &spec);
    let r = sim.command(w.proxy, |p: &mut InlineProxy, _| {
        p.bind(1, ip("198.51.100.99"))
    });
    assert_eq!(
        r,
        Err(deputy::Error::CapacityExceeded {
            what: "address store",
            bound: 1
        })
    );

    // Negotiations per terminal: the second peer's trigger is answered "busy".
    let spec = Spec {
        proxy: |c| c.max_negotiations_per_terminal = 1,
        ..Spec::default()
    };
    let mut sim = Sim::new(30);
    let w = world(&mut sim, &spec);
    sim.add_host(
        "silent",
        w.internet,
        ip("192.0.2.2"),
        DatagramProbe::new(500),
    )
    .unwrap();
    let t = w.terminals[0];
    protect_toward(&mut sim, t, "192.0.2.2");
    terminal_send(&mut sim, t, ping(T1, "192.0.2.2", 1));
    terminal_send(&mut sim, t, ping(T1, PEER, 1));
    sim.run_for(Duration::from_secs(2)).unwrap();
    let te = terminal_events(&mut sim, t);
    assert!(te.iter().any(|e| matches!(
        e,
        TerminalEvent::DelegationFailed {
            reason: deputy::keyx::transfer::FailureReason::Busy,
            ..
        }
    )));

    // Triggers at the terminal.
    let spec = Spec {
        terminal: |c| c.max_triggers = 1,
        ..Spec::default()
    };
    let mut sim = Sim::new(31);
    let w = world(&mut sim, &spec);
    let t = w.terminals[0];
    protect_toward(&mut sim, t, "192.0.2.2");
    terminal_send(&mut sim, t, ping(T1, PEER, 1));
    let second = sim.command(t, |term: &mut Terminal, now| {
        term.send(now, &ping(T1, "192.0.2.2", 1))
    });
    assert_eq!(
        second,
        Err(deputy::Error::CapacityExceeded {
            what: "pending triggers",
            bound: 1
        })
    );

    // The SA store: the second terminal's SA does not fit, and its IKE SA is deleted.
    let spec = Spec {
        terminals: vec![(1, T1.into()), (2, T2.into())],
        proxy: |c| c.max_sas = 1,
        ..Spec::default()
    };
    let mut sim = Sim::new(32);
    let w = world(&mut sim, &spec);
    terminal_send(&mut sim, w.terminals[0], ping(T1, PEER, 1));
    settle(&mut sim);
    terminal_send(&mut sim, w.terminals[1], ping(T2, PEER, 1));
    settle(&mut sim);
    assert!(sim.faults(w.proxy).unwrap().iter().any(|f| f.error
        == deputy::Error::CapacityExceeded {
            what: "SA store",
            bound: 1
        }));
    assert_eq!(
        sim.actor::<InlineProxy>(w.proxy)
            .unwrap()
            .stored_sas()
            .count(),
        1
    );
    assert!(installed(&terminal_events(&mut sim, w.terminals[1])).is_empty());

    // Messages waiting for a terminal's announce: the terminal never answers (everything
    // it sends is lost), the peer's IKE SA and then its rekey each bring an install.
    let spec = Spec {
        peer_initiates_to: Some(1),
        proxy: |c| c.max_pushes_per_terminal = 1,
        ..Spec::default()
    };
    let mut sim = Sim::new(33);
    let w = world(&mut sim, &spec);
    sim.add_fault(
        Fault::new(FaultAction::Drop)
            .on_network(w.lan)
            .src_ip(ip(T1)),
    )
    .unwrap();
    peer_start(&mut sim, &w);
    settle(&mut sim);
    sim.command(w.peer, |p: &mut Peer, now| {
        if let Ike::Initiator(i) = &mut p.ike {
            i.rekey_child(now)?;
        }
        p.pump(now);
        Ok(())
    })
    .unwrap();
    settle(&mut sim);
    assert!(sim.faults(w.proxy).unwrap().iter().any(|f| f.error
        == deputy::Error::CapacityExceeded {
            what: "messages waiting for a terminal's announce",
            bound: 1
        }));

    // The secure store.
    let mut store = deputy::keyx::inline::MemoryStore::new(1);
    let secrets = |id| deputy::keyx::inline::TerminalSecrets {
        delegation_key: key(id),
        ike: deputy::ikev2::IkeConfig::new(terminal_identity(id), PSK),
    };
    store.insert(1, secrets(1)).unwrap();
    assert_eq!(
        store.insert(2, secrets(2)),
        Err(deputy::Error::CapacityExceeded {
            what: "secure store",
            bound: 1
        })
    );
}

#[test]
fn secure_store_removed_fails_closed() {
    let mut sim = Sim::new(34);
    let w = world(&mut sim, &Spec::default());
    fig4(&mut sim, &w);
    // ¶0024: the removable device holding the terminals' secrets is pulled out.
    sim.command(w.proxy, |p: &mut InlineProxy, now| {
        p.store_mut().set_present(false);
        p.store_changed(now)
    })
    .unwrap();
    let proxy = sim.actor::<InlineProxy>(w.proxy).unwrap();
    assert_eq!(proxy.stored_sas().count(), 0);
    assert!(proxy_events(&mut sim, &w).contains(&ProxyEvent::SecureStoreUnavailable));
    // S15 misses now: the terminal's next start request negotiates nothing.
    let fresh = terminal_actor(&sim, &Spec::default(), 1, T1, "after-removal");
    sim.with_actor(w.terminals[0], |t: &mut Terminal, _| *t = fresh)
        .unwrap();
    terminal_send(&mut sim, w.terminals[0], ping(T1, PEER, 2));
    settle(&mut sim);
    assert!(negotiations(&proxy_events(&mut sim, &w)).is_empty());
    assert!(installed(&terminal_events(&mut sim, w.terminals[0])).is_empty());
}

#[test]
fn compat_mode_clear_start_never_leaves_in_clear() {
    // The terminal's own policy sends everything in clear; the proxy's protect row for its
    // traffic to the peer, in compat mode, makes the clear packet a start request (S13).
    let mut sim = Sim::new(39);
    let spec = Spec {
        protect: false,
        proxy: |c| {
            c.clear_start = true;
            c.policy.push(Policy::new(
                Selector::parse("198.51.100.10/32", "192.0.2.1/32").unwrap(),
                Direction::Outbound,
                Action::Protect,
            ));
        },
        ..Spec::default()
    };
    let w = world(&mut sim, &spec);
    let t = w.terminals[0];
    assert_eq!(terminal_send(&mut sim, t, ping(T1, PEER, 1)), Sent::Clear);
    settle(&mut sim);
    assert!(
        w.internet_tap.seen().iter().all(|p| p.protocol != 1),
        "never in clear"
    );
    assert_eq!(proxy_stats(&mut sim, &w).clear_starts, 1);
    assert_eq!(
        negotiations(&proxy_events(&mut sim, &w)),
        vec![(1, ip(PEER), true)]
    );
    assert_eq!(installed(&terminal_events(&mut sim, t)).len(), 1);
}

#[test]
fn s7_failure_is_told_to_the_terminal() {
    // The peer holds another pre-shared key: IKE_AUTH fails, nothing is stored, and the
    // terminal's trigger is answered with a failure (it stops waiting).
    let mut sim = Sim::new(40);
    let spec = Spec {
        ike: |c| {
            if c.local_id == deputy::ikev2::Identity::Fqdn("peer.example".into()) {
                *c = deputy::ikev2::IkeConfig::new(c.local_id.clone(), b"another key");
            }
        },
        ..Spec::default()
    };
    let w = world(&mut sim, &spec);
    let t = w.terminals[0];
    terminal_send(&mut sim, t, ping(T1, PEER, 1));
    settle(&mut sim);
    let te = terminal_events(&mut sim, t);
    assert!(
        te.iter().any(|e| matches!(
            e,
            TerminalEvent::DelegationFailed {
                reason: deputy::keyx::transfer::FailureReason::AuthenticationFailed,
                ..
            }
        )),
        "{te:?}"
    );
    assert!(installed(&te).is_empty());
    assert_eq!(
        sim.actor::<InlineProxy>(w.proxy)
            .unwrap()
            .stored_sas()
            .count(),
        0
    );
}

#[test]
fn s3_ikev1_dropped_esp_in_udp_and_keepalives_forwarded() {
    let mut sim = Sim::new(41);
    let w = world(&mut sim, &Spec::default());
    // IKEv1 (major version 1) toward the terminal: dropped, counted.
    let mut v1 = vec![0u8; 28];
    v1[..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    v1[17] = 0x10;
    inject_internet(&mut sim, &w, udp(PEER, 500, T1, 500, &v1));
    // ESP in UDP (a non-zero SPI) and a NAT keepalive on 4500 are the terminal's business.
    inject_internet(
        &mut sim,
        &w,
        udp(PEER, 4500, T1, 4500, &[0, 0, 1, 0, 0, 0, 0, 1, 9, 9]),
    );
    inject_internet(&mut sim, &w, udp(PEER, 4500, T1, 4500, &[0xff]));
    sim.run_for(Duration::from_millis(10)).unwrap();
    let stats = proxy_stats(&mut sim, &w);
    assert_eq!((stats.ikev1_drops, stats.forwarded_in), (1, 2));
    assert!(negotiations(&proxy_events(&mut sim, &w)).is_empty());
}

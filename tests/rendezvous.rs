//! Seed 002 through the simulator: the rendezvous server, the request-issuing and the
//! request-accepting device behind NAPT routers, every step S202–S209 and the refusals.
//!
//! The worlds come from `deputy::sim::scenario` (the seed's addresses: issuer LAN
//! behind 4.17.168.2, acceptor LAN behind 202.204.16.13, server 130.74.23.6:1200).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use deputy::Instant;
use deputy::channel::{AlertCode, ChannelClient, ChannelError, ChannelEvent, ClientConfig};
use deputy::crypto::cert::TrustStore;
use deputy::rendezvous::messages::{self, Fetch, Refused, Register};
use deputy::rendezvous::{
    Acceptor, BackoffConfig, DerivedRegistrationKeys, DeviceId, Directory, Issuer, IssuerConfig,
    IssuerParams, PeerFailure, RendezvousEvent, RendezvousServer, RequestRefusal, ServerStats,
};
use deputy::sim::scenario::{
    ACCEPTOR_PUBLIC, ANCHOR, DEVICE, ISSUER_PORT, ISSUER_PUBLIC, Outcome, SERVER_IP, SERVER_NAME,
    World, WorldConfig, server_udp,
};
use deputy::sim::{DatagramProbe, LinkConfig, Mapping, NatConfig, NodeId, Sim, TraceKind};
use deputy::wire::{Limits, Message};

mod common;
use common::{Build, probe_send_from};

const PASSWORD: &[u8] = b"2133-secret";

fn world(sim: &mut Sim, cfg: WorldConfig) -> World {
    let w = World::build(sim, cfg).unwrap();
    // S202: let the acceptor register.
    sim.run_for(Duration::from_secs(1)).unwrap();
    w
}

/// The issuer asks for the device with the right password (S203 on) and waits up to
/// `secs` for the outcome.
fn request(sim: &mut Sim, w: &World, secs: u64) -> Outcome {
    let session = w.connect(sim, PASSWORD).unwrap();
    w.wait(sim, session, Duration::from_secs(secs)).unwrap()
}

/// The device is still reachable: a request connects within 30 s.
fn assert_connects(sim: &mut Sim, w: &World) {
    let outcome = request(sim, w, 30);
    assert!(matches!(outcome, Outcome::Connected { .. }), "{outcome}");
}

fn events(sim: &Sim, node: NodeId) -> Vec<RendezvousEvent> {
    World::events(sim, node)
}

fn stats(sim: &Sim, w: &World) -> ServerStats {
    sim.actor::<RendezvousServer>(w.server).unwrap().stats()
}

fn registered_at(sim: &Sim, w: &World) -> Option<SocketAddr> {
    sim.actor::<RendezvousServer>(w.server)
        .unwrap()
        .lookup(DEVICE, sim.now())
        .map(|e| e.addr)
}

fn received(sim: &Sim, node: NodeId) -> Vec<Vec<u8>> {
    events(sim, node)
        .into_iter()
        .filter_map(|e| match e {
            RendezvousEvent::PeerData { data, .. } => Some(data),
            _ => None,
        })
        .collect()
}

/// A host on the internet that can send anything from anywhere.
fn rogue(sim: &mut Sim, w: &World, ip: [u8; 4]) -> NodeId {
    sim.probe("rogue", w.internet, IpAddr::from(ip), 40_000)
}

fn send_from(sim: &mut Sim, node: NodeId, from: SocketAddr, data: Vec<u8>) {
    probe_send_from(sim, node, from, server_udp(), data);
}

/// Every UDP datagram in the capture: (source, destination, payload).
fn udp_datagrams(sim: &Sim) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    let pcap = sim.pcap_bytes();
    let le = pcap[..4] == [0x4d, 0x3c, 0xb2, 0xa1] || pcap[..4] == [0xd4, 0xc3, 0xb2, 0xa1];
    let u32_at = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32_at(&pcap[at + 8..]) as usize;
        let p = &pcap[at + 16..at + 16 + len];
        at += 16 + len;
        if p[0] >> 4 != 4 || p[9] != 17 {
            continue;
        }
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let ip = |o: usize| IpAddr::from([p[o], p[o + 1], p[o + 2], p[o + 3]]);
        let port = |o: usize| u16::from_be_bytes([p[ihl + o], p[ihl + o + 1]]);
        out.push((
            SocketAddr::new(ip(12), port(0)),
            SocketAddr::new(ip(16), port(2)),
            p[ihl + 8..].to_vec(),
        ));
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn full_flow_s202_to_s209() {
    // The seed's own setting: the issuer's router has a static entry 5000 → :1600 (Fig. 6).
    let mut sim = Sim::new(1);
    let w = world(
        &mut sim,
        WorldConfig {
            static_mapping: true,
            ..WorldConfig::default()
        },
    );

    // S202: the server recorded the acceptor's public address and port (Fig. 9), and
    // told the acceptor what it saw.
    let entry = registered_at(&sim, &w).expect("registered");
    assert_eq!(entry.ip(), IpAddr::V4(ACCEPTOR_PUBLIC));
    assert!(events(&sim, w.acceptor).contains(&RendezvousEvent::Registered { public: entry }));
    assert!(
        events(&sim, w.server).contains(&RendezvousEvent::DeviceRegistered {
            device: DEVICE,
            addr: entry
        })
    );

    // S203–S208.
    let session = w.connect(&mut sim, PASSWORD).unwrap();
    let outcome = w.wait(&mut sim, session, Duration::from_secs(30)).unwrap();
    assert_eq!(outcome, Outcome::Connected { attempt: 1 });

    // S204–S205: found, notified at the registered address, fetched over the device's
    // own channel (S206), password checked (S207).
    let server_events = events(&sim, w.server);
    assert!(server_events.contains(&RendezvousEvent::RequestForwarded {
        request: session,
        device: DEVICE
    }));
    assert!(events(&sim, w.acceptor).iter().any(|e| matches!(
        e,
        RendezvousEvent::ConnectionRequested { request, issuer }
            if *request == session && issuer.ip() == IpAddr::V4(ISSUER_PUBLIC)
    )));
    let acceptor = sim.actor::<Acceptor>(w.acceptor).unwrap().stats();
    assert_eq!(
        (acceptor.notices, acceptor.offers, acceptor.password_checks),
        (1, 1, 1)
    );
    // S208: the acceptor's communication request went to the issuer's static mapping.
    let path = events(&sim, w.acceptor)
        .into_iter()
        .find_map(|e| match e {
            RendezvousEvent::PeerConnected { remote, .. } => Some(remote),
            _ => None,
        })
        .unwrap();
    assert_eq!(path, SocketAddr::new(IpAddr::V4(ISSUER_PUBLIC), 5000));

    // S209: data both ways, end to end.
    sim.command(w.issuer, |i: &mut Issuer, now| {
        i.send(now, session, b"hello, 2133")
    })
    .unwrap();
    sim.command(w.acceptor, |a: &mut Acceptor, now| {
        a.send(now, session, b"hello, 1051")
    })
    .unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(received(&sim, w.acceptor), vec![b"hello, 2133".to_vec()]);
    assert_eq!(received(&sim, w.issuer), vec![b"hello, 1051".to_vec()]);

    // Both devices reported the outcome; the server forgot the request.
    assert!(
        events(&sim, w.server).contains(&RendezvousEvent::RequestFinished {
            request: session,
            connected: true
        })
    );
    assert_eq!(stats(&sim, &w).connected, 1);
    let server = sim.actor::<RendezvousServer>(w.server).unwrap();
    assert_eq!(server.requests_in_progress(), 0);
    // A graceful close reaches the other side.
    sim.command(w.issuer, |i: &mut Issuer, now| i.close(now, session))
        .unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    assert!(events(&sim, w.acceptor).contains(&RendezvousEvent::PeerClosed { session }));
    for node in [w.server, w.issuer, w.acceptor] {
        assert!(
            sim.faults(node).unwrap().is_empty(),
            "{:?}",
            sim.faults(node)
        );
    }
}

#[test]
fn registration_refreshes_after_public_address_change() {
    let mut sim = Sim::new(2);
    let w = world(&mut sim, WorldConfig::default());
    let before = registered_at(&sim, &w).unwrap();
    assert_eq!(before.ip(), IpAddr::V4(ACCEPTOR_PUBLIC));

    // The ISP renumbers the acceptor's router (PPP/DHCP, ¶0019): every binding is gone.
    let renumbered: IpAddr = "202.204.17.99".parse().unwrap();
    let router = w.acceptor_router.unwrap();
    sim.set_public_ip(router, renumbered).unwrap();
    // The next keepalive (20–26 s) registers from the new address (S202A).
    sim.run_for(Duration::from_secs(27)).unwrap();
    let after = registered_at(&sim, &w).unwrap();
    assert_eq!(after.ip(), renumbered);
    assert!(
        events(&sim, w.server).contains(&RendezvousEvent::DeviceMoved {
            device: DEVICE,
            from: before,
            to: after
        })
    );
    assert!(events(&sim, w.acceptor).contains(&RendezvousEvent::Registered { public: after }));
    assert_eq!(stats(&sim, &w).moves, 1);

    // Keepalives kept coming 20–26 s apart with jitter.
    let sends: Vec<Instant> = sim
        .trace()
        .iter()
        .filter(|e| {
            matches!(e.kind, TraceKind::Hop { .. })
                && e.label.contains("Register ")
                && e.packet.dst == IpAddr::V4(SERVER_IP)
                && e.packet.src.to_string().starts_with("192.168.")
        })
        .map(|e| e.time)
        .collect();
    assert!(sends.len() >= 2);
    for pair in sends.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_secs(20) && gap <= Duration::from_secs(26),
            "{gap:?}"
        );
    }

    // And the notice (S205) follows the device to its new address.
    assert_connects(&mut sim, &w);
}

#[test]
fn registration_expires() {
    let mut sim = Sim::new(3);
    let w = world(&mut sim, WorldConfig::default());
    assert!(registered_at(&sim, &w).is_some());
    // The acceptor goes silent (its LAN is cut).
    sim.set_link(w.acceptor_lan.unwrap(), LinkConfig::default().loss(1.0))
        .unwrap();
    // Still there after 80 s (lifetime 90 s from the last registration at ~0 s) …
    sim.run_for(Duration::from_secs(80)).unwrap();
    assert!(registered_at(&sim, &w).is_some());
    // … gone after it, and reclaimed from memory.
    sim.run_for(Duration::from_secs(15)).unwrap();
    assert!(registered_at(&sim, &w).is_none());
    let server = sim.actor::<RendezvousServer>(w.server).unwrap();
    assert_eq!(server.directory().len(), 0);
    // A request for it is now refused as unknown (S204).
    let outcome = request(&mut sim, &w, 10);
    assert_eq!(outcome, Outcome::Refused(RequestRefusal::UnknownDevice));
}

#[test]
fn spoofed_registration_is_refused() {
    let mut sim = Sim::new(4);
    let w = world(&mut sim, WorldConfig::default());
    let genuine = registered_at(&sim, &w).unwrap();
    let attacker = rogue(&mut sim, &w, [66, 6, 6, 6]);
    let from: SocketAddr = "66.6.6.6:40000".parse().unwrap();
    let server_ms = ANCHOR.0 * 1000 + sim.now().as_nanos() / 1_000_000;

    // Anyone can claim device 2133's ID, but without its key the MAC is wrong.
    let wrong_key = DerivedRegistrationKeys::new([0xEE; 32]).device_key(DEVICE);
    let forged = Register {
        device: DEVICE,
        timestamp_ms: server_ms + 5000,
        nonce: [1; 16],
    }
    .encode(wrong_key.as_bytes())
    .unwrap();
    send_from(&mut sim, attacker, from, forged.clone());
    // Another device's key does not do either.
    let other_key = w.keys.device_key(DeviceId(1051));
    let borrowed = Register {
        device: DEVICE,
        timestamp_ms: server_ms + 5000,
        nonce: [2; 16],
    }
    .encode(other_key.as_bytes())
    .unwrap();
    send_from(&mut sim, attacker, from, borrowed);
    // Garbage is refused as malformed.
    send_from(
        &mut sim,
        attacker,
        from,
        b"DP\x01\x30 not a registration".to_vec(),
    );
    sim.run_for(Duration::from_secs(1)).unwrap();

    let s = stats(&sim, &w);
    assert_eq!(s.refused.bad_mac, 2);
    assert_eq!(s.refused.malformed, 1);
    // The directory still points at the genuine device, and the attacker heard nothing.
    assert_eq!(registered_at(&sim, &w), Some(genuine));
    let heard = sim
        .with_actor(attacker, |p: &mut DatagramProbe, _| p.received().len())
        .unwrap();
    assert_eq!(heard, 0);
    // The genuine device is still reachable.
    assert_connects(&mut sim, &w);
}

#[test]
fn replayed_registration_is_refused() {
    let mut sim = Sim::new(5);
    let w = world(&mut sim, WorldConfig::default());
    let genuine = registered_at(&sim, &w).unwrap();
    // An eavesdropper on the internet copies the acceptor's registration …
    let captured = udp_datagrams(&sim)
        .into_iter()
        .find(|(src, dst, payload)| {
            src.ip() == IpAddr::V4(ACCEPTOR_PUBLIC)
                && *dst == server_udp()
                && payload.get(3) == Some(&messages::REGISTER)
        })
        .map(|(_, _, payload)| payload)
        .expect("a registration on the wire");
    let attacker = rogue(&mut sim, &w, [66, 6, 6, 7]);

    // … and replays it at once, from its own address and from the device's.
    send_from(
        &mut sim,
        attacker,
        "66.6.6.7:40000".parse().unwrap(),
        captured.clone(),
    );
    send_from(&mut sim, attacker, genuine, captured.clone());
    sim.run_for(Duration::from_millis(100)).unwrap();
    assert_eq!(stats(&sim, &w).refused.replayed, 2);
    assert_eq!(registered_at(&sim, &w), Some(genuine));

    // Minutes later it is outside the clock-skew window as well.
    sim.run_for(Duration::from_secs(120)).unwrap();
    send_from(
        &mut sim,
        attacker,
        "66.6.6.7:40000".parse().unwrap(),
        captured,
    );
    sim.run_for(Duration::from_millis(100)).unwrap();
    let s = stats(&sim, &w);
    assert_eq!(s.refused.stale, 1);
    assert_eq!(s.refused.replayed, 2);
    // The device stayed where it is, registering all along.
    assert_eq!(registered_at(&sim, &w).map(|a| a.ip()), Some(genuine.ip()));
    assert!(s.registrations >= 5);
}

#[test]
fn unknown_device_is_refused() {
    let mut sim = Sim::new(6);
    let w = world(&mut sim, WorldConfig::default());
    let session = sim
        .command(w.issuer, |i: &mut Issuer, now| {
            i.connect(now, DeviceId(9999), PASSWORD)
        })
        .unwrap();
    let outcome = w.wait(&mut sim, session, Duration::from_secs(10)).unwrap();
    assert_eq!(outcome, Outcome::Refused(RequestRefusal::UnknownDevice));
    let s = stats(&sim, &w);
    assert_eq!((s.unknown_device_requests, s.notices), (1, 0));
    assert!(
        events(&sim, w.server).contains(&RendezvousEvent::RequestRefused {
            request: session,
            device: DeviceId(9999),
            reason: RequestRefusal::UnknownDevice
        })
    );
    // The acceptor was never bothered.
    assert_eq!(
        sim.actor::<Acceptor>(w.acceptor).unwrap().stats().notices,
        0
    );
}

#[test]
fn acceptor_channel_requires_device_authentication() {
    let mut sim = Sim::new(7);
    let w = world(&mut sim, WorldConfig::default());
    let trust = TrustStore::with(w.ca.certificate().clone());
    let device_port: SocketAddr = SocketAddr::new(IpAddr::V4(SERVER_IP), 1300);

    // The genuine device cannot be reached for now (its LAN is down), so the request
    // waits at the server.
    sim.set_link(w.acceptor_lan.unwrap(), LinkConfig::default().loss(1.0))
        .unwrap();
    let session = w.connect(&mut sim, PASSWORD).unwrap();
    sim.run_for(Duration::from_millis(500)).unwrap();

    // 1. Without a device certificate the channel itself refuses (S206 requires one).
    let anonymous = sim.host(
        "anonymous",
        w.internet,
        "66.6.6.8",
        ChannelClient::new(
            Arc::new(ClientConfig::with_ca(trust.clone(), SERVER_NAME, ANCHOR)),
            "66.6.6.8:0".parse().unwrap(),
            device_port,
            Box::new(sim.rng("anonymous")),
        ),
    );
    sim.command(anonymous, |c: &mut ChannelClient, now| c.connect(now))
        .unwrap();
    // 2. A genuine certificate for *another* device gets a channel, but not the request
    // — even knowing its id (notices travel in the clear).
    let mut rng = sim.rng("other device");
    let other =
        w.ca.issue_identity(
            &DeviceId(9999).certificate_name(),
            &[],
            ANCHOR,
            86_400,
            &mut rng,
        )
        .unwrap();
    let impostor = sim.host(
        "impostor",
        w.internet,
        "66.6.6.9",
        ChannelClient::new(
            Arc::new(ClientConfig::with_client_certificate(
                trust,
                SERVER_NAME,
                other,
                ANCHOR,
            )),
            "66.6.6.9:0".parse().unwrap(),
            device_port,
            Box::new(sim.rng("impostor")),
        ),
    );
    sim.command(impostor, |c: &mut ChannelClient, now| {
        c.connect(now)?;
        for device in [DEVICE, DeviceId(9999)] {
            c.send(
                &Fetch {
                    request: session,
                    device,
                }
                .encode()?,
            )?;
        }
        Ok::<_, deputy::Error>(())
    })
    .unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();

    let channel_events = common::events::<ChannelEvent>;
    let anon = channel_events(&mut sim, anonymous);
    assert!(
        anon.iter().any(|e| matches!(
            e,
            ChannelEvent::Failed {
                error: ChannelError::PeerAlert(AlertCode::CertificateRequired),
                ..
            }
        )),
        "{anon:?}"
    );
    let answers: Vec<RequestRefusal> = channel_events(&mut sim, impostor)
        .into_iter()
        .filter_map(|e| match e {
            ChannelEvent::Received { data, .. } => {
                let msg = Message::decode(&data, &Limits::default()).ok()?;
                Refused::decode(&msg, &Limits::default())
                    .ok()
                    .map(|r| r.reason)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        answers,
        vec![RequestRefusal::NotAuthorized, RequestRefusal::NotAuthorized]
    );
    assert_eq!(stats(&sim, &w).unauthorized_fetches, 2);

    // The genuine device, once back, gets the request and connects.
    sim.set_link(
        w.acceptor_lan.unwrap(),
        LinkConfig::with_latency(Duration::from_millis(1)),
    )
    .unwrap();
    let outcome = w.wait(&mut sim, session, Duration::from_secs(30)).unwrap();
    assert!(matches!(outcome, Outcome::Connected { .. }), "{outcome}");
}

#[test]
fn wrong_password_is_refused_and_backs_off() {
    let mut sim = Sim::new(8);
    let w = world(
        &mut sim,
        WorldConfig {
            // The device as a whole backs off after two wrong passwords (default five).
            backoff: BackoffConfig {
                device_threshold: 2,
                ..BackoffConfig::default()
            },
            ..WorldConfig::default()
        },
    );
    let checks = |sim: &Sim| sim.actor::<Acceptor>(w.acceptor).unwrap().stats();

    // S207: a wrong password is refused; the issuer must wait 1 s.
    let first = w.connect(&mut sim, b"guess-1").unwrap();
    let outcome = w.wait(&mut sim, first, Duration::from_secs(10)).unwrap();
    assert_eq!(
        outcome,
        Outcome::Refused(RequestRefusal::WrongPassword {
            retry_after: Duration::from_secs(1)
        })
    );
    assert_eq!(
        (checks(&sim).password_checks, checks(&sim).wrong_passwords),
        (1, 1)
    );
    assert!(events(&sim, w.acceptor).iter().any(|e| matches!(
        e,
        RendezvousEvent::PasswordRefused { issuer, reason: RequestRefusal::WrongPassword { .. }, .. }
            if *issuer == IpAddr::V4(ISSUER_PUBLIC)
    )));

    // Trying again at once is refused without the password being checked — by the
    // server, which remembers the device's answer, so the device is not even woken.
    let second = w.connect(&mut sim, b"guess-2").unwrap();
    let outcome = w.wait(&mut sim, second, Duration::from_secs(10)).unwrap();
    assert!(
        matches!(
            outcome,
            Outcome::Refused(RequestRefusal::RateLimited { .. })
        ),
        "{outcome}"
    );
    assert_eq!(checks(&sim).password_checks, 1);
    assert_eq!(checks(&sim).notices, 1);
    assert_eq!(stats(&sim, &w).rate_limited_requests, 1);

    // After the wait, each further wrong password from this issuer doubles it.
    let mut waits = Vec::new();
    for guess in [b"guess-3", b"guess-4"] {
        sim.run_for(Duration::from_secs(5)).unwrap();
        let s = w.connect(&mut sim, guess).unwrap();
        match w.wait(&mut sim, s, Duration::from_secs(10)).unwrap() {
            Outcome::Refused(RequestRefusal::WrongPassword { retry_after }) => {
                waits.push(retry_after)
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!(waits, [Duration::from_secs(2), Duration::from_secs(4)]);
    assert_eq!(checks(&sim).wrong_passwords, 3);

    // Three wrong passwords on the device: it now backs off for everyone. Another issuer
    // (a host with a global address) is refused unchecked, device-wide …
    let trust = TrustStore::with(w.ca.certificate().clone());
    let other = sim.host(
        "other-issuer",
        w.internet,
        "8.117.12.109",
        Issuer::new(
            IssuerConfig::new(IssuerParams {
                trust,
                server_name: SERVER_NAME.into(),
                server_stream: SocketAddr::new(IpAddr::V4(SERVER_IP), ISSUER_PORT),
                server_udp: server_udp(),
                local: "8.117.12.109:1600".parse().unwrap(),
                time_anchor: ANCHOR,
            }),
            Box::new(sim.rng("other issuer")),
        ),
    );
    let refused = |sim: &Sim, session| {
        events(sim, other).into_iter().find_map(|e| match e {
            RendezvousEvent::Refused { request, reason } if request == session => Some(reason),
            _ => None,
        })
    };
    let attempt = |sim: &mut Sim| {
        let s = sim
            .command(other, |i: &mut Issuer, now| {
                i.connect(now, DEVICE, b"guess-5")
            })
            .unwrap();
        let deadline = sim.now() + Duration::from_secs(10);
        sim.run_until_cond(deadline, |sim| refused(sim, s).is_some())
            .unwrap();
        refused(sim, s).unwrap()
    };
    assert!(matches!(
        attempt(&mut sim),
        RequestRefusal::RateLimited { .. }
    ));
    assert_eq!(checks(&sim).refused_unchecked, 1);
    assert_eq!(checks(&sim).password_checks, 3);
    // … and the server now refuses anyone for this device without waking it.
    let notices = checks(&sim).notices;
    assert!(matches!(
        attempt(&mut sim),
        RequestRefusal::RateLimited { .. }
    ));
    assert_eq!(checks(&sim).notices, notices);

    // The right password, once the back-off is over, connects.
    sim.run_for(Duration::from_secs(5)).unwrap();
    assert_connects(&mut sim, &w);
}

#[test]
fn password_never_reaches_anyone_but_the_acceptor() {
    let secret: &[u8] = b"correct horse battery staple";
    let mut sim = Sim::new(9);
    let w = world(
        &mut sim,
        WorldConfig {
            password: secret.to_vec(),
            ..WorldConfig::default()
        },
    );
    // A wrong guess and the right password, both through the server.
    let wrong = w
        .connect(&mut sim, b"correct horse battery stable")
        .unwrap();
    let outcome = w.wait(&mut sim, wrong, Duration::from_secs(10)).unwrap();
    assert!(matches!(
        outcome,
        Outcome::Refused(RequestRefusal::WrongPassword { .. })
    ));
    sim.run_for(Duration::from_secs(2)).unwrap();
    let right = w.connect(&mut sim, secret).unwrap();
    let outcome = w.wait(&mut sim, right, Duration::from_secs(30)).unwrap();
    // Only the acceptor could tell them apart, so only it saw the password.
    assert!(matches!(outcome, Outcome::Connected { .. }), "{outcome}");
    assert_eq!(
        sim.actor::<Acceptor>(w.acceptor)
            .unwrap()
            .stats()
            .password_checks,
        2
    );

    // Not on any link: every packet the simulator carried, on every hop.
    let pcap = sim.pcap_bytes();
    assert!(!pcap.is_empty() && !sim.pcap_truncated());
    assert!(!contains(pcap, secret));
    assert!(!contains(pcap, b"correct horse"));
    // Not in anything the server reported or holds.
    let server_view = format!(
        "{:?} {:?} {:?}",
        sim.peek_events(w.server).unwrap(),
        sim.actor::<RendezvousServer>(w.server).unwrap(),
        sim.faults(w.server).unwrap()
    );
    assert!(!server_view.contains("correct horse"));
    assert!(!contains(server_view.as_bytes(), secret));
    // Nor in the acceptor's or issuer's debug views.
    for node in [w.issuer, w.acceptor] {
        let view = format!("{:?}", sim.peek_events(node).unwrap());
        assert!(!view.contains("correct horse"));
    }
    let acceptor_view = format!("{:?}", sim.actor::<Acceptor>(w.acceptor).unwrap());
    assert!(!acceptor_view.contains("correct horse"));
}

#[test]
fn data_flows_peer_to_peer_not_via_server() {
    let mut sim = Sim::new(10);
    let w = world(&mut sim, WorldConfig::default());
    let session = w.connect(&mut sim, PASSWORD).unwrap();
    let outcome = w.wait(&mut sim, session, Duration::from_secs(30)).unwrap();
    assert!(matches!(outcome, Outcome::Connected { .. }), "{outcome}");
    sim.run_for(Duration::from_secs(1)).unwrap();

    let bytes_via = |sim: &Sim, from: usize, pred: &dyn Fn(IpAddr, IpAddr) -> bool| -> usize {
        sim.trace()[from..]
            .iter()
            .filter(|e| matches!(e.kind, TraceKind::Hop { .. }))
            .filter(|e| pred(e.packet.src, e.packet.dst))
            .map(|e| e.packet.len)
            .sum()
    };
    let mark = sim.trace().len();
    // 256 KiB from the issuer to the acceptor, 64 KiB back, in 8 KiB messages.
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8 ^ 0x5a).collect();
    let mut sent = 0;
    for round in 0..32 {
        for (node, n) in [
            (w.issuer, 1),
            (w.acceptor, if round % 4 == 0 { 1 } else { 0 }),
        ] {
            for _ in 0..n {
                if node == w.issuer {
                    sim.with_actor(node, |i: &mut Issuer, now| i.send(now, session, &pattern))
                } else {
                    sim.with_actor(node, |a: &mut Acceptor, now| a.send(now, session, &pattern))
                }
                .unwrap()
                .unwrap();
                sent += pattern.len();
            }
        }
        sim.run_for(Duration::from_millis(200)).unwrap();
    }
    sim.run_for(Duration::from_secs(2)).unwrap();
    assert_eq!(received(&sim, w.acceptor).len(), 32);
    assert_eq!(received(&sim, w.issuer).len(), 8);
    assert!(received(&sim, w.acceptor).iter().all(|m| *m == pattern));

    let server = IpAddr::V4(SERVER_IP);
    let direct = bytes_via(&sim, mark, &|s, d| {
        let ends = [IpAddr::V4(ISSUER_PUBLIC), IpAddr::V4(ACCEPTOR_PUBLIC)];
        ends.contains(&s) && ends.contains(&d)
    });
    let via_server = bytes_via(&sim, mark, &|s, d| s == server || d == server);
    assert!(
        direct > sent,
        "{direct} bytes on the direct path for {sent} sent"
    );
    // The server saw at most keepalives and the closing of the request streams.
    assert!(via_server < 2_000, "{via_server} bytes touched the server");
    // End to end: the data never appears in clear on any link.
    assert!(!contains(sim.pcap_bytes(), &pattern[..64]));
}

#[test]
fn hole_punching_without_static_mapping() {
    // Typical home routers on both sides (EIM, APDF), no static mapping: both devices
    // punch at once, started RTT/2 apart through the server's Sync.
    let mut sim = Sim::new(11);
    let w = world(&mut sim, WorldConfig::default());
    let session = w.connect(&mut sim, PASSWORD).unwrap();
    let outcome = w.wait(&mut sim, session, Duration::from_secs(30)).unwrap();
    assert_eq!(outcome, Outcome::Connected { attempt: 1 });
    // Both sides punched, and their first punches left their LANs at nearly the same
    // moment: the issuer waited RTT/2 after its Sync, the acceptor went when Sync came.
    let first_punch = |lan_ip: &str| {
        sim.trace()
            .iter()
            .find(|e| {
                e.label.contains("Punch ")
                    && matches!(e.kind, TraceKind::Hop { .. })
                    && e.packet.src.to_string() == lan_ip
            })
            .map(|e| e.time)
            .expect("punched")
    };
    let (issuer_first, acceptor_first) = (first_punch("192.168.1.11"), first_punch("192.168.1.3"));
    let apart = if issuer_first > acceptor_first {
        issuer_first - acceptor_first
    } else {
        acceptor_first - issuer_first
    };
    assert!(apart < Duration::from_millis(5), "{apart:?} apart");
    // The path is the two routers' public addresses, both ways.
    for (node, remote) in [(w.issuer, ACCEPTOR_PUBLIC), (w.acceptor, ISSUER_PUBLIC)] {
        assert!(events(&sim, node).iter().any(|e| matches!(
            e,
            RendezvousEvent::PeerConnected { remote: r, .. } if r.ip() == IpAddr::V4(remote)
        )));
    }

    // A symmetric NAT on the issuer's side defeats plain punching; the second attempt
    // (birthday technique) gets through the acceptor's endpoint-independent NAT.
    let mut sim = Sim::new(12);
    let w = world(
        &mut sim,
        WorldConfig {
            issuer_nat: Some(NatConfig::symmetric()),
            ..WorldConfig::default()
        },
    );
    let session = w.connect(&mut sim, PASSWORD).unwrap();
    let outcome = w.wait(&mut sim, session, Duration::from_secs(60)).unwrap();
    assert_eq!(outcome, Outcome::Connected { attempt: 2 });

    // Symmetric on both sides: three attempts, then a clean, typed failure on both.
    let mut sim = Sim::new(13);
    let w = world(
        &mut sim,
        WorldConfig {
            issuer_nat: Some(NatConfig::symmetric()),
            acceptor_nat: Some(NatConfig::symmetric()),
            ..WorldConfig::default()
        },
    );
    let session = w.connect(&mut sim, PASSWORD).unwrap();
    let outcome = w.wait(&mut sim, session, Duration::from_secs(90)).unwrap();
    assert_eq!(
        outcome,
        Outcome::Failed(PeerFailure::HolePunchFailed { attempts: 3 })
    );
    sim.run_for(Duration::from_secs(15)).unwrap();
    for node in [w.issuer, w.acceptor] {
        assert!(events(&sim, node).contains(&RendezvousEvent::PeerFailed {
            session,
            reason: PeerFailure::HolePunchFailed { attempts: 3 }
        }));
    }
    assert!(
        events(&sim, w.server).contains(&RendezvousEvent::RequestFinished {
            request: session,
            connected: false
        })
    );
}

#[test]
fn global_address_devices() {
    // ¶0106: either device (or both) with a global address; ¶0108: NAT without port
    // translation.
    let cases = [
        ("global issuer", None, Some(NatConfig::default())),
        ("global acceptor", Some(NatConfig::default()), None),
        ("both global", None, None),
        (
            "NAT without port translation",
            Some(NatConfig {
                port_preservation: true,
                ..NatConfig::default()
            }),
            Some(NatConfig {
                port_preservation: true,
                mapping: Mapping::AddressAndPortDependent,
                ..NatConfig::default()
            }),
        ),
    ];
    for (i, (name, issuer_nat, acceptor_nat)) in cases.into_iter().enumerate() {
        let mut sim = Sim::new(20 + i as u64);
        let w = world(
            &mut sim,
            WorldConfig {
                issuer_nat,
                acceptor_nat: acceptor_nat.clone(),
                ..WorldConfig::default()
            },
        );
        let registered = registered_at(&sim, &w).unwrap();
        if acceptor_nat.is_none() || name.contains("translation") {
            assert_eq!(
                registered,
                SocketAddr::new(IpAddr::V4(ACCEPTOR_PUBLIC), 2000),
                "{name}"
            );
        }
        let session = w.connect(&mut sim, PASSWORD).unwrap();
        let outcome = w.wait(&mut sim, session, Duration::from_secs(60)).unwrap();
        assert!(
            matches!(outcome, Outcome::Connected { .. }),
            "{name}: {outcome}"
        );
        sim.command(w.issuer, |i: &mut Issuer, now| {
            i.send(now, session, name.as_bytes())
        })
        .unwrap();
        sim.run_for(Duration::from_secs(1)).unwrap();
        assert_eq!(
            received(&sim, w.acceptor),
            vec![name.as_bytes().to_vec()],
            "{name}"
        );
    }
}

#[test]
fn registration_flood_is_bounded() {
    let mut sim = Sim::new(30);
    let w = world(
        &mut sim,
        WorldConfig {
            directory_capacity: 64,
            max_sources: 256,
            ..WorldConfig::default()
        },
    );
    let genuine = registered_at(&sim, &w).unwrap();
    let flooder = rogue(&mut sim, &w, [66, 6, 6, 10]);
    let server_ms = |sim: &Sim| ANCHOR.0 * 1000 + sim.now().as_nanos() / 1_000_000;
    let spoofed = |n: u32| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x6440_0000 + n)), 5000);

    // 1. 20,000 forged registrations for random device IDs, each from its own spoofed
    // address, over 20 s.
    let forger = DerivedRegistrationKeys::new([0x66; 32]);
    for burst in 0..20u32 {
        let forged_at = server_ms(&sim);
        sim.command(flooder, |p: &mut DatagramProbe, _| {
            for k in 0..1000u32 {
                let n = burst * 1000 + k;
                let device = DeviceId(u64::from(n) * 7919);
                let data = Register {
                    device,
                    timestamp_ms: forged_at,
                    nonce: [n as u8; 16],
                }
                .encode(forger.device_key(device).as_bytes())?;
                p.send_from(spoofed(n), server_udp(), data)?;
            }
            Ok::<_, deputy::Error>(())
        })
        .unwrap();
        sim.run_for(Duration::from_secs(1)).unwrap();
        let server = sim.actor::<RendezvousServer>(w.server).unwrap();
        let (sources, bound) = server.rate_table();
        assert!(sources <= bound && bound == 256, "{sources}/{bound}");
        assert!(server.directory().len() <= 64);
    }
    let s = stats(&sim, &w);
    assert_eq!(s.refused.bad_mac, 20_000);
    // The genuine device kept registering through the flood and is still reachable.
    assert_eq!(registered_at(&sim, &w), Some(genuine));
    assert!(s.registrations >= 1);

    // 2. A flood of *authentic* registrations (a botnet of real devices, or a leaked
    // master key) fills the directory to its bound and no further.
    let now_ms = server_ms(&sim);
    for chunk in 0..2u64 {
        sim.command(flooder, |p: &mut DatagramProbe, _| {
            for k in 0..100u64 {
                let device = DeviceId(100_000 + chunk * 100 + k);
                let data = Register {
                    device,
                    timestamp_ms: now_ms,
                    nonce: [k as u8; 16],
                }
                .encode(w.keys.device_key(device).as_bytes())?;
                p.send_from(
                    spoofed(30_000 + (chunk * 100 + k) as u32),
                    server_udp(),
                    data,
                )?;
            }
            Ok::<_, deputy::Error>(())
        })
        .unwrap();
        sim.run_for(Duration::from_millis(100)).unwrap();
    }
    let server = sim.actor::<RendezvousServer>(w.server).unwrap();
    assert_eq!(server.directory().len(), 64);
    assert_eq!(server.stats().refused.directory_full, 200 - 63);
    assert_eq!(registered_at(&sim, &w), Some(genuine));

    // Still reachable through it all.
    assert_connects(&mut sim, &w);
}

/// Issue 13 item 3: a record damaged in transit on the acceptor's stream to the server
/// (the handshake, the certificate, the Fetch) kills that channel; the acceptor opens a
/// new one after its back-off (1 s) and fetches again, the server takes the fetch back
/// (nothing was offered yet), and the request connects. Before, the acceptor dropped
/// its pending fetch with the stream, the server's notices were ignored as repeats, and
/// the request ended `DeviceUnreachable`.
#[test]
fn item_3_a_damaged_record_on_the_device_channel_costs_no_connection() {
    use deputy::sim::fault::{Fault, FaultAction};
    use deputy::sim::packet::PROTO_TCP;
    for n in 0..3 {
        let mut sim = Sim::new(31 + n);
        let w = world(&mut sim, WorldConfig::default());
        // The n-th data segment the acceptor's router puts on the internet towards the
        // server's device port, its last byte flipped.
        let fault = Fault::new(FaultAction::Rewrite(std::rc::Rc::new(|p: &[u8]| {
            let mut p = p.to_vec();
            if let Some(last) = p.last_mut() {
                *last ^= 0x5a;
            }
            p
        })))
        .on_network(w.internet)
        .protocol(PROTO_TCP)
        .dst_port(1300)
        .when(|p| !p.payload.is_empty())
        .nth(n);
        let id = sim.add_fault(fault).unwrap();
        let outcome = request(&mut sim, &w, 60);
        assert_eq!(sim.fault_stats(id).unwrap().applied, 1, "segment {n}");
        assert!(
            matches!(outcome, Outcome::Connected { .. }),
            "segment {n}: {outcome}"
        );
        let reconnects = sim
            .actor::<deputy::rendezvous::Acceptor>(w.acceptor)
            .unwrap()
            .stats()
            .reconnects;
        assert_eq!(reconnects, 1, "segment {n}");
    }
}

/// A device that heard the notice but whose stream to the server takes a few TCP
/// retransmissions to open (its first three SYNs lost: it connects 7 s later) still
/// fetches its request: the server waits `fetch_wait` (15 s) after its last notice.
/// Before, it refused the request `DeviceUnreachable` as soon as its five notices (5 s)
/// were out, while the device was on its way (`tests/loss.rs` found it at 3% loss).
#[test]
fn a_fetch_slowed_by_tcp_retransmissions_is_waited_for() {
    use deputy::sim::fault::{Fault, FaultAction};
    use deputy::sim::packet::PROTO_TCP;
    let mut sim = Sim::new(41);
    let w = world(&mut sim, WorldConfig::default());
    let fault = Fault::new(FaultAction::Drop)
        .on_network(w.internet)
        .protocol(PROTO_TCP)
        .dst_port(1300)
        .nth(0)
        .count(3);
    let id = sim.add_fault(fault).unwrap();
    let outcome = request(&mut sim, &w, 60);
    assert_eq!(sim.fault_stats(id).unwrap().applied, 3);
    assert!(matches!(outcome, Outcome::Connected { .. }), "{outcome}");
}

/// Issue 13 item 3, the issuer's side: a record damaged in transit on the issuer's stream
/// to the server before its password is sealed (the handshake, its Finished, the
/// ConnectRequest) kills that channel; the issuer sends the request again on a new stream
/// after its back-off (1 s) and it connects. Before, the request ended
/// `Refused(ProtocolError)`. Once the password went out sealed it is not sent again: a
/// damaged SealedPassword record still ends the request, typed.
#[test]
fn item_3_a_damaged_record_on_the_issuer_channel_costs_no_connection() {
    use deputy::sim::fault::{Fault, FaultAction};
    use deputy::sim::packet::PROTO_TCP;
    for n in 0..4 {
        let mut sim = Sim::new(51 + n);
        let w = world(&mut sim, WorldConfig::default());
        let fault = Fault::new(FaultAction::Rewrite(std::rc::Rc::new(|p: &[u8]| {
            let mut p = p.to_vec();
            if let Some(last) = p.last_mut() {
                *last ^= 0x5a;
            }
            p
        })))
        .on_network(w.internet)
        .protocol(PROTO_TCP)
        .dst_port(1201)
        .when(|p| !p.payload.is_empty())
        .nth(n);
        let id = sim.add_fault(fault).unwrap();
        let outcome = request(&mut sim, &w, 60);
        assert_eq!(sim.fault_stats(id).unwrap().applied, 1, "segment {n}");
        match n {
            0..=2 => assert!(
                matches!(outcome, Outcome::Connected { .. }),
                "segment {n}: {outcome}"
            ),
            _ => assert!(
                matches!(outcome, Outcome::Refused(RequestRefusal::ProtocolError)),
                "segment {n}: {outcome}"
            ),
        }
    }
    // The other way: the server's AcceptorHello to the issuer damaged. The device had
    // fetched and answered; the server tells it the issuer is gone (it drops its answer
    // and forgets the request id), and the request sent again is noticed and connects.
    let mut sim = Sim::new(61);
    let w = world(&mut sim, WorldConfig::default());
    let fault = Fault::new(FaultAction::flip(40))
        .on_network(w.internet)
        .protocol(PROTO_TCP)
        .src_port(1201)
        .when(|p| p.payload.len() > 300 && p.payload.len() < 600)
        .nth(0);
    let id = sim.add_fault(fault).unwrap();
    let outcome = request(&mut sim, &w, 60);
    assert_eq!(sim.fault_stats(id).unwrap().applied, 1);
    assert!(matches!(outcome, Outcome::Connected { .. }), "{outcome}");
    assert!(events(&sim, w.acceptor).iter().any(|e| matches!(
        e,
        RendezvousEvent::Refused {
            reason: RequestRefusal::IssuerGone,
            ..
        }
    )));
}

/// The fault hook on a seed 002 flow: the first UDP datagram the flow puts on the
/// internet (the device's registration toward the server) is dropped; the flow recovers
/// by itself (the device registers again) and the issuer still reaches the device.
#[test]
fn one_dropped_datagram_of_the_flow_is_recovered() {
    use deputy::sim::fault::{Fault, FaultAction};
    use deputy::sim::packet::PROTO_UDP;
    let mut sim = Sim::new(71);
    let w = world(&mut sim, WorldConfig::default());
    let fault = Fault::new(FaultAction::Drop)
        .on_network(w.internet)
        .protocol(PROTO_UDP)
        .nth(0);
    let id = sim.add_fault(fault).unwrap();
    let outcome = request(&mut sim, &w, 60);
    assert_eq!(sim.fault_stats(id).unwrap().applied, 1);
    assert!(matches!(outcome, Outcome::Connected { .. }), "{outcome}");
}

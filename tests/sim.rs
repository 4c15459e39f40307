//! The network simulator: determinism, NAPT behaviours, streams, middleboxes, recording.

use std::net::SocketAddr;
use std::time::Duration;

use deputy::sim::fault::{Fault, FaultAction, FaultId, FaultStats, MAX_FAULTS};
use deputy::sim::packet::{self, PROTO_ESP, PROTO_IPIP};
use deputy::sim::scenario::{Outcome, World as Seed002, WorldConfig};
use deputy::sim::{
    AllowRule, DatagramProbe, DropReason, Filtering, GatewayConfig, LinkConfig, Mapping, NatConfig,
    NetworkId, NodeId, PacketProbe, PortAllocation, Proto, RawIp, Sim, SimActorError, SimError,
    StreamProbe, TraceKind,
};
use deputy::{Actor, Error, Event, IfaceId, Instant, Output};

mod common;
use common::{Build, ip, probe_send, probe_send_from};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const SERVER: &str = "203.0.113.80:3478";
const PUBLIC: &str = "203.0.113.1";

/// home (192.168.1.0/24) — NAPT 203.0.113.1 — internet (203.0.113.0/24) with a server,
/// a second server and a stranger.
struct World {
    sim: Sim,
    home: NetworkId,
    internet: NetworkId,
    nat: NodeId,
    alice: NodeId,
    server: NodeId,
    server2: NodeId,
    stranger: NodeId,
}

fn world(seed: u64, cfg: NatConfig, link: LinkConfig) -> World {
    let mut sim = Sim::new(seed);
    let home = sim.net_with("home", "192.168.1.0/24", link);
    let internet = sim.net_with("internet", "203.0.113.0/24", link);
    let nat = sim
        .add_napt("router", home, ip("192.168.1.1"), internet, ip(PUBLIC), cfg)
        .unwrap();
    let alice = sim.probe("alice", home, "192.168.1.10", 4000);
    let server = sim.probe("server", internet, "203.0.113.80", 3478);
    let server2 = sim.probe("server2", internet, "203.0.113.81", 3478);
    let stranger = sim.probe("stranger", internet, "203.0.113.99", 9999);
    World {
        sim,
        home,
        internet,
        nat,
        alice,
        server,
        server2,
        stranger,
    }
}

/// `world` on default links, its server swapped for one that echoes. Swapped after the
/// build (not built echoing) so the world's nodes, and so every trace, stay those of `world`.
fn echo_world(seed: u64, cfg: NatConfig) -> World {
    let mut w = world(seed, cfg, LinkConfig::default());
    w.sim
        .with_actor(w.server, |p: &mut DatagramProbe, _| {
            *p = DatagramProbe::new(3478).echoing();
        })
        .unwrap();
    w
}

fn send(sim: &mut Sim, host: NodeId, to: &str, data: &[u8]) {
    probe_send(sim, host, sa(to), data);
}

fn send_from(sim: &mut Sim, host: NodeId, from: &str, to: SocketAddr, data: &[u8]) {
    probe_send_from(sim, host, sa(from), to, data);
}

fn received(sim: &Sim, host: NodeId) -> Vec<(SocketAddr, Vec<u8>)> {
    sim.actor::<DatagramProbe>(host)
        .unwrap()
        .received()
        .iter()
        .map(|r| (r.from, r.data.clone()))
        .collect()
}

fn drops_at(sim: &Sim, node: NodeId) -> Vec<DropReason> {
    sim.drops()
        .filter_map(|e| match e.kind {
            TraceKind::Drop { at, reason, .. } if at == node => Some(reason),
            _ => None,
        })
        .collect()
}

/// A call on `node`'s stream probe that must succeed.
fn on_stream<R>(
    sim: &mut Sim,
    node: NodeId,
    f: impl FnOnce(&mut StreamProbe) -> Result<R, Error>,
) -> R {
    sim.command(node, |p: &mut StreamProbe, _| f(p)).unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------- determinism

fn lossy_run(seed: u64) -> Sim {
    let link = LinkConfig::with_latency(ms(10))
        .jitter(ms(5))
        .loss(0.2)
        .duplicate(0.2)
        .reorder(0.2, ms(30));
    let mut w = world(seed, NatConfig::default(), link);
    for i in 0..40u8 {
        send(&mut w.sim, w.alice, SERVER, &[i; 20]);
        w.sim.run_for(ms(3)).unwrap();
    }
    w.sim.run_for(Duration::from_secs(1)).unwrap();
    w.sim
}

#[test]
fn same_seed_same_trace() {
    let a = lossy_run(42);
    let b = lossy_run(42);
    assert!(a.trace().len() > 40);
    assert_eq!(a.trace(), b.trace());
    assert_eq!(a.pcap_bytes(), b.pcap_bytes());
    assert_eq!(a.mermaid(), b.mermaid());
    // The link model really did something.
    assert!(a.drops().any(|e| e.drop_reason() == Some(DropReason::Loss)));
    let hops_to_server = a
        .trace()
        .iter()
        .filter(|e| matches!(e.kind, TraceKind::Hop { to, .. } if to.index() == 2))
        .count();
    assert!(hops_to_server > 0);

    let c = lossy_run(43);
    assert_ne!(a.trace(), c.trace());
}

#[test]
fn rng_is_derived_from_seed_and_label() {
    use rand_core::Rng;
    let a = Sim::new(1);
    let b = Sim::new(1);
    let c = Sim::new(2);
    assert_eq!(a.rng("x").next_u64(), b.rng("x").next_u64());
    assert_ne!(a.rng("x").next_u64(), a.rng("y").next_u64());
    assert_ne!(a.rng("x").next_u64(), c.rng("x").next_u64());
    // It is what actors take.
    let _boxed: deputy::Rng = Box::new(a.rng("actor"));
}

// ---------------------------------------------------------------- NAPT filtering

#[test]
fn stranger_is_dropped_by_apdm_napt() {
    let mut w = echo_world(1, NatConfig::symmetric());
    send(&mut w.sim, w.alice, SERVER, b"hello");
    w.sim.run_for(ms(20)).unwrap();

    // The reply to the outbound mapping passes.
    let got = received(&w.sim, w.alice);
    assert_eq!(got, vec![(sa(SERVER), b"hello".to_vec())]);
    let mapped = received(&w.sim, w.server)[0].0;
    assert_eq!(mapped.ip(), ip(PUBLIC));

    // A stranger aiming at the same public endpoint is dropped, with the reason recorded.
    send(&mut w.sim, w.stranger, &mapped.to_string(), b"let me in");
    w.sim.run_for(ms(20)).unwrap();
    assert_eq!(received(&w.sim, w.alice).len(), 1);
    assert_eq!(drops_at(&w.sim, w.nat), vec![DropReason::Filtered]);
    let drop = w.sim.drops().next().unwrap();
    assert_eq!(drop.packet.src, ip("203.0.113.99"));
    assert_eq!(drop.packet.dst_port, Some(mapped.port()));
    assert!(w.sim.mermaid().contains("filtered by NAT"));
}

#[test]
fn expired_binding_drops_traffic() {
    let mut w = world(2, NatConfig::default(), LinkConfig::default());
    send(&mut w.sim, w.alice, SERVER, b"out");
    w.sim.run_for(ms(10)).unwrap();
    let mapped = received(&w.sim, w.server)[0].0;

    // Within the 30 s UDP timeout the reply passes (and, inbound, does not refresh).
    w.sim.run_until(Instant::from_secs(20)).unwrap();
    send_from(&mut w.sim, w.server, SERVER, mapped, b"early");
    w.sim.run_for(ms(10)).unwrap();
    assert_eq!(received(&w.sim, w.alice).len(), 1);

    w.sim.run_until(Instant::from_secs(31)).unwrap();
    assert!(w.sim.bindings(w.nat).unwrap().is_empty());
    send_from(&mut w.sim, w.server, SERVER, mapped, b"late");
    w.sim.run_for(ms(10)).unwrap();
    assert_eq!(received(&w.sim, w.alice).len(), 1);
    assert_eq!(drops_at(&w.sim, w.nat), vec![DropReason::BindingExpired]);
}

#[test]
fn keepalives_hold_the_binding_and_its_port() {
    let mut w = world(3, NatConfig::default(), LinkConfig::default());
    w.sim
        .with_actor(w.alice, |p: &mut DatagramProbe, _| {
            *p =
                DatagramProbe::new(4000).every(sa(SERVER), Duration::from_secs(20), b"ka".to_vec());
        })
        .unwrap();
    w.sim.run_until(Instant::from_secs(95)).unwrap();
    let seen = received(&w.sim, w.server);
    assert_eq!(seen.len(), 5, "keepalives at 0, 20, 40, 60, 80 s");
    assert!(seen.iter().all(|(from, _)| *from == seen[0].0));
    send_from(&mut w.sim, w.server, SERVER, seen[0].0, b"still there?");
    w.sim.run_for(ms(10)).unwrap();
    assert_eq!(received(&w.sim, w.alice).len(), 1);
}

/// The public endpoints alice gets toward server:3478, server:3479 and server2:3478.
fn mapped_ports(mapping: Mapping) -> [SocketAddr; 3] {
    let mut w = world(
        4,
        NatConfig::new(mapping, Filtering::EndpointIndependent),
        LinkConfig::default(),
    );
    send(&mut w.sim, w.alice, SERVER, b"1");
    send(&mut w.sim, w.alice, "203.0.113.80:3479", b"2");
    send(&mut w.sim, w.alice, "203.0.113.81:3478", b"3");
    w.sim.run_for(ms(10)).unwrap();
    let at_server = received(&w.sim, w.server);
    let at_server2 = received(&w.sim, w.server2);
    assert_eq!(at_server.len(), 2);
    assert_eq!(at_server2.len(), 1);
    let find = |data: &[u8]| {
        at_server
            .iter()
            .chain(&at_server2)
            .find(|(_, d)| d == data)
            .unwrap()
            .0
    };
    [find(b"1"), find(b"2"), find(b"3")]
}

#[test]
fn mapping_behaviours() {
    let [a, b, c] = mapped_ports(Mapping::EndpointIndependent);
    assert!(a == b && b == c, "{a} {b} {c}");
    let [a, b, c] = mapped_ports(Mapping::AddressDependent);
    assert!(a == b && b != c, "{a} {b} {c}");
    let [a, b, c] = mapped_ports(Mapping::AddressAndPortDependent);
    assert!(a != b && b != c && a != c, "{a} {b} {c}");
    assert!([a, b, c].iter().all(|s| s.ip() == ip(PUBLIC)));
}

/// Which of (server from 3478, server from 3479, stranger) get through to alice.
fn filtered(filtering: Filtering) -> ([bool; 3], Vec<DropReason>) {
    let mut w = world(
        5,
        NatConfig::new(Mapping::EndpointIndependent, filtering),
        LinkConfig::default(),
    );
    send(&mut w.sim, w.alice, SERVER, b"open");
    w.sim.run_for(ms(10)).unwrap();
    let mapped = received(&w.sim, w.server)[0].0;
    send_from(&mut w.sim, w.server, SERVER, mapped, b"a");
    send_from(&mut w.sim, w.server, "203.0.113.80:3479", mapped, b"b");
    send_from(&mut w.sim, w.stranger, "203.0.113.99:9999", mapped, b"c");
    w.sim.run_for(ms(10)).unwrap();
    let got = received(&w.sim, w.alice);
    let has = |d: &[u8]| got.iter().any(|(_, x)| x == d);
    ([has(b"a"), has(b"b"), has(b"c")], drops_at(&w.sim, w.nat))
}

#[test]
fn filtering_behaviours() {
    assert_eq!(
        filtered(Filtering::EndpointIndependent),
        ([true, true, true], vec![])
    );
    assert_eq!(
        filtered(Filtering::AddressDependent),
        ([true, true, false], vec![DropReason::Filtered])
    );
    assert_eq!(
        filtered(Filtering::AddressAndPortDependent),
        (
            [true, false, false],
            vec![DropReason::Filtered, DropReason::Filtered]
        )
    );
}

#[test]
fn unsolicited_traffic_without_mapping_is_dropped() {
    let mut w = world(6, NatConfig::full_cone(), LinkConfig::default());
    send(&mut w.sim, w.stranger, "203.0.113.1:4000", b"anyone?");
    // Nor can the outside reach the private addresses behind the router.
    send(&mut w.sim, w.stranger, "192.168.1.10:4000", b"direct");
    w.sim.run_for(ms(10)).unwrap();
    assert!(received(&w.sim, w.alice).is_empty());
    assert_eq!(drops_at(&w.sim, w.stranger), vec![DropReason::NoRoute]);
    assert_eq!(drops_at(&w.sim, w.nat), vec![DropReason::NoMapping]);
}

#[test]
fn port_preservation_and_sequential_allocation() {
    let cfg = NatConfig {
        port_preservation: true,
        ..NatConfig::default()
    };
    let mut w = world(7, cfg, LinkConfig::default());
    let bob = w.sim.probe("bob", w.home, "192.168.1.11", 4000);
    send(&mut w.sim, w.alice, SERVER, b"a");
    w.sim.run_for(ms(5)).unwrap();
    send(&mut w.sim, bob, SERVER, b"b");
    w.sim.run_for(ms(10)).unwrap();
    let seen = received(&w.sim, w.server);
    assert_eq!(
        seen[0].0,
        sa("203.0.113.1:4000"),
        "NAT without port translation"
    );
    assert_ne!(seen[1].0.port(), 4000, "the port was taken: translated");

    let cfg = NatConfig {
        port_allocation: PortAllocation::Sequential,
        port_min: 20000,
        mapping: Mapping::AddressAndPortDependent,
        ..NatConfig::default()
    };
    let mut w = world(7, cfg, LinkConfig::default());
    for port in 1..=3 {
        send(&mut w.sim, w.alice, &format!("203.0.113.80:{port}"), b"x");
    }
    w.sim.run_for(ms(10)).unwrap();
    let ports: Vec<u16> = received(&w.sim, w.server)
        .iter()
        .map(|r| r.0.port())
        .collect();
    assert_eq!(ports, vec![20000, 20001, 20002]);
}

#[test]
fn static_mapping_forwards_udp_and_tcp() {
    let mut w = world(8, NatConfig::symmetric(), LinkConfig::default());
    w.sim
        .add_static_mapping(w.nat, Proto::Udp, 5000, sa("192.168.1.10:4000"))
        .unwrap();
    assert_eq!(
        w.sim
            .add_static_mapping(w.nat, Proto::Udp, 5000, sa("192.168.1.10:4001")),
        Err(SimError::PortInUse(5000))
    );
    send(&mut w.sim, w.stranger, "203.0.113.1:5000", b"port forward");
    w.sim.run_for(ms(10)).unwrap();
    assert_eq!(
        received(&w.sim, w.alice),
        vec![(sa("203.0.113.99:9999"), b"port forward".to_vec())]
    );
    // Alice's traffic leaves through the mapped port.
    send(&mut w.sim, w.alice, "203.0.113.99:9999", b"reply");
    w.sim.run_for(ms(10)).unwrap();
    assert_eq!(received(&w.sim, w.stranger)[0].0, sa("203.0.113.1:5000"));

    // TCP: a web server behind the NAT, reachable on public port 8080 only.
    let web = w
        .sim
        .host("web", w.home, "192.168.1.20", StreamProbe::new().echoing());
    w.sim.listen(web, 80).unwrap();
    w.sim
        .add_static_mapping(w.nat, Proto::Tcp, 8080, sa("192.168.1.20:80"))
        .unwrap();
    let client = w
        .sim
        .host("client", w.internet, "203.0.113.50", StreamProbe::new());
    let (ok, blocked) = w
        .sim
        .with_actor(client, |p: &mut StreamProbe, _| {
            (
                p.connect(sa("203.0.113.1:8080")).unwrap(),
                p.connect(sa("203.0.113.1:8081")).unwrap(),
            )
        })
        .unwrap();
    w.sim.run_for(ms(50)).unwrap();
    on_stream(&mut w.sim, client, |p| p.send(ok, b"GET /".to_vec()));
    w.sim.run_for(Duration::from_secs(120)).unwrap();
    let c = w.sim.actor::<StreamProbe>(client).unwrap();
    assert_eq!(c.received(ok), b"GET /");
    assert!(c.stream(ok).unwrap().closed_at.is_none());
    // The SYN to an unmapped port is dropped every time; the connect finally fails.
    let failed = c.stream(blocked).unwrap();
    assert!(failed.opened_at.is_none());
    assert!(failed.closed_at.is_some());
    assert!(
        drops_at(&w.sim, w.nat)
            .iter()
            .all(|r| *r == DropReason::NoMapping)
    );
    assert_eq!(
        drops_at(&w.sim, w.nat).len(),
        6,
        "SYN and its 5 retransmissions"
    );
}

fn hairpin(on: bool) -> (Vec<(SocketAddr, Vec<u8>)>, Vec<DropReason>) {
    let cfg = NatConfig {
        hairpinning: on,
        ..NatConfig::full_cone()
    };
    let mut w = world(9, cfg, LinkConfig::default());
    let bob = w.sim.probe("bob", w.home, "192.168.1.11", 4000);
    // Bob registers with the server, which learns his public endpoint …
    send(&mut w.sim, bob, SERVER, b"register");
    w.sim.run_for(ms(10)).unwrap();
    let bob_public = received(&w.sim, w.server)[0].0;
    // … and Alice, behind the same NAT, uses it.
    send(&mut w.sim, w.alice, &bob_public.to_string(), b"hi bob");
    w.sim.run_for(ms(10)).unwrap();
    (received(&w.sim, bob), drops_at(&w.sim, w.nat))
}

#[test]
fn hairpinning_on_and_off() {
    let (got, drops) = hairpin(true);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].0.ip(),
        ip(PUBLIC),
        "bob sees alice's public endpoint"
    );
    assert_eq!(got[0].1, b"hi bob");
    assert!(drops.is_empty());

    let (got, drops) = hairpin(false);
    assert!(got.is_empty());
    assert_eq!(drops, vec![DropReason::HairpinDisabled]);
}

#[test]
fn binding_table_is_bounded() {
    let cfg = NatConfig {
        max_bindings: 3,
        ..NatConfig::symmetric()
    };
    let mut w = world(10, cfg, LinkConfig::default());
    for port in 1..=5 {
        send(&mut w.sim, w.alice, &format!("203.0.113.80:{port}"), b"x");
    }
    w.sim.run_for(ms(10)).unwrap();
    assert_eq!(received(&w.sim, w.server).len(), 3);
    assert_eq!(w.sim.bindings(w.nat).unwrap().len(), 3);
    assert_eq!(
        drops_at(&w.sim, w.nat),
        vec![DropReason::TableFull, DropReason::TableFull]
    );
    // Once the old bindings expire there is room again.
    w.sim.run_until(Instant::from_secs(31)).unwrap();
    send(&mut w.sim, w.alice, "203.0.113.80:9", b"y");
    w.sim.run_for(ms(10)).unwrap();
    assert_eq!(received(&w.sim, w.server).len(), 4);
}

// ---------------------------------------------------------------- streams

fn stream_world(seed: u64, link: LinkConfig) -> (World, NodeId, NodeId) {
    let mut w = world(seed, NatConfig::default(), link);
    let client = w
        .sim
        .host("client", w.home, "192.168.1.30", StreamProbe::new());
    let web = w.sim.host(
        "web",
        w.internet,
        "203.0.113.8",
        StreamProbe::new().echoing(),
    );
    w.sim.listen(web, 443).unwrap();
    (w, client, web)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn stream_through_napt() {
    let (mut w, client, web) = stream_world(11, LinkConfig::with_latency(ms(5)));
    let id = on_stream(&mut w.sim, client, |p| p.connect(sa("203.0.113.8:443")));
    w.sim.run_for(ms(100)).unwrap();
    let data = pattern(10_000);
    let chunk = data.clone();
    on_stream(&mut w.sim, client, |p| p.send(id, chunk));
    w.sim.run_for(Duration::from_secs(1)).unwrap();

    let server_side = w.sim.actor::<StreamProbe>(web).unwrap();
    let accepted = server_side.accepted();
    assert_eq!(accepted.len(), 1);
    let rec = server_side.stream(accepted[0]).unwrap();
    assert_eq!(
        rec.remote.unwrap().ip(),
        ip(PUBLIC),
        "the server sees the NAT"
    );
    assert_eq!(rec.received, data);
    let c = w.sim.actor::<StreamProbe>(client).unwrap();
    assert_eq!(c.received(id), data, "echoed back in order");
    assert!(c.stream(id).unwrap().opened_at.is_some());

    // Real segments: more than one data segment each way, all MSS-bounded.
    let max_tcp = w
        .sim
        .trace()
        .iter()
        .filter(|e| e.packet.protocol == 6)
        .map(|e| e.packet.len)
        .max()
        .unwrap();
    assert!(max_tcp <= 1400 + 40);

    // Closing: the server hears StreamClosed, the NAT's TCP binding stays until it times out.
    on_stream(&mut w.sim, client, |p| p.close(id));
    w.sim.run_for(Duration::from_secs(1)).unwrap();
    let rec = w
        .sim
        .actor::<StreamProbe>(web)
        .unwrap()
        .stream(accepted[0])
        .cloned();
    assert!(rec.unwrap().closed_at.is_some());
    assert_eq!(w.sim.open_streams(client).unwrap(), 0);
    assert_eq!(w.sim.open_streams(web).unwrap(), 0);
    // Closing what the peer already closed is harmless; sending on it is a recorded fault.
    on_stream(&mut w.sim, web, |p| p.close(accepted[0]));
    assert!(w.sim.faults(web).unwrap().is_empty());
    on_stream(&mut w.sim, web, |p| p.send(accepted[0], b"late".to_vec()));
    assert_eq!(
        w.sim.faults(web).unwrap()[0].error,
        Error::UnknownStream(accepted[0])
    );
    assert!(w.sim.faults(client).unwrap().is_empty());
}

#[test]
fn streams_survive_loss_duplication_and_reordering() {
    let link = LinkConfig::with_latency(ms(5))
        .jitter(ms(3))
        .loss(0.1)
        .duplicate(0.1)
        .reorder(0.1, ms(20));
    let (mut w, client, web) = stream_world(12, link);
    let id = on_stream(&mut w.sim, client, |p| p.connect(sa("203.0.113.8:443")));
    let data = pattern(50_000);
    let chunk = data.clone();
    // Queued before the stream is up: sent once it connects.
    on_stream(&mut w.sim, client, |p| p.send(id, chunk));
    w.sim.run_for(Duration::from_secs(60)).unwrap();
    let c = w.sim.actor::<StreamProbe>(client).unwrap();
    assert_eq!(c.received(id).len(), data.len());
    assert_eq!(c.received(id), data);
    assert!(
        w.sim
            .drops()
            .any(|e| e.drop_reason() == Some(DropReason::Loss))
    );
    let _ = web;
}

#[test]
fn connect_to_closed_port_is_reset() {
    let (mut w, client, _web) = stream_world(13, LinkConfig::default());
    let id = on_stream(&mut w.sim, client, |p| p.connect(sa("203.0.113.8:444")));
    w.sim.run_for(ms(20)).unwrap();
    let r = w
        .sim
        .actor::<StreamProbe>(client)
        .unwrap()
        .stream(id)
        .cloned()
        .unwrap();
    assert!(r.opened_at.is_none());
    assert!(
        r.closed_at.unwrap() < Instant::from_millis(20),
        "RST, not a timeout"
    );
    assert!(
        w.sim.trace().iter().any(|e| e.label.contains("RST")),
        "the RST is on the wire"
    );
}

/// Two devices behind their own NAPTs open a TCP connection to each other at once.
fn simultaneous_open(cfg: NatConfig) -> (bool, bool) {
    let mut sim = Sim::new(14);
    let internet = sim.net_with(
        "internet",
        "198.51.100.0/24",
        LinkConfig::with_latency(ms(10)),
    );
    let home_a = sim.net("home-a", "10.0.1.0/24");
    let home_b = sim.net("home-b", "10.0.2.0/24");
    sim.napt(
        "nat-a",
        (home_a, "10.0.1.1"),
        (internet, "198.51.100.1"),
        cfg.clone(),
    );
    sim.napt(
        "nat-b",
        (home_b, "10.0.2.1"),
        (internet, "198.51.100.2"),
        cfg,
    );
    let a = sim.host("a", home_a, "10.0.1.5", StreamProbe::new());
    let b = sim.host("b", home_b, "10.0.2.5", StreamProbe::new());
    // Each aims at the other's predicted public endpoint (port preserved).
    let ida = on_stream(&mut sim, a, |p| {
        p.connect_from(sa("0.0.0.0:7000"), sa("198.51.100.2:7000"))
    });
    sim.run_for(ms(5)).unwrap();
    let idb = on_stream(&mut sim, b, |p| {
        p.connect_from(sa("0.0.0.0:7000"), sa("198.51.100.1:7000"))
    });
    sim.run_for(Duration::from_secs(2)).unwrap();
    let _ = sim.with_actor(a, |p: &mut StreamProbe, _| p.send(ida, b"from a".to_vec()));
    let _ = sim.with_actor(b, |p: &mut StreamProbe, _| p.send(idb, b"from b".to_vec()));
    sim.run_for(Duration::from_secs(120)).unwrap();
    let ra = sim.actor::<StreamProbe>(a).unwrap();
    let rb = sim.actor::<StreamProbe>(b).unwrap();
    (ra.received(ida) == b"from b", rb.received(idb) == b"from a")
}

#[test]
fn tcp_simultaneous_open_through_napts() {
    let friendly = NatConfig {
        port_preservation: true,
        ..NatConfig::new(
            Mapping::EndpointIndependent,
            Filtering::AddressAndPortDependent,
        )
    };
    assert_eq!(simultaneous_open(friendly), (true, true));
    // Symmetric NATs with random ports defeat the prediction.
    assert_eq!(simultaneous_open(NatConfig::symmetric()), (false, false));
}

#[test]
fn ipv6_datagrams_and_streams() {
    let mut sim = Sim::new(15);
    let net = sim.net("v6", "2001:db8::/64");
    let a = sim.host("a", net, "2001:db8::a", StreamProbe::new());
    let b = sim.host("b", net, "2001:db8::b", StreamProbe::new().echoing());
    let c = sim.host("c", net, "2001:db8::c", DatagramProbe::new(53).echoing());
    let d = sim.probe("d", net, "2001:db8::d", 5353);
    sim.listen(b, 22).unwrap();
    let id = on_stream(&mut sim, a, |p| {
        let id = p.connect_from(sa("[::]:0"), sa("[2001:db8::b]:22"))?;
        p.send(id, b"ssh".to_vec())?;
        Ok::<_, Error>(id)
    });
    probe_send_from(
        &mut sim,
        d,
        sa("[::]:5353"),
        sa("[2001:db8::c]:53"),
        b"q".to_vec(),
    );
    // Nothing periodic here: the network goes idle once the exchange is over.
    let idle_at = sim.run_until_idle(10_000).unwrap();
    assert!(idle_at > Instant::ZERO && idle_at < Instant::from_secs(1));
    assert_eq!(sim.pending(), 0);
    assert_eq!(sim.actor::<StreamProbe>(a).unwrap().received(id), b"ssh");
    assert_eq!(
        received(&sim, d),
        vec![(sa("[2001:db8::c]:53"), b"q".to_vec())]
    );
    let _ = c;
}

// ---------------------------------------------------------------- gateway

#[test]
fn closed_gateway_lets_replies_and_allowed_ports_in() {
    let mut sim = Sim::new(16);
    let home = sim.net("home", "10.10.0.0/24");
    let open = sim.net("open", "198.51.100.0/24");
    let gw = sim
        .add_gateway(
            "gateway",
            home,
            ip("10.10.0.1"),
            open,
            ip("198.51.100.1"),
            GatewayConfig::default().allow(AllowRule {
                protocol: Some(packet::PROTO_UDP),
                to: Some(ip("10.10.0.7")),
                port: Some(5683),
            }),
        )
        .unwrap();
    let appliance = sim.probe("appliance", home, "10.10.0.5", 4000);
    let proxy = sim.probe("proxy", home, "10.10.0.7", 5683);
    let remote = sim.host(
        "remote",
        open,
        "198.51.100.9",
        DatagramProbe::new(7000).echoing(),
    );

    // Unsolicited from the open network: refused.
    send(&mut sim, remote, "10.10.0.5:4000", b"heat for one hour");
    // To the allowed service: passes, with addresses unchanged (no NAT).
    send(&mut sim, remote, "10.10.0.7:5683", b"proxy request");
    // Inside-started flow: the reply comes back.
    send(&mut sim, appliance, "198.51.100.9:7000", b"hello");
    sim.run_for(ms(20)).unwrap();
    assert_eq!(
        received(&sim, appliance),
        vec![(sa("198.51.100.9:7000"), b"hello".to_vec())]
    );
    assert_eq!(
        received(&sim, proxy),
        vec![(sa("198.51.100.9:7000"), b"proxy request".to_vec())]
    );
    assert_eq!(received(&sim, remote)[0].0, sa("10.10.0.5:4000"));
    assert_eq!(drops_at(&sim, gw), vec![DropReason::Firewall]);
}

#[test]
fn open_gateway_and_plain_router_route_everything() {
    let mut sim = Sim::new(17);
    let a = sim.net("a", "10.1.0.0/16");
    let b = sim.net("b", "10.2.0.0/16");
    let c = sim.net("c", "10.3.0.0/16");
    sim.add_gateway(
        "gw",
        a,
        ip("10.1.0.1"),
        b,
        ip("10.2.0.1"),
        GatewayConfig::open(),
    )
    .unwrap();
    let r = sim
        .add_router("core", &[(b, ip("10.2.0.2")), (c, ip("10.3.0.1"))])
        .unwrap();
    sim.add_route(b, "10.3.0.0/16", r).unwrap();
    sim.add_route(c, "10.0.0.0/8", r).unwrap();
    sim.add_router_route(r, "10.1.0.0/16", b).unwrap();
    let x = sim.probe("x", a, "10.1.0.9", 1);
    let z = sim.host("z", c, "10.3.0.9", DatagramProbe::new(2).echoing());
    send(&mut sim, z, "10.1.0.9:1", b"in");
    send(&mut sim, x, "10.3.0.9:2", b"out");
    sim.run_for(ms(20)).unwrap();
    let got = received(&sim, x);
    assert_eq!(got.len(), 2, "{got:?}");
    // Routed, not translated: the addresses arrive unchanged.
    let last_hop = sim
        .trace()
        .iter()
        .rfind(|e| matches!(e.kind, TraceKind::Hop { to, .. } if to == x))
        .unwrap();
    assert_eq!(last_hop.packet.dst, ip("10.1.0.9"));
    assert_eq!(
        sim.add_route(b, "10.9.0.0/16", x),
        Err(SimError::WrongNodeKind {
            node: x,
            expected: "node attached to that network"
        })
    );
}

// ---------------------------------------------------------------- inline middleboxes

#[test]
fn inline_middlebox_sees_and_forwards_packets() {
    let mut sim = Sim::new(18);
    let lan = sim.net("lan", "10.0.0.0/24");
    let wire = sim.net("wire", "10.0.0.0/24");
    // A bump in the wire with no address of its own.
    let bump = sim
        .add_inline("bump", wire, lan, PacketProbe::bridge())
        .unwrap();
    let terminal = sim.probe("terminal", lan, "10.0.0.2", 500);
    let peer = sim.host("peer", wire, "10.0.0.1", DatagramProbe::new(500).echoing());
    send(&mut sim, terminal, "10.0.0.1:500", b"IKE_SA_INIT");
    sim.run_for(ms(20)).unwrap();
    assert_eq!(
        received(&sim, terminal),
        vec![(sa("10.0.0.1:500"), b"IKE_SA_INIT".to_vec())]
    );
    let seen = sim.actor::<PacketProbe>(bump).unwrap().received().to_vec();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].iface, IfaceId(1), "from the terminal's side");
    assert_eq!(seen[1].iface, IfaceId(0), "from the peer's side");
    let first = packet::parse(&seen[0].data).unwrap();
    assert_eq!(first.dst_socket(), Some(sa("10.0.0.1:500")));
    assert_eq!(first.payload, b"IKE_SA_INIT");

    // Raw ESP between two raw-IP hosts also crosses it.
    sim.set_raw_ip(terminal, RawIp::Protocols(vec![PROTO_ESP]))
        .unwrap();
    sim.set_raw_ip(peer, RawIp::Protocols(vec![PROTO_ESP]))
        .unwrap();
    let esp = packet::build_ip(
        ip("10.0.0.1"),
        ip("10.0.0.2"),
        PROTO_ESP,
        64,
        &[0, 0, 1, 0, 0, 0, 0, 1, 9, 9],
    )
    .unwrap();
    let sender = sim.host("esp-sender", wire, "10.0.0.3", PacketProbe::new());
    let spoofed = esp.clone();
    sim.command(sender, |p: &mut PacketProbe, _| p.emit(IfaceId(0), spoofed))
        .unwrap();
    sim.run_for(ms(20)).unwrap();
    assert_eq!(sim.actor::<PacketProbe>(bump).unwrap().received().len(), 3);
    // The terminal is a DatagramProbe: it refuses raw packets, and that is recorded.
    let faults = sim.faults(terminal).unwrap();
    assert_eq!(faults.len(), 1);
    assert_eq!(
        faults[0].error,
        Error::Sim(SimActorError::DatagramProbeInput)
    );
}

#[test]
fn inline_router_with_addresses_and_ip_in_ip() {
    let mut sim = Sim::new(19);
    let sub = sim.net("subscribers", "10.1.0.0/24");
    let core = sim.net("operator", "10.2.0.0/24");
    let edge = sim
        .add_inline_with(
            "edge",
            &[(sub, Some(ip("10.1.0.1"))), (core, Some(ip("10.2.0.1")))],
            PacketProbe::bridge(),
        )
        .unwrap();
    let phone = sim.probe("phone", sub, "10.1.0.5", 500);
    let proxy = sim.host("proxy", core, "10.2.0.9", PacketProbe::new());
    sim.set_raw_ip(proxy, RawIp::All).unwrap();
    // Phone → proxy crosses the edge (reached by bridging, no route needed).
    send(&mut sim, phone, "10.2.0.9:500", b"proxy request");
    // The proxy sends IP-in-IP to the edge's own address.
    let inner = packet::build_udp(sa("10.1.0.5:500"), sa("192.0.2.7:500"), 64, b"inner").unwrap();
    let outer = packet::build_ip(ip("10.2.0.9"), ip("10.2.0.1"), PROTO_IPIP, 64, &inner).unwrap();
    sim.command(proxy, |p: &mut PacketProbe, _| p.emit(IfaceId(0), outer))
        .unwrap();
    sim.run_for(ms(20)).unwrap();
    let at_proxy = sim.actor::<PacketProbe>(proxy).unwrap().received().to_vec();
    assert_eq!(at_proxy.len(), 1);
    assert_eq!(
        packet::parse(&at_proxy[0].data).unwrap().payload,
        b"proxy request"
    );
    let at_edge = sim.actor::<PacketProbe>(edge).unwrap().received().to_vec();
    let encapsulated = at_edge
        .iter()
        .find(|p| packet::parse(&p.data).unwrap().protocol == PROTO_IPIP)
        .expect("the edge got the IP-in-IP packet addressed to it");
    assert_eq!(encapsulated.iface, IfaceId(1));
    let _ = phone;
}

/// The stream side of an inline node's `PacketProbe::with_streams`, for a command.
fn on_inline_streams<R>(
    sim: &mut Sim,
    node: NodeId,
    f: impl FnOnce(&mut StreamProbe) -> Result<R, Error>,
) -> R {
    sim.command(node, |p: &mut PacketProbe, _| {
        f(p.stream_probe_mut().expect("built with_streams"))
    })
    .unwrap()
}

fn inline_streams(sim: &Sim, node: NodeId) -> &StreamProbe {
    sim.actor::<PacketProbe>(node)
        .unwrap()
        .stream_probe()
        .unwrap()
}

/// An administrator's network behind a router, and a key-exchange proxy: a bump in the
/// wire between wan and lan (one prefix on both sides) with a management address,
/// 10.0.0.254, on its wan interface. Returns (sim, admin, udp peer, proxy, device, web).
fn management_world(seed: u64, wan_link: LinkConfig) -> (Sim, [NodeId; 5]) {
    let mut sim = Sim::new(seed);
    let mgmt = sim.net("mgmt", "10.9.0.0/24");
    let wan = sim.net_with("wan", "10.0.0.0/24", wan_link);
    let lan = sim.net("lan", "10.0.0.0/24");
    let router = sim
        .add_router("r", &[(mgmt, ip("10.9.0.1")), (wan, ip("10.0.0.1"))])
        .unwrap();
    sim.add_route(mgmt, "0.0.0.0/0", router).unwrap();
    sim.add_route(wan, "10.9.0.0/24", router).unwrap();
    let proxy = sim
        .add_inline_with(
            "proxy",
            &[(wan, Some(ip("10.0.0.254"))), (lan, None)],
            PacketProbe::bridge().with_streams(StreamProbe::new()),
        )
        .unwrap();
    sim.listen_inline(proxy, 22).unwrap();
    let admin = sim.host("admin", mgmt, "10.9.0.5", StreamProbe::new());
    let peer = sim.probe("peer", mgmt, "10.9.0.6", 500);
    let device = sim.host("device", lan, "10.0.0.2", DatagramProbe::new(500).echoing());
    let web = sim.host("web", lan, "10.0.0.3", StreamProbe::new().echoing());
    sim.listen(web, 80).unwrap();
    (sim, [admin, peer, proxy, device, web])
}

/// Seed 001's proxy needs a management address: an inline node that listens takes TCP
/// to its own address on that port through the simulator's TCP, as a host does, while
/// everything it bridges (and TCP to other ports of its address) still reaches it raw.
#[test]
fn inline_node_serves_tcp_on_its_management_address() {
    let (mut sim, [admin, peer, proxy, device, web]) = management_world(31, LinkConfig::default());
    let mgmt = on_stream(&mut sim, admin, |p| p.connect(sa("10.0.0.254:22")));
    sim.run_for(ms(20)).unwrap();
    let accepted = inline_streams(&sim, proxy).accepted();
    assert_eq!(accepted.len(), 1, "the proxy accepted the administrator");
    let session = accepted[0];
    let rec = inline_streams(&sim, proxy).stream(session).unwrap().clone();
    assert_eq!(rec.local, Some(sa("10.0.0.254:22")));
    assert_eq!(rec.remote.unwrap().ip(), ip("10.9.0.5"));
    assert_eq!(sim.open_streams(proxy).unwrap(), 1);

    // Both ways.
    on_inline_streams(&mut sim, proxy, |p| p.send(session, b"welcome".to_vec()));
    on_stream(&mut sim, admin, |p| p.send(mgmt, b"rotate keys".to_vec()));
    sim.run_for(ms(20)).unwrap();
    assert_eq!(
        inline_streams(&sim, proxy).received(session),
        b"rotate keys"
    );
    let admin_side = sim.actor::<StreamProbe>(admin).unwrap();
    assert_eq!(admin_side.received(mgmt), b"welcome");
    assert!(admin_side.stream(mgmt).unwrap().opened_at.is_some());

    // Meanwhile bridged traffic is untouched: UDP to a device behind the proxy and TCP
    // to a web server behind it arrive raw and are forwarded by the actor.
    send(&mut sim, peer, "10.0.0.2:500", b"bridged datagram");
    let through = on_stream(&mut sim, admin, |p| p.connect(sa("10.0.0.3:80")));
    sim.run_for(ms(20)).unwrap();
    on_stream(&mut sim, admin, |p| p.send(through, b"GET /".to_vec()));
    sim.run_for(ms(20)).unwrap();
    assert_eq!(
        received(&sim, peer),
        vec![(sa("10.0.0.2:500"), b"bridged datagram".to_vec())]
    );
    assert_eq!(received(&sim, device).len(), 1);
    assert_eq!(
        sim.actor::<StreamProbe>(admin).unwrap().received(through),
        b"GET /",
        "echoed by the web server through the bridge"
    );
    assert_eq!(sim.actor::<StreamProbe>(web).unwrap().accepted().len(), 1);

    // A SYN to a port the proxy does not listen on, at its own address, is the actor's
    // too: it arrives raw and no RST answers it (the actor may handle it itself).
    let refused = on_stream(&mut sim, admin, |p| p.connect(sa("10.0.0.254:23")));
    sim.run_for(ms(20)).unwrap();
    let r = sim
        .actor::<StreamProbe>(admin)
        .unwrap()
        .stream(refused)
        .cloned();
    assert_eq!(r.as_ref().and_then(|r| r.opened_at), None);
    assert_eq!(r.and_then(|r| r.closed_at), None, "no RST: still trying");

    let seen = sim.actor::<PacketProbe>(proxy).unwrap().received().to_vec();
    let parsed: Vec<_> = seen
        .iter()
        .map(|p| (p.iface, packet::parse(&p.data).unwrap()))
        .collect();
    assert!(
        parsed
            .iter()
            .all(|(_, i)| i.dst_socket() != Some(sa("10.0.0.254:22"))
                && i.src_socket() != Some(sa("10.0.0.254:22"))),
        "the management stream never reaches the actor raw"
    );
    let udp: Vec<_> = parsed.iter().filter(|(_, i)| i.protocol == 17).collect();
    assert_eq!(udp.len(), 2, "the datagram and its echo");
    assert_eq!(udp[0].0, IfaceId(0));
    assert_eq!(udp[1].0, IfaceId(1));
    assert!(
        parsed
            .iter()
            .any(|(f, i)| *f == IfaceId(0) && i.dst_socket() == Some(sa("10.0.0.3:80"))),
        "bridged TCP arrives raw"
    );
    let to_23: Vec<_> = parsed
        .iter()
        .filter(|(_, i)| i.dst_socket() == Some(sa("10.0.0.254:23")))
        .collect();
    assert_eq!(to_23.len(), 1, "the SYN to port 23, raw");
    assert!(to_23[0].1.tcp.unwrap().flags.syn);

    // Closing: the administrator closes, the proxy hears it and its TCP closes its side.
    on_stream(&mut sim, admin, |p| p.close(mgmt));
    sim.run_for(ms(20)).unwrap();
    let rec = inline_streams(&sim, proxy).stream(session).unwrap();
    assert!(rec.closed_at.is_some());
    assert_eq!(sim.open_streams(proxy).unwrap(), 0);
    assert!(sim.faults(proxy).unwrap().is_empty());
}

/// The proxy also dials out from its management address, through its own bridge to a
/// server behind it, and its TCP's retransmission timer runs like a host's: the stream
/// survives a lossy wan.
#[test]
fn inline_node_connects_out_and_retransmits() {
    let lossy = LinkConfig::with_latency(ms(5))
        .loss(0.2)
        .reorder(0.1, ms(10));
    let (mut sim, [admin, _peer, proxy, _device, web]) = management_world(32, lossy);
    // Out through the lan, which has no address of the proxy: from 10.0.0.254.
    let out = on_inline_streams(&mut sim, proxy, |p| p.connect(sa("10.0.0.3:80")));
    sim.run_for(ms(50)).unwrap();
    let rec = inline_streams(&sim, proxy).stream(out).unwrap().clone();
    assert_eq!(rec.local.unwrap().ip(), ip("10.0.0.254"));
    let seen = sim.actor::<StreamProbe>(web).unwrap();
    let remote = seen.stream(seen.accepted()[0]).unwrap().remote.unwrap();
    assert_eq!(remote, rec.local.unwrap());
    on_inline_streams(&mut sim, proxy, |p| p.send(out, b"to the server".to_vec()));
    sim.run_for(ms(50)).unwrap();
    assert_eq!(inline_streams(&sim, proxy).received(out), b"to the server");

    // 20 kB from the administrator across the lossy wan, answered by the proxy: both
    // TCPs retransmit until every byte is through.
    let mgmt = on_stream(&mut sim, admin, |p| p.connect(sa("10.0.0.254:22")));
    sim.run_for(Duration::from_secs(10)).unwrap();
    let session = inline_streams(&sim, proxy).accepted()[0];
    let data = pattern(20_000);
    let chunk = data.clone();
    on_stream(&mut sim, admin, |p| p.send(mgmt, chunk));
    let answer = pattern(15_000);
    let reply = answer.clone();
    on_inline_streams(&mut sim, proxy, |p| p.send(session, reply));
    sim.run_for(Duration::from_secs(60)).unwrap();
    assert_eq!(inline_streams(&sim, proxy).received(session), data);
    assert_eq!(
        sim.actor::<StreamProbe>(admin).unwrap().received(mgmt),
        answer
    );
    // Segments the proxy sent were lost and every byte still arrived: its own timer fired.
    assert!(
        sim.drops()
            .any(|d| d.drop_reason() == Some(DropReason::Loss)
                && matches!(d.kind, TraceKind::Drop { at, .. } if at == proxy)),
        "the wan lost some of the proxy's segments"
    );
    assert!(sim.faults(proxy).unwrap().is_empty());
}

/// Networks a and b (one prefix) joined by a bridging inline node that takes stream
/// events, with `addr` (or none) on its side a.
fn one_bridge(seed: u64, addr: Option<&str>) -> (Sim, NetworkId, NodeId) {
    let mut sim = Sim::new(seed);
    let a = sim.net("a", "10.0.0.0/24");
    let b = sim.net("b", "10.0.0.0/24");
    let probe = PacketProbe::bridge().with_streams(StreamProbe::new());
    let node = sim
        .add_inline_with("bridge", &[(a, addr.map(ip)), (b, None)], probe)
        .unwrap();
    (sim, a, node)
}

#[test]
fn listen_inline_needs_an_inline_node_with_an_address() {
    let (mut sim, a, bump) = one_bridge(33, None);
    let host = sim.host("h", a, "10.0.0.1", StreamProbe::new());
    assert_eq!(sim.listen_inline(bump, 22), Err(SimError::NoAddress(bump)));
    assert_eq!(
        sim.listen_inline(host, 22),
        Err(SimError::WrongNodeKind {
            node: host,
            expected: "inline node"
        })
    );
    assert_eq!(sim.open_streams(bump), Ok(0));
    // Stream outputs of an inline node without a TCP stay refused, as before.
    on_inline_streams(&mut sim, bump, |p| p.connect(sa("10.0.0.1:1")));
    let faults = sim.faults(bump).unwrap();
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].error, Error::Sim(SimActorError::InlineOutput));
    assert!(sim.unlisten_inline(host, 22).is_err());
}

/// After `unlisten_inline` the open stream stays, and a new SYN to that port is the
/// actor's again, raw.
#[test]
fn unlisten_inline_keeps_streams_and_hands_new_syns_back_raw() {
    let (mut sim, a, edge) = one_bridge(34, Some("10.0.0.9"));
    let client = sim.host("client", a, "10.0.0.1", StreamProbe::new());
    sim.listen_inline(edge, 22).unwrap();
    let first = on_stream(&mut sim, client, |p| p.connect(sa("10.0.0.9:22")));
    sim.run_for(ms(10)).unwrap();
    sim.unlisten_inline(edge, 22).unwrap();
    let second = on_stream(&mut sim, client, |p| p.connect(sa("10.0.0.9:22")));
    sim.run_for(ms(10)).unwrap();
    on_stream(&mut sim, client, |p| p.send(first, b"still here".to_vec()));
    sim.run_for(ms(10)).unwrap();
    let streams = inline_streams(&sim, edge);
    assert_eq!(streams.accepted().len(), 1);
    assert_eq!(streams.received(streams.accepted()[0]), b"still here");
    assert_eq!(sim.open_streams(edge).unwrap(), 1);
    let raw = sim.actor::<PacketProbe>(edge).unwrap().received();
    assert_eq!(raw.len(), 1, "only the second SYN");
    assert!(packet::parse(&raw[0].data).unwrap().tcp.unwrap().flags.syn);
    let c = sim.actor::<StreamProbe>(client).unwrap();
    assert!(c.stream(second).unwrap().opened_at.is_none());
}

// ---------------------------------------------------------------- recording

#[test]
fn pcap_is_written_and_well_formed() {
    let mut w = echo_world(20, NatConfig::default());
    send(&mut w.sim, w.alice, SERVER, b"pcap me");
    w.sim.run_for(ms(20)).unwrap();
    let hops = w
        .sim
        .trace()
        .iter()
        .filter(|e| matches!(e.kind, TraceKind::Hop { .. }))
        .count();
    assert_eq!(hops, 4, "alice→nat, nat→server, server→nat, nat→alice");

    let path = std::env::temp_dir().join(format!("deputy-sim-{}.pcap", std::process::id()));
    w.sim.write_pcap(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes, w.sim.pcap_bytes());
    assert_eq!(
        &bytes[..4],
        &0xa1b2_3c4du32.to_le_bytes(),
        "nanosecond pcap"
    );
    assert_eq!(
        u32::from_le_bytes(bytes[20..24].try_into().unwrap()),
        101,
        "LINKTYPE_RAW"
    );
    // Walk the records: one per hop, each a parseable packet; the NAT rewrite is visible.
    let mut at = 24;
    let mut sources = Vec::new();
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let rec = &bytes[at + 16..at + 16 + len];
        sources.push(packet::parse(rec).unwrap().src);
        at += 16 + len;
    }
    assert_eq!(at, bytes.len());
    assert_eq!(
        sources,
        vec![
            ip("192.168.1.10"),
            ip(PUBLIC),
            ip("203.0.113.80"),
            ip("203.0.113.80")
        ]
    );

    // Optional: if tshark is installed, it must read the file without complaint.
    if let Ok(out) = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().count(), 4, "{text}");
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn mermaid_chart_and_labels() {
    let mut w = world(21, NatConfig::symmetric(), LinkConfig::default());
    // A deputy wire message of an unregistered type (0x7e), then a registered one.
    let msg = deputy::wire::encode(0x7e, 9, deputy::wire::FieldWriter::new().u8(1, 1)).unwrap();
    let hello = deputy::wire::encode(0x01, 0, deputy::wire::FieldWriter::new()).unwrap();
    send(&mut w.sim, w.alice, SERVER, &msg);
    send(&mut w.sim, w.alice, SERVER, &hello);
    send(&mut w.sim, w.stranger, "203.0.113.1:1234", b"x");
    w.sim.run_for(ms(20)).unwrap();
    let chart = w.sim.mermaid();
    assert!(chart.starts_with("sequenceDiagram\n"));
    for name in [
        "alice (192.168.1.10)",
        "router (192.168.1.1, 203.0.113.1)",
        "server",
    ] {
        assert!(chart.contains(name), "{chart}");
    }
    assert!(chart.contains("n1->>n0: UDP"), "{chart}");
    assert!(chart.contains("DP type 0x7e"), "{chart}");
    assert!(chart.contains("ClientHello"), "{chart}");
    assert!(chart.contains("Note over n0: ✗"), "{chart}");
    assert!(chart.contains("no NAT mapping"), "{chart}");

    // A protocol module names its messages.
    let mut w = world(21, NatConfig::default(), LinkConfig::default());
    w.sim.set_labeler(|p| {
        (p.payload.len() >= 4 && p.payload[..2] == *b"DP" && p.payload[3] == 0x7e)
            .then(|| "registration".to_string())
    });
    send(&mut w.sim, w.alice, SERVER, &msg);
    send(&mut w.sim, w.alice, SERVER, b"other");
    w.sim.run_for(ms(20)).unwrap();
    let labels: Vec<&str> = w.sim.trace().iter().map(|e| e.label.as_str()).collect();
    assert_eq!(labels[0], "registration");
    assert!(
        labels.iter().any(|l| l.starts_with("UDP 4000→3478")),
        "{labels:?}"
    );
}

#[test]
fn lost_packets_are_crossed_arrows() {
    let link = LinkConfig::default().loss(1.0);
    let mut w = world(22, NatConfig::default(), link);
    send(&mut w.sim, w.alice, SERVER, b"into the void");
    w.sim.run_for(ms(20)).unwrap();
    assert_eq!(drops_at(&w.sim, w.alice), vec![DropReason::Loss]);
    assert!(w.sim.mermaid().contains("n1-xn0:"), "{}", w.sim.mermaid());
    assert!(w.sim.pcap_bytes().len() == 24, "drops are not in the pcap");
}

// ---------------------------------------------------------------- API errors and bounds

#[test]
fn bad_calls_are_typed_errors() {
    let mut w = world(23, NatConfig::default(), LinkConfig::default());
    let ghost = NodeId::from_index(999);
    assert!(matches!(
        w.sim.with_actor(ghost, |_: &mut DatagramProbe, _| ()),
        Err(SimError::UnknownNode(_))
    ));
    assert_eq!(
        w.sim.with_actor(w.alice, |_: &mut StreamProbe, _| ()),
        Err(SimError::WrongActorType(w.alice))
    );
    assert!(matches!(
        w.sim.with_actor(w.nat, |_: &mut DatagramProbe, _| ()),
        Err(SimError::WrongNodeKind { .. })
    ));
    assert!(matches!(
        w.sim.listen(w.nat, 1),
        Err(SimError::WrongNodeKind { .. })
    ));
    assert!(matches!(
        w.sim.bindings(w.alice),
        Err(SimError::WrongNodeKind { .. })
    ));
    assert_eq!(
        w.sim
            .add_host("dup", w.home, ip("192.168.1.10"), DatagramProbe::new(1))
            .map(|_| ()),
        Err(SimError::AddressInUse(ip("192.168.1.10")))
    );
    assert!(matches!(
        w.sim
            .add_host("far", w.home, ip("10.0.0.1"), DatagramProbe::new(1)),
        Err(SimError::AddressOutsidePrefix { .. })
    ));
    assert_eq!(
        w.sim
            .add_network("bad", "10.0.0.0/40", LinkConfig::default()),
        Err(SimError::BadPrefix)
    );
    let mut other = Sim::new(0);
    let mut foreign = other.net("x", "10.0.0.0/8");
    for _ in 0..5 {
        foreign = other.net("x", "10.0.0.0/8");
    }
    assert_eq!(
        w.sim
            .add_host("nowhere", foreign, ip("10.0.0.1"), DatagramProbe::new(1))
            .map(|_| ()),
        Err(SimError::UnknownNetwork(foreign))
    );
    // An actor that re-arms a timer for "now" forever hits the step budget.
    let mut sim = Sim::with_config(
        1,
        deputy::sim::SimConfig {
            max_steps_per_run: 1000,
            ..Default::default()
        },
    );
    let n = sim.net("n", "10.0.0.0/8");
    sim.host("spinner", n, "10.0.0.1", Quiet(Some(Instant::ZERO)));
    assert_eq!(sim.run_for(ms(1)), Err(SimError::StepLimit(1000)));
    assert_eq!(sim.run_until_idle(10), Err(SimError::StepLimit(10)));
}

#[test]
fn actor_output_errors_are_recorded_not_panicked() {
    let mut w = world(24, NatConfig::default(), LinkConfig::default());
    // Sending on a stream that does not exist, and a datagram across families.
    let client = w
        .sim
        .host("client", w.home, "192.168.1.40", StreamProbe::new());
    w.sim.run_for(ms(1)).unwrap();
    struct Bad(Vec<Output<Event>>);
    impl Actor for Bad {
        type Event = Event;

        fn handle_input(&mut self, _: Instant, _: deputy::Input<'_>) -> Result<(), Error> {
            Err(Error::UnknownStream(deputy::StreamId::inbound(0)))
        }
        fn handle_timeout(&mut self, _: Instant) {}
        fn poll_output(&mut self) -> Option<Output<Event>> {
            self.0.pop()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
    }
    let bad = Bad(vec![
        Output::StreamSend {
            id: deputy::StreamId::outbound(99),
            data: vec![1],
        },
        Output::Transmit(deputy::Transmit {
            from: sa("192.168.1.41:1"),
            to: sa("[::1]:1"),
            data: vec![],
        }),
        Output::Packet {
            iface: IfaceId(3),
            data: vec![],
        },
        Output::Packet {
            iface: IfaceId(0),
            data: vec![0x45, 0, 0],
        },
    ]);
    let b = w.sim.host("bad", w.home, "192.168.1.41", bad);
    send(&mut w.sim, w.alice, "192.168.1.41:1", b"hi");
    w.sim.run_for(ms(10)).unwrap();
    let faults = w.sim.faults(b).unwrap();
    assert_eq!(faults.len(), 4, "{faults:?}");
    assert!(drops_at(&w.sim, b).contains(&DropReason::Malformed));
    let _ = client;
}

/// Takes anything, says nothing; asks to be woken at its instant, if any, every time.
struct Quiet(Option<Instant>);

impl Actor for Quiet {
    type Event = Event;

    fn handle_input(&mut self, _: Instant, _: deputy::Input<'_>) -> Result<(), Error> {
        Ok(())
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_output(&mut self) -> Option<Output<Event>> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0
    }
}

/// Emits the events it is told to emit.
struct Emitter(Vec<deputy::Event>);

impl Actor for Emitter {
    type Event = Event;

    fn handle_input(&mut self, _: Instant, _: deputy::Input<'_>) -> Result<(), Error> {
        Ok(())
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_output(&mut self) -> Option<Output<Event>> {
        self.0.pop().map(Output::Event)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

#[test]
fn events_are_recorded_with_their_time() {
    // Any event will do; the channel's is the one the crate has.
    let event = || {
        deputy::Event::from(deputy::channel::ChannelEvent::Received {
            stream: deputy::StreamId::inbound(1),
            data: b"x".to_vec(),
        })
    };
    let mut sim = Sim::new(25);
    let n = sim.net("n", "10.0.0.0/24");
    let quiet = sim.host("quiet", n, "10.0.0.2", Quiet(None));
    let e = sim.host("emitter", n, "10.0.0.1", Emitter(vec![event()]));
    sim.run_until(Instant::from_secs(1)).unwrap();
    sim.with_actor(e, |a: &mut Emitter, _| a.0.push(event()))
        .unwrap();
    assert_eq!(sim.peek_events(e).unwrap().len(), 2);
    let got = sim.events(e).unwrap();
    assert_eq!(
        got,
        vec![(Instant::ZERO, event()), (Instant::from_secs(1), event())]
    );
    assert!(sim.events(e).unwrap().is_empty(), "drained");
    assert!(sim.peek_events(quiet).unwrap().is_empty());
    assert!(matches!(
        sim.events(NodeId::from_index(7)),
        Err(SimError::UnknownNode(_))
    ));
}

#[test]
fn renumbered_napt_loses_its_bindings() {
    let mut w = world(26, NatConfig::default(), LinkConfig::default());
    w.sim
        .add_static_mapping(w.nat, Proto::Udp, 6000, sa("192.168.1.10:4000"))
        .unwrap();
    send(&mut w.sim, w.alice, "203.0.113.81:3478", b"before");
    let arrived = w
        .sim
        .run_until_cond(Instant::from_secs(1), |s| {
            !s.actor::<DatagramProbe>(NodeId::from_index(3))
                .unwrap()
                .received()
                .is_empty()
        })
        .unwrap();
    assert!(arrived);
    assert!(
        w.sim.now() < Instant::from_millis(10),
        "stopped as soon as it held"
    );
    let old = received(&w.sim, w.server2)[0].0;
    assert_eq!(old.ip(), ip(PUBLIC));

    w.sim.set_public_ip(w.nat, ip("203.0.113.2")).unwrap();
    assert!(w.sim.bindings(w.nat).unwrap().is_empty());
    assert_eq!(
        w.sim.set_public_ip(w.nat, ip("203.0.113.80")),
        Err(SimError::AddressInUse(ip("203.0.113.80")))
    );
    // The old public endpoint is gone; the new one carries new traffic and the static port.
    send_from(&mut w.sim, w.server2, "203.0.113.81:3478", old, b"stale");
    send(&mut w.sim, w.alice, "203.0.113.81:3478", b"after");
    send(&mut w.sim, w.stranger, "203.0.113.2:6000", b"static");
    w.sim.run_for(ms(20)).unwrap();
    assert_eq!(received(&w.sim, w.server2)[1].0.ip(), ip("203.0.113.2"));
    assert_eq!(drops_at(&w.sim, w.server2), vec![DropReason::NoRoute]);
    let at_alice: Vec<Vec<u8>> = received(&w.sim, w.alice).into_iter().map(|r| r.1).collect();
    assert_eq!(at_alice, vec![b"static".to_vec()]);
    assert!(
        !w.sim
            .run_until_cond(Instant::from_secs(2), |_| false)
            .unwrap()
    );
    assert_eq!(w.sim.now(), Instant::from_secs(2));

    w.sim.flush_bindings(w.nat).unwrap();
    assert!(w.sim.bindings(w.nat).unwrap().is_empty());
    assert!(matches!(
        w.sim.flush_bindings(w.alice),
        Err(SimError::WrongNodeKind { .. })
    ));
}

#[test]
fn mangled_packets_never_panic() {
    use rand_core::Rng;
    let mut w = world(27, NatConfig::default(), LinkConfig::default());
    let raw = w
        .sim
        .host("raw", w.home, "192.168.1.66", PacketProbe::new());
    let sink = w
        .sim
        .host("sink", w.internet, "203.0.113.70", PacketProbe::new());
    w.sim.set_raw_ip(sink, RawIp::All).unwrap();
    w.sim.listen(sink, 80).unwrap();
    let mut rng = w.sim.rng("mangle");
    let seg = packet::TcpSegment {
        flags: packet::TcpFlags {
            syn: true,
            ..Default::default()
        },
        seq: 1,
        ack: 0,
        window: 100,
    };
    let seeds = [
        packet::build_udp(sa("192.168.1.66:1"), sa("203.0.113.70:2"), 64, b"hello").unwrap(),
        packet::build_tcp(sa("192.168.1.66:1"), sa("203.0.113.70:80"), 64, &seg, b"x").unwrap(),
        packet::build_ip(
            ip("192.168.1.66"),
            ip("203.0.113.70"),
            PROTO_ESP,
            2,
            &[1; 12],
        )
        .unwrap(),
    ];
    let mut sent = 0;
    for i in 0..3000usize {
        let mut p = seeds[i % seeds.len()].clone();
        match rng.next_u32() % 4 {
            0 => {
                let at = rng.next_u32() as usize % p.len();
                p[at] ^= 1 << (rng.next_u32() % 8);
            }
            1 => p.truncate(rng.next_u32() as usize % p.len()),
            2 => p.extend((0..rng.next_u32() % 8).map(|_| rng.next_u32() as u8)),
            _ => p.iter_mut().for_each(|b| *b = rng.next_u32() as u8),
        }
        w.sim
            .command(raw, |probe: &mut PacketProbe, _| probe.emit(IfaceId(0), p))
            .unwrap();
        sent += 1;
        if i % 100 == 0 {
            w.sim.run_for(ms(5)).unwrap();
        }
    }
    w.sim.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(sent, 3000);
    let malformed = w
        .sim
        .drops()
        .filter(|e| e.drop_reason() == Some(DropReason::Malformed))
        .count();
    assert!(malformed > 1000, "{malformed}");
    // Whatever got through (through the NAT, rewritten) arrived as parseable packets.
    let through = w.sim.actor::<PacketProbe>(sink).unwrap().received();
    assert!(!through.is_empty());
    for r in through {
        assert!(packet::parse(&r.data).is_ok());
    }
}

// ---------------------------------------------------------------- fault injection

/// One LAN, probes `a` (10.0.0.1) and `b` (10.0.0.2) on port 9, and the faults given.
fn fault_lan(seed: u64, faults: Vec<Fault>) -> (Sim, NodeId, NodeId, Vec<FaultId>) {
    let mut sim = Sim::new(seed);
    let lan = sim.net_with("lan", "10.0.0.0/24", LinkConfig::with_latency(ms(1)));
    let a = sim.probe("a", lan, "10.0.0.1", 9);
    let b = sim.probe("b", lan, "10.0.0.2", 9);
    let ids = faults
        .into_iter()
        .map(|f| sim.add_fault(f).unwrap())
        .collect();
    (sim, a, b, ids)
}

/// `a` sends `n` datagrams `[i; 8]` to `b`, 10 ms apart; what `b` got.
fn fault_flow(sim: &mut Sim, a: NodeId, b: NodeId, n: u8) -> Vec<Vec<u8>> {
    for i in 0..n {
        send(sim, a, "10.0.0.2:9", &[i; 8]);
        sim.run_for(ms(10)).unwrap();
    }
    sim.run_for(Duration::from_secs(2)).unwrap();
    received(sim, b).into_iter().map(|(_, d)| d).collect()
}

fn ab_flow() -> Fault {
    Fault::new(FaultAction::Drop).flow(sa("10.0.0.1:9"), sa("10.0.0.2:9"))
}

fn with_action(action: FaultAction) -> Fault {
    Fault::new(action).flow(sa("10.0.0.1:9"), sa("10.0.0.2:9"))
}

#[test]
fn fault_drops_the_nth_datagram_of_a_flow() {
    let (mut sim, a, b, ids) = fault_lan(1, vec![ab_flow().nth(2)]);
    let got = fault_flow(&mut sim, a, b, 5);
    assert_eq!(got, [[0; 8], [1; 8], [3; 8], [4; 8]]);
    assert_eq!(
        sim.fault_stats(ids[0]).unwrap(),
        FaultStats {
            matched: 5,
            applied: 1
        }
    );
    assert_eq!(drops_at(&sim, a), [DropReason::Injected]);
    assert!(sim.mermaid().contains("dropped by a fault"));
}

#[test]
fn fault_count_and_removal() {
    let (mut sim, a, b, ids) = fault_lan(1, vec![ab_flow().nth(1).count(2)]);
    let got = fault_flow(&mut sim, a, b, 3);
    assert_eq!(got, [[0; 8]]);
    let stats = sim.remove_fault(ids[0]).unwrap();
    assert_eq!(stats.applied, 2);
    assert_eq!(sim.fault_stats(ids[0]), Err(SimError::UnknownFault(ids[0])));
    assert_eq!(
        sim.remove_fault(ids[0]),
        Err(SimError::UnknownFault(ids[0]))
    );
    // Removed: the flow is whole again.
    let got = fault_flow(&mut sim, a, b, 2);
    assert_eq!(got.len(), 3);
}

#[test]
fn fault_duplicates_and_delays() {
    let (mut sim, a, b, _) = fault_lan(
        1,
        vec![
            with_action(FaultAction::Duplicate).nth(1),
            with_action(FaultAction::Delay(ms(500))).nth(2),
        ],
    );
    let got = fault_flow(&mut sim, a, b, 4);
    // The delayed third datagram arrives after the fourth, the second arrives twice.
    assert_eq!(got, [[0; 8], [1; 8], [1; 8], [3; 8], [2; 8]]);
}

#[test]
fn fault_corrupts_payloads_with_valid_checksums() {
    let (mut sim, a, b, _) = fault_lan(
        1,
        vec![
            with_action(FaultAction::Flip {
                offset: 3,
                mask: 0x01,
            })
            .nth(0),
            with_action(FaultAction::Truncate(2)).nth(1),
            with_action(FaultAction::Extend(vec![0xee, 0xff])).nth(2),
            with_action(FaultAction::Replace(b"other".to_vec())).nth(3),
            with_action(FaultAction::rewrite(|p| p.iter().rev().copied().collect())).nth(4),
            // Past the end: passes unchanged.
            with_action(FaultAction::flip(100)).nth(5),
        ],
    );
    let mut sent = (0..6u8).map(|i| vec![i; 8]).collect::<Vec<_>>();
    sent[4] = b"abcdefgh".to_vec();
    for d in &sent {
        send(&mut sim, a, "10.0.0.2:9", d);
        sim.run_for(ms(10)).unwrap();
    }
    sim.run_for(ms(100)).unwrap();
    let got: Vec<Vec<u8>> = received(&sim, b).into_iter().map(|(_, d)| d).collect();
    assert_eq!(
        got,
        [
            vec![0, 0, 0, 1, 0, 0, 0, 0],
            vec![1, 1],
            vec![2, 2, 2, 2, 2, 2, 2, 2, 0xee, 0xff],
            b"other".to_vec(),
            b"hgfedcba".to_vec(),
            vec![5; 8],
        ]
    );
    // Every altered packet is a well-formed one (the receiver took it) and is marked.
    let altered = sim
        .trace()
        .iter()
        .filter(|e| e.label.starts_with("(altered)"))
        .count();
    assert_eq!(altered, 5);
    assert!(sim.drops().next().is_none());
}

#[test]
fn fault_replays_an_earlier_datagram() {
    let (mut sim, a, b, _) = fault_lan(
        1,
        vec![with_action(FaultAction::Replay { earlier: 0 }).nth(2)],
    );
    let got = fault_flow(&mut sim, a, b, 4);
    assert_eq!(got, [[0; 8], [1; 8], [2; 8], [0; 8], [3; 8]]);
}

#[test]
fn fault_replay_of_an_unseen_match_sends_nothing() {
    let (mut sim, a, b, ids) = fault_lan(
        1,
        vec![with_action(FaultAction::Replay { earlier: 5 }).nth(1)],
    );
    let got = fault_flow(&mut sim, a, b, 3);
    assert_eq!(got.len(), 3);
    assert_eq!(sim.fault_stats(ids[0]).unwrap().applied, 1);
}

#[test]
fn fault_matches_by_node_network_direction_and_closure() {
    // alice behind the NAPT sends to the server; drop by where the hop is.
    for (which, expect_lost) in [
        ("on home network, toward the nat", true),
        ("from the nat, on the internet", true),
        ("toward alice", false),
        ("closure on first payload byte 7", true),
        ("protocol TCP", false),
    ] {
        let mut w = world(3, NatConfig::default(), LinkConfig::default());
        let base = Fault::new(FaultAction::Drop);
        let f = match which {
            "on home network, toward the nat" => base.on_network(w.home).to_node(w.nat),
            "from the nat, on the internet" => base.on_network(w.internet).from_node(w.nat),
            "toward alice" => base.at_node(w.alice).to_node(w.alice),
            "closure on first payload byte 7" => base.when(|p| p.payload.first() == Some(&7)),
            _ => base.protocol(packet::PROTO_TCP),
        };
        let id = w.sim.add_fault(f).unwrap();
        send_from(
            &mut w.sim,
            w.alice,
            "192.168.1.10:40000",
            sa(SERVER),
            &[7; 4],
        );
        w.sim.run_for(ms(100)).unwrap();
        assert_eq!(
            received(&w.sim, w.server).is_empty(),
            expect_lost,
            "{which}"
        );
        let stats = w.sim.fault_stats(id).unwrap();
        assert_eq!(stats.applied, u64::from(expect_lost), "{which}");
    }
}

#[test]
fn fault_on_tcp_data_segments() {
    // Truncating the first data segment costs nothing (TCP resends what was not
    // acknowledged); flipping a byte of the second reaches the application: the checksums
    // were rebuilt, as for damage they do not catch.
    let (mut w, client, web) = stream_world(11, LinkConfig::with_latency(ms(5)));
    // On the internet only: the same packet crosses the home network first, and each hop
    // is one match.
    let internet = w.internet;
    let to_web = |a| {
        Fault::new(a)
            .on_network(internet)
            .protocol(packet::PROTO_TCP)
            .dst(sa("203.0.113.8:443"))
            .with_payload()
    };
    let cut = w
        .sim
        .add_fault(to_web(FaultAction::Truncate(100)).nth(0))
        .unwrap();
    let flip = w
        .sim
        .add_fault(
            to_web(FaultAction::Flip {
                offset: 0,
                mask: 0x80,
            })
            .nth(1),
        )
        .unwrap();
    let id = on_stream(&mut w.sim, client, |p| p.connect(sa("203.0.113.8:443")));
    w.sim.run_for(ms(100)).unwrap();
    let data = pattern(1000);
    on_stream(&mut w.sim, client, |p| p.send(id, data.clone()));
    w.sim.run_for(Duration::from_secs(5)).unwrap();
    let server_side = w.sim.actor::<StreamProbe>(web).unwrap();
    let got = server_side.received(server_side.accepted()[0]).to_vec();
    let mut expect = data.clone();
    expect[100] ^= 0x80;
    assert_eq!(got, expect);
    assert_eq!(w.sim.fault_stats(cut).unwrap().applied, 1);
    assert_eq!(w.sim.fault_stats(flip).unwrap().applied, 1);
}

#[test]
fn fault_probability_is_seeded() {
    let run = |seed| {
        let (mut sim, a, b, _) = fault_lan(seed, vec![ab_flow().probability(0.5)]);
        fault_flow(&mut sim, a, b, 40)
    };
    let first = run(5);
    assert_eq!(first, run(5), "same seed, same losses");
    assert!(first.len() > 5 && first.len() < 35, "{}", first.len());
    assert_ne!(first, run(6));
}

#[test]
fn faults_are_bounded() {
    let mut sim = Sim::new(1);
    for _ in 0..MAX_FAULTS {
        sim.add_fault(Fault::new(FaultAction::Duplicate).nth(u64::MAX))
            .unwrap();
    }
    let err = sim.add_fault(Fault::new(FaultAction::Drop)).unwrap_err();
    assert_eq!(err, SimError::TooManyFaults(MAX_FAULTS));
}

/// Seed 002 (default world: both devices behind home routers): one chosen packet of the
/// right-password flow is dropped, and the request still connects in its first attempt.
/// The packets: the issuer's ClientHello segment on its channel to the server (recovered
/// by the host TCP's retransmission), and the issuer's punch confirmation to the acceptor
/// (recovered because in this world both sides' punches get through and both confirm).
#[test]
fn fault_drop_in_seed_002_flow_is_recovered() {
    for (name, label) in [
        ("client hello", "ClientHello"),
        ("punch confirmation", "PunchConfirm"),
    ] {
        let mut sim = Sim::new(1);
        let w = Seed002::build(&mut sim, WorldConfig::default()).unwrap();
        sim.run_for(Duration::from_secs(1)).unwrap();
        let fault = match label {
            "ClientHello" => Fault::new(FaultAction::Drop)
                .from_node(w.issuer)
                .protocol(packet::PROTO_TCP)
                .with_payload()
                .nth(0),
            // The issuer's datagrams to the acceptor's router: punch, ack, confirmation.
            _ => Fault::new(FaultAction::Drop)
                .from_node(w.issuer_router.unwrap())
                .to_node(w.acceptor_router.unwrap())
                .protocol(packet::PROTO_UDP)
                .nth(2),
        };
        let id = sim.add_fault(fault).unwrap();
        let session = w.connect(&mut sim, b"2133-secret").unwrap();
        let outcome = w.wait(&mut sim, session, Duration::from_secs(30)).unwrap();
        assert!(
            matches!(outcome, Outcome::Connected { attempt: 1 }),
            "{name}: {outcome}"
        );
        assert_eq!(sim.fault_stats(id).unwrap().applied, 1, "{name}");
        let injected: Vec<String> = sim
            .drops()
            .filter(|e| e.drop_reason() == Some(DropReason::Injected))
            .map(|e| e.label.clone())
            .collect();
        assert_eq!(injected.len(), 1, "{name}");
        assert!(injected[0].contains(label), "{name}: dropped {injected:?}");
    }
}

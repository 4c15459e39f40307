//! Seed 000 through the simulator: a closed home network (192.168.0.0/24) behind a gateway,
//! the open network (203.0.113.0/24) with remote nodes, and every flow of the seed.
//!
//! ```text
//!  appliances ─ devices ─[closed tap]─ home ─ proxy          wan ─[open tap]─ internet ─ remote nodes
//!  .10 .11 .12  (192.168.0/24)          │  .2                 │               (203.0.113/24) .20 .21 .22
//!                                       └── gateway .1 / 203.0.113.1 ──┘
//! ```
//!
//! The gateway keeps the home network closed except for the appliances' datagram port
//! (a static opening, so plaintext can reach them: the threat of flow A') and the proxy's
//! stream port. The two taps are transparent bridges that record every packet and, when a
//! test arms them, drop, alter or replay one.
//!
//! Every test asserts what each party received: the events of the appliances, the proxy
//! and the remote nodes, and where it matters the packets on the wire.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use deputy::channel::{ChannelError, ClientCertPolicy, ClientConfig, Psk, ServerConfig};
use deputy::crypto::CertError;
use deputy::crypto::cert::{CertificateAuthority, TrustStore};
use deputy::offload::messages::{self, Message};
use deputy::offload::{
    AccessPolicy, Appliance, ApplianceConfig, ApplianceEvent, ApplianceParams, CryptoProxy,
    DirectKey, Discovery, LinkKey, OffloadError, OffloadEvent, OffloadRefusal, Peer, ProxyConfig,
    ProxyEvent, RemoteEvent, RemoteNode, RemoteNodeConfig, ServedAppliance, Solicited, StartedBy,
    Target,
};
use deputy::sim::fault::{Fault, FaultAction};
use deputy::sim::packet::{self, TcpSegment};
use deputy::sim::{
    AllowRule, DatagramProbe, DropReason, GatewayConfig, LinkConfig, NetworkId, NodeId, Proto, Sim,
    TraceKind,
};
use deputy::{Actor, Error, Event, IfaceId, Input, Instant, Outbox, Output, UnixTime};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;

mod common;
use common::{Build, FromEvent, ip, probe_send, probe_send_from, probe_take};

const ANCHOR: UnixTime = UnixTime(1_800_000_000);
const YEAR: u64 = 365 * 86_400;
const APPLIANCE_PORT: u16 = 5683;
const PROXY_UDP: u16 = 5684;
const PROXY_TCP: u16 = 8443;
const REMOTE_UDP: u16 = 7000;
const REMOTE_TCP: u16 = 7443;
const HEAT: &[u8] = b"heat for one hour";

fn sa(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

// ----- taps: transparent bridges that can drop, alter and replay -----

enum Verdict {
    Forward,
    Drop,
    Replace(Vec<u8>),
}

type Rule = Box<dyn FnMut(IfaceId, &[u8]) -> Verdict>;

/// A bump in the wire: forwards interface 0 ↔ 1, records every packet, and applies the
/// armed rule.
struct Tap {
    seen: Vec<(IfaceId, Vec<u8>)>,
    rule: Option<Rule>,
    outbox: Outbox<Event>,
}

impl Tap {
    fn new() -> Self {
        Tap {
            seen: Vec::new(),
            rule: None,
            outbox: Outbox::default(),
        }
    }

    fn arm(&mut self, rule: impl FnMut(IfaceId, &[u8]) -> Verdict + 'static) {
        self.rule = Some(Box::new(rule));
    }

    /// Arm a rule that drops the first packet `matches` picks, and forwards everything else.
    fn drop_once(&mut self, matches: impl Fn(IfaceId, &[u8]) -> bool + 'static) {
        let mut done = false;
        self.arm(move |iface, data| {
            if !done && matches(iface, data) {
                done = true;
                return Verdict::Drop;
            }
            Verdict::Forward
        })
    }

    fn disarm(&mut self) {
        self.rule = None;
    }

    /// Put a packet on `iface` as if it had just crossed.
    fn inject(&mut self, iface: IfaceId, data: Vec<u8>) {
        self.outbox.push(Output::Packet { iface, data }).unwrap();
    }
}

impl Actor for Tap {
    type Event = Event;

    fn handle_input(&mut self, _now: Instant, input: Input<'_>) -> Result<(), Error> {
        // A tap sits on a link: the simulator hands it packets only. Anything else is a
        // broken test world, so fail the test loudly.
        let Input::Packet { iface, data } = input else {
            panic!("a tap takes packets, got {input:?}");
        };
        self.seen.push((iface, data.to_vec()));
        let out = IfaceId(1 - iface.0.min(1));
        let verdict = match self.rule.as_mut() {
            Some(rule) => rule(iface, data),
            None => Verdict::Forward,
        };
        match verdict {
            Verdict::Forward => self.outbox.push(Output::Packet {
                iface: out,
                data: data.to_vec(),
            }),
            Verdict::Drop => Ok(()),
            Verdict::Replace(data) => self.outbox.push(Output::Packet { iface: out, data }),
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_output(&mut self) -> Option<Output<Event>> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// The UDP/TCP payload of a packet that carries a deputy message of type `ty` (first one).
fn carries(data: &[u8], ty: u8) -> bool {
    packet::parse(data)
        .is_ok_and(|p| p.payload.len() >= 16 && p.payload[..2] == *b"DP" && p.payload[3] == ty)
}

/// Rebuild a TCP segment with another payload (same addresses, flags, numbers).
fn with_tcp_payload(data: &[u8], payload: &[u8]) -> Vec<u8> {
    let p = packet::parse(data).unwrap();
    let t = p.tcp.unwrap();
    let seg = TcpSegment {
        flags: t.flags,
        seq: t.seq,
        ack: t.ack,
        window: t.window,
    };
    packet::build_tcp(
        p.src_socket().unwrap(),
        p.dst_socket().unwrap(),
        p.ttl,
        &seg,
        payload,
    )
    .unwrap()
}

/// A TCP segment from `src` carrying data.
fn tcp_data_from(data: &[u8], src: IpAddr) -> bool {
    packet::parse(data).is_ok_and(|p| p.tcp.is_some() && p.src == src && !p.payload.is_empty())
}

// ----- the world -----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    /// A client certificate from the home CA naming the node.
    Cert,
    /// A pre-shared key registered at the proxy.
    Psk,
    /// A PSK the proxy does not know.
    UnknownPsk,
    /// No client authentication at all.
    Anonymous,
}

#[derive(Clone)]
struct Setup {
    seed: u64,
    appliances: Vec<&'static str>,
    remotes: Vec<(&'static str, Auth)>,
    access: Vec<(&'static str, AccessPolicy)>,
    link_key: bool,
    home_loss: f64,
    internet_loss: f64,
    proxy: fn(&mut ProxyConfig),
    remote: fn(&str, &mut RemoteNodeConfig),
    appliance: fn(&str, &mut ApplianceConfig),
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            seed: 0,
            appliances: vec!["microwave"],
            remotes: vec![("phone", Auth::Cert)],
            access: Vec::new(),
            link_key: false,
            home_loss: 0.0,
            internet_loss: 0.0,
            proxy: |_| {},
            remote: |_, _| {},
            appliance: |_, _| {},
        }
    }
}

impl Setup {
    /// The default system, its closed-network link keyed or not.
    fn keyed(link_key: bool) -> Setup {
        Setup {
            link_key,
            ..Setup::default()
        }
    }
}

struct Home {
    sim: Sim,
    ca: CertificateAuthority,
    rng: ChaCha20Rng,
    internet: NetworkId,
    devices: NetworkId,
    proxy: NodeId,
    open_tap: NodeId,
    closed_tap: NodeId,
    appliances: BTreeMap<String, (NodeId, SocketAddr)>,
    remotes: BTreeMap<String, (NodeId, SocketAddr)>,
}

fn psk_for(name: &str) -> Psk {
    let mut key = [0x5a; 32];
    key[..name.len().min(32)].copy_from_slice(&name.as_bytes()[..name.len().min(32)]);
    Psk::new(name, &key).unwrap()
}

fn proxy_addr() -> SocketAddr {
    sa(ip("192.168.0.2"), PROXY_UDP)
}

fn proxy_public() -> SocketAddr {
    sa(ip("192.168.0.2"), PROXY_TCP)
}

impl Home {
    fn new(setup: Setup) -> Home {
        let mut sim = Sim::new(setup.seed);
        let mut rng = sim.rng("offload/pki");
        let ca = CertificateAuthority::generate("home CA", &mut rng);
        let home_link = LinkConfig::with_latency(Duration::from_millis(1)).loss(setup.home_loss);
        let net_link =
            LinkConfig::with_latency(Duration::from_millis(20)).loss(setup.internet_loss);
        // Two halves of one subnet each side of the gateway, joined by a tap (a bridge with
        // no address): the tests can watch and tamper with what crosses without a router
        // changing any address.
        let home = sim.net_with("home", "192.168.0.0/24", home_link);
        let devices = sim.net_with("devices", "192.168.0.0/24", home_link);
        let wan = sim.net_with(
            "wan",
            "203.0.113.0/24",
            LinkConfig::with_latency(Duration::from_millis(1)),
        );
        let internet = sim.net_with("internet", "203.0.113.0/24", net_link);

        let mut gw = GatewayConfig::default().allow(AllowRule {
            protocol: Some(Proto::Tcp.number()),
            to: Some(ip("192.168.0.2")),
            port: Some(PROXY_TCP),
        });
        let appliance_ips: Vec<IpAddr> = (0..setup.appliances.len())
            .map(|i| ip(&format!("192.168.0.{}", 10 + i)))
            .collect();
        for a in &appliance_ips {
            gw = gw.allow(AllowRule {
                protocol: Some(Proto::Udp.number()),
                to: Some(*a),
                port: Some(APPLIANCE_PORT),
            });
        }
        sim.add_gateway(
            "gateway",
            home,
            ip("192.168.0.1"),
            wan,
            ip("203.0.113.1"),
            gw,
        )
        .unwrap();
        let closed_tap = sim
            .add_inline("closed-tap", home, devices, Tap::new())
            .unwrap();
        let open_tap = sim
            .add_inline("open-tap", wan, internet, Tap::new())
            .unwrap();

        let link_key = setup
            .link_key
            .then(|| LinkKey::new(b"provisioned link key for the home").unwrap());

        // The proxy: its certificate names every appliance it deputizes for.
        let names: Vec<&str> = setup.appliances.clone();
        let identity = ca
            .issue_identity("proxy.home", &names, ANCHOR, YEAR, &mut rng)
            .unwrap();
        let mut channel = ServerConfig::with_certificate(identity, ANCHOR);
        channel.client_certs =
            ClientCertPolicy::Optional(TrustStore::with(ca.certificate().clone()));
        for (name, auth) in &setup.remotes {
            if *auth == Auth::Psk {
                channel.add_psk(psk_for(name)).unwrap();
            }
        }
        let mut pc = ProxyConfig::new(channel, proxy_addr());
        for (name, addr) in setup.appliances.iter().zip(&appliance_ips) {
            let access = setup
                .access
                .iter()
                .find(|(n, _)| n == name)
                .map_or(AccessPolicy::AnyAuthenticated, |(_, a)| a.clone());
            let mut served = ServedAppliance::new(sa(*addr, APPLIANCE_PORT), access);
            if let Some(k) = &link_key {
                served.link_key = Some(k.clone());
            }
            pc.serve(name, served).unwrap();
        }
        (setup.proxy)(&mut pc);
        let proxy = sim.host(
            "crypto-proxy",
            home,
            "192.168.0.2",
            CryptoProxy::new(pc, Box::new(sim.rng("offload/proxy"))),
        );
        sim.listen(proxy, PROXY_TCP).unwrap();

        let mut appliances = BTreeMap::new();
        for (name, addr) in setup.appliances.iter().zip(&appliance_ips) {
            let local = sa(*addr, APPLIANCE_PORT);
            let mut cfg = ApplianceConfig::new(ApplianceParams {
                name: name.to_string(),
                local,
                proxy: proxy_addr(),
                proxy_public: proxy_public(),
            })
            .unwrap();
            if let Some(k) = &link_key {
                cfg.link_key = Some(k.clone());
            }
            (setup.appliance)(name, &mut cfg);
            let rng = Box::new(sim.rng(&format!("offload/{name}")));
            let node = sim.host(name, devices, *addr, Appliance::new(cfg, rng));
            appliances.insert(name.to_string(), (node, local));
        }

        let mut remotes = BTreeMap::new();
        for (i, (name, auth)) in setup.remotes.iter().enumerate() {
            let addr = ip(&format!("203.0.113.{}", 20 + i));
            let trust = TrustStore::with(ca.certificate().clone());
            let channel = match auth {
                Auth::Cert => {
                    let me = ca
                        .issue_identity(name, &[], ANCHOR, YEAR, &mut rng)
                        .unwrap();
                    ClientConfig::with_client_certificate(trust, "proxy.home", me, ANCHOR)
                }
                Auth::Anonymous => ClientConfig::with_ca(trust, "proxy.home", ANCHOR),
                Auth::Psk => ClientConfig::with_psk(psk_for(name), ANCHOR),
                Auth::UnknownPsk => ClientConfig::with_psk(psk_for("nobody-knows"), ANCHOR),
            };
            let mut cfg = RemoteNodeConfig::new(channel, sa(addr, REMOTE_UDP));
            if matches!(auth, Auth::Psk | Auth::UnknownPsk) {
                cfg.psk_scope = setup.appliances.iter().map(|a| a.to_string()).collect();
            }
            (setup.remote)(name, &mut cfg);
            let rng = Box::new(sim.rng(&format!("offload/{name}")));
            let node = sim.host(name, internet, addr, RemoteNode::new(cfg, rng));
            sim.listen(node, REMOTE_TCP).unwrap();
            remotes.insert(name.to_string(), (node, sa(addr, REMOTE_UDP)));
        }
        Home {
            sim,
            ca,
            rng,
            internet,
            devices,
            proxy,
            open_tap,
            closed_tap,
            appliances,
            remotes,
        }
    }

    fn appliance(&self, name: &str) -> NodeId {
        self.appliances[name].0
    }

    fn remote(&self, name: &str) -> NodeId {
        self.remotes[name].0
    }

    fn target(&self, name: &str) -> Target {
        Target::new(name, self.appliances[name].1)
    }

    /// The remote node's stream address (flow B dials it).
    fn remote_stream(&self, name: &str) -> SocketAddr {
        sa(self.remotes[name].1.ip(), REMOTE_TCP)
    }

    fn run(&mut self, secs: u64) {
        self.sim.run_for(Duration::from_secs(secs)).unwrap();
    }

    fn send(&mut self, remote: &str, appliance: &str, data: &[u8]) {
        let target = self.target(appliance);
        let node = self.remote(remote);
        self.sim
            .command(node, |r: &mut RemoteNode, now| r.send(now, &target, data))
            .unwrap();
    }

    fn send_plaintext(&mut self, remote: &str, appliance: &str, data: &[u8]) {
        let target = self.target(appliance);
        let node = self.remote(remote);
        self.sim
            .command(node, |r: &mut RemoteNode, now| {
                r.send_plaintext(now, &target, data)
            })
            .unwrap();
    }

    /// Flow B, S31: `appliance` asks for a session with `remote`.
    fn connect(&mut self, appliance: &str, remote: &str, expect: Option<Peer>) -> u64 {
        let to = self.remote_stream(remote);
        let node = self.appliance(appliance);
        self.sim
            .command(node, |a: &mut Appliance, now| a.connect(now, to, expect))
            .unwrap()
    }

    /// Flow B up to S34 with no identity required: the session comes up and is all the
    /// appliance reports within `secs`.
    fn open_session(&mut self, appliance: &str, remote: &str, secs: u64) -> u64 {
        let request = self.connect(appliance, remote, None);
        self.run(secs);
        let events = self.appliance_events(appliance);
        assert!(matches!(
            events.as_slice(),
            [ApplianceEvent::SessionUp { request: Some(r), .. }] if *r == request
        ));
        session_of(&events)
    }

    fn appliance_send(&mut self, appliance: &str, session: u64, data: &[u8]) {
        let node = self.appliance(appliance);
        self.sim
            .command(node, |a: &mut Appliance, now| a.send(now, session, data))
            .unwrap();
    }

    fn events(&mut self, node: NodeId) -> Vec<OffloadEvent> {
        common::events(&mut self.sim, node)
    }

    /// `node`'s offload events, all of which must be `T`s: each node runs one kind of
    /// seed 000 actor, so an appliance reporting a proxy event is a bug.
    fn events_of<T: FromEvent>(&mut self, node: NodeId) -> Vec<T> {
        self.events(node)
            .into_iter()
            .map(common::expect_offload_event)
            .collect()
    }

    fn appliance_events(&mut self, name: &str) -> Vec<ApplianceEvent> {
        let node = self.appliance(name);
        self.events_of(node)
    }

    /// `appliance`'s events, which include a session coming up, and that session.
    fn session_events(&mut self, appliance: &str) -> (Vec<ApplianceEvent>, u64) {
        let events = self.appliance_events(appliance);
        let session = session_of(&events);
        (events, session)
    }

    fn proxy_events(&mut self) -> Vec<ProxyEvent> {
        let node = self.proxy;
        self.events_of(node)
    }

    fn remote_events(&mut self, name: &str) -> Vec<RemoteEvent> {
        let node = self.remote(name);
        self.events_of(node)
    }

    fn faults(&self, node: NodeId) -> Vec<Error> {
        self.sim
            .faults(node)
            .unwrap()
            .iter()
            .map(|f| f.error.clone())
            .collect()
    }

    /// No actor reported an error.
    fn assert_no_faults(&self) {
        let mut nodes = vec![self.proxy];
        nodes.extend(self.appliances.values().map(|(n, _)| *n));
        nodes.extend(self.remotes.values().map(|(n, _)| *n));
        for n in nodes {
            let f = self.faults(n);
            assert!(f.is_empty(), "{}: {f:?}", self.sim.node_name(n).unwrap());
        }
    }

    /// Labels of the packets put on `net`, in order.
    fn labels(&self, net: NetworkId) -> Vec<String> {
        self.sim
            .trace()
            .iter()
            .filter(|e| matches!(e.kind, TraceKind::Hop { net: n, .. } if n == net))
            .map(|e| e.label.clone())
            .collect()
    }

    /// Every packet that crossed between the gateway and the internet.
    fn open_network_packets(&self) -> Vec<Vec<u8>> {
        let tap = self.sim.actor::<Tap>(self.open_tap).unwrap();
        tap.seen.iter().map(|(_, d)| d.clone()).collect()
    }

    /// Whether `data` crossed the open network in clear, in any packet.
    fn seen_in_clear(&self, data: &[u8]) -> bool {
        self.open_network_packets()
            .iter()
            .any(|p| contains(p, data))
    }

    fn closed_tap(&mut self, f: impl FnOnce(&mut Tap)) {
        let node = self.closed_tap;
        self.sim.with_actor(node, |t: &mut Tap, _| f(t)).unwrap();
    }

    fn open_tap(&mut self, f: impl FnOnce(&mut Tap)) {
        let node = self.open_tap;
        self.sim.with_actor(node, |t: &mut Tap, _| f(t)).unwrap();
    }

    /// Add a host on the internet with any actor.
    fn add_internet_host(
        &mut self,
        name: &str,
        addr: &str,
        actor: impl Actor<Event: Into<Event>> + 'static,
    ) -> NodeId {
        let net = self.internet;
        self.sim.host(name, net, ip(addr), actor)
    }
}

/// `needles` appear in `haystack` in this order (not necessarily adjacent).
fn assert_in_order(haystack: &[String], needles: &[&str]) {
    let mut it = haystack.iter();
    for needle in needles {
        assert!(
            it.any(|l| l.contains(needle)),
            "{needle:?} missing (in order) from {haystack:#?}"
        );
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn session_of(events: &[ApplianceEvent]) -> u64 {
    events
        .iter()
        .find_map(|e| match e {
            ApplianceEvent::SessionUp { session, .. } => Some(*session),
            _ => None,
        })
        .expect("a session")
}

fn delivered(events: &[ApplianceEvent]) -> Vec<(Option<u64>, Peer, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            ApplianceEvent::Delivered {
                session,
                from,
                data,
            } => Some((*session, from.clone(), data.clone())),
            _ => None,
        })
        .collect()
}

/// What reached the appliance's application, without the session and the sender.
fn delivered_data(events: &[ApplianceEvent]) -> Vec<Vec<u8>> {
    delivered(events).into_iter().map(|(_, _, d)| d).collect()
}

/// What reached the appliance's application, by sender.
fn delivered_from(events: &[ApplianceEvent]) -> Vec<(Peer, Vec<u8>)> {
    delivered(events)
        .into_iter()
        .map(|(_, p, d)| (p, d))
        .collect()
}

fn received(events: &[RemoteEvent]) -> Vec<(String, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            RemoteEvent::Received { appliance, data } => Some((appliance.clone(), data.clone())),
            _ => None,
        })
        .collect()
}

/// A datagram sealed with weak key `id` (all key bytes 1), as a remote node sends it.
fn remote_sealed(id: u32, data: &[u8]) -> Vec<u8> {
    let mut cfg = RemoteNodeConfig::new(
        ClientConfig::with_psk(psk_for("x"), ANCHOR),
        sa(ip("203.0.113.9"), 1),
    );
    cfg.direct_keys
        .push(("toaster".into(), DirectKey::new(id, &[1; 32])));
    cfg.probe_len = 0;
    let mut node = RemoteNode::new(cfg, Box::new(Sim::new(0).rng("sealer")));
    let target = Target::new("toaster", sa(ip("192.168.0.99"), APPLIANCE_PORT));
    node.send_direct(Instant::ZERO, &target, data).unwrap();
    match node.poll_output() {
        Some(Output::Transmit(t)) => t.data,
        other => panic!("{other:?}"),
    }
}

fn phone() -> Peer {
    Peer::Certificate("phone".into())
}

// Expected events, spelled once: most flows run between the phone and the microwave.

fn session_up(appliance: &str, initiated_by: StartedBy) -> RemoteEvent {
    RemoteEvent::SessionUp {
        appliance: appliance.into(),
        initiated_by,
    }
}

/// The microwave named the proxy to the remote node (S22, or S42 when `solicited`).
fn designated(solicited: bool) -> RemoteEvent {
    RemoteEvent::Designated {
        appliance: "microwave".into(),
        proxy: proxy_public(),
        solicited,
    }
}

fn phone_session(session: u64, initiated_by: StartedBy, request: Option<u64>) -> ApplianceEvent {
    ApplianceEvent::SessionUp {
        session,
        remote: phone(),
        initiated_by,
        request,
    }
}

fn from_phone(session: u64, data: &[u8]) -> ApplianceEvent {
    ApplianceEvent::Delivered {
        session: Some(session),
        from: phone(),
        data: data.to_vec(),
    }
}

/// What a remote node the proxy refuses reports: the typed refusal, then the failed set-up.
fn refusal(reason: OffloadRefusal) -> [RemoteEvent; 2] {
    [
        RemoteEvent::Refused {
            appliance: "microwave".into(),
            reason,
        },
        RemoteEvent::Failed {
            appliance: Some("microwave".into()),
            error: OffloadError::Refused(reason),
        },
    ]
}

/// The proxy's account of a phone–microwave session that carried one message of `len`
/// bytes.
fn proxy_session(
    session: u64,
    initiated_by: StartedBy,
    to_appliance: bool,
    len: usize,
) -> [ProxyEvent; 2] {
    [
        ProxyEvent::SessionUp {
            session,
            appliance: "microwave".into(),
            remote: phone(),
            initiated_by,
        },
        ProxyEvent::Forwarded {
            session,
            appliance: "microwave".into(),
            to_appliance,
            len,
        },
    ]
}

// ----- the flows -----

/// Flow A (S21–S26): the remote node asks the appliance, is designated the proxy, proves
/// the proxy deputizes for the appliance, and its data reaches the appliance decrypted on
/// the closed network. The appliance's reply goes back the same way.
#[test]
fn remote_initiated_flow() {
    let mut h = Home::new(Setup::default());
    h.send("phone", "microwave", b"defrost 300 g");
    h.run(3);

    let remote = h.remote_events("phone");
    assert_eq!(
        remote,
        [
            designated(false),
            session_up("microwave", StartedBy::Remote),
        ]
    );
    let (appliance, s) = h.session_events("microwave");
    assert_eq!(
        appliance,
        [
            ApplianceEvent::CryptoRequested {
                from: h.remotes["phone"].1,
                answer: Solicited::Full
            },
            phone_session(s, StartedBy::Remote, None),
            from_phone(s, b"defrost 300 g"),
        ]
    );
    assert_eq!(
        h.proxy_events(),
        proxy_session(s, StartedBy::Remote, true, 13)
    );

    // On the wire, in the seed's order: S21, S22 on the open network; the channel to the
    // proxy (S23–S25 are records inside it); S26 in clear on the closed network.
    assert_in_order(
        &h.labels(h.internet),
        &[
            "CryptoRequest",
            "CryptoAccept",
            "[SYN]",
            "ClientHello",
            "ServerHello",
            "Record",
        ],
    );
    assert_in_order(
        &h.labels(h.devices),
        &["CryptoRequest", "CryptoAccept", "PlainData", "Ack"],
    );
    assert!(
        !h.seen_in_clear(b"defrost"),
        "the data never crosses the open network in clear"
    );

    // The appliance answers on the same session (S35 → S36).
    h.appliance_send("microwave", s, b"defrosting, 4 min");
    h.run(2);
    assert_eq!(
        received(&h.remote_events("phone")),
        [("microwave".to_string(), b"defrosting, 4 min".to_vec())]
    );
    assert!(!h.seen_in_clear(b"defrosting"));
    h.assert_no_faults();
}

/// Flow A' (S42, then S23–S26): a forged plaintext "heat for one hour" is dropped unread
/// and answered with a crypto solicitation no larger than itself; a remote node that tries
/// plaintext first is solicited, goes through the proxy, and only that authenticated copy
/// reaches the application.
#[test]
fn refused_plaintext_flow() {
    let mut h = Home::new(Setup::default());
    let microwave = h.appliances["microwave"].1;

    // An attacker on the internet sends the seed's forged command, in the clear.
    let attacker = h.add_internet_host("attacker", "203.0.113.66", DatagramProbe::new(4000));
    probe_send(&mut h.sim, attacker, microwave, HEAT.to_vec());
    h.run(1);
    assert_eq!(
        h.appliance_events("microwave"),
        [ApplianceEvent::RefusedPlaintext {
            from: sa(ip("203.0.113.66"), 4000),
            len: HEAT.len(),
            answer: Solicited::Minimal
        }]
    );
    let answers = probe_take(&mut h.sim, attacker);
    assert_eq!(answers.len(), 1);
    assert!(answers[0].data.len() <= HEAT.len(), "no amplification");
    let decoded = Message::decode(&answers[0].data, &Default::default()).unwrap();
    assert!(matches!(
        decoded.message,
        Message::CryptoSolicitation(messages::CryptoSolicitation { designation: None })
    ));

    // The phone tries plaintext first (Fig. 4): refused, solicited (S42), then S23–S26.
    h.send_plaintext("phone", "microwave", HEAT);
    h.run(3);
    let (appliance, s) = h.session_events("microwave");
    assert_eq!(
        appliance,
        [
            ApplianceEvent::RefusedPlaintext {
                from: h.remotes["phone"].1,
                // The remote node pads open-network datagrams to its probe_len (192), so
                // the appliance may answer in full (Solicited::Full) without amplifying.
                len: 192,
                answer: Solicited::Full
            },
            phone_session(s, StartedBy::Remote, None),
            from_phone(s, HEAT),
        ]
    );
    assert_eq!(
        h.remote_events("phone"),
        [designated(true), session_up("microwave", StartedBy::Remote),]
    );
    assert_in_order(
        &h.labels(h.internet),
        &["PlainData", "CryptoSolicitation", "ClientHello", "Record"],
    );
    assert!(
        !h.labels(h.internet)
            .iter()
            .any(|l| l.contains("CryptoRequest")),
        "the solicitation carried the designation: no S21 needed"
    );
    assert_eq!(
        h.proxy_events().len(),
        2,
        "session up and one forward, nothing from the attacker"
    );
    h.assert_no_faults();
}

/// Ciphertext the appliance cannot open — sealed with a key it does not hold, or a secure
/// channel it cannot run — is refused like plaintext (flow A'). Data sealed with the weak
/// key it does hold is accepted (¶0062), once.
#[test]
fn undecryptable_data_is_refused() {
    let mut h = Home::new(Setup {
        appliance: |_, cfg| cfg.direct_keys.push(DirectKey::new(7, &[0x42; 32])),
        remote: |_, cfg| {
            cfg.direct_keys
                .push(("microwave".into(), DirectKey::new(7, &[0x42; 32])))
        },
        ..Setup::default()
    });
    let microwave = h.appliances["microwave"].1;
    let stranger = h.add_internet_host("stranger", "203.0.113.66", DatagramProbe::new(4000));

    // Sealed with the right key id but the wrong key, and a channel ClientHello.
    let forged = Message::SealedData(messages::SealedData {
        key_id: 7,
        seq: 1,
        ciphertext: vec![0xAB; HEAT.len() + 16],
    })
    .encode()
    .unwrap();
    let mut hello_rng = h.sim.rng("hello");
    let hello = {
        let cfg = ClientConfig::with_ca(
            TrustStore::with(h.ca.certificate().clone()),
            "microwave",
            ANCHOR,
        );
        let mut c =
            deputy::channel::Connection::client(cfg.into(), Instant::ZERO, &mut hello_rng).unwrap();
        c.take_outgoing()
    };
    for bytes in [forged.clone(), hello.clone()] {
        probe_send(&mut h.sim, stranger, microwave, bytes);
        h.run(1);
    }
    let from = sa(ip("203.0.113.66"), 4000);
    assert_eq!(
        h.appliance_events("microwave"),
        [
            ApplianceEvent::RefusedUndecryptable {
                from,
                len: forged.len(),
                answer: Solicited::Full
            },
            ApplianceEvent::RefusedUndecryptable {
                from,
                len: hello.len(),
                answer: Solicited::Full
            },
        ]
    );
    let answers = probe_take(&mut h.sim, stranger);
    assert_eq!(answers.len(), 2);
    for a in &answers {
        let m = Message::decode(&a.data, &Default::default())
            .unwrap()
            .message;
        assert_eq!(
            m,
            Message::CryptoSolicitation(messages::CryptoSolicitation {
                designation: Some(messages::Designation {
                    proxy: proxy_public(),
                    appliance: "microwave".into()
                })
            })
        );
    }

    // ¶0062: the phone holds the appliance's weak key; the appliance opens it itself.
    let target = h.target("microwave");
    let phone = h.remote("phone");
    h.sim
        .command(phone, |r: &mut RemoteNode, now| {
            r.send_direct(now, &target, b"light on")
        })
        .unwrap();
    h.run(1);
    assert_eq!(
        h.appliance_events("microwave"),
        [ApplianceEvent::Delivered {
            session: None,
            from: Peer::DirectKey(7),
            data: b"light on".to_vec()
        }]
    );
    // The same sealed datagram again (captured on the open network) is not acted on.
    let sealed = h
        .open_network_packets()
        .into_iter()
        .find(|p| {
            carries(p, messages::SEALED_DATA) && packet::parse(p).unwrap().src == ip("203.0.113.20")
        })
        .unwrap();
    let payload = packet::parse(&sealed).unwrap().payload.to_vec();
    probe_send(&mut h.sim, stranger, microwave, payload);
    h.run(1);
    assert_eq!(h.appliance_events("microwave"), []);
    assert_eq!(
        h.faults(h.appliance("microwave")),
        [Error::Offload(OffloadError::Replayed(1))]
    );
}

/// The remote node answers an appliance that opened the session (flow B) on that session,
/// by the appliance's name alone: it never learnt the appliance's address, and needs none.
/// With no session up the same call is refused.
#[test]
fn remote_node_answers_a_flow_b_session_without_an_address() {
    let mut h = Home::new(Setup::default());
    h.connect("microwave", "phone", Some(phone()));
    h.run(3);
    let phone_node = h.remote("phone");
    let reply = |h: &mut Home, appliance: &'static str| {
        h.sim
            .with_actor(phone_node, move |r: &mut RemoteNode, now| {
                r.send_on_session(now, appliance, b"noted")
            })
            .unwrap()
    };
    reply(&mut h, "microwave").unwrap();
    h.run(2);
    assert_eq!(
        delivered_from(&h.appliance_events("microwave")),
        [(phone(), b"noted".to_vec())]
    );
    assert_eq!(
        reply(&mut h, "aircon"),
        Err(Error::Offload(OffloadError::NoSession("aircon".into())))
    );
}

/// Flow B (S31–S36): the appliance asks its proxy for a session with a remote node; the
/// proxy opens the channel, sends the crypto request, gets the accept, confirms to the
/// appliance, and encrypts what the appliance sends in clear.
#[test]
fn appliance_initiated_flow() {
    let mut h = Home::new(Setup::default());
    let request = h.connect("microwave", "phone", Some(phone()));
    h.run(3);
    let (appliance, s) = h.session_events("microwave");
    assert_eq!(
        appliance,
        [phone_session(s, StartedBy::Appliance, Some(request))]
    );
    assert_eq!(
        h.remote_events("phone"),
        [session_up("microwave", StartedBy::Appliance)]
    );

    h.appliance_send("microwave", s, b"door opened");
    h.run(2);
    assert_eq!(
        h.remote_events("phone"),
        [RemoteEvent::Received {
            appliance: "microwave".into(),
            data: b"door opened".to_vec()
        }]
    );
    assert_eq!(
        h.proxy_events(),
        proxy_session(s, StartedBy::Appliance, false, 11)
    );
    // S31 and S34 on the closed network around the channel set-up; S35 then S36.
    assert_in_order(
        &h.labels(h.devices),
        &["ProxyRequest", "ProxyAccept", "PlainData"],
    );
    assert_in_order(&h.labels(h.internet), &["[SYN]", "ClientHello", "Record"]);
    assert!(!h.seen_in_clear(b"door opened"));

    // The remote node answers on the appliance's session.
    h.send("phone", "microwave", b"close it");
    h.run(2);
    assert_eq!(
        delivered(&h.appliance_events("microwave")),
        [(Some(s), phone(), b"close it".to_vec())]
    );
    h.assert_no_faults();
}

/// Embodiment 3: both flows at once, among two appliances and two remote nodes.
#[test]
fn both_directions_in_one_system() {
    let mut h = Home::new(Setup {
        appliances: vec!["microwave", "aircon"],
        remotes: vec![("phone", Auth::Cert), ("laptop", Auth::Psk)],
        ..Setup::default()
    });
    h.send("phone", "microwave", b"phone->microwave");
    let request = h.connect("aircon", "laptop", Some(Peer::Psk(b"laptop".to_vec())));
    h.send("laptop", "microwave", b"laptop->microwave");
    h.run(3);
    let (aircon, s_air) = h.session_events("aircon");
    assert_eq!(
        aircon,
        [ApplianceEvent::SessionUp {
            session: s_air,
            remote: Peer::Psk(b"laptop".to_vec()),
            initiated_by: StartedBy::Appliance,
            request: Some(request)
        }]
    );
    h.appliance_send("aircon", s_air, b"aircon->laptop");
    h.run(2);

    let mut from = delivered_from(&h.appliance_events("microwave"));
    from.sort();
    assert_eq!(
        from,
        [
            (phone(), b"phone->microwave".to_vec()),
            (Peer::Psk(b"laptop".to_vec()), b"laptop->microwave".to_vec()),
        ]
    );
    assert_eq!(received(&h.remote_events("phone")), []);
    let laptop = h.remote_events("laptop");
    assert_eq!(
        received(&laptop),
        [("aircon".to_string(), b"aircon->laptop".to_vec())]
    );
    assert!(laptop.contains(&session_up("aircon", StartedBy::Appliance)));
    assert!(laptop.contains(&session_up("microwave", StartedBy::Remote)));
    assert_eq!(
        h.sim.actor::<CryptoProxy>(h.proxy).unwrap().session_count(),
        3
    );
    h.assert_no_faults();
}

/// A designation pointing at an attacker's proxy fails with a typed error and no data
/// leaves the remote node: a proxy certified by another CA, one certified by the home CA
/// for other appliances only, and one whose certificate has another subject.
#[test]
fn forged_proxy_designation_fails() {
    // The phone keeps the proxy name out of its hello, so each attacker's certificate
    // reaches the phone's own checks (an honest server would refuse the name first).
    let mut h = Home::new(Setup {
        remote: |_, r| {
            if let Some(c) = std::sync::Arc::get_mut(&mut r.channel) {
                c.send_server_name = false;
            }
        },
        ..Setup::default()
    });
    let mut rng = h.sim.rng("evil");
    let evil_ca = CertificateAuthority::generate("evil CA", &mut rng);
    let cases: Vec<(&str, &str, deputy::crypto::cert::CertifiedKey, &str)> = vec![
        (
            "203.0.113.66",
            "203.0.113.67",
            evil_ca
                .issue_identity("proxy.home", &["microwave"], ANCHOR, YEAR, &mut rng)
                .unwrap(),
            "microwave",
        ),
        (
            "203.0.113.68",
            "203.0.113.69",
            h.ca.issue_identity("proxy.home", &["tv"], ANCHOR, YEAR, &mut h.rng)
                .unwrap(),
            "tv",
        ),
        (
            "203.0.113.70",
            "203.0.113.71",
            h.ca.issue_identity("proxy.neighbour", &["microwave"], ANCHOR, YEAR, &mut h.rng)
                .unwrap(),
            "microwave",
        ),
    ];
    let mut evil_proxies = Vec::new();
    for (i, (fake_ip, evil_ip, identity, serves)) in cases.into_iter().enumerate() {
        // The attacker's proxy, and a fake "microwave" that designates it.
        let evil_public = sa(ip(evil_ip), PROXY_TCP);
        let channel = ServerConfig::with_certificate(identity, ANCHOR);
        let mut pc = ProxyConfig::new(channel, sa(ip(evil_ip), PROXY_UDP));
        pc.serve(
            serves,
            ServedAppliance::new(sa(ip(fake_ip), 9), AccessPolicy::AnyAuthenticated),
        )
        .unwrap();
        let proxy = h.add_internet_host(
            &format!("evil-proxy-{i}"),
            evil_ip,
            CryptoProxy::new(pc, Box::new(h.sim.rng("evil-proxy"))),
        );
        h.sim.listen(proxy, PROXY_TCP).unwrap();
        let cfg = ApplianceConfig::new(ApplianceParams {
            name: "microwave".into(),
            local: sa(ip(fake_ip), APPLIANCE_PORT),
            proxy: sa(ip(evil_ip), PROXY_UDP),
            proxy_public: evil_public,
        })
        .unwrap();
        h.add_internet_host(
            &format!("fake-microwave-{i}"),
            fake_ip,
            Appliance::new(cfg, Box::new(h.sim.rng("fake"))),
        );
        evil_proxies.push((proxy, evil_public, sa(ip(fake_ip), APPLIANCE_PORT)));
    }

    let expected = [
        OffloadError::ProxyNotTrusted(ChannelError::Certificate(CertError::UnknownIssuer(
            "evil CA".into(),
        ))),
        OffloadError::ProxyNotDeputy {
            appliance: "microwave".into(),
        },
        OffloadError::ProxyNotTrusted(ChannelError::Certificate(CertError::NameMismatch {
            expected: "proxy.home".into(),
        })),
    ];
    for ((proxy, evil_public, fake), error) in evil_proxies.into_iter().zip(expected) {
        // The phone is pointed at the fake microwave (a spoofed address book, DNS …).
        let target = Target::new("microwave", fake);
        let phone = h.remote("phone");
        h.sim
            .command(phone, |r: &mut RemoteNode, now| {
                r.send(now, &target, b"unlock the back door")
            })
            .unwrap();
        h.run(3);
        assert_eq!(
            h.remote_events("phone"),
            [
                RemoteEvent::Designated {
                    appliance: "microwave".into(),
                    proxy: evil_public,
                    solicited: false
                },
                RemoteEvent::Failed {
                    appliance: Some("microwave".into()),
                    error
                },
            ]
        );
        let evil = h.events(proxy);
        assert!(
            !evil.iter().any(|e| matches!(
                e,
                OffloadEvent::Proxy(ProxyEvent::SessionUp { .. } | ProxyEvent::Forwarded { .. })
            )),
            "{evil:?}"
        );
        assert!(!h.sim.actor::<RemoteNode>(phone).unwrap().is_up("microwave"));
    }
    // The real microwave never heard of any of it.
    assert_eq!(h.appliance_events("microwave"), []);
}

/// The proxy authenticates remote nodes and applies the appliance's access policy:
/// a node not on the list, an anonymous node and a node with an unknown key are refused
/// with typed refusals; so is an appliance's session with a node the policy excludes.
#[test]
fn unauthorized_remote_is_refused() {
    let mut h = Home::new(Setup {
        remotes: vec![
            ("phone", Auth::Cert),
            ("laptop", Auth::Cert),
            ("anonymous", Auth::Anonymous),
            ("kiosk", Auth::UnknownPsk),
        ],
        access: vec![("microwave", AccessPolicy::Only(vec![phone()]))],
        ..Setup::default()
    });
    for who in ["phone", "laptop", "anonymous", "kiosk"] {
        h.send(who, "microwave", format!("{who} says hi").as_bytes());
    }
    h.run(3);
    assert_eq!(
        delivered_from(&h.appliance_events("microwave")),
        [(phone(), b"phone says hi".to_vec())]
    );
    for who in ["laptop", "anonymous"] {
        let events = h.remote_events(who);
        assert_eq!(events[1..], refusal(OffloadRefusal::AccessDenied), "{who}");
    }
    assert_eq!(
        h.remote_events("kiosk")[1..],
        [RemoteEvent::Failed {
            appliance: Some("microwave".into()),
            error: OffloadError::CredentialsRefused(ChannelError::PeerAlert(
                deputy::channel::AlertCode::UnknownPskIdentity
            ))
        }]
    );
    let proxy = h.proxy_events();
    let refused: Vec<(Option<Peer>, OffloadRefusal)> = proxy
        .iter()
        .filter_map(|e| match e {
            ProxyEvent::Refused { remote, reason, .. } => Some((remote.clone(), *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        [
            (
                Some(Peer::Certificate("laptop".into())),
                OffloadRefusal::AccessDenied
            ),
            (None, OffloadRefusal::AccessDenied),
        ]
    );

    // Flow B toward a node the policy excludes: refused before S32.
    let request = h.connect("microwave", "laptop", None);
    h.run(3);
    assert_eq!(
        h.appliance_events("microwave"),
        [ApplianceEvent::Refused {
            request,
            reason: OffloadRefusal::AccessDenied
        }]
    );
    assert_eq!(
        h.remote_events("laptop"),
        refusal(OffloadRefusal::AccessDenied)
    );
    // And one the appliance names but a different node answers at that address.
    let request = h.connect(
        "microwave",
        "phone",
        Some(Peer::Certificate("laptop".into())),
    );
    h.run(3);
    assert_eq!(
        h.appliance_events("microwave"),
        [ApplianceEvent::Refused {
            request,
            reason: OffloadRefusal::AccessDenied
        }]
    );
}

/// A record altered on the open network fails the channel (the proxy delivers nothing
/// from it); a datagram altered on the keyed closed-network link is refused and the
/// authentic retransmission is delivered once.
#[test]
fn tampered_secure_data_is_dropped() {
    let mut h = Home::new(Setup::keyed(true));
    h.send("phone", "microwave", b"status?");
    h.run(3);
    assert_eq!(delivered(&h.appliance_events("microwave")).len(), 1);
    h.remote_events("phone");
    h.proxy_events();

    // Flip one ciphertext bit in the phone's next record (S25).
    let phone_ip = h.remotes["phone"].1.ip();
    h.open_tap(|t| {
        let mut done = false;
        t.arm(move |_, data| {
            if done || !tcp_data_from(data, phone_ip) {
                return Verdict::Forward;
            }
            done = true;
            let mut payload = packet::parse(data).unwrap().payload.to_vec();
            let last = payload.len() - 1;
            payload[last] ^= 0x01;
            Verdict::Replace(with_tcp_payload(data, &payload))
        })
    });
    h.send("phone", "microwave", b"unlock the door");
    h.run(3);
    h.open_tap(Tap::disarm);
    let appliance = h.appliance_events("microwave");
    assert!(delivered(&appliance).is_empty(), "{appliance:?}");
    assert!(matches!(
        appliance.as_slice(),
        [ApplianceEvent::SessionClosed {
            reason: OffloadRefusal::Closed,
            ..
        }]
    ));
    let proxy = h.proxy_events();
    assert!(
        proxy.iter().any(|e| matches!(
            e,
            ProxyEvent::ChannelFailed {
                error: ChannelError::DecryptFailed,
                ..
            }
        )),
        "{proxy:?}"
    );
    let remote = h.remote_events("phone");
    assert!(
        remote.contains(&RemoteEvent::Failed {
            appliance: Some("microwave".into()),
            error: OffloadError::Channel(ChannelError::PeerAlert(
                deputy::channel::AlertCode::BadRecordMac
            ))
        }),
        "{remote:?}"
    );

    // On the closed network: alter the next S26 once; the MAC catches it, and the proxy's
    // retransmission delivers the authentic data exactly once.
    h.closed_tap(|t| {
        let mut done = false;
        t.arm(move |iface, data| {
            if done || iface != IfaceId(0) || !carries(data, messages::PLAIN_DATA) {
                return Verdict::Forward;
            }
            done = true;
            let p = packet::parse(data).unwrap();
            let mut payload = p.payload.to_vec();
            let at = payload.len() - 40;
            payload[at] ^= 0x20;
            Verdict::Replace(
                packet::build_udp(
                    p.src_socket().unwrap(),
                    p.dst_socket().unwrap(),
                    p.ttl,
                    &payload,
                )
                .unwrap(),
            )
        })
    });
    h.send("phone", "microwave", b"status again?");
    h.run(4);
    let appliance = h.appliance_events("microwave");
    assert_eq!(
        delivered(&appliance)
            .into_iter()
            .map(|(_, p, d)| (p, d))
            .collect::<Vec<_>>(),
        [(phone(), b"status again?".to_vec())]
    );
    assert_eq!(
        h.faults(h.appliance("microwave")),
        [Error::Offload(OffloadError::LinkAuthentication)]
    );
}

/// A record replayed into the channel fails it; a closed-network datagram replayed on the
/// link is acknowledged again but not acted on.
#[test]
fn replayed_secure_data_is_dropped() {
    let mut h = Home::new(Setup::keyed(true));
    h.send("phone", "microwave", b"heat 1 minute");
    h.run(3);
    let first = delivered(&h.appliance_events("microwave"));
    assert_eq!(first.len(), 1);
    let session = first[0].0.unwrap();

    // Replay S26 on the closed network, as captured by the tap, twice.
    let s26 = h
        .sim
        .actor::<Tap>(h.closed_tap)
        .unwrap()
        .seen
        .iter()
        .find(|(i, d)| *i == IfaceId(0) && carries(d, messages::PLAIN_DATA))
        .map(|(_, d)| d.clone())
        .unwrap();
    for _ in 0..2 {
        let copy = s26.clone();
        h.closed_tap(|t| t.inject(IfaceId(1), copy));
        h.run(1);
    }
    assert_eq!(h.appliance_events("microwave"), []);
    assert!(h.faults(h.appliance("microwave")).is_empty());

    // Replay the phone's first record (S25) in place of its next one on the open network.
    let phone_ip = h.remotes["phone"].1.ip();
    let records: Vec<Vec<u8>> = h
        .open_network_packets()
        .into_iter()
        .filter(|d| tcp_data_from(d, phone_ip))
        .map(|d| packet::parse(&d).unwrap().payload.to_vec())
        .collect();
    let s25 = records.last().unwrap().clone();
    h.open_tap(move |t| {
        let mut done = false;
        t.arm(move |_, data| {
            if done || !tcp_data_from(data, phone_ip) {
                return Verdict::Forward;
            }
            done = true;
            Verdict::Replace(with_tcp_payload(data, &s25))
        })
    });
    h.send("phone", "microwave", b"heat 9 minute");
    h.run(3);
    let appliance = h.appliance_events("microwave");
    assert!(delivered(&appliance).is_empty(), "{appliance:?}");
    assert_eq!(
        appliance,
        [ApplianceEvent::SessionClosed {
            session,
            reason: OffloadRefusal::Closed
        }]
    );
    assert!(h.proxy_events().iter().any(|e| matches!(
        e,
        ProxyEvent::ChannelFailed {
            error: ChannelError::RecordOutOfOrder {
                expected: 2,
                got: 1
            },
            ..
        }
    )));
}

/// Bounds: the proxy's session table, the appliance's, and the proxy's stream table.
#[test]
fn session_limit_is_enforced() {
    let mut h = Home::new(Setup {
        appliances: vec!["microwave", "aircon"],
        remotes: vec![
            ("phone", Auth::Cert),
            ("laptop", Auth::Cert),
            ("tablet", Auth::Cert),
        ],
        proxy: |p| p.max_sessions = 2,
        appliance: |name, a| {
            if name == "aircon" {
                a.max_sessions = 0;
            }
        },
        ..Setup::default()
    });
    // The aircon takes no sessions at all: the proxy's S26 is refused by the appliance.
    h.send("phone", "aircon", b"cool to 24");
    h.run(3);
    assert_eq!(delivered(&h.appliance_events("aircon")), []);
    let phone = h.remote_events("phone");
    assert!(
        phone.contains(&RemoteEvent::Refused {
            appliance: "aircon".into(),
            reason: OffloadRefusal::SessionLimit
        }),
        "{phone:?}"
    );
    assert!(matches!(
        h.faults(h.appliance("aircon")).as_slice(),
        [Error::CapacityExceeded {
            what: "appliance sessions",
            bound: 0
        }]
    ));

    // The proxy holds two sessions; the third remote node is refused with a reason.
    h.send("phone", "microwave", b"one");
    h.run(2);
    h.send("laptop", "microwave", b"two");
    h.run(2);
    h.send("tablet", "microwave", b"three");
    h.run(3);
    assert_eq!(
        h.sim.actor::<CryptoProxy>(h.proxy).unwrap().session_count(),
        2
    );
    let got = delivered_data(&h.appliance_events("microwave"));
    assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(
        h.remote_events("tablet")[1..],
        refusal(OffloadRefusal::SessionLimit)
    );
    // An appliance-initiated session is refused by the same bound.
    let request = h.connect("microwave", "tablet", None);
    h.run(2);
    assert_eq!(
        h.appliance_events("microwave"),
        [ApplianceEvent::Refused {
            request,
            reason: OffloadRefusal::SessionLimit
        }]
    );
    // Closing one frees a slot.
    let phone_node = h.remote("phone");
    h.sim
        .command(phone_node, |r: &mut RemoteNode, now| {
            r.close(now, "microwave")
        })
        .unwrap();
    h.run(2);
    h.send("tablet", "microwave", b"three again");
    h.run(3);
    assert_eq!(
        delivered_data(&h.appliance_events("microwave")),
        [b"three again".to_vec()]
    );
}

/// Two appliance-initiated set-ups pass the session check when their channels come up,
/// before either S33: the bound still holds when the S33s arrive.
#[test]
fn session_limit_holds_for_concurrent_appliance_requests() {
    let mut h = Home::new(Setup {
        appliances: vec!["microwave", "aircon"],
        remotes: vec![("phone", Auth::Cert), ("laptop", Auth::Cert)],
        proxy: |p| p.max_sessions = 1,
        ..Setup::default()
    });
    let first = h.connect("microwave", "phone", None);
    let second = h.connect("aircon", "laptop", None);
    h.run(3);
    assert_eq!(
        h.sim.actor::<CryptoProxy>(h.proxy).unwrap().session_count(),
        1
    );
    let mut outcomes: Vec<(u64, bool)> = Vec::new();
    for (name, request) in [("microwave", first), ("aircon", second)] {
        for e in h.appliance_events(name) {
            match e {
                ApplianceEvent::SessionUp { request: r, .. } => outcomes.push((r.unwrap(), true)),
                ApplianceEvent::Refused {
                    request: r,
                    reason: OffloadRefusal::SessionLimit,
                } => outcomes.push((r, false)),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(outcomes.iter().any(|(r, _)| *r == request), "{name}");
    }
    assert_eq!(
        outcomes.iter().filter(|(_, up)| *up).count(),
        1,
        "{outcomes:?}"
    );
}

/// Lost datagrams are retransmitted: the first S21, the first S26, the first S31 and the
/// first acknowledgement are dropped, and everything arrives exactly once. Then the same
/// flows run over lossy links end to end.
#[test]
fn lost_packets_are_retransmitted() {
    let mut h = Home::new(Setup::default());
    // Drop the first crypto request on the open network.
    h.open_tap(|t| t.drop_once(|_, data| carries(data, messages::CRYPTO_REQUEST)));
    // Drop the first S26, the first acknowledgement from the appliance and the first S31.
    h.closed_tap(|t| {
        let mut dropped = [false; 3];
        t.arm(move |iface, data| {
            let kind = if iface == IfaceId(0) && carries(data, messages::PLAIN_DATA) {
                0
            } else if iface == IfaceId(1) && carries(data, messages::ACK) {
                1
            } else if carries(data, messages::PROXY_REQUEST) {
                2
            } else {
                return Verdict::Forward;
            };
            if dropped[kind] {
                return Verdict::Forward;
            }
            dropped[kind] = true;
            Verdict::Drop
        })
    });
    h.send("phone", "microwave", b"defrost");
    h.run(5);
    let labels = h.labels(h.internet);
    assert_eq!(
        labels
            .iter()
            .filter(|l| l.contains("CryptoRequest"))
            .count(),
        2,
        "S21 was retransmitted once"
    );
    let appliance = h.appliance_events("microwave");
    assert_eq!(delivered_data(&appliance), [b"defrost".to_vec()]);
    let s = h.open_session("microwave", "phone", 5);
    h.appliance_send("microwave", s, b"done");
    h.run(3);
    let dl = h.labels(h.devices);
    assert!(
        dl.iter().filter(|l| l.contains("PlainData")).count() >= 3,
        "{dl:#?}"
    );
    assert_eq!(dl.iter().filter(|l| l.contains("ProxyRequest")).count(), 2);
    assert_eq!(
        received(&h.remote_events("phone")),
        [("microwave".to_string(), b"done".to_vec())]
    );
    h.assert_no_faults();

    // End to end over lossy links: 20 % loss on every hop of both networks.
    let mut h = Home::new(Setup {
        seed: 7,
        home_loss: 0.2,
        internet_loss: 0.2,
        ..Setup::default()
    });
    h.send("phone", "microwave", b"over a bad line");
    h.run(30);
    let drops = h
        .sim
        .drops()
        .filter(|d| d.drop_reason() == Some(DropReason::Loss))
        .count();
    assert!(drops > 0);
    assert_eq!(
        delivered_data(&h.appliance_events("microwave")),
        [b"over a bad line".to_vec()]
    );
}

/// Answers to the open network are never larger than what provoked them, and are
/// rate-limited per source and overall.
#[test]
fn solicitations_never_amplify_and_are_rate_limited() {
    let mut h = Home::new(Setup::default());
    let microwave = h.appliances["microwave"].1;
    let attacker = h.add_internet_host("attacker", "203.0.113.66", DatagramProbe::new(4000));
    // Sizes from 1 to 200 bytes, spaced out so the per-source bucket refills.
    for len in [1usize, 15, 16, 17, 40, 43, 44, 45, 120, 200] {
        probe_send(&mut h.sim, attacker, microwave, vec![b'x'; len]);
        h.run(2);
        let answers = probe_take(&mut h.sim, attacker);
        for a in &answers {
            assert!(a.data.len() <= len, "{} > {len}", a.data.len());
        }
        let expect = if len < 16 { 0 } else { 1 };
        assert_eq!(answers.len(), expect, "answer to {len} bytes");
    }
    h.appliance_events("microwave");

    // A burst from one source: two answers (the per-source burst), the rest refused.
    for _ in 0..20 {
        probe_send(&mut h.sim, attacker, microwave, vec![b'y'; 100]);
    }
    h.run(1);
    let events = h.appliance_events("microwave");
    let answered = |events: &[ApplianceEvent], a: Solicited| {
        events
            .iter()
            .filter(
                |e| matches!(e, ApplianceEvent::RefusedPlaintext { answer, .. } if *answer == a),
            )
            .count()
    };
    assert_eq!(answered(&events, Solicited::Full), 2);
    assert_eq!(answered(&events, Solicited::RateLimited), 18);

    // Spoofed sources cannot exceed the global bucket (8 at once).
    h.run(10);
    for i in 0..40u8 {
        let from = sa(ip(&format!("203.0.113.{}", 100 + i)), 4000);
        probe_send_from(&mut h.sim, attacker, from, microwave, vec![b'z'; 100]);
    }
    h.run(1);
    let events = h.appliance_events("microwave");
    assert_eq!(events.len(), 40);
    assert_eq!(answered(&events, Solicited::Full), 8);

    // A crypto request too small for the answer is not answered at all.
    let small = Message::CryptoRequest(messages::CryptoRequest {
        request_id: 1,
        appliance: None,
        suites: vec![],
        padding: 0,
    })
    .encode()
    .unwrap();
    h.run(10);
    probe_send(&mut h.sim, attacker, microwave, small);
    h.run(1);
    assert_eq!(
        h.appliance_events("microwave"),
        [ApplianceEvent::CryptoRequested {
            from: sa(ip("203.0.113.66"), 4000),
            answer: Solicited::TooSmall
        }]
    );
}

/// The optional steps may be skipped (¶0066, ¶0078): a remote node that knows the proxy
/// skips S21/S22 and pipelines S25 behind S23; a proxy that does not wait for S33 sends
/// S34 as soon as the remote node is authenticated.
#[test]
fn optional_steps_can_be_skipped() {
    let mut h = Home::new(Setup {
        remote: |_, r| {
            r.discovery = Discovery::WhenUnknown;
            r.await_proxy_accept = false;
        },
        proxy: |p| p.await_crypto_accept = false,
        ..Setup::default()
    });
    let phone_node = h.remote("phone");
    h.sim
        .command(phone_node, |r: &mut RemoteNode, now| {
            r.learn_proxy(now, "microwave", proxy_public())
        })
        .unwrap();
    h.send("phone", "microwave", b"no questions asked");
    h.run(3);
    assert_eq!(
        delivered_from(&h.appliance_events("microwave")),
        [(phone(), b"no questions asked".to_vec())]
    );
    assert!(
        !h.labels(h.internet)
            .iter()
            .any(|l| l.contains("CryptoRequest") || l.contains("CryptoAccept")),
        "S21/S22 skipped"
    );

    // Flow B with S34 before S33.
    let s = h.open_session("microwave", "phone", 3);
    h.appliance_send("microwave", s, b"quick reply");
    h.run(2);
    assert!(
        received(&h.remote_events("phone"))
            .contains(&("microwave".into(), b"quick reply".to_vec()))
    );
    h.assert_no_faults();
}

/// After one designation the remote node remembers the proxy: with
/// `Discovery::WhenUnknown` the second session skips S21/S22.
#[test]
fn designations_are_remembered() {
    let mut h = Home::new(Setup {
        remote: |_, r| r.discovery = Discovery::WhenUnknown,
        ..Setup::default()
    });
    h.send("phone", "microwave", b"first");
    h.run(3);
    let phone = h.remote("phone");
    assert_eq!(
        h.sim
            .actor::<RemoteNode>(phone)
            .unwrap()
            .known_proxy("microwave"),
        Some(proxy_public())
    );
    h.sim
        .command(phone, |r: &mut RemoteNode, now| r.close(now, "microwave"))
        .unwrap();
    h.run(2);
    let before = h
        .labels(h.internet)
        .iter()
        .filter(|l| l.contains("CryptoRequest"))
        .count();
    h.send("phone", "microwave", b"second");
    h.run(3);
    let after = h
        .labels(h.internet)
        .iter()
        .filter(|l| l.contains("CryptoRequest"))
        .count();
    assert_eq!((before, after), (1, 1));
    let got = delivered_data(&h.appliance_events("microwave"));
    assert_eq!(got, [b"first".to_vec(), b"second".to_vec()]);
}

// ----- random interleavings -----

#[derive(Clone, Debug)]
enum Op {
    /// Remote `r` sends to appliance `a` (flow A, or over an existing session).
    RemoteSends { r: usize, a: usize },
    /// Remote `r` tries plaintext first (flow A'), with a remote-chosen payload.
    RemoteTriesPlaintext { r: usize, a: usize },
    /// Appliance `a` opens a session with remote `r` (flow B).
    ApplianceConnects { a: usize, r: usize },
    /// Appliance `a` sends on every session it has.
    ApplianceSends { a: usize },
    /// Let time pass.
    Wait { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..3usize).prop_map(|(r, a)| Op::RemoteSends { r, a }),
        1 => (0..3usize, 0..3usize).prop_map(|(r, a)| Op::RemoteTriesPlaintext { r, a }),
        2 => (0..3usize, 0..3usize).prop_map(|(a, r)| Op::ApplianceConnects { a, r }),
        2 => (0..3usize).prop_map(|a| Op::ApplianceSends { a }),
        2 => (0..2000u64).prop_map(|ms| Op::Wait { ms }),
    ]
}

const APPLIANCES: [&str; 3] = ["microwave", "aircon", "fridge"];
const REMOTES: [&str; 3] = ["phone", "laptop", "tablet"];
/// The remote nodes of the three-by-three worlds and how each authenticates its proxies.
const REMOTE_AUTH: [(&str, Auth); 3] = [
    ("phone", Auth::Cert),
    ("laptop", Auth::Psk),
    ("tablet", Auth::Cert),
];

/// The proptest's seed: fixed, so `cargo test` and CI try the same 256 interleavings every
/// run and a failure is reproducible rather than a random chance of a red run. Change it
/// (or set `rng_seed` to `RngSeed::Random` locally) to explore further.
const INTERLEAVINGS_SEED: u64 = 0x5eed_0000_0000_0004;

proptest! {
    #![proptest_config(ProptestConfig {
        rng_seed: proptest::test_runner::RngSeed::Fixed(INTERLEAVINGS_SEED),
        ..ProptestConfig::with_cases(256)
    })]

    /// For random interleavings of both flows among three appliances and three remote
    /// nodes over lossy links, no appliance plaintext (and no securely sent remote data)
    /// ever crosses the open network, and every message delivered reaches exactly the
    /// party it was meant for, at most once.
    #[test]
    fn random_interleavings_keep_plaintext_home(
        seed in any::<u64>(),
        loss in 0.0f64..0.15,
        keyed in any::<bool>(),
        ops in prop::collection::vec(op(), 1..14),
    ) {
        interleaving_keeps_plaintext_home(seed, loss, keyed, &ops)?;
    }
}

/// One interleaving of the proptest above, with its assertions.
fn interleaving_keeps_plaintext_home(
    seed: u64,
    loss: f64,
    keyed: bool,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let mut h = Home::new(Setup {
        seed,
        link_key: keyed,
        appliances: APPLIANCES.to_vec(),
        remotes: REMOTE_AUTH.to_vec(),
        home_loss: loss,
        internet_loss: loss,
        ..Setup::default()
    });
    let mut counter = 0u32;
    // Markers: "A2R|<appliance>|<remote>|<n>|<session>", "R2A|<remote>|<appliance>|<n>"
    // and "PLAIN|<remote>|<appliance>|<n>" (flow A', sent in clear on purpose).
    let mut sent_secure: Vec<Vec<u8>> = Vec::new();
    for op in ops.iter().cloned() {
        counter += 1;
        match op {
            Op::RemoteSends { r, a } => {
                let data = format!("R2A|{}|{}|{counter}", REMOTES[r], APPLIANCES[a]).into_bytes();
                let target = h.target(APPLIANCES[a]);
                let node = h.remote(REMOTES[r]);
                let ok = h
                    .sim
                    .with_actor(node, |n: &mut RemoteNode, now| n.send(now, &target, &data))
                    .unwrap();
                if ok.is_ok() {
                    sent_secure.push(data);
                }
            }
            Op::RemoteTriesPlaintext { r, a } => {
                let data = format!("PLAIN|{}|{}|{counter}", REMOTES[r], APPLIANCES[a]).into_bytes();
                let target = h.target(APPLIANCES[a]);
                let node = h.remote(REMOTES[r]);
                let _ = h
                    .sim
                    .with_actor(node, |n: &mut RemoteNode, now| {
                        n.send_plaintext(now, &target, &data)
                    })
                    .unwrap();
            }
            Op::ApplianceConnects { a, r } => {
                let to = h.remote_stream(REMOTES[r]);
                let node = h.appliance(APPLIANCES[a]);
                let _ = h
                    .sim
                    .with_actor(node, |n: &mut Appliance, now| n.connect(now, to, None))
                    .unwrap();
            }
            Op::ApplianceSends { a } => {
                let node = h.appliance(APPLIANCES[a]);
                h.sim
                    .with_actor(node, |n: &mut Appliance, now| {
                        let sessions: Vec<(u64, Peer)> =
                            n.sessions().map(|(s, p)| (s, p.clone())).collect();
                        for (s, peer) in sessions {
                            let to = match peer {
                                Peer::Certificate(name) => name,
                                Peer::Psk(id) => String::from_utf8(id).unwrap(),
                                Peer::DirectKey(_) => continue,
                            };
                            let data = format!("A2R|{}|{to}|{counter}|{s}", APPLIANCES[a]);
                            let _ = n.send(now, s, data.as_bytes());
                        }
                    })
                    .unwrap();
            }
            Op::Wait { ms } => h.sim.run_for(Duration::from_millis(ms)).unwrap(),
        }
    }
    // Long enough for every retransmission to have run its course: at 15% loss on each
    // hop a stream segment can need five or six tries, and the simulated TCP's back-off
    // (1 s doubling, at most 60 s, 8 retries) spends about 243 s before it resets a
    // stream. "Arrives or its sender is told" is only decidable after that; a shorter run
    // reported data still in flight as lost.
    h.run(300);

    // 1. Nothing meant to be protected crossed the open network in clear.
    for p in h.open_network_packets() {
        prop_assert!(
            !contains(&p, b"A2R|"),
            "appliance plaintext on the open network"
        );
        for data in &sent_secure {
            prop_assert!(
                !contains(&p, data),
                "secure data in clear on the open network"
            );
        }
    }
    // 2. Every delivery reached the party it was meant for, once.
    let mut all_delivered = std::collections::BTreeSet::new();
    for a in APPLIANCES {
        let mut seen = std::collections::BTreeSet::new();
        for (_, from, data) in delivered(&h.appliance_events(a)) {
            let text = String::from_utf8(data.clone()).unwrap();
            let parts: Vec<&str> = text.split('|').collect();
            prop_assert!(parts[0] == "R2A" || parts[0] == "PLAIN", "{text}");
            prop_assert_eq!(parts[2], a, "delivered to the wrong appliance");
            let sender = match &from {
                Peer::Certificate(n) => n.clone(),
                Peer::Psk(id) => String::from_utf8(id.clone()).unwrap(),
                Peer::DirectKey(_) => String::new(),
            };
            prop_assert_eq!(parts[1], sender.as_str(), "wrong sender");
            prop_assert!(seen.insert(data.clone()), "delivered twice: {}", text);
            all_delivered.insert(data);
        }
    }
    // 3. Nothing is lost silently: everything sent securely arrives, or its sender was
    //    told that its session to that appliance was refused or failed. (Over good
    //    links everything arrives; a set-up the proxy gave up on under heavy loss starts
    //    again, bounded — `a_set_up_the_proxy_gave_up_on_starts_again` below.)
    let remote_events: BTreeMap<&str, Vec<RemoteEvent>> =
        REMOTES.iter().map(|&r| (r, h.remote_events(r))).collect();
    for data in &sent_secure {
        if all_delivered.contains(data) {
            continue;
        }
        let text = String::from_utf8_lossy(data).into_owned();
        let parts: Vec<&str> = text.split('|').collect();
        let told = remote_events[parts[1]].iter().any(|e| match e {
            RemoteEvent::Refused { appliance, .. } => appliance == parts[2],
            RemoteEvent::Failed { appliance, .. } => {
                appliance.as_deref().is_none_or(|a| a == parts[2])
            }
            _ => false,
        });
        prop_assert!(told, "lost without a word to the sender: {}", text);
    }
    for r in REMOTES {
        let mut seen = std::collections::BTreeSet::new();
        for (appliance, data) in received(&remote_events[r]) {
            let text = String::from_utf8(data.clone()).unwrap();
            let parts: Vec<&str> = text.split('|').collect();
            prop_assert_eq!(parts[0], "A2R");
            prop_assert_eq!(parts[1], appliance.as_str(), "wrong appliance");
            prop_assert_eq!(parts[2], r, "delivered to the wrong remote node");
            prop_assert!(seen.insert(data), "received twice: {}", text);
        }
    }
    Ok(())
}

/// Found by the proptest above with a random seed, when its run lasted 40 s: at 14% loss,
/// the phone's flow A session to the microwave came up on both sides, but its S25 data was
/// still in the stream's retransmission back-off when the run ended, and the check read it
/// as lost without a word. The data arrives between 60 and 100 s into the run. Kept as a regression case for
/// the run length: data a session accepted is delivered, or its loss reported, once every
/// retransmission has run.
#[test]
fn accepted_flow_a_data_under_loss_arrives_or_is_reported() {
    interleaving_keeps_plaintext_home(
        17145670415721419264,
        0.1443712441443146,
        true,
        &[
            Op::RemoteSends { r: 2, a: 1 },
            Op::RemoteSends { r: 0, a: 0 },
            Op::RemoteSends { r: 0, a: 1 },
            Op::RemoteSends { r: 1, a: 0 },
            Op::Wait { ms: 1800 },
            Op::ApplianceConnects { a: 0, r: 0 },
        ],
    )
    .unwrap();
}

/// When the appliance stops acknowledging, the proxy's retransmissions run out and the
/// remote node gets a typed refusal; while the link is full, further data is refused
/// with `Busy` rather than queued without bound.
#[test]
fn undeliverable_data_is_reported() {
    let mut h = Home::new(Setup::default());
    h.send("phone", "microwave", b"hello");
    h.run(3);
    assert_eq!(delivered(&h.appliance_events("microwave")).len(), 1);
    h.remote_events("phone");
    h.proxy_events();
    // The appliance goes dark.
    h.closed_tap(|t| {
        t.arm(|iface, _| {
            if iface == IfaceId(0) {
                Verdict::Drop
            } else {
                Verdict::Forward
            }
        })
    });
    for i in 0..40 {
        h.send("phone", "microwave", format!("message {i}").as_bytes());
    }
    h.run(30);
    let remote = h.remote_events("phone");
    let busy = remote
        .iter()
        .filter(|e| {
            matches!(
                e,
                RemoteEvent::Refused {
                    reason: OffloadRefusal::Busy,
                    ..
                }
            )
        })
        .count();
    assert_eq!(busy, 40 - 32, "the link holds 32 in flight: {remote:?}");
    assert!(remote.contains(&RemoteEvent::Refused {
        appliance: "microwave".into(),
        reason: OffloadRefusal::ApplianceUnreachable
    }));
    assert!(remote.contains(&RemoteEvent::Closed {
        appliance: "microwave".into()
    }));
    let proxy = h.proxy_events();
    assert!(proxy.iter().any(|e| matches!(
        e,
        ProxyEvent::SessionClosed {
            reason: OffloadRefusal::ApplianceUnreachable,
            ..
        }
    )));
    assert_eq!(
        h.sim.actor::<CryptoProxy>(h.proxy).unwrap().session_count(),
        0
    );
}

/// Without the link key the appliance trusts the closed network to carry only its
/// proxy's datagrams from the proxy's address; with the key, a datagram that claims the
/// proxy's address but lacks the key is refused.
#[test]
fn spoofed_proxy_datagrams_need_the_link_key() {
    let mut h = Home::new(Setup::keyed(true));
    let microwave = h.appliances["microwave"].1;
    let attacker = h.add_internet_host("attacker", "203.0.113.66", DatagramProbe::new(4000));
    for _ in 0..3 {
        let forged = Message::PlainData(messages::PlainData {
            session: 99,
            peer: Some(phone()),
            payload: HEAT.to_vec(),
            padding: 0,
        })
        .encode()
        .unwrap();
        probe_send_from(&mut h.sim, attacker, proxy_addr(), microwave, forged);
    }
    h.run(2);
    assert_eq!(h.appliance_events("microwave"), []);
    assert_eq!(
        h.faults(h.appliance("microwave")),
        vec![Error::Offload(OffloadError::LinkAuthentication); 3]
    );
}

/// The proxy's stream table is bounded, and a stream that never asks for anything is
/// closed when `request_timeout` passes, freeing its slot.
#[test]
fn stream_table_is_bounded_and_idle_streams_expire() {
    let mut h = Home::new(Setup {
        proxy: |p| {
            p.max_streams = 2;
            p.request_timeout = Duration::from_secs(5);
        },
        ..Setup::default()
    });
    let idle = h.add_internet_host("idler", "203.0.113.66", deputy::sim::StreamProbe::new());
    for _ in 0..3 {
        h.sim
            .command(idle, |p: &mut deputy::sim::StreamProbe, _| {
                p.connect(proxy_public())
            })
            .unwrap();
    }
    h.run(1);
    assert_eq!(
        h.sim.actor::<CryptoProxy>(h.proxy).unwrap().stream_count(),
        2
    );
    assert_eq!(
        h.faults(h.proxy),
        [Error::CapacityExceeded {
            what: "proxy streams",
            bound: 2
        }]
    );
    h.run(5);
    assert_eq!(
        h.sim.actor::<CryptoProxy>(h.proxy).unwrap().stream_count(),
        0
    );
    // The slots are free again for a real remote node.
    h.send("phone", "microwave", b"after the idlers");
    h.run(3);
    assert_eq!(delivered(&h.appliance_events("microwave")).len(), 1);
}

/// Every command-side bound: set-ups and queued messages at the remote node, pending
/// requests at the appliance and at the proxy, the proxy's appliance table, weak keys.
#[test]
fn command_bounds_are_enforced() {
    let mut h = Home::new(Setup {
        appliances: vec!["microwave", "aircon"],
        remotes: vec![("phone", Auth::Cert)],
        remote: |_, r| {
            r.max_attempts = 1;
            r.max_queued = 2;
        },
        appliance: |_, a| a.max_pending = 1,
        proxy: |p| p.max_pending = 1,
        ..Setup::default()
    });
    let phone_node = h.remote("phone");
    let mw = h.target("microwave");
    let air = h.target("aircon");
    let results = h
        .sim
        .with_actor(phone_node, |r: &mut RemoteNode, now| {
            [
                r.send(now, &mw, b"1"),
                r.send(now, &mw, b"2"),
                r.send(now, &mw, b"3"),
                r.send(now, &air, b"other appliance"),
                r.send(now, &mw, &[0; deputy::offload::MAX_PAYLOAD + 1]),
            ]
        })
        .unwrap();
    assert_eq!(
        results,
        [
            Ok(()),
            Ok(()),
            Err(Error::CapacityExceeded {
                what: "remote node queued messages",
                bound: 2
            }),
            Err(Error::CapacityExceeded {
                what: "remote node session set-ups",
                bound: 1
            }),
            Err(Error::Offload(OffloadError::TooLarge {
                len: deputy::offload::MAX_PAYLOAD + 1,
                max: deputy::offload::MAX_PAYLOAD
            })),
        ]
    );
    // The appliance holds one pending S31; the proxy holds one flow B set-up.
    let to = h.remote_stream("phone");
    let mw_node = h.appliance("microwave");
    let second = h
        .sim
        .with_actor(mw_node, |a: &mut Appliance, now| {
            (a.connect(now, to, None), a.connect(now, to, None))
        })
        .unwrap();
    assert!(second.0.is_ok());
    assert_eq!(
        second.1,
        Err(Error::CapacityExceeded {
            what: "appliance pending proxy requests",
            bound: 1
        })
    );
    let air_request = h.connect("aircon", "phone", None);
    h.run(5);
    assert!(
        h.appliance_events("aircon")
            .contains(&ApplianceEvent::Refused {
                request: air_request,
                reason: OffloadRefusal::Busy
            })
    );
    // Queued messages went out once the session was up.
    assert_eq!(
        delivered_data(&h.appliance_events("microwave")),
        [b"1".to_vec(), b"2".to_vec()]
    );

    // The proxy's appliance table and the appliance's weak keys.
    let names: Vec<String> = (0..=ProxyConfig::MAX_APPLIANCES)
        .map(|i| format!("a{i}"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut pc = ProxyConfig::new(
        ServerConfig::with_psks([psk_for("x")], ANCHOR).unwrap(),
        proxy_addr(),
    );
    for (i, name) in refs.iter().enumerate() {
        let addr = SocketAddr::new(IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]), 1);
        let served = ServedAppliance::new(addr, AccessPolicy::AnyAuthenticated);
        if let Err(e) = pc.serve(name, served) {
            assert_eq!(i, ProxyConfig::MAX_APPLIANCES);
            assert_eq!(
                e,
                Error::CapacityExceeded {
                    what: "proxy appliances",
                    bound: ProxyConfig::MAX_APPLIANCES
                }
            );
        }
    }
    assert_eq!(pc.appliances().count(), ProxyConfig::MAX_APPLIANCES);
    // Weak keys past the bound are ignored: data sealed under key 20 is undecryptable.
    let toaster = sa(ip("192.168.0.99"), APPLIANCE_PORT);
    let mut cfg = ApplianceConfig::new(ApplianceParams {
        name: "toaster".into(),
        local: toaster,
        proxy: proxy_addr(),
        proxy_public: proxy_public(),
    })
    .unwrap();
    for id in 0..40 {
        cfg.direct_keys.push(DirectKey::new(id, &[1; 32]));
    }
    let mut toaster_actor = Appliance::new(cfg, Box::new(h.sim.rng("toaster")));
    let sender = sa(ip("203.0.113.9"), 1);
    let mut outcomes = Vec::new();
    for id in [3u32, 15, 16, 20] {
        let sealed = remote_sealed(id, b"toast");
        toaster_actor
            .handle_input(
                Instant::ZERO,
                Input::Datagram {
                    from: sender,
                    to: toaster,
                    data: &sealed,
                },
            )
            .unwrap();
        while let Some(o) = toaster_actor.poll_output() {
            if let Output::Event(OffloadEvent::Appliance(e)) = o {
                outcomes.push(matches!(e, ApplianceEvent::Delivered { .. }));
            }
        }
    }
    assert_eq!(outcomes, [true, true, false, false]);
    let bad_name = Error::Offload(OffloadError::BadName);
    assert_eq!(
        ApplianceConfig::new(ApplianceParams {
            name: "".into(),
            local: proxy_addr(),
            proxy: proxy_addr(),
            proxy_public: proxy_public()
        })
        .unwrap_err(),
        bad_name
    );
    assert_eq!(
        ApplianceConfig::new(ApplianceParams {
            name: "x".repeat(65),
            local: proxy_addr(),
            proxy: proxy_addr(),
            proxy_public: proxy_public()
        })
        .unwrap_err(),
        bad_name
    );
}

/// The closed-network link delivers in order even when a datagram is lost: "start" is
/// dropped once, "stop" overtakes it on the wire, and the appliance still acts on "start"
/// first. A session's last data is delivered before its close.
#[test]
fn closed_link_keeps_order_under_loss() {
    for keyed in [false, true] {
        let mut h = Home::new(Setup::keyed(keyed));
        h.send("phone", "microwave", b"hello");
        h.run(3);
        h.appliance_events("microwave");
        // The next datagram of data toward the appliance is lost, once.
        let lose_next_data = |t: &mut Tap| {
            t.drop_once(|iface, data| iface == IfaceId(0) && carries(data, messages::PLAIN_DATA))
        };
        h.closed_tap(lose_next_data);
        h.send("phone", "microwave", b"start");
        h.send("phone", "microwave", b"stop");
        h.run(3);
        // Now "bye" and the close: the close must not overtake the data.
        h.closed_tap(lose_next_data);
        h.send("phone", "microwave", b"bye");
        let phone = h.remote("phone");
        h.sim
            .command(phone, |r: &mut RemoteNode, now| r.close(now, "microwave"))
            .unwrap();
        h.run(3);
        let events = h.appliance_events("microwave");
        let order: Vec<&[u8]> = events
            .iter()
            .filter_map(|e| match e {
                ApplianceEvent::Delivered { data, .. } => Some(data.as_slice()),
                ApplianceEvent::SessionClosed { .. } => Some(b"<closed>".as_slice()),
                _ => None,
            })
            .collect();
        assert_eq!(
            order,
            [b"start".as_slice(), b"stop", b"bye", b"<closed>"],
            "keyed: {keyed}"
        );
        h.assert_no_faults();
    }
}

/// An appliance that restarts (new process, counters from 1) is recognised by its new link
/// epoch; on a keyed link the proxy believes it only after a challenge, so flows resume,
/// and traffic recorded before the restart cannot be replayed into the new epoch.
#[test]
fn link_survives_an_appliance_restart() {
    for keyed in [false, true] {
        let mut h = Home::new(Setup::keyed(keyed));
        let request = h.connect("microwave", "phone", None);
        h.run(3);
        let s = session_of(&h.appliance_events("microwave"));
        h.appliance_send("microwave", s, b"before the restart");
        h.run(2);
        let old_s35 = h
            .sim
            .actor::<Tap>(h.closed_tap)
            .unwrap()
            .seen
            .iter()
            .rev()
            .find(|(i, d)| *i == IfaceId(1) && carries(d, messages::PLAIN_DATA))
            .map(|(_, d)| d.clone())
            .unwrap();

        // Power cut: a fresh appliance with the same configuration.
        let node = h.appliance("microwave");
        let mut cfg = ApplianceConfig::new(ApplianceParams {
            name: "microwave".into(),
            local: h.appliances["microwave"].1,
            proxy: proxy_addr(),
            proxy_public: proxy_public(),
        })
        .unwrap();
        if keyed {
            cfg.link_key = Some(LinkKey::new(b"provisioned link key for the home").unwrap());
        }
        let rng = Box::new(h.sim.rng("rebooted"));
        h.sim
            .with_actor(node, |a: &mut Appliance, _| *a = Appliance::new(cfg, rng))
            .unwrap();

        // Flow B again from the new incarnation.
        let again = h.connect("microwave", "phone", None);
        assert_ne!(again, request);
        h.run(3);
        let s2 = session_of(&h.appliance_events("microwave"));
        h.appliance_send("microwave", s2, b"after the restart");
        h.run(2);
        // Replaying the old incarnation's S35 does not reach the phone.
        h.closed_tap(|t| t.inject(IfaceId(0), old_s35));
        h.run(2);
        let got: Vec<Vec<u8>> = received(&h.remote_events("phone"))
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        assert_eq!(
            got,
            [
                b"before the restart".to_vec(),
                b"after the restart".to_vec()
            ],
            "keyed: {keyed}"
        );
        // And flow A reaches the new incarnation.
        h.send("phone", "microwave", b"welcome back");
        h.run(3);
        assert!(
            delivered(&h.appliance_events("microwave"))
                .iter()
                .any(|(_, _, d)| d == b"welcome back"),
            "keyed: {keyed}"
        );
    }
}

/// The remote node decides which appliances may start sessions with it (flow B): one it
/// does not accept is declined at S32, and the appliance gets a typed refusal.
#[test]
fn appliance_initiated_sessions_can_be_declined() {
    let mut h = Home::new(Setup {
        appliances: vec!["microwave", "aircon"],
        remote: |_, r| r.accept = deputy::offload::AppliancePolicy::Only(vec!["aircon".into()]),
        ..Setup::default()
    });
    let declined = h.connect("microwave", "phone", None);
    let accepted = h.connect("aircon", "phone", None);
    h.run(3);
    assert_eq!(
        h.appliance_events("microwave"),
        [ApplianceEvent::Refused {
            request: declined,
            reason: OffloadRefusal::RemoteRefused
        }]
    );
    assert!(matches!(
        h.appliance_events("aircon").as_slice(),
        [ApplianceEvent::SessionUp { request: Some(r), .. }] if *r == accepted
    ));
    let remote = h.remote_events("phone");
    assert!(remote.contains(&RemoteEvent::Declined {
        appliance: "microwave".into(),
        reason: OffloadRefusal::AccessDenied
    }));
    assert!(remote.contains(&session_up("aircon", StartedBy::Appliance)));
    assert!(h.proxy_events().contains(&ProxyEvent::Refused {
        appliance: Some("microwave".into()),
        remote: Some(phone()),
        reason: OffloadRefusal::RemoteRefused
    }));
}

/// Issue 13 (found by the proptest above at under 5% loss on every link): the remote
/// node's S23 segment is lost four times in a row across the three hops to the proxy (TCP
/// retries at 1, 3, 7, 15 s), and the proxy's 15 s wait for S23 ends 66 ms before the fifth
/// try (`Refused { Timeout }`). Before `RemoteNodeConfig::setup_restarts` that cost the
/// session; now the remote node starts the set-up again on a new stream to the same proxy,
/// with its queued data, and the message is delivered once.
#[test]
fn a_set_up_the_proxy_gave_up_on_starts_again() {
    let mut h = lossy_set_up_world(|_, _| {});
    assert_eq!(delivered(&h.appliance_events("microwave")).len(), 1);
    assert!(
        h.remote_events("phone")
            .contains(&session_up("microwave", StartedBy::Remote))
    );
}

/// The same world with restarts turned off fails as it did before, with typed failures on
/// both sides: the restart is what saves the session, not a change of luck.
#[test]
fn without_set_up_restarts_the_same_loss_fails_typed() {
    let mut h = lossy_set_up_world(|_, r| r.setup_restarts = 0);
    assert!(delivered(&h.appliance_events("microwave")).is_empty());
    let phone = h.remote_events("phone");
    assert!(
        phone.contains(&RemoteEvent::Refused {
            appliance: "microwave".into(),
            reason: OffloadRefusal::Timeout,
        }),
        "{phone:#?}"
    );
}

/// The world of the set-up restart tests: its seed and loss make the phone's S23 to the
/// microwave's proxy lose four tries in a row; `remote` adjusts the remote nodes.
fn lossy_set_up_world(remote: fn(&str, &mut RemoteNodeConfig)) -> Home {
    let mut h = Home::new(Setup {
        seed: 10775455596642802548,
        link_key: false,
        appliances: APPLIANCES.to_vec(),
        remotes: REMOTE_AUTH.to_vec(),
        home_loss: 0.0465154233531464,
        internet_loss: 0.0465154233531464,
        remote,
        ..Setup::default()
    });
    for _ in 0..2 {
        let to = h.remote_stream("phone");
        let node = h.appliance("microwave");
        h.sim
            .command(node, |n: &mut Appliance, now| n.connect(now, to, None))
            .unwrap();
    }
    for a in ["microwave", APPLIANCES[1]] {
        let target = h.target(a);
        let node = h.remote("phone");
        let data = format!("R2A|phone|{a}|3");
        h.sim
            .command(node, |n: &mut RemoteNode, now| {
                n.send(now, &target, data.as_bytes())
            })
            .unwrap();
    }
    h.run(40);
    h
}

/// Issue 13, item 5: a channel handshake damaged in transit was reported to the remote
/// node as `ProxyNotTrusted`, which reads as an impersonated proxy. Damage (here one
/// flipped byte in the proxy's first handshake flight, at the start and at the end) now
/// fails as `ProxyHandshakeFailed`; `forged_proxy_designation_fails` keeps the identity
/// verdicts as `ProxyNotTrusted`.
#[test]
fn item_5_handshake_damage_is_not_reported_as_an_untrusted_proxy() {
    for at_end in [false, true] {
        let mut h = Home::new(Setup::default());
        let proxy_ip = proxy_public().ip();
        h.open_tap(|t| {
            let mut done = false;
            t.arm(move |_, data| {
                if done || !tcp_data_from(data, proxy_ip) {
                    return Verdict::Forward;
                }
                done = true;
                let mut payload = packet::parse(data).unwrap().payload.to_vec();
                let i = if at_end { payload.len() - 1 } else { 3 };
                payload[i] ^= 0x01;
                Verdict::Replace(with_tcp_payload(data, &payload))
            })
        });
        h.send("phone", "microwave", b"status?");
        h.run(30);
        let failures: Vec<OffloadError> = h
            .remote_events("phone")
            .into_iter()
            .filter_map(|e| match e {
                RemoteEvent::Failed { error, .. } => Some(error),
                _ => None,
            })
            .collect();
        assert!(
            matches!(failures.as_slice(), [OffloadError::ProxyHandshakeFailed(_)]),
            "at_end {at_end}: {failures:?}"
        );
        assert!(delivered(&h.appliance_events("microwave")).is_empty());
    }
}

/// Issue 13, item 6: a Close to the appliance was lost when its link had 32 messages in
/// flight (the link refused it and nothing retried). At the bound it now waits for room
/// and reaches the appliance after the data that was in flight.
#[test]
fn item_6_a_close_at_the_in_flight_bound_is_not_lost() {
    let mut h = Home::new(Setup::default());
    h.send("phone", "microwave", b"hello");
    h.run(3);
    assert_eq!(delivered(&h.appliance_events("microwave")).len(), 1);
    h.proxy_events();
    // The closed network drops everything the proxy sends for a while: its link to the
    // microwave fills up to the bound (32 in flight).
    let proxy_ip = proxy_addr().ip();
    h.closed_tap(|t| {
        t.arm(move |_, data| match packet::parse(data) {
            Ok(p) if p.src == proxy_ip => Verdict::Drop,
            _ => Verdict::Forward,
        })
    });
    for i in 0..32 {
        h.send("phone", "microwave", format!("command {i}").as_bytes());
    }
    h.run(1);
    assert_eq!(
        h.proxy_events()
            .iter()
            .filter(|e| matches!(
                e,
                ProxyEvent::Forwarded {
                    to_appliance: true,
                    ..
                }
            ))
            .count(),
        32,
        "the link is at its bound"
    );
    let phone = h.remote("phone");
    h.sim
        .command(phone, |n: &mut RemoteNode, now| n.close(now, "microwave"))
        .unwrap();
    h.run(1);
    h.closed_tap(Tap::disarm);
    h.run(20);
    let events = h.appliance_events("microwave");
    assert_eq!(delivered(&events).len(), 32, "{events:?}");
    assert!(
        matches!(
            events.last(),
            Some(ApplianceEvent::SessionClosed {
                reason: OffloadRefusal::Closed,
                ..
            })
        ),
        "{events:?}"
    );
    let node = h.appliance("microwave");
    let open = h
        .sim
        .with_actor(node, |a: &mut Appliance, _| a.sessions().count())
        .unwrap();
    assert_eq!(open, 0);
}

/// Issue 13, item 6: an up session had no idle timeout. The proxy now ends a session
/// that passed no data for `session_idle_timeout`; data either way starts it again.
#[test]
fn item_6_idle_sessions_time_out_and_traffic_keeps_them_up() {
    let mut h = Home::new(Setup {
        proxy: |c| c.session_idle_timeout = Duration::from_secs(30),
        ..Setup::default()
    });
    h.send("phone", "microwave", b"hello");
    h.run(20);
    let (events, session) = h.session_events("microwave");
    assert_eq!(delivered(&events).len(), 1);
    // Traffic 20 s in keeps it up past the first 30 s.
    h.appliance_send("microwave", session, b"still here");
    h.run(25);
    assert!(
        h.appliance_events("microwave").is_empty(),
        "still up at 45 s"
    );
    assert_eq!(
        received(&h.remote_events("phone")),
        [("microwave".to_string(), b"still here".to_vec())]
    );
    // 30 s without data: the proxy ends it on both sides.
    h.run(10);
    assert_eq!(
        h.appliance_events("microwave"),
        [ApplianceEvent::SessionClosed {
            session,
            reason: OffloadRefusal::Closed
        }]
    );
    assert!(h.proxy_events().iter().any(|e| matches!(
        e,
        ProxyEvent::SessionClosed {
            reason: OffloadRefusal::Timeout,
            ..
        }
    )));
    let remote = h.remote_events("phone");
    assert!(
        remote.contains(&RemoteEvent::Refused {
            appliance: "microwave".into(),
            reason: OffloadRefusal::Timeout
        }),
        "{remote:?}"
    );
}

/// The bound on set-up restarts is enforced: when the proxy never receives any S23 (every
/// stream from the phone loses all its segments after the channel handshake), the remote
/// node starts the set-up `setup_restarts` times (3 streams in all), then reports the
/// proxy's `Refused { Timeout }` and stops; the proxy saw three requests time out.
#[test]
fn set_up_restarts_are_bounded() {
    use std::cell::RefCell;
    let mut h = Home::new(Setup::default());
    // Payload segments per phone stream; the first HANDSHAKE of each carry the channel
    // handshake, everything after (S23 onward) is dropped.
    const HANDSHAKE: u32 = 2;
    let seen: RefCell<BTreeMap<u16, u32>> = RefCell::new(BTreeMap::new());
    let phone = h.remote("phone");
    h.sim
        .add_fault(
            Fault::new(FaultAction::Drop)
                .from_node(phone)
                .dst_port(PROXY_TCP)
                .with_payload()
                .when(move |p| {
                    let Some((src_port, _)) = p.ports else {
                        return false;
                    };
                    let mut seen = seen.borrow_mut();
                    let n = seen.entry(src_port).or_insert(0);
                    *n += 1;
                    *n > HANDSHAKE
                }),
        )
        .unwrap();
    h.send("phone", "microwave", b"never");
    h.run(120);
    assert!(delivered(&h.appliance_events("microwave")).is_empty());
    let remote = h.remote_events("phone");
    let timeouts = |e: &&RemoteEvent| {
        matches!(
            e,
            RemoteEvent::Refused {
                reason: OffloadRefusal::Timeout,
                ..
            }
        )
    };
    assert_eq!(remote.iter().filter(timeouts).count(), 1, "{remote:#?}");
    let proxy_timeouts = h
        .proxy_events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                ProxyEvent::Refused {
                    reason: OffloadRefusal::Timeout,
                    ..
                }
            )
        })
        .count();
    assert_eq!(proxy_timeouts, 3);
}

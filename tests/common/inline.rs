//! Seed 001 worlds: a peer with IKEv2 and ESP (deputy's plain endpoint), the inline proxy
//! on the path, and IKE-less terminals behind it.
//!
//! ```text
//!   peer 192.0.2.1 ── internet 192.0.2.0/24 ── [proxy: iface 0 | iface 1] ── lan 198.51.100.0/24 ── terminals .10, .11
//! ```
//!
//! The proxy bridges: it has no address; packets for the terminals reach it because the
//! terminals are on its other side.
//!
//! Shared by tests/keyx_inline.rs and the tour (which includes this file with `#[path]`),
//! so it uses only the simulator's own API and, from its parent module, nothing but the
//! shared event matching (`take_events`, which both parents bring into scope).

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use deputy::ikev2::{
    Identity, IkeConfig, IkeEvent, Initiator, InitiatorConfig, Responder, ResponderConfig,
};
use deputy::ipsec::{
    Action, DataPlane, DataPlaneConfig, Direction, Inbound, Outbound, Policy, Protected, Selector,
};
use deputy::keyx::DelegationKey;
use deputy::keyx::ikeless::{Terminal, TerminalConfig, TerminalEvent};
use deputy::keyx::inline::{InlineProxy, MemoryStore, ProxyConfig, ProxyEvent, TerminalSecrets};
use deputy::sim::{LinkConfig, NetworkId, NodeId, RawIp, Sim};
use deputy::{Actor, Error, IfaceId, Input, Instant, Output, Transmit};

use super::take_events;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub const PEER: &str = "192.0.2.1";
pub const T1: &str = "198.51.100.10";
pub const T2: &str = "198.51.100.11";
/// The pre-shared key between the peer and every terminal (the proxy authenticates with
/// it as the terminal; the peer's configuration holds one key for any peer).
pub const PSK: &[u8] = b"the terminals' IKE key";

pub fn key(id: u64) -> DelegationKey {
    DelegationKey::new([id as u8; 32])
}

pub fn terminal_identity(id: u64) -> Identity {
    Identity::Fqdn(format!("terminal{id}.example"))
}

// ----------------------------------------------------------------- the peer

/// The peer's IKE engine.
pub enum Ike {
    Initiator(Box<Initiator>),
    Responder(Box<Responder>),
}

/// A peer with IKEv2 and ESP: every Child SA its IKE negotiates is installed in its data
/// plane at once; ICMP echo requests that arrive through ESP are answered through ESP;
/// every packet the data plane hands out is recorded.
pub struct Peer {
    pub ike: Ike,
    pub plane: DataPlane,
    pub ike_events: Vec<IkeEvent>,
    pub received: Vec<(Vec<u8>, bool)>,
    out: std::collections::VecDeque<Output<IkeEvent>>,
}

impl Peer {
    pub fn new(sim: &Sim, ike: Ike) -> Peer {
        let mut plane =
            DataPlane::new(DataPlaneConfig::default(), Box::new(sim.rng("peer-plane"))).unwrap();
        plane
            .add_policy(Policy::new(
                Selector::parse("0.0.0.0/0", "0.0.0.0/0").unwrap(),
                Direction::Both,
                Action::Protect,
            ))
            .unwrap();
        plane
            .add_policy(Policy::new(
                Selector::parse("::/0", "::/0").unwrap(),
                Direction::Both,
                Action::Protect,
            ))
            .unwrap();
        Peer {
            ike,
            plane,
            ike_events: Vec::new(),
            received: Vec::new(),
            out: Default::default(),
        }
    }

    pub fn engine(&mut self) -> &mut dyn Actor<Event = IkeEvent> {
        match &mut self.ike {
            Ike::Initiator(i) => &mut **i,
            Ike::Responder(r) => &mut **r,
        }
    }

    /// Send an IP packet through the data plane (it must be protected).
    pub fn send(&mut self, now: Instant, packet: &[u8]) -> Result<(), Error> {
        match self.plane.protect(now, packet)? {
            Outbound::Protected(p) => self.emit(p),
            other => panic!("peer could not protect: {other:?}"),
        }
        Ok(())
    }

    fn emit(&mut self, p: Protected) {
        match p {
            Protected::Ip(data) => self.out.push_back(Output::Packet {
                iface: IfaceId(0),
                data,
            }),
            Protected::Udp(d) => self.out.push_back(Output::Transmit(Transmit {
                from: d.from,
                to: d.to,
                data: d.payload,
            })),
        }
    }

    /// Move the IKE engine's outputs: datagrams out, Child SAs into the data plane.
    pub fn pump(&mut self, now: Instant) {
        let mut outs = Vec::new();
        while let Some(o) = self.engine().poll_output() {
            outs.push(o);
        }
        for o in outs {
            match o {
                Output::Event(e) => {
                    match &e {
                        IkeEvent::ChildSaEstablished { child, .. }
                        | IkeEvent::ChildSaRekeyed { child, .. } => {
                            let released = self.plane.install(now, (**child).clone()).unwrap();
                            for p in released {
                                self.emit(p);
                            }
                        }
                        IkeEvent::ChildSaDeleted { spi_in, .. } => {
                            self.plane.remove(*spi_in);
                        }
                        _ => {}
                    }
                    self.ike_events.push(e);
                }
                other => self.out.push_back(other),
            }
        }
    }

    fn inbound(&mut self, now: Instant, r: Result<Inbound, deputy::ipsec::IpsecError>) {
        let Ok(Inbound::Packet { packet, .. }) = r else {
            return;
        };
        if let Some(reply) = echo_reply(&packet) {
            let _ = self.send(now, &reply);
        }
        self.received.push((packet, true));
    }

    /// The newest Child SA the peer's IKE reported.
    pub fn children(&self) -> Vec<deputy::ipsec::ChildSa> {
        self.ike_events
            .iter()
            .filter_map(|e| match e {
                IkeEvent::ChildSaEstablished { child, .. }
                | IkeEvent::ChildSaRekeyed { child, .. } => Some((**child).clone()),
                _ => None,
            })
            .collect()
    }
}

impl Actor for Peer {
    type Event = IkeEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        let Input::Packet { data, .. } = input else {
            return Ok(());
        };
        let info = deputy::ipsec::parse_packet(data)?;
        let udp = info.protocol == deputy::ipsec::PROTO_UDP;
        let payload = data
            .get(info.header_len + 8..info.total_len)
            .unwrap_or_default();
        let from = SocketAddr::new(info.src, info.src_port.unwrap_or(0));
        let to = SocketAddr::new(info.dst, info.dst_port.unwrap_or(0));
        let ike = udp
            && (to.port() == 500
                || (to.port() == 4500 && payload.len() > 4 && payload[..4] == [0; 4]));
        if ike {
            let r = self.engine().handle_input(
                now,
                Input::Datagram {
                    from,
                    to,
                    data: payload,
                },
            );
            self.pump(now);
            return r;
        }
        if udp && to.port() == 4500 {
            let r = self.plane.unprotect_datagram(now, from, to, payload);
            self.inbound(now, r);
            return Ok(());
        }
        match self.plane.unprotect(now, data) {
            Ok(Inbound::Bypass) => self.received.push((data.to_vec(), false)),
            r => self.inbound(now, r),
        }
        Ok(())
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.engine().handle_timeout(now);
        self.plane.handle_timeout(now);
        self.pump(now);
    }

    fn poll_output(&mut self) -> Option<Output<IkeEvent>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let a = match &self.ike {
            Ike::Initiator(i) => i.poll_timeout(),
            Ike::Responder(r) => r.poll_timeout(),
        };
        [a, self.plane.poll_timeout()].into_iter().flatten().min()
    }
}

/// The reply to an ICMP or ICMPv6 echo request, if `packet` is one.
pub fn echo_reply(packet: &[u8]) -> Option<Vec<u8>> {
    use etherparse::{Icmpv4Type, Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ip(packet).ok()?;
    let (src, dst): (IpAddr, IpAddr) = match p.net.as_ref()? {
        NetSlice::Ipv4(h) => (
            h.header().source_addr().into(),
            h.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(h) => (
            h.header().source_addr().into(),
            h.header().destination_addr().into(),
        ),
        _ => return None,
    };
    match p.transport.as_ref()? {
        TransportSlice::Icmpv4(i) => match i.icmp_type() {
            Icmpv4Type::EchoRequest(e) => Some(echo(dst, src, e.id, e.seq, false, i.payload())),
            _ => None,
        },
        TransportSlice::Icmpv6(i) => match i.icmp_type() {
            Icmpv6Type::EchoRequest(e) => Some(echo(dst, src, e.id, e.seq, false, i.payload())),
            _ => None,
        },
        _ => None,
    }
}

/// An ICMP(v6) echo request (or reply) from `src` to `dst`.
pub fn echo(src: IpAddr, dst: IpAddr, id: u16, seq: u16, request: bool, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let b = etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64);
            let b = if request {
                b.icmpv4_echo_request(id, seq)
            } else {
                b.icmpv4_echo_reply(id, seq)
            };
            b.write(&mut out, body).unwrap();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let b = etherparse::PacketBuilder::ipv6(s.octets(), d.octets(), 64);
            let b = if request {
                b.icmpv6_echo_request(id, seq)
            } else {
                b.icmpv6_echo_reply(id, seq)
            };
            b.write(&mut out, body).unwrap();
        }
        _ => panic!("mixed families"),
    }
    out
}

pub fn ping(src: &str, dst: &str, seq: u16) -> Vec<u8> {
    echo(ip(src), ip(dst), 7, seq, true, b"seed 001 echo")
}

/// A clear UDP packet.
pub fn udp(src: &str, sport: u16, dst: &str, dport: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64)
                .udp(sport, dport)
                .write(&mut out, body)
                .unwrap()
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            etherparse::PacketBuilder::ipv6(s.octets(), d.octets(), 64)
                .udp(sport, dport)
                .write(&mut out, body)
                .unwrap()
        }
        _ => panic!("mixed families"),
    }
    out
}

// ----------------------------------------------------------------- configuration

/// The IKE side of one party: identity, PSK for the other side, and the settings both
/// ends share (child lifetime, NAT-T forcing).
pub fn ike(local: Identity, psk: &[u8], tweak: &dyn Fn(&mut IkeConfig)) -> IkeConfig {
    let mut c = IkeConfig::new(local, psk);
    tweak(&mut c);
    c
}

/// What a world is built from.
pub struct Spec {
    /// The link of both networks.
    pub link: LinkConfig,
    pub peer_addr: String,
    pub lan: (String, String),
    pub internet: (String, String),
    pub terminals: Vec<(u64, String)>,
    /// Which terminals are bound by hand in the proxy (the others must announce).
    pub bound: bool,
    pub peer_initiates_to: Option<u64>,
    /// Applied to every IKE configuration (peer and proxy-as-terminal).
    pub ike: fn(&mut IkeConfig),
    pub proxy: fn(&mut ProxyConfig),
    pub terminal: fn(&mut TerminalConfig),
    /// The terminal's protect policy toward the peer (else: everything bypassed).
    pub protect: bool,
    /// Remote management (¶0025): the proxy's management address on the Internet side
    /// (it listens on [`MGMT_PORT`]) and the channel it runs there.
    pub management: Option<(String, deputy::keyx::inline::ManagementConfig)>,
}

/// The port the proxy's management channel listens on.
pub const MGMT_PORT: u16 = 4433;

impl Default for Spec {
    fn default() -> Self {
        Spec {
            link: LinkConfig::default(),
            peer_addr: PEER.into(),
            lan: ("lan".into(), "198.51.100.0/24".into()),
            internet: ("internet".into(), "192.0.2.0/24".into()),
            terminals: vec![(1, T1.into())],
            bound: true,
            peer_initiates_to: None,
            ike: |_| {},
            proxy: |_| {},
            terminal: |_| {},
            protect: true,
            management: None,
        }
    }
}

impl Spec {
    pub fn ipv6() -> Spec {
        Spec {
            peer_addr: "2001:db8::1".into(),
            lan: ("lan".into(), "2001:db8:1::/64".into()),
            internet: ("internet".into(), "2001:db8::/64".into()),
            terminals: vec![(1, "2001:db8:1::10".into())],
            ..Spec::default()
        }
    }
}

/// One packet a [`Tap`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub ttl: u8,
    pub ports: Option<(u16, u16)>,
    /// The UDP/TCP payload, or the whole IP payload for other protocols.
    pub payload: Vec<u8>,
    pub len: usize,
}

impl Seen {
    /// Whether this is a key-transfer message of type `ty` (any type: `None`).
    pub fn transfer(&self, ty: Option<u8>) -> bool {
        self.ports.is_some_and(|(_, d)| d == 500)
            && deputy::keyx::transfer::is_marked(&self.payload)
            && deputy::keyx::transfer::Envelope::parse(&self.payload)
                .is_ok_and(|e| ty.is_none_or(|t| e.msg_type == t))
    }
}

/// Records every packet put on one network (a fault that never acts).
#[derive(Clone, Default)]
pub struct Tap(std::rc::Rc<std::cell::RefCell<Vec<Seen>>>);

impl Tap {
    pub fn on(sim: &mut Sim, net: NetworkId) -> Tap {
        let tap = Tap::default();
        let log = tap.0.clone();
        sim.add_fault(
            deputy::sim::fault::Fault::new(deputy::sim::fault::FaultAction::Drop)
                .on_network(net)
                .when(move |p| {
                    log.borrow_mut().push(Seen {
                        src: p.src,
                        dst: p.dst,
                        protocol: p.protocol,
                        ttl: p.ttl,
                        ports: p.ports,
                        payload: p.payload.to_vec(),
                        len: p.len,
                    });
                    false
                }),
        )
        .unwrap();
        tap
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.0.borrow().clone()
    }
}

pub struct World {
    pub internet: NetworkId,
    pub lan: NetworkId,
    pub internet_tap: Tap,
    pub lan_tap: Tap,
    pub peer: NodeId,
    pub proxy: NodeId,
    pub terminals: Vec<NodeId>,
}

pub fn store(spec: &Spec) -> MemoryStore {
    let mut store = MemoryStore::new(16);
    for (id, _) in &spec.terminals {
        let mut ike = IkeConfig::new(terminal_identity(*id), PSK);
        (spec.ike)(&mut ike);
        store
            .insert(
                *id,
                TerminalSecrets {
                    delegation_key: key(*id),
                    ike,
                },
            )
            .unwrap();
    }
    store
}

pub fn proxy_actor(sim: &Sim, spec: &Spec) -> InlineProxy {
    let mut cfg = ProxyConfig::new(IfaceId(0), IfaceId(1));
    if spec.bound {
        cfg.bindings = spec.terminals.iter().map(|(id, a)| (ip(a), *id)).collect();
    }
    cfg.management = spec.management.as_ref().map(|(_, m)| m.clone());
    (spec.proxy)(&mut cfg);
    InlineProxy::new(cfg, store(spec), Box::new(sim.rng("proxy"))).unwrap()
}

pub fn terminal_actor(sim: &Sim, spec: &Spec, id: u64, addr: &str, label: &str) -> Terminal {
    let mut plane = DataPlane::new(
        DataPlaneConfig::default(),
        Box::new(sim.rng(&format!("{label}-plane"))),
    )
    .unwrap();
    plane.spd_mut().set_default_action(Action::Bypass);
    if spec.protect {
        let me = if ip(addr).is_ipv4() {
            format!("{addr}/32")
        } else {
            format!("{addr}/128")
        };
        let peer = if ip(addr).is_ipv4() {
            format!("{}/32", spec.peer_addr)
        } else {
            format!("{}/128", spec.peer_addr)
        };
        plane
            .add_policy(Policy::new(
                Selector::parse(&me, &peer).unwrap(),
                Direction::Both,
                Action::Protect,
            ))
            .unwrap();
    }
    let mut cfg = TerminalConfig::new(id, key(id), vec![ip(addr)]);
    (spec.terminal)(&mut cfg);
    Terminal::new(cfg, plane, Box::new(sim.rng(label)), sim.now()).unwrap()
}

pub fn peer_ike(spec: &Spec) -> IkeConfig {
    let mut ike = IkeConfig::new(Identity::Fqdn("peer.example".into()), PSK);
    (spec.ike)(&mut ike);
    ike
}

/// Build the world: the peer (a responder, or an initiator toward
/// `spec.peer_initiates_to`), the proxy, the terminals.
pub fn world(sim: &mut Sim, spec: &Spec) -> World {
    let internet = sim
        .add_network(&spec.internet.0, spec.internet.1.as_str(), spec.link)
        .unwrap();
    let lan = sim
        .add_network(&spec.lan.0, spec.lan.1.as_str(), spec.link)
        .unwrap();
    let proxy = proxy_actor(sim, spec);
    let proxy = match &spec.management {
        None => sim.add_inline("proxy", internet, lan, proxy).unwrap(),
        Some((addr, _)) => {
            let node = sim
                .add_inline_with("proxy", &[(internet, Some(ip(addr))), (lan, None)], proxy)
                .unwrap();
            sim.listen_inline(node, MGMT_PORT).unwrap();
            node
        }
    };
    let ike = match spec.peer_initiates_to {
        Some(id) => {
            let addr = &spec.terminals.iter().find(|(i, _)| *i == id).unwrap().1;
            Ike::Initiator(Box::new(
                Initiator::new(
                    InitiatorConfig {
                        ike: peer_ike(spec),
                        local: SocketAddr::new(ip(&spec.peer_addr), 500),
                        remote: SocketAddr::new(ip(addr), 500),
                    },
                    Box::new(sim.rng("peer")),
                )
                .unwrap(),
            ))
        }
        None => Ike::Responder(Box::new(
            Responder::new(
                ResponderConfig::new(peer_ike(spec)),
                Box::new(sim.rng("peer")),
                sim.now(),
            )
            .unwrap(),
        )),
    };
    let p = Peer::new(sim, ike);
    let peer = sim
        .add_host("peer", internet, ip(&spec.peer_addr), p)
        .unwrap();
    sim.set_raw_ip(peer, RawIp::All).unwrap();
    let mut terminals = Vec::new();
    for (i, (id, addr)) in spec.terminals.iter().enumerate() {
        let label = format!("terminal{}", i + 1);
        let t = terminal_actor(sim, spec, *id, addr, &label);
        let node = sim.add_host(&label, lan, ip(addr), t).unwrap();
        sim.set_raw_ip(node, RawIp::All).unwrap();
        terminals.push(node);
    }
    let internet_tap = Tap::on(sim, internet);
    let lan_tap = Tap::on(sim, lan);
    World {
        internet,
        lan,
        internet_tap,
        lan_tap,
        peer,
        proxy,
        terminals,
    }
}

pub fn settle(sim: &mut Sim) {
    sim.run_for(Duration::from_secs(10)).unwrap();
}

/// The peer starts IKE (it must be an initiator).
pub fn peer_start(sim: &mut Sim, w: &World) {
    sim.command(w.peer, |p: &mut Peer, now| {
        match &mut p.ike {
            Ike::Initiator(i) => i.start(now)?,
            Ike::Responder(_) => panic!("the peer is a responder"),
        }
        p.pump(now);
        Ok(())
    })
    .unwrap();
}

pub fn terminal_send(sim: &mut Sim, node: NodeId, packet: Vec<u8>) -> deputy::keyx::ikeless::Sent {
    sim.command(node, |t: &mut Terminal, now| t.send(now, &packet))
        .unwrap()
}

pub fn peer_send(sim: &mut Sim, w: &World, packet: Vec<u8>) {
    sim.command(w.peer, |p: &mut Peer, now| p.send(now, &packet))
        .unwrap();
}

pub fn proxy_events(sim: &mut Sim, w: &World) -> Vec<ProxyEvent> {
    take_events(sim, w.proxy).unwrap()
}

pub fn terminal_events(sim: &mut Sim, node: NodeId) -> Vec<TerminalEvent> {
    take_events(sim, node).unwrap()
}

/// What the peer's data plane handed out, taken.
pub fn peer_received(sim: &mut Sim, w: &World) -> Vec<(Vec<u8>, bool)> {
    sim.with_actor(w.peer, |p: &mut Peer, _| std::mem::take(&mut p.received))
        .unwrap()
}

pub fn peer_ike_events(sim: &mut Sim, w: &World) -> Vec<IkeEvent> {
    sim.with_actor(w.peer, |p: &mut Peer, _| p.ike_events.clone())
        .unwrap()
}

pub fn proxy_stats(sim: &mut Sim, w: &World) -> deputy::keyx::inline::ProxyStats {
    sim.actor::<InlineProxy>(w.proxy).unwrap().stats()
}

/// The packets the application of `node` received.
pub fn received(events: &[TerminalEvent]) -> Vec<(Vec<u8>, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            TerminalEvent::Received { packet, protected } => Some((packet.clone(), *protected)),
            _ => None,
        })
        .collect()
}

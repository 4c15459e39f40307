//! NAPT (RFC 4787 / RFC 5382 behaviours) and the stateful firewall of a plain gateway.
//!
//! Both are pure tables: the router in [`super`] asks them what to do with a packet and
//! rewrites it. Expired entries are removed lazily — when a packet touches them (which is
//! how a drop gets the reason [`DropReason::BindingExpired`]) or when room is needed.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::prelude::rust_2024::*;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::Rng;

use super::DropReason;
use super::packet::{PROTO_TCP, PROTO_UDP, TcpFlags};
use crate::Instant;

/// A transport protocol a NAT translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Proto {
    /// From an IP protocol number.
    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            PROTO_UDP => Some(Proto::Udp),
            PROTO_TCP => Some(Proto::Tcp),
            _ => None,
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Udp => PROTO_UDP,
            Proto::Tcp => PROTO_TCP,
        }
    }
}

/// RFC 4787 §4.1 mapping behaviour: when does an inside endpoint get the same public port?
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mapping {
    /// The same public port for every destination (the recommended behaviour).
    #[default]
    EndpointIndependent,
    /// A new public port per destination address.
    AddressDependent,
    /// A new public port per destination address and port ("symmetric NAT").
    AddressAndPortDependent,
}

/// RFC 4787 §5 filtering behaviour: who may send to a public port?
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Filtering {
    /// Anyone ("full cone").
    EndpointIndependent,
    /// Addresses the inside endpoint has sent to ("restricted cone").
    AddressDependent,
    /// Address-and-port pairs the inside endpoint has sent to ("port-restricted cone").
    #[default]
    AddressAndPortDependent,
}

/// How a NAT picks public ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortAllocation {
    /// Uniformly at random from the range (seeded).
    #[default]
    Random,
    /// The next free port after the last one given out.
    Sequential,
}

/// A NAPT router's behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// Mapping behaviour.
    pub mapping: Mapping,
    /// Filtering behaviour.
    pub filtering: Filtering,
    /// Lifetime of a UDP binding after the last outbound packet (Linux conntrack's
    /// unreplied-UDP default: 30 s).
    pub udp_timeout: Duration,
    /// Lifetime of an established TCP binding after the last packet (RFC 5382: at least
    /// 2 h 4 min).
    pub tcp_established_timeout: Duration,
    /// Lifetime of a TCP binding that is opening (SYN seen) or closing (FIN or RST seen)
    /// (RFC 5382: 4 min).
    pub tcp_transitory_timeout: Duration,
    /// Whether inbound UDP packets also refresh a binding (RFC 4787 REQ-6 makes outbound
    /// refresh mandatory and inbound optional). TCP bindings are refreshed both ways.
    pub inbound_refresh: bool,
    /// How public ports are chosen.
    pub port_allocation: PortAllocation,
    /// Keep the inside port as the public port when it is free ("NAT without port
    /// translation", seed 002 ¶0108).
    pub port_preservation: bool,
    /// Lowest public port handed out.
    pub port_min: u16,
    /// Highest public port handed out.
    pub port_max: u16,
    /// Whether inside hosts reach each other through the public address.
    pub hairpinning: bool,
    /// Most live bindings (both protocols); a new flow beyond it is dropped with
    /// [`DropReason::TableFull`].
    pub max_bindings: usize,
    /// Most remote endpoints remembered per binding for filtering (oldest forgotten first).
    pub max_peers_per_binding: usize,
}

impl Default for NatConfig {
    /// Endpoint-independent mapping, address-and-port-dependent filtering (a typical home
    /// router: "port-restricted cone"), 30 s UDP timeout, random ports, hairpinning on.
    fn default() -> Self {
        NatConfig {
            mapping: Mapping::EndpointIndependent,
            filtering: Filtering::AddressAndPortDependent,
            udp_timeout: Duration::from_secs(30),
            tcp_established_timeout: Duration::from_secs(7440),
            tcp_transitory_timeout: Duration::from_secs(240),
            inbound_refresh: false,
            port_allocation: PortAllocation::Random,
            port_preservation: false,
            port_min: 1024,
            port_max: 65535,
            hairpinning: true,
            max_bindings: 4096,
            max_peers_per_binding: 64,
        }
    }
}

impl NatConfig {
    /// A NAT with these mapping and filtering behaviours and defaults otherwise.
    pub fn new(mapping: Mapping, filtering: Filtering) -> Self {
        NatConfig {
            mapping,
            filtering,
            ..NatConfig::default()
        }
    }

    /// Endpoint-independent mapping and filtering ("full cone").
    pub fn full_cone() -> Self {
        Self::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent)
    }

    /// Address-and-port-dependent mapping and filtering ("symmetric").
    pub fn symmetric() -> Self {
        Self::new(
            Mapping::AddressAndPortDependent,
            Filtering::AddressAndPortDependent,
        )
    }
}

/// A live binding, as [`Sim::bindings`](super::Sim::bindings) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingInfo {
    /// Protocol.
    pub proto: Proto,
    /// The inside endpoint.
    pub internal: SocketAddr,
    /// The public endpoint.
    pub external: SocketAddr,
    /// The remote endpoints the inside endpoint has sent to through it.
    pub peers: Vec<SocketAddr>,
    /// When it expires unless refreshed.
    pub expires: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RemoteKey {
    Any,
    Addr(IpAddr),
    AddrPort(SocketAddr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TcpTrack {
    Opening,
    Established,
    Closing,
}

#[derive(Clone, Debug)]
struct Binding {
    proto: Proto,
    internal: SocketAddr,
    key: RemoteKey,
    external_port: u16,
    peers: VecDeque<SocketAddr>,
    expires: Instant,
    tcp: TcpTrack,
}

/// The NAPT table of one router.
#[derive(Debug)]
pub(crate) struct Nat {
    pub cfg: NatConfig,
    pub public: IpAddr,
    bindings: Vec<Binding>,
    statics: BTreeMap<(Proto, u16), SocketAddr>,
    next_port: u16,
    rng: ChaCha20Rng,
}

impl Nat {
    pub fn new(cfg: NatConfig, public: IpAddr, rng: ChaCha20Rng) -> Nat {
        let next_port = cfg.port_min;
        Nat {
            cfg,
            public,
            bindings: Vec::new(),
            statics: BTreeMap::new(),
            next_port,
            rng,
        }
    }

    pub fn add_static(&mut self, proto: Proto, port: u16, inside: SocketAddr) -> bool {
        if self.statics.contains_key(&(proto, port)) {
            return false;
        }
        self.statics.insert((proto, port), inside);
        true
    }

    /// Forget every dynamic binding (static mappings stay).
    pub fn flush(&mut self) {
        self.bindings.clear();
    }

    pub fn bindings(&self, now: Instant) -> Vec<BindingInfo> {
        self.bindings
            .iter()
            .filter(|b| b.expires > now)
            .map(|b| BindingInfo {
                proto: b.proto,
                internal: b.internal,
                external: SocketAddr::new(self.public, b.external_port),
                peers: b.peers.iter().copied().collect(),
                expires: b.expires,
            })
            .collect()
    }

    fn key(&self, remote: SocketAddr) -> RemoteKey {
        match self.cfg.mapping {
            Mapping::EndpointIndependent => RemoteKey::Any,
            Mapping::AddressDependent => RemoteKey::Addr(remote.ip()),
            Mapping::AddressAndPortDependent => RemoteKey::AddrPort(remote),
        }
    }

    fn timeout(cfg: &NatConfig, b: &Binding) -> Duration {
        match (b.proto, b.tcp) {
            (Proto::Udp, _) => cfg.udp_timeout,
            (Proto::Tcp, TcpTrack::Established) => cfg.tcp_established_timeout,
            (Proto::Tcp, _) => cfg.tcp_transitory_timeout,
        }
    }

    fn track(b: &mut Binding, flags: Option<TcpFlags>, inbound: bool) {
        let Some(f) = flags else { return };
        if f.rst || f.fin {
            b.tcp = TcpTrack::Closing;
        } else if b.tcp == TcpTrack::Opening && f.ack && (inbound || !f.syn) {
            b.tcp = TcpTrack::Established;
        }
    }

    fn remember_peer(&mut self, i: usize, remote: SocketAddr) {
        let max = self.cfg.max_peers_per_binding.max(1);
        let b = &mut self.bindings[i];
        if !b.peers.contains(&remote) {
            if b.peers.len() >= max {
                b.peers.pop_front();
            }
            b.peers.push_back(remote);
        }
    }

    /// An inside endpoint sends to `remote`: the public port to use, or why not.
    pub fn outbound(
        &mut self,
        proto: Proto,
        internal: SocketAddr,
        remote: SocketAddr,
        flags: Option<TcpFlags>,
        now: Instant,
    ) -> Result<u16, DropReason> {
        if let Some((&(_, port), _)) = self
            .statics
            .iter()
            .find(|((p, _), inside)| *p == proto && **inside == internal)
        {
            return Ok(port);
        }
        let key = self.key(remote);
        if let Some(i) = self
            .bindings
            .iter()
            .position(|b| b.proto == proto && b.internal == internal && b.key == key)
        {
            if self.bindings[i].expires > now {
                self.remember_peer(i, remote);
                let b = &mut self.bindings[i];
                Self::track(b, flags, false);
                b.expires = now + Self::timeout(&self.cfg, b);
                return Ok(self.bindings[i].external_port);
            }
            self.bindings.remove(i);
        }
        if proto == Proto::Tcp && !flags.is_some_and(|f| f.syn && !f.ack) {
            // conntrack only creates TCP state from a SYN; anything else is refused.
            return Err(DropReason::NoMapping);
        }
        if self.live(now) >= self.cfg.max_bindings {
            self.bindings.retain(|b| b.expires > now);
            if self.bindings.len() >= self.cfg.max_bindings {
                return Err(DropReason::TableFull);
            }
        }
        let port = self.allocate(proto, internal.port(), now)?;
        let mut b = Binding {
            proto,
            internal,
            key,
            external_port: port,
            peers: VecDeque::new(),
            expires: now,
            tcp: TcpTrack::Opening,
        };
        b.expires = now + Self::timeout(&self.cfg, &b);
        self.bindings.push(b);
        let i = self.bindings.len() - 1;
        self.remember_peer(i, remote);
        Ok(port)
    }

    fn live(&self, now: Instant) -> usize {
        self.bindings.iter().filter(|b| b.expires > now).count()
    }

    /// Whether `port` is free for a new binding; removes an expired binding holding it.
    fn port_free(&mut self, proto: Proto, port: u16, now: Instant) -> bool {
        if port < self.cfg.port_min || port > self.cfg.port_max {
            return false;
        }
        if self.statics.contains_key(&(proto, port)) {
            return false;
        }
        match self
            .bindings
            .iter()
            .position(|b| b.proto == proto && b.external_port == port)
        {
            None => true,
            Some(i) if self.bindings[i].expires <= now => {
                self.bindings.remove(i);
                true
            }
            Some(_) => false,
        }
    }

    fn allocate(
        &mut self,
        proto: Proto,
        inside_port: u16,
        now: Instant,
    ) -> Result<u16, DropReason> {
        if self.cfg.port_preservation && self.port_free(proto, inside_port, now) {
            return Ok(inside_port);
        }
        let (lo, hi) = (self.cfg.port_min, self.cfg.port_max);
        if lo > hi {
            return Err(DropReason::PortsExhausted);
        }
        let span = u32::from(hi) - u32::from(lo) + 1;
        let start = match self.cfg.port_allocation {
            PortAllocation::Sequential => self.next_port.clamp(lo, hi),
            PortAllocation::Random => {
                for _ in 0..32 {
                    let p = lo + (self.rng.next_u32() % span) as u16;
                    if self.port_free(proto, p, now) {
                        return Ok(p);
                    }
                }
                lo + (self.rng.next_u32() % span) as u16
            }
        };
        for k in 0..span {
            let p = (u32::from(start) - u32::from(lo) + k) % span + u32::from(lo);
            let p = p as u16;
            if self.port_free(proto, p, now) {
                self.next_port = if p == hi { lo } else { p + 1 };
                return Ok(p);
            }
        }
        Err(DropReason::PortsExhausted)
    }

    /// A packet from `remote` arrives at public port `port`: the inside endpoint, or why not.
    pub fn inbound(
        &mut self,
        proto: Proto,
        remote: SocketAddr,
        port: u16,
        flags: Option<TcpFlags>,
        now: Instant,
    ) -> Result<SocketAddr, DropReason> {
        if let Some(inside) = self.statics.get(&(proto, port)) {
            return Ok(*inside);
        }
        let Some(i) = self
            .bindings
            .iter()
            .position(|b| b.proto == proto && b.external_port == port)
        else {
            return Err(DropReason::NoMapping);
        };
        if self.bindings[i].expires <= now {
            self.bindings.remove(i);
            return Err(DropReason::BindingExpired);
        }
        let b = &self.bindings[i];
        let allowed = match self.cfg.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => b.peers.iter().any(|p| p.ip() == remote.ip()),
            Filtering::AddressAndPortDependent => b.peers.contains(&remote),
        };
        if !allowed {
            return Err(DropReason::Filtered);
        }
        let refresh = proto == Proto::Tcp || self.cfg.inbound_refresh;
        let b = &mut self.bindings[i];
        Self::track(b, flags, true);
        if refresh {
            b.expires = now + Self::timeout(&self.cfg, b);
        }
        Ok(self.bindings[i].internal)
    }
}

/// A plain (non-translating) gateway's policy for traffic from outside to inside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    /// When true (the default) the inside is a *closed* network: packets from outside pass
    /// only if they answer a flow an inside host started, or match an [`AllowRule`].
    /// When false everything is routed both ways.
    pub closed: bool,
    /// Inbound packets these rules match always pass.
    pub allow: Vec<AllowRule>,
    /// Lifetime of a UDP (and other non-TCP) flow after its last outbound packet.
    pub udp_timeout: Duration,
    /// Lifetime of a TCP flow after its last packet.
    pub tcp_timeout: Duration,
    /// Most tracked flows; new outbound flows beyond it are dropped with
    /// [`DropReason::TableFull`].
    pub max_flows: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            closed: true,
            allow: Vec::new(),
            udp_timeout: Duration::from_secs(30),
            tcp_timeout: Duration::from_secs(7440),
            max_flows: 4096,
        }
    }
}

impl GatewayConfig {
    /// A gateway that routes everything both ways.
    pub fn open() -> Self {
        GatewayConfig {
            closed: false,
            ..GatewayConfig::default()
        }
    }

    /// Add a rule letting matching inbound packets through.
    pub fn allow(mut self, rule: AllowRule) -> Self {
        self.allow.push(rule);
        self
    }
}

/// An inbound allow rule of a closed gateway; `None` matches anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowRule {
    /// IP protocol number.
    pub protocol: Option<u8>,
    /// Inside destination address.
    pub to: Option<IpAddr>,
    /// Destination port (UDP/TCP).
    pub port: Option<u16>,
}

impl AllowRule {
    fn matches(&self, protocol: u8, dst: IpAddr, port: Option<u16>) -> bool {
        self.protocol.is_none_or(|p| p == protocol)
            && self.to.is_none_or(|a| a == dst)
            && self.port.is_none_or(|p| Some(p) == port)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Flow {
    protocol: u8,
    inside: SocketAddr,
    outside: SocketAddr,
}

/// The connection tracking of a plain gateway.
#[derive(Debug)]
pub(crate) struct Firewall {
    pub cfg: GatewayConfig,
    flows: BTreeMap<Flow, Instant>,
}

impl Firewall {
    pub fn new(cfg: GatewayConfig) -> Firewall {
        Firewall {
            cfg,
            flows: BTreeMap::new(),
        }
    }

    fn flow(protocol: u8, inside: SocketAddr, outside: SocketAddr) -> Flow {
        Flow {
            protocol,
            inside,
            outside,
        }
    }

    fn timeout(&self, protocol: u8) -> Duration {
        if protocol == PROTO_TCP {
            self.cfg.tcp_timeout
        } else {
            self.cfg.udp_timeout
        }
    }

    /// An inside host sends: track the flow.
    pub fn outbound(
        &mut self,
        protocol: u8,
        inside: SocketAddr,
        outside: SocketAddr,
        now: Instant,
    ) -> Result<(), DropReason> {
        if !self.cfg.closed {
            return Ok(());
        }
        let f = Self::flow(protocol, inside, outside);
        let until = now + self.timeout(protocol);
        if let Some(exp) = self.flows.get_mut(&f) {
            *exp = until;
            return Ok(());
        }
        if self.flows.len() >= self.cfg.max_flows {
            self.flows.retain(|_, exp| *exp > now);
            if self.flows.len() >= self.cfg.max_flows {
                return Err(DropReason::TableFull);
            }
        }
        self.flows.insert(f, until);
        Ok(())
    }

    /// A packet from outside to an inside host: may it pass?
    pub fn inbound(
        &mut self,
        protocol: u8,
        inside: SocketAddr,
        outside: SocketAddr,
        has_ports: bool,
        now: Instant,
    ) -> Result<(), DropReason> {
        if !self.cfg.closed {
            return Ok(());
        }
        let port = has_ports.then_some(inside.port());
        if self
            .cfg
            .allow
            .iter()
            .any(|r| r.matches(protocol, inside.ip(), port))
        {
            return Ok(());
        }
        let f = Self::flow(protocol, inside, outside);
        match self.flows.get(&f) {
            Some(exp) if *exp > now => {
                if protocol == PROTO_TCP {
                    let until = now + self.timeout(protocol);
                    self.flows.insert(f, until);
                }
                Ok(())
            }
            Some(_) => {
                self.flows.remove(&f);
                Err(DropReason::BindingExpired)
            }
            None => Err(DropReason::Firewall),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sequential_allocation_and_preservation() {
        let cfg = NatConfig {
            port_allocation: PortAllocation::Sequential,
            port_min: 2000,
            port_max: 2001,
            mapping: Mapping::AddressAndPortDependent,
            ..NatConfig::default()
        };
        let mut nat = Nat::new(
            cfg,
            "203.0.113.1".parse().unwrap(),
            ChaCha20Rng::seed_from_u64(1),
        );
        let t = Instant::ZERO;
        let a = sa("10.0.0.2:5000");
        assert_eq!(
            nat.outbound(Proto::Udp, a, sa("1.1.1.1:1"), None, t),
            Ok(2000)
        );
        assert_eq!(
            nat.outbound(Proto::Udp, a, sa("1.1.1.1:2"), None, t),
            Ok(2001)
        );
        assert_eq!(
            nat.outbound(Proto::Udp, a, sa("1.1.1.1:3"), None, t),
            Err(DropReason::PortsExhausted)
        );
        // After expiry the ports are reused.
        let later = t + Duration::from_secs(31);
        assert_eq!(
            nat.outbound(Proto::Udp, a, sa("1.1.1.1:3"), None, later),
            Ok(2000)
        );

        let mut pres = Nat::new(
            NatConfig {
                port_preservation: true,
                ..NatConfig::default()
            },
            "203.0.113.1".parse().unwrap(),
            ChaCha20Rng::seed_from_u64(1),
        );
        assert_eq!(
            pres.outbound(Proto::Udp, a, sa("1.1.1.1:1"), None, t),
            Ok(5000)
        );
        let b = sa("10.0.0.3:5000");
        let other = pres
            .outbound(Proto::Udp, b, sa("1.1.1.1:1"), None, t)
            .unwrap();
        assert_ne!(other, 5000);
    }

    #[test]
    fn tcp_needs_a_syn_to_open() {
        let mut nat = Nat::new(
            NatConfig::default(),
            "203.0.113.1".parse().unwrap(),
            ChaCha20Rng::seed_from_u64(1),
        );
        let ack = TcpFlags {
            ack: true,
            ..TcpFlags::default()
        };
        assert_eq!(
            nat.outbound(
                Proto::Tcp,
                sa("10.0.0.2:5"),
                sa("1.1.1.1:80"),
                Some(ack),
                Instant::ZERO
            ),
            Err(DropReason::NoMapping)
        );
    }

    #[test]
    fn firewall_tracks_flows_and_rules() {
        let mut fw = Firewall::new(GatewayConfig::default().allow(AllowRule {
            protocol: Some(PROTO_UDP),
            to: None,
            port: Some(53),
        }));
        let t = Instant::ZERO;
        let inside = sa("10.0.0.2:4000");
        let outside = sa("198.51.100.1:9");
        assert_eq!(
            fw.inbound(PROTO_UDP, inside, outside, true, t),
            Err(DropReason::Firewall)
        );
        fw.outbound(PROTO_UDP, inside, outside, t).unwrap();
        assert_eq!(fw.inbound(PROTO_UDP, inside, outside, true, t), Ok(()));
        assert_eq!(
            fw.inbound(
                PROTO_UDP,
                inside,
                outside,
                true,
                t + Duration::from_secs(31)
            ),
            Err(DropReason::BindingExpired)
        );
        assert_eq!(
            fw.inbound(PROTO_UDP, sa("10.0.0.2:53"), outside, true, t),
            Ok(())
        );
    }
}

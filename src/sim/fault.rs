//! Fault injection: drop, duplicate, delay, corrupt, replace or replay chosen packets.
//!
//! A [`Fault`] is a predicate (which packets) plus a [`FaultAction`] (what happens to them).
//! [`Sim::add_fault`](super::Sim::add_fault) installs it; from then on every packet put on
//! a network — every hop, after the next hop is chosen and before the link model draws
//! loss, duplication and delay — is offered to the installed faults in the order they were
//! added. A fault counts the packets its predicate matches; [`Fault::nth`] and
//! [`Fault::count`] choose which of those matches it acts on, so "the third datagram of
//! this flow" is `Fault::new(..).flow(a, b).nth(2)`. Every fault counts every packet it
//! matches, also one that an earlier fault dropped.
//!
//! Everything is deterministic: the predicate sees packets in the simulator's own order,
//! and [`Fault::probability`] draws from a stream derived from the simulation's seed (label
//! `"faults"`), separate from the link model's.
//!
//! Corruption (flip, truncate, extend, replace, rewrite) works on the packet's *payload* —
//! the UDP or TCP payload, or the IP payload for other protocols (ESP …) — and the
//! simulator rebuilds the headers and checksums around the new payload, so the damage
//! reaches the receiving actor instead of being discarded as a bad checksum: it stands for
//! damage the checksums did not catch, or for an attacker on the path. TCP segments keep
//! their sequence numbers, flags and window; a truncated segment is simply a shorter one
//! (the sender's TCP retransmits what was not acknowledged).
//!
//! ```
//! use deputy::sim::fault::{Fault, FaultAction};
//! use deputy::sim::{DatagramProbe, LinkConfig, Sim};
//! use std::time::Duration;
//!
//! let mut sim = Sim::new(7);
//! let lan = sim.add_network("lan", "10.0.0.0/24", LinkConfig::default()).unwrap();
//! let a = sim.add_host("a", lan, "10.0.0.1".parse().unwrap(), DatagramProbe::new(9)).unwrap();
//! let b = sim.add_host("b", lan, "10.0.0.2".parse().unwrap(), DatagramProbe::new(9)).unwrap();
//! // Drop the second datagram a sends to b's port 9, flip the first byte of the third.
//! let drop = Fault::new(FaultAction::Drop).from_node(a).dst_port(9).nth(1);
//! let drop = sim.add_fault(drop).unwrap();
//! sim.add_fault(Fault::new(FaultAction::flip(0)).from_node(a).dst_port(9).nth(2)).unwrap();
//! for msg in [b"one", b"two", b"six"] {
//!     sim.with_actor(a, |p: &mut DatagramProbe, _| p.send("10.0.0.2:9".parse().unwrap(), &msg[..]))
//!         .unwrap()
//!         .unwrap();
//! }
//! sim.run_for(Duration::from_secs(1)).unwrap();
//! let got: Vec<Vec<u8>> = sim
//!     .with_actor(b, |p: &mut DatagramProbe, _| p.take_received())
//!     .unwrap()
//!     .into_iter()
//!     .map(|r| r.data)
//!     .collect();
//! assert_eq!(got, [b"one".to_vec(), vec![b's' ^ 0xff, b'i', b'x']]);
//! assert_eq!(sim.fault_stats(drop).unwrap().applied, 1);
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::prelude::rust_2024::*;
use std::rc::Rc;
use std::time::Duration;

use super::net::NetworkId;
use super::packet::{self, PROTO_TCP, PROTO_UDP, PacketInfo, TcpSegment};
use super::{NodeId, SimError};

/// A predicate over a packet, as [`Fault::when`] takes it.
pub type PacketPredicate = Rc<dyn Fn(&PacketInfo<'_>) -> bool>;

/// A payload rewrite, as [`FaultAction::Rewrite`] takes it.
pub type PayloadRewrite = Rc<dyn Fn(&[u8]) -> Vec<u8>>;

/// What a [`Fault`] does to a packet it acts on.
#[derive(Clone)]
#[non_exhaustive]
pub enum FaultAction {
    /// The packet is lost (recorded as a drop with [`DropReason::Injected`](super::DropReason::Injected)).
    Drop,
    /// The packet is sent twice; the copy draws its own link delay.
    Duplicate,
    /// The packet arrives this much later than the link model says (it may overtake or be
    /// overtaken: delayed packets leave the per-link delivery order).
    Delay(Duration),
    /// XOR the payload byte at `offset` with `mask`. An offset past the payload's end
    /// leaves the packet as it is (the fault still counts as applied).
    Flip {
        /// Index into the payload.
        offset: usize,
        /// Bits to flip (non-zero for a change).
        mask: u8,
    },
    /// Keep only the first `len` payload bytes.
    Truncate(usize),
    /// Append these bytes to the payload.
    Extend(Vec<u8>),
    /// Replace the payload with these bytes.
    Replace(Vec<u8>),
    /// Replace the payload with what the closure makes of it.
    Rewrite(PayloadRewrite),
    /// Let the packet pass, then put on the same network a copy of this fault's earlier
    /// match number `earlier` (0-based, counted like [`Fault::nth`]), as it was then: a
    /// replay. Nothing is replayed while that match has not been seen yet. The copy is
    /// routed by its own destination and offered to no fault.
    Replay {
        /// Which earlier match to send again.
        earlier: u64,
    },
}

impl FaultAction {
    /// Flip every bit of the payload byte at `offset`.
    pub fn flip(offset: usize) -> FaultAction {
        FaultAction::Flip { offset, mask: 0xff }
    }

    /// Rewrite the payload with a closure.
    pub fn rewrite(f: impl Fn(&[u8]) -> Vec<u8> + 'static) -> FaultAction {
        FaultAction::Rewrite(Rc::new(f))
    }
}

impl fmt::Debug for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultAction::Drop => f.write_str("Drop"),
            FaultAction::Duplicate => f.write_str("Duplicate"),
            FaultAction::Delay(d) => write!(f, "Delay({d:?})"),
            FaultAction::Flip { offset, mask } => write!(f, "Flip({offset}, {mask:#04x})"),
            FaultAction::Truncate(n) => write!(f, "Truncate({n})"),
            FaultAction::Extend(b) => write!(f, "Extend({} bytes)", b.len()),
            FaultAction::Replace(b) => write!(f, "Replace({} bytes)", b.len()),
            FaultAction::Rewrite(_) => f.write_str("Rewrite(..)"),
            FaultAction::Replay { earlier } => write!(f, "Replay({earlier})"),
        }
    }
}

/// Which packets a fault acts on, and what it does to them. Every predicate given must
/// hold (they are ANDed); none given matches every packet. See the [module docs](self).
#[derive(Clone)]
pub struct Fault {
    action: FaultAction,
    net: Option<NetworkId>,
    from: Option<NodeId>,
    to: Option<NodeId>,
    node: Option<NodeId>,
    protocol: Option<u8>,
    src: Option<SocketAddr>,
    dst: Option<SocketAddr>,
    src_ip: Option<IpAddr>,
    dst_ip: Option<IpAddr>,
    port: Option<u16>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    flow: Option<(SocketAddr, SocketAddr)>,
    with_payload: bool,
    when: Option<PacketPredicate>,
    nth: u64,
    count: Option<u64>,
    probability: f64,
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fault")
            .field("action", &self.action)
            .field("net", &self.net)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("node", &self.node)
            .field("protocol", &self.protocol)
            .field("flow", &self.flow)
            .field("nth", &self.nth)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl Fault {
    /// A fault that does `action` to every packet (narrow it with the other methods).
    pub fn new(action: FaultAction) -> Fault {
        Fault {
            action,
            net: None,
            from: None,
            to: None,
            node: None,
            protocol: None,
            src: None,
            dst: None,
            src_ip: None,
            dst_ip: None,
            port: None,
            src_port: None,
            dst_port: None,
            flow: None,
            with_payload: false,
            when: None,
            nth: 0,
            count: None,
            probability: 1.0,
        }
    }

    /// Only packets put on this network (per link).
    pub fn on_network(mut self, net: NetworkId) -> Fault {
        self.net = Some(net);
        self
    }

    /// Only hops whose sender is `node` (the host, router or inline node putting the
    /// packet on the network).
    pub fn from_node(mut self, node: NodeId) -> Fault {
        self.from = Some(node);
        self
    }

    /// Only hops toward `node` (the next hop the simulator chose).
    pub fn to_node(mut self, node: NodeId) -> Fault {
        self.to = Some(node);
        self
    }

    /// Only hops from or to `node`, either direction (per node).
    pub fn at_node(mut self, node: NodeId) -> Fault {
        self.node = Some(node);
        self
    }

    /// Only this IP protocol ([`packet::PROTO_UDP`], [`packet::PROTO_TCP`], …).
    pub fn protocol(mut self, protocol: u8) -> Fault {
        self.protocol = Some(protocol);
        self
    }

    /// Only packets from this socket address (as seen on the hop: after any NAT rewrite
    /// of an earlier hop).
    pub fn src(mut self, addr: SocketAddr) -> Fault {
        self.src = Some(addr);
        self
    }

    /// Only packets to this socket address.
    pub fn dst(mut self, addr: SocketAddr) -> Fault {
        self.dst = Some(addr);
        self
    }

    /// Only packets from this IP address.
    pub fn src_ip(mut self, ip: IpAddr) -> Fault {
        self.src_ip = Some(ip);
        self
    }

    /// Only packets to this IP address.
    pub fn dst_ip(mut self, ip: IpAddr) -> Fault {
        self.dst_ip = Some(ip);
        self
    }

    /// Only UDP/TCP packets with `port` as source or destination port.
    pub fn port(mut self, port: u16) -> Fault {
        self.port = Some(port);
        self
    }

    /// Only UDP/TCP packets from `port`.
    pub fn src_port(mut self, port: u16) -> Fault {
        self.src_port = Some(port);
        self
    }

    /// Only UDP/TCP packets to `port`.
    pub fn dst_port(mut self, port: u16) -> Fault {
        self.dst_port = Some(port);
        self
    }

    /// Only packets of the flow between socket addresses `a` and `b`, either direction.
    pub fn flow(mut self, a: SocketAddr, b: SocketAddr) -> Fault {
        self.flow = Some((a, b));
        self
    }

    /// Only packets with a non-empty payload: TCP data segments, not bare SYNs, ACKs or
    /// FINs — so [`nth`](Fault::nth) counts the segments that carry data.
    pub fn with_payload(mut self) -> Fault {
        self.with_payload = true;
        self
    }

    /// Only packets for which `pred` holds. Called once per packet that the other
    /// predicates let through, in simulation order (it may record what it sees).
    pub fn when(mut self, pred: impl Fn(&PacketInfo<'_>) -> bool + 'static) -> Fault {
        self.when = Some(Rc::new(pred));
        self
    }

    /// Act on the match number `n` (0-based) and the ones after it (see
    /// [`count`](Fault::count)); the earlier matches pass untouched.
    pub fn nth(mut self, n: u64) -> Fault {
        self.nth = n;
        if self.count.is_none() {
            self.count = Some(1);
        }
        self
    }

    /// Act on `n` matches, from [`nth`](Fault::nth) on (default: 1 once `nth` is given,
    /// otherwise all).
    pub fn count(mut self, n: u64) -> Fault {
        self.count = Some(n);
        self
    }

    /// Act on each chosen match only with probability `p` (seeded draw).
    pub fn probability(mut self, p: f64) -> Fault {
        self.probability = p;
        self
    }

    fn matches(&self, hop: &Hop, info: &PacketInfo<'_>) -> bool {
        let (src, dst) = (info.src_socket(), info.dst_socket());
        let ports = info.ports;
        self.net.is_none_or(|n| n == hop.net)
            && self.from.is_none_or(|n| n == hop.from)
            && self.to.is_none_or(|n| n == hop.to)
            && self.node.is_none_or(|n| n == hop.from || n == hop.to)
            && self.protocol.is_none_or(|p| p == info.protocol)
            && self.src.is_none_or(|a| Some(a) == src)
            && self.dst.is_none_or(|a| Some(a) == dst)
            && self.src_ip.is_none_or(|a| a == info.src)
            && self.dst_ip.is_none_or(|a| a == info.dst)
            && self
                .port
                .is_none_or(|p| ports.is_some_and(|(s, d)| s == p || d == p))
            && self
                .src_port
                .is_none_or(|p| ports.is_some_and(|(s, _)| s == p))
            && self
                .dst_port
                .is_none_or(|p| ports.is_some_and(|(_, d)| d == p))
            && self.flow.is_none_or(|(a, b)| {
                (src == Some(a) && dst == Some(b)) || (src == Some(b) && dst == Some(a))
            })
            && (!self.with_payload || !info.payload.is_empty())
            && self.when.as_ref().is_none_or(|w| w(info))
    }
}

/// Names an installed fault: [`Sim::add_fault`](super::Sim::add_fault) returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultId(pub(crate) u32);

/// What an installed fault has seen and done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Packets its predicate matched.
    pub matched: u64,
    /// Packets it acted on.
    pub applied: u64,
}

/// One hop of one packet, as the faults see it.
pub(crate) struct Hop {
    pub net: NetworkId,
    pub from: NodeId,
    pub to: NodeId,
}

/// What the faults decided for one packet.
#[derive(Default)]
pub(crate) struct Verdict {
    /// Dropped (by an injected fault).
    pub dropped: bool,
    /// Extra copies to send.
    pub copies: u32,
    /// Extra delay.
    pub delay: Duration,
    /// Earlier packets to put on the network after this one.
    pub replays: Vec<Vec<u8>>,
    /// Whether the packet was changed (for the trace label).
    pub changed: bool,
}

struct Installed {
    fault: Fault,
    stats: FaultStats,
    /// The packet of match `Replay::earlier`, kept when it passes.
    replay: Option<Vec<u8>>,
}

/// The installed faults of one simulation.
#[derive(Default)]
pub(crate) struct Faults {
    list: Vec<Option<Installed>>,
}

/// Most faults added to one simulation, removed ones included (a test adds a handful; the
/// bound keeps a runaway loop from growing the per-packet work without end).
pub const MAX_FAULTS: usize = 1024;

impl Faults {
    pub fn is_empty(&self) -> bool {
        self.list.iter().all(Option::is_none)
    }

    pub fn add(&mut self, fault: Fault) -> Result<FaultId, SimError> {
        // Removed faults keep their slot (ids are never reused), so the bound is on every
        // fault ever added, which also bounds the list itself.
        let id = match u32::try_from(self.list.len()) {
            Ok(n) if self.list.len() < MAX_FAULTS => FaultId(n),
            _ => return Err(SimError::TooManyFaults(MAX_FAULTS)),
        };
        self.list.push(Some(Installed {
            fault,
            stats: FaultStats::default(),
            replay: None,
        }));
        Ok(id)
    }

    pub fn remove(&mut self, id: FaultId) -> Result<FaultStats, SimError> {
        self.list
            .get_mut(id.0 as usize)
            .and_then(Option::take)
            .map(|i| i.stats)
            .ok_or(SimError::UnknownFault(id))
    }

    pub fn stats(&self, id: FaultId) -> Result<FaultStats, SimError> {
        self.list
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .map(|i| i.stats)
            .ok_or(SimError::UnknownFault(id))
    }

    /// Offer `data` (one hop) to every fault; returns the packet as it leaves and the
    /// verdict. `draw` gives the seeded probability draws.
    pub fn apply(
        &mut self,
        hop: &Hop,
        mut data: Vec<u8>,
        mut draw: impl FnMut(f64) -> bool,
    ) -> (Vec<u8>, Verdict) {
        let mut v = Verdict::default();
        for inst in self.list.iter_mut().flatten() {
            let Ok(info) = packet::parse(&data) else {
                break;
            };
            if !inst.fault.matches(hop, &info) {
                continue;
            }
            let index = inst.stats.matched;
            inst.stats.matched += 1;
            if let FaultAction::Replay { earlier } = inst.fault.action
                && index == earlier
            {
                inst.replay = Some(data.clone());
            }
            let f = &inst.fault;
            let chosen = index >= f.nth && f.count.is_none_or(|c| index - f.nth < c);
            // A packet an earlier fault dropped still counts as a match of the later ones
            // (so each fault's `nth` counts the same packets whatever else is installed),
            // but nothing more happens to it.
            if v.dropped || !chosen || !draw(f.probability) {
                continue;
            }
            inst.stats.applied += 1;
            let new_payload = match &f.action {
                FaultAction::Drop => {
                    v.dropped = true;
                    None
                }
                FaultAction::Duplicate => {
                    v.copies += 1;
                    None
                }
                FaultAction::Delay(d) => {
                    v.delay += *d;
                    None
                }
                FaultAction::Replay { .. } => {
                    if let Some(p) = &inst.replay {
                        v.replays.push(p.clone());
                    }
                    None
                }
                FaultAction::Flip { offset, mask } => {
                    let mut p = info.payload.to_vec();
                    if let Some(b) = p.get_mut(*offset) {
                        *b ^= mask;
                    }
                    Some(p)
                }
                FaultAction::Truncate(n) => {
                    Some(info.payload[..(*n).min(info.payload.len())].to_vec())
                }
                FaultAction::Extend(more) => {
                    let mut p = info.payload.to_vec();
                    p.extend_from_slice(more);
                    Some(p)
                }
                FaultAction::Replace(p) => Some(p.clone()),
                FaultAction::Rewrite(r) => Some(r(info.payload)),
            };
            if let Some(p) = new_payload
                && p != info.payload
                && let Some(rebuilt) = with_payload(&info, &p)
            {
                data = rebuilt;
                v.changed = true;
            }
        }
        (data, v)
    }
}

/// The packet `info` with `payload` instead of its own, headers and checksums rebuilt;
/// `None` for a fragment or a payload too large for one packet.
fn with_payload(info: &PacketInfo<'_>, payload: &[u8]) -> Option<Vec<u8>> {
    if info.fragment {
        return None;
    }
    match (
        info.protocol,
        info.src_socket(),
        info.dst_socket(),
        info.tcp,
    ) {
        (PROTO_UDP, Some(s), Some(d), _) => packet::build_udp(s, d, info.ttl, payload).ok(),
        (PROTO_TCP, Some(s), Some(d), Some(t)) => {
            let seg = TcpSegment {
                flags: t.flags,
                seq: t.seq,
                ack: t.ack,
                window: t.window,
            };
            packet::build_tcp(s, d, info.ttl, &seg, payload).ok()
        }
        _ => packet::build_ip(info.src, info.dst, info.protocol, info.ttl, payload).ok(),
    }
}

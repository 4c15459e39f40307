//! What the simulator records: the trace, drops and their reasons, labels, and the pcap.

use std::fmt;
use std::net::IpAddr;
use std::prelude::rust_2024::*;

use super::packet::{
    self, PROTO_ESP, PROTO_ICMP, PROTO_ICMPV6, PROTO_IPIP, PROTO_IPV6, PROTO_TCP, PROTO_UDP,
    PacketInfo,
};
use super::{NetworkId, NodeId};
use crate::Instant;

/// Why a packet did not arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Random loss on the link.
    Loss,
    /// No node on the network has the destination address and no route matches.
    NoRoute,
    /// The TTL / hop limit ran out at a router.
    TtlExceeded,
    /// A NAPT has no binding (and no static mapping) for the public port, or an inside
    /// TCP segment that is not a SYN tried to open one.
    NoMapping,
    /// The binding (or gateway flow) existed but had timed out.
    BindingExpired,
    /// The NAPT's filtering behaviour refused the sender.
    Filtered,
    /// A closed gateway (or a NAPT, for traffic not addressed to its public address)
    /// refused an inbound packet.
    Firewall,
    /// A NAPT's binding table or a gateway's flow table is full.
    TableFull,
    /// A NAPT has no free public port.
    PortsExhausted,
    /// An inside host sent to the NAPT's public address and hairpinning is off.
    HairpinDisabled,
    /// A NAPT only translates UDP and TCP.
    NatUnsupported,
    /// Not a well-formed IP packet, or a bad checksum.
    Malformed,
    /// The packet reached a host that does not have its destination address.
    NotAddressed,
    /// A host got a protocol it neither handles (UDP, TCP) nor takes raw.
    ProtocolUnsupported,
    /// A SYN reached a host that has no room for another stream.
    StreamLimit,
    /// The packet was addressed to a router, which runs no services.
    AddressedToRouter,
    /// The simulator's event queue is full.
    QueueFull,
    /// A fault installed with [`Sim::add_fault`](super::Sim::add_fault) dropped it.
    Injected,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            DropReason::Loss => "lost",
            DropReason::NoRoute => "no route",
            DropReason::TtlExceeded => "TTL exceeded",
            DropReason::NoMapping => "no NAT mapping",
            DropReason::BindingExpired => "binding expired",
            DropReason::Filtered => "filtered by NAT",
            DropReason::Firewall => "refused by firewall",
            DropReason::TableFull => "table full",
            DropReason::PortsExhausted => "no free port",
            DropReason::HairpinDisabled => "no hairpinning",
            DropReason::NatUnsupported => "protocol not translated",
            DropReason::Malformed => "malformed",
            DropReason::NotAddressed => "not addressed to host",
            DropReason::ProtocolUnsupported => "protocol not handled",
            DropReason::StreamLimit => "stream limit",
            DropReason::AddressedToRouter => "addressed to router",
            DropReason::QueueFull => "event queue full",
            DropReason::Injected => "dropped by an injected fault",
        };
        f.write_str(s)
    }
}

/// The headline of a packet, for traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PacketSummary {
    /// Source address (unspecified if the packet could not be parsed).
    pub src: IpAddr,
    /// Destination address (unspecified if the packet could not be parsed).
    pub dst: IpAddr,
    /// IP protocol number.
    pub protocol: u8,
    /// UDP/TCP source port.
    pub src_port: Option<u16>,
    /// UDP/TCP destination port.
    pub dst_port: Option<u16>,
    /// Length of the whole packet.
    pub len: usize,
    /// FNV-1a fingerprint of the whole packet.
    pub hash: u64,
}

impl PacketSummary {
    pub(crate) fn of(data: &[u8], info: Option<&PacketInfo<'_>>) -> PacketSummary {
        let none = IpAddr::from([0u8; 4]);
        PacketSummary {
            src: info.map_or(none, |i| i.src),
            dst: info.map_or(none, |i| i.dst),
            protocol: info.map_or(0, |i| i.protocol),
            src_port: info.and_then(|i| i.ports).map(|p| p.0),
            dst_port: info.and_then(|i| i.ports).map(|p| p.1),
            len: data.len(),
            hash: packet::fingerprint(data),
        }
    }
}

/// What happened to a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceKind {
    /// The packet was put on `net` by `from`, toward `to`, and arrives at `arrives`.
    Hop {
        /// The network.
        net: NetworkId,
        /// The sending node.
        from: NodeId,
        /// The receiving node.
        to: NodeId,
        /// Arrival time.
        arrives: Instant,
    },
    /// The packet was dropped.
    Drop {
        /// The node that dropped it (for [`DropReason::Loss`], the sender).
        at: NodeId,
        /// The node it was heading to, when known (lost packets).
        toward: Option<NodeId>,
        /// The network it was on or about to be put on, when known.
        net: Option<NetworkId>,
        /// Why.
        reason: DropReason,
    },
}

/// One entry of the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// When it happened (for hops: when the packet was sent).
    pub time: Instant,
    /// What happened.
    pub kind: TraceKind,
    /// The packet.
    pub packet: PacketSummary,
    /// Its label (see [`Sim::set_labeler`](super::Sim::set_labeler)).
    pub label: String,
}

impl TraceEntry {
    /// The drop reason, if this entry is a drop.
    pub fn drop_reason(&self) -> Option<DropReason> {
        match self.kind {
            TraceKind::Drop { reason, .. } => Some(reason),
            TraceKind::Hop { .. } => None,
        }
    }
}

/// A function naming packets for the trace and the chart: return `None` to fall back to
/// the default label.
pub type Labeler = Box<dyn Fn(&PacketInfo<'_>) -> Option<String>>;

fn proto_name(p: u8) -> Option<&'static str> {
    Some(match p {
        PROTO_ICMP => "ICMP",
        PROTO_IPIP => "IPIP",
        PROTO_TCP => "TCP",
        PROTO_UDP => "UDP",
        PROTO_IPV6 => "IPv6-in-IP",
        PROTO_ESP => "ESP",
        PROTO_ICMPV6 => "ICMPv6",
        _ => return None,
    })
}

/// Names a deputy wire message type (the header's type byte), or `None` for a type it does
/// not know. Protocols register theirs with
/// [`Sim::register_message_names`](super::Sim::register_message_names).
pub type MessageNamer = fn(u8) -> Option<&'static str>;

/// The default label with deputy's own message names (every `Sim` registers them).
pub fn default_label(info: &PacketInfo<'_>) -> String {
    label_with(info, &[crate::event::message_name])
}

/// The default label: protocol, ports, TCP flags, length; for a payload that starts with
/// deputy's wire magic `"DP"`, the messages it carries, named by the first of `names` that
/// knows each type.
pub(crate) fn label_with(info: &PacketInfo<'_>, names: &[MessageNamer]) -> String {
    let proto = match proto_name(info.protocol) {
        Some(n) => n.to_string(),
        None => std::format!("proto {}", info.protocol),
    };
    let mut s = match info.ports {
        Some((a, b)) => std::format!("{proto} {a}→{b}"),
        None => proto,
    };
    if let Some(t) = info.tcp {
        s.push_str(&std::format!(" [{}]", t.flags.describe()));
    }
    let p = info.payload;
    if info.ports.is_some()
        && let Some(messages) = deputy_messages(p, names)
    {
        s.push(' ');
        s.push_str(&messages);
    }
    s.push_str(&std::format!(" ({} B)", p.len()));
    s
}

/// Name the deputy wire messages a UDP/TCP payload carries, in order, runs compressed:
/// `"ServerHello, Record×4"`. A message cut off by the segment end is marked `…`.
fn deputy_messages(mut p: &[u8], names: &[MessageNamer]) -> Option<String> {
    let mut runs: Vec<(String, usize)> = Vec::new();
    while p.len() >= 4 && p[..2] == crate::wire::MAGIC {
        let name = match names.iter().find_map(|n| n(p[3])) {
            Some(n) => n.to_string(),
            None => std::format!("DP type {:#04x}", p[3]),
        };
        let whole = p
            .get(4..8)
            .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .map(|body| crate::wire::HEADER_LEN.saturating_add(body))
            .filter(|&len| len <= p.len());
        let name = if whole.is_some() { name } else { name + "…" };
        match runs.last_mut() {
            Some((last, n)) if *last == name => *n += 1,
            _ => runs.push((name, 1)),
        }
        match whole {
            Some(len) => p = &p[len..],
            None => break,
        }
    }
    if runs.is_empty() {
        return None;
    }
    let parts: Vec<String> = runs
        .into_iter()
        .map(|(name, n)| {
            if n == 1 {
                name
            } else {
                std::format!("{name}×{n}")
            }
        })
        .collect();
    Some(parts.join(", "))
}

/// LINKTYPE_RAW: each record is a bare IPv4 or IPv6 packet.
const LINKTYPE_RAW: u32 = 101;

/// A pcap file (nanosecond timestamps, LINKTYPE_RAW), built in memory with a size bound.
#[derive(Debug)]
pub(crate) struct Pcap {
    bytes: Vec<u8>,
    bound: usize,
    pub truncated: bool,
}

impl Pcap {
    pub fn new(bound: usize) -> Pcap {
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes()); // nanosecond magic
        bytes.extend_from_slice(&2u16.to_le_bytes());
        bytes.extend_from_slice(&4u16.to_le_bytes());
        bytes.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        bytes.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        bytes.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
        bytes.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        Pcap {
            bytes,
            bound,
            truncated: false,
        }
    }

    pub fn record(&mut self, time: Instant, data: &[u8]) {
        if self.truncated || self.bytes.len() + 16 + data.len() > self.bound {
            self.truncated = true;
            return;
        }
        let nanos = time.as_nanos();
        let secs = u32::try_from(nanos / 1_000_000_000).unwrap_or(u32::MAX);
        let frac = (nanos % 1_000_000_000) as u32;
        let snap = data.len().min(65535);
        self.bytes.extend_from_slice(&secs.to_le_bytes());
        self.bytes.extend_from_slice(&frac.to_le_bytes());
        self.bytes.extend_from_slice(&(snap as u32).to_le_bytes());
        self.bytes
            .extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
        self.bytes.extend_from_slice(&data[..snap]);
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

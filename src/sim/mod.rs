//! A deterministic network simulator in virtual time (feature `sim`).
//!
//! The simulator drives any [`Actor`] through the contract in [`crate::io`]: it delivers
//! datagrams, stream events and raw IP packets, carries out the actor's outputs, and fires
//! its timers — all in virtual time, from one seed, so a run is byte-for-byte repeatable.
//! Everything on the wire is a real IPv4/IPv6 packet (built with `etherparse`), so NAPT
//! routers rewrite real headers, IP-layer middleboxes see real packets, and the recorded
//! pcap opens in Wireshark.
//!
//! # Model
//!
//! - **Networks** ([`Sim::add_network`]) are segments with one prefix and a [`LinkConfig`]
//!   (latency, jitter, loss, duplication, reordering).
//! - **Hosts** ([`Sim::add_host`]) have one address on one network and one actor. UDP
//!   arrives as [`Input::Datagram`], TCP through the simulator's own small TCP as stream
//!   events (listen with [`Sim::listen`]), and — if asked with [`Sim::set_raw_ip`] —
//!   other protocols (ESP, IP-in-IP, ICMP, or everything) as [`Input::Packet`] on
//!   `IfaceId(0)`.
//! - **Routers** join networks: [`Sim::add_napt`] (an RFC 4787 NAPT, see [`NatConfig`]),
//!   [`Sim::add_gateway`] (routing without translation, optionally closing the inside
//!   network with a stateful firewall, see [`GatewayConfig`]) and [`Sim::add_router`]
//!   (plain routing). Routers decrement the TTL and run no actor.
//! - **Inline nodes** ([`Sim::add_inline`], [`Sim::add_inline_with`]) are actors with
//!   several interfaces that sit on the path: every packet that reaches them arrives as
//!   [`Input::Packet`] with the interface it came in on, and they emit packets with
//!   [`Output::Packet`]. They need no address (a bump in the wire) but may have some; one
//!   with an address can also serve TCP on it, as a host does ([`Sim::listen_inline`]: a
//!   management address): TCP to its own address on a listening port, or of a stream it
//!   has open, then arrives as stream events and it may emit stream outputs, while all
//!   other traffic — what it bridges, other ports — still arrives raw.
//!
//! # Routing
//!
//! A packet put on a network goes to the longest match among: the node that has the
//! destination address on that network; the network's routes ([`Sim::add_route`]); and
//! inline nodes behind which the destination is reachable — an inline node *bridges*:
//! if a host on its other side has the address, or a route there matches, the inline node
//! gets the packet. On equal length a direct match beats a bridged one. The sending node
//! is never its own next hop (except for its own address). Routers choose the outgoing
//! interface by longest prefix over their networks' prefixes and their own routes
//! ([`Sim::add_router_route`]). Adding a NAPT or gateway installs a default route on the
//! inside network toward it (if that network has none) and a default route on the
//! router toward the outside; a gateway also gets a route for the inside prefix on the
//! outside network.
//!
//! # Loss and streams
//!
//! Loss, duplication and reordering apply to every packet, TCP segments included. The
//! simulated TCP ([`TcpConfig`]) recovers: it retransmits after a timeout (1 s, doubling),
//! reassembles out-of-order segments and discards duplicates, so actors always see a
//! reliable, ordered byte stream — or `StreamClosed` when retransmissions run out.
//!
//! # Recording
//!
//! Every packet on every hop is recorded (after each NAT rewrite): in the in-memory
//! [`trace`](Sim::trace), in a [pcap](Sim::pcap_bytes) (LINKTYPE_RAW, nanosecond
//! timestamps), and as an arrow in a [Mermaid chart](Sim::mermaid). Drops are trace
//! entries and chart notes with a [`DropReason`], never pcap records. Labels name the
//! protocol, ports, TCP flags and length, and the deputy messages a payload carries, named
//! by the catalogue each `Sim` registers ([`Sim::register_message_names`] adds more);
//! [`Sim::set_labeler`] replaces labels altogether.
//!
//! # Limitations
//!
//! No MTU or fragmentation, no ICMP errors, no link layer; hosts have one interface;
//! inline nodes have no UDP of their own;
//! NAPTs translate UDP and TCP only; the TCP has no congestion control or TIME_WAIT.
//! `docs/sim.md` describes the model in full.
//!
//! # Example: a probe behind a NAPT talks to a server
//!
//! ```
//! use std::time::Duration;
//! use deputy::sim::{DatagramProbe, LinkConfig, NatConfig, Sim};
//!
//! let mut sim = Sim::new(7);
//! let home = sim.add_network("home", "192.168.1.0/24", LinkConfig::default()).unwrap();
//! let internet = sim.add_network("internet", "203.0.113.0/24", LinkConfig::default()).unwrap();
//! let nat = sim
//!     .add_napt("router", home, "192.168.1.1".parse().unwrap(), internet,
//!               "203.0.113.1".parse().unwrap(), NatConfig::default())
//!     .unwrap();
//! let alice = sim
//!     .add_host("alice", home, "192.168.1.10".parse().unwrap(), DatagramProbe::new(4000))
//!     .unwrap();
//! let server = sim
//!     .add_host("server", internet, "203.0.113.80".parse().unwrap(), DatagramProbe::new(3478).echoing())
//!     .unwrap();
//!
//! let server_addr = "203.0.113.80:3478".parse().unwrap();
//! sim.command(alice, |p: &mut DatagramProbe, _now| p.send(server_addr, b"ping".to_vec()))
//!     .unwrap();
//! sim.run_for(Duration::from_millis(50)).unwrap();
//!
//! // The server saw the NAT's public address; alice got the echo back.
//! let seen = sim.with_actor(server, |p: &mut DatagramProbe, _| p.received()[0].from).unwrap();
//! assert_eq!(seen.ip().to_string(), "203.0.113.1");
//! let echoed = sim.with_actor(alice, |p: &mut DatagramProbe, _| p.received().len()).unwrap();
//! assert_eq!(echoed, 1);
//! assert_eq!(sim.bindings(nat).unwrap().len(), 1);
//! assert!(sim.mermaid().starts_with("sequenceDiagram"));
//! ```

pub mod fault;
mod mermaid;
mod nat;
mod net;
pub mod packet;
pub mod probe;
mod record;
pub mod scenario;
mod tcp;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::prelude::rust_2024::*;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

pub use crate::error::SimActorError;
pub use crate::event::AnyActor;
use crate::{Actor, Error, Event, IfaceId, Input, Instant, Output};

pub use nat::{
    AllowRule, BindingInfo, Filtering, GatewayConfig, Mapping, NatConfig, PortAllocation, Proto,
};
pub use net::{LinkConfig, NetworkId, Prefix};
pub use probe::{DatagramProbe, PacketProbe, StreamProbe};
pub use record::{
    DropReason, Labeler, MessageNamer, PacketSummary, TraceEntry, TraceKind, default_label,
};
pub use tcp::TcpConfig;

use nat::{Firewall, Nat};
use net::{Attachment, Network, Route};
use packet::{PacketInfo, Rewrite};
use record::Pcap;
use tcp::{Notify, Tcp};

/// A node of the simulation: a host, a router or an inline middlebox.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub(crate) u32);

/// The id of a host (any [`NodeId`]; the name says what the caller expects).
pub type HostId = NodeId;

impl NodeId {
    /// The index of the node in creation order.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The id of the `i`-th node created (calls with an id that names no node fail with
    /// [`SimError::UnknownNode`]).
    pub fn from_index(i: usize) -> NodeId {
        NodeId(u32::try_from(i).unwrap_or(u32::MAX))
    }
}

impl From<SimError> for Error {
    /// A simulator refusal as a [`deputy::Error`](Error): the three a command meets keep
    /// their kind ([`SimActorError::UnknownNode`], [`SimActorError::NoActor`],
    /// [`SimActorError::WrongActorType`]), any other keeps its message.
    fn from(e: SimError) -> Error {
        Error::Sim(match e {
            SimError::UnknownNode(n) => SimActorError::UnknownNode(n.index()),
            SimError::WrongNodeKind { node, .. } => SimActorError::NoActor(node.index()),
            SimError::WrongActorType(n) => SimActorError::WrongActorType(n.index()),
            other => SimActorError::Refused(other.to_string()),
        })
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node#{}", self.0)
    }
}

/// Why the simulator refused a call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// No such node.
    #[error("unknown {0:?}")]
    UnknownNode(NodeId),
    /// No such network.
    #[error("unknown {0:?}")]
    UnknownNetwork(NetworkId),
    /// A prefix that does not parse or is too long.
    #[error("bad prefix")]
    BadPrefix,
    /// An interface address outside its network's prefix.
    #[error("{addr} is outside the prefix of {net:?}")]
    AddressOutsidePrefix {
        /// The address.
        addr: IpAddr,
        /// The network.
        net: NetworkId,
    },
    /// An address already used on that network.
    #[error("{0} is already in use on that network")]
    AddressInUse(IpAddr),
    /// A node attached twice to one network.
    #[error("a node may join a network only once")]
    AlreadyAttached,
    /// The node is not of the kind the call needs (a host, a NAPT, an actor node …).
    #[error("{node:?} is not a {expected}")]
    WrongNodeKind {
        /// The node.
        node: NodeId,
        /// What the call needs.
        expected: &'static str,
    },
    /// The node's actor is not of the requested type.
    #[error("the actor of {0:?} is of another type")]
    WrongActorType(NodeId),
    /// A static mapping for that protocol and public port exists already.
    #[error("public port {0} is already mapped")]
    PortInUse(u16),
    /// A run processed its step budget without reaching its goal (an actor that keeps
    /// re-arming a timer for "now", or a network that never goes idle).
    #[error("stopped after {0} steps")]
    StepLimit(u64),
    /// Writing a file failed.
    #[error("i/o: {0}")]
    Io(String),
    /// No such fault (never added, or removed).
    #[error("unknown {0:?}")]
    UnknownFault(fault::FaultId),
    /// [`fault::MAX_FAULTS`] faults were added to this simulation already.
    #[error("at most {0} faults per simulation")]
    TooManyFaults(usize),
    /// The call needs an address on the node ([`Sim::listen_inline`] on a bump in the
    /// wire with none).
    #[error("{0:?} has no address")]
    NoAddress(NodeId),
}

/// Which packets a host takes raw, as [`Input::Packet`] on `IfaceId(0)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RawIp {
    /// None: UDP and TCP are handled, anything else is dropped.
    #[default]
    Off,
    /// These IP protocol numbers (e.g. [`packet::PROTO_ESP`]); UDP and TCP stay handled
    /// unless listed.
    Protocols(Vec<u8>),
    /// Every packet that reaches the host, whatever its destination address; the host's
    /// TCP and UDP handling is bypassed.
    All,
}

/// Where an [`ActorFault`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultSource {
    /// The actor's `handle_input` returned the error.
    Input,
    /// The simulator could not carry out one of the actor's outputs.
    Output,
}

/// An error an actor reported, or an output the simulator refused, recorded per node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorFault {
    /// When.
    pub time: Instant,
    /// Input or output.
    pub source: FaultSource,
    /// The error.
    pub error: Error,
}

/// Bounds and defaults of a simulation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Most events waiting in the queue; packets beyond it are dropped with
    /// [`DropReason::QueueFull`].
    pub max_queued_events: usize,
    /// Most trace entries (and chart arrows) kept; later ones are counted, not kept.
    pub max_trace_entries: usize,
    /// Largest pcap kept in memory, in bytes.
    pub max_pcap_bytes: usize,
    /// Most application events kept per node (drain them with [`Sim::events`]).
    pub max_events_per_node: usize,
    /// Most faults kept per node.
    pub max_faults_per_node: usize,
    /// Most outputs taken from an actor in one drain before it is considered runaway.
    pub max_outputs_per_drain: usize,
    /// Step budget of one `run_for` / `run_until` call.
    pub max_steps_per_run: u64,
    /// TTL / hop limit of packets the simulator builds.
    pub ttl: u8,
    /// The hosts' TCP.
    pub tcp: TcpConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            max_queued_events: 1 << 20,
            max_trace_entries: 200_000,
            max_pcap_bytes: 64 << 20,
            max_events_per_node: 10_000,
            max_faults_per_node: 1_000,
            max_outputs_per_drain: 100_000,
            max_steps_per_run: 10_000_000,
            ttl: 64,
            tcp: TcpConfig::default(),
        }
    }
}

#[derive(Debug)]
enum Ev {
    Start(NodeId),
    Deliver {
        node: NodeId,
        iface: usize,
        data: Vec<u8>,
    },
    ActorTimer {
        node: NodeId,
        generation: u64,
    },
    TcpTimer {
        node: NodeId,
        generation: u64,
    },
}

/// A timer with at most one entry in the event queue. The generation tells the live
/// entry from one that was superseded before it fired.
#[derive(Debug, Default)]
struct Timer {
    at: Option<Instant>,
    generation: u64,
    key: Option<(Instant, u64)>,
}

impl Timer {
    /// Whether the event of `generation` is this timer's live entry; if so, disarm.
    fn fire(&mut self, generation: u64) -> bool {
        let live = self.generation == generation;
        if live {
            self.at = None;
            self.key = None;
        }
        live
    }
}

struct Slot {
    actor: Box<dyn AnyActor>,
    timer: Timer,
    events: Vec<(Instant, Event)>,
    events_lost: u64,
    faults: Vec<ActorFault>,
}

struct Host {
    slot: Slot,
    ip: IpAddr,
    raw: RawIp,
    tcp: Tcp,
    tcp_timer: Timer,
}

enum Role {
    Plain,
    Napt(Box<Nat>),
    Gateway(Box<Firewall>),
}

struct Router {
    role: Role,
    routes: Vec<(Prefix, usize)>,
}

/// An inline node's actor and, once it listens, its TCP.
struct Inline {
    slot: Slot,
    /// The TCP on the node's own addresses: none until [`Sim::listen_inline`], so a node
    /// that never listens gets every packet raw, exactly as before inline nodes could.
    tcp: Option<Tcp>,
    tcp_timer: Timer,
}

enum Kind {
    Host(Box<Host>),
    Router(Box<Router>),
    Inline(Box<Inline>),
}

/// Where a node's outputs leave it.
#[derive(Clone, Copy)]
enum Wire<'a> {
    /// A host: one interface on `net`; datagrams from an unspecified address get `ip`.
    Host { net: NetworkId, ip: IpAddr },
    /// An inline node's interfaces: raw packets, and streams through its TCP.
    Inline(&'a [Iface]),
}

/// Feed one notification of a node's TCP to its actor as the stream input it stands for.
fn notify(slot: &mut Slot, now: Instant, n: &Notify) -> Result<(), Error> {
    let input = match n {
        Notify::Accepted { id, local, remote } => Input::StreamAccepted {
            id: *id,
            local: *local,
            remote: *remote,
        },
        Notify::Connected { id, local } => Input::StreamConnected {
            id: *id,
            local: *local,
        },
        Notify::Data { id, data } => Input::StreamData { id: *id, data },
        Notify::Closed { id } => Input::StreamClosed { id: *id },
    };
    slot.actor.handle_input(now, input)
}

/// The TCP's generator of node `id`: its own stream, so that giving one node a TCP draws
/// nothing from any other stream of the simulation.
fn tcp_rng(seed: u64, id: NodeId) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(derive_seed(seed, &std::format!("tcp/{}", id.0)))
}

#[derive(Clone, Copy, Debug)]
struct Iface {
    net: NetworkId,
    addr: Option<IpAddr>,
}

struct Node {
    name: String,
    ifaces: Vec<Iface>,
    kind: Kind,
}

/// Everything but the nodes, so a node and the core can be borrowed together.
struct Core {
    cfg: SimConfig,
    seed: u64,
    now: Instant,
    seq: u64,
    queue: BTreeMap<(Instant, u64), Ev>,
    nets: Vec<Network>,
    link_rng: ChaCha20Rng,
    faults: fault::Faults,
    /// The faults' probability draws: their own stream, so that adding a fault with
    /// probability 1 does not shift the link model's draws.
    fault_rng: ChaCha20Rng,
    last_arrival: BTreeMap<(NetworkId, NodeId), Instant>,
    trace: Vec<TraceEntry>,
    trace_lost: u64,
    pcap: Pcap,
    labeler: Option<Labeler>,
    /// Who names deputy wire messages in labels, most recently registered first; deputy's
    /// own catalogue is registered by default, so `wire` need not know the protocols.
    message_names: Vec<MessageNamer>,
}

/// The simulation. See the [module docs](self).
pub struct Sim {
    core: Core,
    nodes: Vec<Node>,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.core.now)
            .field("nodes", &self.nodes.len())
            .field("networks", &self.core.nets.len())
            .field("queued", &self.core.queue.len())
            .finish()
    }
}

/// Something that names a prefix: a [`Prefix`] or a string like `"10.0.0.0/24"`.
pub trait IntoPrefix {
    /// The prefix, or [`SimError::BadPrefix`].
    fn into_prefix(self) -> Result<Prefix, SimError>;
}

impl IntoPrefix for Prefix {
    fn into_prefix(self) -> Result<Prefix, SimError> {
        Ok(self)
    }
}

impl IntoPrefix for &str {
    fn into_prefix(self) -> Result<Prefix, SimError> {
        self.parse()
    }
}

fn derive_seed(seed: u64, label: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"deputy-sim\0")
        .chain_update(seed.to_le_bytes())
        .chain_update(label.as_bytes())
        .finalize()
        .into()
}

fn chance(rng: &mut ChaCha20Rng, p: f64) -> bool {
    if p.is_nan() || p <= 0.0 {
        return false;
    }
    if p >= 1.0 {
        return true;
    }
    ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
}

impl Core {
    fn schedule(&mut self, at: Instant, ev: Ev) -> bool {
        self.schedule_key(at, ev).is_some()
    }

    /// Point `timer` at `want`, replacing its queue entry. False if the queue is full (the
    /// timer is then left unarmed).
    fn rearm(
        &mut self,
        timer: &mut Timer,
        want: Option<Instant>,
        ev: impl FnOnce(u64) -> Ev,
    ) -> bool {
        if want == timer.at {
            return true;
        }
        timer.generation += 1;
        timer.at = want;
        if let Some(old) = timer.key.take() {
            self.queue.remove(&old);
        }
        if let Some(t) = want {
            timer.key = self.schedule_key(t, ev(timer.generation));
            if timer.key.is_none() {
                timer.at = None;
                return false;
            }
        }
        true
    }

    fn queue_full(&self) -> Error {
        Error::CapacityExceeded {
            what: "simulator event queue",
            bound: self.cfg.max_queued_events,
        }
    }

    /// Queue an event; its key lets a timer be cancelled. `None` if the queue is full.
    fn schedule_key(&mut self, at: Instant, ev: Ev) -> Option<(Instant, u64)> {
        if self.queue.len() >= self.cfg.max_queued_events {
            return None;
        }
        let key = (at.max(self.now), self.seq);
        self.queue.insert(key, ev);
        self.seq += 1;
        Some(key)
    }

    fn label(&self, info: Option<&PacketInfo<'_>>) -> String {
        match info {
            None => "malformed packet".to_string(),
            Some(i) => self
                .labeler
                .as_ref()
                .and_then(|l| l(i))
                .unwrap_or_else(|| record::label_with(i, &self.message_names)),
        }
    }

    fn push_trace(&mut self, entry: TraceEntry) {
        if self.trace.len() >= self.cfg.max_trace_entries {
            self.trace_lost += 1;
        } else {
            self.trace.push(entry);
        }
    }

    fn record_drop(
        &mut self,
        at: NodeId,
        toward: Option<NodeId>,
        net: Option<NetworkId>,
        reason: DropReason,
        data: &[u8],
    ) {
        let info = packet::parse(data).ok();
        let entry = TraceEntry {
            time: self.now,
            kind: TraceKind::Drop {
                at,
                toward,
                net,
                reason,
            },
            packet: PacketSummary::of(data, info.as_ref()),
            label: self.label(info.as_ref()),
        };
        self.push_trace(entry);
    }

    /// Put `data` on `net` from node `from`: next hop, injected faults, link model,
    /// recording, delivery.
    fn transmit(&mut self, from: NodeId, net: NetworkId, data: Vec<u8>) {
        self.transmit_hop(from, net, data, true);
    }

    /// [`Core::transmit`]; `faults` is false for a replayed copy, which no fault sees.
    fn transmit_hop(&mut self, from: NodeId, net: NetworkId, data: Vec<u8>, faults: bool) {
        let hop = match packet::parse(&data) {
            Ok(info) => net::next_hop(&self.nets, net, info.dst, from),
            Err(_) => {
                self.record_drop(from, None, Some(net), DropReason::Malformed, &data);
                return;
            }
        };
        let Some(hop) = hop else {
            self.record_drop(from, None, Some(net), DropReason::NoRoute, &data);
            return;
        };
        let Some(link) = self.nets.get(net.index()).map(|n| n.link) else {
            return;
        };
        let (data, verdict) = if faults && !self.faults.is_empty() {
            let rng = &mut self.fault_rng;
            let at = fault::Hop {
                net,
                from,
                to: hop.node,
            };
            self.faults.apply(&at, data, |p| chance(rng, p))
        } else {
            (data, fault::Verdict::default())
        };
        if verdict.dropped {
            self.record_drop(from, Some(hop.node), Some(net), DropReason::Injected, &data);
            return;
        }
        // The faults rebuild what they change, so this parses; a packet that does not is
        // dropped as any malformed one.
        let Ok(info) = packet::parse(&data) else {
            self.record_drop(from, None, Some(net), DropReason::Malformed, &data);
            return;
        };
        if chance(&mut self.link_rng, link.loss) {
            self.record_drop(from, Some(hop.node), Some(net), DropReason::Loss, &data);
            return;
        }
        let copies = if chance(&mut self.link_rng, link.duplicate) {
            2
        } else {
            1
        } + verdict.copies;
        let summary = PacketSummary::of(&data, Some(&info));
        let mut label = self.label(Some(&info));
        if verdict.changed {
            label.insert_str(0, "(altered) ");
        }
        for _ in 0..copies {
            let jitter = u64::try_from(link.jitter.as_nanos()).unwrap_or(u64::MAX);
            let extra = if jitter > 0 {
                self.link_rng.next_u64() % jitter.saturating_add(1)
            } else {
                0
            };
            let mut arrives = self.now + link.latency + Duration::from_nanos(extra);
            if chance(&mut self.link_rng, link.reorder) {
                arrives += link.reorder_delay;
            } else {
                let last = self.last_arrival.entry((net, hop.node)).or_insert(arrives);
                arrives = arrives.max(*last);
                *last = arrives;
            }
            // After the ordering: a delayed packet leaves the link's order instead of
            // holding back everything behind it.
            arrives += verdict.delay;
            if !self.schedule(
                arrives,
                Ev::Deliver {
                    node: hop.node,
                    iface: hop.iface,
                    data: data.clone(),
                },
            ) {
                self.record_drop(
                    from,
                    Some(hop.node),
                    Some(net),
                    DropReason::QueueFull,
                    &data,
                );
                continue;
            }
            if self.trace.len() < self.cfg.max_trace_entries {
                self.pcap.record(self.now, &data);
            }
            self.push_trace(TraceEntry {
                time: self.now,
                kind: TraceKind::Hop {
                    net,
                    from,
                    to: hop.node,
                    arrives,
                },
                packet: summary,
                label: label.clone(),
            });
        }
        for copy in verdict.replays {
            self.transmit_hop(from, net, copy, false);
        }
    }

    fn fault(&self, slot: &mut Slot, source: FaultSource, error: Error) {
        if slot.faults.len() < self.cfg.max_faults_per_node {
            slot.faults.push(ActorFault {
                time: self.now,
                source,
                error,
            });
        }
    }

    fn event(&self, slot: &mut Slot, e: Event) {
        if slot.events.len() < self.cfg.max_events_per_node {
            slot.events.push((self.now, e));
        } else {
            slot.events_lost += 1;
        }
    }

    /// After draining: arm the actor's timer from `poll_timeout` (called last).
    fn arm_actor_timer(&mut self, id: NodeId, slot: &mut Slot) {
        let want = slot.actor.poll_timeout();
        self.arm(id, slot, None, want);
    }

    /// Point one of a node's timers at `want`: its actor's (`tcp_timer` none) or its
    /// TCP's. A full event queue leaves it unarmed, recorded as the actor's fault.
    fn arm(
        &mut self,
        id: NodeId,
        slot: &mut Slot,
        tcp_timer: Option<&mut Timer>,
        want: Option<Instant>,
    ) {
        let armed = match tcp_timer {
            None => self.rearm(&mut slot.timer, want, |generation| Ev::ActorTimer {
                node: id,
                generation,
            }),
            Some(timer) => self.rearm(timer, want, |generation| Ev::TcpTimer {
                node: id,
                generation,
            }),
        };
        if !armed {
            let e = self.queue_full();
            self.fault(slot, FaultSource::Output, e);
        }
    }

    // ----- actor nodes: hosts and inline nodes -----

    /// Drain a node's actor, and its TCP if it has one, until neither has anything left
    /// (the polling rules of [`crate::io`]), then re-arm both timers. Hosts and inline
    /// nodes share this loop so that an inline node's streams behave exactly as a host's;
    /// `wire` says where their outputs leave.
    fn drive_node(
        &mut self,
        id: NodeId,
        wire: Wire<'_>,
        slot: &mut Slot,
        mut tcp: Option<&mut Tcp>,
        tcp_timer: &mut Timer,
    ) {
        let mut budget = self.cfg.max_outputs_per_drain;
        loop {
            while let Some(out) = slot.actor.poll_output() {
                if let Err(e) = self.node_output(id, wire, slot, tcp.as_deref_mut(), out) {
                    self.fault(slot, FaultSource::Output, e);
                }
                budget = budget.saturating_sub(1);
                if budget == 0 {
                    self.fault(
                        slot,
                        FaultSource::Output,
                        Error::CapacityExceeded {
                            what: "outputs per drain",
                            bound: self.cfg.max_outputs_per_drain,
                        },
                    );
                    break;
                }
            }
            let Some(tcp) = tcp.as_deref_mut() else {
                break;
            };
            for seg in std::mem::take(&mut tcp.out) {
                match packet::build_tcp(seg.src, seg.dst, self.cfg.ttl, &seg.seg, &seg.payload) {
                    Ok(p) => self.send_own(id, wire, seg.dst.ip(), p),
                    Err(_) => self.fault(
                        slot,
                        FaultSource::Output,
                        Error::Sim(SimActorError::SegmentUnbuildable),
                    ),
                }
            }
            let Some(n) = tcp.notify.pop_front() else {
                break;
            };
            if budget == 0 {
                break;
            }
            if let Err(e) = notify(slot, self.now, &n) {
                self.fault(slot, FaultSource::Input, e);
            }
        }
        self.arm_actor_timer(id, slot);
        if let Some(tcp) = tcp {
            self.arm(id, slot, Some(tcp_timer), tcp.next_deadline());
        }
    }

    /// Carry out one output of a node's actor. Stream outputs need the node's TCP (every
    /// host has one; an inline node once it listens): without it they are refused as
    /// before inline nodes could listen.
    fn node_output(
        &mut self,
        id: NodeId,
        wire: Wire<'_>,
        slot: &mut Slot,
        tcp: Option<&mut Tcp>,
        out: Output<Event>,
    ) -> Result<(), Error> {
        let now = self.now;
        let inline_output = Error::Sim(SimActorError::InlineOutput);
        match (out, wire) {
            (Output::Transmit(t), Wire::Host { net, ip }) => {
                let from = if t.from.ip().is_unspecified() {
                    SocketAddr::new(ip, t.from.port())
                } else {
                    t.from
                };
                match packet::build_udp(from, t.to, self.cfg.ttl, &t.data) {
                    Ok(p) => {
                        self.transmit(id, net, p);
                        Ok(())
                    }
                    Err(_) => Err(Error::Sim(SimActorError::DatagramUnbuildable)),
                }
            }
            (Output::Transmit(_), Wire::Inline(_)) => Err(inline_output),
            (
                Output::Connect {
                    id: sid,
                    local,
                    remote,
                },
                wire,
            ) => {
                let tcp = tcp.ok_or(inline_output)?;
                let local = match wire {
                    Wire::Host { .. } => local,
                    Wire::Inline(ifaces) => self.inline_local(id, ifaces, local, remote),
                };
                tcp.connect(now, sid, local, remote)
            }
            (Output::StreamSend { id: sid, data }, _) => {
                tcp.ok_or(inline_output)?.send(now, sid, &data)
            }
            (Output::StreamClose { id: sid }, _) => tcp.ok_or(inline_output)?.close(now, sid),
            (Output::Packet { iface, data }, Wire::Host { net, .. }) => {
                if iface != IfaceId(0) {
                    Err(Error::Sim(SimActorError::HostInterface(iface.0)))
                } else {
                    self.transmit(id, net, data);
                    Ok(())
                }
            }
            (Output::Packet { iface, data }, Wire::Inline(ifaces)) => {
                match ifaces.get(iface.0 as usize) {
                    Some(i) => {
                        self.transmit(id, i.net, data);
                        Ok(())
                    }
                    None => Err(Error::Sim(SimActorError::NoSuchInterface(iface.0))),
                }
            }
            (Output::Event(e), _) => {
                self.event(slot, e);
                Ok(())
            }
            (Output::Lost { count }, _) => {
                slot.events_lost += count;
                Ok(())
            }
        }
    }

    /// Put a packet the node's TCP built on the network toward `dst`: a host's one
    /// network, or the inline node's interface that reaches `dst` best.
    fn send_own(&mut self, id: NodeId, wire: Wire<'_>, dst: IpAddr, p: Vec<u8>) {
        match wire {
            Wire::Host { net, .. } => self.transmit(id, net, p),
            Wire::Inline(ifaces) => match self.egress(id, ifaces, dst) {
                Some(net) => self.transmit(id, net, p),
                None => self.record_drop(id, None, None, DropReason::NoRoute, &p),
            },
        }
    }

    // ----- hosts -----

    fn drive_host(&mut self, id: NodeId, net: NetworkId, host: &mut Host) {
        let Host {
            slot,
            ip,
            tcp,
            tcp_timer,
            ..
        } = host;
        let wire = Wire::Host { net, ip: *ip };
        self.drive_node(id, wire, slot, Some(tcp), tcp_timer);
    }

    fn deliver_host(&mut self, id: NodeId, net: NetworkId, host: &mut Host, data: Vec<u8>) {
        let info = match packet::parse(&data) {
            Ok(i) => i,
            Err(_) => {
                self.record_drop(id, None, Some(net), DropReason::Malformed, &data);
                return;
            }
        };
        let raw = match &host.raw {
            RawIp::Off => false,
            RawIp::All => true,
            RawIp::Protocols(list) => list.contains(&info.protocol),
        };
        if host.raw != RawIp::All && info.dst != host.ip {
            self.record_drop(id, None, Some(net), DropReason::NotAddressed, &data);
            return;
        }
        let now = self.now;
        if raw {
            if let Err(e) = host.slot.actor.handle_input(
                now,
                Input::Packet {
                    iface: IfaceId(0),
                    data: &data,
                },
            ) {
                self.fault(&mut host.slot, FaultSource::Input, e);
            }
        } else if info.fragment {
            self.record_drop(id, None, Some(net), DropReason::ProtocolUnsupported, &data);
            return;
        } else if info.protocol == packet::PROTO_UDP {
            let (Some(from), Some(to)) = (info.src_socket(), info.dst_socket()) else {
                return;
            };
            if let Err(e) = host.slot.actor.handle_input(
                now,
                Input::Datagram {
                    from,
                    to,
                    data: info.payload,
                },
            ) {
                self.fault(&mut host.slot, FaultSource::Input, e);
            }
        } else if info.protocol == packet::PROTO_TCP {
            if !host.tcp.on_segment(now, &info) {
                self.record_drop(id, None, Some(net), DropReason::StreamLimit, &data);
            }
        } else {
            self.record_drop(id, None, Some(net), DropReason::ProtocolUnsupported, &data);
            return;
        }
        self.drive_host(id, net, host);
    }

    // ----- inline nodes -----

    fn drive_inline(&mut self, id: NodeId, ifaces: &[Iface], node: &mut Inline) {
        let Inline {
            slot,
            tcp,
            tcp_timer,
        } = node;
        self.drive_node(id, Wire::Inline(ifaces), slot, tcp.as_mut(), tcp_timer);
    }

    /// A packet reached an inline node on interface `iface`. TCP to one of the node's own
    /// addresses goes to its TCP if that claims it (a listening port or an open stream);
    /// everything else — bridged traffic, other protocols, other ports — reaches the
    /// actor raw, as it does for a node that never listens.
    fn deliver_inline(
        &mut self,
        id: NodeId,
        ifaces: &[Iface],
        node: &mut Inline,
        iface: usize,
        data: Vec<u8>,
    ) {
        let now = self.now;
        let mut raw = true;
        if let Some(tcp) = node.tcp.as_mut()
            && let Ok(info) = packet::parse(&data)
            && info.protocol == packet::PROTO_TCP
            && !info.fragment
            && ifaces.iter().any(|f| f.addr == Some(info.dst))
            && tcp.claims(&info)
        {
            raw = false;
            if !tcp.on_segment(now, &info) {
                let net = ifaces.get(iface).map(|f| f.net);
                self.record_drop(id, None, net, DropReason::StreamLimit, &data);
            }
        }
        if raw
            && let Err(e) = node.slot.actor.handle_input(
                now,
                Input::Packet {
                    iface: IfaceId(iface as u32),
                    data: &data,
                },
            )
        {
            self.fault(&mut node.slot, FaultSource::Input, e);
        }
        self.drive_inline(id, ifaces, node);
    }

    /// The network an inline node's own packet to `dst` leaves on: the interface whose
    /// network reaches `dst` best (longest prefix, then an address over a route over a
    /// bridge), the first such interface on a tie. `None` if none reaches it.
    fn egress(&self, id: NodeId, ifaces: &[Iface], dst: IpAddr) -> Option<NetworkId> {
        let mut best: Option<((u8, u8), NetworkId)> = None;
        for f in ifaces {
            if let Some(q) = net::reach_quality(&self.nets, f.net, dst, id)
                && best.is_none_or(|(b, _)| q > b)
            {
                best = Some((q, f.net));
            }
        }
        best.map(|(_, net)| net)
    }

    /// The local address of an inline node's connect: the one the actor named, else the
    /// address of the interface the connection leaves on, else the node's first address of
    /// the remote's family. With none of that family the address stays unspecified and
    /// the TCP refuses the connect ([`SimActorError::UnusableAddress`]).
    fn inline_local(
        &self,
        id: NodeId,
        ifaces: &[Iface],
        local: SocketAddr,
        remote: SocketAddr,
    ) -> SocketAddr {
        if !local.ip().is_unspecified() {
            return local;
        }
        let fits = |a: &IpAddr| a.is_ipv4() == remote.is_ipv4();
        let out = self.egress(id, ifaces, remote.ip());
        ifaces
            .iter()
            .find(|f| Some(f.net) == out)
            .and_then(|f| f.addr)
            .filter(fits)
            .or_else(|| ifaces.iter().filter_map(|f| f.addr).find(fits))
            .map_or(local, |ip| SocketAddr::new(ip, local.port()))
    }

    // ----- routers -----

    fn route(&self, ifaces: &[Iface], routes: &[(Prefix, usize)], dst: IpAddr) -> Option<usize> {
        let mut best: Option<(u8, usize)> = None;
        let mut consider = |len: u8, iface: usize| {
            if best.is_none_or(|(l, _)| len > l) {
                best = Some((len, iface));
            }
        };
        for (i, f) in ifaces.iter().enumerate() {
            if let Some(n) = self.nets.get(f.net.index())
                && n.prefix.contains(dst)
            {
                consider(n.prefix.len(), i);
            }
        }
        for (p, i) in routes {
            if p.contains(dst) {
                consider(p.len(), *i);
            }
        }
        best.map(|(_, i)| i)
    }

    /// The egress interface of a packet a plain router or a gateway forwards: none (and
    /// the drop recorded) for one addressed to the router itself or without a route.
    fn forward(
        &mut self,
        id: NodeId,
        net: Option<NetworkId>,
        ifaces: &[Iface],
        routes: &[(Prefix, usize)],
        own: bool,
        data: &[u8],
    ) -> Option<usize> {
        let reason = if own {
            DropReason::AddressedToRouter
        } else {
            let dst = packet::parse(data).ok()?.dst;
            match self.route(ifaces, routes, dst) {
                Some(e) => return Some(e),
                None => DropReason::NoRoute,
            }
        };
        self.record_drop(id, None, net, reason, data);
        None
    }

    fn deliver_router(
        &mut self,
        id: NodeId,
        ifaces: &[Iface],
        router: &mut Router,
        iface: usize,
        mut data: Vec<u8>,
    ) {
        let net = ifaces.get(iface).map(|f| f.net);
        let info = match packet::parse(&data) {
            Ok(i) => i,
            Err(_) => {
                self.record_drop(id, None, net, DropReason::Malformed, &data);
                return;
            }
        };
        let (src, dst, protocol, flags, fragment) = (
            info.src,
            info.dst,
            info.protocol,
            info.tcp.map(|t| t.flags),
            info.fragment,
        );
        let (src_sock, dst_sock) = (info.src_socket(), info.dst_socket());
        let ttl = info.ttl;
        let own = ifaces.iter().any(|f| f.addr == Some(dst));
        let now = self.now;
        let drop = |core: &mut Core, reason: DropReason, data: &[u8]| {
            core.record_drop(id, None, net, reason, data);
        };
        if ttl <= 1 {
            drop(self, DropReason::TtlExceeded, &data);
            return;
        }
        let mut rw = Rewrite {
            dec_ttl: true,
            ..Rewrite::default()
        };
        let egress: usize;
        match &mut router.role {
            Role::Plain => {
                let Some(e) = self.forward(id, net, ifaces, &router.routes, own, &data) else {
                    return;
                };
                egress = e;
            }
            Role::Napt(nat) => {
                let proto = nat::Proto::from_number(protocol).filter(|_| !fragment);
                if iface == 0 && dst == nat.public {
                    // Hairpin: translate the source as for outbound, then the destination
                    // as for inbound from that public source.
                    if !nat.cfg.hairpinning {
                        drop(self, DropReason::HairpinDisabled, &data);
                        return;
                    }
                    let (Some(proto), Some(s), Some(d)) = (proto, src_sock, dst_sock) else {
                        drop(self, DropReason::NatUnsupported, &data);
                        return;
                    };
                    let ext = match nat.outbound(proto, s, d, flags, now) {
                        Ok(p) => SocketAddr::new(nat.public, p),
                        Err(r) => return drop(self, r, &data),
                    };
                    let inside = match nat.inbound(proto, ext, d.port(), flags, now) {
                        Ok(a) => a,
                        Err(r) => return drop(self, r, &data),
                    };
                    rw.src = Some(ext);
                    rw.dst = Some(inside);
                    egress = 0;
                } else if iface == 1 && dst == nat.public {
                    let (Some(proto), Some(s), Some(d)) = (proto, src_sock, dst_sock) else {
                        drop(self, DropReason::NatUnsupported, &data);
                        return;
                    };
                    match nat.inbound(proto, s, d.port(), flags, now) {
                        Ok(inside) => rw.dst = Some(inside),
                        Err(r) => return drop(self, r, &data),
                    }
                    egress = 0;
                } else if own {
                    drop(self, DropReason::AddressedToRouter, &data);
                    return;
                } else if iface == 1 {
                    drop(self, DropReason::Firewall, &data);
                    return;
                } else {
                    let Some(e) = self.route(ifaces, &router.routes, dst) else {
                        drop(self, DropReason::NoRoute, &data);
                        return;
                    };
                    if e == 1 {
                        let (Some(proto), Some(s), Some(d)) = (proto, src_sock, dst_sock) else {
                            drop(self, DropReason::NatUnsupported, &data);
                            return;
                        };
                        match nat.outbound(proto, s, d, flags, now) {
                            Ok(p) => rw.src = Some(SocketAddr::new(nat.public, p)),
                            Err(r) => return drop(self, r, &data),
                        }
                    }
                    egress = e;
                }
            }
            Role::Gateway(fw) => {
                let Some(e) = self.forward(id, net, ifaces, &router.routes, own, &data) else {
                    return;
                };
                let s = src_sock.unwrap_or(SocketAddr::new(src, 0));
                let d = dst_sock.unwrap_or(SocketAddr::new(dst, 0));
                let verdict = if iface == 0 && e == 1 {
                    fw.outbound(protocol, s, d, now)
                } else if iface == 1 && e == 0 {
                    fw.inbound(protocol, d, s, dst_sock.is_some(), now)
                } else {
                    Ok(())
                };
                if let Err(r) = verdict {
                    drop(self, r, &data);
                    return;
                }
                egress = e;
            }
        }
        if packet::rewrite(&mut data, rw).is_err() {
            drop(self, DropReason::Malformed, &data);
            return;
        }
        if let Some(f) = ifaces.get(egress) {
            self.transmit(id, f.net, data);
        }
    }
}

impl Sim {
    /// A simulation with default bounds, seeded with `seed`.
    pub fn new(seed: u64) -> Sim {
        Sim::with_config(seed, SimConfig::default())
    }

    /// A simulation with these bounds, seeded with `seed`.
    pub fn with_config(seed: u64, cfg: SimConfig) -> Sim {
        let pcap = Pcap::new(cfg.max_pcap_bytes);
        Sim {
            core: Core {
                link_rng: ChaCha20Rng::from_seed(derive_seed(seed, "links")),
                faults: fault::Faults::default(),
                fault_rng: ChaCha20Rng::from_seed(derive_seed(seed, "faults")),
                cfg,
                seed,
                now: Instant::ZERO,
                seq: 0,
                queue: BTreeMap::new(),
                nets: Vec::new(),
                last_arrival: BTreeMap::new(),
                trace: Vec::new(),
                trace_lost: 0,
                pcap,
                labeler: None,
                message_names: std::vec![crate::event::message_name as MessageNamer],
            },
            nodes: Vec::new(),
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// A generator derived deterministically from the seed and `label`: the same label
    /// gives the same stream every time, different labels independent streams. Box it to
    /// give an actor its [`crate::Rng`].
    pub fn rng(&self, label: &str) -> ChaCha20Rng {
        ChaCha20Rng::from_seed(derive_seed(self.core.seed, &std::format!("user/{label}")))
    }

    // ----- topology -----

    /// Add a network with this prefix (`"192.168.1.0/24"`, `"2001:db8::/64"` or a
    /// [`Prefix`]) and link model.
    pub fn add_network(
        &mut self,
        name: &str,
        prefix: impl IntoPrefix,
        link: LinkConfig,
    ) -> Result<NetworkId, SimError> {
        let prefix = prefix.into_prefix()?;
        let id = NetworkId(self.core.nets.len() as u32);
        self.core.nets.push(Network {
            name: name.to_string(),
            prefix,
            link,
            attachments: Vec::new(),
            routes: Vec::new(),
        });
        Ok(id)
    }

    /// Change a network's link model from now on.
    pub fn set_link(&mut self, net: NetworkId, link: LinkConfig) -> Result<(), SimError> {
        self.net_mut(net)?.link = link;
        Ok(())
    }

    /// A network's name.
    pub fn network_name(&self, net: NetworkId) -> Result<&str, SimError> {
        Ok(&self.net(net)?.name)
    }

    fn net(&self, net: NetworkId) -> Result<&Network, SimError> {
        self.core
            .nets
            .get(net.index())
            .ok_or(SimError::UnknownNetwork(net))
    }

    fn net_mut(&mut self, net: NetworkId) -> Result<&mut Network, SimError> {
        self.core
            .nets
            .get_mut(net.index())
            .ok_or(SimError::UnknownNetwork(net))
    }

    fn check_iface(&self, ifaces: &[(NetworkId, Option<IpAddr>)]) -> Result<(), SimError> {
        for (i, (net, addr)) in ifaces.iter().enumerate() {
            let n = self.net(*net)?;
            if ifaces[..i].iter().any(|(other, _)| other == net) {
                return Err(SimError::AlreadyAttached);
            }
            if let Some(a) = addr {
                if !n.prefix.contains(*a) {
                    return Err(SimError::AddressOutsidePrefix {
                        addr: *a,
                        net: *net,
                    });
                }
                if n.attachments.iter().any(|x| x.addr == Some(*a)) {
                    return Err(SimError::AddressInUse(*a));
                }
            }
        }
        Ok(())
    }

    fn add_node(
        &mut self,
        name: &str,
        ifaces: &[(NetworkId, Option<IpAddr>)],
        kind: Kind,
        bridging: bool,
    ) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        for (i, (net, addr)) in ifaces.iter().enumerate() {
            let bridges_to = if bridging {
                ifaces
                    .iter()
                    .filter(|(n, _)| n != net)
                    .map(|(n, _)| *n)
                    .collect()
            } else {
                Vec::new()
            };
            if let Some(n) = self.core.nets.get_mut(net.index()) {
                n.attachments.push(Attachment {
                    node: id,
                    iface: i,
                    addr: *addr,
                    bridges_to,
                });
            }
        }
        self.nodes.push(Node {
            name: name.to_string(),
            ifaces: ifaces
                .iter()
                .map(|(net, addr)| Iface {
                    net: *net,
                    addr: *addr,
                })
                .collect(),
            kind,
        });
        id
    }

    fn slot(actor: Box<dyn AnyActor>) -> Slot {
        Slot {
            actor,
            timer: Timer::default(),
            events: Vec::new(),
            events_lost: 0,
            faults: Vec::new(),
        }
    }

    /// Add a host with address `ip` on `net`, run by `actor`. The actor is first polled
    /// (outputs, then timeout) when the simulation next runs.
    pub fn add_host(
        &mut self,
        name: &str,
        net: NetworkId,
        ip: IpAddr,
        actor: impl Actor<Event: Into<Event>> + 'static,
    ) -> Result<HostId, SimError> {
        self.check_iface(&[(net, Some(ip))])?;
        let id = NodeId(self.nodes.len() as u32);
        let host = Host {
            slot: Self::slot(Box::new(actor)),
            ip,
            raw: RawIp::Off,
            tcp: Tcp::new(self.core.cfg.tcp.clone(), ip, tcp_rng(self.core.seed, id)),
            tcp_timer: Timer::default(),
        };
        let id = self.add_node(name, &[(net, Some(ip))], Kind::Host(Box::new(host)), false);
        self.core.schedule(self.core.now, Ev::Start(id));
        Ok(id)
    }

    /// Add a NAPT router: `inside_ip` on the inside network, `public_ip` on the outside
    /// one. Installs a default route on the inside network toward the router (unless the
    /// network has one for that family) and the router's default route toward the outside.
    pub fn add_napt(
        &mut self,
        name: &str,
        inside: NetworkId,
        inside_ip: IpAddr,
        outside: NetworkId,
        public_ip: IpAddr,
        cfg: NatConfig,
    ) -> Result<NodeId, SimError> {
        let ifaces = [(inside, Some(inside_ip)), (outside, Some(public_ip))];
        self.check_iface(&ifaces)?;
        let id = NodeId(self.nodes.len() as u32);
        let rng =
            ChaCha20Rng::from_seed(derive_seed(self.core.seed, &std::format!("nat/{}", id.0)));
        let router = Router {
            role: Role::Napt(Box::new(Nat::new(cfg, public_ip, rng))),
            routes: vec_default_route(public_ip),
        };
        let id = self.add_node(name, &ifaces, Kind::Router(Box::new(router)), false);
        self.default_route_if_missing(inside, inside_ip, id);
        Ok(id)
    }

    /// Add a gateway that routes between an inside and an outside network without address
    /// translation, filtering inbound traffic as `cfg` says (by default the inside is a
    /// closed network). Installs a default route on the inside network toward it (unless
    /// there is one), a route for the inside prefix on the outside network, and its own
    /// default route toward the outside.
    pub fn add_gateway(
        &mut self,
        name: &str,
        inside: NetworkId,
        inside_ip: IpAddr,
        outside: NetworkId,
        outside_ip: IpAddr,
        cfg: GatewayConfig,
    ) -> Result<NodeId, SimError> {
        let ifaces = [(inside, Some(inside_ip)), (outside, Some(outside_ip))];
        self.check_iface(&ifaces)?;
        let router = Router {
            role: Role::Gateway(Box::new(Firewall::new(cfg))),
            routes: vec_default_route(outside_ip),
        };
        let id = self.add_node(name, &ifaces, Kind::Router(Box::new(router)), false);
        self.default_route_if_missing(inside, inside_ip, id);
        let inside_prefix = self.net(inside)?.prefix;
        self.net_mut(outside)?.routes.push(Route {
            prefix: inside_prefix,
            via: id,
        });
        Ok(id)
    }

    /// Add a plain router with an address on each of these networks. It has no routes
    /// beyond its networks' prefixes until [`Sim::add_router_route`].
    pub fn add_router(
        &mut self,
        name: &str,
        ifaces: &[(NetworkId, IpAddr)],
    ) -> Result<NodeId, SimError> {
        let ifaces: Vec<_> = ifaces.iter().map(|(n, a)| (*n, Some(*a))).collect();
        self.check_iface(&ifaces)?;
        let router = Router {
            role: Role::Plain,
            routes: Vec::new(),
        };
        Ok(self.add_node(name, &ifaces, Kind::Router(Box::new(router)), false))
    }

    /// Add an inline node (a bump in the wire with no address) joining `net_a`
    /// (interface 0) and `net_b` (interface 1). Every packet that reaches it arrives as
    /// [`Input::Packet`]; it forwards with [`Output::Packet`].
    pub fn add_inline(
        &mut self,
        name: &str,
        net_a: NetworkId,
        net_b: NetworkId,
        actor: impl Actor<Event: Into<Event>> + 'static,
    ) -> Result<NodeId, SimError> {
        self.add_inline_with(name, &[(net_a, None), (net_b, None)], actor)
    }

    /// Add an inline node with any number of interfaces (interface `i` is `ifaces[i]`),
    /// each with or without an address. Packets to its addresses, packets routed to it
    /// ([`Sim::add_route`]) and packets for destinations behind it (bridging) reach it.
    pub fn add_inline_with(
        &mut self,
        name: &str,
        ifaces: &[(NetworkId, Option<IpAddr>)],
        actor: impl Actor<Event: Into<Event>> + 'static,
    ) -> Result<NodeId, SimError> {
        self.check_iface(ifaces)?;
        let id = self.add_node(
            name,
            ifaces,
            Kind::Inline(Box::new(Inline {
                slot: Self::slot(Box::new(actor)),
                tcp: None,
                tcp_timer: Timer::default(),
            })),
            true,
        );
        self.core.schedule(self.core.now, Ev::Start(id));
        Ok(id)
    }

    fn default_route_if_missing(&mut self, net: NetworkId, family_of: IpAddr, via: NodeId) {
        if let Some(n) = self.core.nets.get_mut(net.index()) {
            let default = Prefix::default_for(family_of);
            if !n.routes.iter().any(|r| r.prefix == default) {
                n.routes.push(Route {
                    prefix: default,
                    via,
                });
            }
        }
    }

    /// On `net`, send packets for `prefix` to node `via` (which must be attached to it).
    pub fn add_route(
        &mut self,
        net: NetworkId,
        prefix: impl IntoPrefix,
        via: NodeId,
    ) -> Result<(), SimError> {
        let prefix = prefix.into_prefix()?;
        self.node(via)?;
        let n = self.net_mut(net)?;
        if !n.attachments.iter().any(|a| a.node == via) {
            return Err(SimError::WrongNodeKind {
                node: via,
                expected: "node attached to that network",
            });
        }
        n.routes.push(Route { prefix, via });
        Ok(())
    }

    /// On router `router`, send packets for `prefix` out of its interface on `net`.
    pub fn add_router_route(
        &mut self,
        router: NodeId,
        prefix: impl IntoPrefix,
        net: NetworkId,
    ) -> Result<(), SimError> {
        let prefix = prefix.into_prefix()?;
        let node = self.node_mut(router)?;
        let iface = node
            .ifaces
            .iter()
            .position(|f| f.net == net)
            .ok_or(SimError::UnknownNetwork(net))?;
        match &mut node.kind {
            Kind::Router(r) => {
                r.routes.push((prefix, iface));
                Ok(())
            }
            _ => Err(SimError::WrongNodeKind {
                node: router,
                expected: "router",
            }),
        }
    }

    /// Forward `public_port` of a NAPT (UDP or TCP) to `inside`, from anyone. Outbound
    /// traffic from `inside` uses that public port too.
    pub fn add_static_mapping(
        &mut self,
        router: NodeId,
        proto: Proto,
        public_port: u16,
        inside: SocketAddr,
    ) -> Result<(), SimError> {
        let nat = self.nat_mut(router)?;
        if nat.add_static(proto, public_port, inside) {
            Ok(())
        } else {
            Err(SimError::PortInUse(public_port))
        }
    }

    /// The live bindings of a NAPT.
    pub fn bindings(&self, router: NodeId) -> Result<Vec<BindingInfo>, SimError> {
        Ok(self.nat(router)?.bindings(self.core.now))
    }

    /// Forget a NAPT's dynamic bindings, as a router reboot does (static mappings stay).
    pub fn flush_bindings(&mut self, router: NodeId) -> Result<(), SimError> {
        self.nat_mut(router)?.flush();
        Ok(())
    }

    /// Give a NAPT a new public address on its outside network (an ISP renumbering):
    /// every dynamic binding is lost, static mappings move to the new address.
    pub fn set_public_ip(&mut self, router: NodeId, public_ip: IpAddr) -> Result<(), SimError> {
        self.nat_mut(router)?;
        let outside = self
            .node(router)?
            .ifaces
            .get(1)
            .map(|f| f.net)
            .ok_or(not_a_napt(router))?;
        let n = self.net(outside)?;
        if !n.prefix.contains(public_ip) {
            return Err(SimError::AddressOutsidePrefix {
                addr: public_ip,
                net: outside,
            });
        }
        if n.attachments
            .iter()
            .any(|a| a.addr == Some(public_ip) && a.node != router)
        {
            return Err(SimError::AddressInUse(public_ip));
        }
        if let Some(a) = self
            .net_mut(outside)?
            .attachments
            .iter_mut()
            .find(|a| a.node == router)
        {
            a.addr = Some(public_ip);
        }
        let node = self.node_mut(router)?;
        if let Some(f) = node.ifaces.get_mut(1) {
            f.addr = Some(public_ip);
        }
        let nat = self.nat_mut(router)?;
        nat.public = public_ip;
        nat.flush();
        Ok(())
    }

    fn nat(&self, router: NodeId) -> Result<&Nat, SimError> {
        if let Kind::Router(r) = &self.node(router)?.kind
            && let Role::Napt(nat) = &r.role
        {
            return Ok(nat);
        }
        Err(not_a_napt(router))
    }

    fn nat_mut(&mut self, router: NodeId) -> Result<&mut Nat, SimError> {
        if let Kind::Router(r) = &mut self.node_mut(router)?.kind
            && let Role::Napt(nat) = &mut r.role
        {
            return Ok(nat);
        }
        Err(not_a_napt(router))
    }

    fn node(&self, id: NodeId) -> Result<&Node, SimError> {
        self.nodes.get(id.index()).ok_or(SimError::UnknownNode(id))
    }

    fn node_mut(&mut self, id: NodeId) -> Result<&mut Node, SimError> {
        self.nodes
            .get_mut(id.index())
            .ok_or(SimError::UnknownNode(id))
    }

    fn host_mut(&mut self, id: NodeId) -> Result<&mut Host, SimError> {
        match &mut self.node_mut(id)?.kind {
            Kind::Host(h) => Ok(h),
            _ => Err(SimError::WrongNodeKind {
                node: id,
                expected: "host",
            }),
        }
    }

    // ----- fault injection -----

    /// Install a fault: from now on it sees every packet put on a network and acts on the
    /// ones it chooses (see [`fault`]). Faults act in the order they were added. Fails
    /// with [`SimError::TooManyFaults`] past [`fault::MAX_FAULTS`].
    ///
    /// ```
    /// use deputy::sim::fault::{Fault, FaultAction};
    /// use deputy::sim::{LinkConfig, Sim, packet::PROTO_TCP};
    ///
    /// let mut sim = Sim::new(1);
    /// let wan = sim.add_network("wan", "0.0.0.0/0", LinkConfig::default()).unwrap();
    /// // Truncate the fourth data segment on the wan to 10 bytes.
    /// let cut = Fault::new(FaultAction::Truncate(10)).on_network(wan).protocol(PROTO_TCP);
    /// let id = sim.add_fault(cut.with_payload().nth(3)).unwrap();
    /// assert_eq!(sim.fault_stats(id).unwrap().matched, 0);
    /// ```
    pub fn add_fault(&mut self, fault: fault::Fault) -> Result<fault::FaultId, SimError> {
        self.core.faults.add(fault)
    }

    /// Remove a fault; returns what it did.
    pub fn remove_fault(&mut self, id: fault::FaultId) -> Result<fault::FaultStats, SimError> {
        self.core.faults.remove(id)
    }

    /// How many packets a fault matched and acted on so far.
    pub fn fault_stats(&self, id: fault::FaultId) -> Result<fault::FaultStats, SimError> {
        self.core.faults.stats(id)
    }

    /// Accept TCP connections on `port` of a host.
    pub fn listen(&mut self, host: HostId, port: u16) -> Result<(), SimError> {
        self.host_mut(host)?.tcp.listen(port);
        Ok(())
    }

    /// Stop accepting TCP connections on `port` (open streams stay).
    pub fn unlisten(&mut self, host: HostId, port: u16) -> Result<(), SimError> {
        self.host_mut(host)?.tcp.unlisten(port);
        Ok(())
    }

    /// Which packets the host takes raw (see [`RawIp`]).
    pub fn set_raw_ip(&mut self, host: HostId, raw: RawIp) -> Result<(), SimError> {
        self.host_mut(host)?.raw = raw;
        Ok(())
    }

    /// Accept TCP connections on `port` of an inline node's own addresses (every address
    /// it has; it needs at least one, else [`SimError::NoAddress`]). The first call gives
    /// the node a TCP like a host's: segments to its addresses on a listening port, or of
    /// a stream it has open, reach its actor as stream inputs ([`Input::StreamAccepted`],
    /// [`Input::StreamData`], …), and it may emit [`Output::StreamSend`],
    /// [`Output::StreamClose`] and [`Output::Connect`]. Everything else still arrives as
    /// [`Input::Packet`]: bridged traffic, other protocols, and TCP to a port it does not
    /// listen on (which the actor may answer itself; no RST is sent for it, unlike a
    /// host's).
    ///
    /// A connect leaves by the interface whose network reaches the remote best, from that
    /// interface's address, or the node's first address of the remote's family if that
    /// interface has none (a management address behind a bump in the wire).
    ///
    /// ```
    /// use deputy::sim::{LinkConfig, PacketProbe, Sim, SimError, StreamProbe};
    ///
    /// let mut sim = Sim::new(1);
    /// let wan = sim.add_network("wan", "10.0.0.0/24", LinkConfig::default()).unwrap();
    /// let lan = sim.add_network("lan", "10.0.0.0/24", LinkConfig::default()).unwrap();
    /// let proxy = sim
    ///     .add_inline_with("proxy", &[(wan, Some("10.0.0.254".parse().unwrap())), (lan, None)],
    ///                      PacketProbe::bridge().with_streams(StreamProbe::new()))
    ///     .unwrap();
    /// sim.listen_inline(proxy, 22).unwrap();
    /// let bump = sim.add_inline("bump", wan, lan, PacketProbe::bridge()).unwrap();
    /// assert_eq!(sim.listen_inline(bump, 22), Err(SimError::NoAddress(bump)));
    /// ```
    pub fn listen_inline(&mut self, node: NodeId, port: u16) -> Result<(), SimError> {
        let cfg = self.core.cfg.tcp.clone();
        let seed = self.core.seed;
        let n = self.node_mut(node)?;
        let first = n.ifaces.iter().find_map(|f| f.addr);
        let Kind::Inline(inline) = &mut n.kind else {
            return Err(not_inline(node));
        };
        let ip = first.ok_or(SimError::NoAddress(node))?;
        inline
            .tcp
            .get_or_insert_with(|| Tcp::new(cfg, ip, tcp_rng(seed, node)))
            .listen(port);
        Ok(())
    }

    /// Stop accepting TCP connections on `port` of an inline node (open streams stay, and
    /// so does its TCP: later SYNs to the port arrive as [`Input::Packet`] again).
    pub fn unlisten_inline(&mut self, node: NodeId, port: u16) -> Result<(), SimError> {
        match &mut self.node_mut(node)?.kind {
            Kind::Inline(n) => {
                if let Some(tcp) = &mut n.tcp {
                    tcp.unlisten(port);
                }
                Ok(())
            }
            _ => Err(not_inline(node)),
        }
    }

    /// Number of open TCP streams of a host or an inline node (0 for one that never
    /// listened).
    pub fn open_streams(&self, node: NodeId) -> Result<usize, SimError> {
        match &self.node(node)?.kind {
            Kind::Host(h) => Ok(h.tcp.open_streams()),
            Kind::Inline(n) => Ok(n.tcp.as_ref().map_or(0, Tcp::open_streams)),
            Kind::Router(_) => Err(SimError::WrongNodeKind {
                node,
                expected: "host or inline node",
            }),
        }
    }

    /// A node's name.
    pub fn node_name(&self, id: NodeId) -> Result<&str, SimError> {
        Ok(&self.node(id)?.name)
    }

    /// A node's address on its first interface that has one.
    pub fn address(&self, id: NodeId) -> Result<Option<IpAddr>, SimError> {
        Ok(self.node(id)?.ifaces.iter().find_map(|f| f.addr))
    }

    /// All nodes, in creation order.
    pub fn nodes(&self) -> Vec<NodeId> {
        (0..self.nodes.len() as u32).map(NodeId).collect()
    }

    // ----- actors -----

    /// A node's TCP and its timer: every host's, an inline node's once it listens.
    fn tcp_mut(kind: &mut Kind) -> Option<(&mut Tcp, &mut Timer)> {
        match kind {
            Kind::Host(h) => Some((&mut h.tcp, &mut h.tcp_timer)),
            Kind::Inline(n) => n.tcp.as_mut().map(|t| (t, &mut n.tcp_timer)),
            Kind::Router(_) => None,
        }
    }

    fn slot_mut(kind: &mut Kind) -> Option<&mut Slot> {
        match kind {
            Kind::Host(h) => Some(&mut h.slot),
            Kind::Inline(n) => Some(&mut n.slot),
            Kind::Router(_) => None,
        }
    }

    /// Run `f` on a node's actor as its concrete type `T` (for reading its state, or a
    /// command that cannot fail), then carry out its outputs and re-arm its timer, as the
    /// polling rules require. A command that returns `Result<R, deputy::Error>` reads
    /// better through [`Sim::command`], which flattens the two results into one.
    pub fn with_actor<T: Actor + 'static, R>(
        &mut self,
        node: NodeId,
        f: impl FnOnce(&mut T, Instant) -> R,
    ) -> Result<R, SimError> {
        let now = self.core.now;
        let n = self
            .nodes
            .get_mut(node.index())
            .ok_or(SimError::UnknownNode(node))?;
        let slot = Self::slot_mut(&mut n.kind).ok_or(SimError::WrongNodeKind {
            node,
            expected: "node with an actor",
        })?;
        let actor = slot
            .actor
            .as_any_mut()
            .downcast_mut::<T>()
            .ok_or(SimError::WrongActorType(node))?;
        let r = f(actor, now);
        self.drive(node);
        Ok(r)
    }

    /// Run a typed command on a node's actor, as [`Sim::with_actor`] does, and return the
    /// command's own result: the simulator's refusal (no such node, another actor type)
    /// comes back as a [`deputy::Error`](Error) too ([`SimActorError`]), so the
    /// result is one `Result`, not two.
    ///
    /// ```
    /// use deputy::sim::{DatagramProbe, LinkConfig, Sim};
    ///
    /// let mut sim = Sim::new(1);
    /// let lan = sim.add_network("lan", "10.0.0.0/24", LinkConfig::default()).unwrap();
    /// let a = sim.add_host("a", lan, "10.0.0.1".parse().unwrap(), DatagramProbe::new(9)).unwrap();
    /// let to = "10.0.0.2:9".parse().unwrap();
    /// sim.command(a, |p: &mut DatagramProbe, _now| p.send(to, b"hi".to_vec())).unwrap();
    /// // A refusal of the simulator is a deputy::Error as well.
    /// assert!(sim.command(a, |_: &mut deputy::channel::ChannelClient, _| Ok(())).is_err());
    /// ```
    pub fn command<T: Actor + 'static, R>(
        &mut self,
        node: NodeId,
        f: impl FnOnce(&mut T, Instant) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.with_actor(node, f)?
    }

    /// Read a node's actor as its concrete type `T`, without driving it.
    pub fn actor<T: Actor + 'static>(&self, node: NodeId) -> Result<&T, SimError> {
        self.slot_ref(node)?
            .actor
            .as_any()
            .downcast_ref::<T>()
            .ok_or(SimError::WrongActorType(node))
    }

    fn drive(&mut self, id: NodeId) {
        let Sim { core, nodes } = self;
        let Some(Node { ifaces, kind, .. }) = nodes.get_mut(id.index()) else {
            return;
        };
        match kind {
            Kind::Host(h) => {
                if let Some(f) = ifaces.first() {
                    core.drive_host(id, f.net, h);
                }
            }
            Kind::Inline(n) => core.drive_inline(id, ifaces, n),
            Kind::Router(_) => {}
        }
    }

    fn slot_ref(&self, id: NodeId) -> Result<&Slot, SimError> {
        match &self.node(id)?.kind {
            Kind::Host(h) => Ok(&h.slot),
            Kind::Inline(n) => Ok(&n.slot),
            Kind::Router(_) => Err(SimError::WrongNodeKind {
                node: id,
                expected: "node with an actor",
            }),
        }
    }

    /// Take the application events a node's actor emitted so far, with their times.
    pub fn events(&mut self, node: NodeId) -> Result<Vec<(Instant, Event)>, SimError> {
        let n = self.node_mut(node)?;
        let slot = Self::slot_mut(&mut n.kind).ok_or(SimError::WrongNodeKind {
            node,
            expected: "node with an actor",
        })?;
        Ok(std::mem::take(&mut slot.events))
    }

    /// The events not yet taken by [`Sim::events`].
    pub fn peek_events(&self, node: NodeId) -> Result<&[(Instant, Event)], SimError> {
        Ok(&self.slot_ref(node)?.events)
    }

    /// Events that did not fit the per-node bound, plus outputs the actor reported lost
    /// to its own full outbox ([`Output::Lost`]).
    pub fn events_lost(&self, node: NodeId) -> Result<u64, SimError> {
        Ok(self.slot_ref(node)?.events_lost)
    }

    /// Errors the node's actor returned from `handle_input`, and outputs the simulator
    /// could not carry out.
    pub fn faults(&self, node: NodeId) -> Result<&[ActorFault], SimError> {
        Ok(&self.slot_ref(node)?.faults)
    }

    // ----- running -----

    /// Run the next event, if any. Returns whether one ran.
    pub fn step(&mut self) -> bool {
        let Some(((at, _), ev)) = self.core.queue.pop_first() else {
            return false;
        };
        self.core.now = self.core.now.max(at);
        match ev {
            Ev::Start(id) => self.drive(id),
            Ev::Deliver { node, iface, data } => self.deliver(node, iface, data),
            Ev::ActorTimer { node, generation } => {
                let now = self.core.now;
                let fired = match self
                    .nodes
                    .get_mut(node.index())
                    .and_then(|n| Self::slot_mut(&mut n.kind))
                {
                    Some(slot) => {
                        let live = slot.timer.fire(generation);
                        if live {
                            slot.actor.handle_timeout(now);
                        }
                        live
                    }
                    None => false,
                };
                if fired {
                    self.drive(node);
                }
            }
            Ev::TcpTimer { node, generation } => {
                if let Some((tcp, timer)) = self
                    .nodes
                    .get_mut(node.index())
                    .and_then(|n| Self::tcp_mut(&mut n.kind))
                    && timer.fire(generation)
                {
                    tcp.on_timeout(self.core.now);
                    self.drive(node);
                }
            }
        }
        true
    }

    fn deliver(&mut self, id: NodeId, iface: usize, data: Vec<u8>) {
        let Sim { core, nodes } = self;
        let Some(Node { ifaces, kind, .. }) = nodes.get_mut(id.index()) else {
            return;
        };
        let Some(net) = ifaces.get(iface).map(|f| f.net) else {
            return;
        };
        match kind {
            Kind::Host(h) => core.deliver_host(id, net, h, data),
            Kind::Router(r) => core.deliver_router(id, ifaces, r, iface, data),
            Kind::Inline(n) => core.deliver_inline(id, ifaces, n, iface, data),
        }
    }

    /// Run every event up to and including `deadline`, then set the clock to `deadline`.
    pub fn run_until(&mut self, deadline: Instant) -> Result<(), SimError> {
        let budget = self.core.cfg.max_steps_per_run;
        let mut steps = 0u64;
        while let Some((&(at, _), _)) = self.core.queue.first_key_value() {
            if at > deadline {
                break;
            }
            if steps >= budget {
                return Err(SimError::StepLimit(steps));
            }
            self.step();
            steps += 1;
        }
        self.core.now = self.core.now.max(deadline);
        Ok(())
    }

    /// Run until `done` holds (checked before the first event and after each one) or the
    /// next event lies after `deadline`. Returns whether `done` held; the clock stays at
    /// the last event run (or moves to `deadline` if `done` never held).
    pub fn run_until_cond(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Result<bool, SimError> {
        let budget = self.core.cfg.max_steps_per_run;
        let mut steps = 0u64;
        loop {
            if done(self) {
                return Ok(true);
            }
            match self.core.queue.first_key_value() {
                Some((&(at, _), _)) if at <= deadline => {}
                _ => break,
            }
            if steps >= budget {
                return Err(SimError::StepLimit(steps));
            }
            self.step();
            steps += 1;
        }
        self.core.now = self.core.now.max(deadline);
        Ok(false)
    }

    /// Run for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) -> Result<(), SimError> {
        self.run_until(self.core.now + d)
    }

    /// Run until no event is left, at most `max_steps` events. Returns the time then.
    /// Actors with periodic timers never go idle: use [`Sim::run_for`] for them.
    pub fn run_until_idle(&mut self, max_steps: u64) -> Result<Instant, SimError> {
        let mut steps = 0u64;
        while !self.core.queue.is_empty() {
            if steps >= max_steps {
                return Err(SimError::StepLimit(steps));
            }
            self.step();
            steps += 1;
        }
        Ok(self.core.now)
    }

    /// Number of events waiting.
    pub fn pending(&self) -> usize {
        self.core.queue.len()
    }

    // ----- recording -----

    /// Name more wire message types in trace, pcap and chart labels (a protocol of your
    /// own that frames with [`crate::wire`]): `names` is asked before the ones registered
    /// earlier; deputy's own names are registered by default.
    pub fn register_message_names(&mut self, names: MessageNamer) {
        self.core.message_names.insert(0, names);
    }

    /// Name packets in the trace and chart: return `Some(label)` for packets you know,
    /// `None` to keep the default label.
    pub fn set_labeler(&mut self, labeler: impl Fn(&PacketInfo<'_>) -> Option<String> + 'static) {
        self.core.labeler = Some(Box::new(labeler));
    }

    /// Every recorded hop and drop, in order.
    pub fn trace(&self) -> &[TraceEntry] {
        &self.core.trace
    }

    /// The recorded drops.
    pub fn drops(&self) -> impl Iterator<Item = &TraceEntry> + '_ {
        self.core.trace.iter().filter(|e| e.drop_reason().is_some())
    }

    /// Trace entries that did not fit [`SimConfig::max_trace_entries`].
    pub fn trace_lost(&self) -> u64 {
        self.core.trace_lost
    }

    /// The pcap file (LINKTYPE_RAW, nanosecond timestamps) of every hop so far.
    pub fn pcap_bytes(&self) -> &[u8] {
        self.core.pcap.bytes()
    }

    /// Whether the pcap stopped growing at [`SimConfig::max_pcap_bytes`] or the trace bound.
    pub fn pcap_truncated(&self) -> bool {
        self.core.pcap.truncated || self.core.trace_lost > 0
    }

    /// Write the pcap to `path`.
    pub fn write_pcap(&self, path: impl AsRef<std::path::Path>) -> Result<(), SimError> {
        std::fs::write(path, self.pcap_bytes()).map_err(|e| SimError::Io(e.to_string()))
    }

    /// A Mermaid `sequenceDiagram` of the trace: one participant per node, an arrow per
    /// hop, a note per drop.
    pub fn mermaid(&self) -> String {
        let names: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                let addrs: Vec<String> = n
                    .ifaces
                    .iter()
                    .filter_map(|f| f.addr)
                    .map(|a| a.to_string())
                    .collect();
                if addrs.is_empty() {
                    n.name.clone()
                } else {
                    std::format!("{} ({})", n.name, addrs.join(", "))
                }
            })
            .collect();
        mermaid::render(&names, &self.core.trace, self.core.trace_lost > 0)
    }
}

fn not_a_napt(router: NodeId) -> SimError {
    SimError::WrongNodeKind {
        node: router,
        expected: "NAPT",
    }
}

fn not_inline(node: NodeId) -> SimError {
    SimError::WrongNodeKind {
        node,
        expected: "inline node",
    }
}

fn vec_default_route(addr: IpAddr) -> Vec<(Prefix, usize)> {
    std::vec![(Prefix::default_for(addr), 1)]
}

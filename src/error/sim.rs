//! The simulator's own error enum: what its probes refuse and which actor outputs it
//! cannot carry out. Here rather than in `sim` because [`Error`](super::Error) names it
//! and this module must not import upper layers.

use crate::stream_id::StreamId;

/// One rule of the simulator broken by an actor (or a caller of a probe), recorded as an
/// `ActorFault` or returned by a probe's method. Re-exported as `deputy::sim::SimActorError`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimActorError {
    /// The host TCP's segment could not be built (mixed address families).
    #[error("TCP segment could not be built")]
    SegmentUnbuildable,
    /// An `Output::Transmit` could not be built into a UDP packet (mixed address families,
    /// or a payload too large for one packet).
    #[error("datagram could not be built")]
    DatagramUnbuildable,
    /// A host emitted a raw packet on an interface other than 0.
    #[error("a host has only interface 0, not {0}")]
    HostInterface(u32),
    /// An inline node emitted a packet on an interface it does not have.
    #[error("the inline node has no interface {0}")]
    NoSuchInterface(u32),
    /// An inline node emitted something other than a raw packet or an event: a datagram,
    /// or a stream output before it has a TCP (`Sim::listen_inline` gives it one).
    #[error("inline nodes emit raw packets and events only (stream outputs once they listen)")]
    InlineOutput,
    /// A `DatagramProbe` got an input other than a datagram.
    #[error("a datagram probe takes datagrams only")]
    DatagramProbeInput,
    /// A `StreamProbe` got an input other than a stream event.
    #[error("a stream probe takes stream events only")]
    StreamProbeInput,
    /// A `PacketProbe` got an input other than a raw packet.
    #[error("a packet probe takes raw packets only")]
    PacketProbeInput,
    /// A bridging `PacketProbe` got a packet on an interface other than 0 or 1.
    #[error("a bridge has two interfaces, not interface {0}")]
    BridgeInterface(u32),
    /// `Output::Connect` with a stream id the host already uses.
    #[error("connect with {0:?}, already in use")]
    StreamIdInUse(StreamId),
    /// `Output::Connect` to port 0, or to another address family than the local address's
    /// (the host's, or the inline node's address chosen for the connection).
    #[error("connect to an unusable address")]
    UnusableAddress,
    /// `Output::Connect` from port 0 and every ephemeral port is taken.
    #[error("no free ephemeral port")]
    NoEphemeralPort,
    /// `Output::Connect` for a local/remote pair that already has a connection.
    #[error("that connection already exists")]
    ConnectionExists,
    /// `Output::StreamSend` after the actor's own `StreamClose`.
    #[error("send on {0:?}, which the actor closed")]
    SendAfterClose(StreamId),
    /// `Sim::command` named a node that does not exist (its index).
    #[error("unknown node#{0}")]
    UnknownNode(usize),
    /// `Sim::command` named a node without an actor (a router; its index).
    #[error("node#{0} has no actor")]
    NoActor(usize),
    /// `Sim::command` named a node whose actor is of another type (its index).
    #[error("node#{0} runs another type of actor")]
    WrongActorType(usize),
    /// Any other refusal of the simulator, as its message.
    #[error("{0}")]
    Refused(alloc::string::String),
}

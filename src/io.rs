//! The actor contract: what goes into an actor, what comes out, and the trait every actor
//! implements.
//!
//! Every protocol party in deputy is an *actor*: a plain struct with no sockets, threads,
//! clock or global randomness. A driver (your event loop, firmware main loop, or the
//! [`sim`](crate::sim) network) moves bytes and time in and out:
//!
//! ```text
//!          Input (datagram, stream event, raw packet)           Output (datagram, stream op,
//!   driver ───────────────────────────────────────▶  actor  ──▶  raw packet, Event)
//!          handle_timeout(now) when poll_timeout() is due
//! ```
//!
//! # Polling rules
//!
//! 1. After **every** call that can change an actor — [`Actor::handle_input`],
//!    [`Actor::handle_timeout`], and every typed command (`appliance.send_secure(…)`,
//!    `client.send(…)`) — call [`Actor::poll_output`] until it returns `None`, and carry out
//!    each output in order.
//! 2. Then call [`Actor::poll_timeout`] **last** and arm one timer for the instant it returns
//!    (replacing any earlier timer). `None` means no timer is needed.
//! 3. When the timer fires, call [`Actor::handle_timeout`] with the current time, then go to 1.
//!    Actors tolerate early, late and spurious timeout calls.
//!
//! Outputs wait in a bounded [`Outbox`]; a driver that stops draining sees
//! [`Error::CapacityExceeded`] from the next call instead of unbounded growth.
//!
//! # Nothing vanishes unreported
//!
//! Every output an actor could not queue because its outbox was full is counted, and the
//! count comes out of [`Actor::poll_output`] as [`Output::Lost`] in the place the first of
//! them would have had, once the outputs queued before it are drained. That holds in
//! every context: a call that can return an error also returns
//! [`Error::CapacityExceeded`], but [`Actor::handle_timeout`] cannot, and an event raised
//! there (a handshake that timed out, a peer given up on) would otherwise disappear. So
//! every output is either delivered or counted as lost and reported.
//!
//! Streams are TCP-like reliable byte streams named by a [`StreamId`]. The driver names the
//! streams it accepts ([`StreamId::inbound`]); an actor names the streams it opens
//! ([`StreamId::outbound`]), so the two never collide.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

pub use crate::stream_id::StreamId;
use crate::{Error, Instant};

/// A network interface of an IP-layer actor (bump-in-the-wire proxy, edge router).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfaceId(pub u32);

/// Something that happened outside the actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// A UDP datagram arrived at `to` (one of the actor's addresses) from `from`.
    Datagram {
        /// Source address as the actor sees it (after any NAT).
        from: SocketAddr,
        /// The local address it arrived on.
        to: SocketAddr,
        /// The UDP payload.
        data: &'a [u8],
    },
    /// The driver accepted an inbound stream and named it `id`.
    StreamAccepted {
        /// Driver-chosen id ([`StreamId::inbound`]).
        id: StreamId,
        /// The local address the stream arrived on.
        local: SocketAddr,
        /// The remote address.
        remote: SocketAddr,
    },
    /// A stream the actor asked for with [`Output::Connect`] is open.
    StreamConnected {
        /// The actor's id for it.
        id: StreamId,
        /// The local address the driver bound (its port if the actor asked for port 0).
        local: SocketAddr,
    },
    /// Bytes arrived on a stream, in order.
    StreamData {
        /// Which stream.
        id: StreamId,
        /// The bytes.
        data: &'a [u8],
    },
    /// The stream is gone: the peer closed or reset it, or the connect failed. Drivers do
    /// not report this for a stream the actor closed itself with [`Output::StreamClose`].
    StreamClosed {
        /// Which stream.
        id: StreamId,
    },
    /// A raw IPv4 or IPv6 packet seen on an interface (IP-layer actors only).
    Packet {
        /// The interface it arrived on.
        iface: IfaceId,
        /// The whole packet, starting with the IP header.
        data: &'a [u8],
    },
}

/// A UDP datagram to send.
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The local address to send from. It need not be a socket the driver has bound
    /// already: an actor may send from a new local address (the rendezvous devices open
    /// extra sockets on ports from
    /// [`PeerConfig::extra_ports`](crate::rendezvous::PeerConfig::extra_ports) while hole
    /// punching). A driver binds `from` on first use and keeps it for the datagrams that
    /// answer it (they arrive as [`Input::Datagram`] with `to` = `from`); one that cannot
    /// bind it drops the datagram (the actor treats it as lost on the network, as every
    /// datagram may be). `examples/driver/tokio_net.rs` shows both.
    pub from: SocketAddr,
    /// The destination.
    pub to: SocketAddr,
    /// The UDP payload.
    pub data: Vec<u8>,
}

impl fmt::Debug for Transmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Transmit({} -> {}, {} bytes)",
            self.from,
            self.to,
            self.data.len()
        )
    }
}

/// Something the actor wants done, or wants the application to know.
///
/// `E` is the actor's event type ([`Actor::Event`]): each protocol has its own, so this
/// contract names none of them; `deputy::Event` gathers them all for drivers that hold
/// several kinds of actor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<E> {
    /// Send a UDP datagram.
    Transmit(Transmit),
    /// Open a stream to `remote`; the driver answers [`Input::StreamConnected`] or
    /// [`Input::StreamClosed`].
    Connect {
        /// The actor's id for the new stream ([`StreamId::outbound`]).
        id: StreamId,
        /// Local address to bind; port 0 lets the driver choose.
        local: SocketAddr,
        /// Where to connect.
        remote: SocketAddr,
    },
    /// Write bytes to a stream.
    StreamSend {
        /// Which stream.
        id: StreamId,
        /// The bytes, in order after earlier sends.
        data: Vec<u8>,
    },
    /// Close a stream gracefully after the bytes already sent.
    StreamClose {
        /// Which stream.
        id: StreamId,
    },
    /// Emit a raw IP packet on an interface (IP-layer actors only).
    Packet {
        /// The interface to send it on.
        iface: IfaceId,
        /// The whole packet, starting with the IP header.
        data: Vec<u8>,
    },
    /// Tell the application something.
    Event(E),
    /// `count` outputs that belonged here were lost: the outbox was full when the actor
    /// raised them (the driver had stopped draining it). Consecutive losses share one
    /// report; the outputs themselves are gone, so whatever they carried (an event, a
    /// stream write) must be treated as not having happened.
    Lost {
        /// How many outputs were lost.
        count: u64,
    },
}

impl<E> Output<E> {
    /// The same output with its event (if it is one) converted by `f`, e.g. into the
    /// aggregate `deputy::Event`.
    pub fn map_event<F>(self, f: impl FnOnce(E) -> F) -> Output<F> {
        match self {
            Output::Transmit(t) => Output::Transmit(t),
            Output::Connect { id, local, remote } => Output::Connect { id, local, remote },
            Output::StreamSend { id, data } => Output::StreamSend { id, data },
            Output::StreamClose { id } => Output::StreamClose { id },
            Output::Packet { iface, data } => Output::Packet { iface, data },
            Output::Event(e) => Output::Event(f(e)),
            Output::Lost { count } => Output::Lost { count },
        }
    }
}

/// The contract every deputy actor implements. See the [module docs](self) for the
/// polling rules.
pub trait Actor {
    /// What this actor tells the application: its protocol's event type
    /// (`ChannelEvent`, `OffloadEvent` …).
    type Event;

    /// Feed one input. Malformed or unexpected input is dropped or answered and reported
    /// through an error or an [`Output::Event`]; it never panics and never leaves the
    /// actor in a corrupted state. An `Err` describes this one input; the actor stays usable.
    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error>;

    /// The timer armed from [`Actor::poll_timeout`] fired (or the driver is just checking).
    fn handle_timeout(&mut self, now: Instant);

    /// The next thing to do, in order. Call until `None` after every input, timeout and
    /// command.
    fn poll_output(&mut self) -> Option<Output<Self::Event>>;

    /// When the actor next needs [`Actor::handle_timeout`]. Call last.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// A bounded FIFO of outputs, shared by all actors.
///
/// Pushing into a full outbox fails with [`Error::CapacityExceeded`]: the driver has stopped
/// draining, and the actor reports that instead of growing without bound. The refused
/// output is also counted: an [`Output::Lost`] takes its place in the queue (one slot past
/// the bound, shared by every loss until the driver makes room), so even a push whose
/// error has nowhere to go (inside [`Actor::handle_timeout`]) is reported to the driver.
/// The queue thus never holds more than `bound` outputs plus one loss report.
#[derive(Debug)]
pub struct Outbox<E> {
    queue: VecDeque<Output<E>>,
    bound: usize,
}

impl<E> Outbox<E> {
    /// Default bound on queued outputs.
    pub const DEFAULT_BOUND: usize = 1024;

    /// An empty outbox holding at most `bound` outputs.
    pub fn new(bound: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            bound: bound.max(1),
        }
    }

    /// Queue an output; when the outbox is full, count it as lost (see [`Output::Lost`])
    /// and fail.
    pub fn push(&mut self, output: Output<E>) -> Result<(), Error> {
        if self.queue.len() >= self.bound {
            self.count_lost();
            return Err(Error::CapacityExceeded {
                what: "outbox",
                bound: self.bound,
            });
        }
        self.queue.push_back(output);
        Ok(())
    }

    /// One more output lost: added to the loss report at the tail if there is one (the
    /// losses are consecutive), otherwise a new report in the one slot past the bound. A
    /// full queue only loses while its tail is that report, so it never grows further.
    fn count_lost(&mut self) {
        match self.queue.back_mut() {
            Some(Output::Lost { count }) => *count = count.saturating_add(1),
            _ => self.queue.push_back(Output::Lost { count: 1 }),
        }
    }

    /// Queue an application event.
    pub fn event(&mut self, event: impl Into<E>) -> Result<(), Error> {
        self.push(Output::Event(event.into()))
    }

    /// Take the oldest output.
    pub fn pop(&mut self) -> Option<Output<E>> {
        self.queue.pop_front()
    }

    /// Number of queued outputs (a pending loss report included).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The configured bound.
    pub fn bound(&self) -> usize {
        self.bound
    }
}

impl<E> Default for Outbox<E> {
    fn default() -> Self {
        Outbox::new(Self::DEFAULT_BOUND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn stream_ids_from_both_sides_never_collide() {
        let a = StreamId::inbound(7);
        let b = StreamId::outbound(7);
        assert_ne!(a, b);
        assert!(!a.is_outbound());
        assert!(b.is_outbound());
        assert_eq!(StreamId::inbound(b.to_u64()), a);
        assert_eq!(format!("{a:?}/{b:?}"), "stream-in-7/stream-out-7");
    }

    #[test]
    fn outbox_refuses_past_its_bound() {
        let mut outbox: Outbox<()> = Outbox::new(2);
        let close = || Output::StreamClose {
            id: StreamId::inbound(1),
        };
        outbox.push(close()).unwrap();
        outbox.push(close()).unwrap();
        assert_eq!(
            outbox.push(close()),
            Err(Error::CapacityExceeded {
                what: "outbox",
                bound: 2
            })
        );
        // The refused output is counted, in the place it would have had.
        assert_eq!(outbox.len(), 3);
        assert!(outbox.pop().is_some());
        // Still at the bound (one output and the loss report): refused and counted again.
        assert!(outbox.push(close()).is_err());
        assert!(outbox.pop().is_some());
        assert_eq!(outbox.pop(), Some(Output::Lost { count: 2 }));
        outbox.push(close()).unwrap();
        assert_eq!(outbox.len(), 1);
    }

    /// Issue 13, item 4: an output raised where no error can be returned (as in
    /// `handle_timeout`) is never silently lost: it is counted and reported after the
    /// outputs queued before it, and outputs queued after room was made follow the report.
    #[test]
    fn an_event_lost_to_a_full_outbox_in_handle_timeout_is_counted_and_reported() {
        let mut outbox: Outbox<u32> = Outbox::new(2);
        outbox.event(1u32).unwrap();
        outbox.event(2u32).unwrap();
        // Three events raised with nowhere to return the error.
        for e in 3..=5u32 {
            let _ = outbox.event(e);
        }
        assert_eq!(outbox.pop(), Some(Output::Event(1)));
        outbox.event(6u32).unwrap_err();
        assert_eq!(outbox.pop(), Some(Output::Event(2)));
        // Room again: a new event queues behind the report.
        outbox.event(7u32).unwrap();
        assert_eq!(outbox.pop(), Some(Output::Lost { count: 4 }));
        assert_eq!(outbox.pop(), Some(Output::Event(7)));
        assert_eq!(outbox.pop(), None);
        // A later loss is a new report, at its own place.
        outbox.event(8u32).unwrap();
        outbox.event(9u32).unwrap();
        let _ = outbox.event(10u32);
        outbox.pop();
        outbox.pop();
        assert_eq!(outbox.pop(), Some(Output::Lost { count: 1 }));
    }
}

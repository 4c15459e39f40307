//! The one place where the crate's aggregate [`Event`] is taken apart into a protocol's own
//! event type, shared by the tests (through `common`) and the tour (which includes this file
//! with `#[path]`): when the shape of `Event`, or of the `Output::Event` an actor hands out,
//! changes, this file changes and its users do not.

// Each user (a test crate, the tour) needs only part of it.
#![allow(dead_code)]

use deputy::Event;
use deputy::channel::ChannelEvent;
use deputy::ikev2::IkeEvent;
use deputy::offload::{ApplianceEvent, OffloadEvent, ProxyEvent, RemoteEvent};
use deputy::rendezvous::RendezvousEvent;
use deputy::sim::{NodeId, Sim, SimError};

/// A protocol's own event type, as found inside the aggregate [`Event`].
// The `Err` hands the event back (it was another protocol's), it is no error: boxing it
// would cost every event a box to please a lint about error sizes.
#[allow(clippy::result_large_err)]
pub trait FromEvent: Sized {
    /// `Err(e)` when `e` is some other protocol's event.
    fn from_event(e: Event) -> Result<Self, Event>;
}

/// `impl FromEvent` for an event type that is one variant of `Event` …
macro_rules! from_event {
    ($ty:ty, $variant:ident) => {
        impl FromEvent for $ty {
            fn from_event(e: Event) -> Result<Self, Event> {
                match e {
                    Event::$variant(x) => Ok(x),
                    other => Err(other),
                }
            }
        }
    };
}

/// … or one variant of `OffloadEvent` (one per seed 000 actor).
macro_rules! from_offload_event {
    ($ty:ty, $variant:ident) => {
        impl FromEvent for $ty {
            fn from_event(e: Event) -> Result<Self, Event> {
                match OffloadEvent::from_event(e)? {
                    OffloadEvent::$variant(x) => Ok(x),
                    other => Err(Event::Offload(other)),
                }
            }
        }
    };
}

from_event!(ChannelEvent, Channel);
from_event!(IkeEvent, Ike);
from_event!(RendezvousEvent, Rendezvous);
from_event!(OffloadEvent, Offload);
from_offload_event!(ApplianceEvent, Appliance);
from_offload_event!(ProxyEvent, Proxy);
from_offload_event!(RemoteEvent, Remote);

/// `e` if it is a `T`.
pub fn event<T: FromEvent>(e: Event) -> Option<T> {
    T::from_event(e).ok()
}

/// `e`, which must be a `T`: for an actor that emits only its own protocol's events.
pub fn expect_event<T: FromEvent>(e: Event) -> T {
    T::from_event(e).unwrap_or_else(|other| panic!("unexpected event {other:?}"))
}

/// `e`, which must be a `T`: for a seed 000 node, which runs one kind of offload actor.
pub fn expect_offload_event<T: FromEvent>(e: OffloadEvent) -> T {
    expect_event(Event::Offload(e))
}

/// Take the events `node` reported since the last call, keeping the `T`s (the others are
/// dropped: the simulator hands out each event once).
pub fn take_events<T: FromEvent>(sim: &mut Sim, node: NodeId) -> Result<Vec<T>, SimError> {
    Ok(sim
        .events(node)?
        .into_iter()
        .filter_map(|(_, e)| T::from_event(e).ok())
        .collect())
}

/// Whether `node` has reported, and not yet handed out, a `T` that `pred` accepts.
pub fn has_event<T: FromEvent>(sim: &Sim, node: NodeId, pred: impl Fn(&T) -> bool) -> bool {
    sim.peek_events(node).is_ok_and(|evs| {
        evs.iter()
            .any(|(_, e)| T::from_event(e.clone()).is_ok_and(|t| pred(&t)))
    })
}

//! The one place where the crate's aggregate [`Event`] is taken apart into a protocol's own
//! event type, shared by the tests (through `common`) and the tour (which includes this file
//! with `#[path]`): when the shape of `Event`, or of the `Output::Event` an actor hands out,
//! changes, this file changes and its users do not.

// Each user (a test crate, the tour) needs only part of it.
#![allow(dead_code)]

use deputy::Event;
use deputy::offload::OffloadEvent;
use deputy::sim::{NodeId, Sim, SimError};

/// A protocol's own event type, as found inside the aggregate [`Event`].
// The `Err` hands the event back (it was another protocol's), it is no error: boxing it
// would cost every event a box to please a lint about error sizes.
#[allow(clippy::result_large_err)]
pub trait FromEvent: Sized {
    /// `Err(e)` when `e` is some other protocol's event.
    fn from_event(e: Event) -> Result<Self, Event>;
}

/// Every protocol's (and seed 000 actor's) event type is one: the crate implements
/// `TryFrom<Event>` for each, handing the event back when it is another's.
impl<T: TryFrom<Event, Error = Event>> FromEvent for T {
    fn from_event(e: Event) -> Result<Self, Event> {
        T::try_from(e)
    }
}

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

//! The timer pattern the three offload actors share.
//!
//! Each actor lists its timers once, as `(Timer, Instant)` pairs derived from its state (a
//! deadline lives in the state it belongs to, so a timer disappears with its state and
//! cannot be forgotten). `poll_timeout` is [`earliest`](crate::time::earliest) of that list; `handle_timeout`
//! takes the [`due`](crate::time::due) ones and fires them in list order. A timer fired after an earlier
//! one changed the state looks its state up again and does nothing if it is gone — the
//! same tolerance the actor contract asks for spurious timeouts.

use alloc::collections::BTreeMap;

use crate::Instant;
use crate::channel::SecureStream;
use crate::io::{Outbox, StreamId};
use crate::offload::OffloadEvent;
use crate::time::{due, earliest};

/// The timers of one stream of the [`CryptoProxy`](super::CryptoProxy) or the
/// [`RemoteNode`](super::RemoteNode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamTimer {
    /// The session must be up by then, or the stream gives up its slot.
    SetUp,
    /// The channel handshake's deadline.
    Channel,
}

impl StreamTimer {
    /// A stream's timers, the set-up deadline first: a stream that gave up needs no
    /// handshake timeout, and firing them in this order keeps that so.
    fn of(
        set_up: Option<Instant>,
        channel: Option<&SecureStream>,
    ) -> impl Iterator<Item = (StreamTimer, Instant)> + use<> {
        let channel = channel.and_then(SecureStream::poll_timeout);
        [
            (StreamTimer::SetUp, set_up),
            (StreamTimer::Channel, channel),
        ]
        .into_iter()
        .filter_map(|(timer, at)| Some((timer, at?)))
    }

    /// The timers of every stream of a table, in stream order; `parts` gives a stream's
    /// set-up deadline and channel.
    pub(crate) fn table<'a, S>(
        streams: &'a BTreeMap<StreamId, S>,
        parts: fn(&S) -> (Option<Instant>, Option<&SecureStream>),
    ) -> impl Iterator<Item = (StreamId, StreamTimer, Instant)> + 'a {
        streams.iter().flat_map(move |(&id, s)| {
            let (set_up, channel) = parts(s);
            StreamTimer::of(set_up, channel).map(move |(timer, at)| (id, timer, at))
        })
    }

    /// Fire this timer of stream `id`, if the stream is still there and the timer due.
    pub(crate) fn fire(self, actor: &mut impl StreamActor, now: Instant, id: StreamId) {
        match self {
            StreamTimer::SetUp => {
                if actor.set_up_deadline(id).is_some_and(|d| d <= now) {
                    actor.give_up(now, id);
                }
            }
            StreamTimer::Channel => {
                let (channel, outbox) = actor.channel(id);
                // A pump that could not queue the failure counts as failed too: the
                // drive then reports it.
                let failed = channel
                    .is_some_and(|secure| secure.handle_timeout(now, outbox).unwrap_or(true));
                if failed {
                    actor.drive_failed(now, id);
                }
            }
        }
    }
}

/// What [`StreamTimer::fire`] needs of an actor with streams.
pub(crate) trait StreamActor {
    /// When stream `id` gives up waiting for its session, if it waits.
    fn set_up_deadline(&self, id: StreamId) -> Option<Instant>;
    /// Stream `id` gave up: drop it and report why.
    fn give_up(&mut self, now: Instant, id: StreamId);
    /// Stream `id`'s channel (if it is open) and the actor's outbox.
    fn channel(&mut self, id: StreamId) -> (Option<&mut SecureStream>, &mut Outbox<OffloadEvent>);
    /// Stream `id`'s handshake timed out: act on the failure.
    fn drive_failed(&mut self, now: Instant, id: StreamId);
}

/// An actor's timer table: the one list both `poll_timeout` and `handle_timeout` read.
pub(crate) trait TimerTable {
    /// The actor's timer enum.
    type Timer;

    /// Every armed timer with its deadline, in the order they fire.
    fn timers(&self) -> impl Iterator<Item = (Self::Timer, Instant)> + '_;

    /// Fire one timer taken from [`TimerTable::timers`] (it may no longer be armed).
    fn fire(&mut self, now: Instant, timer: Self::Timer);

    /// `handle_timeout`: fire every timer due at `now`.
    fn run_timers(&mut self, now: Instant) {
        for timer in due(self.timers(), now) {
            self.fire(now, timer);
        }
    }

    /// `poll_timeout`: the earliest deadline.
    fn next_timer(&self) -> Option<Instant> {
        earliest(self.timers())
    }
}

//! The timer pattern the three offload actors share.
//!
//! Each actor lists its timers once, as `(Timer, Instant)` pairs derived from its state (a
//! deadline lives in the state it belongs to, so a timer disappears with its state and
//! cannot be forgotten). `poll_timeout` is [`earliest`](crate::time::earliest) of that list; `handle_timeout`
//! takes the [`due`](crate::time::due) ones and fires them in list order. A timer fired after an earlier
//! one changed the state looks its state up again and does nothing if it is gone — the
//! same tolerance the actor contract asks for spurious timeouts.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use rand_core::CryptoRng;

use crate::channel::SecureStream;
use crate::io::{Outbox, StreamId};
use crate::offload::{OffloadError, OffloadEvent};
use crate::{Error, Instant};

/// A stream's set-up deadline, from the state it is in (`None` once its session is up).
pub(crate) trait Deadline {
    fn deadline(&self) -> Option<Instant>;
}

/// A stream with a running channel, in phase `P`.
pub(crate) struct Open<P> {
    pub(crate) channel: SecureStream,
    pub(crate) phase: P,
}

/// One stream of the [`CryptoProxy`](super::CryptoProxy) or the
/// [`RemoteNode`](super::RemoteNode): dialing (an outbound stream, no channel yet, with
/// what it dials for) or open (its channel runs).
pub(crate) enum Slot<D, P> {
    Dialing(D),
    /// Boxed: a channel is large, and most streams of a busy actor carry one.
    Open(Box<Open<P>>),
}

impl<D: Deadline, P: Deadline> Slot<D, P> {
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self {
            Slot::Dialing(d) => d.deadline(),
            Slot::Open(open) => open.phase.deadline(),
        }
    }

    pub(crate) fn channel(&self) -> Option<&SecureStream> {
        match self {
            Slot::Dialing(_) => None,
            Slot::Open(open) => Some(&open.channel),
        }
    }

    fn channel_mut(&mut self) -> Option<&mut SecureStream> {
        match self {
            Slot::Dialing(_) => None,
            Slot::Open(open) => Some(&mut open.channel),
        }
    }
}

/// An actor's streams, each with its earliest timer indexed.
///
/// `poll_timeout` reads the first entry of the index instead of asking every stream for
/// its timers: asked after every input, that scan made the proxy's cost per message grow
/// with the number of sessions it carries. The index holds each stream's earliest timer as
/// of the last change of the table; the one stream handed out mutably since (by
/// [`Streams::get_mut`] or [`Streams::insert`]) may have moved its timers, so it is read
/// directly until the next change indexes it again. Every change of a stream goes through
/// those two methods or [`Streams::remove`], so the index is never wrong about another.
pub(crate) struct Streams<D, P> {
    map: BTreeMap<StreamId, Slot<D, P>>,
    /// `(earliest timer, stream)` of every stream indexed.
    by_time: BTreeSet<(Instant, StreamId)>,
    /// Each indexed stream's entry in `by_time`.
    indexed: BTreeMap<StreamId, Instant>,
    /// The stream whose timers may have moved since it was indexed.
    stale: Option<StreamId>,
}

impl<D, P> Default for Streams<D, P> {
    fn default() -> Self {
        Streams {
            map: BTreeMap::new(),
            by_time: BTreeSet::new(),
            indexed: BTreeMap::new(),
            stale: None,
        }
    }
}

impl<D: Deadline, P: Deadline> Streams<D, P> {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn contains_key(&self, id: &StreamId) -> bool {
        self.map.contains_key(id)
    }

    pub(crate) fn get(&self, id: &StreamId) -> Option<&Slot<D, P>> {
        self.map.get(id)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Slot<D, P>> + '_ {
        self.map.values()
    }

    /// The stream, to change: its timers are read directly until the next change.
    pub(crate) fn get_mut(&mut self, id: &StreamId) -> Option<&mut Slot<D, P>> {
        self.reindex_stale();
        let slot = self.map.get_mut(id)?;
        self.stale = Some(*id);
        Some(slot)
    }

    pub(crate) fn insert(&mut self, id: StreamId, slot: Slot<D, P>) -> Option<Slot<D, P>> {
        self.reindex_stale();
        self.stale = Some(id);
        self.map.insert(id, slot)
    }

    pub(crate) fn remove(&mut self, id: &StreamId) -> Option<Slot<D, P>> {
        self.reindex_stale();
        self.unindex(*id);
        self.map.remove(id)
    }

    /// The earliest timer of any stream.
    pub(crate) fn earliest(&self) -> Option<Instant> {
        // The stale stream's entry (if it has one) may be out of date: skip it and read
        // that stream itself.
        let indexed = self
            .by_time
            .iter()
            .find(|(_, id)| Some(*id) != self.stale)
            .map(|(at, _)| *at);
        let stale = self.stale.and_then(|id| self.timer_of(id));
        indexed.into_iter().chain(stale).min()
    }

    /// The streams with a timer due at `now`, in stream order.
    fn due(&self, now: Instant) -> Vec<StreamId> {
        let mut due: Vec<StreamId> = self
            .by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .filter(|id| Some(*id) != self.stale)
            .collect();
        if let Some(id) = self.stale
            && self.timer_of(id).is_some_and(|at| at <= now)
        {
            due.push(id);
        }
        due.sort_unstable();
        due
    }

    /// A stream's earliest timer, read from the stream.
    fn timer_of(&self, id: StreamId) -> Option<Instant> {
        let s = self.map.get(&id)?;
        StreamTimer::of(s.deadline(), s.channel())
            .map(|(_, at)| at)
            .min()
    }

    fn unindex(&mut self, id: StreamId) {
        if let Some(at) = self.indexed.remove(&id) {
            self.by_time.remove(&(at, id));
        }
    }

    fn reindex_stale(&mut self) {
        if let Some(id) = self.stale.take() {
            self.unindex(id);
            if let Some(at) = self.timer_of(id) {
                self.by_time.insert((at, id));
                self.indexed.insert(id, at);
            }
        }
    }
}

/// Stream `id` connected: take what it was dialing for. A stream that connects twice
/// stays as it is.
pub(crate) fn take_dialing<D: Deadline, P: Deadline>(
    streams: &mut Streams<D, P>,
    id: StreamId,
) -> Result<D, Error> {
    match streams.remove(&id) {
        Some(Slot::Dialing(d)) => Ok(d),
        Some(open) => {
            streams.insert(id, open);
            Err(OffloadError::StreamConnectedTwice(id).into())
        }
        None => Err(Error::UnknownStream(id)),
    }
}

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

    /// The timers of every stream of a table, in stream order; with `due_at`, only those
    /// of the streams with a timer due then (found through the index, not by asking each).
    pub(crate) fn table<D: Deadline, P: Deadline>(
        streams: &Streams<D, P>,
        due_at: Option<Instant>,
    ) -> impl Iterator<Item = (StreamId, StreamTimer, Instant)> + '_ {
        let all = due_at.is_none().then(|| streams.map.keys().copied());
        let due = due_at.map(|now| streams.due(now).into_iter());
        let ids = all.into_iter().flatten().chain(due.into_iter().flatten());
        ids.flat_map(move |id| {
            let s = streams.map.get(&id);
            StreamTimer::of(s.and_then(Slot::deadline), s.and_then(Slot::channel))
                .map(move |(timer, at)| (id, timer, at))
        })
    }

    /// Fire this timer of stream `id`, if the stream is still there and the timer due.
    pub(crate) fn fire<A: StreamActor>(self, actor: &mut A, now: Instant, id: StreamId) {
        let (streams, outbox, _) = actor.parts();
        match self {
            StreamTimer::SetUp => {
                if streams
                    .get(&id)
                    .and_then(Slot::deadline)
                    .is_some_and(|d| d <= now)
                {
                    actor.give_up(now, id);
                }
            }
            StreamTimer::Channel => {
                // A pump that could not queue the failure counts as failed too: the
                // drive then reports it.
                let failed = streams
                    .get_mut(&id)
                    .and_then(Slot::channel_mut)
                    .is_some_and(|secure| secure.handle_timeout(now, outbox).unwrap_or(true));
                if failed {
                    // The drive reports the failure as an event and drops the stream; its
                    // error is only a full outbox, which a timer has no caller to return to.
                    let _ = actor.drive(now, id, None);
                }
            }
        }
    }
}

/// An actor with streams (the proxy, the remote node): what [`StreamTimer::fire`] needs,
/// and the one way both feed a stream and act on what its connection produced.
pub(crate) trait StreamActor {
    /// What a dialing stream carries.
    type Dialing: Deadline;
    /// The phases of an open stream.
    type Phase: Deadline;
    /// The actor's streams, outbox and random source.
    #[allow(clippy::type_complexity)]
    fn parts(
        &mut self,
    ) -> (
        &mut Streams<Self::Dialing, Self::Phase>,
        &mut Outbox<OffloadEvent>,
        &mut dyn CryptoRng,
    );
    /// Stream `id` gave up: drop it and report why.
    fn give_up(&mut self, now: Instant, id: StreamId);
    /// Act on the records stream `id`'s connection produced, then on its end (failure or
    /// the peer's close, which the stream has already answered). Returns whether the
    /// stream stays open.
    fn work(
        &mut self,
        now: Instant,
        id: StreamId,
        s: &mut Open<Self::Phase>,
        received: Vec<Vec<u8>>,
    ) -> Result<bool, Error>;
    /// [`StreamActor::work`] failed (it could not report: a full outbox): drop the stream
    /// rather than leave it half-handled. Best effort; the error goes to the caller.
    fn abandon(&mut self, now: Instant, id: StreamId, s: &mut Open<Self::Phase>);

    /// Feed stream `id` `data` (or, without data, just pump it), then act on everything
    /// its connection produced. The stream is out of the table while it is worked on and
    /// put back unless it ended; a stream still dialing has nothing to feed.
    fn drive(&mut self, now: Instant, id: StreamId, data: Option<&[u8]>) -> Result<(), Error> {
        let (streams, outbox, rng) = self.parts();
        let mut open = match streams.remove(&id) {
            Some(Slot::Open(open)) => open,
            Some(dialing) => {
                streams.insert(id, dialing);
                return Ok(());
            }
            None => return Err(Error::UnknownStream(id)),
        };
        let mut received = Vec::new();
        // The feed's own outcome goes to the caller after the actor acted on the rest.
        let result = open
            .channel
            .feed_or_pump(now, data, rng, outbox, &mut received);
        match self.work(now, id, &mut open, received) {
            Ok(true) => {
                self.parts().0.insert(id, Slot::Open(open));
            }
            Ok(false) => {}
            Err(e) => {
                self.abandon(now, id, &mut open);
                return Err(e);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};

    /// A dialing stream whose set-up deadline a test moves.
    struct At(Option<Instant>);

    impl Deadline for At {
        fn deadline(&self) -> Option<Instant> {
            self.0
        }
    }

    /// The index answers as a scan of every stream would, through any sequence of
    /// inserts, changes in place and removals.
    #[test]
    fn the_index_agrees_with_a_scan_of_every_stream() {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let mut streams: Streams<At, At> = Streams::default();
        let scan = |s: &Streams<At, At>, now: Instant| {
            let all: Vec<(StreamId, Instant)> = s
                .values()
                .zip(s.map.keys())
                .filter_map(|(slot, id)| Some((*id, slot.deadline()?)))
                .collect();
            let earliest = all.iter().map(|(_, at)| *at).min();
            let due: Vec<StreamId> = all
                .iter()
                .filter(|(_, at)| *at <= now)
                .map(|(id, _)| *id)
                .collect();
            (earliest, due)
        };
        for round in 0..2_000 {
            let id = StreamId::inbound(rng.next_u64() % 16);
            let at = (rng.next_u64() % 4 != 0).then(|| Instant::from_millis(rng.next_u64() % 50));
            match rng.next_u64() % 3 {
                0 => {
                    streams.insert(id, Slot::Dialing(At(at)));
                }
                1 => {
                    if let Some(Slot::Dialing(d)) = streams.get_mut(&id) {
                        d.0 = at;
                    }
                }
                _ => {
                    streams.remove(&id);
                }
            }
            let now = Instant::from_millis(rng.next_u64() % 50);
            let (earliest, due) = scan(&streams, now);
            assert_eq!(streams.earliest(), earliest, "round {round}");
            assert_eq!(streams.due(now), due, "round {round}");
        }
    }
}

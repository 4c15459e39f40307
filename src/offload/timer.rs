//! The timer pattern the three offload actors share.
//!
//! Each actor lists its timers once, as `(Timer, Instant)` pairs derived from its state (a
//! deadline lives in the state it belongs to, so a timer disappears with its state and
//! cannot be forgotten). `poll_timeout` is [`earliest`](crate::time::earliest) of that list; `handle_timeout`
//! takes the [`due`](crate::time::due) ones and fires them in list order. A timer fired after an earlier
//! one changed the state looks its state up again and does nothing if it is gone — the
//! same tolerance the actor contract asks for spurious timeouts.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
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

/// An actor's streams.
pub(crate) type Streams<D, P> = BTreeMap<StreamId, Slot<D, P>>;

/// Stream `id` connected: take what it was dialing for. A stream that connects twice
/// stays as it is.
pub(crate) fn take_dialing<D, P>(streams: &mut Streams<D, P>, id: StreamId) -> Result<D, Error> {
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

    /// The timers of every stream of a table, in stream order.
    pub(crate) fn table<D: Deadline, P: Deadline>(
        streams: &Streams<D, P>,
    ) -> impl Iterator<Item = (StreamId, StreamTimer, Instant)> + '_ {
        streams.iter().flat_map(move |(&id, s)| {
            StreamTimer::of(s.deadline(), s.channel()).map(move |(timer, at)| (id, timer, at))
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

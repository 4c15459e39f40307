//! A delegating terminal's link to its substitution server (the seed's S1-S2 and what
//! keeps it up), shared by every terminal (IKEv2 and TLS 1.3) so that they cannot differ
//! on it: deputy's channel client, opened on the first request; when it breaks while
//! requests wait, reopened after a delay (at most `max_reconnects` times in a row), the
//! waiting requests sent again (the server answers a repeated request from its cache).

use alloc::vec::Vec;
use core::time::Duration;

use super::KeyxError;
use super::messages::Message;
use crate::channel::{ChannelClient, ChannelEvent};
use crate::io::{Actor, Input, Outbox, Output};
use crate::{Error, Instant};

/// Where the link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No stream (yet, or it failed and nothing waited).
    Down,
    /// Connecting or up (the channel client queues until its handshake completes).
    Open,
    /// It failed with requests waiting: reconnect at `at`.
    Retry { at: Instant },
}

/// What a channel event means for the terminal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LinkNote {
    /// The channel is up.
    Connected,
    /// A message from the server.
    Received(Vec<u8>),
    /// The channel went down; if requests wait, it is reopened after the delay.
    Lost,
    /// The channel went down once too often while requests waited: they fail.
    GaveUp,
}

/// The link: the channel client and its reconnection state.
pub(crate) struct ServerLink {
    channel: ChannelClient,
    state: State,
    /// Failures in a row while requests waited.
    failures: u32,
    max_reconnects: u32,
    reconnect_delay: Duration,
}

impl ServerLink {
    pub(crate) fn new(
        channel: ChannelClient,
        max_reconnects: u32,
        reconnect_delay: Duration,
    ) -> Self {
        ServerLink {
            channel,
            state: State::Down,
            failures: 0,
            max_reconnects,
            reconnect_delay,
        }
    }

    /// Open the link now (it also opens by itself with the first request).
    pub(crate) fn connect(&mut self, now: Instant) -> Result<(), Error> {
        self.channel.connect(now)?;
        self.state = State::Open;
        Ok(())
    }

    /// Send one request, opening the link first if it is down. While a reconnect is
    /// pending the request is not sent: [`reconnect`](Self::reconnect) sends every
    /// waiting request.
    pub(crate) fn send(&mut self, now: Instant, bytes: &[u8]) -> Result<(), Error> {
        match self.state {
            State::Down => self.connect(now)?,
            State::Open => {}
            State::Retry { .. } => return Ok(()),
        }
        self.channel.send(bytes)
    }

    /// An answer arrived: whatever the link thought, it works.
    pub(crate) fn answered(&mut self) {
        self.state = State::Open;
    }

    /// Input for the channel's stream.
    pub(crate) fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        self.channel.handle_input(now, input)
    }

    /// The channel client's outputs: stream outputs go to `out` (an event that could not
    /// be matched becomes `lost`), channel events come back as notes, in order. What a
    /// `Lost` note means (retry or give up) the terminal decides with
    /// [`closed`](Self::closed), when it comes to that note and knows whether requests
    /// still wait.
    pub(crate) fn drain<E>(
        &mut self,
        now: Instant,
        out: &mut Outbox<E>,
        lost: impl Fn() -> E,
    ) -> (Vec<LinkNote>, Result<(), Error>) {
        let mut notes = Vec::new();
        let mut result = Ok(());
        while let Some(o) = self.channel.poll_output() {
            match o {
                Output::Event(e) => notes.push(self.note(now, e)),
                other => result = result.and(out.push(other.map_event(|_: ChannelEvent| lost()))),
            }
        }
        (notes, result)
    }

    /// What one channel event means. A close turns into `Lost` or `GaveUp` only through
    /// [`closed`](Self::closed), which the terminal calls knowing whether requests wait.
    fn note(&mut self, _now: Instant, e: ChannelEvent) -> LinkNote {
        match e {
            ChannelEvent::Established { .. } => {
                self.state = State::Open;
                self.failures = 0;
                LinkNote::Connected
            }
            ChannelEvent::Received { data, .. } => LinkNote::Received(data),
            ChannelEvent::Closed { .. } | ChannelEvent::Failed { .. } => LinkNote::Lost,
        }
    }

    /// The channel went down (`LinkNote::Lost` arrived): with `waiting` requests, retry
    /// later or give up; without, stay down until the next request.
    pub(crate) fn closed(&mut self, now: Instant, waiting: bool) -> LinkNote {
        if !waiting {
            self.state = State::Down;
            self.failures = 0;
            return LinkNote::Lost;
        }
        self.failures += 1;
        if self.failures > self.max_reconnects {
            self.state = State::Down;
            self.failures = 0;
            return LinkNote::GaveUp;
        }
        self.state = State::Retry {
            at: now + self.reconnect_delay,
        };
        LinkNote::Lost
    }

    /// Reconnect and send every waiting request again.
    pub(crate) fn reconnect<'a>(
        &mut self,
        now: Instant,
        waiting: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), Error> {
        self.channel.connect(now)?;
        // Open for sending from now on: the channel client queues until its handshake
        // completes, and a failure comes back as an event (counted in `failures`).
        self.state = State::Open;
        let mut result = Ok(());
        for bytes in waiting {
            result = result.and(self.channel.send(bytes));
        }
        result
    }

    /// Whether the link is up or connecting (a fire-and-forget message can go).
    pub(crate) fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// The channel client's own next timer.
    pub(crate) fn channel_timeout(&self) -> Option<Instant> {
        self.channel.poll_timeout()
    }

    /// When the link reconnects.
    pub(crate) fn reconnect_at(&self) -> Option<Instant> {
        match self.state {
            State::Retry { at } => Some(at),
            _ => None,
        }
    }

    /// The channel client's timers fire.
    pub(crate) fn handle_channel_timeout(&mut self, now: Instant) {
        self.channel.handle_timeout(now);
    }
}

/// One message from the server, decoded; `None` for a type this terminal does not know,
/// which is discarded and counted in `unknown` (S49's rule at the terminal's end).
pub(crate) fn decode_answer(bytes: &[u8], unknown: &mut u64) -> Result<Option<Message>, Error> {
    match Message::decode(bytes, &crate::wire::Limits::default()) {
        Ok(m) => Ok(Some(m)),
        Err(KeyxError::UnknownMessage(_)) => {
            *unknown += 1;
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

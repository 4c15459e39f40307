//! One channel connection on one stream: the plumbing every actor that runs the secure
//! channel over [`Input::StreamData`](crate::Input::StreamData) needs.

use alloc::vec::Vec;

use rand_core::CryptoRng;

use super::{ChannelError, Connection};
use crate::io::{Outbox, Output, StreamId};
use crate::{Error, Instant};

/// A [`Connection`] bound to the stream it runs on.
///
/// It writes the connection's bytes to the stream as [`Output::StreamSend`], hands back the
/// application messages received, and ends the stream ([`Output::StreamClose`], once) when
/// the connection fails or the peer closes it — answering the peer's close-notify with
/// ours first. [`SecureStream::feed`] hands the connection a large read in slices it can
/// take without overflowing its receive queue, so a fast peer is never cut off for sending
/// many small records at once.
///
/// The seed 000 proxy and remote node, the seed 002 server and devices, and the
/// [`ChannelClient`](super::ChannelClient)/[`ChannelServer`](super::ChannelServer) actors
/// are all built on it.
pub struct SecureStream {
    id: StreamId,
    conn: Connection,
    closed: bool,
    /// When the stream was set up: its activity until the peer sends something.
    opened: Instant,
}

impl core::fmt::Debug for SecureStream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SecureStream")
            .field("id", &self.id)
            .field("established", &self.conn.is_established())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl SecureStream {
    /// `conn` running on stream `id`, last active at `now`.
    pub fn new(id: StreamId, conn: Connection, now: Instant) -> Self {
        SecureStream {
            id,
            conn,
            closed: false,
            opened: now,
        }
    }

    /// The stream.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// When the peer last sent something other than a keepalive (or the stream was set
    /// up): [`Connection::last_activity`]. Keepalives are left out so that an idle
    /// timeout built on this still closes a stream nobody uses.
    pub fn last_activity(&self) -> Instant {
        self.opened.max(self.conn.last_activity())
    }

    /// Whether the stream is over: the connection failed, either side closed it, or the
    /// driver reported it gone.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Write the connection's bytes to the stream and collect the application messages
    /// received. A failed connection, or one the peer closed, ends the stream.
    ///
    /// A full outbox fails the pump, but only after the stream's end was still attempted
    /// and recorded: each refused output is counted as lost by the outbox
    /// ([`Output::Lost`]), and a stream that ended is [`SecureStream::is_closed`] either
    /// way, so nothing waits on it (a pump from a timer has no caller to retry).
    pub fn pump<E>(&mut self, outbox: &mut Outbox<E>) -> Result<Vec<Vec<u8>>, Error> {
        let mut result = self.flush(outbox);
        if !self.closed && (self.conn.error().is_some() || self.conn.peer_closed()) {
            if self.conn.peer_closed() && !self.conn.is_closing() {
                self.conn.close()?;
                result = result.and(self.flush(outbox));
            }
            self.closed = true;
            result = result.and(outbox.push(Output::StreamClose { id: self.id }));
        }
        result?;
        let mut received = Vec::new();
        while let Some(m) = self.conn.take_received() {
            received.push(m);
        }
        Ok(received)
    }

    fn flush<E>(&mut self, outbox: &mut Outbox<E>) -> Result<(), Error> {
        let bytes = self.conn.take_outgoing();
        if bytes.is_empty() || self.closed {
            return Ok(());
        }
        outbox.push(Output::StreamSend {
            id: self.id,
            data: bytes,
        })
    }

    /// Feed stream bytes and append the application messages they completed, in order,
    /// to `received`. Messages authenticated before a failure are appended too, so what
    /// the application gets does not depend on how the driver sliced its reads; the
    /// failure is returned after them.
    pub fn feed<E>(
        &mut self,
        now: Instant,
        data: &[u8],
        rng: &mut dyn CryptoRng,
        outbox: &mut Outbox<E>,
        received: &mut Vec<Vec<u8>>,
    ) -> Result<(), Error> {
        let step = self.conn.feed_chunk_len().max(1);
        for part in data.chunks(step) {
            let fed = self.conn.feed(now, part, rng);
            received.extend(self.pump(outbox)?);
            fed?;
        }
        Ok(())
    }

    /// [`SecureStream::feed`] with `Some(data)`; with `None`, just [`SecureStream::pump`]
    /// (after a timeout, or when the stream has just connected).
    pub fn feed_or_pump<E>(
        &mut self,
        now: Instant,
        data: Option<&[u8]>,
        rng: &mut dyn CryptoRng,
        outbox: &mut Outbox<E>,
        received: &mut Vec<Vec<u8>>,
    ) -> Result<(), Error> {
        match data {
            Some(data) => self.feed(now, data, rng, outbox, received),
            None => {
                received.extend(self.pump(outbox)?);
                Ok(())
            }
        }
    }

    /// Send one application message.
    pub fn send<E>(&mut self, message: &[u8], outbox: &mut Outbox<E>) -> Result<(), Error> {
        if self.closed {
            return Err(ChannelError::Closed.into());
        }
        self.conn.send(message)?;
        self.flush(outbox)
    }

    /// Send close-notify but keep the stream until the peer answers with its own (then
    /// [`SecureStream::pump`] ends it).
    pub fn close_notify<E>(&mut self, outbox: &mut Outbox<E>) -> Result<(), Error> {
        if self.closed {
            return Err(ChannelError::Closed.into());
        }
        self.conn.close()?;
        self.flush(outbox)
    }

    /// Close at once: close-notify (if the handshake finished), then end the stream.
    pub fn close<E>(&mut self, outbox: &mut Outbox<E>) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        // The stream ends whatever happens to the close-notify: a refused write is
        // counted as lost by the outbox and the close is still attempted.
        let notify = if self.conn.is_established() && !self.conn.is_closing() {
            self.conn.close()
        } else {
            Ok(())
        };
        let flushed = notify.and(self.flush(outbox));
        self.closed = true;
        flushed.and(outbox.push(Output::StreamClose { id: self.id }))
    }

    /// The driver reported the stream gone. Without the peer's close-notify first that is
    /// a truncation, returned as the error (and recorded in the connection).
    pub fn stream_closed(&mut self) -> Result<(), Error> {
        self.closed = true;
        self.conn.stream_closed()
    }

    /// Run the connection's timers (handshake, progress and keepalive deadlines; see
    /// [`Connection::handle_timeout`]) and write what they queued (a keepalive request,
    /// or the alert of a failure). Returns whether the connection just failed (its stream
    /// is then ended).
    pub fn handle_timeout<E>(
        &mut self,
        now: Instant,
        outbox: &mut Outbox<E>,
    ) -> Result<bool, Error> {
        if self.closed {
            return Ok(false);
        }
        if self.conn.handle_timeout(now).is_ok() {
            self.flush(outbox)?;
            return Ok(false);
        }
        self.pump(outbox)?;
        Ok(true)
    }

    /// When [`SecureStream::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            None
        } else {
            self.conn.poll_timeout()
        }
    }
}

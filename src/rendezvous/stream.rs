//! One secure-channel connection on one stream, as the rendezvous actors use it: every
//! channel message is one whole rendezvous wire message.

use alloc::vec::Vec;

use crate::channel::{ChannelError, Connection};
use crate::io::{Outbox, Output, StreamId};
use crate::{Error, Instant};

pub(crate) struct StreamConn {
    pub id: StreamId,
    pub conn: Connection,
    closed: bool,
    pub last_activity: Instant,
}

impl core::fmt::Debug for StreamConn {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StreamConn")
            .field("id", &self.id)
            .field("established", &self.conn.is_established())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl StreamConn {
    pub(crate) fn new(id: StreamId, conn: Connection, now: Instant) -> Self {
        StreamConn {
            id,
            conn,
            closed: false,
            last_activity: now,
        }
    }

    /// Whether the stream is over (failed, closed by either side).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Write the connection's bytes to the stream and collect the application messages
    /// received. A failed connection, or one the peer closed, ends the stream.
    pub(crate) fn pump(&mut self, outbox: &mut Outbox) -> Result<Vec<Vec<u8>>, Error> {
        let bytes = self.conn.take_outgoing();
        if !bytes.is_empty() && !self.closed {
            outbox.push(Output::StreamSend {
                id: self.id,
                data: bytes,
            })?;
        }
        let mut received = Vec::new();
        while let Some(m) = self.conn.take_received() {
            received.push(m);
        }
        if !self.closed && (self.conn.error().is_some() || self.conn.peer_closed()) {
            if self.conn.peer_closed() && !self.conn.is_closing() {
                self.conn.close()?;
                let bytes = self.conn.take_outgoing();
                outbox.push(Output::StreamSend {
                    id: self.id,
                    data: bytes,
                })?;
            }
            self.closed = true;
            outbox.push(Output::StreamClose { id: self.id })?;
        }
        Ok(received)
    }

    /// Feed stream bytes; returns the application messages they completed.
    pub(crate) fn feed(
        &mut self,
        now: Instant,
        data: &[u8],
        rng: &mut dyn rand_core::CryptoRng,
        outbox: &mut Outbox,
    ) -> Result<Vec<Vec<u8>>, Error> {
        self.last_activity = now;
        let fed = self.conn.feed(now, data, rng);
        let received = self.pump(outbox)?;
        fed.map(|()| received)
    }

    /// Send one message.
    pub(crate) fn send(&mut self, message: &[u8], outbox: &mut Outbox) -> Result<(), Error> {
        if self.closed {
            return Err(ChannelError::Closed.into());
        }
        self.conn.send(message)?;
        self.pump(outbox).map(|_| ())
    }

    /// Close gracefully: close-notify, then the stream.
    pub(crate) fn close(&mut self, outbox: &mut Outbox) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        if self.conn.is_established() && !self.conn.is_closing() {
            self.conn.close()?;
        }
        let bytes = self.conn.take_outgoing();
        if !bytes.is_empty() {
            outbox.push(Output::StreamSend {
                id: self.id,
                data: bytes,
            })?;
        }
        self.closed = true;
        outbox.push(Output::StreamClose { id: self.id })
    }

    /// The driver reported the stream gone.
    pub(crate) fn stream_closed(&mut self) {
        // A truncation is recorded in the connection; the stream is over either way.
        let _ = self.conn.stream_closed();
        self.closed = true;
    }

    /// Run the handshake deadline; returns whether the stream just failed.
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        outbox: &mut Outbox,
    ) -> Result<bool, Error> {
        if self.closed {
            return Ok(false);
        }
        if self.conn.handle_timeout(now).is_err() {
            self.pump(outbox)?;
            return Ok(true);
        }
        Ok(false)
    }
}

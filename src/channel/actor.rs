//! Ready-made actors that run [`Connection`]s over streams.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::{ChannelError, ChannelEvent, ClientConfig, Connection, ServerConfig};
use crate::io::{Actor, Input, Outbox, Output, StreamId};
use crate::{Error, Instant, Rng};

/// One connection on one stream, and what the application has been told about it.
struct Session {
    stream: StreamId,
    conn: Connection,
    announced: bool,
    finished: bool,
}

impl Session {
    fn new(stream: StreamId, conn: Connection) -> Self {
        Session {
            stream,
            conn,
            announced: false,
            finished: false,
        }
    }

    /// Move the connection's output to the outbox: bytes to write, then events.
    fn pump(&mut self, outbox: &mut Outbox) -> Result<(), Error> {
        let bytes = self.conn.take_outgoing();
        if !bytes.is_empty() {
            outbox.push(Output::StreamSend {
                id: self.stream,
                data: bytes,
            })?;
        }
        if self.conn.is_established() && !self.announced {
            self.announced = true;
            outbox.event(ChannelEvent::Established {
                stream: self.stream,
                peer: self.conn.peer().clone(),
                suite: self
                    .conn
                    .suite()
                    .ok_or(Error::Unexpected("established without a suite"))?,
                session: self.conn.session_id(),
            })?;
        }
        while let Some(data) = self.conn.take_received() {
            outbox.event(ChannelEvent::Received {
                stream: self.stream,
                data,
            })?;
        }
        if self.finished {
            return Ok(());
        }
        if let Some(error) = self.conn.error() {
            self.finished = true;
            outbox.event(ChannelEvent::Failed {
                stream: self.stream,
                error: error.clone(),
            })?;
            outbox.push(Output::StreamClose { id: self.stream })?;
        } else if self.conn.peer_closed() {
            // Answer close-notify with ours, then end the stream.
            self.finished = true;
            if !self.conn.is_closing() {
                self.conn.close()?;
                let bytes = self.conn.take_outgoing();
                outbox.push(Output::StreamSend {
                    id: self.stream,
                    data: bytes,
                })?;
            }
            outbox.event(ChannelEvent::Closed {
                stream: self.stream,
            })?;
            outbox.push(Output::StreamClose { id: self.stream })?;
        }
        Ok(())
    }

    /// Feed the connection in slices it can take without overflowing its receive queue,
    /// draining it after each: a driver may hand over many records in one read.
    fn feed(
        &mut self,
        now: Instant,
        data: &[u8],
        rng: &mut Rng,
        outbox: &mut Outbox,
    ) -> Result<(), Error> {
        let step = self.conn.feed_chunk_len();
        let mut rest = data;
        loop {
            let (part, tail) = rest.split_at(rest.len().min(step));
            let fed = self.conn.feed(now, part, rng.as_mut());
            self.pump(outbox)?;
            fed?;
            rest = tail;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// The stream is gone: graceful if close-notify came first, otherwise a truncation.
    fn stream_closed(&mut self, outbox: &mut Outbox) -> Result<(), Error> {
        let result = self.conn.stream_closed();
        if !self.finished {
            self.finished = true;
            match self.conn.error() {
                Some(error) => outbox.event(ChannelEvent::Failed {
                    stream: self.stream,
                    error: error.clone(),
                })?,
                None => outbox.event(ChannelEvent::Closed {
                    stream: self.stream,
                })?,
            }
        }
        result
    }
}

/// A secure-channel client: opens a stream to the server and runs a [`Connection`] on it.
///
/// Messages sent before the handshake completes wait (at most
/// [`ChannelClient::MAX_PENDING`]) and go out as soon as it does.
///
/// ```
/// use deputy::channel::{ChannelClient, ClientConfig, Psk};
/// use deputy::{Actor, Instant, Output, UnixTime};
/// use rand_chacha::ChaCha20Rng;
/// use rand_core::SeedableRng;
///
/// let psk = Psk::new("sensor-7", &[0x42; 32]).unwrap();
/// let config = ClientConfig::with_psk(psk, UnixTime(1_800_000_000));
/// let mut client = ChannelClient::new(
///     config.into(),
///     "10.0.0.7:0".parse().unwrap(),
///     "198.51.100.1:443".parse().unwrap(),
///     Box::new(ChaCha20Rng::seed_from_u64(1)),
/// );
/// client.connect(Instant::ZERO).unwrap();
/// assert!(matches!(client.poll_output(), Some(Output::Connect { .. })));
/// ```
pub struct ChannelClient {
    config: Arc<ClientConfig>,
    local: SocketAddr,
    server: SocketAddr,
    rng: Rng,
    next_stream: u64,
    session: Option<Session>,
    pending: VecDeque<Vec<u8>>,
    outbox: Outbox,
}

impl core::fmt::Debug for ChannelClient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChannelClient")
            .field("server", &self.server)
            .field("connection", &self.session.as_ref().map(|s| &s.conn))
            .finish_non_exhaustive()
    }
}

impl ChannelClient {
    /// The most messages queued before the handshake completes.
    pub const MAX_PENDING: usize = 16;

    /// A client that will connect from `local` (port 0: any) to `server`.
    pub fn new(config: Arc<ClientConfig>, local: SocketAddr, server: SocketAddr, rng: Rng) -> Self {
        ChannelClient {
            config,
            local,
            server,
            rng,
            next_stream: 0,
            session: None,
            pending: VecDeque::new(),
            outbox: Outbox::default(),
        }
    }

    /// Open a stream to the server; the handshake starts when it connects. Replaces any
    /// earlier connection.
    pub fn connect(&mut self, _now: Instant) -> Result<StreamId, Error> {
        if let Some(old) = self.session.take() {
            self.outbox.push(Output::StreamClose { id: old.stream })?;
        }
        self.next_stream += 1;
        let id = StreamId::outbound(self.next_stream);
        self.outbox.push(Output::Connect {
            id,
            local: self.local,
            remote: self.server,
        })?;
        Ok(id)
    }

    /// Send one application message (queued until the handshake completes).
    pub fn send(&mut self, data: &[u8]) -> Result<(), Error> {
        match self.session.as_mut() {
            Some(s) if s.conn.is_established() => {
                s.conn.send(data)?;
                s.pump(&mut self.outbox)
            }
            _ if self.pending.len() >= Self::MAX_PENDING => Err(Error::CapacityExceeded {
                what: "channel client pending messages",
                bound: Self::MAX_PENDING,
            }),
            _ => {
                let max = self.config.common.max_record_len;
                if data.len() > max {
                    return Err(ChannelError::RecordTooLarge {
                        len: data.len(),
                        max,
                    }
                    .into());
                }
                self.pending.push_back(data.to_vec());
                Ok(())
            }
        }
    }

    /// Close gracefully (close-notify).
    pub fn close(&mut self) -> Result<(), Error> {
        let s = self.session.as_mut().ok_or(ChannelError::NotEstablished)?;
        s.conn.close()?;
        s.pump(&mut self.outbox)
    }

    /// The current connection, if a stream is open.
    pub fn connection(&self) -> Option<&Connection> {
        self.session.as_ref().map(|s| &s.conn)
    }

    fn flush_pending(&mut self) -> Result<(), Error> {
        if let Some(s) = self.session.as_mut().filter(|s| s.conn.is_established()) {
            while let Some(data) = self.pending.pop_front() {
                s.conn.send(&data)?;
            }
            s.pump(&mut self.outbox)?;
        }
        Ok(())
    }
}

impl Actor for ChannelClient {
    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::StreamConnected { id, .. } if id == StreamId::outbound(self.next_stream) => {
                let conn = Connection::client(self.config.clone(), now, self.rng.as_mut())?;
                let mut session = Session::new(id, conn);
                session.pump(&mut self.outbox)?;
                self.session = Some(session);
                Ok(())
            }
            Input::StreamData { id, data } => {
                let session = self
                    .session
                    .as_mut()
                    .filter(|s| s.stream == id)
                    .ok_or(Error::UnknownStream(id))?;
                session.feed(now, data, &mut self.rng, &mut self.outbox)?;
                self.flush_pending()
            }
            Input::StreamClosed { id } => {
                if id == StreamId::outbound(self.next_stream) && self.session.is_none() {
                    // The connect itself failed.
                    return Err(Error::Unexpected("connection to the server failed"));
                }
                let mut session = self
                    .session
                    .take_if(|s| s.stream == id)
                    .ok_or(Error::UnknownStream(id))?;
                session.stream_closed(&mut self.outbox)
            }
            Input::StreamAccepted { id, .. } => {
                self.outbox.push(Output::StreamClose { id })?;
                Err(Error::Unexpected("a channel client accepts no streams"))
            }
            Input::StreamConnected { id, .. } => Err(Error::UnknownStream(id)),
            Input::Datagram { .. } | Input::Packet { .. } => Err(Error::Unexpected(
                "a channel client takes only stream input",
            )),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(s) = self.session.as_mut()
            && s.conn.handle_timeout(now).is_err()
        {
            // The failure is reported as an event by pump; an outbox overflow here has
            // nowhere better to go than the next call's error.
            let _ = s.pump(&mut self.outbox);
        }
    }

    fn poll_output(&mut self) -> Option<Output> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.session.as_ref().and_then(|s| s.conn.poll_timeout())
    }
}

/// Configuration of a [`ChannelServer`].
#[derive(Debug, Clone)]
pub struct ChannelServerConfig {
    /// The channel configuration shared by every connection.
    pub channel: Arc<ServerConfig>,
    /// The most concurrent connections; more are closed at once.
    pub max_sessions: usize,
}

/// A secure-channel server: runs one [`Connection`] per accepted stream.
pub struct ChannelServer {
    config: ChannelServerConfig,
    rng: Rng,
    sessions: BTreeMap<StreamId, Session>,
    outbox: Outbox,
}

impl core::fmt::Debug for ChannelServer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChannelServer")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl ChannelServer {
    /// A server with no connections yet.
    pub fn new(config: ChannelServerConfig, rng: Rng) -> Self {
        ChannelServer {
            config,
            rng,
            sessions: BTreeMap::new(),
            outbox: Outbox::default(),
        }
    }

    /// Send one application message on `stream`.
    pub fn send(&mut self, stream: StreamId, data: &[u8]) -> Result<(), Error> {
        self.on_session(stream, |s, _, _| s.conn.send(data))
    }

    /// Close `stream` gracefully.
    pub fn close(&mut self, stream: StreamId) -> Result<(), Error> {
        self.on_session(stream, |s, _, _| s.conn.close())
    }

    /// Run `f` on the session of `stream`, then move its output to the outbox and forget
    /// it if it failed or closed: the application was told, the stream close is queued,
    /// and the driver reports nothing more for a stream we closed.
    fn on_session(
        &mut self,
        stream: StreamId,
        f: impl FnOnce(&mut Session, &mut Rng, &mut Outbox) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let s = self
            .sessions
            .get_mut(&stream)
            .ok_or(Error::UnknownStream(stream))?;
        let result = f(s, &mut self.rng, &mut self.outbox);
        let pumped = s.pump(&mut self.outbox);
        if s.finished {
            self.sessions.remove(&stream);
        }
        result.and(pumped)
    }

    /// The connection on `stream`.
    pub fn connection(&self, stream: StreamId) -> Option<&Connection> {
        self.sessions.get(&stream).map(|s| &s.conn)
    }

    /// Number of open connections.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

impl Actor for ChannelServer {
    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::StreamAccepted { id, .. } => {
                if self.sessions.len() >= self.config.max_sessions {
                    self.outbox.push(Output::StreamClose { id })?;
                    return Err(Error::CapacityExceeded {
                        what: "channel server sessions",
                        bound: self.config.max_sessions,
                    });
                }
                let conn = Connection::server(self.config.channel.clone(), now);
                self.sessions.insert(id, Session::new(id, conn));
                Ok(())
            }
            Input::StreamData { id, data } => {
                self.on_session(id, |s, rng, outbox| s.feed(now, data, rng, outbox))
            }
            Input::StreamClosed { id } => {
                let mut s = self.sessions.remove(&id).ok_or(Error::UnknownStream(id))?;
                s.stream_closed(&mut self.outbox)
            }
            Input::StreamConnected { id, .. } => Err(Error::UnknownStream(id)),
            Input::Datagram { .. } | Input::Packet { .. } => Err(Error::Unexpected(
                "a channel server takes only stream input",
            )),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        for s in self.sessions.values_mut() {
            if s.conn.handle_timeout(now).is_err() {
                let _ = s.pump(&mut self.outbox);
            }
        }
        self.sessions.retain(|_, s| !s.finished);
    }

    fn poll_output(&mut self) -> Option<Output> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|s| s.conn.poll_timeout())
            .min()
    }
}

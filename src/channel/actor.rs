//! Ready-made actors that run [`Connection`]s over streams.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::{ChannelError, ChannelEvent, ClientConfig, Connection, SecureStream, ServerConfig};
use crate::io::{Actor, Input, Outbox, Output, StreamId};
use crate::{Error, Instant, Rng};

/// A [`SecureStream`] and what the application has been told about it.
struct Session {
    inner: SecureStream,
    announced: bool,
    reported: bool,
}

impl Session {
    fn new(stream: StreamId, conn: Connection, now: Instant) -> Self {
        Session {
            inner: SecureStream::new(stream, conn, now),
            announced: false,
            reported: false,
        }
    }

    fn conn(&self) -> &Connection {
        self.inner.connection()
    }

    /// Whether the application has heard the end (failure or close).
    fn finished(&self) -> bool {
        self.reported
    }

    /// Tell the application: established (once), each message, then the end (once).
    fn report(
        &mut self,
        received: Vec<Vec<u8>>,
        outbox: &mut Outbox<ChannelEvent>,
    ) -> Result<(), Error> {
        let stream = self.inner.id();
        let conn = self.inner.connection();
        if conn.is_established() && !self.announced {
            self.announced = true;
            outbox.event(ChannelEvent::Established {
                stream,
                peer: conn.peer().clone(),
                suite: conn
                    .suite()
                    .ok_or(Error::Unexpected("established without a suite"))?,
                session: conn.session_id(),
            })?;
        }
        for data in received {
            outbox.event(ChannelEvent::Received { stream, data })?;
        }
        if self.inner.is_closed() && !self.reported {
            self.reported = true;
            match conn.error() {
                Some(error) => outbox.event(ChannelEvent::Failed {
                    stream,
                    error: error.clone(),
                })?,
                None => outbox.event(ChannelEvent::Closed { stream })?,
            }
        }
        Ok(())
    }

    fn pump(&mut self, outbox: &mut Outbox<ChannelEvent>) -> Result<(), Error> {
        let received = self.inner.pump(outbox)?;
        self.report(received, outbox)
    }

    fn feed(
        &mut self,
        now: Instant,
        data: &[u8],
        rng: &mut Rng,
        outbox: &mut Outbox<ChannelEvent>,
    ) -> Result<(), Error> {
        let mut received = Vec::new();
        let fed = self
            .inner
            .feed(now, data, rng.as_mut(), outbox, &mut received);
        self.report(received, outbox)?;
        fed
    }

    /// The stream is gone: graceful if close-notify came first, otherwise a truncation.
    fn stream_closed(&mut self, outbox: &mut Outbox<ChannelEvent>) -> Result<(), Error> {
        let result = self.inner.stream_closed();
        self.report(Vec::new(), outbox)?;
        result
    }

    fn handle_timeout(
        &mut self,
        now: Instant,
        outbox: &mut Outbox<ChannelEvent>,
    ) -> Result<(), Error> {
        if self.inner.handle_timeout(now, outbox)? {
            self.report(Vec::new(), outbox)?;
        }
        Ok(())
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
    outbox: Outbox<ChannelEvent>,
}

impl core::fmt::Debug for ChannelClient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChannelClient")
            .field("server", &self.server)
            .field("connection", &self.session.as_ref().map(Session::conn))
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
        if let Some(mut old) = self.session.take() {
            old.inner.close(&mut self.outbox)?;
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
            Some(s) if s.conn().is_established() => {
                s.inner.send(data, &mut self.outbox)?;
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
        s.inner.close_notify(&mut self.outbox)?;
        s.pump(&mut self.outbox)
    }

    /// The current connection, if a stream is open.
    pub fn connection(&self) -> Option<&Connection> {
        self.session.as_ref().map(Session::conn)
    }

    fn flush_pending(&mut self) -> Result<(), Error> {
        if let Some(s) = self.session.as_mut().filter(|s| s.conn().is_established()) {
            while let Some(data) = self.pending.pop_front() {
                s.inner.send(&data, &mut self.outbox)?;
            }
            s.pump(&mut self.outbox)?;
        }
        Ok(())
    }
}

impl Actor for ChannelClient {
    type Event = ChannelEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::StreamConnected { id, .. } if id == StreamId::outbound(self.next_stream) => {
                let conn = Connection::client(self.config.clone(), now, self.rng.as_mut())?;
                let mut session = Session::new(id, conn, now);
                session.pump(&mut self.outbox)?;
                self.session = Some(session);
                Ok(())
            }
            Input::StreamData { id, data } => {
                let session = self
                    .session
                    .as_mut()
                    .filter(|s| s.inner.id() == id)
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
                    .take_if(|s| s.inner.id() == id)
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
        if let Some(s) = self.session.as_mut() {
            // The failure is reported as an event; an outbox overflow here has nowhere
            // better to go than the next call's error.
            let _ = s.handle_timeout(now, &mut self.outbox);
        }
    }

    fn poll_output(&mut self) -> Option<Output<ChannelEvent>> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.session.as_ref().and_then(|s| s.inner.poll_timeout())
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
    outbox: Outbox<ChannelEvent>,
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
        self.on_session(stream, |s, _, outbox| s.inner.send(data, outbox))
    }

    /// Close `stream` gracefully.
    pub fn close(&mut self, stream: StreamId) -> Result<(), Error> {
        self.on_session(stream, |s, _, outbox| s.inner.close_notify(outbox))
    }

    /// Run `f` on the session of `stream`, then move its output to the outbox and forget
    /// it if it failed or closed: the application was told, the stream close is queued,
    /// and the driver reports nothing more for a stream we closed.
    fn on_session(
        &mut self,
        stream: StreamId,
        f: impl FnOnce(&mut Session, &mut Rng, &mut Outbox<ChannelEvent>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let s = self
            .sessions
            .get_mut(&stream)
            .ok_or(Error::UnknownStream(stream))?;
        let result = f(s, &mut self.rng, &mut self.outbox);
        let pumped = s.pump(&mut self.outbox);
        if s.finished() {
            self.sessions.remove(&stream);
        }
        result.and(pumped)
    }

    /// The connection on `stream`.
    pub fn connection(&self, stream: StreamId) -> Option<&Connection> {
        self.sessions.get(&stream).map(Session::conn)
    }

    /// Number of open connections.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

impl Actor for ChannelServer {
    type Event = ChannelEvent;

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
                self.sessions.insert(id, Session::new(id, conn, now));
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
            let _ = s.handle_timeout(now, &mut self.outbox);
        }
        self.sessions.retain(|_, s| !s.finished());
    }

    fn poll_output(&mut self) -> Option<Output<ChannelEvent>> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|s| s.inner.poll_timeout())
            .min()
    }
}

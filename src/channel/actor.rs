//! Ready-made actors that run [`Connection`]s over streams.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::{ChannelError, ChannelEvent, ClientConfig, Connection, SecureStream, ServerConfig};
use crate::io::{Actor, Input, Outbox, Output, StreamId};
use crate::{Error, Instant, Rng};

/// The channel client's timers. Each actor lists its timers in one place (`timers`), which
/// both `poll_timeout` and `handle_timeout` read, so the two cannot disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Client: the stream asked for must have opened (within the handshake timeout,
    /// which counts from the connect).
    Connect(StreamId),
    /// The connection on this stream has a deadline (its [`SecureStream::poll_timeout`]:
    /// handshake, progress of a partial message, keepalive).
    Channel(StreamId),
}

/// Why a timer's error may be dropped: the connection's failure itself is reported as a
/// [`ChannelEvent::Failed`]; what can still go wrong is queuing that event or the stream
/// close in a full outbox, and `Actor::handle_timeout` has no caller to return it to. The
/// outbox is full only if the driver broke the polling rules (drain after every call).
fn timer_error_has_nowhere_to_go(_: Result<(), Error>) {}

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
    ///
    /// Every event is attempted even after one was refused by a full outbox (which counts
    /// each refusal as lost), and each is marked told before it is queued: an event is
    /// then either delivered or reported lost, never raised twice.
    fn report(
        &mut self,
        received: Vec<Vec<u8>>,
        outbox: &mut Outbox<ChannelEvent>,
    ) -> Result<(), Error> {
        let stream = self.inner.id();
        let conn = self.inner.connection();
        let mut result = Ok(());
        // The suite is set with the server hello, before any state that is established.
        if let (false, true, Some(suite)) = (self.announced, conn.is_established(), conn.suite()) {
            self.announced = true;
            result = result.and(outbox.event(ChannelEvent::Established {
                stream,
                peer: conn.peer().clone(),
                suite,
                session: conn.session_id(),
            }));
        }
        for data in received {
            result = result.and(outbox.event(ChannelEvent::Received { stream, data }));
        }
        if self.inner.is_closed() && !self.reported {
            self.reported = true;
            let end = match conn.error() {
                Some(error) => ChannelEvent::Failed {
                    stream,
                    error: error.clone(),
                },
                None => ChannelEvent::Closed { stream },
            };
            result = result.and(outbox.event(end));
        }
        result
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

    /// Run the stream's timers and tell the application how it ended, if it did. The
    /// report is attempted even when queuing the stream's last bytes failed: from a timer
    /// no caller can retry, and the outbox counts whatever it refuses.
    fn on_timer(&mut self, now: Instant, outbox: &mut Outbox<ChannelEvent>) -> Result<(), Error> {
        let fired = self.inner.handle_timeout(now, outbox);
        let reported = self.report(Vec::new(), outbox);
        fired.and(reported).map(|_| ())
    }
}

/// Where a [`ChannelClient`]'s stream stands.
#[expect(
    clippy::large_enum_variant,
    reason = "one per client, mostly `Open`: boxing the session would add an allocation for nothing"
)]
enum Link {
    /// No stream asked for yet, or the last connect failed.
    Idle,
    /// [`ChannelClient::connect`] asked for stream `StreamId::outbound(next_stream)` at
    /// `since`; the driver has not reported it connected.
    Connecting { since: Instant },
    /// The stream is up and a connection runs on it.
    Open(Session),
}

impl Link {
    fn session(&self) -> Option<&Session> {
        match self {
            Link::Open(s) => Some(s),
            Link::Idle | Link::Connecting { .. } => None,
        }
    }

    fn session_mut(&mut self) -> Option<&mut Session> {
        match self {
            Link::Open(s) => Some(s),
            Link::Idle | Link::Connecting { .. } => None,
        }
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
    link: Link,
    pending: VecDeque<Vec<u8>>,
    outbox: Outbox<ChannelEvent>,
}

impl core::fmt::Debug for ChannelClient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChannelClient")
            .field("server", &self.server)
            .field("connection", &self.connection())
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
            link: Link::Idle,
            pending: VecDeque::new(),
            outbox: Outbox::default(),
        }
    }

    /// Open a stream to the server; the handshake starts when it connects. Replaces any
    /// earlier connection.
    ///
    /// `now` starts the handshake clock: [`Common::handshake_timeout`] counts from the
    /// connect, so the time the stream takes to open is part of the handshake's budget,
    /// as it is for the application waiting on it. A stream that has not opened by then
    /// is given up ([`Output::StreamClose`]) and reported as
    /// [`ChannelEvent::Failed`] with [`ChannelError::ConnectTimeout`].
    ///
    /// [`Common::handshake_timeout`]: super::Common::handshake_timeout
    pub fn connect(&mut self, now: Instant) -> Result<StreamId, Error> {
        if let Link::Open(mut old) = core::mem::replace(&mut self.link, Link::Idle) {
            old.inner.close(&mut self.outbox)?;
        }
        self.next_stream += 1;
        let id = StreamId::outbound(self.next_stream);
        self.outbox.push(Output::Connect {
            id,
            local: self.local,
            remote: self.server,
        })?;
        self.link = Link::Connecting { since: now };
        Ok(id)
    }

    /// This actor's timers (see [`Timer`]): at most one, for the one stream.
    fn timers(&self) -> Option<(Timer, Instant)> {
        match &self.link {
            Link::Idle => None,
            Link::Connecting { since } => Some((
                Timer::Connect(self.stream()),
                *since + self.config.common.handshake_timeout,
            )),
            Link::Open(s) => Some((Timer::Channel(s.inner.id()), s.inner.poll_timeout()?)),
        }
    }

    /// The stream asked for last.
    fn stream(&self) -> StreamId {
        StreamId::outbound(self.next_stream)
    }

    /// The stream asked for did not open (`error` says how): the link goes idle and the
    /// application hears it as a failure of that stream.
    fn connect_failed(&mut self, error: ChannelError) -> Result<(), Error> {
        self.link = Link::Idle;
        self.outbox.event(ChannelEvent::Failed {
            stream: self.stream(),
            error,
        })
    }

    /// Send one application message (queued until the handshake completes).
    ///
    /// Takes no `now`, unlike the other actors' commands: it only queues records, and the
    /// connection's deadlines are read from its state by `poll_timeout` (kept so while
    /// `keyx` builds on it; docs/architecture.md, "API conventions").
    pub fn send(&mut self, data: &[u8]) -> Result<(), Error> {
        match self.link.session_mut() {
            Some(s) if s.conn().is_established() => {
                s.inner.send(data, &mut self.outbox)?;
                s.pump(&mut self.outbox)
            }
            // Bounded, and each message checked against the record bound now rather than
            // when the handshake completes, so `send` refuses what could never go out.
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

    /// Close gracefully (close-notify). Takes no `now`, as [`ChannelClient::send`].
    pub fn close(&mut self) -> Result<(), Error> {
        let Link::Open(s) = &mut self.link else {
            return Err(ChannelError::NotEstablished.into());
        };
        s.inner.close_notify(&mut self.outbox)?;
        s.pump(&mut self.outbox)
    }

    /// The current connection, if a stream is open.
    pub fn connection(&self) -> Option<&Connection> {
        self.link.session().map(Session::conn)
    }

    fn flush_pending(&mut self) -> Result<(), Error> {
        if let Link::Open(s) = &mut self.link
            && s.conn().is_established()
        {
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
            Input::StreamConnected { id, .. } if id == self.stream() => {
                // Only the stream we wait for: one given up on (connect timeout) stays
                // unknown even if a driver reports it after our close.
                let Link::Connecting { since } = self.link else {
                    return Err(Error::UnknownStream(id));
                };
                let mut conn = Connection::client(self.config.clone(), now, self.rng.as_mut())?;
                conn.start_handshake_clock(since);
                let mut session = Session::new(id, conn, now);
                session.pump(&mut self.outbox)?;
                self.link = Link::Open(session);
                Ok(())
            }
            Input::StreamData { id, data } => {
                let session = self
                    .link
                    .session_mut()
                    .filter(|s| s.inner.id() == id)
                    .ok_or(Error::UnknownStream(id))?;
                session.feed(now, data, &mut self.rng, &mut self.outbox)?;
                self.flush_pending()
            }
            Input::StreamClosed { id } => match core::mem::replace(&mut self.link, Link::Idle) {
                Link::Open(mut session) if session.inner.id() == id => {
                    session.stream_closed(&mut self.outbox)
                }
                // The connect itself failed (the link stays idle).
                Link::Connecting { .. } if id == self.stream() => {
                    self.connect_failed(ChannelError::ConnectFailed)?;
                    Err(ChannelError::ConnectFailed.into())
                }
                other => {
                    self.link = other;
                    Err(Error::UnknownStream(id))
                }
            },
            Input::StreamAccepted { id, .. } => {
                self.outbox.push(Output::StreamClose { id })?;
                Err(ChannelError::UnexpectedStreamAccepted.into())
            }
            Input::StreamConnected { id, .. } => Err(Error::UnknownStream(id)),
            Input::Datagram { .. } | Input::Packet { .. } => {
                Err(ChannelError::NotStreamInput.into())
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        for timer in crate::time::due(self.timers(), now) {
            match timer {
                Timer::Connect(id) => {
                    // Tell the driver to drop the connect it still runs; it reports nothing
                    // more for a stream we closed.
                    timer_error_has_nowhere_to_go(
                        self.outbox
                            .push(Output::StreamClose { id })
                            .and_then(|()| self.connect_failed(ChannelError::ConnectTimeout)),
                    );
                }
                Timer::Channel(_) => {
                    if let Link::Open(s) = &mut self.link {
                        timer_error_has_nowhere_to_go(s.on_timer(now, &mut self.outbox));
                    }
                }
            }
        }
    }

    fn poll_output(&mut self) -> Option<Output<ChannelEvent>> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers().map(|(_, at)| at)
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

/// The channel server's timers (it opens no streams, so it has no connect timer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerTimer {
    /// The connection on this stream has a deadline (see [`Timer::Channel`]).
    Channel(StreamId),
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

    /// Send one application message on `stream`. Takes no `now`, as
    /// [`ChannelClient::send`].
    pub fn send(&mut self, stream: StreamId, data: &[u8]) -> Result<(), Error> {
        self.on_session(stream, |s, _, outbox| s.inner.send(data, outbox))
    }

    /// Close `stream` gracefully. Takes no `now`, as [`ChannelClient::send`].
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

    /// This actor's timers (see [`ServerTimer`]): one per connection with a deadline.
    fn timers(&self) -> impl Iterator<Item = (ServerTimer, Instant)> + '_ {
        self.sessions.iter().filter_map(|(&id, s)| {
            s.inner
                .poll_timeout()
                .map(|at| (ServerTimer::Channel(id), at))
        })
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
            Input::Datagram { .. } | Input::Packet { .. } => {
                Err(ChannelError::NotStreamInput.into())
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        for ServerTimer::Channel(id) in crate::time::due(self.timers(), now) {
            if let Some(s) = self.sessions.get_mut(&id) {
                timer_error_has_nowhere_to_go(s.on_timer(now, &mut self.outbox));
            }
        }
        // A session that failed on its timer has been reported; forget it, as
        // `on_session` does after a command.
        self.sessions.retain(|_, s| !s.finished());
    }

    fn poll_output(&mut self) -> Option<Output<ChannelEvent>> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        crate::time::earliest(self.timers())
    }
}

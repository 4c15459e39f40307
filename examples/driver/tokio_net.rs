//! One deputy actor on real sockets with tokio: UDP sockets, TCP listeners and streams,
//! and one timer, all driven from one task by the contract's polling rules
//! (`src/io.rs`): after every input, timeout or command drain `poll_output` and carry out
//! each output, then arm the one timer `poll_timeout` asks for.
//!
//! ```text
//!   UDP recv tasks ─┐                                          ┌─▶ non-blocking send_to
//!   accept tasks ───┼─▶ bounded queue ─▶ Net::run ─▶ actor ─▶──┼─▶ per-stream writer task
//!   stream readers ─┘     (NetEvent)     select! on the queue, └─▶ connect task
//!                                        the actor's timer, a give-up deadline
//! ```
//!
//! The application may also feed the loop commands of its own (`Net::run_with_commands`:
//! lines read from stdin, periodic ticks), taken between inputs like the rest.
//!
//! Socket reads happen in small tasks that only forward bytes; the actor itself is touched
//! by one task only, so it needs no lock. Writes never block the loop: datagrams go out
//! with a non-blocking `send_to` (a full socket buffer drops the datagram, as the network
//! could),
//! stream bytes go to the stream's writer task through a bounded queue (a peer that stops
//! reading for that long has its stream closed and the actor told).
//!
//! Stream ids: streams this loop accepts get `StreamId::inbound(n)`; streams the actor
//! opens keep the actor's `StreamId::outbound` id. As the contract says, a stream the
//! actor closed itself is never reported closed to it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use deputy::{Actor, Input, Instant, Output, StreamId, Transmit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::common::{Clock, DriverError, Flow, log, warn};

/// Inputs waiting for the loop, at most; readers wait (TCP) or the kernel drops (UDP)
/// beyond it.
const QUEUE: usize = 256;
/// Writes waiting for one stream's writer task, at most.
const WRITE_QUEUE: usize = 1024;
/// Streams open at once, at most; more accepted connections are closed at once.
const MAX_STREAMS: usize = 1024;
/// UDP sockets at most: the actor's own plus those it sends from later (the rendezvous
/// devices' hole-punching "birthday" sockets, 512 by default).
const MAX_UDP_SOCKETS: usize = 1024;
/// A connect that takes longer fails (reported as the stream closed).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After the actor closed a stream, how long its reader still drains what the peer sends:
/// closing a socket with unread bytes would reset the connection and could destroy the
/// last bytes we sent.
const LINGER: Duration = Duration::from_secs(5);
/// After the application said stop, how long the loop still runs so that what is under
/// way (retransmissions, acknowledgments, a stream's last bytes) goes out.
const STOP_GRACE: Duration = Duration::from_millis(500);
/// The largest datagram read.
const MAX_DATAGRAM: usize = 65_535;

/// Bind a TCP listener before the actor is built (its configuration may need the port):
/// the listener and the address it got.
pub async fn bind_tcp(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), DriverError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(DriverError::socket(format!("cannot listen on TCP {addr}")))?;
    let local = listener
        .local_addr()
        .map_err(DriverError::socket(format!("TCP listener {addr}")))?;
    Ok((listener, local))
}

/// Something the socket tasks saw.
enum NetEvent {
    Datagram {
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    },
    Accepted {
        stream: TcpStream,
        local: SocketAddr,
        remote: SocketAddr,
    },
    Connected {
        id: StreamId,
        local: SocketAddr,
    },
    Data {
        id: StreamId,
        data: Vec<u8>,
    },
    Closed {
        id: StreamId,
    },
}

/// An actor and its sockets.
pub struct Net<A: Actor> {
    /// The actor. Commands may be given between calls; [`Net::command`] drains after one.
    pub actor: A,
    clock: Clock,
    who: &'static str,
    udp: HashMap<SocketAddr, Arc<std::net::UdpSocket>>,
    streams: HashMap<StreamId, mpsc::Sender<Vec<u8>>>,
    tx: mpsc::Sender<NetEvent>,
    rx: mpsc::Receiver<NetEvent>,
    next_inbound: u64,
    stop: Option<(u8, tokio::time::Instant)>,
}

impl<A: Actor> Net<A>
where
    A::Event: std::fmt::Debug,
{
    /// `actor`, logging as `who`, on `clock` (the one its configuration's time anchor
    /// came from).
    pub fn new(actor: A, clock: Clock, who: &'static str) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Net {
            actor,
            clock,
            who,
            udp: HashMap::new(),
            streams: HashMap::new(),
            tx,
            rx,
            next_inbound: 0,
            stop: None,
        }
    }

    /// Serve datagrams on `socket` (bound to `local`): what arrives is the actor's input,
    /// and outputs sent from `local` leave through it.
    pub fn add_udp(
        &mut self,
        (socket, local): (std::net::UdpSocket, SocketAddr),
    ) -> Result<(), DriverError> {
        let sender = udp_sender(socket, local, self.tx.clone())
            .map_err(DriverError::socket(format!("UDP socket {local}")))?;
        self.udp.insert(local, sender);
        Ok(())
    }

    /// Accept streams on `listener` (bound to `local`): each is the actor's
    /// `StreamAccepted`.
    pub fn add_listener(&mut self, (listener, local): (TcpListener, SocketAddr)) {
        tokio::spawn(accept(listener, local, self.tx.clone()));
    }

    /// The clock the loop runs on.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Give the actor a command (`connect`, `send` …) with the current time. The outputs
    /// it queues are carried out by the next [`Net::run`].
    pub fn command<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut A, Instant) -> Result<T, deputy::Error>,
    ) -> Result<T, DriverError> {
        let now = self.clock.now();
        f(&mut self.actor, now).map_err(DriverError::deputy(what))
    }

    /// Run until `on_event` says stop (then the stop code, after a short grace period) or
    /// `limit` passes (an error). `on_event` sees each event after it is logged, with the
    /// actor, to answer with commands; the loop drains what they queue.
    pub async fn run(
        &mut self,
        limit: Option<Duration>,
        on_event: impl FnMut(&mut A, Instant, A::Event) -> Result<Flow, DriverError>,
    ) -> Result<u8, DriverError> {
        self.run_with_commands::<()>(limit, None, |_, _, ()| Ok(Flow::Continue), on_event)
            .await
    }

    /// [`Net::run`], also taking the application's commands (lines read from stdin,
    /// periodic ticks) from `commands` as they come: each is given to `on_command` with
    /// the actor and the time, between inputs, and the loop drains what it queues. When
    /// every sender is gone the loop goes on without commands.
    pub async fn run_with_commands<C>(
        &mut self,
        limit: Option<Duration>,
        mut commands: Option<&mut mpsc::Receiver<C>>,
        mut on_command: impl FnMut(&mut A, Instant, C) -> Result<Flow, DriverError>,
        mut on_event: impl FnMut(&mut A, Instant, A::Event) -> Result<Flow, DriverError>,
    ) -> Result<u8, DriverError> {
        let give_up = limit.map(|d| tokio::time::Instant::now() + d);
        loop {
            self.drain(&mut on_event)?;
            if let Some((code, at)) = self.stop
                && tokio::time::Instant::now() >= at
            {
                return Ok(code);
            }
            let timer = self
                .actor
                .poll_timeout()
                .and_then(|at| self.clock.deadline(at))
                .map(tokio::time::Instant::from_std);
            let grace = self.stop.map(|(_, at)| at);
            // Once stopping, the outcome is decided: the grace period ends the run.
            let give_up = if grace.is_some() { None } else { give_up };
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.input(ev),
                    // The loop holds a sender itself, so the queue never closes.
                    None => return Err(DriverError::Usage("input queue closed".into())),
                },
                () = sleep_until(timer) => {
                    let now = self.clock.now();
                    self.actor.handle_timeout(now);
                }
                cmd = next_command(&mut commands), if commands.is_some() => match cmd {
                    Some(cmd) => {
                        let now = self.clock.now();
                        if let Flow::Stop(code) = on_command(&mut self.actor, now, cmd)?
                            && self.stop.is_none()
                        {
                            self.stop = Some((code, tokio::time::Instant::now() + STOP_GRACE));
                        }
                    }
                    None => commands = None,
                },
                () = sleep_until(grace) => {}
                () = sleep_until(give_up) => {
                    return Err(DriverError::TimedOut(limit.unwrap_or_default()));
                }
            }
        }
    }

    /// Rule 1: take every output and carry it out, in order.
    fn drain(
        &mut self,
        on_event: &mut impl FnMut(&mut A, Instant, A::Event) -> Result<Flow, DriverError>,
    ) -> Result<(), DriverError> {
        while let Some(output) = self.actor.poll_output() {
            match output {
                Output::Transmit(t) => self.transmit(t),
                Output::Connect { id, local, remote } => self.connect(id, local, remote),
                Output::StreamSend { id, data } => self.stream_send(id, data),
                Output::StreamClose { id } => {
                    // Dropping the sender ends the writer task after the bytes queued
                    // before, with a FIN.
                    self.streams.remove(&id);
                }
                Output::Packet { iface, .. } => warn(
                    &self.clock,
                    self.who,
                    format!("raw IP packet on {iface:?} dropped: this driver has no raw sockets"),
                ),
                Output::Event(event) => {
                    log(&self.clock, self.who, format!("event {event:?}"));
                    let now = self.clock.now();
                    // Events after a stop are still logged, and nothing more is asked of
                    // the application.
                    if self.stop.is_none()
                        && let Flow::Stop(code) = on_event(&mut self.actor, now, event)?
                    {
                        self.stop = Some((code, tokio::time::Instant::now() + STOP_GRACE));
                    }
                }
                Output::Lost { count } => warn(
                    &self.clock,
                    self.who,
                    format!("{count} outputs lost: the actor's outbox was full"),
                ),
            }
        }
        Ok(())
    }

    /// An input from the socket tasks, to the actor. An input it refuses is logged: the
    /// actor stays usable, and a refused datagram from the network is nothing to stop for.
    fn input(&mut self, ev: NetEvent) {
        let now = self.clock.now();
        let result = match ev {
            NetEvent::Datagram { from, to, data } => self.actor.handle_input(
                now,
                Input::Datagram {
                    from,
                    to,
                    data: &data,
                },
            ),
            NetEvent::Accepted {
                stream,
                local,
                remote,
            } => {
                if self.streams.len() >= MAX_STREAMS {
                    warn(
                        &self.clock,
                        self.who,
                        format!("stream from {remote} closed: {MAX_STREAMS} streams open"),
                    );
                    return;
                }
                self.next_inbound += 1;
                let id = StreamId::inbound(self.next_inbound);
                let (wtx, wrx) = mpsc::channel(WRITE_QUEUE);
                self.streams.insert(id, wtx);
                tokio::spawn(serve_stream(id, stream, wrx, self.tx.clone()));
                self.actor
                    .handle_input(now, Input::StreamAccepted { id, local, remote })
            }
            // A stream the actor closed meanwhile is not its business any more.
            NetEvent::Connected { id, local } if self.streams.contains_key(&id) => self
                .actor
                .handle_input(now, Input::StreamConnected { id, local }),
            NetEvent::Data { id, data } if self.streams.contains_key(&id) => self
                .actor
                .handle_input(now, Input::StreamData { id, data: &data }),
            NetEvent::Closed { id } if self.streams.remove(&id).is_some() => {
                self.actor.handle_input(now, Input::StreamClosed { id })
            }
            NetEvent::Connected { .. } | NetEvent::Data { .. } | NetEvent::Closed { .. } => Ok(()),
        };
        if let Err(e) = result {
            warn(&self.clock, self.who, format!("input refused: {e}"));
        }
    }

    fn transmit(&mut self, t: Transmit) {
        let socket = match self.udp.get(&t.from) {
            Some(s) => s.clone(),
            None => match self.open_udp(t.from) {
                Ok(s) => s,
                Err(why) => {
                    warn(
                        &self.clock,
                        self.who,
                        format!("datagram {} -> {} dropped: {why}", t.from, t.to),
                    );
                    return;
                }
            },
        };
        if let Err(e) = socket.send_to(&t.data, t.to) {
            // UDP may lose datagrams anyway; the actors retransmit what matters.
            warn(
                &self.clock,
                self.who,
                format!("datagram {} -> {} dropped: {e}", t.from, t.to),
            );
        }
    }

    /// A socket for a source address the actor sends from but the driver has not bound
    /// (the rendezvous devices' extra hole-punching sockets), bound now and read like the
    /// others.
    fn open_udp(&mut self, from: SocketAddr) -> Result<Arc<std::net::UdpSocket>, String> {
        if from.port() == 0 {
            return Err("no socket for port 0".into());
        }
        if self.udp.len() >= MAX_UDP_SOCKETS {
            return Err(format!("{MAX_UDP_SOCKETS} UDP sockets open"));
        }
        let socket = std::net::UdpSocket::bind(from).map_err(|e| e.to_string())?;
        let sender = udp_sender(socket, from, self.tx.clone()).map_err(|e| e.to_string())?;
        self.udp.insert(from, sender.clone());
        Ok(sender)
    }

    fn connect(&mut self, id: StreamId, local: SocketAddr, remote: SocketAddr) {
        let (wtx, wrx) = mpsc::channel(WRITE_QUEUE);
        self.streams.insert(id, wtx);
        let events = self.tx.clone();
        let (clock, who) = (self.clock, self.who);
        tokio::spawn(async move {
            let opened = tokio::time::timeout(CONNECT_TIMEOUT, open(local, remote)).await;
            match opened.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())) {
                Ok(stream) => {
                    let local = stream.local_addr().unwrap_or(local);
                    if events.send(NetEvent::Connected { id, local }).await.is_ok() {
                        serve_stream(id, stream, wrx, events).await;
                    }
                }
                Err(e) => {
                    warn(&clock, who, format!("connect to {remote} failed: {e}"));
                    // The loop may be gone (the process is ending): nothing left to tell.
                    let _ = events.send(NetEvent::Closed { id }).await;
                }
            }
        });
    }

    fn stream_send(&mut self, id: StreamId, data: Vec<u8>) {
        let Some(writer) = self.streams.get(&id) else {
            // Already reported closed (or closed by the actor): the bytes have nowhere to go.
            return;
        };
        match writer.try_send(data) {
            Ok(()) => {}
            // The stream's task has ended (the peer closed or reset it): its `Closed` is
            // on its way to the actor, and these bytes had nowhere to go anyway.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            // The peer stopped reading `WRITE_QUEUE` writes ago: the stream is given up
            // (dropping the sender ends it), and the actor hears so now.
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.streams.remove(&id);
                warn(
                    &self.clock,
                    self.who,
                    format!("{id:?}: peer not reading; closed"),
                );
                let now = self.clock.now();
                if let Err(e) = self.actor.handle_input(now, Input::StreamClosed { id }) {
                    warn(&self.clock, self.who, format!("input refused: {e}"));
                }
            }
        }
    }
}

/// Start reading `socket` (bound to `local`) in a task, and return the handle datagrams
/// are sent through: a non-blocking duplicate of the same socket, written directly. (Not
/// tokio's `try_send_to`, which refuses with `WouldBlock` until the reactor has seen the
/// socket writable once, and so dropped the first datagram of every new socket.)
fn udp_sender(
    socket: std::net::UdpSocket,
    local: SocketAddr,
    events: mpsc::Sender<NetEvent>,
) -> io::Result<Arc<std::net::UdpSocket>> {
    socket.set_nonblocking(true)?;
    let sender = socket.try_clone()?;
    let reader = UdpSocket::from_std(socket)?;
    tokio::spawn(receive(reader, local, events));
    Ok(Arc::new(sender))
}

/// The next command, or `None` once its senders are gone (or there is no queue).
async fn next_command<C>(commands: &mut Option<&mut mpsc::Receiver<C>>) -> Option<C> {
    match commands {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

/// Sleep until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Open a stream from `local` (not bound if it says "anything") to `remote`.
async fn open(local: SocketAddr, remote: SocketAddr) -> io::Result<TcpStream> {
    let socket = if remote.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if !(local.ip().is_unspecified() && local.port() == 0) {
        socket.bind(local)?;
    }
    socket.connect(remote).await
}

/// Forward every datagram `socket` receives.
async fn receive(socket: UdpSocket, local: SocketAddr, events: mpsc::Sender<NetEvent>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let data = buf[..n].to_vec();
                let ev = NetEvent::Datagram {
                    from,
                    to: local,
                    data,
                };
                if events.send(ev).await.is_err() {
                    return;
                }
            }
            // An ICMP error for an earlier send (Linux reports "connection refused" on
            // the socket): the next datagram is unaffected. The pause keeps a socket that
            // fails every read from spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Forward every stream `listener` accepts.
async fn accept(listener: TcpListener, local: SocketAddr, events: mpsc::Sender<NetEvent>) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let local = stream.local_addr().unwrap_or(local);
                let ev = NetEvent::Accepted {
                    stream,
                    local,
                    remote,
                };
                if events.send(ev).await.is_err() {
                    return;
                }
            }
            // Out of file descriptors, or a connection reset before it was accepted: wait
            // a little and accept the next.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One open stream: a writer that sends what the loop queues (and a FIN when the actor
/// closes), and a reader that forwards what arrives until the peer closes. When the actor
/// closed first, the reader drains a while longer (`LINGER`) so unread bytes do not turn
/// our orderly close into a reset.
async fn serve_stream(
    id: StreamId,
    stream: TcpStream,
    mut writes: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<NetEvent>,
) {
    // Small messages (handshakes, requests) should not wait for Nagle; failing to set
    // it only costs latency.
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let write = async move {
        while let Some(data) = writes.recv().await {
            if writer.write_all(&data).await.is_err() {
                // The reader sees the reset and reports the stream closed.
                return false;
            }
        }
        // The actor closed the stream; a failed FIN leaves nothing to do.
        let _ = writer.shutdown().await;
        true
    };
    let read = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    // The loop ignores this for a stream the actor closed itself.
                    let _ = events.send(NetEvent::Closed { id }).await;
                    return;
                }
                Ok(n) => {
                    let data = buf[..n].to_vec();
                    if events.send(NetEvent::Data { id, data }).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::pin!(read);
    tokio::select! {
        () = &mut read => {}
        closed_by_actor = write => {
            if closed_by_actor {
                // The result says only whether the peer closed in time; either way the
                // stream is done.
                let _ = tokio::time::timeout(LINGER, &mut read).await;
            } else {
                read.await;
            }
        }
    }
}

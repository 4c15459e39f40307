//! The request-issuing device (要求発行機器 102): asks the server to reach a device by
//! its ID (S203), proves the password to that device alone, and takes the direct
//! connection (S208–S209).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use zeroize::Zeroizing;

use super::keys::{ACCEPTOR_SIGN_CONTEXT, SessionKeys, Share, TranscriptInput, check_password};
use super::messages::{
    self, ACCEPTOR_HELLO, AcceptorHello, ConnectRequest, IssuerDatagram, Outcome, PROCEED, Probe,
    SealedPassword, ToIssuer,
};
use super::peer::{Endpoints, PeerConfig, PeerSession, Side, route_datagram};
use super::{DeviceId, PeerFailure, RendezvousError, RendezvousEvent, RequestRefusal};
use crate::channel::SecureStream;
use crate::channel::{ClientConfig, Connection};
use crate::crypto::cert::TrustStore;
use crate::io::{Input, Outbox, Output, StreamId, Transmit};
use crate::wire::{Limits, Message, WireError};
use crate::{Error, Instant, Rng, UnixTime};

/// The values an [`IssuerConfig`] has no default for, by name: the three addresses
/// cannot be swapped without it showing.
#[derive(Debug)]
pub struct IssuerParams {
    /// The CAs that certify both the server and the devices' certificates.
    pub trust: TrustStore,
    /// The name the server's certificate must carry.
    pub server_name: String,
    /// The server's issuer stream address (seed: 130.74.23.6:1201;
    /// [`RendezvousServerConfig::issuer_stream`](super::RendezvousServerConfig::issuer_stream)).
    pub server_stream: SocketAddr,
    /// The server's UDP address (for the probe; seed: 130.74.23.6:1200).
    pub server_udp: SocketAddr,
    /// The issuer's UDP socket for the direct connection (seed: 192.168.1.11:1600).
    pub local: SocketAddr,
    /// Wall-clock time at `Instant::ZERO`.
    pub time_anchor: UnixTime,
}

/// Configuration of an [`Issuer`]: [`IssuerConfig::new`] takes what has no default, every
/// other field is public and starts at the default its documentation states.
///
/// ```
/// use deputy::UnixTime;
/// use deputy::crypto::cert::{CertificateAuthority, TrustStore};
/// use deputy::rendezvous::{IssuerConfig, IssuerParams};
/// use rand_core::SeedableRng;
///
/// let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
/// let ca = CertificateAuthority::generate("operator CA", &mut rng);
/// let mut config = IssuerConfig::new(IssuerParams {
///     trust: TrustStore::with(ca.certificate().clone()),
///     server_name: "rendezvous.example".into(),
///     server_stream: "130.74.23.6:1201".parse().unwrap(),
///     server_udp: "130.74.23.6:1200".parse().unwrap(),
///     local: "192.168.1.11:1600".parse().unwrap(),
///     time_anchor: UnixTime(1_800_000_000),
/// });
/// config.declared = Some("4.17.168.2:5000".parse().unwrap()); // a static NAPT entry (¶0109)
/// ```
#[derive(Debug)]
pub struct IssuerConfig {
    /// The channel to the server: the CA that certifies it and its name. Built from
    /// [`IssuerParams`]; its own knobs at the channel's defaults.
    pub channel: Arc<ClientConfig>,
    /// The CAs whose device certificates the issuer accepts for acceptors. Default
    /// [`IssuerParams::trust`].
    pub device_trust: TrustStore,
    /// The server's issuer stream address (seed: 130.74.23.6:1201). No default.
    pub server_stream: SocketAddr,
    /// The server's UDP address (for the probe). No default.
    pub server_udp: SocketAddr,
    /// The issuer's UDP socket for the direct connection (seed: 192.168.1.11:1600). No
    /// default.
    pub local: SocketAddr,
    /// A public address mapped to `local` by a static NAPT entry or UPnP (¶0109), if any
    /// (seed: 4.17.168.2:5000). Default `None`.
    pub declared: Option<SocketAddr>,
    /// Wall-clock time at `Instant::ZERO`. No default.
    pub time_anchor: UnixTime,
    /// Hole punching and the direct link. Default [`PeerConfig::default`].
    pub peer: PeerConfig,
    /// Time between UDP probes until the server answers. Default 500 ms.
    pub probe_interval: Duration,
    /// Probes sent at most. Default 6.
    pub probes: u32,
    /// A request must reach the punching stage within this time. Default 60 s.
    pub request_timeout: Duration,
    /// Requests and connections at once. Default 4.
    pub max_sessions: usize,
    /// Times a request whose server channel failed before its password was sealed is sent
    /// again on a new stream (issue 13 item 3; the password only leaves sealed, so after
    /// that a failure ends the request). Default 2.
    pub server_restarts: u32,
    /// The first wait before such a new stream (it doubles with each restart). Default
    /// 1 s.
    pub restart_backoff: Duration,
}

impl IssuerConfig {
    /// A configuration from `params`, every other field at its documented default.
    pub fn new(params: IssuerParams) -> IssuerConfig {
        let IssuerParams {
            trust,
            server_name,
            server_stream,
            server_udp,
            local,
            time_anchor,
        } = params;
        IssuerConfig {
            channel: Arc::new(ClientConfig::with_ca(
                trust.clone(),
                &server_name,
                time_anchor,
            )),
            device_trust: trust,
            server_stream,
            server_udp,
            local,
            declared: None,
            time_anchor,
            peer: PeerConfig::default(),
            probe_interval: Duration::from_millis(500),
            probes: 6,
            request_timeout: Duration::from_secs(60),
            max_sessions: 4,
            server_restarts: 2,
            restart_backoff: Duration::from_secs(1),
        }
    }
}

enum Stage {
    /// Waiting for the stream to open (the channel runs no timers before).
    Opening,
    /// The stream is open; waiting for the channel.
    Connecting,
    /// ConnectRequest sent; waiting for the acceptor's answer.
    Requested(Share),
    /// Password sealed and sent; waiting for S207's verdict (RTT measured from here).
    Sealed {
        keys: SessionKeys,
        candidates: Vec<SocketAddr>,
        sent: Instant,
    },
    /// Punching; the request lives on as a session.
    Punching,
    /// The server channel failed before the password was sealed; the request is sent again
    /// on a new stream at this time.
    Reopen(Instant),
}

struct Request {
    device: DeviceId,
    password: Zeroizing<Vec<u8>>,
    server: SecureStream,
    stage: Stage,
    token: [u8; 16],
    probes_left: u32,
    next_probe: Option<Instant>,
    deadline: Instant,
    rtt: Duration,
    /// Times the request was sent again on a new stream.
    restarts: u32,
}

/// The request-issuing device.
///
/// Opens one stream to the server per request, sends UDP from [`IssuerConfig::local`]
/// (and, while hole punching with the birthday technique, from extra ports of the same
/// address).
pub struct Issuer {
    cfg: IssuerConfig,
    rng: Rng,
    outbox: Outbox<RendezvousEvent>,
    next_stream: u64,
    requests: BTreeMap<u64, Request>,
    sessions: BTreeMap<u64, PeerSession>,
}

impl core::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Issuer")
            .field("local", &self.cfg.local)
            .field("requests", &self.requests.len())
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer with no requests.
    pub fn new(cfg: IssuerConfig, rng: Rng) -> Issuer {
        Issuer {
            cfg,
            rng,
            outbox: Outbox::default(),
            next_stream: 0,
            requests: BTreeMap::new(),
            sessions: BTreeMap::new(),
        }
    }

    /// S203: ask to connect to `device`, which will accept only `password`. Returns the
    /// request id that names the session in events.
    pub fn connect(
        &mut self,
        now: Instant,
        device: DeviceId,
        password: &[u8],
    ) -> Result<u64, Error> {
        check_password(password)?;
        if self.requests.len() + self.sessions.len() >= self.cfg.max_sessions {
            return Err(Error::CapacityExceeded {
                what: "issuer sessions",
                bound: self.cfg.max_sessions,
            });
        }
        let request = loop {
            let id = self.rng.next_u64();
            if id != 0 && !self.requests.contains_key(&id) && !self.sessions.contains_key(&id) {
                break id;
            }
        };
        self.next_stream += 1;
        let id = StreamId::outbound(self.next_stream);
        self.outbox.push(Output::Connect {
            id,
            local: SocketAddr::new(self.cfg.local.ip(), 0),
            remote: self.cfg.server_stream,
        })?;
        let mut token = [0u8; 16];
        self.rng.fill_bytes(&mut token);
        // The connection starts when the stream opens; until then the channel waits.
        let conn = Connection::client(self.cfg.channel.clone(), now, self.rng.as_mut())?;
        self.requests.insert(
            request,
            Request {
                device,
                password: Zeroizing::new(password.to_vec()),
                server: SecureStream::new(id, conn, now),
                stage: Stage::Opening,
                token,
                probes_left: self.cfg.probes,
                next_probe: None,
                deadline: now + self.cfg.request_timeout,
                rtt: Duration::ZERO,
                restarts: 0,
            },
        );
        Ok(request)
    }

    /// The server stream of `request` failed before its password was sealed: send the
    /// request again on a new stream after the back-off, if restarts are left and the
    /// request's deadline allows. Returns whether it will.
    fn schedule_restart(&mut self, now: Instant, request: u64) -> bool {
        let Some(r) = self.requests.get_mut(&request) else {
            return false;
        };
        let unsealed = matches!(
            r.stage,
            Stage::Opening | Stage::Connecting | Stage::Requested(_)
        );
        let wait = crate::time::doubled(
            self.cfg.restart_backoff,
            r.restarts,
            self.cfg.request_timeout,
        );
        if !unsealed || r.restarts >= self.cfg.server_restarts || now + wait >= r.deadline {
            return false;
        }
        r.restarts += 1;
        r.stage = Stage::Reopen(now + wait);
        r.next_probe = None;
        true
    }

    /// Open the new stream of a request waiting in [`Stage::Reopen`]: a fresh channel,
    /// probe token and probe count; the same request id (the server forgot the request
    /// when the old stream ended, and told the device, which let it go).
    fn reopen(&mut self, now: Instant, request: u64) -> Result<(), Error> {
        let due = self
            .requests
            .get(&request)
            .is_some_and(|r| matches!(r.stage, Stage::Reopen(t) if now >= t));
        if !due {
            return Ok(());
        }
        self.next_stream += 1;
        let id = StreamId::outbound(self.next_stream);
        let conn = Connection::client(self.cfg.channel.clone(), now, self.rng.as_mut())?;
        let mut token = [0u8; 16];
        self.rng.fill_bytes(&mut token);
        if let Some(r) = self.requests.get_mut(&request) {
            r.server = SecureStream::new(id, conn, now);
            r.stage = Stage::Opening;
            r.token = token;
            r.probes_left = self.cfg.probes;
        }
        self.outbox.push(Output::Connect {
            id,
            local: SocketAddr::new(self.cfg.local.ip(), 0),
            remote: self.cfg.server_stream,
        })
    }

    /// Whether the direct connection of `session` is up.
    pub fn is_connected(&self, session: u64) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(PeerSession::is_connected)
    }

    /// Send one application message to the acceptor of `session` (S209).
    pub fn send(&mut self, now: Instant, session: u64, data: &[u8]) -> Result<(), Error> {
        let peer = self
            .sessions
            .get_mut(&session)
            .ok_or(RendezvousError::UnknownSession(session))?;
        peer.send(now, data, &mut self.outbox)
    }

    /// Close the direct connection of `session` gracefully.
    pub fn close(&mut self, now: Instant, session: u64) -> Result<(), Error> {
        let peer = self
            .sessions
            .get_mut(&session)
            .ok_or(RendezvousError::UnknownSession(session))?;
        peer.close(now, &mut self.outbox)
    }

    /// The datagram as one from the server, if it came from the server's address and is
    /// of a type the server sends; `None` for everything else.
    fn server_datagram(
        &self,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<Option<IssuerDatagram>, Error> {
        if from != self.cfg.server_udp {
            return Ok(None);
        }
        let limits = Limits::default();
        let Ok(msg) = Message::decode(data, &limits) else {
            return Ok(None);
        };
        match IssuerDatagram::decode(&msg, &limits) {
            Ok(m) => Ok(Some(m)),
            Err(WireError::UnexpectedType(_)) => Ok(None),
            Err(e) => Err(RendezvousError::Decode(e).into()),
        }
    }

    fn request_of(&self, stream: StreamId) -> Option<u64> {
        self.requests
            .iter()
            .find(|(_, r)| r.server.id() == stream)
            .map(|(id, _)| *id)
    }

    fn send_probe(&mut self, now: Instant, request: u64) -> Result<(), Error> {
        let Some(r) = self.requests.get_mut(&request) else {
            return Ok(());
        };
        if r.probes_left == 0 {
            r.next_probe = None;
            return Ok(());
        }
        r.probes_left -= 1;
        r.next_probe = Some(now + self.cfg.probe_interval);
        let data = Probe {
            request,
            token: r.token,
        }
        .encode()?;
        self.outbox.push(Output::Transmit(Transmit {
            from: self.cfg.local,
            to: self.cfg.server_udp,
            data,
        }))
    }

    fn send_server(&mut self, request: u64, message: &[u8]) -> Result<(), Error> {
        let r = self
            .requests
            .get_mut(&request)
            .ok_or(RendezvousError::UnknownSession(request))?;
        r.server.send(message, &mut self.outbox)
    }

    /// The channel to the server came up: S203's connection request.
    fn on_established(&mut self, now: Instant, request: u64) -> Result<(), Error> {
        let share = Share::generate(self.rng.as_mut());
        let Some(r) = self.requests.get_mut(&request) else {
            return Ok(());
        };
        let msg = ConnectRequest {
            request,
            device: r.device,
            share: share.public,
            random: share.random,
            token: r.token,
            declared: self.cfg.declared,
        }
        .encode()?;
        r.stage = Stage::Requested(share);
        self.send_server(request, &msg)?;
        self.send_probe(now, request)
    }

    fn on_server_message(&mut self, now: Instant, request: u64, bytes: &[u8]) -> Result<(), Error> {
        let (msg, decoded) = messages::read(bytes, &Limits::default(), ToIssuer::decode)?;
        if msg.session() != request {
            return Err(RendezvousError::UnknownSession(msg.session()).into());
        }
        match decoded {
            ToIssuer::AcceptorHello(hello) => self.on_acceptor_hello(now, request, hello),
            ToIssuer::Proceed(_) => self.on_proceed(now, request),
            ToIssuer::Refused(refused) => self.end_request(request, refused.reason),
        }
    }

    /// The acceptor answered: check that it is the genuine device, then seal the
    /// password to it alone.
    fn on_acceptor_hello(
        &mut self,
        now: Instant,
        request: u64,
        hello: AcceptorHello,
    ) -> Result<(), Error> {
        let r = self
            .requests
            .get_mut(&request)
            .ok_or(RendezvousError::UnknownSession(request))?;
        let share = match core::mem::replace(&mut r.stage, Stage::Punching) {
            Stage::Requested(share) => share,
            other => {
                // Out of turn (a repeat, say): refused, and the request carries on.
                r.stage = other;
                return Err(RendezvousError::UnexpectedMessage(ACCEPTOR_HELLO).into());
            }
        };
        let device = r.device;
        let at = crate::UnixTime::at(self.cfg.time_anchor, now);
        let cert = match self.cfg.device_trust.verify(
            &hello.certificate,
            at,
            Some(&device.certificate_name()),
        ) {
            Ok(c) => c,
            Err(_) => return self.end_request(request, RequestRefusal::NotAuthorized),
        };
        let transcript = TranscriptInput {
            request,
            device,
            issuer_share: &share.public,
            issuer_random: &share.random,
            acceptor_share: &hello.share,
            acceptor_random: &hello.random,
        }
        .hash();
        if cert
            .verify_signature(ACCEPTOR_SIGN_CONTEXT, &transcript, &hello.signature)
            .is_err()
        {
            return self.end_request(request, RequestRefusal::NotAuthorized);
        }
        let Ok(keys) = SessionKeys::derive(share.key_pair, &hello.share, transcript) else {
            return self.end_request(request, RequestRefusal::ProtocolError);
        };
        let r = self
            .requests
            .get_mut(&request)
            .ok_or(RendezvousError::UnknownSession(request))?;
        let sealed = keys.seal_password(&r.password)?;
        // The password is no longer needed in the clear.
        r.password = Zeroizing::new(Vec::new());
        r.stage = Stage::Sealed {
            keys,
            candidates: hello.candidates,
            sent: now,
        };
        let msg = SealedPassword { request, sealed }.encode()?;
        self.send_server(request, &msg)
    }

    /// S207 passed: measure the RTT, send Sync, punch RTT/2 later (DCUtR).
    fn on_proceed(&mut self, now: Instant, request: u64) -> Result<(), Error> {
        let r = self
            .requests
            .get_mut(&request)
            .ok_or(RendezvousError::UnknownSession(request))?;
        let (keys, candidates, sent) = match core::mem::replace(&mut r.stage, Stage::Punching) {
            Stage::Sealed {
                keys,
                candidates,
                sent,
            } => (keys, candidates, sent),
            other => {
                r.stage = other;
                return Err(RendezvousError::UnexpectedMessage(PROCEED).into());
            }
        };
        let rtt = now.saturating_duration_since(sent);
        r.rtt = rtt;
        let mut peer = PeerSession::new(
            request,
            Side::Issuer,
            &keys,
            Endpoints {
                main: self.cfg.local,
                candidates,
                rtt,
            },
            self.cfg.peer,
            self.cfg.time_anchor,
        );
        peer.schedule_attempt(now + rtt / 2, 1);
        self.sessions.insert(request, peer);
        self.sync(request, 1)
    }

    fn sync(&mut self, request: u64, attempt: u8) -> Result<(), Error> {
        let msg = super::messages::Sync { request, attempt }.encode()?;
        self.send_server(request, &msg)
    }

    fn end_request(&mut self, request: u64, reason: RequestRefusal) -> Result<(), Error> {
        if let Some(mut r) = self.requests.remove(&request) {
            // The refusal is reported even if the outbox refused the close (both are
            // attempted; a refused one is counted as lost).
            let closed = r.server.close(&mut self.outbox);
            return closed.and(
                self.outbox
                    .event(RendezvousEvent::Refused { request, reason }),
            );
        }
        Ok(())
    }

    /// Attempts, outcomes, cleanup. Every step is taken for every request and session
    /// even after the outbox refused an output (counted as lost); the first error is
    /// returned at the end.
    fn settle(&mut self, now: Instant) -> Result<(), Error> {
        let mut result = Ok(());
        let mut syncs = Vec::new();
        let mut reports = Vec::new();
        for (id, peer) in self.sessions.iter_mut() {
            if let Some(expired) = peer.take_expired_attempt(now, self.rng.as_mut()) {
                if expired >= self.cfg.peer.attempts {
                    result = result.and(peer.fail(
                        PeerFailure::HolePunchFailed { attempts: expired },
                        &mut self.outbox,
                    ));
                } else {
                    let rtt = self.requests.get(id).map_or(Duration::ZERO, |r| r.rtt);
                    peer.schedule_attempt(now + rtt / 2, expired + 1);
                    syncs.push((*id, expired + 1));
                }
            }
            // Reported once: the request is removed below, and the session lives on alone.
            if let Some(connected) = peer.outcome()
                && self.requests.contains_key(id)
            {
                reports.push(Outcome {
                    request: *id,
                    connected,
                });
            }
        }
        for (id, attempt) in syncs {
            if self.sync(id, attempt).is_err()
                && let Some(peer) = self.sessions.get_mut(&id)
            {
                result = result.and(peer.fail(PeerFailure::ServerLost, &mut self.outbox));
            }
        }
        for report in reports {
            // The server may be gone; the outcome is then moot.
            let _ = report
                .encode()
                .map_err(Error::from)
                .and_then(|msg| self.send_server(report.request, &msg));
            if let Some(mut r) = self.requests.remove(&report.request) {
                result = result.and(r.server.close(&mut self.outbox));
            }
        }
        // Requests that lost their server (sent again on a new stream while that is
        // allowed), or did not reach punching in time.
        let stale: Vec<(u64, RequestRefusal)> = self
            .requests
            .iter()
            .filter(|(id, _)| !self.sessions.contains_key(id))
            .filter_map(|(id, r)| {
                if now >= r.deadline {
                    Some((*id, RequestRefusal::Timeout))
                } else if r.server.is_closed() && !matches!(r.stage, Stage::Reopen(_)) {
                    Some((*id, RequestRefusal::ProtocolError))
                } else {
                    None
                }
            })
            .collect();
        for (id, reason) in stale {
            if reason == RequestRefusal::ProtocolError && self.schedule_restart(now, id) {
                continue;
            }
            result = result.and(self.end_request(id, reason));
        }
        self.sessions.retain(|_, p| !p.is_gone());
        result
    }
}

/// Every deadline the issuer keeps. [`Issuer::timers`] lists the armed ones:
/// `poll_timeout` is the earliest, `handle_timeout` fires each that is due, so a timer
/// added here is both armed and handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// The next UDP probe of a request, until the server answers one.
    Probe(u64),
    /// A request must reach the punching stage by then.
    RequestDeadline(u64),
    /// A request's channel to the server (handshake and idle deadlines).
    ServerChannel(u64),
    /// A request's new stream to the server opens (after its channel failed).
    Reopen(u64),
    /// A session's own timers: punching, its channel, its link.
    Peer(u64),
}

impl Issuer {
    /// The armed timers, in the order `handle_timeout` fires them: every probe, then
    /// every server channel, then every session.
    fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        let probes = self
            .requests
            .iter()
            .filter_map(|(id, r)| r.next_probe.map(|t| (Timer::Probe(*id), t)));
        // Once punching, the request lives on as a session and its deadline is moot.
        let deadlines = self
            .requests
            .iter()
            .filter(|(id, _)| !self.sessions.contains_key(id))
            .map(|(id, r)| (Timer::RequestDeadline(*id), r.deadline));
        // A channel runs no timers before its stream opens, nor once it failed.
        let channels = self.requests.iter().filter_map(|(id, r)| {
            (!matches!(r.stage, Stage::Opening | Stage::Reopen(_)))
                .then(|| r.server.connection().poll_timeout())
                .flatten()
                .map(|t| (Timer::ServerChannel(*id), t))
        });
        let reopens = self.requests.iter().filter_map(|(id, r)| match r.stage {
            Stage::Reopen(t) => Some((Timer::Reopen(*id), t)),
            _ => None,
        });
        let sessions = self
            .sessions
            .iter()
            .filter_map(|(id, p)| p.poll_timeout().map(|t| (Timer::Peer(*id), t)));
        probes
            .chain(deadlines)
            .chain(channels)
            .chain(reopens)
            .chain(sessions)
    }

    /// Run one due timer.
    fn fire(&mut self, now: Instant, timer: Timer) -> Result<(), Error> {
        match timer {
            Timer::Probe(id) => self.send_probe(now, id),
            // Applied by `settle`, which runs after every input as well.
            Timer::RequestDeadline(_) => Ok(()),
            Timer::Reopen(id) => self.reopen(now, id),
            Timer::ServerChannel(id) => match self.requests.get_mut(&id) {
                // A failed handshake closes the stream; `settle` then ends the request.
                Some(r) => r.server.handle_timeout(now, &mut self.outbox).map(|_| ()),
                None => Ok(()),
            },
            Timer::Peer(id) => match self.sessions.get_mut(&id) {
                Some(peer) => peer.handle_timeout(now, self.rng.as_mut(), &mut self.outbox),
                None => Ok(()),
            },
        }
    }
}

impl Issuer {
    /// One input; `settle` runs after it (see `timer_driven_actor`).
    fn input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::Datagram { from, to, data } => {
                // Only the server's own address may answer a probe; anything else there,
                // and everything from elsewhere, is for a peer session.
                match self.server_datagram(from, data)? {
                    Some(IssuerDatagram::ProbeAck(ack)) => {
                        match self.requests.get_mut(&ack.request) {
                            Some(r) if r.token == ack.token => {
                                r.next_probe = None;
                                Ok(())
                            }
                            _ => Err(RendezvousError::UnknownSession(ack.request).into()),
                        }
                    }
                    None => {
                        let sessions = &mut self.sessions;
                        route_datagram(
                            now,
                            from,
                            to,
                            data,
                            |id| sessions.get_mut(&id),
                            self.rng.as_mut(),
                            &mut self.outbox,
                        )
                    }
                }
            }
            Input::StreamConnected { id, .. } => match self.request_of(id) {
                Some(request) => {
                    let r = self
                        .requests
                        .get_mut(&request)
                        .ok_or(RendezvousError::UnknownSession(request))?;
                    if matches!(r.stage, Stage::Opening) {
                        r.stage = Stage::Connecting;
                    }
                    r.server.pump(&mut self.outbox).map(|_| ())
                }
                None => Err(Error::UnknownStream(id)),
            },
            Input::StreamData { id, data } => match self.request_of(id) {
                Some(request) => {
                    let r = self
                        .requests
                        .get_mut(&request)
                        .ok_or(RendezvousError::UnknownSession(request))?;
                    let was_up = r.server.connection().is_established();
                    let mut messages = Vec::new();
                    let fed = r.server.feed(
                        now,
                        data,
                        self.rng.as_mut(),
                        &mut self.outbox,
                        &mut messages,
                    );
                    let now_up = r.server.connection().is_established();
                    let mut result = if !was_up && now_up {
                        self.on_established(now, request)
                    } else {
                        Ok(())
                    };
                    for m in messages {
                        if let Err(e) = self.on_server_message(now, request, &m) {
                            result = Err(e);
                        }
                    }
                    fed.and(result)
                }
                None => Err(Error::UnknownStream(id)),
            },
            Input::StreamClosed { id } => match self.request_of(id) {
                Some(request) => {
                    if let Some(r) = self.requests.get_mut(&request) {
                        // A truncation is recorded in the connection; the request ends
                        // either way when the stream is gone.
                        let _ = r.server.stream_closed();
                    }
                    Ok(())
                }
                None => Err(Error::UnknownStream(id)),
            },
            Input::StreamAccepted { id, .. } => super::device_refuses(Some(id), &mut self.outbox),
            Input::Packet { .. } => super::device_refuses(None, &mut self.outbox),
        }
    }
}

super::timer_driven_actor!(impl [] Issuer);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::cert::CertificateAuthority;
    use crate::io::Actor;
    use alloc::boxed::Box;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// An issuer's configuration with the seed's addresses and a fresh CA.
    fn config(rng: &mut ChaCha20Rng) -> IssuerConfig {
        let ca = CertificateAuthority::generate("CA", rng);
        IssuerConfig::new(IssuerParams {
            trust: TrustStore::with(ca.certificate().clone()),
            server_name: "rendezvous.example".into(),
            server_stream: "130.74.23.6:1201".parse().unwrap(),
            server_udp: "130.74.23.6:1200".parse().unwrap(),
            local: "192.168.1.11:1600".parse().unwrap(),
            time_anchor: UnixTime(1_800_000_000),
        })
    }

    #[test]
    fn messages_out_of_turn_leave_the_request_as_it_was() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let cfg = config(&mut rng);
        let mut issuer = Issuer::new(cfg, Box::new(rng.clone()));
        let now = Instant::from_secs(1);
        let request = issuer.connect(now, DeviceId(2133), b"pw").unwrap();
        let stage = |i: &Issuer| match &i.requests[&request].stage {
            Stage::Opening | Stage::Connecting => "connecting",
            Stage::Requested(_) => "requested",
            Stage::Sealed { .. } => "sealed",
            Stage::Punching => "punching",
            Stage::Reopen(_) => "reopening",
        };
        let hello = AcceptorHello {
            request,
            certificate: alloc::vec![1; 8],
            share: [2; 32],
            random: [3; 32],
            signature: [4; 64],
            candidates: alloc::vec![],
        }
        .encode()
        .unwrap();
        let proceed = super::super::messages::Proceed { request }
            .encode()
            .unwrap();

        // A Proceed before the password went out does not discard the key share.
        issuer.requests.get_mut(&request).unwrap().stage =
            Stage::Requested(Share::generate(&mut rng));
        assert_eq!(
            issuer.on_server_message(now, request, &proceed),
            Err(RendezvousError::UnexpectedMessage(PROCEED).into())
        );
        assert_eq!(stage(&issuer), "requested");

        // A second AcceptorHello after the password was sealed does not discard the keys:
        // the verdict that follows still starts the punching.
        let (i, a) = (Share::generate(&mut rng), Share::generate(&mut rng));
        let keys = SessionKeys::derive(i.key_pair, &a.public, [7; 32]).unwrap();
        issuer.requests.get_mut(&request).unwrap().stage = Stage::Sealed {
            keys,
            candidates: alloc::vec!["203.0.113.9:2000".parse().unwrap()],
            sent: now,
        };
        assert_eq!(
            issuer.on_server_message(now, request, &hello),
            Err(RendezvousError::UnexpectedMessage(ACCEPTOR_HELLO).into())
        );
        assert_eq!(stage(&issuer), "sealed");
        // (Its Sync finds no server channel here: there is none in this test.)
        let _ = issuer.on_server_message(now + Duration::from_millis(40), request, &proceed);
        assert_eq!(stage(&issuer), "punching");
        assert!(issuer.sessions.contains_key(&request));
    }

    #[test]
    fn requests_are_bounded_and_passwords_checked() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let mut cfg = config(&mut rng);
        cfg.max_sessions = 2;
        let mut issuer = Issuer::new(cfg, Box::new(rng));
        let now = Instant::from_secs(1);
        assert_eq!(
            issuer.connect(now, DeviceId(2133), b""),
            Err(RendezvousError::BadPassword.into())
        );
        assert_eq!(
            issuer.connect(now, DeviceId(2133), &[b'x'; 65]),
            Err(RendezvousError::BadPassword.into())
        );
        let a = issuer.connect(now, DeviceId(2133), b"pw").unwrap();
        let b = issuer.connect(now, DeviceId(2133), b"pw").unwrap();
        assert_ne!(a, b);
        assert_eq!(
            issuer.connect(now, DeviceId(2133), b"pw"),
            Err(Error::CapacityExceeded {
                what: "issuer sessions",
                bound: 2
            })
        );
        let connects = core::iter::from_fn(|| issuer.poll_output())
            .filter(|o| matches!(o, Output::Connect { .. }))
            .count();
        assert_eq!(connects, 2);
        assert_eq!(
            issuer.send(now, a, b"early"),
            Err(RendezvousError::UnknownSession(a).into())
        );
    }
}

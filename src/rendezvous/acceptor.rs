//! The request-accepting device (要求受諾機器 103): registers itself (S202), fetches
//! connection requests over its own authenticated channel (S206), checks the password
//! (S207), and opens the direct connection (S208–S209).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use super::backoff::{Backoff, BackoffConfig};
use super::keys::{
    Password, RegistrationKey, SessionKeys, Share, TranscriptInput, sign_transcript,
};
use super::messages::{
    self, Accept, AcceptorDatagram, AckStatus, Fetch, Offer, Outcome, Proceed,
    REGISTRATION_MAC_LEN, Refused, Register, SYNC, SealedPassword, ToAcceptor,
};
use super::peer::{Endpoints, PeerConfig, PeerSession, Side, route_datagram};
use super::{DeviceId, PeerFailure, RendezvousError, RendezvousEvent, RequestRefusal};
use crate::channel::SecureStream;
use crate::channel::{ClientAuthMode, ClientConfig, Connection};
use crate::crypto::cert::{CertifiedKey, TrustStore};
use crate::io::{Input, Outbox, Output, StreamId, Transmit};
use crate::wire::{Limits, Message};
use crate::{Error, Instant, Rng, UnixTime};

/// The values an [`AcceptorConfig`] has no default for, by name: the three addresses
/// cannot be swapped without it showing.
#[derive(Debug)]
pub struct AcceptorParams {
    /// This device's ID.
    pub device: DeviceId,
    /// The key its registrations are MAC'd with.
    pub registration_key: RegistrationKey,
    /// The device's certificate (naming [`DeviceId::certificate_name`]) and key, presented
    /// to the server on its device port (S206). Shared, not copied.
    pub identity: Arc<CertifiedKey>,
    /// The CAs that certify the server.
    pub trust: TrustStore,
    /// The name the server's certificate must carry.
    pub server_name: String,
    /// The server's UDP address (registrations; seed: 130.74.23.6:1200).
    pub server_udp: SocketAddr,
    /// The server's device stream address (seed: port 1300;
    /// [`RendezvousServerConfig::device_stream`](super::RendezvousServerConfig::device_stream)).
    pub server_stream: SocketAddr,
    /// This device's UDP socket (seed: 192.168.1.3:2000).
    pub local: SocketAddr,
    /// The password issuers must know.
    pub password: Password,
    /// Wall-clock time at `Instant::ZERO`.
    pub time_anchor: UnixTime,
}

/// Configuration of an [`Acceptor`]: [`AcceptorConfig::new`] takes what has no default,
/// every other field is public and starts at the default its documentation states.
///
/// ```
/// use std::sync::Arc;
/// use deputy::UnixTime;
/// use deputy::crypto::cert::{CertificateAuthority, TrustStore};
/// use deputy::rendezvous::{AcceptorConfig, AcceptorParams, DeviceId, Password, RegistrationKey};
/// use rand_core::SeedableRng;
///
/// let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
/// let anchor = UnixTime(1_800_000_000);
/// let ca = CertificateAuthority::generate("operator CA", &mut rng);
/// let device = DeviceId(2133);
/// let identity = ca.issue_identity(&device.certificate_name(), &[], anchor, 86_400, &mut rng).unwrap();
/// let mut config = AcceptorConfig::new(AcceptorParams {
///     device,
///     registration_key: RegistrationKey::from_bytes([9; 32]),
///     identity: Arc::new(identity),
///     trust: TrustStore::with(ca.certificate().clone()),
///     server_name: "rendezvous.example".into(),
///     server_udp: "130.74.23.6:1200".parse().unwrap(),
///     server_stream: "130.74.23.6:1300".parse().unwrap(),
///     local: "192.168.1.3:2000".parse().unwrap(),
///     password: Password::new(b"2133-secret", &mut rng).unwrap(),
///     time_anchor: anchor,
/// });
/// config.max_sessions = 8;
/// ```
#[derive(Debug)]
pub struct AcceptorConfig {
    /// This device's ID. No default.
    pub device: DeviceId,
    /// The key its registrations are MAC'd with. No default.
    pub registration_key: RegistrationKey,
    /// The channel to the server: the CA that certifies the server, the server's name,
    /// and this device's certificate and key (client authentication, S206). Built from
    /// [`AcceptorParams`]; its own knobs at the channel's defaults.
    pub channel: Arc<ClientConfig>,
    /// The server's UDP address (registrations). No default.
    pub server_udp: SocketAddr,
    /// The server's device stream address. No default.
    pub server_stream: SocketAddr,
    /// This device's UDP socket: registrations leave from it, and it is the device's
    /// end of the direct connection (seed: 192.168.1.3:2000). No default.
    pub local: SocketAddr,
    /// The password issuers must know. No default.
    pub password: Password,
    /// Wall-clock time at `Instant::ZERO`. No default.
    pub time_anchor: UnixTime,
    /// Registration interval, chosen at random in this range each time (default 20–26 s:
    /// NAT bindings commonly expire after 30 s).
    pub keepalive: (Duration, Duration),
    /// A registration without acknowledgment is repeated after this long. Default 2 s.
    pub ack_timeout: Duration,
    /// Repeats of an unacknowledged registration before waiting for the next interval.
    /// Default 3.
    pub register_retries: u32,
    /// Notices older than this (by the server's clock) are ignored. Default 60 s.
    pub notice_max_age: Duration,
    /// The largest clock correction accepted from the server. Default one day.
    pub max_clock_correction: Duration,
    /// Wrong-password back-off. Default [`BackoffConfig::default`].
    pub backoff: BackoffConfig,
    /// Hole punching and the direct link. Default [`PeerConfig::default`].
    pub peer: PeerConfig,
    /// Requests and connections at once. Default 4.
    pub max_sessions: usize,
    /// Notices waiting to be fetched. Default 8.
    pub max_pending: usize,
    /// The first wait before the server channel is opened again after it failed with
    /// requests still to fetch (it doubles with each further failure in a row). Default
    /// 1 s.
    pub reconnect_backoff: Duration,
    /// Failures of the server channel in a row after which the requests it still had to
    /// fetch are dropped (the server refuses them to their issuers). Default 3.
    pub reconnects: u32,
    /// After the acceptor has sent its share (Accept), how long it waits for the issuer's
    /// sealed password before it drops the request (S207). Default 30 s: the issuer seals
    /// as soon as the share arrives, so this only has to cover the relay through the
    /// server and a slow issuer; a request still waiting holds one of `max_sessions`.
    pub password_wait: Duration,
}

impl AcceptorConfig {
    /// A configuration from `params`, every other field at its documented default.
    pub fn new(params: AcceptorParams) -> AcceptorConfig {
        let AcceptorParams {
            device,
            registration_key,
            identity,
            trust,
            server_name,
            server_udp,
            server_stream,
            local,
            password,
            time_anchor,
        } = params;
        let channel = ClientConfig::new(
            ClientAuthMode::Certificate {
                trust,
                server_name,
                identity: Some(identity),
            },
            time_anchor,
        );
        AcceptorConfig {
            device,
            registration_key,
            channel: Arc::new(channel),
            server_udp,
            server_stream,
            local,
            password,
            time_anchor,
            keepalive: (Duration::from_secs(20), Duration::from_secs(26)),
            ack_timeout: Duration::from_secs(2),
            register_retries: 3,
            notice_max_age: Duration::from_secs(60),
            max_clock_correction: Duration::from_secs(86_400),
            backoff: BackoffConfig::default(),
            peer: PeerConfig::default(),
            max_sessions: 4,
            max_pending: 8,
            reconnect_backoff: Duration::from_secs(1),
            reconnects: 3,
            password_wait: Duration::from_secs(30),
        }
    }
}

/// What the acceptor has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptorStats {
    /// Registrations sent.
    pub registrations: u64,
    /// Registrations acknowledged.
    pub acks: u64,
    /// Authentic notices received.
    pub notices: u64,
    /// Datagrams refused (bad MAC, stale, unknown).
    pub refused_datagrams: u64,
    /// Requests offered by the server.
    pub offers: u64,
    /// Passwords checked (S207).
    pub password_checks: u64,
    /// Wrong passwords.
    pub wrong_passwords: u64,
    /// Requests refused without checking, because of back-off.
    pub refused_unchecked: u64,
    /// Times the server channel failed with requests still to fetch and was opened again.
    pub reconnects: u64,
}

struct Outstanding {
    nonce: [u8; 16],
    timestamp_ms: u64,
    retry_at: Instant,
    retries_left: u32,
}

struct Pending {
    issuer_addr: SocketAddr,
    candidates: Vec<SocketAddr>,
    keys: SessionKeys,
    accepted_at: Instant,
    deadline: Instant,
}

struct Live {
    peer: PeerSession,
    phase: Phase,
}

/// Where a session stands towards the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the issuer's next Sync (until then, [`SYNC_WAIT`]).
    AwaitSync(Instant),
    /// An attempt runs.
    Punching,
    /// The outcome went to the server; nothing more is owed it.
    Reported,
}

/// The device's own channel to the server (S206): opened when a notice arrives, closed
/// when nothing is left to fetch or report, opened again after a back-off when it fails
/// with requests still to fetch. One stream at a time.
// One per acceptor, never in a table: the open variant's size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum ServerLink {
    /// No stream.
    Idle,
    /// The stream is being opened.
    Connecting(StreamId),
    /// The stream is open and runs the channel.
    Open(SecureStream),
    /// The last stream failed with requests still to fetch; the next opens at this time.
    Waiting(Instant),
}

impl ServerLink {
    fn open(&self) -> Option<&SecureStream> {
        match self {
            ServerLink::Open(s) => Some(s),
            _ => None,
        }
    }

    fn is_connecting(&self, id: StreamId) -> bool {
        matches!(self, ServerLink::Connecting(c) if *c == id)
    }

    fn open_mut(&mut self) -> Option<&mut SecureStream> {
        match self {
            ServerLink::Open(s) => Some(s),
            _ => None,
        }
    }
}

/// How long the acceptor waits for the issuer's next Sync.
const SYNC_WAIT: Duration = Duration::from_secs(10);
/// Request ids remembered to ignore repeated notices.
const SEEN: usize = 64;

/// The request-accepting device.
///
/// Sends and receives UDP on [`AcceptorConfig::local`] (and, while hole punching with
/// the birthday technique, on extra ports of the same address); opens one stream to the
/// server when a notice arrives.
pub struct Acceptor {
    cfg: AcceptorConfig,
    rng: Rng,
    outbox: Outbox<RendezvousEvent>,
    clock_offset_ms: i64,
    /// The timestamp of the last registration sent; the next one is larger.
    last_timestamp: u64,
    /// The timestamp of the last registration the server accepted.
    last_accepted: u64,
    next_register: Instant,
    outstanding: Option<Outstanding>,
    public: Option<SocketAddr>,
    pending: VecDeque<u64>,
    fetched: VecDeque<u64>,
    seen: VecDeque<u64>,
    server: ServerLink,
    /// Failures of the server channel in a row (reset once a channel is established).
    server_failures: u32,
    next_stream: u64,
    requests: BTreeMap<u64, Pending>,
    sessions: BTreeMap<u64, Live>,
    backoff: Backoff,
    stats: AcceptorStats,
}

impl core::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Acceptor")
            .field("device", &self.cfg.device)
            .field("public", &self.public)
            .field("sessions", &self.sessions.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// A device that registers at once (its first timeout is due immediately).
    pub fn new(cfg: AcceptorConfig, rng: Rng) -> Acceptor {
        let backoff = Backoff::new(cfg.backoff);
        Acceptor {
            cfg,
            rng,
            outbox: Outbox::default(),
            clock_offset_ms: 0,
            last_timestamp: 0,
            last_accepted: 0,
            next_register: Instant::ZERO,
            outstanding: None,
            public: None,
            pending: VecDeque::new(),
            fetched: VecDeque::new(),
            seen: VecDeque::new(),
            server: ServerLink::Idle,
            server_failures: 0,
            next_stream: 0,
            requests: BTreeMap::new(),
            sessions: BTreeMap::new(),
            backoff,
            stats: AcceptorStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> AcceptorStats {
        self.stats
    }

    /// Our public address as the server last acknowledged it.
    pub fn public_addr(&self) -> Option<SocketAddr> {
        self.public
    }

    /// Whether the direct connection of `session` is up.
    pub fn is_connected(&self, session: u64) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|l| l.peer.is_connected())
    }

    /// The sessions in progress or connected.
    pub fn sessions(&self) -> Vec<u64> {
        self.sessions.keys().copied().collect()
    }

    /// Send one application message to the issuer of `session` (S209).
    pub fn send(&mut self, now: Instant, session: u64, data: &[u8]) -> Result<(), Error> {
        let live = self
            .sessions
            .get_mut(&session)
            .ok_or(RendezvousError::UnknownSession(session))?;
        live.peer.send(now, data, &mut self.outbox)
    }

    /// Close the direct connection of `session` gracefully.
    pub fn close(&mut self, now: Instant, session: u64) -> Result<(), Error> {
        let live = self
            .sessions
            .get_mut(&session)
            .ok_or(RendezvousError::UnknownSession(session))?;
        live.peer.close(now, &mut self.outbox)
    }

    fn wall_ms(&self, now: Instant) -> u64 {
        super::wall_millis(self.cfg.time_anchor, now).saturating_add_signed(self.clock_offset_ms)
    }

    fn transmit(&mut self, to: SocketAddr, data: Vec<u8>) -> Result<(), Error> {
        self.outbox.push(Output::Transmit(Transmit {
            from: self.cfg.local,
            to,
            data,
        }))
    }

    // ----- S202: registration -----

    fn register(&mut self, now: Instant, retries_left: u32) -> Result<(), Error> {
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let timestamp_ms = self.wall_ms(now).max(self.last_timestamp.saturating_add(1));
        self.last_timestamp = timestamp_ms;
        let data = Register {
            device: self.cfg.device,
            timestamp_ms,
            nonce,
        }
        .encode(self.cfg.registration_key.as_bytes())?;
        self.stats.registrations += 1;
        self.outstanding = Some(Outstanding {
            nonce,
            timestamp_ms,
            retry_at: now + self.cfg.ack_timeout,
            retries_left,
        });
        self.transmit(self.cfg.server_udp, data)
    }

    fn on_server_datagram(&mut self, now: Instant, data: &[u8]) -> Result<(), Error> {
        let limits = Limits::default();
        let msg = Message::decode(data, &limits).map_err(RendezvousError::from)?;
        let key = self.cfg.registration_key.clone();
        let authentic = messages::verify_mac(&msg, key.as_bytes(), REGISTRATION_MAC_LEN);
        if !authentic {
            self.stats.refused_datagrams += 1;
            return Err(RendezvousError::BadMac.into());
        }
        let decoded = AcceptorDatagram::decode(&msg, &limits).map_err(|e| {
            let e = messages::refusal(e);
            if matches!(e, RendezvousError::UnexpectedMessage(_)) {
                self.stats.refused_datagrams += 1;
            }
            e
        })?;
        match decoded {
            AcceptorDatagram::RegisterAck(ack) => {
                let sent = if ack.device == self.cfg.device {
                    self.outstanding.take_if(|o| o.nonce == ack.nonce)
                } else {
                    None
                };
                let Some(sent) = sent else {
                    self.stats.refused_datagrams += 1;
                    return Err(RendezvousError::UnknownSession(0).into());
                };
                match ack.status {
                    AckStatus::Accepted => {
                        self.stats.acks += 1;
                        self.last_accepted = self.last_accepted.max(sent.timestamp_ms);
                        if self.public != Some(ack.observed) {
                            self.public = Some(ack.observed);
                            self.outbox.event(RendezvousEvent::Registered {
                                public: ack.observed,
                            })?;
                        }
                        Ok(())
                    }
                    AckStatus::Stale => {
                        // Our clock is off: take the server's (bounded) and try again.
                        let ours = super::wall_millis(self.cfg.time_anchor, now) as i128;
                        let max = self.cfg.max_clock_correction.as_millis() as i128;
                        let offset = (i128::from(ack.server_time_ms) - ours).clamp(-max, max);
                        self.clock_offset_ms = offset as i64;
                        // The refused timestamp binds nothing: the server only requires
                        // ours to grow past the last one it accepted. Without this, a
                        // clock that ran ahead would keep every later timestamp ahead
                        // (and refused) until real time caught up with it.
                        self.last_timestamp = self.last_accepted;
                        if sent.retries_left > 0 {
                            self.register(now, sent.retries_left - 1)?;
                        }
                        Ok(())
                    }
                }
            }
            AcceptorDatagram::Notice(notice) => {
                let age = notice.server_time_ms.abs_diff(self.wall_ms(now));
                if notice.device != self.cfg.device
                    || age > self.cfg.notice_max_age.as_millis() as u64
                {
                    self.stats.refused_datagrams += 1;
                    return Err(RendezvousError::UnknownSession(notice.request).into());
                }
                self.stats.notices += 1;
                if self.seen.contains(&notice.request) {
                    return Ok(());
                }
                if self.seen.len() >= SEEN {
                    self.seen.pop_front();
                }
                self.seen.push_back(notice.request);
                if self.pending.len() >= self.cfg.max_pending {
                    return Err(Error::CapacityExceeded {
                        what: "acceptor pending notices",
                        bound: self.cfg.max_pending,
                    });
                }
                self.pending.push_back(notice.request);
                self.ensure_server()
            }
        }
    }

    // ----- S206: the device's own channel to the server -----

    fn ensure_server(&mut self) -> Result<(), Error> {
        match &self.server {
            // The reconnect timer opens the stream and fetches what waits.
            ServerLink::Connecting(_) | ServerLink::Waiting(_) => Ok(()),
            ServerLink::Open(s) if !s.is_closed() => self.send_fetches(),
            _ => {
                self.next_stream += 1;
                let id = StreamId::outbound(self.next_stream);
                self.server = ServerLink::Connecting(id);
                self.outbox.push(Output::Connect {
                    id,
                    local: SocketAddr::new(self.cfg.local.ip(), 0),
                    remote: self.cfg.server_stream,
                })
            }
        }
    }

    fn send_fetches(&mut self) -> Result<(), Error> {
        let Some(server) = self
            .server
            .open_mut()
            .filter(|s| s.connection().is_established())
        else {
            return Ok(());
        };
        // At most `max_pending` fetches await their offer at once.
        while self.fetched.len() < self.cfg.max_pending {
            let Some(request) = self.pending.pop_front() else {
                break;
            };
            let msg = Fetch {
                request,
                device: self.cfg.device,
            }
            .encode()?;
            server.send(&msg, &mut self.outbox)?;
            self.fetched.push_back(request);
        }
        Ok(())
    }

    /// The server stream failed or closed (issue 13 item 3). Requests fetched but not yet
    /// offered go back to the pending queue (the server takes a fetch back when the
    /// device's stream ends before its offer), and while any wait the channel is opened
    /// again after a back-off (`reconnect_backoff`, doubling), up to `reconnects` failures
    /// in a row. Accepted offers die with the stream: their password can only come over
    /// it, and the server refuses them to their issuers.
    ///
    /// It also registers again at once: a stream that failed can mean the path to the
    /// server changed (a new public address, a NAT that lost its bindings), and the
    /// directory should hear of it now rather than at the next refresh (up to 26 s).
    fn server_lost(&mut self, now: Instant) {
        self.server = ServerLink::Idle;
        self.next_register = self.next_register.min(now);
        while let Some(request) = self.fetched.pop_back() {
            self.pending.push_front(request);
        }
        self.requests.clear();
        if self.pending.is_empty() {
            return;
        }
        if self.server_failures >= self.cfg.reconnects {
            // Given up: the server's notices or the issuer's timeout end these requests.
            self.server_failures = 0;
            self.pending.clear();
            return;
        }
        let wait = crate::time::doubled(
            self.cfg.reconnect_backoff,
            self.server_failures,
            Duration::from_secs(60),
        );
        self.server_failures += 1;
        self.stats.reconnects += 1;
        self.server = ServerLink::Waiting(now + wait);
    }

    fn send_server(&mut self, message: &[u8]) -> Result<(), Error> {
        let server = self
            .server
            .open_mut()
            .ok_or(RendezvousError::NotConnected)?;
        server.send(message, &mut self.outbox)
    }

    fn on_server_messages(&mut self, now: Instant, messages: Vec<Vec<u8>>) -> Result<(), Error> {
        let mut result = Ok(());
        for m in messages {
            if let Err(e) = self.on_server_message(now, &m) {
                result = Err(e);
            }
        }
        result
    }

    fn on_server_message(&mut self, now: Instant, bytes: &[u8]) -> Result<(), Error> {
        let (_, decoded) = messages::read(bytes, &Limits::default(), ToAcceptor::decode)?;
        match decoded {
            ToAcceptor::Offer(offer) => {
                self.fetched.retain(|r| *r != offer.request);
                self.on_offer(now, offer)
            }
            ToAcceptor::SealedPassword(sealed) => self.on_sealed_password(now, sealed),
            ToAcceptor::Sync(sync) => {
                let live = self
                    .sessions
                    .get_mut(&sync.request)
                    .ok_or(RendezvousError::UnknownSession(sync.request))?;
                // DCUtR: the side receiving Sync starts at once. A repeated or older one
                // is refused: every attempt runs once.
                if sync.attempt > self.cfg.peer.attempts
                    || !live.peer.schedule_attempt(now, sync.attempt)
                {
                    return Err(RendezvousError::UnexpectedMessage(SYNC).into());
                }
                live.phase = Phase::Punching;
                live.peer
                    .handle_timeout(now, self.rng.as_mut(), &mut self.outbox)
            }
            ToAcceptor::Refused(refused) => {
                self.fetched.retain(|r| *r != refused.request);
                self.requests.remove(&refused.request);
                // The request is over here; an issuer that sends it again (same id, on a
                // new stream after its own failed) is noticed afresh.
                self.seen.retain(|r| *r != refused.request);
                self.outbox.event(RendezvousEvent::Refused {
                    request: refused.request,
                    reason: refused.reason,
                })
            }
        }
    }

    fn refuse(&mut self, request: u64, reason: RequestRefusal) -> Result<(), Error> {
        self.send_server(&Refused::new(request, reason).encode()?)
    }

    /// Refuse because of back-off, saying whether it holds for the whole device.
    fn refuse_waiting(
        &mut self,
        request: u64,
        reason: RequestRefusal,
        device_wide: bool,
    ) -> Result<(), Error> {
        let msg = Refused {
            request,
            reason,
            device_wide,
        }
        .encode()?;
        self.send_server(&msg)
    }

    /// S206: the request arrived; answer with our share, signed by the device key.
    fn on_offer(&mut self, now: Instant, offer: Offer) -> Result<(), Error> {
        self.stats.offers += 1;
        if offer.device != self.cfg.device {
            return self.refuse(offer.request, RequestRefusal::ProtocolError);
        }
        if self.requests.len() + self.sessions.len() >= self.cfg.max_sessions
            || self.requests.contains_key(&offer.request)
            || self.sessions.contains_key(&offer.request)
        {
            return self.refuse(offer.request, RequestRefusal::Busy);
        }
        self.outbox.event(RendezvousEvent::ConnectionRequested {
            request: offer.request,
            issuer: offer.issuer_addr,
        })?;
        let issuer = offer.issuer_addr.ip();
        if let Err(wait) = self.backoff.check(issuer, now) {
            // Backing off: refuse before the issuer can even send a password.
            self.stats.refused_unchecked += 1;
            let reason = RequestRefusal::RateLimited {
                retry_after: wait.retry_after,
            };
            self.outbox.event(RendezvousEvent::PasswordRefused {
                request: offer.request,
                issuer,
                reason,
            })?;
            return self.refuse_waiting(offer.request, reason, wait.device_wide);
        }
        let ClientAuthMode::Certificate {
            identity: Some(identity),
            ..
        } = &self.cfg.channel.auth
        else {
            return Err(RendezvousError::NoDeviceIdentity.into());
        };
        let share = Share::generate(self.rng.as_mut());
        let transcript = TranscriptInput {
            request: offer.request,
            device: self.cfg.device,
            issuer_share: &offer.share,
            issuer_random: &offer.random,
            acceptor_share: &share.public,
            acceptor_random: &share.random,
        }
        .hash();
        let signature = sign_transcript(&identity.key, &transcript);
        let (public, random) = (share.public, share.random);
        let Ok(keys) = SessionKeys::derive(share.key_pair, &offer.share, transcript) else {
            return self.refuse(offer.request, RequestRefusal::ProtocolError);
        };
        let accept = Accept {
            request: offer.request,
            share: public,
            random,
            signature,
        }
        .encode()?;
        self.requests.insert(
            offer.request,
            Pending {
                issuer_addr: offer.issuer_addr,
                candidates: offer.candidates,
                keys,
                accepted_at: now,
                deadline: now + self.cfg.password_wait,
            },
        );
        self.send_server(&accept)
    }

    /// S207: check the password, in constant time; only then go on to S208.
    fn on_sealed_password(&mut self, now: Instant, sealed: SealedPassword) -> Result<(), Error> {
        let request = sealed.request;
        let pending = self
            .requests
            .remove(&request)
            .ok_or(RendezvousError::UnknownSession(request))?;
        let issuer = pending.issuer_addr.ip();
        if let Err(wait) = self.backoff.check(issuer, now) {
            self.stats.refused_unchecked += 1;
            let reason = RequestRefusal::RateLimited {
                retry_after: wait.retry_after,
            };
            self.outbox.event(RendezvousEvent::PasswordRefused {
                request,
                issuer,
                reason,
            })?;
            return self.refuse_waiting(request, reason, wait.device_wide);
        }
        self.stats.password_checks += 1;
        let verdict = pending
            .keys
            .open_password(&sealed.sealed)
            .map(|candidate| self.cfg.password.matches(&candidate));
        match verdict {
            Ok(true) => {
                self.backoff.success(issuer);
                let rtt = now.saturating_duration_since(pending.accepted_at);
                let peer = PeerSession::new(
                    request,
                    Side::Acceptor,
                    &pending.keys,
                    Endpoints {
                        main: self.cfg.local,
                        candidates: pending.candidates,
                        rtt,
                    },
                    self.cfg.peer,
                    self.cfg.time_anchor,
                );
                self.sessions.insert(
                    request,
                    Live {
                        peer,
                        phase: Phase::AwaitSync(now + SYNC_WAIT),
                    },
                );
                let msg = Proceed { request }.encode()?;
                self.send_server(&msg)
            }
            Ok(false) | Err(_) => {
                self.stats.wrong_passwords += 1;
                let wait = self.backoff.failure(issuer, now);
                let reason = match verdict {
                    Ok(_) => RequestRefusal::WrongPassword {
                        retry_after: wait.retry_after,
                    },
                    Err(_) => RequestRefusal::ProtocolError,
                };
                self.outbox.event(RendezvousEvent::PasswordRefused {
                    request,
                    issuer,
                    reason,
                })?;
                self.refuse_waiting(request, reason, wait.device_wide)
            }
        }
    }

    /// Report outcomes, drop finished sessions, and close the server stream when idle.
    ///
    /// Every step is taken for every session even after the outbox refused an output
    /// (counted as lost); the first error is returned at the end.
    fn settle(&mut self, now: Instant) -> Result<(), Error> {
        let mut result = Ok(());
        let mut reports = Vec::new();
        for (id, live) in self.sessions.iter_mut() {
            if let Some(expired) = live.peer.take_expired_attempt(now, self.rng.as_mut()) {
                if expired >= self.cfg.peer.attempts {
                    result = result.and(live.peer.fail(
                        PeerFailure::HolePunchFailed { attempts: expired },
                        &mut self.outbox,
                    ));
                } else {
                    live.phase = Phase::AwaitSync(now + SYNC_WAIT);
                }
            }
            if matches!(live.phase, Phase::AwaitSync(t) if now >= t) {
                live.phase = Phase::Punching;
                let attempts = live.peer.attempt();
                let reason = if attempts == 0 {
                    PeerFailure::ServerLost
                } else {
                    PeerFailure::HolePunchFailed { attempts }
                };
                result = result.and(live.peer.fail(reason, &mut self.outbox));
            }
            if let (false, Some(connected)) = (live.phase == Phase::Reported, live.peer.outcome()) {
                live.phase = Phase::Reported;
                reports.push(Outcome {
                    request: *id,
                    connected,
                });
            }
        }
        for report in reports {
            // The server may be gone; the outcome is then moot.
            let _ = report
                .encode()
                .map_err(Error::from)
                .and_then(|msg| self.send_server(&msg));
        }
        self.sessions.retain(|_, l| !l.peer.is_gone());
        self.requests.retain(|_, p| p.deadline > now);
        if self.server.open().is_some_and(SecureStream::is_closed) {
            self.server_lost(now);
        }
        let busy = !self.pending.is_empty()
            || !self.fetched.is_empty()
            || !self.requests.is_empty()
            || self.sessions.values().any(|l| l.phase != Phase::Reported);
        if !busy && let Some(server) = self.server.open_mut() {
            // The stream ends even if the outbox refused its close (counted as lost).
            result = result.and(server.close(&mut self.outbox));
            self.server = ServerLink::Idle;
        }
        result
    }
}

/// Every deadline the acceptor keeps. [`Acceptor::timers`] lists the armed ones:
/// `poll_timeout` is the earliest, `handle_timeout` fires each that is due, so a timer
/// added here is both armed and handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// The next registration: always armed, as S202 also keeps the NAT binding open.
    Register,
    /// The repeat of an unacknowledged registration.
    RegisterRetry,
    /// The channel to the server (handshake and idle deadlines).
    ServerChannel,
    /// The server channel opens again after a failure.
    ServerReconnect,
    /// An accepted offer waits for its sealed password ([`AcceptorConfig::password_wait`]).
    PasswordWait(u64),
    /// A session waits for the issuer's next Sync ([`SYNC_WAIT`]).
    SyncWait(u64),
    /// A session's own timers: punching, its channel, its link.
    Peer(u64),
}

impl Acceptor {
    /// The armed timers, in the order `handle_timeout` fires them: registration first
    /// (a new registration supersedes a pending repeat), then the server channel, then
    /// the sessions.
    fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        let own = [
            Some((Timer::Register, self.next_register)),
            self.outstanding
                .as_ref()
                .map(|o| (Timer::RegisterRetry, o.retry_at)),
            self.server
                .open()
                .and_then(|s| s.connection().poll_timeout())
                .map(|t| (Timer::ServerChannel, t)),
            match self.server {
                ServerLink::Waiting(t) => Some((Timer::ServerReconnect, t)),
                _ => None,
            },
        ];
        let waits = self
            .requests
            .iter()
            .map(|(id, p)| (Timer::PasswordWait(*id), p.deadline));
        let sessions = self.sessions.iter().flat_map(|(id, l)| {
            [
                l.peer.poll_timeout().map(|t| (Timer::Peer(*id), t)),
                match l.phase {
                    Phase::AwaitSync(t) => Some((Timer::SyncWait(*id), t)),
                    Phase::Punching | Phase::Reported => None,
                },
            ]
            .into_iter()
            .flatten()
        });
        own.into_iter().flatten().chain(waits).chain(sessions)
    }

    /// Run one due timer. Each re-checks its deadline: an earlier one may have moved it
    /// (a registration re-arms the repeat).
    fn fire(&mut self, now: Instant, timer: Timer) -> Result<(), Error> {
        match timer {
            Timer::Register => {
                let every = super::jitter(
                    self.rng.as_mut(),
                    self.cfg.keepalive.0,
                    self.cfg.keepalive.1,
                );
                self.next_register = now + every;
                self.register(now, self.cfg.register_retries)
            }
            Timer::RegisterRetry => match self.outstanding.take_if(|o| now >= o.retry_at) {
                Some(o) if o.retries_left > 0 => self.register(now, o.retries_left - 1),
                _ => Ok(()),
            },
            Timer::ServerChannel => match self.server.open_mut() {
                Some(server) => {
                    let result = server.handle_timeout(now, &mut self.outbox);
                    // A failed channel has ended its stream (even if the outbox refused
                    // the close: that is counted as lost).
                    if server.is_closed() {
                        self.server_lost(now);
                    }
                    result.map(drop)
                }
                None => Ok(()),
            },
            Timer::ServerReconnect => match self.server {
                ServerLink::Waiting(t) if now >= t => {
                    self.server = ServerLink::Idle;
                    self.ensure_server()
                }
                _ => Ok(()),
            },
            // Expiry is applied by `settle`, which runs after every input as well, so a
            // late input cannot revive what ran out.
            Timer::PasswordWait(_) | Timer::SyncWait(_) => Ok(()),
            Timer::Peer(id) => match self.sessions.get_mut(&id) {
                Some(live) => live
                    .peer
                    .handle_timeout(now, self.rng.as_mut(), &mut self.outbox),
                None => Ok(()),
            },
        }
    }
}

impl Acceptor {
    /// One input; `settle` runs after it (see `timer_driven_actor`).
    fn input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::Datagram { from, to, data } => {
                if from == self.cfg.server_udp {
                    self.on_server_datagram(now, data)
                } else {
                    let sessions = &mut self.sessions;
                    route_datagram(
                        now,
                        from,
                        to,
                        data,
                        |id| sessions.get_mut(&id).map(|l| &mut l.peer),
                        self.rng.as_mut(),
                        &mut self.outbox,
                    )
                }
            }
            Input::StreamConnected { id, .. } if self.server.is_connecting(id) => {
                self.server = ServerLink::Idle;
                let conn = Connection::client(self.cfg.channel.clone(), now, self.rng.as_mut())?;
                let mut server = SecureStream::new(id, conn, now);
                server.pump(&mut self.outbox)?;
                self.server = ServerLink::Open(server);
                Ok(())
            }
            Input::StreamData { id, data } => match self.server.open_mut().filter(|s| s.id() == id)
            {
                Some(server) => {
                    let mut messages = Vec::new();
                    let fed = server.feed(
                        now,
                        data,
                        self.rng.as_mut(),
                        &mut self.outbox,
                        &mut messages,
                    );
                    if server.connection().is_established() {
                        self.server_failures = 0;
                    }
                    self.send_fetches()?;
                    self.on_server_messages(now, messages)?;
                    fed
                }
                None => Err(Error::UnknownStream(id)),
            },
            Input::StreamClosed { id } => {
                if self.server.is_connecting(id) {
                    self.server_lost(now);
                    Err(RendezvousError::ServerConnectFailed.into())
                } else if let Some(server) = self.server.open_mut().filter(|s| s.id() == id) {
                    // A truncation is recorded in the connection; the stream is over either way.
                    let _ = server.stream_closed();
                    self.server_lost(now);
                    Ok(())
                } else {
                    Err(Error::UnknownStream(id))
                }
            }
            Input::StreamAccepted { id, .. } => super::device_refuses(Some(id), &mut self.outbox),
            Input::StreamConnected { id, .. } => Err(Error::UnknownStream(id)),
            Input::Packet { .. } => super::device_refuses(None, &mut self.outbox),
        }
    }
}

super::timer_driven_actor!(impl [] Acceptor);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::cert::CertificateAuthority;
    use crate::io::Actor;
    use crate::rendezvous::DerivedRegistrationKeys;
    use crate::rendezvous::messages::{Notice, RegisterAck};
    use alloc::boxed::Box;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng as _, SeedableRng};

    const ANCHOR: UnixTime = UnixTime(1_800_000_000);

    fn server_udp() -> SocketAddr {
        "130.74.23.6:1200".parse().unwrap()
    }

    fn acceptor(tweak: impl FnOnce(&mut AcceptorConfig)) -> (Acceptor, RegistrationKey) {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let ca = CertificateAuthority::generate("CA", &mut rng);
        let id = ca
            .issue_identity("device-2133", &[], ANCHOR, 86_400, &mut rng)
            .unwrap();
        let key = DerivedRegistrationKeys::new([1; 32]).device_key(DeviceId(2133));
        let mut cfg = AcceptorConfig::new(AcceptorParams {
            device: DeviceId(2133),
            registration_key: key.clone(),
            identity: Arc::new(id),
            trust: TrustStore::with(ca.certificate().clone()),
            server_name: "rendezvous.example".into(),
            server_udp: server_udp(),
            server_stream: "130.74.23.6:1300".parse().unwrap(),
            local: "192.168.1.3:2000".parse().unwrap(),
            password: Password::new(b"pw", &mut rng).unwrap(),
            time_anchor: ANCHOR,
        });
        tweak(&mut cfg);
        (Acceptor::new(cfg, Box::new(rng)), key)
    }

    fn notice(key: &RegistrationKey, request: u64, now: Instant) -> Vec<u8> {
        Notice {
            request,
            device: DeviceId(2133),
            server_time_ms: super::super::wall_millis(ANCHOR, now),
        }
        .encode(key.as_bytes())
        .unwrap()
    }

    fn datagram(
        a: &mut Acceptor,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<(), Error> {
        let r = a.handle_input(
            now,
            Input::Datagram {
                from,
                to: "192.168.1.3:2000".parse().unwrap(),
                data,
            },
        );
        while a.poll_output().is_some() {}
        r
    }

    #[test]
    fn registers_at_once_then_every_20_to_26_seconds() {
        let (mut a, _) = acceptor(|_| {});
        assert_eq!(a.poll_timeout(), Some(Instant::ZERO));
        let mut sent = Vec::new();
        let mut now = Instant::from_secs(1);
        for _ in 0..20 {
            a.handle_timeout(now);
            while let Some(o) = a.poll_output() {
                if let Output::Transmit(t) = o {
                    assert_eq!(t.to, server_udp());
                    sent.push(now);
                }
            }
            now = a.poll_timeout().unwrap();
        }
        // Without acknowledgments each registration is retried 3 times, 2 s apart.
        let firsts: Vec<_> = sent.iter().step_by(4).collect();
        for pair in firsts.windows(2) {
            let gap = *pair[1] - *pair[0];
            assert!(
                gap >= Duration::from_secs(20) && gap <= Duration::from_secs(26),
                "{gap:?}"
            );
        }
        assert_eq!(sent[1] - sent[0], Duration::from_secs(2));
    }

    /// The registrations `a` sent to the server since the last call.
    fn registrations(a: &mut Acceptor) -> Vec<Register> {
        let mut out = Vec::new();
        while let Some(o) = a.poll_output() {
            if let Output::Transmit(t) = o
                && t.to == server_udp()
            {
                let msg = Message::decode(&t.data, &Limits::default()).unwrap();
                out.push(Register::decode(&msg, &Limits::default()).unwrap());
            }
        }
        out
    }

    #[test]
    fn a_clock_that_ran_ahead_is_corrected_at_the_first_stale_answer() {
        // The device's clock is ten minutes ahead of the server's.
        let (mut a, key) = acceptor(|c| c.time_anchor = UnixTime(ANCHOR.0 + 600));
        let now = Instant::from_secs(1);
        a.handle_timeout(now);
        let first = registrations(&mut a).remove(0);
        let server_ms = super::super::wall_millis(ANCHOR, now);
        assert_eq!(first.timestamp_ms, server_ms + 600_000);
        let stale = RegisterAck {
            device: DeviceId(2133),
            nonce: first.nonce,
            observed: "202.204.16.13:3400".parse().unwrap(),
            server_time_ms: server_ms,
            lifetime: Duration::from_secs(90),
            status: AckStatus::Stale,
        }
        .encode(key.as_bytes())
        .unwrap();
        a.handle_input(
            now,
            Input::Datagram {
                from: server_udp(),
                to: "192.168.1.3:2000".parse().unwrap(),
                data: &stale,
            },
        )
        .unwrap();
        // The retry carries the server's time, not one past the refused timestamp.
        let retry = registrations(&mut a).remove(0);
        assert!(
            retry.timestamp_ms.abs_diff(server_ms) < 1_000,
            "{} ms ahead",
            retry.timestamp_ms - server_ms
        );
    }

    #[test]
    fn notices_are_authenticated_deduplicated_and_bounded() {
        let (mut a, key) = acceptor(|c| c.max_pending = 3);
        let now = Instant::from_secs(5);
        // Forged: wrong key.
        let forged = Notice {
            request: 1,
            device: DeviceId(2133),
            server_time_ms: super::super::wall_millis(ANCHOR, now),
        }
        .encode(&[0; 32])
        .unwrap();
        assert_eq!(
            datagram(&mut a, now, server_udp(), &forged),
            Err(RendezvousError::BadMac.into())
        );
        // Old: more than a minute by the server's clock.
        let old = notice(&key, 2, Instant::from_secs(0));
        assert_eq!(
            datagram(&mut a, Instant::from_secs(100), server_udp(), &old),
            Err(RendezvousError::UnknownSession(2).into())
        );
        // From somewhere else than the server: treated as a peer datagram, refused.
        let good = notice(&key, 3, now);
        assert_eq!(
            datagram(&mut a, now, "66.6.6.6:1200".parse().unwrap(), &good),
            Err(RendezvousError::UnknownSession(3).into())
        );
        assert_eq!(a.stats().notices, 0);
        // Genuine ones queue (the stream to the server is still connecting), repeats are
        // ignored, and the queue is bounded.
        for r in [10, 10, 11, 12] {
            datagram(&mut a, now, server_udp(), &notice(&key, r, now)).unwrap();
        }
        assert_eq!(
            datagram(&mut a, now, server_udp(), &notice(&key, 13, now)),
            Err(Error::CapacityExceeded {
                what: "acceptor pending notices",
                bound: 3
            })
        );
        assert_eq!(a.stats().notices, 5);
        // The remembered ids are bounded too.
        for r in 100..300 {
            // Past the pending bound these are refused; only the memory's bound matters.
            let _ = datagram(&mut a, now, server_udp(), &notice(&key, r, now));
        }
        assert!(a.seen.len() <= SEEN);
    }

    /// Issue 13 item 3: when its server stream fails with a request still to fetch, the
    /// acceptor registers again at once and opens a new stream after its back-off.
    #[test]
    fn item_3_a_failed_server_stream_re_registers_and_reconnects() {
        let (mut a, key) = acceptor(|_| {});
        let now = Instant::from_secs(1);
        a.handle_timeout(now);
        registrations(&mut a);
        datagram(&mut a, now, server_udp(), &notice(&key, 7, now)).unwrap();
        let id = StreamId::outbound(1);
        let local = "192.168.1.3:40000".parse().unwrap();
        a.handle_input(now, Input::StreamConnected { id, local })
            .unwrap();
        while a.poll_output().is_some() {}
        // The stream dies before the fetch went out.
        let t = now + Duration::from_millis(50);
        a.handle_input(t, Input::StreamClosed { id }).unwrap();
        assert_eq!(a.poll_timeout(), Some(t));
        a.handle_timeout(t);
        assert_eq!(registrations(&mut a).len(), 1, "registered again at once");
        assert_eq!(a.pending, [7]);
        // After the back-off (1 s) a new stream opens.
        let later = t + Duration::from_secs(1);
        assert_eq!(a.poll_timeout(), Some(later));
        a.handle_timeout(later);
        let mut connects = Vec::new();
        while let Some(o) = a.poll_output() {
            if let Output::Connect { id, .. } = o {
                connects.push(id);
            }
        }
        assert_eq!(connects, [StreamId::outbound(2)]);
        assert_eq!(a.stats().reconnects, 1);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let (mut a, key) = acceptor(|_| {});
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        let mut now = Instant::from_secs(1);
        let valid = notice(&key, 5, now);
        for i in 0..3000u32 {
            let len = (rng.next_u32() % 200) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| rng.next_u32() as u8).collect();
            if i % 3 == 0 {
                // Mostly well-framed: a valid message with a few bits flipped.
                data = valid.clone();
                let at = (rng.next_u32() as usize) % data.len();
                data[at] ^= 1 << (rng.next_u32() % 8);
            }
            let from = if i % 2 == 0 {
                server_udp()
            } else {
                "66.6.6.6:9".parse().unwrap()
            };
            // Garbage is refused with an error; the test is that nothing panics.
            let _ = datagram(&mut a, now, from, &data);
            let _ = a.handle_input(
                now,
                Input::StreamData {
                    id: StreamId::outbound(1),
                    data: &data,
                },
            );
            let _ = a.handle_input(
                now,
                Input::StreamClosed {
                    id: StreamId::inbound(i.into()),
                },
            );
            now += Duration::from_millis(7);
            a.handle_timeout(now);
            while a.poll_output().is_some() {}
        }
        assert!(a.pending.len() <= a.cfg.max_pending);
    }
}

//! The rendezvous server (サーバ装置 101): the device directory and the relay of
//! connection requests (S202, S204, S205, and the server's half of S203 and S206).

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use super::directory::{Directory, DirectoryEntry, MemoryDirectory, Registered};
use super::keys::RegistrationKeys;
use super::messages::{
    self, AcceptorHello, AckStatus, ConnectRequest, Fetch, FromDevice, FromIssuer, Notice, Offer,
    Probe, ProbeAck, REGISTER, REGISTRATION_MAC_LEN, Refused, Register, RegisterAck,
    ServerDatagram,
};
use super::{DeviceId, RegistrationRefusal, RendezvousError, RendezvousEvent, RequestRefusal};
use crate::channel::SecureStream;
use crate::channel::{ClientCertPolicy, Connection};
use crate::crypto::cert::{CertifiedKey, TrustStore};
use crate::crypto::kdf::HmacSha256Key;
use crate::io::{Input, Outbox, Output, StreamId, Transmit};
use crate::ratelimit::{RateLimit, SourceLimiter};
use crate::wire::{Limits, Message, WireError};
use crate::{Error, Instant, Rng, UnixTime};

/// The values a [`RendezvousServerConfig`] has no default for, by name (so two addresses
/// or ports cannot be swapped without it showing).
pub struct RendezvousServerParams {
    /// The UDP address registrations (S202) and probes arrive at; notices (S205) leave
    /// from it (seed: 130.74.23.6:1200).
    pub udp: SocketAddr,
    /// The stream port issuers connect to (S203; seed: 1201), on `udp`'s IP address.
    pub issuer_port: u16,
    /// The stream port devices connect to (S206; seed: 1300), on `udp`'s IP address.
    pub device_port: u16,
    /// The server's certificate and key, shown on both stream ports (shared, not copied).
    pub identity: Arc<CertifiedKey>,
    /// The CAs whose device certificates (naming `device-<id>`) the device port accepts.
    pub device_trust: TrustStore,
    /// Each device's registration key.
    pub keys: Box<dyn RegistrationKeys + Send>,
    /// Wall-clock time at `Instant::ZERO`.
    pub time_anchor: UnixTime,
}

/// Configuration of a [`RendezvousServer`]: [`RendezvousServerConfig::new`] takes what has
/// no default, every other field is public and starts at the default its documentation
/// states.
///
/// ```
/// use std::sync::Arc;
/// use deputy::UnixTime;
/// use deputy::crypto::cert::{CertificateAuthority, TrustStore};
/// use deputy::rendezvous::{DerivedRegistrationKeys, RendezvousServerConfig, RendezvousServerParams};
/// use rand_core::SeedableRng;
///
/// let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
/// let anchor = UnixTime(1_800_000_000);
/// let ca = CertificateAuthority::generate("operator CA", &mut rng);
/// let identity = ca.issue_identity("rendezvous.example", &[], anchor, 86_400, &mut rng).unwrap();
/// let mut config = RendezvousServerConfig::new(RendezvousServerParams {
///     udp: "130.74.23.6:1200".parse().unwrap(),
///     issuer_port: 1201,
///     device_port: 1300,
///     identity: Arc::new(identity),
///     device_trust: TrustStore::with(ca.certificate().clone()),
///     keys: Box::new(DerivedRegistrationKeys::new([7; 32])),
///     time_anchor: anchor,
/// });
/// config.idle_timeout = std::time::Duration::from_secs(60);
/// assert_eq!(config.issuer_stream().port(), 1201);
/// ```
pub struct RendezvousServerConfig {
    /// The UDP address registrations (S202) and probes arrive at; notices (S205) leave
    /// from it (seed: 130.74.23.6:1200). No default.
    pub udp: SocketAddr,
    /// The stream port issuers connect to (S203; seed: 1201). No default.
    pub issuer_port: u16,
    /// The stream port devices connect to (S206; seed: 1300). No default.
    pub device_port: u16,
    /// The channel issuers meet. Default: the server's certificate
    /// ([`RendezvousServerParams::identity`]), no client certificates.
    pub issuer_channel: Arc<crate::channel::ServerConfig>,
    /// The channel devices meet. Default: the server's certificate, and device
    /// certificates required ([`ClientCertPolicy::Required`] with
    /// [`RendezvousServerParams::device_trust`]); [`RendezvousServer::new`] refuses a
    /// channel that does not require them.
    pub device_channel: Arc<crate::channel::ServerConfig>,
    /// Each device's registration key. No default.
    pub keys: Box<dyn RegistrationKeys + Send>,
    /// Wall-clock time at `Instant::ZERO`. No default.
    pub time_anchor: UnixTime,
    /// A directory entry lives this long after its last registration (default 90 s:
    /// devices register every 20–26 s, so three may be lost) — longer if the
    /// registration's timestamp was ahead of the server's clock: until that timestamp is
    /// outside `max_clock_skew`, so a replay never outlives the replay check.
    pub registration_lifetime: Duration,
    /// How far a registration's timestamp may be from the server's clock (default 60 s;
    /// must be shorter than `registration_lifetime`, see `docs/rendezvous.md`).
    pub max_clock_skew: Duration,
    /// Refused datagrams per source IP (registrations and probes that fail any check);
    /// a source over it is dropped unread. Authentic registrations cost nothing. Default 8
    /// per 2 s.
    pub datagram_rate: RateLimit,
    /// Connection requests per issuer IP. Default 10 per 6 s.
    pub request_rate: RateLimit,
    /// The shared bucket for sources that find the rate table full. Default 64 per 10 ms.
    pub overflow_rate: RateLimit,
    /// Source IPs with their own bucket, per table (datagram failures, requests). Default
    /// 65,536.
    pub max_sources: usize,
    /// Open streams. Default 4096.
    pub max_streams: usize,
    /// Requests in progress. Default 4096.
    pub max_requests: usize,
    /// Remembered (device, issuer) back-offs. Default 4096.
    pub max_blocks: usize,
    /// A request must finish within this time. Default 60 s.
    pub request_timeout: Duration,
    /// Time between notices while the device has not fetched its request. Default 1 s.
    pub notice_interval: Duration,
    /// Notices sent while the device has not fetched its request. Default 5.
    pub notices: u32,
    /// After the last notice, how long the request still waits for the device's fetch
    /// before the device is declared unreachable (default 15 s). A device that heard a
    /// notice may need several TCP retransmissions (1 s, doubling) and a channel
    /// handshake to fetch; notices alone (`notices × notice_interval`, 5 s) would refuse
    /// it while it is on its way.
    pub fetch_wait: Duration,
    /// How long a fetched request waits for the issuer's UDP probe. Default 3 s.
    pub probe_wait: Duration,
    /// A stream (issuer or device port) with no request in progress and no traffic for
    /// this long is closed. Default 120 s: an issuer that opened its channel and then
    /// sends nothing, or a device channel left open after its fetches, holds a stream slot
    /// (of `max_streams`) at most this long. A stream that carries a request is bounded by
    /// `request_timeout` instead.
    pub idle_timeout: Duration,
    /// Expired directory entries reclaimed per timer tick. Default 1024.
    pub expiry_batch: usize,
    /// Decoding limits. Default [`Limits::default`].
    pub limits: Limits,
}

impl core::fmt::Debug for RendezvousServerConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RendezvousServerConfig")
            .field("udp", &self.udp)
            .field("issuer_port", &self.issuer_port)
            .field("device_port", &self.device_port)
            .finish_non_exhaustive()
    }
}

impl RendezvousServerConfig {
    /// A configuration from `params`, every other field at its documented default. The
    /// one server identity serves both channels (an `Arc`, not a copy).
    pub fn new(params: RendezvousServerParams) -> RendezvousServerConfig {
        let RendezvousServerParams {
            udp,
            issuer_port,
            device_port,
            identity,
            device_trust,
            keys,
            time_anchor,
        } = params;
        let issuer_channel =
            crate::channel::ServerConfig::with_certificate(identity.clone(), time_anchor);
        let mut device_channel =
            crate::channel::ServerConfig::with_certificate(identity, time_anchor);
        device_channel.client_certs = ClientCertPolicy::Required(device_trust);
        RendezvousServerConfig {
            udp,
            issuer_port,
            device_port,
            issuer_channel: Arc::new(issuer_channel),
            device_channel: Arc::new(device_channel),
            keys,
            time_anchor,
            registration_lifetime: Duration::from_secs(90),
            max_clock_skew: Duration::from_secs(60),
            datagram_rate: RateLimit::new(8, Duration::from_secs(2)),
            request_rate: RateLimit::new(10, Duration::from_secs(6)),
            overflow_rate: RateLimit::new(64, Duration::from_millis(10)),
            max_sources: 65_536,
            max_streams: 4096,
            max_requests: 4096,
            max_blocks: 4096,
            request_timeout: Duration::from_secs(60),
            notice_interval: Duration::from_secs(1),
            notices: 5,
            fetch_wait: Duration::from_secs(15),
            probe_wait: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(120),
            expiry_batch: 1024,
            limits: Limits::default(),
        }
    }

    /// The issuers' stream address (`udp`'s IP, `issuer_port`): what a driver listens on
    /// and an [`IssuerConfig`](super::IssuerConfig) names as `server_stream`.
    pub fn issuer_stream(&self) -> SocketAddr {
        SocketAddr::new(self.udp.ip(), self.issuer_port)
    }

    /// The devices' stream address (`udp`'s IP, `device_port`).
    pub fn device_stream(&self) -> SocketAddr {
        SocketAddr::new(self.udp.ip(), self.device_port)
    }
}

/// Registrations refused, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusalCounters {
    /// Did not decode.
    pub malformed: u64,
    /// No key for the device ID.
    pub unknown_device: u64,
    /// MAC did not verify (spoofed).
    pub bad_mac: u64,
    /// Timestamp outside the skew window.
    pub stale: u64,
    /// Timestamp not newer than the last accepted (replayed).
    pub replayed: u64,
    /// Source over its rate.
    pub rate_limited: u64,
    /// Directory full of live devices.
    pub directory_full: u64,
}

impl RefusalCounters {
    fn count(&mut self, why: RegistrationRefusal) {
        let c = match why {
            RegistrationRefusal::Malformed => &mut self.malformed,
            RegistrationRefusal::UnknownDevice => &mut self.unknown_device,
            RegistrationRefusal::BadMac => &mut self.bad_mac,
            RegistrationRefusal::Stale => &mut self.stale,
            RegistrationRefusal::Replayed => &mut self.replayed,
            RegistrationRefusal::RateLimited => &mut self.rate_limited,
            RegistrationRefusal::DirectoryFull => &mut self.directory_full,
        };
        *c += 1;
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.malformed
            + self.unknown_device
            + self.bad_mac
            + self.stale
            + self.replayed
            + self.rate_limited
            + self.directory_full
    }
}

/// What the server has done, for operators and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Registrations accepted (new, refreshed or moved).
    pub registrations: u64,
    /// Registrations that moved a device to a new address.
    pub moves: u64,
    /// Registrations refused, by reason.
    pub refused: RefusalCounters,
    /// Connection requests received.
    pub requests: u64,
    /// Requests for devices not in the directory (S204 refusals).
    pub unknown_device_requests: u64,
    /// Requests refused by rate limit or cached back-off.
    pub rate_limited_requests: u64,
    /// Notices sent (S205).
    pub notices: u64,
    /// Fetches by a device for a request that is not its own, or without a device
    /// certificate.
    pub unauthorized_fetches: u64,
    /// Requests whose devices reported a direct connection.
    pub connected: u64,
    /// Requests that ended without one (refused, timed out, hole punching failed).
    pub failed: u64,
    /// Other datagrams or messages refused.
    pub unexpected: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Issuer,
    Device,
}

struct Session {
    kind: Kind,
    remote: SocketAddr,
    link: SecureStream,
    /// Issuer: its request. Device: requests it fetched.
    requests: Vec<u64>,
}

struct Request {
    device: DeviceId,
    issuer_stream: StreamId,
    issuer_addr: SocketAddr,
    share: [u8; 32],
    random: [u8; 32],
    token: [u8; 16],
    declared: Option<SocketAddr>,
    probed: Option<SocketAddr>,
    device_stream: Option<StreamId>,
    device_cert: Option<Vec<u8>>,
    offered: bool,
    fetched_at: Option<Instant>,
    next_notice: Option<Instant>,
    notices_sent: u32,
    deadline: Instant,
}

/// The rendezvous server actor.
///
/// Serves UDP on [`RendezvousServerConfig::udp`] and streams on the issuer and device ports (the
/// driver listens on them and reports accepted streams with their local address).
pub struct RendezvousServer<D: Directory = MemoryDirectory> {
    cfg: RendezvousServerConfig,
    directory: D,
    rng: Rng,
    datagram_limiter: SourceLimiter,
    request_limiter: SourceLimiter,
    sessions: BTreeMap<StreamId, Session>,
    requests: BTreeMap<u64, Request>,
    tokens: BTreeMap<[u8; 16], u64>,
    early_probes: BTreeMap<(Instant, [u8; 16]), (u64, SocketAddr)>,
    blocks: BTreeMap<(DeviceId, IpAddr), Instant>,
    /// The same back-offs ordered by their end, so expiry and eviction visit only the
    /// entries they remove, whatever the table's size.
    block_ends: BTreeSet<(Instant, DeviceId, IpAddr)>,
    stats: ServerStats,
    outbox: Outbox<RendezvousEvent>,
}

impl<D: Directory> core::fmt::Debug for RendezvousServer<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RendezvousServer")
            .field("udp", &self.cfg.udp)
            .field("devices", &self.directory.len())
            .field("streams", &self.sessions.len())
            .field("requests", &self.requests.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Every deadline the server keeps. [`RendezvousServer::timers`] lists the armed ones:
/// `poll_timeout` is the earliest, `handle_timeout` sweeps the due ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// The next directory entry to expire.
    DirectoryExpiry,
    /// A request must finish by then.
    RequestDeadline(u64),
    /// The next notice of a request the device has not fetched (S205).
    Notice(u64),
    /// A fetched request stops waiting for the issuer's probe and is offered.
    ProbeWait(u64),
    /// A stream's channel (handshake deadline).
    Stream(StreamId),
    /// A stream with no request closes when idle.
    StreamIdle(StreamId),
}

/// Probes kept while their connection request is on its way.
const EARLY_PROBES: usize = 256;
/// How long an early probe is kept.
const EARLY_PROBE_LIFE: Duration = Duration::from_secs(5);

impl<D: Directory> RendezvousServer<D> {
    /// A server with an empty `directory`.
    pub fn new(cfg: RendezvousServerConfig, directory: D, rng: Rng) -> Result<Self, Error> {
        if cfg.max_clock_skew >= cfg.registration_lifetime {
            return Err(RendezvousError::SkewNotShorterThanLifetime.into());
        }
        if !matches!(
            cfg.device_channel.client_certs,
            ClientCertPolicy::Required(_)
        ) {
            return Err(RendezvousError::DeviceCertificatesNotRequired.into());
        }
        Ok(RendezvousServer {
            datagram_limiter: SourceLimiter::new(
                cfg.datagram_rate,
                cfg.max_sources,
                cfg.overflow_rate,
            ),
            request_limiter: SourceLimiter::new(
                cfg.request_rate,
                cfg.max_sources,
                cfg.overflow_rate,
            ),
            cfg,
            directory,
            rng,
            sessions: BTreeMap::new(),
            requests: BTreeMap::new(),
            tokens: BTreeMap::new(),
            early_probes: BTreeMap::new(),
            blocks: BTreeMap::new(),
            block_ends: BTreeSet::new(),
            stats: ServerStats::default(),
            outbox: Outbox::new(4 * Outbox::<RendezvousEvent>::DEFAULT_BOUND),
        })
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// The directory.
    pub fn directory(&self) -> &D {
        &self.directory
    }

    /// The live entry for `device`.
    pub fn lookup(&self, device: DeviceId, now: Instant) -> Option<DirectoryEntry> {
        self.directory.lookup(device, now)
    }

    /// Source IPs holding their own bucket in the datagram rate table, and its bound.
    pub fn rate_table(&self) -> (usize, usize) {
        (
            self.datagram_limiter.len(),
            self.datagram_limiter.capacity(),
        )
    }

    /// Requests in progress.
    pub fn requests_in_progress(&self) -> usize {
        self.requests.len()
    }

    /// Open streams.
    pub fn open_streams(&self) -> usize {
        self.sessions.len()
    }

    fn wall_ms(&self, now: Instant) -> u64 {
        super::wall_millis(self.cfg.time_anchor, now)
    }

    // ----- UDP -----

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Result<(), Error> {
        if !self.datagram_limiter.permits(from.ip(), now) {
            // This source's failures used up its bucket: drop it unread.
            self.stats.refused.count(RegistrationRefusal::RateLimited);
            return Err(
                RendezvousError::RegistrationRefused(RegistrationRefusal::RateLimited).into(),
            );
        }
        let result = match Message::decode(data, &self.cfg.limits) {
            Ok(msg) => match ServerDatagram::decode(&msg, &self.cfg.limits) {
                Ok(ServerDatagram::Register(reg)) => self.on_register(now, from, &msg, reg),
                Ok(ServerDatagram::Probe(probe)) => self.on_probe(now, from, probe),
                Err(WireError::UnexpectedType(other)) => {
                    self.stats.unexpected += 1;
                    Err(RendezvousError::UnexpectedMessage(other).into())
                }
                // A registration that does not decode is counted as a refused one (the
                // operator's "malformed" counter); a bad probe is only an error.
                Err(_) if msg.msg_type() == REGISTER => {
                    self.refuse_registration(RegistrationRefusal::Malformed)
                }
                Err(e) => Err(RendezvousError::Decode(e).into()),
            },
            Err(e) => {
                self.stats.refused.count(RegistrationRefusal::Malformed);
                Err(RendezvousError::Decode(e).into())
            }
        };
        if result.is_err() {
            self.datagram_limiter.charge(from.ip(), now);
        }
        result
    }

    fn refuse_registration(&mut self, why: RegistrationRefusal) -> Result<(), Error> {
        self.stats.refused.count(why);
        Err(RendezvousError::RegistrationRefused(why).into())
    }

    /// S202: record (device ID → the address the registration came from).
    fn on_register(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &Message<'_>,
        reg: Register,
    ) -> Result<(), Error> {
        self.directory.prefetch(reg.device);
        let Some(key) = self.cfg.keys.key(reg.device) else {
            return self.refuse_registration(RegistrationRefusal::UnknownDevice);
        };
        // The device key's HMAC states, made once for the check and the acknowledgement.
        let key = HmacSha256Key::new(key.as_bytes());
        if !messages::verify_mac_key(msg, &key, REGISTRATION_MAC_LEN) {
            return self.refuse_registration(RegistrationRefusal::BadMac);
        }
        let server_ms = self.wall_ms(now);
        let skew = self.cfg.max_clock_skew.as_millis() as u64;
        let ack = |status| RegisterAck {
            device: reg.device,
            nonce: reg.nonce,
            observed: from,
            server_time_ms: server_ms,
            lifetime: self.cfg.registration_lifetime,
            status,
        };
        if reg.timestamp_ms.abs_diff(server_ms) > skew {
            // Authentic but outside the window: tell the device our clock (MAC'd), so it
            // can correct its own.
            let data = ack(AckStatus::Stale).encode_with_key(&key)?;
            self.transmit(from, data)?;
            return self.refuse_registration(RegistrationRefusal::Stale);
        }
        // The entry, and with it the last timestamp, lives until the timestamp has left
        // the skew window: a timestamp up to `skew` ahead of our clock stays acceptable
        // for up to `2 × skew`, which may be longer than the lifetime, and a replay after
        // the entry expired must find it stale.
        let in_window_ms = reg
            .timestamp_ms
            .saturating_add(skew)
            .saturating_sub(server_ms)
            .saturating_add(1);
        let lifetime = self
            .cfg
            .registration_lifetime
            .max(Duration::from_millis(in_window_ms));
        // The replay check and the update in one directory probe.
        let registered = self.directory.register_with(reg.device, now, |old| {
            if old.is_some_and(|e| reg.timestamp_ms <= e.last_timestamp_ms) {
                return Err(RegistrationRefusal::Replayed);
            }
            Ok(DirectoryEntry {
                addr: from,
                last_timestamp_ms: reg.timestamp_ms,
                expires: now + lifetime,
                blocked_until: old.and_then(|e| e.blocked_until),
            })
        });
        match registered {
            Err(why) => return self.refuse_registration(why),
            Ok(Err(_)) => return self.refuse_registration(RegistrationRefusal::DirectoryFull),
            Ok(Ok(Registered::New)) => self.outbox.event(RendezvousEvent::DeviceRegistered {
                device: reg.device,
                addr: from,
            })?,
            Ok(Ok(Registered::Moved { from: old_addr })) => {
                self.stats.moves += 1;
                self.outbox.event(RendezvousEvent::DeviceMoved {
                    device: reg.device,
                    from: old_addr,
                    to: from,
                })?;
            }
            Ok(Ok(Registered::Refreshed)) => {}
        }
        self.stats.registrations += 1;
        let data = ack(AckStatus::Accepted).encode_with_key(&key)?;
        self.transmit(from, data)
    }

    fn on_probe(&mut self, now: Instant, from: SocketAddr, probe: Probe) -> Result<(), Error> {
        if self.tokens.get(&probe.token) != Some(&probe.request) {
            // The probe may overtake its connection request (UDP versus the stream):
            // keep it a moment. Unanswered, so it cannot be used to reflect traffic.
            if self.early_probes.len() >= EARLY_PROBES {
                self.early_probes.pop_first();
            }
            self.early_probes
                .insert((now, probe.token), (probe.request, from));
            return Ok(());
        }
        self.probed(now, probe.request, probe.token, from)
    }

    /// The issuer's peer socket showed up at `from`.
    fn probed(
        &mut self,
        now: Instant,
        request: u64,
        token: [u8; 16],
        from: SocketAddr,
    ) -> Result<(), Error> {
        let data = ProbeAck {
            request,
            token,
            observed: from,
        }
        .encode()?;
        self.transmit(from, data)?;
        if let Some(r) = self.requests.get_mut(&request) {
            r.probed = Some(from);
        }
        self.try_offer(now, request)
    }

    fn transmit(&mut self, to: SocketAddr, data: Vec<u8>) -> Result<(), Error> {
        self.outbox.push(Output::Transmit(Transmit {
            from: self.cfg.udp,
            to,
            data,
        }))
    }

    // ----- streams -----

    /// A stream arrived on our `port` from `remote`.
    fn on_accepted(
        &mut self,
        now: Instant,
        id: StreamId,
        port: u16,
        remote: SocketAddr,
    ) -> Result<(), Error> {
        let refused = if port != self.cfg.issuer_port && port != self.cfg.device_port {
            Some(RendezvousError::PortNotServed(port).into())
        } else if self.sessions.len() >= self.cfg.max_streams {
            Some(Error::CapacityExceeded {
                what: "rendezvous server streams",
                bound: self.cfg.max_streams,
            })
        } else {
            None
        };
        if let Some(error) = refused {
            self.outbox.push(Output::StreamClose { id })?;
            return Err(error);
        }
        let kind = if port == self.cfg.issuer_port {
            Kind::Issuer
        } else {
            Kind::Device
        };
        let channel = match kind {
            Kind::Issuer => self.cfg.issuer_channel.clone(),
            Kind::Device => self.cfg.device_channel.clone(),
        };
        let link = SecureStream::new(id, Connection::server(channel, now), now);
        self.sessions.insert(
            id,
            Session {
                kind,
                remote,
                link,
                requests: Vec::new(),
            },
        );
        Ok(())
    }

    fn on_stream_data(&mut self, now: Instant, id: StreamId, data: &[u8]) -> Result<(), Error> {
        let s = self.sessions.get_mut(&id).ok_or(Error::UnknownStream(id))?;
        let mut messages = Vec::new();
        let fed = s.link.feed(
            now,
            data,
            self.rng.as_mut(),
            &mut self.outbox,
            &mut messages,
        );
        let kind = s.kind;
        let mut result = fed;
        for m in messages {
            let r = match kind {
                Kind::Issuer => self.on_issuer_message(now, id, &m),
                Kind::Device => self.on_device_message(now, id, &m),
            };
            if let Err(e) = r {
                self.stats.unexpected += 1;
                result = result.and(Err(e));
            }
        }
        if self.sessions.get(&id).is_some_and(|s| s.link.is_closed()) {
            self.end_session(now, id)?;
        }
        result
    }

    fn send_on(&mut self, id: StreamId, message: &[u8]) -> Result<(), Error> {
        let s = self.sessions.get_mut(&id).ok_or(Error::UnknownStream(id))?;
        s.link.send(message, &mut self.outbox)
    }

    /// The stream of `id` is over: forget it and settle its requests. An issuer's
    /// requests end (and a device that fetched one is told, so it lets it go). A device's
    /// request that was fetched but not yet offered is taken back — noticed again, to be
    /// fetched on the device's next stream (the acceptor opens one after a back-off, issue
    /// 13 item 3); one already offered is refused `DeviceUnreachable`, as its answer could
    /// only come over the stream that ended.
    fn end_session(&mut self, now: Instant, id: StreamId) -> Result<(), Error> {
        let Some(s) = self.sessions.remove(&id) else {
            return Ok(());
        };
        let mut result = Ok(());
        for request in s.requests {
            let step = match s.kind {
                Kind::Issuer => self.issuer_gone(request),
                Kind::Device => match self.requests.get_mut(&request) {
                    Some(r) if r.device_stream == Some(id) && !r.offered => {
                        r.device_stream = None;
                        r.device_cert = None;
                        r.fetched_at = None;
                        r.notices_sent = 0;
                        r.next_notice = Some(now + self.cfg.notice_interval);
                        Ok(())
                    }
                    Some(r) if r.device_stream == Some(id) => {
                        self.refuse(request, RequestRefusal::DeviceUnreachable)
                    }
                    _ => Ok(()),
                },
            };
            // Every request is settled even if the outbox refused an output for one.
            result = result.and(step);
        }
        result
    }

    /// The issuer's stream of `request` ended: the request ends, and the device that
    /// fetched it (if its stream is still up) is told with a refusal, so it drops what it
    /// holds for it at once instead of at its own deadline.
    fn issuer_gone(&mut self, request: u64) -> Result<(), Error> {
        let device_stream = self
            .requests
            .get(&request)
            .and_then(|r| r.device_stream)
            .filter(|d| self.sessions.contains_key(d));
        let told = match device_stream {
            Some(d) => match Refused::new(request, RequestRefusal::IssuerGone).encode() {
                Ok(msg) => self.send_on(d, &msg),
                Err(e) => Err(RendezvousError::from(e).into()),
            },
            None => Ok(()),
        };
        let finished = self.finish(request, false);
        told.and(finished)
    }

    fn on_issuer_message(
        &mut self,
        now: Instant,
        stream: StreamId,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let (msg, decoded) = messages::read(bytes, &self.cfg.limits, FromIssuer::decode)?;
        let own = |s: &Self, request: u64| {
            s.requests
                .get(&request)
                .is_some_and(|r| r.issuer_stream == stream)
        };
        match decoded {
            FromIssuer::ConnectRequest(req) => self.on_connect_request(now, stream, req),
            FromIssuer::SealedPassword(_) | FromIssuer::Sync(_) => {
                // Opaque to the server, which holds no key for them: relayed to the device
                // unchanged, once well-formed and this issuer's.
                let request = msg.session();
                if !own(self, request) {
                    return Err(RendezvousError::UnknownSession(request).into());
                }
                let device_stream = self
                    .requests
                    .get(&request)
                    .and_then(|r| r.device_stream)
                    .ok_or(RendezvousError::UnknownSession(request))?;
                self.send_on(device_stream, bytes)
            }
            FromIssuer::Outcome(o) => {
                if !self.requests.contains_key(&o.request) {
                    // The device's report already closed the request.
                    return Ok(());
                }
                if !own(self, o.request) {
                    return Err(RendezvousError::UnknownSession(o.request).into());
                }
                self.finish(o.request, o.connected)
            }
        }
    }

    /// S203 → S204 → S205.
    fn on_connect_request(
        &mut self,
        now: Instant,
        stream: StreamId,
        req: ConnectRequest,
    ) -> Result<(), Error> {
        self.stats.requests += 1;
        let (issuer_addr, has_request) = self
            .sessions
            .get(&stream)
            .map(|s| (s.remote, !s.requests.is_empty()))
            .ok_or(Error::UnknownStream(stream))?;
        let refuse = |s: &mut Self, reason: RequestRefusal| -> Result<(), Error> {
            let msg = Refused::new(req.request, reason).encode()?;
            s.send_on(stream, &msg)?;
            s.outbox.event(RendezvousEvent::RequestRefused {
                request: req.request,
                device: req.device,
                reason,
            })
        };
        if has_request {
            return refuse(self, RequestRefusal::ProtocolError);
        }
        if !self.request_limiter.allow(issuer_addr.ip(), now) {
            self.stats.rate_limited_requests += 1;
            let retry_after = self.cfg.request_rate.per_token;
            return refuse(self, RequestRefusal::RateLimited { retry_after });
        }
        // S204: look the device up.
        let Some(entry) = self.directory.lookup(req.device, now) else {
            self.stats.unknown_device_requests += 1;
            return refuse(self, RequestRefusal::UnknownDevice);
        };
        let blocked = [
            entry.blocked_until,
            self.blocks.get(&(req.device, issuer_addr.ip())).copied(),
        ]
        .into_iter()
        .flatten()
        .filter(|until| *until > now)
        .max();
        if let Some(until) = blocked {
            // The device asked to be left alone: refuse without waking it.
            self.stats.rate_limited_requests += 1;
            return refuse(
                self,
                RequestRefusal::RateLimited {
                    retry_after: until - now,
                },
            );
        }
        if self.requests.len() >= self.cfg.max_requests
            || self.requests.contains_key(&req.request)
            || self.tokens.contains_key(&req.token)
        {
            return refuse(self, RequestRefusal::Busy);
        }
        self.tokens.insert(req.token, req.request);
        self.requests.insert(
            req.request,
            Request {
                device: req.device,
                issuer_stream: stream,
                issuer_addr,
                share: req.share,
                random: req.random,
                token: req.token,
                declared: req.declared,
                probed: None,
                device_stream: None,
                device_cert: None,
                offered: false,
                fetched_at: None,
                next_notice: Some(now),
                notices_sent: 0,
                deadline: now + self.cfg.request_timeout,
            },
        );
        if let Some(s) = self.sessions.get_mut(&stream) {
            s.requests.push(req.request);
        }
        self.outbox.event(RendezvousEvent::RequestForwarded {
            request: req.request,
            device: req.device,
        })?;
        let early = self
            .early_probes
            .iter()
            .find(|((at, token), (request, _))| {
                *token == req.token && *request == req.request && now < *at + EARLY_PROBE_LIFE
            })
            .map(|(k, (_, from))| (*k, *from));
        if let Some((key, from)) = early {
            self.early_probes.remove(&key);
            self.probed(now, req.request, req.token, from)?;
        }
        self.send_notice(now, req.request)
    }

    /// S205: notify the device of `request` while it has not fetched it; after
    /// [`RendezvousServerConfig::notices`] notices and [`RendezvousServerConfig::fetch_wait`] more without a
    /// fetch, the device is unreachable.
    fn send_notice(&mut self, now: Instant, request: u64) -> Result<(), Error> {
        let Some(r) = self
            .requests
            .get(&request)
            .filter(|r| r.device_stream.is_none() && r.next_notice.is_some_and(|t| now >= t))
        else {
            return Ok(());
        };
        let device = r.device;
        if r.notices_sent >= self.cfg.notices {
            return self.refuse(request, RequestRefusal::DeviceUnreachable);
        }
        let (Some(entry), Some(key)) = (
            self.directory.lookup(device, now),
            self.cfg.keys.key(device),
        ) else {
            return self.refuse(request, RequestRefusal::DeviceUnreachable);
        };
        let data = Notice {
            request,
            device,
            server_time_ms: self.wall_ms(now),
        }
        .encode(key.as_bytes())?;
        self.transmit(entry.addr, data)?;
        self.stats.notices += 1;
        if let Some(r) = self.requests.get_mut(&request) {
            r.notices_sent += 1;
            // After the last notice the timer is the end of the wait for the fetch.
            let wait = if r.notices_sent >= self.cfg.notices {
                self.cfg.fetch_wait
            } else {
                self.cfg.notice_interval
            };
            r.next_notice = Some(now + wait);
        }
        Ok(())
    }

    fn on_device_message(
        &mut self,
        now: Instant,
        stream: StreamId,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let (msg, decoded) = messages::read(bytes, &self.cfg.limits, FromDevice::decode)?;
        let request = msg.session();
        let fetched_here = self
            .requests
            .get(&request)
            .is_some_and(|r| r.device_stream == Some(stream));
        match decoded {
            FromDevice::Fetch(fetch) => self.on_fetch(now, stream, fetch),
            // The issuer's report already closed the request.
            FromDevice::Outcome(_) if !self.requests.contains_key(&request) => Ok(()),
            // Everything else must be about a request this stream fetched.
            _ if !fetched_here => Err(RendezvousError::UnknownSession(request).into()),
            FromDevice::Accept(accept) => {
                let r = self
                    .requests
                    .get(&request)
                    .ok_or(RendezvousError::UnknownSession(request))?;
                let entry = self.directory.lookup(r.device, now);
                let hello = AcceptorHello {
                    request,
                    certificate: r.device_cert.clone().unwrap_or_default(),
                    share: accept.share,
                    random: accept.random,
                    signature: accept.signature,
                    candidates: entry.map(|e| alloc::vec![e.addr]).unwrap_or_default(),
                }
                .encode()?;
                let issuer = r.issuer_stream;
                self.send_on(issuer, &hello)
            }
            FromDevice::Proceed(_) => {
                let issuer = self.requests.get(&request).map(|r| r.issuer_stream);
                match issuer {
                    Some(s) => self.send_on(s, bytes),
                    None => Ok(()),
                }
            }
            FromDevice::Refused(refused) => {
                if let Some(wait) = refused.reason.retry_after()
                    && let Some(r) = self.requests.get(&request)
                {
                    // Remember the device's back-off, so the next attempts are refused
                    // here without waking it.
                    let (device, issuer) = (r.device, r.issuer_addr.ip());
                    if refused.device_wide {
                        self.directory.set_blocked(device, Some(now + wait), now);
                    } else {
                        self.remember_block(device, issuer, now + wait);
                    }
                }
                self.refuse(request, refused.reason)
            }
            FromDevice::Outcome(o) => self.finish(o.request, o.connected),
        }
    }

    fn remember_block(&mut self, device: DeviceId, issuer: IpAddr, until: Instant) {
        match self.blocks.get(&(device, issuer)) {
            Some(&old) => {
                self.block_ends.remove(&(old, device, issuer));
            }
            None if self.blocks.len() >= self.cfg.max_blocks => {
                // Forget the back-off that ends first.
                if let Some((_, d, ip)) = self.block_ends.pop_first() {
                    self.blocks.remove(&(d, ip));
                }
            }
            None => {}
        }
        self.blocks.insert((device, issuer), until);
        self.block_ends.insert((until, device, issuer));
    }

    /// S206: hand the request to the genuine device only.
    fn on_fetch(&mut self, now: Instant, stream: StreamId, fetch: Fetch) -> Result<(), Error> {
        let cert = self
            .sessions
            .get(&stream)
            .and_then(|s| s.link.connection().peer_certificate())
            .filter(|c| c.names(&fetch.device.certificate_name()))
            .map(|c| c.as_bytes().to_vec());
        let target_ok = self
            .requests
            .get(&fetch.request)
            .is_some_and(|r| r.device == fetch.device && r.device_stream.is_none());
        let (Some(cert), true) = (cert, target_ok) else {
            // Not this device's request (or not a device at all): the same answer either
            // way, so a device cannot probe for other devices' requests.
            self.stats.unauthorized_fetches += 1;
            let msg = Refused::new(fetch.request, RequestRefusal::NotAuthorized).encode()?;
            self.send_on(stream, &msg)?;
            return Err(RendezvousError::FetchNotAuthorized(fetch.request).into());
        };
        if let Some(r) = self.requests.get_mut(&fetch.request) {
            r.device_stream = Some(stream);
            r.device_cert = Some(cert);
            r.fetched_at = Some(now);
            r.next_notice = None;
        }
        if let Some(s) = self.sessions.get_mut(&stream)
            && s.requests.len() < self.cfg.max_requests
        {
            s.requests.push(fetch.request);
        }
        self.try_offer(now, fetch.request)
    }

    /// Send the offer once the device fetched and the issuer's probe arrived (or the
    /// wait for it ran out).
    fn try_offer(&mut self, now: Instant, request: u64) -> Result<(), Error> {
        let Some(r) = self.requests.get(&request) else {
            return Ok(());
        };
        let (Some(stream), Some(fetched)) = (r.device_stream, r.fetched_at) else {
            return Ok(());
        };
        if r.offered || (r.probed.is_none() && now < fetched + self.cfg.probe_wait) {
            return Ok(());
        }
        let candidates = [r.declared, r.probed].into_iter().flatten().fold(
            Vec::new(),
            |mut v: Vec<SocketAddr>, a| {
                if !v.contains(&a) {
                    v.push(a);
                }
                v
            },
        );
        let offer = Offer {
            request,
            device: r.device,
            issuer_addr: r.issuer_addr,
            candidates,
            share: r.share,
            random: r.random,
        }
        .encode()?;
        if let Some(r) = self.requests.get_mut(&request) {
            r.offered = true;
        }
        self.send_on(stream, &offer)
    }

    /// Refuse `request` to its issuer and forget it.
    fn refuse(&mut self, request: u64, reason: RequestRefusal) -> Result<(), Error> {
        let Some(r) = self.requests.get(&request) else {
            return Ok(());
        };
        let (device, issuer) = (r.device, r.issuer_stream);
        // The request is forgotten and every report attempted even if the outbox refused
        // one (counted as lost): a timer that refuses a request must not leave it behind.
        let told = match Refused::new(request, reason).encode() {
            Ok(msg) if self.sessions.contains_key(&issuer) => self.send_on(issuer, &msg),
            Ok(_) => Ok(()),
            Err(e) => Err(RendezvousError::from(e).into()),
        };
        let reported = self.outbox.event(RendezvousEvent::RequestRefused {
            request,
            device,
            reason,
        });
        told.and(reported).and(self.finish(request, false))
    }

    /// Forget `request`.
    fn finish(&mut self, request: u64, connected: bool) -> Result<(), Error> {
        let Some(r) = self.requests.remove(&request) else {
            return Ok(());
        };
        self.tokens.remove(&r.token);
        for s in self.sessions.values_mut() {
            s.requests.retain(|id| *id != request);
        }
        if connected {
            self.stats.connected += 1;
        } else {
            self.stats.failed += 1;
        }
        self.outbox
            .event(RendezvousEvent::RequestFinished { request, connected })
    }

    /// The armed timers, in the order `handle_timeout` fires them.
    fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        let directory = self
            .directory
            .next_expiry()
            .map(|t| (Timer::DirectoryExpiry, t));
        let requests = self.requests.iter().flat_map(|(id, r)| {
            [
                Some((Timer::RequestDeadline(*id), r.deadline)),
                // Notices stop once the device fetched the request.
                r.next_notice
                    .filter(|_| r.device_stream.is_none())
                    .map(|t| (Timer::Notice(*id), t)),
                r.fetched_at
                    .filter(|_| !r.offered)
                    .map(|f| (Timer::ProbeWait(*id), f + self.cfg.probe_wait)),
            ]
            .into_iter()
            .flatten()
        });
        let streams = self.sessions.iter().flat_map(|(id, s)| {
            [
                s.link
                    .connection()
                    .poll_timeout()
                    .map(|t| (Timer::Stream(*id), t)),
                // A stream with a request in flight is never idle.
                s.requests.is_empty().then(|| {
                    (
                        Timer::StreamIdle(*id),
                        s.link.last_activity() + self.cfg.idle_timeout,
                    )
                }),
            ]
            .into_iter()
            .flatten()
        });
        directory.into_iter().chain(requests).chain(streams)
    }

    /// Run one due timer of [`RendezvousServer::timers`] (a timer whose request or stream
    /// an earlier one ended finds nothing to do).
    fn fire(&mut self, now: Instant, timer: Timer) -> Result<(), Error> {
        match timer {
            Timer::DirectoryExpiry => {
                self.directory.expire(now, self.cfg.expiry_batch);
                Ok(())
            }
            Timer::RequestDeadline(id) => self.refuse(id, RequestRefusal::Timeout),
            Timer::Notice(id) => self.send_notice(now, id),
            // `try_offer` re-checks that the request still waits.
            Timer::ProbeWait(id) => self.try_offer(now, id),
            // A stream whose channel failed, or that closes idle, is ended (its requests
            // settled) even if the outbox refused its last output (counted as lost).
            Timer::Stream(id) => match self.sessions.get_mut(&id) {
                Some(s) => {
                    let result = s.link.handle_timeout(now, &mut self.outbox).map(drop);
                    if s.link.is_closed() {
                        return result.and(self.end_session(now, id));
                    }
                    result
                }
                None => Ok(()),
            },
            Timer::StreamIdle(id) => match self.sessions.get_mut(&id) {
                Some(s)
                    if s.requests.is_empty()
                        && now >= s.link.last_activity() + self.cfg.idle_timeout =>
                {
                    let closed = s.link.close(&mut self.outbox);
                    closed.and(self.end_session(now, id))
                }
                _ => Ok(()),
            },
        }
    }

    /// After every input and the timers: housekeeping of two bounded tables, not timers — nothing waits
    /// on their entries, which only need to be gone by the time they are looked up.
    /// Both are visited in order of expiry (back-offs through `block_ends`, early probes by
    /// arrival), so only the expired entries are touched: this runs on every datagram.
    fn settle(&mut self, now: Instant) -> Result<(), Error> {
        while let Some(&(until, device, issuer)) = self.block_ends.first()
            && until <= now
        {
            self.block_ends.pop_first();
            self.blocks.remove(&(device, issuer));
        }
        while let Some(((at, _), _)) = self.early_probes.first_key_value()
            && now >= *at + EARLY_PROBE_LIFE
        {
            self.early_probes.pop_first();
        }
        Ok(())
    }
}

impl<D: Directory> RendezvousServer<D> {
    fn input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::Datagram { from, to, data } => {
                if to.port() != self.cfg.udp.port() {
                    return Err(RendezvousError::NotServed(to).into());
                }
                self.on_datagram(now, from, data)
            }
            Input::StreamAccepted { id, local, remote } => {
                self.on_accepted(now, id, local.port(), remote)
            }
            Input::StreamData { id, data } => self.on_stream_data(now, id, data),
            Input::StreamClosed { id } => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    // A truncation is recorded in the connection; the session ends either way.
                    let _ = s.link.stream_closed();
                }
                self.end_session(now, id)
            }
            Input::StreamConnected { id, .. } => Err(Error::UnknownStream(id)),
            Input::Packet { .. } => Err(RendezvousError::TakesNoPackets.into()),
        }
    }
}

super::timer_driven_actor!(impl [D: Directory] RendezvousServer<D>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ClientConfig;
    use crate::crypto::cert::{CertificateAuthority, TrustStore};
    use crate::io::Actor;
    use crate::rendezvous::DerivedRegistrationKeys;
    use alloc::vec;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const ANCHOR: UnixTime = UnixTime(1_800_000_000);
    const MASTER: [u8; 32] = [0x42; 32];

    fn udp() -> SocketAddr {
        "130.74.23.6:1200".parse().unwrap()
    }

    /// A server with small bounds, and a hand-driven issuer side.
    /// The seed's addresses and ports, the test master key.
    fn params(identity: CertifiedKey, trust: &TrustStore) -> RendezvousServerParams {
        RendezvousServerParams {
            udp: udp(),
            issuer_port: 1201,
            device_port: 1300,
            identity: Arc::new(identity),
            device_trust: trust.clone(),
            keys: Box::new(DerivedRegistrationKeys::new(MASTER)),
            time_anchor: ANCHOR,
        }
    }

    struct Harness {
        server: RendezvousServer,
        trust: TrustStore,
        rng: ChaCha20Rng,
        now: Instant,
    }

    impl Harness {
        fn new(tweak: impl FnOnce(&mut RendezvousServerConfig)) -> Harness {
            let mut rng = ChaCha20Rng::seed_from_u64(5);
            let ca = CertificateAuthority::generate("CA", &mut rng);
            let trust = TrustStore::with(ca.certificate().clone());
            let identity = ca
                .issue_identity("rendezvous.example", &[], ANCHOR, 86_400, &mut rng)
                .unwrap();
            let mut cfg = RendezvousServerConfig::new(params(identity, &trust));
            tweak(&mut cfg);
            let server = RendezvousServer::new(
                cfg,
                MemoryDirectory::new(8),
                Box::new(ChaCha20Rng::seed_from_u64(6)),
            )
            .unwrap();
            Harness {
                server,
                trust,
                rng,
                now: Instant::from_secs(10),
            }
        }

        fn drain(&mut self) -> Vec<Output<RendezvousEvent>> {
            let mut out = Vec::new();
            while let Some(o) = self.server.poll_output() {
                out.push(o);
            }
            out
        }

        fn register(&mut self, device: DeviceId, from: &str) {
            let key = DerivedRegistrationKeys::new(MASTER).device_key(device);
            let data = Register {
                device,
                timestamp_ms: super::super::wall_millis(ANCHOR, self.now),
                nonce: [1; 16],
            }
            .encode(key.as_bytes())
            .unwrap();
            self.server
                .handle_input(
                    self.now,
                    Input::Datagram {
                        from: from.parse().unwrap(),
                        to: udp(),
                        data: &data,
                    },
                )
                .unwrap();
            self.drain();
        }

        /// Accept stream `n` on the issuer port and run the channel handshake; returns the
        /// issuer's end.
        fn issuer(&mut self, n: u64, from: &str) -> (StreamId, Connection) {
            let id = StreamId::inbound(n);
            self.server
                .handle_input(
                    self.now,
                    Input::StreamAccepted {
                        id,
                        local: "130.74.23.6:1201".parse().unwrap(),
                        remote: from.parse().unwrap(),
                    },
                )
                .unwrap();
            let cfg = ClientConfig::with_ca(self.trust.clone(), "rendezvous.example", ANCHOR);
            let mut conn = Connection::client(Arc::new(cfg), self.now, &mut self.rng).unwrap();
            self.pump(id, &mut conn);
            assert!(conn.is_established());
            (id, conn)
        }

        fn pump(&mut self, id: StreamId, conn: &mut Connection) -> Vec<Vec<u8>> {
            let mut received = Vec::new();
            for _ in 0..8 {
                let bytes = conn.take_outgoing();
                if !bytes.is_empty() {
                    // Refusals are what some tests provoke; they read the answers instead.
                    let _ = self
                        .server
                        .handle_input(self.now, Input::StreamData { id, data: &bytes });
                }
                for o in self.drain() {
                    if let Output::StreamSend { id: s, data } = o
                        && s == id
                    {
                        conn.feed(self.now, &data, &mut self.rng).unwrap();
                    }
                }
                while let Some(m) = conn.take_received() {
                    received.push(m);
                }
            }
            received
        }

        fn request(
            &mut self,
            id: StreamId,
            conn: &mut Connection,
            request: u64,
            device: DeviceId,
        ) -> Vec<Vec<u8>> {
            let msg = ConnectRequest {
                request,
                device,
                share: [9; 32],
                random: [8; 32],
                token: [request as u8; 16],
                declared: None,
            }
            .encode()
            .unwrap();
            conn.send(&msg).unwrap();
            self.pump(id, conn)
        }
    }

    fn refusal(messages: &[Vec<u8>]) -> Option<RequestRefusal> {
        messages.iter().find_map(|m| {
            let msg = Message::decode(m, &Limits::default()).ok()?;
            Refused::decode(&msg, &Limits::default())
                .ok()
                .map(|r| r.reason)
        })
    }

    #[test]
    fn a_replayed_registration_is_refused_even_after_the_lifetime() {
        let mut h = Harness::new(|_| {});
        let device = DeviceId(7);
        let key = DerivedRegistrationKeys::new(MASTER).device_key(device);
        // The device's clock runs 59 s ahead of ours: inside the 60 s window.
        let start = h.now;
        let data = Register {
            device,
            timestamp_ms: super::super::wall_millis(ANCHOR, start) + 59_000,
            nonce: [1; 16],
        }
        .encode(key.as_bytes())
        .unwrap();
        let genuine: SocketAddr = "202.204.16.13:3400".parse().unwrap();
        let datagram = |from| Input::Datagram {
            from,
            to: udp(),
            data: &data,
        };
        h.server.handle_input(start, datagram(genuine)).unwrap();
        h.drain();
        // The device falls silent. An eavesdropper replays its registration every second,
        // from a fresh address each time (so its own failures never rate-limit it).
        for secs in 1..=150u16 {
            let now = start + Duration::from_secs(secs.into());
            h.server.handle_timeout(now);
            let [hi, lo] = secs.to_be_bytes();
            let attacker = SocketAddr::from(([66, 6, hi, lo], 4000));
            assert!(h.server.handle_input(now, datagram(attacker)).is_err());
            h.drain();
            assert_ne!(
                h.server.lookup(device, now).map(|e| e.addr),
                Some(attacker),
                "the replay was accepted {secs} s later"
            );
        }
        assert_eq!(h.server.stats().registrations, 1);
        assert_eq!(
            h.server.lookup(device, start + Duration::from_secs(150)),
            None
        );
    }

    /// Issue 13 item 5: a request the deadline timer refuses while the outbox is full is
    /// still forgotten (and the refused outputs are counted as lost). Before, the refused
    /// send to the issuer returned early and the request stayed in the table, its deadline
    /// due again at every later timeout.
    #[test]
    fn item_5_a_request_refused_on_a_full_outbox_is_forgotten() {
        let mut h = Harness::new(|_| {});
        h.register(DeviceId(2133), "202.204.16.13:3400");
        let (id, mut conn) = h.issuer(1, "4.17.168.2:7000");
        assert_eq!(
            refusal(&h.request(id, &mut conn, 101, DeviceId(2133))),
            None
        );
        assert_eq!(h.server.requests_in_progress(), 1);
        while h
            .server
            .outbox
            .push(Output::StreamClose {
                id: StreamId::inbound(99),
            })
            .is_ok()
        {}
        h.server.handle_timeout(h.now + Duration::from_secs(61));
        assert_eq!(h.server.requests_in_progress(), 0);
        assert!(
            h.drain()
                .iter()
                .any(|o| matches!(o, Output::Lost { count } if *count > 0))
        );
    }

    #[test]
    fn streams_are_bounded() {
        let mut h = Harness::new(|c| c.max_streams = 2);
        h.issuer(1, "4.17.168.2:7000");
        h.issuer(2, "4.17.168.2:7001");
        let third = StreamId::inbound(3);
        let err = h
            .server
            .handle_input(
                h.now,
                Input::StreamAccepted {
                    id: third,
                    local: "130.74.23.6:1201".parse().unwrap(),
                    remote: "4.17.168.2:7002".parse().unwrap(),
                },
            )
            .unwrap_err();
        assert_eq!(
            err,
            Error::CapacityExceeded {
                what: "rendezvous server streams",
                bound: 2
            }
        );
        assert_eq!(h.drain(), vec![Output::StreamClose { id: third }]);
        assert_eq!(h.server.open_streams(), 2);
        // A stream on a port the server does not serve is closed at once.
        assert_eq!(
            h.server.handle_input(
                h.now,
                Input::StreamAccepted {
                    id: StreamId::inbound(4),
                    local: "130.74.23.6:22".parse().unwrap(),
                    remote: "4.17.168.2:7003".parse().unwrap(),
                },
            ),
            Err(RendezvousError::PortNotServed(22).into())
        );
    }

    #[test]
    fn requests_are_bounded_and_unknown_devices_refused() {
        let mut h = Harness::new(|c| c.max_requests = 2);
        h.register(DeviceId(2133), "202.204.16.13:3400");
        let mut answers = Vec::new();
        for n in 1..=3u64 {
            let (id, mut conn) = h.issuer(n, &alloc::format!("4.17.168.{n}:7000"));
            answers.push(refusal(&h.request(id, &mut conn, 100 + n, DeviceId(2133))));
        }
        assert_eq!(answers, [None, None, Some(RequestRefusal::Busy)]);
        assert_eq!(h.server.requests_in_progress(), 2);
        let (id, mut conn) = h.issuer(9, "4.17.168.9:7000");
        assert_eq!(
            refusal(&h.request(id, &mut conn, 999, DeviceId(7))),
            Some(RequestRefusal::UnknownDevice)
        );
        // A second request on the same stream is a protocol error.
        let mut h = Harness::new(|_| {});
        h.register(DeviceId(2133), "202.204.16.13:3400");
        let (id, mut conn) = h.issuer(10, "4.17.168.10:7000");
        assert_eq!(
            refusal(&h.request(id, &mut conn, 500, DeviceId(2133))),
            None
        );
        assert_eq!(
            refusal(&h.request(id, &mut conn, 501, DeviceId(2133))),
            Some(RequestRefusal::ProtocolError)
        );
    }

    #[test]
    fn requests_per_issuer_are_rate_limited() {
        let mut h = Harness::new(|c| c.request_rate = RateLimit::new(2, Duration::from_secs(60)));
        let mut answers = Vec::new();
        for n in 1..=3u64 {
            let (id, mut conn) = h.issuer(n, "4.17.168.2:7000");
            answers.push(refusal(&h.request(id, &mut conn, n, DeviceId(7))));
        }
        assert_eq!(
            answers,
            [
                Some(RequestRefusal::UnknownDevice),
                Some(RequestRefusal::UnknownDevice),
                Some(RequestRefusal::RateLimited {
                    retry_after: Duration::from_secs(60)
                })
            ]
        );
        assert_eq!(h.server.stats().rate_limited_requests, 1);
    }

    #[test]
    fn early_probes_and_back_offs_are_bounded() {
        let mut h = Harness::new(|c| c.max_blocks = 4);
        for n in 0..1000u64 {
            let data = Probe {
                request: n,
                token: [n as u8; 16],
            }
            .encode()
            .unwrap();
            h.now += Duration::from_micros(1);
            h.server
                .handle_input(
                    h.now,
                    Input::Datagram {
                        from: "66.6.6.6:1".parse().unwrap(),
                        to: udp(),
                        data: &data,
                    },
                )
                .unwrap();
        }
        assert_eq!(h.server.early_probes.len(), EARLY_PROBES);
        assert!(h.drain().is_empty(), "unknown probes are not answered");
        for n in 0..10u32 {
            let ip = IpAddr::from(n.to_be_bytes());
            h.server.remember_block(
                DeviceId(1),
                ip,
                h.now + Duration::from_secs(u64::from(n) + 1),
            );
            assert!(h.server.blocks.len() <= 4);
        }
        // The back-offs that end first were forgotten first.
        let kept: Vec<_> = h.server.blocks.values().copied().collect();
        assert_eq!(kept.len(), 4);
        assert!(kept.iter().all(|t| *t >= h.now + Duration::from_secs(7)));
        // They and the early probes go once they expire.
        h.server.handle_timeout(h.now + Duration::from_secs(60));
        assert!(h.server.blocks.is_empty() && h.server.early_probes.is_empty());
    }

    #[test]
    fn inconsistent_configurations_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let ca = CertificateAuthority::generate("CA", &mut rng);
        let trust = TrustStore::with(ca.certificate().clone());
        let mut make = |policy| {
            let identity = ca.issue_identity("s", &[], ANCHOR, 10, &mut rng).unwrap();
            let mut cfg = RendezvousServerConfig::new(params(identity, &trust));
            if let Some(policy) = policy {
                let mut device = crate::channel::ServerConfig::with_certificate(
                    cfg.issuer_channel.identity.clone().unwrap(),
                    ANCHOR,
                );
                device.client_certs = policy;
                cfg.device_channel = Arc::new(device);
            }
            cfg
        };
        let server = |cfg| {
            RendezvousServer::new(
                cfg,
                MemoryDirectory::new(8),
                Box::new(ChaCha20Rng::seed_from_u64(6)),
            )
        };
        // The device port must require device certificates.
        assert!(matches!(
            server(make(Some(ClientCertPolicy::None))),
            Err(Error::Rendezvous(
                RendezvousError::DeviceCertificatesNotRequired
            ))
        ));
        // Replay protection needs the skew window shorter than an entry's lifetime.
        let mut cfg = make(None);
        cfg.max_clock_skew = cfg.registration_lifetime;
        assert!(matches!(
            RendezvousServer::new(
                cfg,
                MemoryDirectory::new(1),
                Box::new(ChaCha20Rng::seed_from_u64(2))
            ),
            Err(Error::Rendezvous(
                RendezvousError::SkewNotShorterThanLifetime
            ))
        ));
    }
}

//! The remote node (seed 000's 外部ノード): talks to appliances on a closed network only
//! through their crypto proxy.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use super::OffloadEvent;
use super::appliance::DirectKey;
use super::messages::{
    CryptoAccept, CryptoRequest, CryptoSolicitation, Designation, Message, PlainData, ProxyAccept,
    ProxyRequest, Refusal, SecureData,
};
use super::timer::{self, Deadline, Slot, StreamActor, StreamTimer, Streams};
use super::{OffloadError, OffloadRefusal, StartedBy, backoff, check_name, check_payload};
use crate::channel::{ChannelError, ClientConfig, Connection, PeerIdentity, SecureStream};
use rand_core::CryptoRng;

use crate::io::{Actor, Input, Outbox, Output, StreamId, Transmit};
use crate::time::TimerTable;
use crate::wire::{FIELD_HEADER_LEN, Limits};
use crate::{Error, Instant, Rng};

/// An appliance as a remote node knows it: its name (what its proxy's certificate must
/// carry) and its datagram address as reachable from the open network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The appliance's name.
    pub name: String,
    /// Its address on the open network (e.g. the gateway's port mapping).
    pub addr: SocketAddr,
}

impl Target {
    /// The appliance `name` at `addr`.
    pub fn new(name: &str, addr: SocketAddr) -> Self {
        Target {
            name: name.into(),
            addr,
        }
    }
}

/// When the remote node runs S21/S22 before going to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// Always (flow A as the seed draws it).
    Always,
    /// Only when the appliance's proxy is not known yet — from an earlier designation or
    /// [`RemoteNode::learn_proxy`] — skipping S21/S22 as ¶0066 allows.
    WhenUnknown,
}

/// Which appliances may start sessions with this remote node (flow B).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppliancePolicy {
    /// Any appliance whose proxy proves it deputizes for it.
    Any,
    /// Only these appliances.
    Only(Vec<String>),
    /// None: appliance-initiated sessions are declined.
    Nobody,
}

/// Configuration of a [`RemoteNode`].
#[derive(Debug)]
pub struct RemoteNodeConfig {
    /// The secure channel toward proxies. Certificate mode: trust the home CA and expect
    /// the name every proxy certificate of that home carries (its subject); present a
    /// client certificate if the proxy requires one. PSK mode: see `psk_scope`.
    pub channel: Arc<ClientConfig>,
    /// The remote node's datagram socket (S21, S22, S42).
    pub local: SocketAddr,
    /// Local address for streams it opens; port 0 lets the driver choose. Default:
    /// `local`'s IP address, port 0.
    pub stream_local: SocketAddr,
    /// PSK mode: the appliances the pre-shared key's proxy deputizes for (a PSK proxy
    /// shows no certificate, so the key's provisioning is what names them). Default none.
    pub psk_scope: Vec<String>,
    /// Which appliances may start sessions (flow B). Default [`AppliancePolicy::Any`]:
    /// any appliance whose proxy proves (with the certificate the channel checks) that it
    /// deputizes for it — a remote node that listens for flow B streams and wants only its
    /// own appliances must say so with [`AppliancePolicy::Only`]. The streams arrive on
    /// whatever port its driver listens on: the one the appliance names in
    /// [`Appliance::connect`](super::Appliance::connect).
    pub accept: AppliancePolicy,
    /// When to run S21/S22. Default [`Discovery::Always`].
    pub discovery: Discovery,
    /// Wait for S24 before sending S25 (default). `false` pipelines the data right after
    /// S23, as ¶0066 allows (data is lost if the proxy refuses).
    pub await_proxy_accept: bool,
    /// First S21 retransmission timeout (doubles). Default 500 ms.
    pub request_rto: Duration,
    /// S21 retransmissions before giving up. Default 4.
    pub request_retries: u32,
    /// After a plaintext attempt (flow A'), how long to wait for S42 before sending S21.
    /// Default 1 s.
    pub solicit_wait: Duration,
    /// From the first datagram to S24, at most (per set-up; see `setup_restarts`).
    /// Default 20 s.
    pub setup_timeout: Duration,
    /// Flow A: how many times a set-up the proxy gave up waiting for (its S23 wait ended,
    /// `Refused { Timeout }`, typically after a stream segment was lost several times in a
    /// row) is started again on a new stream to the same proxy, with the queued data and a
    /// fresh `setup_timeout`. A set-up therefore ends within
    /// `(1 + setup_restarts) × setup_timeout`. Default 2.
    pub setup_restarts: u32,
    /// Open-network datagrams to appliances are padded to at least this many bytes, so an
    /// appliance can answer in full without sending more than it received. Default 192.
    pub probe_len: usize,
    /// Streams (sessions and sessions being set up), at most. Default 16.
    pub max_sessions: usize,
    /// Appliances being set up at once, at most. Default 16.
    pub max_attempts: usize,
    /// Messages queued per appliance while its session is set up, at most. Default 16.
    pub max_queued: usize,
    /// Proxies remembered from designations, at most. Default 64.
    pub max_known_proxies: usize,
    /// ¶0062: weak keys shared with individual appliances, by appliance name. Default
    /// none.
    pub direct_keys: Vec<(String, DirectKey)>,
    /// Decoding limits. Default [`Limits::default`].
    pub limits: Limits,
}

impl RemoteNodeConfig {
    /// A remote node using `channel` toward proxies and `local` for datagrams, every
    /// other field at its documented default.
    pub fn new(channel: ClientConfig, local: SocketAddr) -> Self {
        RemoteNodeConfig {
            channel: Arc::new(channel),
            local,
            stream_local: SocketAddr::new(local.ip(), 0),
            psk_scope: Vec::new(),
            accept: AppliancePolicy::Any,
            discovery: Discovery::Always,
            await_proxy_accept: true,
            request_rto: Duration::from_millis(500),
            request_retries: 4,
            solicit_wait: Duration::from_secs(1),
            setup_timeout: Duration::from_secs(20),
            setup_restarts: 2,
            probe_len: 192,
            max_sessions: 16,
            max_attempts: 16,
            max_queued: 16,
            max_known_proxies: 64,
            direct_keys: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// What a [`RemoteNode`] tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteEvent {
    /// An appliance designated its proxy: S22 (`solicited: false`) or S42.
    Designated {
        /// The appliance.
        appliance: String,
        /// The proxy's address.
        proxy: SocketAddr,
        /// Whether it came as a solicitation (flow A').
        solicited: bool,
    },
    /// A session is up: S24 received (flow A) or S33 sent (flow B).
    SessionUp {
        /// The appliance.
        appliance: String,
        /// Who started it.
        initiated_by: StartedBy,
    },
    /// Data from an appliance (S36).
    Received {
        /// The appliance.
        appliance: String,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The proxy refused us.
    Refused {
        /// The appliance asked for.
        appliance: String,
        /// Why.
        reason: OffloadRefusal,
    },
    /// We declined an appliance-initiated session (S32 not accepted).
    Declined {
        /// The appliance.
        appliance: String,
        /// Why.
        reason: OffloadRefusal,
    },
    /// Setting up or running a session failed; queued data was dropped.
    Failed {
        /// The appliance, if known.
        appliance: Option<String>,
        /// Why.
        error: OffloadError,
    },
    /// A session ended.
    Closed {
        /// The appliance.
        appliance: String,
    },
}

#[derive(Debug)]
enum Stage {
    /// Flow A': plaintext sent; waiting for S42 until `until`.
    Plaintext { until: Instant },
    /// S21 sent; retransmitted at `next_at`.
    Requesting {
        bytes: Vec<u8>,
        tries: u32,
        next_at: Instant,
    },
    /// A stream to the designated proxy.
    Connecting { stream: StreamId, proxy: SocketAddr },
}

#[derive(Debug)]
struct Attempt {
    addr: SocketAddr,
    request_id: u64,
    stage: Stage,
    queued: VecDeque<Vec<u8>>,
    deadline: Instant,
    /// Times flow A started its set-up again on a new stream (at most `setup_restarts`).
    restarts: u32,
}

/// Flow A: a stream to the designated proxy of `appliance`, until S24 answers S23.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FlowA {
    appliance: String,
    request_id: u64,
    deadline: Instant,
}

/// Where a stream with a running channel is. Until the session is up, a stream carries
/// its set-up deadline, so no stream holds a slot without a session. The appliance is
/// known from the start in flow A, and in flow B from S32 on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Flow A: the stream to the designated proxy connected; the channel handshake runs.
    /// S23 goes once the channel is up.
    Connecting(FlowA),
    /// Flow A: S23 sent; waiting for S24.
    Requested(FlowA),
    /// Flow B: the proxy opened the stream; the channel handshake runs.
    Handshaking { deadline: Instant },
    /// Flow B: the channel is up; waiting for S32.
    AwaitingCryptoRequest { deadline: Instant },
    /// Data flows.
    Up { appliance: String },
}

impl Deadline for Phase {
    /// When set-up gives up, until the session is up.
    fn deadline(&self) -> Option<Instant> {
        match self {
            Phase::Connecting(FlowA { deadline, .. })
            | Phase::Requested(FlowA { deadline, .. })
            | Phase::Handshaking { deadline }
            | Phase::AwaitingCryptoRequest { deadline } => Some(*deadline),
            Phase::Up { .. } => None,
        }
    }
}

impl Phase {
    /// The appliance, once known.
    fn appliance(&self) -> Option<&str> {
        match self {
            Phase::Connecting(FlowA { appliance, .. })
            | Phase::Requested(FlowA { appliance, .. })
            | Phase::Up { appliance } => Some(appliance),
            Phase::Handshaking { .. } | Phase::AwaitingCryptoRequest { .. } => None,
        }
    }

    /// The appliance of an up session.
    fn up(&self) -> Option<&str> {
        match self {
            Phase::Up { appliance } => Some(appliance),
            _ => None,
        }
    }

    /// Whether the channel handshake completed: a proxy whose channel failed before that
    /// did not prove who it is.
    fn established(&self) -> bool {
        matches!(
            self,
            Phase::Requested(_) | Phase::AwaitingCryptoRequest { .. } | Phase::Up { .. }
        )
    }
}

/// A stream to (or from) a proxy: dialing (flow A, connecting) or open.
type RStream = Slot<FlowA, Phase>;
type Open = timer::Open<Phase>;

impl Deadline for FlowA {
    fn deadline(&self) -> Option<Instant> {
        Some(self.deadline)
    }
}

/// The remote node.
///
/// `send` runs flow A: S21 crypto request to the appliance (retransmitted), S22 crypto
/// accept + proxy designation back, a stream to the designated proxy running the secure
/// channel, S23 proxy request, S24 proxy accept, then S25 secure data. Before S23 it
/// checks that the proxy proved it deputizes for the appliance — its certificate, issued
/// by a CA the channel configuration trusts, names the appliance (or, in PSK mode, the
/// key's scope does) — so a forged designation fails with
/// [`OffloadError::ProxyNotTrusted`] or [`OffloadError::ProxyNotDeputy`] and no data
/// leaves. `send_plaintext` models flow A' (the seed's Fig. 4): the data goes out in clear,
/// the appliance refuses it with S42, and the node continues at S23.
///
/// Streams the driver accepts on the node's listening port are flow B: S32 crypto request
/// from the proxy, checked the same way, answered with S33 crypto accept.
///
/// ```
/// use deputy::channel::ClientConfig;
/// use deputy::crypto::cert::{CertificateAuthority, TrustStore};
/// use deputy::offload::{RemoteNode, RemoteNodeConfig, Target};
/// use deputy::{Actor, Instant, Output, UnixTime};
/// use rand_chacha::ChaCha20Rng;
/// use rand_core::SeedableRng;
///
/// let mut rng = ChaCha20Rng::seed_from_u64(1);
/// let home_ca = CertificateAuthority::generate("home CA", &mut rng);
/// let anchor = UnixTime(1_800_000_000);
/// let me = home_ca.issue_identity("phone", &[], anchor, 86_400, &mut rng).unwrap();
/// let trust = TrustStore::with(home_ca.certificate().clone());
/// let channel = ClientConfig::with_client_certificate(trust, "proxy.home", me, anchor);
/// let config = RemoteNodeConfig::new(channel, "203.0.113.20:7000".parse().unwrap());
/// let mut phone = RemoteNode::new(config, Box::new(ChaCha20Rng::seed_from_u64(2)));
///
/// // S21: ask the microwave (behind the home gateway) how to talk to it securely.
/// let microwave = Target::new("microwave", "192.168.0.10:5683".parse().unwrap());
/// phone.send(Instant::ZERO, &microwave, b"defrost 300 g").unwrap();
/// match phone.poll_output() {
///     Some(Output::Transmit(t)) => {
///         assert_eq!(t.to, microwave.addr);
///         assert!(!t.data.windows(7).any(|w| w == b"defrost"), "the data never goes in clear");
///     }
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(phone.poll_timeout(), Some(Instant::from_millis(500)), "S21 retransmission");
/// ```
pub struct RemoteNode {
    cfg: RemoteNodeConfig,
    rng: Rng,
    outbox: Outbox<OffloadEvent>,
    attempts: BTreeMap<String, Attempt>,
    streams: Streams<FlowA, Phase>,
    up: BTreeMap<String, StreamId>,
    known_proxies: BTreeMap<String, SocketAddr>,
    direct_seq: BTreeMap<String, u64>,
    next_stream: u64,
}

impl fmt::Debug for RemoteNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteNode")
            .field("attempts", &self.attempts.len())
            .field("streams", &self.streams.len())
            .field("up", &self.up.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RemoteNode {
    /// A remote node with no sessions.
    pub fn new(cfg: RemoteNodeConfig, rng: Rng) -> RemoteNode {
        RemoteNode {
            cfg,
            rng,
            outbox: Outbox::default(),
            attempts: BTreeMap::new(),
            streams: Streams::default(),
            up: BTreeMap::new(),
            known_proxies: BTreeMap::new(),
            direct_seq: BTreeMap::new(),
            next_stream: 0,
        }
    }

    /// Whether a session with `appliance` is up.
    pub fn is_up(&self, appliance: &str) -> bool {
        self.up.contains_key(appliance)
    }

    /// Appliances with a session up.
    pub fn sessions(&self) -> impl Iterator<Item = &str> + '_ {
        self.up.keys().map(String::as_str)
    }

    /// The proxy remembered for `appliance`.
    pub fn known_proxy(&self, appliance: &str) -> Option<SocketAddr> {
        self.known_proxies.get(appliance).copied()
    }

    /// Remember that `proxy` deputizes for `appliance` (used with
    /// [`Discovery::WhenUnknown`] to skip S21/S22). The proxy must still prove it. `now`
    /// is taken as by every command (docs/architecture.md, "API conventions"); the cache
    /// has no expiry today.
    pub fn learn_proxy(
        &mut self,
        _now: Instant,
        appliance: &str,
        proxy: SocketAddr,
    ) -> Result<(), Error> {
        check_name(appliance)?;
        self.remember_proxy(appliance, proxy);
        Ok(())
    }

    /// Remember `proxy` for `appliance`, forgetting another if the cache is full.
    fn remember_proxy(&mut self, appliance: &str, proxy: SocketAddr) {
        if !self.known_proxies.contains_key(appliance)
            && self.known_proxies.len() >= self.cfg.max_known_proxies
        {
            // Forget the alphabetically first one: the cache is a convenience only.
            self.known_proxies.pop_first();
        }
        self.known_proxies.insert(appliance.into(), proxy);
    }

    /// Send `data` on the session that is up with `appliance`, whichever side started it:
    /// the way to answer an appliance that opened a flow B session (whose address the
    /// remote node never learns) — no [`Target`] needed. Fails with
    /// [`OffloadError::NoSession`] when no session with `appliance` is up; use
    /// [`RemoteNode::send`] to set one up.
    pub fn send_on_session(
        &mut self,
        _now: Instant,
        appliance: &str,
        data: &[u8],
    ) -> Result<(), Error> {
        check_payload(data)?;
        let id = *self
            .up
            .get(appliance)
            .ok_or_else(|| OffloadError::NoSession(appliance.into()))?;
        self.send_secure(id, data)
    }

    /// Send `data` to the appliance securely, through its proxy (flow A). Queued while the
    /// session is set up. With a session up (either flow) it goes on that session and
    /// `target.addr` is not used; [`RemoteNode::send_on_session`] needs no address.
    pub fn send(&mut self, now: Instant, target: &Target, data: &[u8]) -> Result<(), Error> {
        check_payload(data)?;
        check_name(&target.name)?;
        if let Some(&id) = self.up.get(&target.name) {
            return self.send_secure(id, data);
        }
        if let Some(attempt) = self.attempts.get_mut(&target.name) {
            return queue(attempt, data, self.cfg.max_queued);
        }
        let mut attempt = self.new_attempt(now, target)?;
        attempt.queued.push_back(data.to_vec());
        match self.known_proxies.get(&target.name) {
            Some(&proxy) if self.cfg.discovery == Discovery::WhenUnknown => {
                let stream = self.open_stream(now, &target.name, proxy, attempt.request_id)?;
                attempt.stage = Stage::Connecting { stream, proxy };
            }
            _ => self.start_request(now, &mut attempt)?,
        }
        self.attempts.insert(target.name.clone(), attempt);
        Ok(())
    }

    /// Flow A' (the seed's Fig. 4): send `data` to the appliance **in clear**, as a naive
    /// node would. The appliance must refuse it and answer S42; the node then delivers the
    /// same data securely through the proxy (S23–S26). If no S42 comes within
    /// `solicit_wait`, it falls back to S21. The data is exposed on the open network: this
    /// exists to model the seed, not for production use. With a session up it is the same
    /// as [`RemoteNode::send`].
    pub fn send_plaintext(
        &mut self,
        now: Instant,
        target: &Target,
        data: &[u8],
    ) -> Result<(), Error> {
        check_payload(data)?;
        check_name(&target.name)?;
        if self.up.contains_key(&target.name) || self.attempts.contains_key(&target.name) {
            return self.send(now, target, data);
        }
        let mut attempt = self.new_attempt(now, target)?;
        attempt.queued.push_back(data.to_vec());
        let bytes = padded(self.cfg.probe_len, |padding| {
            Message::PlainData(PlainData {
                session: 0,
                peer: None,
                payload: data.to_vec(),
                padding,
            })
        })?;
        self.transmit(target.addr, bytes)?;
        attempt.stage = Stage::Plaintext {
            until: now + self.cfg.solicit_wait,
        };
        self.attempts.insert(target.name.clone(), attempt);
        Ok(())
    }

    /// ¶0062: seal `data` with the weak key shared with this appliance and send it straight
    /// to the appliance (no proxy).
    pub fn send_direct(
        &mut self,
        _now: Instant,
        target: &Target,
        data: &[u8],
    ) -> Result<(), Error> {
        check_payload(data)?;
        let key = self
            .cfg
            .direct_keys
            .iter()
            .find(|(name, _)| *name == target.name)
            .map(|(_, k)| k.clone())
            .ok_or_else(|| OffloadError::NoDirectKey(target.name.clone()))?;
        let seq = self.direct_seq.entry(target.name.clone()).or_insert(0);
        *seq = seq.saturating_add(1);
        let sealed = Message::SealedData(key.seal(*seq, data)).encode()?;
        self.transmit(target.addr, sealed)
    }

    /// End the session with `appliance` (close-notify).
    pub fn close(&mut self, _now: Instant, appliance: &str) -> Result<(), Error> {
        let id = self
            .up
            .remove(appliance)
            .ok_or_else(|| OffloadError::NoSession(appliance.into()))?;
        match self.streams.remove(&id) {
            Some(mut s) => self.end_stream(id, &mut s),
            None => Ok(()),
        }
    }

    /// End a stream: close-notify if the channel runs, then the stream itself — also for
    /// a stream still connecting.
    fn end_stream(&mut self, id: StreamId, s: &mut RStream) -> Result<(), Error> {
        match s {
            Slot::Open(open) => self.end_channel(open),
            Slot::Dialing(_) => self.outbox.push(Output::StreamClose { id }),
        }
    }

    /// Close-notify, then the stream.
    fn end_channel(&mut self, s: &mut Open) -> Result<(), Error> {
        s.channel.close(&mut self.outbox)
    }

    fn new_attempt(&mut self, now: Instant, target: &Target) -> Result<Attempt, Error> {
        if self.attempts.len() >= self.cfg.max_attempts {
            return Err(Error::CapacityExceeded {
                what: "remote node session set-ups",
                bound: self.cfg.max_attempts,
            });
        }
        Ok(Attempt {
            addr: target.addr,
            request_id: self.fresh_id(),
            stage: Stage::Plaintext { until: now },
            queued: VecDeque::new(),
            deadline: now + self.cfg.setup_timeout,
            restarts: 0,
        })
    }

    fn fresh_id(&mut self) -> u64 {
        loop {
            let id = self.rng.next_u64();
            if id != 0 {
                return id;
            }
        }
    }

    fn transmit(&mut self, to: SocketAddr, data: Vec<u8>) -> Result<(), Error> {
        self.outbox.push(Output::Transmit(Transmit {
            from: self.cfg.local,
            to,
            data,
        }))
    }

    /// S21.
    fn start_request(&mut self, now: Instant, attempt: &mut Attempt) -> Result<(), Error> {
        let suites = self
            .cfg
            .channel
            .common
            .suites
            .iter()
            .map(|s| s.id())
            .collect::<Vec<_>>();
        let request_id = attempt.request_id;
        let bytes = padded(self.cfg.probe_len, |padding| {
            Message::CryptoRequest(CryptoRequest {
                request_id,
                appliance: None,
                suites: suites.clone(),
                padding,
            })
        })?;
        self.transmit(attempt.addr, bytes.clone())?;
        attempt.stage = Stage::Requesting {
            bytes,
            tries: 0,
            next_at: now + self.cfg.request_rto,
        };
        Ok(())
    }

    fn open_stream(
        &mut self,
        now: Instant,
        appliance: &str,
        proxy: SocketAddr,
        request_id: u64,
    ) -> Result<StreamId, Error> {
        if self.streams.len() >= self.cfg.max_sessions {
            return Err(Error::CapacityExceeded {
                what: "remote node sessions",
                bound: self.cfg.max_sessions,
            });
        }
        self.next_stream = self.next_stream.wrapping_add(1);
        let id = StreamId::outbound(self.next_stream);
        self.outbox.push(Output::Connect {
            id,
            local: self.cfg.stream_local,
            remote: proxy,
        })?;
        self.streams.insert(
            id,
            Slot::Dialing(FlowA {
                appliance: appliance.into(),
                request_id,
                deadline: now + self.cfg.setup_timeout,
            }),
        );
        Ok(id)
    }

    fn send_secure(&mut self, id: StreamId, data: &[u8]) -> Result<(), Error> {
        let Some(Slot::Open(s)) = self.streams.get_mut(&id) else {
            return Err(Error::UnknownStream(id));
        };
        let bytes = Message::SecureData(SecureData {
            payload: data.to_vec(),
        })
        .encode()?;
        s.channel.send(&bytes, &mut self.outbox)
    }

    fn send_on(&mut self, s: &mut Open, msg: &Message) -> Result<(), Error> {
        s.channel.send(&msg.encode()?, &mut self.outbox)
    }

    fn fail(&mut self, appliance: Option<String>, error: OffloadError) -> Result<(), Error> {
        self.outbox.event(RemoteEvent::Failed { appliance, error })
    }

    /// Whether the proxy on this connection proved it deputizes for `appliance`.
    fn check_deputy(&self, conn: &Connection, appliance: &str) -> Result<(), OffloadError> {
        let ok = match conn.peer() {
            PeerIdentity::Certificate(cert) => cert.names(appliance),
            PeerIdentity::Psk(_) => self.cfg.psk_scope.iter().any(|a| a == appliance),
            PeerIdentity::Anonymous => false,
        };
        if ok {
            Ok(())
        } else {
            Err(OffloadError::ProxyNotDeputy {
                appliance: appliance.into(),
            })
        }
    }

    // ----- datagrams: S22, S42 -----

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Result<(), Error> {
        let msg = Message::decode(data, &self.cfg.limits)
            .map_err(OffloadError::Decode)?
            .message;
        match msg {
            Message::CryptoAccept(CryptoAccept {
                request_id,
                designation: Some(d),
                ..
            }) => {
                let (name, waiting) = self
                    .attempts
                    .iter()
                    .find(|(_, a)| a.request_id == request_id)
                    .map(|(n, a)| (n.clone(), matches!(a.stage, Stage::Requesting { .. })))
                    .ok_or(OffloadError::UnknownRequest(request_id))?;
                if !waiting {
                    // A second answer to a retransmitted S21: already acted on.
                    return Ok(());
                }
                self.designated(now, &name, d, false)
            }
            Message::CryptoSolicitation(CryptoSolicitation { designation }) => {
                let (name, waiting) = self
                    .attempts
                    .iter()
                    .find(|(_, a)| a.addr == from)
                    .map(|(n, a)| {
                        let waiting =
                            matches!(a.stage, Stage::Plaintext { .. } | Stage::Requesting { .. });
                        (n.clone(), waiting)
                    })
                    .ok_or(OffloadError::UnsolicitedSolicitation(from))?;
                if !waiting {
                    return Ok(());
                }
                match designation {
                    Some(d) => self.designated(now, &name, d, true),
                    None => {
                        // A minimal solicitation: ask properly (S21) to learn the proxy.
                        let Some(mut attempt) = self.attempts.remove(&name) else {
                            return Ok(());
                        };
                        let result = match attempt.stage {
                            Stage::Plaintext { .. } => self.start_request(now, &mut attempt),
                            _ => Ok(()),
                        };
                        self.attempts.insert(name, attempt);
                        result
                    }
                }
            }
            other => Err(OffloadError::UnexpectedMessage(other.msg_type()).into()),
        }
    }

    /// S22 or S42 named the proxy: connect to it.
    fn designated(
        &mut self,
        now: Instant,
        name: &str,
        d: Designation,
        solicited: bool,
    ) -> Result<(), Error> {
        if d.appliance != name {
            return Err(OffloadError::DesignationMismatch {
                expected: name.into(),
                got: d.appliance,
            }
            .into());
        }
        let Some(mut attempt) = self.attempts.remove(name) else {
            return Ok(());
        };
        self.outbox.event(RemoteEvent::Designated {
            appliance: name.into(),
            proxy: d.proxy,
            solicited,
        })?;
        match self.open_stream(now, name, d.proxy, attempt.request_id) {
            Ok(stream) => {
                attempt.stage = Stage::Connecting {
                    stream,
                    proxy: d.proxy,
                };
                self.attempts.insert(name.into(), attempt);
                Ok(())
            }
            Err(e) => {
                self.fail(
                    Some(name.into()),
                    OffloadError::Refused(OffloadRefusal::SessionLimit),
                )?;
                Err(e)
            }
        }
    }

    // ----- streams: the secure channel to proxies -----

    /// Stream `id` (serving `appliance`, if known) is gone: forget the session or the
    /// set-up it carried.
    fn forget_stream(&mut self, id: StreamId, appliance: Option<&str>) {
        if let Some(name) = appliance {
            if self.up.get(name) == Some(&id) {
                self.up.remove(name);
            }
            if self.attempts.get(name).is_some_and(
                |a| matches!(a.stage, Stage::Connecting { stream, .. } if stream == id),
            ) {
                self.attempts.remove(name);
            }
        }
    }

    /// Close the stream after a protocol violation and report it.
    fn abort(&mut self, id: StreamId, s: &mut Open, error: OffloadError) -> Result<(), Error> {
        let appliance = s.phase.appliance().map(String::from);
        self.abort_for(id, s, appliance, error)
    }

    /// [`RemoteNode::abort`] on a flow B stream whose appliance the proxy just named.
    fn abort_for(
        &mut self,
        id: StreamId,
        s: &mut Open,
        appliance: Option<String>,
        error: OffloadError,
    ) -> Result<(), Error> {
        self.end_channel(s)?;
        self.forget_stream(id, appliance.as_deref());
        self.fail(appliance, error)
    }

    /// Flow A: the channel to the designated proxy is up. Check the proxy deputizes for the
    /// appliance, then S23 (and, without waiting for S24, the queued data).
    fn request_proxy(&mut self, id: StreamId, s: &mut Open, flow: FlowA) -> Result<bool, Error> {
        let name = flow.appliance.clone();
        let request_id = flow.request_id;
        if let Err(error) = self.check_deputy(s.channel.connection(), &name) {
            self.abort(id, s, error)?;
            return Ok(false);
        }
        self.send_on(
            s,
            &Message::ProxyRequest(ProxyRequest {
                request_id,
                appliance: Some(name.clone()),
                remote: None,
                remote_identity: None,
            }),
        )?;
        s.phase = Phase::Requested(flow);
        if !self.cfg.await_proxy_accept {
            self.session_up(id, s, &name, StartedBy::Remote)?;
        }
        Ok(true)
    }

    /// The session is up: register it, send what waited, tell the application.
    fn session_up(
        &mut self,
        id: StreamId,
        s: &mut Open,
        name: &str,
        initiated_by: StartedBy,
    ) -> Result<(), Error> {
        s.phase = Phase::Up {
            appliance: name.into(),
        };
        // The attempt that opened this stream (flow A) hands over its queue, and its proxy
        // is remembered (¶0066 lets later sessions skip S21/S22). An attempt still
        // discovering the proxy is finished by any session with the appliance (flow B
        // included); one connecting on another stream completes on its own.
        let (take, learned) = match self.attempts.get(name).map(|a| &a.stage) {
            Some(Stage::Connecting { stream, proxy }) if *stream == id => (true, Some(*proxy)),
            Some(Stage::Plaintext { .. } | Stage::Requesting { .. }) => (true, None),
            _ => (false, None),
        };
        let mut queued = VecDeque::new();
        if take && let Some(a) = self.attempts.remove(name) {
            queued = a.queued;
        }
        if let Some(proxy) = learned {
            self.remember_proxy(name, proxy);
        }
        self.up.insert(name.into(), id);
        self.outbox.event(RemoteEvent::SessionUp {
            appliance: name.into(),
            initiated_by,
        })?;
        for data in queued {
            self.send_on(s, &Message::SecureData(SecureData { payload: data }))?;
        }
        Ok(())
    }

    /// One offload message from a proxy. Returns whether the stream stays open.
    fn on_channel_message(
        &mut self,
        now: Instant,
        id: StreamId,
        s: &mut Open,
        msg: Message,
    ) -> Result<bool, Error> {
        let awaiting_accept = match &s.phase {
            Phase::Requested(flow) => Some((flow.request_id, flow.appliance.as_str())),
            _ => None,
        };
        let up = s.phase.up().is_some();
        match msg {
            Message::ProxyAccept(ProxyAccept {
                request_id,
                appliance,
                ..
            }) if awaiting_accept.is_some()
                && awaiting_accept.map(|(r, _)| r) == Some(request_id)
                && appliance.as_deref() == awaiting_accept.map(|(_, a)| a) =>
            {
                // S24.
                let name = appliance.unwrap_or_default();
                self.session_up(id, s, &name, StartedBy::Remote)?;
                Ok(true)
            }
            Message::ProxyAccept(_) if up && !self.cfg.await_proxy_accept => Ok(true),
            Message::CryptoRequest(req)
                if matches!(
                    s.phase,
                    Phase::Handshaking { .. } | Phase::AwaitingCryptoRequest { .. }
                ) =>
            {
                self.on_crypto_request(id, s, req)
            }
            Message::SecureData(SecureData { payload }) if up => {
                // S36.
                let appliance = s.phase.up().unwrap_or_default().into();
                self.outbox.event(RemoteEvent::Received {
                    appliance,
                    data: payload,
                })?;
                Ok(true)
            }
            Message::Refusal(Refusal {
                reason, appliance, ..
            }) => {
                if reason == OffloadRefusal::Timeout && self.restart_set_up(now, id, s)? {
                    return Ok(false);
                }
                // Flow B refusals name the appliance the stream was opened for.
                let appliance = match s.phase.appliance() {
                    Some(known) => Some(String::from(known)),
                    None => appliance.filter(|a| check_name(a).is_ok()),
                };
                self.outbox.event(RemoteEvent::Refused {
                    appliance: appliance.clone().unwrap_or_default(),
                    reason,
                })?;
                if reason == OffloadRefusal::Busy && up {
                    return Ok(true);
                }
                if up {
                    self.close_stream(id, s)?;
                    return Ok(false);
                }
                self.abort_for(id, s, appliance, OffloadError::Refused(reason))?;
                Ok(false)
            }
            other => {
                self.abort(id, s, OffloadError::UnexpectedMessage(other.msg_type()))?;
                Ok(false)
            }
        }
    }

    /// Flow A: the proxy gave up waiting for our S23 on stream `id` (`Refused { Timeout }`).
    /// If the attempt has restarts left, close this stream and start the set-up again on a
    /// new one to the same proxy, keeping the queued data. Returns whether it restarted
    /// (the stream is then closed and nothing is reported).
    fn restart_set_up(&mut self, now: Instant, id: StreamId, s: &mut Open) -> Result<bool, Error> {
        let Phase::Requested(flow) = &s.phase else {
            return Ok(false);
        };
        let name = flow.appliance.clone();
        let proxy = match self.attempts.get(&name) {
            Some(Attempt {
                stage: Stage::Connecting { stream, proxy },
                restarts,
                ..
            }) if *stream == id && *restarts < self.cfg.setup_restarts => *proxy,
            _ => return Ok(false),
        };
        self.end_channel(s)?;
        let Some(mut attempt) = self.attempts.remove(&name) else {
            return Ok(false);
        };
        match self.open_stream(now, &name, proxy, attempt.request_id) {
            Ok(stream) => {
                attempt.restarts += 1;
                attempt.deadline = now + self.cfg.setup_timeout;
                attempt.stage = Stage::Connecting { stream, proxy };
                self.attempts.insert(name, attempt);
                Ok(true)
            }
            Err(e) => {
                self.fail(Some(name), OffloadError::Refused(OffloadRefusal::Timeout))?;
                Err(e)
            }
        }
    }

    /// End an up session the proxy ended.
    fn close_stream(&mut self, id: StreamId, s: &mut Open) -> Result<(), Error> {
        self.end_channel(s)?;
        self.forget_stream(id, s.phase.appliance());
        match s.phase.appliance() {
            Some(appliance) => self.outbox.event(RemoteEvent::Closed {
                appliance: appliance.into(),
            }),
            None => Ok(()),
        }
    }

    /// Flow B, S32 → S33 (or a refusal).
    fn on_crypto_request(
        &mut self,
        id: StreamId,
        s: &mut Open,
        req: CryptoRequest,
    ) -> Result<bool, Error> {
        let Some(name) = req.appliance else {
            self.abort(id, s, OffloadError::CryptoRequestWithoutAppliance)?;
            return Ok(false);
        };
        let deputy = self.check_deputy(s.channel.connection(), &name);
        let accepted = match &self.cfg.accept {
            AppliancePolicy::Any => true,
            AppliancePolicy::Only(list) => list.contains(&name),
            AppliancePolicy::Nobody => false,
        };
        if deputy.is_err() || !accepted {
            let refusal = Message::Refusal(Refusal {
                reason: OffloadRefusal::AccessDenied,
                request_id: Some(req.request_id),
                session: 0,
                appliance: Some(name.clone()),
            });
            // Best effort: the stream is closed next either way; the refusal only tells
            // the proxy why.
            let _ = self.send_on(s, &refusal);
            match deputy {
                Err(error) => self.abort_for(id, s, Some(name), error)?,
                Ok(()) => {
                    self.end_channel(s)?;
                    self.outbox.event(RemoteEvent::Declined {
                        appliance: name,
                        reason: OffloadRefusal::AccessDenied,
                    })?;
                }
            }
            return Ok(false);
        }
        // S33.
        self.send_on(
            s,
            &Message::CryptoAccept(CryptoAccept {
                request_id: req.request_id,
                appliance: Some(name.clone()),
                designation: None,
            }),
        )?;
        self.session_up(id, s, &name, StartedBy::Appliance)?;
        Ok(true)
    }
}

/// Why the channel handshake with a proxy failed, told apart for the operator: an identity
/// verdict (the proxy failed our check, or refused our credentials) or a failure that says
/// nothing about who the proxy is (damage in transit, a timeout, a failed negotiation).
fn handshake_failure(error: ChannelError) -> OffloadError {
    use crate::error::AlertCode;
    match error {
        ChannelError::Certificate(_)
        | ChannelError::UnrecognizedName
        | ChannelError::BadSignature => OffloadError::ProxyNotTrusted(error),
        ChannelError::PeerAlert(
            AlertCode::BadCertificate
            | AlertCode::CertificateExpired
            | AlertCode::UnknownCa
            | AlertCode::AccessDenied
            | AlertCode::UnknownPskIdentity
            | AlertCode::CertificateRequired,
        ) => OffloadError::CredentialsRefused(error),
        _ => OffloadError::ProxyHandshakeFailed(error),
    }
}

/// Queue `data` on a session being set up.
fn queue(attempt: &mut Attempt, data: &[u8], bound: usize) -> Result<(), Error> {
    if attempt.queued.len() >= bound {
        return Err(Error::CapacityExceeded {
            what: "remote node queued messages",
            bound,
        });
    }
    attempt.queued.push_back(data.to_vec());
    Ok(())
}

/// Encode the message `build(padding)` makes, padded to at least `min_len` bytes.
fn padded(min_len: usize, build: impl Fn(usize) -> Message) -> Result<Vec<u8>, Error> {
    let bare = build(0).encode()?;
    if bare.len() >= min_len {
        return Ok(bare);
    }
    let padding = min_len.saturating_sub(bare.len() + FIELD_HEADER_LEN).max(1);
    Ok(build(padding).encode()?)
}

/// The timers of one session set-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttemptTimer {
    /// The whole set-up must finish by then.
    SetUp,
    /// The stage's own timer: the end of the wait for S42, or the next S21 retransmission.
    Stage,
}

/// The remote node's timers: its table is [`RemoteNode::timers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// A session set-up with this appliance.
    Attempt(String, AttemptTimer),
    /// A stream's set-up deadline or channel handshake.
    Stream(StreamId, StreamTimer),
}

impl StreamActor for RemoteNode {
    type Dialing = FlowA;
    type Phase = Phase;

    fn parts(
        &mut self,
    ) -> (
        &mut Streams<FlowA, Phase>,
        &mut Outbox<OffloadEvent>,
        &mut dyn CryptoRng,
    ) {
        (&mut self.streams, &mut self.outbox, self.rng.as_mut())
    }

    fn give_up(&mut self, _now: Instant, id: StreamId) {
        let error = OffloadError::SetUpTimeout;
        // The stream is gone either way; the only failure left is a full outbox (the
        // driver stopped draining), and a timer has no caller to return it to.
        let _ = match self.streams.remove(&id) {
            Some(Slot::Open(mut s)) => self.abort(id, &mut s, error),
            Some(Slot::Dialing(flow)) => {
                self.forget_stream(id, Some(&flow.appliance));
                self.outbox
                    .push(Output::StreamClose { id })
                    .and_then(|()| self.fail(Some(flow.appliance), error))
            }
            None => Ok(()),
        };
    }

    fn work(
        &mut self,
        now: Instant,
        id: StreamId,
        s: &mut Open,
        received: Vec<Vec<u8>>,
    ) -> Result<bool, Error> {
        if s.channel.connection().is_established() {
            // Flow B: the handshake just completed; S32 may come now.
            if let Phase::Handshaking { deadline } = s.phase {
                s.phase = Phase::AwaitingCryptoRequest { deadline };
            }
            // Flow A: the channel just came up; check the proxy, then S23.
            if let Phase::Connecting(flow) = &s.phase {
                let flow = flow.clone();
                if !self.request_proxy(id, s, flow)? {
                    return Ok(false);
                }
            }
        }
        for bytes in received {
            let msg = match Message::decode(&bytes, &self.cfg.limits) {
                Ok(d) => d.message,
                Err(e) => {
                    self.abort(id, s, OffloadError::Decode(e))?;
                    return Ok(false);
                }
            };
            if !self.on_channel_message(now, id, s, msg)? {
                return Ok(false);
            }
        }
        if let Some(error) = s.channel.connection().error().cloned() {
            let error = if s.phase.established() {
                OffloadError::Channel(error)
            } else {
                handshake_failure(error)
            };
            self.forget_stream(id, s.phase.appliance());
            self.fail(s.phase.appliance().map(String::from), error)?;
            if let Some(name) = s.phase.up() {
                self.outbox.event(RemoteEvent::Closed {
                    appliance: name.into(),
                })?;
            }
            return Ok(false);
        }
        if s.channel.is_closed() {
            // The proxy closed; the stream answered with close-notify and ended.
            self.forget_stream(id, s.phase.appliance());
            if let Some(name) = s.phase.appliance().map(String::from) {
                if s.phase.up().is_some() {
                    self.outbox.event(RemoteEvent::Closed { appliance: name })?;
                } else {
                    self.fail(Some(name), OffloadError::Refused(OffloadRefusal::Closed))?;
                }
            }
            return Ok(false);
        }
        Ok(true)
    }

    fn abandon(&mut self, _now: Instant, id: StreamId, s: &mut Open) {
        // Closing is best effort (its failure could only be the same full outbox) and the
        // stream is forgotten either way.
        let _ = self.end_channel(s);
        self.forget_stream(id, s.phase.appliance());
    }
}

impl TimerTable for RemoteNode {
    type Timer = Timer;

    /// Every armed timer, in the order `handle_timeout` fires them: set-ups first (one
    /// that gives up closes its stream, whose timers then have nothing to do), each
    /// set-up's deadline before its stage timer (no S21 retransmission after giving up).
    fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        let attempts = self.attempts.iter().flat_map(|(name, a)| {
            let stage = match &a.stage {
                Stage::Plaintext { until } => Some(*until),
                Stage::Requesting { next_at, .. } => Some(*next_at),
                Stage::Connecting { .. } => None,
            };
            [
                (AttemptTimer::SetUp, Some(a.deadline)),
                (AttemptTimer::Stage, stage),
            ]
            .into_iter()
            .filter_map(move |(timer, at)| Some((Timer::Attempt(name.clone(), timer), at?)))
        });
        let streams = StreamTimer::table(&self.streams, None)
            .map(|(id, timer, at)| (Timer::Stream(id, timer), at));
        attempts.chain(streams)
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Attempt(name, AttemptTimer::SetUp) => {
                if self.attempts.get(&name).is_none_or(|a| a.deadline > now) {
                    return;
                }
                let Some(attempt) = self.attempts.remove(&name) else {
                    return;
                };
                if let Stage::Connecting { stream, .. } = attempt.stage
                    && let Some(mut s) = self.streams.remove(&stream)
                {
                    // The stream is dropped either way; closing it can only fail on a
                    // full outbox, which a timer has no caller to return to.
                    let _ = self.end_stream(stream, &mut s);
                }
                // Reporting can only fail on a full outbox; a timer has no caller to tell.
                let _ = self.fail(Some(name), OffloadError::SetUpTimeout);
            }
            Timer::Attempt(name, AttemptTimer::Stage) => {
                let Some(mut attempt) = self.attempts.remove(&name) else {
                    return;
                };
                let outcome = match &mut attempt.stage {
                    Stage::Plaintext { until } if *until <= now => {
                        // No S42 came: ask properly (S21).
                        self.start_request(now, &mut attempt).map(|()| true)
                    }
                    Stage::Requesting {
                        bytes,
                        tries,
                        next_at,
                    } if *next_at <= now => {
                        if *tries >= self.cfg.request_retries {
                            Ok(false)
                        } else {
                            *tries += 1;
                            *next_at = now + backoff(self.cfg.request_rto, *tries);
                            let bytes = bytes.clone();
                            self.transmit(attempt.addr, bytes).map(|()| true)
                        }
                    }
                    _ => Ok(true),
                };
                match outcome {
                    // A send that failed (full outbox) is retried at the next timer: the
                    // attempt stays, and its set-up deadline bounds the retries.
                    Ok(true) | Err(_) => {
                        self.attempts.insert(name, attempt);
                    }
                    Ok(false) => {
                        // Reporting can only fail on a full outbox; a timer has no caller to tell.
                        let _ = self.fail(Some(name), OffloadError::CryptoRequestUnanswered);
                    }
                }
            }
            Timer::Stream(id, timer) => timer.fire(self, now, id),
        }
    }
}

impl Actor for RemoteNode {
    type Event = OffloadEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::Datagram { from, data, .. } => self.on_datagram(now, from, data),
            Input::StreamConnected { id, .. } => {
                let flow = timer::take_dialing(&mut self.streams, id)?;
                let conn =
                    match Connection::client(self.cfg.channel.clone(), now, self.rng.as_mut()) {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Still dialing as far as the set-up is concerned; its deadline
                            // ends it.
                            self.streams.insert(id, Slot::Dialing(flow));
                            return Err(e);
                        }
                    };
                let channel = SecureStream::new(id, conn, now);
                let phase = Phase::Connecting(flow);
                self.streams
                    .insert(id, Slot::Open(Box::new(Open { channel, phase })));
                self.drive(now, id, None)
            }
            Input::StreamAccepted { id, .. } => {
                if self.streams.len() >= self.cfg.max_sessions {
                    self.outbox.push(Output::StreamClose { id })?;
                    return Err(Error::CapacityExceeded {
                        what: "remote node sessions",
                        bound: self.cfg.max_sessions,
                    });
                }
                if self.streams.contains_key(&id) {
                    return Err(OffloadError::StreamIdReused(id).into());
                }
                // Flow B: the proxy opened this stream; we are the channel client.
                let conn = Connection::client(self.cfg.channel.clone(), now, self.rng.as_mut())?;
                self.streams.insert(
                    id,
                    Slot::Open(Box::new(Open {
                        channel: SecureStream::new(id, conn, now),
                        phase: Phase::Handshaking {
                            deadline: now + self.cfg.setup_timeout,
                        },
                    })),
                );
                self.drive(now, id, None)
            }
            Input::StreamData { id, data } => self.drive(now, id, Some(data)),
            Input::StreamClosed { id } => match self.streams.remove(&id) {
                None => Err(Error::UnknownStream(id)),
                Some(Slot::Dialing(flow)) => {
                    self.forget_stream(id, Some(&flow.appliance));
                    self.fail(Some(flow.appliance), OffloadError::Unreachable)
                }
                Some(Slot::Open(mut s)) => {
                    self.forget_stream(id, s.phase.appliance());
                    let up = s.phase.up().map(String::from);
                    let error = match s.channel.stream_closed() {
                        Ok(()) => {
                            if let Some(name) = up {
                                return self.outbox.event(RemoteEvent::Closed { appliance: name });
                            }
                            OffloadError::Refused(OffloadRefusal::Closed)
                        }
                        Err(_) => OffloadError::Channel(
                            s.channel
                                .connection()
                                .error()
                                .cloned()
                                .unwrap_or(ChannelError::TruncatedStream),
                        ),
                    };
                    self.fail(s.phase.appliance().map(String::from), error)?;
                    if let Some(name) = up {
                        self.outbox.event(RemoteEvent::Closed { appliance: name })?;
                    }
                    Ok(())
                }
            },
            Input::Packet { .. } => Err(OffloadError::PacketNotTaken.into()),
        }
    }

    timers_and_outbox!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UnixTime;
    use crate::channel::Psk;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn node(configure: impl FnOnce(&mut RemoteNodeConfig)) -> RemoteNode {
        let psk = Psk::new("phone", &[1; 32]).unwrap();
        let mut cfg = RemoteNodeConfig::new(
            ClientConfig::with_psk(psk, UnixTime(1_800_000_000)),
            "203.0.113.20:7000".parse().unwrap(),
        );
        configure(&mut cfg);
        RemoteNode::new(cfg, alloc::boxed::Box::new(ChaCha20Rng::seed_from_u64(1)))
    }

    #[test]
    fn known_proxies_are_bounded() {
        let mut n = node(|c| c.max_known_proxies = 2);
        let proxy: SocketAddr = "192.168.0.2:8443".parse().unwrap();
        for name in ["aircon", "fridge", "microwave"] {
            n.learn_proxy(Instant::ZERO, name, proxy).unwrap();
        }
        assert_eq!(n.known_proxies.len(), 2);
        assert_eq!(n.known_proxy("aircon"), None, "the first name went");
        assert_eq!(n.known_proxy("microwave"), Some(proxy));
        assert_eq!(
            n.learn_proxy(Instant::ZERO, "", proxy),
            Err(Error::Offload(OffloadError::BadName))
        );
    }

    #[test]
    fn streams_are_bounded() {
        let mut n = node(|c| c.max_sessions = 2);
        let now = Instant::ZERO;
        let accept = |i: u64| Input::StreamAccepted {
            id: StreamId::inbound(i),
            local: "203.0.113.20:7443".parse().unwrap(),
            remote: "203.0.113.1:40000".parse().unwrap(),
        };
        n.handle_input(now, accept(1)).unwrap();
        n.handle_input(now, accept(2)).unwrap();
        assert_eq!(
            n.handle_input(now, accept(3)),
            Err(Error::CapacityExceeded {
                what: "remote node sessions",
                bound: 2
            })
        );
        let mut closed = false;
        while let Some(o) = n.poll_output() {
            closed |= o
                == Output::StreamClose {
                    id: StreamId::inbound(3),
                };
        }
        assert!(closed, "the extra stream is closed at once");
        // An outbound session set-up is refused by the same bound.
        let target = Target::new("microwave", "192.168.0.10:5683".parse().unwrap());
        n.learn_proxy(
            Instant::ZERO,
            "microwave",
            "192.168.0.2:8443".parse().unwrap(),
        )
        .unwrap();
        n.cfg.discovery = Discovery::WhenUnknown;
        assert_eq!(
            n.send(now, &target, b"x"),
            Err(Error::CapacityExceeded {
                what: "remote node sessions",
                bound: 2
            })
        );
        // Streams waiting for S32 give up at the set-up deadline, freeing their slots.
        n.handle_timeout(now + n.cfg.setup_timeout);
        assert_eq!(n.streams.len(), 0);
        assert!(n.poll_timeout().is_none());
    }
}

//! The crypto proxy (seed 000's 家庭内サーバ, 暗号通信代行サーバ): encrypts and decrypts
//! for the appliances of the closed network.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use super::OffloadEvent;
use super::link::{Link, LinkKey, LinkTiming};
use super::messages::{
    Close, CryptoRequest, Message, PlainData, ProxyAccept, ProxyRequest, Refusal, SecureData,
};
use super::timer::{StreamActor, StreamTimer, TimerTable};
use super::{Initiator, OffloadError, Peer, RefusalReason, check_name};
use crate::channel::{ChannelError, Connection, SecureStream, ServerConfig};
use crate::crypto::CertError;
use crate::io::{Actor, Input, Outbox, Output, StreamId};
use crate::wire::Limits;
use crate::{Error, Instant, Rng};

/// Which remote nodes may reach an appliance through the proxy. The seed relies on the
/// closed network alone; deputy also requires every remote node to authenticate (client
/// certificate or PSK) and checks this policy at S23 and, for flow B, before S32.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessPolicy {
    /// Any remote node that authenticated.
    AnyAuthenticated,
    /// Only these identities.
    Only(Vec<Peer>),
}

impl AccessPolicy {
    /// Whether `peer` may reach the appliance.
    pub fn allows(&self, peer: &Peer) -> bool {
        match self {
            AccessPolicy::AnyAuthenticated => !matches!(peer, Peer::DirectKey(_)),
            AccessPolicy::Only(list) => list.contains(peer),
        }
    }
}

/// An appliance the proxy deputizes for.
#[derive(Clone, Debug)]
pub struct ServedAppliance {
    /// The appliance's datagram address on the closed network.
    pub addr: SocketAddr,
    /// The provisioned link key (must match the appliance's).
    pub link_key: Option<LinkKey>,
    /// Who may reach it.
    pub access: AccessPolicy,
    /// The first sequence number the proxy uses toward it.
    pub first_seq: u64,
}

impl ServedAppliance {
    /// An appliance at `addr` reachable by the remote nodes `access` allows.
    pub fn new(addr: SocketAddr, access: AccessPolicy) -> Self {
        ServedAppliance {
            addr,
            link_key: None,
            access,
            first_seq: 1,
        }
    }

    /// Protect the link with `key`.
    pub fn with_link_key(mut self, key: LinkKey) -> Self {
        self.link_key = Some(key);
        self
    }
}

/// Configuration of a [`CryptoProxy`].
#[derive(Debug)]
pub struct ProxyConfig {
    /// The secure channel toward remote nodes. In certificate mode its certificate must
    /// name every served appliance (as subject or also-name); remote nodes authenticate
    /// with client certificates (`ClientCertPolicy::Required`) or pre-shared keys.
    pub channel: Arc<ServerConfig>,
    /// The proxy's datagram socket on the closed network.
    pub local: SocketAddr,
    /// Local address for streams the proxy opens (flow B); port 0 lets the driver choose.
    pub stream_local: SocketAddr,
    appliances: BTreeMap<String, ServedAppliance>,
    /// Retransmission and bounds on each appliance link.
    pub link: LinkTiming,
    /// Streams (handshaking, awaiting S23, setting up flow B, or carrying a session), at
    /// most; more are closed at once.
    pub max_streams: usize,
    /// Sessions (remote node ↔ appliance), at most; more are refused with
    /// [`RefusalReason::SessionLimit`].
    pub max_sessions: usize,
    /// Flow B requests being set up (S31 received, S34 not yet sent), at most.
    pub max_pending: usize,
    /// How long a stream may go without a session: from accepting it to S23 (flow A), or
    /// from S31 to S33 (flow B).
    pub request_timeout: Duration,
    /// Wait for the remote node's S33 before S34 (default). `false` skips the wait as
    /// ¶0078 allows: S34 goes to the appliance as soon as the channel is up and the remote
    /// node is authorized, with S32 sent for information.
    pub await_crypto_accept: bool,
    /// Decoding limits for offload messages.
    pub limits: Limits,
}

impl ProxyConfig {
    /// The most appliances one proxy serves.
    pub const MAX_APPLIANCES: usize = 256;

    /// A proxy running `channel` toward the open network and listening for appliances on
    /// `local`.
    pub fn new(channel: ServerConfig, local: SocketAddr) -> Self {
        ProxyConfig {
            channel: Arc::new(channel),
            local,
            stream_local: SocketAddr::new(local.ip(), 0),
            appliances: BTreeMap::new(),
            link: LinkTiming::default(),
            max_streams: 64,
            max_sessions: 32,
            max_pending: 16,
            request_timeout: Duration::from_secs(15),
            await_crypto_accept: true,
            limits: Limits::default(),
        }
    }

    /// Deputize for the appliance `name`. Fails if the name is invalid or served already,
    /// the address is taken, the table is full, or the certificate does not name it.
    pub fn serve(&mut self, name: &str, appliance: ServedAppliance) -> Result<(), Error> {
        check_name(name)?;
        if self.appliances.len() >= Self::MAX_APPLIANCES {
            return Err(Error::CapacityExceeded {
                what: "proxy appliances",
                bound: Self::MAX_APPLIANCES,
            });
        }
        if self.appliances.contains_key(name)
            || self.appliances.values().any(|a| a.addr == appliance.addr)
        {
            return Err(Error::Config("appliance name or address served twice"));
        }
        if let Some(id) = &self.channel.identity
            && !id.certificate.names(name)
        {
            return Err(Error::Certificate(CertError::NameMismatch {
                expected: name.into(),
            }));
        }
        self.appliances.insert(name.into(), appliance);
        Ok(())
    }

    /// The served appliances.
    pub fn appliances(&self) -> impl Iterator<Item = (&str, &ServedAppliance)> + '_ {
        self.appliances.iter().map(|(n, a)| (n.as_str(), a))
    }
}

/// What a [`CryptoProxy`] tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyEvent {
    /// A session is up: S24 sent (flow A) or S34 sent (flow B).
    SessionUp {
        /// The closed-network session id.
        session: u64,
        /// The appliance.
        appliance: String,
        /// The remote node, as the channel authenticated it.
        remote: Peer,
        /// Who started it.
        initiated_by: Initiator,
    },
    /// Data passed through: S25 → S26 (`to_appliance`) or S35 → S36.
    Forwarded {
        /// The session.
        session: u64,
        /// The appliance.
        appliance: String,
        /// Direction.
        to_appliance: bool,
        /// Payload length.
        len: usize,
    },
    /// A request was refused (the party was sent a refusal with this reason).
    Refused {
        /// The appliance concerned, if known.
        appliance: Option<String>,
        /// The remote node, if authenticated.
        remote: Option<Peer>,
        /// Why.
        reason: RefusalReason,
    },
    /// A session ended.
    SessionClosed {
        /// The session.
        session: u64,
        /// The appliance.
        appliance: String,
        /// Why.
        reason: RefusalReason,
    },
    /// A secure channel failed (handshake refused, tampered or replayed record …).
    ChannelFailed {
        /// The stream.
        stream: StreamId,
        /// Why.
        error: ChannelError,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    Data { session: u64 },
    Control,
}

/// Where a stream is. A stream that has no session yet carries its set-up deadline (S23
/// must come, or flow B finish, within `request_timeout`), so no stream holds a slot
/// without a session; a session has none.
#[derive(Debug)]
enum Phase {
    /// Flow A: an accepted stream; waiting for the handshake and S23.
    AwaitingRequest { deadline: Instant },
    /// Flow B: the stream the proxy opened for an appliance's S31.
    Outbound {
        appliance: String,
        request_id: u64,
        expect: Option<Peer>,
        deadline: Instant,
    },
    /// Flow B: the channel is up, the remote node allowed, S32 sent; waiting for S33.
    CryptoSent {
        appliance: String,
        request_id: u64,
        deadline: Instant,
    },
    /// A session: data flows both ways.
    Up { session: u64, appliance: String },
}

impl Phase {
    /// When set-up gives up, until the session is up.
    fn deadline(&self) -> Option<Instant> {
        match self {
            Phase::AwaitingRequest { deadline }
            | Phase::Outbound { deadline, .. }
            | Phase::CryptoSent { deadline, .. } => Some(*deadline),
            Phase::Up { .. } => None,
        }
    }
}

struct Stream {
    /// `None` while an outbound stream is connecting.
    channel: Option<SecureStream>,
    phase: Phase,
    /// The remote node, once the channel authenticated it.
    peer: Option<Peer>,
}

/// The crypto proxy.
///
/// It serves many appliances (each over its own closed-network link, see
/// [`ServedAppliance`]) and many remote nodes (each over its own stream running the
/// secure channel) at once:
///
/// - flow A: on an accepted stream, after the channel handshake, S23 proxy request →
///   S24 proxy accept (or a typed refusal); then S25 secure data is decrypted and
///   forwarded to the appliance as S26;
/// - flow B: on an appliance's S31 proxy request, it opens a stream to the remote node,
///   sends S32 crypto request over the channel, and on S33 sends S34 proxy accept to the
///   appliance; then the appliance's S35 plain data goes to the remote node encrypted
///   (S36).
///
/// Streams it accepts are flow A; the driver listens on the proxy's stream port.
///
/// ```
/// use deputy::channel::{ClientCertPolicy, ServerConfig};
/// use deputy::crypto::cert::{CertificateAuthority, TrustStore};
/// use deputy::offload::{AccessPolicy, CryptoProxy, Peer, ProxyConfig, ServedAppliance};
/// use deputy::{Actor, Input, Instant, StreamId, UnixTime};
/// use rand_chacha::ChaCha20Rng;
/// use rand_core::SeedableRng;
///
/// let mut rng = ChaCha20Rng::seed_from_u64(1);
/// let anchor = UnixTime(1_800_000_000);
/// let home_ca = CertificateAuthority::generate("home CA", &mut rng);
/// // The proxy's certificate names the appliances it deputizes for.
/// let id = home_ca
///     .issue_identity("proxy.home", &["microwave", "aircon"], anchor, 86_400, &mut rng)
///     .unwrap();
/// let channel = ServerConfig::with_certificate(id, anchor)
///     .with_client_certs(ClientCertPolicy::Required(TrustStore::with(home_ca.certificate().clone())));
/// let only_phone = AccessPolicy::Only(vec![Peer::Certificate("phone".into())]);
/// let mut config = ProxyConfig::new(channel, "192.168.0.2:5684".parse().unwrap());
/// config
///     .serve("microwave", ServedAppliance::new("192.168.0.10:5683".parse().unwrap(), only_phone))
///     .unwrap();
/// let mut proxy = CryptoProxy::new(config, Box::new(ChaCha20Rng::seed_from_u64(2)));
///
/// // A remote node connects to the proxy's stream port (flow A begins).
/// proxy.handle_input(Instant::ZERO, Input::StreamAccepted {
///     id: StreamId::inbound(1),
///     local: "192.168.0.2:8443".parse().unwrap(),
///     remote: "203.0.113.20:50000".parse().unwrap(),
/// }).unwrap();
/// assert_eq!(proxy.stream_count(), 1);
/// assert_eq!(proxy.poll_timeout(), Some(Instant::from_secs(10)), "handshake deadline");
/// ```
pub struct CryptoProxy {
    cfg: ProxyConfig,
    rng: Rng,
    outbox: Outbox<OffloadEvent>,
    links: BTreeMap<String, Link<Tag>>,
    by_addr: BTreeMap<SocketAddr, String>,
    streams: BTreeMap<StreamId, Stream>,
    sessions: BTreeMap<u64, StreamId>,
    next_stream: u64,
}

impl fmt::Debug for CryptoProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoProxy")
            .field("appliances", &self.links.len())
            .field("streams", &self.streams.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl CryptoProxy {
    /// A proxy with no streams.
    pub fn new(cfg: ProxyConfig, mut rng: Rng) -> CryptoProxy {
        let mut links = BTreeMap::new();
        let mut by_addr = BTreeMap::new();
        for (name, a) in &cfg.appliances {
            let link = Link::start(
                cfg.local,
                a.addr,
                a.link_key.clone(),
                cfg.link,
                a.first_seq,
                rng.as_mut(),
            );
            links.insert(name.clone(), link);
            by_addr.insert(a.addr, name.clone());
        }
        CryptoProxy {
            cfg,
            rng,
            outbox: Outbox::default(),
            links,
            by_addr,
            streams: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_stream: 0,
        }
    }

    /// Open streams (all phases).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Sessions up.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The appliance and remote node of a session.
    pub fn session(&self, session: u64) -> Option<(&str, Option<&Peer>)> {
        let stream = self.streams.get(self.sessions.get(&session)?)?;
        match &stream.phase {
            Phase::Up { appliance, .. } => Some((appliance.as_str(), stream.peer.as_ref())),
            _ => None,
        }
    }

    fn pending_count(&self) -> usize {
        self.streams
            .values()
            .filter(|s| matches!(s.phase, Phase::Outbound { .. } | Phase::CryptoSent { .. }))
            .count()
    }

    fn fresh_session_id(&mut self) -> u64 {
        loop {
            let id = self.rng.next_u64();
            if id != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Send a message to an appliance over its link.
    fn send_to_appliance(
        &mut self,
        now: Instant,
        appliance: &str,
        msg: &Message,
        tag: Tag,
    ) -> Result<(), Error> {
        let link = self
            .links
            .get_mut(appliance)
            .ok_or(Error::Unexpected("no link to that appliance"))?;
        link.send(now, msg, tag, &mut self.outbox)?;
        Ok(())
    }

    /// Send a refusal to an appliance (no event).
    fn notify_appliance(
        &mut self,
        now: Instant,
        appliance: &str,
        request_id: Option<u64>,
        session: u64,
        reason: RefusalReason,
    ) -> Result<(), Error> {
        let msg = Message::Refusal(Refusal {
            reason,
            request_id,
            session,
            appliance: None,
        });
        self.send_to_appliance(now, appliance, &msg, Tag::Control)
    }

    /// Refuse an appliance's S31 and report it.
    fn refuse_appliance(
        &mut self,
        now: Instant,
        appliance: &str,
        request_id: u64,
        reason: RefusalReason,
    ) -> Result<(), Error> {
        self.notify_appliance(now, appliance, Some(request_id), 0, reason)?;
        self.outbox.event(ProxyEvent::Refused {
            appliance: Some(appliance.into()),
            remote: None,
            reason,
        })
    }

    // ----- streams: the secure channel toward remote nodes -----

    /// Feed (or, without data, just pump), then act on everything the connection
    /// produced. The stream is taken out of the table while it is worked on and put back
    /// unless it ended.
    fn drive(&mut self, now: Instant, id: StreamId, data: Option<&[u8]>) -> Result<(), Error> {
        let mut s = self.streams.remove(&id).ok_or(Error::UnknownStream(id))?;
        let mut received = Vec::new();
        let mut result = Ok(());
        if let Some(secure) = s.channel.as_mut() {
            result = secure.feed_or_pump(
                now,
                data,
                self.rng.as_mut(),
                &mut self.outbox,
                &mut received,
            );
        }
        match self.work(now, id, &mut s, received) {
            Ok(true) => {
                self.streams.insert(id, s);
            }
            Ok(false) => {}
            Err(e) => {
                // Could not report (full outbox): drop the stream rather than leave it
                // half-handled.
                self.end_stream(now, id, s, None);
                return Err(e);
            }
        }
        result
    }

    /// Act on the messages a stream's connection produced, then on its end (failure or
    /// the peer's close, which the stream has already answered). Returns whether the
    /// stream stays open.
    fn work(
        &mut self,
        now: Instant,
        id: StreamId,
        s: &mut Stream,
        received: Vec<Vec<u8>>,
    ) -> Result<bool, Error> {
        let Some(secure) = s.channel.as_ref() else {
            return Ok(true);
        };
        let conn = secure.connection();
        if conn.is_established() && s.peer.is_none() {
            match Peer::from_channel(conn.peer()) {
                Some(peer) => s.peer = Some(peer),
                None => {
                    self.refuse_stream(now, id, s, RefusalReason::AccessDenied, None, None)?;
                    return Ok(false);
                }
            }
            if matches!(s.phase, Phase::Outbound { .. })
                && !self.start_crypto_request(now, id, s)?
            {
                return Ok(false);
            }
        }
        for bytes in received {
            let msg = match Message::decode(&bytes, &self.cfg.limits) {
                Ok(d) => d.message,
                Err(_) => {
                    self.refuse_stream(now, id, s, RefusalReason::BadRequest, None, None)?;
                    return Ok(false);
                }
            };
            if !self.on_channel_message(now, id, s, msg)? {
                return Ok(false);
            }
        }
        let Some(secure) = s.channel.as_ref() else {
            return Ok(true);
        };
        if let Some(error) = secure.connection().error().cloned() {
            self.outbox.event(ProxyEvent::ChannelFailed {
                stream: id,
                error: error.clone(),
            })?;
            let reason = match error {
                ChannelError::Certificate(_)
                | ChannelError::ClientCertificateRequired
                | ChannelError::UnknownPskIdentity => RefusalReason::AccessDenied,
                _ => RefusalReason::RemoteUnreachable,
            };
            self.stream_gone(now, s, reason)?;
            return Ok(false);
        }
        if secure.is_closed() {
            // The peer closed; the stream answered with close-notify and ended.
            self.stream_gone(now, s, RefusalReason::Closed)?;
            return Ok(false);
        }
        Ok(true)
    }

    /// End a stream gracefully: close-notify (after `last`, if the channel is up), then
    /// the stream itself — also for an outbound stream still connecting.
    fn close_stream(
        &mut self,
        id: StreamId,
        s: &mut Stream,
        last: Option<&[u8]>,
    ) -> Result<(), Error> {
        match s.channel.as_mut() {
            Some(secure) => {
                if let Some(bytes) = last
                    && secure.connection().is_established()
                {
                    // Best effort: the stream ends either way.
                    let _ = secure.send(bytes, &mut self.outbox);
                }
                secure.close(&mut self.outbox)
            }
            None => self.outbox.push(Output::StreamClose { id }),
        }
    }

    /// A stream ended (already closed toward the driver): tell the appliance concerned and
    /// report it — a flow B request as refused, a session as closed.
    fn stream_gone(
        &mut self,
        now: Instant,
        s: &Stream,
        reason: RefusalReason,
    ) -> Result<(), Error> {
        match &s.phase {
            Phase::AwaitingRequest { .. } => Ok(()),
            Phase::Outbound {
                appliance,
                request_id,
                ..
            }
            | Phase::CryptoSent {
                appliance,
                request_id,
                ..
            } => {
                let (appliance, request) = (appliance.clone(), *request_id);
                self.notify_appliance(now, &appliance, Some(request), 0, reason)?;
                self.outbox.event(ProxyEvent::Refused {
                    appliance: Some(appliance),
                    remote: s.peer.clone(),
                    reason,
                })
            }
            Phase::Up { session, appliance } => {
                let (session, appliance) = (*session, appliance.clone());
                self.sessions.remove(&session);
                // Data already forwarded still reaches the appliance: the link delivers it
                // before the close.
                self.send_to_appliance(
                    now,
                    &appliance,
                    &Message::Close(Close { session }),
                    Tag::Control,
                )?;
                self.outbox.event(ProxyEvent::SessionClosed {
                    session,
                    appliance,
                    reason,
                })
            }
        }
    }

    /// Send a typed refusal on the channel, close it, and tell the appliance if needed.
    /// `requested` names the appliance a flow A request asked for (for the report).
    fn refuse_stream(
        &mut self,
        now: Instant,
        id: StreamId,
        s: &mut Stream,
        reason: RefusalReason,
        request_id: Option<u64>,
        requested: Option<&str>,
    ) -> Result<(), Error> {
        let appliance = match &s.phase {
            Phase::Outbound { appliance, .. }
            | Phase::CryptoSent { appliance, .. }
            | Phase::Up { appliance, .. } => Some(appliance.clone()),
            Phase::AwaitingRequest { .. } => requested.map(String::from),
        };
        let refusal = Message::Refusal(Refusal {
            reason,
            request_id,
            session: 0,
            appliance: appliance.clone(),
        })
        .encode()?;
        self.close_stream(id, s, Some(&refusal))?;
        if matches!(s.phase, Phase::AwaitingRequest { .. }) {
            self.outbox.event(ProxyEvent::Refused {
                appliance,
                remote: s.peer.clone(),
                reason,
            })?;
        }
        self.stream_gone(now, s, reason)
    }

    /// Close a stream without ceremony (used when reporting failed).
    fn end_stream(&mut self, now: Instant, id: StreamId, s: Stream, reason: Option<RefusalReason>) {
        // Only called while an error is already on its way to the caller: both steps are
        // best effort, and their own failure could only be the same full outbox.
        let _ = self.outbox.push(Output::StreamClose { id });
        let _ = self.stream_gone(now, &s, reason.unwrap_or(RefusalReason::Closed));
    }

    fn send_on(&mut self, id: StreamId, s: &mut Stream, msg: &Message) -> Result<(), Error> {
        let secure = s.channel.as_mut().ok_or(Error::UnknownStream(id))?;
        secure.send(&msg.encode()?, &mut self.outbox)
    }

    /// Flow B, the channel to the remote node is up: check who it is, then S32.
    fn start_crypto_request(
        &mut self,
        now: Instant,
        id: StreamId,
        s: &mut Stream,
    ) -> Result<bool, Error> {
        let Phase::Outbound {
            appliance,
            request_id,
            expect,
            deadline,
        } = &s.phase
        else {
            return Ok(true);
        };
        let (appliance, request_id, deadline) = (appliance.clone(), *request_id, *deadline);
        let peer = s.peer.clone().ok_or(Error::Unexpected("no peer"))?;
        let allowed = expect.as_ref().is_none_or(|e| *e == peer)
            && self
                .cfg
                .appliances
                .get(&appliance)
                .is_some_and(|a| a.access.allows(&peer));
        if !allowed {
            self.refuse_stream(now, id, s, RefusalReason::AccessDenied, None, None)?;
            return Ok(false);
        }
        if self.sessions.len() >= self.cfg.max_sessions {
            self.refuse_stream(now, id, s, RefusalReason::SessionLimit, None, None)?;
            return Ok(false);
        }
        // S32.
        self.send_on(
            id,
            s,
            &Message::CryptoRequest(CryptoRequest {
                request_id,
                appliance: Some(appliance.clone()),
                suites: Vec::new(),
                padding: 0,
            }),
        )?;
        s.phase = Phase::CryptoSent {
            appliance: appliance.clone(),
            request_id,
            deadline,
        };
        if !self.cfg.await_crypto_accept {
            self.session_up_for_appliance(now, id, s, appliance, request_id)?;
        }
        Ok(true)
    }

    /// Flow B: S34 to the appliance; the session is up.
    fn session_up_for_appliance(
        &mut self,
        now: Instant,
        id: StreamId,
        s: &mut Stream,
        appliance: String,
        request_id: u64,
    ) -> Result<(), Error> {
        let peer = s.peer.clone().ok_or(Error::Unexpected("no peer"))?;
        let session = self.fresh_session_id();
        self.send_to_appliance(
            now,
            &appliance,
            &Message::ProxyAccept(ProxyAccept {
                request_id,
                session,
                appliance: None,
                peer: Some(peer.clone()),
            }),
            Tag::Control,
        )?;
        self.session_up(id, s, session, appliance, peer, Initiator::Appliance)
    }

    /// S24 or S34 went out: the stream carries `session` from now on.
    fn session_up(
        &mut self,
        id: StreamId,
        s: &mut Stream,
        session: u64,
        appliance: String,
        remote: Peer,
        initiated_by: Initiator,
    ) -> Result<(), Error> {
        self.sessions.insert(session, id);
        s.phase = Phase::Up {
            session,
            appliance: appliance.clone(),
        };
        self.outbox.event(ProxyEvent::SessionUp {
            session,
            appliance,
            remote,
            initiated_by,
        })
    }

    /// One offload message from a remote node. Returns whether the stream stays open.
    fn on_channel_message(
        &mut self,
        now: Instant,
        id: StreamId,
        s: &mut Stream,
        msg: Message,
    ) -> Result<bool, Error> {
        let (session, appliance, request_id, crypto_sent) = match &s.phase {
            Phase::AwaitingRequest { .. } => (None, None, None, false),
            Phase::Outbound {
                appliance,
                request_id,
                ..
            } => (None, Some(appliance.clone()), Some(*request_id), false),
            Phase::CryptoSent {
                appliance,
                request_id,
                ..
            } => (None, Some(appliance.clone()), Some(*request_id), true),
            Phase::Up { session, appliance } => {
                (Some(*session), Some(appliance.clone()), None, true)
            }
        };
        match (session, appliance, msg) {
            (None, None, Message::ProxyRequest(req)) => self.on_proxy_request(now, id, s, req),
            (Some(session), Some(appliance), Message::SecureData(SecureData { payload })) => {
                self.on_secure_data(now, id, s, session, appliance, payload)
            }
            (None, Some(appliance), Message::CryptoAccept(acc)) if crypto_sent => {
                // S33.
                if Some(acc.request_id) != request_id
                    || acc.appliance.as_deref() != Some(appliance.as_str())
                {
                    self.refuse_stream(now, id, s, RefusalReason::BadRequest, None, None)?;
                    return Ok(false);
                }
                // Sessions may have come up since S32 went out: the bound holds here too.
                if self.sessions.len() >= self.cfg.max_sessions {
                    self.refuse_stream(now, id, s, RefusalReason::SessionLimit, None, None)?;
                    return Ok(false);
                }
                let request_id = acc.request_id;
                self.session_up_for_appliance(now, id, s, appliance, request_id)?;
                Ok(true)
            }
            // S33 after S34 went out early (¶0078): nothing more to do.
            (Some(_), Some(_), Message::CryptoAccept(_)) if !self.cfg.await_crypto_accept => {
                Ok(true)
            }
            (_, Some(_), Message::Refusal(r)) => {
                // The remote node turned the session down (S32 refused) or ended it.
                let reason = match r.reason {
                    RefusalReason::AccessDenied => RefusalReason::RemoteRefused,
                    other => other,
                };
                self.close_stream(id, s, None)?;
                self.stream_gone(now, s, reason)?;
                Ok(false)
            }
            _ => {
                self.refuse_stream(now, id, s, RefusalReason::BadRequest, None, None)?;
                Ok(false)
            }
        }
    }

    /// S25 → S26.
    fn on_secure_data(
        &mut self,
        now: Instant,
        id: StreamId,
        s: &mut Stream,
        session: u64,
        appliance: String,
        payload: Vec<u8>,
    ) -> Result<bool, Error> {
        if !self.links.get(&appliance).is_some_and(Link::has_room) {
            let busy = Message::Refusal(Refusal {
                reason: RefusalReason::Busy,
                request_id: None,
                session: 0,
                appliance: Some(appliance.clone()),
            });
            self.send_on(id, s, &busy)?;
            self.outbox.event(ProxyEvent::Refused {
                appliance: Some(appliance),
                remote: s.peer.clone(),
                reason: RefusalReason::Busy,
            })?;
            return Ok(true);
        }
        let len = payload.len();
        let forward = Message::PlainData(PlainData {
            session,
            peer: s.peer.clone(),
            payload,
            padding: 0,
        });
        self.send_to_appliance(now, &appliance, &forward, Tag::Data { session })?;
        self.outbox.event(ProxyEvent::Forwarded {
            session,
            appliance,
            to_appliance: true,
            len,
        })?;
        Ok(true)
    }

    /// S23 → S24, or a typed refusal.
    fn on_proxy_request(
        &mut self,
        now: Instant,
        id: StreamId,
        s: &mut Stream,
        req: ProxyRequest,
    ) -> Result<bool, Error> {
        let peer = s.peer.clone().ok_or(Error::Unexpected("no peer"))?;
        let Some(appliance) = req.appliance else {
            self.refuse_stream(
                now,
                id,
                s,
                RefusalReason::BadRequest,
                Some(req.request_id),
                None,
            )?;
            return Ok(false);
        };
        let reason = match self.cfg.appliances.get(&appliance) {
            None => Some(RefusalReason::UnknownAppliance),
            Some(a) if !a.access.allows(&peer) => Some(RefusalReason::AccessDenied),
            Some(_) if self.sessions.len() >= self.cfg.max_sessions => {
                Some(RefusalReason::SessionLimit)
            }
            Some(_) => None,
        };
        if let Some(reason) = reason {
            self.refuse_stream(now, id, s, reason, Some(req.request_id), Some(&appliance))?;
            return Ok(false);
        }
        let session = self.fresh_session_id();
        self.send_on(
            id,
            s,
            &Message::ProxyAccept(ProxyAccept {
                request_id: req.request_id,
                session,
                appliance: Some(appliance.clone()),
                peer: None,
            }),
        )?;
        self.session_up(id, s, session, appliance, peer, Initiator::Remote)?;
        Ok(true)
    }

    // ----- closed network: appliance links -----

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Result<(), Error> {
        let appliance = self
            .by_addr
            .get(&from)
            .cloned()
            .ok_or(OffloadError::UnknownSource(from))?;
        let link = self
            .links
            .get_mut(&appliance)
            .ok_or(OffloadError::UnknownSource(from))?;
        let messages = link.receive(data, &self.cfg.limits, &mut self.outbox, self.rng.as_mut())?;
        // Act on each in order; report the first failure after trying them all.
        let mut result = Ok(());
        for msg in messages {
            let r = self.on_link_message(now, &appliance, msg);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    fn on_link_message(
        &mut self,
        now: Instant,
        appliance: &str,
        msg: Message,
    ) -> Result<(), Error> {
        match msg {
            Message::ProxyRequest(req) => self.on_appliance_request(now, appliance, req),
            Message::PlainData(m) => self.on_appliance_data(now, appliance, m),
            Message::Close(Close { session }) => {
                self.close_session(appliance, session, RefusalReason::Closed, None)
            }
            Message::Refusal(r) => {
                // The appliance refused a session (its table is full).
                self.close_session(appliance, r.session, r.reason, Some(r.reason))
            }
            other => Err(OffloadError::UnexpectedMessage(other.msg_type()).into()),
        }
    }

    /// S31: open a stream to the remote node.
    fn on_appliance_request(
        &mut self,
        now: Instant,
        appliance: &str,
        req: ProxyRequest,
    ) -> Result<(), Error> {
        let Some(remote) = req.remote else {
            return self.refuse_appliance(
                now,
                appliance,
                req.request_id,
                RefusalReason::BadRequest,
            );
        };
        let reason = if self.pending_count() >= self.cfg.max_pending
            || self.streams.len() >= self.cfg.max_streams
        {
            Some(RefusalReason::Busy)
        } else if self.sessions.len() >= self.cfg.max_sessions {
            Some(RefusalReason::SessionLimit)
        } else {
            None
        };
        if let Some(reason) = reason {
            return self.refuse_appliance(now, appliance, req.request_id, reason);
        }
        self.next_stream = self.next_stream.wrapping_add(1);
        let id = StreamId::outbound(self.next_stream);
        self.outbox.push(Output::Connect {
            id,
            local: self.cfg.stream_local,
            remote,
        })?;
        self.streams.insert(
            id,
            Stream {
                channel: None,
                phase: Phase::Outbound {
                    appliance: appliance.into(),
                    request_id: req.request_id,
                    expect: req.remote_identity,
                    deadline: now + self.cfg.request_timeout,
                },
                peer: None,
            },
        );
        Ok(())
    }

    /// S35 → S36.
    fn on_appliance_data(
        &mut self,
        now: Instant,
        appliance: &str,
        m: PlainData,
    ) -> Result<(), Error> {
        let owner =
            |s: &Stream| matches!(&s.phase, Phase::Up { appliance: a, .. } if a == appliance);
        let stream = self
            .sessions
            .get(&m.session)
            .copied()
            .filter(|id| self.streams.get(id).is_some_and(owner));
        let Some(id) = stream else {
            self.notify_appliance(now, appliance, None, m.session, RefusalReason::Closed)?;
            return Err(OffloadError::UnknownSession(m.session).into());
        };
        let len = m.payload.len();
        let mut s = self.streams.remove(&id).ok_or(Error::UnknownStream(id))?;
        let sent = self.send_on(
            id,
            &mut s,
            &Message::SecureData(SecureData { payload: m.payload }),
        );
        self.streams.insert(id, s);
        sent?;
        self.outbox.event(ProxyEvent::Forwarded {
            session: m.session,
            appliance: appliance.into(),
            to_appliance: false,
            len,
        })
    }

    /// The appliance ended a session (Close) or refused it: close the remote node's channel.
    fn close_session(
        &mut self,
        appliance: &str,
        session: u64,
        reason: RefusalReason,
        refusal: Option<RefusalReason>,
    ) -> Result<(), Error> {
        let Some(id) = self.sessions.get(&session).copied() else {
            return Err(OffloadError::UnknownSession(session).into());
        };
        let Some(mut s) = self.streams.remove(&id) else {
            self.sessions.remove(&session);
            return Err(Error::UnknownStream(id));
        };
        if !matches!(&s.phase, Phase::Up { appliance: a, .. } if a == appliance) {
            self.streams.insert(id, s);
            return Err(OffloadError::UnknownSession(session).into());
        }
        self.sessions.remove(&session);
        let last = match refusal {
            Some(reason) => Some(
                Message::Refusal(Refusal {
                    reason,
                    request_id: None,
                    session: 0,
                    appliance: Some(appliance.into()),
                })
                .encode()?,
            ),
            None => None,
        };
        self.close_stream(id, &mut s, last.as_deref())?;
        if let Some(link) = self.links.get_mut(appliance) {
            link.forget(|t| *t == Tag::Data { session });
        }
        self.outbox.event(ProxyEvent::SessionClosed {
            session,
            appliance: appliance.into(),
            reason,
        })
    }
}

/// The proxy's timers: its table is [`CryptoProxy::timers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// A retransmission on the link to this appliance.
    Link(String),
    /// A stream's set-up deadline or channel handshake.
    Stream(StreamId, StreamTimer),
}

impl TimerTable for CryptoProxy {
    type Timer = Timer;

    /// Every armed timer, in the order `handle_timeout` fires them: the links first, so a
    /// session whose data the appliance never acknowledged ends before its stream's own
    /// timers run.
    fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        let links = self.links.iter().filter_map(|(name, link)| {
            link.poll_timeout()
                .map(|at| (Timer::Link(name.clone()), at))
        });
        let streams =
            StreamTimer::table(&self.streams, |s| (s.phase.deadline(), s.channel.as_ref()))
                .map(|(id, timer, at)| (Timer::Stream(id, timer), at));
        links.chain(streams)
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Link(name) => {
                let lost = match self.links.get_mut(&name) {
                    Some(link) => link.handle_timeout(now, &mut self.outbox),
                    None => return,
                };
                for tag in lost {
                    if let Tag::Data { session } = tag {
                        // S26 was never acknowledged: tell the remote node and end the
                        // session. An error means the session already ended (nothing
                        // left to do) or the outbox is full; a timer has no caller to
                        // return either to.
                        let _ = self.close_session(
                            &name,
                            session,
                            RefusalReason::ApplianceUnreachable,
                            Some(RefusalReason::ApplianceUnreachable),
                        );
                    }
                }
            }
            Timer::Stream(id, timer) => timer.fire(self, now, id),
        }
    }
}

impl StreamActor for CryptoProxy {
    fn set_up_deadline(&self, id: StreamId) -> Option<Instant> {
        self.streams.get(&id).and_then(|s| s.phase.deadline())
    }

    fn give_up(&mut self, now: Instant, id: StreamId) {
        if let Some(mut s) = self.streams.remove(&id) {
            // The stream is gone either way; the only failure left is a full outbox
            // (the driver stopped draining), and a timer has no caller to return it to.
            let _ = self.refuse_stream(now, id, &mut s, RefusalReason::Timeout, None, None);
        }
    }

    fn channel(&mut self, id: StreamId) -> (Option<&mut SecureStream>, &mut Outbox<OffloadEvent>) {
        let channel = self.streams.get_mut(&id).and_then(|s| s.channel.as_mut());
        (channel, &mut self.outbox)
    }

    fn drive_failed(&mut self, now: Instant, id: StreamId) {
        // The drive reports the failure as an event and drops the stream; its error is
        // only a full outbox, which a timer has no caller to return to.
        let _ = self.drive(now, id, None);
    }
}

impl Actor for CryptoProxy {
    type Event = OffloadEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::Datagram { from, data, .. } => self.on_datagram(now, from, data),
            Input::StreamAccepted { id, .. } => {
                if self.streams.len() >= self.cfg.max_streams {
                    self.outbox.push(Output::StreamClose { id })?;
                    return Err(Error::CapacityExceeded {
                        what: "proxy streams",
                        bound: self.cfg.max_streams,
                    });
                }
                if self.streams.contains_key(&id) {
                    return Err(Error::Unexpected("stream id reused"));
                }
                let conn = Connection::server(self.cfg.channel.clone(), now);
                self.streams.insert(
                    id,
                    Stream {
                        channel: Some(SecureStream::new(id, conn, now)),
                        phase: Phase::AwaitingRequest {
                            deadline: now + self.cfg.request_timeout,
                        },
                        peer: None,
                    },
                );
                Ok(())
            }
            Input::StreamConnected { id, .. } => {
                let s = self.streams.get_mut(&id).ok_or(Error::UnknownStream(id))?;
                if s.channel.is_some() {
                    return Err(Error::Unexpected("stream connected twice"));
                }
                // The remote node speaks first (ClientHello).
                let conn = Connection::server(self.cfg.channel.clone(), now);
                s.channel = Some(SecureStream::new(id, conn, now));
                Ok(())
            }
            Input::StreamData { id, data } => self.drive(now, id, Some(data)),
            Input::StreamClosed { id } => {
                let mut s = self.streams.remove(&id).ok_or(Error::UnknownStream(id))?;
                let reason = match s.channel.as_mut() {
                    None => RefusalReason::RemoteUnreachable,
                    Some(secure) => {
                        let truncated = secure.stream_closed().is_err();
                        let error = secure.connection().error().cloned();
                        if let (true, Some(error)) = (truncated, error) {
                            self.outbox
                                .event(ProxyEvent::ChannelFailed { stream: id, error })?;
                        }
                        RefusalReason::Closed
                    }
                };
                self.stream_gone(now, &s, reason)
            }
            Input::Packet { .. } => Err(Error::Unexpected("a crypto proxy takes no raw packets")),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.run_timers(now);
    }

    fn poll_output(&mut self) -> Option<Output<OffloadEvent>> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer()
    }
}

//! The crypto proxy (seed 000's 家庭内サーバ, 暗号通信代行サーバ): encrypts and decrypts
//! for the appliances of the closed network.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
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
use super::timer::{self, Deadline, Slot, StreamActor, StreamTimer, Streams};
use super::{OffloadError, OffloadRefusal, Peer, StartedBy, check_name};
use crate::channel::{ChannelError, Connection, SecureStream, ServerConfig};
use crate::crypto::CertError;
use rand_core::CryptoRng;

use crate::io::{Actor, Input, Outbox, Output, StreamId};
use crate::time::TimerTable;
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
    /// The provisioned link key (must match the appliance's). Default `None`: the closed
    /// network is trusted (¶0070).
    pub link_key: Option<LinkKey>,
    /// Who may reach it.
    pub access: AccessPolicy,
    /// The first sequence number the proxy uses toward it. Default 1.
    pub first_seq: u64,
}

impl ServedAppliance {
    /// An appliance at `addr` reachable by the remote nodes `access` allows, the other
    /// fields at their documented defaults.
    pub fn new(addr: SocketAddr, access: AccessPolicy) -> Self {
        ServedAppliance {
            addr,
            link_key: None,
            access,
            first_seq: 1,
        }
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
    /// Default: `local`'s IP address, port 0.
    pub stream_local: SocketAddr,
    appliances: BTreeMap<String, ServedAppliance>,
    /// Retransmission and bounds on each appliance link. Default [`LinkTiming::default`].
    pub link: LinkTiming,
    /// Streams (handshaking, awaiting S23, setting up flow B, or carrying a session), at
    /// most; more are closed at once. Default 64.
    pub max_streams: usize,
    /// Sessions (remote node ↔ appliance), at most; more are refused with
    /// [`OffloadRefusal::SessionLimit`]. Default 32.
    pub max_sessions: usize,
    /// Flow B requests being set up (S31 received, S34 not yet sent), at most. Default 16.
    pub max_pending: usize,
    /// How long a stream may go without a session: from accepting it to S23 (flow A), or
    /// from S31 to S33 (flow B). Default 15 s.
    pub request_timeout: Duration,
    /// How long an up session may pass no data either way; then the proxy ends it (a
    /// `Timeout` refusal to the remote node, a Close to the appliance), so an abandoned
    /// session does not hold its slot forever. Default 10 minutes.
    pub session_idle_timeout: Duration,
    /// Wait for the remote node's S33 before S34 (default). `false` skips the wait as
    /// ¶0078 allows: S34 goes to the appliance as soon as the channel is up and the remote
    /// node is authorized, with S32 sent for information.
    pub await_crypto_accept: bool,
    /// Decoding limits for offload messages. Default [`Limits::default`].
    pub limits: Limits,
}

impl ProxyConfig {
    /// The most appliances one proxy serves.
    pub const MAX_APPLIANCES: usize = 256;

    /// A proxy running `channel` toward the open network and listening for appliances on
    /// `local`, serving no appliance yet ([`ProxyConfig::serve`]), every other field at
    /// its documented default.
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
            session_idle_timeout: Duration::from_secs(600),
            await_crypto_accept: true,
            limits: Limits::default(),
        }
    }

    /// Deputize for the appliance `name`. Fails if the name is invalid or served already,
    /// the address is taken, the table is full, or the certificate does not name it. A
    /// method rather than a public field because each entry is checked against the others
    /// and the certificate (docs/architecture.md, "API conventions").
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
            return Err(OffloadError::ServedTwice(name.into()).into());
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
        initiated_by: StartedBy,
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
        reason: OffloadRefusal,
    },
    /// A session ended.
    SessionClosed {
        /// The session.
        session: u64,
        /// The appliance.
        appliance: String,
        /// Why.
        reason: OffloadRefusal,
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

/// Flow B: what an appliance's S31 asked for, until the remote node has authenticated.
#[derive(Debug)]
pub(crate) struct Outbound {
    appliance: String,
    request_id: u64,
    /// The identity the appliance requires the remote node to prove, if any.
    expect: Option<Peer>,
    deadline: Instant,
}

/// Where a stream with a running channel is. A stream that has no session yet carries its
/// set-up deadline (S23 must come, or flow B finish, within `request_timeout`), so no
/// stream holds a slot without a session; a session has none. The remote node's identity
/// exists from the step where the channel proved it.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Flow A: an accepted stream; the channel handshake runs.
    Accepted { deadline: Instant },
    /// Flow B: the stream the proxy opened for an appliance's S31 connected; the channel
    /// handshake runs.
    Outbound(Outbound),
    /// Flow A: the channel authenticated the remote node; waiting for S23.
    AwaitingRequest { peer: Peer, deadline: Instant },
    /// Flow B: the remote node is allowed, S32 sent; waiting for S33.
    CryptoSent {
        peer: Peer,
        appliance: String,
        request_id: u64,
        deadline: Instant,
    },
    /// A session: data flows both ways. It ends when no data has passed either way for
    /// `session_idle_timeout` (at `idle_deadline`).
    Up {
        peer: Peer,
        session: u64,
        appliance: String,
        idle_deadline: Instant,
    },
}

impl Deadline for Phase {
    /// When set-up gives up, until the session is up.
    fn deadline(&self) -> Option<Instant> {
        match self {
            Phase::Accepted { deadline }
            | Phase::Outbound(Outbound { deadline, .. })
            | Phase::AwaitingRequest { deadline, .. }
            | Phase::CryptoSent { deadline, .. } => Some(*deadline),
            Phase::Up { idle_deadline, .. } => Some(*idle_deadline),
        }
    }
}

impl Phase {
    /// The remote node, once the channel authenticated it.
    fn peer(&self) -> Option<&Peer> {
        match self {
            Phase::Accepted { .. } | Phase::Outbound(_) => None,
            Phase::AwaitingRequest { peer, .. }
            | Phase::CryptoSent { peer, .. }
            | Phase::Up { peer, .. } => Some(peer),
        }
    }

    /// The appliance the stream serves, once known (flow A learns it from S23).
    fn appliance(&self) -> Option<&str> {
        match self {
            Phase::Accepted { .. } | Phase::AwaitingRequest { .. } => None,
            Phase::Outbound(Outbound { appliance, .. })
            | Phase::CryptoSent { appliance, .. }
            | Phase::Up { appliance, .. } => Some(appliance),
        }
    }
}

/// A stream toward a remote node: dialing (flow B, connecting) or open.
type Stream = Slot<Outbound, Phase>;
type Open = timer::Open<Phase>;

impl Deadline for Outbound {
    fn deadline(&self) -> Option<Instant> {
        Some(self.deadline)
    }
}

/// Whether a stream sets up a flow B session (counted against `max_pending`).
fn is_pending(s: &Stream) -> bool {
    match s {
        Slot::Dialing(_) => true,
        Slot::Open(open) => matches!(open.phase, Phase::Outbound(_) | Phase::CryptoSent { .. }),
    }
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
/// let mut channel = ServerConfig::with_certificate(id, anchor);
/// channel.client_certs = ClientCertPolicy::Required(TrustStore::with(home_ca.certificate().clone()));
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
    streams: Streams<Outbound, Phase>,
    sessions: BTreeMap<u64, StreamId>,
    /// Per appliance: sessions whose Close waits for room on the link.
    closes: BTreeMap<String, VecDeque<u64>>,
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
            streams: Streams::default(),
            sessions: BTreeMap::new(),
            closes: BTreeMap::new(),
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
        match self.streams.get(self.sessions.get(&session)?)? {
            Slot::Open(open) => match &open.phase {
                Phase::Up {
                    appliance, peer, ..
                } => Some((appliance.as_str(), Some(peer))),
                _ => None,
            },
            Slot::Dialing(_) => None,
        }
    }

    fn pending_count(&self) -> usize {
        self.streams.values().filter(|s| is_pending(s)).count()
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
            .ok_or_else(|| OffloadError::NotServed(appliance.into()))?;
        link.send(now, msg, tag, &mut self.outbox)?;
        Ok(())
    }

    /// Tell the appliance a session ended (Close). A Close must never be lost: when the
    /// link has no room (its in-flight bound is reached), it waits in the appliance's close
    /// queue, sent in order as acknowledgements or give-ups make room. The queue holds at
    /// most one Close per session, so `max_sessions` bounds it.
    fn close_to_appliance(
        &mut self,
        now: Instant,
        appliance: &str,
        session: u64,
    ) -> Result<(), Error> {
        let queue = self.closes.entry(appliance.into()).or_default();
        if queue.len() >= self.cfg.max_sessions {
            return Err(Error::CapacityExceeded {
                what: "proxy closes waiting for link room",
                bound: self.cfg.max_sessions,
            });
        }
        queue.push_back(session);
        self.flush_closes(now, appliance)
    }

    /// Send the closes that wait for `appliance`, while its link has room.
    fn flush_closes(&mut self, now: Instant, appliance: &str) -> Result<(), Error> {
        let (Some(queue), Some(link)) = (
            self.closes.get_mut(appliance),
            self.links.get_mut(appliance),
        ) else {
            return Ok(());
        };
        while link.has_room()
            && let Some(&session) = queue.front()
        {
            link.send(
                now,
                &Message::Close(Close { session }),
                Tag::Control,
                &mut self.outbox,
            )?;
            queue.pop_front();
        }
        Ok(())
    }

    /// Send a refusal to an appliance (no event).
    fn notify_appliance(
        &mut self,
        now: Instant,
        appliance: &str,
        request_id: Option<u64>,
        session: u64,
        reason: OffloadRefusal,
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
        reason: OffloadRefusal,
    ) -> Result<(), Error> {
        self.notify_appliance(now, appliance, Some(request_id), 0, reason)?;
        self.outbox.event(ProxyEvent::Refused {
            appliance: Some(appliance.into()),
            remote: None,
            reason,
        })
    }

    // ----- streams: the secure channel toward remote nodes -----

    /// End a stream gracefully: close-notify (after `last`, if the channel is up), then
    /// the stream itself.
    fn close_stream(&mut self, s: &mut Open, last: Option<&[u8]>) -> Result<(), Error> {
        close_open(s, last, &mut self.outbox)
    }

    /// A stream ended (already closed toward the driver): tell the appliance concerned and
    /// report it — a flow B request as refused, a session as closed.
    fn stream_gone(
        &mut self,
        now: Instant,
        phase: &Phase,
        reason: OffloadRefusal,
    ) -> Result<(), Error> {
        match phase {
            Phase::Accepted { .. } | Phase::AwaitingRequest { .. } => Ok(()),
            Phase::Outbound(Outbound {
                appliance,
                request_id,
                ..
            })
            | Phase::CryptoSent {
                appliance,
                request_id,
                ..
            } => {
                let remote = phase.peer().cloned();
                self.request_gone(now, appliance, *request_id, remote, reason)
            }
            Phase::Up {
                session, appliance, ..
            } => {
                let (session, appliance) = (*session, appliance.clone());
                self.sessions.remove(&session);
                // Data already forwarded still reaches the appliance: the link delivers it
                // before the close.
                self.close_to_appliance(now, &appliance, session)?;
                self.outbox.event(ProxyEvent::SessionClosed {
                    session,
                    appliance,
                    reason,
                })
            }
        }
    }

    /// A flow B request ended before its session came up: tell the appliance and report.
    fn request_gone(
        &mut self,
        now: Instant,
        appliance: &str,
        request_id: u64,
        remote: Option<Peer>,
        reason: OffloadRefusal,
    ) -> Result<(), Error> {
        self.notify_appliance(now, appliance, Some(request_id), 0, reason)?;
        self.outbox.event(ProxyEvent::Refused {
            appliance: Some(appliance.into()),
            remote,
            reason,
        })
    }

    /// Send a typed refusal on the channel, close it, and tell the appliance if needed.
    /// `requested` names the appliance a flow A request asked for (for the report).
    fn refuse_stream(
        &mut self,
        now: Instant,
        _id: StreamId,
        s: &mut Open,
        reason: OffloadRefusal,
        request_id: Option<u64>,
        requested: Option<&str>,
    ) -> Result<(), Error> {
        let appliance = s.phase.appliance().or(requested).map(String::from);
        let refusal = Message::Refusal(Refusal {
            reason,
            request_id,
            session: 0,
            appliance: appliance.clone(),
        })
        .encode()?;
        self.close_stream(s, Some(&refusal))?;
        if matches!(
            s.phase,
            Phase::Accepted { .. } | Phase::AwaitingRequest { .. }
        ) {
            self.outbox.event(ProxyEvent::Refused {
                appliance,
                remote: s.phase.peer().cloned(),
                reason,
            })?;
        }
        self.stream_gone(now, &s.phase, reason)
    }

    /// Close a stream without ceremony (used when reporting failed).
    fn end_stream(&mut self, now: Instant, id: StreamId, phase: &Phase) {
        // Only called while an error is already on its way to the caller: both steps are
        // best effort, and their own failure could only be the same full outbox.
        let _ = self.outbox.push(Output::StreamClose { id });
        let _ = self.stream_gone(now, phase, OffloadRefusal::Closed);
    }

    fn send_on(&mut self, s: &mut Open, msg: &Message) -> Result<(), Error> {
        s.channel.send(&msg.encode()?, &mut self.outbox)
    }

    /// Flow B, the channel to the remote node is up: check who it is, then S32.
    fn start_crypto_request(
        &mut self,
        now: Instant,
        id: StreamId,
        s: &mut Open,
        peer: Peer,
    ) -> Result<bool, Error> {
        let Phase::Outbound(Outbound {
            appliance,
            request_id,
            expect,
            deadline,
        }) = &s.phase
        else {
            return Ok(true);
        };
        let (appliance, request_id, deadline) = (appliance.clone(), *request_id, *deadline);
        let allowed = expect.as_ref().is_none_or(|e| *e == peer)
            && self
                .cfg
                .appliances
                .get(&appliance)
                .is_some_and(|a| a.access.allows(&peer));
        if !allowed {
            self.refuse_stream(now, id, s, OffloadRefusal::AccessDenied, None, None)?;
            return Ok(false);
        }
        if self.sessions.len() >= self.cfg.max_sessions {
            self.refuse_stream(now, id, s, OffloadRefusal::SessionLimit, None, None)?;
            return Ok(false);
        }
        // S32.
        self.send_on(
            s,
            &Message::CryptoRequest(CryptoRequest {
                request_id,
                appliance: Some(appliance.clone()),
                suites: Vec::new(),
                padding: 0,
            }),
        )?;
        s.phase = Phase::CryptoSent {
            peer: peer.clone(),
            appliance: appliance.clone(),
            request_id,
            deadline,
        };
        if !self.cfg.await_crypto_accept {
            self.session_up_for_appliance(now, id, s, appliance, request_id, peer)?;
        }
        Ok(true)
    }

    /// Flow B: S34 to the appliance; the session is up.
    fn session_up_for_appliance(
        &mut self,
        now: Instant,
        id: StreamId,
        s: &mut Open,
        appliance: String,
        request_id: u64,
        peer: Peer,
    ) -> Result<(), Error> {
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
        self.session_up(now, id, s, session, appliance, peer, StartedBy::Appliance)
    }

    /// S24 or S34 went out: the stream carries `session` from now on.
    #[allow(clippy::too_many_arguments)] // each is a fact of the new session; no struct reads better
    fn session_up(
        &mut self,
        now: Instant,
        id: StreamId,
        s: &mut Open,
        session: u64,
        appliance: String,
        remote: Peer,
        initiated_by: StartedBy,
    ) -> Result<(), Error> {
        self.sessions.insert(session, id);
        s.phase = Phase::Up {
            peer: remote.clone(),
            session,
            appliance: appliance.clone(),
            idle_deadline: now + self.cfg.session_idle_timeout,
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
        s: &mut Open,
        msg: Message,
    ) -> Result<bool, Error> {
        match (&s.phase, msg) {
            (Phase::AwaitingRequest { peer, .. }, Message::ProxyRequest(req)) => {
                let peer = peer.clone();
                self.on_proxy_request(now, id, s, peer, req)
            }
            (
                Phase::Up {
                    peer,
                    session,
                    appliance,
                    ..
                },
                Message::SecureData(SecureData { payload }),
            ) => {
                let (peer, session, appliance) = (peer.clone(), *session, appliance.clone());
                self.on_secure_data(now, s, peer, session, appliance, payload)
            }
            (
                Phase::CryptoSent {
                    peer,
                    appliance,
                    request_id,
                    ..
                },
                Message::CryptoAccept(acc),
            ) => {
                // S33.
                if acc.request_id != *request_id
                    || acc.appliance.as_deref() != Some(appliance.as_str())
                {
                    self.refuse_stream(now, id, s, OffloadRefusal::BadRequest, None, None)?;
                    return Ok(false);
                }
                // Sessions may have come up since S32 went out: the bound holds here too.
                if self.sessions.len() >= self.cfg.max_sessions {
                    self.refuse_stream(now, id, s, OffloadRefusal::SessionLimit, None, None)?;
                    return Ok(false);
                }
                let (peer, appliance) = (peer.clone(), appliance.clone());
                self.session_up_for_appliance(now, id, s, appliance, acc.request_id, peer)?;
                Ok(true)
            }
            // S33 after S34 went out early (¶0078): nothing more to do.
            (Phase::Up { .. }, Message::CryptoAccept(_)) if !self.cfg.await_crypto_accept => {
                Ok(true)
            }
            (phase, Message::Refusal(r)) if phase.appliance().is_some() => {
                // The remote node turned the session down (S32 refused) or ended it.
                let reason = match r.reason {
                    OffloadRefusal::AccessDenied => OffloadRefusal::RemoteRefused,
                    other => other,
                };
                self.close_stream(s, None)?;
                self.stream_gone(now, &s.phase, reason)?;
                Ok(false)
            }
            _ => {
                self.refuse_stream(now, id, s, OffloadRefusal::BadRequest, None, None)?;
                Ok(false)
            }
        }
    }

    /// S25 → S26.
    fn on_secure_data(
        &mut self,
        now: Instant,
        s: &mut Open,
        peer: Peer,
        session: u64,
        appliance: String,
        payload: Vec<u8>,
    ) -> Result<bool, Error> {
        touch(s, now, self.cfg.session_idle_timeout);
        if !self.links.get(&appliance).is_some_and(Link::has_room) {
            let busy = Message::Refusal(Refusal {
                reason: OffloadRefusal::Busy,
                request_id: None,
                session: 0,
                appliance: Some(appliance.clone()),
            });
            self.send_on(s, &busy)?;
            self.outbox.event(ProxyEvent::Refused {
                appliance: Some(appliance),
                remote: Some(peer),
                reason: OffloadRefusal::Busy,
            })?;
            return Ok(true);
        }
        let len = payload.len();
        let forward = Message::PlainData(PlainData {
            session,
            peer: Some(peer),
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
        s: &mut Open,
        peer: Peer,
        req: ProxyRequest,
    ) -> Result<bool, Error> {
        let Some(appliance) = req.appliance else {
            self.refuse_stream(
                now,
                id,
                s,
                OffloadRefusal::BadRequest,
                Some(req.request_id),
                None,
            )?;
            return Ok(false);
        };
        let reason = match self.cfg.appliances.get(&appliance) {
            None => Some(OffloadRefusal::UnknownAppliance),
            Some(a) if !a.access.allows(&peer) => Some(OffloadRefusal::AccessDenied),
            Some(_) if self.sessions.len() >= self.cfg.max_sessions => {
                Some(OffloadRefusal::SessionLimit)
            }
            Some(_) => None,
        };
        if let Some(reason) = reason {
            self.refuse_stream(now, id, s, reason, Some(req.request_id), Some(&appliance))?;
            return Ok(false);
        }
        let session = self.fresh_session_id();
        self.send_on(
            s,
            &Message::ProxyAccept(ProxyAccept {
                request_id: req.request_id,
                session,
                appliance: Some(appliance.clone()),
                peer: None,
            }),
        )?;
        self.session_up(now, id, s, session, appliance, peer, StartedBy::Remote)?;
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
        let received = link.receive(data, &self.cfg.limits, &mut self.outbox, self.rng.as_mut());
        // An acknowledgement may have made room for a close that waits.
        self.flush_closes(now, &appliance)?;
        let messages = received?;
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
                self.close_session(appliance, session, OffloadRefusal::Closed, None)
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
                OffloadRefusal::BadRequest,
            );
        };
        let reason = if self.pending_count() >= self.cfg.max_pending
            || self.streams.len() >= self.cfg.max_streams
        {
            Some(OffloadRefusal::Busy)
        } else if self.sessions.len() >= self.cfg.max_sessions {
            Some(OffloadRefusal::SessionLimit)
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
            Slot::Dialing(Outbound {
                appliance: appliance.into(),
                request_id: req.request_id,
                expect: req.remote_identity,
                deadline: now + self.cfg.request_timeout,
            }),
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
        let stream = self
            .sessions
            .get(&m.session)
            .and_then(|id| self.streams.get_mut(id))
            .and_then(|s| session_of(s, appliance));
        let Some(s) = stream else {
            self.notify_appliance(now, appliance, None, m.session, OffloadRefusal::Closed)?;
            return Err(OffloadError::UnknownSession(m.session).into());
        };
        touch(s, now, self.cfg.session_idle_timeout);
        let len = m.payload.len();
        let secure = Message::SecureData(SecureData { payload: m.payload }).encode()?;
        s.channel.send(&secure, &mut self.outbox)?;
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
        reason: OffloadRefusal,
        refusal: Option<OffloadRefusal>,
    ) -> Result<(), Error> {
        let Some(id) = self.sessions.get(&session).copied() else {
            return Err(OffloadError::UnknownSession(session).into());
        };
        let Some(s) = self
            .streams
            .get_mut(&id)
            .and_then(|s| session_of(s, appliance))
        else {
            return Err(OffloadError::UnknownSession(session).into());
        };
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
        // Close (and drop) the stream before reporting: a full outbox leaves no stream
        // behind that the session table no longer names. The session's link messages
        // are forgotten and its end reported even if the outbox refused the close (each
        // refused output is counted as lost); the first error is returned.
        let closed = close_open(s, last.as_deref(), &mut self.outbox);
        self.streams.remove(&id);
        self.sessions.remove(&session);
        if let Some(link) = self.links.get_mut(appliance) {
            link.forget(|t| *t == Tag::Data { session });
        }
        closed.and(self.outbox.event(ProxyEvent::SessionClosed {
            session,
            appliance: appliance.into(),
            reason,
        }))
    }
}

/// End a stream gracefully: close-notify (after `last`, if the channel is up), then the
/// stream itself.
fn close_open(
    s: &mut Open,
    last: Option<&[u8]>,
    outbox: &mut Outbox<OffloadEvent>,
) -> Result<(), Error> {
    if let Some(bytes) = last
        && s.channel.connection().is_established()
    {
        // Best effort: the stream ends either way.
        let _ = s.channel.send(bytes, outbox);
    }
    s.channel.close(outbox)
}

/// Data passed on an up session: its idle timeout starts again.
fn touch(s: &mut Open, now: Instant, idle_timeout: Duration) {
    if let Phase::Up { idle_deadline, .. } = &mut s.phase {
        *idle_deadline = now + idle_timeout;
    }
}

/// The stream if it carries a session of `appliance`.
fn session_of<'a>(s: &'a mut Stream, appliance: &str) -> Option<&'a mut Open> {
    match s {
        Slot::Open(open) if matches!(&open.phase, Phase::Up { appliance: a, .. } if a == appliance) => {
            Some(&mut **open)
        }
        _ => None,
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

impl StreamActor for CryptoProxy {
    type Dialing = Outbound;
    type Phase = Phase;

    fn parts(
        &mut self,
    ) -> (
        &mut Streams<Outbound, Phase>,
        &mut Outbox<OffloadEvent>,
        &mut dyn CryptoRng,
    ) {
        (&mut self.streams, &mut self.outbox, self.rng.as_mut())
    }

    fn give_up(&mut self, now: Instant, id: StreamId) {
        // The stream is gone either way; the only failure left is a full outbox (the
        // driver stopped draining), and a timer has no caller to return it to.
        let _ = match self.streams.remove(&id) {
            Some(Slot::Open(mut s)) => {
                self.refuse_stream(now, id, &mut s, OffloadRefusal::Timeout, None, None)
            }
            Some(Slot::Dialing(out)) => {
                self.outbox.push(Output::StreamClose { id }).and_then(|()| {
                    let reason = OffloadRefusal::Timeout;
                    self.request_gone(now, &out.appliance, out.request_id, None, reason)
                })
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
        let conn = s.channel.connection();
        if conn.is_established() && s.phase.peer().is_none() {
            let Some(peer) = Peer::from_channel(conn.peer()) else {
                self.refuse_stream(now, id, s, OffloadRefusal::AccessDenied, None, None)?;
                return Ok(false);
            };
            if let Phase::Accepted { deadline } = s.phase {
                // Flow A: S23 may come now.
                s.phase = Phase::AwaitingRequest { peer, deadline };
            } else if !self.start_crypto_request(now, id, s, peer)? {
                // Flow B: the remote node was checked and S32 sent, or it was refused.
                return Ok(false);
            }
        }
        for bytes in received {
            let msg = match Message::decode(&bytes, &self.cfg.limits) {
                Ok(d) => d.message,
                Err(_) => {
                    self.refuse_stream(now, id, s, OffloadRefusal::BadRequest, None, None)?;
                    return Ok(false);
                }
            };
            if !self.on_channel_message(now, id, s, msg)? {
                return Ok(false);
            }
        }
        if let Some(error) = s.channel.connection().error().cloned() {
            self.outbox.event(ProxyEvent::ChannelFailed {
                stream: id,
                error: error.clone(),
            })?;
            let reason = match error {
                ChannelError::Certificate(_)
                | ChannelError::ClientCertificateRequired
                | ChannelError::UnknownPskIdentity => OffloadRefusal::AccessDenied,
                _ => OffloadRefusal::RemoteUnreachable,
            };
            self.stream_gone(now, &s.phase, reason)?;
            return Ok(false);
        }
        if s.channel.is_closed() {
            // The peer closed; the stream answered with close-notify and ended.
            self.stream_gone(now, &s.phase, OffloadRefusal::Closed)?;
            return Ok(false);
        }
        Ok(true)
    }

    fn abandon(&mut self, now: Instant, id: StreamId, s: &mut Open) {
        self.end_stream(now, id, &s.phase);
    }
}

impl CryptoProxy {
    /// Every armed timer, in the order `handle_timeout` fires them: the links first, so a
    /// session whose data the appliance never acknowledged ends before its stream's own
    /// timers run. With `due_at`, of the streams only those with a timer due then.
    fn timers_until(&self, due_at: Option<Instant>) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        let links = self.links.iter().filter_map(|(name, link)| {
            link.poll_timeout()
                .map(|at| (Timer::Link(name.clone()), at))
        });
        let streams = StreamTimer::table(&self.streams, due_at)
            .map(|(id, timer, at)| (Timer::Stream(id, timer), at));
        links.chain(streams)
    }
}

impl TimerTable for CryptoProxy {
    type Timer = Timer;

    fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        self.timers_until(None)
    }

    /// The timers of [`CryptoProxy::timers_until`] due at `now`: the streams' from their
    /// index, not by asking every stream.
    fn run_timers(&mut self, now: Instant) {
        for timer in crate::time::due(self.timers_until(Some(now)), now) {
            self.fire(now, timer);
        }
    }

    /// The earliest of the links' timers and the streams' (the first of their index): a
    /// driver asks after every input, so this must not grow with the sessions.
    fn next_timer(&self) -> Option<Instant> {
        let links = self.links.values().filter_map(Link::poll_timeout);
        links.chain(self.streams.earliest()).min()
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Link(name) => {
                let lost = match self.links.get_mut(&name) {
                    Some(link) => link.handle_timeout(now, &mut self.outbox),
                    None => return,
                };
                // Messages given up make room for closes that wait. A full outbox leaves
                // them queued for the next timer or acknowledgement.
                let _ = self.flush_closes(now, &name);
                for tag in lost {
                    if let Tag::Data { session } = tag {
                        // S26 was never acknowledged: tell the remote node and end the
                        // session. An error means the session already ended (nothing
                        // left to do) or the outbox is full; a timer has no caller to
                        // return either to.
                        let _ = self.close_session(
                            &name,
                            session,
                            OffloadRefusal::ApplianceUnreachable,
                            Some(OffloadRefusal::ApplianceUnreachable),
                        );
                    }
                }
            }
            Timer::Stream(id, timer) => timer.fire(self, now, id),
        }
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
                    return Err(OffloadError::StreamIdReused(id).into());
                }
                let conn = Connection::server(self.cfg.channel.clone(), now);
                self.streams.insert(
                    id,
                    Slot::Open(Box::new(Open {
                        channel: SecureStream::new(id, conn, now),
                        phase: Phase::Accepted {
                            deadline: now + self.cfg.request_timeout,
                        },
                    })),
                );
                Ok(())
            }
            Input::StreamConnected { id, .. } => {
                let out = timer::take_dialing(&mut self.streams, id)?;
                // The remote node speaks first (ClientHello).
                let conn = Connection::server(self.cfg.channel.clone(), now);
                let channel = SecureStream::new(id, conn, now);
                let phase = Phase::Outbound(out);
                self.streams
                    .insert(id, Slot::Open(Box::new(Open { channel, phase })));
                Ok(())
            }
            Input::StreamData { id, data } => self.drive(now, id, Some(data)),
            Input::StreamClosed { id } => match self.streams.remove(&id) {
                None => Err(Error::UnknownStream(id)),
                Some(Slot::Dialing(out)) => self.request_gone(
                    now,
                    &out.appliance,
                    out.request_id,
                    None,
                    OffloadRefusal::RemoteUnreachable,
                ),
                Some(Slot::Open(mut s)) => {
                    let truncated = s.channel.stream_closed().is_err();
                    let error = s.channel.connection().error().cloned();
                    if let (true, Some(error)) = (truncated, error) {
                        self.outbox
                            .event(ProxyEvent::ChannelFailed { stream: id, error })?;
                    }
                    self.stream_gone(now, &s.phase, OffloadRefusal::Closed)
                }
            },
            Input::Packet { .. } => Err(OffloadError::PacketNotTaken.into()),
        }
    }

    timers_and_outbox!();
}

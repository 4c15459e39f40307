//! The delegating appliance (seed 000's 家庭内ノード): a device too weak for strong
//! cryptography that lets its crypto proxy encrypt and decrypt for it.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use super::OffloadEvent;
use super::link::{Link, LinkKey, LinkTiming};
use super::messages::{
    Close, CryptoAccept, CryptoSolicitation, Decoded, Designation, Message, PlainData, ProxyAccept,
    ProxyRequest, Refusal, SealedData,
};
use super::{OffloadError, OffloadRefusal, Peer, StartedBy, check_name, check_payload};
use crate::crypto::aead::{AeadAlg, AeadKey, NONCE_LEN};
use crate::io::{Actor, Input, Outbox, Output, Transmit};
use crate::ipsec::ReplayWindow;
use crate::ratelimit::{RateLimit, SourceLimiter};
use crate::time::TimerTable;
use crate::wire::Limits;
use crate::{Error, Instant, Rng};

const SEALED_CONTEXT: &[u8] = b"deputy offload sealed v1\0";

/// A weak symmetric key the appliance can use itself (¶0062): ChaCha20-Poly1305 with a
/// provisioned 256-bit key, named by a 32-bit id. A remote node holding the same key may
/// send [`SealedData`] straight to the appliance; anything sealed with another key is
/// refused as undecryptable (flow A').
#[derive(Clone)]
pub struct DirectKey {
    id: u32,
    key: AeadKey,
}

impl fmt::Debug for DirectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DirectKey({})", self.id)
    }
}

impl DirectKey {
    /// A key with this id and 32 provisioned bytes.
    pub fn new(id: u32, key: &[u8; 32]) -> DirectKey {
        DirectKey {
            id,
            // A 32-byte key always fits ChaCha20-Poly1305.
            key: AeadKey::new(AeadAlg::ChaCha20Poly1305, key)
                .unwrap_or_else(|_| unreachable!("32-byte key")),
        }
    }

    /// The key id.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn nonce_aad(&self, seq: u64) -> ([u8; NONCE_LEN], Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.id.to_be_bytes());
        nonce[4..].copy_from_slice(&seq.to_be_bytes());
        let mut aad = Vec::with_capacity(SEALED_CONTEXT.len() + 12);
        aad.extend_from_slice(SEALED_CONTEXT);
        aad.extend_from_slice(&nonce);
        (nonce, aad)
    }

    /// Seal `data` as the `seq`-th message under this key.
    pub(crate) fn seal(&self, seq: u64, data: &[u8]) -> SealedData {
        let (nonce, aad) = self.nonce_aad(seq);
        SealedData {
            key_id: self.id,
            seq,
            ciphertext: self.key.seal(&nonce, &aad, data),
        }
    }

    fn open(&self, sealed: &SealedData) -> Option<Vec<u8>> {
        let (nonce, aad) = self.nonce_aad(sealed.seq);
        self.key.open(&nonce, &aad, &sealed.ciphertext).ok()
    }
}

/// How the appliance answered a datagram from the open network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Solicited {
    /// With the full answer (S22 accept + designation, or S42 solicitation + designation).
    Full,
    /// With a minimal solicitation (no designation): the full one would have been larger
    /// than the datagram that provoked it.
    Minimal,
    /// Not at all: even the minimal answer would have been larger than the datagram.
    TooSmall,
    /// Not at all: the rate limit for the source (or for everyone) was spent.
    RateLimited,
}

/// What an [`Appliance`] tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplianceEvent {
    /// S21 arrived; `answer` says whether S22 (crypto accept + proxy designation) went out.
    CryptoRequested {
        /// The requester, as the appliance sees it.
        from: SocketAddr,
        /// The answer.
        answer: Solicited,
    },
    /// Flow A': a plaintext datagram from outside the link to the proxy was dropped unread;
    /// `answer` says whether S42 went out.
    RefusedPlaintext {
        /// The sender.
        from: SocketAddr,
        /// Its length.
        len: usize,
        /// The answer.
        answer: Solicited,
    },
    /// Flow A': encrypted data the appliance cannot open was dropped.
    RefusedUndecryptable {
        /// The sender.
        from: SocketAddr,
        /// Its length.
        len: usize,
        /// The answer.
        answer: Solicited,
    },
    /// A session with a remote node is up: S34 answered our S31 (flow B), or the proxy
    /// forwarded the first S26 of a remote node's session (flow A).
    SessionUp {
        /// The closed-network session id (use it with [`Appliance::send`]).
        session: u64,
        /// The remote node, as the proxy authenticated it.
        remote: Peer,
        /// Who started it.
        initiated_by: StartedBy,
        /// Flow B: the id [`Appliance::connect`] returned.
        request: Option<u64>,
    },
    /// Data for the application: S26 from the proxy, or data the appliance opened with its
    /// own weak key (¶0062, `session` is `None`).
    Delivered {
        /// The session, for replies.
        session: Option<u64>,
        /// Who sent it.
        from: Peer,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The proxy refused our S31 (or it timed out).
    Refused {
        /// The id [`Appliance::connect`] returned.
        request: u64,
        /// Why.
        reason: OffloadRefusal,
    },
    /// A session ended (the remote node closed, or the proxy refused it).
    SessionClosed {
        /// The session.
        session: u64,
        /// Why.
        reason: OffloadRefusal,
    },
    /// S35 data was never acknowledged by the proxy.
    SendFailed {
        /// The session.
        session: u64,
    },
}

/// The values an [`ApplianceConfig`] has no default for, by name: the three addresses
/// cannot be swapped without it showing.
#[derive(Clone, Debug)]
pub struct ApplianceParams {
    /// The appliance's name (what the proxy's certificate names): 1 to
    /// [`MAX_NAME_LEN`](super::MAX_NAME_LEN) bytes.
    pub name: String,
    /// The appliance's datagram socket.
    pub local: SocketAddr,
    /// The proxy's datagram address on the closed network.
    pub proxy: SocketAddr,
    /// The proxy's stream address as reachable from the open network (the designation).
    pub proxy_public: SocketAddr,
}

/// Configuration of an [`Appliance`]: [`ApplianceConfig::new`] takes what has no default,
/// every other field is public and starts at the default its documentation states.
#[derive(Clone, Debug)]
pub struct ApplianceConfig {
    /// The appliance's name (what the proxy's certificate names). No default.
    pub name: String,
    /// The appliance's datagram socket. No default.
    pub local: SocketAddr,
    /// The proxy's datagram address on the closed network. No default.
    pub proxy: SocketAddr,
    /// The proxy's stream address as reachable from the open network (the designation).
    /// No default.
    pub proxy_public: SocketAddr,
    /// The provisioned link key; `None` (the default) trusts the closed network (¶0070).
    pub link_key: Option<LinkKey>,
    /// Retransmission and bounds on the link to the proxy. Default
    /// [`LinkTiming::default`].
    pub link: LinkTiming,
    /// The first link sequence number. A restart is recognised by the link's random epoch,
    /// so this may stay at its default, 1.
    pub first_seq: u64,
    /// Answers to one source address. Default 2 per second, burst 1.
    pub per_source: RateLimit,
    /// Answers to all sources together. Default 8 per second, burst 4.
    pub global: RateLimit,
    /// Source addresses tracked by the rate limiter. Default 32.
    pub max_sources: usize,
    /// Weak keys the appliance opens itself (¶0062); only the first
    /// [`ApplianceConfig::MAX_DIRECT_KEYS`] are used. Default none. A datagram sealed
    /// with one of them is delivered once: a replay (a sequence number already seen or
    /// below the key's window) is dropped without an answer and without an event, and
    /// [`Actor::handle_input`](crate::Actor::handle_input) returns
    /// [`OffloadError::Replayed`].
    pub direct_keys: Vec<DirectKey>,
    /// Open sessions, at most. Default 8.
    pub max_sessions: usize,
    /// S31 requests awaiting S34, at most. Default 4.
    pub max_pending: usize,
    /// How long S31 may wait for S34. Default 10 s.
    pub open_timeout: Duration,
    /// Decoding limits. Default [`Limits::default`] with messages of at most 4096 bytes.
    pub limits: Limits,
}

impl ApplianceConfig {
    /// The most weak keys one appliance holds.
    pub const MAX_DIRECT_KEYS: usize = 16;

    /// A configuration from `params`, every other field at its documented default. Fails
    /// if the name is empty or too long.
    pub fn new(params: ApplianceParams) -> Result<Self, Error> {
        let ApplianceParams {
            name,
            local,
            proxy,
            proxy_public,
        } = params;
        check_name(&name)?;
        Ok(ApplianceConfig {
            name,
            local,
            proxy,
            proxy_public,
            link_key: None,
            link: LinkTiming::default(),
            first_seq: 1,
            per_source: RateLimit::per_second(2, 1),
            global: RateLimit::per_second(8, 4),
            max_sources: 32,
            direct_keys: Vec::new(),
            max_sessions: 8,
            max_pending: 4,
            open_timeout: Duration::from_secs(10),
            limits: Limits {
                max_message_len: 4096,
                ..Limits::default()
            },
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    Open(u64),
    Data(u64),
    Control,
}

#[derive(Debug)]
struct PendingOpen {
    deadline: Instant,
}

/// The delegating appliance.
///
/// It listens on one datagram socket. Datagrams from its proxy are the closed-network link
/// (S26, S34, acknowledgements); everything else is treated as coming from the open
/// network: a crypto request (S21) is answered with crypto accept + proxy designation
/// (S22); plaintext, or ciphertext it cannot open, is dropped unread and answered with a
/// crypto solicitation + proxy designation (S42) — never larger than what provoked it and
/// rate-limited — and reported as an event. Only data from the proxy (authenticated by the
/// link key, if one is configured) or opened with one of its own weak keys (¶0062) reaches
/// the application.
///
/// It builds without `std`.
///
/// ```
/// use deputy::offload::{Appliance, ApplianceConfig, ApplianceEvent, ApplianceParams, Solicited};
/// use deputy::{Actor, Input, Instant, Output};
/// use deputy::offload::OffloadEvent;
/// use rand_chacha::ChaCha20Rng;
/// use rand_core::SeedableRng;
///
/// let config = ApplianceConfig::new(ApplianceParams {
///     name: "microwave".into(),
///     local: "192.168.0.10:5683".parse().unwrap(),
///     proxy: "192.168.0.2:5684".parse().unwrap(),        // closed network
///     proxy_public: "192.168.0.2:8443".parse().unwrap(), // as remote nodes reach it
/// }).unwrap();
/// let mut microwave = Appliance::new(config, Box::new(ChaCha20Rng::seed_from_u64(1)));
///
/// // A forged command arrives in plaintext from the internet (flow A').
/// let attacker = "203.0.113.66:4000".parse().unwrap();
/// let command = [b"heat for one hour".as_slice(), &[b' '; 60]].concat();
/// microwave.handle_input(Instant::ZERO, Input::Datagram {
///     from: attacker,
///     to: "192.168.0.10:5683".parse().unwrap(),
///     data: &command,
/// }).unwrap();
///
/// // It is not delivered; the sender is told to go through the proxy (S42) instead.
/// let mut outputs = Vec::new();
/// while let Some(o) = microwave.poll_output() { outputs.push(o); }
/// assert!(matches!(&outputs[0], Output::Transmit(t) if t.to == attacker && t.data.len() <= command.len()));
/// assert!(matches!(&outputs[1], Output::Event(OffloadEvent::Appliance(
///     ApplianceEvent::RefusedPlaintext { answer: Solicited::Full, .. }))));
/// assert_eq!(outputs.len(), 2);
/// ```
pub struct Appliance {
    cfg: ApplianceConfig,
    rng: Rng,
    outbox: Outbox<OffloadEvent>,
    link: Link<Tag>,
    limiter: SourceLimiter,
    sessions: BTreeMap<u64, Peer>,
    pending: BTreeMap<u64, PendingOpen>,
    direct_windows: BTreeMap<u32, ReplayWindow>,
    /// Sessions that ended recently (at most [`Appliance::CLOSED_MEMORY`]).
    closed: VecDeque<u64>,
}

impl fmt::Debug for Appliance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Appliance")
            .field("name", &self.cfg.name)
            .field("link", &self.link)
            .field("sessions", &self.sessions.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Appliance {
    /// How many ended sessions the appliance remembers (late data for them is refused
    /// rather than taken for a new session).
    pub const CLOSED_MEMORY: usize = 16;

    /// An appliance with no sessions.
    pub fn new(mut cfg: ApplianceConfig, mut rng: Rng) -> Appliance {
        cfg.direct_keys.truncate(ApplianceConfig::MAX_DIRECT_KEYS);
        let link = Link::start(
            cfg.local,
            cfg.proxy,
            cfg.link_key.clone(),
            cfg.link,
            cfg.first_seq,
            rng.as_mut(),
        );
        let limiter = SourceLimiter::new(cfg.per_source, cfg.max_sources, cfg.global)
            .with_aggregate(cfg.global);
        Appliance {
            cfg,
            rng,
            outbox: Outbox::default(),
            link,
            limiter,
            sessions: BTreeMap::new(),
            pending: BTreeMap::new(),
            direct_windows: BTreeMap::new(),
            closed: VecDeque::new(),
        }
    }

    /// The appliance's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Open sessions and the remote node of each.
    pub fn sessions(&self) -> impl Iterator<Item = (u64, &Peer)> + '_ {
        self.sessions.iter().map(|(s, p)| (*s, p))
    }

    /// The next link sequence number.
    pub fn next_link_seq(&self) -> u64 {
        self.link.next_seq()
    }

    /// Flow B, S31: ask the proxy to set up a secure session with the remote node at
    /// `remote` (its address on the open network), optionally requiring it to prove
    /// `identity`. The proxy opens a stream to exactly `remote`, so the remote node's
    /// driver must listen for streams on that address and port (the remote node's
    /// datagram socket, [`RemoteNodeConfig::local`](super::RemoteNodeConfig::local), plays
    /// no part; the remote node takes a flow B stream on whatever port its driver accepted
    /// it). Returns the request id that [`ApplianceEvent::SessionUp`] or
    /// [`ApplianceEvent::Refused`] will carry.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        identity: Option<Peer>,
    ) -> Result<u64, Error> {
        if self.pending.len() >= self.cfg.max_pending {
            return Err(Error::CapacityExceeded {
                what: "appliance pending proxy requests",
                bound: self.cfg.max_pending,
            });
        }
        let request_id = self.fresh_request_id();
        let msg = Message::ProxyRequest(ProxyRequest {
            request_id,
            appliance: None,
            remote: Some(remote),
            remote_identity: identity,
        });
        self.link
            .send(now, &msg, Tag::Open(request_id), &mut self.outbox)?;
        self.pending.insert(
            request_id,
            PendingOpen {
                deadline: now + self.cfg.open_timeout,
            },
        );
        Ok(request_id)
    }

    /// S35: send `data` in clear to the proxy, which encrypts it to the session's remote
    /// node (S36).
    pub fn send(&mut self, now: Instant, session: u64, data: &[u8]) -> Result<(), Error> {
        check_payload(data)?;
        if !self.sessions.contains_key(&session) {
            return Err(OffloadError::UnknownSession(session).into());
        }
        let msg = Message::PlainData(PlainData {
            session,
            peer: None,
            payload: data.to_vec(),
            padding: 0,
        });
        self.link
            .send(now, &msg, Tag::Data(session), &mut self.outbox)?;
        Ok(())
    }

    /// End a session: the proxy closes the secure channel to the remote node (after the
    /// data already sent on it).
    ///
    /// Refused with [`Error::CapacityExceeded`] while the link has no room (its in-flight
    /// bound): the session then stays open, so the close can be retried and is never lost.
    pub fn close(&mut self, now: Instant, session: u64) -> Result<(), Error> {
        if !self.sessions.contains_key(&session) {
            return Err(OffloadError::UnknownSession(session).into());
        }
        if !self.link.has_room() {
            return Err(Error::CapacityExceeded {
                what: "offload link messages in flight",
                bound: self.cfg.link.max_in_flight.clamp(1, 32),
            });
        }
        self.sessions.remove(&session);
        self.remember_closed(session);
        self.link.send(
            now,
            &Message::Close(Close { session }),
            Tag::Control,
            &mut self.outbox,
        )?;
        Ok(())
    }

    fn fresh_request_id(&mut self) -> u64 {
        loop {
            let id = self.rng.next_u64();
            if id != 0 && !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    fn designation(&self) -> Designation {
        Designation {
            proxy: self.cfg.proxy_public,
            appliance: self.cfg.name.clone(),
        }
    }

    fn transmit(&mut self, to: SocketAddr, data: Vec<u8>) -> Result<(), Error> {
        self.outbox.push(Output::Transmit(Transmit {
            from: self.cfg.local,
            to,
            data,
        }))
    }

    // ----- closed network: the link to the proxy -----

    fn on_link(&mut self, now: Instant, data: &[u8]) -> Result<(), Error> {
        let messages =
            self.link
                .receive(data, &self.cfg.limits, &mut self.outbox, self.rng.as_mut())?;
        // Act on each in order; report the first failure after trying them all.
        let mut result = Ok(());
        for msg in messages {
            let r = self.on_link_message(now, msg);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    fn on_link_message(&mut self, now: Instant, msg: Message) -> Result<(), Error> {
        match msg {
            Message::ProxyAccept(m) => self.on_proxy_accept(now, m),
            Message::Refusal(m) => self.on_refusal(m),
            Message::PlainData(m) => self.on_plain_data(now, m),
            Message::Close(Close { session }) => {
                if self.sessions.remove(&session).is_none() {
                    return Err(OffloadError::UnknownSession(session).into());
                }
                self.remember_closed(session);
                self.link.forget(|t| *t == Tag::Data(session));
                self.outbox.event(ApplianceEvent::SessionClosed {
                    session,
                    reason: OffloadRefusal::Closed,
                })
            }
            other => Err(OffloadError::UnexpectedMessage(other.msg_type()).into()),
        }
    }

    /// S34: the proxy set up the session we asked for.
    fn on_proxy_accept(&mut self, now: Instant, m: ProxyAccept) -> Result<(), Error> {
        if !self.pending.contains_key(&m.request_id) {
            return Err(OffloadError::UnknownRequest(m.request_id).into());
        }
        let remote = m.peer.ok_or(OffloadError::ProxyAcceptWithoutPeer)?;
        if m.session == 0 {
            return Err(OffloadError::ProxyAcceptWithoutSession.into());
        }
        self.pending.remove(&m.request_id);
        if self.sessions.len() >= self.cfg.max_sessions {
            self.refuse_session(now, m.session)?;
            return self.outbox.event(ApplianceEvent::Refused {
                request: m.request_id,
                reason: OffloadRefusal::SessionLimit,
            });
        }
        self.sessions.insert(m.session, remote.clone());
        self.outbox.event(ApplianceEvent::SessionUp {
            session: m.session,
            remote,
            initiated_by: StartedBy::Appliance,
            request: Some(m.request_id),
        })
    }

    fn on_refusal(&mut self, m: Refusal) -> Result<(), Error> {
        if let Some(request) = m.request_id
            && self.pending.remove(&request).is_some()
        {
            self.link.forget(|t| *t == Tag::Open(request));
            return self.outbox.event(ApplianceEvent::Refused {
                request,
                reason: m.reason,
            });
        }
        if self.sessions.remove(&m.session).is_some() {
            self.remember_closed(m.session);
            self.link.forget(|t| *t == Tag::Data(m.session));
            return self.outbox.event(ApplianceEvent::SessionClosed {
                session: m.session,
                reason: m.reason,
            });
        }
        Err(OffloadError::UnknownSession(m.session).into())
    }

    /// S26: data a remote node sent through the proxy.
    fn on_plain_data(&mut self, now: Instant, m: PlainData) -> Result<(), Error> {
        if m.session == 0 {
            return Err(OffloadError::PlainDataWithoutSession.into());
        }
        if self.closed.contains(&m.session) {
            // Late data for a session that ended here: not a new session.
            return Err(OffloadError::UnknownSession(m.session).into());
        }
        let from = match self.sessions.get(&m.session) {
            // The proxy names the remote node in every S26: the copy it sent is the one
            // delivered, rather than a clone of the session's (an allocation per message).
            Some(peer) => match m.peer {
                Some(named) if named == *peer => named,
                _ => peer.clone(),
            },
            None => {
                let peer = m.peer.ok_or(OffloadError::UnknownSession(m.session))?;
                if self.sessions.len() >= self.cfg.max_sessions {
                    self.refuse_session(now, m.session)?;
                    return Err(Error::CapacityExceeded {
                        what: "appliance sessions",
                        bound: self.cfg.max_sessions,
                    });
                }
                self.sessions.insert(m.session, peer.clone());
                self.outbox.event(ApplianceEvent::SessionUp {
                    session: m.session,
                    remote: peer.clone(),
                    initiated_by: StartedBy::Remote,
                    request: None,
                })?;
                peer
            }
        };
        self.outbox.event(ApplianceEvent::Delivered {
            session: Some(m.session),
            from,
            data: m.payload,
        })
    }

    /// Remember a session that ended, so late data for it does not open it again.
    fn remember_closed(&mut self, session: u64) {
        if self.closed.len() >= Self::CLOSED_MEMORY {
            self.closed.pop_front();
        }
        self.closed.push_back(session);
    }

    fn refuse_session(&mut self, now: Instant, session: u64) -> Result<(), Error> {
        let msg = Message::Refusal(Refusal {
            reason: OffloadRefusal::SessionLimit,
            request_id: None,
            session,
            appliance: None,
        });
        self.link.send(now, &msg, Tag::Control, &mut self.outbox)?;
        Ok(())
    }

    // ----- open network: S21/S22, flow A', ¶0062 -----

    fn on_open(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Result<(), Error> {
        match Message::decode(data, &self.cfg.limits) {
            Ok(Decoded {
                message: Message::CryptoRequest(req),
                ..
            }) => self.on_crypto_request(now, from, data.len(), req.request_id),
            Ok(Decoded {
                message: Message::SealedData(sealed),
                ..
            }) => self.on_sealed(now, from, data.len(), sealed),
            _ if is_channel_message(data) => self.refuse(now, from, data.len(), false),
            // Plaintext: raw bytes, plain data from anyone but the proxy, or any other
            // message. Never parsed further, never delivered.
            _ => self.refuse(now, from, data.len(), true),
        }
    }

    /// S21 → S22, if the answer is no larger than the request and the rate allows.
    fn on_crypto_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        len: usize,
        request_id: u64,
    ) -> Result<(), Error> {
        let accept = Message::CryptoAccept(CryptoAccept {
            request_id,
            appliance: None,
            designation: Some(self.designation()),
        })
        .encode()?;
        let answer = if accept.len() > len {
            Solicited::TooSmall
        } else if !self.limiter.allow(from.ip(), now) {
            Solicited::RateLimited
        } else {
            self.transmit(from, accept)?;
            Solicited::Full
        };
        self.outbox
            .event(ApplianceEvent::CryptoRequested { from, answer })
    }

    /// ¶0062: open it with our own weak key, or refuse it as undecryptable.
    fn on_sealed(
        &mut self,
        now: Instant,
        from: SocketAddr,
        len: usize,
        sealed: SealedData,
    ) -> Result<(), Error> {
        let opened = self
            .cfg
            .direct_keys
            .iter()
            .find(|k| k.id == sealed.key_id)
            .and_then(|k| k.open(&sealed));
        let Some(data) = opened else {
            return self.refuse(now, from, len, false);
        };
        // Authentic: its sequence number may move the key's window (and must be new).
        let window = self.direct_windows.entry(sealed.key_id).or_insert_with(|| {
            ReplayWindow::new(ReplayWindow::DEFAULT_SIZE)
                .unwrap_or_else(|_| unreachable!("the default size is valid"))
        });
        if window.accept(sealed.seq).is_err() {
            return Err(OffloadError::Replayed(sealed.seq).into());
        }
        self.outbox.event(ApplianceEvent::Delivered {
            session: None,
            from: Peer::DirectKey(sealed.key_id),
            data,
        })
    }

    /// Flow A': drop the datagram unread; answer S42 within the size and rate bounds.
    fn refuse(
        &mut self,
        now: Instant,
        from: SocketAddr,
        len: usize,
        plaintext: bool,
    ) -> Result<(), Error> {
        let full = Message::CryptoSolicitation(CryptoSolicitation {
            designation: Some(self.designation()),
        })
        .encode()?;
        let (answer, bytes) = if full.len() <= len {
            (Solicited::Full, Some(full))
        } else {
            let minimal =
                Message::CryptoSolicitation(CryptoSolicitation { designation: None }).encode()?;
            if minimal.len() <= len {
                (Solicited::Minimal, Some(minimal))
            } else {
                (Solicited::TooSmall, None)
            }
        };
        let answer = match bytes {
            Some(bytes) if self.limiter.allow(from.ip(), now) => {
                self.transmit(from, bytes)?;
                answer
            }
            Some(_) => Solicited::RateLimited,
            None => answer,
        };
        let event = if plaintext {
            ApplianceEvent::RefusedPlaintext { from, len, answer }
        } else {
            ApplianceEvent::RefusedUndecryptable { from, len, answer }
        };
        self.outbox.event(event)
    }
}

/// A secure-channel message (types 0x01–0x0F): encrypted traffic the appliance cannot take
/// part in. Only the header's type range is read, not a decode into the channel's message
/// enum: the appliance holds no channel state, must not parse attacker bytes further than
/// it needs to refuse them, and only chooses which refusal event to report.
fn is_channel_message(data: &[u8]) -> bool {
    data.len() >= crate::wire::HEADER_LEN
        && data[..2] == crate::wire::MAGIC
        && (0x01..=0x0F).contains(&data[3])
}

/// The appliance's timers: its table is [`Appliance::timers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// A retransmission on the link to the proxy.
    Link,
    /// The deadline of this flow B request (S31 waiting for S34).
    Open(u64),
}

impl TimerTable for Appliance {
    type Timer = Timer;

    /// Every armed timer, in the order `handle_timeout` fires them: the link first, so a
    /// request whose S31 was given up is reported once, as lost, before its deadline.
    fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        let link = self.link.poll_timeout().map(|at| (Timer::Link, at));
        let pending = self
            .pending
            .iter()
            .map(|(&request, p)| (Timer::Open(request), p.deadline));
        link.into_iter().chain(pending)
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Link => {
                for tag in self.link.handle_timeout(now, &mut self.outbox) {
                    // Reporting can only fail on a full outbox; the next call reports that.
                    let _ = match tag {
                        Tag::Open(request) if self.pending.remove(&request).is_some() => {
                            self.outbox.event(ApplianceEvent::Refused {
                                request,
                                reason: OffloadRefusal::Timeout,
                            })
                        }
                        Tag::Data(session) => {
                            self.outbox.event(ApplianceEvent::SendFailed { session })
                        }
                        Tag::Open(_) | Tag::Control => Ok(()),
                    };
                }
            }
            Timer::Open(request) => {
                if self.pending.get(&request).is_none_or(|p| p.deadline > now) {
                    return;
                }
                self.pending.remove(&request);
                self.link.forget(|t| *t == Tag::Open(request));
                // Reporting can only fail on a full outbox; the next call reports that.
                let _ = self.outbox.event(ApplianceEvent::Refused {
                    request,
                    reason: OffloadRefusal::Timeout,
                });
            }
        }
    }
}

impl Actor for Appliance {
    type Event = OffloadEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::Datagram { from, data, .. } if from == self.link.peer() => {
                self.on_link(now, data)
            }
            Input::Datagram { from, data, .. } => self.on_open(now, from, data),
            Input::StreamAccepted { id, .. } => {
                self.outbox.push(Output::StreamClose { id })?;
                Err(OffloadError::StreamNotTaken.into())
            }
            Input::StreamConnected { id, .. }
            | Input::StreamData { id, .. }
            | Input::StreamClosed { id } => Err(Error::UnknownStream(id)),
            Input::Packet { .. } => Err(OffloadError::PacketNotTaken.into()),
        }
    }

    timers_and_outbox!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::messages::LinkFields;
    use alloc::boxed::Box;
    use alloc::vec::Vec;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const LOCAL: &str = "192.168.0.10:5683";
    const PROXY: &str = "192.168.0.2:5684";

    /// An unkeyed appliance and a way to play its proxy.
    struct Bench {
        appliance: Appliance,
        seq: u64,
    }

    impl Bench {
        fn new() -> Bench {
            let mut cfg = ApplianceConfig::new(ApplianceParams {
                name: "microwave".into(),
                local: LOCAL.parse().unwrap(),
                proxy: PROXY.parse().unwrap(),
                proxy_public: "192.168.0.2:8443".parse().unwrap(),
            })
            .unwrap();
            cfg.max_sessions = 32;
            Bench {
                appliance: Appliance::new(cfg, Box::new(ChaCha20Rng::seed_from_u64(1))),
                seq: 1,
            }
        }

        /// The proxy sends `msg` on the link; returns the appliance's events.
        fn proxy_sends(&mut self, msg: Message) -> Vec<ApplianceEvent> {
            let link = LinkFields {
                seq: Some(self.seq),
                epoch: Some(77),
                floor: Some(self.seq),
            };
            self.seq += 1;
            let bytes = msg
                .encode_link(link, Some(&super::super::link::unkeyed_check))
                .unwrap();
            // Some inputs are refused on purpose: the tests look at the events.
            let _ = self.appliance.handle_input(
                Instant::ZERO,
                Input::Datagram {
                    from: PROXY.parse().unwrap(),
                    to: LOCAL.parse().unwrap(),
                    data: &bytes,
                },
            );
            let mut events = Vec::new();
            while let Some(o) = self.appliance.poll_output() {
                if let Output::Event(super::super::OffloadEvent::Appliance(e)) = o {
                    events.push(e);
                }
            }
            events
        }

        fn data(&mut self, session: u64) -> Vec<ApplianceEvent> {
            self.proxy_sends(Message::PlainData(PlainData {
                session,
                peer: Some(Peer::Psk(b"phone".to_vec())),
                payload: b"x".to_vec(),
                padding: 0,
            }))
        }
    }

    #[test]
    fn late_data_for_a_closed_session_does_not_reopen_it_and_the_memory_is_bounded() {
        let mut b = Bench::new();
        let sessions: Vec<u64> = (1..=20).collect();
        for &s in &sessions {
            assert_eq!(b.data(s).len(), 2, "session up + delivered");
            let closed = b.proxy_sends(Message::Close(Close { session: s }));
            assert!(matches!(
                closed.as_slice(),
                [ApplianceEvent::SessionClosed { .. }]
            ));
        }
        assert_eq!(b.appliance.closed.len(), Appliance::CLOSED_MEMORY);
        // The last 16 are remembered: late data for them is refused.
        assert!(b.data(20).is_empty());
        assert!(b.data(5).is_empty());
        // The oldest were forgotten: data for them is taken as a new session.
        assert_eq!(b.data(1).len(), 2);
    }
}

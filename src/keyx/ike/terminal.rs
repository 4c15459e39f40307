//! Seed 004's delegating terminal over IKEv2 (its steps S1-S19).
//!
//! The terminal talks standard IKEv2 to an unmodified peer from its own address and hands
//! the expensive steps to a substitution server over deputy's secure channel:
//!
//! | seed step | what happens here |
//! |---|---|
//! | S1-S2 | the channel to the server ([`TerminalConfig::channel`]: PSK mode is the seed's pre-arranged key) |
//! | S3-S4 | start: the peer's IKE_SA_INIT request (responder) or the peer to reach (initiator) → method and proposal |
//! | S5-S7 | key generation: the server's IKE_SA_INIT message and SK_e/SK_a, sealed with the delegation key |
//! | S8-S11 | authentication: the peer's IDx, CERT and AUTH (opened here with SK_e/SK_a) → both verdicts and our proof |
//! | S12 | an initiator loops back to key generation on COOKIE and INVALID_KE_PAYLOAD |
//! | S13-S14 | key: SK_d, sealed, only once the peer was authenticated and allowed |
//! | S15-S17 | the Child SA's KEYMAT from SK_d; installed into the terminal's [`DataPlane`] |
//! | S18 | a method without authentication: refused |
//! | S19 | any failure: no keys are set, the peer gets IKE's refusal, the application an event |
//!
//! After that the IKE SA lives on here with the crate's ordinary IKE session code and no
//! server: retransmissions, INFORMATIONAL (delete, liveness), Child SA rekeys without PFS
//! (the seed's Fig. 13, "the terminal does phase 2 itself"). The terminal runs no
//! Diffie-Hellman, no signature and no certificate check; its configuration has no field
//! for the IKE credential.
//!
//! An IKE SA rekey the peer starts goes back to the server, as a delegation session of
//! its own (start, key generation): the terminal holds the peer's CREATE_CHILD_SA, the
//! server chooses the proposal, makes the new Diffie-Hellman share and hands over g^ir
//! (sealed), and the terminal derives the new IKE SA from its SK_d (RFC 7296 §2.18).
//!
//! An IKE SA rekey the terminal starts ([`Terminal::rekey_ike`]) goes the same way: the
//! server makes the share (start, key generation), the terminal sends CREATE_CHILD_SA,
//! and the peer's answer goes to the server (key generation again) for g^ir.
//!
//! Not built: Child SA rekeys with PFS (the crate's IKE engine negotiates ESP without a
//! Diffie-Hellman group, plain actors included).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use crate::channel::{ChannelClient, ClientConfig};
use crate::crypto::dh::Group;
use crate::ikev2::codec::{
    ExchangeType, Header, Identity, Limits, Message, Notify, Payload, decode_chain, encode_chain,
    find_notify,
};
use crate::ikev2::config::{ChildMode, IkeConfig, Retransmit};
use crate::ikev2::consts::notify;
use crate::ikev2::initiator::arrival;
use crate::ikev2::nat::{CookieJar, nat_detected};
use crate::ikev2::proposal::{IkeProposal, accept_ike};
use crate::ikev2::session::{
    Authority, Ctx, Found, IkeSa, NewSa, OwnRekeyVerdict, RekeyVerdict, Retrans, Tick, Verdict,
};
use crate::ikev2::{AuthFailure, FailReason, IkeError, IkeEvent, IkeSaId};
use crate::io::{Actor, Input, Outbox, Output};
use crate::ipsec::{ChildSa, DataPlane, Lifetime, Suite, TrafficSelector};
use crate::keyx::link::{LinkNote, ServerLink, decode_answer};
use crate::keyx::messages::{
    AuthRequest, AuthResponse, AuthResult, Body, ErrorCode, KEY_RESPONSE, KEYGEN_RESPONSE,
    KeyGenRequest, KeyGenResponse, Message as KeyxMessage, Protocol, Role, StartOutcome,
    StartRequest, Transform,
};
use crate::keyx::seal::{DelegationKey, SealContext, open};
use crate::keyx::{KeyxError, Place};
use crate::time::{due, earliest};
use crate::{Error, Instant, Rng};

/// The terminal's configuration: what it runs itself. There is no place for the IKE
/// credential: the substitution server holds it.
#[derive(Clone, Debug)]
pub struct TerminalConfig {
    /// Our IKE address (port 500 normally; NAT-T moves to `nat_t_port`).
    pub local: SocketAddr,
    /// The substitution server's channel address.
    pub server: SocketAddr,
    /// Our address toward the server (port 0: any).
    pub server_local: SocketAddr,
    /// The secure channel to the server (S1-S2): PSK mode is the seed's pre-arranged key.
    pub channel: Arc<ClientConfig>,
    /// The delegation key the server seals our keys with.
    pub delegation_key: DelegationKey,
    /// The IKE SA algorithms this terminal can run (their groups are ignored: the server
    /// chooses the group, and the terminal never computes with it).
    pub ike_algorithms: Vec<IkeProposal>,
    /// ESP suites in preference order.
    pub esp_proposals: Vec<Suite>,
    /// Our traffic selectors.
    pub ts_local: Vec<TrafficSelector>,
    /// The peer's traffic selectors.
    pub ts_remote: Vec<TrafficSelector>,
    /// Requested (initiator) or permitted (responder) mode.
    pub mode: ChildMode,
    /// The NAT-T port.
    pub nat_t_port: u16,
    /// Always UDP-encapsulate ESP (the server fakes the NAT detection hash the same way).
    pub force_encap: bool,
    /// Retransmission of IKE requests we send (IKE_SA_INIT, IKE_AUTH, INFORMATIONAL …).
    pub retransmit: Retransmit,
    /// Lifetimes of every Child SA.
    pub child_lifetime: Lifetime,
    /// IKE decoding limits.
    pub limits: Limits,
    /// Delegated exchanges in progress at once (each holds a half-open IKE SA or less).
    pub max_exchanges: usize,
    /// IKE SAs held (established or being set up).
    pub max_ike_sas: usize,
    /// Demand a COOKIE from a peer once this many exchanges are in progress (0: always).
    pub cookie_threshold: usize,
    /// How long the server may take to answer one delegation request.
    pub request_timeout: Duration,
    /// How long one delegated exchange may take in all (start to key response).
    pub exchange_timeout: Duration,
    /// Consecutive failed attempts to reach the server before waiting exchanges fail.
    pub max_reconnects: u32,
    /// Wait before reconnecting to the server.
    pub reconnect_delay: Duration,
}

impl TerminalConfig {
    /// Defaults: AES-128-CBC/HMAC-SHA-256, ChaCha20-Poly1305 and AES-GCM for IKE and ESP,
    /// any-to-any IPv4 selectors, tunnel mode, NAT-T on 4500, Child SA lifetimes of 54/60
    /// minutes, 8 exchanges and 32 IKE SAs, requests answered within 10 s, exchanges
    /// within 30 s.
    pub fn new(
        local: SocketAddr,
        server: SocketAddr,
        channel: Arc<ClientConfig>,
        delegation_key: DelegationKey,
    ) -> TerminalConfig {
        let ike = IkeConfig::new(Identity::KeyId(Vec::new()), &[]);
        TerminalConfig {
            local,
            server,
            server_local: SocketAddr::new(local.ip(), 0),
            channel,
            delegation_key,
            ike_algorithms: ike.ike_proposals,
            esp_proposals: ike.esp_proposals,
            ts_local: ike.ts_local,
            ts_remote: ike.ts_remote,
            mode: ike.mode,
            nat_t_port: ike.nat_t_port,
            force_encap: false,
            retransmit: ike.retransmit,
            child_lifetime: ike.child_lifetime,
            limits: ike.limits,
            max_exchanges: 8,
            max_ike_sas: 32,
            cookie_threshold: 4,
            request_timeout: Duration::from_secs(10),
            exchange_timeout: Duration::from_secs(30),
            max_reconnects: 3,
            reconnect_delay: Duration::from_secs(1),
        }
    }

    /// The session code's configuration: everything the terminal runs, an empty
    /// credential the delegated session never reads.
    fn ike(&self) -> IkeConfig {
        let mut ike = IkeConfig::new(Identity::KeyId(Vec::new()), &[]);
        ike.ike_proposals = self.algorithms();
        ike.esp_proposals = self.esp_proposals.clone();
        ike.ts_local = self.ts_local.clone();
        ike.ts_remote = self.ts_remote.clone();
        ike.mode = self.mode;
        ike.nat_t_port = self.nat_t_port;
        ike.force_encap = self.force_encap;
        ike.retransmit = self.retransmit;
        ike.child_lifetime = self.child_lifetime;
        ike.limits = self.limits;
        ike
    }

    /// Our algorithms with every group the crate knows, so that any group the server
    /// chose reads as acceptable.
    fn algorithms(&self) -> Vec<IkeProposal> {
        self.ike_algorithms
            .iter()
            .map(|p| IkeProposal {
                groups: Group::ALL.to_vec(),
                ..p.clone()
            })
            .collect()
    }

    /// The symmetric transforms we run, as a start request lists them.
    fn transforms(&self) -> Vec<Transform> {
        use crate::ikev2::consts::transform as t;
        let mut out: Vec<Transform> = Vec::new();
        for p in &self.ike_algorithms {
            let encr = p.encr.transform();
            let mut add = |kind, id, key_bits| {
                let tr = Transform { kind, id, key_bits };
                if !out.contains(&tr) {
                    out.push(tr);
                }
            };
            add(t::ENCR, encr.id, encr.key_len().unwrap_or(0));
            add(t::PRF, p.prf.id(), 0);
            if let Some(i) = p.integ {
                add(t::INTEG, i.id(), 0);
            }
        }
        out
    }
}

/// Why a delegated exchange failed at the terminal (S19).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminalFailure {
    /// The server refused a request with this code.
    Server(ErrorCode),
    /// Nothing in the peer's offer could be used (answered NO_PROPOSAL_CHOSEN).
    NoProposalChosen,
    /// S42 said no: the peer did not authenticate.
    NotAuthenticated(AuthResult),
    /// S43 said no: the policy database does not let this peer and this terminal talk.
    PolicyDenied,
    /// The server chose a method without authentication (S8 = no → S18).
    Malfunction,
    /// A sealed body did not open under our delegation key.
    SealRejected,
    /// The server's answer did not fit the exchange (a message we could not use).
    BadAnswer,
    /// The server did not answer in time, or could not be reached.
    ServerUnreachable,
    /// The exchange did not finish within [`TerminalConfig::exchange_timeout`].
    Timeout,
    /// The peer refused or went silent (IKE's own reason).
    Peer(FailReason),
}

/// What the terminal tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TerminalEvent {
    /// What the IKE session reports (IKE SA and Child SA life); Child SAs are already
    /// installed into (or removed from) the terminal's data plane when this arrives.
    Ike(IkeEvent),
    /// A delegated exchange failed; no keys were set.
    Failed {
        /// The delegation session.
        session: u64,
        /// Why.
        reason: TerminalFailure,
    },
    /// The channel to the server is up.
    ServerConnected,
    /// The channel to the server went down.
    ServerLost,
    /// The data plane refused a negotiated Child SA (its SA table is full): no traffic
    /// flows on it until an SA is deleted.
    ChildSaNotInstalled {
        /// Its inbound SPI.
        spi_in: u32,
        /// Why.
        error: crate::ipsec::IpsecError,
    },
}

impl From<IkeEvent> for TerminalEvent {
    fn from(e: IkeEvent) -> Self {
        TerminalEvent::Ike(e)
    }
}

/// What the terminal counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TerminalCounters {
    /// Delegation messages of a type the terminal does not know, discarded (S49's rule at
    /// this end).
    pub unknown_discarded: u64,
    /// Answers for no waiting request (stale, duplicated, another session's), discarded.
    pub stale_discarded: u64,
    /// Delegation requests sent.
    pub requests: u64,
    /// COOKIE challenges sent to peers.
    pub cookies: u64,
}

/// The peer's IKE_SA_INIT request (responder).
struct PeerInit {
    msg: Vec<u8>,
    from: SocketAddr,
    to: SocketAddr,
    marker: bool,
    spi_i: [u8; 8],
}

/// One delegated exchange's step (S3 … S14).
enum Step {
    /// Responder: S3 sent, waiting for the method.
    Start(Box<PeerInit>),
    /// Responder: S6 sent, waiting for the server's IKE_SA_INIT response and SK_e/SK_a.
    KeyGen(Box<PeerInit>),
    /// Initiator: S3 sent.
    InitiatorStart { remote: SocketAddr },
    /// Initiator: S6 sent, waiting for the IKE_SA_INIT request to send.
    InitiatorKeyGen { remote: SocketAddr },
    /// Initiator: our IKE_SA_INIT request is out; we retransmit it until the peer answers.
    InitSent {
        remote: SocketAddr,
        retrans: Retrans,
    },
    /// Initiator: the peer's IKE_SA_INIT answer is at the server (S6 again).
    InitAnswered {
        remote: SocketAddr,
        request: Vec<u8>,
        response: Vec<u8>,
        from: SocketAddr,
        to: SocketAddr,
    },
    /// The IKE SA exists here (by our SPI); waiting for the peer's IKE_AUTH.
    AwaitPeer { spi: [u8; 8] },
    /// S9 sent: the peer's proof is with the server.
    Authenticating { spi: [u8; 8] },
    /// S13 sent: waiting for SK_d; `proof` is our own (responder).
    Keying { spi: [u8; 8], proof: Vec<Payload> },
    /// The peer rekeys the IKE SA `spi` (CREATE_CHILD_SA held): S3 sent.
    RekeyStart { spi: [u8; 8] },
    /// S6 sent: waiting for the server's key share and g^ir; `num` and `suite` are the
    /// proposal it chose.
    RekeyKeyGen {
        spi: [u8; 8],
        num: u8,
        suite: crate::ikev2::proposal::IkeSuite,
    },
    /// We rekey the IKE SA `spi`: S3 sent.
    OwnRekeyStart { spi: [u8; 8] },
    /// S6 sent: waiting for the server's key share; `offer` is what we may offer.
    OwnRekeyShare {
        spi: [u8; 8],
        offer: Vec<crate::ikev2::codec::Proposal>,
    },
    /// Our CREATE_CHILD_SA is out (the IKE session retransmits it).
    OwnRekeySent { spi: [u8; 8] },
    /// S6 again with the peer's answer: waiting for g^ir (or another share).
    OwnRekeyAnswered { spi: [u8; 8] },
}

/// The delegation request an exchange waits on.
struct Asked {
    seq: u32,
    bytes: Vec<u8>,
    deadline: Instant,
}

struct Exchange {
    step: Step,
    asked: Option<Asked>,
    meta: Meta,
}

/// What an exchange keeps across its steps.
#[derive(Clone, Copy, Debug)]
struct Meta {
    /// The whole exchange's deadline.
    deadline: Instant,
    /// The sequence number of the next request (start is 0; each request one more).
    next_seq: u32,
}

/// The terminal's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// An exchange's overall deadline.
    Exchange(u64),
    /// The deadline of an exchange's delegation request.
    Request(u64),
    /// An initiator's IKE_SA_INIT retransmission.
    InitRetransmit(u64),
    /// An IKE SA's own timers (retransmission, linger) by our SPI.
    Sa([u8; 8]),
    /// The channel client's timers.
    Channel,
    /// Reconnect to the server.
    Reconnect,
}

/// Seed 004's delegating terminal over IKEv2: an [`Actor`] for IKE datagrams (ports
/// `local` and `nat_t_port`) and the stream to the server.
pub struct Terminal {
    cfg: TerminalConfig,
    ike: Arc<IkeConfig>,
    transforms: Vec<Transform>,
    rng: Rng,
    link: ServerLink,
    out: Outbox<TerminalEvent>,
    ike_out: Outbox<IkeEvent>,
    plane: DataPlane,
    exchanges: BTreeMap<u64, Exchange>,
    /// (initiator SPI, the peer's address) → the exchange in progress that owns it, both
    /// roles: retransmitted IKE_SA_INIT requests and the answers to ours find their
    /// exchange, and one peer's SPI cannot reach another peer's exchange.
    by_init: BTreeMap<([u8; 8], SocketAddr), u64>,
    /// IKE SAs by our SPI.
    sas: BTreeMap<[u8; 8], IkeSa>,
    cookies: CookieJar,
    counters: TerminalCounters,
}

impl core::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Terminal")
            .field("local", &self.cfg.local)
            .field("exchanges", &self.exchanges.len())
            .field("ike_sas", &self.sas.len())
            .finish_non_exhaustive()
    }
}

impl Terminal {
    /// A terminal with data plane `plane`; `channel_rng` drives its channel to the server.
    pub fn new(
        cfg: TerminalConfig,
        plane: DataPlane,
        mut rng: Rng,
        channel_rng: Rng,
        now: Instant,
    ) -> Result<Terminal, Error> {
        let ike = cfg.ike();
        ike.validate()?;
        if cfg.max_exchanges == 0 || cfg.max_ike_sas == 0 {
            return Err(IkeError::ZeroBound.into());
        }
        let cookies = CookieJar::new(&mut *rng, now, Duration::from_secs(300));
        let channel = ChannelClient::new(
            cfg.channel.clone(),
            cfg.server_local,
            cfg.server,
            channel_rng,
        );
        Ok(Terminal {
            transforms: cfg.transforms(),
            ike: Arc::new(ike),
            link: ServerLink::new(channel, cfg.max_reconnects, cfg.reconnect_delay),
            cfg,
            rng,
            out: Outbox::default(),
            ike_out: Outbox::default(),
            plane,
            exchanges: BTreeMap::new(),
            by_init: BTreeMap::new(),
            sas: BTreeMap::new(),
            cookies,
            counters: TerminalCounters::default(),
        })
    }

    /// S1-S2: open the protected path to the server now (it also opens by itself when the
    /// first exchange needs it).
    pub fn connect(&mut self, now: Instant) -> Result<(), Error> {
        self.link.connect(now)?;
        self.drain_channel(now)
    }

    /// Start an IKE SA toward `remote`, whose identity must be `peer_id` (the server checks
    /// that this terminal may reach it). Returns the delegation session.
    pub fn initiate(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        peer_id: Identity,
    ) -> Result<u64, Error> {
        self.room_for_exchange()?;
        let session = self.new_session();
        let addrs = (self.cfg.local, remote);
        let step = Step::InitiatorStart { remote };
        let peer_id = Some(peer_id.payload_body());
        self.start_exchange(now, session, step, Role::Initiator, addrs, None, peer_id)?;
        Ok(session)
    }

    /// The data plane the negotiated Child SAs are installed into.
    pub fn data_plane(&self) -> &DataPlane {
        &self.plane
    }

    /// The data plane, to protect and unprotect traffic or add policies.
    pub fn data_plane_mut(&mut self) -> &mut DataPlane {
        &mut self.plane
    }

    /// The established IKE SAs.
    pub fn established(&self) -> Vec<IkeSaId> {
        self.sas
            .values()
            .filter(|s| s.is_established())
            .map(|s| s.id)
            .collect()
    }

    /// The current Child SA of IKE SA `id`.
    pub fn child_sa(&self, id: IkeSaId) -> Option<&ChildSa> {
        self.sa_key(id)
            .and_then(|k| self.sas.get(&k))
            .and_then(IkeSa::current_child)
    }

    /// Delegated exchanges in progress.
    pub fn exchange_count(&self) -> usize {
        self.exchanges.len()
    }

    /// IKE SAs held.
    pub fn ike_sa_count(&self) -> usize {
        self.sas.len()
    }

    /// What was counted.
    pub fn counters(&self) -> TerminalCounters {
        self.counters
    }

    /// Rekey the Child SA of `id` (no PFS: nonces and SK_d, no server).
    pub fn rekey_child(&mut self, now: Instant, id: IkeSaId) -> Result<(), Error> {
        self.command(now, id, crate::ikev2::session::Command::Rekey)
    }

    /// Delete the IKE SA `id`.
    pub fn delete_ike(&mut self, now: Instant, id: IkeSaId) -> Result<(), Error> {
        self.command(now, id, crate::ikev2::session::Command::DeleteIke)
    }

    /// Rekey the IKE SA `id` (RFC 7296 §1.3.2) through the server: it makes the key share
    /// and g^ir, the terminal derives the new IKE SA from SK_d. Reported as
    /// [`IkeEvent::IkeSaRekeyed`] (or `IkeSaRekeyFailed`, or a [`TerminalEvent::Failed`]
    /// when the server could not help).
    pub fn rekey_ike(&mut self, now: Instant, id: IkeSaId) -> Result<(), Error> {
        let spi = self.sa_key(id).ok_or(IkeError::UnknownSpi)?;
        let Some(sa) = self.sas.get(&spi).filter(|s| s.is_established()) else {
            return Err(IkeError::NotEstablished.into());
        };
        if self
            .exchanges
            .values()
            .any(|x| rekey_sa(&x.step) == Some(spi))
        {
            return Err(IkeError::RekeyPending.into());
        }
        self.room_for_exchange()?;
        let (local, remote) = (sa.local, sa.remote);
        let message = rekey_message(sa, false, Vec::new())?;
        let session = self.new_session();
        let step = Step::OwnRekeyStart { spi };
        let addrs = (local, remote);
        self.start_exchange(
            now,
            session,
            step,
            Role::Initiator,
            addrs,
            Some(message),
            None,
        )
    }

    /// Send a liveness check on `id`.
    pub fn send_liveness(&mut self, now: Instant, id: IkeSaId) -> Result<(), Error> {
        self.command(now, id, crate::ikev2::session::Command::Liveness)
    }

    fn sa_key(&self, id: IkeSaId) -> Option<[u8; 8]> {
        [id.spi_r, id.spi_i]
            .into_iter()
            .find(|k| self.sas.get(k).is_some_and(|s| s.id == id))
    }

    fn command(
        &mut self,
        now: Instant,
        id: IkeSaId,
        cmd: crate::ikev2::session::Command,
    ) -> Result<(), Error> {
        let key = self.sa_key(id).ok_or(IkeError::UnknownSpi)?;
        let r = self.with_sa(now, key, |sa, ctx| sa.command(ctx, cmd));
        self.settle(now, key);
        r.unwrap_or(Err(IkeError::UnknownSpi.into()))
    }

    fn room_for_exchange(&self) -> Result<(), Error> {
        if self.exchanges.len() >= self.cfg.max_exchanges {
            return Err(Error::CapacityExceeded {
                what: "delegated exchanges",
                bound: self.cfg.max_exchanges,
            });
        }
        if self.sas.len() >= self.cfg.max_ike_sas {
            return Err(Error::CapacityExceeded {
                what: "IKE SAs",
                bound: self.cfg.max_ike_sas,
            });
        }
        Ok(())
    }

    /// S3: a new exchange at its first `step` (its deadline runs from `now`), and its
    /// start request: our `role`, the (local, remote) addresses toward the peer, the
    /// peer's message if one starts it, the identity we want to reach if we start.
    #[allow(clippy::too_many_arguments)]
    fn start_exchange(
        &mut self,
        now: Instant,
        session: u64,
        step: Step,
        role: Role,
        (local, remote): (SocketAddr, SocketAddr),
        peer_message: Option<Vec<u8>>,
        peer_id: Option<Vec<u8>>,
    ) -> Result<(), Error> {
        let meta = Meta {
            deadline: now + self.cfg.exchange_timeout,
            next_seq: 0,
        };
        self.resume(session, step, meta);
        let start = StartRequest {
            protocol: Protocol::Ikev2,
            role,
            local,
            remote,
            peer_message,
            transforms: self.transforms.clone(),
            peer_id,
        };
        self.ask(now, session, Body::StartRequest(start))
    }

    /// A fresh delegation session id: random, non-zero, unused here.
    fn new_session(&mut self) -> u64 {
        loop {
            let s = self.rng.next_u64();
            if s != 0 && !self.exchanges.contains_key(&s) {
                return s;
            }
        }
    }

    /// Send the next delegation request of `session` and wait for its answer.
    fn ask(&mut self, now: Instant, session: u64, body: Body) -> Result<(), Error> {
        let Some(x) = self.exchanges.get_mut(&session) else {
            return Ok(());
        };
        let seq = x.meta.next_seq;
        let bytes = KeyxMessage { session, seq, body }
            .encode()
            .map_err(Error::from)?;
        x.meta.next_seq = seq.wrapping_add(1);
        x.asked = Some(Asked {
            seq,
            bytes: bytes.clone(),
            deadline: now + self.cfg.request_timeout,
        });
        self.counters.requests += 1;
        let r = self.link.send(now, &bytes);
        let drained = self.drain_channel(now);
        r.and(drained)
    }

    /// Move the channel client's outputs: its stream outputs are ours; its events are
    /// handled here.
    fn drain_channel(&mut self, now: Instant) -> Result<(), Error> {
        let (notes, mut result) = self
            .link
            .drain(now, &mut self.out, || TerminalEvent::ServerLost);
        for note in notes {
            let r = match note {
                LinkNote::Connected => self.out.event(TerminalEvent::ServerConnected),
                LinkNote::Received(data) => self.on_server(now, &data),
                LinkNote::Lost | LinkNote::GaveUp => {
                    let waiting = self.exchanges.values().any(|x| x.asked.is_some());
                    let lost = self.out.event(TerminalEvent::ServerLost);
                    if self.link.closed(now, waiting) == LinkNote::GaveUp {
                        lost.and(self.fail_waiting(now, TerminalFailure::ServerUnreachable))
                    } else {
                        lost
                    }
                }
            };
            result = result.and(r);
        }
        result
    }

    /// Every exchange waiting on the server fails.
    fn fail_waiting(&mut self, now: Instant, reason: TerminalFailure) -> Result<(), Error> {
        let waiting: Vec<u64> = self
            .exchanges
            .iter()
            .filter(|(_, x)| x.asked.is_some())
            .map(|(s, _)| *s)
            .collect();
        let mut result = Ok(());
        for s in waiting {
            result = result.and(self.fail(now, s, reason));
        }
        result
    }

    /// Reconnect and send every waiting request again (the server answers a repeated
    /// request from its cache; a restarted server says it knows no such session).
    fn reconnect(&mut self, now: Instant) -> Result<(), Error> {
        let resend: Vec<Vec<u8>> = self
            .exchanges
            .values()
            .filter_map(|x| x.asked.as_ref().map(|a| a.bytes.clone()))
            .collect();
        let r = self.link.reconnect(now, resend.iter().map(Vec::as_slice));
        r.and(self.drain_channel(now))
    }

    /// One message from the server.
    fn on_server(&mut self, now: Instant, bytes: &[u8]) -> Result<(), Error> {
        let Some(msg) = decode_answer(bytes, &mut self.counters.unknown_discarded)? else {
            return Ok(());
        };
        let waiting = self
            .exchanges
            .get(&msg.session)
            .and_then(|x| x.asked.as_ref())
            .is_some_and(|a| a.seq == msg.seq);
        if !waiting || msg.body.is_request() {
            self.counters.stale_discarded += 1;
            return Ok(());
        }
        let session = msg.session;
        let Some(x) = self.exchanges.get_mut(&session) else {
            return Ok(());
        };
        x.asked = None;
        self.link.answered();
        let at = Place {
            session,
            seq: msg.seq,
        };
        let sa_of = |x: &Exchange| step_sa(&x.step).or(rekey_sa(&x.step));
        let before = self.exchanges.get(&session).and_then(sa_of);
        let r = self.answer(now, at, msg.body);
        if !self.exchanges.contains_key(&session) {
            // The exchange is over (done or failed): its IKE_SA_INIT index entry goes, so
            // the index never holds more than the exchanges in progress.
            self.by_init.retain(|_, s| *s != session);
        }
        let after = self.exchanges.get(&session).and_then(sa_of);
        for key in before.into_iter().chain(after) {
            self.settle(now, key);
        }
        r
    }

    /// Take the server's answer for the exchange at `at`.
    fn answer(&mut self, now: Instant, at: Place, body: Body) -> Result<(), Error> {
        let session = at.session;
        let Some(x) = self.exchanges.remove(&session) else {
            return Ok(());
        };
        let meta = x.meta;
        match (x.step, body) {
            (_, Body::ErrorResponse(code)) => {
                self.fail(now, session, TerminalFailure::Server(code))
            }
            (Step::Start(init), Body::StartResponse(r)) => match r.outcome {
                StartOutcome::Proceed { method, .. } => {
                    if !method.needs_authentication() {
                        return self.fail(now, session, TerminalFailure::Malfunction);
                    }
                    self.resume(session, Step::KeyGen(init), meta);
                    let req = KeyGenRequest { peer_message: None };
                    self.ask(now, session, Body::KeyGenRequest(req))
                }
                StartOutcome::NoProposalChosen => {
                    self.refuse_init(
                        now,
                        &init,
                        Notify::new(notify::NO_PROPOSAL_CHOSEN, Vec::new()),
                    )?;
                    self.report(session, TerminalFailure::NoProposalChosen)
                }
                StartOutcome::InvalidKe { group } => {
                    let data = group.to_be_bytes().to_vec();
                    self.refuse_init(now, &init, Notify::new(notify::INVALID_KE_PAYLOAD, data))?;
                    // Not a failure: the peer comes back with a share in that group, as a
                    // new IKE_SA_INIT and a new delegation session. This one just ends.
                    self.end(session);
                    Ok(())
                }
                StartOutcome::PolicyDenied => self.report(session, TerminalFailure::PolicyDenied),
            },
            (Step::KeyGen(init), Body::KeyGenResponse(k)) => {
                self.responder_keys(now, at, meta, *init, k)
            }
            (Step::InitiatorStart { remote }, Body::StartResponse(r)) => match r.outcome {
                StartOutcome::Proceed { method, .. } if method.needs_authentication() => {
                    self.resume(session, Step::InitiatorKeyGen { remote }, meta);
                    let req = KeyGenRequest { peer_message: None };
                    self.ask(now, session, Body::KeyGenRequest(req))
                }
                StartOutcome::Proceed { .. } => {
                    self.fail(now, session, TerminalFailure::Malfunction)
                }
                StartOutcome::PolicyDenied => self.report(session, TerminalFailure::PolicyDenied),
                StartOutcome::NoProposalChosen | StartOutcome::InvalidKe { .. } => {
                    self.report(session, TerminalFailure::NoProposalChosen)
                }
            },
            (
                Step::InitiatorKeyGen { remote } | Step::InitAnswered { remote, .. },
                Body::KeyGenResponse(KeyGenResponse {
                    message: Some(request),
                    ..
                }),
            ) => self.send_init(now, session, meta, remote, request),
            (
                Step::InitAnswered {
                    remote: _,
                    request,
                    response,
                    from,
                    to,
                },
                Body::KeyGenResponse(k),
            ) => self.initiator_keys(now, at, meta, (request, response, from, to), k),
            (Step::Authenticating { spi }, Body::AuthResponse(a)) => {
                self.authenticated(now, at, meta, spi, a)
            }
            (Step::Keying { spi, proof }, Body::KeyResponse(k)) => {
                let ctx = at.seal_context(KEY_RESPONSE);
                let sk_d = match self.open_sealed(ctx, &k.sealed, super::decode_sk_d) {
                    Ok(sk_d) => sk_d,
                    Err(reason) => return self.fail_sa(now, session, spi, reason),
                };
                // S16-S17: the IKE SA resumes; KEYMAT and the Child SA come from SK_d.
                self.with_sa(now, spi, |sa, ctx| {
                    sa.server_answered(ctx, Verdict::Accepted { proof, sk_d })
                })
                .unwrap_or(Ok(()))
            }
            (Step::OwnRekeyStart { spi }, Body::StartResponse(r)) => match r.outcome {
                StartOutcome::Proceed { sa, .. } => {
                    let mut count = 0;
                    let offer = decode_chain(
                        crate::ikev2::consts::payload::SA,
                        &sa,
                        &self.ike.limits,
                        &mut count,
                        false,
                    );
                    let Ok([Payload::Sa(offer)]) = offer.as_deref() else {
                        return self.report(session, TerminalFailure::BadAnswer);
                    };
                    let offer = offer.clone();
                    self.resume(session, Step::OwnRekeyShare { spi, offer }, meta);
                    let req = KeyGenRequest { peer_message: None };
                    self.ask(now, session, Body::KeyGenRequest(req))
                }
                StartOutcome::PolicyDenied => self.report(session, TerminalFailure::PolicyDenied),
                StartOutcome::NoProposalChosen | StartOutcome::InvalidKe { .. } => {
                    self.report(session, TerminalFailure::NoProposalChosen)
                }
            },
            (
                Step::OwnRekeyShare { spi, offer },
                Body::KeyGenResponse(KeyGenResponse {
                    message: Some(m),
                    sealed: None,
                    ..
                }),
            ) => {
                let Some(ke) = ke_of(&m, &self.ike.limits) else {
                    return self.report(session, TerminalFailure::BadAnswer);
                };
                self.resume(session, Step::OwnRekeySent { spi }, meta);
                let r = self
                    .with_sa(now, spi, |sa, ctx| {
                        sa.start_ike_rekey_delegated(ctx, ke, offer)
                    })
                    .unwrap_or(Ok(()));
                self.settle(now, spi);
                r
            }
            (Step::OwnRekeyAnswered { spi }, Body::KeyGenResponse(k)) => {
                let verdict = match (k.message, k.sealed) {
                    (_, Some(s)) => {
                        let ctx = at.seal_context(KEYGEN_RESPONSE);
                        match self.open_sealed(ctx, &s, super::decode_shared) {
                            Ok(g_ir) => OwnRekeyVerdict::Accepted { g_ir },
                            Err(reason) => {
                                let r = self.refuse_rekey(
                                    now,
                                    spi,
                                    notify::TEMPORARY_FAILURE,
                                    Vec::new(),
                                );
                                return r.and(self.report(session, reason));
                            }
                        }
                    }
                    (Some(m), None) => match ke_of(&m, &self.ike.limits) {
                        // The peer wants another group: the server made a share in it.
                        Some(ke) => {
                            self.resume(session, Step::OwnRekeySent { spi }, meta);
                            OwnRekeyVerdict::Resend(ke)
                        }
                        None => OwnRekeyVerdict::Refused(notify::INVALID_SYNTAX),
                    },
                    (None, None) => OwnRekeyVerdict::Refused(notify::INVALID_SYNTAX),
                };
                let r = self
                    .with_sa(now, spi, |sa, ctx| sa.own_rekey_answered(ctx, verdict))
                    .unwrap_or(Ok(()));
                self.settle(now, spi);
                r
            }
            (Step::RekeyStart { spi }, Body::StartResponse(r)) => match r.outcome {
                StartOutcome::Proceed { sa, .. } => {
                    let mut count = 0;
                    let chosen = decode_chain(
                        crate::ikev2::consts::payload::SA,
                        &sa,
                        &self.ike.limits,
                        &mut count,
                        false,
                    );
                    let chosen = chosen.ok().and_then(|p| match p.as_slice() {
                        [Payload::Sa(props)] => props.first().and_then(|q| {
                            accept_ike(core::slice::from_ref(q), &self.ike.ike_proposals)
                                .map(|suite| (q.num, suite))
                        }),
                        _ => None,
                    });
                    let Some((num, suite)) = chosen else {
                        self.exchanges.insert(
                            session,
                            Exchange {
                                step: Step::RekeyStart { spi },
                                asked: None,
                                meta,
                            },
                        );
                        return self.fail(now, session, TerminalFailure::BadAnswer);
                    };
                    self.resume(session, Step::RekeyKeyGen { spi, num, suite }, meta);
                    let req = KeyGenRequest { peer_message: None };
                    self.ask(now, session, Body::KeyGenRequest(req))
                }
                StartOutcome::NoProposalChosen => {
                    let r = self.refuse_rekey(now, spi, notify::NO_PROPOSAL_CHOSEN, Vec::new());
                    r.and(self.report(session, TerminalFailure::NoProposalChosen))
                }
                StartOutcome::InvalidKe { group } => {
                    let data = group.to_be_bytes().to_vec();
                    // Not a failure: the peer asks again with a share in that group.
                    self.end(session);
                    self.refuse_rekey(now, spi, notify::INVALID_KE_PAYLOAD, data)
                }
                StartOutcome::PolicyDenied => {
                    let r = self.refuse_rekey(now, spi, notify::TEMPORARY_FAILURE, Vec::new());
                    r.and(self.report(session, TerminalFailure::PolicyDenied))
                }
            },
            (Step::RekeyKeyGen { spi, num, suite }, Body::KeyGenResponse(k)) => {
                let ke = k.message.and_then(|m| ke_of(&m, &self.ike.limits));
                let g_ir = k.sealed.ok_or(TerminalFailure::BadAnswer).and_then(|s| {
                    self.open_sealed(at.seal_context(KEYGEN_RESPONSE), &s, super::decode_shared)
                });
                match (ke, g_ir) {
                    (Some(ke), Ok(g_ir)) if ke.group == suite.group.id() => {
                        let verdict = RekeyVerdict::Accepted {
                            num,
                            suite,
                            ke,
                            g_ir,
                        };
                        let r = self
                            .with_sa(now, spi, |sa, ctx| sa.rekey_answered(ctx, verdict))
                            .unwrap_or(Ok(()));
                        self.settle(now, spi);
                        r
                    }
                    (_, Err(reason)) => {
                        let r = self.refuse_rekey(now, spi, notify::TEMPORARY_FAILURE, Vec::new());
                        r.and(self.report(session, reason))
                    }
                    _ => {
                        let r = self.refuse_rekey(now, spi, notify::TEMPORARY_FAILURE, Vec::new());
                        r.and(self.report(session, TerminalFailure::BadAnswer))
                    }
                }
            }
            (step, _) => {
                if let Some(spi) = rekey_sa(&step) {
                    let r = self.refuse_rekey(now, spi, notify::TEMPORARY_FAILURE, Vec::new());
                    return r.and(self.report(session, TerminalFailure::BadAnswer));
                }
                // An answer of the wrong kind for this step: the server misbehaves.
                if let Some(spi) = step_sa(&step) {
                    return self.fail_sa(now, session, spi, TerminalFailure::BadAnswer);
                }
                self.fail(now, session, TerminalFailure::BadAnswer)
            }
        }
    }

    fn resume(&mut self, session: u64, step: Step, meta: Meta) {
        self.exchanges.insert(
            session,
            Exchange {
                step,
                asked: None,
                meta,
            },
        );
    }

    /// Open a sealed body bound to `ctx` and decode it.
    fn open_sealed<T>(
        &self,
        ctx: SealContext,
        sealed: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, KeyxError>,
    ) -> Result<T, TerminalFailure> {
        let plain = open(&self.cfg.delegation_key, ctx, sealed)
            .map_err(|_| TerminalFailure::SealRejected)?;
        decode(&plain).map_err(|_| TerminalFailure::SealRejected)
    }

    /// Responder, S7: send the server's IKE_SA_INIT response and set up the IKE SA with
    /// SK_e/SK_a.
    fn responder_keys(
        &mut self,
        now: Instant,
        at: Place,
        meta: Meta,
        init: PeerInit,
        k: KeyGenResponse,
    ) -> Result<(), Error> {
        let session = at.session;
        let (Some(response), Some(sealed)) = (k.message, k.sealed) else {
            return self.fail(now, session, TerminalFailure::BadAnswer);
        };
        let keys =
            match self.open_sealed(at.seal_context(KEYGEN_RESPONSE), &sealed, super::decode_sk) {
                Ok(keys) => keys,
                Err(reason) => return self.fail(now, session, reason),
            };
        let Ok(req) = Message::decode(&init.msg, &self.ike.limits) else {
            return self.fail(now, session, TerminalFailure::BadAnswer);
        };
        let Ok(resp) = Message::decode(&response, &self.ike.limits) else {
            return self.fail(now, session, TerminalFailure::BadAnswer);
        };
        let h = resp.header;
        let found = Found::of(&resp.payloads);
        let suite = found
            .sa
            .and_then(|sa| accept_ike(sa, &self.ike.ike_proposals));
        let (Some(suite), Some(nr), Some(ni)) =
            (suite, found.nonce, Found::of(&req.payloads).nonce)
        else {
            return self.fail(now, session, TerminalFailure::BadAnswer);
        };
        if h.spi_i != init.spi_i || h.spi_r == [0; 8] || self.sas.contains_key(&h.spi_r) {
            return self.fail(now, session, TerminalFailure::BadAnswer);
        }
        let nat = nat_detected(&req.payloads, &init.spi_i, &[0; 8], init.from, init.to);
        let udp_encap = nat.is_some_and(|n| n || self.cfg.force_encap);
        let sa = IkeSa::new(NewSa {
            authority: Authority::Delegated,
            cfg: self.ike.clone(),
            id: IkeSaId {
                spi_i: h.spi_i,
                spi_r: h.spi_r,
            },
            initiator: false,
            suite,
            keys,
            ni: ni.to_vec(),
            nr: nr.to_vec(),
            init_request: init.msg.clone(),
            init_response: response.clone(),
            local: init.to,
            remote: init.from,
            nat_t: init.marker,
            udp_encap,
            now,
            linger: self.cfg.exchange_timeout,
        })?;
        let mut ctx = Ctx::new(now, &mut self.ike_out, &mut *self.rng);
        ctx.transmit(init.to, init.from, init.marker, &response)?;
        self.sas.insert(h.spi_r, sa);
        self.resume(session, Step::AwaitPeer { spi: h.spi_r }, meta);
        self.flush_ike(now)
    }

    /// Initiator: send (or send again, after COOKIE / INVALID_KE_PAYLOAD) the IKE_SA_INIT
    /// request the server built.
    fn send_init(
        &mut self,
        now: Instant,
        session: u64,
        meta: Meta,
        remote: SocketAddr,
        request: Vec<u8>,
    ) -> Result<(), Error> {
        let Ok(h) = Header::decode(&request, &self.ike.limits).map(|r| r.header) else {
            return self.fail(now, session, TerminalFailure::BadAnswer);
        };
        if h.exchange != ExchangeType::IkeSaInit || h.flags.response {
            return self.fail(now, session, TerminalFailure::BadAnswer);
        }
        if self
            .by_init
            .get(&(h.spi_i, remote))
            .is_some_and(|s| *s != session)
            || self.sas.contains_key(&h.spi_i)
        {
            return self.fail(now, session, TerminalFailure::BadAnswer);
        }
        self.by_init.insert((h.spi_i, remote), session);
        let mut ctx = Ctx::new(now, &mut self.ike_out, &mut *self.rng);
        ctx.transmit(self.cfg.local, remote, false, &request)?;
        let retrans = Retrans::new(request, now, &self.cfg.retransmit);
        self.resume(session, Step::InitSent { remote, retrans }, meta);
        self.flush_ike(now)
    }

    /// Initiator: the peer's IKE_SA_INIT answer.
    fn init_answer(
        &mut self,
        now: Instant,
        session: u64,
        msg: &[u8],
        from: SocketAddr,
        to: SocketAddr,
    ) -> Result<(), Error> {
        let Some(x) = self.exchanges.get(&session) else {
            return Ok(());
        };
        let Step::InitSent { .. } = &x.step else {
            // A copy of an answer already with the server.
            return Ok(());
        };
        let m = Message::decode(msg, &self.ike.limits)?;
        let h = m.header;
        if !h.flags.response || h.message_id != 0 {
            return Err(IkeError::NotInitResponse.into());
        }
        if Found::of(&m.payloads).sa.is_none()
            && m.notify(notify::COOKIE).is_none()
            && m.notify(notify::INVALID_KE_PAYLOAD).is_none()
        {
            // The peer refused outright: IKE's own failure, nothing for the server.
            let reason = match crate::ikev2::session::error_notify(&m.payloads) {
                Some(n) => FailReason::PeerNotify(n),
                None => FailReason::InvalidResponse,
            };
            return self.fail(now, session, TerminalFailure::Peer(reason));
        }
        let Some(x) = self.exchanges.remove(&session) else {
            return Ok(());
        };
        let Step::InitSent {
            remote, retrans, ..
        } = x.step
        else {
            return Ok(());
        };
        self.resume(
            session,
            Step::InitAnswered {
                remote,
                request: retrans.bytes,
                response: msg.to_vec(),
                from,
                to,
            },
            x.meta,
        );
        let req = KeyGenRequest {
            peer_message: Some(msg.to_vec()),
        };
        self.ask(now, session, Body::KeyGenRequest(req))
    }

    /// Initiator, S7 (final round): the keys, and our proof to send in IKE_AUTH.
    fn initiator_keys(
        &mut self,
        now: Instant,
        at: Place,
        meta: Meta,
        (request, response, from, to): (Vec<u8>, Vec<u8>, SocketAddr, SocketAddr),
        k: KeyGenResponse,
    ) -> Result<(), Error> {
        let session = at.session;
        let (Some(sealed), Some((first, proof))) = (k.sealed, k.local_auth) else {
            return self.fail(now, session, TerminalFailure::BadAnswer);
        };
        let keys =
            match self.open_sealed(at.seal_context(KEYGEN_RESPONSE), &sealed, super::decode_sk) {
                Ok(keys) => keys,
                Err(reason) => return self.fail(now, session, reason),
            };
        let mut count = 0;
        let proof = decode_chain(first, &proof, &self.ike.limits, &mut count, false);
        let (Ok(req), Ok(resp), Ok(proof)) = (
            Message::decode(&request, &self.ike.limits),
            Message::decode(&response, &self.ike.limits),
            proof,
        ) else {
            return self.fail(now, session, TerminalFailure::BadAnswer);
        };
        let h = resp.header;
        let found = Found::of(&resp.payloads);
        let suite = found
            .sa
            .and_then(|sa| accept_ike(sa, &self.ike.ike_proposals));
        let (Some(suite), Some(nr), Some(ni)) =
            (suite, found.nonce, Found::of(&req.payloads).nonce)
        else {
            return self.fail(now, session, TerminalFailure::BadAnswer);
        };
        if h.spi_r == [0; 8] || self.sas.contains_key(&h.spi_i) {
            return self.fail(now, session, TerminalFailure::BadAnswer);
        }
        let udp_encap = nat_detected(&resp.payloads, &h.spi_i, &h.spi_r, from, to)
            .is_some_and(|nat| nat || self.cfg.force_encap);
        let port = self.cfg.nat_t_port;
        let (local, remote) = if udp_encap {
            (
                SocketAddr::new(to.ip(), port),
                SocketAddr::new(from.ip(), port),
            )
        } else {
            (to, from)
        };
        let mut sa = IkeSa::new(NewSa {
            authority: Authority::Delegated,
            cfg: self.ike.clone(),
            id: IkeSaId {
                spi_i: h.spi_i,
                spi_r: h.spi_r,
            },
            initiator: true,
            suite,
            keys,
            ni: ni.to_vec(),
            nr: nr.to_vec(),
            init_request: request,
            init_response: response,
            local,
            remote,
            nat_t: udp_encap,
            udp_encap,
            now,
            linger: self.cfg.retransmit.initial,
        })?;
        let mut ctx = Ctx::new(now, &mut self.ike_out, &mut *self.rng);
        sa.start_auth_delegated(&mut ctx, proof)?;
        self.sas.insert(h.spi_i, sa);
        self.resume(session, Step::AwaitPeer { spi: h.spi_i }, meta);
        self.flush_ike(now)
    }

    /// S10-S11: the server's verdicts. On yes, ask for the key (S13); on no, the held
    /// IKE_AUTH is refused (S19).
    fn authenticated(
        &mut self,
        now: Instant,
        at: Place,
        meta: Meta,
        spi: [u8; 8],
        a: AuthResponse,
    ) -> Result<(), Error> {
        let session = at.session;
        if !a.accepted() {
            let reason = if a.auth != AuthResult::Authenticated {
                TerminalFailure::NotAuthenticated(a.auth)
            } else {
                TerminalFailure::PolicyDenied
            };
            return self.fail_sa(now, session, spi, reason);
        }
        let proof = match a.local_auth {
            Some((first, bytes)) => {
                let mut count = 0;
                match decode_chain(first, &bytes, &self.ike.limits, &mut count, false) {
                    Ok(p) => p,
                    Err(_) => return self.fail_sa(now, session, spi, TerminalFailure::BadAnswer),
                }
            }
            None => Vec::new(),
        };
        let responder = self.sas.get(&spi).is_some_and(|s| !s.initiator);
        if responder && proof.is_empty() {
            return self.fail_sa(now, session, spi, TerminalFailure::BadAnswer);
        }
        self.resume(session, Step::Keying { spi, proof }, meta);
        self.ask(now, session, Body::KeyRequest)
    }

    /// The peer's answer to our rekey of `spi`: to the server, unless it is a refusal.
    fn own_rekey_answer(&mut self, now: Instant, session: u64, spi: [u8; 8]) -> Result<(), Error> {
        let Some(sa) = self.sas.get(&spi) else {
            return Ok(());
        };
        let Some(payloads) = sa.own_rekey_answer() else {
            return Ok(());
        };
        let refusal = crate::ikev2::session::error_notify(payloads)
            .filter(|n| *n != notify::INVALID_KE_PAYLOAD);
        if let Some(n) = refusal {
            self.exchanges.remove(&session);
            return self
                .with_sa(now, spi, |sa, ctx| {
                    sa.own_rekey_answered(ctx, OwnRekeyVerdict::Refused(n))
                })
                .unwrap_or(Ok(()));
        }
        let message = rekey_message(sa, true, payloads.to_vec())?;
        let Some(meta) = self.exchanges.get(&session).map(|x| x.meta) else {
            return Ok(());
        };
        self.resume(session, Step::OwnRekeyAnswered { spi }, meta);
        let req = KeyGenRequest {
            peer_message: Some(message),
        };
        self.ask(now, session, Body::KeyGenRequest(req))
    }

    /// Answer a held IKE SA rekey with an error notify; the IKE SA stays as it is.
    fn refuse_rekey(
        &mut self,
        now: Instant,
        spi: [u8; 8],
        notify: u16,
        data: Vec<u8>,
    ) -> Result<(), Error> {
        let verdict = RekeyVerdict::Refused { notify, data };
        self.with_sa(now, spi, |sa, ctx| {
            if sa.rekey_question().is_some() {
                sa.rekey_answered(ctx, verdict)
            } else if sa.own_rekey_answer().is_some() {
                // Our own rekey: it failed (reported as such); the IKE SA stays.
                sa.own_rekey_answered(ctx, OwnRekeyVerdict::Refused(notify))
            } else {
                Ok(())
            }
        })
        .unwrap_or(Ok(()))
    }

    /// The peer started an IKE SA rekey on `spi`: ask the server for the new
    /// Diffie-Hellman (a delegation session of its own: start, key generation).
    fn start_rekey(&mut self, now: Instant, spi: [u8; 8]) -> Result<(), Error> {
        let Some(sa) = self.sas.get(&spi) else {
            return Ok(());
        };
        let Some(payloads) = sa.rekey_question() else {
            return Ok(());
        };
        let (local, remote) = (sa.local, sa.remote);
        // The peer's request, opened, as an unencrypted IKE message: the server reads the
        // SA, Ni and KEi from it (and sees no other payload).
        let message = rekey_message(sa, true, payloads.to_vec())?;
        if self.exchanges.len() >= self.cfg.max_exchanges {
            return self.refuse_rekey(now, spi, notify::TEMPORARY_FAILURE, Vec::new());
        }
        let session = self.new_session();
        let step = Step::RekeyStart { spi };
        let addrs = (local, remote);
        self.start_exchange(
            now,
            session,
            step,
            Role::Responder,
            addrs,
            Some(message),
            None,
        )
    }

    /// An exchange whose IKE SA exists failed: the held IKE_AUTH is refused to the peer
    /// (AUTHENTICATION_FAILED), the SA goes, and the application is told.
    fn fail_sa(
        &mut self,
        now: Instant,
        session: u64,
        spi: [u8; 8],
        reason: TerminalFailure,
    ) -> Result<(), Error> {
        // What the IKE session reports: the server refused the peer (S42, with its
        // reason), the policy database did (S43: the identity is not one this terminal
        // talks to), or the exchange could not be finished (the IKE SA just fails).
        let ike_reason = match reason {
            TerminalFailure::NotAuthenticated(r) => FailReason::PeerAuth(auth_failure(r)),
            TerminalFailure::PolicyDenied => FailReason::IdentityMismatch,
            _ => FailReason::InvalidResponse,
        };
        let r = self
            .with_sa(now, spi, |sa, ctx| {
                if sa.peer_proof().is_some() {
                    sa.server_answered(ctx, Verdict::Refused(ike_reason))
                } else {
                    sa.fail(ctx, ike_reason)
                }
            })
            .unwrap_or(Ok(()));
        self.exchanges.remove(&session);
        r.and(self.report(session, reason))
    }

    /// An exchange failed before an IKE SA existed here (or with none to tell).
    fn fail(&mut self, now: Instant, session: u64, reason: TerminalFailure) -> Result<(), Error> {
        if let Some(spi) = self.exchanges.get(&session).and_then(|x| rekey_sa(&x.step)) {
            // The IKE SA stays; only its rekey is refused, and the peer tries again later.
            let r = self.refuse_rekey(now, spi, notify::TEMPORARY_FAILURE, Vec::new());
            return r.and(self.report(session, reason));
        }
        if let Some(x) = self.exchanges.remove(&session)
            && let Some(spi) = step_sa(&x.step)
        {
            self.exchanges.insert(session, x);
            return self.fail_sa(now, session, spi, reason);
        }
        self.report(session, reason)
    }

    fn report(&mut self, session: u64, reason: TerminalFailure) -> Result<(), Error> {
        self.end(session);
        self.out.event(TerminalEvent::Failed { session, reason })
    }

    /// An exchange is over: it and its index entry go.
    fn end(&mut self, session: u64) {
        self.exchanges.remove(&session);
        self.by_init.retain(|_, s| *s != session);
    }

    /// The unencrypted IKE_SA_INIT answer carrying one notify (§2.6).
    fn refuse_init(&mut self, now: Instant, init: &PeerInit, n: Notify) -> Result<(), Error> {
        let bytes = Message::init_refusal(init.spi_i, n)?;
        let mut ctx = Ctx::new(now, &mut self.ike_out, &mut *self.rng);
        ctx.transmit(init.to, init.from, init.marker, &bytes)?;
        self.flush_ike(now)
    }

    /// Responder: a peer's IKE_SA_INIT request.
    fn peer_init(
        &mut self,
        now: Instant,
        msg: &[u8],
        from: SocketAddr,
        to: SocketAddr,
        marker: bool,
    ) -> Result<(), Error> {
        let h = Header::decode(msg, &self.ike.limits)?.header;
        if h.message_id != 0 || !h.flags.initiator {
            return Err(IkeError::BadInitRequestHeader.into());
        }
        // A retransmission: replay our answer if it exists; else it is with the server.
        if let Some(session) = self.by_init.get(&(h.spi_i, from)).copied() {
            let spi_r = self.exchanges.get(&session).and_then(|x| step_sa(&x.step));
            if let Some(sa) = spi_r.and_then(|s| self.sas.get(&s)) {
                if sa.init_request() != msg {
                    return Err(IkeError::InitiatorSpiReused.into());
                }
                let mut ctx = Ctx::new(now, &mut self.ike_out, &mut *self.rng);
                sa.replay_init(&mut ctx, from, to, marker)?;
                return self.flush_ike(now);
            }
            return Ok(());
        }
        let m = Message::decode(msg, &self.ike.limits)?;
        self.room_for_exchange()?;
        let Some((_, _, ni)) = Found::of(&m.payloads).sa_ke_nonce() else {
            let init = PeerInit {
                msg: msg.to_vec(),
                from,
                to,
                marker,
                spi_i: h.spi_i,
            };
            self.refuse_init(now, &init, Notify::new(notify::INVALID_SYNTAX, Vec::new()))?;
            return Err(IkeError::MissingInitPayload.into());
        };
        // Cookies (§2.6): stateless, a hash — the terminal does this itself.
        if self.exchanges.len() >= self.cfg.cookie_threshold {
            self.cookies.maybe_rotate(&mut *self.rng, now);
            let valid = find_notify(&m.payloads, notify::COOKIE)
                .is_some_and(|c| self.cookies.check(&c.data, ni, from.ip(), &h.spi_i));
            if !valid {
                let cookie = self.cookies.make(ni, from.ip(), &h.spi_i);
                self.counters.cookies += 1;
                let init = PeerInit {
                    msg: Vec::new(),
                    from,
                    to,
                    marker,
                    spi_i: h.spi_i,
                };
                return self.refuse_init(now, &init, Notify::new(notify::COOKIE, cookie));
            }
        }
        let session = self.new_session();
        let init = PeerInit {
            msg: msg.to_vec(),
            from,
            to,
            marker,
            spi_i: h.spi_i,
        };
        self.by_init.insert((h.spi_i, from), session);
        let step = Step::Start(Box::new(init));
        let message = Some(msg.to_vec());
        self.start_exchange(
            now,
            session,
            step,
            Role::Responder,
            (to, from),
            message,
            None,
        )
    }

    /// Run `f` on the IKE SA with our SPI `key`, then move what it queued.
    fn with_sa<R>(
        &mut self,
        now: Instant,
        key: [u8; 8],
        f: impl FnOnce(&mut IkeSa, &mut Ctx<'_>) -> Result<R, Error>,
    ) -> Option<Result<R, Error>> {
        let room = self.sas.len() < self.cfg.max_ike_sas;
        let mut sa = self.sas.remove(&key)?;
        let sas = &self.sas;
        let taken = |s: &[u8; 8]| sas.contains_key(s) || *s == key;
        let mut ctx = Ctx {
            now,
            out: &mut self.ike_out,
            rng: &mut *self.rng,
            spi_taken: &taken,
            room_to_rekey: room,
        };
        let r = f(&mut sa, &mut ctx);
        // An IKE SA rekey leaves the old SA retiring and a successor under its own SPI.
        let successor = sa.take_successor();
        self.sas.insert(key, sa);
        if let Some(new) = successor {
            self.sas.insert(new.our_spi(), *new);
        }
        let flushed = self.flush_ike(now);
        Some(r.and_then(|v| flushed.map(|()| v)))
    }

    /// Move the IKE session's outputs out, installing and removing Child SAs in the data
    /// plane on the way.
    fn flush_ike(&mut self, now: Instant) -> Result<(), Error> {
        let mut result = Ok(());
        while let Some(o) = self.ike_out.pop() {
            let r = match o {
                Output::Event(e) => {
                    let installed = self.on_ike_event(now, &e);
                    installed.and(self.out.event(TerminalEvent::Ike(e)))
                }
                other => self.out.push(other.map_event(TerminalEvent::Ike)),
            };
            result = result.and(r);
        }
        result
    }

    /// Keep the data plane in step with the IKE session; a Child SA it refuses (its SA
    /// table is full) is reported.
    fn on_ike_event(&mut self, now: Instant, e: &IkeEvent) -> Result<(), Error> {
        match e {
            IkeEvent::ChildSaEstablished { child, .. } | IkeEvent::ChildSaRekeyed { child, .. } => {
                match self.plane.install(now, (**child).clone()) {
                    Ok(_) => Ok(()),
                    Err(error) => self.out.event(TerminalEvent::ChildSaNotInstalled {
                        spi_in: child.spi_in,
                        error,
                    }),
                }
            }
            IkeEvent::ChildSaDeleted { spi_in, .. } => {
                // `None`: the data plane already dropped it (its hard lifetime ended).
                let _ = self.plane.remove(*spi_in);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// After IKE SA `key` handled something: a delegated IKE_AUTH it now holds goes to the
    /// server (S9), so does a peer's IKE SA rekey it holds or the peer's answer to ours;
    /// if it died, it and the exchanges bound to it go. Only this SA and the exchanges
    /// (at most `max_exchanges`) are looked at: the cost does not grow with the SA table.
    fn settle(&mut self, now: Instant, key: [u8; 8]) {
        let Some(sa) = self.sas.get(&key) else {
            return;
        };
        let proof = sa.peer_proof();
        let peer_rekey = sa.rekey_question().is_some();
        let own_answer = sa.own_rekey_answer().is_some();
        let dead = sa.is_dead();
        let bound: Vec<(u64, bool, bool)> = self
            .exchanges
            .iter()
            .filter(|(_, x)| step_sa(&x.step).or(rekey_sa(&x.step)) == Some(key))
            .map(|(s, x)| {
                (
                    *s,
                    matches!(x.step, Step::AwaitPeer { .. }),
                    matches!(x.step, Step::OwnRekeySent { .. }),
                )
            })
            .collect();
        if dead {
            self.sas.remove(&key);
            for (s, _, _) in &bound {
                self.exchanges.remove(s);
            }
            let live = &self.exchanges;
            self.by_init.retain(|_, s| live.contains_key(s));
            return;
        }
        for (session, awaiting_peer, own_rekey_sent) in bound.iter().copied() {
            // Outputs refused by a full outbox are reported as lost by the driver's next
            // call; a failure to ask ends the exchange through its request deadline.
            if awaiting_peer && let Some(proof) = &proof {
                let _ = self.ask_authentication(now, session, key, proof);
            }
            if own_rekey_sent && own_answer {
                let _ = self.own_rekey_answer(now, session, key);
            }
        }
        let serving_rekey = bound.iter().any(|(s, _, _)| {
            self.exchanges.get(s).is_some_and(|x| {
                matches!(x.step, Step::RekeyStart { .. } | Step::RekeyKeyGen { .. })
            })
        });
        if peer_rekey && !serving_rekey {
            let _ = self.start_rekey(now, key);
        }
    }

    /// S9: the peer's proof goes to the server.
    fn ask_authentication(
        &mut self,
        now: Instant,
        session: u64,
        spi: [u8; 8],
        proof: &[Payload],
    ) -> Result<(), Error> {
        let Ok((first_payload, payloads)) = encode_chain(proof) else {
            // Payloads this engine decoded always encode again; if not, the exchange fails.
            return self.fail_sa(now, session, spi, TerminalFailure::BadAnswer);
        };
        let Some(meta) = self.exchanges.get(&session).map(|x| x.meta) else {
            return Ok(());
        };
        self.resume(session, Step::Authenticating { spi }, meta);
        let req = AuthRequest {
            first_payload,
            payloads,
        };
        self.ask(now, session, Body::AuthRequest(req))
    }

    /// An IKE datagram.
    fn on_datagram(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        let Some(a) = arrival(input, self.cfg.nat_t_port, &self.ike.limits)? else {
            return Ok(());
        };
        let h = a.header;
        if h.exchange == ExchangeType::IkeSaInit && h.spi_r == [0; 8] && !h.flags.response {
            return self.peer_init(now, a.msg, a.from, a.to, a.marker);
        }
        if h.exchange == ExchangeType::IkeSaInit && h.flags.response {
            let Some(session) = self.by_init.get(&(h.spi_i, a.from)).copied() else {
                return Err(IkeError::UnknownSpi.into());
            };
            return self.init_answer(now, session, a.msg, a.from, a.to);
        }
        let key = if h.flags.initiator { h.spi_r } else { h.spi_i };
        let known = self
            .sas
            .get(&key)
            .is_some_and(|s| s.id.spi_i == h.spi_i && s.id.spi_r == h.spi_r);
        if !known {
            return Err(IkeError::UnknownSpi.into());
        }
        let r = self
            .with_sa(now, key, |sa, ctx| {
                sa.handle(ctx, a.msg, a.from, a.to, a.marker)
            })
            .unwrap_or(Err(IkeError::UnknownSpi.into()));
        self.settle(now, key);
        r
    }

    fn timers(&self) -> Vec<(Timer, Instant)> {
        let mut t = Vec::new();
        for (s, x) in &self.exchanges {
            t.push((Timer::Exchange(*s), x.meta.deadline));
            if let Some(a) = &x.asked {
                t.push((Timer::Request(*s), a.deadline));
            }
            if let Step::InitSent { retrans, .. } = &x.step {
                t.push((Timer::InitRetransmit(*s), retrans.next_at()));
            }
        }
        for (k, sa) in &self.sas {
            if let Some(at) = sa.poll_timeout() {
                t.push((Timer::Sa(*k), at));
            }
        }
        if let Some(at) = self.link.channel_timeout() {
            t.push((Timer::Channel, at));
        }
        if let Some(at) = self.link.reconnect_at() {
            t.push((Timer::Reconnect, at));
        }
        t
    }

    fn fire(&mut self, now: Instant, timer: Timer) -> Result<(), Error> {
        match timer {
            Timer::Exchange(s) => {
                if self
                    .exchanges
                    .get(&s)
                    .is_some_and(|x| now >= x.meta.deadline)
                {
                    return self.fail(now, s, TerminalFailure::Timeout);
                }
                Ok(())
            }
            Timer::Request(s) => {
                let late = self
                    .exchanges
                    .get(&s)
                    .and_then(|x| x.asked.as_ref())
                    .is_some_and(|a| now >= a.deadline);
                if late {
                    return self.fail(now, s, TerminalFailure::ServerUnreachable);
                }
                Ok(())
            }
            Timer::InitRetransmit(s) => {
                let policy = self.cfg.retransmit;
                let local = self.cfg.local;
                let Some(x) = self.exchanges.get_mut(&s) else {
                    return Ok(());
                };
                let Step::InitSent {
                    remote, retrans, ..
                } = &mut x.step
                else {
                    return Ok(());
                };
                match retrans.tick(now, &policy) {
                    Tick::Wait => Ok(()),
                    Tick::Resend => {
                        let (remote, bytes) = (*remote, retrans.bytes.clone());
                        let mut ctx = Ctx::new(now, &mut self.ike_out, &mut *self.rng);
                        let r = ctx.transmit(local, remote, false, &bytes);
                        r.and(self.flush_ike(now))
                    }
                    Tick::GiveUp => self.fail(now, s, TerminalFailure::Peer(FailReason::Timeout)),
                }
            }
            Timer::Sa(k) => {
                let r = self
                    .with_sa(now, k, |sa, ctx| sa.handle_timeout(ctx))
                    .unwrap_or(Ok(()));
                self.settle(now, k);
                r
            }
            Timer::Channel => {
                self.link.handle_channel_timeout(now);
                self.drain_channel(now)
            }
            Timer::Reconnect => match self.link.reconnect_at() {
                Some(at) if now >= at => self.reconnect(now),
                _ => Ok(()),
            },
        }
    }
}

/// The IKE session's name for the server's S42 result. The delegation message carries the
/// coarse result; a finer certificate-path rule (codes 16 and up) reads as a bad
/// certificate here, and the server's own log has the detail.
fn auth_failure(r: AuthResult) -> AuthFailure {
    match r {
        AuthResult::UnknownCa => AuthFailure::UnknownCa,
        AuthResult::Expired => AuthFailure::Expired,
        AuthResult::IdentityMismatch => AuthFailure::IdentityMismatch,
        AuthResult::MissingCertificate => AuthFailure::MissingCertificate,
        AuthResult::UnsupportedMethod => AuthFailure::UnsupportedMethod,
        AuthResult::Other(_) => AuthFailure::BadCertificate,
        // Incomplete is TLS's S12 loop and never an IKE verdict; a server that sends it
        // (or a protocol violation) for IKE has not authenticated the peer.
        AuthResult::BadAuth
        | AuthResult::Authenticated
        | AuthResult::Incomplete
        | AuthResult::ProtocolViolation => AuthFailure::BadAuth,
    }
}

/// An IKE SA rekey message as the server reads it: unencrypted, with the SA's SPIs and
/// the CREATE_CHILD_SA exchange type, carrying only the payloads a rekey's key exchange
/// needs (SA, nonce, KE, notifies). `from_peer`: the peer's request (else our own start,
/// or the peer's answer, both sent with no payloads or the answer's).
fn rekey_message(sa: &IkeSa, from_peer: bool, payloads: Vec<Payload>) -> Result<Vec<u8>, Error> {
    let header = Header {
        spi_i: sa.id.spi_i,
        spi_r: sa.id.spi_r,
        exchange: ExchangeType::CreateChildSa,
        flags: crate::ikev2::codec::Flags {
            initiator: if from_peer {
                !sa.initiator
            } else {
                sa.initiator
            },
            version: false,
            response: false,
        },
        message_id: 0,
    };
    let payloads = payloads
        .into_iter()
        .filter(|p| {
            matches!(
                p,
                Payload::Sa(_) | Payload::Nonce(_) | Payload::Ke(_) | Payload::Notify(_)
            )
        })
        .collect();
    Ok(Message { header, payloads }.encode()?)
}

/// The KE payload of a key generation response's message.
fn ke_of(message: &[u8], limits: &Limits) -> Option<crate::ikev2::codec::KePayload> {
    let m = Message::decode(message, limits).ok()?;
    Found::of(&m.payloads).ke.cloned()
}

/// The IKE SA whose rekey an exchange serves.
fn rekey_sa(step: &Step) -> Option<[u8; 8]> {
    match step {
        Step::RekeyStart { spi }
        | Step::RekeyKeyGen { spi, .. }
        | Step::OwnRekeyStart { spi }
        | Step::OwnRekeyShare { spi, .. }
        | Step::OwnRekeySent { spi }
        | Step::OwnRekeyAnswered { spi } => Some(*spi),
        _ => None,
    }
}

/// The IKE SA an exchange's step is bound to, if it has one yet.
fn step_sa(step: &Step) -> Option<[u8; 8]> {
    match step {
        Step::AwaitPeer { spi } | Step::Authenticating { spi } | Step::Keying { spi, .. } => {
            Some(*spi)
        }
        _ => None,
    }
}

impl Actor for Terminal {
    type Event = TerminalEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::Datagram { .. } => self.on_datagram(now, input),
            _ => {
                let r = self.link.handle_input(now, input);
                let drained = self.drain_channel(now);
                r.and(drained)
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let fired = due(self.timers(), now);
        for t in fired {
            // Each timer's outputs are attempted; a full outbox is counted as lost and
            // reported by the driver's next call, so nothing is dropped silently.
            let _ = self.fire(now, t);
        }
    }

    fn poll_output(&mut self) -> Option<Output<TerminalEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        earliest(self.timers())
    }
}

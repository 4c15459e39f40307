//! Seed 004's delegating terminal over TLS 1.3 (Fig. 14, S321-S331): it owns the TCP
//! connections to its peers and runs the record layer ([`crate::tls::RecordLayer`]); the
//! substitution server runs every handshake, over deputy's channel.
//!
//! One connection, one delegation session, one phase at a time:
//!
//! ```text
//!  client: Connecting ─► Starting (S321) ─► KeyGen (S327: the ClientHello) ─► PeerFlight
//!  server: HelloWait ──► Starting (S321, with the ClientHello) ─► KeyGen (S327: our flight) ─► PeerFlight
//!  PeerFlight ─(HelloRetryRequest, or the client's second hello)─► KeyGen
//!  PeerFlight ─► Authenticating (S325, the peer's records; ×n while incomplete) ─► Keying (S330) ─► Open (S331)
//! ```
//!
//! The terminal never computes a key exchange, a signature or a certificate check. Before
//! the keys arrive it reads only record headers and the peer's plaintext hello (to see a
//! HelloRetryRequest, which loops back to key generation, the seed's S12 → S5). Once open,
//! a KeyUpdate or NewSessionTicket from the peer is relayed to the server, which answers
//! with the next key (sealed); records that arrive before that key are held by the record
//! layer, within its bound.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use super::{
    HS_CLIENT_HELLO, HS_SERVER_HELLO, KeyBody, RELAY_CLOSED, RELAY_OWN_KEY_UPDATE,
    RELAY_PEER_MESSAGE, first_handshake, is_hello_retry, suite_transform, suites_of,
};
use crate::channel::{ChannelClient, ClientConfig};
use crate::io::{Actor, Input, Outbox, Output, StreamId};
use crate::keyx::link::{LinkNote, ServerLink, decode_answer};
use crate::keyx::messages::{
    AuthRequest, AuthResponse, AuthResult, Body, ErrorCode, KEY_RESPONSE, KeyGenRequest,
    MAX_PROTOCOL_BYTES, Message as KeyxMessage, Method, PolicyResult, Protocol, RELAY, Relay, Role,
    StartOutcome, StartRequest,
};
use crate::keyx::seal::{DelegationKey, SealContext, open};
use crate::keyx::{KeyxError, Place};
use crate::time::{due, earliest};
use crate::tls::{
    AlertDescription, CipherSuite, RecordConfig, RecordEvent, RecordLayer, TlsError,
    complete_records,
};
use crate::{Error, Instant, Rng};

/// A delegated TLS connection, named by its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TlsConnId(pub StreamId);

/// The first outbound stream number the terminal uses for its TLS connections: the channel
/// client numbers its own streams from 0, so the two never meet.
const TLS_STREAMS: u64 = 1 << 62;

/// The terminal's configuration: what it runs itself. There is no place for a certificate,
/// a key or a trust anchor: the substitution server holds them.
#[derive(Clone, Debug)]
pub struct TerminalConfig {
    /// Our address toward peers (the port is chosen per connection).
    pub local: IpAddr,
    /// The substitution server's channel address.
    pub server: SocketAddr,
    /// Our address toward the server (port 0: any).
    pub server_local: SocketAddr,
    /// The secure channel to the server (S1-S2).
    pub channel: Arc<ClientConfig>,
    /// The delegation key the server seals our traffic keys with.
    pub delegation_key: DelegationKey,
    /// The suites this terminal's record layer runs, preferred first.
    pub suites: Vec<CipherSuite>,
    /// The record layer's bounds.
    pub record: RecordConfig,
    /// TLS connections at once (either role).
    pub max_connections: usize,
    /// Octets held per connection outside the record layer: the peer's handshake records
    /// before they are relayed, and application data the application sends before the
    /// keys arrive or while a KeyUpdate it owes is pending.
    pub max_buffered: usize,
    /// Post-handshake relays queued per connection while one is with the server.
    pub max_relays: usize,
    /// How long the server may take to answer one delegation request.
    pub request_timeout: Duration,
    /// How long a handshake may take in all (connect or accept to keys set).
    pub handshake_timeout: Duration,
    /// Consecutive failed attempts to reach the server before waiting connections fail.
    pub max_reconnects: u32,
    /// Wait before reconnecting to the server.
    pub reconnect_delay: Duration,
}

impl TerminalConfig {
    /// Defaults: the three TLS 1.3 AEAD suites (ChaCha20-Poly1305 first: fastest without
    /// AES instructions), the record layer's default bounds, 16 connections, 64 KiB held
    /// per connection, 8 queued relays, requests answered within 10 s, handshakes within
    /// 30 s.
    pub fn new(
        local: IpAddr,
        server: SocketAddr,
        channel: Arc<ClientConfig>,
        delegation_key: DelegationKey,
    ) -> TerminalConfig {
        TerminalConfig {
            local,
            server,
            server_local: SocketAddr::new(local, 0),
            channel,
            delegation_key,
            suites: alloc::vec![
                CipherSuite::Chacha20Poly1305Sha256,
                CipherSuite::Aes128GcmSha256,
                CipherSuite::Aes256GcmSha384,
            ],
            record: RecordConfig::default(),
            max_connections: 16,
            max_buffered: 64 * 1024,
            max_relays: 8,
            request_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(30),
            max_reconnects: 3,
            reconnect_delay: Duration::from_secs(1),
        }
    }
}

/// Why a delegated connection failed at the terminal (S19). Its stream is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TerminalFailure {
    /// The server refused a request with this code.
    Server(ErrorCode),
    /// No suite in common (the peer was answered handshake_failure).
    NoProposalChosen,
    /// The policy database does not let this terminal and this peer talk.
    PolicyDenied,
    /// The peer did not authenticate (S326 no).
    NotAuthenticated(AuthResult),
    /// The server chose a method without authentication (S18).
    Malfunction,
    /// A sealed body did not open under our delegation key.
    SealRejected,
    /// The server's answer did not fit the connection's step.
    BadAnswer,
    /// The server did not answer in time, or could not be reached.
    ServerUnreachable,
    /// The handshake did not finish within [`TerminalConfig::handshake_timeout`].
    Timeout,
    /// The peer's plaintext handshake could not be followed, or a record header was bad.
    BadPeerHandshake,
    /// The peer closed the connection before the keys were set.
    PeerClosed,
    /// More than [`TerminalConfig::max_buffered`] octets (or relays) waited.
    Overflow,
    /// The record layer refused the peer's records (the alert it names was sent).
    Record(TlsError),
    /// The peer sent a fatal alert.
    PeerAlert(AlertDescription),
    /// The server no longer knows the session, so keys cannot be updated.
    SessionLost,
}

/// What the terminal tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TerminalEvent {
    /// The channel to the server is up.
    ServerConnected,
    /// The channel to the server went down.
    ServerLost,
    /// A peer connected to us (server role); its handshake starts.
    Accepted {
        /// The connection.
        conn: TlsConnId,
        /// The peer.
        remote: SocketAddr,
    },
    /// S331: the traffic keys are set; records flow.
    Established {
        /// The connection.
        conn: TlsConnId,
        /// The suite.
        suite: CipherSuite,
    },
    /// Application data from the peer, in order.
    Data {
        /// The connection.
        conn: TlsConnId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A key moved to its next generation (a KeyUpdate either way).
    KeysUpdated {
        /// The connection.
        conn: TlsConnId,
        /// The send key moved.
        send: bool,
        /// The receive key moved.
        receive: bool,
    },
    /// A NewSessionTicket from the peer reached the server.
    TicketRelayed {
        /// The connection.
        conn: TlsConnId,
    },
    /// The peer sent close_notify.
    PeerClosed {
        /// The connection.
        conn: TlsConnId,
    },
    /// The connection ended after close_notify (either side's).
    Closed {
        /// The connection.
        conn: TlsConnId,
    },
    /// The stream ended without the peer's close_notify: data may be missing.
    Truncated {
        /// The connection.
        conn: TlsConnId,
    },
    /// The connection failed; no more data flows.
    Failed {
        /// The connection.
        conn: TlsConnId,
        /// Why.
        reason: TerminalFailure,
    },
}

/// What the terminal counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TerminalCounters {
    /// Delegation messages of a type the terminal does not know, discarded.
    pub unknown_discarded: u64,
    /// Answers for no waiting request, discarded.
    pub stale_discarded: u64,
    /// Delegation requests sent.
    pub requests: u64,
    /// Handshakes relayed to the server in authentication requests (records).
    pub records_relayed: u64,
}

/// What a post-handshake relay asked for, so its answer can be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RelayKind {
    /// The peer's KeyUpdate (`requested`: we owe one back).
    PeerKeyUpdate { requested: bool },
    /// Our own KeyUpdate (`request_peer`: we ask the peer for one).
    OwnKeyUpdate { request_peer: bool },
    /// The peer's NewSessionTicket.
    Ticket,
}

/// A connection's step (state as data).
enum Phase {
    /// Client: the TCP connect is out.
    Connecting,
    /// Server: waiting for the whole ClientHello.
    HelloWait,
    /// S321 sent.
    Starting,
    /// S327 sent: the first time, or again after a HelloRetryRequest (`retried`: the
    /// handshake may not retry twice).
    KeyGen { retried: bool },
    /// Our flight is out; gathering the peer's. `hello_seen`: its ServerHello (client) or
    /// its final ClientHello (server) was relayed already; `retried`: a HelloRetryRequest
    /// happened.
    PeerFlight { hello_seen: bool, retried: bool },
    /// Server after a HelloRetryRequest: waiting for the client's second ClientHello.
    HelloAgain,
    /// S325 sent with the first `relayed` octets of the buffer.
    Authenticating { relayed: usize },
    /// S330 sent.
    Keying,
    /// S331 done: the record layer runs.
    Open(Box<RecordLayer>),
}

/// The delegation request a connection waits on.
struct Asked {
    seq: u32,
    bytes: Vec<u8>,
    deadline: Instant,
    relay: Option<RelayKind>,
}

struct Conn {
    role: Role,
    remote: SocketAddr,
    local: SocketAddr,
    /// Client: the name we reach (SNI, and what the policy database is asked about).
    name: Option<String>,
    session: u64,
    next_seq: u32,
    asked: Option<Asked>,
    /// Until the keys are set.
    deadline: Option<Instant>,
    /// The peer's bytes not yet relayed or given to the record layer.
    inbuf: Vec<u8>,
    /// Application data waiting for keys or for the KeyUpdate we owe.
    outq: Vec<u8>,
    /// Post-handshake relays waiting for the one in flight.
    relays: VecDeque<(RelayKind, Vec<u8>)>,
    phase: Phase,
    /// The application asked to close once the queued data is out.
    closing: bool,
}

/// The terminal's timers (one table for `poll_timeout` and `handle_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// A connection's handshake deadline.
    Handshake(StreamId),
    /// A connection's delegation request deadline.
    Request(StreamId),
    /// The channel client's own timers.
    Channel,
    /// Reconnect to the server.
    Reconnect,
}

/// Seed 004's delegating terminal over TLS 1.3: an [`Actor`] for its TCP connections to
/// peers (either role) and its stream to the substitution server.
///
/// It holds no certificate, key or trust anchor. The driver opens the TCP connections it
/// asks for ([`Output::Connect`]) and hands it the streams a listener accepted (the
/// terminal as a TLS server); everything else is bytes in and out.
///
/// ```
/// use std::sync::Arc;
/// use deputy::channel::{ClientConfig, Psk};
/// use deputy::keyx::DelegationKey;
/// use deputy::keyx::tls::{Terminal, TerminalConfig};
/// use deputy::{Actor, Instant, Output, UnixTime};
/// use rand_chacha::ChaCha20Rng;
/// use rand_core::SeedableRng;
///
/// // The pre-arranged key to the substitution server (S1-S2) and the delegation key the
/// // server seals traffic keys with: all the terminal is provisioned with.
/// let psk = Psk::new("sensor-7", &[0x42; 32]).unwrap();
/// let channel = Arc::new(ClientConfig::with_psk(psk, UnixTime(1_800_000_000)));
/// let cfg = TerminalConfig::new(
///     "10.0.0.7".parse().unwrap(),
///     "198.51.100.1:7040".parse().unwrap(),
///     channel,
///     DelegationKey::new([7; 32]),
/// );
/// let rng = |seed| Box::new(ChaCha20Rng::seed_from_u64(seed));
/// let mut terminal = Terminal::new(cfg, rng(1), rng(2)).unwrap();
/// // Fig. 14: the terminal opens its own TCP connection; S321 follows once it is up.
/// let conn = terminal
///     .connect(Instant::ZERO, "203.0.113.5:443".parse().unwrap(), "peer.example")
///     .unwrap();
/// assert!(matches!(terminal.poll_output(), Some(Output::Connect { id, .. }) if id == conn.0));
/// ```
pub struct Terminal {
    cfg: TerminalConfig,
    rng: Rng,
    link: ServerLink,
    out: Outbox<TerminalEvent>,
    conns: BTreeMap<StreamId, Conn>,
    /// Delegation session → connection.
    sessions: BTreeMap<u64, StreamId>,
    next_stream: u64,
    counters: TerminalCounters,
}

impl core::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Terminal")
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

/// A plaintext fatal alert record (before any keys: no suite in common).
fn plain_alert(d: AlertDescription) -> Vec<u8> {
    alloc::vec![21, 3, 3, 0, 2, 2, d.code()]
}

impl Terminal {
    /// A terminal; `channel_rng` drives its channel to the server, `rng` names sessions.
    pub fn new(cfg: TerminalConfig, rng: Rng, channel_rng: Rng) -> Result<Terminal, Error> {
        if cfg.max_connections == 0 || cfg.max_buffered == 0 || cfg.max_relays == 0 {
            return Err(Error::CapacityExceeded {
                what: "terminal bounds (zero)",
                bound: 0,
            });
        }
        let channel = ChannelClient::new(
            cfg.channel.clone(),
            cfg.server_local,
            cfg.server,
            channel_rng,
        );
        Ok(Terminal {
            link: ServerLink::new(channel, cfg.max_reconnects, cfg.reconnect_delay),
            cfg,
            rng,
            out: Outbox::default(),
            conns: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_stream: 0,
            counters: TerminalCounters::default(),
        })
    }

    /// What was counted.
    pub fn counters(&self) -> TerminalCounters {
        self.counters
    }

    /// Connections held.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// An open connection's record layer (its suite, sequence numbers, counters).
    pub fn record_layer(&self, conn: TlsConnId) -> Option<&RecordLayer> {
        match &self.conns.get(&conn.0)?.phase {
            Phase::Open(l) => Some(l),
            _ => None,
        }
    }

    /// Connect to `remote` as a TLS client of `server_name` (Fig. 14).
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<TlsConnId, Error> {
        self.room()?;
        let id = StreamId::outbound(TLS_STREAMS | self.next_stream);
        self.next_stream += 1;
        let local = SocketAddr::new(self.cfg.local, 0);
        let conn = self.new_conn(
            now,
            Role::Initiator,
            remote,
            local,
            Some(server_name.into()),
            Phase::Connecting,
        );
        self.conns.insert(id, conn);
        self.out.push(Output::Connect { id, local, remote })?;
        Ok(TlsConnId(id))
    }

    /// Send application data (sealed now, or queued until the keys are set).
    pub fn send(&mut self, now: Instant, conn: TlsConnId, data: &[u8]) -> Result<(), Error> {
        let c = self
            .conns
            .get_mut(&conn.0)
            .ok_or(Error::UnknownStream(conn.0))?;
        if c.closing {
            return Err(TlsError::Closed.into());
        }
        let ready = matches!(&c.phase, Phase::Open(l) if !l.owes_key_update() && c.outq.is_empty());
        if !ready {
            if c.outq.len() + data.len() > self.cfg.max_buffered {
                return Err(Error::CapacityExceeded {
                    what: "TLS data waiting for keys",
                    bound: self.cfg.max_buffered,
                });
            }
            c.outq.extend_from_slice(data);
            return Ok(());
        }
        self.seal_and_send(now, conn.0, data)
    }

    /// Ask for new send keys now (a KeyUpdate; `request_peer` asks the peer to update too).
    pub fn update_keys(
        &mut self,
        now: Instant,
        conn: TlsConnId,
        request_peer: bool,
    ) -> Result<(), Error> {
        let c = self
            .conns
            .get(&conn.0)
            .ok_or(Error::UnknownStream(conn.0))?;
        if !matches!(c.phase, Phase::Open(_)) {
            return Err(KeyxError::NotEstablished.into());
        }
        self.relay(
            now,
            conn.0,
            RelayKind::OwnKeyUpdate { request_peer },
            alloc::vec![RELAY_OWN_KEY_UPDATE, u8::from(request_peer)],
        )
    }

    /// Close: close_notify, then the stream; the server forgets the session.
    pub fn close(&mut self, now: Instant, conn: TlsConnId) -> Result<(), Error> {
        let c = self
            .conns
            .get_mut(&conn.0)
            .ok_or(Error::UnknownStream(conn.0))?;
        if !c.outq.is_empty() {
            // Sent once the keys allow, then closed.
            c.closing = true;
            return Ok(());
        }
        self.finish(now, conn.0)
    }

    fn room(&self) -> Result<(), Error> {
        if self.conns.len() >= self.cfg.max_connections {
            return Err(Error::CapacityExceeded {
                what: "TLS connections",
                bound: self.cfg.max_connections,
            });
        }
        Ok(())
    }

    fn new_conn(
        &mut self,
        now: Instant,
        role: Role,
        remote: SocketAddr,
        local: SocketAddr,
        name: Option<String>,
        phase: Phase,
    ) -> Conn {
        let session = loop {
            let s = self.rng.next_u64();
            if s != 0 && !self.sessions.contains_key(&s) {
                break s;
            }
        };
        Conn {
            role,
            remote,
            local,
            name,
            session,
            next_seq: 0,
            asked: None,
            deadline: Some(now + self.cfg.handshake_timeout),
            inbuf: Vec::new(),
            outq: Vec::new(),
            relays: VecDeque::new(),
            phase,
            closing: false,
        }
    }

    fn seal_and_send(&mut self, now: Instant, id: StreamId, data: &[u8]) -> Result<(), Error> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        let Phase::Open(layer) = &mut c.phase else {
            return Ok(());
        };
        let mut wire = Vec::new();
        layer.seal_application(data, &mut wire)?;
        let wants = layer.wants_tx_update();
        self.out.push(Output::StreamSend { id, data: wire })?;
        if wants && !self.update_pending(id) {
            // The confidentiality limit is near: new send keys before it is reached.
            return self.relay(
                now,
                id,
                RelayKind::OwnKeyUpdate {
                    request_peer: false,
                },
                alloc::vec![RELAY_OWN_KEY_UPDATE, 0],
            );
        }
        Ok(())
    }

    /// Whether an own key update is asked or queued.
    fn update_pending(&self, id: StreamId) -> bool {
        self.conns.get(&id).is_some_and(|c| {
            matches!(
                c.asked.as_ref().and_then(|a| a.relay),
                Some(RelayKind::OwnKeyUpdate { .. })
            ) || c
                .relays
                .iter()
                .any(|(k, _)| matches!(k, RelayKind::OwnKeyUpdate { .. }))
        })
    }

    /// Queue a relay to be asked when the one in flight is answered (no time needed: it
    /// goes out from `ask_next`).
    fn queue_relay(&mut self, id: StreamId, kind: RelayKind, data: Vec<u8>) -> Result<(), Error> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        if c.relays.len() >= self.cfg.max_relays {
            return Err(Error::CapacityExceeded {
                what: "TLS relays waiting",
                bound: self.cfg.max_relays,
            });
        }
        c.relays.push_back((kind, data));
        Ok(())
    }

    /// Relay now if nothing is in flight, else queue.
    fn relay(
        &mut self,
        now: Instant,
        id: StreamId,
        kind: RelayKind,
        data: Vec<u8>,
    ) -> Result<(), Error> {
        self.queue_relay(id, kind, data)?;
        self.ask_next(now, id)
    }

    fn ask_next(&mut self, now: Instant, id: StreamId) -> Result<(), Error> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        if c.asked.is_some() {
            return Ok(());
        }
        let Some((kind, data)) = c.relays.pop_front() else {
            return Ok(());
        };
        self.ask(now, id, Body::Relay(Relay { data }), Some(kind))
    }

    /// Send the connection's next delegation request and wait for its answer.
    fn ask(
        &mut self,
        now: Instant,
        id: StreamId,
        body: Body,
        relay: Option<RelayKind>,
    ) -> Result<(), Error> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        let seq = c.next_seq;
        let bytes = KeyxMessage {
            session: c.session,
            seq,
            body,
        }
        .encode()
        .map_err(Error::from)?;
        c.next_seq = seq.wrapping_add(1);
        c.asked = Some(Asked {
            seq,
            bytes: bytes.clone(),
            deadline: now + self.cfg.request_timeout,
            relay,
        });
        self.sessions.insert(c.session, id);
        self.counters.requests += 1;
        let r = self.link.send(now, &bytes);
        let drained = self.drain_channel(now);
        r.and(drained)
    }

    fn drain_channel(&mut self, now: Instant) -> Result<(), Error> {
        let (notes, mut result) = self
            .link
            .drain(now, &mut self.out, || TerminalEvent::ServerLost);
        for note in notes {
            let r = match note {
                LinkNote::Connected => self.out.event(TerminalEvent::ServerConnected),
                LinkNote::Received(data) => self.on_server(now, &data),
                LinkNote::Lost | LinkNote::GaveUp => self.link_lost(now),
            };
            result = result.and(r);
        }
        result
    }

    /// The channel went down: connections waiting on it retry, or fail once it gave up.
    fn link_lost(&mut self, now: Instant) -> Result<(), Error> {
        let waiting: Vec<StreamId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.asked.is_some())
            .map(|(id, _)| *id)
            .collect();
        let mut r = self.out.event(TerminalEvent::ServerLost);
        if self.link.closed(now, !waiting.is_empty()) == LinkNote::GaveUp {
            for id in waiting {
                r = r.and(self.fail(now, id, TerminalFailure::ServerUnreachable));
            }
        }
        r
    }

    /// Reconnect and send every waiting request again (answered from the server's cache).
    fn reconnect(&mut self, now: Instant) -> Result<(), Error> {
        let resend: Vec<Vec<u8>> = self
            .conns
            .values()
            .filter_map(|c| c.asked.as_ref().map(|a| a.bytes.clone()))
            .collect();
        let r = self.link.reconnect(now, resend.iter().map(Vec::as_slice));
        r.and(self.drain_channel(now))
    }

    /// One message from the server.
    fn on_server(&mut self, now: Instant, bytes: &[u8]) -> Result<(), Error> {
        let Some(msg) = decode_answer(bytes, &mut self.counters.unknown_discarded)? else {
            return Ok(());
        };
        let Some(id) = self.sessions.get(&msg.session).copied() else {
            self.counters.stale_discarded += 1;
            return Ok(());
        };
        let waiting = self
            .conns
            .get(&id)
            .and_then(|c| c.asked.as_ref())
            .is_some_and(|a| a.seq == msg.seq);
        // A relay travels both ways: the server's answer to one is a relay too.
        let from_server = !msg.body.is_request() || matches!(msg.body, Body::Relay(_));
        if !waiting || !from_server {
            self.counters.stale_discarded += 1;
            return Ok(());
        }
        let Some(asked) = self.conns.get_mut(&id).and_then(|c| c.asked.take()) else {
            return Ok(());
        };
        self.link.answered();
        let at = Place {
            session: msg.session,
            seq: msg.seq,
        };
        let r = match self.answer(now, id, at, asked.relay, msg.body) {
            Ok(()) => Ok(()),
            Err(reason) => self.fail(now, id, reason),
        };
        r.and(self.ask_next(now, id))
    }

    fn open_sealed(&self, ctx: SealContext, sealed: &[u8]) -> Result<KeyBody, TerminalFailure> {
        let plain = open(&self.cfg.delegation_key, ctx, sealed)
            .map_err(|_| TerminalFailure::SealRejected)?;
        KeyBody::decode(&plain).map_err(|_| TerminalFailure::SealRejected)
    }

    /// Take the server's answer for connection `id`.
    fn answer(
        &mut self,
        now: Instant,
        id: StreamId,
        at: Place,
        relay: Option<RelayKind>,
        body: Body,
    ) -> Result<(), TerminalFailure> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        let phase = core::mem::replace(&mut c.phase, Phase::Keying);
        match (phase, body) {
            (Phase::Open(l), Body::ErrorResponse(ErrorCode::UnknownSession)) => {
                c.phase = Phase::Open(l);
                Err(TerminalFailure::SessionLost)
            }
            (p, Body::ErrorResponse(code)) => {
                c.phase = p;
                Err(TerminalFailure::Server(code))
            }
            // S322: the method, or why there is none.
            (Phase::Starting, Body::StartResponse(r)) => match r.outcome {
                StartOutcome::Proceed {
                    method, transforms, ..
                } => {
                    // S8: a method without authentication cannot normally exist (S18).
                    if method != Method::Tls13 || !method.needs_authentication() {
                        return Err(TerminalFailure::Malfunction);
                    }
                    let ours = &self.cfg.suites;
                    if !suites_of(&transforms).iter().all(|s| ours.contains(s)) {
                        return Err(TerminalFailure::BadAnswer);
                    }
                    c.phase = Phase::KeyGen { retried: false };
                    self.ask(
                        now,
                        id,
                        Body::KeyGenRequest(KeyGenRequest { peer_message: None }),
                        None,
                    )
                    .map_err(|_| TerminalFailure::ServerUnreachable)
                }
                StartOutcome::PolicyDenied => Err(TerminalFailure::PolicyDenied),
                StartOutcome::NoProposalChosen | StartOutcome::InvalidKe { .. } => {
                    if c.role == Role::Responder {
                        // The peer's hello is unanswerable: tell it so, in plaintext.
                        let alert = plain_alert(AlertDescription::HandshakeFailure);
                        let _ = self.out.push(Output::StreamSend { id, data: alert });
                    }
                    Err(TerminalFailure::NoProposalChosen)
                }
            },
            // S328: our flight (S323), as the server built it.
            (Phase::KeyGen { retried }, Body::KeyGenResponse(r)) => {
                let Some(flight) = r.message else {
                    return Err(TerminalFailure::BadAnswer);
                };
                // A server that answered with a HelloRetryRequest waits for a new hello.
                let hrr = c.role == Role::Responder
                    && matches!(first_handshake(&flight, MAX_PROTOCOL_BYTES), Ok(Some((HS_SERVER_HELLO, ref b))) if is_hello_retry(b));
                c.phase = if hrr {
                    Phase::HelloAgain
                } else {
                    Phase::PeerFlight {
                        hello_seen: c.role == Role::Responder,
                        retried,
                    }
                };
                self.out
                    .push(Output::StreamSend { id, data: flight })
                    .map_err(|_| TerminalFailure::Overflow)?;
                self.progress(now, id)
            }
            // S326: the verdict on the peer, with what to send it.
            (Phase::Authenticating { relayed }, Body::AuthResponse(r)) => {
                self.authenticated(now, id, relayed, r)
            }
            // S331: the traffic keys.
            (Phase::Keying, Body::KeyResponse(r)) => {
                let keys = self.open_sealed(at.seal_context(KEY_RESPONSE), &r.sealed)?;
                let (Some(send), Some(receive)) = (keys.send, keys.receive) else {
                    return Err(TerminalFailure::SealRejected);
                };
                if !self.cfg.suites.contains(&keys.suite) {
                    return Err(TerminalFailure::BadAnswer);
                }
                let layer = RecordLayer::new(self.cfg.record, send, receive)
                    .map_err(TerminalFailure::Record)?;
                let Some(c) = self.conns.get_mut(&id) else {
                    return Ok(());
                };
                c.phase = Phase::Open(Box::new(layer));
                c.deadline = None;
                let _ = self.out.event(TerminalEvent::Established {
                    conn: TlsConnId(id),
                    suite: keys.suite,
                });
                // What arrived behind the handshake's last record is the peer's first
                // protected traffic (tickets, or data sent right after its Finished).
                let rest = core::mem::take(&mut c.inbuf);
                self.records(now, id, &rest)?;
                self.flush(now, id)
            }
            (Phase::Open(layer), Body::Relay(r)) => {
                c.phase = Phase::Open(layer);
                self.relayed(now, id, at, relay, r)
            }
            (p, _) => {
                c.phase = p;
                Err(TerminalFailure::BadAnswer)
            }
        }
    }

    /// S326-S330.
    fn authenticated(
        &mut self,
        now: Instant,
        id: StreamId,
        relayed: usize,
        r: AuthResponse,
    ) -> Result<(), TerminalFailure> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        let consumed = r.consumed.map_or(relayed, |n| n as usize);
        if consumed > relayed || consumed > c.inbuf.len() {
            return Err(TerminalFailure::BadAnswer);
        }
        if let Some((_, bytes)) = r.local_auth.clone() {
            // Our Finished (and certificate), the server's tickets, or the alert that
            // ends a refused handshake.
            let _ = self.out.push(Output::StreamSend { id, data: bytes });
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        match (r.auth, r.policy) {
            (AuthResult::Incomplete, _) => {
                c.inbuf.drain(..consumed);
                c.phase = Phase::PeerFlight {
                    hello_seen: true,
                    retried: true,
                };
                self.progress(now, id)
            }
            _ if r.accepted() => {
                c.inbuf.drain(..consumed);
                c.phase = Phase::Keying;
                self.ask(now, id, Body::KeyRequest, None)
                    .map_err(|_| TerminalFailure::ServerUnreachable)
            }
            (AuthResult::Authenticated, PolicyResult::Denied) => Err(TerminalFailure::PolicyDenied),
            (auth, _) => Err(TerminalFailure::NotAuthenticated(auth)),
        }
    }

    /// A relay's answer.
    fn relayed(
        &mut self,
        now: Instant,
        id: StreamId,
        at: Place,
        kind: Option<RelayKind>,
        r: Relay,
    ) -> Result<(), TerminalFailure> {
        let conn = TlsConnId(id);
        let Some(kind) = kind else {
            return Err(TerminalFailure::BadAnswer);
        };
        let keys = if r.data.is_empty() {
            None
        } else {
            Some(self.open_sealed(at.seal_context(RELAY), &r.data)?)
        };
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        let Phase::Open(layer) = &mut c.phase else {
            return Err(TerminalFailure::BadAnswer);
        };
        let mut wire = Vec::new();
        let (send, receive) = match (kind, keys) {
            (RelayKind::Ticket, None) => {
                let _ = self.out.event(TerminalEvent::TicketRelayed { conn });
                return Ok(());
            }
            (RelayKind::PeerKeyUpdate { requested }, Some(k)) => {
                let Some(rx) = k.receive else {
                    return Err(TerminalFailure::BadAnswer);
                };
                if requested {
                    // Answered before any more data: our KeyUpdate under the old key.
                    let Some(tx) = k.send else {
                        return Err(TerminalFailure::BadAnswer);
                    };
                    layer
                        .update_tx(tx, false, &mut wire)
                        .map_err(TerminalFailure::Record)?;
                }
                layer.install_rx(rx).map_err(TerminalFailure::Record)?;
                (requested, true)
            }
            (RelayKind::OwnKeyUpdate { request_peer }, Some(k)) => {
                let Some(tx) = k.send else {
                    return Err(TerminalFailure::BadAnswer);
                };
                layer
                    .update_tx(tx, request_peer, &mut wire)
                    .map_err(TerminalFailure::Record)?;
                (true, false)
            }
            _ => return Err(TerminalFailure::BadAnswer),
        };
        if !wire.is_empty() {
            let _ = self.out.push(Output::StreamSend { id, data: wire });
        }
        let _ = self.out.event(TerminalEvent::KeysUpdated {
            conn,
            send,
            receive,
        });
        // Held records (behind the peer's KeyUpdate) come out now, with what waited here;
        // queued data goes.
        self.events(now, id)?;
        self.records(now, id, &[])?;
        self.flush(now, id)
    }

    /// Relay the next part of the peer's handshake, if the step allows and records are
    /// whole.
    fn progress(&mut self, now: Instant, id: StreamId) -> Result<(), TerminalFailure> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        let whole = complete_records(&c.inbuf).map_err(|_| TerminalFailure::BadPeerHandshake)?;
        match c.phase {
            Phase::HelloWait | Phase::HelloAgain => {
                let hello = first_handshake(&c.inbuf[..whole], MAX_PROTOCOL_BYTES)
                    .map_err(|_| TerminalFailure::BadPeerHandshake)?;
                match hello {
                    None => Ok(()),
                    Some((HS_CLIENT_HELLO, _)) => {
                        let records: Vec<u8> = c.inbuf.drain(..whole).collect();
                        if matches!(c.phase, Phase::HelloWait) {
                            c.phase = Phase::Starting;
                            let start = self.start_request(id, Some(records));
                            self.ask(now, id, start, None)
                                .map_err(|_| TerminalFailure::ServerUnreachable)
                        } else {
                            self.keygen_again(now, id, records)
                        }
                    }
                    Some(_) => Err(TerminalFailure::BadPeerHandshake),
                }
            }
            Phase::PeerFlight {
                hello_seen: false,
                retried,
            } => {
                let hello = first_handshake(&c.inbuf[..whole], MAX_PROTOCOL_BYTES)
                    .map_err(|_| TerminalFailure::BadPeerHandshake)?;
                match hello {
                    None => Ok(()),
                    Some((HS_SERVER_HELLO, body)) if is_hello_retry(&body) => {
                        if retried {
                            // A second HelloRetryRequest is a protocol violation.
                            return Err(TerminalFailure::BadPeerHandshake);
                        }
                        // S12 → S5: the retry needs a new key share.
                        let records: Vec<u8> = c.inbuf.drain(..whole).collect();
                        self.keygen_again(now, id, records)
                    }
                    Some((HS_SERVER_HELLO, _)) => {
                        c.phase = Phase::PeerFlight {
                            hello_seen: true,
                            retried,
                        };
                        self.progress(now, id)
                    }
                    Some(_) => Err(TerminalFailure::BadPeerHandshake),
                }
            }
            Phase::PeerFlight {
                hello_seen: true, ..
            } => {
                // S325: as many whole records as one request carries.
                let mut take = 0;
                while take < whole {
                    let len =
                        5 + usize::from(u16::from_be_bytes([c.inbuf[take + 3], c.inbuf[take + 4]]));
                    if take + len > MAX_PROTOCOL_BYTES {
                        break;
                    }
                    take += len;
                }
                if take == 0 {
                    return if whole > 0 {
                        // One record larger than a request can carry.
                        Err(TerminalFailure::Overflow)
                    } else {
                        Ok(())
                    };
                }
                let payloads = c.inbuf[..take].to_vec();
                c.phase = Phase::Authenticating { relayed: take };
                self.counters.records_relayed += 1;
                self.ask(
                    now,
                    id,
                    Body::AuthRequest(AuthRequest {
                        first_payload: 0,
                        payloads,
                    }),
                    None,
                )
                .map_err(|_| TerminalFailure::ServerUnreachable)
            }
            _ => Ok(()),
        }
    }

    /// S12 → S5 after a HelloRetryRequest: key generation again, with `records` (the
    /// retry request as a client, the answering ClientHello as a server).
    fn keygen_again(
        &mut self,
        now: Instant,
        id: StreamId,
        records: Vec<u8>,
    ) -> Result<(), TerminalFailure> {
        if let Some(c) = self.conns.get_mut(&id) {
            c.phase = Phase::KeyGen { retried: true };
        }
        let body = Body::KeyGenRequest(KeyGenRequest {
            peer_message: Some(records),
        });
        self.ask(now, id, body, None)
            .map_err(|_| TerminalFailure::ServerUnreachable)
    }

    fn start_request(&self, id: StreamId, peer_message: Option<Vec<u8>>) -> Body {
        let c = &self.conns[&id];
        Body::StartRequest(StartRequest {
            protocol: Protocol::Tls13,
            role: c.role,
            local: c.local,
            remote: c.remote,
            peer_message,
            transforms: self
                .cfg
                .suites
                .iter()
                .map(|s| suite_transform(*s))
                .collect(),
            peer_id: c.name.as_ref().map(|n| n.as_bytes().to_vec()),
        })
    }

    /// Records from the peer for an open connection.
    fn records(&mut self, now: Instant, id: StreamId, data: &[u8]) -> Result<(), TerminalFailure> {
        let max = self.cfg.max_buffered;
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        if c.inbuf.len() + data.len() > max {
            return Err(TerminalFailure::Overflow);
        }
        c.inbuf.extend_from_slice(data);
        // The record layer takes what it has room for (its `max_held`); the rest waits
        // here, bounded by `max_buffered`, until events are taken or the next receive key
        // is installed.
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return Ok(());
            };
            let Phase::Open(layer) = &mut c.phase else {
                return Ok(());
            };
            let n = layer.receive_capacity().min(c.inbuf.len());
            if n == 0 || layer.is_failed() {
                return Ok(());
            }
            let r = layer.receive(&c.inbuf[..n]);
            if r.is_ok() {
                c.inbuf.drain(..n);
            }
            // Events before an error still count (data that arrived intact).
            self.events(now, id)?;
            match r {
                Ok(()) => {}
                Err(e) if e.is_fatal() => return Err(TerminalFailure::Record(e)),
                // Not taken (no room yet): offered again once events free room.
                Err(_) => return Ok(()),
            }
        }
    }

    /// Hand the record layer's events up; relay what goes to the server.
    fn events(&mut self, now: Instant, id: StreamId) -> Result<(), TerminalFailure> {
        let conn = TlsConnId(id);
        let Some(role) = self.conns.get(&id).map(|c| c.role) else {
            return Ok(());
        };
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return Ok(());
            };
            let Phase::Open(layer) = &mut c.phase else {
                return Ok(());
            };
            let Some(e) = layer.poll_event() else {
                return Ok(());
            };
            match e {
                RecordEvent::Data(data) => {
                    let _ = self.out.event(TerminalEvent::Data { conn, data });
                }
                RecordEvent::KeyUpdate { requested } => {
                    let msg = alloc::vec![RELAY_PEER_MESSAGE, 24, 0, 0, 1, u8::from(requested)];
                    self.relay(now, id, RelayKind::PeerKeyUpdate { requested }, msg)
                        .map_err(|_| TerminalFailure::Overflow)?;
                }
                RecordEvent::NewSessionTicket(_) if role == Role::Responder => {
                    // Only a server sends tickets: a client that sends one to us breaks
                    // the protocol.
                    return Err(TerminalFailure::Record(TlsError::UnexpectedHandshake(4)));
                }
                RecordEvent::NewSessionTicket(m) => {
                    let mut msg = Vec::with_capacity(1 + m.len());
                    msg.push(RELAY_PEER_MESSAGE);
                    msg.extend_from_slice(&m);
                    self.relay(now, id, RelayKind::Ticket, msg)
                        .map_err(|_| TerminalFailure::Overflow)?;
                }
                RecordEvent::CloseNotify => {
                    let _ = self.out.event(TerminalEvent::PeerClosed { conn });
                }
                RecordEvent::Alert(a) => return Err(TerminalFailure::PeerAlert(a)),
            }
        }
    }

    /// Send what waited for keys; close if the application asked to.
    fn flush(&mut self, now: Instant, id: StreamId) -> Result<(), TerminalFailure> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        let ready = matches!(&c.phase, Phase::Open(l) if !l.owes_key_update());
        if !ready {
            return Ok(());
        }
        let data = core::mem::take(&mut c.outq);
        let closing = c.closing;
        if !data.is_empty() {
            self.seal_and_send(now, id, &data)
                .map_err(|_| TerminalFailure::Overflow)?;
        }
        if closing {
            let _ = self.finish(now, id);
        }
        Ok(())
    }

    /// Close cleanly: close_notify, the stream, and the server's session.
    fn finish(&mut self, now: Instant, id: StreamId) -> Result<(), Error> {
        let Some(mut c) = self.conns.remove(&id) else {
            return Ok(());
        };
        self.sessions.remove(&c.session);
        if let Phase::Open(layer) = &mut c.phase {
            let mut wire = Vec::new();
            if layer.close(&mut wire).is_ok() {
                self.out.push(Output::StreamSend { id, data: wire })?;
            }
            self.forget(now, &c);
        }
        self.out.push(Output::StreamClose { id })?;
        self.out.event(TerminalEvent::Closed {
            conn: TlsConnId(id),
        })
    }

    /// Tell the server the session is over (its answer is not waited for).
    fn forget(&mut self, now: Instant, c: &Conn) {
        let bytes = KeyxMessage {
            session: c.session,
            seq: c.next_seq,
            body: Body::Relay(Relay {
                data: alloc::vec![RELAY_CLOSED],
            }),
        }
        .encode();
        if let (Ok(bytes), true) = (bytes, self.link.is_open()) {
            let _ = self.link.send(now, &bytes);
            let _ = self.drain_channel(now);
        }
    }

    /// The connection failed: alert if the record layer names one, close the stream,
    /// forget the session.
    fn fail(&mut self, now: Instant, id: StreamId, reason: TerminalFailure) -> Result<(), Error> {
        let Some(mut c) = self.conns.remove(&id) else {
            return Ok(());
        };
        self.sessions.remove(&c.session);
        if let Phase::Open(layer) = &mut c.phase {
            let alert = match &reason {
                TerminalFailure::Record(e) => e.alert(),
                TerminalFailure::SessionLost | TerminalFailure::Overflow => {
                    Some(AlertDescription::InternalError)
                }
                _ => None,
            };
            if let Some(a) = alert {
                let mut wire = Vec::new();
                if layer.seal_alert(a, &mut wire).is_ok() {
                    let _ = self.out.push(Output::StreamSend { id, data: wire });
                }
            }
            self.forget(now, &c);
        }
        let r = self.out.push(Output::StreamClose { id });
        r.and(self.out.event(TerminalEvent::Failed {
            conn: TlsConnId(id),
            reason,
        }))
    }

    fn on_stream(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::StreamAccepted { id, local, remote } => {
                if self.room().is_err() {
                    self.out.push(Output::StreamClose { id })?;
                    return self.room();
                }
                let conn =
                    self.new_conn(now, Role::Responder, remote, local, None, Phase::HelloWait);
                self.conns.insert(id, conn);
                self.out.event(TerminalEvent::Accepted {
                    conn: TlsConnId(id),
                    remote,
                })
            }
            Input::StreamConnected { id, local } => {
                let Some(c) = self.conns.get_mut(&id) else {
                    return Err(Error::UnknownStream(id));
                };
                if !matches!(c.phase, Phase::Connecting) {
                    return Err(Error::UnknownStream(id));
                }
                c.local = local;
                c.phase = Phase::Starting;
                // S321.
                let start = self.start_request(id, None);
                self.ask(now, id, start, None)
            }
            Input::StreamData { id, data } => {
                let Some(c) = self.conns.get_mut(&id) else {
                    return Err(Error::UnknownStream(id));
                };
                let r = if matches!(c.phase, Phase::Open(_)) {
                    self.records(now, id, data)
                } else if c.inbuf.len() + data.len() > self.cfg.max_buffered {
                    Err(TerminalFailure::Overflow)
                } else {
                    c.inbuf.extend_from_slice(data);
                    match c.phase {
                        Phase::HelloWait | Phase::HelloAgain | Phase::PeerFlight { .. } => {
                            self.progress(now, id)
                        }
                        // Kept until the server answers (then relayed or handed to the
                        // record layer).
                        _ => complete_records(&c.inbuf)
                            .map(|_| ())
                            .map_err(|_| TerminalFailure::BadPeerHandshake),
                    }
                };
                match r {
                    Ok(()) => Ok(()),
                    Err(reason) => self.fail(now, id, reason),
                }
            }
            Input::StreamClosed { id } => {
                let Some(c) = self.conns.get_mut(&id) else {
                    return Err(Error::UnknownStream(id));
                };
                let Phase::Open(layer) = &mut c.phase else {
                    return self.fail(now, id, TerminalFailure::PeerClosed);
                };
                let truncated = layer.end_of_stream().is_err();
                let Some(c) = self.conns.remove(&id) else {
                    return Ok(());
                };
                self.sessions.remove(&c.session);
                self.forget(now, &c);
                let conn = TlsConnId(id);
                self.out.event(if truncated {
                    TerminalEvent::Truncated { conn }
                } else {
                    TerminalEvent::Closed { conn }
                })
            }
            _ => Ok(()),
        }
    }

    fn timers(&self) -> Vec<(Timer, Instant)> {
        let mut t = Vec::new();
        for (id, c) in &self.conns {
            if let Some(at) = c.deadline {
                t.push((Timer::Handshake(*id), at));
            }
            if let Some(a) = &c.asked {
                t.push((Timer::Request(*id), a.deadline));
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
            Timer::Handshake(id) => {
                if self
                    .conns
                    .get(&id)
                    .and_then(|c| c.deadline)
                    .is_some_and(|d| d <= now)
                {
                    return self.fail(now, id, TerminalFailure::Timeout);
                }
                Ok(())
            }
            Timer::Request(id) => {
                let late = self
                    .conns
                    .get(&id)
                    .and_then(|c| c.asked.as_ref())
                    .is_some_and(|a| a.deadline <= now);
                if late {
                    return self.fail(now, id, TerminalFailure::ServerUnreachable);
                }
                Ok(())
            }
            Timer::Channel => {
                self.link.handle_channel_timeout(now);
                self.drain_channel(now)
            }
            Timer::Reconnect => {
                if self.link.reconnect_at().is_some_and(|at| at <= now) {
                    return self.reconnect(now);
                }
                Ok(())
            }
        }
    }

    fn is_channel_stream(id: StreamId) -> bool {
        !(id.is_outbound() && id.to_u64() & TLS_STREAMS != 0) && id.is_outbound()
    }
}

impl Actor for Terminal {
    type Event = TerminalEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        let id = match input {
            Input::StreamConnected { id, .. }
            | Input::StreamData { id, .. }
            | Input::StreamClosed { id } => Some(id),
            _ => None,
        };
        match input {
            _ if id.is_some_and(Self::is_channel_stream) => {
                let r = self.link.handle_input(now, input);
                let drained = self.drain_channel(now);
                r.and(drained)
            }
            Input::StreamAccepted { .. }
            | Input::StreamConnected { .. }
            | Input::StreamData { .. }
            | Input::StreamClosed { .. } => self.on_stream(now, input),
            Input::Datagram { .. } | Input::Packet { .. } => {
                Err(crate::channel::ChannelError::NotStreamInput.into())
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        for t in due(self.timers(), now) {
            // A full outbox is counted as lost and reported by the driver's next call.
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

#![no_main]
//! Seed 004's delegating terminal (`keyx::ike::Terminal`, S1-S19), configured as
//! tests/common/keyx.rs configures it, in a world the fuzz target drives: two IKE peers
//! (deputy's initiator, which reaches the terminal as in the seed's Fig. 12, and deputy's
//! responder, which the terminal initiates toward), and the substitution server played
//! here: a real channel server connection with the pre-arranged PSK, behind it the real
//! `Dispatcher<IkeSubstitute>`.
//!
//! The terminal's channel is encrypted, so arbitrary stream bytes only reach the channel
//! layer; the target reaches the terminal's delegation handling (`on_server`) by speaking
//! the channel itself, and sending through it, for each delegation request the terminal
//! makes, the server's genuine answer, that answer with a byte flipped (sealed bodies no
//! longer open), an arbitrary message re-addressed to the request's session and sequence
//! number, arbitrary plaintext, or a stale answer again. Alongside: the peers' datagrams
//! (genuine, flipped, or arbitrary, on ports 500 and 4500, from the peers or elsewhere),
//! raw stream bytes, the stream closing, refused connects, and time.
//!
//! Invariants: no panic; the outbox drains after every call; the terminal's exchanges and
//! IKE SAs stay within their configured bounds at every step.

#[path = "keyx_common.rs"]
mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{CHANNEL_PSK, PEER_ID, TERMINALS, addr, delegation_key, dispatcher, peer_ike};
use deputy::channel::{ClientConfig, Connection, Psk, ServerConfig};
use deputy::ikev2::{Identity, Initiator, InitiatorConfig, Responder, ResponderConfig};
use deputy::ipsec::{Action, DataPlane, DataPlaneConfig, Direction as Dir, Policy, Selector};
use deputy::keyx::ike::{IkeSubstitute, Terminal, TerminalConfig};
use deputy::keyx::{Bounds, Dispatcher, Message};
use deputy::wire::Limits;
use deputy::{Actor, Input, Instant, Output, StreamId, UnixTime};
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const TERMINAL: &str = "192.0.2.20:500";
const SERVER: &str = "192.0.2.30:7040";
/// deputy's initiator (reaches the terminal).
const INITIATOR: &str = "192.0.2.10:500";
/// deputy's responder (the terminal initiates toward it).
const RESPONDER: &str = "192.0.2.11:500";
const ANCHOR: UnixTime = UnixTime(1_800_000_000);
const MAX_EXCHANGES: usize = 3;
const MAX_IKE_SAS: usize = 4;

type Datagram = (SocketAddr, SocketAddr, Vec<u8>);

struct World {
    now: Instant,
    terminal: Terminal,
    /// The stream the terminal opened to the server, once accepted.
    stream: Option<StreamId>,
    /// A connect the terminal asked for and the world has not answered yet.
    connecting: Option<StreamId>,
    /// Which connects are refused (bit k: the k-th).
    refuse: u8,
    connects: u32,
    server_cfg: Arc<ServerConfig>,
    conn: Option<Connection>,
    conn_rng: ChaCha20Rng,
    /// Server-to-terminal stream bytes not delivered yet.
    to_stream: Vec<u8>,
    dispatcher: Dispatcher<IkeSubstitute>,
    /// Delegation requests the server received, in plaintext, not answered yet.
    requests: VecDeque<Vec<u8>>,
    last_answer: Option<Vec<u8>>,
    initiator: Initiator,
    initiator_started: bool,
    responder: Responder,
    /// Datagrams from the terminal to the peers, and from the peers to the terminal.
    to_peers: VecDeque<Datagram>,
    to_terminal: VecDeque<Datagram>,
}

fn terminal() -> Terminal {
    let psk = Psk::new(TERMINALS[0], CHANNEL_PSK).expect("psk");
    let channel = Arc::new(ClientConfig::with_psk(psk, ANCHOR));
    let mut cfg = TerminalConfig::new(addr(TERMINAL), addr(SERVER), channel, delegation_key());
    cfg.max_exchanges = MAX_EXCHANGES;
    cfg.max_ike_sas = MAX_IKE_SAS;
    cfg.cookie_threshold = 2;
    let mut plane = DataPlane::new(
        DataPlaneConfig::default(),
        Box::new(ChaCha20Rng::seed_from_u64(0x91a)),
    )
    .expect("data plane");
    plane
        .add_policy(Policy::new(
            Selector::parse("0.0.0.0/0", "0.0.0.0/0").expect("selector"),
            Dir::Both,
            Action::Protect,
        ))
        .expect("policy");
    Terminal::new(
        cfg,
        plane,
        Box::new(ChaCha20Rng::seed_from_u64(0x7e1)),
        Box::new(ChaCha20Rng::seed_from_u64(0x7e2)),
        Instant::ZERO,
    )
    .expect("terminal")
}

impl World {
    fn new(refuse: u8) -> World {
        let psk = Psk::new(TERMINALS[0], CHANNEL_PSK).expect("psk");
        let mut rc = ResponderConfig::new(peer_ike());
        rc.cookie_threshold = 4;
        World {
            now: Instant::ZERO,
            terminal: terminal(),
            stream: None,
            connecting: None,
            refuse,
            connects: 0,
            server_cfg: Arc::new(ServerConfig::with_psks([psk], ANCHOR).expect("one psk")),
            conn: None,
            conn_rng: ChaCha20Rng::seed_from_u64(0x5e1),
            to_stream: Vec::new(),
            dispatcher: dispatcher(Bounds::default(), 0x5e2),
            requests: VecDeque::new(),
            last_answer: None,
            initiator: Initiator::new(
                InitiatorConfig {
                    ike: peer_ike(),
                    local: addr(INITIATOR),
                    remote: addr(TERMINAL),
                },
                Box::new(ChaCha20Rng::seed_from_u64(0x1417)),
            )
            .expect("initiator"),
            initiator_started: false,
            responder: Responder::new(
                rc,
                Box::new(ChaCha20Rng::seed_from_u64(0x7e5)),
                Instant::ZERO,
            )
            .expect("responder"),
            to_peers: VecDeque::new(),
            to_terminal: VecDeque::new(),
        }
    }

    /// Drain the terminal's outputs and carry them out; then check the bounds.
    fn drain(&mut self) {
        let mut n = 0;
        while let Some(o) = self.terminal.poll_output() {
            n += 1;
            assert!(n < 100_000, "the outbox does not drain");
            match o {
                Output::Transmit(t) => self.to_peers.push_back((t.from, t.to, t.data)),
                Output::Connect { id, remote, .. } => {
                    assert_eq!(remote, addr(SERVER), "the terminal connects to its server");
                    self.connecting = Some(id);
                }
                Output::StreamSend { id, data } => {
                    if self.stream == Some(id) {
                        self.server_feed(&data);
                    }
                }
                Output::StreamClose { id } => {
                    if self.stream == Some(id) {
                        self.stream = None;
                        self.conn = None;
                        self.to_stream.clear();
                    }
                }
                Output::Event(_) | Output::Lost { .. } => {}
                Output::Packet { .. } => panic!("the terminal emits no raw packets"),
            }
        }
        self.check();
    }

    fn check(&self) {
        assert!(
            self.terminal.exchange_count() <= MAX_EXCHANGES,
            "exchange bound"
        );
        assert!(self.terminal.ike_sa_count() <= MAX_IKE_SAS, "IKE SA bound");
    }

    /// Stream bytes arrive at the server's channel connection.
    fn server_feed(&mut self, data: &[u8]) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let _ = conn.feed(self.now, data, &mut self.conn_rng);
        while let Some(m) = conn.take_received() {
            self.requests.push_back(m);
        }
        self.to_stream.extend(conn.take_outgoing());
    }

    /// The server sends one delegation message (plaintext) through its channel.
    fn server_send(&mut self, msg: &[u8]) {
        if let Some(conn) = self.conn.as_mut() {
            let _ = conn.send(msg);
            self.to_stream.extend(conn.take_outgoing());
        }
    }

    fn input(&mut self, input: Input<'_>) {
        let _ = self.terminal.handle_input(self.now, input);
        self.drain();
    }

    /// Answer the pending connect, deliver server bytes, until nothing moves.
    fn settle(&mut self) {
        for _ in 0..16 {
            let mut moved = false;
            if let Some(id) = self.connecting.take() {
                moved = true;
                let refused = self.connects < 8 && self.refuse & (1 << self.connects) != 0;
                self.connects += 1;
                if refused {
                    self.input(Input::StreamClosed { id });
                } else {
                    self.stream = Some(id);
                    self.conn = Some(Connection::server(self.server_cfg.clone(), self.now));
                    self.to_stream.clear();
                    self.input(Input::StreamConnected {
                        id,
                        local: addr("192.0.2.20:40000"),
                    });
                }
            }
            if !self.to_stream.is_empty() {
                let data = std::mem::take(&mut self.to_stream);
                if let Some(id) = self.stream {
                    moved = true;
                    self.input(Input::StreamData { id, data: &data });
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// The server's genuine answer to the next request.
    fn genuine(&mut self) -> Option<Vec<u8>> {
        let req = self.requests.pop_front()?;
        let answer = self
            .dispatcher
            .handle(self.now, &TERMINALS[0].into(), &req)?;
        self.last_answer = Some(answer.clone());
        Some(answer)
    }

    /// One round of datagrams: the terminal's to the peers, the peers' to the terminal.
    fn peer_round(&mut self, flip: Option<(usize, u8)>) {
        while let Some((from, to, data)) = self.to_peers.pop_front() {
            let input = Input::Datagram {
                from,
                to,
                data: &data,
            };
            if to.ip() == addr(INITIATOR).ip() {
                let _ = self.initiator.handle_input(self.now, input);
            } else if to.ip() == addr(RESPONDER).ip() {
                let _ = self.responder.handle_input(self.now, input);
            }
        }
        self.collect_peers();
        let mut flip = flip;
        while let Some((from, to, mut data)) = self.to_terminal.pop_front() {
            if let Some((at, x)) = flip.take()
                && !data.is_empty()
            {
                let i = at % data.len();
                data[i] ^= x.max(1);
            }
            self.input(Input::Datagram {
                from,
                to,
                data: &data,
            });
        }
    }

    fn collect_peers(&mut self) {
        while let Some(o) = self.initiator.poll_output() {
            if let Output::Transmit(t) = o {
                self.to_terminal.push_back((t.from, t.to, t.data));
            }
        }
        while let Some(o) = self.responder.poll_output() {
            if let Output::Transmit(t) = o {
                self.to_terminal.push_back((t.from, t.to, t.data));
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.terminal.poll_timeout().is_some_and(|t| t <= self.now) {
            self.terminal.handle_timeout(self.now);
            self.drain();
        }
        if self.initiator.poll_timeout().is_some_and(|t| t <= self.now) {
            self.initiator.handle_timeout(self.now);
        }
        if self.responder.poll_timeout().is_some_and(|t| t <= self.now) {
            self.responder.handle_timeout(self.now);
        }
        self.collect_peers();
        if let Some(conn) = self.conn.as_mut() {
            let _ = conn.handle_timeout(self.now);
            self.to_stream.extend(conn.take_outgoing());
        }
        self.dispatcher.handle_timeout(self.now);
    }
}

/// Take `n` bytes (or what is left).
fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(input.len());
    let (head, tail) = input.split_at(n);
    *input = tail;
    head
}

fn byte(input: &mut &[u8]) -> u8 {
    take(input, 1).first().copied().unwrap_or(0)
}

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let refuse = byte(&mut input);
    let mut w = World::new(refuse);
    let limits = Limits::default();
    let mut ops = 0;
    while !input.is_empty() && ops < 256 {
        ops += 1;
        match byte(&mut input) % 14 {
            // The peers' datagrams, one round.
            0 => w.peer_round(None),
            // The same, one datagram to the terminal with a byte flipped.
            1 => {
                let at = usize::from(byte(&mut input));
                let x = byte(&mut input);
                w.peer_round(Some((at, x)));
            }
            // An arbitrary datagram: [flags, length, bytes].
            2 => {
                let flags = byte(&mut input);
                let len = usize::from(byte(&mut input));
                let bytes = take(&mut input, len);
                let port = if flags & 1 == 0 { 500 } else { 4500 };
                let from = match (flags >> 1) % 3 {
                    0 => addr(INITIATOR),
                    1 => addr(RESPONDER),
                    _ => addr("203.0.113.9:500"),
                };
                let from = SocketAddr::new(from.ip(), port);
                let to = SocketAddr::new(addr(TERMINAL).ip(), port);
                w.input(Input::Datagram {
                    from,
                    to,
                    data: bytes,
                });
            }
            // The next request answered genuinely.
            3 => {
                if let Some(a) = w.genuine() {
                    w.server_send(&a);
                }
            }
            // Answered genuinely, with a byte flipped: [position, xor].
            4 => {
                let at = usize::from(byte(&mut input));
                let x = byte(&mut input).max(1);
                if let Some(mut a) = w.genuine() {
                    let i = at % a.len().max(1);
                    if let Some(b) = a.get_mut(i) {
                        *b ^= x;
                    }
                    w.server_send(&a);
                }
            }
            // Answered with arbitrary bytes: re-addressed to the request's session and
            // sequence number if they decode as a delegation message, else sent as they
            // are: [length (u16), bytes].
            5 => {
                let len = usize::from(u16::from_be_bytes([byte(&mut input), byte(&mut input)]));
                let bytes = take(&mut input, len);
                let req = w
                    .requests
                    .pop_front()
                    .and_then(|r| Message::decode(&r, &limits).ok());
                let msg = match (Message::decode(bytes, &limits), req) {
                    (Ok(mut m), Some(r)) => {
                        m.session = r.session;
                        m.seq = r.seq;
                        m.encode().unwrap_or_else(|_| bytes.to_vec())
                    }
                    _ => bytes.to_vec(),
                };
                w.server_send(&msg);
            }
            // The last answer again (stale or duplicated).
            6 => {
                if let Some(a) = w.last_answer.clone() {
                    w.server_send(&a);
                }
            }
            // Raw bytes on the stream (the channel layer): [length, bytes].
            7 => {
                let len = usize::from(byte(&mut input));
                let bytes = take(&mut input, len);
                if let Some(id) = w.stream {
                    w.input(Input::StreamData { id, data: bytes });
                }
            }
            // The stream goes away.
            8 => {
                if let Some(id) = w.stream.take() {
                    w.conn = None;
                    w.to_stream.clear();
                    w.input(Input::StreamClosed { id });
                }
            }
            // Time: [delay in 250 ms steps].
            9 => {
                let d = u64::from(byte(&mut input));
                w.advance(Duration::from_millis(d * 250));
            }
            // The terminal initiates toward the responder (peer.example) or toward someone
            // the policy does not allow.
            10 => {
                let id = if byte(&mut input) & 1 == 0 {
                    Identity::Fqdn(PEER_ID.into())
                } else {
                    Identity::Fqdn("stranger.example".into())
                };
                let _ = w.terminal.initiate(w.now, addr(RESPONDER), id);
                w.drain();
            }
            // The peer initiates toward the terminal (the seed's Fig. 12).
            11 => {
                if !w.initiator_started {
                    w.initiator_started = true;
                    let _ = w.initiator.start(w.now);
                    w.collect_peers();
                }
            }
            // The server drops the next request.
            12 => {
                w.requests.pop_front();
            }
            // Everything genuinely for a few rounds (fast-forward to deep states).
            _ => {
                for _ in 0..6 {
                    while let Some(a) = w.genuine() {
                        w.server_send(&a);
                        w.settle();
                    }
                    w.peer_round(None);
                    w.settle();
                }
            }
        }
        w.settle();
    }
    // Let every deadline pass: exchanges end, bounds hold.
    for _ in 0..8 {
        w.advance(Duration::from_secs(40));
        w.settle();
    }
    w.check();
});

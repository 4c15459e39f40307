#![no_main]
//! Seed 001's inline key-exchange proxy (`keyx::inline::InlineProxy`) with small bounds,
//! two terminals provisioned in its secure store and bound by hand (terminal 1 at
//! 198.51.100.10, a real `keyx::ikeless::Terminal`; terminal 2 at .11, played by the
//! target), and two IKEv2 peers on the Internet side (deputy's initiator, which starts
//! toward terminal 1 as in Fig. 3, and deputy's responder, which the proxy negotiates
//! with when a terminal starts, Fig. 4). The input spells a program: raw packets on either
//! interface (or on one the proxy does not have); UDP datagrams wrapped in a valid IPv4
//! header on ports 500 and 4500 (behind the non-ESP marker or not) toward the terminals
//! from the peers and elsewhere, and from the terminal side toward the peers; key-transfer
//! messages from the terminal side sealed with the right key (or another) as
//! `transfer::Transfer` encodes them — announces echoing the proxy's latest solicit or not,
//! with SAs held by other means, triggers for the sender's traffic or someone else's, acks
//! of the proxy's latest message or any — under the next, the same or any sequence
//! number; sealed bodies of arbitrary plaintext; the terminal's application sending (held,
//! then a genuine trigger); the world's packets delivered a round at a time, one of them
//! with a byte flipped, or until quiet; recorded packets replayed, flipped, on either
//! side; the secure store pulled out and put back, flushes, unbinds and binds; and time.
//!
//! Invariants: no panic; the outbox drains after every call; the SA store stays within its
//! bound; no key-transfer message ever leaves on the Internet side.

#[path = "inline_common.rs"]
mod common;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{
    Bytes, LAN_OTHER, PEER_I, PEER_R, STRANGER, T1, T2, child, ike, ip, key, ping, sealed_raw, udp,
};
use deputy::ikev2::{Initiator, InitiatorConfig, Responder, ResponderConfig};
use deputy::ipsec::{Action, Direction, Policy, PortRange, Selector};
use deputy::keyx::ikeless::Terminal;
use deputy::keyx::inline::{InlineProxy, MemoryStore, ProxyConfig, TerminalSecrets};
use deputy::keyx::transfer::{self, Announce, Envelope, NONCE_LEN, PORT, Service, Transfer};
use deputy::{Actor, IfaceId, Input, Instant, Output};
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const INTERNET: IfaceId = IfaceId(0);
const LAN: IfaceId = IfaceId(1);
const MAX_SAS: usize = 4;
/// Terminal 2's boot nonce (the target plays it).
const BOOT2: [u8; NONCE_LEN] = [2; NONCE_LEN];

fn proxy(clear_start: bool) -> InlineProxy {
    let mut cfg = ProxyConfig::new(INTERNET, LAN);
    cfg.bindings = vec![(ip(T1), 1), (ip(T2), 2)];
    cfg.policy = vec![
        // S1: the stranger's UDP toward the LAN is discarded (500 included).
        Policy::new(
            Selector::parse(&format!("{STRANGER}/32"), "198.51.100.0/24")
                .expect("selector")
                .protocol(17),
            Direction::Inbound,
            Action::Discard,
        ),
        // S11: the terminals' UDP to port 9 is discarded.
        Policy::new(
            Selector::parse("198.51.100.0/24", "0.0.0.0/0")
                .expect("selector")
                .protocol(17)
                .dst_ports(PortRange::single(9)),
            Direction::Outbound,
            Action::Discard,
        ),
        // ICMP between the terminals and the peers must travel in ESP.
        Policy::new(
            Selector::parse("198.51.100.0/24", "192.0.2.0/29")
                .expect("selector")
                .protocol(1),
            Direction::Outbound,
            Action::Protect,
        ),
    ];
    cfg.clear_start = clear_start;
    cfg.max_addresses = 4;
    cfg.max_learned = 2;
    cfg.max_sas = MAX_SAS;
    cfg.max_negotiations = 2;
    cfg.max_negotiations_per_terminal = 2;
    cfg.max_pushes_per_terminal = 3;
    cfg.retry = common::retry();
    cfg.replay_window = 32;
    cfg.outbox_bound = 512;
    let mut store = MemoryStore::new(4);
    for id in [1, 2] {
        store
            .insert(
                id,
                TerminalSecrets {
                    delegation_key: key(id),
                    ike: ike(&format!("terminal{id}.example")),
                },
            )
            .expect("provision");
    }
    InlineProxy::new(cfg, store, Box::new(ChaCha20Rng::seed_from_u64(0x9a0))).expect("proxy")
}

struct World {
    now: Instant,
    proxy: InlineProxy,
    terminal: Terminal,
    initiator: Initiator,
    initiator_started: bool,
    responder: Responder,
    to_proxy: VecDeque<(IfaceId, Vec<u8>)>,
    to_terminal: VecDeque<Vec<u8>>,
    to_internet: VecDeque<Vec<u8>>,
    /// Packets the proxy received (with their interface) or sent (with the side they
    /// came from: the Internet side's toward the LAN), for replays.
    recorded: VecDeque<(IfaceId, Vec<u8>)>,
    /// The latest solicit challenge and proxy sequence number toward each LAN address.
    challenges: BTreeMap<IpAddr, [u8; NONCE_LEN]>,
    proxy_seq: BTreeMap<IpAddr, u32>,
    /// The sequence number of the target's own terminal-side messages.
    seq: u32,
    rng: ChaCha20Rng,
}

impl World {
    fn new(flags: u8) -> World {
        World {
            now: Instant::ZERO,
            proxy: proxy(flags & 1 == 1),
            terminal: common::terminal(1, T1, flags & 2 == 2, 0x7e1),
            initiator: Initiator::new(
                InitiatorConfig {
                    ike: ike("peer-i.example"),
                    local: SocketAddr::new(ip(PEER_I), PORT),
                    remote: SocketAddr::new(ip(T1), PORT),
                },
                Box::new(ChaCha20Rng::seed_from_u64(0x1417)),
            )
            .expect("initiator"),
            initiator_started: false,
            responder: Responder::new(
                ResponderConfig::new(ike("peer-r.example")),
                Box::new(ChaCha20Rng::seed_from_u64(0x7e5)),
                Instant::ZERO,
            )
            .expect("responder"),
            to_proxy: VecDeque::new(),
            to_terminal: VecDeque::new(),
            to_internet: VecDeque::new(),
            recorded: VecDeque::new(),
            challenges: BTreeMap::new(),
            proxy_seq: BTreeMap::new(),
            seq: 0,
            rng: ChaCha20Rng::seed_from_u64(0x5ea1),
        }
    }

    fn record(&mut self, iface: IfaceId, data: &[u8]) {
        if self.recorded.len() >= 32 {
            self.recorded.pop_front();
        }
        self.recorded.push_back((iface, data.to_vec()));
    }

    /// One packet into the proxy; its outputs queued for the terminal and the peers.
    fn into_proxy(&mut self, iface: IfaceId, data: &[u8]) {
        self.record(iface, data);
        let _ = self
            .proxy
            .handle_input(self.now, Input::Packet { iface, data });
        self.drain_proxy();
    }

    fn drain_proxy(&mut self) {
        let mut n = 0;
        while let Some(o) = self.proxy.poll_output() {
            n += 1;
            assert!(n < 10_000, "the outbox does not drain");
            match o {
                Output::Packet { iface, data } if iface == INTERNET => {
                    self.check_internet(&data);
                    self.record(LAN, &data);
                    self.to_internet.push_back(data);
                }
                Output::Packet { iface, data } => {
                    assert_eq!(iface, LAN, "the proxy has two interfaces");
                    self.note_lan(&data);
                    self.record(INTERNET, &data);
                    self.to_terminal.push_back(data);
                }
                Output::Event(_) | Output::Lost { .. } => {}
                other => panic!("no streams were opened: {other:?}"),
            }
        }
        assert!(self.proxy.stored_sas().count() <= MAX_SAS, "SA store bound");
    }

    /// No key-transfer message leaves on the Internet side.
    fn check_internet(&self, data: &[u8]) {
        let Ok(info) = deputy::ipsec::parse_packet(data) else {
            return;
        };
        if info.is_fragment || info.protocol != 17 || info.dst_port != Some(PORT) {
            return;
        }
        if let Some(payload) = data.get(info.header_len + 8..info.total_len) {
            assert!(
                !transfer::is_marked(payload),
                "a key transfer left to the Internet"
            );
        }
    }

    /// Note the proxy's solicit challenges and sequence numbers toward each address.
    fn note_lan(&mut self, data: &[u8]) {
        let Ok(info) = deputy::ipsec::parse_packet(data) else {
            return;
        };
        let Some(payload) = data.get(info.header_len + 8..info.total_len) else {
            return;
        };
        let Ok(env) = Envelope::parse(payload) else {
            return;
        };
        self.proxy_seq.insert(info.dst, env.seq);
        if let Ok(Transfer::Solicit { challenge }) = env.open(&key(0)) {
            self.challenges.insert(info.dst, challenge);
        }
    }

    fn drain_terminal(&mut self) {
        let mut n = 0;
        while let Some(o) = self.terminal.poll_output() {
            n += 1;
            assert!(n < 10_000, "the terminal's outbox does not drain");
            if let Output::Packet { data, .. } = o {
                self.to_proxy.push_back((LAN, data));
            }
        }
    }

    fn drain_peers(&mut self) {
        let mut out = Vec::new();
        while let Some(o) = self.initiator.poll_output() {
            out.push(o);
        }
        while let Some(o) = self.responder.poll_output() {
            out.push(o);
        }
        for o in out {
            if let Output::Transmit(t) = o {
                self.to_proxy
                    .push_back((INTERNET, udp(t.from, t.to, &t.data)));
            }
        }
    }

    /// One round: everything queued for the proxy, then for the terminal and the peers.
    fn round(&mut self, flip: Option<(usize, u8)>) {
        let mut flip = flip;
        while let Some((iface, mut data)) = self.to_proxy.pop_front() {
            if let Some((at, x)) = flip.take()
                && !data.is_empty()
            {
                let i = at % data.len();
                data[i] ^= x.max(1);
            }
            self.into_proxy(iface, &data);
        }
        while let Some(data) = self.to_terminal.pop_front() {
            let to_t1 = deputy::ipsec::parse_packet(&data).is_ok_and(|i| i.dst == ip(T1));
            if to_t1 {
                let _ = self.terminal.handle_input(
                    self.now,
                    Input::Packet {
                        iface: IfaceId(0),
                        data: &data,
                    },
                );
            }
        }
        self.drain_terminal();
        while let Some(data) = self.to_internet.pop_front() {
            let Ok(info) = deputy::ipsec::parse_packet(&data) else {
                continue;
            };
            let (Some(sport), Some(dport)) = (info.src_port, info.dst_port) else {
                continue;
            };
            let Some(payload) = data.get(info.header_len + 8..info.total_len) else {
                continue;
            };
            let input = Input::Datagram {
                from: SocketAddr::new(info.src, sport),
                to: SocketAddr::new(info.dst, dport),
                data: payload,
            };
            if info.protocol != 17 {
                continue;
            }
            if info.dst == ip(PEER_I) {
                let _ = self.initiator.handle_input(self.now, input);
            } else if info.dst == ip(PEER_R) {
                let _ = self.responder.handle_input(self.now, input);
            }
        }
        self.drain_peers();
    }

    fn quiet(&self) -> bool {
        self.to_proxy.is_empty() && self.to_terminal.is_empty() && self.to_internet.is_empty()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.proxy.poll_timeout().is_some_and(|t| t <= self.now) {
            self.proxy.handle_timeout(self.now);
            self.drain_proxy();
        }
        if self.terminal.poll_timeout().is_some_and(|t| t <= self.now) {
            self.terminal.handle_timeout(self.now);
            self.drain_terminal();
        }
        if self.initiator.poll_timeout().is_some_and(|t| t <= self.now) {
            self.initiator.handle_timeout(self.now);
        }
        if self.responder.poll_timeout().is_some_and(|t| t <= self.now) {
            self.responder.handle_timeout(self.now);
        }
        self.drain_peers();
    }

    /// The sequence number of a terminal-side message: [mode, …].
    fn seq(&mut self, b: &mut Bytes) -> u32 {
        match b.u8() % 4 {
            0 | 1 => {
                self.seq = self.seq.wrapping_add(1);
                self.seq
            }
            2 => self.seq,
            _ => b.u32(),
        }
    }

    /// A key-transfer message from the terminal side: [who, kind, …, seq mode, to].
    fn transfer(&mut self, b: &mut Bytes) {
        // Who sends: terminal 1 or 2 with its key, one claiming the other's id, or a
        // host that is no terminal.
        let (from, id, k) = match b.u8() % 6 {
            0 | 1 => (T1, 1, key(1)),
            2 | 3 => (T2, 2, key(2)),
            4 => (T1, 2, key(2)),
            _ => (LAN_OTHER, 1, key(1)),
        };
        let boot = match (b.u8() % 5, id) {
            (0, _) => b.array(),
            (_, 1) => self.terminal.boot_nonce(),
            _ => BOOT2,
        };
        let m = match b.u8() % 3 {
            0 => {
                let echo = match b.u8() % 4 {
                    0 => None,
                    1 => Some(b.array()),
                    _ => self.challenges.get(&ip(from)).copied(),
                };
                let addresses = match b.u8() % 4 {
                    0 => vec![],
                    1 => vec![ip(from), ip(LAN_OTHER)],
                    2 => vec![IpAddr::from(b.array::<4>())],
                    _ => vec![ip(from)],
                };
                let services = (0..b.u8() % 3)
                    .map(|_| Service {
                        protocol: b.u8(),
                        port: b.u16(),
                    })
                    .collect();
                let held = (0..b.u8() % 3)
                    .filter_map(|_| child(b, from, PEER_R))
                    .filter(|sa| sa.validate().is_ok())
                    .collect();
                Transfer::Announce(Announce {
                    boot,
                    echo,
                    addresses,
                    services,
                    suites: b.chunk().to_vec(),
                    held,
                })
            }
            1 => {
                let src = if b.u8() % 4 == 0 { LAN_OTHER } else { from };
                let dst = [PEER_R, PEER_I, STRANGER][usize::from(b.u8() % 3)];
                common::trigger(b, boot, src, dst)
            }
            _ => common::ack(b, boot, self.proxy_seq.get(&ip(from)).copied()),
        };
        let seq = self.seq(b);
        let to = [PEER_R, PEER_I][usize::from(b.u8() % 2)];
        if let Ok(payload) = m.encode(id, seq, &k, &mut self.rng) {
            let p = udp(
                SocketAddr::new(ip(from), PORT),
                SocketAddr::new(ip(to), PORT),
                &payload,
            );
            self.into_proxy(LAN, &p);
        }
    }
}

/// A port: IKE's, NAT-T's, the discarded 9, or any.
fn port(b: &mut Bytes, sel: u8) -> u16 {
    match sel % 4 {
        0 => PORT,
        1 => 4500,
        2 => 9,
        _ => b.u16(),
    }
}

/// A UDP datagram from one of `froms` to one of `tos` in a valid IPv4 header, its payload
/// behind the non-ESP marker or not: [flags, ports, length, bytes].
fn datagram(b: &mut Bytes, froms: [&str; 3], tos: [&str; 3]) -> Vec<u8> {
    let flags = b.u8();
    let from = froms[usize::from(flags % 3)];
    let to = tos[usize::from((flags >> 2) % 3)];
    let sport = port(b, flags >> 4);
    let dport = port(b, flags >> 6);
    let mut body = Vec::new();
    if flags & 2 == 2 {
        body.extend_from_slice(&[0; 4]);
    }
    body.extend_from_slice(b.chunk());
    udp(
        SocketAddr::new(ip(from), sport),
        SocketAddr::new(ip(to), dport),
        &body,
    )
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mut w = World::new(b.u8());
    w.drain_proxy();
    w.drain_terminal();
    let mut ops = 0;
    while !b.is_empty() && ops < 128 {
        ops += 1;
        match b.u8() % 14 {
            // A raw packet on either interface, or one the proxy does not have.
            0 => {
                let iface = IfaceId(u32::from(b.u8() % 3));
                let p = b.chunk();
                w.into_proxy(iface, p);
            }
            // A datagram from the Internet toward the LAN: [flags, bytes].
            1 => {
                let p = datagram(&mut b, [PEER_I, PEER_R, STRANGER], [T1, T2, LAN_OTHER]);
                w.into_proxy(INTERNET, &p);
            }
            // A datagram from the LAN toward the Internet: [flags, bytes].
            2 => {
                let p = datagram(&mut b, [T1, T2, LAN_OTHER], [PEER_R, PEER_I, STRANGER]);
                w.into_proxy(LAN, &p);
            }
            // A sealed key-transfer message from the terminal side.
            3 => w.transfer(&mut b),
            // A sealed body of arbitrary plaintext from terminal 1.
            4 => {
                let ty = [
                    transfer::msg::ANNOUNCE,
                    transfer::msg::TRIGGER,
                    transfer::msg::ACK,
                    transfer::msg::INSTALL,
                ][usize::from(b.u8() % 4)];
                let seq = w.seq(&mut b);
                let payload = sealed_raw(&mut b, ty, seq, w.terminal.boot_nonce());
                let p = udp(
                    SocketAddr::new(ip(T1), PORT),
                    SocketAddr::new(ip(PEER_R), PORT),
                    &payload,
                );
                w.into_proxy(LAN, &p);
            }
            // Terminal 1's application sends (held: a genuine trigger).
            5 => {
                let to = [PEER_R, PEER_I, STRANGER][usize::from(b.u8() % 3)];
                let seq = b.u16();
                let _ = w.terminal.send(w.now, &ping(T1, to, seq));
                w.drain_terminal();
            }
            // The peer starts IKE toward terminal 1 (Fig. 3).
            6 => {
                if !w.initiator_started {
                    w.initiator_started = true;
                    let _ = w.initiator.start(w.now);
                    w.drain_peers();
                }
            }
            // The world's packets, one round.
            7 => w.round(None),
            // One round, one packet toward the proxy flipped: [position, xor].
            8 => {
                let at = usize::from(b.u16());
                let x = b.u8();
                w.round(Some((at, x)));
            }
            // Rounds until quiet.
            9 => {
                for _ in 0..24 {
                    if w.quiet() {
                        break;
                    }
                    w.round(None);
                }
            }
            // Time: [steps of 250 ms].
            10 => {
                let d = u64::from(b.u8());
                w.advance(Duration::from_millis(d * 250));
            }
            // A recorded packet again, maybe flipped, on its side or the other.
            11 => {
                let i = usize::from(b.u8());
                let (at, x) = (usize::from(b.u16()), b.u8());
                let other = b.u8() % 4 == 0;
                let n = w.recorded.len();
                if let Some((iface, mut p)) = w.recorded.get(i % n.max(1)).cloned() {
                    if x != 0 && !p.is_empty() {
                        let at = at % p.len();
                        p[at] ^= x;
                    }
                    let iface = match (other, iface == INTERNET) {
                        (false, _) => iface,
                        (true, true) => LAN,
                        (true, false) => INTERNET,
                    };
                    w.into_proxy(iface, &p);
                }
            }
            // The stores change.
            12 => {
                let now = w.now;
                match b.u8() % 6 {
                    0 => {
                        w.proxy.store_mut().set_present(false);
                        let _ = w.proxy.store_changed(now);
                    }
                    1 => {
                        w.proxy.store_mut().set_present(true);
                        let _ = w.proxy.store_changed(now);
                    }
                    2 => {
                        let _ = w.proxy.flush(now, 1);
                    }
                    3 => w.proxy.unbind(2),
                    4 => {
                        let _ = w.proxy.bind(2, ip(T2));
                    }
                    _ => {
                        let _ = w.proxy.bind(3, ip(LAN_OTHER));
                    }
                }
                w.drain_proxy();
            }
            // A long wait: retries, negotiations and lifetimes run out.
            _ => w.advance(Duration::from_secs(120)),
        }
    }
    for _ in 0..4 {
        w.advance(Duration::from_secs(120));
        w.round(None);
    }
});

#![no_main]
//! Seed 001's IKE-less terminal (`keyx::ikeless::Terminal`), configured as
//! tests/common/inline.rs configures it but with small bounds, fed a program the input
//! spells: raw IP packets; UDP datagrams to its port 500 (arbitrary payloads, with or
//! without the key-transfer marker); key-transfer messages sealed with its delegation key
//! (or another) as `transfer::Transfer` encodes them — installs of Child SAs of any shape,
//! deletes of installed or arbitrary SPIs, failures for its pending acquires, solicits —
//! carrying its current boot nonce or a stale one, under the next, the same, a skipped or
//! an arbitrary sequence number; sealed bodies of arbitrary plaintext (what no encoder
//! writes); retransmissions of what was sent; the application's packets (held until keys
//! come, which sends triggers); ESP from the peer through the mirror of an installed SA;
//! SAs installed by hand; and time.
//!
//! Invariants: no panic; the outbox drains after every call; the data plane stays within
//! its SA bound and the pending triggers within theirs.

#[path = "inline_common.rs"]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Bytes, PEER_I, PEER_R, STRANGER, T1, child, ip, key, mirrored, ping, sealed_raw, udp,
};
use deputy::ipsec::{
    Action, DataPlane, DataPlaneConfig, Direction, Outbound, Policy, Protected, Selector,
};
use deputy::keyx::ikeless::Terminal;
use deputy::keyx::transfer::{
    self, Delete, Failure, FailureReason, Install, NONCE_LEN, PORT, Transfer,
};
use deputy::{Actor, IfaceId, Input, Instant, Output};
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const MAX_SAS: usize = 8;
const MAX_TRIGGERS: usize = 3;

struct World {
    now: Instant,
    terminal: Terminal,
    /// The peer's side of every SA the terminal was sent (what a real peer would hold).
    peer: DataPlane,
    /// The proxy's sequence number (what the next message carries).
    seq: u32,
    /// Every key-transfer payload sent to the terminal, for retransmissions.
    sent: Vec<Vec<u8>>,
    /// Acquires the terminal asked keys for (its triggers).
    acquires: Vec<u32>,
    /// Inbound SPIs of the SAs the terminal was sent.
    spis: Vec<u32>,
    rng: ChaCha20Rng,
}

impl World {
    fn new(announce: bool) -> World {
        let mut peer = DataPlane::new(
            DataPlaneConfig {
                max_sas: 64,
                ..DataPlaneConfig::default()
            },
            Box::new(ChaCha20Rng::seed_from_u64(0x9ee)),
        )
        .expect("data plane");
        peer.add_policy(Policy::new(
            Selector::parse("0.0.0.0/0", "0.0.0.0/0").expect("selector"),
            Direction::Both,
            Action::Protect,
        ))
        .expect("policy");
        World {
            now: Instant::ZERO,
            terminal: common::terminal(1, T1, announce, 0x1e55),
            peer,
            seq: 0,
            sent: Vec::new(),
            acquires: Vec::new(),
            spis: Vec::new(),
            rng: ChaCha20Rng::seed_from_u64(0x5ea1),
        }
    }

    fn drain(&mut self) {
        let mut n = 0;
        while let Some(o) = self.terminal.poll_output() {
            n += 1;
            assert!(n < 10_000, "the outbox does not drain");
            match o {
                Output::Packet { iface, data } => {
                    assert_eq!(iface, IfaceId(0), "the terminal has one interface");
                    self.seen(&data);
                }
                Output::Event(_) | Output::Lost { .. } => {}
                other => panic!("the terminal emits only packets and events: {other:?}"),
            }
        }
        assert!(self.terminal.data_plane().sa_count() <= MAX_SAS, "SA bound");
        assert!(
            self.terminal.pending_triggers() <= MAX_TRIGGERS,
            "trigger bound"
        );
    }

    /// A packet the terminal sent: note the acquire of a trigger.
    fn seen(&mut self, data: &[u8]) {
        let Ok(info) = deputy::ipsec::parse_packet(data) else {
            return;
        };
        let Some(payload) = data.get(info.header_len + 8..info.total_len) else {
            return;
        };
        if info.dst_port != Some(PORT) {
            return;
        }
        let Ok(env) = transfer::Envelope::parse(payload) else {
            return;
        };
        if let Ok(Transfer::Trigger(t)) = env.open(&key(1)) {
            if self.acquires.len() >= 8 {
                self.acquires.remove(0);
            }
            self.acquires.push(t.acquire);
        }
    }

    fn packet(&mut self, data: &[u8]) {
        let _ = self.terminal.handle_input(
            self.now,
            Input::Packet {
                iface: IfaceId(0),
                data,
            },
        );
        self.drain();
    }

    /// A UDP datagram to the terminal's port 500 from the proxy's side (a peer's address).
    fn to_500(&mut self, from: &str, payload: &[u8]) {
        let p = udp(
            SocketAddr::new(ip(from), PORT),
            SocketAddr::new(ip(T1), PORT),
            payload,
        );
        self.packet(&p);
    }

    /// The sequence number a message carries: [mode, …].
    fn seq(&mut self, b: &mut Bytes) -> u32 {
        match b.u8() % 5 {
            0 | 1 => {
                self.seq = self.seq.wrapping_add(1);
                self.seq
            }
            2 => self.seq,
            3 => {
                self.seq = self.seq.wrapping_add(u32::from(b.u8()));
                self.seq
            }
            _ => b.u32(),
        }
    }

    /// The boot nonce a message carries: the terminal's (mostly) or stale bytes.
    fn boot(&mut self, b: &mut Bytes) -> [u8; NONCE_LEN] {
        if b.u8() % 4 == 0 {
            b.array()
        } else {
            self.terminal.boot_nonce()
        }
    }

    /// Seal `m` with the terminal's key (mostly), send it and keep it for retransmission.
    fn transfer(&mut self, b: &mut Bytes, m: Transfer) {
        let seq = self.seq(b);
        let (terminal, k) = match b.u8() % 8 {
            0 => (2, key(1)),
            1 => (1, key(2)),
            _ => (1, key(1)),
        };
        let Ok(payload) = m.encode(terminal, seq, &k, &mut self.rng) else {
            return;
        };
        self.keep(payload.clone());
        self.to_500(PEER_R, &payload);
    }

    fn keep(&mut self, payload: Vec<u8>) {
        if self.sent.len() >= 16 {
            self.sent.remove(0);
        }
        self.sent.push(payload);
    }

    fn acquire(&self, b: &mut Bytes) -> u32 {
        let i = usize::from(b.u8());
        if i < 200 && !self.acquires.is_empty() {
            self.acquires[i % self.acquires.len()]
        } else {
            b.u32()
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.terminal.poll_timeout().is_some_and(|t| t <= self.now) {
            self.terminal.handle_timeout(self.now);
            self.drain();
        }
        self.peer.handle_timeout(self.now);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mut w = World::new(b.u8() & 1 == 1);
    w.drain();
    let mut ops = 0;
    while !b.is_empty() && ops < 128 {
        ops += 1;
        match b.u8() % 13 {
            // A raw packet.
            0 => {
                let p = b.chunk();
                w.packet(p);
            }
            // An arbitrary datagram to port 500, bare or behind a marker header whose
            // length field is right.
            1 => {
                let flags = b.u8();
                let body = b.chunk();
                let from = [PEER_R, PEER_I, STRANGER][usize::from(flags % 3)];
                let payload = if flags & 4 == 0 {
                    body.to_vec()
                } else {
                    let mut p = Vec::new();
                    p.extend_from_slice(&transfer::RESERVED_SPI);
                    p.extend_from_slice(&transfer::RESERVED_SPI);
                    p.extend_from_slice(&[0, 0x20, transfer::EXCHANGE_TYPE, 0, 0, 0, 0, 0]);
                    p.extend_from_slice(
                        &((transfer::MARKER_LEN + body.len()) as u32).to_be_bytes(),
                    );
                    p.extend_from_slice(body);
                    p
                };
                w.to_500(from, &payload);
            }
            // An install of an SA of any shape; its mirror goes to the peer's data plane.
            2 => {
                let boot = w.boot(&mut b);
                let Some(sa) = child(&mut b, T1, PEER_R) else {
                    continue;
                };
                let replaces = (b.u8() & 1 == 1).then(|| w.spis.last().copied().unwrap_or(0));
                let acquire = (b.u8() & 1 == 1).then(|| w.acquire(&mut b));
                if sa.validate().is_ok() {
                    if w.spis.len() >= 16 {
                        w.spis.remove(0);
                    }
                    w.spis.push(sa.spi_in);
                    let _ = w.peer.install(w.now, mirrored(&sa));
                }
                let m = Transfer::Install(Install {
                    boot,
                    child: Box::new(sa),
                    replaces,
                    acquire,
                });
                w.transfer(&mut b, m);
            }
            // A delete of SPIs installed or arbitrary.
            3 => {
                let boot = w.boot(&mut b);
                let n = b.u8() % 5;
                let spis = (0..n)
                    .map(|_| match (b.u8(), w.spis.is_empty()) {
                        (i, false) if i < 200 => w.spis[usize::from(i) % w.spis.len()],
                        _ => b.u32(),
                    })
                    .collect();
                w.transfer(&mut b, Transfer::Delete(Delete { boot, spis }));
            }
            // A failure for a pending acquire (or any).
            4 => {
                let boot = w.boot(&mut b);
                let acquire = w.acquire(&mut b);
                let reason = [
                    FailureReason::AuthenticationFailed,
                    FailureReason::PolicyDenied,
                    FailureReason::Timeout,
                    FailureReason::Busy,
                ][usize::from(b.u8() % 4)];
                w.transfer(
                    &mut b,
                    Transfer::Failure(Failure {
                        boot,
                        acquire,
                        reason,
                    }),
                );
            }
            // A solicit (in clear; the terminal answers from where it came).
            5 => {
                let challenge = b.array();
                let from = [PEER_R, PEER_I, STRANGER][usize::from(b.u8() % 3)];
                let seq = w.seq(&mut b);
                if let Ok(p) = (Transfer::Solicit { challenge }).encode(1, seq, &key(1), &mut w.rng)
                {
                    w.to_500(from, &p);
                }
            }
            // A sealed body of arbitrary plaintext under any message type.
            6 => {
                let ty = [
                    transfer::msg::INSTALL,
                    transfer::msg::DELETE,
                    transfer::msg::FAILURE,
                    transfer::msg::ACK,
                    transfer::msg::TRIGGER,
                ][usize::from(b.u8() % 5)];
                let seq = w.seq(&mut b);
                let p = sealed_raw(&mut b, ty, seq, w.terminal.boot_nonce());
                w.keep(p.clone());
                w.to_500(PEER_R, &p);
            }
            // A retransmission of something sent, maybe with a byte flipped.
            7 => {
                let i = usize::from(b.u8());
                let (at, x) = (usize::from(b.u8()), b.u8());
                if let Some(p) = w.sent.get(i % w.sent.len().max(1)).cloned() {
                    let mut p = p;
                    if x != 0 && !p.is_empty() {
                        let at = at % p.len();
                        p[at] ^= x;
                    }
                    w.to_500(PEER_R, &p);
                }
            }
            // The application sends: toward a peer (held, then a trigger; or protected),
            // or elsewhere (in clear), or junk.
            8 => {
                let to = [PEER_R, PEER_I, STRANGER][usize::from(b.u8() % 3)];
                let seq = b.u16();
                let p = if b.u8() % 8 == 0 {
                    b.chunk().to_vec()
                } else {
                    ping(T1, to, seq)
                };
                let _ = w.terminal.send(w.now, &p);
                w.drain();
            }
            // The peer sends through the mirror of an installed SA, maybe flipped.
            9 => {
                let from = [PEER_R, PEER_I][usize::from(b.u8() % 2)];
                let seq = b.u16();
                let (at, x) = (usize::from(b.u8()), b.u8());
                let out = match w.peer.protect(w.now, &ping(from, T1, seq)) {
                    Ok(Outbound::Protected(Protected::Ip(p))) => Some(p),
                    Ok(Outbound::Protected(Protected::Udp(d))) => d.to_ip_packet(seq).ok(),
                    _ => None,
                };
                while w.peer.poll_event().is_some() {}
                if let Some(mut p) = out {
                    if x != 0 && !p.is_empty() {
                        let at = at % p.len();
                        p[at] ^= x;
                    }
                    w.packet(&p);
                }
            }
            // An SA set by hand (¶0012).
            10 => {
                if let Some(sa) = child(&mut b, T1, PEER_I) {
                    let _ = w.terminal.install_manual(w.now, sa);
                    w.drain();
                }
            }
            // Time: [steps of 250 ms].
            11 => {
                let d = u64::from(b.u8());
                w.advance(Duration::from_millis(d * 250));
            }
            // A long wait: every retry and lifetime runs out.
            _ => w.advance(Duration::from_secs(300)),
        }
    }
    for _ in 0..4 {
        w.advance(Duration::from_secs(120));
    }
});

#![no_main]
//! Seed 003's key-exchange proxy (`keyx::operator::KeyExchangeProxy`, small bounds) holding
//! subscribers 1 and 2's secrets, its link to a service control brought up with IKEv2
//! against the service control's end of the link, which the target plays (deputy's
//! initiator with `operator::link::link_ike`, then `operator::link::link_plane`), and a
//! peer (deputy's IKEv2 responder) the proxy negotiates with as the subscribers. The input
//! spells a program: raw packets to the proxy (on its interface or another); datagrams to
//! its address on 500, 4500 or any port (the links' IKE); inner packets sealed into the
//! link as the service control diverts them: key-transfer messages from a subscriber (or
//! an unserved address) sealed with the right key or another as `transfer::Transfer`
//! encodes them — triggers toward the peer or elsewhere, acks of the proxy's latest
//! message or any, announces echoing its latest solicit or not — under the next, the same
//! or any sequence number; sealed arbitrary plaintext; raw IKE toward a subscriber from the
//! peer or a stranger; anything; link packets with a byte flipped; the world's packets a
//! round at a time (one flipped) or until quiet; recorded inner packets sealed again; the
//! secure store pulled out and put back, flushes; and time.
//!
//! Invariants: no panic; an undisturbed link comes up; the outbox drains after every
//! call; the engine's SA store stays within its bound; the proxy sends from its own
//! address.

#[path = "inline_common.rs"]
mod common;
#[path = "operator_common.rs"]
mod operator;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{Bytes, ip, key, sealed_raw, udp};
use deputy::keyx::inline::MemoryStore;
use deputy::keyx::operator::KeyExchangeProxy;
use deputy::keyx::transfer::{self, Announce, Envelope, NONCE_LEN, PORT, Transfer};
use deputy::{Actor, IfaceId, Input, Instant, Output};
use libfuzzer_sys::fuzz_target;
use operator::{LinkEnd, PEER, PROXY, S1, S2, SC, STRANGER, UNSERVED, addr, datagram};

const NET: IfaceId = IfaceId(0);
const MAX_SAS: usize = 4;
const BOOT: [[u8; NONCE_LEN]; 2] = [[1; NONCE_LEN], [2; NONCE_LEN]];

struct World {
    now: Instant,
    proxy: KeyExchangeProxy<MemoryStore>,
    link: LinkEnd,
    peer: deputy::ikev2::Responder,
    /// Inner packets for the proxy (sealed into the link when delivered), and link IKE.
    to_proxy: VecDeque<(bool, Vec<u8>)>,
    /// Inner packets for the peer.
    to_peer: VecDeque<Vec<u8>>,
    /// Inner packets that went through the link, for replays.
    recorded: VecDeque<Vec<u8>>,
    challenges: BTreeMap<IpAddr, [u8; NONCE_LEN]>,
    proxy_seq: BTreeMap<IpAddr, u32>,
    seq: u32,
    rng: rand_chacha::ChaCha20Rng,
}

impl World {
    fn new() -> World {
        use rand_core::SeedableRng;
        let mut w = World {
            now: Instant::ZERO,
            proxy: operator::proxy(),
            link: LinkEnd::control(),
            peer: operator::peer(),
            to_proxy: VecDeque::new(),
            to_peer: VecDeque::new(),
            recorded: VecDeque::new(),
            challenges: BTreeMap::new(),
            proxy_seq: BTreeMap::new(),
            seq: 0,
            rng: rand_chacha::ChaCha20Rng::seed_from_u64(0x5ea3),
        };
        for _ in 0..8 {
            w.round(None);
        }
        assert!(
            w.link.plane.is_some() && w.proxy.links().count() == 1,
            "an undisturbed link comes up"
        );
        w
    }

    fn record(&mut self, inner: &[u8]) {
        if self.recorded.len() >= 32 {
            self.recorded.pop_front();
        }
        self.recorded.push_back(inner.to_vec());
    }

    /// One packet into the proxy (an outer packet).
    fn raw(&mut self, iface: IfaceId, data: &[u8]) {
        let _ = self
            .proxy
            .handle_input(self.now, Input::Packet { iface, data });
        self.drain();
    }

    /// An inner packet sealed into the link, maybe with a byte flipped.
    fn sealed(&mut self, inner: &[u8], flip: Option<(usize, u8)>) {
        self.record(inner);
        if let Some(mut p) = self.link.seal(self.now, inner) {
            if let Some((at, x)) = flip {
                let at = at % p.len();
                p[at] ^= x.max(1);
            }
            self.raw(NET, &p);
        }
    }

    fn drain(&mut self) {
        let mut n = 0;
        while let Some(o) = self.proxy.poll_output() {
            n += 1;
            assert!(n < 10_000, "the outbox does not drain");
            match o {
                Output::Packet { iface, data } => {
                    assert_eq!(iface, NET, "the proxy has one interface");
                    self.from_proxy(&data);
                }
                Output::Event(_) | Output::Lost { .. } => {}
                other => panic!("no streams were opened: {other:?}"),
            }
        }
        assert!(
            self.proxy.engine().stored_sas().count() <= MAX_SAS,
            "SA store bound"
        );
    }

    /// What the proxy sends: the links' IKE, or a packet in the link.
    fn from_proxy(&mut self, data: &[u8]) {
        if self.link.ike_input(self.now, data) {
            return;
        }
        let info = deputy::ipsec::parse_packet(data).expect("the proxy sends IP");
        assert_eq!(info.src, ip(PROXY), "the proxy sends from its address");
        let Some(inner) = self.link.open(self.now, data) else {
            // Before the target's end has its plane (or toward another service control).
            return;
        };
        let Ok(i) = deputy::ipsec::parse_packet(&inner) else {
            return;
        };
        if i.dst == ip(PEER) {
            self.to_peer.push_back(inner);
            return;
        }
        // A key transfer toward a subscriber: note its sequence number and challenge.
        let Some(payload) = inner.get(i.header_len + 8..i.total_len) else {
            return;
        };
        let Ok(env) = Envelope::parse(payload) else {
            return;
        };
        self.proxy_seq.insert(i.dst, env.seq);
        if let Ok(Transfer::Solicit { challenge }) = env.open(&key(0)) {
            self.challenges.insert(i.dst, challenge);
        }
    }

    /// One round: the link's IKE, queued inner packets into the link, the peer's answers.
    fn round(&mut self, flip: Option<(usize, u8)>) {
        let mut flip = flip;
        for p in self.link.drain(self.now) {
            self.to_proxy.push_back((false, p));
        }
        while let Some((seal, p)) = self.to_proxy.pop_front() {
            if seal {
                self.sealed(&p, flip.take());
            } else {
                self.raw(NET, &p);
            }
        }
        while let Some(p) = self.to_peer.pop_front() {
            let Ok(info) = deputy::ipsec::parse_packet(&p) else {
                continue;
            };
            let (Some(sport), Some(dport)) = (info.src_port, info.dst_port) else {
                continue;
            };
            let Some(payload) = p.get(info.header_len + 8..info.total_len) else {
                continue;
            };
            if info.protocol == 17 {
                let _ = self.peer.handle_input(
                    self.now,
                    Input::Datagram {
                        from: SocketAddr::new(info.src, sport),
                        to: SocketAddr::new(info.dst, dport),
                        data: payload,
                    },
                );
            }
        }
        while let Some(o) = self.peer.poll_output() {
            if let Output::Transmit(t) = o {
                self.to_proxy.push_back((true, udp(t.from, t.to, &t.data)));
            }
        }
    }

    fn quiet(&self) -> bool {
        self.to_proxy.is_empty() && self.to_peer.is_empty()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.proxy.poll_timeout().is_some_and(|t| t <= self.now) {
            self.proxy.handle_timeout(self.now);
            self.drain();
        }
        self.link.handle_timeout(self.now);
        if self.peer.poll_timeout().is_some_and(|t| t <= self.now) {
            self.peer.handle_timeout(self.now);
        }
        self.round(None);
    }

    /// The sequence number of a subscriber's message: [mode, …].
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

    /// A key-transfer message from a subscriber, as the service control diverts it:
    /// [who, boot, kind, …, seq mode, to].
    fn transfer(&mut self, b: &mut Bytes) -> Option<Vec<u8>> {
        let (from, id) = match b.u8() % 6 {
            0 | 1 => (S1, 1),
            2 | 3 => (S2, 2),
            4 => (S1, 2),
            _ => (UNSERVED, 1),
        };
        let k = if b.u8() % 8 == 0 { key(3) } else { key(id) };
        let boot = match b.u8() % 5 {
            0 => b.array(),
            _ => BOOT[(id - 1) as usize],
        };
        let m = match b.u8() % 3 {
            0 => {
                let echo = match b.u8() % 3 {
                    0 => None,
                    1 => Some(b.array()),
                    _ => self.challenges.get(&ip(from)).copied(),
                };
                let addresses = match b.u8() % 3 {
                    0 => vec![],
                    1 => vec![IpAddr::from(b.array::<4>())],
                    _ => vec![ip(from)],
                };
                Transfer::Announce(Announce {
                    boot,
                    echo,
                    addresses,
                    services: vec![],
                    suites: b.chunk().to_vec(),
                    held: vec![],
                })
            }
            1 => {
                let dst = [PEER, STRANGER, S2][usize::from(b.u8() % 3)];
                common::trigger(b, boot, from, dst)
            }
            _ => common::ack(b, boot, self.proxy_seq.get(&ip(from)).copied()),
        };
        let seq = self.seq(b);
        let to = [PEER, STRANGER][usize::from(b.u8() % 2)];
        let payload = m.encode(id, seq, &k, &mut self.rng).ok()?;
        Some(udp(
            SocketAddr::new(ip(from), PORT),
            SocketAddr::new(ip(to), PORT),
            &payload,
        ))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mut w = World::new();
    let mut ops = 0;
    while !b.is_empty() && ops < 128 {
        ops += 1;
        match b.u8() % 13 {
            // A raw packet to the proxy, on its interface or another.
            0 => {
                let iface = IfaceId(u32::from(b.u8() % 2));
                let p = b.chunk();
                w.raw(iface, p);
            }
            // A datagram to the proxy's address (the links' IKE): [from, flags, bytes].
            1 => {
                let from = [SC, STRANGER, S1][usize::from(b.u8() % 3)];
                let p = datagram(&mut b, from, PROXY);
                w.raw(NET, &p);
            }
            // A subscriber's key-transfer message, in the link.
            2 => {
                if let Some(p) = w.transfer(&mut b) {
                    w.sealed(&p, None);
                }
            }
            // Sealed arbitrary plaintext from subscriber 1, in the link.
            3 => {
                let ty = [
                    transfer::msg::ANNOUNCE,
                    transfer::msg::TRIGGER,
                    transfer::msg::ACK,
                    transfer::msg::INSTALL,
                ][usize::from(b.u8() % 4)];
                let seq = w.seq(&mut b);
                let payload = sealed_raw(&mut b, ty, seq, BOOT[0]);
                let p = udp(
                    SocketAddr::new(ip(S1), PORT),
                    SocketAddr::new(ip(PEER), PORT),
                    &payload,
                );
                w.sealed(&p, None);
            }
            // Raw IKE toward a subscriber, in the link: [from, to, flags, bytes].
            4 => {
                let from = [PEER, STRANGER][usize::from(b.u8() % 2)];
                let to = [S1, S2, UNSERVED][usize::from(b.u8() % 3)];
                let p = datagram(&mut b, from, to);
                w.sealed(&p, None);
            }
            // Anything in the link: [from, to, flags, bytes] or raw bytes.
            5 => {
                let p = if b.u8() & 1 == 0 {
                    let (from, to) = (addr(b.u8()), addr(b.u8()));
                    datagram(&mut b, from, to)
                } else {
                    b.chunk().to_vec()
                };
                w.sealed(&p, None);
            }
            // A key-transfer message in a link packet with a byte flipped.
            6 => {
                let (at, x) = (usize::from(b.u16()), b.u8());
                if let Some(p) = w.transfer(&mut b) {
                    w.sealed(&p, Some((at, x)));
                }
            }
            // The world's packets, one round.
            7 => w.round(None),
            // One round, one sealed packet flipped: [position, xor].
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
            // A recorded inner packet again, maybe flipped: [which, position, xor].
            10 => {
                let i = usize::from(b.u8());
                let (at, x) = (usize::from(b.u16()), b.u8());
                let n = w.recorded.len();
                if let Some(mut p) = w.recorded.get(i % n.max(1)).cloned() {
                    if x != 0 && !p.is_empty() {
                        let at = at % p.len();
                        p[at] ^= x;
                    }
                    w.sealed(&p, None);
                }
            }
            // Time: [steps of 250 ms], or the store changes.
            11 => {
                let d = b.u8();
                if d < 240 {
                    w.advance(Duration::from_millis(u64::from(d) * 250));
                } else {
                    let now = w.now;
                    let e = w.proxy.engine_mut();
                    match d % 4 {
                        0 => {
                            e.store_mut().set_present(false);
                            let _ = e.store_changed(now);
                        }
                        1 => {
                            e.store_mut().set_present(true);
                            let _ = e.store_changed(now);
                        }
                        2 => {
                            let _ = e.flush(now, 1);
                        }
                        _ => {
                            let _ = e.flush(now, 2);
                        }
                    }
                    w.drain();
                }
            }
            // A long wait.
            _ => w.advance(Duration::from_secs(120)),
        }
    }
    for _ in 0..2 {
        w.advance(Duration::from_secs(120));
    }
});

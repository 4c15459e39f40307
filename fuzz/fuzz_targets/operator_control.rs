#![no_main]
//! Seed 003's service control (`keyx::operator::ServiceControl`, small bounds) with one or
//! two subscribers' profiles installed (`ServiceControl::install`) and its link to the
//! key-exchange proxy brought up with IKEv2 against the proxy's end of the link, which the
//! target plays (deputy's responder with `operator::link::link_ike`, then
//! `operator::link::link_plane`), so that fuzz-built packets can be sealed into the link's
//! ESP under its real keys. The input spells a program: raw packets on the access or the
//! core interface (or one the service control does not have); UDP datagrams in valid IPv4
//! headers on 500, 4500 or any port (behind the non-ESP marker or not) from a served
//! subscriber, an unserved one or the peer, on the access side toward the peer and on the
//! core side toward the subscribers; datagrams to the service control's own address (the
//! link's IKE, from the proxy or a stranger); IP-in-IP toward the service control's
//! address; inner packets sealed into the link (key transfers from the peer to a
//! subscriber, IKE as a subscriber toward the peer, anything), genuine or with a byte of
//! their ESP part flipped (the outer header is not authenticated); recorded packets
//! replayed on either side; the link's IKE run a round; profiles installed, moved and
//! withdrawn; and time.
//!
//! Invariants: no panic; an undisturbed link comes up; the outbox drains after every
//! call; nothing the service control emits on its core interface carries a served
//! subscriber's source address unless the input was on the access side or came out of the
//! link (no spoofing relay).

#[path = "inline_common.rs"]
mod common;
#[path = "operator_common.rs"]
mod operator;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{Bytes, ip, sealed_raw, udp};
use deputy::keyx::operator::ServiceControl;
use deputy::keyx::transfer::PORT;
use deputy::{Actor, IfaceId, Input, Instant, Output};
use libfuzzer_sys::fuzz_target;
use operator::{
    ACCESS, CORE, LinkEnd, PEER, PROXY, S1, S2, SC, SC_ACCESS, STRANGER, UNSERVED, addr, datagram,
};

struct World {
    now: Instant,
    sc: ServiceControl,
    link: LinkEnd,
    /// Link IKE datagrams for the service control.
    to_sc: VecDeque<Vec<u8>>,
    /// Packets the service control received or sent, for replays.
    recorded: VecDeque<(IfaceId, Vec<u8>)>,
}

impl World {
    fn new(flags: u8) -> World {
        let mut w = World {
            now: Instant::ZERO,
            sc: operator::control(),
            link: LinkEnd::proxy(),
            to_sc: VecDeque::new(),
            recorded: VecDeque::new(),
        };
        let [p1, p2] = operator::profiles();
        let _ = w.sc.install(p1);
        if flags & 1 == 0 {
            let _ = w.sc.install(p2);
        }
        w.drain(false);
        // The link's IKE, unless the input wants it down.
        if flags & 2 == 0 {
            // The link's IKE_SA_INIT leaves on the service control's first timeout.
            for _ in 0..8 {
                w.advance(Duration::ZERO);
            }
            assert!(w.sc.link_up(), "an undisturbed link comes up");
        }
        w
    }

    fn record(&mut self, iface: IfaceId, data: &[u8]) {
        if self.recorded.len() >= 32 {
            self.recorded.pop_front();
        }
        self.recorded.push_back((iface, data.to_vec()));
    }

    fn served(&self, a: IpAddr) -> bool {
        [1, 2].iter().any(|id| {
            self.sc
                .profile(*id)
                .is_some_and(|p| p.addresses.contains(&a))
        })
    }

    /// One packet into the service control. `trusted`: it came from the access side or
    /// out of the link, so the service control may send a subscriber's packet on.
    fn input(&mut self, iface: IfaceId, data: &[u8], trusted: bool) {
        self.record(iface, data);
        self.feed(iface, data, trusted);
    }

    /// The same, not recorded (a replay could undo its change).
    fn feed(&mut self, iface: IfaceId, data: &[u8], trusted: bool) {
        let _ = self
            .sc
            .handle_input(self.now, Input::Packet { iface, data });
        self.drain(trusted || iface == ACCESS);
    }

    fn drain(&mut self, trusted: bool) {
        let mut n = 0;
        while let Some(o) = self.sc.poll_output() {
            n += 1;
            assert!(n < 10_000, "the outbox does not drain");
            match o {
                Output::Packet { iface, data } if iface == CORE => {
                    self.check_core(&data, trusted);
                    self.to_link(&data);
                    self.record(ACCESS, &data);
                }
                Output::Packet { iface, data } => {
                    assert_eq!(iface, ACCESS, "the service control has two interfaces");
                    self.record(CORE, &data);
                }
                Output::Event(_) | Output::Lost { .. } => {}
                other => panic!("no streams were opened: {other:?}"),
            }
        }
    }

    /// No spoofing relay: a served subscriber's source address leaves on the core only for
    /// what came from the access side or out of the link.
    fn check_core(&self, data: &[u8], trusted: bool) {
        if trusted {
            return;
        }
        if let Ok(info) = deputy::ipsec::parse_packet(data) {
            assert!(
                !self.served(info.src),
                "a served subscriber's address relayed from the core: {info:?}"
            );
        }
    }

    /// What the service control sends the proxy: the link's IKE goes to the target's end.
    fn to_link(&mut self, data: &[u8]) {
        let Ok(info) = deputy::ipsec::parse_packet(data) else {
            return;
        };
        if info.dst != ip(PROXY) {
            return;
        }
        if !self.link.ike_input(self.now, data) {
            // Diverted packets: opened (and dropped) as the proxy would.
            let _ = self.link.open(self.now, data);
        }
    }

    /// The link's IKE: the target's end's datagrams into the service control.
    fn link_round(&mut self) {
        let out = self.link.drain(self.now);
        self.to_sc.extend(out);
        while let Some(p) = self.to_sc.pop_front() {
            self.input(CORE, &p, false);
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.sc.poll_timeout().is_some_and(|t| t <= self.now) {
            self.sc.handle_timeout(self.now);
            self.drain(false);
        }
        self.link.handle_timeout(self.now);
        self.link_round();
    }

    /// An inner packet for the link: [kind, …].
    fn inner(&mut self, b: &mut Bytes) -> Vec<u8> {
        match b.u8() % 4 {
            // A key transfer (arbitrary sealed plaintext) from the peer to a subscriber.
            0 => {
                let ty = b.u8();
                let seq = b.u32();
                let payload = sealed_raw(b, ty, seq, [1; 16]);
                let to = addr(b.u8());
                udp(
                    SocketAddr::new(ip(PEER), PORT),
                    SocketAddr::new(ip(to), PORT),
                    &payload,
                )
            }
            // IKE as a subscriber toward the peer (or anyone to anyone).
            1 => {
                let from = [S1, S2, UNSERVED, addr(b.u8())][usize::from(b.u8() % 4)];
                datagram(b, from, PEER)
            }
            2 => {
                let (from, to) = (addr(b.u8()), addr(b.u8()));
                datagram(b, from, to)
            }
            _ => b.chunk().to_vec(),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mut w = World::new(b.u8());
    let mut ops = 0;
    while !b.is_empty() && ops < 128 {
        ops += 1;
        match b.u8() % 12 {
            // A raw packet on either interface, or one the service control does not have.
            0 => {
                let iface = IfaceId(u32::from(b.u8() % 3));
                let p = b.chunk();
                w.input(iface, p, false);
            }
            // From the access side toward the peer: [from, flags, bytes].
            1 => {
                let from = [S1, S2, UNSERVED, STRANGER][usize::from(b.u8() % 4)];
                let p = datagram(&mut b, from, PEER);
                w.input(ACCESS, &p, true);
            }
            // From the core toward the subscribers: [from, to, flags, bytes].
            2 => {
                let from = [PEER, STRANGER, PROXY, S1][usize::from(b.u8() % 4)];
                let to = [S1, S2, UNSERVED, SC_ACCESS][usize::from(b.u8() % 4)];
                let p = datagram(&mut b, from, to);
                w.input(CORE, &p, false);
            }
            // To the service control's own address (the link's IKE): [from, flags, bytes].
            3 => {
                let from = [PROXY, STRANGER][usize::from(b.u8() % 2)];
                let p = datagram(&mut b, from, SC);
                w.input(CORE, &p, false);
            }
            // IP-in-IP toward the service control: [from, inner].
            4 => {
                let from = [PROXY, STRANGER, PEER][usize::from(b.u8() % 3)];
                let inner = w.inner(&mut b);
                if let Ok(p) = deputy::ipsec::encapsulate(ip(from), ip(SC), &inner) {
                    w.input(CORE, &p, false);
                }
            }
            // An inner packet sealed into the link.
            5 => {
                let inner = w.inner(&mut b);
                if let Some(p) = w.link.seal(w.now, &inner) {
                    w.input(CORE, &p, true);
                }
            }
            // The same, a byte of the ESP part flipped (the outer header is not
            // authenticated: a changed checksum or TTL still opens, as it should):
            // [inner, position, xor].
            6 => {
                let inner = w.inner(&mut b);
                let (at, x) = (usize::from(b.u16()), b.u8().max(1));
                if let Some(mut p) = w.link.seal(w.now, &inner)
                    && let Ok(info) = deputy::ipsec::parse_packet(&p)
                    && p.len() > info.header_len
                {
                    let at = info.header_len + at % (p.len() - info.header_len);
                    p[at] ^= x;
                    w.feed(CORE, &p, false);
                }
            }
            // A recorded packet again, maybe flipped, on the core (or the access side).
            7 => {
                let i = usize::from(b.u8());
                let (at, x) = (usize::from(b.u16()), b.u8());
                let access = b.u8() % 4 == 0;
                let n = w.recorded.len();
                if let Some((iface, mut p)) = w.recorded.get(i % n.max(1)).cloned() {
                    if x != 0 && !p.is_empty() {
                        let at = at % p.len();
                        p[at] ^= x;
                    }
                    let iface = if access { ACCESS } else { iface };
                    w.input(iface, &p, false);
                }
            }
            // The link's IKE, a round.
            8 => w.link_round(),
            // Profiles change: [which].
            9 => {
                let [p1, p2] = operator::profiles();
                let _ = match b.u8() % 5 {
                    0 => w.sc.install(p1),
                    1 => w.sc.install(p2),
                    2 => w.sc.install(p1.moved_to(vec![ip(UNSERVED)])),
                    3 => w.sc.withdraw(1),
                    _ => w.sc.withdraw(2),
                };
                w.drain(false);
            }
            // Time: [steps of 250 ms].
            10 => {
                let d = u64::from(b.u8());
                w.advance(Duration::from_millis(d * 250));
            }
            // A long wait.
            _ => w.advance(Duration::from_secs(120)),
        }
    }
    for _ in 0..2 {
        w.advance(Duration::from_secs(120));
    }
});

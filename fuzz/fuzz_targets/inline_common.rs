//! Seed 001's world for the inline targets, as tests/common/inline.rs builds it: a peer
//! on the Internet, IKE-less terminals behind the inline proxy with their delegation keys,
//! and the pieces a target builds from fuzz bytes (a reader, IP/UDP wrapping, sealed
//! key-transfer frames, Child SAs of any shape).
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use deputy::Instant;
use deputy::crypto::dh::Group;
use deputy::ikev2::{Identity, IkeConfig, IkeProposal};
use deputy::ipsec::PortRange;
use deputy::ipsec::{
    Action, ChildSa, DataPlane, DataPlaneConfig, Direction, Lifetime, Mode, Policy, SaKeys,
    Selector, Suite, TrafficSelector, UdpEncap,
};
use deputy::keyx::DelegationKey;
use deputy::keyx::ikeless::{Retry, Terminal, TerminalConfig};
use deputy::keyx::seal::{self, SealContext};
use deputy::keyx::transfer::{
    Ack, AckOutcome, EXCHANGE_TYPE, MARKER_LEN, NONCE_LEN, RESERVED_SPI, Transfer, Trigger,
};
use deputy::wire::{self, FieldWriter};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The peer that starts IKE toward terminal 1 (Fig. 3).
pub const PEER_I: &str = "192.0.2.1";
/// The peer terminals start toward (Fig. 4).
pub const PEER_R: &str = "192.0.2.2";
/// A host on the Internet nobody knows.
pub const STRANGER: &str = "192.0.2.99";
pub const T1: &str = "198.51.100.10";
pub const T2: &str = "198.51.100.11";
/// A LAN address that is no delegated terminal.
pub const LAN_OTHER: &str = "198.51.100.20";
/// The IKE key between the peers and every terminal.
pub const PSK: &[u8] = b"the terminals' IKE key";
/// The key-transfer message's outer fields (`keyx::transfer`'s F_SEQ and F_SEALED).
const F_SEQ: u16 = 0x8001;
const F_SEALED: u16 = 0x8002;

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

pub fn key(id: u64) -> DelegationKey {
    DelegationKey::new([id as u8; 32])
}

/// An IKE configuration with X25519 only (a MODP key share would make every case slow).
pub fn ike(id: &str) -> IkeConfig {
    let mut ike = IkeConfig::new(Identity::Fqdn(id.into()), PSK);
    ike.ike_proposals = vec![
        IkeProposal::aes128_sha256(&[Group::X25519]),
        IkeProposal::chacha20poly1305(&[Group::X25519]),
    ];
    ike
}

/// Retries short enough for the fuzzer to see them run out.
pub fn retry() -> Retry {
    Retry {
        initial: Duration::from_millis(500),
        max_interval: Duration::from_secs(2),
        max_tries: 3,
    }
}

/// The IKE-less terminal `id` at `addr` (small bounds), protecting its traffic to both
/// peers and bypassing the rest.
pub fn terminal(id: u64, addr: &str, announce: bool, seed: u64) -> Terminal {
    let mut plane = DataPlane::new(
        DataPlaneConfig {
            max_sas: 8,
            ..DataPlaneConfig::default()
        },
        Box::new(ChaCha20Rng::seed_from_u64(seed)),
    )
    .expect("data plane");
    plane.spd_mut().set_default_action(Action::Bypass);
    for peer in [PEER_I, PEER_R] {
        plane
            .add_policy(Policy::new(
                Selector::parse(&format!("{addr}/32"), &format!("{peer}/32")).expect("selector"),
                Direction::Both,
                Action::Protect,
            ))
            .expect("policy");
    }
    let mut cfg = TerminalConfig::new(id, key(id), vec![ip(addr)]);
    cfg.announce_to = announce.then(|| ip(PEER_R));
    cfg.retry = retry();
    cfg.max_triggers = 3;
    cfg.replay_window = 32;
    cfg.max_remembered_acks = 3;
    cfg.outbox_bound = 256;
    Terminal::new(
        cfg,
        plane,
        Box::new(ChaCha20Rng::seed_from_u64(seed ^ 0x7e)),
        Instant::ZERO,
    )
    .expect("terminal")
}

/// The fuzz input, read front to back; past its end every read gives zeros.
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn slice(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    /// A length byte, then that many bytes.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.slice(n)
    }

    pub fn u8(&mut self) -> u8 {
        self.slice(1).first().copied().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        for b in &mut out {
            *b = self.u8();
        }
        out
    }
}

/// An IPv4/UDP packet around `payload` (an empty vector if the addresses' families
/// differ or it is too large).
pub fn udp(from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    deputy::ipsec::udp_packet(from, to, 64, 0, 1, payload).unwrap_or_default()
}

/// A key-transfer frame from terminal 1's key whose sealed body is arbitrary plaintext
/// (what `Transfer::encode` would never write), read from the input: [flag, length,
/// bytes]; with the flag's low bit clear the body starts with the boot nonce field
/// holding `boot`.
pub fn sealed_raw(b: &mut Bytes, ty: u8, seq: u32, boot: [u8; NONCE_LEN]) -> Vec<u8> {
    let mut body = Vec::new();
    if b.u8() & 1 == 0 {
        body.extend_from_slice(&[0x80, 0x01, 0, NONCE_LEN as u8]);
        body.extend_from_slice(&boot);
    }
    body.extend_from_slice(b.chunk());
    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(seq));
    let ctx = SealContext {
        msg_type: ty,
        session: 1,
        seq,
    };
    let fields = FieldWriter::new()
        .u32(F_SEQ, seq)
        .bytes(F_SEALED, &seal::seal(&key(1), ctx, &body, &mut rng));
    let Ok(message) = wire::encode(ty, 1, fields) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(MARKER_LEN + message.len());
    out.extend_from_slice(&RESERVED_SPI);
    out.extend_from_slice(&RESERVED_SPI);
    out.extend_from_slice(&[0, 0x20, EXCHANGE_TYPE, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&((MARKER_LEN + message.len()) as u32).to_be_bytes());
    out.extend_from_slice(&message);
    out
}

/// An address near `base` (itself, the other peer, a v6 one, or anything).
fn addr_near(b: &mut Bytes, base: &str) -> IpAddr {
    match b.u8() % 5 {
        0 | 1 => ip(base),
        2 => ip(PEER_R),
        3 => IpAddr::from(b.array::<4>()),
        _ => IpAddr::from(b.array::<16>()),
    }
}

fn selectors(b: &mut Bytes, base: &str) -> Vec<TrafficSelector> {
    (0..b.u8() % 4)
        .map(|_| match b.u8() % 4 {
            0 => TrafficSelector::host(addr_near(b, base)),
            1 => TrafficSelector::any_v4(),
            2 => TrafficSelector::any_v6(),
            _ => {
                let a = addr_near(b, base);
                TrafficSelector::prefix(a, b.u8())
            }
        })
        .collect()
}

/// A Child SA from the terminal's side, of any shape the fuzzer likes: SPIs, suite, keys
/// of the right or a wrong length, mode, encapsulation, selectors, lifetimes, ESN, window.
/// Most come out valid (what `ChildSa::encode` accepts); some do not.
pub fn child(b: &mut Bytes, local: &str, remote: &str) -> Option<ChildSa> {
    let flags = b.u8();
    let spi = |b: &mut Bytes| {
        if flags & 1 == 0 {
            0x1000 + u32::from(b.u8() % 8)
        } else {
            b.u32()
        }
    };
    let (spi_in, spi_out) = (spi(b), spi(b));
    let suite = Suite::ALL[usize::from(b.u8()) % Suite::ALL.len()];
    let n = suite.encryption_key_len() + suite.integrity_key_len();
    let keys = |b: &mut Bytes| {
        let len = if flags & 2 == 0 {
            n
        } else {
            usize::from(b.u8() % 80)
        };
        let fill = b.u8();
        SaKeys::from_keymat(suite, &vec![fill; len]).ok()
    };
    let (keys_in, keys_out) = (keys(b)?, keys(b)?);
    let mode = match b.u8() % 3 {
        0 => Mode::Transport,
        1 => Mode::Tunnel {
            local: ip(local),
            remote: ip(remote),
        },
        _ => Mode::Tunnel {
            local: addr_near(b, local),
            remote: addr_near(b, remote),
        },
    };
    let (mut local_ts, mut remote_ts) = (selectors(b, local), selectors(b, remote));
    if flags & 4 == 0 {
        local_ts = vec![TrafficSelector::host(ip(local))];
        remote_ts = vec![TrafficSelector::host(ip(remote))];
    }
    let mut sa = ChildSa::new(
        spi_in, spi_out, suite, keys_in, keys_out, mode, local_ts, remote_ts,
    );
    if flags & 8 != 0 {
        sa.encap = Some(UdpEncap {
            local: SocketAddr::new(ip(local), b.u16()),
            remote: SocketAddr::new(ip(remote), 4500),
        });
    }
    if flags & 16 != 0 {
        let secs = |b: &mut Bytes| match b.u8() {
            0 => None,
            s => Some(Duration::from_secs(u64::from(s))),
        };
        let bytes = |b: &mut Bytes| match b.u8() {
            0 => None,
            s => Some(u64::from(s) * 64),
        };
        sa.lifetime = Lifetime {
            soft_time: secs(b),
            hard_time: secs(b),
            soft_bytes: bytes(b),
            hard_bytes: bytes(b),
        };
    }
    sa.esn = flags & 32 != 0;
    if flags & 64 != 0 {
        sa.replay_window = u32::from(b.u16());
    }
    Some(sa)
}

/// `sa` as the other end holds it.
pub fn mirrored(sa: &ChildSa) -> ChildSa {
    let mut m = sa.clone();
    std::mem::swap(&mut m.spi_in, &mut m.spi_out);
    std::mem::swap(&mut m.keys_in, &mut m.keys_out);
    std::mem::swap(&mut m.local_ts, &mut m.remote_ts);
    if let Mode::Tunnel { local, remote } = sa.mode {
        m.mode = Mode::Tunnel {
            local: remote,
            remote: local,
        };
    }
    m.encap = sa.encap.map(|e| UdpEncap {
        local: e.remote,
        remote: e.local,
    });
    m
}

/// An ICMP echo request from `src` to `dst` (IPv4).
pub fn ping(src: &str, dst: &str, seq: u16) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (ip(src), ip(dst)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64)
        .icmpv4_echo_request(7, seq)
        .write(&mut out, b"seed 001 fuzz")
        .expect("small packet");
    out
}

/// A trigger for traffic from `src` to `dst`, maybe narrowed to a protocol and ports:
/// [narrow, protocol, ports, acquire].
pub fn trigger(b: &mut Bytes, boot: [u8; NONCE_LEN], src: &str, dst: &str) -> Transfer {
    let mut selector =
        Selector::parse(&format!("{src}/32"), &format!("{dst}/32")).expect("selector");
    if b.u8() & 1 == 1 {
        selector = selector
            .protocol(b.u8())
            .src_ports(PortRange::single(b.u16()))
            .dst_ports(PortRange::single(b.u16()));
    }
    Transfer::Trigger(Trigger {
        boot,
        acquire: b.u32(),
        selector,
    })
}

/// An ack of the proxy's latest message toward the sender (`latest`) or of any:
/// [mode, acked if any, outcome].
pub fn ack(b: &mut Bytes, boot: [u8; NONCE_LEN], latest: Option<u32>) -> Transfer {
    let acked = match (b.u8() % 3, latest) {
        (0, _) | (_, None) => b.u32(),
        (_, Some(s)) => s,
    };
    let outcome = if b.u8() % 4 == 0 {
        AckOutcome::Refused
    } else {
        AckOutcome::Done
    };
    Transfer::Ack(Ack {
        boot,
        acked,
        outcome,
    })
}

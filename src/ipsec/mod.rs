//! The ESP data plane of a weak terminal (RFC 4303, RFC 4301, RFC 3948).
//!
//! A key-exchange proxy negotiates a Child SA with the peer's IKEv2 daemon and hands the
//! terminal a [`ChildSa`] — a plain value with SPIs, suite, keys, mode, encapsulation,
//! traffic selectors and lifetimes. The terminal installs it into its [`DataPlane`], which
//! then does all per-packet work: no key exchange, only symmetric crypto.
//!
//! - [`DataPlane::protect`] takes an outbound IP packet and answers per the SPD:
//!   [`Outbound::Bypass`], [`Outbound::Discard`], [`Outbound::Protected`] (an IP packet
//!   carrying ESP, or a UDP datagram carrying ESP when NAT traversal is on), or
//!   [`Outbound::Queued`] while an [`IpsecEvent::Acquire`] asks the proxy for keys.
//! - [`DataPlane::unprotect`] / [`DataPlane::unprotect_datagram`] take what arrived and
//!   return the inner packet or a typed [`IpsecError`] (unknown SPI, integrity failure,
//!   replay, bad padding, expired SA …). NAT keepalives and IKE messages behind the
//!   non-ESP marker on port 4500 are told apart from ESP.
//! - Lifetimes, sequence-number exhaustion and acquire time-outs come out as
//!   [`IpsecEvent`]s from [`DataPlane::poll_event`]; time only ever comes in as an
//!   [`Instant`](crate::Instant) argument.
//! - [`IpsecNode`] wraps a data plane as an [`Actor`](crate::Actor) between a plaintext and
//!   a protected interface, for the simulator and bump-in-the-wire drivers.
//!
//! Everything here is `no_std` + `alloc`; every table and queue is bounded by
//! [`DataPlaneConfig`]. See `docs/ipsec.md` for the supported profile and its limits.
//!
//! ```
//! use deputy::Instant;
//! use deputy::ipsec::*;
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//!
//! let suite = Suite::ChaCha20Poly1305;
//! let k1 = SaKeys::from_keymat(suite, &[1u8; 36]).unwrap();
//! let k2 = SaKeys::from_keymat(suite, &[2u8; 36]).unwrap();
//! let tunnel = |a: &str, b: &str| Mode::Tunnel { local: a.parse().unwrap(), remote: b.parse().unwrap() };
//! let ts = |s: &str| vec![TrafficSelector::new(s.parse().unwrap())];
//!
//! // The terminal and its peer, each with one policy: protect 10.1/16 <-> 10.2/16.
//! let mut terminal = DataPlane::new(DataPlaneConfig::default(), Box::new(ChaCha20Rng::seed_from_u64(1))).unwrap();
//! let mut peer = DataPlane::new(DataPlaneConfig::default(), Box::new(ChaCha20Rng::seed_from_u64(2))).unwrap();
//! terminal.add_policy(Policy::new(Selector::parse("10.1.0.0/16", "10.2.0.0/16").unwrap(), Direction::Both, Action::Protect)).unwrap();
//! let now = Instant::ZERO;
//! terminal.install(now, ChildSa::new(0x1000, 0x2000, suite, k1.clone(), k2.clone(),
//!     tunnel("192.0.2.1", "198.51.100.1"), ts("10.1.0.0/16"), ts("10.2.0.0/16"))).unwrap();
//! peer.install(now, ChildSa::new(0x2000, 0x1000, suite, k2, k1,
//!     tunnel("198.51.100.1", "192.0.2.1"), ts("10.2.0.0/16"), ts("10.1.0.0/16"))).unwrap();
//!
//! // A UDP packet 10.1.0.5:1000 -> 10.2.0.9:53 goes out protected and comes back out whole.
//! let mut packet = vec![0x45, 0, 0, 31, 0, 1, 0, 0, 64, 17, 0, 0, 10, 1, 0, 5, 10, 2, 0, 9,
//!     0x03, 0xe8, 0, 53, 0, 11, 0, 0, b'h', b'i', b'!'];
//! let Outbound::Protected(Protected::Ip(esp)) = terminal.protect(now, &packet).unwrap() else { panic!() };
//! let Inbound::Packet { packet: inner, .. } = peer.unprotect(now, &esp).unwrap() else { panic!() };
//! assert_eq!(inner, packet);
//! // A replay of the same ESP packet is refused.
//! assert!(matches!(peer.unprotect(now, &esp), Err(IpsecError::Replay { .. })));
//! ```

mod codec;
mod dataplane;
mod esp;
mod node;
mod packet;
mod replay;
mod sa;
mod selector;
mod spd;
#[cfg(test)]
pub(crate) mod tests;

pub use crate::error::{IpsecError, ReplayKind};
pub use dataplane::{
    Acquire, DataPlane, DataPlaneConfig, DataPlaneStats, EncapDatagram, Inbound, Outbound,
    Protected,
};
pub use esp::{
    ESP_HEADER_LEN, EspTransform, ICV_LEN, Opened, SALT_LEN, SaKeys, Suite, peek_header,
};
pub use node::{IpsecNode, NodeConfig};
pub use packet::{
    PROTO_ESP, PROTO_ICMP, PROTO_ICMPV6, PROTO_IPV4, PROTO_IPV6, PROTO_NONE, PROTO_TCP, PROTO_UDP,
    PacketInfo, encapsulate, parse as parse_packet, udp_packet,
};
pub use replay::ReplayWindow;
pub use sa::{ChildSa, DirectionStats, Lifetime, MAX_TRAFFIC_SELECTORS, Mode, SaStats, UdpEncap};
pub use selector::{AddrRange, PortRange, Selector, TrafficSelector};
pub use spd::{Action, Decision, Direction, Policy, Spd};

/// The IKE/ESP NAT-traversal port (RFC 3948 §2).
pub const NAT_T_PORT: u16 = 4500;

/// Which lifetime limit fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LifetimeTrigger {
    /// The byte count.
    Bytes,
    /// The time since installation.
    Time,
}

/// Something the data plane tells its owner (the terminal or key-exchange proxy).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpsecEvent {
    /// An outbound packet needs protection and no SA covers it: negotiate one. The packet
    /// (and followers to the same destination under the same policy) wait in a bounded
    /// queue and leave protected when [`DataPlane::install`] brings a covering SA.
    Acquire(Acquire),
    /// Nobody installed an SA for an acquire in time; its queued packets were dropped.
    AcquireExpired {
        /// The acquire's id.
        id: u32,
        /// Packets dropped.
        dropped: usize,
    },
    /// A soft lifetime was reached: rekey now; the SA keeps working.
    SoftExpired {
        /// Inbound SPI.
        spi_in: u32,
        /// Outbound SPI.
        spi_out: u32,
        /// Which limit.
        trigger: LifetimeTrigger,
    },
    /// A hard lifetime was reached: the SA pair has been removed.
    HardExpired {
        /// Inbound SPI.
        spi_in: u32,
        /// Outbound SPI.
        spi_out: u32,
        /// Which limit.
        trigger: LifetimeTrigger,
    },
    /// The outbound SA has sent its last sequence number (2^32 − 1, or 2^64 − 1 with
    /// ESN) and refuses to send more: it must be rekeyed.
    SequenceExhausted {
        /// Inbound SPI.
        spi_in: u32,
        /// Outbound SPI.
        spi_out: u32,
    },
}

//! Security associations: the plain value a key-exchange proxy hands over
//! ([`ChildSa`]), and the state the data plane keeps for each installed pair.

use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::esp::{EspTransform, SaKeys, Suite};
use super::packet::PacketInfo;
use super::replay::ReplayWindow;
use super::selector::{PortRange, Selector, TrafficSelector};
use super::{IpsecError, LifetimeTrigger};
use crate::Instant;

/// Most traffic selectors accepted on each side of a Child SA.
pub const MAX_TRAFFIC_SELECTORS: usize = 16;

/// ESP mode (RFC 4301 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// ESP protects the payload of the original IP packet, whose header stays.
    Transport,
    /// ESP protects the whole original packet inside a new outer IP header.
    Tunnel {
        /// Our outer address.
        local: IpAddr,
        /// The peer's outer address.
        remote: IpAddr,
    },
}

impl Mode {
    /// Whether this is transport mode.
    pub const fn is_transport(&self) -> bool {
        matches!(self, Mode::Transport)
    }
}

/// UDP encapsulation of ESP (RFC 3948): the outer UDP endpoints.
///
/// With encapsulation the outer addresses are these (not the tunnel's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpEncap {
    /// Our address and port (normally 4500).
    pub local: SocketAddr,
    /// The peer's address and port as seen through any NAT.
    pub remote: SocketAddr,
}

/// SA lifetimes (RFC 4301 §4.4.2.1). `None` disables a limit. Soft limits raise
/// [`IpsecEvent::SoftExpired`](super::IpsecEvent::SoftExpired) once (time to rekey); hard
/// limits remove the SA ([`IpsecEvent::HardExpired`](super::IpsecEvent::HardExpired)).
/// Byte counts are payload bytes, per direction; times run from installation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Lifetime {
    /// Soft byte limit.
    pub soft_bytes: Option<u64>,
    /// Hard byte limit.
    pub hard_bytes: Option<u64>,
    /// Soft time limit.
    pub soft_time: Option<Duration>,
    /// Hard time limit.
    pub hard_time: Option<Duration>,
}

/// A Child SA pair as negotiated by IKEv2 and handed to the terminal: everything the data
/// plane needs, as a plain value (see `ChildSa::encode` for its wire form). Keys wipe
/// themselves on drop; `Debug` does not print them.
#[derive(Clone, Debug, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct ChildSa {
    /// SPI of the inbound SA (chosen by us; the peer writes it).
    #[zeroize(skip)]
    pub spi_in: u32,
    /// SPI of the outbound SA (chosen by the peer; we write it).
    #[zeroize(skip)]
    pub spi_out: u32,
    /// The cryptographic suite.
    #[zeroize(skip)]
    pub suite: Suite,
    /// Keys of the inbound SA.
    pub keys_in: SaKeys,
    /// Keys of the outbound SA.
    pub keys_out: SaKeys,
    /// Transport or tunnel.
    #[zeroize(skip)]
    pub mode: Mode,
    /// UDP encapsulation endpoints, if NAT traversal is in use.
    #[zeroize(skip)]
    pub encap: Option<UdpEncap>,
    /// Our side's traffic selectors (sources of outbound packets).
    #[zeroize(skip)]
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's traffic selectors (destinations of outbound packets).
    #[zeroize(skip)]
    pub remote_ts: Vec<TrafficSelector>,
    /// Lifetimes.
    #[zeroize(skip)]
    pub lifetime: Lifetime,
    /// Extended (64-bit) sequence numbers (RFC 4303 §2.2.1).
    #[zeroize(skip)]
    pub esn: bool,
    /// Anti-replay window size in packets (1 ..= 4096).
    #[zeroize(skip)]
    pub replay_window: u32,
}

impl ChildSa {
    /// A tunnel- or transport-mode SA pair covering everything between the given
    /// selectors, with the default 64-packet replay window, no ESN, no lifetimes and no
    /// encapsulation. Adjust the public fields for the rest.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spi_in: u32,
        spi_out: u32,
        suite: Suite,
        keys_in: SaKeys,
        keys_out: SaKeys,
        mode: Mode,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
    ) -> ChildSa {
        ChildSa {
            spi_in,
            spi_out,
            suite,
            keys_in,
            keys_out,
            mode,
            encap: None,
            local_ts,
            remote_ts,
            lifetime: Lifetime::default(),
            esn: false,
            replay_window: ReplayWindow::DEFAULT_SIZE,
        }
    }

    /// Check the SA for consistency: key lengths, SPIs (RFC 4303 §2.1 reserves 0..=255),
    /// selector counts, address families, ports, window size, and soft ≤ hard.
    pub fn validate(&self) -> Result<(), IpsecError> {
        self.keys_in.check(self.suite)?;
        self.keys_out.check(self.suite)?;
        if self.spi_in < 256 || self.spi_out < 256 {
            return Err(IpsecError::ReservedSpi);
        }
        for ts in [&self.local_ts, &self.remote_ts] {
            if ts.is_empty() || ts.len() > MAX_TRAFFIC_SELECTORS {
                return Err(IpsecError::TrafficSelectorCount);
            }
        }
        if let Mode::Tunnel { local, remote } = self.mode
            && local.is_ipv4() != remote.is_ipv4()
        {
            return Err(IpsecError::AddressFamilyMismatch);
        }
        if let Some(e) = self.encap {
            if e.local.is_ipv4() != e.remote.is_ipv4() {
                return Err(IpsecError::AddressFamilyMismatch);
            }
            if e.local.port() == 0 || e.remote.port() == 0 {
                return Err(IpsecError::EncapPortZero);
            }
        }
        ReplayWindow::new(self.replay_window)?;
        let l = &self.lifetime;
        let bytes_ok = match (l.soft_bytes, l.hard_bytes) {
            (Some(s), Some(h)) => s <= h,
            _ => true,
        };
        let time_ok = match (l.soft_time, l.hard_time) {
            (Some(s), Some(h)) => s <= h,
            _ => true,
        };
        if !bytes_ok || !time_ok {
            return Err(IpsecError::SoftLifetimeBeyondHard);
        }
        Ok(())
    }

    /// Whether an outbound packet falls under this SA's selectors.
    pub fn covers_outbound(&self, p: &PacketInfo) -> bool {
        self.local_ts
            .iter()
            .any(|ts| ts.matches(p.src, p.protocol, p.src_port))
            && self
                .remote_ts
                .iter()
                .any(|ts| ts.matches(p.dst, p.protocol, p.dst_port))
    }

    /// Whether the packet a selector names (one per field, as an acquire's or a trigger's:
    /// host addresses, one port or any, a protocol or any) falls under this SA's selectors
    /// outbound.
    pub fn covers_selector(&self, s: &Selector) -> bool {
        let proto = s.protocol.unwrap_or(0);
        let port = |p: &PortRange| (!p.is_any()).then(|| p.start());
        self.local_ts
            .iter()
            .any(|ts| ts.matches(s.src.start(), proto, port(&s.src_ports)))
            && self
                .remote_ts
                .iter()
                .any(|ts| ts.matches(s.dst.start(), proto, port(&s.dst_ports)))
    }

    /// Whether a decrypted inbound packet falls under this SA's selectors (RFC 4301 §5.2
    /// step 4: its source is the peer's side, its destination ours).
    pub fn covers_inbound(&self, p: &PacketInfo) -> bool {
        self.remote_ts
            .iter()
            .any(|ts| ts.matches(p.src, p.protocol, p.src_port))
            && self
                .local_ts
                .iter()
                .any(|ts| ts.matches(p.dst, p.protocol, p.dst_port))
    }
}

/// Counters of one direction of an SA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets processed successfully.
    pub packets: u64,
    /// Payload bytes processed successfully.
    pub bytes: u64,
}

/// Counters of an installed SA pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaStats {
    /// Outbound traffic.
    pub outbound: DirectionStats,
    /// Inbound traffic.
    pub inbound: DirectionStats,
    /// Inbound packets whose ICV did not verify.
    pub integrity_failures: u64,
    /// Inbound packets refused by the anti-replay window (after verifying).
    pub replay_drops: u64,
    /// Inbound packets that verified but had bad padding or an unusable payload.
    pub malformed: u64,
    /// Inbound packets outside the SA's traffic selectors.
    pub selector_mismatches: u64,
    /// The next outbound sequence number.
    pub next_seq: u64,
}

/// Runtime state of one installed SA pair.
pub(crate) struct SaEntry {
    pub(crate) sa: ChildSa,
    pub(crate) inbound: EspTransform,
    pub(crate) outbound: EspTransform,
    pub(crate) window: ReplayWindow,
    /// The next outbound sequence number (starts at 1).
    pub(crate) next_seq: u64,
    pub(crate) installed_at: Instant,
    /// Installation order; the newest covering SA carries outbound traffic.
    pub(crate) generation: u64,
    pub(crate) stats: SaStats,
    pub(crate) soft_fired: bool,
    pub(crate) exhausted_fired: bool,
}

impl SaEntry {
    /// Key the transforms, then wipe the key material from the stored description: from
    /// here on the keys live only inside the cipher states.
    pub(crate) fn new(
        mut sa: ChildSa,
        now: Instant,
        generation: u64,
    ) -> Result<SaEntry, IpsecError> {
        sa.validate()?;
        let inbound = EspTransform::new(sa.suite, &sa.keys_in)?;
        let outbound = EspTransform::new(sa.suite, &sa.keys_out)?;
        sa.keys_in.zeroize();
        sa.keys_out.zeroize();
        Ok(SaEntry {
            inbound,
            outbound,
            window: ReplayWindow::new(sa.replay_window)?,
            next_seq: 1,
            installed_at: now,
            generation,
            stats: SaStats::default(),
            soft_fired: false,
            exhausted_fired: false,
            sa,
        })
    }

    /// The last sequence number this SA may send.
    pub(crate) fn max_seq(&self) -> u64 {
        if self.sa.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        }
    }

    pub(crate) fn seq_exhausted(&self) -> bool {
        self.next_seq > self.max_seq() || self.next_seq == 0
    }

    fn deadline(&self, d: Option<Duration>) -> Option<Instant> {
        d.map(|d| self.installed_at + d)
    }

    pub(crate) fn soft_deadline(&self) -> Option<Instant> {
        if self.soft_fired {
            None
        } else {
            self.deadline(self.sa.lifetime.soft_time)
        }
    }

    pub(crate) fn hard_deadline(&self) -> Option<Instant> {
        self.deadline(self.sa.lifetime.hard_time)
    }

    /// Whether the SA has a byte lifetime (soft or hard).
    pub(crate) fn has_byte_limits(&self) -> bool {
        let l = &self.sa.lifetime;
        l.soft_bytes.is_some() || l.hard_bytes.is_some()
    }

    fn max_bytes(&self) -> u64 {
        self.stats.outbound.bytes.max(self.stats.inbound.bytes)
    }

    /// Whether a hard limit has been reached, and which.
    pub(crate) fn hard_expired(&self, now: Instant) -> Option<LifetimeTrigger> {
        if self.hard_deadline().is_some_and(|t| now >= t) {
            return Some(LifetimeTrigger::Time);
        }
        if self
            .sa
            .lifetime
            .hard_bytes
            .is_some_and(|h| self.max_bytes() >= h)
        {
            return Some(LifetimeTrigger::Bytes);
        }
        None
    }

    /// Whether a soft limit has just been reached (reported once).
    pub(crate) fn take_soft(&mut self, now: Instant) -> Option<LifetimeTrigger> {
        if self.soft_fired {
            return None;
        }
        let trigger = if self.soft_deadline().is_some_and(|t| now >= t) {
            LifetimeTrigger::Time
        } else if self
            .sa
            .lifetime
            .soft_bytes
            .is_some_and(|s| self.max_bytes() >= s)
        {
            LifetimeTrigger::Bytes
        } else {
            return None;
        };
        self.soft_fired = true;
        Some(trigger)
    }

    pub(crate) fn stats(&self) -> SaStats {
        SaStats {
            next_seq: self.next_seq,
            ..self.stats
        }
    }
}

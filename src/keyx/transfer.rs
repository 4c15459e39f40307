//! The key-transfer protocol between an IKE-less terminal and the proxy that runs IKE for
//! it (seed 001's key setting P6 and start request P5; seed 003's proxy request and key
//! transfer, Figs. 12-14).
//!
//! Every message is one UDP datagram between port 500 and port 500 whose payload starts
//! with an IKEv2 header that no IKE daemon answers: both SPIs are the reserved value 100
//! and the exchange type is 240 (private use). A deputy message (`docs/wire.md` framing)
//! follows; its session id is the terminal's id.
//!
//! ```text
//!  0               8               16  17  18  19  20      24      28
//!  +---------------+---------------+---+---+---+---+-------+-------+------------------+
//!  | SPIi = 100    | SPIr = 100    |NP |ver|ex |fl | msgid | length| deputy message   |
//!  |               |               | 0 |x20|240| 0 |   0   |       | (type 0x50-0x59) |
//!  +---------------+---------------+---+---+---+---+-------+-------+------------------+
//! ```
//!
//! The terminal addresses these messages to the *peer* (a trigger) or to where a solicit
//! came from, never to the proxy: the proxy is on the path (001) or the router diverts
//! them to it (003), so neither the user nor the peer ever addresses a proxy. The proxy
//! sends its messages with the peer's address as the source for the same reason.
//!
//! Freshness comes from the terminal. It draws a random 16-byte **boot nonce** when it
//! starts and tells the proxy in a sealed [`Announce`] that echoes the proxy's latest
//! [`Transfer::Solicit`] nonce. Every message the proxy sends afterwards carries that boot
//! nonce inside its sealed body and a sequence number the terminal checks against an
//! anti-replay window: a transfer captured before a reboot, or replayed after, never
//! installs. Everything but the solicit (which carries only a random challenge) is sealed
//! with the terminal's delegation key ([`super::seal`]), bound to the message type, the
//! terminal id and the sequence number.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::IpAddr;

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::seal::{self, DelegationKey, SealContext};
pub use crate::error::TransferError;
use crate::ipsec::{AddrRange, ChildSa, PortRange, Selector};
use crate::wire::{self, FieldWriter, Fields, Limits};

/// Both SPIs of the marker header: the reserved value no IKE SA uses.
pub const RESERVED_SPI: [u8; 8] = [0, 0, 0, 0, 0, 0, 0, 100];
/// The marker header's exchange type (240: IKEv2's private-use range).
pub const EXCHANGE_TYPE: u8 = 240;
/// Length of the marker header (an IKEv2 header).
pub const MARKER_LEN: usize = 28;
/// The UDP port both ends use (IKE's).
pub const PORT: u16 = 500;
/// Length of boot and solicit nonces.
pub const NONCE_LEN: usize = 16;

/// Message types (`docs/wire.md` registry, range 0x50-0x6F).
pub mod msg {
    /// Proxy → terminal: a negotiated Child SA to install.
    pub const INSTALL: u8 = 0x50;
    /// Terminal → proxy: a proxy message was handled.
    pub const ACK: u8 = 0x51;
    /// Proxy → terminal: remove these SAs.
    pub const DELETE: u8 = 0x52;
    /// Proxy → terminal: the negotiation a trigger asked for failed.
    pub const FAILURE: u8 = 0x53;
    /// Terminal → peer (taken by the proxy): negotiate keys for this packet.
    pub const TRIGGER: u8 = 0x54;
    /// Terminal → proxy: who I am, my boot nonce, what I hold.
    pub const ANNOUNCE: u8 = 0x55;
    /// Proxy → terminal, in clear: announce yourself, echoing this nonce.
    pub const SOLICIT: u8 = 0x59;
}

// Outer fields (the deputy message's body).
const F_SEQ: u16 = 0x8001;
const F_SEALED: u16 = 0x8002;
const F_CHALLENGE: u16 = 0x8003;
// Fields inside a sealed body.
const B_BOOT: u16 = 0x8001;
const B_ECHO: u16 = 0x8002;
const B_ADDRESS: u16 = 0x8003;
const B_SERVICE: u16 = 0x8004;
const B_SUITES: u16 = 0x8005;
const B_HELD: u16 = 0x8006;
const B_ACQUIRE: u16 = 0x8007;
const B_SRC: u16 = 0x8008;
const B_DST: u16 = 0x8009;
const B_PROTO: u16 = 0x800A;
const B_SPORT: u16 = 0x800B;
const B_DPORT: u16 = 0x800C;
const B_ACKED: u16 = 0x800D;
const B_OUTCOME: u16 = 0x800E;
const B_CHILD: u16 = 0x800F;
const B_REPLACES: u16 = 0x8010;
const B_SPIS: u16 = 0x8011;
const B_REASON: u16 = 0x8012;

/// At most this many addresses in an announce.
pub const MAX_ADDRESSES: usize = 8;
/// At most this many services in an announce.
pub const MAX_SERVICES: usize = 16;
/// At most this many SAs an announce imports (¶0012).
pub const MAX_HELD: usize = 4;
/// At most this many SPIs in one delete.
pub const MAX_DELETE_SPIS: usize = 16;
/// At most this many fields in a sealed body.
const MAX_BODY_FIELDS: usize = 48;

/// A service a terminal offers (¶0031: the proxy may derive policy rows from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    /// IP protocol (6 TCP, 17 UDP …).
    pub protocol: u8,
    /// The port it listens on.
    pub port: u16,
}

/// The terminal tells the proxy who it is (¶0012, ¶0031).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// The terminal's boot nonce: every later proxy message must carry it.
    pub boot: [u8; NONCE_LEN],
    /// The solicit nonce this answers; `None` for an unsolicited announce at start-up,
    /// which the proxy answers with a solicit (it may not change the boot nonce).
    pub echo: Option<[u8; NONCE_LEN]>,
    /// The terminal's addresses.
    pub addresses: Vec<IpAddr>,
    /// Services it offers.
    pub services: Vec<Service>,
    /// ESP suites it runs (IANA transform ids as `ipsec::Suite::id` gives them).
    pub suites: Vec<u8>,
    /// SAs it already holds, set by other means (¶0012): the proxy imports them.
    pub held: Vec<ChildSa>,
}

/// The terminal asks for keys for a packet (seed 001 S13, seed 003 Fig. 12).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// The boot nonce.
    pub boot: [u8; NONCE_LEN],
    /// The terminal's acquire id, echoed in the answer.
    pub acquire: u32,
    /// The packet that needs protection (source = the terminal).
    pub selector: Selector,
}

/// What became of a proxy message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Installed, deleted or noted.
    Done,
    /// The terminal's data plane refused the SA (its bound, a duplicate SPI, a suite it
    /// lacks): the proxy must not count it as installed.
    Refused,
}

/// The terminal acknowledges a proxy message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The boot nonce.
    pub boot: [u8; NONCE_LEN],
    /// The proxy message's sequence number.
    pub acked: u32,
    /// What became of it.
    pub outcome: AckOutcome,
}

/// A negotiated Child SA for the terminal (seed 001 S9/S19, seed 003 Fig. 14).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    /// The boot nonce.
    pub boot: [u8; NONCE_LEN],
    /// The SA, from the terminal's side, with its remaining lifetime.
    pub child: Box<ChildSa>,
    /// The inbound SPI of the SA this one rekeys (it stays until a delete).
    pub replaces: Option<u32>,
    /// The trigger this answers, if any.
    pub acquire: Option<u32>,
}

/// SAs the terminal must remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    /// The boot nonce.
    pub boot: [u8; NONCE_LEN],
    /// Inbound SPIs.
    pub spis: Vec<u32>,
}

/// Why a negotiation on the terminal's behalf failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The peer refused our authentication, or we refused the peer's.
    AuthenticationFailed,
    /// The proxy's policy does not let this terminal talk to this peer.
    PolicyDenied,
    /// No proposal acceptable to both.
    NoProposal,
    /// The peer refused the traffic selectors.
    TsUnacceptable,
    /// The peer did not answer.
    Timeout,
    /// The proxy holds no credentials for the terminal (or its secure store is absent).
    NoCredentials,
    /// The proxy is at its bound of concurrent negotiations.
    Busy,
    /// The peer refused with another error, or answered with something unusable.
    PeerError,
}

impl FailureReason {
    fn code(self) -> u8 {
        match self {
            FailureReason::AuthenticationFailed => 1,
            FailureReason::PolicyDenied => 2,
            FailureReason::NoProposal => 3,
            FailureReason::TsUnacceptable => 4,
            FailureReason::Timeout => 5,
            FailureReason::NoCredentials => 6,
            FailureReason::Busy => 7,
            FailureReason::PeerError => 8,
        }
    }

    fn from_code(c: u8) -> Result<FailureReason, TransferError> {
        Ok(match c {
            1 => FailureReason::AuthenticationFailed,
            2 => FailureReason::PolicyDenied,
            3 => FailureReason::NoProposal,
            4 => FailureReason::TsUnacceptable,
            5 => FailureReason::Timeout,
            6 => FailureReason::NoCredentials,
            7 => FailureReason::Busy,
            8 => FailureReason::PeerError,
            _ => return Err(TransferError::BadBody),
        })
    }
}

/// The negotiation a trigger asked for failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The boot nonce.
    pub boot: [u8; NONCE_LEN],
    /// The trigger's acquire id.
    pub acquire: u32,
    /// Why.
    pub reason: FailureReason,
}

/// One key-transfer message, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// Proxy → terminal, in clear: announce yourself and echo this challenge.
    Solicit {
        /// The challenge.
        challenge: [u8; NONCE_LEN],
    },
    /// Terminal → proxy.
    Announce(Announce),
    /// Terminal → peer, taken by the proxy.
    Trigger(Trigger),
    /// Terminal → proxy.
    Ack(Ack),
    /// Proxy → terminal.
    Install(Install),
    /// Proxy → terminal.
    Delete(Delete),
    /// Proxy → terminal.
    Failure(Failure),
}

impl Transfer {
    /// The message type.
    pub fn msg_type(&self) -> u8 {
        match self {
            Transfer::Solicit { .. } => msg::SOLICIT,
            Transfer::Announce(_) => msg::ANNOUNCE,
            Transfer::Trigger(_) => msg::TRIGGER,
            Transfer::Ack(_) => msg::ACK,
            Transfer::Install(_) => msg::INSTALL,
            Transfer::Delete(_) => msg::DELETE,
            Transfer::Failure(_) => msg::FAILURE,
        }
    }

    /// Whether the terminal sends this type (else the proxy does).
    pub fn from_terminal(msg_type: u8) -> bool {
        matches!(msg_type, msg::ANNOUNCE | msg::TRIGGER | msg::ACK)
    }

    /// The boot nonce the message carries (none for a solicit).
    pub fn boot(&self) -> Option<&[u8; NONCE_LEN]> {
        match self {
            Transfer::Solicit { .. } => None,
            Transfer::Announce(m) => Some(&m.boot),
            Transfer::Trigger(m) => Some(&m.boot),
            Transfer::Ack(m) => Some(&m.boot),
            Transfer::Install(m) => Some(&m.boot),
            Transfer::Delete(m) => Some(&m.boot),
            Transfer::Failure(m) => Some(&m.boot),
        }
    }

    /// The whole UDP payload: marker header ‖ deputy message, the body sealed with `key`
    /// (a solicit carries its challenge in clear and ignores `key`).
    pub fn encode(
        &self,
        terminal: u64,
        seq: u32,
        key: &DelegationKey,
        rng: &mut dyn CryptoRng,
    ) -> Result<Vec<u8>, TransferError> {
        let ty = self.msg_type();
        let fields = FieldWriter::new().u32(F_SEQ, seq);
        let fields = match self {
            Transfer::Solicit { challenge } => fields.bytes(F_CHALLENGE, challenge),
            _ => {
                let body = self.body()?;
                let ctx = SealContext {
                    msg_type: ty,
                    session: terminal,
                    seq,
                };
                fields.bytes(F_SEALED, &seal::seal(key, ctx, &body, rng))
            }
        };
        let message = wire::encode(ty, terminal, fields)?;
        let total = MARKER_LEN + message.len();
        let len = u32::try_from(total).map_err(|_| TransferError::BadBody)?;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&RESERVED_SPI);
        out.extend_from_slice(&RESERVED_SPI);
        out.extend_from_slice(&[0, 0x20, EXCHANGE_TYPE, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&message);
        Ok(out)
    }

    /// The sealed body's plaintext (holds keys for an install: wiped on drop).
    fn body(&self) -> Result<Zeroizing<Vec<u8>>, TransferError> {
        let mut b = Body(Zeroizing::new(Vec::new()));
        match self {
            Transfer::Solicit { .. } => {}
            Transfer::Announce(m) => {
                b.put(B_BOOT, &m.boot)?;
                if let Some(e) = &m.echo {
                    b.put(B_ECHO, e)?;
                }
                check_count(m.addresses.len(), MAX_ADDRESSES)?;
                for a in &m.addresses {
                    b.put(B_ADDRESS, &ip_bytes(*a))?;
                }
                check_count(m.services.len(), MAX_SERVICES)?;
                for s in &m.services {
                    let p = s.port.to_be_bytes();
                    b.put(B_SERVICE, &[s.protocol, p[0], p[1]])?;
                }
                b.put(B_SUITES, &m.suites)?;
                check_count(m.held.len(), MAX_HELD)?;
                for sa in &m.held {
                    let enc = sa.encode().map_err(|_| TransferError::BadBody)?;
                    b.put(B_HELD, &enc)?;
                }
            }
            Transfer::Trigger(m) => {
                b.put(B_BOOT, &m.boot)?;
                b.put(B_ACQUIRE, &m.acquire.to_be_bytes())?;
                let s = &m.selector;
                // A trigger names one packet: host addresses, one port or any.
                b.put(B_SRC, &ip_bytes(s.src.start()))?;
                b.put(B_DST, &ip_bytes(s.dst.start()))?;
                if let Some(p) = s.protocol {
                    b.put(B_PROTO, &[p])?;
                }
                if !s.src_ports.is_any() {
                    b.put(B_SPORT, &s.src_ports.start().to_be_bytes())?;
                }
                if !s.dst_ports.is_any() {
                    b.put(B_DPORT, &s.dst_ports.start().to_be_bytes())?;
                }
            }
            Transfer::Ack(m) => {
                b.put(B_BOOT, &m.boot)?;
                b.put(B_ACKED, &m.acked.to_be_bytes())?;
                let o = match m.outcome {
                    AckOutcome::Done => 0,
                    AckOutcome::Refused => 1,
                };
                b.put(B_OUTCOME, &[o])?;
            }
            Transfer::Install(m) => {
                b.put(B_BOOT, &m.boot)?;
                let enc = m.child.encode().map_err(|_| TransferError::BadBody)?;
                b.put(B_CHILD, &enc)?;
                if let Some(r) = m.replaces {
                    b.put(B_REPLACES, &r.to_be_bytes())?;
                }
                if let Some(a) = m.acquire {
                    b.put(B_ACQUIRE, &a.to_be_bytes())?;
                }
            }
            Transfer::Delete(m) => {
                b.put(B_BOOT, &m.boot)?;
                check_count(m.spis.len(), MAX_DELETE_SPIS)?;
                let spis: Vec<u8> = m.spis.iter().flat_map(|s| s.to_be_bytes()).collect();
                b.put(B_SPIS, &spis)?;
            }
            Transfer::Failure(m) => {
                b.put(B_BOOT, &m.boot)?;
                b.put(B_ACQUIRE, &m.acquire.to_be_bytes())?;
                b.put(B_REASON, &[m.reason.code()])?;
            }
        }
        Ok(b.0)
    }
}

fn check_count(n: usize, max: usize) -> Result<(), TransferError> {
    if n > max {
        Err(TransferError::BadBody)
    } else {
        Ok(())
    }
}

pub(crate) fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

pub(crate) fn ip_from(b: &[u8]) -> Result<IpAddr, TransferError> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        Ok(IpAddr::from(v4))
    } else if let Ok(v6) = <[u8; 16]>::try_from(b) {
        Ok(IpAddr::from(v6))
    } else {
        Err(TransferError::BadBody)
    }
}

/// A sealed body's plaintext being written: TLV fields (`docs/wire.md`) in a buffer that
/// wipes itself, since an install's body holds keys.
struct Body(Zeroizing<Vec<u8>>);

impl Body {
    fn put(&mut self, ty: u16, value: &[u8]) -> Result<(), TransferError> {
        let len = u16::try_from(value.len()).map_err(|_| TransferError::BadBody)?;
        self.0.extend_from_slice(&ty.to_be_bytes());
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(value);
        Ok(())
    }
}

/// Whether a UDP payload starts with the marker header (cheap: no decoding). Seed 001's
/// proxy uses it to tell key-transfer messages from IKE at S3 and S13.
pub fn is_marked(payload: &[u8]) -> bool {
    payload.len() >= MARKER_LEN
        && payload[..8] == RESERVED_SPI
        && payload[8..16] == RESERVED_SPI
        && payload[18] == EXCHANGE_TYPE
}

/// A key-transfer datagram whose header and framing were checked but whose body is not
/// opened yet: the receiver reads the terminal id to pick the key first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The message type.
    pub msg_type: u8,
    /// The terminal id (the deputy header's session id).
    pub terminal: u64,
    /// The sender's sequence number.
    pub seq: u32,
    sealed: Option<&'a [u8]>,
    challenge: Option<[u8; NONCE_LEN]>,
}

impl<'a> Envelope<'a> {
    /// Check the marker header and the deputy framing of a UDP payload.
    pub fn parse(payload: &'a [u8]) -> Result<Envelope<'a>, TransferError> {
        if !is_marked(payload) {
            return Err(TransferError::NoMarker);
        }
        let said = u32::from_be_bytes([payload[24], payload[25], payload[26], payload[27]]);
        let said = usize::try_from(said).unwrap_or(usize::MAX);
        if said != payload.len() {
            return Err(TransferError::BadLength {
                said,
                got: payload.len(),
            });
        }
        let m = wire::Message::decode(&payload[MARKER_LEN..], &Limits::default())?;
        let ty = m.msg_type();
        if !matches!(ty, msg::INSTALL..=msg::ANNOUNCE | msg::SOLICIT) {
            return Err(TransferError::UnknownMessage(ty));
        }
        let f = m.fields;
        f.check_known(&[F_SEQ, F_SEALED, F_CHALLENGE], Default::default())?;
        let seq = f.u32(F_SEQ)?;
        let (sealed, challenge) = if ty == msg::SOLICIT {
            (None, Some(f.array::<NONCE_LEN>(F_CHALLENGE)?))
        } else {
            (Some(f.bytes(F_SEALED)?), None)
        };
        Ok(Envelope {
            msg_type: ty,
            terminal: m.session(),
            seq,
            sealed,
            challenge,
        })
    }

    /// Open the body with the terminal's delegation key and decode the message.
    pub fn open(&self, key: &DelegationKey) -> Result<Transfer, TransferError> {
        if let Some(challenge) = self.challenge {
            return Ok(Transfer::Solicit { challenge });
        }
        let sealed = self.sealed.ok_or(TransferError::BadBody)?;
        let ctx = SealContext {
            msg_type: self.msg_type,
            session: self.terminal,
            seq: self.seq,
        };
        let plain = seal::open(key, ctx, sealed).map_err(|_| TransferError::SealRejected)?;
        decode_body(self.msg_type, &plain)
    }
}

fn decode_body(ty: u8, plain: &[u8]) -> Result<Transfer, TransferError> {
    let f = Fields::parse(plain, MAX_BODY_FIELDS).map_err(|_| TransferError::BadBody)?;
    let bad = |_| TransferError::BadBody;
    let boot = f.array::<NONCE_LEN>(B_BOOT).map_err(bad)?;
    let u32_of = |ty| f.u32(ty).map_err(bad);
    Ok(match ty {
        msg::ANNOUNCE => {
            let echo = match f.get(B_ECHO).map_err(bad)? {
                Some(e) => {
                    Some(<[u8; NONCE_LEN]>::try_from(e).map_err(|_| TransferError::BadBody)?)
                }
                None => None,
            };
            let addresses = f
                .all(B_ADDRESS)
                .map(ip_from)
                .collect::<Result<Vec<_>, _>>()?;
            check_count(addresses.len(), MAX_ADDRESSES)?;
            let services = f
                .all(B_SERVICE)
                .map(|v| match v {
                    [p, a, b] => Ok(Service {
                        protocol: *p,
                        port: u16::from_be_bytes([*a, *b]),
                    }),
                    _ => Err(TransferError::BadBody),
                })
                .collect::<Result<Vec<_>, _>>()?;
            check_count(services.len(), MAX_SERVICES)?;
            let held = f
                .all(B_HELD)
                .map(|v| ChildSa::decode(v).map_err(|_| TransferError::BadBody))
                .collect::<Result<Vec<_>, _>>()?;
            check_count(held.len(), MAX_HELD)?;
            Transfer::Announce(Announce {
                boot,
                echo,
                addresses,
                services,
                suites: f.get(B_SUITES).map_err(bad)?.unwrap_or_default().to_vec(),
                held,
            })
        }
        msg::TRIGGER => {
            let src = ip_from(f.bytes(B_SRC).map_err(bad)?)?;
            let dst = ip_from(f.bytes(B_DST).map_err(bad)?)?;
            if src.is_ipv4() != dst.is_ipv4() {
                return Err(TransferError::BadSelector);
            }
            let mut selector = Selector::new(AddrRange::host(src), AddrRange::host(dst));
            if let Some(p) = f.get(B_PROTO).map_err(bad)? {
                let [p] = p else {
                    return Err(TransferError::BadBody);
                };
                selector = selector.protocol(*p);
            }
            if let Some(p) = f.get(B_SPORT).map_err(bad)? {
                selector = selector.src_ports(PortRange::single(port_of(p)?));
            }
            if let Some(p) = f.get(B_DPORT).map_err(bad)? {
                selector = selector.dst_ports(PortRange::single(port_of(p)?));
            }
            Transfer::Trigger(Trigger {
                boot,
                acquire: u32_of(B_ACQUIRE)?,
                selector,
            })
        }
        msg::ACK => Transfer::Ack(Ack {
            boot,
            acked: u32_of(B_ACKED)?,
            outcome: match f.u8(B_OUTCOME).map_err(bad)? {
                0 => AckOutcome::Done,
                1 => AckOutcome::Refused,
                _ => return Err(TransferError::BadBody),
            },
        }),
        msg::INSTALL => {
            let child = ChildSa::decode(f.bytes(B_CHILD).map_err(bad)?)
                .map_err(|_| TransferError::BadBody)?;
            Transfer::Install(Install {
                boot,
                child: Box::new(child),
                replaces: f.get(B_REPLACES).map_err(bad)?.map(u32_from).transpose()?,
                acquire: f.get(B_ACQUIRE).map_err(bad)?.map(u32_from).transpose()?,
            })
        }
        msg::DELETE => {
            let raw = f.bytes(B_SPIS).map_err(bad)?;
            if raw.len() % 4 != 0 || raw.len() / 4 > MAX_DELETE_SPIS {
                return Err(TransferError::BadBody);
            }
            Transfer::Delete(Delete {
                boot,
                spis: raw
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            })
        }
        msg::FAILURE => Transfer::Failure(Failure {
            boot,
            acquire: u32_of(B_ACQUIRE)?,
            reason: FailureReason::from_code(f.u8(B_REASON).map_err(bad)?)?,
        }),
        other => return Err(TransferError::UnknownMessage(other)),
    })
}

fn port_of(v: &[u8]) -> Result<u16, TransferError> {
    <[u8; 2]>::try_from(v)
        .map(u16::from_be_bytes)
        .map_err(|_| TransferError::BadBody)
}

fn u32_from(v: &[u8]) -> Result<u32, TransferError> {
    <[u8; 4]>::try_from(v)
        .map(u32::from_be_bytes)
        .map_err(|_| TransferError::BadBody)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipsec::{Mode, SaKeys, Suite, TrafficSelector};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn child() -> ChildSa {
        let s = Suite::AesGcm128;
        let k = SaKeys::from_keymat(s, &[7u8; 20]).unwrap();
        ChildSa::new(
            0x1111,
            0x2222,
            s,
            k.clone(),
            k,
            Mode::Transport,
            alloc::vec![TrafficSelector::host("10.0.0.2".parse().unwrap())],
            alloc::vec![TrafficSelector::host("192.0.2.1".parse().unwrap())],
        )
    }

    fn all() -> Vec<Transfer> {
        let boot = [3u8; NONCE_LEN];
        alloc::vec![
            Transfer::Solicit {
                challenge: [9; NONCE_LEN]
            },
            Transfer::Announce(Announce {
                boot,
                echo: Some([9; NONCE_LEN]),
                addresses: alloc::vec!["10.0.0.2".parse().unwrap(), "2001:db8::2".parse().unwrap()],
                services: alloc::vec![Service {
                    protocol: 17,
                    port: 137
                }],
                suites: alloc::vec![20, 28],
                held: alloc::vec![child()],
            }),
            Transfer::Trigger(Trigger {
                boot,
                acquire: 5,
                selector: Selector::parse("10.0.0.2/32", "192.0.2.1/32")
                    .unwrap()
                    .protocol(1)
                    .src_ports(PortRange::single(8)),
            }),
            Transfer::Ack(Ack {
                boot,
                acked: 4,
                outcome: AckOutcome::Refused
            }),
            Transfer::Install(Install {
                boot,
                child: Box::new(child()),
                replaces: Some(77),
                acquire: None
            }),
            Transfer::Delete(Delete {
                boot,
                spis: alloc::vec![1, 2, 3]
            }),
            Transfer::Failure(Failure {
                boot,
                acquire: 5,
                reason: FailureReason::Timeout
            }),
        ]
    }

    #[test]
    fn every_message_round_trips_behind_the_marker() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let key = DelegationKey::generate(&mut rng);
        for m in all() {
            let bytes = m.encode(42, 7, &key, &mut rng).unwrap();
            assert!(is_marked(&bytes));
            let env = Envelope::parse(&bytes).unwrap();
            assert_eq!((env.msg_type, env.terminal, env.seq), (m.msg_type(), 42, 7));
            assert_eq!(env.open(&key).unwrap(), m);
        }
    }

    #[test]
    fn another_key_another_place_or_damage_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let key = DelegationKey::generate(&mut rng);
        let other = DelegationKey::generate(&mut rng);
        let m = &all()[4];
        let bytes = m.encode(42, 7, &key, &mut rng).unwrap();
        assert_eq!(
            Envelope::parse(&bytes).unwrap().open(&other),
            Err(TransferError::SealRejected)
        );
        // The same body under another sequence number (the header's) does not open.
        let mut moved = bytes.clone();
        let seq_at = MARKER_LEN + 16 + 4;
        moved[seq_at + 3] ^= 1;
        assert_eq!(
            Envelope::parse(&moved).unwrap().open(&key),
            Err(TransferError::SealRejected)
        );
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            Envelope::parse(&flipped).unwrap().open(&key),
            Err(TransferError::SealRejected)
        );
        assert_eq!(Envelope::parse(&bytes[..20]), Err(TransferError::NoMarker));
        assert!(matches!(
            Envelope::parse(&bytes[..bytes.len() - 1]),
            Err(TransferError::BadLength { .. })
        ));
        let mut ike = bytes.clone();
        ike[7] = 1;
        assert_eq!(Envelope::parse(&ike), Err(TransferError::NoMarker));
    }

    #[test]
    fn bounds_on_lists_are_enforced_when_encoding() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let key = DelegationKey::generate(&mut rng);
        let d = Transfer::Delete(Delete {
            boot: [0; NONCE_LEN],
            spis: alloc::vec![1; MAX_DELETE_SPIS + 1],
        });
        assert_eq!(d.encode(1, 1, &key, &mut rng), Err(TransferError::BadBody));
    }
}

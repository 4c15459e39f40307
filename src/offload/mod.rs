//! Seed 000: crypto communication deputized to a home server.
//!
//! A home appliance that cannot do strong cryptography lets a *crypto proxy* on the closed
//! home network encrypt and decrypt for it; *remote nodes* on the open network talk to the
//! appliance only through the proxy. Three actors, one per party of the seed:
//!
//! | actor | network | seed |
//! |---|---|---|
//! | [`Appliance`] | closed (home LAN), reachable from outside by datagrams | 家庭内ノード 122–128 |
//! | [`CryptoProxy`] | closed, its stream port reachable through the gateway | 家庭内サーバ 120 |
//! | [`RemoteNode`] | open (internet) | 外部ノード 106 |
//!
//! ```text
//!  remote node                    gateway          appliance             crypto proxy
//!      │ S21 crypto request (UDP) ───┼──────────────▶ │                        │
//!      │ ◀────────── S22 crypto accept + proxy designation                    │
//!      │ ═══ secure channel (stream through the gateway) ════════════════════ │
//!      │ S23 proxy request {appliance} ─────────────────────────────────────▶ │
//!      │ ◀────────────────────────────────────────────── S24 proxy accept     │
//!      │ S25 secure data ───────────────────────────────────────────────────▶ │
//!      │                                               │ ◀── S26 plain data ── │
//!
//!  flow A' : plaintext or undecryptable data ──▶ appliance drops it,
//!            answers S42 crypto solicitation + proxy designation, flow A resumes at S23
//!
//!  flow B  : appliance ── S31 proxy request {remote address} ──▶ proxy
//!            proxy ═══ channel ═══▶ remote: S32 crypto request; remote: S33 crypto accept
//!            proxy ── S34 proxy accept ──▶ appliance; appliance ── S35 plain data ──▶ proxy
//!            proxy ── S36 secure data (in the channel) ──▶ remote
//! ```
//!
//! Transports, message layouts, the link protection on the closed network, the
//! anti-amplification rules and every bound are described in `docs/offload.md`; the wire
//! table is in `docs/wire.md` ("Seed 000 offload messages").

mod appliance;
mod link;
pub mod messages;
mod proxy;
mod remote;
mod timer;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

pub use crate::ratelimit::RateLimit;
pub use appliance::{Appliance, ApplianceConfig, ApplianceEvent, DirectKey, Solicited};
pub use link::{LinkKey, LinkTiming};
pub use proxy::{AccessPolicy, CryptoProxy, ProxyConfig, ProxyEvent, ServedAppliance};
pub use remote::{AppliancePolicy, Discovery, RemoteEvent, RemoteNode, RemoteNodeConfig, Target};

use crate::channel::{ChannelError, PeerIdentity};
use crate::wire::WireError;

/// The largest application payload one offload message carries: it must fit one
/// unfragmented datagram on the closed network (1,280-byte IPv6 minimum MTU, less headers
/// and framing).
pub const MAX_PAYLOAD: usize = 1200;

/// The longest appliance name accepted (UTF-8 bytes).
pub const MAX_NAME_LEN: usize = 64;

/// Who a party is, as proven to the party that reports it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// A remote node that proved the key of a certificate with this subject.
    Certificate(String),
    /// A remote node that proved knowledge of the pre-shared key with this identity.
    Psk(Vec<u8>),
    /// Data the appliance opened itself with its weak key of this id (¶0062).
    DirectKey(u32),
}

impl Peer {
    /// The identity a secure channel proved, if it proved one.
    pub fn from_channel(identity: &PeerIdentity) -> Option<Peer> {
        match identity {
            PeerIdentity::Certificate(c) => Some(Peer::Certificate(c.subject().into())),
            PeerIdentity::Psk(id) => Some(Peer::Psk(id.clone())),
            PeerIdentity::Anonymous => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Certificate(name) => write!(f, "cert:{name}"),
            Peer::Psk(id) => write!(f, "psk:{}", String::from_utf8_lossy(id)),
            Peer::DirectKey(id) => write!(f, "direct-key:{id}"),
        }
    }
}

/// Which side started a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// Flow A (S21–S26): the remote node.
    Remote,
    /// Flow B (S31–S36): the appliance.
    Appliance,
}

/// Why a party refused a request or ended a session; carried in a refusal message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The proxy does not deputize for that appliance.
    UnknownAppliance,
    /// The access policy does not let this remote node reach that appliance (or, in flow B,
    /// the remote node turned down the appliance).
    AccessDenied,
    /// The session table is full.
    SessionLimit,
    /// A queue or the pending-request table is full; try later.
    Busy,
    /// The remote node could not be reached.
    RemoteUnreachable,
    /// The remote node refused the crypto request (S32).
    RemoteRefused,
    /// The appliance did not acknowledge the forwarded data.
    ApplianceUnreachable,
    /// The payload exceeds [`MAX_PAYLOAD`].
    TooLarge,
    /// A step did not finish in time.
    Timeout,
    /// The session ended.
    Closed,
    /// A request the receiver could not parse or did not expect.
    BadRequest,
    /// A reason this crate does not know (the code is kept).
    Other(u8),
}

impl RefusalReason {
    /// The wire code.
    pub const fn code(self) -> u8 {
        match self {
            RefusalReason::UnknownAppliance => 1,
            RefusalReason::AccessDenied => 2,
            RefusalReason::SessionLimit => 3,
            RefusalReason::Busy => 4,
            RefusalReason::RemoteUnreachable => 5,
            RefusalReason::RemoteRefused => 6,
            RefusalReason::ApplianceUnreachable => 7,
            RefusalReason::TooLarge => 8,
            RefusalReason::Timeout => 9,
            RefusalReason::Closed => 10,
            RefusalReason::BadRequest => 11,
            RefusalReason::Other(c) => c,
        }
    }

    /// The reason with this wire code.
    pub const fn from_code(code: u8) -> Self {
        match code {
            1 => RefusalReason::UnknownAppliance,
            2 => RefusalReason::AccessDenied,
            3 => RefusalReason::SessionLimit,
            4 => RefusalReason::Busy,
            5 => RefusalReason::RemoteUnreachable,
            6 => RefusalReason::RemoteRefused,
            7 => RefusalReason::ApplianceUnreachable,
            8 => RefusalReason::TooLarge,
            9 => RefusalReason::Timeout,
            10 => RefusalReason::Closed,
            11 => RefusalReason::BadRequest,
            c => RefusalReason::Other(c),
        }
    }
}

/// Why an offload input or command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OffloadError {
    /// A message could not be decoded.
    #[error("decode: {0}")]
    Decode(WireError),
    /// A message lacks a field this step needs, or has one it must not.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A message type that does not belong where it arrived.
    #[error("unexpected message type {0:#04x} here")]
    UnexpectedMessage(u8),
    /// A closed-network message from an address that is not our proxy / a served
    /// appliance.
    #[error("closed-network message from unknown {0}")]
    UnknownSource(SocketAddr),
    /// A closed-network message without the link MAC, with a bad one, or with one where
    /// no link key is configured.
    #[error("link authentication failed")]
    LinkAuthentication,
    /// The peer refused, with this reason.
    #[error("refused: {0:?}")]
    Refused(RefusalReason),
    /// The designated proxy's certificate (or handshake) is not trusted: another CA, a
    /// name the remote node does not expect, expired, or no knowledge of the PSK.
    #[error("designated proxy not trusted: {0}")]
    ProxyNotTrusted(ChannelError),
    /// The designated proxy proved who it is, but its certificate (or PSK scope) does not
    /// name the appliance: a forged or wrong designation.
    #[error("proxy is not a deputy of {appliance:?}")]
    ProxyNotDeputy {
        /// The appliance the remote node wanted.
        appliance: String,
    },
    /// A designation named another appliance than the one asked.
    #[error("designation names {got:?}, expected {expected:?}")]
    DesignationMismatch {
        /// The appliance asked for.
        expected: String,
        /// The name in the designation.
        got: String,
    },
    /// The secure channel failed.
    #[error("channel: {0}")]
    Channel(ChannelError),
    /// A step did not finish in time, or retransmissions ran out.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// No session with this id (or stream).
    #[error("unknown session {0:#x}")]
    UnknownSession(u64),
    /// No pending request with this id.
    #[error("unknown request {0:#x}")]
    UnknownRequest(u64),
    /// A payload larger than [`MAX_PAYLOAD`].
    #[error("payload of {len} bytes exceeds {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The appliance name is empty or longer than [`MAX_NAME_LEN`].
    #[error("bad appliance name")]
    BadName,
    /// A datagram the appliance refused: plaintext, or ciphertext it cannot open
    /// (flow A'). It was dropped; a solicitation may have been sent.
    #[error("refused {len}-byte datagram from {from}")]
    RefusedDatagram {
        /// The sender.
        from: SocketAddr,
        /// Its length.
        len: usize,
    },
    /// A crypto request too small to answer without amplification.
    #[error("crypto request of {len} bytes is smaller than the {need}-byte answer")]
    RequestTooSmall {
        /// The request's length.
        len: usize,
        /// The answer's length.
        need: usize,
    },
    /// The peer could not be reached (the stream to it failed to open).
    #[error("unreachable")]
    Unreachable,
    /// A bound of this party was reached (the table or queue named).
    #[error("{0} is full")]
    LocalLimit(&'static str),
    /// A repeated (replayed) message; it was not acted on.
    #[error("replayed message {0}")]
    Replayed(u64),
}

impl From<WireError> for OffloadError {
    fn from(e: WireError) -> Self {
        OffloadError::Decode(e)
    }
}

impl From<OffloadError> for crate::Error {
    fn from(e: OffloadError) -> Self {
        crate::Error::Offload(e)
    }
}

/// What the seed 000 actors tell the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffloadEvent {
    /// From an [`Appliance`].
    Appliance(ApplianceEvent),
    /// From a [`CryptoProxy`].
    Proxy(ProxyEvent),
    /// From a [`RemoteNode`].
    Remote(RemoteEvent),
}

impl From<OffloadEvent> for crate::Event {
    fn from(e: OffloadEvent) -> Self {
        crate::Event::Offload(e)
    }
}

impl From<ApplianceEvent> for crate::Event {
    fn from(e: ApplianceEvent) -> Self {
        crate::Event::Offload(OffloadEvent::Appliance(e))
    }
}

impl From<ProxyEvent> for crate::Event {
    fn from(e: ProxyEvent) -> Self {
        crate::Event::Offload(OffloadEvent::Proxy(e))
    }
}

impl From<RemoteEvent> for crate::Event {
    fn from(e: RemoteEvent) -> Self {
        crate::Event::Offload(OffloadEvent::Remote(e))
    }
}

/// Check an appliance name: 1 to [`MAX_NAME_LEN`] bytes.
pub(crate) fn check_name(name: &str) -> Result<(), OffloadError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(OffloadError::BadName);
    }
    Ok(())
}

/// Check a payload against [`MAX_PAYLOAD`].
pub(crate) fn check_payload(data: &[u8]) -> Result<(), OffloadError> {
    if data.len() > MAX_PAYLOAD {
        return Err(OffloadError::TooLarge {
            len: data.len(),
            max: MAX_PAYLOAD,
        });
    }
    Ok(())
}

/// Exponential back-off: `base` doubled `tries` times, capped at one minute.
pub(crate) fn backoff(base: Duration, tries: u32) -> Duration {
    crate::time::doubled(base, tries.min(16), Duration::from_secs(60))
}

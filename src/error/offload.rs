//! Why a seed 000 offload actor ([`crate::offload`]) refused an input or a command, and
//! the refusal reasons the offload messages carry.

use alloc::string::String;
use core::net::SocketAddr;

use super::ChannelError;
use crate::wire::WireError;

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
    /// The payload exceeds [`MAX_PAYLOAD`](crate::offload::MAX_PAYLOAD).
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
    /// A payload larger than [`MAX_PAYLOAD`](crate::offload::MAX_PAYLOAD).
    #[error("payload of {len} bytes exceeds {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The appliance name is empty or longer than [`MAX_NAME_LEN`](crate::offload::MAX_NAME_LEN).
    #[error("bad appliance name")]
    BadName,
    /// The peer could not be reached (the stream to it failed to open).
    #[error("unreachable")]
    Unreachable,
    /// A repeated (replayed) message; it was not acted on.
    #[error("replayed message {0}")]
    Replayed(u64),
}

impl From<WireError> for OffloadError {
    fn from(e: WireError) -> Self {
        OffloadError::Decode(e)
    }
}

impl From<OffloadError> for super::Error {
    fn from(e: OffloadError) -> Self {
        super::Error::Offload(e)
    }
}

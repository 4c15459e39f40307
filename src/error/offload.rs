//! Why a seed 000 offload actor ([`crate::offload`]) refused an input or a command, and
//! the refusal reasons the offload messages carry.

use alloc::string::String;
use core::net::SocketAddr;

use super::ChannelError;
use crate::stream_id::StreamId;
use crate::wire::WireError;

/// Why a party refused a request or ended a session; carried in a refusal message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OffloadRefusal {
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

impl OffloadRefusal {
    /// The wire code.
    pub const fn code(self) -> u8 {
        match self {
            OffloadRefusal::UnknownAppliance => 1,
            OffloadRefusal::AccessDenied => 2,
            OffloadRefusal::SessionLimit => 3,
            OffloadRefusal::Busy => 4,
            OffloadRefusal::RemoteUnreachable => 5,
            OffloadRefusal::RemoteRefused => 6,
            OffloadRefusal::ApplianceUnreachable => 7,
            OffloadRefusal::TooLarge => 8,
            OffloadRefusal::Timeout => 9,
            OffloadRefusal::Closed => 10,
            OffloadRefusal::BadRequest => 11,
            OffloadRefusal::Other(c) => c,
        }
    }

    /// The reason with this wire code.
    pub const fn from_code(code: u8) -> Self {
        match code {
            1 => OffloadRefusal::UnknownAppliance,
            2 => OffloadRefusal::AccessDenied,
            3 => OffloadRefusal::SessionLimit,
            4 => OffloadRefusal::Busy,
            5 => OffloadRefusal::RemoteUnreachable,
            6 => OffloadRefusal::RemoteRefused,
            7 => OffloadRefusal::ApplianceUnreachable,
            8 => OffloadRefusal::TooLarge,
            9 => OffloadRefusal::Timeout,
            10 => OffloadRefusal::Closed,
            11 => OffloadRefusal::BadRequest,
            c => OffloadRefusal::Other(c),
        }
    }
}

/// Why an offload input or command was refused: one variant per rule broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OffloadError {
    /// A message could not be decoded.
    #[error("decode: {0}")]
    Decode(WireError),
    /// A message type that does not belong where it arrived.
    #[error("unexpected message type {0:#04x} here")]
    UnexpectedMessage(u8),

    // ----- the closed-network link -----
    /// A link message without the sender's epoch.
    #[error("link message without an epoch")]
    LinkWithoutEpoch,
    /// A sequenced link message without a sequence number.
    #[error("link message without a sequence number")]
    LinkWithoutSequence,
    /// A sequenced link message or a resync without the sender's floor.
    #[error("link message without a floor")]
    LinkWithoutFloor,
    /// A link message whose floor (oldest unresolved sequence number) is above its own
    /// sequence number.
    #[error("link floor {floor} above the sequence number {seq}")]
    FloorAboveSequence {
        /// The floor it carried.
        floor: u64,
        /// Its sequence number.
        seq: u64,
    },
    /// A link sequence number further ahead than the receive window.
    #[error("link sequence number {seq} beyond the window of {next}")]
    SequenceOutOfWindow {
        /// Its sequence number.
        seq: u64,
        /// The next sequence number the receiver expects.
        next: u64,
    },
    /// A closed-network message from an address that is not our proxy / a served
    /// appliance.
    #[error("closed-network message from unknown {0}")]
    UnknownSource(SocketAddr),
    /// A message on a keyed closed-network link without the link MAC or with a bad one.
    #[error("link authentication failed")]
    LinkAuthentication,
    /// A message on an unkeyed closed-network link whose damage check (the MAC field under
    /// the public unkeyed key) is missing or wrong: damaged in transit, or from a peer
    /// that uses a link key.
    #[error("link message damaged")]
    LinkDamaged,
    /// A repeated (replayed) message, or one from an epoch the receiver retired; it was
    /// not acted on.
    #[error("replayed message {0}")]
    Replayed(u64),
    /// A link key shorter than [`LinkKey::MIN_LEN`](crate::offload::LinkKey::MIN_LEN) or
    /// longer than [`LinkKey::MAX_LEN`](crate::offload::LinkKey::MAX_LEN) bytes.
    #[error("link key of {0} bytes (16 to 64 allowed)")]
    BadLinkKeyLength(usize),

    // ----- message contents -----
    /// S34 (proxy accept) without the remote node's identity.
    #[error("proxy accept without the remote node")]
    ProxyAcceptWithoutPeer,
    /// S34 (proxy accept) with session id 0.
    #[error("proxy accept without a session")]
    ProxyAcceptWithoutSession,
    /// S26 (plain data from the proxy) with session id 0.
    #[error("plain data without a session")]
    PlainDataWithoutSession,
    /// S32 (crypto request from the proxy) without the appliance's name.
    #[error("crypto request without an appliance")]
    CryptoRequestWithoutAppliance,
    /// A crypto solicitation (S42) from an address no set-up is talking to.
    #[error("unsolicited crypto solicitation from {0}")]
    UnsolicitedSolicitation(SocketAddr),

    // ----- the proxy's identity (remote node) -----
    /// The designated proxy failed the remote node's identity check: a certificate from
    /// another CA, for another name, expired, or a signature that does not prove its key.
    #[error("designated proxy not trusted: {0}")]
    ProxyNotTrusted(ChannelError),
    /// The designated proxy refused the remote node's own credentials (an alert naming
    /// its certificate or PSK identity).
    #[error("proxy refused our credentials: {0}")]
    CredentialsRefused(ChannelError),
    /// The channel handshake with the proxy did not complete for a reason that says
    /// nothing about who the proxy is: damage in transit (a decode error, a bad record
    /// MAC or Finished, a truncated stream), a timeout, or a failed negotiation. A wrong
    /// PSK looks like this too: without the key, damage and a wrong key cannot be told
    /// apart.
    #[error("handshake with the proxy failed: {0}")]
    ProxyHandshakeFailed(ChannelError),
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

    // ----- sessions and set-ups -----
    /// The peer refused, with this reason.
    #[error("refused: {0:?}")]
    Refused(OffloadRefusal),
    /// The secure channel of an established session failed.
    #[error("channel: {0}")]
    Channel(ChannelError),
    /// The session was not up within the remote node's `setup_timeout`.
    #[error("session set-up timed out")]
    SetUpTimeout,
    /// The crypto request (S21) was retransmitted `request_retries` times unanswered.
    #[error("crypto request (S21) unanswered")]
    CryptoRequestUnanswered,
    /// The stream to the proxy could not be opened.
    #[error("unreachable")]
    Unreachable,
    /// No session with this id.
    #[error("unknown session {0:#x}")]
    UnknownSession(u64),
    /// No session with this appliance.
    #[error("no session with {0:?}")]
    NoSession(String),
    /// No pending request with this id.
    #[error("unknown request {0:#x}")]
    UnknownRequest(u64),
    /// No direct (¶0062) key is shared with this appliance.
    #[error("no direct key for {0:?}")]
    NoDirectKey(String),
    /// The proxy does not serve this appliance.
    #[error("{0:?} is not served")]
    NotServed(String),
    /// [`ProxyConfig::serve`](crate::offload::ProxyConfig::serve) was given a name or an
    /// address that is served already.
    #[error("appliance {0:?} (or its address) is served already")]
    ServedTwice(String),
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

    // ----- driver inputs -----
    /// The driver reported a stream accepted under an id already in use.
    #[error("stream id {0:?} reused")]
    StreamIdReused(StreamId),
    /// The driver reported a stream connected that was not connecting.
    #[error("{0:?} connected twice")]
    StreamConnectedTwice(StreamId),
    /// The appliance was handed a stream: it takes datagrams only.
    #[error("an appliance accepts no streams")]
    StreamNotTaken,
    /// The actor was handed a raw packet: offload actors take datagrams and streams.
    #[error("offload actors take no raw packets")]
    PacketNotTaken,
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

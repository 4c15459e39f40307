//! Why a seed 002 rendezvous actor ([`crate::rendezvous`]) refused an input or a command.

use core::net::SocketAddr;

use crate::wire::WireError;

/// Why a registration was refused by the server (counted in [`RefusalCounters`](crate::rendezvous::RefusalCounters)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationRefusal {
    /// The datagram did not decode.
    Malformed,
    /// No key is known for the device ID.
    UnknownDevice,
    /// The MAC did not verify (a spoofed registration).
    BadMac,
    /// The timestamp is outside the allowed clock skew.
    Stale,
    /// The timestamp is not newer than the last accepted one (a replay).
    Replayed,
    /// The source sent too many datagrams.
    RateLimited,
    /// The directory is full of live devices.
    DirectoryFull,
}

/// Why a rendezvous actor refused an input or command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RendezvousError {
    /// A message did not decode.
    #[error("decode: {0}")]
    Decode(WireError),
    /// A message of this type does not fit here.
    #[error("unexpected message type {0:#04x}")]
    UnexpectedMessage(u8),
    /// A registration was refused.
    #[error("registration refused: {0:?}")]
    RegistrationRefused(RegistrationRefusal),
    /// A MAC did not verify.
    #[error("bad MAC")]
    BadMac,
    /// No such request or session.
    #[error("unknown session {0:#x}")]
    UnknownSession(u64),
    /// A password longer than [`Password::MAX_LEN`](crate::rendezvous::Password::MAX_LEN) bytes, or empty.
    #[error("password must be 1 to 64 bytes")]
    BadPassword,
    /// The peer connection is not up.
    #[error("peer connection not established")]
    NotConnected,
    /// A device asked for a request that is not its own, or fetched without a device
    /// certificate naming the request's device (answered with `Refused(NotAuthorized)`).
    #[error("fetch of request {0:#x} not authorized")]
    FetchNotAuthorized(u64),
    /// A stream arrived on a port the server does not serve (it was closed).
    #[error("stream on port {0}, which the server does not serve")]
    PortNotServed(u16),
    /// A device (issuer or acceptor) was offered an inbound stream: it opens its own
    /// streams and accepts none (it was closed).
    #[error("a device accepts no streams")]
    AcceptsNoStreams,
    /// A raw IP packet was given to a rendezvous actor, which runs on UDP and streams.
    #[error("rendezvous actors take no raw packets")]
    TakesNoPackets,
    /// The acceptor's stream to the server closed before it connected.
    #[error("the stream to the server could not be opened")]
    ServerConnectFailed,
    /// Configuration: the acceptor's server channel carries no device identity (S206
    /// needs the device certificate).
    #[error("the acceptor's channel carries no device identity")]
    NoDeviceIdentity,
    /// Configuration: the server's device channel must require device certificates.
    #[error("the device channel must require device certificates")]
    DeviceCertificatesNotRequired,
    /// Configuration: `max_clock_skew` must be shorter than `registration_lifetime`, or
    /// a replayed registration could outlive the replay check.
    #[error("max_clock_skew must be shorter than registration_lifetime")]
    SkewNotShorterThanLifetime,
    /// A datagram arrived on an address this actor does not serve.
    #[error("datagram for {0}, which this actor does not serve")]
    NotServed(SocketAddr),
}

impl From<WireError> for RendezvousError {
    fn from(e: WireError) -> Self {
        RendezvousError::Decode(e)
    }
}

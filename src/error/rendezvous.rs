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
    /// The acceptor's certificate or signature was refused.
    #[error("acceptor not authenticated: {0}")]
    AcceptorNotAuthenticated(&'static str),
    /// A datagram arrived on an address this actor does not serve.
    #[error("datagram for {0}, which this actor does not serve")]
    NotServed(SocketAddr),
}

impl From<WireError> for RendezvousError {
    fn from(e: WireError) -> Self {
        RendezvousError::Decode(e)
    }
}

//! The crate's error types.
//!
//! One enum, [`Error`], with a variant per layer; each layer's own enum carries the detail.
//! Errors are values describing one rejected input or command: an actor that returns one
//! stays usable.
//!
//! The protocols' own error enums live here too (as rustls keeps all of its error types in
//! one module), each re-exported at its protocol's path (`deputy::channel::ChannelError`
//! …). Why here: the aggregate [`Error`] must name every protocol's error, and every
//! protocol returns [`Error`]; keeping both in this module, which imports only the bottom
//! layers (`wire`, `crypto`, the stream id), is what lets the layers point one way.

mod channel;
mod ike;
mod ipsec;
mod keyx;
mod offload;
mod rendezvous;
mod sim;
mod tls;
mod transfer;

pub use channel::{AlertCode, ChannelError};
pub use ike::{AuthFailure, IkeError};
pub use ipsec::{IpsecError, ReplayKind};
pub use keyx::KeyxError;
pub use offload::{OffloadError, OffloadRefusal};
pub use rendezvous::{RegistrationRefusal, RendezvousError};
pub use sim::SimActorError;
pub use tls::{AlertDescription, TlsError};
pub use transfer::{InlineError, OperatorError, TransferError};

use crate::stream_id::StreamId;

/// Everything that can go wrong in deputy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A deputy wire message could not be decoded.
    #[error("wire: {0}")]
    Wire(#[from] crate::wire::WireError),
    /// A cryptographic operation failed (bad key, failed authentication, bad signature …).
    #[error("crypto: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    /// A certificate was refused.
    #[error("certificate: {0}")]
    Certificate(#[from] crate::crypto::CertError),
    /// The secure channel failed or refused.
    #[error("channel: {0}")]
    Channel(#[from] ChannelError),
    /// A seed 000 offload actor refused an input or command.
    #[error("offload: {0}")]
    Offload(OffloadError),
    /// An IKEv2 message or command was refused.
    #[error("ike: {0}")]
    Ike(IkeError),
    /// The ESP data plane refused a packet, an SA or a command.
    #[error("ipsec: {0}")]
    Ipsec(#[from] IpsecError),
    /// A seed 002 rendezvous actor refused an input or command.
    #[error("rendezvous: {0}")]
    Rendezvous(#[from] RendezvousError),
    /// A key-exchange delegation message was refused.
    #[error("keyx: {0}")]
    Keyx(#[from] KeyxError),
    /// A key-transfer message (seeds 001 and 003) was refused.
    #[error("key transfer: {0}")]
    Transfer(#[from] TransferError),
    /// The inline key-exchange proxy (seed 001) refused an input or a command.
    #[error("inline proxy: {0}")]
    Inline(#[from] InlineError),
    /// A seed 003 actor refused an input or a command.
    #[error("operator network: {0}")]
    Operator(#[from] OperatorError),
    /// The TLS 1.3 record layer refused bytes or a command.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// A configured bound was reached; the input or command was refused.
    #[error("{what} is full (bound {bound})")]
    CapacityExceeded {
        /// Which table, queue or buffer.
        what: &'static str,
        /// Its configured bound.
        bound: usize,
    },
    /// A rule of the simulator broken (feature `sim`; the variant exists without it so
    /// the enum does not change shape with features).
    #[error("sim: {0}")]
    Sim(#[from] SimActorError),
    /// The input named a stream the actor does not know.
    #[error("unknown {0:?}")]
    UnknownStream(StreamId),
}

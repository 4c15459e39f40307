//! Why the IKEv2 engine ([`crate::ikev2`]) refused an input or a command.

use crate::crypto::CryptoError;

/// An IKEv2 message or operation was refused. Carried in [`crate::Error::Ike`].
///
/// Every variant describes one input or command; the actor that returned it stays usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IkeError {
    /// Fewer bytes than a header or length field announces.
    #[error("truncated")]
    Truncated,
    /// A length field is impossible (smaller than its header, past the end, or the IKE
    /// header's length differs from the datagram).
    #[error("bad length in {0}")]
    BadLength(&'static str),
    /// Bytes follow the last payload.
    #[error("trailing bytes")]
    TrailingBytes,
    /// The IKE major version is not 2.
    #[error("unsupported IKE major version {0}")]
    UnsupportedVersion(u8),
    /// The message is larger than the configured limit.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Actual or announced length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// More payloads than the configured limit.
    #[error("more than {0} payloads")]
    TooManyPayloads(usize),
    /// A payload type this engine does not know, marked critical.
    #[error("unsupported critical payload {0}")]
    UnsupportedCriticalPayload(u8),
    /// A payload or substructure is malformed.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A value cannot be encoded (too long for its length field, inconsistent SPI sizes …).
    #[error("cannot encode {0}")]
    Unencodable(&'static str),
    /// The SK payload's integrity check value or AEAD tag did not verify.
    #[error("integrity check failed")]
    IntegrityCheckFailed,
    /// The message names an IKE SA this actor does not have.
    #[error("unknown IKE SPI")]
    UnknownSpi,
    /// A request or response with a message ID outside the window.
    #[error("message id {got} outside the window (expected {expected})")]
    InvalidMessageId {
        /// The message ID received.
        got: u32,
        /// The one expected.
        expected: u32,
    },
    /// The message does not fit the exchange's state.
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
    /// A required payload is missing.
    #[error("missing {0} payload")]
    MissingPayload(&'static str),
    /// We answered the request with this error notify (NO_PROPOSAL_CHOSEN …).
    #[error("refused with notify {0}")]
    Refused(u16),
    /// A command needs an established IKE SA.
    #[error("no established IKE SA")]
    NotEstablished,
    /// A cryptographic primitive failed.
    #[error("crypto: {0}")]
    Crypto(CryptoError),
}

impl From<CryptoError> for IkeError {
    fn from(e: CryptoError) -> Self {
        IkeError::Crypto(e)
    }
}

impl From<IkeError> for super::Error {
    fn from(e: IkeError) -> Self {
        super::Error::Ike(e)
    }
}

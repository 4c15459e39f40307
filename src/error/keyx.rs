//! Why a key-exchange delegation message ([`crate::keyx`]) was refused.

use crate::wire::WireError;

/// Why a delegation message or a sealed key body was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyxError {
    /// A message did not decode.
    #[error("decode: {0}")]
    Decode(WireError),
    /// A delegation message type this receiver does not know (the server's S49: discard
    /// and count it).
    #[error("unknown delegation message type {0:#04x}")]
    UnknownMessage(u8),
    /// A start request names a role other than initiator or responder.
    #[error("unknown role {0}")]
    UnknownRole(u8),
    /// A start response names an outcome this receiver does not know.
    #[error("unknown start outcome {0}")]
    UnknownOutcome(u8),
    /// A start response that proceeds lacks the method or the chosen transforms.
    #[error("start response proceeds without a method or transforms")]
    IncompleteStart,
    /// A transform list is not a whole number of 5-byte entries, or has too many.
    #[error("bad transform list of {0} bytes")]
    BadTransformList(usize),
    /// A field that carries protocol bytes is longer than the bound for it.
    #[error("field {field:#06x} of {len} bytes exceeds {max}")]
    TooLarge {
        /// The field type.
        field: u16,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A whole message would not fit one channel record.
    #[error("message of {len} bytes exceeds {max}")]
    MessageTooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// An authentication request or response has payloads without the type of the first.
    #[error("payload chain without its first payload type")]
    MissingFirstPayload,
    /// A sealed body is shorter than its nonce and tag.
    #[error("sealed body of {0} bytes is too short")]
    SealedTooShort(usize),
    /// An opened key body does not have the layout its message defines.
    #[error("opened key body has the wrong layout")]
    BadKeyBody,
    /// A sealed body failed authentication under the delegation key: another terminal's
    /// key, another message's context, or damage.
    #[error("sealed body failed authentication")]
    SealedBodyRejected,
    /// The peer's plaintext handshake (its ClientHello or ServerHello, which the terminal
    /// reads itself) is not a message this terminal can follow: an alert or a protected
    /// record before it, or a message longer than its bound.
    #[error("the peer's plaintext handshake cannot be followed")]
    BadPeerHandshake,
    /// A credential given to the substitution server does not load (its key does not
    /// parse, or does not match its certificate).
    #[error("credential does not load")]
    BadCredential,
    /// The delegated connection's keys are not set yet (or it is closed): a key update
    /// cannot be asked for.
    #[error("the delegated connection is not established")]
    NotEstablished,
    /// A relay names a kind this receiver does not know, or lacks its bytes.
    #[error("bad relay of kind {0}")]
    BadRelay(u8),
}

impl From<WireError> for KeyxError {
    fn from(e: WireError) -> Self {
        KeyxError::Decode(e)
    }
}

//! deputy's secure channel: seed 002's "SSL" rebuilt with modern primitives (DESIGN.md §4).
//!
//! ```text
//! client                                              server
//!   ClientHello  (versions, suites, group, key share,
//!                 random = time ‖ 28 random, session id,
//!                 auth mode, [PSK id], [server name])  ──▶
//!                                                      ◀── ServerHello (version, suite,
//!                                                           key share, random, session id)
//!                               ── keys: PMS → seed ¶0088 master secret → HKDF(transcript) ──
//!                                                      ◀── {Certificate}            cert mode
//!                                                      ◀── {CertificateRequest}     optional
//!                                                      ◀── {CertificateVerify}      cert mode
//!                                                      ◀── {Finished}
//!   {Certificate, CertificateVerify}  if asked        ──▶
//!   {Finished}                                        ──▶
//!   {application data} ◀──────────────────────────────────▶ {application data}
//!   {close-notify}                                    ──▶
//! ```
//!
//! `{…}` is an AEAD record under handshake keys (before the Finished messages) or
//! application keys (after). The seed sends its "key-creation information" in separate
//! packets 215/216 after the certificate; deputy carries both shares in the hellos so the
//! handshake takes one round trip, and signs the transcript (CertificateVerify) so the
//! server proves it holds the certificate's key — the seed's optional signature (¶0084)
//! made mandatory. Finished MACs over the whole transcript in both directions stop
//! downgrades and tampering; explicit record sequence numbers stop replay and reordering;
//! close-notify distinguishes a graceful end from truncation.
//!
//! Two layers:
//! - [`Connection`]: one connection over any reliable byte stream, byte-level and sans-IO
//!   (like `rustls::Connection`). Other actors (seed 000's proxy, seed 002's server) embed
//!   it per stream.
//! - [`SecureStream`]: a connection bound to the stream it runs on — writes its bytes,
//!   hands back its messages, ends the stream on failure or close. Every actor that runs
//!   the channel over streams is built on it.
//! - [`ChannelClient`] / [`ChannelServer`]: ready-made [`Actor`](crate::Actor)s that open or
//!   accept streams and run connections on them, for applications that want just a secure
//!   pipe.
//!
//! Security reasoning and the wire layouts are in `docs/channel.md` and `docs/wire.md`.

mod actor;
mod config;
mod conn;
mod keys;
pub mod messages;
mod stream;

use alloc::boxed::Box;
use alloc::vec::Vec;

pub use actor::{ChannelClient, ChannelServer, ChannelServerConfig};
pub use config::{
    CHANNEL_VERSION, ClientAuthMode, ClientCertPolicy, ClientConfig, Common, Psk, ServerConfig,
};
pub use conn::Connection;
pub use messages::AlertCode;
pub use stream::SecureStream;

use crate::crypto::CertError;
use crate::crypto::CryptoError;
use crate::crypto::aead::AeadAlg;
use crate::crypto::cert::Certificate;
use crate::io::StreamId;
use crate::wire::WireError;

/// Why a channel failed or refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// A message could not be decoded.
    #[error("decode: {0}")]
    Decode(WireError),
    /// A message of this type does not fit the handshake state.
    #[error("unexpected message type {0:#04x}")]
    UnexpectedMessage(u8),
    /// No channel version in common.
    #[error("no common version")]
    NoCommonVersion,
    /// No AEAD suite in common.
    #[error("no common suite")]
    NoCommonSuite,
    /// The server does not accept the client's Diffie-Hellman group.
    #[error("unsupported group {0}")]
    UnsupportedGroup(u16),
    /// The server does not offer the authentication mode the client asked for.
    #[error("authentication mode unavailable")]
    AuthModeUnavailable,
    /// The server knows no pre-shared key by that identity.
    #[error("unknown PSK identity")]
    UnknownPskIdentity,
    /// The server's certificate does not name what the client asked for.
    #[error("unrecognized server name")]
    UnrecognizedName,
    /// The peer's certificate was refused.
    #[error("certificate refused: {0}")]
    Certificate(CertError),
    /// The server requires a client certificate and got none.
    #[error("client certificate required")]
    ClientCertificateRequired,
    /// The peer's transcript signature did not verify.
    #[error("bad CertificateVerify signature")]
    BadSignature,
    /// The peer's Finished MAC did not match our transcript.
    #[error("bad Finished MAC")]
    BadFinished,
    /// The peer's key share was refused.
    #[error("key exchange: {0}")]
    KeyExchange(CryptoError),
    /// Deriving keys failed (an internal error; never caused by the peer).
    #[error("key schedule: {0}")]
    KeySchedule(CryptoError),
    /// The peer violated the protocol in a handshake parameter.
    #[error("illegal parameter: {0}")]
    IllegalParameter(&'static str),
    /// A record failed authentication.
    #[error("record failed authentication")]
    DecryptFailed,
    /// A record arrived out of sequence (replayed, reordered or dropped).
    #[error("record {got} out of order (expected {expected})")]
    RecordOutOfOrder {
        /// The sequence number due.
        expected: u64,
        /// The one received.
        got: u64,
    },
    /// A record or message exceeds the configured bound.
    #[error("record of {len} bytes exceeds {max}")]
    RecordTooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A record named another session.
    #[error("record for session {got:#x}, expected {expected:#x}")]
    WrongSession {
        /// Our session.
        expected: u64,
        /// The record's.
        got: u64,
    },
    /// The application did not drain received messages; the bound was hit.
    #[error("receive queue full (bound {0})")]
    ReceiveQueueFull(usize),
    /// 2^64 records were sent in one epoch.
    #[error("sequence numbers exhausted")]
    SequenceExhausted,
    /// The peer sent an alert.
    #[error("peer alert {0:?}")]
    PeerAlert(AlertCode),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The stream ended without close-notify.
    #[error("stream truncated (no close-notify)")]
    TruncatedStream,
    /// The connection is not established yet.
    #[error("not established")]
    NotEstablished,
    /// We already sent close-notify.
    #[error("closed")]
    Closed,
    /// The connection failed earlier; see [`Connection::error`].
    #[error("connection already failed")]
    Failed,
}

impl ChannelError {
    /// The alert to send the peer for this failure, if any.
    pub fn alert(&self) -> Option<AlertCode> {
        use ChannelError as E;
        Some(match self {
            E::Decode(_) => AlertCode::DecodeError,
            E::UnexpectedMessage(_) | E::WrongSession { .. } => AlertCode::UnexpectedMessage,
            E::NoCommonVersion => AlertCode::ProtocolVersion,
            E::NoCommonSuite
            | E::UnsupportedGroup(_)
            | E::AuthModeUnavailable
            | E::KeyExchange(_)
            | E::IllegalParameter(_)
            | E::HandshakeTimeout => AlertCode::HandshakeFailure,
            E::UnknownPskIdentity => AlertCode::UnknownPskIdentity,
            E::UnrecognizedName => AlertCode::UnrecognizedName,
            E::Certificate(CertError::UnknownIssuer(_)) => AlertCode::UnknownCa,
            E::Certificate(CertError::Expired(_) | CertError::NotYetValid(_)) => {
                AlertCode::CertificateExpired
            }
            E::Certificate(_) => AlertCode::BadCertificate,
            E::ClientCertificateRequired => AlertCode::CertificateRequired,
            E::BadSignature | E::BadFinished => AlertCode::DecryptError,
            E::DecryptFailed | E::RecordOutOfOrder { .. } => AlertCode::BadRecordMac,
            E::RecordTooLarge { .. } => AlertCode::RecordOverflow,
            E::ReceiveQueueFull(_) | E::SequenceExhausted | E::KeySchedule(_) => {
                AlertCode::InternalError
            }
            E::PeerAlert(_) | E::TruncatedStream | E::NotEstablished | E::Closed | E::Failed => {
                return None;
            }
        })
    }
}

/// Who the peer proved to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    /// Nothing proven (yet), or a client without a certificate where one was optional.
    Anonymous,
    /// The peer holds the key of this verified certificate.
    Certificate(Box<Certificate>),
    /// The peer knows the pre-shared key with this identity.
    Psk(Vec<u8>),
}

/// What the channel actors tell the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The handshake on `stream` finished.
    Established {
        /// The stream.
        stream: StreamId,
        /// Who the peer is.
        peer: PeerIdentity,
        /// The negotiated suite.
        suite: AeadAlg,
        /// The session id.
        session: u64,
    },
    /// An application message arrived.
    Received {
        /// The stream.
        stream: StreamId,
        /// The message.
        data: Vec<u8>,
    },
    /// The peer closed gracefully (close-notify), and the stream is gone.
    Closed {
        /// The stream.
        stream: StreamId,
    },
    /// The connection failed.
    Failed {
        /// The stream.
        stream: StreamId,
        /// Why.
        error: ChannelError,
    },
}

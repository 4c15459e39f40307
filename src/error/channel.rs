//! The secure channel's errors ([`crate::channel`]) and the alert codes they map to.

use crate::crypto::{CertError, CryptoError};
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
    /// The server hello chose a suite the client did not offer.
    #[error("server chose suite {0:#06x}, which was not offered")]
    SuiteNotOffered(u16),
    /// The server hello names another group than the client's key share.
    #[error("server changed the group from {offered} to {chosen}")]
    GroupChanged {
        /// The group of the client's key share.
        offered: u16,
        /// The group the server hello names.
        chosen: u16,
    },
    /// The server hello gave session id 0 (which means "no session").
    #[error("server hello with session id 0")]
    ZeroSessionId,
    /// The server's Certificate message carried no certificate (certificate mode).
    #[error("server sent no certificate")]
    ServerCertificateMissing,
    /// Local configuration: no AEAD suite is configured, so no hello can be sent.
    #[error("no AEAD suites configured")]
    NoSuitesConfigured,
    /// Local configuration: a pre-shared key outside 16 to 1024 bytes.
    #[error("pre-shared key of {0} bytes (16 to 1024 allowed)")]
    PskLength(usize),
    /// Local configuration: a PSK identity longer than 1024 bytes.
    #[error("PSK identity of {0} bytes (at most 1024 allowed)")]
    PskIdentityTooLong(usize),
    /// The driver reported an inbound stream to a channel client, which accepts none (it
    /// is closed at once).
    #[error("a channel client accepts no streams")]
    UnexpectedStreamAccepted,
    /// The driver gave a channel actor a datagram or raw packet: they take only stream
    /// input.
    #[error("channel actors take only stream input")]
    NotStreamInput,
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
    /// A message started arriving but did not complete within the progress timeout: its
    /// length field was damaged (a lengthened record) or bytes of it were lost, and the
    /// stream would otherwise wait for bytes that never come.
    #[error("message incomplete after the progress timeout ({buffered} bytes held)")]
    IncompleteRecord {
        /// Bytes of the partial message held when the timer fired.
        buffered: usize,
    },
    /// The peer did not answer our keepalive request (or our close-notify) within the
    /// keepalive timeout.
    #[error("peer silent: no answer within the keepalive timeout")]
    PeerSilent,
    /// A keepalive record's payload is not one of the two defined bytes.
    #[error("malformed keepalive")]
    MalformedKeepalive,
    /// The stream to the server did not open within the handshake timeout.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The driver reported the stream to the server gone before it opened.
    #[error("connect failed")]
    ConnectFailed,
    /// The stream ended without close-notify.
    #[error("stream truncated (no close-notify)")]
    TruncatedStream,
    /// The connection is not established yet.
    #[error("not established")]
    NotEstablished,
    /// We already sent close-notify.
    #[error("closed")]
    Closed,
    /// The connection failed earlier; see [`Connection::error`](crate::channel::Connection::error).
    #[error("connection already failed")]
    Failed,
}

impl ChannelError {
    /// Whether this failure is what damage in transit (or an attacker on the path)
    /// produces, as opposed to a peer whose identity was checked and refused
    /// ([`ChannelError::is_identity_refusal`]).
    ///
    /// Everything after the hellos is authenticated, and both handshake keys are bound to
    /// the hellos' transcript, so a byte changed anywhere in a handshake shows up as one
    /// of these: [`Decode`](Self::Decode), [`UnexpectedMessage`](Self::UnexpectedMessage),
    /// [`DecryptFailed`](Self::DecryptFailed), [`BadFinished`](Self::BadFinished),
    /// [`RecordOutOfOrder`](Self::RecordOutOfOrder), [`WrongSession`](Self::WrongSession),
    /// [`RecordTooLarge`](Self::RecordTooLarge), [`KeyExchange`](Self::KeyExchange) (a
    /// damaged key share), [`IncompleteRecord`](Self::IncompleteRecord) (a damaged
    /// length), [`TruncatedStream`](Self::TruncatedStream), a malformed server hello
    /// ([`SuiteNotOffered`](Self::SuiteNotOffered), [`GroupChanged`](Self::GroupChanged),
    /// [`ZeroSessionId`](Self::ZeroSessionId)) — or the peer's alert for one of those
    /// (`decode_error`, `unexpected_message`, `bad_record_mac`, `record_overflow`,
    /// `decrypt_error`; a bad CertificateVerify signature earns that alert too, but only a
    /// peer without its certificate's key sends one).
    ///
    /// Two limits a reader must know. In PSK mode a client holding a *different key* for
    /// an identity the server knows derives different keys, and that looks exactly like
    /// damage ([`DecryptFailed`](Self::DecryptFailed)) — no MAC can tell a wrong key from
    /// a changed message. And the hellos travel in the clear before anything is
    /// authenticated, so damage there can also make the server refuse what it read (a
    /// suite, group, name or PSK identity that is not the one sent).
    pub fn is_transport_damage(&self) -> bool {
        use ChannelError as E;
        match self {
            E::Decode(_)
            | E::UnexpectedMessage(_)
            | E::DecryptFailed
            | E::BadFinished
            | E::RecordOutOfOrder { .. }
            | E::WrongSession { .. }
            | E::RecordTooLarge { .. }
            | E::KeyExchange(_)
            | E::IncompleteRecord { .. }
            | E::MalformedKeepalive
            | E::TruncatedStream
            | E::SuiteNotOffered(_)
            | E::GroupChanged { .. }
            | E::ZeroSessionId => true,
            E::PeerAlert(code) => matches!(
                code,
                AlertCode::DecodeError
                    | AlertCode::UnexpectedMessage
                    | AlertCode::BadRecordMac
                    | AlertCode::RecordOverflow
                    | AlertCode::DecryptError
            ),
            _ => false,
        }
    }

    /// Whether the peer's identity was checked and refused: its certificate (chain,
    /// validity, name), its proof of holding the certificate's key, a required client
    /// certificate that was missing, or a PSK identity the server does not know — or the
    /// peer's alert saying it refused ours.
    ///
    /// The certificate verdicts are made on authenticated bytes (inside records that
    /// verified), so they are never caused by damage in transit: an operator may read them
    /// as "not who it claims to be". [`UnknownPskIdentity`](Self::UnknownPskIdentity) and
    /// [`UnrecognizedName`](Self::UnrecognizedName) are judged on the plaintext client
    /// hello (see [`ChannelError::is_transport_damage`] for what that implies).
    pub fn is_identity_refusal(&self) -> bool {
        use ChannelError as E;
        match self {
            E::Certificate(_)
            | E::BadSignature
            | E::ClientCertificateRequired
            | E::ServerCertificateMissing
            | E::UnknownPskIdentity
            | E::UnrecognizedName => true,
            E::PeerAlert(code) => matches!(
                code,
                AlertCode::BadCertificate
                    | AlertCode::CertificateExpired
                    | AlertCode::UnknownCa
                    | AlertCode::AccessDenied
                    | AlertCode::UnknownPskIdentity
                    | AlertCode::CertificateRequired
                    | AlertCode::UnrecognizedName
            ),
            _ => false,
        }
    }

    /// The alert to send the peer for this failure, if any.
    pub fn alert(&self) -> Option<AlertCode> {
        use ChannelError as E;
        Some(match self {
            // A stalled message means the stream's framing is lost; the alert still
            // reaches the peer (the other direction's framing is intact).
            E::Decode(_) | E::IncompleteRecord { .. } | E::MalformedKeepalive => {
                AlertCode::DecodeError
            }
            E::UnexpectedMessage(_) | E::WrongSession { .. } => AlertCode::UnexpectedMessage,
            E::NoCommonVersion => AlertCode::ProtocolVersion,
            E::NoCommonSuite
            | E::UnsupportedGroup(_)
            | E::AuthModeUnavailable
            | E::KeyExchange(_)
            | E::SuiteNotOffered(_)
            | E::GroupChanged { .. }
            | E::ZeroSessionId
            | E::ServerCertificateMissing
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
            // A silent peer is not listening, and a stream that never opened has no peer.
            E::PeerAlert(_)
            | E::TruncatedStream
            | E::PeerSilent
            | E::ConnectTimeout
            | E::ConnectFailed
            | E::NoSuitesConfigured
            | E::PskLength(_)
            | E::PskIdentityTooLong(_)
            | E::UnexpectedStreamAccepted
            | E::NotStreamInput
            | E::NotEstablished
            | E::Closed
            | E::Failed => {
                return None;
            }
        })
    }
}

/// Alert codes (numbered as in TLS, for familiarity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlertCode {
    /// Graceful close: no more data follows.
    CloseNotify,
    /// A message arrived that does not fit the state.
    UnexpectedMessage,
    /// A record failed authentication.
    BadRecordMac,
    /// A record was too large.
    RecordOverflow,
    /// No acceptable parameters, or a handshake check failed.
    HandshakeFailure,
    /// A certificate was refused.
    BadCertificate,
    /// A certificate is outside its validity window.
    CertificateExpired,
    /// A certificate's issuer is not trusted.
    UnknownCa,
    /// The peer is not allowed.
    AccessDenied,
    /// A message could not be decoded.
    DecodeError,
    /// A signature or Finished MAC failed.
    DecryptError,
    /// No common version.
    ProtocolVersion,
    /// Something went wrong inside the sender.
    InternalError,
    /// The requested server name is not served here.
    UnrecognizedName,
    /// The PSK identity is unknown.
    UnknownPskIdentity,
    /// A client certificate is required.
    CertificateRequired,
    /// A code this crate does not know.
    Other(u8),
}

impl AlertCode {
    /// The alert's number.
    pub fn code(self) -> u8 {
        match self {
            AlertCode::CloseNotify => 0,
            AlertCode::UnexpectedMessage => 10,
            AlertCode::BadRecordMac => 20,
            AlertCode::RecordOverflow => 22,
            AlertCode::HandshakeFailure => 40,
            AlertCode::BadCertificate => 42,
            AlertCode::CertificateExpired => 45,
            AlertCode::UnknownCa => 48,
            AlertCode::AccessDenied => 49,
            AlertCode::DecodeError => 50,
            AlertCode::DecryptError => 51,
            AlertCode::ProtocolVersion => 70,
            AlertCode::InternalError => 80,
            AlertCode::UnrecognizedName => 112,
            AlertCode::UnknownPskIdentity => 115,
            AlertCode::CertificateRequired => 116,
            AlertCode::Other(c) => c,
        }
    }

    /// The alert with this number.
    pub fn from_code(c: u8) -> Self {
        [
            AlertCode::CloseNotify,
            AlertCode::UnexpectedMessage,
            AlertCode::BadRecordMac,
            AlertCode::RecordOverflow,
            AlertCode::HandshakeFailure,
            AlertCode::BadCertificate,
            AlertCode::CertificateExpired,
            AlertCode::UnknownCa,
            AlertCode::AccessDenied,
            AlertCode::DecodeError,
            AlertCode::DecryptError,
            AlertCode::ProtocolVersion,
            AlertCode::InternalError,
            AlertCode::UnrecognizedName,
            AlertCode::UnknownPskIdentity,
            AlertCode::CertificateRequired,
        ]
        .into_iter()
        .find(|a| a.code() == c)
        .unwrap_or(AlertCode::Other(c))
    }
}

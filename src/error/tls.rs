//! The TLS 1.3 record layer's errors ([`crate::tls`]) and the alert descriptions they map
//! to (RFC 8446 §6).
//!
//! [`AlertDescription`] lives here rather than in `tls` because [`TlsError::alert`] names
//! one and this module may not import the protocol modules above it; `tls::record`
//! re-exports it.

/// A TLS alert description (RFC 8446 §6). Descriptions RFC 8446 does not define keep their
/// byte in [`Unknown`](Self::Unknown); a receiver treats them as fatal (§6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertDescription {
    /// `close_notify` (0): the sender sends nothing more on this connection.
    CloseNotify,
    /// `unexpected_message` (10).
    UnexpectedMessage,
    /// `bad_record_mac` (20): a record did not authenticate.
    BadRecordMac,
    /// `record_overflow` (22): a record longer than the protocol allows.
    RecordOverflow,
    /// `handshake_failure` (40).
    HandshakeFailure,
    /// `bad_certificate` (42).
    BadCertificate,
    /// `unsupported_certificate` (43).
    UnsupportedCertificate,
    /// `certificate_revoked` (44).
    CertificateRevoked,
    /// `certificate_expired` (45).
    CertificateExpired,
    /// `certificate_unknown` (46).
    CertificateUnknown,
    /// `illegal_parameter` (47): a field held a value outside its defined set.
    IllegalParameter,
    /// `unknown_ca` (48).
    UnknownCa,
    /// `access_denied` (49).
    AccessDenied,
    /// `decode_error` (50): a message could not be decoded (a field out of range, a wrong
    /// length).
    DecodeError,
    /// `decrypt_error` (51).
    DecryptError,
    /// `protocol_version` (70).
    ProtocolVersion,
    /// `insufficient_security` (71).
    InsufficientSecurity,
    /// `internal_error` (80).
    InternalError,
    /// `inappropriate_fallback` (86).
    InappropriateFallback,
    /// `user_canceled` (90): the one alert besides `close_notify` that is not fatal.
    UserCanceled,
    /// `missing_extension` (109).
    MissingExtension,
    /// `unsupported_extension` (110).
    UnsupportedExtension,
    /// `unrecognized_name` (112).
    UnrecognizedName,
    /// `bad_certificate_status_response` (113).
    BadCertificateStatusResponse,
    /// `unknown_psk_identity` (115).
    UnknownPskIdentity,
    /// `certificate_required` (116).
    CertificateRequired,
    /// `no_application_protocol` (120).
    NoApplicationProtocol,
    /// A description RFC 8446 does not define (TLS 1.2's, or an unassigned byte).
    Unknown(u8),
}

impl AlertDescription {
    /// The description's byte on the wire.
    pub const fn code(self) -> u8 {
        use AlertDescription as A;
        match self {
            A::CloseNotify => 0,
            A::UnexpectedMessage => 10,
            A::BadRecordMac => 20,
            A::RecordOverflow => 22,
            A::HandshakeFailure => 40,
            A::BadCertificate => 42,
            A::UnsupportedCertificate => 43,
            A::CertificateRevoked => 44,
            A::CertificateExpired => 45,
            A::CertificateUnknown => 46,
            A::IllegalParameter => 47,
            A::UnknownCa => 48,
            A::AccessDenied => 49,
            A::DecodeError => 50,
            A::DecryptError => 51,
            A::ProtocolVersion => 70,
            A::InsufficientSecurity => 71,
            A::InternalError => 80,
            A::InappropriateFallback => 86,
            A::UserCanceled => 90,
            A::MissingExtension => 109,
            A::UnsupportedExtension => 110,
            A::UnrecognizedName => 112,
            A::BadCertificateStatusResponse => 113,
            A::UnknownPskIdentity => 115,
            A::CertificateRequired => 116,
            A::NoApplicationProtocol => 120,
            A::Unknown(code) => code,
        }
    }

    /// The description with this byte; bytes RFC 8446 does not define are
    /// [`Unknown`](Self::Unknown), so `from_code(d.code()) == d` for every defined `d`.
    pub const fn from_code(code: u8) -> AlertDescription {
        use AlertDescription as A;
        match code {
            0 => A::CloseNotify,
            10 => A::UnexpectedMessage,
            20 => A::BadRecordMac,
            22 => A::RecordOverflow,
            40 => A::HandshakeFailure,
            42 => A::BadCertificate,
            43 => A::UnsupportedCertificate,
            44 => A::CertificateRevoked,
            45 => A::CertificateExpired,
            46 => A::CertificateUnknown,
            47 => A::IllegalParameter,
            48 => A::UnknownCa,
            49 => A::AccessDenied,
            50 => A::DecodeError,
            51 => A::DecryptError,
            70 => A::ProtocolVersion,
            71 => A::InsufficientSecurity,
            80 => A::InternalError,
            86 => A::InappropriateFallback,
            90 => A::UserCanceled,
            109 => A::MissingExtension,
            110 => A::UnsupportedExtension,
            112 => A::UnrecognizedName,
            113 => A::BadCertificateStatusResponse,
            115 => A::UnknownPskIdentity,
            116 => A::CertificateRequired,
            120 => A::NoApplicationProtocol,
            other => A::Unknown(other),
        }
    }

    /// Whether receiving this alert ends the connection. RFC 8446 §6: only `close_notify`
    /// (which ends the sender's direction) and `user_canceled` are not error alerts;
    /// every other description, unknown ones included, is fatal whatever its level byte.
    pub const fn is_fatal(self) -> bool {
        !matches!(
            self,
            AlertDescription::CloseNotify | AlertDescription::UserCanceled
        )
    }
}

/// Why the TLS 1.3 record layer refused bytes or a command.
///
/// Two kinds. A *fatal* error ([`is_fatal`](Self::is_fatal)) is the peer breaking a rule of
/// RFC 8446 (or the stream ending without `close_notify`): the layer is failed afterwards,
/// every later call but [`RecordLayer::seal_alert`](crate::tls::RecordLayer::seal_alert)
/// returns [`Failed`](Self::Failed), and [`alert`](Self::alert) names the alert to send. A
/// *refusal* is a command or configuration the layer could not carry out, or input it
/// could not take yet: nothing changed, and the layer stays usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    // ---- configuration and keys (refusals) ----
    /// The two directions' keys name different cipher suites, or a next key names
    /// another suite than the connection's (suites are TLS code points).
    #[error("cipher suite {got:#06x} where the connection uses {expected:#06x}")]
    SuiteMismatch {
        /// The connection's suite.
        expected: u16,
        /// The key's suite.
        got: u16,
    },
    /// A traffic key does not have its suite's key length.
    #[error("traffic key of {got} bytes (the suite's is {want})")]
    BadKeyLength {
        /// Its length.
        got: usize,
        /// The suite's key length.
        want: usize,
    },
    /// A configured bound is below the least the protocol needs (a full record for
    /// `max_held`, a KeyUpdate for `max_handshake_message`, one for the others).
    #[error("{field} of {got} is below the least usable value {min}")]
    BoundTooSmall {
        /// The field of `RecordConfig`.
        field: &'static str,
        /// Its value.
        got: u64,
        /// The least usable value.
        min: u64,
    },
    /// `max_fragment` above 2^14, the most plaintext one record may carry (RFC 8446 §5.1).
    #[error("max_fragment of {0} exceeds 2^14")]
    FragmentTooLarge(usize),
    /// `tx_update_margin` leaves no record to send before asking for a key.
    #[error("tx_update_margin of {margin} leaves no record under a limit of {limit}")]
    MarginTooLarge {
        /// The configured margin.
        margin: u64,
        /// The suite's confidentiality limit.
        limit: u64,
    },

    // ---- sending (refusals) ----
    /// We sent `close_notify` (or the caller asked to send after closing).
    #[error("send side closed")]
    Closed,
    /// The peer asked for a key update: [`RecordLayer::update_tx`](crate::tls::RecordLayer::update_tx)
    /// must come before the next application data (RFC 8446 §4.6.3).
    #[error("a KeyUpdate is owed before more application data")]
    KeyUpdateOwed,
    /// The send key has no sequence numbers left for these records: its confidentiality
    /// limit (RFC 8446 §5.5), less the one record kept for a KeyUpdate or closing alert. A
    /// next key must be installed with `update_tx`.
    #[error("send key exhausted at sequence {seq} (limit {limit})")]
    TxKeyExhausted {
        /// The send key's next sequence number.
        seq: u64,
        /// The suite's confidentiality limit.
        limit: u64,
    },

    /// The AEAD refused to seal a record: only beyond its length limit (tens of GiB),
    /// which no record within 2^14 octets reaches. Nothing was written.
    #[error("the AEAD refused to seal a record")]
    SealRefused,

    // ---- receiving: refusals ----
    /// `install_rx` without a peer KeyUpdate waiting for its key.
    #[error("no peer KeyUpdate awaits a receive key")]
    NoKeyUpdatePending,
    /// The bytes would take what the layer holds for the caller (unprocessed bytes plus
    /// undelivered events) past `max_held`; none of them were taken. Drain
    /// [`poll_event`](crate::tls::RecordLayer::poll_event), install the awaited receive
    /// key, or feed smaller pieces, then offer them again.
    #[error("{held} bytes held and {incoming} more offered exceed the bound {bound}")]
    ReceiveBacklogFull {
        /// Bytes held now.
        held: usize,
        /// Bytes offered.
        incoming: usize,
        /// `max_held`.
        bound: usize,
    },
    /// Bytes arrived after the peer's `close_notify`. RFC 8446 §6.1 says they are
    /// ignored: they were discarded, and this reports it; the layer stays usable (our
    /// send side is still open).
    #[error("{0} bytes after the peer's close_notify (discarded)")]
    DataAfterCloseNotify(usize),

    // ---- receiving: the peer broke a rule (fatal) ----
    /// A record header names a content type TLS 1.3 does not define, or a record's inner
    /// content type is unknown (RFC 8446 §5).
    #[error("unknown content type {0}")]
    UnknownContentType(u8),
    /// A record header's legacy version does not start with 3 (not a TLS record at all).
    #[error("record version {0:#06x}")]
    BadRecordVersion(u16),
    /// A record longer than 2^14 + 256 bytes (RFC 8446 §5.2).
    #[error("record of {0} bytes exceeds 2^14 + 256")]
    RecordOverflow(usize),
    /// A record that opened to more than 2^14 + 1 bytes of inner plaintext (RFC 8446 §5.4).
    #[error("inner plaintext of {0} bytes exceeds 2^14 + 1")]
    PlaintextOverflow(usize),
    /// A record failed authentication (damage, a wrong key, or a record out of order).
    #[error("record failed authentication")]
    BadRecordMac,
    /// A `change_cipher_spec` record after the handshake, protected or not (RFC 8446 §5).
    #[error("change_cipher_spec after the handshake")]
    ChangeCipherSpec,
    /// An unprotected handshake or alert record once the traffic keys are in use.
    #[error("unprotected record of type {0} after the handshake")]
    UnprotectedRecord(u8),
    /// A record's inner plaintext is all zeros: no content type (RFC 8446 §5.4).
    #[error("inner plaintext without a content type")]
    NoContentType,
    /// A handshake record with no content (RFC 8446 §5.1).
    #[error("empty handshake record")]
    EmptyHandshakeRecord,
    /// An alert record that is not exactly one 2-byte alert (RFC 8446 §5.1).
    #[error("alert record of {0} bytes")]
    BadAlertLength(usize),
    /// A non-handshake record arrived while a handshake message was incomplete (RFC 8446
    /// §5.1: handshake messages are not interleaved with other record types).
    #[error("record of type {0} inside a split handshake message")]
    InterleavedHandshake(u8),
    /// A post-handshake message this layer does not accept (it takes KeyUpdate and
    /// NewSessionTicket).
    #[error("unexpected handshake message type {0}")]
    UnexpectedHandshake(u8),
    /// A handshake message longer than `max_handshake_message` (its 4-byte header
    /// included).
    #[error("handshake message of {len} bytes exceeds {bound}")]
    HandshakeTooLarge {
        /// Its length, header included.
        len: usize,
        /// `max_handshake_message`.
        bound: usize,
    },
    /// A KeyUpdate whose body is not exactly one byte.
    #[error("KeyUpdate body of {0} bytes")]
    BadKeyUpdateLength(usize),
    /// A KeyUpdate whose request_update is neither 0 nor 1 (RFC 8446 §4.6.3).
    #[error("KeyUpdate request_update {0}")]
    BadKeyUpdateValue(u8),
    /// A KeyUpdate not at the end of its record: it changes the key, so the bytes after it
    /// would have been protected with the old one (RFC 8446 §5.1).
    #[error("KeyUpdate not last in its record")]
    KeyUpdateNotLast,
    /// More peer KeyUpdates than `max_key_updates` without application data between them:
    /// each one makes the terminal fetch a key, so a peer could otherwise make it work
    /// without end.
    #[error("more than {0} KeyUpdates without application data")]
    KeyUpdateFlood(u32),
    /// The peer's records reached the last sequence number: the next would wrap, which
    /// RFC 8446 §5.3 forbids.
    #[error("receive sequence numbers exhausted")]
    RxSeqExhausted,
    /// The stream ended without the peer's `close_notify` (or inside a record): what
    /// arrived may be cut short (RFC 8446 §6.1).
    #[error("stream ended without close_notify")]
    Truncated,

    // ---- after a fatal error ----
    /// The layer failed earlier (a fatal error, a fatal alert sent or received).
    #[error("record layer already failed")]
    Failed,
}

impl TlsError {
    /// The alert a conformant endpoint sends for this error (RFC 8446 §6.2), or `None`
    /// where none is sent: a refused command or configuration (nothing went wrong on the
    /// wire), [`DataAfterCloseNotify`](Self::DataAfterCloseNotify) (ignored by §6.1),
    /// [`Truncated`](Self::Truncated) (the transport is gone), [`Failed`](Self::Failed)
    /// (the first error named the alert).
    pub fn alert(&self) -> Option<AlertDescription> {
        use AlertDescription as A;
        use TlsError as E;
        match self {
            E::SuiteMismatch { .. }
            | E::BadKeyLength { .. }
            | E::BoundTooSmall { .. }
            | E::FragmentTooLarge(_)
            | E::MarginTooLarge { .. }
            | E::Closed
            | E::KeyUpdateOwed
            | E::TxKeyExhausted { .. }
            | E::SealRefused
            | E::NoKeyUpdatePending
            | E::ReceiveBacklogFull { .. }
            | E::DataAfterCloseNotify(_)
            | E::Truncated
            | E::Failed => None,
            // §5: "If a TLS implementation receives an unexpected record type, it MUST
            // terminate the connection with an unexpected_message alert"; §5.4 names the
            // same alert for an inner plaintext without a type; §5.1 for a message that
            // should have ended at a record boundary (KeyUpdate) and for interleaving.
            E::UnknownContentType(_)
            | E::ChangeCipherSpec
            | E::UnprotectedRecord(_)
            | E::NoContentType
            | E::InterleavedHandshake(_)
            | E::UnexpectedHandshake(_)
            | E::KeyUpdateNotLast
            // A peer that floods KeyUpdates or would wrap its sequence numbers is sending
            // messages it should not send at that point.
            | E::KeyUpdateFlood(_)
            | E::RxSeqExhausted => Some(A::UnexpectedMessage),
            // §6.2 decode_error: "some field was out of the specified range or the length
            // of the message was incorrect".
            E::BadRecordVersion(_)
            | E::EmptyHandshakeRecord
            | E::BadAlertLength(_)
            | E::HandshakeTooLarge { .. }
            | E::BadKeyUpdateLength(_) => Some(A::DecodeError),
            // §5.2 and §5.4.
            E::RecordOverflow(_) | E::PlaintextOverflow(_) => Some(A::RecordOverflow),
            // §5.2: "If the decryption fails, the receiver MUST terminate the connection
            // with a bad_record_mac alert".
            E::BadRecordMac => Some(A::BadRecordMac),
            // §4.6.3: "If an implementation receives any other value, it MUST terminate
            // the connection with an illegal_parameter alert".
            E::BadKeyUpdateValue(_) => Some(A::IllegalParameter),
        }
    }

    /// Whether the error fails the layer: the peer broke a rule, or the stream ended
    /// without `close_notify`. Every other error is a refusal that changed nothing.
    pub fn is_fatal(&self) -> bool {
        self.alert().is_some() || matches!(self, TlsError::Truncated)
    }
}

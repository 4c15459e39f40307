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
    /// More CERT payloads in one message than [`MAX_CERTS`].
    ///
    /// [`MAX_CERTS`]: crate::ikev2::codec::MAX_CERTS
    #[error("more than {0} certificates")]
    TooManyCertificates(usize),
    /// A CERT payload larger than [`MAX_CERT_LEN`].
    ///
    /// [`MAX_CERT_LEN`]: crate::ikev2::codec::MAX_CERT_LEN
    #[error("certificate of {len} bytes exceeds the limit of {max}")]
    CertificateTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
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
    /// A request arrived with the I flag saying we sent it (RFC 7296 §3.1: the flag names
    /// the IKE SA's original initiator).
    #[error("the I flag names us as the sender")]
    WrongInitiatorFlag,
    /// An IKE_SA_INIT request whose header is not that of a first message (message ID
    /// not 0, or the I flag clear).
    #[error("IKE_SA_INIT request with a bad header")]
    BadInitRequestHeader,
    /// A new IKE_SA_INIT request from an address and SPI that already have an IKE SA
    /// with another first message.
    #[error("IKE_SA_INIT request reusing an initiator SPI")]
    InitiatorSpiReused,
    /// An answer to our IKE_SA_INIT that is not an IKE_SA_INIT response with message ID 0.
    #[error("not an IKE_SA_INIT response")]
    NotInitResponse,
    /// A request of an exchange type this IKE SA does not take in its state.
    #[error("request not accepted in this state")]
    UnexpectedRequest,
    /// A response while no request of ours is outstanding.
    #[error("response without a request")]
    UnsolicitedResponse,
    /// A response whose exchange type differs from that of our outstanding request.
    #[error("response of another exchange type")]
    ExchangeTypeMismatch,
    /// A datagram on the NAT-T port without the non-ESP marker: ESP, which the IKE
    /// engine does not process.
    #[error("ESP packet on the NAT-T port")]
    EspOnIkePort,
    /// The IKE actors take datagrams only (no streams, no raw packets).
    #[error("IKEv2 takes datagrams only")]
    NotADatagram,
    /// `connect` on an initiator whose IKE SA already exists.
    #[error("IKE SA already started")]
    AlreadyStarted,
    /// The command names a Child SA this IKE SA does not have (or it has none).
    #[error("no such Child SA")]
    NoChildSa,
    /// A Child SA rekey is refused while the previous one still waits for its Delete.
    #[error("a rekey is still completing")]
    RekeyPending,
    /// An IKE_SA_INIT request without its SA, KE or Nonce payload.
    #[error("IKE_SA_INIT request without SA, KE or Nonce")]
    MissingInitPayload,
    /// A message after IKE_SA_INIT that has no SK payload (RFC 7296 §3.14).
    #[error("missing SK payload")]
    MissingEncryptedPayload,
    /// The IKE configuration's proposals are empty or incoherent.
    #[error("IKE proposals must be non-empty and coherent")]
    BadIkeProposals,
    /// More than 255 proposals (a proposal number is one octet).
    #[error("at most 255 proposals")]
    TooManyProposals,
    /// The configuration has no ESP proposal.
    #[error("ESP proposals must be non-empty")]
    NoEspProposals,
    /// A side of the configured traffic selectors is empty or longer than [`MAX_TS`].
    ///
    /// [`MAX_TS`]: crate::ikev2::config::MAX_TS
    #[error("traffic selectors: 1 to 16 on each side")]
    BadTrafficSelectorCount,
    /// The Child SA's soft lifetime lies beyond its hard lifetime.
    #[error("Child SA soft lifetime beyond the hard lifetime")]
    SoftLifetimeBeyondHard,
    /// Retransmission configured with no try or a zero interval.
    #[error("retransmission needs at least one try and a positive interval")]
    BadRetransmit,
    /// Decoding limits below what an IKE_SA_INIT needs.
    #[error("decoding limits too small")]
    LimitsTooSmall,
    /// A responder bound (IKE SAs, half-open SAs) is zero.
    #[error("responder bounds must be positive")]
    ZeroBound,
    /// We answered the request with this error notify (NO_PROPOSAL_CHOSEN …).
    #[error("refused with notify {0}")]
    Refused(u16),
    /// A command needs an established IKE SA.
    #[error("no established IKE SA")]
    NotEstablished,
    /// The step needs SK_d or the proof keys, which a substitution server holds for this
    /// delegated IKE SA (seed 004) and has not released.
    #[error("the keys are held by the substitution server")]
    KeysAtServer,
    /// A delegated IKE SA was asked to resume an IKE_AUTH it is not holding.
    #[error("no delegated IKE_AUTH is waiting for the server")]
    NotDelegating,
    /// A cryptographic primitive failed.
    #[error("crypto: {0}")]
    Crypto(CryptoError),
    /// A private key that does not decode (PKCS#8 or raw) or is of an unsupported type.
    #[error("bad private key")]
    BadPrivateKey,
    /// A certificate of our own chain or a trust anchor that does not decode as X.509.
    #[error("undecodable certificate in the configuration")]
    BadConfiguredCertificate,
    /// Our certificate chain's first certificate does not carry our private key's public
    /// key.
    #[error("the leaf certificate is not that of the private key")]
    CertificateKeyMismatch,
    /// A pinned public key that does not decode as a SubjectPublicKeyInfo of a supported
    /// type.
    #[error("bad pinned public key")]
    BadPinnedKey,
    /// The peer failed authentication (carried where an [`AuthFailure`] must travel as an
    /// `IkeError`).
    #[error("peer authentication: {0}")]
    PeerAuth(AuthFailure),
}

/// Why a peer's authentication was refused ([`crate::ikev2::auth::verify`]): one variant
/// per rule. [`AuthFailure::code`] maps each onto the key-exchange delegation's
/// `AuthResult` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The AUTH value did not verify (shared-key MIC or signature).
    #[error("AUTH did not verify")]
    BadAuth,
    /// The AUTH payload's data is malformed (a Digital Signature without its
    /// AlgorithmIdentifier, a signature of the wrong shape).
    #[error("malformed AUTH data")]
    MalformedAuth,
    /// The peer's certificate does not lead to a trust anchor (or it sent a raw public
    /// key that is not pinned for its identity).
    #[error("no trust anchor for the peer's certificate")]
    UnknownCa,
    /// A certificate of the path is past its notAfter.
    #[error("certificate expired")]
    Expired,
    /// A certificate of the path is before its notBefore.
    #[error("certificate not yet valid")]
    NotYetValid,
    /// The peer's identity is not one its certificate names (subjectAltName dNSName,
    /// rfc822Name or iPAddress; the subject for an ID_DER_ASN1_DN), or an identity type
    /// a certificate cannot vouch for.
    #[error("identity not covered by the certificate")]
    IdentityMismatch,
    /// A signature method, but no certificate and no pinned key for the peer.
    #[error("no certificate")]
    MissingCertificate,
    /// An AUTH method this engine does not accept.
    #[error("unsupported authentication method")]
    UnsupportedMethod,
    /// A signature or public key algorithm this engine does not verify, or a signature
    /// algorithm that does not fit the key.
    #[error("unsupported signature or key algorithm")]
    UnsupportedAlgorithm,
    /// Shared-key authentication from a peer for which the database holds no PSK.
    #[error("no pre-shared key for the peer")]
    NoSharedKey,
    /// A certificate does not decode as X.509 DER (or a CERT of an encoding other than
    /// X.509 signature / raw public key).
    #[error("undecodable certificate")]
    BadCertificate,
    /// A certificate's signature by its issuer did not verify.
    #[error("bad certificate signature")]
    BadCertificateSignature,
    /// The path to a trust anchor is longer than the database allows.
    #[error("certificate chain too long")]
    ChainTooLong,
    /// An issuer is not a CA (no basicConstraints cA, or its keyUsage lacks
    /// keyCertSign).
    #[error("issuer is not a CA")]
    NotACa,
    /// An issuer's pathLenConstraint is exceeded.
    #[error("path length constraint exceeded")]
    PathLenExceeded,
    /// The leaf's keyUsage does not allow digital signatures.
    #[error("key usage forbids signing")]
    KeyUsage,
    /// A certificate carries a critical extension this engine does not process.
    #[error("unsupported critical extension")]
    UnsupportedCriticalExtension,
    /// The peer's key is pinned for its identity and the certificate or raw key it sent
    /// is another.
    #[error("not the pinned key")]
    PinnedKeyMismatch,
    /// An RSA key shorter than 2048 bits.
    #[error("key too weak")]
    WeakKey,
}

impl AuthFailure {
    /// The code of the key-exchange delegation's `AuthResult` (`keyx::messages`):
    /// 1 BadAuth, 2 UnknownCa, 3 Expired, 4 IdentityMismatch, 5 MissingCertificate,
    /// 6 UnsupportedMethod; the finer rules without a code of their own there map onto
    /// these (`MalformedAuth` → 1, `NotYetValid` → 3, `UnsupportedAlgorithm` and
    /// `NoSharedKey` → 6, `PinnedKeyMismatch` → 1), the certificate-path rules onto codes
    /// 16 and up (`AuthResult::Other`).
    pub const fn code(self) -> u8 {
        match self {
            AuthFailure::BadAuth | AuthFailure::MalformedAuth | AuthFailure::PinnedKeyMismatch => 1,
            AuthFailure::UnknownCa => 2,
            AuthFailure::Expired | AuthFailure::NotYetValid => 3,
            AuthFailure::IdentityMismatch => 4,
            AuthFailure::MissingCertificate => 5,
            AuthFailure::UnsupportedMethod
            | AuthFailure::UnsupportedAlgorithm
            | AuthFailure::NoSharedKey => 6,
            AuthFailure::BadCertificate => 16,
            AuthFailure::BadCertificateSignature => 17,
            AuthFailure::ChainTooLong => 18,
            AuthFailure::NotACa => 19,
            AuthFailure::PathLenExceeded => 20,
            AuthFailure::KeyUsage => 21,
            AuthFailure::UnsupportedCriticalExtension => 22,
            AuthFailure::WeakKey => 23,
        }
    }
}

impl From<AuthFailure> for IkeError {
    fn from(e: AuthFailure) -> Self {
        IkeError::PeerAuth(e)
    }
}

impl From<AuthFailure> for super::Error {
    fn from(e: AuthFailure) -> Self {
        super::Error::Ike(IkeError::PeerAuth(e))
    }
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

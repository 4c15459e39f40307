//! Ed25519 keys and deputy's compact certificates.
//!
//! A certificate binds a subject name (and optionally more names the subject acts for,
//! such as the appliances a seed 000 crypto proxy deputizes for) to an Ed25519 public key
//! for a validity window, signed by an issuer. It is a TLV field list in the [`wire`]
//! encoding, typically 200 bytes:
//!
//! | field | type | value |
//! |---|---|---|
//! | version | `0x8001` | u8, 1 |
//! | serial | `0x8002` | u64 |
//! | subject | `0x8003` | UTF-8 name |
//! | subject key | `0x8004` | 32-byte Ed25519 public key |
//! | not before | `0x8005` | u64 Unix seconds |
//! | not after | `0x8006` | u64 Unix seconds |
//! | issuer | `0x8007` | UTF-8 name |
//! | issuer key id | `0x8008` | first 8 bytes of SHA-256(issuer public key) |
//! | is CA | `0x8009` | u8, 0 or 1 |
//! | also names | `0x800A` | UTF-8 name, repeatable |
//! | signature | `0x800F` | 64-byte Ed25519 signature; always the last field |
//!
//! The signature covers `"deputy cert v1\0"` followed by every byte before the signature
//! field. Every field is critical: a verifier that does not understand one refuses the
//! certificate. Chains are one level deep: a CA in the [`TrustStore`] signs leaves.
//!
//! [`wire`]: crate::wire

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::CryptoError;
use crate::UnixTime;
use crate::wire::{FieldWriter, Fields, UnknownFieldPolicy, WireError};

const F_VERSION: u16 = 0x8001;
const F_SERIAL: u16 = 0x8002;
const F_SUBJECT: u16 = 0x8003;
const F_SUBJECT_KEY: u16 = 0x8004;
const F_NOT_BEFORE: u16 = 0x8005;
const F_NOT_AFTER: u16 = 0x8006;
const F_ISSUER: u16 = 0x8007;
const F_ISSUER_KEY_ID: u16 = 0x8008;
const F_IS_CA: u16 = 0x8009;
const F_ALSO_NAMES: u16 = 0x800A;
const F_SIGNATURE: u16 = 0x800F;
const KNOWN: [u16; 11] = [
    F_VERSION,
    F_SERIAL,
    F_SUBJECT,
    F_SUBJECT_KEY,
    F_NOT_BEFORE,
    F_NOT_AFTER,
    F_ISSUER,
    F_ISSUER_KEY_ID,
    F_IS_CA,
    F_ALSO_NAMES,
    F_SIGNATURE,
];
const CERT_CONTEXT: &[u8] = b"deputy cert v1\0";
const SIGNATURE_FIELD_LEN: usize = 4 + 64;
/// The most names (subject + also-names) one certificate may carry.
pub const MAX_NAMES: usize = 32;
/// The largest encoded certificate accepted.
pub const MAX_CERT_LEN: usize = 4096;

/// Why a certificate was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The encoding is broken.
    #[error("malformed certificate: {0}")]
    Malformed(WireError),
    /// A certificate version this crate does not know.
    #[error("unsupported certificate version {0}")]
    UnsupportedVersion(u8),
    /// No trusted CA has the issuer's key.
    #[error("issuer {0:?} is not a trusted CA")]
    UnknownIssuer(String),
    /// The issuer's signature does not verify.
    #[error("bad certificate signature")]
    BadSignature,
    /// The validity window has not started.
    #[error("certificate not valid before {0}")]
    NotYetValid(u64),
    /// The validity window has ended.
    #[error("certificate expired at {0}")]
    Expired(u64),
    /// The certificate does not name the expected party.
    #[error("certificate does not name {expected:?}")]
    NameMismatch {
        /// The name the verifier required.
        expected: String,
    },
    /// A CA certificate was presented where a leaf was expected.
    #[error("a CA certificate cannot identify a peer")]
    UnexpectedCa,
    /// A leaf certificate was given where a CA's own certificate was expected
    /// ([`CertificateAuthority::from_parts`]).
    #[error("not a CA certificate")]
    NotCa,
    /// The key is not the one the certificate certifies.
    #[error("the key does not match the certificate")]
    KeyMismatch,
}

impl From<WireError> for CertError {
    fn from(e: WireError) -> Self {
        CertError::Malformed(e)
    }
}

/// The first 8 bytes of SHA-256 of an Ed25519 public key.
pub fn key_id(key: &[u8; 32]) -> [u8; 8] {
    let h = super::kdf::sha256(key);
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[..8]);
    id
}

/// A decoded certificate. Holding one means only that it parsed; trust comes from
/// [`TrustStore::verify`].
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    raw: Vec<u8>,
    serial: u64,
    subject: String,
    also_names: Vec<String>,
    key: [u8; 32],
    not_before: u64,
    not_after: u64,
    issuer: String,
    issuer_key_id: [u8; 8],
    is_ca: bool,
    signature: [u8; 64],
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject)
            .field("also_names", &self.also_names)
            .field("issuer", &self.issuer)
            .field("serial", &self.serial)
            .field("valid", &(self.not_before..self.not_after))
            .field("is_ca", &self.is_ca)
            .finish()
    }
}

impl Certificate {
    /// Parse a certificate (no trust decision).
    pub fn decode(raw: &[u8]) -> Result<Certificate, CertError> {
        if raw.len() > MAX_CERT_LEN {
            return Err(CertError::Malformed(WireError::MessageTooLarge {
                len: raw.len(),
                max: MAX_CERT_LEN,
            }));
        }
        let fields = Fields::parse(raw, MAX_NAMES + KNOWN.len())?;
        fields.check_known(&KNOWN, UnknownFieldPolicy::Reject)?;
        let version = fields.u8(F_VERSION)?;
        if version != 1 {
            return Err(CertError::UnsupportedVersion(version));
        }
        // The signature must be the last field, so "everything before it" is well defined.
        let last = fields
            .iter()
            .last()
            .ok_or(WireError::MissingField(F_SIGNATURE))?;
        if last.ty != F_SIGNATURE || raw.len() < SIGNATURE_FIELD_LEN {
            return Err(WireError::MissingField(F_SIGNATURE).into());
        }
        let signature = fields.array::<64>(F_SIGNATURE)?;
        let also_names = fields
            .all(F_ALSO_NAMES)
            .map(|v| {
                core::str::from_utf8(v)
                    .map(String::from)
                    .map_err(|_| WireError::BadValue(F_ALSO_NAMES))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The field-count bound above leaves room for every known field once plus the
        // names; the names themselves are bounded here.
        if also_names.len() + 1 > MAX_NAMES {
            return Err(WireError::TooManyFields { max: MAX_NAMES }.into());
        }
        let is_ca = match fields.u8(F_IS_CA)? {
            0 => false,
            1 => true,
            _ => return Err(WireError::BadValue(F_IS_CA).into()),
        };
        Ok(Certificate {
            raw: raw.to_vec(),
            serial: fields.u64(F_SERIAL)?,
            subject: fields.string(F_SUBJECT)?,
            also_names,
            key: fields.array(F_SUBJECT_KEY)?,
            not_before: fields.u64(F_NOT_BEFORE)?,
            not_after: fields.u64(F_NOT_AFTER)?,
            issuer: fields.string(F_ISSUER)?,
            issuer_key_id: fields.array(F_ISSUER_KEY_ID)?,
            is_ca,
            signature,
        })
    }

    /// The encoded certificate.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The subject's name.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Further names the subject acts for (seed 000: the appliances a proxy deputizes for).
    pub fn also_names(&self) -> &[String] {
        &self.also_names
    }

    /// Whether the certificate names `name`, as subject or as one of its also-names.
    pub fn names(&self, name: &str) -> bool {
        self.subject == name || self.also_names.iter().any(|n| n == name)
    }

    /// The issuer's name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The serial number.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The subject's Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The validity window, in Unix seconds (inclusive start, exclusive end).
    pub fn validity(&self) -> (UnixTime, UnixTime) {
        (UnixTime(self.not_before), UnixTime(self.not_after))
    }

    /// Whether this is a CA certificate.
    pub fn is_ca(&self) -> bool {
        self.is_ca
    }

    /// Verify a signature made by this certificate's key over `context ‖ message`.
    pub fn verify_signature(
        &self,
        context: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        verify(&self.key, context, message, signature)
    }

    fn tbs(&self) -> &[u8] {
        &self.raw[..self.raw.len() - SIGNATURE_FIELD_LEN]
    }
}

/// Verify an Ed25519 signature by `key` over `context ‖ message` (strict verification:
/// no malleable or small-order encodings).
pub fn verify(
    key: &[u8; 32],
    context: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), CryptoError> {
    let key = VerifyingKey::from_bytes(key).map_err(|_| CryptoError::Malformed)?;
    let sig = Signature::from_slice(signature).map_err(|_| CryptoError::Malformed)?;
    let mut signed = Vec::with_capacity(context.len() + message.len());
    signed.extend_from_slice(context);
    signed.extend_from_slice(message);
    key.verify_strict(&signed, &sig)
        .map_err(|_| CryptoError::BadSignature)
}

/// An Ed25519 signing key. Wiped on drop.
pub struct SigningKeyPair(SigningKey);

impl fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKeyPair(public {:02x?})", &self.public_key()[..4])
    }
}

impl SigningKeyPair {
    /// A fresh key pair.
    pub fn generate(rng: &mut dyn CryptoRng) -> SigningKeyPair {
        let seed = Zeroizing::new(super::random_array::<32>(rng));
        SigningKeyPair(SigningKey::from_bytes(&seed))
    }

    /// Rebuild from the 32-byte secret seed (provisioning), as [`SigningKeyPair::seed`] gave it.
    pub fn from_seed(seed: &[u8; 32]) -> SigningKeyPair {
        SigningKeyPair(SigningKey::from_bytes(seed))
    }

    /// The 32-byte secret seed, for storing the key ([`SigningKeyPair::from_seed`] rebuilds it).
    /// Wiped when the returned value is dropped; whoever stores it must protect it as the
    /// key itself.
    ///
    /// ```
    /// use deputy::crypto::cert::SigningKeyPair;
    /// use rand_core::SeedableRng;
    ///
    /// let key = SigningKeyPair::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(1));
    /// let stored = key.seed();
    /// assert_eq!(SigningKeyPair::from_seed(&stored).public_key(), key.public_key());
    /// ```
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Sign `context ‖ message`.
    pub fn sign(&self, context: &[u8], message: &[u8]) -> [u8; 64] {
        let mut signed = Vec::with_capacity(context.len() + message.len());
        signed.extend_from_slice(context);
        signed.extend_from_slice(message);
        self.0.sign(&signed).to_bytes()
    }
}

/// A certificate together with the private key it certifies: what a server (or an
/// authenticating client) presents.
#[derive(Debug)]
pub struct CertifiedKey {
    /// The certificate.
    pub certificate: Certificate,
    /// Its private key.
    pub key: SigningKeyPair,
}

/// What a CA writes into a certificate it issues.
#[derive(Clone, Debug)]
pub struct CertificateRequest<'a> {
    /// The subject's name.
    pub subject: &'a str,
    /// Further names the subject acts for.
    pub also_names: &'a [&'a str],
    /// The subject's public key.
    pub public_key: [u8; 32],
    /// Start of validity.
    pub not_before: UnixTime,
    /// End of validity (exclusive).
    pub not_after: UnixTime,
    /// Whether the subject may itself sign certificates.
    pub is_ca: bool,
}

/// A certificate authority: its own self-signed certificate and its signing key.
#[derive(Debug)]
pub struct CertificateAuthority {
    identity: CertifiedKey,
}

impl CertificateAuthority {
    /// A new CA with a fresh key and a self-signed certificate valid forever.
    pub fn generate(name: &str, rng: &mut dyn CryptoRng) -> CertificateAuthority {
        let key = SigningKeyPair::generate(rng);
        let request = CertificateRequest {
            subject: name,
            also_names: &[],
            public_key: key.public_key(),
            not_before: UnixTime(0),
            not_after: UnixTime(u64::MAX),
            is_ca: true,
        };
        // The CA's name and key are both ours and bounded, so encoding cannot fail.
        let certificate = sign_certificate(&key, name, &request, rng.next_u64())
            .unwrap_or_else(|_| unreachable!("a CA name under 64 KiB always encodes"));
        CertificateAuthority {
            identity: CertifiedKey { certificate, key },
        }
    }

    /// A CA rebuilt from what was stored of it: its own certificate and the key it
    /// certifies ([`SigningKeyPair::seed`] stores the key, [`Certificate::as_bytes`] the
    /// certificate). Fails if the certificate is not a CA certificate or does not certify
    /// `key`. A driver that restarts keeps its CA this way, and every certificate it
    /// issued stays valid.
    ///
    /// ```
    /// use deputy::crypto::cert::{Certificate, CertificateAuthority, SigningKeyPair};
    /// use rand_core::SeedableRng;
    ///
    /// let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    /// let ca = CertificateAuthority::generate("home CA", &mut rng);
    /// let (stored_cert, stored_key) = (ca.certificate().as_bytes().to_vec(), ca.key().seed());
    /// // After a restart:
    /// let again = CertificateAuthority::from_parts(
    ///     Certificate::decode(&stored_cert).unwrap(),
    ///     SigningKeyPair::from_seed(&stored_key),
    /// ).unwrap();
    /// assert_eq!(again.certificate(), ca.certificate());
    /// ```
    pub fn from_parts(certificate: Certificate, key: SigningKeyPair) -> Result<Self, CertError> {
        if !certificate.is_ca() {
            return Err(CertError::NotCa);
        }
        if *certificate.public_key() != key.public_key() {
            return Err(CertError::KeyMismatch);
        }
        Ok(CertificateAuthority {
            identity: CertifiedKey { certificate, key },
        })
    }

    /// The CA's signing key (to store it: [`SigningKeyPair::seed`]).
    pub fn key(&self) -> &SigningKeyPair {
        &self.identity.key
    }

    /// The CA's self-signed certificate (what devices are provisioned with).
    pub fn certificate(&self) -> &Certificate {
        &self.identity.certificate
    }

    /// Issue a certificate.
    pub fn issue(
        &self,
        request: &CertificateRequest<'_>,
        rng: &mut dyn CryptoRng,
    ) -> Result<Certificate, CertError> {
        if request.also_names.len() + 1 > MAX_NAMES {
            return Err(WireError::TooManyFields { max: MAX_NAMES }.into());
        }
        sign_certificate(
            &self.identity.key,
            self.identity.certificate.subject(),
            request,
            rng.next_u64(),
        )
    }

    /// Generate a key pair and issue it a leaf certificate valid for `lifetime_secs` from
    /// `not_before`.
    pub fn issue_identity(
        &self,
        subject: &str,
        also_names: &[&str],
        not_before: UnixTime,
        lifetime_secs: u64,
        rng: &mut dyn CryptoRng,
    ) -> Result<CertifiedKey, CertError> {
        let key = SigningKeyPair::generate(rng);
        let certificate = self.issue(
            &CertificateRequest {
                subject,
                also_names,
                public_key: key.public_key(),
                not_before,
                not_after: UnixTime(not_before.0.saturating_add(lifetime_secs)),
                is_ca: false,
            },
            rng,
        )?;
        Ok(CertifiedKey { certificate, key })
    }
}

fn sign_certificate(
    issuer_key: &SigningKeyPair,
    issuer_name: &str,
    request: &CertificateRequest<'_>,
    serial: u64,
) -> Result<Certificate, CertError> {
    let mut w = FieldWriter::new()
        .u8(F_VERSION, 1)
        .u64(F_SERIAL, serial)
        .str(F_SUBJECT, request.subject)
        .bytes(F_SUBJECT_KEY, &request.public_key)
        .u64(F_NOT_BEFORE, request.not_before.0)
        .u64(F_NOT_AFTER, request.not_after.0)
        .str(F_ISSUER, issuer_name)
        .bytes(F_ISSUER_KEY_ID, &key_id(&issuer_key.public_key()))
        .u8(F_IS_CA, u8::from(request.is_ca));
    for name in request.also_names {
        w.push(F_ALSO_NAMES, name.as_bytes());
    }
    let tbs = w.finish()?;
    let signature = issuer_key.sign(CERT_CONTEXT, &tbs);
    let raw = FieldWriter::new().bytes(F_SIGNATURE, &signature).finish()?;
    Certificate::decode(&[tbs, raw].concat())
}

/// The CA certificates a party trusts.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    cas: Vec<Certificate>,
}

impl TrustStore {
    /// An empty store (trusts nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// A store trusting one CA.
    pub fn with(ca: Certificate) -> Self {
        let mut s = Self::new();
        s.add(ca);
        s
    }

    /// Trust another CA.
    pub fn add(&mut self, ca: Certificate) {
        self.cas.push(ca);
    }

    /// Whether no CA is trusted.
    pub fn is_empty(&self) -> bool {
        self.cas.is_empty()
    }

    /// Decide whether to trust a peer's certificate at `now`: it must parse, be signed by
    /// a trusted CA (key id and signature), be inside its validity window, be a leaf, and
    /// — if `expected_name` is given — name that party.
    pub fn verify(
        &self,
        raw: &[u8],
        now: UnixTime,
        expected_name: Option<&str>,
    ) -> Result<Certificate, CertError> {
        let cert = Certificate::decode(raw)?;
        let ca = self
            .cas
            .iter()
            .find(|ca| ca.is_ca && key_id(ca.public_key()) == cert.issuer_key_id)
            .ok_or_else(|| CertError::UnknownIssuer(cert.issuer.clone()))?;
        ca.verify_signature(CERT_CONTEXT, cert.tbs(), &cert.signature)
            .map_err(|_| CertError::BadSignature)?;
        if now.0 < cert.not_before {
            return Err(CertError::NotYetValid(cert.not_before));
        }
        if now.0 >= cert.not_after {
            return Err(CertError::Expired(cert.not_after));
        }
        if cert.is_ca {
            return Err(CertError::UnexpectedCa);
        }
        if let Some(name) = expected_name
            && !cert.names(name)
        {
            return Err(CertError::NameMismatch {
                expected: name.into(),
            });
        }
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const T0: UnixTime = UnixTime(1_800_000_000);

    fn setup() -> (CertificateAuthority, CertifiedKey, ChaCha20Rng) {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let ca = CertificateAuthority::generate("home CA", &mut rng);
        let id = ca
            .issue_identity("proxy.home", &["microwave", "aircon"], T0, 3600, &mut rng)
            .unwrap();
        (ca, id, rng)
    }

    #[test]
    fn issued_certificate_verifies_and_names_its_subjects() {
        let (ca, id, _) = setup();
        let store = TrustStore::with(ca.certificate().clone());
        let raw = id.certificate.as_bytes();
        assert!(raw.len() < 300, "compact: {} bytes", raw.len());
        let cert = store
            .verify(raw, UnixTime(T0.0 + 10), Some("microwave"))
            .unwrap();
        assert_eq!(cert.subject(), "proxy.home");
        assert_eq!(cert.issuer(), "home CA");
        assert!(cert.names("aircon") && !cert.names("fridge"));
        assert_eq!(cert.public_key(), &id.key.public_key());
        let sig = id.key.sign(b"ctx", b"msg");
        assert_eq!(cert.verify_signature(b"ctx", b"msg", &sig), Ok(()));
        assert_eq!(
            cert.verify_signature(b"ctx", b"msh", &sig),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn refusals_are_typed() {
        let (ca, id, mut rng) = setup();
        let store = TrustStore::with(ca.certificate().clone());
        let raw = id.certificate.as_bytes();
        assert_eq!(
            store.verify(raw, UnixTime(T0.0 - 1), None),
            Err(CertError::NotYetValid(T0.0))
        );
        assert_eq!(
            store.verify(raw, UnixTime(T0.0 + 3600), None),
            Err(CertError::Expired(T0.0 + 3600))
        );
        assert_eq!(
            store.verify(raw, T0, Some("fridge")),
            Err(CertError::NameMismatch {
                expected: "fridge".into()
            })
        );
        let other = CertificateAuthority::generate("evil CA", &mut rng);
        assert_eq!(
            TrustStore::with(other.certificate().clone()).verify(raw, T0, None),
            Err(CertError::UnknownIssuer("home CA".into()))
        );
        assert_eq!(
            store.verify(ca.certificate().as_bytes(), T0, None),
            Err(CertError::UnexpectedCa)
        );
        assert_eq!(
            TrustStore::new().verify(raw, T0, None),
            Err(CertError::UnknownIssuer("home CA".into()))
        );
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let (ca, id, _) = setup();
        let store = TrustStore::with(ca.certificate().clone());
        let raw = id.certificate.as_bytes();
        for i in 0..raw.len() {
            for bit in [0x01, 0x80] {
                let mut bad = raw.to_vec();
                bad[i] ^= bit;
                assert!(
                    store.verify(&bad, T0, None).is_err(),
                    "byte {i} bit {bit:#x}"
                );
            }
        }
    }

    #[test]
    fn the_name_and_size_bounds_hold_on_decode() {
        let (ca, _, mut rng) = setup();
        let store = TrustStore::with(ca.certificate().clone());
        let key = SigningKeyPair::generate(&mut rng).public_key();
        let names: Vec<String> = (0..=MAX_NAMES).map(|i| alloc::format!("n{i}")).collect();
        let signed = |also: &[String]| {
            let also: Vec<&str> = also.iter().map(String::as_str).collect();
            let request = CertificateRequest {
                subject: "subject",
                also_names: &also,
                public_key: key,
                not_before: T0,
                not_after: UnixTime(T0.0 + 60),
                is_ca: false,
            };
            // Signed directly, past `issue`'s own check, as a foreign CA could.
            sign_certificate(&ca.identity.key, "home CA", &request, 1)
        };
        // Subject + 31 also-names is the bound; one more name is refused.
        let at_bound = signed(&names[..MAX_NAMES - 1]).unwrap();
        assert!(store.verify(at_bound.as_bytes(), T0, None).is_ok());
        for extra in [MAX_NAMES, MAX_NAMES + 1] {
            assert!(
                matches!(
                    signed(&names[..extra]),
                    Err(CertError::Malformed(WireError::TooManyFields { .. }))
                ),
                "{} names accepted",
                extra + 1
            );
        }
        // An encoding over MAX_CERT_LEN is refused before it is parsed.
        let long = alloc::format!("{:x<1$}", "", MAX_CERT_LEN);
        assert!(matches!(
            signed(&[long]),
            Err(CertError::Malformed(WireError::MessageTooLarge {
                max: MAX_CERT_LEN,
                ..
            }))
        ));
    }

    #[test]
    fn a_signature_field_must_come_last() {
        let (_, id, _) = setup();
        let raw = id.certificate.as_bytes();
        let mut moved = FieldWriter::new()
            .bytes(F_SIGNATURE, &[0; 64])
            .finish()
            .unwrap();
        moved.extend_from_slice(&raw[..raw.len() - SIGNATURE_FIELD_LEN]);
        assert_eq!(
            Certificate::decode(&moved),
            Err(CertError::Malformed(WireError::MissingField(F_SIGNATURE)))
        );
    }
}

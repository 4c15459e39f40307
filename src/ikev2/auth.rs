//! IKE SA authentication (RFC 7296 §2.15, §3.6-§3.8): what we prove and how the peer's
//! proof is checked, as pure functions that hold no actor state.
//!
//! The plain [`super::Initiator`] and [`super::Responder`] call them for IKE_AUTH; a
//! key-exchange substitution server calls the same functions on behalf of a terminal.
//!
//! ```text
//! pub enum Credential { Psk(SecretBytes), Signature(Signer) }
//! Signer::new(key: SigningKey, chain: Vec<Vec<u8>>) -> Result<Signer, IkeError>   // DER, leaf first
//! SigningKey::{from_pkcs8_der(&[u8]), ecdsa_p256_from_sec1_der(&[u8]),
//!              ecdsa_p256_from_bytes(&[u8]), ed25519_from_bytes(&[u8; 32])}
//! pub struct Proof { pub auth: AuthPayload, pub certs: Vec<CertPayload> }
//!
//! pub fn prove(cred: &Credential, sk_p: &[u8], message: &[u8], peer_nonce: &[u8],
//!              our_id: &Identity, rng: &mut dyn CryptoRng) -> Result<Proof, IkeError>
//! pub fn verify(db: &AuthKeyDb, sk_p: &[u8], message: &[u8], our_nonce: &[u8],
//!               peer_id: &Identity, auth: &AuthPayload, certs: &[CertPayload],
//!               now: UnixTime) -> Result<VerifiedPeer, AuthFailure>
//! ```
//!
//! - `message` is the IKE_SA_INIT message the prover sent (the initiator's request, the
//!   responder's response), `peer_nonce` / `our_nonce` the nonce of the other side
//!   (Nr for the initiator's AUTH, Ni for the responder's), `sk_p` the prover's SK_p
//!   (SK_pi for the initiator's AUTH, SK_pr for the responder's) and the identity the
//!   prover's ID payload carries. The octets signed or MACed are §2.15's
//!   `message | nonce | prf(SK_p, RestOfIDPayload)`.
//! - [`Credential::Psk`] proves with method 2 (Shared Key MIC); [`Credential::Signature`]
//!   with method 14 (RFC 7427 Digital Signature): ECDSA P-256 with SHA-256 (DER
//!   signature) or Ed25519 (RFC 8420), and one CERT payload (X.509, encoding 4) per
//!   certificate of the chain, leaf first.
//! - [`verify`] accepts method 2 (the peer's PSK from the [`AuthKeyDb`], compared in
//!   constant time), 14 (ECDSA P-256 with SHA-256/384/512, Ed25519, RSA PKCS#1 v1.5 with
//!   SHA-256/384/512, RSASSA-PSS), 9 (ECDSA P-256 with SHA-256, RFC 4754) and 1 (RSA
//!   PKCS#1 v1.5 with SHA-1, RFC 7296). Signatures are checked with the key pinned for the
//!   peer's identity, or with the key of a certificate that chains to a trust anchor and
//!   names the peer's identity. Every refusal is one [`AuthFailure`] variant.
//! - [`AuthKeyDb::certreq`] builds our CERTREQ (SHA-1 of each anchor's
//!   SubjectPublicKeyInfo); [`CertReq::hashes`] reads the peer's.
//!
//! Certificate path rules: the peer's certificates are decoded (DER, at most
//! [`super::codec::MAX_CERTS`]); the first X.509 one is the leaf; walking up by issuer
//! name, each certificate's signature is verified with its issuer's key, every issuer must
//! be a CA (basicConstraints cA, keyCertSign if keyUsage is present) whose
//! pathLenConstraint holds, every certificate of the path (and the anchor) must be valid
//! at `now`, no certificate may carry a critical extension other than basicConstraints,
//! keyUsage, extKeyUsage, subjectAltName, subject/authority key identifiers, and the path
//! (leaf and intermediates) may hold at most [`AuthKeyDb::max_chain_len`] certificates. A
//! leaf with keyUsage must allow digitalSignature. No CRL, OCSP, name constraints or
//! policies.

mod x509;

use alloc::vec::Vec;
use core::fmt;

use der::{Decode, Encode};
use rand_core::CryptoRng;
use sha1::{Digest as _, Sha1};

use super::IkeError;
use super::codec::{
    AuthPayload, CertPayload, CertReq, Identity, MAX_CERT_LEN, MAX_CERTS, Notify, Payload,
};
use super::consts::{auth_method, cert_encoding, hash_algorithm, notify};
use super::keys::{SecretBytes, prf, psk_auth};
use crate::UnixTime;

pub use x509::{PeerKey, certificate_identities};

/// The octets an AUTH signs (RFC 7296 §2.15):
/// `message | nonce | prf(SK_p, RestOfIDPayload)`.
pub fn signed_octets(message: &[u8], nonce: &[u8], sk_p: &[u8], id: &Identity) -> Vec<u8> {
    let maced_id = prf(sk_p, &[&id.payload_body()]);
    let mut out = Vec::with_capacity(message.len() + nonce.len() + maced_id.len());
    out.extend_from_slice(message);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&maced_id[..]);
    out
}

/// A private key we sign AUTH with. Wipes itself on drop; `Debug` names only the type.
#[derive(Clone)]
pub enum SigningKey {
    /// ECDSA on P-256, signing with SHA-256.
    EcdsaP256(p256::ecdsa::SigningKey),
    /// Ed25519 (RFC 8420).
    Ed25519(ed25519_dalek::SigningKey),
}

impl SigningKey {
    /// A PKCS#8 DER private key (`PrivateKeyInfo`) of either type.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, IkeError> {
        use p256::pkcs8::DecodePrivateKey as _;
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
            return Ok(SigningKey::EcdsaP256(k));
        }
        ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map(SigningKey::Ed25519)
            .map_err(|_| IkeError::BadPrivateKey)
    }

    /// A SEC1 `ECPrivateKey` (DER) on P-256: what strongSwan's `pki --gen --type ecdsa`
    /// and `openssl ecparam -genkey` write.
    pub fn ecdsa_p256_from_sec1_der(der: &[u8]) -> Result<SigningKey, IkeError> {
        p256::SecretKey::from_sec1_der(der)
            .map(|k| SigningKey::EcdsaP256(k.into()))
            .map_err(|_| IkeError::BadPrivateKey)
    }

    /// A P-256 private scalar, 32 octets big-endian.
    pub fn ecdsa_p256_from_bytes(scalar: &[u8]) -> Result<SigningKey, IkeError> {
        p256::ecdsa::SigningKey::from_slice(scalar)
            .map(SigningKey::EcdsaP256)
            .map_err(|_| IkeError::BadPrivateKey)
    }

    /// An Ed25519 secret key (the 32-octet seed).
    pub fn ed25519_from_bytes(seed: &[u8; 32]) -> SigningKey {
        SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The public key as a DER SubjectPublicKeyInfo (what a certificate carries and what a
    /// peer pins).
    pub fn public_key_der(&self) -> Result<Vec<u8>, IkeError> {
        use p256::pkcs8::EncodePublicKey as _;
        let doc = match self {
            SigningKey::EcdsaP256(k) => k.verifying_key().to_public_key_der(),
            SigningKey::Ed25519(k) => k.verifying_key().to_public_key_der(),
        };
        doc.map(|d| d.as_bytes().to_vec())
            .map_err(|_| IkeError::Unencodable("public key"))
    }

    /// The RFC 7427 AlgorithmIdentifier (DER) of our signatures.
    fn algorithm_der(&self) -> &'static [u8] {
        match self {
            SigningKey::EcdsaP256(_) => x509::ALG_ECDSA_SHA256,
            SigningKey::Ed25519(_) => x509::ALG_ED25519,
        }
    }

    /// Sign `msg`: ECDSA with SHA-256 (DER `Ecdsa-Sig-Value`, RFC 7427 §3) or Ed25519.
    fn sign(&self, msg: &[u8], rng: &mut dyn CryptoRng) -> Result<Vec<u8>, IkeError> {
        match self {
            SigningKey::EcdsaP256(k) => {
                use p256::ecdsa::signature::RandomizedSigner as _;
                let sig: p256::ecdsa::DerSignature = k
                    .try_sign_with_rng(rng, msg)
                    .map_err(|_| IkeError::Unencodable("ECDSA signature"))?;
                Ok(sig.as_bytes().to_vec())
            }
            SigningKey::Ed25519(k) => {
                use ed25519_dalek::Signer as _;
                Ok(k.sign(msg).to_bytes().to_vec())
            }
        }
    }

    fn secret_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(match self {
            SigningKey::EcdsaP256(k) => k.to_bytes().to_vec(),
            SigningKey::Ed25519(k) => k.to_bytes().to_vec(),
        })
    }
}

impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        core::mem::discriminant(self) == core::mem::discriminant(other)
            && crate::crypto::ct_eq(&self.secret_bytes(), &other.secret_bytes())
    }
}

impl Eq for SigningKey {}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigningKey::EcdsaP256(_) => f.write_str("SigningKey::EcdsaP256(..)"),
            SigningKey::Ed25519(_) => f.write_str("SigningKey::Ed25519(..)"),
        }
    }
}

/// A private key and its certificate chain (DER, leaf first, then intermediates; the
/// trust anchor may be left out). An empty chain is a raw key: no CERT is sent and the
/// peer must have our public key pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    // Boxed so that a `Credential` stays small whichever variant it holds.
    key: alloc::boxed::Box<SigningKey>,
    chain: Vec<Vec<u8>>,
}

impl Signer {
    /// Pair `key` with `chain`. Refused: more than [`MAX_CERTS`] certificates, one larger
    /// than [`MAX_CERT_LEN`] or not X.509 DER ([`IkeError::BadConfiguredCertificate`]), a
    /// leaf whose public key is not `key`'s ([`IkeError::CertificateKeyMismatch`]).
    pub fn new(key: SigningKey, chain: Vec<Vec<u8>>) -> Result<Signer, IkeError> {
        if chain.len() > MAX_CERTS {
            return Err(IkeError::TooManyCertificates(MAX_CERTS));
        }
        for c in &chain {
            if c.len() > MAX_CERT_LEN {
                return Err(IkeError::CertificateTooLarge {
                    len: c.len(),
                    max: MAX_CERT_LEN,
                });
            }
            x509_cert::Certificate::from_der(c).map_err(|_| IkeError::BadConfiguredCertificate)?;
        }
        if let Some(leaf) = chain.first() {
            let leaf = x509_cert::Certificate::from_der(leaf)
                .map_err(|_| IkeError::BadConfiguredCertificate)?;
            let spki = leaf
                .tbs_certificate()
                .subject_public_key_info()
                .to_der()
                .map_err(|_| IkeError::BadConfiguredCertificate)?;
            if spki != key.public_key_der()? {
                return Err(IkeError::CertificateKeyMismatch);
            }
        }
        Ok(Signer {
            key: alloc::boxed::Box::new(key),
            chain,
        })
    }

    /// A PKCS#8 DER private key and its chain.
    pub fn from_pkcs8_der(key: &[u8], chain: Vec<Vec<u8>>) -> Result<Signer, IkeError> {
        Signer::new(SigningKey::from_pkcs8_der(key)?, chain)
    }

    /// The private key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The certificates, leaf first.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }
}

/// What we authenticate with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A pre-shared key: AUTH method 2 (Shared Key Message Integrity Code).
    Psk(SecretBytes),
    /// A private key and its certificates: AUTH method 14 (RFC 7427) and CERT payloads.
    Signature(Signer),
}

/// Our AUTH payload and the CERT payloads that go before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The AUTH payload.
    pub auth: AuthPayload,
    /// CERT payloads (X.509 signature), leaf first; empty for a PSK or a raw key.
    pub certs: Vec<CertPayload>,
}

/// Compute our AUTH (RFC 7296 §2.15) over `message` (the IKE_SA_INIT message we sent),
/// the peer's nonce and `prf(sk_p, our ID payload)`, and list our certificates.
pub fn prove(
    cred: &Credential,
    sk_p: &[u8],
    message: &[u8],
    peer_nonce: &[u8],
    our_id: &Identity,
    rng: &mut dyn CryptoRng,
) -> Result<Proof, IkeError> {
    match cred {
        Credential::Psk(psk) => {
            let mic = psk_auth(
                psk.as_bytes(),
                message,
                peer_nonce,
                sk_p,
                &our_id.payload_body(),
            );
            Ok(Proof {
                auth: AuthPayload {
                    method: auth_method::SHARED_KEY_MIC,
                    data: mic.to_vec(),
                },
                certs: Vec::new(),
            })
        }
        Credential::Signature(signer) => {
            let signed = signed_octets(message, peer_nonce, sk_p, our_id);
            let sig = signer.key.sign(&signed, rng)?;
            let alg = signer.key.algorithm_der();
            let mut data = Vec::with_capacity(1 + alg.len() + sig.len());
            // The AlgorithmIdentifiers are constants of 7 and 12 octets.
            data.push(alg.len() as u8);
            data.extend_from_slice(alg);
            data.extend_from_slice(&sig);
            Ok(Proof {
                auth: AuthPayload {
                    method: auth_method::DIGITAL_SIGNATURE,
                    data,
                },
                certs: signer
                    .chain
                    .iter()
                    .map(|c| CertPayload {
                        encoding: cert_encoding::X509_SIGNATURE,
                        data: c.clone(),
                    })
                    .collect(),
            })
        }
    }
}

/// How the peer proved itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAuth {
    /// A pre-shared key (method 2).
    SharedKey,
    /// A signature with the key pinned for its identity.
    PinnedKey,
    /// A signature with the key of a certificate that chains to a trust anchor.
    Certificate {
        /// The leaf's subject (DER Name).
        subject: Vec<u8>,
        /// The subject of the trust anchor the path ends at (DER Name).
        anchor: Vec<u8>,
    },
}

/// A peer whose AUTH verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPeer {
    /// The AUTH method it used.
    pub method: u8,
    /// What vouched for it.
    pub via: PeerAuth,
}

/// Check the peer's AUTH (RFC 7296 §2.15) over `message` (the IKE_SA_INIT message the
/// peer sent), our nonce and `prf(sk_p, peer's ID payload)`, with what `db` holds for
/// `peer_id`; certificates are judged at wall-clock time `now`.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    db: &AuthKeyDb,
    sk_p: &[u8],
    message: &[u8],
    our_nonce: &[u8],
    peer_id: &Identity,
    auth: &AuthPayload,
    certs: &[CertPayload],
    now: UnixTime,
) -> Result<VerifiedPeer, AuthFailure> {
    let method = auth.method;
    if method == auth_method::SHARED_KEY_MIC {
        let psk = db.psk_for(peer_id).ok_or(AuthFailure::NoSharedKey)?;
        let expected = psk_auth(
            psk.as_bytes(),
            message,
            our_nonce,
            sk_p,
            &peer_id.payload_body(),
        );
        return if crate::crypto::ct_eq(&expected[..], &auth.data) {
            Ok(VerifiedPeer {
                method,
                via: PeerAuth::SharedKey,
            })
        } else {
            Err(AuthFailure::BadAuth)
        };
    }
    let sig = x509::AuthSignature::parse(method, &auth.data)?;
    let (key, via) = peer_key(db, peer_id, certs, now)?;
    let signed = signed_octets(message, our_nonce, sk_p, peer_id);
    key.verify_auth(&sig, &signed)?;
    Ok(VerifiedPeer { method, via })
}

/// The key the peer's AUTH must verify with: the pinned one, or the leaf's of a path to
/// a trust anchor that names `peer_id`.
fn peer_key(
    db: &AuthKeyDb,
    peer_id: &Identity,
    certs: &[CertPayload],
    now: UnixTime,
) -> Result<(PeerKey, PeerAuth), AuthFailure> {
    let x509: Vec<&[u8]> = certs
        .iter()
        .filter(|c| c.encoding == cert_encoding::X509_SIGNATURE)
        .map(|c| c.data.as_slice())
        .take(MAX_CERTS + 1)
        .collect();
    let raw = certs
        .iter()
        .find(|c| c.encoding == cert_encoding::RAW_PUBLIC_KEY)
        .map(|c| c.data.as_slice());
    if certs.iter().any(|c| {
        c.encoding != cert_encoding::X509_SIGNATURE && c.encoding != cert_encoding::RAW_PUBLIC_KEY
    }) && x509.is_empty()
        && raw.is_none()
    {
        return Err(AuthFailure::BadCertificate);
    }
    if let Some(pinned) = db.pinned_key(peer_id) {
        let sent = match (x509.first(), raw) {
            (Some(leaf), _) => Some(x509::leaf_spki(leaf)?),
            (None, Some(r)) => Some(r.to_vec()),
            (None, None) => None,
        };
        if sent.is_some_and(|s| s != pinned) {
            return Err(AuthFailure::PinnedKeyMismatch);
        }
        return Ok((PeerKey::from_spki_der(pinned)?, PeerAuth::PinnedKey));
    }
    if x509.is_empty() {
        return Err(if raw.is_some() {
            AuthFailure::UnknownCa
        } else {
            AuthFailure::MissingCertificate
        });
    }
    let path = x509::validate_path(db, &x509, now)?;
    x509::check_identity(&path.leaf, peer_id)?;
    Ok((
        path.key,
        PeerAuth::Certificate {
            subject: path.subject,
            anchor: path.anchor,
        },
    ))
}

/// One trust anchor: a CA certificate, kept with what path validation reads of it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TrustAnchor {
    cert: x509_cert::Certificate,
    der: Vec<u8>,
    subject: Vec<u8>,
    spki: Vec<u8>,
    spki_sha1: [u8; 20],
}

/// The authentication-key database (seed 004's): trust anchors, public keys pinned per
/// peer identity, pre-shared keys per peer identity and one for any peer. Every table is
/// bounded ([`AuthKeyDb::MAX_TRUST_ANCHORS`], [`AuthKeyDb::MAX_PINNED_KEYS`],
/// [`AuthKeyDb::MAX_PEER_PSKS`]); a full table refuses with
/// [`crate::Error::CapacityExceeded`].
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKeyDb {
    anchors: Vec<TrustAnchor>,
    pinned: Vec<(Identity, Vec<u8>)>,
    psks: Vec<(Identity, SecretBytes)>,
    any_psk: Option<SecretBytes>,
    max_chain_len: usize,
}

impl Default for AuthKeyDb {
    fn default() -> Self {
        AuthKeyDb::new()
    }
}

impl fmt::Debug for AuthKeyDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthKeyDb")
            .field("anchors", &self.anchors.len())
            .field("pinned", &self.pinned.len())
            .field("psks", &self.psks.len())
            .field("any_psk", &self.any_psk.is_some())
            .field("max_chain_len", &self.max_chain_len)
            .finish()
    }
}

impl AuthKeyDb {
    /// Most trust anchors.
    pub const MAX_TRUST_ANCHORS: usize = 64;
    /// Most pinned public keys.
    pub const MAX_PINNED_KEYS: usize = 1024;
    /// Most per-peer pre-shared keys.
    pub const MAX_PEER_PSKS: usize = 1024;
    /// Default bound on a peer's certificate path: the leaf and up to three intermediates.
    pub const DEFAULT_MAX_CHAIN_LEN: usize = 4;

    /// An empty database: nothing is trusted.
    pub fn new() -> AuthKeyDb {
        AuthKeyDb {
            anchors: Vec::new(),
            pinned: Vec::new(),
            psks: Vec::new(),
            any_psk: None,
            max_chain_len: Self::DEFAULT_MAX_CHAIN_LEN,
        }
    }

    /// Trust a CA certificate (DER). The same certificate twice is kept once.
    pub fn add_trust_anchor(&mut self, der: &[u8]) -> Result<(), crate::Error> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|_| IkeError::BadConfiguredCertificate)?;
        let tbs = cert.tbs_certificate();
        let subject = tbs
            .subject()
            .to_der()
            .map_err(|_| IkeError::BadConfiguredCertificate)?;
        let spki = tbs
            .subject_public_key_info()
            .to_der()
            .map_err(|_| IkeError::BadConfiguredCertificate)?;
        PeerKey::from_spki_der(&spki).map_err(|_| IkeError::BadConfiguredCertificate)?;
        if self.anchors.iter().any(|a| a.der == der) {
            return Ok(());
        }
        if self.anchors.len() >= Self::MAX_TRUST_ANCHORS {
            return Err(crate::Error::CapacityExceeded {
                what: "trust anchors",
                bound: Self::MAX_TRUST_ANCHORS,
            });
        }
        let spki_sha1 = Sha1::digest(&spki).into();
        self.anchors.push(TrustAnchor {
            cert,
            der: der.to_vec(),
            subject,
            spki,
            spki_sha1,
        });
        Ok(())
    }

    /// Accept signatures from `peer` made with this public key (DER SubjectPublicKeyInfo of
    /// P-256, Ed25519 or RSA), without a certificate path. Replaces an earlier pin of
    /// `peer`; the pin is then the only key accepted for `peer`.
    pub fn pin_public_key(&mut self, peer: Identity, spki_der: &[u8]) -> Result<(), crate::Error> {
        PeerKey::from_spki_der(spki_der).map_err(|_| IkeError::BadPinnedKey)?;
        if let Some(slot) = self.pinned.iter_mut().find(|(id, _)| *id == peer) {
            slot.1 = spki_der.to_vec();
            return Ok(());
        }
        if self.pinned.len() >= Self::MAX_PINNED_KEYS {
            return Err(crate::Error::CapacityExceeded {
                what: "pinned keys",
                bound: Self::MAX_PINNED_KEYS,
            });
        }
        self.pinned.push((peer, spki_der.to_vec()));
        Ok(())
    }

    /// The pre-shared key `peer` authenticates with (replaces an earlier one).
    pub fn add_peer_psk(&mut self, peer: Identity, psk: &[u8]) -> Result<(), crate::Error> {
        if let Some(slot) = self.psks.iter_mut().find(|(id, _)| *id == peer) {
            slot.1 = SecretBytes::from_slice(psk);
            return Ok(());
        }
        if self.psks.len() >= Self::MAX_PEER_PSKS {
            return Err(crate::Error::CapacityExceeded {
                what: "peer pre-shared keys",
                bound: Self::MAX_PEER_PSKS,
            });
        }
        self.psks.push((peer, SecretBytes::from_slice(psk)));
        Ok(())
    }

    /// The pre-shared key of any peer without one of its own (`None`: none).
    pub fn set_any_peer_psk(&mut self, psk: Option<&[u8]>) {
        self.any_psk = psk.map(SecretBytes::from_slice);
    }

    /// Bound the peer's certificate path (leaf and intermediates, not the anchor):
    /// 1 ..= [`MAX_CERTS`].
    pub fn set_max_chain_len(&mut self, n: usize) -> Result<(), crate::Error> {
        if n == 0 || n > MAX_CERTS {
            return Err(IkeError::TooManyCertificates(MAX_CERTS).into());
        }
        self.max_chain_len = n;
        Ok(())
    }

    /// The bound on a peer's certificate path.
    pub fn max_chain_len(&self) -> usize {
        self.max_chain_len
    }

    /// The pre-shared key for `peer`: its own, else the one for any peer.
    pub fn psk_for(&self, peer: &Identity) -> Option<&SecretBytes> {
        self.psks
            .iter()
            .find(|(id, _)| id == peer)
            .map(|(_, k)| k)
            .or(self.any_psk.as_ref())
    }

    /// The public key pinned for `peer` (DER SubjectPublicKeyInfo).
    pub fn pinned_key(&self, peer: &Identity) -> Option<&[u8]> {
        self.pinned
            .iter()
            .find(|(id, _)| id == peer)
            .map(|(_, k)| k.as_slice())
    }

    /// The trust anchors (DER).
    pub fn trust_anchors(&self) -> impl Iterator<Item = &[u8]> {
        self.anchors.iter().map(|a| a.der.as_slice())
    }

    /// Whether the database can verify signatures (anchors or pinned keys).
    pub fn accepts_signatures(&self) -> bool {
        !self.anchors.is_empty() || !self.pinned.is_empty()
    }

    /// Our CERTREQ (RFC 7296 §3.7): X.509, the SHA-1 hash of each anchor's
    /// SubjectPublicKeyInfo. `None` without anchors.
    pub fn certreq(&self) -> Option<CertReq> {
        if self.anchors.is_empty() {
            return None;
        }
        Some(CertReq {
            encoding: cert_encoding::X509_SIGNATURE,
            authorities: self.anchors.iter().flat_map(|a| a.spki_sha1).collect(),
        })
    }

    /// Whether any of `reqs` (a peer's CERTREQ payloads) names one of our anchors.
    pub fn requested_by(&self, reqs: &[&CertReq]) -> bool {
        reqs.iter()
            .flat_map(|r| r.hashes())
            .any(|h| self.anchors.iter().any(|a| a.spki_sha1 == h))
    }

    fn anchors_named(&self, issuer: &[u8]) -> impl Iterator<Item = &TrustAnchor> {
        self.anchors.iter().filter(move |a| a.subject == issuer)
    }
}

/// What IKE_SA_INIT adds for authentication: SIGNATURE_HASH_ALGORITHMS when we sign or
/// verify signatures, and (responder, with trust anchors) our CERTREQ (RFC 7296 §1.2: the
/// responder may request certificates in IKE_SA_INIT; the initiator does in IKE_AUTH).
pub fn sa_init_payloads(cred: &Credential, db: &AuthKeyDb, responder: bool) -> Vec<Payload> {
    let mut out = Vec::new();
    if matches!(cred, Credential::Signature(_)) || db.accepts_signatures() {
        out.push(Payload::Notify(signature_hash_algorithms()));
    }
    if responder && let Some(req) = db.certreq() {
        out.push(Payload::CertReq(req));
    }
    out
}

/// The CERT payloads among `payloads`.
pub fn cert_payloads(payloads: &[Payload]) -> Vec<CertPayload> {
    payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Cert(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// SHA-1 of a DER SubjectPublicKeyInfo: how a CERTREQ names an authority.
pub fn spki_sha1(spki_der: &[u8]) -> [u8; 20] {
    Sha1::digest(spki_der).into()
}

/// The SIGNATURE_HASH_ALGORITHMS notify (RFC 7427 §4, RFC 8420): SHA2-256, SHA2-384,
/// SHA2-512 and Identity (Ed25519), sent in IKE_SA_INIT by a side that signs or verifies
/// signatures.
pub fn signature_hash_algorithms() -> Notify {
    let mut data = Vec::with_capacity(8);
    for h in [
        hash_algorithm::SHA2_256,
        hash_algorithm::SHA2_384,
        hash_algorithm::SHA2_512,
        hash_algorithm::IDENTITY,
    ] {
        data.extend_from_slice(&h.to_be_bytes());
    }
    Notify::new(notify::SIGNATURE_HASH_ALGORITHMS, data)
}

pub use crate::error::AuthFailure;

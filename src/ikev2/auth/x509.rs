//! Peer keys, signature algorithms and the certificate path: decoding with RustCrypto's
//! `x509-cert`/`der`/`spki`, verifying with `p256`, `ed25519-dalek` and `rsa`.

use alloc::vec::Vec;

use der::asn1::AnyRef;
use der::oid::ObjectIdentifier;
use der::{Decode, Encode, Reader, SliceReader};
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectAltName};

use super::{AuthFailure, AuthKeyDb};
use crate::UnixTime;
use crate::ikev2::codec::Identity;
use crate::ikev2::consts::{auth_method, id_type};

/// RFC 7427 Appendix A.3.1: ecdsa-with-SHA256, parameters absent.
pub(super) const ALG_ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
/// RFC 8420 §2: id-Ed25519, parameters absent.
pub(super) const ALG_ED25519: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// Extensions a path may mark critical: basicConstraints, keyUsage, extKeyUsage,
/// subjectAltName, subject and authority key identifiers.
const KNOWN_CRITICAL: [ObjectIdentifier; 6] = [
    ObjectIdentifier::new_unwrap("2.5.29.19"),
    ObjectIdentifier::new_unwrap("2.5.29.15"),
    ObjectIdentifier::new_unwrap("2.5.29.37"),
    ObjectIdentifier::new_unwrap("2.5.29.17"),
    ObjectIdentifier::new_unwrap("2.5.29.14"),
    ObjectIdentifier::new_unwrap("2.5.29.35"),
];

/// The smallest RSA modulus accepted, in octets (2048 bits).
const MIN_RSA_LEN: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_oid(oid: ObjectIdentifier) -> Option<Hash> {
        match oid {
            OID_SHA256 => Some(Hash::Sha256),
            OID_SHA384 => Some(Hash::Sha384),
            OID_SHA512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    fn digest(self, msg: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        match self {
            Hash::Sha1 => sha1::Sha1::digest(msg).to_vec(),
            Hash::Sha256 => sha2::Sha256::digest(msg).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(msg).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(msg).to_vec(),
        }
    }
}

/// A signature algorithm this engine verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SigAlg {
    /// ECDSA (DER signature) on P-256 with this hash.
    Ecdsa(Hash),
    /// ECDSA P-256 with SHA-256, signature r ‖ s (RFC 4754).
    EcdsaFixed,
    /// PureEdDSA on Ed25519.
    Ed25519,
    /// RSASSA-PKCS1-v1_5 with this hash.
    RsaPkcs1(Hash),
    /// RSASSA-PSS with this hash (MGF1 with the same hash) and salt length.
    RsaPss(Hash, usize),
}

impl SigAlg {
    fn from_identifier(alg: &AlgorithmIdentifierRef<'_>) -> Result<SigAlg, AuthFailure> {
        let absent = alg.parameters.is_none();
        let absent_or_null = alg
            .parameters
            .as_ref()
            .is_none_or(|p| p.is_null() && p.value().is_empty());
        let ok = |cond: bool, a: SigAlg| {
            if cond {
                Ok(a)
            } else {
                Err(AuthFailure::UnsupportedAlgorithm)
            }
        };
        match alg.oid {
            OID_ECDSA_SHA256 => ok(absent, SigAlg::Ecdsa(Hash::Sha256)),
            OID_ECDSA_SHA384 => ok(absent, SigAlg::Ecdsa(Hash::Sha384)),
            OID_ECDSA_SHA512 => ok(absent, SigAlg::Ecdsa(Hash::Sha512)),
            OID_ED25519 => ok(absent, SigAlg::Ed25519),
            OID_RSA_SHA256 => ok(absent_or_null, SigAlg::RsaPkcs1(Hash::Sha256)),
            OID_RSA_SHA384 => ok(absent_or_null, SigAlg::RsaPkcs1(Hash::Sha384)),
            OID_RSA_SHA512 => ok(absent_or_null, SigAlg::RsaPkcs1(Hash::Sha512)),
            OID_RSA_PSS => {
                let params = alg.parameters.ok_or(AuthFailure::UnsupportedAlgorithm)?;
                pss(params)
            }
            _ => Err(AuthFailure::UnsupportedAlgorithm),
        }
    }
}

/// RSASSA-PSS-params (RFC 8017 A.2.3) with SHA-2, MGF1 over the same hash, trailer BC.
fn pss(params: AnyRef<'_>) -> Result<SigAlg, AuthFailure> {
    let der = params
        .to_der()
        .map_err(|_| AuthFailure::UnsupportedAlgorithm)?;
    let p =
        pkcs1::RsaPssParamsOwned::from_der(&der).map_err(|_| AuthFailure::UnsupportedAlgorithm)?;
    let hash = Hash::from_oid(p.hash.oid).ok_or(AuthFailure::UnsupportedAlgorithm)?;
    let mgf_hash = p
        .mask_gen
        .parameters
        .as_ref()
        .map(|h| h.oid)
        .ok_or(AuthFailure::UnsupportedAlgorithm)?;
    if p.mask_gen.oid != OID_MGF1 || Hash::from_oid(mgf_hash) != Some(hash) {
        return Err(AuthFailure::UnsupportedAlgorithm);
    }
    if p.trailer_field != pkcs1::TrailerField::BC {
        return Err(AuthFailure::UnsupportedAlgorithm);
    }
    Ok(SigAlg::RsaPss(hash, usize::from(p.salt_len)))
}

/// An AUTH payload's signature, parsed by method.
pub(super) struct AuthSignature<'a> {
    alg: SigAlg,
    sig: &'a [u8],
}

impl<'a> AuthSignature<'a> {
    /// Methods 14 (RFC 7427: one octet of length, the AlgorithmIdentifier, the signature),
    /// 9 (RFC 4754) and 1 (RSA PKCS#1 v1.5 with SHA-1).
    pub(super) fn parse(method: u8, data: &'a [u8]) -> Result<AuthSignature<'a>, AuthFailure> {
        match method {
            auth_method::DIGITAL_SIGNATURE => {
                let (&len, rest) = data.split_first().ok_or(AuthFailure::MalformedAuth)?;
                let len = usize::from(len);
                let (alg, sig) = (rest.get(..len), rest.get(len..));
                let (Some(alg), Some(sig)) = (alg, sig) else {
                    return Err(AuthFailure::MalformedAuth);
                };
                let alg = AlgorithmIdentifierRef::from_der(alg)
                    .map_err(|_| AuthFailure::MalformedAuth)?;
                if sig.is_empty() {
                    return Err(AuthFailure::MalformedAuth);
                }
                Ok(AuthSignature {
                    alg: SigAlg::from_identifier(&alg)?,
                    sig,
                })
            }
            auth_method::ECDSA_SHA256_P256 => Ok(AuthSignature {
                alg: SigAlg::EcdsaFixed,
                sig: data,
            }),
            auth_method::RSA_DIGITAL_SIGNATURE => Ok(AuthSignature {
                alg: SigAlg::RsaPkcs1(Hash::Sha1),
                sig: data,
            }),
            _ => Err(AuthFailure::UnsupportedMethod),
        }
    }
}

/// A peer's public key: P-256, Ed25519 or RSA (at least 2048 bits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerKey {
    /// ECDSA on P-256.
    EcdsaP256(p256::ecdsa::VerifyingKey),
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// RSA.
    Rsa(rsa::PublicKey),
}

impl PeerKey {
    /// Decode a DER SubjectPublicKeyInfo. [`AuthFailure::UnsupportedAlgorithm`] for
    /// another key type or curve, [`AuthFailure::WeakKey`] for RSA below 2048 bits,
    /// [`AuthFailure::BadCertificate`] for bytes that do not decode.
    pub fn from_spki_der(der: &[u8]) -> Result<PeerKey, AuthFailure> {
        use spki::DecodePublicKey as _;
        let info =
            SubjectPublicKeyInfoRef::from_der(der).map_err(|_| AuthFailure::BadCertificate)?;
        match info.algorithm.oid {
            OID_EC_PUBLIC_KEY => p256::ecdsa::VerifyingKey::from_public_key_der(der)
                .map(PeerKey::EcdsaP256)
                .map_err(|_| AuthFailure::UnsupportedAlgorithm),
            OID_ED25519 => ed25519_dalek::VerifyingKey::from_public_key_der(der)
                .map(PeerKey::Ed25519)
                .map_err(|_| AuthFailure::BadCertificate),
            OID_RSA => {
                use rsa::traits::PublicKeyParts as _;
                let key =
                    rsa::PublicKey::try_from(info).map_err(|_| AuthFailure::BadCertificate)?;
                if key.size() < MIN_RSA_LEN {
                    return Err(AuthFailure::WeakKey);
                }
                Ok(PeerKey::Rsa(key))
            }
            _ => Err(AuthFailure::UnsupportedAlgorithm),
        }
    }

    /// Verify the peer's AUTH signature over `msg`.
    pub(super) fn verify_auth(
        &self,
        sig: &AuthSignature<'_>,
        msg: &[u8],
    ) -> Result<(), AuthFailure> {
        self.verify(sig.alg, msg, sig.sig)
    }

    /// Verify `sig` over `msg` with algorithm `alg`: [`AuthFailure::BadAuth`] when it does
    /// not verify, [`AuthFailure::UnsupportedAlgorithm`] when `alg` does not fit the key.
    fn verify(&self, alg: SigAlg, msg: &[u8], sig: &[u8]) -> Result<(), AuthFailure> {
        use p256::ecdsa::signature::Verifier as _;
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        let bad = |_| AuthFailure::BadAuth;
        match (self, alg) {
            (PeerKey::EcdsaP256(k), SigAlg::Ecdsa(hash)) => {
                let sig = p256::ecdsa::DerSignature::from_bytes(sig).map_err(bad)?;
                let sig = p256::ecdsa::Signature::try_from(sig).map_err(bad)?;
                k.verify_prehash(&hash.digest(msg), &sig).map_err(bad)
            }
            (PeerKey::EcdsaP256(k), SigAlg::EcdsaFixed) => {
                let sig = p256::ecdsa::Signature::from_slice(sig).map_err(bad)?;
                k.verify(msg, &sig).map_err(bad)
            }
            (PeerKey::Ed25519(k), SigAlg::Ed25519) => {
                let sig = ed25519_dalek::Signature::from_slice(sig).map_err(bad)?;
                k.verify_strict(msg, &sig).map_err(bad)
            }
            (PeerKey::Rsa(k), SigAlg::RsaPkcs1(hash)) => {
                let sig = rsa::pkcs1v15::Signature::try_from(sig).map_err(bad)?;
                let k = k.clone();
                match hash {
                    Hash::Sha1 => {
                        rsa::pkcs1v15::VerifyingKey::<sha1::Sha1>::new(k).verify(msg, &sig)
                    }
                    Hash::Sha256 => {
                        rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(k).verify(msg, &sig)
                    }
                    Hash::Sha384 => {
                        rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(k).verify(msg, &sig)
                    }
                    Hash::Sha512 => {
                        rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(k).verify(msg, &sig)
                    }
                }
                .map_err(bad)
            }
            (PeerKey::Rsa(k), SigAlg::RsaPss(hash, salt)) => {
                use rsa::pss::VerifyingKey;
                let sig = rsa::pss::Signature::try_from(sig).map_err(bad)?;
                let k = k.clone();
                match hash {
                    Hash::Sha256 => {
                        VerifyingKey::<sha2::Sha256>::new_with_salt_len(k, salt).verify(msg, &sig)
                    }
                    Hash::Sha384 => {
                        VerifyingKey::<sha2::Sha384>::new_with_salt_len(k, salt).verify(msg, &sig)
                    }
                    Hash::Sha512 => {
                        VerifyingKey::<sha2::Sha512>::new_with_salt_len(k, salt).verify(msg, &sig)
                    }
                    Hash::Sha1 => return Err(AuthFailure::UnsupportedAlgorithm),
                }
                .map_err(bad)
            }
            _ => Err(AuthFailure::UnsupportedAlgorithm),
        }
    }
}

/// One of the peer's certificates, decoded, with its signed part as received.
struct Parsed<'a> {
    cert: Certificate,
    der: &'a [u8],
    tbs: &'a [u8],
    subject: Vec<u8>,
    issuer: Vec<u8>,
}

impl<'a> Parsed<'a> {
    fn new(der: &'a [u8]) -> Result<Parsed<'a>, AuthFailure> {
        let bad = |_| AuthFailure::BadCertificate;
        let cert = Certificate::from_der(der).map_err(bad)?;
        let mut r = SliceReader::new(der).map_err(bad)?;
        let tbs = r
            .sequence(|inner| {
                let tbs = inner.tlv_bytes()?;
                inner.tlv_bytes()?;
                inner.tlv_bytes()?;
                Ok::<_, der::Error>(tbs)
            })
            .map_err(bad)?;
        let t = cert.tbs_certificate();
        Ok(Parsed {
            subject: t.subject().to_der().map_err(bad)?,
            issuer: t.issuer().to_der().map_err(bad)?,
            cert,
            der,
            tbs,
        })
    }
}

/// The outcome of path validation.
pub(super) struct Path {
    pub leaf: Certificate,
    pub key: PeerKey,
    pub subject: Vec<u8>,
    pub anchor: Vec<u8>,
}

/// The DER SubjectPublicKeyInfo of a certificate.
pub(super) fn leaf_spki(der: &[u8]) -> Result<Vec<u8>, AuthFailure> {
    let cert = Certificate::from_der(der).map_err(|_| AuthFailure::BadCertificate)?;
    spki_der(&cert)
}

fn spki_der(cert: &Certificate) -> Result<Vec<u8>, AuthFailure> {
    cert.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|_| AuthFailure::BadCertificate)
}

/// Validity window and critical extensions of one certificate.
fn check_cert(cert: &Certificate, now: UnixTime) -> Result<(), AuthFailure> {
    let v = cert.tbs_certificate().validity();
    if now.0 < v.not_before.to_unix_duration().as_secs() {
        return Err(AuthFailure::NotYetValid);
    }
    if now.0 > v.not_after.to_unix_duration().as_secs() {
        return Err(AuthFailure::Expired);
    }
    let exts = cert
        .tbs_certificate()
        .extensions()
        .map_or(&[][..], |e| e.as_slice());
    if exts
        .iter()
        .any(|e| e.critical && !KNOWN_CRITICAL.contains(&e.extn_id))
    {
        return Err(AuthFailure::UnsupportedCriticalExtension);
    }
    Ok(())
}

fn key_usage(cert: &Certificate) -> Result<Option<KeyUsage>, AuthFailure> {
    cert.tbs_certificate()
        .get_extension::<KeyUsage>()
        .map(|e| e.map(|(_, ku)| ku))
        .map_err(|_| AuthFailure::BadCertificate)
}

/// `child` was issued by `issuer`, `cas_below` CA certificates lie between `issuer` and
/// the leaf: `issuer` is a valid CA allowing that depth and its key verifies `child`.
fn check_link(
    child: &Parsed<'_>,
    issuer: &Certificate,
    cas_below: usize,
    now: UnixTime,
) -> Result<(), AuthFailure> {
    let bc = issuer
        .tbs_certificate()
        .get_extension::<BasicConstraints>()
        .map_err(|_| AuthFailure::BadCertificate)?;
    let Some((_, bc)) = bc.filter(|(_, bc)| bc.ca) else {
        return Err(AuthFailure::NotACa);
    };
    if key_usage(issuer)?.is_some_and(|ku| !ku.0.contains(KeyUsages::KeyCertSign)) {
        return Err(AuthFailure::NotACa);
    }
    if bc
        .path_len_constraint
        .is_some_and(|n| cas_below > usize::from(n))
    {
        return Err(AuthFailure::PathLenExceeded);
    }
    check_cert(issuer, now)?;
    let alg = child.cert.signature_algorithm();
    if alg != child.cert.tbs_certificate().signature() {
        return Err(AuthFailure::BadCertificate);
    }
    let sig = child
        .cert
        .signature()
        .as_bytes()
        .ok_or(AuthFailure::BadCertificate)?;
    let alg = SigAlg::from_identifier(&alg.into())?;
    let key = PeerKey::from_spki_der(&spki_der(issuer)?)?;
    key.verify(alg, child.tbs, sig).map_err(|e| match e {
        AuthFailure::BadAuth => AuthFailure::BadCertificateSignature,
        e => e,
    })
}

/// Walk from the leaf (`certs[0]`) up to a trust anchor of `db`.
pub(super) fn validate_path(
    db: &AuthKeyDb,
    certs: &[&[u8]],
    now: UnixTime,
) -> Result<Path, AuthFailure> {
    let parsed = certs
        .iter()
        .take(crate::ikev2::codec::MAX_CERTS)
        .map(|d| Parsed::new(d))
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = parsed.first().ok_or(AuthFailure::MissingCertificate)?;
    check_cert(&leaf.cert, now)?;
    if key_usage(&leaf.cert)?.is_some_and(|ku| {
        !ku.0.contains(KeyUsages::DigitalSignature) && !ku.0.contains(KeyUsages::NonRepudiation)
    }) {
        return Err(AuthFailure::KeyUsage);
    }
    let key = PeerKey::from_spki_der(&spki_der(&leaf.cert)?)?;
    let done = |anchor: &[u8]| Path {
        leaf: leaf.cert.clone(),
        key: key.clone(),
        subject: leaf.subject.clone(),
        anchor: anchor.to_vec(),
    };
    // A trusted certificate presented as the leaf (a self-signed peer certificate
    // configured as an anchor).
    if db.anchors.iter().any(|a| a.der == leaf.der) {
        return Ok(done(&leaf.subject));
    }
    let mut used = alloc::vec![false; parsed.len()];
    used[0] = true;
    let mut current = 0;
    let mut path_len = 1;
    loop {
        let cur = &parsed[current];
        let cas_below = path_len - 1;
        let mut first_err = None;
        for a in db.anchors_named(&cur.issuer) {
            match check_link(cur, &a.cert, cas_below, now) {
                Ok(()) => return Ok(done(&a.subject)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let mut next = None;
        for (i, p) in parsed.iter().enumerate() {
            if used[i] || p.subject != cur.issuer {
                continue;
            }
            match check_link(cur, &p.cert, cas_below, now) {
                Ok(()) => {
                    next = Some(i);
                    break;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let Some(i) = next else {
            return Err(first_err.unwrap_or(AuthFailure::UnknownCa));
        };
        path_len += 1;
        if path_len > db.max_chain_len {
            return Err(AuthFailure::ChainTooLong);
        }
        used[i] = true;
        current = i;
    }
}

/// Whether the leaf names `id`: FQDN, RFC 822 and IP identities against its
/// subjectAltName, ID_DER_ASN1_DN against its subject (or a directoryName).
pub(super) fn check_identity(leaf: &Certificate, id: &Identity) -> Result<(), AuthFailure> {
    let san = leaf
        .tbs_certificate()
        .get_extension::<SubjectAltName>()
        .map_err(|_| AuthFailure::BadCertificate)?
        .map(|(_, s)| s.0)
        .unwrap_or_default();
    let found = match id {
        Identity::Fqdn(name) => san.iter().any(|g| match g {
            GeneralName::DnsName(d) => d.as_str().eq_ignore_ascii_case(name),
            _ => false,
        }),
        Identity::Rfc822(addr) => san.iter().any(|g| match g {
            GeneralName::Rfc822Name(d) => d.as_str().eq_ignore_ascii_case(addr),
            _ => false,
        }),
        Identity::Ipv4(a) => san.iter().any(|g| match g {
            GeneralName::IpAddress(o) => o.as_bytes() == a.octets(),
            _ => false,
        }),
        Identity::Ipv6(a) => san.iter().any(|g| match g {
            GeneralName::IpAddress(o) => o.as_bytes() == a.octets(),
            _ => false,
        }),
        Identity::Other { ty, data } if *ty == id_type::DER_ASN1_DN => {
            match x509_cert::name::Name::from_der(data) {
                Ok(dn) => {
                    dn == *leaf.tbs_certificate().subject()
                        || san.iter().any(|g| match g {
                            GeneralName::DirectoryName(n) => *n == dn,
                            _ => false,
                        })
                }
                Err(_) => false,
            }
        }
        _ => false,
    };
    if found {
        Ok(())
    } else {
        Err(AuthFailure::IdentityMismatch)
    }
}

/// Every identity a certificate names, as IKE identities: its subjectAltName's DNS names,
/// e-mail addresses and IP addresses, then its subject as ID_DER_ASN1_DN. What a policy
/// database is asked about when a certificate (not an IKE ID payload) says who the peer
/// is, as in TLS. A certificate that does not decode names nobody.
pub fn certificate_identities(der: &[u8]) -> Vec<Identity> {
    let Ok(cert) = Certificate::from_der(der) else {
        return Vec::new();
    };
    let san = cert
        .tbs_certificate()
        .get_extension::<SubjectAltName>()
        .ok()
        .flatten()
        .map(|(_, s)| s.0)
        .unwrap_or_default();
    let mut out: Vec<Identity> = san
        .iter()
        .filter_map(|g| match g {
            GeneralName::DnsName(d) => Some(Identity::Fqdn(d.as_str().into())),
            GeneralName::Rfc822Name(d) => Some(Identity::Rfc822(d.as_str().into())),
            GeneralName::IpAddress(o) => match o.as_bytes().len() {
                4 => <[u8; 4]>::try_from(o.as_bytes())
                    .ok()
                    .map(|a| Identity::Ipv4(a.into())),
                16 => <[u8; 16]>::try_from(o.as_bytes())
                    .ok()
                    .map(|a| Identity::Ipv6(a.into())),
                _ => None,
            },
            _ => None,
        })
        .collect();
    if let Ok(subject) = cert.tbs_certificate().subject().to_der() {
        out.push(Identity::Other {
            ty: id_type::DER_ASN1_DN,
            data: subject,
        });
    }
    out
}

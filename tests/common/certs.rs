//! X.509 test certificates, issued in the tests with `x509-cert`'s builder: CAs,
//! intermediates and leaves with ECDSA P-256 or Ed25519 keys, chosen names, SANs,
//! validity windows and constraints.

use std::str::FromStr;
use std::time::Duration;

use der::{DateTime, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectAltName};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use deputy::ikev2::auth::SigningKey;

/// The tests' "now": 2027-01-15.
pub const NOW: u64 = 1_800_000_000;
/// One day.
pub const DAY: u64 = 86_400;

/// A key type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    P256,
    Ed25519,
}

/// A deterministic key of `alg` from `seed` (1..=200).
pub fn key(alg: Alg, seed: u8) -> SigningKey {
    match alg {
        Alg::P256 => SigningKey::ecdsa_p256_from_bytes(&[seed; 32]).unwrap(),
        Alg::Ed25519 => SigningKey::ed25519_from_bytes(&[seed; 32]),
    }
}

/// What a certificate says.
#[derive(Clone, Debug)]
pub struct Spec {
    pub subject: String,
    /// `Some(path_len)`: a CA.
    pub ca: Option<Option<u8>>,
    pub dns: Vec<String>,
    pub email: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    pub key_usage: Option<KeyUsage>,
    pub not_before: u64,
    pub not_after: u64,
    /// An extra critical extension of an unknown OID.
    pub unknown_critical: bool,
}

impl Spec {
    /// A CA valid around [`NOW`].
    pub fn ca(cn: &str) -> Spec {
        Spec {
            subject: format!("CN={cn},O=deputy tests"),
            ca: Some(None),
            dns: vec![],
            email: vec![],
            ips: vec![],
            key_usage: Some(KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)),
            not_before: NOW - 365 * DAY,
            not_after: NOW + 365 * DAY,
            unknown_critical: false,
        }
    }

    /// A leaf for `fqdn` (SAN dNSName) valid around [`NOW`].
    pub fn leaf(fqdn: &str) -> Spec {
        Spec {
            subject: format!("CN={fqdn},O=deputy tests"),
            ca: None,
            dns: vec![fqdn.to_string()],
            email: vec![],
            ips: vec![],
            key_usage: Some(KeyUsage(KeyUsages::DigitalSignature.into())),
            not_before: NOW - DAY,
            not_after: NOW + 30 * DAY,
            unknown_critical: false,
        }
    }
}

struct Profile<'a> {
    spec: &'a Spec,
    issuer: Name,
}

fn time(secs: u64) -> Time {
    Time::from(DateTime::from_unix_duration(Duration::from_secs(secs)).unwrap())
}

impl BuilderProfile for Profile<'_> {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        Name::from_str(&self.spec.subject).unwrap()
    }

    fn build_extensions(
        &self,
        _spk: spki::SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: spki::SubjectPublicKeyInfoRef<'_>,
        tbs: &x509_cert::TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let subject = tbs.subject();
        let mut out: Vec<Extension> = Vec::new();
        if let Some(path_len) = self.spec.ca {
            let bc = BasicConstraints {
                ca: true,
                path_len_constraint: path_len,
            };
            out.push((&bc).to_extension(subject, &out)?);
        }
        if let Some(ku) = &self.spec.key_usage {
            out.push(ku.to_extension(subject, &out)?);
        }
        let mut names = Vec::new();
        for d in &self.spec.dns {
            names.push(GeneralName::DnsName(der::asn1::Ia5String::new(d).unwrap()));
        }
        for e in &self.spec.email {
            names.push(GeneralName::Rfc822Name(
                der::asn1::Ia5String::new(e).unwrap(),
            ));
        }
        for ip in &self.spec.ips {
            names.push(GeneralName::from(*ip));
        }
        if !names.is_empty() {
            out.push((&SubjectAltName(names)).to_extension(subject, &out)?);
        }
        if self.spec.unknown_critical {
            out.push(Extension {
                extn_id: der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.55555.1"),
                critical: true,
                extn_value: der::asn1::OctetString::new(vec![5, 0]).unwrap(),
            });
        }
        Ok(out)
    }
}

/// An issued certificate and its key.
#[derive(Clone, Debug)]
pub struct Issued {
    pub der: Vec<u8>,
    pub key: SigningKey,
    pub subject: Name,
}

impl Issued {
    /// The subject as DER (an ID_DER_ASN1_DN identity's data).
    pub fn subject_der(&self) -> Vec<u8> {
        self.subject.to_der().unwrap()
    }
}

fn spki_of(key: &SigningKey) -> SubjectPublicKeyInfoOwned {
    use der::Decode;
    SubjectPublicKeyInfoOwned::from_der(&key.public_key_der().unwrap()).unwrap()
}

/// Issue `spec` for `key`, signed by `issuer` (self-signed if `None`).
pub fn issue(spec: &Spec, key: SigningKey, issuer: Option<&Issued>, serial: u8) -> Issued {
    let subject = Name::from_str(&spec.subject).unwrap();
    let issuer_name = issuer.map_or(subject.clone(), |i| i.subject.clone());
    let signer_key = issuer.map_or(&key, |i| &i.key);
    let profile = Profile {
        spec,
        issuer: issuer_name,
    };
    let validity = Validity::new(time(spec.not_before), time(spec.not_after));
    let builder = CertificateBuilder::new(
        profile,
        SerialNumber::new(&[serial]).unwrap(),
        validity,
        spki_of(&key),
    )
    .unwrap();
    let cert = match signer_key {
        SigningKey::EcdsaP256(k) => builder.build::<_, p256::ecdsa::DerSignature>(k).unwrap(),
        SigningKey::Ed25519(k) => builder.build::<_, ed25519_dalek::Signature>(k).unwrap(),
    };
    Issued {
        der: cert.to_der().unwrap(),
        key,
        subject,
    }
}

/// A CA, self-signed.
pub fn root(alg: Alg, seed: u8, cn: &str) -> Issued {
    issue(&Spec::ca(cn), key(alg, seed), None, seed)
}

/// A leaf for `fqdn` issued by `ca`.
pub fn leaf(alg: Alg, seed: u8, fqdn: &str, ca: &Issued) -> Issued {
    issue(&Spec::leaf(fqdn), key(alg, seed), Some(ca), seed)
}

/// The public key of `key` as DER SubjectPublicKeyInfo.
pub fn spki_der(key: &SigningKey) -> Vec<u8> {
    key.public_key_der().unwrap()
}

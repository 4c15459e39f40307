//! The payload bodies (RFC 7296 §3.3-§3.16).

use alloc::string::String;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr};

use super::sa::{decode_proposals, encode_proposals};
use super::ts::{decode_ts, encode_ts};
use super::{Proposal, TrafficSelector, be16, len16};
use crate::ikev2::IkeError;
use crate::ikev2::consts::{cert_encoding, id_type, payload as pt};

/// One payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Security Association: proposals in preference order.
    Sa(Vec<Proposal>),
    /// Key Exchange.
    Ke(KePayload),
    /// Identification of the initiator.
    IdI(Identity),
    /// Identification of the responder.
    IdR(Identity),
    /// Authentication.
    Auth(AuthPayload),
    /// Nonce (Ni or Nr), 16 to 256 octets.
    Nonce(Vec<u8>),
    /// Notify.
    Notify(Notify),
    /// Delete.
    Delete(Delete),
    /// Vendor ID (ignored by the engine).
    Vendor(Vec<u8>),
    /// Traffic selectors of the initiator.
    TsI(Vec<TrafficSelector>),
    /// Traffic selectors of the responder.
    TsR(Vec<TrafficSelector>),
    /// Certificate (§3.6).
    Cert(CertPayload),
    /// Certificate Request (§3.7).
    CertReq(CertReq),
    /// Encrypted and Authenticated (SK), still sealed.
    Encrypted(Encrypted),
    /// A payload type RFC 7296 defines that this engine carries but does not process
    /// (CP, EAP, SKF). Never critical on the wire.
    Other {
        /// Payload type.
        ty: u8,
        /// Body.
        data: Vec<u8>,
    },
    /// A payload type this engine does not know, not marked critical (critical ones are
    /// refused while decoding).
    Unknown(UnknownPayload),
}

/// An unknown, non-critical payload, kept as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownPayload {
    /// Payload type.
    pub ty: u8,
    /// Body.
    pub data: Vec<u8>,
}

/// Key Exchange payload (§3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KePayload {
    /// Diffie-Hellman group number.
    pub group: u16,
    /// The public value.
    pub data: Vec<u8>,
}

/// An identity (§3.5).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// ID_IPV4_ADDR.
    Ipv4(Ipv4Addr),
    /// ID_IPV6_ADDR.
    Ipv6(Ipv6Addr),
    /// ID_FQDN.
    Fqdn(String),
    /// ID_RFC822_ADDR.
    Rfc822(String),
    /// ID_KEY_ID: opaque octets.
    KeyId(Vec<u8>),
    /// Another type (e.g. ID_DER_ASN1_DN), kept as octets.
    Other {
        /// ID type.
        ty: u8,
        /// Identification data.
        data: Vec<u8>,
    },
}

impl Identity {
    /// The ID type octet.
    pub fn id_type(&self) -> u8 {
        match self {
            Identity::Ipv4(_) => id_type::IPV4_ADDR,
            Identity::Ipv6(_) => id_type::IPV6_ADDR,
            Identity::Fqdn(_) => id_type::FQDN,
            Identity::Rfc822(_) => id_type::RFC822_ADDR,
            Identity::KeyId(_) => id_type::KEY_ID,
            Identity::Other { ty, .. } => *ty,
        }
    }

    /// The identification data.
    pub fn data(&self) -> Vec<u8> {
        match self {
            Identity::Ipv4(a) => a.octets().to_vec(),
            Identity::Ipv6(a) => a.octets().to_vec(),
            Identity::Fqdn(s) | Identity::Rfc822(s) => s.as_bytes().to_vec(),
            Identity::KeyId(d) | Identity::Other { data: d, .. } => d.clone(),
        }
    }

    /// The ID payload body without its generic header — "RestOfInitIDPayload" /
    /// "RestOfRespIDPayload" of §2.15: type, three reserved octets, data.
    pub fn payload_body(&self) -> Vec<u8> {
        let mut out = alloc::vec![self.id_type(), 0, 0, 0];
        out.extend_from_slice(&self.data());
        out
    }

    /// The identity of an ID payload body ([`Identity::payload_body`]'s inverse).
    pub fn from_payload_body(data: &[u8]) -> Result<Identity, IkeError> {
        Identity::decode(data)
    }

    fn decode(data: &[u8]) -> Result<Identity, IkeError> {
        let ty = *data.first().ok_or(IkeError::BadLength("ID"))?;
        let body = data.get(4..).ok_or(IkeError::BadLength("ID"))?;
        Ok(match ty {
            id_type::IPV4_ADDR => Identity::Ipv4(Ipv4Addr::from(
                <[u8; 4]>::try_from(body).map_err(|_| IkeError::BadLength("ID_IPV4_ADDR"))?,
            )),
            id_type::IPV6_ADDR => Identity::Ipv6(Ipv6Addr::from(
                <[u8; 16]>::try_from(body).map_err(|_| IkeError::BadLength("ID_IPV6_ADDR"))?,
            )),
            id_type::FQDN | id_type::RFC822_ADDR => match core::str::from_utf8(body) {
                Ok(s) if ty == id_type::FQDN => Identity::Fqdn(String::from(s)),
                Ok(s) => Identity::Rfc822(String::from(s)),
                Err(_) => return Err(IkeError::Malformed("ID string is not UTF-8")),
            },
            id_type::KEY_ID => Identity::KeyId(body.to_vec()),
            _ => Identity::Other {
                ty,
                data: body.to_vec(),
            },
        })
    }
}

impl core::fmt::Display for Identity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Identity::Ipv4(a) => write!(f, "{a}"),
            Identity::Ipv6(a) => write!(f, "{a}"),
            Identity::Fqdn(s) => write!(f, "{s}"),
            Identity::Rfc822(s) => write!(f, "{s}"),
            Identity::KeyId(d) => write!(f, "keyid:{} bytes", d.len()),
            Identity::Other { ty, data } => write!(f, "id-type-{ty}:{} bytes", data.len()),
        }
    }
}

/// Authentication payload (§3.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthPayload {
    /// Authentication method ([`crate::ikev2::consts::auth_method`]).
    pub method: u8,
    /// Authentication data.
    pub data: Vec<u8>,
}

/// Certificate payload (§3.6): an encoding and its data. For
/// [`cert_encoding::X509_SIGNATURE`] the data is one DER certificate; the decoder bounds
/// it by [`MAX_CERT_LEN`] and a message by [`MAX_CERTS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPayload {
    /// Certificate encoding ([`cert_encoding`]).
    pub encoding: u8,
    /// Certificate data.
    pub data: Vec<u8>,
}

/// Certificate Request payload (§3.7): an encoding and the certification authorities
/// accepted. For [`cert_encoding::X509_SIGNATURE`] the authorities are SHA-1 hashes of
/// their SubjectPublicKeyInfo, 20 octets each (checked when decoding and encoding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertReq {
    /// Certificate encoding ([`cert_encoding`]).
    pub encoding: u8,
    /// Certification Authority data.
    pub authorities: Vec<u8>,
}

/// Length of one X.509 authority hash in a CERTREQ (SHA-1).
pub const CERTREQ_HASH_LEN: usize = 20;

/// The largest certificate a CERT payload may carry (octets).
pub const MAX_CERT_LEN: usize = 8 * 1024;

/// The most CERT payloads one payload chain may carry (a leaf and its intermediates).
pub const MAX_CERTS: usize = 8;

impl CertReq {
    /// The X.509 authority hashes (empty for another encoding).
    pub fn hashes(&self) -> impl Iterator<Item = &[u8]> {
        let x509 = self.encoding == cert_encoding::X509_SIGNATURE;
        self.authorities
            .chunks_exact(CERTREQ_HASH_LEN)
            .filter(move |_| x509)
    }
}

/// Notify payload (§3.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    /// Protocol ID (0 or [`crate::ikev2::consts::protocol`]).
    pub protocol: u8,
    /// SPI (empty, or 4 octets for ESP/AH, 8 for IKE).
    pub spi: Vec<u8>,
    /// Notify message type ([`crate::ikev2::consts::notify`]).
    pub ty: u16,
    /// Notification data.
    pub data: Vec<u8>,
}

impl Notify {
    /// A notify with no SPI.
    pub fn new(ty: u16, data: Vec<u8>) -> Notify {
        Notify {
            protocol: 0,
            spi: Vec::new(),
            ty,
            data,
        }
    }

    /// Whether this is an error type (below 16384).
    pub fn is_error(&self) -> bool {
        self.ty < crate::ikev2::consts::notify::FIRST_STATUS
    }
}

/// Delete payload (§3.11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    /// Protocol ID: IKE (no SPIs), AH or ESP.
    pub protocol: u8,
    /// SPI size (0 for IKE, 4 for ESP/AH).
    pub spi_size: u8,
    /// SPIs, each `spi_size` octets.
    pub spis: Vec<Vec<u8>>,
}

/// The SK payload as received: first inner payload type and the opaque body
/// (IV ‖ ciphertext ‖ ICV).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encrypted {
    /// Type of the first payload inside.
    pub first_inner: u8,
    /// IV, ciphertext (with padding and pad length) and ICV.
    pub data: Vec<u8>,
}

impl Payload {
    /// The payload type number.
    pub fn payload_type(&self) -> u8 {
        match self {
            Payload::Sa(_) => pt::SA,
            Payload::Ke(_) => pt::KE,
            Payload::IdI(_) => pt::IDI,
            Payload::IdR(_) => pt::IDR,
            Payload::Auth(_) => pt::AUTH,
            Payload::Nonce(_) => pt::NONCE,
            Payload::Notify(_) => pt::NOTIFY,
            Payload::Delete(_) => pt::DELETE,
            Payload::Vendor(_) => pt::VENDOR,
            Payload::TsI(_) => pt::TSI,
            Payload::TsR(_) => pt::TSR,
            Payload::Cert(_) => pt::CERT,
            Payload::CertReq(_) => pt::CERTREQ,
            Payload::Encrypted(_) => pt::SK,
            Payload::Other { ty, .. } => *ty,
            Payload::Unknown(u) => u.ty,
        }
    }

    /// The critical bit this engine sends: clear for everything (RFC 7296 §2.5: senders
    /// clear it on payloads defined by the RFC; unknown payloads were not critical either).
    pub(super) fn critical(&self) -> bool {
        false
    }

    /// Decode a payload body of type `ty`.
    pub(super) fn decode(ty: u8, critical: bool, data: &[u8]) -> Result<Payload, IkeError> {
        Ok(match ty {
            pt::SA => Payload::Sa(decode_proposals(data)?),
            pt::KE => {
                if data.len() < 4 {
                    return Err(IkeError::BadLength("KE"));
                }
                Payload::Ke(KePayload {
                    group: be16(data, 0)?,
                    data: data[4..].to_vec(),
                })
            }
            pt::IDI => Payload::IdI(Identity::decode(data)?),
            pt::IDR => Payload::IdR(Identity::decode(data)?),
            pt::AUTH => {
                if data.len() < 4 {
                    return Err(IkeError::BadLength("AUTH"));
                }
                Payload::Auth(AuthPayload {
                    method: data[0],
                    data: data[4..].to_vec(),
                })
            }
            pt::NONCE => {
                if !(16..=256).contains(&data.len()) {
                    return Err(IkeError::BadLength("nonce"));
                }
                Payload::Nonce(data.to_vec())
            }
            pt::NOTIFY => {
                if data.len() < 4 {
                    return Err(IkeError::BadLength("notify"));
                }
                let spi_size = usize::from(data[1]);
                let spi = data
                    .get(4..4 + spi_size)
                    .ok_or(IkeError::BadLength("notify SPI"))?;
                Payload::Notify(Notify {
                    protocol: data[0],
                    spi: spi.to_vec(),
                    ty: be16(data, 2)?,
                    data: data[4 + spi_size..].to_vec(),
                })
            }
            pt::DELETE => {
                if data.len() < 4 {
                    return Err(IkeError::BadLength("delete"));
                }
                let spi_size = data[1];
                let num = usize::from(be16(data, 2)?);
                let spis_len = num
                    .checked_mul(usize::from(spi_size))
                    .ok_or(IkeError::BadLength("delete"))?;
                if data.len() != 4 + spis_len || (spi_size == 0 && num != 0) {
                    return Err(IkeError::BadLength("delete"));
                }
                let spis = if spi_size == 0 {
                    Vec::new()
                } else {
                    data[4..]
                        .chunks_exact(usize::from(spi_size))
                        .map(<[u8]>::to_vec)
                        .collect()
                };
                Payload::Delete(Delete {
                    protocol: data[0],
                    spi_size,
                    spis,
                })
            }
            pt::VENDOR => Payload::Vendor(data.to_vec()),
            pt::TSI => Payload::TsI(decode_ts(data)?),
            pt::TSR => Payload::TsR(decode_ts(data)?),
            pt::CERT => {
                let (&encoding, cert) = data.split_first().ok_or(IkeError::BadLength("CERT"))?;
                if cert.len() > MAX_CERT_LEN {
                    return Err(IkeError::CertificateTooLarge {
                        len: cert.len(),
                        max: MAX_CERT_LEN,
                    });
                }
                Payload::Cert(CertPayload {
                    encoding,
                    data: cert.to_vec(),
                })
            }
            pt::CERTREQ => {
                let (&encoding, cas) = data.split_first().ok_or(IkeError::BadLength("CERTREQ"))?;
                if encoding == cert_encoding::X509_SIGNATURE && cas.len() % CERTREQ_HASH_LEN != 0 {
                    return Err(IkeError::BadLength("CERTREQ"));
                }
                Payload::CertReq(CertReq {
                    encoding,
                    authorities: cas.to_vec(),
                })
            }
            pt::CP | pt::EAP | pt::SKF => Payload::Other {
                ty,
                data: data.to_vec(),
            },
            _ if critical => return Err(IkeError::UnsupportedCriticalPayload(ty)),
            _ => Payload::Unknown(UnknownPayload {
                ty,
                data: data.to_vec(),
            }),
        })
    }

    /// Append the body (after the generic header).
    pub(super) fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), IkeError> {
        match self {
            Payload::Sa(props) => encode_proposals(props, out)?,
            Payload::Ke(ke) => {
                out.extend_from_slice(&ke.group.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&ke.data);
            }
            Payload::IdI(id) | Payload::IdR(id) => {
                if let Identity::Other { ty, .. } = id
                    && matches!(
                        *ty,
                        id_type::IPV4_ADDR
                            | id_type::IPV6_ADDR
                            | id_type::FQDN
                            | id_type::RFC822_ADDR
                            | id_type::KEY_ID
                    )
                {
                    return Err(IkeError::Unencodable("Identity::Other with a typed ID"));
                }
                out.extend_from_slice(&id.payload_body());
            }
            Payload::Auth(a) => {
                out.extend_from_slice(&[a.method, 0, 0, 0]);
                out.extend_from_slice(&a.data);
            }
            Payload::Nonce(n) => {
                if !(16..=256).contains(&n.len()) {
                    return Err(IkeError::Unencodable("nonce length"));
                }
                out.extend_from_slice(n);
            }
            Payload::Notify(n) => {
                let spi_size =
                    u8::try_from(n.spi.len()).map_err(|_| IkeError::Unencodable("notify SPI"))?;
                out.extend_from_slice(&[n.protocol, spi_size]);
                out.extend_from_slice(&n.ty.to_be_bytes());
                out.extend_from_slice(&n.spi);
                out.extend_from_slice(&n.data);
            }
            Payload::Delete(d) => {
                if d.spis.iter().any(|s| s.len() != usize::from(d.spi_size))
                    || (d.spi_size == 0 && !d.spis.is_empty())
                {
                    return Err(IkeError::Unencodable("delete SPI sizes"));
                }
                out.extend_from_slice(&[d.protocol, d.spi_size]);
                out.extend_from_slice(&len16(d.spis.len(), "delete SPI count")?);
                for s in &d.spis {
                    out.extend_from_slice(s);
                }
            }
            Payload::Vendor(v) => out.extend_from_slice(v),
            Payload::TsI(ts) | Payload::TsR(ts) => encode_ts(ts, out)?,
            Payload::Cert(c) => {
                if c.data.len() > MAX_CERT_LEN {
                    return Err(IkeError::Unencodable("certificate too large"));
                }
                out.push(c.encoding);
                out.extend_from_slice(&c.data);
            }
            Payload::CertReq(c) => {
                if c.encoding == cert_encoding::X509_SIGNATURE
                    && c.authorities.len() % CERTREQ_HASH_LEN != 0
                {
                    return Err(IkeError::Unencodable("CERTREQ hash length"));
                }
                out.push(c.encoding);
                out.extend_from_slice(&c.authorities);
            }
            Payload::Encrypted(e) => out.extend_from_slice(&e.data),
            Payload::Other { ty, data } => {
                if !matches!(*ty, pt::CP | pt::EAP | pt::SKF) {
                    return Err(IkeError::Unencodable("Payload::Other type"));
                }
                out.extend_from_slice(data);
            }
            Payload::Unknown(u) => {
                if is_known_type(u.ty) || u.ty == pt::NONE {
                    return Err(IkeError::Unencodable("Payload::Unknown with a known type"));
                }
                out.extend_from_slice(&u.data);
            }
        }
        Ok(())
    }
}

/// Whether the codec decodes `ty` into something other than [`Payload::Unknown`].
pub(crate) fn is_known_type(ty: u8) -> bool {
    matches!(ty, pt::SA..=pt::EAP | pt::SKF)
}

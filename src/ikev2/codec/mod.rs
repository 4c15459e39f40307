//! The IKEv2 message codec (RFC 7296 §3).
//!
//! A [`Message`] is a [`Header`] and a chain of [`Payload`]s. Decoding is strict: the IKE
//! header's length must equal the datagram length, every payload and substructure length
//! must fit exactly, reserved fields are ignored, the payload count and message size are
//! bounded by [`Limits`], and an unknown payload marked critical is refused with
//! [`IkeError::UnsupportedCriticalPayload`] (non-critical unknown payloads are kept as
//! [`Payload::Unknown`] so a caller can skip them). An SK payload must be the last one; its
//! body stays opaque ([`Encrypted`]) until [`super::sk`] opens it, after which the inner
//! chain is decoded with [`decode_chain`]. A chain carries at most [`MAX_CERTS`] CERT
//! payloads of at most [`MAX_CERT_LEN`] octets each.
//!
//! Encoding writes the RFC's canonical form: version 2.0, reserved fields zero, the critical
//! bit clear on every payload this engine defines, and `decode(encode(m)) == m`.

mod payload;
mod sa;
mod ts;

use alloc::vec::Vec;

pub use payload::{
    AuthPayload, CERTREQ_HASH_LEN, CertPayload, CertReq, Delete, Encrypted, Identity, KePayload,
    MAX_CERT_LEN, MAX_CERTS, Notify, Payload, UnknownPayload,
};
pub use sa::{AttrValue, Attribute, Proposal, Transform};
pub use ts::{
    TrafficSelector, from_wire as ts_from_wire, narrow as narrow_ts, to_wire as ts_to_wire,
};

use super::IkeError;
use super::consts::{exchange, payload as pt};

/// Length of the IKE header.
pub const HEADER_LEN: usize = 28;
/// Length of the generic payload header.
pub const GENERIC_HEADER_LEN: usize = 4;
/// The version octet this engine sends: major 2, minor 0.
pub const VERSION: u8 = 0x20;
/// The non-ESP marker that precedes IKE messages on the NAT-T port (RFC 3948 §2.2).
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];

/// Bounds applied when decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest IKE message (header included) accepted or produced.
    pub max_message_len: usize,
    /// The most payloads one message may carry, counting those inside SK.
    pub max_payloads: usize,
}

impl Limits {
    /// Default maximum message size (IKE fragmentation is not supported, so messages stay
    /// well below this).
    pub const DEFAULT_MAX_MESSAGE_LEN: usize = 16 * 1024;
    /// Default maximum payload count.
    pub const DEFAULT_MAX_PAYLOADS: usize = 64;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_len: Self::DEFAULT_MAX_MESSAGE_LEN,
            max_payloads: Self::DEFAULT_MAX_PAYLOADS,
        }
    }
}

/// The header flags (RFC 7296 §3.1). Other bits are reserved: sent as zero, ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Flags {
    /// I: set by the original initiator of the IKE SA.
    pub initiator: bool,
    /// V: the sender could speak a higher major version (never set by this engine).
    pub version: bool,
    /// R: this message is a response.
    pub response: bool,
}

impl Flags {
    const I: u8 = 0x08;
    const V: u8 = 0x10;
    const R: u8 = 0x20;

    /// The flags octet.
    pub fn to_byte(self) -> u8 {
        (if self.initiator { Self::I } else { 0 })
            | (if self.version { Self::V } else { 0 })
            | (if self.response { Self::R } else { 0 })
    }

    /// The flags from their octet, reserved bits ignored.
    pub fn from_byte(b: u8) -> Flags {
        Flags {
            initiator: b & Self::I != 0,
            version: b & Self::V != 0,
            response: b & Self::R != 0,
        }
    }
}

/// An IKEv2 exchange type (RFC 7296 §3.1), decoded from the header's octet so that the
/// engine matches on names, not numbers. `Other` keeps any unassigned or unsupported value
/// so that a decoded header re-encodes to the same octet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExchangeType {
    /// IKE_SA_INIT (34).
    IkeSaInit,
    /// IKE_AUTH (35).
    IkeAuth,
    /// CREATE_CHILD_SA (36).
    CreateChildSa,
    /// INFORMATIONAL (37).
    Informational,
    /// Any other value (never one of the four above).
    Other(u8),
}

impl From<u8> for ExchangeType {
    fn from(v: u8) -> Self {
        match v {
            exchange::IKE_SA_INIT => ExchangeType::IkeSaInit,
            exchange::IKE_AUTH => ExchangeType::IkeAuth,
            exchange::CREATE_CHILD_SA => ExchangeType::CreateChildSa,
            exchange::INFORMATIONAL => ExchangeType::Informational,
            other => ExchangeType::Other(other),
        }
    }
}

impl From<ExchangeType> for u8 {
    fn from(e: ExchangeType) -> u8 {
        match e {
            ExchangeType::IkeSaInit => exchange::IKE_SA_INIT,
            ExchangeType::IkeAuth => exchange::IKE_AUTH,
            ExchangeType::CreateChildSa => exchange::CREATE_CHILD_SA,
            ExchangeType::Informational => exchange::INFORMATIONAL,
            ExchangeType::Other(v) => v,
        }
    }
}

/// The IKE header, less the two fields the encoder computes (next payload, length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// IKE SA initiator's SPI.
    pub spi_i: [u8; 8],
    /// IKE SA responder's SPI (zero in the first IKE_SA_INIT request).
    pub spi_r: [u8; 8],
    /// Exchange type.
    pub exchange: ExchangeType,
    /// Flags.
    pub flags: Flags,
    /// Message ID.
    pub message_id: u32,
}

/// The raw fields of an IKE header as read from the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawHeader {
    /// The header.
    pub header: Header,
    /// Type of the first payload.
    pub first_payload: u8,
    /// The length field (whole message).
    pub length: u32,
}

impl Header {
    /// An IKE_SA_INIT header (message ID 0): a request from the initiator, or the
    /// responder's answer.
    pub fn ike_sa_init(spi_i: [u8; 8], spi_r: [u8; 8], response: bool) -> Header {
        Header {
            spi_i,
            spi_r,
            exchange: ExchangeType::IkeSaInit,
            flags: Flags {
                initiator: !response,
                version: false,
                response,
            },
            message_id: 0,
        }
    }

    /// Read the header at the start of `bytes` and check version and length against the
    /// datagram (`bytes` must be exactly one IKE message).
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<RawHeader, IkeError> {
        let h = bytes.get(..HEADER_LEN).ok_or(IkeError::Truncated)?;
        let major = h[17] >> 4;
        if major != 2 {
            return Err(IkeError::UnsupportedVersion(major));
        }
        let length = u32::from_be_bytes([h[24], h[25], h[26], h[27]]);
        if length as usize > limits.max_message_len || bytes.len() > limits.max_message_len {
            return Err(IkeError::MessageTooLarge {
                len: (length as usize).max(bytes.len()),
                max: limits.max_message_len,
            });
        }
        if length as usize != bytes.len() {
            return Err(IkeError::BadLength("IKE header"));
        }
        let mut spi_i = [0u8; 8];
        let mut spi_r = [0u8; 8];
        spi_i.copy_from_slice(&h[0..8]);
        spi_r.copy_from_slice(&h[8..16]);
        Ok(RawHeader {
            header: Header {
                spi_i,
                spi_r,
                exchange: ExchangeType::from(h[18]),
                flags: Flags::from_byte(h[19]),
                message_id: u32::from_be_bytes([h[20], h[21], h[22], h[23]]),
            },
            first_payload: h[16],
            length,
        })
    }

    /// The header's 28 octets with the given first payload type and total length.
    pub fn encode(&self, first_payload: u8, length: u32) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&self.spi_i);
        out[8..16].copy_from_slice(&self.spi_r);
        out[16] = first_payload;
        out[17] = VERSION;
        out[18] = self.exchange.into();
        out[19] = self.flags.to_byte();
        out[20..24].copy_from_slice(&self.message_id.to_be_bytes());
        out[24..28].copy_from_slice(&length.to_be_bytes());
        out
    }
}

/// A whole IKE message: header and payloads in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// The payloads. An [`Payload::Encrypted`] payload, if any, is last.
    pub payloads: Vec<Payload>,
}

impl Message {
    /// The unencrypted answer to the IKE_SA_INIT request of initiator SPI `spi_i` that
    /// carries only notify `n` (responder SPI zero, RFC 7296 §2.6): a COOKIE demand,
    /// INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN and the like.
    pub fn init_refusal(spi_i: [u8; 8], n: Notify) -> Result<Vec<u8>, IkeError> {
        Message {
            header: Header::ike_sa_init(spi_i, [0; 8], true),
            payloads: alloc::vec![Payload::Notify(n)],
        }
        .encode()
    }

    /// Decode one IKE message (without any non-ESP marker).
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Message, IkeError> {
        let raw = Header::decode(bytes, limits)?;
        let mut count = 0;
        let payloads = decode_chain(
            raw.first_payload,
            &bytes[HEADER_LEN..],
            limits,
            &mut count,
            true,
        )?;
        Ok(Message {
            header: raw.header,
            payloads,
        })
    }

    /// Encode the message.
    pub fn encode(&self) -> Result<Vec<u8>, IkeError> {
        let (first, body) = encode_chain(&self.payloads)?;
        let total = HEADER_LEN + body.len();
        let length = u32::try_from(total).map_err(|_| IkeError::Unencodable("message length"))?;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&self.header.encode(first, length));
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The first notify of type `ty`, if any.
    pub fn notify(&self, ty: u16) -> Option<&Notify> {
        find_notify(&self.payloads, ty)
    }

    /// The SK payload, if the message carries one.
    pub fn encrypted(&self) -> Option<&Encrypted> {
        match self.payloads.last() {
            Some(Payload::Encrypted(e)) => Some(e),
            _ => None,
        }
    }
}

/// The first notify of type `ty` in `payloads`.
pub fn find_notify(payloads: &[Payload], ty: u16) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.ty == ty => Some(n),
        _ => None,
    })
}

/// Decode a payload chain starting with type `first`. `count` accumulates the payloads
/// decoded so far (so the bound covers a message and its SK contents together).
/// `allow_sk`: whether an SK payload may appear (not inside another SK).
pub fn decode_chain(
    first: u8,
    mut body: &[u8],
    limits: &Limits,
    count: &mut usize,
    allow_sk: bool,
) -> Result<Vec<Payload>, IkeError> {
    let mut next = first;
    let mut out = Vec::new();
    let mut certs = 0;
    while next != pt::NONE {
        if *count >= limits.max_payloads {
            return Err(IkeError::TooManyPayloads(limits.max_payloads));
        }
        *count += 1;
        let gh = body.get(..GENERIC_HEADER_LEN).ok_or(IkeError::Truncated)?;
        let following = gh[0];
        let critical = gh[1] & 0x80 != 0;
        let len = usize::from(u16::from_be_bytes([gh[2], gh[3]]));
        if len < GENERIC_HEADER_LEN || len > body.len() {
            return Err(IkeError::BadLength("payload"));
        }
        let data = &body[GENERIC_HEADER_LEN..len];
        body = &body[len..];
        if next == pt::SK {
            if !allow_sk {
                return Err(IkeError::Malformed("SK inside SK"));
            }
            if !body.is_empty() {
                return Err(IkeError::Malformed("SK payload is not last"));
            }
            out.push(Payload::Encrypted(Encrypted {
                first_inner: following,
                data: data.to_vec(),
            }));
            return Ok(out);
        }
        if next == pt::CERT {
            certs += 1;
            if certs > MAX_CERTS {
                return Err(IkeError::TooManyCertificates(MAX_CERTS));
            }
        }
        out.push(Payload::decode(next, critical, data)?);
        next = following;
    }
    if !body.is_empty() {
        return Err(IkeError::TrailingBytes);
    }
    Ok(out)
}

/// Encode a payload chain; returns the first payload's type and the bytes.
pub fn encode_chain(payloads: &[Payload]) -> Result<(u8, Vec<u8>), IkeError> {
    let mut out = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let next = match p {
            Payload::Encrypted(e) => {
                if i + 1 != payloads.len() {
                    return Err(IkeError::Unencodable("SK payload not last"));
                }
                e.first_inner
            }
            _ => payloads.get(i + 1).map_or(pt::NONE, Payload::payload_type),
        };
        let start = out.len();
        out.extend_from_slice(&[next, if p.critical() { 0x80 } else { 0 }, 0, 0]);
        p.encode_body(&mut out)?;
        let len = u16::try_from(out.len() - start).map_err(|_| IkeError::Unencodable("payload"))?;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
    let first = payloads.first().map_or(pt::NONE, Payload::payload_type);
    Ok((first, out))
}

/// Big-endian u16 at `at` (caller checked bounds via `get`).
fn be16(b: &[u8], at: usize) -> Result<u16, IkeError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(IkeError::Truncated)
}

/// A length that must fit a u16 field.
fn len16(n: usize, what: &'static str) -> Result<[u8; 2], IkeError> {
    u16::try_from(n)
        .map(u16::to_be_bytes)
        .map_err(|_| IkeError::Unencodable(what))
}

#[cfg(test)]
mod tests;

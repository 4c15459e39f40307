//! SA payload substructures: proposals, transforms and attributes (RFC 7296 §3.3).

use alloc::vec::Vec;

use super::{be16, len16};
use crate::ikev2::IkeError;
use crate::ikev2::consts::transform;

/// A proposal substructure (§3.3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number (1 for the first, increasing by one; a response echoes it).
    pub num: u8,
    /// Protocol ID ([`crate::ikev2::consts::protocol`]).
    pub protocol: u8,
    /// SPI: empty in IKE_SA_INIT, 8 octets when rekeying an IKE SA, 4 for ESP/AH.
    pub spi: Vec<u8>,
    /// Transforms.
    pub transforms: Vec<Transform>,
}

/// A transform substructure (§3.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transform {
    /// Transform type ([`crate::ikev2::consts::transform`]).
    pub ty: u8,
    /// Transform ID.
    pub id: u16,
    /// Attributes.
    pub attributes: Vec<Attribute>,
}

impl Transform {
    /// A transform without attributes.
    pub fn new(ty: u8, id: u16) -> Transform {
        Transform {
            ty,
            id,
            attributes: Vec::new(),
        }
    }

    /// A transform with a Key Length attribute (bits).
    pub fn with_key_len(ty: u8, id: u16, bits: u16) -> Transform {
        Transform {
            ty,
            id,
            attributes: alloc::vec![Attribute {
                ty: transform::ATTR_KEY_LENGTH,
                value: AttrValue::Tv(bits),
            }],
        }
    }

    /// The Key Length attribute, if present.
    pub fn key_len(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a.value {
            AttrValue::Tv(v) if a.ty == transform::ATTR_KEY_LENGTH => Some(v),
            _ => None,
        })
    }

    /// Whether every attribute is one this engine understands (only Key Length is defined
    /// for IKEv2; a transform with anything else must not be selected).
    pub fn attributes_understood(&self) -> bool {
        self.attributes
            .iter()
            .all(|a| a.ty == transform::ATTR_KEY_LENGTH && matches!(a.value, AttrValue::Tv(_)))
            && self.attributes.len() <= 1
    }
}

/// A transform attribute (§3.3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute type (15 bits; the AF bit is derived from the value form).
    pub ty: u16,
    /// The value.
    pub value: AttrValue,
}

/// An attribute value: TV (fixed two octets, AF = 1) or TLV (AF = 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrValue {
    /// Type/Value form.
    Tv(u16),
    /// Type/Length/Value form.
    Tlv(Vec<u8>),
}

const LAST: u8 = 0;
const MORE_PROPOSALS: u8 = 2;
const MORE_TRANSFORMS: u8 = 3;

pub(super) fn decode_proposals(mut data: &[u8]) -> Result<Vec<Proposal>, IkeError> {
    let mut out = Vec::new();
    loop {
        if data.len() < 8 {
            return Err(IkeError::BadLength("proposal"));
        }
        let last = data[0];
        let len = usize::from(be16(data, 2)?);
        if len < 8 || len > data.len() {
            return Err(IkeError::BadLength("proposal"));
        }
        let (p, rest) = data.split_at(len);
        data = rest;
        let spi_size = usize::from(p[6]);
        let count = usize::from(p[7]);
        let spi = p
            .get(8..8 + spi_size)
            .ok_or(IkeError::BadLength("proposal SPI"))?
            .to_vec();
        let mut tdata = &p[8 + spi_size..];
        let mut transforms = Vec::with_capacity(count.min(32));
        for i in 0..count {
            let (t, more, rest) = decode_transform(tdata)?;
            if more != (i + 1 < count) {
                return Err(IkeError::Malformed("transform last-substructure flag"));
            }
            transforms.push(t);
            tdata = rest;
        }
        if !tdata.is_empty() {
            return Err(IkeError::BadLength("proposal transforms"));
        }
        out.push(Proposal {
            num: p[4],
            protocol: p[5],
            spi,
            transforms,
        });
        match (last, data.is_empty()) {
            (LAST, true) => return Ok(out),
            (MORE_PROPOSALS, false) => {}
            _ => return Err(IkeError::Malformed("proposal last-substructure flag")),
        }
    }
}

fn decode_transform(data: &[u8]) -> Result<(Transform, bool, &[u8]), IkeError> {
    if data.len() < 8 {
        return Err(IkeError::BadLength("transform"));
    }
    let more = match data[0] {
        LAST => false,
        MORE_TRANSFORMS => true,
        _ => return Err(IkeError::Malformed("transform last-substructure flag")),
    };
    let len = usize::from(be16(data, 2)?);
    if len < 8 || len > data.len() {
        return Err(IkeError::BadLength("transform"));
    }
    let (t, rest) = data.split_at(len);
    let mut adata = &t[8..];
    let mut attributes = Vec::new();
    while !adata.is_empty() {
        let raw = be16(adata, 0)?;
        let ty = raw & 0x7fff;
        if raw & 0x8000 != 0 {
            attributes.push(Attribute {
                ty,
                value: AttrValue::Tv(be16(adata, 2)?),
            });
            adata = &adata[4..];
        } else {
            let alen = usize::from(be16(adata, 2)?);
            let v = adata
                .get(4..4 + alen)
                .ok_or(IkeError::BadLength("attribute"))?;
            attributes.push(Attribute {
                ty,
                value: AttrValue::Tlv(v.to_vec()),
            });
            adata = &adata[4 + alen..];
        }
    }
    Ok((
        Transform {
            ty: t[4],
            id: be16(t, 6)?,
            attributes,
        },
        more,
        rest,
    ))
}

pub(super) fn encode_proposals(props: &[Proposal], out: &mut Vec<u8>) -> Result<(), IkeError> {
    if props.is_empty() {
        return Err(IkeError::Unencodable("SA without proposals"));
    }
    for (i, p) in props.iter().enumerate() {
        let start = out.len();
        let last = if i + 1 == props.len() {
            LAST
        } else {
            MORE_PROPOSALS
        };
        let spi_size = u8::try_from(p.spi.len()).map_err(|_| IkeError::Unencodable("SPI"))?;
        let count = u8::try_from(p.transforms.len())
            .map_err(|_| IkeError::Unencodable("transform count"))?;
        out.extend_from_slice(&[last, 0, 0, 0, p.num, p.protocol, spi_size, count]);
        out.extend_from_slice(&p.spi);
        for (j, t) in p.transforms.iter().enumerate() {
            let tstart = out.len();
            let more = if j + 1 == p.transforms.len() {
                LAST
            } else {
                MORE_TRANSFORMS
            };
            out.extend_from_slice(&[more, 0, 0, 0, t.ty, 0]);
            out.extend_from_slice(&t.id.to_be_bytes());
            for a in &t.attributes {
                if a.ty > 0x7fff {
                    return Err(IkeError::Unencodable("attribute type"));
                }
                match &a.value {
                    AttrValue::Tv(v) => {
                        out.extend_from_slice(&(a.ty | 0x8000).to_be_bytes());
                        out.extend_from_slice(&v.to_be_bytes());
                    }
                    AttrValue::Tlv(v) => {
                        out.extend_from_slice(&a.ty.to_be_bytes());
                        out.extend_from_slice(&len16(v.len(), "attribute")?);
                        out.extend_from_slice(v);
                    }
                }
            }
            let tlen = len16(out.len() - tstart, "transform")?;
            out[tstart + 2..tstart + 4].copy_from_slice(&tlen);
        }
        let plen = len16(out.len() - start, "proposal")?;
        out[start + 2..start + 4].copy_from_slice(&plen);
    }
    Ok(())
}

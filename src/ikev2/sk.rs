//! The Encrypted and Authenticated (SK) payload (RFC 7296 §3.14, RFC 5282, RFC 7634).
//!
//! ```text
//! AES-CBC + HMAC-SHA2-256-128:
//!   HDR | SK hdr | IV (16, random) | E(payloads | padding | pad length) | ICV (16)
//!   ICV = first 16 octets of HMAC-SHA256(SK_a, HDR .. end of ciphertext)
//! AES-GCM-16 / ChaCha20-Poly1305:
//!   HDR | SK hdr | IV (8) | E(payloads | pad length = 0) ‖ tag (16)
//!   nonce = salt (4, from SK_e) | IV;  AAD = HDR | SK hdr
//! ```
//!
//! CBC IVs come from the RNG (§3.14: unpredictable). AEAD IVs are a per-SA counter, so they
//! never repeat under one key (RFC 5282 §3.1). A retransmission re-sends the stored
//! bytes, never re-seals.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use aes::Aes128;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, array::Array, consts::U16};
use rand_core::CryptoRng;

use super::IkeError;
use super::codec::{
    GENERIC_HEADER_LEN, HEADER_LEN, Header, Limits, Payload, decode_chain, encode_chain,
};
use super::consts::payload as pt;
use super::keys::{IkeKeys, SecretBytes};
use super::proposal::{Encr, IkeSuite};
use crate::crypto::aead::{AeadAlg, AeadKey};
use crate::crypto::{ct_eq, kdf::hmac_sha256};

const CBC_BLOCK: usize = 16;
const ICV_LEN: usize = 16;

/// One direction of SK protection.
#[derive(Clone)]
enum Direction {
    Cbc {
        enc: SecretBytes,
        integ: SecretBytes,
    },
    Aead {
        key: Box<AeadKey>,
        salt: [u8; 4],
    },
}

/// The SK payload protection of one IKE SA, from one endpoint's point of view.
#[derive(Clone)]
pub struct SkCipher {
    out: Direction,
    inb: Direction,
    /// Next AEAD IV for outbound messages.
    counter: u64,
}

impl fmt::Debug for SkCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SkCipher(..)")
    }
}

impl SkCipher {
    /// Protection for the original initiator (`initiator = true`: sends with SK_ei/SK_ai)
    /// or the original responder.
    pub fn new(suite: &IkeSuite, keys: &IkeKeys, initiator: bool) -> Result<SkCipher, IkeError> {
        let i2r = direction(suite.encr, &keys.sk_ei, &keys.sk_ai)?;
        let r2i = direction(suite.encr, &keys.sk_er, &keys.sk_ar)?;
        let (out, inb) = if initiator { (i2r, r2i) } else { (r2i, i2r) };
        Ok(SkCipher {
            out,
            inb,
            counter: 0,
        })
    }

    /// Encode `inner` and seal it into a whole message with `header`.
    pub fn seal(
        &mut self,
        header: &Header,
        inner: &[Payload],
        rng: &mut dyn CryptoRng,
    ) -> Result<Vec<u8>, IkeError> {
        let (first_inner, mut plain) = encode_chain(inner)?;
        let sk_start = HEADER_LEN;
        match &self.out {
            Direction::Cbc { enc, integ } => {
                let pad = (CBC_BLOCK - (plain.len() + 1) % CBC_BLOCK) % CBC_BLOCK;
                plain.resize(plain.len() + pad, 0);
                plain.push(pad as u8);
                let mut iv = [0u8; CBC_BLOCK];
                rng.fill_bytes(&mut iv);
                let sk_len = GENERIC_HEADER_LEN + CBC_BLOCK + plain.len() + ICV_LEN;
                let mut out = begin(header, sk_start, sk_len, first_inner)?;
                out.extend_from_slice(&iv);
                let mut cbc = cbc::Encryptor::<Aes128>::new_from_slices(enc.as_bytes(), &iv)
                    .map_err(|_| IkeError::Unencodable("CBC key"))?;
                for chunk in plain.chunks_exact_mut(CBC_BLOCK) {
                    let block: &mut Array<u8, U16> = chunk
                        .try_into()
                        .map_err(|_| IkeError::Unencodable("CBC block"))?;
                    cbc.encrypt_block(block);
                }
                out.extend_from_slice(&plain);
                let mac = hmac_sha256(integ.as_bytes(), &out);
                out.extend_from_slice(&mac[..ICV_LEN]);
                Ok(out)
            }
            Direction::Aead { key, salt } => {
                plain.push(0);
                let iv = self.counter.to_be_bytes();
                self.counter = self.counter.wrapping_add(1);
                let sk_len = GENERIC_HEADER_LEN + iv.len() + plain.len() + ICV_LEN;
                let mut out = begin(header, sk_start, sk_len, first_inner)?;
                let nonce = nonce(salt, &iv);
                key.seal_in_place(&nonce, &out, &mut plain);
                out.extend_from_slice(&iv);
                out.extend_from_slice(&plain);
                Ok(out)
            }
        }
    }

    /// Verify and decrypt the SK payload of `bytes` (one whole IKE message whose last
    /// payload is SK); returns the header and the inner payloads.
    pub fn open(&self, bytes: &[u8], limits: &Limits) -> Result<(Header, Vec<Payload>), IkeError> {
        let o = self.open_raw(bytes, limits)?;
        Ok((o.header, o.payloads(limits)?))
    }

    /// Verify and decrypt, leaving the inner payload chain undecoded (so a caller can tell
    /// an authenticated-but-malformed message, which deserves INVALID_SYNTAX, from a forged
    /// one, which is dropped).
    pub fn open_raw(&self, bytes: &[u8], limits: &Limits) -> Result<Opened, IkeError> {
        let msg = super::codec::Message::decode(bytes, limits)?;
        let sk = msg.encrypted().ok_or(IkeError::MissingEncryptedPayload)?;
        let outer = msg.payloads.len();
        let data_start = bytes.len() - sk.data.len();
        let mut plain = match &self.inb {
            Direction::Cbc { enc, integ } => {
                let d = &sk.data;
                if d.len() < CBC_BLOCK * 2 + ICV_LEN
                    || !(d.len() - ICV_LEN).is_multiple_of(CBC_BLOCK)
                {
                    return Err(IkeError::BadLength("SK payload"));
                }
                let mac_at = bytes.len() - ICV_LEN;
                let mac = hmac_sha256(integ.as_bytes(), &bytes[..mac_at]);
                if !ct_eq(&mac[..ICV_LEN], &bytes[mac_at..]) {
                    return Err(IkeError::IntegrityCheckFailed);
                }
                let iv = &d[..CBC_BLOCK];
                let mut plain = d[CBC_BLOCK..d.len() - ICV_LEN].to_vec();
                let mut cbc = cbc::Decryptor::<Aes128>::new_from_slices(enc.as_bytes(), iv)
                    .map_err(|_| IkeError::Malformed("CBC key"))?;
                for chunk in plain.chunks_exact_mut(CBC_BLOCK) {
                    let block: &mut Array<u8, U16> = chunk
                        .try_into()
                        .map_err(|_| IkeError::Malformed("CBC block"))?;
                    cbc.decrypt_block(block);
                }
                plain
            }
            Direction::Aead { key, salt } => {
                let d = &sk.data;
                if d.len() < 8 + 1 + ICV_LEN {
                    return Err(IkeError::BadLength("SK payload"));
                }
                let mut iv = [0u8; 8];
                iv.copy_from_slice(&d[..8]);
                let aad = &bytes[..data_start];
                let mut buf = d[8..].to_vec();
                key.open_in_place(&nonce(salt, &iv), aad, &mut buf)
                    .map_err(|_| IkeError::IntegrityCheckFailed)?;
                buf
            }
        };
        let pad = usize::from(*plain.last().ok_or(IkeError::BadLength("SK payload"))?);
        if pad + 1 > plain.len() {
            return Err(IkeError::Malformed("SK padding"));
        }
        plain.truncate(plain.len() - pad - 1);
        Ok(Opened {
            header: msg.header,
            first_inner: sk.first_inner,
            plain,
            outer_count: outer,
        })
    }
}

/// A verified, decrypted SK payload.
pub struct Opened {
    /// The message header.
    pub header: Header,
    /// Type of the first inner payload.
    pub first_inner: u8,
    /// The inner payload chain (padding removed).
    pub plain: Vec<u8>,
    /// Payloads outside SK (SK included), for the payload-count bound.
    pub outer_count: usize,
}

impl Opened {
    /// Decode the inner payload chain (the payload-count bound covers the outer payloads
    /// too).
    pub fn payloads(&self, limits: &Limits) -> Result<Vec<Payload>, IkeError> {
        let mut count = self.outer_count;
        decode_chain(self.first_inner, &self.plain, limits, &mut count, false)
    }
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Opened({} bytes)", self.plain.len())
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.plain);
    }
}

fn direction(encr: Encr, enc: &SecretBytes, integ: &SecretBytes) -> Result<Direction, IkeError> {
    let alg = match encr {
        Encr::AesCbc128 => {
            if enc.len() != 16 || integ.len() != 32 {
                return Err(IkeError::Crypto(crate::crypto::CryptoError::BadKeyLength {
                    got: enc.len(),
                    want: 16,
                }));
            }
            return Ok(Direction::Cbc {
                enc: enc.clone(),
                integ: integ.clone(),
            });
        }
        Encr::AesGcm16_128 => AeadAlg::Aes128Gcm,
        Encr::AesGcm16_256 => AeadAlg::Aes256Gcm,
        Encr::ChaCha20Poly1305 => AeadAlg::ChaCha20Poly1305,
    };
    let b = enc.as_bytes();
    let split = b.len().checked_sub(4).ok_or(IkeError::Crypto(
        crate::crypto::CryptoError::BadKeyLength {
            got: b.len(),
            want: alg.key_len() + 4,
        },
    ))?;
    let mut salt = [0u8; 4];
    salt.copy_from_slice(&b[split..]);
    Ok(Direction::Aead {
        key: Box::new(AeadKey::new(alg, &b[..split])?),
        salt,
    })
}

fn nonce(salt: &[u8; 4], iv: &[u8; 8]) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(salt);
    n[4..].copy_from_slice(iv);
    n
}

/// The IKE header and SK generic header of a message whose SK payload is `sk_len` octets.
fn begin(
    header: &Header,
    sk_start: usize,
    sk_len: usize,
    first_inner: u8,
) -> Result<Vec<u8>, IkeError> {
    let total = u32::try_from(sk_start + sk_len).map_err(|_| IkeError::Unencodable("message"))?;
    let sk_len16 = u16::try_from(sk_len).map_err(|_| IkeError::Unencodable("SK payload"))?;
    let mut out = Vec::with_capacity(sk_start + sk_len);
    out.extend_from_slice(&header.encode(pt::SK, total));
    out.extend_from_slice(&[first_inner, 0]);
    out.extend_from_slice(&sk_len16.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests;

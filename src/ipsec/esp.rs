//! ESP packet format and transforms (RFC 4303 §2): suites, keys, seal and open.
//!
//! ```text
//!  SPI (4) | Sequence Number (4) | IV (8 or 16) | encrypted: payload ‖ padding ‖
//!  pad length (1) ‖ next header (1) | ICV (16)
//! ```
//!
//! - AES-CBC with HMAC-SHA2-256-128 (RFC 3602, RFC 4868): 16-byte random IV from the
//!   caller's RNG, ciphertext a multiple of 16 bytes, ICV = the first 16 bytes of
//!   HMAC-SHA-256 over `SPI ‖ Seq ‖ IV ‖ ciphertext` (‖ high 32 bits of the ESN, not sent,
//!   RFC 4303 §2.2.1). Encrypt-then-MAC; the receiver checks the ICV in constant time
//!   before it decrypts anything.
//! - AES-GCM-16 (RFC 4106) and ChaCha20-Poly1305 (RFC 7634): nonce = 4-byte salt from the
//!   key material ‖ 8-byte explicit IV; AAD = `SPI ‖ Seq` (or `SPI ‖ Seq-high ‖ Seq-low`
//!   with ESN); 16-byte tag. The data plane uses the 64-bit sequence number as the IV,
//!   so an IV never repeats under one key.
//!
//! Padding (RFC 4303 §2.4) is the minimum that aligns `payload ‖ pad length ‖ next header`
//! to the cipher's block (16 for CBC) or to 4 bytes, filled with 1, 2, 3, …; the receiver
//! checks those bytes. No TFC padding is added.

use alloc::vec::Vec;
use core::fmt;

use aes::{Aes128, Aes256};
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::IpsecError;
use crate::crypto::aead::{AeadAlg, AeadKey};

/// Length of the SPI and sequence number that open every ESP packet.
pub const ESP_HEADER_LEN: usize = 8;
/// Length of the ICV of every supported suite.
pub const ICV_LEN: usize = 16;
/// Length of the salt an AEAD suite takes from the end of its encryption key material.
pub const SALT_LEN: usize = 4;

/// An ESP cryptographic suite (one IKEv2 ENCR transform, plus INTEG for CBC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    /// ENCR_AES_CBC with a 128-bit key + AUTH_HMAC_SHA2_256_128.
    AesCbc128HmacSha256,
    /// ENCR_AES_CBC with a 256-bit key + AUTH_HMAC_SHA2_256_128.
    AesCbc256HmacSha256,
    /// ENCR_AES_GCM_16 with a 128-bit key (RFC 4106).
    AesGcm128,
    /// ENCR_AES_GCM_16 with a 256-bit key (RFC 4106).
    AesGcm256,
    /// ENCR_CHACHA20_POLY1305 (RFC 7634).
    ChaCha20Poly1305,
}

impl Suite {
    /// Every supported suite.
    pub const ALL: [Suite; 5] = [
        Suite::AesCbc128HmacSha256,
        Suite::AesCbc256HmacSha256,
        Suite::AesGcm128,
        Suite::AesGcm256,
        Suite::ChaCha20Poly1305,
    ];

    /// Whether the suite is an AEAD (no separate integrity key).
    pub const fn is_aead(self) -> bool {
        !matches!(
            self,
            Suite::AesCbc128HmacSha256 | Suite::AesCbc256HmacSha256
        )
    }

    /// Bytes of the cipher key alone (16 or 32), without an AEAD's salt.
    pub const fn cipher_key_len(self) -> usize {
        match self {
            Suite::AesCbc128HmacSha256 | Suite::AesGcm128 => 16,
            Suite::AesCbc256HmacSha256 | Suite::AesGcm256 | Suite::ChaCha20Poly1305 => 32,
        }
    }

    /// Bytes of salt at the end of the encryption key material: [`SALT_LEN`] for AEADs,
    /// 0 for CBC.
    pub const fn salt_len(self) -> usize {
        if self.is_aead() { SALT_LEN } else { 0 }
    }

    /// Bytes of encryption key material per direction, salt included for AEADs (the
    /// KEYMAT length IKEv2 takes for ENCR, RFC 4106 §8.1, RFC 7634 §2):
    /// [`Suite::cipher_key_len`] + [`Suite::salt_len`].
    pub const fn encryption_key_len(self) -> usize {
        self.cipher_key_len() + self.salt_len()
    }

    /// Bytes of integrity key material per direction (32 for HMAC-SHA2-256, RFC 4868
    /// §2.1.1; 0 for AEADs).
    pub const fn integrity_key_len(self) -> usize {
        if self.is_aead() { 0 } else { 32 }
    }

    /// Length of the explicit IV carried in each packet.
    pub const fn iv_len(self) -> usize {
        if self.is_aead() { 8 } else { 16 }
    }

    /// Length of the ICV.
    pub const fn icv_len(self) -> usize {
        ICV_LEN
    }

    /// What the encrypted part is aligned to.
    pub const fn alignment(self) -> usize {
        if self.is_aead() { 4 } else { 16 }
    }

    /// The IKEv2 transform IDs (RFC 7296 §3.3.2, IANA): (ENCR id, key length in bits,
    /// INTEG id or 0).
    pub const fn ikev2_transforms(self) -> (u16, u16, u16) {
        match self {
            Suite::AesCbc128HmacSha256 => (12, 128, 12),
            Suite::AesCbc256HmacSha256 => (12, 256, 12),
            Suite::AesGcm128 => (20, 128, 0),
            Suite::AesGcm256 => (20, 256, 0),
            Suite::ChaCha20Poly1305 => (28, 0, 0),
        }
    }

    /// The most bytes ESP adds to a payload: header, IV, worst-case padding, trailer, ICV.
    pub const fn max_overhead(self) -> usize {
        ESP_HEADER_LEN + self.iv_len() + (self.alignment() - 1) + 2 + ICV_LEN
    }

    /// Bytes of padding (RFC 4303 §2.4) that align a `payload_len`-byte payload and its
    /// 2-byte trailer to [`Suite::alignment`]: the minimum, no TFC padding.
    pub const fn padding(self, payload_len: usize) -> usize {
        let align = self.alignment();
        (align - (payload_len + 2) % align) % align
    }

    /// Length of the ESP packet that carries a `payload_len`-byte payload: header, IV,
    /// payload, padding, trailer and ICV.
    pub const fn sealed_len(self, payload_len: usize) -> usize {
        ESP_HEADER_LEN + self.iv_len() + payload_len + self.padding(payload_len) + 2 + ICV_LEN
    }

    /// A stable numeric id for deputy's own encodings.
    pub const fn id(self) -> u8 {
        match self {
            Suite::AesCbc128HmacSha256 => 1,
            Suite::AesCbc256HmacSha256 => 2,
            Suite::AesGcm128 => 3,
            Suite::AesGcm256 => 4,
            Suite::ChaCha20Poly1305 => 5,
        }
    }

    /// The suite with this [`Suite::id`].
    pub const fn from_id(id: u8) -> Option<Suite> {
        match id {
            1 => Some(Suite::AesCbc128HmacSha256),
            2 => Some(Suite::AesCbc256HmacSha256),
            3 => Some(Suite::AesGcm128),
            4 => Some(Suite::AesGcm256),
            5 => Some(Suite::ChaCha20Poly1305),
            _ => None,
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Suite::AesCbc128HmacSha256 => "aes128-sha256",
            Suite::AesCbc256HmacSha256 => "aes256-sha256",
            Suite::AesGcm128 => "aes128gcm16",
            Suite::AesGcm256 => "aes256gcm16",
            Suite::ChaCha20Poly1305 => "chacha20poly1305",
        })
    }
}

/// The key material of one direction of an SA, as IKEv2 hands it over (RFC 7296 §2.17):
/// the encryption key (with the 4-byte salt at its end for AEADs) and, for CBC suites,
/// the integrity key. Wiped on drop; `Debug` prints lengths only; `==` compares in
/// constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SaKeys {
    /// Encryption key ‖ salt (AEAD) or the AES key (CBC).
    pub encryption: Vec<u8>,
    /// HMAC-SHA2-256 key (CBC suites); empty for AEADs.
    pub integrity: Vec<u8>,
}

impl SaKeys {
    /// Keys from their two parts.
    pub fn new(encryption: &[u8], integrity: &[u8]) -> SaKeys {
        SaKeys {
            encryption: encryption.to_vec(),
            integrity: integrity.to_vec(),
        }
    }

    /// Split one direction's KEYMAT (encryption key first, then integrity key — RFC 7296
    /// §2.17) for `suite`. The length must be exact.
    pub fn from_keymat(suite: Suite, keymat: &[u8]) -> Result<SaKeys, IpsecError> {
        let enc = suite.encryption_key_len();
        let want = enc + suite.integrity_key_len();
        if keymat.len() != want {
            return Err(IpsecError::BadKeyLength {
                got: keymat.len(),
                want,
            });
        }
        let (e, i) = keymat.split_at(enc);
        Ok(SaKeys::new(e, i))
    }

    /// Check the lengths against `suite`.
    pub fn check(&self, suite: Suite) -> Result<(), IpsecError> {
        let bad = |got, want| Err(IpsecError::BadKeyLength { got, want });
        if self.encryption.len() != suite.encryption_key_len() {
            return bad(self.encryption.len(), suite.encryption_key_len());
        }
        if self.integrity.len() != suite.integrity_key_len() {
            return bad(self.integrity.len(), suite.integrity_key_len());
        }
        Ok(())
    }
}

impl PartialEq for SaKeys {
    fn eq(&self, other: &Self) -> bool {
        // Both parts are always compared, so the time does not tell which one differs.
        let e = crate::crypto::ct_eq(&self.encryption, &other.encryption);
        let i = crate::crypto::ct_eq(&self.integrity, &other.integrity);
        e & i
    }
}

impl Eq for SaKeys {}

impl fmt::Debug for SaKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SaKeys {{ encryption: <{} bytes>, integrity: <{} bytes> }}",
            self.encryption.len(),
            self.integrity.len()
        )
    }
}

#[derive(Clone)]
enum CbcCipher {
    Aes128(Aes128),
    Aes256(Aes256),
}

#[derive(Clone)]
enum Transform {
    Cbc {
        cipher: CbcCipher,
        mac: Hmac<Sha256>,
    },
    Aead {
        key: AeadKey,
        salt: Zeroizing<[u8; SALT_LEN]>,
    },
}

/// A keyed ESP transform for one direction of one SA. Key schedules wipe themselves on
/// drop; `Debug` names the suite only.
#[derive(Clone)]
pub struct EspTransform {
    suite: Suite,
    transform: Transform,
}

impl fmt::Debug for EspTransform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EspTransform({})", self.suite)
    }
}

/// A successfully opened ESP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The SPI.
    pub spi: u32,
    /// The sequence number (low 32 bits as sent, or the inferred ESN).
    pub seq: u64,
    /// The next header from the trailer.
    pub next_header: u8,
    /// The payload, padding and trailer removed.
    pub payload: Vec<u8>,
}

/// Read the SPI and the (low 32 bits of the) sequence number of an ESP packet.
pub fn peek_header(esp: &[u8]) -> Result<(u32, u32), IpsecError> {
    match esp {
        [a, b, c, d, e, f, g, h, ..] => Ok((
            u32::from_be_bytes([*a, *b, *c, *d]),
            u32::from_be_bytes([*e, *f, *g, *h]),
        )),
        _ => Err(IpsecError::Malformed("short ESP header")),
    }
}

fn aad(spi: u32, seq: u64, esn: bool) -> ([u8; 12], usize) {
    let mut a = [0u8; 12];
    a[..4].copy_from_slice(&spi.to_be_bytes());
    if esn {
        a[4..].copy_from_slice(&seq.to_be_bytes());
        (a, 12)
    } else {
        a[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        (a, 8)
    }
}

fn nonce(salt: &[u8; SALT_LEN], iv: &[u8]) -> Zeroizing<[u8; 12]> {
    let mut n = Zeroizing::new([0u8; 12]);
    n[..SALT_LEN].copy_from_slice(salt);
    n[SALT_LEN..].copy_from_slice(iv);
    n
}

impl EspTransform {
    /// Key `suite` with `keys` (lengths checked).
    pub fn new(suite: Suite, keys: &SaKeys) -> Result<EspTransform, IpsecError> {
        keys.check(suite)?;
        let bad = || IpsecError::BadKeyLength {
            got: keys.encryption.len(),
            want: suite.encryption_key_len(),
        };
        let transform = match suite {
            Suite::AesCbc128HmacSha256 | Suite::AesCbc256HmacSha256 => {
                let cipher = if suite == Suite::AesCbc128HmacSha256 {
                    CbcCipher::Aes128(Aes128::new_from_slice(&keys.encryption).map_err(|_| bad())?)
                } else {
                    CbcCipher::Aes256(Aes256::new_from_slice(&keys.encryption).map_err(|_| bad())?)
                };
                let mac =
                    <Hmac<Sha256> as KeyInit>::new_from_slice(&keys.integrity).map_err(|_| {
                        IpsecError::BadKeyLength {
                            got: keys.integrity.len(),
                            want: 32,
                        }
                    })?;
                Transform::Cbc { cipher, mac }
            }
            Suite::AesGcm128 | Suite::AesGcm256 | Suite::ChaCha20Poly1305 => {
                let alg = match suite {
                    Suite::AesGcm128 => AeadAlg::Aes128Gcm,
                    Suite::AesGcm256 => AeadAlg::Aes256Gcm,
                    _ => AeadAlg::ChaCha20Poly1305,
                };
                let split = keys.encryption.len() - SALT_LEN;
                let key = AeadKey::new(alg, &keys.encryption[..split]).map_err(|_| bad())?;
                let mut salt = Zeroizing::new([0u8; SALT_LEN]);
                salt.copy_from_slice(&keys.encryption[split..]);
                Transform::Aead { key, salt }
            }
        };
        Ok(EspTransform { suite, transform })
    }

    /// The suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Build an ESP packet: `spi`, sequence number `seq` (its low 32 bits are sent; with
    /// `esn` the high 32 bits enter the ICV/AAD), explicit `iv` of exactly
    /// [`Suite::iv_len`] bytes, the `payload` and its `next_header`.
    ///
    /// The IV is the caller's duty: random for CBC, unique per key for AEADs (the data
    /// plane passes the sequence number).
    pub fn seal(
        &self,
        spi: u32,
        seq: u64,
        esn: bool,
        iv: &[u8],
        next_header: u8,
        payload: &[u8],
    ) -> Result<Vec<u8>, IpsecError> {
        let mut out = Vec::new();
        self.seal_into(&mut out, spi, seq, esn, iv, next_header, payload)?;
        Ok(out)
    }

    /// [`EspTransform::seal`] appending the packet to `out` (after an outer header the
    /// caller already wrote, say): the [`Suite::sealed_len`] bytes are reserved at once,
    /// the payload is copied in once and encrypted where it lies. On an error `out` is
    /// left as it was.
    #[allow(clippy::too_many_arguments)]
    pub fn seal_into(
        &self,
        out: &mut Vec<u8>,
        spi: u32,
        seq: u64,
        esn: bool,
        iv: &[u8],
        next_header: u8,
        payload: &[u8],
    ) -> Result<(), IpsecError> {
        let suite = self.suite;
        if iv.len() != suite.iv_len() {
            return Err(IpsecError::Malformed("IV length"));
        }
        let pad = suite.padding(payload.len());
        out.reserve(suite.sealed_len(payload.len()));
        let esp_start = out.len();
        out.extend_from_slice(&spi.to_be_bytes());
        out.extend_from_slice(&(seq as u32).to_be_bytes());
        out.extend_from_slice(iv);
        let ct_start = out.len();
        out.extend_from_slice(payload);
        // pad < 16, so the casts are exact.
        const PADDING: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
        out.extend_from_slice(&PADDING[..pad]);
        out.extend_from_slice(&[pad as u8, next_header]);
        let icv = match &self.transform {
            Transform::Cbc { cipher, mac } => {
                let (blocks, rest) = cbc::cipher::Array::slice_as_chunks_mut(&mut out[ct_start..]);
                if !rest.is_empty() {
                    // Unreachable: the padding above aligns to the block size.
                    out.truncate(esp_start);
                    return Err(IpsecError::Malformed("CBC alignment"));
                }
                let iv: &[u8; 16] = iv.try_into().map_err(|_| IpsecError::Malformed("IV"))?;
                match cipher {
                    CbcCipher::Aes128(c) => {
                        cbc::Encryptor::<Aes128>::inner_iv_init(c.clone(), iv.into())
                            .encrypt_blocks(blocks)
                    }
                    CbcCipher::Aes256(c) => {
                        cbc::Encryptor::<Aes256>::inner_iv_init(c.clone(), iv.into())
                            .encrypt_blocks(blocks)
                    }
                }
                let icv = cbc_icv(mac, &out[esp_start..], seq, esn);
                let mut first = [0u8; ICV_LEN];
                first.copy_from_slice(&icv[..ICV_LEN]);
                first
            }
            Transform::Aead { key, salt } => {
                let (aad, aad_len) = aad(spi, seq, esn);
                match key.seal_in_place_detached(
                    &nonce(salt, iv),
                    &aad[..aad_len],
                    &mut out[ct_start..],
                ) {
                    Ok(tag) => tag,
                    Err(_) => {
                        // Beyond the AEAD's length limit, far above any IP packet: the
                        // plaintext is taken back out.
                        out.truncate(esp_start);
                        return Err(IpsecError::TooLarge);
                    }
                }
            }
        };
        out.extend_from_slice(&icv);
        Ok(())
    }

    /// Verify and decrypt an ESP packet whose full sequence number is `seq` (the low 32
    /// bits must be those in the packet; with `esn` the high bits come from the replay
    /// window). Integrity is checked before anything is decrypted or parsed; then the
    /// padding is checked.
    pub fn open(&self, esp: &[u8], seq: u64, esn: bool) -> Result<Opened, IpsecError> {
        let mut payload = Vec::new();
        let (spi, next_header) = self.open_into(esp, seq, esn, &mut payload)?;
        Ok(Opened {
            spi,
            seq,
            next_header,
            payload,
        })
    }

    /// [`EspTransform::open`] appending the payload to `out` (after room the caller keeps
    /// for a header, say): the ciphertext is copied in once and decrypted where it lies,
    /// then padding and trailer are cut off. Returns the SPI and the next header. On an
    /// error `out` is left as it was.
    pub fn open_into(
        &self,
        esp: &[u8],
        seq: u64,
        esn: bool,
        out: &mut Vec<u8>,
    ) -> Result<(u32, u8), IpsecError> {
        let suite = self.suite;
        let (spi, _) = peek_header(esp)?;
        let iv_end = ESP_HEADER_LEN + suite.iv_len();
        let min = iv_end + suite.alignment() + ICV_LEN;
        if esp.len() < min {
            return Err(IpsecError::Malformed("short ESP packet"));
        }
        let icv_start = esp.len() - ICV_LEN;
        let iv = &esp[ESP_HEADER_LEN..iv_end];
        let ciphertext = &esp[iv_end..icv_start];
        let start = out.len();
        let opened = match &self.transform {
            Transform::Cbc { cipher, mac } => {
                let expect = cbc_icv(mac, &esp[..icv_start], seq, esn);
                if !crate::crypto::ct_eq(&expect[..ICV_LEN], &esp[icv_start..]) {
                    return Err(IpsecError::IntegrityFailed { spi });
                }
                let iv: &[u8; 16] = iv.try_into().map_err(|_| IpsecError::Malformed("IV"))?;
                out.extend_from_slice(ciphertext);
                let (blocks, rest) = cbc::cipher::Array::slice_as_chunks_mut(&mut out[start..]);
                if !rest.is_empty() {
                    // Authentic but not block-aligned: the sender is broken.
                    Err(IpsecError::BadPadding { spi })
                } else {
                    match cipher {
                        CbcCipher::Aes128(c) => {
                            cbc::Decryptor::<Aes128>::inner_iv_init(c.clone(), iv.into())
                                .decrypt_blocks(blocks)
                        }
                        CbcCipher::Aes256(c) => {
                            cbc::Decryptor::<Aes256>::inner_iv_init(c.clone(), iv.into())
                                .decrypt_blocks(blocks)
                        }
                    }
                    Ok(())
                }
            }
            Transform::Aead { key, salt } => {
                let (aad, aad_len) = aad(spi, seq, esn);
                let mut tag = [0u8; ICV_LEN];
                tag.copy_from_slice(&esp[icv_start..]);
                out.extend_from_slice(ciphertext);
                key.open_in_place_detached(
                    &nonce(salt, iv),
                    &aad[..aad_len],
                    &mut out[start..],
                    &tag,
                )
                .map_err(|_| IpsecError::IntegrityFailed { spi })
            }
        };
        let trailer =
            opened.and_then(|()| trailer(&out[start..]).ok_or(IpsecError::BadPadding { spi }));
        match trailer {
            Ok((len, next_header)) => {
                out.truncate(start + len);
                Ok((spi, next_header))
            }
            Err(e) => {
                // Nothing of a packet that failed stays behind, decrypted or not.
                out.truncate(start);
                Err(e)
            }
        }
    }
}

fn cbc_icv(mac: &Hmac<Sha256>, authenticated: &[u8], seq: u64, esn: bool) -> Zeroizing<[u8; 32]> {
    let mut m = mac.clone();
    m.update(authenticated);
    if esn {
        m.update(&((seq >> 32) as u32).to_be_bytes());
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&m.finalize().into_bytes());
    out
}

/// Read `padding ‖ pad length ‖ next header` at the end of `plain`, checking that the
/// padding is 1, 2, 3, … (RFC 4303 §2.4). Returns the length of the payload before it and
/// the next header.
fn trailer(plain: &[u8]) -> Option<(usize, u8)> {
    let [rest @ .., pad_len, next_header] = plain else {
        return None;
    };
    let start = rest.len().checked_sub(usize::from(*pad_len))?;
    let monotonic = rest[start..]
        .iter()
        .enumerate()
        .all(|(i, &b)| usize::from(b) == i + 1);
    monotonic.then_some((start, *next_header))
}

/// Remove `padding ‖ pad length ‖ next header` from the end of `plain` (see [`trailer`]).
/// Returns the next header.
#[cfg(test)]
fn strip_trailer(plain: &mut Vec<u8>) -> Option<u8> {
    let (len, next_header) = trailer(plain)?;
    plain.truncate(len);
    Some(next_header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn keys(suite: Suite, fill: u8) -> SaKeys {
        SaKeys::new(
            &vec![fill; suite.encryption_key_len()],
            &vec![fill ^ 0x55; suite.integrity_key_len()],
        )
    }

    #[test]
    fn every_suite_round_trips_with_minimal_padding() {
        for suite in Suite::ALL {
            let t = EspTransform::new(suite, &keys(suite, 3)).unwrap();
            let iv = vec![9u8; suite.iv_len()];
            for len in 0..40 {
                let payload: Vec<u8> = (0..len as u8).collect();
                for esn in [false, true] {
                    let seq = if esn { (7u64 << 32) | 9 } else { 9 };
                    let p = t.seal(0x1234, seq, esn, &iv, 4, &payload).unwrap();
                    let ct_len = p.len() - ESP_HEADER_LEN - suite.iv_len() - ICV_LEN;
                    assert_eq!(ct_len % suite.alignment(), 0);
                    assert!(ct_len - (len + 2) < suite.alignment(), "minimal padding");
                    assert_eq!(peek_header(&p).unwrap(), (0x1234, 9));
                    let o = t.open(&p, seq, esn).unwrap();
                    assert_eq!((o.next_header, &o.payload), (4, &payload), "{suite} {len}");
                    if esn {
                        // The high bits are authenticated although never sent.
                        assert!(t.open(&p, seq + (1 << 32), esn).is_err());
                    }
                }
            }
            assert_eq!(
                SaKeys::from_keymat(suite, &[0; 3]).unwrap_err(),
                IpsecError::BadKeyLength {
                    got: 3,
                    want: suite.encryption_key_len() + suite.integrity_key_len(),
                }
            );
            assert_eq!(Suite::from_id(suite.id()), Some(suite));
        }
    }

    #[test]
    fn seal_into_and_open_into_append_and_leave_nothing_behind_on_failure() {
        for suite in Suite::ALL {
            let t = EspTransform::new(suite, &keys(suite, 5)).unwrap();
            let iv = vec![2u8; suite.iv_len()];
            let mut out = b"outer".to_vec();
            t.seal_into(&mut out, 9, 3, false, &iv, 4, b"payload")
                .unwrap();
            let esp = out.split_off(5);
            assert_eq!(esp.len(), suite.sealed_len(7));
            assert_eq!(esp, t.seal(9, 3, false, &iv, 4, b"payload").unwrap());
            let mut plain = b"room".to_vec();
            assert_eq!(t.open_into(&esp, 3, false, &mut plain), Ok((9, 4)));
            assert_eq!(plain, b"roompayload");
            let mut bad = esp.clone();
            *bad.last_mut().unwrap() ^= 1;
            let mut plain = b"room".to_vec();
            assert_eq!(
                t.open_into(&bad, 3, false, &mut plain),
                Err(IpsecError::IntegrityFailed { spi: 9 })
            );
            assert_eq!(plain, b"room", "{suite}");
            let mut out = b"outer".to_vec();
            assert!(t.seal_into(&mut out, 9, 3, false, &[0], 4, b"p").is_err());
            assert_eq!(out, b"outer");
        }
    }

    #[test]
    fn wrong_key_lengths_are_refused_and_debug_hides_keys() {
        for suite in Suite::ALL {
            let mut k = keys(suite, 1);
            k.encryption.push(0);
            assert!(matches!(
                EspTransform::new(suite, &k),
                Err(IpsecError::BadKeyLength { .. })
            ));
        }
        let k = SaKeys::new(&[0xAB; 20], &[]);
        let shown = alloc::format!("{k:?}");
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab,"));
        assert!(shown.contains("20 bytes"));
        let t = EspTransform::new(Suite::AesGcm128, &k).unwrap();
        assert_eq!(alloc::format!("{t:?}"), "EspTransform(aes128gcm16)");
    }

    #[test]
    fn trailer_padding_must_be_monotonic() {
        let mut plain = vec![b'a', b'b', 1, 2, 2, 4];
        assert_eq!(strip_trailer(&mut plain), Some(4));
        assert_eq!(plain, b"ab");
        for bad in [
            vec![b'a', 1, 3, 2, 4],
            vec![2, 1, 2, 4],
            vec![9, 4],
            vec![4],
            vec![],
        ] {
            let mut p = bad.clone();
            assert_eq!(strip_trailer(&mut p), None, "{bad:?}");
        }
    }

    #[test]
    fn authentic_packets_with_bad_padding_are_refused() {
        // Build an authentic ChaCha20-Poly1305 ESP packet by hand whose trailer says
        // "pad length 2" but whose pad bytes are 1, 3.
        let suite = Suite::ChaCha20Poly1305;
        let k = keys(suite, 1);
        let t = EspTransform::new(suite, &k).unwrap();
        let aead = AeadKey::new(AeadAlg::ChaCha20Poly1305, &k.encryption[..32]).unwrap();
        let salt: [u8; 4] = k.encryption[32..].try_into().unwrap();
        let iv = [5u8; 8];
        let (aad, n) = aad(7, 1, false);
        let ct = aead.seal(&nonce(&salt, &iv), &aad[..n], &[b'x', b'y', 1, 3, 2, 4]);
        let mut p = vec![0, 0, 0, 7, 0, 0, 0, 1];
        p.extend_from_slice(&iv);
        p.extend_from_slice(&ct);
        assert_eq!(t.open(&p, 1, false), Err(IpsecError::BadPadding { spi: 7 }));
        // The same trailer with correct padding opens.
        let ct = aead.seal(&nonce(&salt, &iv), &aad[..n], &[b'x', b'y', 1, 2, 2, 4]);
        p.truncate(16);
        p.extend_from_slice(&ct);
        assert_eq!(t.open(&p, 1, false).unwrap().payload, b"xy");
    }
}

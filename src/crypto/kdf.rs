//! Key derivation: the seed 002 master-secret formula and HKDF-SHA256 (RFC 5869).
//!
//! The channel (DESIGN.md §4) first computes the seed's `master_secret` from the
//! Diffie-Hellman pre-master secret and both hello randoms, then derives every traffic key
//! with HKDF-SHA256 over that master secret and the transcript hash, so the MD5 inside the
//! seed's formula never stands alone between an attacker and a key.

use hmac::{KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::CryptoError;

/// Length of the seed's master secret: three MD5 outputs.
pub const MASTER_SECRET_LEN: usize = 48;

/// The seed 002 master secret (¶0088), with SHA-256 standing for "SHA":
///
/// ```text
/// master_secret = MD5(PMS ‖ SHA-256('A'   ‖ PMS ‖ client_random ‖ server_random)) ‖
///                 MD5(PMS ‖ SHA-256('BB'  ‖ PMS ‖ client_random ‖ server_random)) ‖
///                 MD5(PMS ‖ SHA-256('CCC' ‖ PMS ‖ client_random ‖ server_random))
/// ```
pub fn seed_master_secret(
    pms: &[u8],
    client_random: &[u8],
    server_random: &[u8],
) -> Zeroizing<[u8; MASTER_SECRET_LEN]> {
    let mut out = Zeroizing::new([0u8; MASTER_SECRET_LEN]);
    for (i, label) in [&b"A"[..], b"BB", b"CCC"].into_iter().enumerate() {
        let mut inner = Zeroizing::new([0u8; 32]);
        inner.copy_from_slice(
            &Sha256::new()
                .chain_update(label)
                .chain_update(pms)
                .chain_update(client_random)
                .chain_update(server_random)
                .finalize(),
        );
        let outer = Md5::new().chain_update(pms).chain_update(*inner).finalize();
        out[16 * i..16 * (i + 1)].copy_from_slice(&outer);
    }
    out
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    hmac_sha256_parts(key, &[data])
}

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac_sha256_parts(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    HmacSha256Key::new(key).mac_parts(parts)
}

/// An HMAC-SHA256 key made ready once: the hash states after the key's inner and outer
/// padded blocks. A MAC under it clones them instead of hashing both padded blocks again,
/// two of the four or five SHA-256 compressions a short message's HMAC costs. The states
/// stand for the key; sha2 wipes them on drop.
#[derive(Clone)]
pub struct HmacSha256Key(hmac::Hmac<Sha256>);

impl HmacSha256Key {
    /// The states for `key` (any length).
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        HmacSha256Key(
            <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
        )
    }

    /// HMAC-SHA256 of the concatenation of `parts`.
    pub fn mac_parts(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl core::fmt::Debug for HmacSha256Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HmacSha256Key(..)")
    }
}

/// An HKDF-SHA256 pseudorandom key (the output of Extract), wiped on drop.
pub struct Prk(Zeroizing<[u8; 32]>);

impl core::fmt::Debug for Prk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Prk(..)")
    }
}

impl Prk {
    /// HKDF-Extract(salt, ikm).
    pub fn extract(salt: &[u8], ikm: &[u8]) -> Prk {
        let (prk, _) = hkdf::Hkdf::<Sha256>::extract(Some(salt), ikm);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&prk);
        Prk(out)
    }

    /// HKDF-Expand(prk, info, out.len()). At most 255 × 32 bytes.
    pub fn expand(&self, info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        let hk = hkdf::Hkdf::<Sha256>::from_prk(&*self.0)
            .unwrap_or_else(|_| unreachable!("a 32-byte PRK is always valid"));
        hk.expand_multi_info(info, out)
            .map_err(|_| CryptoError::OutputTooLong)
    }

    /// Expand with a deputy label:
    /// `info = len(out) as u16 ‖ len(label) as u64 ‖ "deputy " ‖ label ‖ context`.
    /// The label's length keeps label and context apart, and every key deputy derives has
    /// its own label, so no two keys can collide.
    pub fn expand_label(
        &self,
        label: &str,
        context: &[u8],
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        let len = u16::try_from(out.len()).map_err(|_| CryptoError::OutputTooLong)?;
        let label_len = (label.len() as u64).to_be_bytes();
        self.expand(
            &[
                &len.to_be_bytes(),
                &label_len,
                b"deputy ",
                label.as_bytes(),
                context,
            ],
            out,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> alloc::vec::Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Known answer for the seed 002 formula, computed independently with Python's hashlib:
    ///
    /// ```python
    /// import hashlib
    /// pms = bytes(range(48))
    /// cr = bytes([0x11]) * 32
    /// sr = bytes([0x22]) * 32
    /// out = b""
    /// for label in (b"A", b"BB", b"CCC"):
    ///     inner = hashlib.sha256(label + pms + cr + sr).digest()
    ///     out += hashlib.md5(pms + inner).digest()
    /// print(out.hex())
    /// ```
    #[test]
    fn seed_master_secret_known_answer() {
        let pms: alloc::vec::Vec<u8> = (0u8..48).collect();
        let ms = seed_master_secret(&pms, &[0x11; 32], &[0x22; 32]);
        assert_eq!(
            ms.as_slice(),
            unhex(
                "e7b5e5ecfe138b12428d80c12fff64581ebdd2bd0d7cbd9b52e673041b88c1d2\
                 d616a15bb524c5e588b3a1059b4beed8"
            )
        );
    }

    /// RFC 5869 appendix A.1.
    #[test]
    fn hkdf_matches_rfc5869_case_1() {
        let ikm = [0x0b; 22];
        let salt = unhex("000102030405060708090a0b0c");
        let info = unhex("f0f1f2f3f4f5f6f7f8f9");
        let prk = Prk::extract(&salt, &ikm);
        assert_eq!(
            prk.0.as_slice(),
            unhex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        );
        let mut okm = [0u8; 42];
        prk.expand(&[&info[..5], &info[5..]], &mut okm).unwrap();
        assert_eq!(
            okm.as_slice(),
            unhex(
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
            )
        );
        let mut too_long = [0u8; 255 * 32 + 1];
        assert_eq!(
            prk.expand(&[], &mut too_long),
            Err(CryptoError::OutputTooLong)
        );
    }

    #[test]
    fn labels_and_contexts_do_not_run_into_each_other() {
        let prk = Prk::extract(b"salt", b"ikm");
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        prk.expand_label("ab", b"c", &mut a).unwrap();
        prk.expand_label("a", b"bc", &mut b).unwrap();
        assert_ne!(a, b);
        prk.expand_label("abc", b"", &mut b).unwrap();
        assert_ne!(a, b);
    }

    /// RFC 4231 test case 2.
    #[test]
    fn hmac_sha256_matches_rfc4231_case_2() {
        assert_eq!(
            hmac_sha256(b"Jefe", b"what do ya want for nothing?").as_slice(),
            unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    /// A key made ready once gives every MAC under it the same answer as a fresh HMAC, in
    /// however many parts the message comes (RFC 4231 test case 2 again).
    #[test]
    fn a_prepared_key_is_reused_unchanged() {
        let key = HmacSha256Key::new(b"Jefe");
        let want = unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        for _ in 0..2 {
            assert_eq!(
                key.mac_parts(&[b"what do ya ", b"want for nothing?"])
                    .as_slice(),
                want
            );
        }
        assert_ne!(key.mac_parts(&[b"what do ya want"]).as_slice(), want);
    }
}

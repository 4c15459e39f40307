//! Authenticated encryption: ChaCha20-Poly1305 (RFC 8439), AES-128-GCM and AES-256-GCM.
//!
//! All three take a 96-bit nonce and produce a 128-bit tag appended to the ciphertext.
//! Keys live inside the RustCrypto cipher objects, which wipe themselves on drop.
//!
//! With the feature `aws-lc` (which needs `std`), the same three algorithms run on
//! aws-lc-rs instead: assembly with AES-NI/VAES and AVX2/AVX-512 where the CPU has them,
//! about twice the RustCrypto crates' throughput on x86-64 (docs/keyx.md measures it on
//! TLS records). Same API, same bytes on the wire; aws-lc keeps the key schedule in memory
//! it wipes when the key is dropped (`OPENSSL_free` cleanses). Without the feature — on a
//! `no_std` device — the RustCrypto crates run.

use alloc::vec::Vec;
use core::fmt;

use aes_gcm::{Aes128Gcm, Aes256Gcm};
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::aead::{AeadInOut, KeyInit};

use super::CryptoError;

/// Nonce length of every supported AEAD.
pub const NONCE_LEN: usize = 12;
/// Tag length of every supported AEAD.
pub const TAG_LEN: usize = 16;

/// An AEAD algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AeadAlg {
    /// ChaCha20-Poly1305 (RFC 8439): fast in software, the default for weak devices.
    ChaCha20Poly1305,
    /// AES-128-GCM.
    Aes128Gcm,
    /// AES-256-GCM.
    Aes256Gcm,
}

impl AeadAlg {
    /// Every supported algorithm, preferred first.
    pub const ALL: [AeadAlg; 3] = [
        AeadAlg::ChaCha20Poly1305,
        AeadAlg::Aes128Gcm,
        AeadAlg::Aes256Gcm,
    ];

    /// Key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            AeadAlg::Aes128Gcm => 16,
            AeadAlg::ChaCha20Poly1305 | AeadAlg::Aes256Gcm => 32,
        }
    }

    /// deputy's wire identifier.
    pub const fn id(self) -> u16 {
        match self {
            AeadAlg::ChaCha20Poly1305 => 1,
            AeadAlg::Aes128Gcm => 2,
            AeadAlg::Aes256Gcm => 3,
        }
    }

    /// The algorithm with this wire identifier.
    pub const fn from_id(id: u16) -> Option<AeadAlg> {
        match id {
            1 => Some(AeadAlg::ChaCha20Poly1305),
            2 => Some(AeadAlg::Aes128Gcm),
            3 => Some(AeadAlg::Aes256Gcm),
            _ => None,
        }
    }
}

impl fmt::Display for AeadAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AeadAlg::ChaCha20Poly1305 => "chacha20-poly1305",
            AeadAlg::Aes128Gcm => "aes128-gcm",
            AeadAlg::Aes256Gcm => "aes256-gcm",
        })
    }
}

#[derive(Clone)]
enum Cipher {
    ChaCha(ChaCha20Poly1305),
    Aes128(Aes128Gcm),
    Aes256(Aes256Gcm),
    /// Any of the three on aws-lc-rs (feature `aws-lc`). Shared, because aws-lc's key
    /// cannot be cloned; it is immutable once made.
    #[cfg(feature = "aws-lc")]
    AwsLc(alloc::sync::Arc<aws_lc_rs::aead::LessSafeKey>),
}

#[cfg(feature = "aws-lc")]
mod lc {
    //! The aws-lc-rs calls, one per `AeadKey` method.
    use aws_lc_rs::aead::{
        AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey,
    };

    use super::{AeadAlg, CryptoError, NONCE_LEN, TAG_LEN};

    pub(super) fn key(alg: AeadAlg, key: &[u8]) -> Option<LessSafeKey> {
        let algorithm = match alg {
            AeadAlg::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            AeadAlg::Aes128Gcm => &AES_128_GCM,
            AeadAlg::Aes256Gcm => &AES_256_GCM,
        };
        UnboundKey::new(algorithm, key).ok().map(LessSafeKey::new)
    }

    fn nonce(n: &[u8; NONCE_LEN]) -> Nonce {
        Nonce::assume_unique_for_key(*n)
    }

    pub(super) fn seal_detached(
        k: &LessSafeKey,
        n: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = k
            .seal_in_place_separate_tag(nonce(n), Aad::from(aad), buf)
            .map_err(|_| CryptoError::TooLong)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    pub(super) fn open_detached(
        k: &LessSafeKey,
        n: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        k.open_in_place_separate_tag(nonce(n), Aad::from(aad), tag, buf)
            .map(|_| ())
            .map_err(|_| CryptoError::AuthenticationFailed)
    }

    pub(super) fn open_into(
        k: &LessSafeKey,
        n: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        k.open_separate_gather(nonce(n), Aad::from(aad), ciphertext, tag, out)
            .map_err(|_| CryptoError::AuthenticationFailed)
    }
}

/// A keyed AEAD. Wiped on drop.
#[derive(Clone)]
pub struct AeadKey {
    alg: AeadAlg,
    cipher: Cipher,
}

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AeadKey({})", self.alg)
    }
}

impl AeadKey {
    /// Key `alg` with `key` (exactly `alg.key_len()` bytes).
    pub fn new(alg: AeadAlg, key: &[u8]) -> Result<AeadKey, CryptoError> {
        #[cfg(feature = "aws-lc")]
        {
            let k = lc::key(alg, key).ok_or(CryptoError::BadKeyLength {
                got: key.len(),
                want: alg.key_len(),
            })?;
            Ok(AeadKey {
                alg,
                cipher: Cipher::AwsLc(alloc::sync::Arc::new(k)),
            })
        }
        #[cfg(not(feature = "aws-lc"))]
        {
            Self::rust_crypto(alg, key)
        }
    }

    /// The key on the RustCrypto crates.
    #[cfg_attr(feature = "aws-lc", allow(dead_code))]
    fn rust_crypto(alg: AeadAlg, key: &[u8]) -> Result<AeadKey, CryptoError> {
        let bad = || CryptoError::BadKeyLength {
            got: key.len(),
            want: alg.key_len(),
        };
        let cipher = match alg {
            AeadAlg::ChaCha20Poly1305 => {
                Cipher::ChaCha(ChaCha20Poly1305::new_from_slice(key).map_err(|_| bad())?)
            }
            AeadAlg::Aes128Gcm => {
                Cipher::Aes128(Aes128Gcm::new_from_slice(key).map_err(|_| bad())?)
            }
            AeadAlg::Aes256Gcm => {
                Cipher::Aes256(Aes256Gcm::new_from_slice(key).map_err(|_| bad())?)
            }
        };
        Ok(AeadKey { alg, cipher })
    }

    /// The algorithm.
    pub fn alg(&self) -> AeadAlg {
        self.alg
    }

    /// Encrypt `buf` in place and append the tag.
    pub fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut Vec<u8>) {
        let n = (*nonce).into();
        // Safe to discard: the AEAD crates fail only when the buffer cannot grow by the
        // tag (a `Vec` always can) or the plaintext exceeds the algorithm's limit (about
        // 64 GiB for AES-GCM, 256 GiB for ChaCha20-Poly1305), far above any caller's
        // record bound. `seal` therefore stays infallible for callers.
        let _ = match &self.cipher {
            Cipher::ChaCha(c) => c.encrypt_in_place(&n, aad, buf),
            Cipher::Aes128(c) => c.encrypt_in_place(&n, aad, buf),
            Cipher::Aes256(c) => c.encrypt_in_place(&n, aad, buf),
            #[cfg(feature = "aws-lc")]
            Cipher::AwsLc(k) => {
                if let Ok(tag) = lc::seal_detached(k, nonce, aad, buf) {
                    buf.extend_from_slice(&tag);
                }
                Ok(())
            }
        };
    }

    /// Encrypt `buf` in place and return the tag, for callers that build a whole record or
    /// packet in one buffer and place the tag themselves (no copy, no growth).
    ///
    /// Fails only beyond the algorithm's length limit (about 64 GiB of plaintext for
    /// AES-GCM); `buf` is then left as it was.
    pub fn seal_in_place_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let n = (*nonce).into();
        let tag = match &self.cipher {
            Cipher::ChaCha(c) => c.encrypt_inout_detached(&n, aad, buf.into()),
            Cipher::Aes128(c) => c.encrypt_inout_detached(&n, aad, buf.into()),
            Cipher::Aes256(c) => c.encrypt_inout_detached(&n, aad, buf.into()),
            #[cfg(feature = "aws-lc")]
            Cipher::AwsLc(k) => return lc::seal_detached(k, nonce, aad, buf),
        }
        .map_err(|_| CryptoError::TooLong)?;
        Ok(tag.into())
    }

    /// Check `tag` over the ciphertext `buf` and decrypt it in place. On failure `buf` is
    /// left unspecified and must be discarded.
    pub fn open_in_place_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        let n = (*nonce).into();
        let t = (*tag).into();
        match &self.cipher {
            Cipher::ChaCha(c) => c.decrypt_inout_detached(&n, aad, buf.into(), &t),
            Cipher::Aes128(c) => c.decrypt_inout_detached(&n, aad, buf.into(), &t),
            Cipher::Aes256(c) => c.decrypt_inout_detached(&n, aad, buf.into(), &t),
            #[cfg(feature = "aws-lc")]
            Cipher::AwsLc(k) => return lc::open_detached(k, nonce, aad, buf, tag),
        }
        .map_err(|_| CryptoError::AuthenticationFailed)
    }

    /// Encrypt `plaintext`; returns ciphertext ‖ tag.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.seal_in_place(nonce, aad, &mut buf);
        buf
    }

    /// Check the tag at the end of `buf` and decrypt in place, leaving the plaintext.
    /// On failure `buf` is left unspecified and must be discarded.
    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        if buf.len() < TAG_LEN {
            return Err(CryptoError::AuthenticationFailed);
        }
        let n = (*nonce).into();
        match &self.cipher {
            Cipher::ChaCha(c) => c.decrypt_in_place(&n, aad, buf),
            Cipher::Aes128(c) => c.decrypt_in_place(&n, aad, buf),
            Cipher::Aes256(c) => c.decrypt_in_place(&n, aad, buf),
            #[cfg(feature = "aws-lc")]
            Cipher::AwsLc(k) => {
                let split = buf.len() - TAG_LEN;
                let mut tag = [0u8; TAG_LEN];
                tag.copy_from_slice(&buf[split..]);
                lc::open_detached(k, nonce, aad, &mut buf[..split], &tag)?;
                buf.truncate(split);
                return Ok(());
            }
        }
        .map_err(|_| CryptoError::AuthenticationFailed)
    }

    /// Check `sealed` (ciphertext ‖ tag) and decrypt it into `out`, which must be exactly
    /// the ciphertext's length: no copy of the ciphertext is made first. On failure `out`
    /// is left unspecified and must be discarded.
    pub fn open_into(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        let Some(split) = sealed.len().checked_sub(TAG_LEN) else {
            return Err(CryptoError::AuthenticationFailed);
        };
        let (ciphertext, tag) = sealed.split_at(split);
        #[cfg(feature = "aws-lc")]
        if let Cipher::AwsLc(k) = &self.cipher {
            if out.len() != ciphertext.len() {
                return Err(CryptoError::AuthenticationFailed);
            }
            return lc::open_into(k, nonce, aad, ciphertext, tag, out);
        }
        let buf = InOutBuf::new(ciphertext, out).map_err(|_| CryptoError::AuthenticationFailed)?;
        let n = (*nonce).into();
        let Ok(tag) = <[u8; TAG_LEN]>::try_from(tag) else {
            return Err(CryptoError::AuthenticationFailed);
        };
        let tag = tag.into();
        match &self.cipher {
            Cipher::ChaCha(c) => c.decrypt_inout_detached(&n, aad, buf, &tag),
            Cipher::Aes128(c) => c.decrypt_inout_detached(&n, aad, buf, &tag),
            Cipher::Aes256(c) => c.decrypt_inout_detached(&n, aad, buf, &tag),
            // Answered above.
            #[cfg(feature = "aws-lc")]
            Cipher::AwsLc(_) => Err(aes_gcm::aead::Error),
        }
        .map_err(|_| CryptoError::AuthenticationFailed)
    }

    /// Check and decrypt ciphertext ‖ tag.
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut buf = sealed.to_vec();
        self.open_in_place(nonce, aad, &mut buf)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn chacha20_poly1305_matches_rfc8439_section_2_8_2() {
        let key = unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
        let nonce: [u8; 12] = unhex("070000004041424344454647").try_into().unwrap();
        let aad = unhex("50515253c0c1c2c3c4c5c6c7");
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let sealed = AeadKey::new(AeadAlg::ChaCha20Poly1305, &key)
            .unwrap()
            .seal(&nonce, &aad, plaintext);
        let tag = &sealed[sealed.len() - TAG_LEN..];
        assert_eq!(tag, unhex("1ae10b594f09e26a7e902ecbd0600691").as_slice());
        assert_eq!(&sealed[..4], unhex("d31a8d34").as_slice());
    }

    #[test]
    fn aes_gcm_matches_gcm_spec_test_case_4() {
        // McGrew & Viega, "The Galois/Counter Mode of Operation", test case 4 (AES-128).
        let key = unhex("feffe9928665731c6d6a8f9467308308");
        let nonce: [u8; 12] = unhex("cafebabefacedbaddecaf888").try_into().unwrap();
        let aad = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let pt = unhex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        );
        let sealed = AeadKey::new(AeadAlg::Aes128Gcm, &key)
            .unwrap()
            .seal(&nonce, &aad, &pt);
        assert_eq!(
            &sealed[pt.len()..],
            unhex("5bc94fbc3221a5db94fae95ae7121a47").as_slice()
        );
    }

    #[test]
    fn detached_seal_and_open_match_the_appended_tag_form() {
        for alg in AeadAlg::ALL {
            let key = AeadKey::new(alg, &alloc::vec![9u8; alg.key_len()]).unwrap();
            let nonce = [3u8; 12];
            let sealed = key.seal(&nonce, b"aad", b"in one buffer");
            let mut buf = b"in one buffer".to_vec();
            let tag = key
                .seal_in_place_detached(&nonce, b"aad", &mut buf)
                .unwrap();
            assert_eq!([&buf[..], &tag[..]].concat(), sealed);
            key.open_in_place_detached(&nonce, b"aad", &mut buf, &tag)
                .unwrap();
            assert_eq!(buf, b"in one buffer");
            let mut bad = tag;
            bad[0] ^= 1;
            let mut ct = sealed[..sealed.len() - TAG_LEN].to_vec();
            assert_eq!(
                key.open_in_place_detached(&nonce, b"aad", &mut ct, &bad),
                Err(CryptoError::AuthenticationFailed)
            );
        }
    }

    #[test]
    fn every_alg_round_trips_and_detects_tampering() {
        for alg in AeadAlg::ALL {
            let key = AeadKey::new(alg, &alloc::vec![7u8; alg.key_len()]).unwrap();
            let nonce = [1u8; 12];
            let sealed = key.seal(&nonce, b"aad", b"attack at dawn");
            assert_eq!(
                key.open(&nonce, b"aad", &sealed).unwrap(),
                b"attack at dawn"
            );
            for i in 0..sealed.len() {
                let mut bad = sealed.clone();
                bad[i] ^= 1;
                assert_eq!(
                    key.open(&nonce, b"aad", &bad),
                    Err(CryptoError::AuthenticationFailed)
                );
            }
            assert!(key.open(&nonce, b"AAD", &sealed).is_err());
            assert!(key.open(&[2u8; 12], b"aad", &sealed).is_err());
            assert!(key.open(&nonce, b"aad", &sealed[..10]).is_err());
            assert_eq!(AeadAlg::from_id(alg.id()), Some(alg));
            assert!(matches!(
                AeadKey::new(alg, &[0u8; 5]),
                Err(CryptoError::BadKeyLength { got: 5, .. })
            ));
        }
    }
}

//! SK payload tests. The known answers were computed independently with this Python 3
//! script (pyca `cryptography` for AES-CBC, AES-GCM and ChaCha20-Poly1305; `hmac`/`hashlib`
//! for the ICV); no IKE library was involved:
//!
//! ```python
//! import hmac, hashlib
//! from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
//! from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
//! spi_i = bytes(range(1, 9)); spi_r = bytes(range(0x11, 0x19))
//! def hdr(total): return spi_i + spi_r + bytes([46, 0x20, 37, 0x08]) + (2).to_bytes(4, "big") + total.to_bytes(4, "big")
//! inner = bytes([0, 0, 0, 8, 1, 0, 0, 0])          # Delete(IKE), the only inner payload
//! # AES-128-CBC + HMAC-SHA2-256-128: SK_ei = 01*16, SK_ai = 02*32, IV = 77*16
//! pt = inner + bytes(7) + bytes([7])
//! iv = bytes([0x77]) * 16
//! enc = Cipher(algorithms.AES(bytes([1]) * 16), modes.CBC(iv)).encryptor()
//! ct = enc.update(pt) + enc.finalize()
//! sk_len = 4 + 16 + len(ct) + 16
//! m = hdr(28 + sk_len) + bytes([42, 0]) + sk_len.to_bytes(2, "big") + iv + ct
//! m += hmac.new(bytes([2]) * 32, m, hashlib.sha256).digest()[:16]
//! print("cbc", m.hex())
//! # AEADs: IV = 0 (first message), plaintext = inner | pad length 0, AAD = IKE header | SK header
//! for name, aead, key, salt in (("gcm128", AESGCM, bytes([3]) * 16, bytes([4]) * 4),
//!                               ("chacha", ChaCha20Poly1305, bytes([5]) * 32, bytes([6]) * 4)):
//!     pt = inner + bytes([0]); iv = bytes(8)
//!     sk_len = 4 + 8 + len(pt) + 16
//!     aad = hdr(28 + sk_len) + bytes([42, 0]) + sk_len.to_bytes(2, "big")
//!     print(name, (aad + iv + aead(key).encrypt(salt + iv, pt, aad)).hex())
//! ```

use alloc::vec;
use alloc::vec::Vec;
use core::convert::Infallible;

use super::*;
use crate::crypto::dh::Group;
use crate::ikev2::codec::{Delete, ExchangeType, Flags, Message, Notify};
use crate::ikev2::consts::protocol;
use crate::ikev2::proposal::{Integ, Prf};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// An RNG that returns one byte value forever (to pin the CBC IV in known-answer tests).
struct Constant(u8);

impl rand_core::TryRng for Constant {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(u32::from_ne_bytes([self.0; 4]))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(u64::from_ne_bytes([self.0; 8]))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        dst.fill(self.0);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for Constant {}

use crate::ipsec::tests::unhex;

fn suite(encr: Encr) -> IkeSuite {
    IkeSuite {
        encr,
        integ: (!encr.is_aead()).then_some(Integ::HmacSha256_128),
        prf: Prf::HmacSha256,
        group: Group::X25519,
    }
}

fn keys(ei: &[u8], ai: &[u8]) -> IkeKeys {
    let s = |b: &[u8]| SecretBytes::from_slice(b);
    let mut er = ei.to_vec();
    er[0] ^= 0xff;
    let mut ar = ai.to_vec();
    if let Some(b) = ar.first_mut() {
        *b ^= 0xff;
    }
    IkeKeys {
        sk_d: s(&[9; 32]),
        sk_ai: s(ai),
        sk_ar: s(&ar),
        sk_ei: s(ei),
        sk_er: s(&er),
        sk_pi: s(&[10; 32]),
        sk_pr: s(&[11; 32]),
    }
}

fn header() -> Header {
    Header {
        spi_i: [1, 2, 3, 4, 5, 6, 7, 8],
        spi_r: [0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18],
        exchange: ExchangeType::Informational,
        flags: Flags {
            initiator: true,
            version: false,
            response: false,
        },
        message_id: 2,
    }
}

fn delete_ike() -> Vec<Payload> {
    vec![Payload::Delete(Delete {
        protocol: protocol::IKE,
        spi_size: 0,
        spis: vec![],
    })]
}

fn all_suites() -> Vec<(Encr, IkeKeys)> {
    let mut salted16 = vec![3u8; 16];
    salted16.extend_from_slice(&[4; 4]);
    let mut salted32 = vec![5u8; 32];
    salted32.extend_from_slice(&[6; 4]);
    let mut gcm256 = vec![7u8; 32];
    gcm256.extend_from_slice(&[8; 4]);
    vec![
        (Encr::AesCbc128, keys(&[1; 16], &[2; 32])),
        (Encr::AesGcm16_128, keys(&salted16, &[])),
        (Encr::ChaCha20Poly1305, keys(&salted32, &[])),
        (Encr::AesGcm16_256, keys(&gcm256, &[])),
    ]
}

#[test]
fn seal_matches_independent_python_vectors() {
    let want = [
        (
            Encr::AesCbc128,
            "010203040506070811121314151617182e20250800000002000000502a00003477777777777777777777777777777777a628e1e5b422e93badb4e8321c32046d49add04411b307aefd4f6e98ef44fe1e",
        ),
        (
            Encr::AesGcm16_128,
            "010203040506070811121314151617182e20250800000002000000412a0000250000000000000000bca3bf5c3fd41aa3aea2e8eaae994f38c3a9f673bd969168eb",
        ),
        (
            Encr::ChaCha20Poly1305,
            "010203040506070811121314151617182e20250800000002000000412a0000250000000000000000f7d63ce3c7bf7d7392da042c78a7f0cca6a8a9398ca928ced4",
        ),
    ];
    for (encr, hex) in want {
        let (_, k) = all_suites().into_iter().find(|(e, _)| *e == encr).unwrap();
        let mut c = SkCipher::new(&suite(encr), &k, true).unwrap();
        let sealed = c
            .seal(&header(), &delete_ike(), &mut Constant(0x77))
            .unwrap();
        assert_eq!(sealed, unhex(hex), "{encr}");
        // And the peer opens it.
        let peer = SkCipher::new(&suite(encr), &k, false).unwrap();
        let (h, inner) = peer.open(&sealed, &Limits::default()).unwrap();
        assert_eq!(h, header());
        assert_eq!(inner, delete_ike());
    }
}

#[test]
fn every_suite_round_trips_and_rejects_any_tampering() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    for (encr, k) in all_suites() {
        let mut me = SkCipher::new(&suite(encr), &k, true).unwrap();
        let peer = SkCipher::new(&suite(encr), &k, false).unwrap();
        for len in [0usize, 1, 15, 16, 17, 100] {
            let inner = if len == 0 {
                vec![]
            } else {
                vec![Payload::Notify(Notify::new(16384, vec![0xaa; len]))]
            };
            let sealed = me.seal(&header(), &inner, &mut rng).unwrap();
            let (_, got) = peer.open(&sealed, &Limits::default()).unwrap();
            assert_eq!(got, inner);
            // The header and the SK generic header are authenticated too.
            for i in 0..sealed.len() {
                let mut bad = sealed.clone();
                bad[i] ^= 0x01;
                assert!(
                    peer.open(&bad, &Limits::default()).is_err(),
                    "{encr} byte {i}"
                );
            }
            // A message from us cannot be opened as if it came from the peer.
            assert_eq!(
                me.open(&sealed, &Limits::default()).unwrap_err(),
                IkeError::IntegrityCheckFailed
            );
            // Truncation.
            let mut cut = sealed[..sealed.len() - 1].to_vec();
            let l = cut.len() as u32;
            cut[24..28].copy_from_slice(&l.to_be_bytes());
            let sk_len = (cut.len() - HEADER_LEN) as u16;
            cut[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&sk_len.to_be_bytes());
            assert!(peer.open(&cut, &Limits::default()).is_err());
        }
        if encr.is_aead() {
            // AEAD IVs count up, never repeat.
            let a = me.seal(&header(), &[], &mut rng).unwrap();
            let b = me.seal(&header(), &[], &mut rng).unwrap();
            assert_ne!(a[32..40], b[32..40]);
        }
    }
}

#[test]
fn opening_needs_an_sk_payload_and_valid_padding() {
    let (encr, k) = all_suites().remove(0);
    let peer = SkCipher::new(&suite(encr), &k, false).unwrap();
    let plain = Message {
        header: header(),
        payloads: vec![Payload::Vendor(vec![1])],
    }
    .encode()
    .unwrap();
    assert_eq!(
        peer.open(&plain, &Limits::default()).unwrap_err(),
        IkeError::MissingEncryptedPayload
    );
    // Too short for IV + one block + ICV.
    let short = Message {
        header: header(),
        payloads: vec![Payload::Encrypted(crate::ikev2::codec::Encrypted {
            first_inner: 0,
            data: vec![0; 40],
        })],
    }
    .encode()
    .unwrap();
    assert_eq!(
        peer.open(&short, &Limits::default()).unwrap_err(),
        IkeError::BadLength("SK payload")
    );
    assert!(matches!(
        SkCipher::new(&suite(Encr::AesCbc128), &keys(&[1; 15], &[2; 32]), true),
        Err(IkeError::Crypto(_))
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes handed to `open` never panic, for every suite.
    #[test]
    fn open_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), fix in proptest::prelude::any::<bool>()) {
        let mut data = data;
        if fix && data.len() >= HEADER_LEN {
            let l = data.len() as u32;
            data[17] = 0x20;
            data[16] = 46;
            data[24..28].copy_from_slice(&l.to_be_bytes());
        }
        for (encr, k) in all_suites() {
            let peer = SkCipher::new(&suite(encr), &k, false).unwrap();
            let _ = peer.open(&data, &Limits::default());
        }
    }
}

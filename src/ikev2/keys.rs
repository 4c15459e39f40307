//! The IKEv2 key schedule (RFC 7296 §2.13-§2.15, §2.17) with PRF_HMAC_SHA2_256.
//!
//! ```text
//! SKEYSEED = prf(Ni | Nr, g^ir)
//! {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)
//! AUTH     = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)
//!            SignedOctets = RealMessage | Nonce of the peer | prf(SK_px, RestOfIDPayload)
//! KEYMAT   = prf+(SK_d, [g^ir (new) |] Ni | Nr)
//! ```
//!
//! For AEAD suites SK_ai/SK_ar are empty and SK_ei/SK_er are key ‖ 4-octet salt
//! (RFC 5282 §7.1, RFC 7634 §3).

use alloc::vec::Vec;
use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::IkeError;
use super::proposal::{Encr, IkeSuite, Integ};
use crate::crypto::kdf::hmac_sha256_parts;
use crate::ipsec::{SaKeys, Suite};

/// Output length of PRF_HMAC_SHA2_256.
pub const PRF_LEN: usize = 32;

/// The label of the PSK key pad (§2.15).
pub const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// Secret octets: wiped on drop, compared in constant time, never printed.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Take ownership of `bytes`.
    pub fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(bytes)
    }

    /// Copy `bytes`.
    pub fn from_slice(bytes: &[u8]) -> SecretBytes {
        SecretBytes(bytes.to_vec())
    }

    /// The octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in octets.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no octets.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        crate::crypto::ct_eq(&self.0, &other.0)
    }
}

impl Eq for SecretBytes {}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

impl From<&[u8]> for SecretBytes {
    fn from(b: &[u8]) -> Self {
        SecretBytes::from_slice(b)
    }
}

/// prf(key, data₀ | data₁ | …) with HMAC-SHA256.
pub fn prf(key: &[u8], data: &[&[u8]]) -> Zeroizing<[u8; PRF_LEN]> {
    Zeroizing::new(hmac_sha256_parts(key, data))
}

/// prf+(key, seed₀ | seed₁ | …) truncated to `len` octets (§2.13):
/// `T1 = prf(K, S | 0x01)`, `Tn = prf(K, Tn-1 | S | n)`; at most 255 blocks.
pub fn prf_plus(key: &[u8], seed: &[&[u8]], len: usize) -> Result<SecretBytes, IkeError> {
    if len > 255 * PRF_LEN {
        return Err(IkeError::Crypto(crate::crypto::CryptoError::OutputTooLong));
    }
    let mut out = Vec::with_capacity(len + PRF_LEN);
    let mut t = Zeroizing::new([0u8; PRF_LEN]);
    let mut n: u8 = 1;
    while out.len() < len {
        let counter = [n];
        let mut parts: Vec<&[u8]> = Vec::with_capacity(seed.len() + 2);
        if n > 1 {
            parts.push(&t[..]);
        }
        parts.extend_from_slice(seed);
        parts.push(&counter);
        let block = prf(key, &parts);
        drop(parts);
        *t = *block;
        out.extend_from_slice(&t[..]);
        n = n.wrapping_add(1);
    }
    out.truncate(len);
    Ok(SecretBytes(out))
}

/// SKEYSEED = prf(Ni | Nr, g^ir). (For PRF_HMAC_SHA2_256 the whole nonces form the key.)
pub fn skeyseed(ni: &[u8], nr: &[u8], g_ir: &[u8]) -> SecretBytes {
    let mut key = Zeroizing::new(Vec::with_capacity(ni.len() + nr.len()));
    key.extend_from_slice(ni);
    key.extend_from_slice(nr);
    SecretBytes(prf(&key, &[g_ir]).to_vec())
}

/// SKEYSEED of a rekeyed IKE SA (RFC 7296 §2.18): `prf(SK_d (old), g^ir (new) | Ni | Nr)`
/// with the nonces of the CREATE_CHILD_SA exchange; the new SA's keys then come from
/// [`IkeKeys::derive`] with those nonces and the new SPIs.
pub fn skeyseed_rekey(sk_d_old: &[u8], g_ir: &[u8], ni: &[u8], nr: &[u8]) -> SecretBytes {
    SecretBytes(prf(sk_d_old, &[g_ir, ni, nr]).to_vec())
}

/// The seven IKE SA keys.
#[derive(Clone, PartialEq, Eq)]
pub struct IkeKeys {
    /// SK_d: derives Child SA keys.
    pub sk_d: SecretBytes,
    /// SK_ai: integrity, initiator → responder (empty for AEADs).
    pub sk_ai: SecretBytes,
    /// SK_ar: integrity, responder → initiator (empty for AEADs).
    pub sk_ar: SecretBytes,
    /// SK_ei: encryption (‖ salt for AEADs), initiator → responder.
    pub sk_ei: SecretBytes,
    /// SK_er: encryption (‖ salt for AEADs), responder → initiator.
    pub sk_er: SecretBytes,
    /// SK_pi: the initiator's AUTH computation.
    pub sk_pi: SecretBytes,
    /// SK_pr: the responder's AUTH computation.
    pub sk_pr: SecretBytes,
}

impl fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IkeKeys(..)")
    }
}

impl IkeKeys {
    /// Derive from SKEYSEED (§2.14).
    pub fn derive(
        suite: &IkeSuite,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: &[u8; 8],
        spi_r: &[u8; 8],
    ) -> Result<IkeKeys, IkeError> {
        let p = suite.prf.key_len();
        let a = suite.integ.map_or(0, |i| i.key_len());
        let e = suite.encr.key_len() + suite.encr.salt_len();
        let km = prf_plus(skeyseed, &[ni, nr, spi_i, spi_r], 3 * p + 2 * a + 2 * e)?;
        let mut at = 0;
        let mut take = |n: usize| {
            let s = SecretBytes::from_slice(&km.as_bytes()[at..at + n]);
            at += n;
            s
        };
        Ok(IkeKeys {
            sk_d: take(p),
            sk_ai: take(a),
            sk_ar: take(a),
            sk_ei: take(e),
            sk_er: take(e),
            sk_pi: take(p),
            sk_pr: take(p),
        })
    }
}

/// An IKE SA's message-protection keys, exported for a packet analyser (Wireshark's
/// "IKEv2 Decryption Table": SPIs, SK_ei/SK_er with the encryption algorithm, SK_ai/SK_ar
/// with the integrity algorithm). This is a debugging aid with a deliberately explicit
/// name: the actors hand it out only when [`super::IkeConfig::keep_keys_for_dissection`]
/// is set, its `Debug` prints no key, and the keys wipe themselves on drop. Child SA keys
/// need no such export: they are the [`SaKeys`] of the negotiated
/// [`crate::ipsec::ChildSa`].
#[derive(Clone, PartialEq, Eq)]
pub struct IkeDissectionKeys {
    /// The initiator's SPI.
    pub spi_i: [u8; 8],
    /// The responder's SPI.
    pub spi_r: [u8; 8],
    /// The SK payload's encryption algorithm.
    pub encr: Encr,
    /// Its integrity algorithm (None for AEADs).
    pub integ: Option<Integ>,
    /// SK_ei (‖ salt for AEADs).
    pub sk_ei: SecretBytes,
    /// SK_er (‖ salt for AEADs).
    pub sk_er: SecretBytes,
    /// SK_ai (empty for AEADs).
    pub sk_ai: SecretBytes,
    /// SK_ar (empty for AEADs).
    pub sk_ar: SecretBytes,
}

impl fmt::Debug for IkeDissectionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IkeDissectionKeys({}, ..)", self.encr)
    }
}

/// The PSK AUTH value (§2.15):
/// `prf(prf(psk, "Key Pad for IKEv2"), real_message | peer_nonce | prf(sk_p, id_body))`,
/// where `id_body` is the ID payload without its generic header.
pub fn psk_auth(
    psk: &[u8],
    real_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
) -> Zeroizing<[u8; PRF_LEN]> {
    let maced_id = prf(sk_p, &[id_body]);
    let key = prf(psk, &[KEY_PAD]);
    prf(&key[..], &[real_message, peer_nonce, &maced_id[..]])
}

/// Child SA keys from KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (§2.17), where Ni/Nr are
/// the nonces of the exchange that created the Child SA (IKE_AUTH: those of IKE_SA_INIT).
///
/// Returns (initiator → responder, responder → initiator) as the data plane's
/// [`SaKeys`]; each direction takes the encryption key (‖ 4-octet salt for AEADs) then the
/// integrity key, and the initiator's direction comes first.
pub fn child_keys(
    suite: Suite,
    sk_d: &[u8],
    g_ir_new: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
) -> Result<(SaKeys, SaKeys), IkeError> {
    let one = suite.encryption_key_len() + suite.integrity_key_len();
    let km = match g_ir_new {
        Some(g) => prf_plus(sk_d, &[g, ni, nr], 2 * one)?,
        None => prf_plus(sk_d, &[ni, nr], 2 * one)?,
    };
    let (i2r, r2i) = km.as_bytes().split_at(one);
    // The lengths are exact by construction; a mismatch would be a bug, reported as such.
    let split = |d: &[u8]| {
        SaKeys::from_keymat(suite, d).map_err(|_| IkeError::Unencodable("Child SA KEYMAT"))
    };
    Ok((split(i2r)?, split(r2i)?))
}

#[cfg(test)]
mod tests {
    //! Known answers computed independently with this Python 3 script (standard library
    //! `hmac` and `hashlib` only, no IKE code), run on 2025-era CPython:
    //!
    //! ```python
    //! import hmac, hashlib
    //! def prf(k, d): return hmac.new(k, d, hashlib.sha256).digest()
    //! def prf_plus(k, s, n):
    //!     out, t, i = b"", b"", 1
    //!     while len(out) < n:
    //!         t = prf(k, t + s + bytes([i])); out += t; i += 1
    //!     return out[:n]
    //! ni = bytes(range(32)); nr = bytes(range(32, 64))
    //! g_ir = bytes([0x5a]) * 32
    //! spi_i = bytes.fromhex("0102030405060708"); spi_r = bytes.fromhex("1112131415161718")
    //! skeyseed = prf(ni + nr, g_ir)
    //! print("skeyseed", skeyseed.hex())
    //! # aes128-sha256: SK_d 32 | SK_ai 32 | SK_ar 32 | SK_ei 16 | SK_er 16 | SK_pi 32 | SK_pr 32
    //! km = prf_plus(skeyseed, ni + nr + spi_i + spi_r, 192)
    //! print("ike_cbc", km.hex())
    //! # chacha20poly1305: SK_d 32 | SK_ei 36 | SK_er 36 | SK_pi 32 | SK_pr 32
    //! km2 = prf_plus(skeyseed, ni + nr + spi_i + spi_r, 168)
    //! print("ike_chacha", km2.hex())
    //! sk_d, sk_pi, sk_pr = km[0:32], km[128:160], km[160:192]
    //! real1 = bytes([0xaa]) * 100
    //! idi = bytes([2, 0, 0, 0]) + b"initiator.example"
    //! auth = prf(prf(b"test psk", b"Key Pad for IKEv2"), real1 + nr + prf(sk_pi, idi))
    //! print("auth_i", auth.hex())
    //! # ESP aes128-sha256: I->R enc 16 | I->R integ 32 | R->I enc 16 | R->I integ 32
    //! print("keymat_cbc", prf_plus(sk_d, ni + nr, 96).hex())
    //! # ESP aes128gcm16 with PFS g^ir(new) = 0x33 * 32: I->R key 16 | salt 4 | R->I key 16 | salt 4
    //! print("keymat_gcm_pfs", prf_plus(sk_d, bytes([0x33]) * 32 + ni + nr, 40).hex())
    //! # IKE SA rekey (§2.18): SK_d(old) = 0x44 * 32, g^ir(new) = 0x66 * 32, new SPIs
    //! seed = prf(bytes([0x44]) * 32, bytes([0x66]) * 32 + ni + nr)
    //! print("rekey_skeyseed", seed.hex())
    //! spi_i2 = bytes.fromhex("a1a2a3a4a5a6a7a8"); spi_r2 = bytes.fromhex("b1b2b3b4b5b6b7b8")
    //! print("rekey_km", prf_plus(seed, ni + nr + spi_i2 + spi_r2, 192).hex())
    //! ```
    use super::*;
    use crate::crypto::dh::Group;
    use crate::ikev2::proposal::{Encr, Integ, Prf};

    use crate::ipsec::tests::unhex;

    const SKEYSEED: &str = "0379be7a7260bb2f4a774c66f724cf2431b1c91f525b5dd0b5f64af76b74bf08";
    const IKE_KM: &str = "401a903abcde0224214750c56b0738f6fab40466c21aaebb168aa3ee7a1a04cf\
        aac60d19c10f07b69973707b7c107b6193d48488689e0a7484f0ad0b2f09e90a\
        fbd38066d9a8faa569cb248be97cf3c7f10a76846c7d083704dc4ae75999700a\
        8e58c69c53d648068cd64609874f720543049a2a8fd8eca1f128a0c29214036f\
        3279bc874e3f60bd8ee25e4032bd328fc4ffcd2f7aa36e602f440722cdc2e1b7\
        2849cfecc6164d02fa5c3b0390594ab6da69499ad50173737451a732723abbe6";
    const AUTH_I: &str = "9044d63f26554a5426025ce81ee5f6a6b350294bed81daf300a884a2ee5623f9";
    const KEYMAT_CBC: &str = "1e978031c309c3a9230e9d30f57edce2c0b37d97ea9afab1e6455bbb2818ee49\
        8dadb35c8450a188fa28f89d88b0b60804be12c275f8d15eda96f4e7efd57706\
        e90f71106c18758e69a0621272a4e82cb2fe8355fb68577d457ba30c3549a53b";
    const KEYMAT_GCM_PFS: &str =
        "914aac51f4aea09c87cb2bdf1079f1c9cfa4fe165b9de618392a5d5a64bea96003026b771cc6f809";

    const REKEY_SKEYSEED: &str = "5ebb807bfe7eedaad73291ecdfb05b6bf38c82153b2fb95997c4b77276d13ed8";
    const REKEY_KM: &str = "41d2727f2cbd7a26c3c0935843dc55655bee4837319ee0829c5ae3d4ce52a97d\
        30c3d7c93ab78746275f8acac204ca21ce72a1870ce90df370f3cd795b322869\
        55e3958c63d34d61edc438d0e848074972c442f6961a8b04788947a965e869b9\
        63c9663005160d1cc94ba6fcad48d6f3c32562695ea80ba838c0e76bb4bb2819\
        f7ae4b440d7a5002e515a64f620652505983eeeaf02f29272e13402c5ef4354a\
        0ad6ed573b1276e9cf3a42a86731479c50e392355b1f82fffd42ee7980b5fb2b";

    #[test]
    fn ike_rekey_key_schedule_matches_python() {
        let (ni, nr, _, _) = inputs();
        let seed = skeyseed_rekey(&[0x44; 32], &[0x66; 32], &ni, &nr);
        assert_eq!(seed.as_bytes(), unhex(REKEY_SKEYSEED));
        let k = IkeKeys::derive(
            &suite(Encr::AesCbc128, Some(Integ::HmacSha256_128)),
            seed.as_bytes(),
            &ni,
            &nr,
            &[0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8],
            &[0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8],
        )
        .unwrap();
        let km = unhex(REKEY_KM);
        assert_eq!(k.sk_d.as_bytes(), &km[0..32]);
        assert_eq!(k.sk_ai.as_bytes(), &km[32..64]);
        assert_eq!(k.sk_ei.as_bytes(), &km[96..112]);
        assert_eq!(k.sk_pr.as_bytes(), &km[160..192]);
    }

    fn inputs() -> (Vec<u8>, Vec<u8>, [u8; 8], [u8; 8]) {
        (
            (0u8..32).collect(),
            (32u8..64).collect(),
            [1, 2, 3, 4, 5, 6, 7, 8],
            [0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18],
        )
    }

    fn suite(encr: Encr, integ: Option<Integ>) -> IkeSuite {
        IkeSuite {
            encr,
            integ,
            prf: Prf::HmacSha256,
            group: Group::X25519,
        }
    }

    /// The keys of `suite(encr, integ)` from `seed` and the fixed `inputs()`.
    fn derive(seed: &SecretBytes, encr: Encr, integ: Option<Integ>) -> IkeKeys {
        let (ni, nr, spi_i, spi_r) = inputs();
        IkeKeys::derive(
            &suite(encr, integ),
            seed.as_bytes(),
            &ni,
            &nr,
            &spi_i,
            &spi_r,
        )
        .unwrap()
    }

    #[test]
    fn skeyseed_and_sk_keys_match_python() {
        let (ni, nr, _, _) = inputs();
        let seed = skeyseed(&ni, &nr, &[0x5a; 32]);
        assert_eq!(seed.as_bytes(), unhex(SKEYSEED));
        let km = unhex(IKE_KM);

        let k = derive(&seed, Encr::AesCbc128, Some(Integ::HmacSha256_128));
        let cuts = [32, 32, 32, 16, 16, 32, 32];
        let got = [
            &k.sk_d, &k.sk_ai, &k.sk_ar, &k.sk_ei, &k.sk_er, &k.sk_pi, &k.sk_pr,
        ];
        let mut at = 0;
        for (key, n) in got.iter().zip(cuts) {
            assert_eq!(key.as_bytes(), &km[at..at + n]);
            at += n;
        }

        // AEAD: no integrity keys; 32-octet key + 4-octet salt per direction.
        let k = derive(&seed, Encr::ChaCha20Poly1305, None);
        assert!(k.sk_ai.is_empty() && k.sk_ar.is_empty());
        assert_eq!(k.sk_d.as_bytes(), &km[0..32]);
        assert_eq!(k.sk_ei.as_bytes(), &km[32..68]);
        assert_eq!(k.sk_er.as_bytes(), &km[68..104]);
        assert_eq!(k.sk_pi.as_bytes(), &km[104..136]);
        assert_eq!(k.sk_pr.as_bytes(), &km[136..168]);

        let k = derive(&seed, Encr::AesGcm16_128, None);
        assert_eq!(k.sk_ei.as_bytes(), &km[32..52]);
        assert_eq!(k.sk_pr.as_bytes(), &km[104..136]);
    }

    #[test]
    fn psk_auth_matches_python() {
        let (ni, nr, _, _) = inputs();
        let seed = skeyseed(&ni, &nr, &[0x5a; 32]);
        let k = derive(&seed, Encr::AesCbc128, Some(Integ::HmacSha256_128));
        let id = crate::ikev2::codec::Identity::Fqdn("initiator.example".into());
        let auth = psk_auth(
            b"test psk",
            &[0xaa; 100],
            &nr,
            k.sk_pi.as_bytes(),
            &id.payload_body(),
        );
        assert_eq!(auth.as_slice(), unhex(AUTH_I));
    }

    #[test]
    fn child_keymat_matches_python() {
        let (ni, nr, _, _) = inputs();
        let km = unhex(IKE_KM);
        let sk_d = &km[..32];
        let (i2r, r2i) = child_keys(Suite::AesCbc128HmacSha256, sk_d, None, &ni, &nr).unwrap();
        let want = unhex(KEYMAT_CBC);
        // CBC: no salt, so the encryption key material is the AES key alone.
        assert_eq!(i2r.encryption, &want[0..16]);
        assert_eq!(i2r.integrity, &want[16..48]);
        assert_eq!(Suite::AesCbc128HmacSha256.salt_len(), 0);
        assert_eq!(r2i.encryption, &want[48..64]);
        assert_eq!(r2i.integrity, &want[64..96]);

        let (i2r, r2i) = child_keys(Suite::AesGcm128, sk_d, Some(&[0x33; 32]), &ni, &nr).unwrap();
        let want = unhex(KEYMAT_GCM_PFS);
        // AEAD: key ‖ salt in `encryption`.
        assert_eq!(&i2r.encryption[..16], &want[0..16]);
        assert_eq!(&i2r.encryption[16..], &want[16..20]);
        assert!(i2r.integrity.is_empty());
        assert_eq!(&r2i.encryption[..16], &want[20..36]);
        assert_eq!(&r2i.encryption[16..], &want[36..40]);
    }

    #[test]
    fn prf_plus_is_bounded_and_prefix_consistent() {
        let long = prf_plus(b"k", &[b"seed"], 255 * PRF_LEN).unwrap();
        let short = prf_plus(b"k", &[b"se", b"ed"], 40).unwrap();
        assert_eq!(&long.as_bytes()[..40], short.as_bytes());
        assert!(prf_plus(b"k", &[b"seed"], 255 * PRF_LEN + 1).is_err());
        assert_eq!(
            alloc::format!("{:?}", short),
            "SecretBytes(40 bytes)",
            "Debug never prints key material"
        );
    }
}

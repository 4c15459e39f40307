//! Sealing key material for one terminal with its provisioned delegation key.
//!
//! Every key a helper hands a terminal (seed 004's key generation and key responses, the
//! key transfers of seeds 001 and 003) travels as a sealed body: XChaCha20-Poly1305 under
//! the terminal's 32-byte delegation key, with a fresh random 24-byte nonce in front.
//!
//! Why XChaCha20-Poly1305 with random nonces: the sealer is a server that restarts and
//! serves many sessions; a counter would have to survive restarts to stay unique, while
//! 192 random bits never collide in practice. Why a second layer at all, inside a secure
//! channel: the channel may end at a box that is not the terminal (a relay, a logging
//! front end); the keys must be readable by the terminal alone.
//!
//! The associated data binds the body to where it travels: the message type, the
//! delegation session and the sequence number. A body lifted from one response and put
//! into another (a key-generation body into a key response, one session's keys into
//! another session) fails to open.

use alloc::vec::Vec;
use core::fmt;

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::KeyxError;

/// Length of a delegation key.
pub const KEY_LEN: usize = 32;
/// Length of the random nonce in front of a sealed body.
pub const NONCE_LEN: usize = 24;
/// Length of the authentication tag at its end.
pub const TAG_LEN: usize = 16;

const DOMAIN: &[u8] = b"deputy keyx sealed v1\0";

/// A terminal's delegation key: provisioned at the terminal and at the helpers that serve
/// it, used only to seal and open key material. Wiped on drop; `Debug` shows no bytes.
#[derive(Clone)]
pub struct DelegationKey(Zeroizing<[u8; KEY_LEN]>);

impl DelegationKey {
    /// The key with these bytes.
    pub fn new(bytes: [u8; KEY_LEN]) -> DelegationKey {
        DelegationKey(Zeroizing::new(bytes))
    }

    /// A fresh random key (for provisioning).
    pub fn generate(rng: &mut dyn CryptoRng) -> DelegationKey {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(&mut k[..]);
        DelegationKey(k)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&(*self.0).into())
    }
}

impl fmt::Debug for DelegationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DelegationKey(..)")
    }
}

/// Where a sealed body travels: it opens only in the same place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealContext {
    /// The message type that carries the body.
    pub msg_type: u8,
    /// The delegation session (the header's session id).
    pub session: u64,
    /// The message's sequence number.
    pub seq: u32,
}

impl SealContext {
    fn aad(&self) -> [u8; DOMAIN.len() + 1 + 8 + 4] {
        let mut aad = [0u8; DOMAIN.len() + 13];
        aad[..DOMAIN.len()].copy_from_slice(DOMAIN);
        let rest = &mut aad[DOMAIN.len()..];
        rest[0] = self.msg_type;
        rest[1..9].copy_from_slice(&self.session.to_be_bytes());
        rest[9..13].copy_from_slice(&self.seq.to_be_bytes());
        aad
    }
}

/// Seal `plaintext` for the terminal holding `key`: nonce ‖ ciphertext ‖ tag.
pub fn seal(
    key: &DelegationKey,
    ctx: SealContext,
    plaintext: &[u8],
    rng: &mut dyn CryptoRng,
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let mut body = out.split_off(NONCE_LEN);
    // Safe to discard: XChaCha20-Poly1305 fails only when the buffer cannot grow by the
    // tag (a `Vec` always can) or the plaintext exceeds 256 GiB, far above the field bound
    // any caller seals.
    let _ = key
        .cipher()
        .encrypt_in_place(&nonce.into(), &ctx.aad(), &mut body);
    out.append(&mut body);
    out
}

/// Open a body sealed by [`seal`] with the same key and context. The plaintext wipes itself
/// on drop.
pub fn open(
    key: &DelegationKey,
    ctx: SealContext,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyxError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(KeyxError::SealedTooShort(sealed.len()));
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| KeyxError::SealedTooShort(sealed.len()))?;
    let mut buf = Zeroizing::new(body.to_vec());
    key.cipher()
        .decrypt_in_place(&nonce.into(), &ctx.aad(), &mut *buf)
        .map_err(|_| KeyxError::SealedBodyRejected)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn ctx() -> SealContext {
        SealContext {
            msg_type: 0x67,
            session: 0x1122_3344_5566_7788,
            seq: 4,
        }
    }

    #[test]
    fn sealed_body_opens_with_the_same_key_and_context() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let key = DelegationKey::generate(&mut rng);
        let sealed = seal(&key, ctx(), b"SK_d and friends", &mut rng);
        assert_eq!(sealed.len(), NONCE_LEN + 16 + TAG_LEN);
        assert_eq!(
            &open(&key, ctx(), &sealed).unwrap()[..],
            b"SK_d and friends"
        );
        // Fresh nonce each time: the same plaintext never seals to the same bytes.
        assert_ne!(seal(&key, ctx(), b"SK_d and friends", &mut rng), sealed);
    }

    #[test]
    fn another_terminals_key_or_another_place_refuses_the_body() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let key = DelegationKey::generate(&mut rng);
        let other = DelegationKey::generate(&mut rng);
        let sealed = seal(&key, ctx(), b"keys", &mut rng);
        assert_eq!(
            open(&other, ctx(), &sealed),
            Err(KeyxError::SealedBodyRejected)
        );
        for moved in [
            SealContext {
                msg_type: 0x63,
                ..ctx()
            },
            SealContext {
                session: 1,
                ..ctx()
            },
            SealContext { seq: 5, ..ctx() },
        ] {
            assert_eq!(
                open(&key, moved, &sealed),
                Err(KeyxError::SealedBodyRejected)
            );
        }
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert_eq!(
            open(&key, ctx(), &flipped),
            Err(KeyxError::SealedBodyRejected)
        );
        assert_eq!(
            open(&key, ctx(), &sealed[..NONCE_LEN + TAG_LEN - 1]),
            Err(KeyxError::SealedTooShort(NONCE_LEN + TAG_LEN - 1))
        );
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let key = DelegationKey::new([0xAB; KEY_LEN]);
        assert_eq!(alloc::format!("{key:?}"), "DelegationKey(..)");
    }
}

//! The crypto layer: thin, typed wrappers over RustCrypto and dalek.
//!
//! Nothing here implements a primitive; it chooses parameters, checks inputs, and makes
//! secrets wipe themselves.
//!
//! - [`dh`]: X25519 and MODP-2048 Diffie-Hellman behind one interface.
//! - [`aead`]: ChaCha20-Poly1305, AES-128-GCM and AES-256-GCM.
//! - [`cert`]: Ed25519 keys and deputy's compact certificates, issuing and verification.
//! - [`kdf`]: the seed 002 master-secret formula (¶0088) and HKDF-SHA256.
//! - [`ct_eq`]: constant-time comparison for anything secret.

pub mod aead;
pub mod cert;
pub mod dh;
pub mod kdf;

pub use cert::CertError;

/// A cryptographic operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// AEAD authentication failed: the ciphertext, tag, nonce or associated data was altered,
    /// or the key is wrong.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// A key had the wrong length.
    #[error("bad key length {got} (want {want})")]
    BadKeyLength {
        /// The length given.
        got: usize,
        /// The length required.
        want: usize,
    },
    /// The peer's Diffie-Hellman public value is malformed or degenerate (wrong length,
    /// outside 2..p-2, or a low-order X25519 point).
    #[error("invalid Diffie-Hellman public value")]
    InvalidPublicValue,
    /// An Ed25519 public key or signature is malformed.
    #[error("malformed key or signature")]
    Malformed,
    /// An Ed25519 signature did not verify.
    #[error("bad signature")]
    BadSignature,
    /// The KDF was asked for more output than it can give.
    #[error("requested KDF output too long")]
    OutputTooLong,
    /// A plaintext or its associated data is beyond what the AEAD can seal (about 64 GiB
    /// for AES-GCM).
    #[error("input too long for the AEAD")]
    TooLong,
}

/// Compare two byte strings in constant time (for equal lengths).
///
/// The lengths themselves are not secret: unequal lengths return `false` at once. Use this
/// for MACs, passwords, pre-shared keys and anything else an attacker could probe byte by
/// byte.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Fill a fresh array from the RNG.
pub(crate) fn random_array<const N: usize>(rng: &mut dyn rand_core::CryptoRng) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill_bytes(&mut out);
    out
}

/// A generator of its own for an engine an actor runs (an IKE SA, a link's data plane),
/// seeded from the actor's: ChaCha20, so the engine's draws are as good as the actor's.
pub(crate) fn child_rng(rng: &mut crate::Rng) -> crate::Rng {
    use rand_core::SeedableRng;
    alloc::boxed::Box::new(rand_chacha::ChaCha20Rng::from_seed(random_array(
        &mut **rng,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_compares_contents_and_lengths() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secret!"));
        assert!(ct_eq(b"", b""));
    }
}

//! Diffie-Hellman: X25519 (the default) and MODP-2048 (RFC 3526 group 14), one interface.
//!
//! Groups carry their IKEv2 transform numbers (RFC 7296 §3.3.2, RFC 8031) so the channel,
//! the rendezvous protocol and IKEv2 all name them the same way.
//!
//! MODP-2048 is computed with RustCrypto's `crypto-bigint`: fixed-width 2048-bit integers in
//! Montgomery form, the modulus's parameters computed at compile time, and a constant-time
//! modular exponentiation (the time depends on the exponent's length, 256 bits, never on its
//! value). It is here for IKEv2 group 14 peers and the seed's classic g^a mod p, never as a
//! default. Its private exponent is 256 random bits (twice the group's ~112-bit strength,
//! RFC 7919 §5.2); the exponent and the shared value are wiped on drop, the exponentiation's
//! internal temporaries are not.

use alloc::vec::Vec;
use core::fmt;

use crypto_bigint::modular::ConstMontyForm;
use crypto_bigint::{U256, U2048};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::CryptoError;

/// A Diffie-Hellman group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    /// 2048-bit MODP group (RFC 3526 §3), IKEv2 group 14.
    Modp2048,
    /// Curve25519 (RFC 7748), IKEv2 group 31.
    X25519,
}

impl Group {
    /// Every supported group, strongest-and-cheapest first.
    pub const ALL: [Group; 2] = [Group::X25519, Group::Modp2048];

    /// The IKEv2 transform id (also used on deputy's wire).
    pub const fn id(self) -> u16 {
        match self {
            Group::Modp2048 => 14,
            Group::X25519 => 31,
        }
    }

    /// The group with this IKEv2 transform id.
    pub const fn from_id(id: u16) -> Option<Group> {
        match id {
            14 => Some(Group::Modp2048),
            31 => Some(Group::X25519),
            _ => None,
        }
    }

    /// Length of a public value and of the shared secret, in bytes.
    pub const fn public_len(self) -> usize {
        match self {
            Group::Modp2048 => 256,
            Group::X25519 => 32,
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Group::Modp2048 => "modp2048",
            Group::X25519 => "x25519",
        })
    }
}

/// RFC 3526 §3: the 2048-bit MODP prime, big-endian hex. Generator 2.
const MODP2048_P_HEX: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF";

/// The same prime as bytes (for the range check of a peer's public value).
const MODP2048_P: [u8; 256] = hex_literal(MODP2048_P_HEX.as_bytes());

const fn hex_literal<const N: usize>(hex: &[u8]) -> [u8; N] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("not hex"),
        }
    }
    assert!(hex.len() == 2 * N);
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = (nibble(hex[2 * i]) << 4) | nibble(hex[2 * i + 1]);
        i += 1;
    }
    out
}

/// The 2048-bit MODP prime (RFC 3526 §3), as a `crypto-bigint` modulus with its Montgomery
/// parameters computed at compile time. Generator 2. In a module of its own because the
/// macro declares a public type, which is no part of deputy's API.
mod modulus {
    crypto_bigint::const_monty_params!(
        Modp2048,
        crypto_bigint::U2048,
        super::MODP2048_P_HEX,
        "RFC 3526 §3: the 2048-bit MODP prime"
    );
}

/// An element of the MODP-2048 group in Montgomery form.
type Element = ConstMontyForm<modulus::Modp2048, { U2048::LIMBS }>;

enum Secret {
    X25519(x25519_dalek::EphemeralSecret),
    /// The exponent, big-endian.
    Modp(Zeroizing<Vec<u8>>),
}

/// An ephemeral key pair: our secret and the public value to send.
pub struct KeyPair {
    group: Group,
    secret: Secret,
    public: Vec<u8>,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("group", &self.group)
            .field("public_len", &self.public.len())
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh key pair in `group`.
    pub fn generate(group: Group, rng: &mut dyn CryptoRng) -> KeyPair {
        match group {
            Group::X25519 => {
                let secret = x25519_dalek::EphemeralSecret::random_from_rng(rng);
                let public = x25519_dalek::PublicKey::from(&secret).as_bytes().to_vec();
                KeyPair {
                    group,
                    secret: Secret::X25519(secret),
                    public,
                }
            }
            Group::Modp2048 => {
                let mut exponent = Zeroizing::new(alloc::vec![0u8; 32]);
                rng.fill_bytes(&mut exponent);
                // Never zero, never one: force the top bit so the exponent has full size.
                exponent[0] |= 0x80;
                let public = modp_pow(&U2048::from_u8(2), &exponent);
                KeyPair {
                    group,
                    secret: Secret::Modp(exponent),
                    public,
                }
            }
        }
    }

    /// The group.
    pub fn group(&self) -> Group {
        self.group
    }

    /// Our public value (`group.public_len()` bytes; MODP is big-endian, zero-padded).
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// Combine our secret with the peer's public value. Consumes the key pair: ephemeral
    /// secrets are used once.
    ///
    /// Rejects public values of the wrong length, MODP values outside `2..=p-2`, and X25519
    /// points of small order (all-zero shared secret).
    pub fn agree(self, peer_public: &[u8]) -> Result<SharedSecret, CryptoError> {
        if peer_public.len() != self.group.public_len() {
            return Err(CryptoError::InvalidPublicValue);
        }
        match self.secret {
            Secret::X25519(secret) => {
                let mut peer = [0u8; 32];
                peer.copy_from_slice(peer_public);
                let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
                if !shared.was_contributory() {
                    return Err(CryptoError::InvalidPublicValue);
                }
                Ok(SharedSecret(Zeroizing::new(shared.as_bytes().to_vec())))
            }
            Secret::Modp(exponent) => {
                // The length was checked above: exactly 256 bytes. The range check looks at
                // a public value only, so it need not be constant-time.
                let y = U2048::from_be_slice(peer_public);
                let p_minus_one = U2048::from_be_slice(&MODP2048_P).wrapping_sub(&U2048::ONE);
                if y <= U2048::ONE || y >= p_minus_one {
                    return Err(CryptoError::InvalidPublicValue);
                }
                Ok(SharedSecret(Zeroizing::new(modp_pow(&y, &exponent))))
            }
        }
    }
}

/// `base^exponent mod p` (`base < p`), as 256 big-endian bytes: a constant-time
/// exponentiation over all 256 bits of the exponent (its top bit is always set, so no
/// shorter exponent exists to leak).
fn modp_pow(base: &U2048, exponent: &[u8]) -> Vec<u8> {
    let exponent = Zeroizing::new(U256::from_be_slice(exponent));
    let value = Zeroizing::new(Element::new(base).pow(&exponent).retrieve());
    value.to_be_bytes().as_ref().to_vec()
}

/// The Diffie-Hellman shared secret (g^ab), wiped on drop.
pub struct SharedSecret(Zeroizing<Vec<u8>>);

impl SharedSecret {
    /// The secret bytes (X25519: 32; MODP-2048: 256, big-endian, zero-padded).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedSecret({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn both_groups_agree() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for group in Group::ALL {
            let a = KeyPair::generate(group, &mut rng);
            let b = KeyPair::generate(group, &mut rng);
            assert_eq!(a.public().len(), group.public_len());
            let (pa, pb) = (a.public().to_vec(), b.public().to_vec());
            let sa = a.agree(&pb).unwrap();
            let sb = b.agree(&pa).unwrap();
            assert_eq!(sa.as_bytes(), sb.as_bytes());
            assert_eq!(sa.as_bytes().len(), group.public_len());
            assert_eq!(Group::from_id(group.id()), Some(group));
        }
    }

    #[test]
    fn degenerate_public_values_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let kp = || KeyPair::generate(Group::X25519, &mut ChaCha20Rng::seed_from_u64(3));
        assert_eq!(
            kp().agree(&[0u8; 32]).unwrap_err(),
            CryptoError::InvalidPublicValue
        );
        assert_eq!(
            kp().agree(&[9u8; 31]).unwrap_err(),
            CryptoError::InvalidPublicValue
        );

        let mut one = [0u8; 256];
        one[255] = 1;
        let mut p_minus_one = MODP2048_P;
        p_minus_one[255] -= 1;
        for bad in [[0u8; 256], one, p_minus_one, MODP2048_P, [0xff; 256]] {
            let kp = KeyPair::generate(Group::Modp2048, &mut rng);
            assert_eq!(kp.agree(&bad).unwrap_err(), CryptoError::InvalidPublicValue);
        }
    }
}

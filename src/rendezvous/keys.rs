//! Keys: registration keys, the password, and the devices' end-to-end key schedule.
//!
//! ```text
//! registration key  = HMAC-SHA256(master, "deputy rendezvous registration v1\0" ‖ device id)
//! transcript        = SHA-256("deputy rendezvous e2e v1\0" ‖ request ‖ device ‖
//!                             issuer share ‖ issuer random ‖ acceptor share ‖ acceptor random)
//! acceptor proof    = Ed25519_device_key("deputy rendezvous acceptor v1\0" ‖ transcript)
//! prk               = HKDF-Extract(salt = transcript, X25519(issuer, acceptor))
//!   seal key, link key, channel PSK = HKDF-Expand-Label(prk, "rendezvous seal" | "link" | "psk")
//! sealed password   = ChaCha20-Poly1305(seal key, nonce 0, aad = transcript,
//!                                       len ‖ password ‖ zero padding to 65 bytes)
//! ```
//!
//! The server relays both shares but holds neither secret, so it can compute none of
//! these keys; the acceptor's signature covers the issuer's share as the acceptor received
//! it, so the server cannot substitute its own share for either side.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::DeviceId;
use crate::crypto::aead::{AeadAlg, AeadKey, NONCE_LEN};
use crate::crypto::cert::SigningKeyPair;
use crate::crypto::dh::{Group, KeyPair};
use crate::crypto::kdf::{HmacSha256Key, Prk, hmac_sha256};
use crate::crypto::{CryptoError, ct_eq};

const REGISTRATION_LABEL: &[u8] = b"deputy rendezvous registration v1\0";
const TRANSCRIPT_CONTEXT: &[u8] = b"deputy rendezvous e2e v1\0";
pub(crate) const ACCEPTOR_SIGN_CONTEXT: &[u8] = b"deputy rendezvous acceptor v1\0";
const PADDED_PASSWORD_LEN: usize = 1 + Password::MAX_LEN;

/// A device's registration key: authenticates its registrations and the server's notices.
#[derive(Clone)]
pub struct RegistrationKey(Zeroizing<[u8; 32]>);

impl RegistrationKey {
    /// A key from its 32 bytes (provisioning).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        RegistrationKey(Zeroizing::new(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for RegistrationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RegistrationKey(..)")
    }
}

/// Where the server finds each device's registration key.
pub trait RegistrationKeys {
    /// The key for `device`, or `None` if the device is unknown.
    fn key(&self, device: DeviceId) -> Option<RegistrationKey>;
}

/// Registration keys derived from one master secret: the manufacturer provisions each
/// device with [`DerivedRegistrationKeys::device_key`] and the server keeps only the
/// master, so a directory of a million devices needs no key table.
pub struct DerivedRegistrationKeys {
    /// The master made ready as an HMAC key once: a derivation clones its states instead
    /// of hashing the padded master twice per device (sha2 wipes them on drop).
    master: HmacSha256Key,
}

impl fmt::Debug for DerivedRegistrationKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivedRegistrationKeys(..)")
    }
}

impl DerivedRegistrationKeys {
    /// Keys derived from `master`.
    pub fn new(master: [u8; 32]) -> Self {
        let master = Zeroizing::new(master);
        DerivedRegistrationKeys {
            master: HmacSha256Key::new(&*master),
        }
    }

    /// The key to provision into `device`.
    pub fn device_key(&self, device: DeviceId) -> RegistrationKey {
        let mac = self
            .master
            .mac_parts(&[REGISTRATION_LABEL, &device.0.to_be_bytes()]);
        RegistrationKey::from_bytes(mac)
    }
}

impl RegistrationKeys for DerivedRegistrationKeys {
    fn key(&self, device: DeviceId) -> Option<RegistrationKey> {
        Some(self.device_key(device))
    }
}

impl<T: RegistrationKeys + ?Sized> RegistrationKeys for Box<T> {
    fn key(&self, device: DeviceId) -> Option<RegistrationKey> {
        (**self).key(device)
    }
}

/// The acceptor's password, kept only as a salted HMAC verifier (the plaintext is wiped
/// as soon as the verifier is made). Checking a candidate compares two 32-byte MACs in
/// constant time, so neither the content nor the length of the password leaks.
pub struct Password {
    salt: Zeroizing<[u8; 32]>,
    verifier: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    /// The shortest password (bytes).
    pub const MIN_LEN: usize = 1;
    /// The longest password (bytes).
    pub const MAX_LEN: usize = 64;

    /// Whether `password` is acceptable: [`Password::MIN_LEN`] to [`Password::MAX_LEN`]
    /// bytes (any bytes). [`Password::new`] and an issuer's
    /// [`connect`](super::Issuer::connect) refuse anything else with
    /// [`RendezvousError::BadPassword`](super::RendezvousError::BadPassword); a user
    /// interface can check first.
    pub fn check(password: &[u8]) -> Result<(), crate::Error> {
        check_password(password).map_err(Into::into)
    }

    /// A verifier for `password` ([`Password::check`] says which are accepted).
    ///
    /// ```
    /// use deputy::rendezvous::Password;
    /// use rand_core::SeedableRng;
    ///
    /// let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    /// let password = Password::new(b"2133-secret", &mut rng)?;
    /// assert!(password.matches(b"2133-secret"));
    /// assert!(Password::check(&[b'x'; Password::MAX_LEN + 1]).is_err());
    /// # Ok::<(), deputy::Error>(())
    /// ```
    pub fn new(password: &[u8], rng: &mut dyn CryptoRng) -> Result<Self, crate::Error> {
        check_password(password)?;
        let mut salt = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *salt);
        let verifier = Zeroizing::new(hmac_sha256(&*salt, password));
        Ok(Password { salt, verifier })
    }

    /// Whether `candidate` is the password (constant time).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let mac = Zeroizing::new(hmac_sha256(&*self.salt, candidate));
        ct_eq(&*mac, &*self.verifier)
    }
}

pub(crate) fn check_password(password: &[u8]) -> Result<(), super::RendezvousError> {
    if !(Password::MIN_LEN..=Password::MAX_LEN).contains(&password.len()) {
        return Err(super::RendezvousError::BadPassword);
    }
    Ok(())
}

/// One side's contribution to the end-to-end exchange.
pub(crate) struct Share {
    pub key_pair: KeyPair,
    pub public: [u8; 32],
    pub random: [u8; 32],
}

impl Share {
    pub(crate) fn generate(rng: &mut dyn CryptoRng) -> Share {
        let key_pair = KeyPair::generate(Group::X25519, rng);
        let mut public = [0u8; 32];
        public.copy_from_slice(key_pair.public());
        let mut random = [0u8; 32];
        rng.fill_bytes(&mut random);
        Share {
            key_pair,
            public,
            random,
        }
    }
}

/// The public values both devices hash into the transcript.
pub(crate) struct TranscriptInput<'a> {
    pub request: u64,
    pub device: DeviceId,
    pub issuer_share: &'a [u8; 32],
    pub issuer_random: &'a [u8; 32],
    pub acceptor_share: &'a [u8; 32],
    pub acceptor_random: &'a [u8; 32],
}

impl TranscriptInput<'_> {
    pub(crate) fn hash(&self) -> [u8; 32] {
        Sha256::new()
            .chain_update(TRANSCRIPT_CONTEXT)
            .chain_update(self.request.to_be_bytes())
            .chain_update(self.device.0.to_be_bytes())
            .chain_update(self.issuer_share)
            .chain_update(self.issuer_random)
            .chain_update(self.acceptor_share)
            .chain_update(self.acceptor_random)
            .finalize()
            .into()
    }
}

/// The acceptor's signature over the transcript.
pub(crate) fn sign_transcript(key: &SigningKeyPair, transcript: &[u8; 32]) -> [u8; 64] {
    key.sign(ACCEPTOR_SIGN_CONTEXT, transcript)
}

/// The keys two devices share once the exchange is done.
pub(crate) struct SessionKeys {
    transcript: [u8; 32],
    seal: Zeroizing<[u8; 32]>,
    pub link: Zeroizing<[u8; 32]>,
    pub psk: Zeroizing<[u8; 32]>,
}

impl SessionKeys {
    /// Combine our key pair with the peer's public value, bound to the transcript.
    pub(crate) fn derive(
        ours: KeyPair,
        peer_public: &[u8; 32],
        transcript: [u8; 32],
    ) -> Result<SessionKeys, CryptoError> {
        let dh = ours.agree(peer_public)?;
        let prk = Prk::extract(&transcript, dh.as_bytes());
        let mut keys = SessionKeys {
            transcript,
            seal: Zeroizing::new([0; 32]),
            link: Zeroizing::new([0; 32]),
            psk: Zeroizing::new([0; 32]),
        };
        prk.expand_label("rendezvous seal", &[], &mut *keys.seal)?;
        prk.expand_label("rendezvous link", &[], &mut *keys.link)?;
        prk.expand_label("rendezvous psk", &[], &mut *keys.psk)?;
        Ok(keys)
    }

    fn aead(&self) -> Result<AeadKey, CryptoError> {
        AeadKey::new(AeadAlg::ChaCha20Poly1305, &*self.seal)
    }

    /// Seal the password, padded so its length does not show.
    pub(crate) fn seal_password(&self, password: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut padded = Zeroizing::new([0u8; PADDED_PASSWORD_LEN]);
        let len = password.len().min(Password::MAX_LEN);
        padded[0] = len as u8;
        padded[1..=len].copy_from_slice(&password[..len]);
        // Each seal key is used exactly once, so a zero nonce is safe.
        Ok(self
            .aead()?
            .seal(&[0; NONCE_LEN], &self.transcript, &*padded))
    }

    /// Open a sealed password: the candidate bytes, wiped on drop.
    pub(crate) fn open_password(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let padded = Zeroizing::new(self.aead()?.open(
            &[0; NONCE_LEN],
            &self.transcript,
            sealed,
        )?);
        let len = *padded.first().ok_or(CryptoError::AuthenticationFailed)? as usize;
        if padded.len() != PADDED_PASSWORD_LEN || len > Password::MAX_LEN {
            return Err(CryptoError::AuthenticationFailed);
        }
        Ok(Zeroizing::new(padded[1..=len].to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn derived_keys_differ_per_device_and_master() {
        let a = DerivedRegistrationKeys::new([1; 32]);
        let b = DerivedRegistrationKeys::new([2; 32]);
        let k1 = a.device_key(DeviceId(2133));
        assert_eq!(a.key(DeviceId(2133)).unwrap().as_bytes(), k1.as_bytes());
        assert_ne!(a.device_key(DeviceId(2134)).as_bytes(), k1.as_bytes());
        assert_ne!(b.device_key(DeviceId(2133)).as_bytes(), k1.as_bytes());
        assert_eq!(format!("{k1:?}"), "RegistrationKey(..)");
    }

    #[test]
    fn password_verifier_matches_only_the_password() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let pw = Password::new(b"open sesame", &mut rng).unwrap();
        assert!(pw.matches(b"open sesame"));
        assert!(!pw.matches(b"open sesamE"));
        assert!(!pw.matches(b"open sesame "));
        assert!(!pw.matches(b""));
        assert_eq!(
            Password::new(b"", &mut rng).map(|_| ()),
            Err(super::super::RendezvousError::BadPassword.into())
        );
        assert_eq!(
            Password::new(&[b'x'; 65], &mut rng).map(|_| ()),
            Err(super::super::RendezvousError::BadPassword.into())
        );
        assert!(Password::new(&[b'x'; 64], &mut rng).is_ok());
        assert!(!format!("{pw:?}").contains("sesame"));
    }

    #[test]
    fn both_sides_derive_the_same_keys_and_the_seal_hides_the_length() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let issuer = Share::generate(&mut rng);
        let acceptor = Share::generate(&mut rng);
        let transcript = TranscriptInput {
            request: 5,
            device: DeviceId(2133),
            issuer_share: &issuer.public,
            issuer_random: &issuer.random,
            acceptor_share: &acceptor.public,
            acceptor_random: &acceptor.random,
        }
        .hash();
        let i = SessionKeys::derive(issuer.key_pair, &acceptor.public, transcript).unwrap();
        let a = SessionKeys::derive(acceptor.key_pair, &issuer.public, transcript).unwrap();
        assert_eq!(*i.link, *a.link);
        assert_eq!(*i.psk, *a.psk);
        assert_ne!(*i.link, *i.psk);
        let short = i.seal_password(b"a").unwrap();
        let long = i.seal_password(&[b'z'; 64]).unwrap();
        assert_eq!(short.len(), long.len());
        assert_eq!(&*a.open_password(&short).unwrap(), b"a");
        assert_eq!(&*a.open_password(&long).unwrap(), &[b'z'; 64]);
        let mut bad = short.clone();
        bad[3] ^= 1;
        assert_eq!(
            a.open_password(&bad).map(|_| ()),
            Err(CryptoError::AuthenticationFailed)
        );
        // A different transcript (another request) cannot open it.
        let other =
            SessionKeys::derive(Share::generate(&mut rng).key_pair, &issuer.public, [0; 32])
                .unwrap();
        assert!(other.open_password(&short).is_err());
    }
}

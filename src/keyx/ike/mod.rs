//! Seed 004 applied to IKEv2: the substitution server's IKE work ([`IkeSubstitute`]) and
//! the delegating terminal ([`Terminal`]).
//!
//! The split (docs/keyx.md, "The mapping onto IKEv2"): the server runs the Diffie-Hellman,
//! holds SK_pi, SK_pr and the long-term credential, builds the IKE_SA_INIT message that
//! carries its key share, and computes and checks AUTH. The terminal talks to the peer from
//! its own address with the crate's ordinary IKE session code: framing, retransmission,
//! the SK payload with SK_e/SK_a (released, sealed, at key generation), the Child SA from
//! SK_d (released, sealed, at the key response, only after the peer was authenticated and
//! the policy database allowed it), INFORMATIONAL and Child SA rekeys without PFS.
//!
//! The sealed bodies this module defines (plaintext inside [`super::seal`]):
//!
//! | body | carried in | layout |
//! |---|---|---|
//! | IKE SA protection keys | KeyGenResponse | SK_ei ‖ SK_er ‖ SK_ai ‖ SK_ar, each a u16 length and its octets |
//! | SK_d | KeyResponse | SK_d as a u16 length and its octets |
//! | g^ir of an IKE SA rekey | KeyGenResponse of a rekey session | g^ir as a u16 length and its octets (X25519: 32, MODP-2048: 256) |

pub mod server;
pub mod terminal;

pub use server::{IkeProfile, IkeSubstitute, IkeSubstituteCounters};
pub use terminal::{Terminal, TerminalConfig, TerminalEvent, TerminalFailure};

use alloc::vec::Vec;

use zeroize::Zeroizing;

use super::KeyxError;
use crate::ikev2::keys::{IkeKeys, SecretBytes};

/// Append `bytes` with a u16 length in front.
fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys are at most 64 octets; the length always fits.
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Longest key field: SK_* are at most 64 octets.
const MAX_KEY: usize = 64;
/// Longest shared secret: MODP-2048's 256 octets.
const MAX_SHARED: usize = 256;

/// Take one u16-length-prefixed key field off the front of `input`.
fn take<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], KeyxError> {
    take_at_most(input, MAX_KEY)
}

/// Take one u16-length-prefixed field of at most `max` octets off the front of `input`.
fn take_at_most<'a>(input: &mut &'a [u8], max: usize) -> Result<&'a [u8], KeyxError> {
    let (len, rest) = input
        .split_first_chunk::<2>()
        .ok_or(KeyxError::BadKeyBody)?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len || len > max {
        return Err(KeyxError::BadKeyBody);
    }
    let (field, rest) = rest.split_at(len);
    *input = rest;
    Ok(field)
}

/// The IKE SA protection keys of a key generation response (S39), before sealing.
pub(crate) fn encode_sk(keys: &IkeKeys) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(4 * 34));
    for k in [&keys.sk_ei, &keys.sk_er, &keys.sk_ai, &keys.sk_ar] {
        put(&mut out, k.as_bytes());
    }
    out
}

/// The IKE SA protection keys, opened: an [`IkeKeys`] whose SK_d, SK_pi and SK_pr are
/// empty (they stay at the server).
pub(crate) fn decode_sk(mut body: &[u8]) -> Result<IkeKeys, KeyxError> {
    let sk_ei = SecretBytes::from_slice(take(&mut body)?);
    let sk_er = SecretBytes::from_slice(take(&mut body)?);
    let sk_ai = SecretBytes::from_slice(take(&mut body)?);
    let sk_ar = SecretBytes::from_slice(take(&mut body)?);
    if !body.is_empty() {
        return Err(KeyxError::BadKeyBody);
    }
    Ok(IkeKeys {
        sk_d: SecretBytes::new(Vec::new()),
        sk_ai,
        sk_ar,
        sk_ei,
        sk_er,
        sk_pi: SecretBytes::new(Vec::new()),
        sk_pr: SecretBytes::new(Vec::new()),
    })
}

/// SK_d for a key response (S48), before sealing.
pub(crate) fn encode_sk_d(sk_d: &SecretBytes) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(34));
    put(&mut out, sk_d.as_bytes());
    out
}

/// SK_d, opened.
pub(crate) fn decode_sk_d(mut body: &[u8]) -> Result<SecretBytes, KeyxError> {
    let sk_d = SecretBytes::from_slice(take(&mut body)?);
    if !body.is_empty() || sk_d.is_empty() {
        return Err(KeyxError::BadKeyBody);
    }
    Ok(sk_d)
}

/// g^ir of a delegated IKE SA rekey, before sealing.
pub(crate) fn encode_shared(g_ir: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(2 + g_ir.len()));
    put(&mut out, g_ir);
    out
}

/// g^ir, opened.
pub(crate) fn decode_shared(mut body: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyxError> {
    let g_ir = Zeroizing::new(take_at_most(&mut body, MAX_SHARED)?.to_vec());
    if !body.is_empty() || g_ir.is_empty() {
        return Err(KeyxError::BadKeyBody);
    }
    Ok(g_ir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bodies_round_trip_and_refuse_damage() {
        let keys = IkeKeys {
            sk_d: SecretBytes::from_slice(&[1; 32]),
            sk_ai: SecretBytes::from_slice(&[2; 32]),
            sk_ar: SecretBytes::from_slice(&[3; 32]),
            sk_ei: SecretBytes::from_slice(&[4; 16]),
            sk_er: SecretBytes::from_slice(&[5; 16]),
            sk_pi: SecretBytes::from_slice(&[6; 32]),
            sk_pr: SecretBytes::from_slice(&[7; 32]),
        };
        let body = encode_sk(&keys);
        let back = decode_sk(&body).unwrap();
        assert_eq!(back.sk_ei.as_bytes(), &[4; 16]);
        assert_eq!(back.sk_ar.as_bytes(), &[3; 32]);
        assert!(back.sk_d.is_empty() && back.sk_pi.is_empty() && back.sk_pr.is_empty());
        for cut in 0..body.len() {
            assert_eq!(decode_sk(&body[..cut]).err(), Some(KeyxError::BadKeyBody));
        }
        let mut long = body.to_vec();
        long.push(0);
        assert_eq!(decode_sk(&long).err(), Some(KeyxError::BadKeyBody));
        let d = encode_sk_d(&keys.sk_d);
        assert_eq!(decode_sk_d(&d).unwrap().as_bytes(), &[1; 32]);
        assert_eq!(decode_sk_d(&[0, 0]).err(), Some(KeyxError::BadKeyBody));
        let g = encode_shared(&[9; 256]);
        assert_eq!(&decode_shared(&g).unwrap()[..], &[9; 256]);
        assert_eq!(decode_shared(&g[..100]).err(), Some(KeyxError::BadKeyBody));
        assert_eq!(
            decode_shared(&encode_shared(&[9; 257])).err(),
            Some(KeyxError::BadKeyBody)
        );
    }
}

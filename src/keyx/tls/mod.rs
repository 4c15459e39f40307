//! Seed 004 applied to TLS 1.3 (the seed's Fig. 14, S321-S331 at the terminal and
//! S351-S358 at the server): the substitution server runs the handshake with rustls
//! ([`TlsSubstitute`], feature `tls`), the terminal relays the handshake bytes over its own
//! TCP connection and then runs the record layer itself ([`Terminal`], no `std` needed).
//!
//! The split is the one Linux kTLS uses, here between two devices: the server keeps the
//! handshake secrets and the session for the connection's life; the terminal gets only
//! what a kTLS socket takes (per direction: AEAD key, IV, record sequence number), sealed
//! with its delegation key. Post-handshake messages go back to the server in relays: a
//! KeyUpdate brings the next key of that direction, a NewSessionTicket is stored there for
//! resumption.
//!
//! The four pairs on the TLS 1.3 flights (the seed's order changes: the key share rides in
//! the ClientHello, so key generation comes before authentication):
//!
//! | pair | terminal as client (Fig. 14) | terminal as server |
//! |---|---|---|
//! | start S321/S351 | suites the terminal runs, server name; the server checks the policy database for the name and picks the suites | the peer's ClientHello; the server runs it and picks the suite |
//! | key generation S327/S355 | the server builds the ClientHello (its key share) for the terminal to send (S323); a HelloRetryRequest loops back here | the server's flight (ServerHello … Finished), or a HelloRetryRequest (the next ClientHello loops back here) |
//! | authentication S325/S353 | the peer's ServerHello and encrypted flight; the server verifies the chain, CertificateVerify and Finished, and answers our Finished | the client's flight (certificate and Finished); the server verifies it, checks the policy database for the client's certificate, and answers its tickets |
//! | key S330/S357 | both directions' traffic keys, sealed (S331: the record layer starts) | the same |
//!
//! The sealed bodies and relays this module defines (plaintext inside [`super::seal`]):
//!
//! | body | carried in | layout |
//! |---|---|---|
//! | traffic keys | KeyResponse, and a Relay answer | suite (u16) ‖ which (u8: 1 send, 2 receive, 3 both) ‖ per direction present, send first: key length (u8) ‖ key ‖ IV (12) ‖ sequence number (u64) |
//! | relay request | Relay from the terminal | kind (u8) ‖ bytes: 1 = a handshake message the peer sent after the handshake (KeyUpdate, NewSessionTicket), whole; 2 = the terminal is about to send KeyUpdate (one octet: request_update); 3 = the connection ended |
//!
//! The directions are the terminal's: "send" protects what the terminal sends.

#[cfg(feature = "tls")]
pub mod server;
pub mod terminal;

#[cfg(feature = "tls")]
pub use server::{
    ClientAuth, TlsCredential, TlsProfile, TlsSession, TlsSubstitute, TlsSubstituteCounters,
};
pub use terminal::{Terminal, TerminalConfig, TerminalEvent, TerminalFailure, TlsConnId};

use alloc::vec::Vec;

use zeroize::Zeroizing;

use super::KeyxError;
use super::messages::Transform;
use crate::tls::{CipherSuite, TrafficKeys};

/// The transform type that names a TLS 1.3 cipher suite in a start request or response
/// (outside IKEv2's transform types, which are 1-5).
pub const TRANSFORM_TLS_SUITE: u8 = 0x80;

/// The transform naming `suite`.
pub fn suite_transform(suite: CipherSuite) -> Transform {
    Transform {
        kind: TRANSFORM_TLS_SUITE,
        id: suite.code(),
        key_bits: 0,
    }
}

/// The suites named in `transforms`, in their order; other transforms are ignored.
pub fn suites_of(transforms: &[Transform]) -> Vec<CipherSuite> {
    transforms
        .iter()
        .filter(|t| t.kind == TRANSFORM_TLS_SUITE)
        .filter_map(|t| CipherSuite::from_code(t.id))
        .collect()
}

/// Relay kind: a post-handshake handshake message the peer sent.
pub const RELAY_PEER_MESSAGE: u8 = 1;
/// Relay kind: the terminal is about to send a KeyUpdate and needs its next send key.
pub const RELAY_OWN_KEY_UPDATE: u8 = 2;
/// Relay kind: the connection ended; the server forgets the session.
pub const RELAY_CLOSED: u8 = 3;

/// The key-body mask bits.
const SEND: u8 = 1;
const RECEIVE: u8 = 2;

/// Traffic keys for one or both directions, as the terminal names them.
pub(crate) struct KeyBody {
    pub suite: CipherSuite,
    pub send: Option<TrafficKeys>,
    pub receive: Option<TrafficKeys>,
}

// Only the server (feature `tls`) encodes key bodies; the terminal decodes them.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
fn put_keys(out: &mut Vec<u8>, k: &TrafficKeys) {
    // Keys are 16 or 32 octets: the length always fits a u8.
    out.push(k.key.len() as u8);
    out.extend_from_slice(&k.key);
    out.extend_from_slice(&k.iv[..]);
    out.extend_from_slice(&k.seq.to_be_bytes());
}

fn take_keys(input: &mut &[u8], suite: CipherSuite) -> Result<TrafficKeys, KeyxError> {
    let (&len, rest) = input.split_first().ok_or(KeyxError::BadKeyBody)?;
    let len = usize::from(len);
    if len != suite.key_len() || rest.len() < len + 12 + 8 {
        return Err(KeyxError::BadKeyBody);
    }
    let (key, rest) = rest.split_at(len);
    let (iv, rest) = rest.split_at(12);
    let (seq, rest) = rest.split_at(8);
    let mut iv_arr = Zeroizing::new([0u8; 12]);
    iv_arr.copy_from_slice(iv);
    let mut seq_arr = [0u8; 8];
    seq_arr.copy_from_slice(seq);
    *input = rest;
    Ok(TrafficKeys {
        suite,
        key: Zeroizing::new(key.to_vec()),
        iv: iv_arr,
        seq: u64::from_be_bytes(seq_arr),
    })
}

impl KeyBody {
    /// The body's plaintext, before sealing.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(2 + 1 + 2 * (1 + 32 + 12 + 8)));
        out.extend_from_slice(&self.suite.code().to_be_bytes());
        let mask = if self.send.is_some() { SEND } else { 0 }
            | if self.receive.is_some() { RECEIVE } else { 0 };
        out.push(mask);
        for k in [&self.send, &self.receive].into_iter().flatten() {
            put_keys(&mut out, k);
        }
        out
    }

    /// The body, opened. At least one direction must be present, each in the body's suite.
    pub fn decode(mut body: &[u8]) -> Result<KeyBody, KeyxError> {
        let (suite, rest) = body.split_first_chunk::<2>().ok_or(KeyxError::BadKeyBody)?;
        let suite =
            CipherSuite::from_code(u16::from_be_bytes(*suite)).ok_or(KeyxError::BadKeyBody)?;
        let (&mask, rest) = rest.split_first().ok_or(KeyxError::BadKeyBody)?;
        body = rest;
        if mask == 0 || mask & !(SEND | RECEIVE) != 0 {
            return Err(KeyxError::BadKeyBody);
        }
        let send = if mask & SEND != 0 {
            Some(take_keys(&mut body, suite)?)
        } else {
            None
        };
        let receive = if mask & RECEIVE != 0 {
            Some(take_keys(&mut body, suite)?)
        } else {
            None
        };
        if !body.is_empty() {
            return Err(KeyxError::BadKeyBody);
        }
        Ok(KeyBody {
            suite,
            send,
            receive,
        })
    }
}

/// The HelloRetryRequest marker: a ServerHello whose random is SHA-256 of
/// "HelloRetryRequest" (RFC 8446 §4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];

/// Handshake message types the terminal reads in plaintext during the handshake.
pub(crate) const HS_CLIENT_HELLO: u8 = 1;
pub(crate) const HS_SERVER_HELLO: u8 = 2;

/// The first handshake message carried by the plaintext handshake records at the front of
/// `records` (complete records only), when it is whole: (type, body). `Ok(None)`: not all of
/// it has arrived. Records of other types before it (a change_cipher_spec) are skipped.
pub(crate) fn first_handshake(
    records: &[u8],
    max: usize,
) -> Result<Option<(u8, Vec<u8>)>, KeyxError> {
    let mut msg = Vec::new();
    let mut rest = records;
    while let Some((header, tail)) = rest.split_first_chunk::<5>() {
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if tail.len() < len {
            break;
        }
        let (fragment, tail) = tail.split_at(len);
        rest = tail;
        match header[0] {
            // change_cipher_spec (middlebox compatibility): not part of the message.
            20 => continue,
            22 => msg.extend_from_slice(fragment),
            // An alert or protected record before the first message is whole: not a
            // handshake this terminal can follow.
            _ => return Err(KeyxError::BadPeerHandshake),
        }
        if msg.len() > max + 4 {
            return Err(KeyxError::BadPeerHandshake);
        }
        if let Some((head, body)) = msg.split_first_chunk::<4>() {
            let want =
                (usize::from(head[1]) << 16) | (usize::from(head[2]) << 8) | usize::from(head[3]);
            if want > max {
                return Err(KeyxError::BadPeerHandshake);
            }
            if body.len() >= want {
                return Ok(Some((head[0], body[..want].to_vec())));
            }
        }
    }
    Ok(None)
}

/// Whether a ServerHello body is a HelloRetryRequest.
pub(crate) fn is_hello_retry(server_hello: &[u8]) -> bool {
    // legacy_version (2) ‖ random (32).
    server_hello.get(2..34) == Some(&HRR_RANDOM[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(suite: CipherSuite, fill: u8, seq: u64) -> TrafficKeys {
        TrafficKeys {
            suite,
            key: Zeroizing::new(alloc::vec![fill; suite.key_len()]),
            iv: Zeroizing::new([fill ^ 0xFF; 12]),
            seq,
        }
    }

    #[test]
    fn key_bodies_round_trip_and_refuse_damage() {
        for suite in CipherSuite::ALL {
            let body = KeyBody {
                suite,
                send: Some(keys(suite, 1, 3)),
                receive: Some(keys(suite, 2, 0)),
            };
            let bytes = body.encode();
            let back = KeyBody::decode(&bytes).unwrap();
            assert_eq!(back.suite, suite);
            assert_eq!(back.send.as_ref().unwrap().seq, 3);
            assert_eq!(
                &back.receive.as_ref().unwrap().key[..],
                &[2; 32][..suite.key_len()]
            );
            for cut in 0..bytes.len() {
                assert!(KeyBody::decode(&bytes[..cut]).is_err());
            }
            let mut long = bytes.to_vec();
            long.push(0);
            assert_eq!(KeyBody::decode(&long).err(), Some(KeyxError::BadKeyBody));
            let one = KeyBody {
                suite,
                send: None,
                receive: Some(keys(suite, 5, 0)),
            }
            .encode();
            let back = KeyBody::decode(&one).unwrap();
            assert!(back.send.is_none() && back.receive.is_some());
        }
        // No direction, an unknown mask bit, an unknown suite: refused.
        assert!(KeyBody::decode(&[0x13, 0x01, 0]).is_err());
        assert!(KeyBody::decode(&[0x13, 0x01, 4]).is_err());
        assert!(KeyBody::decode(&[0x13, 0x09, 1]).is_err());
    }

    #[test]
    fn first_handshake_reassembles_across_records_and_skips_ccs() {
        // A ClientHello-like message of 6 body octets split over two records, a CCS first.
        let msg = [1u8, 0, 0, 6, 9, 8, 7, 6, 5, 4];
        let mut recs = alloc::vec![20, 3, 3, 0, 1, 1];
        recs.extend_from_slice(&[22, 3, 3, 0, 4]);
        recs.extend_from_slice(&msg[..4]);
        assert_eq!(first_handshake(&recs, 100).unwrap(), None);
        recs.extend_from_slice(&[22, 3, 3, 0, 6]);
        recs.extend_from_slice(&msg[4..]);
        let (t, body) = first_handshake(&recs, 100).unwrap().unwrap();
        assert_eq!((t, body.as_slice()), (1, &msg[4..]));
        // Longer than allowed; an alert first.
        assert!(first_handshake(&recs, 5).is_err());
        assert!(first_handshake(&[21, 3, 3, 0, 2, 2, 40], 100).is_err());
    }

    #[test]
    fn hello_retry_is_recognised() {
        let mut sh = alloc::vec![3, 3];
        sh.extend_from_slice(&HRR_RANDOM);
        assert!(is_hello_retry(&sh));
        sh[5] ^= 1;
        assert!(!is_hello_retry(&sh));
        assert!(!is_hello_retry(&[3, 3]));
    }
}

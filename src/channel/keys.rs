//! The channel's key schedule and record protection.
//!
//! ```text
//! PMS            = DH(g^ab)                         certificate mode
//!                = u16 len ‖ DH ‖ u16 len ‖ PSK      PSK mode (RFC 4279 §2 layout)
//! master_secret  = seed 002 ¶0088 formula (PMS, client random, server random)
//! hs             = HKDF-Extract(salt = H(ClientHello ‖ ServerHello), master_secret)
//!   c/s hs key, c/s hs iv, c/s finished   = HKDF-Expand-Label(hs, …)
//! ap             = HKDF-Extract(salt = H(… ‖ server Finished), master_secret)
//!   c/s ap key, c/s ap iv, exporter       = HKDF-Expand-Label(ap, …)
//! ```
//!
//! A record's nonce is the direction's IV XOR the 64-bit sequence number (right-aligned);
//! its associated data is `"deputy record" ‖ session id ‖ sequence number`, so a record
//! cannot be replayed, reordered, or moved into another session.

use alloc::format;
use alloc::vec::Vec;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::ChannelError;
use super::messages::{AlertCode, RecordEnvelope};
use crate::crypto::CryptoError;
use crate::crypto::aead::{AeadAlg, AeadKey, NONCE_LEN, TAG_LEN};
use crate::crypto::kdf::{MASTER_SECRET_LEN, Prk, seed_master_secret};
use crate::wire::WireError;

/// Content type: a handshake message (a whole wire message) inside a record.
pub(crate) const CT_HANDSHAKE: u8 = 1;
/// Content type: application data.
pub(crate) const CT_APPLICATION: u8 = 2;
/// Content type: an alert (one byte).
pub(crate) const CT_ALERT: u8 = 3;
/// Content type: a keepalive (one byte, [`Keepalive`]). Only once established; never
/// delivered to the application.
pub(crate) const CT_KEEPALIVE: u8 = 4;

/// A keepalive record's one byte: an idle side asks, the other answers at once, so the
/// asker learns within its own bound whether the peer still reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keepalive {
    /// "Are you there?" (0x01).
    Request,
    /// "Yes" (0x02).
    Response,
}

impl Keepalive {
    pub(crate) fn payload(self) -> [u8; 1] {
        match self {
            Keepalive::Request => [1],
            Keepalive::Response => [2],
        }
    }
}

/// What an authenticated record carries, decoded from its content type.
#[derive(Debug)]
pub(crate) enum Content {
    /// A handshake message: a whole wire message, decoded once the state expects one.
    Handshake(Vec<u8>),
    /// One application message.
    Application(Vec<u8>),
    /// An alert (close-notify included).
    Alert(AlertCode),
    /// A keepalive request or response.
    Keepalive(Keepalive),
}

impl Content {
    /// Decode `payload` by its content type. An unknown type is
    /// [`ChannelError::UnexpectedMessage`] with that type.
    pub(crate) fn decode(content_type: u8, payload: Vec<u8>) -> Result<Self, ChannelError> {
        match content_type {
            CT_HANDSHAKE => Ok(Content::Handshake(payload)),
            CT_APPLICATION => Ok(Content::Application(payload)),
            CT_ALERT => match payload.as_slice() {
                [code] => Ok(Content::Alert(AlertCode::from_code(*code))),
                _ => Err(ChannelError::Decode(WireError::Truncated)),
            },
            CT_KEEPALIVE => match payload.as_slice() {
                [1] => Ok(Content::Keepalive(Keepalive::Request)),
                [2] => Ok(Content::Keepalive(Keepalive::Response)),
                _ => Err(ChannelError::MalformedKeepalive),
            },
            t => Err(ChannelError::UnexpectedMessage(t)),
        }
    }

    /// The content type on the wire.
    pub(crate) fn content_type(&self) -> u8 {
        match self {
            Content::Handshake(_) => CT_HANDSHAKE,
            Content::Application(_) => CT_APPLICATION,
            Content::Alert(_) => CT_ALERT,
            Content::Keepalive(_) => CT_KEEPALIVE,
        }
    }
}

/// The running hash of every handshake message, as sent or received.
#[derive(Clone, Default)]
pub(crate) struct Transcript(Sha256);

impl Transcript {
    pub(crate) fn add(&mut self, message: &[u8]) {
        self.0.update(message);
    }

    pub(crate) fn hash(&self) -> [u8; 32] {
        self.0.clone().finalize().into()
    }
}

/// Keys for one direction of one epoch, with its sequence number.
pub(crate) struct DirectionKeys {
    key: AeadKey,
    iv: Zeroizing<[u8; NONCE_LEN]>,
    seq: u64,
}

impl DirectionKeys {
    fn derive(prk: &Prk, side: &str, alg: AeadAlg) -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new(alloc::vec![0u8; alg.key_len()]);
        prk.expand_label(&format!("{side} key"), &[], &mut key)?;
        let mut iv = Zeroizing::new([0u8; NONCE_LEN]);
        prk.expand_label(&format!("{side} iv"), &[], &mut *iv)?;
        Ok(DirectionKeys {
            key: AeadKey::new(alg, &key)?,
            iv,
            seq: 0,
        })
    }

    fn nonce(&self, seq: u64) -> [u8; NONCE_LEN] {
        let mut n = *self.iv;
        for (b, s) in n[NONCE_LEN - 8..].iter_mut().zip(seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }

    /// Protect one record and append its wire encoding to `out`: the envelope's prefix,
    /// then `content type ‖ payload` copied in once and sealed where it lies, then the tag.
    /// On an error nothing is appended and the sequence number stays.
    pub(crate) fn seal_into(
        &mut self,
        out: &mut Vec<u8>,
        session: u64,
        content_type: u8,
        payload: &[u8],
    ) -> Result<(), ChannelError> {
        let seq = self.seq;
        let next = seq.checked_add(1).ok_or(ChannelError::SequenceExhausted)?;
        let ciphertext_len = 1 + payload.len() + TAG_LEN;
        let prefix = RecordEnvelope::encode_prefix(session, seq, ciphertext_len)
            .map_err(ChannelError::Decode)?;
        out.reserve(prefix.len() + ciphertext_len);
        let start = out.len();
        out.extend_from_slice(&prefix);
        out.push(content_type);
        out.extend_from_slice(payload);
        let sealed = self.key.seal_in_place_detached(
            &self.nonce(seq),
            &aad(session, seq),
            &mut out[start + prefix.len()..],
        );
        match sealed {
            Ok(tag) => out.extend_from_slice(&tag),
            Err(_) => {
                // Beyond the AEAD's limit, far above a record's: take the plaintext back.
                out.truncate(start);
                return Err(ChannelError::RecordTooLarge {
                    len: payload.len(),
                    max: u16::MAX as usize,
                });
            }
        }
        self.seq = next;
        Ok(())
    }

    /// Check and decrypt one record in place: `record` is its `ciphertext ‖ tag`, which
    /// becomes `content type ‖ payload ‖ (unspecified)`. Returns the content type; the
    /// payload is `record[1..record.len() - TAG_LEN]`. The sequence number advances only
    /// for a record that authenticates.
    pub(crate) fn open_in_place(
        &mut self,
        session: u64,
        seq: u64,
        record: &mut [u8],
    ) -> Result<u8, ChannelError> {
        if seq != self.seq {
            return Err(ChannelError::RecordOutOfOrder {
                expected: self.seq,
                got: seq,
            });
        }
        let Some(split) = record.len().checked_sub(TAG_LEN) else {
            return Err(ChannelError::DecryptFailed);
        };
        let (ciphertext, tag) = record.split_at_mut(split);
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag);
        self.key
            .open_in_place_detached(&self.nonce(seq), &aad(session, seq), ciphertext, &t)
            .map_err(|_| ChannelError::DecryptFailed)?;
        let Some(&content_type) = ciphertext.first() else {
            return Err(ChannelError::DecryptFailed);
        };
        self.seq = self.seq.saturating_add(1);
        Ok(content_type)
    }
}

fn aad(session: u64, seq: u64) -> [u8; 29] {
    let mut a = [0u8; 29];
    a[..13].copy_from_slice(b"deputy record");
    a[13..21].copy_from_slice(&session.to_be_bytes());
    a[21..].copy_from_slice(&seq.to_be_bytes());
    a
}

/// The pre-master secret: the DH output alone, or DH and PSK in RFC 4279's layout.
pub(crate) fn pre_master_secret(dh: &[u8], psk: Option<&[u8]>) -> Zeroizing<Vec<u8>> {
    match psk {
        None => Zeroizing::new(dh.to_vec()),
        Some(psk) => {
            let mut pms = Zeroizing::new(Vec::with_capacity(4 + dh.len() + psk.len()));
            // Both lengths are far below 64 KiB: DH ≤ 256 bytes, PSK ≤ `Psk::MAX_LEN`.
            pms.extend_from_slice(&(dh.len() as u16).to_be_bytes());
            pms.extend_from_slice(dh);
            pms.extend_from_slice(&(psk.len() as u16).to_be_bytes());
            pms.extend_from_slice(psk);
            pms
        }
    }
}

/// Everything derived from the master secret.
pub(crate) struct Schedule {
    alg: AeadAlg,
    master: Zeroizing<[u8; MASTER_SECRET_LEN]>,
}

/// Handshake-epoch keys for both directions and both finished keys.
pub(crate) struct HandshakeKeys {
    pub(crate) client: DirectionKeys,
    pub(crate) server: DirectionKeys,
    pub(crate) client_finished: Zeroizing<[u8; 32]>,
    pub(crate) server_finished: Zeroizing<[u8; 32]>,
}

/// Application-epoch keys and the exporter secret.
pub(crate) struct ApplicationKeys {
    pub(crate) client: DirectionKeys,
    pub(crate) server: DirectionKeys,
    pub(crate) exporter: Prk,
}

impl Schedule {
    pub(crate) fn new(
        alg: AeadAlg,
        pms: &[u8],
        client_random: &[u8; 32],
        server_random: &[u8; 32],
    ) -> Self {
        Schedule {
            alg,
            master: seed_master_secret(pms, client_random, server_random),
        }
    }

    pub(crate) fn handshake(&self, hello_hash: &[u8; 32]) -> Result<HandshakeKeys, CryptoError> {
        let prk = Prk::extract(hello_hash, &*self.master);
        let mut client_finished = Zeroizing::new([0u8; 32]);
        prk.expand_label("c finished", &[], &mut *client_finished)?;
        let mut server_finished = Zeroizing::new([0u8; 32]);
        prk.expand_label("s finished", &[], &mut *server_finished)?;
        Ok(HandshakeKeys {
            client: DirectionKeys::derive(&prk, "c hs", self.alg)?,
            server: DirectionKeys::derive(&prk, "s hs", self.alg)?,
            client_finished,
            server_finished,
        })
    }

    pub(crate) fn application(
        &self,
        server_finished_hash: &[u8; 32],
    ) -> Result<ApplicationKeys, CryptoError> {
        let prk = Prk::extract(server_finished_hash, &*self.master);
        let mut exporter = Zeroizing::new([0u8; 32]);
        prk.expand_label("exporter", &[], &mut *exporter)?;
        Ok(ApplicationKeys {
            client: DirectionKeys::derive(&prk, "c ap", self.alg)?,
            server: DirectionKeys::derive(&prk, "s ap", self.alg)?,
            exporter: Prk::extract(b"deputy exporter", &*exporter),
        })
    }
}

/// The Finished MAC: HMAC-SHA256(finished key, transcript hash).
pub(crate) fn finished_mac(key: &[u8; 32], transcript_hash: &[u8; 32]) -> [u8; 32] {
    crate::crypto::kdf::hmac_sha256(key, transcript_hash)
}

//! The channel's messages and their encodings (deputy wire format, types 0x01–0x0F).
//!
//! Plaintext on the stream: [`ClientHello`], [`ServerHello`], [`Alert`] (before keys) and
//! [`RecordEnvelope`]. Inside records: [`CertificateMsg`], [`CertificateRequest`],
//! [`CertificateVerify`], [`Finished`] (each a whole wire message), application data and
//! alerts. Field layouts are listed in `docs/wire.md`.

use alloc::string::String;
use alloc::vec::Vec;

pub use crate::error::AlertCode;
use crate::wire::{self, CRITICAL, FieldWriter, Fields, Limits, Message, WireError};

/// Message type: client hello (seed 002 packet 212).
pub const CLIENT_HELLO: u8 = 0x01;
/// Message type: server hello (packet 213).
pub const SERVER_HELLO: u8 = 0x02;
/// Message type: an encrypted record.
pub const RECORD: u8 = 0x03;
/// Message type: certificate (packet 214; the client's in client authentication).
pub const CERTIFICATE: u8 = 0x04;
/// Message type: certificate request (server asks for a client certificate).
pub const CERTIFICATE_REQUEST: u8 = 0x05;
/// Message type: certificate verify (signature over the transcript).
pub const CERTIFICATE_VERIFY: u8 = 0x06;
/// Message type: finished (MAC over the transcript).
pub const FINISHED: u8 = 0x07;
/// Message type: plaintext alert (only before keys exist).
pub const ALERT: u8 = 0x08;

/// Human name of a channel message type, for traces.
pub fn type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        CLIENT_HELLO => "ClientHello",
        SERVER_HELLO => "ServerHello",
        RECORD => "Record",
        CERTIFICATE => "Certificate",
        CERTIFICATE_REQUEST => "CertificateRequest",
        CERTIFICATE_VERIFY => "CertificateVerify",
        FINISHED => "Finished",
        ALERT => "Alert",
        _ => return None,
    })
}

// Field types, by the message that carries them. The critical bit (see `wire`) marks the
// fields a receiver must understand; the session id and server name are optional, so a
// receiver may skip them.
//
// ClientHello: offers, key share and random, then how the client authenticates.
const F_VERSIONS: u16 = CRITICAL | 0x01;
const F_SUITES: u16 = CRITICAL | 0x02;
const F_GROUP: u16 = CRITICAL | 0x03;
const F_KEY_SHARE: u16 = CRITICAL | 0x04;
const F_RANDOM: u16 = CRITICAL | 0x05;
// Group, key share, random and session id are shared by both hellos.
const F_SESSION_ID: u16 = 0x06;
const F_AUTH_MODE: u16 = CRITICAL | 0x07;
const F_PSK_IDENTITY: u16 = CRITICAL | 0x08;
const F_SERVER_NAME: u16 = 0x09;
// ServerHello: the choices made.
const F_VERSION: u16 = CRITICAL | 0x0A;
const F_SUITE: u16 = CRITICAL | 0x0B;
// Inside records: Certificate, CertificateVerify, Finished; and the plaintext Alert.
const F_CERT: u16 = CRITICAL | 0x0C;
const F_SIGNATURE: u16 = CRITICAL | 0x0D;
const F_MAC: u16 = CRITICAL | 0x0E;
const F_ALERT: u16 = CRITICAL | 0x0F;
// Record: the envelope.
const F_SEQ: u16 = CRITICAL | 0x10;
const F_CIPHERTEXT: u16 = CRITICAL | 0x11;

/// Largest lists accepted in a hello: far more versions, suites or groups than exist, and
/// small enough that a hello cannot make the server scan a long list.
const MAX_LIST: usize = 16;

/// How the client wants to authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Server certificate (and optionally client certificate).
    Certificate,
    /// Pre-shared key.
    Psk,
}

impl AuthMode {
    fn code(self) -> u8 {
        match self {
            AuthMode::Certificate => 1,
            AuthMode::Psk => 2,
        }
    }
    fn from_code(c: u8) -> Result<Self, WireError> {
        match c {
            1 => Ok(AuthMode::Certificate),
            2 => Ok(AuthMode::Psk),
            _ => Err(WireError::BadValue(F_AUTH_MODE)),
        }
    }
}

/// The fields of `msg`, once it is known to be of type `t` and to carry only `known`
/// fields (or unknown ones the policy lets through): every decoder's first step.
fn fields_of<'m, 'a>(
    msg: &'m Message<'a>,
    t: u8,
    known: &[u16],
    limits: &Limits,
) -> Result<&'m Fields<'a>, WireError> {
    if msg.msg_type() != t {
        return Err(WireError::UnexpectedType(msg.msg_type()));
    }
    msg.fields.check_known(known, limits.unknown_fields)?;
    Ok(&msg.fields)
}

fn bounded_list(fields: &Fields<'_>, ty: u16) -> Result<Vec<u16>, WireError> {
    let list = fields.u16_list(ty)?;
    if list.is_empty() || list.len() > MAX_LIST {
        return Err(WireError::BadFieldLength {
            field: ty,
            len: list.len() * 2,
        });
    }
    Ok(list)
}

/// Seed 002 packet 212: versions, suites, session id, client random; plus the client's
/// key-creation information (71) sent at once, so the handshake takes one round trip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHello {
    /// Channel versions the client speaks.
    pub versions: Vec<u16>,
    /// AEAD suite ids, client preference first.
    pub suites: Vec<u16>,
    /// The group of the key share.
    pub group: u16,
    /// The client's Diffie-Hellman public value.
    pub key_share: Vec<u8>,
    /// 32-bit timestamp ‖ 28 random bytes.
    pub random: [u8; 32],
    /// Session id the client would resume (0: new; resumption is not supported).
    pub session_id: u64,
    /// Certificate or pre-shared key.
    pub auth_mode: AuthMode,
    /// PSK identity (PSK mode).
    pub psk_identity: Option<Vec<u8>>,
    /// The server name the client expects (lets a server pick an identity).
    pub server_name: Option<String>,
}

impl ClientHello {
    /// Encode as a wire message.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let w = FieldWriter::new()
            .u16_list(F_VERSIONS, &self.versions)
            .u16_list(F_SUITES, &self.suites)
            .u16(F_GROUP, self.group)
            .bytes(F_KEY_SHARE, &self.key_share)
            .bytes(F_RANDOM, &self.random)
            .u64(F_SESSION_ID, self.session_id)
            .u8(F_AUTH_MODE, self.auth_mode.code())
            .opt(F_PSK_IDENTITY, self.psk_identity.as_deref())
            .opt(
                F_SERVER_NAME,
                self.server_name.as_deref().map(str::as_bytes),
            );
        wire::encode(CLIENT_HELLO, 0, w)
    }

    /// Decode from a wire message.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        const KNOWN: [u16; 9] = [
            F_VERSIONS,
            F_SUITES,
            F_GROUP,
            F_KEY_SHARE,
            F_RANDOM,
            F_SESSION_ID,
            F_AUTH_MODE,
            F_PSK_IDENTITY,
            F_SERVER_NAME,
        ];
        let f = fields_of(msg, CLIENT_HELLO, &KNOWN, limits)?;
        let server_name = match f.get(F_SERVER_NAME)? {
            Some(v) => Some(
                core::str::from_utf8(v)
                    .map_err(|_| WireError::BadValue(F_SERVER_NAME))?
                    .into(),
            ),
            None => None,
        };
        Ok(ClientHello {
            versions: bounded_list(f, F_VERSIONS)?,
            suites: bounded_list(f, F_SUITES)?,
            group: f.u16(F_GROUP)?,
            key_share: f.bytes(F_KEY_SHARE)?.to_vec(),
            random: f.array(F_RANDOM)?,
            session_id: f.opt_u64(F_SESSION_ID)?.unwrap_or(0),
            auth_mode: AuthMode::from_code(f.u8(F_AUTH_MODE)?)?,
            psk_identity: f.get(F_PSK_IDENTITY)?.map(<[u8]>::to_vec),
            server_name,
        })
    }
}

/// Seed 002 packet 213: the chosen version and suite, session id, server random; plus the
/// server's key-creation information (72).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHello {
    /// Chosen version.
    pub version: u16,
    /// Chosen AEAD suite id.
    pub suite: u16,
    /// Group (echoes the client's).
    pub group: u16,
    /// The server's Diffie-Hellman public value.
    pub key_share: Vec<u8>,
    /// 32-bit timestamp ‖ 28 random bytes.
    pub random: [u8; 32],
    /// The new session's id (also in every later header).
    pub session_id: u64,
}

impl ServerHello {
    /// Encode as a wire message.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let w = FieldWriter::new()
            .u16(F_VERSION, self.version)
            .u16(F_SUITE, self.suite)
            .u16(F_GROUP, self.group)
            .bytes(F_KEY_SHARE, &self.key_share)
            .bytes(F_RANDOM, &self.random)
            .u64(F_SESSION_ID, self.session_id);
        wire::encode(SERVER_HELLO, self.session_id, w)
    }

    /// Decode from a wire message.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        const KNOWN: [u16; 6] = [
            F_VERSION,
            F_SUITE,
            F_GROUP,
            F_KEY_SHARE,
            F_RANDOM,
            F_SESSION_ID,
        ];
        let f = fields_of(msg, SERVER_HELLO, &KNOWN, limits)?;
        let session_id = f.u64(F_SESSION_ID)?;
        // The id is in the header too (every later message carries it there); two
        // different values would leave the client unsure which session it joined.
        if session_id != msg.session() {
            return Err(WireError::BadValue(F_SESSION_ID));
        }
        Ok(ServerHello {
            version: f.u16(F_VERSION)?,
            suite: f.u16(F_SUITE)?,
            group: f.u16(F_GROUP)?,
            key_share: f.bytes(F_KEY_SHARE)?.to_vec(),
            random: f.array(F_RANDOM)?,
            session_id,
        })
    }
}

/// A certificate (server's, or client's when asked; empty when the client has none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateMsg {
    /// The encoded certificate, if any.
    pub certificate: Option<Vec<u8>>,
}

/// The server asks for a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertificateRequest;

/// An Ed25519 signature over the transcript, proving possession of the certificate's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateVerify {
    /// The signature.
    pub signature: [u8; 64],
}

/// HMAC-SHA256 over the transcript under the sender's finished key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The MAC.
    pub mac: [u8; 32],
}

/// A message that travels inside records during the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Certificate.
    Certificate(CertificateMsg),
    /// Certificate request.
    CertificateRequest(CertificateRequest),
    /// Certificate verify.
    CertificateVerify(CertificateVerify),
    /// Finished.
    Finished(Finished),
}

impl Handshake {
    /// Encode as a wire message in `session`.
    pub fn encode(&self, session: u64) -> Result<Vec<u8>, WireError> {
        let (t, w) = match self {
            Handshake::Certificate(c) => (
                CERTIFICATE,
                FieldWriter::new().opt(F_CERT, c.certificate.as_deref()),
            ),
            Handshake::CertificateRequest(_) => (CERTIFICATE_REQUEST, FieldWriter::new()),
            Handshake::CertificateVerify(v) => (
                CERTIFICATE_VERIFY,
                FieldWriter::new().bytes(F_SIGNATURE, &v.signature),
            ),
            Handshake::Finished(f) => (FINISHED, FieldWriter::new().bytes(F_MAC, &f.mac)),
        };
        wire::encode(t, session, w)
    }

    /// Decode from a wire message.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        let t = msg.msg_type();
        Ok(match t {
            CERTIFICATE => Handshake::Certificate(CertificateMsg {
                certificate: fields_of(msg, t, &[F_CERT], limits)?
                    .get(F_CERT)?
                    .map(<[u8]>::to_vec),
            }),
            CERTIFICATE_REQUEST => {
                fields_of(msg, t, &[], limits)?;
                Handshake::CertificateRequest(CertificateRequest)
            }
            CERTIFICATE_VERIFY => Handshake::CertificateVerify(CertificateVerify {
                signature: fields_of(msg, t, &[F_SIGNATURE], limits)?.array(F_SIGNATURE)?,
            }),
            FINISHED => Handshake::Finished(Finished {
                mac: fields_of(msg, t, &[F_MAC], limits)?.array(F_MAC)?,
            }),
            t => return Err(WireError::UnexpectedType(t)),
        })
    }

    /// The message type on the wire.
    pub fn msg_type(&self) -> u8 {
        match self {
            Handshake::Certificate(_) => CERTIFICATE,
            Handshake::CertificateRequest(_) => CERTIFICATE_REQUEST,
            Handshake::CertificateVerify(_) => CERTIFICATE_VERIFY,
            Handshake::Finished(_) => FINISHED,
        }
    }
}

/// A message that travels in the clear on the stream: what a connection decodes every
/// frame into before its state decides what to do with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamMessage {
    /// The client's hello.
    ClientHello(ClientHello),
    /// The server's hello.
    ServerHello(ServerHello),
    /// An encrypted record.
    Record(RecordEnvelope),
    /// A plaintext alert.
    Alert(Alert),
}

impl StreamMessage {
    /// Decode a frame. A handshake type (those travel only inside records) or an unknown
    /// type is [`WireError::UnexpectedType`].
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        Ok(match msg.msg_type() {
            CLIENT_HELLO => StreamMessage::ClientHello(ClientHello::decode(msg, limits)?),
            SERVER_HELLO => StreamMessage::ServerHello(ServerHello::decode(msg, limits)?),
            RECORD => StreamMessage::Record(RecordEnvelope::decode(msg, limits)?),
            ALERT => StreamMessage::Alert(Alert::decode(msg, limits)?),
            t => return Err(WireError::UnexpectedType(t)),
        })
    }

    /// The message type on the wire.
    pub fn msg_type(&self) -> u8 {
        match self {
            StreamMessage::ClientHello(_) => CLIENT_HELLO,
            StreamMessage::ServerHello(_) => SERVER_HELLO,
            StreamMessage::Record(_) => RECORD,
            StreamMessage::Alert(_) => ALERT,
        }
    }
}

/// A plaintext alert (sent only before keys exist; later alerts travel inside records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alert {
    /// What went wrong.
    pub code: AlertCode,
}

impl Alert {
    /// Encode as a wire message.
    pub fn encode(&self, session: u64) -> Result<Vec<u8>, WireError> {
        wire::encode(
            ALERT,
            session,
            FieldWriter::new().u8(F_ALERT, self.code.code()),
        )
    }

    /// Decode from a wire message.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        let f = fields_of(msg, ALERT, &[F_ALERT], limits)?;
        Ok(Alert {
            code: AlertCode::from_code(f.u8(F_ALERT)?),
        })
    }

    /// The one-byte payload of an alert inside a record.
    pub fn payload(&self) -> [u8; 1] {
        [self.code.code()]
    }
}

/// The outside of an encrypted record: sequence number and AEAD output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordEnvelope {
    /// The session.
    pub session: u64,
    /// Sequence number (per direction and key epoch, from 0).
    pub seq: u64,
    /// ciphertext ‖ tag of (content type ‖ payload).
    pub ciphertext: Vec<u8>,
}

impl RecordEnvelope {
    /// Encode as a wire message.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let w = FieldWriter::new()
            .u64(F_SEQ, self.seq)
            .bytes(F_CIPHERTEXT, &self.ciphertext);
        wire::encode(RECORD, self.session, w)
    }

    /// Decode from a wire message.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        let f = fields_of(msg, RECORD, &[F_SEQ, F_CIPHERTEXT], limits)?;
        Ok(RecordEnvelope {
            session: msg.session(),
            seq: f.u64(F_SEQ)?,
            ciphertext: f.bytes(F_CIPHERTEXT)?.to_vec(),
        })
    }

    /// Length of what [`RecordEnvelope::encode`] puts before the ciphertext: the header,
    /// the sequence number field and the ciphertext field's type and length.
    pub(crate) const PREFIX_LEN: usize = wire::HEADER_LEN + 2 * wire::FIELD_HEADER_LEN + 8;

    /// The first [`RecordEnvelope::PREFIX_LEN`] bytes of the encoding of a record of
    /// `ciphertext_len` bytes, so that a sender can build the record in place behind them:
    /// byte for byte what [`RecordEnvelope::encode`] writes, and the same error for a
    /// ciphertext too long for its field.
    pub(crate) fn encode_prefix(
        session: u64,
        seq: u64,
        ciphertext_len: usize,
    ) -> Result<[u8; Self::PREFIX_LEN], WireError> {
        let field_len =
            u16::try_from(ciphertext_len).map_err(|_| WireError::FieldTooLong(ciphertext_len))?;
        let body_len = Self::PREFIX_LEN - wire::HEADER_LEN + ciphertext_len;
        let header = wire::Header {
            msg_type: RECORD,
            // At most 16 + 65,535 bytes: always a u32.
            body_len: body_len as u32,
            session,
        };
        let mut out = [0u8; Self::PREFIX_LEN];
        out[..wire::HEADER_LEN].copy_from_slice(&header.to_bytes());
        out[16..18].copy_from_slice(&F_SEQ.to_be_bytes());
        out[18..20].copy_from_slice(&8u16.to_be_bytes());
        out[20..28].copy_from_slice(&seq.to_be_bytes());
        out[28..30].copy_from_slice(&F_CIPHERTEXT.to_be_bytes());
        out[30..32].copy_from_slice(&field_len.to_be_bytes());
        Ok(out)
    }

    /// [`RecordEnvelope::decode`] without copying the ciphertext out: the sequence number
    /// and where the ciphertext lies in `frame`, the bytes `msg` was decoded from (so it
    /// can be decrypted in place). Same checks, same errors.
    pub(crate) fn decode_in_place(
        msg: &Message<'_>,
        frame: &[u8],
        limits: &Limits,
    ) -> Result<(u64, core::ops::Range<usize>), WireError> {
        if msg.msg_type() != RECORD {
            return Err(WireError::UnexpectedType(msg.msg_type()));
        }
        // One walk over the fields, with the errors `fields_of`, `u64` and `bytes` give, in
        // their order: the first unknown field the policy refuses, then the sequence
        // number's, then the ciphertext's.
        let (mut seq, mut ciphertext) = (None, None);
        let (mut seq_twice, mut ciphertext_twice) = (false, false);
        let mut unknown = None;
        for f in msg.fields.iter() {
            if f.ty == F_SEQ {
                seq_twice |= seq.replace(f.value).is_some();
            } else if f.ty == F_CIPHERTEXT {
                ciphertext_twice |= ciphertext.replace(f.value).is_some();
            } else if unknown.is_none() {
                if f.is_critical() {
                    unknown = Some(WireError::UnknownCriticalField(f.ty));
                } else if limits.unknown_fields == wire::UnknownFieldPolicy::Reject {
                    unknown = Some(WireError::UnknownField(f.ty));
                }
            }
        }
        if let Some(e) = unknown {
            return Err(e);
        }
        let seq = match (seq, seq_twice) {
            (_, true) => return Err(WireError::DuplicateField(F_SEQ)),
            (None, _) => return Err(WireError::MissingField(F_SEQ)),
            (Some(v), _) => {
                u64::from_be_bytes(v.try_into().map_err(|_| WireError::BadFieldLength {
                    field: F_SEQ,
                    len: v.len(),
                })?)
            }
        };
        let ciphertext = match (ciphertext, ciphertext_twice) {
            (_, true) => return Err(WireError::DuplicateField(F_CIPHERTEXT)),
            (None, _) => return Err(WireError::MissingField(F_CIPHERTEXT)),
            (Some(v), _) => v,
        };
        // The field is a sub-slice of `frame`: its offset is the distance of the addresses.
        let start = ciphertext
            .as_ptr()
            .addr()
            .wrapping_sub(frame.as_ptr().addr());
        let range = start..start + ciphertext.len();
        match frame.get(range.clone()) {
            Some(_) => Ok((seq, range)),
            // Unreachable when `msg` was decoded from `frame`.
            None => Err(WireError::Truncated),
        }
    }

    /// Bytes of framing around `plaintext_len` bytes of payload: header, two field headers,
    /// the sequence number, the content-type byte and the tag.
    pub const fn overhead() -> usize {
        wire::HEADER_LEN + 2 * wire::FIELD_HEADER_LEN + 8 + 1 + crate::crypto::aead::TAG_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::UnknownFieldPolicy;

    /// `decode_in_place` and `decode` agree on every record, well-formed or not: the same
    /// sequence number and ciphertext, or the same error.
    #[test]
    fn in_place_record_decoding_matches_the_copying_one() {
        let seq = 7u64.to_be_bytes();
        let bodies: [&[(u16, &[u8])]; 9] = [
            &[(F_SEQ, &seq), (F_CIPHERTEXT, b"sealed")],
            &[(F_CIPHERTEXT, b"sealed"), (F_SEQ, &seq), (0x0042, b"x")],
            &[(F_SEQ, &seq)],
            &[(F_CIPHERTEXT, b"sealed")],
            &[(F_SEQ, &seq), (F_SEQ, &seq), (F_CIPHERTEXT, b"c")],
            &[(F_SEQ, &seq), (F_CIPHERTEXT, b"c"), (F_CIPHERTEXT, b"c")],
            &[(F_SEQ, &[1, 2, 3]), (F_CIPHERTEXT, b"c")],
            &[(F_SEQ, &seq), (CRITICAL | 0x42, b"x"), (F_CIPHERTEXT, b"c")],
            &[(0x0042, b"x"), (F_SEQ, &[1]), (CRITICAL | 0x43, b"x")],
        ];
        for policy in [UnknownFieldPolicy::Skip, UnknownFieldPolicy::Reject] {
            let limits = Limits {
                unknown_fields: policy,
                ..Limits::default()
            };
            for (i, body) in bodies.iter().enumerate() {
                let mut w = FieldWriter::new();
                for (ty, value) in body.iter() {
                    w.push(*ty, value);
                }
                let frame = wire::encode(RECORD, 9, w).unwrap();
                let msg = Message::decode(&frame, &limits).unwrap();
                let copied = RecordEnvelope::decode(&msg, &limits);
                let in_place = RecordEnvelope::decode_in_place(&msg, &frame, &limits)
                    .map(|(seq, range)| (seq, frame[range].to_vec()));
                assert_eq!(
                    in_place,
                    copied.map(|r| (r.seq, r.ciphertext)),
                    "body {i}, {policy:?}"
                );
            }
        }
        let alert = Alert {
            code: AlertCode::CloseNotify,
        }
        .encode(9)
        .unwrap();
        let msg = Message::decode(&alert, &Limits::default()).unwrap();
        assert_eq!(
            RecordEnvelope::decode_in_place(&msg, &alert, &Limits::default()),
            Err(WireError::UnexpectedType(ALERT))
        );
    }

    /// The prefix is what `encode` writes in front of the ciphertext, and refuses what it
    /// refuses.
    #[test]
    fn record_prefix_matches_the_encoding() {
        for len in [17, 100, 65_535] {
            let ciphertext = alloc::vec![0xc5; len];
            let whole = RecordEnvelope {
                session: 3,
                seq: 11,
                ciphertext: ciphertext.clone(),
            }
            .encode()
            .unwrap();
            let prefix = RecordEnvelope::encode_prefix(3, 11, len).unwrap();
            assert_eq!([&prefix[..], &ciphertext[..]].concat(), whole);
        }
        assert_eq!(
            RecordEnvelope::encode_prefix(3, 11, 65_536),
            RecordEnvelope {
                session: 3,
                seq: 11,
                ciphertext: alloc::vec![0; 65_536],
            }
            .encode()
            .map(|_| [0; RecordEnvelope::PREFIX_LEN])
        );
    }
}

//! Seed 000 messages and their encodings (deputy wire format, types 0x10–0x2F).
//!
//! One type per message of the seed; where the same message travels on two legs (a crypto
//! request is S21 on the open network and S32 inside the secure channel) the leg-specific
//! fields are optional and the receiving actor checks that the ones its step needs are
//! there. Field layouts are listed in `docs/wire.md` ("Seed 000 offload messages").
//!
//! Closed-network messages additionally carry the link fields — a sequence number and, when
//! a link key is provisioned, an HMAC-SHA256 as the last field — added and checked by the
//! actors (see `docs/offload.md`).

use alloc::string::String;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::{MAX_NAME_LEN, MAX_PAYLOAD, OffloadRefusal, Peer};
use crate::wire::{
    self, CRITICAL, FieldWriter, Fields, Limits, Message as WireMessage, UnknownFieldPolicy,
    WireError,
};

/// S21 / S32: "do you do encrypted communication, how, is there a proxy?" (¶0053).
pub const CRYPTO_REQUEST: u8 = 0x10;
/// S22 / S33: crypto accept (S22 carries the proxy designation).
pub const CRYPTO_ACCEPT: u8 = 0x11;
/// S42: crypto solicitation — the appliance refused what it got and asks for encryption
/// through its proxy (carries the designation unless that would amplify).
pub const CRYPTO_SOLICITATION: u8 = 0x12;
/// S23 / S31: proxy request.
pub const PROXY_REQUEST: u8 = 0x13;
/// S24 / S34: proxy accept.
pub const PROXY_ACCEPT: u8 = 0x14;
/// A typed refusal, any leg.
pub const REFUSAL: u8 = 0x15;
/// S25 / S36: application data inside the secure channel.
pub const SECURE_DATA: u8 = 0x16;
/// S26 / S35: application data in clear on the closed network (and what a naive remote
/// node sends, which the appliance refuses).
pub const PLAIN_DATA: u8 = 0x17;
/// ¶0062: data sealed with an appliance's own weak key, sent straight to it.
pub const SEALED_DATA: u8 = 0x18;
/// Closed-network link acknowledgement.
pub const ACK: u8 = 0x19;
/// A session ends (closed-network leg).
pub const CLOSE: u8 = 0x1A;
/// Closed-network link: "prove you are live" — sent for a message from an unknown link
/// epoch on a keyed link.
pub const CHALLENGE: u8 = 0x1B;
/// Closed-network link: the answer to a challenge, or a floor update after giving up on a
/// message.
pub const RESYNC: u8 = 0x1C;

/// Human name of an offload message type, for traces.
pub fn type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        CRYPTO_REQUEST => "CryptoRequest",
        CRYPTO_ACCEPT => "CryptoAccept",
        CRYPTO_SOLICITATION => "CryptoSolicitation",
        PROXY_REQUEST => "ProxyRequest",
        PROXY_ACCEPT => "ProxyAccept",
        REFUSAL => "Refusal",
        SECURE_DATA => "SecureData",
        PLAIN_DATA => "PlainData",
        SEALED_DATA => "SealedData",
        ACK => "Ack",
        CLOSE => "Close",
        CHALLENGE => "Challenge",
        RESYNC => "Resync",
        _ => return None,
    })
}

const F_REQUEST_ID: u16 = CRITICAL | 0x01;
const F_APPLIANCE: u16 = CRITICAL | 0x02;
const F_DESIGNATION: u16 = CRITICAL | 0x03;
const F_PROXY_ADDR: u16 = CRITICAL | 0x04;
const F_SUITES: u16 = 0x05;
const F_PADDING: u16 = 0x06;
const F_REMOTE_ADDR: u16 = CRITICAL | 0x07;
const F_PEER: u16 = CRITICAL | 0x08;
const F_REASON: u16 = CRITICAL | 0x09;
const F_PAYLOAD: u16 = CRITICAL | 0x0A;
/// Link sequence number (closed network).
pub(crate) const F_SEQ: u16 = CRITICAL | 0x0B;
const F_ACK: u16 = CRITICAL | 0x0C;
const F_KEY_ID: u16 = CRITICAL | 0x0D;
const F_CIPHERTEXT: u16 = CRITICAL | 0x0E;
/// Link MAC (closed network, keyed links); always the last field.
pub(crate) const F_MAC: u16 = CRITICAL | 0x0F;
const F_PEER_KIND: u16 = CRITICAL | 0x10;
const F_PEER_NAME: u16 = CRITICAL | 0x11;
const F_NONCE_SEQ: u16 = CRITICAL | 0x12;
/// Link epoch (closed network): the sender's random incarnation number.
const F_EPOCH: u16 = CRITICAL | 0x13;
/// Link floor (closed network): the sender's oldest unresolved sequence number.
const F_FLOOR: u16 = CRITICAL | 0x14;
const F_NONCE: u16 = CRITICAL | 0x15;

const KNOWN: [u16; 21] = [
    F_REQUEST_ID,
    F_APPLIANCE,
    F_DESIGNATION,
    F_PROXY_ADDR,
    F_SUITES,
    F_PADDING,
    F_REMOTE_ADDR,
    F_PEER,
    F_REASON,
    F_PAYLOAD,
    F_SEQ,
    F_ACK,
    F_KEY_ID,
    F_CIPHERTEXT,
    F_MAC,
    F_PEER_KIND,
    F_PEER_NAME,
    F_NONCE_SEQ,
    F_EPOCH,
    F_FLOOR,
    F_NONCE,
];

/// Length of the MAC field (header + HMAC-SHA256).
pub(crate) const MAC_FIELD_LEN: usize = wire::FIELD_HEADER_LEN + 32;
/// Longest peer identity carried (a PSK identity may be up to 1,024 bytes).
const MAX_PEER_NAME: usize = 1024;
/// Most suites listed in a crypto request.
const MAX_SUITES: usize = 16;
/// Nested lists (designation, peer) hold at most this many fields.
const MAX_NESTED: usize = 4;

/// The proxy designation (S22, S42): where a remote node reaches the proxy from the open
/// network, and which appliance the proxy is to deputize for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Designation {
    /// The proxy's stream address as reachable from the open network.
    pub proxy: SocketAddr,
    /// The appliance's name, as the proxy's certificate must carry it.
    pub appliance: String,
}

/// S21 (remote → appliance, datagram) / S32 (proxy → remote, in the channel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoRequest {
    /// The requester's id for this exchange, echoed in the answer.
    pub request_id: u64,
    /// S32: the appliance the proxy speaks for.
    pub appliance: Option<String>,
    /// AEAD suite ids the requester can use (informational, ¶0053).
    pub suites: Vec<u16>,
    /// Padding bytes, so the answer is never larger than the request.
    pub padding: usize,
}

/// S22 (appliance → remote, datagram, with designation) / S33 (remote → proxy, in the
/// channel, with the appliance name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoAccept {
    /// The request id being answered.
    pub request_id: u64,
    /// S33: the appliance accepted.
    pub appliance: Option<String>,
    /// S22: the proxy designation.
    pub designation: Option<Designation>,
}

/// S42: the appliance refused plaintext or undecryptable data and asks for encryption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoSolicitation {
    /// The designation, absent in the minimal form (sent when the full one would be larger
    /// than the datagram that provoked it).
    pub designation: Option<Designation>,
}

/// S23 (remote → proxy, in the channel) / S31 (appliance → proxy, closed network).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyRequest {
    /// The requester's id, echoed in the answer.
    pub request_id: u64,
    /// S23: the appliance to deputize for.
    pub appliance: Option<String>,
    /// S31: the remote node's address (¶0074).
    pub remote: Option<SocketAddr>,
    /// S31: the identity the remote node must prove (optional).
    pub remote_identity: Option<Peer>,
}

/// S24 (proxy → remote, in the channel) / S34 (proxy → appliance, closed network).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyAccept {
    /// The request id answered.
    pub request_id: u64,
    /// The session id on the closed-network leg (also in the header).
    pub session: u64,
    /// S24: the appliance confirmed.
    pub appliance: Option<String>,
    /// S34: the remote node's proven identity.
    pub peer: Option<Peer>,
}

/// A typed refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: OffloadRefusal,
    /// The request refused, if any.
    pub request_id: Option<u64>,
    /// The session refused or ended (0: none; also in the header).
    pub session: u64,
    /// The appliance concerned, if any.
    pub appliance: Option<String>,
}

/// S25 / S36: application data, only ever inside the secure channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecureData {
    /// The application bytes.
    pub payload: Vec<u8>,
}

/// S26 / S35: application data in clear on the closed network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlainData {
    /// The closed-network session (0 from a naive remote node).
    pub session: u64,
    /// S26: the remote node the data came from, as the proxy authenticated it.
    pub peer: Option<Peer>,
    /// The application bytes.
    pub payload: Vec<u8>,
    /// Padding bytes (a naive sender pads so a solicitation can answer in full).
    pub padding: usize,
}

/// ¶0062: data sealed with the appliance's own weak key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedData {
    /// Which provisioned key.
    pub key_id: u32,
    /// Per-key sequence number: the nonce, and the replay-window position.
    pub seq: u64,
    /// AEAD ciphertext ‖ tag.
    pub ciphertext: Vec<u8>,
}

/// Closed-network acknowledgement of the link message with this sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The sequence number acknowledged.
    pub seq: u64,
}

/// A closed-network session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close {
    /// The session.
    pub session: u64,
}

/// Closed-network link: the receiver saw a new epoch on a keyed link and asks the sender to
/// echo this nonce (in a [`Resync`]) before it believes the epoch is live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// A fresh random number.
    pub nonce: u64,
}

/// Closed-network link: the sender's answer to a [`Challenge`] (echoing its nonce), or,
/// with nonce 0, news that its floor moved after it gave up on a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resync {
    /// The challenge's nonce, or 0.
    pub nonce: u64,
}

/// The link fields of a closed-network message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkFields {
    /// Sequence number (sequenced messages).
    pub seq: Option<u64>,
    /// Epoch: the sender's for sequenced messages and resyncs; the acknowledged or
    /// challenged party's for acks and challenges.
    pub epoch: Option<u64>,
    /// The sender's floor (sequenced messages and resyncs).
    pub floor: Option<u64>,
}

impl LinkFields {
    /// The most bytes the link fields take: three `u64` fields.
    const MAX_LEN: usize = 3 * (wire::FIELD_HEADER_LEN + 8);

    /// `w` with the link fields that are present appended, in their wire order.
    fn append(self, mut w: FieldWriter) -> FieldWriter {
        for (ty, value) in [
            (F_SEQ, self.seq),
            (F_EPOCH, self.epoch),
            (F_FLOOR, self.floor),
        ] {
            if let Some(v) = value {
                w = w.u64(ty, v);
            }
        }
        w
    }
}

/// Any seed 000 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// S21 / S32.
    CryptoRequest(CryptoRequest),
    /// S22 / S33.
    CryptoAccept(CryptoAccept),
    /// S42.
    CryptoSolicitation(CryptoSolicitation),
    /// S23 / S31.
    ProxyRequest(ProxyRequest),
    /// S24 / S34.
    ProxyAccept(ProxyAccept),
    /// A refusal.
    Refusal(Refusal),
    /// S25 / S36.
    SecureData(SecureData),
    /// S26 / S35.
    PlainData(PlainData),
    /// ¶0062.
    SealedData(SealedData),
    /// Link acknowledgement.
    Ack(Ack),
    /// Session end.
    Close(Close),
    /// Link challenge.
    Challenge(Challenge),
    /// Link resynchronisation.
    Resync(Resync),
}

/// Computes the link MAC over the bytes it covers.
pub(crate) type MacFn<'a> = dyn Fn(&[u8]) -> [u8; 32] + 'a;

/// A decoded message plus the closed-network link fields it carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The message.
    pub message: Message,
    /// The link sequence number, if present.
    pub seq: Option<u64>,
    /// The link epoch, if present.
    pub epoch: Option<u64>,
    /// The link floor, if present.
    pub floor: Option<u64>,
    /// Whether a link MAC field is present (checked by the link layer, not here).
    pub has_mac: bool,
}

impl Message {
    /// The message type byte.
    pub fn msg_type(&self) -> u8 {
        match self {
            Message::CryptoRequest(_) => CRYPTO_REQUEST,
            Message::CryptoAccept(_) => CRYPTO_ACCEPT,
            Message::CryptoSolicitation(_) => CRYPTO_SOLICITATION,
            Message::ProxyRequest(_) => PROXY_REQUEST,
            Message::ProxyAccept(_) => PROXY_ACCEPT,
            Message::Refusal(_) => REFUSAL,
            Message::SecureData(_) => SECURE_DATA,
            Message::PlainData(_) => PLAIN_DATA,
            Message::SealedData(_) => SEALED_DATA,
            Message::Ack(_) => ACK,
            Message::Close(_) => CLOSE,
            Message::Challenge(_) => CHALLENGE,
            Message::Resync(_) => RESYNC,
        }
    }

    fn session(&self) -> u64 {
        match self {
            Message::ProxyAccept(m) => m.session,
            Message::Refusal(m) => m.session,
            Message::PlainData(m) => m.session,
            Message::Close(m) => m.session,
            _ => 0,
        }
    }

    /// The body fields (without link fields).
    pub(crate) fn fields(&self) -> FieldWriter {
        self.fields_into(FieldWriter::new())
    }

    /// The body fields (without link fields), appended to `w`.
    fn fields_into(&self, w: FieldWriter) -> FieldWriter {
        match self {
            Message::CryptoRequest(m) => {
                let mut w = w.u64(F_REQUEST_ID, m.request_id);
                if let Some(a) = &m.appliance {
                    w = w.str(F_APPLIANCE, a);
                }
                if !m.suites.is_empty() {
                    w = w.u16_list(F_SUITES, &m.suites);
                }
                padding(w, m.padding)
            }
            Message::CryptoAccept(m) => {
                let mut w = w.u64(F_REQUEST_ID, m.request_id);
                if let Some(a) = &m.appliance {
                    w = w.str(F_APPLIANCE, a);
                }
                if let Some(d) = &m.designation {
                    w = w.nested(F_DESIGNATION, designation_fields(d));
                }
                w
            }
            Message::CryptoSolicitation(m) => match &m.designation {
                Some(d) => w.nested(F_DESIGNATION, designation_fields(d)),
                None => w,
            },
            Message::ProxyRequest(m) => {
                let mut w = w.u64(F_REQUEST_ID, m.request_id);
                if let Some(a) = &m.appliance {
                    w = w.str(F_APPLIANCE, a);
                }
                if let Some(r) = m.remote {
                    w = w.addr(F_REMOTE_ADDR, r);
                }
                if let Some(p) = &m.remote_identity {
                    w = w.nested(F_PEER, peer_fields(p));
                }
                w
            }
            Message::ProxyAccept(m) => {
                let mut w = w.u64(F_REQUEST_ID, m.request_id);
                if let Some(a) = &m.appliance {
                    w = w.str(F_APPLIANCE, a);
                }
                if let Some(p) = &m.peer {
                    w = w.nested(F_PEER, peer_fields(p));
                }
                w
            }
            Message::Refusal(m) => {
                let mut w = w.u8(F_REASON, m.reason.code());
                if let Some(id) = m.request_id {
                    w = w.u64(F_REQUEST_ID, id);
                }
                if let Some(a) = &m.appliance {
                    w = w.str(F_APPLIANCE, a);
                }
                w
            }
            Message::SecureData(m) => w.bytes(F_PAYLOAD, &m.payload),
            Message::PlainData(m) => {
                let mut w = w;
                if let Some(p) = &m.peer {
                    w = w.nested(F_PEER, peer_fields(p));
                }
                padding(w.bytes(F_PAYLOAD, &m.payload), m.padding)
            }
            Message::SealedData(m) => w
                .u32(F_KEY_ID, m.key_id)
                .u64(F_NONCE_SEQ, m.seq)
                .bytes(F_CIPHERTEXT, &m.ciphertext),
            Message::Ack(m) => w.u64(F_ACK, m.seq),
            Message::Close(_) => w,
            Message::Challenge(m) => w.u64(F_NONCE, m.nonce),
            Message::Resync(m) => w.u64(F_NONCE, m.nonce),
        }
    }

    /// Encode as one wire message without link fields (open network and channel legs).
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        wire::encode(self.msg_type(), self.session(), self.fields())
    }

    /// Encode with link fields and, if `mac` is given, the link MAC computed by `mac` over
    /// everything before the MAC field (header included).
    pub(crate) fn encode_link(
        &self,
        link: LinkFields,
        mac: Option<&MacFn<'_>>,
    ) -> Result<Vec<u8>, WireError> {
        let Some(mac) = mac else {
            let w = link.append(self.fields());
            return wire::encode(self.msg_type(), self.session(), w);
        };
        // One buffer sized for the whole message: the header is written in place once the
        // body's length is known, and the MAC field appended; a link message is encoded for
        // every send and every acknowledgement, so no growing and copying of buffers.
        let room = wire::HEADER_LEN;
        let capacity = room + self.body_len_hint() + LinkFields::MAX_LEN + MAC_FIELD_LEN;
        let w = link.append(self.fields_into(FieldWriter::with_room(room, capacity)));
        let mut out = w.finish()?;
        let body = out.len() - room;
        let body_len =
            u32::try_from(body + MAC_FIELD_LEN).map_err(|_| WireError::FieldTooLong(body))?;
        let header = wire::Header {
            msg_type: self.msg_type(),
            body_len,
            session: self.session(),
        };
        out[..room].copy_from_slice(&header.to_bytes());
        let tag = mac(&out);
        // The MAC field as `FieldWriter::bytes` writes it (type, length, value), read back
        // by `split_mac`.
        out.extend_from_slice(&F_MAC.to_be_bytes());
        out.extend_from_slice(&(tag.len() as u16).to_be_bytes());
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// About how long the body fields are: the variable part exactly, the rest generously
    /// (a hint for a buffer's capacity, never a bound).
    fn body_len_hint(&self) -> usize {
        const FIXED: usize = 128;
        FIXED
            + match self {
                Message::SecureData(m) => m.payload.len(),
                Message::PlainData(m) => m.payload.len() + m.padding,
                Message::SealedData(m) => m.ciphertext.len(),
                _ => 0,
            }
    }

    /// Decode one message (link fields, if any, are reported in [`Decoded`]).
    pub fn decode(buf: &[u8], limits: &Limits) -> Result<Decoded, WireError> {
        let msg = WireMessage::decode(buf, limits)?;
        let f = msg.fields;
        f.check_known(&KNOWN, limits.unknown_fields)?;
        let session = msg.session();
        let message = match msg.msg_type() {
            CRYPTO_REQUEST => Message::CryptoRequest(CryptoRequest {
                request_id: f.u64(F_REQUEST_ID)?,
                appliance: opt_name(&f, F_APPLIANCE)?,
                suites: match f.get(F_SUITES)? {
                    Some(_) => {
                        let s = f.u16_list(F_SUITES)?;
                        if s.len() > MAX_SUITES {
                            return Err(WireError::BadFieldLength {
                                field: F_SUITES,
                                len: s.len() * 2,
                            });
                        }
                        s
                    }
                    None => Vec::new(),
                },
                padding: padding_len(&f)?,
            }),
            CRYPTO_ACCEPT => Message::CryptoAccept(CryptoAccept {
                request_id: f.u64(F_REQUEST_ID)?,
                appliance: opt_name(&f, F_APPLIANCE)?,
                designation: opt_designation(&f)?,
            }),
            CRYPTO_SOLICITATION => Message::CryptoSolicitation(CryptoSolicitation {
                designation: opt_designation(&f)?,
            }),
            PROXY_REQUEST => Message::ProxyRequest(ProxyRequest {
                request_id: f.u64(F_REQUEST_ID)?,
                appliance: opt_name(&f, F_APPLIANCE)?,
                remote: f
                    .get(F_REMOTE_ADDR)?
                    .map(|v| wire::decode_addr(F_REMOTE_ADDR, v))
                    .transpose()?,
                remote_identity: opt_peer(&f)?,
            }),
            PROXY_ACCEPT => Message::ProxyAccept(ProxyAccept {
                request_id: f.u64(F_REQUEST_ID)?,
                session,
                appliance: opt_name(&f, F_APPLIANCE)?,
                peer: opt_peer(&f)?,
            }),
            REFUSAL => Message::Refusal(Refusal {
                reason: OffloadRefusal::from_code(f.u8(F_REASON)?),
                request_id: f.opt_u64(F_REQUEST_ID)?,
                session,
                appliance: opt_name(&f, F_APPLIANCE)?,
            }),
            SECURE_DATA => Message::SecureData(SecureData {
                payload: payload(&f)?,
            }),
            PLAIN_DATA => Message::PlainData(PlainData {
                session,
                peer: opt_peer(&f)?,
                payload: payload(&f)?,
                padding: padding_len(&f)?,
            }),
            SEALED_DATA => {
                let ciphertext = f.bytes(F_CIPHERTEXT)?;
                if ciphertext.len() > MAX_PAYLOAD + crate::crypto::aead::TAG_LEN {
                    return Err(WireError::BadFieldLength {
                        field: F_CIPHERTEXT,
                        len: ciphertext.len(),
                    });
                }
                Message::SealedData(SealedData {
                    key_id: f.u32(F_KEY_ID)?,
                    seq: f.u64(F_NONCE_SEQ)?,
                    ciphertext: ciphertext.to_vec(),
                })
            }
            ACK => Message::Ack(Ack { seq: f.u64(F_ACK)? }),
            CLOSE => Message::Close(Close { session }),
            CHALLENGE => Message::Challenge(Challenge {
                nonce: f.u64(F_NONCE)?,
            }),
            RESYNC => Message::Resync(Resync {
                nonce: f.u64(F_NONCE)?,
            }),
            t => return Err(WireError::UnexpectedType(t)),
        };
        Ok(Decoded {
            message,
            seq: f.opt_u64(F_SEQ)?,
            epoch: f.opt_u64(F_EPOCH)?,
            floor: f.opt_u64(F_FLOOR)?,
            has_mac: f.get(F_MAC)?.is_some(),
        })
    }
}

/// Split a keyed link message into (bytes covered by the MAC, the MAC), if the MAC field is
/// the last field and the only one.
pub(crate) fn split_mac(buf: &[u8]) -> Option<(&[u8], [u8; 32])> {
    let cut = buf.len().checked_sub(MAC_FIELD_LEN)?;
    let (covered, tail) = buf.split_at(cut);
    let header: [u8; 4] = tail.get(..4)?.try_into().ok()?;
    let ty = u16::from_be_bytes([header[0], header[1]]);
    let len = u16::from_be_bytes([header[2], header[3]]);
    if ty != F_MAC || len != 32 {
        return None;
    }
    let mac: [u8; 32] = tail.get(4..)?.try_into().ok()?;
    Some((covered, mac))
}

fn padding(w: FieldWriter, len: usize) -> FieldWriter {
    if len == 0 {
        return w;
    }
    w.bytes(F_PADDING, &alloc::vec![0u8; len.min(MAX_PAYLOAD)])
}

fn padding_len(f: &Fields<'_>) -> Result<usize, WireError> {
    Ok(f.get(F_PADDING)?.map_or(0, <[u8]>::len))
}

fn payload(f: &Fields<'_>) -> Result<Vec<u8>, WireError> {
    let p = f.bytes(F_PAYLOAD)?;
    if p.len() > MAX_PAYLOAD {
        return Err(WireError::BadFieldLength {
            field: F_PAYLOAD,
            len: p.len(),
        });
    }
    Ok(p.to_vec())
}

fn opt_name(f: &Fields<'_>, ty: u16) -> Result<Option<String>, WireError> {
    match f.get(ty)? {
        None => Ok(None),
        Some(v) if v.is_empty() || v.len() > MAX_NAME_LEN => Err(WireError::BadFieldLength {
            field: ty,
            len: v.len(),
        }),
        Some(v) => core::str::from_utf8(v)
            .map(|s| Some(String::from(s)))
            .map_err(|_| WireError::BadValue(ty)),
    }
}

fn designation_fields(d: &Designation) -> FieldWriter {
    FieldWriter::new()
        .addr(F_PROXY_ADDR, d.proxy)
        .str(F_APPLIANCE, &d.appliance)
}

fn opt_designation(f: &Fields<'_>) -> Result<Option<Designation>, WireError> {
    if f.get(F_DESIGNATION)?.is_none() {
        return Ok(None);
    }
    let d = f.nested(F_DESIGNATION, MAX_NESTED)?;
    d.check_known(&[F_PROXY_ADDR, F_APPLIANCE], UnknownFieldPolicy::Skip)?;
    Ok(Some(Designation {
        proxy: d.addr(F_PROXY_ADDR)?,
        appliance: opt_name(&d, F_APPLIANCE)?.ok_or(WireError::MissingField(F_APPLIANCE))?,
    }))
}

fn peer_fields(p: &Peer) -> FieldWriter {
    let w = FieldWriter::new();
    match p {
        Peer::Certificate(name) => w.u8(F_PEER_KIND, 1).str(F_PEER_NAME, name),
        Peer::Psk(id) => w.u8(F_PEER_KIND, 2).bytes(F_PEER_NAME, id),
        Peer::DirectKey(id) => w.u8(F_PEER_KIND, 3).bytes(F_PEER_NAME, &id.to_be_bytes()),
    }
}

fn opt_peer(f: &Fields<'_>) -> Result<Option<Peer>, WireError> {
    if f.get(F_PEER)?.is_none() {
        return Ok(None);
    }
    let p = f.nested(F_PEER, MAX_NESTED)?;
    p.check_known(&[F_PEER_KIND, F_PEER_NAME], UnknownFieldPolicy::Skip)?;
    let name = p.bytes(F_PEER_NAME)?;
    if name.len() > MAX_PEER_NAME {
        return Err(WireError::BadFieldLength {
            field: F_PEER_NAME,
            len: name.len(),
        });
    }
    Ok(Some(match p.u8(F_PEER_KIND)? {
        1 => Peer::Certificate(
            core::str::from_utf8(name)
                .map_err(|_| WireError::BadValue(F_PEER_NAME))?
                .into(),
        ),
        2 => Peer::Psk(name.to_vec()),
        3 => Peer::DirectKey(u32::from_be_bytes(name.try_into().map_err(|_| {
            WireError::BadFieldLength {
                field: F_PEER_NAME,
                len: name.len(),
            }
        })?)),
        _ => return Err(WireError::BadValue(F_PEER_KIND)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn samples() -> Vec<Message> {
        let d = Designation {
            proxy: "192.168.0.2:8443".parse().unwrap(),
            appliance: "microwave".into(),
        };
        vec![
            Message::CryptoRequest(CryptoRequest {
                request_id: 7,
                appliance: None,
                suites: vec![1, 2],
                padding: 100,
            }),
            Message::CryptoRequest(CryptoRequest {
                request_id: 8,
                appliance: Some("aircon".into()),
                suites: vec![],
                padding: 0,
            }),
            Message::CryptoAccept(CryptoAccept {
                request_id: 7,
                appliance: None,
                designation: Some(d.clone()),
            }),
            Message::CryptoSolicitation(CryptoSolicitation {
                designation: Some(d),
            }),
            Message::CryptoSolicitation(CryptoSolicitation { designation: None }),
            Message::ProxyRequest(ProxyRequest {
                request_id: 9,
                appliance: None,
                remote: Some("[2001:db8::7]:7443".parse().unwrap()),
                remote_identity: Some(Peer::Psk(b"phone".to_vec())),
            }),
            Message::ProxyAccept(ProxyAccept {
                request_id: 9,
                session: 44,
                appliance: Some("tv".into()),
                peer: Some(Peer::Certificate("phone.example".into())),
            }),
            Message::Refusal(Refusal {
                reason: OffloadRefusal::AccessDenied,
                request_id: Some(3),
                session: 0,
                appliance: Some("tv".into()),
            }),
            Message::SecureData(SecureData {
                payload: b"heat for one hour".to_vec(),
            }),
            Message::PlainData(PlainData {
                session: 5,
                peer: Some(Peer::DirectKey(77)),
                payload: vec![1; MAX_PAYLOAD],
                padding: 3,
            }),
            Message::SealedData(SealedData {
                key_id: 1,
                seq: 2,
                ciphertext: vec![3; 40],
            }),
            Message::Ack(Ack { seq: 12 }),
            Message::Close(Close { session: 99 }),
            Message::Challenge(Challenge { nonce: 5 }),
            Message::Resync(Resync { nonce: 0 }),
        ]
    }

    #[test]
    fn every_message_round_trips_with_and_without_link_fields() {
        let limits = Limits::default();
        for m in samples() {
            let plain = m.encode().unwrap();
            let d = Message::decode(&plain, &limits).unwrap();
            assert_eq!(d.message, m);
            assert_eq!(
                (d.seq, d.epoch, d.floor, d.has_mac),
                (None, None, None, false)
            );
            assert!(type_name(plain[3]).is_some());

            let mac = |b: &[u8]| crate::crypto::kdf::hmac_sha256(b"k", b);
            let link = LinkFields {
                seq: Some(41),
                epoch: Some(7),
                floor: Some(40),
            };
            let linked = m.encode_link(link, Some(&mac)).unwrap();
            let d = Message::decode(&linked, &limits).unwrap();
            assert_eq!(d.message, m);
            assert_eq!(
                (d.seq, d.epoch, d.floor, d.has_mac),
                (Some(41), Some(7), Some(40), true)
            );
            let (covered, tag) = split_mac(&linked).unwrap();
            assert_eq!(tag, mac(covered));
        }
    }

    #[test]
    fn bounds_are_enforced_when_decoding() {
        let limits = Limits::default();
        let long_name = "x".repeat(MAX_NAME_LEN + 1);
        let bad = wire::encode(
            CRYPTO_REQUEST,
            0,
            FieldWriter::new()
                .u64(F_REQUEST_ID, 1)
                .str(F_APPLIANCE, &long_name),
        )
        .unwrap();
        assert!(matches!(
            Message::decode(&bad, &limits),
            Err(WireError::BadFieldLength { .. })
        ));
        let big = wire::encode(
            SECURE_DATA,
            0,
            FieldWriter::new().bytes(F_PAYLOAD, &vec![0; MAX_PAYLOAD + 1]),
        )
        .unwrap();
        assert!(matches!(
            Message::decode(&big, &limits),
            Err(WireError::BadFieldLength { .. })
        ));
        let unknown = wire::encode(0x2F, 0, FieldWriter::new()).unwrap();
        assert_eq!(
            Message::decode(&unknown, &limits),
            Err(WireError::UnexpectedType(0x2F))
        );
        let missing = wire::encode(PROXY_REQUEST, 0, FieldWriter::new()).unwrap();
        assert_eq!(
            Message::decode(&missing, &limits),
            Err(WireError::MissingField(F_REQUEST_ID))
        );
        let bad_peer = wire::encode(
            PLAIN_DATA,
            1,
            FieldWriter::new()
                .nested(
                    F_PEER,
                    FieldWriter::new()
                        .u8(F_PEER_KIND, 9)
                        .bytes(F_PEER_NAME, b"x"),
                )
                .bytes(F_PAYLOAD, b"p"),
        )
        .unwrap();
        assert_eq!(
            Message::decode(&bad_peer, &limits),
            Err(WireError::BadValue(F_PEER_KIND))
        );
    }

    #[test]
    fn mac_must_be_the_last_field() {
        assert!(split_mac(&[0u8; 10]).is_none());
        let m = Message::Ack(Ack { seq: 1 });
        let plain = m.encode_link(LinkFields::default(), None).unwrap();
        assert!(split_mac(&plain).is_none());
    }
}

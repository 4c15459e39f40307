//! Seed 002's messages (deputy wire format, types 0x30–0x4F). Layouts: `docs/wire.md`.
//!
//! Three groups:
//! - **UDP to and from the server**: [`Register`] (S202), [`RegisterAck`], [`Notice`]
//!   (S205), [`Probe`], [`ProbeAck`]. Register, RegisterAck and Notice carry an
//!   HMAC-SHA256 under the device's registration key.
//! - **Inside the secure channels** (each a whole wire message in one channel record):
//!   issuer ↔ server [`ConnectRequest`] (S203), [`AcceptorHello`]; acceptor ↔ server
//!   [`Fetch`], [`Offer`], [`Accept`] (S206); relayed both ways [`SealedPassword`],
//!   [`Proceed`], [`Sync`], [`Refused`], [`Outcome`].
//! - **Device to device over UDP** (S208–S209): [`Punch`], [`PunchAck`], [`PunchConfirm`],
//!   [`PeerData`], each with a 16-byte truncated HMAC-SHA256 under the session's link key.
//!
//! The header's session id is the request id (0 for registrations). Every field is
//! critical; a MAC, where present, is the last field and covers the type, the session id
//! and every field before it.

use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use super::{DeviceId, RendezvousError, RequestRefusal};
use crate::crypto::ct_eq;
use crate::crypto::kdf::HmacSha256Key;
use crate::wire::{
    self, CRITICAL, FIELD_HEADER_LEN, FieldWriter, Fields, Limits, Message, WireError,
};

/// S202 device registration (acceptor → server, UDP).
pub const REGISTER: u8 = 0x30;
/// Registration acknowledgment (server → acceptor, UDP).
pub const REGISTER_ACK: u8 = 0x31;
/// S205 connection-request notice (server → acceptor, UDP).
pub const NOTICE: u8 = 0x32;
/// Issuer's address probe (issuer → server, UDP).
pub const PROBE: u8 = 0x33;
/// Answer to a probe (server → issuer, UDP).
pub const PROBE_ACK: u8 = 0x34;
/// S203 connection request (issuer → server, in the channel).
pub const CONNECT_REQUEST: u8 = 0x38;
/// The acceptor's answer, relayed (server → issuer, in the channel).
pub const ACCEPTOR_HELLO: u8 = 0x39;
/// The password sealed to the acceptor (issuer → server → acceptor, opaque to the server).
pub const SEALED_PASSWORD: u8 = 0x3A;
/// S207 passed: go ahead (acceptor → server → issuer); DCUtR's second Connect.
pub const PROCEED: u8 = 0x3B;
/// Start a hole-punching attempt (issuer → server → acceptor); DCUtR's Sync.
pub const SYNC: u8 = 0x3C;
/// A refusal (server or acceptor → issuer).
pub const REFUSED: u8 = 0x3D;
/// A device reports the end of the request (device → server).
pub const OUTCOME: u8 = 0x3E;
/// S206 the acceptor asks for its request (acceptor → server, in the channel).
pub const FETCH: u8 = 0x40;
/// S206 the connection request as handed to the acceptor (server → acceptor).
pub const OFFER: u8 = 0x41;
/// The acceptor's key share and signature (acceptor → server).
pub const ACCEPT: u8 = 0x42;
/// S208 communication request / hole punch (device → device, UDP).
pub const PUNCH: u8 = 0x48;
/// A punch arrived (device → device, UDP).
pub const PUNCH_ACK: u8 = 0x49;
/// An acknowledgment arrived (device → device, UDP).
pub const PUNCH_CONFIRM: u8 = 0x4A;
/// S209 data: channel bytes with sequence and acknowledgment (device → device, UDP).
pub const PEER_DATA: u8 = 0x4B;

/// Human name of a rendezvous message type, for traces.
pub fn type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        REGISTER => "Register",
        REGISTER_ACK => "RegisterAck",
        NOTICE => "Notice",
        PROBE => "Probe",
        PROBE_ACK => "ProbeAck",
        CONNECT_REQUEST => "ConnectRequest",
        ACCEPTOR_HELLO => "AcceptorHello",
        SEALED_PASSWORD => "SealedPassword",
        PROCEED => "Proceed",
        SYNC => "Sync",
        REFUSED => "Refused",
        OUTCOME => "Outcome",
        FETCH => "Fetch",
        OFFER => "Offer",
        ACCEPT => "Accept",
        PUNCH => "Punch",
        PUNCH_ACK => "PunchAck",
        PUNCH_CONFIRM => "PunchConfirm",
        PEER_DATA => "PeerData",
        _ => return None,
    })
}

const F_DEVICE: u16 = CRITICAL | 0x01;
const F_TIMESTAMP: u16 = CRITICAL | 0x02;
const F_NONCE: u16 = CRITICAL | 0x03;
const F_MAC: u16 = CRITICAL | 0x04;
const F_OBSERVED: u16 = CRITICAL | 0x05;
const F_STATUS: u16 = CRITICAL | 0x06;
const F_SERVER_TIME: u16 = CRITICAL | 0x07;
const F_LIFETIME: u16 = CRITICAL | 0x08;
const F_TOKEN: u16 = CRITICAL | 0x09;
const F_SHARE: u16 = CRITICAL | 0x0A;
const F_RANDOM: u16 = CRITICAL | 0x0B;
const F_CANDIDATE: u16 = CRITICAL | 0x0C;
const F_DECLARED: u16 = CRITICAL | 0x0D;
const F_CERT: u16 = CRITICAL | 0x0E;
const F_SIGNATURE: u16 = CRITICAL | 0x0F;
const F_SEALED: u16 = CRITICAL | 0x10;
const F_ATTEMPT: u16 = CRITICAL | 0x11;
const F_REASON: u16 = CRITICAL | 0x12;
const F_RETRY_AFTER: u16 = CRITICAL | 0x13;
const F_ISSUER_ADDR: u16 = CRITICAL | 0x14;
const F_PUNCH_ID: u16 = CRITICAL | 0x15;
const F_FROM_PORT: u16 = CRITICAL | 0x16;
const F_DEST: u16 = CRITICAL | 0x17;
const F_SEQ: u16 = CRITICAL | 0x18;
const F_ACK: u16 = CRITICAL | 0x19;
const F_PAYLOAD: u16 = CRITICAL | 0x1A;
const F_CONNECTED: u16 = CRITICAL | 0x1B;
const F_ACKER_PORT: u16 = CRITICAL | 0x1C;
const F_ACK_DEST: u16 = CRITICAL | 0x1D;
const F_DEVICE_WIDE: u16 = CRITICAL | 0x1E;

/// Length of the MAC on registrations, acknowledgments and notices.
pub const REGISTRATION_MAC_LEN: usize = 32;
/// Length of the MAC on device-to-device datagrams.
pub const PEER_MAC_LEN: usize = 16;
/// Most address candidates one message carries.
pub const MAX_CANDIDATES: usize = 4;
/// Largest sealed password accepted (a padded 64-byte password plus length and tag).
pub const MAX_SEALED_LEN: usize = 128;
/// Largest payload of one [`PeerData`] datagram.
pub const MAX_PEER_PAYLOAD: usize = 1200;

const MAC_CONTEXT: &[u8] = b"deputy rendezvous mac v1\0";

/// Compute the MAC of a message: `HMAC(key, context ‖ type ‖ session ‖ body)` (truncate
/// it to the message's MAC length).
fn mac(key: &HmacSha256Key, ty: u8, session: u64, body: &[u8]) -> [u8; 32] {
    key.mac_parts(&[MAC_CONTEXT, &[ty], &session.to_be_bytes(), body])
}

/// Encode a message whose last field is a MAC under `key`.
fn encode_with_mac(
    ty: u8,
    session: u64,
    w: FieldWriter,
    key: &[u8],
    mac_len: usize,
) -> Result<Vec<u8>, WireError> {
    encode_with_mac_key(ty, session, w, &HmacSha256Key::new(key), mac_len)
}

/// [`encode_with_mac`] under a key made ready once (the server's registration path keys
/// its acknowledgement with the state it verified the registration with).
fn encode_with_mac_key(
    ty: u8,
    session: u64,
    w: FieldWriter,
    key: &HmacSha256Key,
    mac_len: usize,
) -> Result<Vec<u8>, WireError> {
    let full = mac(key, ty, session, w.fields()?);
    let tag = full.get(..mac_len).unwrap_or(&full);
    wire::encode(ty, session, w.bytes(F_MAC, tag))
}

/// Whether the message's last field is a MAC of the right length that verifies under
/// `key`. Constant time in the MAC comparison.
pub fn verify_mac(msg: &Message<'_>, key: &[u8], mac_len: usize) -> bool {
    verify_mac_key(msg, &HmacSha256Key::new(key), mac_len)
}

/// [`verify_mac`] under a key made ready once.
pub(crate) fn verify_mac_key(msg: &Message<'_>, key: &HmacSha256Key, mac_len: usize) -> bool {
    let body = msg.fields.as_bytes();
    let Some(last) = msg.fields.iter().last() else {
        return false;
    };
    if last.ty != F_MAC || last.value.len() != mac_len {
        return false;
    }
    let covered = &body[..body.len() - FIELD_HEADER_LEN - last.value.len()];
    let expected = mac(key, msg.msg_type(), msg.session(), covered);
    expected
        .get(..mac_len)
        .is_some_and(|expected| ct_eq(expected, last.value))
}

fn expect_type(msg: &Message<'_>, ty: u8) -> Result<(), WireError> {
    if msg.msg_type() == ty {
        Ok(())
    } else {
        Err(WireError::UnexpectedType(msg.msg_type()))
    }
}

fn check(msg: &Message<'_>, ty: u8, known: &[u16], limits: &Limits) -> Result<(), WireError> {
    expect_type(msg, ty)?;
    msg.fields.check_known(known, limits.unknown_fields)
}

fn candidates(f: &Fields<'_>) -> Result<Vec<SocketAddr>, WireError> {
    let mut out = Vec::new();
    for v in f.all(F_CANDIDATE) {
        if out.len() == MAX_CANDIDATES {
            return Err(WireError::TooManyFields {
                max: MAX_CANDIDATES,
            });
        }
        out.push(wire::decode_addr(F_CANDIDATE, v)?);
    }
    Ok(out)
}

fn write_candidates(mut w: FieldWriter, list: &[SocketAddr]) -> FieldWriter {
    for a in list.iter().take(MAX_CANDIDATES) {
        w.push(F_CANDIDATE, &wire::encode_addr(*a));
    }
    w
}

fn opt_addr(f: &Fields<'_>, ty: u16) -> Result<Option<SocketAddr>, WireError> {
    f.get(ty)?.map(|v| wire::decode_addr(ty, v)).transpose()
}

// ----- UDP: registration -----

/// S202 device registration: the acceptor's ID, a wall-clock timestamp and a nonce,
/// authenticated with the device's registration key. The server records the address the
/// datagram came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    /// The registering device.
    pub device: DeviceId,
    /// The device's wall clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Fresh random bytes (echoed in the acknowledgment).
    pub nonce: [u8; 16],
}

impl Register {
    /// Encode, MAC'd with the device's registration key.
    pub fn encode(&self, key: &[u8]) -> Result<Vec<u8>, WireError> {
        let w = FieldWriter::new()
            .u64(F_DEVICE, self.device.0)
            .u64(F_TIMESTAMP, self.timestamp_ms)
            .bytes(F_NONCE, &self.nonce);
        encode_with_mac(REGISTER, 0, w, key, REGISTRATION_MAC_LEN)
    }

    /// Decode without checking the MAC (the key depends on the device ID); check it with
    /// [`verify_mac`].
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(
            msg,
            REGISTER,
            &[F_DEVICE, F_TIMESTAMP, F_NONCE, F_MAC],
            limits,
        )?;
        let f = &msg.fields;
        Ok(Register {
            device: DeviceId(f.u64(F_DEVICE)?),
            timestamp_ms: f.u64(F_TIMESTAMP)?,
            nonce: f.array(F_NONCE)?,
        })
    }
}

/// The server's verdict on an authentic registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckStatus {
    /// Recorded.
    Accepted,
    /// The timestamp was outside the allowed skew; `server_time_ms` tells the device the
    /// server's clock so it can correct its own.
    Stale,
}

/// Answer to an authentic registration, MAC'd with the device's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterAck {
    /// The device.
    pub device: DeviceId,
    /// The registration's nonce.
    pub nonce: [u8; 16],
    /// The public address the registration came from.
    pub observed: SocketAddr,
    /// The server's wall clock, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
    /// How long the entry lives without another registration.
    pub lifetime: Duration,
    /// Accepted or stale.
    pub status: AckStatus,
}

impl RegisterAck {
    /// Encode, MAC'd with the device's registration key.
    pub fn encode(&self, key: &[u8]) -> Result<Vec<u8>, WireError> {
        self.encode_with_key(&HmacSha256Key::new(key))
    }

    /// [`RegisterAck::encode`] under the key made ready once.
    pub(crate) fn encode_with_key(&self, key: &HmacSha256Key) -> Result<Vec<u8>, WireError> {
        // Room for every field and the MAC: one allocation for the fields.
        let w = FieldWriter::with_capacity(128)
            .u64(F_DEVICE, self.device.0)
            .bytes(F_NONCE, &self.nonce)
            .addr(F_OBSERVED, self.observed)
            .u64(F_SERVER_TIME, self.server_time_ms)
            .u32(F_LIFETIME, super::millis_u32(self.lifetime) / 1000)
            .u8(
                F_STATUS,
                match self.status {
                    AckStatus::Accepted => 0,
                    AckStatus::Stale => 1,
                },
            );
        encode_with_mac_key(REGISTER_ACK, 0, w, key, REGISTRATION_MAC_LEN)
    }

    /// Decode without checking the MAC.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(
            msg,
            REGISTER_ACK,
            &[
                F_DEVICE,
                F_NONCE,
                F_OBSERVED,
                F_SERVER_TIME,
                F_LIFETIME,
                F_STATUS,
                F_MAC,
            ],
            limits,
        )?;
        let f = &msg.fields;
        Ok(RegisterAck {
            device: DeviceId(f.u64(F_DEVICE)?),
            nonce: f.array(F_NONCE)?,
            observed: f.addr(F_OBSERVED)?,
            server_time_ms: f.u64(F_SERVER_TIME)?,
            lifetime: Duration::from_secs(u64::from(f.u32(F_LIFETIME)?)),
            status: match f.u8(F_STATUS)? {
                0 => AckStatus::Accepted,
                1 => AckStatus::Stale,
                _ => return Err(WireError::BadValue(F_STATUS)),
            },
        })
    }
}

/// S205 connection-request notice (the seed's flag, Fig. 8a/b): "fetch request `request`".
/// Sent as a reply to the registration's address so the device's NAT lets it in; MAC'd
/// so nobody else can make a weak device open connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The request (header session id).
    pub request: u64,
    /// The device.
    pub device: DeviceId,
    /// The server's wall clock, milliseconds (old notices are ignored).
    pub server_time_ms: u64,
}

impl Notice {
    /// Encode, MAC'd with the device's registration key.
    pub fn encode(&self, key: &[u8]) -> Result<Vec<u8>, WireError> {
        let w = FieldWriter::new()
            .u64(F_DEVICE, self.device.0)
            .u64(F_SERVER_TIME, self.server_time_ms);
        encode_with_mac(NOTICE, self.request, w, key, REGISTRATION_MAC_LEN)
    }

    /// Decode without checking the MAC.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(msg, NOTICE, &[F_DEVICE, F_SERVER_TIME, F_MAC], limits)?;
        let f = &msg.fields;
        Ok(Notice {
            request: msg.session(),
            device: DeviceId(f.u64(F_DEVICE)?),
            server_time_ms: f.u64(F_SERVER_TIME)?,
        })
    }
}

/// The issuer's UDP probe: lets the server see the issuer's public UDP address for the
/// peer socket. The token was sent inside the channel in the [`ConnectRequest`], so only
/// the issuer can make a probe count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The request (header session id).
    pub request: u64,
    /// The request's probe token.
    pub token: [u8; 16],
}

impl Probe {
    /// Encode.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        wire::encode(
            PROBE,
            self.request,
            FieldWriter::new().bytes(F_TOKEN, &self.token),
        )
    }

    /// Decode.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(msg, PROBE, &[F_TOKEN], limits)?;
        Ok(Probe {
            request: msg.session(),
            token: msg.fields.array(F_TOKEN)?,
        })
    }
}

/// The server saw the probe from `observed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeAck {
    /// The request (header session id).
    pub request: u64,
    /// The probe's token.
    pub token: [u8; 16],
    /// Where the probe came from.
    pub observed: SocketAddr,
}

impl ProbeAck {
    /// Encode.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        wire::encode(
            PROBE_ACK,
            self.request,
            FieldWriter::new()
                .bytes(F_TOKEN, &self.token)
                .addr(F_OBSERVED, self.observed),
        )
    }

    /// Decode.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(msg, PROBE_ACK, &[F_TOKEN, F_OBSERVED], limits)?;
        Ok(ProbeAck {
            request: msg.session(),
            token: msg.fields.array(F_TOKEN)?,
            observed: msg.fields.addr(F_OBSERVED)?,
        })
    }
}

// ----- in the channels -----

/// S203 connection request (Fig. 7c/d): the target device, the issuer's ephemeral key
/// share for the end-to-end exchange, and how to reach the issuer. Unlike the seed, the
/// password is *not* here: it goes sealed to the acceptor later ([`SealedPassword`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The request id the issuer chose (header session id).
    pub request: u64,
    /// The target device.
    pub device: DeviceId,
    /// The issuer's X25519 public value.
    pub share: [u8; 32],
    /// The issuer's random.
    pub random: [u8; 32],
    /// The token the issuer's UDP [`Probe`] will carry.
    pub token: [u8; 16],
    /// A public address the issuer knows is mapped to its peer socket (a static NAPT or
    /// UPnP mapping, ¶0109), if any.
    pub declared: Option<SocketAddr>,
}

impl ConnectRequest {
    /// Encode.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let w = FieldWriter::new()
            .u64(F_DEVICE, self.device.0)
            .bytes(F_SHARE, &self.share)
            .bytes(F_RANDOM, &self.random)
            .bytes(F_TOKEN, &self.token)
            .opt(F_DECLARED, self.declared.map(wire::encode_addr).as_deref());
        wire::encode(CONNECT_REQUEST, self.request, w)
    }

    /// Decode.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(
            msg,
            CONNECT_REQUEST,
            &[F_DEVICE, F_SHARE, F_RANDOM, F_TOKEN, F_DECLARED],
            limits,
        )?;
        let f = &msg.fields;
        Ok(ConnectRequest {
            request: msg.session(),
            device: DeviceId(f.u64(F_DEVICE)?),
            share: f.array(F_SHARE)?,
            random: f.array(F_RANDOM)?,
            token: f.array(F_TOKEN)?,
            declared: opt_addr(f, F_DECLARED)?,
        })
    }
}

/// S206: the acceptor asks the server for the request named in the notice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    /// The request (header session id).
    pub request: u64,
    /// The device asking (must match its certificate).
    pub device: DeviceId,
}

impl Fetch {
    /// Encode.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        wire::encode(
            FETCH,
            self.request,
            FieldWriter::new().u64(F_DEVICE, self.device.0),
        )
    }

    /// Decode.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(msg, FETCH, &[F_DEVICE], limits)?;
        Ok(Fetch {
            request: msg.session(),
            device: DeviceId(msg.fields.u64(F_DEVICE)?),
        })
    }
}

/// S206 connection request as the acceptor receives it (Fig. 8c/d): where the issuer is,
/// and its key share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The request (header session id).
    pub request: u64,
    /// The target device.
    pub device: DeviceId,
    /// The issuer's address as the server saw its stream (the back-off key).
    pub issuer_addr: SocketAddr,
    /// Where the issuer's peer socket can be reached: its declared mapping first, then
    /// the address its probe came from.
    pub candidates: Vec<SocketAddr>,
    /// The issuer's X25519 public value.
    pub share: [u8; 32],
    /// The issuer's random.
    pub random: [u8; 32],
}

impl Offer {
    /// Encode.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let w = FieldWriter::new()
            .u64(F_DEVICE, self.device.0)
            .addr(F_ISSUER_ADDR, self.issuer_addr)
            .bytes(F_SHARE, &self.share)
            .bytes(F_RANDOM, &self.random);
        wire::encode(OFFER, self.request, write_candidates(w, &self.candidates))
    }

    /// Decode.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(
            msg,
            OFFER,
            &[F_DEVICE, F_ISSUER_ADDR, F_SHARE, F_RANDOM, F_CANDIDATE],
            limits,
        )?;
        let f = &msg.fields;
        Ok(Offer {
            request: msg.session(),
            device: DeviceId(f.u64(F_DEVICE)?),
            issuer_addr: f.addr(F_ISSUER_ADDR)?,
            candidates: candidates(f)?,
            share: f.array(F_SHARE)?,
            random: f.array(F_RANDOM)?,
        })
    }
}

/// The acceptor's half of the end-to-end exchange: its key share and random, and its
/// device key's signature over the transcript (which includes the issuer's share, so the
/// server cannot substitute either).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accept {
    /// The request (header session id).
    pub request: u64,
    /// The acceptor's X25519 public value.
    pub share: [u8; 32],
    /// The acceptor's random.
    pub random: [u8; 32],
    /// Ed25519 signature by the device certificate's key.
    pub signature: [u8; 64],
}

impl Accept {
    /// Encode.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let w = FieldWriter::new()
            .bytes(F_SHARE, &self.share)
            .bytes(F_RANDOM, &self.random)
            .bytes(F_SIGNATURE, &self.signature);
        wire::encode(ACCEPT, self.request, w)
    }

    /// Decode.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(msg, ACCEPT, &[F_SHARE, F_RANDOM, F_SIGNATURE], limits)?;
        let f = &msg.fields;
        Ok(Accept {
            request: msg.session(),
            share: f.array(F_SHARE)?,
            random: f.array(F_RANDOM)?,
            signature: f.array(F_SIGNATURE)?,
        })
    }
}

/// The acceptor's answer as relayed to the issuer, with the device certificate the
/// server verified and the acceptor's registered address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptorHello {
    /// The request (header session id).
    pub request: u64,
    /// The acceptor's device certificate (the issuer verifies it against its CA).
    pub certificate: Vec<u8>,
    /// The acceptor's X25519 public value.
    pub share: [u8; 32],
    /// The acceptor's random.
    pub random: [u8; 32],
    /// The acceptor's signature over the transcript.
    pub signature: [u8; 64],
    /// Where the acceptor's socket can be reached (its registered public address).
    pub candidates: Vec<SocketAddr>,
}

impl AcceptorHello {
    /// Encode.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let w = FieldWriter::new()
            .bytes(F_CERT, &self.certificate)
            .bytes(F_SHARE, &self.share)
            .bytes(F_RANDOM, &self.random)
            .bytes(F_SIGNATURE, &self.signature);
        wire::encode(
            ACCEPTOR_HELLO,
            self.request,
            write_candidates(w, &self.candidates),
        )
    }

    /// Decode.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(
            msg,
            ACCEPTOR_HELLO,
            &[F_CERT, F_SHARE, F_RANDOM, F_SIGNATURE, F_CANDIDATE],
            limits,
        )?;
        let f = &msg.fields;
        let certificate = f.bytes(F_CERT)?;
        if certificate.len() > crate::crypto::cert::MAX_CERT_LEN {
            return Err(WireError::BadFieldLength {
                field: F_CERT,
                len: certificate.len(),
            });
        }
        Ok(AcceptorHello {
            request: msg.session(),
            certificate: certificate.to_vec(),
            share: f.array(F_SHARE)?,
            random: f.array(F_RANDOM)?,
            signature: f.array(F_SIGNATURE)?,
            candidates: candidates(f)?,
        })
    }
}

/// The password, AEAD-sealed under a key only the issuer and the acceptor hold. The
/// server relays the bytes unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedPassword {
    /// The request (header session id).
    pub request: u64,
    /// Ciphertext ‖ tag.
    pub sealed: Vec<u8>,
}

impl SealedPassword {
    /// Encode.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        wire::encode(
            SEALED_PASSWORD,
            self.request,
            FieldWriter::new().bytes(F_SEALED, &self.sealed),
        )
    }

    /// Decode.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(msg, SEALED_PASSWORD, &[F_SEALED], limits)?;
        let sealed = msg.fields.bytes(F_SEALED)?;
        if sealed.len() > MAX_SEALED_LEN {
            return Err(WireError::BadFieldLength {
                field: F_SEALED,
                len: sealed.len(),
            });
        }
        Ok(SealedPassword {
            request: msg.session(),
            sealed: sealed.to_vec(),
        })
    }
}

/// A message that carries only the request id: [`PROCEED`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proceed {
    /// The request (header session id).
    pub request: u64,
}

impl Proceed {
    /// Encode.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        wire::encode(PROCEED, self.request, FieldWriter::new())
    }

    /// Decode.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(msg, PROCEED, &[], limits)?;
        Ok(Proceed {
            request: msg.session(),
        })
    }
}

/// Start hole-punching attempt `attempt` now (the acceptor) or after RTT/2 (the issuer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sync {
    /// The request (header session id).
    pub request: u64,
    /// Attempt number, 1–3.
    pub attempt: u8,
}

impl Sync {
    /// Encode.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        wire::encode(
            SYNC,
            self.request,
            FieldWriter::new().u8(F_ATTEMPT, self.attempt),
        )
    }

    /// Decode.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(msg, SYNC, &[F_ATTEMPT], limits)?;
        Ok(Sync {
            request: msg.session(),
            attempt: msg.fields.u8(F_ATTEMPT)?,
        })
    }
}

/// A refusal with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The request (header session id).
    pub request: u64,
    /// Why.
    pub reason: RequestRefusal,
    /// With a back-off: whether it holds for the whole device (every issuer) rather than
    /// this issuer only, so the server can refuse others without waking the device.
    pub device_wide: bool,
}

impl Refused {
    /// A refusal that concerns this issuer only.
    pub fn new(request: u64, reason: RequestRefusal) -> Self {
        Refused {
            request,
            reason,
            device_wide: false,
        }
    }

    /// Encode.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut w = FieldWriter::new().u8(F_REASON, self.reason.code());
        if let Some(wait) = self.reason.retry_after() {
            w = w.u32(F_RETRY_AFTER, super::millis_u32(wait));
        }
        if self.device_wide {
            w = w.u8(F_DEVICE_WIDE, 1);
        }
        wire::encode(REFUSED, self.request, w)
    }

    /// Decode.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(
            msg,
            REFUSED,
            &[F_REASON, F_RETRY_AFTER, F_DEVICE_WIDE],
            limits,
        )?;
        let f = &msg.fields;
        let wait = f
            .get(F_RETRY_AFTER)?
            .map(|v| {
                <[u8; 4]>::try_from(v)
                    .map(|b| Duration::from_millis(u64::from(u32::from_be_bytes(b))))
                    .map_err(|_| WireError::BadFieldLength {
                        field: F_RETRY_AFTER,
                        len: v.len(),
                    })
            })
            .transpose()?;
        let reason = RequestRefusal::from_code(f.u8(F_REASON)?, wait)
            .ok_or(WireError::BadValue(F_REASON))?;
        let device_wide = match f.get(F_DEVICE_WIDE)? {
            None => false,
            Some([1]) => true,
            Some(_) => return Err(WireError::BadValue(F_DEVICE_WIDE)),
        };
        Ok(Refused {
            request: msg.session(),
            reason,
            device_wide,
        })
    }
}

/// A device tells the server how the request ended, so the server can forget it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The request (header session id).
    pub request: u64,
    /// Whether the direct connection is up.
    pub connected: bool,
}

impl Outcome {
    /// Encode.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        wire::encode(
            OUTCOME,
            self.request,
            FieldWriter::new().u8(F_CONNECTED, u8::from(self.connected)),
        )
    }

    /// Decode.
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(msg, OUTCOME, &[F_CONNECTED], limits)?;
        Ok(Outcome {
            request: msg.session(),
            connected: match msg.fields.u8(F_CONNECTED)? {
                0 => false,
                1 => true,
                _ => return Err(WireError::BadValue(F_CONNECTED)),
            },
        })
    }
}

// ----- device to device -----

/// S208 communication request / hole punch: "I sent this from my local port `from_port`
/// to `dest`". Echoed in the acknowledgment, so the sender learns which of its paths works
/// without remembering every probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Punch {
    /// The session (header session id).
    pub session: u64,
    /// The sender's probe number.
    pub punch_id: u32,
    /// The sender's local port.
    pub from_port: u16,
    /// The address the sender sent to.
    pub dest: SocketAddr,
}

impl Punch {
    /// Encode, MAC'd with the session's link key.
    pub fn encode(&self, key: &[u8]) -> Result<Vec<u8>, WireError> {
        let w = FieldWriter::new()
            .u32(F_PUNCH_ID, self.punch_id)
            .u16(F_FROM_PORT, self.from_port)
            .addr(F_DEST, self.dest);
        encode_with_mac(PUNCH, self.session, w, key, PEER_MAC_LEN)
    }

    /// Decode (check the MAC first with [`verify_mac`]).
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(
            msg,
            PUNCH,
            &[F_PUNCH_ID, F_FROM_PORT, F_DEST, F_MAC],
            limits,
        )?;
        let f = &msg.fields;
        Ok(Punch {
            session: msg.session(),
            punch_id: f.u32(F_PUNCH_ID)?,
            from_port: f.u16(F_FROM_PORT)?,
            dest: f.addr(F_DEST)?,
        })
    }
}

/// A punch arrived: echoes the punch's path, and says which path the acknowledgment took
/// (`acker_port` → `ack_dest`, the punch's source as seen).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PunchAck {
    /// The session (header session id).
    pub session: u64,
    /// The punch's number.
    pub punch_id: u32,
    /// The punch's local port (echo).
    pub from_port: u16,
    /// The punch's destination (echo).
    pub dest: SocketAddr,
    /// The local port this acknowledgment is sent from.
    pub acker_port: u16,
    /// Where this acknowledgment is sent: the punch's source address.
    pub ack_dest: SocketAddr,
}

impl PunchAck {
    /// Encode, MAC'd with the session's link key.
    pub fn encode(&self, key: &[u8]) -> Result<Vec<u8>, WireError> {
        let w = FieldWriter::new()
            .u32(F_PUNCH_ID, self.punch_id)
            .u16(F_FROM_PORT, self.from_port)
            .addr(F_DEST, self.dest)
            .u16(F_ACKER_PORT, self.acker_port)
            .addr(F_ACK_DEST, self.ack_dest);
        encode_with_mac(PUNCH_ACK, self.session, w, key, PEER_MAC_LEN)
    }

    /// Decode (check the MAC first with [`verify_mac`]).
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(
            msg,
            PUNCH_ACK,
            &[
                F_PUNCH_ID,
                F_FROM_PORT,
                F_DEST,
                F_ACKER_PORT,
                F_ACK_DEST,
                F_MAC,
            ],
            limits,
        )?;
        let f = &msg.fields;
        Ok(PunchAck {
            session: msg.session(),
            punch_id: f.u32(F_PUNCH_ID)?,
            from_port: f.u16(F_FROM_PORT)?,
            dest: f.addr(F_DEST)?,
            acker_port: f.u16(F_ACKER_PORT)?,
            ack_dest: f.addr(F_ACK_DEST)?,
        })
    }
}

/// An acknowledgment arrived: tells the acknowledger that its path works too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PunchConfirm {
    /// The session (header session id).
    pub session: u64,
    /// The acknowledgment's local port (echo).
    pub acker_port: u16,
    /// The acknowledgment's destination (echo).
    pub ack_dest: SocketAddr,
}

impl PunchConfirm {
    /// Encode, MAC'd with the session's link key.
    pub fn encode(&self, key: &[u8]) -> Result<Vec<u8>, WireError> {
        let w = FieldWriter::new()
            .u16(F_ACKER_PORT, self.acker_port)
            .addr(F_ACK_DEST, self.ack_dest);
        encode_with_mac(PUNCH_CONFIRM, self.session, w, key, PEER_MAC_LEN)
    }

    /// Decode (check the MAC first with [`verify_mac`]).
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(
            msg,
            PUNCH_CONFIRM,
            &[F_ACKER_PORT, F_ACK_DEST, F_MAC],
            limits,
        )?;
        let f = &msg.fields;
        Ok(PunchConfirm {
            session: msg.session(),
            acker_port: f.u16(F_ACKER_PORT)?,
            ack_dest: f.addr(F_ACK_DEST)?,
        })
    }
}

/// S209: a chunk of the devices' channel byte stream (`seq`, if it carries bytes) and the
/// next sequence number the sender expects (`ack`). An empty one is an acknowledgment or
/// a keepalive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerData {
    /// The session (header session id).
    pub session: u64,
    /// The chunk's sequence number, if it carries bytes.
    pub seq: Option<u64>,
    /// Every chunk below this number arrived.
    pub ack: u64,
    /// Channel bytes (encrypted records), at most [`MAX_PEER_PAYLOAD`].
    pub payload: Vec<u8>,
}

impl PeerData {
    /// Encode, MAC'd with the session's link key.
    pub fn encode(&self, key: &[u8]) -> Result<Vec<u8>, WireError> {
        let mut w = FieldWriter::new().u64(F_ACK, self.ack);
        if let Some(seq) = self.seq {
            w = w.u64(F_SEQ, seq).bytes(F_PAYLOAD, &self.payload);
        }
        encode_with_mac(PEER_DATA, self.session, w, key, PEER_MAC_LEN)
    }

    /// Decode (check the MAC first with [`verify_mac`]).
    pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
        check(msg, PEER_DATA, &[F_ACK, F_SEQ, F_PAYLOAD, F_MAC], limits)?;
        let f = &msg.fields;
        let seq = f.opt_u64(F_SEQ)?;
        let payload = match seq {
            Some(_) => f.bytes(F_PAYLOAD)?,
            None if f.get(F_PAYLOAD)?.is_some() => return Err(WireError::MissingField(F_SEQ)),
            None => &[],
        };
        if payload.len() > MAX_PEER_PAYLOAD {
            return Err(WireError::BadFieldLength {
                field: F_PAYLOAD,
                len: payload.len(),
            });
        }
        Ok(PeerData {
            session: msg.session(),
            seq,
            ack: f.u64(F_ACK)?,
            payload: payload.to_vec(),
        })
    }
}

// ----- what each receiver accepts -----

/// Declares the set of messages one receiver accepts: an enum with one variant per
/// message, and a `decode` that reads the body of exactly those types. A type outside the
/// set is refused as [`WireError::UnexpectedType`] *before* its body is read, so each
/// receiver can tell "not for me" from "malformed", and no actor matches on type bytes.
macro_rules! accepted {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $ty:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant($variant),)+
        }

        impl $name {
            /// Decode the body of a message of one of this set's types.
            pub fn decode(msg: &Message<'_>, limits: &Limits) -> Result<Self, WireError> {
                match msg.msg_type() {
                    $($ty => $variant::decode(msg, limits).map(Self::$variant),)+
                    other => Err(WireError::UnexpectedType(other)),
                }
            }

            /// The message's type byte.
            pub fn msg_type(&self) -> u8 {
                match self {
                    $(Self::$variant(_) => $ty,)+
                }
            }
        }
    };
}

/// Why a receiver's set refused a message: "not for me" for a type outside the set
/// ([`RendezvousError::UnexpectedMessage`]), a decode error otherwise.
pub(crate) fn refusal(e: WireError) -> RendezvousError {
    match e {
        WireError::UnexpectedType(t) => RendezvousError::UnexpectedMessage(t),
        e => RendezvousError::Decode(e),
    }
}

/// Frame `bytes` (one whole message, as a channel record carries it) and decode it into
/// the receiver's set: the frame (for its header) and the message.
pub(crate) fn read<'a, T>(
    bytes: &'a [u8],
    limits: &Limits,
    decode: fn(&Message<'_>, &Limits) -> Result<T, WireError>,
) -> Result<(Message<'a>, T), RendezvousError> {
    let msg = Message::decode(bytes, limits).map_err(RendezvousError::Decode)?;
    let decoded = decode(&msg, limits).map_err(refusal)?;
    Ok((msg, decoded))
}

accepted! {
    /// What the server takes on its UDP port.
    ServerDatagram {
        /// S202.
        Register = REGISTER,
        /// The issuer's reflexive-address probe.
        Probe = PROBE,
    }
}

accepted! {
    /// What an acceptor takes from the server's UDP address (MAC'd with its registration key).
    AcceptorDatagram {
        /// The answer to a registration.
        RegisterAck = REGISTER_ACK,
        /// S205.
        Notice = NOTICE,
    }
}

accepted! {
    /// What an issuer takes from the server's UDP address.
    IssuerDatagram {
        /// The answer to a probe.
        ProbeAck = PROBE_ACK,
    }
}

accepted! {
    /// What the server takes on an issuer's channel.
    FromIssuer {
        /// S203.
        ConnectRequest = CONNECT_REQUEST,
        /// Relayed to the device unread.
        SealedPassword = SEALED_PASSWORD,
        /// Relayed to the device unread.
        Sync = SYNC,
        /// The issuer's report.
        Outcome = OUTCOME,
    }
}

accepted! {
    /// What the server takes on a device's channel.
    FromDevice {
        /// S206: the device asks for a request it was notified of.
        Fetch = FETCH,
        /// The device's share and signature.
        Accept = ACCEPT,
        /// S207 passed; relayed to the issuer.
        Proceed = PROCEED,
        /// The device refuses.
        Refused = REFUSED,
        /// The device's report.
        Outcome = OUTCOME,
    }
}

accepted! {
    /// What an issuer takes on its channel to the server.
    ToIssuer {
        /// The acceptor's answer, relayed with its certificate.
        AcceptorHello = ACCEPTOR_HELLO,
        /// S207 passed.
        Proceed = PROCEED,
        /// The request is refused.
        Refused = REFUSED,
    }
}

accepted! {
    /// What an acceptor takes on its channel to the server.
    ToAcceptor {
        /// S206: the request, with the issuer's share.
        Offer = OFFER,
        /// S207: the password, sealed to this device.
        SealedPassword = SEALED_PASSWORD,
        /// Start punching.
        Sync = SYNC,
        /// The request is refused.
        Refused = REFUSED,
    }
}

accepted! {
    /// What a device takes from its peer (check the MAC first with [`verify_mac`]).
    PeerDatagram {
        /// S208.
        Punch = PUNCH,
        /// A punch arrived.
        PunchAck = PUNCH_ACK,
        /// An acknowledgment arrived.
        PunchConfirm = PUNCH_CONFIRM,
        /// S209.
        PeerData = PEER_DATA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn decode(bytes: &[u8]) -> Message<'_> {
        Message::decode(bytes, &Limits::default()).unwrap()
    }

    #[test]
    fn registration_mac_covers_every_byte() {
        let key = [7u8; 32];
        let reg = Register {
            device: DeviceId(2133),
            timestamp_ms: 1_800_000_000_000,
            nonce: [3; 16],
        };
        let bytes = reg.encode(&key).unwrap();
        let msg = decode(&bytes);
        assert!(verify_mac(&msg, &key, REGISTRATION_MAC_LEN));
        assert_eq!(Register::decode(&msg, &Limits::default()).unwrap(), reg);
        assert!(!verify_mac(&msg, &[8u8; 32], REGISTRATION_MAC_LEN));
        assert!(!verify_mac(&msg, &key, PEER_MAC_LEN));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let ok = Message::decode(&bad, &Limits::default())
                .map(|m| verify_mac(&m, &key, REGISTRATION_MAC_LEN))
                .unwrap_or(false);
            assert!(!ok, "flipping byte {i} went unnoticed");
        }
    }

    #[test]
    fn a_message_without_a_trailing_mac_never_verifies() {
        let bytes = Probe {
            request: 9,
            token: [1; 16],
        }
        .encode()
        .unwrap();
        assert!(!verify_mac(&decode(&bytes), &[0; 32], 16));
        let empty = Proceed { request: 1 }.encode().unwrap();
        assert!(!verify_mac(&decode(&empty), &[0; 32], 16));
    }

    #[test]
    fn every_message_round_trips() {
        let l = Limits::default();
        let key = [9u8; 32];
        let ack = RegisterAck {
            device: DeviceId(1),
            nonce: [2; 16],
            observed: addr("202.204.16.13:3400"),
            server_time_ms: 5,
            lifetime: Duration::from_secs(90),
            status: AckStatus::Stale,
        };
        assert_eq!(
            RegisterAck::decode(&decode(&ack.encode(&key).unwrap()), &l).unwrap(),
            ack
        );
        let notice = Notice {
            request: 77,
            device: DeviceId(2133),
            server_time_ms: 9,
        };
        assert_eq!(
            Notice::decode(&decode(&notice.encode(&key).unwrap()), &l).unwrap(),
            notice
        );
        let probe_ack = ProbeAck {
            request: 3,
            token: [4; 16],
            observed: addr("[2001:db8::1]:5000"),
        };
        assert_eq!(
            ProbeAck::decode(&decode(&probe_ack.encode().unwrap()), &l).unwrap(),
            probe_ack
        );
        let req = ConnectRequest {
            request: 11,
            device: DeviceId(2133),
            share: [5; 32],
            random: [6; 32],
            token: [7; 16],
            declared: Some(addr("4.17.168.2:5000")),
        };
        assert_eq!(
            ConnectRequest::decode(&decode(&req.encode().unwrap()), &l).unwrap(),
            req
        );
        let offer = Offer {
            request: 11,
            device: DeviceId(2133),
            issuer_addr: addr("4.17.168.2:7000"),
            candidates: alloc::vec![addr("4.17.168.2:5000"), addr("4.17.168.2:5001")],
            share: [5; 32],
            random: [6; 32],
        };
        assert_eq!(
            Offer::decode(&decode(&offer.encode().unwrap()), &l).unwrap(),
            offer
        );
        let hello = AcceptorHello {
            request: 11,
            certificate: alloc::vec![1, 2, 3],
            share: [8; 32],
            random: [9; 32],
            signature: [10; 64],
            candidates: alloc::vec![addr("202.204.16.13:3400")],
        };
        assert_eq!(
            AcceptorHello::decode(&decode(&hello.encode().unwrap()), &l).unwrap(),
            hello
        );
        for reason in [
            RequestRefusal::UnknownDevice,
            RequestRefusal::WrongPassword {
                retry_after: Duration::from_secs(2),
            },
            RequestRefusal::RateLimited {
                retry_after: Duration::from_millis(1500),
            },
            RequestRefusal::DeviceUnreachable,
            RequestRefusal::Timeout,
            RequestRefusal::NotAuthorized,
            RequestRefusal::Busy,
            RequestRefusal::ProtocolError,
        ] {
            for device_wide in [false, true] {
                let r = Refused {
                    request: 4,
                    reason,
                    device_wide,
                };
                assert_eq!(
                    Refused::decode(&decode(&r.encode().unwrap()), &l).unwrap(),
                    r
                );
            }
        }
        let data = PeerData {
            session: 5,
            seq: Some(9),
            ack: 3,
            payload: alloc::vec![1; 100],
        };
        assert_eq!(
            PeerData::decode(&decode(&data.encode(&key).unwrap()), &l).unwrap(),
            data
        );
        let pure_ack = PeerData {
            session: 5,
            seq: None,
            ack: 3,
            payload: Vec::new(),
        };
        assert_eq!(
            PeerData::decode(&decode(&pure_ack.encode(&key).unwrap()), &l).unwrap(),
            pure_ack
        );
        let pa = PunchAck {
            session: 1,
            punch_id: 2,
            from_port: 3,
            dest: addr("1.2.3.4:5"),
            acker_port: 6,
            ack_dest: addr("7.8.9.10:11"),
        };
        assert_eq!(
            PunchAck::decode(&decode(&pa.encode(&key).unwrap()), &l).unwrap(),
            pa
        );
    }

    #[test]
    fn bounds_are_enforced() {
        let l = Limits::default();
        let many = Offer {
            request: 1,
            device: DeviceId(1),
            issuer_addr: addr("1.1.1.1:1"),
            candidates: Vec::new(),
            share: [0; 32],
            random: [0; 32],
        };
        let mut w = FieldWriter::new()
            .u64(F_DEVICE, 1)
            .addr(F_ISSUER_ADDR, many.issuer_addr)
            .bytes(F_SHARE, &[0; 32])
            .bytes(F_RANDOM, &[0; 32]);
        for p in 0..=MAX_CANDIDATES as u16 {
            let mut a = addr("1.1.1.1:1");
            a.set_port(p);
            w.push(F_CANDIDATE, &wire::encode_addr(a));
        }
        let bytes = wire::encode(OFFER, 1, w).unwrap();
        assert_eq!(
            Offer::decode(&decode(&bytes), &l),
            Err(WireError::TooManyFields {
                max: MAX_CANDIDATES
            })
        );
        let big = SealedPassword {
            request: 1,
            sealed: alloc::vec![0; MAX_SEALED_LEN + 1],
        };
        assert!(SealedPassword::decode(&decode(&big.encode().unwrap()), &l).is_err());
        let w = FieldWriter::new()
            .u64(F_ACK, 0)
            .u64(F_SEQ, 0)
            .bytes(F_PAYLOAD, &[0; MAX_PEER_PAYLOAD + 1]);
        let bytes = encode_with_mac(PEER_DATA, 1, w, &[0; 32], PEER_MAC_LEN).unwrap();
        assert!(PeerData::decode(&decode(&bytes), &l).is_err());
    }

    #[test]
    fn wrong_types_and_unknown_critical_fields_are_refused() {
        let l = Limits::default();
        let bytes = Proceed { request: 1 }.encode().unwrap();
        assert_eq!(
            Sync::decode(&decode(&bytes), &l),
            Err(WireError::UnexpectedType(PROCEED))
        );
        let bytes = wire::encode(PROCEED, 1, FieldWriter::new().u8(CRITICAL | 0x7F, 1)).unwrap();
        assert_eq!(
            Proceed::decode(&decode(&bytes), &l),
            Err(WireError::UnknownCriticalField(CRITICAL | 0x7F))
        );
        let bytes = wire::encode(OUTCOME, 1, FieldWriter::new().u8(F_CONNECTED, 2)).unwrap();
        assert_eq!(
            Outcome::decode(&decode(&bytes), &l),
            Err(WireError::BadValue(F_CONNECTED))
        );
        let bytes = wire::encode(REFUSED, 1, FieldWriter::new().u8(F_REASON, 99)).unwrap();
        assert_eq!(
            Refused::decode(&decode(&bytes), &l),
            Err(WireError::BadValue(F_REASON))
        );
    }
}

//! Seed 004's delegation messages (deputy wire format, types `0x60`-`0x69`).
//!
//! The four request/response pairs of the seed — start, key generation, authentication,
//! key — plus a relay for later protocol messages and a typed error response. Each message
//! carries the delegation session in the header (chosen at random by the terminal at
//! start, never 0) and a sequence number field: the terminal numbers its requests, the
//! server echoes the number in its answer and answers a repeated (session, sequence) from
//! its cache. Field layouts: `docs/wire.md` ("Key-exchange delegation messages").
//!
//! Protocol bytes (IKE messages and payload chains) travel as opaque fields with their own
//! bounds; the actors parse them with the `ikev2` codec. Key material travels only inside
//! sealed bodies ([`super::seal`]).

use alloc::vec::Vec;
use core::net::SocketAddr;

use super::KeyxError;
use crate::wire::{self, CRITICAL, FieldWriter, Fields, Limits, Message as WireMessage};

/// S3 → S34: start of a key exchange; asks the server to decide the method.
pub const START_REQUEST: u8 = 0x60;
/// S35-S36 → S4: the method and algorithms, or why there are none.
pub const START_RESPONSE: u8 = 0x61;
/// S6 → S38: asks for the key exchange's shared secret to be generated.
pub const KEYGEN_REQUEST: u8 = 0x62;
/// S39-S40 → S7: the protocol message that carries our key share, and the keys that
/// protect the rest of the exchange (sealed).
pub const KEYGEN_RESPONSE: u8 = 0x63;
/// S9 → S41: asks for the peer to be authenticated.
pub const AUTH_REQUEST: u8 = 0x64;
/// S42-S44 → S10: the authentication result, the policy result and our own proof.
pub const AUTH_RESPONSE: u8 = 0x65;
/// S13 → S45: asks for the session key.
pub const KEY_REQUEST: u8 = 0x66;
/// S46-S48 → S14: the session key or the material it is derived from (sealed).
pub const KEY_RESPONSE: u8 = 0x67;
/// A later protocol message relayed to the server (TLS post-handshake messages).
pub const RELAY: u8 = 0x68;
/// The server's typed refusal of a request (out of state, unknown session, a bound).
pub const ERROR_RESPONSE: u8 = 0x69;

/// Human name of a delegation message type, for traces.
pub fn type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        START_REQUEST => "StartRequest",
        START_RESPONSE => "StartResponse",
        KEYGEN_REQUEST => "KeyGenRequest",
        KEYGEN_RESPONSE => "KeyGenResponse",
        AUTH_REQUEST => "AuthRequest",
        AUTH_RESPONSE => "AuthResponse",
        KEY_REQUEST => "KeyRequest",
        KEY_RESPONSE => "KeyResponse",
        RELAY => "Relay",
        ERROR_RESPONSE => "ErrorResponse",
        _ => return None,
    })
}

const F_SEQ: u16 = CRITICAL | 0x01;
const F_PROTOCOL: u16 = CRITICAL | 0x02;
const F_ROLE: u16 = CRITICAL | 0x03;
const F_LOCAL: u16 = CRITICAL | 0x04;
const F_REMOTE: u16 = CRITICAL | 0x05;
const F_PEER_MESSAGE: u16 = CRITICAL | 0x06;
const F_TRANSFORMS: u16 = CRITICAL | 0x07;
const F_PEER_ID: u16 = CRITICAL | 0x08;
const F_OUTCOME: u16 = CRITICAL | 0x09;
const F_METHOD: u16 = CRITICAL | 0x0A;
const F_GROUP: u16 = CRITICAL | 0x0B;
const F_MESSAGE: u16 = CRITICAL | 0x0C;
const F_SEALED: u16 = CRITICAL | 0x0D;
const F_FIRST_PAYLOAD: u16 = CRITICAL | 0x0E;
const F_PAYLOADS: u16 = CRITICAL | 0x0F;
const F_AUTH_RESULT: u16 = CRITICAL | 0x10;
const F_POLICY_RESULT: u16 = CRITICAL | 0x11;
const F_DATA: u16 = CRITICAL | 0x12;
const F_ERROR: u16 = CRITICAL | 0x13;
const F_CONSUMED: u16 = CRITICAL | 0x14;

const KNOWN: [u16; 20] = [
    F_SEQ,
    F_PROTOCOL,
    F_ROLE,
    F_LOCAL,
    F_REMOTE,
    F_PEER_MESSAGE,
    F_TRANSFORMS,
    F_PEER_ID,
    F_OUTCOME,
    F_METHOD,
    F_GROUP,
    F_MESSAGE,
    F_SEALED,
    F_FIRST_PAYLOAD,
    F_PAYLOADS,
    F_AUTH_RESULT,
    F_POLICY_RESULT,
    F_DATA,
    F_ERROR,
    F_CONSUMED,
];

/// Longest protocol message or payload chain carried (an IKE message with a certificate
/// chain fits; the whole delegation message must still fit one 16 KiB channel record).
pub const MAX_PROTOCOL_BYTES: usize = 12 * 1024;
/// Longest whole delegation message: one channel record's payload.
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Longest peer identity (an IKE identification payload body; a DN fits).
pub const MAX_PEER_ID: usize = 1024;
/// Longest sealed body (nonce, the keys of an IKE SA or a TLS session, tag).
pub const MAX_SEALED: usize = 1024;
/// Most transforms in one list.
pub const MAX_TRANSFORMS: usize = 32;
/// Bytes of one transform entry: type (u8) ‖ id (u16) ‖ key bits (u16, 0 = none).
const TRANSFORM_LEN: usize = 5;

/// The key-exchange protocol being delegated (the seed's claim 3: IKE, SSL or TLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// IKEv2 (RFC 7296).
    Ikev2,
    /// TLS 1.3 (RFC 8446).
    Tls13,
    /// A code this crate does not know (kept, so the server can refuse it by name).
    Other(u8),
}

impl Protocol {
    /// The wire code.
    pub const fn code(self) -> u8 {
        match self {
            Protocol::Ikev2 => 1,
            Protocol::Tls13 => 2,
            Protocol::Other(c) => c,
        }
    }

    /// The protocol with this code.
    pub const fn from_code(c: u8) -> Protocol {
        match c {
            1 => Protocol::Ikev2,
            2 => Protocol::Tls13,
            c => Protocol::Other(c),
        }
    }
}

/// The terminal's role toward the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The peer started the exchange (the seed's Fig. 12); the request carries its first
    /// message.
    Responder,
    /// The terminal starts the exchange.
    Initiator,
}

impl Role {
    const fn code(self) -> u8 {
        match self {
            Role::Responder => 1,
            Role::Initiator => 2,
        }
    }

    fn from_code(c: u8) -> Result<Role, KeyxError> {
        match c {
            1 => Ok(Role::Responder),
            2 => Ok(Role::Initiator),
            c => Err(KeyxError::UnknownRole(c)),
        }
    }
}

/// The key-exchange method the server decided at S35. Its properties drive the
/// terminal's decisions S5 (key generation?), S8 (authentication?) and S15 (does the
/// terminal derive the session key itself?).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// IKEv2 authenticated with a shared-key MIC (RFC 7296 §2.15).
    IkePsk,
    /// IKEv2 authenticated with digital signatures (RFC 7427) and certificates.
    IkeSignature,
    /// IKEv2 without authentication (RFC 7619 NULL auth): never acceptable, and named only
    /// so that a terminal told to use it can refuse it (S8 = no → S18).
    IkeNull,
    /// TLS 1.3 with certificates.
    Tls13,
    /// A code this crate does not know.
    Other(u8),
}

impl Method {
    /// The wire code.
    pub const fn code(self) -> u8 {
        match self {
            Method::IkePsk => 1,
            Method::IkeSignature => 2,
            Method::IkeNull => 3,
            Method::Tls13 => 4,
            Method::Other(c) => c,
        }
    }

    /// The method with this code.
    pub const fn from_code(c: u8) -> Method {
        match c {
            1 => Method::IkePsk,
            2 => Method::IkeSignature,
            3 => Method::IkeNull,
            4 => Method::Tls13,
            c => Method::Other(c),
        }
    }

    /// S5: does the method need key generation? Every method this crate knows does.
    pub const fn needs_key_generation(self) -> bool {
        !matches!(self, Method::Other(_))
    }

    /// S8: does the method authenticate the peer? A method that does not is the seed's
    /// "state that cannot normally exist" (S18).
    pub const fn needs_authentication(self) -> bool {
        matches!(self, Method::IkePsk | Method::IkeSignature | Method::Tls13)
    }

    /// S15: does the terminal derive the session key from the key response's material
    /// (IKEv2: Child SA keys from SK_d), rather than receive it ready (TLS 1.3: the
    /// traffic keys)?
    pub const fn terminal_derives_session_key(self) -> bool {
        matches!(
            self,
            Method::IkePsk | Method::IkeSignature | Method::IkeNull
        )
    }
}

/// One symmetric transform, as IKEv2 numbers it (RFC 7296 §3.3.2 and IANA): the terminal
/// lists the ones it can run, the server answers the ones it chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transform {
    /// Transform type (1 ENCR, 2 PRF, 3 INTEG, 4 DH).
    pub kind: u8,
    /// Transform id.
    pub id: u16,
    /// Key length in bits (the Key Length attribute), 0 when the transform has none.
    pub key_bits: u16,
}

/// S3: the terminal asks for a key exchange to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartRequest {
    /// Which protocol.
    pub protocol: Protocol,
    /// The terminal's role toward the peer.
    pub role: Role,
    /// The terminal's own address toward the peer.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// Responder: the peer's first message (the IKE_SA_INIT request), as received.
    pub peer_message: Option<Vec<u8>>,
    /// The symmetric transforms the terminal can run itself.
    pub transforms: Vec<Transform>,
    /// Initiator: the identity the terminal wants to reach (an IKE identification
    /// payload body), checked against the policy database.
    pub peer_id: Option<Vec<u8>>,
}

/// S35: what the server decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    /// Go on with this method and these transforms; `sa` is the SA payload body chosen
    /// (the responder's SAr1, or the proposals an initiator offers).
    Proceed {
        /// The method.
        method: Method,
        /// The transforms chosen (or offered, for an initiator).
        transforms: Vec<Transform>,
        /// The SA payload body.
        sa: Vec<u8>,
    },
    /// Nothing acceptable in the peer's offer: answer NO_PROPOSAL_CHOSEN.
    NoProposalChosen,
    /// The peer's key share is in a group we do not take: answer INVALID_KE_PAYLOAD with
    /// this group.
    InvalidKe {
        /// The group to ask for.
        group: u16,
    },
    /// The policy database does not let this terminal reach the named peer.
    PolicyDenied,
}

/// S35-S36.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartResponse {
    /// The decision.
    pub outcome: StartOutcome,
}

/// S6: the terminal asks for key generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGenRequest {
    /// The peer's message this step needs: none for a responder (the server already has
    /// the peer's first message); for an initiator, the peer's answer (its IKE_SA_INIT
    /// response, or a COOKIE / INVALID_KE_PAYLOAD answer to build the request again).
    pub peer_message: Option<Vec<u8>>,
}

/// S39-S40.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGenResponse {
    /// The protocol message to send the peer, exactly as built by the server (it carries
    /// the server's key share and nonce), if this step produced one.
    pub message: Option<Vec<u8>>,
    /// The keys that protect the rest of the exchange, sealed, once they exist.
    pub sealed: Option<Vec<u8>>,
    /// Initiator: our own identity and proof (IDi, CERT, AUTH), as an IKE payload chain:
    /// (first payload type, bytes).
    pub local_auth: Option<(u8, Vec<u8>)>,
}

/// S9: the terminal asks for the peer to be authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRequest {
    /// The peer's identification, certificates and AUTH, as an IKE payload chain: the type
    /// of the first payload.
    pub first_payload: u8,
    /// The chain's bytes.
    pub payloads: Vec<u8>,
}

/// S42's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthResult {
    /// The peer proved its identity.
    Authenticated,
    /// The peer's AUTH did not verify.
    BadAuth,
    /// The peer's certificate does not chain to a trust anchor of this terminal.
    UnknownCa,
    /// The peer's certificate is outside its validity.
    Expired,
    /// The peer's identity does not match its certificate or what was expected.
    IdentityMismatch,
    /// The peer gave no certificate where one is required.
    MissingCertificate,
    /// The peer used an authentication method or signature algorithm not accepted.
    UnsupportedMethod,
    /// Not decided yet: the peer's flight is not complete (TLS 1.3, whose flight may
    /// reach the terminal in several parts). The terminal relays the rest in the next
    /// authentication request (the seed's S12 loop).
    Incomplete,
    /// The peer broke the protocol during authentication (a bad Finished, an unexpected
    /// message, a failed decryption).
    ProtocolViolation,
    /// A code this crate does not know.
    Other(u8),
}

impl AuthResult {
    /// The wire code.
    pub const fn code(self) -> u8 {
        match self {
            AuthResult::Authenticated => 0,
            AuthResult::BadAuth => 1,
            AuthResult::UnknownCa => 2,
            AuthResult::Expired => 3,
            AuthResult::IdentityMismatch => 4,
            AuthResult::MissingCertificate => 5,
            AuthResult::UnsupportedMethod => 6,
            AuthResult::Incomplete => 7,
            AuthResult::ProtocolViolation => 8,
            AuthResult::Other(c) => c,
        }
    }

    /// The result with this code.
    pub const fn from_code(c: u8) -> AuthResult {
        match c {
            0 => AuthResult::Authenticated,
            1 => AuthResult::BadAuth,
            2 => AuthResult::UnknownCa,
            3 => AuthResult::Expired,
            4 => AuthResult::IdentityMismatch,
            5 => AuthResult::MissingCertificate,
            6 => AuthResult::UnsupportedMethod,
            7 => AuthResult::Incomplete,
            8 => AuthResult::ProtocolViolation,
            c => AuthResult::Other(c),
        }
    }
}

/// S43's result (the seed's confirmation means).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyResult {
    /// The policy database lets this peer reach this terminal.
    Allowed,
    /// It does not.
    Denied,
    /// Not checked, because authentication failed first.
    NotChecked,
    /// A code this crate does not know.
    Other(u8),
}

impl PolicyResult {
    /// The wire code.
    pub const fn code(self) -> u8 {
        match self {
            PolicyResult::Allowed => 0,
            PolicyResult::Denied => 1,
            PolicyResult::NotChecked => 2,
            PolicyResult::Other(c) => c,
        }
    }

    /// The result with this code.
    pub const fn from_code(c: u8) -> PolicyResult {
        match c {
            0 => PolicyResult::Allowed,
            1 => PolicyResult::Denied,
            2 => PolicyResult::NotChecked,
            c => PolicyResult::Other(c),
        }
    }
}

/// S42-S44.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthResponse {
    /// S42.
    pub auth: AuthResult,
    /// S43.
    pub policy: PolicyResult,
    /// On success, for a responder: our identity and proof (IDr, CERT, AUTH) as an IKE
    /// payload chain (first payload type, bytes). TLS 1.3: the records to send the peer
    /// (our Finished, with our Certificate and CertificateVerify when we authenticate,
    /// the server's NewSessionTickets, or the alert that ends a failed handshake), first
    /// payload type 0.
    pub local_auth: Option<(u8, Vec<u8>)>,
    /// TLS 1.3: how many octets of the records relayed in the request the handshake
    /// took. What follows them arrived after the handshake's last message and is
    /// protected with the traffic keys: it belongs to the terminal's record layer and
    /// never reaches the server's TLS engine.
    pub consumed: Option<u32>,
}

impl AuthResponse {
    /// S11: was the peer authenticated and allowed?
    pub fn accepted(&self) -> bool {
        self.auth == AuthResult::Authenticated && self.policy == PolicyResult::Allowed
    }
}

/// S46-S48.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyResponse {
    /// The session key or its material, sealed.
    pub sealed: Vec<u8>,
}

/// A later protocol message relayed either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relay {
    /// The protocol bytes.
    pub data: Vec<u8>,
}

/// Why the server refused a request (answered in an [`ERROR_RESPONSE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No such delegation session for this terminal.
    UnknownSession,
    /// The request does not fit the session's state (key generation before start, a key
    /// request before authentication and policy both succeeded, …).
    OutOfState,
    /// The session's sequence number moved backwards, or skipped.
    BadSequence,
    /// The request did not decode or lacks what its step needs.
    BadRequest,
    /// The protocol is not served.
    UnsupportedProtocol,
    /// The server has no credential for this terminal.
    NotProvisioned,
    /// The terminal has as many sessions as it may.
    SessionLimit,
    /// The server is at its bound of sessions in all; try later.
    Busy,
    /// The session expired.
    Expired,
    /// The server failed to build its answer (never caused by the request).
    Internal,
    /// A code this crate does not know.
    Other(u8),
}

impl ErrorCode {
    /// The wire code.
    pub const fn code(self) -> u8 {
        match self {
            ErrorCode::UnknownSession => 1,
            ErrorCode::OutOfState => 2,
            ErrorCode::BadSequence => 3,
            ErrorCode::BadRequest => 4,
            ErrorCode::UnsupportedProtocol => 5,
            ErrorCode::NotProvisioned => 6,
            ErrorCode::SessionLimit => 7,
            ErrorCode::Busy => 8,
            ErrorCode::Expired => 9,
            ErrorCode::Internal => 10,
            ErrorCode::Other(c) => c,
        }
    }

    /// The code with this number.
    pub const fn from_code(c: u8) -> ErrorCode {
        match c {
            1 => ErrorCode::UnknownSession,
            2 => ErrorCode::OutOfState,
            3 => ErrorCode::BadSequence,
            4 => ErrorCode::BadRequest,
            5 => ErrorCode::UnsupportedProtocol,
            6 => ErrorCode::NotProvisioned,
            7 => ErrorCode::SessionLimit,
            8 => ErrorCode::Busy,
            9 => ErrorCode::Expired,
            10 => ErrorCode::Internal,
            c => ErrorCode::Other(c),
        }
    }
}

/// The body of one delegation message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// S3.
    StartRequest(StartRequest),
    /// S35-S36.
    StartResponse(StartResponse),
    /// S6.
    KeyGenRequest(KeyGenRequest),
    /// S39-S40.
    KeyGenResponse(KeyGenResponse),
    /// S9.
    AuthRequest(AuthRequest),
    /// S42-S44.
    AuthResponse(AuthResponse),
    /// S13.
    KeyRequest,
    /// S46-S48.
    KeyResponse(KeyResponse),
    /// A relayed protocol message.
    Relay(Relay),
    /// A refusal.
    ErrorResponse(ErrorCode),
}

impl Body {
    /// The message type byte.
    pub fn msg_type(&self) -> u8 {
        match self {
            Body::StartRequest(_) => START_REQUEST,
            Body::StartResponse(_) => START_RESPONSE,
            Body::KeyGenRequest(_) => KEYGEN_REQUEST,
            Body::KeyGenResponse(_) => KEYGEN_RESPONSE,
            Body::AuthRequest(_) => AUTH_REQUEST,
            Body::AuthResponse(_) => AUTH_RESPONSE,
            Body::KeyRequest => KEY_REQUEST,
            Body::KeyResponse(_) => KEY_RESPONSE,
            Body::Relay(_) => RELAY,
            Body::ErrorResponse(_) => ERROR_RESPONSE,
        }
    }

    /// Whether the terminal sends it (a request) rather than the server.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Body::StartRequest(_)
                | Body::KeyGenRequest(_)
                | Body::AuthRequest(_)
                | Body::KeyRequest
                | Body::Relay(_)
        )
    }
}

/// One delegation message: its session, its sequence number and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The delegation session (header session id; never 0).
    pub session: u64,
    /// The request's sequence number (echoed by the answer).
    pub seq: u32,
    /// What it says.
    pub body: Body,
}

impl Message {
    /// Encode as one wire message.
    pub fn encode(&self) -> Result<Vec<u8>, KeyxError> {
        let w = FieldWriter::new().u32(F_SEQ, self.seq);
        let w = match &self.body {
            Body::StartRequest(m) => {
                let mut w = w
                    .u8(F_PROTOCOL, m.protocol.code())
                    .u8(F_ROLE, m.role.code())
                    .addr(F_LOCAL, m.local)
                    .addr(F_REMOTE, m.remote);
                if let Some(b) = &m.peer_message {
                    w = w.bytes(
                        F_PEER_MESSAGE,
                        bounded(F_PEER_MESSAGE, b, MAX_PROTOCOL_BYTES)?,
                    );
                }
                w = w.bytes(F_TRANSFORMS, &encode_transforms(&m.transforms)?);
                if let Some(id) = &m.peer_id {
                    w = w.bytes(F_PEER_ID, bounded(F_PEER_ID, id, MAX_PEER_ID)?);
                }
                w
            }
            Body::StartResponse(m) => match &m.outcome {
                StartOutcome::Proceed {
                    method,
                    transforms,
                    sa,
                } => w
                    .u8(F_OUTCOME, OUTCOME_PROCEED)
                    .u8(F_METHOD, method.code())
                    .bytes(F_TRANSFORMS, &encode_transforms(transforms)?)
                    .bytes(
                        F_PEER_MESSAGE,
                        bounded(F_PEER_MESSAGE, sa, MAX_PROTOCOL_BYTES)?,
                    ),
                StartOutcome::NoProposalChosen => w.u8(F_OUTCOME, OUTCOME_NO_PROPOSAL),
                StartOutcome::InvalidKe { group } => {
                    w.u8(F_OUTCOME, OUTCOME_INVALID_KE).u16(F_GROUP, *group)
                }
                StartOutcome::PolicyDenied => w.u8(F_OUTCOME, OUTCOME_POLICY_DENIED),
            },
            Body::KeyGenRequest(m) => match &m.peer_message {
                Some(b) => w.bytes(
                    F_PEER_MESSAGE,
                    bounded(F_PEER_MESSAGE, b, MAX_PROTOCOL_BYTES)?,
                ),
                None => w,
            },
            Body::KeyGenResponse(m) => {
                let mut w = w;
                if let Some(b) = &m.message {
                    w = w.bytes(F_MESSAGE, bounded(F_MESSAGE, b, MAX_PROTOCOL_BYTES)?);
                }
                if let Some(s) = &m.sealed {
                    w = w.bytes(F_SEALED, bounded(F_SEALED, s, MAX_SEALED)?);
                }
                chain(w, m.local_auth.as_ref().map(|(t, b)| (*t, b.as_slice())))?
            }
            Body::AuthRequest(m) => chain(w, Some((m.first_payload, &m.payloads)))?,
            Body::AuthResponse(m) => {
                let mut w = w
                    .u8(F_AUTH_RESULT, m.auth.code())
                    .u8(F_POLICY_RESULT, m.policy.code());
                if let Some(n) = m.consumed {
                    w = w.u32(F_CONSUMED, n);
                }
                chain(w, m.local_auth.as_ref().map(|(t, b)| (*t, b.as_slice())))?
            }
            Body::KeyRequest => w,
            Body::KeyResponse(m) => w.bytes(F_SEALED, bounded(F_SEALED, &m.sealed, MAX_SEALED)?),
            Body::Relay(m) => w.bytes(F_DATA, bounded(F_DATA, &m.data, MAX_PROTOCOL_BYTES)?),
            Body::ErrorResponse(code) => w.u8(F_ERROR, code.code()),
        };
        let bytes = wire::encode(self.body.msg_type(), self.session, w)?;
        if bytes.len() > MAX_MESSAGE {
            return Err(KeyxError::MessageTooLarge {
                len: bytes.len(),
                max: MAX_MESSAGE,
            });
        }
        Ok(bytes)
    }

    /// Decode one delegation message. A type outside the ten this module defines is
    /// [`KeyxError::UnknownMessage`] (the server's S49: discard and count).
    pub fn decode(buf: &[u8], limits: &Limits) -> Result<Message, KeyxError> {
        let msg = WireMessage::decode(buf, limits)?;
        let t = msg.msg_type();
        if type_name(t).is_none() {
            return Err(KeyxError::UnknownMessage(t));
        }
        let f = msg.fields;
        f.check_known(&KNOWN, limits.unknown_fields)?;
        let seq = f.u32(F_SEQ)?;
        let body = match t {
            START_REQUEST => Body::StartRequest(StartRequest {
                protocol: Protocol::from_code(f.u8(F_PROTOCOL)?),
                role: Role::from_code(f.u8(F_ROLE)?)?,
                local: f.addr(F_LOCAL)?,
                remote: f.addr(F_REMOTE)?,
                peer_message: opt_bounded(&f, F_PEER_MESSAGE, MAX_PROTOCOL_BYTES)?,
                transforms: decode_transforms(f.bytes(F_TRANSFORMS)?)?,
                peer_id: opt_bounded(&f, F_PEER_ID, MAX_PEER_ID)?,
            }),
            START_RESPONSE => Body::StartResponse(StartResponse {
                outcome: match f.u8(F_OUTCOME)? {
                    OUTCOME_PROCEED => {
                        let (Some(method), Some(transforms), Some(sa)) = (
                            f.get(F_METHOD)?,
                            f.get(F_TRANSFORMS)?,
                            opt_bounded(&f, F_PEER_MESSAGE, MAX_PROTOCOL_BYTES)?,
                        ) else {
                            return Err(KeyxError::IncompleteStart);
                        };
                        let [method] = method else {
                            return Err(wire::WireError::BadFieldLength {
                                field: F_METHOD,
                                len: method.len(),
                            }
                            .into());
                        };
                        StartOutcome::Proceed {
                            method: Method::from_code(*method),
                            transforms: decode_transforms(transforms)?,
                            sa,
                        }
                    }
                    OUTCOME_NO_PROPOSAL => StartOutcome::NoProposalChosen,
                    OUTCOME_INVALID_KE => StartOutcome::InvalidKe {
                        group: f.u16(F_GROUP)?,
                    },
                    OUTCOME_POLICY_DENIED => StartOutcome::PolicyDenied,
                    c => return Err(KeyxError::UnknownOutcome(c)),
                },
            }),
            KEYGEN_REQUEST => Body::KeyGenRequest(KeyGenRequest {
                peer_message: opt_bounded(&f, F_PEER_MESSAGE, MAX_PROTOCOL_BYTES)?,
            }),
            KEYGEN_RESPONSE => Body::KeyGenResponse(KeyGenResponse {
                message: opt_bounded(&f, F_MESSAGE, MAX_PROTOCOL_BYTES)?,
                sealed: opt_bounded(&f, F_SEALED, MAX_SEALED)?,
                local_auth: opt_chain(&f)?,
            }),
            AUTH_REQUEST => {
                let (first_payload, payloads) = opt_chain(&f)?
                    .ok_or(KeyxError::Decode(wire::WireError::MissingField(F_PAYLOADS)))?;
                Body::AuthRequest(AuthRequest {
                    first_payload,
                    payloads,
                })
            }
            AUTH_RESPONSE => Body::AuthResponse(AuthResponse {
                auth: AuthResult::from_code(f.u8(F_AUTH_RESULT)?),
                policy: PolicyResult::from_code(f.u8(F_POLICY_RESULT)?),
                local_auth: opt_chain(&f)?,
                consumed: match f.get(F_CONSUMED)? {
                    Some(_) => Some(f.u32(F_CONSUMED)?),
                    None => None,
                },
            }),
            KEY_REQUEST => Body::KeyRequest,
            KEY_RESPONSE => Body::KeyResponse(KeyResponse {
                sealed: opt_bounded(&f, F_SEALED, MAX_SEALED)?
                    .ok_or(KeyxError::Decode(wire::WireError::MissingField(F_SEALED)))?,
            }),
            RELAY => Body::Relay(Relay {
                data: opt_bounded(&f, F_DATA, MAX_PROTOCOL_BYTES)?
                    .ok_or(KeyxError::Decode(wire::WireError::MissingField(F_DATA)))?,
            }),
            ERROR_RESPONSE => Body::ErrorResponse(ErrorCode::from_code(f.u8(F_ERROR)?)),
            _ => return Err(KeyxError::UnknownMessage(t)),
        };
        Ok(Message {
            session: msg.session(),
            seq,
            body,
        })
    }
}

const OUTCOME_PROCEED: u8 = 1;
const OUTCOME_NO_PROPOSAL: u8 = 2;
const OUTCOME_INVALID_KE: u8 = 3;
const OUTCOME_POLICY_DENIED: u8 = 4;

fn bounded(field: u16, value: &[u8], max: usize) -> Result<&[u8], KeyxError> {
    if value.len() > max {
        return Err(KeyxError::TooLarge {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(value)
}

fn opt_bounded(f: &Fields<'_>, field: u16, max: usize) -> Result<Option<Vec<u8>>, KeyxError> {
    f.get(field)?
        .map(|v| bounded(field, v, max).map(<[u8]>::to_vec))
        .transpose()
}

/// Writes a payload chain (first payload type, bytes), if any.
fn chain(w: FieldWriter, chain: Option<(u8, &[u8])>) -> Result<FieldWriter, KeyxError> {
    Ok(match chain {
        Some((first, bytes)) => w
            .u8(F_FIRST_PAYLOAD, first)
            .bytes(F_PAYLOADS, bounded(F_PAYLOADS, bytes, MAX_PROTOCOL_BYTES)?),
        None => w,
    })
}

/// Reads a payload chain: both fields or neither.
fn opt_chain(f: &Fields<'_>) -> Result<Option<(u8, Vec<u8>)>, KeyxError> {
    let payloads = opt_bounded(f, F_PAYLOADS, MAX_PROTOCOL_BYTES)?;
    match (f.get(F_FIRST_PAYLOAD)?, payloads) {
        (None, None) => Ok(None),
        (Some(&[first]), Some(p)) => Ok(Some((first, p))),
        (None, Some(_)) => Err(KeyxError::MissingFirstPayload),
        (Some(_), None) => Err(wire::WireError::MissingField(F_PAYLOADS).into()),
        (Some(v), Some(_)) => Err(wire::WireError::BadFieldLength {
            field: F_FIRST_PAYLOAD,
            len: v.len(),
        }
        .into()),
    }
}

fn encode_transforms(list: &[Transform]) -> Result<Vec<u8>, KeyxError> {
    if list.len() > MAX_TRANSFORMS {
        return Err(KeyxError::BadTransformList(list.len() * TRANSFORM_LEN));
    }
    let mut out = Vec::with_capacity(list.len() * TRANSFORM_LEN);
    for t in list {
        out.push(t.kind);
        out.extend_from_slice(&t.id.to_be_bytes());
        out.extend_from_slice(&t.key_bits.to_be_bytes());
    }
    Ok(out)
}

fn decode_transforms(v: &[u8]) -> Result<Vec<Transform>, KeyxError> {
    if !v.len().is_multiple_of(TRANSFORM_LEN) || v.len() / TRANSFORM_LEN > MAX_TRANSFORMS {
        return Err(KeyxError::BadTransformList(v.len()));
    }
    Ok(v.chunks_exact(TRANSFORM_LEN)
        .map(|c| Transform {
            kind: c[0],
            id: u16::from_be_bytes([c[1], c[2]]),
            key_bits: u16::from_be_bytes([c[3], c[4]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn transforms() -> Vec<Transform> {
        vec![
            Transform {
                kind: 1,
                id: 20,
                key_bits: 256,
            },
            Transform {
                kind: 2,
                id: 5,
                key_bits: 0,
            },
        ]
    }

    /// One of every message, with every optional part present in at least one.
    fn samples() -> Vec<Message> {
        let bodies = vec![
            Body::StartRequest(StartRequest {
                protocol: Protocol::Ikev2,
                role: Role::Responder,
                local: "192.0.2.10:500".parse().unwrap(),
                remote: "[2001:db8::7]:4500".parse().unwrap(),
                peer_message: Some(vec![0x11; 300]),
                transforms: transforms(),
                peer_id: None,
            }),
            Body::StartRequest(StartRequest {
                protocol: Protocol::Tls13,
                role: Role::Initiator,
                local: "192.0.2.10:0".parse().unwrap(),
                remote: "192.0.2.99:443".parse().unwrap(),
                peer_message: None,
                transforms: Vec::new(),
                peer_id: Some(b"\x02\0\0\0peer.example".to_vec()),
            }),
            Body::StartResponse(StartResponse {
                outcome: StartOutcome::Proceed {
                    method: Method::IkeSignature,
                    transforms: transforms(),
                    sa: vec![0x22; 40],
                },
            }),
            Body::StartResponse(StartResponse {
                outcome: StartOutcome::NoProposalChosen,
            }),
            Body::StartResponse(StartResponse {
                outcome: StartOutcome::InvalidKe { group: 31 },
            }),
            Body::StartResponse(StartResponse {
                outcome: StartOutcome::PolicyDenied,
            }),
            Body::KeyGenRequest(KeyGenRequest { peer_message: None }),
            Body::KeyGenRequest(KeyGenRequest {
                peer_message: Some(vec![1, 2, 3]),
            }),
            Body::KeyGenResponse(KeyGenResponse {
                message: Some(vec![0x33; 400]),
                sealed: Some(vec![0x44; 150]),
                local_auth: Some((35, vec![0x55; 90])),
            }),
            Body::KeyGenResponse(KeyGenResponse {
                message: None,
                sealed: None,
                local_auth: None,
            }),
            Body::AuthRequest(AuthRequest {
                first_payload: 35,
                payloads: vec![0x66; 700],
            }),
            Body::AuthResponse(AuthResponse {
                auth: AuthResult::Authenticated,
                policy: PolicyResult::Allowed,
                local_auth: Some((36, vec![0x77; 80])),
                consumed: Some(1_234),
            }),
            Body::AuthResponse(AuthResponse {
                auth: AuthResult::UnknownCa,
                policy: PolicyResult::NotChecked,
                local_auth: None,
                consumed: None,
            }),
            Body::KeyRequest,
            Body::KeyResponse(KeyResponse {
                sealed: vec![0x88; 200],
            }),
            Body::Relay(Relay {
                data: vec![0x99; 50],
            }),
            Body::ErrorResponse(ErrorCode::OutOfState),
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Message {
                session: 0xdead_beef_0000 + i as u64,
                seq: i as u32,
                body,
            })
            .collect()
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let bytes = m.encode().unwrap();
            assert_eq!(
                Message::decode(&bytes, &Limits::default()).unwrap(),
                m,
                "{:?}",
                type_name(m.body.msg_type())
            );
        }
    }

    #[test]
    fn codes_round_trip_and_unknown_ones_are_kept() {
        for c in 0..=255u8 {
            assert_eq!(Protocol::from_code(c).code(), c);
            assert_eq!(Method::from_code(c).code(), c);
            assert_eq!(AuthResult::from_code(c).code(), c);
            assert_eq!(PolicyResult::from_code(c).code(), c);
            assert_eq!(ErrorCode::from_code(c).code(), c);
        }
    }

    #[test]
    fn method_properties_drive_s5_s8_s15() {
        assert!(Method::IkePsk.needs_authentication());
        assert!(Method::IkeSignature.terminal_derives_session_key());
        // S18: a method without authentication is an impossible state for the terminal.
        assert!(!Method::IkeNull.needs_authentication());
        // S15 = no for TLS: the traffic keys arrive ready.
        assert!(!Method::Tls13.terminal_derives_session_key());
        assert!(!Method::Other(77).needs_key_generation());
    }

    #[test]
    fn an_unknown_type_in_or_out_of_the_range_is_named_for_s49() {
        let bytes = wire::encode(0x6A, 1, FieldWriter::new().u32(F_SEQ, 0)).unwrap();
        assert_eq!(
            Message::decode(&bytes, &Limits::default()),
            Err(KeyxError::UnknownMessage(0x6A))
        );
        let bytes = wire::encode(0x10, 1, FieldWriter::new()).unwrap();
        assert_eq!(
            Message::decode(&bytes, &Limits::default()),
            Err(KeyxError::UnknownMessage(0x10))
        );
    }

    #[test]
    fn each_broken_rule_has_its_error() {
        let limits = Limits::default();
        let enc = |t: u8, w: FieldWriter| wire::encode(t, 9, w).unwrap();
        let base = || FieldWriter::new().u32(F_SEQ, 1);
        // A role that is neither.
        let start = |role: u8| {
            base()
                .u8(F_PROTOCOL, 1)
                .u8(F_ROLE, role)
                .addr(F_LOCAL, "192.0.2.1:500".parse().unwrap())
                .addr(F_REMOTE, "192.0.2.2:500".parse().unwrap())
        };
        assert_eq!(
            Message::decode(
                &enc(START_REQUEST, start(3).bytes(F_TRANSFORMS, &[])),
                &limits
            ),
            Err(KeyxError::UnknownRole(3))
        );
        // A transform list that is not whole entries.
        assert_eq!(
            Message::decode(
                &enc(START_REQUEST, start(1).bytes(F_TRANSFORMS, &[1, 0, 20, 1])),
                &limits
            ),
            Err(KeyxError::BadTransformList(4))
        );
        // Too many transforms, both ways.
        let many = vec![
            Transform {
                kind: 1,
                id: 12,
                key_bits: 128
            };
            MAX_TRANSFORMS + 1
        ];
        assert_eq!(
            encode_transforms(&many),
            Err(KeyxError::BadTransformList((MAX_TRANSFORMS + 1) * 5))
        );
        assert_eq!(
            decode_transforms(&[0; (MAX_TRANSFORMS + 1) * 5]),
            Err(KeyxError::BadTransformList((MAX_TRANSFORMS + 1) * 5))
        );
        // An outcome nobody defined; a proceed without its method.
        assert_eq!(
            Message::decode(&enc(START_RESPONSE, base().u8(F_OUTCOME, 9)), &limits),
            Err(KeyxError::UnknownOutcome(9))
        );
        assert_eq!(
            Message::decode(
                &enc(
                    START_RESPONSE,
                    base()
                        .u8(F_OUTCOME, OUTCOME_PROCEED)
                        .bytes(F_TRANSFORMS, &[])
                ),
                &limits
            ),
            Err(KeyxError::IncompleteStart)
        );
        // Payloads without their first type.
        assert_eq!(
            Message::decode(&enc(AUTH_REQUEST, base().bytes(F_PAYLOADS, &[1])), &limits),
            Err(KeyxError::MissingFirstPayload)
        );
        // A key response without its sealed body.
        assert_eq!(
            Message::decode(&enc(KEY_RESPONSE, base()), &limits),
            Err(KeyxError::Decode(wire::WireError::MissingField(F_SEALED)))
        );
        // Oversize protocol bytes, both ways.
        let big = vec![0; MAX_SEALED + 1];
        assert_eq!(
            Message {
                session: 1,
                seq: 0,
                body: Body::KeyResponse(KeyResponse {
                    sealed: big.clone()
                })
            }
            .encode(),
            Err(KeyxError::TooLarge {
                field: F_SEALED,
                len: MAX_SEALED + 1,
                max: MAX_SEALED
            })
        );
        assert_eq!(
            Message::decode(&enc(KEY_RESPONSE, base().bytes(F_SEALED, &big)), &limits),
            Err(KeyxError::TooLarge {
                field: F_SEALED,
                len: MAX_SEALED + 1,
                max: MAX_SEALED
            })
        );
    }

    proptest::proptest! {
        /// Any body behind a delegation header decodes to a message or a typed error,
        /// never a panic; what decodes encodes back to the same message.
        #[test]
        fn arbitrary_bodies_never_panic(t in 0x60u8..=0x6A, body in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let mut bytes = wire::Header { msg_type: t, body_len: body.len() as u32, session: 5 }
                .to_bytes()
                .to_vec();
            bytes.extend_from_slice(&body);
            if let Ok(m) = Message::decode(&bytes, &Limits::default()) {
                let again = m.encode().unwrap();
                proptest::prop_assert_eq!(Message::decode(&again, &Limits::default()).unwrap(), m);
            }
        }

        /// The same over well-formed field lists of this module's field types, so decoding
        /// gets past the framing into every message's own rules.
        #[test]
        fn arbitrary_known_fields_never_panic(
            t in 0x60u8..=0x69,
            fields in proptest::collection::vec(
                (0..KNOWN.len(), proptest::collection::vec(proptest::num::u8::ANY, 0..24)),
                0..10,
            ),
        ) {
            let mut w = FieldWriter::new();
            for (i, v) in &fields {
                w = w.bytes(KNOWN[*i], v);
            }
            let bytes = wire::encode(t, 5, w).unwrap();
            if let Ok(m) = Message::decode(&bytes, &Limits::default()) {
                let again = m.encode().unwrap();
                proptest::prop_assert_eq!(Message::decode(&again, &Limits::default()).unwrap(), m);
            }
        }
    }

    #[test]
    fn a_message_fits_one_channel_record_or_is_refused_by_name() {
        let keygen = |auth_len: usize| Message {
            session: u64::MAX,
            seq: u32::MAX,
            body: Body::KeyGenResponse(KeyGenResponse {
                message: Some(vec![0; MAX_PROTOCOL_BYTES]),
                sealed: Some(vec![0; MAX_SEALED]),
                local_auth: Some((35, vec![0; auth_len])),
            }),
        };
        // The largest protocol message with its sealed keys and a payload chain fits.
        assert!(keygen(2048).encode().unwrap().len() <= MAX_MESSAGE);
        // One that would not fit a record is refused before it reaches the channel.
        assert!(matches!(
            keygen(MAX_PROTOCOL_BYTES).encode(),
            Err(KeyxError::MessageTooLarge {
                max: MAX_MESSAGE,
                ..
            })
        ));
    }
}

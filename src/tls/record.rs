//! The TLS 1.3 record layer (RFC 8446 §5) of a terminal that holds only traffic keys.
//!
//! In seed 004 over TLS the substitution server runs the handshake and hands the terminal,
//! for each direction, a key, an IV and the next record sequence number ([`TrafficKeys`]).
//! [`RecordLayer`] protects and opens application data with them, and carries the
//! post-handshake messages a terminal meets: KeyUpdate (the next key comes from the server
//! again), NewSessionTicket (handed up whole, to relay), and alerts.
//!
//! # Rules enforced on what arrives
//!
//! - Framing: content type 20 to 23, a legacy version whose first byte is 3, a body of at
//!   most 2^14 + 256 bytes. The version's second byte is ignored (§5.1: the field "MUST be
//!   ignored for all purposes"), but the header is the AEAD's additional data exactly as
//!   received (§5.2), so a changed byte fails authentication. Checking the first byte
//!   rejects a stream that is not TLS at its first bytes, before a record's length is
//!   waited for.
//! - Once protected, every record is `application_data` on the outside: a
//!   `change_cipher_spec` record (outside or inside) and an unprotected handshake or alert
//!   record are refused (`unexpected_message`).
//! - nonce = IV XOR the 64-bit sequence number, right-aligned (§5.3); the sequence number
//!   never wraps.
//! - The inner plaintext is at most 2^14 + 1 bytes; trailing zeros are padding; an
//!   all-zero one has no content type (§5.4).
//! - Zero-length application data is legal (and produces no event); a zero-length
//!   handshake record and an alert record that is not exactly one alert are not (§5.1).
//! - Handshake messages may share a record or span records, reassembled in a buffer
//!   bounded by [`RecordConfig::max_handshake_message`]; no other record type may come
//!   between the pieces of one. Only KeyUpdate (24) and NewSessionTicket (4) are accepted.
//! - A KeyUpdate ends its record (§5.1: the key changes after it); its body is one byte, 0
//!   or 1 (§4.6.3). After it the layer pauses: later records are held, unopened, until
//!   [`RecordLayer::install_rx`] gives the next receive key, so a second KeyUpdate can
//!   never be read under the first one's key.
//! - Alerts: `close_notify` ends the peer's direction (later bytes are discarded and
//!   reported, §6.1); `user_canceled` is reported and is not fatal; every other
//!   description, unknown ones included, is fatal whatever its level byte (§6.2).
//!
//! # What the layer sends
//!
//! Records of type 23 with version 0x0303, no padding, at most
//! [`RecordConfig::max_fragment`] bytes of content each. A key protects at most its
//! suite's [`CipherSuite::confidentiality_limit`] records; the last of those sequence
//! numbers is kept for a KeyUpdate or a closing alert, so the layer can always change key
//! or end the connection. [`RecordLayer::wants_tx_update`] turns true
//! [`RecordConfig::tx_update_margin`] records before that, for the owner to fetch the
//! next key in time.
//!
//! # Bounds
//!
//! What the layer holds for the caller — received bytes not processed yet (a partial
//! record, or records waiting for the next receive key), a partial handshake message, and
//! events not yet taken with [`RecordLayer::poll_event`] — never exceeds
//! [`RecordConfig::max_held`]. A [`RecordLayer::receive`] that would pass it is refused
//! whole ([`TlsError::ReceiveBacklogFull`]) and takes nothing, so a driver reads at most
//! [`RecordLayer::receive_capacity`] bytes from its transport: that is how the layer
//! pushes back on a peer while the terminal waits for a key, and on an application that
//! does not take its data.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use zeroize::Zeroizing;

use crate::crypto::aead::{AeadAlg, AeadKey, NONCE_LEN, TAG_LEN};
pub use crate::error::AlertDescription;
use crate::error::TlsError;

/// The record header: content type, legacy version, length.
pub const HEADER_LEN: usize = 5;
/// The most content one record carries (2^14, RFC 8446 §5.1).
pub const MAX_FRAGMENT: usize = 1 << 14;
/// The most inner plaintext (content and its type byte) a record opens to (§5.4).
pub const MAX_INNER_PLAINTEXT: usize = MAX_FRAGMENT + 1;
/// The longest record body (2^14 + 256, §5.2).
pub const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;
/// The longest record on the wire, header included.
pub const MAX_RECORD: usize = HEADER_LEN + MAX_CIPHERTEXT;

/// The version every record this layer sends carries (§5.1: TLS 1.2's, 0x0303).
const LEGACY_VERSION: [u8; 2] = [0x03, 0x03];
/// Handshake message types the layer accepts after the handshake (§4).
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;
/// A handshake message's header: type and 24-bit length.
const HANDSHAKE_HEADER_LEN: usize = 4;
/// Alert levels (§6). TLS 1.3 ignores the level on receipt; we send "warning" only for
/// the two alerts that are not errors, as TLS 1.2 peers expect.
const LEVEL_WARNING: u8 = 1;
const LEVEL_FATAL: u8 = 2;

/// A record's content type (RFC 8446 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// `change_cipher_spec` (20): only the handshake's compatibility record.
    ChangeCipherSpec,
    /// `alert` (21).
    Alert,
    /// `handshake` (22).
    Handshake,
    /// `application_data` (23): also the outer type of every protected record.
    ApplicationData,
}

impl ContentType {
    /// The type's byte.
    pub const fn code(self) -> u8 {
        match self {
            ContentType::ChangeCipherSpec => 20,
            ContentType::Alert => 21,
            ContentType::Handshake => 22,
            ContentType::ApplicationData => 23,
        }
    }

    /// The type with this byte, if TLS 1.3 defines one.
    pub const fn from_code(code: u8) -> Option<ContentType> {
        match code {
            20 => Some(ContentType::ChangeCipherSpec),
            21 => Some(ContentType::Alert),
            22 => Some(ContentType::Handshake),
            23 => Some(ContentType::ApplicationData),
            _ => None,
        }
    }
}

/// A TLS 1.3 cipher suite (RFC 8446 §B.4): the AEAD that protects records (the hash is
/// the server's business, it derives the keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// `TLS_AES_128_GCM_SHA256` (0x1301).
    Aes128GcmSha256,
    /// `TLS_AES_256_GCM_SHA384` (0x1302).
    Aes256GcmSha384,
    /// `TLS_CHACHA20_POLY1305_SHA256` (0x1303).
    Chacha20Poly1305Sha256,
}

impl CipherSuite {
    /// Every suite, by code point.
    pub const ALL: [CipherSuite; 3] = [
        CipherSuite::Aes128GcmSha256,
        CipherSuite::Aes256GcmSha384,
        CipherSuite::Chacha20Poly1305Sha256,
    ];

    /// The suite's TLS code point.
    pub const fn code(self) -> u16 {
        match self {
            CipherSuite::Aes128GcmSha256 => 0x1301,
            CipherSuite::Aes256GcmSha384 => 0x1302,
            CipherSuite::Chacha20Poly1305Sha256 => 0x1303,
        }
    }

    /// The suite with this code point, if the layer supports it.
    pub const fn from_code(code: u16) -> Option<CipherSuite> {
        match code {
            0x1301 => Some(CipherSuite::Aes128GcmSha256),
            0x1302 => Some(CipherSuite::Aes256GcmSha384),
            0x1303 => Some(CipherSuite::Chacha20Poly1305Sha256),
            _ => None,
        }
    }

    /// The record protection.
    pub const fn aead(self) -> AeadAlg {
        match self {
            CipherSuite::Aes128GcmSha256 => AeadAlg::Aes128Gcm,
            CipherSuite::Aes256GcmSha384 => AeadAlg::Aes256Gcm,
            CipherSuite::Chacha20Poly1305Sha256 => AeadAlg::ChaCha20Poly1305,
        }
    }

    /// The traffic key's length in bytes.
    pub const fn key_len(self) -> usize {
        self.aead().key_len()
    }

    /// How many records one key may protect.
    ///
    /// AES-GCM: 2^24. RFC 8446 §5.5 allows "up to 2^24.5 full-size records" for a
    /// 2^-57 margin; 2^24 is the power of two below it, the figure rustls's current
    /// providers use, and what the AEAD-limits analysis gives for a 2^-60 advantage.
    /// ChaCha20-Poly1305: §5.5 says "the record sequence number would wrap before the
    /// safety limit is reached", so the only limit is the sequence number itself
    /// (`u64::MAX`, as rustls has it).
    pub const fn confidentiality_limit(self) -> u64 {
        match self {
            CipherSuite::Aes128GcmSha256 | CipherSuite::Aes256GcmSha384 => 1 << 24,
            CipherSuite::Chacha20Poly1305Sha256 => u64::MAX,
        }
    }
}

/// One direction's traffic protection: what a kTLS socket takes too (key, IV, record
/// sequence). The key and IV are wiped when dropped, and `Debug` does not show them.
#[derive(Clone)]
pub struct TrafficKeys {
    /// The connection's suite.
    pub suite: CipherSuite,
    /// The traffic key (`suite.key_len()` bytes).
    pub key: Zeroizing<Vec<u8>>,
    /// The traffic IV.
    pub iv: Zeroizing<[u8; NONCE_LEN]>,
    /// The sequence number of the next record under this key (0 for a new key).
    pub seq: u64,
}

impl TrafficKeys {
    /// Keys for `suite` from their bytes; refused if `key` is not the suite's key length.
    pub fn new(
        suite: CipherSuite,
        key: &[u8],
        iv: [u8; NONCE_LEN],
        seq: u64,
    ) -> Result<TrafficKeys, TlsError> {
        check_key_len(suite, key.len())?;
        Ok(TrafficKeys {
            suite,
            key: Zeroizing::new(key.to_vec()),
            iv: Zeroizing::new(iv),
            seq,
        })
    }
}

impl fmt::Debug for TrafficKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrafficKeys")
            .field("suite", &self.suite)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

fn check_key_len(suite: CipherSuite, got: usize) -> Result<(), TlsError> {
    let want = suite.key_len();
    if got == want {
        Ok(())
    } else {
        Err(TlsError::BadKeyLength { got, want })
    }
}

/// The record layer's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordConfig {
    /// Content per record the terminal sends: 1 to 2^14 (default 2^14). Smaller records
    /// cost 22 bytes each but let a weak device seal and a receiver deliver sooner.
    pub max_fragment: usize,
    /// Bytes the layer holds for the caller (default 64 KiB): received bytes not processed
    /// yet — a partial record, or the records held while waiting for the next receive key
    /// after a peer KeyUpdate — plus a partial handshake message and the events not yet
    /// taken (their data; one byte for each other event). At least one whole record
    /// ([`MAX_RECORD`] bytes) more than `max_handshake_message`, so that a partial
    /// message and the record completing it always fit. See
    /// [`RecordLayer::receive_capacity`].
    pub max_held: usize,
    /// Peer KeyUpdates accepted between two application-data records that carry data
    /// (default 8). Each one makes the terminal ask the server for a key; this bounds the
    /// work a peer can cause without sending data.
    pub max_key_updates: u32,
    /// The longest post-handshake message, its 4-byte header included (default
    /// 16 KiB + 4; at least 5, a KeyUpdate). NewSessionTicket is the long one: a ticket of
    /// up to 2^16 - 1 bytes is legal, but real ones are a few hundred bytes.
    pub max_handshake_message: usize,
    /// How many records before the end of the send key's usable sequence numbers
    /// [`RecordLayer::wants_tx_update`] turns true (default 2^16, at least 1). Fetching a
    /// key from the server takes a round trip; 2^16 records is at least that much sending
    /// (a gigabyte of full records), and 1/256 of an AES-GCM key's life.
    pub tx_update_margin: u64,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            max_fragment: MAX_FRAGMENT,
            max_held: 64 * 1024,
            max_key_updates: 8,
            max_handshake_message: 16 * 1024 + HANDSHAKE_HEADER_LEN,
            tx_update_margin: 1 << 16,
        }
    }
}

impl RecordConfig {
    fn check(&self, suite: CipherSuite) -> Result<(), TlsError> {
        let at_least = |field: &'static str, got: u64, min: u64| {
            if got < min {
                Err(TlsError::BoundTooSmall { field, got, min })
            } else {
                Ok(())
            }
        };
        at_least("max_fragment", self.max_fragment as u64, 1)?;
        if self.max_fragment > MAX_FRAGMENT {
            return Err(TlsError::FragmentTooLarge(self.max_fragment));
        }
        at_least("max_key_updates", u64::from(self.max_key_updates), 1)?;
        // A KeyUpdate must fit: the peer may send one at any time.
        at_least(
            "max_handshake_message",
            self.max_handshake_message as u64,
            HANDSHAKE_HEADER_LEN as u64 + 1,
        )?;
        // A handshake message one byte short of the bound may be held while the next
        // full-size record arrives: both must fit, or receiving could stall for good.
        at_least(
            "max_held",
            self.max_held as u64,
            (self.max_handshake_message + MAX_RECORD) as u64,
        )?;
        at_least("tx_update_margin", self.tx_update_margin, 1)?;
        let limit = suite.confidentiality_limit();
        if self.tx_update_margin >= limit - 1 {
            return Err(TlsError::MarginTooLarge {
                margin: self.tx_update_margin,
                limit,
            });
        }
        Ok(())
    }
}

/// What the peer's records produced, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordEvent {
    /// Application data, in order (one event per record that carried data; empty records
    /// produce none).
    Data(Vec<u8>),
    /// The peer's KeyUpdate. Receiving is now paused (later records are held, bounded by
    /// `max_held`) until `install_rx` gets the next receive key. `requested`: the peer
    /// asked us to update too; `seal_application` is refused (`TlsError::KeyUpdateOwed`)
    /// until `update_tx` has been called.
    KeyUpdate {
        /// The peer asked for our KeyUpdate in return.
        requested: bool,
    },
    /// A NewSessionTicket, the whole handshake message (4-byte header included), to relay
    /// to the server.
    NewSessionTicket(Vec<u8>),
    /// The peer sent `close_notify`: it sends nothing more (later bytes are discarded and
    /// reported as `TlsError::DataAfterCloseNotify`). Our direction stays open.
    CloseNotify,
    /// The peer sent an alert other than `close_notify`. Every one is fatal — the layer is
    /// now failed — except `AlertDescription::UserCanceled`, which RFC 8446 §6.1 makes a
    /// warning: reported, and the layer carries on.
    Alert(AlertDescription),
}

impl RecordEvent {
    /// What the event counts against `max_held`: its bytes, or one for an event without.
    fn weight(&self) -> usize {
        match self {
            RecordEvent::Data(d) | RecordEvent::NewSessionTicket(d) => d.len().max(1),
            RecordEvent::KeyUpdate { .. } | RecordEvent::CloseNotify | RecordEvent::Alert(_) => 1,
        }
    }
}

/// One direction's key in use: the keyed AEAD (wiped on drop), the IV and the next
/// sequence number.
struct Protection {
    aead: AeadKey,
    iv: Zeroizing<[u8; NONCE_LEN]>,
    seq: u64,
}

impl Protection {
    fn new(keys: &TrafficKeys, suite: CipherSuite) -> Result<Protection, TlsError> {
        if keys.suite != suite {
            return Err(TlsError::SuiteMismatch {
                expected: suite.code(),
                got: keys.suite.code(),
            });
        }
        check_key_len(suite, keys.key.len())?;
        let aead = AeadKey::new(suite.aead(), &keys.key).map_err(|_| TlsError::BadKeyLength {
            got: keys.key.len(),
            want: suite.key_len(),
        })?;
        Ok(Protection {
            aead,
            iv: keys.iv.clone(),
            seq: keys.seq,
        })
    }

    /// §5.3: the sequence number, big-endian, left-padded to the IV's length, XORed with
    /// the IV.
    fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut nonce = *self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        nonce
    }
}

impl fmt::Debug for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Protection")
            .field("aead", &self.aead)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// The receive direction's step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rx {
    /// Records are opened as they complete.
    Open,
    /// A peer KeyUpdate was read; records are held until `install_rx`.
    AwaitingKey,
    /// The peer sent `close_notify`.
    Closed,
}

/// Why the layer failed; it decides whether an alert may still be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// A fatal error found here: the owner may still send the alert it names.
    Local,
    /// The peer sent a fatal alert: the connection is over, nothing more is sent.
    PeerAlert,
    /// We sent a fatal alert.
    AlertSent,
}

/// A terminal's TLS 1.3 record layer: seals application data, opens the peer's records,
/// and carries KeyUpdate, NewSessionTicket and alerts. Sans-IO: bytes in, bytes and
/// [`RecordEvent`]s out.
///
/// See the [module documentation](self) for the rules and bounds, and
/// [`crate::tls`] for an example.
pub struct RecordLayer {
    cfg: RecordConfig,
    suite: CipherSuite,
    tx: Protection,
    rx: Protection,
    /// We sent `close_notify`.
    tx_closed: bool,
    rx_state: Rx,
    failure: Option<Failure>,
    /// The peer requested a KeyUpdate we have not sent yet.
    owes_key_update: bool,
    /// Peer KeyUpdates since the last application data that carried data.
    key_updates_in_a_row: u32,
    /// Received bytes not processed yet, from the front.
    rx_buf: Vec<u8>,
    /// A handshake message whose end has not arrived yet.
    hs_buf: Vec<u8>,
    events: VecDeque<RecordEvent>,
    /// The events' weight against `max_held`.
    event_bytes: usize,
    sealed: u64,
    opened: u64,
}

/// The state, not the contents: no key, IV, or byte of application data.
impl fmt::Debug for RecordLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordLayer")
            .field("suite", &self.suite)
            .field("tx", &self.tx)
            .field("rx", &self.rx)
            .field("tx_closed", &self.tx_closed)
            .field("rx_state", &self.rx_state)
            .field("failure", &self.failure)
            .field("owes_key_update", &self.owes_key_update)
            .field("held", &self.held())
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl RecordLayer {
    /// A record layer sending with `tx` and receiving with `rx`. Refused if the two name
    /// different suites, a key has the wrong length, a bound is unusable, or `tx` has no
    /// sequence number left.
    pub fn new(
        cfg: RecordConfig,
        tx: TrafficKeys,
        rx: TrafficKeys,
    ) -> Result<RecordLayer, TlsError> {
        let suite = tx.suite;
        cfg.check(suite)?;
        check_tx_seq(suite, tx.seq)?;
        Ok(RecordLayer {
            cfg,
            suite,
            tx: Protection::new(&tx, suite)?,
            rx: Protection::new(&rx, suite)?,
            tx_closed: false,
            rx_state: Rx::Open,
            failure: None,
            owes_key_update: false,
            key_updates_in_a_row: 0,
            rx_buf: Vec::new(),
            hs_buf: Vec::new(),
            events: VecDeque::new(),
            event_bytes: 0,
            sealed: 0,
            opened: 0,
        })
    }

    // ---------------------------------------------------------------- sending

    /// Append `data` to `out` as application-data records of at most `max_fragment`
    /// bytes each (nothing for empty `data`). All or nothing: refused, appending nothing,
    /// after [`close`](Self::close) ([`TlsError::Closed`]), once failed, while a KeyUpdate
    /// is owed ([`TlsError::KeyUpdateOwed`]), or when the send key has too few sequence
    /// numbers left for every record ([`TlsError::TxKeyExhausted`]).
    pub fn seal_application(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        self.check_tx()?;
        if self.owes_key_update {
            return Err(TlsError::KeyUpdateOwed);
        }
        if data.is_empty() {
            return Ok(());
        }
        let records = data.len().div_ceil(self.cfg.max_fragment) as u64;
        // The key's last sequence number is kept for a KeyUpdate or a closing alert.
        let usable = self.suite.confidentiality_limit() - 1;
        if self
            .tx
            .seq
            .checked_add(records)
            .is_none_or(|end| end > usable)
        {
            return Err(self.tx_exhausted());
        }
        out.reserve(data.len() + records as usize * (HEADER_LEN + 1 + TAG_LEN));
        for chunk in data.chunks(self.cfg.max_fragment) {
            self.seal_record(ContentType::ApplicationData, chunk, out)?;
        }
        Ok(())
    }

    /// Whether the send key is within `tx_update_margin` records of the last one
    /// application data may use: the owner should ask the server for the next key and
    /// then call [`update_tx`](Self::update_tx).
    pub fn wants_tx_update(&self) -> bool {
        let usable = self.suite.confidentiality_limit() - 1;
        self.can_send() && usable.saturating_sub(self.tx.seq) <= self.cfg.tx_update_margin
    }

    /// Whether the peer asked for a KeyUpdate that [`update_tx`](Self::update_tx) has not
    /// sent yet (application data is refused until it has).
    pub fn owes_key_update(&self) -> bool {
        self.owes_key_update
    }

    /// Append a KeyUpdate (`request_peer`: ask the peer to update its key too) sealed
    /// under the current send key, then send with `next` from its sequence number on
    /// (normally 0). Clears a KeyUpdate owed. Refused, changing nothing, after `close`,
    /// once failed, or if `next` does not fit the connection.
    pub fn update_tx(
        &mut self,
        next: TrafficKeys,
        request_peer: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        self.check_tx()?;
        let protection = Protection::new(&next, self.suite)?;
        check_tx_seq(self.suite, next.seq)?;
        self.check_control_room()?;
        let message = [KEY_UPDATE, 0, 0, 1, u8::from(request_peer)];
        self.seal_record(ContentType::Handshake, &message, out)?;
        self.tx = protection;
        self.owes_key_update = false;
        Ok(())
    }

    /// Append `close_notify`: we send nothing more (receiving goes on until the peer's).
    pub fn close(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        self.check_tx()?;
        self.check_control_room()?;
        self.seal_record(
            ContentType::Alert,
            &[LEVEL_WARNING, AlertDescription::CloseNotify.code()],
            out,
        )?;
        self.tx_closed = true;
        Ok(())
    }

    /// Append `alert` and fail the layer: the final word on the connection, typically the
    /// [`TlsError::alert`] of a fatal error just returned (allowed after that error).
    /// `close_notify` is [`close`](Self::close) instead. Refused after `close`, after
    /// the peer's fatal alert, and after a first alert.
    pub fn seal_alert(
        &mut self,
        alert: AlertDescription,
        out: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        if alert == AlertDescription::CloseNotify {
            return self.close(out);
        }
        match self.failure {
            None | Some(Failure::Local) => {}
            Some(Failure::PeerAlert | Failure::AlertSent) => return Err(TlsError::Failed),
        }
        if self.tx_closed {
            return Err(TlsError::Closed);
        }
        self.check_control_room()?;
        let level = if alert.is_fatal() {
            LEVEL_FATAL
        } else {
            LEVEL_WARNING
        };
        self.seal_record(ContentType::Alert, &[level, alert.code()], out)?;
        self.failure = Some(Failure::AlertSent);
        self.discard_input();
        Ok(())
    }

    fn can_send(&self) -> bool {
        self.failure.is_none() && !self.tx_closed
    }

    fn check_tx(&self) -> Result<(), TlsError> {
        if self.failure.is_some() {
            Err(TlsError::Failed)
        } else if self.tx_closed {
            Err(TlsError::Closed)
        } else {
            Ok(())
        }
    }

    /// The kept last sequence number is free unless a key was handed over at it.
    fn check_control_room(&self) -> Result<(), TlsError> {
        if self.tx.seq < self.suite.confidentiality_limit() {
            Ok(())
        } else {
            Err(self.tx_exhausted())
        }
    }

    fn tx_exhausted(&self) -> TlsError {
        TlsError::TxKeyExhausted {
            seq: self.tx.seq,
            limit: self.suite.confidentiality_limit(),
        }
    }

    /// TLSInnerPlaintext = content ‖ type (no padding), sealed with the header as
    /// additional data (§5.2), in place at the end of `out` (no buffer of its own).
    /// Callers checked the sequence number.
    fn seal_record(
        &mut self,
        typ: ContentType,
        content: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        let len = content.len() + 1 + TAG_LEN;
        let [len_hi, len_lo] = (len as u16).to_be_bytes();
        let header = [
            ContentType::ApplicationData.code(),
            LEGACY_VERSION[0],
            LEGACY_VERSION[1],
            len_hi,
            len_lo,
        ];
        out.reserve(HEADER_LEN + len);
        let before = out.len();
        out.extend_from_slice(&header);
        let start = out.len();
        out.extend_from_slice(content);
        out.push(typ.code());
        let sealed =
            self.tx
                .aead
                .seal_in_place_detached(&self.tx.nonce(), &header, &mut out[start..]);
        let Ok(tag) = sealed else {
            // Nothing of the record stays in `out`, and its sequence number is not used.
            out.truncate(before);
            return Err(TlsError::SealRefused);
        };
        out.extend_from_slice(&tag);
        self.tx.seq += 1;
        self.sealed += 1;
        Ok(())
    }

    // ---------------------------------------------------------------- receiving

    /// Take stream bytes from the peer, in any segmentation, and process every complete
    /// record while not paused; the results come out of [`poll_event`](Self::poll_event)
    /// (events queued before an error stay queued).
    ///
    /// Refused, taking nothing and changing nothing: once failed ([`TlsError::Failed`]),
    /// and when the bytes would take what the layer holds past `max_held`
    /// ([`TlsError::ReceiveBacklogFull`]). After the peer's `close_notify` any bytes are
    /// discarded and reported ([`TlsError::DataAfterCloseNotify`]). Any other error is
    /// fatal ([`TlsError::is_fatal`]): the layer is failed and the error's
    /// [`alert`](TlsError::alert) is the one to send with
    /// [`seal_alert`](Self::seal_alert).
    pub fn receive(&mut self, bytes: &[u8]) -> Result<(), TlsError> {
        if self.failure.is_some() {
            return Err(TlsError::Failed);
        }
        if self.rx_state == Rx::Closed {
            return if bytes.is_empty() {
                Ok(())
            } else {
                Err(TlsError::DataAfterCloseNotify(bytes.len()))
            };
        }
        let held = self.held();
        if bytes.len() > self.cfg.max_held.saturating_sub(held) {
            return Err(TlsError::ReceiveBacklogFull {
                held,
                incoming: bytes.len(),
                bound: self.cfg.max_held,
            });
        }
        if !self.rx_buf.is_empty() {
            self.rx_buf.extend_from_slice(bytes);
            return self.process();
        }
        // Nothing held: open the records straight from the caller's bytes and keep only
        // what is left (a partial record, or records waiting for the next key).
        let mut pos = 0;
        let result = self.process_records(bytes, &mut pos);
        if self.keeps_input(&result) {
            self.rx_buf.extend_from_slice(&bytes[pos..]);
        }
        result
    }

    /// How many bytes [`receive`](Self::receive) takes now: `max_held` less what the
    /// layer holds. A driver reads at most this much from its transport; it grows as
    /// records are processed, events are taken and the awaited receive key is installed.
    pub fn receive_capacity(&self) -> usize {
        if self.failure.is_some() {
            0
        } else {
            self.cfg.max_held.saturating_sub(self.held())
        }
    }

    /// Install the peer's next receive key after its KeyUpdate
    /// ([`RecordEvent::KeyUpdate`]) and process the records held meanwhile; returns their
    /// first error as [`receive`](Self::receive) would. Refused, changing nothing, when no
    /// KeyUpdate awaits a key ([`TlsError::NoKeyUpdatePending`]) or `next` does not fit
    /// the connection.
    pub fn install_rx(&mut self, next: TrafficKeys) -> Result<(), TlsError> {
        if self.failure.is_some() {
            return Err(TlsError::Failed);
        }
        if self.rx_state != Rx::AwaitingKey {
            return Err(TlsError::NoKeyUpdatePending);
        }
        self.rx = Protection::new(&next, self.suite)?;
        self.rx_state = Rx::Open;
        self.process()
    }

    /// The transport ended. `Ok` if the peer's `close_notify` came first; otherwise
    /// [`TlsError::Truncated`] (what arrived may be cut short) and the layer is failed.
    pub fn end_of_stream(&mut self) -> Result<(), TlsError> {
        if self.failure.is_some() {
            return Err(TlsError::Failed);
        }
        if self.rx_state == Rx::Closed {
            return Ok(());
        }
        self.fail(Failure::Local);
        Err(TlsError::Truncated)
    }

    /// The next event, oldest first. Taking events frees room for
    /// [`receive`](Self::receive).
    pub fn poll_event(&mut self) -> Option<RecordEvent> {
        let event = self.events.pop_front()?;
        self.event_bytes -= event.weight();
        Some(event)
    }

    /// Whether receiving is paused after a peer KeyUpdate, waiting for
    /// [`install_rx`](Self::install_rx).
    pub fn awaiting_rx_key(&self) -> bool {
        self.failure.is_none() && self.rx_state == Rx::AwaitingKey
    }

    /// Whether the layer failed (a fatal error, or a fatal alert sent or received).
    pub fn is_failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Whether the peer sent `close_notify`.
    pub fn peer_closed(&self) -> bool {
        self.rx_state == Rx::Closed
    }

    /// The connection's cipher suite.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// The sequence number of the next record we send (under the current key).
    pub fn tx_seq(&self) -> u64 {
        self.tx.seq
    }

    /// The sequence number of the next record we open (under the current key).
    pub fn rx_seq(&self) -> u64 {
        self.rx.seq
    }

    /// Records sealed, under every key.
    pub fn records_sealed(&self) -> u64 {
        self.sealed
    }

    /// Records opened, under every key.
    pub fn records_opened(&self) -> u64 {
        self.opened
    }

    fn held(&self) -> usize {
        self.rx_buf.len() + self.hs_buf.len() + self.event_bytes
    }

    fn fail(&mut self, failure: Failure) {
        self.failure = Some(failure);
        self.discard_input();
    }

    fn discard_input(&mut self) {
        self.rx_buf = Vec::new();
        self.hs_buf = Vec::new();
    }

    fn push_event(&mut self, event: RecordEvent) {
        self.event_bytes += event.weight();
        self.events.push_back(event);
    }

    /// Open the complete records at the front of `rx_buf` while receiving is open; keep
    /// the rest. Processing never adds to what is held (a record's events weigh less than
    /// the record), so the `max_held` check in `receive` bounds everything.
    fn process(&mut self) -> Result<(), TlsError> {
        let buf = core::mem::take(&mut self.rx_buf);
        let mut pos = 0;
        let result = self.process_records(&buf, &mut pos);
        if self.keeps_input(&result) {
            self.rx_buf = buf;
            self.rx_buf.drain(..pos);
        }
        result
    }

    /// After processing: whether the bytes not processed are kept. Not after a fatal
    /// error (the layer fails) nor after the peer's fatal alert (what came after it is
    /// not read).
    fn keeps_input(&mut self, result: &Result<(), TlsError>) -> bool {
        if let Err(e) = result
            && e.is_fatal()
        {
            self.fail(Failure::Local);
            return false;
        }
        if self.failure.is_some() {
            self.discard_input();
            return false;
        }
        true
    }

    fn process_records(&mut self, buf: &[u8], pos: &mut usize) -> Result<(), TlsError> {
        while self.rx_state == Rx::Open && self.failure.is_none() {
            let rest = &buf[*pos..];
            let Some(len) = record_len(rest)? else {
                return Ok(());
            };
            let Some(record) = rest.get(..len) else {
                return Ok(());
            };
            *pos += len;
            self.open_record(record)?;
        }
        if self.rx_state == Rx::Closed && *pos < buf.len() {
            let after = buf.len() - *pos;
            *pos = buf.len();
            return Err(TlsError::DataAfterCloseNotify(after));
        }
        Ok(())
    }

    /// One whole record (header included).
    fn open_record(&mut self, record: &[u8]) -> Result<(), TlsError> {
        let (header, body) = record.split_at(HEADER_LEN);
        match ContentType::from_code(header[0]) {
            Some(ContentType::ApplicationData) => {}
            Some(ContentType::ChangeCipherSpec) => return Err(TlsError::ChangeCipherSpec),
            Some(ContentType::Alert | ContentType::Handshake) => {
                return Err(TlsError::UnprotectedRecord(header[0]));
            }
            None => return Err(TlsError::UnknownContentType(header[0])),
        }
        // Opening at u64::MAX would leave no next number to expect (§5.3: no wrap).
        if self.rx.seq == u64::MAX {
            return Err(TlsError::RxSeqExhausted);
        }
        // Decrypted straight from the received bytes into the buffer that becomes the
        // event's data.
        let mut inner = alloc::vec![0; body.len().saturating_sub(TAG_LEN)];
        self.rx
            .aead
            .open_into(&self.rx.nonce(), header, body, &mut inner)
            .map_err(|_| TlsError::BadRecordMac)?;
        self.rx.seq += 1;
        self.opened += 1;
        if inner.len() > MAX_INNER_PLAINTEXT {
            return Err(TlsError::PlaintextOverflow(inner.len()));
        }
        let end = inner
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(TlsError::NoContentType)?;
        let typ = inner[end];
        inner.truncate(end);
        match ContentType::from_code(typ) {
            Some(ContentType::ApplicationData) => {
                self.no_split_handshake(typ)?;
                if !inner.is_empty() {
                    // Data is progress: the KeyUpdate flood count starts again. An empty
                    // record is not, or a peer could alternate them with KeyUpdates.
                    self.key_updates_in_a_row = 0;
                    self.push_event(RecordEvent::Data(inner));
                }
                Ok(())
            }
            Some(ContentType::Handshake) => self.handshake(&inner),
            Some(ContentType::Alert) => {
                self.no_split_handshake(typ)?;
                self.alert(&inner)
            }
            Some(ContentType::ChangeCipherSpec) => Err(TlsError::ChangeCipherSpec),
            None => Err(TlsError::UnknownContentType(typ)),
        }
    }

    /// §5.1: a handshake message split over records has nothing else between its pieces.
    fn no_split_handshake(&self, typ: u8) -> Result<(), TlsError> {
        if self.hs_buf.is_empty() {
            Ok(())
        } else {
            Err(TlsError::InterleavedHandshake(typ))
        }
    }

    /// A handshake record's content: complete the messages it ends, keep a partial one.
    fn handshake(&mut self, fragment: &[u8]) -> Result<(), TlsError> {
        if fragment.is_empty() {
            return Err(TlsError::EmptyHandshakeRecord);
        }
        let mut buf = core::mem::take(&mut self.hs_buf);
        buf.extend_from_slice(fragment);
        let mut at = 0;
        while let Some(len) = self.handshake_message_len(&buf[at..])? {
            let Some(message) = buf.get(at..at + len) else {
                break;
            };
            at += len;
            if message[0] == KEY_UPDATE {
                // The key changes after a KeyUpdate: nothing may follow it in its record.
                if at != buf.len() {
                    return Err(TlsError::KeyUpdateNotLast);
                }
                self.key_update(message[HANDSHAKE_HEADER_LEN])?;
            } else {
                self.push_event(RecordEvent::NewSessionTicket(message.to_vec()));
            }
        }
        buf.drain(..at);
        self.hs_buf = buf;
        Ok(())
    }

    /// The whole length of the handshake message at the front of `buf`, once its header
    /// is there (`None` before); refuses a type or length as soon as it is known, so no
    /// byte of a message that will be refused is held.
    fn handshake_message_len(&self, buf: &[u8]) -> Result<Option<usize>, TlsError> {
        let Some(&typ) = buf.first() else {
            return Ok(None);
        };
        if typ != KEY_UPDATE && typ != NEW_SESSION_TICKET {
            return Err(TlsError::UnexpectedHandshake(typ));
        }
        let Some(&[_, a, b, c]) = buf.get(..HANDSHAKE_HEADER_LEN) else {
            return Ok(None);
        };
        let body = u32::from_be_bytes([0, a, b, c]) as usize;
        if typ == KEY_UPDATE && body != 1 {
            return Err(TlsError::BadKeyUpdateLength(body));
        }
        let len = HANDSHAKE_HEADER_LEN + body;
        if len > self.cfg.max_handshake_message {
            return Err(TlsError::HandshakeTooLarge {
                len,
                bound: self.cfg.max_handshake_message,
            });
        }
        Ok(Some(len))
    }

    fn key_update(&mut self, request_update: u8) -> Result<(), TlsError> {
        let requested = match request_update {
            0 => false,
            1 => true,
            other => return Err(TlsError::BadKeyUpdateValue(other)),
        };
        self.key_updates_in_a_row += 1;
        if self.key_updates_in_a_row > self.cfg.max_key_updates {
            return Err(TlsError::KeyUpdateFlood(self.cfg.max_key_updates));
        }
        // §4.6.3: answered once before our next application data, however many
        // requests arrive meanwhile; moot once we have closed.
        if requested && !self.tx_closed {
            self.owes_key_update = true;
        }
        self.rx_state = Rx::AwaitingKey;
        self.push_event(RecordEvent::KeyUpdate { requested });
        Ok(())
    }

    /// An alert record's content: exactly one (level, description) pair; the level is
    /// not read (§6: "the severity is implicit in the type of alert").
    fn alert(&mut self, content: &[u8]) -> Result<(), TlsError> {
        let &[_level, code] = content else {
            return Err(TlsError::BadAlertLength(content.len()));
        };
        let description = AlertDescription::from_code(code);
        match description {
            AlertDescription::CloseNotify => {
                self.rx_state = Rx::Closed;
                self.push_event(RecordEvent::CloseNotify);
            }
            AlertDescription::UserCanceled => {
                self.push_event(RecordEvent::Alert(description));
            }
            _ => {
                self.push_event(RecordEvent::Alert(description));
                self.failure = Some(Failure::PeerAlert);
            }
        }
        Ok(())
    }
}

/// Refuses a send key handed over with no sequence number left even for a KeyUpdate.
fn check_tx_seq(suite: CipherSuite, seq: u64) -> Result<(), TlsError> {
    let limit = suite.confidentiality_limit();
    if seq < limit {
        Ok(())
    } else {
        Err(TlsError::TxKeyExhausted { seq, limit })
    }
}

/// The length, header included, of the record at the front of `buf`, once its header is
/// there (`None` before). Each header byte is checked as soon as it arrives, so a stream
/// that is not TLS is refused at its first byte rather than after a length's worth.
fn record_len(buf: &[u8]) -> Result<Option<usize>, TlsError> {
    if let Some(&typ) = buf.first()
        && ContentType::from_code(typ).is_none()
    {
        return Err(TlsError::UnknownContentType(typ));
    }
    if let Some(&major) = buf.get(1)
        && major != LEGACY_VERSION[0]
    {
        let minor = buf.get(2).copied().unwrap_or(0);
        return Err(TlsError::BadRecordVersion(u16::from_be_bytes([
            major, minor,
        ])));
    }
    let Some(&[_, _, _, hi, lo]) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > MAX_CIPHERTEXT {
        return Err(TlsError::RecordOverflow(len));
    }
    Ok(Some(HEADER_LEN + len))
}

/// Split off complete records from the front of a stream buffer without decrypting:
/// returns the byte length of the complete records at the front (0 if none), or an error
/// for a bad header (unknown content type, length over 2^14 + 256, a version whose first
/// byte is not 3) — checked for every header at the front, the partial one included.
/// Used by the terminal while it relays the handshake.
pub fn complete_records(buf: &[u8]) -> Result<usize, TlsError> {
    let mut total = 0;
    while let Some(len) = record_len(&buf[total..])? {
        if buf.len() - total < len {
            break;
        }
        total += len;
    }
    Ok(total)
}

#[cfg(test)]
mod tests;

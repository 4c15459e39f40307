//! One secure-channel connection over a reliable byte stream, client or server.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;

use rand_core::CryptoRng;

use super::config::{
    CHANNEL_VERSION, ClientAuthMode, ClientCertPolicy, ClientConfig, Common, ServerConfig,
};
use super::keys::{
    ApplicationKeys, CT_ALERT, CT_APPLICATION, CT_HANDSHAKE, CT_KEEPALIVE, Content, DirectionKeys,
    HandshakeKeys, Keepalive, Schedule, Transcript, finished_mac, pre_master_secret,
};
use super::messages::{
    Alert, AlertCode, AuthMode, CERTIFICATE, CertificateMsg, CertificateRequest, CertificateVerify,
    ClientHello, Finished, Handshake, RECORD, RecordEnvelope, ServerHello, StreamMessage,
};
use super::{ChannelError, PeerIdentity};
use crate::crypto::aead::AeadAlg;
use crate::crypto::cert::{Certificate, CertifiedKey};
use crate::crypto::dh::{Group, KeyPair};
use crate::crypto::kdf::Prk;
use crate::crypto::{ct_eq, random_array};
use crate::wire::{Deframer, Message, WireError};
use crate::{Error, Instant, UnixTime};

const SERVER_VERIFY_CONTEXT: &[u8] = b"deputy channel server verify\0";
const CLIENT_VERIFY_CONTEXT: &[u8] = b"deputy channel client verify\0";

enum Role {
    Client(Arc<ClientConfig>),
    Server(Arc<ServerConfig>),
}

type FinishedKey = zeroize::Zeroizing<[u8; 32]>;

/// Where the handshake stands: one variant per step, each holding exactly the secrets that
/// step needs, so a message can only be handled with what its step has (rustls'
/// `client/tls13.rs` and deputy's own `ikev2::session` follow the same shape).
///
/// Client: `ClientWaitServerHello` → `ClientWaitCertificate` →
/// `ClientWaitCertRequestOrVerify` → (`ClientWaitVerify` if asked for a certificate) →
/// `ClientWaitFinished` → `Established`, skipping the certificate steps in PSK mode.
/// Server: `ServerWaitClientHello` → (`ServerWaitCertificate` → `ServerWaitVerify` if it
/// asks for one and gets one) → `ServerWaitFinished` → `Established`. Any failure goes to
/// `Failed`.
enum State {
    /// Client: hello sent, waiting for the server's.
    ClientWaitServerHello(ClientHelloSent),
    /// Client, certificate mode: handshake keys in place, the server's certificate next.
    ClientWaitCertificate(ClientHandshake),
    /// Client: the server's certificate verified; a certificate request may come before
    /// its signature.
    ClientWaitCertRequestOrVerify(ClientHandshake, Box<Certificate>),
    /// Client: the server asked for our certificate; its signature comes next.
    ClientWaitVerify(ClientHandshake, Box<Certificate>),
    /// Client: the server's Finished next.
    ClientWaitFinished {
        hs: ClientHandshake,
        /// Whether the server asked for our certificate (we answer before our Finished).
        cert_requested: bool,
    },
    /// Server: waiting for a client hello.
    ServerWaitClientHello(Arc<ServerConfig>),
    /// Server: its flight sent, having asked for the client's certificate.
    ServerWaitCertificate(ServerHandshake),
    /// Server: the client's certificate verified; its signature comes next.
    ServerWaitVerify(ServerHandshake, Box<Certificate>),
    /// Server: the client's Finished next.
    ServerWaitFinished(ServerHandshake),
    /// Application data flows.
    Established(Traffic),
    /// The connection failed; nothing more is accepted.
    Failed(Failure),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::ClientWaitServerHello(_) => "ClientWaitServerHello",
            State::ClientWaitCertificate(_) => "ClientWaitCertificate",
            State::ClientWaitCertRequestOrVerify(..) => "ClientWaitCertRequestOrVerify",
            State::ClientWaitVerify(..) => "ClientWaitVerify",
            State::ClientWaitFinished { .. } => "ClientWaitFinished",
            State::ServerWaitClientHello(_) => "ServerWaitClientHello",
            State::ServerWaitCertificate(_) => "ServerWaitCertificate",
            State::ServerWaitVerify(..) => "ServerWaitVerify",
            State::ServerWaitFinished(_) => "ServerWaitFinished",
            State::Established(_) => "Established",
            State::Failed(_) => "Failed",
        }
    }
}

/// Client, hello sent: our key share and random.
struct ClientHelloSent {
    config: Arc<ClientConfig>,
    key_pair: KeyPair,
    client_random: [u8; 32],
}

/// Client, hellos exchanged: what the rest of the handshake needs.
struct ClientHandshake {
    config: Arc<ClientConfig>,
    /// Kept for the application keys, which hash the transcript through the server's
    /// Finished.
    schedule: Schedule,
    client_finished: FinishedKey,
    server_finished: FinishedKey,
}

/// Server, its flight sent: what checking the client's flight needs.
struct ServerHandshake {
    config: Arc<ServerConfig>,
    client_finished: FinishedKey,
    /// The client's application keys: we read with them only once its Finished verifies.
    client_application: DirectionKeys,
    exporter: Prk,
}

/// Established: the exporter, where closing stands, and when the peer was last heard.
struct Traffic {
    exporter: Prk,
    close: CloseState,
    liveness: Liveness,
}

impl Traffic {
    fn new(exporter: Prk, now: Instant) -> Self {
        Traffic {
            exporter,
            close: CloseState::default(),
            liveness: Liveness {
                last_heard: now,
                asked: None,
            },
        }
    }
}

/// What the keepalive needs: when a whole message last came from the peer, and since when
/// we wait for an answer it owes (to our keepalive request, or to our close-notify).
#[derive(Clone, Copy)]
struct Liveness {
    last_heard: Instant,
    asked: Option<Instant>,
}

/// The connection's timers, one variant per kind of deadline. [`Connection::timers`] lists
/// them from the state; [`Connection::poll_timeout`] is the earliest and
/// [`Connection::handle_timeout`] fires the due ones, so the two cannot disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// The partial message in the deframer must be whole (any state but `Failed`).
    Progress,
    /// The handshake must have finished (any handshake step).
    Handshake,
    /// The peer owes us an answer (established, after a keepalive request or our
    /// close-notify).
    PeerSilent,
    /// Nothing heard for the keepalive interval (established, nothing asked yet): send a
    /// keepalive request, or, once we sent close-notify (after which nothing may be
    /// sent), just start waiting for the peer's.
    Keepalive,
}

/// What one whole frame from the peer was, for [`Connection::last_activity`]: keepalives
/// prove the peer alive but are not activity (an idle timeout above the channel must
/// still see an idle stream as idle).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Heard {
    Keepalive,
    Other,
}

/// Which close-notifies have passed. Kept across a failure, so a driver can still tell a
/// peer that closed before it misbehaved.
#[derive(Clone, Copy, Default)]
struct CloseState {
    sent: bool,
    received: bool,
}

/// Why the connection failed, and how far closing had gone.
struct Failure {
    error: ChannelError,
    close: CloseState,
}

/// The record layer. It sits beside the handshake state rather than in it, as in rustls:
/// an alert for a failure must still be sealed with the keys the failed step had.
#[expect(
    clippy::large_enum_variant,
    reason = "one per connection, `Protected` for all but the first round trip"
)]
enum Records {
    /// Before the hellos: frames travel in the clear.
    Plaintext,
    /// One key per direction. They change epoch independently: the server sends under
    /// application keys right after its Finished but reads the client's flight under
    /// handshake keys.
    Protected {
        send: DirectionKeys,
        recv: DirectionKeys,
    },
}

/// A secure-channel connection (DESIGN.md §4) over any reliable byte stream.
///
/// Sans-IO: feed it the bytes the stream delivered ([`Connection::feed`]), write out what
/// [`Connection::take_outgoing`] returns, read application messages with
/// [`Connection::take_received`]. Application data is message-oriented: one
/// [`Connection::send`] is one record is one received message, up to
/// [`Common::max_record_len`] bytes.
///
/// Any failure is final: the connection queues an alert for the peer (encrypted once keys
/// exist), wipes its handshake secrets and keys, and refuses further input with
/// [`ChannelError::Failed`]. Application messages authenticated before the failure stay
/// in [`Connection::take_received`].
pub struct Connection {
    role: Role,
    state: State,
    records: Records,
    deframer: Deframer,
    outgoing: Vec<u8>,
    received: VecDeque<Vec<u8>>,
    session: u64,
    suite: Option<AeadAlg>,
    transcript: Transcript,
    peer: PeerIdentity,
    /// When the handshake must have finished ([`Timer::Handshake`], armed only while
    /// the state is a handshake step).
    handshake_deadline: Instant,
    /// When the first bytes of the partial message in the deframer arrived
    /// ([`Timer::Progress`]); `None` while the deframer holds nothing.
    partial_since: Option<Instant>,
    /// When the peer last sent anything but a keepalive (see [`Heard`]).
    last_activity: Instant,
}

impl core::fmt::Debug for Connection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Connection")
            .field("client", &matches!(self.role, Role::Client(_)))
            .field("state", &self.state.name())
            .field("session", &self.session)
            .field("suite", &self.suite)
            .field("peer", &self.peer)
            .field("error", &self.error())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Start a client connection: the client hello is queued at once.
    pub fn client(
        config: Arc<ClientConfig>,
        now: Instant,
        rng: &mut dyn CryptoRng,
    ) -> Result<Connection, Error> {
        let common = &config.common;
        if common.suites.is_empty() {
            return Err(ChannelError::NoSuitesConfigured.into());
        }
        let key_pair = KeyPair::generate(config.group, rng);
        let client_random = hello_random(common.time_anchor, now, rng);
        let (auth_mode, psk_identity, server_name) = match &config.auth {
            ClientAuthMode::Certificate { server_name, .. } => (
                AuthMode::Certificate,
                None,
                config.send_server_name.then(|| server_name.clone()),
            ),
            ClientAuthMode::Psk(psk) => (AuthMode::Psk, Some(psk.identity.clone()), None),
        };
        let hello = ClientHello {
            versions: alloc::vec![CHANNEL_VERSION],
            suites: common.suites.iter().map(|s| s.id()).collect(),
            group: config.group.id(),
            key_share: key_pair.public().to_vec(),
            random: client_random,
            // Resumption is not supported: every hello asks for a new session.
            session_id: 0,
            auth_mode,
            psk_identity,
            server_name,
        }
        .encode()?;
        let state = State::ClientWaitServerHello(ClientHelloSent {
            config: config.clone(),
            key_pair,
            client_random,
        });
        let mut conn = Connection::new(Role::Client(config), state, now);
        conn.transcript.add(&hello);
        conn.outgoing.extend_from_slice(&hello);
        Ok(conn)
    }

    /// A server connection waiting for a client hello.
    pub fn server(config: Arc<ServerConfig>, now: Instant) -> Connection {
        let state = State::ServerWaitClientHello(config.clone());
        Connection::new(Role::Server(config), state, now)
    }

    fn new(role: Role, state: State, now: Instant) -> Connection {
        let common = match &role {
            Role::Client(c) => &c.common,
            Role::Server(s) => &s.common,
        };
        Connection {
            deframer: Deframer::new(common.limits),
            handshake_deadline: now + common.handshake_timeout,
            partial_since: None,
            last_activity: now,
            role,
            state,
            records: Records::Plaintext,
            outgoing: Vec::new(),
            received: VecDeque::new(),
            session: 0,
            suite: None,
            transcript: Transcript::default(),
            peer: PeerIdentity::Anonymous,
        }
    }

    /// Move the handshake deadline to `timeout` after `started` (a driver that counts the
    /// time spent opening the stream against the handshake).
    pub(crate) fn start_handshake_clock(&mut self, started: Instant) {
        self.handshake_deadline = started + self.common().handshake_timeout;
    }

    fn common(&self) -> &Common {
        match &self.role {
            Role::Client(c) => &c.common,
            Role::Server(s) => &s.common,
        }
    }

    /// Whether the handshake is complete and application data may flow.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// Whether the handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        !matches!(self.state, State::Established(_) | State::Failed(_))
    }

    /// The failure that ended the connection, if any.
    pub fn error(&self) -> Option<&ChannelError> {
        match &self.state {
            State::Failed(f) => Some(&f.error),
            _ => None,
        }
    }

    fn close_state(&self) -> CloseState {
        match &self.state {
            State::Established(t) => t.close,
            State::Failed(f) => f.close,
            _ => CloseState::default(),
        }
    }

    /// Whether the peer sent close-notify.
    pub fn peer_closed(&self) -> bool {
        self.close_state().received
    }

    /// Whether we sent close-notify.
    pub fn is_closing(&self) -> bool {
        self.close_state().sent
    }

    /// The session id (0 until the server hello).
    pub fn session_id(&self) -> u64 {
        self.session
    }

    /// The negotiated AEAD suite.
    pub fn suite(&self) -> Option<AeadAlg> {
        self.suite
    }

    /// Who the peer proved to be. A certificate counts once its signature over the
    /// transcript verified, not when it arrived.
    pub fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    /// The peer's certificate, if it presented one that verified.
    pub fn peer_certificate(&self) -> Option<&Certificate> {
        match &self.peer {
            PeerIdentity::Certificate(c) => Some(c),
            _ => None,
        }
    }

    /// Bytes to write to the stream, in order. Empties the buffer.
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.outgoing)
    }

    /// The next application message received.
    pub fn take_received(&mut self) -> Option<Vec<u8>> {
        self.received.pop_front()
    }

    /// When the peer last sent something other than a keepalive: a whole message, or the
    /// first bytes of one still partial. Drivers with an idle timeout of their own read
    /// this, so keepalives keep a stream's liveness known without making it look busy.
    pub fn last_activity(&self) -> Instant {
        self.last_activity
    }

    /// The armed timers, read from the state (see [`Timer`]).
    fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + use<> {
        let common = self.common();
        let handshake = self
            .is_handshaking()
            .then_some((Timer::Handshake, self.handshake_deadline));
        let progress = self
            .partial_since
            .filter(|_| !matches!(self.state, State::Failed(_)))
            .map(|since| (Timer::Progress, since + common.progress_timeout));
        let (silent, keepalive) = match &self.state {
            State::Established(t) => (
                t.liveness
                    .asked
                    .map(|at| (Timer::PeerSilent, at + common.keepalive_timeout)),
                common
                    .keepalive_interval
                    .filter(|_| t.liveness.asked.is_none())
                    .map(|every| (Timer::Keepalive, t.liveness.last_heard + every)),
            ),
            _ => (None, None),
        };
        // A stalled message first: when both are due (a damaged length during the
        // handshake), the more precise error wins.
        [progress, handshake, silent, keepalive]
            .into_iter()
            .flatten()
    }

    /// When [`Connection::handle_timeout`] must next be called: the handshake deadline,
    /// the deadline of a partial message, a keepalive due, or an answer overdue.
    pub fn poll_timeout(&self) -> Option<Instant> {
        crate::time::earliest(self.timers())
    }

    /// Run the timers due at `now`: fail a handshake that did not finish
    /// ([`ChannelError::HandshakeTimeout`]), a message that did not complete
    /// ([`ChannelError::IncompleteRecord`]) or a peer that did not answer
    /// ([`ChannelError::PeerSilent`]); send a keepalive request on an idle connection
    /// (then write out [`Connection::take_outgoing`]). Early and spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        for timer in crate::time::due(self.timers(), now) {
            // The first failure is final: the timers after it belong to a state that is
            // gone, so they are not run.
            let error = match timer {
                Timer::Handshake => ChannelError::HandshakeTimeout,
                Timer::Progress => ChannelError::IncompleteRecord {
                    buffered: self.deframer.buffered(),
                },
                Timer::PeerSilent => ChannelError::PeerSilent,
                Timer::Keepalive => match self.ask_keepalive(now) {
                    Ok(()) => continue,
                    Err(e) => e,
                },
            };
            return Err(self.fail(error));
        }
        Ok(())
    }

    /// Send a keepalive request (unless we closed) and start waiting for the answer.
    fn ask_keepalive(&mut self, now: Instant) -> Result<(), ChannelError> {
        if !self.is_closing() {
            self.seal(CT_KEEPALIVE, &Keepalive::Request.payload())?;
        }
        if let State::Established(t) = &mut self.state {
            t.liveness.asked = Some(now);
        }
        Ok(())
    }

    /// A whole message came from the peer: it is alive, and (unless we wait for its
    /// close-notify, which only that answers) owes us nothing.
    fn heard(&mut self, now: Instant, what: Heard) {
        if what == Heard::Other {
            self.last_activity = now;
        }
        if let State::Established(t) = &mut self.state {
            t.liveness.last_heard = now;
            if !t.close.sent {
                t.liveness.asked = None;
            }
        }
    }

    /// Send one application message (up to [`Common::max_record_len`] bytes).
    ///
    /// Refused without changing anything if the connection is not established, is closing,
    /// the message is too large, or the outgoing buffer is full.
    pub fn send(&mut self, data: &[u8]) -> Result<(), Error> {
        let max = self.common().max_record_len;
        if data.len() > max {
            return Err(ChannelError::RecordTooLarge {
                len: data.len(),
                max,
            }
            .into());
        }
        self.check_can_send()?;
        let bound = self.common().max_outgoing;
        if self.outgoing.len() + data.len() + RecordEnvelope::overhead() > bound {
            return Err(Error::CapacityExceeded {
                what: "channel outgoing buffer",
                bound,
            });
        }
        self.seal(CT_APPLICATION, data).map_err(|e| self.fail(e))
    }

    /// Our traffic state, if application data may be sent: refusals in the order a caller
    /// can act on them (failed beats closed beats not yet established).
    fn check_can_send(&mut self) -> Result<&mut Traffic, ChannelError> {
        match &mut self.state {
            State::Failed(_) => Err(ChannelError::Failed),
            State::Established(t) if t.close.sent => Err(ChannelError::Closed),
            State::Established(t) => Ok(t),
            _ => Err(ChannelError::NotEstablished),
        }
    }

    /// Send close-notify: no more application data will be sent. The peer's data may still
    /// arrive until it closes too.
    pub fn close(&mut self) -> Result<(), Error> {
        self.check_can_send()?;
        let alert = Alert {
            code: AlertCode::CloseNotify,
        };
        self.seal(CT_ALERT, &alert.payload())
            .map_err(|e| self.fail(e))?;
        // From here the peer owes its close-notify: the keepalive timer, instead of asking
        // (nothing may follow ours), starts the wait for it (see `Timer::Keepalive`).
        self.check_can_send()?.close.sent = true;
        Ok(())
    }

    /// The stream ended. Without a close-notify from the peer first, that is a truncation
    /// and fails the connection.
    pub fn stream_closed(&mut self) -> Result<(), Error> {
        if self.peer_closed() || matches!(self.state, State::Failed(_)) {
            return Ok(());
        }
        Err(self.fail(ChannelError::TruncatedStream))
    }

    /// Derive keying material for the application from the established session (both
    /// sides get the same bytes for the same label and context).
    pub fn export_keying_material(
        &self,
        label: &str,
        context: &[u8],
        out: &mut [u8],
    ) -> Result<(), Error> {
        let State::Established(traffic) = &self.state else {
            return Err(ChannelError::NotEstablished.into());
        };
        traffic.exporter.expand_label(label, context, out)?;
        Ok(())
    }

    /// The most bytes one [`Connection::feed`] call should be given by a driver that
    /// drains [`Connection::take_received`] after each call: so little input cannot
    /// complete more application messages than [`Common::max_received`] admits, so a fast
    /// peer whose records arrive in one large read never trips
    /// [`ChannelError::ReceiveQueueFull`].
    ///
    /// Every application record is at least [`RecordEnvelope::overhead`] bytes; the first
    /// message a call completes may have started in an earlier one.
    pub fn feed_chunk_len(&self) -> usize {
        let max = self.common().max_received;
        max.saturating_sub(1) * RecordEnvelope::overhead() + 1
    }

    /// Feed bytes received from the stream.
    pub fn feed(
        &mut self,
        now: Instant,
        data: &[u8],
        rng: &mut dyn CryptoRng,
    ) -> Result<(), Error> {
        if matches!(self.state, State::Failed(_)) {
            return Err(ChannelError::Failed.into());
        }
        let mut rest = data;
        // The deframer holds at most one frame's worth: fill, drain every whole frame,
        // repeat until the input is used up or nothing moves.
        loop {
            let used = match self.deframer.fill(rest) {
                Ok(n) => n,
                Err(e) => return Err(self.fail(ChannelError::Decode(e))),
            };
            rest = &rest[used..];
            if self.deframer.buffered() > 0 && self.partial_since.is_none() {
                // A new message started: its progress clock starts now (and more bytes of
                // it do not restart it, so a trickle cannot hold a stalled read open).
                self.partial_since = Some(now);
            }
            let mut progressed = used > 0;
            while let Some(frame) = self.deframer.take() {
                progressed = true;
                self.partial_since = None;
                match self.handle_frame(now, frame, rng) {
                    Ok(heard) => self.heard(now, heard),
                    Err(e) => return Err(self.fail(e)),
                }
            }
            if rest.is_empty() || !progressed {
                if self.deframer.buffered() > 0 {
                    // Part of a message is in: what it is is unknown yet, so it counts
                    // as activity (a whole keepalive does not).
                    self.last_activity = now;
                }
                return Ok(());
            }
        }
    }

    /// Record the failure, tell the peer (unless it told us), and wipe secrets.
    ///
    /// Every public entry point refuses a failed connection before it can fail again, so
    /// this runs once; the state may be a step's placeholder (see
    /// [`Connection::on_handshake`]), which this overwrites.
    fn fail(&mut self, error: ChannelError) -> Error {
        if let Some(code) = error.alert() {
            let alert = Alert { code };
            // Best effort: an alert that cannot be sealed or encoded is not sent, and the
            // failure stands either way.
            match &mut self.records {
                Records::Protected { send, .. } => {
                    let _ = send.seal_into(
                        &mut self.outgoing,
                        self.session,
                        CT_ALERT,
                        &alert.payload(),
                    );
                }
                Records::Plaintext => {
                    if let Ok(bytes) = alert.encode(self.session) {
                        self.outgoing.extend_from_slice(&bytes);
                    }
                }
            }
        }
        let close = self.close_state();
        // Dropping the step's secrets and the record keys wipes them (they zeroize).
        self.state = State::Failed(Failure {
            error: error.clone(),
            close,
        });
        self.records = Records::Plaintext;
        error.into()
    }

    fn seal(&mut self, content_type: u8, payload: &[u8]) -> Result<(), ChannelError> {
        let Records::Protected { send, .. } = &mut self.records else {
            return Err(ChannelError::NotEstablished);
        };
        send.seal_into(&mut self.outgoing, self.session, content_type, payload)
    }

    /// Send a handshake message inside a record and add it to the transcript.
    fn send_handshake(&mut self, msg: &Handshake) -> Result<(), ChannelError> {
        let bytes = msg.encode(self.session).map_err(ChannelError::Decode)?;
        self.transcript.add(&bytes);
        self.seal(CT_HANDSHAKE, &bytes)
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        frame: Vec<u8>,
        rng: &mut dyn CryptoRng,
    ) -> Result<Heard, ChannelError> {
        if self.peer_closed() {
            // Nothing may follow close-notify; the frame is not even decoded. Byte 3 of
            // the header is its type.
            return Err(ChannelError::UnexpectedMessage(
                frame.get(3).copied().unwrap_or(0),
            ));
        }
        let limits = self.common().limits;
        let msg = Message::decode(&frame, &limits).map_err(ChannelError::Decode)?;
        // A type that never travels in the clear: the peer is out of step, not garbled.
        let stream_error = |e| match e {
            WireError::UnexpectedType(t) => ChannelError::UnexpectedMessage(t),
            e => ChannelError::Decode(e),
        };
        if msg.msg_type() == RECORD {
            // A record is no handshake step's message: it goes to the record layer, which
            // decrypts it where it lies in the frame.
            let session = msg.session();
            let (seq, ciphertext) =
                RecordEnvelope::decode_in_place(&msg, &frame, &limits).map_err(stream_error)?;
            return match self.records {
                Records::Protected { .. } => self.on_record(now, session, seq, frame, ciphertext),
                Records::Plaintext => Err(ChannelError::UnexpectedMessage(RECORD)),
            };
        }
        let msg = StreamMessage::decode(&msg, &limits).map_err(stream_error)?;
        self.state = match (self.take_state(), msg) {
            (State::ServerWaitClientHello(config), StreamMessage::ClientHello(hello)) => {
                self.transcript.add(&frame);
                self.on_client_hello(now, config, hello, rng)?
            }
            (State::ClientWaitServerHello(sent), StreamMessage::ServerHello(hello)) => {
                self.transcript.add(&frame);
                self.on_server_hello(sent, hello)?
            }
            (state, msg) => {
                // Not a step: put the state back and let the record layer have it.
                self.state = state;
                return match (&self.records, msg) {
                    // Once keys exist, alerts travel inside records; a plaintext one then
                    // could be injected by anyone on the path.
                    (Records::Plaintext, StreamMessage::Alert(alert)) => {
                        Err(ChannelError::PeerAlert(alert.code))
                    }
                    (_, other) => Err(ChannelError::UnexpectedMessage(other.msg_type())),
                };
            }
        };
        Ok(Heard::Other)
    }

    /// Take the state out to move a step's secrets into its successor, leaving a
    /// placeholder. If the step fails, [`Connection::fail`] (which its caller runs at once)
    /// replaces the placeholder, while the record keys, kept apart in `self.records`, still
    /// seal the alert. Handshake steps have no close state to lose.
    fn take_state(&mut self) -> State {
        let placeholder = State::Failed(Failure {
            error: ChannelError::Failed,
            close: CloseState::default(),
        });
        core::mem::replace(&mut self.state, placeholder)
    }

    /// One record, `frame[ciphertext]` of the frame it came in: checked, decrypted in
    /// place, and the frame's buffer reused for its payload.
    fn on_record(
        &mut self,
        now: Instant,
        session: u64,
        seq: u64,
        mut frame: Vec<u8>,
        ciphertext: core::ops::Range<usize>,
    ) -> Result<Heard, ChannelError> {
        if session != self.session {
            return Err(ChannelError::WrongSession {
                expected: self.session,
                got: session,
            });
        }
        // The largest record we accept: the biggest application message, its content-type
        // byte and the tag. Checked before decrypting, so an oversized record costs nothing.
        let max = self.common().max_record_len + 1 + crate::crypto::aead::TAG_LEN;
        if ciphertext.len() > max {
            return Err(ChannelError::RecordTooLarge {
                len: ciphertext.len(),
                max,
            });
        }
        let Records::Protected { recv, .. } = &mut self.records else {
            return Err(ChannelError::NotEstablished);
        };
        let record = frame
            .get_mut(ciphertext.clone())
            .ok_or(ChannelError::DecryptFailed)?;
        let content_type = recv.open_in_place(session, seq, record)?;
        // What is left of the frame is the payload: after the content type, before the tag.
        frame.truncate(ciphertext.end - crate::crypto::aead::TAG_LEN);
        frame.drain(..ciphertext.start + 1);
        let payload = frame;
        match (&mut self.state, Content::decode(content_type, payload)?) {
            (State::Established(_) | State::Failed(_), Content::Handshake(_)) => {
                Err(ChannelError::UnexpectedMessage(CT_HANDSHAKE))
            }
            (_, Content::Handshake(bytes)) => {
                let limits = self.common().limits;
                let msg = Message::decode(&bytes, &limits).map_err(ChannelError::Decode)?;
                if msg.session() != self.session {
                    return Err(ChannelError::WrongSession {
                        expected: self.session,
                        got: msg.session(),
                    });
                }
                let hs = Handshake::decode(&msg, &limits).map_err(ChannelError::Decode)?;
                self.on_handshake(now, hs, &bytes)?;
                Ok(Heard::Other)
            }
            (State::Established(_), Content::Application(data)) => {
                let bound = self.common().max_received;
                if self.received.len() >= bound {
                    return Err(ChannelError::ReceiveQueueFull(bound));
                }
                self.received.push_back(data);
                Ok(Heard::Other)
            }
            (State::Established(traffic), Content::Alert(AlertCode::CloseNotify)) => {
                traffic.close.received = true;
                Ok(Heard::Other)
            }
            (State::Established(traffic), Content::Keepalive(kind)) => {
                // Answer at once, unless we closed: nothing may follow our close-notify,
                // and the peer's own close answers that. The answer is not held to
                // `max_outgoing`: one small record per request read, and a driver drains
                // the outgoing bytes after every read.
                if kind == Keepalive::Request && !traffic.close.sent {
                    self.seal(CT_KEEPALIVE, &Keepalive::Response.payload())?;
                }
                Ok(Heard::Keepalive)
            }
            (_, Content::Alert(code)) => Err(ChannelError::PeerAlert(code)),
            (_, other) => Err(ChannelError::UnexpectedMessage(other.content_type())),
        }
    }

    /// One handshake message from inside a record: the step it fits, or a refusal.
    fn on_handshake(
        &mut self,
        now: Instant,
        msg: Handshake,
        bytes: &[u8],
    ) -> Result<(), ChannelError> {
        self.state = match (self.take_state(), msg) {
            (State::ClientWaitCertificate(hs), Handshake::Certificate(c)) => {
                self.transcript.add(bytes);
                let cert = on_server_certificate(&hs.config, now, c)?;
                State::ClientWaitCertRequestOrVerify(hs, cert)
            }
            (State::ClientWaitCertRequestOrVerify(hs, cert), Handshake::CertificateRequest(_)) => {
                self.transcript.add(bytes);
                State::ClientWaitVerify(hs, cert)
            }
            (State::ClientWaitCertRequestOrVerify(hs, cert), Handshake::CertificateVerify(v)) => {
                self.accept_peer_signature(SERVER_VERIFY_CONTEXT, cert, &v, bytes)?;
                State::ClientWaitFinished {
                    hs,
                    cert_requested: false,
                }
            }
            (State::ClientWaitVerify(hs, cert), Handshake::CertificateVerify(v)) => {
                self.accept_peer_signature(SERVER_VERIFY_CONTEXT, cert, &v, bytes)?;
                State::ClientWaitFinished {
                    hs,
                    cert_requested: true,
                }
            }
            (State::ClientWaitFinished { hs, cert_requested }, Handshake::Finished(f)) => {
                self.accept_finished(&hs.server_finished, &f, bytes)?;
                self.client_finish(now, hs, cert_requested)?
            }
            (State::ServerWaitCertificate(hs), Handshake::Certificate(c)) => {
                self.transcript.add(bytes);
                match on_client_certificate(&hs.config, now, c)? {
                    Some(cert) => State::ServerWaitVerify(hs, cert),
                    None => State::ServerWaitFinished(hs),
                }
            }
            (State::ServerWaitVerify(hs, cert), Handshake::CertificateVerify(v)) => {
                self.accept_peer_signature(CLIENT_VERIFY_CONTEXT, cert, &v, bytes)?;
                State::ServerWaitFinished(hs)
            }
            (State::ServerWaitFinished(hs), Handshake::Finished(f)) => {
                self.accept_finished(&hs.client_finished, &f, bytes)?;
                if let Records::Protected { recv, .. } = &mut self.records {
                    *recv = hs.client_application;
                }
                State::Established(Traffic::new(hs.exporter, now))
            }
            (state, other) => {
                self.state = state;
                return Err(ChannelError::UnexpectedMessage(other.msg_type()));
            }
        };
        Ok(())
    }

    // ----- server side -----

    fn on_client_hello(
        &mut self,
        now: Instant,
        config: Arc<ServerConfig>,
        hello: ClientHello,
        rng: &mut dyn CryptoRng,
    ) -> Result<State, ChannelError> {
        if !hello.versions.contains(&CHANNEL_VERSION) {
            return Err(ChannelError::NoCommonVersion);
        }
        // The client's stated preference wins among the suites both sides accept (unlike
        // TLS, where the server's does): the client is the weak end of a seed's channel, so
        // the suite's cost matters most to it, and only it knows whether it has AES
        // instructions. A server that must refuse a suite leaves it out of its own list.
        let suite = hello
            .suites
            .iter()
            .filter_map(|&id| AeadAlg::from_id(id))
            .find(|s| config.common.suites.contains(s))
            .ok_or(ChannelError::NoCommonSuite)?;
        // No retry round trip: the client's share is in its hello, so its group must be one
        // we accept.
        let group = Group::from_id(hello.group)
            .filter(|g| config.groups.contains(g))
            .ok_or(ChannelError::UnsupportedGroup(hello.group))?;
        let psk = match hello.auth_mode {
            AuthMode::Certificate => {
                let identity = config
                    .identity
                    .as_ref()
                    .ok_or(ChannelError::AuthModeUnavailable)?;
                if let Some(name) = &hello.server_name
                    && !identity.certificate.names(name)
                {
                    return Err(ChannelError::UnrecognizedName);
                }
                None
            }
            AuthMode::Psk => {
                let id = hello
                    .psk_identity
                    .as_deref()
                    .ok_or(ChannelError::UnknownPskIdentity)?;
                let psk = config.psk(id).ok_or(ChannelError::UnknownPskIdentity)?;
                self.peer = PeerIdentity::Psk(psk.identity.clone());
                Some(psk.key.clone())
            }
        };

        let key_pair = KeyPair::generate(group, rng);
        let key_share = key_pair.public().to_vec();
        let dh = key_pair
            .agree(&hello.key_share)
            .map_err(ChannelError::KeyExchange)?;
        let server_random = hello_random(config.common.time_anchor, now, rng);
        // Zero means "no session" in the client's hello, so a real one never is.
        self.session = nonzero_session_id(rng);
        self.suite = Some(suite);
        let server_hello = ServerHello {
            version: CHANNEL_VERSION,
            suite: suite.id(),
            group: group.id(),
            key_share,
            random: server_random,
            session_id: self.session,
        }
        .encode()
        .map_err(ChannelError::Decode)?;
        self.transcript.add(&server_hello);
        self.outgoing.extend_from_slice(&server_hello);

        let pms = pre_master_secret(dh.as_bytes(), psk.as_deref().map(Vec::as_slice));
        let schedule = Schedule::new(suite, &pms, &hello.random, &server_random);
        let HandshakeKeys {
            client,
            server,
            client_finished,
            server_finished,
        } = schedule
            .handshake(&self.transcript.hash())
            .map_err(ChannelError::KeySchedule)?;
        self.records = Records::Protected {
            send: server,
            recv: client,
        };

        // A PSK already authenticates both sides; client certificates are a certificate-mode
        // option.
        let request_cert = psk.is_none() && !matches!(config.client_certs, ClientCertPolicy::None);
        if let (None, Some(identity)) = (&psk, &config.identity) {
            self.send_handshake(&Handshake::Certificate(CertificateMsg {
                certificate: Some(identity.certificate.as_bytes().to_vec()),
            }))?;
            if request_cert {
                self.send_handshake(&Handshake::CertificateRequest(CertificateRequest))?;
            }
            self.send_certificate_verify(SERVER_VERIFY_CONTEXT, identity)?;
        }
        let mac = finished_mac(&server_finished, &self.transcript.hash());
        self.send_handshake(&Handshake::Finished(Finished { mac }))?;

        // Application keys come from the transcript through the server's Finished; the
        // server may send with them at once, but reads the client's flight under the
        // handshake keys.
        let ApplicationKeys {
            client,
            server,
            exporter,
        } = schedule
            .application(&self.transcript.hash())
            .map_err(ChannelError::KeySchedule)?;
        if let Records::Protected { send, .. } = &mut self.records {
            *send = server;
        }
        let hs = ServerHandshake {
            config,
            client_finished,
            client_application: client,
            exporter,
        };
        Ok(if request_cert {
            State::ServerWaitCertificate(hs)
        } else {
            State::ServerWaitFinished(hs)
        })
    }

    // ----- client side -----

    fn on_server_hello(
        &mut self,
        sent: ClientHelloSent,
        hello: ServerHello,
    ) -> Result<State, ChannelError> {
        let config = sent.config;
        if hello.version != CHANNEL_VERSION {
            return Err(ChannelError::NoCommonVersion);
        }
        let suite = AeadAlg::from_id(hello.suite)
            .filter(|s| config.common.suites.contains(s))
            .ok_or(ChannelError::SuiteNotOffered(hello.suite))?;
        // The client sent one key share, so the server cannot pick another group.
        if hello.group != config.group.id() {
            return Err(ChannelError::GroupChanged {
                offered: config.group.id(),
                chosen: hello.group,
            });
        }
        if hello.session_id == 0 {
            return Err(ChannelError::ZeroSessionId);
        }
        let dh = sent
            .key_pair
            .agree(&hello.key_share)
            .map_err(ChannelError::KeyExchange)?;
        let psk = match &config.auth {
            ClientAuthMode::Psk(psk) => Some(psk),
            ClientAuthMode::Certificate { .. } => None,
        };
        let pms = pre_master_secret(dh.as_bytes(), psk.map(|p| &p.key[..]));
        let schedule = Schedule::new(suite, &pms, &sent.client_random, &hello.random);
        let keys = schedule
            .handshake(&self.transcript.hash())
            .map_err(ChannelError::KeySchedule)?;
        let psk = psk.map(|p| p.identity.clone());
        let hs = ClientHandshake {
            config: config.clone(),
            schedule,
            client_finished: keys.client_finished,
            server_finished: keys.server_finished,
        };
        let psk_mode = psk.is_some();
        if let Some(identity) = psk {
            self.peer = PeerIdentity::Psk(identity);
        }
        self.session = hello.session_id;
        self.suite = Some(suite);
        self.records = Records::Protected {
            send: keys.client,
            recv: keys.server,
        };
        // A PSK already authenticates the server: no certificate step.
        Ok(if psk_mode {
            State::ClientWaitFinished {
                hs,
                cert_requested: false,
            }
        } else {
            State::ClientWaitCertificate(hs)
        })
    }

    /// The server's flight verified: send ours and switch to application keys.
    fn client_finish(
        &mut self,
        now: Instant,
        hs: ClientHandshake,
        cert_requested: bool,
    ) -> Result<State, ChannelError> {
        // The application keys hash the transcript through the server's Finished, before
        // our own flight is added.
        let app = hs
            .schedule
            .application(&self.transcript.hash())
            .map_err(ChannelError::KeySchedule)?;
        if cert_requested {
            let identity = match &hs.config.auth {
                ClientAuthMode::Certificate { identity, .. } => identity.as_ref(),
                ClientAuthMode::Psk(_) => None,
            };
            // Without an identity we still answer, with an empty certificate: the server's
            // policy decides whether that is enough.
            self.send_handshake(&Handshake::Certificate(CertificateMsg {
                certificate: identity.map(|id| id.certificate.as_bytes().to_vec()),
            }))?;
            if let Some(identity) = identity {
                self.send_certificate_verify(CLIENT_VERIFY_CONTEXT, identity)?;
            }
        }
        let mac = finished_mac(&hs.client_finished, &self.transcript.hash());
        self.send_handshake(&Handshake::Finished(Finished { mac }))?;
        self.records = Records::Protected {
            send: app.client,
            recv: app.server,
        };
        Ok(State::Established(Traffic::new(app.exporter, now)))
    }

    // ----- shared steps -----

    /// Sign the transcript so far with our certificate's key. The context string differs
    /// per side, so a server's signature can never be replayed as a client's.
    fn send_certificate_verify(
        &mut self,
        context: &[u8],
        identity: &CertifiedKey,
    ) -> Result<(), ChannelError> {
        let signature = identity.key.sign(context, &self.transcript.hash());
        self.send_handshake(&Handshake::CertificateVerify(CertificateVerify {
            signature,
        }))
    }

    /// Check the peer's signature over the transcript so far, then add its message and
    /// make its certificate the peer's proven identity.
    fn accept_peer_signature(
        &mut self,
        context: &[u8],
        cert: Box<Certificate>,
        v: &CertificateVerify,
        bytes: &[u8],
    ) -> Result<(), ChannelError> {
        cert.verify_signature(context, &self.transcript.hash(), &v.signature)
            .map_err(|_| ChannelError::BadSignature)?;
        self.transcript.add(bytes);
        self.peer = PeerIdentity::Certificate(cert);
        Ok(())
    }

    /// Check the peer's Finished MAC (under its finished `key`), then add its message.
    fn accept_finished(
        &mut self,
        key: &FinishedKey,
        f: &Finished,
        bytes: &[u8],
    ) -> Result<(), ChannelError> {
        let expected = finished_mac(key, &self.transcript.hash());
        if !ct_eq(&expected, &f.mac) {
            return Err(ChannelError::BadFinished);
        }
        self.transcript.add(bytes);
        Ok(())
    }
}

/// The server's certificate, verified against the client's trust store and expected name.
fn on_server_certificate(
    config: &ClientConfig,
    now: Instant,
    msg: CertificateMsg,
) -> Result<Box<Certificate>, ChannelError> {
    let ClientAuthMode::Certificate {
        trust, server_name, ..
    } = &config.auth
    else {
        // Not reachable: a PSK client skips this step. Refused all the same.
        return Err(ChannelError::UnexpectedMessage(CERTIFICATE));
    };
    let raw = msg
        .certificate
        .ok_or(ChannelError::ServerCertificateMissing)?;
    let at = UnixTime::at(config.common.time_anchor, now);
    let cert = trust
        .verify(&raw, at, Some(server_name))
        .map_err(ChannelError::Certificate)?;
    Ok(Box::new(cert))
}

/// The client's certificate under the server's policy: `Some` (verified) when it sent
/// one, `None` when it sent none and that is allowed.
fn on_client_certificate(
    config: &ServerConfig,
    now: Instant,
    msg: CertificateMsg,
) -> Result<Option<Box<Certificate>>, ChannelError> {
    let (trust, required) = match &config.client_certs {
        // Not reachable: the server asks only under a policy. Refused all the same.
        ClientCertPolicy::None => return Err(ChannelError::UnexpectedMessage(CERTIFICATE)),
        ClientCertPolicy::Optional(t) => (t, false),
        ClientCertPolicy::Required(t) => (t, true),
    };
    match msg.certificate {
        Some(raw) => {
            let at = UnixTime::at(config.common.time_anchor, now);
            let cert = trust
                .verify(&raw, at, None)
                .map_err(ChannelError::Certificate)?;
            Ok(Some(Box::new(cert)))
        }
        None if required => Err(ChannelError::ClientCertificateRequired),
        None => Ok(None),
    }
}

/// 32-bit timestamp ‖ 28 random bytes (seed 002 ¶0079).
fn hello_random(anchor: UnixTime, now: Instant, rng: &mut dyn CryptoRng) -> [u8; 32] {
    let mut random: [u8; 32] = random_array(rng);
    let secs = UnixTime::at(anchor, now).0 as u32;
    random[..4].copy_from_slice(&secs.to_be_bytes());
    random
}

fn nonzero_session_id(rng: &mut dyn CryptoRng) -> u64 {
    loop {
        let id = rng.next_u64();
        if id != 0 {
            return id;
        }
    }
}

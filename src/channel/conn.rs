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
    ApplicationKeys, CT_ALERT, CT_APPLICATION, CT_HANDSHAKE, DirectionKeys, HandshakeKeys,
    Schedule, Transcript, finished_mac, pre_master_secret,
};
use super::messages::{
    ALERT, Alert, AlertCode, AuthMode, CLIENT_HELLO, CertificateMsg, CertificateRequest,
    CertificateVerify, ClientHello, Finished, Handshake, RECORD, RecordEnvelope, SERVER_HELLO,
    ServerHello,
};
use super::{ChannelError, PeerIdentity};
use crate::crypto::aead::AeadAlg;
use crate::crypto::cert::Certificate;
use crate::crypto::dh::{Group, KeyPair};
use crate::crypto::kdf::Prk;
use crate::crypto::{ct_eq, random_array};
use crate::wire::{Deframer, Message};
use crate::{Error, Instant, UnixTime};

const SERVER_VERIFY_CONTEXT: &[u8] = b"deputy channel server verify\0";
const CLIENT_VERIFY_CONTEXT: &[u8] = b"deputy channel client verify\0";

enum Role {
    Client(Arc<ClientConfig>),
    Server(Arc<ServerConfig>),
}

/// Where the handshake stands: which message is expected next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    ClientHello,
    ServerHello,
    ServerCertificate,
    CertRequestOrServerVerify,
    ServerVerify,
    ServerFinished,
    ClientCertificate,
    ClientVerify,
    ClientFinished,
    Established,
    Failed,
}

type FinishedKey = zeroize::Zeroizing<[u8; 32]>;

/// Secrets alive only during the handshake.
struct Handshaking {
    key_pair: Option<KeyPair>,
    client_random: [u8; 32],
    schedule: Option<Schedule>,
    /// (client, server) finished keys.
    finished: Option<(FinishedKey, FinishedKey)>,
    /// Server: the client's application keys, used once its Finished verifies.
    pending_recv: Option<DirectionKeys>,
    cert_requested: bool,
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
    expect: Expect,
    deframer: Deframer,
    outgoing: Vec<u8>,
    received: VecDeque<Vec<u8>>,
    session: u64,
    suite: Option<AeadAlg>,
    transcript: Transcript,
    hs: Option<Handshaking>,
    send_keys: Option<DirectionKeys>,
    recv_keys: Option<DirectionKeys>,
    exporter: Option<Prk>,
    peer: PeerIdentity,
    deadline: Option<Instant>,
    sent_close: bool,
    received_close: bool,
    error: Option<ChannelError>,
}

impl core::fmt::Debug for Connection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Connection")
            .field("client", &matches!(self.role, Role::Client(_)))
            .field("expect", &self.expect)
            .field("session", &self.session)
            .field("suite", &self.suite)
            .field("peer", &self.peer)
            .field("error", &self.error)
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
            return Err(Error::Config("no AEAD suites configured"));
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
            session_id: 0,
            auth_mode,
            psk_identity,
            server_name,
        }
        .encode()?;
        let mut conn = Connection::new(Role::Client(config.clone()), Expect::ServerHello, now);
        conn.transcript.add(&hello);
        conn.outgoing.extend_from_slice(&hello);
        conn.hs = Some(Handshaking {
            key_pair: Some(key_pair),
            client_random,
            schedule: None,
            finished: None,
            pending_recv: None,
            cert_requested: false,
        });
        Ok(conn)
    }

    /// A server connection waiting for a client hello.
    pub fn server(config: Arc<ServerConfig>, now: Instant) -> Connection {
        Connection::new(Role::Server(config), Expect::ClientHello, now)
    }

    fn new(role: Role, expect: Expect, now: Instant) -> Connection {
        let common = match &role {
            Role::Client(c) => &c.common,
            Role::Server(s) => &s.common,
        };
        Connection {
            deframer: Deframer::new(common.limits),
            deadline: Some(now + common.handshake_timeout),
            role,
            expect,
            outgoing: Vec::new(),
            received: VecDeque::new(),
            session: 0,
            suite: None,
            transcript: Transcript::default(),
            hs: None,
            send_keys: None,
            recv_keys: None,
            exporter: None,
            peer: PeerIdentity::Anonymous,
            sent_close: false,
            received_close: false,
            error: None,
        }
    }

    fn common(&self) -> &Common {
        match &self.role {
            Role::Client(c) => &c.common,
            Role::Server(s) => &s.common,
        }
    }

    /// Whether the handshake is complete and application data may flow.
    pub fn is_established(&self) -> bool {
        self.expect == Expect::Established
    }

    /// Whether the handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        !matches!(self.expect, Expect::Established | Expect::Failed)
    }

    /// The failure that ended the connection, if any.
    pub fn error(&self) -> Option<&ChannelError> {
        self.error.as_ref()
    }

    /// Whether the peer sent close-notify.
    pub fn peer_closed(&self) -> bool {
        self.received_close
    }

    /// Whether we sent close-notify.
    pub fn is_closing(&self) -> bool {
        self.sent_close
    }

    /// The session id (0 until the server hello).
    pub fn session_id(&self) -> u64 {
        self.session
    }

    /// The negotiated AEAD suite.
    pub fn suite(&self) -> Option<AeadAlg> {
        self.suite
    }

    /// Who the peer proved to be.
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

    /// When [`Connection::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_handshaking() {
            self.deadline
        } else {
            None
        }
    }

    /// Fail the handshake if its deadline passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => Err(self.fail(ChannelError::HandshakeTimeout)),
            _ => Ok(()),
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

    fn check_can_send(&self) -> Result<(), ChannelError> {
        if self.expect == Expect::Failed {
            return Err(ChannelError::Failed);
        }
        if self.sent_close {
            return Err(ChannelError::Closed);
        }
        if !self.is_established() {
            return Err(ChannelError::NotEstablished);
        }
        Ok(())
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
        self.sent_close = true;
        Ok(())
    }

    /// The stream ended. Without a close-notify from the peer first, that is a truncation
    /// and fails the connection.
    pub fn stream_closed(&mut self) -> Result<(), Error> {
        if self.received_close || self.expect == Expect::Failed {
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
        let exporter = self
            .exporter
            .as_ref()
            .filter(|_| self.is_established())
            .ok_or(ChannelError::NotEstablished)?;
        exporter.expand_label(label, context, out)?;
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
        if self.expect == Expect::Failed {
            return Err(ChannelError::Failed.into());
        }
        let mut rest = data;
        loop {
            let used = match self.deframer.fill(rest) {
                Ok(n) => n,
                Err(e) => return Err(self.fail(ChannelError::Decode(e))),
            };
            rest = &rest[used..];
            let mut progressed = used > 0;
            while let Some(frame) = self.deframer.take() {
                progressed = true;
                if let Err(e) = self.handle_frame(now, &frame, rng) {
                    return Err(self.fail(e));
                }
            }
            if rest.is_empty() || !progressed {
                return Ok(());
            }
        }
    }

    /// Record the failure, tell the peer (unless it told us), and wipe secrets.
    fn fail(&mut self, error: ChannelError) -> Error {
        if self.expect != Expect::Failed {
            if let Some(code) = error.alert() {
                let alert = Alert { code };
                let bytes = match self.send_keys.as_mut() {
                    Some(keys) => keys.seal(self.session, CT_ALERT, &alert.payload()).ok(),
                    None => alert.encode(self.session).ok(),
                };
                if let Some(bytes) = bytes {
                    self.outgoing.extend_from_slice(&bytes);
                }
            }
            self.expect = Expect::Failed;
            self.error = Some(error.clone());
            self.hs = None;
            self.send_keys = None;
            self.recv_keys = None;
            self.exporter = None;
        }
        error.into()
    }

    fn seal(&mut self, content_type: u8, payload: &[u8]) -> Result<(), ChannelError> {
        let keys = self
            .send_keys
            .as_mut()
            .ok_or(ChannelError::NotEstablished)?;
        let bytes = keys.seal(self.session, content_type, payload)?;
        self.outgoing.extend_from_slice(&bytes);
        Ok(())
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
        frame: &[u8],
        rng: &mut dyn CryptoRng,
    ) -> Result<(), ChannelError> {
        if self.received_close {
            return Err(ChannelError::UnexpectedMessage(
                frame.get(3).copied().unwrap_or(0),
            ));
        }
        let limits = self.common().limits;
        let msg = Message::decode(frame, &limits).map_err(ChannelError::Decode)?;
        match msg.msg_type() {
            CLIENT_HELLO if self.expect == Expect::ClientHello => {
                let hello = ClientHello::decode(&msg, &limits).map_err(ChannelError::Decode)?;
                self.transcript.add(frame);
                self.on_client_hello(now, hello, rng)
            }
            SERVER_HELLO if self.expect == Expect::ServerHello => {
                let hello = ServerHello::decode(&msg, &limits).map_err(ChannelError::Decode)?;
                self.transcript.add(frame);
                self.on_server_hello(hello)
            }
            ALERT if self.recv_keys.is_none() => {
                let alert = Alert::decode(&msg, &limits).map_err(ChannelError::Decode)?;
                Err(ChannelError::PeerAlert(alert.code))
            }
            RECORD if self.recv_keys.is_some() => {
                let record = RecordEnvelope::decode(&msg, &limits).map_err(ChannelError::Decode)?;
                if record.session != self.session {
                    return Err(ChannelError::WrongSession {
                        expected: self.session,
                        got: record.session,
                    });
                }
                let max = self.common().max_record_len + 1 + crate::crypto::aead::TAG_LEN;
                if record.ciphertext.len() > max {
                    return Err(ChannelError::RecordTooLarge {
                        len: record.ciphertext.len(),
                        max,
                    });
                }
                let keys = self
                    .recv_keys
                    .as_mut()
                    .ok_or(ChannelError::NotEstablished)?;
                let (content_type, payload) = keys.open(record)?;
                self.on_record(now, content_type, payload)
            }
            t => Err(ChannelError::UnexpectedMessage(t)),
        }
    }

    fn on_record(
        &mut self,
        now: Instant,
        content_type: u8,
        payload: Vec<u8>,
    ) -> Result<(), ChannelError> {
        match content_type {
            CT_HANDSHAKE if self.is_handshaking() => {
                let limits = self.common().limits;
                let msg = Message::decode(&payload, &limits).map_err(ChannelError::Decode)?;
                if msg.session() != self.session {
                    return Err(ChannelError::WrongSession {
                        expected: self.session,
                        got: msg.session(),
                    });
                }
                let hs = Handshake::decode(&msg, &limits).map_err(ChannelError::Decode)?;
                self.on_handshake(now, hs, &payload)
            }
            CT_APPLICATION if self.is_established() => {
                let bound = self.common().max_received;
                if self.received.len() >= bound {
                    return Err(ChannelError::ReceiveQueueFull(bound));
                }
                self.received.push_back(payload);
                Ok(())
            }
            CT_ALERT => match payload.as_slice() {
                [code] => match AlertCode::from_code(*code) {
                    AlertCode::CloseNotify if self.is_established() => {
                        self.received_close = true;
                        Ok(())
                    }
                    code => Err(ChannelError::PeerAlert(code)),
                },
                _ => Err(ChannelError::Decode(crate::wire::WireError::Truncated)),
            },
            t => Err(ChannelError::UnexpectedMessage(t)),
        }
    }

    fn on_handshake(
        &mut self,
        now: Instant,
        msg: Handshake,
        bytes: &[u8],
    ) -> Result<(), ChannelError> {
        match (self.expect, msg) {
            (Expect::ServerCertificate, Handshake::Certificate(c)) => {
                self.transcript.add(bytes);
                self.on_server_certificate(now, c)
            }
            (Expect::CertRequestOrServerVerify, Handshake::CertificateRequest(_)) => {
                self.transcript.add(bytes);
                self.hs_mut()?.cert_requested = true;
                self.expect = Expect::ServerVerify;
                Ok(())
            }
            (
                Expect::CertRequestOrServerVerify | Expect::ServerVerify,
                Handshake::CertificateVerify(v),
            ) => {
                self.verify_peer_signature(SERVER_VERIFY_CONTEXT, &v)?;
                self.transcript.add(bytes);
                self.expect = Expect::ServerFinished;
                Ok(())
            }
            (Expect::ServerFinished, Handshake::Finished(f)) => {
                self.check_finished(false, &f)?;
                self.transcript.add(bytes);
                self.client_finish()
            }
            (Expect::ClientCertificate, Handshake::Certificate(c)) => {
                self.transcript.add(bytes);
                self.on_client_certificate(now, c)
            }
            (Expect::ClientVerify, Handshake::CertificateVerify(v)) => {
                self.verify_peer_signature(CLIENT_VERIFY_CONTEXT, &v)?;
                self.transcript.add(bytes);
                self.expect = Expect::ClientFinished;
                Ok(())
            }
            (Expect::ClientFinished, Handshake::Finished(f)) => {
                self.check_finished(true, &f)?;
                self.transcript.add(bytes);
                let keys = self
                    .hs_mut()?
                    .pending_recv
                    .take()
                    .ok_or(ChannelError::Failed)?;
                self.recv_keys = Some(keys);
                self.establish();
                Ok(())
            }
            (_, other) => Err(ChannelError::UnexpectedMessage(match other {
                Handshake::Certificate(_) => super::messages::CERTIFICATE,
                Handshake::CertificateRequest(_) => super::messages::CERTIFICATE_REQUEST,
                Handshake::CertificateVerify(_) => super::messages::CERTIFICATE_VERIFY,
                Handshake::Finished(_) => super::messages::FINISHED,
            })),
        }
    }

    fn hs_mut(&mut self) -> Result<&mut Handshaking, ChannelError> {
        self.hs.as_mut().ok_or(ChannelError::Failed)
    }

    fn establish(&mut self) {
        self.expect = Expect::Established;
        self.hs = None;
        self.deadline = None;
    }

    // ----- server side -----

    fn on_client_hello(
        &mut self,
        now: Instant,
        hello: ClientHello,
        rng: &mut dyn CryptoRng,
    ) -> Result<(), ChannelError> {
        let Role::Server(config) = &self.role else {
            return Err(ChannelError::UnexpectedMessage(CLIENT_HELLO));
        };
        let config = config.clone();
        if !hello.versions.contains(&CHANNEL_VERSION) {
            return Err(ChannelError::NoCommonVersion);
        }
        let suite = config
            .common
            .suites
            .iter()
            .copied()
            .find(|s| hello.suites.contains(&s.id()))
            .ok_or(ChannelError::NoCommonSuite)?;
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
        self.send_keys = Some(server);
        self.recv_keys = Some(client);

        let request_cert = psk.is_none() && !matches!(config.client_certs, ClientCertPolicy::None);
        if let (None, Some(identity)) = (&psk, &config.identity) {
            self.send_handshake(&Handshake::Certificate(CertificateMsg {
                certificate: Some(identity.certificate.as_bytes().to_vec()),
            }))?;
            if request_cert {
                self.send_handshake(&Handshake::CertificateRequest(CertificateRequest))?;
            }
            let signature = identity
                .key
                .sign(SERVER_VERIFY_CONTEXT, &self.transcript.hash());
            self.send_handshake(&Handshake::CertificateVerify(CertificateVerify {
                signature,
            }))?;
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
        self.send_keys = Some(server);
        self.exporter = Some(exporter);
        self.hs = Some(Handshaking {
            key_pair: None,
            client_random: hello.random,
            schedule: None,
            finished: Some((client_finished, server_finished)),
            pending_recv: Some(client),
            cert_requested: request_cert,
        });
        self.expect = if request_cert {
            Expect::ClientCertificate
        } else {
            Expect::ClientFinished
        };
        Ok(())
    }

    fn on_client_certificate(
        &mut self,
        now: Instant,
        msg: CertificateMsg,
    ) -> Result<(), ChannelError> {
        let Role::Server(config) = &self.role else {
            return Err(ChannelError::UnexpectedMessage(
                super::messages::CERTIFICATE,
            ));
        };
        let (trust, required) = match &config.client_certs {
            ClientCertPolicy::None => {
                return Err(ChannelError::UnexpectedMessage(
                    super::messages::CERTIFICATE,
                ));
            }
            ClientCertPolicy::Optional(t) => (t, false),
            ClientCertPolicy::Required(t) => (t, true),
        };
        match msg.certificate {
            Some(raw) => {
                let at = UnixTime::at(config.common.time_anchor, now);
                let cert = trust
                    .verify(&raw, at, None)
                    .map_err(ChannelError::Certificate)?;
                self.peer = PeerIdentity::Certificate(Box::new(cert));
                self.expect = Expect::ClientVerify;
            }
            None if required => return Err(ChannelError::ClientCertificateRequired),
            None => self.expect = Expect::ClientFinished,
        }
        Ok(())
    }

    // ----- client side -----

    fn on_server_hello(&mut self, hello: ServerHello) -> Result<(), ChannelError> {
        let Role::Client(config) = &self.role else {
            return Err(ChannelError::UnexpectedMessage(SERVER_HELLO));
        };
        let config = config.clone();
        if hello.version != CHANNEL_VERSION {
            return Err(ChannelError::NoCommonVersion);
        }
        let suite = AeadAlg::from_id(hello.suite)
            .filter(|s| config.common.suites.contains(s))
            .ok_or(ChannelError::IllegalParameter(
                "server chose a suite not offered",
            ))?;
        if hello.group != config.group.id() {
            return Err(ChannelError::IllegalParameter("server changed the group"));
        }
        if hello.session_id == 0 {
            return Err(ChannelError::IllegalParameter("zero session id"));
        }
        let hs = self.hs_mut()?;
        let key_pair = hs.key_pair.take().ok_or(ChannelError::Failed)?;
        let client_random = hs.client_random;
        let dh = key_pair
            .agree(&hello.key_share)
            .map_err(ChannelError::KeyExchange)?;
        let psk = match &config.auth {
            ClientAuthMode::Psk(psk) => {
                self.peer = PeerIdentity::Psk(psk.identity.clone());
                Some(&psk.key[..])
            }
            ClientAuthMode::Certificate { .. } => None,
        };
        let pms = pre_master_secret(dh.as_bytes(), psk);
        let schedule = Schedule::new(suite, &pms, &client_random, &hello.random);
        let keys = schedule
            .handshake(&self.transcript.hash())
            .map_err(ChannelError::KeySchedule)?;
        self.session = hello.session_id;
        self.suite = Some(suite);
        self.send_keys = Some(keys.client);
        self.recv_keys = Some(keys.server);
        let hs = self.hs_mut()?;
        hs.schedule = Some(schedule);
        hs.finished = Some((keys.client_finished, keys.server_finished));
        self.expect = match psk {
            Some(_) => Expect::ServerFinished,
            None => Expect::ServerCertificate,
        };
        Ok(())
    }

    fn on_server_certificate(
        &mut self,
        now: Instant,
        msg: CertificateMsg,
    ) -> Result<(), ChannelError> {
        let Role::Client(config) = &self.role else {
            return Err(ChannelError::UnexpectedMessage(
                super::messages::CERTIFICATE,
            ));
        };
        let ClientAuthMode::Certificate {
            trust, server_name, ..
        } = &config.auth
        else {
            return Err(ChannelError::UnexpectedMessage(
                super::messages::CERTIFICATE,
            ));
        };
        let raw = msg
            .certificate
            .ok_or(ChannelError::IllegalParameter("server sent no certificate"))?;
        let at = UnixTime::at(config.common.time_anchor, now);
        let cert = trust
            .verify(&raw, at, Some(server_name))
            .map_err(ChannelError::Certificate)?;
        self.peer = PeerIdentity::Certificate(Box::new(cert));
        self.expect = Expect::CertRequestOrServerVerify;
        Ok(())
    }

    /// The server's flight verified: send ours and switch to application keys.
    fn client_finish(&mut self) -> Result<(), ChannelError> {
        let Role::Client(config) = &self.role else {
            return Err(ChannelError::Failed);
        };
        let config = config.clone();
        let hs = self.hs.take().ok_or(ChannelError::Failed)?;
        let schedule = hs.schedule.as_ref().ok_or(ChannelError::Failed)?;
        let (client_finished, _) = hs.finished.as_ref().ok_or(ChannelError::Failed)?;
        let app = schedule
            .application(&self.transcript.hash())
            .map_err(ChannelError::KeySchedule)?;
        if hs.cert_requested {
            let identity = match &config.auth {
                ClientAuthMode::Certificate { identity, .. } => identity.as_ref(),
                ClientAuthMode::Psk(_) => None,
            };
            self.send_handshake(&Handshake::Certificate(CertificateMsg {
                certificate: identity.map(|id| id.certificate.as_bytes().to_vec()),
            }))?;
            if let Some(identity) = identity {
                let signature = identity
                    .key
                    .sign(CLIENT_VERIFY_CONTEXT, &self.transcript.hash());
                self.send_handshake(&Handshake::CertificateVerify(CertificateVerify {
                    signature,
                }))?;
            }
        }
        let mac = finished_mac(client_finished, &self.transcript.hash());
        self.send_handshake(&Handshake::Finished(Finished { mac }))?;
        self.send_keys = Some(app.client);
        self.recv_keys = Some(app.server);
        self.exporter = Some(app.exporter);
        self.establish();
        Ok(())
    }

    // ----- shared checks -----

    fn verify_peer_signature(
        &self,
        context: &[u8],
        v: &CertificateVerify,
    ) -> Result<(), ChannelError> {
        let cert = self
            .peer_certificate()
            .ok_or(ChannelError::UnexpectedMessage(
                super::messages::CERTIFICATE_VERIFY,
            ))?;
        cert.verify_signature(context, &self.transcript.hash(), &v.signature)
            .map_err(|_| ChannelError::BadSignature)
    }

    fn check_finished(&self, from_client: bool, f: &Finished) -> Result<(), ChannelError> {
        let hs = self.hs.as_ref().ok_or(ChannelError::Failed)?;
        let (client_key, server_key) = hs.finished.as_ref().ok_or(ChannelError::Failed)?;
        let key = if from_client { client_key } else { server_key };
        let expected = finished_mac(key, &self.transcript.hash());
        if ct_eq(&expected, &f.mac) {
            Ok(())
        } else {
            Err(ChannelError::BadFinished)
        }
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

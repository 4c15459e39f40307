//! The substitution server's TLS 1.3 work (seed 004, S351-S358) with rustls, behind the
//! protocol-independent [`Dispatcher`](crate::keyx::Dispatcher).
//!
//! One rustls *unbuffered* connection per delegated TLS connection, client or server side,
//! fed only the records the terminal relays. The handshake runs here; when it is complete
//! the connection becomes a rustls kernel connection, whose traffic keys go to the
//! terminal sealed, and which stays in the session for the connection's life: each
//! KeyUpdate the terminal relays turns into the next key of that direction, each
//! NewSessionTicket into a resumption ticket for the terminal's next connection.
//!
//! Each delegated connection is one [`TlsSession`], one variant per step:
//!
//! ```text
//!  client:  start ─► Started ─keygen─► Handshaking ─auth (×n: Incomplete)─► Authenticated ─key─► Established
//!  server:  start ─► Handshaking ─keygen (×n: HelloRetryRequest)─► … the same
//!                                                 refused ─► Refused          relay(closed) ─► Closed
//! ```
//!
//! The split boundary: relayed records are handed to rustls one at a time, and only while
//! its handshake is not complete. The record that completes it is the last one rustls
//! sees; the authentication response says how many octets that was, and the terminal's
//! record layer takes the rest (application data or tickets the peer sent in the same
//! segment). So this server never decrypts the terminal's traffic.
//!
//! Randomness and time: rustls draws its randomness (key shares, nonces, ticket keys) from
//! its crypto provider (`ring`, the operating system's generator), not from the crate's
//! injected [`crate::Rng`] (only seals key bodies here); certificates are judged
//! at the driver's time (`time_anchor` plus `now`), not the machine's clock.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustls::client::{ClientSessionMemoryCache, Resumption, UnbufferedClientConnection};
use rustls::crypto::CryptoProvider;
use rustls::kernel::KernelConnection;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime as PkiTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerSessionMemoryCache, UnbufferedServerConnection, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{
    CertificateError, ClientConfig, ConnectionTrafficSecrets, DigitallySignedStruct,
    DistinguishedName, Error as TlsLibError, RootCertStore, ServerConfig, SignatureScheme,
};
use zeroize::Zeroizing;

use super::{
    KeyBody, RELAY_CLOSED, RELAY_OWN_KEY_UPDATE, RELAY_PEER_MESSAGE, suite_transform, suites_of,
};
use crate::ikev2::Identity;
use crate::ikev2::auth::certificate_identities;
use crate::keyx::dispatch::{Place, Substitute, TerminalId};
use crate::keyx::messages::{
    AuthResponse, AuthResult, Body, ErrorCode, KEY_RESPONSE, KeyGenResponse, KeyResponse,
    MAX_PROTOCOL_BYTES, Method, PolicyResult, Protocol, RELAY, Relay, Role, StartOutcome,
    StartRequest, StartResponse,
};
use crate::keyx::policy::{Direction, PolicyDb};
use crate::keyx::seal::{DelegationKey, seal};
use crate::tls::{CipherSuite, TrafficKeys};
use crate::{Instant, Rng, UnixTime};

/// A certificate chain (end entity first) and its private key.
#[derive(Debug)]
pub struct TlsCredential {
    /// The chain, end entity first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The end entity's key (PKCS#8, SEC1 or PKCS#1).
    pub key: PrivateKeyDer<'static>,
}

/// Whether a terminal acting as a TLS server asks its clients for certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificates: any client that completes the handshake may reach the
    /// terminal (a public HTTPS-style service); the policy database is not consulted.
    None,
    /// Clients must present a certificate that chains to the profile's roots and names
    /// an identity the policy database lets reach this terminal.
    Required,
}

/// What the server holds for one terminal's TLS.
#[derive(Debug)]
pub struct TlsProfile {
    /// The terminal's delegation key: traffic keys are sealed with it.
    pub delegation_key: DelegationKey,
    /// Trust anchors for the peers: servers this terminal reaches, clients that reach it.
    pub roots: RootCertStore,
    /// The terminal as a TLS client: the certificate it shows when a server asks, if any.
    pub client_credential: Option<TlsCredential>,
    /// The terminal as a TLS server: its certificate and key (held here, never on the
    /// terminal). Without one the terminal cannot accept connections.
    pub server_credential: Option<TlsCredential>,
    /// The terminal as a TLS server: whether clients must authenticate.
    pub client_auth: ClientAuth,
    /// ALPN protocols offered (client) or accepted (server), preferred first.
    pub alpn: Vec<Vec<u8>>,
}

/// A provisioned terminal, with what its connections share: loaded keys and the
/// resumption caches.
struct Provisioned {
    profile: TlsProfile,
    roots: Arc<RootCertStore>,
    client_key: Option<Arc<CertifiedKey>>,
    server_key: Option<Arc<CertifiedKey>>,
    client_sessions: Arc<ClientSessionMemoryCache>,
    server_sessions: Arc<ServerSessionMemoryCache>,
}

/// One delegated TLS connection's step.
pub enum TlsSession {
    /// Client: S351 decided; the ClientHello is built at key generation.
    Started(Box<Started>),
    /// The handshake is running.
    Handshaking(Box<Handshake>),
    /// The handshake completed and the peer was accepted; waiting for the key request.
    Authenticated(Box<Handshake>),
    /// The traffic keys were released; the session serves key updates and tickets.
    Established(Box<Live>),
    /// The peer was refused or the handshake failed: nothing more is served.
    Refused,
    /// The terminal said the connection ended.
    Closed,
}

impl TlsSession {
    /// The step's name, for traces and tests.
    pub fn step(&self) -> &'static str {
        match self {
            TlsSession::Started(_) => "started",
            TlsSession::Handshaking(_) => "handshaking",
            TlsSession::Authenticated(_) => "authenticated",
            TlsSession::Established(_) => "established",
            TlsSession::Refused => "refused",
            TlsSession::Closed => "closed",
        }
    }

    /// The negotiated suite, once known.
    pub fn suite(&self) -> Option<CipherSuite> {
        match self {
            TlsSession::Handshaking(h) | TlsSession::Authenticated(h) => h.conn.suite(),
            TlsSession::Established(l) => Some(l.suite),
            _ => None,
        }
    }
}

/// Client start: what the ClientHello will be built from.
pub struct Started {
    name: ServerName<'static>,
    suites: Vec<CipherSuite>,
}

/// A rustls connection of either side, mid-handshake.
enum Conn {
    Client(UnbufferedClientConnection),
    Server(UnbufferedServerConnection),
}

/// The handshake in progress.
pub struct Handshake {
    conn: Conn,
    /// Record bytes rustls has not discarded yet (a handshake message spanning records).
    incoming: Vec<u8>,
    /// The policy verdict of the client-certificate verifier (server side).
    denied: Arc<AtomicBool>,
    /// Server side: the flight rustls built from the ClientHello at start, handed out at
    /// key generation (S355), as the seed orders the steps.
    flight: Vec<u8>,
}

/// An established connection: the kernel connection keeps the traffic secrets.
pub struct Live {
    suite: CipherSuite,
    kernel: Kernel,
}

enum Kernel {
    Client(KernelConnection<rustls::client::ClientConnectionData>),
    Server(KernelConnection<rustls::server::ServerConnectionData>),
}

impl Kernel {
    fn update(&mut self, send: bool) -> Result<ConnectionTrafficSecrets, TlsLibError> {
        let r = match (self, send) {
            (Kernel::Client(k), true) => k.update_tx_secret(),
            (Kernel::Client(k), false) => k.update_rx_secret(),
            (Kernel::Server(k), true) => k.update_tx_secret(),
            (Kernel::Server(k), false) => k.update_rx_secret(),
        };
        r.map(|(_, s)| s)
    }
}

/// What the server's TLS work counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsSubstituteCounters {
    /// Handshakes started (client hellos built, or client hellos taken).
    pub handshakes: u64,
    /// Peers accepted (authenticated and allowed).
    pub authenticated: u64,
    /// Peers refused at authentication (S353 no).
    pub auth_refused: u64,
    /// Authenticated peers the policy database refused.
    pub policy_refused: u64,
    /// Traffic keys released (S357).
    pub keys_released: u64,
    /// Key updates served (one per direction).
    pub key_updates: u64,
    /// NewSessionTickets taken for resumption.
    pub tickets: u64,
    /// Handshakes that resumed a session.
    pub resumed: u64,
}

/// Seed 004's substitution server, TLS 1.3 part: a [`Substitute`] for the dispatcher.
///
/// Per terminal a [`TlsProfile`]: its delegation key, the roots its peers are checked
/// against, the certificates it shows; the policy database says which names it may reach
/// and which client certificates may reach it.
///
/// ```
/// use std::sync::Arc;
/// use deputy::channel::{ChannelServerConfig, Psk, ServerConfig};
/// use deputy::keyx::tls::{ClientAuth, TlsProfile, TlsSubstitute};
/// use deputy::keyx::{Bounds, DelegationKey, Direction, PeerPattern, PolicyDb, SubstitutionServer};
/// use deputy::UnixTime;
/// use rand_chacha::ChaCha20Rng;
/// use rand_core::SeedableRng;
///
/// let anchor = UnixTime(1_800_000_000); // the wall-clock time at the driver's Instant::ZERO
/// let mut policy = PolicyDb::new();
/// let reach = PeerPattern::Domain("example.com".into());
/// policy.allow(&"sensor-7".into(), Direction::FromTerminal, reach).unwrap();
/// let mut tls = TlsSubstitute::new(policy, 100, anchor, Box::new(ChaCha20Rng::seed_from_u64(3)));
///
/// let ca = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.der")).unwrap();
/// let mut roots = rustls::RootCertStore::empty();
/// roots.add(ca.into()).unwrap();
/// tls.provision(
///     "sensor-7".into(),
///     TlsProfile {
///         delegation_key: DelegationKey::new([7; 32]),
///         roots,
///         client_credential: None,
///         server_credential: None, // this terminal only connects; it accepts nothing
///         client_auth: ClientAuth::None,
///         alpn: vec![b"http/1.1".to_vec()],
///     },
/// )
/// .unwrap();
///
/// // The terminal reaches the server over deputy's channel, with its pre-arranged key.
/// let psk = Psk::new("sensor-7", &[0x42; 32]).unwrap();
/// let channel = ChannelServerConfig {
///     channel: Arc::new(ServerConfig::with_psks([psk], anchor).unwrap()),
///     max_sessions: 64,
/// };
/// let rng = Box::new(ChaCha20Rng::seed_from_u64(4));
/// let server = SubstitutionServer::new(channel, tls, Bounds::default(), rng);
/// assert_eq!(server.connected().len(), 0);
/// ```
pub struct TlsSubstitute {
    time_anchor: UnixTime,
    clock: Arc<Clock>,
    profiles: BTreeMap<TerminalId, Arc<Provisioned>>,
    max_terminals: usize,
    /// Shared with the client-certificate verifiers of handshakes in progress; changed
    /// copy-on-write.
    policy: Arc<PolicyDb>,
    established_idle: Duration,
    key_log: Option<Arc<KeyLogBuffer>>,
    /// Client configurations by terminal and suite list, built once: a resumption ticket
    /// is only used with the configuration (verifier, certificate resolver) it was issued
    /// under, so every connection of a terminal must share one.
    client_configs: BTreeMap<(TerminalId, Vec<u16>), Arc<ClientConfig>>,
    rng: Rng,
    counters: TlsSubstituteCounters,
}

/// Suite lists kept per terminal in the client configuration cache (a terminal lists the
/// same suites every time; a few variants are allowed for, then the cache starts over).
const CONFIGS_PER_TERMINAL: usize = 4;

impl core::fmt::Debug for TlsSubstitute {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlsSubstitute")
            .field("terminals", &self.profiles.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// rustls's clock: the driver's time, set before every call into rustls.
#[derive(Debug, Default)]
struct Clock(AtomicU64);

impl rustls::time_provider::TimeProvider for Clock {
    fn current_time(&self) -> Option<PkiTime> {
        Some(PkiTime::since_unix_epoch(Duration::from_secs(
            self.0.load(Ordering::Relaxed),
        )))
    }
}

/// NSS key log lines, kept for the operator to collect (bounded: the oldest go first).
#[derive(Debug)]
struct KeyLogBuffer {
    lines: Mutex<alloc::collections::VecDeque<String>>,
    max: usize,
}

impl rustls::KeyLog for KeyLogBuffer {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let line = alloc::format!("{label} {} {}", hex(client_random), hex(secret));
        if let Ok(mut l) = self.lines.lock() {
            if l.len() == self.max {
                l.pop_front();
            }
            l.push_back(line);
        }
    }
}

fn hex(b: &[u8]) -> String {
    use core::fmt::Write;
    b.iter()
        .fold(String::with_capacity(2 * b.len()), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// The server-side verifier of a client's certificate: webpki against the terminal's
/// roots, then the policy database for the identities the certificate names.
#[derive(Debug)]
struct PolicyVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    terminal: TerminalId,
    policy: Arc<PolicyDb>,
    denied: Arc<AtomicBool>,
}

impl ClientCertVerifier for PolicyVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: PkiTime,
    ) -> Result<ClientCertVerified, TlsLibError> {
        // S353 first: a certificate that does not verify is an authentication failure,
        // whatever the policy says.
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let allowed = certificate_identities(end_entity).iter().any(|id| {
            self.policy
                .permits(&self.terminal, Direction::ToTerminal, id)
        });
        if allowed {
            Ok(verified)
        } else {
            // S354: authenticated but not allowed; rustls answers access_denied.
            self.denied.store(true, Ordering::Relaxed);
            Err(TlsLibError::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, TlsLibError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, TlsLibError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The provider restricted to `suites` (TLS 1.3 only).
///
/// `ring`, because it builds with gcc alone (aws-lc-rs needs more of a C toolchain).
/// rustls 0.23.48 marks it deprecated because ring has no post-quantum key exchange; the
/// groups offered are X25519, P-256 and P-384.
#[allow(deprecated)]
fn provider(suites: &[CipherSuite]) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.retain(|s| {
        s.version() == &rustls::version::TLS13
            && suites.iter().any(|c| c.code() == u16::from(s.suite()))
    });
    Arc::new(p)
}

/// The suite rustls negotiated, in the crate's terms.
fn suite_of(s: rustls::SupportedCipherSuite) -> Option<CipherSuite> {
    CipherSuite::from_code(u16::from(s.suite()))
}

impl Conn {
    fn suite(&self) -> Option<CipherSuite> {
        match self {
            Conn::Client(c) => c.negotiated_cipher_suite(),
            Conn::Server(c) => c.negotiated_cipher_suite(),
        }
        .and_then(suite_of)
    }

    fn resumed(&self) -> bool {
        let kind = match self {
            Conn::Client(c) => c.handshake_kind(),
            Conn::Server(c) => c.handshake_kind(),
        };
        kind == Some(rustls::HandshakeKind::Resumed)
    }
}

/// Where one run of a connection's state machine stopped.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// It needs more of the peer's records.
    Blocked,
    /// The handshake is complete.
    Complete,
}

/// Drive one rustls state machine: the records in `incoming` in, whatever it wants sent
/// appended to `out`, until it blocks or completes. rustls's own error stops it; any
/// alert it queued for that error is appended to `out` first.
macro_rules! drive {
    ($conn:expr, $incoming:expr, $out:expr) => {{
        let result;
        let mut failed = None;
        loop {
            let UnbufferedStatus { discard, state } = $conn.process_tls_records($incoming);
            let step = match state {
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    let mut buf = alloc::vec![0u8; 4096];
                    let n = match e.encode(&mut buf) {
                        Ok(n) => Ok(n),
                        Err(EncodeError::InsufficientSize(s)) => {
                            buf.resize(s.required_size, 0);
                            e.encode(&mut buf).map_err(|_| ())
                        }
                        Err(_) => Err(()),
                    };
                    match n {
                        Ok(n) => {
                            $out.extend_from_slice(&buf[..n]);
                            None
                        }
                        Err(()) => Some(Err(TlsLibError::EncryptError)),
                    }
                }
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    // The bytes are in `out`, which goes to the terminal to send.
                    t.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Ok(Progress::Blocked)),
                Ok(ConnectionState::WriteTraffic(_)) => Some(Ok(Progress::Complete)),
                // Application data, early data or a close before the handshake completed
                // cannot be: records are fed one at a time and only until completion.
                Ok(_) => Some(Err(TlsLibError::HandshakeNotComplete)),
                Err(e) => Some(Err(e)),
            };
            $incoming.drain(..discard);
            match (step, failed.is_some()) {
                // After a failure, one call only: it hands out the alert rustls queued
                // for it. Another would read on, and what broke the connection (a record
                // that does not frame) would be read and answered twice.
                (None, true) => {
                    result = Err(failed.take().unwrap_or(TlsLibError::HandshakeNotComplete));
                    break;
                }
                (None, false) => continue,
                (Some(Err(e)), false) => {
                    failed = Some(e);
                    continue;
                }
                (Some(Err(_)), true) => {
                    result = Err(failed.take().unwrap_or(TlsLibError::HandshakeNotComplete));
                    break;
                }
                (Some(Ok(p)), _) => {
                    result = match failed.take() {
                        Some(e) => Err(e),
                        None => Ok(p),
                    };
                    break;
                }
            }
        }
        result
    }};
}

impl Handshake {
    /// Run the connection on what it already has (a client's first flight).
    fn run(&mut self, out: &mut Vec<u8>) -> Result<Progress, TlsLibError> {
        match &mut self.conn {
            Conn::Client(c) => drive!(c, &mut self.incoming, out),
            Conn::Server(c) => drive!(c, &mut self.incoming, out),
        }
    }

    /// Feed complete records one at a time until the handshake completes; returns how
    /// many octets of `records` it took.
    fn feed(
        &mut self,
        records: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(Progress, usize), TlsLibError> {
        let mut taken = 0;
        let mut progress = Progress::Blocked;
        while let Some(len) = record_len(&records[taken..]) {
            self.incoming
                .extend_from_slice(&records[taken..taken + len]);
            taken += len;
            progress = self.run(out)?;
            if progress == Progress::Complete {
                break;
            }
        }
        Ok((progress, taken))
    }

    /// The finished handshake as traffic keys and the kernel connection.
    fn into_live(self) -> Result<(KeyBody, Live), TlsLibError> {
        let (secrets, kernel) = match self.conn {
            Conn::Client(c) => {
                let (s, k) = c.dangerous_into_kernel_connection()?;
                (s, Kernel::Client(k))
            }
            Conn::Server(c) => {
                let (s, k) = c.dangerous_into_kernel_connection()?;
                (s, Kernel::Server(k))
            }
        };
        let (send_seq, send) = secrets.tx;
        let (receive_seq, receive) = secrets.rx;
        let send = traffic_keys(send, send_seq).ok_or(TlsLibError::HandshakeNotComplete)?;
        let receive =
            traffic_keys(receive, receive_seq).ok_or(TlsLibError::HandshakeNotComplete)?;
        let suite = send.suite;
        Ok((
            KeyBody {
                suite,
                send: Some(send),
                receive: Some(receive),
            },
            Live { suite, kernel },
        ))
    }
}

/// The length of the complete record at the front of `buf`, if it is all there.
fn record_len(buf: &[u8]) -> Option<usize> {
    let header = buf.first_chunk::<5>()?;
    let len = 5 + usize::from(u16::from_be_bytes([header[3], header[4]]));
    (buf.len() >= len).then_some(len)
}

/// rustls's traffic secrets as the crate's traffic keys.
fn traffic_keys(s: ConnectionTrafficSecrets, seq: u64) -> Option<TrafficKeys> {
    let (suite, key, iv) = match s {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (CipherSuite::Aes128GcmSha256, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (CipherSuite::Aes256GcmSha384, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (CipherSuite::Chacha20Poly1305Sha256, key, iv)
        }
        _ => return None,
    };
    let mut iv_arr = Zeroizing::new([0u8; 12]);
    iv_arr.copy_from_slice(iv.as_ref().get(..12)?);
    Some(TrafficKeys {
        suite,
        key: Zeroizing::new(key.as_ref().to_vec()),
        iv: iv_arr,
        seq,
    })
}

/// S353's verdict from rustls's error.
fn verdict(e: &TlsLibError, denied: bool) -> (AuthResult, PolicyResult) {
    if denied {
        return (AuthResult::Authenticated, PolicyResult::Denied);
    }
    let auth = match e {
        TlsLibError::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::UnhandledCriticalExtension => {
                AuthResult::UnknownCa
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => AuthResult::Expired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                AuthResult::IdentityMismatch
            }
            CertificateError::BadSignature => AuthResult::BadAuth,
            _ => AuthResult::BadAuth,
        },
        TlsLibError::NoCertificatesPresented => AuthResult::MissingCertificate,
        TlsLibError::PeerIncompatible(_) => AuthResult::UnsupportedMethod,
        TlsLibError::DecryptError => AuthResult::BadAuth,
        _ => AuthResult::ProtocolViolation,
    };
    (auth, PolicyResult::NotChecked)
}

impl TlsSubstitute {
    /// A server for at most `max_terminals` provisioned terminals, with `policy`.
    ///
    /// `time_anchor` is the wall-clock time at the driver's `Instant::ZERO`: certificates
    /// are judged at `UnixTime::at(time_anchor, now)`. `rng` seals the key bodies.
    pub fn new(
        policy: PolicyDb,
        max_terminals: usize,
        time_anchor: UnixTime,
        rng: Rng,
    ) -> TlsSubstitute {
        TlsSubstitute {
            time_anchor,
            clock: Arc::new(Clock::default()),
            profiles: BTreeMap::new(),
            max_terminals,
            policy: Arc::new(policy),
            established_idle: Duration::from_secs(24 * 3600),
            key_log: None,
            client_configs: BTreeMap::new(),
            rng,
            counters: TlsSubstituteCounters::default(),
        }
    }

    /// How long an established connection's session stays with no relay before it is
    /// forgotten (default 24 hours). A terminal whose session was forgotten can no longer
    /// update its keys: its next key update fails and it closes the connection.
    pub fn set_established_idle(&mut self, idle: Duration) {
        self.established_idle = idle;
    }

    /// Keep the handshake secrets of every connection as NSS key log lines (at most
    /// `max_lines`, the oldest dropped first), for Wireshark: [`take_key_log`](Self::take_key_log)
    /// collects them. Off by default: the lines decrypt the terminal's traffic.
    pub fn log_keys(&mut self, max_lines: usize) {
        // Configurations built before carry no key log: build them again.
        self.client_configs.clear();
        self.key_log = Some(Arc::new(KeyLogBuffer {
            lines: Mutex::new(alloc::collections::VecDeque::new()),
            max: max_lines.max(1),
        }));
    }

    /// The key log lines gathered since the last call.
    pub fn take_key_log(&mut self) -> Vec<String> {
        self.key_log
            .as_ref()
            .and_then(|k| k.lines.lock().ok().map(|mut l| l.drain(..).collect()))
            .unwrap_or_default()
    }

    /// Provision (or replace) a terminal's profile. Refused at the bound of terminals, or
    /// when a credential's key does not load.
    pub fn provision(
        &mut self,
        terminal: TerminalId,
        profile: TlsProfile,
    ) -> Result<(), crate::Error> {
        if !self.profiles.contains_key(&terminal) && self.profiles.len() >= self.max_terminals {
            return Err(crate::Error::CapacityExceeded {
                what: "provisioned terminals",
                bound: self.max_terminals,
            });
        }
        let p = provider(&CipherSuite::ALL);
        let load = |c: &Option<TlsCredential>| -> Result<Option<Arc<CertifiedKey>>, crate::Error> {
            match c {
                None => Ok(None),
                Some(c) => CertifiedKey::from_der(c.chain.clone(), c.key.clone_key(), &p)
                    .map(|k| Some(Arc::new(k)))
                    .map_err(|_| crate::keyx::KeyxError::BadCredential.into()),
            }
        };
        let client_key = load(&profile.client_credential)?;
        let server_key = load(&profile.server_credential)?;
        let roots = Arc::new(profile.roots.clone());
        self.client_configs.retain(|(t, _), _| *t != terminal);
        self.profiles.insert(
            terminal,
            Arc::new(Provisioned {
                profile,
                roots,
                client_key,
                server_key,
                // Tickets for up to 32 servers per terminal; a handful of tickets per
                // client kept for resumption.
                client_sessions: Arc::new(ClientSessionMemoryCache::new(256)),
                server_sessions: ServerSessionMemoryCache::new(256),
            }),
        );
        Ok(())
    }

    /// The policy database (S353-S354 and the names a terminal may reach).
    pub fn policy_mut(&mut self) -> &mut PolicyDb {
        Arc::make_mut(&mut self.policy)
    }

    /// What was counted.
    pub fn counters(&self) -> TlsSubstituteCounters {
        self.counters
    }

    fn tick(&self, now: Instant) {
        self.clock
            .0
            .store(UnixTime::at(self.time_anchor, now).0, Ordering::Relaxed);
    }

    /// The terminal's client configuration for `suites`, from the cache.
    fn cached_client_config(
        &mut self,
        terminal: &TerminalId,
        p: &Provisioned,
        suites: &[CipherSuite],
    ) -> Result<Arc<ClientConfig>, ErrorCode> {
        let key = (
            terminal.clone(),
            suites.iter().map(|s| s.code()).collect::<Vec<_>>(),
        );
        if let Some(c) = self.client_configs.get(&key) {
            return Ok(c.clone());
        }
        let mine = self
            .client_configs
            .keys()
            .filter(|(t, _)| t == terminal)
            .count();
        if mine >= CONFIGS_PER_TERMINAL {
            self.client_configs.retain(|(t, _), _| t != terminal);
        }
        let config = Arc::new(self.client_config(p, suites)?);
        self.client_configs.insert(key, config.clone());
        Ok(config)
    }

    fn client_config(
        &self,
        p: &Provisioned,
        suites: &[CipherSuite],
    ) -> Result<ClientConfig, ErrorCode> {
        let builder = ClientConfig::builder_with_details(provider(suites), self.clock.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|_| ErrorCode::Internal)?
            .with_root_certificates(p.roots.clone());
        let mut config = match &p.client_key {
            Some(k) => {
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(k.clone())))
            }
            None => builder.with_no_client_auth(),
        };
        config.enable_secret_extraction = true;
        config.alpn_protocols = p.profile.alpn.clone();
        config.resumption = Resumption::store(p.client_sessions.clone());
        if let Some(k) = &self.key_log {
            config.key_log = k.clone();
        }
        Ok(config)
    }

    fn server_config(
        &self,
        terminal: &TerminalId,
        p: &Provisioned,
        suites: &[CipherSuite],
        denied: &Arc<AtomicBool>,
    ) -> Result<ServerConfig, ErrorCode> {
        let provider = provider(suites);
        let key = p.server_key.clone().ok_or(ErrorCode::NotProvisioned)?;
        let builder = ServerConfig::builder_with_details(provider.clone(), self.clock.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|_| ErrorCode::Internal)?;
        let builder = match p.profile.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required => {
                let inner = WebPkiClientVerifier::builder_with_provider(p.roots.clone(), provider)
                    .build()
                    .map_err(|_| ErrorCode::NotProvisioned)?;
                builder.with_client_cert_verifier(Arc::new(PolicyVerifier {
                    inner,
                    terminal: terminal.clone(),
                    policy: self.policy.clone(),
                    denied: denied.clone(),
                }))
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
        config.enable_secret_extraction = true;
        config.alpn_protocols = p.profile.alpn.clone();
        config.session_storage = p.server_sessions.clone();
        if let Some(k) = &self.key_log {
            config.key_log = k.clone();
        }
        Ok(config)
    }

    fn profile(&self, terminal: &TerminalId) -> Result<Arc<Provisioned>, ErrorCode> {
        self.profiles
            .get(terminal)
            .cloned()
            .ok_or(ErrorCode::NotProvisioned)
    }

    /// S351 for a terminal that connects: may it reach that name?
    fn client_start(
        &mut self,
        terminal: &TerminalId,
        request: &StartRequest,
        suites: Vec<CipherSuite>,
    ) -> Result<(TlsSession, Body), ErrorCode> {
        let name = request
            .peer_id
            .as_deref()
            .and_then(|b| core::str::from_utf8(b).ok())
            .ok_or(ErrorCode::BadRequest)?;
        let server_name =
            ServerName::try_from(String::from(name)).map_err(|_| ErrorCode::BadRequest)?;
        let id = match &server_name {
            ServerName::IpAddress(ip) => match core::net::IpAddr::from(*ip) {
                core::net::IpAddr::V4(a) => Identity::Ipv4(a),
                core::net::IpAddr::V6(a) => Identity::Ipv6(a),
            },
            _ => Identity::Fqdn(name.into()),
        };
        if !self.policy.permits(terminal, Direction::FromTerminal, &id) {
            return Ok((TlsSession::Refused, refused(StartOutcome::PolicyDenied)));
        }
        Ok((
            TlsSession::Started(Box::new(Started {
                name: server_name,
                suites: suites.clone(),
            })),
            proceed(&suites),
        ))
    }

    /// S351 for a terminal that accepts: run the peer's ClientHello.
    fn server_start(
        &mut self,
        terminal: &TerminalId,
        p: &Provisioned,
        request: &StartRequest,
        suites: Vec<CipherSuite>,
    ) -> Result<(TlsSession, Body), ErrorCode> {
        let hello = request
            .peer_message
            .as_deref()
            .ok_or(ErrorCode::BadRequest)?;
        let denied = Arc::new(AtomicBool::new(false));
        let config = self.server_config(terminal, p, &suites, &denied)?;
        let conn =
            UnbufferedServerConnection::new(Arc::new(config)).map_err(|_| ErrorCode::Internal)?;
        let mut h = Handshake {
            conn: Conn::Server(conn),
            incoming: Vec::new(),
            denied,
            flight: Vec::new(),
        };
        let mut flight = Vec::new();
        match h.feed(hello, &mut flight) {
            Ok((Progress::Blocked, taken)) if taken == hello.len() => {}
            // Nothing in common with the client (or a hello rustls refuses): the terminal
            // answers handshake_failure itself.
            _ => {
                return Ok((TlsSession::Refused, refused(StartOutcome::NoProposalChosen)));
            }
        }
        self.counters.handshakes += 1;
        let chosen = h.conn.suite().map_or(suites, |s| alloc::vec![s]);
        // The flight waits for the key generation request (S355), as the seed orders it.
        h.flight = flight;
        Ok((TlsSession::Handshaking(Box::new(h)), proceed(&chosen)))
    }
}

fn proceed(suites: &[CipherSuite]) -> Body {
    Body::StartResponse(StartResponse {
        outcome: StartOutcome::Proceed {
            method: Method::Tls13,
            transforms: suites.iter().map(|s| suite_transform(*s)).collect(),
            sa: Vec::new(),
        },
    })
}

fn refused(outcome: StartOutcome) -> Body {
    Body::StartResponse(StartResponse { outcome })
}

/// A relay answer with nothing in it.
fn empty_relay() -> Body {
    Body::Relay(Relay { data: Vec::new() })
}

impl TlsSubstitute {
    /// S355: the key share, as the ClientHello (client) or the server's flight.
    fn keygen(
        &mut self,
        terminal: &TerminalId,
        p: &Provisioned,
        session: TlsSession,
        peer_message: Option<&[u8]>,
    ) -> (TlsSession, Result<Body, ErrorCode>) {
        let message = |m: Vec<u8>| {
            Ok(Body::KeyGenResponse(KeyGenResponse {
                message: Some(m),
                sealed: None,
                local_auth: None,
            }))
        };
        match (session, peer_message) {
            (TlsSession::Started(s), None) => {
                let conn = match self
                    .cached_client_config(terminal, p, &s.suites)
                    .and_then(|c| {
                        UnbufferedClientConnection::new(c, s.name.clone())
                            .map_err(|_| ErrorCode::Internal)
                    }) {
                    Ok(c) => c,
                    Err(code) => return (TlsSession::Started(s), Err(code)),
                };
                let mut h = Handshake {
                    conn: Conn::Client(conn),
                    incoming: Vec::new(),
                    denied: Arc::new(AtomicBool::new(false)),
                    flight: Vec::new(),
                };
                let mut hello = Vec::new();
                match h.run(&mut hello) {
                    Ok(Progress::Blocked) if !hello.is_empty() => {
                        self.counters.handshakes += 1;
                        (TlsSession::Handshaking(Box::new(h)), message(hello))
                    }
                    _ => (TlsSession::Refused, Err(ErrorCode::Internal)),
                }
            }
            // Server: the flight built at start.
            (TlsSession::Handshaking(mut h), None) if !h.flight.is_empty() => {
                let flight = core::mem::take(&mut h.flight);
                (TlsSession::Handshaking(h), message(flight))
            }
            // The S12 loop: a HelloRetryRequest (client) or the ClientHello that answers
            // ours (server) gives the next key share.
            (TlsSession::Handshaking(mut h), Some(records)) => {
                let mut out = Vec::new();
                match h.feed(records, &mut out) {
                    Ok((Progress::Blocked, taken)) if taken == records.len() && !out.is_empty() => {
                        (TlsSession::Handshaking(h), message(out))
                    }
                    _ => (TlsSession::Refused, Err(ErrorCode::BadRequest)),
                }
            }
            (other, _) => (other, Err(ErrorCode::OutOfState)),
        }
    }

    /// S353-S354: the peer's flight, record by record, until the handshake completes.
    fn authenticate(
        &mut self,
        mut h: Box<Handshake>,
        records: &[u8],
    ) -> (TlsSession, Result<Body, ErrorCode>) {
        if !h.flight.is_empty() {
            // The server's flight was never fetched: out of order.
            return (TlsSession::Handshaking(h), Err(ErrorCode::OutOfState));
        }
        let mut out = Vec::new();
        let answer = |auth, policy, out: Vec<u8>, consumed: Option<usize>| {
            Ok(Body::AuthResponse(AuthResponse {
                auth,
                policy,
                local_auth: (!out.is_empty()).then_some((0, out)),
                consumed: consumed.map(|n| n as u32),
            }))
        };
        match h.feed(records, &mut out) {
            Ok((Progress::Blocked, taken)) => (
                TlsSession::Handshaking(h),
                answer(
                    AuthResult::Incomplete,
                    PolicyResult::NotChecked,
                    out,
                    Some(taken),
                ),
            ),
            Ok((Progress::Complete, taken)) => {
                self.counters.authenticated += 1;
                if h.conn.resumed() {
                    self.counters.resumed += 1;
                }
                (
                    TlsSession::Authenticated(h),
                    answer(
                        AuthResult::Authenticated,
                        PolicyResult::Allowed,
                        out,
                        Some(taken),
                    ),
                )
            }
            Err(e) => {
                let (auth, policy) = verdict(&e, h.denied.load(Ordering::Relaxed));
                if auth == AuthResult::Authenticated {
                    self.counters.policy_refused += 1;
                } else {
                    self.counters.auth_refused += 1;
                }
                // `out` holds the alert rustls chose (bad_certificate, access_denied …),
                // protected as the handshake requires: the terminal sends it and closes.
                (TlsSession::Refused, answer(auth, policy, out, None))
            }
        }
    }

    fn sealed(&mut self, p: &Provisioned, at: Place, msg_type: u8, body: &KeyBody) -> Vec<u8> {
        seal(
            &p.profile.delegation_key,
            at.seal_context(msg_type),
            &body.encode(),
            &mut *self.rng,
        )
    }

    /// S357-S358: the traffic keys, sealed; the session keeps the kernel connection.
    fn release(
        &mut self,
        p: &Provisioned,
        at: Place,
        h: Box<Handshake>,
    ) -> (TlsSession, Result<Body, ErrorCode>) {
        match h.into_live() {
            Ok((body, live)) => {
                self.counters.keys_released += 1;
                let sealed = self.sealed(p, at, KEY_RESPONSE, &body);
                (
                    TlsSession::Established(Box::new(live)),
                    Ok(Body::KeyResponse(KeyResponse { sealed })),
                )
            }
            Err(_) => (TlsSession::Refused, Err(ErrorCode::Internal)),
        }
    }

    /// A post-handshake relay: a key update either way, a ticket, or the end.
    fn relay(
        &mut self,
        p: &Provisioned,
        at: Place,
        mut live: Box<Live>,
        data: &[u8],
    ) -> (TlsSession, Result<Body, ErrorCode>) {
        let Some((&kind, msg)) = data.split_first() else {
            return (TlsSession::Established(live), Err(ErrorCode::BadRequest));
        };
        // (send, receive): which directions move to their next key.
        let directions = match (kind, msg) {
            (RELAY_CLOSED, []) => return (TlsSession::Closed, Ok(empty_relay())),
            (RELAY_OWN_KEY_UPDATE, [0 | 1]) => (true, false),
            // KeyUpdate: type 24, length 1, request_update 0 or 1. A requested update
            // means the terminal answers with its own, so both directions move.
            (RELAY_PEER_MESSAGE, [24, 0, 0, 1, r @ (0 | 1)]) => (*r == 1, true),
            (RELAY_PEER_MESSAGE, [4, rest @ ..]) if rest.len() >= 3 => {
                let body = &rest[3..];
                let declared = (usize::from(rest[0]) << 16)
                    | (usize::from(rest[1]) << 8)
                    | usize::from(rest[2]);
                let r = match &mut live.kernel {
                    Kernel::Client(k) if declared == body.len() => {
                        k.handle_new_session_ticket(body)
                    }
                    // A server receives no tickets.
                    _ => Err(TlsLibError::HandshakeNotComplete),
                };
                return match r {
                    Ok(()) => {
                        self.counters.tickets += 1;
                        (TlsSession::Established(live), Ok(empty_relay()))
                    }
                    Err(_) => (TlsSession::Established(live), Err(ErrorCode::BadRequest)),
                };
            }
            _ => return (TlsSession::Established(live), Err(ErrorCode::BadRequest)),
        };
        let mut next = |send: bool| {
            live.kernel
                .update(send)
                .ok()
                .and_then(|s| traffic_keys(s, 0))
        };
        let send = if directions.0 { next(true) } else { None };
        let receive = if directions.1 { next(false) } else { None };
        if (directions.0 && send.is_none()) || (directions.1 && receive.is_none()) {
            return (TlsSession::Refused, Err(ErrorCode::Internal));
        }
        self.counters.key_updates += u64::from(directions.0) + u64::from(directions.1);
        let body = KeyBody {
            suite: live.suite,
            send,
            receive,
        };
        let sealed = self.sealed(p, at, RELAY, &body);
        (
            TlsSession::Established(live),
            Ok(Body::Relay(Relay { data: sealed })),
        )
    }
}

impl Substitute for TlsSubstitute {
    type Session = TlsSession;

    fn start(
        &mut self,
        now: Instant,
        terminal: &TerminalId,
        _at: Place,
        request: &StartRequest,
    ) -> Result<(TlsSession, Body), ErrorCode> {
        if request.protocol != Protocol::Tls13 {
            return Err(ErrorCode::UnsupportedProtocol);
        }
        let p = self.profile(terminal)?;
        self.tick(now);
        // S351: only suites the terminal can run itself.
        let suites = suites_of(&request.transforms);
        if suites.is_empty() {
            return Ok((TlsSession::Refused, refused(StartOutcome::NoProposalChosen)));
        }
        match request.role {
            Role::Initiator => self.client_start(terminal, request, suites),
            Role::Responder => self.server_start(terminal, &p, request, suites),
        }
    }

    fn step(
        &mut self,
        now: Instant,
        terminal: &TerminalId,
        at: Place,
        session: &mut TlsSession,
        request: &Body,
    ) -> Result<Body, ErrorCode> {
        let p = self.profile(terminal)?;
        self.tick(now);
        let current = core::mem::replace(session, TlsSession::Refused);
        let (next, answer) = match (current, request) {
            (s, Body::KeyGenRequest(r)) => self.keygen(terminal, &p, s, r.peer_message.as_deref()),
            (TlsSession::Handshaking(h), Body::AuthRequest(r)) => {
                if r.payloads.len() > MAX_PROTOCOL_BYTES {
                    (TlsSession::Handshaking(h), Err(ErrorCode::BadRequest))
                } else {
                    self.authenticate(h, &r.payloads)
                }
            }
            (TlsSession::Authenticated(h), Body::KeyRequest) => self.release(&p, at, h),
            (TlsSession::Established(live), Body::Relay(r)) => self.relay(&p, at, live, &r.data),
            (s, _) => (s, Err(ErrorCode::OutOfState)),
        };
        *session = next;
        answer
    }

    fn idle(&self, session: &TlsSession, default: Duration) -> Duration {
        match session {
            TlsSession::Established(_) => self.established_idle,
            _ => default,
        }
    }

    fn finished(&self, session: &TlsSession) -> bool {
        matches!(session, TlsSession::Closed)
    }
}

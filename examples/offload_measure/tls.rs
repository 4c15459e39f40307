//! The TLS 1.3 lines of the offload measurement (seed 004 over TLS): one delegated
//! handshake at the TLS [`Terminal`] against a full rustls client's handshake with the same
//! peer, and the terminal's record layer against rustls's own on 1,400-byte records.
//!
//! ```sh
//! cargo run --release --example offload_measure -- tls SIDE                 # under callgrind
//! cargo run --release --example offload_measure -- tls-record SUITE SIDE    # under callgrind
//! cargo run --release --example offload_measure -- tls-record-wall          # wall clock
//! ```
//!
//! **Handshake** (`tls SIDE`). The peer is an unmodified rustls 0.23 server (`ring`
//! provider, buffered connection) with an ECDSA P-256 leaf issued by an ECDSA P-256 CA,
//! TLS 1.3 only, TLS_AES_128_GCM_SHA256 only, no session tickets (so every handshake is a
//! full one, and a second connection is not resumed). The key exchange is rustls's
//! default: `ring`'s provider in rustls 0.23.48 lists secp384r1 first, so the client's one
//! key share is P-384, for the substitution server's rustls client (the delegated
//! handshake) as for a full client with the defaults. SIDE:
//!
//! - `full`: a rustls client (`ring`, default configuration, verifying the peer's chain
//!   against the CA with webpki): `ClientConnection::new` (its ClientHello and key share),
//!   every `write_tls`, `read_tls` and `process_new_packets` until the handshake is over.
//!   Building the `ClientConfig` (the root store) is set-up, not counted;
//! - `full-x25519`: the same client offering X25519 only (what a device doing its own
//!   TLS would choose; the peer takes it): the cheaper baseline;
//! - `terminal`: every call into the [`Terminal`] (`connect`, `handle_input`,
//!   `poll_output`, `poll_timeout`) for one connection up to its `Established` event and
//!   quiet, with its channel to the server already open (the steady state: a first
//!   connection opened the channel and was closed);
//! - `terminal-cold`: the same for the terminal's first connection, which opens the
//!   channel (its handshake with the server is inside the terminal's calls).
//!
//! The substitution server (`SubstitutionServer<TlsSubstitute>`, rustls on the terminal's
//! behalf), the peer and the in-process network are not counted.
//!
//! **Records** (`tls-record SUITE SIDE`, SUITE `aes128gcm` or `chacha20`): [`RECORDS`]
//! records of [`RECORD`] bytes of application data, each sealed by one side and opened by
//! the other, after [`WARM_UP`] uncounted ones. SIDE:
//!
//! - `terminal`: [`RecordLayer::seal_application`] into a reused buffer, then the other
//!   layer's [`RecordLayer::receive`] and [`RecordLayer::poll_event`] (the data comes out
//!   as a `RecordEvent::Data`);
//! - `rustls`: a rustls client and server (buffered connections, `ring`) after their
//!   handshake: `writer().write_all`, `write_tls` into a reused buffer, then the server's
//!   `read_tls`, `process_new_packets` and `reader().read_exact`;
//! - `rustls-bare`: rustls's record protection alone, with the connection's extracted
//!   traffic keys: the provider's `MessageEncrypter::encrypt` and `encode`, then
//!   `MessageDecrypter::decrypt` in place (what its unbuffered API runs per record).
//!
//! `tls-record-wall` runs the three sides natively, interleaved in rounds, and prints the
//! throughput of each and the terminal's ratio to rustls.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use deputy::keyx::tls::{Terminal, TerminalEvent, TlsConnId};
use deputy::sim::Sim;
use deputy::tls::{CipherSuite, RecordConfig, RecordEvent, RecordLayer, TrafficKeys};
use deputy::{Actor, Input, Instant, Output, StreamId};
use rustls::pki_types::{CertificateDer, ServerName};

// The world of tests/keyx_tls.rs: its PKI (ECDSA P-256, one CA), its server and terminal.
use super::tls_world::{
    FixedTime, PEER, PEER_NAME, Pki, Server, Spec, TLS_PORT, addr, peer_provider, pkcs8,
    server_actor, terminal_actor,
};
use super::{ALLOCATED_MEASURED, ChannelLink, group, held, measure, stream_local};

const NOW: Instant = Instant::ZERO;

/// Application data per record.
pub const RECORD: usize = 1400;
/// Records counted per run.
pub const RECORDS: usize = 1000;
/// Records sealed and opened before counting (buffers reach their size).
pub const WARM_UP: usize = 16;

// ------------------------------------------------------------------ the parties

/// The peer: TLS 1.3, `suite` only, the P-256 leaf, no tickets.
fn peer_config(pki: &Pki, suite: rustls::SupportedCipherSuite) -> Arc<rustls::ServerConfig> {
    let provider = peer_provider(&[suite.suite()]);
    let mut config = rustls::ServerConfig::builder_with_details(provider, Arc::new(FixedTime))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(pki.peer.der.clone())],
            pkcs8(&pki.peer),
        )
        .expect("peer certificate");
    config.send_tls13_tickets = 0;
    config.enable_secret_extraction = true;
    Arc::new(config)
}

/// A full rustls client: `ring`'s default provider (`x25519`: with X25519 as its only
/// group), TLS 1.3, the CA as its only root.
#[allow(deprecated)]
fn client_config(pki: &Pki, x25519: bool) -> Arc<rustls::ClientConfig> {
    let mut p = rustls::crypto::ring::default_provider();
    if x25519 {
        p.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    }
    let mut config = rustls::ClientConfig::builder_with_details(Arc::new(p), Arc::new(FixedTime))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    config.enable_secret_extraction = true;
    Arc::new(config)
}

fn peer_name() -> ServerName<'static> {
    ServerName::try_from(PEER_NAME).expect("name")
}

/// Feed `data` to a rustls connection (never measured when it is the peer's); what it
/// answers.
fn feed<S: rustls::SideData>(
    conn: &mut rustls::ConnectionCommon<S>,
    mut data: &[u8],
) -> Result<Vec<u8>, rustls::Error> {
    while !data.is_empty() {
        conn.read_tls(&mut data).expect("read_tls");
        conn.process_new_packets()?;
    }
    Ok(flush(conn))
}

fn flush<S: rustls::SideData>(conn: &mut rustls::ConnectionCommon<S>) -> Vec<u8> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls");
    }
    out
}

fn peer_addr() -> std::net::SocketAddr {
    addr(PEER, TLS_PORT)
}

/// The delegated world: the peer (rustls), the terminal and its server, and the
/// in-process network between them (direct, in order, no loss; time stands still).
struct World {
    terminal: Terminal,
    server: Server,
    peer: Arc<rustls::ServerConfig>,
    /// The peer's connections, by the terminal's stream id.
    peer_conns: BTreeMap<StreamId, rustls::ServerConnection>,
    /// The terminal's stream to the server.
    channel: ChannelLink,
    /// Whether the terminal's calls are measured now.
    on: bool,
    established: Vec<(TlsConnId, CipherSuite)>,
    closed: usize,
    failures: Vec<String>,
}

impl World {
    fn new() -> World {
        let (pki, spec, sim) = (Pki::new(), Spec::default(), Sim::new(1));
        World {
            terminal: terminal_actor(&sim, &spec),
            server: server_actor(&sim, &spec, &pki),
            peer: peer_config(
                &pki,
                rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            ),
            peer_conns: BTreeMap::new(),
            channel: ChannelLink::default(),
            on: false,
            established: Vec::new(),
            closed: 0,
            failures: Vec::new(),
        }
    }

    /// One delegated handshake with the peer, to the end.
    fn handshake(&mut self) -> TlsConnId {
        let on = self.on;
        let t = &mut self.terminal;
        let conn = measure(on, || t.connect(NOW, peer_addr(), PEER_NAME)).expect("connect");
        self.pump();
        assert!(self.failures.is_empty(), "{:?}", self.failures);
        let &(got, suite) = self.established.last().expect("established");
        assert_eq!(got, conn);
        assert_eq!(suite, CipherSuite::Aes128GcmSha256);
        assert!(
            !self.peer_conns[&conn.0].is_handshaking(),
            "the peer's handshake is over"
        );
        conn
    }

    /// Close a connection (close_notify, the server forgets the session).
    fn close(&mut self, conn: TlsConnId) {
        self.terminal.close(NOW, conn).expect("close");
        self.pump();
        assert!(self.failures.is_empty(), "{:?}", self.failures);
    }

    fn pump(&mut self) {
        loop {
            let mut moved = self.drain_terminal();
            moved |= self.drain_server();
            let (on, t) = (self.on, &self.terminal);
            measure(on, || t.poll_timeout());
            if !moved {
                return;
            }
        }
    }

    fn terminal_input(&mut self, input: Input<'_>) {
        let (on, t) = (self.on, &mut self.terminal);
        measure(on, || t.handle_input(NOW, input)).expect("terminal input");
    }

    fn drain_terminal(&mut self) -> bool {
        let mut moved = false;
        loop {
            let (on, t) = (self.on, &mut self.terminal);
            let Some(o) = measure(on, || t.poll_output()) else {
                return moved;
            };
            moved = true;
            match o {
                Output::Connect { id, remote, .. } if remote == super::server_addr() => {
                    (self.channel).connect(id, &mut self.server, &mut self.terminal, on);
                }
                Output::Connect { id, remote, .. } => {
                    assert_eq!(remote, peer_addr());
                    let conn = rustls::ServerConnection::new(self.peer.clone()).expect("peer");
                    self.peer_conns.insert(id, conn);
                    self.terminal_input(Input::StreamConnected {
                        id,
                        local: stream_local(),
                    });
                }
                Output::StreamSend { id, data } if self.channel.is(id) => {
                    self.channel.send(id, &data, &mut self.server);
                }
                Output::StreamSend { id, data } => {
                    let peer = self.peer_conns.get_mut(&id).expect("peer stream");
                    match feed(peer, &data) {
                        Ok(answer) if !answer.is_empty() => {
                            self.terminal_input(Input::StreamData { id, data: &answer });
                        }
                        Ok(_) => {}
                        Err(e) => self.failures.push(format!("peer: {e}")),
                    }
                }
                Output::StreamClose { id } if self.channel.is(id) => {
                    self.channel.close(id, &mut self.server);
                }
                Output::StreamClose { id } => {
                    // The terminal closed its end: the peer reads its close_notify and the
                    // end of the stream; nothing comes back.
                    self.peer_conns.remove(&id);
                }
                Output::Event(TerminalEvent::Established { conn, suite }) => {
                    self.established.push((conn, suite));
                }
                Output::Event(TerminalEvent::Closed { .. }) => self.closed += 1,
                Output::Event(TerminalEvent::Failed { reason, .. }) => {
                    self.failures.push(format!("terminal: {reason:?}"));
                }
                Output::Event(TerminalEvent::ServerLost) => {
                    self.failures.push("terminal: server lost".into());
                }
                _ => {}
            }
        }
    }

    /// The server's outputs (never measured): stream bytes back to the terminal.
    fn drain_server(&mut self) -> bool {
        let failures = &mut self.failures;
        (self.channel).drain_server(&mut self.server, &mut self.terminal, self.on, failures)
    }
}

/// A full rustls client's handshake with the peer; `on`: its calls are measured. The
/// configuration comes back too, so that what the connection holds can be told apart.
fn full_handshake(on: bool, x25519: bool) -> (rustls::ClientConnection, Arc<rustls::ClientConfig>) {
    let pki = Pki::new();
    let config = client_config(&pki, x25519);
    let shared = config.clone();
    let mut peer = rustls::ServerConnection::new(peer_config(
        &pki,
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    ))
    .expect("peer");
    let mut client =
        measure(on, || rustls::ClientConnection::new(config, peer_name())).expect("client");
    let mut out = measure(on, || flush(&mut client));
    loop {
        let answer = feed(&mut peer, &out).expect("peer");
        if answer.is_empty() {
            break;
        }
        out = measure(on, || feed(&mut client, &answer)).expect("client");
    }
    assert!(
        !client.is_handshaking() && !peer.is_handshaking(),
        "client {} peer {}",
        client.is_handshaking(),
        peer.is_handshaking()
    );
    assert_eq!(
        client.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    (client, shared)
}

/// One callgrind run of the handshake: `side`'s work goes through the measured function.
pub fn run_handshake(side: &str) -> Result<(), String> {
    ALLOCATED_MEASURED.store(0, Ordering::Relaxed);
    match side {
        "full" | "full-x25519" => {
            full_handshake(true, side == "full-x25519");
        }
        "terminal" | "terminal-cold" => {
            let mut w = World::new();
            if side == "terminal" {
                // A first connection opens the channel; it is closed again.
                let first = w.handshake();
                w.close(first);
                assert_eq!(w.closed, 1);
                assert!(w.channel.stream.is_some(), "the channel stays open");
            }
            w.on = true;
            ALLOCATED_MEASURED.store(0, Ordering::Relaxed);
            w.handshake();
            w.on = false;
        }
        other => return Err(format!("unknown side {other}")),
    }
    println!(
        "tls {side}: handshake done, {} bytes allocated in measured calls",
        ALLOCATED_MEASURED.load(Ordering::Relaxed)
    );
    Ok(())
}

/// What a terminal holds for one delegated TLS connection, and a rustls client for its.
pub fn heap() {
    // The terminal with its channel open (its first connection closed), with and
    // without a second connection established.
    let mut idle = World::new();
    let first = idle.handshake();
    idle.close(first);
    let terminal_idle = held(idle.terminal);

    let mut one = World::new();
    let first = one.handshake();
    one.close(first);
    one.on = true;
    ALLOCATED_MEASURED.store(0, Ordering::Relaxed);
    let conn = one.handshake();
    let terminal_churn = ALLOCATED_MEASURED.load(Ordering::Relaxed);
    assert!(one.terminal.record_layer(conn).is_some());
    assert_eq!(one.terminal.connection_count(), 1);
    let terminal_one = held(one.terminal);

    ALLOCATED_MEASURED.store(0, Ordering::Relaxed);
    let (client, config) = full_handshake(true, false);
    let client_churn = ALLOCATED_MEASURED.load(Ordering::Relaxed);
    // The connection alone: its configuration (roots, provider) is shared by all.
    let client_held = held(client);
    drop(config);

    println!(
        "tls: terminal heap per connection {} bytes (the terminal holds {} with only its \
         channel open), rustls client {} bytes per connection; allocated during the \
         handshake: terminal {}, rustls client {}",
        group(terminal_one as i64 - terminal_idle as i64),
        group(terminal_idle as i64),
        group(client_held as i64),
        group(terminal_churn as i64),
        group(client_churn as i64),
    );
}

// ------------------------------------------------------------------ records

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordSuite {
    Aes128Gcm,
    Chacha20,
}

impl RecordSuite {
    pub const ALL: [RecordSuite; 2] = [RecordSuite::Aes128Gcm, RecordSuite::Chacha20];

    pub fn name(self) -> &'static str {
        match self {
            RecordSuite::Aes128Gcm => "aes128gcm",
            RecordSuite::Chacha20 => "chacha20",
        }
    }

    pub fn parse(s: &str) -> Option<RecordSuite> {
        RecordSuite::ALL.into_iter().find(|x| x.name() == s)
    }

    fn ours(self) -> CipherSuite {
        match self {
            RecordSuite::Aes128Gcm => CipherSuite::Aes128GcmSha256,
            RecordSuite::Chacha20 => CipherSuite::Chacha20Poly1305Sha256,
        }
    }

    fn rustls(self) -> rustls::SupportedCipherSuite {
        use rustls::crypto::ring::cipher_suite as cs;
        match self {
            RecordSuite::Aes128Gcm => cs::TLS13_AES_128_GCM_SHA256,
            RecordSuite::Chacha20 => cs::TLS13_CHACHA20_POLY1305_SHA256,
        }
    }
}

/// One side of the record comparison: seals a record of its argument and opens it again.
pub trait RecordPath {
    /// Seal `data` as one record and open it at the other end; the plaintext's length.
    fn round(&mut self, data: &[u8]) -> usize;
}

/// The terminal's record layer: two of them, each other's peer.
struct Terminals {
    tx: RecordLayer,
    rx: RecordLayer,
    wire: Vec<u8>,
}

impl Terminals {
    fn new(suite: RecordSuite) -> Terminals {
        let s = suite.ours();
        let keys = |b: u8| TrafficKeys::new(s, &vec![b; s.key_len()], [b; 12], 0).expect("keys");
        Terminals {
            tx: RecordLayer::new(RecordConfig::default(), keys(1), keys(2)).expect("layer"),
            rx: RecordLayer::new(RecordConfig::default(), keys(2), keys(1)).expect("layer"),
            wire: Vec::new(),
        }
    }
}

impl RecordPath for Terminals {
    fn round(&mut self, data: &[u8]) -> usize {
        self.wire.clear();
        self.tx
            .seal_application(data, &mut self.wire)
            .expect("seal");
        self.rx.receive(&self.wire).expect("open");
        match self.rx.poll_event() {
            Some(RecordEvent::Data(d)) => d.len(),
            other => panic!("expected data, got {other:?}"),
        }
    }
}

/// A rustls client and server (buffered connections) after their handshake.
struct Rustls {
    client: rustls::ClientConnection,
    server: rustls::ServerConnection,
    wire: Vec<u8>,
    plain: Vec<u8>,
}

fn rustls_pair(suite: RecordSuite) -> (rustls::ClientConnection, rustls::ServerConnection) {
    let pki = Pki::new();
    let mut client =
        rustls::ClientConnection::new(client_config(&pki, false), peer_name()).expect("c");
    let mut server =
        rustls::ServerConnection::new(peer_config(&pki, suite.rustls())).expect("server");
    let mut out = flush(&mut client);
    loop {
        let answer = feed(&mut server, &out).expect("server");
        if answer.is_empty() {
            break;
        }
        out = feed(&mut client, &answer).expect("client");
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());
    assert_eq!(
        client.negotiated_cipher_suite().map(|s| s.suite()),
        Some(suite.rustls().suite())
    );
    (client, server)
}

impl RecordPath for Rustls {
    fn round(&mut self, data: &[u8]) -> usize {
        self.wire.clear();
        self.client.writer().write_all(data).expect("write");
        self.client.write_tls(&mut self.wire).expect("write_tls");
        let mut wire = &self.wire[..];
        while !wire.is_empty() {
            self.server.read_tls(&mut wire).expect("read_tls");
        }
        self.server.process_new_packets().expect("open");
        self.plain.resize(data.len(), 0);
        self.server
            .reader()
            .read_exact(&mut self.plain)
            .expect("read");
        self.plain.len()
    }
}

/// rustls's record protection alone, with a connection's traffic keys.
struct Bare {
    encrypter: Box<dyn rustls::crypto::cipher::MessageEncrypter>,
    decrypter: Box<dyn rustls::crypto::cipher::MessageDecrypter>,
    seq: u64,
    wire: Vec<u8>,
}

impl Bare {
    fn new(suite: RecordSuite) -> Bare {
        use rustls::ConnectionTrafficSecrets as S;
        let (client, server) = rustls_pair(suite);
        let tx = client.dangerous_extract_secrets().expect("secrets").tx;
        let rx = server.dangerous_extract_secrets().expect("secrets").rx;
        let aead = suite.rustls().tls13().expect("TLS 1.3").aead_alg;
        let (tx, rx) = match (tx.1, rx.1) {
            (S::Aes128Gcm { key: k1, iv: i1 }, S::Aes128Gcm { key: k2, iv: i2 })
            | (S::Chacha20Poly1305 { key: k1, iv: i1 }, S::Chacha20Poly1305 { key: k2, iv: i2 }) => {
                ((k1, i1), (k2, i2))
            }
            _ => panic!("unexpected secrets"),
        };
        Bare {
            encrypter: aead.encrypter(tx.0, tx.1),
            decrypter: aead.decrypter(rx.0, rx.1),
            seq: 0,
            wire: Vec::new(),
        }
    }
}

impl RecordPath for Bare {
    fn round(&mut self, data: &[u8]) -> usize {
        use rustls::crypto::cipher::{InboundOpaqueMessage, OutboundChunks, OutboundPlainMessage};
        let message = OutboundPlainMessage {
            typ: rustls::ContentType::ApplicationData,
            version: rustls::ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(data),
        };
        let sealed = self.encrypter.encrypt(message, self.seq).expect("seal");
        self.wire = sealed.encode();
        let body = &mut self.wire[5..];
        let opened = self
            .decrypter
            .decrypt(
                InboundOpaqueMessage::new(
                    rustls::ContentType::ApplicationData,
                    rustls::ProtocolVersion::TLSv1_2,
                    body,
                ),
                self.seq,
            )
            .expect("open");
        self.seq += 1;
        assert_eq!(opened.typ, rustls::ContentType::ApplicationData);
        opened.payload.len()
    }
}

fn record_path(suite: RecordSuite, side: &str) -> Result<Box<dyn RecordPath>, String> {
    Ok(match side {
        "terminal" => Box::new(Terminals::new(suite)),
        "rustls" => {
            let (client, server) = rustls_pair(suite);
            Box::new(Rustls {
                client,
                server,
                wire: Vec::new(),
                plain: Vec::new(),
            })
        }
        "rustls-bare" => Box::new(Bare::new(suite)),
        other => return Err(format!("unknown side {other}")),
    })
}

fn payload() -> Vec<u8> {
    (0..RECORD).map(|i| i as u8).collect()
}

/// One callgrind run of the records: `side`'s seal and open of [`RECORDS`] records.
pub fn run_records(suite: RecordSuite, side: &str) -> Result<(), String> {
    let mut path = record_path(suite, side)?;
    let data = payload();
    for _ in 0..WARM_UP {
        assert_eq!(path.round(&data), RECORD);
    }
    ALLOCATED_MEASURED.store(0, Ordering::Relaxed);
    measure(true, || {
        for _ in 0..RECORDS {
            assert_eq!(path.round(&data), RECORD);
        }
    });
    println!(
        "tls-record {} {side}: {RECORDS} records of {RECORD} bytes, {} bytes allocated",
        suite.name(),
        ALLOCATED_MEASURED.load(Ordering::Relaxed)
    );
    Ok(())
}

/// The three sides natively, interleaved: `rounds` rounds of `RECORDS` records each.
pub fn wall(rounds: usize) {
    use std::time::Instant as Clock;
    let data = payload();
    for suite in RecordSuite::ALL {
        let sides = ["terminal", "rustls", "rustls-bare"];
        let mut paths: Vec<Box<dyn RecordPath>> = sides
            .iter()
            .map(|s| record_path(suite, s).expect("side"))
            .collect();
        let mut best = [f64::INFINITY; 3];
        let mut ratios: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds + 1 {
            let mut t = [0.0; 3];
            for (i, path) in paths.iter_mut().enumerate() {
                let start = Clock::now();
                for _ in 0..RECORDS {
                    assert_eq!(path.round(&data), RECORD);
                }
                t[i] = start.elapsed().as_secs_f64();
            }
            if round == 0 {
                continue; // warm-up round
            }
            for i in 0..3 {
                best[i] = best[i].min(t[i]);
            }
            ratios[0].push(t[1] / t[0]);
            ratios[1].push(t[2] / t[0]);
        }
        let mbps = |t: f64| (RECORDS * RECORD) as f64 / t / 1e6;
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "tls records {} wall clock ({rounds} interleaved rounds of {RECORDS} records of \
             {RECORD} B sealed and opened; best round): terminal {:.0} MB/s, rustls {:.0} MB/s, \
             rustls's record protection alone {:.0} MB/s; terminal throughput {:.3}× rustls's \
             ({:.3}× the bare protection; medians of the rounds' ratios {:.3}×, {:.3}×)",
            suite.name(),
            mbps(best[0]),
            mbps(best[1]),
            mbps(best[2]),
            best[1] / best[0],
            best[2] / best[0],
            median(&mut ratios[0]),
            median(&mut ratios[1]),
        );
    }
}

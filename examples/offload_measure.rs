//! What the seed 004 terminal saves (issue 8's measurement): one IKE_SA_INIT + IKE_AUTH +
//! Child SA, done by a delegating [`Terminal`] (with its substitution server) and by a full
//! local deputy endpoint (the plain [`Responder`] with its own credential), against the same
//! peer (deputy's plain [`Initiator`], which starts the exchange).
//!
//! ```sh
//! scripts/offload.sh                                           # the whole measurement
//! cargo run --release --example offload_measure -- SUITE SIDE  # one run (under callgrind)
//! cargo run --release --example offload_measure -- heap        # heap per delegated IKE SA
//! ```
//!
//! The TLS 1.3 lines (`tls`, `tls-record`, `tls-record-wall`, and the TLS line of `heap`)
//! are in `offload_measure/tls.rs`; they share this file's measured function and counting
//! allocator.
//!
//! SUITE is `x25519-psk`, `x25519-cert` (ECDSA P-256 certificates) or `modp2048-cert`. SIDE
//! selects whose work goes through [`deputy_offload_measured`], the one function callgrind
//! collects in (`--toggle-collect=deputy_offload_measured --collect-atstart=no`):
//!
//! - `endpoint`: every call into the plain Responder (`handle_input`, `poll_output`,
//!   `poll_timeout`) and the installation of its Child SA into a `DataPlane` (the terminal
//!   installs into its own data plane inside its calls);
//! - `terminal`: every call into the Terminal (`handle_input`, `poll_output`,
//!   `poll_timeout`) for the exchange, with its channel to the server already open (the
//!   steady state: a terminal keeps its channel);
//! - `terminal-cold`: the same plus the channel's own set-up (`connect` and the handshake's
//!   calls).
//!
//! Nothing else is collected: the peer, the server, the in-process "network" that moves
//! datagrams and stream bytes between them, and the actors' construction are outside.
//! The network is direct: datagrams go straight to their receiver, the terminal's
//! `Output::Connect` / `StreamSend` / `StreamClose` become the server's `StreamAccepted` /
//! `StreamData` / `StreamClosed` (and `StreamConnected` back), in order, with no loss.
//! Time stands still (no timer is due), so no retransmission happens.
//!
//! `heap` counts, with a counting global allocator, the bytes a Terminal frees when it is
//! dropped after one established IKE SA (Child SA installed) minus the bytes it frees when
//! dropped with only its channel open: what one delegated IKE SA costs it to hold. The
//! same for the plain Responder (with its data plane) against a fresh one.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use deputy::channel::{ChannelServerConfig, ClientConfig, Psk, ServerConfig};
use deputy::crypto::dh::Group;
use deputy::ikev2::auth::{AuthKeyDb, Credential, Signer};
use deputy::ikev2::{
    Identity, IkeConfig, IkeEvent, IkeProposal, Initiator, InitiatorConfig, Responder,
    ResponderConfig, SecretBytes,
};
use deputy::ipsec::{
    Action, ChildSa, DataPlane, DataPlaneConfig, Direction as Dir, Policy, Selector,
};
use deputy::keyx::ike::{IkeProfile, IkeSubstitute, Terminal, TerminalConfig, TerminalEvent};
use deputy::keyx::{
    Bounds, DelegationKey, Direction, PeerPattern, PolicyDb, ServerEvent, SubstitutionServer,
};
use deputy::{Actor, Input, Instant, Output, StreamId, Transmit, UnixTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

#[allow(dead_code)]
#[path = "../tests/common/certs.rs"]
mod certs;
#[path = "offload_measure/tls.rs"]
mod tls;
#[path = "../tests/common/tls.rs"]
mod tls_world;

// ------------------------------------------------------------------ what is measured

/// The one function callgrind collects in: everything the measured side does runs inside
/// it, nothing else does. Never nested.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn deputy_offload_measured(f: &mut dyn FnMut()) {
    MEASURING.store(true, Ordering::Relaxed);
    f();
    MEASURING.store(false, Ordering::Relaxed);
}

/// Run `f`, inside [`deputy_offload_measured`] when `on`.
fn measure<R>(on: bool, f: impl FnOnce() -> R) -> R {
    if !on {
        return f();
    }
    let mut f = Some(f);
    let mut r = None;
    deputy_offload_measured(&mut || r = f.take().map(|f| f()));
    r.expect("measured closure ran")
}

// ------------------------------------------------------------------ counting allocator

static MEASURING: AtomicBool = AtomicBool::new(false);
/// Bytes live (requested sizes, not the allocator's overhead).
static LIVE: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated inside measured calls (churn, not what stays).
static ALLOCATED_MEASURED: AtomicU64 = AtomicU64::new(0);

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
            note_alloc(new_size);
        }
        p
    }
}

fn note_alloc(size: usize) {
    LIVE.fetch_add(size as u64, Ordering::Relaxed);
    if MEASURING.load(Ordering::Relaxed) {
        ALLOCATED_MEASURED.fetch_add(size as u64, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The heap bytes `x` owns: what dropping it frees.
fn held<T>(x: T) -> u64 {
    let before = LIVE.load(Ordering::Relaxed);
    drop(x);
    before - LIVE.load(Ordering::Relaxed)
}

// ------------------------------------------------------------------ the three parties

const ANCHOR: UnixTime = UnixTime(1_800_000_000);
const NOW: Instant = Instant::ZERO;
const TERMINAL_NAME: &str = "terminal-1";
const PEER_ID: &str = "peer.example";
const LOCAL_ID: &str = "terminal.example";
const IKE_PSK: &[u8] = b"ike psk between peer and terminal";
const CHANNEL_PSK: &[u8] = b"pre-arranged key, terminal<->server";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn peer_addr() -> SocketAddr {
    addr("192.0.2.10:500")
}
fn local_addr() -> SocketAddr {
    addr("192.0.2.20:500")
}
fn server_addr() -> SocketAddr {
    addr("192.0.2.30:7040")
}
/// The terminal's end of its stream to the server.
fn stream_local() -> SocketAddr {
    addr("192.0.2.20:40000")
}

fn rng(seed: u64) -> deputy::Rng {
    Box::new(ChaCha20Rng::seed_from_u64(seed))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Suite {
    X25519Psk,
    X25519Cert,
    Modp2048Cert,
}

impl Suite {
    const ALL: [Suite; 3] = [Suite::X25519Psk, Suite::X25519Cert, Suite::Modp2048Cert];

    fn name(self) -> &'static str {
        match self {
            Suite::X25519Psk => "x25519-psk",
            Suite::X25519Cert => "x25519-cert",
            Suite::Modp2048Cert => "modp2048-cert",
        }
    }

    fn parse(s: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|x| x.name() == s)
    }

    fn group(self) -> Group {
        match self {
            Suite::Modp2048Cert => Group::Modp2048,
            _ => Group::X25519,
        }
    }
}

/// The credentials of one suite: the peer's IKE configuration, and what the local side
/// (the plain Responder, or the server for the terminal) acts with and trusts.
struct Credentials {
    peer: IkeConfig,
    local: Credential,
    local_db: AuthKeyDb,
}

fn credentials(suite: Suite) -> Credentials {
    let (peer, local, local_db) = if suite == Suite::X25519Psk {
        let mut db = AuthKeyDb::new();
        db.set_any_peer_psk(Some(IKE_PSK));
        (
            IkeConfig::new(Identity::Fqdn(PEER_ID.into()), IKE_PSK),
            Credential::Psk(SecretBytes::from_slice(IKE_PSK)),
            db,
        )
    } else {
        use certs::{Alg, leaf, root};
        let ca = root(Alg::P256, 20, "CN=offload CA");
        let peer_cert = leaf(Alg::P256, 22, PEER_ID, &ca);
        let local_cert = leaf(Alg::P256, 21, LOCAL_ID, &ca);
        let signer = |l: &certs::Issued| Signer::new(l.key.clone(), vec![l.der.clone()]).unwrap();
        let db = || {
            let mut db = AuthKeyDb::new();
            db.add_trust_anchor(&ca.der).unwrap();
            db
        };
        (
            IkeConfig::with_certificate(
                Identity::Fqdn(PEER_ID.into()),
                signer(&peer_cert),
                db(),
                ANCHOR,
            ),
            Credential::Signature(signer(&local_cert)),
            db(),
        )
    };
    let mut peer = peer;
    // The peer offers only this suite's group, with AES-128-CBC/HMAC-SHA-256 (the first
    // default proposal of every side).
    peer.ike_proposals = vec![IkeProposal::aes128_sha256(&[suite.group()])];
    Credentials {
        peer,
        local,
        local_db,
    }
}

fn data_plane(seed: u64) -> DataPlane {
    let mut plane = DataPlane::new(DataPlaneConfig::default(), rng(seed)).unwrap();
    plane
        .add_policy(Policy::new(
            Selector::parse("0.0.0.0/0", "0.0.0.0/0").unwrap(),
            Dir::Both,
            Action::Protect,
        ))
        .unwrap();
    plane
}

/// The in-process stream between a terminal and its substitution server: the terminal's
/// id for it and the server's. Its own work is not measured; the terminal's calls are,
/// when `on`.
#[derive(Default)]
struct ChannelLink {
    stream: Option<(StreamId, StreamId)>,
    accepted: u64,
}

impl ChannelLink {
    /// Whether `id` (the terminal's) is this stream.
    fn is(&self, id: StreamId) -> bool {
        self.stream.is_some_and(|s| s.0 == id)
    }

    /// The terminal's `Connect` to the server: the server accepts, the terminal hears it
    /// connected.
    fn connect(
        &mut self,
        id: StreamId,
        server: &mut impl Actor,
        terminal: &mut impl Actor,
        on: bool,
    ) {
        self.accepted += 1;
        let accepted = StreamId::inbound(self.accepted);
        self.stream = Some((id, accepted));
        let input = Input::StreamAccepted {
            id: accepted,
            local: server_addr(),
            remote: stream_local(),
        };
        server.handle_input(NOW, input).unwrap();
        let connected = Input::StreamConnected {
            id,
            local: stream_local(),
        };
        measure(on, || terminal.handle_input(NOW, connected)).unwrap();
    }

    /// The terminal's `StreamSend` on this stream.
    fn send(&mut self, id: StreamId, data: &[u8], server: &mut impl Actor) {
        let (_, accepted) = self.stream.filter(|s| s.0 == id).unwrap();
        let input = Input::StreamData { id: accepted, data };
        server.handle_input(NOW, input).unwrap();
    }

    /// The terminal's `StreamClose` of this stream.
    fn close(&mut self, id: StreamId, server: &mut impl Actor) {
        let (_, accepted) = self.stream.filter(|s| s.0 == id).unwrap();
        self.stream = None;
        server
            .handle_input(NOW, Input::StreamClosed { id: accepted })
            .unwrap();
    }

    /// The server's outputs: stream bytes back to the terminal. Whether anything moved.
    fn drain_server(
        &mut self,
        server: &mut impl Actor<Event = ServerEvent>,
        terminal: &mut impl Actor,
        on: bool,
        failures: &mut Vec<String>,
    ) -> bool {
        let mut moved = false;
        while let Some(o) = server.poll_output() {
            moved = true;
            match o {
                Output::StreamSend { id, data } => {
                    let (ours, _) = self.stream.filter(|s| s.1 == id).unwrap();
                    let input = Input::StreamData {
                        id: ours,
                        data: &data,
                    };
                    measure(on, || terminal.handle_input(NOW, input)).unwrap();
                }
                Output::StreamClose { id } => {
                    let (ours, _) = self.stream.filter(|s| s.1 == id).unwrap();
                    self.stream = None;
                    let input = Input::StreamClosed { id: ours };
                    measure(on, || terminal.handle_input(NOW, input)).unwrap();
                }
                Output::Event(ServerEvent::ChannelFailed { .. }) => {
                    failures.push("server: channel failed".into());
                }
                _ => {}
            }
        }
        moved
    }
}

type Server = SubstitutionServer<IkeSubstitute>;

/// The local side: a full endpoint, or a terminal with its server.
enum Local {
    Endpoint {
        responder: Box<Responder>,
        plane: Box<DataPlane>,
    },
    Delegated {
        terminal: Box<Terminal>,
        server: Box<Server>,
    },
}

/// One measurement world: the peer and the local side, with the in-process network.
struct World {
    peer: Initiator,
    local: Local,
    /// Whether the local side's calls are measured now.
    on: bool,
    /// The stream the terminal opened to the server.
    channel: ChannelLink,
    peer_child: Option<ChildSa>,
    local_child: Option<ChildSa>,
    server_connected: bool,
    failures: Vec<String>,
}

impl World {
    fn new(suite: Suite, delegated: bool) -> World {
        let c = credentials(suite);
        let peer = Initiator::new(
            InitiatorConfig {
                ike: c.peer,
                local: peer_addr(),
                remote: local_addr(),
            },
            rng(1),
        )
        .unwrap();
        let local = if delegated {
            Local::Delegated {
                terminal: Box::new(terminal()),
                server: Box::new(server(c.local, c.local_db)),
            }
        } else {
            let ike = IkeConfig::with_credential(
                Identity::Fqdn(LOCAL_ID.into()),
                c.local,
                c.local_db,
                ANCHOR,
            );
            Local::Endpoint {
                responder: Box::new(
                    Responder::new(ResponderConfig::new(ike), rng(2), NOW).unwrap(),
                ),
                plane: Box::new(data_plane(3)),
            }
        };
        World {
            peer,
            local,
            on: false,
            channel: ChannelLink::default(),
            peer_child: None,
            local_child: None,
            server_connected: false,
            failures: Vec::new(),
        }
    }

    /// S1-S2: the terminal opens its channel to the server.
    fn open_channel(&mut self) {
        let on = self.on;
        if let Local::Delegated { terminal, .. } = &mut self.local {
            measure(on, || terminal.connect(NOW)).unwrap();
        }
        self.pump();
        assert!(self.server_connected, "channel to the server not up");
    }

    /// The peer starts the exchange; run it to the end.
    fn exchange(&mut self) {
        self.peer.start(NOW).unwrap();
        self.pump();
        assert!(self.failures.is_empty(), "{:?}", self.failures);
        let (p, l) = (
            self.peer_child.as_ref().expect("peer Child SA"),
            self.local_child.as_ref().expect("local Child SA"),
        );
        assert_eq!(p.keys_out, l.keys_in, "Child SA keys differ");
        assert_eq!(p.keys_in, l.keys_out, "Child SA keys differ");
    }

    /// Move everything until every party is quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(o) = self.peer.poll_output() {
                moved = true;
                match o {
                    Output::Transmit(t) => self.local_input(&t),
                    Output::Event(IkeEvent::ChildSaEstablished { child, .. }) => {
                        self.peer_child = Some(*child);
                    }
                    Output::Event(IkeEvent::Failed { reason, .. }) => {
                        self.failures.push(format!("peer: {reason:?}"));
                    }
                    _ => {}
                }
            }
            moved |= self.drain_local();
            moved |= self.drain_server();
            let on = self.on;
            match &mut self.local {
                Local::Endpoint { responder, .. } => {
                    measure(on, || responder.poll_timeout());
                }
                Local::Delegated { terminal, .. } => {
                    measure(on, || terminal.poll_timeout());
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn local_input(&mut self, t: &Transmit) {
        let on = self.on;
        let input = Input::Datagram {
            from: t.from,
            to: t.to,
            data: &t.data,
        };
        let r = match &mut self.local {
            Local::Endpoint { responder, .. } => measure(on, || responder.handle_input(NOW, input)),
            Local::Delegated { terminal, .. } => measure(on, || terminal.handle_input(NOW, input)),
        };
        r.unwrap();
    }

    /// The local side's outputs, each `poll_output` measured, each carried out outside.
    fn drain_local(&mut self) -> bool {
        let on = self.on;
        let mut moved = false;
        loop {
            match &mut self.local {
                Local::Endpoint { responder, plane } => {
                    let Some(o) = measure(on, || responder.poll_output()) else {
                        return moved;
                    };
                    moved = true;
                    match o {
                        Output::Transmit(t) => self.peer_input(&t),
                        Output::Event(IkeEvent::ChildSaEstablished { child, .. }) => {
                            // The application's part of a full endpoint: install it.
                            let c = (*child).clone();
                            measure(on, || plane.install(NOW, *child)).unwrap();
                            self.local_child = Some(c);
                        }
                        Output::Event(IkeEvent::Failed { reason, .. }) => {
                            self.failures.push(format!("responder: {reason:?}"));
                        }
                        _ => {}
                    }
                }
                Local::Delegated { terminal, server } => {
                    let Some(o) = measure(on, || terminal.poll_output()) else {
                        return moved;
                    };
                    moved = true;
                    match o {
                        Output::Transmit(t) => self.peer_input(&t),
                        Output::Connect { id, remote, .. } => {
                            assert_eq!(remote, server_addr());
                            self.channel
                                .connect(id, server.as_mut(), terminal.as_mut(), on);
                        }
                        Output::StreamSend { id, data } => {
                            self.channel.send(id, &data, server.as_mut());
                        }
                        Output::StreamClose { id } => self.channel.close(id, server.as_mut()),
                        Output::Event(TerminalEvent::ServerConnected) => {
                            self.server_connected = true;
                        }
                        Output::Event(TerminalEvent::Ike(IkeEvent::ChildSaEstablished {
                            child,
                            ..
                        })) => {
                            // Already installed into the terminal's data plane.
                            self.local_child = Some(*child);
                        }
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
        }
    }

    /// The server's outputs (never measured): stream bytes back to the terminal.
    fn drain_server(&mut self) -> bool {
        let Local::Delegated { terminal, server } = &mut self.local else {
            return false;
        };
        let failures = &mut self.failures;
        (self.channel).drain_server(server.as_mut(), terminal.as_mut(), self.on, failures)
    }

    fn peer_input(&mut self, t: &Transmit) {
        self.peer
            .handle_input(
                NOW,
                Input::Datagram {
                    from: t.from,
                    to: t.to,
                    data: &t.data,
                },
            )
            .unwrap();
    }
}

fn terminal() -> Terminal {
    let psk = Psk::new(TERMINAL_NAME, CHANNEL_PSK).unwrap();
    let channel = Arc::new(ClientConfig::with_psk(psk, ANCHOR));
    let cfg = TerminalConfig::new(local_addr(), server_addr(), channel, delegation_key());
    Terminal::new(cfg, data_plane(4), rng(5), rng(6), NOW).unwrap()
}

fn delegation_key() -> DelegationKey {
    DelegationKey::new([0x42; 32])
}

fn server(credential: Credential, auth_db: AuthKeyDb) -> Server {
    let psk = Psk::new(TERMINAL_NAME, CHANNEL_PSK).unwrap();
    let channel = ChannelServerConfig {
        channel: Arc::new(ServerConfig::with_psks([psk], ANCHOR).unwrap()),
        max_sessions: 16,
    };
    let mut policy = PolicyDb::new();
    policy
        .allow(
            &TERMINAL_NAME.into(),
            Direction::ToTerminal,
            PeerPattern::Exactly(Identity::Fqdn(PEER_ID.into())),
        )
        .unwrap();
    let mut ike = IkeSubstitute::new(policy, 16, ANCHOR, rng(7));
    ike.provision(
        TERMINAL_NAME.into(),
        IkeProfile {
            local_id: Identity::Fqdn(LOCAL_ID.into()),
            credential,
            auth_db,
            ike_proposals: IkeConfig::new(Identity::Fqdn("x".into()), b"x").ike_proposals,
            delegation_key: delegation_key(),
            force_encap: false,
        },
    )
    .unwrap();
    SubstitutionServer::new(channel, ike, Bounds::default(), rng(8))
}

// ------------------------------------------------------------------ modes

/// One callgrind run: `side`'s work for one exchange goes through the measured function.
fn run(suite: Suite, side: &str) -> Result<(), String> {
    let mut w = match side {
        "endpoint" => World::new(suite, false),
        "terminal" | "terminal-cold" => World::new(suite, true),
        other => return Err(format!("unknown side {other}")),
    };
    if side == "terminal-cold" {
        w.on = true;
    }
    if side != "endpoint" {
        w.open_channel();
    }
    w.on = true;
    ALLOCATED_MEASURED.store(0, Ordering::Relaxed);
    w.exchange();
    w.on = false;
    println!(
        "{} {side}: exchange done, {} bytes allocated in measured calls",
        suite.name(),
        ALLOCATED_MEASURED.load(Ordering::Relaxed)
    );
    Ok(())
}

/// What a terminal (and a full endpoint) holds for one IKE SA.
fn heap(suite: Suite) {
    // The terminal: dropped with its channel open, and with one IKE SA besides.
    let mut idle = World::new(suite, true);
    idle.open_channel();
    let Local::Delegated { terminal, .. } = idle.local else {
        unreachable!()
    };
    let terminal_idle = held(terminal);

    let mut one = World::new(suite, true);
    one.open_channel();
    one.on = true;
    ALLOCATED_MEASURED.store(0, Ordering::Relaxed);
    one.exchange();
    let terminal_churn = ALLOCATED_MEASURED.load(Ordering::Relaxed);
    let Local::Delegated { terminal, .. } = one.local else {
        unreachable!()
    };
    assert_eq!(terminal.established().len(), 1);
    assert_eq!(
        terminal.exchange_count(),
        0,
        "the delegated exchange is over"
    );
    let terminal_one = held(terminal);

    // The full endpoint: fresh, and with one IKE SA, its Responder and data plane apart
    // (the data plane's share is the installed Child SA, the same in the terminal's).
    let (responder_idle, plane_idle) = endpoint_parts(World::new(suite, false));
    let mut one = World::new(suite, false);
    one.on = true;
    ALLOCATED_MEASURED.store(0, Ordering::Relaxed);
    one.exchange();
    let endpoint_churn = ALLOCATED_MEASURED.load(Ordering::Relaxed);
    let (responder_one, plane_one) = endpoint_parts(one);
    let child = plane_one as i64 - plane_idle as i64;
    let endpoint = responder_one as i64 - responder_idle as i64 + child;

    println!(
        "{}: terminal heap per IKE SA {} bytes (of which {} the Child SA in its data plane; \
         the terminal holds {} with only its channel open), full endpoint {} bytes per IKE SA; \
         allocated during the exchange: terminal {}, full endpoint {}",
        suite.name(),
        group(terminal_one as i64 - terminal_idle as i64),
        group(child),
        group(terminal_idle as i64),
        group(endpoint),
        group(terminal_churn as i64),
        group(endpoint_churn as i64),
    );
}

/// What a full endpoint's Responder and data plane hold, apart.
fn endpoint_parts(w: World) -> (u64, u64) {
    let Local::Endpoint { responder, plane } = w.local else {
        unreachable!()
    };
    (held(responder), held(plane))
}

/// `n` with thousands separators.
fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn done(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["heap"] => {
            for s in Suite::ALL {
                heap(s);
            }
            tls::heap();
            ExitCode::SUCCESS
        }
        ["tls", side] => done(tls::run_handshake(side)),
        ["tls-record", suite, side] => done(
            tls::RecordSuite::parse(suite)
                .ok_or(format!("unknown record suite {suite}"))
                .and_then(|s| tls::run_records(s, side)),
        ),
        ["tls-record-wall"] => {
            tls::wall(50);
            ExitCode::SUCCESS
        }
        [suite, side] => match Suite::parse(suite).ok_or(format!("unknown suite {suite}")) {
            Ok(s) => match run(s, side) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: offload_measure heap | offload_measure SUITE SIDE\n  SUITE: x25519-psk | x25519-cert | modp2048-cert\n  SIDE: endpoint | terminal | terminal-cold\n       offload_measure tls full | terminal | terminal-cold\n       offload_measure tls-record aes128gcm | chacha20  terminal | rustls | rustls-bare\n       offload_measure tls-record-wall"
            );
            ExitCode::FAILURE
        }
    }
}

//! The seed 004 (TLS 1.3) world: a peer (rustls, unmodified, in-process), a delegating
//! terminal and a substitution server on their own hosts of one network. The peer is an
//! actor around rustls's ordinary buffered connections; it records what it saw.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use deputy::channel::{ChannelServerConfig, ClientConfig, Psk, ServerConfig};
use deputy::ikev2::Identity;
use deputy::keyx::tls::{
    ClientAuth, Terminal, TerminalConfig, TerminalEvent, TlsConnId, TlsCredential, TlsProfile,
    TlsSubstitute,
};
use deputy::keyx::{Bounds, DelegationKey, Direction, PeerPattern, PolicyDb, SubstitutionServer};
use deputy::sim::{LinkConfig, NetworkId, NodeId, Sim};
use deputy::{Actor, Error, Event, Input, Instant, Outbox, Output, StreamId, UnixTime};
use p256::pkcs8::EncodePrivateKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use super::certs::{self, Alg, Issued};

pub const PEER: &str = "192.0.2.10";
pub const TERMINAL: &str = "192.0.2.20";
pub const SERVER: &str = "192.0.2.30";
pub const SERVER_PORT: u16 = 7040;
/// The peer's TLS port (peer as server) and the terminal's (terminal as server).
pub const TLS_PORT: u16 = 443;
pub const TERMINAL_NAME: &str = "terminal-1";
pub const CHANNEL_PSK: &[u8] = b"pre-arranged key, terminal<->server";
/// The peer's name (its certificate's SAN), and the terminal's as a server.
pub const PEER_NAME: &str = "peer.example";
pub const TERMINAL_HOST: &str = "terminal.example";
/// The client certificate's name when the peer is the client.
pub const CLIENT_NAME: &str = "client.example";
/// The wall-clock time at the simulator's start (the test certificates' "now").
pub const ANCHOR: UnixTime = UnixTime(certs::NOW);

pub fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

pub fn delegation_key() -> DelegationKey {
    DelegationKey::new([0x24; 32])
}

/// The PKCS#8 form of a test key, as rustls loads it.
pub fn pkcs8(i: &Issued) -> PrivateKeyDer<'static> {
    let der = match &i.key {
        deputy::ikev2::auth::SigningKey::EcdsaP256(k) => k.to_pkcs8_der().unwrap(),
        other => panic!("the TLS tests use P-256 keys, not {other:?}"),
    };
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.as_bytes().to_vec()))
}

/// The PKI of a world: one CA; leaves for the peer, the terminal and a client.
pub struct Pki {
    pub ca: Issued,
    pub peer: Issued,
    pub terminal: Issued,
    pub client: Issued,
    /// A CA nobody trusts, and a leaf for the peer's name under it.
    pub rogue_ca: Issued,
    pub rogue_peer: Issued,
}

impl Pki {
    pub fn new() -> Pki {
        let ca = certs::root(Alg::P256, 11, "deputy test CA");
        let rogue_ca = certs::root(Alg::P256, 12, "rogue CA");
        Pki {
            peer: certs::leaf(Alg::P256, 21, PEER_NAME, &ca),
            terminal: certs::leaf(Alg::P256, 22, TERMINAL_HOST, &ca),
            client: certs::leaf(Alg::P256, 23, CLIENT_NAME, &ca),
            rogue_peer: certs::leaf(Alg::P256, 24, PEER_NAME, &rogue_ca),
            ca,
            rogue_ca,
        }
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut r = rustls::RootCertStore::empty();
        r.add(CertificateDer::from(self.ca.der.clone())).unwrap();
        r
    }
}

/// Which suite(s) the peer allows (all three by default). ring: see the server's provider.
#[allow(deprecated)]
pub fn peer_provider(suites: &[rustls::CipherSuite]) -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    if !suites.is_empty() {
        p.cipher_suites.retain(|s| suites.contains(&s.suite()));
    }
    Arc::new(p)
}

#[derive(Debug)]
pub struct FixedTime;

impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        Some(rustls::pki_types::UnixTime::since_unix_epoch(
            Duration::from_secs(ANCHOR.0),
        ))
    }
}

/// What a world is made of; tests change fields before building.
pub struct Spec {
    pub link: LinkConfig,
    /// Names the terminal may reach, and clients that may reach it.
    pub allowed: Vec<PeerPattern>,
    pub server_up: bool,
    pub bounds: Bounds,
    pub terminal: fn(&mut TerminalConfig),
    /// The certificate the peer (as server) shows.
    pub peer_cert: fn(&Pki) -> &Issued,
    /// Suites the peer allows (empty: all).
    pub peer_suites: Vec<rustls::CipherSuite>,
    /// The terminal as server: whether clients must authenticate, and whether the peer
    /// (as client) presents its certificate.
    pub client_auth: ClientAuth,
    pub peer_presents_cert: bool,
    /// Tickets the peer (as server) sends.
    pub peer_tickets: usize,
    /// Key-exchange groups the peer offers (client) or takes (server); empty: rustls's.
    pub peer_groups: Vec<rustls::NamedGroup>,
    pub key_log: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            link: LinkConfig::default(),
            allowed: vec![
                PeerPattern::Exactly(Identity::Fqdn(PEER_NAME.into())),
                PeerPattern::Exactly(Identity::Fqdn(CLIENT_NAME.into())),
            ],
            server_up: true,
            bounds: Bounds::default(),
            terminal: |_| {},
            peer_cert: |p| &p.peer,
            peer_suites: vec![],
            client_auth: ClientAuth::Required,
            peer_presents_cert: true,
            peer_tickets: 2,
            peer_groups: vec![],
            key_log: false,
        }
    }
}

pub struct World {
    pub net: NetworkId,
    pub peer: NodeId,
    pub terminal: NodeId,
    pub server: NodeId,
    pub pki: Pki,
}

pub type Server = SubstitutionServer<TlsSubstitute>;

pub fn server_actor(sim: &Sim, spec: &Spec, pki: &Pki) -> Server {
    let psk = Psk::new(TERMINAL_NAME, CHANNEL_PSK).unwrap();
    let channel = ChannelServerConfig {
        channel: Arc::new(ServerConfig::with_psks([psk], ANCHOR).unwrap()),
        max_sessions: 16,
    };
    let mut policy = PolicyDb::new();
    for p in &spec.allowed {
        for d in [Direction::ToTerminal, Direction::FromTerminal] {
            policy.allow(&TERMINAL_NAME.into(), d, p.clone()).unwrap();
        }
    }
    let tls = substitute(sim, spec, pki, policy);
    SubstitutionServer::new(channel, tls, spec.bounds, Box::new(sim.rng("server-chan")))
}

/// The server's TLS work for the one terminal, with `policy`.
pub fn substitute(sim: &Sim, spec: &Spec, pki: &Pki, policy: PolicyDb) -> TlsSubstitute {
    let mut tls = TlsSubstitute::new(policy, 16, ANCHOR, Box::new(sim.rng("server-tls")));
    if spec.key_log {
        tls.log_keys(64);
    }
    tls.provision(
        TERMINAL_NAME.into(),
        TlsProfile {
            delegation_key: delegation_key(),
            roots: pki.roots(),
            client_credential: None,
            server_credential: Some(TlsCredential {
                chain: vec![CertificateDer::from(pki.terminal.der.clone())],
                key: pkcs8(&pki.terminal),
            }),
            client_auth: spec.client_auth,
            alpn: vec![],
        },
    )
    .unwrap();
    tls
}

pub fn terminal_actor(sim: &Sim, spec: &Spec) -> Terminal {
    let psk = Psk::new(TERMINAL_NAME, CHANNEL_PSK).unwrap();
    let channel = Arc::new(ClientConfig::with_psk(psk, ANCHOR));
    let mut cfg = TerminalConfig::new(
        TERMINAL.parse().unwrap(),
        addr(SERVER, SERVER_PORT),
        channel,
        delegation_key(),
    );
    (spec.terminal)(&mut cfg);
    Terminal::new(
        cfg,
        Box::new(sim.rng("terminal")),
        Box::new(sim.rng("terminal-chan")),
    )
    .unwrap()
}

// ------------------------------------------------------------------ the rustls peer

/// What the peer saw on one connection.
#[derive(Debug, Default)]
pub struct PeerConn {
    pub received: Vec<u8>,
    pub handshake_done: bool,
    pub suite: Option<rustls::CipherSuite>,
    pub error: Option<rustls::Error>,
    pub close_notify: bool,
    pub eof: bool,
    pub tickets: u32,
}

/// An unmodified TLS 1.3 endpoint (rustls's buffered connection) as a simulator actor:
/// a server listening on [`TLS_PORT`], or a client that connects when told.
pub struct TlsPeer {
    server: Option<Arc<rustls::ServerConfig>>,
    client: Option<Arc<rustls::ClientConfig>>,
    conns: BTreeMap<StreamId, (rustls::Connection, PeerConn)>,
    next: u64,
    out: Outbox<Event>,
}

impl TlsPeer {
    pub fn server(config: rustls::ServerConfig) -> TlsPeer {
        TlsPeer {
            server: Some(Arc::new(config)),
            client: None,
            conns: BTreeMap::new(),
            next: 0,
            out: Outbox::default(),
        }
    }

    pub fn client(config: rustls::ClientConfig) -> TlsPeer {
        TlsPeer {
            server: None,
            client: Some(Arc::new(config)),
            conns: BTreeMap::new(),
            next: 0,
            out: Outbox::default(),
        }
    }

    /// Client: connect to `remote`, naming `name`.
    pub fn connect(&mut self, remote: SocketAddr, name: &str) -> StreamId {
        let id = StreamId::outbound(self.next);
        self.next += 1;
        let conn = rustls::ClientConnection::new(
            self.client.clone().unwrap(),
            ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        self.conns.insert(id, (conn.into(), PeerConn::default()));
        self.out
            .push(Output::Connect {
                id,
                local: addr(PEER, 0),
                remote,
            })
            .unwrap();
        id
    }

    /// The one connection (tests use one at a time).
    pub fn only(&self) -> StreamId {
        *self.conns.keys().next().expect("a connection")
    }

    pub fn conn(&self, id: StreamId) -> &PeerConn {
        &self.conns[&id].1
    }

    pub fn send(&mut self, id: StreamId, data: &[u8]) {
        use std::io::Write;
        self.conns
            .get_mut(&id)
            .unwrap()
            .0
            .writer()
            .write_all(data)
            .unwrap();
        self.flush(id);
    }

    /// A KeyUpdate with update_requested (rustls sends only that kind on its own); false
    /// if the connection has failed already.
    pub fn key_update(&mut self, id: StreamId) -> bool {
        let ok = self
            .conns
            .get_mut(&id)
            .unwrap()
            .0
            .refresh_traffic_keys()
            .is_ok();
        self.flush(id);
        ok
    }

    pub fn close_notify(&mut self, id: StreamId) {
        self.conns.get_mut(&id).unwrap().0.send_close_notify();
        self.flush(id);
    }

    /// Close the stream without close_notify.
    pub fn drop_stream(&mut self, id: StreamId) {
        self.out.push(Output::StreamClose { id }).unwrap();
    }

    /// Raw bytes on the stream, as an attacker on the path would inject them.
    pub fn raw(&mut self, id: StreamId, data: Vec<u8>) {
        self.out.push(Output::StreamSend { id, data }).unwrap();
    }

    fn flush(&mut self, id: StreamId) {
        let Some((c, _)) = self.conns.get_mut(&id) else {
            return;
        };
        let mut buf = Vec::new();
        while c.wants_write() {
            if c.write_tls(&mut buf).is_err() {
                break;
            }
        }
        if !buf.is_empty() {
            let _ = self.out.push(Output::StreamSend { id, data: buf });
        }
    }

    fn on_data(&mut self, id: StreamId, mut data: &[u8]) {
        use std::io::Read;
        let Some((c, seen)) = self.conns.get_mut(&id) else {
            return;
        };
        while !data.is_empty() {
            if c.read_tls(&mut data).is_err() {
                break;
            }
            match c.process_new_packets() {
                Ok(state) => {
                    let mut buf = vec![0; state.plaintext_bytes_to_read()];
                    let _ = c.reader().read_exact(&mut buf);
                    seen.received.extend_from_slice(&buf);
                    if state.peer_has_closed() {
                        seen.close_notify = true;
                    }
                }
                Err(e) => {
                    seen.error = Some(e);
                    break;
                }
            }
        }
        seen.handshake_done = !c.is_handshaking();
        seen.suite = c.negotiated_cipher_suite().map(|s| s.suite());
        if let rustls::Connection::Client(cc) = c {
            seen.tickets = cc.tls13_tickets_received();
        }
        self.flush(id);
    }
}

impl Actor for TlsPeer {
    type Event = Event;

    fn handle_input(&mut self, _now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::StreamAccepted { id, .. } => {
                let conn = rustls::ServerConnection::new(self.server.clone().unwrap()).unwrap();
                self.conns.insert(id, (conn.into(), PeerConn::default()));
            }
            Input::StreamConnected { id, .. } => self.flush(id),
            Input::StreamData { id, data } => self.on_data(id, data),
            Input::StreamClosed { id } => {
                if let Some((_, seen)) = self.conns.get_mut(&id) {
                    seen.eof = true;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_output(&mut self) -> Option<Output<Event>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// The peer as a TLS server with `spec`'s certificate.
pub fn peer_server(spec: &Spec, pki: &Pki) -> TlsPeer {
    let cert = (spec.peer_cert)(pki);
    let mut provider = (*peer_provider(&spec.peer_suites)).clone();
    if !spec.peer_groups.is_empty() {
        provider
            .kx_groups
            .retain(|g| spec.peer_groups.contains(&g.name()));
    }
    let mut config =
        rustls::ServerConfig::builder_with_details(Arc::new(provider), Arc::new(FixedTime))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.der.clone())], pkcs8(cert))
            .unwrap();
    config.send_tls13_tickets = spec.peer_tickets;
    TlsPeer::server(config)
}

/// The peer as a TLS client trusting the world's CA.
pub fn peer_client(spec: &Spec, pki: &Pki) -> TlsPeer {
    let mut provider = (*peer_provider(&spec.peer_suites)).clone();
    if !spec.peer_groups.is_empty() {
        provider
            .kx_groups
            .retain(|g| spec.peer_groups.contains(&g.name()));
    }
    let builder =
        rustls::ClientConfig::builder_with_details(Arc::new(provider), Arc::new(FixedTime))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(pki.roots());
    let config = if spec.peer_presents_cert {
        builder
            .with_client_auth_cert(
                vec![CertificateDer::from(pki.client.der.clone())],
                pkcs8(&pki.client),
            )
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    TlsPeer::client(config)
}

fn world(
    sim: &mut Sim,
    spec: &Spec,
    net: Option<NetworkId>,
    peer: impl FnOnce(&Spec, &Pki) -> TlsPeer,
) -> World {
    let pki = Pki::new();
    let net = net.unwrap_or_else(|| {
        sim.add_network("internet", "192.0.2.0/24", spec.link)
            .unwrap()
    });
    let p = peer(spec, &pki);
    let peer = sim
        .add_host("tls-peer", net, PEER.parse().unwrap(), p)
        .unwrap();
    let t = terminal_actor(sim, spec);
    let terminal = sim
        .add_host("tls-terminal", net, TERMINAL.parse().unwrap(), t)
        .unwrap();
    let server = if spec.server_up {
        let s = server_actor(sim, spec, &pki);
        let server = sim
            .add_host("tls-server", net, SERVER.parse().unwrap(), s)
            .unwrap();
        sim.listen(server, SERVER_PORT).unwrap();
        server
    } else {
        let probe = deputy::sim::DatagramProbe::new(9);
        sim.add_host("tls-server", net, SERVER.parse().unwrap(), probe)
            .unwrap()
    };
    World {
        net,
        peer,
        terminal,
        server,
        pki,
    }
}

/// Fig. 14: the terminal is the client of a peer that listens.
pub fn fig14(sim: &mut Sim, spec: &Spec) -> World {
    fig14_on(sim, spec, None)
}

/// [`fig14`] on a network the caller made (prefix 192.0.2.0/24), or a new one.
pub fn fig14_on(sim: &mut Sim, spec: &Spec, net: Option<NetworkId>) -> World {
    let w = world(sim, spec, net, peer_server);
    sim.listen(w.peer, TLS_PORT).unwrap();
    w
}

/// Beyond the seed: the terminal listens; the peer is the client.
pub fn terminal_serves(sim: &mut Sim, spec: &Spec) -> World {
    let w = world(sim, spec, None, peer_client);
    sim.listen(w.terminal, TLS_PORT).unwrap();
    w
}

/// The terminal connects to the peer (Fig. 14's start).
pub fn connect(sim: &mut Sim, w: &World) -> TlsConnId {
    sim.with_actor(w.terminal, |t: &mut Terminal, now| {
        t.connect(now, addr(PEER, TLS_PORT), PEER_NAME)
    })
    .unwrap()
    .unwrap()
}

/// The peer connects to the terminal.
pub fn peer_connects(sim: &mut Sim, w: &World) -> StreamId {
    sim.with_actor(w.peer, |p: &mut TlsPeer, _| {
        p.connect(addr(TERMINAL, TLS_PORT), TERMINAL_HOST)
    })
    .unwrap()
}

pub fn terminal_events(sim: &mut Sim, node: NodeId) -> Vec<TerminalEvent> {
    sim.events(node)
        .unwrap()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Keyx(deputy::keyx::KeyxEvent::TlsTerminal(t)) => Some(t),
            _ => None,
        })
        .collect()
}

pub fn settle(sim: &mut Sim) {
    sim.run_for(Duration::from_secs(5)).unwrap();
}

/// The peer's view of its one connection.
pub fn peer_view<R>(sim: &mut Sim, w: &World, f: impl FnOnce(&PeerConn) -> R) -> R {
    sim.with_actor(w.peer, |p: &mut TlsPeer, _| f(p.conn(p.only())))
        .unwrap()
}

/// Act on the peer's one connection.
pub fn peer_do(sim: &mut Sim, w: &World, f: impl FnOnce(&mut TlsPeer, StreamId)) {
    sim.with_actor(w.peer, |p: &mut TlsPeer, _| {
        let id = p.only();
        f(p, id)
    })
    .unwrap()
}

pub fn terminal_send(sim: &mut Sim, w: &World, conn: TlsConnId, data: &[u8]) {
    sim.with_actor(w.terminal, |t: &mut Terminal, now| t.send(now, conn, data))
        .unwrap()
        .unwrap()
}

/// Every Data event's bytes, concatenated.
pub fn data_of(events: &[TerminalEvent]) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            TerminalEvent::Data { data, .. } => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The connection of the one Established event.
pub fn established(events: &[TerminalEvent]) -> Option<TlsConnId> {
    events.iter().find_map(|e| match e {
        TerminalEvent::Established { conn, .. } => Some(*conn),
        _ => None,
    })
}

//! The seed 004 (IKEv2) world: a peer, a delegating terminal and a substitution server on
//! their own hosts of one network, shared by tests/keyx_ike.rs and the tour (which includes
//! this file with `#[path]`, so it uses only the simulator's own API).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use deputy::channel::{ChannelServerConfig, ClientConfig, Psk, ServerConfig};
use deputy::ikev2::auth::{AuthKeyDb, Credential};
use deputy::ikev2::{
    Identity, IkeConfig, IkeEvent, Initiator, InitiatorConfig, Responder, ResponderConfig,
    SecretBytes,
};
use deputy::ipsec::{Action, DataPlane, DataPlaneConfig, Direction as Dir, Policy, Selector};
use deputy::keyx::ike::{IkeProfile, IkeSubstitute, Terminal, TerminalConfig, TerminalEvent};
use deputy::keyx::{Bounds, DelegationKey, Direction, PeerPattern, PolicyDb, SubstitutionServer};
use deputy::sim::{LinkConfig, NetworkId, NodeId, Sim};
use deputy::{Event, UnixTime};

pub const PEER: &str = "192.0.2.10";
pub const TERMINAL: &str = "192.0.2.20";
pub const SERVER: &str = "192.0.2.30";
/// The server's channel port.
pub const SERVER_PORT: u16 = 7040;
pub const TERMINAL_NAME: &str = "terminal-1";
/// The IKE PSK the server holds for the terminal (the peer has it too).
pub const IKE_PSK: &[u8] = b"ike psk between peer and terminal";
/// The channel's pre-arranged key (the seed's S1-S2).
pub const CHANNEL_PSK: &[u8] = b"pre-arranged key, terminal<->server";
pub const PEER_ID: &str = "peer.example";
pub const TERMINAL_ID: &str = "terminal.example";

/// The wall-clock time at the simulator's start (certificates are judged against it).
pub const ANCHOR: UnixTime = UnixTime(1_800_000_000);

pub fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

pub fn delegation_key() -> DelegationKey {
    DelegationKey::new([0x42; 32])
}

/// What a world is made of; tests change fields before building.
pub struct Spec {
    pub link: LinkConfig,
    /// Peers the policy database lets reach the terminal (and the terminal reach).
    pub allowed: Vec<PeerPattern>,
    /// The PSK the peer uses (a wrong one makes its AUTH fail).
    pub peer_psk: Vec<u8>,
    /// Whether the server host runs the server (else nothing listens there).
    pub server_up: bool,
    pub bounds: Bounds,
    pub terminal: fn(&mut TerminalConfig),
    pub peer_ike: fn(&mut IkeConfig),
    /// The credential the server acts with for the terminal.
    pub credential: Credential,
    /// The server's authentication-key database for the terminal's peers.
    pub auth_db: AuthKeyDb,
    /// The peer's own configuration, when a test builds it (certificates); else a PSK one
    /// from `peer_psk` and `peer_ike`.
    pub peer: Option<IkeConfig>,
    /// The terminal's data plane.
    pub plane: DataPlaneConfig,
    /// The IKE proposals the server may use for the terminal.
    pub server_proposals: Vec<deputy::ikev2::IkeProposal>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            link: LinkConfig::default(),
            allowed: vec![PeerPattern::Exactly(Identity::Fqdn(PEER_ID.into()))],
            peer_psk: IKE_PSK.to_vec(),
            server_up: true,
            bounds: Bounds::default(),
            terminal: |_| {},
            peer_ike: |_| {},
            credential: Credential::Psk(SecretBytes::from_slice(IKE_PSK)),
            auth_db: {
                let mut db = AuthKeyDb::new();
                db.set_any_peer_psk(Some(IKE_PSK));
                db
            },
            peer: None,
            plane: DataPlaneConfig::default(),
            server_proposals: IkeConfig::new(Identity::Fqdn("x".into()), b"x").ike_proposals,
        }
    }
}

pub struct World {
    pub net: NetworkId,
    pub peer: NodeId,
    pub terminal: NodeId,
    pub server: NodeId,
}

pub type Server = SubstitutionServer<IkeSubstitute>;

pub fn server_actor(sim: &Sim, spec: &Spec) -> Server {
    let psk = Psk::new(TERMINAL_NAME, CHANNEL_PSK).unwrap();
    let channel = ChannelServerConfig {
        channel: Arc::new(ServerConfig::with_psks([psk], UnixTime(1_800_000_000)).unwrap()),
        max_sessions: 16,
    };
    let mut policy = PolicyDb::new();
    for p in &spec.allowed {
        policy
            .allow(&TERMINAL_NAME.into(), Direction::ToTerminal, p.clone())
            .unwrap();
        policy
            .allow(&TERMINAL_NAME.into(), Direction::FromTerminal, p.clone())
            .unwrap();
    }
    let ike = substitute(sim, spec, policy);
    SubstitutionServer::new(channel, ike, spec.bounds, Box::new(sim.rng("server-chan")))
}

/// The server's IKE work for the one terminal, with `policy`.
pub fn substitute(sim: &Sim, spec: &Spec, policy: PolicyDb) -> IkeSubstitute {
    let mut ike = IkeSubstitute::new(policy, 16, ANCHOR, Box::new(sim.rng("server-ike")));
    ike.provision(
        TERMINAL_NAME.into(),
        IkeProfile {
            local_id: Identity::Fqdn(TERMINAL_ID.into()),
            credential: spec.credential.clone(),
            auth_db: spec.auth_db.clone(),
            ike_proposals: spec.server_proposals.clone(),
            delegation_key: delegation_key(),
            force_encap: false,
        },
    )
    .unwrap();
    ike
}

pub fn terminal_actor(sim: &Sim, spec: &Spec) -> Terminal {
    let psk = Psk::new(TERMINAL_NAME, CHANNEL_PSK).unwrap();
    let channel = Arc::new(ClientConfig::with_psk(psk, UnixTime(1_800_000_000)));
    let mut cfg = TerminalConfig::new(
        addr(TERMINAL, 500),
        addr(SERVER, SERVER_PORT),
        channel,
        delegation_key(),
    );
    (spec.terminal)(&mut cfg);
    let mut plane = DataPlane::new(spec.plane, Box::new(sim.rng("plane"))).unwrap();
    plane
        .add_policy(Policy::new(
            Selector::parse("0.0.0.0/0", "0.0.0.0/0").unwrap(),
            Dir::Both,
            Action::Protect,
        ))
        .unwrap();
    Terminal::new(
        cfg,
        plane,
        Box::new(sim.rng("terminal")),
        Box::new(sim.rng("terminal-chan")),
        sim.now(),
    )
    .unwrap()
}

pub fn peer_ike(spec: &Spec) -> IkeConfig {
    if let Some(ike) = &spec.peer {
        return ike.clone();
    }
    let mut ike = IkeConfig::new(Identity::Fqdn(PEER_ID.into()), &spec.peer_psk);
    (spec.peer_ike)(&mut ike);
    ike
}

fn internet(sim: &mut Sim, spec: &Spec) -> NetworkId {
    sim.add_network("internet", "192.0.2.0/24", spec.link)
        .unwrap()
}

fn host(
    sim: &mut Sim,
    name: &str,
    net: NetworkId,
    ip: &str,
    actor: impl deputy::Actor<Event: Into<Event>> + 'static,
) -> NodeId {
    sim.add_host(name, net, ip.parse().unwrap(), actor).unwrap()
}

/// The peer initiates toward the terminal (the seed's Fig. 12).
pub fn fig12(sim: &mut Sim, spec: &Spec) -> World {
    let net = internet(sim, spec);
    fig12_on(sim, spec, net)
}

/// [`fig12`] on a network the caller made (prefix 192.0.2.0/24).
pub fn fig12_on(sim: &mut Sim, spec: &Spec, net: NetworkId) -> World {
    let peer = Initiator::new(
        InitiatorConfig {
            ike: peer_ike(spec),
            local: addr(PEER, 500),
            remote: addr(TERMINAL, 500),
        },
        Box::new(sim.rng("peer")),
    )
    .unwrap();
    let peer = host(sim, "peer", net, PEER, peer);
    terminal_and_server(sim, spec, net, peer)
}

/// The terminal initiates toward a peer that responds.
pub fn peer_responds(sim: &mut Sim, spec: &Spec) -> World {
    let net = internet(sim, spec);
    let peer = Responder::new(
        ResponderConfig::new(peer_ike(spec)),
        Box::new(sim.rng("peer")),
        sim.now(),
    )
    .unwrap();
    let peer = host(sim, "peer", net, PEER, peer);
    terminal_and_server(sim, spec, net, peer)
}

fn terminal_and_server(sim: &mut Sim, spec: &Spec, net: NetworkId, peer: NodeId) -> World {
    let t = terminal_actor(sim, spec);
    let terminal = host(sim, "terminal", net, TERMINAL, t);
    let server = if spec.server_up {
        let s = server_actor(sim, spec);
        let server = host(sim, "server", net, SERVER, s);
        sim.listen(server, SERVER_PORT).unwrap();
        server
    } else {
        host(
            sim,
            "server",
            net,
            SERVER,
            deputy::sim::DatagramProbe::new(9),
        )
    };
    World {
        net,
        peer,
        terminal,
        server,
    }
}

/// The terminal's events.
pub fn terminal_events(sim: &mut Sim, node: NodeId) -> Vec<TerminalEvent> {
    sim.events(node)
        .unwrap()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Keyx(deputy::keyx::KeyxEvent::Terminal(t)) => Some(t),
            _ => None,
        })
        .collect()
}

/// The peer's IKE events.
pub fn ike_events(sim: &mut Sim, node: NodeId) -> Vec<IkeEvent> {
    sim.events(node)
        .unwrap()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Ike(i) => Some(i),
            _ => None,
        })
        .collect()
}

/// Run long enough for one delegated exchange (and its retransmissions) to finish.
pub fn settle(sim: &mut Sim) {
    sim.run_for(Duration::from_secs(60)).unwrap();
}

/// An IPv4/UDP packet from `src` to `dst` carrying `body`.
pub fn udp_packet(src: [u8; 4], dst: [u8; 4], body: &[u8]) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ipv4(src, dst, 64).udp(1000, 2000);
    let mut out = Vec::with_capacity(builder.size(body.len()));
    builder.write(&mut out, body).unwrap();
    out
}

/// A data plane holding `child` (the peer's side of the terminal's Child SA), protecting
/// everything.
pub fn peer_plane(sim: &Sim, child: deputy::ipsec::ChildSa) -> DataPlane {
    let mut plane =
        DataPlane::new(DataPlaneConfig::default(), Box::new(sim.rng("peer-plane"))).unwrap();
    plane
        .add_policy(Policy::new(
            Selector::parse("0.0.0.0/0", "0.0.0.0/0").unwrap(),
            Dir::Both,
            Action::Protect,
        ))
        .unwrap();
    plane.install(sim.now(), child).unwrap();
    plane
}

/// Protect `packet` on `from` and open it on `to`: the plaintext that came out, and the
/// size of the ESP packet that crossed.
pub fn esp_across(
    now: deputy::Instant,
    from: &mut DataPlane,
    to: &mut DataPlane,
    packet: &[u8],
) -> (Vec<u8>, usize) {
    use deputy::ipsec::{Inbound, Outbound, Protected};
    let (inbound, size) = match from.protect(now, packet).unwrap() {
        Outbound::Protected(Protected::Ip(esp)) => (to.unprotect(now, &esp).unwrap(), esp.len()),
        Outbound::Protected(Protected::Udp(d)) => (
            to.unprotect_datagram(now, d.from, d.to, &d.payload)
                .unwrap(),
            d.payload.len(),
        ),
        other => panic!("not protected: {other:?}"),
    };
    match inbound {
        Inbound::Packet { packet, .. } => (packet, size),
        other => panic!("not delivered: {other:?}"),
    }
}

/// What the server's IKE work counted.
pub fn server_counters(sim: &Sim, server: NodeId) -> deputy::keyx::ike::IkeSubstituteCounters {
    sim.actor::<Server>(server)
        .unwrap()
        .dispatcher()
        .protocol()
        .counters()
}

/// A second peer (at 192.0.2.11, the same identity), initiating toward the terminal when
/// started: for health runs after a fault.
pub fn second_peer(sim: &mut Sim, spec: &Spec, net: NetworkId) -> NodeId {
    let peer = Initiator::new(
        InitiatorConfig {
            ike: peer_ike(spec),
            local: addr("192.0.2.11", 500),
            remote: addr(TERMINAL, 500),
        },
        Box::new(sim.rng("peer-2")),
    )
    .unwrap();
    host(sim, "peer-2", net, "192.0.2.11", peer)
}

/// The IKE session's events among a terminal's events.
pub fn terminal_ike(events: &[TerminalEvent]) -> Vec<IkeEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            TerminalEvent::Ike(i) => Some(i.clone()),
            _ => None,
        })
        .collect()
}

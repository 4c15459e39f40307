//! (feature `sim`) Seed 002 worlds on the simulator: the seed's two LANs behind NAPT
//! routers, the rendezvous server on the internet, and the three actors configured to
//! find each other — for tests, the tour and your own experiments.
//!
//! ```text
//!  issuer LAN 192.168.1.0/24                internet                acceptor LAN 192.168.1.0/24
//!  issuer 192.168.1.11 ── NAPT 4.17.168.2 ── server 130.74.23.6 ── NAPT 202.204.16.13 ── acceptor 192.168.1.3
//!    peer socket :1600      (static :5000 → :1600      UDP 1200, issuer                     UDP :2000
//!                            when asked, ¶0109)         streams 1201, device streams 1300
//! ```
//!
//! Either side may instead sit directly on the internet with its public address (¶0106).
//! Addresses and ports are the seed's (Figs. 1, 6–9); the internet segment is
//! `0.0.0.0/0`, so a world can share a simulator with other networks.
//!
//! ```
//! use deputy::sim::scenario::{Outcome, World, WorldConfig};
//! use deputy::sim::Sim;
//! use std::time::Duration;
//!
//! let mut sim = Sim::new(1);
//! let world = World::build(&mut sim, WorldConfig::default()).unwrap();
//! sim.run_for(Duration::from_secs(1)).unwrap(); // S202: the acceptor registers
//! let session = world.connect(&mut sim, b"2133-secret").unwrap();
//! let outcome = world.wait(&mut sim, session, Duration::from_secs(30)).unwrap();
//! assert!(matches!(outcome, Outcome::Connected { .. }));
//! ```

use std::boxed::Box;
use std::format;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::string::String;
use std::sync::Arc;
use std::time::Duration;
use std::vec::Vec;

use super::{Filtering, LinkConfig, Mapping, NatConfig, NetworkId, NodeId, Proto, Sim};
use crate::crypto::cert::{CertificateAuthority, TrustStore};
use crate::rendezvous::{
    Acceptor, AcceptorConfig, AcceptorParams, BackoffConfig, DerivedRegistrationKeys, DeviceId,
    Issuer, IssuerConfig, IssuerParams, MemoryDirectory, Password, PeerFailure, RendezvousEvent,
    RendezvousServer, RendezvousServerConfig, RendezvousServerParams, RequestRefusal,
};
use crate::{Event, UnixTime};

/// Wall-clock time at `Instant::ZERO` in every world.
pub const ANCHOR: UnixTime = UnixTime(1_800_000_000);
/// The rendezvous server's address (seed Fig. 1: サーバ装置 101).
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(130, 74, 23, 6);
/// The server's UDP port (registrations, notices).
pub const SERVER_UDP_PORT: u16 = 1200;
/// The server's issuer stream port (S203; seed: 1201).
pub const ISSUER_PORT: u16 = 1201;
/// The server's device stream port (S206; seed: 1300).
pub const DEVICE_PORT: u16 = 1300;
/// The issuer's router's public address (seed: ルータ装置 104a).
pub const ISSUER_PUBLIC: Ipv4Addr = Ipv4Addr::new(4, 17, 168, 2);
/// The acceptor's router's public address (seed: ルータ装置 104b).
pub const ACCEPTOR_PUBLIC: Ipv4Addr = Ipv4Addr::new(202, 204, 16, 13);
/// The issuer's private address.
pub const ISSUER_LAN_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 11);
/// The acceptor's private address.
pub const ACCEPTOR_LAN_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 3);
/// The issuer's peer socket port (seed Fig. 6: 1600).
pub const ISSUER_PEER_PORT: u16 = 1600;
/// The public port of the issuer's static mapping (seed Fig. 6: 5000).
pub const ISSUER_STATIC_PORT: u16 = 5000;
/// The acceptor's UDP port (seed Fig. 7a: 2000).
pub const ACCEPTOR_PORT: u16 = 2000;
/// The accepting device (seed: 2133).
pub const DEVICE: DeviceId = DeviceId(2133);
/// The server's certificate name.
pub const SERVER_NAME: &str = "rendezvous.example";

/// How to build a world.
#[derive(Clone, Debug)]
pub struct WorldConfig {
    /// The issuer's router, or `None` for an issuer with a global address.
    pub issuer_nat: Option<NatConfig>,
    /// The acceptor's router, or `None` for an acceptor with a global address.
    pub acceptor_nat: Option<NatConfig>,
    /// A static NAPT entry on the issuer's router (public 5000 → issuer :1600), declared
    /// by the issuer in its connection request (¶0109).
    pub static_mapping: bool,
    /// The acceptor's password.
    pub password: Vec<u8>,
    /// One-way latency of the internet segment.
    pub internet_latency: Duration,
    /// One-way latency of each LAN.
    pub lan_latency: Duration,
    /// Prefix for node and network names (to tell worlds apart in one simulator).
    pub name_prefix: String,
    /// The server's directory capacity.
    pub directory_capacity: usize,
    /// The server's per-source rate tables' bound.
    pub max_sources: usize,
    /// The acceptor's wrong-password back-off.
    pub backoff: BackoffConfig,
}

impl Default for WorldConfig {
    /// Both devices behind typical home routers (endpoint-independent mapping,
    /// address-and-port-dependent filtering), no static mapping.
    fn default() -> Self {
        WorldConfig {
            issuer_nat: Some(NatConfig::default()),
            acceptor_nat: Some(NatConfig::default()),
            static_mapping: false,
            password: b"2133-secret".to_vec(),
            internet_latency: Duration::from_millis(10),
            lan_latency: Duration::from_millis(1),
            name_prefix: String::new(),
            directory_capacity: 1024,
            max_sources: 65_536,
            backoff: BackoffConfig::default(),
        }
    }
}

/// A built world: the nodes and what a test needs to play other parts.
#[derive(Debug)]
pub struct World {
    /// The rendezvous server host.
    pub server: NodeId,
    /// The issuer host.
    pub issuer: NodeId,
    /// The acceptor host.
    pub acceptor: NodeId,
    /// The issuer's router, if it has one.
    pub issuer_router: Option<NodeId>,
    /// The acceptor's router, if it has one.
    pub acceptor_router: Option<NodeId>,
    /// The internet segment.
    pub internet: NetworkId,
    /// The issuer's LAN, if it has one.
    pub issuer_lan: Option<NetworkId>,
    /// The acceptor's LAN, if it has one.
    pub acceptor_lan: Option<NetworkId>,
    /// The CA that certifies the server and the devices.
    pub ca: CertificateAuthority,
    /// The master of the devices' registration keys.
    pub keys: DerivedRegistrationKeys,
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Both devices report the direct connection up (S209), found in this attempt.
    Connected {
        /// Hole-punching attempt (1–3).
        attempt: u8,
    },
    /// The direct connection failed.
    Failed(PeerFailure),
    /// The request was refused.
    Refused(RequestRefusal),
    /// Nothing decided within the time given.
    Undecided,
}

fn err(e: impl core::fmt::Debug) -> String {
    format!("{e:?}")
}

/// The server's UDP endpoint.
pub fn server_udp() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(SERVER_IP), SERVER_UDP_PORT)
}

impl World {
    /// Build the world in `sim`.
    pub fn build(sim: &mut Sim, cfg: WorldConfig) -> Result<World, String> {
        let p = &cfg.name_prefix;
        let mut rng = sim.rng(&format!("{p}rendezvous/pki"));
        let ca = CertificateAuthority::generate("rendezvous CA", &mut rng);
        let trust = TrustStore::with(ca.certificate().clone());
        let year = 365 * 86_400;
        let server_id = ca
            .issue_identity(SERVER_NAME, &[], ANCHOR, year, &mut rng)
            .map_err(err)?;
        let device_id = ca
            .issue_identity(&DEVICE.certificate_name(), &[], ANCHOR, year, &mut rng)
            .map_err(err)?;
        let mut master = [0u8; 32];
        rand_core::Rng::fill_bytes(&mut rng, &mut master);
        let keys = DerivedRegistrationKeys::new(master);

        let internet = sim
            .add_network(
                &format!("{p}internet"),
                "0.0.0.0/0",
                LinkConfig::with_latency(cfg.internet_latency),
            )
            .map_err(err)?;

        // The server.
        let mut server_cfg = RendezvousServerConfig::new(RendezvousServerParams {
            udp: server_udp(),
            issuer_port: ISSUER_PORT,
            device_port: DEVICE_PORT,
            identity: Arc::new(server_id),
            device_trust: trust.clone(),
            keys: Box::new(DerivedRegistrationKeys::new(master)),
            time_anchor: ANCHOR,
        });
        server_cfg.max_sources = cfg.max_sources;
        let server_actor = RendezvousServer::new(
            server_cfg,
            MemoryDirectory::new(cfg.directory_capacity),
            Box::new(sim.rng(&format!("{p}rendezvous/server"))),
        )
        .map_err(err)?;
        let server = sim
            .add_host(
                &format!("{p}server"),
                internet,
                IpAddr::V4(SERVER_IP),
                server_actor,
            )
            .map_err(err)?;
        sim.listen(server, ISSUER_PORT).map_err(err)?;
        sim.listen(server, DEVICE_PORT).map_err(err)?;

        // The acceptor (S202 starts at once).
        let (acceptor_net, acceptor_ip, acceptor_router) = side(
            sim,
            &format!("{p}acceptor"),
            internet,
            cfg.acceptor_nat.clone(),
            ACCEPTOR_PUBLIC,
            ACCEPTOR_LAN_IP,
            cfg.lan_latency,
        )?;
        let mut prng = sim.rng(&format!("{p}rendezvous/password"));
        let password = Password::new(&cfg.password, &mut prng).map_err(err)?;
        let mut acceptor_cfg = AcceptorConfig::new(AcceptorParams {
            device: DEVICE,
            registration_key: keys.device_key(DEVICE),
            identity: Arc::new(device_id),
            trust: trust.clone(),
            server_name: SERVER_NAME.into(),
            server_udp: server_udp(),
            server_stream: SocketAddr::new(IpAddr::V4(SERVER_IP), DEVICE_PORT),
            local: SocketAddr::new(acceptor_ip, ACCEPTOR_PORT),
            password,
            time_anchor: ANCHOR,
        });
        acceptor_cfg.backoff = cfg.backoff;
        let acceptor = sim
            .add_host(
                &format!("{p}acceptor"),
                acceptor_net,
                acceptor_ip,
                Acceptor::new(
                    acceptor_cfg,
                    Box::new(sim.rng(&format!("{p}rendezvous/acceptor"))),
                ),
            )
            .map_err(err)?;

        // The issuer.
        let (issuer_net, issuer_ip, issuer_router) = side(
            sim,
            &format!("{p}issuer"),
            internet,
            cfg.issuer_nat.clone(),
            ISSUER_PUBLIC,
            ISSUER_LAN_IP,
            cfg.lan_latency,
        )?;
        let local = SocketAddr::new(issuer_ip, ISSUER_PEER_PORT);
        let mut issuer_cfg = IssuerConfig::new(IssuerParams {
            trust,
            server_name: SERVER_NAME.into(),
            server_stream: SocketAddr::new(IpAddr::V4(SERVER_IP), ISSUER_PORT),
            server_udp: server_udp(),
            local,
            time_anchor: ANCHOR,
        });
        if cfg.static_mapping {
            let public = SocketAddr::new(IpAddr::V4(ISSUER_PUBLIC), ISSUER_STATIC_PORT);
            match issuer_router {
                Some(router) => {
                    sim.add_static_mapping(router, Proto::Udp, ISSUER_STATIC_PORT, local)
                        .map_err(err)?;
                    issuer_cfg.declared = Some(public);
                }
                // A global issuer is reachable at its own address anyway.
                None => issuer_cfg.declared = Some(local),
            }
        }
        let issuer = sim
            .add_host(
                &format!("{p}issuer"),
                issuer_net,
                issuer_ip,
                Issuer::new(
                    issuer_cfg,
                    Box::new(sim.rng(&format!("{p}rendezvous/issuer"))),
                ),
            )
            .map_err(err)?;

        Ok(World {
            server,
            issuer,
            acceptor,
            issuer_router,
            acceptor_router,
            internet,
            issuer_lan: issuer_router.map(|_| issuer_net),
            acceptor_lan: acceptor_router.map(|_| acceptor_net),
            ca,
            keys,
        })
    }

    /// S203: the issuer asks for the device with `password`; returns the session id.
    pub fn connect(&self, sim: &mut Sim, password: &[u8]) -> Result<u64, String> {
        sim.with_actor(self.issuer, |i: &mut Issuer, now| {
            i.connect(now, DEVICE, password)
        })
        .map_err(err)?
        .map_err(err)
    }

    /// The rendezvous events `node` has reported so far (without draining them).
    pub fn events(sim: &Sim, node: NodeId) -> Vec<RendezvousEvent> {
        sim.peek_events(node)
            .map(|evs| {
                evs.iter()
                    .filter_map(|(_, e)| match e {
                        Event::Rendezvous(r) => Some(r.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How `session` stands now.
    pub fn outcome(&self, sim: &Sim, session: u64) -> Outcome {
        let connected = |node| {
            World::events(sim, node).into_iter().find_map(|e| match e {
                RendezvousEvent::PeerConnected {
                    session: s,
                    attempt,
                    ..
                } if s == session => Some(attempt),
                _ => None,
            })
        };
        if let (Some(attempt), Some(_)) = (connected(self.issuer), connected(self.acceptor)) {
            return Outcome::Connected { attempt };
        }
        for node in [self.issuer, self.acceptor] {
            for e in World::events(sim, node) {
                match e {
                    RendezvousEvent::PeerFailed { session: s, reason } if s == session => {
                        return Outcome::Failed(reason);
                    }
                    RendezvousEvent::Refused { request, reason }
                        if request == session && node == self.issuer =>
                    {
                        return Outcome::Refused(reason);
                    }
                    _ => {}
                }
            }
        }
        Outcome::Undecided
    }

    /// Run until `session` is decided (or `limit` passes).
    pub fn wait(&self, sim: &mut Sim, session: u64, limit: Duration) -> Result<Outcome, String> {
        let deadline = sim.now() + limit;
        sim.run_until_cond(deadline, |s| self.outcome(s, session) != Outcome::Undecided)
            .map_err(err)?;
        Ok(self.outcome(sim, session))
    }
}

/// One device's side: a LAN behind a NAPT, or a host directly on the internet.
fn side(
    sim: &mut Sim,
    name: &str,
    internet: NetworkId,
    nat: Option<NatConfig>,
    public: Ipv4Addr,
    private: Ipv4Addr,
    lan_latency: Duration,
) -> Result<(NetworkId, IpAddr, Option<NodeId>), String> {
    match nat {
        None => Ok((internet, IpAddr::V4(public), None)),
        Some(nat) => {
            let lan = sim
                .add_network(
                    &format!("{name}-lan"),
                    "192.168.1.0/24",
                    LinkConfig::with_latency(lan_latency),
                )
                .map_err(err)?;
            let router = sim
                .add_napt(
                    &format!("{name}-router"),
                    lan,
                    IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1)),
                    internet,
                    IpAddr::V4(public),
                    nat,
                )
                .map_err(err)?;
            Ok((lan, IpAddr::V4(private), Some(router)))
        }
    }
}

/// Every RFC 4787 mapping × filtering behaviour, in the matrix's order.
pub const BEHAVIOURS: [(Mapping, Filtering); 9] = {
    use Filtering as F;
    use Mapping as M;
    [
        (M::EndpointIndependent, F::EndpointIndependent),
        (M::EndpointIndependent, F::AddressDependent),
        (M::EndpointIndependent, F::AddressAndPortDependent),
        (M::AddressDependent, F::EndpointIndependent),
        (M::AddressDependent, F::AddressDependent),
        (M::AddressDependent, F::AddressAndPortDependent),
        (M::AddressAndPortDependent, F::EndpointIndependent),
        (M::AddressAndPortDependent, F::AddressDependent),
        (M::AddressAndPortDependent, F::AddressAndPortDependent),
    ]
};

/// A short name: `EIM/APDF`.
pub fn label(b: (Mapping, Filtering)) -> String {
    let m = match b.0 {
        Mapping::EndpointIndependent => "EIM",
        Mapping::AddressDependent => "ADM",
        Mapping::AddressAndPortDependent => "APDM",
    };
    let f = match b.1 {
        Filtering::EndpointIndependent => "EIF",
        Filtering::AddressDependent => "ADF",
        Filtering::AddressAndPortDependent => "APDF",
    };
    format!("{m}/{f}")
}

/// Whether the devices connect directly, by the reasoning in `docs/rendezvous.md`:
///
/// - a static mapping on the issuer's router always works (the acceptor's punch reaches
///   the issuer, whose answer leaves through the same mapping);
/// - if either side maps endpoint-independently, plain punching works when that side
///   filters by address or not at all, and otherwise its spray from the one public port
///   hits one of the other side's 256 extra sockets, whose answer comes back through the
///   port the spray opened;
/// - if both map per destination, a spray from side X reaches side Y's extra sockets only
///   if Y filters by address at most; Y's answer then gets through X's filter if X filters
///   by address at most, or if Y maps by address only (so it answers from the very port
///   X sprayed). Otherwise no technique here can find the ports.
pub fn expected_direct(
    issuer: (Mapping, Filtering),
    acceptor: (Mapping, Filtering),
    static_mapping: bool,
) -> bool {
    if static_mapping
        || issuer.0 == Mapping::EndpointIndependent
        || acceptor.0 == Mapping::EndpointIndependent
    {
        return true;
    }
    let reaches = |x: (Mapping, Filtering), y: (Mapping, Filtering)| {
        y.1 != Filtering::AddressAndPortDependent
            && (y.0 == Mapping::AddressDependent || x.1 != Filtering::AddressAndPortDependent)
    };
    reaches(issuer, acceptor) || reaches(acceptor, issuer)
}

/// Run one NAT matrix case in a fresh simulator: `Some(attempt)` if the devices
/// connected directly, `None` if the direct connection failed cleanly.
pub fn matrix_case(
    seed: u64,
    issuer: (Mapping, Filtering),
    acceptor: (Mapping, Filtering),
    static_mapping: bool,
) -> Result<Option<u8>, String> {
    let mut sim = Sim::new(seed);
    let world = World::build(
        &mut sim,
        WorldConfig {
            issuer_nat: Some(NatConfig::new(issuer.0, issuer.1)),
            acceptor_nat: Some(NatConfig::new(acceptor.0, acceptor.1)),
            static_mapping,
            ..WorldConfig::default()
        },
    )?;
    sim.run_for(Duration::from_secs(1)).map_err(err)?;
    let session = world.connect(&mut sim, b"2133-secret")?;
    match world.wait(&mut sim, session, Duration::from_secs(90))? {
        Outcome::Connected { attempt } => Ok(Some(attempt)),
        Outcome::Failed(PeerFailure::HolePunchFailed { .. }) => Ok(None),
        other => Err(format!(
            "{} ↔ {}{}: unexpected outcome {other:?}",
            label(issuer),
            label(acceptor),
            if static_mapping { " (static)" } else { "" }
        )),
    }
}

/// One row of the NAT matrix: the issuer's router behaviour, and for each acceptor
/// behaviour (in [`BEHAVIOURS`] order) the attempt that connected, or `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixRow {
    /// The issuer's router.
    pub issuer: (Mapping, Filtering),
    /// One cell per acceptor behaviour.
    pub cells: Vec<Option<u8>>,
}

/// Run the whole NAT matrix (81 cases, each in its own simulator, seeded by its
/// position). The tour prints it; `tests/nat_matrix.rs` checks it against
/// [`expected_direct`] and against the table in `docs/rendezvous.md`.
pub fn nat_matrix(static_mapping: bool) -> Result<Vec<MatrixRow>, String> {
    let mut rows = Vec::new();
    for (r, &issuer) in BEHAVIOURS.iter().enumerate() {
        let mut cells = Vec::new();
        for (c, &acceptor) in BEHAVIOURS.iter().enumerate() {
            let seed = 1000 + (r * BEHAVIOURS.len() + c) as u64;
            cells.push(matrix_case(seed, issuer, acceptor, static_mapping)?);
        }
        rows.push(MatrixRow { issuer, cells });
    }
    Ok(rows)
}

/// How a matrix cell is printed: `✓n` (connected in attempt n) or `✗`.
pub fn cell(result: Option<u8>) -> String {
    match result {
        Some(n) => format!("✓{n}"),
        None => "✗".into(),
    }
}

impl core::fmt::Display for Outcome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Outcome::Connected { attempt } => write!(f, "connected (attempt {attempt})"),
            Outcome::Failed(r) => write!(f, "failed: {r:?}"),
            Outcome::Refused(r) => write!(f, "refused: {r:?}"),
            Outcome::Undecided => f.write_str("undecided"),
        }
    }
}

//! Seed 003 worlds: subscribers behind service controls, key-exchange proxies and the
//! authentication server on the core, a peer behind its access router.
//!
//! ```text
//!  subscriber 10.1.0.5 ── access-1 10.1.0.0/24 ── [SC 1: 10.1.0.1 | 203.0.113.1] ─┐
//!  subscriber 10.2.0.5 ── access-2 10.2.0.0/24 ── [SC 2: 10.2.0.1 | 203.0.113.2] ─┤ core 203.0.113.0/24
//!                           proxies 203.0.113.10, .11 · auth server 203.0.113.20 ─┤
//!                                   router 4: 203.0.113.4 | 198.51.100.254 ───────┘── peer 198.51.100.1
//! ```
//!
//! Shared by tests/keyx_operator.rs and the tour (which includes this file with `#[path]`
//! next to tests/common/inline.rs), so it uses only the simulator's own API, the seed 001
//! world's items (`super::inline`) and, from its parent module, nothing but the shared
//! event matching (`take_events`, which both parents bring into scope).

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use deputy::channel::{ClientConfig, Psk, ServerConfig};
use deputy::ikev2::{Identity, IkeConfig, Initiator, InitiatorConfig, Responder, ResponderConfig};
use deputy::keyx::ikeless::Terminal;
use deputy::keyx::inline::{MemoryStore, TerminalSecrets};
use deputy::keyx::operator::{
    AuthServer, AuthServerConfig, ControlConfig, KeyExchangeProxy, KeyExchangeProxyConfig,
    OperatorEvent, ServiceControl, ServiceProfile,
};
use deputy::sim::{LinkConfig, NetworkId, NodeId, RawIp, Sim};
use deputy::{Actor, IfaceId, UnixTime};

use super::inline::{Ike, Peer, Spec, Tap, terminal_actor, terminal_identity};
use super::take_events;

pub const PEER: &str = "198.51.100.1";
pub const AUTH: &str = "203.0.113.20";
pub const PROFILE_PORT: u16 = 7000;
pub const LINK_PSK: &[u8] = b"operator link key";
const ANCHOR: UnixTime = UnixTime(1_800_000_000);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn events(sim: &mut Sim, node: NodeId) -> Vec<OperatorEvent> {
    take_events(sim, node).unwrap()
}

fn net(sim: &mut Sim, name: &str, prefix: &str) -> NetworkId {
    sim.add_network(name, prefix, LinkConfig::default())
        .unwrap()
}

fn host(
    sim: &mut Sim,
    name: &str,
    net: NetworkId,
    addr: &str,
    actor: impl Actor<Event: Into<deputy::Event>> + 'static,
) -> NodeId {
    sim.add_host(name, net, ip(addr), actor).unwrap()
}

pub fn auth_psk() -> Psk {
    Psk::new("auth-server", &[0x5a; 32]).unwrap()
}

/// A service control under construction.
pub struct Control {
    pub node: NodeId,
    pub access: NetworkId,
    pub core_addr: IpAddr,
    pub access_tap: Tap,
}

pub struct Op {
    pub sim: Sim,
    /// What every network and node name starts with.
    pub tag: String,
    pub core: NetworkId,
    pub peer_net: NetworkId,
    pub router: NodeId,
    pub core_tap: Tap,
    pub proxies: Vec<NodeId>,
    pub controls: Vec<Control>,
    pub subscribers: Vec<(u64, NodeId, IpAddr)>,
    pub profiles: Vec<ServiceProfile>,
    pub peer: Option<NodeId>,
    pub auth: Option<NodeId>,
}

/// The subscribers' secrets a proxy holds.
pub fn store(ids: &[u64]) -> MemoryStore {
    let mut store = MemoryStore::new(16);
    for id in ids {
        store
            .insert(
                *id,
                TerminalSecrets {
                    delegation_key: super::inline::key(*id),
                    ike: IkeConfig::new(terminal_identity(*id), super::inline::PSK),
                },
            )
            .unwrap();
    }
    store
}

impl Op {
    pub fn new(seed: u64) -> Op {
        Op::within(Sim::new(seed), "")
    }

    /// The world built inside `sim` (the tour's, which holds other chapters' networks),
    /// every network and node name starting with `tag`.
    pub fn within(mut sim: Sim, tag: &str) -> Op {
        let core = net(&mut sim, &format!("{tag}core"), "203.0.113.0/24");
        let peer_net = net(&mut sim, &format!("{tag}peer-net"), "198.51.100.0/24");
        let router = sim
            .add_router(
                &format!("{tag}router-4"),
                &[(core, ip("203.0.113.4")), (peer_net, ip("198.51.100.254"))],
            )
            .unwrap();
        sim.add_route(peer_net, "0.0.0.0/0", router).unwrap();
        sim.add_route(core, "198.51.100.0/24", router).unwrap();
        let core_tap = Tap::on(&mut sim, core);
        Op {
            sim,
            tag: tag.into(),
            core,
            peer_net,
            router,
            core_tap,
            proxies: Vec::new(),
            controls: Vec::new(),
            subscribers: Vec::new(),
            profiles: Vec::new(),
            peer: None,
            auth: None,
        }
    }

    /// A key-exchange proxy at `addr` holding these subscribers' secrets.
    pub fn proxy(&mut self, addr: &str, ids: &[u64]) -> NodeId {
        let cfg = KeyExchangeProxyConfig::new(
            ip(addr),
            IkeConfig::new(Identity::Fqdn("proxy.operator.example".into()), LINK_PSK),
        );
        let p = KeyExchangeProxy::new(
            cfg,
            store(ids),
            Box::new(self.sim.rng(addr)),
            self.sim.now(),
        )
        .unwrap();
        let node = host(
            &mut self.sim,
            &format!("{}proxy-{addr}", self.tag),
            self.core,
            addr,
            p,
        );
        self.sim.set_raw_ip(node, RawIp::All).unwrap();
        self.proxies.push(node);
        node
    }

    /// Service control `n` (1, 2, …) with access network 10.n.0.0/24, using `proxy`.
    pub fn control(&mut self, n: u8, proxy: &str) -> usize {
        self.control_with(n, proxy, |_| {})
    }

    pub fn control_with(
        &mut self,
        n: u8,
        proxy: &str,
        tweak: impl Fn(&mut ControlConfig),
    ) -> usize {
        let prefix = format!("10.{n}.0.0/24");
        let access = net(&mut self.sim, &format!("{}access-{n}", self.tag), &prefix);
        let access_addr = ip(&format!("10.{n}.0.1"));
        let core_addr = ip(&format!("203.0.113.{n}"));
        let mut cfg = ControlConfig {
            access: IfaceId(0),
            core: IfaceId(1),
            address: core_addr,
            access_address: access_addr,
            proxy: ip(proxy),
            link_ike: IkeConfig::new(Identity::Fqdn(format!("sc{n}.operator.example")), LINK_PSK),
            profiles_channel: Arc::new(ServerConfig::with_psks([auth_psk()], ANCHOR).unwrap()),
            max_profiles: 16,
            max_sessions: 4,
            outbox_bound: 1024,
        };
        tweak(&mut cfg);
        let sc = ServiceControl::new(
            cfg,
            Box::new(self.sim.rng(&format!("sc{n}"))),
            self.sim.now(),
        )
        .unwrap();
        let node = self
            .sim
            .add_inline_with(
                &format!("{}sc{n}", self.tag),
                &[(access, Some(access_addr)), (self.core, Some(core_addr))],
                sc,
            )
            .unwrap();
        self.sim.listen_inline(node, PROFILE_PORT).unwrap();
        self.sim
            .add_route(self.core, prefix.as_str(), node)
            .unwrap();
        self.sim.add_route(access, "0.0.0.0/0", node).unwrap();
        self.sim
            .add_router_route(self.router, prefix.as_str(), self.core)
            .unwrap();
        let access_tap = Tap::on(&mut self.sim, access);
        self.controls.push(Control {
            node,
            access,
            core_addr,
            access_tap,
        });
        self.controls.len() - 1
    }

    /// Subscriber `id` at 10.n.0.5 (n = its service control's number), protecting its
    /// traffic toward `peer`.
    pub fn subscriber(&mut self, id: u64, control: usize, addr: &str, peer: &str) -> NodeId {
        let spec = Spec {
            peer_addr: peer.into(),
            ..Spec::default()
        };
        let t = terminal_actor(&self.sim, &spec, id, addr, &format!("subscriber{id}"));
        let net = self.controls[control].access;
        let node = host(
            &mut self.sim,
            &format!("{}subscriber{id}", self.tag),
            net,
            addr,
            t,
        );
        self.sim.set_raw_ip(node, RawIp::All).unwrap();
        self.subscribers.push((id, node, ip(addr)));
        self.profiles.push(ServiceProfile::ike(id, ip(addr)));
        node
    }

    /// The peer: a responder, or an initiator toward `to`.
    pub fn peer(&mut self, initiate_to: Option<&str>) -> NodeId {
        let ike = IkeConfig::new(Identity::Fqdn("peer.example".into()), super::inline::PSK);
        let engine = match initiate_to {
            Some(to) => Ike::Initiator(Box::new(
                Initiator::new(
                    InitiatorConfig {
                        ike,
                        local: SocketAddr::new(ip(PEER), 500),
                        remote: SocketAddr::new(ip(to), 500),
                    },
                    Box::new(self.sim.rng("peer")),
                )
                .unwrap(),
            )),
            None => Ike::Responder(Box::new(
                Responder::new(
                    ResponderConfig::new(ike),
                    Box::new(self.sim.rng("peer")),
                    self.sim.now(),
                )
                .unwrap(),
            )),
        };
        let p = Peer::new(&self.sim, engine);
        let node = host(
            &mut self.sim,
            &format!("{}peer", self.tag),
            self.peer_net,
            PEER,
            p,
        );
        self.sim.set_raw_ip(node, RawIp::All).unwrap();
        self.peer = Some(node);
        node
    }

    /// The authentication server with every subscriber's profile; the links come up.
    pub fn finish(&mut self) -> NodeId {
        let cfg = AuthServerConfig {
            channel: Arc::new(ClientConfig::with_psk(auth_psk(), ANCHOR)),
            local: SocketAddr::new(ip(AUTH), 0),
            control_port: PROFILE_PORT,
            profiles: self.profiles.clone(),
            max_controls: 8,
            max_pending: 16,
            outbox_bound: 1024,
        };
        let a = AuthServer::new(cfg, Box::new(self.sim.rng("auth")));
        let node = host(
            &mut self.sim,
            &format!("{}auth", self.tag),
            self.core,
            AUTH,
            a,
        );
        self.auth = Some(node);
        self.run(Duration::from_secs(2));
        node
    }

    pub fn run(&mut self, d: Duration) {
        self.sim.run_for(d).unwrap();
    }

    /// Subscriber `id` attaches at service control `control`: the auth server sends the
    /// profile there.
    pub fn attach(&mut self, id: u64, control: usize) {
        let sc = self.controls[control].core_addr;
        let auth = self.auth.unwrap();
        self.sim
            .command(auth, |a: &mut AuthServer, _| a.attach(id, sc))
            .unwrap();
        self.run(Duration::from_secs(1));
    }

    pub fn sc(&self, control: usize) -> &ServiceControl {
        self.sim
            .actor::<ServiceControl>(self.controls[control].node)
            .unwrap()
    }

    pub fn sc_events(&mut self, control: usize) -> Vec<OperatorEvent> {
        events(&mut self.sim, self.controls[control].node)
    }

    pub fn proxy_events(&mut self, proxy: usize) -> Vec<OperatorEvent> {
        events(&mut self.sim, self.proxies[proxy])
    }

    pub fn terminal(&self, n: usize) -> &Terminal {
        self.sim.actor::<Terminal>(self.subscribers[n].1).unwrap()
    }

    pub fn proxy_actor(&self, n: usize) -> &KeyExchangeProxy<MemoryStore> {
        self.sim
            .actor::<KeyExchangeProxy<MemoryStore>>(self.proxies[n])
            .unwrap()
    }
}

/// The standard world: one service control, its proxy, one subscriber (id 1, 10.1.0.5),
/// the peer (a responder, or initiating toward the subscriber), the auth server, the
/// subscriber attached.
pub fn one_subscriber(seed: u64, peer_initiates: bool) -> Op {
    let mut op = Op::new(seed);
    op.proxy("203.0.113.10", &[1]);
    op.control(1, "203.0.113.10");
    op.subscriber(1, 0, "10.1.0.5", PEER);
    op.peer(peer_initiates.then_some("10.1.0.5"));
    op.finish();
    op.attach(1, 0);
    op
}

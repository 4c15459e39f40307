//! A small seed 000 world for the mutation suite: the appliance and the crypto proxy on
//! the closed network, a remote node on the open one, a plain router between (no
//! gateway, no taps: faults come from the simulator's fault hook). tests/offload.rs has
//! the full world with the seed's gateway.

use std::net::SocketAddr;
use std::time::Duration;

use deputy::channel::{ClientCertPolicy, ClientConfig, ServerConfig};
use deputy::crypto::cert::{CertificateAuthority, TrustStore};
use deputy::offload::{
    AccessPolicy, Appliance, ApplianceConfig, ApplianceParams, CryptoProxy, LinkKey, RemoteNode,
    RemoteNodeConfig, ServedAppliance, Target,
};
use deputy::sim::{LinkConfig, NetworkId, NodeId, Sim};
use deputy::{Instant, UnixTime};

use super::{Build, ip};

pub const ANCHOR: UnixTime = UnixTime(1_800_000_000);
const YEAR: u64 = 365 * 86_400;
pub const APPLIANCE: &str = "microwave";
pub const APPLIANCE_PORT: u16 = 5683;
pub const PROXY_UDP: u16 = 5684;
pub const PROXY_TCP: u16 = 8443;
pub const REMOTE_UDP: u16 = 7000;
pub const REMOTE_TCP: u16 = 7443;

pub struct SmallHome {
    pub home: NetworkId,
    pub internet: NetworkId,
    pub appliance: NodeId,
    pub proxy: NodeId,
    pub remote: NodeId,
}

fn sa(a: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(a), port)
}

impl SmallHome {
    pub fn build(sim: &mut Sim, keyed: bool) -> SmallHome {
        let mut rng = sim.rng("offload/pki");
        let ca = CertificateAuthority::generate("home CA", &mut rng);
        let home = sim.net_with(
            "home",
            "192.168.0.0/24",
            LinkConfig::with_latency(Duration::from_millis(1)),
        );
        let internet = sim.net_with(
            "internet",
            "203.0.113.0/24",
            LinkConfig::with_latency(Duration::from_millis(10)),
        );
        let router = sim
            .add_router(
                "router",
                &[(home, ip("192.168.0.1")), (internet, ip("203.0.113.1"))],
            )
            .unwrap();
        sim.add_route(home, "203.0.113.0/24", router).unwrap();
        sim.add_route(internet, "192.168.0.0/24", router).unwrap();
        let link_key = keyed.then(|| LinkKey::new(b"provisioned link key for the home").unwrap());
        let identity = ca
            .issue_identity("proxy.home", &[APPLIANCE], ANCHOR, YEAR, &mut rng)
            .unwrap();
        let mut channel = ServerConfig::with_certificate(identity, ANCHOR);
        channel.client_certs =
            ClientCertPolicy::Optional(TrustStore::with(ca.certificate().clone()));
        let mut pc = deputy::offload::ProxyConfig::new(channel, sa("192.168.0.2", PROXY_UDP));
        let mut served = ServedAppliance::new(
            sa("192.168.0.10", APPLIANCE_PORT),
            AccessPolicy::AnyAuthenticated,
        );
        if let Some(k) = &link_key {
            served.link_key = Some(k.clone());
        }
        pc.serve(APPLIANCE, served).unwrap();
        let proxy_rng = Box::new(sim.rng("offload/proxy"));
        let proxy = sim.host(
            "crypto-proxy",
            home,
            "192.168.0.2",
            CryptoProxy::new(pc, proxy_rng),
        );
        sim.listen(proxy, PROXY_TCP).unwrap();

        let mut cfg = ApplianceConfig::new(ApplianceParams {
            name: APPLIANCE.into(),
            local: sa("192.168.0.10", APPLIANCE_PORT),
            proxy: sa("192.168.0.2", PROXY_UDP),
            proxy_public: sa("192.168.0.2", PROXY_TCP),
        })
        .unwrap();
        if let Some(k) = &link_key {
            cfg.link_key = Some(k.clone());
        }
        let a_rng = Box::new(sim.rng("offload/microwave"));
        let appliance = sim.host(APPLIANCE, home, "192.168.0.10", Appliance::new(cfg, a_rng));

        let me = ca
            .issue_identity("phone", &[], ANCHOR, YEAR, &mut rng)
            .unwrap();
        let trust = TrustStore::with(ca.certificate().clone());
        let channel = ClientConfig::with_client_certificate(trust, "proxy.home", me, ANCHOR);
        let cfg = RemoteNodeConfig::new(channel, sa("203.0.113.20", REMOTE_UDP));
        let r_rng = Box::new(sim.rng("offload/phone"));
        let remote = sim.host(
            "phone",
            internet,
            "203.0.113.20",
            RemoteNode::new(cfg, r_rng),
        );
        sim.listen(remote, REMOTE_TCP).unwrap();
        SmallHome {
            home,
            internet,
            appliance,
            proxy,
            remote,
        }
    }

    pub fn target() -> Target {
        Target::new(APPLIANCE, sa("192.168.0.10", APPLIANCE_PORT))
    }

    pub fn remote_stream() -> SocketAddr {
        sa("203.0.113.20", REMOTE_TCP)
    }

    /// Flow A: the remote node sends `data` to the appliance.
    pub fn remote_send(&self, sim: &mut Sim, data: &[u8]) -> Result<(), String> {
        let target = SmallHome::target();
        sim.with_actor(self.remote, |r: &mut RemoteNode, now: Instant| {
            r.send(now, &target, data)
        })
        .map_err(|e| format!("{e}"))?
        .map_err(|e| format!("{e}"))
    }

    /// Flow B, S31: the appliance asks for a session with the remote node.
    pub fn appliance_connect(&self, sim: &mut Sim) -> Result<u64, String> {
        let to = SmallHome::remote_stream();
        sim.with_actor(self.appliance, |a: &mut Appliance, now: Instant| {
            a.connect(now, to, None)
        })
        .map_err(|e| format!("{e}"))?
        .map_err(|e| format!("{e}"))
    }

    pub fn appliance_send(&self, sim: &mut Sim, session: u64, data: &[u8]) -> Result<(), String> {
        sim.with_actor(self.appliance, |a: &mut Appliance, now: Instant| {
            a.send(now, session, data)
        })
        .map_err(|e| format!("{e}"))?
        .map_err(|e| format!("{e}"))
    }
}

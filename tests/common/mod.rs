//! What every test file shares (`mod common;`), after str0m's `tests/common.rs`: the
//! builders that put networks and hosts into a [`Sim`], datagram-probe shorthands, and (in
//! `events.rs`, shared with the tour) the one place where events are matched.

// Each test file is its own crate and uses only part of this module; without the allow
// every file would warn about the helpers it does not need.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

use deputy::Actor;
use deputy::sim::probe::Received;
use deputy::sim::{DatagramProbe, LinkConfig, NatConfig, NetworkId, NodeId, Sim};

pub mod certs;
mod events;
pub mod inline;
pub mod keyx;
pub mod mutation;
pub mod offload;
pub mod operator;
pub mod tls;
pub use events::*;

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// ----------------------------------------------------------------- world building

/// An address as the builders take it: a literal (`"10.0.0.1"`) or one already parsed.
pub trait ToIp {
    fn to_ip(self) -> IpAddr;
}

impl ToIp for &str {
    fn to_ip(self) -> IpAddr {
        ip(self)
    }
}

impl ToIp for &String {
    fn to_ip(self) -> IpAddr {
        ip(self)
    }
}

impl ToIp for IpAddr {
    fn to_ip(self) -> IpAddr {
        self
    }
}

impl ToIp for [u8; 4] {
    fn to_ip(self) -> IpAddr {
        IpAddr::from(self)
    }
}

/// The world-building calls the tests repeat, unwrapped: a test world that cannot be built
/// is a broken test, not a case to handle. Tests that check a builder's error call the
/// `Sim` method itself.
///
/// A trait on `Sim` rather than free functions so that `sim.host(.., X::new(.., sim.rng(..)))`
/// still borrows: method calls get two-phase borrows, `host(&mut sim, .., sim.rng(..))` would not.
pub trait Build {
    /// The simulator itself (the one method an implementation supplies).
    fn sim(&mut self) -> &mut Sim;

    /// A network with the default link (no latency, loss or reordering).
    fn net(&mut self, name: &str, prefix: &str) -> NetworkId {
        self.net_with(name, prefix, LinkConfig::default())
    }

    fn net_with(&mut self, name: &str, prefix: &str, link: LinkConfig) -> NetworkId {
        self.sim().add_network(name, prefix, link).unwrap()
    }

    fn host(
        &mut self,
        name: &str,
        net: NetworkId,
        addr: impl ToIp,
        actor: impl Actor<Event: Into<deputy::Event>> + 'static,
    ) -> NodeId {
        self.sim().add_host(name, net, addr.to_ip(), actor).unwrap()
    }

    /// A host whose actor is a plain datagram probe on `port`.
    fn probe(&mut self, name: &str, net: NetworkId, addr: impl ToIp, port: u16) -> NodeId {
        self.host(name, net, addr, DatagramProbe::new(port))
    }

    /// A NAPT router between `(inside, its address there)` and `(outside, public address)`.
    fn napt(
        &mut self,
        name: &str,
        (inside, inside_ip): (NetworkId, &str),
        (outside, public_ip): (NetworkId, &str),
        cfg: NatConfig,
    ) -> NodeId {
        self.sim()
            .add_napt(name, inside, ip(inside_ip), outside, ip(public_ip), cfg)
            .unwrap()
    }
}

impl Build for Sim {
    fn sim(&mut self) -> &mut Sim {
        self
    }
}

// ----------------------------------------------------------------- datagram probes

/// `node`'s [`DatagramProbe`] sends `data` to `to`, from its own port.
pub fn probe_send(sim: &mut Sim, node: NodeId, to: SocketAddr, data: impl Into<Vec<u8>>) {
    sim.with_actor(node, |p: &mut DatagramProbe, _| p.send(to, data))
        .unwrap()
        .unwrap();
}

/// … from any address `from`: the simulator lets a probe spoof its source.
pub fn probe_send_from(
    sim: &mut Sim,
    node: NodeId,
    from: SocketAddr,
    to: SocketAddr,
    data: impl Into<Vec<u8>>,
) {
    sim.with_actor(node, |p: &mut DatagramProbe, _| p.send_from(from, to, data))
        .unwrap()
        .unwrap();
}

/// Take what `node`'s probe has received so far.
pub fn probe_take(sim: &mut Sim, node: NodeId) -> Vec<Received> {
    sim.with_actor(node, |p: &mut DatagramProbe, _| p.take_received())
        .unwrap()
}

// ----------------------------------------------------------------- events

/// [`take_events`], unwrapped.
pub fn events<T: FromEvent>(sim: &mut Sim, node: NodeId) -> Vec<T> {
    take_events(sim, node).unwrap()
}

//! What every test file shares (`mod common;`), after str0m's `tests/common.rs`: the
//! builders that put networks and hosts into a [`Sim`], and the one place where the crate's
//! aggregate [`Event`] is taken apart into a protocol's own event type.
//!
//! Event matching lives only here on purpose: when the shape of `Event` (or of the
//! `Output::Event` an actor hands out) changes, the tests change in one place.

// Each test file is its own crate and uses only part of this module; without the allow
// every file would warn about the helpers it does not need.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

use deputy::channel::ChannelEvent;
use deputy::ikev2::IkeEvent;
use deputy::offload::{ApplianceEvent, OffloadEvent, ProxyEvent, RemoteEvent};
use deputy::rendezvous::RendezvousEvent;
use deputy::sim::probe::Received;
use deputy::sim::{DatagramProbe, LinkConfig, NatConfig, NetworkId, NodeId, Sim};
use deputy::{Actor, Event};

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
        actor: impl Actor + 'static,
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

/// A protocol's own event type, as found inside the aggregate [`Event`].
// The `Err` hands the event back (it was another protocol's), it is no error: boxing it
// would cost every event a box to please a lint about error sizes.
#[allow(clippy::result_large_err)]
pub trait FromEvent: Sized {
    /// `Err(e)` when `e` is some other protocol's event.
    fn from_event(e: Event) -> Result<Self, Event>;
}

/// `impl FromEvent` for an event type that is one variant of `Event` ...
macro_rules! from_event {
    ($ty:ty, $variant:ident) => {
        impl FromEvent for $ty {
            fn from_event(e: Event) -> Result<Self, Event> {
                match e {
                    Event::$variant(x) => Ok(x),
                    other => Err(other),
                }
            }
        }
    };
}

/// … or one variant of `OffloadEvent` (one per seed 000 actor).
macro_rules! from_offload_event {
    ($ty:ty, $variant:ident) => {
        impl FromEvent for $ty {
            fn from_event(e: Event) -> Result<Self, Event> {
                match OffloadEvent::from_event(e)? {
                    OffloadEvent::$variant(x) => Ok(x),
                    other => Err(Event::Offload(other)),
                }
            }
        }
    };
}

from_event!(ChannelEvent, Channel);
from_event!(IkeEvent, Ike);
from_event!(RendezvousEvent, Rendezvous);
from_event!(OffloadEvent, Offload);
from_offload_event!(ApplianceEvent, Appliance);
from_offload_event!(ProxyEvent, Proxy);
from_offload_event!(RemoteEvent, Remote);

/// `e` if it is a `T`.
pub fn event<T: FromEvent>(e: Event) -> Option<T> {
    T::from_event(e).ok()
}

/// `e`, which must be a `T`: for an actor that emits only its own protocol's events.
pub fn expect_event<T: FromEvent>(e: Event) -> T {
    T::from_event(e).unwrap_or_else(|other| panic!("unexpected event {other:?}"))
}

/// Take the events `node` reported since the last call, keeping the `T`s (the others are
/// dropped: the simulator hands out each event once).
pub fn events<T: FromEvent>(sim: &mut Sim, node: NodeId) -> Vec<T> {
    sim.events(node)
        .unwrap()
        .into_iter()
        .filter_map(|(_, e)| T::from_event(e).ok())
        .collect()
}

//! Networks (segments), prefixes, link models and next-hop lookup.

use std::fmt;
use std::net::IpAddr;
use std::prelude::rust_2024::*;
use std::str::FromStr;
use std::time::Duration;

use super::{NodeId, SimError};

/// A network segment: one IP prefix, one link model, the nodes attached to it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetworkId(pub(crate) u32);

impl NetworkId {
    /// The index of the network in creation order.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The id of the `i`-th network created, as [`NodeId::from_index`](super::NodeId::from_index)
    /// is for nodes (calls with an id that names no network fail with
    /// [`SimError::UnknownNetwork`](super::SimError::UnknownNetwork)).
    ///
    /// ```
    /// use deputy::sim::{LinkConfig, NetworkId, Sim};
    ///
    /// let mut sim = Sim::new(1);
    /// let lan = sim.add_network("lan", "10.0.0.0/24", LinkConfig::default()).unwrap();
    /// // An id kept as a number (in a log, a config file) names the same network again.
    /// assert_eq!(NetworkId::from_index(lan.index()), lan);
    /// ```
    pub fn from_index(i: usize) -> NetworkId {
        NetworkId(u32::try_from(i).unwrap_or(u32::MAX))
    }
}

impl fmt::Debug for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net#{}", self.0)
    }
}

/// An IPv4 or IPv6 prefix such as `192.168.1.0/24` or `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// A prefix of `len` bits; host bits of `addr` are cleared. Fails if `len` is longer
    /// than the address.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, SimError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(SimError::BadPrefix);
        }
        Ok(Prefix {
            addr: mask(addr, len),
            len,
        })
    }

    /// The prefix `0.0.0.0/0` or `::/0` of `addr`'s family: a default route.
    pub fn default_for(addr: IpAddr) -> Prefix {
        let any = if addr.is_ipv4() {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u8; 16])
        };
        Prefix { addr: any, len: 0 }
    }

    /// The host prefix (`/32` or `/128`) of one address.
    pub fn host(addr: IpAddr) -> Prefix {
        Prefix {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is a zero-length (default) prefix.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` lies inside the prefix (families must match).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Prefix, SimError> {
        let (a, l) = s.split_once('/').ok_or(SimError::BadPrefix)?;
        let addr: IpAddr = a.parse().map_err(|_| SimError::BadPrefix)?;
        let len: u8 = l.parse().map_err(|_| SimError::BadPrefix)?;
        Prefix::new(addr, len)
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::from((bits & m).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::from((bits & m).to_be_bytes())
        }
    }
}

/// How a network treats the packets put on it. Every random draw comes from the
/// simulation's seeded generator.
///
/// - Each packet is delayed by `latency` plus a uniform draw from `[0, jitter]`. Without
///   reordering, deliveries toward one node never overtake each other (jitter stretches
///   the queue instead).
/// - With probability `loss` a packet is lost (recorded as [`DropReason::Loss`]).
/// - With probability `duplicate` a second copy is delivered, with its own delay.
/// - With probability `reorder` a packet is held back by an extra `reorder_delay` and may
///   be overtaken by later packets.
///
/// These apply to every packet: UDP, raw IP, and TCP segments alike. The simulator's TCP
/// recovers from loss by retransmission and puts segments back in order (see the
/// [module docs](super)).
///
/// [`DropReason::Loss`]: super::DropReason::Loss
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Largest extra random delay.
    pub jitter: Duration,
    /// Probability that a packet is lost, 0.0 ..= 1.0.
    pub loss: f64,
    /// Probability that a packet is duplicated, 0.0 ..= 1.0.
    pub duplicate: f64,
    /// Probability that a packet is held back and reordered, 0.0 ..= 1.0.
    pub reorder: f64,
    /// Extra delay of a reordered packet.
    pub reorder_delay: Duration,
}

impl Default for LinkConfig {
    /// 1 ms latency, no jitter, no loss, duplication or reordering.
    fn default() -> Self {
        LinkConfig {
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
        }
    }
}

impl LinkConfig {
    /// A link with this latency and nothing else.
    pub fn with_latency(latency: Duration) -> Self {
        LinkConfig {
            latency,
            ..LinkConfig::default()
        }
    }

    /// Set the jitter.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Set the loss probability.
    pub fn loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// Set the duplication probability.
    pub fn duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }

    /// Set the reordering probability and the extra delay of a reordered packet.
    pub fn reorder(mut self, p: f64, delay: Duration) -> Self {
        self.reorder = p;
        self.reorder_delay = delay;
        self
    }
}

/// A node's place on a network.
#[derive(Clone, Debug)]
pub(crate) struct Attachment {
    pub node: NodeId,
    pub iface: usize,
    pub addr: Option<IpAddr>,
    /// For inline nodes: the other networks the node joins (it bridges to them).
    pub bridges_to: Vec<NetworkId>,
}

/// "Packets for `prefix` on this network go to `via`."
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route {
    pub prefix: Prefix,
    pub via: NodeId,
}

#[derive(Debug)]
pub(crate) struct Network {
    pub name: String,
    pub prefix: Prefix,
    pub link: LinkConfig,
    pub attachments: Vec<Attachment>,
    pub routes: Vec<Route>,
}

/// Where a packet goes next on a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hop {
    pub node: NodeId,
    pub iface: usize,
}

const MAX_BRIDGE_DEPTH: usize = 4;

/// The next hop for `dst` on `net`, never `exclude` (the node putting the packet on the
/// network) unless `dst` is its own address. Longest match wins among: an attached node
/// with address `dst` (a host match), the network's routes, and inline nodes behind which
/// `dst` is reachable (bridging); on equal length a direct match beats a bridged one.
pub(crate) fn next_hop(
    nets: &[Network],
    net: NetworkId,
    dst: IpAddr,
    exclude: NodeId,
) -> Option<Hop> {
    reach(nets, net, dst, exclude, 0).map(|(hop, _, _)| hop)
}

/// How well `net` reaches `dst` for a packet `exclude` puts on it: the length of the
/// matching prefix and the kind of match (2 an attached address, 1 a route, 0 bridged),
/// compared in that order. `None` if the network has no next hop for it. An inline node
/// with several interfaces compares its networks by this to choose where its own
/// packets leave, as a router compares its routes.
pub(crate) fn reach_quality(
    nets: &[Network],
    net: NetworkId,
    dst: IpAddr,
    exclude: NodeId,
) -> Option<(u8, u8)> {
    reach(nets, net, dst, exclude, 0).map(|(_, len, rank)| (len, rank))
}

fn reach(
    nets: &[Network],
    net: NetworkId,
    dst: IpAddr,
    exclude: NodeId,
    depth: usize,
) -> Option<(Hop, u8, u8)> {
    let n = nets.get(net.index())?;
    let host_len = if dst.is_ipv4() { 32 } else { 128 };
    for a in &n.attachments {
        if a.addr == Some(dst) {
            return Some((
                Hop {
                    node: a.node,
                    iface: a.iface,
                },
                host_len,
                2,
            ));
        }
    }
    let mut best: Option<(Hop, u8, u8)> = None;
    let mut consider = |cand: (Hop, u8, u8)| {
        let better = match best {
            None => true,
            Some((_, len, rank)) => (cand.1, cand.2) > (len, rank),
        };
        if better {
            best = Some(cand);
        }
    };
    for r in &n.routes {
        if r.via != exclude
            && r.prefix.contains(dst)
            && let Some(a) = n.attachments.iter().find(|a| a.node == r.via)
        {
            {
                consider((
                    Hop {
                        node: a.node,
                        iface: a.iface,
                    },
                    r.prefix.len(),
                    1,
                ));
            }
        }
    }
    if depth < MAX_BRIDGE_DEPTH {
        for a in &n.attachments {
            if a.node == exclude || a.bridges_to.is_empty() {
                continue;
            }
            for other in &a.bridges_to {
                if let Some((_, len, _)) = reach(nets, *other, dst, a.node, depth + 1) {
                    consider((
                        Hop {
                            node: a.node,
                            iface: a.iface,
                        },
                        len,
                        0,
                    ));
                }
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p: Prefix = "192.168.1.77/24".parse().unwrap();
        assert_eq!(p.to_string(), "192.168.1.0/24");
        assert!(p.contains("192.168.1.200".parse().unwrap()));
        assert!(!p.contains("192.168.2.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let d: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(d.contains("8.8.8.8".parse().unwrap()));
        let v6: Prefix = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("10.0.0.0".parse::<Prefix>().is_err());
        assert!("nonsense/8".parse::<Prefix>().is_err());
    }
}

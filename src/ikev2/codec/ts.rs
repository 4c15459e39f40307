//! Traffic selectors as they appear in TSi/TSr payloads (RFC 7296 §3.13), and their
//! intersection, used for narrowing (§2.9).
//!
//! This is the wire form: it can hold what a peer sent even when malformed (start > end,
//! mixed families). Configured and negotiated selectors are the data plane's
//! [`crate::ipsec::TrafficSelector`], which is well formed by construction;
//! [`to_wire`] and [`from_wire`] convert.

use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::be16;
use crate::ikev2::IkeError;
use crate::ikev2::consts::ts_type;

/// One traffic selector on the wire: an address range, a port range and an IP protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// IP protocol (0 = any).
    pub ip_protocol: u8,
    /// First port (0 with `end_port` 65535 = any).
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
    /// First address.
    pub start: IpAddr,
    /// Last address (same family as `start`).
    pub end: IpAddr,
}

impl TrafficSelector {
    /// Every IPv4 address, any protocol and port.
    pub const fn any_v4() -> TrafficSelector {
        TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 0xffff,
            start: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            end: IpAddr::V4(Ipv4Addr::BROADCAST),
        }
    }

    /// Every IPv6 address, any protocol and port.
    pub const fn any_v6() -> TrafficSelector {
        TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 0xffff,
            start: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            end: IpAddr::V6(Ipv6Addr::new(
                0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
            )),
        }
    }

    /// One host, any protocol and port.
    pub const fn host(addr: IpAddr) -> TrafficSelector {
        TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 0xffff,
            start: addr,
            end: addr,
        }
    }

    /// A prefix (`10.0.0.0/24`), any protocol and port. Host bits of `addr` are ignored;
    /// a prefix length beyond the family's width is clamped.
    pub fn prefix(addr: IpAddr, len: u8) -> TrafficSelector {
        let (start, end) = match addr {
            IpAddr::V4(a) => {
                let len = u32::from(len.min(32));
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                let base = u32::from(a) & mask;
                (
                    IpAddr::V4(Ipv4Addr::from(base)),
                    IpAddr::V4(Ipv4Addr::from(base | !mask)),
                )
            }
            IpAddr::V6(a) => {
                let len = u32::from(len.min(128));
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                let base = u128::from(a) & mask;
                (
                    IpAddr::V6(Ipv6Addr::from(base)),
                    IpAddr::V6(Ipv6Addr::from(base | !mask)),
                )
            }
        };
        TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 0xffff,
            start,
            end,
        }
    }

    /// Whether the selector is well formed: one address family, start ≤ end for addresses
    /// and ports.
    pub fn is_valid(&self) -> bool {
        let ((f1, a), (f2, b)) = (ip_num(self.start), ip_num(self.end));
        f1 == f2 && a <= b && self.start_port <= self.end_port
    }

    /// Whether `addr`, `protocol` and `port` fall inside the selector.
    pub fn contains(&self, addr: IpAddr, protocol: u8, port: u16) -> bool {
        let (f, a) = ip_num(addr);
        let (fs, s) = ip_num(self.start);
        let (_, e) = ip_num(self.end);
        f == fs
            && s <= a
            && a <= e
            && (self.ip_protocol == 0 || self.ip_protocol == protocol)
            && self.start_port <= port
            && port <= self.end_port
    }

    /// The selector covering exactly what both cover, if anything.
    pub fn intersect(&self, other: &TrafficSelector) -> Option<TrafficSelector> {
        let ((f1, s1), (_, e1)) = (ip_num(self.start), ip_num(self.end));
        let ((f2, s2), (_, e2)) = (ip_num(other.start), ip_num(other.end));
        if f1 != f2 {
            return None;
        }
        let proto = match (self.ip_protocol, other.ip_protocol) {
            (0, p) | (p, 0) => p,
            (a, b) if a == b => a,
            _ => return None,
        };
        let (s, e) = (s1.max(s2), e1.min(e2));
        let (sp, ep) = (
            self.start_port.max(other.start_port),
            self.end_port.min(other.end_port),
        );
        if s > e || sp > ep {
            return None;
        }
        Some(TrafficSelector {
            ip_protocol: proto,
            start_port: sp,
            end_port: ep,
            start: num_ip(f1, s),
            end: num_ip(f1, e),
        })
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn covers(&self, other: &TrafficSelector) -> bool {
        self.intersect(other).as_ref() == Some(other)
    }
}

impl From<&crate::ipsec::TrafficSelector> for TrafficSelector {
    /// The wire form of a configured or negotiated selector.
    fn from(t: &crate::ipsec::TrafficSelector) -> TrafficSelector {
        TrafficSelector {
            ip_protocol: t.protocol,
            start_port: t.ports.start(),
            end_port: t.ports.end(),
            start: t.addrs.start(),
            end: t.addrs.end(),
        }
    }
}

impl TrafficSelector {
    /// As the data plane's selector, if well formed ([`TrafficSelector::is_valid`]).
    pub fn to_ipsec(&self) -> Option<crate::ipsec::TrafficSelector> {
        use crate::ipsec::{AddrRange, PortRange};
        Some(crate::ipsec::TrafficSelector {
            addrs: AddrRange::new(self.start, self.end).ok()?,
            protocol: self.ip_protocol,
            ports: PortRange::new(self.start_port, self.end_port).ok()?,
        })
    }
}

/// The wire form of configured or negotiated selectors.
pub fn to_wire(ts: &[crate::ipsec::TrafficSelector]) -> Vec<TrafficSelector> {
    ts.iter().map(TrafficSelector::from).collect()
}

/// Selectors received (and checked) as the data plane's; `None` if any is malformed.
pub fn from_wire(ts: &[TrafficSelector]) -> Option<Vec<crate::ipsec::TrafficSelector>> {
    ts.iter().map(TrafficSelector::to_ipsec).collect()
}

/// Narrow `proposed` to what `allowed` permits (RFC 7296 §2.9): every non-empty
/// intersection of a proposed selector with an allowed one, in the proposer's order,
/// duplicates removed, at most `bound` selectors.
pub fn narrow(
    proposed: &[TrafficSelector],
    allowed: &[TrafficSelector],
    bound: usize,
) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for p in proposed {
        for a in allowed {
            if let Some(x) = p.intersect(a)
                && !out.contains(&x)
                && out.len() < bound
            {
                out.push(x);
            }
        }
    }
    out
}

/// (family, value) of an address: 4 or 6, and the address as an integer.
fn ip_num(a: IpAddr) -> (u8, u128) {
    match a {
        IpAddr::V4(v) => (4, u128::from(u32::from(v))),
        IpAddr::V6(v) => (6, u128::from(v)),
    }
}

fn num_ip(family: u8, n: u128) -> IpAddr {
    if family == 4 {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

pub(super) fn decode_ts(data: &[u8]) -> Result<Vec<TrafficSelector>, IkeError> {
    if data.len() < 4 {
        return Err(IkeError::BadLength("TS"));
    }
    let count = usize::from(data[0]);
    let mut rest = &data[4..];
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        if rest.len() < 8 {
            return Err(IkeError::BadLength("traffic selector"));
        }
        let ty = rest[0];
        let len = usize::from(be16(rest, 2)?);
        let alen = match ty {
            ts_type::IPV4_ADDR_RANGE => 4,
            ts_type::IPV6_ADDR_RANGE => 16,
            _ => return Err(IkeError::Malformed("traffic selector type")),
        };
        if len != 8 + 2 * alen || rest.len() < len {
            return Err(IkeError::BadLength("traffic selector"));
        }
        let addr = |b: &[u8]| -> IpAddr {
            if alen == 4 {
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            } else {
                let mut o = [0u8; 16];
                o.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(o))
            }
        };
        out.push(TrafficSelector {
            ip_protocol: rest[1],
            start_port: be16(rest, 4)?,
            end_port: be16(rest, 6)?,
            start: addr(&rest[8..8 + alen]),
            end: addr(&rest[8 + alen..8 + 2 * alen]),
        });
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        return Err(IkeError::BadLength("TS"));
    }
    Ok(out)
}

pub(super) fn encode_ts(ts: &[TrafficSelector], out: &mut Vec<u8>) -> Result<(), IkeError> {
    let count = u8::try_from(ts.len()).map_err(|_| IkeError::Unencodable("TS count"))?;
    out.extend_from_slice(&[count, 0, 0, 0]);
    for t in ts {
        match (t.start, t.end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => {
                out.extend_from_slice(&[ts_type::IPV4_ADDR_RANGE, t.ip_protocol, 0, 16]);
                out.extend_from_slice(&t.start_port.to_be_bytes());
                out.extend_from_slice(&t.end_port.to_be_bytes());
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&e.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(e)) => {
                out.extend_from_slice(&[ts_type::IPV6_ADDR_RANGE, t.ip_protocol, 0, 40]);
                out.extend_from_slice(&t.start_port.to_be_bytes());
                out.extend_from_slice(&t.end_port.to_be_bytes());
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&e.octets());
            }
            _ => return Err(IkeError::Unencodable("TS with mixed address families")),
        }
    }
    Ok(())
}

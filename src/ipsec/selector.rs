//! Selectors: which packets a policy or an SA covers.
//!
//! Two shapes, both from RFC 4301 §4.4.1.1 and RFC 7296 §3.13:
//!
//! - [`Selector`] is two-sided (source and destination) and is what SPD entries and
//!   acquire requests use: source/destination address ranges, an optional IP protocol, and
//!   source/destination port ranges — the columns of seed 001's policy table.
//! - [`TrafficSelector`] is one-sided, exactly an IKEv2 TS payload entry (address range,
//!   protocol, port range). A Child SA carries a list for each side (TSi/TSr as seen from
//!   this end: `local_ts` and `remote_ts`).
//!
//! For ICMP and ICMPv6 the "ports" are the message type (source port) and code
//! (destination port), as RFC 4301 §4.4.1.1 prescribes; seed 001's `icmp 135 -` row is
//! `protocol 58, source ports 135..=135, destination ports any`.

use core::fmt;
use core::net::IpAddr;
use core::str::FromStr;

use super::IpsecError;
use super::packet::PacketInfo;

/// An inclusive range of addresses of one family (`start <= end`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrRange {
    start: IpAddr,
    end: IpAddr,
}

impl AddrRange {
    /// The range `start..=end`. Both must be of the same family and `start <= end`.
    pub fn new(start: IpAddr, end: IpAddr) -> Result<AddrRange, IpsecError> {
        match (start, end) {
            (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => Ok(AddrRange { start, end }),
            (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => Ok(AddrRange { start, end }),
            _ => Err(IpsecError::AddressRange),
        }
    }

    /// The addresses of `addr/len` (CIDR prefix). Host bits of `addr` are ignored.
    pub fn prefix(addr: IpAddr, len: u8) -> Result<AddrRange, IpsecError> {
        match addr {
            IpAddr::V4(a) => {
                if len > 32 {
                    return Err(IpsecError::PrefixLength(len));
                }
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                let base = u32::from(a) & mask;
                Ok(AddrRange {
                    start: IpAddr::V4(base.into()),
                    end: IpAddr::V4((base | !mask).into()),
                })
            }
            IpAddr::V6(a) => {
                if len > 128 {
                    return Err(IpsecError::PrefixLength(len));
                }
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                let base = u128::from(a) & mask;
                Ok(AddrRange {
                    start: IpAddr::V6(base.into()),
                    end: IpAddr::V6((base | !mask).into()),
                })
            }
        }
    }

    /// Exactly one address.
    pub fn host(addr: IpAddr) -> AddrRange {
        AddrRange {
            start: addr,
            end: addr,
        }
    }

    /// Every IPv4 address.
    pub fn any_v4() -> AddrRange {
        AddrRange {
            start: IpAddr::V4(0u32.into()),
            end: IpAddr::V4(u32::MAX.into()),
        }
    }

    /// Every IPv6 address.
    pub fn any_v6() -> AddrRange {
        AddrRange {
            start: IpAddr::V6(0u128.into()),
            end: IpAddr::V6(u128::MAX.into()),
        }
    }

    /// First address.
    pub fn start(&self) -> IpAddr {
        self.start
    }

    /// Last address.
    pub fn end(&self) -> IpAddr {
        self.end
    }

    /// Whether the range holds IPv4 addresses.
    pub fn is_ipv4(&self) -> bool {
        self.start.is_ipv4()
    }

    /// Whether `addr` lies in the range (an address of the other family never does).
    #[inline]
    pub fn contains(&self, addr: IpAddr) -> bool {
        // Compared as integers, by reference: every packet checks a few of these.
        match (&self.start, &self.end, &addr) {
            (IpAddr::V4(s), IpAddr::V4(e), IpAddr::V4(a)) => {
                (s.to_bits()..=e.to_bits()).contains(&a.to_bits())
            }
            (IpAddr::V6(s), IpAddr::V6(e), IpAddr::V6(a)) => {
                (s.to_bits()..=e.to_bits()).contains(&a.to_bits())
            }
            _ => false,
        }
    }

    /// Whether every address of `other` lies in this range.
    pub fn covers(&self, other: &AddrRange) -> bool {
        self.contains(other.start) && self.contains(other.end)
    }
}

impl fmt::Debug for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for AddrRange {
    type Err = IpsecError;

    /// `"10.0.0.0/24"`, `"2001::1"` (a host), `"2001::1/128"`, or `"10.0.0.1-10.0.0.9"`.
    fn from_str(s: &str) -> Result<AddrRange, IpsecError> {
        let bad = IpsecError::AddressSyntax;
        if let Some((addr, len)) = s.split_once('/') {
            let addr = IpAddr::from_str(addr).map_err(|_| bad.clone())?;
            let len = u8::from_str(len).map_err(|_| bad)?;
            AddrRange::prefix(addr, len)
        } else if let Some((a, b)) = s.split_once('-') {
            let a = IpAddr::from_str(a).map_err(|_| bad.clone())?;
            let b = IpAddr::from_str(b).map_err(|_| bad)?;
            AddrRange::new(a, b)
        } else {
            Ok(AddrRange::host(IpAddr::from_str(s).map_err(|_| bad)?))
        }
    }
}

/// An inclusive range of ports (or ICMP types/codes), `start <= end`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// Every port; also matches packets that carry no ports at all.
    pub const ANY: PortRange = PortRange {
        start: 0,
        end: u16::MAX,
    };

    /// The range `start..=end`.
    pub fn new(start: u16, end: u16) -> Result<PortRange, IpsecError> {
        if start <= end {
            Ok(PortRange { start, end })
        } else {
            Err(IpsecError::PortRange)
        }
    }

    /// Exactly one port.
    pub const fn single(port: u16) -> PortRange {
        PortRange {
            start: port,
            end: port,
        }
    }

    /// First port.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// Last port.
    pub fn end(&self) -> u16 {
        self.end
    }

    /// Whether this is [`PortRange::ANY`].
    pub fn is_any(&self) -> bool {
        *self == PortRange::ANY
    }

    /// Whether a packet with this port (`None`: the packet has no ports, or they are not
    /// visible, e.g. in a non-first fragment) matches. `ANY` matches everything; any other
    /// range needs a port inside it.
    pub fn matches(&self, port: Option<u16>) -> bool {
        self.is_any() || port.is_some_and(|p| self.start <= p && p <= self.end)
    }
}

impl fmt::Debug for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            f.write_str("any")
        } else if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// A two-sided packet selector: the columns of an SPD entry (seed 001's policy table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Selector {
    /// Source addresses.
    pub src: AddrRange,
    /// Destination addresses.
    pub dst: AddrRange,
    /// IP protocol (upper-layer next header), `None` for any.
    pub protocol: Option<u8>,
    /// Source ports; for ICMP/ICMPv6 the message type.
    pub src_ports: PortRange,
    /// Destination ports; for ICMP/ICMPv6 the message code.
    pub dst_ports: PortRange,
}

impl Selector {
    /// Any protocol and port between `src` and `dst`.
    pub fn new(src: AddrRange, dst: AddrRange) -> Selector {
        Selector {
            src,
            dst,
            protocol: None,
            src_ports: PortRange::ANY,
            dst_ports: PortRange::ANY,
        }
    }

    /// Parse the address columns, e.g. `Selector::parse("10.0.0.1/32", "10.0.0.0/24")`.
    pub fn parse(src: &str, dst: &str) -> Result<Selector, IpsecError> {
        Ok(Selector::new(src.parse()?, dst.parse()?))
    }

    /// Restrict to one IP protocol.
    pub fn protocol(mut self, protocol: u8) -> Selector {
        self.protocol = Some(protocol);
        self
    }

    /// Restrict the source ports (ICMP: the type).
    pub fn src_ports(mut self, ports: PortRange) -> Selector {
        self.src_ports = ports;
        self
    }

    /// Restrict the destination ports (ICMP: the code).
    pub fn dst_ports(mut self, ports: PortRange) -> Selector {
        self.dst_ports = ports;
        self
    }

    /// The selector with source and destination swapped (the reverse direction).
    pub fn mirrored(&self) -> Selector {
        Selector {
            src: self.dst,
            dst: self.src,
            protocol: self.protocol,
            src_ports: self.dst_ports,
            dst_ports: self.src_ports,
        }
    }

    /// Whether the packet described by `info` matches.
    pub fn matches(&self, info: &PacketInfo) -> bool {
        self.src.contains(info.src)
            && self.dst.contains(info.dst)
            && self.protocol.is_none_or(|p| p == info.protocol)
            && self.src_ports.matches(info.src_port)
            && self.dst_ports.matches(info.dst_port)
    }

    /// The narrowest selector for exactly this packet (what an acquire asks for).
    pub fn for_packet(info: &PacketInfo) -> Selector {
        let port = |p: Option<u16>| p.map_or(PortRange::ANY, PortRange::single);
        Selector {
            src: AddrRange::host(info.src),
            dst: AddrRange::host(info.dst),
            protocol: Some(info.protocol),
            src_ports: port(info.src_port),
            dst_ports: port(info.dst_port),
        }
    }
}

/// One IKEv2 traffic selector (RFC 7296 §3.13.1): an address range, a protocol (0 = any)
/// and a port range, describing one side of a Child SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// Addresses.
    pub addrs: AddrRange,
    /// IP protocol; 0 means any.
    pub protocol: u8,
    /// Ports (for ICMP: type on the source side, code on the destination side).
    pub ports: PortRange,
}

impl TrafficSelector {
    /// Any protocol and port for `addrs`.
    pub fn new(addrs: AddrRange) -> TrafficSelector {
        TrafficSelector {
            addrs,
            protocol: 0,
            ports: PortRange::ANY,
        }
    }

    /// Every IPv4 address, any protocol (`0.0.0.0/0`).
    pub fn any_v4() -> TrafficSelector {
        TrafficSelector::new(AddrRange::any_v4())
    }

    /// Every IPv6 address, any protocol (`::/0`).
    pub fn any_v6() -> TrafficSelector {
        TrafficSelector::new(AddrRange::any_v6())
    }

    /// Exactly one host, any protocol and port.
    pub fn host(addr: IpAddr) -> TrafficSelector {
        TrafficSelector::new(AddrRange::host(addr))
    }

    /// The addresses of `addr/len`, any protocol and port. Host bits of `addr` are
    /// ignored; a prefix length beyond the family's width is clamped to it (a host).
    pub fn prefix(addr: IpAddr, len: u8) -> TrafficSelector {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        // With the length clamped the prefix always exists; the fallback is never taken.
        let addrs = AddrRange::prefix(addr, len.min(max)).unwrap_or(AddrRange::host(addr));
        TrafficSelector::new(addrs)
    }

    /// Whether a packet's address, protocol and port on this side match.
    pub fn matches(&self, addr: IpAddr, protocol: u8, port: Option<u16>) -> bool {
        self.addrs.contains(addr)
            && (self.protocol == 0 || self.protocol == protocol)
            && self.ports.matches(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn prefixes_and_ranges_parse_and_contain() {
        let r: AddrRange = "10.0.0.0/24".parse().unwrap();
        assert!(r.contains("10.0.0.255".parse().unwrap()));
        assert!(!r.contains("10.0.1.0".parse().unwrap()));
        assert!(!r.contains("::1".parse().unwrap()));
        let host: AddrRange = "2001::1".parse().unwrap();
        assert_eq!(host, "2001::1/128".parse().unwrap());
        assert!(host.contains("2001::1".parse().unwrap()));
        assert!(!host.contains("2001::2".parse().unwrap()));
        let r: AddrRange = "10.0.0.9/0".parse().unwrap();
        assert_eq!(r, AddrRange::any_v4());
        assert_eq!("::/0".parse::<AddrRange>().unwrap(), AddrRange::any_v6());
        assert!(AddrRange::any_v6().covers(&host));
        assert_eq!(
            "10.0.0.1-10.0.0.9"
                .parse::<AddrRange>()
                .unwrap()
                .to_string(),
            "10.0.0.1-10.0.0.9"
        );
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.9-10.0.0.1",
            "10.0.0.1-::1",
            "x",
            "1.2.3.4/x",
        ] {
            assert!(bad.parse::<AddrRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn traffic_selector_constructors() {
        let p = TrafficSelector::prefix("10.1.2.3".parse().unwrap(), 24);
        assert_eq!(p.addrs, "10.1.2.0/24".parse().unwrap());
        assert_eq!((p.protocol, p.ports), (0, PortRange::ANY));
        let h = TrafficSelector::prefix("2001:db8::7".parse().unwrap(), 200);
        assert_eq!(h, TrafficSelector::host("2001:db8::7".parse().unwrap()));
        assert_eq!(
            TrafficSelector::prefix("10.0.0.1".parse().unwrap(), 0),
            TrafficSelector::any_v4()
        );
    }

    #[test]
    fn port_ranges_match_and_any_matches_portless_packets() {
        let r = PortRange::new(100, 200).unwrap();
        assert!(r.matches(Some(100)) && r.matches(Some(200)));
        assert!(!r.matches(Some(99)) && !r.matches(Some(201)) && !r.matches(None));
        assert!(PortRange::ANY.matches(None));
        assert!(PortRange::new(5, 4).is_err());
    }
}

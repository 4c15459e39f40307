//! Raw IPv4/IPv6 packets: building, parsing and rewriting, with `etherparse`.
//!
//! Everything the simulator puts on a network is a real IP packet: UDP datagrams and TCP
//! segments get real headers with correct checksums, and IP-layer actors exchange whole
//! packets. These helpers are public so tests and IP-layer actors can build and inspect the
//! same packets the simulator does.
//!
//! ```
//! use deputy::sim::packet::{self, PROTO_UDP};
//!
//! let from = "192.0.2.1:5000".parse().unwrap();
//! let to = "198.51.100.7:53".parse().unwrap();
//! let bytes = packet::build_udp(from, to, 64, b"hello").unwrap();
//! let info = packet::parse(&bytes).unwrap();
//! assert_eq!(info.protocol, PROTO_UDP);
//! assert_eq!(info.src_socket(), Some(from));
//! assert_eq!(info.payload, b"hello");
//! ```

use std::net::{IpAddr, SocketAddr};
use std::prelude::rust_2024::*;

use etherparse::{
    IpHeaders, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder, TcpHeader, UdpHeader,
};

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of IPv4-in-IP encapsulation.
pub const PROTO_IPIP: u8 = 4;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of IPv6-in-IP encapsulation.
pub const PROTO_IPV6: u8 = 41;
/// IP protocol number of ESP (RFC 4303).
pub const PROTO_ESP: u8 = 50;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// Why a packet could not be built or parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// The IPv4/IPv6 header is broken or truncated.
    #[error("malformed IP header")]
    BadIpHeader,
    /// The UDP header is broken or truncated.
    #[error("malformed UDP header")]
    BadUdpHeader,
    /// The UDP length field disagrees with the packet.
    #[error("UDP length field does not fit the packet")]
    BadUdpLength,
    /// The TCP header is broken or truncated.
    #[error("malformed TCP header")]
    BadTcpHeader,
    /// The transport segment is shorter than its ports.
    #[error("transport segment too short")]
    ShortTransport,
    /// An IPv4 header, UDP or TCP checksum does not match the contents.
    #[error("bad checksum")]
    BadChecksum,
    /// Source and destination are of different IP families.
    #[error("source and destination are of different IP families")]
    FamilyMismatch,
    /// The payload does not fit in one packet.
    #[error("payload too large for one packet")]
    TooLarge,
}

/// TCP header flags the simulator uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TcpFlags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
    /// PSH.
    pub psh: bool,
}

impl TcpFlags {
    /// A short text like `SYN,ACK`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (on, name) in [
            (self.syn, "SYN"),
            (self.fin, "FIN"),
            (self.rst, "RST"),
            (self.psh, "PSH"),
            (self.ack, "ACK"),
        ] {
            if on {
                parts.push(name);
            }
        }
        parts.join(",")
    }
}

/// The TCP fields of a parsed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpInfo {
    /// Flags.
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful when `flags.ack`).
    pub ack: u32,
    /// Advertised window.
    pub window: u16,
}

/// What [`parse`] found in a packet. Borrows the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number of the payload (after any IPv6 extension headers).
    pub protocol: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// UDP or TCP source and destination ports (not for fragments).
    pub ports: Option<(u16, u16)>,
    /// TCP header fields, for TCP.
    pub tcp: Option<TcpInfo>,
    /// The UDP/TCP payload for UDP and TCP; otherwise the whole IP payload.
    pub payload: &'a [u8],
    /// Whether the packet is an IP fragment (its transport header is not parsed).
    pub fragment: bool,
    /// Length of the whole packet in bytes.
    pub len: usize,
    header_len: usize,
}

impl PacketInfo<'_> {
    /// The source as a socket address (UDP and TCP only).
    pub fn src_socket(&self) -> Option<SocketAddr> {
        self.ports.map(|(s, _)| SocketAddr::new(self.src, s))
    }

    /// The destination as a socket address (UDP and TCP only).
    pub fn dst_socket(&self) -> Option<SocketAddr> {
        self.ports.map(|(_, d)| SocketAddr::new(self.dst, d))
    }

    /// Length of the IP header including IPv6 extension headers.
    pub fn ip_header_len(&self) -> usize {
        self.header_len
    }
}

/// Parse an IPv4 or IPv6 packet and, for UDP and TCP, its transport header. Checks the
/// IPv4 header checksum and the UDP/TCP checksums (a UDP-over-IPv4 checksum of zero means
/// "none" and is accepted). Bytes after the length the IP header announces are ignored.
pub fn parse(data: &[u8]) -> Result<PacketInfo<'_>, PacketError> {
    let (ip, payload) = IpHeaders::from_slice(data).map_err(|_| PacketError::BadIpHeader)?;
    let header_len = ip.header_len();
    let protocol = payload.ip_number.0;
    let fragment = payload.fragmented;
    let l4 = payload.payload;
    let (src, dst, ttl) = match &ip {
        IpHeaders::Ipv4(h, _) => {
            if h.calc_header_checksum() != h.header_checksum {
                return Err(PacketError::BadChecksum);
            }
            (
                IpAddr::from(h.source),
                IpAddr::from(h.destination),
                h.time_to_live,
            )
        }
        IpHeaders::Ipv6(h, _) => (
            IpAddr::from(h.source),
            IpAddr::from(h.destination),
            h.hop_limit,
        ),
    };
    let mut info = PacketInfo {
        src,
        dst,
        protocol,
        ttl,
        ports: None,
        tcp: None,
        payload: l4,
        fragment,
        len: header_len + l4.len(),
        header_len,
    };
    if fragment {
        return Ok(info);
    }
    match protocol {
        PROTO_UDP => {
            let (udp, rest) = UdpHeader::from_slice(l4).map_err(|_| PacketError::BadUdpHeader)?;
            let body_len = usize::from(udp.length)
                .checked_sub(UdpHeader::LEN)
                .filter(|n| *n <= rest.len())
                .ok_or(PacketError::BadUdpLength)?;
            let body = &rest[..body_len];
            let skip = matches!(ip, IpHeaders::Ipv4(..)) && udp.checksum == 0;
            if !skip && udp_checksum(&udp, &ip, body)? != udp.checksum {
                return Err(PacketError::BadChecksum);
            }
            info.ports = Some((udp.source_port, udp.destination_port));
            info.payload = body;
        }
        PROTO_TCP => {
            let (tcp, rest) = TcpHeader::from_slice(l4).map_err(|_| PacketError::BadTcpHeader)?;
            if tcp_checksum(&tcp, &ip, rest)? != tcp.checksum {
                return Err(PacketError::BadChecksum);
            }
            info.ports = Some((tcp.source_port, tcp.destination_port));
            info.tcp = Some(TcpInfo {
                flags: TcpFlags {
                    syn: tcp.syn,
                    ack: tcp.ack,
                    fin: tcp.fin,
                    rst: tcp.rst,
                    psh: tcp.psh,
                },
                seq: tcp.sequence_number,
                ack: tcp.acknowledgment_number,
                window: tcp.window_size,
            });
            info.payload = rest;
        }
        _ => {}
    }
    Ok(info)
}

fn udp_checksum(udp: &UdpHeader, ip: &IpHeaders, body: &[u8]) -> Result<u16, PacketError> {
    match ip {
        IpHeaders::Ipv4(h, _) => udp.calc_checksum_ipv4_raw(h.source, h.destination, body),
        IpHeaders::Ipv6(h, _) => udp.calc_checksum_ipv6_raw(h.source, h.destination, body),
    }
    .map_err(|_| PacketError::TooLarge)
}

fn tcp_checksum(tcp: &TcpHeader, ip: &IpHeaders, body: &[u8]) -> Result<u16, PacketError> {
    match ip {
        IpHeaders::Ipv4(h, _) => tcp.calc_checksum_ipv4_raw(h.source, h.destination, body),
        IpHeaders::Ipv6(h, _) => tcp.calc_checksum_ipv6_raw(h.source, h.destination, body),
    }
    .map_err(|_| PacketError::TooLarge)
}

fn builder(
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
) -> Result<etherparse::PacketBuilderStep<IpHeaders>, PacketError> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Ok(PacketBuilder::ipv4(s.octets(), d.octets(), ttl)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Ok(PacketBuilder::ipv6(s.octets(), d.octets(), ttl)),
        _ => Err(PacketError::FamilyMismatch),
    }
}

/// Build an IPv4 or IPv6 UDP packet with correct checksums.
pub fn build_udp(
    src: SocketAddr,
    dst: SocketAddr,
    ttl: u8,
    payload: &[u8],
) -> Result<Vec<u8>, PacketError> {
    let b = builder(src.ip(), dst.ip(), ttl)?.udp(src.port(), dst.port());
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload)
        .map_err(|_| PacketError::TooLarge)?;
    Ok(out)
}

/// The header fields of a TCP segment to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSegment {
    /// Flags.
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (sent when `flags.ack`).
    pub ack: u32,
    /// Advertised window.
    pub window: u16,
}

/// Build an IPv4 or IPv6 TCP segment with correct checksums.
pub fn build_tcp(
    src: SocketAddr,
    dst: SocketAddr,
    ttl: u8,
    seg: &TcpSegment,
    payload: &[u8],
) -> Result<Vec<u8>, PacketError> {
    let mut b = builder(src.ip(), dst.ip(), ttl)?.tcp(src.port(), dst.port(), seg.seq, seg.window);
    if seg.flags.syn {
        b = b.syn();
    }
    if seg.flags.fin {
        b = b.fin();
    }
    if seg.flags.rst {
        b = b.rst();
    }
    if seg.flags.psh {
        b = b.psh();
    }
    if seg.flags.ack {
        b = b.ack(seg.ack);
    }
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload)
        .map_err(|_| PacketError::TooLarge)?;
    Ok(out)
}

/// Build an IPv4 or IPv6 packet carrying `payload` as protocol `protocol` (ESP, IP-in-IP,
/// ICMP …). The payload is used as is: build its own checksums yourself.
pub fn build_ip(
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    ttl: u8,
    payload: &[u8],
) -> Result<Vec<u8>, PacketError> {
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let len = u16::try_from(payload.len()).map_err(|_| PacketError::TooLarge)?;
            let h = Ipv4Header::new(len, ttl, IpNumber(protocol), s.octets(), d.octets())
                .map_err(|_| PacketError::TooLarge)?;
            h.write(&mut out).map_err(|_| PacketError::TooLarge)?;
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: u16::try_from(payload.len()).map_err(|_| PacketError::TooLarge)?,
                next_header: IpNumber(protocol),
                hop_limit: ttl,
                source: s.octets(),
                destination: d.octets(),
            };
            h.write(&mut out).map_err(|_| PacketError::TooLarge)?;
        }
        _ => return Err(PacketError::FamilyMismatch),
    }
    out.extend_from_slice(payload);
    Ok(out)
}

/// Changes [`rewrite`] makes to a packet in place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Rewrite {
    /// New source address and port (the port only for UDP/TCP).
    pub src: Option<SocketAddr>,
    /// New destination address and port (the port only for UDP/TCP).
    pub dst: Option<SocketAddr>,
    /// Decrement the TTL / hop limit by one.
    pub dec_ttl: bool,
}

/// Rewrite addresses, ports and TTL in place and fix every checksum. The packet must have
/// passed [`parse`]; the new addresses must be of the packet's family.
pub(crate) fn rewrite(data: &mut [u8], rw: Rewrite) -> Result<(), PacketError> {
    let (v4, header_len, l4_len, protocol, fragment) = {
        let (ip, payload) = IpHeaders::from_slice(data).map_err(|_| PacketError::BadIpHeader)?;
        (
            matches!(ip, IpHeaders::Ipv4(..)),
            ip.header_len(),
            payload.payload.len(),
            payload.ip_number.0,
            payload.fragmented,
        )
    };
    let (src_at, dst_at, ttl_at, addr_len) = if v4 { (12, 16, 8, 4) } else { (8, 24, 7, 16) };
    let set_addr = |data: &mut [u8], at: usize, ip: IpAddr| -> Result<(), PacketError> {
        let slot = data
            .get_mut(at..at + addr_len)
            .ok_or(PacketError::BadIpHeader)?;
        match ip {
            IpAddr::V4(a) if v4 => slot.copy_from_slice(&a.octets()),
            IpAddr::V6(a) if !v4 => slot.copy_from_slice(&a.octets()),
            _ => return Err(PacketError::FamilyMismatch),
        }
        Ok(())
    };
    if let Some(s) = rw.src {
        set_addr(data, src_at, s.ip())?;
    }
    if let Some(d) = rw.dst {
        set_addr(data, dst_at, d.ip())?;
    }
    if rw.dec_ttl {
        let ttl = data.get_mut(ttl_at).ok_or(PacketError::BadIpHeader)?;
        *ttl = ttl.saturating_sub(1);
    }
    if v4 {
        let (h, _) = Ipv4Header::from_slice(data).map_err(|_| PacketError::BadIpHeader)?;
        let sum = h.calc_header_checksum();
        data[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    if fragment || !(protocol == PROTO_UDP || protocol == PROTO_TCP) {
        return Ok(());
    }
    let (src_ip, dst_ip) = {
        let info = parse_addrs(data, v4)?;
        (info.0, info.1)
    };
    let seg = data
        .get_mut(header_len..header_len + l4_len)
        .ok_or(PacketError::ShortTransport)?;
    if seg.len() < 4 {
        return Err(PacketError::ShortTransport);
    }
    if let Some(s) = rw.src {
        seg[0..2].copy_from_slice(&s.port().to_be_bytes());
    }
    if let Some(d) = rw.dst {
        seg[2..4].copy_from_slice(&d.port().to_be_bytes());
    }
    if protocol == PROTO_UDP {
        let (udp, rest) = UdpHeader::from_slice(seg).map_err(|_| PacketError::BadUdpHeader)?;
        let body_len = usize::from(udp.length)
            .checked_sub(UdpHeader::LEN)
            .filter(|n| *n <= rest.len())
            .ok_or(PacketError::BadUdpLength)?;
        if v4 && udp.checksum == 0 {
            return Ok(());
        }
        let body = &rest[..body_len];
        let sum = match (src_ip, dst_ip) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                udp.calc_checksum_ipv4_raw(s.octets(), d.octets(), body)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                udp.calc_checksum_ipv6_raw(s.octets(), d.octets(), body)
            }
            _ => return Err(PacketError::FamilyMismatch),
        }
        .map_err(|_| PacketError::TooLarge)?;
        seg[6..8].copy_from_slice(&sum.to_be_bytes());
    } else {
        let (tcp, rest) = TcpHeader::from_slice(seg).map_err(|_| PacketError::BadTcpHeader)?;
        let sum = match (src_ip, dst_ip) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                tcp.calc_checksum_ipv4_raw(s.octets(), d.octets(), rest)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                tcp.calc_checksum_ipv6_raw(s.octets(), d.octets(), rest)
            }
            _ => return Err(PacketError::FamilyMismatch),
        }
        .map_err(|_| PacketError::TooLarge)?;
        seg[16..18].copy_from_slice(&sum.to_be_bytes());
    }
    Ok(())
}

fn parse_addrs(data: &[u8], v4: bool) -> Result<(IpAddr, IpAddr), PacketError> {
    let bad = PacketError::BadIpHeader;
    if v4 {
        let s: [u8; 4] = data.get(12..16).ok_or(bad)?.try_into().map_err(|_| bad)?;
        let d: [u8; 4] = data.get(16..20).ok_or(bad)?.try_into().map_err(|_| bad)?;
        Ok((IpAddr::from(s), IpAddr::from(d)))
    } else {
        let s: [u8; 16] = data.get(8..24).ok_or(bad)?.try_into().map_err(|_| bad)?;
        let d: [u8; 16] = data.get(24..40).ok_or(bad)?.try_into().map_err(|_| bad)?;
        Ok((IpAddr::from(s), IpAddr::from(d)))
    }
}

/// FNV-1a over the bytes: a stable, seed-free fingerprint for traces.
pub(crate) fn fingerprint(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_round_trip_and_rewrite_v4_v6() {
        for (a, b, c) in [
            ("10.0.0.2:4000", "192.0.2.9:53", "203.0.113.1:61000"),
            ("[fd00::2]:4000", "[2001:db8::9]:53", "[2001:db8::1]:61000"),
        ] {
            let (a, b, c): (SocketAddr, SocketAddr, SocketAddr) =
                (a.parse().unwrap(), b.parse().unwrap(), c.parse().unwrap());
            let mut p = build_udp(a, b, 64, b"payload").unwrap();
            rewrite(
                &mut p,
                Rewrite {
                    src: Some(c),
                    dst: None,
                    dec_ttl: true,
                },
            )
            .unwrap();
            let info = parse(&p).unwrap();
            assert_eq!(info.src_socket(), Some(c));
            assert_eq!(info.dst_socket(), Some(b));
            assert_eq!(info.ttl, 63);
            assert_eq!(info.payload, b"payload");
        }
    }

    #[test]
    fn tcp_round_trip_and_checksum_checked() {
        let a: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let b: SocketAddr = "192.0.2.9:80".parse().unwrap();
        let seg = TcpSegment {
            flags: TcpFlags {
                syn: true,
                ack: true,
                ..TcpFlags::default()
            },
            seq: 7,
            ack: 9,
            window: 1000,
        };
        let mut p = build_tcp(a, b, 64, &seg, b"xy").unwrap();
        let info = parse(&p).unwrap();
        let tcp = info.tcp.unwrap();
        assert_eq!((tcp.seq, tcp.ack, tcp.flags), (7, 9, seg.flags));
        assert_eq!(info.payload, b"xy");
        let last = p.len() - 1;
        p[last] ^= 1;
        assert_eq!(parse(&p), Err(PacketError::BadChecksum));
        assert!(parse(&p[..10]).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn raw_ip_packets() {
        let p = build_ip(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            PROTO_ESP,
            64,
            &[1, 2, 3, 4, 5, 6, 7, 8],
        )
        .unwrap();
        let info = parse(&p).unwrap();
        assert_eq!(info.protocol, PROTO_ESP);
        assert_eq!(info.payload.len(), 8);
        assert_eq!(info.ports, None);
        assert_eq!(
            build_ip(
                "10.0.0.1".parse().unwrap(),
                "::1".parse().unwrap(),
                PROTO_ESP,
                64,
                &[]
            ),
            Err(PacketError::FamilyMismatch)
        );
    }
}

//! The little IP the data plane needs: read the selector fields of an IPv4/IPv6 packet,
//! find where its upper-layer payload starts, and build the outer IPv4/IPv6/UDP headers
//! that tunnel mode and UDP encapsulation add.
//!
//! Every read is bounds-checked; a packet that does not parse is refused with
//! [`IpsecError::Malformed`], never a panic.

use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::IpsecError;

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of IP-in-IP (tunnel-mode next header for an inner IPv4 packet).
pub const PROTO_IPV4: u8 = 4;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of IPv6-in-IP (tunnel-mode next header for an inner IPv6 packet).
pub const PROTO_IPV6: u8 = 41;
/// IP protocol number of ESP.
pub const PROTO_ESP: u8 = 50;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// "No next header": ESP dummy packets (RFC 4303 §2.6) carry it.
pub const PROTO_NONE: u8 = 59;
/// SCTP.
const PROTO_SCTP: u8 = 132;
/// UDP-Lite.
const PROTO_UDPLITE: u8 = 136;

/// How many IPv6 extension headers we walk before giving up.
const MAX_EXT_HEADERS: usize = 8;

/// The fields of a packet that selectors and the data plane look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol (after any IPv6 extension headers).
    pub protocol: u8,
    /// Source port (TCP, UDP, SCTP, UDP-Lite) or ICMP type; `None` when absent or hidden.
    pub src_port: Option<u16>,
    /// Destination port or ICMP code; `None` when absent or hidden.
    pub dst_port: Option<u16>,
    /// Offset of the upper-layer payload (IP header plus extension headers).
    pub header_len: usize,
    /// Length of the packet according to its header (bytes after it are link padding).
    pub total_len: usize,
    /// Offset of the byte that holds `protocol` (IPv4 protocol field or the last IPv6
    /// next-header field).
    pub proto_offset: usize,
    /// Whether the packet is a fragment (first or later).
    pub is_fragment: bool,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Parse an IPv4 or IPv6 packet's selector fields.
pub fn parse(packet: &[u8]) -> Result<PacketInfo, IpsecError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => parse_v4(packet),
        Some(6) => parse_v6(packet),
        Some(_) => Err(IpsecError::Malformed("not an IPv4 or IPv6 packet")),
        None => Err(IpsecError::Malformed("empty packet")),
    }
}

fn parse_v4(p: &[u8]) -> Result<PacketInfo, IpsecError> {
    let hdr: &[u8; 20] = p
        .get(..20)
        .and_then(|s| s.try_into().ok())
        .ok_or(IpsecError::Malformed("short IPv4 header"))?;
    let ihl = usize::from(hdr[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    if ihl < 20 || ihl > total_len || total_len > p.len() {
        return Err(IpsecError::Malformed("bad IPv4 lengths"));
    }
    let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    let offset = frag & 0x1fff;
    let more = frag & 0x2000 != 0;
    let protocol = hdr[9];
    let src = IpAddr::V4(Ipv4Addr::new(hdr[12], hdr[13], hdr[14], hdr[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(hdr[16], hdr[17], hdr[18], hdr[19]));
    let body = p.get(ihl..total_len).unwrap_or_default();
    let (src_port, dst_port) = if offset == 0 {
        ports(protocol, body)
    } else {
        (None, None)
    };
    Ok(PacketInfo {
        src,
        dst,
        protocol,
        src_port,
        dst_port,
        header_len: ihl,
        total_len,
        proto_offset: 9,
        is_fragment: more || offset != 0,
        tos: hdr[1],
        ttl: hdr[8],
    })
}

fn parse_v6(p: &[u8]) -> Result<PacketInfo, IpsecError> {
    let hdr: &[u8; 40] = p
        .get(..40)
        .and_then(|s| s.try_into().ok())
        .ok_or(IpsecError::Malformed("short IPv6 header"))?;
    let payload_len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
    let total_len = 40 + payload_len;
    if payload_len == 0 || total_len > p.len() {
        // Payload length 0 means a jumbogram (RFC 2675), which we do not handle.
        return Err(IpsecError::Malformed("bad IPv6 length"));
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&hdr[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&hdr[24..40]);
    let mut nh = hdr[6];
    let mut proto_offset = 6;
    let mut off = 40usize;
    let mut is_fragment = false;
    let mut later_fragment = false;
    for _ in 0..=MAX_EXT_HEADERS {
        match nh {
            // Hop-by-hop, routing, destination options: length in 8-octet units, not
            // counting the first 8.
            0 | 43 | 60 => {
                let len_byte = *p
                    .get(off + 1)
                    .filter(|_| off + 2 <= total_len)
                    .ok_or(IpsecError::Malformed("truncated IPv6 extension header"))?;
                proto_offset = off;
                nh = p[off];
                off += (usize::from(len_byte) + 1) * 8;
            }
            // Fragment header: fixed 8 bytes.
            44 => {
                let frag = be16(p, off + 2)
                    .filter(|_| off + 8 <= total_len)
                    .ok_or(IpsecError::Malformed("truncated IPv6 fragment header"))?;
                is_fragment = true;
                later_fragment = frag & 0xfff8 != 0;
                proto_offset = off;
                nh = p[off];
                off += 8;
            }
            _ => break,
        }
        if off > total_len {
            return Err(IpsecError::Malformed("IPv6 extension headers overrun"));
        }
    }
    if matches!(nh, 0 | 43 | 60 | 44) {
        return Err(IpsecError::Malformed("too many IPv6 extension headers"));
    }
    let body = p.get(off..total_len).unwrap_or_default();
    let (src_port, dst_port) = if later_fragment {
        (None, None)
    } else {
        ports(nh, body)
    };
    Ok(PacketInfo {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        protocol: nh,
        src_port,
        dst_port,
        header_len: off,
        total_len,
        proto_offset,
        is_fragment,
        tos: (hdr[0] << 4) | (hdr[1] >> 4),
        ttl: hdr[7],
    })
}

fn ports(protocol: u8, body: &[u8]) -> (Option<u16>, Option<u16>) {
    match protocol {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_UDPLITE => (be16(body, 0), be16(body, 2)),
        PROTO_ICMP | PROTO_ICMPV6 => (
            body.first().map(|&t| u16::from(t)),
            body.get(1).map(|&c| u16::from(c)),
        ),
        _ => (None, None),
    }
}

/// The Internet checksum (RFC 1071) of `data`, continuing from the unfolded `sum`: the
/// 16-bit words are added up in a wide accumulator (as 32-bit big-endian words, which is
/// the same sum modulo 0xffff) and folded once, in [`fold`]. Every part but the last of a
/// chained sum must have an even length; an odd last byte counts as the high byte of a
/// word. A packet (at most 64 KiB) cannot overflow the 64-bit sum.
fn ones_sum(mut sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    match words.remainder() {
        [a, b, c] => sum + u64::from(u16::from_be_bytes([*a, *b])) + (u64::from(*c) << 8),
        [a, b] => sum + u64::from(u16::from_be_bytes([*a, *b])),
        [a] => sum + (u64::from(*a) << 8),
        _ => sum,
    }
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // `sum` fits in 16 bits here.
    !(sum as u16)
}

/// The one's-complement checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(ones_sum(0, data))
}

/// The TCP/UDP checksum of `segment` (checksum field zeroed by the caller) under the
/// pseudo-header of `src`, `dst`, `protocol`.
pub fn transport_checksum(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> u16 {
    let mut sum = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = ones_sum(sum, &s.octets());
            sum = ones_sum(sum, &d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            sum = ones_sum(sum, &s.octets());
            sum = ones_sum(sum, &d.octets());
        }
        _ => {}
    }
    let len = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    sum = ones_sum(sum, &len.to_be_bytes());
    sum = ones_sum(sum, &[0, 0, 0, protocol]);
    fold(ones_sum(sum, segment))
}

/// Parameters of an IP header the data plane writes.
#[derive(Clone, Copy, Debug)]
pub struct HeaderParams {
    /// Source address.
    pub src: IpAddr,
    /// Destination address (same family as `src`).
    pub dst: IpAddr,
    /// Protocol / next header.
    pub protocol: u8,
    /// TOS / traffic class.
    pub tos: u8,
    /// TTL / hop limit.
    pub ttl: u8,
    /// IPv4 identification (ignored for IPv6).
    pub id: u16,
}

/// An IPv4 (20 bytes) or IPv6 (40 bytes) header, built on the stack.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IpHeader {
    bytes: [u8; 40],
    len: usize,
}

impl IpHeader {
    /// The header for a payload of `payload_len` bytes.
    pub(crate) fn new(h: &HeaderParams, payload_len: usize) -> Result<IpHeader, IpsecError> {
        let mut bytes = [0u8; 40];
        match (h.src, h.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = u16::try_from(payload_len + 20).map_err(|_| IpsecError::TooLarge)?;
                bytes[..2].copy_from_slice(&[0x45, h.tos]);
                bytes[2..4].copy_from_slice(&total.to_be_bytes());
                bytes[4..6].copy_from_slice(&h.id.to_be_bytes());
                bytes[6..10].copy_from_slice(&[0, 0, h.ttl, h.protocol]);
                bytes[12..16].copy_from_slice(&s.octets());
                bytes[16..20].copy_from_slice(&d.octets());
                let sum = checksum(&bytes[..20]);
                bytes[10..12].copy_from_slice(&sum.to_be_bytes());
                Ok(IpHeader { bytes, len: 20 })
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let len = u16::try_from(payload_len).map_err(|_| IpsecError::TooLarge)?;
                bytes[..4].copy_from_slice(&[0x60 | (h.tos >> 4), h.tos << 4, 0, 0]);
                bytes[4..6].copy_from_slice(&len.to_be_bytes());
                bytes[6..8].copy_from_slice(&[h.protocol, h.ttl]);
                bytes[8..24].copy_from_slice(&s.octets());
                bytes[24..40].copy_from_slice(&d.octets());
                Ok(IpHeader { bytes, len: 40 })
            }
            _ => Err(IpsecError::AddressFamilyMismatch),
        }
    }

    /// The header's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Length of the IP header [`IpHeader::new`] writes for an address of this family.
pub(crate) const fn ip_header_len(addr: IpAddr) -> usize {
    match addr {
        IpAddr::V4(_) => 20,
        IpAddr::V6(_) => 40,
    }
}

/// Append an IPv4 or IPv6 header for a payload of `payload_len` bytes.
pub fn push_ip_header(
    out: &mut Vec<u8>,
    h: &HeaderParams,
    payload_len: usize,
) -> Result<(), IpsecError> {
    out.extend_from_slice(IpHeader::new(h, payload_len)?.as_bytes());
    Ok(())
}

/// Build `IP header ‖ UDP header ‖ payload`. The UDP checksum is zero over IPv4 (RFC 3948
/// §2.1 lets ESP-in-UDP senders send zero) and computed over IPv6, where zero is not allowed.
pub fn udp_packet(
    src: core::net::SocketAddr,
    dst: core::net::SocketAddr,
    ttl: u8,
    tos: u8,
    id: u16,
    payload: &[u8],
) -> Result<Vec<u8>, IpsecError> {
    let udp_len = u16::try_from(payload.len() + 8).map_err(|_| IpsecError::TooLarge)?;
    let mut out = Vec::with_capacity(48 + payload.len());
    push_ip_header(
        &mut out,
        &HeaderParams {
            src: src.ip(),
            dst: dst.ip(),
            protocol: PROTO_UDP,
            tos,
            ttl,
            id,
        },
        usize::from(udp_len),
    )?;
    let udp_start = out.len();
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&udp_len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    if src.is_ipv6() {
        let mut sum = transport_checksum(src.ip(), dst.ip(), PROTO_UDP, &out[udp_start..]);
        if sum == 0 {
            sum = 0xffff;
        }
        out[udp_start + 6..udp_start + 8].copy_from_slice(&sum.to_be_bytes());
    }
    Ok(out)
}

/// IP-in-IP (RFC 2003 / RFC 2473): `inner` as the payload of a new header from `src` to
/// `dst` (protocol 4 for an IPv4 inner packet, 41 for IPv6).
pub fn encapsulate(src: IpAddr, dst: IpAddr, inner: &[u8]) -> Result<Vec<u8>, IpsecError> {
    let protocol = match inner.first().map(|b| b >> 4) {
        Some(4) => PROTO_IPV4,
        Some(6) => PROTO_IPV6,
        _ => return Err(IpsecError::Malformed("inner packet is not IP")),
    };
    let mut out = Vec::with_capacity(40 + inner.len());
    push_ip_header(
        &mut out,
        &HeaderParams {
            src,
            dst,
            protocol,
            tos: 0,
            ttl: 64,
            id: 0,
        },
        inner.len(),
    )?;
    out.extend_from_slice(inner);
    Ok(out)
}

/// Recompute the TCP or UDP checksum of a whole packet in place (transport-mode packets
/// whose addresses were rewritten by a NAT, RFC 3948 §3.1.2). Other protocols, fragments,
/// and IPv4 UDP packets sent without a checksum are left alone.
#[cfg(test)]
pub fn fix_transport_checksum(packet: &mut [u8]) -> Result<(), IpsecError> {
    let info = parse(packet)?;
    fix_transport_checksum_parsed(packet, &info)
}

/// [`fix_transport_checksum`] of a packet already parsed into `info`.
pub(crate) fn fix_transport_checksum_parsed(
    packet: &mut [u8],
    info: &PacketInfo,
) -> Result<(), IpsecError> {
    if info.is_fragment {
        return Ok(());
    }
    let field = match info.protocol {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return Ok(()),
    };
    let at = info.header_len + field;
    let Some(current) = be16(packet, at) else {
        return Err(IpsecError::Malformed("truncated transport header"));
    };
    if at + 2 > info.total_len {
        return Err(IpsecError::Malformed("truncated transport header"));
    }
    if info.protocol == PROTO_UDP && current == 0 && info.src.is_ipv4() {
        return Ok(());
    }
    packet[at..at + 2].copy_from_slice(&[0, 0]);
    let segment = &packet[info.header_len..info.total_len];
    let mut sum = transport_checksum(info.src, info.dst, info.protocol, segment);
    if sum == 0 && info.protocol == PROTO_UDP {
        sum = 0xffff;
    }
    packet[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A UDP packet for tests.
    pub(crate) fn udp(src: &str, dst: &str, sport: u16, dport: u16, body: &[u8]) -> Vec<u8> {
        let src: IpAddr = src.parse().unwrap();
        let dst: IpAddr = dst.parse().unwrap();
        udp_packet(
            core::net::SocketAddr::new(src, sport),
            core::net::SocketAddr::new(dst, dport),
            64,
            0,
            7,
            body,
        )
        .unwrap()
    }

    /// An ICMP/ICMPv6 echo-like packet for tests.
    pub(crate) fn icmp(src: &str, dst: &str, ty: u8, code: u8) -> Vec<u8> {
        let src: IpAddr = src.parse().unwrap();
        let dst: IpAddr = dst.parse().unwrap();
        let proto = if src.is_ipv4() {
            PROTO_ICMP
        } else {
            PROTO_ICMPV6
        };
        let body = [ty, code, 0, 0, 1, 2, 3, 4];
        let mut out = Vec::new();
        push_ip_header(
            &mut out,
            &HeaderParams {
                src,
                dst,
                protocol: proto,
                tos: 0,
                ttl: 64,
                id: 1,
            },
            body.len(),
        )
        .unwrap();
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn parses_ipv4_udp_and_checksums_verify() {
        let p = udp("10.0.0.1", "10.0.0.2", 1234, 53, b"hello");
        let info = parse(&p).unwrap();
        assert_eq!(info.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(info.protocol, PROTO_UDP);
        assert_eq!((info.src_port, info.dst_port), (Some(1234), Some(53)));
        assert_eq!((info.header_len, info.total_len), (20, 33));
        assert_eq!(checksum(&p[..20]), 0, "a valid header sums to zero");
        assert!(!info.is_fragment);
    }

    #[test]
    fn parses_ipv6_through_extension_headers() {
        let mut p = udp("2001::1", "2001::2", 137, 137, b"x");
        // Insert an 8-byte hop-by-hop header (next header UDP) after the fixed header.
        p[6] = 0;
        let hbh = [PROTO_UDP, 0, 1, 4, 0, 0, 0, 0];
        p.splice(40..40, hbh);
        let pl = u16::from_be_bytes([p[4], p[5]]) + 8;
        p[4..6].copy_from_slice(&pl.to_be_bytes());
        let info = parse(&p).unwrap();
        assert_eq!(info.protocol, PROTO_UDP);
        assert_eq!(info.header_len, 48);
        assert_eq!(info.proto_offset, 40);
        assert_eq!(info.src_port, Some(137));
        // A later fragment hides the ports.
        let mut f = p.clone();
        f[40] = 44;
        f.splice(48..48, [PROTO_UDP, 0, 0, 8, 0, 0, 0, 1]);
        let pl = u16::from_be_bytes([f[4], f[5]]) + 8;
        f[4..6].copy_from_slice(&pl.to_be_bytes());
        let info = parse(&f).unwrap();
        assert!(info.is_fragment);
        assert_eq!(info.src_port, None);
    }

    #[test]
    fn refuses_malformed_packets() {
        let p = udp("10.0.0.1", "10.0.0.2", 1, 2, b"abc");
        for cut in 0..p.len() {
            let r = parse(&p[..cut]);
            assert!(r.is_err(), "cut at {cut}");
        }
        let mut bad = p.clone();
        bad[0] = 0x44; // IHL 16 < 20
        assert!(parse(&bad).is_err());
        assert!(parse(&[0x70; 40]).is_err());
        let mut v6 = udp("::1", "::2", 1, 2, b"abc");
        v6[4..6].copy_from_slice(&[0, 0]);
        assert!(parse(&v6).is_err(), "jumbograms are refused");
        let mut loopy = udp("::1", "::2", 1, 2, &[0u8; 200]);
        loopy[6] = 60;
        for i in 0..20 {
            loopy[40 + i * 8] = 60;
            loopy[41 + i * 8] = 0;
        }
        assert!(
            parse(&loopy).is_err(),
            "endless extension chains are refused"
        );
    }

    #[test]
    fn udp_checksums_are_right_over_ipv6_and_fixable() {
        let p = udp("2001:db8::1", "2001:db8::2", 4500, 4500, b"payload!");
        let info = parse(&p).unwrap();
        let seg = &p[info.header_len..];
        assert_eq!(transport_checksum(info.src, info.dst, PROTO_UDP, seg), 0);
        let mut q = p.clone();
        q[8] ^= 0xff; // change the source address: the checksum goes stale
        fix_transport_checksum(&mut q).unwrap();
        let info = parse(&q).unwrap();
        assert_eq!(
            transport_checksum(info.src, info.dst, PROTO_UDP, &q[info.header_len..]),
            0
        );
        let v4 = udp("10.0.0.1", "10.0.0.2", 1, 2, b"x");
        assert_eq!(
            &v4[26..28],
            &[0, 0],
            "IPv4 ESP-in-UDP goes without checksum"
        );
        let mut v4c = v4.clone();
        fix_transport_checksum(&mut v4c).unwrap();
        assert_eq!(v4c, v4, "a zero IPv4 UDP checksum stays zero");
        assert_eq!(checksum(&[0xff, 0xff]), 0);
        assert_eq!(checksum(&[]), 0xffff);
    }
}

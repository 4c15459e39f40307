//! Packet judging (means 10): the seed's two flowcharts as pure functions from a packet to
//! a verdict, so the proxy's state changes in one place and the branches can be read
//! against Figs. 3 and 4 line by line.

use core::net::{IpAddr, SocketAddr};

use super::super::transfer;
use crate::ipsec::{Action, PROTO_ESP, PROTO_UDP, PacketInfo, Spd};

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// S2 / S12: a discard row (or the default action) matched.
    Policy,
    /// A clear packet matched a protect row: it must travel in ESP.
    Unprotected,
    /// S5 / S15: the address is not a delegated terminal's.
    UnknownTerminal,
    /// IKEv1 (the proxy speaks IKEv2 only; the terminal cannot answer either).
    IkeV1,
    /// A key-transfer message arrived from the Internet: only the proxy sends those
    /// toward a terminal.
    ForgedTransfer,
    /// A host behind the proxy runs IKE itself and is not on the list allowed to.
    OwnIke,
    /// The packet does not parse.
    Malformed,
}

/// Fig. 3: what to do with a packet from the Internet side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FromInternet {
    /// S2.
    Drop(DropReason),
    /// S4: to the terminal side, byte-identical.
    Forward,
    /// S3 yes: an IKE message for `to` (a terminal's address); `payload` is the UDP
    /// payload's range in the packet (the non-ESP marker on 4500 included).
    KeyExchange {
        /// The peer.
        from: SocketAddr,
        /// The terminal's address and port.
        to: SocketAddr,
        /// UDP payload start.
        start: usize,
        /// UDP payload end.
        end: usize,
    },
}

/// Fig. 4: what to do with a packet from the terminal side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FromTerminal {
    /// S12.
    Drop(DropReason),
    /// S14: to the Internet side, byte-identical.
    Forward,
    /// A key-transfer message (a trigger is S13's start request; announces and acks
    /// belong to the key setting of S9/S19).
    Transfer {
        /// The sender.
        from: SocketAddr,
        /// UDP payload start.
        start: usize,
        /// UDP payload end.
        end: usize,
    },
    /// S13 yes in compat mode: a clear packet that a protect row covers. It is dropped
    /// (never forwarded in clear) and keys are negotiated for it.
    ClearStart,
}

/// Where a UDP packet's payload lies, and its ports.
fn udp(info: &PacketInfo, packet: &[u8]) -> Option<(u16, u16, usize, usize)> {
    if info.protocol != PROTO_UDP || info.is_fragment {
        return None;
    }
    let start = info.header_len + 8;
    let end = info.total_len.min(packet.len());
    (start <= end).then_some((info.src_port?, info.dst_port?, start, end))
}

/// Whether a UDP payload on the NAT-T port carries IKE (the 4-byte zero non-ESP marker,
/// RFC 3948 §2.2) rather than ESP or a keepalive.
fn behind_non_esp_marker(payload: &[u8]) -> bool {
    payload.len() > 4 && payload[..4] == [0, 0, 0, 0]
}

/// The IKE header's major version (the high nibble of byte 17).
fn ike_major(ike: &[u8]) -> Option<u8> {
    ike.get(17).map(|v| v >> 4)
}

/// Fig. 3, S1 and S3 (the address and SA checks, S5 and S6, need the proxy's stores).
pub fn from_internet(spd: &Spd, info: &PacketInfo, packet: &[u8], nat_t_port: u16) -> FromInternet {
    let action = spd.inbound(info).action;
    // S1: a discard row drops everything it matches, key exchange included.
    if action == Action::Discard {
        return FromInternet::Drop(DropReason::Policy);
    }
    // S3: is it a key-exchange packet?
    if let Some((sport, dport, start, end)) = udp(info, packet) {
        let payload = &packet[start..end];
        let ike = if dport == transfer::PORT {
            if transfer::is_marked(payload) {
                return FromInternet::Drop(DropReason::ForgedTransfer);
            }
            Some(payload)
        } else if dport == nat_t_port && behind_non_esp_marker(payload) {
            Some(&payload[4..])
        } else {
            None
        };
        if let Some(ike) = ike {
            if ike_major(ike) == Some(1) {
                return FromInternet::Drop(DropReason::IkeV1);
            }
            return FromInternet::KeyExchange {
                from: SocketAddr::new(info.src, sport),
                to: SocketAddr::new(info.dst, dport),
                start,
                end,
            };
        }
        if dport == nat_t_port {
            // ESP in UDP or a keepalive: the terminal's business (S4).
            return FromInternet::Forward;
        }
    }
    if info.protocol == PROTO_ESP {
        return FromInternet::Forward;
    }
    match action {
        // Our extension: a protect row's clear packets must have come in ESP.
        Action::Protect => FromInternet::Drop(DropReason::Unprotected),
        _ => FromInternet::Forward,
    }
}

/// Fig. 4, S11 and S13 (the address and SA checks, S15 and S16, need the stores).
/// `own_ike` says whether the sender may run IKE itself.
pub fn from_terminal(
    spd: &Spd,
    info: &PacketInfo,
    packet: &[u8],
    nat_t_port: u16,
    compat: bool,
    own_ike: impl Fn(IpAddr) -> bool,
) -> FromTerminal {
    let action = spd.outbound(info).action;
    if action == Action::Discard {
        return FromTerminal::Drop(DropReason::Policy);
    }
    if let Some((sport, dport, start, end)) = udp(info, packet) {
        let payload = &packet[start..end];
        if dport == transfer::PORT && transfer::is_marked(payload) {
            return FromTerminal::Transfer {
                from: SocketAddr::new(info.src, sport),
                start,
                end,
            };
        }
        let ike =
            dport == transfer::PORT || (dport == nat_t_port && behind_non_esp_marker(payload));
        if ike {
            return if own_ike(info.src) {
                FromTerminal::Forward
            } else {
                FromTerminal::Drop(DropReason::OwnIke)
            };
        }
        if dport == nat_t_port || sport == nat_t_port {
            return FromTerminal::Forward;
        }
    }
    if info.protocol == PROTO_ESP {
        return FromTerminal::Forward;
    }
    match action {
        Action::Protect if compat => FromTerminal::ClearStart,
        Action::Protect => FromTerminal::Drop(DropReason::Unprotected),
        _ => FromTerminal::Forward,
    }
}

//! Seed 003's operator network for the operator targets, as tests/common/operator.rs
//! builds it, without the simulator: a service control (`keyx::operator::ServiceControl`)
//! with two served subscribers, a key-exchange proxy (`keyx::operator::KeyExchangeProxy`)
//! holding their secrets, a peer, and one end of the authenticated link played by the
//! target itself (deputy's IKEv2 initiator or responder with `operator::link::link_ike`,
//! and `operator::link::link_plane` once its Child SA is up), so that fuzz-built packets
//! can be sealed into the link's ESP under its real keys. Included next to
//! inline_common.rs (`common`).
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use deputy::channel::{Psk, ServerConfig};
use deputy::crypto::dh::Group;
use deputy::ikev2::{
    Identity, IkeConfig, IkeEvent, IkeProposal, Initiator, InitiatorConfig, Responder,
    ResponderConfig,
};
use deputy::ipsec::{DataPlane, Inbound, Outbound, Protected};
use deputy::keyx::inline::{MemoryStore, TerminalSecrets};
use deputy::keyx::operator::link::{link_ike, link_plane};
use deputy::keyx::operator::{
    ControlConfig, KeyExchangeProxy, KeyExchangeProxyConfig, ServiceControl, ServiceProfile,
};
use deputy::{Actor, IfaceId, Input, Instant, Output, UnixTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::common::{ike, ip, key, udp};

/// The service control's access interface (toward the subscribers).
pub const ACCESS: IfaceId = IfaceId(0);
/// Its core interface.
pub const CORE: IfaceId = IfaceId(1);
/// The service control's core and access addresses.
pub const SC: &str = "203.0.113.1";
pub const SC_ACCESS: &str = "10.1.0.1";
/// The key-exchange proxy.
pub const PROXY: &str = "203.0.113.10";
/// Served subscribers 1 and 2, and an access address nobody serves.
pub const S1: &str = "10.1.0.5";
pub const S2: &str = "10.1.0.6";
pub const UNSERVED: &str = "10.1.0.7";
/// The peer on the core side, and a host nobody knows.
pub const PEER: &str = "198.51.100.1";
pub const STRANGER: &str = "198.51.100.99";
pub const LINK_PSK: &[u8] = b"operator link key";

/// The link's IKE configuration (X25519 only, so that every case is quick).
pub fn link_config(id: &str, local: &str) -> IkeConfig {
    let mut c = IkeConfig::new(Identity::Fqdn(id.into()), LINK_PSK);
    c.ike_proposals = vec![IkeProposal::aes128_sha256(&[Group::X25519])];
    link_ike(c, ip(local))
}

/// The service control (small bounds), its link's IKE started at time zero.
pub fn control() -> ServiceControl {
    let psk = Psk::new("auth-server", &[0x5a; 32]).expect("psk");
    let mut link = IkeConfig::new(Identity::Fqdn("sc1.operator.example".into()), LINK_PSK);
    link.ike_proposals = vec![IkeProposal::aes128_sha256(&[Group::X25519])];
    let cfg = ControlConfig {
        access: ACCESS,
        core: CORE,
        address: ip(SC),
        access_address: ip(SC_ACCESS),
        proxy: ip(PROXY),
        link_ike: link,
        profiles_channel: Arc::new(
            ServerConfig::with_psks([psk], UnixTime(1_800_000_000)).expect("channel"),
        ),
        max_profiles: 2,
        max_sessions: 2,
        outbox_bound: 256,
    };
    ServiceControl::new(
        cfg,
        Box::new(ChaCha20Rng::seed_from_u64(0x5c1)),
        Instant::ZERO,
    )
    .expect("service control")
}

/// The two subscribers' profiles (IKE on 500 and 4500 diverted).
pub fn profiles() -> [ServiceProfile; 2] {
    [
        ServiceProfile::ike(1, ip(S1)),
        ServiceProfile::ike(2, ip(S2)),
    ]
}

/// The key-exchange proxy (small bounds) holding subscribers 1 and 2's secrets.
pub fn proxy() -> KeyExchangeProxy<MemoryStore> {
    let mut link = IkeConfig::new(Identity::Fqdn("proxy.operator.example".into()), LINK_PSK);
    link.ike_proposals = vec![IkeProposal::aes128_sha256(&[Group::X25519])];
    let mut cfg = KeyExchangeProxyConfig::new(ip(PROXY), link);
    cfg.engine.max_addresses = 4;
    cfg.engine.max_learned = 2;
    cfg.engine.max_sas = 4;
    cfg.engine.max_negotiations = 2;
    cfg.engine.max_negotiations_per_terminal = 2;
    cfg.engine.max_pushes_per_terminal = 3;
    cfg.engine.retry = super::common::retry();
    cfg.engine.replay_window = 32;
    cfg.engine.outbox_bound = 256;
    cfg.max_links = 2;
    cfg.max_subscribers = 4;
    cfg.outbox_bound = 256;
    let mut store = MemoryStore::new(4);
    for id in [1, 2] {
        store
            .insert(
                id,
                TerminalSecrets {
                    delegation_key: key(id),
                    ike: ike(&format!("subscriber{id}.example")),
                },
            )
            .expect("provision");
    }
    KeyExchangeProxy::new(
        cfg,
        store,
        Box::new(ChaCha20Rng::seed_from_u64(0x9a3)),
        Instant::ZERO,
    )
    .expect("proxy")
}

/// The peer: deputy's IKEv2 responder (the subscribers start toward it).
pub fn peer() -> Responder {
    Responder::new(
        ResponderConfig::new(ike("peer.example")),
        Box::new(ChaCha20Rng::seed_from_u64(0x7e5)),
        Instant::ZERO,
    )
    .expect("peer")
}

/// One end of the link, played by the target: its IKE (initiator at the service
/// control's address, responder at the proxy's) and, once the Child SA is up, its plane.
pub struct LinkEnd {
    pub local: IpAddr,
    pub ike: Box<dyn Actor<Event = IkeEvent>>,
    pub plane: Option<DataPlane>,
    seed: u64,
}

impl LinkEnd {
    /// The service control's end (it initiates toward the proxy).
    pub fn control() -> LinkEnd {
        let mut i = Initiator::new(
            InitiatorConfig {
                ike: link_config("sc1.operator.example", SC),
                local: SocketAddr::new(ip(SC), 500),
                remote: SocketAddr::new(ip(PROXY), 500),
            },
            Box::new(ChaCha20Rng::seed_from_u64(0x11e)),
        )
        .expect("link initiator");
        i.start(Instant::ZERO).expect("start");
        LinkEnd {
            local: ip(SC),
            ike: Box::new(i),
            plane: None,
            seed: 0x11e,
        }
    }

    /// The proxy's end (it answers the service control).
    pub fn proxy() -> LinkEnd {
        let r = Responder::new(
            ResponderConfig::new(link_config("proxy.operator.example", PROXY)),
            Box::new(ChaCha20Rng::seed_from_u64(0x12e)),
            Instant::ZERO,
        )
        .expect("link responder");
        LinkEnd {
            local: ip(PROXY),
            ike: Box::new(r),
            plane: None,
            seed: 0x12e,
        }
    }

    /// The link's IKE datagrams out (as IPv4/UDP packets); the plane installed when the
    /// Child SA comes up.
    pub fn drain(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut n = 0;
        while let Some(o) = self.ike.poll_output() {
            n += 1;
            assert!(n < 10_000, "the link IKE's outbox does not drain");
            match o {
                Output::Transmit(t) => out.push(udp(t.from, t.to, &t.data)),
                Output::Event(IkeEvent::ChildSaEstablished { child, .. })
                | Output::Event(IkeEvent::ChildSaRekeyed { child, .. }) => {
                    self.seed += 1;
                    let rng = Box::new(ChaCha20Rng::seed_from_u64(self.seed));
                    self.plane = link_plane(*child, self.local, now, rng).ok();
                }
                _ => {}
            }
        }
        out
    }

    /// A datagram of the link's IKE (an IPv4/UDP packet to our port 500).
    pub fn ike_input(&mut self, now: Instant, packet: &[u8]) -> bool {
        let Ok(info) = deputy::ipsec::parse_packet(packet) else {
            return false;
        };
        if info.protocol != 17 || info.dst != self.local || info.dst_port != Some(500) {
            return false;
        }
        let Some(payload) = packet.get(info.header_len + 8..info.total_len) else {
            return false;
        };
        let _ = self.ike.handle_input(
            now,
            Input::Datagram {
                from: SocketAddr::new(info.src, info.src_port.unwrap_or(0)),
                to: SocketAddr::new(info.dst, 500),
                data: payload,
            },
        );
        true
    }

    /// `inner` sealed into the link (None while it is down or the plane refuses it).
    pub fn seal(&mut self, now: Instant, inner: &[u8]) -> Option<Vec<u8>> {
        match self.plane.as_mut()?.protect(now, inner).ok()? {
            Outbound::Protected(Protected::Ip(esp)) => Some(esp),
            Outbound::Protected(Protected::Udp(d)) => d.to_ip_packet(0).ok(),
            _ => None,
        }
    }

    /// A link packet opened (None if it does not open).
    pub fn open(&mut self, now: Instant, packet: &[u8]) -> Option<Vec<u8>> {
        match self.plane.as_mut()?.unprotect(now, packet).ok()? {
            Inbound::Packet { packet, .. } => Some(packet),
            _ => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ike.poll_timeout().is_some_and(|t| t <= now) {
            self.ike.handle_timeout(now);
        }
        if let Some(p) = self.plane.as_mut()
            && p.poll_timeout().is_some_and(|t| t <= now)
        {
            p.handle_timeout(now);
        }
    }
}

/// A UDP datagram from `from` to `to` on ports 500/4500/any, its payload behind the non-ESP
/// marker or not: [flags, ports, length, bytes].
pub fn datagram(b: &mut super::common::Bytes, from: &str, to: &str) -> Vec<u8> {
    let flags = b.u8();
    let port = |b: &mut super::common::Bytes, sel: u8| match sel % 4 {
        0 | 1 => 500,
        2 => 4500,
        _ => b.u16(),
    };
    let sport = port(b, flags);
    let dport = port(b, flags >> 2);
    let mut body = Vec::new();
    if flags & 0x10 == 0x10 {
        body.extend_from_slice(&[0; 4]);
    }
    body.extend_from_slice(b.chunk());
    udp(
        SocketAddr::new(ip(from), sport),
        SocketAddr::new(ip(to), dport),
        &body,
    )
}

/// An address of the operator world: [selector].
pub fn addr(sel: u8) -> &'static str {
    [S1, S2, UNSERVED, PEER, STRANGER, SC, SC_ACCESS, PROXY][usize::from(sel % 8)]
}

//! Shared set-up for the seed 000 targets: an appliance, its crypto proxy and a remote node
//! wired together in memory (datagrams routed by address, streams paired), so the fuzzer
//! can corrupt, drop or inject messages toward one actor in the middle of real flows, and
//! feed it raw input as well.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use deputy::channel::{ClientCertPolicy, ClientConfig, Psk, ServerConfig};
use deputy::crypto::cert::{CertificateAuthority, TrustStore};
use deputy::offload::{
    AccessPolicy, Appliance, ApplianceConfig, ApplianceParams, ApplianceEvent, CryptoProxy, DirectKey, LinkKey,
    OffloadEvent, ProxyConfig, RemoteNode, RemoteNodeConfig, ServedAppliance, Target,
};
use deputy::{Actor, Input, Instant, Output, StreamId, UnixTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub const ANCHOR: UnixTime = UnixTime(1_800_000_000);

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

pub fn appliance_addr() -> SocketAddr {
    addr("192.168.0.10:5683")
}
pub fn proxy_udp() -> SocketAddr {
    addr("192.168.0.2:5684")
}
pub fn proxy_tcp() -> SocketAddr {
    addr("192.168.0.2:8443")
}
pub fn remote_udp() -> SocketAddr {
    addr("203.0.113.20:7000")
}
pub fn remote_tcp() -> SocketAddr {
    addr("203.0.113.20:7443")
}

/// Which actor the fuzzer attacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Appliance = 0,
    Proxy = 1,
    Remote = 2,
}

/// Reads the fuzz input as a sequence of small decisions.
pub struct Ops<'a> {
    data: &'a [u8],
}

impl<'a> Ops<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Ops { data }
    }
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }
    /// A length byte, then that many bytes (fewer at the end of the input).
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = self.byte().map_or(0, usize::from);
        let n = n.min(self.data.len());
        let (c, rest) = self.data.split_at(n);
        self.data = rest;
        c
    }
}

/// One pending delivery.
enum Delivery {
    Datagram {
        to: Who,
        from: SocketAddr,
        local: SocketAddr,
        data: Vec<u8>,
    },
    Stream {
        to: Who,
        id: StreamId,
        data: Vec<u8>,
    },
    Closed {
        to: Who,
        id: StreamId,
    },
}

impl Delivery {
    fn target(&self) -> Who {
        match self {
            Delivery::Datagram { to, .. }
            | Delivery::Stream { to, .. }
            | Delivery::Closed { to, .. } => *to,
        }
    }
}

/// The three actors and what is in flight between them.
pub struct World {
    pub appliance: Appliance,
    pub proxy: CryptoProxy,
    pub remote: RemoteNode,
    pub now: Instant,
    queue: VecDeque<Delivery>,
    /// (actor, its stream id) ↔ (actor, its stream id).
    pairs: BTreeMap<(u8, u64), (Who, StreamId)>,
    next_inbound: u64,
    pub events: Vec<OffloadEvent>,
}

impl World {
    /// Keyed or unkeyed link; certificate or PSK remote node.
    pub fn new(keyed: bool, psk: bool) -> World {
        let mut rng = ChaCha20Rng::seed_from_u64(0x5EED_0000);
        let ca = CertificateAuthority::generate("home CA", &mut rng);
        let proxy_id = ca
            .issue_identity("proxy.home", &["microwave"], ANCHOR, 86_400, &mut rng)
            .expect("issue");
        let phone_id = ca
            .issue_identity("phone", &[], ANCHOR, 86_400, &mut rng)
            .expect("issue");
        let trust = || TrustStore::with(ca.certificate().clone());
        let key = Psk::new("phone-psk", &[9; 32]).expect("psk");
        let link_key = keyed.then(|| LinkKey::new(&[3; 32]).expect("link key"));

        let mut channel = ServerConfig::with_certificate(proxy_id, ANCHOR);
        channel.client_certs = ClientCertPolicy::Optional(trust());
        channel.add_psk(key.clone()).expect("one psk");
        let mut pc = ProxyConfig::new(channel, proxy_udp());
        let mut served = ServedAppliance::new(appliance_addr(), AccessPolicy::AnyAuthenticated);
        if let Some(k) = &link_key {
            served.link_key = Some(k.clone());
        }
        pc.serve("microwave", served).expect("serve");
        pc.max_sessions = 4;
        pc.max_streams = 6;
        let proxy = CryptoProxy::new(pc, Box::new(ChaCha20Rng::seed_from_u64(1)));

        let mut ac = ApplianceConfig::new(ApplianceParams { name: "microwave".into(), local: appliance_addr(), proxy: proxy_udp(), proxy_public: proxy_tcp() })
            .expect("appliance");
        ac.direct_keys.push(DirectKey::new(7, &[5; 32]));
        if let Some(k) = &link_key {
            ac.link_key = Some(k.clone());
        }
        ac.max_sessions = 4;
        let appliance = Appliance::new(ac, Box::new(ChaCha20Rng::seed_from_u64(2)));

        let client = if psk {
            ClientConfig::with_psk(key, ANCHOR)
        } else {
            ClientConfig::with_client_certificate(trust(), "proxy.home", phone_id, ANCHOR)
        };
        let mut rc = RemoteNodeConfig::new(client, remote_udp());
        rc.direct_keys.push(("microwave".into(), DirectKey::new(7, &[5; 32])));
        if psk {
            rc.psk_scope = vec!["microwave".into()];
        }
        rc.max_sessions = 4;
        let remote = RemoteNode::new(rc, Box::new(ChaCha20Rng::seed_from_u64(3)));
        World {
            appliance,
            proxy,
            remote,
            now: Instant::from_secs(1),
            queue: VecDeque::new(),
            pairs: BTreeMap::new(),
            next_inbound: 0,
            events: Vec::new(),
        }
    }

    pub fn target(&self) -> Target {
        Target::new("microwave", appliance_addr())
    }

    fn actor(&mut self, who: Who) -> &mut dyn Actor<Event = OffloadEvent> {
        match who {
            Who::Appliance => &mut self.appliance,
            Who::Proxy => &mut self.proxy,
            Who::Remote => &mut self.remote,
        }
    }

    fn owner_of_datagram(to: SocketAddr) -> Option<Who> {
        if to == appliance_addr() {
            Some(Who::Appliance)
        } else if to == proxy_udp() {
            Some(Who::Proxy)
        } else if to == remote_udp() {
            Some(Who::Remote)
        } else {
            None
        }
    }

    /// Carry out everything `who` wants done; `provoked` is the length of the datagram it
    /// just got from outside the link (for the amplification check).
    pub fn drain(&mut self, who: Who, provoked: Option<usize>) {
        let mut outputs = Vec::new();
        while let Some(o) = self.actor(who).poll_output() {
            outputs.push(o);
            if outputs.len() > 100_000 {
                panic!("runaway outputs from {who:?}");
            }
        }
        for o in outputs {
            match o {
                Output::Transmit(t) => {
                    if who == Who::Appliance && t.to != proxy_udp() {
                        let got = provoked.unwrap_or(0);
                        // Never unprovoked, never larger than what provoked it.
                        assert!(
                            t.data.len() <= got,
                            "the appliance answered {} bytes to {got}",
                            t.data.len()
                        );
                    }
                    if let Some(to) = Self::owner_of_datagram(t.to) {
                        self.queue.push_back(Delivery::Datagram {
                            to,
                            from: t.from,
                            local: t.to,
                            data: t.data,
                        });
                    }
                }
                Output::Connect { id, remote, .. } => {
                    let listener = if remote == proxy_tcp() {
                        Some(Who::Proxy)
                    } else if remote == remote_tcp() {
                        Some(Who::Remote)
                    } else {
                        None
                    };
                    let Some(listener) = listener else {
                        let now = self.now;
                        let _ = self.actor(who).handle_input(now, Input::StreamClosed { id });
                        self.drain(who, None);
                        continue;
                    };
                    self.next_inbound += 1;
                    let inbound = StreamId::inbound(self.next_inbound);
                    self.pairs.insert((who as u8, id.to_u64()), (listener, inbound));
                    self.pairs
                        .insert((listener as u8, inbound.to_u64()), (who, id));
                    let now = self.now;
                    let _ = self.actor(who).handle_input(
                        now,
                        Input::StreamConnected {
                            id,
                            local: addr("10.9.9.9:40000"),
                        },
                    );
                    let _ = self.actor(listener).handle_input(
                        now,
                        Input::StreamAccepted {
                            id: inbound,
                            local: remote,
                            remote: addr("10.9.9.9:40000"),
                        },
                    );
                    self.drain(who, None);
                    self.drain(listener, None);
                }
                Output::StreamSend { id, data } => {
                    if let Some(&(to, peer)) = self.pairs.get(&(who as u8, id.to_u64())) {
                        self.queue.push_back(Delivery::Stream { to, id: peer, data });
                    }
                }
                Output::StreamClose { id } => {
                    if let Some((to, peer)) = self.pairs.remove(&(who as u8, id.to_u64())) {
                        self.pairs.remove(&(to as u8, peer.to_u64()));
                        self.queue.push_back(Delivery::Closed { to, id: peer });
                    }
                }
                Output::Packet { .. } => panic!("{who:?} emitted a raw packet"),
                Output::Event(e) => self.events.push(e),
                Output::Lost { .. } => {}
            }
        }
    }

    /// Deliver the next message in flight; the fuzzer may alter it (`noise`) or drop it
    /// when it is bound for `victim`.
    pub fn step(&mut self, victim: Who, noise: &[u8], drop: bool) -> bool {
        let Some(mut d) = self.queue.pop_front() else {
            return false;
        };
        let hit = d.target() == victim;
        if hit && drop {
            return true;
        }
        if hit && !noise.is_empty() {
            let bytes = match &mut d {
                Delivery::Datagram { data, .. } | Delivery::Stream { data, .. } => Some(data),
                Delivery::Closed { .. } => None,
            };
            if let Some(bytes) = bytes {
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b ^= noise[i % noise.len()];
                }
            }
        }
        let now = self.now;
        match d {
            Delivery::Datagram {
                to,
                from,
                local,
                data,
            } => {
                let _ = self.actor(to).handle_input(
                    now,
                    Input::Datagram {
                        from,
                        to: local,
                        data: &data,
                    },
                );
                let outside = from != proxy_udp();
                self.drain(to, outside.then_some(data.len()));
            }
            Delivery::Stream { to, id, data } => {
                let _ = self.actor(to).handle_input(now, Input::StreamData { id, data: &data });
                self.drain(to, None);
            }
            Delivery::Closed { to, id } => {
                let _ = self.actor(to).handle_input(now, Input::StreamClosed { id });
                self.drain(to, None);
            }
        }
        true
    }

    /// Raw input straight to `who`.
    pub fn inject(&mut self, who: Who, from_outside: bool, data: &[u8]) {
        let (from, local) = match (who, from_outside) {
            (Who::Appliance, false) => (proxy_udp(), appliance_addr()),
            (Who::Appliance, true) => (addr("203.0.113.66:4000"), appliance_addr()),
            (Who::Proxy, false) => (appliance_addr(), proxy_udp()),
            (Who::Proxy, true) => (addr("203.0.113.66:4000"), proxy_udp()),
            (Who::Remote, _) => (appliance_addr(), remote_udp()),
        };
        let now = self.now;
        let _ = self.actor(who).handle_input(
            now,
            Input::Datagram {
                from,
                to: local,
                data,
            },
        );
        let outside = from != proxy_udp();
        self.drain(who, outside.then_some(data.len()));
    }

    /// Raw bytes on a stream the driver accepted for `who` (a fresh one when `fresh`).
    pub fn inject_stream(&mut self, who: Who, fresh: bool, data: &[u8]) {
        if fresh {
            self.next_inbound += 1;
        }
        let id = StreamId::inbound(1000 + self.next_inbound);
        let now = self.now;
        if fresh {
            let _ = self.actor(who).handle_input(
                now,
                Input::StreamAccepted {
                    id,
                    local: proxy_tcp(),
                    remote: addr("203.0.113.66:5000"),
                },
            );
        }
        let _ = self.actor(who).handle_input(now, Input::StreamData { id, data });
        self.drain(who, None);
    }

    pub fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        let now = self.now;
        for who in [Who::Appliance, Who::Proxy, Who::Remote] {
            if self.actor(who).poll_timeout().is_some_and(|t| t <= now) {
                self.actor(who).handle_timeout(now);
            }
            self.drain(who, None);
        }
    }

    /// Commands: flow A from the remote node, flow B from the appliance, data both ways.
    pub fn command(&mut self, which: u8, data: &[u8]) {
        let now = self.now;
        let target = self.target();
        match which % 6 {
            0 => {
                let _ = self.remote.send(now, &target, data);
                self.drain(Who::Remote, None);
            }
            1 => {
                let _ = self.remote.send_plaintext(now, &target, data);
                self.drain(Who::Remote, None);
            }
            2 => {
                let _ = self.remote.send_direct(self.now, &target, data);
                self.drain(Who::Remote, None);
            }
            3 => {
                let _ = self.appliance.connect(now, remote_tcp(), None);
                self.drain(Who::Appliance, None);
            }
            4 => {
                let sessions: Vec<u64> = self.appliance.sessions().map(|(s, _)| s).collect();
                for s in sessions {
                    let _ = self.appliance.send(now, s, data);
                }
                self.drain(Who::Appliance, None);
            }
            _ => {
                let sessions: Vec<u64> = self.appliance.sessions().map(|(s, _)| s).collect();
                if let Some(&s) = sessions.first() {
                    let _ = self.appliance.close(now, s);
                }
                self.drain(Who::Appliance, None);
            }
        }
    }

    /// The invariants that hold after any input.
    pub fn check(&self) {
        assert!(self.proxy.session_count() <= 4);
        assert!(self.proxy.stream_count() <= 6);
        assert!(self.appliance.sessions().count() <= 4);
        assert!(self.remote.sessions().count() <= 4);
        // Nothing the appliance's application received came from outside the proxy link
        // except data it opened with its own weak key.
        for e in &self.events {
            if let OffloadEvent::Appliance(ApplianceEvent::Delivered { session, from, .. }) = e {
                let direct = matches!(from, deputy::offload::Peer::DirectKey(7));
                assert!(session.is_some() || direct, "{e:?}");
            }
        }
    }
}

/// Run a fuzz case against `victim`.
pub fn run(victim: Who, data: &[u8]) {
    let mut ops = Ops::new(data);
    let mode = ops.byte().unwrap_or(0);
    let mut world = World::new(mode & 1 == 1, mode & 2 == 2);
    let mut steps = 0usize;
    while let Some(op) = ops.byte() {
        steps += 1;
        if steps > 2_000 {
            break;
        }
        match op % 8 {
            0 | 1 => {
                let c = ops.chunk();
                world.command(op / 8, c);
            }
            2 => {
                // Deliver a few messages untouched.
                for _ in 0..=(op / 8) {
                    world.step(victim, &[], false);
                }
            }
            3 => {
                let noise = ops.chunk();
                world.step(victim, noise, false);
            }
            4 => {
                world.step(victim, &[], true);
            }
            5 => {
                let c = ops.chunk();
                world.inject(victim, op & 0x10 != 0, c);
            }
            6 => {
                let c = ops.chunk();
                world.inject_stream(victim, op & 0x10 != 0, c);
            }
            _ => world.advance(u64::from(op / 8) * 97),
        }
        world.check();
    }
    // Let everything settle; every timer must eventually go quiet or keep bounded state.
    for _ in 0..200 {
        if !world.step(victim, &[], false) {
            world.advance(1_000);
        }
    }
    world.check();
    if std::env::var_os("OFFLOAD_FUZZ_EVENTS").is_some() {
        // Reproducing a case: show what every party reported.
        eprintln!("{:#?}", world.events);
    }
}

//! Shared set-up for the rendezvous targets: the three actors of seed 002 on a tiny
//! in-process network (no NAT: every node has a public address; streams are paired
//! directly), so a target can run the real flow and inject fuzzed input at any point.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use deputy::crypto::cert::{CertificateAuthority, CertifiedKey, TrustStore};
use deputy::rendezvous::{
    Acceptor, AcceptorConfig, AcceptorParams, DerivedRegistrationKeys, DeviceId, Issuer,
    IssuerConfig, IssuerParams, MemoryDirectory, Password, RegistrationKey, RendezvousEvent,
    RendezvousServer, RendezvousServerConfig, RendezvousServerParams,
};
use deputy::{Actor, Input, Instant, Output, StreamId, UnixTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub const ANCHOR: UnixTime = UnixTime(1_800_000_000);
pub const DEVICE: DeviceId = DeviceId(2133);
pub const PASSWORD: &[u8] = b"2133-secret";

pub fn server_udp() -> SocketAddr {
    "130.74.23.6:1200".parse().unwrap()
}
pub fn acceptor_udp() -> SocketAddr {
    "202.204.16.13:2000".parse().unwrap()
}
pub fn issuer_udp() -> SocketAddr {
    "4.17.168.2:1600".parse().unwrap()
}

/// A fuzzer-chosen number: the first (up to) eight bytes, big-endian, zero-padded.
pub fn u64_of(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

/// A target's input split into the mode byte (which scenario) and the rest, with a fresh
/// network; `None` for empty input.
pub fn start(data: &[u8]) -> Option<(u8, &[u8], Net)> {
    let (&mode, rest) = data.split_first()?;
    Some((mode, rest, Net::new()))
}

/// A target's whole run: the input split as [`start`] does, `scenario` on the fresh
/// network, then 120 s more of virtual time for whatever the scenario left armed.
pub fn run(data: &[u8], scenario: impl FnOnce(&mut Net, u8, &[u8])) {
    let Some((mode, rest, mut net)) = start(data) else {
        return;
    };
    scenario(&mut net, mode, rest);
    net.run(Duration::from_secs(120));
}

/// Which actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Who {
    Server,
    Issuer,
    Acceptor,
}

impl Who {
    /// Its UDP address.
    pub fn udp(self) -> SocketAddr {
        match self {
            Who::Server => server_udp(),
            Who::Issuer => issuer_udp(),
            Who::Acceptor => acceptor_udp(),
        }
    }

    fn ip(self) -> std::net::IpAddr {
        self.udp().ip()
    }

    fn of(ip: std::net::IpAddr) -> Option<Who> {
        [Who::Server, Who::Issuer, Who::Acceptor]
            .into_iter()
            .find(|w| w.ip() == ip)
    }
}

/// A recorded datagram: sender, receiver, bytes.
pub type Sent = (SocketAddr, SocketAddr, Vec<u8>);

pub struct Net {
    pub server: RendezvousServer,
    pub issuer: Issuer,
    pub acceptor: Acceptor,
    pub now: Instant,
    /// (node, stream id) → (peer node, peer stream id).
    streams: BTreeMap<(Who, StreamId), (Who, StreamId)>,
    next_inbound: u64,
    /// Every datagram carried, for targets that replay or mutate them.
    pub datagrams: Vec<Sent>,
    /// Stream bytes carried: (to, stream, bytes).
    pub stream_bytes: Vec<(Who, StreamId, Vec<u8>)>,
    pub key: RegistrationKey,
    /// The CA the devices and the server trust.
    pub trust: TrustStore,
    /// A second certificate for the device, for targets that play it themselves.
    pub device_identity: Option<CertifiedKey>,
    /// Bytes the server wrote to streams no actor owns (a target's own client).
    pub external: BTreeMap<StreamId, Vec<u8>>,
}

impl Net {
    pub fn new() -> Net {
        let mut rng = ChaCha20Rng::seed_from_u64(0x5EED_0002);
        let ca = CertificateAuthority::generate("fuzz CA", &mut rng);
        let trust = TrustStore::with(ca.certificate().clone());
        let id = |rng: &mut ChaCha20Rng, name: &str| {
            ca.issue_identity(name, &[], ANCHOR, 86_400 * 365, rng)
                .expect("issue")
        };
        let keys = DerivedRegistrationKeys::new([7; 32]);
        let server_cfg = RendezvousServerConfig::new(RendezvousServerParams {
            udp: server_udp(),
            issuer_port: 1201,
            device_port: 1300,
            identity: Arc::new(id(&mut rng, "rv")),
            device_trust: trust.clone(),
            keys: Box::new(DerivedRegistrationKeys::new([7; 32])),
            time_anchor: ANCHOR,
        });
        let server = RendezvousServer::new(
            server_cfg,
            MemoryDirectory::new(64),
            Box::new(ChaCha20Rng::seed_from_u64(1)),
        )
        .expect("server");
        let password = Password::new(PASSWORD, &mut rng).expect("password");
        let mut acceptor_cfg = AcceptorConfig::new(AcceptorParams {
            device: DEVICE,
            registration_key: keys.device_key(DEVICE),
            identity: Arc::new(id(&mut rng, &DEVICE.certificate_name())),
            trust: trust.clone(),
            server_name: "rv".into(),
            server_udp: server_udp(),
            server_stream: "130.74.23.6:1300".parse().unwrap(),
            local: acceptor_udp(),
            password,
            time_anchor: ANCHOR,
        });
        // Keep the birthday technique small: the fuzzer explores logic, not volume.
        acceptor_cfg.peer.extra_sockets = 4;
        acceptor_cfg.peer.spray_probes = 8;
        let mut issuer_cfg = IssuerConfig::new(IssuerParams {
            trust: trust.clone(),
            server_name: "rv".into(),
            server_stream: "130.74.23.6:1201".parse().unwrap(),
            server_udp: server_udp(),
            local: issuer_udp(),
            time_anchor: ANCHOR,
        });
        issuer_cfg.peer.extra_sockets = 4;
        issuer_cfg.peer.spray_probes = 8;
        Net {
            server,
            issuer: Issuer::new(issuer_cfg, Box::new(ChaCha20Rng::seed_from_u64(2))),
            acceptor: Acceptor::new(acceptor_cfg, Box::new(ChaCha20Rng::seed_from_u64(3))),
            now: Instant::from_secs(1),
            streams: BTreeMap::new(),
            next_inbound: 0,
            datagrams: Vec::new(),
            stream_bytes: Vec::new(),
            key: keys.device_key(DEVICE),
            device_identity: Some(id(&mut rng, &DEVICE.certificate_name())),
            trust,
            external: BTreeMap::new(),
        }
    }

    pub fn actor(&mut self, who: Who) -> &mut dyn Actor<Event = RendezvousEvent> {
        match who {
            Who::Server => &mut self.server,
            Who::Issuer => &mut self.issuer,
            Who::Acceptor => &mut self.acceptor,
        }
    }

    /// Feed an input to `who` (errors are the actor's business) and carry out what follows.
    pub fn input(&mut self, who: Who, input: Input<'_>) {
        let now = self.now;
        let _ = self.actor(who).handle_input(now, input);
        self.drain_all();
    }

    /// Carry out every node's outputs until nothing moves (bounded).
    pub fn drain_all(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            for who in [Who::Server, Who::Issuer, Who::Acceptor] {
                let mut outs = Vec::new();
                while let Some(o) = self.actor(who).poll_output() {
                    outs.push(o);
                    if outs.len() > 100_000 {
                        break;
                    }
                }
                for o in outs {
                    moved = true;
                    self.carry(who, o);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn carry(&mut self, from: Who, out: Output<RendezvousEvent>) {
        let now = self.now;
        match out {
            Output::Transmit(t) => {
                self.datagrams.push((t.from, t.to, t.data.clone()));
                if let Some(to) = Who::of(t.to.ip()) {
                    let _ = self.actor(to).handle_input(
                        now,
                        Input::Datagram {
                            from: t.from,
                            to: t.to,
                            data: &t.data,
                        },
                    );
                }
            }
            Output::Connect { id, remote, .. } => {
                let Some(to) = Who::of(remote.ip()) else {
                    let _ = self.actor(from).handle_input(now, Input::StreamClosed { id });
                    return;
                };
                self.next_inbound += 1;
                let theirs = StreamId::inbound(self.next_inbound);
                self.streams.insert((from, id), (to, theirs));
                self.streams.insert((to, theirs), (from, id));
                let local = SocketAddr::new(from.ip(), 40_000 + self.next_inbound as u16);
                let _ = self
                    .actor(from)
                    .handle_input(now, Input::StreamConnected { id, local });
                let _ = self.actor(to).handle_input(
                    now,
                    Input::StreamAccepted {
                        id: theirs,
                        local: remote,
                        remote: local,
                    },
                );
            }
            Output::StreamSend { id, data } => {
                if let Some(&(to, theirs)) = self.streams.get(&(from, id)) {
                    self.stream_bytes.push((to, theirs, data.clone()));
                    let _ = self
                        .actor(to)
                        .handle_input(now, Input::StreamData { id: theirs, data: &data });
                } else if from == Who::Server {
                    let buf = self.external.entry(id).or_default();
                    if buf.len() < 1 << 20 {
                        buf.extend_from_slice(&data);
                    }
                }
            }
            Output::StreamClose { id } => {
                if let Some((to, theirs)) = self.streams.remove(&(from, id)) {
                    self.streams.remove(&(to, theirs));
                    let _ = self
                        .actor(to)
                        .handle_input(now, Input::StreamClosed { id: theirs });
                }
            }
            Output::Event(_) | Output::Packet { .. } | Output::Lost { .. } => {}
        }
    }

    /// Advance time to the next timer (at most `max`), fire it, carry out the outputs.
    pub fn tick(&mut self, max: Duration) {
        let next = [Who::Server, Who::Issuer, Who::Acceptor]
            .into_iter()
            .filter_map(|w| {
                let a: &dyn Actor<Event = RendezvousEvent> = match w {
                    Who::Server => &self.server,
                    Who::Issuer => &self.issuer,
                    Who::Acceptor => &self.acceptor,
                };
                a.poll_timeout()
            })
            .min()
            .unwrap_or(self.now + max);
        self.now = next.clamp(self.now, self.now + max);
        let now = self.now;
        for who in [Who::Server, Who::Issuer, Who::Acceptor] {
            self.actor(who).handle_timeout(now);
        }
        self.drain_all();
    }

    /// Run for `d` of virtual time (bounded number of timer firings).
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..2_000 {
            if self.now >= end {
                return;
            }
            self.tick(end - self.now);
        }
    }

    /// Register, connect with `password`, and run the flow for `d`; returns the session.
    /// Raw datagrams to `who`'s UDP address, one per chunk of `noise`, alternately from the
    /// server and from `other` (the peer device), 300 ms apart at most.
    pub fn spray(&mut self, who: Who, other: SocketAddr, noise: &[u8]) {
        for (i, c) in chunks(noise).into_iter().enumerate() {
            let from = if i % 2 == 0 { server_udp() } else { other };
            self.input(who, Input::Datagram { from, to: who.udp(), data: c });
            self.tick(Duration::from_millis(300));
        }
    }

    /// After a real flow: feed `who` mutated copies of what it received, one chunk of
    /// `noise` per copy (even chunks mutate a datagram sent to its address, odd ones a
    /// chunk of stream bytes), so the fuzzer reaches states only a real session gets to.
    /// `after_stream` runs after each stream copy, `after` after every chunk (the target's
    /// own commands); then the network runs for 30 s.
    pub fn replay_mutated(
        &mut self,
        who: Who,
        noise: &[u8],
        mut after_stream: impl FnMut(&mut Net),
        mut after: impl FnMut(&mut Net, &[u8]),
    ) {
        let seen: Vec<_> = self
            .datagrams
            .iter()
            .filter(|(_, to, _)| to.ip() == who.ip())
            .cloned()
            .collect();
        let streamed: Vec<_> = self
            .stream_bytes
            .iter()
            .filter(|(to, _, _)| *to == who)
            .cloned()
            .collect();
        for (i, c) in chunks(noise).into_iter().enumerate() {
            if i % 2 == 0 {
                if let Some((from, to, bytes)) = seen.get(i % seen.len().max(1)) {
                    let m = mutate(bytes, c);
                    self.input(who, Input::Datagram { from: *from, to: *to, data: &m });
                }
            } else if let Some((_, id, bytes)) = streamed.get(i % streamed.len().max(1)) {
                let m = mutate(bytes, c);
                self.input(who, Input::StreamData { id: *id, data: &m });
                after_stream(self);
            }
            after(self, c);
        }
        self.run(Duration::from_secs(30));
    }

    pub fn flow(&mut self, password: &[u8], d: Duration) -> Option<u64> {
        self.run(Duration::from_secs(1));
        let now = self.now;
        let session = self.issuer.connect(now, DEVICE, password).ok()?;
        self.drain_all();
        self.run(d);
        Some(session)
    }
}

/// Cut fuzz input into chunks: a length byte, then that many bytes.
pub fn chunks(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let n = usize::from(len).min(rest.len());
        out.push(&rest[..n]);
        data = &rest[n..];
        if out.len() >= 256 {
            break;
        }
    }
    out
}

/// XOR `noise` over `bytes` (cycled), so mutations stay mostly well-framed.
pub fn mutate(bytes: &[u8], noise: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if noise.is_empty() {
        return out;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b ^= noise[i % noise.len()];
    }
    out
}

/// A channel client of our own on a server stream (issuer port 1201 or device port 1300).
pub struct Client {
    pub id: StreamId,
    pub conn: deputy::channel::Connection,
    rng: ChaCha20Rng,
}

impl Client {
    pub fn open(net: &mut Net, port: u16, identity: Option<CertifiedKey>) -> Client {
        let cfg = match identity {
            Some(id) => deputy::channel::ClientConfig::with_client_certificate(
                net.trust.clone(),
                "rv",
                id,
                ANCHOR,
            ),
            None => deputy::channel::ClientConfig::with_ca(net.trust.clone(), "rv", ANCHOR),
        };
        let mut rng = ChaCha20Rng::seed_from_u64(port.into());
        let conn = deputy::channel::Connection::client(std::sync::Arc::new(cfg), net.now, &mut rng)
            .expect("client");
        let id = StreamId::inbound(10_000 + u64::from(port));
        net.input(
            Who::Server,
            Input::StreamAccepted {
                id,
                local: SocketAddr::new(server_udp().ip(), port),
                remote: "66.6.6.6:5555".parse().unwrap(),
            },
        );
        let mut c = Client { id, conn, rng };
        c.pump(net);
        c
    }

    /// Move bytes both ways until nothing moves; returns the messages received.
    pub fn pump(&mut self, net: &mut Net) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for _ in 0..8 {
            let out = self.conn.take_outgoing();
            if !out.is_empty() {
                net.input(Who::Server, Input::StreamData { id: self.id, data: &out });
            }
            let back = net.external.remove(&self.id).unwrap_or_default();
            if out.is_empty() && back.is_empty() {
                break;
            }
            if !back.is_empty() {
                let _ = self.conn.feed(net.now, &back, &mut self.rng);
            }
            while let Some(m) = self.conn.take_received() {
                got.push(m);
            }
        }
        got
    }

    pub fn send(&mut self, net: &mut Net, message: &[u8]) -> Vec<Vec<u8>> {
        if self.conn.send(message).is_err() {
            return Vec::new();
        }
        self.pump(net)
    }
}

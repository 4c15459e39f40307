//! The service control (seed 003's edge router, Figs. 9 and 10): routes everything, and
//! diverts the key exchange of the subscribers whose profiles it holds to its key-exchange
//! proxy.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use super::super::transfer;
use super::OperatorEvent;
use super::link::{LINK_RETRY, child_rng, link_ike, link_plane};
use super::profile::{ProfileMessage, ServiceProfile};
use crate::channel::{Connection, PeerIdentity, SecureStream, ServerConfig};
use crate::error::OperatorError;
use crate::ikev2::{IkeConfig, IkeEvent, Initiator, InitiatorConfig};
use crate::io::{Actor, IfaceId, Input, Outbox, Output, StreamId};
use crate::ipsec::{
    self, DataPlane, Inbound, Outbound, PROTO_ESP, PROTO_UDP, PacketInfo, Protected,
};
use crate::time::TimerTable;
use crate::{Error, Instant, Rng};

/// The service control's configuration.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// The interface toward the subscribers (radio side).
    pub access: IfaceId,
    /// The interface toward the core network.
    pub core: IfaceId,
    /// Our address on the core (the link's outer source).
    pub address: IpAddr,
    /// Our address on the access side (the outer source of Fig. 14(B)).
    pub access_address: IpAddr,
    /// The nearest key-exchange proxy (known in advance, ¶0026).
    pub proxy: IpAddr,
    /// Our IKE identity and credential toward the proxy (for the link).
    pub link_ike: IkeConfig,
    /// The channel the authentication server reaches us on (its PSK or certificate
    /// policy decides who may install profiles).
    pub profiles_channel: Arc<ServerConfig>,
    /// Profiles held at once.
    pub max_profiles: usize,
    /// Profile-channel streams open at once.
    pub max_sessions: usize,
    /// Bound of the output queue.
    pub outbox_bound: usize,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlStats {
    /// Diverted to the proxy (Fig. 12(B), 13(C)).
    pub diverted: u64,
    /// Decapsulated and sent on to the peer (Fig. 13(A)).
    pub relayed: u64,
    /// Key transfers rewritten toward a subscriber (Fig. 14(B)).
    pub transfers: u64,
    /// Routed normally (S24).
    pub routed: u64,
    /// Decapsulated packets for no served subscriber, dropped (no spoofing relay).
    pub not_served: u64,
    /// Link packets that did not open.
    pub link_refused: u64,
    /// Packets that should have been diverted while the link was down.
    pub link_down: u64,
    /// Key-transfer messages from the core not sent by the proxy, dropped.
    pub forged_transfers: u64,
    /// Profile messages refused (unauthenticated, undecodable, over the bound).
    pub profiles_refused: u64,
    /// Packets that did not parse.
    pub malformed: u64,
}

/// The link to the proxy, step by step.
enum Link {
    /// IKE toward the proxy is running.
    Negotiating(Box<Initiator>),
    /// The tunnel SA is installed.
    Up {
        ike: Box<Initiator>,
        plane: Box<DataPlane>,
    },
    /// It failed; try again at `retry`.
    Down { retry: Instant },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    LinkIke,
    LinkPlane,
    LinkRetry,
    Session(StreamId),
}

/// The service control, an [`Actor`] with an access and a core interface.
pub struct ServiceControl {
    cfg: ControlConfig,
    rng: Rng,
    link: Link,
    profiles: BTreeMap<u64, ServiceProfile>,
    by_addr: BTreeMap<IpAddr, u64>,
    sessions: BTreeMap<StreamId, SecureStream>,
    stats: ControlStats,
    outbox: Outbox<OperatorEvent>,
}

impl core::fmt::Debug for ServiceControl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServiceControl")
            .field("address", &self.cfg.address)
            .field("profiles", &self.profiles.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// What a UDP packet carries, as Fig. 10 tells it apart.
enum Carries {
    /// A key-transfer message (the proxy request of Fig. 12, an ack, an announce; or,
    /// toward the subscriber, Fig. 14's key transfer).
    Transfer,
    /// IKE (port 500, or 4500 behind the non-ESP marker).
    Ike,
    /// Anything else (ESP in UDP, keepalives, other ports).
    Other,
}

fn udp_payload<'a>(info: &PacketInfo, packet: &'a [u8]) -> Option<&'a [u8]> {
    (info.protocol == PROTO_UDP && !info.is_fragment)
        .then(|| packet.get(info.header_len + 8..info.total_len.min(packet.len())))
        .flatten()
}

fn carries(info: &PacketInfo, packet: &[u8]) -> Carries {
    let Some(payload) = udp_payload(info, packet) else {
        return Carries::Other;
    };
    let (s, d) = (info.src_port.unwrap_or(0), info.dst_port.unwrap_or(0));
    if (d == transfer::PORT || s == transfer::PORT) && transfer::is_marked(payload) {
        Carries::Transfer
    } else if d == transfer::PORT
        || s == transfer::PORT
        || ((d == ipsec::NAT_T_PORT || s == ipsec::NAT_T_PORT)
            && payload.len() > 4
            && payload[..4] == [0; 4])
    {
        Carries::Ike
    } else {
        Carries::Other
    }
}

impl ServiceControl {
    /// A service control; it starts the link's IKE toward its proxy at `now`.
    pub fn new(cfg: ControlConfig, mut rng: Rng, now: Instant) -> Result<ServiceControl, Error> {
        if cfg.access == cfg.core || cfg.max_profiles == 0 {
            return Err(OperatorError::BadConfig("interfaces or bounds").into());
        }
        let ike = start_link(&cfg, &mut rng, now)?;
        let mut sc = ServiceControl {
            outbox: Outbox::new(cfg.outbox_bound),
            link: Link::Negotiating(ike),
            rng,
            profiles: BTreeMap::new(),
            by_addr: BTreeMap::new(),
            sessions: BTreeMap::new(),
            stats: ControlStats::default(),
            cfg,
        };
        // The link's IKE_SA_INIT leaves now, not with its first retransmission.
        sc.drain_link(now)?;
        Ok(sc)
    }

    /// Counters.
    pub fn stats(&self) -> ControlStats {
        self.stats
    }

    /// Whether the link to the proxy is up.
    pub fn link_up(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// The profile of `subscriber`, if held.
    pub fn profile(&self, subscriber: u64) -> Option<&ServiceProfile> {
        self.profiles.get(&subscriber)
    }

    /// Profiles held.
    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }

    fn served(&self, addr: IpAddr) -> Option<&ServiceProfile> {
        self.by_addr.get(&addr).and_then(|s| self.profiles.get(s))
    }

    fn diverts(&self, subscriber: IpAddr, info: &PacketInfo) -> bool {
        self.served(subscriber).is_some_and(|p| {
            p.diverts(
                info.src,
                info.dst,
                info.src_port.unwrap_or(0),
                info.dst_port.unwrap_or(0),
            )
        })
    }

    fn emit(&mut self, iface: IfaceId, data: Vec<u8>) -> Result<(), Error> {
        self.outbox.push(Output::Packet { iface, data })
    }

    /// S26: to the proxy, inside the link (Fig. 12(B), 13(C)).
    fn divert(&mut self, now: Instant, packet: &[u8]) -> Result<(), Error> {
        let Link::Up { plane, .. } = &mut self.link else {
            self.stats.link_down += 1;
            return Err(OperatorError::LinkDown.into());
        };
        let out = plane.protect(now, packet);
        match out {
            Ok(Outbound::Protected(Protected::Ip(esp))) => {
                self.stats.diverted += 1;
                self.emit(self.cfg.core, esp)
            }
            Ok(Outbound::Protected(Protected::Udp(d))) => {
                self.stats.diverted += 1;
                let p = d.to_ip_packet(0)?;
                self.emit(self.cfg.core, p)
            }
            Ok(_) => Err(OperatorError::LinkDown.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Fig. 10 for a packet from a subscriber.
    fn on_access(&mut self, now: Instant, data: &[u8]) -> Result<(), Error> {
        let Ok(info) = ipsec::parse_packet(data) else {
            self.stats.malformed += 1;
            return Ok(());
        };
        // S21 (a proxy request, or any key-transfer message) and S22 (IKE): the
        // subscriber's profile must match (address and port), then the content decides.
        if self.diverts(info.src, &info) && !matches!(carries(&info, data), Carries::Other) {
            return self.divert(now, data);
        }
        self.stats.routed += 1;
        self.emit(self.cfg.core, data.to_vec())
    }

    /// Fig. 10 for a packet from the core.
    fn on_core(&mut self, now: Instant, data: &[u8]) -> Result<(), Error> {
        let Ok(info) = ipsec::parse_packet(data) else {
            self.stats.malformed += 1;
            return Ok(());
        };
        if info.dst == self.cfg.address {
            return self.on_own(now, &info, data);
        }
        if self.served(info.dst).is_some() {
            match carries(&info, data) {
                // S22: the peer's IKE toward the subscriber goes to the proxy (13(B) → 13(C)).
                Carries::Ike if self.diverts(info.dst, &info) => return self.divert(now, data),
                // Only the proxy sends key transfers, and only through the link.
                Carries::Transfer => {
                    self.stats.forged_transfers += 1;
                    return Ok(());
                }
                _ => {}
            }
        }
        // S24: normal routing.
        self.stats.routed += 1;
        self.emit(self.cfg.access, data.to_vec())
    }

    /// A packet for our own core address: the link's IKE, or the link's ESP.
    fn on_own(&mut self, now: Instant, info: &PacketInfo, data: &[u8]) -> Result<(), Error> {
        let from_proxy = info.src == self.cfg.proxy;
        if from_proxy
            && info.protocol == PROTO_UDP
            && matches!(info.dst_port, Some(500) | Some(ipsec::NAT_T_PORT))
            && udp_payload(info, data)
                .is_some_and(|p| p.len() > 4 && p[..4] == [0; 4] || info.dst_port == Some(500))
        {
            let payload = udp_payload(info, data).unwrap_or_default();
            let from = SocketAddr::new(info.src, info.src_port.unwrap_or(0));
            let to = SocketAddr::new(info.dst, info.dst_port.unwrap_or(0));
            let r = match &mut self.link {
                Link::Negotiating(ike) | Link::Up { ike, .. } => ike.handle_input(
                    now,
                    Input::Datagram {
                        from,
                        to,
                        data: payload,
                    },
                ),
                Link::Down { .. } => Ok(()),
            };
            self.drain_link(now)?;
            return r;
        }
        if info.protocol != PROTO_ESP && info.protocol != PROTO_UDP {
            self.stats.link_refused += 1;
            return Err(OperatorError::LinkRefused.into());
        }
        let Link::Up { plane, .. } = &mut self.link else {
            self.stats.link_refused += 1;
            return Err(OperatorError::LinkRefused.into());
        };
        // The SA is the proxy's and only the proxy's: a spoofed outer source, or anything
        // not sealed under the link's keys, does not open.
        let inner = match plane.unprotect(now, data) {
            Ok(Inbound::Packet { packet, .. }) => packet,
            _ => {
                self.stats.link_refused += 1;
                return Err(OperatorError::LinkRefused.into());
            }
        };
        self.on_decapsulated(now, &inner)
    }

    /// What the proxy sent back, decapsulated.
    fn on_decapsulated(&mut self, now: Instant, inner: &[u8]) -> Result<(), Error> {
        let Ok(info) = ipsec::parse_packet(inner) else {
            self.stats.malformed += 1;
            return Ok(());
        };
        match carries(&info, inner) {
            // S23 → S25: a key transfer for a subscriber we serve: keep the inner header
            // (peer → subscriber) and rewrite the outer one (Fig. 14(A) → 14(B)).
            Carries::Transfer if self.served(info.dst).is_some() => {
                let p = ipsec::encapsulate(self.cfg.access_address, info.dst, inner)?;
                self.stats.transfers += 1;
                self.emit(self.cfg.access, p)
            }
            // S22 → S26: the proxy's IKE as our subscriber (13(D) → 13(A)). If the peer is
            // a subscriber of ours too (both ends constrained, one service control), the
            // inner packet is classified again — once — and goes back to the proxy for
            // that subscriber's side.
            Carries::Ike if self.served(info.src).is_some() => {
                if self.served(info.dst).is_some() && self.diverts(info.dst, &info) {
                    return self.divert(now, inner);
                }
                self.stats.relayed += 1;
                self.emit(self.cfg.core, inner.to_vec())
            }
            _ => {
                self.stats.not_served += 1;
                Err(OperatorError::NotServed.into())
            }
        }
    }

    fn drain_link(&mut self, now: Instant) -> Result<(), Error> {
        let mut outs = Vec::new();
        match &mut self.link {
            Link::Negotiating(ike) | Link::Up { ike, .. } => {
                while let Some(o) = ike.poll_output() {
                    outs.push(o);
                }
            }
            Link::Down { .. } => {}
        }
        for o in outs {
            match o {
                Output::Transmit(t) => {
                    let p = ipsec::udp_packet(t.from, t.to, 64, 0, 0, &t.data)?;
                    self.emit(self.cfg.core, p)?;
                }
                Output::Event(IkeEvent::ChildSaEstablished { child, .. })
                | Output::Event(IkeEvent::ChildSaRekeyed { child, .. }) => {
                    let rng = child_rng(&mut self.rng);
                    let plane = link_plane(*child, self.cfg.address, now, rng)?;
                    let old = core::mem::replace(&mut self.link, Link::Down { retry: now });
                    if let Link::Negotiating(ike) | Link::Up { ike, .. } = old {
                        self.link = Link::Up {
                            ike,
                            plane: Box::new(plane),
                        };
                    }
                    self.outbox.event(OperatorEvent::LinkUp {
                        peer: self.cfg.proxy,
                    })?;
                }
                Output::Event(IkeEvent::Failed { .. })
                | Output::Event(IkeEvent::IkeSaDeleted { .. }) => {
                    self.link = Link::Down {
                        retry: now + LINK_RETRY,
                    };
                    self.outbox.event(OperatorEvent::LinkDown {
                        peer: self.cfg.proxy,
                    })?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn on_profiles(&mut self, now: Instant, id: StreamId, data: &[u8]) -> Result<(), Error> {
        let Some(s) = self.sessions.get_mut(&id) else {
            return Err(Error::UnknownStream(id));
        };
        let mut msgs = Vec::new();
        let fed = s.feed(now, data, &mut *self.rng, &mut self.outbox, &mut msgs);
        let peer = s.connection().peer().clone();
        for m in msgs {
            if peer == PeerIdentity::Anonymous {
                self.stats.profiles_refused += 1;
                return Err(OperatorError::NotAuthenticated.into());
            }
            match ProfileMessage::decode(&m) {
                Ok(ProfileMessage::Install(p)) => self.install(p)?,
                Ok(ProfileMessage::Withdraw(sub)) => self.withdraw(sub)?,
                Err(e) => {
                    self.stats.profiles_refused += 1;
                    return Err(e.into());
                }
            }
        }
        if self.sessions.get(&id).is_some_and(|s| s.is_closed()) {
            self.sessions.remove(&id);
        }
        fed
    }

    /// Install (or replace) a profile, as the authentication server does at attach.
    pub fn install(&mut self, p: ServiceProfile) -> Result<(), Error> {
        if !self.profiles.contains_key(&p.subscriber)
            && self.profiles.len() >= self.cfg.max_profiles
        {
            self.stats.profiles_refused += 1;
            return Err(Error::CapacityExceeded {
                what: "service profiles",
                bound: self.cfg.max_profiles,
            });
        }
        self.withdraw_quietly(p.subscriber);
        for a in &p.addresses {
            self.by_addr.insert(*a, p.subscriber);
        }
        let subscriber = p.subscriber;
        self.profiles.insert(subscriber, p);
        self.outbox
            .event(OperatorEvent::ProfileInstalled { subscriber })
    }

    /// Withdraw a profile: nothing of the subscriber's is diverted any more.
    pub fn withdraw(&mut self, subscriber: u64) -> Result<(), Error> {
        if self.withdraw_quietly(subscriber) {
            self.outbox
                .event(OperatorEvent::ProfileWithdrawn { subscriber })?;
        }
        Ok(())
    }

    fn withdraw_quietly(&mut self, subscriber: u64) -> bool {
        let Some(p) = self.profiles.remove(&subscriber) else {
            return false;
        };
        for a in &p.addresses {
            if self.by_addr.get(a) == Some(&subscriber) {
                self.by_addr.remove(a);
            }
        }
        true
    }
}

fn start_link(cfg: &ControlConfig, rng: &mut Rng, now: Instant) -> Result<Box<Initiator>, Error> {
    let ike = link_ike(cfg.link_ike.clone(), cfg.address);
    let mut i = Initiator::new(
        InitiatorConfig {
            ike,
            local: SocketAddr::new(cfg.address, 500),
            remote: SocketAddr::new(cfg.proxy, 500),
        },
        child_rng(rng),
    )?;
    i.start(now)?;
    Ok(Box::new(i))
}

impl TimerTable for ServiceControl {
    type Timer = Timer;

    fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        let link: Vec<(Timer, Instant)> = match &self.link {
            Link::Negotiating(ike) => ike
                .poll_timeout()
                .map(|t| (Timer::LinkIke, t))
                .into_iter()
                .collect(),
            Link::Up { ike, plane } => ike
                .poll_timeout()
                .map(|t| (Timer::LinkIke, t))
                .into_iter()
                .chain(plane.poll_timeout().map(|t| (Timer::LinkPlane, t)))
                .collect(),
            Link::Down { retry } => alloc::vec![(Timer::LinkRetry, *retry)],
        };
        let sessions = self
            .sessions
            .iter()
            .filter_map(|(id, s)| s.poll_timeout().map(|at| (Timer::Session(*id), at)));
        link.into_iter().chain(sessions)
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        // Errors below are a full outbox (reported to the driver as a loss) or a link IKE
        // that cannot start (tried again after LINK_RETRY).
        match timer {
            Timer::LinkIke => {
                if let Link::Negotiating(ike) | Link::Up { ike, .. } = &mut self.link {
                    ike.handle_timeout(now);
                }
                let _ = self.drain_link(now);
            }
            Timer::LinkPlane => {
                if let Link::Up { plane, .. } = &mut self.link {
                    plane.handle_timeout(now);
                }
            }
            Timer::LinkRetry => match start_link(&self.cfg, &mut self.rng, now) {
                Ok(ike) => {
                    self.link = Link::Negotiating(ike);
                    let _ = self.drain_link(now);
                }
                Err(_) => {
                    self.link = Link::Down {
                        retry: now + LINK_RETRY,
                    }
                }
            },
            Timer::Session(id) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    let _ = s.handle_timeout(now, &mut self.outbox);
                    if s.is_closed() {
                        self.sessions.remove(&id);
                    }
                }
            }
        }
    }
}

impl Actor for ServiceControl {
    type Event = OperatorEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::Packet { iface, data } if iface == self.cfg.access => self.on_access(now, data),
            Input::Packet { iface, data } if iface == self.cfg.core => self.on_core(now, data),
            Input::StreamAccepted { id, .. } => {
                if self.sessions.len() >= self.cfg.max_sessions {
                    self.outbox.push(Output::StreamClose { id })?;
                    return Err(Error::CapacityExceeded {
                        what: "profile sessions",
                        bound: self.cfg.max_sessions,
                    });
                }
                let conn = Connection::server(self.cfg.profiles_channel.clone(), now);
                self.sessions.insert(id, SecureStream::new(id, conn, now));
                Ok(())
            }
            Input::StreamData { id, data } => self.on_profiles(now, id, data),
            Input::StreamClosed { id } => {
                if let Some(mut s) = self.sessions.remove(&id) {
                    let _ = s.stream_closed();
                }
                Ok(())
            }
            _ => Err(OperatorError::UnsupportedInput.into()),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.run_timers(now);
    }

    fn poll_output(&mut self) -> Option<Output<OperatorEvent>> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer()
    }
}

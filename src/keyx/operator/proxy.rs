//! The key-exchange proxy server (seed 003 Fig. 11, S31-S35): runs IKEv2 as the
//! subscriber with the peer, through the service controls, and sends the agreed keys to
//! the subscriber in a sealed key transfer.
//!
//! The work is seed 001's: the same [`InlineProxy`] engine negotiates as the terminal with
//! the terminal's own address, stores the SAs, pushes sealed keys, rekeys, and never
//! pushes used keys again. What differs is where its two sides are: not two wires, but the
//! links to the service controls. A packet a service control diverts arrives in ESP on its
//! link (S31), is opened, and enters the engine (S32-S33) on the subscriber side if it is
//! a key-transfer message the subscriber sent (its proxy request, an acknowledgement, an
//! announce) and on the peer side otherwise (the peer's IKE). What the engine emits
//! (S34) — IKE as the subscriber (Fig. 13(D)), key transfers (Fig. 14(A)) — goes back
//! (S35) through the link of the service control the subscriber was last seen behind.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use super::super::inline::{InlineProxy, ProxyConfig, SecureStore};
use super::super::transfer;
use super::OperatorEvent;
use super::link::{link_ike, link_plane};
use crate::crypto::child_rng;
use crate::error::OperatorError;
use crate::ikev2::{IkeConfig, IkeEvent, Responder, ResponderConfig};
use crate::io::{Actor, IfaceId, Input, Outbox, Output};
use crate::ipsec::{self, DataPlane, Inbound, Outbound, PROTO_ESP, PROTO_UDP, Protected};
use crate::time::TimerTable;
use crate::{Error, Instant, Rng};

/// The engine's peer side.
const PEER_SIDE: IfaceId = IfaceId(0);
/// The engine's subscriber side.
const SUBSCRIBER_SIDE: IfaceId = IfaceId(1);

/// The key-exchange proxy's configuration.
#[derive(Clone, Debug)]
pub struct KeyExchangeProxyConfig {
    /// Our address on the core.
    pub address: IpAddr,
    /// The interface the core is on.
    pub network: IfaceId,
    /// Our IKE identity and credential toward the service controls (the links).
    pub link_ike: IkeConfig,
    /// The engine's bounds and retries (its interfaces are set here, and its policy table
    /// is empty: the service controls choose what comes here).
    pub engine: ProxyConfig,
    /// Service-control links at once.
    pub max_links: usize,
    /// Subscribers whose service control is remembered.
    pub max_subscribers: usize,
    /// Bound of the output queue.
    pub outbox_bound: usize,
}

impl KeyExchangeProxyConfig {
    /// At `address` on interface 0, authenticating the links with `link_ike`.
    pub fn new(address: IpAddr, link_ike: IkeConfig) -> KeyExchangeProxyConfig {
        let mut engine = ProxyConfig::new(PEER_SIDE, SUBSCRIBER_SIDE);
        engine.solicit_unknown = true;
        KeyExchangeProxyConfig {
            address,
            network: IfaceId(0),
            link_ike,
            engine,
            max_links: 16,
            max_subscribers: 1024,
            outbox_bound: Outbox::<OperatorEvent>::DEFAULT_BOUND,
        }
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyExchangeProxyStats {
    /// Link packets that did not open (not from a service control with a link).
    pub link_refused: u64,
    /// Engine output for a subscriber whose service control is unknown, dropped.
    pub no_route: u64,
    /// Engine output that was neither IKE nor a key transfer (the engine forwards what it
    /// does not take; here nothing should be forwarded), dropped.
    pub not_key_exchange: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    Engine,
    Links,
    Plane(IpAddr),
}

/// The key-exchange proxy server, an [`Actor`] on one interface (a host on the core).
pub struct KeyExchangeProxy<S: SecureStore> {
    cfg: KeyExchangeProxyConfig,
    engine: InlineProxy<S>,
    links_ike: Box<Responder>,
    links: BTreeMap<IpAddr, DataPlane>,
    served_by: BTreeMap<IpAddr, IpAddr>,
    rng: Rng,
    stats: KeyExchangeProxyStats,
    outbox: Outbox<OperatorEvent>,
}

impl<S: SecureStore> core::fmt::Debug for KeyExchangeProxy<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyExchangeProxy")
            .field("address", &self.cfg.address)
            .field("links", &self.links.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<S: SecureStore> KeyExchangeProxy<S> {
    /// A proxy holding the subscribers' secrets in `store`.
    pub fn new(
        mut cfg: KeyExchangeProxyConfig,
        store: S,
        mut rng: Rng,
        now: Instant,
    ) -> Result<KeyExchangeProxy<S>, Error> {
        cfg.engine.internet = PEER_SIDE;
        cfg.engine.terminals = SUBSCRIBER_SIDE;
        let engine = InlineProxy::new(cfg.engine.clone(), store, child_rng(&mut rng))?;
        let ike = link_ike(cfg.link_ike.clone(), cfg.address);
        let links_ike = Responder::new(ResponderConfig::new(ike), child_rng(&mut rng), now)?;
        Ok(KeyExchangeProxy {
            outbox: Outbox::new(cfg.outbox_bound),
            engine,
            links_ike: Box::new(links_ike),
            links: BTreeMap::new(),
            served_by: BTreeMap::new(),
            rng,
            stats: KeyExchangeProxyStats::default(),
            cfg,
        })
    }

    /// The engine (its SA store, its address store, its counters).
    pub fn engine(&self) -> &InlineProxy<S> {
        &self.engine
    }

    /// The engine, to change (its secure store, its bindings).
    pub fn engine_mut(&mut self) -> &mut InlineProxy<S> {
        &mut self.engine
    }

    /// Counters.
    pub fn stats(&self) -> KeyExchangeProxyStats {
        self.stats
    }

    /// Service controls with a link up.
    pub fn links(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.links.keys().copied()
    }

    fn emit(&mut self, data: Vec<u8>) -> Result<(), Error> {
        self.outbox.push(Output::Packet {
            iface: self.cfg.network,
            data,
        })
    }

    /// S31: a packet for us.
    fn on_packet(&mut self, now: Instant, data: &[u8]) -> Result<(), Error> {
        let info = ipsec::parse_packet(data)?;
        if info.dst != self.cfg.address {
            return Err(OperatorError::UnsupportedInput.into());
        }
        // Plain UDP 500 to our own address is the links' IKE: what the service controls
        // divert always arrives inside a link's ESP.
        if info.protocol == PROTO_UDP && info.dst_port == Some(500) {
            let payload = data
                .get(info.header_len + 8..info.total_len)
                .ok_or(ipsec::IpsecError::Malformed("short UDP"))?;
            let r = self.links_ike.handle_input(
                now,
                Input::Datagram {
                    from: SocketAddr::new(info.src, info.src_port.unwrap_or(0)),
                    to: SocketAddr::new(info.dst, 500),
                    data: payload,
                },
            );
            self.drain_links(now)?;
            return r;
        }
        if info.protocol != PROTO_ESP {
            return Err(OperatorError::UnsupportedInput.into());
        }
        let sc = info.src;
        let Some(plane) = self.links.get_mut(&sc) else {
            self.stats.link_refused += 1;
            return Err(OperatorError::LinkRefused.into());
        };
        let inner = match plane.unprotect(now, data) {
            Ok(Inbound::Packet { packet, .. }) => packet,
            _ => {
                self.stats.link_refused += 1;
                return Err(OperatorError::LinkRefused.into());
            }
        };
        // S32: which side of the engine. The subscriber sends only key-transfer messages
        // (it runs no IKE); everything else diverted here is the peer's IKE.
        let i = ipsec::parse_packet(&inner)?;
        let marked = i.protocol == PROTO_UDP
            && i.dst_port == Some(transfer::PORT)
            && inner
                .get(i.header_len + 8..i.total_len)
                .is_some_and(transfer::is_marked);
        let (side, subscriber) = if marked {
            (SUBSCRIBER_SIDE, i.src)
        } else {
            (PEER_SIDE, i.dst)
        };
        self.remember(subscriber, sc);
        let r = self.engine.handle_input(
            now,
            Input::Packet {
                iface: side,
                data: &inner,
            },
        );
        self.drain_engine(now)?;
        r
    }

    /// The subscriber was last seen behind `sc` (it may have moved).
    fn remember(&mut self, subscriber: IpAddr, sc: IpAddr) {
        if !self.served_by.contains_key(&subscriber)
            && self.served_by.len() >= self.cfg.max_subscribers
        {
            return;
        }
        self.served_by.insert(subscriber, sc);
    }

    /// S34-S35: the engine's packets go back through the subscriber's service control.
    fn drain_engine(&mut self, now: Instant) -> Result<(), Error> {
        let mut first = Ok(());
        while let Some(o) = self.engine.poll_output() {
            let r = match o {
                Output::Packet { iface, data } => self.send_back(now, iface, data),
                Output::Event(e) => self.outbox.event(OperatorEvent::Proxy(e)),
                Output::Lost { count } => self.outbox.push(Output::Lost { count }),
                _ => Ok(()),
            };
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn send_back(&mut self, now: Instant, side: IfaceId, data: Vec<u8>) -> Result<(), Error> {
        let info = ipsec::parse_packet(&data)?;
        let payload = data
            .get(info.header_len + 8..info.total_len)
            .unwrap_or_default();
        let udp = info.protocol == PROTO_UDP;
        let subscriber = if side == SUBSCRIBER_SIDE {
            // Fig. 14(A): a key transfer (peer → subscriber).
            if !(udp && transfer::is_marked(payload)) {
                self.stats.not_key_exchange += 1;
                return Ok(());
            }
            info.dst
        } else {
            // Fig. 13(D): IKE as the subscriber (subscriber → peer).
            if !(udp && matches!(info.src_port, Some(500) | Some(ipsec::NAT_T_PORT))) {
                self.stats.not_key_exchange += 1;
                return Ok(());
            }
            info.src
        };
        let Some(sc) = self.served_by.get(&subscriber).copied() else {
            self.stats.no_route += 1;
            return Err(OperatorError::NoRoute.into());
        };
        let Some(plane) = self.links.get_mut(&sc) else {
            self.stats.no_route += 1;
            return Err(OperatorError::NoRoute.into());
        };
        match plane.protect(now, &data)? {
            Outbound::Protected(Protected::Ip(esp)) => self.emit(esp),
            Outbound::Protected(Protected::Udp(d)) => {
                let p = d.to_ip_packet(0)?;
                self.emit(p)
            }
            _ => Err(OperatorError::LinkDown.into()),
        }
    }

    fn drain_links(&mut self, now: Instant) -> Result<(), Error> {
        let mut outs = Vec::new();
        while let Some(o) = self.links_ike.poll_output() {
            outs.push(o);
        }
        for o in outs {
            match o {
                Output::Transmit(t) => {
                    let p = ipsec::udp_packet(t.from, t.to, 64, 0, 0, &t.data)?;
                    self.emit(p)?;
                }
                Output::Event(IkeEvent::ChildSaEstablished { child, .. })
                | Output::Event(IkeEvent::ChildSaRekeyed { child, .. }) => {
                    let sc = match child.mode {
                        ipsec::Mode::Tunnel { remote, .. } => remote,
                        ipsec::Mode::Transport => continue,
                    };
                    if !self.links.contains_key(&sc) && self.links.len() >= self.cfg.max_links {
                        return Err(Error::CapacityExceeded {
                            what: "service-control links",
                            bound: self.cfg.max_links,
                        });
                    }
                    let plane =
                        link_plane(*child, self.cfg.address, now, child_rng(&mut self.rng))?;
                    self.links.insert(sc, plane);
                    self.outbox.event(OperatorEvent::LinkUp { peer: sc })?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl<S: SecureStore> TimerTable for KeyExchangeProxy<S> {
    type Timer = Timer;

    fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        let engine = self.engine.poll_timeout().map(|t| (Timer::Engine, t));
        let links = self.links_ike.poll_timeout().map(|t| (Timer::Links, t));
        let planes = self
            .links
            .iter()
            .filter_map(|(sc, p)| p.poll_timeout().map(|t| (Timer::Plane(*sc), t)));
        engine.into_iter().chain(links).chain(planes)
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        // Errors below are a full outbox or a subscriber without a route, both counted.
        match timer {
            Timer::Engine => {
                self.engine.handle_timeout(now);
                let _ = self.drain_engine(now);
            }
            Timer::Links => {
                self.links_ike.handle_timeout(now);
                let _ = self.drain_links(now);
            }
            Timer::Plane(sc) => {
                if let Some(p) = self.links.get_mut(&sc) {
                    p.handle_timeout(now);
                }
            }
        }
    }
}

impl<S: SecureStore> Actor for KeyExchangeProxy<S> {
    type Event = OperatorEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::Packet { iface, data } if iface == self.cfg.network => self.on_packet(now, data),
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

//! The data plane: SPD + SAD + acquire queue, and the per-packet work.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use hashbrown::HashMap;
use rand_core::Rng as _;

use super::esp::peek_header;
use super::packet::{
    self, HeaderParams, IpHeader, PROTO_ESP, PROTO_IPV4, PROTO_IPV6, PROTO_NONE, PROTO_UDP,
    PacketInfo,
};
use super::sa::{ChildSa, Mode, SaEntry, SaStats};
use super::selector::Selector;
use super::spd::{Action, Policy, Spd};
use super::{IpsecError, IpsecEvent, LifetimeTrigger, NAT_T_PORT};
use crate::Instant;

/// Bounds and defaults of a [`DataPlane`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataPlaneConfig {
    /// Most SA pairs installed at once.
    pub max_sas: usize,
    /// Most SPD entries.
    pub max_policies: usize,
    /// Most acquires waiting for keys at once.
    pub max_acquires: usize,
    /// Most packets queued behind one acquire.
    pub max_queued_per_acquire: usize,
    /// Most packets queued behind all acquires together.
    pub max_queued_total: usize,
    /// How long an acquire waits for an SA before its packets are dropped.
    pub acquire_timeout: Duration,
    /// Most undelivered events; later ones are dropped and counted.
    pub max_events: usize,
    /// What happens to packets no SPD entry matches (RFC 4301: discard).
    pub default_action: Action,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        DataPlaneConfig {
            max_sas: 16,
            max_policies: 64,
            max_acquires: 8,
            max_queued_per_acquire: 8,
            max_queued_total: 32,
            acquire_timeout: Duration::from_secs(30),
            max_events: 64,
            default_action: Action::Discard,
        }
    }
}

/// A request for keys: an outbound packet needs protection and no SA covers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquire {
    /// Identifies the acquire in [`Outbound::Queued`] and
    /// [`IpsecEvent::AcquireExpired`].
    pub id: u32,
    /// Index of the SPD entry that asked for protection (`None`: the default action).
    pub policy: Option<usize>,
    /// That entry's selector (what an SA could cover), if any.
    pub policy_selector: Option<Selector>,
    /// The exact selector of the packet that triggered it (what an SA must cover).
    pub packet: Selector,
}

/// ESP in a UDP datagram (RFC 3948): send `payload` from `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncapDatagram {
    /// Our address and port.
    pub from: SocketAddr,
    /// The peer's address and port.
    pub to: SocketAddr,
    /// The UDP payload: the ESP packet.
    pub payload: Vec<u8>,
}

impl EncapDatagram {
    /// The whole IP packet (outer IP header ‖ UDP header ‖ ESP), for raw-IP drivers.
    /// `ip_id` is the IPv4 identification to use (ignored for IPv6).
    pub fn to_ip_packet(&self, ip_id: u16) -> Result<Vec<u8>, IpsecError> {
        packet::udp_packet(self.from, self.to, 64, 0, ip_id, &self.payload)
    }
}

/// A protected outbound packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protected {
    /// An IP packet whose payload is ESP (protocol 50): transport mode keeps the
    /// original header, tunnel mode adds a new one.
    Ip(Vec<u8>),
    /// ESP to send as a UDP datagram (NAT traversal).
    Udp(EncapDatagram),
}

/// What [`DataPlane::protect`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Send it protected.
    Protected(Protected),
    /// Policy says: send the original packet in clear.
    Bypass,
    /// Policy says: drop it.
    Discard,
    /// It needs an SA that is not there yet: it waits behind acquire `acquire`.
    Queued {
        /// The acquire's id.
        acquire: u32,
    },
}

/// What [`DataPlane::unprotect`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A verified, decrypted packet to deliver: the inner packet in tunnel mode, the
    /// reassembled original in transport mode.
    Packet {
        /// The inbound SPI it came through.
        spi: u32,
        /// The IP packet.
        packet: Vec<u8>,
    },
    /// A packet in clear that policy lets through: deliver the input as it is.
    Bypass,
    /// A packet in clear that policy drops.
    Discard,
    /// A NAT-keepalive (a single 0xFF byte on the NAT-T port, RFC 3948 §2.3): nothing to do.
    NatKeepalive,
    /// An IKE message behind the 4-byte non-ESP marker (RFC 3948 §2.2): hand it to IKE.
    Ike {
        /// The IKE message, marker removed.
        message: Vec<u8>,
    },
    /// A verified dummy packet (next header 59, RFC 4303 §2.6): dropped.
    Dummy {
        /// The inbound SPI.
        spi: u32,
    },
}

/// Counters of things that belong to no SA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataPlaneStats {
    /// ESP packets whose SPI is not installed.
    pub unknown_spi: u64,
    /// Packets that did not parse.
    pub malformed: u64,
    /// Packets dropped by a discard policy.
    pub policy_discards: u64,
    /// Packets let through by a bypass policy.
    pub bypassed: u64,
    /// Clear packets refused because policy wanted them protected.
    pub unprotected_drops: u64,
    /// Queued packets dropped (queue full or acquire expired).
    pub queue_drops: u64,
    /// Events dropped because nobody drained them.
    pub events_dropped: u64,
    /// NAT keepalives received.
    pub keepalives: u64,
}

/// The data plane's timers (see [`DataPlane::timers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// An SA's soft time lifetime: report it once so the key manager rekeys.
    SoftLifetime(u32),
    /// An SA's hard time lifetime: remove it.
    HardLifetime(u32),
    /// An acquire nobody answered: drop its queued packets.
    Acquire(u32),
}

struct Pending {
    id: u32,
    policy: Option<usize>,
    src: IpAddr,
    dst: IpAddr,
    deadline: Instant,
    packets: VecDeque<Vec<u8>>,
}

/// Where an ESP packet came from, for rebuilding transport-mode packets.
#[derive(Clone, Copy)]
struct Outer {
    src: IpAddr,
    dst: IpAddr,
    tos: u8,
    ttl: u8,
    udp: bool,
}

/// The ESP data plane: policies, SAs, the acquire queue and the per-packet work. See the
/// [module docs](super) for an example.
pub struct DataPlane {
    config: DataPlaneConfig,
    spd: Spd,
    /// The SAD, by inbound SPI (what `unprotect` looks up).
    sas: HashMap<u32, SaEntry, IndexHash>,
    /// The inbound SPIs of `sas` in order (for `spis` and `Debug`).
    order: BTreeSet<u32>,
    /// Armed soft time lifetimes as (deadline, inbound SPI), earliest first.
    soft_at: BTreeSet<(Instant, u32)>,
    /// Hard time lifetimes as (deadline, inbound SPI), earliest first.
    hard_at: BTreeSet<(Instant, u32)>,
    /// Outbound index: SAs whose remote traffic selectors are all single addresses, under
    /// each of those addresses (what `protect` looks up by destination).
    by_remote_host: HashMap<u128, Vec<u32>, IndexHash>,
    /// The other SAs (a remote selector spans a range): `protect` checks each.
    wide: BTreeSet<u32>,
    /// Local UDP-encapsulation ports of the installed SAs, with how many SAs use each.
    encap_ports: BTreeMap<u16, usize>,
    /// Recently hard-expired inbound SPIs, so late packets get `SaExpired`.
    expired: VecDeque<u32>,
    /// The same SPIs, to look up.
    expired_set: BTreeSet<u32>,
    pending: Vec<Pending>,
    events: VecDeque<IpsecEvent>,
    next_acquire: u32,
    generation: u64,
    ip_id: u16,
    rng: crate::Rng,
    stats: DataPlaneStats,
}

impl core::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DataPlane")
            .field("sas", &self.order.iter().collect::<Vec<_>>())
            .field("policies", &self.spd.entries().len())
            .field("pending_acquires", &self.pending.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl DataPlane {
    /// An empty data plane (no policies, no SAs) with its own RNG (for CBC IVs).
    pub fn new(config: DataPlaneConfig, mut rng: crate::Rng) -> Result<DataPlane, IpsecError> {
        let c = &config;
        if c.max_sas == 0
            || c.max_policies == 0
            || c.max_acquires == 0
            || c.max_queued_per_acquire == 0
            || c.max_queued_total == 0
            || c.max_events == 0
        {
            return Err(IpsecError::ZeroBound);
        }
        let id: [u8; 2] = crate::crypto::random_array(&mut *rng);
        Ok(DataPlane {
            spd: Spd::new(config.max_policies, config.default_action),
            config,
            sas: HashMap::with_hasher(IndexHash),
            order: BTreeSet::new(),
            soft_at: BTreeSet::new(),
            hard_at: BTreeSet::new(),
            by_remote_host: HashMap::with_hasher(IndexHash),
            wide: BTreeSet::new(),
            encap_ports: BTreeMap::new(),
            expired: VecDeque::new(),
            expired_set: BTreeSet::new(),
            pending: Vec::new(),
            events: VecDeque::new(),
            next_acquire: 1,
            generation: 0,
            ip_id: u16::from_be_bytes(id),
            rng,
            stats: DataPlaneStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DataPlaneConfig {
        &self.config
    }

    /// The policy database.
    pub fn spd(&self) -> &Spd {
        &self.spd
    }

    /// The policy database, to edit.
    pub fn spd_mut(&mut self) -> &mut Spd {
        &mut self.spd
    }

    /// Append an SPD entry; returns its index.
    pub fn add_policy(&mut self, policy: Policy) -> Result<usize, IpsecError> {
        self.spd.push(policy)
    }

    /// Counters that belong to no SA.
    pub fn stats(&self) -> DataPlaneStats {
        self.stats
    }

    /// Counters of the SA pair with inbound SPI `spi_in`.
    pub fn sa_stats(&self, spi_in: u32) -> Option<SaStats> {
        self.sas.get(&spi_in).map(SaEntry::stats)
    }

    /// The installed SA pair with inbound SPI `spi_in`. Its `keys_in` and `keys_out` are
    /// empty: installation moves the keys into the cipher states and wipes them here.
    pub fn sa(&self, spi_in: u32) -> Option<&ChildSa> {
        self.sas.get(&spi_in).map(|e| &e.sa)
    }

    /// Inbound SPIs of the installed SA pairs.
    pub fn spis(&self) -> impl Iterator<Item = u32> + '_ {
        self.order.iter().copied()
    }

    /// Number of installed SA pairs.
    pub fn sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Packets waiting behind acquires.
    pub fn queued(&self) -> usize {
        self.pending.iter().map(|p| p.packets.len()).sum()
    }

    /// Install an SA pair. Packets queued behind acquires that it covers leave at once,
    /// protected, in the returned list (in queue order).
    pub fn install(&mut self, now: Instant, sa: ChildSa) -> Result<Vec<Protected>, IpsecError> {
        self.expire(now);
        sa.validate()?;
        if self.sas.contains_key(&sa.spi_in) {
            return Err(IpsecError::DuplicateSpi(sa.spi_in));
        }
        if self.sas.len() >= self.config.max_sas {
            return Err(IpsecError::CapacityExceeded {
                what: "security association database",
                bound: self.config.max_sas,
            });
        }
        self.generation += 1;
        let spi = sa.spi_in;
        let entry = SaEntry::new(sa, now, self.generation)?;
        self.sas.insert(spi, entry);
        self.order.insert(spi);
        self.index(spi);
        if self.expired_set.remove(&spi) {
            self.expired.retain(|&s| s != spi);
        }
        let mut released = Vec::new();
        let mut pending = core::mem::take(&mut self.pending);
        for p in &mut pending {
            let mut keep = VecDeque::new();
            while let Some(pkt) = p.packets.pop_front() {
                let covered = packet::parse(&pkt).ok().filter(|info| {
                    self.sas
                        .get(&spi)
                        .is_some_and(|e| e.sa.covers_outbound(info))
                });
                match covered {
                    Some(info) => match self.seal_with(now, spi, &info, &pkt) {
                        Ok(out) => released.push(out),
                        Err(_) => self.stats.queue_drops += 1,
                    },
                    None => keep.push_back(pkt),
                }
            }
            p.packets = keep;
        }
        pending.retain(|p| !p.packets.is_empty());
        self.pending = pending;
        Ok(released)
    }

    /// Test hook: jump an SA's outbound sequence counter.
    #[cfg(test)]
    pub(crate) fn set_next_seq(&mut self, spi_in: u32, seq: u64) {
        if let Some(e) = self.sas.get_mut(&spi_in) {
            e.next_seq = seq;
        }
    }

    /// Remove the SA pair with inbound SPI `spi_in`; returns its final counters.
    pub fn remove(&mut self, spi_in: u32) -> Option<SaStats> {
        let e = self.sas.remove(&spi_in)?;
        self.order.remove(&spi_in);
        self.unindex(spi_in, &e);
        Some(e.stats())
    }

    /// Enter the installed SA `spi_in` into the deadline, outbound and port indexes.
    fn index(&mut self, spi_in: u32) {
        let Some(e) = self.sas.get(&spi_in) else {
            return;
        };
        if let Some(t) = e.soft_deadline() {
            self.soft_at.insert((t, spi_in));
        }
        if let Some(t) = e.hard_deadline() {
            self.hard_at.insert((t, spi_in));
        }
        match remote_hosts(&e.sa) {
            Some(hosts) => {
                for host in hosts {
                    self.by_remote_host
                        .entry(addr_key(host))
                        .or_default()
                        .push(spi_in);
                }
            }
            None => {
                self.wide.insert(spi_in);
            }
        }
        if let Some(x) = e.sa.encap {
            *self.encap_ports.entry(x.local.port()).or_default() += 1;
        }
    }

    /// Take the removed SA `spi_in` out of the indexes [`DataPlane::index`] put it in.
    fn unindex(&mut self, spi_in: u32, e: &SaEntry) {
        if let Some(t) = e.soft_deadline() {
            self.soft_at.remove(&(t, spi_in));
        }
        if let Some(t) = e.hard_deadline() {
            self.hard_at.remove(&(t, spi_in));
        }
        match remote_hosts(&e.sa) {
            Some(hosts) => {
                for host in hosts {
                    let key = addr_key(host);
                    if let Some(spis) = self.by_remote_host.get_mut(&key) {
                        spis.retain(|&s| s != spi_in);
                        if spis.is_empty() {
                            self.by_remote_host.remove(&key);
                        }
                    }
                }
            }
            None => {
                self.wide.remove(&spi_in);
            }
        }
        if let Some(x) = e.sa.encap {
            let port = x.local.port();
            if let Some(n) = self.encap_ports.get_mut(&port) {
                *n -= 1;
                if *n == 0 {
                    self.encap_ports.remove(&port);
                }
            }
        }
    }

    /// Take the next event.
    pub fn poll_event(&mut self) -> Option<IpsecEvent> {
        self.events.pop_front()
    }

    /// When [`DataPlane::handle_timeout`] should next run (a lifetime or an acquire
    /// deadline).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let soft = self.soft_at.first().map(|&(t, _)| t);
        let hard = self.hard_at.first().map(|&(t, _)| t);
        let acquire = self.pending.iter().map(|p| p.deadline).min();
        [soft, hard, acquire].into_iter().flatten().min()
    }

    /// Fire the lifetimes and acquire time-outs due at `now`. Also runs at the start of
    /// every packet call, so a late timer never lets an expired SA work.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
    }

    /// The timers due at `now`: the one list both [`DataPlane::handle_timeout`] and
    /// [`IpsecNode`](super::IpsecNode) fire, read from the deadline indexes (only the due
    /// entries are visited). Soft lifetimes come first, then hard ones (each in inbound-SPI
    /// order), then acquires, so that events of one tick keep that order (a rekey hint
    /// before any removal). [`DataPlane::poll_timeout`] is the earliest deadline of the
    /// same timers.
    pub(crate) fn due_timers(&self, now: Instant) -> Vec<Timer> {
        let due = |set: &BTreeSet<(Instant, u32)>| {
            let mut spis: Vec<u32> = set.range(..=(now, u32::MAX)).map(|&(_, s)| s).collect();
            spis.sort_unstable();
            spis
        };
        let soft = due(&self.soft_at).into_iter().map(Timer::SoftLifetime);
        let hard = due(&self.hard_at).into_iter().map(Timer::HardLifetime);
        let acquires = self
            .pending
            .iter()
            .filter(|p| p.deadline <= now)
            .map(|p| Timer::Acquire(p.id));
        soft.chain(hard).chain(acquires).collect()
    }

    fn push_event(&mut self, event: IpsecEvent) {
        if self.events.len() >= self.config.max_events {
            self.stats.events_dropped += 1;
        } else {
            self.events.push_back(event);
        }
    }

    /// Every packet call starts here: one look at the earliest deadline, and the timers
    /// only when one is due.
    fn expire(&mut self, now: Instant) {
        // Without lifetimes or acquires there is nothing to look at.
        if self.soft_at.is_empty() && self.hard_at.is_empty() && self.pending.is_empty() {
            return;
        }
        if self.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        for timer in self.due_timers(now) {
            self.fire_timer(now, timer);
        }
    }

    /// Fire one timer read from [`DataPlane::timers`]; it looks its state up again, as an
    /// earlier one of the same tick may have changed it.
    pub(crate) fn fire_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::SoftLifetime(spi_in) => {
                let Some(e) = self.sas.get_mut(&spi_in) else {
                    return;
                };
                // An SA past its hard limit too is only removed (its hard timer is in the
                // same list): no rekey hint for an SA that is already gone.
                if e.hard_expired(now).is_some() {
                    return;
                }
                let armed = e.soft_deadline();
                if let Some(trigger) = e.take_soft(now) {
                    if let Some(t) = armed {
                        self.soft_at.remove(&(t, spi_in));
                    }
                    let spi_out = e.sa.spi_out;
                    self.push_event(IpsecEvent::SoftExpired {
                        spi_in,
                        spi_out,
                        trigger,
                    });
                }
            }
            Timer::HardLifetime(spi_in) => {
                let trigger = self.sas.get(&spi_in).and_then(|e| e.hard_expired(now));
                if let Some(trigger) = trigger {
                    self.expire_sa(spi_in, trigger);
                }
            }
            Timer::Acquire(id) => {
                if let Some(i) = self.pending.iter().position(|p| p.id == id) {
                    let dropped = self.pending.remove(i).packets.len();
                    self.stats.queue_drops += dropped as u64;
                    self.push_event(IpsecEvent::AcquireExpired { id, dropped });
                }
            }
        }
    }

    fn expire_sa(&mut self, spi_in: u32, trigger: LifetimeTrigger) {
        if let Some(e) = self.sas.remove(&spi_in) {
            self.order.remove(&spi_in);
            self.unindex(spi_in, &e);
            if self.expired.len() >= self.config.max_sas
                && let Some(old) = self.expired.pop_front()
            {
                self.expired_set.remove(&old);
            }
            self.expired.push_back(spi_in);
            self.expired_set.insert(spi_in);
            self.push_event(IpsecEvent::HardExpired {
                spi_in,
                spi_out: e.sa.spi_out,
                trigger,
            });
        }
    }

    /// After traffic: report a soft limit once, remove the SA at a hard one. Only needed
    /// for SAs with byte limits: time limits due at `now` have already fired, as every
    /// packet call starts with [`DataPlane::expire`].
    fn check_byte_lifetimes(&mut self, now: Instant, spi_in: u32) {
        let Some(e) = self.sas.get_mut(&spi_in) else {
            return;
        };
        if let Some(trigger) = e.hard_expired(now) {
            self.expire_sa(spi_in, trigger);
            return;
        }
        let armed = e.soft_deadline();
        if let Some(trigger) = e.take_soft(now) {
            if let Some(t) = armed {
                self.soft_at.remove(&(t, spi_in));
            }
            let spi_out = e.sa.spi_out;
            self.push_event(IpsecEvent::SoftExpired {
                spi_in,
                spi_out,
                trigger,
            });
        }
    }

    // ----------------------------------------------------------------- outbound

    /// Process an outbound IP packet (IPv4 or IPv6, starting with its header).
    ///
    /// The SPD decides; for `Protect` the newest installed SA whose traffic selectors
    /// cover the packet seals it. Without one the packet is queued and an
    /// [`IpsecEvent::Acquire`] is raised (once per policy and address pair). Errors:
    /// malformed packets, full queues, an exhausted sequence space, transport-mode
    /// fragments, oversize results.
    pub fn protect(&mut self, now: Instant, ip_packet: &[u8]) -> Result<Outbound, IpsecError> {
        self.expire(now);
        let info = packet::parse(ip_packet).inspect_err(|_| self.stats.malformed += 1)?;
        let decision = self.spd.outbound(&info);
        match decision.action {
            Action::Bypass => {
                self.stats.bypassed += 1;
                return Ok(Outbound::Bypass);
            }
            Action::Discard => {
                self.stats.policy_discards += 1;
                return Ok(Outbound::Discard);
            }
            Action::Protect => {}
        }
        // Every SA that can cover the packet is under its destination in the outbound
        // index or among the wide ones; the newest covering one wins, and without one the
        // highest exhausted SPI is reported (as a walk in SPI order would find it).
        let mut exhausted: Option<u32> = None;
        let mut best: Option<(u64, u32)> = None;
        let hosts = self
            .by_remote_host
            .get(&addr_key(info.dst))
            .map_or(&[][..], Vec::as_slice);
        for &spi in hosts.iter().chain(self.wide.iter()) {
            let Some(e) = self.sas.get(&spi) else {
                continue;
            };
            if !e.sa.covers_outbound(&info) {
                continue;
            }
            if e.seq_exhausted() {
                exhausted = Some(exhausted.map_or(spi, |x| x.max(spi)));
            } else if best.is_none_or(|(g, _)| e.generation > g) {
                best = Some((e.generation, spi));
            }
        }
        if let Some((_, spi)) = best {
            return self
                .seal_with(now, spi, &info, ip_packet)
                .map(Outbound::Protected);
        }
        if let Some(spi) = exhausted {
            return Err(self.report_exhausted(spi));
        }
        self.enqueue(now, decision.policy, &info, ip_packet)
    }

    fn report_exhausted(&mut self, spi_in: u32) -> IpsecError {
        let Some(e) = self.sas.get_mut(&spi_in) else {
            return IpsecError::UnknownSpi(spi_in);
        };
        let spi_out = e.sa.spi_out;
        if !e.exhausted_fired {
            e.exhausted_fired = true;
            self.push_event(IpsecEvent::SequenceExhausted { spi_in, spi_out });
        }
        IpsecError::SequenceExhausted { spi: spi_out }
    }

    fn enqueue(
        &mut self,
        now: Instant,
        policy: Option<usize>,
        info: &PacketInfo,
        ip_packet: &[u8],
    ) -> Result<Outbound, IpsecError> {
        let total = self.queued();
        let c = self.config;
        let full = |what, bound| IpsecError::CapacityExceeded { what, bound };
        if total >= c.max_queued_total {
            self.stats.queue_drops += 1;
            return Err(full("acquire queues", c.max_queued_total));
        }
        let bytes = ip_packet
            .get(..info.total_len)
            .unwrap_or(ip_packet)
            .to_vec();
        if let Some(p) = self
            .pending
            .iter_mut()
            .find(|p| p.policy == policy && p.src == info.src && p.dst == info.dst)
        {
            if p.packets.len() >= c.max_queued_per_acquire {
                self.stats.queue_drops += 1;
                return Err(full("acquire queue", c.max_queued_per_acquire));
            }
            p.packets.push_back(bytes);
            return Ok(Outbound::Queued { acquire: p.id });
        }
        if self.pending.len() >= c.max_acquires {
            self.stats.queue_drops += 1;
            return Err(full("pending acquires", c.max_acquires));
        }
        let id = self.next_acquire;
        self.next_acquire = self.next_acquire.wrapping_add(1).max(1);
        let mut packets = VecDeque::new();
        packets.push_back(bytes);
        self.pending.push(Pending {
            id,
            policy,
            src: info.src,
            dst: info.dst,
            deadline: now + c.acquire_timeout,
            packets,
        });
        let policy_selector = policy
            .and_then(|i| self.spd.entries().get(i))
            .map(|p| p.selector);
        self.push_event(IpsecEvent::Acquire(Acquire {
            id,
            policy,
            policy_selector,
            packet: Selector::for_packet(info),
        }));
        Ok(Outbound::Queued { acquire: id })
    }

    fn seal_with(
        &mut self,
        now: Instant,
        spi_in: u32,
        info: &PacketInfo,
        ip_packet: &[u8],
    ) -> Result<Protected, IpsecError> {
        let Some(e) = self.sas.get_mut(&spi_in) else {
            return Err(IpsecError::UnknownSpi(spi_in));
        };
        if e.seq_exhausted() {
            return Err(self.report_exhausted(spi_in));
        }
        let whole = ip_packet
            .get(..info.total_len)
            .ok_or(IpsecError::Malformed("short packet"))?;
        let (next_header, payload) = match e.sa.mode {
            Mode::Tunnel { .. } => (
                if info.src.is_ipv4() {
                    PROTO_IPV4
                } else {
                    PROTO_IPV6
                },
                whole,
            ),
            Mode::Transport => {
                if info.is_fragment {
                    return Err(IpsecError::TransportFragment);
                }
                let body = whole
                    .get(info.header_len..)
                    .ok_or(IpsecError::Malformed("short packet"))?;
                (info.protocol, body)
            }
        };
        let seq = e.next_seq;
        let suite = e.sa.suite;
        let mut iv = [0u8; 16];
        let iv = &mut iv[..suite.iv_len()];
        if suite.is_aead() {
            // RFC 4106 §3.1 / RFC 7634 §2: the IV must not repeat under a key; the
            // sequence number never does.
            iv.copy_from_slice(&seq.to_be_bytes());
        } else {
            self.rng.fill_bytes(iv);
        }
        // Consume the sequence number (and with it the AEAD IV) now, whatever happens to
        // this packet below: a number is never used twice.
        e.next_seq = seq.checked_add(1).unwrap_or(0);
        // One buffer, sized at once: the outer header (tunnel or transport mode; none for
        // UDP encapsulation, whose datagram the driver builds), then ESP sealed in place.
        let esp_len = suite.sealed_len(payload.len());
        let (mut buf, udp) = if let Some(encap) = e.sa.encap {
            // The outer IPv4 header and the UDP header must still fit a 16-bit length.
            let outer = if encap.local.is_ipv4() { 28 } else { 8 };
            if esp_len + outer > usize::from(u16::MAX) {
                return Err(IpsecError::TooLarge);
            }
            (Vec::with_capacity(esp_len), Some(encap))
        } else if let Mode::Tunnel { local, remote } = e.sa.mode {
            self.ip_id = self.ip_id.wrapping_add(1);
            let header = IpHeader::new(
                &HeaderParams {
                    src: local,
                    dst: remote,
                    protocol: PROTO_ESP,
                    tos: info.tos,
                    ttl: 64,
                    id: self.ip_id,
                },
                esp_len,
            )?;
            let mut buf = Vec::with_capacity(header.as_bytes().len() + esp_len);
            buf.extend_from_slice(header.as_bytes());
            (buf, None)
        } else {
            (transport_header(whole, info, esp_len)?, None)
        };
        e.outbound.seal_into(
            &mut buf,
            e.sa.spi_out,
            seq,
            e.sa.esn,
            iv,
            next_header,
            payload,
        )?;
        let out = match udp {
            Some(encap) => Protected::Udp(EncapDatagram {
                from: encap.local,
                to: encap.remote,
                payload: buf,
            }),
            None => Protected::Ip(buf),
        };
        e.stats.outbound.packets += 1;
        e.stats.outbound.bytes += payload.len() as u64;
        if e.has_byte_limits() {
            self.check_byte_lifetimes(now, spi_in);
        }
        Ok(out)
    }

    // ------------------------------------------------------------------ inbound

    /// Process an inbound IP packet: ESP (protocol 50), ESP-in-UDP to the NAT-T port
    /// (4500, or an installed SA's local encapsulation port), or anything else, which the
    /// SPD judges as clear traffic.
    pub fn unprotect(&mut self, now: Instant, ip_packet: &[u8]) -> Result<Inbound, IpsecError> {
        self.expire(now);
        let info = packet::parse(ip_packet).inspect_err(|_| self.stats.malformed += 1)?;
        let outer = Outer {
            src: info.src,
            dst: info.dst,
            tos: info.tos,
            ttl: info.ttl,
            udp: false,
        };
        let body = ip_packet
            .get(info.header_len..info.total_len)
            .ok_or(IpsecError::Malformed("short packet"))?;
        let is_encap_port = |port: Option<u16>| {
            port.is_some_and(|p| p == NAT_T_PORT || self.encap_ports.contains_key(&p))
        };
        if info.protocol == PROTO_ESP
            || (info.protocol == PROTO_UDP && is_encap_port(info.dst_port))
        {
            if info.is_fragment {
                self.stats.malformed += 1;
                return Err(IpsecError::FragmentedEsp);
            }
            if info.protocol == PROTO_ESP {
                return self.open_esp(now, body, outer);
            }
            let udp_len = body
                .get(4..6)
                .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                .filter(|&l| l >= 8 && l <= body.len())
                .ok_or_else(|| {
                    self.stats.malformed += 1;
                    IpsecError::Malformed("bad UDP header")
                })?;
            let payload = &body[8..udp_len];
            return self.classify_udp(now, payload, Outer { udp: true, ..outer });
        }
        match self.spd.inbound(&info).action {
            Action::Bypass => {
                self.stats.bypassed += 1;
                Ok(Inbound::Bypass)
            }
            Action::Discard => {
                self.stats.policy_discards += 1;
                Ok(Inbound::Discard)
            }
            Action::Protect => {
                self.stats.unprotected_drops += 1;
                Err(IpsecError::Unprotected)
            }
        }
    }

    /// Process the payload of a UDP datagram that arrived on the NAT-T port (for drivers
    /// with sockets instead of raw IP): a keepalive, an IKE message behind the non-ESP
    /// marker, or ESP. `from` and `to` stand in for the outer addresses.
    pub fn unprotect_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) -> Result<Inbound, IpsecError> {
        self.expire(now);
        let outer = Outer {
            src: from.ip(),
            dst: to.ip(),
            tos: 0,
            ttl: 64,
            udp: true,
        };
        self.classify_udp(now, payload, outer)
    }

    fn classify_udp(
        &mut self,
        now: Instant,
        payload: &[u8],
        outer: Outer,
    ) -> Result<Inbound, IpsecError> {
        match payload {
            [0xff] => {
                self.stats.keepalives += 1;
                Ok(Inbound::NatKeepalive)
            }
            [0, 0, 0, 0, ike @ ..] => Ok(Inbound::Ike {
                message: ike.to_vec(),
            }),
            _ if payload.len() < 8 => {
                self.stats.malformed += 1;
                Err(IpsecError::Malformed("short ESP-in-UDP payload"))
            }
            esp => self.open_esp(now, esp, outer),
        }
    }

    fn open_esp(&mut self, now: Instant, esp: &[u8], outer: Outer) -> Result<Inbound, IpsecError> {
        let (spi, seq_low) = peek_header(esp).inspect_err(|_| self.stats.malformed += 1)?;
        let Some(e) = self.sas.get_mut(&spi) else {
            if self.expired_set.contains(&spi) {
                return Err(IpsecError::SaExpired { spi });
            }
            self.stats.unknown_spi += 1;
            return Err(IpsecError::UnknownSpi(spi));
        };
        let seq = if e.sa.esn {
            match e.window.infer_esn(seq_low) {
                Some(s) => s,
                None => {
                    e.stats.replay_drops += 1;
                    return Err(IpsecError::Replay {
                        spi,
                        seq: u64::from(seq_low),
                        kind: super::ReplayKind::TooOld,
                    });
                }
            }
        } else {
            u64::from(seq_low)
        };
        // One buffer for what is delivered: in transport mode room for the rebuilt IP
        // header comes first, then the ciphertext, copied once and decrypted in place.
        let header_len = match e.sa.mode {
            Mode::Tunnel { .. } => 0,
            Mode::Transport => packet::ip_header_len(outer.src),
        };
        let mut inner = Vec::with_capacity(header_len + esp.len());
        inner.resize(header_len, 0);
        let next_header = match e.inbound.open_into(esp, seq, e.sa.esn, &mut inner) {
            Ok((_, next_header)) => next_header,
            Err(err) => {
                match err {
                    IpsecError::IntegrityFailed { .. } => e.stats.integrity_failures += 1,
                    _ => e.stats.malformed += 1,
                }
                return Err(err);
            }
        };
        // Only now, with the packet authentic, may the window judge and move.
        if let Err(kind) = e.window.accept(seq) {
            e.stats.replay_drops += 1;
            return Err(IpsecError::Replay { spi, seq, kind });
        }
        let payload_len = inner.len() - header_len;
        let counted = payload_len as u64;
        if next_header == PROTO_NONE {
            return Ok(Inbound::Dummy { spi });
        }
        // The delivered packet is parsed once: its selector fields are checked below.
        let info = match e.sa.mode {
            Mode::Tunnel { .. } => {
                let version = inner.first().map(|b| b >> 4);
                let ok = matches!(
                    (next_header, version),
                    (PROTO_IPV4, Some(4)) | (PROTO_IPV6, Some(6))
                );
                if !ok {
                    e.stats.malformed += 1;
                    return Err(IpsecError::UnexpectedNextHeader { spi, next_header });
                }
                let info = packet::parse(&inner).inspect_err(|_| e.stats.malformed += 1)?;
                // Anything past the inner packet's own length is TFC padding.
                inner.truncate(info.total_len);
                info
            }
            Mode::Transport => {
                let header = IpHeader::new(
                    &HeaderParams {
                        src: outer.src,
                        dst: outer.dst,
                        protocol: next_header,
                        tos: outer.tos,
                        ttl: outer.ttl,
                        id: 0,
                    },
                    payload_len,
                )
                .inspect_err(|_| e.stats.malformed += 1)?;
                inner[..header_len].copy_from_slice(header.as_bytes());
                let info = packet::parse(&inner).inspect_err(|_| e.stats.malformed += 1)?;
                if outer.udp {
                    // A NAT may have rewritten the addresses the checksum covers.
                    packet::fix_transport_checksum_parsed(&mut inner, &info)
                        .inspect_err(|_| e.stats.malformed += 1)?;
                }
                info
            }
        };
        if !e.sa.covers_inbound(&info) {
            e.stats.selector_mismatches += 1;
            return Err(IpsecError::SelectorMismatch { spi });
        }
        e.stats.inbound.packets += 1;
        e.stats.inbound.bytes += counted;
        if e.has_byte_limits() {
            self.check_byte_lifetimes(now, spi);
        }
        Ok(Inbound::Packet { spi, packet: inner })
    }
}

/// The outbound index's key for an address: IPv4 as its IPv4-mapped IPv6 form. That an
/// IPv4 and an IPv6 address can share a key does no harm: every SA found is checked
/// against the packet.
fn addr_key(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The hash of the SAD's maps: a multiply-fold of the integer keys. Unkeyed on purpose:
/// only `install` adds keys (SPIs we chose, addresses of our SAs), so a remote party can
/// pick which keys it looks up but not how the table is filled; a lookup costs at most
/// the probe length the installed keys themselves make.
#[derive(Clone, Copy, Debug, Default)]
struct IndexHash;

impl core::hash::BuildHasher for IndexHash {
    type Hasher = IndexHasher;
    fn build_hasher(&self) -> IndexHasher {
        IndexHasher(0)
    }
}

struct IndexHasher(u64);

impl IndexHasher {
    fn mix(&mut self, x: u64) {
        let m = u128::from(self.0 ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

impl core::hash::Hasher for IndexHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, x: u32) {
        self.mix(u64::from(x));
    }

    fn write_u128(&mut self, x: u128) {
        self.mix(x as u64);
        self.mix((x >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The remote addresses of an SA whose remote traffic selectors are all single addresses
/// (sorted, without repeats), or `None` if one spans a range.
fn remote_hosts(sa: &ChildSa) -> Option<Vec<IpAddr>> {
    let mut hosts = Vec::with_capacity(sa.remote_ts.len());
    for ts in &sa.remote_ts {
        if ts.addrs.start() != ts.addrs.end() {
            return None;
        }
        hosts.push(ts.addrs.start());
    }
    hosts.sort_unstable();
    hosts.dedup();
    Some(hosts)
}

/// Transport mode: the original header (options and extension headers kept), its
/// protocol field set to ESP and its lengths (and IPv4 checksum) updated for `esp_len`
/// bytes of ESP, in a buffer with room for them.
fn transport_header(
    whole: &[u8],
    info: &PacketInfo,
    esp_len: usize,
) -> Result<Vec<u8>, IpsecError> {
    let header = whole
        .get(..info.header_len)
        .ok_or(IpsecError::Malformed("short packet"))?;
    let mut out = Vec::with_capacity(header.len() + esp_len);
    out.extend_from_slice(header);
    *out.get_mut(info.proto_offset)
        .ok_or(IpsecError::Malformed("protocol offset"))? = PROTO_ESP;
    if info.src.is_ipv4() {
        let total = u16::try_from(header.len() + esp_len).map_err(|_| IpsecError::TooLarge)?;
        out[2..4].copy_from_slice(&total.to_be_bytes());
        out[10..12].copy_from_slice(&[0, 0]);
        let sum = packet::checksum(&out[..info.header_len]);
        out[10..12].copy_from_slice(&sum.to_be_bytes());
    } else {
        let len = u16::try_from(header.len() - 40 + esp_len).map_err(|_| IpsecError::TooLarge)?;
        out[4..6].copy_from_slice(&len.to_be_bytes());
    }
    Ok(out)
}

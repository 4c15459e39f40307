//! The IKE-less terminal of seeds 001 and 003: ESP yes, IKE no.
//!
//! The terminal keeps its own data plane ([`DataPlane`]: SPD and SAD) and does all
//! per-packet work itself; a proxy on its path (seed 001) or behind its operator's router
//! (seed 003) runs IKEv2 for it with the terminal's own addresses and hands it the keys in
//! sealed key-transfer messages ([`super::transfer`]). The terminal never runs IKE: IKE
//! messages that reach it are counted and dropped.
//!
//! ```text
//!  application ──send()──▶ DataPlane::protect ─▶ ESP out ───────────────────────▶ network
//!                                 └─ no SA: packet held, Acquire ─▶ Trigger ──────▶ (peer:500,
//!                                                                                taken by the proxy)
//!  network ─▶ UDP 500 + marker ─▶ Solicit  ─▶ Announce (boot nonce, echo) ──────▶
//!                               ─▶ Install ─▶ DataPlane::install ─▶ held packets leave
//!                                             protected; Ack ───────────────────▶
//!                               ─▶ Delete / Failure ─▶ Ack
//!          ─▶ anything else ─────▶ DataPlane::unprotect ─▶ Received { packet } ─▶ application
//! ```
//!
//! A proxy message installs only if it opens under the delegation key, names this boot of
//! the terminal (the boot nonce drawn at construction) and carries a sequence number the
//! anti-replay window has not seen; a retransmission of one already handled is answered
//! with the same acknowledgement and changes nothing. Triggers are retransmitted with a
//! doubling interval until the proxy answers, the acquire expires or the tries run out.
//! `no_std` + `alloc`; every queue is bounded by [`TerminalConfig`].

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use super::seal::DelegationKey;
use super::transfer::{
    self, Ack, AckOutcome, Announce, Envelope, FailureReason, NONCE_LEN, Service, Transfer, Trigger,
};
use crate::crypto::ct_eq;
use crate::error::{IpsecError, TransferError};
use crate::io::{Actor, IfaceId, Input, Outbox, Output};
use crate::ipsec::{
    self, ChildSa, DataPlane, Inbound, IpsecEvent, Outbound, PROTO_UDP, Protected, ReplayWindow,
    Selector,
};
use crate::time::{TimerTable, doubled};
use crate::{Error, Instant, Rng};

/// How the terminal retries what the proxy has not answered yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// First interval; it doubles after each try.
    pub initial: Duration,
    /// The longest interval.
    pub max_interval: Duration,
    /// Sends in all (the first included).
    pub max_tries: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial: Duration::from_millis(500),
            max_interval: Duration::from_secs(8),
            max_tries: 5,
        }
    }
}

impl Retry {
    /// When the send after `tries` sends is due, or `None` when the tries are spent.
    pub(crate) fn next(&self, now: Instant, tries: u32) -> Option<Instant> {
        (tries < self.max_tries)
            .then(|| now + doubled(self.initial, tries.saturating_sub(1), self.max_interval))
    }
}

/// The terminal's configuration.
#[derive(Clone, Debug)]
pub struct TerminalConfig {
    /// The terminal's id (provisioned at the proxy with the same delegation key).
    pub id: u64,
    /// The delegation key the proxy seals with.
    pub key: DelegationKey,
    /// The terminal's addresses (the first of each family is the source of its messages).
    pub addresses: Vec<IpAddr>,
    /// Services it offers, told to the proxy in its announce (¶0031).
    pub services: Vec<Service>,
    /// Where to send an unsolicited announce at start-up: any address beyond the proxy
    /// (the proxy takes it on the way). `None`: wait to be solicited.
    pub announce_to: Option<IpAddr>,
    /// The interface the network is on.
    pub network: IfaceId,
    /// Retries of triggers and of the start-up announce.
    pub retry: Retry,
    /// Triggers waiting for an answer at once.
    pub max_triggers: usize,
    /// Size of the anti-replay window over the proxy's sequence numbers.
    pub replay_window: u32,
    /// Acknowledgements remembered to answer retransmissions.
    pub max_remembered_acks: usize,
    /// Bound of the output queue.
    pub outbox_bound: usize,
}

impl TerminalConfig {
    /// A terminal with these credentials and addresses, waiting to be solicited.
    pub fn new(id: u64, key: DelegationKey, addresses: Vec<IpAddr>) -> TerminalConfig {
        TerminalConfig {
            id,
            key,
            addresses,
            services: Vec::new(),
            announce_to: None,
            network: IfaceId(0),
            retry: Retry::default(),
            max_triggers: 16,
            replay_window: 64,
            max_remembered_acks: 16,
            outbox_bound: Outbox::<TerminalEvent>::DEFAULT_BOUND,
        }
    }
}

/// What the IKE-less terminal tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TerminalEvent {
    /// The proxy asked who we are; we answered with our boot nonce.
    Announced,
    /// A key transfer installed an SA pair (seed 001 S9/S19, seed 003 Fig. 14).
    KeysInstalled {
        /// Inbound SPI.
        spi_in: u32,
        /// Outbound SPI.
        spi_out: u32,
        /// The SA it rekeys, if any (it stays until deleted).
        replaces: Option<u32>,
    },
    /// A key transfer opened but the data plane refused the SA; the proxy was told.
    InstallRefused {
        /// Inbound SPI.
        spi_in: u32,
        /// Why.
        error: IpsecError,
    },
    /// The proxy had SAs removed (its delete or a hard expiry there).
    KeysDeleted {
        /// Inbound SPIs removed.
        spis: Vec<u32>,
    },
    /// The negotiation a trigger asked for failed at the proxy.
    DelegationFailed {
        /// The acquire.
        acquire: u32,
        /// Why.
        reason: FailureReason,
    },
    /// A trigger went unanswered through every retry.
    TriggerUnanswered {
        /// The acquire.
        acquire: u32,
    },
    /// A packet for the application: decrypted from ESP, or let through in clear by policy.
    Received {
        /// The IP packet.
        packet: Vec<u8>,
        /// Whether it came through an SA.
        protected: bool,
    },
    /// An event of the data plane (acquires, lifetimes).
    Ipsec(IpsecEvent),
}

/// What became of a packet the application sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// It left, protected.
    Protected,
    /// It left in clear (policy: bypass).
    Clear,
    /// Policy dropped it.
    Discarded,
    /// It waits for keys (acquire `0`); a trigger asked the proxy for them.
    Held(u32),
}

/// Counters of refused and dropped input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TerminalStats {
    /// Key-transfer messages refused (seal, nonce, layout).
    pub refused: u64,
    /// Retransmitted or replayed proxy messages (answered from the ack cache or dropped).
    pub replayed: u64,
    /// IKE messages that reached the terminal (it runs no IKE).
    pub ike_dropped: u64,
    /// IP-in-IP packets whose inner packet is not a key-transfer message, dropped.
    pub encapsulated_dropped: u64,
}

/// A trigger waiting for the proxy's install or failure.
#[derive(Clone, Debug)]
struct PendingTrigger {
    acquire: u32,
    selector: Selector,
    bytes: Vec<u8>,
    tries: u32,
    next: Instant,
}

/// The start-up announce, retried until a solicit comes (then the solicited announce
/// replaces it).
#[derive(Clone, Debug)]
enum Startup {
    /// Not sending (none configured, or answered).
    Quiet,
    /// Sending.
    Announcing { tries: u32, next: Instant },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    Plane,
    Startup,
    Trigger(u32),
}

/// The IKE-less terminal, as an [`Actor`]. See the module documentation.
pub struct Terminal {
    cfg: TerminalConfig,
    plane: DataPlane,
    rng: Rng,
    boot: [u8; NONCE_LEN],
    seq: u32,
    window: ReplayWindow,
    /// The last acknowledgements sent, by the sequence number they acknowledge.
    acks: VecDeque<(u32, Vec<u8>)>,
    triggers: Vec<PendingTrigger>,
    startup: Startup,
    /// SAs set by other means (¶0012), announced for the proxy to import.
    manual: Vec<u32>,
    /// When we last announced because of a message sealed for an earlier boot.
    stale_announced: Option<Instant>,
    ip_id: u16,
    stats: TerminalStats,
    outbox: Outbox<TerminalEvent>,
}

impl core::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Terminal")
            .field("id", &self.cfg.id)
            .field("sas", &self.plane.sa_count())
            .field("triggers", &self.triggers.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Terminal {
    /// A terminal with its data plane (policies set); draws its boot nonce from `rng`.
    /// With [`TerminalConfig::announce_to`] it announces itself at `now`.
    pub fn new(
        cfg: TerminalConfig,
        plane: DataPlane,
        mut rng: Rng,
        now: Instant,
    ) -> Result<Terminal, Error> {
        if cfg.addresses.is_empty() || cfg.addresses.len() > transfer::MAX_ADDRESSES {
            return Err(TransferError::BadBody.into());
        }
        let window = ReplayWindow::new(cfg.replay_window)?;
        let boot = crate::crypto::random_array(&mut *rng);
        let startup = match cfg.announce_to {
            Some(_) => Startup::Announcing {
                tries: 0,
                next: now,
            },
            None => Startup::Quiet,
        };
        Ok(Terminal {
            outbox: Outbox::new(cfg.outbox_bound),
            cfg,
            plane,
            rng,
            boot,
            seq: 0,
            window,
            acks: VecDeque::new(),
            triggers: Vec::new(),
            startup,
            manual: Vec::new(),
            stale_announced: None,
            ip_id: 0,
            stats: TerminalStats::default(),
        })
    }

    /// The data plane.
    pub fn data_plane(&self) -> &DataPlane {
        &self.plane
    }

    /// The data plane, to edit policies.
    pub fn data_plane_mut(&mut self) -> &mut DataPlane {
        &mut self.plane
    }

    /// Counters.
    pub fn stats(&self) -> TerminalStats {
        self.stats
    }

    /// Triggers waiting for an answer.
    pub fn pending_triggers(&self) -> usize {
        self.triggers.len()
    }

    /// The terminal's boot nonce (what the proxy must echo).
    pub fn boot_nonce(&self) -> [u8; NONCE_LEN] {
        self.boot
    }

    /// Install an SA set by other means than the proxy (¶0012: "by mutual agreement"); the
    /// next announce tells the proxy, which imports it into its SA store.
    pub fn install_manual(&mut self, now: Instant, sa: ChildSa) -> Result<(), Error> {
        if self.manual.len() >= transfer::MAX_HELD {
            return Err(Error::CapacityExceeded {
                what: "SAs set by other means",
                bound: transfer::MAX_HELD,
            });
        }
        let spi = sa.spi_in;
        let released = self.plane.install(now, sa)?;
        self.manual.push(spi);
        self.emit_all(released)?;
        self.drain_plane()
    }

    /// Send an IP packet from the application (source = one of our addresses).
    pub fn send(&mut self, now: Instant, packet: &[u8]) -> Result<Sent, Error> {
        let r = match self.plane.protect(now, packet) {
            Ok(Outbound::Protected(p)) => self.emit(p).map(|_| Sent::Protected),
            Ok(Outbound::Bypass) => self.wire(packet.to_vec()).map(|_| Sent::Clear),
            Ok(Outbound::Discard) => Ok(Sent::Discarded),
            Ok(Outbound::Queued { acquire }) => Ok(Sent::Held(acquire)),
            Err(e) => Err(e.into()),
        };
        self.drain_plane_at(now)?;
        r
    }

    fn wire(&mut self, data: Vec<u8>) -> Result<(), Error> {
        self.outbox.push(Output::Packet {
            iface: self.cfg.network,
            data,
        })
    }

    fn emit(&mut self, p: Protected) -> Result<(), Error> {
        match p {
            Protected::Ip(data) => self.wire(data),
            Protected::Udp(d) => {
                self.ip_id = self.ip_id.wrapping_add(1);
                let data = d.to_ip_packet(self.ip_id)?;
                self.wire(data)
            }
        }
    }

    fn emit_all(&mut self, ps: Vec<Protected>) -> Result<(), Error> {
        for p in ps {
            self.emit(p)?;
        }
        Ok(())
    }

    fn drain_plane(&mut self) -> Result<(), Error> {
        while let Some(e) = self.plane.poll_event() {
            self.outbox.event(TerminalEvent::Ipsec(e))?;
        }
        Ok(())
    }

    /// Pass the data plane's events on; an acquire becomes a trigger, an expired acquire
    /// ends its trigger.
    fn drain_plane_at(&mut self, now: Instant) -> Result<(), Error> {
        while let Some(e) = self.plane.poll_event() {
            match &e {
                IpsecEvent::Acquire(a) => self.trigger(now, a.id, a.packet)?,
                IpsecEvent::AcquireExpired { id, .. } => self.triggers.retain(|t| t.acquire != *id),
                _ => {}
            }
            self.outbox.event(TerminalEvent::Ipsec(e))?;
        }
        Ok(())
    }

    fn source_for(&self, peer: IpAddr) -> Option<IpAddr> {
        self.cfg
            .addresses
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == peer.is_ipv4())
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Seal `m` and put it on the wire from our address to `to`, port 500 both ends.
    fn send_transfer(&mut self, m: &Transfer, to: IpAddr) -> Result<Vec<u8>, Error> {
        let packet = self.seal_transfer(m, to)?;
        self.wire(packet.clone())?;
        Ok(packet)
    }

    /// The IP packet carrying `m`, sealed, from our address to `to`.
    fn seal_transfer(&mut self, m: &Transfer, to: IpAddr) -> Result<Vec<u8>, Error> {
        let from = self
            .source_for(to)
            .ok_or(Error::Transfer(TransferError::BadSelector))?;
        let seq = self.next_seq();
        let payload = m.encode(self.cfg.id, seq, &self.cfg.key, &mut *self.rng)?;
        self.ip_id = self.ip_id.wrapping_add(1);
        let packet = ipsec::udp_packet(
            SocketAddr::new(from, transfer::PORT),
            SocketAddr::new(to, transfer::PORT),
            64,
            0,
            self.ip_id,
            &payload,
        )?;
        Ok(packet)
    }

    /// S13's start request, addressed to the peer: the proxy on the way takes it.
    fn trigger(&mut self, now: Instant, acquire: u32, selector: Selector) -> Result<(), Error> {
        if self.triggers.len() >= self.cfg.max_triggers {
            return Err(Error::CapacityExceeded {
                what: "pending triggers",
                bound: self.cfg.max_triggers,
            });
        }
        let m = Transfer::Trigger(Trigger {
            boot: self.boot,
            acquire,
            selector,
        });
        let bytes = self.send_transfer(&m, selector.dst.start())?;
        let next = self.cfg.retry.next(now, 1).unwrap_or(Instant::MAX);
        self.triggers.push(PendingTrigger {
            acquire,
            selector,
            bytes,
            tries: 1,
            next,
        });
        Ok(())
    }

    fn announce(&mut self, echo: Option<[u8; NONCE_LEN]>, to: IpAddr) -> Result<(), Error> {
        let held = self
            .manual
            .iter()
            .filter_map(|spi| self.plane.sa(*spi).cloned())
            .take(transfer::MAX_HELD)
            .collect();
        let m = Transfer::Announce(Announce {
            boot: self.boot,
            echo,
            addresses: self.cfg.addresses.clone(),
            services: self.cfg.services.clone(),
            suites: Vec::new(),
            held,
        });
        self.send_transfer(&m, to)?;
        Ok(())
    }

    /// A UDP datagram to our port 500: a key-transfer message (IKE is not ours to run).
    fn on_port_500(&mut self, now: Instant, from: SocketAddr, payload: &[u8]) -> Result<(), Error> {
        if !transfer::is_marked(payload) {
            self.stats.ike_dropped += 1;
            return Ok(());
        }
        let r = self.on_transfer(now, from, payload);
        if let Err(Error::Transfer(_)) = &r {
            self.stats.refused += 1;
        }
        r
    }

    fn on_transfer(&mut self, now: Instant, from: SocketAddr, payload: &[u8]) -> Result<(), Error> {
        let env = Envelope::parse(payload)?;
        // A solicit is addressed by IP (the proxy may not know who lives there yet).
        if env.msg_type != transfer::msg::SOLICIT && env.terminal != self.cfg.id {
            return Err(TransferError::UnknownTerminal(env.terminal).into());
        }
        if Transfer::from_terminal(env.msg_type) {
            return Err(TransferError::WrongDirection(env.msg_type).into());
        }
        let m = env.open(&self.cfg.key)?;
        if let Transfer::Solicit { challenge } = m {
            self.startup = Startup::Quiet;
            self.announce(Some(challenge), from.ip())?;
            return self.outbox.event(TerminalEvent::Announced);
        }
        if !m.boot().is_some_and(|b| ct_eq(b, &self.boot)) {
            // Sealed for an earlier boot of ours: the proxy does not know we restarted.
            // Announce ourselves (its answer is a solicit), at most once per longest retry
            // interval, so a stream of old messages costs one small datagram now and then.
            let quiet = self
                .stale_announced
                .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.retry.max_interval);
            if quiet {
                self.stale_announced = Some(now);
                self.announce(None, from.ip())?;
            }
            return Err(TransferError::StaleNonce.into());
        }
        let seq = u64::from(env.seq);
        if self.window.check(seq).is_err() {
            self.stats.replayed += 1;
            // A retransmission whose acknowledgement was lost: answer again, change nothing.
            if let Some((_, ack)) = self.acks.iter().find(|(s, _)| *s == env.seq) {
                let ack = ack.clone();
                return self.wire(ack);
            }
            return Err(TransferError::Replayed(env.seq).into());
        }
        // Applied before the sequence number is taken: if applying fails, the proxy's
        // retransmission applies it again (installing is idempotent for the same keys).
        let outcome = self.apply(now, m)?;
        let ack = Transfer::Ack(Ack {
            boot: self.boot,
            acked: env.seq,
            outcome,
        });
        let bytes = self.seal_transfer(&ack, from.ip())?;
        // The number is taken and the ack remembered before it is sent, so a lost ack (or
        // a full queue) is answered again from the cache.
        let _ = self.window.accept(seq);
        if self.acks.len() >= self.cfg.max_remembered_acks {
            self.acks.pop_front();
        }
        self.acks.push_back((env.seq, bytes.clone()));
        self.wire(bytes)
    }

    /// Carry out an opened, fresh proxy message.
    fn apply(&mut self, now: Instant, m: Transfer) -> Result<AckOutcome, Error> {
        match m {
            Transfer::Install(i) => {
                let (spi_in, spi_out) = (i.child.spi_in, i.child.spi_out);
                if let Some(a) = i.acquire {
                    self.triggers.retain(|t| t.acquire != a);
                }
                let child = *i.child;
                self.triggers
                    .retain(|t| !child.covers_selector(&t.selector));
                // The same keys again (the proxy resent them after losing our ack): they
                // are installed already; say done, change nothing.
                if let Some(have) = self.plane.sa(spi_in)
                    && have.keys_in == child.keys_in
                    && have.keys_out == child.keys_out
                {
                    return Ok(AckOutcome::Done);
                }
                match self.plane.install(now, child) {
                    Ok(released) => {
                        self.emit_all(released)?;
                        self.drain_plane_at(now)?;
                        self.outbox.event(TerminalEvent::KeysInstalled {
                            spi_in,
                            spi_out,
                            replaces: i.replaces,
                        })?;
                        Ok(AckOutcome::Done)
                    }
                    Err(error) => {
                        self.outbox
                            .event(TerminalEvent::InstallRefused { spi_in, error })?;
                        Ok(AckOutcome::Refused)
                    }
                }
            }
            Transfer::Delete(d) => {
                let spis: Vec<u32> = d
                    .spis
                    .into_iter()
                    .filter(|s| self.plane.remove(*s).is_some())
                    .collect();
                self.manual.retain(|s| !spis.contains(s));
                self.outbox.event(TerminalEvent::KeysDeleted { spis })?;
                Ok(AckOutcome::Done)
            }
            Transfer::Failure(f) => {
                self.triggers.retain(|t| t.acquire != f.acquire);
                self.outbox.event(TerminalEvent::DelegationFailed {
                    acquire: f.acquire,
                    reason: f.reason,
                })?;
                Ok(AckOutcome::Done)
            }
            other => Err(TransferError::WrongDirection(other.msg_type()).into()),
        }
    }

    fn on_packet(&mut self, now: Instant, data: &[u8]) -> Result<(), Error> {
        let info = ipsec::parse_packet(data)?;
        let ours = self.cfg.addresses.contains(&info.dst);
        if ours && matches!(info.protocol, ipsec::PROTO_IPV4 | ipsec::PROTO_IPV6) {
            // Seed 003's key transfer arrives in IP-in-IP from the service control (Fig.
            // 14(B)): the inner packet, peer → us, is taken only if it is a key-transfer
            // message to our port 500 (sealed, so whoever encapsulated it proves nothing);
            // anything else inside is dropped, so the encapsulation opens no path around
            // the data plane's policy.
            let inner = data
                .get(info.header_len..info.total_len)
                .ok_or(IpsecError::Malformed("short packet"))?;
            let i = ipsec::parse_packet(inner)?;
            let payload = inner.get(i.header_len + 8..i.total_len).unwrap_or_default();
            if self.cfg.addresses.contains(&i.dst)
                && i.protocol == PROTO_UDP
                && i.dst_port == Some(transfer::PORT)
                && transfer::is_marked(payload)
            {
                let from = SocketAddr::new(i.src, i.src_port.unwrap_or(0));
                return self.on_port_500(now, from, payload);
            }
            self.stats.encapsulated_dropped += 1;
            return Ok(());
        }
        if ours && info.protocol == PROTO_UDP && info.dst_port == Some(transfer::PORT) {
            let payload = data
                .get(info.header_len + 8..info.total_len)
                .ok_or(IpsecError::Malformed("short UDP"))?;
            let from = SocketAddr::new(info.src, info.src_port.unwrap_or(0));
            return self.on_port_500(now, from, payload);
        }
        let r = self.plane.unprotect(now, data);
        let r = r.map_err(Error::from).and_then(|i| self.deliver(i, data));
        self.drain_plane_at(now)?;
        r
    }

    fn deliver(&mut self, inbound: Inbound, original: &[u8]) -> Result<(), Error> {
        let (packet, protected) = match inbound {
            Inbound::Packet { packet, .. } => (packet, true),
            Inbound::Bypass => (original.to_vec(), false),
            Inbound::Ike { .. } => {
                self.stats.ike_dropped += 1;
                return Ok(());
            }
            Inbound::Discard | Inbound::NatKeepalive | Inbound::Dummy { .. } => return Ok(()),
        };
        self.outbox
            .event(TerminalEvent::Received { packet, protected })
    }
}

impl TimerTable for Terminal {
    type Timer = Timer;

    fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        let plane = self.plane.poll_timeout().map(|t| (Timer::Plane, t));
        let startup = match self.startup {
            Startup::Announcing { next, .. } => Some((Timer::Startup, next)),
            Startup::Quiet => None,
        };
        let triggers = self
            .triggers
            .iter()
            .map(|t| (Timer::Trigger(t.acquire), t.next));
        plane.into_iter().chain(startup).chain(triggers)
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        // Errors below are a full outbox: the driver stopped draining; it reads the loss
        // report (`Output::Lost`), and the state stays consistent.
        match timer {
            Timer::Plane => {
                self.plane.handle_timeout(now);
                let _ = self.drain_plane_at(now);
            }
            Timer::Startup => {
                let Startup::Announcing { tries, .. } = self.startup else {
                    return;
                };
                if let Some(to) = self.cfg.announce_to {
                    let _ = self.announce(None, to);
                }
                let tries = tries + 1;
                self.startup = match self.cfg.retry.next(now, tries) {
                    Some(next) => Startup::Announcing { tries, next },
                    None => Startup::Quiet,
                };
            }
            Timer::Trigger(acquire) => {
                let Some(i) = self.triggers.iter().position(|t| t.acquire == acquire) else {
                    return;
                };
                let t = &mut self.triggers[i];
                t.tries += 1;
                match self.cfg.retry.next(now, t.tries) {
                    Some(next) => {
                        t.next = next;
                        let bytes = t.bytes.clone();
                        let _ = self.wire(bytes);
                    }
                    None => {
                        self.triggers.remove(i);
                        let _ = self
                            .outbox
                            .event(TerminalEvent::TriggerUnanswered { acquire });
                    }
                }
            }
        }
    }
}

impl Actor for Terminal {
    type Event = TerminalEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::Packet { iface, data } if iface == self.cfg.network => self.on_packet(now, data),
            Input::Packet { .. } => Err(IpsecError::UnknownInterface.into()),
            _ => Err(IpsecError::UnsupportedInput.into()),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.run_timers(now);
    }

    fn poll_output(&mut self) -> Option<Output<TerminalEvent>> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer()
    }
}

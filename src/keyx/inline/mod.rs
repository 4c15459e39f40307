//! Seed 001: the inline key-exchange proxy, a bump in the wire that negotiates IPsec keys
//! for the terminal behind it with the terminal's own addresses and installs them in it.
//!
//! ```text
//!  peer ◀── Internet ──▶ [iface 9 | InlineProxy | iface 14] ◀── LAN ──▶ IKE-less terminal
//!                         means 10: judge (Fig. 3 / Fig. 4)
//!                         means 11: IKEv2 as the terminal (Responder / Initiator per peer)
//!                         means 12: sealed key transfer (super::transfer)
//!                         means 13: SA store      means 15/16: address store + policy table
//! ```
//!
//! **Fig. 3, a packet from the Internet** ([`judge::from_internet`] and `on_internet`):
//! S1 policy row discard → S2 drop; S3 not key exchange → S4 forward byte-identical; S5
//! destination not a delegated terminal → S2; S6 IKE SPIs of an IKE SA in the store → it
//! is handled inside it (a retransmitted request is answered from the engine's cache and
//! keys never acknowledged are pushed again); otherwise S7 negotiate as the terminal
//! (IKEv2 responder), S8 store, S9 push the sealed keys.
//!
//! **Fig. 4, a packet from the terminal** ([`judge::from_terminal`] and `on_terminal`):
//! S11 discard → S12 drop; S13 not a start request → S14 forward; S15 sender not a
//! delegated terminal → S12; S16 a valid stored SA covers it → S19 push it if it was never
//! acknowledged, or rekey it if it was (the terminal lost it: pushing used keys again would
//! restart its sequence numbers and reuse AEAD nonces); otherwise S17 negotiate (IKEv2
//! initiator from the terminal's address), S18 store, S19 push. The start request is the
//! terminal's sealed trigger (addressed to the peer) or, in compat mode, a clear packet a
//! protect row covers; either way it is never forwarded.
//!
//! Every IKE packet the proxy emits carries the terminal's address as its source (one IKE
//! SA per terminal and peer, ¶0032); every key-transfer packet carries the peer's address
//! as its source. The proxy has no address of its own. Forwarded packets leave unchanged.
//! The security reasoning and the flowcharts against this code are in `docs/keyx.md`.

pub mod judge;
pub mod manage;
pub mod store;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

pub use crate::error::InlineError;
pub use judge::DropReason;
pub use store::{MemoryStore, SecureStore, TerminalSecrets};

use super::ikeless::Retry;
use super::transfer::{
    self, AckOutcome, Delete, Envelope, Failure, FailureReason, Install, NONCE_LEN, Transfer,
};
use crate::channel::{Connection, PeerIdentity, SecureStream, ServerConfig};
use crate::crypto::ct_eq;
use crate::error::TransferError;
use crate::ikev2::{
    FailReason, IkeEvent, IkeSaId, Initiator, InitiatorConfig, Responder, ResponderConfig,
};
use crate::io::{Actor, IfaceId, Input, Outbox, Output, StreamId};
use crate::ipsec::{
    self, Action, ChildSa, Lifetime, Policy, ReplayWindow, Selector, Spd, TrafficSelector,
};
use crate::time::TimerTable;
use crate::{Error, Instant, Rng};
use judge::{FromInternet, FromTerminal};
use manage::{ManagementOp, Outcome};

/// The inline proxy's configuration.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The Internet-side interface (the seed's network interface 9).
    pub internet: IfaceId,
    /// The terminal-side interface (terminal interface 14).
    pub terminals: IfaceId,
    /// The policy table (Fig. 2), first match wins. `Direction::Inbound` rows are matched
    /// as written against packets from the Internet (source = the peer), as the seed reads
    /// its examples; `Outbound` rows against packets from the terminal.
    pub policy: Vec<Policy>,
    /// The action for packets no row matches (bypass: the seed's flow then reaches S3/S13).
    pub default_action: Action,
    /// Bound of the policy table.
    pub max_policies: usize,
    /// Address store entries set by hand (¶0031): address → terminal id.
    pub bindings: Vec<(IpAddr, u64)>,
    /// Bound of the address store (bound addresses).
    pub max_addresses: usize,
    /// Bound of the learned-address table (seen on the terminal side, not yet delegated).
    pub max_learned: usize,
    /// Bound of the SA store (SA pairs, all terminals).
    pub max_sas: usize,
    /// Negotiations the proxy starts and has not finished, all terminals.
    pub max_negotiations: usize,
    /// The same, per terminal (no amplification toward many peers).
    pub max_negotiations_per_terminal: usize,
    /// Proxy messages waiting for a terminal's acknowledgement, per terminal.
    pub max_pushes_per_terminal: usize,
    /// Retransmission of key transfers and solicits.
    pub retry: Retry,
    /// Compat mode: a clear packet from a terminal that a protect row covers starts a
    /// negotiation (it is dropped, never forwarded). Off: such packets are only dropped.
    pub clear_start: bool,
    /// Hosts behind the proxy that run IKE themselves and may pass (the seed drops them).
    pub own_ike: Vec<IpAddr>,
    /// At S5, solicit an address that is not in the address store instead of only
    /// dropping (the peer's retransmission then finds it bound if a provisioned terminal
    /// answers). Off for seed 001 (the seed drops); seed 003's proxy turns it on, since
    /// its service controls divert only their subscribers' key exchange.
    pub solicit_unknown: bool,
    /// Size of the anti-replay window over each terminal's sequence numbers.
    pub replay_window: u32,
    /// Bound of the output queue.
    pub outbox_bound: usize,
    /// Remote change by an authenticated user (¶0025); `None`: management streams are
    /// refused.
    pub management: Option<ManagementConfig>,
}

/// Remote management (¶0025): the channel the proxy runs as server on each management
/// stream the driver hands it (the driver terminates TCP on the management address).
#[derive(Clone, Debug)]
pub struct ManagementConfig {
    /// The secure channel's server configuration: its PSKs or its client-certificate
    /// policy decide who is authenticated.
    pub channel: Arc<ServerConfig>,
    /// Management streams open at once.
    pub max_sessions: usize,
}

impl ProxyConfig {
    /// Terminal side on `terminals`, Internet on `internet`; everything bypassed that no
    /// row discards or protects.
    pub fn new(internet: IfaceId, terminals: IfaceId) -> ProxyConfig {
        ProxyConfig {
            internet,
            terminals,
            policy: Vec::new(),
            default_action: Action::Bypass,
            max_policies: 64,
            bindings: Vec::new(),
            max_addresses: 64,
            max_learned: 64,
            max_sas: 256,
            max_negotiations: 32,
            max_negotiations_per_terminal: 4,
            max_pushes_per_terminal: 8,
            retry: Retry::default(),
            clear_start: false,
            own_ike: Vec::new(),
            solicit_unknown: false,
            replay_window: 64,
            outbox_bound: Outbox::<ProxyEvent>::DEFAULT_BOUND,
            management: None,
        }
    }
}

/// What the proxy tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyEvent {
    /// A terminal proved itself (a sealed announce echoing our solicit): its address is in
    /// the address store (¶0012).
    TerminalBound {
        /// The terminal.
        terminal: u64,
        /// The address it announced from.
        address: IpAddr,
        /// Whether it came back with a new boot nonce (it restarted).
        rebooted: bool,
    },
    /// S7 / S17: negotiating with the peer as the terminal.
    Negotiating {
        /// The terminal.
        terminal: u64,
        /// The peer.
        peer: IpAddr,
        /// Whether the terminal's side started (Fig. 4).
        initiator: bool,
    },
    /// S8 / S18: an SA pair stored.
    SaStored {
        /// The terminal.
        terminal: u64,
        /// The peer.
        peer: IpAddr,
        /// Inbound SPI (the terminal's).
        spi_in: u32,
        /// Outbound SPI.
        spi_out: u32,
    },
    /// S9 / S19: keys sent to the terminal.
    KeysPushed {
        /// The terminal.
        terminal: u64,
        /// Inbound SPI.
        spi_in: u32,
        /// Whether this is a re-push of keys never acknowledged.
        again: bool,
    },
    /// The terminal acknowledged an install.
    KeysAcknowledged {
        /// The terminal.
        terminal: u64,
        /// Inbound SPI.
        spi_in: u32,
    },
    /// The terminal's data plane refused an install.
    InstallRefused {
        /// The terminal.
        terminal: u64,
        /// Inbound SPI.
        spi_in: u32,
    },
    /// A message to the terminal went unacknowledged through every retry.
    PushUnanswered {
        /// The terminal.
        terminal: u64,
        /// Its sequence number.
        seq: u32,
    },
    /// An acknowledged SA was asked for again (the terminal lost it): rekeyed, not
    /// re-pushed. Also at a soft lifetime.
    Rekeying {
        /// The terminal.
        terminal: u64,
        /// The SA's inbound SPI.
        spi_in: u32,
    },
    /// An SA left the store (peer delete, hard lifetime, IKE SA gone); the terminal is
    /// told to delete it.
    SaRemoved {
        /// The terminal.
        terminal: u64,
        /// Inbound SPI.
        spi_in: u32,
    },
    /// A negotiation failed; a trigger's terminal is told.
    NegotiationFailed {
        /// The terminal.
        terminal: u64,
        /// The peer.
        peer: IpAddr,
        /// Why.
        reason: FailureReason,
    },
    /// The secure store went away: every SA was dropped (fail closed).
    SecureStoreUnavailable,
    /// An authenticated management user changed the stores (¶0025).
    ManagementChange {
        /// Who (the channel's proof of the client).
        by: PeerIdentity,
        /// What.
        op: ManagementOp,
        /// Whether it took effect.
        done: bool,
    },
    /// A management request from a client the channel did not authenticate was refused.
    ManagementRefused,
}

/// Counters of what the proxy dropped and forwarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Forwarded Internet → terminal (S4).
    pub forwarded_in: u64,
    /// Forwarded terminal → Internet (S14).
    pub forwarded_out: u64,
    /// S2 / S12 policy drops.
    pub policy_drops: u64,
    /// Clear packets a protect row covers, dropped.
    pub unprotected_drops: u64,
    /// S5 / S15 drops: not a delegated terminal.
    pub unknown_terminal_drops: u64,
    /// IKEv1 packets dropped.
    pub ikev1_drops: u64,
    /// Key-transfer messages from the Internet dropped.
    pub forged_transfer_drops: u64,
    /// IKE from a host behind the proxy dropped.
    pub own_ike_drops: u64,
    /// Packets that did not parse.
    pub malformed: u64,
    /// Key-transfer messages from terminals refused (seal, nonce, replay, binding).
    pub transfer_refused: u64,
    /// IKE messages the engines refused.
    pub ike_refused: u64,
    /// Negotiations started (S7 + S17).
    pub negotiations: u64,
    /// Compat-mode clear start requests dropped.
    pub clear_starts: u64,
    /// Retransmitted terminal messages already handled.
    pub duplicates: u64,
    /// Management requests refused (not authenticated, or undecodable).
    pub management_refused: u64,
}

/// Which of a terminal's IKE engines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    /// The terminal's responder (the peer started, Fig. 3).
    Responder,
    /// The initiator toward this peer (the terminal started, Fig. 4).
    Initiator(IpAddr),
}

/// Who an SA in the store belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// An IKE SA of the terminal's responder.
    Responder(IkeSaId),
    /// The terminal's initiator toward this peer.
    Initiator(IpAddr),
    /// Set on the terminal by other means and imported from its announce (¶0012): no IKE
    /// SA of ours, so it cannot be rekeyed, only dropped.
    Imported,
}

impl Owner {
    fn engine(self) -> Option<Engine> {
        match self {
            Owner::Responder(_) => Some(Engine::Responder),
            Owner::Initiator(p) => Some(Engine::Initiator(p)),
            Owner::Imported => None,
        }
    }
}

/// Where an SA stands with the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SaState {
    /// Sent, no acknowledgement yet. The terminal may have installed it and used it (an
    /// ack can be lost), so it is only ever sent again as the same message, or as the
    /// same keys to the same boot of the terminal, which installs them at most once.
    Pending,
    /// Acknowledged: in use, never sent again.
    InUse,
    /// The terminal's data plane refused it.
    Refused,
    /// A rekey runs under it; the replacement is not stored yet.
    Rekeying,
    /// Replaced by a newer SA; it stays until its delete (no second rekey).
    Replaced,
}

/// One SA pair in the SA store (means 13).
#[derive(Clone, Debug)]
struct StoredSa {
    terminal: u64,
    peer: IpAddr,
    owner: Owner,
    child: ChildSa,
    stored_at: Instant,
    state: SaState,
}

impl StoredSa {
    fn soft_at(&self) -> Option<Instant> {
        self.child.lifetime.soft_time.map(|d| self.stored_at + d)
    }

    fn hard_at(&self) -> Option<Instant> {
        self.child.lifetime.hard_time.map(|d| self.stored_at + d)
    }

    fn valid(&self, now: Instant) -> bool {
        self.hard_at().is_none_or(|t| now < t)
    }

    /// The SA with its remaining lifetime (what a re-push carries).
    fn remaining(&self, now: Instant) -> ChildSa {
        let used = now.saturating_duration_since(self.stored_at);
        let left =
            |d: Option<Duration>| d.map(|d| d.saturating_sub(used).max(Duration::from_secs(1)));
        let l = self.child.lifetime;
        let mut c = self.child.clone();
        c.lifetime = Lifetime {
            soft_time: left(l.soft_time),
            hard_time: left(l.hard_time),
            ..l
        };
        c
    }
}

/// A negotiation the terminal's side started (S17), and who waits for it.
struct Negotiation {
    ike: Box<Initiator>,
    acquires: Vec<u32>,
    established: bool,
}

/// A message to a terminal waiting for its acknowledgement.
#[derive(Clone, Debug)]
struct Push {
    seq: u32,
    packet: Vec<u8>,
    /// When it was last sent.
    sent: Instant,
    tries: u32,
    next: Instant,
    what: PushKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PushKind {
    Install(u32),
    Delete,
    Failure,
}

/// A solicit sent and not yet answered.
#[derive(Clone, Debug)]
struct Challenge {
    nonce: [u8; NONCE_LEN],
    to: IpAddr,
    from: IpAddr,
    tries: u32,
    next: Instant,
}

/// A delegated terminal's state at the proxy (its address-store record).
struct TerminalState {
    addresses: Vec<IpAddr>,
    boot: Option<[u8; NONCE_LEN]>,
    window: ReplayWindow,
    seq: u32,
    pushes: Vec<Push>,
    /// Messages waiting for the terminal's boot nonce (a solicit is out).
    waiting: Vec<(IpAddr, Transfer)>,
    /// The solicit out to one of the terminal's bound addresses (it restarted, or its
    /// boot nonce is not known yet). Kept here, not among the learned addresses, so that
    /// hosts appearing on the LAN cannot crowd a delegated terminal out.
    challenge: Option<Challenge>,
    responder: Option<Box<Responder>>,
    initiators: BTreeMap<IpAddr, Negotiation>,
}

/// An address seen on the terminal side that is not a delegated terminal (yet).
#[derive(Clone, Debug)]
struct Learned {
    challenge: Challenge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    Responder(u64),
    Initiator(u64, IpAddr),
    Push(u64, u32),
    Solicit(IpAddr),
    Soft(u64, u32),
    Hard(u64, u32),
    Session(StreamId),
}

/// The inline key-exchange proxy, as an [`Actor`] with two interfaces. See the module
/// documentation.
pub struct InlineProxy<S: SecureStore = MemoryStore> {
    cfg: ProxyConfig,
    store: S,
    rng: Rng,
    spd: Spd,
    /// The address store: bound address → terminal.
    addresses: BTreeMap<IpAddr, u64>,
    learned: BTreeMap<IpAddr, Learned>,
    terminals: BTreeMap<u64, TerminalState>,
    /// The SA store, by terminal and inbound SPI.
    sas: BTreeMap<(u64, u32), StoredSa>,
    /// Management streams (¶0025).
    sessions: BTreeMap<StreamId, SecureStream>,
    ip_id: u16,
    stats: ProxyStats,
    outbox: Outbox<ProxyEvent>,
}

impl<S: SecureStore> core::fmt::Debug for InlineProxy<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InlineProxy")
            .field("terminals", &self.terminals.len())
            .field("sas", &self.sas.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<S: SecureStore> InlineProxy<S> {
    /// A proxy with its configuration, its secure store and a random generator.
    pub fn new(cfg: ProxyConfig, store: S, rng: Rng) -> Result<InlineProxy<S>, Error> {
        if cfg.internet == cfg.terminals {
            return Err(InlineError::BadConfig("the two interfaces are the same").into());
        }
        if cfg.max_sas == 0 || cfg.max_addresses == 0 || cfg.max_negotiations == 0 {
            return Err(InlineError::BadConfig("a bound is zero").into());
        }
        ReplayWindow::new(cfg.replay_window)?;
        let mut spd = Spd::new(cfg.max_policies, cfg.default_action);
        for p in &cfg.policy {
            spd.push(*p)?;
        }
        let mut proxy = InlineProxy {
            outbox: Outbox::new(cfg.outbox_bound),
            store,
            rng,
            spd,
            addresses: BTreeMap::new(),
            learned: BTreeMap::new(),
            terminals: BTreeMap::new(),
            sas: BTreeMap::new(),
            sessions: BTreeMap::new(),
            ip_id: 0,
            stats: ProxyStats::default(),
            cfg,
        };
        for (addr, id) in proxy.cfg.bindings.clone() {
            proxy.bind(id, addr)?;
        }
        Ok(proxy)
    }

    /// Counters.
    pub fn stats(&self) -> ProxyStats {
        self.stats
    }

    /// The policy table.
    pub fn policy(&self) -> &Spd {
        &self.spd
    }

    /// The policy table, to change (remote management, ¶0025, goes through here).
    pub fn policy_mut(&mut self) -> &mut Spd {
        &mut self.spd
    }

    /// The secure store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The secure store, to change. Call [`InlineProxy::store_changed`] afterwards.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The terminal bound to `addr` in the address store.
    pub fn terminal_at(&self, addr: IpAddr) -> Option<u64> {
        self.addresses.get(&addr).copied()
    }

    /// Addresses seen on the terminal side and not delegated.
    pub fn learned(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.learned.keys().copied()
    }

    /// SA pairs in the SA store, as (terminal, peer, inbound SPI, outbound SPI).
    pub fn stored_sas(&self) -> impl Iterator<Item = (u64, IpAddr, u32, u32)> + '_ {
        self.sas
            .values()
            .map(|s| (s.terminal, s.peer, s.child.spi_in, s.child.spi_out))
    }

    /// Whether the stored SA was acknowledged by its terminal.
    pub fn acknowledged(&self, terminal: u64, spi_in: u32) -> bool {
        self.sas
            .get(&(terminal, spi_in))
            .is_some_and(|s| s.state == SaState::InUse)
    }

    /// Add an address-store entry by hand (¶0031: without address acquisition).
    pub fn bind(&mut self, terminal: u64, addr: IpAddr) -> Result<(), Error> {
        if !self.addresses.contains_key(&addr) && self.addresses.len() >= self.cfg.max_addresses {
            return Err(Error::CapacityExceeded {
                what: "address store",
                bound: self.cfg.max_addresses,
            });
        }
        if let Some(before) = self.addresses.insert(addr, terminal)
            && before != terminal
            && let Some(t) = self.terminals.get_mut(&before)
        {
            // The address moved (by hand): the terminal that had it has it no more.
            t.addresses.retain(|a| *a != addr);
            t.challenge = t.challenge.take().filter(|c| c.to != addr);
        }
        self.learned.remove(&addr);
        let window = ReplayWindow::new(self.cfg.replay_window)?;
        let t = self
            .terminals
            .entry(terminal)
            .or_insert_with(|| TerminalState {
                addresses: Vec::new(),
                boot: None,
                window,
                seq: 0,
                pushes: Vec::new(),
                waiting: Vec::new(),
                challenge: None,
                responder: None,
                initiators: BTreeMap::new(),
            });
        if !t.addresses.contains(&addr) {
            t.addresses.push(addr);
        }
        Ok(())
    }

    /// Remove a terminal from the address store with everything negotiated for it (cl.11:
    /// its stored SAs are never pushed again).
    pub fn unbind(&mut self, terminal: u64) {
        self.addresses.retain(|_, t| *t != terminal);
        self.terminals.remove(&terminal);
        self.sas.retain(|(t, _), _| *t != terminal);
    }

    /// Delete every stored SA of a terminal and its IKE SAs, telling the terminal (a
    /// management flush).
    pub fn flush(&mut self, now: Instant, terminal: u64) -> Result<(), Error> {
        self.delete_all_ike(now, terminal);
        let spis: Vec<u32> = self
            .sas
            .keys()
            .filter(|(t, _)| *t == terminal)
            .map(|(_, s)| *s)
            .collect();
        // Every SA leaves the store whatever becomes of the notices (a bound on messages
        // to the terminal loses a delete, never the flush).
        let mut r = Ok(());
        for spi in &spis {
            r = r.and(self.remove_sa(now, terminal, *spi));
        }
        if let Some(t) = self.terminals.get_mut(&terminal) {
            t.responder = None;
            t.initiators.clear();
        }
        r
    }

    /// Tell the peers of every IKE SA the terminal's engines hold that it is gone, so they
    /// do not keep sending ESP nobody can open.
    fn delete_all_ike(&mut self, now: Instant, terminal: u64) {
        let Some(t) = self.terminals.get_mut(&terminal) else {
            return;
        };
        let mut engines = Vec::new();
        if let Some(r) = t.responder.as_mut() {
            for id in r.established() {
                let _ = r.delete_ike(now, id);
            }
            engines.push(Engine::Responder);
        }
        for (peer, n) in t.initiators.iter_mut() {
            let _ = n.ike.delete_ike(now);
            engines.push(Engine::Initiator(*peer));
        }
        for e in engines {
            let _ = self.drain_engine(now, terminal, e, None);
        }
    }

    /// The secure store changed (a device removed or inserted). Absent: fail closed —
    /// every SA negotiated with its secrets and every IKE engine is dropped (the terminals
    /// cannot be told: the delete would need the delegation keys that just left).
    pub fn store_changed(&mut self, now: Instant) -> Result<(), Error> {
        if self.store.present() {
            return Ok(());
        }
        // The IKE SAs' keys are in their engines, not in the store: the peers can still be
        // told. The SA store's events are not wanted (the terminals cannot be told), so it
        // is cleared first.
        self.sas.clear();
        let ids: Vec<u64> = self.terminals.keys().copied().collect();
        for id in ids {
            self.delete_all_ike(now, id);
        }
        for t in self.terminals.values_mut() {
            t.responder = None;
            t.initiators.clear();
            t.pushes.clear();
            t.waiting.clear();
        }
        self.outbox.event(ProxyEvent::SecureStoreUnavailable)
    }

    // ------------------------------------------------------------------ output

    fn emit(&mut self, iface: IfaceId, data: Vec<u8>) -> Result<(), Error> {
        self.outbox.push(Output::Packet { iface, data })
    }

    fn udp(&mut self, from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, Error> {
        self.ip_id = self.ip_id.wrapping_add(1);
        Ok(ipsec::udp_packet(from, to, 64, 0, self.ip_id, payload)?)
    }

    fn event(&mut self, e: ProxyEvent) -> Result<(), Error> {
        self.outbox.event(e)
    }

    // ------------------------------------------------------------------ Fig. 3

    fn on_internet(&mut self, now: Instant, data: &[u8]) -> Result<(), Error> {
        let Ok(info) = ipsec::parse_packet(data) else {
            self.stats.malformed += 1;
            return Ok(());
        };
        match judge::from_internet(&self.spd, &info, data, ipsec::NAT_T_PORT) {
            FromInternet::Drop(r) => {
                self.count_drop(r);
                Ok(())
            }
            FromInternet::Forward => {
                self.stats.forwarded_in += 1;
                self.emit(self.cfg.terminals, data.to_vec())
            }
            FromInternet::KeyExchange {
                from,
                to,
                start,
                end,
            } => {
                // A host behind the proxy that runs IKE itself: its exchange passes.
                if self.cfg.own_ike.contains(&to.ip()) {
                    self.stats.forwarded_in += 1;
                    return self.emit(self.cfg.terminals, data.to_vec());
                }
                // S5: is the destination a delegated terminal?
                let Some(terminal) = self.delegated(to.ip()) else {
                    self.stats.unknown_terminal_drops += 1;
                    if self.cfg.solicit_unknown && !self.addresses.contains_key(&to.ip()) {
                        // A full learned table only means no solicit now.
                        let _ = self.solicit(now, to.ip(), from.ip());
                    }
                    return Ok(());
                };
                self.key_exchange(now, terminal, from, to, &data[start..end])
            }
        }
    }

    /// S5 / S15: the terminal an address belongs to, if its secrets are at hand.
    fn delegated(&self, addr: IpAddr) -> Option<u64> {
        self.addresses
            .get(&addr)
            .copied()
            .filter(|t| self.store.has(*t))
    }

    fn count_drop(&mut self, r: DropReason) {
        let s = &mut self.stats;
        match r {
            DropReason::Policy => s.policy_drops += 1,
            DropReason::Unprotected => s.unprotected_drops += 1,
            DropReason::UnknownTerminal => s.unknown_terminal_drops += 1,
            DropReason::IkeV1 => s.ikev1_drops += 1,
            DropReason::ForgedTransfer => s.forged_transfer_drops += 1,
            DropReason::OwnIke => s.own_ike_drops += 1,
            DropReason::Malformed => s.malformed += 1,
        }
    }

    /// S6-S9 for an IKE message from the peer to `terminal`'s address.
    fn key_exchange(
        &mut self,
        now: Instant,
        terminal: u64,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) -> Result<(), Error> {
        let ike = if to.port() == ipsec::NAT_T_PORT {
            payload.get(4..).unwrap_or_default()
        } else {
            payload
        };
        // S6: the message belongs to an IKE SA of ours. The I flag (RFC 7296 §3.1) says
        // whether the peer is the original initiator: then it is the terminal's responder's
        // (a new IKE_SA_INIT there is S7); else it answers the terminal's initiator toward
        // this peer.
        let peer_initiated = ike.get(19).is_some_and(|f| f & 0x08 != 0);
        let engine = if peer_initiated {
            self.ensure_responder(now, terminal, to.ip())?;
            Engine::Responder
        } else {
            Engine::Initiator(from.ip())
        };
        let before = self
            .terminals
            .get(&terminal)
            .map_or(0, |t| t.responder.as_ref().map_or(0, |r| r.ike_sa_count()));
        let input = Input::Datagram {
            from,
            to,
            data: payload,
        };
        let r = match self.engine(terminal, engine) {
            Some(e) => e.handle_input(now, input),
            None => Ok(()),
        };
        if r.is_err() {
            self.stats.ike_refused += 1;
        }
        let after = self
            .terminals
            .get(&terminal)
            .map_or(0, |t| t.responder.as_ref().map_or(0, |r| r.ike_sa_count()));
        if after > before {
            self.stats.negotiations += 1;
            self.event(ProxyEvent::Negotiating {
                terminal,
                peer: from.ip(),
                initiator: false,
            })?;
        }
        let answered = self.drain_engine(now, terminal, engine, Some(from.ip()))?;
        // S6 yes with keys never acknowledged: when the engine answered a retransmitted
        // request from its cache, our answer — and maybe the keys' message or the
        // terminal's ack — was lost; send the keys again (the same message, see
        // `repush_pending`).
        if answered && r.is_ok() {
            self.repush_pending(now, terminal, from.ip())?;
        }
        r
    }

    fn ensure_responder(&mut self, now: Instant, terminal: u64, addr: IpAddr) -> Result<(), Error> {
        let has = self
            .terminals
            .get(&terminal)
            .is_some_and(|t| t.responder.is_some());
        if has {
            return Ok(());
        }
        let secrets = self
            .store
            .secrets(terminal)
            .ok_or(InlineError::StoreUnavailable)?;
        let mut ike = secrets.ike;
        ike.ts_local = vec![TrafficSelector::host(addr)];
        ike.ts_remote = vec![if addr.is_ipv4() {
            TrafficSelector::any_v4()
        } else {
            TrafficSelector::any_v6()
        }];
        let rng = crate::crypto::child_rng(&mut self.rng);
        let responder = Responder::new(ResponderConfig::new(ike), rng, now)?;
        if let Some(t) = self.terminals.get_mut(&terminal) {
            t.responder = Some(Box::new(responder));
        }
        Ok(())
    }

    fn engine(&mut self, terminal: u64, which: Engine) -> Option<&mut dyn Actor<Event = IkeEvent>> {
        let t = self.terminals.get_mut(&terminal)?;
        match which {
            Engine::Responder => t
                .responder
                .as_deref_mut()
                .map(|r| r as &mut dyn Actor<Event = IkeEvent>),
            Engine::Initiator(peer) => t
                .initiators
                .get_mut(&peer)
                .map(|n| &mut *n.ike as &mut dyn Actor<Event = IkeEvent>),
        }
    }

    /// Carry out an engine's outputs: IKE datagrams leave on the Internet side from the
    /// terminal's address; its events move the SA store. `peer` is the peer whose message
    /// was just fed in, if any (the events it causes are about it). Returns whether the
    /// engine sent anything.
    fn drain_engine(
        &mut self,
        now: Instant,
        terminal: u64,
        which: Engine,
        peer: Option<IpAddr>,
    ) -> Result<bool, Error> {
        let mut outs = Vec::new();
        if let Some(e) = self.engine(terminal, which) {
            while let Some(o) = e.poll_output() {
                outs.push(o);
            }
        }
        let mut sent = false;
        let mut first_error = Ok(());
        for o in outs {
            let r = match o {
                Output::Transmit(t) => {
                    sent = true;
                    self.udp(t.from, t.to, &t.data)
                        .and_then(|p| self.emit(self.cfg.internet, p))
                }
                Output::Event(e) => self.on_ike_event(now, terminal, which, peer, e),
                _ => Ok(()),
            };
            if first_error.is_ok() {
                first_error = r;
            }
        }
        first_error.map(|_| sent)
    }

    fn on_ike_event(
        &mut self,
        now: Instant,
        terminal: u64,
        which: Engine,
        peer: Option<IpAddr>,
        e: IkeEvent,
    ) -> Result<(), Error> {
        match e {
            IkeEvent::ChildSaEstablished { id, child, .. } => {
                let (owner, peer) = owner_of(which, id, peer, &child);
                let acquires = match which {
                    Engine::Initiator(p) => self
                        .terminals
                        .get_mut(&terminal)
                        .and_then(|t| t.initiators.get_mut(&p))
                        .map(|n| {
                            n.established = true;
                            core::mem::take(&mut n.acquires)
                        })
                        .unwrap_or_default(),
                    Engine::Responder => Vec::new(),
                };
                self.store_and_push(
                    now,
                    terminal,
                    peer,
                    owner,
                    *child,
                    None,
                    acquires.first().copied(),
                )
            }
            IkeEvent::ChildSaRekeyed {
                id,
                old_spi_in,
                child,
                ..
            } => {
                let (owner, peer) = owner_of(which, id, peer, &child);
                self.store_and_push(now, terminal, peer, owner, *child, Some(old_spi_in), None)
            }
            IkeEvent::ChildSaDeleted { spi_in, .. } => self.remove_sa(now, terminal, spi_in),
            IkeEvent::IkeSaRekeyed { old, new, .. } => {
                for s in self.sas.values_mut() {
                    if s.terminal == terminal && s.owner == Owner::Responder(old) {
                        s.owner = Owner::Responder(new);
                    }
                }
                Ok(())
            }
            IkeEvent::IkeSaDeleted { id, .. } => self.ike_gone(now, terminal, which, id, None),
            IkeEvent::Failed { id, reason } => {
                self.ike_gone(now, terminal, which, id, Some(failure_reason(reason)))
            }
            IkeEvent::ChildSaFailed { notify, .. } => {
                let reason = notify_reason(notify);
                self.fail_negotiation(now, terminal, which, reason)
            }
            _ => Ok(()),
        }
    }

    /// An IKE SA ended (deleted, or failed): its SAs leave the store and the terminal; a
    /// failed negotiation's triggers are answered. The state changes first; the notices
    /// after are best effort (a full queue loses a notice, never the state).
    fn ike_gone(
        &mut self,
        now: Instant,
        terminal: u64,
        which: Engine,
        id: IkeSaId,
        failed: Option<FailureReason>,
    ) -> Result<(), Error> {
        let owner = match which {
            Engine::Responder => Owner::Responder(id),
            Engine::Initiator(p) => Owner::Initiator(p),
        };
        let gone: Vec<u32> = self
            .sas
            .values()
            .filter(|s| s.terminal == terminal && s.owner == owner)
            .map(|s| s.child.spi_in)
            .collect();
        let acquires = match which {
            Engine::Initiator(p) => self
                .terminals
                .get_mut(&terminal)
                .and_then(|t| t.initiators.remove(&p))
                .map(|n| n.acquires)
                .unwrap_or_default(),
            Engine::Responder => Vec::new(),
        };
        let mut r = Ok(());
        for spi in gone {
            r = r.and(self.remove_sa(now, terminal, spi));
        }
        if let (Some(reason), Engine::Initiator(peer)) = (failed, which) {
            r = r.and(self.event(ProxyEvent::NegotiationFailed {
                terminal,
                peer,
                reason,
            }));
            for acquire in acquires {
                r = r.and(self.tell_failure(now, terminal, peer, acquire, reason));
            }
        }
        r
    }

    fn fail_negotiation(
        &mut self,
        now: Instant,
        terminal: u64,
        which: Engine,
        reason: FailureReason,
    ) -> Result<(), Error> {
        let Engine::Initiator(peer) = which else {
            return Ok(());
        };
        let acquires = self
            .terminals
            .get_mut(&terminal)
            .and_then(|t| t.initiators.get_mut(&peer))
            .map(|n| core::mem::take(&mut n.acquires))
            .unwrap_or_default();
        self.event(ProxyEvent::NegotiationFailed {
            terminal,
            peer,
            reason,
        })?;
        for acquire in acquires {
            self.tell_failure(now, terminal, peer, acquire, reason)?;
        }
        Ok(())
    }

    fn tell_failure(
        &mut self,
        now: Instant,
        terminal: u64,
        peer: IpAddr,
        acquire: u32,
        reason: FailureReason,
    ) -> Result<(), Error> {
        let m = Transfer::Failure(Failure {
            boot: [0; NONCE_LEN],
            acquire,
            reason,
        });
        self.send_to_terminal(now, terminal, peer, m, PushKind::Failure)
    }

    /// S8 + S9: store the SA and push it.
    #[allow(clippy::too_many_arguments)]
    fn store_and_push(
        &mut self,
        now: Instant,
        terminal: u64,
        peer: IpAddr,
        owner: Owner,
        child: ChildSa,
        replaces: Option<u32>,
        acquire: Option<u32>,
    ) -> Result<(), Error> {
        let spi_in = child.spi_in;
        if self.sas.len() >= self.cfg.max_sas {
            // The store is full: the SA is not kept, so it must not stay with the peer.
            self.delete_ike(now, terminal, owner);
            return Err(Error::CapacityExceeded {
                what: "SA store",
                bound: self.cfg.max_sas,
            });
        }
        if let Some(old) = replaces
            && let Some(s) = self.sas.get_mut(&(terminal, old))
        {
            // It stays until its delete, and is never rekeyed again.
            s.state = SaState::Replaced;
        }
        self.event(ProxyEvent::SaStored {
            terminal,
            peer,
            spi_in,
            spi_out: child.spi_out,
        })?;
        self.sas.insert(
            (terminal, spi_in),
            StoredSa {
                terminal,
                peer,
                owner,
                child: child.clone(),
                stored_at: now,
                state: SaState::Pending,
            },
        );
        self.push_install(now, terminal, spi_in, replaces, acquire, false)
    }

    /// S9 / S19: seal the stored SA (with its remaining lifetime) for the terminal.
    ///
    /// Again (`again`): if the message for it is still in flight, the *same* message goes
    /// out once more (the terminal's anti-replay window and acknowledgement cache make a
    /// repeat harmless), at most once per retry interval; if it is waiting for the
    /// terminal's announce, nothing is done; only if it was given up is a new message
    /// sealed — with the same keys for the same boot of the terminal, which installs an SA
    /// at most once and acknowledges a repeat as done.
    fn push_install(
        &mut self,
        now: Instant,
        terminal: u64,
        spi_in: u32,
        replaces: Option<u32>,
        acquire: Option<u32>,
        again: bool,
    ) -> Result<(), Error> {
        let Some(s) = self.sas.get(&(terminal, spi_in)) else {
            return Ok(());
        };
        let (peer, child) = (s.peer, s.remaining(now));
        let min_gap = self.cfg.retry.initial / 8;
        if let Some(t) = self.terminals.get_mut(&terminal) {
            let waiting = t
                .waiting
                .iter()
                .any(|(_, m)| matches!(m, Transfer::Install(i) if i.child.spi_in == spi_in));
            if waiting {
                return Ok(());
            }
            if let Some(p) = t
                .pushes
                .iter_mut()
                .find(|p| p.what == PushKind::Install(spi_in))
            {
                if now.saturating_duration_since(p.sent) < min_gap {
                    return Ok(());
                }
                p.sent = now;
                let packet = p.packet.clone();
                self.emit(self.cfg.terminals, packet)?;
                return self.event(ProxyEvent::KeysPushed {
                    terminal,
                    spi_in,
                    again: true,
                });
            }
        }
        let m = Transfer::Install(Install {
            boot: [0; NONCE_LEN],
            child: Box::new(child),
            replaces,
            acquire,
        });
        self.send_to_terminal(now, terminal, peer, m, PushKind::Install(spi_in))?;
        self.event(ProxyEvent::KeysPushed {
            terminal,
            spi_in,
            again,
        })
    }

    /// Keys stored for (terminal, peer) that the terminal has not acknowledged go out
    /// again (see [`InlineProxy::push_install`] for how).
    fn repush_pending(&mut self, now: Instant, terminal: u64, peer: IpAddr) -> Result<(), Error> {
        let pending: Vec<u32> = self
            .sas
            .values()
            .filter(|s| s.terminal == terminal && s.peer == peer && s.state == SaState::Pending)
            .map(|s| s.child.spi_in)
            .collect();
        for spi in pending {
            self.push_install(now, terminal, spi, None, None, true)?;
        }
        Ok(())
    }

    /// An SA leaves the store; the terminal is told to delete it.
    fn remove_sa(&mut self, now: Instant, terminal: u64, spi_in: u32) -> Result<(), Error> {
        let Some(s) = self.sas.remove(&(terminal, spi_in)) else {
            return Ok(());
        };
        if let Some(t) = self.terminals.get_mut(&terminal) {
            t.pushes.retain(|p| p.what != PushKind::Install(spi_in));
        }
        self.event(ProxyEvent::SaRemoved { terminal, spi_in })?;
        if s.state == SaState::Refused {
            return Ok(());
        }
        let m = Transfer::Delete(Delete {
            boot: [0; NONCE_LEN],
            spis: vec![spi_in],
        });
        self.send_to_terminal(now, terminal, s.peer, m, PushKind::Delete)
    }

    /// Seal `m` for the terminal (its boot nonce filled in) and send it from the peer's
    /// address; without a boot nonce yet, solicit one and keep `m` until it comes.
    fn send_to_terminal(
        &mut self,
        now: Instant,
        terminal: u64,
        peer: IpAddr,
        mut m: Transfer,
        what: PushKind,
    ) -> Result<(), Error> {
        let Some(secrets) = self.store.secrets(terminal) else {
            return Err(InlineError::StoreUnavailable.into());
        };
        let max_pushes = self.cfg.max_pushes_per_terminal;
        let Some(t) = self.terminals.get_mut(&terminal) else {
            return Err(InlineError::UnknownTerminal(terminal).into());
        };
        let Some(dst) = t
            .addresses
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == peer.is_ipv4())
        else {
            return Err(InlineError::UnknownTerminal(terminal).into());
        };
        let Some(boot) = t.boot else {
            if t.waiting.len() >= max_pushes {
                return Err(Error::CapacityExceeded {
                    what: "messages waiting for a terminal's announce",
                    bound: max_pushes,
                });
            }
            t.waiting.push((peer, m));
            return self.solicit(now, dst, peer);
        };
        if t.pushes.len() >= max_pushes {
            return Err(Error::CapacityExceeded {
                what: "pushes per terminal",
                bound: max_pushes,
            });
        }
        set_boot(&mut m, boot);
        t.seq = t.seq.wrapping_add(1).max(1);
        let seq = t.seq;
        let payload = m.encode(terminal, seq, &secrets.delegation_key, &mut *self.rng)?;
        let packet = self.udp(
            SocketAddr::new(peer, transfer::PORT),
            SocketAddr::new(dst, transfer::PORT),
            &payload,
        )?;
        let next = self.cfg.retry.next(now, 1).unwrap_or(Instant::MAX);
        if let Some(t) = self.terminals.get_mut(&terminal) {
            t.pushes.push(Push {
                seq,
                packet: packet.clone(),
                sent: now,
                tries: 1,
                next,
                what,
            });
        }
        self.emit(self.cfg.terminals, packet)
    }

    /// The solicit out to `addr`: a delegated terminal's, or a learned address's.
    fn challenge_mut(&mut self, addr: IpAddr) -> Option<&mut Challenge> {
        match self.addresses.get(&addr) {
            Some(t) => self
                .terminals
                .get_mut(t)
                .and_then(|t| t.challenge.as_mut())
                .filter(|c| c.to == addr),
            None => self.learned.get_mut(&addr).map(|l| &mut l.challenge),
        }
    }

    fn challenge(&self, addr: IpAddr) -> Option<&Challenge> {
        match self.addresses.get(&addr) {
            Some(t) => self
                .terminals
                .get(t)
                .and_then(|t| t.challenge.as_ref())
                .filter(|c| c.to == addr),
            None => self.learned.get(&addr).map(|l| &l.challenge),
        }
    }

    fn forget_challenge(&mut self, addr: IpAddr) {
        match self.addresses.get(&addr) {
            Some(t) => {
                if let Some(t) = self.terminals.get_mut(t) {
                    t.challenge = None;
                }
            }
            None => {
                self.learned.remove(&addr);
            }
        }
    }

    /// Ask the host at `to` to announce itself (from `from`, an address beyond the proxy).
    /// One solicit per address is out at a time: asking again while it is (a replayed
    /// announce, a flood of stale triggers) changes nothing, so nobody can keep replacing
    /// the challenge a terminal is answering.
    fn solicit(&mut self, now: Instant, to: IpAddr, from: IpAddr) -> Result<(), Error> {
        if self.challenge(to).is_some() {
            return Ok(());
        }
        let nonce = crate::crypto::random_array(&mut *self.rng);
        let challenge = Challenge {
            nonce,
            to,
            from,
            tries: 0,
            next: now,
        };
        match self.addresses.get(&to).copied() {
            Some(t) => {
                if let Some(t) = self.terminals.get_mut(&t) {
                    t.challenge = Some(challenge);
                }
            }
            None => {
                if self.learned.len() >= self.cfg.max_learned {
                    return Err(Error::CapacityExceeded {
                        what: "learned addresses",
                        bound: self.cfg.max_learned,
                    });
                }
                self.learned.insert(to, Learned { challenge });
            }
        }
        self.send_solicit(now, to)
    }

    fn send_solicit(&mut self, now: Instant, to: IpAddr) -> Result<(), Error> {
        let retry = self.cfg.retry;
        let bound = self.addresses.contains_key(&to);
        let Some(c) = self.challenge_mut(to) else {
            return Ok(());
        };
        if c.tries == HELD_DOWN {
            // The hold-down of a host that never answered is over: it may be learned anew.
            self.forget_challenge(to);
            return Ok(());
        }
        c.tries += 1;
        let c2 = c.clone();
        match retry.next(now, c2.tries) {
            Some(next) => c.next = next,
            // A delegated terminal may have messages waiting for its boot nonce: keep
            // asking, at the longest interval.
            None if bound => c.next = now + retry.max_interval,
            // A learned host that never answers is held down (no solicits) for a while,
            // so it is not asked again and again; this last solicit still goes out.
            None => {
                c.next = now + HOLD_DOWN;
                c.tries = HELD_DOWN;
            }
        }
        let m = Transfer::Solicit {
            challenge: c2.nonce,
        };
        // A solicit is in clear: its terminal id and key do not matter.
        let key = super::seal::DelegationKey::new([0; 32]);
        let payload = m.encode(0, 0, &key, &mut *self.rng)?;
        let packet = self.udp(
            SocketAddr::new(c2.from, transfer::PORT),
            SocketAddr::new(c2.to, transfer::PORT),
            &payload,
        )?;
        self.emit(self.cfg.terminals, packet)
    }

    // ------------------------------------------------------------------ Fig. 4

    fn on_terminal(&mut self, now: Instant, data: &[u8]) -> Result<(), Error> {
        let Ok(info) = ipsec::parse_packet(data) else {
            self.stats.malformed += 1;
            return Ok(());
        };
        let own = &self.cfg.own_ike;
        let verdict = judge::from_terminal(
            &self.spd,
            &info,
            data,
            ipsec::NAT_T_PORT,
            self.cfg.clear_start,
            |a| own.contains(&a),
        );
        // Address acquisition learns from what the policy lets through (S11 first).
        if verdict != FromTerminal::Drop(DropReason::Policy) {
            self.learn(now, info.src, info.dst)?;
        }
        match verdict {
            FromTerminal::Drop(r) => {
                self.count_drop(r);
                Ok(())
            }
            FromTerminal::Forward => {
                self.stats.forwarded_out += 1;
                self.emit(self.cfg.internet, data.to_vec())
            }
            FromTerminal::Transfer { from, start, end } => {
                let r = self.on_transfer(now, from, info.dst, &data[start..end]);
                if r.is_err() {
                    self.stats.transfer_refused += 1;
                }
                r
            }
            FromTerminal::ClearStart => {
                self.stats.clear_starts += 1;
                // S15: only a delegated terminal's packets start anything.
                let Some(terminal) = self.delegated(info.src) else {
                    self.stats.unknown_terminal_drops += 1;
                    return Ok(());
                };
                self.start(now, terminal, info.src, Selector::for_packet(&info), None)
            }
        }
    }

    /// Address acquisition (means 15): a new source address on the terminal side is
    /// recorded and asked to announce itself; it becomes a delegated terminal only by a
    /// sealed announce.
    fn learn(&mut self, now: Instant, src: IpAddr, dst: IpAddr) -> Result<(), Error> {
        if self.addresses.contains_key(&src) || self.learned.contains_key(&src) {
            return Ok(());
        }
        // Only a unicast host can be a terminal, and a solicit must come from a unicast
        // address (the proxy speaks with the address the host was talking to).
        if !unicast(src) || !unicast(dst) {
            return Ok(());
        }
        if self.learned.len() >= self.cfg.max_learned {
            return Ok(()); // the table is full: the host is not learned now
        }
        self.solicit(now, src, dst)
    }

    /// A key-transfer message from the terminal side, sent from `from` toward `beyond` (an
    /// address past the proxy: a solicit in answer goes out from there).
    fn on_transfer(
        &mut self,
        now: Instant,
        from: SocketAddr,
        beyond: IpAddr,
        payload: &[u8],
    ) -> Result<(), Error> {
        let env = Envelope::parse(payload)?;
        if !Transfer::from_terminal(env.msg_type) {
            return Err(TransferError::WrongDirection(env.msg_type).into());
        }
        let terminal = env.terminal;
        let secrets = self
            .store
            .secrets(terminal)
            .ok_or(TransferError::UnknownTerminal(terminal))?;
        let m = env.open(&secrets.delegation_key)?;
        if let Transfer::Announce(a) = m {
            return self.on_announce(now, terminal, from.ip(), beyond, env.seq, a);
        }
        // S15: the sender must be the terminal bound to this address.
        if self.delegated(from.ip()) != Some(terminal) {
            return Err(TransferError::AddressMismatch(terminal).into());
        }
        let Some(t) = self.terminals.get_mut(&terminal) else {
            return Err(TransferError::UnknownTerminal(terminal).into());
        };
        let fresh = t
            .boot
            .as_ref()
            .is_some_and(|b| m.boot().is_some_and(|mb| ct_eq(b, mb)));
        if !fresh {
            // The terminal may have restarted (a new boot nonce): ask it to announce.
            self.solicit(now, from.ip(), beyond)?;
            return Err(TransferError::StaleNonce.into());
        }
        match t.window.check(u64::from(env.seq)) {
            Ok(()) => {
                let _ = t.window.accept(u64::from(env.seq));
            }
            // A retransmission of what was handled (the terminal retries its trigger
            // until keys come): nothing to do again.
            Err(crate::error::ReplayKind::Duplicate) => {
                self.stats.duplicates += 1;
                return Ok(());
            }
            Err(_) => return Err(TransferError::Replayed(env.seq).into()),
        }
        match m {
            Transfer::Trigger(tr) => {
                // S15 also binds the selector to the sender: a terminal asks only for
                // its own traffic.
                if tr.selector.src.start() != from.ip() {
                    return Err(TransferError::BadSelector.into());
                }
                self.start(now, terminal, from.ip(), tr.selector, Some(tr.acquire))
            }
            Transfer::Ack(a) => self.on_ack(terminal, a.acked, a.outcome),
            other => Err(TransferError::WrongDirection(other.msg_type()).into()),
        }
    }

    fn on_announce(
        &mut self,
        now: Instant,
        terminal: u64,
        from: IpAddr,
        beyond: IpAddr,
        seq: u32,
        a: transfer::Announce,
    ) -> Result<(), Error> {
        // The address must be the sender's, and not another terminal's: a provisioned but
        // misbehaving terminal may not take over its neighbour's address.
        if !a.addresses.contains(&from) || self.addresses.get(&from).is_some_and(|t| *t != terminal)
        {
            return Err(TransferError::AddressMismatch(terminal).into());
        }
        let solicited = self
            .challenge(from)
            .zip(a.echo.as_ref())
            .is_some_and(|(c, e)| ct_eq(e, &c.nonce));
        if !solicited {
            // An unsolicited (or replayed) announce may not move the boot nonce: answer
            // it with a challenge (or leave the one that is out alone).
            self.solicit(now, from, beyond)?;
            return Err(TransferError::Unsolicited.into());
        }
        self.forget_challenge(from);
        self.bind(terminal, from)?;
        let window = ReplayWindow::new(self.cfg.replay_window)?;
        let Some(t) = self.terminals.get_mut(&terminal) else {
            return Ok(());
        };
        // The address it announced from is its address now, first of its family; bound
        // addresses it no longer announces are given up (it moved).
        t.addresses.retain(|x| *x != from);
        t.addresses.insert(0, from);
        let dropped: Vec<IpAddr> = t
            .addresses
            .iter()
            .copied()
            .filter(|x| !a.addresses.contains(x))
            .collect();
        t.addresses.retain(|x| a.addresses.contains(x));
        let rebooted = t.boot.is_some_and(|b| !ct_eq(&b, &a.boot));
        if t.boot != Some(a.boot) {
            t.window = window;
            // Messages sealed for an earlier boot can never be acknowledged.
            t.pushes.clear();
        }
        let _ = t.window.accept(u64::from(seq));
        t.boot = Some(a.boot);
        let waiting = core::mem::take(&mut t.waiting);
        for x in dropped {
            if self.addresses.get(&x) == Some(&terminal) {
                self.addresses.remove(&x);
            }
        }
        if rebooted {
            // The terminal lost every SA it held. Each one it may have used — acknowledged,
            // or sent and not acknowledged (the ack can be lost) — is rekeyed, never sent
            // again: its sequence numbers restarted, and the same keys would reuse AEAD
            // nonces. Imported SAs (no IKE SA of ours) are forgotten; it announces what it
            // still holds.
            let lost: Vec<(u32, Owner)> = self
                .sas
                .values()
                .filter(|s| s.terminal == terminal)
                .filter(|s| matches!(s.state, SaState::Pending | SaState::InUse))
                .map(|s| (s.child.spi_in, s.owner))
                .collect();
            for (spi, owner) in lost {
                if owner == Owner::Imported {
                    self.sas.remove(&(terminal, spi));
                } else if let Some(s) = self.sas.get_mut(&(terminal, spi)) {
                    // Used, as far as the proxy can tell.
                    s.state = SaState::InUse;
                }
            }
        }
        // ¶0012: SAs the terminal holds by other means enter the SA store, at most
        // `transfer::MAX_HELD` per terminal, never over an SA of ours.
        let imported = self
            .sas
            .values()
            .filter(|s| s.terminal == terminal && s.owner == Owner::Imported)
            .count();
        for sa in a
            .held
            .into_iter()
            .take(transfer::MAX_HELD.saturating_sub(imported))
        {
            if self.sas.len() >= self.cfg.max_sas || self.sas.contains_key(&(terminal, sa.spi_in)) {
                continue;
            }
            let peer = peer_of(&sa, None).unwrap_or(from);
            self.sas.insert(
                (terminal, sa.spi_in),
                StoredSa {
                    terminal,
                    peer,
                    owner: Owner::Imported,
                    child: sa,
                    stored_at: now,
                    state: SaState::InUse,
                },
            );
        }
        // Notices from here on are best effort: the binding above stands either way.
        let mut r = self.event(ProxyEvent::TerminalBound {
            terminal,
            address: from,
            rebooted,
        });
        if rebooted {
            let lost: Vec<u32> = self
                .sas
                .values()
                .filter(|s| s.terminal == terminal && s.state == SaState::InUse)
                .filter(|s| s.owner != Owner::Imported)
                .map(|s| s.child.spi_in)
                .collect();
            for spi in lost {
                r = r.and(self.rekey(now, terminal, spi));
            }
        }
        for (peer, m) in waiting {
            let what = match &m {
                Transfer::Install(i) => PushKind::Install(i.child.spi_in),
                Transfer::Delete(_) => PushKind::Delete,
                _ => PushKind::Failure,
            };
            r = r.and(self.send_to_terminal(now, terminal, peer, m, what));
        }
        r
    }

    fn on_ack(&mut self, terminal: u64, acked: u32, outcome: AckOutcome) -> Result<(), Error> {
        let Some(t) = self.terminals.get_mut(&terminal) else {
            return Ok(());
        };
        let Some(i) = t.pushes.iter().position(|p| p.seq == acked) else {
            return Ok(()); // a late duplicate: already done
        };
        let p = t.pushes.remove(i);
        if let PushKind::Install(spi_in) = p.what
            && let Some(s) = self.sas.get_mut(&(terminal, spi_in))
        {
            s.state = match (s.state, outcome) {
                (SaState::Pending, AckOutcome::Done) => SaState::InUse,
                (SaState::Pending, AckOutcome::Refused) => SaState::Refused,
                // A rekey or a replacement under way stays so: the ack only says the
                // terminal has (or refused) the keys.
                (other, _) => other,
            };
            let e = match outcome {
                AckOutcome::Done => ProxyEvent::KeysAcknowledged { terminal, spi_in },
                AckOutcome::Refused => ProxyEvent::InstallRefused { terminal, spi_in },
            };
            self.event(e)?;
        }
        Ok(())
    }

    /// S16-S19 for a start request of `terminal` (at `addr`) for `selector`.
    fn start(
        &mut self,
        now: Instant,
        terminal: u64,
        addr: IpAddr,
        selector: Selector,
        acquire: Option<u32>,
    ) -> Result<(), Error> {
        let peer = selector.dst.start();
        // S16: a valid stored SA toward this peer that covers the packet?
        let found = self
            .sas
            .values()
            .find(|s| {
                s.terminal == terminal
                    && s.peer == peer
                    && s.valid(now)
                    && matches!(
                        s.state,
                        SaState::Pending | SaState::InUse | SaState::Rekeying
                    )
                    && s.child.covers_selector(&selector)
            })
            .map(|s| (s.child.spi_in, s.state));
        match found {
            // Not acknowledged yet: the same message again (never new keys for it).
            Some((spi, SaState::Pending)) => {
                return self.push_install(now, terminal, spi, None, acquire, true);
            }
            // Used and asked for again: the terminal lost it; rekey, never re-push.
            Some((spi, SaState::InUse)) => return self.rekey(now, terminal, spi),
            // A rekey is on its way.
            Some(_) => return Ok(()),
            None => {}
        }
        // A negotiation toward this peer already running: wait for it.
        if let Some(n) = self
            .terminals
            .get_mut(&terminal)
            .and_then(|t| t.initiators.get_mut(&peer))
            && !n.established
        {
            if let Some(a) = acquire
                && !n.acquires.contains(&a)
                && n.acquires.len() < 16
            {
                n.acquires.push(a);
            }
            return Ok(());
        }
        // S17: negotiate as the terminal, from its address.
        let running_all: usize = self
            .terminals
            .values()
            .map(|t| t.initiators.values().filter(|n| !n.established).count())
            .sum();
        let running_here = self.terminals.get(&terminal).map_or(0, |t| {
            t.initiators.values().filter(|n| !n.established).count()
        });
        if running_all >= self.cfg.max_negotiations
            || running_here >= self.cfg.max_negotiations_per_terminal
        {
            if let Some(a) = acquire {
                self.tell_failure(now, terminal, peer, a, FailureReason::Busy)?;
            }
            return Err(Error::CapacityExceeded {
                what: "negotiations",
                bound: if running_here >= self.cfg.max_negotiations_per_terminal {
                    self.cfg.max_negotiations_per_terminal
                } else {
                    self.cfg.max_negotiations
                },
            });
        }
        let Some(secrets) = self.store.secrets(terminal) else {
            return Err(InlineError::StoreUnavailable.into());
        };
        let mut ike = secrets.ike;
        ike.ts_local = vec![TrafficSelector::host(addr)];
        ike.ts_remote = vec![TrafficSelector::host(peer)];
        let rng = crate::crypto::child_rng(&mut self.rng);
        let mut initiator = Initiator::new(
            InitiatorConfig {
                ike,
                local: SocketAddr::new(addr, transfer::PORT),
                remote: SocketAddr::new(peer, transfer::PORT),
            },
            rng,
        )?;
        initiator.start(now)?;
        // A dead negotiation toward the same peer (its IKE SA gone) is replaced.
        if let Some(t) = self.terminals.get_mut(&terminal) {
            t.initiators.insert(
                peer,
                Negotiation {
                    ike: Box::new(initiator),
                    acquires: acquire.into_iter().collect(),
                    established: false,
                },
            );
        }
        self.stats.negotiations += 1;
        self.event(ProxyEvent::Negotiating {
            terminal,
            peer,
            initiator: true,
        })?;
        self.drain_engine(now, terminal, Engine::Initiator(peer), Some(peer))
            .map(|_| ())
    }

    /// Rekey a stored SA (CREATE_CHILD_SA under its IKE SA); the new SA is pushed with
    /// `replaces`, the old one deleted when the exchange ends.
    fn rekey(&mut self, now: Instant, terminal: u64, spi_in: u32) -> Result<(), Error> {
        let Some(s) = self.sas.get_mut(&(terminal, spi_in)) else {
            return Ok(());
        };
        if !matches!(s.state, SaState::Pending | SaState::InUse) {
            return Ok(());
        }
        let owner = s.owner;
        let r = match owner {
            Owner::Responder(id) => self
                .terminals
                .get_mut(&terminal)
                .and_then(|t| t.responder.as_mut())
                .map(|r| r.rekey_child(now, id)),
            Owner::Initiator(p) => self
                .terminals
                .get_mut(&terminal)
                .and_then(|t| t.initiators.get_mut(&p))
                .map(|n| n.ike.rekey_child(now)),
            Owner::Imported => None,
        };
        match (r, owner.engine()) {
            (Some(Ok(())), Some(engine)) => {
                if let Some(s) = self.sas.get_mut(&(terminal, spi_in)) {
                    s.state = SaState::Rekeying;
                }
                self.event(ProxyEvent::Rekeying { terminal, spi_in })?;
                self.drain_engine(now, terminal, engine, None).map(|_| ())
            }
            // No IKE SA to rekey under (an imported SA, or its IKE SA is gone): the SA
            // goes, and the next start request negotiates afresh.
            _ => self.remove_sa(now, terminal, spi_in),
        }
    }
}

impl<S: SecureStore> InlineProxy<S> {
    /// A management stream arrived: run the channel on it as server, if management is on
    /// and a session is free.
    fn management_open(&mut self, now: Instant, id: StreamId) -> Result<(), Error> {
        let Some(m) = &self.cfg.management else {
            self.outbox.push(Output::StreamClose { id })?;
            return Err(InlineError::UnsupportedInput.into());
        };
        if self.sessions.len() >= m.max_sessions {
            let bound = m.max_sessions;
            self.outbox.push(Output::StreamClose { id })?;
            return Err(Error::CapacityExceeded {
                what: "management sessions",
                bound,
            });
        }
        let conn = Connection::server(m.channel.clone(), now);
        self.sessions.insert(id, SecureStream::new(id, conn, now));
        Ok(())
    }

    fn management_data(&mut self, now: Instant, id: StreamId, data: &[u8]) -> Result<(), Error> {
        let Some(s) = self.sessions.get_mut(&id) else {
            return Err(Error::UnknownStream(id));
        };
        let mut requests = Vec::new();
        let fed = s.feed(now, data, &mut *self.rng, &mut self.outbox, &mut requests);
        for r in requests {
            self.management_request(now, id, &r)?;
        }
        if self.sessions.get(&id).is_some_and(|s| s.is_closed()) {
            self.sessions.remove(&id);
        }
        fed
    }

    /// Carry out one request if the channel authenticated its sender; answer it.
    fn management_request(&mut self, now: Instant, id: StreamId, msg: &[u8]) -> Result<(), Error> {
        let Some(peer) = self
            .sessions
            .get(&id)
            .map(|s| s.connection().peer().clone())
        else {
            return Ok(());
        };
        let (req, op) = match ManagementOp::decode(msg) {
            Ok(x) => x,
            Err(e) => {
                self.stats.management_refused += 1;
                return Err(e.into());
            }
        };
        let outcome = if peer == PeerIdentity::Anonymous {
            self.stats.management_refused += 1;
            self.event(ProxyEvent::ManagementRefused)?;
            Outcome::NotAuthenticated
        } else {
            let done = self.apply_management(now, &op).is_ok();
            self.event(ProxyEvent::ManagementChange { by: peer, op, done })?;
            if done { Outcome::Done } else { Outcome::Failed }
        };
        let answer = manage::encode_answer(req, outcome)?;
        if let Some(s) = self.sessions.get_mut(&id) {
            s.send(&answer, &mut self.outbox)?;
        }
        Ok(())
    }

    fn apply_management(&mut self, now: Instant, op: &ManagementOp) -> Result<(), Error> {
        match op {
            ManagementOp::AddPolicy(p) => self.spd.push(*p).map(|_| ()).map_err(Error::from),
            ManagementOp::ClearPolicy => {
                self.spd.clear();
                Ok(())
            }
            ManagementOp::SetDefault(a) => {
                self.spd.set_default_action(*a);
                Ok(())
            }
            ManagementOp::Bind { terminal, address } => {
                if !self.store.has(*terminal) {
                    return Err(InlineError::UnknownTerminal(*terminal).into());
                }
                self.bind(*terminal, *address)
            }
            ManagementOp::Unbind { terminal } => {
                self.flush(now, *terminal)?;
                self.unbind(*terminal);
                Ok(())
            }
            ManagementOp::Flush { terminal } => self.flush(now, *terminal),
        }
    }

    /// Delete an IKE SA at the peer (its engine sends the INFORMATIONAL); errors are an
    /// IKE SA already gone or a full outbox, both of which leave nothing to undo.
    fn delete_ike(&mut self, now: Instant, terminal: u64, owner: Owner) {
        if let Some(t) = self.terminals.get_mut(&terminal) {
            let _ = match owner {
                Owner::Responder(id) => t.responder.as_mut().map(|r| r.delete_ike(now, id)),
                Owner::Initiator(p) => t.initiators.get_mut(&p).map(|n| n.ike.delete_ike(now)),
                Owner::Imported => None,
            };
        }
        if let Some(engine) = owner.engine() {
            let _ = self.drain_engine(now, terminal, engine, None);
        }
    }
}

/// How long a learned host that never answered a solicit is left alone.
const HOLD_DOWN: Duration = Duration::from_secs(60);
/// The tries count of a held-down challenge.
const HELD_DOWN: u32 = u32::MAX;

/// Whether an address can be a host's: not unspecified, multicast, broadcast or loopback.
fn unicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            !(v.is_unspecified() || v.is_multicast() || v.is_broadcast() || v.is_loopback())
        }
        IpAddr::V6(v) => !(v.is_unspecified() || v.is_multicast() || v.is_loopback()),
    }
}

/// The peer an SA is with, from the SA itself: the tunnel's far end, else the UDP
/// encapsulation's, else `hint` (the peer whose message made it), else the start of its
/// remote selector.
fn peer_of(child: &ChildSa, hint: Option<IpAddr>) -> Option<IpAddr> {
    match child.mode {
        ipsec::Mode::Tunnel { remote, .. } => Some(remote),
        ipsec::Mode::Transport => child
            .encap
            .map(|e| e.remote.ip())
            .or(hint)
            .or_else(|| child.remote_ts.first().map(|t| t.addrs.start())),
    }
}

/// Who owns a Child SA an engine reported, and the peer it is with.
fn owner_of(which: Engine, id: IkeSaId, hint: Option<IpAddr>, child: &ChildSa) -> (Owner, IpAddr) {
    match which {
        Engine::Initiator(p) => (Owner::Initiator(p), p),
        Engine::Responder => {
            let peer = peer_of(child, hint).unwrap_or(IpAddr::from([0u8; 4]));
            (Owner::Responder(id), peer)
        }
    }
}

fn set_boot(m: &mut Transfer, boot: [u8; NONCE_LEN]) {
    match m {
        Transfer::Install(i) => i.boot = boot,
        Transfer::Delete(d) => d.boot = boot,
        Transfer::Failure(f) => f.boot = boot,
        _ => {}
    }
}

fn notify_reason(notify: u16) -> FailureReason {
    use crate::ikev2::consts::notify as n;
    match notify {
        n::NO_PROPOSAL_CHOSEN => FailureReason::NoProposal,
        n::TS_UNACCEPTABLE => FailureReason::TsUnacceptable,
        n::AUTHENTICATION_FAILED => FailureReason::AuthenticationFailed,
        _ => FailureReason::PeerError,
    }
}

fn failure_reason(r: FailReason) -> FailureReason {
    match r {
        FailReason::Timeout => FailureReason::Timeout,
        FailReason::AuthenticationFailed
        | FailReason::PeerAuth(_)
        | FailReason::IdentityMismatch => FailureReason::AuthenticationFailed,
        FailReason::PeerNotify(n) => notify_reason(n),
        FailReason::InvalidResponse | FailReason::TooManyRounds => FailureReason::PeerError,
    }
}

impl<S: SecureStore> TimerTable for InlineProxy<S> {
    type Timer = Timer;

    fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        let engines = self.terminals.iter().flat_map(|(id, t)| {
            let r = t
                .responder
                .as_ref()
                .and_then(|r| r.poll_timeout())
                .map(|at| (Timer::Responder(*id), at));
            let i = t.initiators.iter().filter_map(move |(p, n)| {
                n.ike
                    .poll_timeout()
                    .map(|at| (Timer::Initiator(*id, *p), at))
            });
            let p = t
                .pushes
                .iter()
                .map(move |p| (Timer::Push(*id, p.seq), p.next));
            r.into_iter().chain(i).chain(p)
        });
        let solicits = self
            .learned
            .iter()
            .map(|(a, l)| (Timer::Solicit(*a), l.challenge.next))
            .chain(
                self.terminals
                    .values()
                    .filter_map(|t| t.challenge.as_ref().map(|c| (Timer::Solicit(c.to), c.next))),
            );
        let lifetimes = self.sas.iter().flat_map(|((t, spi), s)| {
            let soft = s
                .soft_at()
                .filter(|_| {
                    matches!(s.state, SaState::Pending | SaState::InUse)
                        && s.owner != Owner::Imported
                })
                .map(|at| (Timer::Soft(*t, *spi), at));
            let hard = s.hard_at().map(|at| (Timer::Hard(*t, *spi), at));
            soft.into_iter().chain(hard)
        });
        let sessions = self
            .sessions
            .iter()
            .filter_map(|(id, s)| s.poll_timeout().map(|at| (Timer::Session(*id), at)));
        engines.chain(solicits).chain(lifetimes).chain(sessions)
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        // The errors below are a full outbox (the driver reads the loss report) or a
        // bound reached; the state stays consistent either way.
        match timer {
            Timer::Responder(t) => {
                if let Some(r) = self
                    .terminals
                    .get_mut(&t)
                    .and_then(|s| s.responder.as_mut())
                {
                    r.handle_timeout(now);
                }
                let _ = self.drain_engine(now, t, Engine::Responder, None);
            }
            Timer::Initiator(t, p) => {
                if let Some(n) = self
                    .terminals
                    .get_mut(&t)
                    .and_then(|s| s.initiators.get_mut(&p))
                {
                    n.ike.handle_timeout(now);
                }
                let _ = self.drain_engine(now, t, Engine::Initiator(p), None);
            }
            Timer::Push(t, seq) => {
                let Some(st) = self.terminals.get_mut(&t) else {
                    return;
                };
                let Some(i) = st.pushes.iter().position(|p| p.seq == seq) else {
                    return;
                };
                let p = &mut st.pushes[i];
                p.tries += 1;
                match self.cfg.retry.next(now, p.tries) {
                    Some(next) => {
                        p.next = next;
                        p.sent = now;
                        let packet = p.packet.clone();
                        let _ = self.emit(self.cfg.terminals, packet);
                    }
                    None => {
                        st.pushes.remove(i);
                        let _ = self.event(ProxyEvent::PushUnanswered { terminal: t, seq });
                    }
                }
            }
            Timer::Solicit(a) => {
                let _ = self.send_solicit(now, a);
            }
            Timer::Soft(t, spi) => {
                let _ = self.rekey(now, t, spi);
            }
            Timer::Session(id) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    let _ = s.handle_timeout(now, &mut self.outbox);
                    if s.is_closed() {
                        self.sessions.remove(&id);
                    }
                }
            }
            Timer::Hard(t, spi) => {
                let owner = self.sas.get(&(t, spi)).map(|s| s.owner);
                let _ = self.remove_sa(now, t, spi);
                // Expired means S6/S16 say no: the next start negotiates from scratch.
                if let Some(owner) = owner {
                    self.delete_ike(now, t, owner);
                }
            }
        }
    }
}

impl<S: SecureStore> Actor for InlineProxy<S> {
    type Event = ProxyEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::Packet { iface, data } if iface == self.cfg.internet => {
                self.on_internet(now, data)
            }
            Input::Packet { iface, data } if iface == self.cfg.terminals => {
                self.on_terminal(now, data)
            }
            Input::Packet { iface, .. } => Err(InlineError::UnknownInterface(iface.0).into()),
            Input::StreamAccepted { id, .. } => self.management_open(now, id),
            Input::StreamData { id, data } => self.management_data(now, id, data),
            Input::StreamClosed { id } => {
                if let Some(mut s) = self.sessions.remove(&id) {
                    let _ = s.stream_closed();
                }
                Ok(())
            }
            _ => Err(InlineError::UnsupportedInput.into()),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.run_timers(now);
    }

    fn poll_output(&mut self) -> Option<Output<ProxyEvent>> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer()
    }
}

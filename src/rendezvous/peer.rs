//! One device-to-device connection (S208–S209): hole punching, then the devices' own
//! secure channel over a [`Link`].
//!
//! # Finding a path
//!
//! Both devices punch at once (the issuer starts RTT/2 after sending `Sync`, the
//! acceptor when `Sync` arrives — libp2p DCUtR's timing), for up to three attempts:
//!
//! - every attempt: *plain* punches from the main socket to each of the peer's
//!   candidate addresses, `punches` times, `punch_interval` apart;
//! - attempts 2 and 3 add the *birthday* technique for NATs that map per destination
//!   (Tailscale's "hard NAT" method): each device opens `extra_sockets` more sockets that
//!   each punch the peer's reflexive address, and sprays `spray_probes` punches from its
//!   main socket at random ports of the peer's public IP. If the peer's mapping is
//!   endpoint-independent its main socket's spray arrives from the address the extra
//!   sockets punched, so a probe that hits one of their ports gets through any filter,
//!   and the reply comes back through the port the spray just opened (512 sockets ×
//!   1,024 probes over 64,512 ports: a miss has probability e^-8.1 ≈ 0.03% per attempt
//!   without loss, ≈0.1% at 10% loss; with Tailscale's 256 sockets it was ≈2%, which the
//!   loss statistics turned into failed requests).
//!
//! A punch says which local port it left from and where it was sent; the receiver answers
//! from the socket it arrived on to the address it came from ([`PunchAck`]), echoing both;
//! the puncher then knows that *its* path works both ways and tells the other side that
//! *its* acknowledgment arrived ([`PunchConfirm`]). Each device then sends on the path it
//! proved, and accepts authenticated datagrams on any of its sockets from any address —
//! so paths may be asymmetric, as NATs that map per destination make them.
//!
//! Every datagram carries a MAC under the session's link key, which only the two devices
//! hold; stray or forged datagrams are refused before they touch any state.
//!
//! # State
//!
//! A session is one [`Step`] at a time: punching (what the attempt in progress still has
//! to send), a proven path whose channel handshake runs, connected, closing (lingering to
//! deliver the close-notify), or done. The path, the link and the channel exist only in
//! the steps that have them. [`PeerSession::timers`] lists the deadlines read from the
//! step; the owner arms the earliest ([`PeerSession::poll_timeout`]) and
//! [`PeerSession::handle_timeout`] fires the due ones.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::keys::SessionKeys;
use super::link::{Link, LinkConfig};
use super::messages::{self, PEER_MAC_LEN, PeerDatagram, Punch, PunchAck, PunchConfirm};
use super::{PeerFailure, RendezvousError, RendezvousEvent};
use crate::channel::{ClientConfig, Connection, Psk, ServerConfig};
use crate::io::{Outbox, Output, Transmit};
use crate::wire::{Limits, Message};
use crate::{Error, Instant, UnixTime};

/// Hand a datagram from a peer to the session its header names. The issuer and the
/// acceptor both route device-to-device datagrams this way: the session id is the only
/// thing read before the session's MAC check, so a stray datagram costs one map lookup.
pub(crate) fn route_datagram<'s>(
    now: Instant,
    from: SocketAddr,
    to: SocketAddr,
    data: &[u8],
    session: impl FnOnce(u64) -> Option<&'s mut PeerSession>,
    rng: &mut dyn CryptoRng,
    outbox: &mut Outbox<RendezvousEvent>,
) -> Result<(), Error> {
    let msg = Message::decode(data, &Limits::default()).map_err(RendezvousError::Decode)?;
    match session(msg.session()) {
        Some(peer) => peer.handle_datagram(now, from, to, &msg, rng, outbox),
        None => Err(RendezvousError::UnknownSession(msg.session()).into()),
    }
}
/// Hole punching and direct-link parameters, shared by both devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// Hole-punching attempts (libp2p DCUtR makes 3). Default 3.
    pub attempts: u8,
    /// Plain punches per candidate per attempt. Default 10.
    pub punches: u32,
    /// Time between plain punches. Default 100 ms.
    pub punch_interval: Duration,
    /// How long an attempt waits for a path after its last probe. Default 2 s.
    pub attempt_timeout: Duration,
    /// Extra sockets opened from attempt 2 on (0 disables the birthday technique). Default 512.
    pub extra_sockets: u16,
    /// Probes sprayed at random ports from attempt 2 on. Default 1024.
    pub spray_probes: u32,
    /// Local ports the extra sockets are chosen from. Default 20,000–60,000.
    pub extra_ports: (u16, u16),
    /// Largest number of unacknowledged chunks on the direct link. Default 32.
    pub window: usize,
    /// Bytes the direct link buffers for sending. Default 256 KiB.
    pub max_buffer: usize,
    /// First retransmission timeout on the direct link. Default 300 ms.
    pub retransmit_timeout: Duration,
    /// Retransmissions before the direct link is declared dead. Default 8.
    pub max_retransmits: u32,
    /// Keepalive interval, chosen at random in this range for each keepalive (NAT
    /// bindings commonly expire after 30 s). Default 20–26 s.
    pub keepalive: (Duration, Duration),
    /// The direct link is dead after this long without a datagram from the peer. Default 80 s.
    pub idle_timeout: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            attempts: 3,
            punches: 10,
            punch_interval: Duration::from_millis(100),
            attempt_timeout: Duration::from_secs(2),
            extra_sockets: 512,
            spray_probes: 1024,
            extra_ports: (20_000, 60_000),
            window: 32,
            max_buffer: 256 * 1024,
            retransmit_timeout: Duration::from_millis(300),
            max_retransmits: 8,
            keepalive: (Duration::from_secs(20), Duration::from_secs(26)),
            idle_timeout: Duration::from_secs(80),
        }
    }
}

impl PeerConfig {
    fn link(&self) -> LinkConfig {
        LinkConfig {
            window: self.window.max(1),
            max_buffer: self.max_buffer,
            base_rto: self.retransmit_timeout,
            max_rto: Duration::from_secs(8),
            max_retries: self.max_retransmits,
            keepalive_min: self.keepalive.0,
            keepalive_max: self.keepalive.1,
            idle_timeout: self.idle_timeout,
        }
    }
}

/// Which device this session runs on. The acceptor is the channel client (it sends the
/// communication request, S208); the issuer the channel server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Issuer,
    Acceptor,
}

/// Where a session starts from: our socket, the peer's candidate addresses, and the
/// round-trip time measured through the server.
pub(crate) struct Endpoints {
    pub main: SocketAddr,
    pub candidates: Vec<SocketAddr>,
    pub rtt: Duration,
}

/// Extra sockets sent per timer tick, and the tick.
const EXTRA_BATCH: usize = 32;
const EXTRA_TICK: Duration = Duration::from_millis(1);
/// Probes sent per timer call at most (when the timer runs late).
const SPRAY_BATCH: u32 = 64;
/// How long a closing session lingers to deliver its close-notify.
const LINGER: Duration = Duration::from_secs(10);

/// The birthday technique's spray from the main socket (attempts 2 and 3).
#[derive(Debug)]
struct Spray {
    next: Instant,
    left: u32,
    interval: Duration,
}

/// Plain punches still to send in this attempt.
#[derive(Debug)]
struct Plain {
    next: Instant,
    left: u32,
}

/// The extra sockets' punches still to send in this attempt, a batch per tick.
#[derive(Debug)]
struct ExtraRound {
    next: Instant,
    sent: usize,
}

/// No path yet: what is scheduled, and what the attempt in progress still sends.
#[derive(Debug, Default)]
struct Punching {
    /// The next attempt and when it starts.
    start_at: Option<(Instant, u8)>,
    /// The attempt in progress gives up at this time (taken once by the owner).
    deadline: Option<Instant>,
    plain: Option<Plain>,
    extra: Option<ExtraRound>,
    spray: Option<Spray>,
}

impl Punching {
    /// When the next probe (or the next attempt's start) is due.
    fn next_probe(&self) -> Option<Instant> {
        [
            self.start_at.map(|(t, _)| t),
            self.plain.as_ref().map(|p| p.next),
            self.extra.as_ref().map(|e| e.next),
            self.spray.as_ref().map(|s| s.next),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A proven path: the link over it and the devices' channel on the link.
#[derive(Debug)]
struct Linked {
    /// The attempt that found the path (1–3).
    attempt: u8,
    link: Link,
    conn: Connection,
    /// Our punch confirmation, repeated until the peer is heard on the link.
    confirm: Option<Confirm>,
}

/// A punch confirmation that gates the peer's progress: when only our punches get
/// through, the peer learns its path from this one datagram, and the issuer (the
/// channel server) says nothing until the acceptor's first flight. So it is repeated,
/// with a doubling interval, until a link datagram from the peer shows it has a path
/// ([`CONFIRM_REPEATS`] at most).
#[derive(Debug)]
struct Confirm {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
    next: Instant,
    interval: Duration,
    left: u32,
}

/// Repeats of a punch confirmation at most (first after `punch_interval`, then doubling:
/// 100 ms … 3.2 s with the defaults, about the span of an attempt's timeout).
const CONFIRM_REPEATS: u32 = 6;

/// Where a session stands. Each step holds only what it needs.
// Boxed link state: a session table holds these, and most of its sessions punch.
enum Step {
    /// Looking for a path.
    Punching(Punching),
    /// A path is proven; the channel handshake runs over it.
    Handshake(Box<Linked>),
    /// The channel is up (reported once, on entering this step).
    Connected(Box<Linked>),
    /// Closing: the close-notify is delivered until `until`. `established` says whether
    /// the channel came up (the outcome reported to the server); `peer_closed` whether
    /// the peer's close-notify arrived (then `PeerClosed` was reported).
    Closing {
        linked: Box<Linked>,
        until: Instant,
        established: bool,
        peer_closed: bool,
    },
    /// Over: `Some(true)` if the channel had come up, `Some(false)` if the session
    /// failed, `None` if it closed before its handshake finished.
    Done { outcome: Option<bool> },
}

impl Step {
    fn linked_mut(&mut self) -> Option<&mut Linked> {
        match self {
            Step::Handshake(l) | Step::Connected(l) | Step::Closing { linked: l, .. } => Some(l),
            _ => None,
        }
    }

    fn linked(&self) -> Option<&Linked> {
        match self {
            Step::Handshake(l) | Step::Connected(l) | Step::Closing { linked: l, .. } => Some(l),
            _ => None,
        }
    }
}

/// Every deadline a session keeps. [`PeerSession::timers`] lists the armed ones, read
/// from its step: the owner's `poll_timeout` takes the earliest and its `handle_timeout`
/// calls [`PeerSession::handle_timeout`], which fires the due ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// A closing session is over.
    Linger,
    /// The next probe of the attempt in progress, or the next attempt's start.
    Probe,
    /// The attempt in progress ran out. The owner takes it
    /// ([`PeerSession::take_expired_attempt`]) and decides whether another one follows.
    AttemptExpired,
    /// The next repeat of our punch confirmation.
    Confirm,
    /// The channel's handshake deadline.
    Channel,
    /// The link's retransmission, keepalive and idle deadlines.
    Link,
}

pub(crate) struct PeerSession {
    pub session: u64,
    side: Side,
    cfg: PeerConfig,
    link_key: Zeroizing<[u8; 32]>,
    psk: Zeroizing<[u8; 32]>,
    anchor: UnixTime,
    main: SocketAddr,
    candidates: Vec<SocketAddr>,
    rtt: Duration,
    /// The latest attempt started (0 before the first).
    attempt: u8,
    /// The extra sockets, opened once (attempt 2) and kept: an acknowledgment of their
    /// punches may arrive after the path was found.
    extra: Vec<u16>,
    next_punch_id: u32,
    step: Step,
    limits: Limits,
}

impl core::fmt::Debug for PeerSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let path = self.step.linked().map(|l| (l.link.local, l.link.remote));
        f.debug_struct("PeerSession")
            .field("session", &self.session)
            .field("side", &self.side)
            .field("attempt", &self.attempt)
            .field("path", &path)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl PeerSession {
    pub(crate) fn new(
        session: u64,
        side: Side,
        keys: &SessionKeys,
        endpoints: Endpoints,
        cfg: PeerConfig,
        anchor: UnixTime,
    ) -> PeerSession {
        let Endpoints {
            main,
            candidates,
            rtt,
        } = endpoints;
        PeerSession {
            session,
            side,
            cfg,
            link_key: keys.link.clone(),
            psk: keys.psk.clone(),
            anchor,
            main,
            candidates,
            rtt,
            attempt: 0,
            extra: Vec::new(),
            next_punch_id: 0,
            step: Step::Punching(Punching::default()),
            limits: Limits::default(),
        }
    }

    /// The attempt in progress (0 before the first).
    pub(crate) fn attempt(&self) -> u8 {
        self.attempt
    }

    /// Whether a path has been proven.
    pub(crate) fn has_path(&self) -> bool {
        self.step.linked().is_some()
    }

    /// `Some(true)` once the channel is up, `Some(false)` once the session failed; `None`
    /// while undecided. Reported to the server once.
    pub(crate) fn outcome(&self) -> Option<bool> {
        match &self.step {
            Step::Punching(_) | Step::Handshake(_) => None,
            Step::Connected(_) => Some(true),
            Step::Closing { established, .. } => established.then_some(true),
            Step::Done { outcome } => *outcome,
        }
    }

    /// Whether the owner may drop this session.
    pub(crate) fn is_gone(&self) -> bool {
        matches!(self.step, Step::Done { .. })
    }

    /// Whether the session is connected and may carry data.
    pub(crate) fn is_connected(&self) -> bool {
        matches!(self.step, Step::Connected(_))
    }

    /// The extra sockets opened for the birthday technique.
    #[cfg(test)]
    pub(crate) fn extra_sockets(&self) -> usize {
        self.extra.len()
    }

    /// Start attempt `attempt` at `at` (the issuer waits RTT/2 after its Sync). Attempts
    /// only move forward: one not beyond the latest started or scheduled is ignored (so a
    /// repeated Sync cannot make the device punch and spray again). Returns whether it
    /// was scheduled.
    pub(crate) fn schedule_attempt(&mut self, at: Instant, attempt: u8) -> bool {
        let Step::Punching(p) = &mut self.step else {
            return false;
        };
        let latest = p
            .start_at
            .map_or(self.attempt, |(_, a)| a.max(self.attempt));
        if attempt <= latest {
            return false;
        }
        p.start_at = Some((at, attempt));
        true
    }

    /// The attempt whose time ran out without a path, if any (reported once).
    ///
    /// When a birthday attempt follows, the extra sockets are opened and punch the peer's
    /// reflexive address at once, not when that attempt starts: the start waits for the
    /// issuer's Sync, which the server relays over TCP, and a retransmission there can
    /// hold it back by seconds — long enough for the peer's whole spray to pass before
    /// our extra sockets had mappings for it to hit (tests/loss.rs found it at 10% loss).
    /// Punches are answered between attempts too, so a hit then still proves a path.
    pub(crate) fn take_expired_attempt(
        &mut self,
        now: Instant,
        rng: &mut dyn CryptoRng,
    ) -> Option<u8> {
        let Step::Punching(p) = &mut self.step else {
            return None;
        };
        if p.deadline.is_none_or(|d| now < d) {
            return None;
        }
        p.deadline = None;
        let birthday_next = self.attempt >= 1
            && self.attempt < self.cfg.attempts
            && self.cfg.extra_sockets > 0
            && !self.candidates.is_empty();
        if birthday_next {
            p.extra = Some(ExtraRound { next: now, sent: 0 });
            if self.extra.is_empty() {
                self.open_extra_sockets(rng);
            }
        }
        Some(self.attempt)
    }

    fn local(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.main.ip(), port)
    }

    fn is_ours(&self, port: u16) -> bool {
        port == self.main.port() || self.extra.contains(&port)
    }

    fn start_attempt(
        &mut self,
        now: Instant,
        attempt: u8,
        rng: &mut dyn CryptoRng,
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<(), Error> {
        if !matches!(self.step, Step::Punching(_)) {
            return Ok(());
        }
        self.attempt = attempt;
        let mut round = Punching {
            plain: (self.cfg.punches > 0).then_some(Plain {
                next: now,
                left: self.cfg.punches,
            }),
            ..Punching::default()
        };
        let plain_end = now + self.cfg.punch_interval.saturating_mul(self.cfg.punches);
        let mut end = plain_end;
        if attempt >= 2 && self.cfg.extra_sockets > 0 && !self.candidates.is_empty() {
            if self.extra.is_empty() {
                self.open_extra_sockets(rng);
            }
            round.extra = Some(ExtraRound { next: now, sent: 0 });
            let settle = self
                .rtt
                .clamp(Duration::from_millis(50), Duration::from_secs(1));
            // One probe per RTT/32, but the whole spray never takes longer than the plain
            // punches (1 s by default): the RTT a device measured over the server's streams
            // can be inflated by a TCP retransmission (1 s and more), and a spray paced by
            // it ran for up to 10 s, far past the peer's attempt, whose extra sockets then
            // saw only the first few hundred probes (issue 13, loss statistics).
            let longest = (plain_end - now) / self.cfg.spray_probes.max(1);
            let interval = (self.rtt / 32).min(longest).max(Duration::from_millis(1));
            let spray = Spray {
                next: now + settle,
                left: self.cfg.spray_probes,
                interval,
            };
            end = end.max(spray.next + interval.saturating_mul(self.cfg.spray_probes));
            round.spray = Some(spray);
        }
        round.deadline = Some(end + self.cfg.attempt_timeout);
        self.step = Step::Punching(round);
        self.run_probes(now, rng, outbox)
    }

    fn open_extra_sockets(&mut self, rng: &mut dyn CryptoRng) {
        let (lo, hi) = self.cfg.extra_ports;
        let (lo, hi) = (lo.min(hi), hi.max(lo));
        let span = u32::from(hi - lo) + 1;
        let want = usize::from(self.cfg.extra_sockets).min(span as usize - 1);
        // Bounded: at most `span` draws per socket even with collisions.
        let mut draws = 0u32;
        while self.extra.len() < want && draws < span.saturating_mul(4) {
            draws += 1;
            let port = lo + (rng.next_u32() % span) as u16;
            if port != self.main.port() && !self.extra.contains(&port) {
                self.extra.push(port);
            }
        }
    }

    fn punch(
        &mut self,
        from_port: u16,
        dest: SocketAddr,
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<(), Error> {
        self.next_punch_id = self.next_punch_id.wrapping_add(1);
        let data = Punch {
            session: self.session,
            punch_id: self.next_punch_id,
            from_port,
            dest,
        }
        .encode(&*self.link_key)?;
        outbox.push(Output::Transmit(Transmit {
            from: self.local(from_port),
            to: dest,
            data,
        }))
    }

    /// Send whatever probes are due.
    fn run_probes(
        &mut self,
        now: Instant,
        rng: &mut dyn CryptoRng,
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<(), Error> {
        let Step::Punching(p) = &mut self.step else {
            return Ok(());
        };
        if let Some((at, attempt)) = p.start_at
            && now >= at
        {
            p.start_at = None;
            return self.start_attempt(now, attempt, rng, outbox);
        }
        // Each kind of probe is taken out of the step while it is sent (sending needs the
        // session) and put back if some are left. Every due probe is attempted even after
        // the outbox refused one (each refusal is counted as lost), and the probes are put
        // back whatever happened, so a full outbox never stops the punching.
        let mut result = Ok(());
        let mut plain = p.plain.take_if(|pl| now >= pl.next);
        if let Some(pl) = plain.as_mut() {
            pl.left -= 1;
            let main = self.main.port();
            for dest in self.candidates.clone() {
                result = result.and(self.punch(main, dest, outbox));
            }
            pl.next = now + self.cfg.punch_interval;
        }
        let target = self.candidates.last().copied();
        let mut extra = match &mut self.step {
            Step::Punching(p) => p.extra.take_if(|e| now >= e.next),
            _ => None,
        };
        if let (Some(round), Some(target)) = (extra.as_mut(), target) {
            let end = (round.sent + EXTRA_BATCH).min(self.extra.len());
            for i in round.sent..end {
                let port = self.extra[i];
                result = result.and(self.punch(port, target, outbox));
            }
            round.sent = end;
            round.next = now + EXTRA_TICK;
        }
        let extra = extra.filter(|round| round.sent < self.extra.len());
        let mut spray = match &mut self.step {
            Step::Punching(p) => p.spray.take(),
            _ => None,
        };
        if let (Some(s), Some(target)) = (spray.as_mut(), target) {
            let mut sent = 0;
            while s.left > 0 && now >= s.next && sent < SPRAY_BATCH {
                let port = 1024 + (rng.next_u32() % (65_536 - 1024)) as u16;
                let main = self.main.port();
                result = result.and(self.punch(main, SocketAddr::new(target.ip(), port), outbox));
                s.left -= 1;
                s.next += s.interval;
                sent += 1;
            }
        }
        if let Step::Punching(p) = &mut self.step {
            if let Some(pl) = plain.filter(|pl| pl.left > 0) {
                p.plain = Some(pl);
            }
            if let Some(round) = extra {
                p.extra = Some(round);
            }
            if let Some(s) = spray.filter(|s| s.left > 0) {
                p.spray = Some(s);
            }
        }
        result
    }

    /// A datagram for this session arrived at `to` from `from`.
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        msg: &Message<'_>,
        rng: &mut dyn CryptoRng,
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<(), Error> {
        if !messages::verify_mac(msg, &*self.link_key, PEER_MAC_LEN) {
            return Err(RendezvousError::BadMac.into());
        }
        match PeerDatagram::decode(msg, &self.limits).map_err(messages::refusal)? {
            PeerDatagram::Punch(p) => {
                let data = PunchAck {
                    session: self.session,
                    punch_id: p.punch_id,
                    from_port: p.from_port,
                    dest: p.dest,
                    acker_port: to.port(),
                    ack_dest: from,
                }
                .encode(&*self.link_key)?;
                outbox.push(Output::Transmit(Transmit {
                    from: self.local(to.port()),
                    to: from,
                    data,
                }))?;
            }
            PeerDatagram::PunchAck(a) => {
                if self.is_ours(a.from_port) {
                    let path = (self.local(a.from_port), a.dest);
                    if let Some(linked) = self.step.linked_mut() {
                        // Linked already: one more proven path to fall back on.
                        linked.link.add_path(path.0, path.1);
                    }
                    let data = PunchConfirm {
                        session: self.session,
                        acker_port: a.acker_port,
                        ack_dest: a.ack_dest,
                    }
                    .encode(&*self.link_key)?;
                    outbox.push(Output::Transmit(Transmit {
                        from: path.0,
                        to: path.1,
                        data: data.clone(),
                    }))?;
                    let first = !self.has_path();
                    self.found_path(now, path, rng, outbox)?;
                    if first
                        && CONFIRM_REPEATS > 0
                        && let Step::Handshake(linked) = &mut self.step
                    {
                        let interval = self.cfg.punch_interval.max(Duration::from_millis(1));
                        linked.confirm = Some(Confirm {
                            from: path.0,
                            to: path.1,
                            data,
                            next: now + interval,
                            interval,
                            left: CONFIRM_REPEATS,
                        });
                    }
                }
            }
            PeerDatagram::PunchConfirm(c) => {
                if self.is_ours(c.acker_port) {
                    let path = (self.local(c.acker_port), c.ack_dest);
                    if let Some(linked) = self.step.linked_mut() {
                        linked.link.add_path(path.0, path.1);
                    }
                    self.found_path(now, path, rng, outbox)?;
                }
                // The peer sends its confirmations on the path it proved: where they come
                // in is a way back if ours stops working (see `Link::on_timeout`).
                let here = self.local(to.port());
                if let Some(linked) = self.step.linked_mut() {
                    linked.link.heard(here, from);
                }
            }
            PeerDatagram::PeerData(d) => {
                if matches!(self.step, Step::Punching(_)) {
                    // Our confirmation was lost but the peer proved its path: answer on
                    // the one this datagram came by.
                    self.found_path(now, (self.local(to.port()), from), rng, outbox)?;
                }
                let here = self.local(to.port());
                if let Some(linked) = self.step.linked_mut() {
                    // The peer has a path: it needs no more confirmations.
                    linked.confirm = None;
                    linked.link.heard(here, from);
                    let bytes = linked.link.on_data(now, &d);
                    if !bytes.is_empty() {
                        // A failure is recorded in the connection and reported by `pump`.
                        let _ = linked.conn.feed(now, &bytes, rng);
                    }
                }
                self.pump(now, outbox)?;
            }
        }
        Ok(())
    }

    fn found_path(
        &mut self,
        now: Instant,
        path: (SocketAddr, SocketAddr),
        rng: &mut dyn CryptoRng,
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<(), Error> {
        if !matches!(self.step, Step::Punching(_)) {
            return Ok(());
        }
        let link = Link::new(self.session, path.0, path.1, self.cfg.link(), now, rng);
        let psk = Psk::new(self.session.to_be_bytes().to_vec(), &*self.psk)?;
        let conn = match self.side {
            Side::Acceptor => {
                Connection::client(Arc::new(ClientConfig::with_psk(psk, self.anchor)), now, rng)?
            }
            Side::Issuer => {
                Connection::server(Arc::new(ServerConfig::with_psks([psk], self.anchor)?), now)
            }
        };
        self.step = Step::Handshake(Box::new(Linked {
            attempt: self.attempt.max(1),
            link,
            conn,
            confirm: None,
        }));
        self.pump(now, outbox)
    }

    /// Move from one step to the next with a function of the old one (which cannot fail,
    /// so no step is ever lost half-way).
    fn advance(&mut self, next: impl FnOnce(Step) -> Step) {
        let step = core::mem::replace(&mut self.step, Step::Done { outcome: None });
        self.step = next(step);
    }

    /// Move channel output onto the link and channel news into events.
    fn pump(&mut self, now: Instant, outbox: &mut Outbox<RendezvousEvent>) -> Result<(), Error> {
        let session = self.session;
        let Some(linked) = self.step.linked_mut() else {
            return Ok(());
        };
        let bytes = linked.conn.take_outgoing();
        if !bytes.is_empty() {
            linked.link.write(&bytes)?;
        }
        linked.link.flush(now, &*self.link_key, outbox)?;
        let up = linked.conn.is_established();
        let (local, remote, attempt) = (linked.link.local, linked.link.remote, linked.attempt);
        let newly_up = match &mut self.step {
            Step::Handshake(_) => up,
            // The channel finished its handshake while the session was closing.
            Step::Closing { established, .. } if up && !*established => {
                *established = true;
                true
            }
            _ => false,
        };
        if newly_up {
            self.advance(|s| match s {
                Step::Handshake(l) => Step::Connected(l),
                other => other,
            });
            outbox.event(RendezvousEvent::PeerConnected {
                session,
                local,
                remote,
                attempt,
            })?;
        }
        let (closing, established, close_reported) = match &self.step {
            Step::Closing {
                established,
                peer_closed,
                ..
            } => (true, *established, *peer_closed),
            Step::Connected(_) => (false, true, false),
            _ => (false, false, false),
        };
        let Some(linked) = self.step.linked_mut() else {
            return Ok(());
        };
        while let Some(data) = linked.conn.take_received() {
            outbox.event(RendezvousEvent::PeerData { session, data })?;
        }
        if let Some(error) = linked.conn.error().cloned() {
            if closing {
                // Failing after a close: nothing more to deliver.
                self.step = Step::Done {
                    outcome: established.then_some(true),
                };
                return Ok(());
            }
            return self.fail(PeerFailure::Channel(error), outbox);
        }
        if linked.conn.peer_closed() && !close_reported {
            if !linked.conn.is_closing() {
                linked.conn.close()?;
                let bytes = linked.conn.take_outgoing();
                linked.link.write(&bytes)?;
                linked.link.flush(now, &*self.link_key, outbox)?;
            }
            self.advance(|s| match s {
                Step::Handshake(linked) | Step::Connected(linked) => Step::Closing {
                    linked,
                    until: now + LINGER,
                    established,
                    peer_closed: true,
                },
                Step::Closing {
                    linked,
                    until,
                    established,
                    ..
                } => Step::Closing {
                    linked,
                    until,
                    established,
                    peer_closed: true,
                },
                other => other,
            });
            outbox.event(RendezvousEvent::PeerClosed { session })?;
        }
        if let Step::Closing {
            linked,
            established,
            peer_closed: true,
            ..
        } = &self.step
            && linked.conn.is_closing()
            && linked.link.buffered() == 0
        {
            // Both close-notifies are through: the session is over.
            self.step = Step::Done {
                outcome: established.then_some(true),
            };
        }
        Ok(())
    }

    /// End the session with a failure event.
    pub(crate) fn fail(
        &mut self,
        reason: PeerFailure,
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<(), Error> {
        if matches!(self.step, Step::Done { .. } | Step::Closing { .. }) {
            return Ok(());
        }
        self.step = Step::Done {
            outcome: Some(false),
        };
        outbox.event(RendezvousEvent::PeerFailed {
            session: self.session,
            reason,
        })
    }

    /// Send one application message to the peer.
    pub(crate) fn send(
        &mut self,
        now: Instant,
        data: &[u8],
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<(), Error> {
        let Step::Connected(linked) = &mut self.step else {
            return Err(RendezvousError::NotConnected.into());
        };
        // Refuse before the channel commits to a record the link cannot take.
        if linked.link.buffered() + data.len() + 64 > self.cfg.max_buffer {
            return Err(Error::CapacityExceeded {
                what: "peer link send buffer",
                bound: self.cfg.max_buffer,
            });
        }
        linked.conn.send(data)?;
        self.pump(now, outbox)
    }

    /// Close gracefully: the channel's close-notify goes out; the session lingers until
    /// the peer answers or [`LINGER`] passes.
    pub(crate) fn close(
        &mut self,
        now: Instant,
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<(), Error> {
        let Step::Connected(linked) = &mut self.step else {
            return Err(RendezvousError::NotConnected.into());
        };
        linked.conn.close()?;
        self.advance(|s| match s {
            Step::Connected(linked) => Step::Closing {
                linked,
                until: now + LINGER,
                established: true,
                peer_closed: false,
            },
            other => other,
        });
        self.pump(now, outbox)
    }

    /// The armed deadlines, read from the step, in the order they fire.
    fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        let (linger, punching) = match &self.step {
            Step::Closing { until, .. } => (Some(*until), None),
            Step::Punching(p) => (None, Some(p)),
            _ => (None, None),
        };
        let linked = self.step.linked();
        let confirm = match &self.step {
            Step::Handshake(l) => l.confirm.as_ref().map(|c| c.next),
            _ => None,
        };
        [
            linger.map(|t| (Timer::Linger, t)),
            punching
                .and_then(Punching::next_probe)
                .map(|t| (Timer::Probe, t)),
            punching
                .and_then(|p| p.deadline)
                .map(|t| (Timer::AttemptExpired, t)),
            confirm.map(|t| (Timer::Confirm, t)),
            linked
                .and_then(|l| l.conn.poll_timeout())
                .map(|t| (Timer::Channel, t)),
            linked.map(|l| (Timer::Link, l.link.next_timeout())),
        ]
        .into_iter()
        .flatten()
    }

    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        rng: &mut dyn CryptoRng,
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<(), Error> {
        // Every due timer runs and the pump follows even after the outbox refused an
        // output (counted as lost); the first error is returned after all of them.
        let mut result = Ok(());
        for timer in crate::time::due(self.timers(), now) {
            match timer {
                Timer::Linger => {
                    if let Step::Closing { established, .. } = self.step {
                        self.step = Step::Done {
                            outcome: established.then_some(true),
                        };
                    }
                    return result;
                }
                Timer::Probe => result = result.and(self.run_probes(now, rng, outbox)),
                // The owner takes it after this call (`take_expired_attempt`).
                Timer::AttemptExpired => {}
                Timer::Confirm => {
                    if let Step::Handshake(linked) = &mut self.step
                        && let Some(c) = linked.confirm.as_mut()
                    {
                        // Refused by a full outbox, the repeat is counted as lost and the
                        // next one is due as if it had been sent.
                        result = result.and(outbox.push(Output::Transmit(Transmit {
                            from: c.from,
                            to: c.to,
                            data: c.data.clone(),
                        })));
                        c.left -= 1;
                        c.interval = c.interval.saturating_mul(2);
                        c.next = now + c.interval;
                        if c.left == 0 {
                            linked.confirm = None;
                        }
                    }
                }
                Timer::Channel => {
                    if let Some(linked) = self.step.linked_mut() {
                        // A handshake timeout is recorded in the connection and reported
                        // by `pump`.
                        let _ = linked.conn.handle_timeout(now);
                    }
                }
                Timer::Link => {
                    let dead = match self.step.linked_mut() {
                        Some(linked) => {
                            match linked.link.on_timeout(now, &*self.link_key, rng, outbox) {
                                Ok(verdict) => verdict.is_err(),
                                Err(e) => {
                                    result = Err(e);
                                    false
                                }
                            }
                        }
                        None => false,
                    };
                    if dead {
                        if let Step::Closing { established, .. } = self.step {
                            self.step = Step::Done {
                                outcome: established.then_some(true),
                            };
                            return result;
                        }
                        return result.and(self.fail(PeerFailure::Timeout, outbox));
                    }
                }
            }
        }
        result.and(self.pump(now, outbox))
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        crate::time::earliest(self.timers())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rendezvous::DeviceId;
    use crate::rendezvous::keys::{Share, TranscriptInput};
    use crate::rendezvous::messages::PUNCH;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn keys(rng: &mut ChaCha20Rng) -> (SessionKeys, SessionKeys) {
        let i = Share::generate(rng);
        let a = Share::generate(rng);
        let t = TranscriptInput {
            request: 1,
            device: DeviceId(2),
            issuer_share: &i.public,
            issuer_random: &i.random,
            acceptor_share: &a.public,
            acceptor_random: &a.random,
        }
        .hash();
        (
            SessionKeys::derive(i.key_pair, &a.public, t).unwrap(),
            SessionKeys::derive(a.key_pair, &i.public, t).unwrap(),
        )
    }

    /// Two sessions on open addresses (no NAT): deliver each transmit to the session
    /// whose socket it is addressed to, if `pass` allows.
    struct Net {
        issuer: PeerSession,
        acceptor: PeerSession,
        out_i: Outbox<RendezvousEvent>,
        out_a: Outbox<RendezvousEvent>,
        rng: ChaCha20Rng,
        now: Instant,
        last_fired: Instant,
        events: Vec<RendezvousEvent>,
    }

    impl Net {
        fn new(seed: u64, cfg: PeerConfig) -> Net {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let (ki, ka) = keys(&mut rng);
            let i_addr: SocketAddr = "198.51.100.1:1600".parse().unwrap();
            let a_addr: SocketAddr = "203.0.113.9:2000".parse().unwrap();
            let anchor = UnixTime(1_800_000_000);
            let rtt = Duration::from_millis(20);
            Net {
                issuer: PeerSession::new(
                    1,
                    Side::Issuer,
                    &ki,
                    Endpoints {
                        main: i_addr,
                        candidates: alloc::vec![a_addr],
                        rtt,
                    },
                    cfg,
                    anchor,
                ),
                acceptor: PeerSession::new(
                    1,
                    Side::Acceptor,
                    &ka,
                    Endpoints {
                        main: a_addr,
                        candidates: alloc::vec![i_addr],
                        rtt,
                    },
                    cfg,
                    anchor,
                ),
                out_i: Outbox::new(8192),
                out_a: Outbox::new(8192),
                rng,
                now: Instant::from_secs(1),
                last_fired: Instant::ZERO,
                events: Vec::new(),
            }
        }

        fn run(&mut self, until: Instant, pass: &mut dyn FnMut(&Transmit) -> bool) {
            loop {
                let mut moved = false;
                for from_issuer in [true, false] {
                    let out = if from_issuer {
                        &mut self.out_i
                    } else {
                        &mut self.out_a
                    };
                    let mut batch = Vec::new();
                    while let Some(o) = out.pop() {
                        batch.push(o);
                    }
                    for o in batch {
                        moved = true;
                        match o {
                            Output::Transmit(t) => {
                                if !pass(&t) {
                                    continue;
                                }
                                let msg = Message::decode(&t.data, &Limits::default()).unwrap();
                                let (s, out) = if from_issuer {
                                    (&mut self.acceptor, &mut self.out_a)
                                } else {
                                    (&mut self.issuer, &mut self.out_i)
                                };
                                s.handle_datagram(self.now, t.from, t.to, &msg, &mut self.rng, out)
                                    .unwrap();
                            }
                            Output::Event(e) => self.events.push(e),
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
                if moved {
                    continue;
                }
                let next = [self.issuer.poll_timeout(), self.acceptor.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(t) if t <= until && t > self.last_fired => {
                        self.last_fired = t;
                        self.now = t.max(self.now);
                        self.issuer
                            .handle_timeout(self.now, &mut self.rng, &mut self.out_i)
                            .unwrap();
                        self.acceptor
                            .handle_timeout(self.now, &mut self.rng, &mut self.out_a)
                            .unwrap();
                    }
                    _ => return,
                }
            }
        }
    }

    #[test]
    fn plain_punching_finds_a_path_and_the_channel_carries_data() {
        let mut net = Net::new(1, PeerConfig::default());
        let t = net.now;
        net.issuer.schedule_attempt(t, 1);
        net.acceptor.schedule_attempt(t, 1);
        net.run(t + Duration::from_secs(1), &mut |_| true);
        assert!(net.issuer.is_connected() && net.acceptor.is_connected());
        assert!(
            net.events
                .iter()
                .any(|e| matches!(e, RendezvousEvent::PeerConnected { attempt: 1, .. }))
        );
        net.issuer
            .send(net.now, b"hello acceptor", &mut net.out_i)
            .unwrap();
        net.acceptor
            .send(net.now, &[7; 5000], &mut net.out_a)
            .unwrap();
        let t = net.now;
        net.run(t + Duration::from_secs(1), &mut |_| true);
        let data: Vec<_> = net
            .events
            .iter()
            .filter_map(|e| match e {
                RendezvousEvent::PeerData { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect();
        assert!(data.contains(&b"hello acceptor".to_vec()));
        assert!(data.contains(&alloc::vec![7; 5000]));
        net.acceptor.close(net.now, &mut net.out_a).unwrap();
        let t = net.now;
        net.run(t + Duration::from_secs(1), &mut |_| true);
        assert!(
            net.events
                .iter()
                .any(|e| matches!(e, RendezvousEvent::PeerClosed { .. }))
        );
        assert!(net.issuer.is_gone());
    }

    /// Issue 13 item 5: probes due while the outbox is full are each attempted (and
    /// counted as lost), and the punching carries on afterwards. Before, the first refused
    /// punch returned early with the probe rounds taken out of the step, and the side sent
    /// no further punch in that attempt.
    #[test]
    fn item_5_a_full_outbox_does_not_stop_the_punching() {
        let mut net = Net::new(3, PeerConfig::default());
        let t = net.now;
        net.issuer.schedule_attempt(t, 1);
        let mut full: Outbox<RendezvousEvent> = Outbox::new(1);
        full.push(Output::Event(RendezvousEvent::Refused {
            request: 0,
            reason: crate::rendezvous::RequestRefusal::Busy,
        }))
        .unwrap();
        // The attempt starts and its first two probe rounds fall due while nothing drains.
        for _ in 0..3 {
            let at = net.issuer.poll_timeout().unwrap();
            assert!(
                net.issuer
                    .handle_timeout(at, &mut net.rng, &mut full)
                    .is_err()
            );
            net.now = at;
        }
        // Then the driver drains again: the next probe round is due within the attempt
        // and puts punches on the wire.
        let at = net.issuer.poll_timeout().unwrap();
        assert!(at < t + Duration::from_secs(1), "next timer at {at:?}");
        net.issuer
            .handle_timeout(at, &mut net.rng, &mut net.out_i)
            .unwrap();
        let mut punches = 0;
        while let Some(o) = net.out_i.pop() {
            if matches!(o, Output::Transmit(_)) {
                punches += 1;
            }
        }
        assert!(punches > 0);
    }

    /// The birthday spray of a device whose measured RTT a TCP retransmission inflated
    /// (1 s) still fits in the plain punches' second, so it ends while the peer's attempt
    /// (and its extra sockets' answers) still runs; before, it was paced at RTT/32 = 10 ms
    /// and ran for over 10 s.
    #[test]
    fn a_spray_paced_by_an_inflated_rtt_ends_within_the_plain_punches() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let (ki, _) = keys(&mut rng);
        let cfg = PeerConfig::default();
        let mut peer = PeerSession::new(
            1,
            Side::Issuer,
            &ki,
            Endpoints {
                main: "198.51.100.1:1600".parse().unwrap(),
                candidates: alloc::vec!["203.0.113.9:2000".parse().unwrap()],
                rtt: Duration::from_secs(1),
            },
            cfg,
            UnixTime(1_800_000_000),
        );
        let now = Instant::from_secs(5);
        peer.schedule_attempt(now, 2);
        let mut out = Outbox::new(1 << 16);
        peer.handle_timeout(now, &mut rng, &mut out).unwrap();
        let Step::Punching(p) = &peer.step else {
            panic!("not punching");
        };
        let spray = p.spray.as_ref().expect("attempt 2 sprays");
        let plain = cfg.punch_interval.saturating_mul(cfg.punches);
        assert!(
            spray.interval.saturating_mul(cfg.spray_probes)
                <= plain.max(Duration::from_millis(u64::from(cfg.spray_probes)))
        );
        let deadline = p.deadline.expect("an attempt deadline");
        assert!(
            deadline
                <= now
                    + Duration::from_secs(1)
                    + plain
                    + Duration::from_millis(100)
                    + cfg.attempt_timeout
        );
    }

    #[test]
    fn forged_and_foreign_datagrams_are_refused() {
        let mut net = Net::new(2, PeerConfig::default());
        let punch = Punch {
            session: 1,
            punch_id: 1,
            from_port: 1600,
            dest: "203.0.113.9:2000".parse().unwrap(),
        }
        .encode(&[0; 32])
        .unwrap();
        let msg = Message::decode(&punch, &Limits::default()).unwrap();
        let from = "198.51.100.1:1600".parse().unwrap();
        let to = "203.0.113.9:2000".parse().unwrap();
        let err = net
            .acceptor
            .handle_datagram(net.now, from, to, &msg, &mut net.rng, &mut net.out_a)
            .unwrap_err();
        assert_eq!(err, Error::Rendezvous(RendezvousError::BadMac));
        assert!(net.out_a.is_empty(), "nothing answered");
    }

    #[test]
    fn without_any_path_every_attempt_expires() {
        let cfg = PeerConfig {
            extra_sockets: 8,
            spray_probes: 16,
            ..PeerConfig::default()
        };
        let mut net = Net::new(3, cfg);
        let t = net.now;
        net.issuer.schedule_attempt(t, 2);
        net.run(t + Duration::from_secs(30), &mut |_| false);
        assert!(!net.issuer.has_path());
        assert_eq!(net.issuer.extra_sockets(), 8);
        assert_eq!(
            net.issuer.take_expired_attempt(net.now, &mut net.rng),
            Some(2)
        );
        assert_eq!(net.issuer.take_expired_attempt(net.now, &mut net.rng), None);
        net.issuer
            .fail(PeerFailure::HolePunchFailed { attempts: 2 }, &mut net.out_i)
            .unwrap();
        assert_eq!(net.issuer.outcome(), Some(false));
        assert!(net.issuer.is_gone());
    }

    #[test]
    fn every_attempt_runs_once() {
        let cfg = PeerConfig {
            extra_sockets: 8,
            spray_probes: 16,
            ..PeerConfig::default()
        };
        let mut net = Net::new(5, cfg);
        let t = net.now;
        assert!(net.acceptor.schedule_attempt(t, 2));
        assert!(!net.acceptor.schedule_attempt(t, 2), "already scheduled");
        net.run(t + Duration::from_secs(30), &mut |_| false);
        assert_eq!(
            net.acceptor.take_expired_attempt(net.now, &mut net.rng),
            Some(2)
        );
        // Attempt 3 follows: the extra sockets punch the peer once now, ahead of its Sync.
        let t = net.now;
        net.acceptor
            .handle_timeout(t, &mut net.rng, &mut net.out_a)
            .unwrap();
        let mut sent = 0;
        net.run(t + Duration::from_secs(30), &mut |_| {
            sent += 1;
            false
        });
        assert_eq!(sent, 8);
        // A repeated Sync, or an older one, cannot make the device punch and spray again.
        let t = net.now;
        assert!(!net.acceptor.schedule_attempt(t, 2));
        assert!(!net.acceptor.schedule_attempt(t, 1));
        let mut sent = 0;
        net.run(t + Duration::from_secs(30), &mut |_| {
            sent += 1;
            false
        });
        assert_eq!(sent, 0);
        assert_eq!(net.acceptor.poll_timeout(), None);
        // The next attempt still runs.
        assert!(net.acceptor.schedule_attempt(net.now, 3));
        assert_eq!(net.acceptor.poll_timeout(), Some(net.now));
    }

    /// When an attempt fails and a birthday attempt follows, the extra sockets punch the
    /// peer's reflexive address at once, before the next Sync (which a TCP retransmission
    /// on the server's stream may hold back for seconds) starts that attempt; before,
    /// they were opened only when it started, and a peer that sprayed on time found no
    /// mapping of ours to hit.
    #[test]
    fn a_late_sync_finds_the_extra_sockets_already_punched() {
        let cfg = PeerConfig {
            extra_sockets: 8,
            spray_probes: 16,
            ..PeerConfig::default()
        };
        let mut net = Net::new(6, cfg);
        let t = net.now;
        assert!(net.acceptor.schedule_attempt(t, 1));
        net.run(t + Duration::from_secs(30), &mut |_| false);
        assert_eq!(
            net.acceptor.take_expired_attempt(net.now, &mut net.rng),
            Some(1)
        );
        assert_eq!(net.acceptor.extra_sockets(), 8);
        let mut from_extra = Vec::new();
        let t = net.now;
        net.acceptor
            .handle_timeout(t, &mut net.rng, &mut net.out_a)
            .unwrap();
        net.run(t + Duration::from_secs(1), &mut |d| {
            from_extra.push((d.from, d.to));
            false
        });
        assert_eq!(from_extra.len(), 8);
        let peer: SocketAddr = "198.51.100.1:1600".parse().unwrap();
        assert!(
            from_extra
                .iter()
                .all(|(from, to)| *to == peer && from.port() != 2000)
        );
    }

    #[test]
    fn a_one_way_path_is_enough_when_the_confirmation_travels_back() {
        // Only the acceptor's punches reach the issuer (its own punches are dropped), as
        // when only the issuer can be reached from outside.
        let mut net = Net::new(4, PeerConfig::default());
        let t = net.now;
        net.issuer.schedule_attempt(t, 1);
        net.acceptor.schedule_attempt(t, 1);
        let issuer_ip: core::net::IpAddr = "198.51.100.1".parse().unwrap();
        net.run(t + Duration::from_secs(2), &mut |tx| {
            !(tx.from.ip() == issuer_ip && tx.data[3] == PUNCH)
        });
        assert!(net.issuer.is_connected() && net.acceptor.is_connected());
    }

    #[test]
    fn lost_punch_confirmation_costs_no_connection() {
        // Issue 13 item 1: only the issuer's punches get through (the acceptor's are
        // dropped, as an address-and-port-dependent NAT in front of the issuer does),
        // and the first punch confirmation is lost. The issuer, the channel server,
        // waits for the acceptor's first flight, which needs the confirmation.
        let mut net = Net::new(6, PeerConfig::default());
        let t = net.now;
        net.issuer.schedule_attempt(t, 1);
        net.acceptor.schedule_attempt(t, 1);
        let acceptor_ip: core::net::IpAddr = "203.0.113.9".parse().unwrap();
        let mut confirms = 0;
        net.run(t + Duration::from_secs(2), &mut |tx| {
            if tx.from.ip() == acceptor_ip && tx.data[3] == PUNCH {
                return false;
            }
            if tx.data[3] == crate::rendezvous::messages::PUNCH_CONFIRM {
                confirms += 1;
                return confirms > 1;
            }
            true
        });
        assert!(confirms >= 1, "a confirmation was sent");
        assert!(net.issuer.is_connected() && net.acceptor.is_connected());
    }
}

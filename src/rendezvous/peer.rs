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
//!   and the reply comes back through the port the spray just opened (256 sockets ×
//!   1,024 probes over 64,512 ports: ≈98% per attempt).
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
#[allow(clippy::too_many_arguments)]
pub(crate) fn route_datagram<'s>(
    now: Instant,
    from: SocketAddr,
    to: SocketAddr,
    msg: &Message<'_>,
    session: impl FnOnce(u64) -> Option<&'s mut PeerSession>,
    rng: &mut dyn CryptoRng,
    outbox: &mut Outbox<RendezvousEvent>,
) -> Result<(), Error> {
    match session(msg.session()) {
        Some(peer) => peer.handle_datagram(now, from, to, msg, rng, outbox),
        None => Err(RendezvousError::UnknownSession(msg.session()).into()),
    }
}

/// Hole punching and direct-link parameters, shared by both devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// Hole-punching attempts (libp2p DCUtR makes 3).
    pub attempts: u8,
    /// Plain punches per candidate per attempt.
    pub punches: u32,
    /// Time between plain punches.
    pub punch_interval: Duration,
    /// How long an attempt waits for a path after its last probe.
    pub attempt_timeout: Duration,
    /// Extra sockets opened from attempt 2 on (0 disables the birthday technique).
    pub extra_sockets: u16,
    /// Probes sprayed at random ports from attempt 2 on.
    pub spray_probes: u32,
    /// Local ports the extra sockets are chosen from.
    pub extra_ports: (u16, u16),
    /// Largest number of unacknowledged chunks on the direct link.
    pub window: usize,
    /// Bytes the direct link buffers for sending.
    pub max_buffer: usize,
    /// First retransmission timeout on the direct link.
    pub retransmit_timeout: Duration,
    /// Retransmissions before the direct link is declared dead.
    pub max_retransmits: u32,
    /// Keepalive interval, chosen at random in this range for each keepalive (NAT
    /// bindings commonly expire after 30 s).
    pub keepalive: (Duration, Duration),
    /// The direct link is dead after this long without a datagram from the peer.
    pub idle_timeout: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            attempts: 3,
            punches: 10,
            punch_interval: Duration::from_millis(100),
            attempt_timeout: Duration::from_secs(2),
            extra_sockets: 256,
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

#[derive(Debug)]
struct Spray {
    next: Instant,
    left: u32,
    interval: Duration,
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
    attempt: u8,
    deadline: Option<Instant>,
    start_at: Option<(Instant, u8)>,
    punch_next: Option<Instant>,
    punches_left: u32,
    extra: Vec<u16>,
    extra_sent: usize,
    extra_next: Option<Instant>,
    spray: Option<Spray>,
    next_punch_id: u32,
    found: Option<(SocketAddr, SocketAddr)>,
    found_attempt: u8,
    link: Option<Link>,
    conn: Option<Connection>,
    announced: bool,
    outcome: Option<bool>,
    linger_until: Option<Instant>,
    closed_reported: bool,
    gone: bool,
    limits: Limits,
}

impl core::fmt::Debug for PeerSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PeerSession")
            .field("session", &self.session)
            .field("side", &self.side)
            .field("attempt", &self.attempt)
            .field("path", &self.found)
            .field("connected", &self.announced)
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
            deadline: None,
            start_at: None,
            punch_next: None,
            punches_left: 0,
            extra: Vec::new(),
            extra_sent: 0,
            extra_next: None,
            spray: None,
            next_punch_id: 0,
            found: None,
            found_attempt: 0,
            link: None,
            conn: None,
            announced: false,
            outcome: None,
            linger_until: None,
            closed_reported: false,
            gone: false,
            limits: Limits::default(),
        }
    }

    /// The attempt in progress (0 before the first).
    pub(crate) fn attempt(&self) -> u8 {
        self.attempt
    }

    /// Whether a path has been proven.
    #[cfg(test)]
    pub(crate) fn has_path(&self) -> bool {
        self.found.is_some()
    }

    /// `Some(true)` once the channel is up, `Some(false)` once the session failed; `None`
    /// while undecided. Reported to the server once.
    pub(crate) fn outcome(&self) -> Option<bool> {
        self.outcome
    }

    /// Whether the owner may drop this session.
    pub(crate) fn is_gone(&self) -> bool {
        self.gone
    }

    /// Whether the session is connected and may carry data.
    pub(crate) fn is_connected(&self) -> bool {
        self.announced && self.outcome == Some(true) && self.linger_until.is_none()
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
        let latest = self
            .start_at
            .map_or(self.attempt, |(_, a)| a.max(self.attempt));
        if attempt <= latest || self.found.is_some() || self.outcome.is_some() {
            return false;
        }
        self.start_at = Some((at, attempt));
        true
    }

    /// The attempt whose time ran out without a path, if any (reported once).
    pub(crate) fn take_expired_attempt(&mut self, now: Instant) -> Option<u8> {
        match self.deadline {
            Some(d) if now >= d && self.found.is_none() && self.outcome.is_none() => {
                self.deadline = None;
                Some(self.attempt)
            }
            _ => None,
        }
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
        if self.found.is_some() || self.outcome.is_some() {
            return Ok(());
        }
        self.attempt = attempt;
        self.punch_next = Some(now);
        self.punches_left = self.cfg.punches;
        let plain_end = now + self.cfg.punch_interval.saturating_mul(self.cfg.punches);
        let mut end = plain_end;
        let target = self.candidates.last().copied();
        if attempt >= 2 && self.cfg.extra_sockets > 0 && target.is_some() {
            if self.extra.is_empty() {
                self.open_extra_sockets(rng);
            }
            self.extra_sent = 0;
            self.extra_next = Some(now);
            let settle = self
                .rtt
                .clamp(Duration::from_millis(50), Duration::from_secs(1));
            let interval =
                (self.rtt / 32).clamp(Duration::from_millis(1), Duration::from_millis(10));
            let spray = Spray {
                next: now + settle,
                left: self.cfg.spray_probes,
                interval,
            };
            end = end.max(spray.next + interval.saturating_mul(self.cfg.spray_probes));
            self.spray = Some(spray);
        }
        self.deadline = Some(end + self.cfg.attempt_timeout);
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
        if self.found.is_some() || self.outcome.is_some() {
            return Ok(());
        }
        if let Some((at, attempt)) = self.start_at
            && now >= at
        {
            self.start_at = None;
            return self.start_attempt(now, attempt, rng, outbox);
        }
        if self.punch_next.is_some_and(|t| now >= t) && self.punches_left > 0 {
            self.punches_left -= 1;
            let main = self.main.port();
            for dest in self.candidates.clone() {
                self.punch(main, dest, outbox)?;
            }
            self.punch_next = (self.punches_left > 0).then(|| now + self.cfg.punch_interval);
        }
        if let (Some(t), Some(&target)) = (self.extra_next, self.candidates.last())
            && now >= t
        {
            let end = (self.extra_sent + EXTRA_BATCH).min(self.extra.len());
            for i in self.extra_sent..end {
                let port = self.extra[i];
                self.punch(port, target, outbox)?;
            }
            self.extra_sent = end;
            self.extra_next = (end < self.extra.len()).then(|| now + EXTRA_TICK);
        }
        if let (Some(mut spray), Some(&target)) = (self.spray.take(), self.candidates.last()) {
            let mut sent = 0;
            while spray.left > 0 && now >= spray.next && sent < SPRAY_BATCH {
                let port = 1024 + (rng.next_u32() % (65_536 - 1024)) as u16;
                let main = self.main.port();
                self.punch(main, SocketAddr::new(target.ip(), port), outbox)?;
                spray.left -= 1;
                spray.next += spray.interval;
                sent += 1;
            }
            if spray.left > 0 {
                self.spray = Some(spray);
            }
        }
        Ok(())
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
                    let data = PunchConfirm {
                        session: self.session,
                        acker_port: a.acker_port,
                        ack_dest: a.ack_dest,
                    }
                    .encode(&*self.link_key)?;
                    outbox.push(Output::Transmit(Transmit {
                        from: path.0,
                        to: path.1,
                        data,
                    }))?;
                    self.found_path(now, path, rng, outbox)?;
                }
            }
            PeerDatagram::PunchConfirm(c) => {
                if self.is_ours(c.acker_port) {
                    let path = (self.local(c.acker_port), c.ack_dest);
                    self.found_path(now, path, rng, outbox)?;
                }
            }
            PeerDatagram::PeerData(d) => {
                if self.found.is_none() {
                    // Our confirmation was lost but the peer proved its path: answer on
                    // the one this datagram came by.
                    self.found_path(now, (self.local(to.port()), from), rng, outbox)?;
                }
                let bytes = self
                    .link
                    .as_mut()
                    .map(|l| l.on_data(now, &d))
                    .unwrap_or_default();
                if let (false, Some(conn)) = (bytes.is_empty(), self.conn.as_mut()) {
                    // A failure is recorded in the connection and reported by `pump`.
                    let _ = conn.feed(now, &bytes, rng);
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
        if self.found.is_some() || self.outcome.is_some() {
            return Ok(());
        }
        self.found = Some(path);
        self.found_attempt = self.attempt.max(1);
        self.deadline = None;
        self.start_at = None;
        self.punch_next = None;
        self.extra_next = None;
        self.spray = None;
        self.link = Some(Link::new(
            self.session,
            path.0,
            path.1,
            self.cfg.link(),
            now,
            rng,
        ));
        let psk = Psk::new(self.session.to_be_bytes().to_vec(), &*self.psk)?;
        self.conn = Some(match self.side {
            Side::Acceptor => {
                Connection::client(Arc::new(ClientConfig::with_psk(psk, self.anchor)), now, rng)?
            }
            Side::Issuer => {
                Connection::server(Arc::new(ServerConfig::with_psks([psk], self.anchor)?), now)
            }
        });
        self.pump(now, outbox)
    }

    /// Move channel output onto the link and channel news into events.
    fn pump(&mut self, now: Instant, outbox: &mut Outbox<RendezvousEvent>) -> Result<(), Error> {
        let (Some(conn), Some(link)) = (self.conn.as_mut(), self.link.as_mut()) else {
            return Ok(());
        };
        let bytes = conn.take_outgoing();
        if !bytes.is_empty() {
            link.write(&bytes)?;
        }
        link.flush(now, &*self.link_key, outbox)?;
        if conn.is_established() && !self.announced {
            self.announced = true;
            self.outcome = Some(true);
            outbox.event(RendezvousEvent::PeerConnected {
                session: self.session,
                local: link.local,
                remote: link.remote,
                attempt: self.found_attempt,
            })?;
        }
        while let Some(data) = conn.take_received() {
            outbox.event(RendezvousEvent::PeerData {
                session: self.session,
                data,
            })?;
        }
        if let Some(error) = conn.error().cloned() {
            if self.linger_until.is_some() {
                // Failing after a close: nothing more to deliver.
                self.gone = true;
                return Ok(());
            }
            return self.fail(PeerFailure::Channel(error), outbox);
        }
        if conn.peer_closed() && !self.closed_reported {
            if !conn.is_closing() {
                conn.close()?;
                let bytes = conn.take_outgoing();
                link.write(&bytes)?;
                link.flush(now, &*self.link_key, outbox)?;
            }
            self.closed_reported = true;
            self.linger_until.get_or_insert(now + LINGER);
            outbox.event(RendezvousEvent::PeerClosed {
                session: self.session,
            })?;
        }
        if self.closed_reported && conn.is_closing() && link.buffered() == 0 {
            // Both close-notifies are through: the session is over.
            self.gone = true;
        }
        Ok(())
    }

    /// End the session with a failure event.
    pub(crate) fn fail(
        &mut self,
        reason: PeerFailure,
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<(), Error> {
        if self.gone || self.linger_until.is_some() {
            return Ok(());
        }
        self.outcome = Some(false);
        self.gone = true;
        self.deadline = None;
        self.start_at = None;
        self.spray = None;
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
        if !self.is_connected() {
            return Err(RendezvousError::NotConnected.into());
        }
        let (Some(conn), Some(link)) = (self.conn.as_mut(), self.link.as_ref()) else {
            return Err(RendezvousError::NotConnected.into());
        };
        // Refuse before the channel commits to a record the link cannot take.
        if link.buffered() + data.len() + 64 > self.cfg.max_buffer {
            return Err(Error::CapacityExceeded {
                what: "peer link send buffer",
                bound: self.cfg.max_buffer,
            });
        }
        conn.send(data)?;
        self.pump(now, outbox)
    }

    /// Close gracefully: the channel's close-notify goes out; the session lingers until
    /// the peer answers or [`LINGER`] passes.
    pub(crate) fn close(
        &mut self,
        now: Instant,
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<(), Error> {
        if !self.is_connected() {
            return Err(RendezvousError::NotConnected.into());
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.close()?;
        }
        self.linger_until = Some(now + LINGER);
        self.pump(now, outbox)
    }

    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        rng: &mut dyn CryptoRng,
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<(), Error> {
        if self.gone {
            return Ok(());
        }
        if self.linger_until.is_some_and(|t| now >= t) {
            self.gone = true;
            return Ok(());
        }
        self.run_probes(now, rng, outbox)?;
        if let Some(conn) = self.conn.as_mut() {
            // A handshake timeout is recorded in the connection and reported by `pump`.
            let _ = conn.handle_timeout(now);
        }
        if let Some(link) = self.link.as_mut()
            && link.on_timeout(now, &*self.link_key, rng, outbox)?.is_err()
        {
            if self.linger_until.is_some() {
                self.gone = true;
                return Ok(());
            }
            return self.fail(PeerFailure::Timeout, outbox);
        }
        self.pump(now, outbox)
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.gone {
            return None;
        }
        let mut at: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        consider(self.linger_until);
        if self.found.is_none() && self.outcome.is_none() {
            consider(self.deadline);
            consider(self.start_at.map(|(t, _)| t));
            consider(self.punch_next.filter(|_| self.punches_left > 0));
            consider(self.extra_next);
            consider(self.spray.as_ref().map(|s| s.next));
        }
        consider(self.conn.as_ref().and_then(Connection::poll_timeout));
        consider(self.link.as_ref().map(Link::next_timeout));
        at
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
        assert_eq!(net.issuer.take_expired_attempt(net.now), Some(2));
        assert_eq!(net.issuer.take_expired_attempt(net.now), None);
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
        assert_eq!(net.acceptor.take_expired_attempt(net.now), Some(2));
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
}

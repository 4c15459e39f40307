//! A small reliable, ordered byte pipe over datagrams: carries the devices' secure channel
//! (S209) across the hole-punched UDP path.
//!
//! Go-back-N: the byte stream is cut into chunks of at most [`MAX_PEER_PAYLOAD`] bytes,
//! numbered from 0; up to `window` chunks are in flight; every datagram carries the next
//! number the sender expects (a cumulative acknowledgment); the receiver holds chunks that
//! arrive after a gap (at most a window's worth) and acknowledges every chunk it gets, so a
//! gap makes the sender retransmit from the oldest unacknowledged chunk after the
//! retransmission timeout, which doubles up to a maximum. Idle links send keepalives every 20–26 s (with jitter) so both
//! NAT bindings stay open, and a link that hears nothing for `idle_timeout` is dead.
//!
//! The link needs no security of its own: every datagram carries a MAC under the session's
//! link key (checked before it gets here), and the payload is channel records, which are
//! encrypted and sequence-checked end to end.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use rand_core::CryptoRng;

use super::RendezvousEvent;
use super::messages::{MAX_PEER_PAYLOAD, PeerData};
use crate::io::{Outbox, Output, Transmit};
use crate::{Error, Instant};

/// Parameters of the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkConfig {
    pub window: usize,
    pub max_buffer: usize,
    pub base_rto: Duration,
    pub max_rto: Duration,
    pub max_retries: u32,
    pub keepalive_min: Duration,
    pub keepalive_max: Duration,
    pub idle_timeout: Duration,
}

/// The link is dead: retransmissions or the idle timeout ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkDead;

#[derive(Debug)]
pub(crate) struct Link {
    session: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    cfg: LinkConfig,
    una: u64,
    inflight: VecDeque<Vec<u8>>,
    queue: VecDeque<Vec<u8>>,
    buffered: usize,
    recv_next: u64,
    held: BTreeMap<u64, Vec<u8>>,
    rto: Duration,
    retry_at: Option<Instant>,
    retries: u32,
    ack_due: bool,
    last_rx: Instant,
    keepalive_every: Duration,
    keepalive_at: Instant,
    /// Where the peer's last authenticated datagram came in: our socket, its address.
    heard: Option<(SocketAddr, SocketAddr)>,
    /// Other paths proven by hole punching (our socket, the peer's address), tried in
    /// turn when retransmissions on the current one go unanswered.
    alternates: VecDeque<(SocketAddr, SocketAddr)>,
}

/// Proven paths a link remembers besides its current one.
const ALTERNATES: usize = 4;

impl Link {
    pub(crate) fn new(
        session: u64,
        local: SocketAddr,
        remote: SocketAddr,
        cfg: LinkConfig,
        now: Instant,
        rng: &mut dyn CryptoRng,
    ) -> Link {
        let keepalive_every = super::jitter(rng, cfg.keepalive_min, cfg.keepalive_max);
        Link {
            session,
            local,
            remote,
            cfg,
            una: 0,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            buffered: 0,
            recv_next: 0,
            held: BTreeMap::new(),
            rto: cfg.base_rto,
            retry_at: None,
            retries: 0,
            ack_due: false,
            last_rx: now,
            keepalive_every,
            keepalive_at: now + keepalive_every,
            heard: None,
            alternates: VecDeque::new(),
        }
    }

    /// Hole punching proved another path (our socket `local` to the peer's `remote`).
    pub(crate) fn add_path(&mut self, local: SocketAddr, remote: SocketAddr) {
        let path = (local, remote);
        if path == (self.local, self.remote) || self.alternates.contains(&path) {
            return;
        }
        if self.alternates.len() >= ALTERNATES {
            self.alternates.pop_front();
        }
        self.alternates.push_back(path);
    }

    /// Retransmissions on the current path went unanswered: move to the way the peer's
    /// datagrams come in, if that is another, or else to the next proven path.
    fn change_path(&mut self) {
        let current = (self.local, self.remote);
        let next = match self.heard {
            Some(heard) if heard != current => {
                self.alternates.retain(|p| *p != heard);
                Some(heard)
            }
            _ => self.alternates.pop_front(),
        };
        if let Some((local, remote)) = next {
            if self.alternates.len() >= ALTERNATES {
                self.alternates.pop_front();
            }
            self.alternates.push_back(current);
            self.local = local;
            self.remote = remote;
        }
    }

    /// The peer's authenticated datagram came to our socket `local` from `remote`.
    pub(crate) fn heard(&mut self, local: SocketAddr, remote: SocketAddr) {
        self.heard = Some((local, remote));
    }

    /// Queue bytes for sending. Refused without change past the buffer bound.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.buffered + bytes.len() > self.cfg.max_buffer {
            return Err(Error::CapacityExceeded {
                what: "peer link send buffer",
                bound: self.cfg.max_buffer,
            });
        }
        for chunk in bytes.chunks(MAX_PEER_PAYLOAD) {
            self.queue.push_back(chunk.to_vec());
        }
        self.buffered += bytes.len();
        Ok(())
    }

    /// Bytes queued or in flight.
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    /// A verified datagram arrived: take its acknowledgment, and return the bytes that are
    /// now in order (its payload, and any chunks held back waiting for it).
    pub(crate) fn on_data(&mut self, now: Instant, d: &PeerData) -> Vec<u8> {
        self.last_rx = now;
        let sent_end = self.una + self.inflight.len() as u64;
        if d.ack > self.una && d.ack <= sent_end {
            for _ in self.una..d.ack {
                if let Some(chunk) = self.inflight.pop_front() {
                    self.buffered -= chunk.len();
                }
            }
            self.una = d.ack;
            self.retries = 0;
            self.rto = self.cfg.base_rto;
            self.retry_at = (!self.inflight.is_empty()).then(|| now + self.rto);
        }
        let Some(seq) = d.seq else {
            return Vec::new();
        };
        // Every chunk is acknowledged: a duplicate or one after a gap says again what we
        // expect, so the sender retransmits from there.
        self.ack_due = true;
        let ahead = seq.wrapping_sub(self.recv_next);
        if seq < self.recv_next || ahead >= self.cfg.window as u64 {
            return Vec::new();
        }
        if seq > self.recv_next {
            // After a gap: hold it (at most a window's worth) until the gap fills.
            self.held.insert(seq, d.payload.clone());
            return Vec::new();
        }
        let mut out = d.payload.clone();
        self.recv_next += 1;
        while let Some(next) = self.held.remove(&self.recv_next) {
            out.extend_from_slice(&next);
            self.recv_next += 1;
        }
        out
    }

    fn transmit(
        &mut self,
        key: &[u8],
        seq: Option<u64>,
        payload: Vec<u8>,
        now: Instant,
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<(), Error> {
        let data = PeerData {
            session: self.session,
            seq,
            ack: self.recv_next,
            payload,
        }
        .encode(key)?;
        outbox.push(Output::Transmit(Transmit {
            from: self.local,
            to: self.remote,
            data,
        }))?;
        self.ack_due = false;
        self.keepalive_at = now + self.keepalive_every;
        Ok(())
    }

    /// Send what the window allows, and an acknowledgment if one is owed.
    pub(crate) fn flush(
        &mut self,
        now: Instant,
        key: &[u8],
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<(), Error> {
        while self.inflight.len() < self.cfg.window {
            let Some(chunk) = self.queue.pop_front() else {
                break;
            };
            let seq = self.una + self.inflight.len() as u64;
            self.inflight.push_back(chunk.clone());
            self.transmit(key, Some(seq), chunk, now, outbox)?;
        }
        if self.retry_at.is_none() && !self.inflight.is_empty() {
            self.retry_at = Some(now + self.rto);
        }
        if self.ack_due {
            self.transmit(key, None, Vec::new(), now, outbox)?;
        }
        Ok(())
    }

    /// Retransmit, keep alive, or declare the link dead.
    pub(crate) fn on_timeout(
        &mut self,
        now: Instant,
        key: &[u8],
        rng: &mut dyn CryptoRng,
        outbox: &mut Outbox<RendezvousEvent>,
    ) -> Result<Result<(), LinkDead>, Error> {
        if now >= self.last_rx + self.cfg.idle_timeout {
            return Ok(Err(LinkDead));
        }
        // Every chunk due is resent and the keepalive still goes out after the outbox
        // refused one (each refusal is counted as lost); the back-off moves on either way.
        let mut result = Ok(());
        if self.retry_at.is_some_and(|at| now >= at) {
            self.retries += 1;
            if self.retries > self.cfg.max_retries {
                return Ok(Err(LinkDead));
            }
            // Nothing we sent was acknowledged in time: try another way. First back the
            // way the peer's datagrams come (from the socket they arrive on to the address
            // they come from), else the next path hole punching proved. The path we proved
            // can stop working: a NAT that filters by address and port remembers a bounded
            // number of peers per binding, and a 1,024-probe spray pushes out the one our
            // path needs (tests/loss.rs found channel handshakes stalled on it).
            self.change_path();
            let resend: Vec<(u64, Vec<u8>)> = self
                .inflight
                .iter()
                .enumerate()
                .map(|(i, c)| (self.una + i as u64, c.clone()))
                .collect();
            for (seq, chunk) in resend {
                result = result.and(self.transmit(key, Some(seq), chunk, now, outbox));
            }
            self.rto = self.rto.saturating_mul(2).min(self.cfg.max_rto);
            self.retry_at = Some(now + self.rto);
        }
        if now >= self.keepalive_at {
            self.keepalive_every =
                super::jitter(rng, self.cfg.keepalive_min, self.cfg.keepalive_max);
            result = result.and(self.transmit(key, None, Vec::new(), now, outbox));
        }
        result.map(Ok)
    }

    /// When [`Link::on_timeout`] must next run.
    pub(crate) fn next_timeout(&self) -> Instant {
        let idle = self.last_rx + self.cfg.idle_timeout;
        let mut at = idle.min(self.keepalive_at);
        if let Some(r) = self.retry_at {
            at = at.min(r);
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Limits, Message};
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};

    const KEY: [u8; 32] = [1; 32];

    fn cfg() -> LinkConfig {
        LinkConfig {
            window: 4,
            max_buffer: 64 * 1024,
            base_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(2),
            max_retries: 6,
            keepalive_min: Duration::from_secs(20),
            keepalive_max: Duration::from_secs(26),
            idle_timeout: Duration::from_secs(80),
        }
    }

    fn pair(now: Instant, rng: &mut ChaCha20Rng) -> (Link, Link) {
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:2".parse().unwrap();
        (
            Link::new(9, a, b, cfg(), now, rng),
            Link::new(9, b, a, cfg(), now, rng),
        )
    }

    /// Deliver every queued datagram from `outbox` to `to`; `drop` decides losses.
    fn deliver(
        outbox: &mut Outbox<RendezvousEvent>,
        to: &mut Link,
        to_out: &mut Outbox<RendezvousEvent>,
        now: Instant,
        drop: &mut dyn FnMut() -> bool,
        got: &mut Vec<u8>,
    ) -> usize {
        let mut n = 0;
        while let Some(Output::Transmit(t)) = outbox.pop() {
            n += 1;
            if drop() {
                continue;
            }
            let msg = Message::decode(&t.data, &Limits::default()).unwrap();
            assert!(super::super::messages::verify_mac(&msg, &KEY, 16));
            let d = PeerData::decode(&msg, &Limits::default()).unwrap();
            got.extend_from_slice(&to.on_data(now, &d));
            to.flush(now, &KEY, to_out).unwrap();
        }
        n
    }

    #[test]
    fn bytes_arrive_in_order_despite_loss() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let mut now = Instant::from_secs(1);
        let (mut a, mut b) = pair(now, &mut rng);
        let (mut out_a, mut out_b) = (Outbox::new(4096), Outbox::new(4096));
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
        a.write(&data).unwrap();
        a.flush(now, &KEY, &mut out_a).unwrap();
        let (mut got_b, mut got_a) = (Vec::new(), Vec::new());
        // A third of a's datagrams are lost, at random.
        let mut loss_rng = ChaCha20Rng::seed_from_u64(40);
        let mut lossy = || loss_rng.next_u32() % 3 == 0;
        for _ in 0..400 {
            deliver(&mut out_a, &mut b, &mut out_b, now, &mut lossy, &mut got_b);
            deliver(
                &mut out_b,
                &mut a,
                &mut out_a,
                now,
                &mut || false,
                &mut got_a,
            );
            a.flush(now, &KEY, &mut out_a).unwrap();
            if got_b.len() == data.len() && a.buffered() == 0 {
                break;
            }
            now = a.next_timeout().min(b.next_timeout());
            assert_eq!(
                a.on_timeout(now, &KEY, &mut rng, &mut out_a).unwrap(),
                Ok(())
            );
            assert_eq!(
                b.on_timeout(now, &KEY, &mut rng, &mut out_b).unwrap(),
                Ok(())
            );
        }
        assert_eq!(got_b, data);
        assert_eq!(a.buffered(), 0);
        assert!(got_a.is_empty());
    }

    #[test]
    fn the_send_buffer_is_bounded() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let (mut a, _) = pair(Instant::ZERO, &mut rng);
        a.write(&alloc::vec![0; 64 * 1024]).unwrap();
        assert_eq!(
            a.write(&[0]),
            Err(Error::CapacityExceeded {
                what: "peer link send buffer",
                bound: 64 * 1024
            })
        );
        assert_eq!(a.buffered(), 64 * 1024);
    }

    #[test]
    fn a_silent_peer_kills_the_link() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let start = Instant::from_secs(1);
        let (mut a, _) = pair(start, &mut rng);
        let mut out = Outbox::new(4096);
        a.write(b"hello").unwrap();
        a.flush(start, &KEY, &mut out).unwrap();
        let mut now = start;
        let mut dead = false;
        for _ in 0..64 {
            now = a.next_timeout();
            if a.on_timeout(now, &KEY, &mut rng, &mut out)
                .unwrap()
                .is_err()
            {
                dead = true;
                break;
            }
            while out.pop().is_some() {}
        }
        assert!(dead);
        // Retransmissions (200 ms doubling to 2 s, 6 retries) ran out well before the
        // idle timeout.
        assert!(now - start < Duration::from_secs(20), "{:?}", now - start);
    }

    #[test]
    fn an_idle_link_keeps_alive_then_times_out() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let start = Instant::from_secs(1);
        let (mut a, _) = pair(start, &mut rng);
        let mut out = Outbox::new(64);
        let first = a.next_timeout();
        let gap = first - start;
        assert!(gap >= Duration::from_secs(20) && gap <= Duration::from_secs(26));
        assert_eq!(
            a.on_timeout(first, &KEY, &mut rng, &mut out).unwrap(),
            Ok(())
        );
        assert_eq!(out.len(), 1, "one keepalive");
        let end = start + Duration::from_secs(80);
        assert_eq!(
            a.on_timeout(end, &KEY, &mut rng, &mut out).unwrap(),
            Err(LinkDead)
        );
    }
    /// A link whose data goes unacknowledged while the peer's datagrams arrive by
    /// another way retransmits back that way (from the socket they arrive on to the
    /// address they come from); before, it kept sending on the path it had proved, which a
    /// NAT's filter had since forgotten, until the channel handshake timed out.
    #[test]
    fn unacknowledged_data_is_retransmitted_back_the_way_the_peer_is_heard() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let now = Instant::from_secs(1);
        let (mut a, _) = pair(now, &mut rng);
        let mut out = Outbox::default();
        a.write(b"client hello").unwrap();
        a.flush(now, &KEY, &mut out).unwrap();
        let Some(Output::Transmit(first)) = out.pop() else {
            panic!("nothing sent");
        };
        assert_eq!((first.from, first.to), (a.local, a.remote));
        // The peer is heard on an extra socket of ours, from another port of its address.
        let here: SocketAddr = "10.0.0.1:40001".parse().unwrap();
        let there: SocketAddr = "10.0.0.2:31063".parse().unwrap();
        a.heard(here, there);
        let due = a.next_timeout();
        assert!(a.on_timeout(due, &KEY, &mut rng, &mut out).unwrap().is_ok());
        let Some(Output::Transmit(again)) = out.pop() else {
            panic!("nothing retransmitted");
        };
        assert_eq!((again.from, again.to), (here, there));
        assert_eq!(again.data.len(), first.data.len());
    }
}

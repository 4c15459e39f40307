//! The closed-network link between an appliance and its proxy: datagrams with sequence
//! numbers, acknowledgements, bounded retransmission, a replay window, and — when a link
//! key is provisioned — an HMAC-SHA256 over every message.
//!
//! Every message except [`Ack`] carries a sequence number (per direction, from the
//! configured start) and is retransmitted, bit-identical, until acknowledged or out of
//! retries. The receiver acknowledges every authentic message, acts on it only the first
//! time (a 64-entry sliding window), and acknowledges repeats again so the sender stops.
//! Without a key this is reliability only (the closed network is trusted, ¶0070); with a
//! key it is also authentication and anti-replay.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use zeroize::Zeroizing;

use super::messages::{Ack, Decoded, Message, split_mac};
use super::{OffloadError, backoff};
use crate::crypto::ct_eq;
use crate::crypto::kdf::hmac_sha256_parts;
use crate::io::{Outbox, Output, Transmit};
use crate::wire::Limits;
use crate::{Error, Instant};

const MAC_CONTEXT: &[u8] = b"deputy offload link v1\0";

/// A provisioned closed-network link key (16 to 64 bytes), wiped on drop.
#[derive(Clone)]
pub struct LinkKey(Zeroizing<Vec<u8>>);

impl LinkKey {
    /// Shortest key accepted (128 bits).
    pub const MIN_LEN: usize = 16;
    /// Longest key accepted.
    pub const MAX_LEN: usize = 64;

    /// A link key from provisioned bytes.
    pub fn new(key: &[u8]) -> Result<LinkKey, Error> {
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&key.len()) {
            return Err(Error::Config("link key must be 16 to 64 bytes"));
        }
        Ok(LinkKey(Zeroizing::new(key.to_vec())))
    }

    fn mac(&self, covered: &[u8]) -> [u8; 32] {
        hmac_sha256_parts(&self.0, &[MAC_CONTEXT, covered])
    }
}

impl fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkKey({} bytes)", self.0.len())
    }
}

/// Retransmission and bounds of a closed-network link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkTiming {
    /// First retransmission timeout; it doubles with every retry.
    pub rto: Duration,
    /// Retransmissions before a message is given up.
    pub max_retries: u32,
    /// Messages sent and not yet acknowledged, at most (at most 32, so the receiver's
    /// 64-entry window always covers them).
    pub max_in_flight: usize,
}

impl Default for LinkTiming {
    fn default() -> Self {
        LinkTiming {
            rto: Duration::from_millis(200),
            max_retries: 5,
            max_in_flight: 32,
        }
    }
}

/// A 64-entry sliding window over received sequence numbers.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReplayWindow {
    highest: Option<u64>,
    /// Bit i set: `highest - i` was seen.
    seen: u64,
}

impl ReplayWindow {
    pub(crate) const SIZE: u64 = 64;

    /// Whether `seq` is new (not seen, not older than the window).
    pub(crate) fn is_new(&self, seq: u64) -> bool {
        match self.highest {
            None => true,
            Some(h) if seq > h => true,
            Some(h) => {
                let age = h - seq;
                age < Self::SIZE && self.seen & (1 << age) == 0
            }
        }
    }

    /// Record `seq` as seen (call only for authentic messages).
    pub(crate) fn mark(&mut self, seq: u64) {
        match self.highest {
            None => {
                self.highest = Some(seq);
                self.seen = 1;
            }
            Some(h) if seq > h => {
                let shift = seq - h;
                self.seen = if shift >= Self::SIZE {
                    0
                } else {
                    self.seen << shift
                };
                self.seen |= 1;
                self.highest = Some(seq);
            }
            Some(h) => {
                let age = h - seq;
                if age < Self::SIZE {
                    self.seen |= 1 << age;
                }
            }
        }
    }
}

struct InFlight<T> {
    to: SocketAddr,
    bytes: Vec<u8>,
    tag: T,
    tries: u32,
    next_at: Instant,
}

/// What an authentic link datagram turned out to be.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// The peer acknowledged one of our messages.
    Acked,
    /// A message seen for the first time (already acknowledged).
    Fresh(Message),
    /// A repeat of one already acted on (acknowledged again, not to be acted on).
    Repeat,
}

/// One end of a closed-network link. `T` tags each reliable message so its loss can be
/// reported.
pub(crate) struct Link<T> {
    local: SocketAddr,
    peer: SocketAddr,
    key: Option<LinkKey>,
    timing: LinkTiming,
    next_seq: u64,
    in_flight: BTreeMap<u64, InFlight<T>>,
    window: ReplayWindow,
}

impl<T> fmt::Debug for Link<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer)
            .field("keyed", &self.key.is_some())
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl<T: Clone> Link<T> {
    pub(crate) fn new(
        local: SocketAddr,
        peer: SocketAddr,
        key: Option<LinkKey>,
        timing: LinkTiming,
        first_seq: u64,
    ) -> Self {
        Link {
            local,
            peer,
            key,
            timing: LinkTiming {
                max_in_flight: timing.max_in_flight.clamp(1, 32),
                ..timing
            },
            next_seq: first_seq,
            in_flight: BTreeMap::new(),
            window: ReplayWindow::default(),
        }
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The next sequence number this end will use (persist it across restarts on keyed
    /// links).
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Room for another reliable message?
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight.len() < self.timing.max_in_flight
    }

    fn encode(&self, msg: &Message, seq: Option<u64>) -> Result<Vec<u8>, Error> {
        let mac = self.key.as_ref().map(|k| move |b: &[u8]| k.mac(b));
        let bytes = match &mac {
            Some(m) => msg.encode_link(seq, Some(m)),
            None => msg.encode_link(seq, None),
        };
        Ok(bytes?)
    }

    /// Send `msg` reliably; `tag` comes back from [`Link::handle_timeout`] if it is lost.
    pub(crate) fn send(
        &mut self,
        now: Instant,
        msg: &Message,
        tag: T,
        outbox: &mut Outbox,
    ) -> Result<u64, Error> {
        if !self.has_room() {
            return Err(Error::CapacityExceeded {
                what: "offload link messages in flight",
                bound: self.timing.max_in_flight,
            });
        }
        let seq = self.next_seq;
        let bytes = self.encode(msg, Some(seq))?;
        outbox.push(Output::Transmit(Transmit {
            from: self.local,
            to: self.peer,
            data: bytes.clone(),
        }))?;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.in_flight.insert(
            seq,
            InFlight {
                to: self.peer,
                bytes,
                tag,
                tries: 0,
                next_at: now + self.timing.rto,
            },
        );
        Ok(seq)
    }

    fn ack(&self, seq: u64, outbox: &mut Outbox) -> Result<(), Error> {
        let bytes = self.encode(&Message::Ack(Ack { seq }), None)?;
        outbox.push(Output::Transmit(Transmit {
            from: self.local,
            to: self.peer,
            data: bytes,
        }))
    }

    /// Check a datagram from the peer: decode, authenticate, acknowledge, de-duplicate.
    pub(crate) fn receive(
        &mut self,
        raw: &[u8],
        limits: &Limits,
        outbox: &mut Outbox,
    ) -> Result<Incoming, Error> {
        let Decoded {
            message,
            seq,
            has_mac,
        } = Message::decode(raw, limits).map_err(OffloadError::Decode)?;
        match (&self.key, has_mac) {
            (Some(key), true) => {
                let (covered, mac) = split_mac(raw).ok_or(OffloadError::LinkAuthentication)?;
                if !ct_eq(&key.mac(covered), &mac) {
                    return Err(OffloadError::LinkAuthentication.into());
                }
            }
            (None, false) => {}
            _ => return Err(OffloadError::LinkAuthentication.into()),
        }
        if let Message::Ack(Ack { seq }) = message {
            return match self.in_flight.remove(&seq) {
                Some(_) => Ok(Incoming::Acked),
                None => Err(OffloadError::Replayed(seq).into()),
            };
        }
        let seq = seq.ok_or(OffloadError::Malformed(
            "link message without a sequence number",
        ))?;
        self.ack(seq, outbox)?;
        if !self.window.is_new(seq) {
            return Ok(Incoming::Repeat);
        }
        self.window.mark(seq);
        Ok(Incoming::Fresh(message))
    }

    /// Retransmit what is due; returns the tags of messages given up.
    pub(crate) fn handle_timeout(&mut self, now: Instant, outbox: &mut Outbox) -> Vec<T> {
        let mut lost = Vec::new();
        let mut gone = Vec::new();
        for (seq, m) in self.in_flight.iter_mut() {
            if m.next_at > now {
                continue;
            }
            if m.tries >= self.timing.max_retries {
                lost.push(m.tag.clone());
                gone.push(*seq);
                continue;
            }
            let sent = outbox.push(Output::Transmit(Transmit {
                from: self.local,
                to: m.to,
                data: m.bytes.clone(),
            }));
            if sent.is_err() {
                // The driver stopped draining; try again at the next timeout.
                break;
            }
            m.tries += 1;
            m.next_at = now + backoff(self.timing.rto, m.tries);
        }
        for seq in gone {
            self.in_flight.remove(&seq);
        }
        lost
    }

    /// Forget messages whose tag matches (their session ended).
    pub(crate) fn forget(&mut self, mut matches: impl FnMut(&T) -> bool) {
        self.in_flight.retain(|_, m| !matches(&m.tag));
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.values().map(|m| m.next_at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::messages::{Close, PlainData};

    fn pair(key: Option<&[u8]>) -> (Link<u8>, Link<u8>) {
        let a: SocketAddr = "192.168.0.10:5683".parse().unwrap();
        let b: SocketAddr = "192.168.0.2:5684".parse().unwrap();
        let key = key.map(|k| LinkKey::new(k).unwrap());
        let t = LinkTiming::default();
        (
            Link::new(a, b, key.clone(), t, 1),
            Link::new(b, a, key, t, 1),
        )
    }

    fn sent(outbox: &mut Outbox) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(o) = outbox.pop() {
            if let Output::Transmit(t) = o {
                out.push(t.data);
            }
        }
        out
    }

    fn data(n: u8) -> Message {
        Message::PlainData(PlainData {
            session: 1,
            peer: None,
            payload: alloc::vec![n; 8],
            padding: 0,
        })
    }

    #[test]
    fn replay_window_accepts_each_number_once() {
        let mut w = ReplayWindow::default();
        for seq in [5, 7, 6, 100, 40, 99] {
            assert!(w.is_new(seq), "{seq}");
            w.mark(seq);
            assert!(!w.is_new(seq));
        }
        assert!(!w.is_new(36), "older than the window");
        assert!(w.is_new(37));
        w.mark(u64::MAX);
        assert!(!w.is_new(100));
    }

    #[test]
    fn keyed_link_delivers_once_acks_repeats_and_refuses_tampering() {
        let (mut a, mut b) = pair(Some(&[9; 32]));
        let mut out = Outbox::default();
        let limits = Limits::default();
        a.send(Instant::ZERO, &data(1), 7, &mut out).unwrap();
        let wire = sent(&mut out).remove(0);

        assert!(matches!(
            b.receive(&wire, &limits, &mut out).unwrap(),
            Incoming::Fresh(_)
        ));
        let ack = sent(&mut out).remove(0);
        assert!(matches!(
            b.receive(&wire, &limits, &mut out).unwrap(),
            Incoming::Repeat
        ));
        assert_eq!(sent(&mut out).len(), 1, "a repeat is acknowledged again");

        for i in 0..wire.len() {
            let mut bad = wire.clone();
            bad[i] ^= 0x01;
            assert!(b.receive(&bad, &limits, &mut out).is_err(), "byte {i}");
        }
        assert!(sent(&mut out).is_empty());

        assert!(matches!(
            a.receive(&ack, &limits, &mut out).unwrap(),
            Incoming::Acked
        ));
        assert_eq!(a.poll_timeout(), None);
        assert!(matches!(
            a.receive(&ack, &limits, &mut out),
            Err(Error::Offload(OffloadError::Replayed(1)))
        ));
    }

    #[test]
    fn key_mismatch_and_missing_mac_are_refused() {
        let (mut a, _) = pair(Some(&[1; 16]));
        let (_, mut b) = pair(Some(&[2; 16]));
        let (mut plain_a, mut plain_b) = pair(None);
        let mut out = Outbox::default();
        let limits = Limits::default();
        a.send(Instant::ZERO, &data(1), 0, &mut out).unwrap();
        let keyed = sent(&mut out).remove(0);
        plain_a.send(Instant::ZERO, &data(1), 0, &mut out).unwrap();
        let unkeyed = sent(&mut out).remove(0);
        let refused = Error::Offload(OffloadError::LinkAuthentication);
        assert_eq!(b.receive(&keyed, &limits, &mut out).unwrap_err(), refused);
        assert_eq!(b.receive(&unkeyed, &limits, &mut out).unwrap_err(), refused);
        assert_eq!(
            plain_b.receive(&keyed, &limits, &mut out).unwrap_err(),
            refused
        );
        assert!(LinkKey::new(&[0; 15]).is_err());
        assert!(LinkKey::new(&[0; 65]).is_err());
    }

    #[test]
    fn retransmits_with_backoff_then_gives_up() {
        let (mut a, _) = pair(None);
        let mut out = Outbox::default();
        a.send(
            Instant::ZERO,
            &Message::Close(Close { session: 3 }),
            42,
            &mut out,
        )
        .unwrap();
        let first = sent(&mut out).remove(0);
        let mut at = Vec::new();
        while let Some(now) = a.poll_timeout() {
            let lost = a.handle_timeout(now, &mut out);
            for bytes in sent(&mut out) {
                assert_eq!(bytes, first, "retransmissions are bit-identical");
                at.push(now);
            }
            if !lost.is_empty() {
                assert_eq!(lost, [42]);
                break;
            }
        }
        let ms: Vec<u64> = at.iter().map(|t| t.as_nanos() / 1_000_000).collect();
        assert_eq!(ms, [200, 600, 1400, 3000, 6200]);
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn in_flight_is_bounded() {
        let (mut a, _) = pair(None);
        let mut out = Outbox::default();
        for i in 0..32 {
            a.send(Instant::ZERO, &data(i), 0, &mut out).unwrap();
        }
        assert_eq!(
            a.send(Instant::ZERO, &data(0), 0, &mut out),
            Err(Error::CapacityExceeded {
                what: "offload link messages in flight",
                bound: 32
            })
        );
        a.forget(|_| true);
        assert!(a.has_room());
    }
}

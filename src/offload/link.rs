//! The closed-network link between an appliance and its proxy: datagrams with sequence
//! numbers, acknowledgements, bounded retransmission, in-order delivery, restart detection,
//! and — when a link key is provisioned — an HMAC-SHA256 over every message.
//!
//! Every *sequenced* message carries three link fields: its sequence number (per direction),
//! the sender's **epoch** (a random number chosen when the sender starts, so a restart is
//! recognised) and the sender's **floor** (its oldest sequence number not yet acknowledged
//! or given up). The sender retransmits each message, bit-identical, until it is
//! acknowledged or out of retries. The receiver acknowledges every authentic message and
//! hands them to the actor **once and in order**: a message waits while an older one is
//! missing, until that one arrives or the sender's floor passes it (the sender gave up).
//!
//! A message from an unknown epoch (the peer restarted, or this is the first contact)
//! starts the epoch afresh — at once on an unkeyed link; on a keyed link only after the
//! receiver has sent a [`Challenge`] with a random nonce and got back a MAC'd [`Resync`]
//! echoing it, so recorded traffic from an old epoch cannot be replayed after a restart.
//!
//! Without a key this is reliability only (the closed network is trusted, ¶0070); with a
//! key it is also authentication and anti-replay.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use rand_core::CryptoRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::OffloadEvent;
use super::messages::{Ack, Challenge, Decoded, LinkFields, Message, Resync, split_mac};
use super::{OffloadError, backoff};
use crate::crypto::ct_eq;
use crate::io::{Outbox, Output, Transmit};
use crate::wire::Limits;
use crate::{Error, Instant};

const MAC_CONTEXT: &[u8] = b"deputy offload link v1\0";

/// The key of the unkeyed link's damage check: public, so the check catches damage in
/// transit, never forgery. Without it a flipped sequence number was taken for a new
/// message, and the genuine retransmission was delivered a second time.
const UNKEYED_KEY: &[u8] = b"deputy offload unkeyed link: a damage check, not authentication";

/// The damage check of an unkeyed link message: the MAC field, computed as a keyed link
/// computes it but under [`UNKEYED_KEY`].
#[cfg(test)]
pub(crate) fn unkeyed_check(covered: &[u8]) -> [u8; 32] {
    crate::crypto::kdf::hmac_sha256_parts(UNKEYED_KEY, &[MAC_CONTEXT, covered])
}

/// A link's MAC, HMAC-SHA256(key, [`MAC_CONTEXT`] ‖ covered), with the key and the
/// context absorbed once: each message clones this state and hashes only its own bytes.
/// Keying HMAC costs two SHA-256 blocks (the inner and outer pads); keyed once per link
/// instead of once per message, a 64-byte S26 and its acknowledgement hash seven blocks
/// instead of eleven.
///
/// The state is as secret as the key (it computes the MAC): its SHA-256 states, and every
/// clone's, are wiped on drop (sha2's `zeroize` feature).
#[derive(Clone)]
struct LinkMac(Hmac<Sha256>);

impl LinkMac {
    fn new(key: &[u8]) -> LinkMac {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(MAC_CONTEXT);
        LinkMac(mac)
    }

    fn mac(&self, covered: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(covered);
        mac.finalize().into_bytes().into()
    }
}

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
            return Err(OffloadError::BadLinkKeyLength(key.len()).into());
        }
        Ok(LinkKey(Zeroizing::new(key.to_vec())))
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
    /// First retransmission timeout; it doubles with every retry. Default 200 ms.
    pub rto: Duration,
    /// Retransmissions before a message is given up. Default 5.
    pub max_retries: u32,
    /// Messages sent and not yet acknowledged, at most (at most 32, so the receiver's
    /// window always covers them). Default 32.
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

struct InFlight<T> {
    bytes: Vec<u8>,
    tag: T,
    tries: u32,
    next_at: Instant,
}

/// How far ahead of the next expected sequence number a message may be (twice the most a
/// sender has in flight).
const RECEIVE_WINDOW: u64 = 64;

/// The receiving half: what the peer's current epoch is and what it has delivered.
#[derive(Debug, Default)]
struct Receiver {
    /// The peer's epoch, once established.
    epoch: Option<u64>,
    /// The next sequence number to hand to the actor.
    next: u64,
    /// Authentic messages waiting for an older one.
    held: BTreeMap<u64, Message>,
    /// Keyed links: the epoch challenged and the nonce it must echo.
    challenge: Option<(u64, u64)>,
    /// The peer's previous epochs (a few): their late packets are dropped, not taken for
    /// yet another restart.
    retired: Vec<u64>,
}

/// How many retired epochs a receiver remembers.
const RETIRED_EPOCHS: usize = 4;

impl Receiver {
    fn start(&mut self, epoch: u64, floor: u64) {
        if let Some(old) = self.epoch.filter(|&old| old != epoch) {
            if self.retired.len() >= RETIRED_EPOCHS {
                self.retired.remove(0);
            }
            self.retired.push(old);
        }
        self.epoch = Some(epoch);
        self.next = floor;
        self.held.clear();
        self.challenge = None;
    }

    /// Move past everything below `floor` (the sender will not send it again) and take
    /// every message now deliverable, in order.
    fn advance(&mut self, floor: u64) -> Vec<Message> {
        let mut out = Vec::new();
        if floor > self.next {
            // Held messages below the floor go first, in order; gaps are given up.
            let later = self.held.split_off(&floor);
            out.extend(core::mem::replace(&mut self.held, later).into_values());
            self.next = floor;
        }
        while let Some(m) = self.held.remove(&self.next) {
            out.push(m);
            self.next = self.next.wrapping_add(1);
        }
        out
    }
}

/// The messages one datagram made deliverable, in order: most often exactly one, held
/// inline, since a `Vec` for it cost an allocation on the path every message takes.
/// Read as a slice; taken by iterating.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) enum Taken {
    #[default]
    None,
    One(Message),
    Many(Vec<Message>),
}

impl From<Vec<Message>> for Taken {
    fn from(messages: Vec<Message>) -> Taken {
        if messages.is_empty() {
            Taken::None
        } else {
            Taken::Many(messages)
        }
    }
}

impl core::ops::Deref for Taken {
    type Target = [Message];

    fn deref(&self) -> &[Message] {
        match self {
            Taken::None => &[],
            Taken::One(m) => core::slice::from_ref(m),
            Taken::Many(v) => v,
        }
    }
}

impl IntoIterator for Taken {
    type Item = Message;
    type IntoIter =
        core::iter::Chain<core::option::IntoIter<Message>, alloc::vec::IntoIter<Message>>;

    fn into_iter(self) -> Self::IntoIter {
        let (one, many) = match self {
            Taken::None => (None, Vec::new()),
            Taken::One(m) => (Some(m), Vec::new()),
            Taken::Many(v) => (None, v),
        };
        one.into_iter().chain(many)
    }
}

/// One end of a closed-network link. `T` tags each reliable message so its loss can be
/// reported.
pub(crate) struct Link<T> {
    local: SocketAddr,
    peer: SocketAddr,
    /// Whether a link key was provisioned (else `mac` is the public damage check).
    keyed: bool,
    mac: LinkMac,
    timing: LinkTiming,
    epoch: u64,
    next_seq: u64,
    in_flight: BTreeMap<u64, InFlight<T>>,
    rx: Receiver,
}

impl<T> fmt::Debug for Link<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer)
            .field("keyed", &self.keyed)
            .field("in_flight", &self.in_flight.len())
            .field("held", &self.rx.held.len())
            .finish_non_exhaustive()
    }
}

impl<T: Clone> Link<T> {
    /// A link from `local` to `peer`; `epoch` is this end's random incarnation number.
    pub(crate) fn new(
        local: SocketAddr,
        peer: SocketAddr,
        key: Option<LinkKey>,
        timing: LinkTiming,
        first_seq: u64,
        epoch: u64,
    ) -> Self {
        let mac = match &key {
            Some(k) => LinkMac::new(&k.0),
            None => LinkMac::new(UNKEYED_KEY),
        };
        Link {
            local,
            peer,
            keyed: key.is_some(),
            mac,
            timing: LinkTiming {
                max_in_flight: timing.max_in_flight.clamp(1, 32),
                ..timing
            },
            epoch,
            next_seq: first_seq,
            in_flight: BTreeMap::new(),
            rx: Receiver::default(),
        }
    }

    /// A fresh incarnation of this end: the link from `local` to `peer` with a random
    /// epoch drawn from `rng`. Random rather than counted, so a restarted end that kept no
    /// state is still recognised as restarted (see the module docs).
    pub(crate) fn start(
        local: SocketAddr,
        peer: SocketAddr,
        key: Option<LinkKey>,
        timing: LinkTiming,
        first_seq: u64,
        rng: &mut dyn CryptoRng,
    ) -> Self {
        let epoch = rng.next_u64();
        Link::new(local, peer, key, timing, first_seq, epoch)
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The next sequence number this end will use.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Room for another reliable message?
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight.len() < self.timing.max_in_flight
    }

    /// Our oldest unresolved sequence number.
    fn floor(&self) -> u64 {
        self.in_flight
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_seq)
    }

    fn encode(&self, msg: &Message, link: LinkFields) -> Result<Vec<u8>, Error> {
        Ok(msg.encode_link(link, Some(&|b: &[u8]| self.mac.mac(b)))?)
    }

    fn transmit(&self, data: Vec<u8>, outbox: &mut Outbox<OffloadEvent>) -> Result<(), Error> {
        outbox.push(Output::Transmit(Transmit {
            from: self.local,
            to: self.peer,
            data,
        }))
    }

    /// Send `msg` reliably; `tag` comes back from [`Link::handle_timeout`] if it is lost.
    pub(crate) fn send(
        &mut self,
        now: Instant,
        msg: &Message,
        tag: T,
        outbox: &mut Outbox<OffloadEvent>,
    ) -> Result<u64, Error> {
        if !self.has_room() {
            return Err(Error::CapacityExceeded {
                what: "offload link messages in flight",
                bound: self.timing.max_in_flight,
            });
        }
        let seq = self.next_seq;
        let link = LinkFields {
            seq: Some(seq),
            epoch: Some(self.epoch),
            floor: Some(self.floor().min(seq)),
        };
        let bytes = self.encode(msg, link)?;
        self.transmit(bytes.clone(), outbox)?;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.in_flight.insert(
            seq,
            InFlight {
                bytes,
                tag,
                tries: 0,
                next_at: now + self.timing.rto,
            },
        );
        Ok(seq)
    }

    /// An unsequenced control message (acknowledgement, challenge, resync).
    fn control(
        &self,
        msg: &Message,
        epoch: u64,
        floor: Option<u64>,
        outbox: &mut Outbox<OffloadEvent>,
    ) -> Result<(), Error> {
        let link = LinkFields {
            seq: None,
            epoch: Some(epoch),
            floor,
        };
        let bytes = self.encode(msg, link)?;
        self.transmit(bytes, outbox)
    }

    /// Check a datagram from the peer: decode, authenticate, acknowledge, and return the
    /// messages now to act on, in order (often one, sometimes none or several).
    pub(crate) fn receive(
        &mut self,
        raw: &[u8],
        limits: &Limits,
        outbox: &mut Outbox<OffloadEvent>,
        rng: &mut dyn CryptoRng,
    ) -> Result<Taken, Error> {
        let Decoded {
            message,
            seq,
            epoch,
            floor,
            has_mac,
        } = Message::decode(raw, limits).map_err(OffloadError::Decode)?;
        let refused = if self.keyed {
            OffloadError::LinkAuthentication
        } else {
            OffloadError::LinkDamaged
        };
        let Some((covered, mac)) = split_mac(raw).filter(|_| has_mac) else {
            return Err(refused.into());
        };
        if !ct_eq(&self.mac.mac(covered), &mac) {
            return Err(refused.into());
        }
        let epoch = epoch.ok_or(OffloadError::LinkWithoutEpoch)?;
        match message {
            Message::Ack(Ack { seq }) => {
                if epoch != self.epoch || self.in_flight.remove(&seq).is_none() {
                    return Err(OffloadError::Replayed(seq).into());
                }
                Ok(Taken::None)
            }
            Message::Challenge(Challenge { nonce }) => {
                if epoch != self.epoch {
                    return Err(OffloadError::Replayed(nonce).into());
                }
                // Prove we are live, then resend what the peer has not taken yet.
                let floor = Some(self.floor());
                self.control(
                    &Message::Resync(Resync { nonce }),
                    self.epoch,
                    floor,
                    outbox,
                )?;
                for m in self.in_flight.values() {
                    self.transmit(m.bytes.clone(), outbox)?;
                }
                Ok(Taken::None)
            }
            Message::Resync(Resync { nonce }) => {
                let floor = floor.ok_or(OffloadError::LinkWithoutFloor)?;
                match self.rx.challenge {
                    Some((challenged, expected))
                        if nonce != 0 && challenged == epoch && expected == nonce =>
                    {
                        self.rx.challenge = None;
                        if self.rx.epoch == Some(epoch) {
                            // The live sender confirmed a far floor of its current epoch:
                            // move forward only, so nothing taken is taken again.
                            Ok(self.rx.advance(floor).into())
                        } else {
                            self.rx.start(epoch, floor);
                            Ok(Taken::None)
                        }
                    }
                    _ if self.rx.epoch == Some(epoch) && self.far(floor) => {
                        self.challenge(epoch, outbox, rng)
                    }
                    _ if self.rx.epoch == Some(epoch) => Ok(self.rx.advance(floor).into()),
                    _ => Err(OffloadError::Replayed(nonce).into()),
                }
            }
            message => {
                let seq = seq.ok_or(OffloadError::LinkWithoutSequence)?;
                let floor = floor.ok_or(OffloadError::LinkWithoutFloor)?;
                if floor > seq {
                    return Err(OffloadError::FloorAboveSequence { floor, seq }.into());
                }
                if self.rx.retired.contains(&epoch) {
                    return Err(OffloadError::Replayed(seq).into());
                }
                match self.rx.epoch {
                    // First contact on an unkeyed link: nothing was delivered yet, so
                    // nothing can be delivered twice, and a wrong first epoch is left
                    // at the genuine sender's first message (a change, challenged below).
                    None if !self.keyed => self.rx.start(epoch, floor),
                    Some(current) if current == epoch => {
                        if self.far(floor) {
                            // A floor this far ahead would skip what the genuine sender
                            // has yet to deliver: only the live sender may confirm it.
                            return self.challenge(epoch, outbox, rng);
                        }
                    }
                    // A new epoch (keyed: also the first): believe it only once the
                    // sender, asked at its address (and under the key, if any), echoes a
                    // fresh nonce. Until then the current epoch stays current, so one
                    // datagram with a damaged or forged epoch can neither replace the
                    // genuine sender's state nor restart delivery at an old message.
                    _ => return self.challenge(epoch, outbox, rng),
                }
                let next = self.rx.next.max(floor);
                if seq < next || self.rx.held.contains_key(&seq) {
                    // Already taken: acknowledge again so the sender stops.
                    self.control(&Message::Ack(Ack { seq }), epoch, None, outbox)?;
                    return Ok(self.rx.advance(floor).into());
                }
                if seq - next >= RECEIVE_WINDOW {
                    return Err(OffloadError::SequenceOutOfWindow { seq, next }.into());
                }
                self.control(&Message::Ack(Ack { seq }), epoch, None, outbox)?;
                if seq == next && self.rx.held.is_empty() {
                    // The common case, the next message in order with none waiting: what
                    // `advance` would hand out is this message alone, so it is handed out
                    // at once instead of passing through `held` (a B-tree insert and
                    // remove per message).
                    self.rx.next = seq.wrapping_add(1);
                    return Ok(Taken::One(message));
                }
                self.rx.held.insert(seq, message);
                Ok(self.rx.advance(floor).into())
            }
        }
    }

    /// Whether `floor` lies beyond the receive window of what was delivered.
    fn far(&self, floor: u64) -> bool {
        floor > self.rx.next.saturating_add(RECEIVE_WINDOW)
    }

    /// Ask the sender of `epoch` to prove it is live (see [`Link::receive`]): a Challenge
    /// with a nonce, kept while the same epoch asks again, so a retransmission that
    /// crosses the answer does not invalidate it.
    fn challenge(
        &mut self,
        epoch: u64,
        outbox: &mut Outbox<OffloadEvent>,
        rng: &mut dyn CryptoRng,
    ) -> Result<Taken, Error> {
        let nonce = match self.rx.challenge {
            Some((e, n)) if e == epoch => n,
            _ => loop {
                // 0 marks an unchallenged resync (a floor update).
                let n = rng.next_u64();
                if n != 0 {
                    break n;
                }
            },
        };
        self.rx.challenge = Some((epoch, nonce));
        self.control(
            &Message::Challenge(Challenge { nonce }),
            epoch,
            None,
            outbox,
        )?;
        Ok(Taken::None)
    }

    /// Retransmit what is due; returns the tags of messages given up.
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        outbox: &mut Outbox<OffloadEvent>,
    ) -> Vec<T> {
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
                to: self.peer,
                data: m.bytes.clone(),
            }));
            if sent.is_err() {
                // Counted as lost by the outbox; this one is tried again at the next
                // timeout, and the others due are still attempted now.
                continue;
            }
            m.tries += 1;
            m.next_at = now + backoff(self.timing.rto, m.tries);
        }
        for seq in gone {
            self.in_flight.remove(&seq);
        }
        if !lost.is_empty() {
            // Tell the peer not to wait for what we gave up (best effort; our next message
            // carries the floor too).
            let floor = Some(self.floor());
            let _ = self.control(
                &Message::Resync(Resync { nonce: 0 }),
                self.epoch,
                floor,
                outbox,
            );
        }
        lost
    }

    /// Forget messages whose tag matches (their session ended locally).
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
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn link(from: &str, to: &str, key: Option<&[u8]>, epoch: u64) -> Link<u8> {
        Link::new(
            from.parse().unwrap(),
            to.parse().unwrap(),
            key.map(|k| LinkKey::new(k).unwrap()),
            LinkTiming::default(),
            1,
            epoch,
        )
    }

    const A: &str = "192.168.0.10:5683";
    const B: &str = "192.168.0.2:5684";

    fn pair(key: Option<&[u8]>) -> (Link<u8>, Link<u8>) {
        (link(A, B, key, 111), link(B, A, key, 222))
    }

    fn sent(outbox: &mut Outbox<OffloadEvent>) -> Vec<Vec<u8>> {
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

    fn payloads(msgs: &[Message]) -> Vec<u8> {
        msgs.iter()
            .map(|m| match m {
                Message::PlainData(p) => p.payload[0],
                _ => 0,
            })
            .collect()
    }

    struct Net {
        a: Link<u8>,
        b: Link<u8>,
        out: Outbox<OffloadEvent>,
        rng: ChaCha20Rng,
        limits: Limits,
    }

    impl Net {
        fn new(key: Option<&[u8]>) -> Net {
            let (a, b) = pair(key);
            Net {
                a,
                b,
                out: Outbox::default(),
                rng: ChaCha20Rng::seed_from_u64(5),
                limits: Limits::default(),
            }
        }
        /// a sends; returns the wire bytes.
        fn send(&mut self, n: u8) -> Vec<u8> {
            self.a
                .send(Instant::ZERO, &data(n), n, &mut self.out)
                .unwrap();
            sent(&mut self.out).remove(0)
        }
        /// b receives; returns (delivered payload bytes, what b sent back).
        fn b_takes(&mut self, wire: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
            let got = self
                .b
                .receive(wire, &self.limits, &mut self.out, &mut self.rng)
                .unwrap();
            (payloads(&got), sent(&mut self.out))
        }
        /// a receives.
        fn a_takes(&mut self, wire: &[u8]) -> Vec<Vec<u8>> {
            self.a
                .receive(wire, &self.limits, &mut self.out, &mut self.rng)
                .unwrap();
            sent(&mut self.out)
        }
    }

    #[test]
    fn delivers_once_and_in_order_and_acks_repeats() {
        let mut net = Net::new(None);
        let (m1, m2, m3) = (net.send(1), net.send(2), net.send(3));
        // m1 is late: m2 and m3 wait for it.
        let (got, back) = net.b_takes(&m2);
        assert_eq!((got, back.len()), (alloc::vec![], 1));
        let (got, _) = net.b_takes(&m3);
        assert!(got.is_empty());
        let (got, acks) = net.b_takes(&m1);
        assert_eq!(got, [1, 2, 3]);
        // A repeat is acknowledged again and not delivered again.
        let (got, again) = net.b_takes(&m2);
        assert_eq!((got, again.len()), (alloc::vec![], 1));
        // The acknowledgements empty a's flight.
        net.a_takes(&acks[0]);
        net.a_takes(&again[0]);
        assert_eq!(net.a.in_flight.len(), 1);
        assert!(matches!(
            net.a
                .receive(&acks[0], &net.limits, &mut net.out, &mut net.rng),
            Err(Error::Offload(OffloadError::Replayed(1)))
        ));
    }

    #[test]
    fn a_message_given_up_does_not_block_the_rest() {
        let mut net = Net::new(None);
        let _lost = net.send(1);
        let m2 = net.send(2);
        let (got, _) = net.b_takes(&m2);
        assert!(got.is_empty(), "waiting for 1");
        // The sender gives up on 1 (and 2, unacknowledged here) and says so.
        let mut now = Instant::ZERO;
        let mut lost = Vec::new();
        while let Some(t) = net.a.poll_timeout() {
            now = t;
            lost.extend(net.a.handle_timeout(now, &mut net.out));
        }
        assert_eq!(lost, [1, 2]);
        let resync = sent(&mut net.out).pop().unwrap();
        let (got, _) = net.b_takes(&resync);
        assert_eq!(got, [2], "2 is delivered once 1 is given up");
        // Later messages flow again.
        let m3 = net.send(3);
        assert_eq!(net.b_takes(&m3).0, [3]);
        assert!(now > Instant::ZERO);
    }

    #[test]
    fn a_restart_is_recognised_unkeyed() {
        let mut net = Net::new(None);
        let mut old = Vec::new();
        for n in 1..=3 {
            let m = net.send(n);
            net.b_takes(&m);
            old.push(m);
        }
        // a restarts: same sequence numbers, new epoch. b asks the new epoch to prove it
        // is live at a's address; a answers and resends, and 7 is delivered once.
        net.a = link(A, B, None, 999);
        let m = net.send(7);
        let (got, challenge) = net.b_takes(&m);
        assert!(got.is_empty());
        let answer = net.a_takes(&challenge[0]);
        assert_eq!(answer.len(), 2, "resync and the resent 7");
        assert!(net.b_takes(&answer[0]).0.is_empty());
        assert_eq!(net.b_takes(&answer[1]).0, [7]);
        assert!(net.b_takes(&m).0.is_empty(), "never twice");
        // A late packet from before the restart does not flip the receiver back.
        assert_eq!(
            net.b
                .receive(&old[2], &net.limits, &mut net.out, &mut net.rng),
            Err(Error::Offload(OffloadError::Replayed(3)))
        );
        let m = net.send(8);
        assert_eq!(net.b_takes(&m).0, [8]);
    }

    /// Issue 13, item 2: on an unkeyed link, one datagram from the peer's address whose
    /// epoch differs by one bit (damage is now refused by the damage check; this is the
    /// same datagram sent with a valid check, as an on-path sender could) made the receiver deliver an earlier command a second
    /// time and then refuse the genuine sender's traffic as replays. Now the changed
    /// epoch is only challenged (the genuine sender ignores a challenge for an epoch it
    /// does not have), nothing is delivered twice, and genuine traffic flows on; a floor
    /// pushed far ahead in the genuine epoch is challenged the same way.
    #[test]
    fn item_2_one_flipped_epoch_bit_delivers_nothing_twice_and_wedges_nothing() {
        let mut net = Net::new(None);
        let command = net.send(1);
        assert_eq!(net.b_takes(&command).0, [1]);
        let genuine = Message::decode(&command, &net.limits).unwrap();
        let mut forgeries = 0;
        for i in 0..command.len() {
            for bit in 0..8 {
                let mut forged = command.clone();
                forged[i] ^= 1 << bit;
                // A sender on the closed network can compute the unkeyed link's public
                // damage check (it catches damage, not forgery): recompute it, so that
                // what is tested is the changed epoch itself.
                let tag_at = forged.len() - 32;
                let tag = unkeyed_check(&forged[..tag_at - 4]);
                forged[tag_at..].copy_from_slice(&tag);
                let Ok(d) = Message::decode(&forged, &net.limits) else {
                    continue;
                };
                if d.epoch.is_none()
                    || d.epoch == genuine.epoch
                    || d.seq != genuine.seq
                    || d.message != genuine.message
                {
                    continue;
                }
                forgeries += 1;
                // The forged epoch only draws a challenge; the command is not taken again.
                let got = net
                    .b
                    .receive(&forged, &net.limits, &mut net.out, &mut net.rng)
                    .unwrap();
                assert!(got.is_empty(), "byte {i} bit {bit}: delivered twice");
                // The genuine sender ignores a challenge for an epoch it does not have.
                for challenge in sent(&mut net.out) {
                    assert_eq!(
                        net.a
                            .receive(&challenge, &net.limits, &mut net.out, &mut net.rng),
                        Err(Error::Offload(OffloadError::Replayed(
                            match Message::decode(&challenge, &net.limits).unwrap().message {
                                Message::Challenge(Challenge { nonce }) => nonce,
                                other => panic!("{other:?}"),
                            }
                        )))
                    );
                }
            }
        }
        assert!(forgeries >= 8, "every bit of the epoch field was tried");
        // The genuine sender's next command is delivered, once.
        let next = net.send(2);
        assert_eq!(net.b_takes(&next).0, [2]);
        assert!(net.b_takes(&next).0.is_empty());

        // A floor pushed far ahead in the genuine epoch skips nothing either.
        let mut far = link(A, B, None, 111);
        far.next_seq = 10_000;
        far.send(Instant::ZERO, &data(9), 0, &mut net.out).unwrap();
        let forged = sent(&mut net.out).remove(0);
        let (got, challenge) = net.b_takes(&forged);
        assert!(got.is_empty(), "the far message waits for the live sender");
        // The live sender answers with its true floor: nothing is skipped.
        let answer = net.a_takes(&challenge[0]);
        net.b_takes(&answer[0]);
        let after = net.send(3);
        assert_eq!(net.b_takes(&after).0, [3]);
    }

    #[test]
    fn keyed_restart_needs_a_live_answer_and_old_traffic_is_not_replayable() {
        let key: &[u8] = &[9; 32];
        let mut net = Net::new(Some(key));
        let first = net.send(1);
        // First contact: challenged, not delivered, not acknowledged.
        let (got, back) = net.b_takes(&first);
        assert!(got.is_empty());
        assert_eq!(back.len(), 1);
        // a answers with a resync and resends at once.
        let answer = net.a_takes(&back[0]);
        assert_eq!(answer.len(), 2);
        assert!(net.b_takes(&answer[0]).0.is_empty());
        assert_eq!(net.b_takes(&answer[1]).0, [1]);

        // b restarts; an attacker replays a's old message: it only draws a challenge,
        // which the attacker cannot answer.
        net.b = link(B, A, Some(key), 333);
        let (got, challenge) = net.b_takes(&first);
        assert!(got.is_empty());
        assert_eq!(challenge.len(), 1);
        // a restarts too. Its new incarnation's traffic gets through after the challenge.
        net.a = link(A, B, Some(key), 999);
        let fresh = net.send(2);
        let (got, ch) = net.b_takes(&fresh);
        assert!(got.is_empty());
        let answer = net.a_takes(&ch[0]);
        net.b_takes(&answer[0]);
        assert_eq!(net.b_takes(&answer[1]).0, [2]);
        // The old message stays dead: it only draws another challenge.
        let (got, back) = net.b_takes(&first);
        assert!(got.is_empty());
        assert!(matches!(
            Message::decode(&back[0], &net.limits).unwrap().message,
            Message::Challenge(_)
        ));
        // A replayed challenge answer changes nothing.
        assert!(net.b_takes(&answer[0]).0.is_empty());
        assert_eq!(net.b.rx.epoch, Some(999));
        let next = net.send(3);
        assert_eq!(net.b_takes(&next).0, [3]);
    }

    /// Issue 13 (the mutation suite's exhaustive run): on the unkeyed link a flipped byte
    /// anywhere in a message — its sequence number above all — is refused as damaged and
    /// acts on nothing; the genuine retransmission is then delivered once. Before, a
    /// sequence number flipped within the receive window was held as another message, and
    /// the appliance delivered the command twice.
    #[test]
    fn unkeyed_link_refuses_damage_and_delivers_nothing_twice() {
        for i in 0.. {
            let mut net = Net::new(None);
            let wire = net.send(1);
            if i >= wire.len() {
                break;
            }
            let mut bad = wire.clone();
            bad[i] ^= 0x01;
            let refused = net.b.receive(&bad, &net.limits, &mut net.out, &mut net.rng);
            assert!(
                matches!(
                    refused,
                    Err(Error::Offload(
                        OffloadError::Decode(_) | OffloadError::LinkDamaged
                    ))
                ),
                "byte {i}: {refused:?}"
            );
            assert!(sent(&mut net.out).is_empty(), "byte {i}: answered");
            assert_eq!(net.b_takes(&wire).0, [1], "byte {i}");
            assert!(net.b_takes(&wire).0.is_empty(), "byte {i}: taken twice");
        }
    }

    #[test]
    fn keyed_link_refuses_tampering_and_key_mismatch() {
        let mut net = Net::new(Some(&[9; 32]));
        let wire = net.send(1);
        for i in 0..wire.len() {
            let mut bad = wire.clone();
            bad[i] ^= 0x01;
            // The header and framing fail to decode; everything else fails the MAC.
            let refused = net.b.receive(&bad, &net.limits, &mut net.out, &mut net.rng);
            assert!(
                matches!(
                    refused,
                    Err(Error::Offload(
                        OffloadError::Decode(_) | OffloadError::LinkAuthentication
                    ))
                ),
                "byte {i}: {refused:?}"
            );
        }
        assert!(sent(&mut net.out).is_empty());

        let mut other = link(B, A, Some(&[2; 32]), 5);
        let mut plain = link(B, A, None, 6);
        let unkeyed = {
            let mut a = link(A, B, None, 7);
            a.send(Instant::ZERO, &data(1), 0, &mut net.out).unwrap();
            sent(&mut net.out).remove(0)
        };
        let refused = Error::Offload(OffloadError::LinkAuthentication);
        let (limits, out, rng) = (&net.limits, &mut net.out, &mut net.rng);
        assert_eq!(other.receive(&wire, limits, out, rng).unwrap_err(), refused);
        assert_eq!(
            other.receive(&unkeyed, limits, out, rng).unwrap_err(),
            refused
        );
        assert_eq!(
            plain.receive(&wire, limits, out, rng).unwrap_err(),
            Error::Offload(OffloadError::LinkDamaged)
        );
        for len in [15, 65] {
            assert_eq!(
                LinkKey::new(&alloc::vec![0; len]).unwrap_err(),
                Error::Offload(OffloadError::BadLinkKeyLength(len))
            );
        }
    }

    #[test]
    fn far_future_sequence_numbers_are_refused() {
        let mut net = Net::new(None);
        let m = net.send(1);
        net.b_takes(&m);
        let mut far = link(A, B, None, 111);
        far.next_seq = 1 + RECEIVE_WINDOW + 1;
        far.in_flight.clear();
        far.send(Instant::ZERO, &data(9), 0, &mut net.out).unwrap();
        let wire = sent(&mut net.out).remove(0);
        // Its floor (66) lets the receiver move on: a sender says it resolved 2..65.
        assert_eq!(net.b_takes(&wire).0, [9]);
        // But a message beyond the window of the current floor is refused.
        let mut beyond = link(A, B, None, 111);
        beyond.next_seq = 500;
        beyond.in_flight.insert(
            100,
            InFlight {
                bytes: Vec::new(),
                tag: 0,
                tries: 0,
                next_at: Instant::MAX,
            },
        );
        beyond
            .send(Instant::ZERO, &data(8), 0, &mut net.out)
            .unwrap();
        let wire = sent(&mut net.out).remove(0);
        assert_eq!(
            net.b
                .receive(&wire, &net.limits, &mut net.out, &mut net.rng),
            Err(Error::Offload(OffloadError::SequenceOutOfWindow {
                seq: 500,
                next: 100
            }))
        );
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
            let wires = sent(&mut out);
            if !lost.is_empty() {
                assert_eq!(lost, [42]);
                assert_eq!(wires.len(), 1, "the floor update");
                break;
            }
            for bytes in wires {
                assert_eq!(bytes, first, "retransmissions are bit-identical");
                at.push(now);
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

    /// Issue 13 item 5: every retransmission due is attempted even after the outbox
    /// refused one, so each is counted as lost (before, the first refusal ended the round
    /// and the others were neither sent nor counted), and each is tried again later.
    #[test]
    fn item_5_retransmissions_refused_by_a_full_outbox_are_each_counted() {
        let (mut a, _) = pair(None);
        let mut out = Outbox::default();
        for i in 0..3 {
            a.send(Instant::ZERO, &data(i), 0, &mut out).unwrap();
        }
        let mut full = Outbox::new(1);
        full.push(Output::Event(OffloadEvent::Appliance(
            crate::offload::ApplianceEvent::SendFailed { session: 0 },
        )))
        .unwrap();
        let due = a.poll_timeout().unwrap();
        assert!(a.handle_timeout(due, &mut full).is_empty());
        full.pop();
        assert_eq!(full.pop(), Some(Output::Lost { count: 3 }));
        // Nothing was given up: the three go out at the next timeout.
        let mut out = Outbox::default();
        assert!(a.handle_timeout(due, &mut out).is_empty());
        assert_eq!(out.len(), 3);
    }
}

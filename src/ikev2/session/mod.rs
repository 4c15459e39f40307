//! One IKE SA after IKE_SA_INIT: shared by the initiator and the responder.
//!
//! Exchanges follow RFC 7296 §2.1-§2.3: window size 1 in each direction; only the
//! exchange initiator retransmits (the stored bytes, bit-identical, exponential back-off);
//! the exchange responder caches its last response and replays it when the same request
//! (same message ID, authenticated) arrives again; responses go to the source address and
//! port of the request.

mod auth;
mod child_ex;
mod ike_rekey;

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use rand_core::CryptoRng;

use super::codec::{
    AuthPayload, ExchangeType, Flags, Header, Identity, KePayload, NON_ESP_MARKER, Notify, Payload,
    Proposal, TrafficSelector,
};
use super::config::{IkeConfig, Retransmit};
use super::consts::notify;
use super::keys::{IkeDissectionKeys, IkeKeys, SecretBytes};
use super::proposal::IkeSuite;
use super::sk::SkCipher;
use super::{FailReason, IkeError, IkeEvent, IkeSaId};
use crate::crypto::dh::KeyPair;
use crate::ipsec::{self, ChildSa, SaKeys, Suite, UdpEncap};
use crate::{Error, Instant, Outbox, Output, Transmit};

/// Child SAs one IKE SA holds at once: the current one and the one it is replacing.
pub(crate) const MAX_CHILDREN: usize = 2;

/// Everything an IKE SA operation needs from its actor.
pub(crate) struct Ctx<'a> {
    pub now: Instant,
    pub out: &'a mut Outbox<IkeEvent>,
    pub rng: &'a mut dyn CryptoRng,
    /// Whether an IKE SPI of ours is already used by another IKE SA of the actor (a new
    /// one for a rekeyed IKE SA must not be).
    pub spi_taken: &'a dyn Fn(&[u8; 8]) -> bool,
    /// Whether the actor can hold one more retiring IKE SA (the old one of a rekey).
    pub room_to_rekey: bool,
}

impl<'a> Ctx<'a> {
    /// A context for work that starts no IKE SA rekey (so needs no SPI check or room).
    pub(crate) fn new(
        now: Instant,
        out: &'a mut Outbox<IkeEvent>,
        rng: &'a mut dyn CryptoRng,
    ) -> Ctx<'a> {
        fn none_taken(_: &[u8; 8]) -> bool {
            false
        }
        Ctx {
            now,
            out,
            rng,
            spi_taken: &none_taken,
            room_to_rekey: true,
        }
    }

    pub(crate) fn event(&mut self, e: IkeEvent) -> Result<(), Error> {
        self.out.event(e)
    }

    pub(crate) fn transmit(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        marker: bool,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let mut data = Vec::with_capacity(bytes.len() + 4);
        if marker {
            data.extend_from_slice(&NON_ESP_MARKER);
        }
        data.extend_from_slice(bytes);
        self.out.push(Output::Transmit(Transmit { from, to, data }))
    }
}

/// A request in flight and its retransmission schedule.
pub(crate) struct Retrans {
    pub bytes: Vec<u8>,
    tries: u32,
    next_at: Instant,
    interval: Duration,
}

/// What a retransmission timer says.
pub(crate) enum Tick {
    Wait,
    Resend,
    GiveUp,
}

impl Retrans {
    pub(crate) fn new(bytes: Vec<u8>, now: Instant, policy: &Retransmit) -> Retrans {
        Retrans {
            bytes,
            tries: 1,
            next_at: now + policy.initial,
            interval: policy.initial,
        }
    }

    pub(crate) fn next_at(&self) -> Instant {
        self.next_at
    }

    pub(crate) fn tick(&mut self, now: Instant, policy: &Retransmit) -> Tick {
        if now < self.next_at {
            return Tick::Wait;
        }
        if self.tries >= policy.max_tries {
            return Tick::GiveUp;
        }
        self.tries += 1;
        self.interval = self.interval.saturating_mul(2);
        self.next_at = now + self.interval;
        Tick::Resend
    }
}

/// The request we are waiting on an answer for.
pub(crate) enum Request {
    /// IKE_AUTH (original initiator); the Child SA inbound SPI we proposed.
    Auth { spi_in: u32 },
    /// CREATE_CHILD_SA rekeying the Child SA with inbound SPI `old_spi_in`.
    Rekey {
        old_spi_in: u32,
        spi_in: u32,
        ni: Vec<u8>,
    },
    /// INFORMATIONAL deleting the Child SA with inbound SPI `spi_in`.
    DeleteChild { spi_in: u32 },
    /// INFORMATIONAL deleting the IKE SA.
    DeleteIke,
    /// Empty INFORMATIONAL.
    Liveness,
    /// CREATE_CHILD_SA rekeying the IKE SA (§1.3.2): our new SPI, nonce and key share.
    RekeyIke {
        spi: [u8; 8],
        ni: Vec<u8>,
        share: Share,
        rounds: u8,
    },
    /// INFORMATIONAL deleting this IKE SA after we rekeyed it: its Child SAs live on in
    /// the new one, so nothing is reported.
    DeleteRekeyed,
}

struct Pending {
    msg_id: u32,
    exchange: ExchangeType,
    retrans: Retrans,
    request: Request,
}

/// A command waiting for the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Rekey,
    /// Delete the Child SA with this inbound SPI (None: the current one).
    DeleteChild(Option<u32>),
    DeleteIke,
    Liveness,
    RekeyIke,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// IKE_SA_INIT done, IKE_AUTH not yet.
    Authenticating,
    Established,
    /// Failed at the responder; kept only to replay the last response until `until`.
    Closing {
        until: Instant,
    },
    /// Replaced by a rekeyed IKE SA (its successor holds the Child SAs); kept until the
    /// Delete of this SA is answered (we rekeyed) or received (the peer did), at most
    /// until `until`. Nothing it does is reported any more.
    Rekeyed {
        until: Instant,
    },
    Dead,
}

/// The timers of one IKE SA (quinn-proto's connection/timer.rs shape): their deadlines
/// come from [`IkeSa::deadline`], which both `poll_timeout` and `handle_timeout` consult.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// A closing or rekeyed SA's end of life.
    Linger,
    /// The next retransmission (or the give-up) of our pending request.
    Retransmit,
}

impl Timer {
    /// Every timer, in the order `handle_timeout` walks them: the end of life first, as it
    /// makes any retransmission moot.
    pub(crate) const ALL: [Timer; 2] = [Timer::Linger, Timer::Retransmit];
}

/// The Delete payload of an IKE SA: no SPIs, as the header already names the SA (§3.11).
fn delete_ike_sa() -> Payload {
    Payload::Delete(super::codec::Delete {
        protocol: super::consts::protocol::IKE,
        spi_size: 0,
        spis: Vec::new(),
    })
}

/// Who holds an IKE SA's proof keys (SK_pi, SK_pr), its credential and SK_d.
pub(crate) enum Secrets {
    /// This actor: it computes and checks AUTH itself (the plain initiator and responder).
    Local {
        sk_d: SecretBytes,
        sk_pi: SecretBytes,
        sk_pr: SecretBytes,
    },
    /// A substitution server (seed 004): the terminal holds SK_e and SK_a only, and its
    /// IKE_AUTH waits for the server's authentication and key responses.
    AtServer(Delegation),
    /// The server released SK_d with its key response (S48), after it authenticated the
    /// peer and its policy allowed it; SK_pi, SK_pr and the credential never leave it.
    /// An IKE SA rekey needs the server's Diffie-Hellman: the peer's request waits in
    /// `rekey` (a `Held::Request`) until the server answered.
    Released {
        sk_d: SecretBytes,
        rekey: Option<alloc::boxed::Box<Held>>,
    },
}

/// Where a delegated IKE_AUTH is (seed 004, S9-S14 at the terminal).
pub(crate) enum Delegation {
    /// Waiting for the peer's IKE_AUTH (responder: its request; initiator: its response).
    AwaitPeer,
    /// The peer's IKE_AUTH is held while the server authenticates it and releases SK_d.
    Asked(alloc::boxed::Box<Held>),
}

/// Who holds our key share of an IKE SA rekey we started.
pub(crate) enum Share {
    /// This actor: the key pair.
    Local(KeyPair),
    /// The substitution server (seed 004): we hold its public value only, and offer
    /// what the server chose to offer (its proposals, our SPI set on each).
    AtServer { ke: KePayload, offer: Vec<Proposal> },
}

impl Share {
    fn payload(&self) -> KePayload {
        match self {
            Share::Local(kp) => KePayload {
                group: kp.group().id(),
                data: kp.public().to_vec(),
            },
            Share::AtServer { ke, .. } => ke.clone(),
        }
    }
}

/// A peer's message held for the substitution server (seed 004).
pub(crate) enum Held {
    /// A request the peer sent (its IKE_AUTH, or its IKE SA rekey), answered once the
    /// server spoke.
    Request {
        msg_id: u32,
        payloads: Vec<Payload>,
        from: SocketAddr,
        to: SocketAddr,
        marker: bool,
    },
    /// Original initiator: the peer's IKE_AUTH response; the Child SA it carries is taken
    /// once the server spoke.
    Response { payloads: Vec<Payload>, spi_in: u32 },
    /// The answer to an IKE SA rekey we started with the server's share: the new IKE SA
    /// (our `spi`, our nonce) is derived once the server sent g^ir.
    OwnRekey {
        payloads: Vec<Payload>,
        spi: [u8; 8],
        ni: Vec<u8>,
        offer: Vec<Proposal>,
        rounds: u8,
    },
}

impl Held {
    /// A request held with where its answer goes.
    fn request(
        msg_id: u32,
        payloads: Vec<Payload>,
        (from, to, marker): (SocketAddr, SocketAddr, bool),
    ) -> alloc::boxed::Box<Held> {
        alloc::boxed::Box::new(Held::Request {
            msg_id,
            payloads,
            from,
            to,
            marker,
        })
    }

    fn payloads(&self) -> &[Payload] {
        match self {
            Held::Request { payloads, .. }
            | Held::Response { payloads, .. }
            | Held::OwnRekey { payloads, .. } => payloads,
        }
    }
}

/// The server's answer to a delegated IKE_AUTH (seed 004, S10-S14).
pub(crate) enum Verdict {
    /// S11 yes and S14: the peer is authenticated and allowed. `proof` is our own
    /// identification and AUTH (and CERT) as the server built them (responder: IDr …;
    /// for an initiator it was sent already and is empty here); `sk_d` came sealed in the
    /// key response.
    Accepted {
        /// Our IDr, [CERT], AUTH payloads (responder only).
        proof: Vec<Payload>,
        /// SK_d.
        sk_d: SecretBytes,
    },
    /// S11 no, or the server could not be asked (S19): the exchange fails with this reason.
    Refused(FailReason),
}

/// The server's answer to a delegated IKE SA rekey (the peer's CREATE_CHILD_SA held).
pub(crate) enum RekeyVerdict {
    /// The proposal chosen (its number and suite), our KE payload, and g^ir.
    Accepted {
        num: u8,
        suite: super::proposal::IkeSuite,
        ke: KePayload,
        g_ir: zeroize::Zeroizing<Vec<u8>>,
    },
    /// Answer the peer with this error notify (NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD with
    /// its group as data, TEMPORARY_FAILURE when the server could not help).
    Refused { notify: u16, data: Vec<u8> },
}

/// The server's answer for an IKE SA rekey we started (seed 004).
pub(crate) enum OwnRekeyVerdict {
    /// The peer asked for another group: send the request again with this share.
    Resend(KePayload),
    /// g^ir: derive the new IKE SA.
    Accepted { g_ir: zeroize::Zeroizing<Vec<u8>> },
    /// The rekey failed (reported with this notify); the IKE SA stays.
    Refused(u16),
}

/// How an IKE SA is to be authenticated.
pub(crate) enum Authority {
    /// Here, with the configuration's credential.
    Local,
    /// By a substitution server (seed 004).
    Delegated,
}

/// What IKE_SA_INIT produced.
pub(crate) struct NewSa {
    /// Who authenticates: with `Delegated`, `keys` carries only SK_e and SK_a.
    pub authority: Authority,
    pub cfg: Arc<IkeConfig>,
    pub id: IkeSaId,
    pub initiator: bool,
    pub suite: IkeSuite,
    pub keys: IkeKeys,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    pub init_request: Vec<u8>,
    pub init_response: Vec<u8>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub nat_t: bool,
    pub udp_encap: bool,
    pub now: Instant,
    /// How long a failed responder SA keeps replaying its last response.
    pub linger: Duration,
}

pub(crate) struct IkeSa {
    pub cfg: Arc<IkeConfig>,
    pub id: IkeSaId,
    pub initiator: bool,
    pub state: State,
    pub suite: IkeSuite,
    sk: SkCipher,
    secrets: Secrets,
    ni: Vec<u8>,
    nr: Vec<u8>,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// IKE runs on the NAT-T port with the non-ESP marker.
    pub nat_t: bool,
    /// ESP is UDP-encapsulated (a NAT was detected or forced).
    pub udp_encap: bool,
    pub created: Instant,
    linger: Duration,
    next_msg_id: u32,
    pending: Option<Pending>,
    queue: VecDeque<Command>,
    peer_next_id: u32,
    last_response: Option<(u32, Vec<u8>)>,
    pub children: Vec<ChildSa>,
    /// Kept only with `keep_keys_for_dissection`.
    dissection: Option<IkeDissectionKeys>,
    /// The IKE SA that replaced this one in a rekey, until the actor takes it.
    successor: Option<alloc::boxed::Box<IkeSa>>,
    /// The peer's authenticated identity, once established.
    peer_id: Option<Identity>,
    /// The peer's IKE_AUTH carried INITIAL_CONTACT, until the actor acts on it.
    initial_contact: bool,
}

impl IkeSa {
    pub(crate) fn new(n: NewSa) -> Result<IkeSa, IkeError> {
        let sk = SkCipher::new(&n.suite, &n.keys, n.initiator)?;
        let dissection = n.cfg.keep_keys_for_dissection.then(|| IkeDissectionKeys {
            spi_i: n.id.spi_i,
            spi_r: n.id.spi_r,
            encr: n.suite.encr,
            integ: n.suite.integ,
            sk_ei: n.keys.sk_ei.clone(),
            sk_er: n.keys.sk_er.clone(),
            sk_ai: n.keys.sk_ai.clone(),
            sk_ar: n.keys.sk_ar.clone(),
        });
        Ok(IkeSa {
            dissection,
            successor: None,
            peer_id: None,
            initial_contact: false,
            id: n.id,
            initiator: n.initiator,
            state: State::Authenticating,
            suite: n.suite,
            sk,
            secrets: match n.authority {
                Authority::Local => Secrets::Local {
                    sk_d: n.keys.sk_d.clone(),
                    sk_pi: n.keys.sk_pi.clone(),
                    sk_pr: n.keys.sk_pr.clone(),
                },
                Authority::Delegated => Secrets::AtServer(Delegation::AwaitPeer),
            },
            ni: n.ni,
            nr: n.nr,
            init_request: n.init_request,
            init_response: n.init_response,
            local: n.local,
            remote: n.remote,
            nat_t: n.nat_t,
            udp_encap: n.udp_encap,
            created: n.now,
            linger: n.linger,
            // The IKE_SA_INIT exchange used message ID 0.
            next_msg_id: if n.initiator { 1 } else { 0 },
            pending: None,
            queue: VecDeque::new(),
            peer_next_id: if n.initiator { 0 } else { 1 },
            last_response: None,
            children: Vec::new(),
            cfg: n.cfg,
        })
    }

    /// SK_d, once this actor holds it (a delegated SA before the key response does not).
    pub(crate) fn sk_d(&self) -> Result<&SecretBytes, IkeError> {
        match &self.secrets {
            Secrets::Local { sk_d, .. } | Secrets::Released { sk_d, .. } => Ok(sk_d),
            Secrets::AtServer(_) => Err(IkeError::KeysAtServer),
        }
    }

    /// A delegated IKE SA rekey waiting for the server: the peer's CREATE_CHILD_SA
    /// payloads (SA, Ni, KEi …), opened.
    pub(crate) fn rekey_question(&self) -> Option<&[Payload]> {
        match &self.secrets {
            Secrets::Released {
                rekey: Some(held), ..
            } if matches!(**held, Held::Request { .. }) => Some(held.payloads()),
            _ => None,
        }
    }

    /// The peer's answer to a delegated IKE SA rekey we started, waiting for the server
    /// (its SA, Nr and KEr, or a notify), opened.
    pub(crate) fn own_rekey_answer(&self) -> Option<&[Payload]> {
        match &self.secrets {
            Secrets::Released {
                rekey: Some(held), ..
            } if matches!(**held, Held::OwnRekey { .. }) => Some(held.payloads()),
            _ => None,
        }
    }

    /// A delegated IKE_AUTH waiting for the server: the peer's identification, certificates
    /// and AUTH payloads, for the authentication request (S9).
    pub(crate) fn peer_proof(&self) -> Option<Vec<Payload>> {
        match &self.secrets {
            Secrets::AtServer(Delegation::Asked(held)) => Some(
                held.payloads()
                    .iter()
                    .filter(|p| is_proof(p))
                    .cloned()
                    .collect(),
            ),
            _ => None,
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.state == State::Dead
    }

    pub(crate) fn is_half_open(&self) -> bool {
        self.state == State::Authenticating
    }

    pub(crate) fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Replaced by a rekey and waiting to be deleted.
    pub(crate) fn is_retiring(&self) -> bool {
        matches!(self.state, State::Rekeyed { .. })
    }

    /// Our SPI of this IKE SA (the actor's key for it).
    pub(crate) fn our_spi(&self) -> [u8; 8] {
        if self.initiator {
            self.id.spi_i
        } else {
            self.id.spi_r
        }
    }

    /// The IKE SA that replaced this one in a rekey (taken once). The actor keeps both:
    /// this one until it is deleted, the successor from now on.
    pub(crate) fn take_successor(&mut self) -> Option<alloc::boxed::Box<IkeSa>> {
        self.successor.take()
    }

    /// The peer's authenticated identity (once established).
    pub(crate) fn peer_id(&self) -> Option<&Identity> {
        self.peer_id.as_ref()
    }

    /// If the peer's IKE_AUTH carried INITIAL_CONTACT (taken once): its identity, whose
    /// other IKE SAs the actor should forget (RFC 7296 §2.4).
    pub(crate) fn take_initial_contact(&mut self) -> Option<Identity> {
        if core::mem::take(&mut self.initial_contact) {
            self.peer_id.clone()
        } else {
            None
        }
    }

    /// The peer announced, by INITIAL_CONTACT on a new IKE SA, that it has no state for
    /// this one (it restarted): drop it and its Child SAs, as if the peer had deleted it.
    pub(crate) fn forget(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        self.deleted(ctx, true)
    }

    /// The IKE SA is deleted (by the peer, or by us and answered): it and its Child SAs
    /// are gone.
    fn deleted(&mut self, ctx: &mut Ctx<'_>, by_peer: bool) -> Result<(), Error> {
        self.state = State::Dead;
        self.pending = None;
        self.queue.clear();
        self.drop_children(ctx)?;
        ctx.event(IkeEvent::IkeSaDeleted {
            id: self.id,
            by_peer,
        })
    }

    /// The IKE_SA_INIT request this SA was created from (responder: for retransmissions).
    pub(crate) fn init_request(&self) -> &[u8] {
        &self.init_request
    }

    /// Replay our IKE_SA_INIT response (responder side).
    pub(crate) fn replay_init(
        &self,
        ctx: &mut Ctx<'_>,
        from: SocketAddr,
        to: SocketAddr,
        marker: bool,
    ) -> Result<(), Error> {
        ctx.transmit(to, from, marker, &self.init_response)
    }

    fn header(&self, exchange: ExchangeType, response: bool, message_id: u32) -> Header {
        Header {
            spi_i: self.id.spi_i,
            spi_r: self.id.spi_r,
            exchange,
            flags: Flags {
                initiator: self.initiator,
                version: false,
                response,
            },
            message_id,
        }
    }

    /// Seal and send a request; arm retransmission.
    fn send_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        payloads: &[Payload],
        request: Request,
    ) -> Result<(), Error> {
        let msg_id = self.next_msg_id;
        let header = self.header(exchange, false, msg_id);
        let bytes = self.sk.seal(&header, payloads, ctx.rng)?;
        if bytes.len() > self.cfg.limits.max_message_len {
            return Err(IkeError::MessageTooLarge {
                len: bytes.len(),
                max: self.cfg.limits.max_message_len,
            }
            .into());
        }
        ctx.transmit(self.local, self.remote, self.nat_t, &bytes)?;
        self.next_msg_id = self.next_msg_id.wrapping_add(1);
        self.pending = Some(Pending {
            msg_id,
            exchange,
            retrans: Retrans::new(bytes, ctx.now, &self.cfg.retransmit),
            request,
        });
        Ok(())
    }

    /// When timer `t` of this SA fires, if it is armed. The one source of deadlines for
    /// both [`IkeSa::poll_timeout`] and [`IkeSa::handle_timeout`].
    fn deadline(&self, t: Timer) -> Option<Instant> {
        match (t, self.state) {
            (Timer::Linger, State::Closing { until } | State::Rekeyed { until }) => Some(until),
            (Timer::Linger, _) => None,
            // A closing SA only replays its cached response; a dead one sends nothing.
            (Timer::Retransmit, State::Closing { .. } | State::Dead) => None,
            (Timer::Retransmit, _) => self.pending.as_ref().map(|p| p.retrans.next_at()),
        }
    }

    /// Walk the timers in [`Timer::ALL`] order: retransmit or give up.
    pub(crate) fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        if self.deadline(Timer::Linger).is_some_and(|t| ctx.now >= t) {
            // The linger ended: a closing SA stops replaying, a rekeyed one stops waiting
            // for the Delete exchange (and drops its own unanswered request).
            self.state = State::Dead;
            self.pending = None;
            return Ok(());
        }
        if self.deadline(Timer::Retransmit).is_none() {
            return Ok(());
        }
        let policy = self.cfg.retransmit;
        let Some(p) = self.pending.as_mut() else {
            return Ok(());
        };
        // `tick` itself tells a spurious wake-up (Wait) from a due retransmission.
        match p.retrans.tick(ctx.now, &policy) {
            Tick::Wait => Ok(()),
            Tick::Resend => {
                let (local, remote, nat_t) = (self.local, self.remote, self.nat_t);
                ctx.transmit(local, remote, nat_t, &p.retrans.bytes)
            }
            Tick::GiveUp => {
                self.pending = None;
                self.fail(ctx, FailReason::Timeout)
            }
        }
    }

    /// The earliest armed timer of this SA.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        Timer::ALL
            .into_iter()
            .filter_map(|t| self.deadline(t))
            .min()
    }

    /// The SA is gone: report its Child SAs deleted and the failure.
    pub(crate) fn fail(&mut self, ctx: &mut Ctx<'_>, reason: FailReason) -> Result<(), Error> {
        if let State::Rekeyed { .. } = self.state {
            // Its successor carries on; this one just goes.
            self.state = State::Dead;
            self.pending = None;
            return Ok(());
        }
        let was_established = self.state == State::Established;
        self.state = State::Dead;
        self.pending = None;
        self.queue.clear();
        if was_established {
            self.drop_children(ctx)?;
        }
        ctx.event(IkeEvent::Failed {
            id: self.id,
            reason,
        })
    }

    fn drop_children(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        for c in core::mem::take(&mut self.children) {
            self.child_deleted(ctx, &c)?;
        }
        Ok(())
    }

    /// Tell the application Child SA `c` (already out of `children`) is gone.
    fn child_deleted(&self, ctx: &mut Ctx<'_>, c: &ChildSa) -> Result<(), Error> {
        ctx.event(IkeEvent::ChildSaDeleted {
            id: self.id,
            spi_in: c.spi_in,
            spi_out: c.spi_out,
        })
    }

    /// A responder that refused IKE_AUTH keeps its response for replays a while.
    fn close_after_response(&mut self, ctx: &mut Ctx<'_>) {
        self.state = State::Closing {
            until: ctx.now + self.linger,
        };
    }

    /// Handle one IKE message (without non-ESP marker) for this SA.
    pub(crate) fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        msg: &[u8],
        from: SocketAddr,
        to: SocketAddr,
        marker: bool,
    ) -> Result<(), Error> {
        let limits = self.cfg.limits;
        let raw = Header::decode(msg, &limits)?;
        let h = raw.header;
        if h.flags.initiator == self.initiator {
            return Err(IkeError::WrongInitiatorFlag.into());
        }
        if self.state == State::Dead {
            return Err(IkeError::UnknownSpi.into());
        }
        if h.flags.response {
            return self.handle_response(ctx, msg, &h);
        }
        // A retransmitted request: replay the cached response, once it authenticates.
        if let Some((id, cached)) = &self.last_response
            && *id == h.message_id
            && h.message_id.wrapping_add(1) == self.peer_next_id
        {
            self.sk.open_raw(msg, &limits)?;
            return ctx.transmit(to, from, marker, cached);
        }
        // A retransmitted IKE_AUTH request while the server is being asked: the answer
        // does not exist yet, and the peer will retransmit again; authenticate and absorb.
        let held = match &self.secrets {
            Secrets::AtServer(Delegation::Asked(held)) => Some(held),
            Secrets::Released {
                rekey: Some(held), ..
            } => Some(held),
            _ => None,
        };
        if let Some(held) = held
            && let Held::Request { msg_id, .. } = **held
            && msg_id == h.message_id
        {
            self.sk.open_raw(msg, &limits)?;
            return Ok(());
        }
        if h.message_id != self.peer_next_id {
            return Err(IkeError::InvalidMessageId {
                got: h.message_id,
                expected: self.peer_next_id,
            }
            .into());
        }
        if !matches!(
            h.exchange,
            ExchangeType::IkeAuth | ExchangeType::CreateChildSa | ExchangeType::Informational
        ) || matches!(self.state, State::Closing { .. })
        {
            return Err(IkeError::UnexpectedRequest.into());
        }
        let opened = self.sk.open_raw(msg, &limits)?;
        let reply = match opened.payloads(&limits) {
            Ok(payloads) => {
                self.peer_next_id = self.peer_next_id.wrapping_add(1);
                if self.udp_encap || self.state == State::Authenticating {
                    // RFC 7296 §2.23: follow the peer's address behind a NAT.
                    self.remote = from;
                    self.local = to;
                    self.nat_t = marker;
                }
                match self.on_request(
                    ctx,
                    h.exchange,
                    payloads,
                    (from, to, marker),
                    h.message_id,
                )? {
                    Some(reply) => reply,
                    // Held for the substitution server; answered by `server_answered`.
                    None => return Ok(()),
                }
            }
            Err(e) => {
                self.peer_next_id = self.peer_next_id.wrapping_add(1);
                let n = match e {
                    IkeError::UnsupportedCriticalPayload(ty) => {
                        Notify::new(notify::UNSUPPORTED_CRITICAL_PAYLOAD, alloc::vec![ty])
                    }
                    _ => Notify::new(notify::INVALID_SYNTAX, Vec::new()),
                };
                if self.state == State::Authenticating {
                    self.close_after_response(ctx);
                }
                self.respond(
                    ctx,
                    h.exchange,
                    h.message_id,
                    &[Payload::Notify(n)],
                    from,
                    to,
                    marker,
                )?;
                return Err(e.into());
            }
        };
        self.respond(ctx, h.exchange, h.message_id, &reply, from, to, marker)
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        msg_id: u32,
        payloads: &[Payload],
        from: SocketAddr,
        to: SocketAddr,
        marker: bool,
    ) -> Result<(), Error> {
        let header = self.header(exchange, true, msg_id);
        let bytes = self.sk.seal(&header, payloads, ctx.rng)?;
        ctx.transmit(to, from, marker, &bytes)?;
        self.last_response = Some((msg_id, bytes));
        Ok(())
    }

    fn handle_response(&mut self, ctx: &mut Ctx<'_>, msg: &[u8], h: &Header) -> Result<(), Error> {
        let limits = self.cfg.limits;
        let Some(p) = &self.pending else {
            return Err(IkeError::UnsolicitedResponse.into());
        };
        if h.message_id != p.msg_id {
            return Err(IkeError::InvalidMessageId {
                got: h.message_id,
                expected: p.msg_id,
            }
            .into());
        }
        if h.exchange != p.exchange {
            return Err(IkeError::ExchangeTypeMismatch.into());
        }
        let payloads = self.sk.open_raw(msg, &limits)?.payloads(&limits);
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let payloads = match payloads {
            Ok(p) => p,
            Err(e) => {
                // An authenticated but undecodable answer: the exchange failed.
                if let Request::Auth { .. } = p.request {
                    self.fail(ctx, FailReason::InvalidResponse)?;
                } else {
                    self.pump_queue(ctx)?;
                }
                return Err(e.into());
            }
        };
        self.on_response(ctx, p.request, payloads)?;
        self.pump_queue(ctx)
    }

    /// A request's answer, or `None` when it waits for the substitution server.
    fn on_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        payloads: Vec<Payload>,
        (from, to, marker): (SocketAddr, SocketAddr, bool),
        msg_id: u32,
    ) -> Result<Option<Vec<Payload>>, Error> {
        let answer = match (exchange, self.state) {
            (ExchangeType::IkeAuth, State::Authenticating) if !self.initiator => {
                if let Secrets::AtServer(Delegation::AwaitPeer) = self.secrets {
                    let held = Held::request(msg_id, payloads, (from, to, marker));
                    self.secrets = Secrets::AtServer(Delegation::Asked(held));
                    return Ok(None);
                }
                self.auth_request(ctx, payloads)
            }
            (ExchangeType::Informational, State::Established | State::Rekeyed { .. }) => {
                self.informational_request(ctx, payloads)
            }
            (ExchangeType::CreateChildSa, State::Established)
                if is_ike_rekey(&payloads)
                    && self.pending.is_none()
                    && matches!(self.secrets, Secrets::Released { rekey: None, .. }) =>
            {
                // A delegated IKE SA: the server makes the new Diffie-Hellman share.
                if let Secrets::Released { rekey, .. } = &mut self.secrets {
                    *rekey = Some(Held::request(msg_id, payloads, (from, to, marker)));
                }
                return Ok(None);
            }
            (ExchangeType::CreateChildSa, State::Established) => {
                self.create_child_request(ctx, payloads)
            }
            (ExchangeType::CreateChildSa, State::Rekeyed { .. }) => {
                Ok(alloc::vec![Payload::Notify(Notify::new(
                    notify::TEMPORARY_FAILURE,
                    Vec::new()
                ))])
            }
            _ => Ok(alloc::vec![Payload::Notify(Notify::new(
                notify::INVALID_SYNTAX,
                Vec::new()
            ))]),
        };
        answer.map(Some)
    }

    fn on_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: Request,
        payloads: Vec<Payload>,
    ) -> Result<(), Error> {
        match request {
            Request::Auth { spi_in } => self.auth_response(ctx, payloads, spi_in),
            Request::Rekey {
                old_spi_in,
                spi_in,
                ni,
            } => self.rekey_response(ctx, payloads, old_spi_in, spi_in, &ni),
            Request::DeleteChild { spi_in } => {
                if let Some(i) = self.children.iter().position(|c| c.spi_in == spi_in) {
                    let c = self.children.remove(i);
                    self.child_deleted(ctx, &c)?;
                }
                Ok(())
            }
            Request::DeleteIke => self.deleted(ctx, false),
            Request::Liveness => ctx.event(IkeEvent::LivenessConfirmed { id: self.id }),
            Request::RekeyIke {
                spi,
                ni,
                share,
                rounds,
            } => self.ike_rekey_response(ctx, payloads, spi, ni, share, rounds),
            Request::DeleteRekeyed => {
                self.state = State::Dead;
                Ok(())
            }
        }
    }

    /// Run a command now, or queue it behind the outstanding exchange.
    pub(crate) fn command(&mut self, ctx: &mut Ctx<'_>, cmd: Command) -> Result<(), Error> {
        if self.state != State::Established {
            return Err(IkeError::NotEstablished.into());
        }
        if self.pending.is_some() {
            if self.queue.len() >= self.cfg.max_queued_commands {
                return Err(Error::CapacityExceeded {
                    what: "IKE command queue",
                    bound: self.cfg.max_queued_commands,
                });
            }
            self.queue.push_back(cmd);
            return Ok(());
        }
        self.start_command(ctx, cmd)
    }

    fn pump_queue(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        while self.pending.is_none() && self.state == State::Established {
            let Some(cmd) = self.queue.pop_front() else {
                break;
            };
            match self.start_command(ctx, cmd) {
                // A queued command that no longer applies (its Child SA went away) is
                // dropped; anything else is reported.
                Err(Error::Ike(IkeError::NoChildSa | IkeError::RekeyPending)) => {}
                other => other?,
            }
        }
        Ok(())
    }

    fn start_command(&mut self, ctx: &mut Ctx<'_>, cmd: Command) -> Result<(), Error> {
        match cmd {
            Command::Rekey => self.start_rekey(ctx),
            Command::DeleteChild(which) => {
                let spi_in = match which {
                    Some(s) => s,
                    None => self.current_child().ok_or(IkeError::NoChildSa)?.spi_in,
                };
                let d = super::codec::Delete {
                    protocol: super::consts::protocol::ESP,
                    spi_size: 4,
                    spis: alloc::vec![spi_in.to_be_bytes().to_vec()],
                };
                self.send_request(
                    ctx,
                    ExchangeType::Informational,
                    &[Payload::Delete(d)],
                    Request::DeleteChild { spi_in },
                )
            }
            Command::DeleteIke => self.send_request(
                ctx,
                ExchangeType::Informational,
                &[delete_ike_sa()],
                Request::DeleteIke,
            ),
            Command::Liveness => {
                self.send_request(ctx, ExchangeType::Informational, &[], Request::Liveness)
            }
            Command::RekeyIke => self.start_ike_rekey(ctx),
        }
    }

    /// The newest Child SA.
    pub(crate) fn current_child(&self) -> Option<&ChildSa> {
        self.children.last()
    }

    /// The exported IKE keys, if the configuration keeps them.
    pub(crate) fn dissection_keys(&self) -> Option<&IkeDissectionKeys> {
        self.dissection.as_ref()
    }

    /// The data plane's hand-over value for a Child SA negotiated on this IKE SA: the ESP
    /// endpoints are the IKE endpoints (tunnel addresses; with UDP encapsulation, the
    /// addresses and ports IKE uses on the NAT-T port), lifetimes from the configuration.
    /// Checked with [`ChildSa::validate`]; an SA the data plane would refuse is reported as
    /// the notify `NO_PROPOSAL_CHOSEN`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn child_sa(
        &self,
        suite: Suite,
        transport: bool,
        spi_in: u32,
        spi_out: u32,
        keys_in: SaKeys,
        keys_out: SaKeys,
        ts_local: Vec<ipsec::TrafficSelector>,
        ts_remote: Vec<ipsec::TrafficSelector>,
    ) -> Result<ChildSa, u16> {
        let mode = if transport {
            ipsec::Mode::Transport
        } else {
            ipsec::Mode::Tunnel {
                local: self.local.ip(),
                remote: self.remote.ip(),
            }
        };
        let mut sa = ChildSa::new(
            spi_in, spi_out, suite, keys_in, keys_out, mode, ts_local, ts_remote,
        );
        sa.encap = self.udp_encap.then_some(UdpEncap {
            local: self.local,
            remote: self.remote,
        });
        sa.lifetime = self.cfg.child_lifetime;
        sa.validate().map_err(|_| notify::NO_PROPOSAL_CHOSEN)?;
        Ok(sa)
    }

    /// A fresh inbound SPI: random, above the IANA-reserved 1-255, unused here.
    fn new_spi(&self, rng: &mut dyn CryptoRng) -> u32 {
        loop {
            let spi = rng.next_u32();
            if spi > 255 && self.children.iter().all(|c| c.spi_in != spi) {
                return spi;
            }
        }
    }

    /// Whether every selector in `got` lies inside one of `offered`.
    fn ts_within(got: &[TrafficSelector], offered: &[TrafficSelector]) -> bool {
        !got.is_empty()
            && got.len() <= super::config::MAX_TS
            && got.iter().all(|g| offered.iter().any(|o| o.covers(g)))
    }
}

/// Whether a CREATE_CHILD_SA request proposes a new IKE SA (§1.3.2).
pub(crate) fn is_ike_rekey(payloads: &[Payload]) -> bool {
    payloads.iter().any(|p| match p {
        Payload::Sa(props) => props
            .iter()
            .any(|q| q.protocol == super::consts::protocol::IKE),
        _ => false,
    })
}

/// Whether a payload is part of a peer's proof of identity: identification, certificates,
/// certificate requests and AUTH (what an authentication request carries, S9).
fn is_proof(p: &Payload) -> bool {
    use super::consts::payload as pt;
    matches!(
        p.payload_type(),
        pt::IDI | pt::IDR | pt::AUTH | pt::CERT | pt::CERTREQ
    )
}

/// A fresh 32-octet nonce.
pub(crate) fn nonce(rng: &mut dyn CryptoRng) -> Vec<u8> {
    let mut n = alloc::vec![0u8; 32];
    rng.fill_bytes(&mut n);
    n
}

/// The first payload of each kind an exchange reads (later ones of a kind are ignored).
#[derive(Default)]
pub(crate) struct Found<'a> {
    pub sa: Option<&'a [Proposal]>,
    pub ke: Option<&'a KePayload>,
    pub nonce: Option<&'a [u8]>,
    pub id_i: Option<&'a Identity>,
    pub id_r: Option<&'a Identity>,
    pub auth: Option<&'a AuthPayload>,
    pub ts_i: Option<&'a [TrafficSelector]>,
    pub ts_r: Option<&'a [TrafficSelector]>,
}

impl<'a> Found<'a> {
    pub(crate) fn of(payloads: &'a [Payload]) -> Found<'a> {
        let mut f = Found::default();
        for p in payloads {
            match p {
                Payload::Sa(s) => f.sa = f.sa.or(Some(s)),
                Payload::Ke(k) => f.ke = f.ke.or(Some(k)),
                Payload::Nonce(n) => f.nonce = f.nonce.or(Some(n)),
                Payload::IdI(i) => f.id_i = f.id_i.or(Some(i)),
                Payload::IdR(i) => f.id_r = f.id_r.or(Some(i)),
                Payload::Auth(a) => f.auth = f.auth.or(Some(a)),
                Payload::TsI(t) => f.ts_i = f.ts_i.or(Some(t)),
                Payload::TsR(t) => f.ts_r = f.ts_r.or(Some(t)),
                _ => {}
            }
        }
        f
    }

    /// SA, KE and nonce: what IKE_SA_INIT and an IKE SA rekey carry.
    pub(crate) fn sa_ke_nonce(&self) -> Option<(&'a [Proposal], &'a KePayload, &'a [u8])> {
        Some((self.sa?, self.ke?, self.nonce?))
    }

    /// SA, TSi and TSr: what creates a Child SA.
    #[allow(clippy::type_complexity)]
    pub(crate) fn sa_ts(
        &self,
    ) -> Option<(&'a [Proposal], &'a [TrafficSelector], &'a [TrafficSelector])> {
        Some((self.sa?, self.ts_i?, self.ts_r?))
    }
}

/// The first error notify in `payloads`.
pub(crate) fn error_notify(payloads: &[Payload]) -> Option<u16> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.is_error() => Some(n.ty),
        _ => None,
    })
}

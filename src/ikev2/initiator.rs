//! The IKEv2 initiator actor: one IKE SA toward one responder.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::codec::{ExchangeType, Header, KePayload, Limits, Message, Notify, Payload};
use super::config::{IkeConfig, InitiatorConfig};
use super::consts::notify;
use super::keys::{IkeKeys, skeyseed};
use super::nat::{nat_detected, natd_notifies, natd_source};
use super::proposal::{accept_ike, ike_offer, invalid_ke_group};
use super::session::{Authority, Command, Ctx, Found, IkeSa, NewSa, Retrans, Tick, nonce};
use super::{FailReason, IkeError, IkeEvent, IkeSaId};
use crate::crypto::dh::KeyPair;
use crate::ipsec::ChildSa;
use crate::{Actor, Error, Input, Instant, Outbox, Output, Rng};

/// COOKIE and INVALID_KE_PAYLOAD rounds tolerated in one IKE_SA_INIT.
const MAX_INIT_ROUNDS: u8 = 4;

/// An IKEv2 initiator: runs IKE_SA_INIT and IKE_AUTH toward the configured responder when
/// [`Initiator::start`] is called, then keeps the IKE SA and its Child SA.
pub struct Initiator {
    cfg: Arc<IkeConfig>,
    local: SocketAddr,
    remote: SocketAddr,
    rng: Rng,
    out: Outbox<IkeEvent>,
    phase: Phase,
    /// The IKE SA a rekey replaced, until it is deleted.
    retiring: Option<Box<IkeSa>>,
}

impl core::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Initiator")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("ike_sa", &self.ike_sa_id())
            .field("established", &self.is_established())
            .finish_non_exhaustive()
    }
}

enum Phase {
    Idle,
    Init(Box<InitState>),
    Sa(Box<IkeSa>),
}

struct InitState {
    spi_i: [u8; 8],
    ni: Vec<u8>,
    kp: KeyPair,
    cookie: Option<Vec<u8>>,
    /// NAT_DETECTION_SOURCE_IP data, fixed for every round of this IKE_SA_INIT (a COOKIE
    /// retry repeats all other payloads unchanged, §2.6).
    natd_src: [u8; 20],
    retrans: Retrans,
    rounds: u8,
}

impl Initiator {
    /// A new initiator; nothing is sent until [`Initiator::start`], which takes `now`. It
    /// takes no `now` itself because it starts no clock (unlike
    /// [`Responder::new`](super::Responder::new), whose cookie secret is born at `now`):
    /// docs/architecture.md, "API conventions".
    pub fn new(cfg: InitiatorConfig, rng: Rng) -> Result<Initiator, Error> {
        cfg.ike.validate()?;
        Ok(Initiator {
            cfg: Arc::new(cfg.ike),
            local: cfg.local,
            remote: cfg.remote,
            rng,
            out: Outbox::default(),
            phase: Phase::Idle,
            retiring: None,
        })
    }

    /// Begin IKE_SA_INIT. Refused while an IKE SA is being set up or is up.
    pub fn start(&mut self, now: Instant) -> Result<(), Error> {
        if !matches!(self.phase, Phase::Idle) {
            return Err(IkeError::AlreadyStarted.into());
        }
        let mut spi_i = [0u8; 8];
        while spi_i == [0; 8] {
            self.rng.fill_bytes(&mut spi_i);
        }
        let group = self.cfg.ike_proposals[0].groups[0];
        let ni = nonce(&mut *self.rng);
        let kp = KeyPair::generate(group, &mut *self.rng);
        let natd_src = natd_source(
            self.cfg.force_encap,
            &mut *self.rng,
            &spi_i,
            &[0; 8],
            self.local,
        );
        let mut st = InitState {
            spi_i,
            ni,
            kp,
            cookie: None,
            natd_src,
            retrans: Retrans::new(Vec::new(), now, &self.cfg.retransmit),
            rounds: 0,
        };
        self.send_init(now, &mut st)?;
        self.phase = Phase::Init(Box::new(st));
        Ok(())
    }

    /// Rekey the Child SA (CREATE_CHILD_SA); the old one is deleted once the new one is up.
    pub fn rekey_child(&mut self, now: Instant) -> Result<(), Error> {
        self.command(now, Command::Rekey)
    }

    /// Delete the current Child SA (INFORMATIONAL).
    pub fn delete_child(&mut self, now: Instant) -> Result<(), Error> {
        self.command(now, Command::DeleteChild(None))
    }

    /// Rekey the IKE SA (CREATE_CHILD_SA, RFC 7296 §1.3.2): [`IkeEvent::IkeSaRekeyed`]
    /// names the new one; the Child SAs stay as they are.
    pub fn rekey_ike(&mut self, now: Instant) -> Result<(), Error> {
        self.command(now, Command::RekeyIke)
    }

    /// Delete the IKE SA and its Child SAs (INFORMATIONAL).
    pub fn delete_ike(&mut self, now: Instant) -> Result<(), Error> {
        self.command(now, Command::DeleteIke)
    }

    /// Send an empty INFORMATIONAL request (liveness check).
    pub fn send_liveness(&mut self, now: Instant) -> Result<(), Error> {
        self.command(now, Command::Liveness)
    }

    /// The IKE SA, once IKE_SA_INIT completed.
    pub fn ike_sa_id(&self) -> Option<IkeSaId> {
        match &self.phase {
            Phase::Sa(sa) => Some(sa.id),
            _ => None,
        }
    }

    /// Whether the IKE SA is authenticated and up.
    pub fn is_established(&self) -> bool {
        matches!(&self.phase, Phase::Sa(sa) if sa.is_established())
    }

    /// The current (newest) Child SA.
    pub fn child_sa(&self) -> Option<&ChildSa> {
        match &self.phase {
            Phase::Sa(sa) => sa.current_child(),
            _ => None,
        }
    }

    /// All Child SAs (two while a rekey completes).
    pub fn child_sas(&self) -> &[ChildSa] {
        match &self.phase {
            Phase::Sa(sa) => &sa.children,
            _ => &[],
        }
    }

    /// Debugging aid: the IKE SA's SPIs, SK_e/SK_a keys and algorithms, for a packet
    /// analyser's IKEv2 decryption table. `None` unless the configuration sets
    /// [`IkeConfig::keep_keys_for_dissection`] (and until IKE_SA_INIT completed). Never
    /// needed to run IKE; see [`super::IkeDissectionKeys`].
    pub fn ike_keys_for_dissection(&self) -> Option<super::IkeDissectionKeys> {
        match &self.phase {
            Phase::Sa(sa) => sa.dissection_keys().cloned(),
            _ => None,
        }
    }

    /// Our and the peer's current IKE addresses (after any NAT-T move).
    pub fn ike_addresses(&self) -> (SocketAddr, SocketAddr) {
        match &self.phase {
            Phase::Sa(sa) => (sa.local, sa.remote),
            _ => (self.local, self.remote),
        }
    }

    fn command(&mut self, now: Instant, cmd: Command) -> Result<(), Error> {
        let Phase::Sa(sa) = &mut self.phase else {
            return Err(IkeError::NotEstablished.into());
        };
        let retiring = self.retiring.as_ref().map(|r| r.id);
        let taken = move |s: &[u8; 8]| retiring.is_some_and(|id| id.spi_i == *s || id.spi_r == *s);
        let mut ctx = Ctx {
            spi_taken: &taken,
            ..Ctx::new(now, &mut self.out, &mut *self.rng)
        };
        let r = sa.command(&mut ctx, cmd);
        self.settle();
        r
    }

    /// After anything that may have rekeyed or ended an IKE SA: a successor becomes the
    /// current SA (the old one retires until it is deleted); dead SAs go.
    fn settle(&mut self) {
        if let Phase::Sa(sa) = &mut self.phase
            && let Some(new) = sa.take_successor()
        {
            let old = core::mem::replace(sa, new);
            self.retiring = Some(old);
        }
        if matches!(&self.phase, Phase::Sa(sa) if sa.is_dead()) {
            self.phase = Phase::Idle;
        }
        if self.retiring.as_ref().is_some_and(|r| r.is_dead()) {
            self.retiring = None;
        }
    }

    fn send_init(&mut self, now: Instant, st: &mut InitState) -> Result<(), Error> {
        let header = Header::ike_sa_init(st.spi_i, [0; 8], false);
        let mut payloads = Vec::new();
        if let Some(c) = &st.cookie {
            payloads.push(Payload::Notify(Notify::new(notify::COOKIE, c.clone())));
        }
        payloads.push(Payload::Sa(ike_offer(&self.cfg.ike_proposals)));
        payloads.push(Payload::Ke(KePayload {
            group: st.kp.group().id(),
            data: st.kp.public().to_vec(),
        }));
        payloads.push(Payload::Nonce(st.ni.clone()));
        payloads.extend(natd_notifies(st.natd_src, &st.spi_i, &[0; 8], self.remote));
        payloads.extend(super::auth::sa_init_payloads(
            &self.cfg.credential,
            &self.cfg.auth_db,
            false,
        ));
        let bytes = Message { header, payloads }.encode()?;
        let mut ctx = Ctx::new(now, &mut self.out, &mut *self.rng);
        ctx.transmit(self.local, self.remote, false, &bytes)?;
        st.retrans = Retrans::new(bytes, now, &self.cfg.retransmit);
        Ok(())
    }

    fn fail_init(&mut self, spi_i: [u8; 8], reason: FailReason) -> Result<(), Error> {
        self.phase = Phase::Idle;
        self.out.event(IkeEvent::Failed {
            id: IkeSaId {
                spi_i,
                spi_r: [0; 8],
            },
            reason,
        })
    }

    /// The IKE_SA_INIT response.
    fn init_response(
        &mut self,
        now: Instant,
        mut st: Box<InitState>,
        msg: &[u8],
        from: SocketAddr,
        to: SocketAddr,
    ) -> Result<(), Error> {
        let m = match Message::decode(msg, &self.cfg.limits) {
            Ok(m) => m,
            Err(e) => {
                self.phase = Phase::Init(st);
                return Err(e.into());
            }
        };
        let h = m.header;
        if !h.flags.response || h.message_id != 0 || h.exchange != ExchangeType::IkeSaInit {
            self.phase = Phase::Init(st);
            return Err(IkeError::NotInitResponse.into());
        }
        let found = Found::of(&m.payloads);
        let Some(sa) = found.sa else {
            // An unauthenticated error or instruction.
            if let Some(c) = m.notify(notify::COOKIE) {
                if c.data.is_empty() || c.data.len() > 64 {
                    self.phase = Phase::Init(st);
                    return Err(IkeError::Malformed("COOKIE length").into());
                }
                st.rounds += 1;
                if st.rounds > MAX_INIT_ROUNDS {
                    return self.fail_init(st.spi_i, FailReason::TooManyRounds);
                }
                st.cookie = Some(c.data.clone());
                self.send_init(now, &mut st)?;
                self.phase = Phase::Init(st);
                return Ok(());
            }
            if let Some(n) = m.notify(notify::INVALID_KE_PAYLOAD) {
                st.rounds += 1;
                match invalid_ke_group(n, &self.cfg.ike_proposals) {
                    Some(g) if g != st.kp.group() && st.rounds <= MAX_INIT_ROUNDS => {
                        st.kp = KeyPair::generate(g, &mut *self.rng);
                        self.send_init(now, &mut st)?;
                        self.phase = Phase::Init(st);
                        return Ok(());
                    }
                    _ => return self.fail_init(st.spi_i, FailReason::TooManyRounds),
                }
            }
            let reason = match super::session::error_notify(&m.payloads) {
                Some(n) => FailReason::PeerNotify(n),
                None => FailReason::InvalidResponse,
            };
            return self.fail_init(st.spi_i, reason);
        };
        let suite = accept_ike(sa, &self.cfg.ike_proposals);
        let (Some(suite), Some(ke), Some(nr)) = (suite, found.ke, found.nonce) else {
            return self.fail_init(st.spi_i, FailReason::InvalidResponse);
        };
        if h.spi_r == [0; 8] || ke.group != st.kp.group().id() || suite.group != st.kp.group() {
            return self.fail_init(st.spi_i, FailReason::InvalidResponse);
        }
        let spi_i = st.spi_i;
        let st = *st;
        let Ok(shared) = st.kp.agree(&ke.data) else {
            return self.fail_init(spi_i, FailReason::InvalidResponse);
        };
        // NAT detection (§2.23), with the SPIs of this response.
        let udp_encap = nat_detected(&m.payloads, &spi_i, &h.spi_r, from, to)
            .is_some_and(|nat| nat || self.cfg.force_encap);
        let seed = skeyseed(&st.ni, nr, shared.as_bytes());
        let keys = IkeKeys::derive(&suite, seed.as_bytes(), &st.ni, nr, &spi_i, &h.spi_r)?;
        let port = self.cfg.nat_t_port;
        let (local, remote) = if udp_encap {
            (
                SocketAddr::new(self.local.ip(), port),
                SocketAddr::new(from.ip(), port),
            )
        } else {
            (self.local, from)
        };
        let mut sa = IkeSa::new(NewSa {
            authority: Authority::Local,
            cfg: self.cfg.clone(),
            id: IkeSaId {
                spi_i,
                spi_r: h.spi_r,
            },
            initiator: true,
            suite,
            keys,
            ni: st.ni,
            nr: nr.to_vec(),
            init_request: st.retrans.bytes,
            init_response: msg.to_vec(),
            local,
            remote,
            nat_t: udp_encap,
            udp_encap,
            now,
            linger: self.cfg.retransmit.initial,
        })?;
        let mut ctx = Ctx::new(now, &mut self.out, &mut *self.rng);
        sa.start_auth(&mut ctx)?;
        self.phase = Phase::Sa(Box::new(sa));
        Ok(())
    }
}

/// Split an incoming datagram into the IKE message and whether it carried the non-ESP
/// marker. `Ok(None)`: a NAT-keepalive (RFC 3948 §2.3), to be ignored.
pub(crate) fn strip_marker(
    data: &[u8],
    to: SocketAddr,
    nat_t_port: u16,
) -> Result<Option<(&[u8], bool)>, IkeError> {
    if to.port() != nat_t_port {
        return Ok(Some((data, false)));
    }
    if data == [0xff] {
        return Ok(None);
    }
    match data.split_first_chunk::<4>() {
        Some((m, rest)) if *m == [0; 4] => Ok(Some((rest, true))),
        Some(_) => Err(IkeError::EspOnIkePort),
        None => Err(IkeError::Truncated),
    }
}

/// One IKE datagram as both actors first take it apart: who sent it to where, the
/// message (marker stripped), whether it carried the non-ESP marker, and its header.
pub(crate) struct Arrival<'a> {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub msg: &'a [u8],
    pub marker: bool,
    pub header: Header,
}

/// Take an actor input apart into an [`Arrival`]; `Ok(None)` for a NAT-keepalive.
pub(crate) fn arrival<'a>(
    input: Input<'a>,
    nat_t_port: u16,
    limits: &Limits,
) -> Result<Option<Arrival<'a>>, Error> {
    let Input::Datagram { from, to, data } = input else {
        return Err(IkeError::NotADatagram.into());
    };
    let Some((msg, marker)) = strip_marker(data, to, nat_t_port)? else {
        return Ok(None);
    };
    let header = Header::decode(msg, limits)?.header;
    Ok(Some(Arrival {
        from,
        to,
        msg,
        marker,
        header,
    }))
}

impl Actor for Initiator {
    type Event = IkeEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        let Some(a) = arrival(input, self.cfg.nat_t_port, &self.cfg.limits)? else {
            return Ok(());
        };
        let ids = (a.header.spi_i, a.header.spi_r);
        // For the IKE SA a rekey replaced (its Delete, or the answer to ours)?
        if let Some(old) = self.retiring.as_mut()
            && (old.id.spi_i, old.id.spi_r) == ids
        {
            let mut ctx = Ctx::new(now, &mut self.out, &mut *self.rng);
            let r = old.handle(&mut ctx, a.msg, a.from, a.to, a.marker);
            self.settle();
            return r;
        }
        match core::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => Err(IkeError::UnknownSpi.into()),
            Phase::Init(st) => {
                if a.header.spi_i != st.spi_i {
                    self.phase = Phase::Init(st);
                    return Err(IkeError::UnknownSpi.into());
                }
                self.init_response(now, st, a.msg, a.from, a.to)
            }
            Phase::Sa(mut sa) => {
                if (sa.id.spi_i, sa.id.spi_r) != ids {
                    self.phase = Phase::Sa(sa);
                    return Err(IkeError::UnknownSpi.into());
                }
                let retiring = self.retiring.as_ref().map(|r| r.id);
                let taken =
                    move |s: &[u8; 8]| retiring.is_some_and(|id| id.spi_i == *s || id.spi_r == *s);
                let mut ctx = Ctx {
                    spi_taken: &taken,
                    ..Ctx::new(now, &mut self.out, &mut *self.rng)
                };
                let r = sa.handle(&mut ctx, a.msg, a.from, a.to, a.marker);
                self.phase = Phase::Sa(sa);
                self.settle();
                r
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let policy = self.cfg.retransmit;
        // Timer::Init and Timer::Sa: the current phase's timer (at most one is armed).
        match core::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => {}
            Phase::Init(mut st) => match st.retrans.tick(now, &policy) {
                Tick::Wait => self.phase = Phase::Init(st),
                Tick::Resend => {
                    let mut ctx = Ctx::new(now, &mut self.out, &mut *self.rng);
                    // A full outbox is reported by the driver's next call; the timer stays armed.
                    let _ = ctx.transmit(self.local, self.remote, false, &st.retrans.bytes);
                    self.phase = Phase::Init(st);
                }
                Tick::GiveUp => {
                    // The phase is already Idle; only the Failed event can be lost, to a
                    // full outbox the driver's next call reports.
                    let _ = self.fail_init(st.spi_i, FailReason::Timeout);
                }
            },
            Phase::Sa(mut sa) => {
                let mut ctx = Ctx::new(now, &mut self.out, &mut *self.rng);
                // The SA's state changes before it queues anything, so the only error,
                // a full outbox, leaves it consistent.
                let _ = sa.handle_timeout(&mut ctx);
                self.phase = Phase::Sa(sa);
            }
        }
        // Timer::Retiring.
        if let Some(old) = self.retiring.as_mut() {
            let mut ctx = Ctx::new(now, &mut self.out, &mut *self.rng);
            // As above: only a full outbox, and the old SA stays consistent.
            let _ = old.handle_timeout(&mut ctx);
        }
        self.settle();
    }

    fn poll_output(&mut self) -> Option<Output<IkeEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Timer::ALL
            .into_iter()
            .filter_map(|t| self.deadline(t))
            .min()
    }
}

/// The initiator's timers; `poll_timeout` reads them from [`Initiator::deadline`] and
/// `handle_timeout` serves them in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// IKE_SA_INIT retransmission or give-up (phase `Init`).
    Init,
    /// The current IKE SA's own timers (phase `Sa`), see `session::Timer`.
    Sa,
    /// The old IKE SA of a rekey, until its Delete exchange ends.
    Retiring,
}

impl Timer {
    const ALL: [Timer; 3] = [Timer::Init, Timer::Sa, Timer::Retiring];
}

impl Initiator {
    fn deadline(&self, t: Timer) -> Option<Instant> {
        match (t, &self.phase) {
            (Timer::Init, Phase::Init(st)) => Some(st.retrans.next_at()),
            (Timer::Sa, Phase::Sa(sa)) => sa.poll_timeout(),
            (Timer::Init | Timer::Sa, _) => None,
            (Timer::Retiring, _) => self.retiring.as_ref().and_then(|r| r.poll_timeout()),
        }
    }
}

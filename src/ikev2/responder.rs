//! The IKEv2 responder actor: serves any number of initiators, within bounds.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use super::IkeEvent;
use super::codec::{ExchangeType, Header, KePayload, Message, Notify, Payload, find_notify};
use super::config::{IkeConfig, ResponderConfig};
use super::consts::notify;
use super::initiator::{Arrival, arrival};
use super::keys::{IkeKeys, skeyseed};
use super::nat::{CookieJar, nat_detected, natd_notifies, natd_source};
use super::proposal::select_ike;
use super::session::{Authority, Command, Ctx, Found, IkeSa, NewSa, nonce};
use super::{IkeError, IkeSaId};
use crate::crypto::dh::KeyPair;
use crate::ipsec::ChildSa;
use crate::{Actor, Error, Input, Instant, Outbox, Output, Rng};

/// An IKEv2 responder. One PSK and policy ([`ResponderConfig::ike`]) serve every
/// initiator; the tables are bounded by [`ResponderConfig`].
pub struct Responder {
    cfg: ResponderConfig,
    ike: Arc<IkeConfig>,
    rng: Rng,
    out: Outbox<IkeEvent>,
    /// IKE SAs by our SPI (the responder SPI, except for an IKE SA we rekeyed, where we
    /// are the initiator).
    sas: BTreeMap<[u8; 8], IkeSa>,
    /// (initiator SPI, initiator address) → our SPI, to spot retransmitted IKE_SA_INIT.
    init_index: BTreeMap<([u8; 8], SocketAddr), [u8; 8]>,
    cookies: CookieJar,
}

impl core::fmt::Debug for Responder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Responder")
            .field("ike_sas", &self.sas.len())
            .field("half_open", &self.half_open_count())
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// A new responder. `now` starts the lifetime of its first cookie secret
    /// (`ResponderConfig::cookie_secret_lifetime`).
    pub fn new(cfg: ResponderConfig, mut rng: Rng, now: Instant) -> Result<Responder, Error> {
        cfg.ike.validate()?;
        if cfg.max_ike_sas == 0 || cfg.max_half_open == 0 {
            return Err(IkeError::ZeroBound.into());
        }
        let cookies = CookieJar::new(&mut *rng, now, cfg.cookie_secret_lifetime);
        Ok(Responder {
            ike: Arc::new(cfg.ike.clone()),
            cfg,
            rng,
            out: Outbox::default(),
            sas: BTreeMap::new(),
            init_index: BTreeMap::new(),
            cookies,
        })
    }

    /// IKE SAs held (half-open and established).
    pub fn ike_sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Half-open IKE SAs (IKE_SA_INIT answered, IKE_AUTH not yet).
    pub fn half_open_count(&self) -> usize {
        self.sas.values().filter(|s| s.is_half_open()).count()
    }

    /// The established IKE SAs.
    pub fn established(&self) -> Vec<IkeSaId> {
        self.sas
            .values()
            .filter(|s| s.is_established())
            .map(|s| s.id)
            .collect()
    }

    /// The IKE SA `id`, whichever of its SPIs is ours.
    fn sa(&self, id: IkeSaId) -> Option<&IkeSa> {
        [id.spi_r, id.spi_i]
            .iter()
            .find_map(|k| self.sas.get(k).filter(|s| s.id == id))
    }

    /// The current Child SA of an IKE SA.
    pub fn child_sa(&self, id: IkeSaId) -> Option<&ChildSa> {
        self.sa(id).and_then(|s| s.current_child())
    }

    /// All Child SAs of an IKE SA (two while a rekey completes).
    pub fn child_sas(&self, id: IkeSaId) -> &[ChildSa] {
        self.sa(id).map_or(&[], |s| &s.children)
    }

    /// Debugging aid: the SPIs, SK_e/SK_a keys and algorithms of IKE SA `id`, for a packet
    /// analyser's IKEv2 decryption table. `None` unless the configuration sets
    /// [`IkeConfig::keep_keys_for_dissection`]. See [`super::IkeDissectionKeys`].
    pub fn ike_keys_for_dissection(&self, id: IkeSaId) -> Option<super::IkeDissectionKeys> {
        self.sa(id).and_then(|s| s.dissection_keys().cloned())
    }

    /// Rekey the IKE SA `id` (CREATE_CHILD_SA, RFC 7296 §1.3.2); we become the initiator
    /// of the new IKE SA, which [`super::IkeEvent::IkeSaRekeyed`] names.
    pub fn rekey_ike(&mut self, now: Instant, id: IkeSaId) -> Result<(), Error> {
        self.command(now, id, Command::RekeyIke)
    }

    /// Rekey the Child SA of `id`.
    pub fn rekey_child(&mut self, now: Instant, id: IkeSaId) -> Result<(), Error> {
        self.command(now, id, Command::Rekey)
    }

    /// Delete the current Child SA of `id`.
    pub fn delete_child(&mut self, now: Instant, id: IkeSaId) -> Result<(), Error> {
        self.command(now, id, Command::DeleteChild(None))
    }

    /// Delete the IKE SA `id`.
    pub fn delete_ike(&mut self, now: Instant, id: IkeSaId) -> Result<(), Error> {
        self.command(now, id, Command::DeleteIke)
    }

    /// Send a liveness check on `id`.
    pub fn send_liveness(&mut self, now: Instant, id: IkeSaId) -> Result<(), Error> {
        self.command(now, id, Command::Liveness)
    }

    fn command(&mut self, now: Instant, id: IkeSaId, cmd: Command) -> Result<(), Error> {
        let key = self
            .sa(id)
            .map(IkeSa::our_spi)
            .ok_or(IkeError::UnknownSpi)?;
        self.with_sa(now, key, |sa, ctx| sa.command(ctx, cmd))
            .unwrap_or(Err(IkeError::UnknownSpi.into()))
    }

    /// Run `f` on the IKE SA with our SPI `key`, with a context whose SPI check sees every
    /// other SA; then file a successor from a rekey under its own SPI and forget dead SAs.
    fn with_sa<R>(
        &mut self,
        now: Instant,
        key: [u8; 8],
        f: impl FnOnce(&mut IkeSa, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let mut sa = self.sas.remove(&key)?;
        let sas = &self.sas;
        let taken = |s: &[u8; 8]| sas.contains_key(s);
        // Old IKE SAs of rekeys wait to be deleted; at most `max_ike_sas` of them at once
        // (beside at most as many live ones), however fast peers rekey.
        let retiring = sas.values().filter(|s| s.is_retiring()).count();
        let mut ctx = Ctx {
            now,
            out: &mut self.out,
            rng: &mut *self.rng,
            spi_taken: &taken,
            room_to_rekey: retiring < self.cfg.max_ike_sas,
        };
        let r = f(&mut sa, &mut ctx);
        let successor = sa.take_successor();
        let restarted = sa.take_initial_contact();
        self.sas.insert(key, sa);
        if let Some(new) = successor {
            self.sas.insert(new.our_spi(), *new);
        }
        if let Some(peer) = restarted {
            // RFC 7296 §2.4: INITIAL_CONTACT says the peer holds no other IKE SA with us;
            // ours for the same authenticated identity are stale (the peer restarted).
            let mut ctx = Ctx::new(now, &mut self.out, &mut *self.rng);
            for (k, other) in self.sas.iter_mut() {
                if *k != key && other.is_established() && other.peer_id() == Some(&peer) {
                    // A full outbox is reported by the driver's next call.
                    let _ = other.forget(&mut ctx);
                }
            }
        }
        self.reap();
        Some(r)
    }

    /// Forget dead SAs.
    fn reap(&mut self) {
        let dead: Vec<[u8; 8]> = self
            .sas
            .iter()
            .filter(|(_, s)| s.is_dead())
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            self.sas.remove(&k);
        }
        let sas = &self.sas;
        self.init_index.retain(|_, spi_r| sas.contains_key(spi_r));
    }

    /// An unencrypted IKE_SA_INIT answer carrying one notify (responder SPI zero, §2.6).
    fn refuse_init(
        &mut self,
        now: Instant,
        h: &Header,
        n: Notify,
        from: SocketAddr,
        to: SocketAddr,
        marker: bool,
    ) -> Result<(), Error> {
        let bytes = Message::init_refusal(h.spi_i, n)?;
        let mut ctx = Ctx::new(now, &mut self.out, &mut *self.rng);
        ctx.transmit(to, from, marker, &bytes)
    }

    fn init_request(
        &mut self,
        now: Instant,
        msg: &[u8],
        from: SocketAddr,
        to: SocketAddr,
        marker: bool,
    ) -> Result<(), Error> {
        let raw = Header::decode(msg, &self.ike.limits)?;
        let h = raw.header;
        if h.message_id != 0 || !h.flags.initiator {
            return Err(IkeError::BadInitRequestHeader.into());
        }
        // A retransmission: replay our answer (§2.1).
        if let Some(spi_r) = self.init_index.get(&(h.spi_i, from))
            && let Some(sa) = self.sas.get(spi_r)
        {
            if sa.init_request() == msg {
                let mut ctx = Ctx::new(now, &mut self.out, &mut *self.rng);
                return sa.replay_init(&mut ctx, from, to, marker);
            }
            return Err(IkeError::InitiatorSpiReused.into());
        }
        let m = match Message::decode(msg, &self.ike.limits) {
            Ok(m) => m,
            Err(IkeError::UnsupportedCriticalPayload(ty)) => {
                let n = Notify::new(notify::UNSUPPORTED_CRITICAL_PAYLOAD, alloc::vec![ty]);
                self.refuse_init(now, &h, n, from, to, marker)?;
                return Err(IkeError::UnsupportedCriticalPayload(ty).into());
            }
            Err(e) => return Err(e.into()),
        };
        if self.sas.len() >= self.cfg.max_ike_sas {
            return Err(Error::CapacityExceeded {
                what: "IKE SAs",
                bound: self.cfg.max_ike_sas,
            });
        }
        let Some((sa, ke, ni)) = Found::of(&m.payloads).sa_ke_nonce() else {
            let n = Notify::new(notify::INVALID_SYNTAX, Vec::new());
            self.refuse_init(now, &h, n, from, to, marker)?;
            return Err(IkeError::MissingInitPayload.into());
        };
        // Cookies (§2.6) once too many SAs are half-open.
        let half_open = self.half_open_count();
        if half_open >= self.cfg.cookie_threshold {
            self.cookies.maybe_rotate(&mut *self.rng, now);
            let valid = find_notify(&m.payloads, notify::COOKIE)
                .is_some_and(|c| self.cookies.check(&c.data, ni, from.ip(), &h.spi_i));
            if !valid {
                let cookie = self.cookies.make(ni, from.ip(), &h.spi_i);
                self.refuse_init(
                    now,
                    &h,
                    Notify::new(notify::COOKIE, cookie),
                    from,
                    to,
                    marker,
                )?;
                return Ok(());
            }
        }
        if half_open >= self.cfg.max_half_open {
            return Err(Error::CapacityExceeded {
                what: "half-open IKE SAs",
                bound: self.cfg.max_half_open,
            });
        }
        let Some(choice) = select_ike(sa, &self.ike.ike_proposals, Some(ke.group)) else {
            let n = Notify::new(notify::NO_PROPOSAL_CHOSEN, Vec::new());
            self.refuse_init(now, &h, n, from, to, marker)?;
            return Err(IkeError::Refused(notify::NO_PROPOSAL_CHOSEN).into());
        };
        let group = choice.suite.group;
        if ke.group != group.id() {
            let n = Notify::new(
                notify::INVALID_KE_PAYLOAD,
                group.id().to_be_bytes().to_vec(),
            );
            self.refuse_init(now, &h, n, from, to, marker)?;
            return Ok(());
        }
        let kp = KeyPair::generate(group, &mut *self.rng);
        let our_public = kp.public().to_vec();
        let Ok(shared) = kp.agree(&ke.data) else {
            let n = Notify::new(notify::INVALID_SYNTAX, Vec::new());
            self.refuse_init(now, &h, n, from, to, marker)?;
            return Err(IkeError::Malformed("KE value").into());
        };
        let mut spi_r = [0u8; 8];
        while spi_r == [0; 8] || self.sas.contains_key(&spi_r) {
            self.rng.fill_bytes(&mut spi_r);
        }
        let nr = nonce(&mut *self.rng);

        // NAT detection (§2.23): hashes in the request use SPIr = 0.
        let nat = nat_detected(&m.payloads, &h.spi_i, &[0; 8], from, to);
        let udp_encap = nat.is_some_and(|nat| nat || self.ike.force_encap);

        let header = Header::ike_sa_init(h.spi_i, spi_r, true);
        let mut payloads = alloc::vec![
            Payload::Sa(alloc::vec![choice.suite.to_proposal(choice.num)]),
            Payload::Ke(KePayload {
                group: group.id(),
                data: our_public,
            }),
            Payload::Nonce(nr.clone()),
        ];
        if nat.is_some() {
            // Answer NAT detection in kind, with the SPIs of this response.
            let source = natd_source(self.ike.force_encap, &mut *self.rng, &h.spi_i, &spi_r, to);
            payloads.extend(natd_notifies(source, &h.spi_i, &spi_r, from));
        }
        payloads.extend(super::auth::sa_init_payloads(
            &self.ike.credential,
            &self.ike.auth_db,
            true,
        ));
        let response = Message { header, payloads }.encode()?;
        let seed = skeyseed(ni, &nr, shared.as_bytes());
        let keys = IkeKeys::derive(&choice.suite, seed.as_bytes(), ni, &nr, &h.spi_i, &spi_r)?;
        let sa = IkeSa::new(NewSa {
            authority: Authority::Local,
            cfg: self.ike.clone(),
            id: IkeSaId {
                spi_i: h.spi_i,
                spi_r,
            },
            initiator: false,
            suite: choice.suite,
            keys,
            ni: ni.to_vec(),
            nr,
            init_request: msg.to_vec(),
            init_response: response.clone(),
            local: to,
            remote: from,
            nat_t: marker,
            udp_encap,
            now,
            linger: self.cfg.half_open_timeout,
        })?;
        let mut ctx = Ctx::new(now, &mut self.out, &mut *self.rng);
        ctx.transmit(to, from, marker, &response)?;
        self.sas.insert(spi_r, sa);
        self.init_index.insert((h.spi_i, from), spi_r);
        Ok(())
    }
}

impl Actor for Responder {
    type Event = IkeEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        let Some(a) = arrival(input, self.ike.nat_t_port, &self.ike.limits)? else {
            return Ok(());
        };
        let Arrival {
            from,
            to,
            msg,
            marker,
            header: h,
        } = a;
        if h.exchange == ExchangeType::IkeSaInit && !h.flags.response && h.spi_r == [0; 8] {
            return self.init_request(now, msg, from, to, marker);
        }
        // Our SPI is the responder's when the sender is the original initiator.
        let key = if h.flags.initiator { h.spi_r } else { h.spi_i };
        let known = self
            .sas
            .get(&key)
            .is_some_and(|s| s.id.spi_i == h.spi_i && s.id.spi_r == h.spi_r);
        if !known {
            return Err(IkeError::UnknownSpi.into());
        }
        self.with_sa(now, key, |sa, ctx| sa.handle(ctx, msg, from, to, marker))
            .unwrap_or(Err(IkeError::UnknownSpi.into()))
    }

    fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.cfg.half_open_timeout;
        let mut ctx = Ctx::new(now, &mut self.out, &mut *self.rng);
        for sa in self.sas.values_mut() {
            if Timer::HalfOpen
                .deadline(sa, timeout)
                .is_some_and(|t| now >= t)
            {
                // The SA is marked dead before its Failed event is queued, so a full
                // outbox (reported by the driver's next call) cannot keep it alive.
                let _ = sa.fail(&mut ctx, super::FailReason::Timeout);
                continue;
            }
            // The SA walks its own timers; as above, the only error is a full outbox.
            let _ = sa.handle_timeout(&mut ctx);
        }
        self.reap();
    }

    fn poll_output(&mut self) -> Option<Output<IkeEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.cfg.half_open_timeout;
        self.sas
            .values()
            .flat_map(|sa| Timer::ALL.map(|t| t.deadline(sa, timeout)))
            .flatten()
            .min()
    }
}

/// The responder's timers of one IKE SA; both `poll_timeout` and `handle_timeout` read
/// their deadlines from [`Timer::deadline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// A half-open SA (IKE_SA_INIT answered, no IKE_AUTH yet) is dropped after
    /// `half_open_timeout`, so spoofed IKE_SA_INITs cannot hold state for long (§2.6).
    HalfOpen,
    /// The SA's own timers (retransmission, linger), see `session::Timer`.
    Sa,
}

impl Timer {
    const ALL: [Timer; 2] = [Timer::HalfOpen, Timer::Sa];

    fn deadline(self, sa: &IkeSa, half_open_timeout: Duration) -> Option<Instant> {
        match self {
            Timer::HalfOpen => sa.is_half_open().then(|| sa.created + half_open_timeout),
            Timer::Sa => sa.poll_timeout(),
        }
    }
}

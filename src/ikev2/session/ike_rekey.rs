//! Rekeying the IKE SA (RFC 7296 §1.3.2, §2.18) with CREATE_CHILD_SA.
//!
//! ```text
//! rekey initiator                                   rekey responder
//! HDR(old SA), SK {SA(new SPIi), Ni, KEi}  -->
//!                                          <--  HDR(old SA), SK {SA(new SPIr), Nr, KEr}
//! ```
//!
//! Both ends then derive the new IKE SA: `SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)`
//! and its keys with the new SPIs; the initiator of the rekey is the initiator of the new
//! SA, whose message IDs start at 0. The Child SAs move to the new SA unchanged. The rekey
//! initiator then deletes the old SA with an INFORMATIONAL on it; its Child SAs are not
//! affected. A rekey request that arrives while one of our requests is outstanding is
//! answered TEMPORARY_FAILURE (no §2.8.1 collision handling); a KE in a group other than
//! the chosen one is answered INVALID_KE_PAYLOAD, and our own rekey follows such an
//! answer once.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{Ctx, Found, Held, IkeSa, NewSa, Request, Secrets, Share, State, nonce};
use crate::Error;
use crate::crypto::dh::KeyPair;
use crate::ikev2::codec::{ExchangeType, KePayload, Notify, Payload, Proposal, find_notify};
use crate::ikev2::consts::notify;
use crate::ikev2::keys::{IkeKeys, skeyseed_rekey};
use crate::ikev2::proposal::{
    IkeSuite, accept_ike_rekey, ike_rekey_offer, invalid_ke_group, select_ike_rekey,
};
use crate::ikev2::{IkeEvent, IkeSaId};

/// INVALID_KE_PAYLOAD rounds tolerated in one IKE SA rekey.
const MAX_REKEY_ROUNDS: u8 = 2;

impl IkeSa {
    /// A fresh IKE SPI of ours for a rekeyed SA: non-zero, not this SA's, not another of
    /// the actor's.
    fn new_ike_spi(&self, ctx: &mut Ctx<'_>) -> [u8; 8] {
        loop {
            let mut spi = [0u8; 8];
            ctx.rng.fill_bytes(&mut spi);
            if spi != [0; 8]
                && spi != self.id.spi_i
                && spi != self.id.spi_r
                && !(ctx.spi_taken)(&spi)
            {
                return spi;
            }
        }
    }

    /// Whether this actor can rekey the IKE SA itself: it must run the Diffie-Hellman and
    /// hold SK_d, which a delegated terminal (seed 004) does not do.
    fn rekeys_ike_locally(&self) -> bool {
        matches!(self.secrets, super::Secrets::Local { .. })
    }

    /// Exchange initiator: propose a new IKE SA with every configured proposal, KE in our
    /// most preferred group (as in IKE_SA_INIT; an INVALID_KE_PAYLOAD answer names the
    /// peer's choice and we follow it once).
    pub(super) fn start_ike_rekey(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        if !ctx.room_to_rekey || !self.rekeys_ike_locally() {
            return self.ike_rekey_failed(ctx, notify::TEMPORARY_FAILURE);
        }
        let spi = self.new_ike_spi(ctx);
        let ni = nonce(ctx.rng);
        let group = self
            .cfg
            .ike_proposals
            .first()
            .and_then(|p| p.groups.first().copied())
            .unwrap_or(self.suite.group);
        let kp = KeyPair::generate(group, ctx.rng);
        self.send_ike_rekey(ctx, spi, ni, Share::Local(kp), 0)
    }

    /// Exchange initiator of a delegated IKE SA (seed 004): propose a new IKE SA with the
    /// key share the substitution server made (`ke`). Refused (reported as a failed rekey)
    /// while another exchange is outstanding: the terminal asks again later.
    pub(crate) fn start_ike_rekey_delegated(
        &mut self,
        ctx: &mut Ctx<'_>,
        ke: KePayload,
        offer: Vec<Proposal>,
    ) -> Result<(), Error> {
        let idle = self.pending.is_none() && self.state == State::Established;
        if !idle || !ctx.room_to_rekey || self.rekeys_ike_locally() {
            return self.ike_rekey_failed(ctx, notify::TEMPORARY_FAILURE);
        }
        let spi = self.new_ike_spi(ctx);
        let ni = nonce(ctx.rng);
        self.send_ike_rekey(ctx, spi, ni, Share::AtServer { ke, offer }, 0)
    }

    fn send_ike_rekey(
        &mut self,
        ctx: &mut Ctx<'_>,
        spi: [u8; 8],
        ni: Vec<u8>,
        share: Share,
        rounds: u8,
    ) -> Result<(), Error> {
        let offer = match &share {
            Share::Local(_) => ike_rekey_offer(&self.cfg.ike_proposals, spi),
            Share::AtServer { offer, .. } => offer
                .iter()
                .map(|p| Proposal {
                    spi: spi.to_vec(),
                    ..p.clone()
                })
                .collect(),
        };
        let payloads = [
            Payload::Sa(offer),
            Payload::Nonce(ni.clone()),
            Payload::Ke(share.payload()),
        ];
        let request = Request::RekeyIke {
            spi,
            ni,
            share,
            rounds,
        };
        self.send_request(ctx, ExchangeType::CreateChildSa, &payloads, request)
    }

    /// Exchange initiator: the answer to our IKE SA rekey.
    pub(super) fn ike_rekey_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: Vec<Payload>,
        spi: [u8; 8],
        ni: Vec<u8>,
        share: Share,
        rounds: u8,
    ) -> Result<(), Error> {
        let kp = match share {
            Share::Local(kp) => kp,
            Share::AtServer { offer, .. } => {
                // The server holds the private value: the answer waits for g^ir (or, after
                // INVALID_KE_PAYLOAD, for a share in the group the peer wants).
                if let Secrets::Released { rekey, .. } = &mut self.secrets {
                    *rekey = Some(Box::new(Held::OwnRekey {
                        payloads,
                        spi,
                        ni,
                        offer,
                        rounds,
                    }));
                }
                return Ok(());
            }
        };
        if let Some(n) = find_notify(&payloads, notify::INVALID_KE_PAYLOAD) {
            return match invalid_ke_group(n, &self.cfg.ike_proposals) {
                Some(g) if g != kp.group() && rounds < MAX_REKEY_ROUNDS => {
                    let kp = KeyPair::generate(g, ctx.rng);
                    self.send_ike_rekey(ctx, spi, ni, Share::Local(kp), rounds + 1)
                }
                _ => self.ike_rekey_failed(ctx, notify::INVALID_KE_PAYLOAD),
            };
        }
        let group = kp.group();
        let (suite, peer_spi, ke, nr) = match self.rekey_answer(&payloads, spi, group.id()) {
            Ok(x) => x,
            Err(n) => return self.ike_rekey_failed(ctx, n),
        };
        let Ok(shared) = kp.agree(&ke.data) else {
            return self.ike_rekey_failed(ctx, notify::INVALID_SYNTAX);
        };
        self.finish_own_rekey(ctx, suite, spi, peer_spi, shared.as_bytes(), &ni, &nr)
    }

    /// Check the answer to our IKE SA rekey (KE in `group`): the suite, the peer's new
    /// SPI, its KE payload and nonce; or the notify to report.
    fn rekey_answer(
        &self,
        payloads: &[Payload],
        spi: [u8; 8],
        group: u16,
    ) -> Result<(IkeSuite, [u8; 8], KePayload, Vec<u8>), u16> {
        if let Some(n) = super::error_notify(payloads) {
            return Err(n);
        }
        let (sa, ke, nr) = Found::of(payloads)
            .sa_ke_nonce()
            .ok_or(notify::INVALID_SYNTAX)?;
        let (suite, peer_spi) =
            accept_ike_rekey(sa, &self.cfg.ike_proposals).ok_or(notify::NO_PROPOSAL_CHOSEN)?;
        if suite.group.id() != group || ke.group != group || peer_spi == spi {
            return Err(notify::INVALID_SYNTAX);
        }
        Ok((suite, peer_spi, ke.clone(), nr.to_vec()))
    }

    /// Our rekey is answered and g^ir known: hand over to the new IKE SA and delete this
    /// one (§1.3.2: the rekey initiator deletes the old IKE SA).
    #[allow(clippy::too_many_arguments)]
    fn finish_own_rekey(
        &mut self,
        ctx: &mut Ctx<'_>,
        suite: IkeSuite,
        spi: [u8; 8],
        peer_spi: [u8; 8],
        g_ir: &[u8],
        ni: &[u8],
        nr: &[u8],
    ) -> Result<(), Error> {
        let id = IkeSaId {
            spi_i: spi,
            spi_r: peer_spi,
        };
        self.hand_over(ctx, suite, id, true, g_ir, ni, nr)?;
        self.send_request(
            ctx,
            ExchangeType::Informational,
            &[super::delete_ike_sa()],
            Request::DeleteRekeyed,
        )?;
        // Commands queued behind the rekey moved to the new SA, which the peer now holds
        // too: start them there (nothing else would, as the new SA has no exchange whose
        // answer would pump its queue).
        match self.successor.as_mut() {
            Some(new) => new.pump_queue(ctx),
            None => Ok(()),
        }
    }

    /// A delegated IKE SA rekey we started resumes with the server's answer.
    pub(crate) fn own_rekey_answered(
        &mut self,
        ctx: &mut Ctx<'_>,
        verdict: super::OwnRekeyVerdict,
    ) -> Result<(), Error> {
        if self.own_rekey_answer().is_none() {
            return Err(crate::ikev2::IkeError::NotDelegating.into());
        }
        let held = match &mut self.secrets {
            Secrets::Released { rekey, .. } => rekey.take(),
            _ => None,
        };
        let Some(Held::OwnRekey {
            payloads,
            spi,
            ni,
            offer,
            rounds,
        }) = held.map(|h| *h)
        else {
            return Err(crate::ikev2::IkeError::NotDelegating.into());
        };
        match verdict {
            super::OwnRekeyVerdict::Refused(n) => self.ike_rekey_failed(ctx, n),
            super::OwnRekeyVerdict::Resend(ke) if rounds < MAX_REKEY_ROUNDS => {
                let share = Share::AtServer { ke, offer };
                self.send_ike_rekey(ctx, spi, ni, share, rounds + 1)
            }
            super::OwnRekeyVerdict::Resend(_) => {
                self.ike_rekey_failed(ctx, notify::INVALID_KE_PAYLOAD)
            }
            super::OwnRekeyVerdict::Accepted { g_ir } => {
                // The group is the one the peer's KE payload names; the server agreed in it.
                let group = Found::of(&payloads).ke.map_or(0, |k| k.group);
                match self.rekey_answer(&payloads, spi, group) {
                    Ok((suite, peer_spi, _, nr)) => {
                        self.finish_own_rekey(ctx, suite, spi, peer_spi, &g_ir, &ni, &nr)
                    }
                    Err(n) => self.ike_rekey_failed(ctx, n),
                }
            }
        }
    }

    fn ike_rekey_failed(&mut self, ctx: &mut Ctx<'_>, notify: u16) -> Result<(), Error> {
        ctx.event(IkeEvent::IkeSaRekeyFailed {
            id: self.id,
            notify,
        })
    }

    /// Exchange responder: a CREATE_CHILD_SA whose SA payload proposes a new IKE SA.
    pub(super) fn ike_rekey_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
    ) -> Result<Vec<Payload>, Error> {
        let refuse = |ty: u16| Ok(alloc::vec![Payload::Notify(Notify::new(ty, Vec::new()))]);
        if self.pending.is_some() || !ctx.room_to_rekey || !self.rekeys_ike_locally() {
            // One exchange at a time around a rekey (no §2.8.1 collision handling), and
            // a bounded number of old IKE SAs waiting to be deleted. A delegated IKE SA
            // runs no Diffie-Hellman of its own: its terminal rekeys the IKE SA through
            // the substitution server (`keyx`), never here.
            return refuse(notify::TEMPORARY_FAILURE);
        }
        let Some((sa, ke, ni)) = Found::of(payloads).sa_ke_nonce() else {
            return refuse(notify::INVALID_SYNTAX);
        };
        let Some((choice, peer_spi)) =
            select_ike_rekey(sa, &self.cfg.ike_proposals, Some(ke.group))
        else {
            return refuse(notify::NO_PROPOSAL_CHOSEN);
        };
        let group = choice.suite.group;
        if ke.group != group.id() {
            let n = Notify::new(
                notify::INVALID_KE_PAYLOAD,
                group.id().to_be_bytes().to_vec(),
            );
            return Ok(alloc::vec![Payload::Notify(n)]);
        }
        let kp = KeyPair::generate(group, ctx.rng);
        let our_public = kp.public().to_vec();
        let Ok(shared) = kp.agree(&ke.data) else {
            return refuse(notify::INVALID_SYNTAX);
        };
        let our_spi = self.new_ike_spi(ctx);
        if peer_spi == our_spi {
            return refuse(notify::INVALID_SYNTAX);
        }
        let nr = nonce(ctx.rng);
        let id = IkeSaId {
            spi_i: peer_spi,
            spi_r: our_spi,
        };
        self.hand_over(ctx, choice.suite, id, false, shared.as_bytes(), ni, &nr)?;
        Ok(alloc::vec![
            Payload::Sa(alloc::vec![
                choice.suite.to_rekey_proposal(choice.num, our_spi)
            ]),
            Payload::Nonce(nr),
            Payload::Ke(KePayload {
                group: group.id(),
                data: our_public,
            }),
        ])
    }

    /// Derive the new IKE SA, move the Child SAs and queued commands into it, and retire
    /// this one.
    #[allow(clippy::too_many_arguments)]
    fn hand_over(
        &mut self,
        ctx: &mut Ctx<'_>,
        suite: IkeSuite,
        id: IkeSaId,
        initiated: bool,
        g_ir: &[u8],
        ni: &[u8],
        nr: &[u8],
    ) -> Result<(), Error> {
        let seed = skeyseed_rekey(self.sk_d()?.as_bytes(), g_ir, ni, nr);
        let keys = IkeKeys::derive(&suite, seed.as_bytes(), ni, nr, &id.spi_i, &id.spi_r)?;
        // A delegated lineage stays delegated: the new SA has no credential to use and
        // rekeys through the server again.
        let delegated = !self.rekeys_ike_locally();
        let sk_d = keys.sk_d.clone();
        let mut new = IkeSa::new(NewSa {
            authority: super::Authority::Local,
            cfg: self.cfg.clone(),
            id,
            initiator: initiated,
            suite,
            keys,
            ni: ni.to_vec(),
            nr: nr.to_vec(),
            // Only IKE_AUTH signs these; a rekeyed SA never runs IKE_AUTH.
            init_request: Vec::new(),
            init_response: Vec::new(),
            local: self.local,
            remote: self.remote,
            nat_t: self.nat_t,
            udp_encap: self.udp_encap,
            now: ctx.now,
            linger: self.linger,
        })
        .map_err(Error::from)?;
        if delegated {
            new.secrets = super::Secrets::Released { sk_d, rekey: None };
        }
        new.state = State::Established;
        // §2.18: the new IKE SA starts its message IDs at 0 in both directions.
        new.next_msg_id = 0;
        new.peer_next_id = 0;
        new.children = core::mem::take(&mut self.children);
        new.peer_id = self.peer_id.clone();
        new.queue = core::mem::take(&mut self.queue);
        let old = self.id;
        self.state = State::Rekeyed {
            until: ctx.now + self.cfg.retransmit.span(),
        };
        self.successor = Some(Box::new(new));
        ctx.event(IkeEvent::IkeSaRekeyed {
            old,
            new: id,
            initiated,
        })
    }

    /// A delegated IKE SA rekey resumes with the server's answer: the held CREATE_CHILD_SA
    /// is answered (SA with our new SPI, Nr, the server's KE) and the new IKE SA derived
    /// here from SK_d and g^ir, or refused with the server's notify.
    pub(crate) fn rekey_answered(
        &mut self,
        ctx: &mut Ctx<'_>,
        verdict: super::RekeyVerdict,
    ) -> Result<(), Error> {
        if self.rekey_question().is_none() {
            return Err(crate::ikev2::IkeError::NotDelegating.into());
        }
        let held = match &mut self.secrets {
            super::Secrets::Released { rekey, .. } => rekey.take(),
            _ => None,
        };
        let Some(held) = held else {
            return Err(crate::ikev2::IkeError::NotDelegating.into());
        };
        let super::Held::Request {
            msg_id,
            payloads,
            from,
            to,
            marker,
        } = *held
        else {
            return Err(crate::ikev2::IkeError::NotDelegating.into());
        };
        let refuse = |ty: u16, data: Vec<u8>| alloc::vec![Payload::Notify(Notify::new(ty, data))];
        let reply = match verdict {
            super::RekeyVerdict::Refused { notify, data } => refuse(notify, data),
            super::RekeyVerdict::Accepted {
                num,
                suite,
                ke,
                g_ir,
            } => {
                let found = Found::of(&payloads);
                let peer = found.sa.and_then(|sa| {
                    sa.iter()
                        .find(|p| p.num == num)
                        .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
                });
                match (peer, found.nonce) {
                    (Some(peer_spi), Some(ni)) if peer_spi != [0; 8] => {
                        let ni = ni.to_vec();
                        let our_spi = self.new_ike_spi(ctx);
                        let nr = nonce(ctx.rng);
                        let id = IkeSaId {
                            spi_i: peer_spi,
                            spi_r: our_spi,
                        };
                        self.hand_over(ctx, suite, id, false, &g_ir, &ni, &nr)?;
                        alloc::vec![
                            Payload::Sa(alloc::vec![suite.to_rekey_proposal(num, our_spi)]),
                            Payload::Nonce(nr),
                            Payload::Ke(ke),
                        ]
                    }
                    _ => refuse(notify::INVALID_SYNTAX, Vec::new()),
                }
            }
        };
        self.respond(
            ctx,
            ExchangeType::CreateChildSa,
            msg_id,
            &reply,
            from,
            to,
            marker,
        )
    }
}

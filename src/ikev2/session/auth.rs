//! IKE_AUTH (RFC 7296 §1.2, §2.15) and the first Child SA: authenticated here with the
//! configured credential and authentication-key database (`ikev2::auth`), or delegated to a substitution server (seed 004, `Secrets::AtServer`).

use alloc::vec::Vec;

use super::{Ctx, Delegation, Found, Held, IkeSa, Request, Secrets, State, Verdict, error_notify};
use crate::Error;
use crate::UnixTime;
use crate::ikev2::ChildMode;
use crate::ikev2::IkeError;
use crate::ikev2::auth::{self, AuthFailure};
use crate::ikev2::codec::{
    ExchangeType, Identity, Notify, Payload, TrafficSelector, find_notify, ts_from_wire, ts_to_wire,
};
use crate::ikev2::consts::notify;
use crate::ikev2::keys::child_keys;
use crate::ikev2::proposal::{accept_esp, esp_offer, esp_proposal, select_esp};
use crate::ikev2::{FailReason, IkeEvent};
use crate::ipsec::{self, ChildSa, Suite};

impl IkeSa {
    /// Original initiator with a local credential: send IKE_AUTH.
    pub(crate) fn start_auth(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        let Secrets::Local { sk_pi, .. } = &self.secrets else {
            return Err(IkeError::KeysAtServer.into());
        };
        let cfg = self.cfg.clone();
        let ours = auth::prove(
            &cfg.credential,
            sk_pi.as_bytes(),
            &self.init_request,
            &self.nr,
            &cfg.local_id,
            ctx.rng,
        )?;
        // RFC 7296 §1.2: IDi, [CERT+], [CERTREQ+], [IDr], AUTH.
        let mut proof = alloc::vec![Payload::IdI(cfg.local_id.clone())];
        proof.extend(ours.certs.into_iter().map(Payload::Cert));
        proof.extend(cfg.auth_db.certreq().map(Payload::CertReq));
        if let Some(r) = &cfg.remote_id {
            proof.push(Payload::IdR(r.clone()));
        }
        proof.push(Payload::Auth(ours.auth));
        self.send_auth(ctx, proof)
    }

    /// Original initiator whose authentication is delegated (seed 004): send IKE_AUTH with
    /// the proof the substitution server built (IDi, [CERT], [IDr], AUTH), unchanged (the
    /// server signed over exactly that IDi).
    pub(crate) fn start_auth_delegated(
        &mut self,
        ctx: &mut Ctx<'_>,
        proof: Vec<Payload>,
    ) -> Result<(), Error> {
        if !matches!(self.secrets, Secrets::AtServer(Delegation::AwaitPeer)) {
            return Err(IkeError::NotDelegating.into());
        }
        self.send_auth(ctx, proof)
    }

    /// IKE_AUTH request: our proof, then what the Child SA needs.
    fn send_auth(&mut self, ctx: &mut Ctx<'_>, mut p: Vec<Payload>) -> Result<(), Error> {
        let spi_in = self.new_spi(ctx.rng);
        let cfg = self.cfg.clone();
        p.push(Payload::Notify(Notify::new(
            notify::INITIAL_CONTACT,
            Vec::new(),
        )));
        if cfg.mode == ChildMode::Transport {
            p.push(Payload::Notify(Notify::new(
                notify::USE_TRANSPORT_MODE,
                Vec::new(),
            )));
        }
        p.push(Payload::Sa(esp_offer(&cfg.esp_proposals, spi_in)));
        p.push(Payload::TsI(ts_to_wire(&cfg.ts_local)));
        p.push(Payload::TsR(ts_to_wire(&cfg.ts_remote)));
        self.send_request(ctx, ExchangeType::IkeAuth, &p, Request::Auth { spi_in })
    }

    /// Original initiator: the IKE_AUTH response.
    pub(super) fn auth_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: Vec<Payload>,
        spi_in: u32,
    ) -> Result<(), Error> {
        let found = Found::of(&payloads);
        let (Some(idr), Some(auth)) = (found.id_r, found.auth) else {
            let reason = match error_notify(&payloads) {
                Some(notify::AUTHENTICATION_FAILED) => FailReason::AuthenticationFailed,
                Some(n) => FailReason::PeerNotify(n),
                None => FailReason::InvalidResponse,
            };
            return self.fail(ctx, reason);
        };
        let cfg = self.cfg.clone();
        if cfg.remote_id.as_ref().is_some_and(|r| r != idr) {
            self.send_auth_failed(ctx)?;
            return self.fail(ctx, FailReason::IdentityMismatch);
        }
        let verified =
            match &self.secrets {
                Secrets::Local { sk_pr, .. } => auth::verify(
                    &cfg.auth_db,
                    sk_pr.as_bytes(),
                    &self.init_response,
                    &self.ni,
                    idr,
                    auth,
                    &auth::cert_payloads(&payloads),
                    UnixTime::at(cfg.time_anchor, ctx.now),
                ),
                Secrets::AtServer(Delegation::AwaitPeer) => {
                    // S9: the server judges the peer; the response waits here until it has.
                    self.secrets = Secrets::AtServer(Delegation::Asked(alloc::boxed::Box::new(
                        Held::Response { payloads, spi_in },
                    )));
                    return Ok(());
                }
                Secrets::AtServer(Delegation::Asked(_)) | Secrets::Released { .. } => {
                    return Err(IkeError::UnsolicitedResponse.into());
                }
            };
        if let Err(f) = verified {
            self.send_auth_failed(ctx)?;
            return self.fail(ctx, FailReason::PeerAuth(f));
        }
        let idr = idr.clone();
        self.finish_initiator(ctx, idr, &payloads, spi_in)
    }

    /// Original initiator, the peer authenticated: the IKE SA is up; take the Child SA
    /// from the IKE_AUTH response.
    fn finish_initiator(
        &mut self,
        ctx: &mut Ctx<'_>,
        idr: Identity,
        payloads: &[Payload],
        spi_in: u32,
    ) -> Result<(), Error> {
        self.state = State::Established;
        self.established_event(ctx, idr)?;

        if let Some(n) = error_notify(payloads) {
            return ctx.event(IkeEvent::ChildSaFailed {
                id: self.id,
                notify: n,
            });
        }
        let cfg = self.cfg.clone();
        let transport = find_notify(payloads, notify::USE_TRANSPORT_MODE).is_some();
        let offered_i = ts_to_wire(&cfg.ts_local);
        let offered_r = ts_to_wire(&cfg.ts_remote);
        let child = match self.accept_child(payloads, &offered_i, &offered_r) {
            Ok((suite, spi_out, ts_i, ts_r)) => {
                let (i2r, r2i) =
                    child_keys(suite, self.sk_d()?.as_bytes(), None, &self.ni, &self.nr)?;
                self.child_sa(suite, transport, spi_in, spi_out, r2i, i2r, ts_i, ts_r)
            }
            Err(n) => Err(n),
        };
        match child {
            Ok(child) => {
                self.children.push(child.clone());
                ctx.event(IkeEvent::ChildSaEstablished {
                    id: self.id,
                    child: alloc::boxed::Box::new(child),
                    initiated: true,
                })
            }
            Err(n) => ctx.event(IkeEvent::ChildSaFailed {
                id: self.id,
                notify: n,
            }),
        }
    }

    /// A delegated IKE_AUTH resumes with the substitution server's verdict (seed 004,
    /// S11-S17): the held request is answered, or the held response taken.
    pub(crate) fn server_answered(
        &mut self,
        ctx: &mut Ctx<'_>,
        verdict: Verdict,
    ) -> Result<(), Error> {
        let held =
            match core::mem::replace(&mut self.secrets, Secrets::AtServer(Delegation::AwaitPeer)) {
                Secrets::AtServer(Delegation::Asked(held)) => held,
                other => {
                    self.secrets = other;
                    return Err(IkeError::NotDelegating.into());
                }
            };
        let refusal = alloc::vec![Payload::Notify(Notify::new(
            notify::AUTHENTICATION_FAILED,
            Vec::new()
        ))];
        match (*held, verdict) {
            (
                Held::Request {
                    msg_id,
                    payloads,
                    from,
                    to,
                    marker,
                },
                verdict,
            ) => {
                let idi = Found::of(&payloads).id_i.cloned();
                let reply = match (verdict, idi) {
                    (Verdict::Accepted { proof, sk_d }, Some(idi)) => {
                        self.secrets = Secrets::Released { sk_d, rekey: None };
                        self.finish_responder(ctx, idi, &payloads, proof)?
                    }
                    (verdict, _) => {
                        let reason = match verdict {
                            Verdict::Refused(r) => r,
                            Verdict::Accepted { .. } => FailReason::InvalidResponse,
                        };
                        self.close_after_response(ctx);
                        ctx.event(IkeEvent::Failed {
                            id: self.id,
                            reason,
                        })?;
                        refusal
                    }
                };
                self.respond(ctx, ExchangeType::IkeAuth, msg_id, &reply, from, to, marker)
            }
            (Held::Response { payloads, spi_in }, verdict) => {
                let idr = Found::of(&payloads).id_r.cloned();
                match (verdict, idr) {
                    (Verdict::Accepted { sk_d, .. }, Some(idr)) => {
                        self.secrets = Secrets::Released { sk_d, rekey: None };
                        self.finish_initiator(ctx, idr, &payloads, spi_in)?;
                        self.pump_queue(ctx)
                    }
                    (Verdict::Refused(reason), _) => {
                        self.send_auth_failed(ctx)?;
                        self.fail(ctx, reason)
                    }
                    (Verdict::Accepted { .. }, None) => {
                        self.send_auth_failed(ctx)?;
                        self.fail(ctx, FailReason::InvalidResponse)
                    }
                }
            }
            // Only IKE_AUTH is held while the SA is at the server; a rekey is held once it
            // is released, and answered by `own_rekey_answered`.
            (Held::OwnRekey { .. }, _) => Err(IkeError::NotDelegating.into()),
        }
    }

    /// Check a responder's SA/TSi/TSr answer; Err carries the notify to report.
    #[allow(clippy::type_complexity)]
    pub(super) fn accept_child(
        &self,
        payloads: &[Payload],
        offered_i: &[TrafficSelector],
        offered_r: &[TrafficSelector],
    ) -> Result<
        (
            Suite,
            u32,
            Vec<ipsec::TrafficSelector>,
            Vec<ipsec::TrafficSelector>,
        ),
        u16,
    > {
        let (sa, tsi, tsr) = Found::of(payloads).sa_ts().ok_or(notify::INVALID_SYNTAX)?;
        let (suite, spi_out) =
            accept_esp(sa, &self.cfg.esp_proposals).ok_or(notify::NO_PROPOSAL_CHOSEN)?;
        if !Self::ts_within(tsi, offered_i) || !Self::ts_within(tsr, offered_r) {
            return Err(notify::TS_UNACCEPTABLE);
        }
        let (Some(ts_i), Some(ts_r)) = (ts_from_wire(tsi), ts_from_wire(tsr)) else {
            return Err(notify::TS_UNACCEPTABLE);
        };
        Ok((suite, spi_out, ts_i, ts_r))
    }

    fn send_auth_failed(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        // RFC 7296 §2.21.2: tell the responder in a separate INFORMATIONAL, sent once.
        let msg_id = self.next_msg_id;
        let header = self.header(ExchangeType::Informational, false, msg_id);
        let n = Payload::Notify(Notify::new(notify::AUTHENTICATION_FAILED, Vec::new()));
        let bytes = self.sk.seal(&header, &[n], ctx.rng)?;
        self.next_msg_id = self.next_msg_id.wrapping_add(1);
        ctx.transmit(self.local, self.remote, self.nat_t, &bytes)
    }

    fn established_event(&mut self, ctx: &mut Ctx<'_>, peer_id: Identity) -> Result<(), Error> {
        self.peer_id = Some(peer_id.clone());
        ctx.event(IkeEvent::IkeSaEstablished {
            id: self.id,
            suite: self.suite,
            peer_id,
            local: self.local,
            remote: self.remote,
            udp_encap: self.udp_encap,
            initiator: self.initiator,
        })
    }

    /// Original responder with a local credential: an IKE_AUTH request. Returns the
    /// response payloads. (A delegated responder holds the request for the server
    /// instead, see `on_request`.)
    pub(super) fn auth_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: Vec<Payload>,
    ) -> Result<Vec<Payload>, Error> {
        let refuse = |ty: u16| alloc::vec![Payload::Notify(Notify::new(ty, Vec::new()))];
        let Secrets::Local { sk_pi, sk_pr, .. } = &self.secrets else {
            return Err(IkeError::KeysAtServer.into());
        };
        let found = Found::of(&payloads);
        let auth = found.auth;
        let cfg = self.cfg.clone();
        let Some(idi) = found.id_i else {
            self.close_after_response(ctx);
            ctx.event(IkeEvent::Failed {
                id: self.id,
                reason: FailReason::InvalidResponse,
            })?;
            return Ok(refuse(notify::INVALID_SYNTAX));
        };
        let id_ok = cfg.remote_id.as_ref().is_none_or(|r| r == idi);
        let verified = match auth {
            _ if !id_ok => Err(FailReason::IdentityMismatch),
            None => Err(FailReason::PeerAuth(AuthFailure::MalformedAuth)),
            Some(a) => auth::verify(
                &cfg.auth_db,
                sk_pi.as_bytes(),
                &self.init_request,
                &self.nr,
                idi,
                a,
                &auth::cert_payloads(&payloads),
                UnixTime::at(cfg.time_anchor, ctx.now),
            )
            .map_err(FailReason::PeerAuth),
        };
        if let Err(reason) = verified {
            self.close_after_response(ctx);
            ctx.event(IkeEvent::Failed {
                id: self.id,
                reason,
            })?;
            return Ok(refuse(notify::AUTHENTICATION_FAILED));
        }
        let ours = auth::prove(
            &cfg.credential,
            sk_pr.as_bytes(),
            &self.init_response,
            &self.ni,
            &cfg.local_id,
            ctx.rng,
        )?;
        // RFC 7296 §1.2: IDr, [CERT+], AUTH.
        let mut proof = alloc::vec![Payload::IdR(cfg.local_id.clone())];
        proof.extend(ours.certs.into_iter().map(Payload::Cert));
        proof.push(Payload::Auth(ours.auth));
        let idi = idi.clone();
        self.finish_responder(ctx, idi, &payloads, proof)
    }

    /// Original responder, the peer authenticated: the IKE SA is up; answer with our
    /// proof and the Child SA. Returns the response payloads.
    fn finish_responder(
        &mut self,
        ctx: &mut Ctx<'_>,
        idi: Identity,
        payloads: &[Payload],
        mut reply: Vec<Payload>,
    ) -> Result<Vec<Payload>, Error> {
        self.state = State::Established;
        self.established_event(ctx, idi)?;
        // RFC 7296 §2.4: the peer has no other IKE SA with us (it restarted); the actor
        // forgets any it still holds for this identity.
        self.initial_contact = find_notify(payloads, notify::INITIAL_CONTACT).is_some();
        if Found::of(payloads).sa.is_none() {
            // No Child SA requested (RFC 6023 style): the IKE SA alone.
            return Ok(reply);
        }
        let ni = self.ni.clone();
        let nr = self.nr.clone();
        match self.create_child(ctx, payloads, &ni, &nr, None) {
            Ok((child, mut extra)) => {
                reply.append(&mut extra);
                self.children.push(child.clone());
                ctx.event(IkeEvent::ChildSaEstablished {
                    id: self.id,
                    child: alloc::boxed::Box::new(child),
                    initiated: false,
                })?;
            }
            Err(n) => {
                reply.push(Payload::Notify(Notify::new(n, Vec::new())));
                ctx.event(IkeEvent::ChildSaFailed {
                    id: self.id,
                    notify: n,
                })?;
            }
        }
        Ok(reply)
    }

    /// Exchange responder: choose the ESP proposal and narrow the selectors of an IKE_AUTH
    /// or CREATE_CHILD_SA request. Returns the Child SA and the payloads for the answer
    /// (SA, [Nr], TSi, TSr, [USE_TRANSPORT_MODE]), or the error notify.
    pub(super) fn create_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
        ni: &[u8],
        nr: &[u8],
        answer_nonce: Option<&[u8]>,
    ) -> Result<(ChildSa, Vec<Payload>), u16> {
        let (sa, tsi, tsr) = Found::of(payloads).sa_ts().ok_or(notify::INVALID_SYNTAX)?;
        let choice = select_esp(sa, &self.cfg.esp_proposals).ok_or(notify::NO_PROPOSAL_CHOSEN)?;
        let bound = crate::ikev2::config::MAX_TS;
        let ts_i = crate::ikev2::codec::narrow_ts(tsi, &ts_to_wire(&self.cfg.ts_remote), bound);
        let ts_r = crate::ikev2::codec::narrow_ts(tsr, &ts_to_wire(&self.cfg.ts_local), bound);
        if ts_i.is_empty() || ts_r.is_empty() {
            return Err(notify::TS_UNACCEPTABLE);
        }
        // Intersections with our well-formed selectors are well formed.
        let (Some(local_ts), Some(remote_ts)) = (ts_from_wire(&ts_r), ts_from_wire(&ts_i)) else {
            return Err(notify::TS_UNACCEPTABLE);
        };
        let transport = self.cfg.mode == ChildMode::Transport
            && find_notify(payloads, notify::USE_TRANSPORT_MODE).is_some();
        let spi_in = self.new_spi(ctx.rng);
        let sk_d = self.sk_d().map_err(|_| notify::NO_PROPOSAL_CHOSEN)?;
        let (i2r, r2i) = child_keys(choice.suite, sk_d.as_bytes(), None, ni, nr)
            .map_err(|_| notify::NO_PROPOSAL_CHOSEN)?;
        let child = self.child_sa(
            choice.suite,
            transport,
            spi_in,
            choice.peer_spi,
            i2r,
            r2i,
            local_ts,
            remote_ts,
        )?;
        let mut out = alloc::vec![Payload::Sa(alloc::vec![esp_proposal(
            choice.suite,
            choice.num,
            spi_in
        )])];
        if let Some(n) = answer_nonce {
            out.push(Payload::Nonce(n.to_vec()));
        }
        out.push(Payload::TsI(ts_i.clone()));
        out.push(Payload::TsR(ts_r.clone()));
        if transport {
            out.push(Payload::Notify(Notify::new(
                notify::USE_TRANSPORT_MODE,
                Vec::new(),
            )));
        }
        Ok((child, out))
    }
}

//! IKE_AUTH with a pre-shared key (RFC 7296 §1.2, §2.15) and the first Child SA.

use alloc::vec::Vec;

use super::{Ctx, Found, IkeSa, Request, State, error_notify};
use crate::Error;
use crate::ikev2::ChildMode;
use crate::ikev2::codec::{
    AuthPayload, ExchangeType, Identity, Notify, Payload, TrafficSelector, find_notify,
    ts_from_wire, ts_to_wire,
};
use crate::ikev2::consts::{auth_method, notify};
use crate::ikev2::keys::{child_keys, psk_auth};
use crate::ikev2::proposal::{accept_esp, esp_offer, esp_proposal, select_esp};
use crate::ikev2::{FailReason, IkeEvent};
use crate::ipsec::{self, ChildSa, Suite};

impl IkeSa {
    /// Original initiator: send IKE_AUTH.
    pub(crate) fn start_auth(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        let spi_in = self.new_spi(ctx.rng);
        let cfg = self.cfg.clone();
        let auth = psk_auth(
            cfg.psk.as_bytes(),
            &self.init_request,
            &self.nr,
            self.sk_pi.as_bytes(),
            &cfg.local_id.payload_body(),
        );
        let mut p = alloc::vec![
            Payload::IdI(cfg.local_id.clone()),
            Payload::Notify(Notify::new(notify::INITIAL_CONTACT, Vec::new())),
        ];
        if let Some(r) = &cfg.remote_id {
            p.push(Payload::IdR(r.clone()));
        }
        p.push(Payload::Auth(AuthPayload {
            method: auth_method::SHARED_KEY_MIC,
            data: auth.to_vec(),
        }));
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
        let expected = psk_auth(
            cfg.psk.as_bytes(),
            &self.init_response,
            &self.ni,
            self.sk_pr.as_bytes(),
            &idr.payload_body(),
        );
        if auth.method != auth_method::SHARED_KEY_MIC
            || !crate::crypto::ct_eq(&expected[..], &auth.data)
        {
            self.send_auth_failed(ctx)?;
            return self.fail(ctx, FailReason::AuthenticationFailed);
        }
        self.state = State::Established;
        self.established_event(ctx, idr.clone())?;

        if let Some(n) = error_notify(&payloads) {
            return ctx.event(IkeEvent::ChildSaFailed {
                id: self.id,
                notify: n,
            });
        }
        let transport = find_notify(&payloads, notify::USE_TRANSPORT_MODE).is_some();
        let offered_i = ts_to_wire(&cfg.ts_local);
        let offered_r = ts_to_wire(&cfg.ts_remote);
        let child = match self.accept_child(&payloads, &offered_i, &offered_r) {
            Ok((suite, spi_out, ts_i, ts_r)) => {
                let (i2r, r2i) = child_keys(suite, self.sk_d.as_bytes(), None, &self.ni, &self.nr)?;
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

    /// Original responder: an IKE_AUTH request. Returns the response payloads.
    pub(super) fn auth_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: Vec<Payload>,
    ) -> Result<Vec<Payload>, Error> {
        let refuse = |ty: u16| alloc::vec![Payload::Notify(Notify::new(ty, Vec::new()))];
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
        let verified = auth.is_some_and(|a| {
            let expected = psk_auth(
                cfg.psk.as_bytes(),
                &self.init_request,
                &self.nr,
                self.sk_pi.as_bytes(),
                &idi.payload_body(),
            );
            a.method == auth_method::SHARED_KEY_MIC && crate::crypto::ct_eq(&expected[..], &a.data)
        });
        let id_ok = cfg.remote_id.as_ref().is_none_or(|r| r == idi);
        if !verified || !id_ok {
            self.close_after_response(ctx);
            ctx.event(IkeEvent::Failed {
                id: self.id,
                reason: if id_ok {
                    FailReason::AuthenticationFailed
                } else {
                    FailReason::IdentityMismatch
                },
            })?;
            return Ok(refuse(notify::AUTHENTICATION_FAILED));
        }
        self.state = State::Established;
        self.established_event(ctx, idi.clone())?;
        // RFC 7296 §2.4: the peer has no other IKE SA with us (it restarted); the actor
        // forgets any it still holds for this identity.
        self.initial_contact = find_notify(&payloads, notify::INITIAL_CONTACT).is_some();

        let our_auth = psk_auth(
            cfg.psk.as_bytes(),
            &self.init_response,
            &self.ni,
            self.sk_pr.as_bytes(),
            &cfg.local_id.payload_body(),
        );
        let mut reply = alloc::vec![
            Payload::IdR(cfg.local_id.clone()),
            Payload::Auth(AuthPayload {
                method: auth_method::SHARED_KEY_MIC,
                data: our_auth.to_vec(),
            }),
        ];
        if found.sa.is_none() {
            // No Child SA requested (RFC 6023 style): the IKE SA alone.
            return Ok(reply);
        }
        let ni = self.ni.clone();
        let nr = self.nr.clone();
        match self.create_child(ctx, &payloads, &ni, &nr, None) {
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
        let (i2r, r2i) = child_keys(choice.suite, self.sk_d.as_bytes(), None, ni, nr)
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

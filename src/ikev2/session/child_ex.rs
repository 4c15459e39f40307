//! CREATE_CHILD_SA (rekeying the Child SA, RFC 7296 §1.3.3, §2.8) and INFORMATIONAL
//! (delete and liveness, §1.4, §2.4).

use alloc::vec::Vec;

use super::{Command, Ctx, Found, IkeSa, MAX_CHILDREN, Request, State, error_notify, nonce};
use crate::Error;
use crate::ikev2::IkeEvent;
use crate::ikev2::codec::{Delete, ExchangeType, Notify, Payload, ts_to_wire};
use crate::ikev2::consts::{notify, protocol};
use crate::ikev2::keys::child_keys;
use crate::ikev2::proposal::esp_offer;

impl IkeSa {
    /// Exchange initiator: rekey the current Child SA.
    pub(super) fn start_rekey(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        let old = self
            .current_child()
            .ok_or(crate::ikev2::IkeError::NoChildSa)?
            .clone();
        if self.children.len() >= MAX_CHILDREN {
            return Err(crate::ikev2::IkeError::RekeyPending.into());
        }
        let spi_in = self.new_spi(ctx.rng);
        let ni = nonce(ctx.rng);
        let mut rekey = Notify::new(notify::REKEY_SA, Vec::new());
        rekey.protocol = protocol::ESP;
        rekey.spi = old.spi_in.to_be_bytes().to_vec();
        let mut p = alloc::vec![Payload::Notify(rekey)];
        if old.mode.is_transport() {
            p.push(Payload::Notify(Notify::new(
                notify::USE_TRANSPORT_MODE,
                Vec::new(),
            )));
        }
        p.push(Payload::Sa(esp_offer(&self.cfg.esp_proposals, spi_in)));
        p.push(Payload::Nonce(ni.clone()));
        p.push(Payload::TsI(ts_to_wire(&old.local_ts)));
        p.push(Payload::TsR(ts_to_wire(&old.remote_ts)));
        self.send_request(
            ctx,
            ExchangeType::CreateChildSa,
            &p,
            Request::Rekey {
                old_spi_in: old.spi_in,
                spi_in,
                ni,
            },
        )
    }

    /// Exchange initiator: the rekey answer.
    pub(super) fn rekey_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: Vec<Payload>,
        old_spi_in: u32,
        spi_in: u32,
        ni: &[u8],
    ) -> Result<(), Error> {
        let fail = |ctx: &mut Ctx<'_>, id, n| ctx.event(IkeEvent::ChildSaFailed { id, notify: n });
        if let Some(n) = error_notify(&payloads) {
            return fail(ctx, self.id, n);
        }
        let Some(old) = self
            .children
            .iter()
            .find(|c| c.spi_in == old_spi_in)
            .cloned()
        else {
            // The old SA went away meanwhile (the peer deleted it): nothing to replace.
            return fail(ctx, self.id, notify::CHILD_SA_NOT_FOUND);
        };
        let Some(nr) = Found::of(&payloads).nonce.map(<[u8]>::to_vec) else {
            return fail(ctx, self.id, notify::INVALID_SYNTAX);
        };
        let offered_i = ts_to_wire(&old.local_ts);
        let offered_r = ts_to_wire(&old.remote_ts);
        let (suite, spi_out, ts_i, ts_r) =
            match self.accept_child(&payloads, &offered_i, &offered_r) {
                Ok(x) => x,
                Err(n) => return fail(ctx, self.id, n),
            };
        let (i2r, r2i) = child_keys(suite, self.sk_d()?.as_bytes(), None, ni, &nr)?;
        let transport =
            crate::ikev2::codec::find_notify(&payloads, notify::USE_TRANSPORT_MODE).is_some();
        let child = match self.child_sa(suite, transport, spi_in, spi_out, r2i, i2r, ts_i, ts_r) {
            Ok(c) => c,
            Err(n) => return fail(ctx, self.id, n),
        };
        self.children.push(child.clone());
        ctx.event(IkeEvent::ChildSaRekeyed {
            id: self.id,
            old_spi_in,
            child: alloc::boxed::Box::new(child),
            initiated: true,
        })?;
        // §2.8: the initiator of the rekey deletes the old SA.
        self.queue
            .push_front(Command::DeleteChild(Some(old_spi_in)));
        Ok(())
    }

    /// Exchange responder: CREATE_CHILD_SA.
    pub(super) fn create_child_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: Vec<Payload>,
    ) -> Result<Vec<Payload>, Error> {
        let refuse = |ty: u16| Ok(alloc::vec![Payload::Notify(Notify::new(ty, Vec::new()))]);
        if super::is_ike_rekey(&payloads) {
            return self.ike_rekey_request(ctx, &payloads);
        }
        if matches!(
            self.pending.as_ref().map(|p| &p.request),
            Some(Request::RekeyIke { .. })
        ) {
            // Our IKE SA rekey is under way; the Child SA must wait for the new IKE SA.
            return refuse(notify::TEMPORARY_FAILURE);
        }
        let rekey = payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.ty == notify::REKEY_SA && n.protocol == protocol::ESP => {
                <[u8; 4]>::try_from(n.spi.as_slice())
                    .ok()
                    .map(u32::from_be_bytes)
            }
            _ => None,
        });
        let Some(rekeyed_spi) = rekey else {
            // One Child SA per IKE SA: no additional ones.
            return refuse(notify::NO_ADDITIONAL_SAS);
        };
        let Some(old) = self
            .children
            .iter()
            .find(|c| c.spi_out == rekeyed_spi)
            .cloned()
        else {
            let mut n = Notify::new(notify::CHILD_SA_NOT_FOUND, Vec::new());
            n.protocol = protocol::ESP;
            n.spi = rekeyed_spi.to_be_bytes().to_vec();
            return Ok(alloc::vec![Payload::Notify(n)]);
        };
        let own_rekey_pending = matches!(
            self.pending.as_ref().map(|p| &p.request),
            Some(Request::Rekey { .. })
        );
        if self.children.len() >= MAX_CHILDREN || own_rekey_pending {
            return refuse(notify::TEMPORARY_FAILURE);
        }
        let Some(ni) = Found::of(&payloads).nonce.map(<[u8]>::to_vec) else {
            return refuse(notify::INVALID_SYNTAX);
        };
        let nr = nonce(ctx.rng);
        match self.create_child(ctx, &payloads, &ni, &nr, Some(&nr)) {
            Ok((child, reply)) => {
                self.children.push(child.clone());
                ctx.event(IkeEvent::ChildSaRekeyed {
                    id: self.id,
                    old_spi_in: old.spi_in,
                    child: alloc::boxed::Box::new(child),
                    initiated: false,
                })?;
                Ok(reply)
            }
            Err(n) => refuse(n),
        }
    }

    /// Exchange responder: INFORMATIONAL (delete, notifies, liveness).
    pub(super) fn informational_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: Vec<Payload>,
    ) -> Result<Vec<Payload>, Error> {
        let mut ike_deleted = false;
        let mut deleted_in = Vec::new();
        for p in &payloads {
            match p {
                Payload::Delete(d) if d.protocol == protocol::IKE => ike_deleted = true,
                Payload::Delete(d) if d.protocol == protocol::ESP => {
                    for spi in &d.spis {
                        let Ok(spi) = <[u8; 4]>::try_from(spi.as_slice()) else {
                            continue;
                        };
                        let spi = u32::from_be_bytes(spi);
                        if let Some(i) = self.children.iter().position(|c| c.spi_out == spi) {
                            let c = self.children.remove(i);
                            deleted_in.push(c.spi_in.to_be_bytes().to_vec());
                            ctx.event(IkeEvent::ChildSaDeleted {
                                id: self.id,
                                spi_in: c.spi_in,
                                spi_out: c.spi_out,
                            })?;
                        }
                    }
                }
                Payload::Notify(n) if n.ty == notify::AUTHENTICATION_FAILED => {
                    // The initiator refused our AUTH after all.
                    self.fail(ctx, crate::ikev2::FailReason::AuthenticationFailed)?;
                    return Ok(Vec::new());
                }
                _ => {}
            }
        }
        if ike_deleted && matches!(self.state, State::Rekeyed { .. }) {
            // The peer retires the IKE SA it rekeyed; the Child SAs moved on.
            self.state = State::Dead;
            self.pending = None;
            return Ok(Vec::new());
        }
        if ike_deleted {
            self.deleted(ctx, true)?;
            return Ok(Vec::new());
        }
        if deleted_in.is_empty() {
            return Ok(Vec::new());
        }
        Ok(alloc::vec![Payload::Delete(Delete {
            protocol: protocol::ESP,
            spi_size: 4,
            spis: deleted_in,
        })])
    }
}

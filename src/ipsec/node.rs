//! [`IpsecNode`]: a [`DataPlane`] as an [`Actor`] between two interfaces.
//!
//! ```text
//!   plaintext iface ── Input::Packet ──▶ protect ──▶ Output::Packet (ESP) on protected iface
//!                                                 └▶ Output::Transmit (ESP-in-UDP)
//!   protected iface ── Input::Packet ──▶ unprotect ─▶ Output::Packet on plaintext iface
//!   Input::Datagram (NAT-T port) ──────▶ unprotect ─▶ Output::Packet on plaintext iface
//!   data-plane events ─────────────────────────────▶ Output::Event(IpsecEvent::…)
//! ```
//!
//! Bypassed packets are forwarded unchanged to the other side; discarded, queued and
//! dummy packets and NAT keepalives produce nothing. IKE messages that arrive behind the
//! non-ESP marker are not this actor's business: they are counted and dropped (a terminal
//! whose keys come from a proxy runs no IKE). Errors are returned from
//! [`Actor::handle_input`] as [`Error::Ipsec`]; the node stays usable.

use core::net::SocketAddr;

use super::dataplane::{DataPlane, Inbound, Outbound, Protected, Timer};
use super::sa::ChildSa;
use super::{IpsecError, IpsecEvent};
use crate::io::{Actor, IfaceId, Input, Outbox, Output, Transmit};
use crate::{Error, Instant};

/// The two interfaces of an [`IpsecNode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Where clear traffic enters and leaves (the terminal's own stack, or the LAN).
    pub plaintext: IfaceId,
    /// Where protected traffic enters and leaves (the network).
    pub protected: IfaceId,
    /// Bound of the output queue.
    pub outbox_bound: usize,
}

/// A data plane wired to two interfaces, driven through the [`Actor`] contract.
#[derive(Debug)]
pub struct IpsecNode {
    plane: DataPlane,
    config: NodeConfig,
    outbox: Outbox<IpsecEvent>,
    ike_dropped: u64,
}

impl IpsecNode {
    /// Wrap `plane`.
    pub fn new(plane: DataPlane, config: NodeConfig) -> IpsecNode {
        IpsecNode {
            plane,
            outbox: Outbox::new(config.outbox_bound),
            config,
            ike_dropped: 0,
        }
    }

    /// The data plane.
    pub fn data_plane(&self) -> &DataPlane {
        &self.plane
    }

    /// The data plane, to add policies or remove SAs.
    pub fn data_plane_mut(&mut self) -> &mut DataPlane {
        &mut self.plane
    }

    /// IKE messages received and dropped.
    pub fn ike_dropped(&self) -> u64 {
        self.ike_dropped
    }

    /// Install an SA pair (typically from a key transfer); packets queued for it are
    /// emitted, protected.
    pub fn install(&mut self, now: Instant, sa: ChildSa) -> Result<(), Error> {
        let released = self.plane.install(now, sa);
        let released = released.map_err(Error::from)?;
        for p in released {
            self.emit_protected(p)?;
        }
        self.drain_events()
    }

    /// The node's due timers: those of its data plane (SA lifetimes, acquire time-outs);
    /// the node adds none of its own. `poll_timeout` is the earliest deadline of the same
    /// timers ([`DataPlane::poll_timeout`]).
    fn due_timers(&self, now: Instant) -> alloc::vec::Vec<Timer> {
        self.plane.due_timers(now)
    }

    fn emit_protected(&mut self, p: Protected) -> Result<(), Error> {
        match p {
            Protected::Ip(data) => self.outbox.push(Output::Packet {
                iface: self.config.protected,
                data,
            }),
            Protected::Udp(d) => self.outbox.push(Output::Transmit(Transmit {
                from: d.from,
                to: d.to,
                data: d.payload,
            })),
        }
    }

    fn drain_events(&mut self) -> Result<(), Error> {
        while let Some(e) = self.plane.poll_event() {
            self.outbox.push(Output::Event(e))?;
        }
        Ok(())
    }

    fn deliver(&mut self, inbound: Inbound, original: &[u8]) -> Result<(), Error> {
        match inbound {
            Inbound::Packet { packet, .. } => self.outbox.push(Output::Packet {
                iface: self.config.plaintext,
                data: packet,
            }),
            Inbound::Bypass => self.outbox.push(Output::Packet {
                iface: self.config.plaintext,
                data: original.to_vec(),
            }),
            Inbound::Ike { .. } => {
                self.ike_dropped += 1;
                Ok(())
            }
            Inbound::Discard | Inbound::NatKeepalive | Inbound::Dummy { .. } => Ok(()),
        }
    }

    fn inbound_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        data: &[u8],
    ) -> Result<(), Error> {
        let r = self.plane.unprotect_datagram(now, from, to, data);
        let r = r.map_err(Error::from).and_then(|i| self.deliver(i, data));
        self.drain_events()?;
        r
    }
}

impl Actor for IpsecNode {
    type Event = IpsecEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::Packet { iface, data } if iface == self.config.plaintext => {
                let r = match self.plane.protect(now, data) {
                    Ok(Outbound::Protected(p)) => self.emit_protected(p),
                    Ok(Outbound::Bypass) => self.outbox.push(Output::Packet {
                        iface: self.config.protected,
                        data: data.to_vec(),
                    }),
                    Ok(Outbound::Discard | Outbound::Queued { .. }) => Ok(()),
                    Err(e) => Err(e.into()),
                };
                self.drain_events()?;
                r
            }
            Input::Packet { iface, data } if iface == self.config.protected => {
                let r = self.plane.unprotect(now, data);
                let r = r.map_err(Error::from).and_then(|i| self.deliver(i, data));
                self.drain_events()?;
                r
            }
            Input::Packet { .. } => Err(IpsecError::UnknownInterface.into()),
            Input::Datagram { from, to, data } => self.inbound_datagram(now, from, to, data),
            _ => Err(IpsecError::UnsupportedInput.into()),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        for timer in self.due_timers(now) {
            self.plane.fire_timer(now, timer);
        }
        // A full outbox drops the events; the driver stopped draining.
        let _ = self.drain_events();
    }

    fn poll_output(&mut self) -> Option<Output<IpsecEvent>> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.plane.poll_timeout()
    }
}

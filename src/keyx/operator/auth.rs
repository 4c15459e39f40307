//! The authentication server (seed 003 ¶0031-¶0032, ¶0044): holds the subscribers'
//! original service profiles and, when a subscriber attaches (is authenticated at location
//! registration), sends a copy to the service control it attached at — over deputy's
//! secure channel, as the channel's client. When the subscriber moves, the profile goes
//! to the new service control and is withdrawn from the old one, so nothing stays
//! diverted there.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use super::OperatorEvent;
use super::profile::{ServiceProfile, encode_withdraw};
use crate::channel::{ClientConfig, Connection, SecureStream};
use crate::error::OperatorError;
use crate::io::{Actor, Input, Outbox, Output, StreamId};
use crate::time::TimerTable;
use crate::{Error, Instant, Rng};

/// The authentication server's configuration.
#[derive(Clone, Debug)]
pub struct AuthServerConfig {
    /// How it authenticates itself to the service controls.
    pub channel: Arc<ClientConfig>,
    /// Our address (port 0: any).
    pub local: SocketAddr,
    /// The port the service controls take profiles on.
    pub control_port: u16,
    /// The original profiles, one per subscriber.
    pub profiles: Vec<ServiceProfile>,
    /// Service controls connected at once.
    pub max_controls: usize,
    /// Messages waiting for one service control's channel.
    pub max_pending: usize,
    /// Bound of the output queue.
    pub outbox_bound: usize,
}

/// One service control's channel, step by step.
enum Channel {
    /// The stream is being opened.
    Connecting(StreamId),
    /// The channel runs (handshaking or established) on this stream.
    Open(Box<SecureStream>),
}

struct Control {
    channel: Channel,
    pending: VecDeque<Vec<u8>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    Channel(IpAddr),
}

/// The authentication server, an [`Actor`] on a host.
pub struct AuthServer {
    cfg: AuthServerConfig,
    rng: Rng,
    /// Where each subscriber is attached.
    attached: BTreeMap<u64, IpAddr>,
    controls: BTreeMap<IpAddr, Control>,
    next_stream: u64,
    outbox: Outbox<OperatorEvent>,
}

impl core::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AuthServer")
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

impl AuthServer {
    /// A server holding `cfg.profiles`.
    pub fn new(cfg: AuthServerConfig, rng: Rng) -> AuthServer {
        AuthServer {
            outbox: Outbox::new(cfg.outbox_bound),
            cfg,
            rng,
            attached: BTreeMap::new(),
            controls: BTreeMap::new(),
            next_stream: 0,
        }
    }

    /// Where `subscriber` is attached.
    pub fn attached_at(&self, subscriber: u64) -> Option<IpAddr> {
        self.attached.get(&subscriber).copied()
    }

    /// The subscriber attached (and was authenticated) at the service control `control`:
    /// send it the profile; withdraw it from the previous one.
    pub fn attach(&mut self, subscriber: u64, control: IpAddr) -> Result<(), Error> {
        let profile = self
            .cfg
            .profiles
            .iter()
            .find(|p| p.subscriber == subscriber)
            .ok_or(OperatorError::UnknownSubscriber(subscriber))?;
        let install = profile.encode_install()?;
        if let Some(old) = self.attached.get(&subscriber).copied()
            && old != control
        {
            self.send(old, encode_withdraw(subscriber)?)?;
        }
        self.send(control, install)?;
        self.attached.insert(subscriber, control);
        Ok(())
    }

    /// The subscriber attached at `control` with new addresses (it moved and the new access
    /// network gave it `addresses`): the profile is updated to name them, then as
    /// [`AuthServer::attach`].
    pub fn attach_at(
        &mut self,
        subscriber: u64,
        control: IpAddr,
        addresses: Vec<IpAddr>,
    ) -> Result<(), Error> {
        let p = self
            .cfg
            .profiles
            .iter_mut()
            .find(|p| p.subscriber == subscriber)
            .ok_or(OperatorError::UnknownSubscriber(subscriber))?;
        *p = p.moved_to(addresses);
        self.attach(subscriber, control)
    }

    /// The subscriber detached: its profile is withdrawn.
    pub fn detach(&mut self, subscriber: u64) -> Result<(), Error> {
        if let Some(old) = self.attached.remove(&subscriber) {
            self.send(old, encode_withdraw(subscriber)?)?;
        }
        Ok(())
    }

    fn send(&mut self, control: IpAddr, msg: Vec<u8>) -> Result<(), Error> {
        if !self.controls.contains_key(&control) {
            if self.controls.len() >= self.cfg.max_controls {
                return Err(Error::CapacityExceeded {
                    what: "service-control channels",
                    bound: self.cfg.max_controls,
                });
            }
            self.next_stream += 1;
            let id = StreamId::outbound(self.next_stream);
            self.outbox.push(Output::Connect {
                id,
                local: self.cfg.local,
                remote: SocketAddr::new(control, self.cfg.control_port),
            })?;
            self.controls.insert(
                control,
                Control {
                    channel: Channel::Connecting(id),
                    pending: VecDeque::new(),
                },
            );
        }
        let max = self.cfg.max_pending;
        let Some(c) = self.controls.get_mut(&control) else {
            return Ok(());
        };
        if c.pending.len() >= max {
            return Err(Error::CapacityExceeded {
                what: "profile messages pending",
                bound: max,
            });
        }
        c.pending.push_back(msg);
        self.flush(control)
    }

    /// Send what waits, once the channel is established.
    fn flush(&mut self, control: IpAddr) -> Result<(), Error> {
        let Some(c) = self.controls.get_mut(&control) else {
            return Ok(());
        };
        let Channel::Open(s) = &mut c.channel else {
            return Ok(());
        };
        if !s.connection().is_established() {
            return Ok(());
        }
        while let Some(m) = c.pending.pop_front() {
            s.send(&m, &mut self.outbox)?;
            self.outbox.event(OperatorEvent::ProfileSent { control })?;
        }
        Ok(())
    }

    fn control_of(&self, id: StreamId) -> Option<IpAddr> {
        self.controls.iter().find_map(|(a, c)| match &c.channel {
            Channel::Connecting(s) if *s == id => Some(*a),
            Channel::Open(s) if s.id() == id => Some(*a),
            _ => None,
        })
    }
}

impl TimerTable for AuthServer {
    type Timer = Timer;

    fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        self.controls.iter().filter_map(|(a, c)| match &c.channel {
            Channel::Open(s) => s.poll_timeout().map(|t| (Timer::Channel(*a), t)),
            Channel::Connecting(_) => None,
        })
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        let Timer::Channel(a) = timer;
        if let Some(Control {
            channel: Channel::Open(s),
            ..
        }) = self.controls.get_mut(&a)
        {
            // A failed channel is forgotten: the next message opens a new one.
            if s.handle_timeout(now, &mut self.outbox).is_err() || s.is_closed() {
                self.controls.remove(&a);
            }
        }
    }
}

impl Actor for AuthServer {
    type Event = OperatorEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::StreamConnected { id, .. } => {
                let Some(a) = self.control_of(id) else {
                    return Err(Error::UnknownStream(id));
                };
                let conn = Connection::client(self.cfg.channel.clone(), now, &mut *self.rng)?;
                let mut s = SecureStream::new(id, conn, now);
                s.pump(&mut self.outbox)?;
                if let Some(c) = self.controls.get_mut(&a) {
                    c.channel = Channel::Open(Box::new(s));
                }
                Ok(())
            }
            Input::StreamData { id, data } => {
                let Some(a) = self.control_of(id) else {
                    return Err(Error::UnknownStream(id));
                };
                let Some(Control {
                    channel: Channel::Open(s),
                    ..
                }) = self.controls.get_mut(&a)
                else {
                    return Err(Error::UnknownStream(id));
                };
                let mut received = Vec::new();
                let r = s.feed(now, data, &mut *self.rng, &mut self.outbox, &mut received);
                if s.is_closed() {
                    self.controls.remove(&a);
                    return r;
                }
                r?;
                self.flush(a)
            }
            Input::StreamClosed { id } => {
                if let Some(a) = self.control_of(id) {
                    self.controls.remove(&a);
                }
                Ok(())
            }
            _ => Err(OperatorError::UnsupportedInput.into()),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.run_timers(now);
    }

    fn poll_output(&mut self) -> Option<Output<OperatorEvent>> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer()
    }
}

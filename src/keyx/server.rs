//! The substitution server as an actor (seed 004, S31-S49): deputy's secure channel
//! (S31-S32) around the [`Dispatcher`] (S33-S49).
//!
//! Terminals connect over streams; each stream runs one channel connection, and the
//! terminal a request comes from is the one the channel authenticated (its PSK identity,
//! or the name in its certificate) — never a name taken from the message. Every request is
//! answered on the stream it came in on. What the server does for one protocol is its
//! [`Substitute`] (IKEv2: [`super::ike::IkeSubstitute`]).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use super::dispatch::{Bounds, Counters, Dispatcher, Substitute, TerminalId};
use crate::channel::{ChannelEvent, ChannelServer, ChannelServerConfig, PeerIdentity};
use crate::io::{Actor, Input, Outbox, Output, StreamId};
use crate::wire::Limits;
use crate::{Error, Instant, Rng};

/// What the substitution server tells its operator.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A terminal's channel is up.
    TerminalConnected {
        /// Who (as the channel authenticated it).
        terminal: TerminalId,
    },
    /// A terminal's channel ended.
    TerminalGone {
        /// Who.
        terminal: TerminalId,
    },
    /// A channel failed its handshake or was damaged (the terminal may come back).
    ChannelFailed {
        /// The stream.
        stream: StreamId,
    },
}

/// The substitution server: a channel server whose messages go to a [`Dispatcher`].
pub struct SubstitutionServer<P: Substitute> {
    channel: ChannelServer,
    dispatcher: Dispatcher<P>,
    /// Streams whose channel is up, and the terminal each authenticated as.
    terminals: BTreeMap<StreamId, TerminalId>,
    out: Outbox<ServerEvent>,
}

impl<P: Substitute> core::fmt::Debug for SubstitutionServer<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SubstitutionServer")
            .field("terminals", &self.terminals.len())
            .field("sessions", &self.dispatcher.len())
            .finish_non_exhaustive()
    }
}

/// The name a channel identity gives a terminal: a PSK identity as UTF-8 (lossy), or the
/// subject of its certificate. `None` for an anonymous client, which is served nothing.
fn terminal_of(peer: &PeerIdentity) -> Option<TerminalId> {
    match peer {
        PeerIdentity::Anonymous => None,
        PeerIdentity::Psk(id) => Some(String::from_utf8_lossy(id).into_owned()),
        PeerIdentity::Certificate(c) => Some(c.subject().into()),
    }
}

impl<P: Substitute> SubstitutionServer<P> {
    /// A server running `protocol` within `bounds`, behind `channel`.
    pub fn new(channel: ChannelServerConfig, protocol: P, bounds: Bounds, rng: Rng) -> Self {
        SubstitutionServer {
            channel: ChannelServer::new(channel, rng),
            dispatcher: Dispatcher::new(protocol, bounds, Limits::default()),
            terminals: BTreeMap::new(),
            out: Outbox::default(),
        }
    }

    /// The message loop (its sessions and counters).
    pub fn dispatcher(&self) -> &Dispatcher<P> {
        &self.dispatcher
    }

    /// The protocol work, to provision terminals or read its counters.
    pub fn protocol_mut(&mut self) -> &mut P {
        self.dispatcher.protocol_mut()
    }

    /// What the message loop counted.
    pub fn counters(&self) -> Counters {
        self.dispatcher.counters()
    }

    /// Terminals with a channel up.
    pub fn connected(&self) -> Vec<TerminalId> {
        self.terminals.values().cloned().collect()
    }

    fn drain(&mut self, now: Instant) -> Result<(), Error> {
        let mut result = Ok(());
        while let Some(o) = self.channel.poll_output() {
            let r = match o {
                Output::Event(e) => self.on_channel(now, e),
                other => self.out.push(other.map_event(|e: ChannelEvent| match e {
                    // Unreachable in practice: events are matched above.
                    ChannelEvent::Established { stream, .. }
                    | ChannelEvent::Received { stream, .. }
                    | ChannelEvent::Closed { stream }
                    | ChannelEvent::Failed { stream, .. } => ServerEvent::ChannelFailed { stream },
                })),
            };
            result = result.and(r);
        }
        result
    }

    fn on_channel(&mut self, now: Instant, e: ChannelEvent) -> Result<(), Error> {
        match e {
            ChannelEvent::Established { stream, peer, .. } => match terminal_of(&peer) {
                Some(terminal) => {
                    self.terminals.insert(stream, terminal.clone());
                    self.out.event(ServerEvent::TerminalConnected { terminal })
                }
                // An anonymous client has no sessions to have: closed at once.
                None => self.channel.close(stream),
            },
            ChannelEvent::Received { stream, data } => {
                let Some(terminal) = self.terminals.get(&stream).cloned() else {
                    return Ok(());
                };
                // S33: one request; S49 (no answer) is the dispatcher's `None`.
                match self.dispatcher.handle(now, &terminal, &data) {
                    Some(answer) => self.channel.send(stream, &answer),
                    None => Ok(()),
                }
            }
            ChannelEvent::Closed { stream } => match self.terminals.remove(&stream) {
                Some(terminal) => self.out.event(ServerEvent::TerminalGone { terminal }),
                None => Ok(()),
            },
            ChannelEvent::Failed { stream, .. } => {
                self.terminals.remove(&stream);
                self.out.event(ServerEvent::ChannelFailed { stream })
            }
        }
    }
}

impl<P: Substitute> Actor for SubstitutionServer<P> {
    type Event = ServerEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        let r = self.channel.handle_input(now, input);
        let drained = self.drain(now);
        r.and(drained)
    }

    fn handle_timeout(&mut self, now: Instant) {
        // Two timer sources, each consulted by `poll_timeout` too: the channel's
        // connections and the dispatcher's session expiry (S37).
        if self.channel.poll_timeout().is_some_and(|t| t <= now) {
            self.channel.handle_timeout(now);
        }
        if self.dispatcher.poll_timeout().is_some_and(|t| t <= now) {
            self.dispatcher.handle_timeout(now);
        }
        // A full outbox is counted as lost and reported by the driver's next call.
        let _ = self.drain(now);
    }

    fn poll_output(&mut self) -> Option<Output<ServerEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [self.channel.poll_timeout(), self.dispatcher.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }
}

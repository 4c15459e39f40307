//! The aggregate [`Event`] and deputy's catalogue of message names: the top of the crate.
//!
//! Each protocol has its own event type, and each actor declares it as its
//! [`Actor::Event`](crate::Actor::Event). Drivers that hold several kinds of actor (the
//! [`sim`](crate::sim), an application running a proxy next to a rendezvous server) convert
//! them into this one enum with `From`/`Into`. It lives here, above every protocol, so that
//! neither the contract ([`crate::io`]) nor the protocols depend on the set of protocols.

use crate::channel::ChannelEvent;
use crate::ikev2::IkeEvent;
use crate::ipsec::IpsecEvent;
use crate::keyx::ike::TerminalEvent;
use crate::keyx::{KeyxEvent, ServerEvent};
use crate::offload::{ApplianceEvent, OffloadEvent, ProxyEvent, RemoteEvent};
use crate::rendezvous::RendezvousEvent;

/// Something an actor tells the application. Each protocol module has its own event type;
/// this enum gathers them so one driver can collect the events of every actor.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// From a secure-channel actor.
    Channel(ChannelEvent),
    /// From a seed 000 actor (appliance, crypto proxy, remote node).
    Offload(OffloadEvent),
    /// From an IKEv2 initiator or responder.
    Ike(IkeEvent),
    /// From an ESP data plane ([`crate::ipsec`]).
    Ipsec(IpsecEvent),
    /// From a seed 002 rendezvous actor (server, issuer, acceptor).
    Rendezvous(RendezvousEvent),
    /// From a key-exchange delegation actor (seed 004 terminal or substitution server).
    Keyx(KeyxEvent),
}

impl From<KeyxEvent> for Event {
    fn from(e: KeyxEvent) -> Self {
        Event::Keyx(e)
    }
}

impl From<TerminalEvent> for Event {
    fn from(e: TerminalEvent) -> Self {
        Event::Keyx(KeyxEvent::Terminal(e))
    }
}

impl From<crate::keyx::tls::TerminalEvent> for Event {
    fn from(e: crate::keyx::tls::TerminalEvent) -> Self {
        Event::Keyx(KeyxEvent::TlsTerminal(e))
    }
}

impl From<ServerEvent> for Event {
    fn from(e: ServerEvent) -> Self {
        Event::Keyx(KeyxEvent::Server(e))
    }
}

impl From<ChannelEvent> for Event {
    fn from(e: ChannelEvent) -> Self {
        Event::Channel(e)
    }
}

impl From<OffloadEvent> for Event {
    fn from(e: OffloadEvent) -> Self {
        Event::Offload(e)
    }
}

impl From<ApplianceEvent> for Event {
    fn from(e: ApplianceEvent) -> Self {
        Event::Offload(OffloadEvent::Appliance(e))
    }
}

impl From<ProxyEvent> for Event {
    fn from(e: ProxyEvent) -> Self {
        Event::Offload(OffloadEvent::Proxy(e))
    }
}

impl From<RemoteEvent> for Event {
    fn from(e: RemoteEvent) -> Self {
        Event::Offload(OffloadEvent::Remote(e))
    }
}

impl From<IkeEvent> for Event {
    fn from(e: IkeEvent) -> Self {
        Event::Ike(e)
    }
}

impl From<IpsecEvent> for Event {
    fn from(e: IpsecEvent) -> Self {
        Event::Ipsec(e)
    }
}

impl From<RendezvousEvent> for Event {
    fn from(e: RendezvousEvent) -> Self {
        Event::Rendezvous(e)
    }
}

/// The name of one of deputy's own message types, from the registry in `docs/wire.md`
/// (for traces, pcap labels and charts): each protocol names the types of its range.
/// The simulator registers this catalogue by default.
pub fn message_name(msg_type: u8) -> Option<&'static str> {
    match msg_type {
        0x01..=0x0F => crate::channel::messages::type_name(msg_type),
        0x10..=0x2F => crate::offload::messages::type_name(msg_type),
        0x30..=0x4F => crate::rendezvous::messages::type_name(msg_type),
        0x50..=0x6F => crate::keyx::messages::type_name(msg_type),
        _ => None,
    }
}

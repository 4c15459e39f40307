//! The aggregate [`Event`] and deputy's catalogue of message names: the top of the crate.
//!
//! Each protocol has its own event type, and each actor declares it as its
//! [`Actor::Event`]. Drivers that hold several kinds of actor (the
//! [`sim`](crate::sim), an application running a proxy next to a rendezvous server) convert
//! them into this one enum with `From`/`Into`. It lives here, above every protocol, so that
//! neither the contract ([`crate::io`]) nor the protocols depend on the set of protocols.

use core::any::Any;

use crate::channel::ChannelEvent;
use crate::ikev2::IkeEvent;
use crate::ipsec::IpsecEvent;
use crate::keyx::ike::TerminalEvent;
use crate::keyx::{KeyxEvent, ServerEvent};
use crate::offload::{ApplianceEvent, OffloadEvent, ProxyEvent, RemoteEvent};
use crate::rendezvous::RendezvousEvent;
use crate::{Actor, Error, Input, Instant, Output};

/// Something an actor tells the application. Each protocol module has its own event type;
/// this enum gathers them so one driver can collect the events of every actor.
///
/// Take it apart with the accessors rather than nested `match`es: `as_*` borrows the
/// protocol's (or, for seed 000, the actor's) own event, `into_*` takes it, and each event
/// type also implements `TryFrom<Event>` (the `Err` is the event handed back):
///
/// ```
/// use deputy::Event;
/// use deputy::offload::ApplianceEvent;
///
/// let events: Vec<Event> = vec![
///     ApplianceEvent::SendFailed { session: 3 }.into(),
///     deputy::rendezvous::RendezvousEvent::PeerClosed { session: 9 }.into(),
/// ];
/// // Instead of `Event::Offload(OffloadEvent::Appliance(ApplianceEvent::SendFailed { .. }))`:
/// assert!(matches!(events[0].as_appliance(), Some(ApplianceEvent::SendFailed { session: 3 })));
/// assert!(events[0].as_offload().is_some() && events[0].as_rendezvous().is_none());
/// let appliance: Vec<ApplianceEvent> = events.into_iter().filter_map(Event::into_appliance).collect();
/// assert_eq!(appliance.len(), 1);
/// ```
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

/// `as_*` (borrow) and `into_*` (take) accessors for one protocol's (or seed 000 actor's)
/// events, and `TryFrom<Event>` for its event type (the `Err` hands the event back
/// unchanged). Each entry names the pattern that binds `x` to the inner event.
macro_rules! accessors {
    ($(#[$doc:meta] $ty:ty, $as:ident, $into:ident, $x:ident in $pat:pat,)*) => {
        impl Event {
            $(
                #[$doc]
                pub fn $as(&self) -> Option<&$ty> {
                    match self {
                        $pat => Some($x),
                        _ => None,
                    }
                }

                #[$doc]
                pub fn $into(self) -> Option<$ty> {
                    <$ty>::try_from(self).ok()
                }
            )*
        }

        $(
            impl TryFrom<Event> for $ty {
                type Error = Event;

                fn try_from(e: Event) -> Result<Self, Event> {
                    match e {
                        $pat => Ok($x),
                        other => Err(other),
                    }
                }
            }
        )*
    };
}

accessors! {
    /// The event if it came from a secure-channel actor.
    ChannelEvent, as_channel, into_channel, x in Event::Channel(x),
    /// The event if it came from a seed 000 actor (any of the three).
    OffloadEvent, as_offload, into_offload, x in Event::Offload(x),
    /// The event if it came from an IKEv2 initiator or responder.
    IkeEvent, as_ike, into_ike, x in Event::Ike(x),
    /// The event if it came from an ESP data plane.
    IpsecEvent, as_ipsec, into_ipsec, x in Event::Ipsec(x),
    /// The event if it came from a seed 002 actor (server, issuer, acceptor).
    RendezvousEvent, as_rendezvous, into_rendezvous, x in Event::Rendezvous(x),
    /// The event if it came from a key-exchange delegation actor.
    KeyxEvent, as_keyx, into_keyx, x in Event::Keyx(x),
    /// The event if an [`Appliance`](crate::offload::Appliance) raised it.
    ApplianceEvent, as_appliance, into_appliance, x in Event::Offload(OffloadEvent::Appliance(x)),
    /// The event if a [`CryptoProxy`](crate::offload::CryptoProxy) raised it.
    ProxyEvent, as_proxy, into_proxy, x in Event::Offload(OffloadEvent::Proxy(x)),
    /// The event if a [`RemoteNode`](crate::offload::RemoteNode) raised it.
    RemoteEvent, as_remote, into_remote, x in Event::Offload(OffloadEvent::Remote(x)),
    /// The event if an IKE-less terminal (seeds 001 and 003) raised it.
    crate::keyx::ikeless::TerminalEvent, as_ikeless_terminal, into_ikeless_terminal, x in Event::Keyx(KeyxEvent::Ikeless(x)),
    /// The event if a seed 001 inline key-exchange proxy raised it.
    crate::keyx::inline::ProxyEvent, as_inline_proxy, into_inline_proxy, x in Event::Keyx(KeyxEvent::Inline(x)),
    /// The event if a seed 003 actor raised it.
    crate::keyx::operator::OperatorEvent, as_operator, into_operator, x in Event::Keyx(KeyxEvent::Operator(x)),
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

impl From<crate::keyx::ikeless::TerminalEvent> for Event {
    fn from(e: crate::keyx::ikeless::TerminalEvent) -> Self {
        Event::Keyx(KeyxEvent::Ikeless(e))
    }
}

impl From<crate::keyx::inline::ProxyEvent> for Event {
    fn from(e: crate::keyx::inline::ProxyEvent) -> Self {
        Event::Keyx(KeyxEvent::Inline(e))
    }
}

impl From<crate::keyx::operator::OperatorEvent> for Event {
    fn from(e: crate::keyx::operator::OperatorEvent) -> Self {
        Event::Keyx(KeyxEvent::Operator(e))
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

/// Any [`Actor`] whose events convert into [`Event`], as a driver that holds several kinds
/// of actor keeps them: `Box<dyn AnyActor>`, with every event converted into the aggregate
/// [`Event`], and the concrete actor handed back for its typed commands through
/// [`AnyActor::as_any_mut`]. Implemented for every `Actor + 'static` whose `Actor::Event`
/// converts into [`Event`]; needs no feature (the [`sim`](crate::sim) holds its actors this
/// way too).
///
/// ```
/// use deputy::{AnyActor, Instant};
/// use deputy::offload::{Appliance, ApplianceConfig, ApplianceParams};
/// use rand_core::SeedableRng;
///
/// let config = ApplianceConfig::new(ApplianceParams {
///     name: "microwave".into(),
///     local: "192.168.0.10:5683".parse().unwrap(),
///     proxy: "192.168.0.2:5684".parse().unwrap(),
///     proxy_public: "192.168.0.2:8443".parse().unwrap(),
/// }).unwrap();
/// let rng = Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(1));
/// let mut actors: Vec<Box<dyn AnyActor>> = vec![Box::new(Appliance::new(config, rng))];
/// // Later: the concrete actor back, for a typed command.
/// let microwave = actors[0].as_any_mut().downcast_mut::<Appliance>().unwrap();
/// assert_eq!(microwave.name(), "microwave");
/// assert!(actors[0].poll_output().is_none());
/// ```
pub trait AnyActor: Any {
    /// [`Actor::handle_input`].
    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error>;
    /// [`Actor::handle_timeout`].
    fn handle_timeout(&mut self, now: Instant);
    /// [`Actor::poll_output`], with the event converted into [`Event`].
    fn poll_output(&mut self) -> Option<Output<Event>>;
    /// [`Actor::poll_timeout`].
    fn poll_timeout(&self) -> Option<Instant>;
    /// As `&mut dyn Any`, for downcasting to the concrete actor.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// As `&dyn Any`, for downcasting to the concrete actor.
    fn as_any(&self) -> &dyn Any;
}

impl<T> AnyActor for T
where
    T: Actor + Any,
    T::Event: Into<Event>,
{
    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        Actor::handle_input(self, now, input)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Actor::handle_timeout(self, now)
    }
    fn poll_output(&mut self) -> Option<Output<Event>> {
        Actor::poll_output(self).map(|o| o.map_event(Into::into))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Actor::poll_timeout(self)
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn as_any(&self) -> &dyn Any {
        self
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

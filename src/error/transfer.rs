//! Why a key-transfer message (seeds 001 and 003) or an inline-proxy input was refused.

use crate::wire::WireError;

/// Why a key-transfer message ([`crate::keyx::transfer`]) was refused: one variant per
/// rule of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The UDP payload does not start with the reserved-SPI marker header (both SPIs 100,
    /// exchange type 240): it is not a key-transfer message at all.
    #[error("not a key-transfer message (no reserved-SPI marker)")]
    NoMarker,
    /// The marker header's length field disagrees with the datagram.
    #[error("marker header says {said} bytes, the datagram has {got}")]
    BadLength {
        /// The length the header states.
        said: usize,
        /// The datagram's length.
        got: usize,
    },
    /// The deputy message inside did not decode.
    #[error("decode: {0}")]
    Decode(WireError),
    /// A message type outside the key-transfer set.
    #[error("unknown key-transfer message type {0:#04x}")]
    UnknownMessage(u8),
    /// The sealed body failed to open under the terminal's delegation key: another
    /// terminal's key, another message's place, or tampering.
    #[error("sealed body failed authentication")]
    SealRejected,
    /// The opened body lacks a field its message needs, or a field has the wrong size.
    #[error("opened body has the wrong layout")]
    BadBody,
    /// The message names another boot nonce than the receiver's current one: it was sealed
    /// for an earlier life of the terminal (a replay across a reboot) or guessed.
    #[error("message is bound to another boot of the terminal")]
    StaleNonce,
    /// The message's sequence number was already accepted or is left of the window.
    #[error("sequence number {0} replayed or too old")]
    Replayed(u32),
    /// The message came from a terminal id this receiver does not serve.
    #[error("unknown terminal {0:#x}")]
    UnknownTerminal(u64),
    /// The message is one this side never receives (a terminal sent a key transfer, a
    /// proxy got a solicit).
    #[error("message type {0:#04x} travels the other way")]
    WrongDirection(u8),
    /// The message arrived from an address not bound to the terminal it names.
    #[error("message for terminal {0:#x} from an address not bound to it")]
    AddressMismatch(u64),
    /// An announce that was not solicited (or echoes an old solicit) may not change the
    /// terminal's boot nonce: a replayed announce would roll it back.
    #[error("announce does not echo the outstanding solicit")]
    Unsolicited,
    /// A selector in a trigger is not a valid one (mixed families, bad protocol).
    #[error("trigger selector is not valid")]
    BadSelector,
}

impl From<WireError> for TransferError {
    fn from(e: WireError) -> Self {
        TransferError::Decode(e)
    }
}

/// Why the inline key-exchange proxy ([`crate::keyx::inline`]) refused an input or a
/// command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InlineError {
    /// A packet arrived on an interface that is neither the Internet side nor the
    /// terminal side.
    #[error("packet on interface {0}, which the proxy does not serve")]
    UnknownInterface(u32),
    /// The proxy takes raw IP packets (and management streams) only.
    #[error("input kind the proxy does not take")]
    UnsupportedInput,
    /// A terminal with this id is provisioned already.
    #[error("terminal {0:#x} is provisioned already")]
    DuplicateTerminal(u64),
    /// A command names a terminal that is not provisioned.
    #[error("terminal {0:#x} is not provisioned")]
    UnknownTerminal(u64),
    /// The secure store holding the terminals' secrets is absent (removed): nothing is
    /// negotiated or pushed until it is back (fail closed, ¶0024).
    #[error("the secure store is not present")]
    StoreUnavailable,
    /// A management request did not decode or broke a rule of the management protocol.
    #[error("bad management request")]
    BadManagement,
    /// The configuration is not usable (the two interfaces are the same, a bound is zero).
    #[error("bad configuration: {0}")]
    BadConfig(&'static str),
}

/// Why a seed 003 actor (service control, key-exchange proxy, authentication server)
/// refused an input or a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorError {
    /// A service profile message did not decode, or a profile breaks a bound.
    #[error("bad service profile")]
    BadProfile,
    /// A profile came over a channel that did not authenticate its sender.
    #[error("profile from an unauthenticated sender")]
    NotAuthenticated,
    /// A decapsulated packet is for no subscriber this service control serves: relaying it
    /// would make the service control a spoofing relay.
    #[error("decapsulated packet for a subscriber not served here")]
    NotServed,
    /// ESP on the link that does not open (not from the configured proxy, or damaged).
    #[error("link packet refused")]
    LinkRefused,
    /// The link to the key-exchange proxy is not up: nothing can be diverted.
    #[error("the link to the key-exchange proxy is down")]
    LinkDown,
    /// The proxy has no service control to reach this subscriber through.
    #[error("no service control known for the subscriber")]
    NoRoute,
    /// No profile is provisioned for this subscriber.
    #[error("no profile for subscriber {0:#x}")]
    UnknownSubscriber(u64),
    /// The actor takes raw IP packets and streams only (or the interface is not its).
    #[error("input the actor does not take")]
    UnsupportedInput,
    /// The configuration is not usable.
    #[error("bad configuration: {0}")]
    BadConfig(&'static str),
}

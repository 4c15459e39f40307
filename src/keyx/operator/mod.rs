//! Seed 003: the operator network — service control, key-exchange proxy, authentication
//! server — for IKE-less subscribers ([`super::ikeless::Terminal`]).
//!
//! ```text
//!  subscriber ── access ── ServiceControl ═══ ESP link (IKEv2) ═══ KeyExchangeProxy
//!   (no IKE)                 │   ▲ profiles (secure channel)          (runs IKEv2 as the
//!                            │   └────────────── AuthServer             subscriber)
//!                            └── core ── router ── peer (IKEv2, ESP)
//! ```
//!
//! The subscriber addresses only the peer and the peer only the subscriber; neither knows
//! the proxy. The service control diverts, by the subscriber's profile, the subscriber's
//! proxy request (a sealed trigger with the reserved-SPI marker, Fig. 12) and the peer's
//! IKE (Fig. 13) to the proxy, which negotiates as the subscriber with the subscriber's
//! address and returns the keys in a sealed key transfer (Fig. 14), whose outer header the
//! service control rewrites toward the subscriber. The design, the flows against the code
//! and the security reasoning are in `docs/keyx.md`.

pub mod auth;
pub mod control;
pub mod link;
pub mod profile;
pub mod proxy;

pub use auth::{AuthServer, AuthServerConfig};
pub use control::{ControlConfig, ControlStats, ServiceControl};
pub use profile::{CondAddr, Condition, ProfileMessage, ServiceProfile};
pub use proxy::{KeyExchangeProxy, KeyExchangeProxyConfig, KeyExchangeProxyStats};

use core::net::IpAddr;

use super::inline::ProxyEvent;

/// What the seed 003 actors report.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OperatorEvent {
    /// The authenticated link to a service control (at the proxy) or to the proxy (at a
    /// service control) is up.
    LinkUp {
        /// The other end.
        peer: IpAddr,
    },
    /// The link went down.
    LinkDown {
        /// The other end.
        peer: IpAddr,
    },
    /// A service control installed a subscriber's profile.
    ProfileInstalled {
        /// The subscriber.
        subscriber: u64,
    },
    /// A service control withdrew a subscriber's profile.
    ProfileWithdrawn {
        /// The subscriber.
        subscriber: u64,
    },
    /// The authentication server sent a profile message to a service control.
    ProfileSent {
        /// The service control.
        control: IpAddr,
    },
    /// The key-exchange proxy's negotiation engine reported (the same events as seed 001's
    /// proxy: negotiating, stored, pushed, acknowledged, rekeying …).
    Proxy(ProxyEvent),
}

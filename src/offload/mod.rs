//! Seed 000: crypto communication deputized to a home server.
//!
//! A home appliance that cannot do strong cryptography lets a *crypto proxy* on the closed
//! home network encrypt and decrypt for it; *remote nodes* on the open network talk to the
//! appliance only through the proxy. Three actors, one per party of the seed:
//!
//! | actor | network | seed |
//! |---|---|---|
//! | [`Appliance`] | closed (home LAN), reachable from outside by datagrams | 家庭内ノード 122–128 |
//! | [`CryptoProxy`] | closed, its stream port reachable through the gateway | 家庭内サーバ 120 |
//! | [`RemoteNode`] | open (internet) | 外部ノード 106 |
//!
//! ```text
//!  remote node                    gateway          appliance             crypto proxy
//!      │ S21 crypto request (UDP) ───┼──────────────▶ │                        │
//!      │ ◀────────── S22 crypto accept + proxy designation                    │
//!      │ ═══ secure channel (stream through the gateway) ════════════════════ │
//!      │ S23 proxy request {appliance} ─────────────────────────────────────▶ │
//!      │ ◀────────────────────────────────────────────── S24 proxy accept     │
//!      │ S25 secure data ───────────────────────────────────────────────────▶ │
//!      │                                               │ ◀── S26 plain data ── │
//!
//!  flow A' : plaintext or undecryptable data ──▶ appliance drops it,
//!            answers S42 crypto solicitation + proxy designation, flow A resumes at S23
//!
//!  flow B  : appliance ── S31 proxy request {remote address} ──▶ proxy
//!            proxy ═══ channel ═══▶ remote: S32 crypto request; remote: S33 crypto accept
//!            proxy ── S34 proxy accept ──▶ appliance; appliance ── S35 plain data ──▶ proxy
//!            proxy ── S36 secure data (in the channel) ──▶ remote
//! ```
//!
//! Transports, message layouts, the link protection on the closed network, the
//! anti-amplification rules and every bound are described in `docs/offload.md`; the wire
//! table is in `docs/wire.md` ("Seed 000 offload messages").

/// The three `Actor` methods every offload actor writes the same way: timers from its
/// [`TimerTable`](crate::time::TimerTable), outputs from its outbox.
macro_rules! timers_and_outbox {
    () => {
        fn handle_timeout(&mut self, now: crate::Instant) {
            crate::time::TimerTable::run_timers(self, now);
        }

        fn poll_output(&mut self) -> Option<crate::io::Output<crate::offload::OffloadEvent>> {
            self.outbox.pop()
        }

        fn poll_timeout(&self) -> Option<crate::Instant> {
            crate::time::TimerTable::next_timer(self)
        }
    };
}

mod appliance;
mod link;
pub mod messages;
mod proxy;
mod remote;
mod timer;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

pub use crate::error::{OffloadError, OffloadRefusal};
pub use crate::ratelimit::RateLimit;
pub use appliance::{
    Appliance, ApplianceConfig, ApplianceEvent, ApplianceParams, DirectKey, Solicited,
};
pub use link::{LinkKey, LinkTiming};
pub use proxy::{AccessPolicy, CryptoProxy, ProxyConfig, ProxyEvent, ServedAppliance};
pub use remote::{AppliancePolicy, Discovery, RemoteEvent, RemoteNode, RemoteNodeConfig, Target};

use crate::channel::PeerIdentity;

/// The largest application payload one offload message carries: it must fit one
/// unfragmented datagram on the closed network (1,280-byte IPv6 minimum MTU, less headers
/// and framing).
pub const MAX_PAYLOAD: usize = 1200;

/// The longest appliance name accepted (UTF-8 bytes).
pub const MAX_NAME_LEN: usize = 64;

/// Who a party is, as proven to the party that reports it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// A remote node that proved the key of a certificate with this subject.
    Certificate(String),
    /// A remote node that proved knowledge of the pre-shared key with this identity.
    Psk(Vec<u8>),
    /// Data the appliance opened itself with its weak key of this id (¶0062).
    DirectKey(u32),
}

impl Peer {
    /// The identity a secure channel proved, if it proved one.
    pub fn from_channel(identity: &PeerIdentity) -> Option<Peer> {
        match identity {
            PeerIdentity::Certificate(c) => Some(Peer::Certificate(c.subject().into())),
            PeerIdentity::Psk(id) => Some(Peer::Psk(id.clone())),
            PeerIdentity::Anonymous => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Certificate(name) => write!(f, "cert:{name}"),
            Peer::Psk(id) => write!(f, "psk:{}", String::from_utf8_lossy(id)),
            Peer::DirectKey(id) => write!(f, "direct-key:{id}"),
        }
    }
}

/// Which side started a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StartedBy {
    /// Flow A (S21–S26): the remote node.
    Remote,
    /// Flow B (S31–S36): the appliance.
    Appliance,
}

/// What the seed 000 actors tell the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffloadEvent {
    /// From an [`Appliance`].
    Appliance(ApplianceEvent),
    /// From a [`CryptoProxy`].
    Proxy(ProxyEvent),
    /// From a [`RemoteNode`].
    Remote(RemoteEvent),
}

impl OffloadEvent {
    /// The event if an [`Appliance`] raised it.
    pub fn as_appliance(&self) -> Option<&ApplianceEvent> {
        match self {
            OffloadEvent::Appliance(e) => Some(e),
            _ => None,
        }
    }

    /// The event if a [`CryptoProxy`] raised it.
    pub fn as_proxy(&self) -> Option<&ProxyEvent> {
        match self {
            OffloadEvent::Proxy(e) => Some(e),
            _ => None,
        }
    }

    /// The event if a [`RemoteNode`] raised it.
    pub fn as_remote(&self) -> Option<&RemoteEvent> {
        match self {
            OffloadEvent::Remote(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ApplianceEvent> for OffloadEvent {
    fn from(e: ApplianceEvent) -> Self {
        OffloadEvent::Appliance(e)
    }
}

impl From<ProxyEvent> for OffloadEvent {
    fn from(e: ProxyEvent) -> Self {
        OffloadEvent::Proxy(e)
    }
}

impl From<RemoteEvent> for OffloadEvent {
    fn from(e: RemoteEvent) -> Self {
        OffloadEvent::Remote(e)
    }
}

/// Check an appliance name: 1 to [`MAX_NAME_LEN`] bytes.
pub(crate) fn check_name(name: &str) -> Result<(), OffloadError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(OffloadError::BadName);
    }
    Ok(())
}

/// Check a payload against [`MAX_PAYLOAD`].
pub(crate) fn check_payload(data: &[u8]) -> Result<(), OffloadError> {
    if data.len() > MAX_PAYLOAD {
        return Err(OffloadError::TooLarge {
            len: data.len(),
            max: MAX_PAYLOAD,
        });
    }
    Ok(())
}

/// Exponential back-off: `base` doubled `tries` times, capped at one minute.
pub(crate) fn backoff(base: Duration, tries: u32) -> Duration {
    crate::time::doubled(base, tries.min(16), Duration::from_secs(60))
}

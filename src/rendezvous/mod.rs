//! Seed 002: a rendezvous server that lets two devices behind NAT routers connect peer to
//! peer, and only with the accepting device's password.
//!
//! Three actors, named after the seed:
//!
//! - [`RendezvousServer`] (サーバ装置 101): keeps the device directory (Fig. 9) from
//!   authenticated UDP registrations, and relays the connection request between the two
//!   devices over secure channels. It never sees the password or the data.
//! - [`Issuer`] (要求発行機器 102): wants to reach a device by its ID and knows its password.
//! - [`Acceptor`] (要求受諾機器 103): registers itself, and accepts a connection only after
//!   checking the password.
//!
//! ```text
//! issuer                       server                          acceptor
//!   │                            │ ◀─ Register (UDP, MAC) ───────── │ S202, every 20–26 s
//!   │                            │ ── RegisterAck (UDP, MAC) ─────▶ │
//!   │ ══ channel (server cert) ═▶│                                  │ S203
//!   │ ── ConnectRequest ───────▶ │ S204 directory lookup            │
//!   │ ── Probe (UDP) ──────────▶ │                                  │
//!   │                            │ ── Notice (UDP, MAC) ──────────▶ │ S205
//!   │                            │ ◀═ channel (device cert) ═══════ │ S206
//!   │                            │ ◀─ Fetch ─────────────────────── │
//!   │                            │ ── Offer ──────────────────────▶ │
//!   │                            │ ◀─ Accept (share, signature) ─── │
//!   │ ◀─ AcceptorHello ───────── │                                  │
//!   │ ── SealedPassword ───────▶ │ ── SealedPassword (opaque) ────▶ │ S207 check
//!   │ ◀─ Proceed ─────────────── │ ◀─ Proceed ───────────────────── │   (RTT measured)
//!   │ ── Sync ─────────────────▶ │ ── Sync ───────────────────────▶ │
//!   │  (waits RTT/2)             │                                  │
//!   │ ◀─────────── Punch / PunchAck / PunchConfirm (UDP) ─────────▶ │ S208
//!   │ ◀═════════════ channel (PSK from the devices' own DH) ══════▶ │ S209
//! ```
//!
//! Design and security reasoning: `docs/rendezvous.md`. Message layouts: `docs/wire.md`.

mod acceptor;
mod backoff;
mod directory;
mod issuer;
mod keys;
mod link;
pub mod messages;
mod peer;
mod server;

use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

pub use crate::error::{RegistrationRefusal, RendezvousError};
pub use crate::ratelimit::RateLimit;
pub use acceptor::{Acceptor, AcceptorConfig, AcceptorParams, AcceptorStats};
pub use backoff::BackoffConfig;
pub use directory::{Directory, DirectoryEntry, DirectoryFull, MemoryDirectory, Registered};
pub use issuer::{Issuer, IssuerConfig, IssuerParams};
pub use keys::{DerivedRegistrationKeys, Password, RegistrationKey, RegistrationKeys};
pub use peer::PeerConfig;
pub use server::{
    RefusalCounters, RendezvousServer, RendezvousServerConfig, RendezvousServerParams, ServerStats,
};

use crate::channel::ChannelError;

/// A device's identity in the directory (the seed's 機器ID, e.g. 2133).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u64);

impl DeviceId {
    /// The name a device certificate must carry to act for this device: `device-<id>`.
    pub fn certificate_name(self) -> alloc::string::String {
        alloc::format!("device-{}", self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device-{}", self.0)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a connection request was refused. Carried to the issuer in a `Refused` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestRefusal {
    /// S204: no live registration for the device ID.
    UnknownDevice,
    /// S207: the password did not match. Try again after `retry_after`.
    WrongPassword {
        /// How long the acceptor refuses further attempts from this issuer.
        retry_after: Duration,
    },
    /// Too many attempts: from this issuer, or on this device. Nothing was checked.
    RateLimited {
        /// When the next attempt may be made.
        retry_after: Duration,
    },
    /// The device did not fetch the request (S206) in time.
    DeviceUnreachable,
    /// A party did not answer in time.
    Timeout,
    /// The party is not allowed to do this (a device fetching another device's request).
    NotAuthorized,
    /// The server or device has no room for another request.
    Busy,
    /// A protocol error on the other side.
    ProtocolError,
    /// To the device: the issuer's stream to the server ended before the request was
    /// through, so the request is over (what the device holds for it can go).
    IssuerGone,
}

impl RequestRefusal {
    pub(crate) fn code(self) -> u8 {
        match self {
            RequestRefusal::UnknownDevice => 1,
            RequestRefusal::WrongPassword { .. } => 2,
            RequestRefusal::RateLimited { .. } => 3,
            RequestRefusal::DeviceUnreachable => 4,
            RequestRefusal::Timeout => 5,
            RequestRefusal::NotAuthorized => 6,
            RequestRefusal::Busy => 7,
            RequestRefusal::ProtocolError => 8,
            RequestRefusal::IssuerGone => 9,
        }
    }

    pub(crate) fn retry_after(self) -> Option<Duration> {
        match self {
            RequestRefusal::WrongPassword { retry_after }
            | RequestRefusal::RateLimited { retry_after } => Some(retry_after),
            _ => None,
        }
    }

    pub(crate) fn from_code(code: u8, retry_after: Option<Duration>) -> Option<Self> {
        let wait = retry_after.unwrap_or(Duration::ZERO);
        Some(match code {
            1 => RequestRefusal::UnknownDevice,
            2 => RequestRefusal::WrongPassword { retry_after: wait },
            3 => RequestRefusal::RateLimited { retry_after: wait },
            4 => RequestRefusal::DeviceUnreachable,
            5 => RequestRefusal::Timeout,
            6 => RequestRefusal::NotAuthorized,
            7 => RequestRefusal::Busy,
            8 => RequestRefusal::ProtocolError,
            9 => RequestRefusal::IssuerGone,
            _ => return None,
        })
    }
}

/// Why a peer connection (S208–S209) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerFailure {
    /// No path was found in the configured number of hole-punching attempts (both NATs
    /// map per destination, or filter too strictly, and no static mapping exists).
    HolePunchFailed {
        /// Attempts made.
        attempts: u8,
    },
    /// The peer stopped answering (retransmissions or keepalives ran out).
    Timeout,
    /// The devices' end-to-end channel failed.
    Channel(ChannelError),
    /// The server connection ended before the devices could start.
    ServerLost,
}

/// What the rendezvous actors tell the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RendezvousEvent {
    /// Server, S202: a device registered for the first time (or after expiring).
    DeviceRegistered {
        /// The device.
        device: DeviceId,
        /// Its public address and port, as the registration arrived.
        addr: SocketAddr,
    },
    /// Server, S202A: a registered device's public address or port changed.
    DeviceMoved {
        /// The device.
        device: DeviceId,
        /// The old address.
        from: SocketAddr,
        /// The new address.
        to: SocketAddr,
    },
    /// Server, S204–S205: a connection request found its device and the notice was sent.
    RequestForwarded {
        /// The request.
        request: u64,
        /// The target device.
        device: DeviceId,
    },
    /// Server: a connection request was refused (by the server or by the device).
    RequestRefused {
        /// The request.
        request: u64,
        /// The target device.
        device: DeviceId,
        /// Why.
        reason: RequestRefusal,
    },
    /// Server: a request ended (the devices reported their outcome, or it timed out).
    RequestFinished {
        /// The request.
        request: u64,
        /// Whether the devices reported a direct connection.
        connected: bool,
    },
    /// Acceptor, S202: the server acknowledged a registration; `public` is the address the
    /// server saw (reported when it first arrives and whenever it changes).
    Registered {
        /// Our public address and port as the server sees them.
        public: SocketAddr,
    },
    /// Acceptor, S206: the server handed over a connection request.
    ConnectionRequested {
        /// The request.
        request: u64,
        /// The issuer's public address as the server saw it.
        issuer: SocketAddr,
    },
    /// Acceptor, S207: a password was wrong (or the issuer is backing off).
    PasswordRefused {
        /// The request.
        request: u64,
        /// The issuer's public IP (the back-off key).
        issuer: IpAddr,
        /// The refusal sent.
        reason: RequestRefusal,
    },
    /// Issuer: the request was refused.
    Refused {
        /// The request.
        request: u64,
        /// Why.
        reason: RequestRefusal,
    },
    /// Both devices, S208–S209: the direct connection is up and its channel established.
    PeerConnected {
        /// The request this connection came from.
        session: u64,
        /// Our local socket for the path.
        local: SocketAddr,
        /// The peer's address on the path.
        remote: SocketAddr,
        /// Hole-punching attempt that found the path (1–3).
        attempt: u8,
    },
    /// Both devices, S209: an application message from the peer.
    PeerData {
        /// The session.
        session: u64,
        /// The message.
        data: Vec<u8>,
    },
    /// Both devices: the peer closed the connection gracefully.
    PeerClosed {
        /// The session.
        session: u64,
    },
    /// Both devices: the direct connection could not be made or broke.
    PeerFailed {
        /// The session.
        session: u64,
        /// Why.
        reason: PeerFailure,
    },
}

/// The `Actor` methods every rendezvous actor shares: `handle_input` is the actor's
/// `input`, then `settle`; `handle_timeout` fires the due entries of its one timer list (`timers`,
/// `fire`), then `settle` finishes what they started; `poll_timeout` is the earliest
/// entry of the same list, so no deadline is armed in one and forgotten in the other.
macro_rules! timer_driven_actor {
    (impl [$($generics:tt)*] $actor:ty) => {
        impl<$($generics)*> $crate::io::Actor for $actor {
            type Event = $crate::rendezvous::RendezvousEvent;

            fn handle_input(
                &mut self,
                now: $crate::Instant,
                input: $crate::io::Input<'_>,
            ) -> Result<(), $crate::Error> {
                let result = self.input(now, input);
                // Finishes what the input started (outcomes, cleanup, expiries), so a late
                // input cannot revive what ran out.
                self.settle(now)?;
                result
            }

            fn handle_timeout(&mut self, now: $crate::Instant) {
                // Errors here are outbox overflows; they surface on the next call, as a
                // timer has no caller to return them to.
                for timer in $crate::time::due(self.timers(), now) {
                    let _ = self.fire(now, timer);
                }
                let _ = self.settle(now);
            }

            fn poll_output(
                &mut self,
            ) -> Option<$crate::io::Output<$crate::rendezvous::RendezvousEvent>> {
                self.outbox.pop()
            }

            fn poll_timeout(&self) -> Option<$crate::Instant> {
                $crate::time::earliest(self.timers())
            }
        }
    };
}
pub(crate) use timer_driven_actor;

/// A device's answer to an input only the server takes: an inbound stream (closed at
/// once) or a raw packet.
pub(crate) fn device_refuses(
    stream: Option<crate::io::StreamId>,
    outbox: &mut crate::io::Outbox<RendezvousEvent>,
) -> Result<(), crate::Error> {
    match stream {
        Some(id) => {
            outbox.push(crate::io::Output::StreamClose { id })?;
            Err(RendezvousError::AcceptsNoStreams.into())
        }
        None => Err(RendezvousError::TakesNoPackets.into()),
    }
}

/// Wall-clock milliseconds at `now`, given the anchor.
pub(crate) fn wall_millis(anchor: crate::UnixTime, now: crate::Instant) -> u64 {
    anchor
        .0
        .saturating_mul(1000)
        .saturating_add(now.as_nanos() / 1_000_000)
}

/// Saturating conversion of a duration to whole milliseconds in a u32.
pub(crate) fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// A uniformly random duration in `[min, max]` (whole milliseconds).
pub(crate) fn jitter(rng: &mut dyn rand_core::CryptoRng, min: Duration, max: Duration) -> Duration {
    let lo = u64::try_from(min.as_millis()).unwrap_or(u64::MAX);
    let hi = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(lo);
    let span = (hi - lo).saturating_add(1);
    Duration::from_millis(lo.saturating_add(rng.next_u64() % span))
}

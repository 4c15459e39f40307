//! IKEv2 (RFC 7296): message codec, key schedule, and sans-IO initiator and responder.
//!
//! - [`codec`]: messages and payloads, strict and bounded.
//! - [`keys`]: SKEYSEED, prf+, SK_*, PSK AUTH, Child SA KEYMAT.
//! - [`sk`]: the SK payload for AES-CBC + HMAC-SHA2-256-128, AES-GCM-16 and
//!   ChaCha20-Poly1305.
//! - [`proposal`]: suites and proposal selection.
//! - [`auth`]: what we prove in IKE_AUTH and how the peer's proof is checked — pre-shared
//!   keys, RFC 7427 / RFC 8420 signatures, X.509 certificate paths — as pure functions
//!   (`prove`, `verify`) over a [`auth::Credential`] and an [`auth::AuthKeyDb`].
//! - [`Initiator`] and [`Responder`]: [`crate::Actor`]s that run IKE_SA_INIT, IKE_AUTH with a
//!   pre-shared key or certificates, one ESP Child SA, INFORMATIONAL (delete, liveness) and CREATE_CHILD_SA
//!   rekeying of the Child SA and of the IKE SA, with retransmission, cookies,
//!   INVALID_KE_PAYLOAD, INITIAL_CONTACT and NAT-T. Checked against strongSwan 5.9 by
//!   `scripts/interop.sh`.
//!
//! The result is an [`IkeEvent::ChildSaEstablished`] carrying the data plane's own
//! hand-over value, a [`crate::ipsec::ChildSa`]: SPIs, [`crate::ipsec::Suite`], keys split
//! per direction, mode with tunnel endpoints, UDP encapsulation endpoints, traffic
//! selectors and lifetimes. It installs into a [`crate::ipsec::DataPlane`] (or is encoded
//! with `ChildSa::encode` for a terminal) as it is. The IKE-side facts — which IKE SA,
//! whether we initiated the exchange — travel in the event beside it. See `docs/ipsec.md`
//! (section IKEv2) for the supported profile.
//!
//! ```
//! use deputy::ikev2::{IkeConfig, Initiator, InitiatorConfig, Responder, ResponderConfig, Identity};
//! use deputy::{Actor, Instant, Input, Output};
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//!
//! let i_addr = "192.0.2.1:500".parse().unwrap();
//! let r_addr = "192.0.2.2:500".parse().unwrap();
//! let mut init = Initiator::new(
//!     InitiatorConfig {
//!         ike: IkeConfig::new(Identity::Fqdn("i.example".into()), b"shared secret"),
//!         local: i_addr,
//!         remote: r_addr,
//!     },
//!     Box::new(ChaCha20Rng::seed_from_u64(1)),
//! ).unwrap();
//! let mut resp = Responder::new(
//!     ResponderConfig::new(IkeConfig::new(Identity::Fqdn("r.example".into()), b"shared secret")),
//!     Box::new(ChaCha20Rng::seed_from_u64(2)),
//!     Instant::ZERO,
//! ).unwrap();
//! let now = Instant::ZERO;
//! init.start(now).unwrap();
//! // Move datagrams until both sides are quiet.
//! loop {
//!     let mut moved = false;
//!     while let Some(out) = init.poll_output() {
//!         if let Output::Transmit(t) = out {
//!             moved = true;
//!             resp.handle_input(now, Input::Datagram { from: t.from, to: t.to, data: &t.data }).unwrap();
//!         }
//!     }
//!     while let Some(out) = resp.poll_output() {
//!         if let Output::Transmit(t) = out {
//!             moved = true;
//!             init.handle_input(now, Input::Datagram { from: t.from, to: t.to, data: &t.data }).unwrap();
//!         }
//!     }
//!     if !moved { break; }
//! }
//! assert!(init.child_sa().is_some());
//! ```

pub mod auth;
pub mod codec;
pub mod config;
pub mod consts;
pub(crate) mod initiator;
pub mod keys;
pub mod nat;
pub mod proposal;
mod responder;
pub(crate) mod session;
pub mod sk;

pub use crate::error::{AuthFailure, IkeError};
pub use codec::Identity;
pub use config::{ChildMode, IkeConfig, InitiatorConfig, ResponderConfig, Retransmit};
pub use initiator::Initiator;
pub use keys::{IkeDissectionKeys, SecretBytes};
pub use proposal::{Encr, IkeProposal, IkeSuite, Integ, Prf};
pub use responder::Responder;

use alloc::boxed::Box;
use core::net::SocketAddr;

use crate::ipsec::ChildSa;

/// Names one IKE SA: both SPIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IkeSaId {
    /// The initiator's SPI.
    pub spi_i: [u8; 8],
    /// The responder's SPI.
    pub spi_r: [u8; 8],
}

/// Why an IKE SA (or its setup) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// A request went unanswered through every retransmission.
    Timeout,
    /// The peer refused our AUTH (AUTHENTICATION_FAILED).
    AuthenticationFailed,
    /// We refused the peer's AUTH, for this reason (a wrong PSK is
    /// `PeerAuth(AuthFailure::BadAuth)`; certificate rules have their own variants).
    PeerAuth(AuthFailure),
    /// The peer's identity is not the configured `remote_id`.
    IdentityMismatch,
    /// The peer refused with this error notify (e.g. NO_PROPOSAL_CHOSEN).
    PeerNotify(u16),
    /// The peer's answer is not acceptable (chose something we did not offer, missing
    /// payloads, bad KE value).
    InvalidResponse,
    /// Too many COOKIE or INVALID_KE_PAYLOAD rounds.
    TooManyRounds,
}

/// What the IKEv2 actors tell the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IkeEvent {
    /// The IKE SA is authenticated.
    IkeSaEstablished {
        /// Which IKE SA.
        id: IkeSaId,
        /// Negotiated algorithms.
        suite: IkeSuite,
        /// The peer's authenticated identity.
        peer_id: Identity,
        /// Our IKE address.
        local: SocketAddr,
        /// The peer's IKE address.
        remote: SocketAddr,
        /// Whether a NAT was detected (or forced) and UDP encapsulation is in use.
        udp_encap: bool,
        /// Whether we are the original initiator.
        initiator: bool,
    },
    /// A Child SA is ready: install `child` into a [`crate::ipsec::DataPlane`] as it is.
    ChildSaEstablished {
        /// Its IKE SA.
        id: IkeSaId,
        /// The Child SA, as the data plane takes it.
        child: Box<ChildSa>,
        /// Whether we initiated the exchange that created it (IKE_AUTH: whether we are the
        /// original initiator).
        initiated: bool,
    },
    /// A Child SA replaced another (CREATE_CHILD_SA rekey). Install `child`; the old one
    /// stays valid until [`IkeEvent::ChildSaDeleted`] for `old_spi_in`.
    ChildSaRekeyed {
        /// Its IKE SA.
        id: IkeSaId,
        /// Inbound SPI of the SA being replaced.
        old_spi_in: u32,
        /// The new Child SA, as the data plane takes it.
        child: Box<ChildSa>,
        /// Whether we initiated the CREATE_CHILD_SA exchange.
        initiated: bool,
    },
    /// A Child SA is gone: remove it.
    ChildSaDeleted {
        /// Its IKE SA.
        id: IkeSaId,
        /// Its inbound SPI.
        spi_in: u32,
        /// Its outbound SPI.
        spi_out: u32,
    },
    /// The Child SA could not be created (the IKE SA itself is up).
    ChildSaFailed {
        /// Its IKE SA.
        id: IkeSaId,
        /// The error notify sent or received (NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE …).
        notify: u16,
    },
    /// The IKE SA is gone, with all its Child SAs.
    IkeSaDeleted {
        /// Which IKE SA.
        id: IkeSaId,
        /// Whether the peer deleted it (else we did).
        by_peer: bool,
    },
    /// The IKE SA was rekeyed (RFC 7296 §1.3.2): from now on it is `new`, with fresh keys;
    /// its Child SAs are unchanged and later events about them name `new`. `old` is gone
    /// (no [`IkeEvent::IkeSaDeleted`] follows for it).
    IkeSaRekeyed {
        /// The IKE SA before.
        old: IkeSaId,
        /// The IKE SA now.
        new: IkeSaId,
        /// Whether we initiated the rekey (and are the initiator of `new`).
        initiated: bool,
    },
    /// Our IKE SA rekey was refused or failed; the IKE SA stays up as it is.
    IkeSaRekeyFailed {
        /// Which IKE SA.
        id: IkeSaId,
        /// The error notify received (TEMPORARY_FAILURE, NO_PROPOSAL_CHOSEN …) or the one
        /// describing what was wrong with the answer.
        notify: u16,
    },
    /// The peer answered a liveness check.
    LivenessConfirmed {
        /// Which IKE SA.
        id: IkeSaId,
    },
    /// Setting up or running the IKE SA failed; it is gone.
    Failed {
        /// Which IKE SA (the responder SPI is zero before IKE_SA_INIT completed).
        id: IkeSaId,
        /// Why.
        reason: FailReason,
    },
}

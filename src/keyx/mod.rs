//! Key-exchange delegation: seeds 001, 003 and 004 (design in `docs/keyx.md`).
//!
//! **Built:** seed 004 over IKEv2 and over TLS 1.3 ([`tls`]: the terminal relays the
//! handshake and runs the record layer; the server runs rustls, feature `tls`). The
//! delegation messages ([`messages`]), the sealing of
//! key material with a terminal's delegation key ([`seal`], shared by all three seeds), the
//! substitution server's protocol-independent message loop ([`dispatch`]: S33-S49,
//! sessions, sequence numbers and the answer cache, the key-request gate, bounds, S37
//! expiry) and its policy database ([`policy`], S43), the server actor around them
//! ([`SubstitutionServer`]), and the IKEv2 work of both sides ([`ike`]: the server's
//! [`ike::IkeSubstitute`] and the delegating [`ike::Terminal`]).
//! Seed 001: the inline key-exchange proxy ([`inline`]), the IKE-less terminal it serves
//! ([`ikeless`]) and the sealed key-transfer messages between them ([`transfer`], meant to
//! shared with seed 003). Seed 003: the operator network ([`operator`]: service control,
//! key-exchange proxy, authentication server), for the same IKE-less terminal.

pub mod dispatch;
pub mod ike;
pub mod ikeless;
pub mod inline;
mod link;
pub mod messages;
pub mod operator;
pub mod policy;
pub mod seal;
pub mod server;
pub mod tls;
pub mod transfer;

pub use crate::error::KeyxError;
pub use dispatch::{Bounds, Dispatcher, Place, Substitute, TerminalId};
pub use messages::{
    AuthRequest, AuthResponse, AuthResult, Body, ErrorCode, KeyGenRequest, KeyGenResponse,
    KeyResponse, Message, Method, PolicyResult, Protocol, Relay, Role, StartOutcome, StartRequest,
    StartResponse, Transform,
};
pub use policy::{Direction, PeerPattern, PolicyDb};
pub use seal::{DelegationKey, SealContext};
pub use server::{ServerEvent, SubstitutionServer};

/// What the key-exchange delegation actors report.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyxEvent {
    /// From a seed 004 delegating terminal.
    Terminal(ike::TerminalEvent),
    /// From a substitution server.
    Server(ServerEvent),
    /// From a seed 004 delegating terminal over TLS 1.3.
    TlsTerminal(tls::TerminalEvent),
    /// From an IKE-less terminal (seeds 001 and 003).
    Ikeless(ikeless::TerminalEvent),
    /// From a seed 001 inline key-exchange proxy.
    Inline(inline::ProxyEvent),
    /// From a seed 003 actor (service control, key-exchange proxy, authentication server).
    Operator(operator::OperatorEvent),
}

//! # deputy
//!
//! Sans-IO state machines that let weak devices — appliances, sensors, phones — use strong
//! secure communication by delegating its expensive parts to a stronger party.
//!
//! Every protocol party is an [`Actor`]: a plain struct that takes bytes and time in and
//! gives bytes and [`Event`]s out. There are no sockets, threads, clock reads or global
//! random number generators anywhere in the crate, so the same code runs in firmware, in
//! an async event loop, and in the deterministic [`sim`] network the tests use.
//!
//! See [`io`] for the contract and its polling rules, `docs/architecture.md` for the
//! picture, and `cargo run --example tour` for every scenario narrated.
//!
//! ## Example: a secure channel, driven by hand
//!
//! ```
//! use deputy::channel::{ClientConfig, ServerConfig, Connection};
//! use deputy::crypto::cert::{CertificateAuthority, TrustStore};
//! use deputy::{Instant, UnixTime};
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//!
//! let mut rng = ChaCha20Rng::seed_from_u64(7);
//! let now = Instant::ZERO;
//! let anchor = UnixTime(1_800_000_000);
//!
//! // A CA certifies the server; the client trusts the CA.
//! let ca = CertificateAuthority::generate("home CA", &mut rng);
//! let server_id = ca.issue_identity("server.example", &[], anchor, 86_400, &mut rng).unwrap();
//! let server_cfg = ServerConfig::with_certificate(server_id, anchor);
//! let client_cfg = ClientConfig::with_ca(TrustStore::with(ca.certificate().clone()), "server.example", anchor);
//!
//! let mut client = Connection::client(client_cfg.into(), now, &mut rng).unwrap();
//! let mut server = Connection::server(server_cfg.into(), now);
//!
//! // Pump bytes until both sides are up.
//! for _ in 0..4 {
//!     let to_server = client.take_outgoing();
//!     server.feed(now, &to_server, &mut rng).unwrap();
//!     let to_client = server.take_outgoing();
//!     client.feed(now, &to_client, &mut rng).unwrap();
//! }
//! assert!(client.is_established() && server.is_established());
//!
//! client.send(b"hello, server").unwrap();
//! server.feed(now, &client.take_outgoing(), &mut rng).unwrap();
//! assert_eq!(server.take_received().unwrap(), b"hello, server");
//! ```
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `std` | yes | `std` conveniences; without it the crate is `no_std` + `alloc` |
//! | `sim` | no | the deterministic network simulator ([`sim`]), pcap and Mermaid output |

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod channel;
pub mod crypto;
mod error;
pub mod event;
pub mod ikev2;
pub mod io;
pub mod ipsec;
pub mod keyx;
pub mod offload;
pub mod ratelimit;
pub mod rendezvous;
#[cfg(feature = "sim")]
pub mod sim;
mod stream_id;
mod time;
pub mod tls;
pub mod wire;

pub use error::Error;
pub use event::{AnyActor, Event};
pub use io::{Actor, IfaceId, Input, Outbox, Output, StreamId, Transmit};
pub use time::{Instant, UnixTime};

/// The random number generator every actor is given: any cryptographically secure
/// `rand_core` generator, owned by the actor.
pub type Rng = alloc::boxed::Box<dyn rand_core::CryptoRng + Send>;

//! Code the driver examples share, so that no example writes it again. Each example
//! includes this module with `#[path = "driver/mod.rs"] mod driver;` and uses part of it.
//!
//! - `common`: clock, randomness, arguments, credential files, logging, errors;
//! - `tokio_net`: one actor on real sockets with tokio;
//! - `rendezvous`: what the seed 002 server, acceptor and issuer agree on.

pub mod common;
pub mod rendezvous;
pub mod tokio_net;

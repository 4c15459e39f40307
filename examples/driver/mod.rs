//! Code the driver examples share, so that no example writes it again. Each example
//! includes this module with `#[path = "driver/mod.rs"] mod driver;` and uses part of it.
//!
//! - `common`: clock, randomness, arguments, credential files, logging, errors (also
//!   used by `blocking.rs`, which includes it alone: it has no async code);
//! - `tokio_net`: one actor on real sockets with tokio;
//! - `rendezvous`: what the seed 002 server, acceptor and issuer agree on;
//! - `appliance`: the seed 000 appliance's options and behaviour, the same whether the
//!   tokio loop (`offload.rs appliance`) or the blocking loop (`blocking.rs`) drives it.

pub mod appliance;
pub mod common;
pub mod rendezvous;
pub mod tokio_net;

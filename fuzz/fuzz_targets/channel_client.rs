#![no_main]
//! A channel client fed arbitrary server bytes, or a real handshake whose server-to-client
//! bytes are corrupted.

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| common::fuzz_one_side(data, false));

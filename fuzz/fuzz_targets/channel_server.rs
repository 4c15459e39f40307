#![no_main]
//! A channel server fed arbitrary client bytes, or a real handshake whose client-to-server
//! bytes are corrupted.

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| common::fuzz_one_side(data, true));

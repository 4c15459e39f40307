#![no_main]
//! Seed 000: an appliance in the middle of real flows (flow A, A', B, ¶0062 direct data) whose
//! messages toward it the fuzzer corrupts, drops or replaces with raw input.
//! Invariants beyond "no panic" are in `offload_common::World::check` and `drain`.

use libfuzzer_sys::fuzz_target;

#[path = "offload_common.rs"]
mod offload_common;

fuzz_target!(|data: &[u8]| {
    offload_common::run(offload_common::Who::Appliance, data);
});

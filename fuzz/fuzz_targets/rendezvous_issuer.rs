#![no_main]
//! The issuer's inputs: datagrams from anywhere, and a real flow (right or wrong
//! password) with mutated copies of every datagram and stream chunk the issuer received
//! injected — including the direct-link datagrams of an established session.

use std::time::Duration;

use libfuzzer_sys::fuzz_target;

#[path = "rendezvous_common.rs"]
mod common;
use common::{Who, DEVICE};

fuzz_target!(|data: &[u8]| common::run(data, |net, mode, rest| match mode % 3 {
    0 => {
        let now = net.now;
        // Only so that a session waits for answers; were the connect refused, the
        // datagrams below would still exercise the issuer.
        let _ = net.issuer.connect(now, DEVICE, b"anything");
        net.drain_all();
        net.spray(Who::Issuer, common::acceptor_udp(), rest);
    }
    m => {
        let password: &[u8] = if m == 1 { common::PASSWORD } else { b"wrong" };
        let session = net.flow(password, Duration::from_secs(4)).unwrap_or(0);
        net.replay_mutated(
            Who::Issuer,
            rest,
            |_| {},
            // Refusals of fuzzed sends (no session yet, too long) are the expected answer.
            |net, c| {
                let _ = net.issuer.send(net.now, session, c);
            },
        );
    }
}));

#![no_main]
//! The acceptor's inputs: datagrams from the server's address or anywhere (raw, or
//! notices and acknowledgments built from the input and MAC'd with the device key), and a
//! real flow with mutated copies of every datagram and stream chunk the acceptor received
//! injected — including the direct-link datagrams of an established session.

use std::time::Duration;

use deputy::rendezvous::messages::{AckStatus, Notice, RegisterAck};
use deputy::rendezvous::DeviceId;
use deputy::{Input, StreamId};
use libfuzzer_sys::fuzz_target;

#[path = "rendezvous_common.rs"]
mod common;
use common::{acceptor_udp, chunks, server_udp, u64_of, Who, DEVICE};

fuzz_target!(|data: &[u8]| common::run(data, |net, mode, rest| match mode % 3 {
    0 => net.spray(Who::Acceptor, common::issuer_udp(), rest),
    1 => {
        let key = *net.key.as_bytes();
        for c in chunks(rest) {
            let wall = common::ANCHOR.0 * 1000 + net.now.as_nanos() / 1_000_000;
            let msg = if c.first().is_some_and(|b| b & 1 == 0) {
                Notice {
                    request: u64_of(c),
                    device: if c.len() % 3 == 0 { DeviceId(9) } else { DEVICE },
                    server_time_ms: wall.wrapping_add(u64_of(c.get(1..).unwrap_or(&[])) % 120_000),
                }
                .encode(&key)
            } else {
                RegisterAck {
                    device: DEVICE,
                    nonce: [c.len() as u8; 16],
                    observed: "1.2.3.4:5".parse().unwrap(),
                    server_time_ms: u64_of(c),
                    lifetime: Duration::from_secs(90),
                    status: if c.len() % 2 == 0 { AckStatus::Accepted } else { AckStatus::Stale },
                }
                .encode(&key)
            };
            if let Ok(m) = msg {
                net.input(Who::Acceptor, Input::Datagram { from: server_udp(), to: acceptor_udp(), data: &m });
            }
            net.tick(Duration::from_millis(500));
        }
    }
    _ => {
        net.flow(common::PASSWORD, Duration::from_secs(4));
        net.replay_mutated(
            Who::Acceptor,
            rest,
            // A close for a stream the acceptor never had: it must shrug it off.
            |net| net.input(Who::Acceptor, Input::StreamClosed { id: StreamId::outbound(9) }),
            // Refusals of fuzzed sends (unknown session, too long) are the expected answer.
            |net, c| {
                let _ = net.acceptor.send(net.now, u64_of(c), c);
            },
        );
    }
}));

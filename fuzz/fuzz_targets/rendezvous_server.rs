#![no_main]
//! The rendezvous server's inputs: datagrams from anywhere (raw, or registrations built
//! from the input and MAC'd with the right or a wrong key), messages inside an issuer's or
//! a device's channel, and a real S202–S209 flow with mutated copies of its datagrams
//! injected. Beyond "no panic": the directory and the request table stay within bounds.

use std::net::SocketAddr;
use std::time::Duration;

use deputy::rendezvous::messages::{ConnectRequest, Fetch, Probe, Register};
use deputy::rendezvous::{DeviceId, Directory};
use deputy::Input;
use libfuzzer_sys::fuzz_target;

#[path = "rendezvous_common.rs"]
mod common;
use common::{chunks, mutate, server_udp, u64_of, Client, Net, Who, DEVICE};

fn source(i: usize, c: &[u8]) -> SocketAddr {
    let last = c.first().copied().unwrap_or(0);
    SocketAddr::from(([66, 6, (i % 7) as u8, last], 1000 + (i % 50) as u16))
}

/// A datagram to the server's UDP port from the fuzzer-chosen `source(i, c)`.
fn from_source(net: &mut Net, i: usize, c: &[u8], data: &[u8]) {
    net.input(Who::Server, Input::Datagram { from: source(i, c), to: server_udp(), data });
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest, mut net)) = common::start(data) else {
        return;
    };
    match mode % 5 {
        0 => {
            for (i, c) in chunks(rest).into_iter().enumerate() {
                from_source(&mut net, i, c, c);
            }
        }
        1 => {
            for (i, c) in chunks(rest).into_iter().enumerate() {
                let device = if c.first().is_some_and(|b| b & 1 == 0) {
                    DEVICE
                } else {
                    DeviceId(u64_of(c))
                };
                let skew = u64_of(c.get(1..).unwrap_or(&[])) % 200_000;
                let timestamp_ms = (common::ANCHOR.0 * 1000 + net.now.as_nanos() / 1_000_000)
                    .wrapping_add(skew)
                    .wrapping_sub(100_000);
                let key = if c.get(2).is_some_and(|b| b & 1 == 0) {
                    *net.key.as_bytes()
                } else {
                    [0u8; 32]
                };
                let reg = Register {
                    device,
                    timestamp_ms,
                    nonce: [i as u8; 16],
                }
                .encode(&key)
                .expect("encode");
                from_source(&mut net, i, c, &reg);
                let probe = Probe {
                    request: u64_of(c),
                    token: [c.len() as u8; 16],
                }
                .encode()
                .expect("encode");
                from_source(&mut net, i, c, &probe);
                net.tick(Duration::from_millis(u64::from(c.first().copied().unwrap_or(0)) * 100));
            }
        }
        2 | 3 => {
            // Let the genuine device register, then talk to the server ourselves.
            net.run(Duration::from_secs(1));
            let device = mode % 5 == 3;
            let identity = if device { net.device_identity.take() } else { None };
            let mut client = Client::open(&mut net, if device { 1300 } else { 1201 }, identity);
            for c in chunks(rest) {
                let structured = if device {
                    Fetch {
                        request: u64_of(c),
                        device: DEVICE,
                    }
                    .encode()
                } else {
                    ConnectRequest {
                        request: u64_of(c),
                        device: DEVICE,
                        share: [c.len() as u8; 32],
                        random: [1; 32],
                        token: [c.first().copied().unwrap_or(0); 16],
                        declared: None,
                    }
                    .encode()
                };
                if c.first().is_some_and(|b| b & 3 == 0)
                    && let Ok(m) = structured
                {
                    client.send(&mut net, &m);
                } else {
                    client.send(&mut net, c);
                }
                net.tick(Duration::from_millis(200));
                client.pump(&mut net);
            }
        }
        _ => {
            // The real flow; then mutated copies of everything the server received.
            net.flow(common::PASSWORD, Duration::from_secs(3));
            let seen: Vec<_> = net
                .datagrams
                .iter()
                .filter(|(_, to, _)| *to == server_udp())
                .cloned()
                .collect();
            for (i, c) in chunks(rest).into_iter().enumerate() {
                if let Some((from, to, bytes)) = seen.get(i % seen.len().max(1)) {
                    let m = mutate(bytes, c);
                    net.input(Who::Server, Input::Datagram { from: *from, to: *to, data: &m });
                }
            }
            net.run(Duration::from_secs(5));
        }
    }
    net.run(Duration::from_secs(100));
    let server = &net.server;
    assert!(server.directory().len() <= server.directory().capacity());
    let (sources, bound) = server.rate_table();
    assert!(sources <= bound);
});

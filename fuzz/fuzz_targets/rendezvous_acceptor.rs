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
use common::{acceptor_udp, chunks, mutate, server_udp, Net, Who, DEVICE};

fn u64_of(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut net = Net::new();
    match mode % 3 {
        0 => {
            for (i, c) in chunks(rest).into_iter().enumerate() {
                let from = if i % 2 == 0 { server_udp() } else { common::issuer_udp() };
                net.input(Who::Acceptor, Input::Datagram { from, to: acceptor_udp(), data: c });
                net.tick(Duration::from_millis(300));
            }
        }
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
            let seen: Vec<_> = net
                .datagrams
                .iter()
                .filter(|(_, to, _)| to.ip() == acceptor_udp().ip())
                .cloned()
                .collect();
            let streamed: Vec<_> = net
                .stream_bytes
                .iter()
                .filter(|(to, _, _)| *to == Who::Acceptor)
                .cloned()
                .collect();
            for (i, c) in chunks(rest).into_iter().enumerate() {
                if i % 2 == 0 {
                    if let Some((from, to, bytes)) = seen.get(i % seen.len().max(1)) {
                        let m = mutate(bytes, c);
                        net.input(Who::Acceptor, Input::Datagram { from: *from, to: *to, data: &m });
                    }
                } else if let Some((_, id, bytes)) = streamed.get(i % streamed.len().max(1)) {
                    let m = mutate(bytes, c);
                    net.input(Who::Acceptor, Input::StreamData { id: *id, data: &m });
                    net.input(Who::Acceptor, Input::StreamClosed { id: StreamId::outbound(9) });
                }
                let _ = net.acceptor.send(net.now, u64_of(c), c);
            }
            net.run(Duration::from_secs(30));
        }
    }
    net.run(Duration::from_secs(120));
});

#![no_main]
//! The issuer's inputs: datagrams from anywhere, and a real flow (right or wrong
//! password) with mutated copies of every datagram and stream chunk the issuer received
//! injected — including the direct-link datagrams of an established session.

use std::time::Duration;

use deputy::Input;
use libfuzzer_sys::fuzz_target;

#[path = "rendezvous_common.rs"]
mod common;
use common::{chunks, issuer_udp, mutate, server_udp, Net, Who, DEVICE};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut net = Net::new();
    match mode % 3 {
        0 => {
            let now = net.now;
            let _ = net.issuer.connect(now, DEVICE, b"anything");
            net.drain_all();
            for (i, c) in chunks(rest).into_iter().enumerate() {
                let from = if i % 2 == 0 { server_udp() } else { common::acceptor_udp() };
                net.input(Who::Issuer, Input::Datagram { from, to: issuer_udp(), data: c });
                net.tick(Duration::from_millis(300));
            }
        }
        m => {
            let password: &[u8] = if m == 1 { common::PASSWORD } else { b"wrong" };
            let session = net.flow(password, Duration::from_secs(4)).unwrap_or(0);
            let seen: Vec<_> = net
                .datagrams
                .iter()
                .filter(|(_, to, _)| to.ip() == issuer_udp().ip())
                .cloned()
                .collect();
            let streamed: Vec<_> = net
                .stream_bytes
                .iter()
                .filter(|(to, _, _)| *to == Who::Issuer)
                .cloned()
                .collect();
            for (i, c) in chunks(rest).into_iter().enumerate() {
                if i % 2 == 0 {
                    if let Some((from, to, bytes)) = seen.get(i % seen.len().max(1)) {
                        let m = mutate(bytes, c);
                        net.input(Who::Issuer, Input::Datagram { from: *from, to: *to, data: &m });
                    }
                } else if let Some((_, id, bytes)) = streamed.get(i % streamed.len().max(1)) {
                    let m = mutate(bytes, c);
                    net.input(Who::Issuer, Input::StreamData { id: *id, data: &m });
                }
                let _ = net.issuer.send(net.now, session, c);
            }
            net.run(Duration::from_secs(30));
        }
    }
    net.run(Duration::from_secs(120));
});

#![no_main]
//! The IKEv2 responder's datagram input: arbitrary datagrams on ports 500 and 4500 from a
//! few sources while time moves, or a real exchange with deputy's initiator whose
//! initiator-to-responder datagrams are XORed with the input (a COOKIE is demanded, so
//! that path is corrupted too).
//!
//! Invariants beyond "no panic": the IKE SA tables stay within their bounds; the outbox
//! is drained after every call; once the input stops, every half-open IKE SA is gone
//! after the half-open timeout; the responder still answers a clean initiator afterwards.

use std::net::SocketAddr;
use std::time::Duration;

use deputy::crypto::dh::Group;
use deputy::ikev2::{
    Identity, IkeConfig, IkeEvent, IkeProposal, Initiator, InitiatorConfig, Responder,
    ResponderConfig,
};
use deputy::{Actor, Input, Instant, Output};
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const PSK: &[u8] = b"fuzz psk";
const R: &str = "198.51.100.2";

fn cfg(id: &str) -> IkeConfig {
    let mut c = IkeConfig::new(Identity::Fqdn(id.into()), PSK);
    // X25519 only: MODP-2048 would make every case slow.
    c.ike_proposals = vec![
        IkeProposal::aes128_sha256(&[Group::X25519]),
        IkeProposal::chacha20poly1305(&[Group::X25519]),
    ];
    c
}

fn responder() -> Responder {
    let mut rc = ResponderConfig::new(cfg("r.example"));
    rc.max_ike_sas = 4;
    rc.max_half_open = 3;
    rc.cookie_threshold = 1;
    Responder::new(rc, Box::new(ChaCha20Rng::seed_from_u64(7)), Instant::ZERO).expect("valid")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// Drain the responder's outputs; returns its datagrams.
fn drain(r: &mut Responder) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(o) = r.poll_output() {
        match o {
            Output::Transmit(t) => out.push((t.from, t.to, t.data)),
            Output::Event(_) => {}
            other => panic!("unexpected output {other:?}"),
        }
    }
    assert!(r.ike_sa_count() <= 4, "IKE SA table bound");
    assert!(r.half_open_count() <= 3, "half-open bound");
    out
}

fn settle(r: &mut Responder, now: &mut Instant) {
    // Past every half-open timeout (30 s) and responder linger.
    for _ in 0..64 {
        let Some(t) = r.poll_timeout() else { break };
        *now = (*now).max(t);
        r.handle_timeout(*now);
        drain(r);
    }
    *now += Duration::from_secs(120);
    r.handle_timeout(*now);
    drain(r);
    assert_eq!(r.half_open_count(), 0, "half-open SAs expire");
}

/// A clean initiator still gets an IKE SA (cookies and all).
fn still_serves(r: &mut Responder, now: Instant) {
    let ic = InitiatorConfig {
        ike: cfg("i.example"),
        local: addr("192.0.2.9:500"),
        remote: addr(&format!("{R}:500")),
    };
    let mut i = Initiator::new(ic, Box::new(ChaCha20Rng::seed_from_u64(3))).expect("valid");
    i.start(now).expect("start");
    for _ in 0..8 {
        while let Some(o) = i.poll_output() {
            if let Output::Transmit(t) = o {
                let _ = r.handle_input(now, Input::Datagram { from: t.from, to: t.to, data: &t.data });
            }
        }
        for (from, to, data) in drain(r) {
            let _ = i.handle_input(now, Input::Datagram { from, to, data: &data });
        }
    }
    // The table may be full of established SAs from the fuzzer's exchange; then the
    // refusal is the bound at work.
    assert!(i.is_established() || r.ike_sa_count() == 4, "the responder stopped serving");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut r = responder();
    let mut now = Instant::from_secs(1);
    if mode % 2 == 0 {
        // Raw datagrams: [len, flags, bytes…]*; flags pick the port, the source, a delay.
        let mut input = rest;
        while let [len, flags, tail @ ..] = input {
            let n = usize::from(*len).min(tail.len());
            let (chunk, more) = tail.split_at(n);
            input = more;
            let port = if flags & 1 == 0 { 500 } else { 4500 };
            let from = addr(&format!("192.0.2.{}:{}", 1 + (flags >> 1) % 3, port));
            let to = addr(&format!("{R}:{port}"));
            now += Duration::from_millis(u64::from(flags >> 3) * 100);
            let _ = r.handle_input(now, Input::Datagram { from, to, data: chunk });
            drain(&mut r);
            if r.poll_timeout().is_some_and(|t| t <= now) {
                r.handle_timeout(now);
                drain(&mut r);
            }
        }
    } else {
        // A real exchange, the initiator's datagrams corrupted by the input.
        let ic = InitiatorConfig {
            ike: cfg("i.example"),
            local: addr("192.0.2.1:500"),
            remote: addr(&format!("{R}:500")),
        };
        let mut i = Initiator::new(ic, Box::new(ChaCha20Rng::seed_from_u64(11))).expect("valid");
        i.start(now).expect("start");
        let mut offset = 0usize;
        let mut established = false;
        for _ in 0..16 {
            while let Some(o) = i.poll_output() {
                match o {
                    Output::Transmit(mut t) => {
                        if !rest.is_empty() {
                            for b in t.data.iter_mut() {
                                *b ^= rest[offset % rest.len()];
                                offset += 1;
                            }
                        }
                        let _ = r.handle_input(now, Input::Datagram { from: t.from, to: t.to, data: &t.data });
                    }
                    Output::Event(IkeEvent::ChildSaEstablished { .. }) => established = true,
                    _ => {}
                }
            }
            for (from, to, d) in drain(&mut r) {
                let _ = i.handle_input(now, Input::Datagram { from, to, data: &d });
            }
            let next = [i.poll_timeout(), r.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) => {
                    now = now.max(t);
                    i.handle_timeout(now);
                    r.handle_timeout(now);
                    drain(&mut r);
                }
                None => break,
            }
        }
        while let Some(o) = i.poll_output() {
            if let Output::Event(IkeEvent::ChildSaEstablished { .. }) = o {
                established = true;
            }
        }
        if rest.iter().all(|b| *b == 0) {
            assert!(established, "an uncorrupted exchange establishes");
        }
    }
    settle(&mut r, &mut now);
    still_serves(&mut r, now);
});

#![no_main]
//! Seed 004's IKEv2 substitution server (`keyx::Dispatcher<IkeSubstitute>`, S33-S49 with
//! the real S34-S48 behind them), provisioned as tests/common/keyx.rs provisions it, fed
//! arbitrary delegation messages from two terminals (one provisioned and allowed to reach
//! peer.example, one provisioned with no policy) while time advances.
//!
//! The first input byte picks a genuine prefix so the fuzzer starts from deep states: a
//! responder start carrying a real IKE_SA_INIT request from deputy's initiator (then its
//! key generation), or an initiator start toward peer.example (then its key generation,
//! then the real IKE_SA_INIT response of deputy's responder). The rest are records of
//! arbitrary messages; a record may be re-addressed to the prefix's session and its next
//! sequence number, so arbitrary bodies reach that session's step.
//!
//! Invariants: no panic; every answer decodes as a delegation message; no key response
//! ever leaves for a session whose authentication response did not say authenticated and
//! allowed; the session table stays within its bound.

#[path = "keyx_common.rs"]
mod common;

use std::time::Duration;

use common::{PEER_ID, PREFIX_SESSION, addr, dispatcher, peer_ike, small_bounds, transforms};
use deputy::ikev2::{Identity, Initiator, InitiatorConfig, Responder, ResponderConfig};
use deputy::keyx::ike::IkeSubstitute;
use deputy::keyx::{Body, KeyGenRequest, Message, Protocol, Role, StartRequest};
use deputy::{Actor, Input, Output};
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const MAX_SESSIONS: usize = 3;

/// The first datagram an actor has to send.
fn first_transmit(
    outputs: impl Iterator<Item = Output<deputy::ikev2::IkeEvent>>,
) -> Option<Vec<u8>> {
    outputs.into_iter().find_map(|o| match o {
        Output::Transmit(t) => Some(t.data),
        _ => None,
    })
}

type Run = common::Run<IkeSubstitute>;

/// The genuine prefix picked by `mode`; returns the next sequence number of its session.
fn prefix(run: &mut Run, who: usize, mode: u8) -> u32 {
    let terminal = addr("192.0.2.20:500");
    let peer = addr("192.0.2.10:500");
    match mode % 6 {
        // Responder (the seed's Fig. 12): the peer's real IKE_SA_INIT request.
        m @ (1 | 2) => {
            let mut i = Initiator::new(
                InitiatorConfig {
                    ike: peer_ike(),
                    local: peer,
                    remote: terminal,
                },
                Box::new(ChaCha20Rng::seed_from_u64(0x1417)),
            )
            .expect("initiator");
            i.start(run.now).expect("start");
            let Some(init) = first_transmit(std::iter::from_fn(|| i.poll_output())) else {
                return 0;
            };
            let start = StartRequest {
                protocol: Protocol::Ikev2,
                role: Role::Responder,
                local: terminal,
                remote: peer,
                peer_message: Some(init),
                transforms: transforms(),
                peer_id: None,
            };
            run.request(who, 0, Body::StartRequest(start));
            if m == 1 {
                return 1;
            }
            let keygen = KeyGenRequest { peer_message: None };
            run.request(who, 1, Body::KeyGenRequest(keygen));
            2
        }
        // Initiator toward peer.example.
        m @ (3..=5) => {
            let start = StartRequest {
                protocol: Protocol::Ikev2,
                role: Role::Initiator,
                local: terminal,
                remote: peer,
                peer_message: None,
                transforms: transforms(),
                peer_id: Some(Identity::Fqdn(PEER_ID.into()).payload_body()),
            };
            run.request(who, 0, Body::StartRequest(start));
            if m == 3 {
                return 1;
            }
            let keygen = KeyGenRequest { peer_message: None };
            let answer = run.request(who, 1, Body::KeyGenRequest(keygen));
            if m == 4 {
                return 2;
            }
            // The server's IKE_SA_INIT request, answered by deputy's responder.
            let Some(Message {
                body: Body::KeyGenResponse(k),
                ..
            }) = answer
            else {
                return 2;
            };
            let Some(request) = k.message else {
                return 2;
            };
            let mut r = Responder::new(
                ResponderConfig::new(peer_ike()),
                Box::new(ChaCha20Rng::seed_from_u64(0x7e5)),
                run.now,
            )
            .expect("responder");
            let _ = r.handle_input(
                run.now,
                Input::Datagram {
                    from: terminal,
                    to: peer,
                    data: &request,
                },
            );
            let Some(response) = first_transmit(std::iter::from_fn(|| r.poll_output())) else {
                return 2;
            };
            let keygen = KeyGenRequest {
                peer_message: Some(response),
            };
            run.request(who, 2, Body::KeyGenRequest(keygen));
            3
        }
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut run = Run::new(dispatcher(small_bounds(), 0x5e4), MAX_SESSIONS);
    let prefix_who = usize::from(mode >> 7);
    let mut next_seq = prefix(&mut run, prefix_who, mode & 0x7f);
    // Records: [flags, length (u16), message bytes]. Flags: bit 0 the terminal, bit 1
    // re-address a decodable message to the prefix's session and next sequence number
    // (bit 2 keeps its sequence number instead), the rest a delay in 100 ms steps.
    for (flags, msg) in common::records(rest) {
        let who = usize::from(flags & 1);
        run.now += Duration::from_millis(u64::from(flags >> 3) * 100);
        let readdressed = if flags & 2 != 0 {
            Message::decode(msg, &run.limits).ok().and_then(|mut m| {
                m.session = PREFIX_SESSION;
                if flags & 4 == 0 {
                    m.seq = next_seq;
                }
                m.encode().ok()
            })
        } else {
            None
        };
        let bytes = readdressed.as_deref().unwrap_or(msg);
        let answer = run.handle(who, bytes);
        if Run::advances(&answer, who, prefix_who, next_seq) {
            next_seq = next_seq.wrapping_add(1);
        }
    }
});

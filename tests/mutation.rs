//! The mutation suite (issue 13): every built flow, run once per single-message fault —
//! each byte flipped (a seeded sample of positions in `cargo test`, every position in the
//! ignored `*_exhaustive` tests), truncated, duplicated, dropped, an earlier message
//! replayed after it — and then run again in the same world (the health run). Asserted
//! per case: no panic, no duplicated or foreign delivery to an application, every failure
//! reported as a typed event within a bound, and the health run succeeds.
//!
//! Faults are injected with the simulator's fault hook (`deputy::sim::fault`) on the
//! flow's own message selector, so message `#i` is the same packet in every run.
//!
//! Flows covered: seed 002 (registration; connection by ID with the right password; with
//! a wrong password). Not yet covered: seed 000 flows A and B (keyed and unkeyed link) and
//! the IKEv2 exchange — their worlds live in tests/offload.rs and tests/ikev2.rs and have
//! not been moved into the shared harness yet.

use std::time::Duration;

use deputy::rendezvous::RendezvousEvent;
use deputy::sim::Sim;
use deputy::sim::fault::{Fault, FaultAction};
use deputy::sim::packet::{PROTO_TCP, PROTO_UDP};
use deputy::sim::scenario::{Outcome, World, WorldConfig};

mod common;
use common::mutation::{FlowRun, Known, Log, Mutation, known, run_suite};

/// Cases known to fail on this branch (flow, message, fault kind), each with what broke.
/// Fixes being made in parallel (issue 13 items 1–3) should empty it; a case here that
/// passes is printed, a failing case not here fails the test.
#[rustfmt::skip]
const KNOWN_FAILING: &[Known] = &[
    // Issue 13 item 3: a record corrupted in transit on a channel stream to the server
    // kills that channel, and nothing re-establishes it: the health run is refused
    // (ProtocolError / DeviceUnreachable) or fails (ServerLost).
    known("seed002/registration", 2, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/registration", 3, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/registration", 5, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/registration", 6, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/registration", 9, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/registration", 10, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/registration", 11, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/registration", 12, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/registration", 13, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/registration", 14, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/registration", 15, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/registration", 16, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/registration", 17, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/registration", 18, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/registration", 19, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/registration", 20, "flip", "issuer's server channel (1201): health run: failed: ServerLost"),
    known("seed002/registration", 21, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/wrong-password", 26, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/wrong-password", 27, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/wrong-password", 29, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/wrong-password", 30, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/wrong-password", 33, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/wrong-password", 34, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/wrong-password", 35, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/wrong-password", 36, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/wrong-password", 37, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/wrong-password", 38, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/wrong-password", 39, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/wrong-password", 40, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/wrong-password", 41, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/wrong-password", 42, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/wrong-password", 43, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/wrong-password", 44, "flip", "issuer's server channel (1201): health run: failed: ServerLost"),
    known("seed002/wrong-password", 45, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/right-password", 44, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/right-password", 45, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/right-password", 47, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/right-password", 48, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/right-password", 51, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/right-password", 52, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/right-password", 53, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/right-password", 54, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/right-password", 55, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/right-password", 56, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/right-password", 57, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/right-password", 58, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/right-password", 59, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/right-password", 60, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
    known("seed002/right-password", 61, "flip", "issuer's server channel (1201): health run: refused: ProtocolError"),
    known("seed002/right-password", 63, "flip", "acceptor's device channel (1300): health run: refused: DeviceUnreachable"),
];

const SEED: u64 = 2;
const PASSWORD: &[u8] = b"2133-secret";

/// The messages of a seed 002 flow: every UDP datagram and every TCP segment carrying
/// data that a device's router puts on the internet or the server sends there.
fn select(w: &World, log: &Log, action: FaultAction) -> Fault {
    let internet = w.internet;
    let record = log.record();
    Fault::new(action).on_network(internet).when(move |p| {
        let data = p.protocol == PROTO_UDP || (p.protocol == PROTO_TCP && !p.payload.is_empty());
        data && record(p)
    })
}

/// Properties common to every seed 002 case: `node`'s application saw no session come up
/// twice and no data twice.
fn no_duplicates(sim: &Sim, w: &World) -> Result<(), String> {
    for node in [w.issuer, w.acceptor] {
        let evs = World::events(sim, node);
        let mut seen = Vec::new();
        for e in &evs {
            let key = match e {
                RendezvousEvent::PeerConnected { session, .. } => format!("up {session}"),
                RendezvousEvent::PeerData { session, data } => format!("data {session} {data:?}"),
                _ => continue,
            };
            if seen.contains(&key) {
                return Err(format!("delivered twice at {node:?}: {key}"));
            }
            seen.push(key);
        }
    }
    Ok(())
}

/// The health run: a right-password request connects.
fn health(sim: &mut Sim, w: &World) -> Result<(), String> {
    let session = w.connect(sim, PASSWORD)?;
    match w.wait(sim, session, Duration::from_secs(120))? {
        Outcome::Connected { .. } => no_duplicates(sim, w),
        other => Err(format!("health run: {other}")),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Seed002 {
    Registration,
    RightPassword,
    WrongPassword,
}

fn seed_002(flow: Seed002, case: Option<&Mutation>) -> FlowRun {
    let log = Log::default();
    let mut sim = Sim::new(SEED);
    let result = (|| {
        let w = World::build(&mut sim, WorldConfig::default())?;
        let install = |sim: &mut Sim| match case {
            Some(m) => sim
                .add_fault(m.fault(|a| select(&w, &log, a)))
                .map(drop)
                .map_err(|e| format!("{e}")),
            None => sim
                .add_fault(select(&w, &log, FaultAction::Drop).nth(u64::MAX))
                .map(drop)
                .map_err(|e| format!("{e}")),
        };
        if flow == Seed002::Registration {
            install(&mut sim)?;
        }
        // S202: the acceptor registers; a lost registration must be retried within the
        // registration refresh.
        let registered = |s: &Sim| {
            World::events(s, w.acceptor)
                .iter()
                .any(|e| matches!(e, RendezvousEvent::Registered { .. }))
        };
        let limit = sim.now() + Duration::from_secs(120);
        sim.run_until_cond(limit, registered)
            .map_err(|e| format!("{e}"))?;
        if !registered(&sim) {
            return Err("the acceptor never registered".to_string());
        }
        if flow != Seed002::Registration {
            install(&mut sim)?;
            let password: &[u8] = if flow == Seed002::WrongPassword {
                b"wrong"
            } else {
                PASSWORD
            };
            let session = w.connect(&mut sim, password)?;
            let outcome = w.wait(&mut sim, session, Duration::from_secs(120))?;
            match (flow, outcome) {
                (Seed002::WrongPassword, Outcome::Connected { .. }) => {
                    return Err("connected with a wrong password".into());
                }
                (_, Outcome::Undecided) => {
                    return Err("no outcome within 120 s (no typed failure)".into());
                }
                (Seed002::RightPassword, o)
                    if case.is_none() && !matches!(o, Outcome::Connected { .. }) =>
                {
                    return Err(format!("fault-free run: {o}"));
                }
                _ => {}
            }
            no_duplicates(&sim, &w)?;
            // The acceptor's back-off after a refused password must not bar the health run.
            sim.run_for(Duration::from_secs(60))
                .map_err(|e| format!("{e}"))?;
        }
        no_duplicates(&sim, &w)?;
        health(&mut sim, &w)
    })();
    FlowRun {
        messages: log.take(),
        result,
    }
}

fn suite(flow: Seed002, name: &str, exhaustive: bool) {
    run_suite(name, exhaustive, KNOWN_FAILING, |case| seed_002(flow, case));
}

#[test]
fn seed_002_registration() {
    suite(Seed002::Registration, "seed002/registration", false);
}

#[test]
fn seed_002_right_password() {
    suite(Seed002::RightPassword, "seed002/right-password", false);
}

#[test]
fn seed_002_wrong_password() {
    suite(Seed002::WrongPassword, "seed002/wrong-password", false);
}

#[test]
#[ignore = "every byte position: minutes; run with --ignored"]
fn seed_002_exhaustive() {
    suite(Seed002::Registration, "seed002/registration", true);
    suite(Seed002::RightPassword, "seed002/right-password", true);
    suite(Seed002::WrongPassword, "seed002/wrong-password", true);
}

//! Loss statistics (issue 13): right-password requests across lossy internet links must
//! connect (attempts may rise; none may fail). Seeded, so every run is the same.

use std::time::Duration;

use deputy::rendezvous::RendezvousEvent;
use deputy::sim::scenario::{Outcome, World, WorldConfig, label};
use deputy::sim::{Filtering, LinkConfig, Mapping, NatConfig, Sim};

/// Requests that did not connect, of `n`, for this pair at this loss.
fn failures(
    issuer: (Mapping, Filtering),
    acceptor: (Mapping, Filtering),
    loss: f64,
    n: u64,
) -> Vec<String> {
    let mut failed = Vec::new();
    for seed in 0..n {
        let mut sim = Sim::new(7000 + seed);
        let world = World::build(
            &mut sim,
            WorldConfig {
                issuer_nat: Some(NatConfig::new(issuer.0, issuer.1)),
                acceptor_nat: Some(NatConfig::new(acceptor.0, acceptor.1)),
                ..WorldConfig::default()
            },
        )
        .unwrap();
        let mut link = LinkConfig::with_latency(Duration::from_millis(10));
        link.loss = loss;
        sim.set_link(world.internet, link).unwrap();
        // The statistics are about requests to a registered device: wait for its first
        // registration to be acknowledged (a request before the server has heard of the
        // device is refused `UnknownDevice`, rightly; at 10% loss the first registration
        // and its repeat 2 s later are both lost about once in a hundred worlds).
        let registered = |s: &Sim| {
            World::events(s, world.acceptor)
                .iter()
                .any(|e| matches!(e, RendezvousEvent::Registered { .. }))
        };
        let limit = sim.now() + Duration::from_secs(60);
        sim.run_until_cond(limit, registered).unwrap();
        assert!(registered(&sim), "seed {seed}: the device never registered");
        let session = world.connect(&mut sim, b"2133-secret").unwrap();
        let outcome = world
            .wait(&mut sim, session, Duration::from_secs(120))
            .unwrap();
        if !matches!(outcome, Outcome::Connected { .. }) {
            failed.push(format!(
                "{} ↔ {} seed {seed}: {outcome}",
                label(issuer),
                label(acceptor)
            ));
        }
    }
    failed
}

#[test]
fn the_issue_cell_connects_at_3_percent_loss() {
    let eim = (
        Mapping::EndpointIndependent,
        Filtering::AddressAndPortDependent,
    );
    let apdm = (
        Mapping::AddressAndPortDependent,
        Filtering::AddressAndPortDependent,
    );
    let failed = failures(apdm, eim, 0.03, 20);
    assert!(failed.is_empty(), "{failed:#?}");
}

use deputy::sim::scenario::{BEHAVIOURS, expected_direct};

/// Every pair the NAT matrix reports as connecting, `n` requests each at `loss`; with
/// `eim_only`, only the pairs where a side maps endpoint-independently.
fn sweep(loss: f64, n: u64, eim_only: bool) -> Vec<String> {
    let mut failed = Vec::new();
    for &i in &BEHAVIOURS {
        for &a in &BEHAVIOURS {
            let eim = i.0 == Mapping::EndpointIndependent || a.0 == Mapping::EndpointIndependent;
            if expected_direct(i, a, false) && (eim || !eim_only) {
                failed.extend(failures(i, a, loss, n));
            }
        }
    }
    failed
}

/// Issue 13's acceptance: every pair the NAT matrix reports as connecting, 100 seeded
/// right-password requests each at 3% loss on the internet, all connect (in whichever
/// attempt). Failures it found, each fixed at its cause (with a test of its own):
/// seed 51 ended `DeviceUnreachable` (the server gave up 5 s after its first notice while
/// the device's stream was still in TCP retransmission: `fetch_wait`); birthday attempts
/// missed (a spray paced by an RTT inflated by a TCP retransmission outlasted the peer's
/// attempt; 256 extra sockets left a ≈2% miss per attempt); channel handshakes stalled on
/// a proven path whose NAT filter entry the spray had pushed out (the link now changes
/// path when its retransmissions go unanswered).
#[test]
fn every_connecting_pair_connects_at_3_percent_loss_100_requests() {
    let failed = sweep(0.03, 100, false);
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The acceptance's second half: 100 requests per pair at 10% loss, for the pairs where a
/// side maps endpoint-independently. Beyond the fixes above it found attempts whose Sync
/// (relayed over TCP) came seconds late, after the peer's whole spray: the extra sockets
/// now punch as soon as the previous attempt failed.
#[test]
fn every_endpoint_independent_pair_connects_at_10_percent_loss() {
    let failed = sweep(0.10, 100, true);
    assert!(failed.is_empty(), "{failed:#?}");
}

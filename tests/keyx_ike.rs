//! Seed 004 over IKEv2 through the simulator: a peer (deputy's plain Initiator or
//! Responder, standing in for any IKEv2 endpoint), the delegating terminal and the
//! substitution server, each on its own host. Each test tells one flow or one refusal of
//! the seed and asserts what every party saw.

mod common;

use deputy::ikev2::{FailReason, IkeEvent, Initiator, Responder};
use deputy::keyx::ike::{Terminal, TerminalEvent, TerminalFailure};
use deputy::keyx::messages::AuthResult;
use deputy::sim::Sim;

use common::keyx::*;

fn established_child(events: &[IkeEvent]) -> Option<deputy::ipsec::ChildSa> {
    events.iter().find_map(|e| match e {
        IkeEvent::ChildSaEstablished { child, .. } => Some((**child).clone()),
        _ => None,
    })
}

fn terminal_ike(events: &[TerminalEvent]) -> Vec<IkeEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            TerminalEvent::Ike(i) => Some(i.clone()),
            _ => None,
        })
        .collect()
}

fn failures(events: &[TerminalEvent]) -> Vec<TerminalFailure> {
    events
        .iter()
        .filter_map(|e| match e {
            TerminalEvent::Failed { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

/// Fig. 12: the peer initiates; the terminal answers with the server's IKE_SA_INIT, asks
/// the server to authenticate the peer, gets SK_d and sets up the Child SA itself.
#[test]
fn peer_initiated_terminal_responds_fig12() {
    let mut sim = Sim::new(1);
    let spec = Spec::default();
    let w = fig12(&mut sim, &spec);
    sim.with_actor(w.peer, |p: &mut Initiator, now| p.start(now))
        .unwrap()
        .unwrap();
    settle(&mut sim);

    let peer_events = ike_events(&mut sim, w.peer);
    let peer_child = established_child(&peer_events).expect("peer has a Child SA");
    assert!(peer_events.iter().any(|e| matches!(
        e,
        IkeEvent::IkeSaEstablished { peer_id, .. }
            if *peer_id == deputy::ikev2::Identity::Fqdn(TERMINAL_ID.into())
    )));

    let t_events = terminal_events(&mut sim, w.terminal);
    assert!(failures(&t_events).is_empty(), "{t_events:?}");
    let t_child = established_child(&terminal_ike(&t_events)).expect("terminal has a Child SA");
    // The same keys on both ends, crossed.
    assert_eq!(t_child.spi_in, peer_child.spi_out);
    assert_eq!(t_child.spi_out, peer_child.spi_in);
    assert_eq!(t_child.keys_in, peer_child.keys_out);
    assert_eq!(t_child.keys_out, peer_child.keys_in);
    // Installed into the terminal's own data plane.
    let t = sim.actor::<Terminal>(w.terminal).unwrap();
    assert!(t.data_plane().sa(t_child.spi_in).is_some());
    assert_eq!(t.exchange_count(), 0);

    // The server ran one Diffie-Hellman, authenticated one peer, released SK_d once.
    let s = sim.actor::<Server>(w.server).unwrap();
    let c = s.dispatcher().protocol().counters();
    assert_eq!(c.diffie_hellman, 1);
    assert_eq!(c.authenticated, 1);
    assert_eq!(c.keys_released, 1);
}

/// The terminal initiates toward a responding peer (beyond the seed's figures).
#[test]
fn terminal_initiates() {
    let mut sim = Sim::new(2);
    let spec = Spec::default();
    let w = peer_responds(&mut sim, &spec);
    sim.with_actor(w.terminal, |t: &mut Terminal, now| {
        t.initiate(
            now,
            addr(PEER, 500),
            deputy::ikev2::Identity::Fqdn(PEER_ID.into()),
        )
    })
    .unwrap()
    .unwrap();
    settle(&mut sim);

    let t_events = terminal_events(&mut sim, w.terminal);
    assert!(failures(&t_events).is_empty(), "{t_events:?}");
    let t_child = established_child(&terminal_ike(&t_events)).expect("terminal has a Child SA");
    let p = sim.actor::<Responder>(w.peer).unwrap();
    let id = p.established()[0];
    let p_child = p.child_sa(id).unwrap();
    assert_eq!(t_child.keys_in, p_child.keys_out);
    assert_eq!(t_child.keys_out, p_child.keys_in);
    let c = sim
        .actor::<Server>(w.server)
        .unwrap()
        .dispatcher()
        .protocol()
        .counters();
    assert_eq!((c.diffie_hellman, c.keys_released), (1, 1));
}

/// S43: a peer that authenticates but is not in the policy database is refused; no key is
/// released; the peer hears AUTHENTICATION_FAILED.
#[test]
fn policy_database_refuses_the_peer() {
    let mut sim = Sim::new(3);
    let spec = Spec {
        allowed: vec![deputy::keyx::PeerPattern::Domain(
            "elsewhere.example".into(),
        )],
        ..Spec::default()
    };
    let w = fig12(&mut sim, &spec);
    sim.with_actor(w.peer, |p: &mut Initiator, now| p.start(now))
        .unwrap()
        .unwrap();
    settle(&mut sim);
    let t_events = terminal_events(&mut sim, w.terminal);
    assert_eq!(failures(&t_events), vec![TerminalFailure::PolicyDenied]);
    assert!(established_child(&terminal_ike(&t_events)).is_none());
    let peer_events = ike_events(&mut sim, w.peer);
    assert!(peer_events.iter().any(|e| matches!(
        e,
        IkeEvent::Failed {
            reason: FailReason::AuthenticationFailed,
            ..
        }
    )));
    let c = sim
        .actor::<Server>(w.server)
        .unwrap()
        .dispatcher()
        .protocol()
        .counters();
    assert_eq!((c.policy_refused, c.keys_released), (1, 0));
}

/// S42: a peer whose AUTH does not verify (here: a wrong PSK) is refused.
#[test]
fn bad_peer_signature_is_refused() {
    let mut sim = Sim::new(4);
    let spec = Spec {
        peer_psk: b"not the psk the server holds".to_vec(),
        ..Spec::default()
    };
    let w = fig12(&mut sim, &spec);
    sim.with_actor(w.peer, |p: &mut Initiator, now| p.start(now))
        .unwrap()
        .unwrap();
    settle(&mut sim);
    let t_events = terminal_events(&mut sim, w.terminal);
    assert_eq!(
        failures(&t_events),
        vec![TerminalFailure::NotAuthenticated(AuthResult::BadAuth)]
    );
    let c = sim
        .actor::<Server>(w.server)
        .unwrap()
        .dispatcher()
        .protocol()
        .counters();
    assert_eq!((c.auth_refused, c.keys_released), (1, 0));
}

/// Phase 2 without the server (Fig. 13): a Child SA rekey asks nothing of the server.
#[test]
fn child_rekey_without_pfs_needs_no_server() {
    let mut sim = Sim::new(5);
    let spec = Spec::default();
    let w = fig12(&mut sim, &spec);
    sim.with_actor(w.peer, |p: &mut Initiator, now| p.start(now))
        .unwrap()
        .unwrap();
    settle(&mut sim);
    let _ = terminal_events(&mut sim, w.terminal);
    let requests = sim
        .actor::<Terminal>(w.terminal)
        .unwrap()
        .counters()
        .requests;
    sim.with_actor(w.peer, |p: &mut Initiator, now| p.rekey_child(now))
        .unwrap()
        .unwrap();
    settle(&mut sim);
    let t_events = terminal_events(&mut sim, w.terminal);
    let rekeyed = terminal_ike(&t_events)
        .into_iter()
        .find_map(|e| match e {
            IkeEvent::ChildSaRekeyed { child, .. } => Some(*child),
            _ => None,
        })
        .expect("the terminal rekeyed the Child SA");
    let p = sim.actor::<Initiator>(w.peer).unwrap();
    let p_child = p.child_sa().unwrap();
    assert_eq!(rekeyed.keys_in, p_child.keys_out);
    let t = sim.actor::<Terminal>(w.terminal).unwrap();
    assert_eq!(t.counters().requests, requests, "no delegation request");
    assert!(t.data_plane().sa(rekeyed.spi_in).is_some());
}

/// No server: the exchange fails with a typed reason, no key is set, and the terminal
/// keeps working (its tables are empty again).
#[test]
fn server_unreachable_fails_cleanly() {
    let mut sim = Sim::new(6);
    let spec = Spec {
        server_up: false,
        ..Spec::default()
    };
    let w = fig12(&mut sim, &spec);
    sim.with_actor(w.peer, |p: &mut Initiator, now| p.start(now))
        .unwrap()
        .unwrap();
    settle(&mut sim);
    let t_events = terminal_events(&mut sim, w.terminal);
    let f = failures(&t_events);
    assert!(!f.is_empty(), "{t_events:?}");
    assert!(
        f.iter().all(|r| matches!(
            r,
            TerminalFailure::ServerUnreachable | TerminalFailure::Timeout
        )),
        "{f:?}"
    );
    let t = sim.actor::<Terminal>(w.terminal).unwrap();
    assert_eq!((t.exchange_count(), t.ike_sa_count()), (0, 0));
}

/// 10% loss, duplication and reordering on every hop: IKE retransmits, the channel's TCP
/// recovers, and the exchange still completes once.
#[test]
fn loss_and_reordering_are_survived() {
    for seed in 10..14 {
        let mut sim = Sim::new(seed);
        let spec = Spec {
            link: deputy::sim::LinkConfig {
                loss: 0.1,
                duplicate: 0.05,
                reorder: 0.1,
                reorder_delay: std::time::Duration::from_millis(20),
                ..Default::default()
            },
            ..Spec::default()
        };
        let w = fig12(&mut sim, &spec);
        sim.with_actor(w.peer, |p: &mut Initiator, now| p.start(now))
            .unwrap()
            .unwrap();
        settle(&mut sim);
        let t_events = terminal_events(&mut sim, w.terminal);
        let children = terminal_ike(&t_events)
            .iter()
            .filter(|e| matches!(e, IkeEvent::ChildSaEstablished { .. }))
            .count();
        assert_eq!(children, 1, "seed {seed}: {t_events:?}");
        let c = sim
            .actor::<Server>(w.server)
            .unwrap()
            .dispatcher()
            .protocol()
            .counters();
        assert_eq!(
            c.diffie_hellman, 1,
            "seed {seed}: one DH, however often asked"
        );
    }
}

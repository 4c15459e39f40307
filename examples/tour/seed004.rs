//! Chapter: seed 004 over IKEv2 — a peer starts IKEv2 toward a weak terminal, which runs the
//! exchange from its own address but hands the heavy steps to a substitution server; then a
//! peer the server's policy database does not know is refused.

use std::time::Duration;

use deputy::ikev2::{Identity, IkeEvent, Initiator, InitiatorConfig};
use deputy::keyx::ike::{Terminal, TerminalEvent};
use deputy::sim::Sim;

use crate::keyx::{
    PEER, SERVER, Server, Spec, TERMINAL, addr, esp_across, fig12_on, peer_ike, peer_plane,
    terminal_events, udp_packet,
};
use crate::{Build, Narrator, err};

fn say(tour: &mut Narrator, events: &[TerminalEvent]) {
    for e in events {
        let text = match e {
            TerminalEvent::ServerConnected => "the channel to the server is up (S1-S2)".into(),
            TerminalEvent::Ike(IkeEvent::IkeSaEstablished { peer_id, suite, .. }) => {
                format!(
                    "IKE SA up with {peer_id} ({:?}, {:?})",
                    suite.encr, suite.group
                )
            }
            TerminalEvent::Ike(IkeEvent::ChildSaEstablished { child, .. }) => format!(
                "Child SA installed in the terminal's data plane (SPI in {:#010x}, out {:#010x})",
                child.spi_in, child.spi_out
            ),
            TerminalEvent::Failed { reason, .. } => format!("exchange refused: {reason:?}"),
            TerminalEvent::Ike(IkeEvent::Failed { reason, .. }) => {
                format!("the IKE SA failed ({reason:?}); the peer hears AUTHENTICATION_FAILED")
            }
            other => format!("{other:?}"),
        };
        tour.note(&text);
    }
}

pub fn run(sim: &mut Sim, tour: &mut Narrator) -> Result<(), String> {
    tour.chapter("seed 004 — key-exchange substitution for a weak terminal (IKEv2)");
    let net = sim.net("keyx-internet", "192.0.2.0/24", 5)?;
    let spec = Spec::default();
    let w = fig12_on(sim, &spec, net);
    tour.note(&format!(
        "peer {PEER} (an unmodified IKEv2 initiator), terminal {TERMINAL}, substitution server {SERVER}"
    ));

    tour.step(
        "S101-S158",
        "the peer sends IKE_SA_INIT to the terminal; start, key generation, authentication and key run between terminal and server",
    );
    sim.with_actor(w.peer, |p: &mut Initiator, now| p.start(now))
        .map_err(err)?
        .map_err(err)?;
    sim.run_for(Duration::from_secs(5)).map_err(err)?;
    tour.packets(sim);
    let events = terminal_events(sim, w.terminal);
    say(tour, &events);
    let peer_child = sim
        .actor::<Initiator>(w.peer)
        .map_err(err)?
        .child_sa()
        .cloned()
        .ok_or("the peer has no Child SA")?;
    let mut peer_plane = peer_plane(sim, peer_child);
    let now = sim.now();
    let ping = udp_packet([192, 0, 2, 20], [192, 0, 2, 10], b"reading: 21.5 C");
    let (opened, size) = sim
        .with_actor(w.terminal, |t: &mut Terminal, _| {
            esp_across(now, t.data_plane_mut(), &mut peer_plane, &ping)
        })
        .map_err(err)?;
    tour.note(&format!(
        "ESP: the terminal protected a {}-byte packet into {size} bytes with its own keys; the peer opened it ({})",
        ping.len(),
        if opened == ping { "intact" } else { "ALTERED" }
    ));
    let c = sim
        .actor::<Server>(w.server)
        .map_err(err)?
        .dispatcher()
        .protocol()
        .counters();
    tour.note(&format!(
        "server: {} Diffie-Hellman, {} proofs, {} peer authenticated, {} SK_d released; the terminal ran none of it",
        c.diffie_hellman, c.proofs, c.authenticated, c.keys_released
    ));

    tour.step(
        "S42-S43",
        "a stranger the policy database does not list tries the same",
    );
    let stranger_ike = {
        let mut ike = peer_ike(&spec);
        ike.local_id = Identity::Fqdn("stranger.example".into());
        ike
    };
    let stranger = Initiator::new(
        InitiatorConfig {
            ike: stranger_ike,
            local: addr("192.0.2.11", 500),
            remote: addr(TERMINAL, 500),
        },
        Box::new(sim.rng("tour/keyx/stranger")),
    )
    .map_err(err)?;
    let stranger = sim.host("stranger", net, "192.0.2.11", stranger)?;
    sim.with_actor(stranger, |p: &mut Initiator, now| p.start(now))
        .map_err(err)?
        .map_err(err)?;
    sim.run_for(Duration::from_secs(5)).map_err(err)?;
    tour.packets(sim);
    say(tour, &terminal_events(sim, w.terminal));
    let t = sim.actor::<Terminal>(w.terminal).map_err(err)?;
    tour.note(&format!(
        "the terminal holds {} established IKE SA (the refused one only lingers to replay its answer)",
        t.established().len()
    ));
    Ok(())
}

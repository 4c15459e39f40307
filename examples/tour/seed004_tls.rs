//! Chapter: seed 004 over TLS 1.3 (the seed's Fig. 14) — a weak terminal opens an HTTPS-style
//! connection from its own address; the substitution server runs the handshake with rustls
//! on its behalf and hands over only the traffic keys; the terminal runs the record layer,
//! and a KeyUpdate goes back to the server for the next key.

use std::time::Duration;

use deputy::keyx::tls::{Terminal, TerminalEvent};
use deputy::sim::Sim;

use crate::tls::{
    PEER, PEER_NAME, SERVER, Server, Spec, TERMINAL, TlsPeer, connect, data_of, fig14_on,
    terminal_events,
};
use crate::{Build, Narrator, err};

fn say(tour: &mut Narrator, events: &[TerminalEvent]) {
    for e in events {
        let text = match e {
            TerminalEvent::ServerConnected => "the channel to the server is up (S1-S2)".into(),
            TerminalEvent::Established { suite, .. } => {
                format!("S331: traffic keys set ({suite:?}); the record layer runs on the terminal")
            }
            TerminalEvent::Data { data, .. } => {
                format!("the terminal read {:?}", String::from_utf8_lossy(data))
            }
            TerminalEvent::TicketRelayed { .. } => {
                "a NewSessionTicket went to the server (for the next connection)".into()
            }
            TerminalEvent::KeysUpdated { send, receive, .. } => {
                format!("KeyUpdate: next keys from the server (send {send}, receive {receive})")
            }
            other => format!("{other:?}"),
        };
        tour.note(&text);
    }
}

pub fn run(sim: &mut Sim, tour: &mut Narrator) -> Result<(), String> {
    tour.chapter(
        "seed 004 over TLS 1.3 — the handshake at the server, the records on the terminal",
    );
    let net = sim.net("tls-internet", "192.0.2.0/24", 5)?;
    let w = fig14_on(sim, &Spec::default(), Some(net));
    tour.note(&format!(
        "peer {PEER} ({PEER_NAME}, rustls, unmodified), terminal {TERMINAL}, substitution server {SERVER}"
    ));

    tour.step(
        "S321-S331",
        "the terminal connects; start, key generation (the ClientHello), authentication (the peer's flight) and key run between terminal and server",
    );
    let conn = connect(sim, &w);
    sim.run_for(Duration::from_secs(3)).map_err(err)?;
    tour.packets(sim);
    say(tour, &terminal_events(sim, w.terminal));

    tour.step(
        "S17",
        "records both ways, sealed and opened by the terminal alone",
    );
    sim.with_actor(w.terminal, |t: &mut Terminal, now| {
        t.send(now, conn, b"GET /reading HTTP/1.1\r\n\r\n")
    })
    .map_err(err)?
    .map_err(err)?;
    sim.run_for(Duration::from_millis(100)).map_err(err)?;
    sim.with_actor(w.peer, |p: &mut TlsPeer, _| {
        let id = p.only();
        p.send(id, b"HTTP/1.1 200 OK\r\n\r\n21.5 C");
    })
    .map_err(err)?;
    sim.run_for(Duration::from_secs(1)).map_err(err)?;
    tour.packets(sim);
    let events = terminal_events(sim, w.terminal);
    say(tour, &events);
    let got = data_of(&events);
    if got.is_empty() {
        return Err("the terminal read nothing".into());
    }

    tour.step(
        "post-handshake",
        "the peer asks for a KeyUpdate; the terminal relays it and answers with its own",
    );
    sim.with_actor(w.peer, |p: &mut TlsPeer, _| {
        let id = p.only();
        p.key_update(id)
    })
    .map_err(err)?;
    sim.run_for(Duration::from_secs(1)).map_err(err)?;
    tour.packets(sim);
    say(tour, &terminal_events(sim, w.terminal));
    let c = sim
        .actor::<Server>(w.server)
        .map_err(err)?
        .dispatcher()
        .protocol()
        .counters();
    tour.note(&format!(
        "server: {} handshake, {} peer authenticated, {} key release, {} key updates, {} tickets; it saw no application data",
        c.handshakes, c.authenticated, c.keys_released, c.key_updates, c.tickets
    ));
    Ok(())
}

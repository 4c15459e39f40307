//! Chapter: seed 001 — an inline key-exchange proxy, a bump in the wire with no address of
//! its own, runs IKEv2 for IKE-less terminals behind it with their addresses and hands
//! them the keys in sealed key transfers; the terminals do ESP themselves.
//!
//! Two worlds built by tests/common/inline.rs: in the first the peer starts (Fig. 3), in
//! the second the terminal does (Fig. 4), a policy row discards a datagram (S1→S2), and a
//! second terminal gets its own IKE SA and its own keys from the same peer.

use std::time::Duration;

use deputy::ikev2::IkeEvent;
use deputy::ipsec::{Action, Direction, Policy, PortRange, Selector};
use deputy::keyx::ikeless::{Sent, TerminalEvent};
use deputy::keyx::inline::{InlineProxy, ProxyEvent};
use deputy::keyx::transfer::Envelope;
use deputy::sim::{DatagramProbe, LinkConfig, NodeId, Sim};

use crate::inline::{
    PEER, Spec, T1, T2, World, echo_reply, key, peer_ike_events, peer_received, peer_send,
    peer_start, ping, proxy_events, received, terminal_events, terminal_send, world,
};
use crate::{Build, Narrator, err};

fn say_proxy(tour: &mut Narrator, events: &[ProxyEvent]) {
    for e in events {
        let text = match e {
            ProxyEvent::Negotiating {
                terminal,
                peer,
                initiator,
            } => format!(
                "proxy: negotiating with {peer} as terminal {terminal} ({})",
                if *initiator {
                    "S17: IKEv2 initiator from the terminal's address"
                } else {
                    "S7: IKEv2 responder at the terminal's address"
                }
            ),
            ProxyEvent::SaStored {
                terminal, spi_in, ..
            } => format!("proxy: SA pair stored for terminal {terminal} (SPI in {spi_in:#010x})"),
            ProxyEvent::KeysPushed {
                terminal, spi_in, ..
            } => format!(
                "proxy: keys pushed to terminal {terminal} in a sealed install (SPI in {spi_in:#010x})"
            ),
            ProxyEvent::KeysAcknowledged { terminal, .. } => {
                format!("proxy: terminal {terminal} acknowledged the install")
            }
            ProxyEvent::TerminalBound {
                terminal, address, ..
            } => format!("proxy: terminal {terminal} announced itself from {address}"),
            other => format!("proxy: {other:?}"),
        };
        tour.note(&text);
    }
}

fn say_terminal(tour: &mut Narrator, who: &str, events: &[TerminalEvent]) {
    for e in events {
        let text = match e {
            TerminalEvent::Announced => "answered the proxy's solicit with its boot nonce".into(),
            TerminalEvent::KeysInstalled {
                spi_in, spi_out, ..
            } => format!(
                "installed the SA pair in its data plane (SPI in {spi_in:#010x}, out {spi_out:#010x})"
            ),
            TerminalEvent::Received { packet, protected } => format!(
                "received a {}-byte packet {}",
                packet.len(),
                if *protected {
                    "through ESP"
                } else {
                    "in clear"
                }
            ),
            // The data plane's own events (acquires, installs) repeat the above.
            TerminalEvent::Ipsec(_) => continue,
            other => format!("{other:?}"),
        };
        tour.note(&format!("{who}: {text}"));
    }
}

/// A seed 001 world on its own networks, 5 ms per link.
fn build(sim: &mut Sim, n: u8, spec: Spec) -> World {
    let spec = Spec {
        link: LinkConfig::with_latency(Duration::from_millis(5)),
        internet: (format!("seed001-internet-{n}"), "192.0.2.0/24".into()),
        lan: (format!("seed001-lan-{n}"), "198.51.100.0/24".into()),
        ..spec
    };
    world(sim, &spec)
}

/// The IKE SAs the peer established, by the terminal address they are with.
fn ike_sas_with(sim: &mut Sim, w: &World) -> Vec<String> {
    peer_ike_events(sim, w)
        .iter()
        .filter_map(|e| match e {
            IkeEvent::IkeSaEstablished { remote, .. } => Some(remote.ip().to_string()),
            _ => None,
        })
        .collect()
}

fn installs(events: &[TerminalEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            TerminalEvent::KeysInstalled { spi_in, .. } => Some(*spi_in),
            _ => None,
        })
        .collect()
}

/// The terminal `t` of `w` sends an echo request to the peer that has no SA yet (Fig. 4):
/// held, triggered, negotiated, installed, sent.
fn start_from(
    sim: &mut Sim,
    tour: &mut Narrator,
    w: &World,
    (who, t, addr): (&str, NodeId, &str),
) -> Result<Vec<TerminalEvent>, String> {
    match terminal_send(sim, t, ping(addr, PEER, 1)) {
        Sent::Held(acquire) => tour.note(&format!(
            "{who}: no SA toward {PEER}: the echo request is held (acquire {acquire}); a sealed trigger goes to the peer's address"
        )),
        other => return Err(format!("seed 001: expected the packet held, got {other:?}")),
    }
    sim.run_for(Duration::from_secs(2)).map_err(err)?;
    tour.packets(sim);
    say_proxy(tour, &proxy_events(sim, w));
    let events = terminal_events(sim, t);
    say_terminal(tour, who, &events);
    Ok(events)
}

pub fn run(sim: &mut Sim, tour: &mut Narrator) -> Result<(), String> {
    tour.chapter("seed 001 — an inline proxy runs IKE for terminals that have none");
    let w = build(
        sim,
        1,
        Spec {
            peer_initiates_to: Some(1),
            ..Spec::default()
        },
    );
    tour.note(&format!(
        "peer {PEER} (IKEv2 and ESP) ─ internet ─ [proxy, no address] ─ lan ─ terminal {T1} (ESP, no IKE)"
    ));
    tour.note("the proxy bridges: a packet that crosses it is listed once on each side");

    tour.step(
        "Fig. 3, S1-S9",
        "the peer starts IKEv2 toward the terminal's address; the proxy on the path answers as the terminal, stores the SA pair and pushes the keys sealed; the terminal installs them and acknowledges",
    );
    peer_start(sim, &w);
    sim.run_for(Duration::from_secs(2)).map_err(err)?;
    tour.packets(sim);
    say_proxy(tour, &proxy_events(sim, &w));
    say_terminal(tour, "terminal", &terminal_events(sim, w.terminals[0]));
    tour.note(&format!(
        "the peer's IKE SA is with {:?}: it never saw the proxy",
        ike_sas_with(sim, &w)
    ));

    tour.step(
        "",
        "the peer pings the terminal through ESP and the terminal answers through ESP",
    );
    peer_send(sim, &w, ping(PEER, T1, 1));
    sim.run_for(Duration::from_secs(1)).map_err(err)?;
    let got = received(&terminal_events(sim, w.terminals[0]));
    let (request, protected) = got.first().ok_or("seed 001: the echo did not arrive")?;
    if !protected {
        return Err("seed 001: the echo arrived in clear".into());
    }
    let reply = echo_reply(request).ok_or("seed 001: not an echo request")?;
    terminal_send(sim, w.terminals[0], reply);
    sim.run_for(Duration::from_secs(1)).map_err(err)?;
    tour.packets(sim);
    let answered = peer_received(sim, &w).iter().filter(|(_, p)| *p).count();
    tour.note(&format!(
        "the terminal opened the request with the pushed keys; the peer opened {answered} protected reply"
    ));

    // The second world: the peer responds; a discard row; two terminals.
    let w = build(
        sim,
        2,
        Spec {
            terminals: vec![(1, T1.into()), (2, T2.into())],
            // Fig. 2's row 3: UDP from the Internet to the terminals' port 9 is discarded.
            proxy: |c| {
                if let Ok(s) = Selector::parse("192.0.2.0/24", "198.51.100.0/24") {
                    let s = s.protocol(17).dst_ports(PortRange::single(9));
                    c.policy
                        .push(Policy::new(s, Direction::Inbound, Action::Discard));
                }
            },
            ..Spec::default()
        },
    );
    tour.step(
        "Fig. 4, S11-S19",
        &format!(
            "a new world: terminals {T1} and {T2} behind the proxy, the peer {PEER} waits; terminal 1 sends first (the proxy has not heard its boot nonce yet: it solicits, the terminal announces, then the trigger counts)"
        ),
    );
    start_from(sim, tour, &w, ("terminal 1", w.terminals[0], T1))?;
    let at_peer = peer_received(sim, &w);
    tour.note(&format!(
        "the peer received {} packet(s), {} through ESP: the held echo request left protected, never in clear",
        at_peer.len(),
        at_peer.iter().filter(|(_, p)| *p).count()
    ));

    tour.step(
        "S1-S2",
        "a host on the Internet sends a UDP datagram to the terminal's port 9: the policy row discards it",
    );
    let web = sim.host(
        "seed001-web",
        w.internet,
        "192.0.2.80",
        DatagramProbe::new(9),
    )?;
    let before = sim.actor::<InlineProxy>(w.proxy).map_err(err)?.stats();
    sim.with_actor(web, |p: &mut DatagramProbe, _| {
        p.send(
            format!("{T1}:9").parse().map_err(err)?,
            b"let me in".to_vec(),
        )
        .map_err(err)
    })
    .map_err(err)??;
    sim.run_for(Duration::from_secs(1)).map_err(err)?;
    tour.packets(sim);
    let after = sim.actor::<InlineProxy>(w.proxy).map_err(err)?.stats();
    let reached = received(&terminal_events(sim, w.terminals[0])).len();
    tour.note(&format!(
        "dropped inside the proxy, never on the LAN: policy drops {} → {}; the terminal received {reached} packet(s)",
        before.policy_drops, after.policy_drops
    ));

    tour.step(
        "¶0032",
        "terminal 2 talks to the same peer: its own IKE SA, from its own address, and its own keys",
    );
    let t2 = start_from(sim, tour, &w, ("terminal 2", w.terminals[1], T2))?;
    let spi2 = installs(&t2)
        .first()
        .copied()
        .ok_or("seed 001: terminal 2 installed nothing")?;
    tour.note(&format!(
        "the peer holds IKE SAs with {:?}",
        ike_sas_with(sim, &w)
    ));
    let install_for_t2 = w
        .lan_tap
        .seen()
        .into_iter()
        .find(|p| p.dst.to_string() == T2 && p.transfer(Some(deputy::keyx::transfer::msg::INSTALL)))
        .ok_or("seed 001: no install for terminal 2")?;
    let env = Envelope::parse(&install_for_t2.payload).map_err(err)?;
    tour.note(&format!(
        "terminal 2's install (SPI in {spi2:#010x}) opens with its key: {}; with terminal 1's: {}",
        env.open(&key(2)).is_ok(),
        env.open(&key(1)).is_ok()
    ));
    Ok(())
}

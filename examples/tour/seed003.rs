//! Chapter: seed 003 — the operator network runs IKEv2 for subscribers that have none: the
//! service control at the edge diverts their key exchange, by the profile the
//! authentication server installed at attach, into an ESP link to its key-exchange proxy,
//! which negotiates as the subscriber (on seed 001's engine) and sends the keys back
//! sealed; the service control rewrites that key transfer toward the subscriber.
//!
//! Two worlds built by tests/common/operator.rs inside the tour's simulator: in the first
//! the subscriber starts (Figs. 12-14) and later moves to another service control; in the
//! second the peer starts (Fig. 16).

use std::time::Duration;

use deputy::ikev2::IkeEvent;
use deputy::keyx::ikeless::{Sent, TerminalEvent};
use deputy::keyx::inline::ProxyEvent;
use deputy::keyx::operator::{AuthServer, OperatorEvent};
use deputy::sim::{RawIp, Sim};

use crate::inline::{
    Ike, Peer, Spec, echo_reply, ping, received, terminal_actor, terminal_events, terminal_send,
};
use crate::operator::{Op, PEER};
use crate::{Narrator, err};

const T1: &str = "10.1.0.5";
const MOVED: &str = "10.2.0.5";

fn say_operator(tour: &mut Narrator, who: &str, events: &[OperatorEvent]) {
    for e in events {
        let text = match e {
            OperatorEvent::LinkUp { peer } => format!("link to {peer} up (ESP, keys from IKEv2)"),
            OperatorEvent::ProfileInstalled { subscriber } => {
                format!("holds subscriber {subscriber}'s profile: its IKE is diverted")
            }
            OperatorEvent::ProfileWithdrawn { subscriber } => {
                format!("withdrew subscriber {subscriber}'s profile: nothing of it is diverted")
            }
            OperatorEvent::ProfileSent { control } => {
                format!("sent the profile to the service control at {control}")
            }
            OperatorEvent::Proxy(ProxyEvent::Negotiating {
                terminal,
                peer,
                initiator,
            }) => format!(
                "negotiating with {peer} as subscriber {terminal} ({})",
                if *initiator {
                    "IKEv2 initiator from the subscriber's address"
                } else {
                    "IKEv2 responder at the subscriber's address"
                }
            ),
            OperatorEvent::Proxy(ProxyEvent::KeysPushed {
                terminal, spi_in, ..
            }) => format!(
                "keys pushed to subscriber {terminal} in a sealed key transfer (SPI in {spi_in:#010x})"
            ),
            OperatorEvent::Proxy(ProxyEvent::KeysAcknowledged { terminal, .. }) => {
                format!("subscriber {terminal} acknowledged the keys")
            }
            // The engine's other reports (bindings, stores) repeat the above.
            OperatorEvent::Proxy(_) => continue,
            other => format!("{other:?}"),
        };
        tour.note(&format!("{who}: {text}"));
    }
}

fn say_subscriber(tour: &mut Narrator, events: &[TerminalEvent]) -> usize {
    let mut installed = 0;
    for e in events {
        let text = match e {
            TerminalEvent::KeysInstalled {
                spi_in, spi_out, ..
            } => {
                installed += 1;
                format!(
                    "installed the SA pair (SPI in {spi_in:#010x}, out {spi_out:#010x}) it never negotiated"
                )
            }
            TerminalEvent::Received { packet, protected } => format!(
                "received a {}-byte packet {}",
                packet.len(),
                if *protected {
                    "through ESP"
                } else {
                    "in clear"
                }
            ),
            TerminalEvent::Announced => "answered the proxy's solicit with its boot nonce".into(),
            TerminalEvent::Ipsec(_) => continue,
            other => format!("{other:?}"),
        };
        tour.note(&format!("subscriber: {text}"));
    }
    installed
}

/// What the peer's data plane handed out, taken: how many packets came through ESP.
fn peer_protected(op: &mut Op) -> Result<usize, String> {
    let peer = op.peer.ok_or("seed 003: no peer")?;
    let got = op
        .sim
        .with_actor(peer, |p: &mut Peer, _| std::mem::take(&mut p.received))
        .map_err(err)?;
    Ok(got.iter().filter(|(_, p)| *p).count())
}

fn run_for(op: &mut Op, tour: &mut Narrator, secs: u64) -> Result<(), String> {
    op.sim.run_for(Duration::from_secs(secs)).map_err(err)?;
    tour.packets(&op.sim);
    Ok(())
}

/// Subscriber `n` pings the peer it has no SA with: held, the proxy request diverted.
fn subscriber_starts(
    op: &mut Op,
    tour: &mut Narrator,
    n: usize,
    from: &str,
) -> Result<usize, String> {
    let t = op.subscribers[n].1;
    match terminal_send(&mut op.sim, t, ping(from, PEER, 1)) {
        Sent::Held(acquire) => tour.note(&format!(
            "subscriber: no SA toward {PEER}: the echo request is held (acquire {acquire}); a sealed trigger goes to the peer's port 500"
        )),
        other => return Err(format!("seed 003: expected the packet held, got {other:?}")),
    }
    run_for(op, tour, 5)?;
    let control = if n == 0 { 0 } else { 1 };
    let sc = op.sc_events(control);
    say_operator(tour, "service control", &sc);
    let pe = op.proxy_events(control);
    say_operator(tour, "proxy", &pe);
    let installed = say_subscriber(tour, &terminal_events(&mut op.sim, t));
    Ok(installed)
}

fn story(a: &mut Op, tour: &mut Narrator) -> Result<(), String> {
    a.proxy("203.0.113.10", &[1]);
    a.proxy("203.0.113.11", &[1]);
    a.control(1, "203.0.113.10");
    a.control(2, "203.0.113.11");
    a.subscriber(1, 0, T1, PEER);
    a.peer(None);
    tour.note(&format!(
        "subscriber {T1} (ESP, no IKE) ─ access ─ [service control 1] ═ core ═ proxy 203.0.113.10; [service control 2] ═ proxy 203.0.113.11; auth server 203.0.113.20; peer {PEER} (IKEv2 and ESP) behind a router"
    ));

    tour.step(
        "¶0026",
        "the service controls bring up their links: IKEv2 to their nearest proxy, then ESP in tunnel mode (the seed's IP-in-IP, authenticated)",
    );
    a.finish();
    tour.packets(&a.sim);
    for c in 0..2 {
        let evs = a.sc_events(c);
        say_operator(tour, &format!("service control {}", c + 1), &evs);
        let evs = a.proxy_events(c);
        say_operator(tour, &format!("proxy {}", c + 1), &evs);
    }

    tour.step(
        "Fig. 9, attach",
        "the subscriber attaches at service control 1: the authentication server sends its service profile over the secure channel",
    );
    a.attach(1, 0);
    tour.packets(&a.sim);
    let auth = a.auth.ok_or("seed 003: no auth server")?;
    let sent: Vec<OperatorEvent> = crate::events_of(&mut a.sim, auth)?;
    say_operator(tour, "auth server", &sent);
    let evs = a.sc_events(0);
    say_operator(tour, "service control 1", &evs);

    tour.step(
        "Figs. 12-14",
        "the subscriber starts: its proxy request is diverted into the link, the proxy negotiates with the peer as the subscriber, and its key transfer (Fig. 14(A), in the link) leaves the service control as IP-in-IP from its access address (Fig. 14(B))",
    );
    let installed = subscriber_starts(a, tour, 0, T1)?;
    if installed != 1 {
        return Err(format!(
            "seed 003: the subscriber installed {installed} SA pairs"
        ));
    }
    let rewritten = a.controls[0]
        .access_tap
        .seen()
        .into_iter()
        .find(|p| p.protocol == 4)
        .ok_or("seed 003: no key transfer on the access network")?;
    let inner = deputy::ipsec::parse_packet(&rewritten.payload).map_err(err)?;
    tour.note(&format!(
        "on the access network: outer {} → {}, inner {} → {} port {:?}, sealed for the subscriber",
        rewritten.src,
        rewritten.dst,
        inner.src,
        inner.dst,
        inner.dst_port.unwrap_or(0)
    ));
    let s = a.sc(0).stats();
    tour.note(&format!(
        "service control 1: {} diverted, {} relayed as the subscriber, {} key transfer(s) rewritten",
        s.diverted, s.relayed, s.transfers
    ));
    tour.note(&format!(
        "the peer opened {} protected packet(s): the held echo request left through ESP",
        peer_protected(a)?
    ));

    // The second world, for the peer's start.
    let mut b = Op::within(std::mem::replace(&mut a.sim, Sim::new(0)), "seed003-b-");
    let r = peer_starts(&mut b, tour);
    a.sim = b.sim;
    r?;

    tour.step(
        "mobility",
        &format!(
            "back in the first world: the subscriber moves to service control 2's cell and gets {MOVED}; the authentication server installs its profile there and withdraws it at service control 1"
        ),
    );
    let spec = Spec {
        peer_addr: PEER.into(),
        ..Spec::default()
    };
    let moved = terminal_actor(&a.sim, &spec, 1, MOVED, "subscriber1-moved");
    let access2 = a.controls[1].access;
    let node = a
        .sim
        .add_host(
            &format!("{}subscriber1-at-sc2", a.tag),
            access2,
            MOVED.parse().map_err(err)?,
            moved,
        )
        .map_err(err)?;
    a.sim.set_raw_ip(node, RawIp::All).map_err(err)?;
    a.subscribers.push((1, node, MOVED.parse().map_err(err)?));
    let sc2 = a.controls[1].core_addr;
    let at = vec![MOVED.parse().map_err(err)?];
    a.sim
        .command(auth, |s: &mut AuthServer, _| s.attach_at(1, sc2, at))
        .map_err(err)?;
    run_for(a, tour, 1)?;
    for c in 0..2 {
        let evs = a.sc_events(c);
        say_operator(tour, &format!("service control {}", c + 1), &evs);
    }
    let diverted_at_old = a.sc(0).stats().diverted;
    tour.step(
        "",
        "from its new address the subscriber starts again: service control 2 diverts to its own nearest proxy, which negotiates fresh keys",
    );
    let installed = subscriber_starts(a, tour, 1, MOVED)?;
    if installed != 1 {
        return Err(format!("seed 003: after the move, {installed} SA pairs"));
    }
    tour.note(&format!(
        "service control 1 diverted nothing more ({diverted_at_old} before, {} now)",
        a.sc(0).stats().diverted
    ));
    Ok(())
}

/// Fig. 16: the peer starts IKEv2 toward the subscriber's address.
fn peer_starts(b: &mut Op, tour: &mut Narrator) -> Result<(), String> {
    tour.step(
        "Fig. 16",
        "a second world: the peer starts IKEv2 toward a subscriber; its service control diverts the peer's IKE into the link, the proxy answers as the subscriber and pushes the keys the subscriber never asked for",
    );
    b.proxy("203.0.113.10", &[1]);
    b.control(1, "203.0.113.10");
    b.subscriber(1, 0, T1, PEER);
    b.peer(Some(T1));
    b.finish();
    b.attach(1, 0);
    tour.packets(&b.sim);
    let peer = b.peer.ok_or("seed 003: no peer")?;
    b.sim
        .command(peer, |p: &mut Peer, now| {
            if let Ike::Initiator(i) = &mut p.ike {
                i.start(now)?;
            }
            p.pump(now);
            Ok(())
        })
        .map_err(err)?;
    run_for(b, tour, 5)?;
    let pe = b.proxy_events(0);
    say_operator(tour, "proxy", &pe);
    let t = b.subscribers[0].1;
    say_subscriber(tour, &terminal_events(&mut b.sim, t));
    let ike = b
        .sim
        .with_actor(peer, |p: &mut Peer, _| p.ike_events.clone())
        .map_err(err)?;
    let with: Vec<String> = ike
        .iter()
        .filter_map(|e| match e {
            IkeEvent::IkeSaEstablished { remote, .. } => Some(remote.ip().to_string()),
            _ => None,
        })
        .collect();
    tour.note(&format!(
        "the peer's IKE SA is with {with:?}: it never saw the proxy"
    ));

    tour.step(
        "",
        "the peer pings the subscriber through ESP and the subscriber answers through ESP",
    );
    b.sim
        .command(peer, |p: &mut Peer, now| p.send(now, &ping(PEER, T1, 2)))
        .map_err(err)?;
    run_for(b, tour, 1)?;
    let got = received(&terminal_events(&mut b.sim, t));
    let (request, protected) = got.first().ok_or("seed 003: the echo did not arrive")?;
    if !protected {
        return Err("seed 003: the echo arrived in clear".into());
    }
    let reply = echo_reply(request).ok_or("seed 003: not an echo request")?;
    terminal_send(&mut b.sim, t, reply);
    run_for(b, tour, 1)?;
    tour.note(&format!(
        "the peer opened {} protected reply",
        peer_protected(b)?
    ));
    Ok(())
}

pub fn run(sim: &mut Sim, tour: &mut Narrator) -> Result<(), String> {
    tour.chapter("seed 003 — an operator network runs IKE for subscribers that have none");
    // The world owns a simulator: it is built inside the tour's, which it hands back.
    let mut a = Op::within(std::mem::replace(sim, Sim::new(0)), "seed003-");
    let r = story(&mut a, tour);
    *sim = a.sim;
    r
}

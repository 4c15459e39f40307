//! Chapter: seed 002 — two devices on different LANs behind NAPT routers meet through a
//! rendezvous server and connect peer to peer, only with the accepting device's password.

use std::time::Duration;

use deputy::rendezvous::{Acceptor, Issuer, RendezvousEvent, RendezvousServer};
use deputy::sim::scenario::{
    BEHAVIOURS, DEVICE, Outcome, World, WorldConfig, cell, expected_direct, label, nat_matrix,
};
use deputy::sim::{NodeId, Sim};

use crate::{Narrator, err};

/// The rendezvous events `node` reported since `from` (an index into its event list).
fn news(sim: &Sim, node: NodeId, from: &mut usize) -> Vec<RendezvousEvent> {
    let all = World::events(sim, node);
    let new = all[(*from).min(all.len())..].to_vec();
    *from = all.len();
    new
}

fn say(tour: &mut Narrator, who: &str, events: &[RendezvousEvent]) {
    for e in events {
        let text = match e {
            RendezvousEvent::DeviceRegistered { device, addr } => {
                format!("device {device} registered at {addr}")
            }
            RendezvousEvent::DeviceMoved { device, from, to } => {
                format!("device {device} moved {from} → {to}")
            }
            RendezvousEvent::RequestForwarded { request, device } => {
                format!("request {request:#x}: device {device} found, notice sent")
            }
            RendezvousEvent::RequestRefused { reason, .. } => {
                format!("request refused: {reason:?}")
            }
            RendezvousEvent::RequestFinished { connected, .. } => {
                format!("request finished (devices connected: {connected})")
            }
            RendezvousEvent::Registered { public } => {
                format!("registration acknowledged; the server sees me at {public}")
            }
            RendezvousEvent::ConnectionRequested { issuer, .. } => {
                format!("connection request from {issuer}")
            }
            RendezvousEvent::PasswordRefused { issuer, reason, .. } => {
                format!("refused {issuer}: {reason:?}")
            }
            RendezvousEvent::Refused { reason, .. } => format!("refused: {reason:?}"),
            RendezvousEvent::PeerConnected {
                local,
                remote,
                attempt,
                ..
            } => format!("direct connection up: {local} ⇄ {remote} (attempt {attempt})"),
            RendezvousEvent::PeerData { data, .. } => {
                format!("received {:?}", String::from_utf8_lossy(data))
            }
            RendezvousEvent::PeerClosed { .. } => "the peer closed the connection".into(),
            RendezvousEvent::PeerFailed { reason, .. } => {
                format!("direct connection failed: {reason:?}")
            }
        };
        tour.note(&format!("{who}: {text}"));
    }
}

/// How far each of a world's three event lists has been told.
#[derive(Default)]
struct Cursor {
    server: usize,
    issuer: usize,
    acceptor: usize,
}

impl Cursor {
    /// Print the packets carried so far, then what each node reported since last time.
    fn tell(&mut self, sim: &Sim, w: &World, tour: &mut Narrator) {
        tour.packets(sim);
        say(tour, "server", &news(sim, w.server, &mut self.server));
        say(tour, "issuer", &news(sim, w.issuer, &mut self.issuer));
        say(tour, "acceptor", &news(sim, w.acceptor, &mut self.acceptor));
    }

    /// Let the network run for `ms` milliseconds, then [`Cursor::tell`].
    fn settle(
        &mut self,
        sim: &mut Sim,
        w: &World,
        tour: &mut Narrator,
        ms: u64,
    ) -> Result<(), String> {
        sim.run_for(Duration::from_millis(ms)).map_err(err)?;
        self.tell(sim, w, tour);
        Ok(())
    }
}

/// The world's rendezvous server, to read its directory and counters.
fn server_of<'a>(sim: &'a Sim, w: &World) -> Result<&'a RendezvousServer, String> {
    sim.actor::<RendezvousServer>(w.server).map_err(err)
}

/// Run until `done` (at most 10 s of virtual time).
fn until(sim: &mut Sim, done: impl FnMut(&Sim) -> bool) -> Result<(), String> {
    let deadline = sim.now() + Duration::from_secs(10);
    if sim.run_until_cond(deadline, done).map_err(err)? {
        Ok(())
    } else {
        Err("the story stalled".into())
    }
}

pub fn run(sim: &mut Sim, tour: &mut Narrator) -> Result<(), String> {
    tour.chapter("seed 002 — a rendezvous server for devices behind NAT");
    let w = World::build(
        sim,
        WorldConfig {
            static_mapping: true,
            name_prefix: "s002-".into(),
            ..WorldConfig::default()
        },
    )?;
    let mut cursor = Cursor::default();
    tour.note("issuer 192.168.1.11 on its LAN behind NAPT router 4.17.168.2 (static entry 5000 → :1600, Fig. 6);");
    tour.note("acceptor (device 2133) 192.168.1.3 on another LAN 192.168.1.0/24 behind NAPT router 202.204.16.13;");
    tour.note("rendezvous server 130.74.23.6: UDP 1200, issuer streams 1201, device streams 1300.");
    tour.note("Everyone trusts \"rendezvous CA\", which certifies the server and device 2133.");

    tour.step(
        "S202",
        "The acceptor registers over UDP: its device ID, a timestamp and a nonce, MAC'd with \
         its registration key. The server records the address the datagram came from — the \
         router's public address and port — and acknowledges (MAC'd). It repeats every 20–26 s.",
    );
    cursor.settle(sim, &w, tour, 500)?;
    let entry = server_of(sim, &w)?
        .lookup(DEVICE, sim.now())
        .ok_or("the acceptor did not register")?;
    tour.note(&format!("directory (Fig. 9): {DEVICE} → {}", entry.addr));

    tour.step(
        "S203",
        "The issuer opens a stream to the server and runs the secure channel (server \
         certificate from the CA), then sends the connection request: device ID 2133, its \
         X25519 share, a probe token and its static mapping 4.17.168.2:5000. A UDP probe shows \
         the server the issuer's public UDP address. The password stays with the issuer.",
    );
    let session = w.connect(sim, b"2133-secret")?;
    let server = w.server;
    until(sim, |s| {
        World::events(s, server)
            .iter()
            .any(|e| matches!(e, RendezvousEvent::RequestForwarded { .. }))
    })?;
    tour.packets(sim);
    tour.step(
        "S204–S205",
        "The server finds 2133 in the directory and sends the connection-request notice (MAC'd) \
         over UDP to the registered address — a reply to the registration, so the acceptor's \
         router lets it in.",
    );
    let acceptor = w.acceptor;
    until(sim, |s| {
        s.actor::<Acceptor>(acceptor)
            .is_ok_and(|a| a.stats().notices > 0)
    })?;
    cursor.tell(sim, &w, tour);
    tour.step(
        "S206",
        "The acceptor opens its own stream and channel, presenting its device certificate; \
         the server hands the request only to the genuine device. The acceptor answers with \
         its own X25519 share, signed with its device key; the server relays it to the issuer.",
    );
    until(sim, |s| {
        World::events(s, acceptor)
            .iter()
            .any(|e| matches!(e, RendezvousEvent::ConnectionRequested { .. }))
    })?;
    cursor.tell(sim, &w, tour);
    tour.step(
        "S207",
        "The issuer checks the acceptor's certificate and signature, seals the password under \
         a key only the two devices share, and sends it; the server relays 81 opaque bytes. \
         The acceptor checks it in constant time and answers Proceed.",
    );
    until(sim, |s| {
        s.actor::<Acceptor>(acceptor)
            .is_ok_and(|a| a.stats().password_checks > 0)
    })?;
    tour.packets(sim);
    tour.step(
        "S208",
        "The issuer measured the round trip (SealedPassword → Proceed), sends Sync and starts \
         RTT/2 later; the acceptor starts when Sync arrives. The acceptor's communication \
         request (Punch) reaches the issuer through the static mapping; acknowledgments prove \
         the path both ways, and the devices' own channel handshake follows on it. Both tell \
         the server the outcome and close their streams.",
    );
    let outcome = w.wait(sim, session, Duration::from_secs(30))?;
    cursor.settle(sim, &w, tour, 100)?;
    if !matches!(outcome, Outcome::Connected { .. }) {
        return Err(format!("the devices did not connect: {outcome}"));
    }

    tour.step(
        "S209",
        "Data flows directly between the routers' public addresses, inside the devices' own \
         channel (PSK from their Diffie-Hellman): the server carries none of it and could \
         read none of it.",
    );
    sim.with_actor(w.issuer, |i: &mut Issuer, now| {
        i.send(now, session, b"Hello from the issuer")
    })
    .map_err(err)?
    .map_err(err)?;
    sim.with_actor(w.acceptor, |a: &mut Acceptor, now| {
        a.send(now, session, b"Hello from device 2133")
    })
    .map_err(err)?
    .map_err(err)?;
    cursor.settle(sim, &w, tour, 200)?;

    tour.step(
        "S207",
        "Someone tries a wrong password: refused, and the acceptor backs off (1 s, doubling per \
         failure from that issuer, and device-wide after five). The server remembers the \
         back-off, so an immediate retry is refused without waking the device.",
    );
    for guess in [&b"letmein"[..], b"letmein2"] {
        let s = w.connect(sim, guess)?;
        let o = w.wait(sim, s, Duration::from_secs(10))?;
        tour.note(&format!(
            "password {:?}: {o}",
            String::from_utf8_lossy(guess)
        ));
    }
    cursor.settle(sim, &w, tour, 100)?;
    let stats = server_of(sim, &w)?.stats();
    tour.note(&format!(
        "server counters: {} registrations, {} notices, {} requests rate-limited, {} connected",
        stats.registrations, stats.notices, stats.rate_limited_requests, stats.connected
    ));

    hole_punching(sim, tour)?;
    matrix(tour)
}

/// Without a static mapping: both devices punch at once.
fn hole_punching(sim: &mut Sim, tour: &mut Narrator) -> Result<(), String> {
    tour.step(
        "S208",
        "Beyond the seed: no static mapping. Same LANs and addresses (a second copy of the \
         world), typical home routers (endpoint-independent mapping, address-and-port-dependent \
         filtering). The issuer's probe showed the server its public UDP address; both devices \
         punch toward each other at the same moment, so each router sees the other's packets \
         as replies.",
    );
    let w = World::build(
        sim,
        WorldConfig {
            name_prefix: "s002b-".into(),
            ..WorldConfig::default()
        },
    )?;
    sim.run_for(Duration::from_millis(500)).map_err(err)?;
    tour.packets(sim);
    let session = w.connect(sim, b"2133-secret")?;
    let outcome = w.wait(sim, session, Duration::from_secs(30))?;
    Cursor::default().settle(sim, &w, tour, 100)?;
    if !matches!(outcome, Outcome::Connected { .. }) {
        return Err(format!("hole punching failed: {outcome}"));
    }
    Ok(())
}

/// The NAT matrix, each case in its own simulator (not part of the tour's capture).
fn matrix(tour: &mut Narrator) -> Result<(), String> {
    tour.step(
        "",
        "The NAT matrix: the whole S202–S209 flow for every pair of RFC 4787 behaviours on the \
         issuer's (rows) and the acceptor's (columns) router, without a static mapping. \
         ✓n: connected directly in attempt n (attempts 2–3 add the birthday technique: 256 \
         extra sockets and 1,024 sprayed probes); ✗: failed cleanly after three attempts. \
         Each case runs in its own simulator.",
    );
    let mut header: Vec<String> = vec!["issuer ↓ / acceptor →".into()];
    header.extend(BEHAVIOURS.iter().map(|b| label(*b)));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut mismatches = Vec::new();
    let mut rows = Vec::new();
    for row in nat_matrix(false)? {
        let mut cells = vec![label(row.issuer)];
        for (&acceptor, &got) in BEHAVIOURS.iter().zip(&row.cells) {
            if got.is_some() != expected_direct(row.issuer, acceptor, false) {
                mismatches.push(format!("{} ↔ {}", label(row.issuer), label(acceptor)));
            }
            cells.push(cell(got));
        }
        rows.push(cells);
    }
    tour.table(&header, &rows);
    let static_ok = nat_matrix(true)?
        .iter()
        .flat_map(|row| row.cells.iter())
        .filter(|c| **c == Some(1))
        .count();
    tour.note(&format!(
        "with a static mapping on the issuer's router: {static_ok} of 81 pairs connected in attempt 1"
    ));
    tour.note(
        "direct whenever one side maps endpoint-independently or a static mapping exists; two \
         per-destination NATs connect only if the spray can reach and be answered (see \
         docs/rendezvous.md); APDM/APDF on both sides never does — cleanly, with \
         PeerFailed { HolePunchFailed { attempts: 3 } }.",
    );
    if !mismatches.is_empty() || static_ok != 81 {
        return Err(format!(
            "the NAT matrix disagrees with expected_direct: {mismatches:?}"
        ));
    }
    Ok(())
}

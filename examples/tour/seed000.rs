//! Chapter: seed 000 — a crypto proxy on the closed home network encrypts and decrypts for
//! appliances that cannot; remote nodes reach the appliances only through it.
//!
//! Home network 192.168.0.0/24 behind a closed gateway; the open network 203.0.113.0/24
//! with the owner's phone and an attacker. Flow A (S21–S26), flow A' (a forged "heat for
//! one hour" in plaintext, refused) and flow B (S31–S36).

use std::time::Duration;

use deputy::UnixTime;
use deputy::channel::{ClientCertPolicy, ClientConfig, ServerConfig};
use deputy::crypto::cert::{CertificateAuthority, TrustStore};
use deputy::offload::{
    AccessPolicy, Appliance, ApplianceConfig, ApplianceEvent, ApplianceParams, CryptoProxy,
    OffloadEvent, Peer, ProxyConfig, ProxyEvent, RemoteEvent, RemoteNode, RemoteNodeConfig,
    ServedAppliance, Target,
};
use deputy::sim::{AllowRule, GatewayConfig, NodeId, Proto, Sim};

use crate::events::has_event;
use crate::{Build, Narrator, err, events_of};

const ANCHOR: UnixTime = UnixTime(1_800_000_000);
const YEAR: u64 = 365 * 86_400;
const HEAT: &[u8] = b"heat for one hour";

/// Run until `node` reports an offload event `pred` accepts (at most `secs` of virtual
/// time).
fn wait_for(
    sim: &mut Sim,
    node: NodeId,
    secs: u64,
    what: &str,
    pred: impl Fn(&OffloadEvent) -> bool,
) -> Result<(), String> {
    let deadline = sim.now() + Duration::from_secs(secs);
    let seen = sim
        .run_until_cond(deadline, |s| has_event(s, node, &pred))
        .map_err(err)?;
    if seen {
        Ok(())
    } else {
        Err(format!("seed 000: timed out waiting for {what}"))
    }
}

/// `wait_for`, then print the packets and what `who` reported: how most steps end.
fn witness(
    sim: &mut Sim,
    tour: &mut Narrator,
    (who, node): (&str, NodeId),
    secs: u64,
    what: &str,
    pred: impl Fn(&OffloadEvent) -> bool,
) -> Result<(), String> {
    wait_for(sim, node, secs, what, pred)?;
    tour.packets(sim);
    report(sim, tour, who, node)
}

/// Print a node's offload events as notes.
fn report(sim: &mut Sim, tour: &mut Narrator, who: &str, node: NodeId) -> Result<(), String> {
    for e in events_of::<OffloadEvent>(sim, node)? {
        let text = match e {
            OffloadEvent::Appliance(a) => describe_appliance(&a),
            OffloadEvent::Proxy(p) => describe_proxy(&p),
            OffloadEvent::Remote(r) => describe_remote(&r),
        };
        tour.note(&format!("{who}: {text}"));
    }
    Ok(())
}

fn text(data: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(data))
}

fn describe_appliance(e: &ApplianceEvent) -> String {
    match e {
        ApplianceEvent::CryptoRequested { from, answer } => {
            format!("crypto request from {from}; answered: {answer:?}")
        }
        ApplianceEvent::RefusedPlaintext { from, len, answer } => format!(
            "REFUSED {len} bytes of plaintext from {from} without reading them; solicitation: \
             {answer:?}"
        ),
        ApplianceEvent::RefusedUndecryptable { from, len, answer } => {
            format!("refused {len} undecryptable bytes from {from}; solicitation: {answer:?}")
        }
        ApplianceEvent::SessionUp {
            session,
            remote,
            initiated_by,
            ..
        } => format!("session {session:#x} with {remote} up (started by {initiated_by:?})"),
        ApplianceEvent::Delivered { from, data, .. } => {
            format!("delivered {} from {from} to the application", text(data))
        }
        ApplianceEvent::Refused { reason, .. } => format!("proxy refused: {reason:?}"),
        ApplianceEvent::SessionClosed { session, reason } => {
            format!("session {session:#x} closed: {reason:?}")
        }
        ApplianceEvent::SendFailed { session } => format!("send on {session:#x} failed"),
    }
}

fn describe_proxy(e: &ProxyEvent) -> String {
    match e {
        ProxyEvent::SessionUp {
            appliance,
            remote,
            initiated_by,
            ..
        } => format!("session {remote} ↔ {appliance} up (started by {initiated_by:?})"),
        ProxyEvent::Forwarded {
            appliance,
            to_appliance,
            len,
            ..
        } => {
            if *to_appliance {
                format!("decrypted {len} bytes and forwarded them to {appliance} in clear")
            } else {
                format!("encrypted {len} bytes from {appliance} toward the remote node")
            }
        }
        ProxyEvent::Refused {
            appliance,
            remote,
            reason,
        } => format!(
            "refused {}{}: {reason:?}",
            remote
                .as_ref()
                .map_or("an unauthenticated node".into(), ToString::to_string),
            appliance
                .as_ref()
                .map_or(String::new(), |a| format!(" access to {a}"))
        ),
        ProxyEvent::SessionClosed {
            appliance, reason, ..
        } => format!("session with {appliance} closed: {reason:?}"),
        ProxyEvent::ChannelFailed { error, .. } => format!("channel failed: {error}"),
    }
}

fn describe_remote(e: &RemoteEvent) -> String {
    match e {
        RemoteEvent::Designated {
            appliance,
            proxy,
            solicited,
        } => format!(
            "{appliance} designated its proxy at {proxy}{}",
            if *solicited {
                " (in a solicitation)"
            } else {
                ""
            }
        ),
        RemoteEvent::SessionUp {
            appliance,
            initiated_by,
        } => format!("secure session with {appliance} up (started by {initiated_by:?})"),
        RemoteEvent::Received { appliance, data } => {
            format!("received {} from {appliance}", text(data))
        }
        RemoteEvent::Refused { appliance, reason } => {
            format!("the proxy refused access to {appliance}: {reason:?}")
        }
        RemoteEvent::Declined { appliance, reason } => {
            format!("declined {appliance}'s session: {reason:?}")
        }
        RemoteEvent::Failed { appliance, error } => format!(
            "gave up on {}: {error}",
            appliance.as_deref().unwrap_or("a session")
        ),
        RemoteEvent::Closed { appliance } => format!("session with {appliance} closed"),
    }
}

pub fn run(sim: &mut Sim, tour: &mut Narrator) -> Result<(), String> {
    tour.chapter("seed 000 — a crypto proxy encrypts for the home appliances");

    // ----- the home -----
    let mut rng = sim.rng("tour/seed000/pki");
    let home_ca = CertificateAuthority::generate("home CA", &mut rng);
    let proxy_id = home_ca
        .issue_identity(
            "proxy.home",
            &["microwave", "aircon"],
            ANCHOR,
            YEAR,
            &mut rng,
        )
        .map_err(err)?;
    let phone_id = home_ca
        .issue_identity("phone", &[], ANCHOR, YEAR, &mut rng)
        .map_err(err)?;
    let trust = || TrustStore::with(home_ca.certificate().clone());

    let home = sim.net("seed000-home", "192.168.0.0/24", 1)?;
    let public = sim.net("seed000-internet", "203.0.113.0/24", 20)?;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().map_err(err);
    let sock = |s: &str| s.parse::<std::net::SocketAddr>().map_err(err);
    let mut gateway = GatewayConfig::default().allow(AllowRule {
        protocol: Some(Proto::Tcp.number()),
        to: Some(ip("192.168.0.2")?),
        port: Some(8443),
    });
    for appliance in ["192.168.0.10", "192.168.0.11"] {
        gateway = gateway.allow(AllowRule {
            protocol: Some(Proto::Udp.number()),
            to: Some(ip(appliance)?),
            port: Some(5683),
        });
    }
    sim.add_gateway(
        "home-gateway",
        home,
        ip("192.168.0.1")?,
        public,
        ip("203.0.113.1")?,
        gateway,
    )
    .map_err(err)?;

    let only_phone = AccessPolicy::Only(vec![Peer::Certificate("phone".into())]);
    let mut channel = ServerConfig::with_certificate(proxy_id, ANCHOR);
    channel.client_certs = ClientCertPolicy::Optional(trust());
    let mut proxy_cfg = ProxyConfig::new(channel, sock("192.168.0.2:5684")?);
    for (name, addr) in [
        ("microwave", "192.168.0.10:5683"),
        ("aircon", "192.168.0.11:5683"),
    ] {
        proxy_cfg
            .serve(name, ServedAppliance::new(sock(addr)?, only_phone.clone()))
            .map_err(err)?;
    }
    let proxy = sim.host(
        "crypto-proxy",
        home,
        "192.168.0.2",
        CryptoProxy::new(proxy_cfg, Box::new(sim.rng("tour/seed000/proxy"))),
    )?;
    sim.listen(proxy, 8443).map_err(err)?;

    let mut appliances = Vec::new();
    for (name, addr) in [("microwave", "192.168.0.10"), ("aircon", "192.168.0.11")] {
        let cfg = ApplianceConfig::new(ApplianceParams {
            name: name.into(),
            local: sock(&format!("{addr}:5683"))?,
            proxy: sock("192.168.0.2:5684")?,
            proxy_public: sock("192.168.0.2:8443")?,
        })
        .map_err(err)?;
        let node = sim.host(
            name,
            home,
            addr,
            Appliance::new(cfg, Box::new(sim.rng(&format!("tour/seed000/{name}")))),
        )?;
        appliances.push(node);
    }
    let (microwave, aircon) = (appliances[0], appliances[1]);

    let phone_cfg = RemoteNodeConfig::new(
        ClientConfig::with_client_certificate(trust(), "proxy.home", phone_id, ANCHOR),
        sock("203.0.113.20:7000")?,
    );
    let phone = sim.host(
        "phone",
        public,
        "203.0.113.20",
        RemoteNode::new(phone_cfg, Box::new(sim.rng("tour/seed000/phone"))),
    )?;
    sim.listen(phone, 7443).map_err(err)?;
    // The attacker runs the same software, without a certificate.
    let attacker_cfg = RemoteNodeConfig::new(
        ClientConfig::with_ca(trust(), "proxy.home", ANCHOR),
        sock("203.0.113.66:7000")?,
    );
    let attacker = sim.host(
        "attacker",
        public,
        "203.0.113.66",
        RemoteNode::new(attacker_cfg, Box::new(sim.rng("tour/seed000/attacker"))),
    )?;
    let microwave_target = Target::new("microwave", sock("192.168.0.10:5683")?);

    tour.note("closed home network 192.168.0.0/24 behind home-gateway (203.0.113.1): it lets in");
    tour.note("  only datagrams to the appliances (port 5683) and streams to the proxy (8443).");
    tour.note("microwave .10 and aircon .11 cannot do strong crypto; crypto-proxy .2 does it for");
    tour.note("  them: its certificate from \"home CA\" names proxy.home, microwave and aircon.");
    tour.note(
        "phone 203.0.113.20 holds a client certificate from the home CA; the proxy lets only",
    );
    tour.note("  the phone reach either appliance. attacker 203.0.113.66 has no credentials.");
    tour.packets(sim);

    // ----- flow A -----
    tour.step(
        "S21",
        "Flow A. The phone wants to send \"defrost 300 g\" to the microwave. It first sends a \
         crypto request datagram to the microwave (padded, so no answer is ever larger).",
    );
    sim.with_actor(phone, |r: &mut RemoteNode, now| {
        r.send(now, &microwave_target, b"defrost 300 g")
    })
    .map_err(err)?
    .map_err(err)?;
    witness(sim, tour, ("microwave", microwave), 2, "S21", |e| {
        matches!(
            e,
            OffloadEvent::Appliance(ApplianceEvent::CryptoRequested { .. })
        )
    })?;

    // S22–S25 need nothing from the story but time: each ends when its node reports.
    type Step<'a> = (
        &'a str,
        &'a str,
        (&'a str, NodeId),
        u64,
        fn(&OffloadEvent) -> bool,
    );
    let flow_a: [Step; 4] = [
        (
            "S22",
            "The microwave answers with a crypto accept and a proxy designation: the proxy's \
             address as reachable from outside, and its own name.",
            ("phone", phone),
            2,
            |e| matches!(e, OffloadEvent::Remote(RemoteEvent::Designated { .. })),
        ),
        (
            "S23",
            "The phone opens a stream to the proxy and runs the secure channel. The proxy's \
             certificate must come from the home CA and name the microwave — a forged \
             designation fails here — and the phone proves its own certificate. Then, inside \
             the channel, the proxy request: \"deputize for the microwave\".",
            ("crypto-proxy", proxy),
            3,
            |e| matches!(e, OffloadEvent::Proxy(ProxyEvent::SessionUp { .. })),
        ),
        (
            "S24",
            "The proxy checks that the phone may reach the microwave and confirms: proxy accept.",
            ("phone", phone),
            2,
            |e| matches!(e, OffloadEvent::Remote(RemoteEvent::SessionUp { .. })),
        ),
        (
            "S25",
            "The phone sends \"defrost 300 g\" as secure data inside the channel.",
            ("crypto-proxy", proxy),
            2,
            |e| matches!(e, OffloadEvent::Proxy(ProxyEvent::Forwarded { .. })),
        ),
    ];
    for (id, text, who, secs, pred) in flow_a {
        tour.step(id, text);
        witness(sim, tour, who, secs, id, pred)?;
    }

    tour.step(
        "S26",
        "The proxy passes the decrypted data to the microwave over the closed network, and the \
         microwave acknowledges it.",
    );
    wait_for(sim, microwave, 2, "S26", |e| {
        matches!(e, OffloadEvent::Appliance(ApplianceEvent::Delivered { .. }))
    })?;
    sim.run_for(Duration::from_millis(5)).map_err(err)?;
    tour.packets(sim);
    report(sim, tour, "microwave", microwave)?;
    tour.note("on the internet the command only ever travelled inside the channel's records.");

    // ----- flow A' -----
    tour.step(
        "S42",
        "Flow A'. The attacker sends the seed's forged command, \"heat for one hour\", to the \
         microwave in plaintext. The microwave does not read it: it drops it and answers with a \
         crypto solicitation and the proxy designation — never more bytes than it received, \
         and rate-limited per sender.",
    );
    sim.with_actor(attacker, |r: &mut RemoteNode, now| {
        r.send_plaintext(now, &microwave_target, HEAT)
    })
    .map_err(err)?
    .map_err(err)?;
    wait_for(sim, microwave, 2, "the forged command", |e| {
        matches!(
            e,
            OffloadEvent::Appliance(ApplianceEvent::RefusedPlaintext { .. })
        )
    })?;
    sim.run_for(Duration::from_millis(30)).map_err(err)?;
    tour.packets(sim);
    report(sim, tour, "microwave", microwave)?;

    tour.step(
        "S23",
        "The attacker follows the designation to the proxy (flow A resumes at S23), but it \
         cannot prove an identity the microwave's access policy admits: the proxy answers \
         with a typed refusal and closes the channel.",
    );
    wait_for(sim, attacker, 3, "the refusal", |e| {
        matches!(e, OffloadEvent::Remote(RemoteEvent::Failed { .. }))
    })?;
    sim.run_for(Duration::from_millis(50)).map_err(err)?;
    tour.packets(sim);
    report(sim, tour, "attacker", attacker)?;
    report(sim, tour, "crypto-proxy", proxy)?;
    let heated = events_of::<OffloadEvent>(sim, microwave)?
        .iter()
        .any(|e| matches!(e, OffloadEvent::Appliance(ApplianceEvent::Delivered { .. })));
    if heated {
        return Err("seed 000: the forged command reached the microwave".into());
    }
    tour.note("the microwave never heated: the plaintext command reached no application.");

    // ----- flow B -----
    tour.step(
        "S31",
        "Flow B. The aircon wants to tell the phone its filter needs cleaning. It sends a proxy \
         request over the closed network, naming the phone's address (and requiring the \
         phone's identity).",
    );
    let phone_stream = sock("203.0.113.20:7443")?;
    let request = sim
        .with_actor(aircon, |a: &mut Appliance, now| {
            a.connect(now, phone_stream, Some(Peer::Certificate("phone".into())))
        })
        .map_err(err)?
        .map_err(err)?;
    sim.run_for(Duration::from_millis(5)).map_err(err)?;
    tour.packets(sim);

    tour.step(
        "S32",
        "The proxy opens a stream to the phone (out through the gateway), runs the channel — \
         the phone checks the certificate names the aircon — and sends a crypto request inside \
         it.",
    );
    wait_for(sim, phone, 3, "S32/S33", |e| {
        matches!(e, OffloadEvent::Remote(RemoteEvent::SessionUp { .. }))
    })?;
    tour.packets(sim);
    tour.step("S33", "The phone accepts: crypto accept.");
    report(sim, tour, "phone", phone)?;

    tour.step(
        "S34",
        "The proxy confirms to the aircon: proxy accept, with the session and the phone's proven \
         identity.",
    );
    wait_for(sim, aircon, 2, "S34", |e| {
        matches!(e, OffloadEvent::Appliance(ApplianceEvent::SessionUp { .. }))
    })?;
    tour.packets(sim);
    let mut session = None;
    for e in events_of::<OffloadEvent>(sim, aircon)? {
        if let OffloadEvent::Appliance(
            ref a @ ApplianceEvent::SessionUp {
                session: s,
                request: Some(r),
                ..
            },
        ) = e
            && r == request
        {
            session = Some(s);
            tour.note(&format!("aircon: {}", describe_appliance(a)));
        }
    }
    let session = session.ok_or("seed 000: no session for the aircon")?;
    report(sim, tour, "crypto-proxy", proxy)?;

    tour.step(
        "S35",
        "The aircon sends \"filter needs cleaning\" to the proxy in plain text — the closed \
         network is its only path.",
    );
    sim.with_actor(aircon, |a: &mut Appliance, now| {
        a.send(now, session, b"filter needs cleaning")
    })
    .map_err(err)?
    .map_err(err)?;
    witness(sim, tour, ("crypto-proxy", proxy), 2, "S35", |e| {
        matches!(e, OffloadEvent::Proxy(ProxyEvent::Forwarded { .. }))
    })?;

    tour.step(
        "S36",
        "The proxy encrypts it to the phone inside the channel.",
    );
    wait_for(sim, phone, 2, "S36", |e| {
        matches!(e, OffloadEvent::Remote(RemoteEvent::Received { .. }))
    })?;
    sim.run_for(Duration::from_millis(30)).map_err(err)?;
    tour.packets(sim);
    report(sim, tour, "phone", phone)?;
    tour.note(
        "in the capture, UDP on 192.168.0.0/24 carries plain data; everything an appliance said \
         crossed the internet only inside records.",
    );
    Ok(())
}

//! Chapter: the secure channel (seed 002's "SSL", DESIGN.md §4) between a sensor behind a
//! NAPT router and a server on the internet.

use std::sync::Arc;
use std::time::Duration;

use deputy::channel::{
    ChannelClient, ChannelEvent, ChannelServer, ChannelServerConfig, ClientCertPolicy,
    ClientConfig, PeerIdentity, ServerConfig,
};
use deputy::crypto::cert::{CertificateAuthority, TrustStore};
use deputy::sim::{NatConfig, Sim};
use deputy::{StreamId, UnixTime};

use crate::events::{event, has_event};
use crate::{Build, Narrator, err, events_of};

const ANCHOR: UnixTime = UnixTime(1_800_000_000);

fn describe(peer: &PeerIdentity) -> String {
    match peer {
        PeerIdentity::Certificate(c) => format!(
            "certificate of {:?} issued by {:?}",
            c.subject(),
            c.issuer()
        ),
        PeerIdentity::Psk(id) => format!("pre-shared key {:?}", String::from_utf8_lossy(id)),
        PeerIdentity::Anonymous => "nobody in particular".into(),
    }
}

pub fn run(sim: &mut Sim, tour: &mut Narrator) -> Result<(), String> {
    tour.chapter("the secure channel, through a NAPT router");
    let mut rng = sim.rng("tour/channel/pki");
    let ca = CertificateAuthority::generate("tour CA", &mut rng);
    let server_id = ca
        .issue_identity("server.example", &[], ANCHOR, 365 * 86_400, &mut rng)
        .map_err(err)?;
    let sensor_id = ca
        .issue_identity("sensor-7", &[], ANCHOR, 365 * 86_400, &mut rng)
        .map_err(err)?;
    let trust = || TrustStore::with(ca.certificate().clone());

    let lan = sim.net("sensor-lan", "10.0.0.0/24", 1)?;
    let internet = sim.net("internet-1", "198.51.100.0/24", 20)?;
    sim.add_napt(
        "sensor-router",
        lan,
        "10.0.0.1".parse().map_err(err)?,
        internet,
        "198.51.100.2".parse().map_err(err)?,
        NatConfig::default(),
    )
    .map_err(err)?;

    let server_addr = "198.51.100.10:443".parse().map_err(err)?;
    let mut server_cfg = ServerConfig::with_certificate(server_id, ANCHOR);
    server_cfg.client_certs = ClientCertPolicy::Required(trust());
    let server = sim.host(
        "server",
        internet,
        "198.51.100.10",
        ChannelServer::new(
            ChannelServerConfig {
                channel: Arc::new(server_cfg),
                max_sessions: 64,
            },
            Box::new(sim.rng("tour/channel/server")),
        ),
    )?;
    sim.listen(server, 443).map_err(err)?;
    let client_cfg =
        ClientConfig::with_client_certificate(trust(), "server.example", sensor_id, ANCHOR);
    let sensor = sim.host(
        "sensor",
        lan,
        "10.0.0.7",
        ChannelClient::new(
            Arc::new(client_cfg),
            "10.0.0.7:0".parse().map_err(err)?,
            server_addr,
            Box::new(sim.rng("tour/channel/sensor")),
        ),
    )?;
    tour.note("sensor 10.0.0.7 sits on a home LAN behind a NAPT router (public 198.51.100.2);");
    tour.note(
        "server 198.51.100.10:443 holds a certificate for \"server.example\" from \"tour CA\";",
    );
    tour.note("both trust the CA, and the server requires a client certificate (sensor-7).");
    tour.packets(sim);

    tour.step(
        "S203",
        "The sensor opens a stream to the server and runs the handshake: ClientHello with its \
         X25519 share and random (32-bit time + 28 random bytes); ServerHello with the server's \
         share; then, encrypted under handshake keys, the server's Certificate, a \
         CertificateRequest, its CertificateVerify signature and Finished; the sensor answers \
         with its own Certificate, CertificateVerify and Finished.",
    );
    sim.with_actor(sensor, |c: &mut ChannelClient, now| c.connect(now))
        .map_err(err)?
        .map_err(err)?;
    let start = sim.now();
    let up = sim
        .run_until_cond(start + Duration::from_secs(5), |s| {
            has_event(s, server, |e| matches!(e, ChannelEvent::Established { .. }))
        })
        .map_err(err)?;
    sim.run_for(Duration::from_millis(50)).map_err(err)?;
    tour.packets(sim);
    if !up {
        return Err("the channel handshake did not complete".into());
    }
    for (who, node) in [("sensor", sensor), ("server", server)] {
        for (at, ev) in sim.events(node).map_err(err)? {
            if let Some(ChannelEvent::Established {
                peer,
                suite,
                session,
                ..
            }) = event(ev)
            {
                tour.note(&format!(
                    "{who}: channel up {:.0} ms after connect, suite {suite}, session \
                     {session:#018x}; peer proved: {}",
                    (at - start).as_secs_f64() * 1000.0,
                    describe(&peer)
                ));
            }
        }
    }
    tour.note(
        "keys: master secret by the seed's formula (¶0088, SHA-256 for \"SHA\"), traffic keys \
         by HKDF over it and the transcript. With 20 ms links the sensor has keys after two \
         round trips: one for TCP, one for the channel.",
    );

    tour.step(
        "",
        "The sensor sends two readings; each is one AEAD record with a sequence number.",
    );
    for reading in ["temperature=21.5C", "humidity=40%"] {
        sim.with_actor(sensor, |c: &mut ChannelClient, _| {
            c.send(reading.as_bytes())
        })
        .map_err(err)?
        .map_err(err)?;
    }
    sim.run_for(Duration::from_millis(100)).map_err(err)?;
    tour.packets(sim);
    let mut stream = None;
    for ev in events_of::<ChannelEvent>(sim, server)? {
        if let ChannelEvent::Received { stream: s, data } = ev {
            tour.note(&format!(
                "server received {:?}",
                String::from_utf8_lossy(&data)
            ));
            stream = Some(s);
        }
    }
    let stream: StreamId = stream.ok_or("the server received nothing")?;

    tour.step("", "The server answers on the same channel.");
    sim.with_actor(server, |s: &mut ChannelServer, _| {
        s.send(stream, b"ack 2 readings")
    })
    .map_err(err)?
    .map_err(err)?;
    sim.run_for(Duration::from_millis(100)).map_err(err)?;
    tour.packets(sim);
    for ev in events_of::<ChannelEvent>(sim, sensor)? {
        if let ChannelEvent::Received { data, .. } = ev {
            tour.note(&format!(
                "sensor received {:?}",
                String::from_utf8_lossy(&data)
            ));
        }
    }

    tour.step(
        "",
        "The sensor closes gracefully: close-notify both ways, so neither side mistakes the end \
         for a truncation.",
    );
    sim.with_actor(sensor, |c: &mut ChannelClient, _| c.close())
        .map_err(err)?
        .map_err(err)?;
    sim.run_for(Duration::from_millis(200)).map_err(err)?;
    tour.packets(sim);
    for (who, node) in [("sensor", sensor), ("server", server)] {
        for ev in events_of::<ChannelEvent>(sim, node)? {
            if let ChannelEvent::Closed { .. } = ev {
                tour.note(&format!("{who}: channel closed cleanly"));
            }
        }
    }
    Ok(())
}

//! Seed 002's accepting device on real sockets (tokio): registers with the rendezvous
//! server (S202), fetches connection requests over its own certified channel (S206),
//! checks the password (S207) and takes the direct connection (S208–S209). It answers
//! every message a connected issuer sends with the same bytes (an echo), and runs until
//! killed.
//!
//! Its credentials come from the server: `DIR/device-ID.cred` (written by
//! `rendezvous_server --device ID`) and `DIR/trust.cert`.

#[allow(dead_code)] // each example uses part of the shared driver code
#[path = "driver/mod.rs"]
mod driver;

use std::process::ExitCode;
use std::sync::Arc;

use deputy::rendezvous::{Acceptor, AcceptorConfig, AcceptorParams, Password, RendezvousEvent};

use driver::common::{Args, Clock, DriverError, Flow, bind_udp, finish, log, rng, warn};
use driver::rendezvous::{ServerOptions, read_device};
use driver::tokio_net::Net;

const WHO: &str = "acceptor";

const USAGE: &str = "\
acceptor: seed 002's accepting device on real sockets; echoes what issuers send

Usage: acceptor --device-file FILE (--password TEXT | --password-file FILE) [options]

Options:
  --device-file FILE    this device's credentials (rendezvous_server --device ID writes
                        DIR/device-ID.cred)
  --password TEXT       the password issuers must know (1 to 64 bytes)
  --password-file FILE  the same, from the first line of FILE
  --trust FILE          the CA certificate              [default: rendezvous/trust.cert]
  --server-udp ADDR     the server's UDP address        [default: 127.0.0.1:1200]
  --server-stream ADDR  the server's device stream port [default: 127.0.0.1:1300]
  --server-name NAME    the name in the server's certificate [default: rendezvous.example]
  --local ADDR          this device's UDP socket (registrations, the direct connection)
                                                        [default: 127.0.0.1:0]
  -h, --help            this text

Logs every event on stdout; runs until killed.";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    finish(WHO, run().await)
}

async fn run() -> Result<u8, DriverError> {
    let mut args = Args::from_env(USAGE)?;
    let device_file = args.required("--device-file")?;
    let server = ServerOptions::take(&mut args, "127.0.0.1:1300")?;
    args.finish()?;
    let device = read_device(device_file.as_ref())?;
    let trust = server.trust()?;
    let password =
        Password::new(&server.password, &mut *rng()?).map_err(|e| DriverError::BadValue {
            flag: "--password".into(),
            value: "(not shown)".into(),
            reason: e.to_string(),
        })?;

    // The socket first: registrations leave from it and the server records its port.
    let (socket, local) = bind_udp(server.local)?;
    let clock = Clock::start();
    let cfg = AcceptorConfig::new(AcceptorParams {
        device: device.id,
        registration_key: device.registration_key,
        identity: Arc::new(device.identity),
        trust,
        server_name: server.name.clone(),
        server_udp: server.udp,
        server_stream: server.stream,
        local,
        password,
        time_anchor: clock.anchor(),
    });
    let mut net = Net::new(Acceptor::new(cfg, rng()?), clock, WHO);
    net.add_udp((socket, local))?;
    log(
        &clock,
        WHO,
        format!(
            "device {} on {local}, registering with {}",
            device.id, server.udp
        ),
    );
    net.run(None, |acceptor, now, event| {
        if let RendezvousEvent::PeerData { session, data } = event {
            log(
                &clock,
                WHO,
                format!(
                    "session {session:#x}: received {:?}, echoing it",
                    String::from_utf8_lossy(&data)
                ),
            );
            // A session that ended meanwhile refuses the echo: worth a line, not an exit.
            if let Err(e) = acceptor.send(now, session, &data) {
                warn(
                    &clock,
                    WHO,
                    format!("session {session:#x}: echo refused: {e}"),
                );
            }
        }
        Ok(Flow::Continue)
    })
    .await
}

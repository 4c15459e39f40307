//! Seed 002's issuing device on real sockets (tokio): asks the rendezvous server for a
//! device by its ID (S203), proves the device's password to that device alone (S207),
//! takes the direct connection (S208–S209), sends one message and waits for the answer.
//! With `examples/acceptor.rs` on the other side the answer is the message itself.
//!
//! It trusts the CA in `DIR/trust.cert` (written by `rendezvous_server`) for both the
//! server's certificate and the device's.

#[allow(dead_code)] // each example uses part of the shared driver code
#[path = "driver/mod.rs"]
mod driver;

use std::process::ExitCode;
use std::time::Duration;

use deputy::rendezvous::{DeviceId, Issuer, IssuerConfig, IssuerParams, RendezvousEvent};

use driver::common::{Args, Clock, DriverError, Flow, bind_udp, finish, log, parse_value, rng};
use driver::rendezvous::ServerOptions;
use driver::tokio_net::Net;

const WHO: &str = "issuer";

const USAGE: &str = "\
issuer: seed 002's issuing device on real sockets; connects to a device by its ID

Usage: issuer --device ID (--password TEXT | --password-file FILE) [options]

Options:
  --device ID           the device to reach (a number)
  --password TEXT       its password (1 to 64 bytes)
  --password-file FILE  the same, from the first line of FILE
  --message TEXT        what to send once connected  [default: hello from the issuer]
  --trust FILE          the CA certificate           [default: rendezvous/trust.cert]
  --server-stream ADDR  the server's issuer stream port [default: 127.0.0.1:1201]
  --server-udp ADDR     the server's UDP address     [default: 127.0.0.1:1200]
  --server-name NAME    the name in the server's certificate [default: rendezvous.example]
  --local ADDR          the UDP socket for the direct connection [default: 127.0.0.1:0]
  --timeout SECONDS     give up after this long      [default: 60]
  -h, --help            this text

Exit code: 0 the answer came back and equals the message; 3 the request was refused
(wrong password, unknown device …); 4 the direct connection failed or closed before an
answer; 5 an answer that is not the message; 1 any other failure (timeout, files,
sockets); 2 a command line that does not fit.";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    finish(WHO, run().await)
}

async fn run() -> Result<u8, DriverError> {
    let mut args = Args::from_env(USAGE)?;
    let device = DeviceId(parse_value("--device", &args.required("--device")?)?);
    let message = args
        .optional("--message")?
        .unwrap_or_else(|| "hello from the issuer".into())
        .into_bytes();
    let timeout = Duration::from_secs(args.parsed("--timeout", 60u64)?);
    let server = ServerOptions::take(&mut args, "127.0.0.1:1201")?;
    args.finish()?;
    let trust = server.trust()?;

    // The socket first: the direct connection's candidates name its port.
    let (socket, local) = bind_udp(server.local)?;
    let clock = Clock::start();
    let cfg = IssuerConfig::new(IssuerParams {
        trust,
        server_name: server.name.clone(),
        server_stream: server.stream,
        server_udp: server.udp,
        local,
        time_anchor: clock.anchor(),
    });
    let mut net = Net::new(Issuer::new(cfg, rng()?), clock, WHO);
    net.add_udp((socket, local))?;
    let request = net.command("connection request", |issuer, now| {
        issuer.connect(now, device, &server.password)
    })?;
    log(
        &clock,
        WHO,
        format!(
            "request {request:#x}: device {device} via {}",
            server.stream
        ),
    );

    net.run(Some(timeout), |issuer, now, event| {
        Ok(match event {
            RendezvousEvent::Refused { reason, .. } => {
                log(&clock, WHO, format!("refused: {reason:?}"));
                Flow::Stop(3)
            }
            RendezvousEvent::PeerConnected {
                session, remote, ..
            } => {
                issuer
                    .send(now, session, &message)
                    .map_err(DriverError::deputy("send"))?;
                log(
                    &clock,
                    WHO,
                    format!(
                        "connected to device {device} at {remote}; sent {:?}",
                        String::from_utf8_lossy(&message)
                    ),
                );
                Flow::Continue
            }
            RendezvousEvent::PeerData { session, data } => {
                log(
                    &clock,
                    WHO,
                    format!("answer {:?}", String::from_utf8_lossy(&data)),
                );
                // Closing is good manners (the acceptor frees the session at once); the
                // loop's grace period lets the close go out.
                issuer
                    .close(now, session)
                    .map_err(DriverError::deputy("close"))?;
                Flow::Stop(if data == message { 0 } else { 5 })
            }
            RendezvousEvent::PeerFailed { reason, .. } => {
                log(&clock, WHO, format!("direct connection failed: {reason:?}"));
                Flow::Stop(4)
            }
            RendezvousEvent::PeerClosed { .. } => Flow::Stop(4),
            _ => Flow::Continue,
        })
    })
    .await
}

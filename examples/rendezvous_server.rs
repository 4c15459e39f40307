//! Seed 002's rendezvous server on real sockets (tokio): the device directory and the
//! relay of connection requests. Run it, then an acceptor (`examples/acceptor.rs`) and an
//! issuer (`examples/issuer.rs`); `README.md`, "Running on real sockets", has the three
//! commands.
//!
//! It also plays the devices' manufacturer, so that the example needs no other tool:
//! `DIR/authority.secret` holds the CA's seed and the registration master key (created on
//! the first run, kept afterwards), `DIR/trust.cert` the CA certificate both devices
//! trust, and each `--device ID` gets `DIR/device-ID.cred` (its certificate, key and
//! registration key) for the acceptor that acts as that device.

#[allow(dead_code)] // each example uses part of the shared driver code
#[path = "driver/mod.rs"]
mod driver;

use std::process::ExitCode;
use std::sync::Arc;

use deputy::crypto::cert::TrustStore;
use deputy::rendezvous::{
    DerivedRegistrationKeys, DeviceId, MemoryDirectory, RendezvousServer, RendezvousServerConfig,
    RendezvousServerParams,
};

use driver::common::{
    Args, Clock, DriverError, Flow, bind_udp, finish, identity, issue, load_or_create_authority,
    log, make_dir, parse_value, rng, write_trust,
};
use driver::rendezvous::{SERVER_NAME, write_device};
use driver::tokio_net::{Net, bind_tcp};

const WHO: &str = "server";

const USAGE: &str = "\
rendezvous_server: seed 002's rendezvous server on real sockets

Usage: rendezvous_server [options]

Options:
  --dir DIR          keys and credentials: authority.secret (kept secret, created once),
                     trust.cert (for the devices), device-ID.cred  [default: rendezvous]
  --device ID        provision device ID (a number): write DIR/device-ID.cred for its
                     acceptor; repeatable
  --udp ADDR         registrations and probes (S202, S203)     [default: 127.0.0.1:1200]
  --issuers ADDR     issuer streams (S203)                     [default: 127.0.0.1:1201]
  --devices ADDR     device streams (S206)                     [default: 127.0.0.1:1300]
  --name NAME        the name in the server's certificate      [default: rendezvous.example]
  --directory N      devices the directory holds at most       [default: 100000]
  -h, --help         this text

Port 0 picks a free port; the line `listening udp=… issuers=… devices=…` says which.
Logs every event on stdout; runs until killed.";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    finish(WHO, run().await)
}

async fn run() -> Result<u8, DriverError> {
    let mut args = Args::from_env(USAGE)?;
    let dir = args.path("--dir", "rendezvous")?;
    let devices = args
        .all("--device")
        .iter()
        .map(|id| parse_value::<u64>("--device", id).map(DeviceId))
        .collect::<Result<Vec<_>, _>>()?;
    let udp = args.addr("--udp", "127.0.0.1:1200")?;
    let issuers = args.addr("--issuers", "127.0.0.1:1201")?;
    let device_streams = args.addr("--devices", "127.0.0.1:1300")?;
    let name = args
        .optional("--name")?
        .unwrap_or_else(|| SERVER_NAME.into());
    let capacity = args.parsed("--directory", 100_000usize)?;
    args.finish()?;

    let clock = Clock::start();
    make_dir(&dir)?;
    let (ca, secrets) = load_or_create_authority(
        &dir.join("authority.secret"),
        "rendezvous CA",
        &["registration-master"],
    )?;
    let master = secrets.array::<32>("registration-master")?;
    let trust_path = dir.join("trust.cert");
    write_trust(&trust_path, &ca)?;
    log(
        &clock,
        WHO,
        format!("trust anchor: {}", trust_path.display()),
    );
    let keys = DerivedRegistrationKeys::new(master);
    for device in &devices {
        let issued = issue(&ca, &device.certificate_name(), &[], &clock)?;
        let path = dir.join(format!("device-{device}.cred"));
        write_device(&path, *device, &issued, &keys.device_key(*device))?;
        log(
            &clock,
            WHO,
            format!("device {device} provisioned: {}", path.display()),
        );
    }

    // Sockets first: the configuration names the ports actually bound.
    let (udp_socket, udp) = bind_udp(udp)?;
    let (issuer_listener, issuers) = bind_tcp(issuers).await?;
    let (device_listener, device_streams) = bind_tcp(device_streams).await?;
    // The server tells its two stream kinds apart by local port only.
    if issuers.port() == device_streams.port() {
        return Err(DriverError::Usage(
            "--issuers and --devices need different ports".into(),
        ));
    }

    // The channel identity (both stream kinds show it), issued fresh at every start: the
    // devices check it against the CA, not against a stored copy.
    let server_identity = identity(&issue(&ca, &name, &[], &clock)?);
    let cfg = RendezvousServerConfig::new(RendezvousServerParams {
        udp,
        issuer_port: issuers.port(),
        device_port: device_streams.port(),
        identity: Arc::new(server_identity),
        device_trust: TrustStore::with(ca.certificate().clone()),
        keys: Box::new(DerivedRegistrationKeys::new(master)),
        time_anchor: clock.anchor(),
    });
    let server = RendezvousServer::new(cfg, MemoryDirectory::new(capacity), rng()?)
        .map_err(DriverError::deputy("server"))?;

    let mut net = Net::new(server, clock, WHO);
    net.add_udp((udp_socket, udp))?;
    net.add_listener((issuer_listener, issuers));
    net.add_listener((device_listener, device_streams));
    log(
        &clock,
        WHO,
        format!("listening udp={udp} issuers={issuers} devices={device_streams}"),
    );
    // The server only relays: every event is logged by the loop, none needs an answer.
    net.run(None, |_, _, _| Ok(Flow::Continue)).await
}

//! The seed 000 appliance as the examples run it, whichever loop drives it: its options,
//! its configuration, and what it does with each event. `offload.rs appliance` drives it
//! with tokio, `blocking.rs` with one blocking socket; both include this file, so the two
//! differ only in the loop.
//!
//! What it does: data a remote node sends on a session the remote node started (flow A)
//! is answered with `ack: <data>`; with `--connect`, it asks its proxy for a session with
//! the remote node listening there (flow B, S31) and sends `--message` on it once it is
//! up.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use deputy::offload::{
    Appliance, ApplianceConfig, ApplianceEvent, ApplianceParams, LinkKey, OffloadEvent, StartedBy,
};
use deputy::{Error, Instant};

use super::common::{Args, DriverError, Fields, write_fields};

/// The appliance's options, for the usage texts of both examples.
pub const OPTIONS: &str = "\
  --dir DIR             where the proxy wrote link-NAME.key          [default: offload]
  --name NAME           the appliance's name                         [default: microwave]
  --local ADDR          its datagram socket                          [default: 127.0.0.1:5683]
  --proxy ADDR          the proxy's datagram address (closed net)    [default: 127.0.0.1:5684]
  --proxy-stream ADDR   the proxy's stream address for remote nodes  [default: 127.0.0.1:8443]
  --connect ADDR        flow B: a session with the remote node listening at ADDR
  --message TEXT        what to send on it                [default: hello from the appliance]";

/// What flow B sends unless `--message` says otherwise.
const DEFAULT_MESSAGE: &str = "hello from the appliance";

/// The file the proxy writes the link key for `name` to, in `dir`.
pub fn link_key_path(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("link-{name}.key"))
}

/// Write a link key file (secret).
pub fn write_link_key(path: &Path, name: &str, key: &[u8]) -> Result<(), DriverError> {
    write_fields(
        path,
        &format!("offload link key of appliance {name} (secret; the proxy has it too)"),
        &[("link-key", key)],
        true,
    )
}

/// The appliance's configuration and behaviour from the command line.
pub fn from_args(args: &mut Args) -> Result<(ApplianceConfig, Behaviour), DriverError> {
    let dir = args.path("--dir", "offload")?;
    let name = args
        .optional("--name")?
        .unwrap_or_else(|| "microwave".into());
    let local = args.addr("--local", "127.0.0.1:5683")?;
    if local.port() == 0 {
        // The proxy is configured with this address (it accepts the link only from
        // there), so it cannot be left to chance.
        return Err(DriverError::BadValue {
            flag: "--local".into(),
            value: local.to_string(),
            reason: "the appliance needs a fixed port: its proxy is told this address".into(),
        });
    }
    let proxy = args.addr("--proxy", "127.0.0.1:5684")?;
    let proxy_stream = args.addr("--proxy-stream", "127.0.0.1:8443")?;
    let connect = match args.optional("--connect")? {
        Some(v) => Some(super::common::parse_value("--connect", &v)?),
        None => None,
    };
    let message = args
        .optional("--message")?
        .unwrap_or_else(|| DEFAULT_MESSAGE.into());
    let path = link_key_path(&dir, &name);
    let key = Fields::read(&path)?;
    let link_key = LinkKey::new(key.bytes("link-key")?).map_err(|e| DriverError::Credentials {
        path: path.clone(),
        problem: e.to_string(),
    })?;
    let mut config = ApplianceConfig::new(ApplianceParams {
        name: name.clone(),
        local,
        proxy,
        proxy_public: proxy_stream,
    })
    .map_err(DriverError::deputy("appliance configuration"))?;
    config.link_key = Some(link_key);
    Ok((
        config,
        Behaviour {
            connect,
            message: message.into_bytes(),
            request: None,
            started_by_remote: BTreeSet::new(),
        },
    ))
}

/// What the appliance does on its own and in answer to events.
#[derive(Debug)]
pub struct Behaviour {
    connect: Option<SocketAddr>,
    message: Vec<u8>,
    /// Our flow B request, once made.
    request: Option<u64>,
    /// Sessions remote nodes started (flow A): their data is acknowledged.
    started_by_remote: BTreeSet<u64>,
}

impl Behaviour {
    /// At start: flow B's S31, if asked for.
    pub fn start(&mut self, appliance: &mut Appliance, now: Instant) -> Result<(), Error> {
        if let Some(remote) = self.connect {
            self.request = Some(appliance.connect(now, remote, None)?);
        }
        Ok(())
    }

    /// One event (already logged by the loop): what to print besides, if anything. The
    /// appliance never stops by itself, and a command refused here (a session that closed
    /// meanwhile) is a line in the log, not a reason to stop.
    pub fn on_event(
        &mut self,
        appliance: &mut Appliance,
        now: Instant,
        event: OffloadEvent,
    ) -> Option<String> {
        let OffloadEvent::Appliance(event) = event else {
            return None;
        };
        match event {
            ApplianceEvent::SessionUp {
                session,
                initiated_by: StartedBy::Remote,
                ..
            } => {
                self.started_by_remote.insert(session);
                None
            }
            ApplianceEvent::SessionUp {
                session, request, ..
            } if request.is_some() && request == self.request => {
                let text = String::from_utf8_lossy(&self.message).into_owned();
                Some(match appliance.send(now, session, &self.message) {
                    Ok(()) => format!("flow B session {session:#x} up; sent {text:?}"),
                    Err(e) => format!("flow B session {session:#x} up; sending refused: {e}"),
                })
            }
            ApplianceEvent::Delivered {
                session: Some(session),
                data,
                ..
            } if self.started_by_remote.contains(&session) => {
                let text = String::from_utf8_lossy(&data).into_owned();
                let reply = [b"ack: ".as_slice(), &data].concat();
                Some(match appliance.send(now, session, &reply) {
                    Ok(()) => format!("delivered {text:?} (flow A); answered"),
                    Err(e) => format!("delivered {text:?} (flow A); answer refused: {e}"),
                })
            }
            ApplianceEvent::Delivered { data, .. } => {
                Some(format!("delivered {:?}", String::from_utf8_lossy(&data)))
            }
            ApplianceEvent::SessionClosed { session, .. } => {
                self.started_by_remote.remove(&session);
                None
            }
            _ => None,
        }
    }
}

//! Seed 000 on real sockets (tokio): the crypto proxy, the remote node and the appliance,
//! one subcommand each. `README.md`, "Running on real sockets", has the commands for
//! flow A (the remote node starts) and flow B (the appliance starts).
//!
//! The proxy also plays the home's provisioning: `DIR/authority.secret` holds the home
//! CA's seed (created on the first run, kept afterwards), `DIR/trust.cert` the CA
//! certificate remote nodes trust, `DIR/remote.cred` a client certificate for a remote
//! node, and `DIR/link-NAME.key` each appliance's link key (created once, then kept, so a
//! running appliance keeps working across proxy restarts).
//!
//! `examples/blocking.rs` is the same appliance driven by one blocking socket.

#[allow(dead_code)] // each example uses part of the shared driver code
#[path = "driver/mod.rs"]
mod driver;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use deputy::channel::{ClientCertPolicy, ClientConfig, ServerConfig};
use deputy::crypto::cert::TrustStore;
use deputy::offload::{
    AccessPolicy, Appliance, CryptoProxy, LinkKey, OffloadEvent, ProxyConfig, RemoteEvent,
    RemoteNode, RemoteNodeConfig, ServedAppliance, Target,
};

use driver::appliance::{self, link_key_path, write_link_key};
use driver::common::{
    Args, Clock, DriverError, Fields, Flow, bind_udp, finish, identity, issue,
    load_or_create_authority, log, make_dir, name_and_addr, random, read_trust, rng, warn,
    write_identity, write_trust,
};
use driver::tokio_net::{Net, bind_tcp};

const USAGE: &str = "\
offload: seed 000 on real sockets: crypto proxy, remote node, appliance

Usage: offload proxy [options]       the crypto proxy (start it first: it provisions)
       offload appliance [options]   the appliance (blocking.rs is the same, without async)
       offload remote [options]      the remote node: flow A (--send), flow B (--listen)

proxy options:
  --dir DIR             authority.secret, trust.cert, remote.cred, link-NAME.key
                                                              [default: offload]
  --appliance NAME=ADDR an appliance it deputizes for, at its datagram address;
                        repeatable                  [default: microwave=127.0.0.1:5683]
  --udp ADDR            its datagram socket (closed network)  [default: 127.0.0.1:5684]
  --stream ADDR         its stream port for remote nodes      [default: 127.0.0.1:8443]
  --name NAME           the name in its certificate           [default: proxy.home]
  --remote-name NAME    the subject of remote.cred            [default: phone]

appliance options:
APPLIANCE_OPTIONS

remote options:
  --dir DIR             where trust.cert and remote.cred are  [default: offload]
  --local ADDR          its datagram socket                   [default: 127.0.0.1:0]
  --proxy-name NAME     the name the proxy's certificate must carry [default: proxy.home]
  --send NAME=ADDR      flow A: send --message to appliance NAME at ADDR, print its
                        answer, exit
  --message TEXT        what --send sends                     [default: turn on]
  --listen ADDR         flow B: accept proxies' streams here and answer each message
                        with `ack: <message>` (port 0: the line `listening …` says which)
  --timeout SECONDS     with --send: give up after this long  [default: 60]

  -h, --help            this text

Every role logs each event on stdout. The proxy, the appliance and a listening remote
node run until killed. `offload remote --send` exits 0 when the appliance's answer is
`ack: <message>`, 3 when the proxy refused, 4 when the session failed or closed first,
5 on another answer, 1 on other failures, 2 on a command line that does not fit.";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let usage: &'static str = USAGE
        .replace("APPLIANCE_OPTIONS", appliance::OPTIONS)
        .leak();
    let mut args = match Args::from_env(usage) {
        Ok(args) => args,
        Err(e) => return finish("offload", Err(e)),
    };
    match args.positional().as_slice() {
        [role] if role == "proxy" => finish("proxy", proxy(args).await),
        [role] if role == "remote" => finish("remote", remote(args).await),
        [role] if role == "appliance" => finish("appliance", run_appliance(args).await),
        _ => finish(
            "offload",
            Err(DriverError::Usage(
                "expected one role: proxy, appliance or remote".into(),
            )),
        ),
    }
}

async fn proxy(mut args: Args) -> Result<u8, DriverError> {
    const WHO: &str = "proxy";
    let dir = args.path("--dir", "offload")?;
    let mut appliances = args
        .all("--appliance")
        .iter()
        .map(|v| name_and_addr("--appliance", v))
        .collect::<Result<Vec<_>, _>>()?;
    if appliances.is_empty() {
        appliances.push(("microwave".into(), parse_default("127.0.0.1:5683")));
    }
    let udp = args.addr("--udp", "127.0.0.1:5684")?;
    let stream = args.addr("--stream", "127.0.0.1:8443")?;
    let name = args
        .optional("--name")?
        .unwrap_or_else(|| "proxy.home".into());
    let remote_name = args
        .optional("--remote-name")?
        .unwrap_or_else(|| "phone".into());
    args.finish()?;

    let clock = Clock::start();
    make_dir(&dir)?;
    let (ca, _) = load_or_create_authority(&dir.join("authority.secret"), "home CA", &[])?;
    let trust_path = dir.join("trust.cert");
    write_trust(&trust_path, &ca)?;
    let remote_path = dir.join("remote.cred");
    write_identity(
        &remote_path,
        &format!("offload remote node {remote_name}: client certificate and key (secret)"),
        &issue(&ca, &remote_name, &[], &clock)?,
        &[],
    )?;
    log(
        &clock,
        WHO,
        format!(
            "trust anchor: {}; remote node credentials: {}",
            trust_path.display(),
            remote_path.display()
        ),
    );

    // The certificate names every appliance served: that is what a remote node checks
    // before it trusts this proxy with an appliance's data.
    let names: Vec<&str> = appliances.iter().map(|(n, _)| n.as_str()).collect();
    let mut channel = ServerConfig::with_certificate(
        identity(&issue(&ca, &name, &names, &clock)?),
        clock.anchor(),
    );
    channel.client_certs = ClientCertPolicy::Required(TrustStore::with(ca.certificate().clone()));
    let (socket, udp) = bind_udp(udp)?;
    let (listener, stream) = bind_tcp(stream).await?;
    let mut cfg = ProxyConfig::new(channel, udp);
    for (appliance, addr) in &appliances {
        let path = link_key_path(&dir, appliance);
        if !path.exists() {
            write_link_key(&path, appliance, &random::<32>()?)?;
        }
        let fields = Fields::read(&path)?;
        let key =
            LinkKey::new(fields.bytes("link-key")?).map_err(|e| DriverError::Credentials {
                path: path.clone(),
                problem: e.to_string(),
            })?;
        let mut served = ServedAppliance::new(*addr, AccessPolicy::AnyAuthenticated);
        served.link_key = Some(key);
        cfg.serve(appliance, served)
            .map_err(DriverError::deputy("serving an appliance"))?;
        log(
            &clock,
            WHO,
            format!(
                "deputizing for {appliance} at {addr}; link key {}",
                path.display()
            ),
        );
    }
    let mut net = Net::new(CryptoProxy::new(cfg, rng()?), clock, WHO);
    net.add_udp((socket, udp))?;
    net.add_listener((listener, stream));
    log(&clock, WHO, format!("listening udp={udp} stream={stream}"));
    // The proxy only relays: every event is logged by the loop, none needs an answer.
    net.run(None, |_, _, _| Ok(Flow::Continue)).await
}

/// A default address written in this file.
fn parse_default(addr: &str) -> SocketAddr {
    addr.parse()
        .unwrap_or_else(|_| unreachable!("the built-in default {addr} is an address"))
}

async fn remote(mut args: Args) -> Result<u8, DriverError> {
    const WHO: &str = "remote";
    let dir = args.path("--dir", "offload")?;
    let local = args.addr("--local", "127.0.0.1:0")?;
    let proxy_name = args
        .optional("--proxy-name")?
        .unwrap_or_else(|| "proxy.home".into());
    let send = match args.optional("--send")? {
        Some(v) => Some(name_and_addr("--send", &v)?),
        None => None,
    };
    let message = args
        .optional("--message")?
        .unwrap_or_else(|| "turn on".into())
        .into_bytes();
    let listen = match args.optional("--listen")? {
        Some(v) => Some(driver::common::parse_value::<SocketAddr>("--listen", &v)?),
        None => None,
    };
    let timeout = Duration::from_secs(args.parsed("--timeout", 60u64)?);
    args.finish()?;
    if send.is_none() && listen.is_none() {
        return Err(DriverError::Usage(
            "remote: give --send NAME=ADDR (flow A), --listen ADDR (flow B), or both".into(),
        ));
    }

    let clock = Clock::start();
    let trust = read_trust(&dir.join("trust.cert"))?;
    let me = Fields::read(&dir.join("remote.cred"))?.identity()?;
    let channel = ClientConfig::with_client_certificate(trust, &proxy_name, me, clock.anchor());
    let (socket, local) = bind_udp(local)?;
    let cfg = RemoteNodeConfig::new(channel, local);
    let mut net = Net::new(RemoteNode::new(cfg, rng()?), clock, WHO);
    net.add_udp((socket, local))?;
    if let Some(addr) = listen {
        let (listener, addr) = bind_tcp(addr).await?;
        net.add_listener((listener, addr));
        log(&clock, WHO, format!("listening {addr}"));
    }
    let target = send.map(|(name, addr)| Target::new(&name, addr));
    if let Some(target) = &target {
        net.command("send", |remote, now| remote.send(now, target, &message))?;
        log(
            &clock,
            WHO,
            format!(
                "flow A: sending {:?} to {} at {}",
                String::from_utf8_lossy(&message),
                target.name,
                target.addr
            ),
        );
    }
    let expected = [b"ack: ".as_slice(), &message].concat();
    // With --send the run ends with the answer; a listening node runs until killed.
    let limit = target.as_ref().map(|_| timeout);
    net.run(limit, |remote, now, event| {
        let OffloadEvent::Remote(event) = event else {
            return Ok(Flow::Continue);
        };
        let ours = |appliance: &str| target.as_ref().is_some_and(|t| t.name == appliance);
        Ok(match event {
            RemoteEvent::Received { appliance, data } if ours(&appliance) => {
                log(
                    &clock,
                    WHO,
                    format!("answer {:?}", String::from_utf8_lossy(&data)),
                );
                // The session is done; the loop's grace period lets the close go out.
                if let Err(e) = remote.close(now, &appliance) {
                    warn(&clock, WHO, format!("close refused: {e}"));
                }
                Flow::Stop(if data == expected { 0 } else { 5 })
            }
            RemoteEvent::Received { appliance, data } => {
                log(
                    &clock,
                    WHO,
                    format!(
                        "flow B: {appliance} says {:?}; answering",
                        String::from_utf8_lossy(&data)
                    ),
                );
                let reply = [b"ack: ".as_slice(), &data].concat();
                // The appliance opened the session (flow B): answer on it, no address.
                if let Err(e) = remote.send_on_session(now, &appliance, &reply) {
                    warn(&clock, WHO, format!("answer to {appliance} refused: {e}"));
                }
                Flow::Continue
            }
            RemoteEvent::Refused { appliance, reason } if ours(&appliance) => {
                log(&clock, WHO, format!("refused by the proxy: {reason:?}"));
                Flow::Stop(3)
            }
            RemoteEvent::Failed { appliance, error } if appliance.as_deref().is_some_and(ours) => {
                log(&clock, WHO, format!("failed: {error}"));
                Flow::Stop(4)
            }
            RemoteEvent::Closed { appliance } if ours(&appliance) => Flow::Stop(4),
            _ => Flow::Continue,
        })
    })
    .await
}

async fn run_appliance(mut args: Args) -> Result<u8, DriverError> {
    const WHO: &str = "appliance";
    let (cfg, mut behaviour) = appliance::from_args(&mut args)?;
    args.finish()?;
    let clock = Clock::start();
    let (socket, local) = bind_udp(cfg.local)?;
    let mut net = Net::new(Appliance::new(cfg, rng()?), clock, WHO);
    net.add_udp((socket, local))?;
    log(&clock, WHO, format!("{local}: running"));
    net.command("flow B request", |a, now| behaviour.start(a, now))?;
    net.run(None, |a, now, event| {
        if let Some(note) = behaviour.on_event(a, now, event) {
            log(&clock, WHO, note);
        }
        Ok(Flow::Continue)
    })
    .await
}

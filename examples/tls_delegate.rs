//! Seed 004 over TLS 1.3 on real sockets (tokio): the substitution server and the weak
//! terminal, as a TLS client or a TLS server, one subcommand each, in separate processes.
//! The terminal keeps its own TCP connection to the TLS peer (any TLS 1.3 endpoint, such
//! as `openssl s_server` or `s_client`) and runs the record layer; the server runs the
//! handshake with rustls on its behalf, over deputy's secure channel (PSK) on TCP.
//! `scripts/interop-tls.sh` runs both against OpenSSL.
//!
//! Provisioning: the server reads the terminal's TLS profile from `DIR` (PEM files made
//! with `openssl`, see the usage) and creates `DIR/terminal.secret` (the terminal's
//! channel identity, channel PSK and delegation key) on its first run; the terminal reads
//! that file and nothing else: it holds no certificate, key or trust anchor.

#[allow(dead_code)] // each example uses part of the shared driver code
#[path = "driver/mod.rs"]
mod driver;

use std::cell::Cell;
use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use deputy::channel::{ChannelServerConfig, ClientConfig, Psk, ServerConfig};
use deputy::ikev2::Identity;
use deputy::keyx::tls::server::TlsCredential;
use deputy::keyx::tls::{
    ClientAuth, Terminal, TerminalConfig, TerminalEvent, TlsConnId, TlsProfile, TlsSubstitute,
};
use deputy::keyx::{
    Bounds, DelegationKey, Direction, PeerPattern, PolicyDb, ServerEvent, SubstitutionServer,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;

use driver::common::{
    Args, Clock, DriverError, Fields, Flow, finish, log, make_dir, random, rng, warn, write_fields,
};
use driver::tokio_net::{Net, bind_tcp};

const USAGE: &str = "\
tls_delegate: seed 004 over TLS 1.3 on real sockets: substitution server and terminal

Usage: tls_delegate server [options]           the substitution server (start it first)
       tls_delegate terminal-client [options]  the terminal as a TLS client
       tls_delegate terminal-server [options]  the terminal as a TLS server (one connection)

server options:
  --listen ADDR       the channel's TCP address (port 0: the line `listening …` says
                      which)                                   [default: 127.0.0.1:7040]
  --dir DIR           the terminal's provisioning                [default: tls-delegate]
                        ca.pem          trust anchors for the terminal's peers
                        terminal.pem    the terminal's server certificate chain, and
                        terminal.key    its key (PKCS#8 or SEC1): for terminal-server
                        client.pem      (optional) the terminal's client certificate, and
                        client.key      its key, shown when a TLS server asks
                        allow.txt       (optional) names the terminal may reach and
                                        clients that may reach it, one a line; `.NAME`
                                        admits NAME and every name below it
                        terminal.secret created on the first run: the terminal's channel
                                        identity and PSK and its delegation key (secret)
  --allow NAME        a name as in allow.txt; repeatable
  --terminal NAME     the terminal's channel identity, when terminal.secret is created
                                                                 [default: terminal-1]
  --client-auth       the terminal as a server requires client certificates (checked
                      against ca.pem and the allowed names)
  --keylog FILE       append the handshakes' secrets to FILE (NSS key log format, for
                      Wireshark or tshark); they decrypt the terminal's traffic

terminal-client options:
  --server ADDR       the substitution server's channel address  [default: 127.0.0.1:7040]
  --connect HOST:PORT the TLS server to connect to (required)
  --name NAME         the server name to reach: SNI, certificate and policy (required)
  --dir DIR           where terminal.secret is                   [default: tls-delegate]
  --timeout SECONDS   give up after this long                    [default: 300]

terminal-server options:
  --server ADDR, --dir DIR, --timeout SECONDS as above
  --listen ADDR       accept one TLS connection here (port 0: the line `listening …`
                      says which)                               [default: 127.0.0.1:8443]

  -h, --help          this text

The terminals read lines on stdin: each is sent to the peer with a newline, except
  !k   update the send keys (a KeyUpdate, update_not_requested)
  !K   the same, asking the peer to update too (update_requested)
  !q   close the connection (close_notify)
Every process logs each event on stdout with the time since it started; data from the
peer is also logged as `received \"LINE\"`, one log line per line. The server runs until
killed. A terminal exits 0 when its connection closed after close_notify, 3 when it was
truncated, 4 when it failed, 1 on other failures (a bad file, an unreachable server),
2 on a command line that does not fit.";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // `--client-auth` is the one option without a value (the shared parser's options all
    // take one): taken out before the rest is parsed.
    let (switch, argv): (Vec<String>, Vec<String>) =
        std::env::args().skip(1).partition(|a| a == "--client-auth");
    let mut args = match Args::parse(USAGE, argv) {
        Ok(args) => args,
        Err(e) => return finish("tls_delegate", Err(e)),
    };
    let client_auth = !switch.is_empty();
    match args.positional().as_slice() {
        [role] if role == "server" => finish("server", server(args, client_auth).await),
        _ if client_auth => finish(
            "tls_delegate",
            Err(DriverError::Usage(
                "--client-auth is a server option".into(),
            )),
        ),
        [role] if role == "terminal-client" => finish("terminal", terminal(args, true).await),
        [role] if role == "terminal-server" => finish("terminal", terminal(args, false).await),
        _ => finish(
            "tls_delegate",
            Err(DriverError::Usage(
                "expected one role: server, terminal-client or terminal-server".into(),
            )),
        ),
    }
}

// ------------------------------------------------------------------------- files

/// The terminal's secrets, shared by the server and the terminal.
struct Secret {
    identity: String,
    channel_psk: Vec<u8>,
    delegation_key: [u8; 32],
}

impl Secret {
    fn read(path: &Path) -> Result<Secret, DriverError> {
        let fields = Fields::read(path)?;
        let identity = String::from_utf8(fields.bytes("identity")?.to_vec()).map_err(|_| {
            DriverError::Credentials {
                path: path.to_path_buf(),
                problem: "`identity` is not UTF-8".into(),
            }
        })?;
        Ok(Secret {
            identity,
            channel_psk: fields.bytes("channel-psk")?.to_vec(),
            delegation_key: fields.array::<32>("delegation-key")?,
        })
    }

    /// The file at `path`, created with fresh keys for `identity` if it does not exist.
    fn read_or_create(path: &Path, identity: &str) -> Result<Secret, DriverError> {
        if !path.exists() {
            write_fields(
                path,
                "the TLS terminal's channel identity and PSK, and its delegation key (secret)",
                &[
                    ("identity", identity.as_bytes()),
                    ("channel-psk", &random::<32>()?),
                    ("delegation-key", &random::<32>()?),
                ],
                true,
            )?;
        }
        Secret::read(path)
    }

    fn psk(&self, path: &Path) -> Result<Psk, DriverError> {
        Psk::new(self.identity.as_str(), &self.channel_psk).map_err(|e| DriverError::Credentials {
            path: path.to_path_buf(),
            problem: format!("not a channel PSK: {e}"),
        })
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, DriverError> {
    std::fs::read(path).map_err(|source| DriverError::File {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn bad_file(path: &Path, problem: impl std::fmt::Display) -> DriverError {
    DriverError::Credentials {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    }
}

/// Every certificate in a PEM file (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, DriverError> {
    let pem = read_file("cannot read the certificates", path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_file(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad_file(path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// A certificate chain and its key, from `NAME.pem` and `NAME.key` in `dir`.
fn credential(dir: &Path, name: &str) -> Result<TlsCredential, DriverError> {
    let chain = certificates(&dir.join(format!("{name}.pem")))?;
    let key_path = dir.join(format!("{name}.key"));
    let pem = read_file("cannot read the key", &key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| bad_file(&key_path, format!("not a PEM private key: {e}")))?;
    Ok(TlsCredential { chain, key })
}

/// `NAME` → exactly that FQDN; `.NAME` → NAME and every name below it.
fn pattern(name: &str) -> Result<PeerPattern, String> {
    let name = name.trim();
    match name.strip_prefix('.') {
        Some("") => Err("an empty domain".into()),
        Some(domain) => Ok(PeerPattern::Domain(domain.into())),
        None if name.is_empty() => Err("an empty name".into()),
        None => Ok(PeerPattern::Exactly(Identity::Fqdn(name.into()))),
    }
}

// ------------------------------------------------------------------------- server

async fn server(mut args: Args, client_auth: bool) -> Result<u8, DriverError> {
    const WHO: &str = "server";
    let listen = args.addr("--listen", "127.0.0.1:7040")?;
    let dir = args.path("--dir", "tls-delegate")?;
    let identity = args
        .optional("--terminal")?
        .unwrap_or_else(|| "terminal-1".into());
    let keylog = args.optional("--keylog")?.map(PathBuf::from);
    let mut names = args
        .all("--allow")
        .iter()
        .map(|n| {
            pattern(n).map_err(|reason| DriverError::BadValue {
                flag: "--allow".into(),
                value: n.clone(),
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    args.finish()?;

    let clock = Clock::start();
    make_dir(&dir)?;
    let secret_path = dir.join("terminal.secret");
    let secret = Secret::read_or_create(&secret_path, &identity)?;
    let allow_path = dir.join("allow.txt");
    if allow_path.exists() {
        let text = String::from_utf8(read_file("cannot read", &allow_path)?)
            .map_err(|_| bad_file(&allow_path, "not UTF-8"))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            names.push(
                pattern(line).map_err(|e| bad_file(&allow_path, format!("line {}: {e}", n + 1)))?,
            );
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    let ca_path = dir.join("ca.pem");
    for cert in certificates(&ca_path)? {
        roots
            .add(cert)
            .map_err(|e| bad_file(&ca_path, format!("not a trust anchor: {e}")))?;
    }
    let server_credential = credential(&dir, "terminal")?;
    let client_credential = if dir.join("client.pem").exists() {
        Some(credential(&dir, "client")?)
    } else {
        None
    };

    let mut policy = PolicyDb::new();
    for p in &names {
        for d in [Direction::ToTerminal, Direction::FromTerminal] {
            policy
                .allow(&secret.identity, d, p.clone())
                .map_err(DriverError::deputy("the policy database"))?;
        }
    }
    // The anchor is the wall-clock time at the loop's Instant::ZERO: certificates are
    // judged at anchor + now.
    let mut tls = TlsSubstitute::new(policy, 1, clock.anchor(), rng()?);
    let mut keylog_file = match &keylog {
        Some(path) => {
            tls.log_keys(1024);
            Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| DriverError::File {
                        what: "cannot open the key log",
                        path: path.clone(),
                        source,
                    })?,
            )
        }
        None => None,
    };
    tls.provision(
        secret.identity.clone(),
        TlsProfile {
            delegation_key: DelegationKey::new(secret.delegation_key),
            roots,
            client_credential,
            server_credential: Some(server_credential),
            client_auth: if client_auth {
                ClientAuth::Required
            } else {
                ClientAuth::None
            },
            alpn: vec![],
        },
    )
    .map_err(|e| bad_file(&dir, format!("the terminal's TLS profile: {e}")))?;
    let channel = ChannelServerConfig {
        channel: Arc::new(
            ServerConfig::with_psks([secret.psk(&secret_path)?], clock.anchor())
                .map_err(DriverError::deputy("the channel's configuration"))?,
        ),
        max_sessions: 16,
    };
    let (listener, listen) = bind_tcp(listen).await?;
    let server = SubstitutionServer::new(channel, tls, Bounds::default(), rng()?);
    let mut net = Net::new(server, clock, WHO);
    net.add_listener((listener, listen));
    log(
        &clock,
        WHO,
        format!(
            "listening {listen}; terminal {:?} provisioned from {}; client certificates {}; \
             allowed {} name(s)",
            secret.identity,
            dir.display(),
            if client_auth { "required" } else { "not asked" },
            names.len()
        ),
    );

    // The key log is collected on a tick (rustls writes it inside the handshake, which
    // reports no event here).
    let (tick_tx, mut ticks) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        loop {
            every.tick().await;
            if tick_tx.send(()).await.is_err() {
                return;
            }
        }
    });
    let mut write_keys = move |s: &mut SubstitutionServer<TlsSubstitute>| {
        let Some(file) = keylog_file.as_mut() else {
            return;
        };
        for line in s.protocol_mut().take_key_log() {
            if let Err(e) = writeln!(file, "{line}").and_then(|()| file.flush()) {
                warn(&clock, WHO, format!("key log: {e}"));
            }
        }
    };
    let write_keys = std::cell::RefCell::new(&mut write_keys);
    net.run_with_commands(
        None,
        Some(&mut ticks),
        |s, _, ()| {
            (write_keys.borrow_mut())(s);
            Ok(Flow::Continue)
        },
        |s, _, event| {
            (write_keys.borrow_mut())(s);
            if let ServerEvent::TerminalGone { .. } | ServerEvent::ChannelFailed { .. } = event {
                log(
                    &clock,
                    WHO,
                    format!("TLS counters: {:?}", s.protocol_mut().counters()),
                );
            }
            Ok(Flow::Continue)
        },
    )
    .await
}

// ------------------------------------------------------------------------- terminal

/// A line on stdin, as the terminal understands it.
enum Line {
    Data(Vec<u8>),
    UpdateKeys { request_peer: bool },
    Close,
}

impl Line {
    fn parse(line: &str) -> Line {
        match line {
            "!k" => Line::UpdateKeys {
                request_peer: false,
            },
            "!K" => Line::UpdateKeys { request_peer: true },
            "!q" => Line::Close,
            data => Line::Data(format!("{data}\n").into_bytes()),
        }
    }
}

/// Read stdin on a thread of its own (a blocking read), line by line, into a queue.
fn stdin_lines() -> mpsc::Receiver<Line> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            let line = line.trim_end_matches('\r');
            if tx.blocking_send(Line::parse(line)).is_err() {
                return;
            }
        }
    });
    rx
}

/// `HOST:PORT`, resolved (the first address).
fn host_port(flag: &str, value: &str) -> Result<SocketAddr, DriverError> {
    let bad = |reason: String| DriverError::BadValue {
        flag: flag.into(),
        value: value.into(),
        reason,
    };
    value
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("no address for this name".into()))
}

async fn terminal(mut args: Args, client: bool) -> Result<u8, DriverError> {
    const WHO: &str = "terminal";
    let server = args.addr("--server", "127.0.0.1:7040")?;
    let dir = args.path("--dir", "tls-delegate")?;
    let timeout = Duration::from_secs(args.parsed("--timeout", 300u64)?);
    let (connect, listen) = if client {
        let target = args.required("--connect")?;
        let name = args.required("--name")?;
        (Some((host_port("--connect", &target)?, name)), None)
    } else {
        (None, Some(args.addr("--listen", "127.0.0.1:8443")?))
    };
    args.finish()?;

    let clock = Clock::start();
    let secret_path = dir.join("terminal.secret");
    let secret = Secret::read(&secret_path)?;
    let channel = Arc::new(ClientConfig::with_psk(
        secret.psk(&secret_path)?,
        clock.anchor(),
    ));
    let local = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let cfg = TerminalConfig::new(
        local,
        server,
        channel,
        DelegationKey::new(secret.delegation_key),
    );
    let terminal =
        Terminal::new(cfg, rng()?, rng()?).map_err(DriverError::deputy("the terminal"))?;
    let mut net = Net::new(terminal, clock, WHO);
    let conn: Cell<Option<TlsConnId>> = Cell::new(None);
    if let Some(listen) = listen {
        let (listener, addr) = bind_tcp(listen).await?;
        net.add_listener((listener, addr));
        log(&clock, WHO, format!("listening {addr}"));
    }
    if let Some((remote, name)) = &connect {
        let id = net.command("connect", |t, now| t.connect(now, *remote, name))?;
        conn.set(Some(id));
        log(
            &clock,
            WHO,
            format!("connecting to {remote} as a client of {name:?}"),
        );
    }

    let mut lines = stdin_lines();
    net.run_with_commands(
        Some(timeout),
        Some(&mut lines),
        |t, now, line| {
            let Some(c) = conn.get() else {
                warn(&clock, WHO, "no connection yet: line dropped");
                return Ok(Flow::Continue);
            };
            let (what, r) = match line {
                Line::Data(data) => ("send", t.send(now, c, &data)),
                Line::UpdateKeys { request_peer } => {
                    log(
                        &clock,
                        WHO,
                        format!("updating keys (request_peer={request_peer})"),
                    );
                    ("update_keys", t.update_keys(now, c, request_peer))
                }
                Line::Close => {
                    log(&clock, WHO, "closing (close_notify)");
                    ("close", t.close(now, c))
                }
            };
            if let Err(e) = r {
                warn(&clock, WHO, format!("{what} refused: {e}"));
            }
            Ok(Flow::Continue)
        },
        |t, now, event| {
            Ok(match event {
                TerminalEvent::Accepted { conn: c, .. } => {
                    if conn.get().is_none() {
                        conn.set(Some(c));
                    } else if let Err(e) = t.close(now, c) {
                        // One connection at a time: a second one is closed.
                        warn(&clock, WHO, format!("close refused: {e}"));
                    }
                    Flow::Continue
                }
                TerminalEvent::Data { data, .. } => {
                    for line in String::from_utf8_lossy(&data).lines() {
                        log(&clock, WHO, format!("received {line:?}"));
                    }
                    Flow::Continue
                }
                TerminalEvent::PeerClosed { conn: c } => {
                    // Answer the peer's close_notify with ours; `Closed` follows.
                    if let Err(e) = t.close(now, c) {
                        warn(&clock, WHO, format!("close refused: {e}"));
                    }
                    Flow::Continue
                }
                TerminalEvent::Closed { conn: c } if conn.get() == Some(c) => Flow::Stop(0),
                TerminalEvent::Truncated { conn: c } if conn.get() == Some(c) => Flow::Stop(3),
                TerminalEvent::Failed { conn: c, .. } if conn.get() == Some(c) => Flow::Stop(4),
                _ => Flow::Continue,
            })
        },
    )
    .await
}

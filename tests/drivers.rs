//! The driver examples end to end, on loopback, with real sockets: each test starts the
//! example binaries as processes (the rendezvous server, an acceptor and an issuer; the
//! crypto proxy, an appliance and a remote node) and checks what each of them printed and
//! how it exited.
//!
//! This file builds nothing: `cargo test` builds the examples (into `target/<profile>/
//! examples/`, beside this test's `deps/` directory) before it runs the tests. Running
//! this file alone (`cargo test --test drivers`) does not build them; build them first
//! with `cargo build --examples`, or the tests fail saying so.
//!
//! Ports: every process that can binds port 0 and prints the port it got. The one
//! exception is the appliance, whose address its proxy must know before either starts;
//! the test asks the kernel for a free port and hands it to both.
//!
//! Every wait has a deadline of seconds, so a hang fails the test quickly and the failure
//! shows everything each process printed.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long any one step may take before the test fails. Generous for a loaded 2-core
/// CI machine; on loopback every step takes milliseconds.
const STEP: Duration = Duration::from_secs(20);

/// The path of example `name`, built by `cargo test` beside this test binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/drivers-<hash> → target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples; `cargo test --test drivers` \
         alone does not (run `cargo build --examples` first)",
        path.display()
    );
    path
}

/// A directory of its own for one test, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("deputy-drivers-{}-{test}", std::process::id()));
        // Left over from an earlier run with the same process id: start clean.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the test directory");
        TempDir(path)
    }

    fn join(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory in the temp dir harms nothing.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a process printed so far, line by line (stderr lines marked), and a signal for
/// each new one.
#[derive(Default)]
struct Output {
    state: Mutex<Printed>,
    more: Condvar,
}

#[derive(Default)]
struct Printed {
    lines: Vec<String>,
    /// Pipes read to their end (stdout, stderr).
    ended: u8,
}

/// A running example. Killed when dropped (the tests' own children only).
struct Proc {
    name: String,
    /// Behind a lock so that waiting for the exit needs no `&mut` while the tests hold
    /// references to every process for their failure reports.
    child: Mutex<Child>,
    output: Arc<Output>,
}

impl Proc {
    fn start(name: &str, example_name: &str, args: &[&str], dir: &TempDir) -> Proc {
        let mut child = Command::new(example(example_name))
            .args(args)
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {example_name}: {e}"));
        let output = Arc::new(Output::default());
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        collect(stdout, "", output.clone());
        collect(stderr, "(stderr) ", output.clone());
        Proc {
            name: name.to_string(),
            child: Mutex::new(child),
            output,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.output.state.lock().expect("output lock").lines.clone()
    }

    /// Whether some line so far contains `text`.
    fn printed(&self, text: &str) -> bool {
        self.lines().iter().any(|l| l.contains(text))
    }

    /// The first line containing `text`, waiting for it up to [`STEP`].
    fn wait_for(&self, text: &str) -> Result<String, String> {
        let deadline = Instant::now() + STEP;
        let mut printed = self.output.state.lock().expect("output lock");
        loop {
            if let Some(line) = printed.lines.iter().find(|l| l.contains(text)) {
                return Ok(line.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || printed.ended == 2 {
                return Err(format!(
                    "{} did not print {text:?} within {STEP:?}",
                    self.name
                ));
            }
            printed = self
                .output
                .more
                .wait_timeout(printed, left)
                .expect("output lock")
                .0;
        }
    }

    /// The exit status, waiting up to [`STEP`], once everything it printed is read.
    fn wait_exit(&self) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + STEP;
        loop {
            let exited = self.child.lock().expect("child lock").try_wait();
            match exited {
                Ok(Some(status)) => {
                    self.wait_ended(deadline);
                    return Ok(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => return Err(format!("{} did not exit within {STEP:?}", self.name)),
                Err(e) => return Err(format!("{}: {e}", self.name)),
            }
        }
    }
}

impl Proc {
    /// Wait until both pipes are read to their end (the process exited), or `deadline`.
    fn wait_ended(&self, deadline: Instant) {
        let mut printed = self.output.state.lock().expect("output lock");
        while printed.ended < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            printed = self
                .output
                .more
                .wait_timeout(printed, left)
                .expect("output lock")
                .0;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Our own child, by its handle: it may have exited already, which is fine.
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Read `from` line by line into `output` on a thread of its own.
fn collect(from: impl Read + Send + 'static, mark: &'static str, output: Arc<Output>) {
    std::thread::spawn(move || {
        // A read error ends the pipe like its end does.
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let mut printed = output.state.lock().expect("output lock");
            printed.lines.push(format!("{mark}{line}"));
            output.more.notify_all();
        }
        output.state.lock().expect("output lock").ended += 1;
        output.more.notify_all();
    });
}

/// Fail with `why` and everything every process printed.
fn fail(why: &str, procs: &[&Proc]) -> ! {
    let mut report = format!("{why}\n");
    for p in procs {
        report.push_str(&format!("--- {} printed:\n", p.name));
        for line in p.lines() {
            report.push_str(&format!("    {line}\n"));
        }
    }
    panic!("{report}");
}

/// Check `ok`, or fail with the processes' output.
fn check<T>(ok: Result<T, String>, procs: &[&Proc]) -> T {
    ok.unwrap_or_else(|why| fail(&why, procs))
}

/// The `key=address` word of a line such as `listening udp=127.0.0.1:40000 stream=…`.
fn address(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("no {key}=ADDRESS in {line:?}"))
        .to_string()
}

// ------------------------------------------------------------------------------------------
// Seed 002: rendezvous server, acceptor, issuer.
// ------------------------------------------------------------------------------------------

const PASSWORD: &str = "2133-secret";

/// A rendezvous server and a registered acceptor (device 2133), and the addresses an
/// issuer needs.
struct Rendezvous {
    server: Proc,
    acceptor: Proc,
    udp: String,
    issuers: String,
}

impl Rendezvous {
    fn start(dir: &TempDir) -> Rendezvous {
        let server = Proc::start(
            "server",
            "rendezvous_server",
            &[
                "--dir",
                ".",
                "--device",
                "2133",
                "--udp",
                "127.0.0.1:0",
                "--issuers",
                "127.0.0.1:0",
                "--devices",
                "127.0.0.1:0",
            ],
            dir,
        );
        let line = check(server.wait_for("listening udp="), &[&server]);
        let (udp, issuers, devices) = (
            address(&line, "udp"),
            address(&line, "issuers"),
            address(&line, "devices"),
        );
        let acceptor = Proc::start(
            "acceptor",
            "acceptor",
            &[
                "--device-file",
                &dir.join("device-2133.cred"),
                "--trust",
                &dir.join("trust.cert"),
                "--password",
                PASSWORD,
                "--server-udp",
                &udp,
                "--server-stream",
                &devices,
            ],
            dir,
        );
        // S202 both ways: the server recorded the device, the device saw the answer.
        check(
            server.wait_for("event DeviceRegistered { device: device-2133"),
            &[&server, &acceptor],
        );
        check(
            acceptor.wait_for("event Registered { public: 127.0.0.1:"),
            &[&server, &acceptor],
        );
        Rendezvous {
            server,
            acceptor,
            udp,
            issuers,
        }
    }

    fn issuer(&self, dir: &TempDir, password: &str, message: &str) -> Proc {
        Proc::start(
            "issuer",
            "issuer",
            &[
                "--device",
                "2133",
                "--password",
                password,
                "--message",
                message,
                "--trust",
                &dir.join("trust.cert"),
                "--server-stream",
                &self.issuers,
                "--server-udp",
                &self.udp,
                "--timeout",
                "20",
            ],
            dir,
        )
    }
}

#[test]
fn rendezvous_issuer_reaches_the_device_by_id_with_its_password_and_the_data_comes_back() {
    let dir = TempDir::new("rendezvous-ok");
    let world = Rendezvous::start(&dir);
    let message = "ping over real sockets";
    let issuer = world.issuer(&dir, PASSWORD, message);
    let all = [&world.server, &world.acceptor, &issuer];
    let status = check(issuer.wait_exit(), &all);
    if status.code() != Some(0) {
        fail(&format!("issuer exited with {status}"), &all);
    }
    // The issuer connected peer to peer and got its message back.
    for text in ["event PeerConnected {", &format!("answer {message:?}")] {
        if !issuer.printed(text) {
            fail(&format!("issuer did not print {text:?}"), &all);
        }
    }
    // The acceptor took the request, checked the password and echoed the data.
    for text in [
        "event ConnectionRequested {",
        "event PeerConnected {",
        &format!("received {message:?}, echoing it"),
    ] {
        check(world.acceptor.wait_for(text), &all);
    }
    // The server relayed the request and heard both devices report the direct connection.
    check(world.server.wait_for("event RequestForwarded {"), &all);
    check(world.server.wait_for("connected: true }"), &all);
    if world.acceptor.printed("PasswordRefused") {
        fail("the right password was refused", &all);
    }
}

#[test]
fn rendezvous_wrong_password_is_refused_and_nothing_connects() {
    let dir = TempDir::new("rendezvous-wrong");
    let world = Rendezvous::start(&dir);
    let issuer = world.issuer(&dir, "not-the-password", "let me in");
    let all = [&world.server, &world.acceptor, &issuer];
    let status = check(issuer.wait_exit(), &all);
    // Exit code 3: refused (see `issuer --help`).
    if status.code() != Some(3) {
        fail(&format!("issuer exited with {status}, expected 3"), &all);
    }
    if !issuer.printed("refused: WrongPassword") {
        fail("issuer did not report the wrong password", &all);
    }
    check(world.acceptor.wait_for("event PasswordRefused {"), &all);
    check(world.server.wait_for("reason: WrongPassword"), &all);
    for (p, text) in [
        (&issuer, "PeerConnected"),
        (&world.acceptor, "PeerConnected"),
        (&world.acceptor, "echoing"),
    ] {
        if p.printed(text) {
            fail(&format!("{} printed {text:?}", p.name), &all);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Seed 000: crypto proxy, appliance (tokio or blocking), remote node.
// ------------------------------------------------------------------------------------------

/// A free UDP port on loopback, for the appliance (see the module comment). The kernel
/// does not hand a port it just gave out to the next port-0 bind at once, so the window
/// in which another process could take it is small.
fn free_udp_port() -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    socket.local_addr().expect("its address").to_string()
}

/// Which loop drives the appliance.
#[derive(Clone, Copy)]
enum Loop {
    Tokio,
    Blocking,
}

/// A crypto proxy deputizing for `microwave` at `appliance`, and its stream address.
fn start_proxy(dir: &TempDir, appliance: &str) -> (Proc, String, String) {
    let proxy = Proc::start(
        "proxy",
        "offload",
        &[
            "proxy",
            "--dir",
            ".",
            "--appliance",
            &format!("microwave={appliance}"),
            "--udp",
            "127.0.0.1:0",
            "--stream",
            "127.0.0.1:0",
        ],
        dir,
    );
    let line = check(proxy.wait_for("listening udp="), &[&proxy]);
    let (udp, stream) = (address(&line, "udp"), address(&line, "stream"));
    (proxy, udp, stream)
}

fn start_appliance(
    dir: &TempDir,
    driver: Loop,
    local: &str,
    proxy_udp: &str,
    proxy_stream: &str,
    extra: &[&str],
) -> Proc {
    let mut args = vec![
        "--dir",
        ".",
        "--local",
        local,
        "--proxy",
        proxy_udp,
        "--proxy-stream",
        proxy_stream,
    ];
    args.extend_from_slice(extra);
    match driver {
        Loop::Tokio => {
            args.insert(0, "appliance");
            Proc::start("appliance", "offload", &args, dir)
        }
        Loop::Blocking => Proc::start("appliance (blocking)", "blocking", &args, dir),
    }
}

/// Flow A: the remote node sends to the appliance through the proxy and gets the
/// appliance's answer back.
fn flow_a(driver: Loop, test: &str) {
    let dir = TempDir::new(test);
    let local = free_udp_port();
    let (proxy, proxy_udp, proxy_stream) = start_proxy(&dir, &local);
    let appliance = start_appliance(&dir, driver, &local, &proxy_udp, &proxy_stream, &[]);
    check(appliance.wait_for("running"), &[&proxy, &appliance]);
    let remote = Proc::start(
        "remote",
        "offload",
        &[
            "remote",
            "--dir",
            ".",
            "--send",
            &format!("microwave={local}"),
            "--message",
            "turn on",
            "--timeout",
            "20",
        ],
        &dir,
    );
    let all = [&proxy, &appliance, &remote];
    let status = check(remote.wait_exit(), &all);
    if status.code() != Some(0) {
        fail(&format!("remote exited with {status}"), &all);
    }
    // S21/S22 with the appliance, the channel to the proxy, S23–S26, and the answer back.
    for text in [
        "event Remote(Designated {",
        "initiated_by: Remote",
        "answer \"ack: turn on\"",
    ] {
        if !remote.printed(text) {
            fail(&format!("remote did not print {text:?}"), &all);
        }
    }
    check(
        appliance.wait_for("event Appliance(CryptoRequested {"),
        &all,
    );
    check(
        appliance.wait_for("delivered \"turn on\" (flow A); answered"),
        &all,
    );
    check(
        proxy.wait_for("remote: Certificate(\"phone\"), initiated_by: Remote"),
        &all,
    );
}

/// Flow B: the appliance asks its proxy for a session with a listening remote node and
/// sends on it; the remote node answers.
fn flow_b(driver: Loop, test: &str) {
    let dir = TempDir::new(test);
    let local = free_udp_port();
    let (proxy, proxy_udp, proxy_stream) = start_proxy(&dir, &local);
    let remote = Proc::start(
        "remote",
        "offload",
        &["remote", "--dir", ".", "--listen", "127.0.0.1:0"],
        &dir,
    );
    let line = check(remote.wait_for("listening "), &[&proxy, &remote]);
    let listening = line
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .parse::<SocketAddr>()
        .unwrap_or_else(|_| fail(&format!("no address in {line:?}"), &[&remote]))
        .to_string();
    let appliance = start_appliance(
        &dir,
        driver,
        &local,
        &proxy_udp,
        &proxy_stream,
        &["--connect", &listening, "--message", "door open"],
    );
    let all = [&proxy, &appliance, &remote];
    // S31 → the proxy's stream and channel to the remote node → S32/S33 → S34, then S35/S36
    // one way and the answer the other.
    check(appliance.wait_for("initiated_by: Appliance"), &all);
    check(appliance.wait_for("sent \"door open\""), &all);
    check(
        remote.wait_for("flow B: microwave says \"door open\"; answering"),
        &all,
    );
    check(appliance.wait_for("delivered \"ack: door open\""), &all);
    check(proxy.wait_for("initiated_by: Appliance"), &all);
}

#[test]
fn offload_flow_a_with_the_tokio_appliance() {
    flow_a(Loop::Tokio, "flow-a-tokio");
}

#[test]
fn offload_flow_a_with_the_blocking_appliance() {
    flow_a(Loop::Blocking, "flow-a-blocking");
}

#[test]
fn offload_flow_b_with_the_tokio_appliance() {
    flow_b(Loop::Tokio, "flow-b-tokio");
}

#[test]
fn offload_flow_b_with_the_blocking_appliance() {
    flow_b(Loop::Blocking, "flow-b-blocking");
}

// ------------------------------------------------------------------------------------------
// Bad input: a typed error and a non-zero exit code, never a panic.
// ------------------------------------------------------------------------------------------

/// Run `example` with `args` to its end; its exit code and everything it printed.
fn run_to_end(dir: &TempDir, example_name: &str, args: &[&str]) -> (Option<i32>, String) {
    let p = Proc::start(example_name, example_name, args, dir);
    let status = check(p.wait_exit(), &[&p]);
    (status.code(), p.lines().join("\n"))
}

#[test]
fn bad_input_is_a_typed_error_with_a_nonzero_exit_code_never_a_panic() {
    let dir = TempDir::new("bad-input");
    std::fs::write(dir.0.join("garbage.cert"), "ca-certificate: zz\n").expect("write");
    std::fs::write(dir.0.join("empty.cred"), "# nothing here\n").expect("write");
    std::fs::create_dir_all(dir.0.join("tls-garbage")).expect("mkdir");
    std::fs::write(dir.0.join("tls-garbage/ca.pem"), "not PEM at all\n").expect("write");
    let cases: &[(&str, &[&str], i32, &str)] = &[
        (
            "rendezvous_server",
            &["--udp", "nonsense"],
            2,
            "invalid socket address",
        ),
        ("rendezvous_server", &["--device", "twenty"], 2, "--device"),
        (
            "rendezvous_server",
            &["--frobnicate", "1"],
            2,
            "unknown option --frobnicate",
        ),
        (
            "acceptor",
            &["--password", "x"],
            2,
            "--device-file is required",
        ),
        (
            "acceptor",
            &["--device-file", "missing.cred", "--password", "x"],
            1,
            "cannot read missing.cred",
        ),
        (
            "acceptor",
            &["--device-file", "empty.cred", "--password", "x"],
            1,
            "no field `device-id`",
        ),
        (
            "issuer",
            &[
                "--device",
                "2133",
                "--password",
                "x",
                "--trust",
                "garbage.cert",
            ],
            1,
            "garbage.cert: line 1: not hex",
        ),
        (
            "issuer",
            &["--device", "2133", "--password", &"p".repeat(65)],
            2,
            "must be 1 to 64 bytes",
        ),
        (
            "issuer",
            &[
                "--device",
                "2133",
                "--password",
                "x",
                "--server-udp",
                "1.2.3.4",
            ],
            2,
            "--server-udp",
        ),
        ("offload", &["toaster"], 2, "expected one role"),
        ("offload", &["remote", "--dir", "."], 2, "give --send"),
        (
            "offload",
            &["remote", "--send", "microwave"],
            2,
            "expected NAME=ADDR",
        ),
        (
            "offload",
            &["appliance", "--local", "127.0.0.1:0"],
            2,
            "needs a fixed port",
        ),
        ("blocking", &["--dir", "nowhere"], 1, "link-microwave.key"),
        ("tls_delegate", &["toaster"], 2, "expected one role"),
        (
            "tls_delegate",
            &["server", "--listen", "nope"],
            2,
            "invalid socket address",
        ),
        (
            "tls_delegate",
            &["terminal-client", "--client-auth"],
            2,
            "--client-auth is a server option",
        ),
        (
            "tls_delegate",
            &["terminal-client", "--name", "x", "--connect", "127.0.0.1"],
            2,
            "--connect",
        ),
        (
            "tls_delegate",
            &[
                "terminal-client",
                "--dir",
                "nowhere",
                "--name",
                "x",
                "--connect",
                "127.0.0.1:1",
            ],
            1,
            "cannot read nowhere/terminal.secret",
        ),
        (
            "tls_delegate",
            &["server", "--listen", "127.0.0.1:0", "--dir", "tls-empty"],
            1,
            "cannot read the certificates tls-empty/ca.pem",
        ),
        (
            "tls_delegate",
            &["server", "--listen", "127.0.0.1:0", "--dir", "tls-garbage"],
            1,
            "tls-garbage/ca.pem: no CERTIFICATE in the file",
        ),
    ];
    let mut problems = Vec::new();
    for (example_name, args, code, text) in cases {
        let (got, printed) = run_to_end(&dir, example_name, args);
        if got != Some(*code) || !printed.contains(text) || !printed.contains("error:") {
            problems.push(format!(
                "{example_name} {args:?}: exit {got:?} (expected {code}), printed:\n{printed}\n(expected {text:?})"
            ));
        }
        if printed.contains("panicked") {
            problems.push(format!("{example_name} {args:?} panicked:\n{printed}"));
        }
    }
    // `--help` is not an error: usage on stdout, exit code 0.
    for example_name in [
        "rendezvous_server",
        "acceptor",
        "issuer",
        "offload",
        "blocking",
        "tls_delegate",
    ] {
        let (got, printed) = run_to_end(&dir, example_name, &["--help"]);
        if got != Some(0) || !printed.contains("Usage:") || printed.contains("(stderr)") {
            problems.push(format!(
                "{example_name} --help: exit {got:?}, printed:\n{printed}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

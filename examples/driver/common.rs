//! What every driver example shares, async or not: the clock (a `std::time::Instant`
//! mapped onto `deputy::Instant`), randomness from the operating system, command-line
//! arguments, the credential files the processes pass each other, logging, and the
//! typed errors a user sees instead of a panic.
//!
//! Nothing here reads a socket: the tokio loop (`tokio_net.rs`) and the blocking loop
//! (`../blocking.rs`) both build on it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use deputy::crypto::cert::{
    Certificate, CertificateAuthority, CertificateRequest, CertifiedKey, SigningKeyPair, TrustStore,
};
use deputy::{Instant, UnixTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Everything a driver example can fail with. Bad input (arguments, addresses, files,
/// keys) is one of these, printed, with a non-zero exit code: never a panic.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// `--help`: not a failure; the usage goes to stdout and the exit code is 0.
    #[error("{0}")]
    Help(&'static str),
    /// The command line does not fit the usage.
    #[error("{0} (see --help)")]
    Usage(String),
    /// An option's value is malformed (an address, a number, a name).
    #[error("{flag} {value:?}: {reason} (see --help)")]
    BadValue {
        flag: String,
        value: String,
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A credential file is readable but its content is wrong (missing field, bad hex,
    /// wrong length, a certificate that does not decode).
    #[error("{}: {problem}", path.display())]
    Credentials { path: PathBuf, problem: String },
    /// A socket could not be bound, listened on or used.
    #[error("{what}: {source}")]
    Socket {
        what: String,
        source: std::io::Error,
    },
    /// deputy refused a configuration or a command.
    #[error("{what}: {source}")]
    Deputy {
        what: &'static str,
        source: deputy::Error,
    },
    /// The operating system gave no randomness.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    /// The run did not finish in the time it was given.
    #[error("gave up after {0:?} without an outcome")]
    TimedOut(Duration),
}

impl DriverError {
    /// A deputy error in the step `what`.
    pub fn deputy(what: &'static str) -> impl FnOnce(deputy::Error) -> DriverError {
        move |source| DriverError::Deputy { what, source }
    }

    /// A socket error in the step `what`.
    pub fn socket(what: impl fmt::Display) -> impl FnOnce(std::io::Error) -> DriverError {
        move |source| DriverError::Socket {
            what: what.to_string(),
            source,
        }
    }

    /// Exit code: 2 for a command line that does not fit, 1 for everything else.
    fn exit_code(&self) -> u8 {
        match self {
            DriverError::Help(_) => 0,
            DriverError::Usage(_) | DriverError::BadValue { .. } => 2,
            _ => 1,
        }
    }
}

/// The end of every example's `main`: the outcome's exit code, or the error printed to
/// stderr with its exit code (usage to stdout for `--help`).
pub fn finish(who: &str, result: Result<u8, DriverError>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(DriverError::Help(usage)) => {
            print_line(&mut std::io::stdout(), usage);
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_line(&mut std::io::stderr(), format!("{who}: error: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}

/// What an application tells the loop after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep running.
    Continue,
    /// Done: exit with this code (after a short grace period in which what is already
    /// under way, such as a close-notify or a stream's last bytes, still goes out).
    Stop(u8),
}

/// The driver's clock: deputy's [`Instant`] is nanoseconds since `origin`, and the
/// wall-clock time at that origin is the `UnixTime` anchor certificates and registration
/// timestamps are checked against.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
    anchor: UnixTime,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn start() -> Clock {
        // A system clock before 1970 is a broken machine; certificates would fail their
        // validity check with a typed error, so 0 is an honest answer here.
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Clock {
            origin: std::time::Instant::now(),
            anchor: UnixTime(wall),
        }
    }

    /// deputy's time now.
    pub fn now(&self) -> Instant {
        self.instant(std::time::Instant::now())
    }

    /// deputy's time at `t` (the origin for anything earlier).
    pub fn instant(&self, t: std::time::Instant) -> Instant {
        let nanos = t.saturating_duration_since(self.origin).as_nanos();
        // u64 nanoseconds last 584 years from the origin.
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The `std` instant of a deputy deadline, or `None` if it lies beyond what `std`
    /// can represent (an actor saying "much later" is a deadline never reached).
    pub fn deadline(&self, at: Instant) -> Option<std::time::Instant> {
        self.origin.checked_add(at.since_origin())
    }

    /// How long from now until `at` (zero if it has passed).
    pub fn until(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.now())
    }

    /// The wall-clock time at deputy's origin.
    pub fn anchor(&self) -> UnixTime {
        self.anchor
    }
}

/// One log line on stdout: `[   1.234567s] who: message`. Each driver logs every event
/// its actor reports this way; the tests read these lines.
pub fn log(clock: &Clock, who: &str, msg: impl fmt::Display) {
    let line = format!("[{:>12}] {who}: {msg}", clock.now().to_string());
    print_line(&mut std::io::stdout(), line);
}

/// A warning on stderr: something the driver dropped or an input the actor refused.
pub fn warn(clock: &Clock, who: &str, msg: impl fmt::Display) {
    let line = format!("[{:>12}] {who}: {msg}", clock.now().to_string());
    print_line(&mut std::io::stderr(), line);
}

/// Write one line and flush. Unlike `println!`, a closed pipe (the reader went away, as
/// with `| head`) is not a panic: there is no one left to tell.
fn print_line(out: &mut impl std::io::Write, line: impl fmt::Display) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Bind a UDP socket before the actor is built (its configuration needs the port): the
/// socket and the address it got (port 0 asks for any free port).
pub fn bind_udp(addr: SocketAddr) -> Result<(std::net::UdpSocket, SocketAddr), DriverError> {
    let socket = std::net::UdpSocket::bind(addr)
        .map_err(DriverError::socket(format!("cannot bind UDP {addr}")))?;
    let local = socket
        .local_addr()
        .map_err(DriverError::socket(format!("UDP socket {addr}")))?;
    Ok((socket, local))
}

/// A fresh ChaCha20 generator seeded by the operating system: the `deputy::Rng` each
/// actor owns.
pub fn rng() -> Result<deputy::Rng, DriverError> {
    Ok(Box::new(ChaCha20Rng::from_seed(random()?)))
}

/// `N` random bytes from the operating system.
pub fn random<const N: usize>() -> Result<[u8; N], DriverError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| DriverError::Random(e.to_string()))?;
    Ok(bytes)
}

/// The command line: `--flag value` (or `--flag=value`) pairs, repeatable, and
/// positional words. Every flag takes a value; `--help`/`-h` asks for the usage. Each
/// getter takes its flag out, and [`Args::finish`] refuses whatever is left, so a typo is
/// an error rather than a silently ignored option.
#[derive(Debug)]
pub struct Args {
    values: Vec<(String, String)>,
    positional: Vec<String>,
}

impl Args {
    /// This process's arguments, checked against nothing yet.
    pub fn from_env(usage: &'static str) -> Result<Args, DriverError> {
        Args::parse(usage, std::env::args().skip(1))
    }

    /// `argv` (without the program name).
    pub fn parse(
        usage: &'static str,
        argv: impl IntoIterator<Item = String>,
    ) -> Result<Args, DriverError> {
        let mut values = Vec::new();
        let mut positional = Vec::new();
        let mut argv = argv.into_iter();
        while let Some(arg) = argv.next() {
            if arg == "--help" || arg == "-h" {
                return Err(DriverError::Help(usage));
            }
            let Some(flag) = arg.strip_prefix("--") else {
                positional.push(arg);
                continue;
            };
            let (flag, value) = match flag.split_once('=') {
                Some((f, v)) => (f.to_string(), v.to_string()),
                None => match argv.next() {
                    Some(v) => (flag.to_string(), v),
                    None => return Err(DriverError::Usage(format!("--{flag} needs a value"))),
                },
            };
            values.push((format!("--{flag}"), value));
        }
        Ok(Args { values, positional })
    }

    /// The positional words, in order (taken out).
    pub fn positional(&mut self) -> Vec<String> {
        std::mem::take(&mut self.positional)
    }

    /// Every value given for `flag`, in order.
    pub fn all(&mut self, flag: &str) -> Vec<String> {
        let (taken, kept) = std::mem::take(&mut self.values)
            .into_iter()
            .partition(|(f, _)| f == flag);
        self.values = kept;
        taken.into_iter().map(|(_, v)| v).collect()
    }

    /// The value of `flag` if given (once at most).
    pub fn optional(&mut self, flag: &str) -> Result<Option<String>, DriverError> {
        let mut all = self.all(flag);
        match all.len() {
            0 => Ok(None),
            1 => Ok(all.pop()),
            _ => Err(DriverError::Usage(format!("{flag} given more than once"))),
        }
    }

    /// The value of `flag`, which must be given.
    pub fn required(&mut self, flag: &str) -> Result<String, DriverError> {
        self.optional(flag)?
            .ok_or_else(|| DriverError::Usage(format!("{flag} is required")))
    }

    /// The value of `flag` parsed as `T`, or `default` when absent.
    pub fn parsed<T>(&mut self, flag: &str, default: T) -> Result<T, DriverError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.optional(flag)? {
            Some(v) => parse_value(flag, &v),
            None => Ok(default),
        }
    }

    /// A socket address, `default` when absent.
    pub fn addr(&mut self, flag: &str, default: &str) -> Result<SocketAddr, DriverError> {
        let value = self.optional(flag)?.unwrap_or_else(|| default.to_string());
        parse_value(flag, &value)
    }

    /// A path, `default` when absent.
    pub fn path(&mut self, flag: &str, default: &str) -> Result<PathBuf, DriverError> {
        Ok(PathBuf::from(
            self.optional(flag)?.unwrap_or_else(|| default.to_string()),
        ))
    }

    /// The password: `--password TEXT` or `--password-file FILE` (its first line), one of
    /// them required.
    pub fn password(&mut self) -> Result<Vec<u8>, DriverError> {
        match (
            self.optional("--password")?,
            self.optional("--password-file")?,
        ) {
            (Some(p), None) => Ok(p.into_bytes()),
            (None, Some(file)) => {
                let path = PathBuf::from(file);
                let text = std::fs::read_to_string(&path).map_err(|source| DriverError::File {
                    what: "cannot read the password file",
                    path,
                    source,
                })?;
                Ok(text.lines().next().unwrap_or("").as_bytes().to_vec())
            }
            (Some(_), Some(_)) => Err(DriverError::Usage(
                "give --password or --password-file, not both".into(),
            )),
            (None, None) => Err(DriverError::Usage(
                "--password or --password-file is required".into(),
            )),
        }
    }

    /// Refuse anything not taken: unknown flags, stray words.
    pub fn finish(self) -> Result<(), DriverError> {
        if let Some((flag, _)) = self.values.first() {
            return Err(DriverError::Usage(format!("unknown option {flag}")));
        }
        if let Some(word) = self.positional.first() {
            return Err(DriverError::Usage(format!("unexpected argument {word:?}")));
        }
        Ok(())
    }
}

/// `value` of `flag` parsed as `T`, or a typed error naming both.
pub fn parse_value<T>(flag: &str, value: &str) -> Result<T, DriverError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value.parse().map_err(|e: T::Err| DriverError::BadValue {
        flag: flag.to_string(),
        value: value.to_string(),
        reason: e.to_string(),
    })
}

/// `NAME=ADDR` (an appliance and its address, a target), as given to `flag`.
pub fn name_and_addr(flag: &str, value: &str) -> Result<(String, SocketAddr), DriverError> {
    let bad = |reason: &str| DriverError::BadValue {
        flag: flag.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let (name, addr) = value
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=ADDR"))?;
    if name.is_empty() {
        return Err(bad("the name is empty"));
    }
    let addr = addr
        .parse()
        .map_err(|e: std::net::AddrParseError| bad(&e.to_string()))?;
    Ok((name.to_string(), addr))
}

// ---------------------------------------------------------------------------------------
// Credential files: how the processes hand each other trust anchors, identities and keys.
//
// A file is text: `#` comments, then one `name: hex` line per field. The format is the
// examples' own (deputy has no file format; a product would use its provisioning system).
// Secret files are created readable by their owner only.
// ---------------------------------------------------------------------------------------

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string, or why not.
pub fn unhex(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("not hex at character {i}"))
        })
        .collect()
}

/// Write a credential file: a comment saying what it is, then the fields. `secret`
/// files are created with mode 0600 (on Unix).
pub fn write_fields(
    path: &Path,
    comment: &str,
    fields: &[(&str, &[u8])],
    secret: bool,
) -> Result<(), DriverError> {
    let mut text = format!("# {comment}\n");
    for (name, value) in fields {
        text.push_str(&format!("{name}: {}\n", hex(value)));
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = secret; // No portable permission bits: the directory's own access applies.
    let file_error = |source| DriverError::File {
        what: "cannot write",
        path: path.to_path_buf(),
        source,
    };
    let mut file = options.open(path).map_err(file_error)?;
    file.write_all(text.as_bytes()).map_err(file_error)
}

/// The fields of a credential file.
#[derive(Debug)]
pub struct Fields {
    path: PathBuf,
    map: BTreeMap<String, Vec<u8>>,
}

impl Fields {
    /// Read and parse `path`.
    pub fn read(path: &Path) -> Result<Fields, DriverError> {
        let text = std::fs::read_to_string(path).map_err(|source| DriverError::File {
            what: "cannot read",
            path: path.to_path_buf(),
            source,
        })?;
        let mut map = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let problem = |what: String| DriverError::Credentials {
                path: path.to_path_buf(),
                problem: format!("line {}: {what}", n + 1),
            };
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| problem("expected `name: hex`".into()))?;
            let bytes = unhex(value).map_err(problem)?;
            map.insert(name.trim().to_string(), bytes);
        }
        Ok(Fields {
            path: path.to_path_buf(),
            map,
        })
    }

    fn problem(&self, problem: String) -> DriverError {
        DriverError::Credentials {
            path: self.path.clone(),
            problem,
        }
    }

    /// The bytes of field `name`.
    pub fn bytes(&self, name: &str) -> Result<&[u8], DriverError> {
        self.map
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| self.problem(format!("no field `{name}`")))
    }

    /// Field `name`, exactly `N` bytes.
    pub fn array<const N: usize>(&self, name: &str) -> Result<[u8; N], DriverError> {
        let bytes = self.bytes(name)?;
        bytes.try_into().map_err(|_| {
            self.problem(format!(
                "field `{name}` has {} bytes, expected {N}",
                bytes.len()
            ))
        })
    }

    /// Field `name` as a certificate.
    pub fn certificate(&self, name: &str) -> Result<Certificate, DriverError> {
        Certificate::decode(self.bytes(name)?)
            .map_err(|e| self.problem(format!("field `{name}` is not a certificate: {e}")))
    }

    /// The identity in this file: `certificate` and `key-seed` (the Ed25519 secret),
    /// which must belong together.
    pub fn identity(&self) -> Result<CertifiedKey, DriverError> {
        let certificate = self.certificate("certificate")?;
        let key = SigningKeyPair::from_seed(&self.array::<32>("key-seed")?);
        if key.public_key() != *certificate.public_key() {
            return Err(self.problem("`key-seed` is not the key of `certificate`".into()));
        }
        Ok(CertifiedKey { certificate, key })
    }
}

/// The trust anchor file (`trust.cert`, field `ca-certificate`) a server writes for its
/// clients, as a trust store.
pub fn read_trust(path: &Path) -> Result<TrustStore, DriverError> {
    let fields = Fields::read(path)?;
    let ca = fields.certificate("ca-certificate")?;
    if !ca.is_ca() {
        return Err(fields.problem("`ca-certificate` is not a CA certificate".into()));
    }
    Ok(TrustStore::with(ca))
}

/// Write the trust anchor file for `ca`.
pub fn write_trust(path: &Path, ca: &CertificateAuthority) -> Result<(), DriverError> {
    write_fields(
        path,
        "trust anchor: the CA certificate that certifies the server (public)",
        &[("ca-certificate", ca.certificate().as_bytes())],
        false,
    )
}

/// The CA stored in `path` (fields `ca-certificate` and `ca-key-seed`, rebuilt with
/// `CertificateAuthority::from_parts`), created if the file does not exist yet; `extra`
/// fields are created with it (random bytes of the given lengths) and returned. So a
/// restarted server keeps its trust anchor and the credentials it gave out stay valid.
pub fn load_or_create_authority(
    path: &Path,
    name: &str,
    extra: &[&str],
) -> Result<(CertificateAuthority, Fields), DriverError> {
    if !path.exists() {
        let ca = CertificateAuthority::generate(name, &mut *rng()?);
        let mut values = vec![
            (
                "ca-certificate".to_string(),
                ca.certificate().as_bytes().to_vec(),
            ),
            ("ca-key-seed".to_string(), ca.key().seed().to_vec()),
        ];
        for field in extra {
            values.push((field.to_string(), random::<32>()?.to_vec()));
        }
        let fields: Vec<(&str, &[u8])> = values
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        write_fields(
            path,
            "authority: the CA's certificate and secret key seed, the server's master keys (secret)",
            &fields,
            true,
        )?;
    }
    let fields = Fields::read(path)?;
    for field in extra {
        fields.array::<32>(field)?;
    }
    let key = SigningKeyPair::from_seed(&fields.array::<32>("ca-key-seed")?);
    let ca = CertificateAuthority::from_parts(fields.certificate("ca-certificate")?, key)
        .map_err(|e| fields.problem(format!("the stored CA does not rebuild: {e}")))?;
    Ok((ca, fields))
}

/// A new key pair certified by `ca` for `subject` (and `also_names`), valid from a day
/// before now (clocks of different machines differ) for two years. Returns the key's
/// seed with the certificate, so both can be written to a credential file.
pub fn issue(
    ca: &CertificateAuthority,
    subject: &str,
    also_names: &[&str],
    clock: &Clock,
) -> Result<([u8; 32], Certificate), DriverError> {
    const DAY: u64 = 86_400;
    let seed = random::<32>()?;
    let key = SigningKeyPair::from_seed(&seed);
    let not_before = UnixTime(clock.anchor().0.saturating_sub(DAY));
    let request = CertificateRequest {
        subject,
        also_names,
        public_key: key.public_key(),
        not_before,
        not_after: UnixTime(not_before.0.saturating_add(2 * 365 * DAY)),
        is_ca: false,
    };
    let certificate = ca
        .issue(&request, &mut *rng()?)
        .map_err(|e| DriverError::Deputy {
            what: "issuing a certificate",
            source: e.into(),
        })?;
    Ok((seed, certificate))
}

/// An identity (`certificate`, `key-seed`) as credential-file fields, plus `extra`.
pub fn write_identity(
    path: &Path,
    comment: &str,
    (seed, certificate): &([u8; 32], Certificate),
    extra: &[(&str, &[u8])],
) -> Result<(), DriverError> {
    let mut fields: Vec<(&str, &[u8])> =
        vec![("certificate", certificate.as_bytes()), ("key-seed", seed)];
    fields.extend_from_slice(extra);
    write_fields(path, comment, &fields, true)
}

/// A [`CertifiedKey`] from a seed and certificate just issued.
pub fn identity((seed, certificate): &([u8; 32], Certificate)) -> CertifiedKey {
    CertifiedKey {
        certificate: certificate.clone(),
        key: SigningKeyPair::from_seed(seed),
    }
}

/// Create `dir` (and its parents) if needed.
pub fn make_dir(dir: &Path) -> Result<(), DriverError> {
    std::fs::create_dir_all(dir).map_err(|source| DriverError::File {
        what: "cannot create the directory",
        path: dir.to_path_buf(),
        source,
    })
}

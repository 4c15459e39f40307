//! What the three seed 002 examples agree on: the server's certificate name and the
//! device credential file the server writes and the acceptor reads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use deputy::crypto::cert::{Certificate, CertifiedKey, TrustStore};
use deputy::rendezvous::{DeviceId, Password, RegistrationKey};

use super::common::{Args, DriverError, Fields, read_trust, write_identity};

/// The name in the server's certificate, checked by both devices (`--server-name`).
pub const SERVER_NAME: &str = "rendezvous.example";

/// How a device finds and trusts the server, and its own UDP socket: the options the
/// acceptor and the issuer share.
pub struct ServerOptions {
    /// The CA's file (`--trust`, the server's `trust.cert`).
    pub trust: PathBuf,
    /// The server's UDP address (`--server-udp`).
    pub udp: SocketAddr,
    /// The server's stream address for this kind of device (`--server-stream`).
    pub stream: SocketAddr,
    /// The name the server's certificate must carry (`--server-name`).
    pub name: String,
    /// This device's UDP socket (`--local`).
    pub local: SocketAddr,
    /// The password (`--password` or `--password-file`), 1 to 64 bytes.
    pub password: Vec<u8>,
}

impl ServerOptions {
    /// Take the shared options; `stream` is the default server stream address (issuers
    /// and devices use different ports). Files are read later ([`ServerOptions::trust`]),
    /// once the whole command line is known to be right.
    pub fn take(args: &mut Args, stream: &str) -> Result<ServerOptions, DriverError> {
        let password = args.password()?;
        let trust = args.path("--trust", "rendezvous/trust.cert")?;
        let udp = args.addr("--server-udp", "127.0.0.1:1200")?;
        let stream = args.addr("--server-stream", stream)?;
        let name = args
            .optional("--server-name")?
            .unwrap_or_else(|| SERVER_NAME.into());
        let local = args.addr("--local", "127.0.0.1:0")?;
        if password.is_empty() || password.len() > Password::MAX_LEN {
            return Err(DriverError::BadValue {
                flag: "--password".into(),
                value: "(not shown)".into(),
                reason: format!("must be 1 to {} bytes", Password::MAX_LEN),
            });
        }
        Ok(ServerOptions {
            trust,
            udp,
            stream,
            name,
            local,
            password,
        })
    }

    /// The trust store in the `--trust` file.
    pub fn trust(&self) -> Result<TrustStore, DriverError> {
        read_trust(&self.trust)
    }
}

/// A device's credentials: its ID, its certificate and key (naming `device-<id>`, for
/// the server channel, S206) and its registration key (S202).
pub struct Device {
    pub id: DeviceId,
    pub identity: CertifiedKey,
    pub registration_key: RegistrationKey,
}

/// Write a device's credentials (secret) for the acceptor that will act as it.
pub fn write_device(
    path: &Path,
    id: DeviceId,
    issued: &([u8; 32], Certificate),
    registration_key: &RegistrationKey,
) -> Result<(), DriverError> {
    write_identity(
        path,
        &format!("rendezvous device {id}: certificate, key, registration key (secret)"),
        issued,
        &[
            ("device-id", &id.0.to_be_bytes()),
            ("registration-key", registration_key.as_bytes()),
        ],
    )
}

/// Read what [`write_device`] wrote.
pub fn read_device(path: &Path) -> Result<Device, DriverError> {
    let fields = Fields::read(path)?;
    let id = DeviceId(u64::from_be_bytes(fields.array::<8>("device-id")?));
    let identity = fields.identity()?;
    if !identity.certificate.names(&id.certificate_name()) {
        return Err(DriverError::Credentials {
            path: path.to_path_buf(),
            problem: format!("the certificate does not name {}", id.certificate_name()),
        });
    }
    Ok(Device {
        id,
        identity,
        registration_key: RegistrationKey::from_bytes(fields.array::<32>("registration-key")?),
    })
}

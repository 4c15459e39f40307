//! Channel configuration: who we are, whom we trust, what we accept.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use zeroize::Zeroizing;

use super::ChannelError;
use crate::UnixTime;
use crate::crypto::aead::AeadAlg;
use crate::crypto::cert::{CertifiedKey, TrustStore};
use crate::crypto::dh::Group;
use crate::wire::Limits;

/// Channel protocol version spoken by this crate.
pub const CHANNEL_VERSION: u16 = 1;

/// Knobs shared by both sides.
#[derive(Clone, Debug)]
pub struct Common {
    /// AEAD suites, in order of preference. A client states its preference with this
    /// order and the server follows it: the first suite in the client's list that the
    /// server also lists is chosen (the server's order does not matter, only which suites
    /// it accepts). The default is [`AeadAlg::ALL`], ChaCha20-Poly1305 first: it is fast
    /// and constant-time in software everywhere, while AES-GCM without AES instructions is
    /// several times slower (or, table-based, leaks timing). A client whose CPU has AES
    /// instructions should put [`AeadAlg::Aes128Gcm`] first: a 64-byte record then costs
    /// about a third of ChaCha20-Poly1305's on such CPUs (docs/channel.md).
    pub suites: Vec<AeadAlg>,
    /// The largest application message one record may carry. Default
    /// [`Common::DEFAULT_MAX_RECORD_LEN`] (16 KiB).
    pub max_record_len: usize,
    /// The handshake must finish within this time or fail
    /// ([`ChannelError::HandshakeTimeout`]). A [`ChannelClient`] counts it from its connect,
    /// so a stream that does not open within it fails with
    /// [`ChannelError::ConnectTimeout`]. Default 10 s.
    ///
    /// [`ChannelError::HandshakeTimeout`]: super::ChannelError::HandshakeTimeout
    /// [`ChannelError::ConnectTimeout`]: super::ChannelError::ConnectTimeout
    /// [`ChannelClient`]: super::ChannelClient
    pub handshake_timeout: Duration,
    /// A message whose first bytes arrived must be whole within this time, or the
    /// connection fails with [`ChannelError::IncompleteRecord`]: a length field damaged
    /// in transit (a record lengthened, or bytes lost) would otherwise leave the reader
    /// waiting for bytes that never come. Default 30 s, far above what the largest record
    /// (16 KiB) takes even on a slow link.
    ///
    /// [`ChannelError::IncompleteRecord`]: super::ChannelError::IncompleteRecord
    pub progress_timeout: Duration,
    /// An established connection that has heard nothing from its peer for this long
    /// sends a keepalive request (answered at once by the peer, never delivered to either
    /// application). `None`: never. Default 60 s; both sides run it.
    pub keepalive_interval: Option<Duration>,
    /// How long an answer may take: to our keepalive request, or to our close-notify. Past
    /// it the connection fails with [`ChannelError::PeerSilent`]. So an idle peer that
    /// stopped answering is detected at most `keepalive_interval + keepalive_timeout`
    /// after it was last heard. Default 15 s.
    ///
    /// [`ChannelError::PeerSilent`]: super::ChannelError::PeerSilent
    pub keepalive_timeout: Duration,
    /// Bound on bytes waiting to be written to the stream. Default 256 KiB.
    pub max_outgoing: usize,
    /// Bound on received application messages waiting for [`take_received`]. Default 64.
    ///
    /// [`take_received`]: super::Connection::take_received
    pub max_received: usize,
    /// Decoding limits and unknown-field policy. Default [`Limits::default`].
    pub limits: Limits,
    /// Wall-clock time at `Instant::ZERO`, for certificate validity and hello timestamps.
    /// No default: every constructor takes it.
    pub time_anchor: UnixTime,
}

impl Common {
    /// Default largest application message per record.
    pub const DEFAULT_MAX_RECORD_LEN: usize = 16 * 1024;
    /// Default [`Common::progress_timeout`].
    pub const DEFAULT_PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default [`Common::keepalive_interval`]: long enough that a short exchange never
    /// sees one, short enough that a dead peer on a long-lived stream is found within
    /// 75 s (with the default timeout), well under common NAT mapping lifetimes for TCP.
    pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
    /// Default [`Common::keepalive_timeout`].
    pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(15);

    fn new(time_anchor: UnixTime) -> Self {
        Common {
            suites: AeadAlg::ALL.to_vec(),
            max_record_len: Self::DEFAULT_MAX_RECORD_LEN,
            handshake_timeout: Duration::from_secs(10),
            progress_timeout: Self::DEFAULT_PROGRESS_TIMEOUT,
            keepalive_interval: Some(Self::DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: Self::DEFAULT_KEEPALIVE_TIMEOUT,
            max_outgoing: 256 * 1024,
            max_received: 64,
            limits: Limits::default(),
            time_anchor,
        }
    }
}

/// A pre-shared key and the identity that names it.
#[derive(Clone)]
pub struct Psk {
    /// The name the client sends so the server can find the key.
    pub identity: Vec<u8>,
    /// The key (at least 16 bytes), wiped on drop.
    pub key: Zeroizing<Vec<u8>>,
}

impl Psk {
    /// Shortest key accepted (128 bits).
    pub const MIN_LEN: usize = 16;
    /// Longest key or identity accepted.
    pub const MAX_LEN: usize = 1024;

    /// A pre-shared key: 16 to 1024 bytes, identity at most 1024 bytes.
    pub fn new(identity: impl Into<Vec<u8>>, key: &[u8]) -> Result<Self, crate::Error> {
        let identity = identity.into();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&key.len()) {
            return Err(ChannelError::PskLength(key.len()).into());
        }
        if identity.len() > Self::MAX_LEN {
            return Err(ChannelError::PskIdentityTooLong(identity.len()).into());
        }
        Ok(Psk {
            identity,
            key: Zeroizing::new(key.to_vec()),
        })
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Psk({:?}, {} bytes)",
            String::from_utf8_lossy(&self.identity),
            self.key.len()
        )
    }
}

/// How the client authenticates the server.
#[derive(Debug)]
pub enum ClientAuthMode {
    /// The server presents a certificate from a CA in `trust`, naming `server_name`; the
    /// client may present its own identity if asked.
    Certificate {
        /// CAs the client trusts.
        trust: TrustStore,
        /// The name the server's certificate must carry.
        server_name: String,
        /// Our certificate and key, presented if the server asks (shared: one device key
        /// serves every configuration that presents it).
        identity: Option<Arc<CertifiedKey>>,
    },
    /// Both sides prove knowledge of a pre-shared key (seed 004's "pre-arranged key").
    Psk(Psk),
}

/// Client configuration.
#[derive(Debug)]
pub struct ClientConfig {
    /// Shared knobs.
    pub common: Common,
    /// The Diffie-Hellman group the client offers (one key share is sent). Default
    /// [`Group::X25519`].
    pub group: Group,
    /// How the server is authenticated.
    pub auth: ClientAuthMode,
    /// Whether the client hello names the server it expects (certificate mode). The hello
    /// is plaintext, so leaving it out hides the name from observers; the client checks
    /// the certificate's name either way. Default `true` in certificate mode, `false` in
    /// PSK mode.
    pub send_server_name: bool,
}

impl ClientConfig {
    /// A client authenticating the server as `auth` says, with every other field at its
    /// default. The general constructor; [`ClientConfig::with_ca`] and
    /// [`ClientConfig::with_psk`] are shorthands for the common cases. A client that
    /// presents its own certificate names it here:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use deputy::UnixTime;
    /// use deputy::channel::{ClientAuthMode, ClientConfig};
    /// use deputy::crypto::cert::{CertificateAuthority, TrustStore};
    /// use rand_core::SeedableRng;
    ///
    /// let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    /// let anchor = UnixTime(1_800_000_000);
    /// let ca = CertificateAuthority::generate("home CA", &mut rng);
    /// let device = Arc::new(ca.issue_identity("device-7", &[], anchor, 86_400, &mut rng).unwrap());
    /// let config = ClientConfig::new(
    ///     ClientAuthMode::Certificate {
    ///         trust: TrustStore::with(ca.certificate().clone()),
    ///         server_name: "server.example".into(),
    ///         identity: Some(device.clone()), // the same key can serve other configs
    ///     },
    ///     anchor,
    /// );
    /// assert!(config.send_server_name);
    /// ```
    pub fn new(auth: ClientAuthMode, time_anchor: UnixTime) -> Self {
        let send_server_name = matches!(auth, ClientAuthMode::Certificate { .. });
        ClientConfig {
            common: Common::new(time_anchor),
            group: Group::X25519,
            auth,
            send_server_name,
        }
    }

    /// Certificate mode: trust `trust`, expect a certificate naming `server_name`, present
    /// no certificate of our own.
    pub fn with_ca(trust: TrustStore, server_name: &str, time_anchor: UnixTime) -> Self {
        Self::new(
            ClientAuthMode::Certificate {
                trust,
                server_name: server_name.into(),
                identity: None,
            },
            time_anchor,
        )
    }

    /// Certificate mode, presenting `identity` (a [`CertifiedKey`] or an `Arc` of one to
    /// share) when the server asks for a client certificate.
    pub fn with_client_certificate(
        trust: TrustStore,
        server_name: &str,
        identity: impl Into<Arc<CertifiedKey>>,
        time_anchor: UnixTime,
    ) -> Self {
        Self::new(
            ClientAuthMode::Certificate {
                trust,
                server_name: server_name.into(),
                identity: Some(identity.into()),
            },
            time_anchor,
        )
    }

    /// Pre-shared-key mode.
    pub fn with_psk(psk: Psk, time_anchor: UnixTime) -> Self {
        Self::new(ClientAuthMode::Psk(psk), time_anchor)
    }
}

/// Whether the server asks clients for certificates.
#[derive(Debug, Default)]
pub enum ClientCertPolicy {
    /// Never ask.
    #[default]
    None,
    /// Ask; accept clients without one (their identity is then unknown).
    Optional(TrustStore),
    /// Ask; refuse clients without a certificate from a CA in the store.
    Required(TrustStore),
}

/// Server configuration.
#[derive(Debug)]
pub struct ServerConfig {
    /// Shared knobs.
    pub common: Common,
    /// Groups the server accepts. Default [`Group::ALL`].
    pub groups: Vec<Group>,
    /// The server's certificate and key (certificate mode), shared: one server key
    /// serves every configuration that presents it (the rendezvous server's two ports).
    pub identity: Option<Arc<CertifiedKey>>,
    /// Client certificate policy (certificate mode). Default [`ClientCertPolicy::None`].
    pub client_certs: ClientCertPolicy,
    /// Pre-shared keys by identity (PSK mode), at most [`ServerConfig::MAX_PSKS`].
    psks: BTreeMap<Vec<u8>, Psk>,
}

impl ServerConfig {
    /// The most pre-shared keys one server holds.
    pub const MAX_PSKS: usize = 4096;

    /// Certificate mode with `identity` (a [`CertifiedKey`] or an `Arc` of one to share),
    /// asking clients for no certificate (set [`ServerConfig::client_certs`] to ask).
    pub fn with_certificate(identity: impl Into<Arc<CertifiedKey>>, time_anchor: UnixTime) -> Self {
        ServerConfig {
            common: Common::new(time_anchor),
            groups: Group::ALL.to_vec(),
            identity: Some(identity.into()),
            client_certs: ClientCertPolicy::None,
            psks: BTreeMap::new(),
        }
    }

    /// PSK mode only (no certificate). Fails past [`ServerConfig::MAX_PSKS`] keys.
    pub fn with_psks(
        psks: impl IntoIterator<Item = Psk>,
        time_anchor: UnixTime,
    ) -> Result<Self, crate::Error> {
        let mut cfg = ServerConfig {
            common: Common::new(time_anchor),
            groups: Group::ALL.to_vec(),
            identity: None,
            client_certs: ClientCertPolicy::None,
            psks: BTreeMap::new(),
        };
        for psk in psks {
            cfg.add_psk(psk)?;
        }
        Ok(cfg)
    }

    /// Add (or replace) a pre-shared key. A method rather than a public field because the
    /// table is bounded by [`ServerConfig::MAX_PSKS`] (docs/architecture.md, "API
    /// conventions").
    pub fn add_psk(&mut self, psk: Psk) -> Result<(), crate::Error> {
        if self.psks.len() >= Self::MAX_PSKS && !self.psks.contains_key(&psk.identity) {
            return Err(crate::Error::CapacityExceeded {
                what: "pre-shared keys",
                bound: Self::MAX_PSKS,
            });
        }
        self.psks.insert(psk.identity.clone(), psk);
        Ok(())
    }

    pub(crate) fn psk(&self, identity: &[u8]) -> Option<&Psk> {
        self.psks.get(identity)
    }

    /// Number of pre-shared keys held.
    pub fn psk_count(&self) -> usize {
        self.psks.len()
    }
}

//! Configuration of the initiator and the responder.

use super::IkeError;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use super::auth::{AuthKeyDb, Credential, Signer};
use super::codec::{Identity, Limits};
use super::keys::SecretBytes;
use super::proposal::IkeProposal;
use crate::UnixTime;
use crate::crypto::dh::Group;
use crate::ipsec::{Lifetime, MAX_TRAFFIC_SELECTORS, Suite, TrafficSelector};

/// The IPsec mode a configuration asks for (initiator) or permits (responder). The
/// negotiated Child SA carries [`crate::ipsec::Mode`], which adds the tunnel endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ChildMode {
    /// Tunnel mode (the default; RFC 7296 §1.3.1).
    #[default]
    Tunnel,
    /// Transport mode (negotiated with USE_TRANSPORT_MODE).
    Transport,
}

/// Retransmission of requests (RFC 7296 §2.1): the first after `initial`, then doubling,
/// at most `max_tries` transmissions in all; then the exchange (and the IKE SA) fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retransmit {
    /// Time before the first retransmission.
    pub initial: Duration,
    /// Transmissions of one request before giving up (≥ 1).
    pub max_tries: u32,
}

impl Retransmit {
    /// From the first transmission until the exchange is given up:
    /// `initial × (2^max_tries − 1)` (31.5 s by default), saturating.
    pub fn span(&self) -> Duration {
        let tries = self.max_tries.min(32);
        let factor = (1u64 << tries) - 1;
        self.initial
            .saturating_mul(u32::try_from(factor).unwrap_or(u32::MAX))
    }
}

impl Default for Retransmit {
    /// 0.5 s doubling, 6 transmissions: the last waits until 31.5 s after the first.
    fn default() -> Self {
        Retransmit {
            initial: Duration::from_millis(500),
            max_tries: 6,
        }
    }
}

/// What both roles configure for one peer relationship.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeConfig {
    /// Our identity (IDi as initiator, IDr as responder).
    pub local_id: Identity,
    /// The identity the peer must present; `None` accepts any that `auth_db` vouches for.
    pub remote_id: Option<Identity>,
    /// What we authenticate with: a pre-shared key (AUTH method 2) or a private key with
    /// its certificates (method 14 and CERT payloads). See [`super::auth`].
    pub credential: Credential,
    /// What the peer may authenticate with: trust anchors, pinned public keys, pre-shared
    /// keys per peer identity or for any peer (seed 004's authentication-key database).
    pub auth_db: AuthKeyDb,
    /// The wall-clock time at `Instant::ZERO`: certificate validity is judged at
    /// `UnixTime::at(time_anchor, now)`.
    pub time_anchor: UnixTime,
    /// IKE SA proposals in preference order.
    pub ike_proposals: Vec<IkeProposal>,
    /// ESP suites in preference order (the data plane's suites).
    pub esp_proposals: Vec<Suite>,
    /// Our traffic selectors (TSi as initiator; the permitted TSr as responder).
    pub ts_local: Vec<TrafficSelector>,
    /// The peer's traffic selectors (TSr as initiator; the permitted TSi as responder).
    pub ts_remote: Vec<TrafficSelector>,
    /// Requested (initiator) or permitted (responder) mode.
    pub mode: ChildMode,
    /// The NAT-T port (4500): IKE there carries the non-ESP marker.
    pub nat_t_port: u16,
    /// Act as if behind a NAT: send a faked NAT_DETECTION_SOURCE_IP so ESP is always
    /// UDP-encapsulated (strongSwan's `encap = yes`).
    pub force_encap: bool,
    /// Retransmission policy for requests we send.
    pub retransmit: Retransmit,
    /// Lifetimes written into every negotiated [`crate::ipsec::ChildSa`]; the data plane
    /// enforces them (soft: an event asking for a rekey; hard: the SA is removed). The IKE
    /// engine itself does not rekey on its own: call `rekey_child`.
    pub child_lifetime: Lifetime,
    /// Decoding limits.
    pub limits: Limits,
    /// Commands waiting while an exchange is outstanding (window size 1), per IKE SA.
    pub max_queued_commands: usize,
    /// Debugging aid, off by default: keep a copy of each IKE SA's SK_e/SK_a keys so that
    /// `ike_keys_for_dissection` can hand them to a packet analyser (Wireshark's IKEv2
    /// decryption table). Leave it off in production: without it the raw keys are dropped
    /// once the SK cipher is keyed.
    pub keep_keys_for_dissection: bool,
}

impl IkeConfig {
    /// A configuration with the default suites (AES-128-CBC/HMAC-SHA-256 with X25519 or
    /// MODP-2048, then ChaCha20-Poly1305 and AES-GCM; the same for ESP), any-to-any IPv4
    /// traffic selectors, tunnel mode, NAT-T on 4500 without forcing, Child SA lifetimes of
    /// 54 minutes (soft) and one hour (hard). Authentication by the pre-shared key `psk`
    /// both ways: our credential, and the key of any peer in `auth_db`.
    pub fn new(local_id: Identity, psk: &[u8]) -> IkeConfig {
        let mut auth_db = AuthKeyDb::new();
        auth_db.set_any_peer_psk(Some(psk));
        IkeConfig::with_credential(
            local_id,
            Credential::Psk(SecretBytes::from_slice(psk)),
            auth_db,
            UnixTime(0),
        )
    }

    /// The defaults of [`IkeConfig::new`], authenticating with a private key and its
    /// certificates, and accepting the peers `auth_db` vouches for (certificates are
    /// judged at `UnixTime::at(time_anchor, now)`).
    pub fn with_certificate(
        local_id: Identity,
        signer: Signer,
        auth_db: AuthKeyDb,
        time_anchor: UnixTime,
    ) -> IkeConfig {
        IkeConfig::with_credential(
            local_id,
            Credential::Signature(signer),
            auth_db,
            time_anchor,
        )
    }

    /// The defaults of [`IkeConfig::new`] with any credential and database.
    pub fn with_credential(
        local_id: Identity,
        credential: Credential,
        auth_db: AuthKeyDb,
        time_anchor: UnixTime,
    ) -> IkeConfig {
        IkeConfig {
            local_id,
            remote_id: None,
            credential,
            auth_db,
            time_anchor,
            ike_proposals: alloc::vec![
                IkeProposal::aes128_sha256(&[Group::X25519, Group::Modp2048]),
                IkeProposal::chacha20poly1305(&[Group::X25519]),
                IkeProposal::aes_gcm16(128, &[Group::X25519]),
                IkeProposal::aes_gcm16(256, &[Group::X25519]),
            ],
            esp_proposals: alloc::vec![
                Suite::AesCbc128HmacSha256,
                Suite::ChaCha20Poly1305,
                Suite::AesGcm128,
                Suite::AesGcm256,
            ],
            ts_local: alloc::vec![TrafficSelector::any_v4()],
            ts_remote: alloc::vec![TrafficSelector::any_v4()],
            mode: ChildMode::Tunnel,
            nat_t_port: 4500,
            force_encap: false,
            retransmit: Retransmit::default(),
            child_lifetime: Lifetime {
                soft_time: Some(Duration::from_secs(3240)),
                hard_time: Some(Duration::from_secs(3600)),
                ..Lifetime::default()
            },
            limits: Limits::default(),
            max_queued_commands: 8,
            keep_keys_for_dissection: false,
        }
    }

    /// Check the configuration for contradictions.
    pub fn validate(&self) -> Result<(), crate::Error> {
        if self.ike_proposals.is_empty() || self.ike_proposals.iter().any(|p| !p.is_valid()) {
            return Err(IkeError::BadIkeProposals.into());
        }
        if self.ike_proposals.len() > 255 || self.esp_proposals.len() > 255 {
            return Err(IkeError::TooManyProposals.into());
        }
        if self.esp_proposals.is_empty() {
            return Err(IkeError::NoEspProposals.into());
        }
        if self.ts_local.is_empty()
            || self.ts_remote.is_empty()
            || self.ts_local.len() > MAX_TS
            || self.ts_remote.len() > MAX_TS
        {
            return Err(IkeError::BadTrafficSelectorCount.into());
        }
        let l = &self.child_lifetime;
        let times = matches!((l.soft_time, l.hard_time), (Some(s), Some(h)) if s > h);
        let bytes = matches!((l.soft_bytes, l.hard_bytes), (Some(s), Some(h)) if s > h);
        if times || bytes {
            return Err(IkeError::SoftLifetimeBeyondHard.into());
        }
        if self.retransmit.max_tries == 0 || self.retransmit.initial.is_zero() {
            return Err(IkeError::BadRetransmit.into());
        }
        if self.limits.max_payloads == 0 || self.limits.max_message_len < 256 {
            return Err(IkeError::LimitsTooSmall.into());
        }
        Ok(())
    }
}

/// Most traffic selectors on either side (configured or accepted from a peer): as many as
/// a data-plane Child SA holds.
pub const MAX_TS: usize = MAX_TRAFFIC_SELECTORS;

/// The initiator's configuration: the shared part plus the two IKE endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitiatorConfig {
    /// Shared configuration.
    pub ike: IkeConfig,
    /// Our IKE address (port 500 normally); after a NAT-T move its port becomes
    /// `ike.nat_t_port`.
    pub local: SocketAddr,
    /// The responder (port 500 normally).
    pub remote: SocketAddr,
}

/// The responder's configuration: the shared part plus its bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponderConfig {
    /// Shared configuration (one PSK and policy for every initiator).
    pub ike: IkeConfig,
    /// Demand a COOKIE (RFC 7296 §2.6) once this many half-open IKE SAs exist
    /// (0: always).
    pub cookie_threshold: usize,
    /// Refuse new IKE_SA_INIT requests once this many half-open IKE SAs exist.
    pub max_half_open: usize,
    /// Refuse new IKE_SA_INIT requests once this many IKE SAs (half-open or established)
    /// exist. IKE SA rekeys are answered TEMPORARY_FAILURE while as many old IKE SAs of
    /// earlier rekeys still wait for their Delete, so the table holds at most twice this.
    pub max_ike_sas: usize,
    /// A half-open IKE SA that has not authenticated by then is dropped.
    pub half_open_timeout: Duration,
    /// The cookie secret changes this often; cookies made under the previous secret stay
    /// valid for one more period.
    pub cookie_secret_lifetime: Duration,
}

impl ResponderConfig {
    /// Defaults: cookies from 16 half-open SAs, at most 64 half-open and 256 SAs, half-open
    /// timeout 30 s, cookie secret rotated every 5 minutes.
    pub fn new(ike: IkeConfig) -> ResponderConfig {
        ResponderConfig {
            ike,
            cookie_threshold: 16,
            max_half_open: 64,
            max_ike_sas: 256,
            half_open_timeout: Duration::from_secs(30),
            cookie_secret_lifetime: Duration::from_secs(300),
        }
    }
}

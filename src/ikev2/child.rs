//! The negotiated Child SA as a plain value another party (the ESP data plane, or a
//! terminal a key-exchange proxy works for) can receive.

use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use super::codec::TrafficSelector;
use super::keys::EspKeys;
use super::proposal::EspSuite;

/// IPsec mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Tunnel mode (the default; RFC 7296 §1.3.1).
    #[default]
    Tunnel,
    /// Transport mode (negotiated with USE_TRANSPORT_MODE).
    Transport,
}

/// A negotiated ESP Child SA: everything an ESP implementation needs, from this endpoint's
/// point of view (`in` = packets we receive, `out` = packets we send).
///
/// # Key layout
///
/// KEYMAT = prf+(SK_d, Ni | Nr) (RFC 7296 §2.17; Ni/Nr of the exchange that created the
/// SA: IKE_SA_INIT's for the first Child SA, the CREATE_CHILD_SA exchange's after a
/// rekey) is cut in this order:
///
/// ```text
/// [ enc key I→R | salt I→R | integ key I→R | enc key R→I | salt R→I | integ key R→I ]
/// ```
///
/// where I/R are the initiator/responder *of that exchange*. [`ChildSa::keys_out`] and
/// [`ChildSa::keys_in`] are already oriented for this endpoint. Per suite:
///
/// | suite | `enc_key` | `salt` | `integ_key` | ICV |
/// |---|---|---|---|---|
/// | `AesCbc128HmacSha256` | 16 (AES-128) | 0 | 32 (HMAC-SHA-256, RFC 4868, truncated to 16) | 16 |
/// | `AesGcm16_128` | 16 | 4 (RFC 4106 nonce salt) | 0 | 16 |
/// | `AesGcm16_256` | 32 | 4 | 0 | 16 |
/// | `ChaCha20Poly1305` | 32 | 4 (RFC 7634 nonce salt) | 0 | 16 |
///
/// Keys wipe themselves on drop, compare in constant time, and `Debug` prints only lengths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSa {
    /// The ESP suite.
    pub suite: EspSuite,
    /// Tunnel or transport.
    pub mode: Mode,
    /// SPI of inbound packets (we chose it).
    pub spi_in: u32,
    /// SPI of outbound packets (the peer chose it).
    pub spi_out: u32,
    /// Keys for packets we send.
    pub keys_out: EspKeys,
    /// Keys for packets we receive.
    pub keys_in: EspKeys,
    /// Our traffic selectors (source of outbound traffic).
    pub ts_local: Vec<TrafficSelector>,
    /// The peer's traffic selectors (destination of outbound traffic).
    pub ts_remote: Vec<TrafficSelector>,
    /// Our IKE address and port (ESP-in-UDP source when `udp_encap`).
    pub local: SocketAddr,
    /// The peer's IKE address and port (ESP-in-UDP destination when `udp_encap`).
    pub remote: SocketAddr,
    /// Whether ESP must be UDP-encapsulated (RFC 3948) between `local` and `remote`.
    pub udp_encap: bool,
    /// Extended sequence numbers (always false: this engine negotiates ESN none).
    pub esn: bool,
    /// Configured lifetime; the engine does not enforce it — call `rekey_child` before.
    pub lifetime: Duration,
    /// Whether we initiated the exchange that created this SA.
    pub initiated: bool,
}

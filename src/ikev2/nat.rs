//! NAT detection (RFC 7296 §2.23) and stateless cookies (§2.6).

use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use rand_core::CryptoRng;
use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

use super::codec::{Notify, Payload, find_notify};
use super::consts::notify;
use crate::Instant;
use crate::crypto::ct_eq;

/// NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP address | port), with the SPIs of the
/// message that carries it (SPIr is zero in the first IKE_SA_INIT request).
pub fn nat_detection_hash(spi_i: &[u8; 8], spi_r: &[u8; 8], addr: SocketAddr) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(spi_i);
    h.update(spi_r);
    match addr.ip() {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(addr.port().to_be_bytes());
    h.finalize().into()
}

/// The NAT_DETECTION_SOURCE_IP data to send from `local`: its hash, or with `force_encap`
/// random octets that cannot match, so that the peer concludes we are behind a NAT and
/// both ends encapsulate ESP in UDP (like strongSwan's `encap = yes`).
pub(crate) fn natd_source(
    force_encap: bool,
    rng: &mut dyn CryptoRng,
    spi_i: &[u8; 8],
    spi_r: &[u8; 8],
    local: SocketAddr,
) -> [u8; 20] {
    if force_encap {
        crate::crypto::random_array(rng)
    } else {
        nat_detection_hash(spi_i, spi_r, local)
    }
}

/// The NAT_DETECTION_SOURCE_IP (with `source` from [`natd_source`]) and
/// NAT_DETECTION_DESTINATION_IP notifies of an IKE_SA_INIT message sent to `remote`.
pub(crate) fn natd_notifies(
    source: [u8; 20],
    spi_i: &[u8; 8],
    spi_r: &[u8; 8],
    remote: SocketAddr,
) -> [Payload; 2] {
    [
        Payload::Notify(Notify::new(
            notify::NAT_DETECTION_SOURCE_IP,
            source.to_vec(),
        )),
        Payload::Notify(Notify::new(
            notify::NAT_DETECTION_DESTINATION_IP,
            nat_detection_hash(spi_i, spi_r, remote).to_vec(),
        )),
    ]
}

/// What the NAT detection notifies of a received IKE_SA_INIT message (with SPIs `spi_i`,
/// `spi_r`, sent from `from` to `to`) say: `None` when it carries none, else whether an
/// address was translated on the way (no NAT_DETECTION_SOURCE_IP matches the sender, or
/// the NAT_DETECTION_DESTINATION_IP does not match us).
pub(crate) fn nat_detected(
    payloads: &[Payload],
    spi_i: &[u8; 8],
    spi_r: &[u8; 8],
    from: SocketAddr,
    to: SocketAddr,
) -> Option<bool> {
    let dst = find_notify(payloads, notify::NAT_DETECTION_DESTINATION_IP)?;
    let peer_hash = nat_detection_hash(spi_i, spi_r, from);
    let mut sources = payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Notify(n) if n.ty == notify::NAT_DETECTION_SOURCE_IP => Some(&n.data),
            _ => None,
        })
        .peekable();
    sources.peek()?;
    let peer_natted = !sources.any(|d| *d == peer_hash);
    let we_natted = dst.data != nat_detection_hash(spi_i, spi_r, to);
    Some(peer_natted || we_natted)
}

/// Length of a cookie: one version octet and a SHA-256 digest.
pub const COOKIE_LEN: usize = 33;

/// The responder's cookie secrets: `Cookie = <VersionIDofSecret> | SHA-256(secret | Ni |
/// IPi | SPIi)` (§2.6). The previous secret stays valid for one period after rotation.
pub(crate) struct CookieJar {
    current: (u8, Zeroizing<[u8; 32]>),
    previous: Option<(u8, Zeroizing<[u8; 32]>)>,
    rotated_at: Instant,
    lifetime: Duration,
}

impl CookieJar {
    pub(crate) fn new(rng: &mut dyn CryptoRng, now: Instant, lifetime: Duration) -> CookieJar {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut secret[..]);
        CookieJar {
            current: (0, secret),
            previous: None,
            rotated_at: now,
            lifetime,
        }
    }

    /// Rotate the secret if its period is over.
    pub(crate) fn maybe_rotate(&mut self, rng: &mut dyn CryptoRng, now: Instant) {
        if now.saturating_duration_since(self.rotated_at) < self.lifetime {
            return;
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut secret[..]);
        let version = self.current.0.wrapping_add(1);
        let old = core::mem::replace(&mut self.current, (version, secret));
        self.previous = Some(old);
        self.rotated_at = now;
    }

    fn compute(secret: &[u8; 32], version: u8, ni: &[u8], ip: IpAddr, spi_i: &[u8; 8]) -> Vec<u8> {
        let mut h = sha2::Sha256::new();
        h.update(secret);
        h.update(ni);
        match ip {
            IpAddr::V4(a) => h.update(a.octets()),
            IpAddr::V6(a) => h.update(a.octets()),
        }
        h.update(spi_i);
        let mut out = Vec::with_capacity(COOKIE_LEN);
        out.push(version);
        out.extend_from_slice(&h.finalize());
        out
    }

    /// The cookie for this initiator under the current secret.
    pub(crate) fn make(&self, ni: &[u8], ip: IpAddr, spi_i: &[u8; 8]) -> Vec<u8> {
        Self::compute(&self.current.1, self.current.0, ni, ip, spi_i)
    }

    /// Whether `cookie` is valid under the current or the previous secret.
    pub(crate) fn check(&self, cookie: &[u8], ni: &[u8], ip: IpAddr, spi_i: &[u8; 8]) -> bool {
        let Some(&version) = cookie.first() else {
            return false;
        };
        [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .filter(|(v, _)| *v == version)
            .any(|(v, s)| ct_eq(cookie, &Self::compute(s, *v, ni, ip, spi_i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// Independent value from Python: `hashlib.sha1(bytes(range(8)) + bytes(8) +
    /// bytes([192,0,2,1]) + (500).to_bytes(2,'big')).hexdigest()`.
    #[test]
    fn nat_hash_known_answer() {
        let spi_i = [0, 1, 2, 3, 4, 5, 6, 7];
        let h = nat_detection_hash(&spi_i, &[0; 8], "192.0.2.1:500".parse().unwrap());
        let hex: alloc::string::String = h.iter().map(|b| alloc::format!("{b:02x}")).collect();
        assert_eq!(hex, "0c2765788bb4317853269fbdd80011b85b67ed2a");
    }

    #[test]
    fn cookies_survive_one_rotation_only() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let life = Duration::from_secs(10);
        let mut jar = CookieJar::new(&mut rng, Instant::ZERO, life);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let c = jar.make(b"nonce-nonce-nonce", ip, &[1; 8]);
        assert_eq!(c.len(), COOKIE_LEN);
        assert!(jar.check(&c, b"nonce-nonce-nonce", ip, &[1; 8]));
        assert!(!jar.check(&c, b"nonce-nonce-nonc3", ip, &[1; 8]));
        assert!(!jar.check(
            &c,
            b"nonce-nonce-nonce",
            "192.0.2.8".parse().unwrap(),
            &[1; 8]
        ));
        assert!(!jar.check(&c, b"nonce-nonce-nonce", ip, &[2; 8]));
        assert!(!jar.check(&[], b"nonce-nonce-nonce", ip, &[1; 8]));
        jar.maybe_rotate(&mut rng, Instant::from_secs(5));
        assert!(
            jar.check(&c, b"nonce-nonce-nonce", ip, &[1; 8]),
            "not yet rotated"
        );
        jar.maybe_rotate(&mut rng, Instant::from_secs(10));
        assert!(
            jar.check(&c, b"nonce-nonce-nonce", ip, &[1; 8]),
            "previous secret"
        );
        assert_ne!(jar.make(b"nonce-nonce-nonce", ip, &[1; 8]), c);
        jar.maybe_rotate(&mut rng, Instant::from_secs(20));
        assert!(!jar.check(&c, b"nonce-nonce-nonce", ip, &[1; 8]), "expired");
    }
}

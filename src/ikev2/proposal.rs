//! Algorithms, configurable proposals, and proposal selection (RFC 7296 §2.7, §3.3).
//!
//! The supported profile:
//!
//! | strongSwan name | IKE SA | ESP Child SA |
//! |---|---|---|
//! | `aes128-sha256-modp2048` / `-x25519` | ENCR_AES_CBC-128 + AUTH_HMAC_SHA2_256_128 + PRF_HMAC_SHA2_256 | `aes128-sha256` |
//! | `chacha20poly1305-x25519` | ENCR_CHACHA20_POLY1305 + PRF_HMAC_SHA2_256 | `chacha20poly1305` |
//! | `aes128gcm16-…`, `aes256gcm16-…` | ENCR_AES_GCM_16 (128/256) + PRF_HMAC_SHA2_256 | `aes128gcm16`, `aes256gcm16` |
//!
//! Groups: 14 (MODP-2048) and 31 (Curve25519). ESP suites are the data plane's
//! [`crate::ipsec::Suite`] (so `aes256-sha256` is available for ESP as well); ESP proposals
//! carry ESN = none only, and no Diffie-Hellman transform (no PFS).

use alloc::vec::Vec;
use core::fmt;

use super::codec::{Notify, Proposal, Transform};
use super::consts::{protocol, transform as t};
use crate::crypto::dh::Group;
use crate::ipsec::Suite;

/// An encryption algorithm (for the IKE SA's SK payload and for ESP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encr {
    /// ENCR_AES_CBC with a 128-bit key (needs an integrity algorithm).
    AesCbc128,
    /// ENCR_AES_GCM_16 with a 128-bit key (AEAD; 4-octet salt).
    AesGcm16_128,
    /// ENCR_AES_GCM_16 with a 256-bit key (AEAD; 4-octet salt).
    AesGcm16_256,
    /// ENCR_CHACHA20_POLY1305 (AEAD; 4-octet salt, RFC 7634).
    ChaCha20Poly1305,
}

impl Encr {
    /// The transform ID.
    pub const fn id(self) -> u16 {
        match self {
            Encr::AesCbc128 => t::ENCR_AES_CBC,
            Encr::AesGcm16_128 | Encr::AesGcm16_256 => t::ENCR_AES_GCM_16,
            Encr::ChaCha20Poly1305 => t::ENCR_CHACHA20_POLY1305,
        }
    }

    /// The Key Length attribute in bits (absent for ChaCha20-Poly1305, RFC 7634 §2).
    pub const fn key_len_attr(self) -> Option<u16> {
        match self {
            Encr::AesCbc128 | Encr::AesGcm16_128 => Some(128),
            Encr::AesGcm16_256 => Some(256),
            Encr::ChaCha20Poly1305 => None,
        }
    }

    /// Cipher key length in octets (without salt).
    pub const fn key_len(self) -> usize {
        match self {
            Encr::AesCbc128 | Encr::AesGcm16_128 => 16,
            Encr::AesGcm16_256 | Encr::ChaCha20Poly1305 => 32,
        }
    }

    /// Salt length in octets taken from the key material after the key (RFC 4106 §8.1,
    /// RFC 5282 §7.1, RFC 7634 §3): 4 for the AEADs, 0 for CBC.
    pub const fn salt_len(self) -> usize {
        if self.is_aead() { 4 } else { 0 }
    }

    /// Whether this is a combined-mode (AEAD) algorithm.
    pub const fn is_aead(self) -> bool {
        !matches!(self, Encr::AesCbc128)
    }

    /// Length of the IV carried in each SK payload / ESP packet.
    pub const fn iv_len(self) -> usize {
        if self.is_aead() { 8 } else { 16 }
    }

    /// The transform this engine sends for it.
    pub fn transform(self) -> Transform {
        match self.key_len_attr() {
            Some(bits) => Transform::with_key_len(t::ENCR, self.id(), bits),
            None => Transform::new(t::ENCR, self.id()),
        }
    }

    fn matches(self, tr: &Transform) -> bool {
        tr.ty == t::ENCR
            && tr.id == self.id()
            && tr.attributes_understood()
            && tr.key_len() == self.key_len_attr()
    }
}

impl fmt::Display for Encr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encr::AesCbc128 => "aes128",
            Encr::AesGcm16_128 => "aes128gcm16",
            Encr::AesGcm16_256 => "aes256gcm16",
            Encr::ChaCha20Poly1305 => "chacha20poly1305",
        })
    }
}

/// An integrity algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Integ {
    /// AUTH_HMAC_SHA2_256_128 (RFC 4868): 32-octet key, 16-octet ICV.
    HmacSha256_128,
}

impl Integ {
    /// The transform ID.
    pub const fn id(self) -> u16 {
        t::AUTH_HMAC_SHA2_256_128
    }
    /// Key length in octets.
    pub const fn key_len(self) -> usize {
        32
    }
    /// ICV length in octets.
    pub const fn icv_len(self) -> usize {
        16
    }
}

/// A pseudorandom function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prf {
    /// PRF_HMAC_SHA2_256 (RFC 4868): 32-octet keys and output.
    HmacSha256,
}

impl Prf {
    /// The transform ID.
    pub const fn id(self) -> u16 {
        t::PRF_HMAC_SHA2_256
    }
    /// Preferred key length = output length, in octets.
    pub const fn key_len(self) -> usize {
        32
    }
}

/// One IKE SA proposal as configured: one encryption algorithm, its integrity algorithm
/// (none for AEADs), the PRF, and the acceptable groups in preference order (the first is
/// the one the initiator sends a KE payload for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeProposal {
    /// Encryption.
    pub encr: Encr,
    /// Integrity (required for CBC, must be `None` for AEADs).
    pub integ: Option<Integ>,
    /// PRF.
    pub prf: Prf,
    /// Diffie-Hellman groups, preferred first.
    pub groups: Vec<Group>,
}

impl IkeProposal {
    /// `aes128-sha256-<groups>`.
    pub fn aes128_sha256(groups: &[Group]) -> IkeProposal {
        IkeProposal {
            encr: Encr::AesCbc128,
            integ: Some(Integ::HmacSha256_128),
            prf: Prf::HmacSha256,
            groups: groups.to_vec(),
        }
    }

    /// `chacha20poly1305-prfsha256-<groups>`.
    pub fn chacha20poly1305(groups: &[Group]) -> IkeProposal {
        IkeProposal {
            encr: Encr::ChaCha20Poly1305,
            integ: None,
            prf: Prf::HmacSha256,
            groups: groups.to_vec(),
        }
    }

    /// `aes128gcm16-prfsha256-<groups>` (`bits` = 128) or `aes256gcm16-…` (`bits` = 256;
    /// anything else gives 128).
    pub fn aes_gcm16(bits: u16, groups: &[Group]) -> IkeProposal {
        IkeProposal {
            encr: if bits == 256 {
                Encr::AesGcm16_256
            } else {
                Encr::AesGcm16_128
            },
            integ: None,
            prf: Prf::HmacSha256,
            groups: groups.to_vec(),
        }
    }

    /// Whether the proposal is coherent (an integrity algorithm exactly when not AEAD, at
    /// least one group).
    pub fn is_valid(&self) -> bool {
        self.integ.is_some() != self.encr.is_aead() && !self.groups.is_empty()
    }
}

/// The negotiated IKE SA algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IkeSuite {
    /// Encryption.
    pub encr: Encr,
    /// Integrity (None for AEADs).
    pub integ: Option<Integ>,
    /// PRF.
    pub prf: Prf,
    /// Group.
    pub group: Group,
}

impl IkeSuite {
    /// The single-choice SA proposal a responder returns.
    pub fn to_proposal(&self, num: u8) -> Proposal {
        let mut transforms =
            alloc::vec![self.encr.transform(), Transform::new(t::PRF, self.prf.id())];
        if let Some(i) = self.integ {
            transforms.push(Transform::new(t::INTEG, i.id()));
        }
        transforms.push(Transform::new(t::DH, self.group.id()));
        Proposal {
            num,
            protocol: protocol::IKE,
            spi: Vec::new(),
            transforms,
        }
    }

    /// The single-choice answer to an IKE SA rekey, carrying our new SPI.
    pub fn to_rekey_proposal(&self, num: u8, spi: [u8; 8]) -> Proposal {
        Proposal {
            spi: spi.to_vec(),
            ..self.to_proposal(num)
        }
    }
}

/// The transforms of the ESP proposal for `suite` (ESN none, no DH): ENCR with its Key
/// Length attribute (none for ChaCha20-Poly1305, RFC 7634 §2), INTEG for the CBC suites.
/// The ESP suites themselves are [`crate::ipsec::Suite`], the data plane's enum, so a
/// negotiated Child SA installs without conversion.
fn esp_transforms(suite: Suite) -> Vec<Transform> {
    let (encr, bits, integ) = suite.ikev2_transforms();
    let mut transforms = alloc::vec![if bits == 0 {
        Transform::new(t::ENCR, encr)
    } else {
        Transform::with_key_len(t::ENCR, encr, bits)
    }];
    if integ != 0 {
        transforms.push(Transform::new(t::INTEG, integ));
    }
    transforms.push(Transform::new(t::ESN, t::ESN_NONE));
    transforms
}

/// The integrity algorithm of an ESP suite in this engine's terms (None for AEADs).
fn esp_integ(suite: Suite) -> Option<Integ> {
    (!suite.is_aead()).then_some(Integ::HmacSha256_128)
}

/// Whether `tr` is the ENCR transform of `suite` (ID and Key Length attribute).
fn esp_encr_matches(suite: Suite, tr: &Transform) -> bool {
    let (encr, bits, _) = suite.ikev2_transforms();
    tr.ty == t::ENCR
        && tr.id == encr
        && tr.attributes_understood()
        && tr.key_len() == (bits != 0).then_some(bits)
}

/// Whether proposal `p` offers `suite` (its ENCR, and its INTEG or none).
fn esp_offers(p: &Proposal, suite: Suite) -> bool {
    has(p, |tr| esp_encr_matches(suite, tr)) && integ_ok(p, esp_integ(suite))
}

/// The ESP proposal for `suite` carrying `spi`, numbered `num`.
pub fn esp_proposal(suite: Suite, num: u8, spi: u32) -> Proposal {
    Proposal {
        num,
        protocol: protocol::ESP,
        spi: spi.to_be_bytes().to_vec(),
        transforms: esp_transforms(suite),
    }
}

/// Whether an SPI chosen by the peer may be used: RFC 4303 §2.1 reserves 0 ..= 255.
fn usable_spi(spi: u32) -> bool {
    spi > 255
}

/// The IKE SA proposals an initiator sends: one wire proposal per configured one, numbered
/// from 1.
pub fn ike_offer(ours: &[IkeProposal]) -> Vec<Proposal> {
    ike_offer_spi(ours, &[])
}

/// The IKE SA proposals of an IKE SA rekey, each carrying our new SPI (RFC 7296 §1.3.2).
pub fn ike_rekey_offer(ours: &[IkeProposal], spi: [u8; 8]) -> Vec<Proposal> {
    ike_offer_spi(ours, &spi)
}

fn ike_offer_spi(ours: &[IkeProposal], spi: &[u8]) -> Vec<Proposal> {
    ours.iter()
        .zip(1u8..)
        .map(|(q, num)| {
            let mut transforms =
                alloc::vec![q.encr.transform(), Transform::new(t::PRF, q.prf.id())];
            if let Some(i) = q.integ {
                transforms.push(Transform::new(t::INTEG, i.id()));
            }
            for g in &q.groups {
                transforms.push(Transform::new(t::DH, g.id()));
            }
            Proposal {
                num,
                protocol: protocol::IKE,
                spi: spi.to_vec(),
                transforms,
            }
        })
        .collect()
}

/// The ESP proposals an initiator sends for a Child SA with inbound SPI `spi`.
pub fn esp_offer(ours: &[Suite], spi: u32) -> Vec<Proposal> {
    ours.iter()
        .zip(1u8..)
        .map(|(s, num)| esp_proposal(*s, num, spi))
        .collect()
}

/// The group an INVALID_KE_PAYLOAD notify asks for (RFC 7296 §1.2: two octets), if it is
/// one of ours.
pub fn invalid_ke_group(n: &Notify, ours: &[IkeProposal]) -> Option<Group> {
    <[u8; 2]>::try_from(n.data.as_slice())
        .ok()
        .map(u16::from_be_bytes)
        .and_then(Group::from_id)
        .filter(|g| ours.iter().any(|p| p.groups.contains(g)))
}

/// A responder's choice of IKE SA proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IkeChoice {
    /// The number of the initiator's proposal that was chosen.
    pub num: u8,
    /// The suite, with the group the responder wants.
    pub suite: IkeSuite,
}

/// Responder side (§2.7): the first of the initiator's proposals, in its order, that one of
/// ours accepts. The group is the KE payload's group `ke_group` if acceptable, else our most
/// preferred group the proposal also offers (the caller then answers INVALID_KE_PAYLOAD).
pub fn select_ike(
    offered: &[Proposal],
    ours: &[IkeProposal],
    ke_group: Option<u16>,
) -> Option<IkeChoice> {
    select_ike_spi(offered, ours, ke_group, false).map(|(c, _)| c)
}

/// Responder side of an IKE SA rekey (CREATE_CHILD_SA, RFC 7296 §1.3.2): as
/// [`select_ike`], but every proposal must carry the initiator's new 8-octet, non-zero
/// IKE SPI, which is returned with the choice.
pub fn select_ike_rekey(
    offered: &[Proposal],
    ours: &[IkeProposal],
    ke_group: Option<u16>,
) -> Option<(IkeChoice, [u8; 8])> {
    select_ike_spi(offered, ours, ke_group, true)
}

/// The SPI field of an IKE proposal: empty in IKE_SA_INIT, 8 non-zero octets in a rekey.
fn ike_spi(p: &Proposal, rekey: bool) -> Option<[u8; 8]> {
    if rekey {
        <[u8; 8]>::try_from(p.spi.as_slice())
            .ok()
            .filter(|s| *s != [0; 8])
    } else {
        p.spi.is_empty().then_some([0; 8])
    }
}

fn select_ike_spi(
    offered: &[Proposal],
    ours: &[IkeProposal],
    ke_group: Option<u16>,
    rekey: bool,
) -> Option<(IkeChoice, [u8; 8])> {
    for p in offered {
        let Some(spi) = ike_spi(p, rekey) else {
            continue;
        };
        if p.protocol != protocol::IKE || !only_types(p, &[t::ENCR, t::PRF, t::INTEG, t::DH]) {
            continue;
        }
        for q in ours.iter().filter(|q| q.is_valid()) {
            if !has(p, |tr| q.encr.matches(tr)) || !has(p, |tr| is(tr, t::PRF, q.prf.id())) {
                continue;
            }
            if !integ_ok(p, q.integ) {
                continue;
            }
            let offered_groups = |g: &Group| has(p, |tr| is(tr, t::DH, g.id()));
            let group = match ke_group.and_then(Group::from_id) {
                Some(g) if q.groups.contains(&g) && offered_groups(&g) => Some(g),
                _ => q.groups.iter().copied().find(offered_groups),
            };
            if let Some(group) = group {
                let choice = IkeChoice {
                    num: p.num,
                    suite: IkeSuite {
                        encr: q.encr,
                        integ: q.integ,
                        prf: q.prf,
                        group,
                    },
                };
                return Some((choice, spi));
            }
        }
    }
    None
}

/// Initiator side: check the responder's single chosen proposal against what we offered.
pub fn accept_ike(chosen: &[Proposal], ours: &[IkeProposal]) -> Option<IkeSuite> {
    accept_ike_spi(chosen, ours, false).map(|(s, _)| s)
}

/// Initiator side of an IKE SA rekey: as [`accept_ike`], and the answer must carry the
/// responder's new 8-octet, non-zero IKE SPI, which is returned with the suite.
pub fn accept_ike_rekey(chosen: &[Proposal], ours: &[IkeProposal]) -> Option<(IkeSuite, [u8; 8])> {
    accept_ike_spi(chosen, ours, true)
}

fn accept_ike_spi(
    chosen: &[Proposal],
    ours: &[IkeProposal],
    rekey: bool,
) -> Option<(IkeSuite, [u8; 8])> {
    let [p] = chosen else { return None };
    let spi = ike_spi(p, rekey)?;
    if p.protocol != protocol::IKE || !one_of_each(p) {
        return None;
    }
    ours.iter().filter(|q| q.is_valid()).find_map(|q| {
        let group = q
            .groups
            .iter()
            .copied()
            .find(|g| has(p, |tr| is(tr, t::DH, g.id())))?;
        let ok = has(p, |tr| q.encr.matches(tr))
            && has(p, |tr| is(tr, t::PRF, q.prf.id()))
            && integ_ok(p, q.integ)
            && p.transforms.len() == 3 + usize::from(q.integ.is_some());
        ok.then_some((
            IkeSuite {
                encr: q.encr,
                integ: q.integ,
                prf: q.prf,
                group,
            },
            spi,
        ))
    })
}

/// A responder's choice of ESP proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspChoice {
    /// The number of the initiator's proposal that was chosen.
    pub num: u8,
    /// The initiator's SPI (our outbound SPI).
    pub peer_spi: u32,
    /// The suite.
    pub suite: Suite,
}

/// Responder side: the first acceptable ESP proposal (ESN none, no PFS, an SPI outside
/// the reserved 0 ..= 255).
pub fn select_esp(offered: &[Proposal], ours: &[Suite]) -> Option<EspChoice> {
    for p in offered {
        let Ok(spi) = <[u8; 4]>::try_from(p.spi.as_slice()) else {
            continue;
        };
        if !usable_spi(u32::from_be_bytes(spi)) {
            continue;
        }
        if p.protocol != protocol::ESP || !only_types(p, &[t::ENCR, t::INTEG, t::ESN, t::DH]) {
            continue;
        }
        if !esn_and_dh_ok(p) {
            continue;
        }
        for s in ours {
            if esp_offers(p, *s) {
                return Some(EspChoice {
                    num: p.num,
                    peer_spi: u32::from_be_bytes(spi),
                    suite: *s,
                });
            }
        }
    }
    None
}

/// Initiator side: check the responder's single chosen ESP proposal; returns the suite and
/// the responder's SPI (refused if reserved, 0 ..= 255).
pub fn accept_esp(chosen: &[Proposal], ours: &[Suite]) -> Option<(Suite, u32)> {
    let [p] = chosen else { return None };
    let spi = u32::from_be_bytes(<[u8; 4]>::try_from(p.spi.as_slice()).ok()?);
    if p.protocol != protocol::ESP || !one_of_each(p) || !esn_and_dh_ok(p) || !usable_spi(spi) {
        return None;
    }
    ours.iter()
        .copied()
        .find(|s| esp_offers(p, *s))
        .map(|s| (s, spi))
}

fn is(tr: &Transform, ty: u8, id: u16) -> bool {
    tr.ty == ty && tr.id == id && tr.attributes.is_empty()
}

fn has(p: &Proposal, f: impl Fn(&Transform) -> bool) -> bool {
    p.transforms.iter().any(f)
}

fn only_types(p: &Proposal, types: &[u8]) -> bool {
    p.transforms.iter().all(|tr| types.contains(&tr.ty))
}

/// Every transform type appears at most once (a responder's choice).
fn one_of_each(p: &Proposal) -> bool {
    p.transforms
        .iter()
        .enumerate()
        .all(|(i, a)| p.transforms[i + 1..].iter().all(|b| b.ty != a.ty))
}

/// With `integ`, the proposal must offer it; without (AEAD), it may offer only NONE.
fn integ_ok(p: &Proposal, integ: Option<Integ>) -> bool {
    match integ {
        Some(i) => has(p, |tr| is(tr, t::INTEG, i.id())),
        None => p
            .transforms
            .iter()
            .filter(|tr| tr.ty == t::INTEG)
            .all(|tr| tr.id == 0),
    }
}

/// ESN: absent or offering "none". DH: absent or offering NONE (this engine has no PFS).
fn esn_and_dh_ok(p: &Proposal) -> bool {
    let esn_ok = !has(p, |tr| tr.ty == t::ESN) || has(p, |tr| is(tr, t::ESN, t::ESN_NONE));
    let dh_ok = !has(p, |tr| tr.ty == t::DH) || has(p, |tr| is(tr, t::DH, 0));
    esn_ok && dh_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responder_picks_first_acceptable_and_the_ke_group() {
        let offer = ike_offer(&[
            IkeProposal::chacha20poly1305(&[Group::X25519]),
            IkeProposal::aes128_sha256(&[Group::X25519, Group::Modp2048]),
        ]);
        let ours = [IkeProposal::aes128_sha256(&[
            Group::Modp2048,
            Group::X25519,
        ])];
        let c = select_ike(&offer, &ours, Some(31)).unwrap();
        assert_eq!(c.num, 2);
        assert_eq!(c.suite.group, Group::X25519);
        assert_eq!(c.suite.encr, Encr::AesCbc128);
        // KE in a group we do not like: we name our preferred one.
        let ours = [IkeProposal::aes128_sha256(&[Group::Modp2048])];
        assert_eq!(
            select_ike(&offer, &ours, Some(31)).unwrap().suite.group,
            Group::Modp2048
        );
        // Nothing in common.
        let ours = [IkeProposal::aes_gcm16(256, &[Group::X25519])];
        assert_eq!(select_ike(&offer, &ours, Some(31)), None);
        // The initiator accepts what it offered and nothing else.
        let chosen = [c.suite.to_proposal(c.num)];
        let mine = [IkeProposal::aes128_sha256(&[
            Group::X25519,
            Group::Modp2048,
        ])];
        assert_eq!(accept_ike(&chosen, &mine), Some(c.suite));
        assert_eq!(
            accept_ike(&chosen, &[IkeProposal::chacha20poly1305(&[Group::X25519])]),
            None
        );
        let mut two = offer.clone();
        two.truncate(1);
        assert_eq!(accept_ike(&two, &mine), None);
    }

    #[test]
    fn esp_selection_requires_esn_none_and_no_pfs() {
        let offer = esp_offer(&[Suite::AesGcm256, Suite::ChaCha20Poly1305], 0x1234);
        let c = select_esp(&offer, &Suite::ALL).unwrap();
        assert_eq!((c.num, c.peer_spi, c.suite), (1, 0x1234, Suite::AesGcm256));
        let mut esn_only = offer.clone();
        for p in &mut esn_only {
            for tr in &mut p.transforms {
                if tr.ty == t::ESN {
                    tr.id = t::ESN_YES;
                }
            }
        }
        assert_eq!(select_esp(&esn_only, &Suite::ALL), None);
        let mut pfs = offer.clone();
        pfs[0].transforms.push(Transform::new(t::DH, 31));
        assert_eq!(
            select_esp(&pfs, &Suite::ALL).map(|c| c.suite),
            Some(Suite::ChaCha20Poly1305)
        );
        let chosen = [esp_proposal(Suite::ChaCha20Poly1305, 2, 999)];
        assert_eq!(
            accept_esp(&chosen, &[Suite::ChaCha20Poly1305]),
            Some((Suite::ChaCha20Poly1305, 999))
        );
        assert_eq!(accept_esp(&chosen, &[Suite::AesGcm128]), None);
    }

    #[test]
    fn esp_suites_map_to_their_transforms() {
        // Every data-plane suite round-trips through its proposal, and only to itself.
        for s in Suite::ALL {
            let chosen = [esp_proposal(s, 1, 0x1000)];
            assert_eq!(accept_esp(&chosen, &Suite::ALL), Some((s, 0x1000)), "{s}");
            let c = select_esp(&chosen, &[s]).unwrap();
            assert_eq!(c.suite, s);
            for other in Suite::ALL.into_iter().filter(|o| *o != s) {
                assert_eq!(select_esp(&chosen, &[other]), None, "{s} vs {other}");
            }
        }
        let p = esp_proposal(Suite::AesCbc256HmacSha256, 1, 0x1000);
        assert_eq!(p.transforms[0].key_len(), Some(256));
        assert_eq!(
            esp_proposal(Suite::ChaCha20Poly1305, 1, 0x1000).transforms[0].key_len(),
            None
        );
    }

    #[test]
    fn ike_rekey_proposals_carry_an_eight_octet_spi() {
        let ours = [IkeProposal::aes128_sha256(&[
            Group::X25519,
            Group::Modp2048,
        ])];
        let spi = [1, 2, 3, 4, 5, 6, 7, 8];
        let offer = ike_rekey_offer(&ours, spi);
        assert!(offer.iter().all(|p| p.spi == spi));
        let (c, got) = select_ike_rekey(&offer, &ours, Some(31)).unwrap();
        assert_eq!((c.num, c.suite.group, got), (1, Group::X25519, spi));
        // IKE_SA_INIT proposals (no SPI) are no rekey, and rekey proposals no IKE_SA_INIT.
        assert_eq!(select_ike_rekey(&ike_offer(&ours), &ours, Some(31)), None);
        assert_eq!(select_ike(&offer, &ours, Some(31)), None);
        // A zero or short SPI is refused.
        for bad in [alloc::vec![0u8; 8], alloc::vec![1u8; 4]] {
            let mut o = offer.clone();
            o[0].spi = bad;
            assert_eq!(select_ike_rekey(&o, &ours, Some(31)), None);
        }
        // The answer carries the responder's SPI.
        let r_spi = [9; 8];
        let answer = [c.suite.to_rekey_proposal(c.num, r_spi)];
        assert_eq!(accept_ike_rekey(&answer, &ours), Some((c.suite, r_spi)));
        assert_eq!(accept_ike(&answer, &ours), None);
        assert_eq!(accept_ike_rekey(&[c.suite.to_proposal(1)], &ours), None);
    }

    #[test]
    fn reserved_peer_spis_are_refused() {
        // RFC 4303 §2.1: SPIs 1-255 are reserved and 0 is never sent; the data plane
        // refuses such an SA, so proposal selection must not pick one.
        for spi in [0, 1, 255] {
            let offer = esp_offer(&[Suite::ChaCha20Poly1305], spi);
            assert_eq!(select_esp(&offer, &Suite::ALL), None, "{spi}");
            let chosen = [esp_proposal(Suite::ChaCha20Poly1305, 1, spi)];
            assert_eq!(accept_esp(&chosen, &Suite::ALL), None, "{spi}");
        }
        let offer = esp_offer(&[Suite::ChaCha20Poly1305], 256);
        assert!(select_esp(&offer, &Suite::ALL).is_some());
    }
}

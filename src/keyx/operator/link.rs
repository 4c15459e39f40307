//! The authenticated link between a service control and its key-exchange proxy.
//!
//! The seed carries diverted packets in plain IP-in-IP (Figs. 12-14: outer header service
//! control ↔ proxy, the subscriber's packet inside). Unauthenticated, anyone who can put a
//! packet with the proxy's source address on the core network could make the service
//! control emit packets with a subscriber's source address: an open spoofing relay. deputy
//! keeps the seed's outer and inner headers and protects the outer packet with ESP in
//! tunnel mode (the crate's own [`DataPlane`]). The SA pair is negotiated with the crate's
//! IKEv2 between the two operator nodes (the service control initiates, the proxy
//! responds), so every restart brings fresh keys: a static SA would restart its sequence
//! numbers, and with them the AEAD nonces, under the same key.

use alloc::vec;
use core::net::IpAddr;
use core::time::Duration;

use crate::ikev2::{ChildMode, IkeConfig};
use crate::ipsec::{
    Action, ChildSa, DataPlane, DataPlaneConfig, Direction, Lifetime, Policy, Selector,
    TrafficSelector,
};
use crate::{Error, Instant, Rng};

/// Make `ike` (identity and credential as the operator set them) fit the link: tunnel mode,
/// every address of the family on both sides, and a Child SA that lives as long as its
/// IKE SA (the link is rebuilt by a new IKE SA, never by lifetime).
pub fn link_ike(mut ike: IkeConfig, local: IpAddr) -> IkeConfig {
    let any = if local.is_ipv4() {
        TrafficSelector::any_v4()
    } else {
        TrafficSelector::any_v6()
    };
    ike.ts_local = vec![any];
    ike.ts_remote = vec![any];
    ike.mode = ChildMode::Tunnel;
    ike.child_lifetime = Lifetime {
        soft_time: None,
        hard_time: None,
        ..Lifetime::default()
    };
    ike
}

/// A data plane that protects everything through `child` (one end of the link).
pub fn link_plane(
    child: ChildSa,
    local: IpAddr,
    now: Instant,
    rng: Rng,
) -> Result<DataPlane, Error> {
    let mut plane = DataPlane::new(DataPlaneConfig::default(), rng)?;
    let all = if local.is_ipv4() {
        Selector::parse("0.0.0.0/0", "0.0.0.0/0")?
    } else {
        Selector::parse("::/0", "::/0")?
    };
    plane.add_policy(Policy::new(all, Direction::Both, Action::Protect))?;
    plane.install(now, child)?;
    Ok(plane)
}

/// How long a service control waits before it tries the link's IKE SA again after a
/// failure.
pub const LINK_RETRY: Duration = Duration::from_secs(5);

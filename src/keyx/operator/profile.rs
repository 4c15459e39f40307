//! The service profile (seed 003 Fig. 3, ¶0038-¶0044) and the messages that carry it from
//! the authentication server to a service control.

use alloc::vec::Vec;
use core::net::IpAddr;

use super::super::transfer::{ip_bytes, ip_from};
use crate::error::OperatorError;
use crate::wire::{self, FieldWriter, Limits};

/// Message type: install (or replace) a subscriber's profile at a service control.
pub const PROFILE_INSTALL: u8 = 0x56;
/// Message type: withdraw it (detach, or the subscriber moved to another service control).
pub const PROFILE_WITHDRAW: u8 = 0x57;

/// At most this many conditions in one profile.
pub const MAX_CONDITIONS: usize = 16;
/// At most this many subscriber addresses in one profile.
pub const MAX_ADDRESSES: usize = 4;

const F_SUBSCRIBER: u16 = 0x8001;
const F_ADDRESS: u16 = 0x8002;
const F_CONDITION: u16 = 0x8003;

/// Which addresses a condition names (¶0041, ¶0043).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CondAddr {
    /// One address: a message matches when its source or destination is it.
    Single(IpAddr),
    /// The subscriber and one peer: only messages between the two match.
    Pair {
        /// The subscriber's address.
        subscriber: IpAddr,
        /// The peer's address.
        peer: IpAddr,
    },
}

/// One IPsec application condition: which messages the service control diverts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Condition {
    /// The address (or address pair).
    pub addr: CondAddr,
    /// The port (IKE: 500; ¶0069 allows another).
    pub port: u16,
}

impl Condition {
    /// Whether a message from `src` to `dst` with ports `sport`/`dport` matches (¶0041:
    /// its source or destination is the address, and its port is the port).
    pub fn matches(&self, src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> bool {
        let port = sport == self.port || dport == self.port;
        let addr = match self.addr {
            CondAddr::Single(a) => src == a || dst == a,
            CondAddr::Pair { subscriber, peer } => {
                (src == subscriber && dst == peer) || (src == peer && dst == subscriber)
            }
        };
        port && addr
    }
}

/// A subscriber's service profile: who, at which addresses, and which messages go to the
/// key-exchange proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceProfile {
    /// The subscriber (the terminal id its delegation key is provisioned under).
    pub subscriber: u64,
    /// The subscriber's addresses.
    pub addresses: Vec<IpAddr>,
    /// The conditions.
    pub conditions: Vec<Condition>,
}

impl ServiceProfile {
    /// A profile diverting IKE (port 500, and 4500 for NAT traversal) to and from `address`.
    pub fn ike(subscriber: u64, address: IpAddr) -> ServiceProfile {
        ServiceProfile {
            subscriber,
            addresses: alloc::vec![address],
            conditions: alloc::vec![
                Condition {
                    addr: CondAddr::Single(address),
                    port: 500,
                },
                Condition {
                    addr: CondAddr::Single(address),
                    port: 4500,
                },
            ],
        }
    }

    /// The profile of the same subscriber at new addresses (it moved and was given
    /// `addresses` at its new service control): every condition that named an old address
    /// names the new one of the same family.
    pub fn moved_to(&self, addresses: Vec<IpAddr>) -> ServiceProfile {
        let map = |a: IpAddr| {
            if self.addresses.contains(&a) {
                addresses
                    .iter()
                    .copied()
                    .find(|n| n.is_ipv4() == a.is_ipv4())
                    .unwrap_or(a)
            } else {
                a
            }
        };
        let conditions = self
            .conditions
            .iter()
            .map(|c| Condition {
                addr: match c.addr {
                    CondAddr::Single(a) => CondAddr::Single(map(a)),
                    CondAddr::Pair { subscriber, peer } => CondAddr::Pair {
                        subscriber: map(subscriber),
                        peer,
                    },
                },
                port: c.port,
            })
            .collect();
        ServiceProfile {
            subscriber: self.subscriber,
            addresses,
            conditions,
        }
    }

    /// Whether a message matches one of the conditions.
    pub fn diverts(&self, src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> bool {
        self.conditions
            .iter()
            .any(|c| c.matches(src, dst, sport, dport))
    }

    /// The install message.
    pub fn encode_install(&self) -> Result<Vec<u8>, OperatorError> {
        if self.addresses.is_empty()
            || self.addresses.len() > MAX_ADDRESSES
            || self.conditions.len() > MAX_CONDITIONS
        {
            return Err(OperatorError::BadProfile);
        }
        let mut w = FieldWriter::new().u64(F_SUBSCRIBER, self.subscriber);
        for a in &self.addresses {
            w = w.bytes(F_ADDRESS, &ip_bytes(*a));
        }
        for c in &self.conditions {
            let mut v = Vec::with_capacity(35);
            v.extend_from_slice(&c.port.to_be_bytes());
            match c.addr {
                CondAddr::Single(a) => {
                    v.push(1);
                    v.extend(ip_bytes(a));
                }
                CondAddr::Pair { subscriber, peer } => {
                    v.push(2);
                    v.extend(ip_bytes(subscriber));
                    v.extend(ip_bytes(peer));
                }
            }
            w = w.bytes(F_CONDITION, &v);
        }
        wire::encode(PROFILE_INSTALL, 0, w).map_err(|_| OperatorError::BadProfile)
    }
}

/// A withdraw message for `subscriber`.
pub fn encode_withdraw(subscriber: u64) -> Result<Vec<u8>, OperatorError> {
    wire::encode(
        PROFILE_WITHDRAW,
        0,
        FieldWriter::new().u64(F_SUBSCRIBER, subscriber),
    )
    .map_err(|_| OperatorError::BadProfile)
}

/// What the authentication server tells a service control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileMessage {
    /// Install or replace.
    Install(ServiceProfile),
    /// Withdraw this subscriber's profile.
    Withdraw(u64),
}

impl ProfileMessage {
    /// Decode one message.
    pub fn decode(msg: &[u8]) -> Result<ProfileMessage, OperatorError> {
        let bad = |_| OperatorError::BadProfile;
        let m = wire::Message::decode(msg, &Limits::default()).map_err(bad)?;
        let f = m.fields;
        f.check_known(&[F_SUBSCRIBER, F_ADDRESS, F_CONDITION], Default::default())
            .map_err(bad)?;
        let subscriber = f.u64(F_SUBSCRIBER).map_err(bad)?;
        match m.msg_type() {
            PROFILE_WITHDRAW => Ok(ProfileMessage::Withdraw(subscriber)),
            PROFILE_INSTALL => {
                let addresses = f
                    .all(F_ADDRESS)
                    .map(|v| ip_from(v).map_err(|_| OperatorError::BadProfile))
                    .collect::<Result<Vec<_>, _>>()?;
                let conditions = f
                    .all(F_CONDITION)
                    .map(decode_condition)
                    .collect::<Result<Vec<_>, _>>()?;
                if addresses.is_empty()
                    || addresses.len() > MAX_ADDRESSES
                    || conditions.len() > MAX_CONDITIONS
                {
                    return Err(OperatorError::BadProfile);
                }
                Ok(ProfileMessage::Install(ServiceProfile {
                    subscriber,
                    addresses,
                    conditions,
                }))
            }
            _ => Err(OperatorError::BadProfile),
        }
    }
}

fn decode_condition(v: &[u8]) -> Result<Condition, OperatorError> {
    let bad = OperatorError::BadProfile;
    let (port, rest) = v.split_at_checked(2).ok_or(bad.clone())?;
    let port = u16::from_be_bytes([port[0], port[1]]);
    let (kind, rest) = rest.split_first().ok_or(bad.clone())?;
    let addr = match (kind, rest.len()) {
        (1, 4 | 16) => CondAddr::Single(ip_from(rest).map_err(|_| bad.clone())?),
        (2, 8 | 32) => {
            let (a, b) = rest.split_at(rest.len() / 2);
            CondAddr::Pair {
                subscriber: ip_from(a).map_err(|_| bad.clone())?,
                peer: ip_from(b).map_err(|_| bad.clone())?,
            }
        }
        _ => return Err(bad),
    };
    Ok(Condition { addr, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_round_trip_and_match_as_the_seed_says() {
        let t: IpAddr = "10.1.0.5".parse().unwrap();
        let peer: IpAddr = "198.51.100.1".parse().unwrap();
        let mut p = ServiceProfile::ike(7, t);
        p.conditions.push(Condition {
            addr: CondAddr::Pair {
                subscriber: t,
                peer,
            },
            port: 1500,
        });
        let bytes = p.encode_install().unwrap();
        assert_eq!(
            ProfileMessage::decode(&bytes).unwrap(),
            ProfileMessage::Install(p.clone())
        );
        assert_eq!(
            ProfileMessage::decode(&encode_withdraw(7).unwrap()).unwrap(),
            ProfileMessage::Withdraw(7)
        );
        // ¶0041: the address as source or destination, and the port.
        assert!(p.diverts(t, peer, 500, 500));
        assert!(p.diverts(peer, t, 500, 500));
        assert!(!p.diverts(t, peer, 1000, 53));
        // ¶0043: a pair condition matches only that peer.
        let other: IpAddr = "198.51.100.2".parse().unwrap();
        assert!(p.diverts(t, peer, 1500, 9));
        assert!(!p.conditions[2].matches(t, other, 1500, 9));
        let mut big = p.clone();
        big.conditions = alloc::vec![p.conditions[0]; MAX_CONDITIONS + 1];
        assert_eq!(big.encode_install(), Err(OperatorError::BadProfile));
    }
}

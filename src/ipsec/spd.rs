//! The security policy database (RFC 4301 §4.4.1): an ordered list of entries, each a
//! [`Selector`], the direction it applies to, and an [`Action`]. The first matching entry
//! decides; when none matches, the database's default action does (discard unless
//! configured otherwise, as RFC 4301 §4.4.1 asks).

use alloc::vec::Vec;

use super::IpsecError;
use super::packet::PacketInfo;
use super::selector::Selector;

/// What to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send or accept it through an SA (outbound: find or acquire one; inbound: it must
    /// have arrived protected).
    Protect,
    /// Let it pass in clear.
    Bypass,
    /// Drop it.
    Discard,
}

/// Which packets an entry applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Outbound packets, matched as written (source = us).
    Outbound,
    /// Inbound packets, matched as written (source = the peer).
    Inbound,
    /// Both: outbound packets as written, inbound packets mirrored (source and
    /// destination swapped) — the RFC 4301 reading of a local/remote policy.
    Both,
}

/// One SPD entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Which packets.
    pub selector: Selector,
    /// In which direction.
    pub direction: Direction,
    /// What to do.
    pub action: Action,
}

impl Policy {
    /// An entry.
    pub fn new(selector: Selector, direction: Direction, action: Action) -> Policy {
        Policy {
            selector,
            direction,
            action,
        }
    }

    fn matches_outbound(&self, p: &PacketInfo) -> bool {
        matches!(self.direction, Direction::Outbound | Direction::Both) && self.selector.matches(p)
    }

    fn matches_inbound(&self, p: &PacketInfo) -> bool {
        match self.direction {
            Direction::Inbound => self.selector.matches(p),
            Direction::Both => self.selector.mirrored().matches(p),
            Direction::Outbound => false,
        }
    }
}

/// The outcome of an SPD lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The action.
    pub action: Action,
    /// Index of the matching entry, or `None` for the default action.
    pub policy: Option<usize>,
}

/// An ordered, bounded policy database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spd {
    entries: Vec<Policy>,
    max: usize,
    default_action: Action,
}

impl Spd {
    /// An empty database holding at most `max` entries, with `default_action` for packets
    /// no entry matches.
    pub fn new(max: usize, default_action: Action) -> Spd {
        Spd {
            entries: Vec::new(),
            max,
            default_action,
        }
    }

    /// Append an entry (it matches after every earlier one). Returns its index.
    pub fn push(&mut self, policy: Policy) -> Result<usize, IpsecError> {
        if self.entries.len() >= self.max {
            return Err(IpsecError::CapacityExceeded {
                what: "security policy database",
                bound: self.max,
            });
        }
        self.entries.push(policy);
        Ok(self.entries.len() - 1)
    }

    /// Remove every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The entries in order.
    pub fn entries(&self) -> &[Policy] {
        &self.entries
    }

    /// The action for packets no entry matches.
    pub fn default_action(&self) -> Action {
        self.default_action
    }

    /// Set the action for packets no entry matches.
    pub fn set_default_action(&mut self, action: Action) {
        self.default_action = action;
    }

    /// The decision for an outbound packet.
    pub fn outbound(&self, p: &PacketInfo) -> Decision {
        self.decide(|e| e.matches_outbound(p))
    }

    /// The decision for an inbound packet that arrived in clear.
    pub fn inbound(&self, p: &PacketInfo) -> Decision {
        self.decide(|e| e.matches_inbound(p))
    }

    fn decide(&self, f: impl Fn(&Policy) -> bool) -> Decision {
        match self.entries.iter().position(f) {
            Some(i) => Decision {
                action: self.entries[i].action,
                policy: Some(i),
            },
            None => Decision {
                action: self.default_action,
                policy: None,
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ipsec::packet::tests::{icmp, udp};
    use crate::ipsec::packet::{PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, parse};
    use crate::ipsec::selector::PortRange;

    fn tcp(src: &str, dst: &str, sport: u16, dport: u16) -> PacketInfo {
        let mut p = udp(src, dst, sport, dport, &[0u8; 20]);
        let info = parse(&p).unwrap();
        p[info.proto_offset] = PROTO_TCP;
        parse(&p).unwrap()
    }

    /// Seed 001, Fig. 2: the policy table's three example rows (also used by the data
    /// plane's policy tests). Inbound, matched as written: ¶0016-¶0017 describe every row
    /// as packets *sent by the peer* toward the terminal.
    pub(crate) fn seed_001_policies() -> [Policy; 3] {
        let out = |sel: Selector, action| Policy::new(sel, Direction::Inbound, action);
        [
            // TCP from 10.0.0.1 to anything in 10.0.0.0/24.
            out(
                Selector::parse("10.0.0.1/32", "10.0.0.0/24")
                    .unwrap()
                    .protocol(PROTO_TCP),
                Action::Bypass,
            ),
            // NetBIOS name service between two IPv6 hosts.
            out(
                Selector::parse("2001::1", "2001::2")
                    .unwrap()
                    .protocol(PROTO_UDP)
                    .src_ports(PortRange::single(137))
                    .dst_ports(PortRange::single(137)),
                Action::Bypass,
            ),
            // ICMPv6 neighbour solicitation (type 135).
            out(
                Selector::parse("2001::1/128", "2001::2/128")
                    .unwrap()
                    .protocol(PROTO_ICMPV6)
                    .src_ports(PortRange::single(135)),
                Action::Discard,
            ),
        ]
    }

    fn seed_001_table() -> Spd {
        let mut spd = Spd::new(8, Action::Protect);
        for p in seed_001_policies() {
            spd.push(p).unwrap();
        }
        spd
    }

    #[test]
    fn seed_001_policy_table_examples() {
        let spd = seed_001_table();
        // Row 1: TCP from 10.0.0.1 to anything in 10.0.0.0/24, any ports: bypass.
        let d = spd.inbound(&tcp("10.0.0.1", "10.0.0.77", 40000, 22));
        assert_eq!((d.action, d.policy), (Action::Bypass, Some(0)));
        // Not TCP, another source, or outside the /24: not row 1.
        let u = parse(&udp("10.0.0.1", "10.0.0.77", 1, 2, b"")).unwrap();
        assert_eq!(spd.inbound(&u).action, Action::Protect);
        assert_eq!(
            spd.inbound(&tcp("10.0.0.2", "10.0.0.77", 1, 2)).action,
            Action::Protect
        );
        assert_eq!(
            spd.inbound(&tcp("10.0.0.1", "10.0.1.1", 1, 2)).action,
            Action::Protect
        );
        // Row 2: NetBIOS name service between the two IPv6 hosts: bypass.
        let nb = parse(&udp("2001::1", "2001::2", 137, 137, b"q")).unwrap();
        assert_eq!(spd.inbound(&nb).policy, Some(1));
        let other = parse(&udp("2001::1", "2001::2", 138, 137, b"q")).unwrap();
        assert_eq!(spd.inbound(&other).policy, None);
        // Row 3: ICMPv6 type 135 (neighbour solicitation), any code: discard.
        let ns = parse(&icmp("2001::1", "2001::2", 135, 0)).unwrap();
        assert_eq!(
            (spd.inbound(&ns).action, spd.inbound(&ns).policy),
            (Action::Discard, Some(2))
        );
        let echo = parse(&icmp("2001::1", "2001::2", 128, 0)).unwrap();
        assert_eq!(spd.inbound(&echo).action, Action::Protect);
        // Inbound-only entries do not apply to what the terminal sends.
        assert_eq!(spd.outbound(&ns).policy, None);
        assert_eq!(spd.outbound(&nb).policy, None);
    }

    #[test]
    fn first_match_wins_both_mirrors_and_the_bound_holds() {
        let mut spd = Spd::new(2, Action::Discard);
        spd.push(Policy::new(
            Selector::parse("192.0.2.0/24", "198.51.100.0/24").unwrap(),
            Direction::Both,
            Action::Protect,
        ))
        .unwrap();
        spd.push(Policy::new(
            Selector::parse("0.0.0.0/0", "0.0.0.0/0").unwrap(),
            Direction::Both,
            Action::Bypass,
        ))
        .unwrap();
        assert_eq!(
            spd.push(Policy::new(
                Selector::parse("0.0.0.0/0", "0.0.0.0/0").unwrap(),
                Direction::Inbound,
                Action::Discard
            )),
            Err(IpsecError::CapacityExceeded {
                what: "security policy database",
                bound: 2
            })
        );
        let out = parse(&udp("192.0.2.1", "198.51.100.1", 1, 2, b"")).unwrap();
        assert_eq!(spd.outbound(&out).action, Action::Protect);
        let back = parse(&udp("198.51.100.1", "192.0.2.1", 2, 1, b"")).unwrap();
        assert_eq!(spd.inbound(&back).action, Action::Protect, "mirrored");
        assert_eq!(spd.outbound(&back).action, Action::Bypass);
        let v6 = parse(&udp("::1", "::2", 1, 2, b"")).unwrap();
        assert_eq!(spd.outbound(&v6).action, Action::Discard, "default");
        spd.clear();
        assert_eq!(spd.outbound(&out).policy, None);
    }
}

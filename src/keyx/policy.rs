//! The substitution server's policy database (the seed's database 132 and its
//! "confirmation means", S43): which authenticated peer identities may reach which
//! terminal, and which peers a terminal may reach.
//!
//! Default deny: a terminal with no rule for a direction reaches nobody that way. A rule
//! is checked only against an identity the server has already authenticated (S42 comes
//! first), never against what a terminal claims. Lookups cost one map search for the
//! terminal plus a scan of its own rules, which are bounded, so the cost does not grow with
//! the number of terminals served.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use super::dispatch::TerminalId;
use crate::Error;
use crate::ikev2::Identity;

/// Which way a key exchange goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The peer starts toward the terminal (the seed's Fig. 12).
    ToTerminal,
    /// The terminal starts toward the peer.
    FromTerminal,
}

/// Which authenticated peers a rule admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerPattern {
    /// Exactly this identity (type and value).
    Exactly(Identity),
    /// An FQDN identity equal to this domain or below it at a label boundary
    /// (`example.com` admits `example.com` and `vpn.example.com`, not `badexample.com`);
    /// compared without regard to ASCII case or a trailing dot.
    Domain(String),
    /// Any peer that authenticated against this terminal's authentication keys.
    AnyAuthenticated,
}

impl PeerPattern {
    fn admits(&self, peer: &Identity) -> bool {
        match self {
            PeerPattern::Exactly(id) => id == peer,
            PeerPattern::Domain(domain) => match peer {
                Identity::Fqdn(name) => in_domain(name, domain),
                _ => false,
            },
            PeerPattern::AnyAuthenticated => true,
        }
    }
}

fn in_domain(name: &str, domain: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() || name.len() < domain.len() {
        return false;
    }
    let (head, tail) = name.split_at(name.len() - domain.len());
    tail.eq_ignore_ascii_case(domain) && (head.is_empty() || head.ends_with('.'))
}

#[derive(Clone, Debug, Default)]
struct Rules {
    to_terminal: Vec<PeerPattern>,
    from_terminal: Vec<PeerPattern>,
}

impl Rules {
    fn of(&self, direction: Direction) -> &Vec<PeerPattern> {
        match direction {
            Direction::ToTerminal => &self.to_terminal,
            Direction::FromTerminal => &self.from_terminal,
        }
    }

    fn of_mut(&mut self, direction: Direction) -> &mut Vec<PeerPattern> {
        match direction {
            Direction::ToTerminal => &mut self.to_terminal,
            Direction::FromTerminal => &mut self.from_terminal,
        }
    }
}

/// The policy database.
#[derive(Clone, Debug)]
pub struct PolicyDb {
    terminals: BTreeMap<TerminalId, Rules>,
    max_terminals: usize,
    max_rules: usize,
}

impl PolicyDb {
    /// Default bound on terminals with rules.
    pub const DEFAULT_MAX_TERMINALS: usize = 4096;
    /// Default bound on one terminal's rules per direction.
    pub const DEFAULT_MAX_RULES: usize = 64;

    /// An empty database (everything denied) with the default bounds.
    pub fn new() -> PolicyDb {
        PolicyDb::with_bounds(Self::DEFAULT_MAX_TERMINALS, Self::DEFAULT_MAX_RULES)
    }

    /// An empty database holding rules for at most `max_terminals` terminals and at most
    /// `max_rules` rules per terminal and direction.
    pub fn with_bounds(max_terminals: usize, max_rules: usize) -> PolicyDb {
        PolicyDb {
            terminals: BTreeMap::new(),
            max_terminals,
            max_rules,
        }
    }

    /// Let peers matching `pattern` take part in key exchanges with `terminal` in
    /// `direction`. Refused with [`Error::CapacityExceeded`] at either bound.
    pub fn allow(
        &mut self,
        terminal: &TerminalId,
        direction: Direction,
        pattern: PeerPattern,
    ) -> Result<(), Error> {
        if !self.terminals.contains_key(terminal) && self.terminals.len() >= self.max_terminals {
            return Err(Error::CapacityExceeded {
                what: "policy database terminals",
                bound: self.max_terminals,
            });
        }
        let max_rules = self.max_rules;
        let rules = self.terminals.entry(terminal.clone()).or_default();
        let list = rules.of_mut(direction);
        if list.contains(&pattern) {
            return Ok(());
        }
        if list.len() >= max_rules {
            return Err(Error::CapacityExceeded {
                what: "policy rules of one terminal",
                bound: max_rules,
            });
        }
        list.push(pattern);
        Ok(())
    }

    /// Remove every rule of `terminal` (it was decommissioned).
    pub fn forget(&mut self, terminal: &TerminalId) -> bool {
        self.terminals.remove(terminal).is_some()
    }

    /// S43: may the authenticated `peer` take part in a key exchange with `terminal` in
    /// `direction`?
    pub fn permits(&self, terminal: &TerminalId, direction: Direction, peer: &Identity) -> bool {
        self.terminals
            .get(terminal)
            .is_some_and(|r| r.of(direction).iter().any(|p| p.admits(peer)))
    }
}

impl Default for PolicyDb {
    fn default() -> Self {
        PolicyDb::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fqdn(s: &str) -> Identity {
        Identity::Fqdn(s.into())
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let db = PolicyDb::new();
        assert!(!db.permits(&"fridge".into(), Direction::ToTerminal, &fqdn("a")));
    }

    #[test]
    fn each_direction_has_its_own_rules() {
        let mut db = PolicyDb::new();
        let t: TerminalId = "fridge".into();
        db.allow(
            &t,
            Direction::ToTerminal,
            PeerPattern::Exactly(fqdn("maker.example")),
        )
        .unwrap();
        assert!(db.permits(&t, Direction::ToTerminal, &fqdn("maker.example")));
        assert!(!db.permits(&t, Direction::FromTerminal, &fqdn("maker.example")));
        // Another terminal gets nothing from this one's rules.
        assert!(!db.permits(
            &"oven".into(),
            Direction::ToTerminal,
            &fqdn("maker.example")
        ));
        // Exactly means the type too: a key id with the same bytes is another identity.
        assert!(!db.permits(
            &t,
            Direction::ToTerminal,
            &Identity::KeyId(b"maker.example".to_vec())
        ));
    }

    #[test]
    fn a_domain_admits_itself_and_below_at_a_label_boundary() {
        let mut db = PolicyDb::new();
        let t: TerminalId = "fridge".into();
        db.allow(
            &t,
            Direction::FromTerminal,
            PeerPattern::Domain("Example.COM.".into()),
        )
        .unwrap();
        for ok in ["example.com", "vpn.example.com", "a.b.EXAMPLE.com."] {
            assert!(db.permits(&t, Direction::FromTerminal, &fqdn(ok)), "{ok}");
        }
        for no in ["badexample.com", "example.com.evil", "com", ""] {
            assert!(!db.permits(&t, Direction::FromTerminal, &fqdn(no)), "{no}");
        }
        assert!(!db.permits(
            &t,
            Direction::FromTerminal,
            &Identity::Rfc822("x@example.com".into())
        ));
    }

    #[test]
    fn both_bounds_are_enforced() {
        let mut db = PolicyDb::with_bounds(1, 2);
        let t: TerminalId = "fridge".into();
        db.allow(&t, Direction::ToTerminal, PeerPattern::Exactly(fqdn("a")))
            .unwrap();
        db.allow(&t, Direction::ToTerminal, PeerPattern::Exactly(fqdn("b")))
            .unwrap();
        // The same rule twice takes no room.
        db.allow(&t, Direction::ToTerminal, PeerPattern::Exactly(fqdn("b")))
            .unwrap();
        assert_eq!(
            db.allow(&t, Direction::ToTerminal, PeerPattern::Exactly(fqdn("c"))),
            Err(Error::CapacityExceeded {
                what: "policy rules of one terminal",
                bound: 2
            })
        );
        assert_eq!(
            db.allow(
                &"oven".into(),
                Direction::ToTerminal,
                PeerPattern::AnyAuthenticated
            ),
            Err(Error::CapacityExceeded {
                what: "policy database terminals",
                bound: 1
            })
        );
        assert!(db.forget(&t));
        db.allow(
            &"oven".into(),
            Direction::ToTerminal,
            PeerPattern::AnyAuthenticated,
        )
        .unwrap();
        assert!(db.permits(&"oven".into(), Direction::ToTerminal, &fqdn("anyone")));
    }
}

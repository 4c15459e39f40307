//! Where the proxy's secrets live (¶0024): the terminals' delegation keys and the IKE
//! credentials the proxy uses to authenticate *as* each terminal.
//!
//! The seed lets part of the stores sit on a removable tamper-resistant device (an IC
//! card, a USB key, an SD card) so that only its holder can change them. [`SecureStore`]
//! is that boundary: the proxy asks it for a terminal's secrets each time it needs them and
//! keeps none beside the SAs it negotiated. When the store says it is absent the proxy
//! fails closed: the address check (S5/S15) misses, nothing is negotiated or pushed, and
//! the SAs negotiated with the store's secrets are dropped ([`super::InlineProxy::store_changed`]).
//! [`MemoryStore`] is the in-memory backend; a secure-element backend implements the same
//! trait over its driver.

use alloc::collections::BTreeMap;

use super::super::seal::DelegationKey;
use crate::ikev2::IkeConfig;

/// One terminal's secrets.
#[derive(Clone, Debug)]
pub struct TerminalSecrets {
    /// The key the proxy seals key transfers with (the terminal holds the same).
    pub delegation_key: DelegationKey,
    /// The IKE identity, credential, proposals and child mode the proxy uses as the
    /// terminal. Its traffic selectors are replaced per negotiation (the terminal's address
    /// and the peer's).
    pub ike: IkeConfig,
}

/// The store of the terminals' secrets.
pub trait SecureStore {
    /// Whether the store is present (a removable device may be pulled out).
    fn present(&self) -> bool;
    /// The secrets of terminal `id`, if present and provisioned.
    fn secrets(&self, id: u64) -> Option<TerminalSecrets>;
    /// Whether terminal `id` is provisioned (answered without handing out secrets).
    fn has(&self, id: u64) -> bool;
    /// How many terminals are provisioned.
    fn len(&self) -> usize;
    /// Whether none is.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The in-memory [`SecureStore`], bounded.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    entries: BTreeMap<u64, TerminalSecrets>,
    max: usize,
    present: bool,
}

impl MemoryStore {
    /// An empty store holding at most `max` terminals.
    pub fn new(max: usize) -> MemoryStore {
        MemoryStore {
            entries: BTreeMap::new(),
            max,
            present: true,
        }
    }

    /// Provision terminal `id`; refused when the bound is reached or the id is taken.
    pub fn insert(&mut self, id: u64, secrets: TerminalSecrets) -> Result<(), crate::Error> {
        if self.entries.contains_key(&id) {
            return Err(crate::error::InlineError::DuplicateTerminal(id).into());
        }
        if self.entries.len() >= self.max {
            return Err(crate::Error::CapacityExceeded {
                what: "secure store",
                bound: self.max,
            });
        }
        self.entries.insert(id, secrets);
        Ok(())
    }

    /// Remove terminal `id`'s secrets.
    pub fn remove(&mut self, id: u64) -> bool {
        self.entries.remove(&id).is_some()
    }

    /// Model pulling the device out (`false`) or putting it back (`true`).
    pub fn set_present(&mut self, present: bool) {
        self.present = present;
    }
}

impl SecureStore for MemoryStore {
    fn present(&self) -> bool {
        self.present
    }

    fn secrets(&self, id: u64) -> Option<TerminalSecrets> {
        self.present
            .then(|| self.entries.get(&id).cloned())
            .flatten()
    }

    fn has(&self, id: u64) -> bool {
        self.present && self.entries.contains_key(&id)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

//! The server's device directory (the seed's 機器情報リスト, Fig. 9): device ID → the public
//! address and port its last registration came from.

use alloc::collections::{BTreeMap, BTreeSet};
use core::net::SocketAddr;

use super::DeviceId;
use crate::Instant;

/// One live registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// The public address and port the last accepted registration came from.
    pub addr: SocketAddr,
    /// The timestamp of the last accepted registration (ms since the Unix epoch): a new
    /// registration must carry a larger one (replay protection).
    pub last_timestamp_ms: u64,
    /// When the entry expires unless refreshed.
    pub expires: Instant,
    /// Device-wide back-off announced by the device: requests are refused without
    /// waking it until then.
    pub blocked_until: Option<Instant>,
}

/// What [`Directory::register`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    /// A new entry (or one that had expired).
    New,
    /// The same address; the expiry moved.
    Refreshed,
    /// The address or port changed (S202A): the entry now points at the new one.
    Moved {
        /// The previous address.
        from: SocketAddr,
    },
}

/// The directory is full of live entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectoryFull {
    /// Its capacity.
    pub capacity: usize,
}

/// Storage for the device directory. [`MemoryDirectory`] is the default; a deployment
/// may back it with something shared or persistent.
///
/// Contract: an implementation never holds more than [`Directory::capacity`] live
/// entries, never drops a live entry to make room (so a replayed registration cannot be
/// accepted because its device's last timestamp was forgotten), and treats entries whose
/// `expires` is not after `now` as absent.
pub trait Directory {
    /// The live entry for `device`.
    fn lookup(&self, device: DeviceId, now: Instant) -> Option<DirectoryEntry>;

    /// Insert or refresh `device`'s entry (the caller checked authenticity and
    /// freshness). Fails when the directory is full of live entries and `device` has none.
    fn register(
        &mut self,
        device: DeviceId,
        entry: DirectoryEntry,
        now: Instant,
    ) -> Result<Registered, DirectoryFull>;

    /// Set or clear a live entry's device-wide back-off.
    fn set_blocked(&mut self, device: DeviceId, until: Option<Instant>, now: Instant);

    /// Remove up to `max` expired entries; returns how many were removed.
    fn expire(&mut self, now: Instant, max: usize) -> usize;

    /// When the next entry expires (the server's timer for [`Directory::expire`]).
    fn next_expiry(&self) -> Option<Instant>;

    /// Entries held (live or not yet reclaimed).
    fn len(&self) -> usize;

    /// Whether no entries are held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries held at once.
    fn capacity(&self) -> usize;
}

/// An in-memory directory, bounded to a capacity fixed at construction and allocated as
/// it fills (nothing is reserved up front).
///
/// Two B-trees: entries by device ID, and (expiry, device ID) for reclaiming expired
/// entries in order. Memory per entry is about 140 bytes: a 64-byte value and an 8-byte
/// key in the first tree, a 16-byte key in the second, and B-tree nodes that are on
/// average two thirds full. The default capacity of 1,000,000 devices needs about 140 MB
/// when full.
///
/// Eviction: only expired entries are ever removed. When the directory is full of live
/// entries, a registration from a new device is refused ([`DirectoryFull`]); since every
/// registration must carry a valid MAC, only genuine devices can fill it.
#[derive(Debug)]
pub struct MemoryDirectory {
    entries: BTreeMap<DeviceId, DirectoryEntry>,
    by_expiry: BTreeSet<(Instant, DeviceId)>,
    capacity: usize,
}

impl MemoryDirectory {
    /// The default capacity: one million devices.
    pub const DEFAULT_CAPACITY: usize = 1_000_000;
    /// Approximate bytes per entry (see the type docs).
    pub const BYTES_PER_ENTRY: usize = 140;

    /// An empty directory holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        MemoryDirectory {
            entries: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Approximate memory in use, from [`MemoryDirectory::BYTES_PER_ENTRY`].
    pub fn approx_bytes(&self) -> usize {
        self.entries.len() * Self::BYTES_PER_ENTRY
    }
}

impl Default for MemoryDirectory {
    fn default() -> Self {
        MemoryDirectory::new(Self::DEFAULT_CAPACITY)
    }
}

impl Directory for MemoryDirectory {
    fn lookup(&self, device: DeviceId, now: Instant) -> Option<DirectoryEntry> {
        self.entries
            .get(&device)
            .filter(|e| e.expires > now)
            .copied()
    }

    fn register(
        &mut self,
        device: DeviceId,
        entry: DirectoryEntry,
        now: Instant,
    ) -> Result<Registered, DirectoryFull> {
        let outcome = match self.entries.get(&device) {
            Some(old) if old.expires > now && old.addr == entry.addr => Registered::Refreshed,
            Some(old) if old.expires > now => Registered::Moved { from: old.addr },
            Some(_) => Registered::New,
            None => {
                if self.entries.len() >= self.capacity {
                    self.expire(now, 64);
                }
                if self.entries.len() >= self.capacity {
                    return Err(DirectoryFull {
                        capacity: self.capacity,
                    });
                }
                Registered::New
            }
        };
        if let Some(old) = self.entries.insert(device, entry) {
            self.by_expiry.remove(&(old.expires, device));
        }
        self.by_expiry.insert((entry.expires, device));
        Ok(outcome)
    }

    fn set_blocked(&mut self, device: DeviceId, until: Option<Instant>, now: Instant) {
        if let Some(e) = self.entries.get_mut(&device).filter(|e| e.expires > now) {
            e.blocked_until = until;
        }
    }

    fn expire(&mut self, now: Instant, max: usize) -> usize {
        let mut removed = 0;
        while removed < max {
            let Some(&(at, device)) = self.by_expiry.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.by_expiry.pop_first();
            self.entries.remove(&device);
            removed += 1;
        }
        removed
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.by_expiry.first().map(|(at, _)| *at)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(port: u16, expires: u64) -> DirectoryEntry {
        DirectoryEntry {
            addr: SocketAddr::from(([202, 204, 16, 13], port)),
            last_timestamp_ms: 0,
            expires: Instant::from_secs(expires),
            blocked_until: None,
        }
    }

    #[test]
    fn register_refresh_move_and_expire() {
        let mut d = MemoryDirectory::new(10);
        let t = Instant::from_secs(1);
        assert_eq!(
            d.register(DeviceId(1), entry(3400, 90), t),
            Ok(Registered::New)
        );
        assert_eq!(
            d.register(DeviceId(1), entry(3400, 100), t),
            Ok(Registered::Refreshed)
        );
        assert_eq!(
            d.register(DeviceId(1), entry(3500, 110), t),
            Ok(Registered::Moved {
                from: entry(3400, 0).addr
            })
        );
        assert_eq!(
            d.lookup(DeviceId(1), Instant::from_secs(109))
                .unwrap()
                .addr
                .port(),
            3500
        );
        assert_eq!(d.lookup(DeviceId(1), Instant::from_secs(110)), None);
        assert_eq!(d.len(), 1);
        assert_eq!(d.expire(Instant::from_secs(110), 10), 1);
        assert!(d.is_empty());
        // An entry that expired but was not reclaimed counts as new.
        d.register(DeviceId(2), entry(1, 5), t).unwrap();
        assert_eq!(
            d.register(DeviceId(2), entry(2, 50), Instant::from_secs(6)),
            Ok(Registered::New)
        );
    }

    #[test]
    fn capacity_is_enforced_and_only_expired_entries_make_room() {
        let mut d = MemoryDirectory::new(3);
        let t = Instant::from_secs(1);
        for id in 0..3 {
            d.register(DeviceId(id), entry(1000 + id as u16, 10 + id), t)
                .unwrap();
        }
        assert_eq!(
            d.register(DeviceId(9), entry(9, 99), t),
            Err(DirectoryFull { capacity: 3 })
        );
        // Existing devices still refresh when full.
        assert_eq!(
            d.register(DeviceId(1), entry(1001, 50), t),
            Ok(Registered::Refreshed)
        );
        assert_eq!(d.len(), 3);
        // Once device 0 expires, a new device gets its room; live ones stay.
        let later = Instant::from_secs(10);
        assert_eq!(
            d.register(DeviceId(9), entry(9, 99), later),
            Ok(Registered::New)
        );
        assert_eq!(d.len(), 3);
        assert!(d.lookup(DeviceId(0), later).is_none());
        assert!(d.lookup(DeviceId(1), later).is_some());
        assert!(d.lookup(DeviceId(2), later).is_some());
        assert_eq!(d.approx_bytes(), 3 * MemoryDirectory::BYTES_PER_ENTRY);
    }

    #[test]
    fn back_off_is_stored_on_live_entries_only() {
        let mut d = MemoryDirectory::new(4);
        let t = Instant::from_secs(1);
        d.register(DeviceId(1), entry(1, 10), t).unwrap();
        d.set_blocked(DeviceId(1), Some(Instant::from_secs(5)), t);
        assert_eq!(
            d.lookup(DeviceId(1), t).unwrap().blocked_until,
            Some(Instant::from_secs(5))
        );
        d.set_blocked(DeviceId(7), Some(Instant::from_secs(5)), t);
        assert!(d.lookup(DeviceId(7), t).is_none());
    }
}

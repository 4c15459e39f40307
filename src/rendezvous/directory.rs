//! The server's device directory (the seed's 機器情報リスト, Fig. 9): device ID → the public
//! address and port its last registration came from.

use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

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

    /// Look `device`'s live entry up and register the entry `make` builds from it, or
    /// nothing if `make` fails: [`Directory::lookup`] then [`Directory::register`], which an
    /// implementation may do in one probe ([`MemoryDirectory`] does). The server's
    /// registration path.
    fn register_with<E>(
        &mut self,
        device: DeviceId,
        now: Instant,
        make: impl FnOnce(Option<DirectoryEntry>) -> Result<DirectoryEntry, E>,
    ) -> Result<Result<Registered, DirectoryFull>, E>
    where
        Self: Sized,
    {
        let entry = make(self.lookup(device, now))?;
        Ok(self.register(device, entry, now))
    }

    /// A hint that `device` is about to be registered: an implementation may start loading
    /// its record, so that the memory access overlaps the work before it (the server
    /// calls this before computing the registration's MACs). Does nothing by default.
    fn prefetch(&self, device: DeviceId) {
        let _ = device;
    }

    /// Set or clear a live entry's device-wide back-off.
    fn set_blocked(&mut self, device: DeviceId, until: Option<Instant>, now: Instant);

    /// Remove up to `max` expired entries; returns how many were removed.
    fn expire(&mut self, now: Instant, max: usize) -> usize;

    /// When the next entry expires (the server's timer for [`Directory::expire`]), or an
    /// earlier instant: an implementation may answer a lower bound (as [`MemoryDirectory`]
    /// does), never a later one. A timer that fires early costs a [`Directory::expire`]
    /// that finds nothing, after which the bound it looked at is exact.
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

/// An in-memory directory: fixed-size records in one open-addressing hash table, allocated
/// in full at construction for a capacity fixed then.
///
/// # Layout
///
/// Each entry is one 32-byte record (device ID, last timestamp, expiry, back-off,
/// IPv4 address and port, a tag), aligned so that it never straddles a cache line. The
/// table has a third more slots than the capacity (at most three quarters full), probed
/// linearly from the device ID's hash; a removal shifts the rest of its run back (no
/// tombstones), so probe runs stay as short as the load makes them however long the
/// directory churns. A registration, a refresh or a look-up is one probe: about three
/// slots on average when full, in one cache line or, about three times in ten, two
/// neighbouring ones. Memory is about 43 bytes per entry
/// of capacity (32 × 4/3, plus the expiry tree below): ≈ 43 MB for the default million
/// devices, allocated up front. An IPv6 address (16 bytes, flow label and scope) does not
/// fit the record: it goes to a side array the record points into, 24 more bytes for
/// each IPv6 entry, grown as IPv6 entries arrive and reused as they go.
///
/// # Times
///
/// `expires` is kept in whole seconds since [`Instant::ZERO`] (`u32`), rounded up: an entry
/// lives until at most a second after the instant it was given, never less, so the
/// replay protection the server builds on it (an entry outlives its timestamp's window)
/// holds. Expiries more than `u32::MAX - 1` seconds (≈ 136 years) after the origin are
/// saturated to that bound (an entry given a later one expires then). `blocked_until` is
/// kept in milliseconds, rounded up (46 bits: every [`Instant`] fits). The timestamp and
/// the address are kept exactly.
///
/// # Expiry
///
/// No second index is walked per registration. The table is cut into blocks of 64 slots
/// (2 KB), and a min-tree over the blocks (4 bytes per block and inner node) holds a
/// *lower bound* of each block's earliest expiry: an insertion or an earlier expiry lowers
/// it (a walk up the tree that stops at the first ancestor already lower); a refresh,
/// which only moves an expiry later, leaves it as it is. [`Directory::next_expiry`] is the
/// root: never later than the next expiry, earlier when the entry that set it has been
/// refreshed since. [`Directory::expire`] sweeps the block with the lowest bound, removing
/// what expired and setting the bound to the block's true earliest expiry, and goes on to
/// the next lowest while bounds are due, sweeping at most `max` blocks and removing at most
/// `max` entries. A sweep that finds nothing is paid for by the refresh that made its
/// bound stale (at most one such sweep per block per refresh of its earliest entry), so
/// the amortised cost of expiry per registration is constant, whatever the table's size.
///
/// # Hashing
///
/// The device ID is hashed with a fixed multiply-fold, unkeyed on purpose: only
/// registrations that carry a valid MAC under the device's key insert entries, so the IDs
/// in the table are the operator's, not an attacker's; whoever looks up IDs of their
/// choosing (a connection request) pays at most the longest run the genuine IDs make,
/// and those requests are rate-limited per source.
///
/// # Eviction
///
/// Only expired entries are ever removed. When the directory is full of live entries, a
/// registration from a new device is refused ([`DirectoryFull`]); since every
/// registration must carry a valid MAC, only genuine devices can fill it. A new device
/// arriving at a full directory sweeps blocks (in bound order) until one expired entry is
/// found or no bound is due, so it is refused only if no entry has expired.
#[derive(Debug)]
pub struct MemoryDirectory {
    slots: Vec<Slot>,
    /// Min-tree of lower bounds on each block's earliest expiry (seconds): the root at 1,
    /// node `i`'s children at `2i` and `2i + 1`, block `b`'s leaf at `leaves + b`.
    bounds: Vec<u32>,
    leaves: usize,
    /// IPv6 addresses of the records that have one, and the free places among them.
    v6: Vec<V6>,
    v6_free: Vec<u32>,
    len: usize,
    capacity: usize,
}

/// Slots per block of the expiry tree: 2 KB, a sweep's unit of work.
const BLOCK: usize = 64;
/// A block without entries, in the expiry tree. Stored expiries stop one short of it.
const NO_EXPIRY: u32 = u32::MAX;
/// The latest expiry a record holds, in seconds since [`Instant::ZERO`] (≈ 136 years).
const MAX_EXPIRY_SECS: u32 = u32::MAX - 1;
/// Entries removed at most by the sweep that makes room for a new device.
const ROOM_BATCH: usize = 64;
const NANOS_PER_SEC: u64 = 1_000_000_000;
const NANOS_PER_MS: u64 = 1_000_000;

const TAG_EMPTY: u16 = 0;
const TAG_V4: u16 = 1;
const TAG_V6: u16 = 2;
/// The tag's low two bits say what the slot holds; the other 14 are the back-off's top bits.
const TAG_KIND: u16 = 0b11;

/// One record. 32 bytes, aligned to 32 so that two share a cache line and none straddles
/// one.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
struct Slot {
    device: u64,
    last_timestamp_ms: u64,
    /// Whole seconds since [`Instant::ZERO`], rounded up.
    expires: u32,
    /// Low 32 bits of the back-off: 0 for none, else its milliseconds (rounded up) + 1.
    blocked_lo: u32,
    /// The IPv4 address, or the IPv6 address's index in [`MemoryDirectory::v6`].
    addr: u32,
    port: u16,
    /// [`TAG_KIND`] bits, then the back-off's bits 32..46.
    tag: u16,
}

impl Slot {
    const EMPTY: Slot = Slot {
        device: 0,
        last_timestamp_ms: 0,
        expires: 0,
        blocked_lo: 0,
        addr: 0,
        port: 0,
        tag: TAG_EMPTY,
    };

    fn kind(&self) -> u16 {
        self.tag & TAG_KIND
    }

    fn is_empty(&self) -> bool {
        self.kind() == TAG_EMPTY
    }

    fn expires(&self) -> Instant {
        Instant::from_secs(self.expires.into())
    }

    fn live(&self, now: Instant) -> bool {
        self.expires() > now
    }

    fn blocked_until(&self) -> Option<Instant> {
        let stored = u64::from(self.blocked_lo) | (u64::from(self.tag >> 2) << 32);
        stored
            .checked_sub(1)
            .map(|ms| Instant::from_nanos(ms.saturating_mul(NANOS_PER_MS)))
    }

    fn set_blocked(&mut self, until: Option<Instant>) {
        // 0 is "none"; an instant is its milliseconds rounded up, plus one: at most
        // 18,446,744,073,710 + 1 < 2^46, so it always fits the 32 + 14 bits.
        let stored = until.map_or(0, |t| t.as_nanos().div_ceil(NANOS_PER_MS) + 1);
        self.blocked_lo = stored as u32;
        self.tag = (self.tag & TAG_KIND) | (((stored >> 32) as u16) << 2);
    }
}

/// The part of an IPv6 socket address a record has no room for.
#[derive(Clone, Copy, Debug)]
struct V6 {
    ip: Ipv6Addr,
    flowinfo: u32,
    scope_id: u32,
}

/// Where a device's probe ended.
enum Probe {
    /// At its record.
    Found(usize),
    /// At the empty slot where it would go.
    Vacant(usize),
}

/// Seconds since [`Instant::ZERO`], rounded up and saturated to [`MAX_EXPIRY_SECS`].
fn expiry_secs(t: Instant) -> u32 {
    u32::try_from(t.as_nanos().div_ceil(NANOS_PER_SEC))
        .unwrap_or(MAX_EXPIRY_SECS)
        .min(MAX_EXPIRY_SECS)
}

impl MemoryDirectory {
    /// The default capacity: one million devices.
    pub const DEFAULT_CAPACITY: usize = 1_000_000;
    /// Bytes per entry of capacity, all allocated at construction (see the type docs; an
    /// IPv6 entry takes 24 more).
    pub const BYTES_PER_ENTRY: usize = 43;
    /// The largest capacity: record indices are 32-bit, and the table's size in bytes must
    /// fit an `isize`. [`MemoryDirectory::new`] clamps to it.
    pub const MAX_CAPACITY: usize = {
        let by_index = (u32::MAX / 2) as usize;
        let by_size = isize::MAX as usize / (2 * core::mem::size_of::<Slot>());
        if by_index < by_size {
            by_index
        } else {
            by_size
        }
    };

    /// An empty directory holding at most `capacity` entries (at least 1, at most
    /// [`MemoryDirectory::MAX_CAPACITY`]), its table allocated in full.
    pub fn new(capacity: usize) -> Self {
        let capacity = Self::clamp_capacity(capacity);
        let slots = Self::slots_for(capacity);
        let leaves = slots.div_ceil(BLOCK).next_power_of_two();
        MemoryDirectory {
            slots: alloc::vec![Slot::EMPTY; slots],
            bounds: alloc::vec![NO_EXPIRY; 2 * leaves],
            leaves,
            v6: Vec::new(),
            v6_free: Vec::new(),
            len: 0,
            capacity,
        }
    }

    fn clamp_capacity(capacity: usize) -> usize {
        capacity.clamp(1, Self::MAX_CAPACITY)
    }

    /// Slots for `capacity` entries: a third more, so the table is at most three quarters
    /// full, and always at least one empty slot (which ends every probe).
    fn slots_for(capacity: usize) -> usize {
        capacity + capacity.div_ceil(3).max(1)
    }

    /// Approximate memory the entries held would take in a directory sized for them
    /// ([`MemoryDirectory::BYTES_PER_ENTRY`] each). The table itself is allocated in full
    /// at construction: see [`MemoryDirectory::allocated_bytes`].
    pub fn approx_bytes(&self) -> usize {
        self.len * Self::BYTES_PER_ENTRY
    }

    /// The memory allocated: the table and expiry tree (fixed at construction), and the
    /// IPv6 side array as it stands.
    pub fn allocated_bytes(&self) -> usize {
        use core::mem::size_of;
        self.slots.capacity() * size_of::<Slot>()
            + self.bounds.capacity() * size_of::<u32>()
            + self.v6.capacity() * size_of::<V6>()
            + self.v6_free.capacity() * size_of::<u32>()
    }

    /// The slot `device`'s probe starts at: a multiply-fold of the ID, mapped onto the
    /// table by the high half of a 64 × 64-bit product (no division).
    fn home(&self, device: u64) -> usize {
        // The fractional hex digits of pi: an odd constant with no structure of its own.
        const K: u128 = 0x243f_6a88_85a3_08d3_1319_8a2e_0370_7345;
        let m = u128::from(device).wrapping_mul(K);
        let h = (m as u64) ^ ((m >> 64) as u64);
        ((u128::from(h) * self.slots.len() as u128) >> 64) as usize
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }

    fn probe(&self, device: DeviceId) -> Probe {
        let mut i = self.home(device.0);
        // There is always an empty slot (more slots than capacity), so a probe ends within
        // one pass; the bound only keeps a broken invariant from looping.
        for _ in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.is_empty() {
                return Probe::Vacant(i);
            }
            if s.device == device.0 {
                return Probe::Found(i);
            }
            i = self.next(i);
        }
        Probe::Vacant(i)
    }

    fn addr(&self, s: &Slot) -> SocketAddr {
        if s.kind() == TAG_V6 {
            let v = self.v6.get(s.addr as usize).copied().unwrap_or(V6 {
                ip: Ipv6Addr::UNSPECIFIED,
                flowinfo: 0,
                scope_id: 0,
            });
            SocketAddr::V6(SocketAddrV6::new(v.ip, s.port, v.flowinfo, v.scope_id))
        } else {
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(s.addr), s.port))
        }
    }

    fn entry(&self, s: &Slot) -> DirectoryEntry {
        DirectoryEntry {
            addr: self.addr(s),
            last_timestamp_ms: s.last_timestamp_ms,
            expires: s.expires(),
            blocked_until: s.blocked_until(),
        }
    }

    /// Write `entry` into slot `i` (empty, or `device`'s own record), reusing or freeing
    /// the record's IPv6 place as the address family changes.
    fn store(&mut self, i: usize, device: DeviceId, entry: &DirectoryEntry) {
        let old = self.slots[i];
        let old_v6 = (old.kind() == TAG_V6).then_some(old.addr);
        let (addr, kind) = match entry.addr {
            SocketAddr::V4(a) => {
                if let Some(k) = old_v6 {
                    self.v6_free.push(k);
                }
                (u32::from(*a.ip()), TAG_V4)
            }
            SocketAddr::V6(a) => {
                let v = V6 {
                    ip: *a.ip(),
                    flowinfo: a.flowinfo(),
                    scope_id: a.scope_id(),
                };
                let k = match old_v6.or_else(|| self.v6_free.pop()) {
                    Some(k) => {
                        if let Some(place) = self.v6.get_mut(k as usize) {
                            *place = v;
                        }
                        k
                    }
                    None => {
                        self.v6.push(v);
                        // At most `capacity` IPv6 places, and capacity < 2^31.
                        (self.v6.len() - 1) as u32
                    }
                };
                (k, TAG_V6)
            }
        };
        let expires = expiry_secs(entry.expires);
        let mut s = Slot {
            device: device.0,
            last_timestamp_ms: entry.last_timestamp_ms,
            expires,
            blocked_lo: 0,
            addr,
            port: entry.addr.port(),
            tag: kind,
        };
        s.set_blocked(entry.blocked_until);
        self.slots[i] = s;
        // The block's bound is at most the record's old expiry, so a refresh (a later
        // expiry of the same record) leaves it valid without touching the tree.
        if old.is_empty() || expires < old.expires {
            self.lower_bound(i / BLOCK, expires);
        }
    }

    /// Lower block `b`'s bound to `secs` if that is earlier, and its ancestors with it.
    fn lower_bound(&mut self, b: usize, secs: u32) {
        let mut i = self.leaves + b;
        while i > 0 && self.bounds[i] > secs {
            self.bounds[i] = secs;
            i /= 2;
        }
    }

    /// Set block `b`'s bound to `secs` (its true earliest expiry after a sweep).
    fn set_bound(&mut self, b: usize, secs: u32) {
        let mut i = self.leaves + b;
        self.bounds[i] = secs;
        while i > 1 {
            i /= 2;
            let m = self.bounds[2 * i].min(self.bounds[2 * i + 1]);
            if self.bounds[i] == m {
                break;
            }
            self.bounds[i] = m;
        }
    }

    /// The block with the lowest bound, if that bound is due at `now_secs`.
    fn due_block(&self, now_secs: u64) -> Option<usize> {
        let root = self.bounds[1];
        if root == NO_EXPIRY || u64::from(root) > now_secs {
            return None;
        }
        let mut i = 1;
        while i < self.leaves {
            i = if self.bounds[2 * i] <= self.bounds[2 * i + 1] {
                2 * i
            } else {
                2 * i + 1
            };
        }
        Some(i - self.leaves)
    }

    /// Remove the record in slot `i`, shifting the rest of its run back so that every
    /// record stays reachable from its home slot without tombstones.
    fn remove_at(&mut self, i: usize) {
        let old = self.slots[i];
        if old.kind() == TAG_V6 {
            self.v6_free.push(old.addr);
        }
        self.len -= 1;
        let mut hole = i;
        let mut j = i;
        for _ in 0..self.slots.len() {
            j = self.next(j);
            let s = self.slots[j];
            if s.is_empty() {
                break;
            }
            // `s` may fill the hole unless its home lies cyclically in (hole, j]: then
            // moving it before its home would hide it from its own probe.
            let home = self.home(s.device);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = s;
                if hole / BLOCK != j / BLOCK {
                    self.lower_bound(hole / BLOCK, s.expires);
                }
                hole = j;
            }
        }
        self.slots[hole] = Slot::EMPTY;
    }

    /// Sweep block `b`: remove up to `max` entries expired at `now_secs`, and set its bound
    /// to the earliest expiry left in it.
    fn sweep(&mut self, b: usize, now_secs: u64, max: usize) -> usize {
        let start = b * BLOCK;
        let end = (start + BLOCK).min(self.slots.len());
        let mut removed = 0;
        let mut earliest = NO_EXPIRY;
        let mut i = start;
        while i < end {
            let s = self.slots[i];
            if !s.is_empty() {
                if u64::from(s.expires) <= now_secs && removed < max {
                    // The run shifts back into slot `i`: look at it again.
                    self.remove_at(i);
                    removed += 1;
                    continue;
                }
                earliest = earliest.min(s.expires);
            }
            i += 1;
        }
        self.set_bound(b, earliest);
        removed
    }

    /// Room for one more entry: sweep due blocks, lowest bound first, until one expired
    /// entry goes or no bound is due. Each sweep either removes an entry or lifts its
    /// block's bound past `now`, so this ends within one pass over the blocks, and
    /// amortised over the refreshes that made bounds stale it is constant work.
    fn make_room(&mut self, now: Instant) -> Result<(), DirectoryFull> {
        let now_secs = now.as_nanos() / NANOS_PER_SEC;
        while let Some(b) = self.due_block(now_secs) {
            if self.sweep(b, now_secs, ROOM_BATCH) > 0 {
                return Ok(());
            }
        }
        Err(DirectoryFull {
            capacity: self.capacity,
        })
    }
}

impl Default for MemoryDirectory {
    fn default() -> Self {
        MemoryDirectory::new(Self::DEFAULT_CAPACITY)
    }
}

impl Directory for MemoryDirectory {
    fn lookup(&self, device: DeviceId, now: Instant) -> Option<DirectoryEntry> {
        match self.probe(device) {
            Probe::Found(i) if self.slots[i].live(now) => Some(self.entry(&self.slots[i])),
            _ => None,
        }
    }

    fn register(
        &mut self,
        device: DeviceId,
        entry: DirectoryEntry,
        now: Instant,
    ) -> Result<Registered, DirectoryFull> {
        self.register_with(device, now, |_| Ok::<_, core::convert::Infallible>(entry))
            .unwrap_or_else(|never| match never {})
    }

    fn register_with<E>(
        &mut self,
        device: DeviceId,
        now: Instant,
        make: impl FnOnce(Option<DirectoryEntry>) -> Result<DirectoryEntry, E>,
    ) -> Result<Result<Registered, DirectoryFull>, E> {
        let i = match self.probe(device) {
            Probe::Found(i) => {
                let old = self.slots[i];
                let old_entry = old.live(now).then(|| self.entry(&old));
                let entry = make(old_entry)?;
                let outcome = match old_entry {
                    None => Registered::New,
                    Some(o) if o.addr == entry.addr => Registered::Refreshed,
                    Some(o) => Registered::Moved { from: o.addr },
                };
                self.store(i, device, &entry);
                return Ok(Ok(outcome));
            }
            Probe::Vacant(i) => i,
        };
        let entry = make(None)?;
        let i = if self.len < self.capacity {
            i
        } else {
            if let Err(full) = self.make_room(now) {
                return Ok(Err(full));
            }
            // The removals shifted runs: probe again (the device is still absent).
            match self.probe(device) {
                Probe::Vacant(i) | Probe::Found(i) => i,
            }
        };
        self.store(i, device, &entry);
        self.len += 1;
        Ok(Ok(Registered::New))
    }

    fn prefetch(&self, device: DeviceId) {
        // Loads whose values are kept (black_box), issued before the caller's hashing: a
        // cache miss on a large table overlaps with it instead of following it. Without
        // unsafe code there is no prefetch instruction to ask for; a load does as much as
        // the out-of-order window allows. Two of them: the home slot's cache line and the
        // next one, where about three probes in ten end. Two slots share a 64-byte line;
        // the table is only 32-byte aligned, so which two depends on where it starts.
        let home = self.home(device.0);
        let skew = (self.slots.as_ptr().addr() / core::mem::size_of::<Slot>()) & 1;
        let next_line = (((home + skew) | 1) + 1).saturating_sub(skew);
        core::hint::black_box(self.slots.get(home).map(|s| s.device));
        core::hint::black_box(self.slots.get(next_line).map(|s| s.device));
    }

    fn set_blocked(&mut self, device: DeviceId, until: Option<Instant>, now: Instant) {
        if let Probe::Found(i) = self.probe(device)
            && self.slots[i].live(now)
        {
            self.slots[i].set_blocked(until);
        }
    }

    fn expire(&mut self, now: Instant, max: usize) -> usize {
        let now_secs = now.as_nanos() / NANOS_PER_SEC;
        let mut removed = 0;
        // At most `max` blocks swept and `max` entries removed per call.
        for _ in 0..max {
            if removed >= max || self.len == 0 {
                break;
            }
            let Some(b) = self.due_block(now_secs) else {
                break;
            };
            removed += self.sweep(b, now_secs, max - removed);
        }
        removed
    }

    fn next_expiry(&self) -> Option<Instant> {
        // A lower bound (see the type docs): the timer may fire early, never late.
        (self.len > 0).then(|| Instant::from_secs(self.bounds[1].into()))
    }

    fn len(&self) -> usize {
        self.len
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

    /// Device IDs whose home slot is `home` in `d`, in increasing order.
    fn ids_at(d: &MemoryDirectory, home: usize, n: usize) -> Vec<DeviceId> {
        (0..u64::MAX)
            .filter(|&id| d.home(id) == home)
            .take(n)
            .map(DeviceId)
            .collect()
    }

    fn v6_entry(port: u16, expires: u64) -> DirectoryEntry {
        DirectoryEntry {
            addr: SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7),
                port,
                0x000a_bcde,
                3,
            )),
            ..entry(0, expires)
        }
    }

    #[test]
    fn the_record_is_32_bytes_and_the_table_a_third_larger_than_capacity() {
        assert_eq!(core::mem::size_of::<Slot>(), 32);
        assert_eq!(core::mem::align_of::<Slot>(), 32);
        let d = MemoryDirectory::new(3_000);
        assert_eq!(d.slots.len(), 4_000);
        // The whole table is allocated up front: about BYTES_PER_ENTRY per entry.
        let per_entry = d.allocated_bytes() / d.capacity();
        assert!(per_entry <= MemoryDirectory::BYTES_PER_ENTRY, "{per_entry}");
    }

    #[test]
    fn capacity_is_clamped_to_its_bounds() {
        assert_eq!(MemoryDirectory::new(0).capacity(), 1);
        assert_eq!(MemoryDirectory::clamp_capacity(0), 1);
        assert_eq!(
            MemoryDirectory::clamp_capacity(usize::MAX),
            MemoryDirectory::MAX_CAPACITY
        );
        // The largest table's size in bytes fits an isize, its indices 32 bits.
        let slots = MemoryDirectory::slots_for(MemoryDirectory::MAX_CAPACITY);
        assert!(slots.checked_mul(core::mem::size_of::<Slot>()).unwrap() <= isize::MAX as usize);
        assert!(u32::try_from(MemoryDirectory::MAX_CAPACITY).is_ok());
        // A directory of one still has an empty slot to end every probe.
        let mut d = MemoryDirectory::new(1);
        let t = Instant::from_secs(1);
        d.register(DeviceId(1), entry(1, 10), t).unwrap();
        assert_eq!(d.lookup(DeviceId(2), t), None);
        assert_eq!(
            d.register(DeviceId(2), entry(2, 10), t),
            Err(DirectoryFull { capacity: 1 })
        );
    }

    #[test]
    fn colliding_ids_share_a_run_and_removal_shifts_it_back() {
        let mut d = MemoryDirectory::new(30);
        let n = d.slots.len();
        let t = Instant::from_secs(1);
        // Four IDs with one home slot, one with the next: a run of five.
        let home = 5;
        let ids = ids_at(&d, home, 4);
        let neighbour = ids_at(&d, home + 1, 1)[0];
        for (k, id) in ids.iter().enumerate() {
            d.register(*id, entry(k as u16, 10 + k as u64), t).unwrap();
        }
        d.register(neighbour, entry(99, 50), t).unwrap();
        for (k, id) in ids.iter().enumerate() {
            assert_eq!(d.slots[home + k].device, id.0);
        }
        assert_eq!(d.slots[home + 4].device, neighbour.0);
        // The first two expire: the others shift back towards their homes, none before it.
        assert_eq!(d.expire(Instant::from_secs(11), 10), 2);
        assert_eq!(d.slots[home].device, ids[2].0);
        assert_eq!(d.slots[home + 1].device, ids[3].0);
        assert_eq!(d.slots[home + 2].device, neighbour.0);
        assert!(d.slots[home + 3].is_empty() && d.slots[home + 4].is_empty());
        let later = Instant::from_secs(11);
        for (k, id) in ids.iter().enumerate().skip(2) {
            assert_eq!(d.lookup(*id, later).unwrap().addr.port(), k as u16);
        }
        assert_eq!(d.lookup(neighbour, later).unwrap().addr.port(), 99);
        assert_eq!(d.lookup(ids[0], later), None);
        assert_eq!(d.len(), 3);
        assert!(n > home + 5);
    }

    #[test]
    fn a_run_wraps_around_the_end_of_the_table() {
        let mut d = MemoryDirectory::new(30);
        let last = d.slots.len() - 1;
        let t = Instant::from_secs(1);
        let ids = ids_at(&d, last, 3);
        let at_zero = ids_at(&d, 0, 1)[0];
        for (k, id) in ids.iter().enumerate() {
            d.register(*id, entry(k as u16, 10 + k as u64), t).unwrap();
        }
        d.register(at_zero, entry(77, 60), t).unwrap();
        // The run: last, 0, 1, and the ID whose home is 0 after them.
        assert_eq!(d.slots[last].device, ids[0].0);
        assert_eq!(d.slots[0].device, ids[1].0);
        assert_eq!(d.slots[1].device, ids[2].0);
        assert_eq!(d.slots[2].device, at_zero.0);
        // A prefetch at the last slot stays in the table (and changes nothing).
        d.prefetch(ids[0]);
        assert_eq!(d.slots[last].device, ids[0].0);
        // Removing the first shifts the run back across the end.
        assert_eq!(d.expire(Instant::from_secs(10), 10), 1);
        assert_eq!(d.slots[last].device, ids[1].0);
        assert_eq!(d.slots[0].device, ids[2].0);
        // The ID at home in slot 0 moves back to it, not before it.
        assert_eq!(d.slots[1].device, at_zero.0);
        assert!(d.slots[2].is_empty());
        let now = Instant::from_secs(10);
        assert_eq!(d.lookup(ids[2], now).unwrap().addr.port(), 2);
        assert_eq!(d.lookup(at_zero, now).unwrap().addr.port(), 77);
        // The block at the end got a bound from the records that crossed into it.
        assert_eq!(d.next_expiry(), Some(Instant::from_secs(11)));
    }

    #[test]
    fn expire_does_at_most_max_and_next_expiry_is_never_late() {
        let mut d = MemoryDirectory::new(10_000);
        let t = Instant::from_secs(1);
        for id in 0..1_000u64 {
            d.register(DeviceId(id), entry(1, 100 + id % 10), t)
                .unwrap();
        }
        assert_eq!(d.next_expiry(), Some(Instant::from_secs(100)));
        let now = Instant::from_secs(200);
        // At most `max` removed per call, whatever is due.
        assert_eq!(d.expire(now, 7), 7);
        assert_eq!(d.len(), 993);
        assert_eq!(d.expire(now, 0), 0);
        let mut calls = 0;
        while d.expire(now, 50) > 0 {
            calls += 1;
        }
        assert!(d.is_empty() && calls >= 993 / 50);
        assert_eq!(d.next_expiry(), None);

        // A refresh leaves the bound early: the timer fires early, the sweep finds nothing
        // and lifts the bound to the true expiry.
        d.register(DeviceId(1), entry(1, 300), now).unwrap();
        d.register(DeviceId(1), entry(1, 400), now).unwrap();
        assert_eq!(d.next_expiry(), Some(Instant::from_secs(300)));
        assert_eq!(d.expire(Instant::from_secs(300), 10), 0);
        assert_eq!(d.next_expiry(), Some(Instant::from_secs(400)));
        assert_eq!(d.len(), 1);
        // An earlier expiry lowers it at once.
        d.register(DeviceId(2), entry(1, 350), now).unwrap();
        assert_eq!(d.next_expiry(), Some(Instant::from_secs(350)));
    }

    #[test]
    fn a_full_directory_finds_the_expired_entry_behind_stale_bounds() {
        let mut d = MemoryDirectory::new(500);
        let t = Instant::from_secs(1);
        for id in 0..500u64 {
            d.register(DeviceId(id), entry(1, 10), t).unwrap();
        }
        // Every device but one refreshes: every block's bound is stale at 10 s.
        for id in 1..500u64 {
            d.register(DeviceId(id), entry(1, 100), t).unwrap();
        }
        let now = Instant::from_secs(10);
        assert_eq!(
            d.register(DeviceId(1_000), entry(2, 100), now),
            Ok(Registered::New)
        );
        assert_eq!(d.len(), 500);
        assert_eq!(d.lookup(DeviceId(0), now), None);
        // Now all are live: refused, and the bounds are exact again.
        assert_eq!(
            d.register(DeviceId(1_001), entry(2, 100), now),
            Err(DirectoryFull { capacity: 500 })
        );
        assert_eq!(d.next_expiry(), Some(Instant::from_secs(100)));
    }

    #[test]
    fn re_registration_moves_the_address_across_families() {
        let mut d = MemoryDirectory::new(8);
        let t = Instant::from_secs(1);
        let v6 = v6_entry(4500, 90);
        assert_eq!(d.register(DeviceId(3), v6, t), Ok(Registered::New));
        assert_eq!(d.lookup(DeviceId(3), t), Some(v6));
        assert_eq!(
            d.register(DeviceId(3), v6_entry(4500, 95), t),
            Ok(Registered::Refreshed)
        );
        // To IPv4: the IPv6 place is freed, and reused by the next IPv6 entry.
        assert_eq!(
            d.register(DeviceId(3), entry(3400, 99), t),
            Ok(Registered::Moved { from: v6.addr })
        );
        assert_eq!(d.v6_free.len(), 1);
        d.register(DeviceId(4), v6_entry(1, 99), t).unwrap();
        assert!(d.v6_free.is_empty() && d.v6.len() == 1);
        // Back to IPv6 takes a new place; expiring frees it.
        assert_eq!(
            d.register(DeviceId(3), v6_entry(4600, 99), t),
            Ok(Registered::Moved {
                from: entry(3400, 0).addr
            })
        );
        assert_eq!(d.lookup(DeviceId(3), t).unwrap().addr.port(), 4600);
        assert_eq!(d.v6.len(), 2);
        assert_eq!(d.expire(Instant::from_secs(99), 10), 2);
        assert_eq!(d.v6_free.len(), 2);
    }

    #[test]
    fn times_round_up_and_saturate() {
        let mut d = MemoryDirectory::new(4);
        let t = Instant::from_secs(1);
        let e = DirectoryEntry {
            expires: Instant::from_millis(90_001),
            blocked_until: Some(Instant::from_nanos(5_000_000_001)),
            ..entry(1, 0)
        };
        d.register(DeviceId(1), e, t).unwrap();
        let got = d.lookup(DeviceId(1), t).unwrap();
        // Expiry to the next whole second, the back-off to the next millisecond.
        assert_eq!(got.expires, Instant::from_secs(91));
        assert_eq!(got.blocked_until, Some(Instant::from_millis(5_001)));
        // Beyond ~136 years the expiry saturates; every back-off fits.
        let far = DirectoryEntry {
            expires: Instant::MAX,
            blocked_until: Some(Instant::MAX),
            ..entry(1, 0)
        };
        d.register(DeviceId(2), far, t).unwrap();
        let got = d.lookup(DeviceId(2), t).unwrap();
        assert_eq!(got.expires, Instant::from_secs(MAX_EXPIRY_SECS.into()));
        assert_eq!(got.blocked_until, Some(Instant::MAX));
        assert_eq!(expiry_secs(Instant::MAX), MAX_EXPIRY_SECS);
        // A saturated entry still expires, even after the bound.
        assert_eq!(d.expire(Instant::MAX, 10), 2);
        assert!(d.is_empty());
        // An instant at the origin is a back-off, not "none".
        d.register(DeviceId(3), entry(1, 10), t).unwrap();
        d.set_blocked(DeviceId(3), Some(Instant::ZERO), t);
        assert_eq!(
            d.lookup(DeviceId(3), t).unwrap().blocked_until,
            Some(Instant::ZERO)
        );
        d.set_blocked(DeviceId(3), None, t);
        assert_eq!(d.lookup(DeviceId(3), t).unwrap().blocked_until, None);
    }

    #[test]
    fn register_with_decides_on_the_live_entry_in_one_probe() {
        let mut d = MemoryDirectory::new(4);
        let t = Instant::from_secs(1);
        d.register(DeviceId(1), entry(1, 10), t).unwrap();
        let refused = d.register_with(DeviceId(1), t, |old| {
            assert_eq!(old.unwrap().addr.port(), 1);
            Err("replayed")
        });
        assert_eq!(refused, Err("replayed"));
        assert_eq!(
            d.lookup(DeviceId(1), t).unwrap().expires,
            Instant::from_secs(10)
        );
        // An expired entry is offered as none.
        let got = d.register_with(DeviceId(1), Instant::from_secs(10), |old| {
            assert!(old.is_none());
            Ok::<_, ()>(entry(2, 20))
        });
        assert_eq!(got, Ok(Ok(Registered::New)));
        assert_eq!(d.len(), 1);
    }

    /// A directory with only the required methods: the trait's own `register_with` and
    /// `prefetch` run, as they would for a deployment's backend.
    struct Plain(MemoryDirectory);

    impl Directory for Plain {
        fn lookup(&self, device: DeviceId, now: Instant) -> Option<DirectoryEntry> {
            self.0.lookup(device, now)
        }
        fn register(
            &mut self,
            device: DeviceId,
            entry: DirectoryEntry,
            now: Instant,
        ) -> Result<Registered, DirectoryFull> {
            self.0.register(device, entry, now)
        }
        fn set_blocked(&mut self, device: DeviceId, until: Option<Instant>, now: Instant) {
            self.0.set_blocked(device, until, now)
        }
        fn expire(&mut self, now: Instant, max: usize) -> usize {
            self.0.expire(now, max)
        }
        fn next_expiry(&self) -> Option<Instant> {
            self.0.next_expiry()
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn capacity(&self) -> usize {
            self.0.capacity()
        }
    }

    #[test]
    fn the_default_register_with_looks_up_then_registers() {
        let mut d = Plain(MemoryDirectory::new(1));
        let t = Instant::from_secs(1);
        d.prefetch(DeviceId(1));
        assert_eq!(
            d.register_with(DeviceId(1), t, |old| {
                assert!(old.is_none());
                Ok::<_, ()>(entry(1, 10))
            }),
            Ok(Ok(Registered::New))
        );
        assert_eq!(
            d.register_with(DeviceId(1), t, |old| Err(old.map(|e| e.addr.port()))),
            Err(Some(1))
        );
        assert_eq!(
            d.register_with(DeviceId(2), t, |_| Ok::<_, ()>(entry(2, 10))),
            Ok(Err(DirectoryFull { capacity: 1 }))
        );
    }
}

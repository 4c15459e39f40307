//! Rate limits shared by every actor that answers or serves the open network: token buckets
//! per source address in a bounded table, optionally under one aggregate bucket.
//!
//! Seed 000's appliance limits how often it answers the open network (S22, S42) per source
//! and in total; seed 002's rendezvous server limits registrations and connection requests
//! per source.

use alloc::collections::BTreeMap;
use core::net::IpAddr;
use core::ops::Bound;
use core::time::Duration;

use crate::Instant;

/// A token bucket: `burst` tokens, one more every `per_token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Most requests accepted back to back.
    pub burst: u32,
    /// Time to earn one more token.
    pub per_token: Duration,
}

impl RateLimit {
    /// `burst` at once, then one every `per_token`.
    pub const fn new(burst: u32, per_token: Duration) -> Self {
        RateLimit { burst, per_token }
    }

    /// `burst` at once, then `per_second` a second (at least one).
    pub fn per_second(burst: u32, per_second: u32) -> Self {
        RateLimit {
            burst,
            per_token: Duration::from_secs(1) / per_second.max(1),
        }
    }
}

/// A token bucket kept as one instant (the generic cell rate algorithm): the *theoretical
/// arrival time* `tat`. A request at `now` conforms if
/// `tat - (burst - 1) × per_token <= now` (a fresh bucket thus takes exactly `burst`
/// requests at once); it then moves `tat` to `max(tat, now) + per_token`. A bucket with `tat <= now` is full
/// and carries no information, so it may be forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Gcra {
    tat: Instant,
}

impl Gcra {
    fn allow(&mut self, cfg: &RateLimit, now: Instant) -> bool {
        if !self.would_allow(cfg, now) {
            return false;
        }
        self.tat = self.tat.max(now) + cfg.per_token;
        true
    }

    fn would_allow(&self, cfg: &RateLimit, now: Instant) -> bool {
        let tolerance = cfg.per_token.saturating_mul(cfg.burst.max(1));
        self.tat <= now + tolerance - cfg.per_token
    }

    fn idle(&self, now: Instant) -> bool {
        self.tat <= now
    }
}

/// Per-source-address rate limiting with a bounded table.
///
/// Each source IP has its own bucket. Two ways to use it:
///
/// - [`SourceLimiter::allow`] charges every request (connection requests: the source of a
///   stream cannot be spoofed). A source without a bucket when the table is full shares
///   one *overflow* bucket.
/// - [`SourceLimiter::permits`] + [`SourceLimiter::charge`] charge only failures
///   (registrations: a source whose failures used up its bucket is dropped before any
///   work, but an authentic registration never costs anything, so spoofed floods cannot
///   starve genuine devices). A failure from a new source when the table is full is not
///   recorded: it cost one MAC check, and memory stays bounded.
///
/// When the table is full, idle (full) buckets are reclaimed a few at a time. Only idle
/// buckets are ever dropped, so nobody can reset a busy bucket by pushing it out.
///
/// With [`SourceLimiter::with_aggregate`], [`SourceLimiter::allow`] also needs a token from
/// one bucket shared by all sources, so cycling through source addresses does not raise the
/// total rate.
#[derive(Debug)]
pub(crate) struct SourceLimiter {
    cfg: RateLimit,
    table: BTreeMap<IpAddr, Gcra>,
    capacity: usize,
    overflow: Gcra,
    overflow_cfg: RateLimit,
    cursor: Option<IpAddr>,
    /// One bucket every source shares, if configured.
    aggregate: Option<(RateLimit, Gcra)>,
}

impl SourceLimiter {
    /// Buckets examined per reclamation pass.
    const SWEEP: usize = 16;

    pub(crate) fn new(cfg: RateLimit, capacity: usize, overflow_cfg: RateLimit) -> Self {
        SourceLimiter {
            cfg,
            table: BTreeMap::new(),
            capacity: capacity.max(1),
            overflow: Gcra { tat: Instant::ZERO },
            overflow_cfg,
            cursor: None,
            aggregate: None,
        }
    }

    /// Also require a token from one bucket shared by all sources.
    pub(crate) fn with_aggregate(mut self, limit: RateLimit) -> Self {
        self.aggregate = Some((limit, Gcra { tat: Instant::ZERO }));
        self
    }

    /// Whether a datagram or request from `ip` at `now` is within its rate.
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if let Some((limit, bucket)) = &self.aggregate
            && !bucket.would_allow(limit, now)
        {
            return false;
        }
        let allowed = self.allow_source(ip, now);
        if allowed && let Some((limit, bucket)) = &mut self.aggregate {
            bucket.allow(limit, now);
        }
        allowed
    }

    fn allow_source(&mut self, ip: IpAddr, now: Instant) -> bool {
        if let Some(bucket) = self.table.get_mut(&ip) {
            return bucket.allow(&self.cfg, now);
        }
        if self.table.len() >= self.capacity {
            self.sweep(now);
        }
        if self.table.len() >= self.capacity {
            return self.overflow.allow(&self.overflow_cfg, now);
        }
        let mut bucket = Gcra { tat: Instant::ZERO };
        let ok = bucket.allow(&self.cfg, now);
        self.table.insert(ip, bucket);
        ok
    }

    /// Whether `ip` may be served at all (its failures have not used up its bucket).
    pub(crate) fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.table
            .get(&ip)
            .is_none_or(|b| b.would_allow(&self.cfg, now))
    }

    /// Charge one failure to `ip`.
    pub(crate) fn charge(&mut self, ip: IpAddr, now: Instant) {
        if let Some(bucket) = self.table.get_mut(&ip) {
            bucket.allow(&self.cfg, now);
            return;
        }
        if self.table.len() >= self.capacity {
            self.sweep(now);
        }
        if self.table.len() < self.capacity {
            let mut bucket = Gcra { tat: Instant::ZERO };
            bucket.allow(&self.cfg, now);
            self.table.insert(ip, bucket);
        }
    }

    /// Drop up to [`Self::SWEEP`] idle buckets, continuing where the last pass stopped.
    fn sweep(&mut self, now: Instant) {
        let start = self.cursor;
        let mut seen = 0;
        let mut last = None;
        let mut idle = alloc::vec::Vec::new();
        let range = match start {
            Some(from) => self.table.range(from..),
            None => self.table.range(..),
        };
        for (ip, bucket) in range.take(Self::SWEEP) {
            seen += 1;
            last = Some(*ip);
            if bucket.idle(now) {
                idle.push(*ip);
            }
        }
        for ip in &idle {
            self.table.remove(ip);
        }
        // Wrap around at the end of the table.
        self.cursor = if seen < Self::SWEEP {
            None
        } else {
            last.and_then(|ip| {
                self.table
                    .range((Bound::Excluded(ip), Bound::Unbounded))
                    .next()
                    .map(|(k, _)| *k)
            })
        };
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let cfg = RateLimit::new(3, Duration::from_secs(1));
        let mut l = SourceLimiter::new(cfg, 8, cfg);
        let t = Instant::from_secs(100);
        assert!(l.allow(ip(1), t));
        assert!(l.allow(ip(1), t));
        assert!(l.allow(ip(1), t));
        assert!(!l.allow(ip(1), t));
        assert!(!l.allow(ip(1), t + Duration::from_millis(999)));
        assert!(l.allow(ip(1), t + Duration::from_millis(1000)));
        assert!(!l.allow(ip(1), t + Duration::from_millis(1000)));
        // Another source has its own bucket.
        assert!(l.allow(ip(2), t));
    }

    #[test]
    fn the_table_never_outgrows_its_capacity_and_busy_buckets_survive_a_flood() {
        let cfg = RateLimit::new(2, Duration::from_secs(10));
        let overflow = RateLimit::new(1, Duration::from_secs(1));
        let mut l = SourceLimiter::new(cfg, 64, overflow);
        let t = Instant::from_secs(1000);
        // A genuine source uses one token and keeps a non-idle bucket.
        assert!(l.allow(ip(7), t));
        // A flood from 10,000 other addresses, all within a second.
        let mut overflowed = 0;
        for n in 0..10_000u32 {
            let now = t + Duration::from_micros(u64::from(n) * 100);
            if !l.allow(ip(100_000 + n), now) {
                overflowed += 1;
            }
            assert!(l.len() <= l.capacity());
        }
        assert_eq!(l.len(), 64);
        assert!(
            overflowed > 9_000,
            "the overflow bucket throttles newcomers"
        );
        // The genuine source still has its bucket (and one token left).
        assert!(l.allow(ip(7), t + Duration::from_secs(1)));
        assert!(!l.allow(ip(7), t + Duration::from_secs(1)));
        // Once buckets go idle, newcomers get their own again.
        let later = t + Duration::from_secs(60);
        assert!(l.allow(ip(999_999), later));
        assert!(l.len() <= 64);
    }

    #[test]
    fn only_failures_are_charged_and_a_failure_flood_stays_bounded() {
        let cfg = RateLimit::new(3, Duration::from_secs(10));
        let mut l = SourceLimiter::new(cfg, 32, cfg);
        let t = Instant::from_secs(100);
        // A source that never fails is always permitted and never takes a slot.
        for _ in 0..100 {
            assert!(l.permits(ip(1), t));
        }
        assert_eq!(l.len(), 0);
        // Three failures use up a bucket; the fourth datagram is refused unread.
        for _ in 0..3 {
            assert!(l.permits(ip(2), t));
            l.charge(ip(2), t);
        }
        assert!(!l.permits(ip(2), t));
        assert!(l.permits(ip(2), t + Duration::from_secs(10)));
        // A flood of failures from 10,000 addresses never grows the table past its bound,
        // and the bucket above survives it (it is not idle).
        for n in 0..10_000u32 {
            l.charge(ip(1_000_000 + n), t);
            assert!(l.len() <= 32);
        }
        assert!(!l.permits(ip(2), t));
        assert!(l.permits(ip(1), t));
    }

    #[test]
    fn per_second_rates_allow_a_burst_then_refill() {
        let mut l = SourceLimiter::new(RateLimit::per_second(3, 2), 8, RateLimit::per_second(3, 2));
        let t0 = Instant::from_secs(10);
        let allowed = (0..10).filter(|_| l.allow(ip(1), t0)).count();
        assert_eq!(allowed, 3);
        assert!(l.allow(ip(2), t0), "another source has its own bucket");
        assert!(
            !l.allow(ip(1), t0 + Duration::from_millis(499)),
            "not yet a whole token"
        );
        let t2 = t0 + Duration::from_millis(500);
        assert!(l.allow(ip(1), t2));
        assert!(!l.allow(ip(1), t2));
        let t3 = t2 + Duration::from_secs(3600);
        let allowed = (0..10).filter(|_| l.allow(ip(1), t3)).count();
        assert_eq!(allowed, 3, "refill is capped at the burst");
    }

    #[test]
    fn the_aggregate_bucket_caps_address_cycling() {
        let global = RateLimit::per_second(5, 1);
        let mut l =
            SourceLimiter::new(RateLimit::per_second(2, 1), 4, global).with_aggregate(global);
        let now = Instant::from_secs(1);
        let allowed = (0..50u32).filter(|n| l.allow(ip(*n), now)).count();
        assert_eq!(allowed, 5);
        assert_eq!(l.len(), 4);
        // A refused answer costs the source nothing.
        let later = now + Duration::from_secs(1);
        assert!(l.allow(ip(49), later));
    }
}

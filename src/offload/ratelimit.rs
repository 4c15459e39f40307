//! Token buckets that bound how often the appliance answers the open network.
//!
//! An answer to a datagram from the open network (S22, S42) goes to an address the
//! appliance cannot verify, so a spoofed source could aim the answers at a victim. The
//! appliance never answers with more bytes than it received (see `Appliance`), and spends
//! a token from two buckets for each answer: one for the source address and one shared by
//! all sources, so cycling through source addresses does not raise the total rate.

use alloc::collections::BTreeMap;
use core::net::IpAddr;

use crate::Instant;

/// A token bucket: up to `burst` answers at once, refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Bucket size: answers allowed back to back.
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: u32,
}

/// Tokens are counted in thousandths so slow rates refill smoothly without floats.
const MILLI: u64 = 1000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    milli_tokens: u64,
    last: Instant,
}

impl Bucket {
    fn full(limit: RateLimit, now: Instant) -> Self {
        Bucket {
            milli_tokens: u64::from(limit.burst) * MILLI,
            last: now,
        }
    }

    fn refill(&mut self, limit: RateLimit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        // tokens = elapsed_s × rate; in milli-tokens: elapsed_ns × rate / 10^6.
        let add = elapsed.saturating_mul(u128::from(limit.per_second)) / 1_000_000;
        let cap = u64::from(limit.burst) * MILLI;
        let add = u64::try_from(add).unwrap_or(u64::MAX);
        self.milli_tokens = self.milli_tokens.saturating_add(add).min(cap);
        self.last = now;
    }

    fn has_token(&self) -> bool {
        self.milli_tokens >= MILLI
    }

    fn spend(&mut self) {
        self.milli_tokens = self.milli_tokens.saturating_sub(MILLI);
    }
}

/// Per-source and global buckets, with a bounded source table.
#[derive(Debug)]
pub(crate) struct Limiter {
    per_source: RateLimit,
    global_limit: RateLimit,
    global: Bucket,
    sources: BTreeMap<IpAddr, Bucket>,
    max_sources: usize,
}

impl Limiter {
    pub(crate) fn new(per_source: RateLimit, global: RateLimit, max_sources: usize) -> Self {
        Limiter {
            per_source,
            global_limit: global,
            global: Bucket::full(global, Instant::ZERO),
            sources: BTreeMap::new(),
            max_sources: max_sources.max(1),
        }
    }

    /// Spend one token for an answer to `source`, if both buckets have one.
    pub(crate) fn allow(&mut self, now: Instant, source: IpAddr) -> bool {
        self.global.refill(self.global_limit, now);
        if !self.sources.contains_key(&source) && self.sources.len() >= self.max_sources {
            self.evict_oldest();
        }
        let limit = self.per_source;
        let bucket = self
            .sources
            .entry(source)
            .or_insert_with(|| Bucket::full(limit, now));
        bucket.refill(limit, now);
        if !(bucket.has_token() && self.global.has_token()) {
            return false;
        }
        bucket.spend();
        self.global.spend();
        true
    }

    /// Drop the source seen longest ago. A new source then starts with a full bucket, which
    /// the global bucket still caps.
    fn evict_oldest(&mut self) {
        if let Some(oldest) = self
            .sources
            .iter()
            .min_by_key(|(_, b)| b.last)
            .map(|(ip, _)| *ip)
        {
            self.sources.remove(&oldest);
        }
    }

    #[cfg(test)]
    pub(crate) fn tracked_sources(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, n])
    }

    #[test]
    fn burst_then_refill_per_source() {
        let mut l = Limiter::new(
            RateLimit {
                burst: 3,
                per_second: 2,
            },
            RateLimit {
                burst: 100,
                per_second: 100,
            },
            8,
        );
        let t0 = Instant::from_secs(10);
        let allowed = (0..10).filter(|_| l.allow(t0, ip(1))).count();
        assert_eq!(allowed, 3);
        assert!(l.allow(t0, ip(2)), "another source has its own bucket");
        let t1 = t0 + Duration::from_millis(499);
        assert!(!l.allow(t1, ip(1)), "not yet a whole token");
        let t2 = t0 + Duration::from_millis(500);
        assert!(l.allow(t2, ip(1)));
        assert!(!l.allow(t2, ip(1)));
        let t3 = t2 + Duration::from_secs(3600);
        let allowed = (0..10).filter(|_| l.allow(t3, ip(1))).count();
        assert_eq!(allowed, 3, "refill is capped at the burst");
    }

    #[test]
    fn global_bucket_caps_address_cycling_and_table_is_bounded() {
        let mut l = Limiter::new(
            RateLimit {
                burst: 2,
                per_second: 1,
            },
            RateLimit {
                burst: 5,
                per_second: 1,
            },
            4,
        );
        let now = Instant::from_secs(1);
        let allowed = (0..50u8).filter(|n| l.allow(now, ip(*n))).count();
        assert_eq!(allowed, 5);
        assert_eq!(l.tracked_sources(), 4);
    }
}

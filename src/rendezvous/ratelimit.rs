//! Rate limits: per-source token buckets in a bounded table (server), and growing
//! back-off after wrong passwords (acceptor).

use alloc::collections::BTreeMap;
use core::net::IpAddr;
use core::ops::Bound;
use core::time::Duration;

use crate::Instant;

/// A token bucket: `burst` tokens, one more every `per_token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateConfig {
    /// Most requests accepted back to back.
    pub burst: u32,
    /// Time to earn one more token.
    pub per_token: Duration,
}

impl RateConfig {
    /// `burst` at once, then one every `per_token`.
    pub const fn new(burst: u32, per_token: Duration) -> Self {
        RateConfig { burst, per_token }
    }
}

/// A token bucket kept as one instant (the generic cell rate algorithm): the *theoretical
/// arrival time* `tat`. A request at `now` conforms if `tat - burst × per_token <= now`;
/// it then moves `tat` to `max(tat, now) + per_token`. A bucket with `tat <= now` is full
/// and carries no information, so it may be forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Gcra {
    tat: Instant,
}

impl Gcra {
    fn allow(&mut self, cfg: &RateConfig, now: Instant) -> bool {
        if !self.would_allow(cfg, now) {
            return false;
        }
        self.tat = self.tat.max(now) + cfg.per_token;
        true
    }

    fn would_allow(&self, cfg: &RateConfig, now: Instant) -> bool {
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
#[derive(Debug)]
pub(crate) struct SourceLimiter {
    cfg: RateConfig,
    table: BTreeMap<IpAddr, Gcra>,
    capacity: usize,
    overflow: Gcra,
    overflow_cfg: RateConfig,
    cursor: Option<IpAddr>,
}

impl SourceLimiter {
    /// Buckets examined per reclamation pass.
    const SWEEP: usize = 16;

    pub(crate) fn new(cfg: RateConfig, capacity: usize, overflow_cfg: RateConfig) -> Self {
        SourceLimiter {
            cfg,
            table: BTreeMap::new(),
            capacity: capacity.max(1),
            overflow: Gcra { tat: Instant::ZERO },
            overflow_cfg,
            cursor: None,
        }
    }

    /// Whether a datagram or request from `ip` at `now` is within its rate.
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
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

/// How the acceptor backs off after wrong passwords.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The first wait after a wrong password from an issuer; it doubles with each further
    /// failure from that issuer.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Wrong passwords (from anyone) the device tolerates before it backs off as a whole;
    /// each failure beyond doubles the device-wide wait.
    pub device_threshold: u32,
    /// A device-wide failure count resets after this long without failures.
    pub device_reset_after: Duration,
    /// Issuers remembered (the oldest penalty is forgotten first).
    pub max_issuers: usize,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_secs(1),
            max: Duration::from_secs(15 * 60),
            device_threshold: 5,
            device_reset_after: Duration::from_secs(3600),
            max_issuers: 256,
        }
    }
}

/// How long to wait, and whether the whole device (not just this issuer) is backing off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wait {
    pub retry_after: Duration,
    pub device_wide: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Penalty {
    failures: u32,
    until: Instant,
    last: Instant,
}

/// `base × 2^(n-1)`, capped.
fn doubling(base: Duration, n: u32, max: Duration) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(n - 1).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// Wrong-password back-off per issuer IP and for the device as a whole.
#[derive(Debug)]
pub(crate) struct Backoff {
    cfg: BackoffConfig,
    issuers: BTreeMap<IpAddr, Penalty>,
    device: Penalty,
}

impl Backoff {
    pub(crate) fn new(cfg: BackoffConfig) -> Self {
        Backoff {
            cfg,
            issuers: BTreeMap::new(),
            device: Penalty::default(),
        }
    }

    /// `Err(wait)` if an attempt from `issuer` must be refused unchecked.
    pub(crate) fn check(&self, issuer: IpAddr, now: Instant) -> Result<(), Wait> {
        let issuer_until = self.issuers.get(&issuer).map_or(now, |p| p.until);
        self.wait(issuer_until, now).map_or(Ok(()), Err)
    }

    fn wait(&self, issuer_until: Instant, now: Instant) -> Option<Wait> {
        let until = issuer_until.max(self.device.until);
        (until > now).then(|| Wait {
            retry_after: until - now,
            device_wide: self.device.until >= issuer_until,
        })
    }

    /// Record a wrong password from `issuer`; returns how long it must now wait.
    pub(crate) fn failure(&mut self, issuer: IpAddr, now: Instant) -> Wait {
        if !self.issuers.contains_key(&issuer) && self.issuers.len() >= self.cfg.max_issuers {
            // Forget the issuer whose penalty is oldest.
            if let Some(oldest) = self
                .issuers
                .iter()
                .min_by_key(|(_, p)| p.last)
                .map(|(ip, _)| *ip)
            {
                self.issuers.remove(&oldest);
            }
        }
        let p = self.issuers.entry(issuer).or_default();
        p.failures = p.failures.saturating_add(1);
        p.last = now;
        p.until = now + doubling(self.cfg.base, p.failures, self.cfg.max);
        let issuer_until = p.until;

        if now.saturating_duration_since(self.device.last) >= self.cfg.device_reset_after {
            self.device.failures = 0;
        }
        self.device.failures = self.device.failures.saturating_add(1);
        self.device.last = now;
        let over = self
            .device
            .failures
            .saturating_sub(self.cfg.device_threshold);
        if over > 0 {
            self.device.until = now + doubling(self.cfg.base, over, self.cfg.max);
        }
        self.wait(issuer_until, now).unwrap_or(Wait {
            retry_after: Duration::ZERO,
            device_wide: false,
        })
    }

    /// A correct password from `issuer`: forget its penalty.
    pub(crate) fn success(&mut self, issuer: IpAddr) {
        self.issuers.remove(&issuer);
    }

    #[cfg(test)]
    pub(crate) fn issuers(&self) -> usize {
        self.issuers.len()
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
        let cfg = RateConfig::new(3, Duration::from_secs(1));
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
        let cfg = RateConfig::new(2, Duration::from_secs(10));
        let overflow = RateConfig::new(1, Duration::from_secs(1));
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
        let cfg = RateConfig::new(3, Duration::from_secs(10));
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
    fn back_off_grows_per_issuer_and_for_the_device() {
        let cfg = BackoffConfig {
            device_threshold: 3,
            max_issuers: 2,
            ..BackoffConfig::default()
        };
        let mut b = Backoff::new(cfg);
        let t = Instant::from_secs(10);
        let issuer = |secs| Wait {
            retry_after: Duration::from_secs(secs),
            device_wide: false,
        };
        let device = |secs| Wait {
            retry_after: Duration::from_secs(secs),
            device_wide: true,
        };
        assert_eq!(b.check(ip(1), t), Ok(()));
        assert_eq!(b.failure(ip(1), t), issuer(1));
        assert_eq!(b.check(ip(1), t), Err(issuer(1)));
        assert_eq!(b.check(ip(2), t), Ok(()));
        let t2 = t + Duration::from_secs(1);
        assert_eq!(b.check(ip(1), t2), Ok(()));
        assert_eq!(b.failure(ip(1), t2), issuer(2));
        let t3 = t2 + Duration::from_secs(2);
        assert_eq!(b.failure(ip(1), t3), issuer(4));
        // The fourth failure on the device (from a new issuer) starts device-wide back-off.
        assert_eq!(b.failure(ip(2), t3), device(1));
        assert_eq!(b.check(ip(9), t3), Err(device(1)));
        // An issuer whose own wait is longer hears about its own.
        assert_eq!(b.check(ip(1), t3), Err(issuer(4)));
        // The issuer table is bounded: a third issuer pushes out the oldest.
        b.failure(ip(3), t3 + Duration::from_secs(10));
        assert_eq!(b.issuers(), 2);
        // Success clears that issuer.
        b.success(ip(3));
        assert_eq!(b.issuers(), 1);
        assert_eq!(
            doubling(Duration::from_secs(1), 40, Duration::from_secs(900)),
            Duration::from_secs(900)
        );
    }
}

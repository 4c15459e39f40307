//! Growing back-off after wrong passwords (the acceptor, S207).

use alloc::collections::BTreeMap;
use core::net::IpAddr;
use core::time::Duration;

use crate::Instant;

/// How the acceptor backs off after wrong passwords.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The first wait after a wrong password from an issuer; it doubles with each further
    /// failure from that issuer. Default 1 s.
    pub base: Duration,
    /// The longest wait. Default 15 minutes.
    pub max: Duration,
    /// Wrong passwords (from anyone) the device tolerates before it backs off as a whole;
    /// each failure beyond doubles the device-wide wait. Default 5.
    pub device_threshold: u32,
    /// A device-wide failure count resets after this long without failures. Default one hour.
    pub device_reset_after: Duration,
    /// Issuers remembered (the oldest penalty is forgotten first). Default 256.
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
    match n {
        0 => Duration::ZERO,
        n => crate::time::doubled(base, n - 1, max),
    }
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

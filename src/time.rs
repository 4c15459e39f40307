//! Time as the driver tells it.
//!
//! Actors never read a clock. The driver passes the current [`Instant`] into every call;
//! actors answer "wake me at" through `poll_timeout`. An `Instant` is a count of
//! nanoseconds since an arbitrary origin the driver picks (boot, process start, the
//! simulator's time zero). Only differences between instants mean anything.
//!
//! Certificates need wall-clock time. Configurations that check validity windows take a
//! [`UnixTime`] anchor: the wall-clock time at `Instant::ZERO`, so
//! `wall = anchor + (now - Instant::ZERO)`. The driver supplies the anchor once.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

/// A point in monotonic time, in nanoseconds since the driver's origin.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The driver's origin.
    pub const ZERO: Instant = Instant(0);
    /// The largest representable instant (about 584 years after the origin).
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// An instant `micros` microseconds after the origin (saturating).
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros.saturating_mul(1_000))
    }

    /// An instant `millis` milliseconds after the origin (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1_000_000))
    }

    /// An instant `secs` seconds after the origin (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Instant(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time since the origin.
    pub const fn since_origin(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at [`Instant::MAX`].
    pub fn saturating_add(self, d: Duration) -> Instant {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        self.saturating_add(rhs)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = self.saturating_add(rhs);
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    /// `self - d`, saturating at [`Instant::ZERO`].
    fn sub(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(nanos))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000_000;
        let micros = (self.0 % 1_000_000_000) / 1_000;
        write!(f, "{secs}.{micros:06}s")
    }
}

/// `base` doubled `n` times, capped at `max`; never overflows. The one exponential
/// back-off of the crate's retransmission and penalty timers.
pub(crate) fn doubled(base: Duration, n: u32, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(n).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// Wall-clock time: seconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// The wall-clock time at `now`, given the wall-clock time at [`Instant::ZERO`].
    pub fn at(anchor: UnixTime, now: Instant) -> UnixTime {
        UnixTime(anchor.0.saturating_add(now.as_nanos() / 1_000_000_000))
    }
}

/// The earliest deadline of an actor's timer list (`poll_timeout`).
///
/// An actor lists its timers as `(Timer, Instant)` pairs read from its state, once; both
/// `poll_timeout` ([`earliest`]) and `handle_timeout` ([`due`]) read that one list, so
/// a deadline cannot be armed in one and forgotten in the other.
pub(crate) fn earliest<T>(timers: impl IntoIterator<Item = (T, Instant)>) -> Option<Instant> {
    timers.into_iter().map(|(_, at)| at).min()
}

/// The timers of a list that are due at `now`, in list order (`handle_timeout`). Collected
/// before any fires, so firing one may change the state the list was read from; a timer
/// fired later looks its state up again.
pub(crate) fn due<T>(
    timers: impl IntoIterator<Item = (T, Instant)>,
    now: Instant,
) -> alloc::vec::Vec<T> {
    timers
        .into_iter()
        .filter(|(_, at)| *at <= now)
        .map(|(timer, _)| timer)
        .collect()
}

/// An actor's timer table: the one list both `poll_timeout` and `handle_timeout` read
/// ([`earliest`] and [`due`] of [`TimerTable::timers`]). Protocol-neutral: the actor names
/// its own timer enum and says how each fires.
pub(crate) trait TimerTable {
    /// The actor's timer enum.
    type Timer;

    /// Every armed timer with its deadline, in the order they fire.
    fn timers(&self) -> impl Iterator<Item = (Self::Timer, Instant)> + '_;

    /// Fire one timer taken from [`TimerTable::timers`] (it may no longer be armed).
    fn fire(&mut self, now: Instant, timer: Self::Timer);

    /// `handle_timeout`: fire every timer due at `now`.
    fn run_timers(&mut self, now: Instant) {
        for timer in due(self.timers(), now) {
            self.fire(now, timer);
        }
    }

    /// `poll_timeout`: the earliest deadline.
    fn next_timer(&self) -> Option<Instant> {
        earliest(self.timers())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        let t = Instant::from_secs(5);
        assert_eq!(t + Duration::from_millis(1500), Instant::from_millis(6500));
        assert_eq!(Instant::from_secs(1) - t, Duration::ZERO);
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(t - Instant::from_secs(2), Duration::from_secs(3));
        assert_eq!(t - Duration::from_secs(2), Instant::from_secs(3));
        assert_eq!(t - Duration::from_secs(9), Instant::ZERO);
        assert_eq!(format!("{}", Instant::from_micros(1_500_001)), "1.500001s");
    }

    #[test]
    fn doubling_caps_and_never_overflows() {
        let s = Duration::from_secs;
        assert_eq!(doubled(s(1), 0, s(60)), s(1));
        assert_eq!(doubled(s(1), 3, s(60)), s(8));
        assert_eq!(doubled(s(1), 6, s(60)), s(60));
        assert_eq!(doubled(s(1), 200, s(60)), s(60));
        assert_eq!(doubled(Duration::MAX, 2, Duration::MAX), Duration::MAX);
    }

    #[test]
    fn unix_time_follows_the_anchor() {
        let anchor = UnixTime(1_700_000_000);
        assert_eq!(
            UnixTime::at(anchor, Instant::from_secs(60)),
            UnixTime(1_700_000_060)
        );
    }
}

//! Time as a value: the core never reads a clock.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time, in nanoseconds since an epoch chosen by the driver.
///
/// Mechanisms compare instants and add durations; they never ask what time it is. The simulator
/// starts its epoch at zero; the tokio runtime anchors it at the Unix epoch so that the timestamps a
/// leader stamps into log entries are wall-clock milliseconds (see `Entry::timestamp_ms`).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Instant(u64);

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant(0);
    /// The farthest future an instant can name.
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// An instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Whole milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// How far a node's timestamps may run ahead of the newest timestamp it saw from other nodes plus
/// the time its own clock measured since (see [`StampAnchor`]).
pub const STAMP_LEAD_MAX_MS: u64 = 1_000;

/// The newest timestamp a node saw from other nodes (other leaders, other proposers, or its own
/// recovered state), and the instant it saw it. A node stamps entries with its wall clock capped by
/// it ([`StampAnchor::cap`]), so a node whose wall clock was set far ahead when its process started
/// cannot move the cluster's time forward by the error (that would expire client sessions and lock
/// leases early, or let a lease outlive its TTL). Its own stamps must never be passed to
/// [`StampAnchor::see`], or the cap would follow its clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StampAnchor {
    newest: Option<(u64, Instant)>,
}

impl StampAnchor {
    /// Notes `stamp_ms` (0: none) seen at `now`, if it is newer than any seen before.
    pub fn see(&mut self, stamp_ms: u64, now: Instant) {
        if stamp_ms > 0 && self.newest.map_or(true, |(newest, _)| stamp_ms > newest) {
            self.newest = Some((stamp_ms, now));
        }
    }

    /// The clock's reading at `now`, but at most [`STAMP_LEAD_MAX_MS`] past the newest stamp seen
    /// plus the time measured since it was seen. Uncapped if nothing was seen.
    pub fn cap(&self, now: Instant) -> u64 {
        let clock_ms = now.as_millis();
        match self.newest {
            Some((seen_ms, seen_at)) => {
                let elapsed_ms =
                    u64::try_from(now.saturating_duration_since(seen_at).as_millis()).unwrap_or(u64::MAX);
                clock_ms.min(seen_ms.saturating_add(elapsed_ms).saturating_add(STAMP_LEAD_MAX_MS))
            }
            None => clock_ms,
        }
    }
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(duration_nanos(rhs)))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_sub(duration_nanos(rhs)))
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
        write!(f, "{}.{:06}ms", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_the_clock_capped_by_the_newest_stamp_seen_plus_the_time_since() {
        let day_ahead = |millis: u64| Instant::from_millis(86_400_000 + millis);
        let mut anchor = StampAnchor::default();
        assert_eq!(anchor.cap(day_ahead(0)), 86_400_000, "nothing seen: the clock");
        anchor.see(5_000, day_ahead(0));
        anchor.see(4_000, day_ahead(100)); // older: ignored
        anchor.see(0, day_ahead(200)); // none: ignored
        assert_eq!(anchor.cap(day_ahead(0)), 5_000 + STAMP_LEAD_MAX_MS);
        assert_eq!(anchor.cap(day_ahead(2_500)), 5_000 + 2_500 + STAMP_LEAD_MAX_MS);
        // A clock behind the anchor is not moved forward.
        assert_eq!(anchor.cap(Instant::from_millis(3_000)), 3_000);
    }
}

//! Exponential backoff with jitter for reconnect attempts.

use std::time::Duration;

/// Delays between reconnect attempts: doubling from `min` up to `max`, each one drawn uniformly from
/// the upper half of the current step ("equal jitter"), so links that broke together do not all
/// come back in the same instant, yet no delay is ever below half the step.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    random_state: u64,
}

impl Backoff {
    /// A backoff whose jitter comes from `seed` (derived from the link's two node ids, so runs are
    /// reproducible while different links still spread out).
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        assert!(min <= max, "backoff min {min:?} above max {max:?}");
        Backoff { min, max, step: min, random_state: seed | 1 }
    }

    /// The backoff of the link `from → to`, seeded by [`link_seed`].
    pub fn for_link(min: Duration, max: Duration, from: &str, to: &str) -> Self {
        Backoff::new(min, max, link_seed(from, to))
    }

    /// Back to the shortest delay (after a link came up).
    pub fn reset(&mut self) {
        self.step = self.min;
    }

    /// The delay before the next attempt; the step after it doubles.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        let jitter_nanos = (half.as_nanos() as u64).max(1);
        let delay = half + Duration::from_nanos(self.next_random() % jitter_nanos);
        debug_assert!(delay <= step.max(Duration::from_nanos(1)));
        delay
    }

    // xorshift64: jitter needs spread, not quality.
    fn next_random(&mut self) -> u64 {
        let mut x = self.random_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random_state = x;
        x
    }
}

/// A stable seed for the link `from → to` (FNV-1a over both ids).
pub fn link_seed(from: &str, to: &str) -> u64 {
    from.bytes()
        .chain([0])
        .chain(to.bytes())
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_up_to_the_max_and_reset() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        let mut backoff = Backoff::new(min, max, 42);
        let mut step = min;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(delay >= step / 2 && delay <= step, "{delay:?} outside [{:?}, {step:?}]", step / 2);
            step = (step * 2).min(max);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }

    #[test]
    fn different_links_get_different_jitter() {
        let delays = |seed| {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10), seed);
            (0..5).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_ne!(delays(link_seed("a", "b")), delays(link_seed("b", "a")));
        assert_eq!(delays(link_seed("a", "b")), delays(link_seed("a", "b")));
    }
}

//! The driver's clock: tokio time (so tests can pause it) anchored at the Unix epoch, so that the
//! timestamps a leader stamps into entries are wall-clock milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use concord_core::time::Instant;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    base: tokio::time::Instant,
    base_unix_nanos: u64,
}

impl Clock {
    pub(crate) fn new(epoch_unix_ms: Option<u64>) -> Self {
        let base_unix_nanos = match epoch_unix_ms {
            Some(ms) => ms.saturating_mul(1_000_000),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        };
        Clock { base: tokio::time::Instant::now(), base_unix_nanos }
    }

    pub(crate) fn now(&self) -> Instant {
        let elapsed = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Instant::from_nanos(self.base_unix_nanos.saturating_add(elapsed))
    }

    pub(crate) fn tokio_instant(&self, at: Instant) -> tokio::time::Instant {
        let offset = at.as_nanos().saturating_sub(self.base_unix_nanos);
        // Cap far-future deadlines: tokio panics on instants that overflow.
        let offset = Duration::from_nanos(offset.min(86_400 * 1_000_000_000 * 365));
        self.base + offset
    }
}

//! Small statistics and `/proc` helpers shared by the benchmark binaries.

use std::time::Duration;

/// Median, p99, max and mean of a set of durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationSummary {
    /// How many samples.
    pub count: usize,
    /// The 50th percentile (nearest rank).
    pub median: Duration,
    /// The 99th percentile (nearest rank).
    pub p99: Duration,
    /// The largest sample.
    pub max: Duration,
    /// The arithmetic mean.
    pub mean: Duration,
}

impl DurationSummary {
    /// Summarizes `samples` (sorted in place); `None` when there are none.
    pub fn of(samples: &mut [Duration]) -> Option<DurationSummary> {
        samples.sort_unstable();
        let max = *samples.last()?;
        let total: Duration = samples.iter().sum();
        Some(DurationSummary {
            count: samples.len(),
            median: percentile(samples, 0.50)?,
            p99: percentile(samples, 0.99)?,
            max,
            mean: total / samples.len() as u32,
        })
    }
}

/// The nearest-rank percentile (`fraction` in 0..=1) of `sorted`, which must be sorted ascending.
pub fn percentile(sorted: &[Duration], fraction: f64) -> Option<Duration> {
    debug_assert!(sorted.windows(2).all(|pair| pair[0] <= pair[1]), "percentile needs sorted input");
    if sorted.is_empty() {
        return None;
    }
    let rank = ((fraction.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// `d` in milliseconds with one decimal, e.g. `243.5 ms`.
pub fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// `d` in microseconds with one decimal, e.g. `48.2 µs`.
pub fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1_000_000.0)
}

/// A `kB` field (e.g. `VmRSS`, `VmHWM`) of a `/proc/PID/status` text, in KiB.
pub fn status_kibibytes(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let value = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(value)
    })
}

/// This process's current resident memory (`VmRSS`), in KiB; `None` where `/proc` is missing.
pub fn resident_kibibytes() -> Option<u64> {
    status_kibibytes(&std::fs::read_to_string("/proc/self/status").ok()?, "VmRSS")
}

/// Parses a comma-separated list of positive counts, e.g. `1,64,256`.
pub fn parse_counts(text: &str) -> Result<Vec<u64>, String> {
    let counts = text
        .split(',')
        .map(|part| match part.trim().parse::<u64>() {
            Ok(0) | Err(_) => Err(format!("{part:?} in {text:?} is not a positive count")),
            Ok(count) => Ok(count),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&sorted, 0.50), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&sorted, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&sorted, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&sorted, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&ms(&[7]), 0.99), Some(Duration::from_millis(7)));
    }

    #[test]
    fn summary_sorts_and_averages() {
        let mut samples = ms(&[30, 10, 20, 40]);
        let summary = DurationSummary::of(&mut samples).unwrap();
        assert_eq!(summary.count, 4);
        assert_eq!(summary.median, Duration::from_millis(20));
        assert_eq!(summary.p99, Duration::from_millis(40));
        assert_eq!(summary.max, Duration::from_millis(40));
        assert_eq!(summary.mean, Duration::from_millis(25));
        assert_eq!(DurationSummary::of(&mut []), None);
    }

    #[test]
    fn status_fields_are_read_in_kibibytes() {
        let status = "Name:\tbench\nVmHWM:\t  204800 kB\nVmRSS:\t   51200 kB\nThreads:\t3\n";
        assert_eq!(status_kibibytes(status, "VmRSS"), Some(51_200));
        assert_eq!(status_kibibytes(status, "VmHWM"), Some(204_800));
        assert_eq!(status_kibibytes(status, "VmSwap"), None);
        assert_eq!(status_kibibytes(status, "Threads"), None, "no kB unit");
        assert_eq!(status_kibibytes("VmRSSX:\t1 kB\n", "VmRSS"), None);
    }

    #[test]
    fn counts_are_positive_and_comma_separated() {
        assert_eq!(parse_counts("1,64, 256"), Ok(vec![1, 64, 256]));
        assert!(parse_counts("1,0").is_err());
        assert!(parse_counts("1,,2").is_err());
        assert!(parse_counts("many").is_err());
    }

    #[test]
    fn durations_are_formatted_with_units() {
        assert_eq!(millis(Duration::from_micros(243_440)), "243.4 ms");
        assert_eq!(micros(Duration::from_nanos(48_240)), "48.2 µs");
    }
}

//! Percentiles and means of latency samples, and medians of throughput runs.

use std::time::Duration;

/// What is reported for one target and one request.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
}

impl Summary {
    /// Summarizes `samples` (in any order). `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let total: Duration = sorted.iter().sum();
        Some(Summary {
            p50: percentile(&sorted, 0.50),
            p99: percentile(&sorted, 0.99),
            mean: total / u32::try_from(sorted.len()).unwrap_or(u32::MAX),
        })
    }
}

/// The nearest-rank percentile of sorted samples: the smallest sample such that at least a
/// fraction `p` of all samples are less than or equal to it. Always an observed value (no
/// interpolation), so p99 of 2000 samples is the 1980th smallest.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of a few values (the lower middle one for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted.get((sorted.len().max(1) - 1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: u64) -> Duration {
        Duration::from_micros(v)
    }

    #[test]
    fn nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(us).collect();
        assert_eq!(percentile(&sorted, 0.50), us(50));
        assert_eq!(percentile(&sorted, 0.99), us(99));
        assert_eq!(percentile(&sorted[..1], 0.99), us(1));
        let s = Summary::of(&[us(3), us(1), us(2)]).unwrap();
        assert_eq!((s.p50, s.p99, s.mean), (us(2), us(3), us(2)));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(1.0));
        assert_eq!(median(&[]), None);
    }
}

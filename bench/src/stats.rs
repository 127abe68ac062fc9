//! Statistics of repeated runs and latency distributions: pure functions, no I/O.
//!
//! Every figure the benchmark prints is the median of several runs with their min and max,
//! so one disturbed run (another process on a shared machine) moves the min or the max, not
//! the figure. Latencies go into an HDR histogram so percentiles cost O(1) memory per
//! workload however many operations ran.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// Median, minimum and maximum of a figure over runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Summary {
    /// `None` for no samples or a sample that is not a number (a figure that could not be
    /// measured must not look like a zero).
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        // Even counts: the mean of the two middle values, the usual definition.
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            runs: n,
        })
    }
}

/// `a / b`, or `None` when `b` is zero or either is not finite (a ratio to nothing is not
/// infinity, it is unknown).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    if !a.is_finite() || !b.is_finite() || b == 0.0 {
        return None;
    }
    Some(a / b)
}

/// Longest latency the histogram resolves: 10 minutes in nanoseconds. Anything longer is
/// clamped (and would already be a hung benchmark).
const HIST_MAX_NS: u64 = 600_000_000_000;
/// Three significant digits: 0.1% resolution at any magnitude, about 200 KiB per histogram.
const HIST_SIGFIG: u8 = 3;

/// A latency distribution in nanoseconds.
#[derive(Clone, Debug)]
pub struct Latencies {
    hist: Histogram<u64>,
}

/// The percentiles a storage engineer asks for, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    pub fn new() -> Latencies {
        Latencies {
            // The bounds are constants that hdrhistogram accepts (checked by a unit test), so
            // this cannot fail at run time.
            hist: Histogram::new_with_bounds(1, HIST_MAX_NS, HIST_SIGFIG)
                .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid")),
        }
    }

    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record(ns.clamp(1, HIST_MAX_NS));
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides: `add` only fails on a smaller destination range.
        let _ = self.hist.add(&other.hist);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Latency at percentile `p` (0..=100) in microseconds.
    pub fn at_percentile_us(&self, p: f64) -> f64 {
        self.hist.value_at_percentile(p) as f64 / 1000.0
    }

    /// `None` when nothing was recorded.
    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.hist.is_empty() {
            return None;
        }
        Some(Percentiles {
            count: self.hist.len(),
            p50_us: self.at_percentile_us(50.0),
            p95_us: self.at_percentile_us(95.0),
            p99_us: self.at_percentile_us(99.0),
            max_us: self.hist.max() as f64 / 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max_of_odd_and_even_counts() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).expect("summary");
        assert_eq!(
            s,
            Summary {
                median: 2.0,
                min: 1.0,
                max: 3.0,
                runs: 3
            }
        );
        let s = Summary::of(&[4.0, 1.0, 3.0, 10.0]).expect("summary");
        assert_eq!((s.median, s.min, s.max, s.runs), (3.5, 1.0, 10.0, 4));
        let s = Summary::of(&[7.5]).expect("summary");
        assert_eq!((s.median, s.min, s.max), (7.5, 7.5, 7.5));
    }

    #[test]
    fn no_summary_of_nothing_or_nan() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
        assert_eq!(Summary::of(&[f64::INFINITY]), None);
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(6.0, 3.0), Some(2.0));
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
    }

    #[test]
    fn histogram_percentiles_of_a_known_distribution() {
        let mut l = Latencies::new();
        assert_eq!(l.percentiles(), None);
        // 1..=1000 µs, one each: p50 = 500 µs, p95 = 950 µs, p99 = 990 µs, max = 1000 µs,
        // each within the histogram's 0.1% resolution.
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let p = l.percentiles().expect("percentiles");
        assert_eq!(p.count, 1000);
        for (got, want) in [
            (p.p50_us, 500.0),
            (p.p95_us, 950.0),
            (p.p99_us, 990.0),
            (p.max_us, 1000.0),
        ] {
            assert!(
                (got - want).abs() <= want * 0.001,
                "got {got} µs, want {want} µs"
            );
        }
    }

    #[test]
    fn histograms_merge_and_clamp() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        a.record(Duration::from_micros(10));
        b.record(Duration::from_micros(20));
        b.record(Duration::ZERO);
        b.record(Duration::from_secs(100_000));
        a.merge(&b);
        assert_eq!(a.count(), 4);
        let p = a.percentiles().expect("percentiles");
        assert!((p.max_us - 600_000_000.0).abs() <= 600_000_000.0 * 0.001);
    }
}

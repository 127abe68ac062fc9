//! Counters a chunkserver reports about itself (`NodeStatus`): I/O and error counts, requests
//! in flight and a recent mean latency. Clients route reads by the load figure built from
//! these, the sentinel judges health by them. Lock-free counters, except the latency average
//! which is one tiny mutex; nothing here may block on I/O.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Weight of a new latency sample in the moving average: 1/8, as TCP's smoothed RTT, so
/// that a few slow requests move the figure quickly but one outlier does not dominate it.
const LATENCY_EWMA_WEIGHT: f64 = 1.0 / 8.0;

#[derive(Debug)]
pub struct Stats {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    /// Checksum failures, I/O errors and rejected requests.
    pub errors: AtomicU64,
    in_flight: AtomicU64,
    /// Smoothed latency in microseconds; `None` until the first request finished.
    latency_us: Mutex<Option<f64>>,
    started: Instant,
    draining: AtomicBool,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            write_bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            latency_us: Mutex::new(None),
            started: Instant::now(),
            draining: AtomicBool::new(false),
        }
    }
}

impl Stats {
    pub fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_read(&self, bytes: u64) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn count_write(&self, bytes: u64) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.write_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn latency_us(&self) -> u64 {
        self.latency_us.lock().map_or(0, |l| l.round() as u64)
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Marks the node as shutting down gracefully; status reports carry it from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn record_latency(&self, took: Duration) {
        let sample = took.as_secs_f64() * 1e6;
        let mut avg = self.latency_us.lock();
        *avg = Some(match *avg {
            Some(prev) => prev + LATENCY_EWMA_WEIGHT * (sample - prev),
            None => sample,
        });
    }
}

/// Held for the duration of one request: counts it in flight and records its latency when
/// dropped, so every exit path (success, error, cancelled deadline) is accounted for.
pub struct RequestGuard {
    stats: Arc<Stats>,
    start: Instant,
}

impl RequestGuard {
    pub fn new(stats: Arc<Stats>) -> RequestGuard {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestGuard {
            stats,
            start: Instant::now(),
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.stats.record_latency(self.start.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_in_flight_and_latency() {
        let stats = Arc::new(Stats::default());
        assert_eq!(stats.latency_us(), 0);
        let guard = RequestGuard::new(stats.clone());
        assert_eq!(stats.in_flight(), 1);
        drop(guard);
        assert_eq!(stats.in_flight(), 0);
        assert!(stats.latency_us.lock().is_some());
    }

    #[test]
    fn latency_average_moves_towards_samples() {
        let stats = Stats::default();
        stats.record_latency(Duration::from_micros(800));
        assert_eq!(stats.latency_us(), 800);
        stats.record_latency(Duration::from_micros(0));
        assert_eq!(stats.latency_us(), 700);
    }
}

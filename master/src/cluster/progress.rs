//! The repair worker's bookkeeping, kept by the cluster control: the copies running (so
//! planners never start two copies of one chunk or overload a node), the progress counters
//! `status` shows, and the copy rate over a short window. Pure over the `now` it is given.

use crate::plan::repair::InFlight;
use common::types::RepairProgress;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window the copy rate in `status` is measured over: long enough to smooth single
/// chunks, short enough to show a stall within seconds.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Bytes per second over the last [`RATE_WINDOW`].
#[derive(Clone, Debug, Default)]
pub struct RateMeter {
    done: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    pub fn record(&mut self, at: Instant, bytes: u64) {
        self.done.push_back((at, bytes));
    }

    pub fn rate(&mut self, now: Instant) -> u64 {
        while self
            .done
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > RATE_WINDOW)
        {
            self.done.pop_front();
        }
        let bytes: u64 = self.done.iter().map(|(_, b)| b).sum();
        (bytes as f64 / RATE_WINDOW.as_secs_f64()) as u64
    }
}

/// The worker's shared bookkeeping: copies running and progress counters.
#[derive(Debug, Default)]
pub struct RepairState {
    pub running: InFlight,
    pub progress: RepairProgress,
    pub meter: RateMeter,
}

impl RepairState {
    /// Progress with the rate as of `now`.
    pub fn snapshot(&mut self, now: Instant) -> RepairProgress {
        let mut p = self.progress;
        p.in_flight = self.running.total() as u64;
        p.bytes_per_sec = self.meter.rate(now);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_over_the_window() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        m.record(t0, 10 << 20);
        m.record(t0 + Duration::from_secs(1), 5 << 20);
        assert_eq!(m.rate(t0 + Duration::from_secs(2)), 3 << 20);
        // The first record leaves the window.
        assert_eq!(m.rate(t0 + Duration::from_secs(6)), 1 << 20);
        assert_eq!(m.rate(t0 + Duration::from_secs(60)), 0);
    }
}

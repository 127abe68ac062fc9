//! The scrubber: re-reads every stored block copy in the background and checks its
//! checksum, at a configured pace, so that a rotting disk is found before a client needs
//! the data. A mismatch quarantines the replica and reports it to the master exactly as a
//! failed client read does (the store does that); the master then repairs it from a
//! healthy replica.
//!
//! A worker: it only paces and logs. It never deletes or repairs anything itself.

use crate::store::Store;
use common::rpc::MAX_BLOCKS_PER_REQUEST;
use common::{ChunkId, FsError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What one scrub cycle found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CycleReport {
    pub chunks: u64,
    pub bytes: u64,
    pub corrupt: Vec<ChunkId>,
    pub elapsed: Duration,
}

/// How to pace a scrub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrubPace {
    /// Bytes per second; 0 = never scrub.
    pub bytes_per_sec: u64,
    /// Shortest time between the starts of two cycles.
    pub period: Duration,
}

/// The pause that keeps a scrub that has read `bytes` since `elapsed` at `rate` bytes per
/// second: zero while it is behind schedule.
pub fn pause_for(bytes: u64, elapsed: Duration, rate: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
    due.saturating_sub(elapsed)
}

/// Verifies every chunk once at `rate` bytes per second; stops early (returning what it
/// did) when `stop` changes.
pub async fn scrub_cycle(
    store: &Store,
    rate: u64,
    stop: &mut watch::Receiver<bool>,
) -> CycleReport {
    let started = Instant::now();
    let mut report = CycleReport::default();
    let chunks = match store.list_chunks().await {
        Ok(chunks) => chunks,
        Err(e) => {
            tracing::warn!(error = %e, "scrub could not list chunks");
            return report;
        }
    };
    'chunks: for held in chunks {
        let blocks = match store.chunk_blocks(held.chunk).await {
            Ok(blocks) => blocks,
            // Deleted or quarantined since the listing.
            Err(_) => continue,
        };
        for first in (0..blocks).step_by(MAX_BLOCKS_PER_REQUEST as usize) {
            let count = (blocks - first).min(MAX_BLOCKS_PER_REQUEST);
            match store.verify_blocks(held.chunk, first, count).await {
                Ok(bytes) => report.bytes += bytes,
                Err(FsError::Corrupt(why)) => {
                    // Quarantined and reported by the store.
                    tracing::error!(chunk = ?held.chunk, reason = %why, "scrub found a corrupt replica");
                    report.corrupt.push(held.chunk);
                    break;
                }
                Err(FsError::NotFound) => break,
                Err(e) => {
                    tracing::warn!(chunk = ?held.chunk, error = %e, "scrub could not read a chunk");
                    break;
                }
            }
            let pause = pause_for(report.bytes, started.elapsed(), rate);
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => break 'chunks,
                }
            }
        }
        report.chunks += 1;
    }
    report.elapsed = started.elapsed();
    report
}

/// Runs scrub cycles until `stop` changes: one cycle at most every `pace.period`.
pub async fn scrub_loop(store: Store, pace: ScrubPace, mut stop: watch::Receiver<bool>) {
    if pace.bytes_per_sec == 0 {
        tracing::info!("scrubbing disabled");
        return;
    }
    loop {
        let started = Instant::now();
        let report = scrub_cycle(&store, pace.bytes_per_sec, &mut stop).await;
        if *stop.borrow() {
            return;
        }
        tracing::info!(
            chunks = report.chunks,
            bytes = report.bytes,
            corrupt = report.corrupt.len(),
            seconds = report.elapsed.as_secs_f64(),
            "scrub cycle done"
        );
        let wait = pace.period.saturating_sub(started.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_table() {
        let s = Duration::from_secs;
        // (bytes read, elapsed, rate) -> pause
        assert_eq!(pause_for(100, s(0), 100), s(1));
        assert_eq!(pause_for(100, s(1), 100), s(0));
        // Behind schedule: no pause, never negative.
        assert_eq!(pause_for(100, s(5), 100), s(0));
        assert_eq!(pause_for(1 << 30, s(0), 0), s(0));
        assert_eq!(
            pause_for(300, Duration::from_millis(500), 100),
            Duration::from_millis(2500)
        );
    }
}

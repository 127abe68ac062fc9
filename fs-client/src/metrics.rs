//! The mount's Prometheus metrics (`mosaic-mount --metrics-addr`): bytes read and written
//! through the mount and the latency of each file operation as the kernel sees it
//! (`read`, `write`, `flush` on close, `fsync`), recorded by [`crate::ClientCore`] around
//! the operation. Only counts and times: never a path, an inode or a byte of data.

use common::metrics::prometheus_client::metrics::counter::Counter;
use common::metrics::prometheus_client::metrics::family::Family;
use common::metrics::prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use common::metrics::prometheus_client::registry::Registry;
use common::metrics::{Labels, Render, encode};
use std::sync::Arc;
use std::time::Duration;

/// Prefix of every metric name the mount exports.
pub const PREFIX: &str = "mosaic_mount";
/// Smallest latency bucket: 5 µs, a buffered write that only copies into memory.
const OP_BUCKET_START_SECONDS: f64 = 5e-6;
/// Buckets doubling from 5 µs: the last is 5 µs × 2^21 ≈ 10.5 s, past the default retry
/// window of a single RPC and a large fsync.
const OP_BUCKETS: u16 = 22;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn op_histogram() -> Histogram {
    Histogram::new(exponential_buckets(
        OP_BUCKET_START_SECONDS,
        2.0,
        OP_BUCKETS,
    ))
}

/// The mount's counters and histograms; clones share them.
#[derive(Clone)]
pub struct ClientMetrics {
    registry: Arc<Registry>,
    latency: HistogramFamily,
    errors: Family<Labels, Counter>,
    read_bytes: Counter,
    write_bytes: Counter,
    phases: HistogramFamily,
    straggler_timeouts: Counter,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        ClientMetrics::new()
    }
}

fn op_label(op: &str) -> Labels {
    vec![("op".to_string(), op.to_string())]
}

impl ClientMetrics {
    pub fn new() -> ClientMetrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let latency: HistogramFamily = Family::new_with_constructor(op_histogram);
        let errors = Family::<Labels, Counter>::default();
        let read_bytes = Counter::default();
        let write_bytes = Counter::default();
        registry.register(
            "op_duration_seconds",
            "Time from the kernel's request to the answer, per operation (read, write, flush, fsync)",
            latency.clone(),
        );
        registry.register(
            "op_errors",
            "Operations answered with an error, per operation",
            errors.clone(),
        );
        registry.register("read_bytes", "Bytes returned by reads", read_bytes.clone());
        registry.register(
            "write_bytes",
            "Bytes accepted by writes",
            write_bytes.clone(),
        );
        let phases: HistogramFamily = Family::new_with_constructor(op_histogram);
        let straggler_timeouts = Counter::default();
        registry.register(
            "write_phase_seconds",
            "Time of each phase of a flush (straggler_wait, prepare_write, seal, replicas, sync, commit)",
            phases.clone(),
        );
        registry.register(
            "straggler_grace_expired",
            "New grants that stopped waiting for the previous grant's late replicas after the grace",
            straggler_timeouts.clone(),
        );
        ClientMetrics {
            registry: Arc::new(registry),
            latency,
            errors,
            read_bytes,
            write_bytes,
            phases,
            straggler_timeouts,
        }
    }

    /// Records one operation `op` that took `elapsed`; `ok` false counts an error.
    pub fn observe(&self, op: &str, elapsed: Duration, ok: bool) {
        let labels = op_label(op);
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if !ok {
            self.errors.get_or_create(&labels).inc();
        }
    }

    pub fn read(&self, bytes: usize) {
        self.read_bytes.inc_by(bytes as u64);
    }

    pub fn wrote(&self, bytes: usize) {
        self.write_bytes.inc_by(bytes as u64);
    }

    /// Records one phase of a flush (where a write's time goes).
    pub fn phase(&self, phase: &str, elapsed: Duration) {
        self.phases
            .get_or_create(&vec![("phase".to_string(), phase.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    /// A new grant gave up waiting for a previous grant's late replicas.
    pub fn straggler_grace_expired(&self) {
        self.straggler_timeouts.inc();
    }

    /// The endpoint's render: the exposition of these metrics.
    pub fn render(&self) -> Render {
        let registry = self.registry.clone();
        Arc::new(move || {
            let text = encode(&[&registry]);
            Box::pin(async move { text })
        })
    }

    /// The exposition text now (tests).
    pub fn text(&self) -> String {
        encode(&[&self.registry])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::metrics::sample;

    #[test]
    fn counts_bytes_latencies_and_errors() {
        let m = ClientMetrics::new();
        m.observe("write", Duration::from_micros(7), true);
        m.wrote(4096);
        m.observe("read", Duration::from_millis(1), true);
        m.read(100);
        m.observe("fsync", Duration::from_millis(5), false);
        let text = m.text();
        let count = |op: &str| {
            sample(
                &text,
                "mosaic_mount_op_duration_seconds_count",
                &[("op", op)],
            )
        };
        assert_eq!(count("write"), Some(1.0));
        assert_eq!(count("read"), Some(1.0));
        assert_eq!(count("fsync"), Some(1.0));
        assert_eq!(count("flush"), None);
        assert_eq!(
            sample(&text, "mosaic_mount_write_bytes_total", &[]),
            Some(4096.0)
        );
        assert_eq!(
            sample(&text, "mosaic_mount_read_bytes_total", &[]),
            Some(100.0)
        );
        assert_eq!(
            sample(&text, "mosaic_mount_op_errors_total", &[("op", "fsync")]),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "mosaic_mount_op_errors_total", &[("op", "read")]),
            None
        );
    }

    #[test]
    fn counts_write_phases_and_expired_graces() {
        let m = ClientMetrics::new();
        m.phase("seal", Duration::from_millis(2));
        m.phase("seal", Duration::from_millis(3));
        m.straggler_grace_expired();
        let text = m.text();
        assert_eq!(
            sample(
                &text,
                "mosaic_mount_write_phase_seconds_count",
                &[("phase", "seal")]
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "mosaic_mount_straggler_grace_expired_total", &[]),
            Some(1.0)
        );
    }
}

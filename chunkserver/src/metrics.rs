//! The chunkserver's Prometheus metrics: RPC latencies per method (recorded by the serve
//! path) and, at every scrape, a snapshot of the node's own status: capacity, bytes used,
//! chunk replicas held, I/O and error totals, requests in flight.
//!
//! [`status_snapshot`] is pure and unit-tested; a scrape reads only in-memory counters and
//! one `statvfs` (when no capacity is configured), never a chunk file.

use common::metrics::prometheus_client::registry::Registry;
use common::metrics::{RpcMetrics, Snapshot};
use common::types::NodeStatus;

/// Prefix of every metric name a chunkserver exports.
pub const PREFIX: &str = "mosaic_chunkserver";

/// The persistent metrics: built once at start, recorded as requests are answered.
pub struct ChunkserverMetrics {
    pub registry: Registry,
    pub rpc: RpcMetrics,
}

impl ChunkserverMetrics {
    pub fn new() -> ChunkserverMetrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let rpc = RpcMetrics::register(&mut registry);
        ChunkserverMetrics { registry, rpc }
    }
}

impl Default for ChunkserverMetrics {
    fn default() -> Self {
        ChunkserverMetrics::new()
    }
}

/// The gauges and counters of one status reading. Pure.
pub fn status_snapshot(status: &NodeStatus) -> Snapshot {
    let mut s = Snapshot::new(PREFIX);
    let gauges = [
        (
            "capacity_bytes",
            "Bytes this node offers",
            status.capacity_bytes,
        ),
        (
            "used_bytes",
            "Bytes of chunk replicas stored",
            status.used_bytes,
        ),
        ("chunks", "Chunk replicas held", status.chunk_count),
        ("in_flight", "Requests being served", status.in_flight),
        (
            "latency_microseconds",
            "Smoothed recent request latency (the load figure's part)",
            status.latency_us,
        ),
        (
            "uptime_seconds",
            "Seconds since the process started",
            status.uptime_s,
        ),
        (
            "draining",
            "1 while the node shuts down gracefully",
            u64::from(status.draining),
        ),
    ];
    for (name, help, value) in gauges {
        s.gauge(name, help, &[], value as f64);
    }
    let counters = [
        ("reads", "Block read requests served", status.reads),
        ("writes", "Block write requests served", status.writes),
        (
            "read_bytes",
            "Bytes of sealed blocks read",
            status.read_bytes,
        ),
        (
            "write_bytes",
            "Bytes of sealed blocks written",
            status.write_bytes,
        ),
        (
            "errors",
            "Checksum failures, I/O errors and rejected requests",
            status.errors,
        ),
    ];
    for (name, help, value) in counters {
        s.counter(name, help, &[], value);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::metrics::{encode, sample};
    use std::time::Duration;

    #[test]
    fn status_gauges_and_counters() {
        let status = NodeStatus {
            capacity_bytes: 1 << 30,
            used_bytes: 3 << 20,
            chunk_count: 3,
            reads: 10,
            writes: 4,
            read_bytes: 1000,
            write_bytes: 400,
            errors: 1,
            in_flight: 2,
            latency_us: 250,
            uptime_s: 60,
            draining: true,
        };
        let persistent = ChunkserverMetrics::new();
        persistent
            .rpc
            .observe("ChunkServer.write_blocks", Duration::from_millis(2));
        let snap = status_snapshot(&status);
        let text = encode(&[&persistent.registry, snap.registry()]);
        let get = |name: &str| sample(&text, name, &[]);
        assert_eq!(
            get("mosaic_chunkserver_capacity_bytes"),
            Some((1u64 << 30) as f64)
        );
        assert_eq!(
            get("mosaic_chunkserver_used_bytes"),
            Some((3u64 << 20) as f64)
        );
        assert_eq!(get("mosaic_chunkserver_chunks"), Some(3.0));
        assert_eq!(get("mosaic_chunkserver_draining"), Some(1.0));
        assert_eq!(get("mosaic_chunkserver_reads_total"), Some(10.0));
        assert_eq!(get("mosaic_chunkserver_write_bytes_total"), Some(400.0));
        assert_eq!(get("mosaic_chunkserver_errors_total"), Some(1.0));
        assert_eq!(
            sample(
                &text,
                "mosaic_chunkserver_rpc_request_duration_seconds_count",
                &[("method", "ChunkServer.write_blocks")]
            ),
            Some(1.0)
        );
    }
}

//! The master's Prometheus metrics: RPC latencies per method (recorded by the serve path),
//! repair counters (a [`RepairMetrics`] handle the repair worker increments), and at every
//! scrape a snapshot of the cluster summary (files, chunks, under-replicated and lost
//! chunks, and per node its capacity, use and chunk counts).
//!
//! [`summary_snapshot`] is pure and unit-tested. The scrape costs one cluster summary (one
//! pass over the replica table), the same as one `mosaic-sentinel status`; this module must
//! never do more work per scrape than that.

use common::metrics::prometheus_client::metrics::counter::Counter;
use common::metrics::prometheus_client::registry::Registry;
use common::metrics::{RpcMetrics, Snapshot};
use common::types::ClusterSummary;

/// Prefix of every metric name the master exports.
pub const PREFIX: &str = "mosaic_master";

/// Counters of the repair and re-replication work the master orders. Clones share the
/// counts; the worker calls [`RepairMetrics::copied`] when a copy is recorded and
/// [`RepairMetrics::failed`] when one fails.
#[derive(Clone, Debug, Default)]
pub struct RepairMetrics {
    copies: Counter,
    bytes: Counter,
    failures: Counter,
}

impl RepairMetrics {
    /// One replica copy finished and was recorded; `bytes` is the size of the chunk copied
    /// (its length, which is what crossed the network at most).
    pub fn copied(&self, bytes: u64) {
        self.copies.inc();
        self.bytes.inc_by(bytes);
    }

    /// One copy order failed (source or target unreachable, chunk changed meanwhile).
    pub fn failed(&self) {
        self.failures.inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "repair_copies",
            "Replica copies the master ordered that finished and were recorded",
            self.copies.clone(),
        );
        registry.register(
            "repair_bytes",
            "Bytes of chunks copied by finished repair copies",
            self.bytes.clone(),
        );
        registry.register(
            "repair_failures",
            "Replica copy orders that failed",
            self.failures.clone(),
        );
    }
}

/// The master's persistent metrics: built once at start, recorded as things happen.
pub struct MasterMetrics {
    pub registry: Registry,
    pub rpc: RpcMetrics,
}

impl MasterMetrics {
    /// Registers the RPC histograms and `repair`'s counters.
    pub fn new(repair: &RepairMetrics) -> MasterMetrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let rpc = RpcMetrics::register(&mut registry);
        repair.register(&mut registry);
        MasterMetrics { registry, rpc }
    }
}

/// The gauges of one cluster summary. Pure.
pub fn summary_snapshot(summary: &ClusterSummary) -> Snapshot {
    let mut s = Snapshot::new(PREFIX);
    let cluster = [
        (
            "files",
            "Regular files with at least one name",
            summary.files,
        ),
        ("dirs", "Directories", summary.dirs),
        (
            "logical_bytes",
            "Sum of the sizes of all files",
            summary.logical_bytes,
        ),
        ("chunks", "Committed chunks", summary.chunks),
        (
            "chunks_under_replicated",
            "Committed chunks with fewer current replicas on online nodes than the goal",
            summary.under_replicated,
        ),
        (
            "chunks_lost",
            "Committed chunks without any current replica on an online node",
            summary.lost,
        ),
        (
            "replication_goal",
            "Copies every chunk should have (N)",
            u64::from(summary.replication.n),
        ),
    ];
    for (name, help, value) in cluster {
        s.gauge(name, help, &[], value as f64);
    }
    s.counter(
        "writes_refused_no_space",
        "New chunks refused for lack of space on enough nodes (ENOSPC to the writer)",
        &[],
        summary.writes_refused_no_space,
    );
    for node in &summary.nodes {
        let id = node.node.to_string();
        let labels = [("node", id.as_str()), ("addr", node.addr.as_str())];
        let online = if node.online { 1.0 } else { 0.0 };
        s.gauge(
            "node_online",
            "1 while the node heartbeats within node_offline_ms (it gets new chunks), else 0",
            &labels,
            online,
        );
        let per_node = [
            (
                "node_capacity_bytes",
                "Bytes the node offers, from its last heartbeat",
                node.status.capacity_bytes,
            ),
            (
                "node_used_bytes",
                "Bytes the node stores, from its last heartbeat",
                node.status.used_bytes,
            ),
            (
                "node_chunks",
                "Chunk replicas the node reports holding",
                node.status.chunk_count,
            ),
            (
                "node_replicas",
                "Chunk replicas the master records on the node",
                node.replicas,
            ),
        ];
        for (name, help, value) in per_node {
            s.gauge(name, help, &labels, value as f64);
        }
        if node.last_seen_ms != u64::MAX {
            s.gauge(
                "node_last_seen_seconds",
                "Seconds since the node's last heartbeat",
                &labels,
                node.last_seen_ms as f64 / 1000.0,
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::metrics::{encode, sample};
    use common::types::{NodeInfo, NodeStatus, ReplicationPolicy};
    use common::{ClusterId, NodeId};

    #[test]
    fn summary_gauges() {
        let summary = ClusterSummary {
            cluster_id: ClusterId([1; 16]),
            replication: ReplicationPolicy { n: 3, w: 2, r: 2 },
            files: 4,
            dirs: 2,
            chunks: 9,
            under_replicated: 3,
            lost: 1,
            logical_bytes: 5000,
            nodes: vec![
                NodeInfo {
                    node: NodeId(1),
                    addr: "127.0.0.1:7001".into(),
                    last_seen_ms: 1500,
                    online: true,
                    status: NodeStatus {
                        capacity_bytes: 1 << 30,
                        used_bytes: 4096,
                        chunk_count: 8,
                        ..NodeStatus::default()
                    },
                    replicas: 9,
                    condition: Default::default(),
                },
                NodeInfo {
                    node: NodeId(2),
                    addr: "127.0.0.1:7002".into(),
                    last_seen_ms: u64::MAX,
                    online: false,
                    status: NodeStatus::default(),
                    replicas: 0,
                    condition: Default::default(),
                },
            ],
            repair: Default::default(),
            writes_refused_no_space: 7,
            notices: Vec::new(),
        };
        let repair = RepairMetrics::default();
        repair.copied(1 << 20);
        repair.copied(10);
        repair.failed();
        let persistent = MasterMetrics::new(&repair);
        let snap = summary_snapshot(&summary);
        let text = encode(&[&persistent.registry, snap.registry()]);
        let get = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
        assert_eq!(get("mosaic_master_chunks", &[]), Some(9.0));
        assert_eq!(get("mosaic_master_chunks_under_replicated", &[]), Some(3.0));
        assert_eq!(get("mosaic_master_chunks_lost", &[]), Some(1.0));
        assert_eq!(get("mosaic_master_files", &[]), Some(4.0));
        let n1 = [("node", "n1"), ("addr", "127.0.0.1:7001")];
        assert_eq!(get("mosaic_master_node_online", &n1), Some(1.0));
        assert_eq!(
            get("mosaic_master_node_capacity_bytes", &n1),
            Some((1u64 << 30) as f64)
        );
        assert_eq!(get("mosaic_master_node_used_bytes", &n1), Some(4096.0));
        assert_eq!(get("mosaic_master_node_chunks", &n1), Some(8.0));
        assert_eq!(get("mosaic_master_node_replicas", &n1), Some(9.0));
        assert_eq!(get("mosaic_master_node_last_seen_seconds", &n1), Some(1.5));
        let n2 = [("node", "n2")];
        assert_eq!(get("mosaic_master_node_online", &n2), Some(0.0));
        // Never heard since the master started: no made-up age.
        assert_eq!(get("mosaic_master_node_last_seen_seconds", &n2), None);
        assert_eq!(get("mosaic_master_repair_copies_total", &[]), Some(2.0));
        assert_eq!(
            get("mosaic_master_repair_bytes_total", &[]),
            Some(((1 << 20) + 10) as f64)
        );
        assert_eq!(get("mosaic_master_repair_failures_total", &[]), Some(1.0));
        assert_eq!(
            get("mosaic_master_writes_refused_no_space_total", &[]),
            Some(7.0)
        );
    }
}

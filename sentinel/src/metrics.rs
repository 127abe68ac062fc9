//! The sentinel's Prometheus metrics (`mosaic-sentinel run --metrics-addr`): per node its
//! health state as the worker judges it and what the node last reported about itself, plus
//! the worker's own progress. Read from the worker's published [`HealthView`] at scrape
//! time; nothing here probes a node or asks the master.
//!
//! [`view_snapshot`] is pure and unit-tested. The state is exported the usual Prometheus
//! way for an enum: `mosaic_sentinel_node_state{node,addr,state} 1` for the node's current
//! state only, so a state added later needs no change here.

use crate::monitor::HealthView;
use common::metrics::{Render, Snapshot, encode};
use std::sync::Arc;
use tokio::sync::watch;

/// Prefix of every metric name the sentinel exports.
pub const PREFIX: &str = "mosaic_sentinel";

/// The gauges of one health view. Pure.
pub fn view_snapshot(view: &HealthView) -> Snapshot {
    let mut s = Snapshot::new(PREFIX);
    s.gauge(
        "master_reached",
        "1 once the master answered (the node list is real), else 0",
        &[],
        if view.master_reached { 1.0 } else { 0.0 },
    );
    s.counter(
        "probe_rounds",
        "Completed rounds of probes of every node",
        &[],
        view.rounds,
    );
    for (id, node) in &view.nodes {
        let id = id.to_string();
        let state = node.health.state.as_str();
        s.gauge(
            "node_state",
            "1 for the node's current health state (HEALTHY, SUSPECT, DEAD, ...)",
            &[
                ("node", id.as_str()),
                ("addr", node.addr.as_str()),
                ("state", state),
            ],
            1.0,
        );
        let Some(status) = &node.status else {
            continue;
        };
        let labels = [("node", id.as_str()), ("addr", node.addr.as_str())];
        let gauges = [
            (
                "node_capacity_bytes",
                "Bytes the node offers, from its newest probe answer",
                status.capacity_bytes,
            ),
            (
                "node_used_bytes",
                "Bytes the node stores, from its newest probe answer",
                status.used_bytes,
            ),
            (
                "node_chunks",
                "Chunk replicas the node holds, from its newest probe answer",
                status.chunk_count,
            ),
            (
                "node_load",
                "The node's load figure (requests in flight weigh most, then latency)",
                status.load(),
            ),
            (
                "node_errors",
                "Checksum failures, I/O errors and rejected requests since the node started",
                status.errors,
            ),
        ];
        for (name, help, value) in gauges {
            s.gauge(name, help, &labels, value as f64);
        }
    }
    s
}

/// The endpoint's render over the worker's published view.
pub fn render(view: watch::Receiver<Arc<HealthView>>) -> Render {
    Arc::new(move || {
        let current = view.borrow().clone();
        Box::pin(async move { encode(&[view_snapshot(&current).registry()]) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Health, NodeState};
    use crate::monitor::NodeView;
    use common::NodeId;
    use common::metrics::sample;
    use common::types::NodeStatus;

    #[test]
    fn node_states_and_reports() {
        let mut view = HealthView {
            master_reached: true,
            rounds: 12,
            ..HealthView::default()
        };
        view.nodes.insert(
            NodeId(1),
            NodeView {
                addr: "127.0.0.1:7001".into(),
                health: Health {
                    state: NodeState::Healthy,
                    reason: String::new(),
                },
                status: Some(NodeStatus {
                    capacity_bytes: 1000,
                    used_bytes: 250,
                    chunk_count: 5,
                    in_flight: 1,
                    latency_us: 20,
                    errors: 2,
                    ..NodeStatus::default()
                }),
            },
        );
        view.nodes.insert(
            NodeId(2),
            NodeView {
                addr: "127.0.0.1:7002".into(),
                health: Health {
                    state: NodeState::Dead,
                    reason: "refused".into(),
                },
                status: None,
            },
        );
        let text = encode(&[view_snapshot(&view).registry()]);
        let get = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
        assert_eq!(get("mosaic_sentinel_master_reached", &[]), Some(1.0));
        assert_eq!(get("mosaic_sentinel_probe_rounds_total", &[]), Some(12.0));
        assert_eq!(
            get(
                "mosaic_sentinel_node_state",
                &[("node", "n1"), ("state", "HEALTHY")]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(
                "mosaic_sentinel_node_state",
                &[
                    ("node", "n2"),
                    ("addr", "127.0.0.1:7002"),
                    ("state", "DEAD")
                ]
            ),
            Some(1.0)
        );
        // Only the current state has a series.
        assert_eq!(
            get(
                "mosaic_sentinel_node_state",
                &[("node", "n2"), ("state", "HEALTHY")]
            ),
            None
        );
        let n1 = [("node", "n1")];
        assert_eq!(
            get("mosaic_sentinel_node_capacity_bytes", &n1),
            Some(1000.0)
        );
        assert_eq!(get("mosaic_sentinel_node_used_bytes", &n1), Some(250.0));
        assert_eq!(get("mosaic_sentinel_node_chunks", &n1), Some(5.0));
        assert_eq!(get("mosaic_sentinel_node_load", &n1), Some(1020.0));
        assert_eq!(get("mosaic_sentinel_node_errors", &n1), Some(2.0));
        // A node that never answered has no made-up figures.
        assert_eq!(
            get("mosaic_sentinel_node_used_bytes", &[("node", "n2")]),
            None
        );
    }
}

//! `mosaic-sentinel status`: the typed [`StatusReport`], the cluster verdict, and how both are
//! built from the master's summary plus one probe of every node.
//!
//! [`verdict`] and [`build_report`] are pure (table-tested); [`fetch_report`] is the only part
//! that talks to the network. Rendering lives in [`crate::render`] and never computes
//! anything the report does not already hold.

use crate::cluster::Cluster;
use crate::health::{self, HealthPolicy, NodeState, Probe, ProbeHistory, ProbeOutcome};
use common::types::{
    ClusterNotice, ClusterSummary, NodeCondition, NodeInfo, RepairProgress, ReplicationPolicy,
};
use common::{FsError, NodeId};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The cluster at a glance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Every node healthy, every chunk at its goal.
    Healthy,
    /// Data is reachable but redundancy or a node is impaired.
    Degraded,
    /// Some data cannot be read, or nothing can: master unreachable, chunks lost, no node up.
    Unavailable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "HEALTHY",
            Verdict::Degraded => "DEGRADED",
            Verdict::Unavailable => "UNAVAILABLE",
        }
    }

    /// The `status` command's exit status: scripts branch on it.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Healthy => 0,
            Verdict::Degraded => 1,
            Verdict::Unavailable => 2,
        }
    }
}

/// Chunk counts (the `chunks` object of the JSON contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChunkCounts {
    pub total: u64,
    pub under_replicated: u64,
    pub lost: u64,
}

/// One node as `status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node id in its `n<hex>` form, as logs and admin commands spell it.
    #[serde(with = "node_id_text")]
    pub id: NodeId,
    pub addr: String,
    pub state: NodeState,
    /// Why the node is not HEALTHY; empty when it is.
    pub reason: String,
    /// Whether this status run's probe got an answer.
    pub reachable: bool,
    /// Milliseconds since the node was last known alive (probe answer or heartbeat).
    pub last_seen_ms: u64,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    /// `used_bytes / capacity_bytes` in percent, one decimal.
    pub used_percent: f64,
    /// Chunk replicas the node holds (its own count).
    pub chunks: u64,
    /// The node's load figure (lower is better; see `NodeStatus::load`).
    pub load: u64,
    /// Checksum failures, I/O errors and rejected requests since it started.
    pub errors: u64,
}

/// Everything `status` shows; rendering is a pure function of this.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub verdict: Verdict,
    /// Why the verdict is not HEALTHY, most serious first; empty when it is.
    pub reasons: Vec<String>,
    pub master: String,
    pub cluster_id: String,
    pub replication: ReplicationPolicy,
    pub files: u64,
    pub dirs: u64,
    pub logical_bytes: u64,
    pub chunks: ChunkCounts,
    pub nodes: Vec<NodeReport>,
    /// Re-replication progress at the master (copies queued, running, done, rate).
    #[serde(default)]
    pub repair: RepairProgress,
}

/// The node facts the verdict depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    pub id: NodeId,
    pub state: NodeState,
    /// Answered its probe: it can serve data now.
    pub up: bool,
}

/// The cluster verdict and its reasons. Pure. `master_error` is `Some` when the master
/// could not be reached (then counts and nodes are unknown and ignored).
pub fn verdict(
    master_error: Option<&str>,
    chunks: &ChunkCounts,
    nodes: &[NodeFacts],
) -> (Verdict, Vec<String>) {
    if let Some(err) = master_error {
        return (
            Verdict::Unavailable,
            vec![format!("master unreachable: {err}")],
        );
    }
    let mut unavailable = Vec::new();
    let mut degraded = Vec::new();
    if chunks.lost > 0 {
        unavailable.push(format!("{} chunks lost (no current replica)", chunks.lost));
    }
    if nodes.is_empty() {
        unavailable.push("no chunkserver registered".to_string());
    } else if !nodes.iter().any(|n| n.up) {
        unavailable.push("no chunkserver is up".to_string());
    }
    // Draining and decommissioned are an admin's decisions, not faults: a drain never takes
    // a chunk below its goal, and a decommissioned node is meant to go away.
    for node in nodes.iter().filter(|n| {
        !matches!(
            n.state,
            NodeState::Healthy | NodeState::Draining | NodeState::Decommissioned
        )
    }) {
        degraded.push(format!("node {} is {}", node.id, node.state));
    }
    if chunks.under_replicated > 0 {
        degraded.push(format!(
            "{} chunks under-replicated",
            chunks.under_replicated
        ));
    }
    let verdict = if !unavailable.is_empty() {
        Verdict::Unavailable
    } else if !degraded.is_empty() {
        Verdict::Degraded
    } else {
        Verdict::Healthy
    };
    unavailable.extend(degraded);
    (verdict, unavailable)
}

/// The verdict once the master's notices are counted: each is a reason, and a cluster
/// with any is not HEALTHY (writes being refused are a fault an admin must act on). Pure.
pub fn with_notices(
    verdict: Verdict,
    mut reasons: Vec<String>,
    notices: &[ClusterNotice],
) -> (Verdict, Vec<String>) {
    if notices.is_empty() {
        return (verdict, reasons);
    }
    reasons.extend(notices.iter().map(ToString::to_string));
    let verdict = match verdict {
        Verdict::Healthy => Verdict::Degraded,
        other => other,
    };
    (verdict, reasons)
}

/// Builds the report from the master's summary (fetched at `summary_at`) and one probe per
/// node (missing probes count as "not probed"). Pure.
pub fn build_report(
    master: &str,
    summary: &ClusterSummary,
    summary_at: Instant,
    probes: &[(NodeId, Probe)],
    policy: &HealthPolicy,
    now: Instant,
) -> StatusReport {
    let mut nodes: Vec<NodeReport> = summary
        .nodes
        .iter()
        .map(|info| {
            let probe = probes
                .iter()
                .find(|(id, _)| *id == info.node)
                .map(|(_, p)| p);
            node_report(info, summary_at, probe, policy, now)
        })
        .collect();
    nodes.sort_by_key(|n| n.id);
    let chunks = ChunkCounts {
        total: summary.chunks,
        under_replicated: summary.under_replicated,
        lost: summary.lost,
    };
    let facts: Vec<NodeFacts> = nodes
        .iter()
        .map(|n| NodeFacts {
            id: n.id,
            state: n.state,
            up: n.reachable,
        })
        .collect();
    let (verdict, reasons) = verdict(None, &chunks, &facts);
    let (verdict, reasons) = with_notices(verdict, reasons, &summary.notices);
    StatusReport {
        verdict,
        reasons,
        master: master.to_string(),
        cluster_id: summary.cluster_id.to_hex(),
        replication: summary.replication,
        files: summary.files,
        dirs: summary.dirs,
        logical_bytes: summary.logical_bytes,
        chunks,
        nodes,
        repair: summary.repair,
    }
}

fn node_report(
    info: &NodeInfo,
    summary_at: Instant,
    probe: Option<&Probe>,
    policy: &HealthPolicy,
    now: Instant,
) -> NodeReport {
    let last_heard = summary_at
        .checked_sub(Duration::from_millis(info.last_seen_ms))
        .unwrap_or(summary_at);
    let mut history = ProbeHistory::seeded(last_heard);
    if let Some(probe) = probe {
        history.record(probe.clone());
    }
    let mut judged = health::assess(&history, policy, now);
    // A node that answers us but not the master gets no new chunks: not healthy.
    if judged.state == NodeState::Healthy && !info.online {
        judged = health::Health {
            state: NodeState::Suspect,
            reason: format!(
                "answers probes but the master has had no heartbeat for {}",
                health::human_duration(Duration::from_millis(info.last_seen_ms))
            ),
        };
    }
    // The master's record explains a node that does not answer: a planned stop, or a node
    // the sentinels declared dead (whose chunks are being re-replicated).
    if judged.state != NodeState::Healthy {
        match info.condition {
            NodeCondition::Maintenance => {
                judged = health::Health {
                    state: NodeState::Maintenance,
                    reason: "stopped for planned maintenance: no re-replication during the \
                             master's maintenance window"
                        .to_string(),
                }
            }
            NodeCondition::Dead => {
                judged = health::Health {
                    state: NodeState::Dead,
                    reason: format!("declared dead; chunks re-replicated ({})", judged.reason),
                }
            }
            NodeCondition::Draining => {
                judged.reason = format!("draining; {}", judged.reason);
            }
            NodeCondition::Up | NodeCondition::Decommissioned => {}
        }
    }
    // An admin's drain shows whatever the probes say of a node that answers; a drained node
    // is DECOMMISSIONED whether it still answers or was stopped.
    match info.condition {
        NodeCondition::Draining if judged.state == NodeState::Healthy => {
            judged = health::Health {
                state: NodeState::Draining,
                reason: "draining: takes no new chunks; its chunks are copied to other nodes \
                         (see the repair queue)"
                    .to_string(),
            }
        }
        NodeCondition::Decommissioned => {
            judged = health::Health {
                state: NodeState::Decommissioned,
                reason: "drained: no chunk needs it; it may be stopped".to_string(),
            }
        }
        _ => {}
    }
    let reachable = matches!(probe.map(|p| &p.outcome), Some(ProbeOutcome::Answered(_)));
    // The node's own answer is fresher than the master's copy of its last heartbeat.
    let status = history.latest_status().unwrap_or(&info.status);
    let last_seen = history
        .last_alive()
        .map(|t| now.saturating_duration_since(t))
        .unwrap_or_default();
    NodeReport {
        id: info.node,
        addr: info.addr.clone(),
        state: judged.state,
        reason: judged.reason,
        reachable,
        last_seen_ms: u64::try_from(last_seen.as_millis()).unwrap_or(u64::MAX),
        capacity_bytes: status.capacity_bytes,
        used_bytes: status.used_bytes,
        used_percent: used_percent(status.used_bytes, status.capacity_bytes),
        chunks: status.chunk_count,
        load: status.load(),
        errors: status.errors,
    }
}

/// Percent with one decimal; 0 for a node that offers no capacity.
fn used_percent(used: u64, capacity: u64) -> f64 {
    if capacity == 0 {
        return 0.0;
    }
    let permille = (u128::from(used) * 1000 + u128::from(capacity) / 2) / u128::from(capacity);
    permille as f64 / 10.0
}

/// Fetches the summary, probes every node once in parallel and builds the report. `Err`
/// means the master could not be reached; the caller reports it (verdict UNAVAILABLE).
pub async fn fetch_report<C: Cluster>(
    cluster: &C,
    master: &str,
    policy: &HealthPolicy,
) -> Result<StatusReport, FsError> {
    let summary = cluster.summary().await?;
    let summary_at = crate::clock();
    let probes = futures::future::join_all(summary.nodes.iter().map(|info| async move {
        let outcome = cluster.probe(info.node, &info.addr).await;
        (
            info.node,
            Probe {
                at: crate::clock(),
                outcome,
            },
        )
    }))
    .await;
    Ok(build_report(
        master,
        &summary,
        summary_at,
        &probes,
        policy,
        crate::clock(),
    ))
}

/// Serializes a node id as its `n<hex>` text and accepts that or plain decimal back.
pub(crate) mod node_id_text {
    use common::NodeId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &NodeId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
        let text = String::deserialize(d)?;
        NodeId::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid node id {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::ClusterId;
    use common::types::NodeStatus;

    fn facts(id: u64, state: NodeState, up: bool) -> NodeFacts {
        NodeFacts {
            id: NodeId(id),
            state,
            up,
        }
    }

    fn counts(total: u64, under_replicated: u64, lost: u64) -> ChunkCounts {
        ChunkCounts {
            total,
            under_replicated,
            lost,
        }
    }

    #[test]
    fn verdict_table() {
        use NodeState::{Dead, Suspect};
        use Verdict::{Degraded, Unavailable};
        const H: NodeState = NodeState::Healthy;
        let healthy3 = [facts(1, H, true), facts(2, H, true), facts(3, H, true)];
        let one_suspect = [
            facts(1, H, true),
            facts(2, Suspect, false),
            facts(3, H, true),
        ];
        let all_down = [facts(1, Dead, false), facts(2, Suspect, false)];
        let drained = [
            facts(1, H, true),
            facts(2, NodeState::Draining, true),
            facts(3, NodeState::Decommissioned, false),
        ];
        type Row<'a> = (
            &'a str,
            Option<&'a str>,
            ChunkCounts,
            &'a [NodeFacts],
            Verdict,
            Vec<&'a str>,
        );
        let table: Vec<Row> = vec![
            (
                "all good",
                None,
                counts(10, 0, 0),
                &healthy3,
                Verdict::Healthy,
                vec![],
            ),
            (
                "empty cluster with nodes",
                None,
                counts(0, 0, 0),
                &healthy3,
                Verdict::Healthy,
                vec![],
            ),
            (
                "master unreachable wins over everything",
                Some("connection refused"),
                counts(0, 0, 0),
                &healthy3,
                Unavailable,
                vec!["master unreachable: connection refused"],
            ),
            (
                "under-replicated",
                None,
                counts(10, 4, 0),
                &healthy3,
                Degraded,
                vec!["4 chunks under-replicated"],
            ),
            (
                "a suspect node",
                None,
                counts(10, 0, 0),
                &one_suspect,
                Degraded,
                vec!["node n2 is SUSPECT"],
            ),
            (
                "lost chunks",
                None,
                counts(10, 2, 1),
                &healthy3,
                Unavailable,
                vec![
                    "1 chunks lost (no current replica)",
                    "2 chunks under-replicated",
                ],
            ),
            (
                "no node up",
                None,
                counts(10, 0, 0),
                &all_down,
                Unavailable,
                vec![
                    "no chunkserver is up",
                    "node n1 is DEAD",
                    "node n2 is SUSPECT",
                ],
            ),
            (
                "draining and decommissioned are no fault",
                None,
                counts(10, 0, 0),
                &drained,
                Verdict::Healthy,
                vec![],
            ),
            (
                "no node registered",
                None,
                counts(0, 0, 0),
                &[],
                Unavailable,
                vec!["no chunkserver registered"],
            ),
        ];
        for (case, master_error, chunks, nodes, expected, reasons) in table {
            let (got, got_reasons) = verdict(master_error, &chunks, nodes);
            assert_eq!(got, expected, "{case}");
            assert_eq!(got_reasons, reasons, "{case}");
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Verdict::Healthy.exit_code(), 0);
        assert_eq!(Verdict::Degraded.exit_code(), 1);
        assert_eq!(Verdict::Unavailable.exit_code(), 2);
    }

    fn info(id: u64, last_seen_ms: u64, online: bool) -> NodeInfo {
        NodeInfo {
            node: NodeId(id),
            addr: format!("127.0.0.1:{}", 7000 + id),
            last_seen_ms,
            online,
            status: NodeStatus {
                capacity_bytes: 1000,
                used_bytes: 100,
                chunk_count: 1,
                ..NodeStatus::default()
            },
            replicas: 1,
            condition: Default::default(),
        }
    }

    fn summary(nodes: Vec<NodeInfo>) -> ClusterSummary {
        ClusterSummary {
            cluster_id: ClusterId([0xab; 16]),
            replication: ReplicationPolicy { n: 3, w: 3, r: 1 },
            files: 5,
            dirs: 2,
            chunks: 7,
            under_replicated: 0,
            lost: 0,
            logical_bytes: 12345,
            nodes,
            repair: Default::default(),
            writes_refused_no_space: 0,
            notices: Vec::new(),
        }
    }

    #[test]
    fn notices_are_reasons_and_never_healthy() {
        let refused = ClusterNotice::WritesRefused {
            refusals: 3,
            last_ms: 2_500,
            detail: "a new chunk needs 2 nodes".into(),
        };
        let text = "writes refused for lack of space (3 since the master started, last 2s ago): \
                    a new chunk needs 2 nodes";
        // (verdict before, notices) -> verdict after, reasons after
        let table = [
            (Verdict::Healthy, vec![], Verdict::Healthy, vec![]),
            (
                Verdict::Healthy,
                vec![refused.clone()],
                Verdict::Degraded,
                vec![text],
            ),
            (
                Verdict::Unavailable,
                vec![refused],
                Verdict::Unavailable,
                vec!["x", text],
            ),
        ];
        for (before, notices, want, want_reasons) in table {
            let reasons = if before == Verdict::Unavailable {
                vec!["x".to_string()]
            } else {
                vec![]
            };
            let (got, got_reasons) = with_notices(before, reasons, &notices);
            assert_eq!(got, want, "{before:?} {notices:?}");
            assert_eq!(got_reasons, want_reasons, "{before:?}");
        }
    }

    const POLICY: HealthPolicy = HealthPolicy {
        stale_after: Duration::from_millis(3_000),
        dead_after: Duration::from_millis(10_000),
    };

    #[test]
    fn report_from_summary_and_probes() {
        let t0 = Instant::now() + Duration::from_secs(3600);
        let answered = NodeStatus {
            capacity_bytes: 2000,
            used_bytes: 500,
            chunk_count: 9,
            in_flight: 2,
            latency_us: 300,
            errors: 1,
            ..NodeStatus::default()
        };
        let probes = vec![
            (
                NodeId(3),
                Probe {
                    at: t0,
                    outcome: ProbeOutcome::Answered(answered),
                },
            ),
            (
                NodeId(1),
                Probe {
                    at: t0,
                    outcome: ProbeOutcome::Failed(FsError::Unavailable("refused".into())),
                },
            ),
            (
                NodeId(2),
                Probe {
                    at: t0,
                    outcome: ProbeOutcome::Failed(FsError::TimedOut("probe".into())),
                },
            ),
            (
                NodeId(4),
                Probe {
                    at: t0,
                    outcome: ProbeOutcome::Answered(NodeStatus::default()),
                },
            ),
        ];
        // Node 1 was heard 2 s ago, node 2 a minute ago, node 4 answers us but not the master.
        let s = summary(vec![
            info(3, 100, true),
            info(1, 2_000, true),
            info(2, 60_000, false),
            info(4, 8_000, false),
        ]);
        let report = build_report("m:1", &s, t0, &probes, &POLICY, t0);
        let ids: Vec<u64> = report.nodes.iter().map(|n| n.id.0).collect();
        assert_eq!(ids, vec![1, 2, 3, 4], "sorted by id");
        let [n1, n2, n3, n4] = &report.nodes[..] else {
            panic!("four nodes expected");
        };
        assert_eq!((n1.state, n1.reachable), (NodeState::Suspect, false));
        assert_eq!(n1.last_seen_ms, 2_000);
        assert_eq!(
            n1.capacity_bytes, 1000,
            "master's copy when the probe failed"
        );
        assert_eq!((n2.state, n2.reachable), (NodeState::Dead, false));
        assert_eq!(n3.state, NodeState::Healthy);
        assert_eq!(n3.reason, "");
        assert_eq!(
            (
                n3.capacity_bytes,
                n3.used_percent,
                n3.chunks,
                n3.load,
                n3.errors
            ),
            (2000, 25.0, 9, 2300, 1)
        );
        assert_eq!(n3.last_seen_ms, 0);
        assert_eq!(n4.state, NodeState::Suspect);
        assert!(n4.reason.contains("no heartbeat for 8.0s"), "{}", n4.reason);
        assert_eq!(report.verdict, Verdict::Degraded);
        assert_eq!(report.chunks.total, 7);
        assert_eq!(report.cluster_id, "ab".repeat(16));
    }

    #[test]
    fn drain_states_come_from_the_master() {
        let t0 = Instant::now();
        let answered = |id: u64| {
            (
                NodeId(id),
                Probe {
                    at: t0,
                    outcome: ProbeOutcome::Answered(NodeStatus::default()),
                },
            )
        };
        let refused = |id: u64| {
            (
                NodeId(id),
                Probe {
                    at: t0,
                    outcome: ProbeOutcome::Refused(FsError::Io("refused".into())),
                },
            )
        };
        let with = |id: u64, online: bool, condition: NodeCondition| NodeInfo {
            condition,
            ..info(id, if online { 100 } else { 60_000 }, online)
        };
        let s = summary(vec![
            with(1, true, NodeCondition::Up),
            with(2, true, NodeCondition::Draining),
            with(3, true, NodeCondition::Decommissioned),
            // Decommissioned and then stopped.
            with(4, false, NodeCondition::Decommissioned),
            // Draining but crashed: the probes' verdict shows.
            with(5, false, NodeCondition::Draining),
        ]);
        let probes = [
            answered(1),
            answered(2),
            answered(3),
            refused(4),
            refused(5),
        ];
        let report = build_report("m:1", &s, t0, &probes, &POLICY, t0);
        let states: Vec<NodeState> = report.nodes.iter().map(|n| n.state).collect();
        assert_eq!(
            states,
            vec![
                NodeState::Healthy,
                NodeState::Draining,
                NodeState::Decommissioned,
                NodeState::Decommissioned,
                NodeState::Dead,
            ]
        );
        assert!(
            report.nodes[4].reason.starts_with("draining; "),
            "{}",
            report.nodes[4].reason
        );
        assert_eq!(report.reasons, vec!["node n5 is DEAD"]);
    }

    #[test]
    fn used_percent_rounds_and_survives_zero() {
        assert_eq!(used_percent(0, 0), 0.0);
        assert_eq!(used_percent(1, 3), 33.3);
        assert_eq!(used_percent(2, 3), 66.7);
        assert_eq!(used_percent(u64::MAX, u64::MAX), 100.0);
    }

    #[test]
    fn node_ids_serialize_as_text() {
        #[derive(Serialize, Deserialize)]
        struct W {
            #[serde(with = "node_id_text")]
            id: NodeId,
        }
        let json = serde_json::to_string(&W { id: NodeId(31) }).expect("serializes");
        assert_eq!(json, r#"{"id":"n1f"}"#);
        let back: W = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.id, NodeId(31));
        assert!(serde_json::from_str::<W>(r#"{"id":"bogus"}"#).is_err());
    }
}

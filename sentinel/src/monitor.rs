//! The sentinel's worker: learns the nodes from the master, probes each one every interval,
//! keeps its history, judges it with [`crate::health::assess`] and logs every transition.
//!
//! This loop only does I/O and timing; every decision is in `health.rs`. Its outputs: a
//! `watch` channel with the current view of every node, a `broadcast` channel of
//! transitions, and (unless `report = false`) verdicts to the master: every round, a dead
//! vote for each node judged DEAD, and "alive" for a node the master holds dead that answers
//! again. Votes are repeated rather than sent once so that a master restart or a lost call
//! costs one round, and the master can expire the votes of a sentinel that went away.

use crate::cluster::Cluster;
use crate::health::{self, Health, HealthPolicy, NodeState, Probe, ProbeHistory};
use common::NodeId;
use common::config::SentinelConfig;
use common::types::{NodeCondition, NodeInfo, NodeStatus};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// How often the node list is re-read from the master once it is known. Registration of a
/// new chunkserver is rare; a `cluster_summary` per probe interval would load the master
/// with counting queries for nothing.
pub const NODE_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// The longest a probe or a summary may take. Probes must be short so that one stuck node
/// cannot delay the probes of the others past the next interval.
pub const MAX_PROBE_DEADLINE: Duration = Duration::from_secs(1);
pub const MASTER_DEADLINE: Duration = Duration::from_secs(3);

/// Transitions kept for slow subscribers; a subscriber further behind loses the oldest
/// (and can resynchronise from the watch view).
const TRANSITION_BACKLOG: usize = 256;

/// The probe deadline for a probe interval: the interval itself, capped at
/// [`MAX_PROBE_DEADLINE`], so that a round of probes normally ends before the next one.
pub fn probe_deadline(probe_interval: Duration) -> Duration {
    probe_interval.min(MAX_PROBE_DEADLINE)
}

/// One node as the worker currently sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub addr: String,
    pub health: Health,
    /// The newest self-report the node answered with.
    pub status: Option<NodeStatus>,
}

/// Everything the worker knows, republished after every round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthView {
    /// True once the master answered at least once (the node list is real).
    pub master_reached: bool,
    /// Completed probe rounds.
    pub rounds: u64,
    pub nodes: BTreeMap<NodeId, NodeView>,
}

/// A node changed state. `from` is `None` at the first judgement of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub node: NodeId,
    pub addr: String,
    pub from: Option<NodeState>,
    pub to: NodeState,
    pub reason: String,
}

struct Tracked {
    addr: String,
    history: ProbeHistory,
    health: Option<Health>,
    /// The node's condition at the master, from the last summary or report answer.
    condition: NodeCondition,
}

/// The health worker. Build it, subscribe to its outputs, then [`Sentinel::run`] it.
pub struct Sentinel<C> {
    cluster: C,
    policy: HealthPolicy,
    probe_interval: Duration,
    nodes: BTreeMap<NodeId, Tracked>,
    master_ok: Option<bool>,
    master_reached: bool,
    view_tx: watch::Sender<Arc<HealthView>>,
    transitions_tx: broadcast::Sender<Transition>,
    rounds: u64,
    /// Probe addresses that replace the registered ones (`probe_addrs` in the config).
    probe_addrs: BTreeMap<NodeId, String>,
    report: bool,
    /// Whether the last report to the master failed (log changes, not every failure).
    report_failing: bool,
}

impl<C: Cluster> Sentinel<C> {
    /// Checks the configuration and builds the worker. Refuses intervals that would make
    /// the loop spin or a node die before it could be probed twice.
    pub fn new(config: &SentinelConfig, cluster: C) -> anyhow::Result<Sentinel<C>> {
        if config.probe_interval_ms == 0 {
            anyhow::bail!("probe_interval_ms must be at least 1");
        }
        if config.dead_after_ms < config.probe_interval_ms.saturating_mul(2) {
            anyhow::bail!(
                "dead_after_ms ({}) must be at least twice probe_interval_ms ({}), \
                 so that one late probe never declares a node dead",
                config.dead_after_ms,
                config.probe_interval_ms
            );
        }
        let mut probe_addrs = BTreeMap::new();
        for (node, addr) in &config.probe_addrs {
            let id = NodeId::parse(node).ok_or_else(|| {
                anyhow::anyhow!("probe_addrs: {node:?} is not a node id (like \"n2\")")
            })?;
            probe_addrs.insert(id, addr.clone());
        }
        let (view_tx, _) = watch::channel(Arc::new(HealthView::default()));
        let (transitions_tx, _) = broadcast::channel(TRANSITION_BACKLOG);
        Ok(Sentinel {
            cluster,
            policy: HealthPolicy::from_config(config),
            probe_interval: Duration::from_millis(config.probe_interval_ms),
            nodes: BTreeMap::new(),
            master_ok: None,
            master_reached: false,
            view_tx,
            transitions_tx,
            rounds: 0,
            probe_addrs,
            report: config.report,
            report_failing: false,
        })
    }

    /// The current view of every node, updated after each probe round.
    pub fn view(&self) -> watch::Receiver<Arc<HealthView>> {
        self.view_tx.subscribe()
    }

    /// Every state change, as it happens.
    pub fn transitions(&self) -> broadcast::Receiver<Transition> {
        self.transitions_tx.subscribe()
    }

    /// Probes until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.probe_interval);
        // After a slow round, keep the spacing rather than firing a burst of late probes.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_refresh = crate::clock();
        loop {
            // Cancelling a round at shutdown is safe: state changes only after all of a
            // round's probes are back, synchronously.
            let round = async {
                ticker.tick().await;
                let now = crate::clock();
                if self.nodes.is_empty() || now >= next_refresh {
                    self.refresh_nodes().await;
                    next_refresh = crate::clock() + NODE_REFRESH_INTERVAL;
                }
                self.probe_round().await;
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = round => {}
            }
        }
        tracing::info!("sentinel stopped");
    }

    async fn refresh_nodes(&mut self) {
        match self.cluster.summary().await {
            Ok(summary) => {
                if self.master_ok != Some(true) {
                    tracing::info!(nodes = summary.nodes.len(), "master reached");
                }
                self.master_ok = Some(true);
                self.master_reached = true;
                self.update_nodes(&summary.nodes, crate::clock());
            }
            Err(err) => {
                // Log the change, not every failed attempt; keep probing the known nodes.
                if self.master_ok != Some(false) {
                    tracing::warn!(error = %err, "master unreachable; probing known nodes");
                }
                self.master_ok = Some(false);
            }
        }
    }

    fn update_nodes(&mut self, infos: &[NodeInfo], now: Instant) {
        for info in infos {
            if let Some(tracked) = self.nodes.get_mut(&info.node) {
                tracked.condition = info.condition;
            }
            match self.nodes.get_mut(&info.node) {
                Some(tracked) if tracked.addr != info.addr => {
                    tracing::info!(node = %info.node, old = %tracked.addr, new = %info.addr,
                        "node address changed");
                    tracked.addr = info.addr.clone();
                }
                Some(_) => {}
                None => {
                    tracing::info!(node = %info.node, addr = %info.addr, "watching node");
                    let last_heard = now
                        .checked_sub(Duration::from_millis(info.last_seen_ms))
                        .unwrap_or(now);
                    self.nodes.insert(
                        info.node,
                        Tracked {
                            addr: info.addr.clone(),
                            history: ProbeHistory::seeded(last_heard),
                            health: None,
                            condition: info.condition,
                        },
                    );
                }
            }
        }
        self.nodes.retain(|id, tracked| {
            let known = infos.iter().any(|i| i.node == *id);
            if !known {
                tracing::info!(node = %id, addr = %tracked.addr, "node removed by the master; no longer watched");
            }
            known
        });
    }

    async fn probe_round(&mut self) {
        let cluster = &self.cluster;
        let probes = futures::future::join_all(self.nodes.iter().map(|(id, tracked)| {
            let id = *id;
            let addr = self
                .probe_addrs
                .get(&id)
                .cloned()
                .unwrap_or_else(|| tracked.addr.clone());
            async move {
                let outcome = cluster.probe(id, &addr).await;
                (
                    id,
                    Probe {
                        at: crate::clock(),
                        outcome,
                    },
                )
            }
        }))
        .await;
        let now = crate::clock();
        for (id, probe) in probes {
            let Some(tracked) = self.nodes.get_mut(&id) else {
                continue;
            };
            tracked.history.record(probe);
            let judged = health::assess(&tracked.history, &self.policy, now);
            let from = tracked.health.as_ref().map(|h| h.state);
            if from != Some(judged.state) {
                let transition = Transition {
                    node: id,
                    addr: tracked.addr.clone(),
                    from,
                    to: judged.state,
                    reason: judged.reason.clone(),
                };
                log_transition(&transition);
                // No subscriber is fine: the transition is logged either way.
                let _ = self.transitions_tx.send(transition);
            }
            tracked.health = Some(judged);
        }
        self.rounds += 1;
        self.publish();
        if self.report {
            self.report_verdicts().await;
        }
    }

    /// Sends this round's verdicts to the master: a dead vote per DEAD node, "alive" for
    /// each node the master holds dead that answers us.
    async fn report_verdicts(&mut self) {
        let reports: Vec<(NodeId, bool)> = self
            .nodes
            .iter()
            .filter_map(|(id, t)| match t.health.as_ref().map(|h| h.state) {
                Some(NodeState::Dead) => Some((*id, false)),
                Some(NodeState::Healthy) if t.condition == NodeCondition::Dead => Some((*id, true)),
                _ => None,
            })
            .collect();
        if reports.is_empty() {
            return;
        }
        let cluster = &self.cluster;
        let answers = futures::future::join_all(
            reports
                .iter()
                .map(|&(id, alive)| async move { (id, alive, cluster.report(id, alive).await) }),
        )
        .await;
        let mut failed = None;
        for (id, alive, answer) in answers {
            match answer {
                Ok(condition) => {
                    if let Some(t) = self.nodes.get_mut(&id) {
                        if t.condition != condition {
                            tracing::info!(node = %id, alive, condition = condition.as_str(),
                                "master recorded the node's condition");
                        }
                        t.condition = condition;
                    }
                }
                Err(err) => failed = Some((id, err)),
            }
        }
        match failed {
            Some((id, err)) if !self.report_failing => {
                tracing::warn!(node = %id, error = %err, "could not report a verdict to the master; retrying every round");
                self.report_failing = true;
            }
            Some(_) => {}
            None => self.report_failing = false,
        }
    }

    fn publish(&self) {
        let nodes = self
            .nodes
            .iter()
            .filter_map(|(id, tracked)| {
                let health = tracked.health.clone()?;
                Some((
                    *id,
                    NodeView {
                        addr: tracked.addr.clone(),
                        health,
                        status: tracked.history.latest_status().cloned(),
                    },
                ))
            })
            .collect();
        self.view_tx.send_replace(Arc::new(HealthView {
            master_reached: self.master_reached,
            rounds: self.rounds,
            nodes,
        }));
    }
}

fn log_transition(t: &Transition) {
    let from = t.from.map_or("NEW", NodeState::as_str);
    match t.to {
        NodeState::Healthy => {
            tracing::info!(node = %t.node, addr = %t.addr, "node {from} -> HEALTHY")
        }
        NodeState::Suspect => {
            tracing::warn!(node = %t.node, addr = %t.addr, reason = %t.reason, "node {from} -> SUSPECT")
        }
        NodeState::Dead => {
            tracing::error!(node = %t.node, addr = %t.addr, reason = %t.reason, "node {from} -> DEAD")
        }
        NodeState::Maintenance | NodeState::Draining | NodeState::Decommissioned => {
            tracing::info!(node = %t.node, addr = %t.addr, "node {from} -> {}", t.to)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::ProbeOutcome;
    use common::types::{ClusterSummary, ReplicationPolicy};
    use common::{ClusterId, FsError, FsResult};
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// An in-memory cluster: a fixed node list; nodes in `down` fail their probes.
    #[derive(Default)]
    struct FakeCluster {
        nodes: Vec<NodeInfo>,
        master_down: bool,
        down: Mutex<HashSet<NodeId>>,
        /// Every verdict reported, in order.
        reports: Mutex<Vec<(NodeId, bool)>>,
    }

    impl Cluster for Arc<FakeCluster> {
        async fn summary(&self) -> FsResult<ClusterSummary> {
            if self.master_down {
                return Err(FsError::Unavailable("master down".into()));
            }
            Ok(ClusterSummary {
                cluster_id: ClusterId([1; 16]),
                replication: ReplicationPolicy { n: 3, w: 3, r: 1 },
                files: 0,
                dirs: 1,
                chunks: 0,
                under_replicated: 0,
                lost: 0,
                logical_bytes: 0,
                nodes: self.nodes.clone(),
                repair: Default::default(),
                writes_refused_no_space: 0,
                notices: Vec::new(),
            })
        }

        async fn report(&self, node: NodeId, alive: bool) -> FsResult<NodeCondition> {
            self.reports.lock().expect("lock").push((node, alive));
            Ok(if alive {
                NodeCondition::Up
            } else {
                NodeCondition::Dead
            })
        }

        async fn probe(&self, node: NodeId, _addr: &str) -> ProbeOutcome {
            if self.down.lock().expect("lock").contains(&node) {
                ProbeOutcome::Failed(FsError::Unavailable("connection refused".into()))
            } else {
                ProbeOutcome::Answered(NodeStatus::default())
            }
        }
    }

    fn node(id: u64) -> NodeInfo {
        NodeInfo {
            node: NodeId(id),
            addr: format!("127.0.0.1:{}", 7000 + id),
            last_seen_ms: 0,
            online: true,
            status: NodeStatus::default(),
            replicas: 0,
            condition: NodeCondition::Up,
        }
    }

    fn config() -> SentinelConfig {
        SentinelConfig {
            master: "fake".into(),
            probe_interval_ms: 100,
            dead_after_ms: 1_000,
            shared: common::config::SharedConfig::default(),
            probe_addrs: Default::default(),
            report: true,
        }
    }

    async fn next_transition(rx: &mut broadcast::Receiver<Transition>) -> Transition {
        tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("a transition within the deadline")
            .expect("channel open")
    }

    #[test]
    fn rejects_bad_intervals() {
        let cluster = Arc::new(FakeCluster::default());
        let mut bad = config();
        bad.probe_interval_ms = 0;
        assert!(Sentinel::new(&bad, cluster.clone()).is_err());
        let mut bad = config();
        bad.dead_after_ms = 150;
        let err = Sentinel::new(&bad, cluster).err().expect("refused");
        assert!(err.to_string().contains("dead_after_ms"), "{err}");
    }

    // Paused time: the tokio clock jumps ahead whenever every task waits, so seconds of
    // probing take milliseconds and the deadlines above are virtual.
    #[tokio::test(start_paused = true)]
    async fn node_goes_suspect_then_dead_then_recovers() {
        let cluster = Arc::new(FakeCluster {
            nodes: vec![node(1), node(2)],
            ..FakeCluster::default()
        });
        let sentinel = Sentinel::new(&config(), cluster.clone()).expect("valid config");
        let mut transitions = sentinel.transitions();
        let view = sentinel.view();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(sentinel.run(async {
            let _ = stop_rx.await;
        }));

        let mut first = [
            next_transition(&mut transitions).await,
            next_transition(&mut transitions).await,
        ];
        first.sort_by_key(|t| t.node);
        for (t, id) in first.iter().zip([1, 2]) {
            assert_eq!(
                (t.node, t.from, t.to),
                (NodeId(id), None, NodeState::Healthy)
            );
        }

        cluster.down.lock().expect("lock").insert(NodeId(2));
        let started = tokio::time::Instant::now();
        let t = next_transition(&mut transitions).await;
        assert_eq!(
            (t.node, t.from, t.to),
            (NodeId(2), Some(NodeState::Healthy), NodeState::Suspect)
        );
        assert!(t.reason.contains("connection refused"), "{}", t.reason);
        let t = next_transition(&mut transitions).await;
        assert_eq!(
            (t.node, t.from, t.to),
            (NodeId(2), Some(NodeState::Suspect), NodeState::Dead)
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took <= Duration::from_millis(1_300),
            "DEAD after about dead_after, took {took:?}"
        );

        {
            let current = view.borrow();
            assert!(current.master_reached);
            assert_eq!(current.nodes[&NodeId(1)].health.state, NodeState::Healthy);
            assert_eq!(current.nodes[&NodeId(2)].health.state, NodeState::Dead);
        }

        // DEAD was voted to the master; node 1 never was.
        {
            let reports = cluster.reports.lock().expect("lock");
            assert!(reports.contains(&(NodeId(2), false)), "{reports:?}");
            assert!(reports.iter().all(|(n, _)| *n == NodeId(2)), "{reports:?}");
        }

        cluster.down.lock().expect("lock").clear();
        let t = next_transition(&mut transitions).await;
        assert_eq!(
            (t.node, t.from, t.to),
            (NodeId(2), Some(NodeState::Dead), NodeState::Healthy)
        );
        // The master held it dead (the fake answers Dead to a vote): it is told it is alive.
        tokio::time::timeout(Duration::from_secs(30), async {
            while !cluster
                .reports
                .lock()
                .expect("lock")
                .contains(&(NodeId(2), true))
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("alive reported within the deadline");
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("worker stops at shutdown")
            .expect("worker did not panic");
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_master_is_not_fatal() {
        let cluster = Arc::new(FakeCluster {
            nodes: vec![node(1)],
            master_down: true,
            ..FakeCluster::default()
        });
        let sentinel = Sentinel::new(&config(), cluster).expect("valid config");
        let mut view = sentinel.view();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(sentinel.run(async {
            let _ = stop_rx.await;
        }));
        // Several rounds pass; the worker keeps going without nodes and without panicking.
        tokio::time::timeout(Duration::from_secs(30), view.wait_for(|v| v.rounds >= 5))
            .await
            .expect("rounds within the deadline")
            .expect("worker alive");
        {
            let current = view.borrow();
            assert!(!current.master_reached);
            assert!(current.nodes.is_empty());
        }
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("worker stops at shutdown")
            .expect("worker did not panic");
    }
}

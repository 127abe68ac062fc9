//! Cluster control: what the master knows and decides about its chunkservers. The node
//! registry (liveness, last reports, space reserved by placements), node conditions (dead,
//! maintenance, draining, decommissioned) and the sentinels' dead votes, and the
//! replication state the repair worker runs on (copies running, progress, limits).
//!
//! Condition changes are decided by one pure function, [`condition::next`]; this room
//! gathers its inputs (the current condition, the live votes, the time), records a change
//! durably in the store, then in memory, logs it and wakes the repair worker. Plans come
//! from the pure planners of `crate::plan`; [`worker`] carries them out.
//!
//! The RPC service only translates requests into calls here. This module must never hold a
//! namespace rule, and never hold a lock across a store call or an await.

pub mod condition;
pub mod forget;
pub mod progress;
mod replication;
pub mod worker;

use crate::blocking::blocking;
use crate::metrics::RepairMetrics;
use crate::plan::NodeView;
use crate::plan::repair::Limits;
use crate::registry::Registry;
use crate::store::MetaStore;
use common::config::MasterConfig;
use common::types::{NodeCondition, NodeStatus, RepairProgress, Timespec};
use common::{FsError, FsResult, NodeId};
use condition::{Change, Event, Policy, Votes};
use parking_lot::{Mutex, MutexGuard};
use progress::RepairState;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::info_span;

pub struct ClusterControl {
    store: Arc<dyn MetaStore>,
    registry: Mutex<Registry>,
    /// Node conditions (a mirror of the store's, which is the truth after a restart) and
    /// since when, on this master's clock. A node without an entry is up.
    conditions: Mutex<HashMap<NodeId, (NodeCondition, Instant)>>,
    votes: Mutex<Votes>,
    policy: Policy,
    dead_vote_window: Duration,
    /// The cluster's replication goal N (a file's own goal overrides it in the store).
    goal: u32,
    repair_limits: Limits,
    repair_bytes_per_sec: u64,
    /// The repair worker's running copies and progress counters.
    repair: Mutex<RepairState>,
    /// Wakes the repair worker before its next tick (a node declared dead, a copy done).
    repair_wake: Arc<Notify>,
    /// Repair counters the metrics endpoint exports.
    repair_metrics: RepairMetrics,
    /// `rebalance_threshold_percent` (0: the rebalancer is off).
    rebalance_threshold: u32,
}

impl ClusterControl {
    /// Loads the known nodes (offline until they heartbeat) and their recorded conditions.
    /// Blocking: reads the store.
    pub fn new(store: Arc<dyn MetaStore>, config: &MasterConfig) -> FsResult<ClusterControl> {
        let now = Instant::now();
        let mut registry = Registry::new(Duration::from_millis(config.node_offline_ms));
        for (node, addr) in store.list_nodes()? {
            registry.load(node, addr);
        }
        // A maintenance window restarts with the master: its clock is this process's.
        let conditions = store
            .node_conditions()?
            .into_iter()
            .map(|(node, condition, _)| (node, (condition, now)))
            .collect();
        Ok(ClusterControl {
            store,
            registry: Mutex::new(registry),
            conditions: Mutex::new(conditions),
            votes: Mutex::new(Votes::default()),
            policy: Policy {
                dead_quorum: config.dead_quorum.max(1) as usize,
                maintenance_window: Duration::from_millis(config.maintenance_window_ms),
            },
            dead_vote_window: Duration::from_millis(config.dead_vote_window_ms),
            goal: config.policy().n,
            repair_limits: Limits {
                max_copies: config.repair_max_copies.max(1) as usize,
                max_per_node: config.repair_max_copies_per_node.max(1) as usize,
            },
            repair_bytes_per_sec: config.repair_bytes_per_sec,
            repair: Mutex::new(RepairState::default()),
            repair_wake: Arc::new(Notify::new()),
            repair_metrics: RepairMetrics::default(),
            rebalance_threshold: config.rebalance_threshold_percent,
        })
    }

    /// The repair counters (exported as `mosaic_master_repair_*`).
    pub fn repair_metrics(&self) -> &RepairMetrics {
        &self.repair_metrics
    }

    /// Every known node as seen now, with its condition.
    pub fn views(&self) -> Vec<NodeView> {
        let conditions = self.conditions();
        self.registry.lock().views(Instant::now(), &conditions)
    }

    /// [`Self::views`] for the store's write path: a node that is not up is shown offline,
    /// so it takes no writes to the chunks it holds (the store grants a rewrite only to
    /// online replicas); placement refuses it new chunks by its condition as well
    /// (`plan::takes_chunks`).
    pub fn write_views(&self) -> Vec<NodeView> {
        let mut views = self.views();
        for v in &mut views {
            if v.condition != NodeCondition::Up {
                v.online = false;
            }
        }
        views
    }

    /// The registry, for the placement handler's reservations. Never held across an await.
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock()
    }

    pub fn knows(&self, node: NodeId) -> bool {
        self.registry.lock().knows(node)
    }

    /// Every recorded condition other than up.
    fn conditions(&self) -> HashMap<NodeId, NodeCondition> {
        self.conditions
            .lock()
            .iter()
            .map(|(n, (c, _))| (*n, *c))
            .collect()
    }

    pub fn condition_of(&self, node: NodeId) -> NodeCondition {
        self.conditions
            .lock()
            .get(&node)
            .map_or(NodeCondition::Up, |(c, _)| *c)
    }

    /// The progress report of re-replication as of now.
    pub fn repair_progress(&self) -> RepairProgress {
        self.repair.lock().snapshot(Instant::now())
    }

    /// A node registered (its id recorded by the store) at `addr`; its report may announce
    /// a graceful stop or the end of one.
    pub async fn registered(&self, node: NodeId, addr: String, status: NodeStatus) {
        let stopping = status.draining;
        self.registry
            .lock()
            .registered(node, addr, status, Instant::now());
        self.node_reported(node, stopping).await;
    }

    /// A heartbeat; false when the node is unknown (it must register again).
    pub async fn heartbeat(&self, node: NodeId, status: NodeStatus) -> bool {
        let stopping = status.draining;
        let known = self.registry.lock().heartbeat(node, status, Instant::now());
        if known {
            self.node_reported(node, stopping).await;
        }
        known
    }

    /// A node's own report: `stopping` (a graceful stop) starts its maintenance window; a
    /// node that reports in without it after a maintenance stop is back.
    async fn node_reported(&self, node: NodeId, stopping: bool) {
        // A store failure is logged by `blocking`; the next heartbeat tries again.
        let _ = self.decide(node, Event::Reported { stopping }, 0).await;
    }

    /// A sentinel's health report on `node`: `alive` withdraws its dead vote (and revives a
    /// node declared dead); otherwise its vote is counted and a quorum declares the node
    /// dead. Returns the node's condition afterwards.
    pub async fn report_health(
        &self,
        node: NodeId,
        voter: String,
        alive: bool,
    ) -> FsResult<NodeCondition> {
        if !self.knows(node) {
            return Err(FsError::NotFound);
        }
        if alive {
            if self.votes.lock().withdraw(node, &voter) {
                tracing::info!("dead vote withdrawn");
            }
            self.decide(node, Event::SeenAlive, 0).await?;
            return Ok(self.condition_of(node));
        }
        let votes = self
            .votes
            .lock()
            .vote_dead(node, voter, Instant::now(), self.dead_vote_window);
        let change = self.decide(node, Event::VotedDead, votes).await?;
        if change.is_none() && self.condition_of(node) == NodeCondition::Up {
            tracing::info!(
                voters = votes,
                quorum = self.policy.dead_quorum,
                "dead vote recorded, no quorum yet"
            );
        }
        Ok(self.condition_of(node))
    }

    /// An admin's drain (`drain`) or undrain of `node`; returns its condition afterwards.
    pub async fn set_drain(&self, node: NodeId, drain: bool) -> FsResult<NodeCondition> {
        if !self.knows(node) {
            return Err(FsError::NotFound);
        }
        self.decide(node, Event::DrainRequested(drain), 0).await?;
        Ok(self.condition_of(node))
    }

    /// An admin's forget of `node` (`mosaic-sentinel forget`): allowed by [`forget::check`]
    /// only for a stopped dead or decommissioned node that holds no last copy. Removes it
    /// from the store (for good: its id can never register again), then from the registry,
    /// the conditions and the votes. Returns the replica rows dropped.
    pub async fn forget(&self, node: NodeId) -> FsResult<u64> {
        let Some(view) = self.views().into_iter().find(|v| v.node == node) else {
            return Err(FsError::NotFound);
        };
        let span = info_span!("forget_node", %node);
        let last_copies = blocking(&self.store, span.clone(), move |s| s.last_copies(node)).await?;
        forget::check(&forget::Candidate {
            node,
            condition: view.condition,
            online: view.online,
            last_copies,
        })?;
        let replicas = blocking(&self.store, span.clone(), move |s| {
            s.forget_node(node, Timespec::now())
        })
        .await?;
        self.registry.lock().forget(node);
        self.conditions.lock().remove(&node);
        self.votes.lock().forget(node);
        span.in_scope(|| {
            tracing::warn!(
                condition = view.condition.as_str(),
                replicas,
                "node forgotten: it is no longer part of the cluster"
            )
        });
        Ok(replicas)
    }

    /// Runs the transition function for `event` on `node` now and applies its change, if
    /// any; returns the change.
    async fn decide(&self, node: NodeId, event: Event, votes: usize) -> FsResult<Option<Change>> {
        let (current, since) = self
            .conditions
            .lock()
            .get(&node)
            .copied()
            .unwrap_or((NodeCondition::Up, Instant::now()));
        let change = condition::next(current, since, event, votes, Instant::now(), &self.policy)?;
        if let Some(change) = &change {
            self.apply(node, change).await?;
        }
        Ok(change)
    }

    /// Records a node's condition durably, then in memory; logs the change and wakes the
    /// repair worker when the node's replicas stopped counting.
    async fn apply(&self, node: NodeId, change: &Change) -> FsResult<()> {
        let condition = change.to;
        if self.condition_of(node) == condition {
            return Ok(());
        }
        let span = info_span!("node_condition", %node, condition = condition.as_str());
        blocking(&self.store, span.clone(), move |s| {
            s.set_node_condition(node, condition, Timespec::now())
        })
        .await?;
        let previous = {
            let mut conditions = self.conditions.lock();
            let previous = conditions.get(&node).map_or(NodeCondition::Up, |(c, _)| *c);
            if condition == NodeCondition::Up {
                conditions.remove(&node);
            } else {
                conditions.insert(node, (condition, Instant::now()));
            }
            previous
        };
        span.in_scope(|| {
            tracing::warn!(
                from = previous.as_str(),
                to = condition.as_str(),
                why = change.why.as_ref(),
                "node condition changed"
            )
        });
        if matches!(condition, NodeCondition::Dead | NodeCondition::Draining) {
            self.repair_wake.notify_one();
        }
        Ok(())
    }

    /// Applies `event` to every node in a recorded condition (the worker's round). A
    /// failure is logged by `blocking`; the next round tries again.
    async fn decide_all(&self, event: Event) {
        let nodes: Vec<NodeId> = self.conditions.lock().keys().copied().collect();
        for node in nodes {
            let _ = self.decide(node, event, 0).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ClusterRecord, SqliteStore};
    use common::ClusterId;

    /// A cluster control over a fresh store in `dir` with one registered node, quorum 2.
    fn control(dir: &std::path::Path) -> (ClusterControl, NodeId) {
        let path = dir.join("meta.db");
        let record = ClusterRecord {
            id: ClusterId([7; 16]),
            chunk_size: 1 << 20,
            key_check: vec![9; 32],
        };
        let now = Timespec { sec: 1, nsec: 0 };
        SqliteStore::create(&path, &record, now).expect("create");
        let store: Arc<dyn MetaStore> = Arc::new(SqliteStore::open(&path, false).expect("open"));
        let node = store
            .register_node(None, "127.0.0.1:1", now)
            .expect("register");
        let mut config = MasterConfig::for_tests(dir.to_path_buf());
        config.dead_quorum = 2;
        (ClusterControl::new(store, &config).expect("control"), node)
    }

    #[tokio::test]
    async fn votes_drains_and_reports_change_conditions_durably() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (control, node) = control(dir.path());
        let recorded = |c: &ClusterControl| c.store.node_conditions().expect("conditions");
        // Unknown nodes are refused.
        assert_eq!(
            control.report_health(NodeId(99), "s1".into(), false).await,
            Err(FsError::NotFound)
        );
        // (sentinel, alive, expected condition afterwards)
        let steps = [
            ("s1", false, NodeCondition::Up),
            // The same sentinel twice is one vote.
            ("s1", false, NodeCondition::Up),
            ("s2", false, NodeCondition::Dead),
            ("s1", true, NodeCondition::Up),
            // s1 withdrew its vote by reporting alive: s2's alone is no quorum.
            ("s2", false, NodeCondition::Up),
        ];
        for (sentinel, alive, want) in steps {
            let got = control
                .report_health(node, sentinel.into(), alive)
                .await
                .expect("report");
            assert_eq!(got, want, "{sentinel} alive={alive}");
        }
        assert!(
            recorded(&control).is_empty(),
            "up is recorded as no condition"
        );
        assert_eq!(
            control.set_drain(node, true).await,
            Ok(NodeCondition::Draining)
        );
        assert_eq!(recorded(&control)[0].1, NodeCondition::Draining);
        assert_eq!(control.views()[0].condition, NodeCondition::Draining);
        assert!(!control.write_views()[0].online);
        assert_eq!(control.set_drain(node, false).await, Ok(NodeCondition::Up));
        // A graceful stop announced by the node itself, then its return.
        let stopping = NodeStatus {
            draining: true,
            ..NodeStatus::default()
        };
        control
            .registered(node, "127.0.0.1:1".into(), stopping.clone())
            .await;
        assert_eq!(control.condition_of(node), NodeCondition::Maintenance);
        assert!(control.heartbeat(node, NodeStatus::default()).await);
        assert_eq!(control.condition_of(node), NodeCondition::Up);
        assert!(!control.heartbeat(NodeId(99), NodeStatus::default()).await);
        // Dead nodes cannot be drained.
        control
            .report_health(node, "s1".into(), false)
            .await
            .expect("vote");
        control
            .report_health(node, "s3".into(), false)
            .await
            .expect("vote");
        assert_eq!(control.condition_of(node), NodeCondition::Dead);
        assert!(matches!(
            control.set_drain(node, true).await,
            Err(FsError::Invalid(_))
        ));
        assert_eq!(recorded(&control)[0].1, NodeCondition::Dead);
    }

    #[tokio::test]
    async fn forgetting_a_node_removes_it_for_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (control, node) = control(dir.path());
        assert_eq!(control.forget(NodeId(99)).await, Err(FsError::NotFound));
        // Up (and never heard from since this master started): refused by its condition.
        assert!(
            matches!(control.forget(node).await, Err(FsError::Invalid(why)) if why.contains("UP"))
        );
        for sentinel in ["s1", "s2"] {
            control
                .report_health(node, sentinel.into(), false)
                .await
                .expect("vote");
        }
        assert_eq!(control.condition_of(node), NodeCondition::Dead);
        assert_eq!(control.forget(node).await, Ok(0));
        assert!(!control.knows(node));
        assert!(control.views().is_empty());
        assert_eq!(control.condition_of(node), NodeCondition::Up);
        assert!(
            control
                .store
                .node_conditions()
                .expect("conditions")
                .is_empty()
        );
        assert!(control.store.list_nodes().expect("nodes").is_empty());
        // Its process may not bring it back under its old id.
        assert!(matches!(
            control
                .store
                .register_node(Some(node), "127.0.0.1:1", Timespec { sec: 2, nsec: 0 }),
            Err(FsError::WrongCluster(why)) if why.contains("forgotten")
        ));
        // A new node gets a new id.
        let fresh = control
            .store
            .register_node(None, "127.0.0.1:2", Timespec { sec: 2, nsec: 0 })
            .expect("register");
        assert_ne!(fresh, node);
    }
}

//! Repair of bad and stale replicas: the master notices chunks with fewer current replicas
//! than the goal (a replica reported corrupt, or one that missed a committed write) and has
//! a node copy the chunk from a healthy replica (`ChunkServer::copy_from`). Data flows
//! chunkserver to chunkserver; the master only decides and records.
//!
//! Replicas on nodes that are merely unreachable still count as current here: deciding that
//! a node is dead and re-replicating what it held is the sentinel's job (it must not react
//! to a short pause). This module repairs only what is known to be wrong.
//!
//! [`plan`] is a pure function of the replica table and the node views, table-tested; the
//! worker [`repair_loop`] only runs it, dials nodes and records results.

use crate::registry::NodeView;
use crate::service::MasterService;
use common::rpc::{ChunkServerClient, ctx};
use common::{ChunkId, FsError, FsResult, NodeId, Version};
use futures::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the master looks for chunks to repair. A repair starts within about this long
/// of a bad report or a commit that left a replica behind.
pub const REPAIR_INTERVAL: Duration = Duration::from_secs(1);
/// Chunks examined per round: bounds the query and the plan; the rest wait a round.
pub const REPAIR_SCAN: usize = 256;
/// Copies in flight at once, cluster-wide: repair must not starve client I/O.
pub const MAX_COPIES_IN_FLIGHT: usize = 4;
/// Deadline of one copy: a 64 MiB chunk at a slow 10 MB/s, with room. A copy to a stalled
/// node fails after this and is planned again.
pub const COPY_DEADLINE: Duration = Duration::from_secs(120);
/// Deadline of connecting to the copy's target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One replica row as the repair planner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaRow {
    pub node: NodeId,
    /// The newest version this replica confirmed.
    pub version: Version,
    pub bad: bool,
}

/// A committed chunk and all its replica rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkReplicas {
    pub chunk: ChunkId,
    pub confirmed: Version,
    pub replicas: Vec<ReplicaRow>,
    /// The file's own replication goal; `None` follows the cluster's (the planners' `goal`).
    pub goal: Option<u32>,
}

/// Copy `chunk` at `version` from `source` to `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyOrder {
    pub chunk: ChunkId,
    pub version: Version,
    pub source: NodeId,
    pub source_addr: String,
    pub target: NodeId,
    pub target_addr: String,
}

/// The copies that bring `chunks` back to `goal` current replicas, at most `max`, skipping
/// chunks in `busy` (a copy already running). Sources: current replicas on online nodes,
/// least loaded first. Targets: online nodes without a current replica, those holding a
/// stale one first (it is overwritten), then nodes without the chunk by free space; never a
/// node whose replica is marked bad (its deletion is pending and would race the copy).
pub fn plan(
    chunks: &[ChunkReplicas],
    nodes: &[NodeView],
    goal: usize,
    busy: &HashSet<ChunkId>,
    max: usize,
) -> Vec<CopyOrder> {
    let views: HashMap<NodeId, &NodeView> = nodes.iter().map(|v| (v.node, v)).collect();
    let online = |n: &NodeId| views.get(n).is_some_and(|v| v.online);
    let mut by_space: Vec<&NodeView> = nodes.iter().filter(|v| v.online).collect();
    by_space.sort_by(|a, b| {
        b.free_bytes()
            .cmp(&a.free_bytes())
            .then(a.node.cmp(&b.node))
    });
    let mut out = Vec::new();
    for c in chunks {
        if out.len() >= max || busy.contains(&c.chunk) || c.confirmed.0 == 0 {
            continue;
        }
        let goal = c.goal.map_or(goal, |g| g as usize);
        let current: Vec<NodeId> = c
            .replicas
            .iter()
            .filter(|r| r.version == c.confirmed && !r.bad)
            .map(|r| r.node)
            .collect();
        if current.len() >= goal {
            continue;
        }
        let Some(source) = current
            .iter()
            .filter(|n| online(n))
            .min_by_key(|n| (views[*n].status.load(), **n))
        else {
            continue;
        };
        let bad: HashSet<NodeId> = c
            .replicas
            .iter()
            .filter(|r| r.bad)
            .map(|r| r.node)
            .collect();
        let mut stale: Vec<NodeId> = c
            .replicas
            .iter()
            .filter(|r| !r.bad && r.version < c.confirmed && online(&r.node))
            .map(|r| r.node)
            .collect();
        stale.sort();
        let holders: HashSet<NodeId> = c.replicas.iter().map(|r| r.node).collect();
        let fresh = by_space
            .iter()
            .map(|v| v.node)
            .filter(|n| !holders.contains(n) && !bad.contains(n));
        let targets: Vec<NodeId> = stale
            .into_iter()
            .chain(fresh)
            .take(goal - current.len())
            .collect();
        for target in targets {
            if out.len() >= max {
                break;
            }
            out.push(CopyOrder {
                chunk: c.chunk,
                version: c.confirmed,
                source: *source,
                source_addr: views[source].addr.clone(),
                target,
                target_addr: views[&target].addr.clone(),
            });
        }
    }
    out
}

/// Drop `node`'s replica of `chunk`: the chunk has more current replicas than its goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrimOrder {
    pub chunk: ChunkId,
    pub node: NodeId,
}

/// The surplus replicas of over-replicated `chunks` to drop (after a goal was lowered), at
/// most `max`, skipping chunks in `busy`. Never below the goal, never the last current
/// replica. Which go: replicas on offline nodes first (the online ones keep serving), then
/// the most loaded, then the fullest, then the highest node id (deterministic).
pub fn plan_trims(
    chunks: &[ChunkReplicas],
    nodes: &[NodeView],
    goal: usize,
    busy: &HashSet<ChunkId>,
    max: usize,
) -> Vec<TrimOrder> {
    let views: HashMap<NodeId, &NodeView> = nodes.iter().map(|v| (v.node, v)).collect();
    let mut out = Vec::new();
    for c in chunks {
        if busy.contains(&c.chunk) || c.confirmed.0 == 0 {
            continue;
        }
        let goal = c.goal.map_or(goal, |g| g as usize).max(1);
        let mut current: Vec<NodeId> = c
            .replicas
            .iter()
            .filter(|r| r.version == c.confirmed && !r.bad)
            .map(|r| r.node)
            .collect();
        if current.len() <= goal {
            continue;
        }
        // Sort so that the replicas to drop come first.
        current.sort_by_key(|n| {
            let v = views.get(n);
            (
                v.is_some_and(|v| v.online),
                std::cmp::Reverse(v.map_or(0, |v| v.status.load())),
                v.map_or(0, |v| v.free_bytes()),
                std::cmp::Reverse(*n),
            )
        });
        for node in current.iter().take(current.len() - goal) {
            if out.len() >= max {
                return out;
            }
            out.push(TrimOrder {
                chunk: c.chunk,
                node: *node,
            });
        }
    }
    out
}

/// Dials a chunkserver (over the master's TLS credential).
pub type Connector =
    Arc<dyn Fn(String) -> BoxFuture<'static, FsResult<ChunkServerClient>> + Send + Sync>;

/// The connector the master uses for repairs.
pub fn connector(tls: common::tls::Tls) -> Connector {
    Arc::new(move |addr: String| {
        let tls = tls.clone();
        Box::pin(
            async move { common::rpc::connect_chunkserver(&addr, &tls, CONNECT_TIMEOUT).await },
        )
    })
}

/// Plans and runs repairs every [`REPAIR_INTERVAL`] until `stop` changes.
pub async fn repair_loop(
    service: MasterService,
    connect: Connector,
    mut stop: watch::Receiver<bool>,
) {
    let busy: Arc<parking_lot::Mutex<HashSet<ChunkId>>> = Arc::default();
    let mut tick = tokio::time::interval(REPAIR_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let room = MAX_COPIES_IN_FLIGHT.saturating_sub(busy.lock().len());
        if room == 0 {
            continue;
        }
        let snapshot = busy.lock().clone();
        // Trims are metadata only (the deletions go out with heartbeats): done inline.
        service.trim_surplus(&snapshot).await;
        let orders = match service.plan_repairs(&snapshot, room).await {
            Ok(orders) => orders,
            // Logged by the service's store wrapper.
            Err(_) => continue,
        };
        for order in orders {
            busy.lock().insert(order.chunk);
            let (service, connect, busy) = (service.clone(), connect.clone(), busy.clone());
            tokio::spawn(async move {
                run_copy(&service, &connect, &order).await;
                busy.lock().remove(&order.chunk);
            });
        }
    }
}

async fn run_copy(service: &MasterService, connect: &Connector, order: &CopyOrder) {
    let started = std::time::Instant::now();
    let copied = async {
        let client = connect(order.target_addr.clone()).await?;
        client
            .copy_from(
                ctx(COPY_DEADLINE),
                order.chunk,
                order.source_addr.clone(),
                order.version,
            )
            .await
            .map_err(FsError::from)?
    }
    .await;
    match copied {
        Ok(()) => {
            let recorded = service
                .record_copy(order.chunk, order.target, order.version)
                .await;
            tracing::info!(chunk = %order.chunk, source = %order.source, target = %order.target,
                version = ?order.version, seconds = started.elapsed().as_secs_f64(),
                recorded = ?recorded, "replica repaired");
        }
        Err(e) => tracing::warn!(chunk = %order.chunk, source = %order.source,
            target = %order.target, error = %e, "replica repair failed; planned again later"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::types::NodeStatus;

    fn view(node: u64, online: bool, free: u64, in_flight: u64) -> NodeView {
        NodeView {
            node: NodeId(node),
            addr: format!("n{node}"),
            online,
            last_seen: None,
            status: NodeStatus {
                capacity_bytes: free,
                in_flight,
                ..NodeStatus::default()
            },
        }
    }

    fn row(node: u64, version: u64, bad: bool) -> ReplicaRow {
        ReplicaRow {
            node: NodeId(node),
            version: Version(version),
            bad,
        }
    }

    fn chunk(id: u64, confirmed: u64, replicas: Vec<ReplicaRow>) -> ChunkReplicas {
        ChunkReplicas {
            chunk: ChunkId(id),
            confirmed: Version(confirmed),
            replicas,
            goal: None,
        }
    }

    fn with_goal(mut c: ChunkReplicas, goal: u32) -> ChunkReplicas {
        c.goal = Some(goal);
        c
    }

    fn pairs(orders: &[CopyOrder]) -> Vec<(u64, u64, u64)> {
        orders
            .iter()
            .map(|o| (o.chunk.0, o.source.0, o.target.0))
            .collect()
    }

    /// (name, chunk, expected (chunk, source, target) orders)
    type Case = (&'static str, ChunkReplicas, Vec<(u64, u64, u64)>);

    #[test]
    fn repair_plan_table() {
        let nodes = vec![
            view(1, true, 100, 0),
            view(2, true, 300, 5),
            view(3, true, 200, 0),
            view(4, false, 900, 0),
            view(5, true, 50, 0),
        ];
        let none = HashSet::new();
        let cases: Vec<Case> = vec![
            (
                "at goal",
                chunk(
                    1,
                    4,
                    vec![row(1, 4, false), row(2, 4, false), row(3, 4, false)],
                ),
                vec![],
            ),
            // A stale replica on an online node is brought up to date in place, from the
            // least-loaded current replica.
            (
                "stale",
                chunk(
                    2,
                    4,
                    vec![row(1, 4, false), row(2, 4, false), row(3, 3, false)],
                ),
                vec![(2, 1, 3)],
            ),
            // A bad replica's node is skipped (its deletion is pending): the copy goes to the
            // online node with the most free space that does not hold the chunk.
            (
                "bad",
                chunk(
                    3,
                    4,
                    vec![row(1, 4, false), row(2, 4, false), row(3, 4, true)],
                ),
                vec![(3, 1, 5)],
            ),
            // Replicas on an offline node still count: that is the sentinel's decision.
            (
                "offline counts",
                chunk(
                    4,
                    4,
                    vec![row(1, 4, false), row(2, 4, false), row(4, 4, false)],
                ),
                vec![],
            ),
            // No current replica online: nothing to copy from.
            (
                "no source",
                chunk(5, 4, vec![row(4, 4, false), row(1, 3, false)]),
                vec![],
            ),
            // Two missing: the stale one first, then by free space.
            (
                "two",
                chunk(6, 2, vec![row(2, 2, false), row(1, 1, false)]),
                vec![(6, 2, 1), (6, 2, 3)],
            ),
            // Never committed: nothing to repair (a write may be in flight).
            ("uncommitted", chunk(7, 0, vec![row(1, 0, false)]), vec![]),
            // The file's own goal replaces the cluster's: 2 current replicas satisfy goal 2,
            (
                "goal 2 met",
                with_goal(chunk(8, 4, vec![row(1, 4, false), row(2, 4, false)]), 2),
                vec![],
            ),
            // and goal 4 wants two more than the three there are.
            (
                "goal 4",
                with_goal(
                    chunk(
                        9,
                        4,
                        vec![row(1, 4, false), row(2, 4, false), row(3, 4, false)],
                    ),
                    4,
                ),
                vec![(9, 1, 5)],
            ),
        ];
        for (name, c, want) in cases {
            assert_eq!(pairs(&plan(&[c], &nodes, 3, &none, 10)), want, "{name}");
        }
        // Busy chunks are skipped; `max` bounds the orders.
        let stale = chunk(
            2,
            4,
            vec![row(1, 4, false), row(2, 4, false), row(3, 3, false)],
        );
        let busy: HashSet<ChunkId> = [ChunkId(2)].into();
        assert!(plan(std::slice::from_ref(&stale), &nodes, 3, &busy, 10).is_empty());
        let two = chunk(6, 2, vec![row(2, 2, false), row(1, 1, false)]);
        assert_eq!(plan(&[two], &nodes, 3, &none, 1).len(), 1);
    }

    /// (name, chunk, cluster goal, expected (chunk, node) trims)
    type TrimCase = (&'static str, ChunkReplicas, usize, Vec<(u64, u64)>);

    #[test]
    fn trim_plan_table() {
        let nodes = vec![
            view(1, true, 100, 0),
            view(2, true, 300, 5),
            view(3, true, 200, 0),
            view(4, false, 900, 0),
            view(5, true, 50, 0),
        ];
        let none = HashSet::new();
        let all = |id, v| {
            chunk(
                id,
                v,
                vec![
                    row(1, v, false),
                    row(2, v, false),
                    row(3, v, false),
                    row(5, v, false),
                ],
            )
        };
        let cases: Vec<TrimCase> = vec![
            ("at goal", all(1, 4), 4, vec![]),
            ("under goal", all(1, 4), 5, vec![]),
            // 4 current, goal 2: the most loaded (2) goes, then the fuller of the idle ones
            // (5 has 50 free, 1 has 100, 3 has 200).
            ("goal 2", with_goal(all(2, 4), 2), 3, vec![(2, 2), (2, 5)]),
            // The cluster's goal applies when the file has none.
            ("cluster goal", all(3, 4), 3, vec![(3, 2)]),
            // Goal 1 keeps exactly one, never zero.
            (
                "goal 1",
                with_goal(all(4, 4), 1),
                3,
                vec![(4, 2), (4, 5), (4, 1)],
            ),
            // A replica on an offline node goes before online ones.
            (
                "offline first",
                with_goal(
                    chunk(
                        5,
                        4,
                        vec![row(1, 4, false), row(3, 4, false), row(4, 4, false)],
                    ),
                    2,
                ),
                3,
                vec![(5, 4)],
            ),
            // Stale and bad replicas do not count as current: one current replica is at
            // goal 1, nothing to drop.
            (
                "stale and bad",
                with_goal(
                    chunk(
                        6,
                        4,
                        vec![row(1, 4, false), row(2, 3, false), row(3, 4, true)],
                    ),
                    1,
                ),
                3,
                vec![],
            ),
            (
                "uncommitted",
                with_goal(chunk(7, 0, vec![row(1, 0, false), row(2, 0, false)]), 1),
                3,
                vec![],
            ),
        ];
        for (name, c, goal, want) in cases {
            let got: Vec<(u64, u64)> = plan_trims(&[c], &nodes, goal, &none, 10)
                .iter()
                .map(|t| (t.chunk.0, t.node.0))
                .collect();
            assert_eq!(got, want, "{name}");
        }
        let busy: HashSet<ChunkId> = [ChunkId(2)].into();
        assert!(plan_trims(&[with_goal(all(2, 4), 2)], &nodes, 3, &busy, 10).is_empty());
        assert_eq!(
            plan_trims(&[with_goal(all(2, 4), 1)], &nodes, 3, &none, 2).len(),
            2
        );
    }
}

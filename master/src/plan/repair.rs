//! The repair planner: which copies bring committed chunks back to their goal of current
//! replicas ([`plan`]) and which surplus replicas may go ([`plan_trims`]), plus the plain
//! types the store's replication queries return ([`ChunkReplicas`]) and the copy orders the
//! repair worker runs ([`CopyOrder`]).
//!
//! Replicas on nodes that are merely unreachable still count here: only a node the
//! sentinels declared dead (`NodeCondition::Dead`) stops counting, so a short pause never
//! starts a copy. A node an admin drains (`NodeCondition::Draining`) stops counting too, so
//! its chunks are copied elsewhere, but it stays a copy source and its replicas are never
//! trimmed. Copy targets are the nodes that take chunks (`super::takes_chunks`).
//!
//! Pure and table-tested: never does I/O, never reads a clock, never plans a copy that
//! deletes the last current copy of a chunk or a trim that takes a chunk below its goal.

use super::{NodeView, takes_chunks};
use common::types::NodeCondition;
use common::{ChunkId, NodeId, Version};
use std::collections::{HashMap, HashSet};

/// One replica row as the repair planner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaRow {
    pub node: NodeId,
    /// The newest version this replica confirmed.
    pub version: Version,
    pub bad: bool,
}

/// A committed chunk, its goal and all its replica rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkReplicas {
    pub chunk: ChunkId,
    pub confirmed: Version,
    /// Committed length in bytes: what one copy moves (for the bandwidth limit).
    pub length: u64,
    /// Current replicas this chunk should have (the cluster's N unless a per-directory
    /// goal says otherwise).
    pub goal: usize,
    pub replicas: Vec<ReplicaRow>,
}

/// Copy `chunk` at `version` from `source` to `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyOrder {
    pub chunk: ChunkId,
    pub version: Version,
    pub length: u64,
    pub source: NodeId,
    pub source_addr: String,
    pub target: NodeId,
    pub target_addr: String,
}

/// How many copies may run, and what is running already.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Copies at once, cluster-wide (running ones included).
    pub max_copies: usize,
    /// Copies one node takes part in at once, as source or target (running included).
    pub max_per_node: usize,
}

/// Copies running now: their chunks (never two copies of one chunk at once) and how many
/// each node takes part in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    pub chunks: HashSet<ChunkId>,
    pub per_node: HashMap<NodeId, usize>,
}

impl InFlight {
    pub fn total(&self) -> usize {
        self.chunks.len()
    }

    pub fn start(&mut self, order: &CopyOrder) {
        self.chunks.insert(order.chunk);
        *self.per_node.entry(order.source).or_insert(0) += 1;
        *self.per_node.entry(order.target).or_insert(0) += 1;
    }

    pub fn finish(&mut self, order: &CopyOrder) {
        self.chunks.remove(&order.chunk);
        for node in [order.source, order.target] {
            if let Some(n) = self.per_node.get_mut(&node) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_node.remove(&node);
                }
            }
        }
    }

    /// Copies `node` takes part in now, as source or target.
    pub fn load(&self, node: NodeId) -> usize {
        self.per_node.get(&node).copied().unwrap_or(0)
    }
}

/// Views by node id.
fn view_map(nodes: &[NodeView]) -> HashMap<NodeId, &NodeView> {
    nodes.iter().map(|v| (v.node, v)).collect()
}

/// A node's condition; a node the registry does not know is taken as up.
fn condition(views: &HashMap<NodeId, &NodeView>, node: NodeId) -> NodeCondition {
    views.get(&node).map_or(NodeCondition::Up, |v| v.condition)
}

/// Current replicas of `c` that count toward its goal: at the committed version, not bad,
/// not on a node declared dead.
fn counting(c: &ChunkReplicas, views: &HashMap<NodeId, &NodeView>) -> Vec<NodeId> {
    c.replicas
        .iter()
        .filter(|r| r.version == c.confirmed && !r.bad && condition(views, r.node).counts())
        .map(|r| r.node)
        .collect()
}

/// The copies that bring `chunks` back to their goal of current replicas, within `limits`
/// given what is `running`. Chunks are taken in the order given (the store lists the least
/// replicated first, so a chunk down to one copy is served before one down to two).
/// Sources: current replicas on online nodes that are up, least loaded first. Targets:
/// nodes that take chunks (`takes_chunks`) without a current replica, those holding a stale one first (it is
/// overwritten), then nodes without the chunk by free space; never a node whose replica is
/// marked bad (its deletion is pending and would race the copy).
pub fn plan(
    chunks: &[ChunkReplicas],
    nodes: &[NodeView],
    running: &InFlight,
    limits: &Limits,
) -> Vec<CopyOrder> {
    let views = view_map(nodes);
    // A source: online and not declared dead (a draining node is the usual source of its
    // own chunks). A target: a node that takes chunks (`takes_chunks`).
    let usable = |n: &NodeId| {
        views
            .get(n)
            .is_some_and(|v| v.online && v.condition.serves())
    };
    let target_ok = |n: &NodeId| views.get(n).is_some_and(|v| takes_chunks(v));
    let mut by_space: Vec<&NodeView> = nodes.iter().filter(|v| takes_chunks(v)).collect();
    by_space.sort_by(|a, b| {
        b.free_bytes()
            .cmp(&a.free_bytes())
            .then(a.node.cmp(&b.node))
    });
    let mut load = running.clone();
    let mut out = Vec::new();
    for c in chunks {
        if load.total() >= limits.max_copies {
            break;
        }
        if load.chunks.contains(&c.chunk) || c.confirmed.0 == 0 {
            continue;
        }
        let current = counting(c, &views);
        if current.len() >= c.goal {
            continue;
        }
        // Current replicas on draining nodes do not count but are copied from.
        let sources: Vec<NodeId> = c
            .replicas
            .iter()
            .filter(|r| r.version == c.confirmed && !r.bad)
            .map(|r| r.node)
            .collect();
        let Some(source) = sources
            .iter()
            .filter(|n| usable(n) && load.load(**n) < limits.max_per_node)
            .min_by_key(|n| (load.load(**n), views[*n].status.load(), **n))
            .copied()
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
            .filter(|r| !r.bad && r.version < c.confirmed && target_ok(&r.node))
            .map(|r| r.node)
            .collect();
        stale.sort();
        let holders: HashSet<NodeId> = c.replicas.iter().map(|r| r.node).collect();
        let fresh = by_space
            .iter()
            .map(|v| v.node)
            .filter(|n| !holders.contains(n) && !bad.contains(n));
        let candidates: Vec<NodeId> = stale.into_iter().chain(fresh).collect();
        let mut missing = c.goal - current.len();
        for target in candidates {
            if missing == 0 || load.total() >= limits.max_copies {
                break;
            }
            if load.load(source) >= limits.max_per_node {
                break;
            }
            if load.load(target) >= limits.max_per_node {
                continue;
            }
            let order = CopyOrder {
                chunk: c.chunk,
                version: c.confirmed,
                length: c.length,
                source,
                source_addr: views[&source].addr.clone(),
                target,
                target_addr: views[&target].addr.clone(),
            };
            // Several copies of one chunk may start in one round (two replicas lost);
            // `chunks` only keeps later rounds from adding more while they run.
            load.chunks.insert(order.chunk);
            *load.per_node.entry(source).or_insert(0) += 1;
            *load.per_node.entry(target).or_insert(0) += 1;
            out.push(order);
            missing -= 1;
        }
    }
    out
}

/// Remove `node`'s replica of `chunk`: it is surplus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrimOrder {
    pub chunk: ChunkId,
    pub node: NodeId,
}

/// Surplus replicas to remove: for every chunk with more counting current replicas than its
/// goal (and no copy running), the extra ones on the fullest online nodes. Never more than
/// `count - goal`, so never below the goal and never the last current copy; replicas on
/// offline nodes are left alone (their node may be needed as it is).
pub fn plan_trims(
    chunks: &[ChunkReplicas],
    nodes: &[NodeView],
    running: &InFlight,
) -> Vec<TrimOrder> {
    let views = view_map(nodes);
    let mut out = Vec::new();
    for c in chunks {
        if running.chunks.contains(&c.chunk) || c.goal == 0 {
            continue;
        }
        let current = counting(c, &views);
        if current.len() <= c.goal {
            continue;
        }
        let mut removable: Vec<NodeId> = current
            .into_iter()
            .filter(|n| views.get(n).is_some_and(|v| v.online))
            .collect();
        // Fullest first (least free), then the highest id: deterministic.
        removable.sort_by(|a, b| {
            views[a]
                .free_bytes()
                .cmp(&views[b].free_bytes())
                .then(b.cmp(a))
        });
        let surplus = counting(c, &views).len() - c.goal;
        out.extend(removable.into_iter().take(surplus).map(|node| TrimOrder {
            chunk: c.chunk,
            node,
        }));
    }
    out
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
            condition: NodeCondition::Up,
        }
    }

    /// `nodes` with the given conditions recorded.
    fn marked(nodes: &[NodeView], conditions: &HashMap<NodeId, NodeCondition>) -> Vec<NodeView> {
        nodes
            .iter()
            .map(|v| NodeView {
                condition: conditions.get(&v.node).copied().unwrap_or_default(),
                ..v.clone()
            })
            .collect()
    }

    fn plan_with(
        chunks: &[ChunkReplicas],
        nodes: &[NodeView],
        conditions: &HashMap<NodeId, NodeCondition>,
        running: &InFlight,
        limits: &Limits,
    ) -> Vec<CopyOrder> {
        plan(chunks, &marked(nodes, conditions), running, limits)
    }

    fn trims_with(
        chunks: &[ChunkReplicas],
        nodes: &[NodeView],
        conditions: &HashMap<NodeId, NodeCondition>,
        running: &InFlight,
    ) -> Vec<TrimOrder> {
        plan_trims(chunks, &marked(nodes, conditions), running)
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
            length: 1 << 20,
            goal: 3,
            replicas,
        }
    }

    fn pairs(orders: &[CopyOrder]) -> Vec<(u64, u64, u64)> {
        orders
            .iter()
            .map(|o| (o.chunk.0, o.source.0, o.target.0))
            .collect()
    }

    fn open() -> Limits {
        Limits {
            max_copies: 100,
            max_per_node: 100,
        }
    }

    fn dead(nodes: &[u64]) -> HashMap<NodeId, NodeCondition> {
        nodes
            .iter()
            .map(|&n| (NodeId(n), NodeCondition::Dead))
            .collect()
    }

    /// (name, chunk, nodes declared dead, expected (chunk, source, target) orders)
    type Case = (&'static str, ChunkReplicas, Vec<u64>, Vec<(u64, u64, u64)>);

    fn nodes() -> Vec<NodeView> {
        vec![
            view(1, true, 100, 0),
            view(2, true, 300, 5),
            view(3, true, 200, 0),
            view(4, false, 900, 0),
            view(5, true, 50, 0),
        ]
    }

    #[test]
    fn repair_plan_table() {
        let nodes = nodes();
        let full = || vec![row(1, 4, false), row(2, 4, false), row(3, 4, false)];
        let cases: Vec<Case> = vec![
            ("at goal", chunk(1, 4, full()), vec![], vec![]),
            // A stale replica on an online node is brought up to date in place, from the
            // least-loaded current replica.
            (
                "stale",
                chunk(
                    2,
                    4,
                    vec![row(1, 4, false), row(2, 4, false), row(3, 3, false)],
                ),
                vec![],
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
                vec![],
                vec![(3, 1, 5)],
            ),
            // Replicas on an offline node still count until the sentinels declare it dead.
            (
                "offline counts",
                chunk(
                    4,
                    4,
                    vec![row(1, 4, false), row(2, 4, false), row(4, 4, false)],
                ),
                vec![],
                vec![],
            ),
            // Declared dead: its replica no longer counts; a copy goes to a node without one.
            (
                "dead node",
                chunk(
                    4,
                    4,
                    vec![row(1, 4, false), row(2, 4, false), row(4, 4, false)],
                ),
                vec![4],
                vec![(4, 1, 3)],
            ),
            // A dead node that is online again (not yet declared alive) is neither a source
            // nor a target, and its replica does not count.
            (
                "dead but answering",
                chunk(9, 4, vec![row(3, 4, false), row(2, 4, false)]),
                vec![3],
                vec![(9, 2, 1), (9, 2, 5)],
            ),
            // No current replica online: nothing to copy from.
            (
                "no source",
                chunk(5, 4, vec![row(4, 4, false), row(1, 3, false)]),
                vec![],
                vec![],
            ),
            // Two missing: the stale one first, then by free space.
            (
                "two",
                chunk(6, 2, vec![row(2, 2, false), row(1, 1, false)]),
                vec![],
                vec![(6, 2, 1), (6, 2, 3)],
            ),
            // Never committed: nothing to repair (a write may be in flight).
            (
                "uncommitted",
                chunk(7, 0, vec![row(1, 0, false)]),
                vec![],
                vec![],
            ),
        ];
        for (name, c, dead_nodes, want) in cases {
            let got = plan_with(
                &[c],
                &nodes,
                &dead(&dead_nodes),
                &InFlight::default(),
                &open(),
            );
            assert_eq!(pairs(&got), want, "{name}");
        }
    }

    #[test]
    fn per_chunk_goal_is_honoured() {
        let nodes = nodes();
        let mut two = chunk(1, 4, vec![row(1, 4, false), row(2, 4, false)]);
        two.goal = 2;
        let mut four = chunk(2, 4, vec![row(1, 4, false), row(2, 4, false)]);
        four.goal = 4;
        let got = plan_with(
            &[two, four],
            &nodes,
            &HashMap::new(),
            &InFlight::default(),
            &open(),
        );
        assert_eq!(pairs(&got), vec![(2, 1, 3), (2, 1, 5)]);
    }

    #[test]
    fn limits_bound_the_plan() {
        let nodes = nodes();
        // Node 4 died; it held a replica of ten chunks, each left with replicas on 1 and 2.
        let chunks: Vec<ChunkReplicas> = (1..=10)
            .map(|i| {
                chunk(
                    i,
                    4,
                    vec![row(1, 4, false), row(2, 4, false), row(4, 4, false)],
                )
            })
            .collect();
        let conditions = dead(&[4]);
        // (name, limits, chunks already running, expected number of orders)
        let table: Vec<(&str, Limits, Vec<u64>, usize)> = vec![
            ("unlimited: one per chunk", open(), vec![], 10),
            (
                "cluster-wide limit",
                Limits {
                    max_copies: 3,
                    max_per_node: 100,
                },
                vec![],
                3,
            ),
            (
                "running copies use the cluster-wide limit",
                Limits {
                    max_copies: 3,
                    max_per_node: 100,
                },
                vec![1, 2],
                1,
            ),
            // Sources 1 and 2, targets 3 and 5: with 2 per node, 2 + 2 copies can run
            // (each source serves two, each target takes two).
            (
                "per-node limit",
                Limits {
                    max_copies: 100,
                    max_per_node: 2,
                },
                vec![],
                4,
            ),
        ];
        for (name, limits, busy, want) in table {
            let mut running = InFlight::default();
            for id in busy {
                running.start(&CopyOrder {
                    chunk: ChunkId(id),
                    version: Version(4),
                    length: 0,
                    source: NodeId(1),
                    source_addr: String::new(),
                    target: NodeId(3),
                    target_addr: String::new(),
                });
            }
            let got = plan_with(&chunks, &nodes, &conditions, &running, &limits);
            assert_eq!(got.len(), want, "{name}: {:?}", pairs(&got));
            assert!(
                got.iter().all(|o| !running.chunks.contains(&o.chunk)),
                "{name}: running chunks are skipped"
            );
            let mut per_node: HashMap<NodeId, usize> = running.per_node.clone();
            for o in &got {
                *per_node.entry(o.source).or_default() += 1;
                *per_node.entry(o.target).or_default() += 1;
            }
            assert!(
                per_node.values().all(|&n| n <= limits.max_per_node),
                "{name}: {per_node:?}"
            );
        }
    }

    #[test]
    fn fewest_replicas_first_is_the_callers_order() {
        // The store lists chunks least replicated first; with room for one copy the chunk
        // down to one replica wins.
        let nodes = nodes();
        let one = chunk(8, 4, vec![row(1, 4, false)]);
        let two = chunk(7, 4, vec![row(1, 4, false), row(2, 4, false)]);
        let limits = Limits {
            max_copies: 1,
            max_per_node: 100,
        };
        let got = plan_with(
            &[one, two],
            &nodes,
            &HashMap::new(),
            &InFlight::default(),
            &limits,
        );
        assert_eq!(pairs(&got), vec![(8, 1, 2)]);
    }

    #[test]
    fn trim_table() {
        let nodes = nodes();
        // (name, chunk, dead nodes, goal, expected (chunk, node) trims)
        type Trim = (
            &'static str,
            ChunkReplicas,
            Vec<u64>,
            usize,
            Vec<(u64, u64)>,
        );
        let four = || {
            vec![
                row(1, 4, false),
                row(2, 4, false),
                row(3, 4, false),
                row(5, 4, false),
            ]
        };
        let table: Vec<Trim> = vec![
            (
                "at goal",
                chunk(
                    1,
                    4,
                    vec![row(1, 4, false), row(2, 4, false), row(3, 4, false)],
                ),
                vec![],
                3,
                vec![],
            ),
            // One surplus: the fullest node (5 has the least free space) loses its copy.
            ("one surplus", chunk(2, 4, four()), vec![], 3, vec![(2, 5)]),
            (
                "two surplus",
                chunk(3, 4, four()),
                vec![],
                2,
                vec![(3, 5), (3, 1)],
            ),
            // A dead node's replica does not count: 3 counting = goal, nothing to trim.
            (
                "dead does not count",
                chunk(4, 4, four()),
                vec![5],
                3,
                vec![],
            ),
            // Stale and bad replicas are not current: never counted as surplus.
            (
                "stale is not surplus",
                chunk(
                    5,
                    4,
                    vec![
                        row(1, 4, false),
                        row(2, 4, false),
                        row(3, 4, false),
                        row(5, 3, false),
                    ],
                ),
                vec![],
                3,
                vec![],
            ),
            // An offline node's replica is left alone even if it is the surplus one: the
            // online ones are only trimmed down to the goal counting it.
            (
                "offline kept",
                chunk(
                    6,
                    4,
                    vec![
                        row(1, 4, false),
                        row(2, 4, false),
                        row(3, 4, false),
                        row(4, 4, false),
                    ],
                ),
                vec![],
                3,
                vec![(6, 1)],
            ),
            (
                "goal 0 is never trimmed",
                chunk(7, 4, four()),
                vec![],
                0,
                vec![],
            ),
        ];
        for (name, mut c, dead_nodes, goal, want) in table {
            c.goal = goal;
            let marked_nodes = marked(&nodes, &dead(&dead_nodes));
            let before = counting(&c, &view_map(&marked_nodes)).len();
            let got = trims_with(
                std::slice::from_ref(&c),
                &nodes,
                &dead(&dead_nodes),
                &InFlight::default(),
            );
            let got_pairs: Vec<(u64, u64)> = got.iter().map(|t| (t.chunk.0, t.node.0)).collect();
            assert_eq!(got_pairs, want, "{name}");
            assert!(
                got.is_empty() || before - got.len() >= goal.max(1),
                "{name}: never below goal"
            );
        }
        // A chunk being copied is not trimmed.
        let mut running = InFlight::default();
        running.chunks.insert(ChunkId(2));
        assert!(trims_with(&[chunk(2, 4, four())], &nodes, &HashMap::new(), &running).is_empty());
    }

    fn with(pairs: &[(u64, NodeCondition)]) -> HashMap<NodeId, NodeCondition> {
        pairs.iter().map(|&(n, c)| (NodeId(n), c)).collect()
    }

    #[test]
    fn draining_nodes_in_the_plan() {
        use NodeCondition::{Dead, Decommissioned, Draining};
        let nodes = nodes();
        let full = || vec![row(1, 4, false), row(2, 4, false), row(3, 4, false)];
        // (name, chunk, conditions, expected (chunk, source, target) orders)
        type Drain = (
            &'static str,
            ChunkReplicas,
            Vec<(u64, NodeCondition)>,
            Vec<(u64, u64, u64)>,
        );
        let table: Vec<Drain> = vec![
            // Node 3 drains: its replica stops counting, a copy goes to the node with the
            // most free space that takes chunks and lacks it (5; 4 is offline), from the
            // least loaded current replica (2 is busier; 1 and 3 tie, so the lower id).
            (
                "draining copied elsewhere",
                chunk(1, 4, full()),
                vec![(3, Draining)],
                vec![(1, 1, 5)],
            ),
            // The draining node is the only current copy: it is the source; the stale
            // replica is brought up to date first, then by free space.
            (
                "draining is a source",
                chunk(2, 4, vec![row(3, 4, false), row(1, 3, false)]),
                vec![(3, Draining)],
                vec![(2, 3, 1), (2, 3, 2), (2, 3, 5)],
            ),
            // Goal met on other nodes: the draining replica is not needed, nothing to do.
            (
                "met without it",
                chunk(
                    3,
                    4,
                    vec![
                        row(1, 4, false),
                        row(2, 4, false),
                        row(3, 4, false),
                        row(5, 4, false),
                    ],
                ),
                vec![(3, Draining)],
                vec![],
            ),
            // A draining or decommissioned node never receives a copy, not even over its
            // own stale replica.
            (
                "never a target",
                chunk(
                    4,
                    4,
                    vec![row(1, 4, false), row(2, 4, false), row(3, 3, false)],
                ),
                vec![(3, Draining), (5, Decommissioned)],
                vec![],
            ),
            // A dead node is no source even if it answers; the draining one still is.
            (
                "dead no source, draining yes",
                chunk(5, 4, vec![row(2, 4, false), row(3, 4, false)]),
                vec![(2, Dead), (3, Draining)],
                vec![(5, 3, 1), (5, 3, 5)],
            ),
        ];
        for (name, c, conds, want) in table {
            let got = plan_with(&[c], &nodes, &with(&conds), &InFlight::default(), &open());
            assert_eq!(pairs(&got), want, "{name}");
        }
    }

    #[test]
    fn draining_replicas_are_never_trimmed() {
        use NodeCondition::Draining;
        let nodes = nodes();
        // Four current replicas, goal 3, node 5 (the fullest) drains: counting 3 = goal.
        let c = chunk(
            1,
            4,
            vec![
                row(1, 4, false),
                row(2, 4, false),
                row(3, 4, false),
                row(5, 4, false),
            ],
        );
        let got = trims_with(&[c], &nodes, &with(&[(5, Draining)]), &InFlight::default());
        assert!(got.is_empty(), "{got:?}");
    }
}

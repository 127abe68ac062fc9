//! The rebalancer: when the used percentages of the up nodes differ by more than the
//! configured threshold, move chunks from the fullest node to the emptiest one, a few at a
//! time, so that a node that joins a cluster holding data ends up with its share.
//!
//! A move is a repair copy (`ChunkServer::copy_from`, chunkserver to chunkserver) to the
//! emptiest node followed by a trim of the fullest node's replica, which the store only
//! performs while the chunk keeps its goal of counting replicas on other nodes: a move never
//! takes a chunk below its goal, and copies share the repair limits and bandwidth pacer.
//!
//! Use is measured from the master's own records (committed bytes of the replicas on each
//! node over the capacity the node reports), not from disk use: the records change the
//! moment a move is recorded, so the next round never moves again what was just moved.
//!
//! [`pick_move`] and [`plan_moves`] are pure and table-tested; the repair worker runs them
//! only in rounds with no repair to do and no copy running. Never moves a chunk that is
//! below its goal (that is repair's job) nor touches a node that is not up.

use super::repair::{ChunkReplicas, CopyOrder, InFlight, Limits};
use super::{NodeView, takes_chunks};
use common::NodeId;
use std::collections::HashMap;

/// One node's use as the rebalancer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeUse {
    pub node: NodeId,
    /// Committed bytes of the current replicas the master records on it.
    pub used: u64,
    pub capacity: u64,
}

impl NodeUse {
    fn percent(&self) -> f64 {
        self.used as f64 * 100.0 / self.capacity as f64
    }
}

/// Move up to `bytes` of chunks from `from` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub from: NodeId,
    pub to: NodeId,
    pub bytes: u64,
}

/// The nodes eligible for rebalancing, as the source or the target of a move: nodes that
/// take chunks (`takes_chunks`) and report a capacity.
pub fn eligible(nodes: &[NodeView], used: &HashMap<NodeId, u64>) -> Vec<NodeUse> {
    nodes
        .iter()
        .filter(|v| takes_chunks(v) && v.status.capacity_bytes > 0)
        .map(|v| NodeUse {
            node: v.node,
            used: used.get(&v.node).copied().unwrap_or(0),
            capacity: v.status.capacity_bytes,
        })
        .collect()
}

/// The move that evens the fullest and the emptiest node, if their used percentages differ
/// by more than `threshold_percent` points (0: never). `bytes` brings the two to the same
/// percentage. Ties: the lower node id. Pure.
pub fn pick_move(usage: &[NodeUse], threshold_percent: u32) -> Option<Move> {
    if threshold_percent == 0 {
        return None;
    }
    let usage: Vec<&NodeUse> = usage.iter().filter(|u| u.capacity > 0).collect();
    let fullest = usage.iter().copied().min_by(|a, b| {
        b.percent()
            .total_cmp(&a.percent())
            .then(a.node.cmp(&b.node))
    })?;
    let emptiest = usage.iter().copied().min_by(|a, b| {
        a.percent()
            .total_cmp(&b.percent())
            .then(a.node.cmp(&b.node))
    })?;
    if fullest.node == emptiest.node
        || fullest.percent() - emptiest.percent() <= f64::from(threshold_percent)
    {
        return None;
    }
    // (uf - x) / cf = (ue + x) / ce  =>  x = (uf * ce - ue * cf) / (cf + ce)
    let (uf, cf) = (u128::from(fullest.used), u128::from(fullest.capacity));
    let (ue, ce) = (u128::from(emptiest.used), u128::from(emptiest.capacity));
    let bytes = (uf * ce).saturating_sub(ue * cf) / (cf + ce);
    Some(Move {
        from: fullest.node,
        to: emptiest.node,
        bytes: u64::try_from(bytes).unwrap_or(u64::MAX),
    })
}

/// The copies of a move: chunks with a current replica on `mv.from` and none on `mv.to`,
/// at or above their goal of counting replicas, not being copied already, in the order
/// given, while their bytes stay within `mv.bytes` and the copy limits allow. Each copy is
/// from `mv.from` to `mv.to`; the caller trims the `from` replica once the copy is
/// recorded. Pure.
pub fn plan_moves(
    chunks: &[ChunkReplicas],
    mv: &Move,
    nodes: &[NodeView],
    running: &InFlight,
    limits: &Limits,
) -> Vec<CopyOrder> {
    let views: HashMap<NodeId, &NodeView> = nodes.iter().map(|v| (v.node, v)).collect();
    let (Some(from), Some(to)) = (views.get(&mv.from), views.get(&mv.to)) else {
        return Vec::new();
    };
    let mut load = running.clone();
    let mut budget = mv.bytes;
    let mut out = Vec::new();
    for c in chunks {
        if load.total() >= limits.max_copies
            || load.per_node.get(&mv.from).copied().unwrap_or(0) >= limits.max_per_node
            || load.per_node.get(&mv.to).copied().unwrap_or(0) >= limits.max_per_node
        {
            break;
        }
        if c.confirmed.0 == 0 || load.chunks.contains(&c.chunk) || c.length > budget {
            continue;
        }
        let current_on_from = c
            .replicas
            .iter()
            .any(|r| r.node == mv.from && r.version == c.confirmed && !r.bad);
        let any_on_to = c.replicas.iter().any(|r| r.node == mv.to);
        let counting = c
            .replicas
            .iter()
            .filter(|r| {
                r.version == c.confirmed
                    && !r.bad
                    && views.get(&r.node).is_none_or(|v| v.condition.counts())
            })
            .count();
        if !current_on_from || any_on_to || counting < c.goal {
            continue;
        }
        let order = CopyOrder {
            chunk: c.chunk,
            version: c.confirmed,
            length: c.length,
            source: mv.from,
            source_addr: from.addr.clone(),
            target: mv.to,
            target_addr: to.addr.clone(),
        };
        load.start(&order);
        budget -= c.length;
        out.push(order);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::repair::ReplicaRow;
    use common::types::{NodeCondition, NodeStatus};
    use common::{ChunkId, Version};

    fn u(node: u64, used: u64, capacity: u64) -> NodeUse {
        NodeUse {
            node: NodeId(node),
            used,
            capacity,
        }
    }

    #[test]
    fn pick_move_table() {
        // (name, usage, threshold, expected (from, to, bytes))
        type Case = (&'static str, Vec<NodeUse>, u32, Option<(u64, u64, u64)>);
        let table: Vec<Case> = vec![
            ("empty", vec![], 10, None),
            ("one node", vec![u(1, 90, 100)], 10, None),
            ("even", vec![u(1, 50, 100), u(2, 45, 100)], 10, None),
            // Exactly the threshold apart: within it.
            ("at threshold", vec![u(1, 50, 100), u(2, 40, 100)], 10, None),
            (
                "new empty node",
                vec![u(1, 30, 100), u(2, 30, 100), u(3, 30, 100), u(4, 0, 100)],
                10,
                Some((1, 4, 15)),
            ),
            // Percentages, not bytes: a big node at 20% is emptier than a small one at 50%.
            (
                "capacities differ",
                vec![u(1, 50, 100), u(2, 200, 1000)],
                10,
                Some((1, 2, 27)),
            ),
            ("off", vec![u(1, 90, 100), u(2, 0, 100)], 0, None),
            (
                "no capacity ignored",
                vec![u(1, 90, 0), u(2, 10, 100)],
                10,
                None,
            ),
        ];
        for (name, usage, threshold, want) in table {
            let got = pick_move(&usage, threshold).map(|m| (m.from.0, m.to.0, m.bytes));
            assert_eq!(got, want, "{name}");
        }
    }

    fn view(node: u64, online: bool) -> NodeView {
        NodeView {
            node: NodeId(node),
            addr: format!("n{node}"),
            online,
            last_seen: None,
            status: NodeStatus {
                capacity_bytes: 1000,
                ..NodeStatus::default()
            },
            condition: NodeCondition::Up,
        }
    }

    fn chunk(id: u64, nodes: &[(u64, u64)]) -> ChunkReplicas {
        ChunkReplicas {
            chunk: ChunkId(id),
            confirmed: Version(2),
            length: 10,
            goal: 2,
            replicas: nodes
                .iter()
                .map(|&(n, v)| ReplicaRow {
                    node: NodeId(n),
                    version: Version(v),
                    bad: false,
                })
                .collect(),
        }
    }

    #[test]
    fn plan_moves_table() {
        let nodes = vec![view(1, true), view(2, true), view(3, true), view(4, true)];
        let open = Limits {
            max_copies: 100,
            max_per_node: 100,
        };
        let mv = Move {
            from: NodeId(1),
            to: NodeId(4),
            bytes: 25,
        };
        let chunks = vec![
            // Movable.
            chunk(1, &[(1, 2), (2, 2)]),
            // Below goal without a third replica on a dead node: repair's job, not moved.
            chunk(2, &[(1, 2), (3, 2)]),
            // The target already holds a (stale) row: skipped.
            chunk(3, &[(1, 2), (2, 2), (4, 1)]),
            // The source's replica is stale: nothing to move from it.
            chunk(4, &[(1, 1), (2, 2), (3, 2)]),
            // Movable.
            chunk(5, &[(1, 2), (3, 2)]),
            // Movable, but the byte budget (25: two chunks of 10) is spent.
            chunk(6, &[(1, 2), (2, 2)]),
        ];
        let mut dead3 = nodes.clone();
        dead3[2].condition = NodeCondition::Dead;
        let ids = |orders: &[CopyOrder]| -> Vec<u64> { orders.iter().map(|o| o.chunk.0).collect() };
        let got = plan_moves(&chunks, &mv, &dead3, &InFlight::default(), &open);
        assert_eq!(
            ids(&got),
            vec![1, 6],
            "node 3 dead: chunks 2 and 5 are below goal"
        );
        assert!(
            got.iter()
                .all(|o| o.source == NodeId(1) && o.target == NodeId(4))
        );
        let got = plan_moves(&chunks, &mv, &nodes, &InFlight::default(), &open);
        assert_eq!(ids(&got), vec![1, 2]);
        // Limits: one copy per node at a time, and a running copy of chunk 1.
        let one = Limits {
            max_copies: 100,
            max_per_node: 1,
        };
        let got = plan_moves(&chunks, &mv, &nodes, &InFlight::default(), &one);
        assert_eq!(ids(&got), vec![1]);
        let mut running = InFlight::default();
        running.chunks.insert(ChunkId(1));
        let got = plan_moves(&chunks, &mv, &nodes, &running, &open);
        assert_eq!(ids(&got), vec![2, 5]);
        // An unknown target: nothing.
        let gone = Move {
            to: NodeId(9),
            ..mv
        };
        assert!(plan_moves(&chunks, &gone, &nodes, &InFlight::default(), &open).is_empty());
    }

    #[test]
    fn eligible_nodes_are_online_up_and_sized() {
        let mut nodes = vec![view(1, true), view(2, false), view(3, true), view(4, true)];
        nodes[3].status.capacity_bytes = 0;
        nodes[2].condition = NodeCondition::Draining;
        let used: HashMap<NodeId, u64> = [(NodeId(1), 7)].into_iter().collect();
        assert_eq!(eligible(&nodes, &used), vec![u(1, 7, 1000)]);
        // A node that announced a graceful stop is no target either.
        nodes[0].status.draining = true;
        assert!(eligible(&nodes, &used).is_empty());
    }
}

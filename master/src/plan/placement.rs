//! Replica placement: which nodes receive a new chunk. A pure function of the node views,
//! table-tested; it never looks at the clock or the database.
//!
//! Rule: the node takes chunks (`super::takes_chunks`: online, up, no stop announced), has
//! at least `min_free` bytes free (a new chunk's footprint, [`NEW_CHUNK_FOOTPRINT`]) and is
//! not excluded; most free space first so that nodes fill evenly; ties broken by node id so
//! the choice is deterministic.

use super::{NodeView, takes_chunks};
use common::{FsError, NodeId};

/// What a new chunk is counted as taking on each replica from its placement until the
/// node's next report, and the free space a node needs to be given one: two sealed blocks,
/// the least a written chunk holds (one block slot, its header and block table) with room
/// to spare. Not the chunk size: most chunks of small files never grow past a block, and
/// counting 64 MiB for each made small nodes refuse writes while nearly empty. A chunk that
/// grows past its reservation is bounded by the chunkserver, which refuses writes beyond
/// its capacity (ENOSPC).
pub const NEW_CHUNK_FOOTPRINT: u64 = 2 * common::block::BLOCK_SIZE as u64;

pub fn choose_replicas(
    nodes: &[NodeView],
    count: usize,
    exclude: &[NodeId],
    min_free: u64,
) -> Vec<NodeId> {
    let mut candidates: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| takes_chunks(n) && n.free_bytes() >= min_free && !exclude.contains(&n.node))
        .collect();
    candidates.sort_by(|a, b| {
        b.free_bytes()
            .cmp(&a.free_bytes())
            .then(a.node.cmp(&b.node))
    });
    candidates.into_iter().take(count).map(|n| n.node).collect()
}

/// Why fewer than `needed` nodes could be chosen: `NoSpace` when enough nodes take chunks
/// but are too full (the application sees ENOSPC), else `Unavailable` (EIO, retryable).
pub fn shortfall(nodes: &[NodeView], needed: usize, chosen: usize) -> FsError {
    let up = nodes.iter().filter(|n| takes_chunks(n)).count();
    if up >= needed {
        FsError::NoSpace
    } else {
        FsError::Unavailable(format!(
            "a write needs {needed} chunkservers, {up} are online ({chosen} with space)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::types::{NodeCondition, NodeStatus};

    fn node(id: u64, online: bool, free: u64, draining: bool) -> NodeView {
        NodeView {
            node: NodeId(id),
            addr: format!("127.0.0.1:{id}"),
            online,
            last_seen: None,
            status: NodeStatus {
                capacity_bytes: 1_000,
                used_bytes: 1_000 - free,
                draining,
                ..NodeStatus::default()
            },
            condition: NodeCondition::Up,
        }
    }

    fn with_condition(mut view: NodeView, condition: NodeCondition) -> NodeView {
        view.condition = condition;
        view
    }

    #[test]
    fn placement_table() {
        struct Case {
            nodes: Vec<NodeView>,
            count: usize,
            exclude: Vec<u64>,
            min_free: u64,
            want: Vec<u64>,
        }
        let cases = [
            // Most free first.
            Case {
                nodes: vec![
                    node(1, true, 100, false),
                    node(2, true, 500, false),
                    node(3, true, 300, false),
                ],
                count: 2,
                exclude: vec![],
                min_free: 0,
                want: vec![2, 3],
            },
            // Ties broken by id.
            Case {
                nodes: vec![
                    node(3, true, 200, false),
                    node(1, true, 200, false),
                    node(2, true, 200, false),
                ],
                count: 3,
                exclude: vec![],
                min_free: 0,
                want: vec![1, 2, 3],
            },
            // Offline, draining and full nodes are skipped.
            Case {
                nodes: vec![
                    node(1, false, 900, false),
                    node(2, true, 900, true),
                    node(3, true, 50, false),
                    node(4, true, 400, false),
                ],
                count: 3,
                exclude: vec![],
                min_free: 100,
                want: vec![4],
            },
            // A node that is not up takes no new chunks, even while it still heartbeats.
            Case {
                nodes: vec![
                    with_condition(node(1, true, 900, false), NodeCondition::Dead),
                    with_condition(node(2, true, 800, false), NodeCondition::Maintenance),
                    with_condition(node(3, true, 700, false), NodeCondition::Draining),
                    with_condition(node(4, true, 600, false), NodeCondition::Decommissioned),
                    node(5, true, 100, false),
                ],
                count: 3,
                exclude: vec![],
                min_free: 0,
                want: vec![5],
            },
            // Excluded nodes are skipped.
            Case {
                nodes: vec![
                    node(1, true, 900, false),
                    node(2, true, 800, false),
                    node(3, true, 700, false),
                ],
                count: 2,
                exclude: vec![1],
                min_free: 0,
                want: vec![2, 3],
            },
            // Fewer candidates than asked: all of them.
            Case {
                nodes: vec![node(1, true, 900, false)],
                count: 3,
                exclude: vec![],
                min_free: 0,
                want: vec![1],
            },
            Case {
                nodes: vec![],
                count: 3,
                exclude: vec![],
                min_free: 0,
                want: vec![],
            },
        ];
        for (i, case) in cases.iter().enumerate() {
            let exclude: Vec<NodeId> = case.exclude.iter().map(|&id| NodeId(id)).collect();
            let got = choose_replicas(&case.nodes, case.count, &exclude, case.min_free);
            let want: Vec<NodeId> = case.want.iter().map(|&id| NodeId(id)).collect();
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn shortfall_tells_full_from_down() {
        let full = [
            node(1, true, 0, false),
            node(2, true, 0, false),
            node(3, true, 0, false),
        ];
        assert_eq!(shortfall(&full, 3, 0), FsError::NoSpace);
        let down = [node(1, true, 900, false), node(2, false, 900, false)];
        assert!(matches!(shortfall(&down, 2, 1), FsError::Unavailable(_)));
        // A dead node that still answers is not "up" for placement: not ENOSPC but EIO.
        let dead = [
            node(1, true, 0, false),
            with_condition(node(2, true, 900, false), NodeCondition::Dead),
        ];
        assert!(matches!(shortfall(&dead, 2, 0), FsError::Unavailable(_)));
    }
}

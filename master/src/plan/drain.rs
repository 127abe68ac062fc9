//! The drain planner: when a draining node is no longer needed by any committed chunk, so
//! the cluster control may record it decommissioned (it may then be stopped for good).
//!
//! Pure and table-tested: the cluster control asks the store how many chunks still need
//! each draining node and passes the counts in; this module never does I/O.

use super::repair::InFlight;
use common::NodeId;
use common::types::NodeCondition;
use std::collections::HashMap;

/// The draining nodes whose drain is complete: no committed chunk needs them any more
/// (`remaining`, from the store: chunks with a replica on the node below their goal counting
/// only other nodes, is 0) and no copy involving them is still running. Nodes in any other
/// condition are never returned. Pure.
pub fn drains_complete(
    conditions: &HashMap<NodeId, NodeCondition>,
    remaining: &HashMap<NodeId, u64>,
    running: &InFlight,
) -> Vec<NodeId> {
    let mut done: Vec<NodeId> = conditions
        .iter()
        .filter(|(_, c)| **c == NodeCondition::Draining)
        .map(|(n, _)| *n)
        .filter(|n| remaining.get(n) == Some(&0) && running.load(*n) == 0)
        .collect();
    done.sort();
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::repair::CopyOrder;
    use common::{ChunkId, Version};

    fn with(pairs: &[(u64, NodeCondition)]) -> HashMap<NodeId, NodeCondition> {
        pairs.iter().map(|&(n, c)| (NodeId(n), c)).collect()
    }

    #[test]
    fn drain_complete_table() {
        use NodeCondition::{Dead, Decommissioned, Draining, Maintenance};
        let conds = with(&[
            (1, Draining),
            (2, Draining),
            (3, Draining),
            (4, Dead),
            (5, Maintenance),
            (6, Decommissioned),
        ]);
        let remaining: HashMap<NodeId, u64> = [(1, 0), (2, 3), (3, 0), (4, 0), (5, 0), (6, 0)]
            .into_iter()
            .map(|(n, r)| (NodeId(n), r))
            .collect();
        // Node 3's last copy is still running (it is the source).
        let mut running = InFlight::default();
        running.start(&CopyOrder {
            chunk: ChunkId(9),
            version: Version(1),
            length: 1,
            source: NodeId(3),
            source_addr: "n3".into(),
            target: NodeId(7),
            target_addr: "n7".into(),
        });
        assert_eq!(
            drains_complete(&conds, &remaining, &running),
            vec![NodeId(1)]
        );
        // Unknown remaining count (the query failed): not complete.
        let mut partial = remaining.clone();
        partial.remove(&NodeId(1));
        assert_eq!(
            drains_complete(&conds, &partial, &InFlight::default()),
            vec![NodeId(3)]
        );
        running.finish(&CopyOrder {
            chunk: ChunkId(9),
            version: Version(1),
            length: 1,
            source: NodeId(3),
            source_addr: "n3".into(),
            target: NodeId(7),
            target_addr: "n7".into(),
        });
        assert_eq!(
            drains_complete(&conds, &remaining, &running),
            vec![NodeId(1), NodeId(3)]
        );
    }
}

//! The master's planners: pure decisions over plain types. Which nodes receive a new chunk
//! (`placement`), which copies bring chunks back to their goal and which surplus replicas go
//! (`repair`), when a drain is complete (`drain`), and which chunks a rebalancing round moves
//! (`rebalance`). Each is a function of what it is given (node views, chunk rows, copies
//! running, limits) and is table-tested beside its code.
//!
//! This module must never import the store, the service or the cluster control, never do
//! I/O and never read a clock: the cluster control and the repair worker gather the inputs,
//! run a planner and carry out its orders.

pub mod drain;
pub mod placement;
pub mod rebalance;
pub mod repair;

use common::NodeId;
use common::types::{NodeCondition, NodeStatus};
use std::time::Duration;

/// What decisions (placement, repair, rebalance, read ordering, summaries) see of one node
/// at one instant: the registry's liveness and last report, and the cluster control's
/// condition for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub node: NodeId,
    pub addr: String,
    /// Heard from within the offline window.
    pub online: bool,
    /// Time since the last heartbeat; `None` if never heard since the master started.
    pub last_seen: Option<Duration>,
    pub status: NodeStatus,
    /// The node's recorded condition (dead, maintenance, draining...; `Up` when none).
    pub condition: NodeCondition,
}

impl NodeView {
    pub fn free_bytes(&self) -> u64 {
        self.status
            .capacity_bytes
            .saturating_sub(self.status.used_bytes)
    }
}

/// May this node take new chunks: a new file chunk's replica (placement), a repair copy or
/// a rebalancing move? The one rule all three use: it is heard from (`online`), its
/// condition is up (not declared dead, not in a maintenance window, not draining or
/// decommissioned) and it has not announced a graceful stop (`status.draining`, reported
/// by the node itself before the master records the maintenance window).
pub fn takes_chunks(node: &NodeView) -> bool {
    node.online && !node.status.draining && node.condition.takes_chunks()
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeCondition::*;

    #[test]
    fn takes_chunks_table() {
        // (online, self-reported stop, condition) -> takes new chunks
        let table = [
            (true, false, Up, true),
            (false, false, Up, false),
            (true, true, Up, false),
            (true, false, Maintenance, false),
            (true, false, Dead, false),
            (true, false, Draining, false),
            (true, false, Decommissioned, false),
            (false, true, Dead, false),
        ];
        for (online, stopping, condition, want) in table {
            let view = NodeView {
                node: NodeId(1),
                addr: "n1".into(),
                online,
                last_seen: None,
                status: NodeStatus {
                    draining: stopping,
                    ..NodeStatus::default()
                },
                condition,
            };
            assert_eq!(
                takes_chunks(&view),
                want,
                "online={online} stopping={stopping} {condition:?}"
            );
        }
    }
}

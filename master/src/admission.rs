//! Whether an admin request can ever be carried out by the nodes the cluster has: a
//! replication goal above the number of nodes that can hold replicas would leave the
//! cluster DEGRADED for good, and a drain without enough other nodes to take the drained
//! node's replicas would stay queued for good. Both are refused up front with the numbers.
//! Pure and table-tested; the RPC handlers gather the node conditions and call it. It never
//! changes a condition or a goal itself.

use common::types::NodeCondition;
use common::{FsError, NodeId};

/// A node as admission sees it: its condition and whether it heartbeats now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub node: NodeId,
    pub condition: NodeCondition,
    pub online: bool,
}

/// Nodes that can keep replicas for good: up, or stopped for maintenance (they come back).
/// Dead, draining and decommissioned nodes are on their way out.
fn can_hold(m: &Member) -> bool {
    matches!(m.condition, NodeCondition::Up | NodeCondition::Maintenance)
}

/// Refuses a goal no set of nodes can meet. Offline nodes count: a node down for a while
/// is a transient fault that `status` reports, not a reason to refuse.
pub fn check_goal(goal: u32, members: &[Member]) -> Result<(), FsError> {
    let holders = members.iter().filter(|m| can_hold(m)).count();
    if goal as usize > holders {
        return Err(FsError::Invalid(format!(
            "goal {goal} needs {goal} chunkservers, the cluster has {holders} that can hold \
             replicas (dead, draining and decommissioned nodes do not count): add nodes first"
        )));
    }
    Ok(())
}

/// Refuses a drain of `node` that cannot complete: its chunks need `goal` copies (the
/// largest goal among them) on other nodes that are up, and fewer are. Draining a node
/// that is already draining or decommissioned is always allowed (it changes nothing).
pub fn check_drain(node: NodeId, goal: u32, members: &[Member]) -> Result<(), FsError> {
    let others = members
        .iter()
        .filter(|m| m.node != node && m.online && m.condition == NodeCondition::Up)
        .count();
    if goal as usize > others {
        return Err(FsError::Invalid(format!(
            "draining {node} needs {goal} other nodes up to hold its chunks' copies (their goal \
             is {goal}), {others} are: add a node, or lower the goal first"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeCondition::*;

    fn m(id: u64, condition: NodeCondition, online: bool) -> Member {
        Member {
            node: NodeId(id),
            condition,
            online,
        }
    }

    #[test]
    fn goals_above_the_nodes_that_can_hold_replicas_are_refused() {
        let three = [m(1, Up, true), m(2, Up, true), m(3, Up, false)];
        let mixed = [
            m(1, Up, true),
            m(2, Maintenance, false),
            m(3, Dead, false),
            m(4, Draining, true),
            m(5, Decommissioned, false),
        ];
        // (members, goal) -> accepted
        let table: [(&[Member], u32, bool); 7] = [
            (&three, 1, true),
            (&three, 3, true),
            (&three, 4, false),
            (&three, 5, false),
            (&mixed, 2, true),
            (&mixed, 3, false),
            (&[], 1, false),
        ];
        for (members, goal, ok) in table {
            assert_eq!(check_goal(goal, members).is_ok(), ok, "{goal} {members:?}");
        }
        let err = check_goal(5, &three).expect_err("goal 5 on 3 nodes");
        assert!(
            err.to_string()
                .contains("goal 5 needs 5 chunkservers, the cluster has 3"),
            "{err}"
        );
    }

    #[test]
    fn drains_without_enough_other_nodes_up_are_refused() {
        let three = [m(1, Up, true), m(2, Up, true), m(3, Up, true)];
        let four = [
            m(1, Up, true),
            m(2, Up, true),
            m(3, Up, true),
            m(4, Up, true),
        ];
        let one_down = [
            m(1, Up, true),
            m(2, Up, false),
            m(3, Up, true),
            m(4, Up, true),
        ];
        let one_draining = [
            m(1, Up, true),
            m(2, Draining, true),
            m(3, Up, true),
            m(4, Up, true),
        ];
        // (members, node, goal) -> accepted
        let table: [(&[Member], u64, u32, bool); 8] = [
            (&three, 3, 3, false),
            (&three, 3, 2, true),
            (&four, 4, 3, true),
            (&four, 4, 4, false),
            (&one_down, 4, 3, false),
            (&one_down, 2, 3, true),
            (&one_draining, 4, 3, false),
            (&one_draining, 4, 0, true),
        ];
        for (members, node, goal, ok) in table {
            assert_eq!(
                check_drain(NodeId(node), goal, members).is_ok(),
                ok,
                "drain n{node} goal {goal} {members:?}"
            );
        }
        let err = check_drain(NodeId(3), 3, &three).expect_err("3 nodes, goal 3");
        assert!(
            err.to_string().contains("needs 3 other nodes up") && err.to_string().contains("2 are"),
            "{err}"
        );
    }
}

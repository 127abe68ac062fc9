//! Whether an admin may forget a node (`mosaic-sentinel forget`): one pure rule, [`check`],
//! of the node's condition, whether it still reports in, and how many chunks it holds the
//! last copy of. Forgetting removes the node from the master for good (its replica rows,
//! its condition, its registry entry), so the rule refuses anything that could lose data or
//! let a live node silently rejoin.
//!
//! This module never does I/O and never reads a clock: the cluster control gathers the
//! inputs (the store counts the last copies) and carries the decision out.

use common::types::NodeCondition;
use common::{FsError, FsResult, NodeId};

/// What the master knows about a node an admin asks to forget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub node: NodeId,
    pub condition: NodeCondition,
    /// The node reported in within the offline threshold.
    pub online: bool,
    /// Committed chunks of which no other node holds a healthy current replica while this
    /// node holds a row (any version, bad or not): forgetting it would drop their last copy.
    pub last_copies: u64,
}

/// `Ok` when `candidate` may be forgotten; otherwise an `Invalid` error saying why, with the
/// numbers and what to do instead.
pub fn check(candidate: &Candidate) -> FsResult<()> {
    use NodeCondition::*;
    let node = candidate.node;
    match candidate.condition {
        Dead | Decommissioned => {}
        Up | Maintenance | Draining => {
            return Err(FsError::Invalid(format!(
                "node {node} is {}: only a dead or decommissioned node can be forgotten \
                 (drain it until status shows it decommissioned, then stop it)",
                candidate.condition.as_str()
            )));
        }
    }
    if candidate.online {
        return Err(FsError::Invalid(format!(
            "node {node} is {} but still reports in: stop its process (and revoke its \
             credential) before forgetting it",
            candidate.condition.as_str()
        )));
    }
    if candidate.last_copies > 0 {
        return Err(FsError::Invalid(format!(
            "node {node} holds the last copy of {} chunk(s): bring it back or restore those \
             files first (`mosaic-sentinel status --files --node {node}` lists them)",
            candidate.last_copies
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeCondition::*;

    #[test]
    fn only_stopped_dead_or_decommissioned_nodes_without_last_copies_are_forgotten() {
        // (condition, online, last copies, allowed, a word the refusal must contain)
        let table = [
            (Dead, false, 0, true, ""),
            (Decommissioned, false, 0, true, ""),
            (Dead, false, 3, false, "last copy of 3 chunk"),
            (Decommissioned, false, 1, false, "last copy of 1 chunk"),
            (Dead, true, 0, false, "still reports in"),
            (Decommissioned, true, 0, false, "still reports in"),
            (Up, false, 0, false, "is UP"),
            (Up, true, 0, false, "is UP"),
            (Maintenance, false, 0, false, "is MAINTENANCE"),
            (Draining, false, 0, false, "is DRAINING"),
            (Draining, false, 5, false, "is DRAINING"),
        ];
        for (condition, online, last_copies, allowed, word) in table {
            let candidate = Candidate {
                node: NodeId(3),
                condition,
                online,
                last_copies,
            };
            match check(&candidate) {
                Ok(()) => assert!(allowed, "{candidate:?} must be refused"),
                Err(FsError::Invalid(why)) => {
                    assert!(!allowed, "{candidate:?} must be allowed: {why}");
                    assert!(why.contains(word), "{candidate:?}: {why:?} lacks {word:?}");
                    assert!(why.contains("n3"), "{why:?} names the node");
                }
                Err(other) => panic!("{candidate:?}: unexpected {other:?}"),
            }
        }
    }
}

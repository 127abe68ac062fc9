//! Node condition changes: one pure function, [`next`], of a node's current condition (and
//! since when), what happened ([`Event`]), the live dead votes, the time and the
//! [`Policy`]; and the [`Votes`] book that counts sentinels' dead votes within their window.
//!
//! Conditions: `Up` (nothing recorded), `Dead` (a quorum of sentinels voted it dead: its
//! replicas stop counting and are re-replicated), `Maintenance` (it announced a graceful
//! stop: nothing is re-replicated until the window runs out), `Draining` (an admin asked
//! its chunks to be copied elsewhere) and `Decommissioned` (drained: it may be stopped).
//!
//! This module never does I/O and never reads a clock: the cluster control passes `now`,
//! records the change durably and acts on it.

use common::types::NodeCondition;
use common::{FsError, FsResult, NodeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What happened to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The node registered or heartbeat; `stopping`: it announced a graceful stop.
    Reported { stopping: bool },
    /// A sentinel reached it.
    SeenAlive,
    /// A sentinel voted it dead (the votes argument of [`next`] counts the live ones).
    VotedDead,
    /// An admin asked to drain it (`true`) or to cancel the drain (`false`).
    DrainRequested(bool),
    /// No committed chunk needs it any more (`plan::drain::drains_complete`).
    Drained,
    /// Time passed (the repair worker's round): a maintenance window may run out.
    Tick,
}

/// The configured rules of condition changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Live dead votes (distinct sentinels) that declare an up node dead; at least 1.
    pub dead_quorum: usize,
    /// How long a node may stay in maintenance before it is declared dead.
    pub maintenance_window: Duration,
}

/// A condition change and why, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub to: NodeCondition,
    pub why: Cow<'static, str>,
}

fn change(to: NodeCondition, why: impl Into<Cow<'static, str>>) -> FsResult<Option<Change>> {
    Ok(Some(Change {
        to,
        why: why.into(),
    }))
}

/// The change `event` makes to a node in `current` since `since`, given `votes` live dead
/// votes at `now`: `None` when it stays. An admin request the node's condition forbids is an
/// error (a node declared dead cannot be drained: its chunks are re-replicated already).
pub fn next(
    current: NodeCondition,
    since: Instant,
    event: Event,
    votes: usize,
    now: Instant,
    policy: &Policy,
) -> FsResult<Option<Change>> {
    use NodeCondition::*;
    match (event, current) {
        (Event::Reported { stopping: true }, Up) => change(Maintenance, "graceful stop announced"),
        (Event::Reported { stopping: false }, Maintenance) => change(Up, "back from maintenance"),
        (Event::Reported { .. }, _) => Ok(None),
        // Any sentinel reaching the node proves it alive: it serves again, and its current
        // replicas count again (surplus copies are trimmed).
        (Event::SeenAlive, Dead) => change(Up, "a sentinel reaches it again"),
        (Event::SeenAlive, _) => Ok(None),
        (Event::VotedDead, Up) if votes >= policy.dead_quorum.max(1) => {
            change(Dead, format!("{votes} sentinel(s) voted it dead"))
        }
        // A planned stop: nothing is re-replicated until its window runs out. A draining
        // node's replicas count for nothing already (its chunks are being copied), and a
        // decommissioned one is expected to go away.
        (Event::VotedDead, _) => Ok(None),
        (Event::DrainRequested(true), Up | Maintenance) => change(Draining, "drain requested"),
        (Event::DrainRequested(true), Draining | Decommissioned) => Ok(None),
        (Event::DrainRequested(true), Dead) => Err(FsError::Invalid(
            "the node is declared dead: its chunks are re-replicated already".to_string(),
        )),
        (Event::DrainRequested(false), Draining | Decommissioned) => change(Up, "drain cancelled"),
        (Event::DrainRequested(false), Up | Maintenance | Dead) => Ok(None),
        (Event::Drained, Draining) => change(
            Decommissioned,
            "drained: every chunk it held has its goal on other nodes; it may be stopped",
        ),
        (Event::Drained, _) => Ok(None),
        (Event::Tick, Maintenance)
            if now.saturating_duration_since(since) >= policy.maintenance_window =>
        {
            change(Dead, "maintenance window ran out")
        }
        (Event::Tick, _) => Ok(None),
    }
}

/// Sentinels' dead votes per node: who voted and when. A vote lives for the vote window;
/// an alive report withdraws the sentinel's vote. Pure over the `now` it is given.
#[derive(Debug, Default)]
pub struct Votes {
    by_node: HashMap<NodeId, HashMap<String, Instant>>,
}

impl Votes {
    /// Records `voter`'s dead vote for `node` at `now` and returns how many distinct
    /// sentinels voted it dead within `window` before `now` (this vote included).
    pub fn vote_dead(
        &mut self,
        node: NodeId,
        voter: String,
        now: Instant,
        window: Duration,
    ) -> usize {
        let for_node = self.by_node.entry(node).or_default();
        for_node.insert(voter, now);
        for_node.retain(|_, at| now.saturating_duration_since(*at) < window);
        for_node.len()
    }

    /// Drops every vote on a forgotten node.
    pub fn forget(&mut self, node: NodeId) {
        self.by_node.remove(&node);
    }

    /// Withdraws `voter`'s dead vote for `node`; whether it had one.
    pub fn withdraw(&mut self, node: NodeId, voter: &str) -> bool {
        self.by_node
            .get_mut(&node)
            .is_some_and(|v| v.remove(voter).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeCondition::*;

    const POLICY: Policy = Policy {
        dead_quorum: 2,
        maintenance_window: Duration::from_secs(60),
    };

    #[test]
    fn transition_table() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        // (current, event, live dead votes, seconds since the condition was set, expected:
        //  Some(Some(to)) a change, Some(None) no change, None refused)
        type Case = (
            NodeCondition,
            Event,
            usize,
            u64,
            Option<Option<NodeCondition>>,
        );
        let stop = Event::Reported { stopping: true };
        let beat = Event::Reported { stopping: false };
        let table: Vec<Case> = vec![
            // The node's own reports: a graceful stop starts maintenance, the return ends it.
            (Up, stop, 0, 0, Some(Some(Maintenance))),
            (Maintenance, beat, 0, 5, Some(Some(Up))),
            (Maintenance, stop, 0, 5, Some(None)),
            (Up, beat, 0, 0, Some(None)),
            (Dead, beat, 0, 0, Some(None)),
            (Dead, stop, 0, 0, Some(None)),
            (Draining, stop, 0, 0, Some(None)),
            (Draining, beat, 0, 0, Some(None)),
            (Decommissioned, beat, 0, 0, Some(None)),
            // Sentinels: alive revives only a dead node; dead votes need the quorum.
            (Dead, Event::SeenAlive, 0, 0, Some(Some(Up))),
            (Up, Event::SeenAlive, 0, 0, Some(None)),
            (Maintenance, Event::SeenAlive, 0, 0, Some(None)),
            (Draining, Event::SeenAlive, 0, 0, Some(None)),
            (Up, Event::VotedDead, 1, 0, Some(None)),
            (Up, Event::VotedDead, 2, 0, Some(Some(Dead))),
            (Up, Event::VotedDead, 3, 0, Some(Some(Dead))),
            (Maintenance, Event::VotedDead, 5, 0, Some(None)),
            (Draining, Event::VotedDead, 5, 0, Some(None)),
            (Decommissioned, Event::VotedDead, 5, 0, Some(None)),
            (Dead, Event::VotedDead, 5, 0, Some(None)),
            // Admin drains.
            (Up, Event::DrainRequested(true), 0, 0, Some(Some(Draining))),
            (
                Maintenance,
                Event::DrainRequested(true),
                0,
                0,
                Some(Some(Draining)),
            ),
            (Draining, Event::DrainRequested(true), 0, 0, Some(None)),
            (
                Decommissioned,
                Event::DrainRequested(true),
                0,
                0,
                Some(None),
            ),
            (Dead, Event::DrainRequested(true), 0, 0, None),
            (Draining, Event::DrainRequested(false), 0, 0, Some(Some(Up))),
            (
                Decommissioned,
                Event::DrainRequested(false),
                0,
                0,
                Some(Some(Up)),
            ),
            (Up, Event::DrainRequested(false), 0, 0, Some(None)),
            (Maintenance, Event::DrainRequested(false), 0, 0, Some(None)),
            (Dead, Event::DrainRequested(false), 0, 0, Some(None)),
            // A complete drain decommissions only a draining node.
            (Draining, Event::Drained, 0, 0, Some(Some(Decommissioned))),
            (Up, Event::Drained, 0, 0, Some(None)),
            (Dead, Event::Drained, 0, 0, Some(None)),
            // The maintenance window runs out at exactly its length, not before.
            (Maintenance, Event::Tick, 0, 59, Some(None)),
            (Maintenance, Event::Tick, 0, 60, Some(Some(Dead))),
            (Maintenance, Event::Tick, 0, 600, Some(Some(Dead))),
            (Up, Event::Tick, 0, 600, Some(None)),
            (Draining, Event::Tick, 0, 600, Some(None)),
        ];
        for (current, event, votes, age, want) in table {
            let got = next(current, t0, event, votes, t0 + secs(age), &POLICY)
                .ok()
                .map(|c| c.map(|c| c.to));
            assert_eq!(got, want, "{current:?} {event:?} votes={votes} age={age}s");
        }
    }

    #[test]
    fn a_quorum_of_zero_is_one() {
        let t0 = Instant::now();
        let policy = Policy {
            dead_quorum: 0,
            ..POLICY
        };
        assert_eq!(
            next(Up, t0, Event::VotedDead, 0, t0, &policy).ok(),
            Some(None)
        );
        let dead = next(Up, t0, Event::VotedDead, 1, t0, &policy)
            .ok()
            .flatten();
        assert_eq!(dead.map(|c| c.to), Some(Dead));
    }

    #[test]
    fn votes_count_distinct_sentinels_within_the_window() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut votes = Votes::default();
        let (a, b) = (NodeId(1), NodeId(2));
        // (node, voter, at second, expected live votes for the node)
        let table = [
            (a, "s1", 0, 1),
            // The same sentinel again: still one voter.
            (a, "s1", 1, 1),
            (a, "s2", 2, 2),
            // Votes for another node are counted apart.
            (b, "s1", 3, 1),
            // s1's vote (second 1) is 10 s old at second 11: out of the window.
            (a, "s3", 11, 2),
            (a, "s1", 30, 1),
        ];
        for (node, voter, second, want) in table {
            assert_eq!(
                votes.vote_dead(node, voter.to_string(), at(second), window),
                want,
                "{node} {voter} at {second}s"
            );
        }
        assert!(votes.withdraw(a, "s1"));
        assert!(!votes.withdraw(a, "s1"), "withdrawn once");
        assert!(
            !votes.withdraw(NodeId(9), "s1"),
            "no votes for an unknown node"
        );
        assert_eq!(votes.vote_dead(a, "s2".into(), at(31), window), 1);
    }
}

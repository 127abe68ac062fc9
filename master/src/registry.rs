//! The node registry: every chunkserver the master knows, when it was last heard from and
//! its latest self-reported status. Pure bookkeeping over an injected `now: Instant`, so
//! the online/offline rule is table-tested without sleeping. It never does I/O: the
//! cluster control (`crate::cluster`) owns it, persists node ids and addresses through the
//! store and mirrors them here, and adds each node's condition to the views.

use crate::plan::NodeView;
use common::NodeId;
use common::types::{NodeCondition, NodeStatus};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Entry {
    addr: String,
    last_heard: Option<Instant>,
    status: NodeStatus,
    /// Bytes of new chunks placed on the node since its last report: counted as used until
    /// the next heartbeat reports the node's real usage, so that placements between two
    /// heartbeats do not all see the same free space and overfill a small node.
    reserved: u64,
}

#[derive(Debug)]
pub struct Registry {
    offline_after: Duration,
    nodes: BTreeMap<NodeId, Entry>,
}

impl Registry {
    pub fn new(offline_after: Duration) -> Registry {
        Registry {
            offline_after,
            nodes: BTreeMap::new(),
        }
    }

    /// A node known from the database at start-up: offline until its first heartbeat.
    pub fn load(&mut self, node: NodeId, addr: String) {
        self.nodes.entry(node).or_insert(Entry {
            addr,
            last_heard: None,
            status: NodeStatus::default(),
            reserved: 0,
        });
    }

    /// A node registered (or re-registered, possibly at a new address).
    pub fn registered(&mut self, node: NodeId, addr: String, status: NodeStatus, now: Instant) {
        self.nodes.insert(
            node,
            Entry {
                addr,
                last_heard: Some(now),
                status,
                reserved: 0,
            },
        );
    }

    /// Records a heartbeat; false when the node is unknown (it must register again).
    pub fn heartbeat(&mut self, node: NodeId, status: NodeStatus, now: Instant) -> bool {
        match self.nodes.get_mut(&node) {
            Some(entry) => {
                entry.last_heard = Some(now);
                entry.status = status;
                // The report counts what was written by now; a chunk placed but not yet
                // written is reserved again by the next placement that would overfill.
                entry.reserved = 0;
                true
            }
            None => false,
        }
    }

    /// Counts `bytes` as used on `node` until its next heartbeat (a new chunk placed on it).
    pub fn reserve(&mut self, node: NodeId, bytes: u64) {
        if let Some(entry) = self.nodes.get_mut(&node) {
            entry.reserved = entry.reserved.saturating_add(bytes);
        }
    }

    /// Drops a forgotten node; whether it was known.
    pub fn forget(&mut self, node: NodeId) -> bool {
        self.nodes.remove(&node).is_some()
    }

    pub fn knows(&self, node: NodeId) -> bool {
        self.nodes.contains_key(&node)
    }

    fn is_online(&self, entry: &Entry, now: Instant) -> bool {
        entry
            .last_heard
            .is_some_and(|t| now.saturating_duration_since(t) < self.offline_after)
    }

    /// Every known node as seen at `now`, ordered by id, with its condition from
    /// `conditions` (absent: up); `used_bytes` includes what was reserved since the node's
    /// last report.
    pub fn views(
        &self,
        now: Instant,
        conditions: &HashMap<NodeId, NodeCondition>,
    ) -> Vec<NodeView> {
        self.nodes
            .iter()
            .map(|(&node, entry)| NodeView {
                node,
                addr: entry.addr.clone(),
                online: self.is_online(entry, now),
                last_seen: entry.last_heard.map(|t| now.saturating_duration_since(t)),
                status: NodeStatus {
                    used_bytes: entry.status.used_bytes.saturating_add(entry.reserved),
                    ..entry.status.clone()
                },
                condition: conditions.get(&node).copied().unwrap_or_default(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(used: u64) -> NodeStatus {
        NodeStatus {
            capacity_bytes: 100,
            used_bytes: used,
            ..NodeStatus::default()
        }
    }

    #[test]
    fn online_means_heard_within_the_window() {
        let t0 = Instant::now();
        let window = Duration::from_millis(5_000);
        // (heard at offset ms or never, viewed at offset ms) -> online
        let table: &[(Option<u64>, u64, bool)] = &[
            (None, 0, false),
            (Some(0), 0, true),
            (Some(0), 4_999, true),
            (Some(0), 5_000, false),
            (Some(1_000), 5_500, true),
            (Some(1_000), 60_000, false),
            // A clock reading before the heartbeat (never in production) counts as fresh.
            (Some(2_000), 1_000, true),
        ];
        for &(heard, at, want) in table {
            let mut reg = Registry::new(window);
            reg.load(NodeId(1), "a:1".into());
            if let Some(h) = heard {
                assert!(reg.heartbeat(NodeId(1), status(0), t0 + Duration::from_millis(h)));
            }
            let views = reg.views(t0 + Duration::from_millis(at), &HashMap::new());
            assert_eq!(views[0].online, want, "heard {heard:?} viewed {at}");
            assert_eq!(views[0].last_seen.is_some(), heard.is_some());
        }
    }

    #[test]
    fn unknown_nodes_must_register_and_status_is_kept() {
        let t0 = Instant::now();
        let mut reg = Registry::new(Duration::from_secs(5));
        assert!(!reg.heartbeat(NodeId(9), status(1), t0));
        assert!(!reg.knows(NodeId(9)));
        reg.registered(NodeId(9), "h:9".into(), status(10), t0);
        assert!(reg.knows(NodeId(9)));
        assert!(reg.heartbeat(NodeId(9), status(40), t0 + Duration::from_secs(1)));
        let view = &reg.views(t0 + Duration::from_secs(2), &HashMap::new())[0];
        assert_eq!(view.addr, "h:9");
        assert_eq!(view.free_bytes(), 60);
        assert_eq!(view.last_seen, Some(Duration::from_secs(1)));
        // Loading from the database never clobbers a live entry.
        reg.load(NodeId(9), "stale:1".into());
        assert_eq!(reg.views(t0, &HashMap::new())[0].addr, "h:9");
    }

    #[test]
    fn reservations_count_as_used_until_the_next_heartbeat() {
        let t0 = Instant::now();
        let mut reg = Registry::new(Duration::from_secs(5));
        reg.registered(NodeId(1), "h:1".into(), status(10), t0);
        // (reserve bytes, heartbeat used) -> free seen afterwards
        let table: &[(u64, Option<u64>, u64)] = &[
            (30, None, 60),
            (30, None, 30),
            (50, None, 0),
            (0, Some(70), 30),
            (20, None, 10),
        ];
        for &(reserve, beat, free) in table {
            reg.reserve(NodeId(1), reserve);
            if let Some(used) = beat {
                assert!(reg.heartbeat(NodeId(1), status(used), t0));
            }
            assert_eq!(
                reg.views(t0, &HashMap::new())[0].free_bytes(),
                free,
                "reserve {reserve} beat {beat:?}"
            );
        }
        // Unknown nodes are ignored.
        reg.reserve(NodeId(7), 1);
        assert_eq!(reg.views(t0, &HashMap::new()).len(), 1);
    }
}

//! Summary counts for `cluster_summary`.
//!
//! Read-only: it must never write.

use super::SqliteStore;
use crate::store::SummaryCounts;
use common::{FsResult, NodeId};
use std::collections::{HashMap, HashSet};

impl SqliteStore {
    pub(super) fn summary(
        &self,
        online: &HashSet<NodeId>,
        replicas_goal: u32,
    ) -> FsResult<SummaryCounts> {
        self.read(|c| {
            let mut s = SummaryCounts::default();
            let (files, dirs, bytes): (i64, i64, i64) = c
                .prepare_cached(
                    "SELECT coalesce(sum(kind = 'file' AND nlink > 0), 0),
                            coalesce(sum(kind = 'dir' AND nlink > 0), 0),
                            coalesce(sum(CASE WHEN kind = 'file' THEN size ELSE 0 END), 0)
                     FROM inodes",
                )?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            s.files = files as u64;
            s.dirs = dirs as u64;
            s.logical_bytes = bytes as u64;
            s.chunks = c
                .prepare_cached("SELECT count(*) FROM chunks WHERE confirmed > 0")?
                .query_row([], |r| r.get::<_, i64>(0))? as u64;
            // Current replicas per committed chunk, counted on online nodes only.
            let mut live: HashMap<i64, u64> = HashMap::new();
            {
                let mut stmt = c.prepare_cached(
                    "SELECT r.chunk, r.node FROM replicas r JOIN chunks ch ON ch.id = r.chunk
                     WHERE ch.confirmed > 0 AND r.version = ch.confirmed AND r.bad = 0",
                )?;
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    let chunk: i64 = row.get(0)?;
                    let node = NodeId(row.get::<_, i64>(1)? as u64);
                    let n = live.entry(chunk).or_insert(0);
                    if online.contains(&node) {
                        *n += 1;
                    }
                }
            }
            let with_live = live.values().filter(|&&n| n > 0).count() as u64;
            s.lost = s.chunks.saturating_sub(with_live);
            // Each chunk against its file's goal (the cluster's for files without one).
            let mut goals: HashMap<i64, u64> = HashMap::new();
            {
                let mut stmt = c.prepare_cached(
                    "SELECT ch.id, coalesce(i.goal, ?1) FROM chunks ch
                     JOIN inodes i ON i.ino = ch.ino WHERE ch.confirmed > 0",
                )?;
                let rows = stmt.query_map([i64::from(replicas_goal)], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(1) as u64))
                })?;
                for row in rows {
                    let (chunk, goal) = row?;
                    goals.insert(chunk, goal);
                }
            }
            let full = live
                .iter()
                .filter(|(chunk, n)| {
                    **n >= goals
                        .get(chunk)
                        .copied()
                        .unwrap_or(u64::from(replicas_goal))
                })
                .count() as u64;
            s.under_replicated = s.chunks.saturating_sub(full);
            let mut stmt = c.prepare_cached("SELECT node, count(*) FROM replicas GROUP BY node")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    NodeId(r.get::<_, i64>(0)? as u64),
                    r.get::<_, i64>(1)? as u64,
                ))
            })?;
            for row in rows {
                let (node, n) = row?;
                s.replicas_per_node.insert(node, n);
            }
            Ok(s)
        })
    }
}

//! Nodes: registration, conditions, the garbage-collection queue, inventory
//! reconciliation, bad replicas, and the replication queries the repair, trim, drain and
//! rebalance planners read (under and over goal, node contents, movable chunks).
//!
//! It answers queries and applies decisions; it must never plan (which chunk to copy or
//! trim where is decided by the planners outside the store).

use super::namespace::path_of;
use super::rows::{chunk_by_id, condition_name, goal_row, inode_goal, parse_condition};
use super::{R, SqliteStore};
use crate::store::{GC_BATCH, NODE_CONTENTS_PAGE_MAX, ReplicaRecord};
use common::types::{HeldChunk, NodeCondition, NodeReplica, Timespec};
use common::{ChunkId, FsError, FsResult, InodeId, NodeId, Version};
use rusqlite::{Connection, OptionalExtension as _, params};
use serde_bytes::ByteBuf;
use std::collections::{HashMap, HashSet};

/// Nodes whose replicas do not count toward any goal (declared dead, draining or
/// decommissioned: `NodeCondition::counts`). A draining node's replicas are never trimmed
/// for counting here: trims only remove counting replicas.
pub(super) const DEAD_NODES: &str = "SELECT node FROM node_conditions
      WHERE condition IN ('dead', 'draining', 'decommissioned')";

/// Counting current replicas of chunk `ch` (a correlated subquery).
pub(super) const COUNTING: &str = "(SELECT count(*) FROM replicas r
      WHERE r.chunk = ch.id AND r.version = ch.confirmed AND r.bad = 0
        AND r.node NOT IN (SELECT node FROM node_conditions
                           WHERE condition IN ('dead', 'draining', 'decommissioned')))";

/// Every replica row of each chunk, for the repair planner.
pub(super) fn chunk_replica_rows(
    c: &Connection,
    ids: Vec<(ChunkId, u64, u64, u32)>,
) -> R<Vec<crate::plan::repair::ChunkReplicas>> {
    let mut out = Vec::with_capacity(ids.len());
    for (chunk, confirmed, length, goal) in ids {
        let mut stmt = c.prepare_cached(
            "SELECT node, version, bad FROM replicas WHERE chunk = ?1 ORDER BY node",
        )?;
        let rows = stmt.query_map([chunk.0 as i64], |r| {
            Ok(crate::plan::repair::ReplicaRow {
                node: NodeId(r.get::<_, i64>(0)? as u64),
                version: Version(r.get::<_, i64>(1)? as u64),
                bad: r.get(2)?,
            })
        })?;
        out.push(crate::plan::repair::ChunkReplicas {
            chunk,
            confirmed: Version(confirmed),
            length,
            goal: goal as usize,
            replicas: rows.collect::<rusqlite::Result<_>>()?,
        });
    }
    Ok(out)
}

/// Committed chunks with a row on `node` and no healthy current replica on any other node.
fn last_copies(c: &Connection, node: NodeId) -> R<u64> {
    let n: i64 = c
        .prepare_cached(
            "SELECT count(*) FROM replicas mine JOIN chunks ch ON ch.id = mine.chunk
             WHERE mine.node = ?1 AND ch.confirmed > 0
               AND NOT EXISTS (SELECT 1 FROM replicas r
                               WHERE r.chunk = ch.id AND r.node != ?1
                                 AND r.version = ch.confirmed AND r.bad = 0)",
        )?
        .query_row([node.0 as i64], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

impl SqliteStore {
    pub(super) fn mark_bad_replica(&self, chunk: ChunkId, node: NodeId) -> FsResult<bool> {
        self.write(|c| {
            let n = c
                .prepare_cached("UPDATE replicas SET bad = 1 WHERE chunk = ?1 AND node = ?2")?
                .execute(params![chunk.0 as i64, node.0 as i64])?;
            if n == 0 {
                return Ok(false);
            }
            // Delete the bad copy only while another healthy current copy exists: if this
            // was the last one, its bytes stay on disk (unserved) for repair by an admin.
            let others: bool = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM replicas r JOIN chunks ch ON ch.id = r.chunk
                     WHERE r.chunk = ?1 AND r.bad = 0 AND r.version = ch.confirmed)",
                )?
                .query_row([chunk.0 as i64], |r| r.get(0))?;
            if others {
                c.prepare_cached("INSERT OR IGNORE INTO gc_queue (chunk, node) VALUES (?1, ?2)")?
                    .execute(params![chunk.0 as i64, node.0 as i64])?;
            } else {
                tracing::warn!(chunk = %chunk, node = %node,
                    "last current replica reported bad: kept on disk, not served");
            }
            Ok(true)
        })
    }

    pub(super) fn register_node(
        &self,
        node: Option<NodeId>,
        addr: &str,
        now: Timespec,
    ) -> FsResult<NodeId> {
        self.write(|c| match node {
            Some(id) => {
                if id.0 == 0 || id.0 > i64::MAX as u64 {
                    return Err(FsError::Invalid(format!("node id {id:?} out of range")).into());
                }
                // A forgotten node's process (its data directory) must not recreate the node
                // behind the admin's back: final, as a foreign cluster's directory is.
                let forgotten: bool = c
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM forgotten_nodes WHERE id = ?1)")?
                    .query_row([id.0 as i64], |r| r.get(0))?;
                if forgotten {
                    return Err(FsError::WrongCluster(format!(
                        "node {id} was forgotten by an admin (`mosaic-sentinel forget`): this \
                         data directory must not rejoin; empty it to join as a new node"
                    ))
                    .into());
                }
                c.prepare_cached(
                    "INSERT INTO nodes (id, addr, registered_sec) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET addr = excluded.addr",
                )?
                .execute(params![id.0 as i64, addr, now.sec])?;
                Ok(id)
            }
            None => {
                let id: i64 = c
                    .prepare_cached(
                        "INSERT INTO nodes (addr, registered_sec) VALUES (?1, ?2) RETURNING id",
                    )?
                    .query_row(params![addr, now.sec], |r| r.get(0))?;
                Ok(NodeId(id as u64))
            }
        })
    }

    pub(super) fn list_nodes(&self) -> FsResult<Vec<(NodeId, String)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT id, addr FROM nodes ORDER BY id")?;
            let rows = stmt.query_map([], |r| {
                Ok((NodeId(r.get::<_, i64>(0)? as u64), r.get::<_, String>(1)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    pub(super) fn last_copies(&self, node: NodeId) -> FsResult<u64> {
        self.read(|c| last_copies(c, node))
    }

    pub(super) fn forget_node(&self, node: NodeId, now: Timespec) -> FsResult<u64> {
        self.write(|c| {
            // Checked again inside the transaction: a copy may have been dropped since the
            // caller's check.
            let last = last_copies(c, node)?;
            if last > 0 {
                return Err(FsError::Invalid(format!(
                    "node {node} holds the last copy of {last} chunk(s)"
                ))
                .into());
            }
            let id = node.0 as i64;
            let replicas = c
                .prepare_cached("DELETE FROM replicas WHERE node = ?1")?
                .execute([id])?;
            c.prepare_cached("DELETE FROM gc_queue WHERE node = ?1")?
                .execute([id])?;
            c.prepare_cached("DELETE FROM node_conditions WHERE node = ?1")?
                .execute([id])?;
            let known = c
                .prepare_cached("DELETE FROM nodes WHERE id = ?1")?
                .execute([id])?;
            if known == 0 {
                return Err(FsError::NotFound.into());
            }
            c.prepare_cached(
                "INSERT OR REPLACE INTO forgotten_nodes (id, forgotten_sec) VALUES (?1, ?2)",
            )?
            .execute(params![id, now.sec])?;
            Ok(replicas as u64)
        })
    }

    pub(super) fn take_gc(&self, node: NodeId, max: usize) -> FsResult<Vec<ChunkId>> {
        let max = max.min(GC_BATCH);
        self.write(|c| {
            let queued: Vec<ChunkId> = {
                let mut stmt = c.prepare_cached(
                    "SELECT chunk FROM gc_queue WHERE node = ?1 ORDER BY chunk LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![node.0 as i64, max as i64], |r| {
                    Ok(ChunkId(r.get::<_, i64>(0)? as u64))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut out = Vec::with_capacity(queued.len());
            for chunk in queued {
                c.prepare_cached("DELETE FROM gc_queue WHERE chunk = ?1 AND node = ?2")?
                    .execute(params![chunk.0 as i64, node.0 as i64])?;
                // Never order the deletion of a replica the chunk table still counts on.
                let live: bool = c
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM replicas
                         WHERE chunk = ?1 AND node = ?2 AND bad = 0)",
                    )?
                    .query_row(params![chunk.0 as i64, node.0 as i64], |r| r.get(0))?;
                if live {
                    continue;
                }
                c.prepare_cached("DELETE FROM replicas WHERE chunk = ?1 AND node = ?2")?
                    .execute(params![chunk.0 as i64, node.0 as i64])?;
                out.push(chunk);
            }
            Ok(out)
        })
    }

    pub(super) fn under_goal_chunks(
        &self,
        goal: u32,
        max: usize,
    ) -> FsResult<Vec<crate::plan::repair::ChunkReplicas>> {
        self.read(|c| {
            // A scan of the chunk table: fine for the tables this master holds today; a
            // queue of chunks to look at (filled by reports and commits) replaces it when
            // the table outgrows a scan per second.
            let ids = {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT ch.id, ch.confirmed, ch.length, coalesce(i.goal, ?1) AS g, {COUNTING} AS n
                     FROM chunks ch LEFT JOIN inodes i ON i.ino = ch.ino
                     WHERE ch.confirmed > 0 AND n < g
                     ORDER BY n, ch.id LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![goal as i64, max as i64], goal_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            chunk_replica_rows(c, ids)
        })
    }

    pub(super) fn under_goal_totals(&self, goal: u32) -> FsResult<(u64, u64)> {
        self.read(|c| {
            let (n, bytes): (i64, i64) = c
                .prepare_cached(&format!(
                    "SELECT count(*), coalesce(sum(length), 0) FROM
                     (SELECT ch.length, coalesce(i.goal, ?1) AS g, {COUNTING} AS n
                      FROM chunks ch LEFT JOIN inodes i ON i.ino = ch.ino
                      WHERE ch.confirmed > 0 AND n < g)"
                ))?
                .query_row([goal as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((n.max(0) as u64, bytes.max(0) as u64))
        })
    }

    pub(super) fn over_goal_chunks(
        &self,
        goal: u32,
        max: usize,
    ) -> FsResult<Vec<crate::plan::repair::ChunkReplicas>> {
        self.read(|c| {
            let ids = {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT ch.id, ch.confirmed, ch.length, coalesce(i.goal, ?1) AS g, {COUNTING} AS n
                     FROM chunks ch LEFT JOIN inodes i ON i.ino = ch.ino
                     WHERE ch.confirmed > 0 AND n > g
                     ORDER BY ch.id LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![goal as i64, max as i64], goal_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            chunk_replica_rows(c, ids)
        })
    }

    pub(super) fn trim_replica(&self, chunk: ChunkId, node: NodeId, goal: u32) -> FsResult<bool> {
        self.write(|c| {
            // Re-checked inside the transaction: the plan may be a round old. The file's own
            // goal wins over the cluster's.
            let goal = match chunk_by_id(c, chunk)? {
                Some(row) => inode_goal(c, row.ino)?.unwrap_or(goal),
                None => return Ok(false),
            };
            let others: i64 = c
                .prepare_cached(&format!(
                    "SELECT count(*) FROM replicas r JOIN chunks ch ON ch.id = r.chunk
                     WHERE r.chunk = ?1 AND r.node <> ?2 AND ch.confirmed > 0
                       AND r.version = ch.confirmed AND r.bad = 0
                       AND r.node NOT IN ({DEAD_NODES})"
                ))?
                .query_row(params![chunk.0 as i64, node.0 as i64], |r| r.get(0))?;
            if others < i64::from(goal.max(1)) {
                return Ok(false);
            }
            let n = c
                .prepare_cached("DELETE FROM replicas WHERE chunk = ?1 AND node = ?2")?
                .execute(params![chunk.0 as i64, node.0 as i64])?;
            if n == 0 {
                return Ok(false);
            }
            c.prepare_cached("INSERT OR IGNORE INTO gc_queue (chunk, node) VALUES (?1, ?2)")?
                .execute(params![chunk.0 as i64, node.0 as i64])?;
            Ok(true)
        })
    }

    pub(super) fn set_node_condition(
        &self,
        node: NodeId,
        condition: NodeCondition,
        now: Timespec,
    ) -> FsResult<()> {
        self.write(|c| {
            match condition_name(condition) {
                None => {
                    c.prepare_cached("DELETE FROM node_conditions WHERE node = ?1")?
                        .execute([node.0 as i64])?;
                }
                Some(name) => {
                    c.prepare_cached(
                        "INSERT INTO node_conditions (node, condition, since_sec)
                         VALUES (?1, ?2, ?3)
                         ON CONFLICT (node) DO UPDATE
                         SET condition = excluded.condition, since_sec = excluded.since_sec",
                    )?
                    .execute(params![node.0 as i64, name, now.sec])?;
                }
            }
            Ok(())
        })
    }

    pub(super) fn node_conditions(&self) -> FsResult<Vec<(NodeId, NodeCondition, i64)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT node, condition, since_sec FROM node_conditions ORDER BY node",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    NodeId(r.get::<_, i64>(0)? as u64),
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (node, name, since) = row?;
                match parse_condition(&name) {
                    Some(condition) => out.push((node, condition, since)),
                    // Written by a newer master: ignore rather than guess.
                    None => {
                        tracing::warn!(%node, condition = %name, "unknown node condition ignored")
                    }
                }
            }
            Ok(out)
        })
    }

    pub(super) fn record_copy(
        &self,
        chunk: ChunkId,
        node: NodeId,
        version: Version,
    ) -> FsResult<bool> {
        self.write(|c| {
            if chunk_by_id(c, chunk)?.is_none() {
                // Freed while the copy ran: the new replica is garbage.
                c.prepare_cached("INSERT OR IGNORE INTO gc_queue (chunk, node) VALUES (?1, ?2)")?
                    .execute(params![chunk.0 as i64, node.0 as i64])?;
                return Ok(false);
            }
            c.prepare_cached(
                "INSERT INTO replicas (chunk, node, version, bad) VALUES (?1, ?2, ?3, 0)
                 ON CONFLICT (chunk, node) DO UPDATE
                 SET version = max(version, excluded.version), bad = 0",
            )?
            .execute(params![chunk.0 as i64, node.0 as i64, version.0 as i64])?;
            // The copy replaced whatever deletion was pending for this node's old replica.
            c.prepare_cached("DELETE FROM gc_queue WHERE chunk = ?1 AND node = ?2")?
                .execute(params![chunk.0 as i64, node.0 as i64])?;
            Ok(true)
        })
    }

    pub(super) fn node_contents(
        &self,
        node: NodeId,
        after: ChunkId,
        limit: u32,
    ) -> FsResult<Vec<NodeReplica>> {
        let limit = limit.min(NODE_CONTENTS_PAGE_MAX);
        // Ids are stored as SQLite integers (i64); a cursor past that range has nothing after it.
        let Ok(after) = i64::try_from(after.0) else {
            return Ok(Vec::new());
        };
        let Ok(node) = i64::try_from(node.0) else {
            return Ok(Vec::new());
        };
        self.read(|c| {
            // replicas_by_node plus the chunk primary key: one page is O(limit).
            let mut stmt = c.prepare_cached(
                "SELECT r.chunk, ch.ino, ch.idx, r.version,
                        ch.confirmed > 0 AND r.version = ch.confirmed AND r.bad = 0
                 FROM replicas r JOIN chunks ch ON ch.id = r.chunk
                 WHERE r.node = ?1 AND r.chunk > ?2
                 ORDER BY r.chunk LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![node, after, limit], |r| {
                Ok(NodeReplica {
                    chunk: ChunkId(r.get::<_, i64>(0)? as u64),
                    ino: InodeId(r.get::<_, i64>(1)? as u64),
                    index: r.get::<_, i64>(2)? as u64,
                    version: Version(r.get::<_, i64>(3)? as u64),
                    current: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    pub(super) fn confirm_replicas(
        &self,
        chunk: ChunkId,
        base: Version,
        version: Version,
        nodes: &[NodeId],
    ) -> FsResult<Vec<NodeId>> {
        if version <= base || nodes.len() > common::types::MAX_GOAL as usize {
            return Err(FsError::Invalid(format!(
                "confirm_replicas of {chunk:?}: v{:x} on base v{:x} for {} nodes",
                version.0,
                base.0,
                nodes.len()
            )));
        }
        self.write(|c| {
            let mut moved = Vec::new();
            for &node in nodes.iter().collect::<HashSet<_>>() {
                // The replica was current at `base` when granted and no commit, report or
                // trim touched it since; the chunk's committed version is this write's.
                let n = c
                    .prepare_cached(
                        "UPDATE replicas SET version = ?4
                         WHERE chunk = ?1 AND node = ?2 AND bad = 0 AND version = ?3
                           AND (SELECT confirmed FROM chunks WHERE id = ?1) = ?4",
                    )?
                    .execute(params![
                        chunk.0 as i64,
                        node.0 as i64,
                        base.0 as i64,
                        version.0 as i64
                    ])?;
                if n == 1 {
                    moved.push(node);
                }
            }
            moved.sort();
            Ok(moved)
        })
    }

    pub(super) fn node_files(
        &self,
        node: NodeId,
        after: ChunkId,
        limit: u32,
    ) -> FsResult<Vec<common::types::NodeFileChunk>> {
        // Two short read transactions: a rename between them only changes which name is
        // shown, and the listing is informative, never used to decide anything.
        let replicas = self.node_contents(node, after, limit)?;
        self.read(|c| {
            let mut paths = HashMap::new();
            replicas
                .into_iter()
                .map(|replica| {
                    Ok(common::types::NodeFileChunk {
                        path: path_of(c, replica.ino, &mut paths)?.map(ByteBuf::from),
                        replica,
                    })
                })
                .collect()
        })
    }

    pub(super) fn replica_record(
        &self,
        chunk: ChunkId,
        node: NodeId,
    ) -> FsResult<Option<ReplicaRecord>> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT ch.confirmed, r.version, r.bad FROM replicas r
                 JOIN chunks ch ON ch.id = r.chunk WHERE r.chunk = ?1 AND r.node = ?2",
            )?
            .query_row(params![chunk.0 as i64, node.0 as i64], |r| {
                Ok(ReplicaRecord {
                    confirmed: Version(r.get::<_, i64>(0)? as u64),
                    version: Version(r.get::<_, i64>(1)? as u64),
                    bad: r.get(2)?,
                })
            })
            .optional()?)
        })
    }

    pub(super) fn clear_bad_replica(&self, chunk: ChunkId, node: NodeId) -> FsResult<Option<bool>> {
        self.write(|c| {
            let bad: Option<bool> = c
                .prepare_cached("SELECT bad FROM replicas WHERE chunk = ?1 AND node = ?2")?
                .query_row(params![chunk.0 as i64, node.0 as i64], |r| r.get(0))
                .optional()?;
            if bad == Some(true) {
                c.prepare_cached("UPDATE replicas SET bad = 0 WHERE chunk = ?1 AND node = ?2")?
                    .execute(params![chunk.0 as i64, node.0 as i64])?;
                // A deletion queued by the bad mark must not run on the replica we keep.
                c.prepare_cached("DELETE FROM gc_queue WHERE chunk = ?1 AND node = ?2")?
                    .execute(params![chunk.0 as i64, node.0 as i64])?;
            }
            Ok(bad)
        })
    }

    pub(super) fn drain_goal(&self, node: NodeId, goal: u32) -> FsResult<u32> {
        self.read(|c| {
            let max: Option<i64> = c
                .prepare_cached(
                    "SELECT max(coalesce(i.goal, ?1)) FROM chunks ch
                     LEFT JOIN inodes i ON i.ino = ch.ino
                     WHERE ch.confirmed > 0
                       AND EXISTS (SELECT 1 FROM replicas d WHERE d.chunk = ch.id AND d.node = ?2)",
                )?
                .query_row(params![goal as i64, node.0 as i64], |r| r.get(0))?;
            Ok(max.map_or(0, |g| g.clamp(0, i64::from(common::types::MAX_GOAL)) as u32))
        })
    }

    pub(super) fn drain_remaining(&self, node: NodeId, goal: u32) -> FsResult<u64> {
        self.read(|c| {
            let n: i64 = c
                .prepare_cached(&format!(
                    "SELECT count(*) FROM
                     (SELECT coalesce(i.goal, ?1) AS g, {COUNTING} AS n
                      FROM chunks ch LEFT JOIN inodes i ON i.ino = ch.ino
                      WHERE ch.confirmed > 0
                        AND EXISTS (SELECT 1 FROM replicas d
                                    WHERE d.chunk = ch.id AND d.node = ?2)
                        AND n < g)"
                ))?
                .query_row(params![goal as i64, node.0 as i64], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
    }

    pub(super) fn replica_bytes(&self) -> FsResult<HashMap<NodeId, u64>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT r.node, coalesce(sum(ch.length), 0) FROM replicas r
                 JOIN chunks ch ON ch.id = r.chunk
                 WHERE ch.confirmed > 0 AND r.version = ch.confirmed AND r.bad = 0
                 GROUP BY r.node",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    NodeId(r.get::<_, i64>(0)? as u64),
                    r.get::<_, i64>(1)?.max(0) as u64,
                ))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    pub(super) fn movable_chunks(
        &self,
        from: NodeId,
        to: NodeId,
        goal: u32,
        max: usize,
    ) -> FsResult<Vec<crate::plan::repair::ChunkReplicas>> {
        self.read(|c| {
            let ids = {
                let mut stmt = c.prepare_cached(
                    "SELECT ch.id, ch.confirmed, ch.length, coalesce(i.goal, ?1) AS g
                     FROM replicas r JOIN chunks ch ON ch.id = r.chunk
                     LEFT JOIN inodes i ON i.ino = ch.ino
                     WHERE r.node = ?2 AND ch.confirmed > 0 AND r.version = ch.confirmed
                       AND r.bad = 0
                       AND NOT EXISTS (SELECT 1 FROM replicas t
                                       WHERE t.chunk = ch.id AND t.node = ?3)
                     ORDER BY ch.id LIMIT ?4",
                )?;
                let rows = stmt.query_map(
                    params![goal as i64, from.0 as i64, to.0 as i64, max as i64],
                    goal_row,
                )?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            chunk_replica_rows(c, ids)
        })
    }

    pub(super) fn reconcile_tx(
        &self,
        c: &Connection,
        node: NodeId,
        held: &[HeldChunk],
    ) -> R<Vec<ChunkId>> {
        let mut delete = Vec::new();
        let mut seen = HashSet::new();
        for h in held {
            if !seen.insert(h.chunk) {
                continue;
            }
            let chunk = chunk_by_id(c, h.chunk)?;
            let replica: Option<(u64, bool)> = c
                .prepare_cached("SELECT version, bad FROM replicas WHERE chunk = ?1 AND node = ?2")?
                .query_row(params![h.chunk.0 as i64, node.0 as i64], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
                })
                .optional()?;
            let queued: bool = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM gc_queue WHERE chunk = ?1 AND node = ?2)",
                )?
                .query_row(params![h.chunk.0 as i64, node.0 as i64], |r| r.get(0))?;
            let drop = match (&chunk, replica) {
                // Unknown chunk, or a chunk this node was never given: garbage.
                (None, _) | (Some(_), None) => true,
                // Allocated and maybe being written right now: a commit may still name it.
                (Some(_), Some((0, _))) => false,
                // Reported bad: deleted once that was decided (it is queued).
                (Some(_), Some((_, true))) => queued,
                (Some(chunk), Some(_)) => h.version.0 < chunk.confirmed,
            };
            if drop {
                c.prepare_cached("DELETE FROM replicas WHERE chunk = ?1 AND node = ?2")?
                    .execute(params![h.chunk.0 as i64, node.0 as i64])?;
                c.prepare_cached("DELETE FROM gc_queue WHERE chunk = ?1 AND node = ?2")?
                    .execute(params![h.chunk.0 as i64, node.0 as i64])?;
                delete.push(h.chunk);
            }
        }
        Ok(delete)
    }
}

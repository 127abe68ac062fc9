//! Data-path transactions: chunk maps for readers, write grants (`prepare_write`, which
//! calls placement to choose the nodes of new chunks) and write commits.
//!
//! It must never change the namespace beyond what a committed write does to a file (its
//! size and times), and never hand out a node placement did not choose.

use super::rows::{CHUNK_COLS, ChunkRow, chunk_by_id, chunk_row, get_attr, inode_goal, write_attr};
use super::{R, SqliteStore};
use crate::plan::NodeView;
use crate::plan::placement;
use crate::store::MAX_CHUNKS_PER_REQUEST;
use crate::store::rules::{self};
use common::types::{
    Attr, ChunkLoc, CommitWrite, FileKind, MAX_FILE_SIZE, NodeAddr, ReplicationPolicy, Timespec,
    WriteGrant,
};
use common::{ChunkId, FsError, FsResult, InodeId, NodeId, Version};
use rusqlite::{Connection, OptionalExtension as _, params};
use std::collections::{HashMap, HashSet};

/// Replicas holding the chunk's confirmed version and not reported bad, with addresses.
pub(super) fn current_replicas(
    c: &Connection,
    chunk: ChunkId,
    confirmed: u64,
) -> R<Vec<(NodeId, String)>> {
    let mut stmt = c.prepare_cached(
        "SELECT r.node, n.addr FROM replicas r JOIN nodes n ON n.id = r.node
         WHERE r.chunk = ?1 AND r.version = ?2 AND r.bad = 0",
    )?;
    let rows = stmt.query_map(params![chunk.0 as i64, confirmed as i64], |r| {
        Ok((NodeId(r.get::<_, i64>(0)? as u64), r.get::<_, String>(1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Orders replicas for readers and writers: online first, then least loaded, then by id.
pub(super) fn ordered_addrs(
    replicas: Vec<(NodeId, String)>,
    views: &HashMap<NodeId, &NodeView>,
) -> Vec<NodeAddr> {
    let mut out: Vec<(bool, NodeAddr)> = replicas
        .into_iter()
        .map(|(node, addr)| match views.get(&node) {
            Some(v) => (
                v.online,
                NodeAddr {
                    node,
                    addr: v.addr.clone(),
                    load: v.status.load(),
                },
            ),
            None => (
                false,
                NodeAddr {
                    node,
                    addr,
                    load: u64::MAX,
                },
            ),
        })
        .collect();
    out.sort_by(|(a_on, a), (b_on, b)| {
        b_on.cmp(a_on)
            .then(a.load.cmp(&b.load))
            .then(a.node.cmp(&b.node))
    });
    out.into_iter().map(|(_, a)| a).collect()
}

pub(super) fn view_map(nodes: &[NodeView]) -> HashMap<NodeId, &NodeView> {
    nodes.iter().map(|v| (v.node, v)).collect()
}

/// A regular file for data operations: directories are EISDIR, other kinds EINVAL.
pub(super) fn require_file(c: &Connection, ino: InodeId) -> R<Attr> {
    let a = get_attr(c, ino)?;
    match a.kind {
        FileKind::File => Ok(a),
        FileKind::Dir => Err(FsError::IsDir.into()),
        other => Err(FsError::Invalid(format!("{} has no data chunks", other.as_str())).into()),
    }
}

impl SqliteStore {
    pub(super) fn chunk_map(
        &self,
        ino: InodeId,
        first: u64,
        count: u64,
        nodes: &[NodeView],
    ) -> FsResult<Vec<ChunkLoc>> {
        self.read(|c| {
            require_file(c, ino)?;
            let views = view_map(nodes);
            let first = first.min(i64::MAX as u64);
            let end = first
                .saturating_add(count.min(MAX_CHUNKS_PER_REQUEST))
                .min(i64::MAX as u64);
            let chunks: Vec<ChunkRow> = {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {CHUNK_COLS} FROM chunks
                     WHERE ino = ?1 AND idx >= ?2 AND idx < ?3 AND confirmed > 0 ORDER BY idx"
                ))?;
                let rows =
                    stmt.query_map(params![ino.0 as i64, first as i64, end as i64], chunk_row)?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut out = Vec::with_capacity(chunks.len());
            for chunk in chunks {
                // A committed chunk with no current replica is still listed (empty): the
                // reader must fail with EIO, never read the range as a hole of zeros.
                let replicas = current_replicas(c, chunk.id, chunk.confirmed)?;
                out.push(ChunkLoc {
                    index: chunk.idx,
                    chunk: chunk.id,
                    version: Version(chunk.confirmed),
                    length: chunk.length,
                    replicas: ordered_addrs(replicas, &views),
                });
            }
            Ok(out)
        })
    }

    pub(super) fn prepare_write(
        &self,
        ino: InodeId,
        indexes: &[u64],
        nodes: &[NodeView],
        policy: ReplicationPolicy,
    ) -> FsResult<Vec<WriteGrant>> {
        // The bumped versions are committed before the grants are returned: a replica that
        // accepted a write at version v can never be mistaken for one that did not.
        self.write(|c| self.prepare_write_tx(c, ino, indexes, nodes, policy))
    }

    pub(super) fn prepare_write_tx(
        &self,
        c: &Connection,
        ino: InodeId,
        indexes: &[u64],
        nodes: &[NodeView],
        policy: ReplicationPolicy,
    ) -> R<Vec<WriteGrant>> {
        if indexes.len() as u64 > MAX_CHUNKS_PER_REQUEST {
            return Err(FsError::Invalid(format!(
                "prepare_write names {} chunks, at most {MAX_CHUNKS_PER_REQUEST} allowed",
                indexes.len()
            ))
            .into());
        }
        require_file(c, ino)?;
        let chunk_size = self.cluster.chunk_size;
        let views = view_map(nodes);
        let goal = inode_goal(c, ino)?.unwrap_or(policy.n);
        let quorum = policy.quorum_for(goal) as usize;
        let mut seen = HashSet::new();
        let mut grants = Vec::with_capacity(indexes.len());
        for &index in indexes {
            if !seen.insert(index) {
                continue;
            }
            match index.checked_mul(chunk_size) {
                Some(start) if start < MAX_FILE_SIZE => {}
                _ => return Err(FsError::FileTooBig.into()),
            }
            let existing = c
                .prepare_cached(&format!(
                    "SELECT {CHUNK_COLS} FROM chunks WHERE ino = ?1 AND idx = ?2"
                ))?
                .query_row(params![ino.0 as i64, index as i64], chunk_row)
                .optional()?;
            let grant = match existing {
                Some(chunk) => {
                    // Only replicas that hold the current data may take the write: a fresh,
                    // empty replica would later serve zeros for blocks it never received.
                    let current = current_replicas(c, chunk.id, chunk.confirmed)?;
                    let online: Vec<(NodeId, String)> = current
                        .into_iter()
                        .filter(|(n, _)| views.get(n).is_some_and(|v| v.online))
                        .collect();
                    if online.len() < quorum {
                        return Err(FsError::Unavailable(format!(
                            "chunk {:?} has {} current replicas online, a write needs {quorum}",
                            chunk.id,
                            online.len()
                        ))
                        .into());
                    }
                    let version = chunk.version + 1;
                    c.prepare_cached("UPDATE chunks SET version = ?2 WHERE id = ?1")?
                        .execute(params![chunk.id.0 as i64, version as i64])?;
                    WriteGrant {
                        index,
                        chunk: chunk.id,
                        version: Version(version),
                        base: Version(chunk.confirmed),
                        length: chunk.length,
                        replicas: ordered_addrs(online, &views),
                        quorum: quorum as u32,
                    }
                }
                None => {
                    let chosen = placement::choose_replicas(
                        nodes,
                        goal as usize,
                        &[],
                        placement::NEW_CHUNK_FOOTPRINT,
                    );
                    if chosen.len() < quorum {
                        return Err(placement::shortfall(nodes, quorum, chosen.len()).into());
                    }
                    let id: i64 = c
                        .prepare_cached(
                            "INSERT INTO chunks (ino, idx, version, confirmed, length)
                             VALUES (?1, ?2, 1, 0, 0) RETURNING id",
                        )?
                        .query_row(params![ino.0 as i64, index as i64], |r| r.get(0))?;
                    let chunk = ChunkId(id as u64);
                    let mut replicas = Vec::with_capacity(chosen.len());
                    for node in chosen {
                        c.prepare_cached(
                            "INSERT INTO replicas (chunk, node, version) VALUES (?1, ?2, 0)",
                        )?
                        .execute(params![id, node.0 as i64])?;
                        let addr = views.get(&node).map(|v| v.addr.clone()).unwrap_or_default();
                        replicas.push((node, addr));
                    }
                    WriteGrant {
                        index,
                        chunk,
                        version: Version(1),
                        base: Version(0),
                        length: 0,
                        replicas: ordered_addrs(replicas, &views),
                        quorum: quorum as u32,
                    }
                }
            };
            grants.push(grant);
        }
        Ok(grants)
    }

    pub(super) fn commit_write_tx(
        &self,
        c: &Connection,
        commit: &CommitWrite,
        write_quorum: u32,
        now: Timespec,
    ) -> R<Attr> {
        let mut a = require_file(c, commit.ino)?;
        // A file whose goal is below W needs only its goal of acknowledgements; a NULL goal
        // follows N, and W <= N.
        let write_quorum = match inode_goal(c, commit.ino)? {
            Some(goal) => write_quorum.min(goal).max(1),
            None => write_quorum,
        };
        if commit.size > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig.into());
        }
        if commit.mtime.nsec >= 1_000_000_000 {
            return Err(FsError::Invalid("mtime nanoseconds out of range".into()).into());
        }
        if commit.chunks.len() as u64 > MAX_CHUNKS_PER_REQUEST {
            return Err(FsError::Invalid("too many chunks in one commit".into()).into());
        }
        let chunk_size = self.cluster.chunk_size;
        // Validate everything first: a commit is applied whole or not at all.
        let mut plans = Vec::with_capacity(commit.chunks.len());
        for cc in &commit.chunks {
            let row = chunk_by_id(c, cc.chunk)?
                .filter(|row| row.ino == commit.ino && row.idx == cc.index)
                .ok_or_else(|| {
                    FsError::Invalid(format!(
                        "chunk {:?} is not chunk {} of {:?}",
                        cc.chunk, cc.index, commit.ino
                    ))
                })?;
            if cc.version.0 == 0 || cc.version.0 > row.version {
                return Err(FsError::Invalid(format!(
                    "chunk {:?}: commit of {:?}, newest grant is v{:x}",
                    cc.chunk, cc.version, row.version
                ))
                .into());
            }
            if cc.written_end > chunk_size {
                return Err(FsError::Invalid(format!(
                    "chunk {:?}: written end {} past the chunk size {chunk_size}",
                    cc.chunk, cc.written_end
                ))
                .into());
            }
            let mut acked = Vec::new();
            for &node in cc.ok_nodes.iter().collect::<HashSet<_>>() {
                let healthy: Option<bool> = c
                    .prepare_cached("SELECT bad = 0 FROM replicas WHERE chunk = ?1 AND node = ?2")?
                    .query_row(params![cc.chunk.0 as i64, node.0 as i64], |r| r.get(0))
                    .optional()?;
                if healthy == Some(true) {
                    acked.push(node);
                }
            }
            if acked.len() < write_quorum as usize {
                return Err(FsError::Unavailable(format!(
                    "chunk {:?}: {} replicas acknowledged, a write needs {write_quorum}",
                    cc.chunk,
                    acked.len()
                ))
                .into());
            }
            plans.push((cc, acked));
        }
        for (cc, acked) in plans {
            for node in acked {
                c.prepare_cached(
                    "UPDATE replicas SET version = max(version, ?3) WHERE chunk = ?1 AND node = ?2",
                )?
                .execute(params![
                    cc.chunk.0 as i64,
                    node.0 as i64,
                    cc.version.0 as i64
                ])?;
            }
            c.prepare_cached(
                "UPDATE chunks SET confirmed = max(confirmed, ?2), length = max(length, ?3)
                 WHERE id = ?1",
            )?
            .execute(params![
                cc.chunk.0 as i64,
                cc.version.0 as i64,
                cc.written_end as i64
            ])?;
        }
        a.size = a.size.max(commit.size);
        a.mtime = commit.mtime;
        a.ctime = now;
        if commit.clear_suid {
            a.perm = rules::clear_suid(a.perm);
        }
        write_attr(c, &a)?;
        Ok(a)
    }
}

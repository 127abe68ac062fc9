//! The SQLite metadata engine: one writing connection in WAL mode behind a mutex, one
//! immediate transaction per operation; reads run on a small pool of read-only connections
//! ([`SqliteStore::read`]), each in its own read transaction, so a lookup never waits for a
//! writer's commit and disk flush. A read sees every commit that finished before it began
//! (SQLite publishes a WAL commit to readers only after it is written and, with
//! `durable_commits`, flushed), so an answer read after a mutation was answered includes it.
//! This module is the only place in the master that speaks SQL.
//!
//! Durability: with `durable_commits` the connection runs `synchronous=FULL`, so a commit
//! has fsynced the WAL before the call returns; with NORMAL a commit survives a crash of the
//! master process but not a power loss. Either way the service replies only after commit.
//! One exception, `release`: it is committed without a flush of its own even with
//! `durable_commits` ([`SqliteStore::write_once_relaxed`]). It becomes durable with the next
//! durable commit (the WAL is one ordered log, so flushing a later commit flushes every
//! earlier one); only a power loss before then can forget it, and a forgotten release only
//! leaves the file counted as open by its session until the session ends: an unlinked
//! file's data is kept longer, never freed early.
//!
//! One room per concern: `conn` (opening, transactions, at-most-once answers, the read
//! pool), `rows` (row codecs), `namespace` (directory tree, attributes, xattrs, goals),
//! `data` (chunk maps, write grants and commits; it calls placement), `nodes`
//! (registration, conditions, GC queue, replication queries), `sessions` (sessions, open
//! files, locks) and `summary`. This file holds the engine's shared types and wires
//! [`MetaStore`] to those rooms; it must never grow SQL or rules of its own.

use super::{ClusterRecord, Freed, LockRecord, MetaStore, ReplicaRecord, SummaryCounts};
use crate::plan::NodeView;
use common::types::{
    Attr, ChunkLoc, CommitWrite, DirPage, HeldChunk, NewNode, NodeCondition, NodeReplica,
    RenameFlags, ReplicationPolicy, SetAttr, Timespec, WriteGrant, XattrFlags,
};
use common::{ChunkId, FsError, FsResult, InodeId, NodeId, SessionId, Version};
use parking_lot::Mutex;
use rusqlite::Connection;
use std::collections::{HashMap, HashSet};

mod conn;
mod data;
mod namespace;
mod nodes;
mod rows;
mod sessions;
mod summary;

use rows::{get_attr, inode_goal};
use sessions::{register_open, session_exists};

/// Internal error: either a filesystem answer or a database failure, so that `?` works on
/// both inside one transaction. Converted to `FsError` at the trait boundary.
#[derive(Debug)]
enum Error {
    Fs(FsError),
    Db(rusqlite::Error),
}

impl From<FsError> for Error {
    fn from(e: FsError) -> Self {
        Error::Fs(e)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Db(e)
    }
}

impl From<Error> for FsError {
    fn from(e: Error) -> Self {
        match e {
            Error::Fs(e) => e,
            Error::Db(e) => FsError::Io(format!("metadata database: {e}")),
        }
    }
}

type R<T> = Result<T, Error>;

pub struct SqliteStore {
    conn: Mutex<Connection>,
    cluster: ClusterRecord,
    /// `durable_commits`: the connection runs `synchronous=FULL` (else NORMAL).
    durable: bool,
    /// The database file, for opening read connections.
    path: std::path::PathBuf,
    /// Idle read-only connections, most recently used last (its statement cache is warm).
    readers: Mutex<Vec<Connection>>,
    /// The writing connection may still run `synchronous=NORMAL` (a relaxed write could not
    /// restore FULL): every write restores it first, or fails.
    relaxed: std::sync::atomic::AtomicBool,
}

// The trait is wired here; each method delegates to the room that owns it (an inherent
// method of the same name, which takes precedence over the trait method), or is a one-line
// transaction kept inline.
impl MetaStore for SqliteStore {
    fn cluster(&self) -> &ClusterRecord {
        &self.cluster
    }

    fn create_session(&self, client: &str, now: Timespec) -> FsResult<SessionId> {
        SqliteStore::create_session(self, client, now)
    }

    fn list_sessions(&self) -> FsResult<Vec<SessionId>> {
        SqliteStore::list_sessions(self)
    }

    fn end_session(&self, session: SessionId) -> FsResult<Freed> {
        SqliteStore::end_session(self, session)
    }

    fn free_orphans(&self) -> FsResult<Freed> {
        SqliteStore::free_orphans(self)
    }

    fn open(&self, session: SessionId, ino: InodeId) -> FsResult<Attr> {
        self.write_once(|c| {
            if !session_exists(c, session)? {
                return Err(FsError::BadHandle.into());
            }
            let a = get_attr(c, ino)?;
            register_open(c, session, ino)?;
            Ok(a)
        })
    }

    fn release(&self, session: SessionId, ino: InodeId) -> FsResult<()> {
        SqliteStore::release(self, session, ino)
    }

    fn lookup(&self, parent: InodeId, name: &[u8]) -> FsResult<Attr> {
        SqliteStore::lookup(self, parent, name)
    }

    fn getattr(&self, ino: InodeId) -> FsResult<Attr> {
        self.read(|c| get_attr(c, ino))
    }

    fn setattr(&self, ino: InodeId, set: &SetAttr, now: Timespec) -> FsResult<Attr> {
        self.write_once(|c| self.setattr_tx(c, ino, set, now))
    }

    fn create(
        &self,
        parent: InodeId,
        name: &[u8],
        node: &NewNode,
        now: Timespec,
    ) -> FsResult<Attr> {
        self.write_once(|c| self.create_tx(c, parent, name, node, now))
    }

    fn unlink(&self, parent: InodeId, name: &[u8], now: Timespec) -> FsResult<()> {
        self.write_once(|c| self.unlink_tx(c, parent, name, now))
    }

    fn rmdir(&self, parent: InodeId, name: &[u8], now: Timespec) -> FsResult<()> {
        self.write_once(|c| self.rmdir_tx(c, parent, name, now))
    }

    fn rename(
        &self,
        parent: InodeId,
        name: &[u8],
        new_parent: InodeId,
        new_name: &[u8],
        flags: RenameFlags,
        now: Timespec,
    ) -> FsResult<()> {
        self.write_once(|c| self.rename_tx(c, parent, name, new_parent, new_name, flags, now))
    }

    fn link(
        &self,
        ino: InodeId,
        new_parent: InodeId,
        new_name: &[u8],
        now: Timespec,
    ) -> FsResult<Attr> {
        self.write_once(|c| self.link_tx(c, ino, new_parent, new_name, now))
    }

    fn readlink(&self, ino: InodeId) -> FsResult<Vec<u8>> {
        SqliteStore::readlink(self, ino)
    }

    fn readdir(&self, ino: InodeId, after: u64, limit: u32, plus: bool) -> FsResult<DirPage> {
        SqliteStore::readdir(self, ino, after, limit, plus)
    }

    fn inode_count(&self) -> FsResult<u64> {
        SqliteStore::inode_count(self)
    }

    fn getxattr(&self, ino: InodeId, name: &[u8]) -> FsResult<Vec<u8>> {
        SqliteStore::getxattr(self, ino, name)
    }

    fn setxattr(
        &self,
        ino: InodeId,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
        now: Timespec,
    ) -> FsResult<()> {
        SqliteStore::setxattr(self, ino, name, value, flags, now)
    }

    fn listxattr(&self, ino: InodeId) -> FsResult<Vec<Vec<u8>>> {
        SqliteStore::listxattr(self, ino)
    }

    fn removexattr(&self, ino: InodeId, name: &[u8], now: Timespec) -> FsResult<()> {
        SqliteStore::removexattr(self, ino, name, now)
    }

    fn chunk_map(
        &self,
        ino: InodeId,
        first: u64,
        count: u64,
        nodes: &[NodeView],
    ) -> FsResult<Vec<ChunkLoc>> {
        SqliteStore::chunk_map(self, ino, first, count, nodes)
    }

    fn prepare_write(
        &self,
        ino: InodeId,
        indexes: &[u64],
        nodes: &[NodeView],
        policy: ReplicationPolicy,
    ) -> FsResult<Vec<WriteGrant>> {
        SqliteStore::prepare_write(self, ino, indexes, nodes, policy)
    }

    fn commit_write(
        &self,
        commit: &CommitWrite,
        write_quorum: u32,
        now: Timespec,
    ) -> FsResult<Attr> {
        self.write(|c| self.commit_write_tx(c, commit, write_quorum, now))
    }

    fn mark_bad_replica(&self, chunk: ChunkId, node: NodeId) -> FsResult<bool> {
        SqliteStore::mark_bad_replica(self, chunk, node)
    }

    fn replica_record(&self, chunk: ChunkId, node: NodeId) -> FsResult<Option<ReplicaRecord>> {
        SqliteStore::replica_record(self, chunk, node)
    }

    fn clear_bad_replica(&self, chunk: ChunkId, node: NodeId) -> FsResult<Option<bool>> {
        SqliteStore::clear_bad_replica(self, chunk, node)
    }

    fn register_node(&self, node: Option<NodeId>, addr: &str, now: Timespec) -> FsResult<NodeId> {
        SqliteStore::register_node(self, node, addr, now)
    }

    fn list_nodes(&self) -> FsResult<Vec<(NodeId, String)>> {
        SqliteStore::list_nodes(self)
    }

    fn last_copies(&self, node: NodeId) -> FsResult<u64> {
        SqliteStore::last_copies(self, node)
    }

    fn forget_node(&self, node: NodeId, now: Timespec) -> FsResult<u64> {
        SqliteStore::forget_node(self, node, now)
    }

    fn take_gc(&self, node: NodeId, max: usize) -> FsResult<Vec<ChunkId>> {
        SqliteStore::take_gc(self, node, max)
    }

    fn reconcile_chunks(&self, node: NodeId, held: &[HeldChunk]) -> FsResult<Vec<ChunkId>> {
        self.write(|c| self.reconcile_tx(c, node, held))
    }

    fn under_goal_chunks(
        &self,
        goal: u32,
        max: usize,
    ) -> FsResult<Vec<crate::plan::repair::ChunkReplicas>> {
        SqliteStore::under_goal_chunks(self, goal, max)
    }

    fn under_goal_totals(&self, goal: u32) -> FsResult<(u64, u64)> {
        SqliteStore::under_goal_totals(self, goal)
    }

    fn over_goal_chunks(
        &self,
        goal: u32,
        max: usize,
    ) -> FsResult<Vec<crate::plan::repair::ChunkReplicas>> {
        SqliteStore::over_goal_chunks(self, goal, max)
    }

    fn trim_replica(&self, chunk: ChunkId, node: NodeId, goal: u32) -> FsResult<bool> {
        SqliteStore::trim_replica(self, chunk, node, goal)
    }

    fn set_node_condition(
        &self,
        node: NodeId,
        condition: NodeCondition,
        now: Timespec,
    ) -> FsResult<()> {
        SqliteStore::set_node_condition(self, node, condition, now)
    }

    fn node_conditions(&self) -> FsResult<Vec<(NodeId, NodeCondition, i64)>> {
        SqliteStore::node_conditions(self)
    }

    fn record_copy(&self, chunk: ChunkId, node: NodeId, version: Version) -> FsResult<bool> {
        SqliteStore::record_copy(self, chunk, node, version)
    }

    fn summary(&self, online: &HashSet<NodeId>, replicas_goal: u32) -> FsResult<SummaryCounts> {
        SqliteStore::summary(self, online, replicas_goal)
    }

    fn node_contents(
        &self,
        node: NodeId,
        after: ChunkId,
        limit: u32,
    ) -> FsResult<Vec<NodeReplica>> {
        SqliteStore::node_contents(self, node, after, limit)
    }

    fn save_locks(&self, ino: InodeId, locks: &[LockRecord]) -> FsResult<()> {
        SqliteStore::save_locks(self, ino, locks)
    }

    fn load_locks(&self) -> FsResult<Vec<LockRecord>> {
        SqliteStore::load_locks(self)
    }

    fn goal(&self, ino: InodeId) -> FsResult<Option<u32>> {
        self.read(|c| inode_goal(c, ino))
    }

    fn set_goal(&self, ino: InodeId, goal: u32) -> FsResult<u64> {
        SqliteStore::set_goal(self, ino, goal)
    }

    fn confirm_replicas(
        &self,
        chunk: ChunkId,
        base: Version,
        version: Version,
        nodes: &[NodeId],
    ) -> FsResult<Vec<NodeId>> {
        SqliteStore::confirm_replicas(self, chunk, base, version, nodes)
    }

    fn path(&self, ino: InodeId) -> FsResult<Option<Vec<u8>>> {
        SqliteStore::path(self, ino)
    }

    fn node_files(
        &self,
        node: NodeId,
        after: ChunkId,
        limit: u32,
    ) -> FsResult<Vec<common::types::NodeFileChunk>> {
        SqliteStore::node_files(self, node, after, limit)
    }

    fn drain_goal(&self, node: NodeId, goal: u32) -> FsResult<u32> {
        SqliteStore::drain_goal(self, node, goal)
    }

    fn drain_remaining(&self, node: NodeId, goal: u32) -> FsResult<u64> {
        SqliteStore::drain_remaining(self, node, goal)
    }

    fn replica_bytes(&self) -> FsResult<HashMap<NodeId, u64>> {
        SqliteStore::replica_bytes(self)
    }

    fn movable_chunks(
        &self,
        from: NodeId,
        to: NodeId,
        goal: u32,
        max: usize,
    ) -> FsResult<Vec<crate::plan::repair::ChunkReplicas>> {
        SqliteStore::movable_chunks(self, from, to, goal, max)
    }

    fn create_open(
        &self,
        session: SessionId,
        parent: InodeId,
        name: &[u8],
        node: &NewNode,
        now: Timespec,
    ) -> FsResult<Attr> {
        SqliteStore::create_open(self, session, parent, name, node, now)
    }
}

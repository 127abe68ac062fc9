//! The master's metadata store: the one narrow interface between the RPC service and the
//! database. All SQL lives behind [`MetaStore`]; the service never sees a connection, so a
//! second engine (e.g. a replicated one for high availability) plugs in by implementing
//! this trait and reusing the engine-independent rules in [`rules`].
//!
//! Contract for every implementation: each mutating call is one atomic, durable transaction
//! (durable as configured: `durable_commits`), and returns only after it committed, so the
//! service can answer the client as soon as the call returns. Mutating namespace calls made
//! inside [`with_op`] must be applied at most once per operation id: the engine records the
//! answer in the same transaction as the mutation and answers a repeat with it. Errors are typed `FsError`s;
//! a database failure maps to `FsError::Io`. Calls block: the service runs them on a
//! blocking thread.

pub mod rules;
pub mod schema;
pub mod sqlite;

pub use sqlite::SqliteStore;

#[cfg(test)]
mod tests;

use crate::plan::NodeView;
use common::types::{
    Attr, ChunkLoc, CommitWrite, DirPage, HeldChunk, NewNode, NodeCondition, NodeReplica,
    RenameFlags, ReplicationPolicy, SetAttr, Timespec, WriteGrant, XattrFlags,
};
use common::{ChunkId, ClusterId, FsResult, InodeId, NodeId, SessionId, Version};
use std::collections::{HashMap, HashSet};

/// Most chunk indexes one `prepare_write` may name, and most chunks one `chunk_map`
/// returns: 1024 chunks of 64 MiB is 64 GiB, far more than a client asks at once, while the
/// work per request (one transaction) stays bounded.
pub const MAX_CHUNKS_PER_REQUEST: u64 = 1024;
/// Most deletions handed to one node with one heartbeat reply: bounds the reply size and
/// the node's work per beat; the rest follow with the next beats.
pub const GC_BATCH: usize = 1000;
/// Most replicas one `node_contents` page returns: a page of 10,000 small rows is a few
/// hundred KiB on the wire and one short read transaction, so a node with millions of
/// replicas is listed without holding the database or building a huge reply.
pub const NODE_CONTENTS_PAGE_MAX: u32 = 10_000;

/// The cluster's identity, fixed at init.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRecord {
    pub id: ClusterId,
    pub chunk_size: u64,
    pub key_check: Vec<u8>,
}

/// Counts for `cluster_summary`, computed by the store from the node set it is given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SummaryCounts {
    pub files: u64,
    pub dirs: u64,
    /// Committed chunks (confirmed version > 0).
    pub chunks: u64,
    pub under_replicated: u64,
    pub lost: u64,
    pub logical_bytes: u64,
    pub replicas_per_node: HashMap<NodeId, u64>,
}

/// One held advisory lock as the store keeps it (see `crate::locks`): locks are persisted
/// so that a master restart does not drop them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRecord {
    pub session: SessionId,
    pub ino: InodeId,
    pub owner: u64,
    /// First byte; `end` is inclusive, `u64::MAX` = to the end of any file.
    pub start: u64,
    pub end: u64,
    pub write: bool,
    pub pid: u32,
}

/// One replica row with its chunk's confirmed version ([`MetaStore::replica_record`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaRecord {
    pub confirmed: Version,
    pub version: Version,
    pub bad: bool,
}

/// What a freed inode or session left behind, for logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Freed {
    pub inodes: u64,
    pub replicas_queued: u64,
}

pub trait MetaStore: Send + Sync + 'static {
    fn cluster(&self) -> &ClusterRecord;

    // Sessions and open files.
    fn create_session(&self, client: &str, now: Timespec) -> FsResult<SessionId>;
    fn list_sessions(&self) -> FsResult<Vec<SessionId>>;
    /// Ends a session: drops its open files and frees inodes nobody holds any more.
    fn end_session(&self, session: SessionId) -> FsResult<Freed>;
    /// Frees every unlinked inode that no session holds (after a crash or expiry).
    fn free_orphans(&self) -> FsResult<Freed>;
    fn open(&self, session: SessionId, ino: InodeId) -> FsResult<Attr>;
    /// The session's descriptor of `ino` closed. Committed without a disk flush of its own
    /// (see `sqlite/mod.rs`, "Durability"): a crash may forget it, which only keeps the file
    /// counted as open until the session ends, never frees anything early.
    fn release(&self, session: SessionId, ino: InodeId) -> FsResult<()>;

    // Namespace.
    fn lookup(&self, parent: InodeId, name: &[u8]) -> FsResult<Attr>;
    fn getattr(&self, ino: InodeId) -> FsResult<Attr>;
    fn setattr(&self, ino: InodeId, set: &SetAttr, now: Timespec) -> FsResult<Attr>;
    fn create(&self, parent: InodeId, name: &[u8], node: &NewNode, now: Timespec)
    -> FsResult<Attr>;
    fn unlink(&self, parent: InodeId, name: &[u8], now: Timespec) -> FsResult<()>;
    fn rmdir(&self, parent: InodeId, name: &[u8], now: Timespec) -> FsResult<()>;
    fn rename(
        &self,
        parent: InodeId,
        name: &[u8],
        new_parent: InodeId,
        new_name: &[u8],
        flags: RenameFlags,
        now: Timespec,
    ) -> FsResult<()>;
    fn link(
        &self,
        ino: InodeId,
        new_parent: InodeId,
        new_name: &[u8],
        now: Timespec,
    ) -> FsResult<Attr>;
    fn readlink(&self, ino: InodeId) -> FsResult<Vec<u8>>;
    fn readdir(&self, ino: InodeId, after: u64, limit: u32, plus: bool) -> FsResult<DirPage>;
    fn inode_count(&self) -> FsResult<u64>;

    // Extended attributes.
    fn getxattr(&self, ino: InodeId, name: &[u8]) -> FsResult<Vec<u8>>;
    fn setxattr(
        &self,
        ino: InodeId,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
        now: Timespec,
    ) -> FsResult<()>;
    fn listxattr(&self, ino: InodeId) -> FsResult<Vec<Vec<u8>>>;
    fn removexattr(&self, ino: InodeId, name: &[u8], now: Timespec) -> FsResult<()>;

    // File data placement and versions.
    fn chunk_map(
        &self,
        ino: InodeId,
        first: u64,
        count: u64,
        nodes: &[NodeView],
    ) -> FsResult<Vec<ChunkLoc>>;
    fn prepare_write(
        &self,
        ino: InodeId,
        indexes: &[u64],
        nodes: &[NodeView],
        policy: ReplicationPolicy,
    ) -> FsResult<Vec<WriteGrant>>;
    fn commit_write(
        &self,
        commit: &CommitWrite,
        write_quorum: u32,
        now: Timespec,
    ) -> FsResult<Attr>;
    /// Marks a replica bad; returns false when the store has no such replica.
    fn mark_bad_replica(&self, chunk: ChunkId, node: NodeId) -> FsResult<bool>;
    /// `node`'s replica row of `chunk` and the chunk's confirmed version; `None` when the
    /// store has no such replica.
    fn replica_record(&self, chunk: ChunkId, node: NodeId) -> FsResult<Option<ReplicaRecord>>;
    /// Clears `node`'s bad mark on `chunk` and cancels the replica's queued deletion;
    /// returns whether it was marked bad, `None` when the store has no such replica.
    fn clear_bad_replica(&self, chunk: ChunkId, node: NodeId) -> FsResult<Option<bool>>;

    // Chunkservers.
    /// Records a node (a known id keeps it; `None` allocates one) at `addr`.
    fn register_node(&self, node: Option<NodeId>, addr: &str, now: Timespec) -> FsResult<NodeId>;
    fn list_nodes(&self) -> FsResult<Vec<(NodeId, String)>>;
    /// Committed chunks with a replica row on `node` (any version, bad or not) of which no
    /// other node holds a healthy current replica: what forgetting `node` would lose.
    fn last_copies(&self, node: NodeId) -> FsResult<u64>;
    /// Forgets `node` in one transaction: its replica rows, queued deletions, condition and
    /// node row go, and its id is recorded so that it can never register again. Refused
    /// (`Invalid`) while [`Self::last_copies`] is not 0. Returns the replica rows removed.
    fn forget_node(&self, node: NodeId, now: Timespec) -> FsResult<u64>;
    /// Hands out (and removes from the queue) up to `max` replica deletions for `node`.
    fn take_gc(&self, node: NodeId, max: usize) -> FsResult<Vec<ChunkId>>;
    /// Compares a node's full inventory with the replica table; returns what it must delete.
    fn reconcile_chunks(&self, node: NodeId, held: &[HeldChunk]) -> FsResult<Vec<ChunkId>>;
    fn summary(&self, online: &HashSet<NodeId>, replicas_goal: u32) -> FsResult<SummaryCounts>;

    // Repair (see `crate::repair`).
    /// Committed chunks with fewer than `goal` current replicas (on any node, reachable or
    /// not) and every replica row of each, least replicated first, at most `max`.
    fn under_goal_chunks(
        &self,
        goal: u32,
        max: usize,
    ) -> FsResult<Vec<crate::plan::repair::ChunkReplicas>>;
    /// Records a finished copy: `node` holds `chunk` at `version`. When the chunk was freed
    /// meanwhile, queues the copy for deletion instead and returns false.
    fn record_copy(&self, chunk: ChunkId, node: NodeId, version: Version) -> FsResult<bool>;
    /// Replicas recorded on `node` with chunk id above `after`, in chunk id order, at most
    /// `limit` (callers cap it at [`NODE_CONTENTS_PAGE_MAX`]).
    fn node_contents(&self, node: NodeId, after: ChunkId, limit: u32)
    -> FsResult<Vec<NodeReplica>>;

    // Advisory locks (see `crate::locks`; the table itself is in memory).
    /// Replaces every persisted lock on `ino` by `locks` (all of them on `ino`).
    /// `end_session` drops a session's locks.
    fn save_locks(&self, ino: InodeId, locks: &[LockRecord]) -> FsResult<()>;
    /// Every persisted lock of a session that still exists, for the master's start.
    fn load_locks(&self) -> FsResult<Vec<LockRecord>>;

    // Replication goals (docs/PROTOCOL.md, "Replication goal").
    /// The goal set on `ino` (`None`: it follows the cluster's N).
    fn goal(&self, ino: InodeId) -> FsResult<Option<u32>>;
    /// Sets `goal` on `ino` and, for a directory, on every inode beneath it, in one
    /// transaction; returns how many inodes it set. Applied at most once per operation id.
    fn set_goal(&self, ino: InodeId, goal: u32) -> FsResult<u64>;

    // Node conditions and re-replication (see `crate::repair`). Replicas on a node whose
    // condition is `Dead`, `Draining` or `Decommissioned` do not count as current in the
    // queries below (`NodeCondition::counts`).
    /// Records `node`'s condition (`Up` removes the record).
    fn set_node_condition(
        &self,
        node: NodeId,
        condition: NodeCondition,
        now: Timespec,
    ) -> FsResult<()>;
    /// Every recorded condition other than `Up`, with the second it was set.
    fn node_conditions(&self) -> FsResult<Vec<(NodeId, NodeCondition, i64)>>;
    /// How many committed chunks are below `goal` counting current replicas, and their
    /// total committed length: the re-replication still to do.
    fn under_goal_totals(&self, goal: u32) -> FsResult<(u64, u64)>;
    /// Committed chunks with more than `goal` counting current replicas and every replica
    /// row of each, at most `max`.
    fn over_goal_chunks(
        &self,
        goal: u32,
        max: usize,
    ) -> FsResult<Vec<crate::plan::repair::ChunkReplicas>>;
    /// Removes `node`'s current replica of `chunk` as surplus (queued for deletion), only if
    /// the chunk keeps at least `goal` counting current replicas on other nodes; returns
    /// whether it was removed.
    fn trim_replica(&self, chunk: ChunkId, node: NodeId, goal: u32) -> FsResult<bool>;

    /// Replicas that finished a committed write late (docs/PROTOCOL.md, "Acknowledgement at
    /// W"): each of `nodes` whose replica of `chunk` is healthy and at `base` moves to
    /// `version`, only while `version` is the chunk's confirmed version. Returns those moved.
    fn confirm_replicas(
        &self,
        chunk: ChunkId,
        base: Version,
        version: Version,
        nodes: &[NodeId],
    ) -> FsResult<Vec<NodeId>>;

    /// [`Self::node_contents`] with one path per replica's file: built by walking dentries
    /// up to the root; a hard-linked file gets its first name in (parent, name) order, an
    /// unlinked one `None`.
    /// An absolute path of `ino` (`/a/b`, the root is `/`), one name per inode as in
    /// [`Self::node_files`]; `None` when it has no name left (unlinked).
    fn path(&self, ino: InodeId) -> FsResult<Option<Vec<u8>>>;
    fn node_files(
        &self,
        node: NodeId,
        after: ChunkId,
        limit: u32,
    ) -> FsResult<Vec<common::types::NodeFileChunk>>;

    /// What a drain of `node` still waits for: committed chunks with a replica row on
    /// `node` (any version) that have fewer than their goal (the file's, else `goal`)
    /// counting current replicas. 0 means no chunk needs the node any more.
    fn drain_remaining(&self, node: NodeId, goal: u32) -> FsResult<u64>;
    /// The largest goal (the file's, else `goal`) among committed chunks with a replica
    /// row on `node`: how many other nodes a drain of `node` needs. 0 when it holds none.
    fn drain_goal(&self, node: NodeId, goal: u32) -> FsResult<u32>;

    /// Committed bytes of the current, healthy replicas recorded on each node (the
    /// rebalancer's measure of use).
    fn replica_bytes(&self) -> FsResult<std::collections::HashMap<NodeId, u64>>;
    /// Committed chunks with a current replica on `from` and no replica row on `to`, with
    /// every replica row of each, at most `max`, in chunk id order (rebalancer candidates).
    fn movable_chunks(
        &self,
        from: NodeId,
        to: NodeId,
        goal: u32,
        max: usize,
    ) -> FsResult<Vec<crate::plan::repair::ChunkReplicas>>;

    /// [`Self::create`] of a regular file and [`Self::open`] of it by `session`, in one
    /// transaction (O_CREAT): one commit instead of two.
    fn create_open(
        &self,
        session: SessionId,
        parent: InodeId,
        name: &[u8],
        node: &NewNode,
        now: Timespec,
    ) -> FsResult<Attr>;
}

thread_local! {
    static CURRENT_OP: std::cell::Cell<Option<common::types::OpId>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` (store calls on this thread) on behalf of the client request `op`: mutating
/// namespace calls inside are applied at most once per `op`.
pub fn with_op<T>(op: common::types::OpId, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<common::types::OpId>);
    impl Drop for Reset {
        fn drop(&mut self) {
            CURRENT_OP.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(CURRENT_OP.with(|c| c.replace(Some(op))));
    f()
}

/// The operation id set by [`with_op`] on this thread, if any.
pub(crate) fn current_op() -> Option<common::types::OpId> {
    CURRENT_OP.with(|c| c.get())
}

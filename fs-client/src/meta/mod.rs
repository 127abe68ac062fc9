//! The client's metadata boundary: the [`Metadata`] trait is every master call the client
//! core makes, and nothing else. The core holds an `Arc<dyn Metadata>`, so its logic runs
//! the same against the real master over tarpc ([`MetaConn`], retried inside the mount's
//! retry window) and against [`MemMeta`], an in-memory master for tests inside this crate.
//!
//! Implementations translate and carry calls; they must never make client-side decisions
//! (those live in `core`). Ids (`OpId`, `SessionId`) are chosen by the core and passed
//! through unchanged, so a retried call stays the same request.

mod mem;
mod rpc;

pub use mem::MemMeta;
pub use rpc::MetaConn;

use common::types::*;
use common::{ChunkId, FsResult, InodeId, NodeId, SessionId, Version};
use futures::future::BoxFuture;
use serde_bytes::ByteBuf;

/// The answer of one metadata call.
pub type MetaFuture<'a, T> = BoxFuture<'a, FsResult<T>>;

/// The master calls of a filesystem client. Each answers as the master's method of the same
/// name does (see `common::rpc::MasterFs`); application errors (`NotFound`, `Exists`, ...) come
/// back as they are.
pub trait Metadata: Send + Sync + 'static {
    fn hello(&self, client_name: String) -> MetaFuture<'_, MountInfo>;
    fn keepalive(&self, session: SessionId) -> MetaFuture<'_, ()>;
    fn goodbye(&self, session: SessionId) -> MetaFuture<'_, ()>;

    fn lookup(&self, parent: InodeId, name: ByteBuf) -> MetaFuture<'_, Attr>;
    fn getattr(&self, ino: InodeId) -> MetaFuture<'_, Attr>;
    fn setattr(&self, op: OpId, ino: InodeId, set: SetAttr, caller: Caller)
    -> MetaFuture<'_, Attr>;
    fn create(
        &self,
        op: OpId,
        parent: InodeId,
        name: ByteBuf,
        node: NewNode,
    ) -> MetaFuture<'_, Attr>;
    /// `create` of a regular file and `open` of it, in one master transaction.
    fn create_open(
        &self,
        op: OpId,
        parent: InodeId,
        name: ByteBuf,
        node: NewNode,
    ) -> MetaFuture<'_, Attr>;
    fn unlink(&self, op: OpId, parent: InodeId, name: ByteBuf) -> MetaFuture<'_, ()>;
    fn rmdir(&self, op: OpId, parent: InodeId, name: ByteBuf) -> MetaFuture<'_, ()>;
    fn rename(
        &self,
        op: OpId,
        parent: InodeId,
        name: ByteBuf,
        new_parent: InodeId,
        new_name: ByteBuf,
        flags: RenameFlags,
    ) -> MetaFuture<'_, ()>;
    fn link(
        &self,
        op: OpId,
        ino: InodeId,
        new_parent: InodeId,
        new_name: ByteBuf,
    ) -> MetaFuture<'_, Attr>;
    fn readlink(&self, ino: InodeId) -> MetaFuture<'_, ByteBuf>;
    /// Entries with cookie greater than `after`, in cookie order, at most `limit`.
    fn readdir(&self, ino: InodeId, after: u64, limit: u32, plus: bool) -> MetaFuture<'_, DirPage>;
    fn statfs(&self) -> MetaFuture<'_, StatFs>;

    fn getxattr(&self, ino: InodeId, name: ByteBuf) -> MetaFuture<'_, ByteBuf>;
    fn setxattr(
        &self,
        op: OpId,
        ino: InodeId,
        name: ByteBuf,
        value: ByteBuf,
        flags: XattrFlags,
    ) -> MetaFuture<'_, ()>;
    fn listxattr(&self, ino: InodeId) -> MetaFuture<'_, Vec<ByteBuf>>;
    fn removexattr(&self, op: OpId, ino: InodeId, name: ByteBuf) -> MetaFuture<'_, ()>;
    fn get_goal(&self, ino: InodeId) -> MetaFuture<'_, u32>;
    fn set_goal(&self, op: OpId, ino: InodeId, goal: u32) -> MetaFuture<'_, u64>;

    fn open(&self, op: OpId, ino: InodeId) -> MetaFuture<'_, Attr>;
    fn release(&self, op: OpId, ino: InodeId) -> MetaFuture<'_, ()>;
    fn setlk(&self, session: SessionId, ino: InodeId, req: LockRequest) -> MetaFuture<'_, ()>;
    fn getlk(
        &self,
        session: SessionId,
        ino: InodeId,
        req: LockRequest,
    ) -> MetaFuture<'_, Option<LockInfo>>;

    /// Current replicas of chunks `first..first+count` of a file (missing chunks are holes).
    fn chunk_map(&self, ino: InodeId, first: u64, count: u64) -> MetaFuture<'_, Vec<ChunkLoc>>;
    fn prepare_write(&self, ino: InodeId, indexes: Vec<u64>) -> MetaFuture<'_, Vec<WriteGrant>>;
    fn commit_write(&self, commit: CommitWrite) -> MetaFuture<'_, Attr>;
    fn report_bad_replica(
        &self,
        chunk: ChunkId,
        node: NodeId,
        reason: String,
    ) -> MetaFuture<'_, ()>;
    /// Reports replicas that finished a committed grant late. Made once, not retried: it
    /// runs in the background after the flush, and an unreported replica is only left stale
    /// for repair.
    fn confirm_replicas(
        &self,
        chunk: ChunkId,
        base: Version,
        version: Version,
        nodes: Vec<NodeId>,
    ) -> MetaFuture<'_, Vec<NodeId>>;
}

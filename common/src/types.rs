//! Request and response types of the wire contract (serde, carried by bincode over tarpc).
//!
//! Names are raw bytes (Linux allows any byte but `/` and NUL); payloads are `bytes::Bytes`,
//! which serialize as one length-prefixed byte string rather than a sequence of integers.

use crate::{ChunkId, ClusterId, InodeId, NodeId, SessionId, Version};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest name a directory entry may have, as on ext4.
pub const NAME_MAX: usize = 255;
/// The longest symlink target, as Linux's PATH_MAX.
pub const SYMLINK_MAX: usize = 4096;
/// The longest xattr name and value, as Linux's XATTR_NAME_MAX / XATTR_SIZE_MAX.
pub const XATTR_NAME_MAX: usize = 255;
pub const XATTR_SIZE_MAX: usize = 64 * 1024;
/// The largest file size: 2^50 bytes keeps every offset well inside i64 and chunk indexes
/// inside the SQLite integer range even with very small test chunk sizes.
pub const MAX_FILE_SIZE: u64 = 1 << 50;
/// Most entries one readdir page returns; bounds memory per request for huge directories.
pub const READDIR_PAGE_MAX: u32 = 1024;

/// Names one mutating request of a session, so that a retry after a lost reply (the master
/// crashed after committing, or the connection broke) is applied at most once: the master
/// records the answer with the mutation and answers a repeat with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct OpId {
    pub session: SessionId,
    pub seq: u64,
}

/// A point in time with nanoseconds; `sec` may be negative (before 1970).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

impl Timespec {
    pub fn now() -> Timespec {
        Timespec::from_system(SystemTime::now())
    }

    pub fn from_system(t: SystemTime) -> Timespec {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timespec {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = d.subsec_nanos();
                if nsec > 0 {
                    sec -= 1;
                    nsec = 1_000_000_000 - nsec;
                }
                Timespec { sec, nsec }
            }
        }
    }

    pub fn to_system(self) -> SystemTime {
        if self.sec >= 0 {
            UNIX_EPOCH + Duration::new(self.sec as u64, self.nsec)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.sec.unsigned_abs())
                + Duration::from_nanos(self.nsec as u64)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl FileKind {
    /// The S_IFMT bits of this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::File => libc::S_IFREG,
            FileKind::Dir => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
            FileKind::CharDev => libc::S_IFCHR,
            FileKind::BlockDev => libc::S_IFBLK,
        }
    }

    pub fn from_mode(mode: u32) -> Option<FileKind> {
        match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => Some(FileKind::File),
            libc::S_IFDIR => Some(FileKind::Dir),
            libc::S_IFLNK => Some(FileKind::Symlink),
            libc::S_IFIFO => Some(FileKind::Fifo),
            libc::S_IFSOCK => Some(FileKind::Socket),
            libc::S_IFCHR => Some(FileKind::CharDev),
            libc::S_IFBLK => Some(FileKind::BlockDev),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::CharDev => "chardev",
            FileKind::BlockDev => "blockdev",
        }
    }

    pub fn parse(text: &str) -> Option<FileKind> {
        [
            FileKind::File,
            FileKind::Dir,
            FileKind::Symlink,
            FileKind::Fifo,
            FileKind::Socket,
            FileKind::CharDev,
            FileKind::BlockDev,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// An inode's attributes as the master stores them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    pub ino: InodeId,
    pub kind: FileKind,
    /// Permission bits only (07777); the kind is separate.
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub rdev: u32,
}

/// Who asks: the FUSE request's credentials. Ownership of new inodes and the rules that the
/// kernel does not enforce for us (setgid inheritance, suid clearing) use them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Caller {
    pub fn root() -> Caller {
        Caller::default()
    }
}

/// How one timestamp is set by utimensat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSet {
    Now,
    At(Timespec),
}

/// A setattr request; `None` leaves a field alone (UTIME_OMIT for times).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

/// What to create in a directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewNode {
    pub kind: FileKind,
    /// Permission bits requested (07777), before the umask.
    pub perm: u16,
    pub umask: u16,
    pub rdev: u32,
    /// The target, for symlinks only.
    pub symlink_target: Option<ByteBuf>,
    /// O_EXCL semantics are the default: an existing name is EEXIST.
    pub caller: Caller,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RenameFlags {
    pub noreplace: bool,
    pub exchange: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct XattrFlags {
    pub create: bool,
    pub replace: bool,
}

/// One directory entry. `cookie` is the entry's position: it only grows, so a listing that
/// resumes after a cookie is stable while other entries come and go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: ByteBuf,
    pub ino: InodeId,
    pub kind: FileKind,
    pub cookie: u64,
    /// Filled for readdirplus.
    pub attr: Option<Attr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirPage {
    pub entries: Vec<DirEntry>,
    /// True when the directory has no entries after the last one returned.
    pub end: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatFs {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub files: u64,
    pub name_max: u32,
    pub block_size: u32,
}

/// What a client learns when it mounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    pub cluster_id: ClusterId,
    pub session: SessionId,
    /// Session lease: the client must call `keepalive` more often than this.
    pub session_ttl_ms: u64,
    pub chunk_size: u64,
    /// The data key's check value; the client compares its own key's against it.
    pub key_check: ByteBuf,
    pub replication: ReplicationPolicy,
    /// The data key new blocks are sealed with, as `mosaic-master rotate-key --state`
    /// recorded it (`None`: never rotated that way, key 0 only). A mount whose key file
    /// lacks it is refused (docs/SECURITY.md, "Key rotation").
    pub current_key: Option<KeyStamp>,
}

/// A data key named without revealing it: its id and its check value
/// (`KeyRing::check_of`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStamp {
    pub id: u32,
    pub check: ByteBuf,
}

/// A chunkserver's own verdict on its replica of a chunk (`ChunkServer::verify_replica`):
/// the only evidence on which the master marks a replica bad.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaCheck {
    /// Every stored block passed its BLAKE3 checksum and the replica has seen the asked
    /// version.
    Intact,
    /// A block failed its checksum (the node quarantined the file) or the node's own read
    /// of it failed.
    Corrupt(String),
    /// The node holds no replica of the chunk.
    Missing,
    /// The node's replica is older than the asked version.
    Stale { have: Version },
}

/// N copies of every chunk; a write needs W acknowledgements; a read R current replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationPolicy {
    pub n: u32,
    pub w: u32,
    pub r: u32,
}

impl ReplicationPolicy {
    pub fn validate(&self) -> Result<(), String> {
        if self.n == 0 || self.w == 0 || self.r == 0 {
            return Err("replication n, w and r must be at least 1".into());
        }
        if self.w > self.n || self.r > self.n {
            return Err(format!(
                "w ({}) and r ({}) may not exceed n ({})",
                self.w, self.r, self.n
            ));
        }
        if self.w + self.r <= self.n {
            return Err(format!(
                "w + r must exceed n so every read meets the latest write (w={} r={} n={})",
                self.w, self.r, self.n
            ));
        }
        Ok(())
    }
}

/// A chunkserver and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub node: NodeId,
    pub addr: String,
    /// Load figure from the node's latest status (lower is better); used to order reads.
    pub load: u64,
}

/// Where a chunk's current data is, for reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkLoc {
    pub index: u64,
    pub chunk: ChunkId,
    /// The newest confirmed version: replicas listed hold it.
    pub version: Version,
    /// Bytes of the chunk that hold data; everything after reads as zeros.
    pub length: u64,
    pub replicas: Vec<NodeAddr>,
}

/// Permission to write a chunk at a version, and the replicas to write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteGrant {
    pub index: u64,
    pub chunk: ChunkId,
    pub version: Version,
    /// The chunk's committed version when the grant was made (0: never committed). Writes
    /// under this grant carry it, so replicas keep the copy of each block readers may still
    /// need until this grant commits (docs/PROTOCOL.md, "No partial state").
    pub base: Version,
    pub length: u64,
    pub replicas: Vec<NodeAddr>,
    /// Acknowledgements this write needs: the cluster's W, or the file's replication goal
    /// when that is smaller (docs/PROTOCOL.md, "Replication goal").
    pub quorum: u32,
}

/// What the client reports after writing a chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkCommit {
    pub index: u64,
    pub chunk: ChunkId,
    pub version: Version,
    /// The end of the written range, relative to the chunk start.
    pub written_end: u64,
    /// Replicas that acknowledged every write of this grant.
    pub ok_nodes: Vec<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitWrite {
    pub ino: InodeId,
    pub chunks: Vec<ChunkCommit>,
    /// The file size the writer saw after its writes; the master keeps the larger.
    pub size: u64,
    pub mtime: Timespec,
    /// The writer is not the owner-root: clear setuid/setgid as the kernel would.
    pub clear_suid: bool,
}

/// A chunkserver's self-report: sent with every heartbeat and answered to probes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeStatus {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub chunk_count: u64,
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    /// Checksum failures, I/O errors and rejected requests since start.
    pub errors: u64,
    /// Requests being served right now.
    pub in_flight: u64,
    /// Recent mean request latency in microseconds.
    pub latency_us: u64,
    /// Seconds since the process started (a restart shows as a drop).
    pub uptime_s: u64,
    /// True while the node is shutting down gracefully (planned maintenance).
    pub draining: bool,
}

impl NodeStatus {
    /// One number for routing: requests in flight weigh most, then latency.
    pub fn load(&self) -> u64 {
        self.in_flight * 1000 + self.latency_us
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterNode {
    /// The id this data directory was given before, if any.
    pub node: Option<NodeId>,
    /// The cluster this data directory belongs to, if it was registered before.
    pub cluster: Option<ClusterId>,
    pub addr: String,
    pub status: NodeStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub node: NodeId,
    pub cluster: ClusterId,
    pub heartbeat_interval_ms: u64,
    /// The cluster's chunk size: a chunk holds `chunk_size / BLOCK_SIZE` blocks.
    pub chunk_size: u64,
}

/// A replica a chunkserver holds, as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldChunk {
    pub chunk: ChunkId,
    pub version: Version,
}

/// Orders the master piggybacks on a heartbeat answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HeartbeatReply {
    /// Replicas this node must delete: unreferenced or stale.
    pub delete: Vec<ChunkId>,
    /// The master does not know this node (e.g. its database was replaced): register again.
    pub reregister: bool,
    /// Serial numbers (lowercase hex) of revoked certificates: the node refuses peers that
    /// present one, as the master does. The whole list every time: it is short, and a node
    /// that missed a reply catches up with the next.
    pub revoked: Vec<String>,
}

/// The master's view of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: NodeId,
    pub addr: String,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms: u64,
    pub online: bool,
    pub status: NodeStatus,
    /// Replicas the master records on this node.
    pub replicas: u64,
    /// What the master holds about this node besides liveness (dead, maintenance...).
    pub condition: NodeCondition,
}

/// The master's summary of the cluster, for `status` and monitoring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSummary {
    pub cluster_id: ClusterId,
    pub replication: ReplicationPolicy,
    pub files: u64,
    pub dirs: u64,
    pub chunks: u64,
    pub under_replicated: u64,
    pub lost: u64,
    pub logical_bytes: u64,
    pub nodes: Vec<NodeInfo>,
    /// Re-replication and repair progress since the master started.
    pub repair: RepairProgress,
    /// New chunks refused for lack of space since the master started (ENOSPC to writers).
    pub writes_refused_no_space: u64,
    /// What keeps the cluster from doing what it is asked that the counts above do not
    /// show; `status` is not HEALTHY while there is any.
    pub notices: Vec<ClusterNotice>,
}

/// One reason the master knows the cluster is impaired beyond its counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterNotice {
    /// Writes were refused for lack of space recently: `refusals` since the master
    /// started, the last `last_ms` milliseconds ago, with the numbers of the last one.
    WritesRefused {
        refusals: u64,
        last_ms: u64,
        detail: String,
    },
}

impl std::fmt::Display for ClusterNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterNotice::WritesRefused {
                refusals,
                last_ms,
                detail,
            } => write!(
                f,
                "writes refused for lack of space ({refusals} since the master started, last \
                 {}s ago): {detail}",
                last_ms / 1000
            ),
        }
    }
}

/// One replica the master records on a node: which chunk of which file, at which version.
/// The answer to "what does this node hold" (the state-query client, `status --files`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReplica {
    pub chunk: ChunkId,
    /// The file the chunk belongs to and its index in that file.
    pub ino: InodeId,
    pub index: u64,
    /// The newest version this replica confirmed (0: written, never committed).
    pub version: Version,
    /// Serves reads: at the chunk's committed version and not reported bad.
    pub current: bool,
}

/// A write of consecutive sealed blocks into one chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteBlocks {
    pub chunk: ChunkId,
    pub version: Version,
    /// The grant's base: the chunk's committed version. The replica never overwrites the
    /// newest copy of a block at or below it, only the other copy.
    pub base: Version,
    pub first_block: u32,
    /// Sealed blocks; an empty one makes its block a hole again (reads as zeros). Writers
    /// clear blocks that a truncate left behind before a write extends a chunk over them.
    pub blocks: Vec<Bytes>,
    /// fdatasync before answering.
    pub sync: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadBlocks {
    pub chunk: ChunkId,
    /// The chunk's committed version. The replica must have seen at least this version, or
    /// answer `StaleVersion`; each block is served from its newest copy at or below it, so
    /// a newer write that has not committed (yet, or ever) is never visible.
    pub min_version: Version,
    pub first_block: u32,
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockData {
    pub version: Version,
    /// `None` for a block never written (a hole: zeros).
    pub blocks: Vec<Option<Bytes>>,
}

/// What a lock request asks for: a shared (read) or exclusive (write) lock, or its removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    Read,
    Write,
    Unlock,
}

/// A POSIX byte-range lock request (flock is a whole-file lock of an open file description).
/// `owner` is the kernel's lock owner, unique within the client session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    pub owner: u64,
    pub kind: LockKind,
    /// First byte of the range.
    pub start: u64,
    /// Last byte of the range, inclusive; `u64::MAX` means "to the end of the file and beyond".
    pub end: u64,
    /// The requesting process (reported to F_GETLK callers of the same mount only).
    pub pid: u32,
}

/// A lock that blocks a request (the F_GETLK answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub start: u64,
    pub end: u64,
    pub kind: LockKind,
    pub pid: u32,
}

// ---- replication goal ---------------------------------------------------------------------

/// The virtual extended attribute a mount answers with an inode's replication goal (and
/// sets it through). In the `trusted.` namespace so the kernel lets only CAP_SYS_ADMIN read
/// or set it, as MooseFS keeps goals to its admin tools; never stored, never listed.
pub const GOAL_XATTR: &[u8] = b"trusted.mosaic.goal";
/// Largest replication goal: beyond 8 copies a chunk costs more in writes and repair
/// traffic than any failure domain on a LAN cluster justifies.
pub const MAX_GOAL: u32 = 8;

/// Checks a requested replication goal: 1..=[`MAX_GOAL`], anything else is `Invalid`.
pub fn check_goal(goal: u32) -> Result<u32, crate::FsError> {
    if (1..=MAX_GOAL).contains(&goal) {
        Ok(goal)
    } else {
        Err(crate::FsError::Invalid(format!(
            "replication goal {goal} out of range 1..={MAX_GOAL}"
        )))
    }
}

/// Parses the decimal text of a [`GOAL_XATTR`] value (`setfattr -v 2`, or `2\n` from shell
/// tools) and checks its range.
pub fn parse_goal(value: &[u8]) -> Result<u32, crate::FsError> {
    let text = std::str::from_utf8(value)
        .map_err(|_| crate::FsError::Invalid("replication goal is not text".into()))?;
    let goal = text.trim().parse::<u32>().map_err(|_| {
        crate::FsError::Invalid(format!("replication goal {text:?} is not a number"))
    })?;
    check_goal(goal)
}

impl ReplicationPolicy {
    /// Acknowledgements a write to a file with replication goal `goal` needs: W, or the goal
    /// when smaller (a goal-1 file has one replica to acknowledge).
    pub fn quorum_for(&self, goal: u32) -> u32 {
        self.w.min(goal).max(1)
    }
}

/// One replica on a node together with the file its chunk belongs to: the answer of
/// `MasterAdmin::node_files`, what the state-query client (`mosaic-sentinel status --node N
/// --files`) lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFileChunk {
    pub replica: NodeReplica,
    /// An absolute path of the file (`/dir/name`, names as stored: bytes). A file with
    /// several hard links shows one of them, the first in (parent inode, name) order, so
    /// the answer is stable; `None` when the file has no name left (unlinked while open).
    pub path: Option<ByteBuf>,
}

/// The master's durable record of a node beyond "heard from recently": set by the sentinels
/// (dead, alive again), by the node itself (a graceful stop announces maintenance) and by
/// admins (drain). Decides whether the node's replicas count toward a chunk's goal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeCondition {
    /// Nothing recorded: its replicas count when current.
    #[default]
    Up,
    /// Declared dead by a quorum of sentinels (or a maintenance window ran out): its
    /// replicas no longer count and are re-replicated elsewhere.
    Dead,
    /// Stopped gracefully (planned maintenance): its replicas still count, nothing is
    /// re-replicated until the master's maintenance window runs out.
    Maintenance,
    /// Being drained by an admin (`mosaic-sentinel drain`): takes no new chunks, its replicas
    /// do not count toward goals (so they are copied elsewhere) but still serve reads, are
    /// copy sources, and are never deleted while it drains.
    Draining,
    /// Drained: every chunk it held has its goal on other nodes. It may be stopped; its
    /// replica rows are left (they count toward nothing, and are never served once it is
    /// offline).
    Decommissioned,
}

impl NodeCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeCondition::Up => "UP",
            NodeCondition::Dead => "DEAD",
            NodeCondition::Maintenance => "MAINTENANCE",
            NodeCondition::Draining => "DRAINING",
            NodeCondition::Decommissioned => "DECOMMISSIONED",
        }
    }

    /// Whether current replicas on a node in this condition count toward the goal.
    pub fn counts(self) -> bool {
        match self {
            NodeCondition::Up | NodeCondition::Maintenance => true,
            NodeCondition::Dead | NodeCondition::Draining | NodeCondition::Decommissioned => false,
        }
    }

    /// Whether a node in this condition may take new chunks (a new file chunk's replica, a
    /// repair copy, a rebalancing move): only when up. A node in maintenance announced a
    /// stop, a draining one is being emptied. The master's whole rule (also online, no stop
    /// announced) is `plan::takes_chunks`.
    pub fn takes_chunks(self) -> bool {
        match self {
            NodeCondition::Up => true,
            NodeCondition::Maintenance
            | NodeCondition::Dead
            | NodeCondition::Draining
            | NodeCondition::Decommissioned => false,
        }
    }

    /// Whether a current replica on a node in this condition is a valid copy source (when
    /// the node is online): everything but a node declared dead.
    pub fn serves(self) -> bool {
        !matches!(self, NodeCondition::Dead)
    }
}

/// Re-replication progress (copies of chunks that are below their goal), as the master's
/// repair worker counts it since the master started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairProgress {
    /// Chunks below their goal at the last scan (re-replication still to do).
    pub queued_chunks: u64,
    /// Bytes of those chunks (their committed length), one copy each.
    pub queued_bytes: u64,
    /// Copies running now.
    pub in_flight: u64,
    /// Copies finished and recorded.
    pub done_chunks: u64,
    pub done_bytes: u64,
    /// Copies that failed (they are planned again).
    pub failed: u64,
    /// Copy rate over the last few seconds, bytes per second.
    pub bytes_per_sec: u64,
    /// Surplus replicas removed (a returning node's copies of re-replicated chunks).
    pub trimmed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespec_round_trips_before_and_after_epoch() {
        for ts in [
            Timespec { sec: 0, nsec: 0 },
            Timespec {
                sec: 1_700_000_000,
                nsec: 123_456_789,
            },
            Timespec {
                sec: -1,
                nsec: 500_000_000,
            },
            Timespec { sec: -100, nsec: 0 },
        ] {
            assert_eq!(Timespec::from_system(ts.to_system()), ts);
        }
    }

    #[test]
    fn replication_policy_rules() {
        let ok = ReplicationPolicy { n: 3, w: 2, r: 2 };
        assert!(ok.validate().is_ok());
        assert!(ReplicationPolicy { n: 3, w: 3, r: 1 }.validate().is_ok());
        assert!(ReplicationPolicy { n: 3, w: 1, r: 1 }.validate().is_err());
        assert!(ReplicationPolicy { n: 3, w: 4, r: 1 }.validate().is_err());
        assert!(ReplicationPolicy { n: 0, w: 0, r: 0 }.validate().is_err());
    }

    #[test]
    fn goal_parse_table() {
        let cases: &[(&[u8], Option<u32>)] = &[
            (b"1", Some(1)),
            (b"2\n", Some(2)),
            (b" 8 ", Some(8)),
            (b"0", None),
            (b"9", None),
            (b"-1", None),
            (b"two", None),
            (b"", None),
            (b"\xff", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_goal(text).ok(), *want, "{text:?}");
        }
        let p = ReplicationPolicy { n: 3, w: 2, r: 2 };
        assert_eq!(
            [1, 2, 3, 8].map(|g| p.quorum_for(g)),
            [1, 2, 2, 2],
            "quorum is min(W, goal)"
        );
    }

    #[test]
    fn file_kind_mode_round_trip() {
        for kind in [
            FileKind::File,
            FileKind::Dir,
            FileKind::Symlink,
            FileKind::Fifo,
            FileKind::Socket,
            FileKind::CharDev,
            FileKind::BlockDev,
        ] {
            assert_eq!(FileKind::from_mode(kind.mode_bits() | 0o644), Some(kind));
            assert_eq!(FileKind::parse(kind.as_str()), Some(kind));
        }
    }
}

/// What the join endpoint returns: the node's new certificate and the CA that signed it
/// (the node made the private key itself and keeps it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedCredential {
    pub cert_pem: String,
    pub ca_pem: String,
    /// The certificate's serial (hex), as `revoke --serial` takes it.
    pub serial: String,
}

//! [`Metadata`] in memory: a small master for tests of the client core inside this crate,
//! with no process, socket or database.
//!
//! It keeps the parts of the master's model the core relies on: a namespace (directories
//! with stable readdir cookies, files, symlinks, link counts, unlinked-but-open files),
//! attributes and xattrs, a chunk map with versioned write grants and commits (replicas
//! become current when a commit names them, `confirm_replicas` adds late ones), statfs
//! figures, and advisory locks per (session, owner). Several client cores may share one
//! `MemMeta`: each `hello` opens a new session, as two mounts would.
//!
//! What it leaves out, on purpose: permission checks (tests run as root), retry
//! deduplication by `OpId` (in-memory calls are never lost), node health and placement (every
//! grant goes to all `nodes`), and durability. It must never be used outside tests.

use super::{MetaFuture, Metadata};
use common::block::KeyRing;
use common::types::*;
use common::{ChunkId, ClusterId, FsError, FsResult, InodeId, NodeId, SessionId, Version};
use parking_lot::Mutex;
use serde_bytes::ByteBuf;
use std::collections::{BTreeMap, HashMap};

/// Session lease handed out by `hello`: long, since nothing here expires sessions.
const SESSION_TTL_MS: u64 = 60_000;

/// An in-memory master (see the module header).
pub struct MemMeta {
    /// The chunkservers every grant names (the data lives in a `MemDataPlane`).
    nodes: Vec<NodeAddr>,
    chunk_size: u64,
    key_check: ByteBuf,
    policy: ReplicationPolicy,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    inodes: HashMap<InodeId, Inode>,
    next_ino: u64,
    next_chunk: u64,
    next_session: u64,
    /// What `statfs` reports for space (files are counted from `inodes`).
    space: (u64, u64),
    locks: Vec<HeldLock>,
    /// Calls per method, so a test can pin how many master round trips an operation costs.
    calls: BTreeMap<&'static str, u64>,
    /// (chunk, node) pairs reported bad by clients.
    bad: Vec<(ChunkId, NodeId)>,
}

struct Inode {
    attr: Attr,
    /// Directory entries by name: the child and the entry's readdir cookie.
    entries: BTreeMap<Vec<u8>, (InodeId, u64)>,
    next_cookie: u64,
    target: Option<ByteBuf>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    goal: Option<u32>,
    chunks: BTreeMap<u64, Chunk>,
    /// Open registrations (over all sessions): an unlinked file lives while they last.
    opens: u32,
}

struct Chunk {
    id: ChunkId,
    /// The newest granted version.
    version: u64,
    /// The newest committed version.
    confirmed: u64,
    length: u64,
    /// Each replica's version; current when at least `confirmed`.
    replicas: BTreeMap<NodeId, u64>,
}

#[derive(Clone, Copy, Debug)]
struct HeldLock {
    session: SessionId,
    ino: InodeId,
    owner: u64,
    kind: LockKind,
    start: u64,
    end: u64,
    pid: u32,
}

impl MemMeta {
    /// A cluster of `nodes` with `chunk_size`-byte chunks, the key check of `keys`, and
    /// write quorum `w` (N is the number of nodes, R is 1). The root directory exists.
    pub fn new(keys: &KeyRing, chunk_size: u64, nodes: Vec<NodeAddr>, w: u32) -> MemMeta {
        let now = Timespec::now();
        let root = Attr {
            ino: InodeId::ROOT,
            kind: FileKind::Dir,
            perm: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            nlink: 2,
            atime: now,
            mtime: now,
            ctime: now,
            rdev: 0,
        };
        let mut state = State {
            next_ino: InodeId::ROOT.0 + 1,
            next_chunk: 1,
            next_session: 1,
            space: (1 << 40, 1 << 39),
            ..State::default()
        };
        state.inodes.insert(InodeId::ROOT, Inode::new(root));
        let n = nodes.len() as u32;
        MemMeta {
            nodes,
            chunk_size,
            key_check: ByteBuf::from(keys.key_check().to_vec()),
            policy: ReplicationPolicy { n, w, r: 1 },
            state: Mutex::new(state),
        }
    }

    /// Sets the space `statfs` reports.
    pub fn set_space(&self, total_bytes: u64, free_bytes: u64) {
        self.state.lock().space = (total_bytes, free_bytes);
    }

    /// How many times the core called `method`.
    pub fn calls(&self, method: &str) -> u64 {
        self.state.lock().calls.get(method).copied().unwrap_or(0)
    }

    /// Locks currently held on `ino`, over all sessions.
    pub fn locks_held(&self, ino: InodeId) -> usize {
        self.state
            .lock()
            .locks
            .iter()
            .filter(|l| l.ino == ino)
            .count()
    }

    /// (chunk, node) pairs the core reported as bad replicas.
    pub fn bad_reports(&self) -> Vec<(ChunkId, NodeId)> {
        self.state.lock().bad.clone()
    }

    /// Runs `f` on the state as one atomic step, counting the call.
    fn with<T: Send + 'static>(
        &self,
        method: &'static str,
        f: impl FnOnce(&mut State) -> FsResult<T>,
    ) -> MetaFuture<'_, T> {
        let result = {
            let mut st = self.state.lock();
            *st.calls.entry(method).or_default() += 1;
            f(&mut st)
        };
        Box::pin(async move { result })
    }

    fn addrs(&self, nodes: impl IntoIterator<Item = NodeId>) -> Vec<NodeAddr> {
        nodes
            .into_iter()
            .filter_map(|n| self.nodes.iter().find(|a| a.node == n).cloned())
            .collect()
    }
}

impl Inode {
    fn new(attr: Attr) -> Inode {
        Inode {
            attr,
            entries: BTreeMap::new(),
            next_cookie: 1,
            target: None,
            xattrs: BTreeMap::new(),
            goal: None,
            chunks: BTreeMap::new(),
            opens: 0,
        }
    }
}

impl State {
    fn inode(&self, ino: InodeId) -> FsResult<&Inode> {
        self.inodes.get(&ino).ok_or(FsError::NotFound)
    }

    fn inode_mut(&mut self, ino: InodeId) -> FsResult<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(FsError::NotFound)
    }

    fn dir(&self, ino: InodeId) -> FsResult<&Inode> {
        let dir = self.inode(ino)?;
        if dir.attr.kind != FileKind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(dir)
    }

    fn child(&self, parent: InodeId, name: &[u8]) -> FsResult<InodeId> {
        self.dir(parent)?
            .entries
            .get(name)
            .map(|(ino, _)| *ino)
            .ok_or(FsError::NotFound)
    }

    fn file(&mut self, ino: InodeId) -> FsResult<&mut Inode> {
        let inode = self.inode_mut(ino)?;
        match inode.attr.kind {
            FileKind::File => Ok(inode),
            FileKind::Dir => Err(FsError::IsDir),
            _ => Err(FsError::Invalid("not a regular file".into())),
        }
    }

    fn add_entry(&mut self, parent: InodeId, name: Vec<u8>, child: InodeId) -> FsResult<()> {
        let now = Timespec::now();
        let dir = self.inode_mut(parent)?;
        let cookie = dir.next_cookie;
        dir.next_cookie += 1;
        dir.entries.insert(name, (child, cookie));
        dir.attr.mtime = now;
        dir.attr.ctime = now;
        Ok(())
    }

    fn create(&mut self, parent: InodeId, name: ByteBuf, node: NewNode) -> FsResult<Attr> {
        if self.dir(parent)?.entries.contains_key(name.as_slice()) {
            return Err(FsError::Exists);
        }
        let ino = InodeId(self.next_ino);
        self.next_ino += 1;
        let now = Timespec::now();
        let is_dir = node.kind == FileKind::Dir;
        let attr = Attr {
            ino,
            kind: node.kind,
            perm: node.perm & !node.umask & 0o7777,
            uid: node.caller.uid,
            gid: node.caller.gid,
            size: node.symlink_target.as_ref().map_or(0, |t| t.len() as u64),
            nlink: if is_dir { 2 } else { 1 },
            atime: now,
            mtime: now,
            ctime: now,
            rdev: node.rdev,
        };
        let mut inode = Inode::new(attr.clone());
        inode.target = node.symlink_target;
        self.inodes.insert(ino, inode);
        self.add_entry(parent, name.into_vec(), ino)?;
        if is_dir {
            self.inode_mut(parent)?.attr.nlink += 1;
        }
        Ok(attr)
    }

    /// Drops one link of `ino`; frees it when no link and no open remain.
    fn unlinked(&mut self, ino: InodeId) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        inode.attr.nlink = inode.attr.nlink.saturating_sub(1);
        inode.attr.ctime = Timespec::now();
        if inode.attr.nlink == 0 && inode.opens == 0 {
            self.inodes.remove(&ino);
        }
    }

    fn remove_entry(&mut self, parent: InodeId, name: &[u8]) -> FsResult<InodeId> {
        let now = Timespec::now();
        let dir = self.inode_mut(parent)?;
        let (ino, _) = dir.entries.remove(name).ok_or(FsError::NotFound)?;
        dir.attr.mtime = now;
        dir.attr.ctime = now;
        Ok(ino)
    }

    /// Removes the entry `name` of `parent` that `rename` replaces.
    fn replace(&mut self, parent: InodeId, name: &[u8], moving_dir: bool) -> FsResult<()> {
        let Ok(old) = self.child(parent, name) else {
            return Ok(());
        };
        let old_inode = self.inode(old)?;
        match (moving_dir, old_inode.attr.kind == FileKind::Dir) {
            (true, false) => return Err(FsError::NotDir),
            (false, true) => return Err(FsError::IsDir),
            (true, true) if !old_inode.entries.is_empty() => return Err(FsError::NotEmpty),
            _ => {}
        }
        self.remove_entry(parent, name)?;
        if moving_dir {
            self.inode_mut(parent)?.attr.nlink -= 1;
            self.inodes.remove(&old);
        } else {
            self.unlinked(old);
        }
        Ok(())
    }

    fn truncate(&mut self, ino: InodeId, size: u64, chunk_size: u64) -> FsResult<()> {
        let file = self.file(ino)?;
        file.attr.size = size;
        file.chunks.retain(|index, _| index * chunk_size < size);
        for (index, chunk) in &mut file.chunks {
            chunk.length = chunk.length.min(size - index * chunk_size);
        }
        Ok(())
    }

    fn lock_conflict(
        &self,
        session: SessionId,
        ino: InodeId,
        req: &LockRequest,
    ) -> Option<LockInfo> {
        self.locks
            .iter()
            .find(|l| {
                l.ino == ino
                    && (l.session, l.owner) != (session, req.owner)
                    && l.start <= req.end
                    && req.start <= l.end
                    && (l.kind == LockKind::Write || req.kind == LockKind::Write)
            })
            .map(|l| LockInfo {
                start: l.start,
                end: l.end,
                kind: l.kind,
                pid: l.pid,
            })
    }

    /// Removes `[start, end]` from the locks of (`session`, `owner`) on `ino`, splitting a
    /// lock that straddles the range.
    fn unlock(&mut self, session: SessionId, ino: InodeId, owner: u64, start: u64, end: u64) {
        let mut kept = Vec::with_capacity(self.locks.len());
        for l in self.locks.drain(..) {
            let mine = l.ino == ino && l.session == session && l.owner == owner;
            if !mine || l.end < start || end < l.start {
                kept.push(l);
                continue;
            }
            if l.start < start {
                kept.push(HeldLock {
                    end: start - 1,
                    ..l
                });
            }
            if end < l.end {
                kept.push(HeldLock {
                    start: end + 1,
                    ..l
                });
            }
        }
        self.locks = kept;
    }
}

fn time(set: TimeSet) -> Timespec {
    match set {
        TimeSet::Now => Timespec::now(),
        TimeSet::At(t) => t,
    }
}

impl Metadata for MemMeta {
    fn hello(&self, _client_name: String) -> MetaFuture<'_, MountInfo> {
        let (chunk_size, key_check, policy) =
            (self.chunk_size, self.key_check.clone(), self.policy);
        self.with("hello", move |st| {
            let session = SessionId(st.next_session);
            st.next_session += 1;
            Ok(MountInfo {
                cluster_id: ClusterId([7; 16]),
                session,
                session_ttl_ms: SESSION_TTL_MS,
                chunk_size,
                key_check,
                replication: policy,
                // The in-memory master records no key rotation: key 0 only, as a master
                // whose key was never rotated with `rotate-key --state`.
                current_key: None,
            })
        })
    }

    fn keepalive(&self, _session: SessionId) -> MetaFuture<'_, ()> {
        self.with("keepalive", |_| Ok(()))
    }

    fn goodbye(&self, session: SessionId) -> MetaFuture<'_, ()> {
        self.with("goodbye", move |st| {
            st.locks.retain(|l| l.session != session);
            Ok(())
        })
    }

    fn lookup(&self, parent: InodeId, name: ByteBuf) -> MetaFuture<'_, Attr> {
        self.with("lookup", move |st| {
            let ino = st.child(parent, &name)?;
            Ok(st.inode(ino)?.attr.clone())
        })
    }

    fn getattr(&self, ino: InodeId) -> MetaFuture<'_, Attr> {
        self.with("getattr", move |st| Ok(st.inode(ino)?.attr.clone()))
    }

    fn setattr(
        &self,
        _op: OpId,
        ino: InodeId,
        set: SetAttr,
        _caller: Caller,
    ) -> MetaFuture<'_, Attr> {
        let chunk_size = self.chunk_size;
        self.with("setattr", move |st| {
            if let Some(size) = set.size {
                st.truncate(ino, size, chunk_size)?;
            }
            let attr = &mut st.inode_mut(ino)?.attr;
            if let Some(mode) = set.mode {
                attr.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = set.uid {
                attr.uid = uid;
            }
            if let Some(gid) = set.gid {
                attr.gid = gid;
            }
            if let Some(t) = set.atime {
                attr.atime = time(t);
            }
            if let Some(t) = set.mtime {
                attr.mtime = time(t);
            }
            attr.ctime = Timespec::now();
            Ok(attr.clone())
        })
    }

    fn create(
        &self,
        _op: OpId,
        parent: InodeId,
        name: ByteBuf,
        node: NewNode,
    ) -> MetaFuture<'_, Attr> {
        self.with("create", move |st| st.create(parent, name, node))
    }

    fn create_open(
        &self,
        _op: OpId,
        parent: InodeId,
        name: ByteBuf,
        node: NewNode,
    ) -> MetaFuture<'_, Attr> {
        self.with("create_open", move |st| {
            if node.kind != FileKind::File {
                return Err(FsError::Invalid("create_open makes regular files".into()));
            }
            let attr = st.create(parent, name, node)?;
            st.inode_mut(attr.ino)?.opens += 1;
            Ok(attr)
        })
    }

    fn unlink(&self, _op: OpId, parent: InodeId, name: ByteBuf) -> MetaFuture<'_, ()> {
        self.with("unlink", move |st| {
            let ino = st.child(parent, &name)?;
            if st.inode(ino)?.attr.kind == FileKind::Dir {
                return Err(FsError::IsDir);
            }
            st.remove_entry(parent, &name)?;
            st.unlinked(ino);
            Ok(())
        })
    }

    fn rmdir(&self, _op: OpId, parent: InodeId, name: ByteBuf) -> MetaFuture<'_, ()> {
        self.with("rmdir", move |st| {
            let ino = st.child(parent, &name)?;
            let dir = st.dir(ino)?;
            if !dir.entries.is_empty() {
                return Err(FsError::NotEmpty);
            }
            st.remove_entry(parent, &name)?;
            st.inodes.remove(&ino);
            st.inode_mut(parent)?.attr.nlink -= 1;
            Ok(())
        })
    }

    fn rename(
        &self,
        _op: OpId,
        parent: InodeId,
        name: ByteBuf,
        new_parent: InodeId,
        new_name: ByteBuf,
        flags: RenameFlags,
    ) -> MetaFuture<'_, ()> {
        self.with("rename", move |st| {
            let ino = st.child(parent, &name)?;
            st.dir(new_parent)?;
            let target = st.child(new_parent, &new_name).ok();
            if target == Some(ino) {
                return Ok(());
            }
            if flags.exchange {
                let other = target.ok_or(FsError::NotFound)?;
                let (_, c1) = st.inode(parent)?.entries[name.as_slice()];
                let (_, c2) = st.inode(new_parent)?.entries[new_name.as_slice()];
                st.inode_mut(parent)?
                    .entries
                    .insert(name.into_vec(), (other, c1));
                st.inode_mut(new_parent)?
                    .entries
                    .insert(new_name.into_vec(), (ino, c2));
                return Ok(());
            }
            if flags.noreplace && target.is_some() {
                return Err(FsError::Exists);
            }
            let is_dir = st.inode(ino)?.attr.kind == FileKind::Dir;
            st.replace(new_parent, &new_name, is_dir)?;
            st.remove_entry(parent, &name)?;
            st.add_entry(new_parent, new_name.into_vec(), ino)?;
            if is_dir && parent != new_parent {
                st.inode_mut(parent)?.attr.nlink -= 1;
                st.inode_mut(new_parent)?.attr.nlink += 1;
            }
            st.inode_mut(ino)?.attr.ctime = Timespec::now();
            Ok(())
        })
    }

    fn link(
        &self,
        _op: OpId,
        ino: InodeId,
        new_parent: InodeId,
        new_name: ByteBuf,
    ) -> MetaFuture<'_, Attr> {
        self.with("link", move |st| {
            if st.inode(ino)?.attr.kind == FileKind::Dir {
                return Err(FsError::NotPermitted);
            }
            if st
                .dir(new_parent)?
                .entries
                .contains_key(new_name.as_slice())
            {
                return Err(FsError::Exists);
            }
            st.add_entry(new_parent, new_name.into_vec(), ino)?;
            let attr = &mut st.inode_mut(ino)?.attr;
            attr.nlink += 1;
            attr.ctime = Timespec::now();
            Ok(attr.clone())
        })
    }

    fn readlink(&self, ino: InodeId) -> MetaFuture<'_, ByteBuf> {
        self.with("readlink", move |st| {
            st.inode(ino)?
                .target
                .clone()
                .ok_or_else(|| FsError::Invalid("not a symlink".into()))
        })
    }

    fn readdir(&self, ino: InodeId, after: u64, limit: u32, plus: bool) -> MetaFuture<'_, DirPage> {
        self.with("readdir", move |st| {
            let dir = st.dir(ino)?;
            let mut listed: Vec<(u64, &Vec<u8>, InodeId)> = dir
                .entries
                .iter()
                .filter(|(_, (_, cookie))| *cookie > after)
                .map(|(name, (child, cookie))| (*cookie, name, *child))
                .collect();
            listed.sort_by_key(|(cookie, _, _)| *cookie);
            let end = listed.len() <= limit as usize;
            let mut entries = Vec::new();
            for (cookie, name, child) in listed.into_iter().take(limit as usize) {
                let attr = st.inode(child)?.attr.clone();
                entries.push(DirEntry {
                    name: ByteBuf::from(name.clone()),
                    ino: child,
                    kind: attr.kind,
                    cookie,
                    attr: plus.then_some(attr),
                });
            }
            Ok(DirPage { entries, end })
        })
    }

    fn statfs(&self) -> MetaFuture<'_, StatFs> {
        self.with("statfs", |st| {
            Ok(StatFs {
                total_bytes: st.space.0,
                free_bytes: st.space.1,
                files: st.inodes.len() as u64,
                name_max: NAME_MAX as u32,
                block_size: common::block::BLOCK_SIZE as u32,
            })
        })
    }

    fn getxattr(&self, ino: InodeId, name: ByteBuf) -> MetaFuture<'_, ByteBuf> {
        self.with("getxattr", move |st| {
            st.inode(ino)?
                .xattrs
                .get(name.as_slice())
                .map(|v| ByteBuf::from(v.clone()))
                .ok_or(FsError::NoAttr)
        })
    }

    fn setxattr(
        &self,
        _op: OpId,
        ino: InodeId,
        name: ByteBuf,
        value: ByteBuf,
        flags: XattrFlags,
    ) -> MetaFuture<'_, ()> {
        self.with("setxattr", move |st| {
            let inode = st.inode_mut(ino)?;
            let exists = inode.xattrs.contains_key(name.as_slice());
            if flags.create && exists {
                return Err(FsError::Exists);
            }
            if flags.replace && !exists {
                return Err(FsError::NoAttr);
            }
            inode.xattrs.insert(name.into_vec(), value.into_vec());
            inode.attr.ctime = Timespec::now();
            Ok(())
        })
    }

    fn listxattr(&self, ino: InodeId) -> MetaFuture<'_, Vec<ByteBuf>> {
        self.with("listxattr", move |st| {
            Ok(st
                .inode(ino)?
                .xattrs
                .keys()
                .map(|k| ByteBuf::from(k.clone()))
                .collect())
        })
    }

    fn removexattr(&self, _op: OpId, ino: InodeId, name: ByteBuf) -> MetaFuture<'_, ()> {
        self.with("removexattr", move |st| {
            st.inode_mut(ino)?
                .xattrs
                .remove(name.as_slice())
                .map(|_| ())
                .ok_or(FsError::NoAttr)
        })
    }

    fn get_goal(&self, ino: InodeId) -> MetaFuture<'_, u32> {
        let n = self.policy.n;
        self.with("get_goal", move |st| Ok(st.inode(ino)?.goal.unwrap_or(n)))
    }

    fn set_goal(&self, _op: OpId, ino: InodeId, goal: u32) -> MetaFuture<'_, u64> {
        self.with("set_goal", move |st| {
            if goal == 0 || goal > MAX_GOAL {
                return Err(FsError::Invalid(format!("goal {goal} out of range")));
            }
            st.inode_mut(ino)?.goal = Some(goal);
            Ok(1)
        })
    }

    fn open(&self, _op: OpId, ino: InodeId) -> MetaFuture<'_, Attr> {
        self.with("open", move |st| {
            let inode = st.inode_mut(ino)?;
            inode.opens += 1;
            Ok(inode.attr.clone())
        })
    }

    fn release(&self, _op: OpId, ino: InodeId) -> MetaFuture<'_, ()> {
        self.with("release", move |st| {
            let inode = st.inode_mut(ino)?;
            inode.opens = inode.opens.saturating_sub(1);
            if inode.opens == 0 && inode.attr.nlink == 0 {
                st.inodes.remove(&ino);
            }
            Ok(())
        })
    }

    fn setlk(&self, session: SessionId, ino: InodeId, req: LockRequest) -> MetaFuture<'_, ()> {
        self.with("setlk", move |st| {
            st.inode(ino)?;
            if req.start > req.end {
                return Err(FsError::Invalid("lock range ends before it starts".into()));
            }
            if req.kind != LockKind::Unlock && st.lock_conflict(session, ino, &req).is_some() {
                return Err(FsError::WouldBlock);
            }
            st.unlock(session, ino, req.owner, req.start, req.end);
            if req.kind != LockKind::Unlock {
                st.locks.push(HeldLock {
                    session,
                    ino,
                    owner: req.owner,
                    kind: req.kind,
                    start: req.start,
                    end: req.end,
                    pid: req.pid,
                });
            }
            Ok(())
        })
    }

    fn getlk(
        &self,
        session: SessionId,
        ino: InodeId,
        req: LockRequest,
    ) -> MetaFuture<'_, Option<LockInfo>> {
        self.with("getlk", move |st| {
            st.inode(ino)?;
            Ok(st.lock_conflict(session, ino, &req))
        })
    }

    fn chunk_map(&self, ino: InodeId, first: u64, count: u64) -> MetaFuture<'_, Vec<ChunkLoc>> {
        self.with("chunk_map", move |st| {
            let file = st.file(ino)?;
            Ok(file
                .chunks
                .range(first..first.saturating_add(count))
                .filter(|(_, c)| c.confirmed > 0)
                .map(|(index, c)| ChunkLoc {
                    index: *index,
                    chunk: c.id,
                    version: Version(c.confirmed),
                    length: c.length,
                    replicas: self.addrs(
                        c.replicas
                            .iter()
                            .filter(|(_, v)| **v >= c.confirmed)
                            .map(|(n, _)| *n),
                    ),
                })
                .collect())
        })
    }

    fn prepare_write(&self, ino: InodeId, indexes: Vec<u64>) -> MetaFuture<'_, Vec<WriteGrant>> {
        let (chunk_size, quorum) = (self.chunk_size, self.policy.w);
        self.with("prepare_write", move |st| {
            let next_chunk = &mut st.next_chunk;
            let file = st
                .inodes
                .get_mut(&ino)
                .filter(|i| i.attr.kind == FileKind::File)
                .ok_or(FsError::NotFound)?;
            let mut grants = Vec::new();
            for index in indexes {
                if index
                    .checked_mul(chunk_size)
                    .is_none_or(|s| s >= MAX_FILE_SIZE)
                {
                    return Err(FsError::FileTooBig);
                }
                let chunk = file.chunks.entry(index).or_insert_with(|| {
                    let id = ChunkId(*next_chunk);
                    *next_chunk += 1;
                    Chunk {
                        id,
                        version: 0,
                        confirmed: 0,
                        length: 0,
                        replicas: self.nodes.iter().map(|n| (n.node, 0)).collect(),
                    }
                });
                chunk.version += 1;
                let current = chunk
                    .replicas
                    .iter()
                    .filter(|(_, v)| **v >= chunk.confirmed)
                    .map(|(n, _)| *n);
                grants.push(WriteGrant {
                    index,
                    chunk: chunk.id,
                    version: Version(chunk.version),
                    base: Version(chunk.confirmed),
                    length: chunk.length,
                    replicas: self.addrs(current),
                    quorum,
                });
            }
            Ok(grants)
        })
    }

    fn commit_write(&self, commit: CommitWrite) -> MetaFuture<'_, Attr> {
        let quorum = self.policy.w as usize;
        self.with("commit_write", move |st| {
            let file = st.file(commit.ino)?;
            // Validate everything first: a commit is applied whole or not at all.
            for cc in &commit.chunks {
                let chunk = file
                    .chunks
                    .get(&cc.index)
                    .filter(|c| c.id == cc.chunk)
                    .ok_or_else(|| FsError::Invalid(format!("no chunk {}", cc.index)))?;
                if cc.version.0 == 0 || cc.version.0 > chunk.version {
                    return Err(FsError::Invalid("commit of an ungranted version".into()));
                }
                if cc.ok_nodes.len() < quorum {
                    return Err(FsError::Unavailable("too few replicas acknowledged".into()));
                }
            }
            for cc in &commit.chunks {
                if let Some(chunk) = file.chunks.get_mut(&cc.index) {
                    for node in &cc.ok_nodes {
                        if let Some(v) = chunk.replicas.get_mut(node) {
                            *v = (*v).max(cc.version.0);
                        }
                    }
                    chunk.confirmed = chunk.confirmed.max(cc.version.0);
                    chunk.length = chunk.length.max(cc.written_end);
                }
            }
            let attr = &mut file.attr;
            attr.size = attr.size.max(commit.size);
            attr.mtime = commit.mtime;
            attr.ctime = Timespec::now();
            if commit.clear_suid {
                // As the master: setgid without group execute marks mandatory locking and
                // stays.
                attr.perm &= !(libc::S_ISUID as u16);
                if attr.perm & libc::S_IXGRP as u16 != 0 {
                    attr.perm &= !(libc::S_ISGID as u16);
                }
            }
            Ok(attr.clone())
        })
    }

    fn report_bad_replica(
        &self,
        chunk: ChunkId,
        node: NodeId,
        _reason: String,
    ) -> MetaFuture<'_, ()> {
        self.with("report_bad_replica", move |st| {
            st.bad.push((chunk, node));
            for inode in st.inodes.values_mut() {
                for c in inode.chunks.values_mut().filter(|c| c.id == chunk) {
                    c.replicas.remove(&node);
                }
            }
            Ok(())
        })
    }

    fn confirm_replicas(
        &self,
        chunk: ChunkId,
        base: Version,
        version: Version,
        nodes: Vec<NodeId>,
    ) -> MetaFuture<'_, Vec<NodeId>> {
        self.with("confirm_replicas", move |st| {
            let mut accepted = Vec::new();
            for inode in st.inodes.values_mut() {
                for c in inode.chunks.values_mut().filter(|c| c.id == chunk) {
                    if c.confirmed != version.0 {
                        continue;
                    }
                    for node in &nodes {
                        if let Some(v) = c.replicas.get_mut(node)
                            && *v == base.0
                        {
                            *v = version.0;
                            accepted.push(*node);
                        }
                    }
                }
            }
            Ok(accepted)
        })
    }
}

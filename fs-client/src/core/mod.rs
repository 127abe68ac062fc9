//! The client core: POSIX operations as plain async methods, with no FUSE types.
//!
//! The FUSE adapter (`fuse.rs`) only translates arguments and replies; everything that
//! decides anything lives here so that it can be tested without a kernel. Namespace
//! operations go straight to the master (it is the truth, reached through the
//! `meta::Metadata` trait); file data goes through the open file (`file/`: its write path
//! and read path), which reads chunks through `fetch` and picks replicas with `replicas`.

mod buffer;
mod context;
mod evidence;
mod falloc;
mod fetch;
mod file;
mod listing;
mod locks;
mod readahead;
mod replicas;
pub use readahead::{
    FILE_MAX_BYTES as READAHEAD_FILE_MAX_BYTES, MOUNT_BUDGET_BYTES as READAHEAD_BUDGET_BYTES,
};
pub mod reseal;
#[cfg(test)]
mod tests;

pub use context::CoreConfig;
pub use listing::{DOT_ENTRIES, FsStats, Listed};

use crate::data::DataPlane;
use crate::meta::Metadata;
use common::block::KeyRing;
use common::types::*;
use common::{FsError, FsResult, InodeId, SessionId};
use context::IoContext;
use file::OpenFile;
use parking_lot::Mutex;
use serde_bytes::ByteBuf;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What an open file handle remembers.
#[derive(Clone, Debug)]
struct Handle {
    ino: InodeId,
    append: bool,
}

/// Result of `open`/`create`.
#[derive(Clone, Debug)]
pub struct Opened {
    pub fh: u64,
    pub attr: Attr,
    /// The file did not change since this mount last saw it: the kernel may keep its cache.
    pub keep_cache: bool,
}

pub struct ClientCore {
    /// The handles every open file shares (the master and chunkserver connections too).
    io: Arc<IoContext>,
    info: Mutex<MountInfo>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// Sequence of mutating requests: with the session it names each one, so that a retry
    /// after a lost reply is applied once by the master.
    next_op: AtomicU64,
    /// Files with at least one open handle in this mount.
    open: Mutex<HashMap<InodeId, Arc<OpenFile>>>,
    /// (mtime, size) last seen per inode, to decide whether the kernel may keep its cache.
    seen: Mutex<HashMap<InodeId, (Timespec, u64)>>,
    /// Lock owners that may hold locks through this mount (see `locks`).
    locks: locks::HeldLocks,
}

/// Validates a name the kernel hands us before it goes to the master.
fn name_arg(name: &[u8]) -> FsResult<ByteBuf> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    Ok(ByteBuf::from(name.to_vec()))
}

impl ClientCore {
    /// Says hello to the master and checks that our key is the cluster's key.
    pub async fn connect(
        meta: Arc<dyn Metadata>,
        data: Arc<dyn DataPlane>,
        keys: KeyRing,
        config: CoreConfig,
        client_name: String,
    ) -> FsResult<Arc<ClientCore>> {
        let info = meta.hello(client_name).await?;
        if info.key_check.as_slice() != keys.key_check().as_slice() {
            return Err(FsError::WrongCluster(
                "the data key does not match this cluster's key (key check value differs)".into(),
            ));
        }
        // A ring older than the cluster's current key could not open new blocks: refused
        // here, with the missing ids, rather than failing reads later (docs/SECURITY.md).
        if let Some(current) = &info.current_key {
            keys.check_current(current.id, &current.check)
                .map_err(|why| {
                    FsError::WrongCluster(format!(
                        "{why}; mount with the current key file (the master host's, rewritten \
                         by `mosaic-master rotate-key --state`)"
                    ))
                })?;
        }
        let io = Arc::new(IoContext {
            meta,
            data,
            keys,
            chunk_size: info.chunk_size,
            config,
            replicas: replicas::ReplicaStats::default(),
            metrics: crate::metrics::ClientMetrics::new(),
            readahead_held: Arc::new(AtomicU64::new(0)),
        });
        Ok(Arc::new(ClientCore {
            io,
            info: Mutex::new(info),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            next_op: AtomicU64::new(1),
            open: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            locks: locks::HeldLocks::default(),
        }))
    }

    /// The mount's operation metrics (served by `--metrics-addr`).
    pub fn metrics(&self) -> &crate::metrics::ClientMetrics {
        &self.io.metrics
    }

    /// The master.
    fn meta(&self) -> &dyn Metadata {
        &*self.io.meta
    }

    /// Records `op`'s latency since `started` and its outcome.
    fn measured<T>(&self, op: &str, started: std::time::Instant, result: &FsResult<T>) {
        self.io
            .metrics
            .observe(op, started.elapsed(), result.is_ok());
    }

    pub fn mount_info(&self) -> MountInfo {
        self.info.lock().clone()
    }

    /// A new operation id; retries of the same request reuse it.
    fn op(&self) -> OpId {
        OpId {
            session: self.session(),
            seq: self.next_op.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn session(&self) -> SessionId {
        self.info.lock().session
    }

    /// Renews the session lease; when the master forgot the session (it expired, or the
    /// master's database was restored) a new one is made and open files are re-registered.
    pub async fn keepalive(&self) -> FsResult<()> {
        let session = self.session();
        match self.meta().keepalive(session).await {
            Ok(()) => Ok(()),
            Err(FsError::NotFound) => {
                let info = self.meta().hello("re-hello".into()).await?;
                let session = info.session;
                *self.info.lock() = info;
                let open: Vec<(InodeId, u32)> = self
                    .open
                    .lock()
                    .iter()
                    .map(|(ino, f)| (*ino, f.handles()))
                    .collect();
                for (ino, count) in open {
                    for _ in 0..count {
                        let op = self.op();
                        self.meta().open(op, ino).await?;
                    }
                }
                tracing::warn!(?session, "session had expired; re-registered open files");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Ends the session (unmount).
    pub async fn goodbye(&self) {
        let session = self.session();
        if let Err(e) = self.meta().goodbye(session).await {
            tracing::warn!(error = %e, "could not end the session cleanly");
        }
    }

    /// Overlays what this mount knows and the master does not yet: buffered size and mtime.
    fn local_view(&self, mut attr: Attr) -> Attr {
        if let Some(file) = self.open.lock().get(&attr.ino).cloned() {
            file.adjust_attr(&mut attr);
        }
        attr
    }

    fn remember(&self, attr: &Attr) {
        self.seen.lock().insert(attr.ino, (attr.mtime, attr.size));
    }

    pub async fn lookup(&self, parent: InodeId, name: &[u8]) -> FsResult<Attr> {
        let name = name_arg(name)?;
        let attr = self.meta().lookup(parent, name).await?;
        Ok(self.local_view(attr))
    }

    pub async fn getattr(&self, ino: InodeId) -> FsResult<Attr> {
        let attr = self.meta().getattr(ino).await?;
        Ok(self.local_view(attr))
    }

    pub async fn setattr(&self, ino: InodeId, set: SetAttr, caller: Caller) -> FsResult<Attr> {
        let file = self.open.lock().get(&ino).cloned();
        if set.size.is_some_and(|size| size > MAX_FILE_SIZE) {
            return Err(FsError::FileTooBig);
        }
        // Pending writes must land first, so that a truncate or an explicit mtime (cp -a,
        // touch on an open file) applies after them, as the application ordered it; else
        // the commit of those writes would overwrite the size or time set here.
        if (set.size.is_some() || set.mtime.is_some())
            && let Some(file) = &file
        {
            file.flush(false).await?;
        }
        let op = self.op();
        let size_changed = set.size.is_some();
        let attr = self.meta().setattr(op, ino, set, caller).await?;
        if let Some(file) = &file {
            file.after_setattr(&attr, size_changed);
        }
        Ok(self.local_view(attr))
    }

    async fn create_node(&self, parent: InodeId, name: &[u8], node: NewNode) -> FsResult<Attr> {
        let name = name_arg(name)?;
        let op = self.op();
        self.meta().create(op, parent, name, node).await
    }

    /// mknod/mkdir: any kind of node but a symlink (see [`ClientCore::symlink`]).
    pub async fn mknod(&self, parent: InodeId, name: &[u8], node: NewNode) -> FsResult<Attr> {
        self.create_node(parent, name, node).await
    }

    pub async fn symlink(
        &self,
        parent: InodeId,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> FsResult<Attr> {
        if target.len() > SYMLINK_MAX {
            return Err(FsError::NameTooLong);
        }
        let node = NewNode {
            kind: FileKind::Symlink,
            perm: 0o777,
            umask: 0,
            rdev: 0,
            symlink_target: Some(ByteBuf::from(target.to_vec())),
            caller,
        };
        self.create_node(parent, name, node).await
    }

    /// Creates a regular file and opens it.
    pub async fn create(
        &self,
        parent: InodeId,
        name: &[u8],
        perm: u16,
        umask: u16,
        flags: i32,
        caller: Caller,
    ) -> FsResult<Opened> {
        let node = NewNode {
            kind: FileKind::File,
            perm,
            umask,
            rdev: 0,
            symlink_target: None,
            caller,
        };
        // Created and registered open by one master call (one commit), so the new file
        // is never visible unopened to an unlink that would free it.
        let name = name_arg(name)?;
        let op = self.op();
        let attr = self.meta().create_open(op, parent, name, node).await?;
        Ok(self.opened(attr, flags))
    }

    pub async fn unlink(&self, parent: InodeId, name: &[u8]) -> FsResult<()> {
        let name = name_arg(name)?;
        let op = self.op();
        self.meta().unlink(op, parent, name).await
    }

    pub async fn rmdir(&self, parent: InodeId, name: &[u8]) -> FsResult<()> {
        let name = name_arg(name)?;
        let op = self.op();
        self.meta().rmdir(op, parent, name).await
    }

    pub async fn rename(
        &self,
        parent: InodeId,
        name: &[u8],
        new_parent: InodeId,
        new_name: &[u8],
        flags: RenameFlags,
    ) -> FsResult<()> {
        let (name, new_name) = (name_arg(name)?, name_arg(new_name)?);
        let op = self.op();
        self.meta()
            .rename(op, parent, name, new_parent, new_name, flags)
            .await
    }

    pub async fn link(&self, ino: InodeId, new_parent: InodeId, new_name: &[u8]) -> FsResult<Attr> {
        let new_name = name_arg(new_name)?;
        let op = self.op();
        let attr = self.meta().link(op, ino, new_parent, new_name).await?;
        Ok(self.local_view(attr))
    }

    pub async fn readlink(&self, ino: InodeId) -> FsResult<Vec<u8>> {
        let target = self.meta().readlink(ino).await?;
        Ok(target.into_vec())
    }

    /// One page of a directory after `after` (a cookie; 0 = from the start).
    pub async fn readdir(&self, ino: InodeId, after: u64, plus: bool) -> FsResult<DirPage> {
        let mut page = self
            .meta()
            .readdir(ino, after, READDIR_PAGE_MAX, plus)
            .await?;
        if plus {
            for entry in &mut page.entries {
                if let Some(attr) = entry.attr.take() {
                    entry.attr = Some(self.local_view(attr));
                }
            }
        }
        Ok(page)
    }

    pub async fn statfs(&self) -> FsResult<StatFs> {
        self.meta().statfs().await
    }

    pub async fn getxattr(&self, ino: InodeId, name: &[u8]) -> FsResult<Vec<u8>> {
        if name == GOAL_XATTR {
            let goal = self.meta().get_goal(ino).await?;
            return Ok(goal.to_string().into_bytes());
        }
        let name = ByteBuf::from(name.to_vec());
        let value = self.meta().getxattr(ino, name).await?;
        Ok(value.into_vec())
    }

    pub async fn setxattr(
        &self,
        ino: InodeId,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
    ) -> FsResult<()> {
        if name == GOAL_XATTR {
            // The goal always exists, so XATTR_CREATE/XATTR_REPLACE do not apply to it.
            let goal = parse_goal(value)?;
            let op = self.op();
            self.meta().set_goal(op, ino, goal).await?;
            return Ok(());
        }
        let (name, value) = (ByteBuf::from(name.to_vec()), ByteBuf::from(value.to_vec()));
        let op = self.op();
        self.meta().setxattr(op, ino, name, value, flags).await
    }

    pub async fn listxattr(&self, ino: InodeId) -> FsResult<Vec<Vec<u8>>> {
        let names = self.meta().listxattr(ino).await?;
        Ok(names.into_iter().map(|n| n.into_vec()).collect())
    }

    pub async fn removexattr(&self, ino: InodeId, name: &[u8]) -> FsResult<()> {
        if name == GOAL_XATTR {
            // A goal can be changed, not removed: every inode has one.
            return Err(FsError::NotSupported);
        }
        let name = ByteBuf::from(name.to_vec());
        let op = self.op();
        self.meta().removexattr(op, ino, name).await
    }

    /// Opens a file: registers the open with the master (so an unlink keeps the data) and
    /// revalidates attributes (close-to-open consistency).
    pub async fn open(&self, ino: InodeId, flags: i32) -> FsResult<Opened> {
        let op = self.op();
        let attr = self.meta().open(op, ino).await?;
        Ok(self.opened(attr, flags))
    }

    /// The mount's side of an open the master registered: the file's state and a handle.
    fn opened(&self, attr: Attr, flags: i32) -> Opened {
        let ino = attr.ino;
        let file = {
            let mut open = self.open.lock();
            open.entry(ino)
                .or_insert_with(|| Arc::new(OpenFile::new(attr.clone(), self.io.clone())))
                .clone()
        };
        file.opened(&attr);
        let keep_cache = self.seen.lock().get(&ino) == Some(&(attr.mtime, attr.size));
        let attr = self.local_view(attr);
        self.remember(&attr);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(
            fh,
            Handle {
                ino,
                append: flags & libc::O_APPEND != 0,
            },
        );
        Opened {
            fh,
            attr,
            keep_cache,
        }
    }

    fn handle(&self, fh: u64) -> FsResult<(Handle, Arc<OpenFile>)> {
        let handle = self
            .handles
            .lock()
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        let file = self
            .open
            .lock()
            .get(&handle.ino)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        Ok((handle, file))
    }

    /// Buffers a write without waiting, when the buffer has room. `None`: call
    /// [`ClientCore::write`], which may wait for a flush.
    pub fn try_write_now(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        data: &[u8],
        caller_uid: u32,
    ) -> Option<FsResult<u32>> {
        let started = std::time::Instant::now();
        let (handle, file) = match self.handle(fh) {
            Ok(pair) => pair,
            Err(e) => return Some(Err(e)),
        };
        let result = file.try_buffer(handle.append, offset, data, caller_uid)?;
        self.measured("write", started, &result);
        if let Ok(n) = result {
            self.io.metrics.wrote(n as usize);
        }
        Some(result)
    }

    pub async fn write(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        data: &[u8],
        caller_uid: u32,
    ) -> FsResult<u32> {
        let started = std::time::Instant::now();
        let (handle, file) = self.handle(fh)?;
        let result = file.write(handle.append, offset, data, caller_uid).await;
        self.measured("write", started, &result);
        if let Ok(n) = result {
            self.io.metrics.wrote(n as usize);
        }
        result
    }

    pub async fn read(self: &Arc<Self>, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let started = std::time::Instant::now();
        let (_, file) = self.handle(fh)?;
        let result = file.read(offset, size).await;
        self.measured("read", started, &result);
        if let Ok(bytes) = &result {
            self.io.metrics.read(bytes.len());
        }
        result
    }

    /// close(2) of one descriptor: pushes buffered data and commits it, so that another
    /// mount that opens the file afterwards sees it.
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let started = std::time::Instant::now();
        let (_, file) = self.handle(fh)?;
        let result = file.flush(false).await;
        self.measured("flush", started, &result);
        result
    }

    /// fsync: data on the replicas' disks and metadata committed before returning.
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let started = std::time::Instant::now();
        let (_, file) = self.handle(fh)?;
        let result = file.flush(true).await;
        self.measured("fsync", started, &result);
        result
    }

    /// The last reference to a handle is gone.
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let handle = self.handles.lock().remove(&fh).ok_or(FsError::BadHandle)?;
        let ino = handle.ino;
        let file = self.open.lock().get(&ino).cloned();
        let mut result = Ok(());
        if let Some(file) = file {
            result = file.flush(false).await;
            if file.closed() {
                let mut open = self.open.lock();
                // Another open may have raced in; only drop the state when still unused.
                if open.get(&ino).is_some_and(|f| f.handles() == 0) {
                    open.remove(&ino);
                }
            }
            if let Some(attr) = file.last_attr() {
                self.remember(&attr);
            }
        }
        let op = self.op();
        self.meta().release(op, ino).await?;
        result
    }

    /// Bytes held by the readahead of this mount's open files, at most
    /// [`READAHEAD_BUDGET_BYTES`].
    pub fn readahead_bytes(&self) -> u64 {
        self.io
            .readahead_held
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Keeps the session alive until the core is dropped.
pub fn spawn_keepalive(core: &Arc<ClientCore>) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(core);
    let ttl = Duration::from_millis(core.mount_info().session_ttl_ms.max(300));
    tokio::spawn(async move {
        // Three renewals per lease: one lost keepalive never expires a session.
        let mut tick = tokio::time::interval(ttl / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(core) = weak.upgrade() else { break };
            if let Err(e) = core.keepalive().await {
                tracing::warn!(error = %e, "session keepalive failed");
            }
        }
    })
}

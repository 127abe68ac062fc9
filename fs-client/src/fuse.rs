//! The FUSE adapter: the only module that touches `fuser`.
//!
//! Each operation converts its arguments, hands the work to the client core on the tokio
//! runtime, and replies from there (fuser replies may be sent from any thread), so one
//! dispatch thread keeps many requests in flight. No decisions are made here: anything that
//! could be wrong belongs in `core`, where it is tested without a kernel.

use crate::core::ClientCore;
use common::types::{
    Attr, Caller, FileKind, LockKind, LockRequest, NewNode, RenameFlags, SetAttr, TimeSet,
    Timespec, XattrFlags,
};
use common::{FsError, FsResult, InodeId};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, Notifier, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest write the kernel sends in one request: 1 MiB keeps per-request costs small and
/// matches the chunkserver request size order of magnitude.
const MAX_WRITE: u32 = 1024 * 1024;
/// Readahead we ask the kernel for; sequential reads then arrive as large requests.
const MAX_READAHEAD: u32 = 4 * 1024 * 1024;
/// `st_blksize`: tools such as cp size their buffers by it; large buffers mean few requests.
const IO_BLOCK: u32 = 1024 * 1024;

pub struct MosaicFs {
    core: Arc<ClientCore>,
    rt: tokio::runtime::Handle,
    ttl: Duration,
    /// Set once the session exists (see [`MosaicFs::notifier_slot`]).
    notifier: Arc<OnceLock<Notifier>>,
    /// Open every file with FOPEN_DIRECT_IO (`-o direct_io`): reads and writes bypass the
    /// kernel's page cache for this mount (see [`open_flags`]).
    direct_io: bool,
}

impl MosaicFs {
    pub fn new(core: Arc<ClientCore>, rt: tokio::runtime::Handle, ttl: Duration) -> MosaicFs {
        MosaicFs {
            core,
            rt,
            ttl,
            notifier: Arc::new(OnceLock::new()),
            direct_io: false,
        }
    }

    /// Opens every file with FOPEN_DIRECT_IO (the `direct_io` mount option).
    pub fn with_direct_io(mut self, direct_io: bool) -> MosaicFs {
        self.direct_io = direct_io;
        self
    }

    /// Where the mount puts the session's notifier once the session exists (the session
    /// takes the filesystem by value, so the notifier can only be handed in afterwards).
    /// Without it, close-to-open still holds once the attribute cache time has passed.
    pub fn notifier_slot(&self) -> Arc<OnceLock<Notifier>> {
        self.notifier.clone()
    }
}

/// Close-to-open: the file changed since this mount last saw it, so the size the kernel
/// cached (for up to the attribute time) may be stale, and a read would stop at the old end
/// of the file. Drop the cached attributes (offset -1: not the page cache, which an open
/// without FOPEN_KEEP_CACHE already drops) before the open is answered.
fn forget_cached_attrs(notifier: &OnceLock<Notifier>, n: INodeNo) {
    if let Some(notifier) = notifier.get()
        && let Err(e) = notifier.inval_inode(n, -1, 0)
    {
        // ENOENT: the kernel no longer knows the inode; nothing is cached.
        if e.raw_os_error() != Some(libc::ENOENT) {
            tracing::warn!(ino = n.0, error = %e, "cannot invalidate cached attributes");
        }
    }
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn ino(n: INodeNo) -> InodeId {
    InodeId(n.0)
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino.0),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime.to_system(),
        mtime: a.mtime.to_system(),
        ctime: a.ctime.to_system(),
        crtime: UNIX_EPOCH,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: IO_BLOCK,
        flags: 0,
    }
}

fn time_set(t: Option<TimeOrNow>) -> Option<TimeSet> {
    t.map(|t| match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(Timespec::from_system(t)),
    })
}

fn new_node(kind: FileKind, mode: u32, umask: u32, rdev: u32, caller: Caller) -> NewNode {
    NewNode {
        kind,
        perm: (mode & 0o7777) as u16,
        umask: (umask & 0o7777) as u16,
        rdev,
        symlink_target: None,
        caller,
    }
}

/// The open reply's flags. With `direct_io` the kernel passes each read(2)/write(2) to us
/// as it comes instead of going through its page cache: no copy of every byte into fresh
/// cache pages, but also no kernel readahead and no caching of reads; shared writable mmap
/// then needs FUSE_DIRECT_IO_ALLOW_MMAP (asked for in `init`, kernel 6.6 and later).
fn open_flags(keep_cache: bool, direct_io: bool) -> FopenFlags {
    let mut flags = FopenFlags::empty();
    if keep_cache {
        flags |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if direct_io {
        flags |= FopenFlags::FOPEN_DIRECT_IO;
    }
    flags
}

impl Filesystem for MosaicFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        if let Err(nearest) = config.set_max_readahead(MAX_READAHEAD) {
            let _ = config.set_max_readahead(nearest);
        }
        let _ = config.set_time_granularity(Duration::from_nanos(1));
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            // Locks go to us (and on to the master), so they hold across mounts.
            | InitFlags::FUSE_POSIX_LOCKS
            | InitFlags::FUSE_FLOCK_LOCKS;
        // With direct_io, mmap still goes through the page cache; without this flag the
        // kernel refuses shared writable mappings of direct-io files.
        let wanted = if self.direct_io {
            if !config
                .capabilities()
                .contains(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            {
                tracing::warn!(
                    "direct_io: this kernel lacks FUSE_DIRECT_IO_ALLOW_MMAP; shared writable mmap of files will fail"
                );
            }
            wanted | InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP
        } else {
            wanted
        };
        let _ = config.add_capabilities(wanted & config.capabilities());
        Ok(())
    }

    fn destroy(&mut self) {
        let core = self.core.clone();
        self.rt.block_on(async move { core.goodbye().await });
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (core, ttl, name) = (self.core.clone(), self.ttl, name.as_bytes().to_vec());
        self.rt.spawn(async move {
            reply_entry(reply, &ttl, core.lookup(ino(parent), &name).await);
        });
    }

    fn getattr(&self, _req: &Request, n: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let (core, ttl) = (self.core.clone(), self.ttl);
        self.rt.spawn(async move {
            reply_attr(reply, &ttl, core.getattr(ino(n)).await);
        });
    }

    fn setattr(
        &self,
        req: &Request,
        n: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let (core, ttl, caller) = (self.core.clone(), self.ttl, caller(req));
        let set = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: time_set(atime),
            mtime: time_set(mtime),
        };
        self.rt.spawn(async move {
            reply_attr(reply, &ttl, core.setattr(ino(n), set, caller).await);
        });
    }

    fn readlink(&self, _req: &Request, n: INodeNo, reply: ReplyData) {
        let core = self.core.clone();
        self.rt.spawn(async move {
            match core.readlink(ino(n)).await {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let (core, ttl, caller, name) = (
            self.core.clone(),
            self.ttl,
            caller(req),
            name.as_bytes().to_vec(),
        );
        self.rt.spawn(async move {
            let Some(kind) = FileKind::from_mode(mode) else {
                reply.error(Errno::EINVAL);
                return;
            };
            let node = new_node(kind, mode, umask, rdev, caller);
            reply_entry(reply, &ttl, core.mknod(ino(parent), &name, node).await);
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (core, ttl, caller, name) = (
            self.core.clone(),
            self.ttl,
            caller(req),
            name.as_bytes().to_vec(),
        );
        self.rt.spawn(async move {
            let node = new_node(FileKind::Dir, mode, umask, 0, caller);
            reply_entry(reply, &ttl, core.mknod(ino(parent), &name, node).await);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (core, name) = (self.core.clone(), name.as_bytes().to_vec());
        self.rt.spawn(async move {
            reply_empty(reply, core.unlink(ino(parent), &name).await);
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (core, name) = (self.core.clone(), name.as_bytes().to_vec());
        self.rt.spawn(async move {
            reply_empty(reply, core.rmdir(ino(parent), &name).await);
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (core, ttl, caller) = (self.core.clone(), self.ttl, caller(req));
        let (name, target) = (
            link_name.as_bytes().to_vec(),
            target.as_os_str().as_bytes().to_vec(),
        );
        self.rt.spawn(async move {
            reply_entry(
                reply,
                &ttl,
                core.symlink(ino(parent), &name, &target, caller).await,
            );
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let core = self.core.clone();
        let (name, newname) = (name.as_bytes().to_vec(), newname.as_bytes().to_vec());
        let flags = RenameFlags {
            noreplace: flags.contains(fuser::RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(fuser::RenameFlags::RENAME_EXCHANGE),
        };
        self.rt.spawn(async move {
            match core
                .rename(ino(parent), &name, ino(newparent), &newname, flags)
                .await
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        n: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let (core, ttl, name) = (self.core.clone(), self.ttl, newname.as_bytes().to_vec());
        self.rt.spawn(async move {
            reply_entry(reply, &ttl, core.link(ino(n), ino(newparent), &name).await);
        });
    }

    fn open(&self, _req: &Request, n: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (core, notifier) = (self.core.clone(), self.notifier.clone());
        let direct_io = self.direct_io;
        self.rt.spawn(async move {
            match core.open(ino(n), flags.0).await {
                Ok(opened) => {
                    if !opened.keep_cache {
                        forget_cached_attrs(&notifier, n);
                    }
                    reply.opened(
                        FileHandle(opened.fh),
                        open_flags(opened.keep_cache, direct_io),
                    )
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let core = self.core.clone();
        self.rt.spawn(async move {
            match core.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let uid = req.uid();
        // Buffer on this thread when there is room: no copy, and writes keep their order.
        let _enter = self.rt.enter();
        match self.core.try_write_now(fh.0, offset, data, uid) {
            Some(Ok(n)) => reply.written(n),
            Some(Err(e)) => reply.error(errno(&e)),
            None => {
                let (core, data) = (self.core.clone(), data.to_vec());
                self.rt.spawn(async move {
                    match core.write(fh.0, offset, &data, uid).await {
                        Ok(n) => reply.written(n),
                        Err(e) => reply.error(errno(&e)),
                    }
                });
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        n: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let core = self.core.clone();
        self.rt.spawn(async move {
            reply_empty(reply, core.close(fh.0, ino(n), lock_owner.0).await);
        });
    }

    fn release(
        &self,
        _req: &Request,
        n: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let (core, owner) = (self.core.clone(), lock_owner.map(|o| o.0));
        self.rt.spawn(async move {
            reply_empty(reply, core.release_handle(fh.0, ino(n), owner).await);
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let core = self.core.clone();
        self.rt.spawn(async move {
            reply_empty(reply, core.fsync(fh.0).await);
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        n: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let core = self.core.clone();
        self.rt.spawn(async move {
            let listed = match core.list_dir(ino(n), offset, false).await {
                Ok(listed) => listed,
                Err(e) => return reply.error(errno(&e)),
            };
            for entry in listed {
                let name = OsStr::from_bytes(&entry.name);
                if reply.add(
                    INodeNo(entry.ino.0),
                    entry.offset,
                    file_type(entry.kind),
                    name,
                ) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        n: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let (core, ttl) = (self.core.clone(), self.ttl);
        self.rt.spawn(async move {
            let listed = match core.list_dir(ino(n), offset, true).await {
                Ok(listed) => listed,
                Err(e) => return reply.error(errno(&e)),
            };
            for entry in listed {
                let Some(attr) = entry.attr.as_ref() else {
                    continue;
                };
                let name = OsStr::from_bytes(&entry.name);
                if reply.add(
                    INodeNo(entry.ino.0),
                    entry.offset,
                    name,
                    &ttl,
                    &file_attr(attr),
                    Generation(0),
                ) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Namespace changes are committed durably by the master before they are answered.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let core = self.core.clone();
        self.rt.spawn(async move {
            match core.fs_stats().await {
                Ok(s) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        n: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (core, name, value) = (self.core.clone(), name.as_bytes().to_vec(), value.to_vec());
        let flags = XattrFlags {
            create: flags & libc::XATTR_CREATE != 0,
            replace: flags & libc::XATTR_REPLACE != 0,
        };
        self.rt.spawn(async move {
            reply_empty(reply, core.setxattr(ino(n), &name, &value, flags).await);
        });
    }

    fn getxattr(&self, _req: &Request, n: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let (core, name) = (self.core.clone(), name.as_bytes().to_vec());
        self.rt.spawn(async move {
            match core.getxattr(ino(n), &name).await {
                Ok(value) => reply_sized(reply, size, &value),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, n: INodeNo, size: u32, reply: ReplyXattr) {
        let core = self.core.clone();
        self.rt.spawn(async move {
            match core.listxattr(ino(n)).await {
                Ok(names) => {
                    let mut list = Vec::new();
                    for name in names {
                        list.extend_from_slice(&name);
                        list.push(0);
                    }
                    reply_sized(reply, size, &list);
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn removexattr(&self, _req: &Request, n: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (core, name) = (self.core.clone(), name.as_bytes().to_vec());
        self.rt.spawn(async move {
            reply_empty(reply, core.removexattr(ino(n), &name).await);
        });
    }

    fn getlk(
        &self,
        _req: &Request,
        n: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let core = self.core.clone();
        self.rt.spawn(async move {
            let Some(req) = lock_request(lock_owner, start, end, typ, pid) else {
                return reply.error(Errno::EINVAL);
            };
            match core.getlk(ino(n), req).await {
                Ok(Some(held)) => {
                    reply.locked(held.start, held.end, lock_type(held.kind), held.pid)
                }
                Ok(None) => reply.locked(start, end, libc::F_UNLCK, 0),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn setlk(
        &self,
        _req: &Request,
        n: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let core = self.core.clone();
        self.rt.spawn(async move {
            let Some(req) = lock_request(lock_owner, start, end, typ, pid) else {
                return reply.error(Errno::EINVAL);
            };
            reply_empty(reply, core.setlk(fh.0, ino(n), req, sleep).await);
        });
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let (core, caller) = (self.core.clone(), caller(req));
        self.rt.spawn(async move {
            reply_empty(
                reply,
                core.fallocate(fh.0, offset, length, mode, caller).await,
            );
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (core, ttl, caller, name) = (
            self.core.clone(),
            self.ttl,
            caller(req),
            name.as_bytes().to_vec(),
        );
        let direct_io = self.direct_io;
        self.rt.spawn(async move {
            let perm = (mode & 0o7777) as u16;
            match core
                .create(
                    ino(parent),
                    &name,
                    perm,
                    (umask & 0o7777) as u16,
                    flags,
                    caller,
                )
                .await
            {
                Ok(opened) => reply.created(
                    &ttl,
                    &file_attr(&opened.attr),
                    Generation(0),
                    FileHandle(opened.fh),
                    open_flags(opened.keep_cache, direct_io),
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}

/// A kernel lock request in our terms; `None` for an unknown lock type.
fn lock_request(owner: LockOwner, start: u64, end: u64, typ: i32, pid: u32) -> Option<LockRequest> {
    let kind = match typ {
        libc::F_RDLCK => LockKind::Read,
        libc::F_WRLCK => LockKind::Write,
        libc::F_UNLCK => LockKind::Unlock,
        _ => return None,
    };
    Some(LockRequest {
        owner: owner.0,
        kind,
        start,
        end,
        pid,
    })
}

fn lock_type(kind: LockKind) -> i32 {
    match kind {
        LockKind::Read => libc::F_RDLCK,
        LockKind::Write => libc::F_WRLCK,
        LockKind::Unlock => libc::F_UNLCK,
    }
}

/// Replies to an operation that answers nothing but success or an errno.
fn reply_empty(reply: ReplyEmpty, result: FsResult<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

/// Replies to an operation that makes or finds a name (lookup, mknod, mkdir, symlink, link).
fn reply_entry(reply: ReplyEntry, ttl: &Duration, result: FsResult<Attr>) {
    match result {
        Ok(attr) => reply.entry(ttl, &file_attr(&attr), Generation(0)),
        Err(e) => reply.error(errno(&e)),
    }
}

/// Replies with attributes (getattr, setattr).
fn reply_attr(reply: ReplyAttr, ttl: &Duration, result: FsResult<Attr>) {
    match result {
        Ok(attr) => reply.attr(ttl, &file_attr(&attr)),
        Err(e) => reply.error(errno(&e)),
    }
}

/// getxattr/listxattr protocol: size 0 asks for the length; a short buffer is ERANGE.
fn reply_sized(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

//! Advisory locks (fcntl byte-range locks and flock) through the master, so that they are
//! enforced across mounts. The kernel hands us its lock owner (a process's file table for
//! fcntl locks, the open file description for flock); the master keys locks by our session
//! and that owner.
//!
//! A blocking request (F_SETLKW, flock without LOCK_NB) polls the master with back-off until
//! the lock is granted. FUSE interrupts do not reach us (fuser answers them ENOSYS), so the
//! wait itself watches the waiting thread for a pending signal and answers EINTR, as a
//! local filesystem would; it also ends when the descriptor is closed.
//!
//! This mount remembers which (inode, owner) pairs may hold locks, so that close(2) only
//! costs a master round trip when there is something to release.

use super::ClientCore;
use common::types::{LockInfo, LockKind, LockRequest};
use common::{FsError, FsResult, InodeId};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::time::Duration;

/// First pause of a blocked lock wait: short, as most lock holders keep a lock briefly.
const FIRST_POLL: Duration = Duration::from_millis(5);
/// Longest pause between two attempts: bounds how late a waiter notices a released lock
/// while keeping a long wait at a few requests per second.
const MAX_POLL: Duration = Duration::from_millis(200);

/// (inode, owner) pairs this mount placed a lock for and has not unlocked everything of.
#[derive(Debug, Default)]
pub(crate) struct HeldLocks {
    pairs: Mutex<HashSet<(InodeId, u64)>>,
}

/// Whether thread `tid` has a signal pending that it does not block: the kernel would have
/// interrupted a local lock wait for it.
fn signal_pending(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        // The thread is gone: nobody waits any more.
        return true;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = field("SigPnd:") | field("ShdPnd:");
    let blocked = field("SigBlk:");
    let ignored = field("SigIgn:");
    pending & !blocked & !ignored != 0
}

impl ClientCore {
    async fn lock_call(&self, ino: InodeId, req: LockRequest) -> FsResult<()> {
        let session = self.session();
        self.meta().setlk(session, ino, req).await
    }

    /// F_GETLK: the lock that would block `req`, if any.
    pub async fn getlk(&self, ino: InodeId, req: LockRequest) -> FsResult<Option<LockInfo>> {
        let session = self.session();
        self.meta().getlk(session, ino, req).await
    }

    /// F_SETLK / F_SETLKW (`wait`) / flock. `fh` is the descriptor the request came through:
    /// a wait ends when it is closed.
    pub async fn setlk(&self, fh: u64, ino: InodeId, req: LockRequest, wait: bool) -> FsResult<()> {
        if req.kind != LockKind::Unlock {
            // Remember before asking: a lock granted while our answer is lost must still be
            // released at close.
            self.locks.pairs.lock().insert((ino, req.owner));
        }
        let mut pause = FIRST_POLL;
        loop {
            match self.lock_call(ino, req).await {
                Err(FsError::WouldBlock) if wait => {}
                other => return other,
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL);
            if !self.handles.lock().contains_key(&fh) {
                return Err(FsError::BadHandle);
            }
            if signal_pending(req.pid) {
                return Err(FsError::Interrupted);
            }
        }
    }

    /// Drops every lock `owner` holds on `ino` (close of a descriptor for fcntl locks, last
    /// close of an open file description for flock). Costs nothing when none was placed.
    pub async fn unlock_owner(&self, ino: InodeId, owner: u64) -> FsResult<()> {
        if !self.locks.pairs.lock().remove(&(ino, owner)) {
            return Ok(());
        }
        let req = LockRequest {
            owner,
            kind: LockKind::Unlock,
            start: 0,
            end: u64::MAX,
            pid: 0,
        };
        self.lock_call(ino, req).await
    }
}

//! Advisory file locks (POSIX byte-range locks and flock), served from the master's memory.
//!
//! Every mount forwards its lock requests here, so locks are enforced across mounts. A lock
//! belongs to an owner within a client session (the kernel's lock owner: a process's file
//! table for fcntl locks, an open file description for flock). The service persists each
//! inode's locks ([`LockTable::records`]) with every change and reloads them at start
//! ([`LockTable::restore`]), so a master restart keeps them, as sessions are kept; a session
//! that ends or expires loses its locks, so a dead client never blocks others for longer
//! than its lease. Pure data structure: no I/O, no clock; table-tested below.

use crate::store::LockRecord;
use common::types::{LockInfo, LockKind, LockRequest};
use common::{FsError, InodeId, SessionId};
use std::collections::HashMap;

/// One held lock: `start..=end` (inclusive, `u64::MAX` = to the end of any file).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    session: SessionId,
    owner: u64,
    start: u64,
    end: u64,
    write: bool,
    pid: u32,
}

impl Held {
    fn same_owner(&self, session: SessionId, owner: u64) -> bool {
        self.session == session && self.owner == owner
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }
}

#[derive(Debug, Default)]
pub struct LockTable {
    by_ino: HashMap<InodeId, Vec<Held>>,
}

impl LockTable {
    pub fn new() -> LockTable {
        LockTable::default()
    }

    /// The first lock of another owner that conflicts with `req`, if any.
    fn conflict(&self, session: SessionId, ino: InodeId, req: &LockRequest) -> Option<&Held> {
        let want_write = req.kind == LockKind::Write;
        self.by_ino.get(&ino)?.iter().find(|h| {
            !h.same_owner(session, req.owner)
                && h.overlaps(req.start, req.end)
                && (h.write || want_write)
        })
    }

    /// F_GETLK: the lock that would block `req`, or `None` when it could be placed.
    pub fn test(&self, session: SessionId, ino: InodeId, req: &LockRequest) -> Option<LockInfo> {
        if req.kind == LockKind::Unlock {
            return None;
        }
        self.conflict(session, ino, req).map(|h| LockInfo {
            start: h.start,
            end: h.end,
            kind: if h.write {
                LockKind::Write
            } else {
                LockKind::Read
            },
            pid: h.pid,
        })
    }

    /// F_SETLK: places, converts or removes the owner's lock on a range. A conflicting lock
    /// of another owner is `WouldBlock` (the client retries for F_SETLKW).
    pub fn set(
        &mut self,
        session: SessionId,
        ino: InodeId,
        req: &LockRequest,
    ) -> Result<(), FsError> {
        if req.start > req.end {
            return Err(FsError::Invalid("lock range ends before it starts".into()));
        }
        if req.kind != LockKind::Unlock && self.conflict(session, ino, req).is_some() {
            return Err(FsError::WouldBlock);
        }
        let locks = self.by_ino.entry(ino).or_default();
        // Cut the range out of the owner's existing locks (splitting where needed).
        let mut kept = Vec::with_capacity(locks.len() + 1);
        for h in locks.drain(..) {
            if !h.same_owner(session, req.owner) || !h.overlaps(req.start, req.end) {
                kept.push(h);
                continue;
            }
            if h.start < req.start {
                kept.push(Held {
                    end: req.start - 1,
                    ..h.clone()
                });
            }
            if h.end > req.end {
                kept.push(Held {
                    start: req.end + 1,
                    ..h
                });
            }
        }
        if req.kind != LockKind::Unlock {
            let mut new = Held {
                session,
                owner: req.owner,
                start: req.start,
                end: req.end,
                write: req.kind == LockKind::Write,
                pid: req.pid,
            };
            // Merge with the owner's adjacent locks of the same kind, as Linux does, so that
            // F_GETLK reports one range.
            kept.retain(|h| {
                let adjacent = h.end.checked_add(1) == Some(new.start)
                    || new.end.checked_add(1) == Some(h.start);
                if h.same_owner(session, req.owner) && h.write == new.write && adjacent {
                    new.start = new.start.min(h.start);
                    new.end = new.end.max(h.end);
                    false
                } else {
                    true
                }
            });
            kept.push(new);
        }
        if kept.is_empty() {
            self.by_ino.remove(&ino);
        } else {
            *locks = kept;
        }
        Ok(())
    }

    /// Drops every lock of a session (it ended or its lease expired). Returns how many.
    pub fn drop_session(&mut self, session: SessionId) -> usize {
        let mut dropped = 0;
        self.by_ino.retain(|_, locks| {
            let before = locks.len();
            locks.retain(|h| h.session != session);
            dropped += before - locks.len();
            !locks.is_empty()
        });
        dropped
    }

    /// Every lock on `ino`, as the store persists them.
    pub fn records(&self, ino: InodeId) -> Vec<LockRecord> {
        self.by_ino.get(&ino).map_or_else(Vec::new, |locks| {
            locks
                .iter()
                .map(|h| LockRecord {
                    session: h.session,
                    ino,
                    owner: h.owner,
                    start: h.start,
                    end: h.end,
                    write: h.write,
                    pid: h.pid,
                })
                .collect()
        })
    }

    /// Puts back the locks of `ino` exactly as `records` (of `ino`) list them: loading
    /// persisted locks at start, and undoing a change whose persistence failed.
    pub fn replace(&mut self, ino: InodeId, records: &[LockRecord]) {
        let held: Vec<Held> = records
            .iter()
            .filter(|r| r.ino == ino)
            .map(|r| Held {
                session: r.session,
                owner: r.owner,
                start: r.start,
                end: r.end,
                write: r.write,
                pid: r.pid,
            })
            .collect();
        if held.is_empty() {
            self.by_ino.remove(&ino);
        } else {
            self.by_ino.insert(ino, held);
        }
    }

    /// A table holding exactly the persisted `records`.
    pub fn restore(records: &[LockRecord]) -> LockTable {
        let mut t = LockTable::new();
        let inos: std::collections::BTreeSet<InodeId> = records.iter().map(|r| r.ino).collect();
        for ino in inos {
            t.replace(ino, records);
        }
        t
    }

    /// Locks held on `ino`, for tests and diagnostics.
    pub fn count(&self, ino: InodeId) -> usize {
        self.by_ino.get(&ino).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: SessionId = SessionId(1);
    const S2: SessionId = SessionId(2);
    const F: InodeId = InodeId(10);

    fn req(owner: u64, kind: LockKind, start: u64, end: u64) -> LockRequest {
        LockRequest {
            owner,
            kind,
            start,
            end,
            pid: 42,
        }
    }

    #[test]
    fn conflicts_follow_posix_rules() {
        use LockKind::*;
        let mut t = LockTable::new();
        t.set(S1, F, &req(1, Write, 0, 99)).unwrap();
        // (session, owner, kind, start, end) -> placed?
        let table = [
            (S2, 1, Write, 50, 59, false),
            (S2, 1, Read, 99, 99, false),
            (S2, 1, Write, 100, 199, true),
            (S1, 2, Write, 0, 0, false), // another owner of the same session
            (S1, 1, Read, 0, 10, true),  // the owner itself converts
        ];
        for (s, o, k, a, b, ok) in table {
            assert_eq!(
                t.set(s, F, &req(o, k, a, b)).is_ok(),
                ok,
                "{s:?} {o} {k:?} {a}..{b}"
            );
        }
        // Read locks share.
        let g = InodeId(11);
        t.set(S1, g, &req(1, Read, 0, u64::MAX)).unwrap();
        t.set(S2, g, &req(1, Read, 0, u64::MAX)).unwrap();
        assert_eq!(t.set(S2, g, &req(2, Write, 5, 5)), Err(FsError::WouldBlock));
    }

    #[test]
    fn unlock_splits_and_getlk_reports() {
        use LockKind::*;
        let mut t = LockTable::new();
        t.set(S1, F, &req(1, Write, 0, 99)).unwrap();
        t.set(S1, F, &req(1, Unlock, 40, 59)).unwrap();
        assert_eq!(t.count(F), 2);
        assert!(t.test(S2, F, &req(9, Write, 40, 59)).is_none());
        let info = t.test(S2, F, &req(9, Read, 30, 45)).unwrap();
        assert_eq!((info.start, info.end, info.kind), (0, 39, Write));
        // Filling the gap merges back into one lock.
        t.set(S1, F, &req(1, Write, 40, 59)).unwrap();
        assert_eq!(t.count(F), 1);
        let info = t.test(S2, F, &req(9, Read, 0, 0)).unwrap();
        assert_eq!((info.start, info.end), (0, 99));
        t.set(S1, F, &req(1, Unlock, 0, u64::MAX)).unwrap();
        assert_eq!(t.count(F), 0);
        assert_eq!(
            t.set(S1, F, &req(1, Write, 5, 4))
                .map_err(|e| std::mem::discriminant(&e)),
            Err(std::mem::discriminant(&FsError::Invalid(String::new())))
        );
    }

    #[test]
    fn records_restore_the_same_table() {
        use LockKind::*;
        let mut t = LockTable::new();
        t.set(S1, F, &req(1, Write, 0, 99)).unwrap();
        t.set(S1, F, &req(1, Unlock, 40, 59)).unwrap();
        t.set(S2, F, &req(7, Read, 200, u64::MAX)).unwrap();
        t.set(S2, InodeId(12), &req(3, Read, 0, 5)).unwrap();
        let mut all = t.records(F);
        all.extend(t.records(InodeId(12)));
        assert_eq!(all.len(), 4);
        let mut back = LockTable::restore(&all);
        for ino in [F, InodeId(12)] {
            assert_eq!(back.records(ino), t.records(ino));
        }
        // The restored table enforces what the original did.
        assert_eq!(
            back.set(S2, F, &req(9, Write, 0, 0)),
            Err(FsError::WouldBlock)
        );
        assert!(back.set(S2, F, &req(9, Write, 40, 59)).is_ok());
        // Replacing with nothing clears an inode.
        back.replace(F, &[]);
        assert_eq!(back.count(F), 0);
        assert!(back.records(F).is_empty());
    }

    #[test]
    fn a_session_that_ends_loses_its_locks() {
        use LockKind::*;
        let mut t = LockTable::new();
        t.set(S1, F, &req(1, Write, 0, u64::MAX)).unwrap();
        t.set(S1, InodeId(12), &req(3, Read, 0, 5)).unwrap();
        t.set(S2, InodeId(12), &req(1, Read, 0, 5)).unwrap();
        assert_eq!(t.set(S2, F, &req(1, Write, 0, 0)), Err(FsError::WouldBlock));
        assert_eq!(t.drop_session(S1), 2);
        t.set(S2, F, &req(1, Write, 0, 0)).unwrap();
        assert_eq!(t.count(InodeId(12)), 1);
    }
}

//! Sessions, open-file counts and persisted advisory locks.
//!
//! It must never free an inode that is still open in some session; ending a session frees
//! only what no other session holds.

use super::namespace::free_if_unused;
use super::{R, SqliteStore};
use crate::store::{Freed, LockRecord};
use common::types::{Attr, FileKind, NewNode, Timespec};
use common::{FsError, FsResult, InodeId, SessionId};
use rusqlite::{Connection, OptionalExtension as _, params};

/// Longest client name stored with a session; it is only for humans.
pub(super) const CLIENT_NAME_MAX: usize = 256;

/// Counts one more descriptor of `ino` open in `session`.
pub(super) fn register_open(c: &Connection, session: SessionId, ino: InodeId) -> R<()> {
    c.prepare_cached(
        "INSERT INTO open_files (session, ino, count) VALUES (?1, ?2, 1)
         ON CONFLICT (session, ino) DO UPDATE SET count = count + 1",
    )?
    .execute(params![session.0 as i64, ino.0 as i64])?;
    Ok(())
}

pub(super) fn session_exists(c: &Connection, session: SessionId) -> R<bool> {
    Ok(
        c.prepare_cached("SELECT EXISTS (SELECT 1 FROM sessions WHERE id = ?1)")?
            .query_row([session.0 as i64], |r| r.get(0))?,
    )
}

impl SqliteStore {
    pub(super) fn create_session(&self, client: &str, now: Timespec) -> FsResult<SessionId> {
        let client: String = client.chars().take(CLIENT_NAME_MAX).collect();
        self.write(|c| {
            let id: i64 = c
                .prepare_cached(
                    "INSERT INTO sessions (client, created_sec) VALUES (?1, ?2) RETURNING id",
                )?
                .query_row(params![client, now.sec], |r| r.get(0))?;
            Ok(SessionId(id as u64))
        })
    }

    pub(super) fn list_sessions(&self) -> FsResult<Vec<SessionId>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT id FROM sessions ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok(SessionId(r.get::<_, i64>(0)? as u64)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    pub(super) fn end_session(&self, session: SessionId) -> FsResult<Freed> {
        self.write(|c| {
            let inos: Vec<InodeId> = {
                let mut stmt = c.prepare_cached("SELECT ino FROM open_files WHERE session = ?1")?;
                let rows = stmt.query_map([session.0 as i64], |r| {
                    Ok(InodeId(r.get::<_, i64>(0)? as u64))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            c.prepare_cached("DELETE FROM open_files WHERE session = ?1")?
                .execute([session.0 as i64])?;
            c.prepare_cached("DELETE FROM op_results WHERE session = ?1")?
                .execute([session.0 as i64])?;
            c.prepare_cached("DELETE FROM locks WHERE session = ?1")?
                .execute([session.0 as i64])?;
            c.prepare_cached("DELETE FROM sessions WHERE id = ?1")?
                .execute([session.0 as i64])?;
            let mut freed = Freed::default();
            for ino in inos {
                let f = free_if_unused(c, ino)?;
                freed.inodes += f.inodes;
                freed.replicas_queued += f.replicas_queued;
            }
            Ok(freed)
        })
    }

    pub(super) fn free_orphans(&self) -> FsResult<Freed> {
        self.write(|c| {
            let inos: Vec<InodeId> = {
                let mut stmt = c.prepare_cached(
                    "SELECT ino FROM inodes WHERE nlink = 0
                     AND NOT EXISTS (SELECT 1 FROM open_files o WHERE o.ino = inodes.ino)",
                )?;
                let rows = stmt.query_map([], |r| Ok(InodeId(r.get::<_, i64>(0)? as u64)))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut freed = Freed::default();
            for ino in inos {
                let f = free_if_unused(c, ino)?;
                freed.inodes += f.inodes;
                freed.replicas_queued += f.replicas_queued;
            }
            Ok(freed)
        })
    }

    pub(super) fn release(&self, session: SessionId, ino: InodeId) -> FsResult<()> {
        self.write_once_relaxed(|c| {
            let left: Option<i64> = c
                .prepare_cached(
                    "UPDATE open_files SET count = count - 1 WHERE session = ?1 AND ino = ?2
                     RETURNING count",
                )?
                .query_row(params![session.0 as i64, ino.0 as i64], |r| r.get(0))
                .optional()?;
            if matches!(left, Some(n) if n <= 0) {
                c.prepare_cached("DELETE FROM open_files WHERE session = ?1 AND ino = ?2")?
                    .execute(params![session.0 as i64, ino.0 as i64])?;
                free_if_unused(c, ino)?;
            }
            Ok(())
        })
    }

    pub(super) fn save_locks(&self, ino: InodeId, locks: &[LockRecord]) -> FsResult<()> {
        self.write(|c| {
            c.prepare_cached("DELETE FROM locks WHERE ino = ?1")?
                .execute([ino.0 as i64])?;
            let mut insert = c.prepare_cached(
                "INSERT INTO locks (session, ino, owner, start, end_, write, pid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for l in locks {
                if l.ino != ino {
                    return Err(FsError::internal("save_locks got a lock of another inode").into());
                }
                insert.execute(params![
                    l.session.0 as i64,
                    ino.0 as i64,
                    l.owner as i64,
                    l.start as i64,
                    l.end as i64,
                    l.write,
                    l.pid
                ])?;
            }
            Ok(())
        })
    }

    pub(super) fn load_locks(&self) -> FsResult<Vec<LockRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT l.session, l.ino, l.owner, l.start, l.end_, l.write, l.pid
                 FROM locks l JOIN sessions s ON s.id = l.session ORDER BY l.rowid",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(LockRecord {
                    session: SessionId(r.get::<_, i64>(0)? as u64),
                    ino: InodeId(r.get::<_, i64>(1)? as u64),
                    owner: r.get::<_, i64>(2)? as u64,
                    start: r.get::<_, i64>(3)? as u64,
                    end: r.get::<_, i64>(4)? as u64,
                    write: r.get(5)?,
                    pid: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub(super) fn create_open(
        &self,
        session: SessionId,
        parent: InodeId,
        name: &[u8],
        node: &NewNode,
        now: Timespec,
    ) -> FsResult<Attr> {
        if node.kind != FileKind::File {
            return Err(FsError::Invalid(
                "create_open makes regular files only".into(),
            ));
        }
        self.write_once(|c| {
            if !session_exists(c, session)? {
                return Err(FsError::BadHandle.into());
            }
            let a = self.create_tx(c, parent, name, node, now)?;
            register_open(c, session, a.ino)?;
            Ok(a)
        })
    }
}

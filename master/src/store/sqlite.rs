//! The SQLite metadata engine: one writing connection in WAL mode behind a mutex, one
//! immediate transaction per operation; reads run on a small pool of read-only connections
//! ([`SqliteStore::read`]), each in its own read transaction, so a lookup never waits for a
//! writer's commit and disk flush. A read sees every commit that finished before it began
//! (SQLite publishes a WAL commit to readers only after it is written and, with
//! `durable_commits`, flushed), so an answer read after a mutation was answered includes it.
//! This file is the only place in the master that speaks SQL.
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

use super::rules::{self, LINK_MAX};
use super::{
    ClusterRecord, Freed, GC_BATCH, LockRecord, MAX_CHUNKS_PER_REQUEST, MetaStore,
    NODE_CONTENTS_PAGE_MAX, SummaryCounts, schema,
};
use crate::plan::NodeView;
use crate::plan::placement;
use anyhow::Context as _;
use common::block::BLOCK_SIZE;
use common::types::{
    Attr, ChunkLoc, CommitWrite, DirEntry, DirPage, FileKind, HeldChunk, MAX_FILE_SIZE, NewNode,
    NodeAddr, NodeCondition, NodeReplica, READDIR_PAGE_MAX, RenameFlags, ReplicationPolicy,
    SetAttr, TimeSet, Timespec, WriteGrant, XattrFlags,
};
use common::{ChunkId, ClusterId, FsError, FsResult, InodeId, NodeId, SessionId, Version};
use parking_lot::Mutex;
use rusqlite::types::Type;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, Row, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a statement waits for a lock held by another connection (an admin's sqlite3
/// shell, a backup) before failing: long enough to ride out a checkpoint.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest client name stored with a session; it is only for humans.
const CLIENT_NAME_MAX: usize = 256;
/// Deepest directory chain a rename loop check walks before declaring the tree corrupt.
const MAX_TREE_DEPTH: usize = 1 << 20;

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

macro_rules! attr_cols {
    ($p:literal) => {
        concat!(
            $p,
            "ino, ",
            $p,
            "kind, ",
            $p,
            "perm, ",
            $p,
            "uid, ",
            $p,
            "gid, ",
            $p,
            "size, ",
            $p,
            "nlink, ",
            $p,
            "atime_sec, ",
            $p,
            "atime_nsec, ",
            $p,
            "mtime_sec, ",
            $p,
            "mtime_nsec, ",
            $p,
            "ctime_sec, ",
            $p,
            "ctime_nsec, ",
            $p,
            "rdev"
        )
    };
}

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

impl SqliteStore {
    /// Creates a new metadata database at `path` (which must not exist): the schema, the
    /// cluster row and the root directory (inode 1, 0755 root:root).
    pub fn create(path: &Path, cluster: &ClusterRecord, now: Timespec) -> anyhow::Result<()> {
        if path.exists() {
            anyhow::bail!(
                "{} already exists; refusing to overwrite it",
                path.display()
            );
        }
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("create {}", path.display()))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .context("set synchronous=FULL")?;
        schema::migrate(&mut conn).context("create the schema")?;
        let tx = conn.transaction().context("begin init transaction")?;
        tx.execute(
            "INSERT INTO cluster (singleton, magic, cluster_id, chunk_size, key_check, created_sec)
             VALUES (1, ?1, ?2, ?3, ?4, ?5)",
            params![
                schema::MAGIC,
                &cluster.id.0[..],
                cluster.chunk_size as i64,
                &cluster.key_check,
                now.sec
            ],
        )
        .context("write the cluster row")?;
        tx.execute(
            concat!(
                "INSERT INTO inodes (",
                attr_cols!(""),
                ") VALUES (1, 'dir', 493, 0, 0, 0, 2, ?1, ?2, ?1, ?2, ?1, ?2, 0)"
            ),
            params![now.sec, now.nsec],
        )
        .context("create the root directory")?;
        tx.commit().context("commit init")?;
        conn.close()
            .map_err(|(_, e)| e)
            .with_context(|| format!("close {}", path.display()))?;
        Ok(())
    }

    /// Opens an existing metadata database, refusing (with a one-line error naming the file
    /// and the fix) anything that is missing, not ours, corrupt or newer than this binary.
    pub fn open(path: &Path, durable_commits: bool) -> anyhow::Result<SqliteStore> {
        let state_dir = path.parent().unwrap_or(Path::new("."));
        if !path.exists() {
            anyhow::bail!(
                "metadata database {} does not exist: run `mosaic-master init --state {}` first",
                path.display(),
                state_dir.display()
            );
        }
        let refuse = |what: String| {
            anyhow::anyhow!(
                "{} {what}; the master refuses to start rather than damage data: restore it \
                 from a backup, or move it aside and run `mosaic-master init --state {}`",
                path.display(),
                state_dir.display()
            )
        };
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| refuse(format!("cannot be opened ({e})")))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .context("set the busy timeout")?;
        let version = schema::user_version(&conn)
            .map_err(|e| refuse(format!("is corrupt or not a SQLite database ({e})")))?;
        if version == 0 {
            return Err(refuse(
                "is not a MosaicFS metadata database (no schema)".into(),
            ));
        }
        if version > schema::latest_version() {
            anyhow::bail!(
                "{} has schema version {version}, newer than this mosaic-master understands \
                 ({}): run a newer mosaic-master",
                path.display(),
                schema::latest_version()
            );
        }
        // A full-file structural check at start-up: a truncated or damaged file must stop
        // the master here, not fail halfway through some client's rename. It reads the
        // whole file once (hundreds of MB/s), which is cheap next to serving a corrupt one.
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| refuse(format!("is corrupt ({e})")))?;
        if check != "ok" {
            return Err(refuse(format!("is corrupt (quick_check: {check})")));
        }
        // A foreign database that happens to carry a user_version is refused, never
        // migrated: the first schema's `cluster` table and its magic must be there.
        let magic: Option<String> = conn
            .query_row("SELECT magic FROM cluster WHERE singleton = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| refuse(format!("is not a MosaicFS metadata database ({e})")))?;
        if magic.is_some_and(|m| m != schema::MAGIC) {
            return Err(refuse("is not a MosaicFS metadata database".into()));
        }
        if version < schema::latest_version() {
            // An older MosaicFS database: bring it forward, each step in its own transaction.
            schema::migrate(&mut conn)
                .with_context(|| format!("migrate {} from schema {version}", path.display()))?;
            tracing::info!(
                from = version,
                to = schema::latest_version(),
                "metadata schema migrated"
            );
        }
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .context("set journal_mode=WAL")?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!("{}: SQLite refused WAL mode (got {mode})", path.display());
        }
        let sync = if durable_commits { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", sync)
            .context("set synchronous")?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .context("enable foreign keys")?;
        schema::migrate(&mut conn).map_err(|e| refuse(format!("could not be migrated ({e})")))?;

        let row = conn
            .query_row(
                "SELECT magic, cluster_id, chunk_size, key_check FROM cluster WHERE singleton = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| refuse(format!("is not a MosaicFS metadata database ({e})")))?;
        let Some((magic, id, chunk_size, key_check)) = row else {
            return Err(refuse("has no cluster record (init never finished)".into()));
        };
        if magic != schema::MAGIC {
            return Err(refuse("is not a MosaicFS metadata database".into()));
        }
        let id: [u8; 16] = id
            .try_into()
            .map_err(|_| refuse("has a malformed cluster id".into()))?;
        let chunk_size = u64::try_from(chunk_size).unwrap_or(0);
        if chunk_size == 0 || chunk_size % BLOCK_SIZE as u64 != 0 {
            return Err(refuse(format!(
                "records an invalid chunk size {chunk_size}"
            )));
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            cluster: ClusterRecord {
                id: ClusterId(id),
                chunk_size,
                key_check,
            },
            durable: durable_commits,
            path: path.to_path_buf(),
            readers: Mutex::new(Vec::new()),
            relaxed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Test hook: runs raw SQL to set up states no RPC can reach (e.g. 65000 links).
    #[cfg(test)]
    pub(crate) fn exec_for_tests(&self, sql: &str) {
        self.conn.lock().execute_batch(sql).expect("test SQL");
    }

    /// Test hook: holds the writing connection, as a commit in flight does.
    #[cfg(test)]
    pub(crate) fn hold_writer_for_tests(&self) -> parking_lot::MutexGuard<'_, Connection> {
        self.conn.lock()
    }

    /// Test hook: one integer from a query.
    #[cfg(test)]
    pub(crate) fn query_for_tests(&self, sql: &str) -> i64 {
        self.conn
            .lock()
            .query_row(sql, [], |r| r.get(0))
            .expect("test query")
    }

    /// Runs `f` in one immediate transaction and commits; any error rolls everything back.
    fn write<T>(&self, f: impl FnOnce(&Connection) -> R<T>) -> FsResult<T> {
        let mut conn = self.conn.lock();
        self.restore_full(&conn)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(Error::from)?;
        let out = f(&tx)?;
        // After this returns the operation is durable as configured (see module docs).
        tx.commit().map_err(Error::from)?;
        Ok(out)
    }

    /// [`Self::write`], at most once per operation id (see [`super::with_op`]): the answer
    /// is recorded in the same transaction as the mutation, so a retried request — the reply
    /// was lost to a crash or a broken connection — gets the first answer instead of running
    /// again (a second create would say EEXIST, a second release could free an open file).
    fn write_once<T: Serialize + DeserializeOwned>(
        &self,
        f: impl FnOnce(&Connection) -> R<T>,
    ) -> FsResult<T> {
        let Some(op) = super::current_op() else {
            return self.write(f);
        };
        self.write(|c| Self::once(c, op, f))
    }

    /// [`Self::write_once`] committed without a disk flush of its own: durable with the next
    /// durable commit, or a checkpoint (see the module docs for the one caller and why that
    /// is safe). Without `durable_commits` it is the same as [`Self::write_once`].
    fn write_once_relaxed<T: Serialize + DeserializeOwned>(
        &self,
        f: impl FnOnce(&Connection) -> R<T>,
    ) -> FsResult<T> {
        if !self.durable {
            return self.write_once(f);
        }
        let mut conn = self.conn.lock();
        self.relaxed.store(true, Ordering::SeqCst);
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(Error::from)?;
        let result = (|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(Error::from)?;
            let out = match super::current_op() {
                Some(op) => Self::once(&tx, op, f)?,
                None => f(&tx)?,
            };
            tx.commit().map_err(Error::from)?;
            Ok(out)
        })();
        // Every other transaction must flush again: if FULL cannot be restored here, the
        // next write tries again before it starts and fails rather than run unflushed.
        self.restore_full(&conn)?;
        result
    }

    /// Puts the writing connection back to `synchronous=FULL` after a relaxed write.
    fn restore_full(&self, conn: &Connection) -> FsResult<()> {
        if !self.relaxed.load(Ordering::SeqCst) {
            return Ok(());
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| FsError::Io(format!("restore synchronous=FULL: {e}")))?;
        self.relaxed.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// The body of an at-most-once write, inside the caller's transaction.
    fn once<T: Serialize + DeserializeOwned>(
        c: &Connection,
        op: common::types::OpId,
        f: impl FnOnce(&Connection) -> R<T>,
    ) -> R<T> {
        let (session, seq) = (op.session.0 as i64, op.seq as i64);
        let recorded: Option<Vec<u8>> = c
            .prepare_cached("SELECT result FROM op_results WHERE session = ?1 AND seq = ?2")?
            .query_row(params![session, seq], |r| r.get(0))
            .optional()?;
        if let Some(bytes) = recorded {
            tracing::info!(?op, "repeated request: answering with the recorded result");
            return serde_json::from_slice(&bytes).map_err(|e| {
                FsError::internal(format!("recorded answer of {op:?} unreadable: {e}")).into()
            });
        }
        let out = f(c)?;
        let bytes = serde_json::to_vec(&out)
            .map_err(|e| FsError::internal(format!("record answer of {op:?}: {e}")))?;
        c.prepare_cached("INSERT INTO op_results (session, seq, result) VALUES (?1, ?2, ?3)")?
            .execute(params![session, seq, bytes])?;
        c.prepare_cached("DELETE FROM op_results WHERE session = ?1 AND seq < ?2")?
            .execute(params![session, seq - OP_RESULTS_KEPT])?;
        Ok(out)
    }

    /// Runs read-only `f` in one read transaction on a pooled read-only connection: it sees
    /// one committed state throughout and never waits for the writer.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> R<T>) -> FsResult<T> {
        let pooled = self.readers.lock().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.open_reader()?,
        };
        let result = (|| {
            let tx = conn.transaction().map_err(Error::from)?;
            let out = f(&tx)?;
            tx.commit().map_err(Error::from)?;
            Ok(out)
        })();
        let mut pool = self.readers.lock();
        if pool.len() < READERS_KEPT {
            pool.push(conn);
        }
        result
    }

    /// A new read-only connection to the database (WAL mode is a property of the file).
    fn open_reader(&self) -> FsResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| FsError::Io(format!("open a read connection: {e}")))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| FsError::Io(format!("set the busy timeout: {e}")))?;
        Ok(conn)
    }
}

/// Idle read connections kept open: one per concurrently running read is plenty (the
/// master runs store calls on its blocking threads); more are opened on demand and closed
/// after use.
const READERS_KEPT: usize = 8;

/// Recorded answers kept per session: a client retries only its last few requests (it has
/// at most a few hundred in flight), so older answers are dropped as new ones arrive.
const OP_RESULTS_KEPT: i64 = 4096;

// ---- row helpers -------------------------------------------------------------------------

fn conversion(at: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(at, Type::Text, what.into())
}

fn ts(row: &Row, at: usize) -> rusqlite::Result<Timespec> {
    Ok(Timespec {
        sec: row.get(at)?,
        nsec: row.get::<_, i64>(at + 1)?.clamp(0, 999_999_999) as u32,
    })
}

fn attr_at(row: &Row, at: usize) -> rusqlite::Result<Attr> {
    let kind: String = row.get(at + 1)?;
    let kind = FileKind::parse(&kind)
        .ok_or_else(|| conversion(at + 1, format!("unknown inode kind {kind:?}")))?;
    Ok(Attr {
        ino: InodeId(row.get::<_, i64>(at)? as u64),
        kind,
        perm: row.get::<_, i64>(at + 2)? as u16,
        uid: row.get::<_, i64>(at + 3)? as u32,
        gid: row.get::<_, i64>(at + 4)? as u32,
        size: row.get::<_, i64>(at + 5)? as u64,
        nlink: row.get::<_, i64>(at + 6)? as u32,
        atime: ts(row, at + 7)?,
        mtime: ts(row, at + 9)?,
        ctime: ts(row, at + 11)?,
        rdev: row.get::<_, i64>(at + 13)? as u32,
    })
}

fn find_attr(c: &Connection, ino: InodeId) -> R<Option<Attr>> {
    Ok(c.prepare_cached(concat!(
        "SELECT ",
        attr_cols!(""),
        " FROM inodes WHERE ino = ?1"
    ))?
    .query_row([ino.0 as i64], |r| attr_at(r, 0))
    .optional()?)
}

fn get_attr(c: &Connection, ino: InodeId) -> R<Attr> {
    find_attr(c, ino)?.ok_or(Error::Fs(FsError::NotFound))
}

fn write_attr(c: &Connection, a: &Attr) -> R<()> {
    c.prepare_cached(
        "UPDATE inodes SET perm = ?2, uid = ?3, gid = ?4, size = ?5, nlink = ?6,
             atime_sec = ?7, atime_nsec = ?8, mtime_sec = ?9, mtime_nsec = ?10,
             ctime_sec = ?11, ctime_nsec = ?12, rdev = ?13
         WHERE ino = ?1",
    )?
    .execute(params![
        a.ino.0 as i64,
        a.perm,
        a.uid,
        a.gid,
        a.size as i64,
        a.nlink,
        a.atime.sec,
        a.atime.nsec,
        a.mtime.sec,
        a.mtime.nsec,
        a.ctime.sec,
        a.ctime.nsec,
        a.rdev
    ])?;
    Ok(())
}

/// A directory that exists and is not unlinked; creating in a removed directory is ENOENT.
fn require_dir(c: &Connection, ino: InodeId) -> R<Attr> {
    let a = get_attr(c, ino)?;
    if a.kind != FileKind::Dir {
        return Err(FsError::NotDir.into());
    }
    if a.nlink == 0 {
        return Err(FsError::NotFound.into());
    }
    Ok(a)
}

fn add_nlink(c: &Connection, ino: InodeId, delta: i64) -> R<()> {
    c.prepare_cached("UPDATE inodes SET nlink = max(nlink + ?2, 0) WHERE ino = ?1")?
        .execute(params![ino.0 as i64, delta])?;
    Ok(())
}

fn set_ctime(c: &Connection, ino: InodeId, now: Timespec) -> R<()> {
    c.prepare_cached("UPDATE inodes SET ctime_sec = ?2, ctime_nsec = ?3 WHERE ino = ?1")?
        .execute(params![ino.0 as i64, now.sec, now.nsec])?;
    Ok(())
}

/// A directory's content changed: mtime and ctime.
fn touch_dir(c: &Connection, ino: InodeId, now: Timespec) -> R<()> {
    c.prepare_cached(
        "UPDATE inodes SET mtime_sec = ?2, mtime_nsec = ?3, ctime_sec = ?2, ctime_nsec = ?3
         WHERE ino = ?1",
    )?
    .execute(params![ino.0 as i64, now.sec, now.nsec])?;
    Ok(())
}

fn find_entry(c: &Connection, parent: InodeId, name: &[u8]) -> R<Option<InodeId>> {
    Ok(
        c.prepare_cached("SELECT ino FROM dentries WHERE parent = ?1 AND name = ?2")?
            .query_row(params![parent.0 as i64, name], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|i| InodeId(i as u64)),
    )
}

fn next_cookie(c: &Connection) -> R<i64> {
    Ok(c.prepare_cached(
        "UPDATE counters SET value = value + 1 WHERE name = 'dentry_cookie' RETURNING value",
    )?
    .query_row([], |r| r.get(0))?)
}

/// Adds an entry at a fresh cookie: it sorts after every entry that existed before.
fn insert_entry(c: &Connection, parent: InodeId, name: &[u8], ino: InodeId) -> R<()> {
    let cookie = next_cookie(c)?;
    c.prepare_cached("INSERT INTO dentries (parent, name, cookie, ino) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![parent.0 as i64, name, cookie, ino.0 as i64])?;
    Ok(())
}

fn delete_entry(c: &Connection, parent: InodeId, name: &[u8]) -> R<()> {
    c.prepare_cached("DELETE FROM dentries WHERE parent = ?1 AND name = ?2")?
        .execute(params![parent.0 as i64, name])?;
    Ok(())
}

fn has_children(c: &Connection, dir: InodeId) -> R<bool> {
    Ok(
        c.prepare_cached("SELECT EXISTS (SELECT 1 FROM dentries WHERE parent = ?1)")?
            .query_row([dir.0 as i64], |r| r.get(0))?,
    )
}

/// The directory holding `dir`'s entry (directories have exactly one).
fn dir_parent(c: &Connection, dir: InodeId) -> R<Option<InodeId>> {
    Ok(
        c.prepare_cached("SELECT parent FROM dentries WHERE ino = ?1 LIMIT 1")?
            .query_row([dir.0 as i64], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|i| InodeId(i as u64)),
    )
}

/// True when `dir` is `ancestor` or lies below it.
fn is_within(c: &Connection, dir: InodeId, ancestor: InodeId) -> R<bool> {
    let mut cur = dir;
    for _ in 0..MAX_TREE_DEPTH {
        if cur == ancestor {
            return Ok(true);
        }
        if cur == InodeId::ROOT {
            return Ok(false);
        }
        match dir_parent(c, cur)? {
            Some(parent) => cur = parent,
            None => return Ok(false),
        }
    }
    Err(FsError::internal(format!(
        "directory chain above {dir:?} does not reach the root"
    ))
    .into())
}

fn is_open(c: &Connection, ino: InodeId) -> R<bool> {
    Ok(
        c.prepare_cached("SELECT EXISTS (SELECT 1 FROM open_files WHERE ino = ?1)")?
            .query_row([ino.0 as i64], |r| r.get(0))?,
    )
}

/// Queues every replica of `ino`'s chunks with index >= `first` for deletion and drops the
/// chunk rows. Returns the number of replicas queued.
fn drop_chunks(c: &Connection, ino: InodeId, first: u64) -> R<u64> {
    let first = first.min(i64::MAX as u64) as i64;
    let queued = c
        .prepare_cached(
            "INSERT OR IGNORE INTO gc_queue (chunk, node)
             SELECT r.chunk, r.node FROM replicas r JOIN chunks ch ON ch.id = r.chunk
             WHERE ch.ino = ?1 AND ch.idx >= ?2",
        )?
        .execute(params![ino.0 as i64, first])?;
    c.prepare_cached(
        "DELETE FROM replicas WHERE chunk IN (SELECT id FROM chunks WHERE ino = ?1 AND idx >= ?2)",
    )?
    .execute(params![ino.0 as i64, first])?;
    c.prepare_cached("DELETE FROM chunks WHERE ino = ?1 AND idx >= ?2")?
        .execute(params![ino.0 as i64, first])?;
    Ok(queued as u64)
}

/// Deletes an inode nobody references (no name, no open descriptor) with everything it owns.
fn free_inode(c: &Connection, ino: InodeId) -> R<Freed> {
    let queued = drop_chunks(c, ino, 0)?;
    for sql in [
        "DELETE FROM xattrs WHERE ino = ?1",
        "DELETE FROM symlinks WHERE ino = ?1",
        "DELETE FROM open_files WHERE ino = ?1",
        "DELETE FROM inodes WHERE ino = ?1",
    ] {
        c.prepare_cached(sql)?.execute([ino.0 as i64])?;
    }
    tracing::debug!(ino = %ino, replicas_queued = queued, "inode freed");
    Ok(Freed {
        inodes: 1,
        replicas_queued: queued,
    })
}

/// Frees `ino` if it has no name left and no session holds it open.
fn free_if_unused(c: &Connection, ino: InodeId) -> R<Freed> {
    match find_attr(c, ino)? {
        Some(a) if a.nlink == 0 && a.ino != InodeId::ROOT && !is_open(c, ino)? => {
            free_inode(c, ino)
        }
        _ => Ok(Freed::default()),
    }
}

fn resolve_time(t: TimeSet, now: Timespec) -> R<Timespec> {
    match t {
        TimeSet::Now => Ok(now),
        TimeSet::At(ts) if ts.nsec < 1_000_000_000 => Ok(ts),
        TimeSet::At(ts) => {
            Err(FsError::Invalid(format!("nanoseconds {} out of range", ts.nsec)).into())
        }
    }
}

struct ChunkRow {
    id: ChunkId,
    ino: InodeId,
    idx: u64,
    version: u64,
    confirmed: u64,
    length: u64,
}

fn chunk_row(r: &Row) -> rusqlite::Result<ChunkRow> {
    Ok(ChunkRow {
        id: ChunkId(r.get::<_, i64>(0)? as u64),
        ino: InodeId(r.get::<_, i64>(1)? as u64),
        idx: r.get::<_, i64>(2)? as u64,
        version: r.get::<_, i64>(3)? as u64,
        confirmed: r.get::<_, i64>(4)? as u64,
        length: r.get::<_, i64>(5)? as u64,
    })
}

const CHUNK_COLS: &str = "id, ino, idx, version, confirmed, length";

fn chunk_by_id(c: &Connection, id: ChunkId) -> R<Option<ChunkRow>> {
    Ok(
        c.prepare_cached(&format!("SELECT {CHUNK_COLS} FROM chunks WHERE id = ?1"))?
            .query_row([id.0 as i64], chunk_row)
            .optional()?,
    )
}

/// Nodes whose replicas do not count toward any goal (declared dead, draining or
/// decommissioned: `NodeCondition::counts`). A draining node's replicas are never trimmed
/// for counting here: trims only remove counting replicas.
const DEAD_NODES: &str = "SELECT node FROM node_conditions
      WHERE condition IN ('dead', 'draining', 'decommissioned')";

/// Counting current replicas of chunk `ch` (a correlated subquery).
const COUNTING: &str = "(SELECT count(*) FROM replicas r
      WHERE r.chunk = ch.id AND r.version = ch.confirmed AND r.bad = 0
        AND r.node NOT IN (SELECT node FROM node_conditions
                           WHERE condition IN ('dead', 'draining', 'decommissioned')))";

fn condition_name(condition: NodeCondition) -> Option<&'static str> {
    match condition {
        NodeCondition::Up => None,
        NodeCondition::Dead => Some("dead"),
        NodeCondition::Maintenance => Some("maintenance"),
        NodeCondition::Draining => Some("draining"),
        NodeCondition::Decommissioned => Some("decommissioned"),
    }
}

fn parse_condition(name: &str) -> Option<NodeCondition> {
    match name {
        "dead" => Some(NodeCondition::Dead),
        "maintenance" => Some(NodeCondition::Maintenance),
        "draining" => Some(NodeCondition::Draining),
        "decommissioned" => Some(NodeCondition::Decommissioned),
        _ => None,
    }
}

/// (chunk, confirmed, length, goal) of a goal query row: the goal is the file's own, else
/// the cluster's (the query's `coalesce`), clamped to the range `set_goal` allows.
fn goal_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ChunkId, u64, u64, u32)> {
    Ok((
        ChunkId(r.get::<_, i64>(0)? as u64),
        r.get::<_, i64>(1)? as u64,
        r.get::<_, i64>(2)?.max(0) as u64,
        r.get::<_, i64>(3)?
            .clamp(1, i64::from(common::types::MAX_GOAL)) as u32,
    ))
}

/// Every replica row of each chunk, for the repair planner.
fn chunk_replica_rows(
    c: &Connection,
    ids: Vec<(ChunkId, u64, u64, u32)>,
) -> R<Vec<crate::plan::repair::ChunkReplicas>> {
    let mut out = Vec::with_capacity(ids.len());
    for (chunk, confirmed, length, goal) in ids {
        let mut stmt = c.prepare_cached(
            "SELECT node, version, bad FROM replicas WHERE chunk = ?1 ORDER BY node",
        )?;
        let rows = stmt.query_map([chunk.0 as i64], |r| {
            Ok(crate::plan::repair::ReplicaRow {
                node: NodeId(r.get::<_, i64>(0)? as u64),
                version: Version(r.get::<_, i64>(1)? as u64),
                bad: r.get(2)?,
            })
        })?;
        out.push(crate::plan::repair::ChunkReplicas {
            chunk,
            confirmed: Version(confirmed),
            length,
            goal: goal as usize,
            replicas: rows.collect::<rusqlite::Result<_>>()?,
        });
    }
    Ok(out)
}

/// Replicas holding the chunk's confirmed version and not reported bad, with addresses.
fn current_replicas(c: &Connection, chunk: ChunkId, confirmed: u64) -> R<Vec<(NodeId, String)>> {
    let mut stmt = c.prepare_cached(
        "SELECT r.node, n.addr FROM replicas r JOIN nodes n ON n.id = r.node
         WHERE r.chunk = ?1 AND r.version = ?2 AND r.bad = 0",
    )?;
    let rows = stmt.query_map(params![chunk.0 as i64, confirmed as i64], |r| {
        Ok((NodeId(r.get::<_, i64>(0)? as u64), r.get::<_, String>(1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Orders replicas for readers and writers: online first, then least loaded, then by id.
fn ordered_addrs(
    replicas: Vec<(NodeId, String)>,
    views: &HashMap<NodeId, &NodeView>,
) -> Vec<NodeAddr> {
    let mut out: Vec<(bool, NodeAddr)> = replicas
        .into_iter()
        .map(|(node, addr)| match views.get(&node) {
            Some(v) => (
                v.online,
                NodeAddr {
                    node,
                    addr: v.addr.clone(),
                    load: v.status.load(),
                },
            ),
            None => (
                false,
                NodeAddr {
                    node,
                    addr,
                    load: u64::MAX,
                },
            ),
        })
        .collect();
    out.sort_by(|(a_on, a), (b_on, b)| {
        b_on.cmp(a_on)
            .then(a.load.cmp(&b.load))
            .then(a.node.cmp(&b.node))
    });
    out.into_iter().map(|(_, a)| a).collect()
}

fn view_map(nodes: &[NodeView]) -> HashMap<NodeId, &NodeView> {
    nodes.iter().map(|v| (v.node, v)).collect()
}

/// A regular file for data operations: directories are EISDIR, other kinds EINVAL.
/// The replication goal stored on `ino` (`None`: follow the cluster's N).
fn inode_goal(c: &Connection, ino: InodeId) -> R<Option<u32>> {
    let goal: Option<i64> = c
        .prepare_cached("SELECT goal FROM inodes WHERE ino = ?1")?
        .query_row([ino.0 as i64], |r| r.get(0))
        .optional()?
        .ok_or(Error::Fs(FsError::NotFound))?;
    Ok(goal.map(|g| g.clamp(1, i64::from(common::types::MAX_GOAL)) as u32))
}

fn require_file(c: &Connection, ino: InodeId) -> R<Attr> {
    let a = get_attr(c, ino)?;
    match a.kind {
        FileKind::File => Ok(a),
        FileKind::Dir => Err(FsError::IsDir.into()),
        other => Err(FsError::Invalid(format!("{} has no data chunks", other.as_str())).into()),
    }
}

/// Counts one more descriptor of `ino` open in `session`.
fn register_open(c: &Connection, session: SessionId, ino: InodeId) -> R<()> {
    c.prepare_cached(
        "INSERT INTO open_files (session, ino, count) VALUES (?1, ?2, 1)
         ON CONFLICT (session, ino) DO UPDATE SET count = count + 1",
    )?
    .execute(params![session.0 as i64, ino.0 as i64])?;
    Ok(())
}

fn session_exists(c: &Connection, session: SessionId) -> R<bool> {
    Ok(
        c.prepare_cached("SELECT EXISTS (SELECT 1 FROM sessions WHERE id = ?1)")?
            .query_row([session.0 as i64], |r| r.get(0))?,
    )
}

// ---- operations --------------------------------------------------------------------------

impl SqliteStore {
    fn create_tx(
        &self,
        c: &Connection,
        parent: InodeId,
        name: &[u8],
        node: &NewNode,
        now: Timespec,
    ) -> R<Attr> {
        rules::check_name(name)?;
        let p = require_dir(c, parent)?;
        if rules::is_dot(name) || find_entry(c, parent, name)?.is_some() {
            return Err(FsError::Exists.into());
        }
        let (perm, uid, gid) = rules::new_owner(node, &p);
        let target = match node.kind {
            FileKind::Symlink => Some(rules::check_symlink_target(
                node.symlink_target.as_deref().map(|t| &t[..]),
            )?),
            _ => None,
        };
        let rdev = match node.kind {
            FileKind::CharDev | FileKind::BlockDev | FileKind::Fifo | FileKind::Socket => node.rdev,
            _ => 0,
        };
        let is_dir = node.kind == FileKind::Dir;
        let size = target.map_or(0, |t| t.len() as u64);
        let ino: i64 = c
            .prepare_cached(
                // goal: inherited from the parent directory (NULL: follow the cluster).
                "INSERT INTO inodes (kind, perm, uid, gid, size, nlink, atime_sec, atime_nsec,
                     mtime_sec, mtime_nsec, ctime_sec, ctime_nsec, rdev, goal)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?7, ?8, ?7, ?8, ?9,
                     (SELECT goal FROM inodes WHERE ino = ?10)) RETURNING ino",
            )?
            .query_row(
                params![
                    node.kind.as_str(),
                    perm,
                    uid,
                    gid,
                    size as i64,
                    if is_dir { 2 } else { 1 },
                    now.sec,
                    now.nsec,
                    rdev,
                    parent.0 as i64
                ],
                |r| r.get(0),
            )?;
        let ino = InodeId(ino as u64);
        if let Some(target) = target {
            c.prepare_cached("INSERT INTO symlinks (ino, target) VALUES (?1, ?2)")?
                .execute(params![ino.0 as i64, target])?;
        }
        insert_entry(c, parent, name, ino)?;
        if is_dir {
            add_nlink(c, parent, 1)?;
        }
        touch_dir(c, parent, now)?;
        get_attr(c, ino)
    }

    fn unlink_tx(&self, c: &Connection, parent: InodeId, name: &[u8], now: Timespec) -> R<()> {
        rules::check_name(name)?;
        require_dir(c, parent)?;
        if rules::is_dot(name) {
            return Err(FsError::IsDir.into());
        }
        let ino = find_entry(c, parent, name)?.ok_or(FsError::NotFound)?;
        let a = get_attr(c, ino)?;
        if a.kind == FileKind::Dir {
            return Err(FsError::IsDir.into());
        }
        delete_entry(c, parent, name)?;
        add_nlink(c, ino, -1)?;
        set_ctime(c, ino, now)?;
        touch_dir(c, parent, now)?;
        free_if_unused(c, ino)?;
        Ok(())
    }

    fn rmdir_tx(&self, c: &Connection, parent: InodeId, name: &[u8], now: Timespec) -> R<()> {
        rules::check_name(name)?;
        require_dir(c, parent)?;
        match name {
            b"." => return Err(FsError::Invalid("cannot remove '.'".into()).into()),
            b".." => return Err(FsError::NotEmpty.into()),
            _ => {}
        }
        let ino = find_entry(c, parent, name)?.ok_or(FsError::NotFound)?;
        let a = get_attr(c, ino)?;
        if a.kind != FileKind::Dir {
            return Err(FsError::NotDir.into());
        }
        if has_children(c, ino)? {
            return Err(FsError::NotEmpty.into());
        }
        delete_entry(c, parent, name)?;
        // An empty directory has no name left at all ("." and ".." go with it).
        c.prepare_cached("UPDATE inodes SET nlink = 0 WHERE ino = ?1")?
            .execute([ino.0 as i64])?;
        set_ctime(c, ino, now)?;
        add_nlink(c, parent, -1)?;
        touch_dir(c, parent, now)?;
        free_if_unused(c, ino)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn rename_tx(
        &self,
        c: &Connection,
        parent: InodeId,
        name: &[u8],
        new_parent: InodeId,
        new_name: &[u8],
        flags: RenameFlags,
        now: Timespec,
    ) -> R<()> {
        rules::check_name(name)?;
        rules::check_name(new_name)?;
        if flags.exchange && flags.noreplace {
            return Err(FsError::Invalid("RENAME_EXCHANGE with RENAME_NOREPLACE".into()).into());
        }
        if rules::is_dot(name) || rules::is_dot(new_name) {
            return Err(FsError::Invalid("cannot rename '.' or '..'".into()).into());
        }
        require_dir(c, parent)?;
        require_dir(c, new_parent)?;
        let src = find_entry(c, parent, name)?.ok_or(FsError::NotFound)?;
        let dst = find_entry(c, new_parent, new_name)?;
        if dst == Some(src) {
            // POSIX: both names refer to the same inode, so rename does nothing.
            return Ok(());
        }
        if flags.noreplace && dst.is_some() {
            return Err(FsError::Exists.into());
        }
        let src_attr = get_attr(c, src)?;
        let src_is_dir = src_attr.kind == FileKind::Dir;
        // A directory may not move into itself or its own subtree.
        if src_is_dir && is_within(c, new_parent, src)? {
            return Err(FsError::Invalid("cannot move a directory into itself".into()).into());
        }

        if flags.exchange {
            let dst = dst.ok_or(FsError::NotFound)?;
            let dst_is_dir = get_attr(c, dst)?.kind == FileKind::Dir;
            if dst_is_dir && is_within(c, parent, dst)? {
                return Err(FsError::Invalid("cannot move a directory into itself".into()).into());
            }
            c.prepare_cached("UPDATE dentries SET ino = ?3 WHERE parent = ?1 AND name = ?2")?
                .execute(params![parent.0 as i64, name, dst.0 as i64])?;
            c.prepare_cached("UPDATE dentries SET ino = ?3 WHERE parent = ?1 AND name = ?2")?
                .execute(params![new_parent.0 as i64, new_name, src.0 as i64])?;
            if parent != new_parent {
                // Each directory's ".." now points at the other parent.
                let delta = i64::from(dst_is_dir) - i64::from(src_is_dir);
                add_nlink(c, parent, delta)?;
                add_nlink(c, new_parent, -delta)?;
            }
            set_ctime(c, src, now)?;
            set_ctime(c, dst, now)?;
            touch_dir(c, parent, now)?;
            touch_dir(c, new_parent, now)?;
            return Ok(());
        }

        if let Some(dst) = dst {
            let dst_attr = get_attr(c, dst)?;
            let dst_is_dir = dst_attr.kind == FileKind::Dir;
            if dst_is_dir && is_within(c, parent, dst)? {
                // The target is an ancestor of the source: it cannot be empty.
                return Err(FsError::NotEmpty.into());
            }
            match (src_is_dir, dst_is_dir) {
                (true, false) => return Err(FsError::NotDir.into()),
                (false, true) => return Err(FsError::IsDir.into()),
                (true, true) if has_children(c, dst)? => return Err(FsError::NotEmpty.into()),
                _ => {}
            }
            delete_entry(c, new_parent, new_name)?;
            if dst_is_dir {
                c.prepare_cached("UPDATE inodes SET nlink = 0 WHERE ino = ?1")?
                    .execute([dst.0 as i64])?;
                add_nlink(c, new_parent, -1)?;
            } else {
                add_nlink(c, dst, -1)?;
            }
            set_ctime(c, dst, now)?;
            free_if_unused(c, dst)?;
        }

        delete_entry(c, parent, name)?;
        insert_entry(c, new_parent, new_name, src)?;
        if src_is_dir && parent != new_parent {
            add_nlink(c, parent, -1)?;
            add_nlink(c, new_parent, 1)?;
        }
        set_ctime(c, src, now)?;
        touch_dir(c, parent, now)?;
        touch_dir(c, new_parent, now)?;
        Ok(())
    }

    fn link_tx(
        &self,
        c: &Connection,
        ino: InodeId,
        new_parent: InodeId,
        new_name: &[u8],
        now: Timespec,
    ) -> R<Attr> {
        rules::check_name(new_name)?;
        require_dir(c, new_parent)?;
        let a = get_attr(c, ino)?;
        if rules::is_dot(new_name) || find_entry(c, new_parent, new_name)?.is_some() {
            return Err(FsError::Exists.into());
        }
        if a.kind == FileKind::Dir {
            return Err(FsError::NotPermitted.into());
        }
        if a.nlink == 0 {
            // Linux refuses to give an unlinked (open-only) inode a new name.
            return Err(FsError::NotFound.into());
        }
        if a.nlink >= LINK_MAX {
            return Err(FsError::TooManyLinks.into());
        }
        insert_entry(c, new_parent, new_name, ino)?;
        add_nlink(c, ino, 1)?;
        set_ctime(c, ino, now)?;
        touch_dir(c, new_parent, now)?;
        get_attr(c, ino)
    }

    fn setattr_tx(&self, c: &Connection, ino: InodeId, set: &SetAttr, now: Timespec) -> R<Attr> {
        let mut a = get_attr(c, ino)?;
        let mut changed = false;
        if let Some(size) = set.size {
            match a.kind {
                FileKind::File => {}
                FileKind::Dir => return Err(FsError::IsDir.into()),
                other => {
                    return Err(
                        FsError::Invalid(format!("cannot truncate a {}", other.as_str())).into(),
                    );
                }
            }
            if size > MAX_FILE_SIZE {
                return Err(FsError::FileTooBig.into());
            }
            self.trim_chunks(c, ino, size)?;
            // As Linux (truncate(2), O_TRUNC): mtime moves even when the size does not.
            if set.mtime.is_none() {
                a.mtime = now;
            }
            a.size = size;
            changed = true;
        }
        if let Some(mode) = set.mode {
            a.perm = rules::chmod_bits(mode);
            changed = true;
        }
        if let Some(uid) = set.uid {
            a.uid = uid;
            changed = true;
        }
        if let Some(gid) = set.gid {
            a.gid = gid;
            changed = true;
        }
        if rules::chown_clears_suid(a.kind, set.uid, set.gid, set.mode) {
            a.perm = rules::clear_suid(a.perm);
        }
        if let Some(t) = set.atime {
            a.atime = resolve_time(t, now)?;
            changed = true;
        }
        if let Some(t) = set.mtime {
            a.mtime = resolve_time(t, now)?;
            changed = true;
        }
        if changed {
            a.ctime = now;
            write_attr(c, &a)?;
        }
        Ok(a)
    }

    /// Truncate is pure metadata: chunks wholly past the new end are dropped (their
    /// replicas queued for deletion) and the last kept chunk's length is cut, so the bytes
    /// past it read as zeros even though they may still sit on disk.
    fn trim_chunks(&self, c: &Connection, ino: InodeId, size: u64) -> R<()> {
        let chunk_size = self.cluster.chunk_size;
        let keep = size.div_ceil(chunk_size);
        drop_chunks(c, ino, keep)?;
        if keep > 0 {
            let last = keep - 1;
            let end = size - last * chunk_size;
            c.prepare_cached(
                "UPDATE chunks SET length = min(length, ?3) WHERE ino = ?1 AND idx = ?2",
            )?
            .execute(params![ino.0 as i64, last as i64, end as i64])?;
        }
        Ok(())
    }

    fn prepare_write_tx(
        &self,
        c: &Connection,
        ino: InodeId,
        indexes: &[u64],
        nodes: &[NodeView],
        policy: ReplicationPolicy,
    ) -> R<Vec<WriteGrant>> {
        if indexes.len() as u64 > MAX_CHUNKS_PER_REQUEST {
            return Err(FsError::Invalid(format!(
                "prepare_write names {} chunks, at most {MAX_CHUNKS_PER_REQUEST} allowed",
                indexes.len()
            ))
            .into());
        }
        require_file(c, ino)?;
        let chunk_size = self.cluster.chunk_size;
        let views = view_map(nodes);
        let goal = inode_goal(c, ino)?.unwrap_or(policy.n);
        let quorum = policy.quorum_for(goal) as usize;
        let mut seen = HashSet::new();
        let mut grants = Vec::with_capacity(indexes.len());
        for &index in indexes {
            if !seen.insert(index) {
                continue;
            }
            match index.checked_mul(chunk_size) {
                Some(start) if start < MAX_FILE_SIZE => {}
                _ => return Err(FsError::FileTooBig.into()),
            }
            let existing = c
                .prepare_cached(&format!(
                    "SELECT {CHUNK_COLS} FROM chunks WHERE ino = ?1 AND idx = ?2"
                ))?
                .query_row(params![ino.0 as i64, index as i64], chunk_row)
                .optional()?;
            let grant = match existing {
                Some(chunk) => {
                    // Only replicas that hold the current data may take the write: a fresh,
                    // empty replica would later serve zeros for blocks it never received.
                    let current = current_replicas(c, chunk.id, chunk.confirmed)?;
                    let online: Vec<(NodeId, String)> = current
                        .into_iter()
                        .filter(|(n, _)| views.get(n).is_some_and(|v| v.online))
                        .collect();
                    if online.len() < quorum {
                        return Err(FsError::Unavailable(format!(
                            "chunk {:?} has {} current replicas online, a write needs {quorum}",
                            chunk.id,
                            online.len()
                        ))
                        .into());
                    }
                    let version = chunk.version + 1;
                    c.prepare_cached("UPDATE chunks SET version = ?2 WHERE id = ?1")?
                        .execute(params![chunk.id.0 as i64, version as i64])?;
                    WriteGrant {
                        index,
                        chunk: chunk.id,
                        version: Version(version),
                        base: Version(chunk.confirmed),
                        length: chunk.length,
                        replicas: ordered_addrs(online, &views),
                        quorum: quorum as u32,
                    }
                }
                None => {
                    let chosen = placement::choose_replicas(nodes, goal as usize, &[], chunk_size);
                    if chosen.len() < quorum {
                        return Err(placement::shortfall(nodes, quorum, chosen.len()).into());
                    }
                    let id: i64 = c
                        .prepare_cached(
                            "INSERT INTO chunks (ino, idx, version, confirmed, length)
                             VALUES (?1, ?2, 1, 0, 0) RETURNING id",
                        )?
                        .query_row(params![ino.0 as i64, index as i64], |r| r.get(0))?;
                    let chunk = ChunkId(id as u64);
                    let mut replicas = Vec::with_capacity(chosen.len());
                    for node in chosen {
                        c.prepare_cached(
                            "INSERT INTO replicas (chunk, node, version) VALUES (?1, ?2, 0)",
                        )?
                        .execute(params![id, node.0 as i64])?;
                        let addr = views.get(&node).map(|v| v.addr.clone()).unwrap_or_default();
                        replicas.push((node, addr));
                    }
                    WriteGrant {
                        index,
                        chunk,
                        version: Version(1),
                        base: Version(0),
                        length: 0,
                        replicas: ordered_addrs(replicas, &views),
                        quorum: quorum as u32,
                    }
                }
            };
            grants.push(grant);
        }
        Ok(grants)
    }

    fn commit_write_tx(
        &self,
        c: &Connection,
        commit: &CommitWrite,
        write_quorum: u32,
        now: Timespec,
    ) -> R<Attr> {
        let mut a = require_file(c, commit.ino)?;
        // A file whose goal is below W needs only its goal of acknowledgements; a NULL goal
        // follows N, and W <= N.
        let write_quorum = match inode_goal(c, commit.ino)? {
            Some(goal) => write_quorum.min(goal).max(1),
            None => write_quorum,
        };
        if commit.size > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig.into());
        }
        if commit.mtime.nsec >= 1_000_000_000 {
            return Err(FsError::Invalid("mtime nanoseconds out of range".into()).into());
        }
        if commit.chunks.len() as u64 > MAX_CHUNKS_PER_REQUEST {
            return Err(FsError::Invalid("too many chunks in one commit".into()).into());
        }
        let chunk_size = self.cluster.chunk_size;
        // Validate everything first: a commit is applied whole or not at all.
        let mut plans = Vec::with_capacity(commit.chunks.len());
        for cc in &commit.chunks {
            let row = chunk_by_id(c, cc.chunk)?
                .filter(|row| row.ino == commit.ino && row.idx == cc.index)
                .ok_or_else(|| {
                    FsError::Invalid(format!(
                        "chunk {:?} is not chunk {} of {:?}",
                        cc.chunk, cc.index, commit.ino
                    ))
                })?;
            if cc.version.0 == 0 || cc.version.0 > row.version {
                return Err(FsError::Invalid(format!(
                    "chunk {:?}: commit of {:?}, newest grant is v{:x}",
                    cc.chunk, cc.version, row.version
                ))
                .into());
            }
            if cc.written_end > chunk_size {
                return Err(FsError::Invalid(format!(
                    "chunk {:?}: written end {} past the chunk size {chunk_size}",
                    cc.chunk, cc.written_end
                ))
                .into());
            }
            let mut acked = Vec::new();
            for &node in cc.ok_nodes.iter().collect::<HashSet<_>>() {
                let healthy: Option<bool> = c
                    .prepare_cached("SELECT bad = 0 FROM replicas WHERE chunk = ?1 AND node = ?2")?
                    .query_row(params![cc.chunk.0 as i64, node.0 as i64], |r| r.get(0))
                    .optional()?;
                if healthy == Some(true) {
                    acked.push(node);
                }
            }
            if acked.len() < write_quorum as usize {
                return Err(FsError::Unavailable(format!(
                    "chunk {:?}: {} replicas acknowledged, a write needs {write_quorum}",
                    cc.chunk,
                    acked.len()
                ))
                .into());
            }
            plans.push((cc, acked));
        }
        for (cc, acked) in plans {
            for node in acked {
                c.prepare_cached(
                    "UPDATE replicas SET version = max(version, ?3) WHERE chunk = ?1 AND node = ?2",
                )?
                .execute(params![
                    cc.chunk.0 as i64,
                    node.0 as i64,
                    cc.version.0 as i64
                ])?;
            }
            c.prepare_cached(
                "UPDATE chunks SET confirmed = max(confirmed, ?2), length = max(length, ?3)
                 WHERE id = ?1",
            )?
            .execute(params![
                cc.chunk.0 as i64,
                cc.version.0 as i64,
                cc.written_end as i64
            ])?;
        }
        a.size = a.size.max(commit.size);
        a.mtime = commit.mtime;
        a.ctime = now;
        if commit.clear_suid {
            a.perm = rules::clear_suid(a.perm);
        }
        write_attr(c, &a)?;
        Ok(a)
    }

    fn reconcile_tx(&self, c: &Connection, node: NodeId, held: &[HeldChunk]) -> R<Vec<ChunkId>> {
        let mut delete = Vec::new();
        let mut seen = HashSet::new();
        for h in held {
            if !seen.insert(h.chunk) {
                continue;
            }
            let chunk = chunk_by_id(c, h.chunk)?;
            let replica: Option<(u64, bool)> = c
                .prepare_cached("SELECT version, bad FROM replicas WHERE chunk = ?1 AND node = ?2")?
                .query_row(params![h.chunk.0 as i64, node.0 as i64], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
                })
                .optional()?;
            let queued: bool = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM gc_queue WHERE chunk = ?1 AND node = ?2)",
                )?
                .query_row(params![h.chunk.0 as i64, node.0 as i64], |r| r.get(0))?;
            let drop = match (&chunk, replica) {
                // Unknown chunk, or a chunk this node was never given: garbage.
                (None, _) | (Some(_), None) => true,
                // Allocated and maybe being written right now: a commit may still name it.
                (Some(_), Some((0, _))) => false,
                // Reported bad: deleted once that was decided (it is queued).
                (Some(_), Some((_, true))) => queued,
                (Some(chunk), Some(_)) => h.version.0 < chunk.confirmed,
            };
            if drop {
                c.prepare_cached("DELETE FROM replicas WHERE chunk = ?1 AND node = ?2")?
                    .execute(params![h.chunk.0 as i64, node.0 as i64])?;
                c.prepare_cached("DELETE FROM gc_queue WHERE chunk = ?1 AND node = ?2")?
                    .execute(params![h.chunk.0 as i64, node.0 as i64])?;
                delete.push(h.chunk);
            }
        }
        Ok(delete)
    }
}

impl MetaStore for SqliteStore {
    fn cluster(&self) -> &ClusterRecord {
        &self.cluster
    }

    fn create_session(&self, client: &str, now: Timespec) -> FsResult<SessionId> {
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

    fn list_sessions(&self) -> FsResult<Vec<SessionId>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT id FROM sessions ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok(SessionId(r.get::<_, i64>(0)? as u64)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn end_session(&self, session: SessionId) -> FsResult<Freed> {
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

    fn free_orphans(&self) -> FsResult<Freed> {
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

    fn lookup(&self, parent: InodeId, name: &[u8]) -> FsResult<Attr> {
        self.read(|c| {
            rules::check_name(name)?;
            let p = get_attr(c, parent)?;
            if p.kind != FileKind::Dir {
                return Err(FsError::NotDir.into());
            }
            let ino = match name {
                b"." => parent,
                b".." if parent == InodeId::ROOT => parent,
                b".." => dir_parent(c, parent)?.ok_or(FsError::NotFound)?,
                _ => find_entry(c, parent, name)?.ok_or(FsError::NotFound)?,
            };
            get_attr(c, ino)
        })
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
        self.read(|c| {
            let a = get_attr(c, ino)?;
            if a.kind != FileKind::Symlink {
                return Err(FsError::Invalid("not a symbolic link".into()).into());
            }
            Ok(
                c.prepare_cached("SELECT target FROM symlinks WHERE ino = ?1")?
                    .query_row([ino.0 as i64], |r| r.get(0))
                    .optional()?
                    .ok_or_else(|| FsError::internal(format!("symlink {ino:?} has no target")))?,
            )
        })
    }

    fn readdir(&self, ino: InodeId, after: u64, limit: u32, plus: bool) -> FsResult<DirPage> {
        self.read(|c| {
            let a = get_attr(c, ino)?;
            if a.kind != FileKind::Dir {
                return Err(FsError::NotDir.into());
            }
            // At least one entry per page, so a client looping until `end` always progresses.
            let limit = limit.clamp(1, READDIR_PAGE_MAX) as usize;
            let after = after.min(i64::MAX as u64) as i64;
            let mut stmt = c.prepare_cached(concat!(
                "SELECT d.name, d.cookie, ",
                attr_cols!("i."),
                " FROM dentries d JOIN inodes i ON i.ino = d.ino
                 WHERE d.parent = ?1 AND d.cookie > ?2 ORDER BY d.cookie LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![ino.0 as i64, after, limit as i64 + 1], |r| {
                let attr = attr_at(r, 2)?;
                Ok(DirEntry {
                    name: ByteBuf::from(r.get::<_, Vec<u8>>(0)?),
                    ino: attr.ino,
                    kind: attr.kind,
                    cookie: r.get::<_, i64>(1)? as u64,
                    attr: plus.then_some(attr),
                })
            })?;
            let mut entries = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            let end = entries.len() <= limit;
            entries.truncate(limit);
            Ok(DirPage { entries, end })
        })
    }

    fn inode_count(&self) -> FsResult<u64> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT count(*) FROM inodes")?
                .query_row([], |r| r.get::<_, i64>(0))? as u64)
        })
    }

    fn getxattr(&self, ino: InodeId, name: &[u8]) -> FsResult<Vec<u8>> {
        self.read(|c| {
            rules::check_xattr_name(name)?;
            get_attr(c, ino)?;
            Ok(
                c.prepare_cached("SELECT value FROM xattrs WHERE ino = ?1 AND name = ?2")?
                    .query_row(params![ino.0 as i64, name], |r| r.get(0))
                    .optional()?
                    .ok_or(FsError::NoAttr)?,
            )
        })
    }

    fn setxattr(
        &self,
        ino: InodeId,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
        now: Timespec,
    ) -> FsResult<()> {
        self.write_once(|c| {
            rules::check_xattr_name(name)?;
            rules::check_xattr_value(value)?;
            if flags.create && flags.replace {
                return Err(FsError::Invalid("XATTR_CREATE with XATTR_REPLACE".into()).into());
            }
            get_attr(c, ino)?;
            let exists: bool = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM xattrs WHERE ino = ?1 AND name = ?2)",
                )?
                .query_row(params![ino.0 as i64, name], |r| r.get(0))?;
            if flags.create && exists {
                return Err(FsError::Exists.into());
            }
            if flags.replace && !exists {
                return Err(FsError::NoAttr.into());
            }
            c.prepare_cached(
                "INSERT INTO xattrs (ino, name, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (ino, name) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![ino.0 as i64, name, value])?;
            set_ctime(c, ino, now)
        })
    }

    fn listxattr(&self, ino: InodeId) -> FsResult<Vec<Vec<u8>>> {
        self.read(|c| {
            get_attr(c, ino)?;
            let mut stmt =
                c.prepare_cached("SELECT name FROM xattrs WHERE ino = ?1 ORDER BY name")?;
            let rows = stmt.query_map([ino.0 as i64], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn removexattr(&self, ino: InodeId, name: &[u8], now: Timespec) -> FsResult<()> {
        self.write_once(|c| {
            rules::check_xattr_name(name)?;
            get_attr(c, ino)?;
            let n = c
                .prepare_cached("DELETE FROM xattrs WHERE ino = ?1 AND name = ?2")?
                .execute(params![ino.0 as i64, name])?;
            if n == 0 {
                return Err(FsError::NoAttr.into());
            }
            set_ctime(c, ino, now)
        })
    }

    fn chunk_map(
        &self,
        ino: InodeId,
        first: u64,
        count: u64,
        nodes: &[NodeView],
    ) -> FsResult<Vec<ChunkLoc>> {
        self.read(|c| {
            require_file(c, ino)?;
            let views = view_map(nodes);
            let first = first.min(i64::MAX as u64);
            let end = first
                .saturating_add(count.min(MAX_CHUNKS_PER_REQUEST))
                .min(i64::MAX as u64);
            let chunks: Vec<ChunkRow> = {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {CHUNK_COLS} FROM chunks
                     WHERE ino = ?1 AND idx >= ?2 AND idx < ?3 AND confirmed > 0 ORDER BY idx"
                ))?;
                let rows =
                    stmt.query_map(params![ino.0 as i64, first as i64, end as i64], chunk_row)?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut out = Vec::with_capacity(chunks.len());
            for chunk in chunks {
                // A committed chunk with no current replica is still listed (empty): the
                // reader must fail with EIO, never read the range as a hole of zeros.
                let replicas = current_replicas(c, chunk.id, chunk.confirmed)?;
                out.push(ChunkLoc {
                    index: chunk.idx,
                    chunk: chunk.id,
                    version: Version(chunk.confirmed),
                    length: chunk.length,
                    replicas: ordered_addrs(replicas, &views),
                });
            }
            Ok(out)
        })
    }

    fn prepare_write(
        &self,
        ino: InodeId,
        indexes: &[u64],
        nodes: &[NodeView],
        policy: ReplicationPolicy,
    ) -> FsResult<Vec<WriteGrant>> {
        // The bumped versions are committed before the grants are returned: a replica that
        // accepted a write at version v can never be mistaken for one that did not.
        self.write(|c| self.prepare_write_tx(c, ino, indexes, nodes, policy))
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
        self.write(|c| {
            let n = c
                .prepare_cached("UPDATE replicas SET bad = 1 WHERE chunk = ?1 AND node = ?2")?
                .execute(params![chunk.0 as i64, node.0 as i64])?;
            if n == 0 {
                return Ok(false);
            }
            // Delete the bad copy only while another healthy current copy exists: if this
            // was the last one, its bytes stay on disk (unserved) for repair by an admin.
            let others: bool = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM replicas r JOIN chunks ch ON ch.id = r.chunk
                     WHERE r.chunk = ?1 AND r.bad = 0 AND r.version = ch.confirmed)",
                )?
                .query_row([chunk.0 as i64], |r| r.get(0))?;
            if others {
                c.prepare_cached("INSERT OR IGNORE INTO gc_queue (chunk, node) VALUES (?1, ?2)")?
                    .execute(params![chunk.0 as i64, node.0 as i64])?;
            } else {
                tracing::warn!(chunk = %chunk, node = %node,
                    "last current replica reported bad: kept on disk, not served");
            }
            Ok(true)
        })
    }

    fn register_node(&self, node: Option<NodeId>, addr: &str, now: Timespec) -> FsResult<NodeId> {
        self.write(|c| match node {
            Some(id) => {
                if id.0 == 0 || id.0 > i64::MAX as u64 {
                    return Err(FsError::Invalid(format!("node id {id:?} out of range")).into());
                }
                c.prepare_cached(
                    "INSERT INTO nodes (id, addr, registered_sec) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET addr = excluded.addr",
                )?
                .execute(params![id.0 as i64, addr, now.sec])?;
                Ok(id)
            }
            None => {
                let id: i64 = c
                    .prepare_cached(
                        "INSERT INTO nodes (addr, registered_sec) VALUES (?1, ?2) RETURNING id",
                    )?
                    .query_row(params![addr, now.sec], |r| r.get(0))?;
                Ok(NodeId(id as u64))
            }
        })
    }

    fn list_nodes(&self) -> FsResult<Vec<(NodeId, String)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT id, addr FROM nodes ORDER BY id")?;
            let rows = stmt.query_map([], |r| {
                Ok((NodeId(r.get::<_, i64>(0)? as u64), r.get::<_, String>(1)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn take_gc(&self, node: NodeId, max: usize) -> FsResult<Vec<ChunkId>> {
        let max = max.min(GC_BATCH);
        self.write(|c| {
            let queued: Vec<ChunkId> = {
                let mut stmt = c.prepare_cached(
                    "SELECT chunk FROM gc_queue WHERE node = ?1 ORDER BY chunk LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![node.0 as i64, max as i64], |r| {
                    Ok(ChunkId(r.get::<_, i64>(0)? as u64))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut out = Vec::with_capacity(queued.len());
            for chunk in queued {
                c.prepare_cached("DELETE FROM gc_queue WHERE chunk = ?1 AND node = ?2")?
                    .execute(params![chunk.0 as i64, node.0 as i64])?;
                // Never order the deletion of a replica the chunk table still counts on.
                let live: bool = c
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM replicas
                         WHERE chunk = ?1 AND node = ?2 AND bad = 0)",
                    )?
                    .query_row(params![chunk.0 as i64, node.0 as i64], |r| r.get(0))?;
                if live {
                    continue;
                }
                c.prepare_cached("DELETE FROM replicas WHERE chunk = ?1 AND node = ?2")?
                    .execute(params![chunk.0 as i64, node.0 as i64])?;
                out.push(chunk);
            }
            Ok(out)
        })
    }

    fn reconcile_chunks(&self, node: NodeId, held: &[HeldChunk]) -> FsResult<Vec<ChunkId>> {
        self.write(|c| self.reconcile_tx(c, node, held))
    }

    fn under_goal_chunks(
        &self,
        goal: u32,
        max: usize,
    ) -> FsResult<Vec<crate::plan::repair::ChunkReplicas>> {
        self.read(|c| {
            // A scan of the chunk table: fine for the tables this master holds today; a
            // queue of chunks to look at (filled by reports and commits) replaces it when
            // the table outgrows a scan per second.
            let ids = {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT ch.id, ch.confirmed, ch.length, coalesce(i.goal, ?1) AS g, {COUNTING} AS n
                     FROM chunks ch LEFT JOIN inodes i ON i.ino = ch.ino
                     WHERE ch.confirmed > 0 AND n < g
                     ORDER BY n, ch.id LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![goal as i64, max as i64], goal_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            chunk_replica_rows(c, ids)
        })
    }

    fn under_goal_totals(&self, goal: u32) -> FsResult<(u64, u64)> {
        self.read(|c| {
            let (n, bytes): (i64, i64) = c
                .prepare_cached(&format!(
                    "SELECT count(*), coalesce(sum(length), 0) FROM
                     (SELECT ch.length, coalesce(i.goal, ?1) AS g, {COUNTING} AS n
                      FROM chunks ch LEFT JOIN inodes i ON i.ino = ch.ino
                      WHERE ch.confirmed > 0 AND n < g)"
                ))?
                .query_row([goal as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((n.max(0) as u64, bytes.max(0) as u64))
        })
    }

    fn over_goal_chunks(
        &self,
        goal: u32,
        max: usize,
    ) -> FsResult<Vec<crate::plan::repair::ChunkReplicas>> {
        self.read(|c| {
            let ids = {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT ch.id, ch.confirmed, ch.length, coalesce(i.goal, ?1) AS g, {COUNTING} AS n
                     FROM chunks ch LEFT JOIN inodes i ON i.ino = ch.ino
                     WHERE ch.confirmed > 0 AND n > g
                     ORDER BY ch.id LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![goal as i64, max as i64], goal_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            chunk_replica_rows(c, ids)
        })
    }

    fn trim_replica(&self, chunk: ChunkId, node: NodeId, goal: u32) -> FsResult<bool> {
        self.write(|c| {
            // Re-checked inside the transaction: the plan may be a round old. The file's own
            // goal wins over the cluster's.
            let goal = match chunk_by_id(c, chunk)? {
                Some(row) => inode_goal(c, row.ino)?.unwrap_or(goal),
                None => return Ok(false),
            };
            let others: i64 = c
                .prepare_cached(&format!(
                    "SELECT count(*) FROM replicas r JOIN chunks ch ON ch.id = r.chunk
                     WHERE r.chunk = ?1 AND r.node <> ?2 AND ch.confirmed > 0
                       AND r.version = ch.confirmed AND r.bad = 0
                       AND r.node NOT IN ({DEAD_NODES})"
                ))?
                .query_row(params![chunk.0 as i64, node.0 as i64], |r| r.get(0))?;
            if others < i64::from(goal.max(1)) {
                return Ok(false);
            }
            let n = c
                .prepare_cached("DELETE FROM replicas WHERE chunk = ?1 AND node = ?2")?
                .execute(params![chunk.0 as i64, node.0 as i64])?;
            if n == 0 {
                return Ok(false);
            }
            c.prepare_cached("INSERT OR IGNORE INTO gc_queue (chunk, node) VALUES (?1, ?2)")?
                .execute(params![chunk.0 as i64, node.0 as i64])?;
            Ok(true)
        })
    }

    fn set_node_condition(
        &self,
        node: NodeId,
        condition: NodeCondition,
        now: Timespec,
    ) -> FsResult<()> {
        self.write(|c| {
            match condition_name(condition) {
                None => {
                    c.prepare_cached("DELETE FROM node_conditions WHERE node = ?1")?
                        .execute([node.0 as i64])?;
                }
                Some(name) => {
                    c.prepare_cached(
                        "INSERT INTO node_conditions (node, condition, since_sec)
                         VALUES (?1, ?2, ?3)
                         ON CONFLICT (node) DO UPDATE
                         SET condition = excluded.condition, since_sec = excluded.since_sec",
                    )?
                    .execute(params![node.0 as i64, name, now.sec])?;
                }
            }
            Ok(())
        })
    }

    fn node_conditions(&self) -> FsResult<Vec<(NodeId, NodeCondition, i64)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT node, condition, since_sec FROM node_conditions ORDER BY node",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    NodeId(r.get::<_, i64>(0)? as u64),
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (node, name, since) = row?;
                match parse_condition(&name) {
                    Some(condition) => out.push((node, condition, since)),
                    // Written by a newer master: ignore rather than guess.
                    None => {
                        tracing::warn!(%node, condition = %name, "unknown node condition ignored")
                    }
                }
            }
            Ok(out)
        })
    }

    fn record_copy(&self, chunk: ChunkId, node: NodeId, version: Version) -> FsResult<bool> {
        self.write(|c| {
            if chunk_by_id(c, chunk)?.is_none() {
                // Freed while the copy ran: the new replica is garbage.
                c.prepare_cached("INSERT OR IGNORE INTO gc_queue (chunk, node) VALUES (?1, ?2)")?
                    .execute(params![chunk.0 as i64, node.0 as i64])?;
                return Ok(false);
            }
            c.prepare_cached(
                "INSERT INTO replicas (chunk, node, version, bad) VALUES (?1, ?2, ?3, 0)
                 ON CONFLICT (chunk, node) DO UPDATE
                 SET version = max(version, excluded.version), bad = 0",
            )?
            .execute(params![chunk.0 as i64, node.0 as i64, version.0 as i64])?;
            // The copy replaced whatever deletion was pending for this node's old replica.
            c.prepare_cached("DELETE FROM gc_queue WHERE chunk = ?1 AND node = ?2")?
                .execute(params![chunk.0 as i64, node.0 as i64])?;
            Ok(true)
        })
    }

    fn summary(&self, online: &HashSet<NodeId>, replicas_goal: u32) -> FsResult<SummaryCounts> {
        self.read(|c| {
            let mut s = SummaryCounts::default();
            let (files, dirs, bytes): (i64, i64, i64) = c
                .prepare_cached(
                    "SELECT coalesce(sum(kind = 'file' AND nlink > 0), 0),
                            coalesce(sum(kind = 'dir' AND nlink > 0), 0),
                            coalesce(sum(CASE WHEN kind = 'file' THEN size ELSE 0 END), 0)
                     FROM inodes",
                )?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            s.files = files as u64;
            s.dirs = dirs as u64;
            s.logical_bytes = bytes as u64;
            s.chunks = c
                .prepare_cached("SELECT count(*) FROM chunks WHERE confirmed > 0")?
                .query_row([], |r| r.get::<_, i64>(0))? as u64;
            // Current replicas per committed chunk, counted on online nodes only.
            let mut live: HashMap<i64, u64> = HashMap::new();
            {
                let mut stmt = c.prepare_cached(
                    "SELECT r.chunk, r.node FROM replicas r JOIN chunks ch ON ch.id = r.chunk
                     WHERE ch.confirmed > 0 AND r.version = ch.confirmed AND r.bad = 0",
                )?;
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    let chunk: i64 = row.get(0)?;
                    let node = NodeId(row.get::<_, i64>(1)? as u64);
                    let n = live.entry(chunk).or_insert(0);
                    if online.contains(&node) {
                        *n += 1;
                    }
                }
            }
            let with_live = live.values().filter(|&&n| n > 0).count() as u64;
            s.lost = s.chunks.saturating_sub(with_live);
            // Each chunk against its file's goal (the cluster's for files without one).
            let mut goals: HashMap<i64, u64> = HashMap::new();
            {
                let mut stmt = c.prepare_cached(
                    "SELECT ch.id, coalesce(i.goal, ?1) FROM chunks ch
                     JOIN inodes i ON i.ino = ch.ino WHERE ch.confirmed > 0",
                )?;
                let rows = stmt.query_map([i64::from(replicas_goal)], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(1) as u64))
                })?;
                for row in rows {
                    let (chunk, goal) = row?;
                    goals.insert(chunk, goal);
                }
            }
            let full = live
                .iter()
                .filter(|(chunk, n)| {
                    **n >= goals
                        .get(chunk)
                        .copied()
                        .unwrap_or(u64::from(replicas_goal))
                })
                .count() as u64;
            s.under_replicated = s.chunks.saturating_sub(full);
            let mut stmt = c.prepare_cached("SELECT node, count(*) FROM replicas GROUP BY node")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    NodeId(r.get::<_, i64>(0)? as u64),
                    r.get::<_, i64>(1)? as u64,
                ))
            })?;
            for row in rows {
                let (node, n) = row?;
                s.replicas_per_node.insert(node, n);
            }
            Ok(s)
        })
    }

    fn node_contents(
        &self,
        node: NodeId,
        after: ChunkId,
        limit: u32,
    ) -> FsResult<Vec<NodeReplica>> {
        let limit = limit.min(NODE_CONTENTS_PAGE_MAX);
        // Ids are stored as SQLite integers (i64); a cursor past that range has nothing after it.
        let Ok(after) = i64::try_from(after.0) else {
            return Ok(Vec::new());
        };
        let Ok(node) = i64::try_from(node.0) else {
            return Ok(Vec::new());
        };
        self.read(|c| {
            // replicas_by_node plus the chunk primary key: one page is O(limit).
            let mut stmt = c.prepare_cached(
                "SELECT r.chunk, ch.ino, ch.idx, r.version,
                        ch.confirmed > 0 AND r.version = ch.confirmed AND r.bad = 0
                 FROM replicas r JOIN chunks ch ON ch.id = r.chunk
                 WHERE r.node = ?1 AND r.chunk > ?2
                 ORDER BY r.chunk LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![node, after, limit], |r| {
                Ok(NodeReplica {
                    chunk: ChunkId(r.get::<_, i64>(0)? as u64),
                    ino: InodeId(r.get::<_, i64>(1)? as u64),
                    index: r.get::<_, i64>(2)? as u64,
                    version: Version(r.get::<_, i64>(3)? as u64),
                    current: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn save_locks(&self, ino: InodeId, locks: &[LockRecord]) -> FsResult<()> {
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

    fn load_locks(&self) -> FsResult<Vec<LockRecord>> {
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

    fn goal(&self, ino: InodeId) -> FsResult<Option<u32>> {
        self.read(|c| inode_goal(c, ino))
    }

    fn set_goal(&self, ino: InodeId, goal: u32) -> FsResult<u64> {
        let goal = common::types::check_goal(goal)?;
        self.write_once(|c| {
            get_attr(c, ino)?;
            // The subtree by dentries; UNION (not UNION ALL) visits a hard-linked inode once.
            let n = c
                .prepare_cached(
                    "WITH RECURSIVE sub(ino) AS (
                         SELECT ?1 UNION SELECT d.ino FROM dentries d JOIN sub ON d.parent = sub.ino
                     )
                     UPDATE inodes SET goal = ?2 WHERE ino IN (SELECT ino FROM sub)",
                )?
                .execute(params![ino.0 as i64, goal as i64])?;
            Ok(n as u64)
        })
    }

    fn confirm_replicas(
        &self,
        chunk: ChunkId,
        base: Version,
        version: Version,
        nodes: &[NodeId],
    ) -> FsResult<Vec<NodeId>> {
        if version <= base || nodes.len() > common::types::MAX_GOAL as usize {
            return Err(FsError::Invalid(format!(
                "confirm_replicas of {chunk:?}: v{:x} on base v{:x} for {} nodes",
                version.0,
                base.0,
                nodes.len()
            )));
        }
        self.write(|c| {
            let mut moved = Vec::new();
            for &node in nodes.iter().collect::<HashSet<_>>() {
                // The replica was current at `base` when granted and no commit, report or
                // trim touched it since; the chunk's committed version is this write's.
                let n = c
                    .prepare_cached(
                        "UPDATE replicas SET version = ?4
                         WHERE chunk = ?1 AND node = ?2 AND bad = 0 AND version = ?3
                           AND (SELECT confirmed FROM chunks WHERE id = ?1) = ?4",
                    )?
                    .execute(params![
                        chunk.0 as i64,
                        node.0 as i64,
                        base.0 as i64,
                        version.0 as i64
                    ])?;
                if n == 1 {
                    moved.push(node);
                }
            }
            moved.sort();
            Ok(moved)
        })
    }

    fn path(&self, ino: InodeId) -> FsResult<Option<Vec<u8>>> {
        self.read(|c| {
            let path = path_of(c, ino, &mut HashMap::new())?;
            Ok(path.map(|p| if p.is_empty() { b"/".to_vec() } else { p }))
        })
    }

    fn node_files(
        &self,
        node: NodeId,
        after: ChunkId,
        limit: u32,
    ) -> FsResult<Vec<common::types::NodeFileChunk>> {
        // Two short read transactions: a rename between them only changes which name is
        // shown, and the listing is informative, never used to decide anything.
        let replicas = self.node_contents(node, after, limit)?;
        self.read(|c| {
            let mut paths = HashMap::new();
            replicas
                .into_iter()
                .map(|replica| {
                    Ok(common::types::NodeFileChunk {
                        path: path_of(c, replica.ino, &mut paths)?.map(ByteBuf::from),
                        replica,
                    })
                })
                .collect()
        })
    }

    fn drain_remaining(&self, node: NodeId, goal: u32) -> FsResult<u64> {
        self.read(|c| {
            let n: i64 = c
                .prepare_cached(&format!(
                    "SELECT count(*) FROM
                     (SELECT coalesce(i.goal, ?1) AS g, {COUNTING} AS n
                      FROM chunks ch LEFT JOIN inodes i ON i.ino = ch.ino
                      WHERE ch.confirmed > 0
                        AND EXISTS (SELECT 1 FROM replicas d
                                    WHERE d.chunk = ch.id AND d.node = ?2)
                        AND n < g)"
                ))?
                .query_row(params![goal as i64, node.0 as i64], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
    }

    fn replica_bytes(&self) -> FsResult<HashMap<NodeId, u64>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT r.node, coalesce(sum(ch.length), 0) FROM replicas r
                 JOIN chunks ch ON ch.id = r.chunk
                 WHERE ch.confirmed > 0 AND r.version = ch.confirmed AND r.bad = 0
                 GROUP BY r.node",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    NodeId(r.get::<_, i64>(0)? as u64),
                    r.get::<_, i64>(1)?.max(0) as u64,
                ))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn movable_chunks(
        &self,
        from: NodeId,
        to: NodeId,
        goal: u32,
        max: usize,
    ) -> FsResult<Vec<crate::plan::repair::ChunkReplicas>> {
        self.read(|c| {
            let ids = {
                let mut stmt = c.prepare_cached(
                    "SELECT ch.id, ch.confirmed, ch.length, coalesce(i.goal, ?1) AS g
                     FROM replicas r JOIN chunks ch ON ch.id = r.chunk
                     LEFT JOIN inodes i ON i.ino = ch.ino
                     WHERE r.node = ?2 AND ch.confirmed > 0 AND r.version = ch.confirmed
                       AND r.bad = 0
                       AND NOT EXISTS (SELECT 1 FROM replicas t
                                       WHERE t.chunk = ch.id AND t.node = ?3)
                     ORDER BY ch.id LIMIT ?4",
                )?;
                let rows = stmt.query_map(
                    params![goal as i64, from.0 as i64, to.0 as i64, max as i64],
                    goal_row,
                )?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            chunk_replica_rows(c, ids)
        })
    }

    fn create_open(
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

/// Longest chain of directories followed up from a file when building its path: far deeper
/// than any real tree (PATH_MAX allows about 2048 levels), and a bound so that a corrupt
/// cycle in `dentries` can never loop forever.
const MAX_PATH_DEPTH: usize = 4096;

/// An absolute path of `ino` (`/a/b`), built by walking `dentries` up to the root; one
/// name per inode, the first in (parent, name) order. `None` when some inode on the way
/// has no name (unlinked) or the walk passes [`MAX_PATH_DEPTH`]. `cache` keeps the answer
/// of every inode on the way, so the files of one directory cost one walk.
fn path_of(
    c: &Connection,
    ino: InodeId,
    cache: &mut HashMap<InodeId, Option<Vec<u8>>>,
) -> R<Option<Vec<u8>>> {
    let mut stmt = c.prepare_cached(
        "SELECT parent, name FROM dentries WHERE ino = ?1 ORDER BY parent, name LIMIT 1",
    )?;
    // From `ino` upward: (inode, its name in its parent).
    let mut chain: Vec<(InodeId, Vec<u8>)> = Vec::new();
    let mut cur = ino;
    // The path of `cur` where the walk stopped; "" stands for the root.
    let base = loop {
        if cur == InodeId::ROOT {
            break Some(Vec::new());
        }
        if let Some(known) = cache.get(&cur) {
            break known.clone();
        }
        let Ok(key) = i64::try_from(cur.0) else {
            break None;
        };
        if chain.len() >= MAX_PATH_DEPTH {
            break None;
        }
        let row: Option<(i64, Vec<u8>)> = stmt
            .query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            Some((parent, name)) => {
                chain.push((cur, name));
                cur = InodeId(parent as u64);
            }
            None => break None,
        }
    };
    let mut path = base;
    for (ino, name) in chain.into_iter().rev() {
        path = path.map(|mut p| {
            p.push(b'/');
            p.extend_from_slice(&name);
            p
        });
        cache.insert(ino, path.clone());
    }
    Ok(path.map(|p| if p.is_empty() { b"/".to_vec() } else { p }))
}

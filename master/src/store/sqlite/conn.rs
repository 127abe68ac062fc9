//! Connection and transaction machinery of the SQLite engine: creating and opening the
//! database, the one writing connection and its immediate transactions, the at-most-once
//! answer record (`once`), relaxed commits (`write_once_relaxed`) and the pool of
//! read-only connections.
//!
//! It must never hold a filesystem rule: the operations in the sibling modules say what a
//! transaction does, this module only how it runs and commits.

use super::rows::attr_cols;
use super::{Error, R, SqliteStore};
use crate::store::{ClusterRecord, schema};
use anyhow::Context as _;
use common::block::BLOCK_SIZE;
use common::types::Timespec;
use common::{ClusterId, FsError, FsResult};
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a statement waits for a lock held by another connection (an admin's sqlite3
/// shell, a backup) before failing: long enough to ride out a checkpoint.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle read connections kept open: one per concurrently running read is plenty (the
/// master runs store calls on its blocking threads); more are opened on demand and closed
/// after use.
pub(super) const READERS_KEPT: usize = 8;

/// Recorded answers kept per session: a client retries only its last few requests (it has
/// at most a few hundred in flight), so older answers are dropped as new ones arrive.
pub(super) const OP_RESULTS_KEPT: i64 = 4096;

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
    pub(super) fn write<T>(&self, f: impl FnOnce(&Connection) -> R<T>) -> FsResult<T> {
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

    /// [`Self::write`], at most once per operation id (see [`crate::store::with_op`]): the answer
    /// is recorded in the same transaction as the mutation, so a retried request — the reply
    /// was lost to a crash or a broken connection — gets the first answer instead of running
    /// again (a second create would say EEXIST, a second release could free an open file).
    pub(super) fn write_once<T: Serialize + DeserializeOwned>(
        &self,
        f: impl FnOnce(&Connection) -> R<T>,
    ) -> FsResult<T> {
        let Some(op) = crate::store::current_op() else {
            return self.write(f);
        };
        self.write(|c| Self::once(c, op, f))
    }

    /// [`Self::write_once`] committed without a disk flush of its own: durable with the next
    /// durable commit, or a checkpoint (see the module docs for the one caller and why that
    /// is safe). Without `durable_commits` it is the same as [`Self::write_once`].
    pub(super) fn write_once_relaxed<T: Serialize + DeserializeOwned>(
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
            let out = match crate::store::current_op() {
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
    pub(super) fn restore_full(&self, conn: &Connection) -> FsResult<()> {
        if !self.relaxed.load(Ordering::SeqCst) {
            return Ok(());
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| FsError::Io(format!("restore synchronous=FULL: {e}")))?;
        self.relaxed.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// The body of an at-most-once write, inside the caller's transaction.
    pub(super) fn once<T: Serialize + DeserializeOwned>(
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
    pub(super) fn read<T>(&self, f: impl FnOnce(&Connection) -> R<T>) -> FsResult<T> {
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
    pub(super) fn open_reader(&self) -> FsResult<Connection> {
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

//! The metadata schema and its migrations.
//!
//! The schema version lives in `PRAGMA user_version`. `MIGRATIONS[i]` takes a database from
//! version `i` to `i + 1`; each runs in its own transaction together with the version bump,
//! so a crash mid-migration leaves the previous version intact. Migrations are append-only:
//! never edit one that has shipped, add the next instead. A database newer than this binary
//! is refused (an old master must not write rows whose meaning it does not know).

use rusqlite::{Connection, TransactionBehavior};

/// Written into the `cluster` table at init: a valid SQLite file without it is some other
/// program's database and is refused rather than "migrated".
pub const MAGIC: &str = "MosaicFS metadata";

/// Version 1: the whole first schema (see docs/ARCHITECTURE.md, "Master schema").
const V1: &str = r#"
CREATE TABLE cluster (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    magic       TEXT    NOT NULL,
    cluster_id  BLOB    NOT NULL,
    chunk_size  INTEGER NOT NULL,
    key_check   BLOB    NOT NULL,
    created_sec INTEGER NOT NULL
);

-- Monotonic counters that must never go back, even when rows are deleted.
CREATE TABLE counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES ('dentry_cookie', 0);

-- AUTOINCREMENT: inode numbers are never reused, so a stale kernel handle can never
-- reach a different file.
CREATE TABLE inodes (
    ino        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL,
    perm       INTEGER NOT NULL,
    uid        INTEGER NOT NULL,
    gid        INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    nlink      INTEGER NOT NULL,
    atime_sec  INTEGER NOT NULL,
    atime_nsec INTEGER NOT NULL,
    mtime_sec  INTEGER NOT NULL,
    mtime_nsec INTEGER NOT NULL,
    ctime_sec  INTEGER NOT NULL,
    ctime_nsec INTEGER NOT NULL,
    rdev       INTEGER NOT NULL
);
-- Unlinked inodes still held open: found by the orphan sweep without a table scan.
CREATE INDEX inodes_orphans ON inodes (ino) WHERE nlink = 0;

CREATE TABLE dentries (
    parent INTEGER NOT NULL REFERENCES inodes (ino),
    name   BLOB    NOT NULL,
    cookie INTEGER NOT NULL,
    ino    INTEGER NOT NULL REFERENCES inodes (ino),
    PRIMARY KEY (parent, name)
) WITHOUT ROWID;
-- readdir pages resume after a cookie: O(page) per call.
CREATE UNIQUE INDEX dentries_by_cookie ON dentries (parent, cookie);
-- A directory's own entry (rename loop checks walk up the tree, `..` lookups).
CREATE INDEX dentries_by_ino ON dentries (ino);

CREATE TABLE symlinks (
    ino    INTEGER PRIMARY KEY REFERENCES inodes (ino),
    target BLOB    NOT NULL
);

CREATE TABLE xattrs (
    ino   INTEGER NOT NULL REFERENCES inodes (ino),
    name  BLOB    NOT NULL,
    value BLOB    NOT NULL,
    PRIMARY KEY (ino, name)
) WITHOUT ROWID;

-- version: the newest granted version. confirmed: the newest version a commit recorded
-- (0 = never committed, a hole). Kept explicitly rather than derived from replica rows so
-- that dropping a bad replica's row can never make an older version look current.
-- AUTOINCREMENT: a chunk id is never reused, so a queued deletion of an old chunk can never
-- hit a new one.
CREATE TABLE chunks (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ino       INTEGER NOT NULL REFERENCES inodes (ino),
    idx       INTEGER NOT NULL,
    version   INTEGER NOT NULL,
    confirmed INTEGER NOT NULL,
    length    INTEGER NOT NULL,
    UNIQUE (ino, idx)
);

CREATE TABLE nodes (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    addr           TEXT    NOT NULL,
    registered_sec INTEGER NOT NULL
);

-- version: the newest version this replica confirmed through a commit (0 = none yet).
-- bad: reported failing (checksum, authentication): never listed for reads or writes.
CREATE TABLE replicas (
    chunk   INTEGER NOT NULL REFERENCES chunks (id),
    node    INTEGER NOT NULL REFERENCES nodes (id),
    version INTEGER NOT NULL,
    bad     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (chunk, node)
) WITHOUT ROWID;
CREATE INDEX replicas_by_node ON replicas (node);

CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    client      TEXT    NOT NULL,
    created_sec INTEGER NOT NULL
);

CREATE TABLE open_files (
    session INTEGER NOT NULL REFERENCES sessions (id),
    ino     INTEGER NOT NULL REFERENCES inodes (ino),
    count   INTEGER NOT NULL,
    PRIMARY KEY (session, ino)
) WITHOUT ROWID;
CREATE INDEX open_files_by_ino ON open_files (ino);

-- Replicas to delete, handed to their node with heartbeat replies. No foreign key: the
-- chunk row is usually gone already.
CREATE TABLE gc_queue (
    chunk INTEGER NOT NULL,
    node  INTEGER NOT NULL,
    PRIMARY KEY (node, chunk)
) WITHOUT ROWID;
"#;

/// Ordered migrations; the schema version is the number applied.
/// V2: answers of mutating requests, by operation id, so a retried request is applied at
/// most once (see `SqliteStore::write_once`).
const V2: &str = r#"
CREATE TABLE op_results (
    session INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    result  BLOB    NOT NULL,
    PRIMARY KEY (session, seq)
) WITHOUT ROWID;
"#;

/// V3: advisory locks, so that they survive a master restart. u64 fields (owner, range) are
/// stored as their i64 bit pattern (`u64::MAX`, "to the end of any file", is -1).
const V3: &str = r#"
CREATE TABLE locks (
    session INTEGER NOT NULL,
    ino     INTEGER NOT NULL,
    owner   INTEGER NOT NULL,
    start   INTEGER NOT NULL,
    end_    INTEGER NOT NULL,
    write   INTEGER NOT NULL,
    pid     INTEGER NOT NULL
);
CREATE INDEX locks_by_ino ON locks (ino);
CREATE INDEX locks_by_session ON locks (session);
"#;

/// V4: a replication goal per inode (docs/PROTOCOL.md, "Replication goal"). NULL means the
/// cluster's N, so existing inodes keep following the cluster setting; new inodes copy
/// their parent's value at create.
const V4: &str = r#"
ALTER TABLE inodes ADD COLUMN goal INTEGER;
"#;

/// V5: what the master holds about a node beyond liveness (`NodeCondition`): declared dead
/// by the sentinels, or stopped for maintenance. No row: up. A dead node's replica rows are
/// kept (it may come back with current copies) but do not count toward any goal.
const V5: &str = r#"
CREATE TABLE node_conditions (
    node      INTEGER PRIMARY KEY REFERENCES nodes (id),
    condition TEXT    NOT NULL,
    since_sec INTEGER NOT NULL
);
"#;

/// V6: nodes an admin forgot (`mosaic-sentinel forget`). Their id is never reused (AUTOINCREMENT)
/// and a process that still holds one is refused at registration rather than silently
/// recreating the node.
const V6: &str = r#"
CREATE TABLE forgotten_nodes (
    id            INTEGER PRIMARY KEY,
    forgotten_sec INTEGER NOT NULL
);
"#;

pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6];

/// The schema version this binary writes.
pub fn latest_version() -> u32 {
    MIGRATIONS.len() as u32
}

pub fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
        .map(|v| v.clamp(0, u32::MAX as i64) as u32)
}

/// Applies every migration past the database's version, each in its own transaction.
/// The caller has already refused databases newer than [`latest_version`].
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<u32> {
    let from = user_version(conn)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        // user_version is part of the database header and changes inside the transaction.
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(latest_version())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_migrates_to_latest_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().expect("open");
        assert_eq!(user_version(&conn).expect("version"), 0);
        assert_eq!(migrate(&mut conn).expect("migrate"), latest_version());
        assert_eq!(user_version(&conn).expect("version"), latest_version());
        // A second run applies nothing and does not fail on existing tables.
        assert_eq!(migrate(&mut conn).expect("migrate again"), latest_version());
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN \
                 ('cluster','inodes','dentries','symlinks','xattrs','chunks','replicas',\
                  'nodes','sessions','open_files','gc_queue','counters','locks')",
                [],
                |r| r.get(0),
            )
            .expect("count tables");
        assert_eq!(tables, 13);
    }
}

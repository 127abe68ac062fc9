//! Row codecs: how attributes, times, chunk rows and node conditions are read from and
//! written to rows, and the single-row lookups by key built on them.
//!
//! It must never start a transaction or decide anything: callers pass the connection of
//! their transaction.

use super::{Error, R};
use common::types::{Attr, FileKind, NodeCondition, Timespec};
use common::{ChunkId, FsError, InodeId};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension as _, Row, params};

/// The 14 attribute columns of `inodes`, each prefixed with `$p` (a table alias), in
/// the order [`attr_at`] reads them.
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
pub(super) use attr_cols;

pub(super) fn conversion(at: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(at, Type::Text, what.into())
}

pub(super) fn ts(row: &Row, at: usize) -> rusqlite::Result<Timespec> {
    Ok(Timespec {
        sec: row.get(at)?,
        nsec: row.get::<_, i64>(at + 1)?.clamp(0, 999_999_999) as u32,
    })
}

pub(super) fn attr_at(row: &Row, at: usize) -> rusqlite::Result<Attr> {
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

pub(super) fn find_attr(c: &Connection, ino: InodeId) -> R<Option<Attr>> {
    Ok(c.prepare_cached(concat!(
        "SELECT ",
        attr_cols!(""),
        " FROM inodes WHERE ino = ?1"
    ))?
    .query_row([ino.0 as i64], |r| attr_at(r, 0))
    .optional()?)
}

pub(super) fn get_attr(c: &Connection, ino: InodeId) -> R<Attr> {
    find_attr(c, ino)?.ok_or(Error::Fs(FsError::NotFound))
}

pub(super) fn write_attr(c: &Connection, a: &Attr) -> R<()> {
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

pub(super) struct ChunkRow {
    pub(super) id: ChunkId,
    pub(super) ino: InodeId,
    pub(super) idx: u64,
    pub(super) version: u64,
    pub(super) confirmed: u64,
    pub(super) length: u64,
}

pub(super) fn chunk_row(r: &Row) -> rusqlite::Result<ChunkRow> {
    Ok(ChunkRow {
        id: ChunkId(r.get::<_, i64>(0)? as u64),
        ino: InodeId(r.get::<_, i64>(1)? as u64),
        idx: r.get::<_, i64>(2)? as u64,
        version: r.get::<_, i64>(3)? as u64,
        confirmed: r.get::<_, i64>(4)? as u64,
        length: r.get::<_, i64>(5)? as u64,
    })
}

pub(super) const CHUNK_COLS: &str = "id, ino, idx, version, confirmed, length";

pub(super) fn chunk_by_id(c: &Connection, id: ChunkId) -> R<Option<ChunkRow>> {
    Ok(
        c.prepare_cached(&format!("SELECT {CHUNK_COLS} FROM chunks WHERE id = ?1"))?
            .query_row([id.0 as i64], chunk_row)
            .optional()?,
    )
}

pub(super) fn condition_name(condition: NodeCondition) -> Option<&'static str> {
    match condition {
        NodeCondition::Up => None,
        NodeCondition::Dead => Some("dead"),
        NodeCondition::Maintenance => Some("maintenance"),
        NodeCondition::Draining => Some("draining"),
        NodeCondition::Decommissioned => Some("decommissioned"),
    }
}

pub(super) fn parse_condition(name: &str) -> Option<NodeCondition> {
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
pub(super) fn goal_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ChunkId, u64, u64, u32)> {
    Ok((
        ChunkId(r.get::<_, i64>(0)? as u64),
        r.get::<_, i64>(1)? as u64,
        r.get::<_, i64>(2)?.max(0) as u64,
        r.get::<_, i64>(3)?
            .clamp(1, i64::from(common::types::MAX_GOAL)) as u32,
    ))
}

/// The replication goal stored on `ino` (`None`: follow the cluster's N).
pub(super) fn inode_goal(c: &Connection, ino: InodeId) -> R<Option<u32>> {
    let goal: Option<i64> = c
        .prepare_cached("SELECT goal FROM inodes WHERE ino = ?1")?
        .query_row([ino.0 as i64], |r| r.get(0))
        .optional()?
        .ok_or(Error::Fs(FsError::NotFound))?;
    Ok(goal.map(|g| g.clamp(1, i64::from(common::types::MAX_GOAL)) as u32))
}

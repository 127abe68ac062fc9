//! Namespace transactions: directory entries, link counts, create, unlink, rmdir, rename,
//! link, setattr (with truncation of a file's chunks), readdir, xattrs, replication goals
//! and paths. Rules that need no SQL live in `store::rules`.
//!
//! It must never add or change replicas or nodes: dropping a file's chunks only removes
//! their replica rows and queues each replica for deletion on its node (the GC queue the
//! node queries hand out).

use super::rows::{attr_at, attr_cols, find_attr, get_attr, write_attr};
use super::{R, SqliteStore};
use crate::store::Freed;
use crate::store::rules::{self, LINK_MAX};
use common::types::{
    Attr, DirEntry, DirPage, FileKind, MAX_FILE_SIZE, NewNode, READDIR_PAGE_MAX, RenameFlags,
    SetAttr, TimeSet, Timespec, XattrFlags,
};
use common::{FsError, FsResult, InodeId};
use rusqlite::{Connection, OptionalExtension as _, params};
use serde_bytes::ByteBuf;
use std::collections::HashMap;

/// Whether any session holds `ino` open (an unlinked inode's data is kept until none does).
/// Here rather than with the sessions: the namespace asks it when it frees an inode, and the
/// sessions call back into the namespace (`free_if_unused`) when a descriptor closes.
pub(super) fn is_open(c: &Connection, ino: InodeId) -> R<bool> {
    Ok(
        c.prepare_cached("SELECT EXISTS (SELECT 1 FROM open_files WHERE ino = ?1)")?
            .query_row([ino.0 as i64], |r| r.get(0))?,
    )
}

/// Deepest directory chain a rename loop check walks before declaring the tree corrupt.
pub(super) const MAX_TREE_DEPTH: usize = 1 << 20;

/// A directory that exists and is not unlinked; creating in a removed directory is ENOENT.
pub(super) fn require_dir(c: &Connection, ino: InodeId) -> R<Attr> {
    let a = get_attr(c, ino)?;
    if a.kind != FileKind::Dir {
        return Err(FsError::NotDir.into());
    }
    if a.nlink == 0 {
        return Err(FsError::NotFound.into());
    }
    Ok(a)
}

pub(super) fn add_nlink(c: &Connection, ino: InodeId, delta: i64) -> R<()> {
    c.prepare_cached("UPDATE inodes SET nlink = max(nlink + ?2, 0) WHERE ino = ?1")?
        .execute(params![ino.0 as i64, delta])?;
    Ok(())
}

pub(super) fn set_ctime(c: &Connection, ino: InodeId, now: Timespec) -> R<()> {
    c.prepare_cached("UPDATE inodes SET ctime_sec = ?2, ctime_nsec = ?3 WHERE ino = ?1")?
        .execute(params![ino.0 as i64, now.sec, now.nsec])?;
    Ok(())
}

/// A directory's content changed: mtime and ctime.
pub(super) fn touch_dir(c: &Connection, ino: InodeId, now: Timespec) -> R<()> {
    c.prepare_cached(
        "UPDATE inodes SET mtime_sec = ?2, mtime_nsec = ?3, ctime_sec = ?2, ctime_nsec = ?3
         WHERE ino = ?1",
    )?
    .execute(params![ino.0 as i64, now.sec, now.nsec])?;
    Ok(())
}

pub(super) fn find_entry(c: &Connection, parent: InodeId, name: &[u8]) -> R<Option<InodeId>> {
    Ok(
        c.prepare_cached("SELECT ino FROM dentries WHERE parent = ?1 AND name = ?2")?
            .query_row(params![parent.0 as i64, name], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|i| InodeId(i as u64)),
    )
}

pub(super) fn next_cookie(c: &Connection) -> R<i64> {
    Ok(c.prepare_cached(
        "UPDATE counters SET value = value + 1 WHERE name = 'dentry_cookie' RETURNING value",
    )?
    .query_row([], |r| r.get(0))?)
}

/// Adds an entry at a fresh cookie: it sorts after every entry that existed before.
pub(super) fn insert_entry(c: &Connection, parent: InodeId, name: &[u8], ino: InodeId) -> R<()> {
    let cookie = next_cookie(c)?;
    c.prepare_cached("INSERT INTO dentries (parent, name, cookie, ino) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![parent.0 as i64, name, cookie, ino.0 as i64])?;
    Ok(())
}

pub(super) fn delete_entry(c: &Connection, parent: InodeId, name: &[u8]) -> R<()> {
    c.prepare_cached("DELETE FROM dentries WHERE parent = ?1 AND name = ?2")?
        .execute(params![parent.0 as i64, name])?;
    Ok(())
}

pub(super) fn has_children(c: &Connection, dir: InodeId) -> R<bool> {
    Ok(
        c.prepare_cached("SELECT EXISTS (SELECT 1 FROM dentries WHERE parent = ?1)")?
            .query_row([dir.0 as i64], |r| r.get(0))?,
    )
}

/// The directory holding `dir`'s entry (directories have exactly one).
pub(super) fn dir_parent(c: &Connection, dir: InodeId) -> R<Option<InodeId>> {
    Ok(
        c.prepare_cached("SELECT parent FROM dentries WHERE ino = ?1 LIMIT 1")?
            .query_row([dir.0 as i64], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|i| InodeId(i as u64)),
    )
}

/// True when `dir` is `ancestor` or lies below it.
pub(super) fn is_within(c: &Connection, dir: InodeId, ancestor: InodeId) -> R<bool> {
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

/// Queues every replica of `ino`'s chunks with index >= `first` for deletion and drops the
/// chunk rows. Returns the number of replicas queued.
pub(super) fn drop_chunks(c: &Connection, ino: InodeId, first: u64) -> R<u64> {
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
pub(super) fn free_inode(c: &Connection, ino: InodeId) -> R<Freed> {
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
pub(super) fn free_if_unused(c: &Connection, ino: InodeId) -> R<Freed> {
    match find_attr(c, ino)? {
        Some(a) if a.nlink == 0 && a.ino != InodeId::ROOT && !is_open(c, ino)? => {
            free_inode(c, ino)
        }
        _ => Ok(Freed::default()),
    }
}

pub(super) fn resolve_time(t: TimeSet, now: Timespec) -> R<Timespec> {
    match t {
        TimeSet::Now => Ok(now),
        TimeSet::At(ts) if ts.nsec < 1_000_000_000 => Ok(ts),
        TimeSet::At(ts) => {
            Err(FsError::Invalid(format!("nanoseconds {} out of range", ts.nsec)).into())
        }
    }
}

/// Longest chain of directories followed up from a file when building its path: far deeper
/// than any real tree (PATH_MAX allows about 2048 levels), and a bound so that a corrupt
/// cycle in `dentries` can never loop forever.
pub(super) const MAX_PATH_DEPTH: usize = 4096;

/// An absolute path of `ino` (`/a/b`), built by walking `dentries` up to the root; one
/// name per inode, the first in (parent, name) order. `None` when some inode on the way
/// has no name (unlinked) or the walk passes [`MAX_PATH_DEPTH`]. `cache` keeps the answer
/// of every inode on the way, so the files of one directory cost one walk.
pub(super) fn path_of(
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

impl SqliteStore {
    pub(super) fn lookup(&self, parent: InodeId, name: &[u8]) -> FsResult<Attr> {
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

    pub(super) fn readlink(&self, ino: InodeId) -> FsResult<Vec<u8>> {
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

    pub(super) fn readdir(
        &self,
        ino: InodeId,
        after: u64,
        limit: u32,
        plus: bool,
    ) -> FsResult<DirPage> {
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

    pub(super) fn inode_count(&self) -> FsResult<u64> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT count(*) FROM inodes")?
                .query_row([], |r| r.get::<_, i64>(0))? as u64)
        })
    }

    pub(super) fn getxattr(&self, ino: InodeId, name: &[u8]) -> FsResult<Vec<u8>> {
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

    pub(super) fn setxattr(
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

    pub(super) fn listxattr(&self, ino: InodeId) -> FsResult<Vec<Vec<u8>>> {
        self.read(|c| {
            get_attr(c, ino)?;
            let mut stmt =
                c.prepare_cached("SELECT name FROM xattrs WHERE ino = ?1 ORDER BY name")?;
            let rows = stmt.query_map([ino.0 as i64], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    pub(super) fn removexattr(&self, ino: InodeId, name: &[u8], now: Timespec) -> FsResult<()> {
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

    pub(super) fn set_goal(&self, ino: InodeId, goal: u32) -> FsResult<u64> {
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

    pub(super) fn path(&self, ino: InodeId) -> FsResult<Option<Vec<u8>>> {
        self.read(|c| {
            let path = path_of(c, ino, &mut HashMap::new())?;
            Ok(path.map(|p| if p.is_empty() { b"/".to_vec() } else { p }))
        })
    }

    pub(super) fn create_tx(
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

    pub(super) fn unlink_tx(
        &self,
        c: &Connection,
        parent: InodeId,
        name: &[u8],
        now: Timespec,
    ) -> R<()> {
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

    pub(super) fn rmdir_tx(
        &self,
        c: &Connection,
        parent: InodeId,
        name: &[u8],
        now: Timespec,
    ) -> R<()> {
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
    pub(super) fn rename_tx(
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

    pub(super) fn link_tx(
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

    pub(super) fn setattr_tx(
        &self,
        c: &Connection,
        ino: InodeId,
        set: &SetAttr,
        now: Timespec,
    ) -> R<Attr> {
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
    pub(super) fn trim_chunks(&self, c: &Connection, ino: InodeId, size: u64) -> R<()> {
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
}

//! What the kernel's directory, statfs and close requests need beyond a master call, kept
//! here (not in the FUSE adapter) so that it is tested without a kernel: the "." and ".."
//! readdir offsets around the master's cookies, the statfs figures, and which locks a close
//! releases.
//!
//! It must never hold state of its own: each answer is a function of the master's answer and
//! the request.

use super::ClientCore;
use common::types::{Attr, FileKind, StatFs};
use common::{FsResult, InodeId};

/// Readdir offsets 1 and 2 are "." and ".."; a stored entry with master cookie c is at
/// offset c + 2 (offset 0 asks for the start).
pub const DOT_ENTRIES: u64 = 2;

/// One directory entry at its kernel offset (the offset to resume after it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub ino: InodeId,
    pub offset: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
    /// With `plus`: the entry's attributes.
    pub attr: Option<Attr>,
}

/// The "." and ".." entries a listing from kernel `offset` starts with; with `plus`, both
/// carry the directory's attributes (the kernel does not link them).
pub fn dot_entries(dir: InodeId, offset: u64, dir_attr: Option<&Attr>) -> Vec<Listed> {
    [&b"."[..], &b".."[..]]
        .into_iter()
        .zip(1..=DOT_ENTRIES)
        .filter(|(_, at)| offset < *at)
        .map(|(name, at)| Listed {
            ino: dir,
            offset: at,
            kind: FileKind::Dir,
            name: name.to_vec(),
            attr: dir_attr.cloned(),
        })
        .collect()
}

/// The master cookie to list after, for a kernel readdir `offset`.
pub fn master_cookie(offset: u64) -> u64 {
    offset.saturating_sub(DOT_ENTRIES)
}

/// statfs as the kernel wants it: counts of `bsize` blocks and of inodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// Free inodes reported: inodes are rows in the master's database, effectively unlimited.
const FREE_INODES: u64 = u32::MAX as u64;

impl FsStats {
    /// The kernel's figures for the master's byte counts. A zero block size is read as 1
    /// so that a bad answer cannot divide by zero; every byte free is available to users
    /// (no reserved blocks).
    pub fn from_master(s: &StatFs) -> FsStats {
        let bsize = u64::from(s.block_size.max(1));
        let (blocks, free) = (s.total_bytes / bsize, s.free_bytes / bsize);
        FsStats {
            blocks,
            bfree: free,
            bavail: free,
            files: s.files.saturating_add(FREE_INODES),
            ffree: FREE_INODES,
            bsize: s.block_size,
            namelen: s.name_max,
            frsize: s.block_size,
        }
    }
}

impl ClientCore {
    /// A page of directory `dir` from kernel offset `offset`: "." and ".." first, then the
    /// master's entries at their cookies shifted past them. With `plus`, entries carry their
    /// attributes (an entry the master sent without them is left out).
    pub async fn list_dir(&self, dir: InodeId, offset: u64, plus: bool) -> FsResult<Vec<Listed>> {
        let dir_attr = if plus && offset < DOT_ENTRIES {
            Some(self.getattr(dir).await?)
        } else {
            None
        };
        let mut out = dot_entries(dir, offset, dir_attr.as_ref());
        let page = self.readdir(dir, master_cookie(offset), plus).await?;
        for entry in page.entries {
            if plus && entry.attr.is_none() {
                continue;
            }
            out.push(Listed {
                ino: entry.ino,
                offset: entry.cookie + DOT_ENTRIES,
                kind: entry.kind,
                name: entry.name.into_vec(),
                attr: entry.attr,
            });
        }
        Ok(out)
    }

    /// statfs in the kernel's terms.
    pub async fn fs_stats(&self) -> FsResult<FsStats> {
        Ok(FsStats::from_master(&self.statfs().await?))
    }

    /// close(2) of one descriptor (FUSE flush): POSIX drops the process's fcntl locks on
    /// the file (`lock_owner`), whichever descriptor they were taken through; buffered data
    /// is pushed and committed so that another mount that opens the file sees it.
    pub async fn close(&self, fh: u64, ino: InodeId, lock_owner: u64) -> FsResult<()> {
        let unlocked = self.unlock_owner(ino, lock_owner).await;
        self.flush(fh).await.and(unlocked)
    }

    /// The last close of an open file description (FUSE release): drops its flock (the
    /// kernel names the owner when there may be one) and the handle.
    pub async fn release_handle(
        &self,
        fh: u64,
        ino: InodeId,
        lock_owner: Option<u64>,
    ) -> FsResult<()> {
        let unlocked = match lock_owner {
            Some(owner) => self.unlock_owner(ino, owner).await,
            None => Ok(()),
        };
        self.release(fh).await.and(unlocked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_entries_table() {
        let dir = InodeId(9);
        let names = |offset| -> Vec<(Vec<u8>, u64)> {
            dot_entries(dir, offset, None)
                .into_iter()
                .map(|l| (l.name, l.offset))
                .collect()
        };
        assert_eq!(names(0), vec![(b".".to_vec(), 1), (b"..".to_vec(), 2)]);
        assert_eq!(names(1), vec![(b"..".to_vec(), 2)]);
        assert_eq!(names(2), vec![]);
        assert_eq!(names(40), vec![]);
        // (kernel offset, master cookie to list after)
        for (offset, cookie) in [(0, 0), (1, 0), (2, 0), (3, 1), (10, 8)] {
            assert_eq!(master_cookie(offset), cookie, "offset {offset}");
        }
    }

    #[test]
    fn statfs_table() {
        let s = |total_bytes, free_bytes, files, block_size| StatFs {
            total_bytes,
            free_bytes,
            files,
            name_max: 255,
            block_size,
        };
        let ffree = u64::from(u32::MAX);
        // (master's answer, blocks, free, files)
        let cases = [
            (s(1 << 20, 1 << 19, 3, 4096), 256, 128, 3 + ffree),
            // Partial blocks are not counted.
            (s(10_000, 5_000, 0, 4096), 2, 1, ffree),
            // A zero block size is not a division by zero.
            (s(100, 50, 1, 0), 100, 50, 1 + ffree),
            (s(0, 0, u64::MAX, 4096), 0, 0, u64::MAX),
        ];
        for (answer, blocks, free, files) in cases {
            let got = FsStats::from_master(&answer);
            assert_eq!(
                (got.blocks, got.bfree, got.bavail, got.files, got.ffree),
                (blocks, free, free, files, ffree),
                "{answer:?}"
            );
            assert_eq!(
                (got.bsize, got.frsize, got.namelen),
                (answer.block_size, answer.block_size, 255)
            );
        }
    }
}

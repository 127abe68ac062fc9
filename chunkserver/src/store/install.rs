//! Installation of copied chunks: a whole replica written into a temp file and renamed over
//! the chunk's file only once it is complete and durable.
//!
//! It must never leave a partial replica where a reader could find it: until
//! [`Installer::finish`], the copy lives only in a `.tmp` file the start-up scan removes.

use super::file_io::{ChunkState, OpenChunk, Slots};
use super::format::{COPIES, ENTRY_LEN, Entry, Header, plan_runs};
use super::{Inner, allocated, fsync_dir, io_error, out_of_range, sub_saturating};
use bytes::Bytes;
use common::block::{MAX_SEALED_BLOCK, SEAL_OVERHEAD};
use common::{ChunkId, FsError, FsResult, Version};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A replica being copied in: blocks go to a temp file; [`Installer::finish`] fsyncs it
/// and renames it over the chunk's file, so a failed or interrupted copy never leaves a
/// partial replica that could look current. Dropped unfinished, it removes the temp file.
pub struct Installer {
    inner: Arc<Inner>,
    chunk: ChunkId,
    header: Header,
    file: Option<File>,
    direct: Option<File>,
    tmp_path: PathBuf,
    done: bool,
}

impl Installer {
    fn file(&self) -> FsResult<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| FsError::internal("copy file already closed"))
    }

    /// Blocks of the chunk being copied.
    pub fn blocks(&self) -> u32 {
        self.header.blocks
    }

    /// Stores `blocks` (as read from the source, `None` for holes) from `first`, each as
    /// copy 0 at the copy's version. Blocking.
    pub fn write_batch(&mut self, first: u32, blocks: &[Option<Bytes>]) -> FsResult<()> {
        let end = u64::from(first) + blocks.len() as u64;
        if end > u64::from(self.header.blocks) {
            return Err(out_of_range(first, blocks.len(), self.header.blocks));
        }
        let file = self.file()?;
        let mut table = Vec::with_capacity(blocks.len() * (COPIES * ENTRY_LEN) as usize);
        let mut slots = Vec::with_capacity(blocks.len());
        for (i, block) in blocks.iter().enumerate() {
            let index = first + i as u32;
            match block {
                Some(b) if !b.is_empty() => {
                    if !(SEAL_OVERHEAD..=MAX_SEALED_BLOCK).contains(&b.len()) {
                        return Err(FsError::Corrupt(format!(
                            "source sent a {}-byte block {index}",
                            b.len()
                        )));
                    }
                    slots.push(Some((0, b.len() as u32)));
                    table.extend_from_slice(&Entry::for_block(b, self.header.version).encode());
                }
                _ => {
                    slots.push(None);
                    table.extend_from_slice(&Entry::default().encode());
                }
            }
            table.extend_from_slice(&Entry::default().encode());
        }
        let target = Slots {
            file,
            direct: self.direct.as_ref(),
            header: &self.header,
        };
        for run in plan_runs(&slots, self.header.stride()) {
            let run_blocks: Vec<&[u8]> = blocks[run.start..run.end]
                .iter()
                .map(|b| b.as_deref().unwrap_or_default())
                .collect();
            self.inner
                .write_run(target, run.copy, first + run.start as u32, &run_blocks)
                .map_err(|e| io_error("write copied blocks", e))?;
        }
        file.write_all_at(&table, self.header.entry_offset(first, 0))
            .map_err(|e| io_error("write copied table", e))
    }

    /// Makes the copy durable and the chunk's replica on this node. Blocking.
    pub fn finish(mut self) -> FsResult<()> {
        let inner = self.inner.clone();
        let file = self
            .file
            .take()
            .ok_or_else(|| FsError::internal("copy file already closed"))?;
        file.sync_all()
            .map_err(|e| io_error("fsync copied chunk", e))?;
        let entry = inner.entry(self.chunk);
        let mut state = entry.state.write();
        let old_alloc = match &*state {
            ChunkState::Open(open) => Some(open.allocated),
            ChunkState::Absent => None,
            ChunkState::Unknown => fs::metadata(inner.chunk_path(self.chunk))
                .ok()
                .map(|m| allocated(&m)),
        };
        let final_path = inner.chunk_path(self.chunk);
        fs::rename(&self.tmp_path, &final_path).map_err(|e| io_error("install copy", e))?;
        self.done = true;
        fsync_dir(&inner.shard_path(self.chunk)).map_err(|e| io_error("sync shard dir", e))?;
        let alloc = file.metadata().map(|m| allocated(&m)).unwrap_or(0);
        match old_alloc {
            Some(old) => sub_saturating(&inner.used_bytes, old),
            None => {
                inner.chunk_count.fetch_add(1, Ordering::Relaxed);
            }
        }
        inner.used_bytes.fetch_add(alloc, Ordering::Relaxed);
        *state = ChunkState::Open(OpenChunk {
            file,
            direct: self.direct.take(),
            header: self.header,
            allocated: alloc,
            generation: inner.generation.fetch_add(1, Ordering::Relaxed),
        });
        Ok(())
    }
}

impl Drop for Installer {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: a leftover is also removed by the start-up scan.
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

impl Inner {
    /// Starts a replacement replica of `chunk` at `version` in a temp file (see
    /// [`Installer`]).
    pub(super) fn begin_install(
        self: &Arc<Self>,
        chunk: ChunkId,
        version: Version,
    ) -> FsResult<Installer> {
        let blocks = self.chunk_blocks.load(Ordering::Relaxed);
        if blocks == 0 {
            return Err(FsError::unavailable(
                "chunk size unknown: this node has not registered with the master yet",
            ));
        }
        if version.0 == 0 {
            return Err(FsError::Invalid("a copy needs a committed version".into()));
        }
        let shard = self.shard_path(chunk);
        match fs::create_dir(&shard) {
            Ok(()) => fsync_dir(&self.chunks_dir).map_err(|e| io_error("sync chunks dir", e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("create shard dir", e)),
        }
        // `.tmp`: a crash mid-copy leaves a file the start-up scan removes.
        let tmp_path = shard.join(format!("{}.copy.tmp", chunk.file_name()));
        let header = Header::new(chunk, version, blocks);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)
            .map_err(|e| io_error("create copy file", e))?;
        let mut installer = Installer {
            inner: self.clone(),
            chunk,
            header,
            file: Some(file),
            direct: None,
            tmp_path,
            done: false,
        };
        let file = installer.file()?;
        file.write_all_at(&header.encode(), 0)
            .and_then(|()| file.set_len(header.file_len()))
            .map_err(|e| io_error("write copy header", e))?;
        installer.direct = self
            .open_direct(&installer.tmp_path, &header)
            .map_err(|e| io_error("open copy file for direct I/O", e))?;
        Ok(installer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::*;

    #[tokio::test]
    async fn installed_copy_replaces_a_stale_replica_only_when_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = open_store(dir.path());
        let c = ChunkId(0x88);
        store
            .write_blocks(write_req(c, 1, 0, vec![sealed(c, 0, Version(1), 100)]))
            .await
            .expect("stale v1");
        let fresh = sealed(c, 0, Version(4), 400);
        let installer = store.begin_install(c, Version(4)).await.expect("begin");
        let blocks = vec![Some(fresh.clone()), None];
        let (installer, ()) = Store::on_installer(installer, move |i| i.write_batch(0, &blocks))
            .await
            .expect("batch");
        // Not installed yet: the old replica still answers (as stale for v4).
        assert!(matches!(
            store.read_blocks(read_req(c, 4, 0, 1)).await,
            Err(FsError::StaleVersion { .. })
        ));
        Store::finish_install(installer).await.expect("finish");
        let read = store.read_blocks(read_req(c, 4, 0, 2)).await.expect("read");
        assert_eq!(read.blocks, vec![Some(fresh.clone()), None]);
        assert_eq!(store.status().chunk_count, 1);
        let want = fresh.len() as u64;
        assert_eq!(store.verify_chunk(c).await.expect("verify"), want);
        // An abandoned copy leaves nothing behind.
        let other = ChunkId(0x89);
        drop(store.begin_install(other, Version(2)).await.expect("begin"));
        assert_eq!(store.list_chunks().await.expect("list").len(), 1);
        assert_eq!(
            chunk_files(&dir.path().join("chunks"))
                .expect("files")
                .len(),
            1
        );
    }
}

//! The start-up scan (removes leftovers of interrupted creations and copies, measures disk
//! usage) and the listing of held chunks reported to the master.
//!
//! It must never open a file whose name is not exactly a chunk id's file name, and never
//! delete anything but `.tmp` leftovers.

use super::file_io::ChunkState;
use super::{Fault, Inner, allocated, io_error};
use common::types::HeldChunk;
use common::{ChunkId, FsResult};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The chunk files under `chunks_dir` as (id, path). Names that are not exactly what
/// [`ChunkId::file_name`] would produce are skipped (and logged), except temp files.
pub(super) fn chunk_files(chunks_dir: &Path) -> io::Result<Vec<(ChunkId, PathBuf)>> {
    let mut out = Vec::new();
    for shard in fs::read_dir(chunks_dir)? {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for file in fs::read_dir(shard.path())? {
            let file = file?;
            let name = file.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                continue;
            }
            match parse_chunk_name(&name) {
                Some(id) if id.shard_dir() == shard.file_name().to_string_lossy() => {
                    out.push((id, file.path()))
                }
                _ => {
                    tracing::warn!(path = %file.path().display(), "skipping a file that is not a chunk file")
                }
            }
        }
    }
    Ok(out)
}

fn parse_chunk_name(name: &str) -> Option<ChunkId> {
    let hex = name.strip_suffix(".chunk")?;
    let id = ChunkId(u64::from_str_radix(hex, 16).ok()?);
    (id.file_name() == name).then_some(id)
}

/// Start-up scan: removes temp files of interrupted creations, sums disk usage and counts
/// chunk files (headers are checked lazily, on first access).
pub(super) fn scan(chunks_dir: &Path) -> io::Result<(u64, u64)> {
    for shard in fs::read_dir(chunks_dir)? {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for file in fs::read_dir(shard.path())? {
            let file = file?;
            if file.file_name().to_string_lossy().ends_with(".tmp") {
                tracing::info!(path = %file.path().display(), "removing an interrupted chunk creation");
                fs::remove_file(file.path())?;
            }
        }
    }
    let mut used = 0u64;
    let mut count = 0u64;
    for (_, path) in chunk_files(chunks_dir)? {
        used += allocated(&fs::metadata(&path)?);
        count += 1;
    }
    Ok((used, count))
}

impl Inner {
    pub(super) fn list(&self) -> FsResult<Vec<HeldChunk>> {
        let mut held = Vec::new();
        for (chunk, _) in chunk_files(&self.chunks_dir).map_err(|e| io_error("list chunks", e))? {
            let entry = self.entry(chunk);
            // The entry's read lock keeps a concurrent write from changing the header while
            // we read it.
            let guard = entry.state.read();
            let version = match &*guard {
                ChunkState::Open(open) => Some(open.header.version),
                ChunkState::Absent | ChunkState::Unknown => match self.open_file(chunk) {
                    Ok(Some(open)) => Some(open.header.version),
                    Ok(None) => None,
                    Err(Fault::Corrupt(why)) => {
                        tracing::warn!(chunk = ?chunk, reason = why, "skipping invalid chunk file");
                        None
                    }
                    Err(Fault::Io(e)) => {
                        tracing::warn!(chunk = ?chunk, error = %e, "skipping unreadable chunk file");
                        None
                    }
                },
            };
            if let Some(version) = version {
                held.push(HeldChunk { chunk, version });
            }
        }
        held.sort_by_key(|h| h.chunk);
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::*;

    #[tokio::test]
    async fn delete_and_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = open_store(dir.path());
        for (id, v) in [(0x100u64, 1u64), (0x201, 4), (0x1ff, 2)] {
            let c = ChunkId(id);
            store
                .write_blocks(write_req(c, v, 0, vec![sealed(c, 0, Version(v), 64)]))
                .await
                .expect("write");
        }
        let held = store.list_chunks().await.expect("list");
        let ids: Vec<_> = held.iter().map(|h| (h.chunk.0, h.version.0)).collect();
        assert_eq!(ids, vec![(0x100, 1), (0x1ff, 2), (0x201, 4)]);
        assert_eq!(store.status().chunk_count, 3);

        store
            .delete_chunks(vec![ChunkId(0x201), ChunkId(0x999)])
            .await
            .expect("delete, missing is fine");
        assert_eq!(store.status().chunk_count, 2);
        assert_eq!(
            store.read_blocks(read_req(ChunkId(0x201), 0, 0, 1)).await,
            Err(FsError::NotFound)
        );
        let held = store.list_chunks().await.expect("list");
        assert_eq!(held.len(), 2);
        assert!(store.sync_chunks(vec![ChunkId(0x100)]).await.is_ok());
        assert_eq!(
            store.sync_chunks(vec![ChunkId(0x201)]).await,
            Err(FsError::NotFound)
        );
        // Deleted then written again: a fresh chunk file.
        let c = ChunkId(0x201);
        store
            .write_blocks(write_req(c, 1, 0, vec![sealed(c, 0, Version(1), 64)]))
            .await
            .expect("write again");
        assert_eq!(store.list_chunks().await.expect("list").len(), 3);
    }

    #[tokio::test]
    async fn garbage_files_are_skipped_and_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = open_store(dir.path());
        let good = ChunkId(0x105);
        store
            .write_blocks(write_req(good, 1, 0, vec![sealed(good, 0, Version(1), 64)]))
            .await
            .expect("write");
        let garbage = ChunkId(0x205);
        let shard = dir.path().join("chunks").join(garbage.shard_dir());
        fs::write(shard.join(garbage.file_name()), b"not a chunk at all").expect("garbage");
        fs::write(shard.join("README"), b"stray").expect("stray");
        fs::write(shard.join("00000000000000aa.chunk"), b"wrong shard").expect("misplaced");

        let held = store.list_chunks().await.expect("list");
        assert_eq!(
            held,
            vec![HeldChunk {
                chunk: good,
                version: Version(1)
            }]
        );
        let read = store.read_blocks(read_req(garbage, 0, 0, 1)).await;
        assert!(matches!(read, Err(FsError::Corrupt(_))), "{read:?}");
        // A file claiming another chunk's id is refused as well.
        let other = ChunkId(0x305);
        fs::copy(store.chunk_path(good), store.chunk_path(other)).expect("copy");
        let read = store.read_blocks(read_req(other, 0, 0, 1)).await;
        assert!(matches!(read, Err(FsError::Corrupt(_))), "{read:?}");
    }

    #[tokio::test]
    async fn interrupted_creation_is_cleaned_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shard = dir.path().join("chunks").join("05");
        fs::create_dir_all(&shard).expect("shard");
        let tmp = shard.join(format!("{}.tmp", ChunkId(5).file_name()));
        fs::write(&tmp, b"half").expect("tmp");
        let (store, _bad) = open_store(dir.path());
        assert!(!tmp.exists());
        assert_eq!(store.status().chunk_count, 0);
    }
}

//! The store's requests on one chunk: write, read, verify, sync and delete. Each validates
//! its request, takes the chunk's lock from the cache and calls the file I/O and format
//! code. The write states its acknowledgement point.
//!
//! This module must never lay out bytes itself (that is `format`) nor issue slot I/O other
//! than through `file_io`.

use super::file_io::{ChunkState, read_entries};
use super::format::{COPIES, ENTRY_LEN, Entry, Header, pick_write, plan_runs};
use super::{Fault, Inner, allocated, io_error, out_of_range, sub_saturating};
use common::block::{MAX_SEALED_BLOCK, SEAL_OVERHEAD};
use common::rpc::MAX_BLOCKS_PER_REQUEST;
use common::types::{BlockData, ReadBlocks, WriteBlocks};
use common::{ChunkId, FsError, FsResult};
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

/// Whether a write of `incoming` bytes fits a node holding `used` bytes of its configured
/// `capacity`. The capacity is the admin's limit and the master places by it, so a write
/// past it is refused (ENOSPC) as a full disk would refuse it. Counted by what the write
/// carries: an overwrite that reuses allocated slots is counted as growth, erring on the
/// side of refusing. Without a configured capacity the filesystem's own ENOSPC applies.
fn fits(capacity: Option<u64>, used: u64, incoming: u64) -> bool {
    capacity.is_none_or(|capacity| used.saturating_add(incoming) <= capacity)
}

impl Inner {
    pub(super) fn write(&self, req: &WriteBlocks) -> FsResult<()> {
        let count = req.blocks.len();
        if count == 0 || count > MAX_BLOCKS_PER_REQUEST as usize {
            return Err(FsError::Invalid(format!(
                "a write carries 1 to {MAX_BLOCKS_PER_REQUEST} blocks, not {count}"
            )));
        }
        if let Some((i, b)) =
            req.blocks.iter().enumerate().find(|(_, b)| {
                !b.is_empty() && !(SEAL_OVERHEAD..=MAX_SEALED_BLOCK).contains(&b.len())
            })
        {
            return Err(FsError::Invalid(format!(
                "block {} is {} bytes; a sealed block is {SEAL_OVERHEAD} to {MAX_SEALED_BLOCK} (or empty to clear it)",
                u64::from(req.first_block) + i as u64,
                b.len()
            )));
        }
        let chunk_blocks = self.chunk_blocks.load(Ordering::Relaxed);
        if chunk_blocks == 0 {
            return Err(FsError::unavailable(
                "chunk size unknown: this node has not registered with the master yet",
            ));
        }
        let end = u64::from(req.first_block) + count as u64;
        if end > u64::from(chunk_blocks) {
            return Err(out_of_range(req.first_block, count, chunk_blocks));
        }
        let incoming: u64 = req.blocks.iter().map(|b| b.len() as u64).sum();
        if !fits(
            self.capacity,
            self.used_bytes.load(Ordering::Relaxed),
            incoming,
        ) {
            return Err(FsError::NoSpace);
        }

        if req.base >= req.version {
            return Err(FsError::Invalid(format!(
                "a write at {:?} must build on an older committed version, not {:?}",
                req.version, req.base
            )));
        }
        // Hash before taking the chunk's lock: other requests to the chunk wait only for
        // the disk.
        let fresh: Vec<Entry> = req
            .blocks
            .iter()
            .map(|b| Entry::for_block(b, req.version))
            .collect();

        let entry = self.entry(req.chunk);
        let mut guard = entry.state.write();
        self.resolve(req.chunk, &mut guard)?;
        if matches!(*guard, ChunkState::Absent) {
            let open = self
                .create_file(req.chunk, chunk_blocks)
                .map_err(|e| io_error("create chunk file", e))?;
            *guard = ChunkState::Open(open);
        }
        let ChunkState::Open(open) = &mut *guard else {
            return Err(FsError::internal("chunk state unresolved after create"));
        };
        if end > u64::from(open.header.blocks) {
            return Err(out_of_range(req.first_block, count, open.header.blocks));
        }
        if req.version < open.header.version {
            return Err(FsError::StaleVersion {
                held: open.header.version,
                used: req.version,
            });
        }
        let mut entries = match read_entries(open, req.first_block, count as u32) {
            Ok(entries) => entries,
            Err(Fault::Io(e)) => return Err(io_error("read block table", e)),
            Err(Fault::Corrupt(why)) => {
                self.quarantine(req.chunk, &mut guard, &why);
                return Err(FsError::Corrupt(format!("chunk {:?}: {why}", req.chunk)));
            }
        };
        let targets: Vec<usize> = entries.iter().map(|e| pick_write(e, req.base)).collect();
        // Consecutive blocks going to the same copy are contiguous on disk: one request per
        // run. A cleared block needs no slot, only its table entry.
        let slots: Vec<Option<(usize, u32)>> = req
            .blocks
            .iter()
            .zip(&targets)
            .map(|(b, &copy)| (!b.is_empty()).then_some((copy, b.len() as u32)))
            .collect();
        for run in plan_runs(&slots, open.header.stride()) {
            let run_blocks: Vec<&[u8]> = req.blocks[run.start..run.end]
                .iter()
                .map(|b| &b[..])
                .collect();
            self.write_run(
                open.slots(),
                run.copy,
                req.first_block + run.start as u32,
                &run_blocks,
            )
            .map_err(|e| io_error("write block slots", e))?;
        }
        let file = &open.file;
        let mut table = Vec::with_capacity(count * (COPIES * ENTRY_LEN) as usize);
        for (k, pair) in entries.iter_mut().enumerate() {
            pair[targets[k]] = fresh[k];
            // The kept copy's entry is rewritten with the bytes it already has: one pwrite
            // for the run, and rewriting identical bytes cannot tear them.
            table.extend_from_slice(&pair[0].encode());
            table.extend_from_slice(&pair[1].encode());
        }
        file.write_all_at(&table, open.header.entry_offset(req.first_block, 0))
            .map_err(|e| io_error("write block table", e))?;
        if req.version > open.header.version {
            let header = Header {
                version: req.version,
                ..open.header
            };
            file.write_all_at(&header.encode(), 0)
                .map_err(|e| io_error("write chunk header", e))?;
            open.header = header;
        }
        if req.sync || self.sync_every_write {
            file.sync_data()
                .map_err(|e| io_error("fdatasync chunk file", e))?;
        }
        // Acknowledgement point. The slots were handed to the device (O_DIRECT) or are in the
        // page cache, the table entries and version are in the page cache: all survive
        // kill -9 of this process (the kernel owns them now). When `sync` or
        // `sync_every_write` is set they were also fdatasynced above (which also flushes the
        // device cache and the extents O_DIRECT allocated) and survive power loss; otherwise
        // the client's fsync (sync_chunks or a `sync` write) makes them durable.
        if let Ok(meta) = file.metadata() {
            let now = allocated(&meta);
            if now >= open.allocated {
                self.used_bytes
                    .fetch_add(now - open.allocated, Ordering::Relaxed);
            } else {
                sub_saturating(&self.used_bytes, open.allocated - now);
            }
            open.allocated = now;
        }
        Ok(())
    }

    pub(super) fn read(&self, req: &ReadBlocks) -> FsResult<BlockData> {
        if req.count == 0 || req.count > MAX_BLOCKS_PER_REQUEST {
            return Err(FsError::Invalid(format!(
                "a read asks for 1 to {MAX_BLOCKS_PER_REQUEST} blocks, not {}",
                req.count
            )));
        }
        let entry = self.entry(req.chunk);
        let guard = self.read_state(req.chunk, &entry)?;
        let open = match &*guard {
            ChunkState::Open(open) => open,
            ChunkState::Absent => return Err(FsError::NotFound),
            ChunkState::Unknown => return Err(FsError::internal("chunk state unresolved")),
        };
        if open.header.version < req.min_version {
            return Err(FsError::StaleVersion {
                held: open.header.version,
                used: req.min_version,
            });
        }
        if u64::from(req.first_block) + u64::from(req.count) > u64::from(open.header.blocks) {
            return Err(out_of_range(
                req.first_block,
                req.count as usize,
                open.header.blocks,
            ));
        }
        match self.read_verified(open, req.first_block, req.count, req.min_version) {
            Ok(blocks) => Ok(BlockData {
                version: open.header.version,
                blocks,
            }),
            Err(Fault::Io(e)) => Err(io_error("read chunk file", e)),
            Err(Fault::Corrupt(why)) => {
                let generation = open.generation;
                drop(guard);
                let mut state = entry.state.write();
                // Only the file we read: a delete and re-create in between made a new one.
                if matches!(&*state, ChunkState::Open(o) if o.generation == generation) {
                    self.quarantine(req.chunk, &mut state, &why);
                }
                Err(FsError::Corrupt(format!("chunk {:?}: {why}", req.chunk)))
            }
        }
    }

    /// Blocks of a stored chunk (`NotFound` when it is not here).
    pub(super) fn blocks_of(&self, chunk: ChunkId) -> FsResult<u32> {
        let entry = self.entry(chunk);
        let guard = self.read_state(chunk, &entry)?;
        match &*guard {
            ChunkState::Open(open) => Ok(open.header.blocks),
            ChunkState::Absent => Err(FsError::NotFound),
            ChunkState::Unknown => Err(FsError::internal("chunk state unresolved")),
        }
    }

    pub(super) fn verify(&self, chunk: ChunkId) -> FsResult<u64> {
        let blocks = self.blocks_of(chunk)?;
        let mut bytes = 0;
        // Batches of one request's size, so a scrub holds the chunk's lock no longer than
        // a client read does.
        for first in (0..blocks).step_by(MAX_BLOCKS_PER_REQUEST as usize) {
            let count = (blocks - first).min(MAX_BLOCKS_PER_REQUEST);
            bytes += self.verify_range(chunk, first, count)?;
        }
        Ok(bytes)
    }

    /// Verifies every stored copy of `count` blocks from `first`; quarantines and reports
    /// the replica on a mismatch. Returns the bytes read.
    pub(super) fn verify_range(&self, chunk: ChunkId, first: u32, count: u32) -> FsResult<u64> {
        let entry = self.entry(chunk);
        let guard = self.read_state(chunk, &entry)?;
        let open = match &*guard {
            ChunkState::Open(open) => open,
            ChunkState::Absent => return Err(FsError::NotFound),
            ChunkState::Unknown => return Err(FsError::internal("chunk state unresolved")),
        };
        if u64::from(first) + u64::from(count) > u64::from(open.header.blocks) {
            return Err(out_of_range(first, count as usize, open.header.blocks));
        }
        match self.verify_all_copies(open, first, count) {
            Ok(bytes) => Ok(bytes),
            Err(Fault::Io(e)) => Err(io_error("read chunk file", e)),
            Err(Fault::Corrupt(why)) => {
                let generation = open.generation;
                drop(guard);
                let mut state = entry.state.write();
                if matches!(&*state, ChunkState::Open(o) if o.generation == generation) {
                    self.quarantine(chunk, &mut state, &why);
                }
                Err(FsError::Corrupt(format!("chunk {chunk:?}: {why}")))
            }
        }
    }

    pub(super) fn sync(&self, chunk: ChunkId) -> FsResult<()> {
        let entry = self.entry(chunk);
        let guard = self.read_state(chunk, &entry)?;
        match &*guard {
            ChunkState::Open(open) => open
                .file
                .sync_data()
                .map_err(|e| io_error("fdatasync chunk file", e)),
            ChunkState::Absent => Err(FsError::NotFound),
            ChunkState::Unknown => Err(FsError::internal("chunk state unresolved")),
        }
    }

    pub(super) fn delete(&self, chunk: ChunkId) -> FsResult<()> {
        let entry = self.entry(chunk);
        let mut state = entry.state.write();
        let path = self.chunk_path(chunk);
        let alloc = match &*state {
            ChunkState::Open(open) => Some(open.allocated),
            ChunkState::Absent => return Ok(()),
            ChunkState::Unknown => fs::metadata(&path).ok().map(|m| allocated(&m)),
        };
        // No directory fsync: a delete lost to power loss brings the replica back, and the
        // master orders it deleted again when this node reports its chunks at start-up.
        match fs::remove_file(&path) {
            Ok(()) => {
                sub_saturating(&self.used_bytes, alloc.unwrap_or(0));
                sub_saturating(&self.chunk_count, 1);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("delete chunk file", e)),
        }
        *state = ChunkState::Absent;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::*;
    use proptest::prelude::*;

    #[tokio::test]
    async fn empty_blocks_clear_to_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = open_store(dir.path());
        let c = ChunkId(0x77);
        let blocks = vec![
            sealed(c, 0, Version(1), BLOCK_SIZE),
            sealed(c, 1, Version(1), BLOCK_SIZE),
            sealed(c, 2, Version(1), BLOCK_SIZE),
        ];
        store
            .write_blocks(write_req(c, 1, 0, blocks.clone()))
            .await
            .expect("write");
        store
            .write_blocks(write_req(c, 2, 1, vec![Bytes::new(), Bytes::new()]))
            .await
            .expect("clear");
        let data = store.read_blocks(read_req(c, 2, 0, 3)).await.expect("read");
        assert_eq!(data.blocks[0].as_ref(), Some(&blocks[0]));
        assert_eq!(data.blocks[1], None);
        assert_eq!(data.blocks[2], None);
    }

    #[tokio::test]
    async fn round_trip_with_partial_last_block_and_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = open_store(dir.path());
        let c = ChunkId(0x1234);
        let blocks = vec![
            sealed(c, 2, Version(1), BLOCK_SIZE),
            sealed(c, 3, Version(1), BLOCK_SIZE),
            sealed(c, 4, Version(1), 100), // partial last block
        ];
        store
            .write_blocks(write_req(c, 1, 2, blocks.clone()))
            .await
            .expect("write");
        let data = store.read_blocks(read_req(c, 1, 0, 6)).await.expect("read");
        assert_eq!(data.version, Version(1));
        assert_eq!(data.blocks.len(), 6);
        assert_eq!(data.blocks[0], None);
        assert_eq!(data.blocks[1], None);
        assert_eq!(data.blocks[2].as_ref(), Some(&blocks[0]));
        assert_eq!(data.blocks[3].as_ref(), Some(&blocks[1]));
        assert_eq!(data.blocks[4].as_ref(), Some(&blocks[2]));
        assert_eq!(data.blocks[5], None);
        // The stored bytes are still the client's sealed blocks: they open with its key.
        let stored = data.blocks[4].as_ref().expect("block 4");
        let (_, plain) = common::block::open(&keys(), c, 4, stored).expect("opens");
        assert_eq!(plain.len(), 100);

        let status = store.status();
        assert_eq!(status.chunk_count, 1);
        assert_eq!(status.writes, 1);
        assert_eq!(status.reads, 1);
        assert!(status.used_bytes >= 2 * BLOCK_SIZE as u64, "{status:?}");
        assert!(status.capacity_bytes >= status.used_bytes);
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = ChunkId(7);
        let block = sealed(c, 15, Version(3), 5000);
        {
            let (store, _bad) = open_store(dir.path());
            let mut req = write_req(c, 3, 15, vec![block.clone()]);
            req.sync = true;
            store.write_blocks(req).await.expect("write");
        }
        let (store, _bad) = open_store(dir.path());
        assert_eq!(store.status().chunk_count, 1);
        assert!(store.status().used_bytes > 0);
        let data = store
            .read_blocks(read_req(c, 3, 15, 1))
            .await
            .expect("read");
        assert_eq!(data.version, Version(3));
        assert_eq!(data.blocks, vec![Some(block)]);
        assert_eq!(
            store.list_chunks().await.expect("list"),
            vec![HeldChunk {
                chunk: c,
                version: Version(3)
            }]
        );
    }

    #[tokio::test]
    async fn an_uncommitted_write_is_never_visible_at_the_committed_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = open_store(dir.path());
        let c = ChunkId(0x77);
        let v1 = sealed(c, 0, Version(1), 100);
        store
            .write_blocks(write_req(c, 1, 0, vec![v1.clone()]))
            .await
            .expect("write v1");
        // v2 is written on top of committed v1 but never committed (too few replicas).
        let v2 = sealed(c, 0, Version(2), 200);
        store
            .write_blocks(write_req(
                c,
                2,
                0,
                vec![v2.clone(), sealed(c, 1, Version(2), 50)],
            ))
            .await
            .expect("write v2");
        let at1 = store
            .read_blocks(read_req(c, 1, 0, 2))
            .await
            .expect("read at v1");
        assert_eq!(at1.blocks, vec![Some(v1.clone()), None]);
        let at2 = store
            .read_blocks(read_req(c, 2, 0, 1))
            .await
            .expect("read at v2");
        assert_eq!(at2.blocks, vec![Some(v2)]);
        // The next grant (v3) still builds on v1: it replaces v2's copy, never v1's.
        let v3 = sealed(c, 0, Version(3), 300);
        let mut req = write_req(c, 3, 0, vec![v3.clone()]);
        req.base = Version(1);
        store.write_blocks(req).await.expect("write v3");
        let at1 = store
            .read_blocks(read_req(c, 1, 0, 1))
            .await
            .expect("read at v1");
        assert_eq!(at1.blocks, vec![Some(v1)]);
        let at3 = store
            .read_blocks(read_req(c, 3, 0, 1))
            .await
            .expect("read at v3");
        assert_eq!(at3.blocks, vec![Some(v3)]);
        // A write must build on an older version than its own.
        let mut bad = write_req(c, 4, 0, vec![sealed(c, 0, Version(4), 10)]);
        bad.base = Version(4);
        assert!(is_invalid(store.write_blocks(bad).await));
    }

    #[tokio::test]
    async fn verify_checks_the_copy_readers_do_not_get_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, mut bad) = open_store(dir.path());
        let c = ChunkId(0x99);
        store
            .write_blocks(write_req(c, 1, 0, vec![sealed(c, 0, Version(1), 300)]))
            .await
            .expect("v1");
        store
            .write_blocks(write_req(c, 2, 0, vec![sealed(c, 0, Version(2), 300)]))
            .await
            .expect("v2");
        // Damage copy 0 (v1): readers at v2 never see it, the scrub does.
        flip_slot_byte(&store, c, 0);
        assert!(store.read_blocks(read_req(c, 2, 0, 1)).await.is_ok());
        assert!(matches!(
            store.verify_chunk(c).await,
            Err(FsError::Corrupt(_))
        ));
        assert_eq!(bad.try_recv().expect("reported").chunk, c);
    }

    #[tokio::test]
    async fn versions_only_grow() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = open_store(dir.path());
        let c = ChunkId(9);
        let v5 = sealed(c, 0, Version(5), 10);
        store
            .write_blocks(write_req(c, 5, 0, vec![v5.clone()]))
            .await
            .expect("write v5");
        let stale = store
            .write_blocks(write_req(c, 4, 0, vec![sealed(c, 0, Version(4), 10)]))
            .await;
        assert_eq!(
            stale,
            Err(FsError::StaleVersion {
                held: Version(5),
                used: Version(4)
            })
        );
        // The same version again is allowed (a client retrying its own write).
        store
            .write_blocks(write_req(c, 5, 1, vec![sealed(c, 1, Version(5), 10)]))
            .await
            .expect("write v5 again");
        let newer = sealed(c, 0, Version(8), 20);
        store
            .write_blocks(write_req(c, 8, 0, vec![newer.clone()]))
            .await
            .expect("write v8");
        assert_eq!(
            store.read_blocks(read_req(c, 8, 0, 1)).await,
            Ok(BlockData {
                version: Version(8),
                blocks: vec![Some(newer)]
            })
        );
        // A reader at committed version 6 gets the newest copy at or below it: v5's.
        assert_eq!(
            store.read_blocks(read_req(c, 6, 0, 1)).await,
            Ok(BlockData {
                version: Version(8),
                blocks: vec![Some(v5)]
            })
        );
        assert_eq!(
            store.read_blocks(read_req(c, 9, 0, 1)).await,
            Err(FsError::StaleVersion {
                held: Version(8),
                used: Version(9)
            })
        );
        assert_eq!(store.status().errors, 2);
    }

    #[tokio::test]
    async fn invalid_requests_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = open_store(dir.path());
        let c = ChunkId(1);
        let ok = || sealed(c, 0, Version(1), 10);
        let too_many = vec![ok(); MAX_BLOCKS_PER_REQUEST as usize + 1];
        assert!(is_invalid(
            store.write_blocks(write_req(c, 1, 0, too_many)).await
        ));
        assert!(is_invalid(
            store.write_blocks(write_req(c, 1, 0, vec![])).await
        ));
        let oversize = Bytes::from(vec![1u8; MAX_SEALED_BLOCK + 1]);
        assert!(is_invalid(
            store.write_blocks(write_req(c, 1, 0, vec![oversize])).await
        ));
        let tiny = Bytes::from(vec![1u8; SEAL_OVERHEAD - 1]);
        assert!(is_invalid(
            store.write_blocks(write_req(c, 1, 0, vec![tiny])).await
        ));
        assert!(is_invalid(
            store.write_blocks(write_req(c, 1, 16, vec![ok()])).await
        ));
        assert!(is_invalid(
            store
                .write_blocks(write_req(c, 1, u32::MAX, vec![ok(), ok()]))
                .await
        ));
        assert!(!store.chunk_path(c).exists(), "nothing written");
        store
            .write_blocks(write_req(c, 1, 0, vec![ok()]))
            .await
            .expect("valid write");
        assert!(is_invalid(store.read_blocks(read_req(c, 0, 15, 2)).await));
        assert!(is_invalid(store.read_blocks(read_req(c, 0, 0, 0)).await));
        assert!(is_invalid(
            store
                .read_blocks(read_req(c, 0, 0, MAX_BLOCKS_PER_REQUEST + 1))
                .await
        ));
        assert!(is_invalid(
            store.read_blocks(read_req(c, 0, u32::MAX, 1)).await
        ));
    }

    #[test]
    fn writes_fit_the_configured_capacity() {
        // (capacity, used, incoming) -> fits
        let table = [
            (None, u64::MAX, 1, true),
            (Some(100), 0, 100, true),
            (Some(100), 40, 60, true),
            (Some(100), 40, 61, false),
            (Some(100), 200, 0, false),
            (Some(100), u64::MAX, 1, false),
        ];
        for (capacity, used, incoming, want) in table {
            assert_eq!(
                fits(capacity, used, incoming),
                want,
                "{capacity:?} {used} {incoming}"
            );
        }
    }

    #[tokio::test]
    async fn a_write_past_the_configured_capacity_is_refused_with_no_space() {
        let dir = tempfile::tempdir().expect("tempdir");
        let capacity = 4 * BLOCK_SIZE as u64;
        let (store, _bad) = Store::open(StoreOptions {
            data_dir: dir.path().to_path_buf(),
            capacity_bytes: Some(capacity),
            sync_every_write: false,
            chunk_size: Some(CHUNK_SIZE),
            direct_io: false,
        })
        .expect("open");
        let mut refused = None;
        for i in 1..=16u64 {
            let c = ChunkId(i);
            let req = write_req(c, 1, 0, vec![sealed(c, 0, Version(1), BLOCK_SIZE)]);
            if let Err(e) = store.write_blocks(req).await {
                refused = Some((i, e));
                break;
            }
        }
        let (at, err) = refused.expect("a full node refuses writes");
        assert_eq!(err, FsError::NoSpace);
        assert!(at > 1, "the first block fits");
        assert!(store.status().used_bytes <= capacity + BLOCK_SIZE as u64 * 2);
    }

    #[tokio::test]
    async fn writes_wait_for_the_chunk_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = Store::open(StoreOptions {
            data_dir: dir.path().to_path_buf(),
            capacity_bytes: Some(1000),
            sync_every_write: true,
            chunk_size: None,
            direct_io: true,
        })
        .expect("open");
        let c = ChunkId(1);
        let req = write_req(c, 1, 0, vec![sealed(c, 0, Version(1), 10)]);
        assert!(matches!(
            store.write_blocks(req.clone()).await,
            Err(FsError::Unavailable(_))
        ));
        assert!(store.set_chunk_size(1000).is_err());
        assert!(store.set_chunk_size(0).is_err());
        store.set_chunk_size(CHUNK_SIZE).expect("chunk size");
        store.write_blocks(req).await.expect("write");
        assert_eq!(store.status().capacity_bytes, 1000);
    }

    #[tokio::test]
    async fn concurrent_writes_to_one_chunk_and_reads_never_see_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = open_store(dir.path());
        let c = ChunkId(0x77);
        let mut tasks = Vec::new();
        for round in 0..8u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let idx = round % 4;
                let block = sealed(c, idx, Version(1), 1000 + round as usize);
                store
                    .write_blocks(write_req(c, 1, idx, vec![block]))
                    .await
                    .expect("write");
                store
                    .read_blocks(read_req(c, 1, 0, 4))
                    .await
                    .expect("read never sees a half-done write");
            }));
        }
        for t in tasks {
            tokio::time::timeout(std::time::Duration::from_secs(20), t)
                .await
                .expect("in time")
                .expect("task");
        }
    }

    fn blocking_read(store: &Store, chunk: ChunkId, count: u32) -> FsResult<BlockData> {
        store.inner.read(&read_req(chunk, 1, 0, count))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn arbitrary_chunk_file_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..20_000),
            with_header in any::<bool>(),
            blocks in 1u32..5,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let (store, _bad) = open_store(dir.path());
            let c = ChunkId(0x42);
            let mut content = Vec::new();
            if with_header {
                // A valid header so that the table and slot parsing are exercised too.
                let header = Header::new(c, Version(1), blocks);
                content.extend_from_slice(&header.encode());
                content.resize(HEADER_LEN as usize, 0);
            }
            content.extend_from_slice(&bytes);
            let shard = dir.path().join("chunks").join(c.shard_dir());
            fs::create_dir_all(&shard).expect("shard");
            fs::write(shard.join(c.file_name()), &content).expect("write file");
            if with_header {
                // Long enough for the header's geometry, so reads reach the table.
                let header = Header::new(c, Version(1), blocks);
                let f = OpenOptions::new().write(true).open(shard.join(c.file_name())).expect("open");
                f.set_len(header.file_len().max(content.len() as u64)).expect("extend");
            }
            let _ = blocking_read(&store, c, blocks);
            let _ = store.inner.list();
            let _ = store.inner.write(&write_req(c, 2, 0, vec![sealed(c, 0, Version(2), 10)]));
        }
    }
}

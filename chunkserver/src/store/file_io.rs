//! File I/O of the chunk store: the cache of open chunk files (one entry and one lock per
//! chunk), opening and durably creating files, and slot runs read and written through
//! O_DIRECT or, where the format or the filesystem does not allow it, buffered I/O.
//!
//! This module moves bytes and checks checksums; it must never decide what a request may do
//! (that is `requests`), never serve a block whose checksum does not match, and never
//! touch a slot the write does not own (see `write_run`).

use super::format::{COPIES, ENTRY_LEN, Entry, FORMAT, HEADER_USED, Header, pick_read, plan_runs};
use super::{Fault, Inner, allocated, fsync_dir, io_error};
use crate::aligned::{AlignedBuf, PAGE};
use bytes::Bytes;
use common::{ChunkId, FsError, FsResult, Version};
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Open chunk files kept cached. Each is up to two descriptors (plain, and O_DIRECT for
/// format-3 slots); 256 covers the working set of many concurrent streams. The 512
/// descriptors stay below the usual soft limit of 1024 even so, and `start` raises the soft
/// limit to the hard one for the connections on top.
const OPEN_FILES: usize = 256;

/// The files and layout a slot run is read from or written to.
#[derive(Clone, Copy)]
pub(super) struct Slots<'a> {
    /// Plain descriptor: headers, tables, and slots when O_DIRECT is not in use.
    pub(super) file: &'a File,
    /// O_DIRECT descriptor of the same file, for format-3 slots.
    pub(super) direct: Option<&'a File>,
    pub(super) header: &'a Header,
}

/// Reads the entries of both copies of `count` blocks from `first`.
pub(super) fn read_entries(
    open: &OpenChunk,
    first: u32,
    count: u32,
) -> Result<Vec<[Entry; 2]>, Fault> {
    let mut table = vec![0u8; count as usize * (COPIES * ENTRY_LEN) as usize];
    open.file
        .read_exact_at(&mut table, open.header.entry_offset(first, 0))?;
    table
        .chunks_exact((COPIES * ENTRY_LEN) as usize)
        .map(|pair| {
            let (a, b) = pair.split_at(ENTRY_LEN as usize);
            Ok([Entry::decode(a)?, Entry::decode(b)?])
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(Fault::Corrupt)
}

pub(super) struct OpenChunk {
    pub(super) file: File,
    /// The same file opened with O_DIRECT, when slots are read and written that way.
    pub(super) direct: Option<File>,
    pub(super) header: Header,
    /// Disk bytes the file occupies (st_blocks), for incremental usage accounting.
    pub(super) allocated: u64,
    /// Tells this open file from a later one of the same chunk (after delete + create).
    pub(super) generation: u64,
}

impl OpenChunk {
    pub(super) fn slots(&self) -> Slots<'_> {
        Slots {
            file: &self.file,
            direct: self.direct.as_ref(),
            header: &self.header,
        }
    }
}

pub(super) enum ChunkState {
    /// Not looked at since the entry was cached.
    Unknown,
    /// No file on disk.
    Absent,
    Open(OpenChunk),
}

/// One chunk's cache entry. Its lock serializes writes (and delete, quarantine) of the
/// chunk against each other and against reads, so a read never sees a slot written but its
/// table entry not yet (which would look like corruption); reads share the lock.
pub(super) struct ChunkEntry {
    pub(super) state: RwLock<ChunkState>,
    pub(super) last_use: AtomicU64,
}

#[derive(Default)]
pub(super) struct Cache {
    pub(super) entries: HashMap<ChunkId, Arc<ChunkEntry>>,
    pub(super) tick: u64,
}

pub(super) fn read_header(file: &File, chunk: ChunkId) -> Result<Header, Fault> {
    let mut raw = [0u8; HEADER_USED];
    file.read_exact_at(&mut raw, 0)?;
    Header::decode(&raw, chunk).map_err(Fault::Corrupt)
}

impl Inner {
    /// The cache entry of `chunk`, created if needed. Evicts the least recently used entry
    /// nobody holds, so there is never more than one entry (and lock) per chunk.
    pub(super) fn entry(&self, chunk: ChunkId) -> Arc<ChunkEntry> {
        let mut cache = self.cache.lock();
        cache.tick += 1;
        let tick = cache.tick;
        let entry = cache
            .entries
            .entry(chunk)
            .or_insert_with(|| {
                Arc::new(ChunkEntry {
                    state: RwLock::new(ChunkState::Unknown),
                    last_use: AtomicU64::new(0),
                })
            })
            .clone();
        entry.last_use.store(tick, Ordering::Relaxed);
        if cache.entries.len() > OPEN_FILES {
            // Only the cache holds an entry with a strong count of 1, and new holders can
            // only clone it through the cache, which we have locked: safe to drop.
            let victim = cache
                .entries
                .iter()
                .filter(|(_, e)| Arc::strong_count(e) == 1)
                .min_by_key(|(_, e)| e.last_use.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            if let Some(id) = victim {
                cache.entries.remove(&id);
            }
        }
        entry
    }

    /// Turns `Unknown` into `Open` or `Absent`. A damaged file is quarantined here and
    /// answered as `Corrupt`.
    pub(super) fn resolve(&self, chunk: ChunkId, state: &mut ChunkState) -> FsResult<()> {
        if !matches!(state, ChunkState::Unknown) {
            return Ok(());
        }
        match self.open_file(chunk) {
            Ok(Some(open)) => *state = ChunkState::Open(open),
            Ok(None) => *state = ChunkState::Absent,
            Err(Fault::Corrupt(why)) => {
                self.quarantine(chunk, state, &why);
                return Err(FsError::Corrupt(format!("chunk {chunk:?}: {why}")));
            }
            Err(Fault::Io(e)) => return Err(io_error("open chunk file", e)),
        }
        Ok(())
    }

    /// A read lock on a resolved state.
    pub(super) fn read_state<'a>(
        &self,
        chunk: ChunkId,
        entry: &'a ChunkEntry,
    ) -> FsResult<RwLockReadGuard<'a, ChunkState>> {
        {
            let guard = entry.state.read();
            if !matches!(*guard, ChunkState::Unknown) {
                return Ok(guard);
            }
        }
        let mut guard = entry.state.write();
        self.resolve(chunk, &mut guard)?;
        Ok(RwLockWriteGuard::downgrade(guard))
    }

    pub(super) fn open_file(&self, chunk: ChunkId) -> Result<Option<OpenChunk>, Fault> {
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.chunk_path(chunk))
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Fault::Io(e)),
        };
        let header = read_header(&file, chunk)?;
        let meta = file.metadata()?;
        if meta.len() < header.file_len() {
            return Err(Fault::Corrupt(format!(
                "chunk file is {} bytes, its header needs {}",
                meta.len(),
                header.file_len()
            )));
        }
        let direct = self.open_direct(&self.chunk_path(chunk), &header)?;
        Ok(Some(OpenChunk {
            file,
            direct,
            header,
            allocated: allocated(&meta),
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
        }))
    }

    /// Durable create: temp file, header, sparse length, fsync, rename, fsync the shard
    /// directory. A crash at any point leaves either no chunk file or a complete empty one.
    pub(super) fn create_file(&self, chunk: ChunkId, blocks: u32) -> io::Result<OpenChunk> {
        let shard = self.shard_path(chunk);
        match fs::create_dir(&shard) {
            Ok(()) => fsync_dir(&self.chunks_dir)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let final_path = shard.join(chunk.file_name());
        let tmp_path = shard.join(format!("{}.tmp", chunk.file_name()));
        let created = self.create_tmp(chunk, blocks, &tmp_path, &final_path, &shard);
        if created.is_err() {
            // Best effort: a leftover is also removed by the scan at the next start.
            let _ = fs::remove_file(&tmp_path);
        }
        created
    }

    pub(super) fn create_tmp(
        &self,
        chunk: ChunkId,
        blocks: u32,
        tmp_path: &Path,
        final_path: &Path,
        shard: &Path,
    ) -> io::Result<OpenChunk> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp_path)?;
        let header = Header::new(chunk, Version(0), blocks);
        file.write_all_at(&header.encode(), 0)?;
        file.set_len(header.file_len())?;
        let direct = self.open_direct(tmp_path, &header)?;
        file.sync_all()?;
        fs::rename(tmp_path, final_path)?;
        fsync_dir(shard)?;
        let alloc = allocated(&file.metadata()?);
        self.used_bytes.fetch_add(alloc, Ordering::Relaxed);
        self.chunk_count.fetch_add(1, Ordering::Relaxed);
        Ok(OpenChunk {
            file,
            direct,
            header,
            allocated: alloc,
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The file at `path` opened with O_DIRECT, for the slots of a format-3 file; `None`
    /// when direct I/O is off or the filesystem refuses it (then it is off from now on).
    pub(super) fn open_direct(&self, path: &Path, header: &Header) -> io::Result<Option<File>> {
        if header.format != FORMAT || !self.direct_io.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let opened = if self.refuse_direct.load(Ordering::Relaxed) {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
        };
        match opened {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.refuse_direct_io(&e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The filesystem refused O_DIRECT (at open, or a request it would not take): buffered
    /// I/O from now on, said once.
    pub(super) fn refuse_direct_io(&self, e: &io::Error) {
        if self.direct_io.swap(false, Ordering::Relaxed) {
            tracing::warn!(dir = %self.data_dir.display(), error = %e,
                "the filesystem refuses O_DIRECT; block slots use buffered I/O");
        }
    }

    /// The O_DIRECT descriptor to use for `slots`, if any.
    pub(super) fn direct_for<'a>(&self, slots: Slots<'a>) -> Option<&'a File> {
        slots
            .direct
            .filter(|_| self.direct_io.load(Ordering::Relaxed))
    }

    /// Writes `blocks` (each non-empty) into consecutive slots of `copy` from block
    /// `first`: one request from one pooled buffer. Each slot is written from its start;
    /// bytes past a block up to the next slot (or, for O_DIRECT, to the next page) are
    /// zeros, never a previous request's leftovers. The last slot is written no further
    /// than its page, so the next slot (another block's) is never touched.
    pub(super) fn write_run(
        &self,
        slots: Slots<'_>,
        copy: usize,
        first: u32,
        blocks: &[&[u8]],
    ) -> io::Result<()> {
        let stride = slots.header.stride() as usize;
        let exact = (blocks.len() - 1) * stride + blocks.last().map_or(0, |b| b.len());
        let direct = self.direct_for(slots);
        let len = if direct.is_some() {
            exact.next_multiple_of(PAGE)
        } else {
            exact
        };
        let mut buf = self.pool.take(len);
        let out = buf.as_mut_slice();
        for (k, block) in blocks.iter().enumerate() {
            let at = k * stride;
            out[at..at + block.len()].copy_from_slice(block);
            out[at + block.len()..(at + stride).min(len)].fill(0);
        }
        let offset = slots.header.slot_offset(first, copy);
        self.slot_requests.fetch_add(1, Ordering::Relaxed);
        if let Some(file) = direct {
            match file.write_all_at(out, offset) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.refuse_direct_io(&e),
                Err(e) => return Err(e),
            }
        }
        slots.file.write_all_at(&out[..exact], offset)
    }

    /// Reads consecutive slots of `copy` from block `first`, holding `lens` bytes each
    /// (each non-zero): one request into one pooled buffer, where block k's bytes start at
    /// k × stride. Reads no further than the last block's page: never the unused copy, never
    /// the rest of the last slot.
    pub(super) fn read_run(
        &self,
        slots: Slots<'_>,
        copy: usize,
        first: u32,
        lens: &[u32],
    ) -> io::Result<AlignedBuf> {
        let stride = slots.header.stride() as usize;
        let exact = (lens.len() - 1) * stride + lens.last().map_or(0, |&l| l as usize);
        let offset = slots.header.slot_offset(first, copy);
        self.slot_requests.fetch_add(1, Ordering::Relaxed);
        if let Some(file) = self.direct_for(slots) {
            let mut buf = self.pool.take(exact.next_multiple_of(PAGE));
            match file.read_exact_at(buf.as_mut_slice(), offset) {
                Ok(()) => return Ok(buf),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.refuse_direct_io(&e),
                Err(e) => return Err(e),
            }
        }
        let mut buf = self.pool.take(exact);
        slots.file.read_exact_at(buf.as_mut_slice(), offset)?;
        Ok(buf)
    }

    /// Reads `count` blocks from `first` as a reader at committed version `max` sees them
    /// (the newest copy of each at or below `max`) and verifies each against its checksum.
    /// Holes read as `None`. Only the slots readers get are read.
    pub(super) fn read_verified(
        &self,
        open: &OpenChunk,
        first: u32,
        count: u32,
        max: Version,
    ) -> Result<Vec<Option<Bytes>>, Fault> {
        let entries = read_entries(open, first, count)?;
        let slots: Vec<Option<(usize, u32)>> = entries
            .iter()
            .map(|e| {
                pick_read(e, max)
                    .filter(|&c| e[c].len > 0)
                    .map(|c| (c, e[c].len))
            })
            .collect();
        let stride = open.header.stride() as usize;
        let mut blocks = vec![None; count as usize];
        for run in plan_runs(&slots, open.header.stride()) {
            let lens: Vec<u32> = entries[run.start..run.end]
                .iter()
                .map(|e| e[run.copy].len)
                .collect();
            // The reply's blocks are slices of the pooled buffer, which returns to the
            // pool once the reply is sent.
            let buf = Bytes::from_owner(self.read_run(
                open.slots(),
                run.copy,
                first + run.start as u32,
                &lens,
            )?);
            for k in run.start..run.end {
                let e = &entries[k][run.copy];
                let start = (k - run.start) * stride;
                let stored = buf.slice(start..start + e.len as usize);
                if common::block::checksum(&stored) != e.sum {
                    return Err(Fault::Corrupt(format!(
                        "block {} failed its checksum",
                        u64::from(first) + k as u64
                    )));
                }
                blocks[k] = Some(stored);
            }
        }
        Ok(blocks)
    }

    /// Verifies every stored copy (current or not) of `count` blocks from `first`, one
    /// request per slot run of each copy; returns the bytes read. For scrubbing: a damaged
    /// copy that no reader would be served today still means the disk is failing.
    pub(super) fn verify_all_copies(
        &self,
        open: &OpenChunk,
        first: u32,
        count: u32,
    ) -> Result<u64, Fault> {
        let entries = read_entries(open, first, count)?;
        let stride = open.header.stride() as usize;
        let mut bytes = 0u64;
        for copy in 0..COPIES as usize {
            let slots: Vec<Option<(usize, u32)>> = entries
                .iter()
                .map(|e| (e[copy].len > 0).then_some((copy, e[copy].len)))
                .collect();
            for run in plan_runs(&slots, open.header.stride()) {
                let lens: Vec<u32> = entries[run.start..run.end]
                    .iter()
                    .map(|e| e[copy].len)
                    .collect();
                let buf = self.read_run(open.slots(), copy, first + run.start as u32, &lens)?;
                for (i, e) in entries[run.start..run.end].iter().enumerate() {
                    let e = &e[copy];
                    let stored = &buf.as_ref()[i * stride..i * stride + e.len as usize];
                    if common::block::checksum(stored) != e.sum {
                        return Err(Fault::Corrupt(format!(
                            "block {} (copy {copy}, {:?}) failed its checksum",
                            first + (run.start + i) as u32,
                            e.version
                        )));
                    }
                    bytes += u64::from(e.len);
                }
            }
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::*;

    #[tokio::test]
    async fn format_3_runs_are_one_request_each_and_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = open_store(dir.path());
        assert_eq!(store.direct_io(), fs_takes_o_direct(dir.path()));
        let c = ChunkId(0x3301);
        let v1: Vec<Bytes> = (0..16)
            .map(|i| sealed(c, i, Version(1), BLOCK_SIZE))
            .collect();
        let before = store.slot_requests();
        store
            .write_blocks(write_req(c, 1, 0, v1.clone()))
            .await
            .expect("write");
        assert_eq!(store.slot_requests() - before, 1, "16 blocks, one write");

        // On disk: format 3, slots 4 KiB-aligned at the 68 KiB stride.
        let header = read_header(&File::open(store.chunk_path(c)).expect("open"), c)
            .ok()
            .expect("header");
        assert_eq!(header.format, FORMAT);
        assert_eq!(SLOT_STRIDE % 4096, 0);
        assert_eq!(header.slot_offset(1, 0) % 4096, 0);
        assert_eq!(
            fs::metadata(store.chunk_path(c)).expect("meta").len(),
            header.slots_offset() + 2 * 16 * SLOT_STRIDE
        );
        for i in [0u32, 7, 15] {
            let at = header.slots_offset() + u64::from(i) * SLOT_STRIDE;
            assert_eq!(raw_at(&store, c, at, v1[i as usize].len()), v1[i as usize]);
        }

        let before = store.slot_requests();
        let read = store
            .read_blocks(read_req(c, 1, 0, 16))
            .await
            .expect("read");
        assert_eq!(store.slot_requests() - before, 1, "16 blocks, one read");
        assert_eq!(
            read.blocks,
            v1.iter().cloned().map(Some).collect::<Vec<_>>()
        );

        // The next version goes to the other copy, a short last block and a cleared one
        // among them; the committed copy stays readable.
        let mut v2: Vec<Bytes> = (0..8)
            .map(|i| sealed(c, 4 + i, Version(2), BLOCK_SIZE))
            .collect();
        v2[3] = Bytes::new();
        v2[7] = sealed(c, 11, Version(2), 5000);
        let before = store.slot_requests();
        store
            .write_blocks(write_req(c, 2, 4, v2.clone()))
            .await
            .expect("write v2");
        assert_eq!(store.slot_requests() - before, 2, "a hole splits the run");
        assert_eq!(
            raw_at(&store, c, header.slot_offset(11, 1), v2[7].len()),
            v2[7]
        );
        let old = store.read_blocks(read_req(c, 1, 0, 16)).await.expect("v1");
        assert_eq!(old.blocks, v1.iter().cloned().map(Some).collect::<Vec<_>>());
        let new = store.read_blocks(read_req(c, 2, 0, 16)).await.expect("v2");
        for i in 0..16usize {
            let want = match i {
                4..=11 if v2[i - 4].is_empty() => None,
                4..=11 => Some(v2[i - 4].clone()),
                _ => Some(v1[i].clone()),
            };
            assert_eq!(new.blocks[i], want, "block {i}");
        }
        assert_eq!(store.verify_chunk(c).await.expect("verify"), {
            let v1_bytes: u64 = v1.iter().map(|b| b.len() as u64).sum();
            v1_bytes + v2.iter().map(|b| b.len() as u64).sum::<u64>()
        });

        // Survives a restart (nothing cached).
        drop(store);
        let (store, _bad) = open_store(dir.path());
        let again = store
            .read_blocks(read_req(c, 2, 0, 16))
            .await
            .expect("reread");
        assert_eq!(again.blocks, new.blocks);
    }

    /// Writes a format-2 chunk file exactly as the format-2 code did: packed slots of
    /// MAX_SEALED_BLOCK bytes. Offsets are computed here, not with `Header`.
    fn write_format_2_file(dir: &Path, c: ChunkId, blocks: u32, stored: &[(u32, Bytes)]) {
        let shard = dir.join("chunks").join(c.shard_dir());
        fs::create_dir_all(&shard).expect("shard");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(shard.join(c.file_name()))
            .expect("create");
        let mut header = [0u8; 64];
        header[0..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&2u32.to_le_bytes());
        header[12..20].copy_from_slice(&c.0.to_le_bytes());
        header[20..28].copy_from_slice(&1u64.to_le_bytes());
        header[28..32].copy_from_slice(&blocks.to_le_bytes());
        let sum = blake3::hash(&header[..32]);
        header[32..].copy_from_slice(sum.as_bytes());
        file.write_all_at(&header, 0).expect("header");
        let slots = 4096 + (u64::from(blocks) * 128).next_multiple_of(4096);
        file.set_len(slots + 2 * u64::from(blocks) * 65577)
            .expect("size");
        for (b, bytes) in stored {
            file.write_all_at(bytes, slots + u64::from(*b) * 65577)
                .expect("slot");
            let mut entry = [0u8; 64];
            entry[0..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
            entry[4..36].copy_from_slice(&common::block::checksum(bytes));
            entry[36..44].copy_from_slice(&1u64.to_le_bytes());
            file.write_all_at(&entry, 4096 + u64::from(*b) * 128)
                .expect("entry");
        }
    }

    #[tokio::test]
    async fn format_2_files_are_still_read_and_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = ChunkId(0x2202);
        let v1: Vec<(u32, Bytes)> = (0..4)
            .map(|i| (i, sealed(c, i, Version(1), BLOCK_SIZE - 7 * i as usize)))
            .collect();
        write_format_2_file(dir.path(), c, 16, &v1);
        let (store, _bad) = open_store(dir.path());
        let before = store.slot_requests();
        let read = store.read_blocks(read_req(c, 1, 0, 4)).await.expect("read");
        assert_eq!(store.slot_requests() - before, 1, "packed slots run too");
        assert_eq!(
            read.blocks,
            v1.iter().map(|(_, b)| Some(b.clone())).collect::<Vec<_>>()
        );

        // A new version of blocks 1..3 lands in copy 1 at the packed stride.
        let v2: Vec<Bytes> = (1..3).map(|i| sealed(c, i, Version(2), 900)).collect();
        store
            .write_blocks(write_req(c, 2, 1, v2.clone()))
            .await
            .expect("write");
        let slots = 4096 + 4096;
        assert_eq!(
            raw_at(&store, c, slots + (16 + 2) * 65577, v2[1].len()),
            v2[1]
        );
        // Block 3 of copy 0, right after the written slots, is untouched.
        assert_eq!(raw_at(&store, c, slots + 3 * 65577, v1[3].1.len()), v1[3].1);
        drop(store);

        let (store, _bad) = open_store(dir.path());
        let old = store.read_blocks(read_req(c, 1, 0, 4)).await.expect("v1");
        assert_eq!(old.blocks[2], Some(v1[2].1.clone()));
        let new = store.read_blocks(read_req(c, 2, 0, 4)).await.expect("v2");
        assert_eq!(new.version, Version(2));
        assert_eq!(
            new.blocks,
            vec![
                Some(v1[0].1.clone()),
                Some(v2[0].clone()),
                Some(v2[1].clone()),
                Some(v1[3].1.clone())
            ]
        );
        store.verify_chunk(c).await.expect("verify");
        let header = read_header(&File::open(store.chunk_path(c)).expect("open"), c)
            .ok()
            .expect("header");
        assert_eq!((header.format, header.version), (FORMAT_PACKED, Version(2)));
    }

    #[tokio::test]
    async fn refused_o_direct_falls_back_to_buffered_io() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = ChunkId(0x4401);
        let blocks: Vec<Bytes> = (0..5)
            .map(|i| sealed(c, i, Version(1), BLOCK_SIZE - 100))
            .collect();
        {
            // Injected: the filesystem refuses O_DIRECT at the first open.
            let (store, _bad) = open_store(dir.path());
            store.refuse_direct_io();
            store
                .write_blocks(write_req(c, 1, 0, blocks.clone()))
                .await
                .expect("write without O_DIRECT");
            assert!(!store.direct_io(), "direct I/O is off after the refusal");
            let read = store.read_blocks(read_req(c, 1, 0, 5)).await.expect("read");
            assert_eq!(
                read.blocks,
                blocks.iter().cloned().map(Some).collect::<Vec<_>>()
            );
        }
        // Off by config: files written either way read the same.
        let (store, _bad) = Store::open(StoreOptions {
            data_dir: dir.path().to_path_buf(),
            capacity_bytes: None,
            sync_every_write: true,
            chunk_size: Some(CHUNK_SIZE),
            direct_io: false,
        })
        .expect("open store");
        assert!(!store.direct_io());
        let read = store.read_blocks(read_req(c, 1, 0, 5)).await.expect("read");
        assert_eq!(
            read.blocks,
            blocks.iter().cloned().map(Some).collect::<Vec<_>>()
        );
        let next = vec![sealed(c, 2, Version(2), 10)];
        store
            .write_blocks(write_req(c, 2, 2, next.clone()))
            .await
            .expect("buffered write");
        drop(store);
        let (store, _bad) = open_store(dir.path());
        let read = store.read_blocks(read_req(c, 2, 2, 1)).await.expect("read");
        assert_eq!(read.blocks, vec![Some(next[0].clone())]);
        store.verify_chunk(c).await.expect("verify");
    }

    #[tokio::test]
    async fn corruption_inside_a_long_run_is_detected_and_quarantined() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, mut bad) = open_store(dir.path());
        let c = ChunkId(0x5501);
        let blocks: Vec<Bytes> = (0..12)
            .map(|i| sealed(c, i, Version(1), BLOCK_SIZE))
            .collect();
        store
            .write_blocks(write_req(c, 1, 0, blocks))
            .await
            .expect("write");
        // Written behind the O_DIRECT descriptor's back, as a failing disk would.
        flip_slot_byte(&store, c, 9);
        let read = store.read_blocks(read_req(c, 1, 0, 12)).await;
        assert!(
            matches!(&read, Err(FsError::Corrupt(why)) if why.contains("block 9")),
            "{read:?}"
        );
        assert!(!store.chunk_path(c).exists(), "file moved away");
        assert_eq!(bad.try_recv().expect("reported").chunk, c);
        assert_eq!(
            store.read_blocks(read_req(c, 1, 0, 1)).await,
            Err(FsError::NotFound)
        );
    }
}

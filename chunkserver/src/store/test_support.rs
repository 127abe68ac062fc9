//! Helpers shared by the store's unit tests.

//! A prelude of what the tests use, so each test module needs only `use super::*` and this.

pub(super) use super::file_io::read_header;
pub(super) use super::format::*;
pub(super) use super::scan::chunk_files;
pub(super) use super::{BadReplica, Store, StoreOptions};
pub(super) use bytes::Bytes;
pub(super) use common::block::{BLOCK_SIZE, DataKey, KeyRing, seal};
pub(super) use common::types::{HeldChunk, ReadBlocks, WriteBlocks};
pub(super) use common::{ChunkId, FsError, FsResult, Version};
pub(super) use std::fs::{self, File, OpenOptions};
pub(super) use std::os::unix::fs::{FileExt, OpenOptionsExt};
pub(super) use std::path::Path;

pub(super) const CHUNK_SIZE: u64 = 16 * BLOCK_SIZE as u64; // 16 blocks keeps test files small

pub(super) fn open_store(dir: &Path) -> (Store, tokio::sync::mpsc::Receiver<BadReplica>) {
    Store::open(StoreOptions {
        data_dir: dir.to_path_buf(),
        capacity_bytes: None,
        sync_every_write: false,
        chunk_size: Some(CHUNK_SIZE),
        direct_io: true,
    })
    .expect("open store")
}

pub(super) fn keys() -> KeyRing {
    KeyRing::single(DataKey::new(0, [3u8; 32]))
}

pub(super) fn sealed(chunk: ChunkId, index: u32, version: Version, len: usize) -> Bytes {
    let plain: Vec<u8> = (0..len).map(|i| (i as u32 ^ index) as u8).collect();
    seal(keys().current(), chunk, index, version, &plain)
}

/// A write at `version` on top of committed `version - 1`.
pub(super) fn write_req(
    chunk: ChunkId,
    version: u64,
    first: u32,
    blocks: Vec<Bytes>,
) -> WriteBlocks {
    WriteBlocks {
        chunk,
        version: Version(version),
        base: Version(version.saturating_sub(1)),
        first_block: first,
        blocks,
        sync: false,
    }
}

pub(super) fn read_req(chunk: ChunkId, min_version: u64, first: u32, count: u32) -> ReadBlocks {
    ReadBlocks {
        chunk,
        min_version: Version(min_version),
        first_block: first,
        count,
    }
}

pub(super) fn is_invalid<T: std::fmt::Debug>(r: FsResult<T>) -> bool {
    matches!(r, Err(FsError::Invalid(_)))
}

/// Flips one byte inside block `block`'s slot of chunk `c`.
pub(super) fn flip_slot_byte(store: &Store, c: ChunkId, block: u32) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(store.chunk_path(c))
        .expect("open chunk file");
    let header = read_header(&file, c).ok().expect("header");
    let at = header.slot_offset(block, 0) + 50;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).expect("read byte");
    b[0] ^= 0x40;
    file.write_all_at(&b, at).expect("write byte");
}

/// Whether the filesystem of `dir` takes O_DIRECT opens (not every tmpfs does).
pub(super) fn fs_takes_o_direct(dir: &Path) -> bool {
    let probe = dir.join("probe");
    fs::write(&probe, b"").expect("probe file");
    let ok = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    fs::remove_file(&probe).expect("remove probe");
    ok
}

pub(super) fn raw_at(store: &Store, c: ChunkId, at: u64, len: usize) -> Vec<u8> {
    let file = File::open(store.chunk_path(c)).expect("open chunk file");
    let mut out = vec![0u8; len];
    file.read_exact_at(&mut out, at).expect("read raw");
    out
}

//! The chunk store: sealed blocks on disk, one file per chunk replica, a BLAKE3 checksum per
//! block verified on every read.
//!
//! The store sees sealed blocks as opaque bytes: it never holds a key and never interprets a
//! block beyond its length. It must never serve bytes whose checksum does not match; a file
//! that fails a check is moved to `quarantine/` and reported, not repaired here. Paths are
//! only ever derived from the integer chunk id, so no request can name a file outside the
//! data directory.
//!
//! ```text
//! DATA/chunks/XX/<16 hex>.chunk      XX = low byte of the chunk id
//! DATA/quarantine/<16 hex>.chunk.<unix ns>
//! ```
//!
//! One room per concern; this file holds the public handle ([`Store`]), its options and
//! the shared state, and must never grow request logic or on-disk layout of its own:
//!
//! - `format`: the pure on-disk format (header, table entries, slot layout, copy choice,
//!   slot runs) and its documentation. No I/O.
//! - `file_io`: the open-file cache and slot I/O (O_DIRECT and buffered paths).
//! - `requests`: write, read, verify, sync and delete of one chunk, as the RPCs ask.
//! - `install`: copying a whole replica in from another node ([`Installer`]).
//! - `quarantine`: moving a damaged file aside and reporting it.
//! - `scan`: the start-up scan and the listing of held chunks.
//!
//! Disk I/O runs on tokio's blocking threads.

use crate::aligned::BufPool;
use crate::stats::{RequestGuard, Stats};
use common::rpc::MAX_BLOCKS_PER_REQUEST;
use common::types::{BlockData, HeldChunk, NodeStatus, ReadBlocks, WriteBlocks};
use common::{ChunkId, FsError, FsResult, Version};
use parking_lot::Mutex;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

mod file_io;
mod format;
mod install;
mod quarantine;
mod requests;
mod scan;
#[cfg(test)]
mod test_support;

use file_io::Cache;
pub use format::{
    ENTRY_LEN, FORMAT, FORMAT_PACKED, HEADER_LEN, MAGIC, MAX_BLOCKS_PER_CHUNK, SLOT_LEN,
    SLOT_STRIDE,
};
pub use install::Installer;
use scan::scan;

/// Aligned buffers kept for reuse: one per request a busy node has in flight on its disk
/// threads; each is at most one request's slots (64 × 68 KiB).
const POOL_BUFFERS: usize = 8;
/// Corruption reports waiting for the master. Corruption is rare; if this many are queued
/// the master is unreachable, and clients report bad replicas too, so dropping is safe.
const CORRUPTION_QUEUE: usize = 1024;

/// A replica that failed verification, for the master (`report_bad_replica`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadReplica {
    pub chunk: ChunkId,
    pub reason: String,
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    /// Bytes offered; `None` = what this store uses plus the filesystem's free space.
    pub capacity_bytes: Option<u64>,
    /// fdatasync every write, not only those flagged `sync`.
    pub sync_every_write: bool,
    /// The cluster chunk size if already known; otherwise set it with
    /// [`Store::set_chunk_size`] after registration. Writes are refused until then.
    pub chunk_size: Option<u64>,
    /// Slot I/O with O_DIRECT (format-3 files) where the filesystem allows it.
    pub direct_io: bool,
}

/// Why an internal step failed: damaged data (quarantine the file) or the disk itself.
enum Fault {
    Corrupt(String),
    Io(io::Error),
}

impl From<io::Error> for Fault {
    fn from(e: io::Error) -> Self {
        // A file shorter than its own header says is damaged, not an I/O failure.
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Fault::Corrupt("chunk file is shorter than its header says".into())
        } else {
            Fault::Io(e)
        }
    }
}

fn io_error(what: &str, e: io::Error) -> FsError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        FsError::NoSpace
    } else {
        FsError::Io(format!("{what}: {e}"))
    }
}

struct Inner {
    data_dir: PathBuf,
    chunks_dir: PathBuf,
    quarantine_dir: PathBuf,
    /// Blocks per new chunk; 0 until the chunk size is known.
    chunk_blocks: AtomicU32,
    sync_every_write: bool,
    capacity: Option<u64>,
    cache: Mutex<Cache>,
    used_bytes: AtomicU64,
    chunk_count: AtomicU64,
    generation: AtomicU64,
    stats: Arc<Stats>,
    bad_tx: tokio::sync::mpsc::Sender<BadReplica>,
    /// O_DIRECT for slots of new and newly opened files; cleared (once, logged) when the
    /// filesystem refuses it.
    direct_io: AtomicBool,
    /// Buffers for slot runs.
    pool: Arc<BufPool>,
    /// Slot read and write requests issued (one per run), for tests of coalescing.
    slot_requests: AtomicU64,
    /// Test hook: O_DIRECT opens fail with EINVAL as on a filesystem that refuses them.
    refuse_direct: AtomicBool,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (creating if needed) the data directory, removes leftovers of interrupted chunk
    /// creations and measures what is stored. Blocking. The receiver yields replicas found
    /// corrupt, to be reported to the master.
    pub fn open(
        opts: StoreOptions,
    ) -> anyhow::Result<(Store, tokio::sync::mpsc::Receiver<BadReplica>)> {
        use anyhow::Context as _;
        let dir = &opts.data_dir;
        let chunks_dir = dir.join("chunks");
        let quarantine_dir = dir.join("quarantine");
        for d in [dir, &chunks_dir, &quarantine_dir] {
            fs::create_dir_all(d)
                .with_context(|| format!("create data directory {}", d.display()))?;
        }
        fsync_dir(dir).with_context(|| format!("sync data directory {}", dir.display()))?;
        let (used, count) = scan(&chunks_dir)
            .with_context(|| format!("scan chunk files in {}", chunks_dir.display()))?;
        let (bad_tx, bad_rx) = tokio::sync::mpsc::channel(CORRUPTION_QUEUE);
        let store = Store {
            inner: Arc::new(Inner {
                data_dir: dir.clone(),
                chunks_dir,
                quarantine_dir,
                chunk_blocks: AtomicU32::new(0),
                sync_every_write: opts.sync_every_write,
                capacity: opts.capacity_bytes,
                cache: Mutex::new(Cache::default()),
                used_bytes: AtomicU64::new(used),
                chunk_count: AtomicU64::new(count),
                generation: AtomicU64::new(0),
                stats: Arc::new(Stats::default()),
                bad_tx,
                direct_io: AtomicBool::new(opts.direct_io),
                pool: BufPool::new(
                    MAX_BLOCKS_PER_REQUEST as usize * SLOT_STRIDE as usize,
                    POOL_BUFFERS,
                ),
                slot_requests: AtomicU64::new(0),
                refuse_direct: AtomicBool::new(false),
            }),
        };
        if let Some(size) = opts.chunk_size {
            store.set_chunk_size(size)?;
        }
        Ok((store, bad_rx))
    }

    /// Sets the cluster chunk size (from `Registered`): new chunk files get
    /// `chunk_size / BLOCK_SIZE` blocks.
    pub fn set_chunk_size(&self, chunk_size: u64) -> anyhow::Result<()> {
        let block = common::block::BLOCK_SIZE as u64;
        let blocks = chunk_size / block;
        if chunk_size == 0 || chunk_size % block != 0 || blocks > u64::from(MAX_BLOCKS_PER_CHUNK) {
            anyhow::bail!(
                "chunk size {chunk_size} is not a multiple of the {block}-byte block size \
                 between 1 and {MAX_BLOCKS_PER_CHUNK} blocks"
            );
        }
        self.inner
            .chunk_blocks
            .store(blocks as u32, Ordering::Relaxed);
        Ok(())
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    /// Starts accounting one request (in flight, latency) until the guard drops.
    pub fn begin_request(&self) -> RequestGuard {
        RequestGuard::new(self.inner.stats.clone())
    }

    /// Writes consecutive sealed blocks of one chunk.
    pub async fn write_blocks(&self, req: WriteBlocks) -> FsResult<()> {
        let bytes: u64 = req.blocks.iter().map(|b| b.len() as u64).sum();
        let result = self.blocking(move |inner| inner.write(&req)).await;
        match &result {
            Ok(()) => self.inner.stats.count_write(bytes),
            Err(_) => self.inner.stats.count_error(),
        }
        result
    }

    /// Reads consecutive blocks of one chunk, each verified against its checksum.
    pub async fn read_blocks(&self, req: ReadBlocks) -> FsResult<BlockData> {
        let result = self.blocking(move |inner| inner.read(&req)).await;
        match &result {
            Ok(data) => {
                let bytes = data.blocks.iter().flatten().map(|b| b.len() as u64).sum();
                self.inner.stats.count_read(bytes);
            }
            Err(_) => self.inner.stats.count_error(),
        }
        result
    }

    /// fdatasyncs the named chunks.
    pub async fn sync_chunks(&self, chunks: Vec<ChunkId>) -> FsResult<()> {
        self.counted(move |inner| chunks.iter().try_for_each(|&c| inner.sync(c)))
            .await
    }

    /// Removes the named chunks; a chunk that is not here is already deleted.
    pub async fn delete_chunks(&self, chunks: Vec<ChunkId>) -> FsResult<()> {
        self.counted(move |inner| chunks.iter().try_for_each(|&c| inner.delete(c)))
            .await
    }

    /// Every valid chunk file with its version; other files are skipped and logged.
    pub async fn list_chunks(&self) -> FsResult<Vec<HeldChunk>> {
        self.counted(|inner| inner.list()).await
    }

    /// Re-reads every stored block of `chunk` and checks its checksum, quarantining and
    /// reporting the replica on a mismatch exactly as a client read would. For background
    /// scrubbing; not counted as client reads.
    pub async fn verify_chunk(&self, chunk: ChunkId) -> FsResult<u64> {
        self.blocking(move |inner| inner.verify(chunk)).await
    }

    /// Blocks of a stored chunk; `NotFound` when this node does not hold it.
    pub async fn chunk_blocks(&self, chunk: ChunkId) -> FsResult<u32> {
        self.blocking(move |inner| inner.blocks_of(chunk)).await
    }

    /// [`Store::verify_chunk`] for `count` blocks from `first`: the scrubber's unit of work,
    /// so it can pace itself between batches. Returns the bytes read.
    pub async fn verify_blocks(&self, chunk: ChunkId, first: u32, count: u32) -> FsResult<u64> {
        self.blocking(move |inner| inner.verify_range(chunk, first, count))
            .await
    }

    /// Starts copying in a replica of `chunk` at committed `version` (repair).
    pub async fn begin_install(&self, chunk: ChunkId, version: Version) -> FsResult<Installer> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.begin_install(chunk, version))
            .await
            .map_err(|e| FsError::internal(format!("disk task failed: {e}")))?
    }

    /// Makes a copied-in replica durable and current on this node.
    pub async fn finish_install(installer: Installer) -> FsResult<()> {
        tokio::task::spawn_blocking(move || installer.finish())
            .await
            .map_err(|e| FsError::internal(format!("disk task failed: {e}")))?
    }

    /// Runs blocking work on an [`Installer`] off the async threads.
    pub async fn on_installer<T: Send + 'static>(
        mut installer: Installer,
        work: impl FnOnce(&mut Installer) -> FsResult<T> + Send + 'static,
    ) -> FsResult<(Installer, T)> {
        tokio::task::spawn_blocking(move || {
            let out = work(&mut installer)?;
            Ok((installer, out))
        })
        .await
        .map_err(|e| FsError::internal(format!("disk task failed: {e}")))?
    }

    /// This node's self-report.
    pub fn status(&self) -> NodeStatus {
        let inner = &self.inner;
        let stats = &inner.stats;
        let used = inner.used_bytes.load(Ordering::Relaxed);
        // Without a configured capacity we offer what we hold plus what the filesystem has
        // left, not the filesystem's total: other data (or other chunkservers sharing the
        // disk, as in tests) must not count as free space for placement.
        let capacity = inner.capacity.unwrap_or_else(|| {
            used.saturating_add(fs_available(&inner.data_dir).unwrap_or_else(|e| {
                tracing::warn!(dir = %inner.data_dir.display(), error = %e, "statvfs failed");
                0
            }))
        });
        NodeStatus {
            capacity_bytes: capacity,
            used_bytes: used,
            chunk_count: inner.chunk_count.load(Ordering::Relaxed),
            reads: stats.reads.load(Ordering::Relaxed),
            writes: stats.writes.load(Ordering::Relaxed),
            read_bytes: stats.read_bytes.load(Ordering::Relaxed),
            write_bytes: stats.write_bytes.load(Ordering::Relaxed),
            errors: stats.errors.load(Ordering::Relaxed),
            in_flight: stats.in_flight(),
            latency_us: stats.latency_us(),
            uptime_s: stats.uptime().as_secs(),
            draining: stats.draining(),
        }
    }

    async fn counted<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> FsResult<T> + Send + 'static,
    ) -> FsResult<T> {
        let result = self.blocking(work).await;
        if result.is_err() {
            self.inner.stats.count_error();
        }
        result
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> FsResult<T> + Send + 'static,
    ) -> FsResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| FsError::internal(format!("disk task failed: {e}")))?
    }

    #[cfg(test)]
    fn chunk_path(&self, chunk: ChunkId) -> PathBuf {
        self.inner.chunk_path(chunk)
    }

    /// Test hook: from now on O_DIRECT opens fail as on a filesystem that refuses them.
    #[cfg(test)]
    fn refuse_direct_io(&self) {
        self.inner.refuse_direct.store(true, Ordering::Relaxed);
    }

    /// Whether O_DIRECT is still in use (not off by config, not refused).
    #[cfg(test)]
    fn direct_io(&self) -> bool {
        self.inner.direct_io.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn slot_requests(&self) -> u64 {
        self.inner.slot_requests.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn shard_path(&self, chunk: ChunkId) -> PathBuf {
        self.chunks_dir.join(chunk.shard_dir())
    }

    fn chunk_path(&self, chunk: ChunkId) -> PathBuf {
        self.shard_path(chunk).join(chunk.file_name())
    }
}

fn out_of_range(first: u32, count: usize, blocks: u32) -> FsError {
    FsError::Invalid(format!(
        "blocks {first}..{} are outside a chunk of {blocks} blocks",
        u64::from(first) + count as u64
    ))
}

fn allocated(meta: &fs::Metadata) -> u64 {
    // st_blocks is in 512-byte units whatever the filesystem block size.
    meta.blocks() * 512
}

fn sub_saturating(counter: &AtomicU64, by: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(by))
    });
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
fn fs_available(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` points to writable memory
    // of the type statvfs fills.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialized the struct.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some 32-bit targets).
    #[allow(clippy::unnecessary_cast)]
    let (avail, frsize) = (st.f_bavail as u64, st.f_frsize as u64);
    Ok(avail.saturating_mul(frsize))
}

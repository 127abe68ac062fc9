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
//!
//! header  4096 B   magic "MOSCHNK1" | format u32 (= 3; 2 still read and written) | chunk id u64 | version u64
//!                  | blocks u32 | BLAKE3 of the 32 bytes before it [32]  (little-endian)
//! table   blocks × 2 × 64 B, padded to a 4 KiB multiple; entry (b, c) of copy c of block b
//!         at table + (2b + c) × 64:
//!                  stored length u32 | BLAKE3 of the stored bytes [32] | version u64 | zero
//!                  (version 0 = copy never written; length 0 at a version = cleared hole)
//! slots   2 × blocks × STRIDE B, copy c of block b at slots + (c × blocks + b) × STRIDE
//!         (copy-major, so a run of blocks whose current copy is the same is one contiguous
//!         read); STRIDE = MAX_SEALED_BLOCK rounded up to 4 KiB (68 KiB) in format 3,
//!         exactly MAX_SEALED_BLOCK in format 2
//! ```
//!
//! Format 3 aligns every slot to 4 KiB so that slot runs can be read and written with
//! O_DIRECT: straight between the disk and a reused aligned buffer, one request per run of
//! consecutive slots, never through the page cache (whose fresh pages cost more than the
//! disk on the machines this runs on). Headers and tables stay buffered (a second, plain
//! descriptor): they are small, hot and written in pieces smaller than a page. Format-2
//! files (unaligned slots) are still read and written, with buffered I/O; new files are
//! format 3. A filesystem that refuses O_DIRECT gets buffered I/O for everything.
//!
//! Two copies per block: a write never overwrites the newest copy at or below the chunk's
//! committed version (the `base` the write carries), only the other copy; a read asks for the
//! newest copy at or below the committed version. So a write that never reaches its quorum
//! and is never committed is never visible, and a copy a reader may need is never being
//! rewritten. The header version is the newest version written (only grows).
//!
//! Files are sparse: holes and unused copies cost no disk. Write order is slots, then table,
//! then header version, so a write torn by a crash leaves a table entry whose checksum does
//! not match its slot (detected on read, never served) or a version that is still the old one
//! (the master then treats the replica as stale). Disk I/O runs on tokio's blocking threads.

use crate::aligned::{AlignedBuf, BufPool, PAGE};
use crate::stats::{RequestGuard, Stats};
use bytes::Bytes;
use common::block::{MAX_SEALED_BLOCK, SEAL_OVERHEAD};
use common::rpc::MAX_BLOCKS_PER_REQUEST;
use common::types::{BlockData, HeldChunk, NodeStatus, ReadBlocks, WriteBlocks};
use common::{ChunkId, FsError, FsResult, Version};
use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// File magic; the trailing digit is the layout generation.
pub const MAGIC: &[u8; 8] = b"MOSCHNK1";
/// Header format number of new files, for changes within the same magic. 3: slots padded
/// to 4 KiB for O_DIRECT. 2: two copies per block with a version each, slots packed (still
/// read and written). 1 had one copy, overwritten in place; no deployment ever used it.
pub const FORMAT: u32 = 3;
/// The previous format: slots of exactly [`SLOT_LEN`] bytes, not aligned.
pub const FORMAT_PACKED: u32 = 2;
/// Copies kept of every block: the committed one and the one being written.
const COPIES: u64 = 2;
/// The header takes one 4 KiB page so that a header update never shares a page (or a
/// sector) with table entries.
pub const HEADER_LEN: u64 = 4096;
/// Bytes of header fields covered by the header checksum.
const HEADER_FIELDS: usize = 32;
/// Fields plus their checksum: the part of the header page that is ever written.
const HEADER_USED: usize = HEADER_FIELDS + 32;
/// One table entry. 64 B divides every sector size, so an entry is never torn across two.
pub const ENTRY_LEN: u64 = 64;
/// One block slot: room for the largest sealed block.
pub const SLOT_LEN: u64 = MAX_SEALED_BLOCK as u64;
/// Table and slots start on 4 KiB boundaries, matching the page size.
const ALIGN: u64 = PAGE as u64;
/// Distance between slots in format 3: a slot rounded up to whole pages, so that every
/// slot starts on a page and a run of slots is one aligned O_DIRECT request.
pub const SLOT_STRIDE: u64 = SLOT_LEN.next_multiple_of(ALIGN);
/// A slot run is cut where it would read (or write) more than this many unused bytes of
/// slot tail between two blocks (short blocks): at ~2 GB/s 32 KiB cost ~16 µs, about one
/// extra request's overhead, so longer gaps are cheaper skipped than transferred. Full
/// blocks leave a 4055-byte tail and never cut a run.
const MAX_RUN_GAP: u64 = 32 * 1024;
/// Aligned buffers kept for reuse: one per request a busy node has in flight on its disk
/// threads; each is at most one request's slots (64 × 68 KiB).
const POOL_BUFFERS: usize = 8;
/// The most blocks a chunk file may have: 2^16 blocks of 64 KiB = 4 GiB chunks, far above
/// the 64 MiB default. Bounds what a damaged header can make us compute or allocate.
pub const MAX_BLOCKS_PER_CHUNK: u32 = 1 << 16;
/// Open chunk files kept cached. Each is up to two descriptors (plain, and O_DIRECT for
/// format-3 slots); 256 covers the working set of many concurrent streams. The 512
/// descriptors stay below the usual soft limit of 1024 even so, and `start` raises the soft
/// limit to the hard one for the connections on top.
const OPEN_FILES: usize = 256;
/// Corruption reports waiting for the master. Corruption is rare; if this many are queued
/// the master is unreachable, and clients report bad replicas too, so dropping is safe.
const CORRUPTION_QUEUE: usize = 1024;

/// The fixed part of a chunk file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    chunk: ChunkId,
    version: Version,
    blocks: u32,
    /// [`FORMAT`] or [`FORMAT_PACKED`].
    format: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_USED] {
        let mut out = [0u8; HEADER_USED];
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&self.format.to_le_bytes());
        out[12..20].copy_from_slice(&self.chunk.0.to_le_bytes());
        out[20..28].copy_from_slice(&self.version.0.to_le_bytes());
        out[28..32].copy_from_slice(&self.blocks.to_le_bytes());
        let sum = blake3::hash(&out[..HEADER_FIELDS]);
        out[HEADER_FIELDS..].copy_from_slice(sum.as_bytes());
        out
    }

    /// Parses and checks a header read from the file that should hold `expect`.
    fn decode(raw: &[u8; HEADER_USED], expect: ChunkId) -> Result<Header, String> {
        if &raw[0..8] != MAGIC {
            return Err("not a chunk file (bad magic)".into());
        }
        if blake3::hash(&raw[..HEADER_FIELDS]).as_bytes() != &raw[HEADER_FIELDS..] {
            return Err("header checksum mismatch".into());
        }
        let format = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
        if format != FORMAT && format != FORMAT_PACKED {
            return Err(format!("unknown chunk file format {format}"));
        }
        let chunk = ChunkId(u64_at(raw, 12));
        let version = Version(u64_at(raw, 20));
        let blocks = u32::from_le_bytes([raw[28], raw[29], raw[30], raw[31]]);
        if chunk != expect {
            return Err(format!("header names chunk {chunk:?}"));
        }
        if blocks == 0 || blocks > MAX_BLOCKS_PER_CHUNK {
            return Err(format!("header claims {blocks} blocks"));
        }
        Ok(Header {
            chunk,
            version,
            blocks,
            format,
        })
    }

    /// A new chunk file's header, in the current format.
    fn new(chunk: ChunkId, version: Version, blocks: u32) -> Header {
        Header {
            chunk,
            version,
            blocks,
            format: FORMAT,
        }
    }

    /// Bytes from one slot to the next.
    fn stride(&self) -> u64 {
        if self.format == FORMAT_PACKED {
            SLOT_LEN
        } else {
            SLOT_STRIDE
        }
    }

    /// Offset of the entry of copy `copy` of `block`; both copies' entries are adjacent.
    fn entry_offset(&self, block: u32, copy: usize) -> u64 {
        HEADER_LEN + (u64::from(block) * COPIES + copy as u64) * ENTRY_LEN
    }

    fn slots_offset(&self) -> u64 {
        HEADER_LEN + (u64::from(self.blocks) * COPIES * ENTRY_LEN).next_multiple_of(ALIGN)
    }

    fn slot_offset(&self, block: u32, copy: usize) -> u64 {
        self.slots_offset()
            + (copy as u64 * u64::from(self.blocks) + u64::from(block)) * self.stride()
    }

    fn file_len(&self) -> u64 {
        self.slots_offset() + COPIES * u64::from(self.blocks) * self.stride()
    }
}

fn u64_at(raw: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[at..at + 8]);
    u64::from_le_bytes(b)
}

/// One block table entry: one copy of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Entry {
    /// Stored length; 0 = hole (cleared at `version`, or never written).
    len: u32,
    sum: [u8; 32],
    /// The write that stored this copy; 0 = never written.
    version: Version,
}

impl Entry {
    fn for_block(block: &[u8], version: Version) -> Entry {
        Entry {
            // Bounded by MAX_SEALED_BLOCK in validation.
            len: block.len() as u32,
            sum: common::block::checksum(block),
            version,
        }
    }

    fn encode(&self) -> [u8; ENTRY_LEN as usize] {
        let mut out = [0u8; ENTRY_LEN as usize];
        out[0..4].copy_from_slice(&self.len.to_le_bytes());
        out[4..36].copy_from_slice(&self.sum);
        out[36..44].copy_from_slice(&self.version.0.to_le_bytes());
        out
    }

    fn decode(raw: &[u8]) -> Result<Entry, String> {
        let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        if len != 0 && !(SEAL_OVERHEAD..=MAX_SEALED_BLOCK).contains(&(len as usize)) {
            return Err(format!("table entry claims a block of {len} bytes"));
        }
        let mut sum = [0u8; 32];
        sum.copy_from_slice(&raw[4..36]);
        let version = Version(u64_at(raw, 36));
        if version.0 == 0 && len != 0 {
            return Err("table entry holds a block but no version".into());
        }
        Ok(Entry { len, sum, version })
    }
}

/// The copy of a block a reader at committed version `max` gets: the newest written copy at
/// or below `max`. `None`: the block was never written at or below it (a hole).
fn pick_read(copies: &[Entry; 2], max: Version) -> Option<usize> {
    (0..2)
        .filter(|&c| copies[c].version.0 > 0 && copies[c].version <= max)
        .max_by_key(|&c| copies[c].version)
}

/// The copy a write on top of committed version `base` overwrites: never the one a reader
/// at `base` gets (`pick_read`), so that copy stays intact until the write commits. When no
/// copy is at or below `base`, both are uncommitted leftovers: the older one goes.
fn pick_write(copies: &[Entry; 2], base: Version) -> usize {
    match pick_read(copies, base) {
        Some(keep) => 1 - keep,
        None if copies[1].version < copies[0].version => 1,
        None => 0,
    }
}

/// A run of consecutive blocks whose slots are consecutive (same copy): one I/O request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    /// Index of the run's first block among the request's blocks.
    start: usize,
    /// One past the last.
    end: usize,
    copy: usize,
}

/// The copy and stored length of a block whose slot is read or written; `None`: no slot I/O.
type SlotIo = Option<(usize, u32)>;

/// Groups blocks into slot runs. `slots[k]` is the copy and stored length of block k, or
/// `None` when block k needs no slot I/O (a hole, or a block cleared by the write). A run
/// is cut where the copy changes, at a block without I/O, and after a block whose unused
/// slot tail exceeds [`MAX_RUN_GAP`], and after [`MAX_BLOCKS_PER_REQUEST`] blocks (the most
/// a pooled buffer holds).
fn plan_runs(slots: &[SlotIo], stride: u64) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut open = false;
    for (k, slot) in slots.iter().enumerate() {
        let Some((copy, _)) = *slot else {
            open = false;
            continue;
        };
        let extends =
            open && runs.last().is_some_and(|r| {
                r.copy == copy && r.end - r.start < MAX_BLOCKS_PER_REQUEST as usize
            }) && slots[k - 1].is_some_and(|(_, len)| {
                stride.saturating_sub(u64::from(len).next_multiple_of(ALIGN)) <= MAX_RUN_GAP
            });
        match runs.last_mut() {
            Some(run) if extends => run.end = k + 1,
            _ => runs.push(Run {
                start: k,
                end: k + 1,
                copy,
            }),
        }
        open = true;
    }
    runs
}

/// The files and layout a slot run is read from or written to.
#[derive(Clone, Copy)]
struct Slots<'a> {
    /// Plain descriptor: headers, tables, and slots when O_DIRECT is not in use.
    file: &'a File,
    /// O_DIRECT descriptor of the same file, for format-3 slots.
    direct: Option<&'a File>,
    header: &'a Header,
}

/// Reads the entries of both copies of `count` blocks from `first`.
fn read_entries(open: &OpenChunk, first: u32, count: u32) -> Result<Vec<[Entry; 2]>, Fault> {
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

struct OpenChunk {
    file: File,
    /// The same file opened with O_DIRECT, when slots are read and written that way.
    direct: Option<File>,
    header: Header,
    /// Disk bytes the file occupies (st_blocks), for incremental usage accounting.
    allocated: u64,
    /// Tells this open file from a later one of the same chunk (after delete + create).
    generation: u64,
}

impl OpenChunk {
    fn slots(&self) -> Slots<'_> {
        Slots {
            file: &self.file,
            direct: self.direct.as_ref(),
            header: &self.header,
        }
    }
}

enum ChunkState {
    /// Not looked at since the entry was cached.
    Unknown,
    /// No file on disk.
    Absent,
    Open(OpenChunk),
}

/// One chunk's cache entry. Its lock serializes writes (and delete, quarantine) of the
/// chunk against each other and against reads, so a read never sees a slot written but its
/// table entry not yet (which would look like corruption); reads share the lock.
struct ChunkEntry {
    state: RwLock<ChunkState>,
    last_use: AtomicU64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<ChunkId, Arc<ChunkEntry>>,
    tick: u64,
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
    fn shard_path(&self, chunk: ChunkId) -> PathBuf {
        self.chunks_dir.join(chunk.shard_dir())
    }

    fn chunk_path(&self, chunk: ChunkId) -> PathBuf {
        self.shard_path(chunk).join(chunk.file_name())
    }

    /// The cache entry of `chunk`, created if needed. Evicts the least recently used entry
    /// nobody holds, so there is never more than one entry (and lock) per chunk.
    fn entry(&self, chunk: ChunkId) -> Arc<ChunkEntry> {
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
    fn resolve(&self, chunk: ChunkId, state: &mut ChunkState) -> FsResult<()> {
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
    fn read_state<'a>(
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

    fn open_file(&self, chunk: ChunkId) -> Result<Option<OpenChunk>, Fault> {
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
    fn create_file(&self, chunk: ChunkId, blocks: u32) -> io::Result<OpenChunk> {
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

    fn create_tmp(
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

    fn write(&self, req: &WriteBlocks) -> FsResult<()> {
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

    fn read(&self, req: &ReadBlocks) -> FsResult<BlockData> {
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
    fn blocks_of(&self, chunk: ChunkId) -> FsResult<u32> {
        let entry = self.entry(chunk);
        let guard = self.read_state(chunk, &entry)?;
        match &*guard {
            ChunkState::Open(open) => Ok(open.header.blocks),
            ChunkState::Absent => Err(FsError::NotFound),
            ChunkState::Unknown => Err(FsError::internal("chunk state unresolved")),
        }
    }

    fn verify(&self, chunk: ChunkId) -> FsResult<u64> {
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
    fn verify_range(&self, chunk: ChunkId, first: u32, count: u32) -> FsResult<u64> {
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

    /// Starts a replacement replica of `chunk` at `version` in a temp file (see
    /// [`Installer`]).
    fn begin_install(self: &Arc<Self>, chunk: ChunkId, version: Version) -> FsResult<Installer> {
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

    /// Moves a damaged chunk file aside so its bytes are never served again, and queues a
    /// report for the master. Called with the chunk's write lock held.
    fn quarantine(&self, chunk: ChunkId, state: &mut ChunkState, why: &str) {
        let path = self.chunk_path(chunk);
        let alloc = match &*state {
            ChunkState::Open(open) => open.allocated,
            _ => fs::metadata(&path).map(|m| allocated(&m)).unwrap_or(0),
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let target = self
            .quarantine_dir
            .join(format!("{}.{stamp}", chunk.file_name()));
        match fs::rename(&path, &target) {
            Ok(()) => {
                tracing::error!(chunk = ?chunk, reason = why, moved_to = %target.display(),
                    "corrupt chunk replica quarantined");
                sub_saturating(&self.used_bytes, alloc);
                sub_saturating(&self.chunk_count, 1);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                // Still never served: the state below stays Unknown, so every access re-checks
                // the file and fails again.
                tracing::error!(chunk = ?chunk, reason = why, error = %e,
                    "corrupt chunk replica could not be quarantined");
                *state = ChunkState::Unknown;
                self.report(chunk, why);
                return;
            }
        }
        *state = ChunkState::Absent;
        self.report(chunk, why);
    }

    fn report(&self, chunk: ChunkId, why: &str) {
        let bad = BadReplica {
            chunk,
            reason: why.to_string(),
        };
        if self.bad_tx.try_send(bad).is_err() {
            tracing::warn!(chunk = ?chunk, "corruption report queue full or closed; report dropped");
        }
    }

    fn sync(&self, chunk: ChunkId) -> FsResult<()> {
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

    fn delete(&self, chunk: ChunkId) -> FsResult<()> {
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

    /// The file at `path` opened with O_DIRECT, for the slots of a format-3 file; `None`
    /// when direct I/O is off or the filesystem refuses it (then it is off from now on).
    fn open_direct(&self, path: &Path, header: &Header) -> io::Result<Option<File>> {
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
    fn refuse_direct_io(&self, e: &io::Error) {
        if self.direct_io.swap(false, Ordering::Relaxed) {
            tracing::warn!(dir = %self.data_dir.display(), error = %e,
                "the filesystem refuses O_DIRECT; block slots use buffered I/O");
        }
    }

    /// The O_DIRECT descriptor to use for `slots`, if any.
    fn direct_for<'a>(&self, slots: Slots<'a>) -> Option<&'a File> {
        slots
            .direct
            .filter(|_| self.direct_io.load(Ordering::Relaxed))
    }

    /// Writes `blocks` (each non-empty) into consecutive slots of `copy` from block
    /// `first`: one request from one pooled buffer. Each slot is written from its start;
    /// bytes past a block up to the next slot (or, for O_DIRECT, to the next page) are
    /// zeros, never a previous request's leftovers. The last slot is written no further
    /// than its page, so the next slot (another block's) is never touched.
    fn write_run(
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
    fn read_run(
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
    fn read_verified(
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
    fn verify_all_copies(&self, open: &OpenChunk, first: u32, count: u32) -> Result<u64, Fault> {
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

    fn list(&self) -> FsResult<Vec<HeldChunk>> {
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

fn out_of_range(first: u32, count: usize, blocks: u32) -> FsError {
    FsError::Invalid(format!(
        "blocks {first}..{} are outside a chunk of {blocks} blocks",
        u64::from(first) + count as u64
    ))
}

fn read_header(file: &File, chunk: ChunkId) -> Result<Header, Fault> {
    let mut raw = [0u8; HEADER_USED];
    file.read_exact_at(&mut raw, 0)?;
    Header::decode(&raw, chunk).map_err(Fault::Corrupt)
}

/// The chunk files under `chunks_dir` as (id, path). Names that are not exactly what
/// [`ChunkId::file_name`] would produce are skipped (and logged), except temp files.
fn chunk_files(chunks_dir: &Path) -> io::Result<Vec<(ChunkId, PathBuf)>> {
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
fn scan(chunks_dir: &Path) -> io::Result<(u64, u64)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use common::block::{BLOCK_SIZE, DataKey, KeyRing, seal};
    use proptest::prelude::*;

    const CHUNK_SIZE: u64 = 16 * BLOCK_SIZE as u64; // 16 blocks keeps test files small

    fn open_store(dir: &Path) -> (Store, tokio::sync::mpsc::Receiver<BadReplica>) {
        Store::open(StoreOptions {
            data_dir: dir.to_path_buf(),
            capacity_bytes: None,
            sync_every_write: false,
            chunk_size: Some(CHUNK_SIZE),
            direct_io: true,
        })
        .expect("open store")
    }

    fn keys() -> KeyRing {
        KeyRing::single(DataKey::new(0, [3u8; 32]))
    }

    fn sealed(chunk: ChunkId, index: u32, version: Version, len: usize) -> Bytes {
        let plain: Vec<u8> = (0..len).map(|i| (i as u32 ^ index) as u8).collect();
        seal(keys().current(), chunk, index, version, &plain)
    }

    /// A write at `version` on top of committed `version - 1`.
    fn write_req(chunk: ChunkId, version: u64, first: u32, blocks: Vec<Bytes>) -> WriteBlocks {
        WriteBlocks {
            chunk,
            version: Version(version),
            base: Version(version.saturating_sub(1)),
            first_block: first,
            blocks,
            sync: false,
        }
    }

    fn read_req(chunk: ChunkId, min_version: u64, first: u32, count: u32) -> ReadBlocks {
        ReadBlocks {
            chunk,
            min_version: Version(min_version),
            first_block: first,
            count,
        }
    }

    fn is_invalid<T: std::fmt::Debug>(r: FsResult<T>) -> bool {
        matches!(r, Err(FsError::Invalid(_)))
    }

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

    fn copy(version: u64) -> Entry {
        Entry {
            len: 10,
            sum: [0; 32],
            version: Version(version),
        }
    }

    #[test]
    fn copy_choice_table() {
        let none = Entry::default();
        // (copies, reader's committed version) -> copy served
        let reads = [
            ([none, none], 5, None),
            ([copy(3), none], 5, Some(0)),
            ([copy(3), copy(4)], 5, Some(1)),
            ([copy(3), copy(6)], 5, Some(0)),
            ([copy(7), copy(6)], 5, None),
            ([copy(5), copy(3)], 5, Some(0)),
        ];
        for (copies, max, want) in reads {
            assert_eq!(
                pick_read(&copies, Version(max)),
                want,
                "{copies:?} at {max}"
            );
        }
        // (copies, write's base) -> copy overwritten: never the one a reader at base gets.
        let writes = [
            ([none, none], 0, 0),
            ([copy(3), none], 3, 1),
            ([copy(3), copy(4)], 3, 1),
            ([copy(3), copy(4)], 4, 0),
            // Both newer than the base (failed writes): the older leftover goes.
            ([copy(7), copy(6)], 5, 1),
            ([copy(6), copy(7)], 5, 0),
            // A copied-in replica (copy 0 at 6) under a late write on top of 5.
            ([copy(6), none], 5, 1),
        ];
        for (copies, base, want) in writes {
            assert_eq!(
                pick_write(&copies, Version(base)),
                want,
                "{copies:?} on {base}"
            );
            if let Some(kept) = pick_read(&copies, Version(base)) {
                assert_ne!(kept, want);
            }
        }
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
            crate::store::chunk_files(&dir.path().join("chunks"))
                .expect("files")
                .len(),
            1
        );
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

    /// Flips one byte inside block `block`'s slot of chunk `c`.
    fn flip_slot_byte(store: &Store, c: ChunkId, block: u32) {
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

    #[tokio::test]
    async fn flipped_byte_is_quarantined_and_never_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, mut bad) = open_store(dir.path());
        let c = ChunkId(0x2201);
        let blocks = vec![sealed(c, 0, Version(1), 300), sealed(c, 1, Version(1), 300)];
        store
            .write_blocks(write_req(c, 1, 0, blocks))
            .await
            .expect("write");
        flip_slot_byte(&store, c, 1);

        let read = store.read_blocks(read_req(c, 1, 0, 2)).await;
        assert!(matches!(read, Err(FsError::Corrupt(_))), "{read:?}");
        assert!(!store.chunk_path(c).exists(), "file moved away");
        let quarantined: Vec<_> = fs::read_dir(dir.path().join("quarantine"))
            .expect("quarantine dir")
            .collect();
        assert_eq!(quarantined.len(), 1);
        let report = bad.try_recv().expect("corruption reported");
        assert_eq!(report.chunk, c);
        // Never served afterwards, not even the intact block.
        assert_eq!(
            store.read_blocks(read_req(c, 1, 0, 1)).await,
            Err(FsError::NotFound)
        );
        assert_eq!(store.status().chunk_count, 0);
        assert!(store.status().errors >= 1);
    }

    #[tokio::test]
    async fn verify_finds_corruption_anywhere_in_the_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, mut bad) = open_store(dir.path());
        let c = ChunkId(0x4401);
        store
            .write_blocks(write_req(c, 1, 14, vec![sealed(c, 14, Version(1), 200)]))
            .await
            .expect("write");
        store.verify_chunk(c).await.expect("clean chunk verifies");
        flip_slot_byte(&store, c, 14);
        assert!(matches!(
            store.verify_chunk(c).await,
            Err(FsError::Corrupt(_))
        ));
        assert_eq!(bad.try_recv().expect("reported").chunk, c);
        assert_eq!(store.verify_chunk(c).await, Err(FsError::NotFound));
    }

    #[tokio::test]
    async fn torn_write_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _bad) = open_store(dir.path());
        let c = ChunkId(0x33);
        store
            .write_blocks(write_req(c, 1, 3, vec![sealed(c, 3, Version(1), 4096)]))
            .await
            .expect("write");
        // A crash after the slot write but before the table update: new slot bytes, old entry.
        let file = OpenOptions::new()
            .write(true)
            .open(store.chunk_path(c))
            .expect("open chunk file");
        let header = Header::new(c, Version(1), 16);
        file.write_all_at(&sealed(c, 3, Version(2), 4096), header.slot_offset(3, 0))
            .expect("rewrite slot");
        drop(store); // a fresh process: nothing cached
        let (store, _bad) = open_store(dir.path());
        let read = store.read_blocks(read_req(c, 1, 3, 1)).await;
        assert!(matches!(read, Err(FsError::Corrupt(_))), "{read:?}");
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

    #[test]
    fn slot_run_table() {
        let full = MAX_SEALED_BLOCK as u32;
        let short = 1000u32; // leaves 64 KiB of unused tail in a format-3 slot
        let run = |start, end, copy| Run { start, end, copy };
        let cases: Vec<(Vec<SlotIo>, Vec<Run>)> = vec![
            (vec![], vec![]),
            (vec![None, None], vec![]),
            (vec![Some((0, full)); 4], vec![run(0, 4, 0)]),
            // A copy change or a block without I/O cuts the run.
            (
                vec![Some((0, full)), Some((1, full)), Some((1, full))],
                vec![run(0, 1, 0), run(1, 3, 1)],
            ),
            (
                vec![Some((0, full)), None, Some((0, full))],
                vec![run(0, 1, 0), run(2, 3, 0)],
            ),
            // A short block ends a run only when it is not the run's last.
            (
                vec![Some((0, full)), Some((0, short)), Some((0, full))],
                vec![run(0, 2, 0), run(2, 3, 0)],
            ),
            (
                vec![Some((0, full)), Some((0, full)), Some((0, short))],
                vec![run(0, 3, 0)],
            ),
            // A tail of up to MAX_RUN_GAP is read through.
            (
                vec![Some((1, full - 32 * 1024)), Some((1, full))],
                vec![run(0, 2, 1)],
            ),
        ];
        for (slots, want) in cases {
            assert_eq!(plan_runs(&slots, SLOT_STRIDE), want, "{slots:?}");
        }
        // A run never outgrows a pooled buffer.
        let long = vec![Some((0, full)); MAX_BLOCKS_PER_REQUEST as usize + 1];
        let max = MAX_BLOCKS_PER_REQUEST as usize;
        assert_eq!(
            plan_runs(&long, SLOT_STRIDE),
            vec![run(0, max, 0), run(max, max + 1, 0)]
        );
        // Packed (format 2) slots: full blocks run through too.
        assert_eq!(
            plan_runs(&[Some((0, full)); 3], SLOT_LEN),
            vec![run(0, 3, 0)]
        );
    }

    /// Whether the filesystem of `dir` takes O_DIRECT opens (not every tmpfs does).
    fn fs_takes_o_direct(dir: &Path) -> bool {
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

    fn raw_at(store: &Store, c: ChunkId, at: u64, len: usize) -> Vec<u8> {
        let file = File::open(store.chunk_path(c)).expect("open chunk file");
        let mut out = vec![0u8; len];
        file.read_exact_at(&mut out, at).expect("read raw");
        out
    }

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

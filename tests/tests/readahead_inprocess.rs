//! The client's readahead, in process: a real master (temp-dir SQLite) and in-memory
//! chunkservers (`MemDataPlane`). A sequential reader gets the same bytes as without it
//! across block and chunk boundaries, this mount's writes and another mount's commits are
//! never hidden by blocks fetched ahead, and the window stays within its memory bound.

use common::InodeId;
use common::block::{DataKey, KeyRing};
use common::types::Caller;
use fs_client::core::{READAHEAD_BUDGET_BYTES, READAHEAD_FILE_MAX_BYTES};
use fs_client::data::{DataPlane, MemDataPlane};
use fs_client::meta::MetaConn;
use fs_client::{ClientCore, CoreConfig};
use mosaic_tests::mem_nodes::{MemCluster, start_mem_cluster};
use std::sync::Arc;
use std::time::Duration;

/// Small chunks so that the window spans many chunk boundaries.
const CHUNK: u64 = 256 * 1024;
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_WINDOW: Duration = Duration::from_secs(5);
/// What the kernel sends per read request; deliberately not a multiple of the block size.
const PIECE: usize = 100_000;

struct Rig {
    keys: KeyRing,
    plane: Arc<dyn DataPlane>,
    cluster: MemCluster,
}

async fn rig() -> Rig {
    let keys = KeyRing::single(DataKey::random(0));
    let cluster = start_mem_cluster(&keys, CHUNK, 3, RPC_TIMEOUT, |config| {
        config.write_quorum = 2;
        config.read_quorum = 2;
    })
    .await;
    let plane: Arc<dyn DataPlane> = Arc::new(Arc::new(MemDataPlane::default()));
    Rig {
        keys,
        plane,
        cluster,
    }
}

impl Rig {
    /// A mount of the cluster: its own client core on the shared in-memory chunkservers.
    async fn mount(&self, name: &str) -> Arc<ClientCore> {
        ClientCore::connect(
            Arc::new(MetaConn::new(
                self.cluster.addr.clone(),
                self.cluster.client_tls.clone(),
                RPC_TIMEOUT,
                RETRY_WINDOW,
            )),
            self.plane.clone(),
            self.keys.clone(),
            CoreConfig {
                rpc_timeout: RPC_TIMEOUT,
                retry_window: RETRY_WINDOW,
                flush_threshold: 1024 * 1024,
                write_timeout: RPC_TIMEOUT,
                hedge_delay: Duration::from_millis(20),
            },
            name.into(),
        )
        .await
        .expect("connect core")
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// A committed file of `data`, closed; returns its inode.
async fn committed_file(core: &Arc<ClientCore>, name: &str, data: &[u8]) -> InodeId {
    let opened = core
        .create(
            InodeId::ROOT,
            name.as_bytes(),
            0o644,
            0o022,
            libc::O_RDWR,
            Caller::root(),
        )
        .await
        .expect("create");
    for (i, piece) in data.chunks(128 * 1024).enumerate() {
        core.write(opened.fh, (i * 128 * 1024) as u64, piece, 0)
            .await
            .expect("write");
    }
    core.fsync(opened.fh).await.expect("fsync");
    core.release(opened.fh).await.expect("release");
    opened.attr.ino
}

/// Reads `[from, to)` sequentially in kernel-sized pieces, checking each against `want`;
/// returns the most readahead memory seen held after a read.
async fn read_seq(core: &Arc<ClientCore>, fh: u64, from: usize, to: usize, want: &[u8]) -> u64 {
    let mut held = 0;
    let mut at = from;
    while at < to {
        let n = PIECE.min(to - at);
        let got = core.read(fh, at as u64, n as u32).await.expect("read");
        assert!(
            got == want[at..at + n],
            "bytes at {at}..{} differ from what was written",
            at + n
        );
        held = held.max(core.readahead_bytes());
        at += n;
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_match_across_boundaries_within_the_memory_bound() {
    let rig = rig().await;
    let core = rig.mount("reader").await;
    // Longer than the window, with a ragged end inside a block.
    let data = pattern(48 * CHUNK as usize + 12_345, 5);
    let ino = committed_file(&core, "f", &data).await;
    let fh = core.open(ino, libc::O_RDONLY).await.expect("open").fh;
    let held = read_seq(&core, fh, 0, data.len(), &data).await;
    assert!(held > 0, "a sequential reader gets a readahead window");
    assert!(
        held <= READAHEAD_FILE_MAX_BYTES.min(READAHEAD_BUDGET_BYTES),
        "window held {held} bytes, bound {READAHEAD_FILE_MAX_BYTES}"
    );
    // Past the end: nothing, and no fetch beyond the file.
    let got = core.read(fh, data.len() as u64, 4096).await.expect("read");
    assert!(got.is_empty());

    // A random access drops the window at once; random reads stay exact.
    for offset in [7 * CHUNK + 3, 40 * CHUNK - 100, 1, 20 * CHUNK + 65_535] {
        let got = core.read(fh, offset, 4096).await.expect("read");
        assert_eq!(got, data[offset as usize..offset as usize + 4096]);
        assert_eq!(core.readahead_bytes(), 0, "random reads hold no readahead");
    }
    // Sequential again from the middle: the window comes back, bytes stay exact.
    let mid = 10 * CHUNK as usize + 777;
    assert!(read_seq(&core, fh, mid, data.len(), &data).await > 0);
    core.release(fh).await.expect("release");
    assert_eq!(
        core.readahead_bytes(),
        0,
        "closing the file frees its window"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_mounts_writes_show_through_blocks_fetched_ahead() {
    let rig = rig().await;
    let core = rig.mount("rw").await;
    let mut data = pattern(16 * CHUNK as usize, 9);
    let ino = committed_file(&core, "f", &data).await;
    let fh = core.open(ino, libc::O_RDWR).await.expect("open").fh;
    // The window now holds blocks well past 1 MiB at the committed version.
    assert!(read_seq(&core, fh, 0, 1 << 20, &data).await > 0);

    // Unflushed bytes over prefetched blocks, across a block boundary.
    let at = 2 * (1 << 20) + 60_000;
    let patch = pattern(70_000, 200);
    core.write(fh, at as u64, &patch, 0).await.expect("write");
    data[at..at + patch.len()].copy_from_slice(&patch);
    read_seq(&core, fh, 1 << 20, 3 << 20, &data).await;

    // Committed: the prefetched blocks of the old version must not come back.
    let at2 = (3 << 20) + 1000;
    let patch2 = pattern(200_000, 77);
    core.write(fh, at2 as u64, &patch2, 0).await.expect("write");
    data[at2..at2 + patch2.len()].copy_from_slice(&patch2);
    core.fsync(fh).await.expect("fsync");
    read_seq(&core, fh, 3 << 20, data.len(), &data).await;
    core.release(fh).await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_mounts_commit_is_seen_after_reopen_despite_the_window() {
    let rig = rig().await;
    let reader = rig.mount("reader").await;
    let writer = rig.mount("writer").await;
    let mut data = pattern(16 * CHUNK as usize, 3);
    let ino = committed_file(&writer, "f", &data).await;
    let first = reader.open(ino, libc::O_RDONLY).await.expect("open").fh;
    assert!(read_seq(&reader, first, 0, 1 << 20, &data).await > 0);

    // The other mount rewrites bytes the reader has fetched ahead, and commits.
    let at = (2 << 20) + 12_345;
    let patch = pattern(150_000, 111);
    let wfh = writer.open(ino, libc::O_RDWR).await.expect("open").fh;
    writer
        .write(wfh, at as u64, &patch, 0)
        .await
        .expect("write");
    writer.release(wfh).await.expect("release");
    data[at..at + patch.len()].copy_from_slice(&patch);

    // Close-to-open: a new open sees the commit, though the window (shared by the file's
    // handles) still holds the old blocks; the read continues sequentially.
    let second = reader.open(ino, libc::O_RDONLY).await.expect("reopen").fh;
    read_seq(&reader, second, 1 << 20, data.len(), &data).await;
    reader.release(second).await.expect("release");
    reader.release(first).await.expect("release");
    assert_eq!(reader.readahead_bytes(), 0);
}

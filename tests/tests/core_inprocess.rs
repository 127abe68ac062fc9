//! The client core without a kernel: a real master in this process (temp-dir SQLite) and
//! chunkservers in memory (`MemDataPlane`), so the data path — write-behind, grants, sealing,
//! read-modify-write, truncate, holes, quorum failures — is tested fast and exactly.

use common::block::{BLOCK_SIZE, DataKey, KeyRing};
use common::types::{Caller, FileKind, NewNode, SetAttr};
use common::{FsError, InodeId};
use fs_client::data::{DataPlane, MemDataPlane};
use fs_client::meta::MetaConn;
use fs_client::{ClientCore, CoreConfig};
use mosaic_tests::mem_nodes::{MemCluster, start_mem_cluster};
use std::sync::Arc;
use std::time::Duration;

/// Small chunks so that a few hundred KiB cross chunk boundaries.
const CHUNK: u64 = 256 * 1024;
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

struct Rig {
    core: Arc<ClientCore>,
    data: Arc<MemDataPlane>,
    cluster: MemCluster,
}

/// A master with `n` in-memory chunkservers and the given write/read quorums.
async fn rig(n: u32, w: u32, r: u32, retry_window: Duration) -> Rig {
    let keys = KeyRing::single(DataKey::random(0));
    let cluster = start_mem_cluster(&keys, CHUNK, n, RPC_TIMEOUT, |config| {
        config.write_quorum = w;
        config.read_quorum = r;
        // Its per-method RPC counters tell how many master calls an operation costs.
        config.shared.metrics_addr = Some(([127, 0, 0, 1], 0).into());
    })
    .await;
    let (addr, client_tls) = (cluster.addr.clone(), cluster.client_tls.clone());
    let data = Arc::new(MemDataPlane::default());
    let plane: Arc<dyn DataPlane> = Arc::new(data.clone());
    let core = ClientCore::connect(
        Arc::new(MetaConn::new(addr, client_tls, RPC_TIMEOUT, retry_window)),
        plane,
        keys,
        CoreConfig {
            rpc_timeout: RPC_TIMEOUT,
            retry_window,
            flush_threshold: 256 * 1024,
            write_timeout: RPC_TIMEOUT,
            hedge_delay: Duration::from_millis(20),
        },
        "core test".into(),
    )
    .await
    .expect("connect core");
    Rig {
        core,
        data,
        cluster,
    }
}

fn file_node() -> NewNode {
    NewNode {
        kind: FileKind::File,
        perm: 0o644,
        umask: 0o022,
        rdev: 0,
        symlink_target: None,
        caller: Caller::root(),
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

async fn write_all(core: &Arc<ClientCore>, fh: u64, offset: u64, data: &[u8]) {
    // Writes as the kernel sends them: at most 128 KiB per request.
    for (i, piece) in data.chunks(128 * 1024).enumerate() {
        let n = core
            .write(fh, offset + (i * 128 * 1024) as u64, piece, 0)
            .await
            .expect("write");
        assert_eq!(n as usize, piece.len());
    }
}

async fn read_all(core: &Arc<ClientCore>, fh: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < len {
        let want = (len - out.len()).min(1 << 20) as u32;
        let got = core
            .read(fh, offset + out.len() as u64, want)
            .await
            .expect("read");
        if got.is_empty() {
            break;
        }
        out.extend_from_slice(&got);
    }
    out
}

async fn create(core: &Arc<ClientCore>, name: &str) -> (InodeId, u64) {
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
    (opened.attr.ino, opened.fh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_round_trips_across_chunks_and_stays_ciphertext() {
    let rig = rig(3, 3, 1, Duration::from_secs(5)).await;
    let core = &rig.core;
    let data = pattern(3 * CHUNK as usize + 12345, 7);
    let (ino, fh) = create(core, "big").await;
    write_all(core, fh, 0, &data).await;
    // Read back before any flush: served from this mount's buffer.
    assert_eq!(read_all(core, fh, 0, data.len()).await, data);
    core.fsync(fh).await.expect("fsync");
    core.release(fh).await.expect("release");

    let attr = core.getattr(ino).await.expect("getattr");
    assert_eq!(attr.size, data.len() as u64);
    let fh = core.open(ino, libc::O_RDONLY).await.expect("open").fh;
    assert_eq!(read_all(core, fh, 0, data.len()).await, data);
    // Unaligned reads across block and chunk boundaries.
    for (offset, len) in [(CHUNK - 10, 20), (BLOCK_SIZE as u64 - 1, 3), (5, 200_000)] {
        let got = core.read(fh, offset, len as u32).await.expect("read");
        assert_eq!(got, data[offset as usize..offset as usize + len]);
    }
    // Reading past the end returns nothing.
    assert!(
        core.read(fh, data.len() as u64 + 1, 10)
            .await
            .expect("read")
            .is_empty()
    );
    core.release(fh).await.expect("release");

    let needle = &data[..32];
    for block in rig.data.all_blocks() {
        assert!(
            !block.windows(needle.len()).any(|w| w == needle),
            "plaintext found in a stored block"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_block_overwrites_holes_and_truncate() {
    let rig = rig(3, 3, 1, Duration::from_secs(5)).await;
    let core = &rig.core;
    let (ino, fh) = create(core, "sparse").await;
    let mut model = vec![0u8; 0];
    let apply = |model: &mut Vec<u8>, offset: usize, bytes: &[u8]| {
        if model.len() < offset + bytes.len() {
            model.resize(offset + bytes.len(), 0);
        }
        model[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    // A write far from the start leaves a hole.
    let far = pattern(1000, 1);
    write_all(core, fh, 2 * CHUNK + 100, &far).await;
    apply(&mut model, 2 * CHUNK as usize + 100, &far);
    core.flush(fh).await.expect("flush");
    // Small overwrites inside committed blocks: read-modify-write.
    let small = pattern(10, 2);
    write_all(core, fh, 2 * CHUNK + 500, &small).await;
    apply(&mut model, 2 * CHUNK as usize + 500, &small);
    core.flush(fh).await.expect("flush");
    assert_eq!(read_all(core, fh, 0, model.len()).await, model);

    // Truncate down into the middle of a block, then write past a gap: the old bytes in
    // the gap must read as zeros, not come back.
    let full = pattern(3 * CHUNK as usize, 3);
    write_all(core, fh, 0, &full).await;
    core.flush(fh).await.expect("flush");
    core.setattr(
        ino,
        SetAttr {
            size: Some(1000),
            ..SetAttr::default()
        },
        Caller::root(),
    )
    .await
    .expect("truncate");
    model = full[..1000].to_vec();
    let tail = pattern(5, 4);
    write_all(core, fh, 200_000, &tail).await;
    apply(&mut model, 200_000, &tail);
    core.flush(fh).await.expect("flush");
    core.release(fh).await.expect("release");
    let fh = core.open(ino, libc::O_RDONLY).await.expect("reopen").fh;
    let got = read_all(core, fh, 0, model.len()).await;
    assert_eq!(got.len(), model.len());
    assert!(got == model, "stale bytes after truncate and extend");

    // Truncate up: zeros.
    core.setattr(
        ino,
        SetAttr {
            size: Some(300_000),
            ..SetAttr::default()
        },
        Caller::root(),
    )
    .await
    .expect("extend");
    model.resize(300_000, 0);
    assert_eq!(read_all(core, fh, 0, model.len()).await, model);
    core.release(fh).await.expect("release");
}

/// Calls of master method `method` so far, from the master's metrics endpoint.
async fn master_calls(rig: &Rig, method: &str) -> u64 {
    let addr = rig.cluster.master.metrics_addr.expect("metrics endpoint");
    let text = common::metrics::scrape(addr, RPC_TIMEOUT)
        .await
        .expect("scrape the master");
    let method = format!("MasterFs.{method}");
    common::metrics::sample(
        &text,
        "mosaic_master_rpc_request_duration_seconds_count",
        &[("method", &method)],
    )
    .unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_and_closing_an_empty_file_costs_two_master_calls() {
    let rig = rig(3, 3, 1, Duration::from_secs(5)).await;
    let core = &rig.core;
    let methods = [
        "create",
        "open",
        "create_open",
        "release",
        "getattr",
        "commit_write",
    ];
    let mut before = Vec::new();
    for m in methods {
        before.push(master_calls(&rig, m).await);
    }
    let (ino, fh) = create(core, "empty").await;
    core.flush(fh).await.expect("flush");
    core.release(fh).await.expect("release");
    let mut calls = Vec::new();
    for (m, was) in methods.iter().zip(&before) {
        calls.push((*m, master_calls(&rig, m).await - was));
    }
    assert_eq!(
        calls,
        [
            ("create", 0),
            ("open", 0),
            ("create_open", 1),
            ("release", 1),
            ("getattr", 0),
            ("commit_write", 0)
        ],
        "O_CREAT is one call, close of a clean file one more"
    );
    // The one call both created the file and held it open: an unlink keeps it until the
    // release, and the release frees it.
    let (_, fh) = create(core, "held").await;
    let held = core.lookup(InodeId::ROOT, b"held").await.expect("lookup");
    core.unlink(InodeId::ROOT, b"held").await.expect("unlink");
    assert_eq!(core.getattr(held.ino).await.expect("still open").nlink, 0);
    core.release(fh).await.expect("release");
    assert_eq!(core.getattr(held.ino).await, Err(FsError::NotFound));
    assert!(core.getattr(ino).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinked_open_file_stays_readable_and_writable() {
    let rig = rig(3, 3, 1, Duration::from_secs(5)).await;
    let core = &rig.core;
    let data = pattern(100_000, 9);
    let (ino, fh) = create(core, "doomed").await;
    write_all(core, fh, 0, &data).await;
    core.flush(fh).await.expect("flush");
    core.unlink(InodeId::ROOT, b"doomed").await.expect("unlink");
    assert_eq!(
        core.lookup(InodeId::ROOT, b"doomed").await,
        Err(FsError::NotFound)
    );
    assert_eq!(read_all(core, fh, 0, data.len()).await, data);
    write_all(core, fh, data.len() as u64, b"more").await;
    core.fsync(fh).await.expect("fsync after unlink");
    assert_eq!(
        core.getattr(ino).await.expect("getattr").size,
        data.len() as u64 + 4
    );
    core.release(fh).await.expect("release");
    assert_eq!(core.getattr(ino).await, Err(FsError::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_down_is_tolerated_with_w2_but_two_fail_cleanly() {
    let rig = rig(3, 2, 2, Duration::from_millis(1500)).await;
    let core = &rig.core;
    let data = pattern(CHUNK as usize + 777, 5);
    rig.data.down.lock().push("mem-1".into());
    let (ino, fh) = create(core, "quorum").await;
    write_all(core, fh, 0, &data).await;
    core.fsync(fh).await.expect("fsync with one replica down");
    assert_eq!(read_all(core, fh, 0, data.len()).await, data);
    core.release(fh).await.expect("release");

    // With two of three down, a write cannot reach W=2: EIO after the retry window.
    rig.data.down.lock().push("mem-2".into());
    let fh = core.open(ino, libc::O_RDWR).await.expect("open").fh;
    write_all(core, fh, 0, b"new bytes").await;
    let err = core.fsync(fh).await.expect_err("fsync must fail");
    assert_eq!(err.errno(), libc::EIO, "{err:?}");
    // The nodes come back: the buffered bytes are kept and land on the next flush.
    rig.data.down.lock().clear();
    core.fsync(fh).await.expect("fsync after recovery");
    let mut expect = data.clone();
    expect[..9].copy_from_slice(b"new bytes");
    assert_eq!(read_all(core, fh, 0, expect.len()).await, expect);
    core.release(fh).await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_errors_cross_the_wire_typed() {
    let rig = rig(3, 3, 1, Duration::from_secs(5)).await;
    let core = &rig.core;
    core.mknod(
        InodeId::ROOT,
        b"d",
        NewNode {
            kind: FileKind::Dir,
            perm: 0o755,
            ..file_node()
        },
    )
    .await
    .expect("mkdir");
    assert_eq!(
        core.mknod(InodeId::ROOT, b"d", file_node()).await,
        Err(FsError::Exists)
    );
    assert_eq!(
        core.lookup(InodeId::ROOT, &[b'x'; 256]).await,
        Err(FsError::NameTooLong)
    );
    assert_eq!(core.unlink(InodeId::ROOT, b"d").await, Err(FsError::IsDir));
    assert_eq!(core.read(999, 0, 10).await, Err(FsError::BadHandle));
}

/// An fsync whose chunk write is one request asks the replicas to fdatasync with the write
/// instead of in a separate `sync_chunks` round (one round trip fewer per small file); an
/// fsync after earlier unsynced commits still syncs their replicas. Both read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_of_a_small_write_syncs_with_the_write() {
    use std::sync::atomic::Ordering;
    let rig = rig(3, 2, 2, Duration::from_secs(5)).await;
    let core = &rig.core;
    let (_, fh) = create(core, "small").await;
    let small = pattern(64 * 1024, 3);
    write_all(core, fh, 0, &small).await;
    core.fsync(fh).await.expect("fsync");
    assert!(
        rig.data.synced_writes.load(Ordering::Relaxed) >= 2,
        "the write quorum fdatasynced with the write"
    );
    assert_eq!(
        rig.data.sync_calls.load(Ordering::Relaxed),
        0,
        "no separate sync round for a one-request write"
    );
    assert_eq!(read_all(core, fh, 0, small.len()).await, small);

    // Past the flush threshold, background flushes commit unsynced writes first: the
    // fsync must make those durable too.
    let (_, big_fh) = create(core, "big").await;
    let big = pattern(4 * CHUNK as usize, 9);
    write_all(core, big_fh, 0, &big).await;
    core.fsync(big_fh).await.expect("fsync");
    assert!(
        rig.data.sync_calls.load(Ordering::Relaxed) > 0,
        "earlier unsynced commits are synced by sync_chunks"
    );
    assert_eq!(read_all(core, big_fh, 0, big.len()).await, big);
    core.release(fh).await.expect("release");
    core.release(big_fh).await.expect("release");
}

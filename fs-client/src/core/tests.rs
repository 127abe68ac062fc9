//! The client core against the in-memory master (`MemMeta`) and in-memory chunkservers
//! (`MemDataPlane`): no process, socket or kernel.

use super::*;
use crate::data::{DataPlane, MemDataPlane};
use crate::meta::MemMeta;
use common::block::{BLOCK_SIZE, DataKey};
use common::types::{Caller, LockKind, LockRequest, NodeAddr};
use common::{InodeId, NodeId};

/// Small chunks so that a few hundred KiB cross chunk boundaries.
const CHUNK: u64 = 256 * 1024;

struct Rig {
    meta: Arc<MemMeta>,
    data: Arc<MemDataPlane>,
    keys: KeyRing,
}

impl Rig {
    /// `nodes` in-memory chunkservers, write quorum `w`.
    fn new(nodes: u64, w: u32) -> Rig {
        let keys = KeyRing::single(DataKey::random(0));
        let addrs = (0..nodes)
            .map(|i| NodeAddr {
                node: NodeId(i + 1),
                addr: format!("mem-{i}"),
                load: 0,
            })
            .collect();
        Rig {
            meta: Arc::new(MemMeta::new(&keys, CHUNK, addrs, w)),
            data: Arc::new(MemDataPlane::default()),
            keys,
        }
    }

    /// A mount: its own client core (and session) on the shared master and nodes.
    async fn mount(&self) -> Arc<ClientCore> {
        let plane: Arc<dyn DataPlane> = Arc::new(self.data.clone());
        let config = CoreConfig {
            rpc_timeout: Duration::from_secs(5),
            retry_window: Duration::from_millis(300),
            flush_threshold: 256 * 1024,
            write_timeout: Duration::from_secs(5),
            hedge_delay: Duration::from_millis(20),
        };
        ClientCore::connect(
            self.meta.clone(),
            plane,
            self.keys.clone(),
            config,
            "test".into(),
        )
        .await
        .expect("connect")
    }
}

async fn create(core: &ClientCore, name: &str) -> (InodeId, u64) {
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

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn lock(owner: u64, kind: LockKind) -> LockRequest {
    LockRequest {
        owner,
        kind,
        start: 0,
        end: 99,
        pid: 0,
    }
}

#[tokio::test]
async fn listing_puts_dots_first_and_resumes_at_every_offset() {
    let rig = Rig::new(1, 1);
    let core = rig.mount().await;
    for i in 0..5 {
        create(&core, &format!("f{i}")).await;
    }
    let all = core.list_dir(InodeId::ROOT, 0, false).await.expect("list");
    let names: Vec<&[u8]> = all.iter().map(|l| l.name.as_slice()).collect();
    assert_eq!(names, [&b"."[..], b"..", b"f0", b"f1", b"f2", b"f3", b"f4"]);
    assert_eq!((all[0].offset, all[1].offset), (1, 2));
    assert!(all.windows(2).all(|w| w[0].offset < w[1].offset));
    // The kernel resumes after the last entry it took: whatever that was, the rest follows.
    for (i, taken) in all.iter().enumerate() {
        let rest = core
            .list_dir(InodeId::ROOT, taken.offset, false)
            .await
            .expect("list");
        assert_eq!(
            rest,
            all[i + 1..].to_vec(),
            "resumed after {:?}",
            taken.name
        );
    }
    // With attributes: the dots carry the directory's, the entries their own.
    let plus = core.list_dir(InodeId::ROOT, 0, true).await.expect("list");
    assert_eq!(plus[0].attr.as_ref().map(|a| a.ino), Some(InodeId::ROOT));
    assert_eq!(plus[1].attr.as_ref().map(|a| a.ino), Some(InodeId::ROOT));
    assert!(
        plus[2..]
            .iter()
            .all(|l| l.attr.as_ref().map(|a| a.ino) == Some(l.ino))
    );
    // From past the dots, no getattr of the directory is needed.
    let getattrs = rig.meta.calls("getattr");
    core.list_dir(InodeId::ROOT, 2, true).await.expect("list");
    assert_eq!(rig.meta.calls("getattr"), getattrs);
}

#[tokio::test]
async fn statfs_counts_blocks_of_the_masters_bytes() {
    let rig = Rig::new(1, 1);
    let core = rig.mount().await;
    rig.meta.set_space(1 << 30, 3 << 28);
    create(&core, "a").await;
    let stats = core.fs_stats().await.expect("statfs");
    let block = BLOCK_SIZE as u64;
    assert_eq!(stats.bsize as u64, block);
    assert_eq!(stats.blocks, (1 << 30) / block);
    assert_eq!(
        (stats.bfree, stats.bavail),
        ((3 << 28) / block, (3 << 28) / block)
    );
    // Two inodes (the root and "a") in use, and the free ones.
    assert_eq!(stats.files - stats.ffree, 2);
}

#[tokio::test]
async fn close_drops_the_fcntl_locks_of_its_owner_only() {
    let rig = Rig::new(1, 1);
    let (a, b) = (rig.mount().await, rig.mount().await);
    let (ino, fh) = create(&a, "locked").await;
    a.setlk(fh, ino, lock(7, LockKind::Write), false)
        .await
        .expect("lock");
    // Another mount sees the lock and cannot take it.
    assert!(
        b.getlk(ino, lock(1, LockKind::Read))
            .await
            .expect("getlk")
            .is_some()
    );
    let fh_b = b.open(ino, libc::O_RDWR).await.expect("open").fh;
    assert!(matches!(
        b.setlk(fh_b, ino, lock(1, LockKind::Read), false).await,
        Err(FsError::WouldBlock)
    ));
    // Closing through an owner that placed no lock costs no master call and drops nothing.
    let setlk_calls = rig.meta.calls("setlk");
    a.close(fh, ino, 8).await.expect("close");
    assert_eq!(rig.meta.calls("setlk"), setlk_calls);
    assert_eq!(rig.meta.locks_held(ino), 1);
    // Closing through the owner drops its lock.
    a.close(fh, ino, 7).await.expect("close");
    assert_eq!(rig.meta.locks_held(ino), 0);
    assert!(
        b.getlk(ino, lock(1, LockKind::Read))
            .await
            .expect("getlk")
            .is_none()
    );
    b.setlk(fh_b, ino, lock(1, LockKind::Read), false)
        .await
        .expect("lock after close");
}

#[tokio::test]
async fn release_drops_a_flock_only_when_the_kernel_names_its_owner() {
    let rig = Rig::new(1, 1);
    let core = rig.mount().await;
    let (ino, first) = create(&core, "flocked").await;
    let second = core.open(ino, libc::O_RDONLY).await.expect("open").fh;
    core.setlk(second, ino, lock(5, LockKind::Write), false)
        .await
        .expect("flock");
    core.release_handle(first, ino, None)
        .await
        .expect("release");
    assert_eq!(rig.meta.locks_held(ino), 1);
    core.release_handle(second, ino, Some(5))
        .await
        .expect("release");
    assert_eq!(rig.meta.locks_held(ino), 0);
    // The handle is gone.
    assert!(matches!(core.flush(second).await, Err(FsError::BadHandle)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_round_trips_through_in_memory_replicas_and_another_mount() {
    let rig = Rig::new(3, 2);
    let (a, b) = (rig.mount().await, rig.mount().await);
    let (ino, fh) = create(&a, "data").await;
    // Unaligned, across three chunks, written as the kernel would (128 KiB requests).
    let data = pattern(700 * 1024 + 123, 3);
    let offset = 1000;
    for (i, piece) in data.chunks(128 * 1024).enumerate() {
        let at = offset + (i * 128 * 1024) as u64;
        a.write(fh, at, piece, 0).await.expect("write");
    }
    // Unflushed bytes are this mount's: its reads see them.
    let local = a.read(fh, offset, data.len() as u32).await.expect("read");
    assert_eq!(local, data);
    a.fsync(fh).await.expect("fsync");
    assert!(rig.meta.calls("commit_write") >= 1);
    // Another mount that opens the file after the fsync reads it back from the replicas.
    let other = b.open(ino, libc::O_RDONLY).await.expect("open");
    assert_eq!(other.attr.size, offset + data.len() as u64);
    let read = b
        .read(other.fh, 0, other.attr.size as u32)
        .await
        .expect("read");
    assert_eq!(
        &read[..offset as usize],
        vec![0u8; offset as usize].as_slice()
    );
    assert_eq!(&read[offset as usize..], data.as_slice());
    // What the replicas hold is ciphertext.
    let needle = &data[5000..5064];
    assert!(
        rig.data
            .all_blocks()
            .iter()
            .all(|b| !b.windows(needle.len()).any(|w| w == needle))
    );
    a.release_handle(fh, ino, None).await.expect("release");
    b.release_handle(other.fh, ino, None)
        .await
        .expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_short_of_its_quorum_fails_and_keeps_the_bytes_for_the_next() {
    let rig = Rig::new(3, 2);
    let core = rig.mount().await;
    let (ino, fh) = create(&core, "quorum").await;
    let data = pattern(100 * 1024, 9);
    core.write(fh, 0, &data, 0).await.expect("write");
    *rig.data.down.lock() = vec!["mem-0".into(), "mem-1".into()];
    let failed = core.fsync(fh).await;
    assert!(matches!(failed, Err(FsError::Unavailable(_))), "{failed:?}");
    assert_eq!(rig.meta.calls("commit_write"), 0);
    // The bytes stayed buffered: once the replicas are back, the next fsync lands them.
    rig.data.down.lock().clear();
    core.fsync(fh).await.expect("fsync");
    let reader = rig.mount().await;
    let opened = reader.open(ino, libc::O_RDONLY).await.expect("open");
    let read = reader
        .read(opened.fh, 0, data.len() as u32)
        .await
        .expect("read");
    assert_eq!(read, data);
}

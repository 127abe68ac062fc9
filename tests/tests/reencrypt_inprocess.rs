//! The re-encryption pass next to a writer whose grant is outstanding, in process: a real
//! master (temp-dir SQLite) and in-memory chunkservers (`MemDataPlane`). The writer's failed
//! flush leaves its blocks on one replica under a grant older than the pass's; the pass must
//! wait that grant out and reseal only the committed bytes (docs/SECURITY.md, "Why it cannot
//! put stale data over a newer write").

use common::block::{DataKey, KeyRing};
use common::types::Caller;
use common::{InodeId, Version};
use fs_client::core::reseal::Resealed;
use fs_client::data::{DataPlane, MemDataPlane};
use fs_client::meta::MetaConn;
use fs_client::{ClientCore, CoreConfig};
use mosaic_tests::mem_nodes::start_mem_cluster;
use std::sync::Arc;
use std::time::Duration;

const CHUNK: u64 = 256 * 1024;
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_WINDOW: Duration = Duration::from_millis(1500);

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

async fn connect_core(
    addr: &str,
    tls: common::tls::Tls,
    plane: Arc<dyn DataPlane>,
    keys: KeyRing,
    name: &str,
) -> Arc<ClientCore> {
    ClientCore::connect(
        Arc::new(MetaConn::new(
            addr.to_string(),
            tls,
            RPC_TIMEOUT,
            RETRY_WINDOW,
        )),
        plane,
        keys,
        CoreConfig {
            rpc_timeout: RPC_TIMEOUT,
            retry_window: RETRY_WINDOW,
            flush_threshold: 256 * 1024,
            write_timeout: Duration::from_secs(1),
            hedge_delay: Duration::from_millis(20),
        },
        name.into(),
    )
    .await
    .expect("connect core")
}

async fn read_all(core: &Arc<ClientCore>, fh: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < len {
        let got = core
            .read(fh, out.len() as u64, (len - out.len()) as u32)
            .await
            .expect("read");
        if got.is_empty() {
            break;
        }
        out.extend_from_slice(&got);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_waits_out_an_older_grant_and_reseals_only_committed_bytes() {
    let old_ring = KeyRing::single(DataKey::random(0));
    let mut new_ring = old_ring.clone();
    new_ring.rotate();
    let cluster = start_mem_cluster(&old_ring, CHUNK, 3, RPC_TIMEOUT, |config| {
        config.write_quorum = 2;
        config.read_quorum = 2;
    })
    .await;
    let (addr, client_tls) = (cluster.addr.clone(), cluster.client_tls.clone());
    let data = Arc::new(MemDataPlane::default());
    let plane: Arc<dyn DataPlane> = Arc::new(data.clone());
    let writer = connect_core(&addr, client_tls.clone(), plane.clone(), old_ring, "writer").await;
    let pass = connect_core(&addr, client_tls, plane, new_ring, "pass").await;

    // Committed under key 0.
    let original = pattern(100_000, 3);
    let opened = writer
        .create(
            InodeId::ROOT,
            b"f",
            0o644,
            0o022,
            libc::O_RDWR,
            Caller::root(),
        )
        .await
        .expect("create");
    let (ino, fh) = (opened.attr.ino, opened.fh);
    writer.write(fh, 0, &original, 0).await.expect("write");
    writer.fsync(fh).await.expect("fsync");

    // The writer's next flush reaches only mem-0 (W = 2): its blocks sit there under an
    // uncommitted grant, and the grant stays outstanding.
    let patch = b"the writer's newer bytes";
    data.down
        .lock()
        .extend(["mem-1".to_string(), "mem-2".to_string()]);
    writer.write(fh, 10, patch, 0).await.expect("buffer");
    writer
        .fsync(fh)
        .await
        .expect_err("two replicas down: no quorum");
    data.down.lock().clear();

    let loc = pass
        .chunk_map(ino, 0, 1)
        .await
        .expect("chunk map")
        .pop()
        .expect("chunk 0");
    let started = std::time::Instant::now();
    let outcome = pass.reseal_chunk(ino, &loc).await.expect("reseal");
    assert!(
        matches!(outcome, Resealed::Rewritten { blocks: 2, .. }),
        "{outcome:?}"
    );
    assert!(
        started.elapsed()
            >= fs_client::core::reseal::settle_time(&CoreConfig {
                rpc_timeout: RPC_TIMEOUT,
                retry_window: RETRY_WINDOW,
                flush_threshold: 0,
                write_timeout: Duration::from_secs(1),
                hedge_delay: Duration::ZERO,
            }),
        "the pass waited for the outstanding grant to settle"
    );
    let after = pass
        .chunk_map(ino, 0, 1)
        .await
        .expect("map")
        .pop()
        .expect("chunk");
    assert!(
        after.version > loc.version,
        "{:?} -> {:?}",
        loc.version,
        after.version
    );
    assert_ne!(after.version, Version(0));

    // Readers see exactly the committed bytes (never the writer's uncommitted ones, which
    // sat in mem-0's scratch copy), now under key 1.
    let reader = pass.open(ino, libc::O_RDONLY).await.expect("open").fh;
    assert_eq!(read_all(&pass, reader, original.len()).await, original);
    pass.release(reader).await.expect("release");
    let current = data.all_blocks();
    assert!(
        current
            .iter()
            .filter_map(|b| common::block::header(b).ok())
            .any(|h| h.key_id == 1),
        "the resealed copies are under key 1"
    );
    writer.release(fh).await.ok();
    // The writer retries its flush: its stale grant is refused, it re-grants on top of the
    // pass's commit, and its bytes win.
    cluster.heartbeats.abort();
}

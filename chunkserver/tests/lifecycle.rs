//! The chunkserver's life against a fake master over loopback: registration (after the
//! master first fails), `node.toml`, the inventory report and the deletions it orders,
//! heartbeats and their deletion orders, bad-replica reports, the draining heartbeat of a
//! graceful stop, the identity kept across a restart, and refusal of another cluster.

use chunkserver::identity;
use chunkserver::store::{ENTRY_LEN, HEADER_LEN, Store, StoreOptions};
use common::block::{DataKey, seal};
use common::config::ChunkserverConfig;
use common::rpc::{MasterNodes, ctx};
use common::tls::{Role, Tls};
use common::types::*;
use common::{ChunkId, ClusterId, FsError, FsResult, NodeId, Version};
use master::ca::Ca;
use parking_lot::Mutex;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tarpc::context::Context;
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(15);
const CHUNK_SIZE: u64 = 1024 * 1024;

/// What the fake master saw and what it will answer.
#[derive(Default)]
struct Book {
    cluster: ClusterId,
    registrations: Vec<RegisterNode>,
    reports: Vec<Vec<HeldChunk>>,
    heartbeats: Vec<NodeStatus>,
    bad: Vec<(ChunkId, NodeId)>,
    delete_on_report: Vec<ChunkId>,
    delete_on_heartbeat: Vec<ChunkId>,
}

#[derive(Clone)]
struct FakeMaster(Arc<Mutex<Book>>);

impl MasterNodes for FakeMaster {
    async fn report_bad_replica(
        self,
        _: Context,
        chunk: ChunkId,
        node: NodeId,
        _reason: String,
    ) -> FsResult<()> {
        self.0.lock().bad.push((chunk, node));
        Ok(())
    }

    async fn register_node(self, _: Context, req: RegisterNode) -> FsResult<Registered> {
        let mut book = self.0.lock();
        let node = req.node.unwrap_or(NodeId(5));
        book.registrations.push(req);
        Ok(Registered {
            node,
            cluster: book.cluster,
            heartbeat_interval_ms: 20,
            chunk_size: CHUNK_SIZE,
        })
    }

    async fn heartbeat(
        self,
        _: Context,
        _node: NodeId,
        status: NodeStatus,
    ) -> FsResult<HeartbeatReply> {
        let mut book = self.0.lock();
        book.heartbeats.push(status);
        Ok(HeartbeatReply {
            delete: std::mem::take(&mut book.delete_on_heartbeat),
            reregister: false,
            revoked: Vec::new(),
        })
    }

    async fn report_chunks(
        self,
        _: Context,
        _node: NodeId,
        held: Vec<HeldChunk>,
    ) -> FsResult<HeartbeatReply> {
        let mut book = self.0.lock();
        book.reports.push(held);
        Ok(HeartbeatReply {
            delete: std::mem::take(&mut book.delete_on_report),
            reregister: false,
            revoked: Vec::new(),
        })
    }
}

/// Serves the fake master; the first `refuse` connections are accepted and dropped at once,
/// as a master that is not ready yet.
async fn spawn_master(book: Arc<Mutex<Book>>, refuse: usize) -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let refused = Arc::new(Mutex::new(0usize));
    let counter = refused.clone();
    let tls = credential(Role::Master, "fake-master");
    tokio::spawn(async move {
        let master = FakeMaster(book);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            {
                let mut n = counter.lock();
                if *n < refuse {
                    *n += 1;
                    drop(stream);
                    continue;
                }
            }
            let acceptor = tls.acceptor().clone();
            let master = master.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(peer) = common::tls::peer_identity(&stream) else {
                    return;
                };
                common::serve_connection!(stream, peer, master.serve()).await;
            });
        }
    });
    (addr, refused)
}

/// The test cluster's CA: the fake master and the chunkservers hold credentials it signed.
static CA: LazyLock<Ca> = LazyLock::new(|| Ca::generate("lifecycle").expect("test CA"));

fn credential(role: Role, name: &str) -> Tls {
    CA.issue(role, name)
        .expect("issue")
        .tls()
        .expect("credential")
}

/// The test config of a chunkserver on `data`, with a chunkserver credential written into
/// `DATA/test-credentials` (the store only scans `chunks/`).
fn cs_config(master: String, data: std::path::PathBuf) -> ChunkserverConfig {
    let dir = data.join("test-credentials");
    let paths = if dir.join(common::tls::KEY_FILE).exists() {
        common::tls::CredentialPaths::in_dir(&dir)
    } else {
        CA.issue(Role::Chunkserver, "cs")
            .expect("issue")
            .write_to(&dir)
            .expect("write credential")
    };
    let mut config = ChunkserverConfig::for_tests(master, data);
    config.shared.set_credentials(paths);
    config
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn prefill(dir: &Path) -> DataKey {
    let key = DataKey::new(0, [1u8; 32]);
    let (store, _bad) = Store::open(StoreOptions {
        data_dir: dir.to_path_buf(),
        capacity_bytes: None,
        sync_every_write: false,
        chunk_size: Some(CHUNK_SIZE),
        direct_io: true,
    })
    .expect("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for (id, v) in [(7u64, 1u64), (8, 2)] {
        let chunk = ChunkId(id);
        rt.block_on(store.write_blocks(WriteBlocks {
            chunk,
            version: Version(v),
            base: Version(v - 1),
            first_block: 0,
            blocks: vec![seal(&key, chunk, 0, Version(v), b"hello")],
            sync: true,
        }))
        .expect("prefill write");
    }
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_reports_heartbeats_and_stops_gracefully() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("cs");
    std::fs::create_dir_all(&data).expect("data dir");
    let key = tokio::task::block_in_place(|| prefill(&data));
    let cluster = ClusterId([9; 16]);
    let book = Arc::new(Mutex::new(Book {
        cluster,
        delete_on_report: vec![ChunkId(7)],
        ..Book::default()
    }));
    let (master_addr, refused) = spawn_master(book.clone(), 2).await;

    let config = cs_config(master_addr.clone(), data.clone());
    let cs = tokio::time::timeout(DEADLINE, chunkserver::start(config.clone()))
        .await
        .expect("start in time")
        .expect("start");
    assert_eq!(
        *refused.lock(),
        2,
        "registration retried past a master that was not ready"
    );
    assert_eq!(cs.node, NodeId(5));
    assert_eq!(
        identity::load(&data).expect("node.toml"),
        Some(identity::NodeIdentity {
            node: NodeId(5),
            cluster
        })
    );
    {
        let book = book.lock();
        assert_eq!(book.registrations.len(), 1);
        assert_eq!(book.registrations[0].node, None);
        assert_eq!(book.registrations[0].addr, cs.addr);
        assert_eq!(book.registrations[0].status.chunk_count, 2);
        let reported: Vec<_> = book.reports[0]
            .iter()
            .map(|h| (h.chunk, h.version))
            .collect();
        assert_eq!(
            reported,
            vec![(ChunkId(7), Version(1)), (ChunkId(8), Version(2))]
        );
    }

    // The inventory answer deleted chunk 7 before serving started.
    let client =
        common::rpc::connect_chunkserver(&cs.addr, &credential(Role::Client, "client"), DEADLINE)
            .await
            .expect("connect");
    let held = client
        .list_chunks(ctx(DEADLINE))
        .await
        .expect("rpc")
        .expect("list");
    assert_eq!(
        held,
        vec![HeldChunk {
            chunk: ChunkId(8),
            version: Version(2)
        }]
    );

    // Heartbeats flow and carry deletion orders.
    wait_until("a heartbeat", || !book.lock().heartbeats.is_empty()).await;
    book.lock().delete_on_heartbeat = vec![ChunkId(8)];
    let start = Instant::now();
    loop {
        let held = client
            .list_chunks(ctx(DEADLINE))
            .await
            .expect("rpc")
            .expect("list");
        if held.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "heartbeat deletion never happened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A corrupt block is refused to the client and reported to the master.
    let chunk = ChunkId(0x30);
    let sealed = seal(&key, chunk, 0, Version(1), &[5u8; 1000]);
    client
        .write_blocks(
            ctx(DEADLINE),
            WriteBlocks {
                chunk,
                version: Version(1),
                base: Version(0),
                first_block: 0,
                blocks: vec![sealed],
                sync: false,
            },
        )
        .await
        .expect("rpc")
        .expect("write");
    let path = data
        .join("chunks")
        .join(chunk.shard_dir())
        .join(chunk.file_name());
    let blocks_per_chunk = CHUNK_SIZE / common::block::BLOCK_SIZE as u64;
    let slot0 = HEADER_LEN + (blocks_per_chunk * ENTRY_LEN).next_multiple_of(4096);
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open chunk file");
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, slot0 + 100).expect("read");
        b[0] ^= 1;
        file.write_all_at(&b, slot0 + 100).expect("flip");
    }
    let read = client
        .read_blocks(
            ctx(DEADLINE),
            ReadBlocks {
                chunk,
                min_version: Version(1),
                first_block: 0,
                count: 1,
            },
        )
        .await
        .expect("rpc");
    assert!(matches!(read, Err(FsError::Corrupt(_))), "{read:?}");
    wait_until("the bad replica report", || {
        book.lock().bad.contains(&(chunk, NodeId(5)))
    })
    .await;

    // Graceful stop: the last heartbeat says draining.
    tokio::time::timeout(DEADLINE, cs.stop())
        .await
        .expect("stop in time")
        .expect("clean stop");
    assert!(book.lock().heartbeats.last().expect("heartbeats").draining);
    // And it no longer serves: the open connection was closed.
    let after = tokio::time::timeout(DEADLINE, client.status(ctx(DEADLINE)))
        .await
        .expect("answer in time");
    assert!(after.is_err(), "served after stop: {after:?}");

    // Restart: the node presents the identity it was given.
    let cs = tokio::time::timeout(DEADLINE, chunkserver::start(config))
        .await
        .expect("restart in time")
        .expect("restart");
    assert_eq!(cs.node, NodeId(5));
    {
        let book = book.lock();
        let again = book.registrations.last().expect("registration");
        assert_eq!(again.node, Some(NodeId(5)));
        assert_eq!(again.cluster, Some(cluster));
    }
    cs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    identity::save(
        dir.path(),
        &identity::NodeIdentity {
            node: NodeId(5),
            cluster: ClusterId([1; 16]),
        },
    )
    .expect("save identity");
    let book = Arc::new(Mutex::new(Book {
        cluster: ClusterId([2; 16]),
        ..Book::default()
    }));
    let (master_addr, _) = spawn_master(book.clone(), 0).await;
    let config = cs_config(master_addr, dir.path().to_path_buf());
    let err = match tokio::time::timeout(DEADLINE, chunkserver::start(config))
        .await
        .expect("refusal in time")
    {
        Ok(_) => panic!("a directory of another cluster was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(err.contains("cluster"), "{err}");
    // Nothing was reported or served for the foreign cluster.
    assert!(book.lock().reports.is_empty());
    assert_eq!(
        identity::load(dir.path()).expect("load").map(|i| i.cluster),
        Some(ClusterId([1; 16]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_node_file_is_refused_before_contacting_the_master() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(identity::FILE_NAME), "not toml at all [").expect("write");
    let book = Arc::new(Mutex::new(Book::default()));
    let (master_addr, _) = spawn_master(book.clone(), 0).await;
    let config = cs_config(master_addr, dir.path().to_path_buf());
    let result = tokio::time::timeout(DEADLINE, chunkserver::start(config))
        .await
        .expect("refusal in time");
    let err = format!("{:#}", result.err().expect("refused"));
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(book.lock().registrations.is_empty());
}

//! Library-level tests: `init` and its refusals, start-up refusals of bad databases, and the
//! real RPC server in-process on 127.0.0.1:0 (sessions, namespace, node registry, restart).

use super::*;
use common::block::{DataKey, KeyRing};
use common::rpc::{
    MasterAdminClient, MasterFsClient, MasterNodesClient, connect_master_admin, connect_master_fs,
    connect_master_nodes, ctx,
};
use common::types::{Caller, FileKind, NewNode, NodeStatus, OpId, RegisterNode};
use common::{FsError, InodeId, NodeId, SessionId};
use serde_bytes::ByteBuf;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A fresh operation id for each call, as a client makes them (a reused one would get the
/// first call's recorded answer).
fn op() -> OpId {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    OpId {
        session: SessionId(0),
        seq: SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    }
}

const CS: u64 = 1 << 20;
/// Deadline of every RPC and every wait in these tests.
const DEADLINE: Duration = Duration::from_secs(10);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

fn start_err(state: &Path) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let err = rt
        .block_on(start(MasterConfig::for_tests(state.to_path_buf())))
        .err()
        .expect("start must refuse");
    let msg = format!("{err:#}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    msg
}

#[test]
fn init_creates_state_key_and_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("a/state");
    let key = state.join(KEY_FILE);
    let id = init_cluster(&state, &key, CS).expect("init");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&key), 0o600);
    let ring = KeyRing::load(&key).expect("key file parses");
    let store = SqliteStore::open(&state.join(DB_FILE), false).expect("open");
    assert_eq!(store.cluster().id, id);
    assert_eq!(store.cluster().chunk_size, CS);
    assert_eq!(store.cluster().key_check, ring.key_check().to_vec());
    drop(store);

    // A second init refuses and leaves the key alone.
    let before = std::fs::read(&key).expect("read key");
    let err = init_cluster(&state, &dir.path().join("other.key"), CS).expect_err("refuse");
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    assert!(!dir.path().join("other.key").exists());
    assert_eq!(std::fs::read(&key).expect("read key"), before);
}

#[test]
fn init_never_overwrites_a_key_file_and_checks_the_chunk_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let key = dir.path().join("existing.key");
    std::fs::write(&key, "precious").expect("write");
    let err = init_cluster(&state, &key, CS).expect_err("refuse");
    assert!(format!("{err:#}").contains("existing.key"), "{err:#}");
    assert_eq!(std::fs::read_to_string(&key).expect("read"), "precious");
    assert!(!state.join(DB_FILE).exists(), "no half-made cluster");

    for bad in [0, 1000, BLOCK_SIZE as u64 + 1, MAX_CHUNK_SIZE * 2] {
        let err = init_cluster(&state, &dir.path().join("k"), bad).expect_err("bad size");
        assert!(format!("{err:#}").contains("chunk size"), "{err:#}");
    }
    assert!(!dir.path().join("k").exists());
    // The smallest chunk is one block.
    init_cluster(&state, &dir.path().join("k"), BLOCK_SIZE as u64).expect("one block");
}

#[test]
fn start_refuses_missing_foreign_corrupt_and_newer_databases() {
    let dir = tempfile::tempdir().expect("tempdir");

    let missing = dir.path().join("missing");
    let msg = start_err(&missing);
    assert!(
        msg.contains("meta.db") && msg.contains("mosaic-master init --state"),
        "{msg}"
    );

    let garbage = dir.path().join("garbage");
    std::fs::create_dir(&garbage).expect("mkdir");
    std::fs::write(garbage.join(DB_FILE), "not a database at all, ".repeat(500)).expect("write");
    let msg = start_err(&garbage);
    assert!(
        msg.contains("meta.db") && msg.contains("refuses to start"),
        "{msg}"
    );

    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).expect("mkdir");
    let conn = rusqlite::Connection::open(foreign.join(DB_FILE)).expect("sqlite");
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .expect("foreign schema");
    drop(conn);
    let msg = start_err(&foreign);
    assert!(msg.contains("not a MosaicFS metadata database"), "{msg}");
    // Refused without being touched: still exactly the foreign schema.
    let conn = rusqlite::Connection::open(foreign.join(DB_FILE)).expect("sqlite");
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .expect("count");
    assert_eq!(tables, 1);
    conn.execute_batch("PRAGMA user_version = 1")
        .expect("fake version");
    drop(conn);
    let msg = start_err(&foreign);
    assert!(msg.contains("not a MosaicFS metadata database"), "{msg}");

    let newer = dir.path().join("newer");
    init_cluster_with_keys(&newer, &KeyRing::single(DataKey::random(0)), CS).expect("init");
    let conn = rusqlite::Connection::open(newer.join(DB_FILE)).expect("sqlite");
    conn.execute_batch("PRAGMA user_version = 99")
        .expect("bump");
    drop(conn);
    let msg = start_err(&newer);
    assert!(msg.contains("newer") && msg.contains("99"), "{msg}");
}

#[test]
fn start_refuses_a_truncated_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    init_cluster_with_keys(&state, &KeyRing::single(DataKey::random(0)), CS).expect("init");
    let db = state.join(DB_FILE);
    {
        // Enough rows for a database of many pages, then closed (WAL checkpointed).
        let store = SqliteStore::open(&db, false).expect("open");
        let node = NewNode {
            kind: FileKind::File,
            perm: 0o644,
            umask: 0,
            rdev: 0,
            symlink_target: None,
            caller: Caller::root(),
        };
        for i in 0..2000 {
            store
                .create(
                    InodeId::ROOT,
                    format!("file-{i:05}").as_bytes(),
                    &node,
                    Timespec::now(),
                )
                .expect("create");
        }
    }
    let len = std::fs::metadata(&db).expect("stat").len();
    assert!(len > 64 * 1024, "database has {len} bytes");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .expect("open");
    file.set_len(len / 2).expect("truncate");
    drop(file);
    let msg = start_err(&state);
    assert!(msg.contains("meta.db") && msg.contains("corrupt"), "{msg}");
}

#[test]
fn addr_file_is_written_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("master.addr");
    let addr: SocketAddr = "127.0.0.1:9420".parse().expect("addr");
    write_addr_file(&path, addr).expect("write");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        "127.0.0.1:9420"
    );
    write_addr_file(&path, "127.0.0.1:1".parse().expect("addr")).expect("rewrite");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "127.0.0.1:1");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("ls").count(),
        1,
        "no temp file left"
    );
}

struct Served {
    _dir: tempfile::TempDir,
    state: PathBuf,
    keys: KeyRing,
    master: RunningMaster,
    client: MasterFsClient,
    /// The administration service, with the same client credential.
    admin: MasterAdminClient,
    /// A connection with a chunkserver credential, for the node protocol.
    node: MasterNodesClient,
}

/// Loads a new credential for `role` issued by the cluster in `state`.
fn credential(state: &std::path::Path, role: common::tls::Role, name: &str) -> common::tls::Tls {
    let out = state.join("creds").join(name);
    crate::pki::issue(state, role, name, &out).expect("issue");
    common::tls::CredentialPaths::in_dir(&out)
        .load()
        .expect("load credential")
}

async fn serve(config: impl FnOnce(&mut MasterConfig)) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let keys = KeyRing::single(DataKey::random(0));
    init_cluster_with_keys(&state, &keys, CS).expect("init");
    let mut cfg = MasterConfig::for_tests(state.clone());
    config(&mut cfg);
    let master = start(cfg).await.expect("start");
    let tls = credential(&state, common::tls::Role::Client, "client");
    let client = connect_master_fs(&master.addr.to_string(), &tls, DEADLINE)
        .await
        .expect("connect");
    let admin = connect_master_admin(&master.addr.to_string(), &tls, DEADLINE)
        .await
        .expect("connect");
    let node_tls = credential(&state, common::tls::Role::Chunkserver, "node");
    let node = connect_master_nodes(&master.addr.to_string(), &node_tls, DEADLINE)
        .await
        .expect("connect");
    Served {
        _dir: dir,
        state,
        keys,
        master,
        client,
        admin,
        node,
    }
}

async fn stop(master: RunningMaster) {
    tokio::time::timeout(DEADLINE, master.shutdown())
        .await
        .expect("shutdown within the deadline");
}

fn file_node() -> NewNode {
    NewNode {
        kind: FileKind::File,
        perm: 0o644,
        umask: 0o022,
        rdev: 0,
        symlink_target: None,
        caller: Caller {
            uid: 1000,
            gid: 1000,
            pid: 1,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_namespace_round_trip() {
    let Served {
        _dir,
        keys,
        master,
        client,
        ..
    } = serve(|_| {}).await;
    let c = || ctx(DEADLINE);
    let info = client
        .hello(c(), "test".into())
        .await
        .expect("rpc")
        .expect("hello");
    assert_eq!(info.chunk_size, CS);
    assert_eq!(info.key_check.as_ref(), &keys.key_check()[..]);
    assert_eq!(
        info.replication,
        MasterConfig::for_tests(PathBuf::new()).policy()
    );

    let mut dir_node = file_node();
    dir_node.kind = FileKind::Dir;
    dir_node.perm = 0o777;
    let d = client
        .create(
            c(),
            op(),
            InodeId::ROOT,
            ByteBuf::from(b"docs".to_vec()),
            dir_node,
        )
        .await
        .expect("rpc")
        .expect("mkdir");
    let f = client
        .create(
            c(),
            op(),
            d.ino,
            ByteBuf::from(b"a.txt".to_vec()),
            file_node(),
        )
        .await
        .expect("rpc")
        .expect("create");
    assert_eq!((f.perm, f.uid), (0o644, 1000));
    let found = client
        .lookup(c(), d.ino, ByteBuf::from(b"a.txt".to_vec()))
        .await
        .expect("rpc")
        .expect("lookup");
    assert_eq!(found, f);
    let missing = client
        .lookup(c(), d.ino, ByteBuf::from(b"nope".to_vec()))
        .await
        .expect("rpc");
    assert_eq!(
        missing,
        Err(FsError::NotFound),
        "typed errors cross the wire"
    );
    let page = client
        .readdir(c(), d.ino, 0, 100, true)
        .await
        .expect("rpc")
        .expect("readdir");
    assert!(page.end);
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].name.as_ref(), b"a.txt");
    assert_eq!(page.entries[0].attr.as_ref(), Some(&f));

    client
        .keepalive(c(), info.session)
        .await
        .expect("rpc")
        .expect("keepalive");
    assert_eq!(
        client
            .keepalive(c(), common::SessionId(999))
            .await
            .expect("rpc"),
        Err(FsError::NotFound)
    );
    let statfs = client.statfs(c()).await.expect("rpc").expect("statfs");
    assert_eq!(
        (statfs.files, statfs.name_max, statfs.total_bytes),
        (3, 255, 0)
    );
    stop(master).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_node_registry_and_summary() {
    let Served {
        _dir,
        master,
        state,
        client: fs_client,
        admin,
        node: client,
        ..
    } = serve(|_| {}).await;
    let c = || ctx(DEADLINE);
    let status = NodeStatus {
        capacity_bytes: 1 << 30,
        used_bytes: 1 << 20,
        ..NodeStatus::default()
    };
    // Only chunkservers speak the node protocol: a client certificate that asks for the
    // nodes' service is refused at its first call.
    let client_tls = credential(&state, common::tls::Role::Client, "client-nodes");
    let refused = connect_master_nodes(&master.addr.to_string(), &client_tls, DEADLINE)
        .await
        .expect("connect")
        .register_node(
            c(),
            RegisterNode {
                node: None,
                cluster: None,
                addr: "127.0.0.1:7000".into(),
                status: status.clone(),
            },
        )
        .await
        .map_err(FsError::from);
    assert_eq!(refused, Err(FsError::NotPermitted));
    let reg = client
        .register_node(
            c(),
            RegisterNode {
                node: None,
                cluster: None,
                addr: "127.0.0.1:7001".into(),
                status: status.clone(),
            },
        )
        .await
        .expect("rpc")
        .expect("register");
    assert_eq!((reg.chunk_size, reg.heartbeat_interval_ms), (CS, 200));
    // Re-registration keeps the id; another cluster's node is refused.
    let again = client
        .register_node(
            c(),
            RegisterNode {
                node: Some(reg.node),
                cluster: Some(reg.cluster),
                addr: "127.0.0.1:7002".into(),
                status: status.clone(),
            },
        )
        .await
        .expect("rpc")
        .expect("re-register");
    assert_eq!(again.node, reg.node);
    let foreign = client
        .register_node(
            c(),
            RegisterNode {
                node: Some(reg.node),
                cluster: Some(common::ClusterId([1; 16])),
                addr: "127.0.0.1:7003".into(),
                status: status.clone(),
            },
        )
        .await
        .expect("rpc");
    assert!(
        matches!(foreign, Err(FsError::WrongCluster(_))),
        "{foreign:?}"
    );

    let beat = client
        .heartbeat(c(), reg.node, status.clone())
        .await
        .expect("rpc")
        .expect("heartbeat");
    assert!(!beat.reregister && beat.delete.is_empty());
    let unknown = client
        .heartbeat(c(), NodeId(4242), status.clone())
        .await
        .expect("rpc")
        .expect("heartbeat");
    assert!(unknown.reregister);

    let summary = admin
        .cluster_summary(c())
        .await
        .expect("rpc")
        .expect("summary");
    assert_eq!(summary.nodes.len(), 1);
    assert_eq!(summary.nodes[0].addr, "127.0.0.1:7002");
    assert!(summary.nodes[0].online);
    assert_eq!((summary.files, summary.dirs, summary.chunks), (0, 1, 0));
    let statfs = fs_client.statfs(c()).await.expect("rpc").expect("statfs");
    assert_eq!(
        (statfs.total_bytes, statfs.free_bytes),
        (1 << 30, (1 << 30) - (1 << 20))
    );
    stop(master).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_restart_and_expire_without_keepalive() {
    let Served {
        _dir,
        state,
        master,
        client,
        ..
    } = serve(|_| {}).await;
    let c = || ctx(DEADLINE);
    let info = client
        .hello(c(), "c".into())
        .await
        .expect("rpc")
        .expect("hello");
    let f = client
        .create(
            c(),
            op(),
            InodeId::ROOT,
            ByteBuf::from(b"f".to_vec()),
            file_node(),
        )
        .await
        .expect("rpc")
        .expect("create");
    client
        .open(
            c(),
            OpId {
                session: info.session,
                seq: 1,
            },
            f.ino,
        )
        .await
        .expect("rpc")
        .expect("open");
    client
        .unlink(c(), op(), InodeId::ROOT, ByteBuf::from(b"f".to_vec()))
        .await
        .expect("rpc")
        .expect("unlink");
    stop(master).await;

    // Restarted with a short lease: the session is known again (fresh lease) and the
    // unlinked-but-open file is still there; without keepalives the lease runs out and
    // the reaper frees it.
    let mut cfg = MasterConfig::for_tests(state.clone());
    cfg.session_ttl_ms = 300;
    let master = start(cfg).await.expect("restart");
    let tls = credential(&state, common::tls::Role::Client, "client-2");
    let client = connect_master_fs(&master.addr.to_string(), &tls, DEADLINE)
        .await
        .expect("connect");
    client
        .keepalive(c(), info.session)
        .await
        .expect("rpc")
        .expect("session survives the restart");
    assert!(client.getattr(c(), f.ino).await.expect("rpc").is_ok());
    let deadline = Instant::now() + DEADLINE;
    loop {
        match client.getattr(c(), f.ino).await.expect("rpc") {
            Err(FsError::NotFound) => break,
            Ok(_) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the expired session's orphan was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        client.keepalive(c(), info.session).await.expect("rpc"),
        Err(FsError::NotFound),
        "an expired session is gone"
    );
    stop(master).await;
}

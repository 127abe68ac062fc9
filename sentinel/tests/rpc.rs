//! The sentinel's real network boundary ([`sentinel::RpcCluster`]) and the `status` binary
//! against servers on 127.0.0.1:0: a minimal chunkserver that answers `status()`, a minimal
//! master that answers `cluster_summary()`, a port nobody listens on, and a chunkserver that
//! stops mid-way.

use common::rpc::{self, ChunkServer, MasterAdmin};
use common::tls::{Role, Tls};
use common::types::*;
use common::{ChunkId, ClusterId, FsError, FsResult, NodeId, Version};
use master::ca::Ca;
use sentinel::Cluster as _;
use sentinel::health::ProbeOutcome;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tarpc::context::Context;

/// The test cluster's CA: fake peers and the sentinel hold credentials it signed.
static CA: LazyLock<Ca> = LazyLock::new(|| Ca::generate("sentinel-tests").expect("test CA"));

fn credential(role: Role, name: &str) -> Tls {
    CA.issue(role, name)
        .expect("issue")
        .tls()
        .expect("credential")
}

/// A sentinel credential on disk, for the binary (`--credentials DIR`).
static SENTINEL_DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("temp dir");
    CA.issue(Role::Sentinel, "sentinel-bin")
        .expect("issue")
        .write_to(&dir.path().join("creds"))
        .expect("write credential");
    dir
});

fn credentials_arg() -> String {
    SENTINEL_DIR.path().join("creds").display().to_string()
}

/// A chunkserver that only knows how to report its status.
#[derive(Clone)]
struct StatusOnly;

impl ChunkServer for StatusOnly {
    async fn write_blocks(self, _: Context, _: WriteBlocks) -> FsResult<()> {
        Err(FsError::NotSupported)
    }
    async fn read_blocks(self, _: Context, _: ReadBlocks) -> FsResult<BlockData> {
        Err(FsError::NotSupported)
    }
    async fn sync_chunks(self, _: Context, _: Vec<ChunkId>) -> FsResult<()> {
        Err(FsError::NotSupported)
    }
    async fn delete_chunks(self, _: Context, _: Vec<ChunkId>) -> FsResult<()> {
        Err(FsError::NotSupported)
    }
    async fn list_chunks(self, _: Context) -> FsResult<Vec<HeldChunk>> {
        Ok(Vec::new())
    }
    async fn copy_from(
        self,
        _: Context,
        _: ChunkId,
        _: String,
        _: common::Version,
    ) -> FsResult<()> {
        Err(FsError::NotSupported)
    }
    async fn status(self, _: Context) -> FsResult<NodeStatus> {
        Ok(NodeStatus {
            capacity_bytes: 1 << 30,
            chunk_count: 4,
            ..NodeStatus::default()
        })
    }
    async fn verify_replica(self, _: Context, _: ChunkId, _: Version) -> FsResult<ReplicaCheck> {
        Err(FsError::NotSupported)
    }
}

/// Serves `StatusOnly` until the returned sender is dropped or fired.
async fn start_chunkserver() -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = rpc::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address").to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(rpc::serve(
        listener,
        credential(Role::Chunkserver, "cs"),
        common::tls::Revoked::default(),
        |stream, peer| common::serve_connection!(stream, peer, StatusOnly.serve()),
        async {
            let _ = stop_rx.await;
        },
    ));
    (addr, stop_tx)
}

/// An address on which nothing listens: bind port 0, note it, close it.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("bound address").to_string()
}

fn cluster(master: &str) -> sentinel::RpcCluster {
    sentinel::RpcCluster::new(
        master.to_string(),
        credential(Role::Sentinel, "sentinel"),
        Duration::from_secs(1),
        Duration::from_millis(500),
    )
}

#[tokio::test]
async fn probe_answers_then_fails_when_the_node_stops() {
    let (addr, stop) = start_chunkserver().await;
    let cluster = cluster(&closed_port());
    match cluster.probe(NodeId(1), &addr).await {
        ProbeOutcome::Answered(status) => assert_eq!(status.chunk_count, 4),
        other => panic!("expected an answer, got {other:?}"),
    }
    // The cached connection is reused for the second probe.
    assert!(matches!(
        cluster.probe(NodeId(1), &addr).await,
        ProbeOutcome::Answered(_)
    ));
    drop(stop);
    // The server's accept loop and connections end; the probe fails within its deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let started = Instant::now();
        let outcome = cluster.probe(NodeId(1), &addr).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a probe is bounded by its deadline"
        );
        // The listener is gone, so the confirming connect is refused.
        if matches!(outcome, ProbeOutcome::Refused(_)) {
            break;
        }
        assert!(Instant::now() < deadline, "probe kept answering after stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn probe_of_a_closed_port_fails_fast() {
    let cluster = cluster(&closed_port());
    let started = Instant::now();
    let outcome = cluster.probe(NodeId(2), &closed_port()).await;
    // Nothing listens: the probe fails and the confirming connect is refused (a crash).
    assert!(
        matches!(outcome, ProbeOutcome::Refused(FsError::Unavailable(_))),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn unreachable_master_is_an_error_not_a_hang() {
    let master = closed_port();
    let started = Instant::now();
    let err = sentinel::status(&master, &credential(Role::Sentinel, "sentinel"))
        .await
        .expect_err("no master there");
    assert!(matches!(err, FsError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn status_binary_exits_2_with_one_line_when_the_master_is_down() {
    let master = closed_port();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mosaic-sentinel"))
        .args([
            "status",
            "--master",
            &master,
            "--credentials",
            &credentials_arg(),
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("run mosaic-sentinel");
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("mosaic-sentinel: UNAVAILABLE: master unreachable: "),
        "{stderr}"
    );
    assert!(stderr.contains(&master), "{stderr}");
}

#[test]
fn run_refuses_bad_intervals_with_a_clear_error() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mosaic-sentinel"))
        .args([
            "run",
            "--credentials",
            &credentials_arg(),
            "--master",
            "127.0.0.1:1",
            "--probe-interval-ms",
            "1000",
            "--dead-after-ms",
            "1500",
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("run mosaic-sentinel");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("dead_after_ms (1500)"), "{stderr}");
}

/// A master that only answers `cluster_summary` (with whatever the test put in it); every
/// other call is refused.
#[derive(Clone)]
struct SummaryOnly(Arc<Mutex<ClusterSummary>>);

fn refused<T>() -> FsResult<T> {
    Err(FsError::NotSupported)
}

impl MasterAdmin for SummaryOnly {
    async fn cluster_summary(self, _: Context) -> FsResult<ClusterSummary> {
        Ok(self.0.lock().expect("summary lock").clone())
    }
    async fn node_contents(
        self,
        _: Context,
        _: NodeId,
        _: ChunkId,
        _: u32,
    ) -> FsResult<Vec<NodeReplica>> {
        refused()
    }
    async fn node_files(
        self,
        _: Context,
        _: NodeId,
        _: ChunkId,
        _: u32,
    ) -> FsResult<Vec<common::types::NodeFileChunk>> {
        refused()
    }
    async fn report_node_health(
        self,
        _: Context,
        _: NodeId,
        _: bool,
    ) -> FsResult<common::types::NodeCondition> {
        refused()
    }
    async fn set_node_drain(
        self,
        _: Context,
        _: NodeId,
        _: bool,
    ) -> FsResult<common::types::NodeCondition> {
        refused()
    }
    async fn clear_bad_replica(self, _: Context, _: ChunkId, _: NodeId) -> FsResult<bool> {
        refused()
    }

    async fn forget_node(self, _: Context, _: NodeId) -> FsResult<u64> {
        refused()
    }
}

fn node_info(id: u64, addr: &str) -> NodeInfo {
    NodeInfo {
        node: NodeId(id),
        addr: addr.to_string(),
        last_seen_ms: 200,
        online: true,
        status: NodeStatus::default(),
        replicas: 4,
        condition: Default::default(),
    }
}

/// Serves `SummaryOnly` on a loopback port; returns its address and the summary to edit.
async fn start_master(nodes: Vec<NodeInfo>) -> (String, Arc<Mutex<ClusterSummary>>) {
    let summary = Arc::new(Mutex::new(ClusterSummary {
        cluster_id: ClusterId([7; 16]),
        replication: ReplicationPolicy { n: 3, w: 3, r: 1 },
        files: 3,
        dirs: 1,
        chunks: 4,
        under_replicated: 0,
        lost: 0,
        logical_bytes: 4096,
        nodes,
        repair: Default::default(),
        writes_refused_no_space: 0,
        notices: Vec::new(),
    }));
    let listener = rpc::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address").to_string();
    let served = summary.clone();
    tokio::spawn(rpc::serve(
        listener,
        credential(Role::Master, "master"),
        common::tls::Revoked::default(),
        move |stream, peer| {
            common::serve_connection!(stream, peer, SummaryOnly(served.clone()).serve())
        },
        std::future::pending(),
    ));
    (addr, summary)
}

/// Runs `mosaic-sentinel status` off the async threads; returns (exit code, stdout, stderr).
async fn status_binary(args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mosaic-sentinel"))
            .arg("status")
            .args(["--credentials", &credentials_arg()])
            .args(&args)
            .env_remove("RUST_LOG")
            .output()
            .expect("run mosaic-sentinel")
    })
    .await
    .expect("join");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_binary_reports_verdicts_and_exit_codes() {
    let (cs1, _stop1) = start_chunkserver().await;
    let (cs2, _stop2) = start_chunkserver().await;
    let (master, summary) = start_master(vec![node_info(1, &cs1), node_info(2, &cs2)]).await;

    let (code, out, err) = status_binary(&["--master", &master, "--json"]).await;
    assert_eq!(code, Some(0), "healthy cluster: {out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("status --json is JSON");
    assert_eq!(json["verdict"], "HEALTHY");
    assert_eq!(json["chunks"]["total"], 4);
    assert_eq!(json["nodes"][0]["id"], "n1");
    assert_eq!(json["nodes"][0]["addr"], cs1.as_str());
    assert_eq!(json["nodes"][1]["state"], "HEALTHY");
    assert_eq!(json["nodes"][1]["chunks"], 4);

    let (code, out, _) = status_binary(&["--master", &master]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("verdict: HEALTHY\n"), "{out}");
    assert!(out.contains(&cs2), "{out}");

    // A node whose port is closed, heard from recently: SUSPECT, cluster DEGRADED.
    summary
        .lock()
        .expect("summary lock")
        .nodes
        .push(node_info(3, &closed_port()));
    let (code, out, _) = status_binary(&["--master", &master, "--json"]).await;
    assert_eq!(code, Some(1), "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["verdict"], "DEGRADED");
    assert_eq!(json["nodes"][2]["state"], "SUSPECT");

    // Lost chunks make the cluster UNAVAILABLE.
    summary.lock().expect("summary lock").lost = 1;
    let (code, out, _) = status_binary(&["--master", &master]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("verdict: UNAVAILABLE\n  - 1 chunks lost"),
        "{out}"
    );
}

//! The sentinel's real network boundary ([`sentinel::RpcCluster`]) and the `status` binary
//! against servers on 127.0.0.1:0: a minimal chunkserver that answers `status()`, a port
//! nobody listens on, and a chunkserver that stops mid-way.

use common::rpc::{self, ChunkServer};
use common::types::{BlockData, HeldChunk, NodeStatus, ReadBlocks, WriteBlocks};
use common::{ChunkId, FsError, FsResult, NodeId};
use sentinel::Cluster as _;
use sentinel::health::ProbeOutcome;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tarpc::context::Context;

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
    async fn status(self, _: Context) -> FsResult<NodeStatus> {
        Ok(NodeStatus {
            capacity_bytes: 1 << 30,
            chunk_count: 4,
            ..NodeStatus::default()
        })
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
        |stream| common::serve_connection!(stream, StatusOnly.serve()),
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
        if matches!(outcome, ProbeOutcome::Failed(_)) {
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
    assert!(
        matches!(outcome, ProbeOutcome::Failed(FsError::Unavailable(_))),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn unreachable_master_is_an_error_not_a_hang() {
    let master = closed_port();
    let started = Instant::now();
    let err = sentinel::status(&master)
        .await
        .expect_err("no master there");
    assert!(matches!(err, FsError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn status_binary_exits_2_with_one_line_when_the_master_is_down() {
    let master = closed_port();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mosaic-sentinel"))
        .args(["status", "--master", &master])
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

//! Observability against a real cluster: the Prometheus endpoints of the master, every
//! chunkserver and a running sentinel are scraped over loopback after files were written
//! through a FUSE mount, and must show real values (chunk counts that match the disk, RPC
//! latency histograms of the calls the write made, node states); and `mosaic-sentinel
//! status --node N --files --json` must list each written file on exactly the nodes the
//! master's chunk map places its chunks on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::metrics::{sample, scrape};
use common::rpc::{connect_master_fs, ctx};
use common::{ChunkId, InodeId, NodeId};
use mosaic_tests::cluster::{RPC_DEADLINE, block_on};
use mosaic_tests::{ClusterOptions, MountOptions, TestCluster, require_fuse, wait_for};
use serde_bytes::ByteBuf;

/// Deadline for heartbeats and probes to carry the new state to the master and sentinel on
/// a loaded machine (they run every 200 ms to 1 s).
const SETTLE: Duration = Duration::from_secs(60);
/// Deadline of one scrape.
const SCRAPE: Duration = Duration::from_secs(10);
const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Files written, by path under the mount: sizes span one partial chunk, one chunk and a
/// bit, and several chunks (the test cluster's chunks are 1 MiB).
const FILES: [(&str, usize); 3] = [
    ("dir/a.bin", 3 * MIB + 512 * KIB),
    ("dir/sub/b.txt", 100 * KIB),
    ("c", MIB + 1),
];

fn get(addr: std::net::SocketAddr) -> Option<String> {
    block_on(async move { scrape(addr, SCRAPE).await.ok() })
}

/// The master's chunk map of `path` (relative to the root): chunk id -> the nodes the master
/// lists as its current replicas; and the file's inode.
fn chunk_map(cluster: &TestCluster, path: &str) -> (InodeId, BTreeMap<ChunkId, BTreeSet<NodeId>>) {
    let addr = cluster.master_addr();
    let tls = cluster.client_tls();
    let path = path.to_string();
    block_on(async move {
        let client = connect_master_fs(&addr, &tls, RPC_DEADLINE)
            .await
            .expect("connect to the master");
        let mut ino = InodeId::ROOT;
        for name in path.split('/') {
            ino = client
                .lookup(
                    ctx(RPC_DEADLINE),
                    ino,
                    ByteBuf::from(name.as_bytes().to_vec()),
                )
                .await
                .expect("lookup RPC")
                .unwrap_or_else(|e| panic!("lookup {name} of {path}: {e}"))
                .ino;
        }
        let locs = client
            .chunk_map(ctx(RPC_DEADLINE), ino, 0, 1000)
            .await
            .expect("chunk_map RPC")
            .expect("chunk_map");
        let map = locs
            .into_iter()
            .map(|loc| (loc.chunk, loc.replicas.iter().map(|r| r.node).collect()))
            .collect();
        (ino, map)
    })
}

#[test]
fn metrics_and_node_files_show_what_was_written() {
    let Some(_fuse) = require_fuse("metrics_and_node_files_show_what_was_written") else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions {
        metrics: true,
        ..ClusterOptions::default()
    });
    let mount_metrics_file = cluster.root().join("mount.metrics.addr");
    let mount = cluster.mount(MountOptions {
        extra_args: vec![
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
            "--metrics-addr-file".into(),
            mount_metrics_file.display().to_string(),
        ],
        ..MountOptions::default()
    });
    let cluster = &cluster;
    for (i, (path, size)) in FILES.iter().enumerate() {
        let full = mount.path().join(path);
        std::fs::create_dir_all(full.parent().expect("a parent")).expect("mkdir");
        let data: Vec<u8> = (0..*size).map(|b| (b * 7 + i) as u8).collect();
        // write + close: the data is committed at the master when this returns.
        std::fs::write(&full, &data).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
    // The last replica of each chunk may still be writing (acknowledgement at W).
    cluster.wait_fully_replicated(std::time::Duration::from_secs(60));

    // The mount: the bytes written through it and its operation latencies. (Reads are not
    // asserted: right after a write the kernel may serve them from its page cache.)
    let mount_metrics: std::net::SocketAddr = std::fs::read_to_string(&mount_metrics_file)
        .expect("the mount wrote its metrics address before mounting")
        .trim()
        .parse()
        .expect("a socket address");
    let text = get(mount_metrics).expect("scrape the mount");
    let written: usize = FILES.iter().map(|(_, size)| size).sum();
    assert_eq!(
        sample(&text, "mosaic_mount_write_bytes_total", &[]),
        Some(written as f64),
        "{text}"
    );
    for op in ["write", "flush"] {
        let count = sample(
            &text,
            "mosaic_mount_op_duration_seconds_count",
            &[("op", op)],
        );
        assert!(count.is_some_and(|c| c > 0.0), "no {op} latency:\n{text}");
    }
    let expected_chunks: usize = FILES.iter().map(|(_, size)| size.div_ceil(MIB)).sum();

    // The master: cluster gauges from its summary, latency of the RPCs the writes made.
    let master_log = cluster.master_log();
    let text = wait_for(
        SETTLE,
        "the master's metrics to show every chunk at its goal",
        Some(&master_log),
        || {
            let text = get(cluster.master_metrics_addr())?;
            let chunks = sample(&text, "mosaic_master_chunks", &[])?;
            let under = sample(&text, "mosaic_master_chunks_under_replicated", &[])?;
            (chunks == expected_chunks as f64 && under == 0.0).then_some(text)
        },
    );
    assert_eq!(
        sample(&text, "mosaic_master_files", &[]),
        Some(FILES.len() as f64),
        "{text}"
    );
    assert_eq!(sample(&text, "mosaic_master_chunks_lost", &[]), Some(0.0));
    for method in [
        "MasterFs.prepare_write",
        "MasterFs.commit_write",
        "MasterFs.lookup",
    ] {
        let count = sample(
            &text,
            "mosaic_master_rpc_request_duration_seconds_count",
            &[("method", method)],
        )
        .unwrap_or(0.0);
        assert!(count > 0.0, "no {method} latency recorded:\n{text}");
    }
    let summary = cluster.master_summary().expect("summary");
    assert_eq!(summary.nodes.len(), cluster.chunkserver_count());
    for node in &summary.nodes {
        let id = node.node.to_string();
        assert_eq!(
            sample(&text, "mosaic_master_node_replicas", &[("node", &id)]),
            Some(node.replicas as f64),
            "{text}"
        );
        assert_eq!(
            sample(&text, "mosaic_master_node_online", &[("node", &id)]),
            Some(1.0)
        );
    }

    // Every chunkserver: the chunk count matches its disk, its write latencies were recorded.
    for i in 0..cluster.chunkserver_count() {
        let on_disk = cluster.chunk_files(i).len();
        assert!(on_disk > 0, "chunkserver {i} holds no chunk file");
        let text = get(cluster.chunkserver_metrics_addr(i))
            .unwrap_or_else(|| panic!("scrape chunkserver {i}"));
        assert_eq!(
            sample(&text, "mosaic_chunkserver_chunks", &[]),
            Some(on_disk as f64),
            "chunkserver {i}:\n{text}"
        );
        let used = sample(&text, "mosaic_chunkserver_used_bytes", &[]).unwrap_or(0.0);
        let capacity = sample(&text, "mosaic_chunkserver_capacity_bytes", &[]).unwrap_or(0.0);
        assert!(used > 0.0 && capacity >= used, "chunkserver {i}:\n{text}");
        let writes = sample(
            &text,
            "mosaic_chunkserver_rpc_request_duration_seconds_count",
            &[("method", "ChunkServer.write_blocks")],
        )
        .unwrap_or(0.0);
        assert!(
            writes > 0.0,
            "chunkserver {i} recorded no write latency:\n{text}"
        );
        assert!(
            sample(&text, "mosaic_chunkserver_write_bytes_total", &[]).unwrap_or(0.0) > 0.0,
            "{text}"
        );
    }

    // A running sentinel: every node HEALTHY with the chunk count its node reports.
    let sentinel = cluster.start_sentinel_with_metrics(200);
    let text = wait_for(
        SETTLE,
        "the sentinel's metrics to show every node HEALTHY",
        Some(&master_log),
        || {
            let text = get(sentinel.metrics_addr)?;
            summary
                .nodes
                .iter()
                .all(|n| {
                    let id = n.node.to_string();
                    sample(
                        &text,
                        "mosaic_sentinel_node_state",
                        &[("node", &id), ("addr", &n.addr), ("state", "HEALTHY")],
                    ) == Some(1.0)
                })
                .then_some(text)
        },
    );
    for (i, node) in summary.nodes.iter().enumerate() {
        let id = node.node.to_string();
        let chunks = sample(&text, "mosaic_sentinel_node_chunks", &[("node", &id)]);
        assert!(chunks.is_some_and(|c| c > 0.0), "node {i} {id}:\n{text}");
    }

    // The state query: each file on exactly the nodes holding its chunks.
    let mut expected: BTreeMap<NodeId, BTreeMap<String, (u64, BTreeSet<u64>)>> = BTreeMap::new();
    for (path, _) in FILES {
        let (ino, map) = chunk_map(cluster, path);
        assert_eq!(
            map.len(),
            FILES
                .iter()
                .find(|f| f.0 == path)
                .map_or(0, |f| f.1.div_ceil(MIB))
        );
        for (chunk, nodes) in map {
            assert!(!nodes.is_empty(), "{path}: chunk {chunk} has no replica");
            for node in nodes {
                expected
                    .entry(node)
                    .or_default()
                    .entry(format!("/{path}"))
                    .or_insert_with(|| (ino.0, BTreeSet::new()))
                    .1
                    .insert(chunk.0);
            }
        }
    }
    for node in &summary.nodes {
        let id = node.node.to_string();
        let json = cluster
            .try_sentinel_node_files(&id)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json["node"], id.as_str(), "{json:#}");
        assert_eq!(json["addr"], node.addr.as_str(), "{json:#}");
        let mut got: BTreeMap<String, (u64, BTreeSet<u64>)> = BTreeMap::new();
        for file in json["files"].as_array().expect("files is a list") {
            let path = file["path"]
                .as_str()
                .expect("every written file has a path");
            let ino = file["ino"].as_u64().expect("ino");
            let chunks = file["chunks"]
                .as_array()
                .expect("chunks")
                .iter()
                .map(|c| {
                    assert_eq!(c["current"], true, "{json:#}");
                    c["chunk"].as_u64().expect("chunk id")
                })
                .collect();
            got.insert(path.to_string(), (ino, chunks));
        }
        let want = expected.remove(&node.node).unwrap_or_default();
        assert_eq!(got, want, "node {id}: files and chunks listed vs chunk map");
        assert_eq!(
            json["replicas"].as_u64(),
            Some(want.values().map(|(_, c)| c.len() as u64).sum()),
            "{json:#}"
        );
    }
    assert!(
        expected.is_empty(),
        "chunk map names unknown nodes: {expected:?}"
    );

    // An unknown node is an error, not an empty listing.
    let err = cluster
        .try_sentinel_node_files("n999")
        .expect_err("unknown node");
    assert!(err.contains("knows no node n999"), "{err}");
}

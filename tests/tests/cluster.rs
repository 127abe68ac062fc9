//! Cluster tests without FUSE: daemons start and register, `mosaic-sentinel status --json`
//! keeps its contract, and the master's namespace and node registry survive `kill -9` of the
//! master and restarts of chunkservers.

use std::collections::BTreeSet;
use std::time::Duration;

use common::rpc::{MasterFsClient, connect_master_fs, ctx};
use common::types::{Caller, FileKind, NewNode, OpId, RenameFlags};
use common::{FsError, FsResult, InodeId, SessionId};
use mosaic_tests::cluster::{RPC_DEADLINE, block_on};
use mosaic_tests::{ClusterOptions, TestCluster, wait_for};
use serde_bytes::ByteBuf;

/// Time for a restarted daemon to be seen again: a few heartbeat intervals plus CI slack.
const SETTLE: Duration = Duration::from_secs(30);

fn name(text: &str) -> ByteBuf {
    ByteBuf::from(text.as_bytes().to_vec())
}

fn new_node(kind: FileKind, perm: u16, target: Option<&str>) -> NewNode {
    NewNode {
        kind,
        perm,
        umask: 0o022,
        rdev: 0,
        symlink_target: target.map(name),
        caller: Caller::root(),
    }
}

/// The node states that a healthy cluster's status shows: every one `HEALTHY`, each with the
/// address of one of our chunkservers.
fn healthy_status(cluster: &TestCluster) -> serde_json::Value {
    let want: BTreeSet<String> = (0..cluster.chunkserver_count())
        .map(|i| cluster.chunkserver_addr(i))
        .collect();
    let log = cluster.master_log();
    wait_for(
        SETTLE,
        "mosaic-sentinel status to report HEALTHY with every chunkserver",
        Some(&log),
        || {
            let status = cluster.try_sentinel_status().ok()?;
            let nodes = status["nodes"].as_array()?;
            let addrs: BTreeSet<String> = nodes
                .iter()
                .filter_map(|n| n["addr"].as_str().map(str::to_string))
                .collect();
            let all_healthy = nodes.iter().all(|n| n["state"] == "HEALTHY");
            (status["verdict"] == "HEALTHY" && addrs == want && all_healthy).then_some(status)
        },
    )
}

#[test]
fn cluster_starts_and_every_chunkserver_registers() {
    let cluster = TestCluster::start(ClusterOptions::default());
    assert_eq!(cluster.chunkserver_count(), 3);

    let status = healthy_status(&cluster);
    let nodes = status["nodes"].as_array().expect("nodes is a list");
    assert_eq!(nodes.len(), 3, "{status:#}");
    let ids: BTreeSet<String> = nodes
        .iter()
        .map(|n| match &n["id"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    assert_eq!(ids.len(), 3, "node ids must be distinct: {status:#}");
    for key in ["total", "under_replicated", "lost"] {
        assert_eq!(
            status["chunks"][key].as_u64(),
            Some(0),
            "an empty cluster has 0 chunks {key}: {status:#}"
        );
    }

    // The master's own view agrees.
    let summary = cluster.master_summary().expect("cluster summary");
    assert_eq!(summary.nodes.len(), 3, "{summary:?}");
    assert!(summary.nodes.iter().all(|n| n.online), "{summary:?}");
    assert_eq!(summary.replication.n, 3);
}

/// Creates `docs/`, `docs/readme`, a hard link `docs/readme2`, a symlink `link`, renames
/// `docs/draft` to `docs/final` and removes `gone`: every kind of namespace mutation.
async fn populate(client: &MasterFsClient) -> FsResult<()> {
    let c = || ctx(RPC_DEADLINE);
    // Each mutation its own operation id (a repeated id would get the first answer).
    let op = |seq| OpId {
        session: SessionId(0),
        seq,
    };
    let root = InodeId::ROOT;
    let docs = client
        .create(
            c(),
            op(1),
            root,
            name("docs"),
            new_node(FileKind::Dir, 0o755, None),
        )
        .await??;
    let readme = client
        .create(
            c(),
            op(2),
            docs.ino,
            name("readme"),
            new_node(FileKind::File, 0o640, None),
        )
        .await??;
    client
        .link(c(), op(7), readme.ino, docs.ino, name("readme2"))
        .await??;
    client
        .create(
            c(),
            op(3),
            root,
            name("link"),
            new_node(FileKind::Symlink, 0o777, Some("docs/readme")),
        )
        .await??;
    client
        .create(
            c(),
            op(4),
            docs.ino,
            name("draft"),
            new_node(FileKind::File, 0o600, None),
        )
        .await??;
    client
        .rename(
            c(),
            op(5),
            docs.ino,
            name("draft"),
            docs.ino,
            name("final"),
            RenameFlags::default(),
        )
        .await??;
    client
        .create(
            c(),
            op(6),
            root,
            name("gone"),
            new_node(FileKind::File, 0o644, None),
        )
        .await??;
    client.unlink(c(), op(8), root, name("gone")).await??;
    Ok(())
}

async fn names(client: &MasterFsClient, dir: InodeId) -> FsResult<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut after = 0;
    loop {
        let page = client
            .readdir(ctx(RPC_DEADLINE), dir, after, 100, false)
            .await??;
        for entry in &page.entries {
            out.insert(String::from_utf8_lossy(&entry.name).into_owned());
            after = entry.cookie;
        }
        if page.end || page.entries.is_empty() {
            return Ok(out);
        }
    }
}

/// Checks that everything [`populate`] did is there.
async fn verify(client: &MasterFsClient) -> FsResult<()> {
    let c = || ctx(RPC_DEADLINE);
    let root = InodeId::ROOT;
    let root_names = names(client, root).await?;
    let want: BTreeSet<String> = ["docs", "link"].iter().map(|s| s.to_string()).collect();
    assert!(
        root_names.is_superset(&want) && !root_names.contains("gone"),
        "root holds {root_names:?}"
    );
    let docs = client.lookup(c(), root, name("docs")).await??;
    assert_eq!(docs.kind, FileKind::Dir);
    assert_eq!(docs.perm, 0o755);
    let doc_names = names(client, docs.ino).await?;
    let want: BTreeSet<String> = ["readme", "readme2", "final"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(doc_names, want);
    let readme = client.lookup(c(), docs.ino, name("readme")).await??;
    let readme2 = client.lookup(c(), docs.ino, name("readme2")).await??;
    assert_eq!(readme.ino, readme2.ino, "a hard link shares the inode");
    assert_eq!(readme.nlink, 2);
    assert_eq!(readme.perm, 0o640);
    let link = client.lookup(c(), root, name("link")).await??;
    assert_eq!(link.kind, FileKind::Symlink);
    let target = client.readlink(c(), link.ino).await??;
    assert_eq!(&target[..], b"docs/readme");
    assert_eq!(
        client.lookup(c(), docs.ino, name("draft")).await?,
        Err(FsError::NotFound)
    );
    assert_eq!(
        client.lookup(c(), root, name("gone")).await?,
        Err(FsError::NotFound)
    );
    Ok(())
}

#[test]
fn master_kill_9_and_restart_keeps_the_namespace() {
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let addr = cluster.master_addr();
    let tls = cluster.client_tls();
    block_on(async {
        let client = connect_master_fs(&addr, &tls, RPC_DEADLINE).await?;
        populate(&client).await?;
        verify(&client).await
    })
    .expect("populate the namespace");

    // Every operation above was acknowledged, so it must survive a crash of the master.
    cluster.kill_master();
    cluster.restart_master();

    block_on(async {
        let client = connect_master_fs(&addr, &tls, RPC_DEADLINE).await?;
        verify(&client).await
    })
    .expect("the namespace after the restart");
    // The chunkservers find the restarted master again.
    cluster.wait_all_nodes_online(SETTLE);
}

#[test]
fn chunkservers_keep_their_node_ids_across_restarts() {
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let before = cluster.wait_all_nodes_online(SETTLE);
    let ids_before: BTreeSet<_> = before.nodes.iter().map(|n| n.node).collect();
    assert_eq!(ids_before.len(), 3);

    // One crash, one graceful stop: both come back as the same node, not as a new one.
    cluster.kill_chunkserver(0);
    let status = cluster.stop_chunkserver(1);
    assert!(status.success(), "SIGTERM is a clean exit, got {status}");
    cluster.restart_chunkserver(0);
    cluster.restart_chunkserver(1);

    let after = cluster.wait_all_nodes_online(SETTLE);
    let ids_after: BTreeSet<_> = after.nodes.iter().map(|n| n.node).collect();
    assert_eq!(
        ids_after, ids_before,
        "restarted chunkservers must keep their ids; summary {after:?}"
    );
}

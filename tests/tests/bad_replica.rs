//! A replica is marked bad only on its own node's evidence (issue 12, docs/SECURITY.md "Bad
//! replicas"): a mount with an out-of-date key gets EIO and blames no replica; a client that
//! reports every replica it can name as bad makes no chunk lose a replica; a genuinely
//! flipped byte is still confirmed by its node and repaired, and `mosaic-sentinel clear-bad`
//! is refused while the node does not vouch for the replica. Real daemons on loopback and
//! real FUSE mounts; every wait has a deadline.

use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::rpc::{connect_master_fs, ctx};
use common::types::NodeReplica;
use common::{ChunkId, FsError, NodeId};
use mosaic_tests::bins::{self, bin};
use mosaic_tests::cluster::block_on;
use mosaic_tests::shell::run;
use mosaic_tests::tree::pattern_bytes;
use mosaic_tests::{ClusterOptions, MountOptions, TestCluster, require_fuse, wait_until_logged};

const MIB: usize = 1024 * 1024;
const TOOL_DEADLINE: Duration = Duration::from_secs(120);
const RPC_DEADLINE: Duration = Duration::from_secs(10);
/// Deadline for the master to verify, mark and repair (heartbeats, a repair round).
const SETTLE: Duration = Duration::from_secs(60);
/// How long a wrong decision would take to show: a bad mark queues the replica's deletion,
/// which its node learns at its next heartbeat (1 s in tests); three of them and a repair
/// round leave no doubt.
const WOULD_SHOW: Duration = Duration::from_secs(4);
/// Offset of copy 0 of block 0 in a chunk file of 1 MiB chunks (a 4 KiB header and the
/// block table padded to 4 KiB), as in `replication.rs`.
const FIRST_SLOT: u64 = 8192;

fn write_synced(path: &Path, data: &[u8]) {
    let mut f = std::fs::File::create(path).expect("create");
    f.write_all(data).expect("write");
    f.sync_all().expect("fsync");
}

/// Every replica the master records, node by node, sorted: what must not change.
fn all_replicas(cluster: &TestCluster) -> Vec<(NodeId, Vec<NodeReplica>)> {
    (0..cluster.chunkserver_count())
        .map(|i| {
            let node = cluster.chunkserver_node(i);
            let mut held = cluster.node_contents(node).expect("node contents");
            held.sort_by_key(|r| r.chunk);
            (node, held)
        })
        .collect()
}

fn chunk_file_count(cluster: &TestCluster) -> usize {
    (0..cluster.chunkserver_count())
        .map(|i| cluster.chunk_files(i).len())
        .sum()
}

fn master_log(cluster: &TestCluster) -> String {
    std::fs::read_to_string(cluster.master_log()).unwrap_or_default()
}

/// `rotate-key` of the master's copy (`--key-file` is its default with `--state`; named here
/// so the same command runs against binaries from before `--state` recorded the key).
fn rotate_on_master_host(cluster: &TestCluster) -> String {
    let mut rotate = Command::new(bin(bins::MASTER));
    rotate
        .arg("rotate-key")
        .arg("--key-file")
        .arg(cluster.key_file())
        .arg("--state")
        .arg(cluster.state_dir());
    let out = run(rotate, TOOL_DEADLINE);
    assert!(out.status.success(), "rotate-key: {}", out.stderr_text());
    out.stdout_text()
}

fn reencrypt(cluster: &TestCluster, key: &Path) {
    let mut cmd = Command::new(bin(bins::MOUNT));
    cmd.arg("reencrypt")
        .arg("--master")
        .arg(cluster.master_addr())
        .arg("--key-file")
        .arg(key)
        .arg("--credentials")
        .arg(cluster.credentials("client"));
    let out = run(cmd, TOOL_DEADLINE);
    assert!(
        out.status.success(),
        "reencrypt failed ({}):\n{}{}",
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
}

/// `mosaic-sentinel clear-bad CHUNK NODE` with the sentinel credential: whether it exited 0,
/// and what it printed.
fn clear_bad(cluster: &TestCluster, chunk: ChunkId, node: NodeId) -> (bool, String) {
    let mut cmd = Command::new(bin(bins::SENTINEL));
    cmd.arg("clear-bad")
        .arg(chunk.to_string())
        .arg(node.to_string())
        .arg("--master")
        .arg(cluster.master_addr())
        .arg("--credentials")
        .arg(cluster.credentials("sentinel"));
    let out = run(cmd, TOOL_DEADLINE);
    (
        out.status.success(),
        format!("{}{}", out.stdout_text(), out.stderr_text()),
    )
}

#[test]
fn a_mount_with_an_old_key_gets_eio_and_no_replica_is_blamed() {
    let Some(_fuse) = require_fuse("a_mount_with_an_old_key_gets_eio_and_no_replica_is_blamed")
    else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let data = pattern_bytes(61, 2 * MIB + 4321);
    let old_key = cluster.root().join("old.key");
    std::fs::copy(cluster.key_file(), &old_key).expect("keep the old key file");
    {
        let mount = cluster.mount(MountOptions::default());
        write_synced(&mount.path().join("f"), &data);
        assert!(std::fs::read(mount.path().join("f")).expect("read before") == data);
    }
    cluster.wait_fully_replicated(SETTLE);
    // Mounted before the rotation, as a client the admin forgot to update.
    let stale = cluster.mount(MountOptions {
        key_file: Some(old_key.clone()),
        ..MountOptions::default()
    });

    // README's rotation: on the master host, which rewrites the master's copy.
    let said = rotate_on_master_host(&cluster);
    assert!(said.contains("added data key 1"), "{said}");
    reencrypt(&cluster, cluster.key_file());
    // The resealing writes commit at W; the last replica catches up in the background.
    cluster.wait_fully_replicated(SETTLE);
    let before = all_replicas(&cluster);
    let files_before = chunk_file_count(&cluster);

    let err = std::fs::read(stale.path().join("f")).expect_err("the old key cannot open it");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    std::thread::sleep(WOULD_SHOW);
    let log = master_log(&cluster);
    assert!(
        !log.contains("replica reported bad"),
        "the stale mount reported a replica:\n{log}"
    );
    assert_eq!(
        all_replicas(&cluster),
        before,
        "no replica dropped or demoted"
    );
    assert_eq!(
        chunk_file_count(&cluster),
        files_before,
        "no chunk file deleted"
    );
    drop(stale);

    let good = cluster.mount(MountOptions::default());
    assert!(std::fs::read(good.path().join("f")).expect("read after") == data);
    drop(good);

    // A new mount with the old key file is refused, naming the key it lacks.
    let refused = cluster
        .try_mount(MountOptions {
            key_file: Some(old_key),
            ..MountOptions::default()
        })
        .err()
        .expect("a mount with the old key file is refused");
    assert!(
        refused.log.contains("lacks key ids [1]"),
        "refusal names the missing key:\n{}",
        refused.log
    );
}

#[test]
fn forged_bad_replica_reports_cannot_drop_any_replica() {
    let Some(_fuse) = require_fuse("forged_bad_replica_reports_cannot_drop_any_replica") else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    {
        let mount = cluster.mount(MountOptions::default());
        for (i, size) in [3 * MIB, MIB / 3, 5000].into_iter().enumerate() {
            write_synced(
                &mount.path().join(format!("f{i}")),
                &pattern_bytes(70 + i as u64, size),
            );
        }
    }
    cluster.wait_fully_replicated(SETTLE);
    let before = all_replicas(&cluster);
    let files_before = chunk_file_count(&cluster);
    let nodes: Vec<NodeId> = before.iter().map(|(n, _)| *n).collect();
    let mut chunks: Vec<ChunkId> = before
        .iter()
        .flat_map(|(_, held)| held.iter().map(|r| r.chunk))
        .collect();
    chunks.sort();
    chunks.dedup();
    assert!(chunks.len() >= 5, "{chunks:?}");

    // Every chunk the client can name, on every node, reported bad with a client
    // credential, twice over.
    let (addr, tls) = (cluster.master_addr(), cluster.client_tls());
    let reports = block_on(async move {
        let client = connect_master_fs(&addr, &tls, RPC_DEADLINE).await?;
        let mut sent = 0;
        for _ in 0..2 {
            for &chunk in &chunks {
                for &node in &nodes {
                    client
                        .report_bad_replica(ctx(RPC_DEADLINE), chunk, node, "forged".into())
                        .await
                        .map_err(FsError::from)??;
                    sent += 1;
                }
            }
        }
        Ok::<_, FsError>(sent)
    })
    .expect("reports accepted");
    // A mark on a report's word alone would show at once.
    std::thread::sleep(WOULD_SHOW);
    assert_eq!(
        all_replicas(&cluster),
        before,
        "{reports} forged reports dropped or demoted replicas"
    );
    let replicas: usize = before.iter().map(|(_, held)| held.len()).sum();
    let log = cluster.master_log();
    // The master asked every node about each of its replicas, and each vouched for it.
    wait_until_logged(
        SETTLE,
        "every reported replica verified by its node",
        &log,
        || {
            master_log(&cluster)
                .matches("node vouches for its replica")
                .count()
                >= replicas
        },
    );
    std::thread::sleep(WOULD_SHOW);
    assert!(
        !master_log(&cluster).contains("replica confirmed bad"),
        "{reports} forged reports"
    );
    assert_eq!(
        all_replicas(&cluster),
        before,
        "no replica dropped or demoted"
    );
    assert_eq!(
        chunk_file_count(&cluster),
        files_before,
        "no chunk file deleted"
    );
    let summary = cluster.master_summary().expect("summary");
    assert_eq!((summary.under_replicated, summary.lost), (0, 0));
}

#[test]
fn a_flipped_byte_is_confirmed_by_its_node_and_repaired() {
    let Some(_fuse) = require_fuse("a_flipped_byte_is_confirmed_by_its_node_and_repaired") else {
        return;
    };
    // The damage is met by a client's read (or the node's own scrub): either way the node
    // quarantines and reports it, and the master marks it bad only on the node's verdict.
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let data = pattern_bytes(80, MIB / 2);
    {
        let mount = cluster.mount(MountOptions::default());
        write_synced(&mount.path().join("f"), &data);
    }
    cluster.wait_fully_replicated(SETTLE);
    let victim = cluster
        .chunk_files(0)
        .into_iter()
        .next()
        .expect("chunkserver 0 holds the chunk");
    let name = victim.file_name().expect("file name").to_owned();
    let chunk = name
        .to_str()
        .and_then(|n| n.strip_suffix(".chunk"))
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .map(ChunkId)
        .expect("a chunk file name");
    let node0 = cluster.chunkserver_node(0);
    {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&victim)
            .expect("open chunk file");
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, FIRST_SLOT + 100)
            .expect("read byte");
        b[0] ^= 0x20;
        f.write_all_at(&b, FIRST_SLOT + 100).expect("flip byte");
    }
    // Only the damaged node serves the read, so the damage is met for sure.
    cluster.kill_chunkserver(1);
    cluster.kill_chunkserver(2);
    {
        let reader = cluster.mount(MountOptions::default());
        let err = std::fs::read(reader.path().join("f")).expect_err("no good replica is up");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    }
    let log = cluster.master_log();
    wait_until_logged(SETTLE, "the node to confirm the damage", &log, || {
        master_log(&cluster).contains("replica confirmed bad by its node")
    });
    // The admin cannot clear the mark: the node no longer vouches for the replica (or, once
    // the node took the replica's deletion at its heartbeat, the master records none).
    let (cleared, said) = clear_bad(&cluster, chunk, node0);
    assert!(
        !cleared && (said.contains("does not vouch") || said.contains("records no replica")),
        "clear-bad of a quarantined replica:\n{said}"
    );
    cluster.restart_chunkserver(1);
    cluster.restart_chunkserver(2);
    wait_until_logged(
        SETTLE,
        "the replica repaired on chunkserver 0",
        &log,
        || {
            cluster
                .chunk_files(0)
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
                && cluster
                    .master_summary()
                    .is_ok_and(|s| s.under_replicated == 0 && s.lost == 0)
        },
    );
    let (cleared, said) = clear_bad(&cluster, chunk, node0);
    assert!(
        cleared && said.contains("was not marked bad"),
        "clear-bad of the repaired replica:\n{said}"
    );
    // The repaired copy is good: it serves the file alone.
    cluster.kill_chunkserver(1);
    cluster.kill_chunkserver(2);
    let last = cluster.mount(MountOptions::default());
    assert!(std::fs::read(last.path().join("f")).expect("read repaired") == data);
}

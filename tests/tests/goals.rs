//! Per-directory replication goals through a real mount (docs/PROTOCOL.md, "Replication
//! goal"): four chunkserver processes, goals set and read with `setfattr`/`getfattr` on the
//! virtual `trusted.mosaic.goal` attribute, replica counts read from the master's
//! `node_contents` (what it will serve), convergence after raising and lowering a goal.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::{ChunkId, FsError, FsResult, InodeId};
use mosaic_tests::tree::pattern_bytes;
use mosaic_tests::{ClusterOptions, MountedCluster, TestCluster, sh, sh_output, wait_for};

const MIB: usize = 1024 * 1024;
/// Deadline for repair and trimming to converge on a loaded machine (repair rounds every
/// second, deletions with heartbeats).
const CONVERGE: Duration = Duration::from_secs(120);
const RPC: Duration = Duration::from_secs(10);

/// Current replicas per chunk index of `ino`, as the master records them.
fn replicas_by_index(cluster: &TestCluster, ino: InodeId) -> FsResult<BTreeMap<u64, usize>> {
    let summary = cluster.master_summary()?;
    let (addr, tls) = (cluster.master_addr(), cluster.client_tls());
    mosaic_tests::cluster::block_on(async move {
        let client = common::rpc::connect_master_admin(&addr, &tls, RPC).await?;
        let mut out = BTreeMap::new();
        for node in summary.nodes {
            let mut after = ChunkId(0);
            loop {
                let page = client
                    .node_contents(common::rpc::ctx(RPC), node.node, after, 10_000)
                    .await
                    .map_err(FsError::from)??;
                let Some(last) = page.last() else { break };
                after = last.chunk;
                for r in page.iter().filter(|r| r.ino == ino && r.current) {
                    *out.entry(r.index).or_insert(0) += 1;
                }
            }
        }
        Ok(out)
    })
}

fn ino_of(path: &Path) -> InodeId {
    InodeId(std::fs::metadata(path).expect("stat").ino())
}

fn set_goal(path: &Path, goal: &str) -> mosaic_tests::shell::CmdOutput {
    sh_output(&format!(
        "setfattr -n trusted.mosaic.goal -v '{goal}' '{}'",
        path.display()
    ))
}

fn get_goal(path: &Path) -> String {
    sh(&format!(
        "getfattr --only-values -n trusted.mosaic.goal '{}'",
        path.display()
    ))
}

/// Waits until every one of `chunks` chunks of `ino` has exactly `want` current replicas.
fn converge(cluster: &TestCluster, ino: InodeId, chunks: u64, want: usize, what: &str) {
    let expect: BTreeMap<u64, usize> = (0..chunks).map(|i| (i, want)).collect();
    wait_for(CONVERGE, what, Some(&cluster.master_log()), || {
        replicas_by_index(cluster, ino)
            .ok()
            .filter(|got| *got == expect)
    });
}

#[test]
fn directory_goals_are_inherited_and_changes_converge() {
    let opts = ClusterOptions {
        chunkservers: 4,
        ..ClusterOptions::default()
    };
    let Some(mc) =
        MountedCluster::start("directory_goals_are_inherited_and_changes_converge", opts)
    else {
        return;
    };
    let MountedCluster { mount, cluster, .. } = mc;
    cluster.wait_all_nodes_online(CONVERGE);
    let root = mount.path();
    let (two, four) = (root.join("two"), root.join("four"));
    std::fs::create_dir(&two).expect("mkdir");
    std::fs::create_dir(&four).expect("mkdir");
    assert_eq!(
        get_goal(&two),
        "3",
        "a new directory follows the cluster's N"
    );
    assert!(set_goal(&two, "2").status.success());
    assert!(set_goal(&four, "4").status.success());
    assert_eq!(get_goal(&two), "2");
    assert_eq!(get_goal(&four), "4");
    // Out of range: EINVAL, the goal unchanged.
    for bad in ["0", "9", "x"] {
        let out = set_goal(&two, bad);
        assert!(!out.status.success(), "goal {bad} must be refused");
        assert!(
            out.stderr_text().contains("Invalid argument"),
            "goal {bad}: {}",
            out.stderr_text()
        );
    }
    assert_eq!(get_goal(&two), "2");
    // Virtual: not listed, so copying tools do not carry it along.
    let listed = sh(&format!("getfattr -d -m - '{}'", two.display()));
    assert!(!listed.contains("mosaic"), "listed: {listed}");

    // Files inherit their directory's goal; a nested directory too.
    std::fs::create_dir(two.join("sub")).expect("mkdir");
    assert_eq!(get_goal(&two.join("sub")), "2");
    let data = pattern_bytes(80, 4 * MIB);
    let (a, b) = (two.join("sub").join("a"), four.join("b"));
    for path in [&a, &b] {
        write(path, &data);
        assert_eq!(std::fs::read(path).expect("read"), data);
    }
    let (ia, ib) = (ino_of(&a), ino_of(&b));
    converge(&cluster, ia, 4, 2, "goal-2 file at 2 replicas per chunk");
    converge(&cluster, ib, 4, 4, "goal-4 file at 4 replicas per chunk");

    // Raise one subtree, lower the other: repair copies, trimming drops the surplus.
    assert!(set_goal(&two, "4").status.success());
    assert_eq!(get_goal(&a), "4", "the change reaches files beneath");
    assert!(set_goal(&four, "1").status.success());
    converge(&cluster, ia, 4, 4, "raised file at 4 replicas per chunk");
    converge(&cluster, ib, 4, 1, "lowered file at 1 replica per chunk");
    // The dropped replicas leave the disks (deletions go out with heartbeats).
    let total = |c: &TestCluster| (0..4).map(|i| c.chunk_files(i).len()).sum::<usize>();
    wait_for(CONVERGE, "surplus chunk files to be deleted", None, || {
        (total(&cluster) == 4 * 4 + 4).then_some(())
    });
    // A fresh mount (no page cache) reads both back.
    drop(mount);
    let mut cluster = cluster;
    let second = cluster.mount(mosaic_tests::MountOptions::default());
    for name in ["two/sub/a", "four/b"] {
        assert_eq!(
            std::fs::read(second.path().join(name)).expect("read"),
            data,
            "{name}"
        );
    }
}

fn write(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create");
    for piece in data.chunks(MIB) {
        f.write_all(piece).expect("write");
    }
    f.sync_all().expect("fsync");
}

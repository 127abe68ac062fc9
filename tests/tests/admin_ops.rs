//! What an admin meets in the first hour (issue 12): small nodes take many small files, a
//! full cluster says ENOSPC at the point its space runs out and `status` says why writes are
//! refused, a goal or a drain the nodes can never satisfy is refused with the numbers, and a
//! node is removed for good by drain, stop, forget (refused for live nodes and last copies).
//! Real daemons and a real FUSE mount on loopback; every wait has a deadline.

use mosaic_tests::{ClusterOptions, MountedCluster, sh_in, sh_output, wait_for};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;
/// Deadline for the master to see a heartbeat and for `status` to show a change.
const SETTLE: Duration = Duration::from_secs(60);

fn reasons(status: &serde_json::Value) -> Vec<String> {
    status["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn small_nodes_take_a_thousand_small_files_then_fill_with_enospc_shown_in_status() {
    // The README's own sizes scaled down: 64 MiB chunks on nodes of 256 MiB. Before, every
    // new chunk reserved 64 MiB on each replica until the next heartbeat, so the fourth
    // new file within one heartbeat got ENOSPC on an empty cluster.
    let capacity = 256 * MIB;
    let opts = ClusterOptions {
        chunkservers: 3,
        chunk_size: 64 * MIB,
        capacity_bytes: Some(capacity),
        ..ClusterOptions::default()
    };
    let Some(mc) = MountedCluster::start(
        "small_nodes_take_a_thousand_small_files_then_fill_with_enospc_shown_in_status",
        opts,
    ) else {
        return;
    };
    let MountedCluster { mount, cluster, .. } = mc;
    cluster.wait_all_nodes_online(SETTLE);
    let dir = mount.path().join("small");
    std::fs::create_dir(&dir).expect("mkdir");
    // As fast as the shell goes; -e stops at the first failing write (or close).
    sh_in(
        &dir,
        "i=0; while [ $i -lt 1000 ]; do echo \"file $i\" > f$i; i=$((i + 1)); done",
    );
    for i in 0..1000 {
        let text = std::fs::read_to_string(dir.join(format!("f{i}"))).expect("read back");
        assert_eq!(text, format!("file {i}\n"), "f{i} lost its content");
    }
    let status = cluster.sentinel_status();
    assert_eq!(status["verdict"], "HEALTHY", "{status:#}");

    // Fill for real, with data that cannot be stored as holes. Every node holds every chunk (3 replicas on 3 nodes), so the data that
    // fits is what the fullest node has left, less the sealed blocks' overhead.
    let summary = cluster.wait_all_nodes_online(SETTLE);
    let free: Vec<u64> = summary
        .nodes
        .iter()
        .map(|n| n.status.capacity_bytes - n.status.used_bytes)
        .collect();
    let least = *free.iter().min().expect("nodes");
    let most = *free.iter().max().expect("nodes");
    let big = mount.path().join("big");
    let out = sh_output(&format!(
        "dd if=/dev/urandom of='{}' bs=1M count=400 iflag=fullblock conv=fsync",
        big.display()
    ));
    assert!(!out.status.success(), "400 MiB fit on 256 MiB nodes");
    assert!(
        out.stderr_text().contains("No space left on device"),
        "{}",
        out.stderr_text()
    );
    let written = std::fs::metadata(&big).map(|m| m.len()).unwrap_or(0);
    // The right point: close to the space there was (before, placement wanted a whole
    // free chunk and refused with 64 MiB still free on every node). The recorded size may
    // run a few MiB past it: what the writer had already handed over when the error
    // surfaced (seen: 250 MiB recorded with 244 MiB free).
    assert!(
        written >= least * 85 / 100 && written <= most + 16 * MIB,
        "ENOSPC after {written} bytes with {least}..{most} bytes free per node"
    );
    // A new file needs a new chunk: placement refuses it, the master says why.
    let mut tries = 0;
    let status = wait_for(
        SETTLE,
        "status to say writes are refused for lack of space",
        Some(&cluster.master_log()),
        || {
            // Keep asking for new chunks (new files) until the nodes' reports show them full.
            tries += 1;
            let more = mount.path().join(format!("more{tries}"));
            let _ = sh_output(&format!("echo more > '{}'", more.display()));
            let status = cluster.try_sentinel_status().ok()?;
            reasons(&status)
                .iter()
                .any(|r| r.contains("writes refused for lack of space"))
                .then_some(status)
        },
    );
    assert_ne!(status["verdict"], "HEALTHY", "{status:#}");
    eprintln!(
        "ENOSPC after {} MiB; {tries} more new files tried; status: {:?}",
        written / MIB,
        reasons(&status)
    );
    let log = std::fs::read_to_string(cluster.master_log()).expect("master log");
    assert!(
        log.contains("write refused for lack of space") && log.contains("MiB free"),
        "the master logs the refusal with the numbers"
    );
}

#[test]
fn goals_and_drains_the_nodes_cannot_satisfy_are_refused_with_the_numbers() {
    let Some(mc) = MountedCluster::start(
        "goals_and_drains_the_nodes_cannot_satisfy_are_refused_with_the_numbers",
        ClusterOptions::default(),
    ) else {
        return;
    };
    let MountedCluster { mount, cluster, .. } = mc;
    cluster.wait_all_nodes_online(SETTLE);
    let dir = mount.path().join("precious");
    std::fs::create_dir(&dir).expect("mkdir");
    // The README's example: goal 5 on a 3-node cluster.
    let out = sh_output(&format!(
        "setfattr -n trusted.mosaic.goal -v 5 '{}'",
        dir.display()
    ));
    assert!(!out.status.success(), "goal 5 on 3 nodes accepted");
    assert!(
        out.stderr_text().contains("Invalid argument"),
        "{}",
        out.stderr_text()
    );
    let log = std::fs::read_to_string(cluster.master_log()).expect("master log");
    assert!(
        log.contains("goal 5 needs 5 chunkservers, the cluster has 3"),
        "the master says why"
    );
    let out = sh_output(&format!(
        "setfattr -n trusted.mosaic.goal -v 3 '{}' && getfattr --only-values -n trusted.mosaic.goal '{}'",
        dir.display(),
        dir.display()
    ));
    assert_eq!(out.stdout_text(), "3", "{}", out.stderr_text());

    // Data on every node, goal 3 on 3 nodes: no node can be drained.
    std::fs::write(dir.join("a"), vec![7u8; 300_000]).expect("write");
    let node = cluster.chunkserver_node(0);
    let err = cluster
        .sentinel_drain(node, true)
        .expect_err("a drain that cannot complete is refused");
    assert!(
        err.contains(&format!("draining {node} needs 3 other nodes up")) && err.contains("2 are"),
        "{err}"
    );
    let status = cluster.sentinel_status();
    assert_eq!(
        status["verdict"], "HEALTHY",
        "nothing was queued: {status:#}"
    );
}

/// The node's condition in the master's summary (`None`: not listed).
fn condition_of(
    cluster: &mosaic_tests::TestCluster,
    node: common::NodeId,
) -> Option<common::types::NodeCondition> {
    online_condition(cluster, node).map(|(_, c)| c)
}

/// Whether the master sees the node online, and its condition (`None`: not listed).
fn online_condition(
    cluster: &mosaic_tests::TestCluster,
    node: common::NodeId,
) -> Option<(bool, common::types::NodeCondition)> {
    cluster
        .master_summary()
        .ok()?
        .nodes
        .iter()
        .find(|n| n.node == node)
        .map(|n| (n.online, n.condition))
}

#[test]
fn forget_removes_a_drained_stopped_node_and_refuses_live_nodes_and_last_copies() {
    use common::types::NodeCondition;
    use mosaic_tests::{MountOptions, TestCluster, wait_until};
    let Some(_fuse) = mosaic_tests::require_fuse(
        "forget_removes_a_drained_stopped_node_and_refuses_live_nodes_and_last_copies",
    ) else {
        return;
    };
    // Goal 1: each chunk has one copy, so a dead node holds the last copy of its chunks.
    let mut cluster = TestCluster::start(ClusterOptions {
        chunkservers: 4,
        replicas: Some(1),
        write_quorum: Some(1),
        read_quorum: Some(1),
        ..ClusterOptions::default()
    });
    let mount = cluster.mount(MountOptions::default());
    for i in 0..8 {
        std::fs::write(
            mount.path().join(format!("f{i}")),
            vec![i as u8; 3 * mosaic_tests::TEST_CHUNK_SIZE as usize],
        )
        .expect("write");
    }
    cluster.wait_fully_replicated(SETTLE);
    cluster.start_sentinel("s1", &["--probe-interval-ms", "500"]);
    let nodes: Vec<common::NodeId> = (0..4).map(|i| cluster.chunkserver_node(i)).collect();
    let held: Vec<usize> = nodes
        .iter()
        .map(|&n| cluster.node_contents(n).expect("contents").len())
        .collect();
    // The drained node is 0; the one killed with last copies is the fullest of the others.
    let (drained, up) = (nodes[0], nodes[1]);
    let last = (1..4).max_by_key(|&i| held[i]).expect("nodes");
    assert!(
        held[last] > 0,
        "node {} holds replicas: {held:?}",
        nodes[last]
    );

    // An up node is refused, with why.
    let err = cluster
        .sentinel_admin(&["forget", &up.to_string()])
        .expect_err("an up node is forgotten");
    assert!(err.contains(&format!("node {up} is UP")), "{err}");

    // Drain, stop, forget.
    cluster.sentinel_drain(drained, true).expect("drain");
    wait_until(SETTLE * 3, "the drained node to be DECOMMISSIONED", || {
        condition_of(&cluster, drained) == Some(NodeCondition::Decommissioned)
    });
    // Still running: refused.
    let err = cluster
        .sentinel_admin(&["forget", &drained.to_string()])
        .expect_err("a running node is forgotten");
    assert!(err.contains("still reports in"), "{err}");
    cluster.stop_chunkserver(0);
    let mut last_err = String::new();
    wait_until(SETTLE, "the stopped node to be forgotten", || {
        match cluster.sentinel_admin(&["forget", &drained.to_string()]) {
            Ok(out) => {
                assert!(out.contains("forgotten"), "{out}");
                true
            }
            Err(e) => {
                // Until the master sees it offline.
                assert!(e.contains("still reports in"), "{e}");
                last_err = e;
                std::thread::sleep(Duration::from_millis(250));
                false
            }
        }
    });
    let status = cluster.sentinel_status();
    let listed: Vec<String> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_string))
        .collect();
    assert!(
        !listed.contains(&drained.to_string()),
        "{listed:?} ({last_err})"
    );
    assert_eq!(status["verdict"], "HEALTHY", "{status:#}");
    cluster
        .sentinel_admin(&["status"])
        .expect("status exits 0 once the forgotten node is gone");
    let err = cluster
        .sentinel_admin(&["forget", &drained.to_string()])
        .expect_err("forgotten twice");
    assert!(err.contains("knows no node"), "{err}");

    // A dead node holding the last copy of its chunks is refused with the number.
    let victim = nodes[last];
    cluster.kill_chunkserver(last);
    wait_until(
        SETTLE,
        "the killed node to be declared DEAD and offline",
        || online_condition(&cluster, victim) == Some((false, NodeCondition::Dead)),
    );
    let err = cluster
        .sentinel_admin(&["forget", &victim.to_string()])
        .expect_err("a node holding last copies is forgotten");
    assert!(err.contains("holds the last copy of"), "{err}");
    assert!(
        condition_of(&cluster, victim).is_some(),
        "still listed after the refusal"
    );
    drop(mount);
}

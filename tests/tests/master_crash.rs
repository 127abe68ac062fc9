//! Issue 4, item 7: `kill -9` of the master in the middle of a metadata-heavy workload. The
//! workload runs on through the crash (the client retries within its window and the master
//! answers a retried request with its recorded answer, never a second application), and after
//! the restart every acknowledged operation is there — without remounting.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mosaic_tests::wait::wait_until;
use mosaic_tests::{ClusterOptions, MountOptions, TestCluster, require_fuse};

/// Iterations of the workload; each is eight namespace operations and a small write.
const ROUNDS: usize = 150;

#[test]
fn master_crash_during_metadata_workload_loses_nothing() {
    let Some(_fuse) = require_fuse("master_crash_during_metadata_workload_loses_nothing") else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let mount = cluster.mount(MountOptions::default());
    let work = tempfile::tempdir().expect("temp dir");
    let progress = work.path().join("progress");
    // Every command must succeed (set -e): a retried create answered EEXIST, a retried
    // unlink answered ENOENT, or an EIO would stop the loop with a failure.
    let script = format!(
        "set -e; cd '{mnt}'; for i in $(seq 1 {ROUNDS}); do \
           mkdir d$i; echo $i > d$i/f; mv d$i/f d$i/g; ln d$i/g d$i/h; rm d$i/h; \
           ln -s g d$i/s; touch d$i/t; rm d$i/t; chmod 600 d$i/g; \
           echo $i >> '{progress}'; done",
        mnt = mount.path().display(),
        progress = progress.display(),
    );
    let mut workload = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the workload");
    let rounds_done = || {
        std::fs::read_to_string(&progress)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(120),
        "the workload to get going",
        || rounds_done() >= 20,
    );
    cluster.kill_master();
    let crashed_at = rounds_done();
    cluster.restart_master();

    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = workload.try_wait().expect("poll the workload") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = workload.kill();
            panic!("the workload did not finish within 300 s of the master's restart");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = workload.stderr.take() {
        use std::io::Read as _;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(
        status.success(),
        "the workload failed across the master crash (at round {crashed_at}): {status}\n{stderr}"
    );
    assert_eq!(rounds_done(), ROUNDS);

    // Every round's result is there, read through the same mount (no remount) ...
    let check = |root: &std::path::Path| {
        for i in 1..=ROUNDS {
            let d = root.join(format!("d{i}"));
            let g = std::fs::read_to_string(d.join("g")).expect("read g");
            assert_eq!(g.trim(), i.to_string(), "content of d{i}/g");
            let meta = std::fs::metadata(d.join("g")).expect("stat g");
            use std::os::unix::fs::MetadataExt as _;
            assert_eq!(meta.nlink(), 1, "d{i}/g: the link was removed");
            assert_eq!(meta.mode() & 0o777, 0o600, "d{i}/g mode");
            for gone in ["f", "h", "t"] {
                assert!(!d.join(gone).exists(), "d{i}/{gone} must be gone");
            }
            assert_eq!(
                std::fs::read_link(d.join("s")).expect("readlink"),
                std::path::PathBuf::from("g")
            );
        }
    };
    check(mount.path());
    // ... and through a fresh mount after another crash and restart of the master.
    cluster.kill_master();
    cluster.restart_master();
    let second = cluster.mount(MountOptions::default());
    check(second.path());
    second.unmount();
    mount.unmount();
}

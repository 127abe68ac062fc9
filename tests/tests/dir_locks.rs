//! One daemon per directory (issue 12): a second master on a running master's state
//! directory, or a second chunkserver on a running chunkserver's data directory, is refused
//! at start with the holder's pid; the offline admin commands keep working beside the
//! running master; a killed daemon's lock file never blocks its restart. Real daemons on
//! loopback; every wait has a deadline.

use mosaic_tests::bins::{self, bin};
use mosaic_tests::shell::run;
use mosaic_tests::{ClusterOptions, TestCluster};
use std::process::Command;
use std::time::Duration;

/// A refused daemon exits at once; a daemon that was not refused serves until killed.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn a_second_master_on_one_state_directory_is_refused_with_the_holders_pid() {
    let mut cluster = TestCluster::start(ClusterOptions {
        chunkservers: 1,
        ..ClusterOptions::default()
    });
    let holder = cluster.master_pid().expect("master runs");
    let mut cmd = Command::new(bin(bins::MASTER));
    cmd.arg("run")
        .arg("--state")
        .arg(cluster.state_dir())
        .arg("--listen")
        .arg("127.0.0.1:0");
    let out = run(cmd, REFUSAL_DEADLINE);
    let err = out.stderr_text();
    assert!(!out.status.success(), "second master started:\n{err}");
    assert!(err.contains(&format!("pid {holder}")), "{err}");
    assert!(err.contains("mosaic-master"), "{err}");

    // The admin commands that write the state directory work while the master runs.
    cluster.issue("client", "late-client");
    cluster.revoke("late-client");
    cluster
        .master_summary()
        .expect("the first master still serves");

    // A CLI call that exits without a TLS close_notify is a normal end, not a WARN.
    cluster.sentinel_status();
    cluster.sentinel_status();
    let log = std::fs::read_to_string(cluster.master_log()).expect("master log");
    assert!(
        !log.contains("errored out"),
        "the master warns about CLI calls ending:\n{log}"
    );

    // kill -9 leaves the lock file with a dead pid: the restart is not blocked by it.
    cluster.kill_master();
    cluster.restart_master();
    cluster
        .master_summary()
        .expect("the restarted master serves");
}

#[test]
fn a_second_chunkserver_on_one_data_directory_is_refused_with_the_holders_pid() {
    let mut cluster = TestCluster::start(ClusterOptions {
        chunkservers: 1,
        ..ClusterOptions::default()
    });
    let holder = cluster.chunkserver_pid(0).expect("chunkserver runs");
    let mut cmd = Command::new(bin(bins::CHUNKSERVER));
    cmd.arg("--master")
        .arg(cluster.master_addr())
        .arg("--data")
        .arg(cluster.chunkserver_data_dir(0))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--credentials")
        .arg(cluster.credentials("cs0"));
    let out = run(cmd, REFUSAL_DEADLINE);
    let err = out.stderr_text();
    assert!(!out.status.success(), "second chunkserver started:\n{err}");
    assert!(err.contains(&format!("pid {holder}")), "{err}");
    assert!(err.contains("mosaic-chunkserver"), "{err}");

    cluster.kill_chunkserver(0);
    cluster.restart_chunkserver(0);
    assert!(cluster.chunkserver_running(0));
}

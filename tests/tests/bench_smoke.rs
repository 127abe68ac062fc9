//! `mosaic-bench --quick` against a real mount and its master: every metric of the suite,
//! the mixed client types and the state-query client comes out, with a sane value (> 0).
//! Timings are not asserted (this machine is shared and loaded); only that each was measured.

use mosaic_tests::bins::{MASTER, bin};
use mosaic_tests::{ClusterOptions, MountedCluster};
use std::process::Command;

/// Metrics `--quick` must report for the target, by name.
const EXPECTED: &[&str] = &[
    "seq_write",
    "seq_read",
    "rand_read_iops",
    "rand_read_p50_us",
    "rand_read_p99_us",
    "rand_read_max_us",
    "create",
    "stat",
    "unlink",
    "small_write",
    "small_read",
    "tree_extract",
    "tree_cp",
    "tree_find",
    "tree_du",
    "tree_rm",
    "read_heavy_ops",
    "read_heavy_read_p99_us",
    "read_heavy_write_p99_us",
    "write_heavy_ops",
    "write_heavy_write_p99_us",
    "balanced_ops",
    "balanced_read_p95_us",
    "state_query_rate",
    "state_query_replicas",
    "state_query_p99_us",
];

#[test]
fn quick_suite_reports_every_metric() {
    let Some(mc) = MountedCluster::start(
        "quick_suite_reports_every_metric",
        ClusterOptions::default(),
    ) else {
        return;
    };
    let scratch = tempfile::tempdir().expect("temp dir");
    // The state-query client talks to the master over mutual TLS: give it a credential.
    let creds = scratch.path().join("bench-credential");
    let issued = Command::new(bin(MASTER))
        .args(["issue", "client", "bench", "--state"])
        .arg(mc.cluster.state_dir())
        .arg("--out")
        .arg(&creds)
        .output()
        .expect("run mosaic-master issue");
    assert!(
        issued.status.success(),
        "mosaic-master issue: {}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let json_file = scratch.path().join("bench.json");
    let plots = scratch.path().join("plots");
    let out = Command::new(bin("mosaic-bench"))
        .arg("--quick")
        .args(["--runs", "2", "--seq-size", "16MiB", "--meta-files", "200"])
        .arg("--master")
        .arg(mc.cluster.master_addr())
        .arg("--credentials")
        .arg(&creds)
        .arg("--json-file")
        .arg(&json_file)
        .arg("--plot")
        .arg(&plots)
        .arg(mc.path())
        .output()
        .expect("run mosaic-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mosaic-bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The readable table names the workloads and where the client's memory came from.
    assert!(
        stdout.contains("sequential write 16 MiB"),
        "table:\n{stdout}"
    );
    assert!(
        stdout.contains("client peak RSS:") && stdout.contains("mosaic-mount pid"),
        "table:\n{stdout}"
    );

    let text = std::fs::read_to_string(&json_file).expect("read the JSON file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let metrics = v["metrics"].as_array().expect("metrics list");
    for name in EXPECTED {
        let m = metrics
            .iter()
            .find(|m| m["name"] == *name)
            .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"));
        let median = m["summary"]["median"].as_f64().unwrap_or(f64::NAN);
        assert!(median > 0.0 && median.is_finite(), "{name} = {median}");
        assert_eq!(
            m["samples"].as_array().map(Vec::len),
            Some(2),
            "{name}: one sample per run"
        );
    }
    for m in metrics {
        let median = m["summary"]["median"].as_f64().unwrap_or(f64::NAN);
        assert!(median > 0.0, "{} = {median}", m["name"]);
    }
    // The MosaicFS processes worked during the write workloads, and the client was found.
    let seq_cpu = v["costs"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["workload"] == "seq"))
        .and_then(|c| c["cpu_seconds"]["median"].as_f64())
        .expect("CPU seconds of the seq workload");
    assert!(seq_cpu > 0.0, "seq cpu seconds {seq_cpu}");
    let rss = v["client_peak_rss_bytes"]
        .as_u64()
        .expect("client peak RSS");
    assert!(rss > 1024 * 1024, "client peak RSS {rss} bytes");
    // Charts were drawn.
    for chart in [
        "latency-rand_read.svg",
        "throughput-seq_write.svg",
        "latency-state_query.svg",
    ] {
        let svg =
            std::fs::read_to_string(plots.join(chart)).unwrap_or_else(|e| panic!("{chart}: {e}"));
        assert!(svg.starts_with("<svg"), "{chart} is not SVG");
    }
    // Nothing left behind on the mount.
    let left: Vec<_> = std::fs::read_dir(mc.path())
        .expect("list the mount")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left on the mount: {left:?}");
}

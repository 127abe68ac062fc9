//! The machine's state around each run: load average, CPU steal, available memory and a
//! small disk-flush probe, so that a reader can tell a disturbed run from a slow filesystem.
//!
//! Parsing of `/proc/loadavg`, `/proc/stat` and `/proc/meminfo` is pure and tested; sampling
//! is a thin layer over it. The flush probe writes only its own temporary file in the probe
//! directory it is given, never in the measured directories (it would disturb them).

use crate::stats::Latencies;
use serde::Serialize;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::time::Instant;

/// One-minute load average from a `/proc/loadavg` text.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut parts = line["MemAvailable:".len()..].split_whitespace();
    let kib: u64 = parts.next()?.parse().ok()?;
    (parts.next()? == "kB").then_some(kib.checked_mul(1024)?)
}

/// The machine-wide CPU counters of `/proc/stat`'s first line, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// user + nice + system + idle + iowait + irq + softirq + steal (guest time is already
    /// inside user and nice, so it is not added again).
    pub total: u64,
    pub steal: u64,
}

/// Parses the aggregate `cpu ` line of `/proc/stat`.
pub fn parse_cpu_ticks(stat: &str) -> Option<CpuTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // Kernels before 2.6.11 have no steal column; treat it as none rather than guess.
    let steal = fields.get(7).copied().unwrap_or(0);
    Some(CpuTicks {
        total: fields.iter().sum(),
        steal,
    })
}

/// Percentage of CPU time stolen by the hypervisor between two samples.
pub fn steal_percent(before: CpuTicks, after: CpuTicks) -> Option<f64> {
    let total = after.total.checked_sub(before.total)?;
    let steal = after.steal.checked_sub(before.steal)?;
    (total > 0).then(|| 100.0 * steal as f64 / total as f64)
}

/// The machine's state before one run of one family on one side, and the steal during it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunState {
    pub workload: String,
    /// 0-based run number.
    pub run: usize,
    /// `target` or `compare`.
    pub side: &'static str,
    pub load1: Option<f64>,
    pub mem_available_bytes: Option<u64>,
    /// Median and 90th percentile of [`PROBE_WRITES`] 4 KiB write + fdatasync pairs in the
    /// probe directory, just before the run.
    pub fdatasync_p50_us: Option<f64>,
    pub fdatasync_p90_us: Option<f64>,
    /// CPU steal during the run, percent of all CPU time of the machine.
    pub steal_percent: Option<f64>,
}

/// Flushes per probe: enough for a median and a p90, few enough to cost milliseconds.
pub const PROBE_WRITES: usize = 20;
/// The probe's write size: one page, the smallest write a filesystem flushes.
const PROBE_SIZE: usize = 4096;

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

pub fn cpu_ticks() -> Option<CpuTicks> {
    parse_cpu_ticks(&read("/proc/stat")?)
}

/// Times [`PROBE_WRITES`] rewrites of one 4 KiB block, each followed by `fdatasync`, in a
/// temporary file of `dir` (removed afterwards). `None` when the directory cannot be used.
pub fn fdatasync_probe(dir: &Path) -> Option<Latencies> {
    let mut file = tempfile::Builder::new()
        .prefix("mosaic-bench-probe-")
        .tempfile_in(dir)
        .ok()?;
    let block = [0x5au8; PROBE_SIZE];
    // Allocate the block first, so the probe times an overwrite and its flush, not the
    // allocation of a new extent.
    file.write_all(&block).ok()?;
    file.as_file().sync_all().ok()?;
    let mut lat = Latencies::new();
    for _ in 0..PROBE_WRITES {
        let t = Instant::now();
        file.as_file().write_all_at(&block, 0).ok()?;
        file.as_file().sync_data().ok()?;
        lat.record(t.elapsed());
    }
    Some(lat)
}

/// Samples everything but the steal (which needs the run's end, see [`RunState::finish`]).
pub fn before_run(
    workload: &str,
    run: usize,
    side: &'static str,
    probe_dir: &Path,
) -> (RunState, Option<CpuTicks>) {
    let probe = fdatasync_probe(probe_dir);
    let state = RunState {
        workload: workload.to_string(),
        run,
        side,
        load1: read("/proc/loadavg").as_deref().and_then(parse_loadavg),
        mem_available_bytes: read("/proc/meminfo")
            .as_deref()
            .and_then(parse_mem_available),
        fdatasync_p50_us: probe.as_ref().map(|l| l.at_percentile_us(50.0)),
        fdatasync_p90_us: probe.as_ref().map(|l| l.at_percentile_us(90.0)),
        steal_percent: None,
    };
    (state, cpu_ticks())
}

impl RunState {
    /// Records the steal since `before` (the ticks [`before_run`] returned).
    pub fn finish(mut self, before: Option<CpuTicks>) -> RunState {
        self.steal_percent = match (before, cpu_ticks()) {
            (Some(b), Some(a)) => steal_percent(b, a),
            _ => None,
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_and_meminfo() {
        assert_eq!(parse_loadavg("1.52 0.98 0.70 3/412 12345\n"), Some(1.52));
        assert_eq!(parse_loadavg(""), None);
        let meminfo = "MemTotal:       24000000 kB\nMemFree:   100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(2048 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: 1 MB\n"), None);
    }

    #[test]
    fn cpu_ticks_and_steal() {
        let before = "cpu  100 0 50 800 10 0 0 40 7 0\ncpu0 50 0 25 400 5 0 0 20 0 0\n";
        let after = "cpu  200 0 100 1500 20 0 0 180 9 0\n";
        let b = parse_cpu_ticks(before).expect("before");
        let a = parse_cpu_ticks(after).expect("after");
        assert_eq!(
            b,
            CpuTicks {
                total: 1000,
                steal: 40
            }
        );
        // 1000 ticks passed, 140 of them stolen.
        assert_eq!(steal_percent(b, a), Some(14.0));
        assert_eq!(steal_percent(b, b), None, "no time passed");
        assert_eq!(steal_percent(a, b), None, "counters went backwards");
        assert_eq!(
            parse_cpu_ticks("cpu  1 2 3 4\n").map(|t| (t.total, t.steal)),
            Some((10, 0))
        );
        assert_eq!(parse_cpu_ticks("cpu  1 x 3\n"), None);
        assert_eq!(parse_cpu_ticks("intr 5\n"), None);
    }

    #[test]
    fn the_probe_times_its_flushes_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lat = fdatasync_probe(dir.path()).expect("probe");
        assert_eq!(lat.count(), PROBE_WRITES as u64);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
        assert!(fdatasync_probe(&dir.path().join("missing")).is_none());
    }
}

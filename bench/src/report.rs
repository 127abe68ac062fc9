//! The results of a benchmark invocation and their renderings: a plain table for people, a
//! Markdown table with the targets for `docs/BENCHMARKS.md`, and JSON for machines.
//! Rendering is a pure function of [`Report`], tested against exact text.

use crate::machine::RunState;
use crate::stats::{Summary, ratio};
use crate::workloads::tree::Tarball;
use crate::workloads::{Better, Figure};
use serde::Serialize;
use std::fmt::Write as _;

/// One figure over all runs, on the target and (with `--compare`) on the comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricReport {
    pub workload: String,
    pub name: String,
    pub label: String,
    pub unit: String,
    pub better: Better,
    pub samples: Vec<f64>,
    pub summary: Option<Summary>,
    pub compare_samples: Vec<f64>,
    pub compare_summary: Option<Summary>,
    /// Target median ÷ comparison median.
    pub ratio: Option<f64>,
    /// Target ÷ comparison of each run pair (run i on both sides, measured back to back),
    /// summarized: the median says where the two stand, min and max how much that moved.
    pub pair_ratio: Option<Summary>,
}

/// What a workload cost the MosaicFS processes, per run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkloadCost {
    pub workload: String,
    /// CPU seconds (user + system) of the MosaicFS processes during one run on the target.
    pub cpu_seconds: Option<Summary>,
    /// During one run on the comparison: the comparison's own processes when they were
    /// given (`--compare-pids`), else the MosaicFS processes (their background activity).
    pub compare_cpu_seconds: Option<Summary>,
    /// The client's peak resident set (VmHWM) after this workload's runs, bytes.
    pub client_peak_rss_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub target: String,
    pub compare: Option<String>,
    /// What the target and the comparison are, in words (`--name`, `--compare-name`).
    pub target_name: String,
    pub compare_name: String,
    /// Whether `compare_cpu_seconds` are the comparison's own processes.
    pub compare_cpu_own: bool,
    pub runs: usize,
    pub metrics: Vec<MetricReport>,
    pub costs: Vec<WorkloadCost>,
    /// The `mosaic-mount` process serving the target, if one was found.
    pub client_pid: Option<u32>,
    /// Its peak resident set over the whole invocation, bytes.
    pub client_peak_rss_bytes: Option<u64>,
    pub notes: Vec<String>,
    /// The sizes and durations used (the `Config`), for the record.
    pub config: serde_json::Value,
    /// The tree workload's tarball, when it ran.
    pub tarball: Option<Tarball>,
    /// The machine's state before (and steal during) every run on every side.
    pub machine: Vec<RunState>,
}

/// Accumulates the figures of every run in first-seen order.
#[derive(Default)]
pub struct Collector {
    metrics: Vec<MetricReport>,
    cpu: Vec<(String, Vec<f64>, Vec<f64>)>,
}

impl Collector {
    /// Adds one run's figures; `compare` says on which side they were measured.
    pub fn add(&mut self, workload: &str, figures: &[Figure], compare: bool) {
        for f in figures {
            let i = match self
                .metrics
                .iter()
                .position(|m| m.workload == workload && m.name == f.name)
            {
                Some(i) => i,
                None => {
                    self.metrics.push(MetricReport {
                        workload: workload.to_string(),
                        name: f.name.clone(),
                        label: f.label.clone(),
                        unit: f.unit.to_string(),
                        better: f.better,
                        samples: Vec::new(),
                        summary: None,
                        compare_samples: Vec::new(),
                        compare_summary: None,
                        ratio: None,
                        pair_ratio: None,
                    });
                    self.metrics.len() - 1
                }
            };
            let m = &mut self.metrics[i];
            if compare {
                m.compare_samples.push(f.value);
            } else {
                m.samples.push(f.value);
            }
        }
    }

    pub fn add_cpu(&mut self, workload: &str, seconds: f64, compare: bool) {
        let i = match self.cpu.iter().position(|c| c.0 == workload) {
            Some(i) => i,
            None => {
                self.cpu
                    .push((workload.to_string(), Vec::new(), Vec::new()));
                self.cpu.len() - 1
            }
        };
        if compare {
            self.cpu[i].2.push(seconds);
        } else {
            self.cpu[i].1.push(seconds);
        }
    }

    /// Summaries and ratios; `rss` gives each workload's client peak after its runs.
    pub fn finish(self, rss: &[(String, u64)]) -> (Vec<MetricReport>, Vec<WorkloadCost>) {
        let metrics = self
            .metrics
            .into_iter()
            .map(|mut m| {
                m.summary = Summary::of(&m.samples);
                m.compare_summary = Summary::of(&m.compare_samples);
                m.ratio = match (m.summary, m.compare_summary) {
                    (Some(a), Some(b)) => ratio(a.median, b.median),
                    _ => None,
                };
                m.pair_ratio = pair_ratios(&m.samples, &m.compare_samples)
                    .as_deref()
                    .and_then(Summary::of);
                m
            })
            .collect();
        let costs = self
            .cpu
            .into_iter()
            .map(|(workload, t, c)| WorkloadCost {
                client_peak_rss_bytes: rss.iter().find(|r| r.0 == workload).map(|r| r.1),
                workload,
                cpu_seconds: Summary::of(&t),
                compare_cpu_seconds: Summary::of(&c),
            })
            .collect();
        (metrics, costs)
    }
}

/// Target ÷ comparison of each run pair, in run order; `None` when the sides have a
/// different number of runs (a pair would be guessed) or a ratio is unknown.
pub fn pair_ratios(target: &[f64], compare: &[f64]) -> Option<Vec<f64>> {
    if target.is_empty() || target.len() != compare.len() {
        return None;
    }
    target
        .iter()
        .zip(compare)
        .map(|(&a, &b)| ratio(a, b))
        .collect()
}

/// Median with min and max over runs, in words, e.g. `0.51 (0.40-0.62)`.
fn spread(s: Option<Summary>, fmt: fn(f64) -> String) -> String {
    match s {
        Some(s) => format!("{} ({}-{})", fmt(s.median), fmt(s.min), fmt(s.max)),
        None => "-".into(),
    }
}

/// A figure with three significant digits or so, no exponent.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A ratio with two decimals, or four when it is small enough that two would read as zero.
pub fn ratio_text(r: f64) -> String {
    if r.abs() >= 0.1 {
        format!("{r:.2}x")
    } else {
        format!("{r:.4}x")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

impl Report {
    /// One line on the machine during the runs (median with min and max of the samples
    /// taken before each run); the JSON has every sample.
    fn machine_summary(&self) -> Option<String> {
        if self.machine.is_empty() {
            return None;
        }
        let of = |f: fn(&RunState) -> Option<f64>| {
            let v: Vec<f64> = self.machine.iter().filter_map(f).collect();
            Summary::of(&v)
        };
        Some(format!(
            "machine over {} runs: load1 {}; steal % {}; available memory MiB {}; 4 KiB write + fdatasync µs p50 {}, p90 {}",
            self.machine.len(),
            spread(of(|m| m.load1), num),
            spread(of(|m| m.steal_percent), num),
            spread(
                of(|m| m.mem_available_bytes.map(|b| b as f64 / (1024.0 * 1024.0))),
                |v| format!("{v:.0}")
            ),
            spread(of(|m| m.fdatasync_p50_us), num),
            spread(of(|m| m.fdatasync_p90_us), num),
        ))
    }

    fn cost(&self, workload: &str) -> Option<&WorkloadCost> {
        self.costs.iter().find(|c| c.workload == workload)
    }

    /// Rows of cells: the header, then one per metric. CPU and RSS go on the first row of
    /// each workload (they belong to the workload, not to each figure).
    fn rows(&self) -> Vec<Vec<String>> {
        let mut header: Vec<String> = [
            "workload", "metric", "unit", "median", "min", "max", "cpu s", "rss MiB",
        ]
        .map(String::from)
        .to_vec();
        if self.compare.is_some() {
            header.extend(
                [
                    "compare",
                    "cmp min",
                    "cmp max",
                    "cmp cpu s",
                    "ratio",
                    "ratio min",
                    "ratio max",
                ]
                .map(String::from),
            );
        }
        let mut rows = vec![header];
        let mut last_workload = "";
        for m in &self.metrics {
            let first = m.workload != last_workload;
            last_workload = &m.workload;
            let (median, min, max) = match m.summary {
                Some(s) => (num(s.median), num(s.min), num(s.max)),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let cost = if first { self.cost(&m.workload) } else { None };
            let cpu = cost
                .and_then(|c| c.cpu_seconds)
                .map_or(String::new(), |s| num(s.median));
            let rss = cost
                .and_then(|c| c.client_peak_rss_bytes)
                .map_or(String::new(), mib);
            let mut row = vec![
                if first {
                    m.workload.clone()
                } else {
                    String::new()
                },
                m.label.clone(),
                m.unit.clone(),
                median,
                min,
                max,
                cpu,
                rss,
            ];
            if self.compare.is_some() {
                let (cmedian, cmin, cmax) = match m.compare_summary {
                    Some(s) => (num(s.median), num(s.min), num(s.max)),
                    None => ("-".into(), "-".into(), "-".into()),
                };
                let ccpu = cost
                    .and_then(|c| c.compare_cpu_seconds)
                    .map_or(String::new(), |s| num(s.median));
                // The ratio of run pairs when every run has its pair, else of the medians.
                let (r, rmin, rmax) = match (m.pair_ratio, m.ratio) {
                    (Some(p), _) => (ratio_text(p.median), ratio_text(p.min), ratio_text(p.max)),
                    (None, Some(r)) => (ratio_text(r), "-".into(), "-".into()),
                    (None, None) => ("-".into(), "-".into(), "-".into()),
                };
                row.extend([cmedian, cmin, cmax, ccpu, r, rmin, rmax]);
            }
            rows.push(row);
        }
        rows
    }

    fn preamble(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "{}: {}; every figure is the median of {} runs, with min and max",
            self.target_name, self.target, self.runs
        )];
        if let Some(c) = &self.compare {
            lines.push(format!(
                "{}: {c}; runs alternate between the two; ratio = {} / {} of each run pair: median, min and max over the pairs",
                self.compare_name, self.target_name, self.compare_name
            ));
        }
        lines.push(
            "cpu s: CPU seconds (user + system) of the MosaicFS processes per run of the workload; rss MiB: the client's peak resident set (VmHWM) after it"
                .to_string(),
        );
        if self.compare.is_some() {
            lines.push(if self.compare_cpu_own {
                format!(
                    "cmp cpu s: CPU seconds of {}'s processes per run of the workload on it",
                    self.compare_name
                )
            } else {
                "cmp cpu s: CPU seconds of the MosaicFS processes while the comparison ran (background work)".to_string()
            });
        }
        if let Some(t) = self.tarball {
            lines.push(format!(
                "tree: a tarball of {} entries, {:.1} MB",
                t.entries,
                t.bytes as f64 / 1e6
            ));
        }
        lines
    }

    fn postamble(&self) -> Vec<String> {
        let mut lines = Vec::new();
        match (self.client_pid, self.client_peak_rss_bytes) {
            (Some(pid), Some(b)) => lines.push(format!(
                "client peak RSS: {} MiB (mosaic-mount pid {pid}, VmHWM)",
                mib(b)
            )),
            _ => {
                lines.push("client peak RSS: no mosaic-mount process serves the target".to_string())
            }
        }
        if let Some(m) = self.machine_summary() {
            lines.push(m);
        }
        for n in &self.notes {
            lines.push(format!("note: {n}"));
        }
        lines
    }

    /// The plain table for a terminal.
    pub fn render_text(&self) -> String {
        let rows = self.rows();
        let cols = rows[0].len();
        let widths: Vec<usize> = (0..cols)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for l in self.preamble() {
            let _ = writeln!(out, "{l}");
        }
        out.push('\n');
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                // Text columns (workload, metric, unit) left, numbers right.
                if c < 3 {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                } else {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                }
                if c + 1 < cols {
                    line.push_str("  ");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out.push('\n');
        for l in self.postamble() {
            let _ = writeln!(out, "{l}");
        }
        out
    }

    /// A Markdown table followed by the targets and whether each is met.
    pub fn render_markdown(&self) -> String {
        let rows = self.rows();
        let mut out = String::new();
        for l in self.preamble() {
            let _ = writeln!(out, "{l}  ");
        }
        out.push('\n');
        for (i, row) in rows.iter().enumerate() {
            let _ = writeln!(out, "| {} |", row.join(" | "));
            if i == 0 {
                let _ = writeln!(out, "|{}", "---|".repeat(row.len()));
            }
        }
        out.push('\n');
        for l in self.postamble() {
            let _ = writeln!(out, "{l}  ");
        }
        out.push_str("\n| target | wanted | measured (median) | met |\n|---|---|---|---|\n");
        // Targets hold for the sizes; smaller runs (e.g. --quick) only indicate.
        for t in check_targets(self) {
            let _ = writeln!(
                out,
                "| {} | {} {} | {} | {} |",
                t.what,
                t.wanted,
                t.unit,
                match (t.measured, t.comparable) {
                    (None, _) => "not measured".to_string(),
                    (Some(v), true) => num(v),
                    (Some(v), false) => format!("{} (smaller run than the target's)", num(v)),
                },
                match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "-",
                }
            );
        }
        out
    }

    pub fn render_json(&self) -> String {
        // Plain data: serialization cannot fail (no maps with non-string keys).
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// One of the performance targets.
pub struct Target {
    pub what: &'static str,
    pub metric: &'static str,
    pub unit: &'static str,
    pub wanted: &'static str,
    /// At least (`Better::Higher`) or under (`Better::Lower`) this value.
    pub bound: f64,
    pub better: Better,
}

/// The targets of issue 7 (2-core machine, whole cluster local, goal 3).
pub const TARGETS: &[Target] = &[
    Target {
        what: "sequential write",
        metric: "seq_write",
        unit: "MB/s",
        wanted: ">= 500",
        bound: 500.0,
        better: Better::Higher,
    },
    Target {
        what: "cold sequential read",
        metric: "seq_read",
        unit: "MB/s",
        wanted: ">= 1000",
        bound: 1000.0,
        better: Better::Higher,
    },
    Target {
        what: "random 4 KiB reads",
        metric: "rand_read_iops",
        unit: "IOPS",
        wanted: ">= 10000",
        bound: 10_000.0,
        better: Better::Higher,
    },
    Target {
        what: "random read p99",
        metric: "rand_read_p99_us",
        unit: "µs",
        wanted: "< 300",
        bound: 300.0,
        better: Better::Lower,
    },
    Target {
        what: "create",
        metric: "create",
        unit: "ops/s",
        wanted: ">= 5000",
        bound: 5000.0,
        better: Better::Higher,
    },
    Target {
        what: "stat",
        metric: "stat",
        unit: "ops/s",
        wanted: ">= 15000",
        bound: 15_000.0,
        better: Better::Higher,
    },
    Target {
        what: "unlink",
        metric: "unlink",
        unit: "ops/s",
        wanted: ">= 7000",
        bound: 7000.0,
        better: Better::Higher,
    },
    Target {
        what: "/usr/include extract",
        metric: "tree_extract",
        unit: "s",
        wanted: "< 8",
        bound: 8.0,
        better: Better::Lower,
    },
    Target {
        what: "cp -a of the tree",
        metric: "tree_cp",
        unit: "s",
        wanted: "< 10",
        bound: 10.0,
        better: Better::Lower,
    },
    Target {
        what: "64 KiB small-file writes",
        metric: "small_write",
        unit: "files/s",
        wanted: ">= 1000",
        bound: 1000.0,
        better: Better::Higher,
    },
    Target {
        what: "64 KiB small-file reads",
        metric: "small_read",
        unit: "files/s",
        wanted: ">= 3000",
        bound: 3000.0,
        better: Better::Higher,
    },
];

/// A target against what was measured.
pub struct TargetCheck {
    pub what: &'static str,
    pub wanted: &'static str,
    pub unit: &'static str,
    pub measured: Option<f64>,
    /// The run used the sizes the target is stated for (else `met` is `None`).
    pub comparable: bool,
    pub met: Option<bool>,
}

/// Client peak RSS must stay under this (bytes).
pub const RSS_TARGET: u64 = 300 * 1024 * 1024;

/// Whether the run measured `metric` at the size its target is stated for: the whole
/// tree, 10,000 metadata files, 2,000 small files, a 1 GiB sequential file. A missing
/// config (a report built by hand) is taken as comparable.
fn comparable(metric: &str, config: &serde_json::Value) -> bool {
    let at_least = |key: &str, want: u64| {
        config
            .get(key)
            .and_then(|v| v.as_u64())
            .is_none_or(|v| v >= want)
    };
    match metric {
        m if m.starts_with("tree_") => config
            .get("tree_max_files")
            .and_then(|v| v.as_u64())
            .is_none_or(|v| v == 0),
        "create" | "stat" | "unlink" => at_least("meta_files", 10_000),
        "small_write" | "small_read" => at_least("small_files", 2000),
        "seq_write" | "seq_read" => at_least("seq_size", 1 << 30),
        _ => true,
    }
}

pub fn check_targets(report: &Report) -> Vec<TargetCheck> {
    let mut out: Vec<TargetCheck> = TARGETS
        .iter()
        .map(|t| {
            let measured = report
                .metrics
                .iter()
                .find(|m| m.name == t.metric)
                .and_then(|m| m.summary)
                .map(|s| s.median);
            let comparable = comparable(t.metric, &report.config);
            TargetCheck {
                what: t.what,
                wanted: t.wanted,
                unit: t.unit,
                measured,
                comparable,
                met: measured.filter(|_| comparable).map(|v| match t.better {
                    Better::Higher => v >= t.bound,
                    Better::Lower => v < t.bound,
                }),
            }
        })
        .collect();
    let rss = report.client_peak_rss_bytes;
    out.push(TargetCheck {
        what: "client peak RSS",
        wanted: "< 300",
        unit: "MiB",
        measured: rss.map(|b| b as f64 / (1024.0 * 1024.0)),
        comparable: true,
        met: rss.map(|b| b < RSS_TARGET),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(name: &str, label: &str, unit: &'static str, better: Better, v: f64) -> Figure {
        Figure::new(name, label, unit, better, v)
    }

    fn sample(compare: bool) -> Report {
        let mut c = Collector::default();
        for (run, (w, r)) in [(100.0, 10.0), (300.0, 30.0), (200.0, 20.0)]
            .into_iter()
            .enumerate()
        {
            c.add(
                "seq",
                &[
                    fig("seq_write", "sequential write", "MB/s", Better::Higher, w),
                    fig(
                        "rand_read_p99_us",
                        "random read p99",
                        "µs",
                        Better::Lower,
                        r,
                    ),
                ],
                false,
            );
            c.add_cpu("seq", 1.5 + run as f64, false);
            if compare {
                c.add(
                    "seq",
                    &[fig(
                        "seq_write",
                        "sequential write",
                        "MB/s",
                        Better::Higher,
                        // Pairs: 100/400, 300/600, 200/1000.
                        [400.0, 600.0, 1000.0][run],
                    )],
                    true,
                );
                c.add_cpu("seq", 0.5, true);
            }
        }
        c.add(
            "meta",
            &[fig("stat", "stat", "ops/s", Better::Higher, 20_000.0)],
            false,
        );
        c.add_cpu("meta", 0.25, false);
        let (metrics, costs) = c.finish(&[("seq".into(), 50 * 1024 * 1024)]);
        Report {
            target: "/mnt".into(),
            compare: compare.then(|| "/tmp/local".into()),
            runs: 3,
            metrics,
            costs,
            client_pid: Some(42),
            client_peak_rss_bytes: Some(64 * 1024 * 1024),
            notes: vec!["caches not dropped".into()],
            config: serde_json::Value::Null,
            target_name: "target".into(),
            compare_name: if compare { "MooseFS" } else { "compare" }.into(),
            compare_cpu_own: compare,
            tarball: compare.then_some(Tarball {
                entries: 8857,
                bytes: 122_000_000,
            }),
            machine: if compare {
                [(0.5, 1.0, 100.0), (1.5, 3.0, 300.0), (1.0, 2.0, 200.0)]
                    .into_iter()
                    .enumerate()
                    .map(|(run, (load1, steal, probe))| RunState {
                        workload: "seq".into(),
                        run,
                        side: "target",
                        load1: Some(load1),
                        mem_available_bytes: Some(1 << 30),
                        fdatasync_p50_us: Some(probe),
                        fdatasync_p90_us: Some(probe * 2.0),
                        steal_percent: Some(steal),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn collector_summarizes_and_divides() {
        let r = sample(true);
        let w = &r.metrics[0];
        assert_eq!(w.samples, [100.0, 300.0, 200.0]);
        assert_eq!(
            w.summary.map(|s| (s.median, s.min, s.max)),
            Some((200.0, 100.0, 300.0))
        );
        assert_eq!(w.compare_summary.map(|s| s.median), Some(600.0));
        assert_eq!(w.ratio, Some(200.0 / 600.0));
        // Per run pair: 0.25, 0.5, 0.2.
        assert_eq!(
            w.pair_ratio.map(|s| (s.median, s.min, s.max)),
            Some((0.25, 0.2, 0.5))
        );
        assert_eq!(r.metrics[1].pair_ratio, None, "no pairs");
        assert_eq!(r.metrics[1].ratio, None, "no comparison samples");
        assert_eq!(r.costs[0].cpu_seconds.map(|s| s.median), Some(2.5));
        assert_eq!(r.costs[0].compare_cpu_seconds.map(|s| s.median), Some(0.5));
        assert_eq!(r.costs[0].client_peak_rss_bytes, Some(50 * 1024 * 1024));
        assert_eq!(r.costs[1].client_peak_rss_bytes, None);
    }

    #[test]
    fn text_table() {
        let expected = "\
target: /mnt; every figure is the median of 3 runs, with min and max
cpu s: CPU seconds (user + system) of the MosaicFS processes per run of the workload; rss MiB: the client's peak resident set (VmHWM) after it

workload  metric            unit   median    min    max  cpu s  rss MiB
seq       sequential write  MB/s      200    100    300   2.50     50.0
          random read p99   µs       20.0   10.0   30.0
meta      stat              ops/s   20000  20000  20000   0.25

client peak RSS: 64.0 MiB (mosaic-mount pid 42, VmHWM)
note: caches not dropped
";
        assert_eq!(sample(false).render_text(), expected);
    }

    #[test]
    fn text_table_with_comparison() {
        let text = sample(true).render_text();
        let expected = "\
target: /mnt; every figure is the median of 3 runs, with min and max
MooseFS: /tmp/local; runs alternate between the two; ratio = target / MooseFS of each run pair: median, min and max over the pairs
cpu s: CPU seconds (user + system) of the MosaicFS processes per run of the workload; rss MiB: the client's peak resident set (VmHWM) after it
cmp cpu s: CPU seconds of MooseFS's processes per run of the workload on it
tree: a tarball of 8857 entries, 122.0 MB

workload  metric            unit   median    min    max  cpu s  rss MiB  compare  cmp min  cmp max  cmp cpu s  ratio  ratio min  ratio max
seq       sequential write  MB/s      200    100    300   2.50     50.0      600      400     1000       0.50  0.25x      0.20x      0.50x
          random read p99   µs       20.0   10.0   30.0                        -        -        -                 -          -          -
meta      stat              ops/s   20000  20000  20000   0.25                 -        -        -                 -          -          -

client peak RSS: 64.0 MiB (mosaic-mount pid 42, VmHWM)
machine over 3 runs: load1 1.00 (0.50-1.50); steal % 2.00 (1.00-3.00); available memory MiB 1024 (1024-1024); 4 KiB write + fdatasync µs p50 200 (100-300), p90 400 (200-600)
note: caches not dropped
";
        assert_eq!(text, expected);
    }

    #[test]
    fn pairs_need_a_partner_for_every_run() {
        assert_eq!(pair_ratios(&[2.0, 3.0], &[1.0, 6.0]), Some(vec![2.0, 0.5]));
        assert_eq!(
            pair_ratios(&[2.0, 3.0], &[1.0]),
            None,
            "a run without its pair"
        );
        assert_eq!(pair_ratios(&[], &[]), None);
        assert_eq!(pair_ratios(&[2.0], &[0.0]), None, "a ratio to nothing");
    }

    #[test]
    fn markdown_with_targets() {
        let md = sample(false).render_markdown();
        assert!(md.contains("| workload | metric | unit | median | min | max | cpu s | rss MiB |\n|---|---|---|---|---|---|---|---|\n"));
        assert!(md.contains("| seq | sequential write | MB/s | 200 | 100 | 300 | 2.50 | 50.0 |\n"));
        assert!(md.contains("| sequential write | >= 500 MB/s | 200 | **no** |\n"));
        assert!(md.contains("| random read p99 | < 300 µs | 20.0 | yes |\n"));
        assert!(md.contains("| stat | >= 15000 ops/s | 20000 | yes |\n"));
        assert!(md.contains("| create | >= 5000 ops/s | not measured | - |\n"));
        assert!(md.contains("| client peak RSS | < 300 MiB | 64.0 | yes |\n"));
    }

    #[test]
    fn smaller_runs_are_not_judged() {
        let mut r = sample(false);
        r.config = serde_json::json!({"seq_size": 64 << 20, "meta_files": 10_000});
        let md = r.render_markdown();
        assert!(md.contains(
            "| sequential write | >= 500 MB/s | 200 (smaller run than the target's) | - |\n"
        ));
        assert!(md.contains("| stat | >= 15000 ops/s | 20000 | yes |\n"));
        assert_eq!(ratio_text(0.0028), "0.0028x");
        assert_eq!(ratio_text(2.0), "2.00x");
    }

    #[test]
    fn json_has_every_metric() {
        let v: serde_json::Value =
            serde_json::from_str(&sample(true).render_json()).expect("valid JSON");
        assert_eq!(v["metrics"][0]["name"], "seq_write");
        assert_eq!(v["metrics"][0]["summary"]["median"], 200.0);
        assert_eq!(v["metrics"][0]["ratio"], 200.0 / 600.0);
        assert_eq!(v["metrics"][0]["pair_ratio"]["median"], 0.25);
        assert_eq!(v["metrics"][0]["compare_samples"][2], 1000.0);
        assert_eq!(v["metrics"][0]["better"], "higher");
        assert_eq!(v["client_peak_rss_bytes"], 64 * 1024 * 1024);
        assert_eq!(v["tarball"]["entries"], 8857);
        assert_eq!(v["machine"][1]["steal_percent"], 3.0);
        assert_eq!(v["machine"][1]["side"], "target");
        assert_eq!(v["compare_name"], "MooseFS");
    }

    #[test]
    fn numbers_keep_about_three_digits() {
        assert_eq!(num(12345.6), "12346");
        assert_eq!(num(123.4), "123");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(0.0), "0.00");
    }
}

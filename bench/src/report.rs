//! The results of a benchmark invocation and their renderings: a plain table for people, a
//! Markdown table with the targets for `docs/BENCHMARKS.md`, and JSON for machines.
//! Rendering is a pure function of [`Report`], tested against exact text.

use crate::stats::{Summary, ratio};
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
}

/// What a workload cost the MosaicFS processes, per run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkloadCost {
    pub workload: String,
    /// CPU seconds (user + system) of the MosaicFS processes during one run on the target.
    pub cpu_seconds: Option<Summary>,
    /// The same while the comparison directory was measured (background activity).
    pub compare_cpu_seconds: Option<Summary>,
    /// The client's peak resident set (VmHWM) after this workload's runs, bytes.
    pub client_peak_rss_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub target: String,
    pub compare: Option<String>,
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
            header.extend(["compare".to_string(), "ratio".to_string()]);
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
                row.push(m.compare_summary.map_or("-".into(), |s| num(s.median)));
                row.push(m.ratio.map_or("-".into(), ratio_text));
            }
            rows.push(row);
        }
        rows
    }

    fn preamble(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "target: {}; every figure is the median of {} runs, with min and max",
            self.target, self.runs
        )];
        if let Some(c) = &self.compare {
            lines.push(format!("compare: {c}; ratio = target median / compare median (runs alternate between the two)"));
        }
        lines.push(
            "cpu s: CPU seconds (user + system) of the MosaicFS processes per run of the workload; rss MiB: the client's peak resident set (VmHWM) after it"
                .to_string(),
        );
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
                        w * 4.0,
                    )],
                    true,
                );
                c.add_cpu("seq", 0.0, true);
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
        assert_eq!(w.compare_summary.map(|s| s.median), Some(800.0));
        assert_eq!(w.ratio, Some(0.25));
        assert_eq!(r.metrics[1].ratio, None, "no comparison samples");
        assert_eq!(r.costs[0].cpu_seconds.map(|s| s.median), Some(2.5));
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
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "compare: /tmp/local; ratio = target median / compare median (runs alternate between the two)"
        );
        assert_eq!(
            lines[4],
            "workload  metric            unit   median    min    max  cpu s  rss MiB  compare  ratio"
        );
        assert_eq!(
            lines[5],
            "seq       sequential write  MB/s      200    100    300   2.50     50.0      800  0.25x"
        );
        assert_eq!(
            lines[6],
            "          random read p99   µs       20.0   10.0   30.0                        -      -"
        );
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
        assert_eq!(v["metrics"][0]["ratio"], 0.25);
        assert_eq!(v["metrics"][0]["better"], "higher");
        assert_eq!(v["client_peak_rss_bytes"], 64 * 1024 * 1024);
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

//! The workloads: each runs once against one directory and returns its figures for that run.
//!
//! Workloads are grouped in families that share state (the sequential write leaves the file
//! the cold read and the random reads use), and a family is the unit that runs, is repeated
//! and alternates between the target and the comparison directory. Every family works in its
//! own fresh subdirectory and removes it afterwards, also after an error.

pub mod meta;
pub mod mixed;
pub mod seq;
pub mod small;
pub mod state_query;
pub mod tree;

use crate::mix::Mix;
use crate::stats::Latencies;
use anyhow::Context as _;
use serde::Serialize;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
/// Decimal megabyte, as `dd` and most published figures count MB/s.
pub const MB: f64 = 1_000_000.0;

/// Sizes, counts and durations of every workload.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub seq_size: u64,
    pub block_size: u64,
    pub rand_io: u64,
    pub rand_seconds: f64,
    pub meta_files: usize,
    pub small_files: usize,
    pub small_size: u64,
    pub tree_source: PathBuf,
    /// 0: the whole tree.
    pub tree_max_files: usize,
    pub mix_files: usize,
    pub mix_file_size: u64,
    pub mix_io: u64,
    pub threads: usize,
    pub mix_seconds: f64,
    pub state_query_seconds: f64,
    pub seed: u64,
}

/// A family of workloads that runs as one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Family {
    /// Sequential write, cold sequential read, random reads (one file).
    Seq,
    /// Create, stat, unlink of many empty files.
    Meta,
    /// Small files: write then syncfs, cold read.
    Small,
    /// A real tree: extract, cp -a, find, du, rm -rf.
    Tree,
    Mixed(Mix),
    /// Asks the master which files and chunks each node holds.
    StateQuery,
}

impl Family {
    pub const ALL: [Family; 8] = [
        Family::Seq,
        Family::Meta,
        Family::Small,
        Family::Tree,
        Family::Mixed(Mix::ReadHeavy),
        Family::Mixed(Mix::WriteHeavy),
        Family::Mixed(Mix::Balanced),
        Family::StateQuery,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Seq => "seq",
            Family::Meta => "meta",
            Family::Small => "small",
            Family::Tree => "tree",
            Family::Mixed(m) => m.name(),
            Family::StateQuery => "state_query",
        }
    }

    pub fn parse(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Families that measure a directory (and so also run on `--compare`).
    pub fn uses_dir(self) -> bool {
        self != Family::StateQuery
    }
}

/// Whether a larger figure is better (throughput) or a smaller one (latency, seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// One figure of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// Stable name for JSON and targets, e.g. `seq_write`.
    pub name: String,
    /// Words for the table, e.g. `sequential write 1 GiB (1 MiB blocks, fsync)`.
    pub label: String,
    pub unit: &'static str,
    pub better: Better,
    pub value: f64,
}

impl Figure {
    pub fn new(
        name: &str,
        label: impl Into<String>,
        unit: &'static str,
        better: Better,
        value: f64,
    ) -> Figure {
        Figure {
            name: name.to_string(),
            label: label.into(),
            unit,
            better,
            value,
        }
    }

    /// The four latency figures of a distribution: `{name}_p50_us` and so on.
    pub fn latencies(name: &str, label: &str, l: &Latencies) -> Vec<Figure> {
        let Some(p) = l.percentiles() else {
            return Vec::new();
        };
        [
            ("p50", p.p50_us),
            ("p95", p.p95_us),
            ("p99", p.p99_us),
            ("max", p.max_us),
        ]
        .into_iter()
        .map(|(q, v)| {
            Figure::new(
                &format!("{name}_{q}_us"),
                format!("{label} {q}"),
                "µs",
                Better::Lower,
                v,
            )
        })
        .collect()
    }
}

/// Throughput over time: amounts added into fixed-width time buckets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets {
    pub width: Duration,
    pub amounts: Vec<f64>,
}

impl Buckets {
    pub fn new(width: Duration) -> Buckets {
        Buckets {
            width,
            amounts: Vec::new(),
        }
    }

    pub fn add(&mut self, at: Duration, amount: f64) {
        if self.width.is_zero() {
            return;
        }
        let i = (at.as_nanos() / self.width.as_nanos()) as usize;
        if self.amounts.len() <= i {
            self.amounts.resize(i + 1, 0.0);
        }
        self.amounts[i] += amount;
    }

    pub fn merge(&mut self, other: &Buckets) {
        if self.amounts.len() < other.amounts.len() {
            self.amounts.resize(other.amounts.len(), 0.0);
        }
        for (a, b) in self.amounts.iter_mut().zip(&other.amounts) {
            *a += b;
        }
    }

    /// (seconds since start, amount per second) for each bucket.
    pub fn rates(&self) -> Vec<(f64, f64)> {
        let w = self.width.as_secs_f64();
        self.amounts
            .iter()
            .enumerate()
            .map(|(i, a)| ((i as f64 + 0.5) * w, a / w))
            .collect()
    }
}

/// Width of a throughput-over-time bucket: fine enough to show stalls of a flush, coarse
/// enough that a bucket holds many operations.
pub const BUCKET: Duration = Duration::from_millis(100);

/// A named throughput-over-time series of one run (for `--plot`).
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub unit: &'static str,
    pub buckets: Buckets,
}

/// What one run of a family produced.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub figures: Vec<Figure>,
    /// Named latency distributions (for `--plot`).
    pub latencies: Vec<(String, Latencies)>,
    pub series: Vec<Series>,
    /// Things the reader must know about this run (e.g. the cache could not be dropped).
    pub notes: Vec<String>,
}

/// Where a family works and what it may need besides the directory.
pub struct Context<'a> {
    pub dir: &'a Path,
    pub config: &'a Config,
    pub master: Option<&'a str>,
    /// The credential directory for connections to the master.
    pub credentials: Option<&'a Path>,
    /// A tarball of the tree source, made once per invocation (the tree family).
    pub tarball: Option<&'a Path>,
}

/// Runs one family once in a fresh subdirectory of `ctx.dir`, removed afterwards.
pub fn run_family(family: Family, ctx: &Context, run: usize) -> anyhow::Result<Outcome> {
    let work = ctx.dir.join(format!(
        "mosaic-bench.{}.{}.{run}",
        std::process::id(),
        family.name()
    ));
    std::fs::create_dir(&work)
        .with_context(|| format!("create work directory {}", work.display()))?;
    let result = match family {
        Family::Seq => seq::run(&work, ctx.config),
        Family::Meta => meta::run(&work, ctx.config),
        Family::Small => small::run(&work, ctx.config),
        Family::Tree => match ctx.tarball {
            Some(t) => tree::run(&work, t),
            None => Err(anyhow::anyhow!("the tree workload has no tarball")),
        },
        Family::Mixed(mix) => mixed::run(&work, ctx.config, mix),
        Family::StateQuery => match ctx.master {
            Some(m) => state_query::run(&work, ctx.config, m, ctx.credentials),
            None => Err(anyhow::anyhow!("state_query needs --master ADDR")),
        },
    };
    let cleanup =
        std::fs::remove_dir_all(&work).with_context(|| format!("remove {}", work.display()));
    let outcome =
        result.with_context(|| format!("workload {} in {}", family.name(), ctx.dir.display()))?;
    cleanup?;
    Ok(outcome)
}

/// Flushes the whole filesystem holding `dir` (`syncfs(2)`, what `sync -f` does) and waits
/// for it: the barrier after which everything written before is durable.
pub fn syncfs(dir: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let d = std::fs::File::open(dir).with_context(|| format!("open {}", dir.display()))?;
    // SAFETY: the descriptor is open for the whole call (`d` lives past it).
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("syncfs {}", dir.display()));
    }
    Ok(())
}

/// Drops the kernel's page, dentry and inode caches so that the next reads come from the
/// filesystem. Needs root; the error says why it could not.
pub fn drop_caches() -> Result<(), String> {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
        .map_err(|e| {
            format!("cannot open /proc/sys/vm/drop_caches ({e}; needs root): reads were not cold")
        })?;
    f.write_all(b"3\n")
        .map_err(|e| format!("writing /proc/sys/vm/drop_caches failed ({e}): reads were not cold"))
}

/// Drops the caches, recording a note when it could not.
pub fn cold(notes: &mut Vec<String>) {
    if let Err(why) = drop_caches()
        && !notes.contains(&why)
    {
        notes.push(why);
    }
}

/// Incompressible file content: the same seeded bytes every run.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore as _, SeedableRng as _};
    let mut buf = vec![0u8; len];
    rand::rngs::SmallRng::seed_from_u64(seed).fill_bytes(&mut buf);
    buf
}

/// Rate of `amount` over `elapsed`, refusing a zero time (a clock that did not move).
pub fn per_second(amount: f64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 { amount / s } else { f64::NAN }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_add_merge_and_rate() {
        let mut a = Buckets::new(Duration::from_millis(100));
        a.add(Duration::from_millis(10), 1.0);
        a.add(Duration::from_millis(99), 1.0);
        a.add(Duration::from_millis(250), 5.0);
        let mut b = Buckets::new(Duration::from_millis(100));
        b.add(Duration::from_millis(350), 2.0);
        a.merge(&b);
        assert_eq!(a.amounts, vec![2.0, 0.0, 5.0, 2.0]);
        let r = a.rates();
        assert_eq!(r.len(), 4);
        assert!((r[0].0 - 0.05).abs() < 1e-9 && (r[0].1 - 20.0).abs() < 1e-9);
        assert!((r[2].1 - 50.0).abs() < 1e-9);
    }

    #[test]
    fn family_names_round_trip() {
        for f in Family::ALL {
            assert_eq!(Family::parse(f.name()), Some(f));
        }
        assert_eq!(Family::parse("nope"), None);
    }

    #[test]
    fn latency_figures_are_named_per_percentile() {
        let mut l = Latencies::new();
        l.record(Duration::from_micros(100));
        let f = Figure::latencies("rand_read", "random read", &l);
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "rand_read_p50_us",
                "rand_read_p95_us",
                "rand_read_p99_us",
                "rand_read_max_us"
            ]
        );
        assert!(
            f.iter()
                .all(|f| f.better == Better::Lower && f.unit == "µs")
        );
        assert!(Figure::latencies("x", "x", &Latencies::new()).is_empty());
    }
}

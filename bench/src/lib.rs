//! `mosaic-bench`: the benchmark of MosaicFS, runnable against any directory.
//!
//! It runs the quorum-DFS design's client types (read-heavy, write-heavy, balanced on a
//! working set; state-query against the master) and a standard suite (sequential write and
//! cold read, random reads, metadata, small files, a real tree with ordinary tools), each
//! several times, and reports the median with min and max, the CPU seconds of the MosaicFS
//! processes and the client's peak memory beside it. `--compare DIR` runs the same on a
//! second directory, alternating the two, and prints ratios. It only reports: a missed
//! target is not a failure; a failed operation is (the exit status is 1 with the error).
//!
//! With `--compare` pointing at another filesystem (`scripts/bench.sh --peer moosefs`) and
//! `--compare-pids` naming its processes, it is a side-by-side benchmark: the identical code
//! path on both, runs alternating, the ratio of every run pair, each side's CPU seconds, and
//! the machine's state (load, steal, free memory, a flush probe) recorded with every run.
//!
//! Module map: `mix` and `stats` are pure; `workloads` do the I/O; `procs` and `machine`
//! read `/proc`; `report` renders; `plot` draws SVG.

pub mod machine;
pub mod mix;
pub mod plot;
pub mod procs;
pub mod report;
pub mod stats;
pub mod workloads;

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;
use procs::Accounted;
use report::{Collector, Report};
use stats::Latencies;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use workloads::{Buckets, Config, Family, GIB, KIB, MIB};

/// Benchmarks a directory (normally a MosaicFS mount): throughput, latency percentiles,
/// CPU seconds of the MosaicFS processes and the client's peak memory.
#[derive(Parser, Debug)]
#[command(name = "mosaic-bench", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The directory to measure (e.g. a MosaicFS mount). Work happens in a fresh
    /// subdirectory that is removed afterwards.
    pub dir: PathBuf,
    /// A second directory (e.g. on a local disk) measured the same way, alternating with DIR;
    /// the table gets its medians and the ratio DIR / COMPARE.
    #[arg(long, value_name = "DIR")]
    pub compare: Option<PathBuf>,
    /// The master's address, for the state-query workload.
    #[arg(long, value_name = "ADDR")]
    pub master: Option<String>,
    /// A credential directory (cert.pem, key.pem, ca.pem of a client or sentinel, made by
    /// `mosaic-master issue`) for the TLS connection to the master.
    #[arg(long, value_name = "DIR")]
    pub credentials: Option<PathBuf>,
    /// Which workloads, comma-separated: seq, meta, small, tree, read_heavy, write_heavy,
    /// balanced, state_query. Default: all (state_query only with --master).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Small sizes and short durations: the whole suite in well under a minute. Other flags
    /// still override it.
    #[arg(long)]
    pub quick: bool,
    /// Runs per figure (the median is reported). Default 3.
    #[arg(long)]
    pub runs: Option<usize>,
    /// Size of the sequential file (e.g. 1GiB, 64MiB). Default 1 GiB.
    #[arg(long, value_parser = parse_size)]
    pub seq_size: Option<u64>,
    /// Block size of sequential I/O. Default 1 MiB.
    #[arg(long, value_parser = parse_size)]
    pub block_size: Option<u64>,
    /// Size of one random read. Default 4 KiB.
    #[arg(long, value_parser = parse_size)]
    pub rand_io: Option<u64>,
    /// Seconds of random reads. Default 10.
    #[arg(long)]
    pub rand_seconds: Option<f64>,
    /// Empty files created, stat'ed and unlinked. Default 10000.
    #[arg(long)]
    pub meta_files: Option<usize>,
    /// Number of small files. Default 2000.
    #[arg(long)]
    pub small_files: Option<usize>,
    /// Size of a small file. Default 64 KiB.
    #[arg(long, value_parser = parse_size)]
    pub small_size: Option<u64>,
    /// The tree to tar up for the real-tree workload. Default /usr/include.
    #[arg(long)]
    pub tree_source: Option<PathBuf>,
    /// At most this many entries of the tree (0: all). Default all.
    #[arg(long)]
    pub tree_max_files: Option<usize>,
    /// Files in the mixed workloads' working set. Default 16.
    #[arg(long)]
    pub mix_files: Option<usize>,
    /// Size of each working-set file. Default 4 MiB.
    #[arg(long, value_parser = parse_size)]
    pub mix_file_size: Option<u64>,
    /// Size of one read or write of the mixed workloads. Default 64 KiB.
    #[arg(long, value_parser = parse_size)]
    pub mix_io: Option<u64>,
    /// Client threads of the mixed workloads. Default 4.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds each mixed workload runs. Default 10.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds the state-query workload runs. Default 5.
    #[arg(long)]
    pub state_query_seconds: Option<f64>,
    /// Seed of file contents and random offsets.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Pids whose CPU time counts as MosaicFS's (comma-separated). Default: every process
    /// named mosaic-* (which includes other clusters running on the machine).
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Pids of the filesystem behind --compare (its daemons and mount helper,
    /// comma-separated): their CPU seconds are reported for each run on the comparison.
    /// Without it, that column shows the MosaicFS processes' background CPU instead.
    #[arg(long, value_delimiter = ',', requires = "compare")]
    pub compare_pids: Vec<u32>,
    /// What DIR is, in the table's words. Default "target".
    #[arg(long, default_value = "target")]
    pub name: String,
    /// What the --compare directory is, in the table's words (e.g. MooseFS). Default
    /// "compare".
    #[arg(long, default_value = "compare")]
    pub compare_name: String,
    /// Where the 4 KiB write + fdatasync probe runs before each run (a directory on the
    /// machine's disk, outside the measured directories). Default: the temporary directory.
    #[arg(long, value_name = "DIR")]
    pub probe_dir: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json_file: Option<PathBuf>,
    /// Print the table as Markdown, with the targets (for docs/BENCHMARKS.md).
    #[arg(long)]
    pub markdown: bool,
    /// Write SVG charts (latency distributions, throughput over time) into DIR.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
}

const AFTER_HELP: &str = "\
Examples:
  mosaic-bench --quick ./mnt
  mosaic-bench --master 127.0.0.1:9420 --compare /var/tmp/bench --plot charts ./mnt
  mosaic-bench --workloads seq,meta --runs 5 --seq-size 4GiB ./mnt
  mosaic-bench --compare /mnt/moosefs --compare-name MooseFS --compare-pids 101,102 ./mnt

Cold reads drop the page cache (/proc/sys/vm/drop_caches, needs root); when that is not
possible the output says so. The benchmark only reports: it never fails on a slow figure.";

/// Parses `4096`, `64K`, `64KiB`, `1M`, `1MiB`, `1G`, `1GiB` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 64KiB, 1GiB)"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => KIB,
        "M" | "MiB" => MIB,
        "G" | "GiB" => GIB,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{s}' (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

impl Cli {
    /// The sizes: the preset (`--quick` or full) with every given flag applied over it.
    pub fn config(&self) -> Config {
        let q = self.quick;
        let pick = |quick, full| if q { quick } else { full };
        Config {
            seq_size: self.seq_size.unwrap_or(pick(64 * MIB, GIB)),
            block_size: self.block_size.unwrap_or(MIB),
            rand_io: self.rand_io.unwrap_or(4 * KIB),
            rand_seconds: self.rand_seconds.unwrap_or(if q { 0.5 } else { 10.0 }),
            meta_files: self.meta_files.unwrap_or(if q { 300 } else { 10_000 }),
            small_files: self.small_files.unwrap_or(if q { 50 } else { 2000 }),
            small_size: self.small_size.unwrap_or(64 * KIB),
            tree_source: self
                .tree_source
                .clone()
                .unwrap_or_else(|| PathBuf::from("/usr/include")),
            tree_max_files: self.tree_max_files.unwrap_or(if q { 150 } else { 0 }),
            mix_files: self.mix_files.unwrap_or(if q { 4 } else { 16 }),
            mix_file_size: self.mix_file_size.unwrap_or(if q { MIB } else { 4 * MIB }),
            mix_io: self.mix_io.unwrap_or(64 * KIB),
            threads: self.threads.unwrap_or(if q { 2 } else { 4 }),
            mix_seconds: self.duration.unwrap_or(if q { 0.5 } else { 10.0 }),
            state_query_seconds: self
                .state_query_seconds
                .unwrap_or(if q { 0.5 } else { 5.0 }),
            seed: self.seed,
        }
    }

    /// The families to run, in suite order.
    pub fn families(&self) -> anyhow::Result<Vec<Family>> {
        if self.workloads.is_empty() {
            return Ok(Family::ALL
                .into_iter()
                .filter(|f| *f != Family::StateQuery || self.master.is_some())
                .collect());
        }
        let mut out = Vec::new();
        for name in &self.workloads {
            let f = Family::parse(name.trim()).ok_or_else(|| {
                let all: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
                anyhow!("unknown workload '{name}' (one of: {})", all.join(", "))
            })?;
            if f == Family::StateQuery && self.master.is_none() {
                bail!("the state_query workload needs --master ADDR");
            }
            if !out.contains(&f) {
                out.push(f);
            }
        }
        // Suite order whatever the order given.
        out.sort_by_key(|f| Family::ALL.iter().position(|a| a == f));
        Ok(out)
    }
}

fn check_dir(dir: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let meta = std::fs::metadata(dir).with_context(|| format!("{what} {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{what} {} is not a directory", dir.display());
    }
    dir.canonicalize()
        .with_context(|| format!("resolve {}", dir.display()))
}

/// Distributions and the last run's series per name and side, for `--plot`.
#[derive(Default)]
struct PlotData {
    latencies: Vec<(String, &'static str, Latencies)>,
    series: Vec<(String, &'static str, &'static str, Buckets)>,
}

impl PlotData {
    fn add(&mut self, side: &'static str, out: &workloads::Outcome) {
        for (name, l) in &out.latencies {
            match self
                .latencies
                .iter_mut()
                .find(|e| &e.0 == name && e.1 == side)
            {
                Some(e) => e.2.merge(l),
                None => self.latencies.push((name.clone(), side, l.clone())),
            }
        }
        for s in &out.series {
            self.series.retain(|e| !(e.0 == s.name && e.1 == side));
            self.series
                .push((s.name.clone(), side, s.unit, s.buckets.clone()));
        }
    }

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut names: Vec<&String> = self.latencies.iter().map(|e| &e.0).collect();
        names.dedup();
        for name in names {
            let lines: Vec<plot::LatencyLine> = self
                .latencies
                .iter()
                .filter(|e| &e.0 == name)
                .map(|e| plot::LatencyLine {
                    side: e.1,
                    latencies: &e.2,
                })
                .collect();
            plot::latency_chart(
                &dir.join(format!("latency-{name}.svg")),
                &format!("{name}: latency distribution"),
                &lines,
            )?;
        }
        let mut names: Vec<(&String, &str)> = self.series.iter().map(|e| (&e.0, e.2)).collect();
        names.sort();
        names.dedup();
        for (name, unit) in names {
            let lines: Vec<plot::RateLine> = self
                .series
                .iter()
                .filter(|e| &e.0 == name)
                .map(|e| plot::RateLine {
                    side: e.1,
                    buckets: &e.3,
                })
                .collect();
            plot::rate_chart(
                &dir.join(format!("throughput-{name}.svg")),
                &format!("{name}: throughput over time (last run)"),
                unit,
                &lines,
            )?;
        }
        Ok(())
    }
}

/// Runs the benchmark with command-line `args` (the first is the program name).
pub fn run(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<()> {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: print and succeed.
            print!("{e}");
            return Ok(());
        }
        Err(e) => bail!("{e}"),
    };
    let config = cli.config();
    let families = cli.families()?;
    let runs = cli.runs.unwrap_or(3);
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let target = check_dir(&cli.dir, "directory")?;
    let compare = cli
        .compare
        .as_deref()
        .map(|c| check_dir(c, "--compare directory"))
        .transpose()?;
    if compare.as_ref() == Some(&target) {
        bail!("--compare names the measured directory itself");
    }

    let scratch = tempfile::Builder::new()
        .prefix("mosaic-bench-")
        .tempdir()
        .context("create a scratch directory")?;
    let (tarball, tarball_info) = if families.contains(&Family::Tree) {
        let path = scratch.path().join("tree.tar");
        let info = workloads::tree::make_tarball(&config.tree_source, config.tree_max_files, &path)
            .with_context(|| format!("make a tarball of {}", config.tree_source.display()))?;
        (Some(path), Some(info))
    } else {
        (None, None)
    };
    let probe_dir = cli.probe_dir.clone().unwrap_or_else(std::env::temp_dir);

    let accounted = if cli.pids.is_empty() {
        Accounted::ByName
    } else {
        Accounted::Pids(cli.pids.clone())
    };
    let client = accounted.client_for(&target);
    let compare_accounted =
        (!cli.compare_pids.is_empty()).then(|| Accounted::Pids(cli.compare_pids.clone()));
    let mut machine = Vec::new();

    let sides = |f: Family| -> usize {
        if f.uses_dir() && compare.is_some() {
            2
        } else {
            1
        }
    };
    let total: usize = families.iter().map(|&f| runs * sides(f)).sum();
    let progress = indicatif::ProgressBar::new(total as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );

    let mut collector = Collector::default();
    let mut notes: Vec<String> = Vec::new();
    let mut rss_after: Vec<(String, u64)> = Vec::new();
    let mut plot = PlotData::default();
    for &family in &families {
        for run in 0..runs {
            // Alternate which side goes first, so slow drift of the machine (another
            // process, a warming disk) weighs on both sides alike.
            let mut order: Vec<(&Path, bool)> = vec![(&target, false)];
            if let (Some(c), true) = (&compare, family.uses_dir()) {
                order.push((c, true));
                if run % 2 == 1 {
                    order.reverse();
                }
            }
            for (dir, is_compare) in order {
                progress.set_message(format!(
                    "{} run {}/{runs} on {}",
                    family.name(),
                    run + 1,
                    dir.display()
                ));
                let ctx = workloads::Context {
                    dir,
                    config: &config,
                    master: cli.master.as_deref(),
                    credentials: cli.credentials.as_deref(),
                    tarball: tarball.as_deref(),
                };
                let side = if is_compare { "compare" } else { "target" };
                let (state, ticks) = machine::before_run(family.name(), run, side, &probe_dir);
                // Each side's own processes when both are known; else MosaicFS's.
                let counted = match (&compare_accounted, is_compare) {
                    (Some(c), true) => c,
                    _ => &accounted,
                };
                let cpu_before = counted.cpu_seconds();
                let outcome = workloads::run_family(family, &ctx, run);
                let cpu = counted.cpu_seconds() - cpu_before;
                machine.push(state.finish(ticks));
                let outcome = match outcome {
                    Ok(o) => o,
                    Err(e) => {
                        progress.abandon();
                        return Err(e);
                    }
                };
                collector.add(family.name(), &outcome.figures, is_compare);
                collector.add_cpu(family.name(), cpu, is_compare);
                for n in &outcome.notes {
                    if !notes.contains(n) {
                        notes.push(n.clone());
                    }
                }
                plot.add(if is_compare { "compare" } else { "target" }, &outcome);
                progress.inc(1);
            }
        }
        if let Some(rss) = client.and_then(procs::peak_rss) {
            rss_after.push((family.name().to_string(), rss));
        }
    }
    progress.finish_and_clear();

    if client.is_none() {
        notes.push(format!(
            "no mosaic-mount process serves {}: client memory not reported",
            target.display()
        ));
    }
    let (metrics, costs) = collector.finish(&rss_after);
    let report = Report {
        target: target.display().to_string(),
        compare: compare.as_ref().map(|c| c.display().to_string()),
        target_name: cli.name.clone(),
        compare_name: cli.compare_name.clone(),
        compare_cpu_own: compare_accounted.is_some(),
        runs,
        metrics,
        costs,
        client_pid: client,
        client_peak_rss_bytes: client.and_then(procs::peak_rss),
        notes,
        config: serde_json::to_value(&config).unwrap_or(serde_json::Value::Null),
        tarball: tarball_info,
        machine,
    };

    if let Some(path) = &cli.json_file {
        std::fs::write(path, report.render_json() + "\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(dir) = &cli.plot {
        plot.write(dir).context("write charts")?;
    }
    if cli.json {
        println!("{}", report.render_json());
    } else if cli.markdown {
        print!("{}", report.render_markdown());
    } else {
        print!("{}", report.render_text());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 * 1024));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn workload_selection() {
        let cli = Cli::parse_from(["mosaic-bench", "/tmp"]);
        assert!(
            !cli.families()
                .expect("families")
                .contains(&Family::StateQuery)
        );
        let cli = Cli::parse_from(["mosaic-bench", "--master", "127.0.0.1:1", "/tmp"]);
        assert_eq!(cli.families().expect("families").len(), Family::ALL.len());
        let cli = Cli::parse_from(["mosaic-bench", "--workloads", "meta,seq,meta", "/tmp"]);
        assert_eq!(
            cli.families().expect("families"),
            [Family::Seq, Family::Meta]
        );
        let cli = Cli::parse_from(["mosaic-bench", "--workloads", "state_query", "/tmp"]);
        assert!(cli.families().is_err(), "state_query without --master");
        let cli = Cli::parse_from(["mosaic-bench", "--workloads", "bogus", "/tmp"]);
        assert!(cli.families().is_err());
    }

    #[test]
    fn quick_preset_and_overrides() {
        let cli = Cli::parse_from(["mosaic-bench", "--quick", "--meta-files", "7", "/tmp"]);
        let c = cli.config();
        assert_eq!((c.seq_size, c.meta_files, c.small_files), (64 * MIB, 7, 50));
        let c = Cli::parse_from(["mosaic-bench", "/tmp"]).config();
        assert_eq!(
            (c.seq_size, c.meta_files, c.small_files, c.small_size),
            (GIB, 10_000, 2000, 64 * KIB)
        );
    }
}

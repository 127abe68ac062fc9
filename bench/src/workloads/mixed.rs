//! The mixed client types of the quorum-DFS design: client threads reading and writing
//! blocks of a working set of files for a fixed time, in the read/write share of the mix.
//! Writes are buffered writes (no fsync): the latency is what an application sees per call.

use super::seq::human;
use super::{BUCKET, Better, Buckets, Config, Figure, Outcome, Series, pattern, per_second};
use crate::mix::{Mix, MixGen, OpKind};
use crate::stats::Latencies;
use anyhow::{Context as _, anyhow};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

struct ThreadResult {
    reads: Latencies,
    writes: Latencies,
    buckets: Buckets,
}

pub fn run(work: &Path, config: &Config, mix: Mix) -> anyhow::Result<Outcome> {
    let name = mix.name();
    let io = usize::try_from(config.mix_io).context("I/O size")?;
    if config.threads == 0 {
        return Err(anyhow!("--threads must be at least 1"));
    }
    // Probe the shape before creating anything.
    MixGen::new(
        mix,
        config.mix_files,
        config.mix_file_size,
        config.mix_io,
        0,
    )
    .ok_or_else(|| anyhow!("--mix-files must be > 0 and --mix-io at most --mix-file-size"))?;

    // The working set, written (and fsynced) before the clock starts.
    let content = pattern(
        usize::try_from(config.mix_file_size).context("file size")?,
        config.seed,
    );
    let paths: Vec<_> = (0..config.mix_files)
        .map(|i| work.join(format!("m{i:04}")))
        .collect();
    for p in &paths {
        let mut f = File::create(p).with_context(|| format!("create {}", p.display()))?;
        f.write_all(&content)
            .with_context(|| format!("write {}", p.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", p.display()))?;
    }

    let limit = Duration::from_secs_f64(config.mix_seconds);
    let start = Instant::now();
    let results: Vec<anyhow::Result<ThreadResult>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..config.threads)
            .map(|t| {
                let paths = &paths;
                s.spawn(move || -> anyhow::Result<ThreadResult> {
                    let files: Vec<File> = paths
                        .iter()
                        .map(|p| {
                            OpenOptions::new()
                                .read(true)
                                .write(true)
                                .open(p)
                                .with_context(|| format!("open {}", p.display()))
                        })
                        .collect::<anyhow::Result<_>>()?;
                    let ops = MixGen::new(
                        mix,
                        config.mix_files,
                        config.mix_file_size,
                        config.mix_io,
                        config.seed.wrapping_add(t as u64),
                    )
                    .ok_or_else(|| anyhow!("invalid mix shape"))?;
                    let wbuf = pattern(io, config.seed ^ t as u64);
                    let mut rbuf = vec![0u8; io];
                    let mut r = ThreadResult {
                        reads: Latencies::new(),
                        writes: Latencies::new(),
                        buckets: Buckets::new(BUCKET),
                    };
                    for op in ops {
                        if start.elapsed() >= limit {
                            break;
                        }
                        let f = &files[op.file];
                        let t0 = Instant::now();
                        match op.kind {
                            OpKind::Read => {
                                f.read_exact_at(&mut rbuf, op.offset).context("read")?;
                                r.reads.record(t0.elapsed());
                            }
                            OpKind::Write => {
                                f.write_all_at(&wbuf, op.offset).context("write")?;
                                r.writes.record(t0.elapsed());
                            }
                        }
                        r.buckets.add(start.elapsed(), 1.0);
                    }
                    Ok(r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a client thread panicked")))
            })
            .collect()
    });
    let elapsed = start.elapsed();

    let mut reads = Latencies::new();
    let mut writes = Latencies::new();
    let mut buckets = Buckets::new(BUCKET);
    for r in results {
        let r = r?;
        reads.merge(&r.reads);
        writes.merge(&r.writes);
        buckets.merge(&r.buckets);
    }
    let mut out = Outcome::default();
    let ops = reads.count() + writes.count();
    out.figures.push(Figure::new(
        &format!("{name}_ops"),
        format!(
            "{name}: {}% reads, {} threads, {} files of {}, {} I/O",
            mix.read_percent(),
            config.threads,
            config.mix_files,
            human(config.mix_file_size),
            human(config.mix_io)
        ),
        "ops/s",
        Better::Higher,
        per_second(ops as f64, elapsed),
    ));
    out.figures.extend(Figure::latencies(
        &format!("{name}_read"),
        &format!("{name} read latency"),
        &reads,
    ));
    out.figures.extend(Figure::latencies(
        &format!("{name}_write"),
        &format!("{name} write latency"),
        &writes,
    ));
    out.latencies.push((format!("{name}_read"), reads));
    out.latencies.push((format!("{name}_write"), writes));
    out.series.push(Series {
        name: name.to_string(),
        unit: "ops/s",
        buckets,
    });
    Ok(out)
}

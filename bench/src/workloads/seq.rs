//! Sequential write of one large file in large blocks (fsync included), a cold sequential
//! read of it, and random small reads of it for a fixed time.

use super::{BUCKET, Better, Buckets, Config, Figure, MB, Outcome, Series, cold, per_second};
use crate::stats::Latencies;
use anyhow::{Context as _, bail};
use rand::{Rng as _, RngCore as _, SeedableRng as _};
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

pub fn run(work: &Path, config: &Config) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let path = work.join("seq.dat");
    let size = config.seq_size;
    let block = usize::try_from(config.block_size).context("block size")?;
    if size < config.block_size || size < config.rand_io || config.rand_io == 0 {
        bail!("--seq-size must be at least the block size and the random read size");
    }
    let size_label = human(size);
    let block_label = human(config.block_size);

    // Write: the whole file in `block` writes, then fsync; the time includes the fsync (the
    // data is only durable after it). Every block is fresh random bytes, as a user's data
    // would be: a repeated block could be deduplicated or compressed by a filesystem that
    // does so and would not measure its data path. Generating it costs a few percent of the
    // slowest storage's time and is the same on every filesystem measured.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(config.seed);
    let mut buf = vec![0u8; block];
    let mut series = Buckets::new(BUCKET);
    let start = Instant::now();
    let mut f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let mut written = 0u64;
    while written < size {
        let n = (size - written).min(config.block_size) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n]).context("write")?;
        written += n as u64;
        series.add(start.elapsed(), n as f64 / MB);
    }
    f.sync_all().context("fsync")?;
    drop(f);
    let elapsed = start.elapsed();
    out.figures.push(Figure::new(
        "seq_write",
        format!("sequential write {size_label} of random data ({block_label} writes, fsync)"),
        "MB/s",
        Better::Higher,
        per_second(size as f64 / MB, elapsed),
    ));
    out.series.push(Series {
        name: "seq_write".into(),
        unit: "MB/s",
        buckets: series,
    });

    // Cold read: every byte from the filesystem, none from the page cache.
    cold(&mut out.notes);
    let mut rbuf = vec![0u8; block];
    let mut series = Buckets::new(BUCKET);
    let start = Instant::now();
    let mut f = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    let mut read = 0u64;
    loop {
        let n = f.read(&mut rbuf).context("read")?;
        if n == 0 {
            break;
        }
        read += n as u64;
        series.add(start.elapsed(), n as f64 / MB);
    }
    let elapsed = start.elapsed();
    if read != size {
        bail!(
            "read {read} bytes back from {}, wrote {size}",
            path.display()
        );
    }
    out.figures.push(Figure::new(
        "seq_read",
        format!("cold sequential read {size_label} ({block_label} reads)"),
        "MB/s",
        Better::Higher,
        per_second(size as f64 / MB, elapsed),
    ));
    out.series.push(Series {
        name: "seq_read".into(),
        unit: "MB/s",
        buckets: series,
    });

    // Random reads for a fixed time, cold start, one reader.
    cold(&mut out.notes);
    let io = config.rand_io;
    let slots = size / io;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(config.seed ^ 0x5eed);
    let mut rbuf = vec![0u8; io as usize];
    let mut lat = Latencies::new();
    let mut series = Buckets::new(BUCKET);
    let f = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    let limit = Duration::from_secs_f64(config.rand_seconds);
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < limit {
        let offset = rng.gen_range(0..slots) * io;
        let t = Instant::now();
        f.read_exact_at(&mut rbuf, offset).context("random read")?;
        lat.record(t.elapsed());
        ops += 1;
        series.add(start.elapsed(), 1.0);
    }
    let elapsed = start.elapsed();
    let io_label = human(io);
    out.figures.push(Figure::new(
        "rand_read_iops",
        format!(
            "random {io_label} reads ({}s, queue depth 1, cold start)",
            config.rand_seconds
        ),
        "IOPS",
        Better::Higher,
        per_second(ops as f64, elapsed),
    ));
    out.figures.extend(Figure::latencies(
        "rand_read",
        &format!("random {io_label} read latency"),
        &lat,
    ));
    out.latencies.push(("rand_read".into(), lat));
    out.series.push(Series {
        name: "rand_read".into(),
        unit: "IOPS",
        buckets: series,
    });
    Ok(out)
}

/// `1 GiB`, `64 KiB`, `1536 B`: the largest binary unit that divides the size.
pub fn human(bytes: u64) -> String {
    for (unit, size) in [
        ("GiB", super::GIB),
        ("MiB", super::MIB),
        ("KiB", super::KIB),
    ] {
        if bytes >= size && bytes % size == 0 {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(1 << 30), "1 GiB");
        assert_eq!(super::human(64 * 1024), "64 KiB");
        assert_eq!(super::human(3 << 20), "3 MiB");
        assert_eq!(super::human(1536), "1536 B");
    }
}

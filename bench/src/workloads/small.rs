//! Small files: many files of a few KiB written (create, write, close each, then one
//! `syncfs` of the filesystem, timed, so the figure is of durable files written the way
//! `tar` or `cp` write them) and read back after dropping the caches, files/s each.

use super::seq::human;
use super::{Better, Config, Figure, Outcome, cold, pattern, per_second};
use anyhow::{Context as _, bail};
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

pub fn run(work: &Path, config: &Config) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let n = config.small_files;
    let size = usize::try_from(config.small_size).context("small file size")?;
    let data = pattern(size, config.seed ^ 0x5a11);
    let names: Vec<_> = (0..n).map(|i| work.join(format!("s{i:06}"))).collect();

    let start = Instant::now();
    for p in &names {
        let mut f = std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?;
        f.write_all(&data)
            .with_context(|| format!("write {}", p.display()))?;
    }
    super::syncfs(work)?;
    let write = per_second(n as f64, start.elapsed());

    cold(&mut out.notes);
    let start = Instant::now();
    for p in &names {
        let got = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
        if got.len() != size {
            bail!("{} has {} bytes, wrote {size}", p.display(), got.len());
        }
    }
    let read = per_second(n as f64, start.elapsed());

    let label = human(config.small_size);
    out.figures.push(Figure::new(
        "small_write",
        format!("write {n} files of {label} (create, write, close; then syncfs)"),
        "files/s",
        Better::Higher,
        write,
    ));
    out.figures.push(Figure::new(
        "small_read",
        format!("cold read {n} files of {label}"),
        "files/s",
        Better::Higher,
        read,
    ));
    Ok(out)
}

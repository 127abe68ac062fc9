//! Metadata: create, stat and unlink of many empty files in one directory, ops/s each.

use super::{Better, Config, Figure, Outcome, cold, per_second};
use anyhow::Context as _;
use std::fs::OpenOptions;
use std::path::Path;
use std::time::Instant;

pub fn run(work: &Path, config: &Config) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let n = config.meta_files;
    let names: Vec<_> = (0..n).map(|i| work.join(format!("f{i:06}"))).collect();

    let start = Instant::now();
    for p in &names {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p)
            .with_context(|| format!("create {}", p.display()))?;
    }
    let create = per_second(n as f64, start.elapsed());

    // Cold: with the dentry and inode caches dropped every stat is a lookup in the
    // filesystem, not an answer from the kernel's cache.
    cold(&mut out.notes);
    let start = Instant::now();
    for p in &names {
        std::fs::metadata(p).with_context(|| format!("stat {}", p.display()))?;
    }
    let stat = per_second(n as f64, start.elapsed());

    let start = Instant::now();
    for p in &names {
        std::fs::remove_file(p).with_context(|| format!("unlink {}", p.display()))?;
    }
    let unlink = per_second(n as f64, start.elapsed());

    for (name, what, v) in [
        ("create", "create", create),
        ("stat", "stat", stat),
        ("unlink", "unlink", unlink),
    ] {
        out.figures.push(Figure::new(
            name,
            format!("{what} of {n} empty files in one directory"),
            "ops/s",
            Better::Higher,
            v,
        ));
    }
    Ok(out)
}

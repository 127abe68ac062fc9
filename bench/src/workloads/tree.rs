//! A real tree with ordinary tools: extract a tarball then `sync -f`, `cp -a` the result then
//! `sync -f`, `find` with cold caches, `du -s`, `rm -rf`, seconds each. The tools are the
//! system's own (`tar`, `cp`, `sync`, `find`, `du`, `rm`), as a user would run them; their
//! output is discarded, their exit status checked. The `sync -f` belongs to the timed step:
//! without it a filesystem that acknowledges writes before they are durable would look
//! faster than one that does not.

use super::{Better, Figure, Outcome};
use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Runs `cmd` to completion and returns its wall time in seconds; a failure is an error
/// naming the command and carrying its stderr.
fn timed(what: &str, cmd: &mut Command) -> anyhow::Result<f64> {
    let start = Instant::now();
    let output = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("start {what}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(secs)
}

/// `sync -f DIR`: flushes the filesystem holding `dir`, timed like the other tools.
fn sync_f(dir: &Path) -> anyhow::Result<f64> {
    timed("sync -f", Command::new("sync").arg("-f").arg(dir))
}

/// The tarball the tree workload extracts: made once per invocation, recorded with the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Tarball {
    /// Entries (directories, files, links) in it.
    pub entries: usize,
    /// Size of the tarball file.
    pub bytes: u64,
}

pub fn run(work: &Path, tarball: &Path) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let a = work.join("a");
    let b = work.join("b");
    std::fs::create_dir(&a).with_context(|| format!("mkdir {}", a.display()))?;
    let extract = timed(
        "tar -x",
        Command::new("tar")
            .arg("-xf")
            .arg(tarball)
            .arg("-C")
            .arg(&a),
    )? + sync_f(work)?;
    let copy = timed("cp -a", Command::new("cp").arg("-a").arg(&a).arg(&b))? + sync_f(work)?;
    // Cold: a `find` after a reboot or on another client, every entry from the filesystem.
    super::cold(&mut out.notes);
    let find = timed("find", Command::new("find").arg(&b))?;
    let du = timed("du -s", Command::new("du").arg("-s").arg(&b))?;
    let rm = timed("rm -rf", Command::new("rm").arg("-rf").arg(&b))?;
    // The extracted copy goes untimed (the family's directory is removed afterwards).
    for (name, label, v) in [
        (
            "tree_extract",
            "extract the tarball (tar -x, sync -f)",
            extract,
        ),
        (
            "tree_cp",
            "cp -a of the extracted tree (then sync -f)",
            copy,
        ),
        ("tree_find", "find over the copy (cold caches)", find),
        ("tree_du", "du -s of the copy", du),
        ("tree_rm", "rm -rf of the copy", rm),
    ] {
        out.figures
            .push(Figure::new(name, label, "s", Better::Lower, v));
    }
    Ok(out)
}

/// Entries of `source` (relative to its parent, directories before their contents, sorted),
/// at most `max` (0: all).
pub fn entries(source: &Path, max: usize) -> anyhow::Result<Vec<PathBuf>> {
    let parent = source.parent().unwrap_or(Path::new("/"));
    let mut out = Vec::new();
    let mut stack = vec![source.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if max > 0 && out.len() >= max {
            break;
        }
        out.push(dir.strip_prefix(parent).unwrap_or(&dir).to_path_buf());
        let mut children: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("list {}", dir.display()))?
            .filter_map(|e| e.ok())
            .collect();
        children.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for child in children {
            let path = child.path();
            let is_dir = child.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                subdirs.push(path);
            } else if max == 0 || out.len() < max {
                out.push(path.strip_prefix(parent).unwrap_or(&path).to_path_buf());
            }
        }
        // Reverse: the stack pops them in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

/// Makes a tarball of `source` (at most `max` entries, 0: all) at `tar_path`, once per
/// invocation, outside the measured directories.
pub fn make_tarball(source: &Path, max: usize, tar_path: &Path) -> anyhow::Result<Tarball> {
    let list = entries(source, max)?;
    let parent = source.parent().unwrap_or(Path::new("/"));
    let list_file = tar_path.with_extension("list");
    let mut text = Vec::new();
    for p in &list {
        use std::os::unix::ffi::OsStrExt as _;
        text.extend_from_slice(p.as_os_str().as_bytes());
        text.push(0);
    }
    std::fs::write(&list_file, text).with_context(|| format!("write {}", list_file.display()))?;
    timed(
        "tar -c of the tree source",
        Command::new("tar")
            .arg("-C")
            .arg(parent)
            .arg("-cf")
            .arg(tar_path)
            .arg("--no-recursion")
            .arg("--null")
            .arg("-T")
            .arg(&list_file),
    )?;
    let bytes = std::fs::metadata(tar_path)
        .with_context(|| format!("stat {}", tar_path.display()))?
        .len();
    Ok(Tarball {
        entries: list.len(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_walk_in_order_and_stop_at_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("b/c")).expect("mkdir");
        std::fs::write(src.join("a.h"), b"a").expect("write");
        std::fs::write(src.join("b/x.h"), b"x").expect("write");
        std::fs::write(src.join("b/c/y.h"), b"y").expect("write");
        let all = entries(&src, 0).expect("entries");
        let names: Vec<String> = all.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "src",
                "src/a.h",
                "src/b",
                "src/b/x.h",
                "src/b/c",
                "src/b/c/y.h"
            ]
        );
        assert_eq!(entries(&src, 3).expect("entries").len(), 3);
    }
}

//! A randomized differential test: one seeded random sequence of filesystem operations is
//! applied to the mount and to a local directory (ext4, the oracle); every operation's result
//! — data read, directory listing, attributes, or errno — must be the same on both, and so
//! must the whole trees at checkpoints and at the end.
//!
//! Paths are drawn from a small universe of names so that operations collide often (a
//! rename onto an existing directory, a write through a symlink, an rmdir of a non-empty
//! directory) and errors are exercised as much as successes. Offsets and lengths sometimes
//! straddle the 1 MiB chunk boundaries of the test cluster.
//!
//! Reproduce a failure with `MOSAIC_DIFF_SEED=<seed printed in the failure>`; change the
//! length with `MOSAIC_DIFF_OPS` (default 600). Without `MOSAIC_DIFF_SEED` a run covers
//! seeds 1, 2, 3 and one random seed.

use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use mosaic_tests::sys::{check, cpath, kind_of, pread_all, pwrite_all};
use mosaic_tests::tree::{Compare, differences, pattern_bytes, snapshot};
use mosaic_tests::{ClusterOptions, MountedCluster};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

const MIB: u64 = 1024 * 1024;
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const DEFAULT_OPS: usize = 600;
/// Seeds every run covers; one random seed per run is added so that CI keeps exploring.
const FIXED_SEEDS: [u64; 3] = [1, 2, 3];
/// Compare whole trees this often: cheap for the small trees the universe allows, and it
/// narrows down where a silent divergence (no errno, wrong state) crept in.
const CHECKPOINT_EVERY: usize = 100;

#[derive(Clone, Debug)]
enum Op {
    Create {
        path: String,
        mode: u32,
        excl: bool,
        trunc: bool,
    },
    Write {
        path: String,
        offset: u64,
        len: usize,
        seed: u64,
    },
    Read {
        path: String,
        offset: u64,
        len: usize,
    },
    Truncate {
        path: String,
        size: u64,
    },
    Rename {
        from: String,
        to: String,
    },
    Unlink {
        path: String,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Rmdir {
        path: String,
    },
    Link {
        from: String,
        to: String,
    },
    Symlink {
        target: String,
        path: String,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    Readdir {
        path: String,
    },
    Stat {
        path: String,
    },
    Readlink {
        path: String,
    },
}

/// What an operation returned.
#[derive(PartialEq, Eq)]
enum Value {
    Unit,
    /// Bytes written, and what a read on the same descriptor returned right after.
    Written(usize, Vec<u8>),
    Data(Vec<u8>),
    /// Sorted (name, kind) pairs.
    Names(Vec<(String, &'static str)>),
    /// kind, permission bits, size (not for directories: ext4's block-sized directory size
    /// is not a POSIX promise), link count.
    Stat(&'static str, u32, Option<u64>, u64),
    Target(Vec<u8>),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = |d: &Vec<u8>| {
            format!(
                "{} bytes, blake3 {}",
                d.len(),
                &blake3::hash(d).to_hex()[..16]
            )
        };
        match self {
            Value::Unit => write!(f, "ok"),
            Value::Written(n, d) => write!(f, "wrote {n}, read back {}", data(d)),
            Value::Data(d) => write!(f, "read {}", data(d)),
            Value::Names(n) => write!(f, "{n:?}"),
            Value::Stat(kind, perm, size, nlink) => {
                write!(f, "{kind} {perm:o} size {size:?} nlink {nlink}")
            }
            Value::Target(t) => write!(f, "-> {:?}", String::from_utf8_lossy(t)),
        }
    }
}

#[derive(PartialEq, Eq)]
struct Outcome(Result<Value, i32>);

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Ok(v) => write!(f, "{v:?}"),
            Err(e) => write!(f, "errno {e} ({})", std::io::Error::from_raw_os_error(*e)),
        }
    }
}

/// Paths that exist in the (local) tree, by kind.
#[derive(Default)]
struct Existing {
    files: Vec<String>,
    dirs: Vec<String>,
    links: Vec<String>,
}

/// A path that exists in `pool` most of the time, otherwise any path of the universe: only
/// random paths would make most operations fail with ENOENT, EISDIR or EEXIST.
fn pick_path(rng: &mut StdRng, pool: &[String]) -> String {
    if !pool.is_empty() && rng.gen_bool(0.7) {
        pool[rng.gen_range(0..pool.len())].clone()
    } else {
        random_path(rng)
    }
}

/// Every path under `root`, relative, without reading any contents.
fn list_paths(root: &Path) -> Existing {
    let mut out = Existing::default();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = rel.join(entry.file_name());
            let text = path.to_string_lossy().into_owned();
            match entry.file_type() {
                Ok(t) if t.is_dir() => {
                    stack.push(path);
                    out.dirs.push(text);
                }
                Ok(t) if t.is_symlink() => out.links.push(text),
                _ => out.files.push(text),
            }
        }
    }
    out.files.sort();
    out.dirs.sort();
    out.links.sort();
    out
}

fn random_path(rng: &mut StdRng) -> String {
    let depth = match rng.gen_range(0..100) {
        0..60 => 1,
        60..95 => 2,
        _ => 3,
    };
    (0..depth)
        .map(|_| NAMES[rng.gen_range(0..NAMES.len())])
        .collect::<Vec<_>>()
        .join("/")
}

fn random_offset(rng: &mut StdRng) -> u64 {
    match rng.gen_range(0..4) {
        0 | 1 => rng.gen_range(0..200_000),
        // Around a chunk boundary.
        2 => (rng.gen_range(1..=3) * MIB).saturating_sub(70_000) + rng.gen_range(0..140_000),
        _ => rng.gen_range(0..3 * MIB),
    }
}

fn random_len(rng: &mut StdRng) -> usize {
    match rng.gen_range(0..10) {
        0..6 => rng.gen_range(1..8192),
        6..9 => rng.gen_range(8192..300_000),
        _ => rng.gen_range(300_000..1_200_000),
    }
}

fn random_op(rng: &mut StdRng, existing: &Existing) -> Op {
    let file = |rng: &mut StdRng| pick_path(rng, &existing.files);
    let dir = |rng: &mut StdRng| pick_path(rng, &existing.dirs);
    let link = |rng: &mut StdRng| pick_path(rng, &existing.links);
    // A name in an existing directory (or the root): creations mostly succeed.
    let new = |rng: &mut StdRng| {
        let name = NAMES[rng.gen_range(0..NAMES.len())];
        if existing.dirs.is_empty() || rng.gen_bool(0.3) {
            name.to_string()
        } else {
            format!(
                "{}/{name}",
                existing.dirs[rng.gen_range(0..existing.dirs.len())]
            )
        }
    };
    let any = |rng: &mut StdRng| match rng.gen_range(0..5) {
        0 | 1 => file(rng),
        2 | 3 => dir(rng),
        _ => link(rng),
    };
    match rng.gen_range(0..105) {
        0..18 => Op::Write {
            path: file(rng),
            offset: random_offset(rng),
            len: random_len(rng),
            seed: rng.r#gen(),
        },
        18..30 => Op::Read {
            path: file(rng),
            offset: random_offset(rng),
            len: random_len(rng).max(1),
        },
        // New names mostly: a random path, sometimes an existing one (EEXIST, O_TRUNC).
        30..40 => Op::Create {
            path: if rng.gen_bool(0.3) {
                file(rng)
            } else {
                random_path(rng)
            },
            mode: rng.gen_range(0o400..0o1000),
            excl: rng.gen_bool(0.5),
            trunc: rng.gen_bool(0.2),
        },
        40..46 => Op::Mkdir {
            path: new(rng),
            mode: rng.gen_range(0o500..0o1000),
        },
        46..54 => Op::Truncate {
            path: file(rng),
            size: match rng.gen_range(0..3) {
                0 => rng.gen_range(0..100_000),
                1 => rng.gen_range(1..=3) * MIB + rng.gen_range(0..3) - 1,
                _ => rng.gen_range(0..(7 * MIB / 2)),
            },
        },
        54..64 => Op::Rename {
            from: any(rng),
            to: if rng.gen_bool(0.5) {
                any(rng)
            } else {
                random_path(rng)
            },
        },
        64..70 => Op::Unlink { path: file(rng) },
        70..75 => Op::Rmdir { path: dir(rng) },
        75..80 => Op::Link {
            from: any(rng),
            to: new(rng),
        },
        // Relative targets only: an absolute one would resolve differently in each tree.
        // One-component targets never climb out of the tree.
        80..84 => Op::Symlink {
            target: NAMES[rng.gen_range(0..NAMES.len())].to_string(),
            path: new(rng),
        },
        84..88 => Op::Chmod {
            path: any(rng),
            mode: rng.gen_range(0..0o1000),
        },
        88..94 => Op::Readdir { path: dir(rng) },
        94..102 => Op::Stat { path: any(rng) },
        _ => Op::Readlink { path: link(rng) },
    }
}

/// Opens `p`, runs `f` on the descriptor, and closes it; a failing close (where a
/// write-behind client reports a failed flush) is part of the outcome.
fn with_fd<T>(
    p: &Path,
    flags: i32,
    mode: u32,
    f: impl FnOnce(i32) -> Result<T, i32>,
) -> Result<T, i32> {
    let c = cpath(p);
    // SAFETY: a valid NUL-terminated path; the descriptor is closed below.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    let result = f(fd);
    // SAFETY: closing the descriptor opened above, once.
    let closed = check(unsafe { libc::close(fd) });
    let value = result?;
    closed?;
    Ok(value)
}

/// Applies `op` under `root` with plain system calls.
fn apply(root: &Path, op: &Op) -> Outcome {
    let at = |p: &str| root.join(p);
    let result = match op {
        Op::Create {
            path,
            mode,
            excl,
            trunc,
        } => {
            let mut flags = libc::O_CREAT | libc::O_WRONLY;
            if *excl {
                flags |= libc::O_EXCL;
            }
            if *trunc {
                flags |= libc::O_TRUNC;
            }
            with_fd(&at(path), flags, *mode, |_| Ok(Value::Unit))
        }
        Op::Write {
            path,
            offset,
            len,
            seed,
        } => {
            let data = pattern_bytes(*seed, *len);
            with_fd(&at(path), libc::O_RDWR, 0, |fd| {
                let n = pwrite_all(fd, &data, *offset)?;
                let back = pread_all(fd, *len, *offset)?;
                Ok(Value::Written(n, back))
            })
        }
        Op::Read { path, offset, len } => with_fd(&at(path), libc::O_RDONLY, 0, |fd| {
            pread_all(fd, *len, *offset).map(Value::Data)
        }),
        Op::Truncate { path, size } => {
            let c = cpath(&at(path));
            // SAFETY: a valid NUL-terminated path.
            check(unsafe { libc::truncate(c.as_ptr(), *size as i64) }).map(|_| Value::Unit)
        }
        Op::Rename { from, to } => {
            let (a, b) = (cpath(&at(from)), cpath(&at(to)));
            // SAFETY: valid NUL-terminated paths.
            check(unsafe { libc::rename(a.as_ptr(), b.as_ptr()) }).map(|_| Value::Unit)
        }
        Op::Unlink { path } => {
            let c = cpath(&at(path));
            // SAFETY: a valid NUL-terminated path.
            check(unsafe { libc::unlink(c.as_ptr()) }).map(|_| Value::Unit)
        }
        Op::Mkdir { path, mode } => {
            let c = cpath(&at(path));
            // SAFETY: a valid NUL-terminated path.
            check(unsafe { libc::mkdir(c.as_ptr(), *mode) }).map(|_| Value::Unit)
        }
        Op::Rmdir { path } => {
            let c = cpath(&at(path));
            // SAFETY: a valid NUL-terminated path.
            check(unsafe { libc::rmdir(c.as_ptr()) }).map(|_| Value::Unit)
        }
        Op::Link { from, to } => {
            let (a, b) = (cpath(&at(from)), cpath(&at(to)));
            // SAFETY: valid NUL-terminated paths.
            check(unsafe { libc::link(a.as_ptr(), b.as_ptr()) }).map(|_| Value::Unit)
        }
        Op::Symlink { target, path } => {
            let t = CString::new(target.as_bytes()).expect("no NUL");
            let c = cpath(&at(path));
            // SAFETY: valid NUL-terminated strings.
            check(unsafe { libc::symlink(t.as_ptr(), c.as_ptr()) }).map(|_| Value::Unit)
        }
        Op::Chmod { path, mode } => {
            let c = cpath(&at(path));
            // SAFETY: a valid NUL-terminated path.
            check(unsafe { libc::chmod(c.as_ptr(), *mode) }).map(|_| Value::Unit)
        }
        Op::Readdir { path } => match std::fs::read_dir(at(path)) {
            Ok(entries) => {
                let mut names = Vec::new();
                let mut failed = None;
                for entry in entries {
                    match entry.and_then(|e| Ok((e.file_name(), e.file_type()?))) {
                        Ok((name, ft)) => {
                            use std::os::unix::fs::FileTypeExt as _;
                            let kind = if ft.is_dir() {
                                "dir"
                            } else if ft.is_symlink() {
                                "symlink"
                            } else if ft.is_fifo() {
                                "fifo"
                            } else {
                                "file"
                            };
                            names.push((name.to_string_lossy().into_owned(), kind));
                        }
                        Err(e) => failed = Some(e.raw_os_error().unwrap_or(libc::EIO)),
                    }
                }
                names.sort();
                match failed {
                    Some(e) => Err(e),
                    None => Ok(Value::Names(names)),
                }
            }
            Err(e) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
        },
        Op::Stat { path } => {
            let c = cpath(&at(path));
            // SAFETY: zeroed stat is a valid out-buffer for lstat.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: a valid path and out-buffer.
            check(unsafe { libc::lstat(c.as_ptr(), &mut st) }).map(|_| {
                let kind = kind_of(st.st_mode);
                let size = (kind != "dir").then_some(st.st_size as u64);
                Value::Stat(kind, st.st_mode & 0o7777, size, st.st_nlink)
            })
        }
        Op::Readlink { path } => std::fs::read_link(at(path))
            .map(|t| Value::Target(t.as_os_str().as_bytes().to_vec()))
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)),
    };
    Outcome(result)
}

fn seeds() -> Vec<u64> {
    match std::env::var("MOSAIC_DIFF_SEED") {
        Ok(text) => vec![
            text.trim()
                .parse()
                .unwrap_or_else(|_| panic!("MOSAIC_DIFF_SEED={text:?} is not a u64")),
        ],
        Err(_) => FIXED_SEEDS
            .into_iter()
            .chain([rand::random::<u64>()])
            .collect(),
    }
}

fn ops_count() -> usize {
    std::env::var("MOSAIC_DIFF_OPS")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(DEFAULT_OPS)
}

fn compare_trees(mounted: &Path, local: &Path, seed: u64, step: usize, history: &[String]) {
    let diffs = differences(&snapshot(mounted), &snapshot(local), Compare::NO_TIMES);
    if !diffs.is_empty() {
        panic!(
            "seed {seed} (rerun with MOSAIC_DIFF_SEED={seed}): after op {step} the trees differ \
             (first = mount, second = local):\n{}\nlast ops:\n{}",
            diffs
                .iter()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            tail(history)
        );
    }
}

fn tail(history: &[String]) -> String {
    let from = history.len().saturating_sub(30);
    history[from..].join("\n")
}

/// Applies `count` random ops from `seed` to both trees, comparing as it goes; returns the
/// number of ops that failed (identically) on both.
fn run_differential(mounted: &Path, local: &Path, seed: u64, count: usize) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut history = Vec::with_capacity(count);
    let mut errors = 0;
    for step in 0..count {
        // The local tree is the oracle's state; listing it costs a few readdirs.
        let op = random_op(&mut rng, &list_paths(local));
        let got = apply(mounted, &op);
        let want = apply(local, &op);
        history.push(format!("{step}: {op:?} -> {want:?}"));
        if got != want {
            panic!(
                "seed {seed} (rerun with MOSAIC_DIFF_SEED={seed}): op {step} {op:?}\n  mount: {got:?}\n  local: {want:?}\nlast ops:\n{}",
                tail(&history)
            );
        }
        if want.0.is_err() {
            errors += 1;
        }
        if (step + 1) % CHECKPOINT_EVERY == 0 {
            compare_trees(mounted, local, seed, step, &history);
        }
    }
    compare_trees(mounted, local, seed, count, &history);
    // The mix must exercise both outcomes, or the test proves little.
    assert!(
        errors > count / 20 && errors < count * 9 / 10,
        "seed {seed}: {errors} of {count} ops failed; the op mix is off"
    );
    errors
}

/// The generator and the comparison are deterministic: two local directories never differ.
/// Runs without FUSE, so the op mix is checked on every machine.
#[test]
fn two_local_directories_agree() {
    let dir = tempfile::tempdir().expect("temp dir");
    for seed in FIXED_SEEDS {
        let (a, b) = (
            dir.path().join(format!("a{seed}")),
            dir.path().join(format!("b{seed}")),
        );
        std::fs::create_dir(&a).expect("mkdir");
        std::fs::create_dir(&b).expect("mkdir");
        let errors = run_differential(&a, &b, seed, DEFAULT_OPS);
        eprintln!("seed {seed}: {errors} of {DEFAULT_OPS} ops failed on both");
        assert!(
            !snapshot(&a).is_empty(),
            "seed {seed} left nothing to compare"
        );
    }
}

#[test]
fn random_operations_match_a_local_directory() {
    let Some(mc) = MountedCluster::start(
        "random_operations_match_a_local_directory",
        ClusterOptions::default(),
    ) else {
        return;
    };
    let count = ops_count();
    let local_dir = tempfile::tempdir().expect("temp dir");
    for seed in seeds() {
        eprintln!(
            "differential test: seed {seed}, {count} ops (rerun with MOSAIC_DIFF_SEED={seed})"
        );
        // A fresh pair of directories per seed, so each seed replays alone.
        let mounted: PathBuf = mc.path().join(format!("diff-{seed}"));
        let local: PathBuf = local_dir.path().join(format!("diff-{seed}"));
        std::fs::create_dir(&mounted).expect("mkdir on the mount");
        std::fs::create_dir(&local).expect("mkdir locally");
        let errors = run_differential(&mounted, &local, seed, count);
        let entries = snapshot(&local).len();
        eprintln!(
            "differential test: seed {seed}: {errors} ops failed identically on both; {entries} entries at the end"
        );
    }
}

//! A model-based random test (proptest): long sequences of operations, with several file
//! descriptors open at once, are applied step by step to a directory on a real MosaicFS
//! mount and to a local directory (the kernel on ext4 is the model). Each step's result —
//! errno, bytes written, data read, `fstat`/`lstat` fields, directory listings — must be the
//! same on both; every [`CHECKPOINT_EVERY`] steps and at the end (after closing every
//! descriptor) the whole trees must match: names, kinds, sizes, contents, link counts and
//! modes.
//!
//! Unlike `differential.rs` (one open/act/close per operation), descriptors here live across
//! other operations: a file is written through one descriptor while it is renamed over
//! another file, hard-linked, unlinked, truncated by path or through a second descriptor,
//! and read back through a third. Operations name descriptors by slot (0..[`SLOTS`]); an
//! operation on an empty slot is a no-op on both sides, so a sequence stays meaningful while
//! proptest shrinks it. A failure shrinks to a short sequence on the real mount and prints it.
//!
//! Environment: `MOSAIC_MODEL_SEED=<u64>` runs one seed instead of the fixed list;
//! `MOSAIC_MODEL_CASES` sequences per seed (default [`DEFAULT_CASES`]); `MOSAIC_MODEL_OPS`
//! the longest sequence (default [`DEFAULT_OPS`]); `MOSAIC_MODEL_SHRINK_ITERS` bounds the
//! shrinking (default [`DEFAULT_SHRINK_ITERS`]).

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};

use mosaic_tests::sys::{check, cpath, kind_of, pread_all, pwrite_all, write_all};
use mosaic_tests::tree::{Compare, differences, pattern_bytes, snapshot};
use mosaic_tests::{ClusterOptions, MountedCluster, TEST_CHUNK_SIZE};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// Descriptors that can be open at once in one sequence.
const SLOTS: usize = 3;
/// The path universe: small, so that operations collide (renames over existing targets,
/// links to open files, rmdir of non-empty directories) as often as they succeed.
const PATHS: [&str; 10] = ["a", "b", "c", "x", "y", "x/a", "x/b", "x/y", "x/y/a", "y/a"];
/// Seeds CI runs; each gives [`DEFAULT_CASES`] sequences.
const FIXED_SEEDS: [u64; 3] = [11, 12, 13];
const DEFAULT_CASES: u32 = 8;
const DEFAULT_OPS: usize = 300;
/// Each shrink step replays a sequence on the mount; a few hundred is minutes, not hours.
const DEFAULT_SHRINK_ITERS: u32 = 300;
const CHECKPOINT_EVERY: usize = 40;

#[derive(Clone, Debug)]
enum Access {
    Read,
    Write,
    ReadWrite,
}

#[derive(Clone, Debug)]
enum Op {
    Open {
        slot: usize,
        path: &'static str,
        access: Access,
        create: bool,
        excl: bool,
        trunc: bool,
        append: bool,
        mode: u32,
    },
    Close {
        slot: usize,
    },
    Pwrite {
        slot: usize,
        offset: u64,
        len: usize,
        seed: u64,
    },
    /// At the descriptor's offset (the end with O_APPEND).
    Write {
        slot: usize,
        len: usize,
        seed: u64,
    },
    Pread {
        slot: usize,
        offset: u64,
        len: usize,
    },
    Ftruncate {
        slot: usize,
        size: u64,
    },
    Fstat {
        slot: usize,
    },
    Fsync {
        slot: usize,
    },
    Truncate {
        path: &'static str,
        size: u64,
    },
    Link {
        from: &'static str,
        to: &'static str,
    },
    Rename {
        from: &'static str,
        to: &'static str,
    },
    Unlink {
        path: &'static str,
    },
    Mkdir {
        path: &'static str,
        mode: u32,
    },
    Rmdir {
        path: &'static str,
    },
    Stat {
        path: &'static str,
    },
    Readdir {
        path: &'static str,
    },
}

/// What one step returned.
#[derive(PartialEq, Eq)]
enum Value {
    Unit,
    /// The slot was empty: nothing was called.
    NoFd,
    /// Bytes written.
    Count(usize),
    Data(Vec<u8>),
    /// kind, permission bits, size (not for directories), link count.
    Stat(&'static str, u32, Option<u64>, u64),
    Names(Vec<String>),
    /// An open that first closed the slot's previous descriptor: that close's result too.
    Reopened(Result<(), i32>),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Unit => write!(f, "ok"),
            Value::NoFd => write!(f, "(empty slot)"),
            Value::Count(n) => write!(f, "{n} bytes"),
            Value::Data(d) => write!(
                f,
                "read {} bytes, blake3 {}",
                d.len(),
                &blake3::hash(d).to_hex()[..16]
            ),
            Value::Stat(kind, perm, size, nlink) => {
                write!(f, "{kind} {perm:o} size {size:?} nlink {nlink}")
            }
            Value::Names(n) => write!(f, "{n:?}"),
            Value::Reopened(closed) => write!(f, "ok (closed the previous fd: {closed:?})"),
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

fn path() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&PATHS[..])
}

/// Mostly names in the root, which always exists: opens and links then mostly succeed.
fn file_path() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        3 => proptest::sample::select(&PATHS[..3]),
        1 => path(),
    ]
}

/// Mostly the directory names of the universe.
fn dir_path() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        3 => proptest::sample::select(&["x", "y", "x/y"][..]),
        1 => path(),
    ]
}

/// Offsets near 0 mostly, and around the chunk boundaries of the test cluster.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0..20_000u64,
        1 => (1..=2u64, 0..40_000u64).prop_map(|(c, d)| c * TEST_CHUNK_SIZE - 20_000 + d),
    ]
}

fn len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 1..5_000usize,
        1 => 5_000..150_000usize,
    ]
}

fn slot() -> impl Strategy<Value = usize> {
    0..SLOTS
}

fn op() -> impl Strategy<Value = Op> {
    let access = prop_oneof![
        1 => Just(Access::Read),
        1 => Just(Access::Write),
        3 => Just(Access::ReadWrite),
    ];
    let open = (
        slot(),
        file_path(),
        access,
        proptest::bool::weighted(0.85),
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.15),
        proptest::bool::weighted(0.2),
        0o600..0o1000u32,
    )
        .prop_map(
            |(slot, path, access, create, excl, trunc, append, mode)| Op::Open {
                slot,
                path,
                access,
                create,
                excl,
                trunc,
                append,
                mode,
            },
        );
    prop_oneof![
        14 => open,
        2 => slot().prop_map(|slot| Op::Close { slot }),
        8 => (slot(), offset(), len(), any::<u64>())
            .prop_map(|(slot, offset, len, seed)| Op::Pwrite { slot, offset, len, seed }),
        4 => (slot(), len(), any::<u64>()).prop_map(|(slot, len, seed)| Op::Write { slot, len, seed }),
        6 => (slot(), offset(), len()).prop_map(|(slot, offset, len)| Op::Pread { slot, offset, len }),
        3 => (slot(), offset()).prop_map(|(slot, size)| Op::Ftruncate { slot, size }),
        3 => slot().prop_map(|slot| Op::Fstat { slot }),
        1 => slot().prop_map(|slot| Op::Fsync { slot }),
        2 => (file_path(), offset()).prop_map(|(path, size)| Op::Truncate { path, size }),
        3 => (file_path(), path()).prop_map(|(from, to)| Op::Link { from, to }),
        5 => (path(), path()).prop_map(|(from, to)| Op::Rename { from, to }),
        3 => path().prop_map(|path| Op::Unlink { path }),
        4 => (dir_path(), 0o700..0o1000u32).prop_map(|(path, mode)| Op::Mkdir { path, mode }),
        2 => dir_path().prop_map(|path| Op::Rmdir { path }),
        3 => path().prop_map(|path| Op::Stat { path }),
        2 => dir_path().prop_map(|path| Op::Readdir { path }),
    ]
}

/// One tree under test and its open descriptors; closes them when dropped, so a failed
/// sequence (or a shrink step) leaves nothing open on the mount.
struct Tree {
    root: PathBuf,
    fds: [Option<i32>; SLOTS],
}

impl Drop for Tree {
    fn drop(&mut self) {
        // A failing close here has no one to report to: the sequence already ended.
        let _ = self.close_all();
    }
}

fn stat_value(st: &libc::stat) -> Value {
    let kind = kind_of(st.st_mode);
    // ext4's block-sized directory sizes are not a POSIX promise.
    let size = (kind != "dir").then_some(st.st_size as u64);
    Value::Stat(kind, st.st_mode & 0o7777, size, st.st_nlink)
}

impl Tree {
    fn new(root: PathBuf) -> Tree {
        std::fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        Tree {
            root,
            fds: [None; SLOTS],
        }
    }

    fn close_slot(&mut self, slot: usize) -> Option<Result<(), i32>> {
        let fd = self.fds[slot].take()?;
        // SAFETY: a descriptor this tree opened and has not closed yet.
        Some(check(unsafe { libc::close(fd) }).map(|_| ()))
    }

    /// Closes every descriptor; the first failing close, if any.
    fn close_all(&mut self) -> Result<(), i32> {
        let mut first = Ok(());
        for slot in 0..SLOTS {
            if let Some(Err(e)) = self.close_slot(slot) {
                first = first.and(Err(e));
            }
        }
        first
    }

    fn with_fd(&self, slot: usize, f: impl FnOnce(i32) -> Result<Value, i32>) -> Outcome {
        Outcome(match self.fds[slot] {
            Some(fd) => f(fd),
            None => Ok(Value::NoFd),
        })
    }

    fn apply(&mut self, op: &Op) -> Outcome {
        let root = self.root.clone();
        let at = |p: &str| cpath(&root.join(p));
        let unit = |rc: libc::c_int| Outcome(check(rc).map(|_| Value::Unit));
        match op {
            Op::Open {
                slot,
                path,
                access,
                create,
                excl,
                trunc,
                append,
                mode,
            } => {
                let closed = self.close_slot(*slot);
                let mut flags = match access {
                    Access::Read => libc::O_RDONLY,
                    Access::Write => libc::O_WRONLY,
                    Access::ReadWrite => libc::O_RDWR,
                } | libc::O_CLOEXEC;
                for (on, flag) in [
                    (*create, libc::O_CREAT),
                    (*excl, libc::O_EXCL),
                    (*trunc, libc::O_TRUNC),
                    (*append, libc::O_APPEND),
                ] {
                    if on {
                        flags |= flag;
                    }
                }
                let c = at(path);
                // SAFETY: a valid NUL-terminated path; the descriptor is kept in the slot
                // and closed by close_slot.
                let opened = check(unsafe { libc::open(c.as_ptr(), flags, *mode) });
                Outcome(opened.map(|fd| {
                    self.fds[*slot] = Some(fd);
                    match closed {
                        Some(result) => Value::Reopened(result),
                        None => Value::Unit,
                    }
                }))
            }
            Op::Close { slot } => Outcome(match self.close_slot(*slot) {
                Some(result) => result.map(|()| Value::Unit),
                None => Ok(Value::NoFd),
            }),
            Op::Pwrite {
                slot,
                offset,
                len,
                seed,
            } => self.with_fd(*slot, |fd| {
                pwrite_all(fd, &pattern_bytes(*seed, *len), *offset).map(Value::Count)
            }),
            Op::Write { slot, len, seed } => self.with_fd(*slot, |fd| {
                write_all(fd, &pattern_bytes(*seed, *len)).map(Value::Count)
            }),
            Op::Pread { slot, offset, len } => {
                self.with_fd(*slot, |fd| pread_all(fd, *len, *offset).map(Value::Data))
            }
            Op::Ftruncate { slot, size } => self.with_fd(*slot, |fd| {
                // SAFETY: plain syscall on a descriptor we own.
                check(unsafe { libc::ftruncate(fd, *size as i64) }).map(|_| Value::Unit)
            }),
            Op::Fstat { slot } => self.with_fd(*slot, |fd| {
                // SAFETY: zeroed stat is a valid out-buffer for fstat.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: a descriptor we own and a valid out-buffer.
                check(unsafe { libc::fstat(fd, &mut st) }).map(|_| stat_value(&st))
            }),
            Op::Fsync { slot } => self.with_fd(*slot, |fd| {
                // SAFETY: plain syscall on a descriptor we own.
                check(unsafe { libc::fsync(fd) }).map(|_| Value::Unit)
            }),
            Op::Truncate { path, size } => {
                // SAFETY: a valid NUL-terminated path.
                unit(unsafe { libc::truncate(at(path).as_ptr(), *size as i64) })
            }
            Op::Link { from, to } => {
                // SAFETY: valid NUL-terminated paths.
                unit(unsafe { libc::link(at(from).as_ptr(), at(to).as_ptr()) })
            }
            Op::Rename { from, to } => {
                // SAFETY: valid NUL-terminated paths.
                unit(unsafe { libc::rename(at(from).as_ptr(), at(to).as_ptr()) })
            }
            Op::Unlink { path } => {
                // SAFETY: a valid NUL-terminated path.
                unit(unsafe { libc::unlink(at(path).as_ptr()) })
            }
            Op::Mkdir { path, mode } => {
                // SAFETY: a valid NUL-terminated path.
                unit(unsafe { libc::mkdir(at(path).as_ptr(), *mode) })
            }
            Op::Rmdir { path } => {
                // SAFETY: a valid NUL-terminated path.
                unit(unsafe { libc::rmdir(at(path).as_ptr()) })
            }
            Op::Stat { path } => {
                // SAFETY: zeroed stat is a valid out-buffer for lstat.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: a valid path and out-buffer.
                let rc = unsafe { libc::lstat(at(path).as_ptr(), &mut st) };
                Outcome(check(rc).map(|_| stat_value(&st)))
            }
            Op::Readdir { path } => Outcome(
                std::fs::read_dir(self.root.join(path))
                    .and_then(|entries| {
                        let mut names = entries
                            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                            .collect::<std::io::Result<Vec<_>>>()?;
                        names.sort();
                        Ok(Value::Names(names))
                    })
                    .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)),
            ),
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} does not parse")),
        Err(_) => default,
    }
}

fn compare_trees(a: &Path, b: &Path) -> Result<(), String> {
    let diffs = differences(&snapshot(a), &snapshot(b), Compare::NO_TIMES);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the trees differ (first = under test, second = local):\n{}",
            diffs
                .iter()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        ))
    }
}

/// Counts of what a sequence did, to check that the op mix exercises both outcomes.
#[derive(Default, Debug)]
struct Tally {
    ops: usize,
    failed: usize,
    /// Steps on an empty slot: nothing was called.
    idle: usize,
}

/// Runs `ops` on a fresh directory under each of `under_test` and `model`; the first
/// difference is an error naming the step.
fn run_sequence(under_test: &Path, model: &Path, ops: &[Op]) -> Result<Tally, String> {
    let mut a = Tree::new(under_test.to_path_buf());
    let mut b = Tree::new(model.to_path_buf());
    let mut tally = Tally::default();
    let mut history = Vec::new();
    let context = |history: &[String]| {
        let from = history.len().saturating_sub(25);
        history[from..].join("\n")
    };
    for (step, op) in ops.iter().enumerate() {
        let got = a.apply(op);
        let want = b.apply(op);
        history.push(format!("{step}: {op:?} -> {want:?}"));
        if got != want {
            return Err(format!(
                "step {step}: {op:?}\n  under test: {got:?}\n  local:      {want:?}\nlast steps:\n{}",
                context(&history)
            ));
        }
        tally.ops += 1;
        match want.0 {
            Err(_) => tally.failed += 1,
            Ok(Value::NoFd) => tally.idle += 1,
            Ok(_) => {}
        }
        if (step + 1) % CHECKPOINT_EVERY == 0 {
            compare_trees(&a.root, &b.root).map_err(|d| {
                format!("after step {step}: {d}\nlast steps:\n{}", context(&history))
            })?;
        }
    }
    let (closed_a, closed_b) = (a.close_all(), b.close_all());
    if closed_a != closed_b {
        return Err(format!(
            "closing every descriptor at the end: under test {closed_a:?}, local {closed_b:?}"
        ));
    }
    compare_trees(&a.root, &b.root)
        .map_err(|d| format!("at the end: {d}\nlast steps:\n{}", context(&history)))?;
    Ok(tally)
}

/// Runs the proptest runner for each seed; every case gets fresh directories under
/// `under_test` and `model`. Returns the tallies of the cases that ran to the end.
fn run_model(under_test: &Path, model: &Path, cases: u32) -> Vec<Tally> {
    let seeds: Vec<u64> = match std::env::var("MOSAIC_MODEL_SEED") {
        Ok(_) => vec![env_or("MOSAIC_MODEL_SEED", 0)],
        Err(_) => FIXED_SEEDS.to_vec(),
    };
    let max_ops = env_or("MOSAIC_MODEL_OPS", DEFAULT_OPS);
    let mut tallies = Vec::new();
    for seed in seeds {
        let config = Config {
            cases,
            max_shrink_iters: env_or("MOSAIC_MODEL_SHRINK_ITERS", DEFAULT_SHRINK_ITERS),
            // The seed list is the persistence: no regression files in the source tree.
            failure_persistence: None,
            ..Config::default()
        };
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let mut runner = TestRunner::new_with_rng(
            config,
            TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
        );
        let run = Cell::new(0usize);
        let done = std::cell::RefCell::new(Vec::new());
        let strategy = proptest::collection::vec(op(), max_ops / 2..=max_ops);
        let result = runner.run(&strategy, |ops| {
            let n = run.get();
            run.set(n + 1);
            let name = format!("seed{seed}-run{n}");
            match run_sequence(&under_test.join(&name), &model.join(&name), &ops) {
                Ok(tally) => {
                    done.borrow_mut().push(tally);
                    Ok(())
                }
                Err(e) => Err(TestCaseError::fail(e)),
            }
        });
        if let Err(e) = result {
            panic!(
                "seed {seed} (rerun alone with MOSAIC_MODEL_SEED={seed}): after {} runs \
                 (shrinking included) the minimal failing sequence is:\n{e}",
                run.get()
            );
        }
        eprintln!("model test: seed {seed}: {} sequences passed", run.get());
        tallies.extend(done.into_inner());
    }
    tallies
}

fn assert_mix(tallies: &[Tally]) {
    let ops: usize = tallies.iter().map(|t| t.ops).sum();
    let failed: usize = tallies.iter().map(|t| t.failed).sum();
    let idle: usize = tallies.iter().map(|t| t.idle).sum();
    eprintln!(
        "model test: {ops} steps, {failed} failed identically on both sides, {idle} on an empty slot"
    );
    assert!(
        ops > 0 && failed > ops / 20 && failed < ops * 3 / 4 && idle < ops / 4,
        "{failed} failed and {idle} idle of {ops} steps: the op mix is off"
    );
}

/// The generator and the comparison are deterministic: two local directories never differ.
/// Runs without FUSE, so the op mix is checked on every machine.
#[test]
fn model_two_local_directories_agree() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).expect("mkdir");
    std::fs::create_dir(&b).expect("mkdir");
    assert_mix(&run_model(&a, &b, DEFAULT_CASES));
}

#[test]
fn model_sequences_with_open_descriptors_match_a_local_directory() {
    let Some(mc) = MountedCluster::start(
        "model_sequences_with_open_descriptors_match_a_local_directory",
        ClusterOptions::default(),
    ) else {
        return;
    };
    let local = tempfile::tempdir().expect("temp dir");
    let mounted = mc.path().join("model");
    std::fs::create_dir(&mounted).expect("mkdir on the mount");
    let started = std::time::Instant::now();
    let tallies = run_model(
        &mounted,
        local.path(),
        env_or("MOSAIC_MODEL_CASES", DEFAULT_CASES),
    );
    eprintln!("model test on the mount took {:?}", started.elapsed());
    assert_mix(&tallies);
}

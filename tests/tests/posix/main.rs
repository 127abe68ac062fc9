//! Our own POSIX conformance suite, organized by system call (see `ns.rs`, `io.rs`,
//! `locks.rs`). Every case runs twice: in a directory of a real MosaicFS mount and in a local
//! temp directory on the host's filesystem (ext4 in CI). The kernel's behaviour on the local
//! directory is the expected one; the transcripts — return values, errno names, normalized
//! stat fields, which timestamps changed — must match line by line.
//!
//! The mount is `allow_other` and `default_permissions` (as `scripts/cluster.sh` mounts), so
//! cases can fork a child that drops to an unprivileged uid to test EACCES/EPERM, sticky and
//! setgid directories and setuid clearing.
//!
//! Run one group or case with `MOSAIC_POSIX_CASE=rename` (a substring of "group/name").
//! Deliberate differences from a local filesystem are listed in docs/SEMANTICS.md; no case
//! here relies on one.

mod harness;
mod io;
mod locks;
mod ns;

use std::path::Path;

use mosaic_tests::{ClusterOptions, MountOptions, TestCluster, require_fuse};

/// A case: (system call group, name, body).
pub type Case = (&'static str, &'static str, fn(&mut harness::T));

fn all_cases() -> Vec<Case> {
    [ns::CASES, io::CASES, locks::CASES].concat()
}

/// Runs `case` in a fresh subdirectory of `root` and returns its transcript.
fn transcript(root: &Path, case: &Case) -> Vec<String> {
    let dir = root.join(format!("{}-{}", case.0, case.1));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    // Children with other uids must be able to work inside the case directory.
    let p = harness::c(dir.to_str().expect("utf-8 path"));
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::chmod(p.as_ptr(), 0o777) }, 0);
    let mut t = harness::T::new(&dir);
    (case.2)(&mut t);
    t.log
}

#[test]
fn posix_conformance_against_local_fs() {
    conformance("posix_conformance_against_local_fs", &[]);
}

/// The same cases through a mount with `--direct-io` (FOPEN_DIRECT_IO: no kernel page
/// cache for file data; shared mmap through FUSE_DIRECT_IO_ALLOW_MMAP).
#[test]
fn posix_conformance_with_direct_io() {
    conformance("posix_conformance_with_direct_io", &["--direct-io"]);
}

fn conformance(name: &str, extra: &[&str]) {
    let Some(_fuse) = require_fuse(name) else {
        return;
    };
    // The same umask for both runs, whatever the test runner was started with.
    // SAFETY: umask has no failure mode.
    unsafe { libc::umask(0o022) };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let mut extra_args = vec!["--allow-other".to_string()];
    extra_args.extend(extra.iter().map(|a| a.to_string()));
    let mount = cluster.mount(MountOptions {
        extra_args,
        ..MountOptions::default()
    });
    let local = tempfile::tempdir().expect("local temp dir");
    let filter = std::env::var("MOSAIC_POSIX_CASE").unwrap_or_default();

    let mut failures = Vec::new();
    let mut ran = 0;
    for case in all_cases() {
        let id = format!("{}/{}", case.0, case.1);
        if !id.contains(&filter) {
            continue;
        }
        ran += 1;
        let expected = transcript(local.path(), &case);
        let got = transcript(mount.path(), &case);
        if expected != got {
            let mut diff = String::new();
            for i in 0..expected.len().max(got.len()) {
                let (e, g) = (expected.get(i), got.get(i));
                if e != g {
                    diff.push_str(&format!(
                        "    local: {}\n    mount: {}\n",
                        e.map_or("(none)", String::as_str),
                        g.map_or("(none)", String::as_str)
                    ));
                }
            }
            failures.push(format!("{id}:\n{diff}"));
        }
    }
    assert!(ran > 0, "no case matches MOSAIC_POSIX_CASE={filter:?}");
    eprintln!(
        "{ran} cases run, {} differ from the local filesystem",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {ran} cases differ from the local filesystem:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

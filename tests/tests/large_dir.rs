//! Large directories: every entry of a directory with tens of thousands of entries is
//! listed exactly once, and the listing's time grows linearly (the master serves readdir in
//! pages of `READDIR_PAGE_MAX` entries resumed by cookie through an index, the client never
//! holds more than one page). CI runs 20,000 entries; the 100,000-entry case is `#[ignore]`d
//! for its creation time: `cargo test --release --test large_dir -- --ignored`.
//!
//! Measured on the 2-core development machine under load from other helpers' builds and tests
//! (release build, default test cluster), also in docs/SEMANTICS.md: 20,000 entries created
//! in 23-53 s, listed in 35-87 ms; 100,000 entries created in 229 s (2.3 ms per mknod, as
//! for 20,000: creation is linear too), listed in 216 ms, and in 604 ms again after the
//! attribute cache time.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use mosaic_tests::sys::{check, cpath};
use mosaic_tests::{ClusterOptions, MountedCluster};

/// Creates `count` empty files named `f<i>` in `dir` with mknod (one request each).
fn create_entries(dir: &Path, count: usize) {
    for i in 0..count {
        let p = cpath(&dir.join(format!("f{i}")));
        // SAFETY: a valid NUL-terminated path.
        check(unsafe { libc::mknod(p.as_ptr(), libc::S_IFREG | 0o644, 0) })
            .unwrap_or_else(|e| panic!("mknod f{i}: errno {e}"));
    }
}

/// Lists `dir` and checks that it holds exactly `f0..f{count}`, each once.
fn check_listing(dir: &Path, count: usize) {
    let mut seen = HashSet::with_capacity(count);
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let name = entry.expect("readdir entry").file_name();
        let name = name.to_string_lossy().into_owned();
        assert!(seen.insert(name.clone()), "{name} listed twice");
    }
    assert_eq!(seen.len(), count, "entries listed");
    for i in 0..count {
        assert!(
            seen.contains(&format!("f{i}")),
            "f{i} missing from the listing"
        );
    }
}

/// Creates `count` entries and lists them twice (the second listing after the kernel's
/// attribute cache time, so it goes to the master again); returns (create, first list,
/// second list) durations.
fn run(
    test: &str,
    count: usize,
    list_deadline: Duration,
) -> Option<(Duration, Duration, Duration)> {
    let mc = MountedCluster::start(test, ClusterOptions::default())?;
    let dir = mc.path().join("big");
    std::fs::create_dir(&dir).expect("mkdir");
    let started = Instant::now();
    create_entries(&dir, count);
    let created = started.elapsed();
    let started = Instant::now();
    check_listing(&dir, count);
    let first = started.elapsed();
    std::thread::sleep(Duration::from_millis(1100));
    let started = Instant::now();
    check_listing(&dir, count);
    let second = started.elapsed();
    eprintln!("{count} entries: created in {created:?}, listed in {first:?}, again in {second:?}");
    assert!(
        first < list_deadline && second < list_deadline,
        "listing {count} entries took {first:?} / {second:?} (deadline {list_deadline:?})"
    );
    Some((created, first, second))
}

/// 20,000 entries. Measured: created in 23-53 s, listed in 35-87 ms.
#[test]
fn twenty_thousand_entries_list_exactly_once() {
    // Generous: the listing takes under 0.1 s; a loaded CI machine may be many times slower,
    // but a quadratic listing (20,000 x 20,000 row reads) would be far slower still.
    run(
        "twenty_thousand_entries_list_exactly_once",
        20_000,
        Duration::from_secs(60),
    );
}

/// 100,000 entries. Measured: created in 229 s, listed in 216 ms (604 ms the second time).
#[test]
#[ignore = "creating 100,000 entries takes minutes; CI runs the 20,000-entry case"]
fn hundred_thousand_entries_list_exactly_once() {
    run(
        "hundred_thousand_entries_list_exactly_once",
        100_000,
        Duration::from_secs(300),
    );
}

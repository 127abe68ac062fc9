//! Chunkservers hold only ciphertext, and only the right key mounts.
//!
//! A known plaintext pattern written through the mount must never appear — not whole, not
//! its first 16 bytes (one AES block) — in any file under any chunkserver's data dir or the
//! master's state dir. A wrong, malformed or missing key file must fail the mount with a
//! non-zero exit and a message about the key, and leave no mount behind.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use common::block::{DataKey, KeyRing};
use mosaic_tests::cluster::files_under;
use mosaic_tests::mount::mount_at;
use mosaic_tests::{ClusterOptions, MountOptions, TestCluster, require_fuse};

const PATTERN: &[u8] = b"MOSAICFS-KNOWN-PLAINTEXT-";
const MIB: usize = 1024 * 1024;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn plaintext(len: usize) -> Vec<u8> {
    PATTERN.iter().copied().cycle().take(len).collect()
}

/// Files under `dir` that contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|f| std::fs::read(f).is_ok_and(|bytes| contains(&bytes, needle)))
        .collect()
}

#[test]
fn the_contains_helper_finds_what_it_should() {
    // The scan below passes when it finds nothing; make sure it can find something.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut data = vec![0u8; 100_000];
    data.extend_from_slice(&plaintext(100));
    std::fs::write(dir.path().join("leak"), &data).expect("write");
    assert_eq!(files_containing(dir.path(), &PATTERN[..16]).len(), 1);
    assert!(!contains(b"MOSAICFS-KNOWN", &PATTERN[..16]));
}

#[test]
fn chunkserver_disks_hold_only_ciphertext() {
    let Some(_fuse) = require_fuse("chunkserver_disks_hold_only_ciphertext") else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let mount = cluster.mount(MountOptions::default());
    let big = plaintext(4 * MIB + 100);
    let small = plaintext(300);
    for (name, data) in [("big", &big), ("small", &small)] {
        let mut file = std::fs::File::create(mount.path().join(name)).expect("create");
        file.write_all(data).expect("write");
        // fsync: the data is on the chunkservers' disks when this returns.
        file.sync_all().expect("fsync");
    }
    assert!(std::fs::read(mount.path().join("big")).expect("read back") == big);
    assert_eq!(
        std::fs::read(mount.path().join("small")).expect("read back"),
        small
    );

    cluster.wait_fully_replicated(std::time::Duration::from_secs(60));
    let mut dirs: Vec<PathBuf> = (0..cluster.chunkserver_count())
        .map(|i| cluster.chunkserver_data_dir(i).to_path_buf())
        .collect();
    dirs.push(cluster.state_dir().to_path_buf());
    for i in 0..cluster.chunkserver_count() {
        // Otherwise an empty data dir would pass the scan: every node holds a replica
        // (N = 3 on 3 nodes) of at least the 4 MiB just written.
        let stored: u64 = cluster
            .data_files(i)
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        assert!(
            stored >= big.len() as u64,
            "chunkserver {i} stores only {stored} bytes; files: {:?}",
            cluster.data_files(i)
        );
        assert!(
            !cluster.chunk_files(i).is_empty(),
            "chunkserver {i} has no chunk files"
        );
    }
    for dir in &dirs {
        for needle in [PATTERN, &PATTERN[..16]] {
            let found: Vec<PathBuf> = files_containing(dir, needle)
                .into_iter()
                // The key file is secret but holds no file data; meta.db may hold names.
                .filter(|f| f.file_name().is_none_or(|n| n != "data.key"))
                .collect();
            assert!(
                found.is_empty(),
                "plaintext {:?} found on disk in {found:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }
    mount.unmount();
}

#[test]
fn a_wrong_or_bad_key_file_is_refused_at_mount() {
    let Some(_fuse) = require_fuse("a_wrong_or_bad_key_file_is_refused_at_mount") else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let keys = tempfile::tempdir().expect("temp dir");
    let wrong = keys.path().join("wrong.key");
    std::fs::write(&wrong, KeyRing::single(DataKey::random(0)).to_file_text()).expect("write");
    // Owner-only, so that it is refused for being the wrong key, not for its mode.
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let short = keys.path().join("short.key");
    std::fs::write(&short, "0123456789abcdef\n").expect("write");
    let missing = keys.path().join("missing.key");

    for (what, key_file) in [
        ("a wrong key", &wrong),
        ("a short key", &short),
        ("no key file", &missing),
    ] {
        let result = cluster.try_mount(MountOptions {
            key_file: Some(key_file.clone()),
            ..MountOptions::default()
        });
        let failed = match result {
            Ok(mount) => {
                let path = mount.path().to_path_buf();
                drop(mount);
                panic!("mounting with {what} succeeded at {}", path.display());
            }
            Err(failed) => failed,
        };
        assert!(
            failed.status.is_some_and(|s| !s.success()),
            "{what}: exit status {:?}",
            failed.status
        );
        assert!(
            failed.log.to_lowercase().contains("key"),
            "{what}: the error must mention the key; log:\n{}",
            failed.log
        );
    }
    // No attempt left a mount behind.
    for k in 0..3 {
        let path = cluster.root().join(format!("mnt-{k}"));
        assert!(
            mount_at(&path).is_none(),
            "{} is still mounted",
            path.display()
        );
    }
    // The right key still mounts.
    cluster.mount(MountOptions::default()).unmount();
}

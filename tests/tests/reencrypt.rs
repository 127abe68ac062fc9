//! The key-rotation pass on a real cluster: after `rotate-key` and `mosaic-mount reencrypt`,
//! no block copy on any chunkserver's disk is sealed with the old key, every file reads back
//! identical through a fresh mount with its size and mtime kept, and a second run rewrites
//! nothing.

use std::io::{Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;

use mosaic_tests::bins::{self, bin};
use mosaic_tests::shell::run;
use mosaic_tests::{ClusterOptions, MountOptions, TestCluster, require_fuse};

const MIB: usize = 1024 * 1024;
const TOOL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Deterministic bytes that differ per file and per position.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn write_at(path: &Path, writes: &[(u64, &[u8])]) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .expect("create");
    for (offset, data) in writes {
        file.seek(SeekFrom::Start(*offset)).expect("seek");
        file.write_all(data).expect("write");
    }
    file.sync_all().expect("fsync");
}

/// Key ids of every written block copy in a chunk file (docs/ARCHITECTURE.md, chunkserver
/// on-disk format: the 4 KiB header with the block count at offset 28, the block table of
/// blocks × 2 × 64 B padded to 4 KiB, then copy c of block b at `(c × blocks + b) × STRIDE`,
/// STRIDE = MAX_SEALED_BLOCK rounded up to 4 KiB in format 3 (u32 at offset 8), unrounded in
/// format 2). A never-written copy is a sparse hole (zeros); a sealed block starts with its
/// format byte 1, then the key id (u32 LE).
fn key_ids(chunk_file: &Path) -> Vec<u32> {
    let bytes = std::fs::read(chunk_file).expect("read chunk file");
    let field: [u8; 4] = bytes[28..32].try_into().expect("4 bytes");
    let blocks = u32::from_le_bytes(field) as usize;
    let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let stride = match format {
        2 => common::block::MAX_SEALED_BLOCK,
        3 => common::block::MAX_SEALED_BLOCK.next_multiple_of(4096),
        other => panic!("unknown chunk file format {other}"),
    };
    let slots = 4096 + (blocks * 2 * 64).div_ceil(4096) * 4096;
    let mut ids = Vec::new();
    for slot in 0..2 * blocks {
        let at = slots + slot * stride;
        if bytes.get(at) == Some(&1) {
            let id: [u8; 4] = bytes[at + 1..at + 5].try_into().expect("4 bytes");
            ids.push(u32::from_le_bytes(id));
        }
    }
    ids
}

fn all_key_ids(cluster: &TestCluster) -> Vec<u32> {
    (0..cluster.chunkserver_count())
        .flat_map(|i| cluster.chunk_files(i))
        .flat_map(|f| key_ids(&f))
        .collect()
}

fn reencrypt(cluster: &TestCluster, key: &Path) -> String {
    let mut cmd = Command::new(bin(bins::MOUNT));
    cmd.arg("reencrypt")
        .arg("--master")
        .arg(cluster.master_addr())
        .arg("--key-file")
        .arg(key)
        .arg("--credentials")
        .arg(cluster.credentials("client"))
        .arg("--rate")
        .arg("200000000");
    let out = run(cmd, TOOL_DEADLINE);
    assert!(
        out.status.success(),
        "reencrypt failed ({}):\n{}{}",
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
    out.stdout_text()
}

/// The number before `what` in the summary line ("N chunks (M blocks, B bytes) resealed").
fn resealed_chunks(summary: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.starts_with("summary:"))
        .unwrap_or_else(|| panic!("no summary line in:\n{summary}"));
    let before = line
        .split(" chunks (")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no resealed count in {line}"));
    before
        .parse()
        .unwrap_or_else(|e| panic!("{before:?} in {line}: {e}"))
}

#[test]
fn reencrypt_pass_leaves_no_block_under_the_old_key() {
    let Some(_fuse) = require_fuse("reencrypt_pass_leaves_no_block_under_the_old_key") else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    // 1 MiB test chunks: "big" spans three chunks, "sparse" has a hole inside a chunk and
    // a whole missing chunk, "dir/small" is one partial block.
    let big = pattern(1, 2 * MIB + 12_345);
    let mut sparse = vec![0u8; 2 * MIB + 300_000];
    let head = pattern(2, 70_000);
    let tail = pattern(3, 100_000);
    sparse[..head.len()].copy_from_slice(&head);
    sparse[2 * MIB + 200_000..].copy_from_slice(&tail);
    let small = pattern(4, 5_000);
    let mtimes = {
        let mount = cluster.mount(MountOptions::default());
        write_at(&mount.path().join("big"), &[(0, &big)]);
        write_at(
            &mount.path().join("sparse"),
            &[(0, &head), (2 * MIB as u64 + 200_000, &tail)],
        );
        std::fs::create_dir(mount.path().join("dir")).expect("mkdir");
        write_at(&mount.path().join("dir/small"), &[(0, &small)]);
        ["big", "sparse", "dir/small"].map(|n| {
            let m = std::fs::metadata(mount.path().join(n)).expect("stat");
            (m.mtime(), m.mtime_nsec())
        })
    };
    assert!(
        all_key_ids(&cluster).iter().all(|id| *id == 0),
        "before rotation every block is under key 0"
    );

    let rotated = cluster.root().join("rotated.key");
    std::fs::copy(cluster.key_file(), &rotated).expect("copy the key file");
    let mut rotate = Command::new(bin(bins::MASTER));
    rotate.arg("rotate-key").arg("--key-file").arg(&rotated);
    let out = run(rotate, TOOL_DEADLINE);
    assert!(out.status.success(), "rotate-key: {}", out.stderr_text());
    let new = pattern(5, MIB + 777);
    {
        let mount = cluster.mount(MountOptions {
            key_file: Some(rotated.clone()),
            ..MountOptions::default()
        });
        write_at(&mount.path().join("new"), &[(0, &new)]);
    }
    let before = all_key_ids(&cluster);
    assert!(before.contains(&0) && before.contains(&1), "{before:?}");

    let first = reencrypt(&cluster, &rotated);
    eprintln!("first run:\n{first}");
    // big: 3 chunks, sparse: 2 (the middle one is a hole), small: 1.
    assert_eq!(resealed_chunks(&first), 6, "{first}");
    let after = all_key_ids(&cluster);
    assert!(
        !after.is_empty() && after.iter().all(|id| *id == 1),
        "blocks still under key 0 after the pass ({} of {})",
        after.iter().filter(|id| **id == 0).count(),
        after.len()
    );

    {
        let mount = cluster.mount(MountOptions {
            key_file: Some(rotated.clone()),
            ..MountOptions::default()
        });
        for ((name, data), mtime) in [("big", &big), ("sparse", &sparse), ("dir/small", &small)]
            .into_iter()
            .zip(mtimes)
        {
            let path = mount.path().join(name);
            assert!(
                std::fs::read(&path).expect("read") == *data,
                "{name} differs"
            );
            let m = std::fs::metadata(&path).expect("stat");
            assert_eq!((m.mtime(), m.mtime_nsec()), mtime, "{name}: mtime kept");
        }
        assert!(std::fs::read(mount.path().join("new")).expect("read") == new);
    }

    let second = reencrypt(&cluster, &rotated);
    eprintln!("second run:\n{second}");
    assert_eq!(resealed_chunks(&second), 0, "{second}");
    assert!(second.contains("nothing to reseal"), "{second}");
}

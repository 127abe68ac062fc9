//! Data at rest through a real mount: key rotation keeps every file readable, and blocks
//! tampered with on every replica never reach the application (EIO, never wrong bytes).

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::Command;

use mosaic_tests::bins::{self, bin};
use mosaic_tests::shell::run;
use mosaic_tests::{ClusterOptions, MountOptions, TestCluster, require_fuse};

const MIB: usize = 1024 * 1024;
const TOOL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Deterministic bytes that differ per file and per position.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn write_synced(path: &Path, data: &[u8]) {
    let mut file = std::fs::File::create(path).expect("create");
    file.write_all(data).expect("write");
    file.sync_all().expect("fsync");
}

#[test]
fn key_rotation_keeps_every_file_readable() {
    let Some(_fuse) = require_fuse("key_rotation_keeps_every_file_readable") else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    // Crosses chunk boundaries (1 MiB test chunks).
    let old = pattern(1, 2 * MIB + 12_345);
    {
        let mount = cluster.mount(MountOptions::default());
        write_synced(&mount.path().join("old"), &old);
    }

    let rotated = cluster.root().join("rotated.key");
    std::fs::copy(cluster.key_file(), &rotated).expect("copy the key file");
    let mut rotate = Command::new(bin(bins::MASTER));
    rotate.arg("rotate-key").arg("--key-file").arg(&rotated);
    let out = run(rotate, TOOL_DEADLINE);
    assert!(
        out.status.success(),
        "rotate-key failed: {}",
        out.stderr_text()
    );
    assert!(
        out.stdout_text().contains("added data key 1"),
        "{}",
        out.stdout_text()
    );
    let text = std::fs::read_to_string(&rotated).expect("read rotated ring");
    assert_eq!(
        text.lines().filter(|l| !l.starts_with('#')).count(),
        2,
        "{text}"
    );

    let new = pattern(2, MIB + 777);
    let mut mixed = old.clone();
    {
        // The rotated ring mounts (the key check is of the first key) and reads old blocks.
        let mount = cluster.mount(MountOptions {
            key_file: Some(rotated.clone()),
            ..MountOptions::default()
        });
        assert_eq!(std::fs::read(mount.path().join("old")).expect("read"), old);
        write_synced(&mount.path().join("new"), &new);
        // Overwrite the middle of the old file: its chunk now mixes blocks of both keys.
        let patch = pattern(3, 200_000);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(mount.path().join("old"))
            .expect("open");
        file.seek(SeekFrom::Start(MIB as u64 - 100_000))
            .expect("seek");
        file.write_all(&patch).expect("write");
        file.sync_all().expect("fsync");
        mixed[MIB - 100_000..MIB + 100_000].copy_from_slice(&patch);
    }
    {
        let mount = cluster.mount(MountOptions {
            key_file: Some(rotated.clone()),
            ..MountOptions::default()
        });
        assert_eq!(
            std::fs::read(mount.path().join("old")).expect("read"),
            mixed
        );
        assert_eq!(std::fs::read(mount.path().join("new")).expect("read"), new);
    }
    {
        // A client that still has only the old key cannot read the new blocks: an error,
        // never garbage.
        let mount = cluster.mount(MountOptions::default());
        let err = std::fs::read(mount.path().join("new")).expect_err("no key 1 here");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    }
}

/// Where block 0's two sealed copies start in `bytes`, a chunk file: the 4 KiB header
/// (magic 8 B, format u32 at offset 8, chunk id u64, version u64, blocks u32 at offset 28),
/// the block table (blocks × 2 × 64 B) padded to 4 KiB, then copy c of block b at
/// `(c × blocks + b) × STRIDE`, STRIDE = MAX_SEALED_BLOCK rounded up to 4 KiB in format 3,
/// unrounded in format 2 (docs/ARCHITECTURE.md, chunkserver on-disk format).
fn block0_copies(bytes: &[u8]) -> [usize; 2] {
    let field: [u8; 4] = bytes[28..32].try_into().expect("4 bytes");
    let blocks = u32::from_le_bytes(field) as usize;
    let table = (blocks * 2 * 64).div_ceil(4096) * 4096;
    let slots = 4096 + table;
    [slots, slots + blocks * slot_stride(bytes)]
}

/// Bytes from one slot to the next in chunk file `bytes`, by its header's format.
fn slot_stride(bytes: &[u8]) -> usize {
    let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    match format {
        2 => common::block::MAX_SEALED_BLOCK,
        3 => common::block::MAX_SEALED_BLOCK.next_multiple_of(4096),
        other => panic!("unknown chunk file format {other}"),
    }
}

/// Flips a byte inside both copies of block 0 of `file` (a hole copy stays a hole: its
/// table entry says so, and only written copies are ever read).
fn flip_block0(file: &Path) {
    let mut bytes = std::fs::read(file).expect("read chunk file");
    for at in block0_copies(&bytes) {
        if let Some(byte) = bytes.get_mut(at + 100) {
            *byte ^= 0x5a;
        }
    }
    std::fs::write(file, bytes).expect("write chunk file");
}

#[test]
fn tampered_or_swapped_blocks_on_every_replica_give_eio() {
    let Some(_fuse) = require_fuse("tampered_or_swapped_blocks_on_every_replica_give_eio") else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a", pattern(4, 512 * 1024)),
        ("b", pattern(5, 512 * 1024)),
        ("c", pattern(6, 512 * 1024)),
    ];
    {
        let mount = cluster.mount(MountOptions::default());
        for (name, data) in &files {
            write_synced(&mount.path().join(name), data);
        }
    }
    cluster.wait_fully_replicated(std::time::Duration::from_secs(60));
    // Each file is one chunk, on all three chunkservers. On every replica: flip a byte of
    // one chunk's block 0, and swap the other two chunks' files, so each is served blocks
    // that are authentic but bound to another chunk.
    // Each chunkserver is stopped while its disk is tampered with: a running one keeps its
    // chunk files open, so a rename would not reach it.
    for i in 0..cluster.chunkserver_count() {
        cluster.stop_chunkserver(i);
        let chunks = cluster.chunk_files(i);
        assert_eq!(chunks.len(), 3, "chunkserver {i} holds {chunks:?}");
        flip_block0(&chunks[0]);
        let tmp = chunks[1].with_extension("swap");
        std::fs::rename(&chunks[1], &tmp).expect("swap");
        std::fs::rename(&chunks[2], &chunks[1]).expect("swap");
        std::fs::rename(&tmp, &chunks[2]).expect("swap");
        cluster.restart_chunkserver(i);
    }
    // No replica is good, so retrying them for the default 15 s would only slow the test.
    let mount = cluster.mount(MountOptions {
        extra_args: vec!["--retry-window-ms".into(), "2000".into()],
        ..MountOptions::default()
    });
    for (name, data) in &files {
        match std::fs::read(mount.path().join(name)) {
            Ok(bytes) => panic!(
                "{name}: tampered data reached the application ({} bytes, the original: {})",
                bytes.len(),
                &bytes == data
            ),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{name}: {e}"),
        }
    }
}

//! Data outlives the processes that wrote it: files written through one mount read back
//! identical through a new `mosaic-mount` process, after every chunkserver restarted (one
//! crashed, the others stopped gracefully), and after the client was killed with SIGKILL
//! (whose mount must vanish by itself).

use std::path::Path;
use std::time::Duration;

use mosaic_tests::tree::{Compare, assert_same_tree, pattern_bytes};
use mosaic_tests::{ClusterOptions, MountOptions, TestCluster, require_fuse};

const MIB: usize = 1024 * 1024;

/// Writes the reference tree: sizes around and across 1 MiB chunk boundaries, an empty file,
/// nested directories, a symlink and a hard link.
fn write_reference(root: &Path) {
    std::fs::create_dir_all(root.join("nested/deeper")).expect("mkdir");
    let sizes = [
        0,
        1,
        4095,
        65536,
        65537,
        MIB - 1,
        MIB,
        MIB + 1,
        3 * MIB + 777,
    ];
    for (i, size) in sizes.iter().enumerate() {
        std::fs::write(
            root.join(format!("file-{size}")),
            pattern_bytes(100 + i as u64, *size),
        )
        .expect("write file");
    }
    std::fs::write(root.join("nested/deeper/small"), b"small file\n").expect("write");
    std::os::unix::fs::symlink("../file-1", root.join("nested/link")).expect("symlink");
    std::fs::hard_link(root.join("file-65536"), root.join("nested/hard")).expect("link");
}

#[test]
fn files_survive_remount_and_chunkserver_restarts() {
    let Some(_fuse) = require_fuse("files_survive_remount_and_chunkserver_restarts") else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let reference = tempfile::tempdir().expect("temp dir");
    write_reference(reference.path());

    let first = cluster.mount(MountOptions::default());
    let data = first.path().join("data");
    std::fs::create_dir(&data).expect("mkdir on the mount");
    write_reference(&data);
    assert_same_tree(reference.path(), &data, Compare::NO_TIMES);
    let status = first.unmount();
    assert!(
        status.success(),
        "mosaic-mount exit after unmount: {status}"
    );

    // A new client process sees the same files.
    let second = cluster.mount(MountOptions::default());
    let data = second.path().join("data");
    assert_same_tree(reference.path(), &data, Compare::NO_TIMES);

    // Restart every chunkserver: one crash, two graceful stops.
    cluster.kill_chunkserver(0);
    cluster.stop_chunkserver(1);
    cluster.stop_chunkserver(2);
    for i in 0..3 {
        cluster.restart_chunkserver(i);
    }
    cluster.wait_all_nodes_online(Duration::from_secs(30));

    // The mount that stayed up through the restarts reads everything back ...
    assert_same_tree(reference.path(), &data, Compare::NO_TIMES);
    // ... and so does a fresh one, which unmounts on SIGTERM.
    let status = second.terminate();
    assert!(
        status.success(),
        "mosaic-mount exit after SIGTERM: {status}"
    );
    let third = cluster.mount(MountOptions::default());
    assert_same_tree(
        reference.path(),
        &third.path().join("data"),
        Compare::NO_TIMES,
    );
    third.unmount();
}

#[test]
fn a_killed_client_leaves_no_mount_and_data_survives() {
    let Some(_fuse) = require_fuse("a_killed_client_leaves_no_mount_and_data_survives") else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let content = pattern_bytes(5, 2 * MIB + 3);
    let mount = cluster.mount(MountOptions::default());
    // `fs::write` closes the file: close-to-open means the data is committed now.
    std::fs::write(mount.path().join("kept"), &content).expect("write through the mount");
    // Waits for the mount to vanish by itself (auto-unmount), with a deadline.
    mount.kill_client();

    let mount = cluster.mount(MountOptions::default());
    let read = std::fs::read(mount.path().join("kept")).expect("read back");
    assert!(
        read == content,
        "content differs after the client was killed"
    );
    mount.unmount();
}

/// A shared writable mmap persists: pages stored through the mapping (across a chunk
/// boundary, into a file extended with ftruncate) and pushed with msync(MS_SYNC) are there
/// after an unmount and a new mount, also pages that were only unmapped, not msync'ed,
/// before the file was closed (munmap + close write them back).
#[test]
fn shared_mmap_writes_survive_a_remount() {
    use std::os::fd::AsRawFd as _;
    let Some(_fuse) = require_fuse("shared_mmap_writes_survive_a_remount") else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let len = 2 * MIB + 4096;
    let mut expected = pattern_bytes(7, len);
    let first = cluster.mount(MountOptions::default());
    let path = first.path().join("mapped");
    std::fs::write(&path, &expected[..MIB / 2]).expect("write the start");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(len as u64).expect("extend");
    // SAFETY: a fresh shared mapping of `len` bytes of an open descriptor; unmapped below
    // before the descriptor is closed, and only touched within its bounds.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        map,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `map` is valid for `len` bytes, readable and writable.
    let bytes = unsafe { std::slice::from_raw_parts_mut(map.cast::<u8>(), len) };
    // Through the mapping: the rest of the first chunk, across the boundary, the tail.
    bytes[MIB / 2..].copy_from_slice(&expected[MIB / 2..]);
    // SAFETY: the mapping is valid; MS_SYNC returns after write-back.
    assert_eq!(unsafe { libc::msync(map, len, libc::MS_SYNC) }, 0, "msync");
    // A change after the msync: written back by munmap and close only.
    let (late, text) = (MIB - 10, b"after msync, unsynced");
    bytes[late..late + text.len()].copy_from_slice(text);
    expected[late..late + text.len()].copy_from_slice(text);
    // SAFETY: unmapping what was mapped above; `bytes` is not used afterwards.
    assert_eq!(unsafe { libc::munmap(map, len) }, 0, "munmap");
    drop(f);
    assert!(first.unmount().success(), "unmount");

    let second = cluster.mount(MountOptions::default());
    let back = std::fs::read(second.path().join("mapped")).expect("read after remount");
    assert_eq!(back.len(), len, "size after remount");
    assert!(
        back == expected,
        "mmap'ed data differs after remount (first difference at byte {:?})",
        back.iter().zip(&expected).position(|(a, b)| a != b)
    );
}

//! Errors at the limits of a MosaicFS mount that the conformance suite cannot take from a
//! local directory, because the local filesystem's limits differ or the case needs a second
//! filesystem or a full cluster: EXDEV between the mount and another filesystem, EMLINK at
//! the link limit (65,000 as ext4), EFBIG past the largest file (2^50 bytes; ext4's is
//! 2^44), and ENOSPC — not EIO — when the chunkservers are full, with statfs showing it.

use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::time::Duration;

use mosaic_tests::sys::{check, cpath, pwrite_all};
use mosaic_tests::wait::{wait_for, wait_until};
use mosaic_tests::{ClusterOptions, MountOptions, MountedCluster, TestCluster, require_fuse, sh};

const MIB: u64 = 1024 * 1024;
/// `common::types::MAX_FILE_SIZE`, the master's largest file size.
const MAX_FILE_SIZE: u64 = 1 << 50;
/// `master::store::rules::LINK_MAX`.
const LINK_MAX: u64 = 65_000;

fn rename(a: &Path, b: &Path) -> Result<(), i32> {
    // SAFETY: valid NUL-terminated paths.
    check(unsafe { libc::rename(cpath(a).as_ptr(), cpath(b).as_ptr()) }).map(|_| ())
}

fn link(a: &Path, b: &Path) -> Result<(), i32> {
    // SAFETY: valid NUL-terminated paths.
    check(unsafe { libc::link(cpath(a).as_ptr(), cpath(b).as_ptr()) }).map(|_| ())
}

fn statvfs(p: &Path) -> libc::statvfs {
    // SAFETY: zeroed statvfs is a valid out-buffer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid path and out-buffer.
    let rc = unsafe { libc::statvfs(cpath(p).as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs {}", p.display());
    st
}

/// EXDEV both ways between the mount and a local directory (the kernel's answer, as the two
/// are different mounts), and EFBIG at the largest file size for pwrite, ftruncate,
/// truncate and fallocate, while writes just below it work.
#[test]
fn exdev_and_efbig() {
    let Some(mc) = MountedCluster::start("exdev_and_efbig", ClusterOptions::default()) else {
        return;
    };
    let m = mc.path();
    let local = tempfile::tempdir().expect("temp dir");
    let l = local.path();
    std::fs::write(m.join("f"), b"on the mount").expect("write");
    std::fs::write(l.join("g"), b"local").expect("write");
    std::fs::create_dir(m.join("d")).expect("mkdir");
    assert_eq!(rename(&m.join("f"), &l.join("f")), Err(libc::EXDEV));
    assert_eq!(rename(&l.join("g"), &m.join("g")), Err(libc::EXDEV));
    assert_eq!(rename(&m.join("d"), &l.join("d")), Err(libc::EXDEV));
    assert_eq!(link(&m.join("f"), &l.join("f")), Err(libc::EXDEV));
    assert_eq!(link(&l.join("g"), &m.join("g")), Err(libc::EXDEV));
    // mv falls back to copy + unlink on EXDEV: the file arrives whole.
    sh(&format!(
        "mv '{}' '{}'",
        l.join("g").display(),
        m.join("g").display()
    ));
    assert_eq!(std::fs::read(m.join("g")).expect("read"), b"local");

    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.join("big"))
        .expect("create");
    let fd = f.as_raw_fd();
    // The last byte a file may hold.
    assert_eq!(pwrite_all(fd, b"z", MAX_FILE_SIZE - 1), Ok(1));
    // SAFETY: a zeroed stat is a valid out-buffer; fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
    assert_eq!(st.st_size as u64, MAX_FILE_SIZE);
    assert_eq!(pwrite_all(fd, b"z", MAX_FILE_SIZE), Err(libc::EFBIG));
    // SAFETY: plain syscalls on an open descriptor.
    unsafe {
        assert_eq!(
            check(libc::ftruncate(fd, (MAX_FILE_SIZE + 1) as i64)),
            Err(libc::EFBIG)
        );
        assert_eq!(
            check(libc::fallocate(fd, 0, MAX_FILE_SIZE as i64, 4096)),
            Err(libc::EFBIG)
        );
        assert_eq!(
            check(libc::truncate(
                cpath(&m.join("big")).as_ptr(),
                (MAX_FILE_SIZE + MIB) as i64
            )),
            Err(libc::EFBIG)
        );
        assert_eq!(check(libc::ftruncate(fd, 0)), Ok(0));
    }
    drop(f);
}

/// EMLINK at 65,000 links to one file. Making 65,000 links through FUSE takes minutes, so
/// the test stops the master, raises the file's link count in its database to just below
/// the limit (as a file that got there by `link(2)` would have it), and restarts it.
#[test]
fn emlink_at_the_link_limit() {
    let Some(_fuse) = require_fuse("emlink_at_the_link_limit") else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let m = cluster.mount(MountOptions {
        attr_timeout_ms: Some(0),
        ..MountOptions::default()
    });
    let p = m.path().to_path_buf();
    std::fs::write(p.join("f"), b"x").expect("write");
    link(&p.join("f"), &p.join("f1")).expect("a first link");
    use std::os::unix::fs::MetadataExt as _;
    let ino = std::fs::metadata(p.join("f")).expect("stat").ino();
    drop(m);
    cluster.stop_master();
    let db = cluster.state_dir().join("meta.db");
    sh(&format!(
        "sqlite3 '{}' 'UPDATE inodes SET nlink = {} WHERE ino = {ino}'",
        db.display(),
        LINK_MAX - 1
    ));
    cluster.restart_master();
    let m = cluster.mount(MountOptions {
        attr_timeout_ms: Some(0),
        ..MountOptions::default()
    });
    let p = m.path().to_path_buf();
    link(&p.join("f"), &p.join("last")).expect("the 65,000th link");
    assert_eq!(
        std::fs::metadata(p.join("f")).expect("stat").nlink(),
        LINK_MAX
    );
    assert_eq!(link(&p.join("f"), &p.join("over")), Err(libc::EMLINK));
    assert_eq!(link(&p.join("f1"), &p.join("over")), Err(libc::EMLINK));
    // Removing a name makes room for one again.
    std::fs::remove_file(p.join("last")).expect("unlink");
    link(&p.join("f"), &p.join("again")).expect("a link after an unlink");
}

/// Small chunkservers: writing more than the cluster holds fails with ENOSPC (on write,
/// fsync or close, wherever the client learns it), never EIO; statfs shows the cluster's
/// capacity and that it is full; after the file is removed and its chunks are collected,
/// writing works again.
#[test]
fn enospc_when_the_cluster_is_full() {
    /// Per chunkserver: four 1 MiB chunks and some room for the block tables.
    const CAPACITY: u64 = 4 * MIB + 512 * 1024;
    let Some(mc) = MountedCluster::start(
        "enospc_when_the_cluster_is_full",
        ClusterOptions {
            capacity_bytes: Some(CAPACITY),
            ..ClusterOptions::default()
        },
    ) else {
        return;
    };
    let m = mc.path();
    let nodes = mc.cluster.chunkserver_count() as u64;
    let st = statvfs(m);
    assert_eq!(
        st.f_blocks * st.f_frsize,
        nodes * CAPACITY,
        "statfs total = the chunkservers' capacity"
    );
    let chunk = vec![0x5au8; MIB as usize];
    let path = m.join("fill");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create");
    let fd = f.as_raw_fd();
    // Every replica goes to every node (3 of 3), so the cluster holds about 4 MiB of file
    // data; 64 MiB is far past it, also if heartbeats report usage late.
    let mut failure = None;
    for i in 0..64u64 {
        let written = pwrite_all(fd, &chunk, i * MIB).and_then(|_| {
            // SAFETY: plain syscall on an open descriptor.
            check(unsafe { libc::fsync(fd) })
        });
        if let Err(e) = written {
            failure = Some((i, e));
            break;
        }
    }
    // SAFETY: closing our descriptor once (forget below keeps File from closing it again).
    let closed = check(unsafe { libc::close(fd) });
    std::mem::forget(f);
    let (at, errno) = failure.unwrap_or_else(|| panic!("64 MiB fit in {nodes} x {CAPACITY} bytes"));
    assert_eq!(
        errno,
        libc::ENOSPC,
        "the write of MiB {at} failed with {} instead of ENOSPC",
        std::io::Error::from_raw_os_error(errno)
    );
    // Placement counts new chunks as used until the nodes' next heartbeats: the cluster
    // takes about its capacity (4 MiB of file data at 3 replicas), not what a burst of
    // writes between two heartbeats could place (several times that before the fix).
    assert!(
        at <= 8,
        "{at} MiB accepted by a cluster of {nodes} x {CAPACITY} bytes at 3 replicas"
    );
    assert!(
        matches!(closed, Ok(_) | Err(libc::ENOSPC)),
        "close after ENOSPC: {closed:?}"
    );
    let free_now = || {
        let st = statvfs(m);
        st.f_bavail * st.f_frsize
    };
    eprintln!(
        "ENOSPC at MiB {at}; statfs then shows {} of {} bytes free",
        free_now(),
        nodes * CAPACITY
    );
    // Usage reaches the master with the nodes' heartbeats (a new chunk is counted only by
    // its first blocks until then): by the next reports statfs shows the cluster nearly
    // full, never most of it free.
    wait_until(
        Duration::from_secs(10),
        "statfs to show the cluster nearly full after ENOSPC",
        || free_now() < nodes * CAPACITY / 2,
    );
    // What was written before the failure reads back.
    let size = std::fs::metadata(&path).expect("stat").len();
    assert!(
        size >= MIB,
        "at least one MiB landed before the cluster filled"
    );
    let data = std::fs::read(&path).expect("read back");
    assert!(data.iter().all(|&b| b == 0x5a), "data before ENOSPC intact");

    // Freeing the file frees the chunks (through the nodes' garbage collection).
    std::fs::remove_file(&path).expect("unlink");
    wait_until(
        Duration::from_secs(120),
        "the freed chunks to be collected and statfs to show room",
        || {
            let st = statvfs(m);
            st.f_bavail * st.f_frsize >= nodes * 2 * MIB
        },
    );
    wait_for(
        Duration::from_secs(120),
        "a write to succeed after space was freed",
        Some(mc.mount.log()),
        || std::fs::write(m.join("after"), &chunk).ok(),
    );
}

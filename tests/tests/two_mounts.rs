//! Two `mosaic-mount` clients of one cluster: close-to-open consistency (a reader that opens
//! after the writer closed sees the new size and data, whatever the kernel cached), rename and
//! unlink seen by the other mount within the attribute cache time, and advisory locks
//! (fcntl byte-range locks and flock) enforced across mounts by the master, released when
//! the holder closes or its client goes away.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use mosaic_tests::{ClusterOptions, MountOptions, TestCluster, require_fuse, wait_until};

/// The attribute cache time the mounts use; visibility waits allow it plus a wide margin
/// for a loaded machine (the margin only matters when something is wrong).
const ATTR_TIMEOUT_MS: u64 = 1000;
const VISIBLE_DEADLINE: Duration = Duration::from_secs(20);
/// How long a blocked lock waiter may take to get the lock after it is released.
const LOCK_HANDOVER_DEADLINE: Duration = Duration::from_secs(30);

fn mount_opts() -> MountOptions {
    MountOptions {
        attr_timeout_ms: Some(ATTR_TIMEOUT_MS),
        ..MountOptions::default()
    }
}

fn setlk(fd: i32, cmd: i32, kind: i32, start: i64, len: i64) -> Result<(), i32> {
    // SAFETY: flock is plain old data.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: fd is open; fl is valid.
    if unsafe { libc::fcntl(fd, cmd, &mut fl) } < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    if cmd == libc::F_GETLK {
        return if i32::from(fl.l_type) == libc::F_UNLCK {
            Ok(())
        } else {
            Err(i32::from(fl.l_type))
        };
    }
    Ok(())
}

fn flock(fd: i32, op: i32) -> Result<(), i32> {
    // SAFETY: fd is open.
    if unsafe { libc::flock(fd, op) } < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

fn rw(path: &Path) -> std::fs::File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

#[test]
fn close_to_open_visibility_and_locks_across_two_mounts() {
    let Some(_fuse) = require_fuse("close_to_open_visibility_and_locks_across_two_mounts") else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let a = cluster.mount(mount_opts());
    let b = cluster.mount(mount_opts());
    let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());

    // Close-to-open: every version the writer closed is what the reader's next open sees,
    // even though the reader's kernel cached the previous size a moment ago.
    let mut expected = Vec::new();
    for round in 0..5u8 {
        let chunk = vec![b'a' + round; 1000 + usize::from(round) * 70_000];
        if round == 3 {
            // A shrinking overwrite: the reader must not keep the old, larger size.
            expected = chunk.clone();
            std::fs::write(pa.join("f"), &chunk).expect("overwrite via a");
        } else {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(pa.join("f"))
                .expect("open via a");
            f.write_all(&chunk).expect("append via a");
            drop(f);
            expected.extend_from_slice(&chunk);
        }
        // Stat first, so that b's kernel caches the attributes the open must not trust.
        std::fs::metadata(pb.join("f")).expect("stat via b");
        let read = std::fs::read(pb.join("f")).expect("read via b");
        assert_eq!(
            read.len(),
            expected.len(),
            "round {round}: size seen by b after open"
        );
        assert!(read == expected, "round {round}: data seen by b");
        // stat may be cached for the attribute time; it must become right within it.
        wait_until(VISIBLE_DEADLINE, "b's stat to show the new size", || {
            std::fs::metadata(pb.join("f")).is_ok_and(|m| m.len() == expected.len() as u64)
        });
    }

    // Rename and unlink on a are seen by b within the attribute cache time.
    std::fs::create_dir(pa.join("d")).expect("mkdir via a");
    std::fs::write(pa.join("d/x"), b"x").expect("write via a");
    assert_eq!(std::fs::read(pb.join("d/x")).expect("read via b"), b"x");
    std::fs::rename(pa.join("d/x"), pa.join("d/y")).expect("rename via a");
    wait_until(VISIBLE_DEADLINE, "b to see the rename", || {
        !pb.join("d/x").exists() && pb.join("d/y").exists()
    });
    std::fs::remove_file(pa.join("d/y")).expect("unlink via a");
    wait_until(VISIBLE_DEADLINE, "b to see the unlink", || {
        !pb.join("d/y").exists()
            && std::fs::read_dir(pb.join("d")).is_ok_and(|mut d| d.next().is_none())
    });

    // fcntl locks across mounts.
    std::fs::write(pa.join("lockme"), vec![0u8; 4096]).expect("create lock file");
    let fa = rw(&pa.join("lockme"));
    let fb = rw(&pb.join("lockme"));
    let (da, db) = (fa.as_raw_fd(), fb.as_raw_fd());
    setlk(da, libc::F_SETLK, libc::F_WRLCK, 0, 100).expect("a locks 0..100");
    assert_eq!(
        setlk(db, libc::F_SETLK, libc::F_WRLCK, 50, 10),
        Err(libc::EAGAIN),
        "b must not get a range a holds"
    );
    assert_eq!(
        setlk(db, libc::F_GETLK, libc::F_RDLCK, 0, 1),
        Err(libc::F_WRLCK),
        "b's F_GETLK shows a's write lock"
    );
    setlk(db, libc::F_SETLK, libc::F_WRLCK, 100, 100).expect("b locks a free range");
    // A blocking F_SETLKW on b waits until a unlocks.
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let r = setlk(db, libc::F_SETLKW, libc::F_WRLCK, 0, 10);
        let _ = tx.send(r);
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "F_SETLKW on b returned while a still held the range"
    );
    setlk(da, libc::F_SETLK, libc::F_UNLCK, 0, 100).expect("a unlocks");
    let got = rx
        .recv_timeout(LOCK_HANDOVER_DEADLINE)
        .expect("b's F_SETLKW never returned after a unlocked");
    assert_eq!(got, Ok(()), "b's blocking lock");
    waiter.join().expect("waiter thread");
    assert_eq!(
        setlk(da, libc::F_SETLK, libc::F_WRLCK, 5, 1),
        Err(libc::EAGAIN),
        "a must now be refused b's range"
    );
    // Closing b's descriptor releases b's locks.
    drop(fb);
    setlk(da, libc::F_SETLK, libc::F_WRLCK, 0, 0).expect("a locks everything after b closed");
    drop(fa);

    // flock across mounts.
    let fa = rw(&pa.join("lockme"));
    let fb = rw(&pb.join("lockme"));
    flock(fa.as_raw_fd(), libc::LOCK_EX).expect("a flock");
    assert_eq!(
        flock(fb.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB),
        Err(libc::EWOULDBLOCK),
        "b's flock must fail while a holds it"
    );
    drop(fa);
    // The kernel sends FUSE's RELEASE (which drops a flock) after close(2) returned, not
    // during it: the lock goes shortly after the last close (docs/SEMANTICS.md).
    wait_until(
        VISIBLE_DEADLINE,
        "b's flock after a closed its descriptor",
        || flock(fb.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).is_ok(),
    );

    // A client that goes away loses its locks: b holds the flock, b unmounts, a gets it.
    let fa = rw(&pa.join("lockme"));
    assert_eq!(
        flock(fa.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB),
        Err(libc::EWOULDBLOCK)
    );
    // Kill b's client with the descriptor still open: nothing releases the flock but the
    // end of b's session, when its lease runs out on the master.
    std::mem::forget(fb);
    b.kill_client();
    wait_until(
        Duration::from_secs(120),
        "the killed client's session to expire and its flock to go",
        || flock(fa.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB).is_ok(),
    );
}

/// Locks are persisted by the master: a holder on one mount keeps its fcntl lock and its
/// flock through a `kill -9` and restart of the master, the other mount is still refused,
/// and once the holder releases, the other gets them.
#[test]
fn locks_survive_a_master_restart() {
    let Some(_fuse) = require_fuse("locks_survive_a_master_restart") else {
        return;
    };
    let mut cluster = TestCluster::start(ClusterOptions::default());
    let a = cluster.mount(mount_opts());
    let b = cluster.mount(mount_opts());
    let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
    std::fs::write(pa.join("ranges"), vec![0u8; 4096]).expect("create lock file");
    std::fs::write(pa.join("whole"), b"x").expect("create flock file");
    let fa = rw(&pa.join("ranges"));
    let ga = rw(&pa.join("whole"));
    let (fb, gb) = (rw(&pb.join("ranges")), rw(&pb.join("whole")));
    let (da, db) = (fa.as_raw_fd(), fb.as_raw_fd());
    setlk(da, libc::F_SETLK, libc::F_WRLCK, 0, 100).expect("a locks 0..100");
    flock(ga.as_raw_fd(), libc::LOCK_EX).expect("a flocks");
    assert_eq!(
        setlk(db, libc::F_SETLK, libc::F_WRLCK, 50, 1),
        Err(libc::EAGAIN)
    );

    cluster.kill_master();
    cluster.restart_master();

    // The first answer after the restart (a request made while the master was down waits
    // for it within the client's retry window; an EIO means the window ran out, so ask
    // again) must be a refusal.
    let first_answer = |f: &dyn Fn() -> Result<(), i32>| {
        mosaic_tests::wait_for(
            // The master restarts and each client reconnects with back-off; generous for a
            // loaded machine, and only reached when something is wrong.
            Duration::from_secs(300),
            "an answer from the restarted master",
            Some(&cluster.master_log()),
            || match f() {
                Err(libc::EIO) | Err(libc::ENOTCONN) => None,
                other => Some(other),
            },
        )
    };
    assert_eq!(
        first_answer(&|| setlk(db, libc::F_SETLK, libc::F_WRLCK, 50, 1)),
        Err(libc::EAGAIN),
        "a's byte-range lock must survive the master restart"
    );
    assert_eq!(
        setlk(db, libc::F_GETLK, libc::F_RDLCK, 0, 1),
        Err(libc::F_WRLCK),
        "b's F_GETLK still shows a's write lock"
    );
    assert_eq!(
        first_answer(&|| flock(gb.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)),
        Err(libc::EWOULDBLOCK),
        "a's flock must survive the master restart"
    );
    // a's own locks still work for a: unlocking a range and locking it again.
    setlk(da, libc::F_SETLK, libc::F_WRLCK, 0, 10).expect("a re-locks its own range");

    // The holder releases: now b gets both.
    setlk(da, libc::F_SETLK, libc::F_UNLCK, 0, 0).expect("a unlocks everything");
    setlk(db, libc::F_SETLK, libc::F_WRLCK, 50, 1).expect("b locks after a unlocked");
    drop(ga);
    wait_until(
        VISIBLE_DEADLINE,
        "b's flock after a closed its descriptor",
        || flock(gb.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).is_ok(),
    );
    drop((fa, fb, gb));
}

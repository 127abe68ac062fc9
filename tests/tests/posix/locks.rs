//! Lock cases within one mount: POSIX byte-range locks (fcntl) and flock, between the test
//! process and a forked child (a different lock owner). Cross-mount locking is tested in
//! `two_mounts.rs`.

use super::Case;
use super::harness::{T, c, errno_name, res, run_as};

pub const CASES: &[Case] = &[
    ("locks", "fcntl_ranges", fcntl_ranges),
    ("locks", "fcntl_shared", fcntl_shared),
    ("locks", "fcntl_close_releases", fcntl_close_releases),
    ("locks", "flock", flock_cases),
];

const ROOT: (u32, u32) = (0, 0);

fn flock_struct(kind: i32, start: i64, len: i64) -> libc::flock {
    // SAFETY: flock is plain old data.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    fl
}

fn setlk(t: &mut T, label: &str, fd: i32, kind: i32, start: i64, len: i64) {
    let fl = flock_struct(kind, start, len);
    // SAFETY: fd is open; fl is a valid flock.
    let r = res(unsafe { libc::fcntl(fd, libc::F_SETLK, &fl) }.into());
    t.rec(label, r);
}

/// In a child (another lock owner): open `path` read-write and try F_SETLK.
fn child_setlk(t: &mut T, label: &str, path: &str, kind: i32, start: i64, len: i64) {
    let p = c(path);
    let fl = flock_struct(kind, start, len);
    let r = run_as(t.dirfd(), ROOT, &[], |d| unsafe {
        let f = libc::openat(d, p.as_ptr(), libc::O_RDWR);
        if f < 0 {
            return -1;
        }
        libc::fcntl(f, libc::F_SETLK, &fl).into()
    });
    t.rec(&format!("child {label}"), r);
}

/// In a child: F_GETLK on a range; records the conflicting lock's type and range.
fn child_getlk(t: &mut T, path: &str, kind: i32, start: i64, len: i64) {
    let p = c(path);
    let r = run_as(t.dirfd(), ROOT, &[], |d| unsafe {
        let f = libc::openat(d, p.as_ptr(), libc::O_RDWR);
        if f < 0 {
            return -1;
        }
        let mut fl = flock_struct(kind, start, len);
        if libc::fcntl(f, libc::F_GETLK, &mut fl) < 0 {
            return -1;
        }
        // Pack type, start and length into the result (all small here).
        i64::from(fl.l_type) * 1_000_000_000_000 + fl.l_start * 1_000_000 + fl.l_len
    });
    let line = match r {
        Ok(v) => format!(
            "child getlk {start}+{len}: type={} start={} len={}",
            v / 1_000_000_000_000,
            v / 1_000_000 % 1_000_000,
            v % 1_000_000
        ),
        Err(e) => format!("child getlk: {}", errno_name(e)),
    };
    t.note(line);
}

fn fcntl_ranges(t: &mut T) {
    t.file("f", &[0u8; 1000]);
    let fd = t.open("f", libc::O_RDWR, 0).map(|v| v as i32).unwrap_or(-1);
    setlk(t, "wrlck 0+100", fd, libc::F_WRLCK, 0, 100);
    child_setlk(t, "wrlck 50+10", "f", libc::F_WRLCK, 50, 10);
    child_setlk(t, "rdlck 99+1", "f", libc::F_RDLCK, 99, 1);
    child_setlk(t, "wrlck 100+100", "f", libc::F_WRLCK, 100, 100);
    child_getlk(t, "f", libc::F_WRLCK, 50, 10);
    child_getlk(t, "f", libc::F_WRLCK, 500, 10);
    // Unlock the front half: the child may lock there, not in the back half.
    setlk(t, "unlock 0+50", fd, libc::F_UNLCK, 0, 50);
    child_setlk(t, "wrlck 0+40", "f", libc::F_WRLCK, 0, 40);
    child_setlk(t, "wrlck 60+5", "f", libc::F_WRLCK, 60, 5);
    // Lock to EOF and beyond (len 0).
    setlk(t, "wrlck 2000+0", fd, libc::F_WRLCK, 2000, 0);
    child_setlk(t, "wrlck 1_000_000+1", "f", libc::F_WRLCK, 1_000_000, 1);
    child_getlk(t, "f", libc::F_RDLCK, 5000, 1);
    setlk(t, "bad type", fd, 99, 0, 1);
    setlk(t, "negative start", fd, libc::F_WRLCK, -5, 1);
    t.close(fd);
    child_setlk(t, "after close", "f", libc::F_WRLCK, 0, 0);
}

fn fcntl_shared(t: &mut T) {
    t.file("f", b"data");
    let fd = t.open("f", libc::O_RDWR, 0).map(|v| v as i32).unwrap_or(-1);
    setlk(t, "rdlck whole", fd, libc::F_RDLCK, 0, 0);
    child_setlk(t, "rdlck whole", "f", libc::F_RDLCK, 0, 0);
    child_setlk(t, "wrlck whole", "f", libc::F_WRLCK, 0, 0);
    child_getlk(t, "f", libc::F_WRLCK, 0, 0);
    // Upgrade our own read lock to a write lock: one owner never conflicts with itself.
    setlk(t, "upgrade", fd, libc::F_WRLCK, 0, 0);
    child_setlk(t, "rdlck after upgrade", "f", libc::F_RDLCK, 0, 1);
    setlk(t, "downgrade", fd, libc::F_RDLCK, 0, 0);
    child_setlk(t, "rdlck after downgrade", "f", libc::F_RDLCK, 0, 1);
    t.close(fd);
}

fn fcntl_close_releases(t: &mut T) {
    t.file("f", b"data");
    let a = t.open("f", libc::O_RDWR, 0).map(|v| v as i32).unwrap_or(-1);
    let b = t
        .open("f", libc::O_RDONLY, 0)
        .map(|v| v as i32)
        .unwrap_or(-1);
    setlk(t, "wrlck via a", a, libc::F_WRLCK, 0, 0);
    child_setlk(t, "while held", "f", libc::F_WRLCK, 0, 0);
    // POSIX: closing any descriptor of the file drops the process's locks on it.
    t.close(b);
    child_setlk(t, "after closing another fd", "f", libc::F_WRLCK, 0, 0);
    t.close(a);
}

fn flock_cases(t: &mut T) {
    t.file("f", b"data");
    let a = t.open("f", libc::O_RDWR, 0).map(|v| v as i32).unwrap_or(-1);
    // SAFETY: a is open.
    let r = res(unsafe { libc::flock(a, libc::LOCK_EX) }.into());
    t.rec("flock ex", r);
    let p = c("f");
    let try_child = |t: &mut T, label: &str, op: i32| {
        let r = run_as(t.dirfd(), ROOT, &[], |d| unsafe {
            let f = libc::openat(d, p.as_ptr(), libc::O_RDONLY);
            if f < 0 {
                return -1;
            }
            libc::flock(f, op | libc::LOCK_NB).into()
        });
        t.rec(&format!("child {label}"), r);
    };
    try_child(t, "flock sh", libc::LOCK_SH);
    try_child(t, "flock ex", libc::LOCK_EX);
    // SAFETY: a is open.
    let r = res(unsafe { libc::flock(a, libc::LOCK_SH) }.into());
    t.rec("flock downgrade", r);
    try_child(t, "flock sh after downgrade", libc::LOCK_SH);
    try_child(t, "flock ex after downgrade", libc::LOCK_EX);
    // A second descriptor of the same process is a different flock owner.
    let b = t
        .open("f", libc::O_RDONLY, 0)
        .map(|v| v as i32)
        .unwrap_or(-1);
    // SAFETY: b is open.
    let r = res(unsafe { libc::flock(b, libc::LOCK_EX | libc::LOCK_NB) }.into());
    t.rec("flock ex via second fd", r);
    t.close(b);
    t.close(a);
    try_child(t, "flock ex after close", libc::LOCK_EX);
}

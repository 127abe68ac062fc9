//! The conformance harness: a case is a function that performs system calls relative to a
//! directory descriptor and writes down what it observed (return values, errno names,
//! normalized stat fields, which timestamps moved). The same case runs in a directory of the
//! mount and in a local (ext4) directory; the two transcripts must be equal, so the expected
//! behaviour is the kernel's, never our own guess.
//!
//! Calls go through raw `libc` so that flags reach the kernel exactly as given. Every path is
//! relative to the case's directory descriptor (`*at` calls): a child that switched to an
//! unprivileged uid can then work below a temp dir whose ancestors it could not traverse.
//! Nothing here may record a value that legitimately differs between two filesystems (inode
//! numbers, device ids, directory sizes, st_blocks, absolute times).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

/// Unprivileged identities the cases switch to. They need no passwd entries.
pub const U1: (u32, u32) = (1001, 1001);
pub const U2: (u32, u32) = (1002, 1002);
/// A group that U1 is a supplementary member of.
pub const G_EXTRA: u32 = 1003;

/// The time cases age a file to before an operation: far in the past, so that "changed"
/// means "set by the operation", whatever the clock granularity.
pub const OLD: libc::time_t = 1_000_000_000;
/// After aging, ctime is "now"; the next change must land on a later clock tick to be seen.
/// ext4's coarse clock ticks every few milliseconds (a jiffy); 20 ms covers HZ=100. This is
/// clock resolution, not a readiness wait: nothing else is waited for.
const CLOCK_TICK: Duration = Duration::from_millis(20);

pub fn c(path: &str) -> CString {
    CString::new(path).expect("test paths contain no NUL")
}

/// The symbolic name of an errno, so transcripts read well.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::E2BIG => "E2BIG",
        libc::ETXTBSY => "ETXTBSY",
        libc::EDEADLK => "EDEADLK",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A syscall's result: the non-negative return value, or the errno.
pub fn res(ret: i64) -> Result<i64, i32> {
    if ret < 0 { Err(last_errno()) } else { Ok(ret) }
}

pub fn show(r: Result<i64, i32>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => errno_name(e),
    }
}

/// The stat fields two filesystems must agree on.
pub fn describe(st: &libc::stat) -> String {
    let kind = st.st_mode & libc::S_IFMT;
    let mut s = format!(
        "mode={:o} nlink={} uid={} gid={}",
        st.st_mode, st.st_nlink, st.st_uid, st.st_gid
    );
    // A directory's size is the filesystem's business (ext4: blocks; ours: 0).
    if kind != libc::S_IFDIR {
        s.push_str(&format!(" size={}", st.st_size));
    }
    if kind == libc::S_IFCHR || kind == libc::S_IFBLK {
        s.push_str(&format!(" rdev={:x}", st.st_rdev));
    }
    s
}

type Times = [(i64, i64); 3];

fn times_of(st: &libc::stat) -> Times {
    [
        (st.st_atime, st.st_atime_nsec),
        (st.st_mtime, st.st_mtime_nsec),
        (st.st_ctime, st.st_ctime_nsec),
    ]
}

/// One case run in one directory.
pub struct T {
    dir: OwnedFd,
    pub log: Vec<String>,
    aged: HashMap<String, Times>,
}

impl T {
    /// Opens `dir` (which must exist and be empty) as the case's directory.
    pub fn new(dir: &Path) -> T {
        let p = c(dir.to_str().expect("utf-8 temp path"));
        // SAFETY: plain open of a path we own; the descriptor is wrapped at once.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY) };
        assert!(
            fd >= 0,
            "open {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh descriptor we own.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        T {
            dir,
            log: Vec::new(),
            aged: HashMap::new(),
        }
    }

    pub fn dirfd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    /// Writes a line into the transcript.
    pub fn note(&mut self, line: impl Into<String>) {
        self.log.push(line.into());
    }

    /// Records a call's outcome under `label` and returns it.
    pub fn rec(&mut self, label: &str, r: Result<i64, i32>) -> Option<i64> {
        self.log.push(format!("{label}: {}", show(r)));
        r.ok()
    }

    /// Records a call's outcome including its return value (byte counts and the like).
    pub fn rec_val(&mut self, label: &str, r: Result<i64, i32>) -> Option<i64> {
        let shown = match r {
            Ok(v) => format!("ok {v}"),
            Err(e) => errno_name(e),
        };
        self.log.push(format!("{label}: {shown}"));
        r.ok()
    }

    pub fn lstat_raw(&self, path: &str) -> Result<libc::stat, i32> {
        let p = c(path);
        // SAFETY: stat is plain old data; fstatat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let r =
            unsafe { libc::fstatat(self.dirfd(), p.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if r < 0 { Err(last_errno()) } else { Ok(st) }
    }

    /// Records the normalized lstat of `path`.
    pub fn stat(&mut self, path: &str) {
        let line = match self.lstat_raw(path) {
            Ok(st) => format!("stat {path}: {}", describe(&st)),
            Err(e) => format!("stat {path}: {}", errno_name(e)),
        };
        self.log.push(line);
    }

    /// Records the normalized fstat of an open descriptor.
    pub fn fstat(&mut self, label: &str, fd: i32) {
        // SAFETY: stat is plain old data; fstat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let line = if unsafe { libc::fstat(fd, &mut st) } < 0 {
            format!("fstat {label}: {}", errno_name(last_errno()))
        } else {
            format!("fstat {label}: {}", describe(&st))
        };
        self.log.push(line);
    }

    /// Sets atime and mtime of each path far into the past and remembers all three times,
    /// then lets the clock tick, so that [`T::changed`] can tell what a later call set.
    pub fn age(&mut self, paths: &[&str]) {
        let old = [
            libc::timespec {
                tv_sec: OLD,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: OLD,
                tv_nsec: 0,
            },
        ];
        for path in paths {
            let p = c(path);
            // SAFETY: valid path and times array.
            let r = unsafe {
                libc::utimensat(
                    self.dirfd(),
                    p.as_ptr(),
                    old.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            assert!(r == 0, "age {path}: {}", std::io::Error::last_os_error());
            let st = self
                .lstat_raw(path)
                .unwrap_or_else(|e| panic!("stat {path}: errno {e}"));
            self.aged.insert(path.to_string(), times_of(&st));
        }
        std::thread::sleep(CLOCK_TICK);
    }

    /// Records which of atime/mtime/ctime of `path` differ from when it was aged.
    pub fn changed(&mut self, path: &str) {
        self.changed_since(path, path);
    }

    /// [`T::changed`] for an inode that was aged under another name (`aged_as`).
    pub fn changed_since(&mut self, path: &str, aged_as: &str) {
        let before = *self
            .aged
            .get(aged_as)
            .unwrap_or_else(|| panic!("{aged_as} was not aged"));
        let line = match self.lstat_raw(path) {
            Ok(st) => {
                let now = times_of(&st);
                let mark = |i: usize, n: &str| {
                    if now[i] != before[i] {
                        format!("{n}+")
                    } else {
                        format!("{n}-")
                    }
                };
                format!(
                    "times {path}: {} {} {}",
                    mark(0, "a"),
                    mark(1, "m"),
                    mark(2, "c")
                )
            }
            Err(e) => format!("times {path}: {}", errno_name(e)),
        };
        self.log.push(line);
    }

    /// Records the raw atime and mtime of `path` (only after setting them explicitly).
    pub fn times_exact(&mut self, path: &str) {
        let line = match self.lstat_raw(path) {
            Ok(st) => {
                let t = times_of(&st);
                format!(
                    "times {path}: atime={}.{:09} mtime={}.{:09}",
                    t[0].0, t[0].1, t[1].0, t[1].1
                )
            }
            Err(e) => format!("times {path}: {}", errno_name(e)),
        };
        self.log.push(line);
    }

    // Plain calls, each recorded.

    pub fn mkdir(&mut self, path: &str, mode: u32) -> Option<i64> {
        let p = c(path);
        // SAFETY: valid C string.
        let r = res(unsafe { libc::mkdirat(self.dirfd(), p.as_ptr(), mode) }.into());
        self.rec(&format!("mkdir {path} {mode:o}"), r)
    }

    /// Creates a file with `data` (O_CREAT|O_TRUNC, mode 0644 before umask).
    pub fn file(&mut self, path: &str, data: &[u8]) {
        let fd = self.open(path, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, 0o644);
        if let Some(fd) = fd {
            self.write(fd as i32, data);
            self.close(fd as i32);
        }
    }

    pub fn open(&mut self, path: &str, flags: i32, mode: u32) -> Option<i64> {
        let p = c(path);
        // SAFETY: valid C string.
        let r = res(unsafe { libc::openat(self.dirfd(), p.as_ptr(), flags, mode) }.into());
        self.rec(&format!("open {path} {flags:#o} {mode:o}"), r)
    }

    pub fn close(&mut self, fd: i32) {
        // SAFETY: closing a descriptor this case opened.
        let r = res(unsafe { libc::close(fd) }.into());
        self.rec("close", r);
    }

    pub fn write(&mut self, fd: i32, data: &[u8]) -> Option<i64> {
        // SAFETY: data is a valid buffer of its length.
        let r = res(unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) } as i64);
        self.rec_val("write", r)
    }

    pub fn pwrite(&mut self, fd: i32, data: &[u8], off: i64) -> Option<i64> {
        // SAFETY: data is a valid buffer of its length.
        let r = res(unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), off) } as i64);
        self.rec_val(&format!("pwrite @{off}"), r)
    }

    /// Reads up to `len` bytes at `off` and records a digest of what came back.
    pub fn pread(&mut self, fd: i32, len: usize, off: i64) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        // SAFETY: buf is a valid buffer of its length.
        let r = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), len, off) };
        if r < 0 {
            self.note(format!("pread {len}@{off}: {}", errno_name(last_errno())));
            return Vec::new();
        }
        buf.truncate(r as usize);
        self.note(format!(
            "pread {len}@{off}: {} bytes {}",
            buf.len(),
            digest(&buf)
        ));
        buf
    }

    /// Reads a whole file by path and records its length and digest.
    pub fn content(&mut self, path: &str) {
        let p = c(path);
        // SAFETY: valid C string.
        let fd = unsafe { libc::openat(self.dirfd(), p.as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            self.note(format!("content {path}: {}", errno_name(last_errno())));
            return;
        }
        let mut all = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            all.extend_from_slice(&buf[..n as usize]);
        }
        // SAFETY: fd was opened above.
        unsafe { libc::close(fd) };
        self.note(format!(
            "content {path}: {} bytes {}",
            all.len(),
            digest(&all)
        ));
    }

    pub fn unlink(&mut self, path: &str) -> Option<i64> {
        let p = c(path);
        // SAFETY: valid C string.
        let r = res(unsafe { libc::unlinkat(self.dirfd(), p.as_ptr(), 0) }.into());
        self.rec(&format!("unlink {path}"), r)
    }

    pub fn rmdir(&mut self, path: &str) -> Option<i64> {
        let p = c(path);
        // SAFETY: valid C string.
        let r = res(unsafe { libc::unlinkat(self.dirfd(), p.as_ptr(), libc::AT_REMOVEDIR) }.into());
        self.rec(&format!("rmdir {path}"), r)
    }

    pub fn link(&mut self, from: &str, to: &str) -> Option<i64> {
        let (a, b) = (c(from), c(to));
        // SAFETY: valid C strings.
        let r = res(
            unsafe { libc::linkat(self.dirfd(), a.as_ptr(), self.dirfd(), b.as_ptr(), 0) }.into(),
        );
        self.rec(&format!("link {from} {to}"), r)
    }

    pub fn symlink(&mut self, target: &str, path: &str) -> Option<i64> {
        let (a, b) = (c(target), c(path));
        // SAFETY: valid C strings.
        let r = res(unsafe { libc::symlinkat(a.as_ptr(), self.dirfd(), b.as_ptr()) }.into());
        self.rec(&format!("symlink {target} {path}"), r)
    }

    pub fn readlink(&mut self, path: &str) {
        let p = c(path);
        let mut buf = vec![0u8; 8192];
        // SAFETY: buf is valid for its length.
        let n = unsafe {
            libc::readlinkat(self.dirfd(), p.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        };
        let line = if n < 0 {
            format!("readlink {path}: {}", errno_name(last_errno()))
        } else {
            buf.truncate(n as usize);
            format!("readlink {path}: {:?}", String::from_utf8_lossy(&buf))
        };
        self.note(line);
    }

    pub fn rename(&mut self, from: &str, to: &str, flags: u32) -> Option<i64> {
        let (a, b) = (c(from), c(to));
        // SAFETY: valid C strings; renameat2 through syscall(2) as glibc may lack a wrapper.
        let r = res(unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                self.dirfd(),
                a.as_ptr(),
                self.dirfd(),
                b.as_ptr(),
                flags,
            )
        });
        self.rec(&format!("rename {from} {to} flags={flags}"), r)
    }

    pub fn chmod(&mut self, path: &str, mode: u32) -> Option<i64> {
        let p = c(path);
        // SAFETY: valid C string.
        let r = res(unsafe { libc::fchmodat(self.dirfd(), p.as_ptr(), mode, 0) }.into());
        self.rec(&format!("chmod {path} {mode:o}"), r)
    }

    pub fn chown(&mut self, path: &str, uid: u32, gid: u32) -> Option<i64> {
        let p = c(path);
        // SAFETY: valid C string.
        let r = res(unsafe {
            libc::fchownat(
                self.dirfd(),
                p.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        }
        .into());
        self.rec(&format!("chown {path} {uid} {gid}"), r)
    }

    pub fn truncate(&mut self, path: &str, size: i64) -> Option<i64> {
        let fd = {
            let p = c(path);
            // SAFETY: valid C string.
            unsafe { libc::openat(self.dirfd(), p.as_ptr(), libc::O_WRONLY) }
        };
        if fd < 0 {
            let r = Err(last_errno());
            return self.rec(&format!("truncate {path} {size}"), r);
        }
        // SAFETY: fd is open.
        let r = res(unsafe { libc::ftruncate(fd, size) }.into());
        // SAFETY: fd is open.
        unsafe { libc::close(fd) };
        self.rec(&format!("truncate {path} {size}"), r)
    }

    pub fn mknod(&mut self, path: &str, mode: u32, dev: u64) -> Option<i64> {
        let p = c(path);
        // SAFETY: valid C string.
        let r = res(unsafe { libc::mknodat(self.dirfd(), p.as_ptr(), mode, dev) }.into());
        self.rec(&format!("mknod {path} {mode:o}"), r)
    }

    /// utimensat with explicit (sec, nsec) pairs; nsec may be UTIME_NOW or UTIME_OMIT.
    pub fn utimens(&mut self, path: &str, a: (i64, i64), m: (i64, i64), flags: i32) {
        let p = c(path);
        let ts = [
            libc::timespec {
                tv_sec: a.0,
                tv_nsec: a.1,
            },
            libc::timespec {
                tv_sec: m.0,
                tv_nsec: m.1,
            },
        ];
        // SAFETY: valid C string and times array.
        let r =
            res(unsafe { libc::utimensat(self.dirfd(), p.as_ptr(), ts.as_ptr(), flags) }.into());
        self.rec(&format!("utimensat {path} {a:?} {m:?}"), r);
    }

    pub fn setxattr(&mut self, path: &str, name: &str, value: &[u8], flags: i32) {
        let r = self.at_path(path, |p| {
            let n = c(name);
            // SAFETY: valid C strings and buffer.
            res(unsafe {
                libc::lsetxattr(
                    p.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    flags,
                )
            }
            .into())
        });
        self.rec(
            &format!("setxattr {path} {name} len={} flags={flags}", value.len()),
            r,
        );
    }

    pub fn getxattr(&mut self, path: &str, name: &str, size: usize) {
        let r = self.at_path(path, |p| {
            let n = c(name);
            let mut buf = vec![0u8; size];
            // SAFETY: valid C strings and buffer.
            let got = res(unsafe {
                libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size) as i64
            });
            got.map(|len| {
                if size > 0 {
                    buf.truncate(len as usize);
                    // Fold the value into the number so the transcript shows it.
                    len * 1_000_003 + i64::from(buf.iter().map(|b| u32::from(*b)).sum::<u32>())
                } else {
                    len
                }
            })
        });
        self.rec_val(&format!("getxattr {path} {name} size={size}"), r);
    }

    pub fn listxattr(&mut self, path: &str) {
        let listed = self.at_path(path, |p| {
            let mut buf = vec![0u8; 65536];
            // SAFETY: valid C string and buffer.
            let n = res(
                unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) } as i64,
            )?;
            buf.truncate(n as usize);
            Ok(buf)
        });
        let line = match listed {
            Ok(buf) => {
                let mut names: Vec<String> = buf
                    .split(|b| *b == 0)
                    .filter(|n| !n.is_empty())
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    // security.* labels are the host's business (SELinux, capabilities).
                    .filter(|n| n.starts_with("user."))
                    .collect();
                names.sort();
                format!("listxattr {path}: {names:?}")
            }
            Err(e) => format!("listxattr {path}: {}", errno_name(e)),
        };
        self.note(line);
    }

    pub fn removexattr(&mut self, path: &str, name: &str) {
        let r = self.at_path(path, |p| {
            let n = c(name);
            // SAFETY: valid C strings.
            res(unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) }.into())
        });
        self.rec(&format!("removexattr {path} {name}"), r);
    }

    /// The xattr calls have no *at form: go through /proc/self/fd of the case directory.
    fn at_path<R>(&self, path: &str, f: impl FnOnce(&CStr) -> Result<R, i32>) -> Result<R, i32> {
        let full = c(&format!("/proc/self/fd/{}/{path}", self.dirfd()));
        f(&full)
    }

    /// Sorted names in a directory (without . and ..), with d_type letters.
    pub fn list(&mut self, path: &str) {
        let p = c(path);
        // SAFETY: valid C string.
        let fd =
            unsafe { libc::openat(self.dirfd(), p.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        if fd < 0 {
            self.note(format!("list {path}: {}", errno_name(last_errno())));
            return;
        }
        // SAFETY: fd is a directory descriptor; fdopendir takes ownership.
        let dir = unsafe { libc::fdopendir(fd) };
        let mut names = Vec::new();
        let mut dots = 0;
        loop {
            // SAFETY: dir is a valid DIR*; the entry is valid until the next readdir.
            let ent = unsafe { libc::readdir(dir) };
            if ent.is_null() {
                break;
            }
            // SAFETY: d_name is NUL-terminated.
            let (name, ty) = unsafe {
                (
                    CStr::from_ptr((*ent).d_name.as_ptr())
                        .to_string_lossy()
                        .into_owned(),
                    (*ent).d_type,
                )
            };
            if name == "." || name == ".." {
                dots += 1;
                continue;
            }
            names.push(format!("{name}:{ty}"));
        }
        // SAFETY: dir came from fdopendir.
        unsafe { libc::closedir(dir) };
        names.sort();
        self.note(format!("list {path}: dots={dots} {names:?}"));
    }

    /// Runs `f` in a forked child with the given identity and records its outcome. `f` must
    /// not allocate: the parent may have other threads, whose locks the child inherits held.
    /// Build every C string before calling.
    pub fn as_user(
        &mut self,
        label: &str,
        who: (u32, u32),
        groups: &[u32],
        f: impl FnOnce(RawFd) -> i64,
    ) -> Option<i64> {
        let r = run_as(self.dirfd(), who, groups, f);
        self.rec(&format!("as {}: {label}", who.0), r)
    }
}

/// Forks, drops to `who` with supplementary `groups`, runs `f`, and reports its result.
pub fn run_as(
    dirfd: RawFd,
    who: (u32, u32),
    groups: &[u32],
    f: impl FnOnce(RawFd) -> i64,
) -> Result<i64, i32> {
    let mut pipe = [0i32; 2];
    // SAFETY: pipe fills two descriptors.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: the child only makes system calls and exits with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: in the child: identity changes, the call, a write to the pipe, _exit.
        unsafe {
            libc::close(pipe[0]);
            let out: i64 = if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(who.1) != 0
                || libc::setuid(who.0) != 0
            {
                i64::MIN
            } else {
                let r = f(dirfd);
                if r < 0 {
                    -i64::from(*libc::__errno_location())
                } else {
                    r
                }
            };
            let bytes = out.to_ne_bytes();
            libc::write(pipe[1], bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        }
    }
    // SAFETY: parent: close the write end, read the child's 8 bytes, reap it.
    unsafe {
        libc::close(pipe[1]);
        let mut bytes = [0u8; 8];
        let n = libc::read(pipe[0], bytes.as_mut_ptr().cast(), 8);
        libc::close(pipe[0]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert_eq!(n, 8, "the child reported nothing");
        let out = i64::from_ne_bytes(bytes);
        assert!(out != i64::MIN, "the child could not change its identity");
        if out < 0 { Err((-out) as i32) } else { Ok(out) }
    }
}

/// A short content digest for transcripts.
pub fn digest(data: &[u8]) -> String {
    blake3::hash(data).to_hex()[..16].to_string()
}

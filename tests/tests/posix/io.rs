//! File cases: open, write, truncate, fallocate, copy_file_range, mmap, unlink-while-open,
//! and attribute calls: utimensat, xattr, readdir, statfs.

use super::Case;
use super::harness::{OLD, T, U1, U2, c, errno_name};

pub const CASES: &[Case] = &[
    ("open", "create_modes_and_errors", open_modes),
    ("open", "trunc_and_times", open_trunc),
    ("open", "append_two_descriptors", open_append),
    ("open", "direct", open_direct),
    ("open", "permissions", open_permissions),
    ("write", "clears_suid", write_clears_suid),
    ("write", "sparse_and_large_offsets", write_sparse),
    ("truncate", "up_down_and_times", truncate_cases),
    ("truncate", "errors", truncate_errors),
    ("unlink", "while_open", unlink_while_open),
    ("fallocate", "modes", fallocate_modes),
    ("copy_file_range", "copies", copy_range),
    ("mmap", "shared_write", mmap_shared),
    ("utimensat", "now_omit_exact", utimens_cases),
    ("utimensat", "permissions", utimens_permissions),
    ("xattr", "create_replace_sizes", xattr_cases),
    ("xattr", "permissions_and_times", xattr_permissions),
    ("readdir", "changes_while_listing", readdir_changes),
    ("statfs", "limits", statfs_limits),
];

const MIB: usize = 1024 * 1024;

fn fd(r: Option<i64>) -> i32 {
    r.map(|v| v as i32).unwrap_or(-1)
}

fn open_modes(t: &mut T) {
    for (name, mode) in [("a", 0o777), ("b", 0o600), ("c", 0o4755), ("d", 0)] {
        let f = fd(t.open(name, libc::O_CREAT | libc::O_WRONLY, mode));
        t.close(f);
        t.stat(name);
    }
    t.open("a", libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o644);
    t.open("missing", libc::O_RDONLY, 0);
    t.mkdir("dir", 0o755);
    t.open("dir", libc::O_WRONLY, 0);
    t.open("dir", libc::O_RDWR, 0);
    let d = fd(t.open("dir", libc::O_RDONLY | libc::O_DIRECTORY, 0));
    t.close(d);
    t.open("a", libc::O_RDONLY | libc::O_DIRECTORY, 0);
    t.open("a/x", libc::O_RDONLY, 0);
    t.open("dir", libc::O_CREAT | libc::O_WRONLY, 0o644);
    t.open(&"n".repeat(256), libc::O_CREAT | libc::O_WRONLY, 0o644);
    let f = fd(t.open(&"n".repeat(255), libc::O_CREAT | libc::O_WRONLY, 0o644));
    t.close(f);
    t.symlink("a", "l");
    t.open("l", libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o644);
}

fn open_trunc(t: &mut T) {
    t.file("f", b"some content");
    t.age(&["f", "."]);
    let f = fd(t.open("f", libc::O_WRONLY | libc::O_TRUNC, 0));
    t.close(f);
    t.stat("f");
    t.changed("f");
    t.changed(".");
    // O_TRUNC on an empty file still counts as a change on Linux? The kernel decides.
    t.age(&["f"]);
    let f = fd(t.open("f", libc::O_WRONLY | libc::O_TRUNC, 0));
    t.close(f);
    t.changed("f");
    t.age(&["f", "."]);
    let f = fd(t.open("g", libc::O_CREAT | libc::O_WRONLY, 0o644));
    t.close(f);
    t.changed(".");
    t.changed("f");
    t.file("h", b"data");
    t.age(&["h"]);
    let f = fd(t.open("h", libc::O_WRONLY, 0));
    t.pwrite(f, b"DA", 0);
    t.close(f);
    t.changed("h");
}

fn open_append(t: &mut T) {
    t.file("log", b"start\n");
    let a = fd(t.open("log", libc::O_WRONLY | libc::O_APPEND, 0));
    let b = fd(t.open("log", libc::O_WRONLY | libc::O_APPEND, 0));
    let w = fd(t.open("log", libc::O_WRONLY, 0));
    for i in 0..20 {
        let line = format!("line {i} from {}\n", if i % 2 == 0 { "a" } else { "b" });
        t.write(if i % 2 == 0 { a } else { b }, line.as_bytes());
    }
    // pwrite on an O_APPEND descriptor appends on Linux, whatever the offset.
    t.pwrite(a, b"PW\n", 0);
    t.pwrite(w, b"S", 0);
    t.fstat("a", a);
    for f in [a, b, w] {
        t.close(f);
    }
    t.content("log");
}

fn open_direct(t: &mut T) {
    let f = fd(t.open("d", libc::O_CREAT | libc::O_RDWR | libc::O_DIRECT, 0o644));
    // O_DIRECT wants aligned buffers; a Vec of u64 aligned to 4096 by over-allocating.
    let mut raw = vec![0u8; 3 * 4096];
    let off = raw.as_ptr().align_offset(4096);
    let buf = &mut raw[off..off + 8192];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    // SAFETY: buf is a valid buffer of its length.
    let r = unsafe { libc::pwrite(f, buf.as_ptr().cast(), buf.len(), 4096) };
    t.note(format!(
        "direct pwrite: {}",
        if r < 0 {
            errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            r.to_string()
        }
    ));
    t.close(f);
    t.stat("d");
    t.content("d");
}

fn open_permissions(t: &mut T) {
    t.file("secret", b"s");
    t.chmod("secret", 0o600);
    t.file("readable", b"r");
    t.chmod("readable", 0o644);
    t.file("group", b"g");
    t.chown("group", 0, 1003);
    t.chmod("group", 0o660);
    let (s, r, g) = (c("secret"), c("readable"), c("group"));
    t.as_user("read 0600", U1, &[], |d| unsafe {
        libc::openat(d, s.as_ptr(), libc::O_RDONLY).into()
    });
    t.as_user("read 0644", U1, &[], |d| unsafe {
        libc::openat(d, r.as_ptr(), libc::O_RDONLY).into()
    });
    t.as_user("write 0644", U1, &[], |d| unsafe {
        libc::openat(d, r.as_ptr(), libc::O_WRONLY).into()
    });
    t.as_user("write group member", U1, &[1003], |d| unsafe {
        libc::openat(d, g.as_ptr(), libc::O_WRONLY).into()
    });
    t.as_user("write group non-member", U2, &[], |d| unsafe {
        libc::openat(d, g.as_ptr(), libc::O_WRONLY).into()
    });
    t.mkdir("locked", 0o700);
    t.file("locked/f", b"x");
    t.chmod("locked/f", 0o777);
    let lf = c("locked/f");
    t.as_user("open under 0700 dir", U1, &[], |d| unsafe {
        libc::openat(d, lf.as_ptr(), libc::O_RDONLY).into()
    });
    t.mkdir("pub", 0o777);
    let pf = c("pub/new");
    t.as_user("create in 0777 dir", U1, &[], |d| unsafe {
        libc::openat(d, pf.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o640).into()
    });
    t.stat("pub/new");
}

fn write_clears_suid(t: &mut T) {
    // Not covered: setgid without group-execute written by a non-member of the file's
    // group (Linux 6.x clears it; we keep it — see docs/SEMANTICS.md).
    for (name, mode) in [("a", 0o4777), ("b", 0o2777), ("c", 0o6777), ("d", 0o2757)] {
        t.file(name, b"x");
        t.chmod(name, mode);
        let p = c(name);
        t.as_user(&format!("write {name}"), U1, &[], |d| unsafe {
            let f = libc::openat(d, p.as_ptr(), libc::O_WRONLY);
            if f < 0 {
                return -1;
            }
            libc::write(f, b"y".as_ptr().cast(), 1) as i64
        });
        t.stat(name);
    }
    // The owner's own write also clears setuid (no CAP_FSETID after setuid()).
    t.file("own", b"x");
    t.chown("own", U1.0, U1.1);
    t.chmod("own", 0o4755);
    let p = c("own");
    t.as_user("owner writes", U1, &[], |d| unsafe {
        let f = libc::openat(d, p.as_ptr(), libc::O_WRONLY);
        if f < 0 {
            return -1;
        }
        libc::write(f, b"y".as_ptr().cast(), 1) as i64
    });
    t.stat("own");
    // Root writing keeps the bits.
    t.file("root", b"x");
    t.chmod("root", 0o4755);
    let f = fd(t.open("root", libc::O_WRONLY, 0));
    t.write(f, b"z");
    t.close(f);
    t.stat("root");
}

fn write_sparse(t: &mut T) {
    let f = fd(t.open("s", libc::O_CREAT | libc::O_RDWR, 0o644));
    t.pwrite(f, b"end", 5 * MIB as i64 + 17);
    t.pwrite(f, b"mid", 2 * MIB as i64 - 1);
    t.fstat("s", f);
    t.pread(f, 64, 0);
    t.pread(f, 4096, MIB as i64 - 2048);
    t.pread(f, 10, 2 * MIB as i64 - 4);
    t.pread(f, 100, 5 * MIB as i64);
    t.close(f);
    let f = fd(t.open("far", libc::O_CREAT | libc::O_RDWR, 0o644));
    t.pwrite(f, b"far away", 1 << 40);
    t.fstat("far", f);
    t.pread(f, 16, (1 << 40) - 4);
    t.close(f);
    t.content("s");
}

fn truncate_cases(t: &mut T) {
    let data: Vec<u8> = (0..3 * MIB + 100).map(|i| (i % 253) as u8).collect();
    t.file("f", &data);
    t.age(&["f"]);
    t.truncate("f", (MIB + 10) as i64);
    t.stat("f");
    t.changed("f");
    t.truncate("f", (3 * MIB) as i64);
    t.content("f");
    t.truncate("f", 0);
    t.stat("f");
    t.truncate("f", 5);
    t.content("f");
    // A truncate to the current size still updates mtime and ctime.
    t.age(&["f"]);
    t.truncate("f", 5);
    t.changed("f");
    let f = fd(t.open("f", libc::O_RDWR, 0));
    t.pwrite(f, b"abc", 10);
    // SAFETY: f is open.
    let r = super::harness::res(unsafe { libc::ftruncate(f, 7) }.into());
    t.rec("ftruncate 7", r);
    t.pread(f, 100, 0);
    t.close(f);
}

fn truncate_errors(t: &mut T) {
    t.mkdir("d", 0o755);
    t.truncate("d", 0);
    t.file("f", b"x");
    t.truncate("f", -1);
    t.truncate("missing", 0);
    t.chmod("f", 0o644);
    // truncate(2) by path: through the case directory's descriptor, as the child cannot
    // reach the temp dir by its path.
    let p = c(&format!("/proc/self/fd/{}/f", t.dirfd()));
    t.as_user("truncate 0644", U1, &[], |_| unsafe {
        libc::truncate(p.as_ptr(), 0).into()
    });
}

fn unlink_while_open(t: &mut T) {
    let data: Vec<u8> = (0..MIB + 5000).map(|i| (i % 249) as u8).collect();
    t.file("f", &data);
    let r = fd(t.open("f", libc::O_RDWR, 0));
    let r2 = fd(t.open("f", libc::O_RDONLY, 0));
    t.unlink("f");
    t.stat("f");
    t.fstat("r", r);
    t.pread(r, 8192, (MIB - 100) as i64);
    t.pwrite(r, b"written after unlink", 10);
    t.pwrite(r, b"grows", (2 * MIB) as i64);
    t.fstat("r", r);
    t.close(r);
    t.pread(r2, 30, 5);
    t.pread(r2, 10, (2 * MIB) as i64);
    t.fstat("r2", r2);
    t.close(r2);
    // A new file under the same name is a new inode.
    t.file("f", b"new");
    t.content("f");
}

fn fallocate_modes(t: &mut T) {
    let f = fd(t.open("f", libc::O_CREAT | libc::O_RDWR, 0o644));
    let data: Vec<u8> = (0..(MIB + 8192)).map(|i| (i % 241 + 1) as u8).collect();
    t.pwrite(f, &data, 0);
    let fall = |t: &mut T, mode: i32, off: i64, len: i64| {
        // SAFETY: f is open.
        let r = super::harness::res(unsafe { libc::fallocate(f, mode, off, len) }.into());
        t.rec(&format!("fallocate mode={mode:#x} {off}+{len}"), r);
        t.fstat("f", f);
    };
    fall(t, 0, 0, 4096);
    fall(t, 0, (MIB + 8192) as i64, 100_000);
    t.pread(f, 100, (MIB + 8192) as i64 + 50);
    fall(t, libc::FALLOC_FL_KEEP_SIZE, (3 * MIB) as i64, 4096);
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    fall(t, punch, 4000, 10_000);
    t.pread(f, 20_000, 0);
    fall(t, punch, (MIB - 100) as i64, 300);
    t.pread(f, 1000, (MIB - 500) as i64);
    // Punching past the end changes nothing.
    fall(t, punch, (4 * MIB) as i64, 4096);
    fall(t, libc::FALLOC_FL_PUNCH_HOLE, 0, 4096);
    fall(t, 0, -1, 10);
    fall(t, 0, 0, 0);
    t.close(f);
    t.content("f");
}

fn copy_range(t: &mut T) {
    let data: Vec<u8> = (0..(2 * MIB + 333)).map(|i| (i * 7 % 256) as u8).collect();
    t.file("src", &data);
    let s = fd(t.open("src", libc::O_RDONLY, 0));
    let d = fd(t.open("dst", libc::O_CREAT | libc::O_WRONLY, 0o644));
    let mut total = 0i64;
    let mut off_in: i64 = 100;
    let mut off_out: i64 = 0;
    // copy_file_range may copy less than asked; loop as cp does.
    while total < (MIB * 2) as i64 {
        // SAFETY: both descriptors are open; offsets are valid pointers.
        let n = unsafe {
            libc::copy_file_range(s, &mut off_in, d, &mut off_out, 2 * MIB - total as usize, 0)
        };
        if n <= 0 {
            t.note(format!(
                "copy_file_range: {}",
                if n < 0 {
                    errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
                } else {
                    "eof".into()
                }
            ));
            break;
        }
        total += n as i64;
    }
    t.note(format!("copied {total}"));
    t.close(s);
    t.close(d);
    t.content("dst");
    t.stat("dst");
}

fn mmap_shared(t: &mut T) {
    let len = 3 * 4096 + 100;
    t.file("m", &vec![b'.'; len]);
    let f = fd(t.open("m", libc::O_RDWR, 0));
    // SAFETY: a shared mapping of an open file of `len` bytes; unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        t.note(format!(
            "mmap: {}",
            errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        ));
        t.close(f);
        return;
    }
    // SAFETY: the mapping is len bytes long and writable.
    unsafe {
        let bytes = std::slice::from_raw_parts_mut(map.cast::<u8>(), len);
        bytes[0..5].copy_from_slice(b"hello");
        bytes[4096 * 2 + 7..4096 * 2 + 12].copy_from_slice(b"world");
        bytes[len - 3..].copy_from_slice(b"END");
        let r = super::harness::res(libc::msync(map, len, libc::MS_SYNC).into());
        t.rec("msync", r);
        libc::munmap(map, len);
    }
    t.close(f);
    t.stat("m");
    t.content("m");
}

fn utimens_cases(t: &mut T) {
    t.file("f", b"x");
    let now = libc::UTIME_NOW;
    let omit = libc::UTIME_OMIT;
    t.utimens(
        "f",
        (1_234_567_890, 123_456_789),
        (1_300_000_000, 999_999_999),
        0,
    );
    t.times_exact("f");
    t.utimens("f", (0, omit), (1_400_000_000, 5), 0);
    t.times_exact("f");
    t.utimens("f", (1_500_000_000, 1), (0, omit), 0);
    t.times_exact("f");
    t.age(&["f"]);
    t.utimens("f", (0, omit), (0, omit), 0);
    t.changed("f");
    t.utimens("f", (0, now), (0, omit), 0);
    t.changed("f");
    t.age(&["f"]);
    t.utimens("f", (0, omit), (0, now), 0);
    t.changed("f");
    t.utimens("f", (0, 1_000_000_000), (0, 0), 0);
    t.utimens("f", (-1, 0), (OLD, 0), 0);
    t.times_exact("f");
    t.symlink("f", "l");
    t.utimens(
        "l",
        (1_111_111_111, 1),
        (1_111_111_112, 2),
        libc::AT_SYMLINK_NOFOLLOW,
    );
    t.times_exact("l");
    t.times_exact("f");
    t.mkdir("d", 0o755);
    t.utimens("d", (1_222_222_222, 0), (1_222_222_223, 0), 0);
    t.times_exact("d");
}

fn utimens_permissions(t: &mut T) {
    t.file("w", b"");
    t.chmod("w", 0o666);
    t.file("r", b"");
    t.chmod("r", 0o644);
    t.file("own", b"");
    t.chown("own", U1.0, U1.1);
    t.chmod("own", 0o444);
    let (w, r, own) = (c("w"), c("r"), c("own"));
    let now = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    ];
    let exact = [
        libc::timespec {
            tv_sec: 5,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 6,
            tv_nsec: 0,
        },
    ];
    t.as_user("touch writable", U1, &[], |d| unsafe {
        libc::utimensat(d, w.as_ptr(), now.as_ptr(), 0).into()
    });
    t.as_user("set times on writable", U1, &[], |d| unsafe {
        libc::utimensat(d, w.as_ptr(), exact.as_ptr(), 0).into()
    });
    t.as_user("touch read-only", U1, &[], |d| unsafe {
        libc::utimensat(d, r.as_ptr(), now.as_ptr(), 0).into()
    });
    t.as_user("owner sets times", U1, &[], |d| unsafe {
        libc::utimensat(d, own.as_ptr(), exact.as_ptr(), 0).into()
    });
    t.times_exact("own");
}

fn xattr_cases(t: &mut T) {
    t.file("f", b"x");
    t.setxattr("f", "user.a", b"one", 0);
    t.setxattr("f", "user.a", b"two", libc::XATTR_CREATE);
    t.setxattr("f", "user.b", b"bee", libc::XATTR_REPLACE);
    t.setxattr("f", "user.a", b"three", libc::XATTR_REPLACE);
    t.getxattr("f", "user.a", 0);
    t.getxattr("f", "user.a", 100);
    t.getxattr("f", "user.a", 2);
    t.getxattr("f", "user.missing", 100);
    t.setxattr("f", "user.empty", b"", 0);
    t.getxattr("f", "user.empty", 10);
    t.listxattr("f");
    t.removexattr("f", "user.a");
    t.removexattr("f", "user.a");
    t.listxattr("f");
    // ext4 keeps values within one block unless ea_inode is on; 4000 bytes fit everywhere.
    // (We accept up to the VFS limit of 64 KiB, as tmpfs and XFS do.)
    t.setxattr("f", "user.big", &vec![7u8; 4000], 0);
    t.getxattr("f", "user.big", 4000);
    t.setxattr("f", "user.toobig", &vec![7u8; 65537], 0);
    // Make room again on ext4 (its xattr space is one block) before the long name.
    t.removexattr("f", "user.big");
    t.setxattr("f", &format!("user.{}", "n".repeat(250)), b"v", 0);
    t.setxattr("f", "bogus.ns", b"v", 0);
    t.mkdir("d", 0o755);
    t.setxattr("d", "user.dir", b"d", 0);
    t.getxattr("d", "user.dir", 10);
    t.symlink("f", "l");
    t.setxattr("l", "user.onlink", b"v", 0);
    t.mknod("fifo", libc::S_IFIFO | 0o644, 0);
    t.setxattr("fifo", "user.x", b"v", 0);
    t.file("g", b"");
    t.link("g", "g2");
    t.setxattr("g", "user.shared", b"s", 0);
    t.getxattr("g2", "user.shared", 10);
}

fn xattr_permissions(t: &mut T) {
    t.file("f", b"x");
    t.chmod("f", 0o644);
    t.age(&["f"]);
    t.setxattr("f", "user.t", b"v", 0);
    t.changed("f");
    t.age(&["f"]);
    t.removexattr("f", "user.t");
    t.changed("f");
    // The xattr calls have no *at form and the child cannot reach our temp dir by path:
    // go through the case directory's descriptor, which the child inherits.
    let name = c("user.u");
    let path = c(&format!("/proc/self/fd/{}/f", t.dirfd()));
    t.as_user("setxattr without write permission", U1, &[], |_| unsafe {
        libc::setxattr(path.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0).into()
    });
    t.chmod("f", 0o646);
    t.as_user("setxattr with write permission", U1, &[], |_| unsafe {
        libc::setxattr(path.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0).into()
    });
    t.chmod("f", 0o640);
    t.as_user("getxattr without read permission", U2, &[], |_| unsafe {
        libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) as i64
    });
}

fn readdir_changes(t: &mut T) {
    t.mkdir("d", 0o755);
    for i in 0..300 {
        let f = fd(t.open(&format!("d/f{i:03}"), libc::O_CREAT | libc::O_WRONLY, 0o644));
        // SAFETY: f is open (or -1, which close rejects harmlessly).
        unsafe { libc::close(f) };
    }
    t.mkdir("d/sub", 0o755);
    t.symlink("x", "d/link");
    t.list("d");
    // Remove and add entries while a listing is in progress: every entry that exists for
    // the whole listing must be returned exactly once (POSIX leaves the changed ones open).
    let p = c("d");
    // SAFETY: valid C string.
    let dfd = unsafe { libc::openat(t.dirfd(), p.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    // SAFETY: dfd is a directory descriptor.
    let dir = unsafe { libc::fdopendir(dfd) };
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    let mut n = 0;
    loop {
        // SAFETY: dir is valid; the entry is valid until the next readdir.
        let ent = unsafe { libc::readdir(dir) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        *seen.entry(name).or_default() += 1;
        n += 1;
        if n == 50 {
            for i in (100..300).step_by(2) {
                let victim = c(&format!("d/f{i:03}"));
                // SAFETY: valid C string.
                unsafe { libc::unlinkat(t.dirfd(), victim.as_ptr(), 0) };
            }
            for i in 0..50 {
                let new = c(&format!("d/new{i}"));
                // SAFETY: valid C string.
                let f = unsafe {
                    libc::openat(
                        t.dirfd(),
                        new.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY,
                        0o644,
                    )
                };
                // SAFETY: closing what we opened.
                unsafe { libc::close(f) };
            }
        }
    }
    // SAFETY: dir came from fdopendir.
    unsafe { libc::closedir(dir) };
    let stable_missing: Vec<String> = (0..300)
        .filter(|i| *i < 100 || i % 2 == 1)
        .map(|i| format!("f{i:03}"))
        .filter(|name| seen.get(name) != Some(&1))
        .collect();
    let duplicates: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    t.note(format!(
        "stable entries not seen exactly once: {stable_missing:?}; duplicates: {duplicates:?}"
    ));
    t.list("d");
    t.stat("d");
}

fn statfs_limits(t: &mut T) {
    // SAFETY: statfs is plain old data; fstatfs fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the case directory's descriptor is open.
    let r = unsafe { libc::fstatfs(t.dirfd(), &mut st) };
    t.note(format!("statfs: {r} namelen={}", st.f_namelen));
    // pathconf agrees with statfs.
    // SAFETY: the descriptor is open.
    let name_max = unsafe { libc::fpathconf(t.dirfd(), libc::_PC_NAME_MAX) };
    t.note(format!("pathconf name_max={name_max}"));
}

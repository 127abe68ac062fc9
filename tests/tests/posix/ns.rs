//! Namespace cases: chmod, chown, link, mkdir, mknod, rename, rmdir, symlink, unlink.
//! Each case works in its own empty directory; see `harness.rs` for the recording rules.

use super::Case;
use super::harness::{G_EXTRA, T, U1, U2, c};

pub const CASES: &[Case] = &[
    ("chmod", "bits_and_times", chmod_bits_and_times),
    ("chmod", "non_owner", chmod_non_owner),
    (
        "chmod",
        "sgid_dropped_for_foreign_group",
        chmod_sgid_foreign_group,
    ),
    ("chmod", "every_name_of_a_link", chmod_every_name),
    ("chown", "root", chown_root),
    ("chown", "clears_suid", chown_clears_suid),
    ("chown", "non_root_rules", chown_non_root),
    ("link", "counts_and_times", link_counts),
    ("link", "errors", link_errors),
    ("mkdir", "modes_and_nlink", mkdir_modes),
    ("mkdir", "errors", mkdir_errors),
    ("mkdir", "setgid_dir", mkdir_setgid),
    ("mkdir", "permissions", mkdir_permissions),
    ("mknod", "kinds", mknod_kinds),
    ("mknod", "errors", mknod_errors),
    ("rename", "files", rename_files),
    ("rename", "dirs", rename_dirs),
    ("rename", "flags", rename_flags),
    ("rename", "hard_links_and_self", rename_links),
    ("rename", "sticky", rename_sticky),
    ("rename", "times", rename_times),
    ("rmdir", "errors_and_nlink", rmdir_cases),
    ("symlink", "basics", symlink_basics),
    ("unlink", "errors_and_times", unlink_cases),
    ("unlink", "sticky", unlink_sticky),
];

fn chmod_bits_and_times(t: &mut T) {
    t.file("f", b"x");
    t.age(&["f"]);
    for mode in [0o600, 0o4755, 0o2755, 0o1777, 0o7777, 0] {
        t.chmod("f", mode);
        t.stat("f");
    }
    t.changed("f");
    t.mkdir("d", 0o755);
    t.chmod("d", 0o2770);
    t.stat("d");
    t.chmod("missing", 0o600);
}

fn chmod_non_owner(t: &mut T) {
    t.file("f", b"x");
    t.chmod("f", 0o666);
    let p = c("f");
    t.as_user("chmod f", U1, &[], |d| unsafe {
        libc::fchmodat(d, p.as_ptr(), 0o777, 0).into()
    });
    t.chown("f", U1.0, U1.1);
    t.as_user("chmod own f", U1, &[], |d| unsafe {
        libc::fchmodat(d, p.as_ptr(), 0o700, 0).into()
    });
    t.stat("f");
}

fn chmod_sgid_foreign_group(t: &mut T) {
    t.file("f", b"x");
    // Owned by U1 but in group 0, which U1 is not a member of.
    t.chown("f", U1.0, 0);
    let p = c("f");
    t.as_user("chmod 2755", U1, &[], |d| unsafe {
        libc::fchmodat(d, p.as_ptr(), 0o2755, 0).into()
    });
    t.stat("f");
    t.chown("f", U1.0, G_EXTRA);
    t.as_user("chmod 2755 member", U1, &[G_EXTRA], |d| unsafe {
        libc::fchmodat(d, p.as_ptr(), 0o2755, 0).into()
    });
    t.stat("f");
}

fn chmod_every_name(t: &mut T) {
    t.file("a", b"data");
    t.link("a", "b");
    t.chmod("b", 0o640);
    t.chown("a", 7, 8);
    t.stat("a");
    t.stat("b");
}

fn chown_root(t: &mut T) {
    t.file("f", b"x");
    t.age(&["f"]);
    t.chown("f", 1234, 5678);
    t.stat("f");
    t.changed("f");
    t.chown("f", u32::MAX, 42);
    t.stat("f");
    t.symlink("f", "l");
    t.chown("l", 99, 98);
    t.stat("l");
    t.stat("f");
}

fn chown_clears_suid(t: &mut T) {
    for (name, mode) in [("a", 0o4755), ("b", 0o2755), ("c", 0o2745), ("d", 0o6711)] {
        t.file(name, b"#!/bin/sh\n");
        t.chmod(name, mode);
        t.chown(name, 10, 10);
        t.stat(name);
    }
    t.mkdir("d1", 0o755);
    t.chmod("d1", 0o2755);
    t.chown("d1", 10, 10);
    t.stat("d1");
}

fn chown_non_root(t: &mut T) {
    t.file("f", b"x");
    t.chown("f", U1.0, U1.1);
    t.chmod("f", 0o4755);
    let p = c("f");
    t.as_user("chown to U2", U1, &[G_EXTRA], |d| unsafe {
        libc::fchownat(d, p.as_ptr(), U2.0, u32::MAX, 0).into()
    });
    t.as_user("chgrp to member group", U1, &[G_EXTRA], |d| unsafe {
        libc::fchownat(d, p.as_ptr(), u32::MAX, G_EXTRA, 0).into()
    });
    t.stat("f");
    t.as_user("chgrp to foreign group", U1, &[G_EXTRA], |d| unsafe {
        libc::fchownat(d, p.as_ptr(), u32::MAX, 0, 0).into()
    });
    t.as_user("chown by non-owner", U2, &[], |d| unsafe {
        libc::fchownat(d, p.as_ptr(), u32::MAX, U2.1, 0).into()
    });
    t.as_user("chown -1 -1 by owner", U1, &[], |d| unsafe {
        libc::fchownat(d, p.as_ptr(), u32::MAX, u32::MAX, 0).into()
    });
    t.stat("f");
}

fn link_counts(t: &mut T) {
    t.mkdir("d", 0o755);
    t.file("a", b"hello");
    t.age(&["a", "d"]);
    t.link("a", "d/b");
    t.stat("a");
    t.stat("d/b");
    t.changed("a");
    t.changed("d");
    t.link("d/b", "c");
    t.stat("a");
    t.age(&["a", "d"]);
    t.unlink("d/b");
    t.stat("a");
    t.stat("c");
    t.changed("a");
    t.changed("d");
    t.content("c");
}

fn link_errors(t: &mut T) {
    t.file("a", b"x");
    t.mkdir("d", 0o755);
    t.link("a", "a");
    t.link("d", "d2");
    t.link("missing", "x");
    t.link("a", "missing/x");
    t.link("a", "a/x");
    let long = "n".repeat(256);
    t.link("a", &long);
    t.symlink("a", "s");
    t.link("s", "s2");
    t.stat("s2");
    t.stat("a");
}

fn mkdir_modes(t: &mut T) {
    t.age(&["."]);
    for (name, mode) in [("a", 0o777), ("b", 0o700), ("c", 0o1777), ("d", 0o2755)] {
        t.mkdir(name, mode);
        t.stat(name);
    }
    t.changed(".");
    t.mkdir("a/x", 0o755);
    t.mkdir("a/y", 0o755);
    t.file("a/f", b"");
    t.stat("a");
    t.stat(".");
    t.rmdir("a/x");
    t.stat("a");
}

fn mkdir_errors(t: &mut T) {
    t.mkdir("d", 0o755);
    t.mkdir("d", 0o755);
    t.file("f", b"");
    t.mkdir("f", 0o755);
    t.mkdir("f/x", 0o755);
    t.mkdir("missing/x", 0o755);
    t.mkdir(&"n".repeat(255), 0o755);
    t.mkdir(&"n".repeat(256), 0o755);
    t.mkdir("d/.", 0o755);
    t.symlink("d", "l");
    t.mkdir("l", 0o755);
    t.mkdir("l/sub", 0o755);
    t.stat("d/sub");
}

fn mkdir_setgid(t: &mut T) {
    t.mkdir("g", 0o777);
    t.chown("g", 0, 4242);
    t.chmod("g", 0o2777);
    t.mkdir("g/sub", 0o755);
    t.stat("g/sub");
    t.file("g/f", b"");
    t.stat("g/f");
    let (sub2, f2) = (c("g/usub"), c("g/uf"));
    t.as_user("mkdir in setgid dir", U1, &[], |d| unsafe {
        libc::mkdirat(d, sub2.as_ptr(), 0o755).into()
    });
    t.as_user("create in setgid dir", U1, &[], |d| unsafe {
        libc::openat(d, f2.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o2755).into()
    });
    t.stat("g/usub");
    // A non-member creating a file with setgid asked for: the kernel drops the bit.
    t.stat("g/uf");
}

fn mkdir_permissions(t: &mut T) {
    t.mkdir("ro", 0o755);
    t.mkdir("rw", 0o777);
    t.mkdir("noexec", 0o776);
    let (a, b, n) = (c("ro/x"), c("rw/x"), c("noexec/x"));
    t.as_user("mkdir in 0755", U1, &[], |d| unsafe {
        libc::mkdirat(d, a.as_ptr(), 0o755).into()
    });
    t.as_user("mkdir in 0777", U1, &[], |d| unsafe {
        libc::mkdirat(d, b.as_ptr(), 0o755).into()
    });
    t.as_user("mkdir in 0776", U1, &[], |d| unsafe {
        libc::mkdirat(d, n.as_ptr(), 0o755).into()
    });
    t.stat("rw/x");
    // Group permission through a supplementary group.
    t.mkdir("grp", 0o770);
    t.chown("grp", 0, G_EXTRA);
    let g = c("grp/x");
    t.as_user("mkdir via group", U1, &[G_EXTRA], |d| unsafe {
        libc::mkdirat(d, g.as_ptr(), 0o755).into()
    });
    t.as_user("mkdir without group", U2, &[], |d| unsafe {
        libc::mkdirat(d, g.as_ptr(), 0o755).into()
    });
}

fn mknod_kinds(t: &mut T) {
    t.mknod("fifo", libc::S_IFIFO | 0o640, 0);
    t.mknod("sock", libc::S_IFSOCK | 0o600, 0);
    t.mknod("chr", libc::S_IFCHR | 0o600, libc::makedev(1, 3));
    t.mknod("blk", libc::S_IFBLK | 0o600, libc::makedev(8, 1));
    t.mknod("reg", libc::S_IFREG | 0o600, 0);
    for p in ["fifo", "sock", "chr", "blk", "reg"] {
        t.stat(p);
    }
    t.list(".");
}

fn mknod_errors(t: &mut T) {
    t.mknod("fifo", libc::S_IFIFO | 0o644, 0);
    t.mknod("fifo", libc::S_IFIFO | 0o644, 0);
    t.mkdir("pub", 0o777);
    let (dev, fifo) = (c("pub/dev"), c("pub/fifo"));
    t.as_user("mknod chr", U1, &[], |d| unsafe {
        libc::mknodat(d, dev.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)).into()
    });
    t.as_user("mknod fifo", U1, &[], |d| unsafe {
        libc::mknodat(d, fifo.as_ptr(), libc::S_IFIFO | 0o600, 0).into()
    });
    t.stat("pub/fifo");
}

fn rename_files(t: &mut T) {
    t.file("a", b"aaa");
    t.file("b", b"bbbbbb");
    t.link("b", "b2");
    t.rename("a", "b", 0);
    t.stat("a");
    t.stat("b");
    t.stat("b2");
    t.content("b");
    t.mkdir("d", 0o755);
    t.rename("b", "d", 0);
    t.rename("d", "b", 0);
    t.rename("missing", "x", 0);
    t.rename("b", "missing/x", 0);
    t.rename("b", "b2/x", 0);
    t.rename("b", &"n".repeat(256), 0);
    // Rename an open file; the descriptor keeps working.
    let fd = t.open("b", libc::O_RDWR, 0).unwrap_or(-1) as i32;
    t.rename("b", "d/moved", 0);
    t.pwrite(fd, b"XY", 1);
    t.close(fd);
    t.content("d/moved");
}

fn rename_dirs(t: &mut T) {
    t.mkdir("a", 0o755);
    t.mkdir("a/sub", 0o755);
    t.mkdir("b", 0o755);
    t.mkdir("full", 0o755);
    t.file("full/f", b"");
    t.rename("a", "full", 0);
    t.rename("a", "a/sub/x", 0);
    t.rename("a", "a/sub", 0);
    t.rename("a/sub", "b/sub", 0);
    t.stat("a");
    t.stat("b");
    t.rename("b", "a", 0);
    t.stat("a");
    t.stat(".");
    t.list(".");
    t.rename(".", "x", 0);
    t.rename("a/..", "x", 0);
    t.rename("a", "a/.", 0);
}

fn rename_flags(t: &mut T) {
    let (noreplace, exchange) = (libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE);
    t.file("a", b"aaaa");
    t.file("b", b"bb");
    t.rename("a", "b", noreplace);
    t.rename("a", "c", noreplace);
    t.content("c");
    t.rename("c", "b", exchange);
    t.content("b");
    t.content("c");
    t.rename("b", "missing", exchange);
    t.rename("b", "c", noreplace | exchange);
    t.mkdir("d", 0o755);
    t.mkdir("d/in", 0o755);
    t.rename("c", "d", exchange);
    t.stat("c");
    t.stat("d");
    t.stat("c/in");
    t.rename("b", "b", noreplace);
    t.rename("b", "b", exchange);
}

fn rename_links(t: &mut T) {
    t.file("a", b"x");
    t.link("a", "b");
    t.rename("a", "b", 0);
    t.stat("a");
    t.stat("b");
    t.rename("a", "a", 0);
    t.stat("a");
    t.mkdir("d", 0o755);
    t.rename("d", "d", 0);
    t.stat("d");
}

fn rename_sticky(t: &mut T) {
    t.mkdir("tmp", 0o777);
    t.chmod("tmp", 0o1777);
    t.file("tmp/mine", b"");
    t.chown("tmp/mine", U1.0, U1.1);
    t.file("tmp/theirs", b"");
    t.chown("tmp/theirs", U2.0, U2.1);
    let (mine, theirs, m2, t2) = (
        c("tmp/mine"),
        c("tmp/theirs"),
        c("tmp/mine2"),
        c("tmp/theirs2"),
    );
    t.as_user("rename own in sticky", U1, &[], |d| unsafe {
        libc::renameat(d, mine.as_ptr(), d, m2.as_ptr()).into()
    });
    t.as_user("rename other's in sticky", U1, &[], |d| unsafe {
        libc::renameat(d, theirs.as_ptr(), d, t2.as_ptr()).into()
    });
    t.as_user("replace other's in sticky", U1, &[], |d| unsafe {
        libc::renameat(d, m2.as_ptr(), d, theirs.as_ptr()).into()
    });
    t.list("tmp");
}

fn rename_times(t: &mut T) {
    t.mkdir("s", 0o755);
    t.mkdir("d", 0o755);
    t.file("s/f", b"x");
    t.file("d/g", b"y");
    t.link("d/g", "keep");
    t.age(&["s", "d", "s/f", "keep"]);
    t.rename("s/f", "d/g", 0);
    t.changed("s");
    t.changed("d");
    t.changed_since("d/g", "s/f");
    t.changed("keep");
    t.stat("keep");
}

fn rmdir_cases(t: &mut T) {
    t.mkdir("d", 0o755);
    t.mkdir("d/sub", 0o755);
    t.file("d/f", b"");
    t.rmdir("d");
    t.rmdir("d/f");
    t.rmdir("missing");
    t.rmdir("d/sub/.");
    t.rmdir("d/sub/..");
    t.stat("d");
    t.age(&["d"]);
    t.rmdir("d/sub");
    t.changed("d");
    t.stat("d");
    t.unlink("d/f");
    t.rmdir("d");
    t.stat("d");
    t.mkdir("ro", 0o777);
    t.mkdir("ro/x", 0o777);
    t.chmod("ro", 0o755);
    let x = c("ro/x");
    t.as_user("rmdir in 0755", U1, &[], |d| unsafe {
        libc::unlinkat(d, x.as_ptr(), libc::AT_REMOVEDIR).into()
    });
}

fn symlink_basics(t: &mut T) {
    t.file("f", b"content");
    t.symlink("f", "l");
    t.stat("l");
    t.readlink("l");
    t.content("l");
    t.symlink("f", "l");
    t.symlink("", "empty");
    t.symlink("loop2", "loop1");
    t.symlink("loop1", "loop2");
    t.open("loop1", libc::O_RDONLY, 0);
    t.open("l", libc::O_RDONLY | libc::O_NOFOLLOW, 0);
    t.symlink("dangling-target", "dangling");
    t.stat("dangling");
    t.open("dangling", libc::O_RDONLY, 0);
    t.open("dangling", libc::O_CREAT | libc::O_WRONLY, 0o600);
    t.stat("dangling-target");
    let long = "t".repeat(4000);
    t.symlink(&long, "longlink");
    t.stat("longlink");
    t.readlink("f");
    t.mkdir("d", 0o755);
    t.symlink("../f", "d/up");
    t.content("d/up");
}

fn unlink_cases(t: &mut T) {
    t.mkdir("d", 0o755);
    t.file("d/f", b"x");
    t.unlink("d");
    t.unlink("missing");
    t.unlink("d/f/x");
    t.age(&["d"]);
    t.unlink("d/f");
    t.changed("d");
    t.stat("d/f");
    t.mkdir("ro", 0o777);
    t.file("ro/f", b"");
    t.chmod("ro", 0o755);
    let f = c("ro/f");
    t.as_user("unlink in 0755", U1, &[], |d| unsafe {
        libc::unlinkat(d, f.as_ptr(), 0).into()
    });
}

fn unlink_sticky(t: &mut T) {
    t.mkdir("tmp", 0o777);
    t.chmod("tmp", 0o1777);
    t.file("tmp/theirs", b"");
    t.chown("tmp/theirs", U2.0, U2.1);
    t.file("tmp/mine", b"");
    t.chown("tmp/mine", U1.0, U1.1);
    let (theirs, mine) = (c("tmp/theirs"), c("tmp/mine"));
    t.as_user("unlink other's in sticky", U1, &[], |d| unsafe {
        libc::unlinkat(d, theirs.as_ptr(), 0).into()
    });
    t.as_user("unlink own in sticky", U1, &[], |d| unsafe {
        libc::unlinkat(d, mine.as_ptr(), 0).into()
    });
    t.list("tmp");
}

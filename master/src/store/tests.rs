//! The store's test suite: every operation and every errno of the metadata contract, run
//! against a real SQLite database in a temp dir. Written against the `MetaStore` trait, so a
//! second engine can run the same suite by swapping the fixture.

use super::*;
use crate::plan::NodeView;
use common::types::{
    Caller, ChunkCommit, FileKind, MAX_FILE_SIZE, NAME_MAX, NodeStatus, READDIR_PAGE_MAX,
    SYMLINK_MAX, TimeSet, XATTR_SIZE_MAX,
};
use common::{FsError, Version};
use serde_bytes::ByteBuf;
use std::time::Duration;
use tempfile::TempDir;

/// 1 MiB chunks, as the test clusters use.
const CS: u64 = 1 << 20;
const ROOT: InodeId = InodeId::ROOT;

struct Fx {
    _dir: TempDir,
    store: SqliteStore,
}

impl std::ops::Deref for Fx {
    type Target = SqliteStore;
    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}

fn fx() -> Fx {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("meta.db");
    let record = ClusterRecord {
        id: ClusterId([7; 16]),
        chunk_size: CS,
        key_check: vec![9; 32],
    };
    SqliteStore::create(&path, &record, t(1)).expect("create");
    let store = SqliteStore::open(&path, false).expect("open");
    assert_eq!(store.cluster(), &record);
    Fx { _dir: dir, store }
}

fn t(sec: i64) -> Timespec {
    Timespec { sec, nsec: 5 }
}

fn caller() -> Caller {
    Caller {
        uid: 1000,
        gid: 1000,
        pid: 42,
    }
}

fn new_node(kind: FileKind, perm: u16) -> NewNode {
    NewNode {
        kind,
        perm,
        umask: 0o022,
        rdev: 0,
        symlink_target: None,
        caller: caller(),
    }
}

fn mk(s: &dyn MetaStore, parent: InodeId, name: &str, kind: FileKind) -> Attr {
    let perm = if kind == FileKind::Dir { 0o777 } else { 0o666 };
    s.create(parent, name.as_bytes(), &new_node(kind, perm), t(10))
        .expect("create")
}

fn attr(s: &dyn MetaStore, ino: InodeId) -> Attr {
    s.getattr(ino).expect("getattr")
}

fn errno<T: std::fmt::Debug>(r: FsResult<T>) -> i32 {
    r.expect_err("expected an error").errno()
}

fn names(s: &dyn MetaStore, dir: InodeId) -> Vec<String> {
    let page = s.readdir(dir, 0, READDIR_PAGE_MAX, false).expect("readdir");
    assert!(page.end);
    page.entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect()
}

fn view(id: u64, online: bool, load: u64) -> NodeView {
    NodeView {
        node: NodeId(id),
        addr: format!("127.0.0.1:{}", 7000 + id),
        online,
        last_seen: Some(Duration::ZERO),
        status: NodeStatus {
            capacity_bytes: 1 << 30,
            used_bytes: id * 1000,
            in_flight: load,
            ..NodeStatus::default()
        },
        condition: NodeCondition::Up,
    }
}

/// Registers `n` nodes and returns them as online views.
fn nodes(s: &dyn MetaStore, n: u64) -> Vec<NodeView> {
    (1..=n)
        .map(|id| {
            let v = view(id, true, 0);
            assert_eq!(
                s.register_node(None, &v.addr, t(1)).expect("register"),
                NodeId(id)
            );
            v
        })
        .collect()
}

fn policy(n: u32, w: u32) -> ReplicationPolicy {
    ReplicationPolicy { n, w, r: n + 1 - w }
}

fn gc_rows(s: &SqliteStore) -> i64 {
    s.query_for_tests("SELECT count(*) FROM gc_queue")
}

/// Grants and commits chunk `index` of `ino` on every granted replica.
fn write_chunk(
    s: &dyn MetaStore,
    ino: InodeId,
    index: u64,
    views: &[NodeView],
    end: u64,
) -> WriteGrant {
    let grant = s
        .prepare_write(ino, &[index], views, policy(3, 2))
        .expect("prepare")
        .remove(0);
    commit(
        s,
        ino,
        &grant,
        grant.replicas.iter().map(|r| r.node).collect(),
        end,
    )
    .expect("commit");
    grant
}

fn commit(
    s: &dyn MetaStore,
    ino: InodeId,
    g: &WriteGrant,
    ok: Vec<NodeId>,
    end: u64,
) -> FsResult<Attr> {
    s.commit_write(
        &CommitWrite {
            ino,
            chunks: vec![ChunkCommit {
                index: g.index,
                chunk: g.chunk,
                version: g.version,
                written_end: end,
                ok_nodes: ok,
            }],
            size: g.index * CS + end,
            mtime: t(50),
            clear_suid: false,
        },
        2,
        t(51),
    )
}

// ---- namespace ---------------------------------------------------------------------------

#[test]
fn init_makes_a_root_directory() {
    let s = fx();
    let root = attr(&*s, ROOT);
    assert_eq!(
        (root.kind, root.perm, root.uid, root.gid, root.nlink),
        (FileKind::Dir, 0o755, 0, 0, 2)
    );
    assert_eq!(s.inode_count().expect("count"), 1);
    assert_eq!(names(&*s, ROOT), Vec::<String>::new());
}

#[test]
fn create_sets_owner_mode_links_and_times() {
    let s = fx();
    let f = mk(&*s, ROOT, "f", FileKind::File);
    assert_eq!(
        (f.kind, f.perm, f.uid, f.gid, f.nlink, f.size),
        (FileKind::File, 0o644, 1000, 1000, 1, 0)
    );
    assert_eq!((f.atime, f.mtime, f.ctime), (t(10), t(10), t(10)));
    let d = mk(&*s, ROOT, "d", FileKind::Dir);
    assert_eq!((d.perm, d.nlink), (0o755, 2));
    let root = attr(&*s, ROOT);
    assert_eq!(root.nlink, 3, "a subdirectory's '..' links the parent");
    assert_eq!((root.mtime, root.ctime), (t(10), t(10)));

    // setgid directory: group passes on, subdirectories inherit the bit.
    s.setattr(
        d.ino,
        &SetAttr {
            mode: Some(0o2775),
            gid: Some(77),
            ..SetAttr::default()
        },
        t(11),
    )
    .expect("chmod");
    let inner_file = mk(&*s, d.ino, "x", FileKind::File);
    let inner_dir = mk(&*s, d.ino, "y", FileKind::Dir);
    assert_eq!(inner_file.gid, 77);
    assert_eq!((inner_dir.gid, inner_dir.perm), (77, 0o2755));

    // Symlink: target stored, size = its length, always 0777.
    let mut node = new_node(FileKind::Symlink, 0o600);
    node.symlink_target = Some(ByteBuf::from(b"../some/where".to_vec()));
    let l = s.create(ROOT, b"l", &node, t(12)).expect("symlink");
    assert_eq!((l.kind, l.perm, l.size), (FileKind::Symlink, 0o777, 13));
    assert_eq!(s.readlink(l.ino).expect("readlink"), b"../some/where");

    // Devices and fifos keep rdev.
    let mut node = new_node(FileKind::CharDev, 0o600);
    node.rdev = 0x0103;
    assert_eq!(
        s.create(ROOT, b"null", &node, t(12)).expect("mknod").rdev,
        0x0103
    );
    let fifo = mk(&*s, ROOT, "fifo", FileKind::Fifo);
    assert_eq!(fifo.kind, FileKind::Fifo);
    let sock = mk(&*s, ROOT, "sock", FileKind::Socket);
    assert_eq!(sock.kind, FileKind::Socket);

    // Invalid UTF-8 names are fine, as on Linux.
    let odd = s
        .create(ROOT, b"\xff\xfe", &new_node(FileKind::File, 0o600), t(12))
        .expect("odd name");
    assert_eq!(s.lookup(ROOT, b"\xff\xfe").expect("lookup").ino, odd.ino);
}

#[test]
fn create_errors() {
    let s = fx();
    let f = mk(&*s, ROOT, "f", FileKind::File);
    let long = "n".repeat(NAME_MAX + 1);
    let max = "n".repeat(NAME_MAX);
    mk(&*s, ROOT, &max, FileKind::File);
    let mut long_link = new_node(FileKind::Symlink, 0o777);
    long_link.symlink_target = Some(ByteBuf::from(vec![b'a'; SYMLINK_MAX + 1]));
    let mut empty_link = new_node(FileKind::Symlink, 0o777);
    empty_link.symlink_target = Some(ByteBuf::from(Vec::new()));
    let file = new_node(FileKind::File, 0o644);
    let table: Vec<(InodeId, &[u8], &NewNode, i32)> = vec![
        (ROOT, b"f", &file, libc::EEXIST),
        (ROOT, b".", &file, libc::EEXIST),
        (ROOT, b"..", &file, libc::EEXIST),
        (ROOT, b"", &file, libc::EINVAL),
        (ROOT, b"a/b", &file, libc::EINVAL),
        (ROOT, b"a\0b", &file, libc::EINVAL),
        (ROOT, long.as_bytes(), &file, libc::ENAMETOOLONG),
        (f.ino, b"x", &file, libc::ENOTDIR),
        (InodeId(999), b"x", &file, libc::ENOENT),
        (ROOT, b"ll", &long_link, libc::ENAMETOOLONG),
        (ROOT, b"le", &empty_link, libc::ENOENT),
    ];
    for (parent, name, node, want) in table {
        assert_eq!(
            errno(s.create(parent, name, node, t(2))),
            want,
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
}

#[test]
fn lookup_and_getattr() {
    let s = fx();
    let d = mk(&*s, ROOT, "d", FileKind::Dir);
    let f = mk(&*s, d.ino, "f", FileKind::File);
    assert_eq!(s.lookup(d.ino, b"f").expect("lookup"), f);
    assert_eq!(s.lookup(d.ino, b".").expect("dot").ino, d.ino);
    assert_eq!(s.lookup(d.ino, b"..").expect("dotdot").ino, ROOT);
    assert_eq!(s.lookup(ROOT, b"..").expect("root dotdot").ino, ROOT);
    assert_eq!(errno(s.lookup(d.ino, b"nope")), libc::ENOENT);
    assert_eq!(errno(s.lookup(f.ino, b"x")), libc::ENOTDIR);
    assert_eq!(errno(s.lookup(InodeId(999), b"x")), libc::ENOENT);
    assert_eq!(errno(s.lookup(ROOT, b"a/b")), libc::EINVAL);
    assert_eq!(errno(s.getattr(InodeId(999))), libc::ENOENT);
}

#[test]
fn unlink_and_hard_links() {
    let s = fx();
    let d = mk(&*s, ROOT, "d", FileKind::Dir);
    let f = mk(&*s, ROOT, "f", FileKind::File);
    let linked = s.link(f.ino, d.ino, b"g", t(20)).expect("link");
    assert_eq!((linked.nlink, linked.ctime), (2, t(20)));
    assert_eq!(attr(&*s, d.ino).mtime, t(20));
    s.unlink(ROOT, b"f", t(30)).expect("unlink");
    let after = attr(&*s, f.ino);
    assert_eq!((after.nlink, after.ctime), (1, t(30)));
    assert_eq!(attr(&*s, ROOT).mtime, t(30));
    assert_eq!(errno(s.lookup(ROOT, b"f")), libc::ENOENT);
    s.unlink(d.ino, b"g", t(31)).expect("unlink last name");
    assert_eq!(
        errno(s.getattr(f.ino)),
        libc::ENOENT,
        "freed at the last unlink"
    );

    let table: Vec<(InodeId, &[u8], i32)> = vec![
        (ROOT, b"d", libc::EISDIR),
        (ROOT, b"missing", libc::ENOENT),
        (ROOT, b".", libc::EISDIR),
        (InodeId(999), b"x", libc::ENOENT),
        (ROOT, b"", libc::EINVAL),
    ];
    for (parent, name, want) in table {
        assert_eq!(
            errno(s.unlink(parent, name, t(40))),
            want,
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
}

#[test]
fn link_errors() {
    let s = fx();
    let d = mk(&*s, ROOT, "d", FileKind::Dir);
    let f = mk(&*s, ROOT, "f", FileKind::File);
    mk(&*s, ROOT, "g", FileKind::File);
    assert_eq!(errno(s.link(d.ino, ROOT, b"d2", t(2))), libc::EPERM);
    assert_eq!(errno(s.link(f.ino, ROOT, b"g", t(2))), libc::EEXIST);
    assert_eq!(errno(s.link(f.ino, f.ino, b"x", t(2))), libc::ENOTDIR);
    assert_eq!(errno(s.link(InodeId(999), ROOT, b"x", t(2))), libc::ENOENT);
    s.exec_for_tests(&format!(
        "UPDATE inodes SET nlink = 65000 WHERE ino = {}",
        f.ino.0
    ));
    assert_eq!(errno(s.link(f.ino, ROOT, b"x", t(2))), libc::EMLINK);
}

#[test]
fn rmdir_rules() {
    let s = fx();
    let d = mk(&*s, ROOT, "d", FileKind::Dir);
    mk(&*s, d.ino, "inner", FileKind::File);
    mk(&*s, ROOT, "f", FileKind::File);
    let empty = mk(&*s, ROOT, "empty", FileKind::Dir);
    let table: Vec<(&[u8], i32)> = vec![
        (b"f", libc::ENOTDIR),
        (b"d", libc::ENOTEMPTY),
        (b".", libc::EINVAL),
        (b"..", libc::ENOTEMPTY),
        (b"missing", libc::ENOENT),
    ];
    for (name, want) in table {
        assert_eq!(
            errno(s.rmdir(ROOT, name, t(5))),
            want,
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
    assert_eq!(attr(&*s, ROOT).nlink, 4);
    s.rmdir(ROOT, b"empty", t(6)).expect("rmdir");
    assert_eq!(attr(&*s, ROOT).nlink, 3);
    assert_eq!(attr(&*s, ROOT).mtime, t(6));
    assert_eq!(errno(s.getattr(empty.ino)), libc::ENOENT);
}

fn rename(
    s: &dyn MetaStore,
    p: InodeId,
    n: &str,
    np: InodeId,
    nn: &str,
    flags: RenameFlags,
) -> FsResult<()> {
    s.rename(p, n.as_bytes(), np, nn.as_bytes(), flags, t(60))
}

const PLAIN: RenameFlags = RenameFlags {
    noreplace: false,
    exchange: false,
};
const NOREPLACE: RenameFlags = RenameFlags {
    noreplace: true,
    exchange: false,
};
const EXCHANGE: RenameFlags = RenameFlags {
    noreplace: false,
    exchange: true,
};

#[test]
fn rename_moves_and_replaces() {
    let s = fx();
    let views = nodes(&*s, 3);
    let a = mk(&*s, ROOT, "a", FileKind::Dir);
    let b = mk(&*s, ROOT, "b", FileKind::Dir);
    let f = mk(&*s, a.ino, "f", FileKind::File);
    let victim = mk(&*s, b.ino, "victim", FileKind::File);
    write_chunk(&*s, victim.ino, 0, &views, 10);

    // Over an existing file: the target's inode and chunks go.
    rename(&*s, a.ino, "f", b.ino, "victim", PLAIN).expect("rename over a file");
    assert_eq!(s.lookup(b.ino, b"victim").expect("lookup").ino, f.ino);
    assert_eq!(errno(s.lookup(a.ino, b"f")), libc::ENOENT);
    assert_eq!(errno(s.getattr(victim.ino)), libc::ENOENT);
    assert_eq!(gc_rows(&s), 3, "the replaced file's replicas are queued");
    assert_eq!(attr(&*s, f.ino).ctime, t(60));
    assert_eq!(
        (attr(&*s, a.ino).mtime, attr(&*s, b.ino).mtime),
        (t(60), t(60))
    );

    // A directory changing parents moves one link from the old parent to the new.
    let sub = mk(&*s, a.ino, "sub", FileKind::Dir);
    assert_eq!((attr(&*s, a.ino).nlink, attr(&*s, b.ino).nlink), (3, 2));
    rename(&*s, a.ino, "sub", b.ino, "sub", PLAIN).expect("move dir");
    assert_eq!((attr(&*s, a.ino).nlink, attr(&*s, b.ino).nlink), (2, 3));
    assert_eq!(s.lookup(sub.ino, b"..").expect("dotdot").ino, b.ino);

    // Over an empty directory.
    let empty = mk(&*s, a.ino, "empty", FileKind::Dir);
    rename(&*s, b.ino, "sub", a.ino, "empty", PLAIN).expect("over empty dir");
    assert_eq!(errno(s.getattr(empty.ino)), libc::ENOENT);
    assert_eq!((attr(&*s, a.ino).nlink, attr(&*s, b.ino).nlink), (3, 2));
    assert_eq!(s.lookup(a.ino, b"empty").expect("lookup").ino, sub.ino);
}

#[test]
fn rename_errors() {
    let s = fx();
    let a = mk(&*s, ROOT, "a", FileKind::Dir);
    let sub = mk(&*s, a.ino, "sub", FileKind::Dir);
    let full = mk(&*s, ROOT, "full", FileKind::Dir);
    mk(&*s, full.ino, "x", FileKind::File);
    mk(&*s, ROOT, "f", FileKind::File);
    mk(&*s, ROOT, "g", FileKind::File);
    let table: Vec<(InodeId, &str, InodeId, &str, RenameFlags, i32)> = vec![
        (ROOT, "missing", ROOT, "x", PLAIN, libc::ENOENT),
        (ROOT, "a", a.ino, "inside", PLAIN, libc::EINVAL),
        (ROOT, "a", sub.ino, "deeper", PLAIN, libc::EINVAL),
        (ROOT, "a", ROOT, "full", PLAIN, libc::ENOTEMPTY),
        (ROOT, "a", ROOT, "f", PLAIN, libc::ENOTDIR),
        (ROOT, "f", ROOT, "a", PLAIN, libc::EISDIR),
        (ROOT, "f", ROOT, "g", NOREPLACE, libc::EEXIST),
        (ROOT, "f", ROOT, "nothing", EXCHANGE, libc::ENOENT),
        // The target is an ancestor of the source.
        (a.ino, "sub", ROOT, "a", PLAIN, libc::ENOTEMPTY),
        (a.ino, "sub", ROOT, "a", EXCHANGE, libc::EINVAL),
        (ROOT, "a", sub.ino, "x", EXCHANGE, libc::EINVAL),
        (
            ROOT,
            "f",
            ROOT,
            "g",
            RenameFlags {
                noreplace: true,
                exchange: true,
            },
            libc::EINVAL,
        ),
        (ROOT, "f", ROOT, "a/b", PLAIN, libc::EINVAL),
        (ROOT, ".", ROOT, "z", PLAIN, libc::EINVAL),
        (ROOT, "f", InodeId(999), "z", PLAIN, libc::ENOENT),
    ];
    for (p, n, np, nn, flags, want) in table {
        assert_eq!(
            errno(rename(&*s, p, n, np, nn, flags)),
            want,
            "{n} -> {nn} {flags:?}"
        );
    }
    // Nothing moved.
    assert_eq!(names(&*s, ROOT), ["a", "full", "f", "g"]);
    assert_eq!(names(&*s, a.ino), ["sub"]);
}

#[test]
fn rename_same_inode_is_a_no_op() {
    let s = fx();
    let f = mk(&*s, ROOT, "f", FileKind::File);
    s.link(f.ino, ROOT, b"hard", t(20)).expect("link");
    rename(&*s, ROOT, "f", ROOT, "hard", PLAIN).expect("hard-link rename");
    rename(&*s, ROOT, "f", ROOT, "f", PLAIN).expect("rename onto itself");
    rename(&*s, ROOT, "f", ROOT, "hard", NOREPLACE).expect("same inode even with noreplace");
    assert_eq!(names(&*s, ROOT), ["f", "hard"]);
    let after = attr(&*s, f.ino);
    assert_eq!((after.nlink, after.ctime), (2, t(20)), "nothing changes");
}

#[test]
fn rename_exchange_swaps_and_fixes_links() {
    let s = fx();
    let a = mk(&*s, ROOT, "a", FileKind::Dir);
    let b = mk(&*s, ROOT, "b", FileKind::Dir);
    let dir = mk(&*s, a.ino, "x", FileKind::Dir);
    let file = mk(&*s, b.ino, "y", FileKind::File);
    assert_eq!((attr(&*s, a.ino).nlink, attr(&*s, b.ino).nlink), (3, 2));
    rename(&*s, a.ino, "x", b.ino, "y", EXCHANGE).expect("exchange");
    assert_eq!(s.lookup(a.ino, b"x").expect("x").ino, file.ino);
    assert_eq!(s.lookup(b.ino, b"y").expect("y").ino, dir.ino);
    assert_eq!((attr(&*s, a.ino).nlink, attr(&*s, b.ino).nlink), (2, 3));
    assert_eq!(s.lookup(dir.ino, b"..").expect("dotdot").ino, b.ino);
    assert_eq!(
        (attr(&*s, dir.ino).ctime, attr(&*s, file.ino).ctime),
        (t(60), t(60))
    );
    // Two files in one directory.
    mk(&*s, ROOT, "p", FileKind::File);
    mk(&*s, ROOT, "q", FileKind::File);
    let (p, q) = (
        s.lookup(ROOT, b"p").expect("p").ino,
        s.lookup(ROOT, b"q").expect("q").ino,
    );
    rename(&*s, ROOT, "p", ROOT, "q", EXCHANGE).expect("exchange files");
    assert_eq!(
        (
            s.lookup(ROOT, b"p").expect("p").ino,
            s.lookup(ROOT, b"q").expect("q").ino
        ),
        (q, p)
    );
}

#[test]
fn rename_noreplace_moves_to_a_free_name() {
    let s = fx();
    let f = mk(&*s, ROOT, "f", FileKind::File);
    rename(&*s, ROOT, "f", ROOT, "g", NOREPLACE).expect("noreplace to a free name");
    assert_eq!(s.lookup(ROOT, b"g").expect("g").ino, f.ino);
}

// ---- attributes --------------------------------------------------------------------------

#[test]
fn setattr_mode_owner_times() {
    let s = fx();
    let f = mk(&*s, ROOT, "f", FileKind::File);
    let a = s
        .setattr(
            f.ino,
            &SetAttr {
                mode: Some(0o104755),
                ..SetAttr::default()
            },
            t(20),
        )
        .expect("chmod");
    assert_eq!(
        (a.kind, a.perm, a.ctime, a.mtime),
        (FileKind::File, 0o4755, t(20), t(10))
    );
    // chown clears setuid (and setgid with group-execute) on files, not directories.
    s.setattr(
        f.ino,
        &SetAttr {
            mode: Some(0o6755),
            ..SetAttr::default()
        },
        t(21),
    )
    .expect("chmod");
    let a = s
        .setattr(
            f.ino,
            &SetAttr {
                uid: Some(5),
                gid: Some(6),
                ..SetAttr::default()
            },
            t(22),
        )
        .expect("chown");
    assert_eq!((a.uid, a.gid, a.perm), (5, 6, 0o755));
    let d = mk(&*s, ROOT, "d", FileKind::Dir);
    s.setattr(
        d.ino,
        &SetAttr {
            mode: Some(0o2775),
            ..SetAttr::default()
        },
        t(21),
    )
    .expect("chmod dir");
    let a = s
        .setattr(
            d.ino,
            &SetAttr {
                gid: Some(6),
                ..SetAttr::default()
            },
            t(22),
        )
        .expect("chown dir");
    assert_eq!(a.perm, 0o2775);

    let at = Timespec { sec: -5, nsec: 7 };
    let a = s
        .setattr(
            f.ino,
            &SetAttr {
                atime: Some(TimeSet::At(at)),
                mtime: Some(TimeSet::Now),
                ..SetAttr::default()
            },
            t(23),
        )
        .expect("utimens");
    assert_eq!((a.atime, a.mtime, a.ctime), (at, t(23), t(23)));
    let bad = Timespec {
        sec: 1,
        nsec: 1_000_000_000,
    };
    assert_eq!(
        errno(s.setattr(
            f.ino,
            &SetAttr {
                atime: Some(TimeSet::At(bad)),
                ..SetAttr::default()
            },
            t(24)
        )),
        libc::EINVAL
    );
    // Nothing to change: nothing changes, not even ctime.
    assert_eq!(
        s.setattr(f.ino, &SetAttr::default(), t(25))
            .expect("noop")
            .ctime,
        t(23)
    );
    assert_eq!(
        errno(s.setattr(InodeId(999), &SetAttr::default(), t(25))),
        libc::ENOENT
    );
}

#[test]
fn setattr_size_errors() {
    let s = fx();
    let d = mk(&*s, ROOT, "d", FileKind::Dir);
    let fifo = mk(&*s, ROOT, "p", FileKind::Fifo);
    let f = mk(&*s, ROOT, "f", FileKind::File);
    let size = |n| SetAttr {
        size: Some(n),
        ..SetAttr::default()
    };
    assert_eq!(errno(s.setattr(d.ino, &size(0), t(2))), libc::EISDIR);
    assert_eq!(errno(s.setattr(fifo.ino, &size(0), t(2))), libc::EINVAL);
    assert_eq!(
        errno(s.setattr(f.ino, &size(MAX_FILE_SIZE + 1), t(2))),
        libc::EFBIG
    );
    let a = s
        .setattr(f.ino, &size(MAX_FILE_SIZE), t(3))
        .expect("max size");
    assert_eq!((a.size, a.mtime, a.ctime), (MAX_FILE_SIZE, t(3), t(3)));
    // Same size: mtime and ctime still move, as a truncate on Linux does.
    let a = s
        .setattr(f.ino, &size(MAX_FILE_SIZE), t(4))
        .expect("same size");
    assert_eq!((a.mtime, a.ctime), (t(4), t(4)));
}

#[test]
fn truncate_trims_chunks() {
    let s = fx();
    let views = nodes(&*s, 3);
    let f = mk(&*s, ROOT, "f", FileKind::File);
    for idx in 0..3 {
        write_chunk(&*s, f.ino, idx, &views, CS);
    }
    assert_eq!(attr(&*s, f.ino).size, 3 * CS);
    // Cut into chunk 1: chunk 2 goes, chunk 1 is shortened.
    let a = s
        .setattr(
            f.ino,
            &SetAttr {
                size: Some(CS + 100),
                ..SetAttr::default()
            },
            t(70),
        )
        .expect("truncate");
    assert_eq!((a.size, a.mtime), (CS + 100, t(70)));
    let map = s.chunk_map(f.ino, 0, 10, &views).expect("map");
    assert_eq!(
        map.iter().map(|c| (c.index, c.length)).collect::<Vec<_>>(),
        [(0, CS), (1, 100)]
    );
    assert_eq!(gc_rows(&s), 3);
    // Growing keeps lengths (the new range reads as zeros).
    s.setattr(
        f.ino,
        &SetAttr {
            size: Some(10 * CS),
            ..SetAttr::default()
        },
        t(71),
    )
    .expect("grow");
    let map = s.chunk_map(f.ino, 0, 10, &views).expect("map");
    assert_eq!(
        map.iter().map(|c| (c.index, c.length)).collect::<Vec<_>>(),
        [(0, CS), (1, 100)]
    );
    // Exactly at a chunk boundary: chunk 1 goes whole, chunk 0 keeps its full length.
    s.setattr(
        f.ino,
        &SetAttr {
            size: Some(CS),
            ..SetAttr::default()
        },
        t(72),
    )
    .expect("truncate to boundary");
    let map = s.chunk_map(f.ino, 0, 10, &views).expect("map");
    assert_eq!(
        map.iter().map(|c| (c.index, c.length)).collect::<Vec<_>>(),
        [(0, CS)]
    );
    s.setattr(
        f.ino,
        &SetAttr {
            size: Some(0),
            ..SetAttr::default()
        },
        t(73),
    )
    .expect("truncate to zero");
    assert!(s.chunk_map(f.ino, 0, 10, &views).expect("map").is_empty());
    assert_eq!(gc_rows(&s), 9);
}

#[test]
fn readlink_rules() {
    let s = fx();
    let f = mk(&*s, ROOT, "f", FileKind::File);
    assert_eq!(errno(s.readlink(f.ino)), libc::EINVAL);
    assert_eq!(errno(s.readlink(InodeId(999))), libc::ENOENT);
}

#[test]
fn readdir_pages_in_cookie_order() {
    let s = fx();
    let d = mk(&*s, ROOT, "d", FileKind::Dir);
    for i in 0..10 {
        mk(&*s, d.ino, &format!("e{i}"), FileKind::File);
    }
    let mut seen = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page = s.readdir(d.ino, after, 3, pages == 1).expect("readdir");
        pages += 1;
        assert!(page.entries.len() <= 3);
        for e in &page.entries {
            assert!(e.cookie > after, "cookies increase");
            after = e.cookie;
            assert_eq!(e.attr.is_some(), pages == 2, "plus fills attrs");
            seen.push(String::from_utf8_lossy(&e.name).into_owned());
        }
        if page.end {
            break;
        }
        // An entry removed and another added mid-listing: the new one comes at the end and
        // nothing already listed repeats.
        if pages == 2 {
            s.unlink(d.ino, b"e0", t(20)).expect("unlink");
            mk(&*s, d.ino, "late", FileKind::File);
        }
    }
    let want: Vec<String> = (0..10)
        .map(|i| format!("e{i}"))
        .chain(["late".into()])
        .collect();
    assert_eq!(seen, want);
    assert_eq!(pages, 4);
    // Past the end: an empty final page.
    let page = s.readdir(d.ino, after, 3, false).expect("readdir");
    assert!(page.end && page.entries.is_empty());
    // A zero limit still makes progress.
    assert_eq!(
        s.readdir(d.ino, 0, 0, false)
            .expect("readdir")
            .entries
            .len(),
        1
    );
    let f = s.lookup(d.ino, b"late").expect("lookup");
    assert_eq!(errno(s.readdir(f.ino, 0, 10, false)), libc::ENOTDIR);
    assert_eq!(errno(s.readdir(InodeId(999), 0, 10, false)), libc::ENOENT);
    let page = s.readdir(d.ino, u64::MAX, 10, false).expect("huge cookie");
    assert!(page.end && page.entries.is_empty());
}

#[test]
fn xattr_rules() {
    let s = fx();
    let f = mk(&*s, ROOT, "f", FileKind::File);
    let none = XattrFlags::default();
    let create = XattrFlags {
        create: true,
        replace: false,
    };
    let replace = XattrFlags {
        create: false,
        replace: true,
    };
    s.setxattr(f.ino, b"user.a", b"1", none, t(20))
        .expect("set");
    assert_eq!(attr(&*s, f.ino).ctime, t(20));
    s.setxattr(f.ino, b"trusted.b", b"", create, t(21))
        .expect("create");
    s.setxattr(f.ino, b"user.a", b"2", replace, t(22))
        .expect("replace");
    assert_eq!(s.getxattr(f.ino, b"user.a").expect("get"), b"2");
    assert_eq!(s.getxattr(f.ino, b"trusted.b").expect("get empty"), b"");
    assert_eq!(
        s.listxattr(f.ino).expect("list"),
        [b"trusted.b".to_vec(), b"user.a".to_vec()]
    );
    let long = [b"user.".to_vec(), vec![b'x'; 251]].concat();
    let big = vec![0u8; XATTR_SIZE_MAX + 1];
    let table: Vec<(&[u8], &[u8], XattrFlags, i32)> = vec![
        (b"user.a", b"x", create, libc::EEXIST),
        (b"user.new", b"x", replace, libc::ENODATA),
        (b"system.posix_acl_access", b"x", none, libc::EOPNOTSUPP),
        (b"os2.x", b"x", none, libc::EOPNOTSUPP),
        (b"", b"x", none, libc::EINVAL),
        (&long, b"x", none, libc::ERANGE),
        (b"user.big", &big, none, libc::E2BIG),
        (
            b"user.both",
            b"x",
            XattrFlags {
                create: true,
                replace: true,
            },
            libc::EINVAL,
        ),
    ];
    for (name, value, flags, want) in table {
        assert_eq!(
            errno(s.setxattr(f.ino, name, value, flags, t(30))),
            want,
            "{}",
            String::from_utf8_lossy(name)
        );
    }
    assert_eq!(errno(s.getxattr(f.ino, b"user.missing")), libc::ENODATA);
    assert_eq!(errno(s.getxattr(f.ino, b"system.x")), libc::EOPNOTSUPP);
    assert_eq!(
        errno(s.removexattr(f.ino, b"user.missing", t(31))),
        libc::ENODATA
    );
    s.removexattr(f.ino, b"user.a", t(32)).expect("remove");
    assert_eq!(attr(&*s, f.ino).ctime, t(32));
    assert_eq!(s.listxattr(f.ino).expect("list"), [b"trusted.b".to_vec()]);
    assert_eq!(errno(s.getxattr(InodeId(999), b"user.a")), libc::ENOENT);
    assert_eq!(errno(s.listxattr(InodeId(999))), libc::ENOENT);
    // Xattrs go with the inode.
    s.unlink(ROOT, b"f", t(33)).expect("unlink");
    assert_eq!(s.query_for_tests("SELECT count(*) FROM xattrs"), 0);
}

// ---- sessions and open files -------------------------------------------------------------

#[test]
fn unlinked_open_file_lives_until_the_last_release() {
    let s = fx();
    let views = nodes(&*s, 3);
    let s1 = s.create_session("one", t(1)).expect("session");
    let s2 = s.create_session("two", t(1)).expect("session");
    let f = mk(&*s, ROOT, "f", FileKind::File);
    write_chunk(&*s, f.ino, 0, &views, 100);
    s.open(s1, f.ino).expect("open");
    s.open(s1, f.ino).expect("open twice");
    s.open(s2, f.ino).expect("open in another session");
    s.unlink(ROOT, b"f", t(20)).expect("unlink");
    let orphan = attr(&*s, f.ino);
    assert_eq!(orphan.nlink, 0);
    assert_eq!(
        s.chunk_map(f.ino, 0, 1, &views).expect("map").len(),
        1,
        "data stays readable"
    );
    assert_eq!(gc_rows(&s), 0);
    // Still writable: a new grant and commit work on the orphan.
    write_chunk(&*s, f.ino, 1, &views, 10);
    s.release(s1, f.ino).expect("release");
    s.release(s1, f.ino).expect("release");
    assert!(s.getattr(f.ino).is_ok(), "session two still holds it");
    // The orphan sweep leaves held inodes alone.
    assert_eq!(s.free_orphans().expect("sweep"), Freed::default());
    s.release(s2, f.ino).expect("last release");
    assert_eq!(errno(s.getattr(f.ino)), libc::ENOENT);
    assert_eq!(gc_rows(&s), 6, "both chunks' replicas queued");
    // Release of something not open is harmless.
    s.release(s2, f.ino).expect("idempotent release");
}

#[test]
fn a_repeated_request_is_applied_once() {
    let s = fx();
    let session = s.create_session("c", t(1)).expect("session");
    let op = |seq| common::types::OpId { session, seq };
    let node = new_node(FileKind::File, 0o644);
    // The reply to a create was lost; the client sends it again with the same id.
    let first = with_op(op(1), || s.create(ROOT, b"f", &node, t(2))).expect("create");
    let again = with_op(op(1), || s.create(ROOT, b"f", &node, t(3))).expect("retry");
    assert_eq!(first, again, "the retry gets the first answer, not EEXIST");
    assert_eq!(
        errno(with_op(op(2), || s.create(ROOT, b"f", &node, t(4)))),
        libc::EEXIST,
        "a new request is a new create"
    );
    // Two opens, one release retried: the file must stay open once more.
    with_op(op(3), || s.open(session, first.ino)).expect("open");
    with_op(op(4), || s.open(session, first.ino)).expect("open");
    with_op(op(5), || s.release(session, first.ino)).expect("release");
    with_op(op(5), || s.release(session, first.ino)).expect("release retried");
    with_op(op(6), || s.unlink(ROOT, b"f", t(5))).expect("unlink");
    with_op(op(6), || s.unlink(ROOT, b"f", t(5))).expect("unlink retried, not ENOENT");
    assert!(s.getattr(first.ino).is_ok(), "still open once: kept");
    with_op(op(7), || s.release(session, first.ino)).expect("last release");
    assert_eq!(errno(s.getattr(first.ino)), libc::ENOENT);
    // Ending the session forgets its recorded answers.
    s.end_session(session).expect("end");
    assert_eq!(
        s.query_for_tests("SELECT count(*) FROM op_results"),
        0,
        "answers dropped with the session"
    );
}

#[test]
fn ending_a_session_frees_what_only_it_held() {
    let s = fx();
    let views = nodes(&*s, 3);
    let session = s.create_session("c", t(1)).expect("session");
    let f = mk(&*s, ROOT, "f", FileKind::File);
    let kept = mk(&*s, ROOT, "kept", FileKind::File);
    write_chunk(&*s, f.ino, 0, &views, 100);
    s.open(session, f.ino).expect("open");
    s.open(session, kept.ino).expect("open");
    s.unlink(ROOT, b"f", t(20)).expect("unlink");
    assert_eq!(s.list_sessions().expect("list"), [session]);
    let freed = s.end_session(session).expect("end");
    assert_eq!(
        freed,
        Freed {
            inodes: 1,
            replicas_queued: 3
        }
    );
    assert_eq!(errno(s.getattr(f.ino)), libc::ENOENT);
    assert!(s.getattr(kept.ino).is_ok());
    assert!(s.list_sessions().expect("list").is_empty());
    assert_eq!(
        errno(s.open(session, kept.ino)),
        libc::EBADF,
        "the session is gone"
    );
    assert_eq!(errno(s.open(SessionId(999), kept.ino)), libc::EBADF);
    let other = s.create_session("d", t(1)).expect("session");
    assert_ne!(other, session, "session ids are never reused");
    assert_eq!(errno(s.open(other, InodeId(999))), libc::ENOENT);
}

#[test]
fn create_open_creates_and_holds_the_file_in_one_step() {
    let s = fx();
    let session = s.create_session("c", t(1)).expect("session");
    let node = new_node(FileKind::File, 0o644);
    let op = |seq| common::types::OpId { session, seq };
    let f = with_op(op(1), || s.create_open(session, ROOT, b"f", &node, t(2))).expect("create");
    assert_eq!((f.kind, f.perm, f.nlink), (FileKind::File, 0o644, 1));
    assert_eq!(s.lookup(ROOT, b"f").expect("lookup"), f);
    // A lost reply retried gets the first answer and is not a second open.
    let again = with_op(op(1), || s.create_open(session, ROOT, b"f", &node, t(3)));
    assert_eq!(again.expect("retry"), f);
    assert_eq!(
        s.query_for_tests("SELECT count FROM open_files"),
        1,
        "open once, not twice"
    );
    // Held open: an unlink keeps it until the release.
    s.unlink(ROOT, b"f", t(4)).expect("unlink");
    assert_eq!(attr(&*s, f.ino).nlink, 0);
    s.release(session, f.ino).expect("release");
    assert_eq!(errno(s.getattr(f.ino)), libc::ENOENT);
    // The errors of a create, and the session check of an open, with nothing left behind.
    mk(&*s, ROOT, "x", FileKind::File);
    let exists = s.create_open(session, ROOT, b"x", &node, t(5));
    assert_eq!(errno(exists), libc::EEXIST);
    let gone = s.create_open(SessionId(999), ROOT, b"y", &node, t(5));
    assert_eq!(errno(gone), libc::EBADF);
    assert_eq!(errno(s.lookup(ROOT, b"y")), libc::ENOENT, "rolled back");
    let dir = s.create_open(session, ROOT, b"d", &new_node(FileKind::Dir, 0o755), t(5));
    assert_eq!(errno(dir), libc::EINVAL, "regular files only");
    assert_eq!(s.query_for_tests("SELECT count(*) FROM open_files"), 0);
}

#[test]
fn a_durable_store_releases_without_a_flush_and_stays_durable_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("meta.db");
    let record = ClusterRecord {
        id: ClusterId([7; 16]),
        chunk_size: CS,
        key_check: vec![9; 32],
    };
    SqliteStore::create(&path, &record, t(1)).expect("create");
    let s = SqliteStore::open(&path, true).expect("open durable");
    let session = s.create_session("c", t(1)).expect("session");
    let f = s
        .create_open(session, ROOT, b"f", &new_node(FileKind::File, 0o644), t(2))
        .expect("create");
    s.unlink(ROOT, b"f", t(3)).expect("unlink");
    let op = common::types::OpId { session, seq: 1 };
    with_op(op, || s.release(session, f.ino)).expect("release");
    assert_eq!(
        errno(s.getattr(f.ino)),
        libc::ENOENT,
        "freed by the release"
    );
    with_op(op, || s.release(session, f.ino)).expect("retried once");
    // Every later transaction flushes again: the connection is back at FULL (2).
    assert_eq!(s.query_for_tests("PRAGMA synchronous"), 2);
    mk(&s, ROOT, "g", FileKind::File);
    drop(s);
    let reopened = SqliteStore::open(&path, true).expect("reopen");
    assert!(reopened.lookup(ROOT, b"g").is_ok());
    assert_eq!(errno(reopened.getattr(f.ino)), libc::ENOENT);
}

#[test]
fn reads_see_every_answered_commit_and_run_beside_a_writer() {
    let s = fx();
    // Reads on the read connections see each commit as soon as it returned.
    for i in 0..50 {
        let name = format!("f{i}");
        let a = mk(&*s, ROOT, &name, FileKind::File);
        assert_eq!(s.lookup(ROOT, name.as_bytes()).expect("lookup"), a);
        s.unlink(ROOT, name.as_bytes(), t(11)).expect("unlink");
        assert_eq!(errno(s.lookup(ROOT, name.as_bytes())), libc::ENOENT);
    }
    // A read while the writing connection is held (as by a commit in flight) does not wait.
    let writer = s.store.hold_writer_for_tests();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| tx.send(s.getattr(ROOT).map(|a| a.ino)).expect("send"));
        let got = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a read must not wait for the writer");
        assert_eq!(got.expect("getattr"), ROOT);
    });
    drop(writer);
}

#[test]
fn orphans_left_by_a_crash_are_swept() {
    let s = fx();
    let session = s.create_session("c", t(1)).expect("session");
    let f = mk(&*s, ROOT, "f", FileKind::File);
    s.open(session, f.ino).expect("open");
    s.unlink(ROOT, b"f", t(20)).expect("unlink");
    // As if the open-file rows vanished without a release (e.g. an admin cleanup).
    s.exec_for_tests("DELETE FROM open_files");
    assert_eq!(s.free_orphans().expect("sweep").inodes, 1);
    assert_eq!(errno(s.getattr(f.ino)), libc::ENOENT);
}

// ---- chunks, versions, replicas ----------------------------------------------------------

#[test]
fn prepare_commit_and_chunk_map_versions() {
    let s = fx();
    let mut views = nodes(&*s, 4);
    let f = mk(&*s, ROOT, "f", FileKind::File);

    // A new chunk: version 1 on the N nodes with most free space; a hole until committed.
    let g1 = s
        .prepare_write(f.ino, &[0], &views, policy(3, 2))
        .expect("prepare")
        .remove(0);
    assert_eq!((g1.index, g1.version, g1.length), (0, Version(1), 0));
    let placed: Vec<u64> = g1.replicas.iter().map(|r| r.node.0).collect();
    assert_eq!(placed, [1, 2, 3]);
    assert!(
        s.chunk_map(f.ino, 0, 10, &views).expect("map").is_empty(),
        "never committed: hole"
    );

    // Commit on two of three (W = 2): the third stays behind.
    let a = commit(&*s, f.ino, &g1, vec![NodeId(1), NodeId(2), NodeId(2)], 4096).expect("commit");
    assert_eq!((a.size, a.mtime, a.ctime), (4096, t(50), t(51)));
    let map = s.chunk_map(f.ino, 0, 10, &views).expect("map");
    assert_eq!(map.len(), 1);
    assert_eq!(
        (map[0].chunk, map[0].version, map[0].length),
        (g1.chunk, Version(1), 4096)
    );
    assert_eq!(
        map[0].replicas.iter().map(|r| r.node.0).collect::<Vec<_>>(),
        [1, 2]
    );

    // Rewrite: version bumps, only current online replicas take the write.
    let g2 = s
        .prepare_write(f.ino, &[0], &views, policy(3, 2))
        .expect("prepare")
        .remove(0);
    assert_eq!(
        (g2.chunk, g2.version, g2.length),
        (g1.chunk, Version(2), 4096)
    );
    assert_eq!(
        g2.replicas.iter().map(|r| r.node.0).collect::<Vec<_>>(),
        [1, 2]
    );

    // Validation: nothing is applied when a commit is refused.
    let mut bad = g2.clone();
    bad.version = Version(3);
    assert_eq!(
        errno(commit(&*s, f.ino, &bad, vec![NodeId(1), NodeId(2)], 10)),
        libc::EINVAL
    );
    let mut bad = g2.clone();
    bad.index = 1;
    assert_eq!(
        errno(commit(&*s, f.ino, &bad, vec![NodeId(1), NodeId(2)], 10)),
        libc::EINVAL
    );
    let other = mk(&*s, ROOT, "other", FileKind::File);
    assert_eq!(
        errno(commit(&*s, other.ino, &g2, vec![NodeId(1), NodeId(2)], 10)),
        libc::EINVAL
    );
    // Acknowledgements from nodes without a replica do not count toward W.
    assert!(matches!(
        commit(&*s, f.ino, &g2, vec![NodeId(1), NodeId(4)], 8192),
        Err(FsError::Unavailable(_))
    ));
    assert!(matches!(
        commit(&*s, f.ino, &g2, vec![NodeId(1)], 8192),
        Err(FsError::Unavailable(_))
    ));
    assert_eq!(
        errno(commit(&*s, f.ino, &g2, vec![NodeId(1), NodeId(2)], CS + 1)),
        libc::EINVAL
    );
    assert_eq!(attr(&*s, f.ino).size, 4096);
    assert_eq!(
        s.chunk_map(f.ino, 0, 1, &views).expect("map")[0].version,
        Version(1)
    );

    commit(&*s, f.ino, &g2, vec![NodeId(1), NodeId(2)], 8192).expect("commit v2");
    let map = s.chunk_map(f.ino, 0, 1, &views).expect("map");
    assert_eq!((map[0].version, map[0].length), (Version(2), 8192));
    // A late commit of an older grant never moves anything backwards.
    commit(&*s, f.ino, &g1, vec![NodeId(1), NodeId(2)], 100).expect("late commit");
    let map = s.chunk_map(f.ino, 0, 1, &views).expect("map");
    assert_eq!((map[0].version, map[0].length), (Version(2), 8192));
    assert_eq!(
        attr(&*s, f.ino).size,
        8192,
        "size only grows through commits"
    );

    // A current replica goes offline: with W = 2 and one left, writes are refused.
    views[1].online = false;
    assert!(matches!(
        s.prepare_write(f.ino, &[0], &views, policy(3, 2)),
        Err(FsError::Unavailable(_))
    ));
    // With W = 1 the online one takes it, and never a fresh empty node.
    let g3 = s
        .prepare_write(f.ino, &[0], &views, policy(3, 1))
        .expect("prepare")
        .remove(0);
    assert_eq!(
        g3.replicas.iter().map(|r| r.node.0).collect::<Vec<_>>(),
        [1]
    );
    // Reads list online replicas first.
    let map = s.chunk_map(f.ino, 0, 1, &views).expect("map");
    assert_eq!(
        map[0].replicas.iter().map(|r| r.node.0).collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn prepare_write_errors_and_placement_shortfalls() {
    let s = fx();
    let mut views = nodes(&*s, 3);
    let f = mk(&*s, ROOT, "f", FileKind::File);
    let d = mk(&*s, ROOT, "d", FileKind::Dir);
    let l = mk(&*s, ROOT, "p", FileKind::Fifo);
    let p = policy(3, 2);
    assert_eq!(errno(s.prepare_write(d.ino, &[0], &views, p)), libc::EISDIR);
    assert_eq!(errno(s.prepare_write(l.ino, &[0], &views, p)), libc::EINVAL);
    assert_eq!(
        errno(s.prepare_write(InodeId(999), &[0], &views, p)),
        libc::ENOENT
    );
    assert_eq!(
        errno(s.prepare_write(f.ino, &[MAX_FILE_SIZE / CS], &views, p)),
        libc::EFBIG
    );
    assert_eq!(
        errno(s.prepare_write(f.ino, &[u64::MAX], &views, p)),
        libc::EFBIG
    );
    let many: Vec<u64> = (0..=MAX_CHUNKS_PER_REQUEST).collect();
    assert_eq!(
        errno(s.prepare_write(f.ino, &many, &views, p)),
        libc::EINVAL
    );
    assert!(
        s.prepare_write(f.ino, &[], &views, p)
            .expect("nothing")
            .is_empty()
    );
    // Duplicate indexes get one grant.
    let grants = s
        .prepare_write(f.ino, &[4, 4, 5], &views, p)
        .expect("prepare");
    assert_eq!(grants.iter().map(|g| g.index).collect::<Vec<_>>(), [4, 5]);

    // Too few nodes up: Unavailable. Enough up but full: NoSpace.
    views[0].online = false;
    views[1].online = false;
    assert!(matches!(
        s.prepare_write(f.ino, &[0], &views, p),
        Err(FsError::Unavailable(_))
    ));
    let full: Vec<NodeView> = (1..=3)
        .map(|id| {
            let mut v = view(id, true, 0);
            v.status.used_bytes = v.status.capacity_bytes - 10;
            v
        })
        .collect();
    assert_eq!(
        s.prepare_write(f.ino, &[0], &full, p),
        Err(FsError::NoSpace)
    );
    // Nothing was allocated by the refused calls.
    assert_eq!(s.query_for_tests("SELECT count(*) FROM chunks"), 2);
}

#[test]
fn chunk_map_ranges_order_and_lost_chunks() {
    let s = fx();
    let mut views = nodes(&*s, 3);
    let f = mk(&*s, ROOT, "f", FileKind::File);
    for idx in [0, 2, 5] {
        write_chunk(&*s, f.ino, idx, &views, 10);
    }
    let idx = |m: Vec<ChunkLoc>| m.iter().map(|c| c.index).collect::<Vec<_>>();
    assert_eq!(
        idx(s.chunk_map(f.ino, 0, 10, &views).expect("map")),
        [0, 2, 5]
    );
    assert_eq!(idx(s.chunk_map(f.ino, 1, 4, &views).expect("map")), [2]);
    assert!(
        s.chunk_map(f.ino, u64::MAX, u64::MAX, &views)
            .expect("far")
            .is_empty()
    );
    assert_eq!(errno(s.chunk_map(InodeId(999), 0, 1, &views)), libc::ENOENT);

    // Least loaded first among online replicas; offline ones last.
    views[0].status.in_flight = 5;
    views[1].status.in_flight = 1;
    views[2].online = false;
    let map = s.chunk_map(f.ino, 0, 1, &views).expect("map");
    assert_eq!(
        map[0].replicas.iter().map(|r| r.node.0).collect::<Vec<_>>(),
        [2, 1, 3]
    );
    assert_eq!(map[0].replicas[0].load, 1000);

    // Bad replicas are dropped from the map and queued for deletion while others remain;
    // the last one is kept on disk (not queued) and the chunk is listed with no replica.
    let chunk = map[0].chunk;
    assert!(s.mark_bad_replica(chunk, NodeId(1)).expect("bad"));
    assert!(s.mark_bad_replica(chunk, NodeId(2)).expect("bad"));
    assert_eq!(gc_rows(&s), 2);
    assert!(s.mark_bad_replica(chunk, NodeId(3)).expect("bad"));
    assert_eq!(gc_rows(&s), 2);
    let map = s.chunk_map(f.ino, 0, 1, &views).expect("map");
    assert_eq!(map.len(), 1, "a committed chunk is never a hole");
    assert!(map[0].replicas.is_empty());
    assert!(
        !s.mark_bad_replica(ChunkId(999), NodeId(1))
            .expect("unknown")
    );
    // And a write to it is refused rather than placed on fresh empty replicas.
    assert!(matches!(
        s.prepare_write(f.ino, &[0], &views, policy(3, 1)),
        Err(FsError::Unavailable(_))
    ));

    // Bad-replica evidence (issue 12): an admin's clear after the node vouched gives the
    // replica back and cancels its queued deletion.
    let record = s
        .replica_record(chunk, NodeId(1))
        .expect("record")
        .expect("row");
    assert!(
        record.bad && record.version == record.confirmed,
        "{record:?}"
    );
    assert_eq!(
        s.replica_record(ChunkId(999), NodeId(1)).expect("none"),
        None
    );
    assert_eq!(
        s.clear_bad_replica(chunk, NodeId(1)).expect("clear"),
        Some(true)
    );
    assert_eq!(gc_rows(&s), 1, "node 1's queued deletion is cancelled");
    assert_eq!(
        s.clear_bad_replica(chunk, NodeId(1)).expect("again"),
        Some(false)
    );
    assert_eq!(
        s.clear_bad_replica(ChunkId(999), NodeId(1)).expect("none"),
        None
    );
    let map = s.chunk_map(f.ino, 0, 1, &views).expect("map");
    assert_eq!(
        map[0].replicas.iter().map(|r| r.node.0).collect::<Vec<_>>(),
        [1]
    );
}

#[test]
fn commit_write_clears_suid_and_checks_the_inode() {
    let s = fx();
    let views = nodes(&*s, 3);
    let f = mk(&*s, ROOT, "f", FileKind::File);
    s.setattr(
        f.ino,
        &SetAttr {
            mode: Some(0o6775),
            ..SetAttr::default()
        },
        t(2),
    )
    .expect("chmod");
    let g = s
        .prepare_write(f.ino, &[0], &views, policy(3, 2))
        .expect("prepare")
        .remove(0);
    let ok: Vec<NodeId> = g.replicas.iter().map(|r| r.node).collect();
    let mut c = CommitWrite {
        ino: f.ino,
        chunks: vec![ChunkCommit {
            index: 0,
            chunk: g.chunk,
            version: g.version,
            written_end: 5,
            ok_nodes: ok,
        }],
        size: 5,
        mtime: t(40),
        clear_suid: true,
    };
    let a = s.commit_write(&c, 2, t(41)).expect("commit");
    assert_eq!((a.perm, a.size, a.mtime, a.ctime), (0o775, 5, t(40), t(41)));
    c.size = MAX_FILE_SIZE + 1;
    assert_eq!(errno(s.commit_write(&c, 2, t(42))), libc::EFBIG);
    c.size = 5;
    c.ino = InodeId(999);
    assert_eq!(errno(s.commit_write(&c, 2, t(42))), libc::ENOENT);
    // A size-only commit (no chunks) is allowed.
    let a = s
        .commit_write(
            &CommitWrite {
                ino: f.ino,
                chunks: vec![],
                size: 9,
                mtime: t(43),
                clear_suid: false,
            },
            2,
            t(44),
        )
        .expect("size only");
    assert_eq!(a.size, 9);
}

// ---- chunkservers ------------------------------------------------------------------------

#[test]
fn node_registration_keeps_ids() {
    let s = fx();
    let a = s.register_node(None, "h:1", t(1)).expect("new");
    let b = s.register_node(None, "h:2", t(1)).expect("new");
    assert_ne!(a, b);
    assert_eq!(s.register_node(Some(a), "h:9", t(2)).expect("known"), a);
    assert_eq!(
        s.register_node(Some(NodeId(50)), "h:50", t(2))
            .expect("kept"),
        NodeId(50)
    );
    assert_eq!(
        s.list_nodes().expect("list"),
        [
            (a, "h:9".to_string()),
            (b, "h:2".to_string()),
            (NodeId(50), "h:50".to_string())
        ]
    );
    assert_eq!(
        errno(s.register_node(Some(NodeId(0)), "h", t(2))),
        libc::EINVAL
    );
    assert_eq!(
        errno(s.register_node(Some(NodeId(u64::MAX)), "h", t(2))),
        libc::EINVAL
    );
    // New ids continue past explicitly kept ones.
    assert_eq!(s.register_node(None, "h:3", t(3)).expect("new"), NodeId(51));
}

#[test]
fn gc_is_handed_out_in_batches_and_never_hits_live_replicas() {
    let s = fx();
    let views = nodes(&*s, 3);
    let f = mk(&*s, ROOT, "f", FileKind::File);
    let mut chunks = Vec::new();
    for idx in 0..3 {
        chunks.push(write_chunk(&*s, f.ino, idx, &views, 10).chunk);
    }
    s.unlink(ROOT, b"f", t(20)).expect("unlink");
    assert_eq!(gc_rows(&s), 9);
    assert_eq!(s.take_gc(NodeId(1), 2).expect("gc"), chunks[..2]);
    assert_eq!(s.take_gc(NodeId(1), 2).expect("gc"), chunks[2..]);
    assert!(s.take_gc(NodeId(1), 2).expect("gc").is_empty());
    assert_eq!(gc_rows(&s), 6);
    // A queue entry for a replica the chunk table still counts on is dropped, not handed out.
    let g = mk(&*s, ROOT, "g", FileKind::File);
    let live = write_chunk(&*s, g.ino, 0, &views, 10).chunk;
    s.exec_for_tests(&format!(
        "INSERT INTO gc_queue (chunk, node) VALUES ({}, 2)",
        live.0
    ));
    let handed = s.take_gc(NodeId(2), GC_BATCH).expect("gc");
    assert!(!handed.contains(&live));
    assert_eq!(handed.len(), 3);
    assert_eq!(
        s.chunk_map(g.ino, 0, 1, &views).expect("map")[0]
            .replicas
            .len(),
        3
    );
}

#[test]
fn report_chunks_deletion_rules() {
    let s = fx();
    let views = nodes(&*s, 4);
    let f = mk(&*s, ROOT, "f", FileKind::File);
    // Chunk 0 committed at v2 on nodes 1 and 2; node 3 stayed at v1 (stale).
    let g = write_chunk(&*s, f.ino, 0, &views, 10);
    assert_eq!(
        g.replicas.iter().map(|r| r.node.0).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let g2 = s
        .prepare_write(f.ino, &[0], &views, policy(3, 2))
        .expect("prepare")
        .remove(0);
    commit(&*s, f.ino, &g2, vec![NodeId(1), NodeId(2)], 10).expect("commit");
    // Chunk 1 granted but not committed: replica rows at version 0 (a write in flight).
    let pending = s
        .prepare_write(f.ino, &[1], &views, policy(3, 2))
        .expect("prepare")
        .remove(0);
    let held = |chunk: ChunkId, v: u64| HeldChunk {
        chunk,
        version: Version(v),
    };

    // Node 1: current copy kept; an unknown chunk deleted.
    let del = s
        .reconcile_chunks(NodeId(1), &[held(g.chunk, 2), held(ChunkId(999), 1)])
        .expect("r1");
    assert_eq!(del, [ChunkId(999)]);
    // Node 1 also holds the in-flight chunk at any version: kept.
    assert!(
        s.reconcile_chunks(NodeId(1), &[held(pending.chunk, 1)])
            .expect("r1b")
            .is_empty()
    );
    // Node 3: its stale copy goes and its replica row with it.
    assert_eq!(
        s.reconcile_chunks(NodeId(3), &[held(g.chunk, 1)])
            .expect("r3"),
        [g.chunk]
    );
    assert_eq!(
        s.query_for_tests(&format!(
            "SELECT count(*) FROM replicas WHERE chunk = {} AND node = 3",
            g.chunk.0
        )),
        0
    );
    // Node 4 holds a copy of chunk 0 it was never given: deleted.
    assert_eq!(
        s.reconcile_chunks(NodeId(4), &[held(g.chunk, 2)])
            .expect("r4"),
        [g.chunk]
    );
    // A node that reports a lower version than it confirmed lost data: deleted too.
    assert_eq!(
        s.reconcile_chunks(NodeId(2), &[held(g.chunk, 1)])
            .expect("r2"),
        [g.chunk]
    );
    // Reads still have node 1.
    let map = s.chunk_map(f.ino, 0, 1, &views).expect("map");
    assert_eq!(
        map[0].replicas.iter().map(|r| r.node.0).collect::<Vec<_>>(),
        [1]
    );
}

#[test]
fn summary_counts() {
    let s = fx();
    let views = nodes(&*s, 3);
    let d = mk(&*s, ROOT, "d", FileKind::Dir);
    let f = mk(&*s, d.ino, "f", FileKind::File);
    let g = mk(&*s, d.ino, "g", FileKind::File);
    write_chunk(&*s, f.ino, 0, &views, 100);
    // Chunk on only two current replicas.
    let part = s
        .prepare_write(g.ino, &[0], &views, policy(3, 2))
        .expect("prepare")
        .remove(0);
    commit(&*s, g.ino, &part, vec![NodeId(1), NodeId(2)], 7).expect("commit");
    // Granted, never committed: not counted.
    s.prepare_write(g.ino, &[1], &views, policy(3, 2))
        .expect("prepare");
    let online: HashSet<NodeId> = [NodeId(1), NodeId(3)].into();
    let c = s.summary(&online, 3).expect("summary");
    assert_eq!((c.files, c.dirs, c.chunks, c.logical_bytes), (2, 2, 2, 107));
    assert_eq!((c.under_replicated, c.lost), (2, 0));
    assert_eq!(c.replicas_per_node.get(&NodeId(1)), Some(&3));
    let c = s.summary(&HashSet::from([NodeId(3)]), 3).expect("summary");
    assert_eq!(
        (c.under_replicated, c.lost),
        (2, 1),
        "chunk g/0 has no current copy online"
    );
    let c = s
        .summary(&views.iter().map(|v| v.node).collect(), 3)
        .expect("summary");
    assert_eq!((c.under_replicated, c.lost), (1, 0));
}

#[test]
fn node_contents_pages_through_a_nodes_replicas() {
    let s = fx();
    let views = nodes(&*s, 4);
    let f = mk(&*s, ROOT, "f", FileKind::File);
    let g = mk(&*s, ROOT, "g", FileKind::File);
    // Node 4 is registered but never offered for placement: it holds nothing.
    let f0 = write_chunk(&*s, f.ino, 0, &views[..3], 100);
    let g0 = s
        .prepare_write(g.ino, &[0], &views[..3], policy(3, 2))
        .expect("prepare")
        .remove(0);
    commit(&*s, g.ino, &g0, vec![NodeId(1), NodeId(2)], 7).expect("commit");
    let g1 = s
        .prepare_write(g.ino, &[1], &views[..3], policy(3, 2))
        .expect("prepare")
        .remove(0);
    assert!(s.mark_bad_replica(f0.chunk, NodeId(2)).expect("mark bad"));

    // Pages of one replica each, resumed from the last chunk id, until a short page.
    let mut all = Vec::new();
    let mut after = ChunkId(0);
    loop {
        let page = s.node_contents(NodeId(3), after, 1).expect("page");
        assert!(page.len() <= 1);
        let Some(last) = page.last() else { break };
        after = last.chunk;
        all.extend(page);
    }
    assert_eq!(
        all,
        vec![
            NodeReplica {
                chunk: f0.chunk,
                ino: f.ino,
                index: 0,
                version: f0.version,
                current: true
            },
            // Granted and written but not in the commit's acknowledgements: stale.
            NodeReplica {
                chunk: g0.chunk,
                ino: g.ino,
                index: 0,
                version: Version(0),
                current: false
            },
            NodeReplica {
                chunk: g1.chunk,
                ino: g.ino,
                index: 1,
                version: Version(0),
                current: false
            },
        ]
    );
    // The bad replica is listed (the node holds it) but not current.
    let on2 = s.node_contents(NodeId(2), ChunkId(0), 100).expect("node 2");
    assert_eq!(on2.len(), 3);
    assert_eq!((on2[0].chunk, on2[0].current), (f0.chunk, false));
    assert_eq!((on2[1].chunk, on2[1].current), (g0.chunk, true));
    // A node with nothing, an unknown node, a cursor past every id.
    assert!(
        s.node_contents(NodeId(4), ChunkId(0), 100)
            .expect("node 4")
            .is_empty()
    );
    assert!(
        s.node_contents(NodeId(99), ChunkId(0), 100)
            .expect("node 99")
            .is_empty()
    );
    assert!(
        s.node_contents(NodeId(1), ChunkId(u64::MAX), 100)
            .expect("past")
            .is_empty()
    );
    assert!(
        s.node_contents(NodeId(1), ChunkId(0), 0)
            .expect("limit 0")
            .is_empty()
    );
}

#[test]
fn locks_are_saved_per_inode_and_dropped_with_their_session() {
    let s = fx();
    let s1 = s.create_session("one", t(1)).expect("session");
    let s2 = s.create_session("two", t(1)).expect("session");
    let f = mk(&*s, ROOT, "f", FileKind::File);
    let g = mk(&*s, ROOT, "g", FileKind::File);
    let lock = |session, ino, owner, start, end, write| LockRecord {
        session,
        ino,
        owner,
        start,
        end,
        write,
        pid: 7,
    };
    let on_f = [
        lock(s1, f.ino, u64::MAX - 3, 0, u64::MAX, false),
        lock(s2, f.ino, 1, 10, 20, false),
    ];
    s.save_locks(f.ino, &on_f).expect("save f");
    s.save_locks(g.ino, &[lock(s1, g.ino, 2, 5, 5, true)])
        .expect("save g");
    assert_eq!(s.load_locks().expect("load").len(), 3);
    // Saving replaces the inode's set; u64 fields come back bit for bit.
    s.save_locks(g.ino, &[]).expect("clear g");
    assert_eq!(s.load_locks().expect("load"), on_f.to_vec());
    // A lock of another inode is refused, not stored under the wrong one.
    assert!(s.save_locks(g.ino, &on_f[..1]).is_err());
    s.end_session(s1).expect("end session");
    assert_eq!(s.load_locks().expect("load"), on_f[1..].to_vec());
}

// ---- replication goals -------------------------------------------------------------------

#[test]
fn goals_are_inherited_set_recursively_and_bounded() {
    let s = fx();
    let d = mk(&*s, ROOT, "d", FileKind::Dir);
    let before = mk(&*s, d.ino, "before", FileKind::File);
    assert_eq!(s.goal(d.ino).expect("goal"), None, "follows the cluster");
    // A directory and everything already beneath it.
    let sub = mk(&*s, d.ino, "sub", FileKind::Dir);
    let deep = mk(&*s, sub.ino, "deep", FileKind::File);
    assert_eq!(s.set_goal(d.ino, 2).expect("set"), 4);
    for ino in [d.ino, before.ino, sub.ino, deep.ino] {
        assert_eq!(s.goal(ino).expect("goal"), Some(2));
    }
    assert_eq!(s.goal(ROOT).expect("goal"), None, "the parent is untouched");
    // New inodes of every kind inherit their parent's goal.
    let f = mk(&*s, sub.ino, "new", FileKind::File);
    let sd = mk(&*s, sub.ino, "newdir", FileKind::Dir);
    let fifo = mk(&*s, sub.ino, "fifo", FileKind::Fifo);
    let mut link = new_node(FileKind::Symlink, 0o777);
    link.symlink_target = Some(ByteBuf::from(b"x".to_vec()));
    let l = s.create(sub.ino, b"link", &link, t(10)).expect("symlink");
    for ino in [f.ino, sd.ino, fifo.ino, l.ino] {
        assert_eq!(s.goal(ino).expect("goal"), Some(2));
    }
    // A file alone; a subtree lowered again.
    assert_eq!(s.set_goal(f.ino, 5).expect("set"), 1);
    assert_eq!(s.set_goal(sub.ino, 1).expect("set"), 6);
    assert_eq!(s.goal(f.ino).expect("goal"), Some(1));
    assert_eq!(s.goal(before.ino).expect("goal"), Some(2));
    // Bounds and missing inodes.
    assert_eq!(errno(s.set_goal(d.ino, 0)), libc::EINVAL);
    assert_eq!(
        errno(s.set_goal(d.ino, common::types::MAX_GOAL + 1)),
        libc::EINVAL
    );
    assert_eq!(errno(s.set_goal(InodeId(9999), 2)), libc::ENOENT);
    assert_eq!(errno(s.goal(InodeId(9999))), libc::ENOENT);
}

#[test]
fn goals_drive_placement_quorum_repair_and_trim() {
    let s = fx();
    let views = nodes(&*s, 4);
    let two = mk(&*s, ROOT, "two", FileKind::Dir);
    let four = mk(&*s, ROOT, "four", FileKind::Dir);
    let one = mk(&*s, ROOT, "one", FileKind::Dir);
    s.set_goal(two.ino, 2).expect("set");
    s.set_goal(four.ino, 4).expect("set");
    s.set_goal(one.ino, 1).expect("set");
    let a = mk(&*s, two.ino, "a", FileKind::File);
    let b = mk(&*s, four.ino, "b", FileKind::File);
    let c = mk(&*s, one.ino, "c", FileKind::File);
    let grant = |ino| {
        s.prepare_write(ino, &[0], &views, policy(3, 2))
            .expect("prepare")
            .remove(0)
    };
    // A new chunk is placed on the file's goal of nodes; the quorum is min(W, goal).
    let (ga, gb, gc) = (grant(a.ino), grant(b.ino), grant(c.ino));
    assert_eq!((ga.replicas.len(), ga.quorum), (2, 2));
    assert_eq!((gb.replicas.len(), gb.quorum), (4, 2));
    assert_eq!((gc.replicas.len(), gc.quorum), (1, 1));
    let all = |g: &WriteGrant| g.replicas.iter().map(|r| r.node).collect::<Vec<_>>();
    commit(&*s, a.ino, &ga, all(&ga), 10).expect("commit");
    commit(&*s, b.ino, &gb, all(&gb), 10).expect("commit");
    // The commit helper asks for W = 2; a goal-1 file needs one acknowledgement.
    commit(&*s, c.ino, &gc, all(&gc), 10).expect("commit of a goal-1 file");
    assert!(s.under_goal_chunks(3, 10).expect("under").is_empty());
    assert!(s.over_goal_chunks(3, 10).expect("over").is_empty());
    let online: HashSet<NodeId> = views.iter().map(|v| v.node).collect();
    assert_eq!(s.summary(&online, 3).expect("summary").under_replicated, 0);

    // Raise "two" to 3: its chunk is under its goal, with the goal in the planner's input.
    s.set_goal(two.ino, 3).expect("set");
    let under = s.under_goal_chunks(3, 10).expect("under");
    assert_eq!(under.len(), 1);
    assert_eq!((under[0].chunk, under[0].goal), (ga.chunk, 3));
    assert_eq!(s.summary(&online, 3).expect("summary").under_replicated, 1);

    // Lower "four" to 2: over its goal; trims stop at the goal.
    s.set_goal(four.ino, 2).expect("set");
    let over = s.over_goal_chunks(3, 10).expect("over");
    assert_eq!(over.len(), 1);
    assert_eq!((over[0].chunk, over[0].goal), (gb.chunk, 2));
    let holders = all(&gb);
    assert!(s.trim_replica(gb.chunk, holders[0], 3).expect("trim"));
    assert!(s.trim_replica(gb.chunk, holders[1], 3).expect("trim"));
    assert!(
        !s.trim_replica(gb.chunk, holders[2], 3).expect("trim"),
        "never below the goal"
    );
    assert!(!s.trim_replica(gb.chunk, NodeId(99), 3).expect("trim"));
    assert!(s.over_goal_chunks(3, 10).expect("over").is_empty());
    assert_eq!(
        gc_rows(&s),
        2,
        "the dropped replicas are queued for deletion"
    );
    // The trimmed nodes are no longer listed for reads.
    let map = s.chunk_map(b.ino, 0, 1, &views).expect("map");
    assert_eq!(map[0].replicas.len(), 2);
}

#[test]
fn late_replicas_are_confirmed_only_at_the_current_version() {
    let s = fx();
    let views = nodes(&*s, 3);
    let f = mk(&*s, ROOT, "f", FileKind::File);
    let g1 = write_chunk(&*s, f.ino, 0, &views, 10);
    // The next grant commits with two of three: node 3 finished late.
    let g2 = s
        .prepare_write(f.ino, &[0], &views, policy(3, 2))
        .expect("prepare")
        .remove(0);
    let late = g2.replicas[2].node;
    let acked: Vec<NodeId> = g2.replicas[..2].iter().map(|r| r.node).collect();
    commit(&*s, f.ino, &g2, acked.clone(), 20).expect("commit");
    let current = |s: &Fx| {
        s.chunk_map(f.ino, 0, 1, &views).expect("map")[0]
            .replicas
            .len()
    };
    assert_eq!(current(&s), 2, "stale until reported");
    // Wrong base, or a version that is not the committed one: refused.
    assert!(
        s.confirm_replicas(g2.chunk, g2.version, Version(g2.version.0 + 1), &[late])
            .expect("confirm")
            .is_empty()
    );
    assert!(
        s.confirm_replicas(g2.chunk, Version(0), g1.version, &[late])
            .expect("confirm")
            .is_empty()
    );
    assert_eq!(
        errno(s.confirm_replicas(g2.chunk, g2.version, g2.version, &[late])),
        libc::EINVAL
    );
    // The right report makes it current; a repeat changes nothing.
    assert_eq!(
        s.confirm_replicas(g2.chunk, g2.base, g2.version, &[late])
            .expect("confirm"),
        vec![late]
    );
    assert_eq!(current(&s), 3);
    assert!(
        s.confirm_replicas(g2.chunk, g2.base, g2.version, &[late])
            .expect("confirm")
            .is_empty()
    );
    // A report that arrives after the chunk moved on is refused: the replica stays stale.
    let g3 = s
        .prepare_write(f.ino, &[0], &views, policy(3, 2))
        .expect("prepare")
        .remove(0);
    let late3 = g3.replicas[2].node;
    commit(
        &*s,
        f.ino,
        &g3,
        g3.replicas[..2].iter().map(|r| r.node).collect(),
        30,
    )
    .expect("commit");
    let g4 = s
        .prepare_write(f.ino, &[0], &views, policy(3, 2))
        .expect("prepare")
        .remove(0);
    assert_eq!(g4.replicas.len(), 2, "the stale replica is not granted");
    commit(
        &*s,
        f.ino,
        &g4,
        g4.replicas.iter().map(|r| r.node).collect(),
        40,
    )
    .expect("commit");
    assert!(
        s.confirm_replicas(g3.chunk, g3.base, g3.version, &[late3])
            .expect("confirm")
            .is_empty()
    );
    assert_eq!(current(&s), 2);
}

#[test]
fn node_files_names_the_file_of_every_replica() {
    let s = fx();
    let views = nodes(&*s, 3);
    let d = mk(&*s, ROOT, "dir", FileKind::Dir);
    let sub = mk(&*s, d.ino, "sub", FileKind::Dir);
    let f = mk(&*s, sub.ino, "f", FileKind::File);
    let g = mk(&*s, ROOT, "g", FileKind::File);
    let open = mk(&*s, ROOT, "open", FileKind::File);
    let f0 = write_chunk(&*s, f.ino, 0, &views, 100);
    let f1 = write_chunk(&*s, f.ino, 1, &views, 100);
    let g0 = write_chunk(&*s, g.ino, 0, &views, 100);
    let o0 = write_chunk(&*s, open.ino, 0, &views, 100);
    // g gets a second name that sorts first by parent (the root is the lowest inode, so
    // give the link a name in the root that sorts before "g").
    s.link(g.ino, ROOT, b"a-link-to-g", t(11)).expect("link");
    // "open" is unlinked while a session holds it: its chunks stay, it has no name.
    let session = s.create_session("c", t(1)).expect("session");
    s.open(session, open.ino).expect("open");
    s.unlink(ROOT, b"open", t(12)).expect("unlink");

    let mut all = Vec::new();
    let mut after = ChunkId(0);
    loop {
        let page = s.node_files(NodeId(1), after, 2).expect("page");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.replica.chunk;
        all.extend(page);
    }
    let got: Vec<(ChunkId, Option<String>)> = all
        .iter()
        .map(|e| {
            (
                e.replica.chunk,
                e.path
                    .as_ref()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (f0.chunk, Some("/dir/sub/f".to_string())),
            (f1.chunk, Some("/dir/sub/f".to_string())),
            (g0.chunk, Some("/a-link-to-g".to_string())),
            (o0.chunk, None),
        ]
    );
    // The replica fields are node_contents' own.
    let plain = s
        .node_contents(NodeId(1), ChunkId(0), 100)
        .expect("contents");
    assert_eq!(
        all.iter().map(|e| e.replica).collect::<Vec<_>>(),
        plain,
        "same replicas, same order"
    );
    assert!(
        s.node_files(NodeId(99), ChunkId(0), 100)
            .expect("unknown node")
            .is_empty()
    );
}

// ---- node conditions and re-replication ----------------------------------------------------

#[test]
fn dead_nodes_stop_counting_and_trims_never_go_below_the_goal() {
    let s = fx();
    let views = nodes(&*s, 4);
    let f = mk(&*s, InodeId::ROOT, "f", FileKind::File);
    // Placement takes the three nodes with the most free space: 1, 2, 3.
    let g = write_chunk(&*s, f.ino, 0, &views, 100);
    let holders: Vec<NodeId> = g.replicas.iter().map(|r| r.node).collect();
    assert_eq!(holders.len(), 3);
    assert!(s.under_goal_chunks(3, 10).expect("scan").is_empty());
    assert_eq!(s.under_goal_totals(3).expect("totals"), (0, 0));

    // Node 1 declared dead: the chunk is below its goal by one, its bytes counted once.
    s.set_node_condition(NodeId(1), NodeCondition::Dead, t(60))
        .expect("dead");
    assert_eq!(
        s.node_conditions().expect("conditions"),
        vec![(NodeId(1), NodeCondition::Dead, 60)]
    );
    let under = s.under_goal_chunks(3, 10).expect("scan");
    assert_eq!(under.len(), 1);
    assert_eq!((under[0].goal, under[0].length), (3, 100));
    assert_eq!(
        under[0].replicas.len(),
        3,
        "every row is listed, dead or not"
    );
    assert_eq!(s.under_goal_totals(3).expect("totals"), (1, 100));

    // The copy to node 4 restores the goal.
    assert!(s.record_copy(g.chunk, NodeId(4), g.version).expect("copy"));
    assert!(s.under_goal_chunks(3, 10).expect("scan").is_empty());
    assert!(s.over_goal_chunks(3, 10).expect("scan").is_empty());

    // Node 1 is back: four counting replicas, one surplus.
    s.set_node_condition(NodeId(1), NodeCondition::Up, t(70))
        .expect("up");
    assert!(s.node_conditions().expect("conditions").is_empty());
    assert_eq!(s.over_goal_chunks(3, 10).expect("scan").len(), 1);
    assert!(s.trim_replica(g.chunk, NodeId(1), 3).expect("trim"));
    assert_eq!(gc_rows(&s), 1, "the trimmed replica is queued for deletion");
    // At the goal now: no further trim, whichever node is named.
    for node in [2, 3, 4] {
        assert!(!s.trim_replica(g.chunk, NodeId(node), 3).expect("trim"));
    }
    // A dead node's copy never counts toward the others: with node 2 dead, trimming
    // node 3 would leave two counting replicas, so it is refused.
    s.set_node_condition(NodeId(2), NodeCondition::Dead, t(80))
        .expect("dead");
    assert!(!s.trim_replica(g.chunk, NodeId(3), 2 + 1).expect("trim"));
    // Maintenance still counts.
    s.set_node_condition(NodeId(2), NodeCondition::Maintenance, t(90))
        .expect("maintenance");
    assert!(s.under_goal_chunks(3, 10).expect("scan").is_empty());
}

#[test]
fn a_draining_node_stops_counting_and_its_drain_completes_when_copied() {
    let s = fx();
    let views = nodes(&*s, 4);
    let f = mk(&*s, InodeId::ROOT, "f", FileKind::File);
    let g = write_chunk(&*s, f.ino, 0, &views, 100);
    let holders: Vec<NodeId> = g.replicas.iter().map(|r| r.node).collect();
    assert_eq!(holders.len(), 3);
    let spare = (1..=4)
        .map(NodeId)
        .find(|n| !holders.contains(n))
        .expect("a node without the chunk");
    let drained = holders[0];
    // Not draining: nothing to wait for; no chunk on the spare node either.
    assert_eq!(s.drain_remaining(drained, 3).expect("remaining"), 0);
    s.set_node_condition(drained, NodeCondition::Draining, t(60))
        .expect("draining");
    assert_eq!(
        s.node_conditions().expect("conditions"),
        vec![(drained, NodeCondition::Draining, 60)],
        "the condition survives a reload"
    );
    // Its replica no longer counts: the chunk is below goal and the drain waits for it.
    assert_eq!(s.under_goal_chunks(3, 10).expect("scan").len(), 1);
    assert_eq!(s.drain_remaining(drained, 3).expect("remaining"), 1);
    assert_eq!(s.drain_remaining(spare, 3).expect("remaining"), 0);
    // Its replica is never trimmed, nor one that would take the others below goal.
    for node in 1..=4 {
        assert!(!s.trim_replica(g.chunk, NodeId(node), 3).expect("trim"));
    }
    // The copy to the spare node restores the goal without it: the drain is complete, and
    // the draining replica is still not surplus (it counts for nothing).
    assert!(s.record_copy(g.chunk, spare, g.version).expect("copy"));
    assert!(s.under_goal_chunks(3, 10).expect("scan").is_empty());
    assert_eq!(s.drain_remaining(drained, 3).expect("remaining"), 0);
    assert!(s.over_goal_chunks(3, 10).expect("scan").is_empty());
    s.set_node_condition(drained, NodeCondition::Decommissioned, t(70))
        .expect("decommissioned");
    assert_eq!(
        s.node_conditions().expect("conditions"),
        vec![(drained, NodeCondition::Decommissioned, 70)]
    );
    assert!(s.under_goal_chunks(3, 10).expect("scan").is_empty());
    assert!(s.over_goal_chunks(3, 10).expect("scan").is_empty());
    // Undrained: it counts again, one surplus replica to trim.
    s.set_node_condition(drained, NodeCondition::Up, t(80))
        .expect("up");
    assert_eq!(s.over_goal_chunks(3, 10).expect("scan").len(), 1);
}

#[test]
fn rebalancer_queries_measure_replicas_and_find_movable_chunks() {
    let s = fx();
    let views = nodes(&*s, 4);
    let f = mk(&*s, InodeId::ROOT, "f", FileKind::File);
    let g = write_chunk(&*s, f.ino, 0, &views, 100);
    let holders: Vec<NodeId> = g.replicas.iter().map(|r| r.node).collect();
    let spare = (1..=4)
        .map(NodeId)
        .find(|n| !holders.contains(n))
        .expect("a node without the chunk");
    let used = s.replica_bytes().expect("bytes");
    for n in &holders {
        assert_eq!(used.get(n), Some(&100), "{n}");
    }
    assert_eq!(used.get(&spare), None);
    // From a holder to the spare: the chunk, with all its rows and its goal.
    let movable = s.movable_chunks(holders[0], spare, 3, 10).expect("movable");
    assert_eq!(movable.len(), 1);
    assert_eq!((movable[0].chunk, movable[0].goal), (g.chunk, 3));
    assert_eq!(movable[0].replicas.len(), 3);
    // Not to a node that holds it, nor from one that does not.
    assert!(
        s.movable_chunks(holders[0], holders[1], 3, 10)
            .expect("m")
            .is_empty()
    );
    assert!(
        s.movable_chunks(spare, holders[0], 3, 10)
            .expect("m")
            .is_empty()
    );
    // The move: copy, then the source's replica goes (the goal is kept on the others).
    assert!(s.record_copy(g.chunk, spare, g.version).expect("copy"));
    assert!(s.trim_replica(g.chunk, holders[0], 3).expect("trim"));
    let used = s.replica_bytes().expect("bytes");
    assert_eq!(used.get(&spare), Some(&100));
    assert_eq!(used.get(&holders[0]), None);
}

//! Directory trees for the mount tests: a sample source tree to copy in, deterministic file
//! contents, and a snapshot of a tree (kinds, modes, sizes, link counts, times, content
//! digests, symlink targets) so two trees can be compared field by field with a readable
//! list of differences rather than one opaque "not equal".

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rand::{RngCore as _, SeedableRng as _};

/// `len` bytes of deterministic pseudo-random content: incompressible, and different for
/// every `seed`, so a misplaced block can never compare equal by accident.
pub fn pattern_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; len];
    rng.fill_bytes(&mut buf);
    buf
}

/// What a snapshot records about one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `file`, `dir`, `symlink`, `fifo`, `socket`, `chardev` or `blockdev`.
    pub kind: &'static str,
    /// Permission bits (07777).
    pub perm: u32,
    /// Size in bytes (files and symlinks).
    pub size: u64,
    pub nlink: u64,
    /// mtime as (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// BLAKE3 of the contents (files only).
    pub digest: Option<[u8; 32]>,
    /// Symlink target (symlinks only).
    pub target: Option<PathBuf>,
}

/// Which fields a comparison looks at. Contents, kinds and symlink targets are always
/// compared.
#[derive(Clone, Copy, Debug)]
pub struct Compare {
    pub perm: bool,
    pub mtime: bool,
    /// Link counts of non-directories (hard links).
    pub file_nlink: bool,
    /// Link counts of directories (2 + subdirectories on Linux filesystems).
    pub dir_nlink: bool,
}

impl Compare {
    /// Everything `cp -a` promises to carry over.
    pub const ALL: Compare = Compare {
        perm: true,
        mtime: true,
        file_nlink: true,
        dir_nlink: true,
    };
    /// Contents, kinds, modes and link counts, not times (for trees built by different
    /// sequences of calls).
    pub const NO_TIMES: Compare = Compare {
        perm: true,
        mtime: false,
        file_nlink: true,
        dir_nlink: true,
    };
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "chardev"
    } else {
        "blockdev"
    }
}

/// Records every entry under `root` (not `root` itself), keyed by path relative to `root`.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
            let kind = kind_of(meta.file_type());
            let digest = (kind == "file").then(|| {
                let bytes =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                *blake3::hash(&bytes).as_bytes()
            });
            let target = (kind == "symlink").then(|| {
                std::fs::read_link(&path)
                    .unwrap_or_else(|e| panic!("readlink {}: {e}", path.display()))
            });
            if kind == "dir" {
                stack.push(path.clone());
            }
            let rel = path
                .strip_prefix(root)
                .expect("entries lie under the root")
                .to_path_buf();
            out.insert(
                rel,
                Entry {
                    kind,
                    perm: meta.permissions().mode() & 0o7777,
                    size: if kind == "dir" { 0 } else { meta.len() },
                    nlink: meta.nlink(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    digest,
                    target,
                },
            );
        }
    }
    out
}

/// The differences between two snapshots under `how`, one line each.
pub fn differences(
    a: &BTreeMap<PathBuf, Entry>,
    b: &BTreeMap<PathBuf, Entry>,
    how: Compare,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (path, ea) in a {
        let Some(eb) = b.get(path) else {
            diffs.push(format!("{}: only in the first tree", path.display()));
            continue;
        };
        let p = path.display();
        if ea.kind != eb.kind {
            diffs.push(format!("{p}: kind {} vs {}", ea.kind, eb.kind));
            continue;
        }
        if ea.size != eb.size {
            diffs.push(format!("{p}: size {} vs {}", ea.size, eb.size));
        }
        if ea.digest != eb.digest {
            diffs.push(format!("{p}: contents differ"));
        }
        if ea.target != eb.target {
            diffs.push(format!(
                "{p}: symlink target {:?} vs {:?}",
                ea.target, eb.target
            ));
        }
        // A symlink's own mode is always 0777 on Linux and not settable; skip it.
        if how.perm && ea.kind != "symlink" && ea.perm != eb.perm {
            diffs.push(format!("{p}: mode {:o} vs {:o}", ea.perm, eb.perm));
        }
        let check_nlink = if ea.kind == "dir" {
            how.dir_nlink
        } else {
            how.file_nlink
        };
        if check_nlink && ea.nlink != eb.nlink {
            diffs.push(format!("{p}: nlink {} vs {}", ea.nlink, eb.nlink));
        }
        if how.mtime && ea.mtime != eb.mtime {
            diffs.push(format!("{p}: mtime {:?} vs {:?}", ea.mtime, eb.mtime));
        }
    }
    for path in b.keys() {
        if !a.contains_key(path) {
            diffs.push(format!("{}: only in the second tree", path.display()));
        }
    }
    diffs
}

/// Panics with a list of differences (at most 30 shown) unless the trees match under `how`.
pub fn assert_same_tree(a: &Path, b: &Path, how: Compare) {
    let sa = snapshot(a);
    let sb = snapshot(b);
    assert!(
        !sa.is_empty(),
        "{} is empty: nothing was compared",
        a.display()
    );
    let diffs = differences(&sa, &sb, how);
    if !diffs.is_empty() {
        panic!(
            "trees {} and {} differ in {} ways:\n{}",
            a.display(),
            b.display(),
            diffs.len(),
            diffs
                .iter()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Builds the sample tree that mount tests copy in: this repository's `common/` crate,
/// `/usr/include/linux` when the machine has it (about 800 headers), and a generated part
/// that every machine has: a few hundred small files in nested directories, files that cross
/// 1 MiB chunk boundaries, an empty file and an empty directory, odd names (spaces, UTF-8,
/// a leading dash), varied modes, hard links and relative, absolute and dangling symlinks.
/// Returns the number of entries in the tree.
pub fn build_sample_tree(dest: &Path) -> usize {
    std::fs::create_dir_all(dest).expect("create sample tree root");
    let common = Path::new(env!("CARGO_MANIFEST_DIR")).join("../common");
    crate::sh(&format!(
        "mkdir -p {d}/common && cp -a {c}/src {c}/Cargo.toml {d}/common/",
        d = crate::shell::q(dest),
        c = crate::shell::q(&common)
    ));
    let headers = Path::new("/usr/include/linux");
    if headers.is_dir() {
        crate::sh(&format!(
            "cp -a {} {}/linux-headers",
            crate::shell::q(headers),
            crate::shell::q(dest)
        ));
    }
    let gen_root = dest.join("generated");
    for d in 0..12 {
        let dir = gen_root.join(format!("dir{d:02}/sub{}", d % 3));
        std::fs::create_dir_all(&dir).expect("create generated dir");
        for f in 0..25 {
            let len = ((d * 25 + f) * 397) % 9000;
            std::fs::write(
                dir.join(format!("file{f:02}.txt")),
                pattern_bytes((d * 100 + f) as u64, len),
            )
            .expect("write generated file");
        }
    }
    let odd = gen_root.join("odd names");
    std::fs::create_dir_all(odd.join("empty dir")).expect("mkdir");
    std::fs::write(odd.join("with space.txt"), b"spaces\n").expect("write");
    std::fs::write(odd.join("ünïcødé-ファイル"), "utf-8 name\n").expect("write");
    std::fs::write(odd.join("-leading-dash"), b"dash\n").expect("write");
    std::fs::write(odd.join("empty"), b"").expect("write");
    let big = gen_root.join("big");
    std::fs::create_dir_all(&big).expect("mkdir");
    // 2.5 MiB and exactly 1 MiB: a chunk and a half past a boundary, and a file that ends on one.
    std::fs::write(
        big.join("two-and-a-half-mib"),
        pattern_bytes(7, 5 * 512 * 1024),
    )
    .expect("write");
    std::fs::write(big.join("one-mib"), pattern_bytes(8, 1024 * 1024)).expect("write");
    std::fs::hard_link(big.join("one-mib"), big.join("one-mib.hardlink")).expect("link");
    let modes = gen_root.join("modes");
    std::fs::create_dir_all(&modes).expect("mkdir");
    for (name, mode) in [
        ("private", 0o600),
        ("exec", 0o755),
        ("readonly", 0o444),
        ("group", 0o640),
    ] {
        let path = modes.join(name);
        std::fs::write(&path, name.as_bytes()).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let links = gen_root.join("links");
    std::fs::create_dir_all(&links).expect("mkdir");
    std::os::unix::fs::symlink("../modes/exec", links.join("relative")).expect("symlink");
    std::os::unix::fs::symlink("/etc/hostname", links.join("absolute")).expect("symlink");
    std::os::unix::fs::symlink("does/not/exist", links.join("dangling")).expect("symlink");
    std::os::unix::fs::symlink("../big", links.join("to-dir")).expect("symlink");
    snapshot(dest).len()
}

//! Real applications on a real mount: git (init, add, commit, branch, checkout, fsck), a
//! SQLite database with transactions (the sqlite3 CLI, which takes POSIX locks and uses a
//! rollback journal and fsync), rsync -a of a tree and a second rsync that must transfer
//! nothing, and extracting and building a small C project with make and gcc. Every script
//! runs under `set -eu`, so each tool's exit status is asserted.
//!
//! `scripts/test.sh` installs the tools; a test whose tool is missing fails with a message
//! saying which package to install, rather than passing without having run.

use std::path::Path;

use mosaic_tests::shell::q;
use mosaic_tests::tree::{Compare, assert_same_tree, build_sample_tree};
use mosaic_tests::{ClusterOptions, MountedCluster, sh, sh_in};

fn start(test: &str) -> Option<MountedCluster> {
    MountedCluster::start(test, ClusterOptions::default())
}

fn need(tool: &str, package: &str) {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is not installed: apt-get install {package} (scripts/test.sh does)"
    );
}

#[test]
fn git_init_commit_branch_checkout() {
    need("git", "git");
    let Some(mc) = start("git_init_commit_branch_checkout") else {
        return;
    };
    let repo = mc.path().join("repo");
    std::fs::create_dir(&repo).expect("mkdir repo");
    let out = sh_in(
        &repo,
        r#"
        export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.invalid
        export GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.invalid
        git init -q -b main .
        for i in 1 2 3 4 5; do echo "line $i" > file$i.txt; done
        mkdir -p src/deep && echo 'fn main() {}' > src/deep/main.rs
        git add -A && git commit -q -m first
        git checkout -q -b feature
        echo changed > file1.txt && git rm -q file2.txt && git mv file3.txt renamed.txt
        git commit -q -am second
        git checkout -q main
        test "$(cat file1.txt)" = "line 1" && test -f file2.txt && test ! -e renamed.txt
        git checkout -q feature
        test "$(cat file1.txt)" = changed && test ! -e file2.txt && test -f renamed.txt
        git gc -q
        git fsck --full --strict 2>&1
        git status --porcelain
        git log --oneline | wc -l
        "#,
    );
    assert_eq!(out.trim(), "2", "git output: {out}");
}

#[test]
fn sqlite_transactions() {
    need("sqlite3", "sqlite3");
    let Some(mc) = start("sqlite_transactions") else {
        return;
    };
    let m = mc.path();
    let work = tempfile::tempdir().expect("temp dir");
    let script = work.path().join("txn.sql");
    std::fs::write(
        &script,
        "PRAGMA journal_mode=DELETE;
CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 5000)
  INSERT INTO t(v) SELECT printf('value %d %s', i, hex(randomblob(32))) FROM n;
COMMIT;
BEGIN;
DELETE FROM t WHERE id % 2 = 0;
ROLLBACK;
BEGIN;
UPDATE t SET v = 'updated' WHERE id <= 100;
COMMIT;
",
    )
    .expect("write the SQL script");
    let script = format!(
        r#"
        sqlite3 db.sqlite < {} >/dev/null
        sqlite3 db.sqlite 'PRAGMA journal_mode=WAL;' >/dev/null
        sqlite3 db.sqlite "INSERT INTO t(v) VALUES ('wal row');"
        sqlite3 db.sqlite 'PRAGMA integrity_check;'
        sqlite3 db.sqlite "SELECT count(*), sum(v = 'updated') FROM t;"
        "#,
        q(&script)
    );
    let out = sh_in(m, &script);
    assert_eq!(out.trim(), "ok\n5001|100", "sqlite output: {out}");
}

#[test]
fn rsync_twice_transfers_nothing_the_second_time() {
    need("rsync", "rsync");
    let Some(mc) = start("rsync_twice_transfers_nothing_the_second_time") else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let src = work.path().join("src");
    build_sample_tree(&src);
    // Times in the past, with nanoseconds: rsync leaves a destination's time alone when it
    // already has the source's second (it ignores the nanoseconds there, on ext4 too), so a
    // tree built within the same second as the copy would keep creation times in both the
    // copy and, by luck of timing, not in the oracle. This was the "wrong directory mtimes
    // after rsync" of issue 3: rsync's rule, not the mount's (see docs/SEMANTICS.md).
    sh(&format!(
        "find {} -exec touch -h -d @1600000000.123456789 {{}} +",
        q(&src)
    ));
    let dst = mc.path().join("copy");
    sh(&format!("rsync -a {}/ {}/", q(&src), q(&dst)));
    // The oracle is the same rsync into a local directory (without -H, hard links arrive as
    // separate files there too).
    let local = work.path().join("local");
    sh(&format!("rsync -a {}/ {}/", q(&src), q(&local)));
    // Everything rsync -a carries over, times included: rsync sets a directory's mtime after
    // filling it, so a create or a stale cached attribute after that shows here.
    assert_same_tree(&local, &dst, Compare::ALL);
    assert_same_dir_mtimes(&src, &dst);
    // A second run finds every file up to date (same size and mtime): it transfers nothing.
    let stats = sh(&format!("rsync -a --stats {}/ {}/", q(&src), q(&dst)));
    let transferred = stats
        .lines()
        .find_map(|l| l.strip_prefix("Number of regular files transferred: "))
        .unwrap_or_else(|| panic!("no transfer count in rsync --stats:\n{stats}"));
    assert_eq!(
        transferred.trim(),
        "0",
        "second rsync transferred files:\n{stats}"
    );
    // And rsync back out of the mount reproduces the tree.
    let back = work.path().join("back");
    sh(&format!("rsync -a {}/ {}/", q(&dst), q(&back)));
    assert_same_tree(&local, &back, Compare::NO_TIMES);
}

/// Every directory under `src` has the same mtime (seconds, as `stat -c %Y` prints it) as
/// its copy under `dst`, checked with a fresh `stat` in a new process per tree.
fn assert_same_dir_mtimes(src: &Path, dst: &Path) {
    let list = |root: &Path| sh_in(root, "find . -type d -exec stat -c '%Y %n' {} + | sort -k2");
    let (a, b) = (list(src), list(dst));
    let differ: Vec<String> = a
        .lines()
        .zip(b.lines())
        .filter(|(x, y)| x != y)
        .map(|(x, y)| format!("source {x} / copy {y}"))
        .collect();
    assert_eq!(
        a.lines().count(),
        b.lines().count(),
        "directory lists differ"
    );
    assert!(
        differ.is_empty(),
        "{} of {} directory mtimes differ after rsync -a:\n{}",
        differ.len(),
        a.lines().count(),
        differ.join("\n")
    );
}

/// Writes a small C project with a Makefile into `dir`.
fn write_c_project(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).expect("mkdir src");
    let files = [
        (
            "Makefile",
            "CFLAGS ?= -O1 -Wall -Werror\nOBJS = src/main.o src/util.o\n\nhello: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\nsrc/%.o: src/%.c src/util.h\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\nclean:\n\trm -f hello $(OBJS)\n",
        ),
        (
            "src/util.h",
            "#ifndef UTIL_H\n#define UTIL_H\nunsigned long checksum(const char *s);\n#endif\n",
        ),
        (
            "src/util.c",
            "#include \"util.h\"\nunsigned long checksum(const char *s) {\n  unsigned long h = 5381;\n  while (*s) h = h * 33 + (unsigned char)*s++;\n  return h;\n}\n",
        ),
        (
            "src/main.c",
            "#include <stdio.h>\n#include \"util.h\"\nint main(void) {\n  printf(\"%lu\\n\", checksum(\"mosaic\"));\n  return 0;\n}\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
}

#[test]
fn extract_and_build_a_c_project() {
    need("make", "make");
    need("cc", "gcc");
    let Some(mc) = start("extract_and_build_a_c_project") else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    write_c_project(&work.path().join("proj"));
    sh(&format!(
        "tar -C {} -czf {}/proj.tar.gz proj",
        q(work.path()),
        q(work.path())
    ));
    let m = mc.path();
    sh(&format!(
        "tar -C {} -xzf {}/proj.tar.gz",
        q(m),
        q(work.path())
    ));
    let local = sh_in(&work.path().join("proj"), "make -s && ./hello");
    let out = sh_in(
        &m.join("proj"),
        "make -s && ./hello && make -s && echo rebuilt-nothing",
    );
    assert_eq!(
        out,
        format!("{local}rebuilt-nothing\n"),
        "build output on the mount"
    );
    // Touching a header rebuilds what depends on it, by mtime as make sees it.
    let again = sh_in(
        &m.join("proj"),
        "touch src/util.h && make 2>&1 | grep -c '^cc ' ; ./hello",
    );
    assert_eq!(
        again,
        format!("3\n{local}"),
        "rebuild after touching the header"
    );
    sh_in(&m.join("proj"), "make -s clean && test ! -e hello");
}

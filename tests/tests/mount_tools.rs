//! Ordinary tools on a real mount: cp -a, tar, diff -r, mv, rm -r, mkdir -p, ln, ln -s,
//! readlink, find, stat, truncate, dd, `>>` and mkfifo. Every script runs under `set -eu`, so
//! each tool's exit status is asserted; where a tool's behaviour is the question, the same
//! script also runs in a local directory and the outputs and files must match — the kernel's
//! ext4 is the oracle, not our guess.

use std::path::Path;

use mosaic_tests::shell::q;
use mosaic_tests::tree::{Compare, assert_same_tree, build_sample_tree, pattern_bytes};
use mosaic_tests::{ClusterOptions, MountedCluster, sh, sh_in};

const MIB: usize = 1024 * 1024;

fn start(test: &str) -> Option<MountedCluster> {
    MountedCluster::start(test, ClusterOptions::default())
}

/// Runs `script` in `mounted` and in `local`; the outputs must be equal. Returns the output.
fn same_output(mounted: &Path, local: &Path, script: &str) -> String {
    let on_mount = sh_in(mounted, script);
    let on_local = sh_in(local, script);
    assert_eq!(
        on_mount, on_local,
        "the mount (left) and a local dir (right) disagree on:\n{script}"
    );
    on_mount
}

#[test]
fn cp_a_tar_mv_and_rm_r_of_a_real_tree() {
    let Some(mc) = start("cp_a_tar_mv_and_rm_r_of_a_real_tree") else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let src = work.path().join("src");
    let entries = build_sample_tree(&src);
    assert!(
        entries > 300,
        "the sample tree is too small: {entries} entries"
    );
    let m = mc.path();

    sh(&format!("cp -a {} {}/tree", q(&src), q(m)));
    sh(&format!(
        "diff -r --no-dereference {} {}/tree",
        q(&src),
        q(m)
    ));
    // cp -a carries modification times over, to the nanosecond.
    assert_same_tree(&src, &m.join("tree"), Compare::ALL);
    let count = |dir: &Path| sh(&format!("find {} | wc -l", q(dir)));
    assert_eq!(count(&src), count(&m.join("tree")));

    // tar c from the mount piped into tar x into the mount.
    sh(&format!(
        "mkdir {m}/untar && tar -C {m} --format=posix -cf - tree | tar -C {m}/untar -xf -",
        m = q(m)
    ));
    sh(&format!(
        "diff -r --no-dereference {} {}/untar/tree",
        q(&src),
        q(m)
    ));
    assert_same_tree(&src, &m.join("untar/tree"), Compare::NO_TIMES);

    // An archive written to the mount and listed back.
    sh(&format!("tar -C {} -cf {m}/tree.tar .", q(&src), m = q(m)));
    let listed = sh(&format!("tar -tf {}/tree.tar | wc -l", q(m)));
    assert_eq!(
        listed.trim(),
        entries_plus_root(entries),
        "tar -t of the archive"
    );

    sh(&format!(
        "mv {m}/tree {m}/moved && test ! -e {m}/tree",
        m = q(m)
    ));
    sh(&format!(
        "diff -r --no-dereference {} {}/moved",
        q(&src),
        q(m)
    ));
    sh(&format!(
        "rm -r {m}/moved {m}/untar {m}/tree.tar && test -z \"$(ls -A {m})\"",
        m = q(m)
    ));
    assert_eq!(
        sh(&format!("find {} -mindepth 1 | wc -l", q(m))).trim(),
        "0"
    );
}

/// `tar -C src -cf - .` lists `./` as well as every entry.
fn entries_plus_root(entries: usize) -> String {
    (entries + 1).to_string()
}

#[test]
fn mkdir_ln_symlink_readlink_find_stat_mv_rm() {
    let Some(mc) = start("mkdir_ln_symlink_readlink_find_stat_mv_rm") else {
        return;
    };
    let local = tempfile::tempdir().expect("temp dir");
    let script = r#"
        umask 022
        mkdir -p a/b/c/d a/e
        echo hello > a/b/file
        ln a/b/file a/hard
        ln -s b/file a/soft
        ln -s /nonexistent/target a/dangling
        echo "readlink: $(readlink a/soft) $(readlink a/dangling)"
        echo "through the symlink: $(cat a/soft)"
        echo "file: $(stat -c '%s %a %h %F' a/b/file)"
        echo "hard: $(stat -c '%s %a %h %F' a/hard)"
        echo "soft: $(stat -c '%s %F' a/soft)"
        echo "dir a: $(stat -c '%a %h %F' a)"
        echo "dir a/b: $(stat -c '%a %h %F' a/b)"
        chmod 600 a/b/file
        chmod 2750 a/e
        echo "chmod: $(stat -c '%a' a/hard) $(stat -c '%a' a/e)"
        find . | sort
        find . -type l | sort
        find . -type f -name 'f*'
        mv a/b/file a/e/renamed
        test ! -e a/b/file
        echo "after mv: $(stat -c '%h' a/hard) $(cat a/e/renamed)"
        rm a/hard
        echo "after rm: $(stat -c '%h' a/e/renamed)"
        mv a/b a/e/
        echo "moved dir: $(stat -c '%h' a) $(stat -c '%h' a/e)"
        find . | sort
        rm -r a
        ls -A
    "#;
    let out = same_output(mc.path(), local.path(), script);
    // Guard against both sides being wrong in the same way (e.g. empty output).
    assert!(
        out.contains("readlink: b/file /nonexistent/target"),
        "{out}"
    );
    assert!(out.contains("file: 6 644 2 regular file"), "{out}");
    assert!(out.contains("soft: 6 symbolic link"), "{out}");
    assert!(out.contains("dir a: 755 4 directory"), "{out}");
    assert!(out.contains("chmod: 600 2750"), "{out}");
    assert!(out.contains("after rm: 1"), "{out}");
    assert!(out.contains("./a/b/c/d\n"), "{out}");
}

#[test]
fn truncate_up_and_down_across_chunk_boundaries() {
    let Some(mc) = start("truncate_up_and_down_across_chunk_boundaries") else {
        return;
    };
    let local = tempfile::tempdir().expect("temp dir");
    let pattern = local.path().join("pattern");
    std::fs::write(&pattern, pattern_bytes(11, 3 * MIB + 12345)).expect("write pattern");
    let work = local.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let script = format!(
        r#"
        p={p}
        cp "$p" f
        truncate -s 1500000 f && stat -c %s f
        truncate -s 2600000 f && stat -c %s f
        sha256sum f
        truncate -s 0 f && stat -c %s f
        truncate -s 3145728 f && stat -c %s f
        sha256sum f
        cp "$p" g
        truncate -s 1048576 g
        truncate -s 1048577 g
        truncate -s 2097152 g
        sha256sum g
        truncate -s -100 g && stat -c %s g
        truncate -s +70000 g && stat -c %s g
        sha256sum g
        truncate -s 5000000 sparse
        sha256sum sparse
        dd if="$p" of=sparse bs=65536 seek=40 count=3 conv=notrunc status=none
        truncate -s 2700000 sparse
        sha256sum sparse
        "#,
        p = q(&pattern)
    );
    let out = same_output(mc.path(), &work, &script);
    assert!(out.contains("1500000\n2600000\n"), "{out}");
    assert!(out.contains("\n3145728\n"), "{out}");
    for name in ["f", "g", "sparse"] {
        sh(&format!(
            "cmp {} {}",
            q(&mc.path().join(name)),
            q(&work.join(name))
        ));
    }
}

#[test]
fn dd_of_a_file_larger_than_a_chunk() {
    let Some(mc) = start("dd_of_a_file_larger_than_a_chunk") else {
        return;
    };
    let local = tempfile::tempdir().expect("temp dir");
    let src = local.path().join("src");
    std::fs::write(&src, pattern_bytes(21, 5 * MIB)).expect("write source");
    let patch = local.path().join("patch");
    std::fs::write(&patch, pattern_bytes(22, 400 * 1024)).expect("write patch");
    let m = mc.path();
    let script = format!(
        r#"
        src={src}; patch={patch}; m={m}; l={l}
        dd if="$src" of="$m/bs1m" bs=1M status=none
        dd if="$src" of="$m/bs4k" bs=4k status=none
        dd if="$src" of="$m/odd" bs=100000 status=none
        cmp "$src" "$m/bs1m"
        cmp "$src" "$m/bs4k"
        cmp "$src" "$m/odd"
        test "$(sha256sum < "$src")" = "$(sha256sum < "$m/bs1m")"
        # Read back with small and large blocks.
        dd if="$m/bs1m" of="$l/back4k" bs=4k status=none
        dd if="$m/bs4k" of="$l/back1m" bs=1M status=none
        cmp "$src" "$l/back4k"
        cmp "$src" "$l/back1m"
        # Overwrite a range that straddles the 1 MiB boundary, in place, in both copies.
        cp "$src" "$l/patched"
        dd if="$patch" of="$m/bs1m" bs=4k seek=200 conv=notrunc status=none
        dd if="$patch" of="$l/patched" bs=4k seek=200 conv=notrunc status=none
        cmp "$l/patched" "$m/bs1m"
        # Partial reads at unaligned offsets.
        dd if="$m/bs1m" bs=1000 skip=1048 count=3 status=none | od -An -tx1 > "$l/mid.mount"
        dd if="$l/patched" bs=1000 skip=1048 count=3 status=none | od -An -tx1 > "$l/mid.local"
        cmp "$l/mid.mount" "$l/mid.local"
        stat -c %s "$m/bs1m" "$m/bs4k" "$m/odd"
        "#,
        src = q(&src),
        patch = q(&patch),
        m = q(m),
        l = q(local.path())
    );
    let sizes = sh(&script);
    assert_eq!(sizes, format!("{0}\n{0}\n{0}\n", 5 * MIB));
}

#[test]
fn append_with_shell_redirection() {
    let Some(mc) = start("append_with_shell_redirection") else {
        return;
    };
    let local = tempfile::tempdir().expect("temp dir");
    let script = r#"
        for i in $(seq 1 200); do echo "line $i" >> log; done
        seq 1 300000 > big
        cat big >> log
        echo "the end" >> log
        printf 'no newline' >> log
        wc -l < log
        wc -c < log
        tail -c 20 log
        echo
        sha256sum log
    "#;
    let out = same_output(mc.path(), local.path(), script);
    assert!(out.starts_with("300201\n"), "{out}");
    sh(&format!(
        "cmp {} {}",
        q(&mc.path().join("log")),
        q(&local.path().join("log"))
    ));
}

#[test]
fn mkfifo_makes_a_working_fifo() {
    let Some(mc) = start("mkfifo_makes_a_working_fifo") else {
        return;
    };
    let local = tempfile::tempdir().expect("temp dir");
    let out = sh(&format!(
        r#"
        m={m}; l={l}
        mkfifo -m 640 "$m/fifo"
        test -p "$m/fifo"
        stat -c '%F %a' "$m/fifo"
        cat "$m/fifo" > "$l/out" &
        echo through-the-fifo > "$m/fifo"
        wait
        cat "$l/out"
        rm "$m/fifo"
        test ! -e "$m/fifo"
        "#,
        m = q(mc.path()),
        l = q(local.path())
    ));
    assert_eq!(out, "fifo 640\nthrough-the-fifo\n");
}

#[test]
fn timestamps_from_touch_and_cp_a_are_kept() {
    let Some(mc) = start("timestamps_from_touch_and_cp_a_are_kept") else {
        return;
    };
    let local = tempfile::tempdir().expect("temp dir");
    let work = local.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let old = local.path().join("old");
    std::fs::write(&old, b"an old file\n").expect("write");
    sh(&format!("touch -m -d '@1000000000.123456789' {}", q(&old)));
    let script = format!(
        r#"
        echo data > touched
        touch -m -d '@1234567890.5' touched
        stat -c '%.9Y' touched
        cp -a {old} copied
        stat -c '%.9Y' copied
        cp {old} plain && touch -r {old} plain
        stat -c '%.9Y' plain
        "#,
        old = q(&old)
    );
    let out = same_output(mc.path(), &work, &script);
    assert_eq!(
        out,
        "1234567890.500000000\n1000000000.123456789\n1000000000.123456789\n"
    );
}

/// Bytes cut off by a truncate must never come back: a later write past the end leaves
/// zeros in the gap (found by the differential test, seed 2629066491437195096).
#[test]
fn a_write_past_a_truncated_end_reads_zeros_in_the_gap() {
    let Some(mc) = start("a_write_past_a_truncated_end_reads_zeros_in_the_gap") else {
        return;
    };
    let local = tempfile::tempdir().expect("temp dir");
    let src = local.path().join("src");
    std::fs::write(&src, pattern_bytes(31, 100_000)).expect("write");
    let work = local.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let script = format!(
        r#"
        cp {src} f
        truncate -s 26369 f
        printf XYZ | dd of=f bs=1 seek=78901 conv=notrunc status=none
        stat -c %s f
        cmp -n 26369 {src} f
        dd if=f bs=1 skip=26369 count=52532 status=none | tr -d '\000' | wc -c
        cp {src} g
        truncate -s 26369 g
        truncate -s 64854 g
        dd if=g bs=1 skip=26369 status=none | tr -d '\000' | wc -c
        "#,
        src = q(&src)
    );
    let out = same_output(mc.path(), &work, &script);
    assert_eq!(out, "78904\n0\n0\n");
    sh(&format!(
        "cmp {} {}",
        q(&mc.path().join("f")),
        q(&work.join("f"))
    ));
}

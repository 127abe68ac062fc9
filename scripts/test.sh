#!/usr/bin/env bash
# Runs the whole MosaicFS test suite: unit, cluster and real-FUSE mount tests.
#
# Installs what the tests need when it is missing and apt-get is available (fuse3 for the
# mount tests; git, rsync, sqlite3, attr, make and gcc for tests that run those tools on the
# mount), builds the release binaries the cluster tests start, then runs the tests in release mode
# with cargo-nextest if installed, else `cargo test`. The runner's summary is the last output
# and its exit status is this script's.
#
# Mount tests skip (loudly) on a machine without FUSE; with CI=true, or MOSAIC_REQUIRE_FUSE=1,
# a missing FUSE is a failure instead. Arguments (e.g. `-p mosaic-sentinel`) replace
# `--workspace` in the runner's command line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*"; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

# Packages the tests use, keyed by a command each one provides.
missing=()
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v git >/dev/null || missing+=(git)
command -v rsync >/dev/null || missing+=(rsync)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v getfattr >/dev/null || missing+=(attr)
command -v make >/dev/null || missing+=(make)
command -v cc >/dev/null || missing+=(gcc)
if ((${#missing[@]} > 0)); then
    if command -v apt-get >/dev/null && as_root true; then
        say "installing missing packages: ${missing[*]}"
        as_root apt-get update -qq
        installable=()
        for pkg in "${missing[@]}"; do
            if apt-cache show "$pkg" >/dev/null 2>&1; then
                installable+=("$pkg")
            else
                say "warning: package $pkg is not available here; tests that need it will say so"
            fi
        done
        if ((${#installable[@]} > 0)); then
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${installable[@]}"
        fi
    else
        say "warning: missing ${missing[*]} and cannot install (no apt-get or no root); some tests may skip or fail"
    fi
fi

if [[ "${CI:-}" == "true" ]]; then
    # In CI the mount tests must run: a machine without FUSE is a broken CI machine.
    export MOSAIC_REQUIRE_FUSE=1
    if [[ ! -e /dev/fuse ]]; then
        echo "test.sh: CI=true but /dev/fuse is missing: the FUSE mount tests cannot run" >&2
        exit 1
    fi
fi

say "building release binaries"
cargo build --release --workspace --bins
# The cluster tests start these binaries; point them at the release build explicitly.
export MOSAIC_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/release"

# Without arguments: every test of the workspace. With arguments (e.g. `-p mosaic-sentinel`,
# a test name filter), they replace `--workspace`.
everything=false
if (($# == 0)); then
    everything=true
    set -- --workspace
fi
if cargo nextest --version >/dev/null 2>&1; then
    say "running tests: cargo nextest run --release $*"
    # nextest does not run doctests; run them first so the summary stays the last output.
    if $everything; then
        cargo test --release --doc --quiet --workspace
    fi
    exec cargo nextest run --release --no-fail-fast "$@"
else
    say "running tests: cargo test --release $*"
    exec cargo test --release --no-fail-fast "$@"
fi

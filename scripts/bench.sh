#!/usr/bin/env bash
# Benchmarks MosaicFS on a fresh local cluster and writes docs/BENCHMARKS.md.
#
#   scripts/bench.sh [mosaic-bench flags...]     e.g. scripts/bench.sh --quick
#   scripts/bench.sh --peer moosefs [mosaic-bench flags...]
#
# Starts its own cluster with scripts/cluster.sh (3 chunkservers, goal 3, as shipped) in a
# temporary state directory, mountpoint and master port, so a developer's cluster is never
# touched; runs `mosaic-bench` on the mount with --compare on a local temporary directory
# (runs alternate between the two); writes docs/BENCHMARKS.md with the machine, versions,
# date, the table and which of issue 7's targets are met (only the part between the
# generated-results markers is replaced; the hand-written analysis around it is kept); and
# tears the cluster down, also when something fails. Flags are passed to mosaic-bench.
#
# --peer moosefs: the side-by-side benchmark. Instead of a local directory, the comparison is
# a private MooseFS (installed from Debian when missing: moosefs-master, moosefs-chunkserver,
# moosefs-client): 1 master and 3 chunkservers on 127.0.0.1 with their own ports, configs and
# data directories under the temporary directory (nothing in /etc, no system service is
# touched), goal 3 on the mount's root, mounted with mfsmount. The same mosaic-bench
# workloads run on both mounts, alternating, with each side's CPU seconds counted from its
# own processes. The Markdown goes between the peer markers of BENCHMARKS.md.
#
# Environment:
#   MOSAIC_BENCH_PORT   master port of the benchmark cluster (default 9520)
#   MOSAIC_BENCH_TMP    where the cluster state, mountpoint and local directory go
#                       (default /var/tmp: a disk, not tmpfs)
#   MOSAIC_BENCH_LABEL  a line printed at the top of BENCHMARKS.md (e.g. "preliminary")
#   MOSAIC_BENCH_OUT    the Markdown file to write (default docs/BENCHMARKS.md)
#   MOSAIC_BENCH_PEER_PORT  first of the 6 ports of the peer (default 9620: master 9620-9622,
#                       chunkservers 9623-9625)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${MOSAIC_BENCH_PORT:-9520}
TMP_BASE=${MOSAIC_BENCH_TMP:-/var/tmp}
OUT=${MOSAIC_BENCH_OUT:-$ROOT/docs/BENCHMARKS.md}
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
PEER=""
if [[ "${1:-}" == "--peer" ]]; then
    PEER=${2:-}
    shift 2 || true
elif [[ "${1:-}" == --peer=* ]]; then
    PEER=${1#--peer=}
    shift
fi

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'bench.sh: error: %s\n' "$*" >&2
    exit 1
}

case "$PEER" in
"" | moosefs) ;;
*) die "--peer: unknown peer '$PEER' (known: moosefs)" ;;
esac
[[ "$PORT" =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "MOSAIC_BENCH_PORT must be a port number"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "port $PORT is in use (another cluster?): set MOSAIC_BENCH_PORT"
fi
if [[ -n "$PEER" ]]; then
    # shellcheck source=scripts/bench-peer-moosefs.sh
    source "$ROOT/scripts/bench-peer-moosefs.sh"
    peer_check
fi

WORK=$(mktemp -d "$TMP_BASE/mosaic-bench.XXXXXX")
export MOSAIC_STATE="$WORK/state"
export MOSAIC_MNT="$WORK/mnt"
export MOSAIC_MASTER_PORT=$PORT
export MOSAIC_CHUNKSERVERS=3
LOCAL="$WORK/local"
mkdir -p "$LOCAL"

cleanup() {
    local status=$?
    trap - INT TERM
    if [[ -n "$PEER" ]]; then
        peer_down || true
    fi
    say "tearing the benchmark cluster down"
    "$ROOT/scripts/cluster.sh" down || true
    # Only remove what this script made, and only once nothing is mounted there.
    if ! grep -qs " $MOSAIC_MNT " /proc/self/mounts && ! grep -qs " $WORK/peer/mnt " /proc/self/mounts; then
        rm -rf "$WORK"
    else
        printf 'bench.sh: %s is still mounted; left %s in place\n' "$MOSAIC_MNT" "$WORK" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting a benchmark cluster in $WORK (master port $PORT)"
"$ROOT/scripts/cluster.sh" up
[[ -x "$BIN/mosaic-bench" ]] || die "$BIN/mosaic-bench missing after the build"

# The state-query client needs a client credential for the master's mutual TLS.
CREDS="$WORK/bench-credential"
"$BIN/mosaic-master" issue client bench --state "$MOSAIC_STATE/master" --out "$CREDS" >/dev/null

# Count CPU time of this cluster's processes only (other clusters may run on the machine).
pids=()
for f in "$MOSAIC_STATE"/run/*.pid; do
    [[ -s "$f" ]] && pids+=("$(<"$f")")
done
pid_list=$(IFS=,; echo "${pids[*]}")

COMPARE=(--compare "$LOCAL" --compare-name "local disk")
if [[ -n "$PEER" ]]; then
    peer_up "$WORK/peer"
    COMPARE=(--compare "$PEER_MNT" --compare-name MooseFS --compare-pids "$(peer_pids)")
    # The master-only state query has no MooseFS counterpart: not part of the side-by-side.
    has_workloads=0
    for a in "$@"; do [[ "$a" == --workloads* ]] && has_workloads=1; done
    if ((has_workloads == 0)); then
        set -- --workloads seq,meta,small,tree "$@"
    fi
fi

say "running mosaic-bench on $MOSAIC_MNT, compared with ${COMPARE[1]}"
TABLE="$WORK/table.md"
"$BIN/mosaic-bench" --master "$(<"$MOSAIC_STATE/run/master.addr")" --credentials "$CREDS" \
    --pids "$pid_list" --name MosaicFS "${COMPARE[@]}" --probe-dir "$WORK" \
    --markdown --json-file "$WORK/bench.json" \
    "$@" "$MOSAIC_MNT" | tee "$TABLE"

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem_gib=$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo " (with uncommitted changes)" || true)
# The measured part of BENCHMARKS.md lies between two markers; everything outside them is
# written by hand (where the time goes, per-change figures) and survives a new run.
BEGIN_MARK='<!-- bench.sh: generated results begin -->'
END_MARK='<!-- bench.sh: generated results end -->'
if [[ -n "$PEER" ]]; then
    # The side-by-side has its own part of the file; the single-filesystem run's stays.
    BEGIN_MARK='<!-- bench.sh --peer: generated results begin -->'
    END_MARK='<!-- bench.sh --peer: generated results end -->'
fi
GENERATED="$WORK/generated.md"
{
    echo "$BEGIN_MARK"
    if [[ -n "${MOSAIC_BENCH_LABEL:-}" ]]; then
        echo "**${MOSAIC_BENCH_LABEL}**"
        echo
    fi
    echo "Written by \`scripts/bench.sh $*\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo "Run it again to replace this part (between the markers); pass \`--quick\` for a fast check."
    echo
    echo "## Machine and versions"
    echo
    echo "- CPU: ${cpu_model:-unknown}, $(nproc) cores; memory ${mem_gib} GiB"
    echo "- kernel: $(uname -r)"
    echo "- MosaicFS: commit ${commit}${dirty}; $(rustc --version 2>/dev/null || echo 'rustc unknown')"
    echo "- cluster: scripts/cluster.sh, 1 master, 3 chunkservers, goal 3 with the shipped quorums (N=3, W=2, R=2), TLS on, all on this machine"
    if [[ -n "$PEER" ]]; then
        echo "- compared with: $(peer_describe)"
    else
        echo "- compared with: a directory on the local disk ($(df -T "$LOCAL" | awk 'NR == 2 { print $2 }'))"
    fi
    echo "- scratch and flush probe on: $(df -T "$WORK" | awk 'NR == 2 { print $2 }') ($WORK)"
    echo
    echo "## Results"
    echo
    cat "$TABLE"
    echo
    echo "$END_MARK"
} >"$GENERATED"

if [[ -f "$OUT" ]] && grep -qxF "$BEGIN_MARK" "$OUT" && grep -qxF "$END_MARK" "$OUT"; then
    # Splice: the lines before the begin marker, the new results, the lines after the end marker.
    awk -v begin="$BEGIN_MARK" -v end="$END_MARK" -v gen="$GENERATED" '
        $0 == begin { while ((getline line < gen) > 0) print line; skip = 1; next }
        $0 == end { skip = 0; next }
        !skip { print }
    ' "$OUT" >"$WORK/out.md"
    cp "$WORK/out.md" "$OUT"
else
    {
        echo "# MosaicFS benchmarks"
        echo
        cat "$GENERATED"
        echo
        echo "## Where the time goes"
        echo
        echo "Not profiled yet: the figures above say what is slow, not why. Profile a missed target"
        echo "with \`perf record -e cpu-clock -g -p PID\` (Debian package linux-perf) before changing code."
    } >"$OUT"
fi
say "wrote $OUT"

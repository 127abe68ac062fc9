#!/usr/bin/env bash
# A local MosaicFS cluster on loopback: a master, N chunkservers, a sentinel and a FUSE mount.
#
#   scripts/cluster.sh up              build (release), start everything, mount (safe to run twice)
#   scripts/cluster.sh down            unmount, stop every process; data and keys stay
#   scripts/cluster.sh status [--json] the cluster's state (mosaic-sentinel status)
#   scripts/cluster.sh status --node n1 --files [--json]   files and chunks node n1 holds
#   scripts/cluster.sh restart         down, then up
#
# Environment:
#   MOSAIC_STATE          state directory (default ./.cluster in the repository)
#   MOSAIC_MNT            mountpoint (default ./mnt in the repository)
#   MOSAIC_CHUNKSERVERS   number of chunkservers (default 3)
#   MOSAIC_MASTER_PORT    master port on 127.0.0.1 (default 9420)
#   MOSAIC_START_TIMEOUT  seconds to wait for each process to be ready (default 60)
#
# Prometheus metrics (plain HTTP, GET /metrics) are served on loopback at ports derived
# from the master port P: master P+1, sentinel P+2, mount P+3, chunkserver i P+10+i (9421,
# 9422, 9423, 9431.. by default); `up` prints them.
#
# Layout of the state directory:
#   master/meta.db, master/data.key   metadata and the cluster's data key (0600)
#   cs<i>/                            chunkserver i's data directory
#   logs/<name>.log                   each process's output
#   run/<name>.pid, run/<name>.addr   pid and ready address of each process
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Relative paths given by the user are relative to where they ran the command; the
# defaults live in the repository (and are git-ignored there).
abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/${1#./}" ;;
    esac
}

STATE=$(abspath "${MOSAIC_STATE:-$ROOT/.cluster}")
MNT=$(abspath "${MOSAIC_MNT:-$ROOT/mnt}")
CHUNKSERVERS=${MOSAIC_CHUNKSERVERS:-3}
MASTER_PORT=${MOSAIC_MASTER_PORT:-9420}
START_TIMEOUT=${MOSAIC_START_TIMEOUT:-60}
# Seconds a process gets to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT=15

MASTER_ADDR="127.0.0.1:$MASTER_PORT"
# Metrics endpoints, loopback only: they are unauthenticated.
MASTER_METRICS="127.0.0.1:$((MASTER_PORT + 1))"
SENTINEL_METRICS="127.0.0.1:$((MASTER_PORT + 2))"
MOUNT_METRICS="127.0.0.1:$((MASTER_PORT + 3))"
cs_metrics() { printf '127.0.0.1:%d' $((MASTER_PORT + 10 + $1)); }
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
RUN="$STATE/run"
LOGS="$STATE/logs"
KEY_FILE="$STATE/master/data.key"
# TLS credentials issued by the cluster CA, one directory per daemon and for the mount.
CREDS="$STATE/credentials"

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
    printf 'cluster.sh: error: %s\n' "$*" >&2
    exit 1
}

[[ "$CHUNKSERVERS" =~ ^[1-9][0-9]*$ ]] || die "MOSAIC_CHUNKSERVERS must be a positive integer, not '$CHUNKSERVERS'"
[[ "$MASTER_PORT" =~ ^[0-9]+$ ]] && ((MASTER_PORT > 0 && MASTER_PORT < 65536)) ||
    die "MOSAIC_MASTER_PORT must be a port number, not '$MASTER_PORT'"
((MASTER_PORT + 10 + CHUNKSERVERS < 65536)) ||
    die "MOSAIC_MASTER_PORT leaves no room for the metrics ports (master port + 10 + chunkservers)"
[[ "$START_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "MOSAIC_START_TIMEOUT must be a positive integer"

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root for: $* (install sudo or run as root)"
    fi
}

ensure_fuse() {
    if ! command -v fusermount3 >/dev/null; then
        say "installing fuse3 (fusermount3 is missing)"
        command -v apt-get >/dev/null || die "fusermount3 is missing and apt-get is not available: install fuse3"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3
        command -v fusermount3 >/dev/null || die "fuse3 installed but fusermount3 still missing"
    fi
    [[ -e /dev/fuse ]] || die "/dev/fuse is missing: this machine (or container) has no FUSE; in a container add --device /dev/fuse --cap-add SYS_ADMIN"
}

# --- processes --------------------------------------------------------------------------

pid_of() { # name -> pid on stdout if the process of that pid file is alive and ours
    local name=$1 pid
    [[ -f "$RUN/$name.pid" ]] || return 1
    pid=$(<"$RUN/$name.pid")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: the process must be one of our binaries.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'mosaic-' || return 1
    printf '%s\n' "$pid"
}

log_tail() {
    local name=$1
    if [[ -s "$LOGS/$name.log" ]]; then
        printf -- '--- last lines of %s ---\n' "$LOGS/$name.log" >&2
        tail -n 20 "$LOGS/$name.log" >&2
        printf -- '---\n' >&2
    fi
}

# start NAME CMD...: runs CMD in the background in its own session (so a Ctrl-C in this
# terminal never reaches it), output appended to logs/NAME.log.
start() {
    local name=$1 pid
    shift
    if pid=$(pid_of "$name"); then
        note "$name: already running (pid $pid)"
        return 0
    fi
    rm -f "$RUN/$name.addr" "$RUN/$name.pid"
    printf '\n=== %s: %s\n' "$(date '+%F %T')" "$*" >>"$LOGS/$name.log"
    setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
    echo $! >"$RUN/$name.pid"
    note "$name: started (pid $!), log $LOGS/$name.log"
}

# wait_ready NAME WHAT CHECK...: polls CHECK until it succeeds; fails with the log tail
# when NAME's process exits or START_TIMEOUT passes.
wait_ready() {
    local name=$1 what=$2 deadline=$((SECONDS + START_TIMEOUT))
    shift 2
    until "$@"; do
        # Not pid_of: right after `start`, before the child has exec'd, its command line is
        # still this script's, and pid_of's recycled-pid guard would call it gone.
        if ! kill -0 "$(cat "$RUN/$name.pid" 2>/dev/null)" 2>/dev/null; then
            log_tail "$name"
            die "$name exited before $what (log: $LOGS/$name.log)"
        fi
        if ((SECONDS >= deadline)); then
            log_tail "$name"
            die "$name not ready after ${START_TIMEOUT}s: no $what (log: $LOGS/$name.log)"
        fi
        sleep 0.2
    done
}

addr_ready() { [[ -s "$RUN/$1.addr" ]]; }

stop() { # name: TERM, wait up to STOP_TIMEOUT, then KILL
    local name=$1 pid deadline
    if ! pid=$(pid_of "$name"); then
        rm -f "$RUN/$name.pid" "$RUN/$name.addr"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    # A stopped (SIGSTOP) process only acts on the TERM once it runs again.
    kill -CONT "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            note "$name: no exit ${STOP_TIMEOUT}s after SIGTERM, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$RUN/$name.pid" "$RUN/$name.addr"
    note "$name: stopped"
}

# --- the mount --------------------------------------------------------------------------

# The fs type of whatever is mounted at $1 (empty if nothing). mountinfo escapes spaces,
# tabs, newlines and backslashes in paths as octal.
mount_type() {
    local escaped
    escaped=$(printf '%s' "$1" | sed -e 's/\\/\\134/g' -e 's/ /\\040/g' -e 's/\t/\\011/g')
    # Passed through the environment: awk -v would turn the \040 escapes back into spaces.
    MOUNT_PATH="$escaped" awk '
        $5 == ENVIRON["MOUNT_PATH"] { for (i = 7; i <= NF; i++) if ($i == "-") { t = $(i + 1); break } }
        END { if (t != "") print t }' /proc/self/mountinfo
}

mounted() { [[ "$(mount_type "$MNT")" == "fuse.mosaic" ]]; }

# A mount that answers stat: a dead client leaves "Transport endpoint is not connected".
mount_alive() { timeout 10 stat -t "$MNT" >/dev/null 2>&1; }

unmount() {
    mounted || return 0
    if fusermount3 -u "$MNT" 2>/dev/null; then
        note "mount: unmounted $MNT"
    else
        # Busy (a shell inside it) or dead: detach now, the kernel finishes when unused.
        fusermount3 -uz "$MNT"
        note "mount: lazily unmounted $MNT (it was busy or dead)"
    fi
}

# --- commands ---------------------------------------------------------------------------

cmd_up() {
    ensure_fuse
    say "building release binaries"
    (cd "$ROOT" && cargo build --release --workspace --bins)
    for bin in mosaic-master mosaic-chunkserver mosaic-sentinel mosaic-mount; do
        [[ -x "$BIN/$bin" ]] || die "$BIN/$bin missing after the build"
    done

    mkdir -p "$STATE" "$RUN" "$LOGS"
    if [[ ! -f "$STATE/master/meta.db" ]]; then
        say "creating a new cluster in $STATE/master"
        mkdir -p "$STATE/master"
        "$BIN/mosaic-master" init --state "$STATE/master" --key-file "$KEY_FILE"
    fi
    if [[ ! -f "$STATE/master/pki/ca.key" ]]; then
        # A cluster made before TLS: give it a CA and a master credential.
        say "creating the cluster CA in $STATE/master/pki"
        "$BIN/mosaic-master" init-pki --state "$STATE/master"
    fi
    # One TLS credential per daemon and for the mount, issued once and kept across `up`s.
    local creds=()
    for ((i = 1; i <= CHUNKSERVERS; i++)); do creds+=("chunkserver cs$i"); done
    creds+=("sentinel sentinel" "client client")
    local role name i
    for entry in "${creds[@]}"; do
        read -r role name <<<"$entry"
        if [[ ! -f "$CREDS/$name/key.pem" ]]; then
            "$BIN/mosaic-master" issue "$role" "$name" --state "$STATE/master" --out "$CREDS/$name" >/dev/null
            note "issued a $role credential in $CREDS/$name"
        fi
    done

    # With fewer than 3 chunkservers every chunk lives on all of them. The quorums are a
    # majority W and the smallest R with W + R > N: the shipped defaults (N=3, W=2, R=2) for
    # three or more chunkservers.
    local n=$((CHUNKSERVERS < 3 ? CHUNKSERVERS : 3))
    local w=$((n / 2 + 1))
    local r=$((n - w + 1))
    say "starting master on $MASTER_ADDR (replicas $n, write quorum $w, read quorum $r)"
    start master "$BIN/mosaic-master" run --state "$STATE/master" --listen "$MASTER_ADDR" \
        --addr-file "$RUN/master.addr" --replicas "$n" --write-quorum "$w" --read-quorum "$r" \
        --metrics-addr "$MASTER_METRICS"
    wait_ready master "address file" addr_ready master
    local master_addr pid
    master_addr=$(<"$RUN/master.addr")

    say "starting $CHUNKSERVERS chunkservers"
    local i
    for ((i = 1; i <= CHUNKSERVERS; i++)); do
        mkdir -p "$STATE/cs$i"
        start "cs$i" "$BIN/mosaic-chunkserver" --master "$master_addr" --data "$STATE/cs$i" \
            --listen 127.0.0.1:0 --addr-file "$RUN/cs$i.addr" --credentials "$CREDS/cs$i" \
            --metrics-addr "$(cs_metrics "$i")"
    done
    for ((i = 1; i <= CHUNKSERVERS; i++)); do
        wait_ready "cs$i" "registration" addr_ready "cs$i"
        note "cs$i: serving on $(<"$RUN/cs$i.addr")"
    done

    say "starting sentinel"
    start sentinel "$BIN/mosaic-sentinel" run --master "$master_addr" --addr-file "$RUN/sentinel.addr" \
        --credentials "$CREDS/sentinel" --metrics-addr "$SENTINEL_METRICS"
    wait_ready sentinel "contact with the master" addr_ready sentinel

    say "mounting at $MNT"
    if mounted && mount_alive; then
        if pid=$(pid_of mount); then
            note "mount: already mounted (pid $pid)"
        else
            note "mount: already mounted by a process this script did not start; keeping it"
        fi
    else
        if [[ -n "$(mount_type "$MNT")" ]] && ! mounted; then
            die "$MNT already has a $(mount_type "$MNT") mount: choose another MOSAIC_MNT"
        fi
        if mounted; then
            note "mount: stale mount at $MNT (client gone or not answering), cleaning up"
            stop mount
            fusermount3 -uz "$MNT" 2>/dev/null || true
        fi
        mkdir -p "$MNT"
        local allow_other=(--allow-other)
        if [[ $(id -u) -ne 0 ]] && ! grep -qs '^[[:space:]]*user_allow_other' /etc/fuse.conf; then
            note "warning: /etc/fuse.conf lacks user_allow_other, mounting without allow_other"
            note "         (only you can use the mount; add user_allow_other there to share it)"
            allow_other=()
        fi
        start mount "$BIN/mosaic-mount" --master "$master_addr" --key-file "$KEY_FILE" \
            --credentials "$CREDS/client" --metrics-addr "$MOUNT_METRICS" "${allow_other[@]}" "$MNT"
        wait_ready mount "mount at $MNT" mounted
    fi

    say "cluster is up: master $master_addr, $CHUNKSERVERS chunkservers, mounted at $MNT"
    note "status: scripts/cluster.sh status    stop: scripts/cluster.sh down"
    note "metrics (Prometheus, GET /metrics): master http://$MASTER_METRICS/metrics," \
        "sentinel http://$SENTINEL_METRICS/metrics, mount http://$MOUNT_METRICS/metrics"
    for ((i = 1; i <= CHUNKSERVERS; i++)); do
        note "    cs$i http://$(cs_metrics "$i")/metrics"
    done
}

cmd_down() {
    say "stopping the cluster in $STATE"
    unmount
    stop mount
    stop sentinel
    local pidfile name
    # Every chunkserver that has a pid file, even if MOSAIC_CHUNKSERVERS changed since.
    for pidfile in "$RUN"/cs*.pid; do
        [[ -e "$pidfile" ]] || continue
        name=$(basename "$pidfile" .pid)
        stop "$name"
    done
    stop master
    say "cluster stopped (data kept in $STATE)"
}

cmd_status() {
    [[ -x "$BIN/mosaic-sentinel" ]] || die "$BIN/mosaic-sentinel not built: run scripts/cluster.sh up first"
    local master_addr=$MASTER_ADDR
    [[ -s "$RUN/master.addr" ]] && master_addr=$(<"$RUN/master.addr")
    # The status command's exit status (0 healthy, 1 degraded, 2 unavailable) is ours.
    # Other flags (--json, --watch, --node N --files) go to `mosaic-sentinel status`, which
    # checks them.
    exec "$BIN/mosaic-sentinel" status --master "$master_addr" --credentials "$CREDS/sentinel" "$@"
}

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status)
        shift
        cmd_status "$@"
        ;;
    restart)
        cmd_down
        cmd_up
        ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac

# A private MooseFS on loopback for the side-by-side benchmark; sourced by
# `scripts/bench.sh --peer moosefs`, which calls peer_check, peer_up DIR, peer_pids,
# peer_describe and (from its exit trap) peer_down.
#
# 1 master and 3 chunkservers, each with its own config, data directory and port under DIR,
# run as child processes in the foreground (-f) so their pids are known and their CPU time
# can be read; mounted at DIR/mnt with mfsmount -f; goal 3 on the mount's root. It never
# reads or writes /etc/mfs and never starts, stops or reconfigures a system service.
# Every wait has a deadline (MOSAIC_BENCH_PEER_WAIT seconds, default 60).
#
# Network: MooseFS refuses a master address in 127.0.0.0/8 ("use ip address of network
# controller"), so every MooseFS process runs in a private network namespace of its own
# (unshare --net, needs root) whose loopback interface also carries 192.0.2.1 (TEST-NET-1,
# RFC 5737: reserved for documentation, routed nowhere). Nothing in that namespace can reach
# or be reached from any other host, and its ports cannot collide with the machine's. The
# FUSE mount itself is in the machine's mount namespace, so the benchmark uses it as any
# other directory.
#
# The daemons keep MooseFS's shipped defaults except NICE_LEVEL, which MooseFS sets to -19:
# at that priority they would take the CPU from the MosaicFS processes they are compared
# with, so both run at the same nice level (0).

PEER_BASE_PORT=${MOSAIC_BENCH_PEER_PORT:-9620}
PEER_ADDR=192.0.2.1
PEER_NS_PID=""
PEER_WAIT=${MOSAIC_BENCH_PEER_WAIT:-60}
PEER_CHUNKSERVERS=3
PEER_DIR=""
PEER_MNT=""
PEER_PIDS=()
PEER_PACKAGES=(moosefs-master moosefs-chunkserver moosefs-client)

# The 6 ports: master (metalogger, chunkservers, clients), then one per chunkserver.
peer_ports() {
    seq "$PEER_BASE_PORT" $((PEER_BASE_PORT + 2 + PEER_CHUNKSERVERS))
}

# Runs a command in the peer's network namespace. nsenter execs the command in place, so a
# daemon started as `"${IN_NS[@]}" daemon &` has $! as its own pid (a shell function in the
# background would put a subshell in between, whose pid is not the daemon's).
IN_NS=()
in_ns() { "${IN_NS[@]}" "$@"; }

port_open() { in_ns bash -c "exec 3<>/dev/tcp/$PEER_ADDR/$1" 2>/dev/null; }

# Installs MooseFS from Debian when a command is missing.
peer_check() {
    [[ "$PEER_BASE_PORT" =~ ^[0-9]+$ ]] && ((PEER_BASE_PORT > 0 && PEER_BASE_PORT + 5 < 65536)) ||
        die "MOSAIC_BENCH_PEER_PORT must be a port number (6 ports from it are used)"
    [[ "$PEER_WAIT" =~ ^[0-9]+$ ]] || die "MOSAIC_BENCH_PEER_WAIT must be whole seconds"
    [[ $(id -u) -eq 0 ]] || die "--peer moosefs needs root (a private network namespace, FUSE as root, dropping caches)"
    local tool
    for tool in unshare nsenter ip; do
        command -v "$tool" >/dev/null || die "--peer moosefs needs $tool (util-linux, iproute2)"
    done
    if command -v mfsmaster >/dev/null && command -v mfschunkserver >/dev/null &&
        command -v mfsmount >/dev/null && command -v mfssetgoal >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || die "MooseFS is not installed and there is no apt-get"
    [[ $(id -u) -eq 0 ]] ||
        die "MooseFS is not installed; as root: apt-get install ${PEER_PACKAGES[*]}"
    say "installing MooseFS from Debian: ${PEER_PACKAGES[*]}"
    # Without a candidate the package lists are missing or stale: fetch them once.
    if ! apt-cache policy moosefs-master 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${PEER_PACKAGES[@]}" >/dev/null
    command -v mfsmaster >/dev/null || die "MooseFS installed, but mfsmaster is not on PATH"
}

# Waits until `$@` succeeds, for at most PEER_WAIT seconds; names what it waited for.
peer_wait() {
    local what=$1
    shift
    local deadline=$((SECONDS + PEER_WAIT))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            printf 'bench.sh: MooseFS: %s not within %ss; logs in %s:\n' "$what" "$PEER_WAIT" "$PEER_DIR" >&2
            tail -n 5 "$PEER_DIR"/*.log >&2 || true
            return 1
        fi
        local pid
        for pid in "${PEER_PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || {
                printf 'bench.sh: MooseFS: process %s exited while waiting for %s; logs in %s:\n' \
                    "$pid" "$what" "$PEER_DIR" >&2
                tail -n 5 "$PEER_DIR"/*.log >&2 || true
                return 1
            }
        done
        sleep 0.2
    done
}

peer_mounted() { grep -qs " $PEER_MNT " /proc/self/mounts; }

# Every chunkserver has registered (the master logs each registration to our own log file)
# and the mount reports space (chunkservers report theirs after their first disk scan; a
# MooseFS without space refuses to create chunks).
peer_all_registered() {
    local registered total
    registered=$(grep -c 'chunkserver register end' "$PEER_DIR/master.log" || true)
    total=$(df -Pk "$PEER_MNT" 2>/dev/null | awk 'NR == 2 { print $2 + 0 }')
    ((registered >= PEER_CHUNKSERVERS)) && [[ -n "$total" ]] && ((total > 0))
}

peer_goal_is_3() { in_ns mfsgetgoal "$PEER_MNT" 2>/dev/null | grep -q ': 3$'; }

# Starts the master, the chunkservers and the mount under $1.
peer_up() {
    PEER_DIR=$1
    PEER_MNT=$PEER_DIR/mnt
    local p=$PEER_BASE_PORT user group
    user=$(id -un)
    group=$(id -gn)
    mkdir -p "$PEER_DIR/master" "$PEER_MNT"
    # The namespace lives as long as this holder process.
    unshare --net sleep infinity &
    PEER_NS_PID=$!
    IN_NS=(nsenter --net="/proc/$PEER_NS_PID/ns/net" --)
    peer_wait "the network namespace" test -e "/proc/$PEER_NS_PID/ns/net"
    sleep 0.2
    in_ns ip link set lo up
    in_ns ip addr add "$PEER_ADDR/32" dev lo
    local empty=/var/lib/mfs/metadata.mfs.empty
    [[ -f "$empty" ]] || die "MooseFS: $empty missing (is moosefs-master installed?)"
    cp "$empty" "$PEER_DIR/master/metadata.mfs"
    # Loopback only; root squashing off, as a local admin mounts it.
    echo "$PEER_ADDR / rw,alldirs,maproot=0:0" >"$PEER_DIR/mfsexports.cfg"
    : >"$PEER_DIR/mfstopology.cfg"
    cat >"$PEER_DIR/mfsmaster.cfg" <<EOF
WORKING_USER = $user
WORKING_GROUP = $group
NICE_LEVEL = 0
DATA_PATH = $PEER_DIR/master
EXPORTS_FILENAME = $PEER_DIR/mfsexports.cfg
TOPOLOGY_FILENAME = $PEER_DIR/mfstopology.cfg
MATOML_LISTEN_HOST = $PEER_ADDR
MATOML_LISTEN_PORT = $p
MATOCS_LISTEN_HOST = $PEER_ADDR
MATOCS_LISTEN_PORT = $((p + 1))
MATOCL_LISTEN_HOST = $PEER_ADDR
MATOCL_LISTEN_PORT = $((p + 2))
EOF
    say "starting MooseFS in $PEER_DIR (master ports $p-$((p + 2)))"
    "${IN_NS[@]}" mfsmaster -f -c "$PEER_DIR/mfsmaster.cfg" start >"$PEER_DIR/master.log" 2>&1 &
    PEER_PIDS+=($!)
    peer_wait "the master listening on $PEER_ADDR:$((p + 2))" port_open $((p + 2))

    local i
    for ((i = 1; i <= PEER_CHUNKSERVERS; i++)); do
        local cs=$PEER_DIR/cs$i
        mkdir -p "$cs/data" "$cs/state"
        echo "$cs/data" >"$cs/mfshdd.cfg"
        cat >"$cs/mfschunkserver.cfg" <<EOF
WORKING_USER = $user
WORKING_GROUP = $group
NICE_LEVEL = 0
DATA_PATH = $cs/state
HDD_CONF_FILENAME = $cs/mfshdd.cfg
BIND_HOST = $PEER_ADDR
MASTER_HOST = $PEER_ADDR
MASTER_PORT = $((p + 1))
CSSERV_LISTEN_HOST = $PEER_ADDR
CSSERV_LISTEN_PORT = $((p + 2 + i))
EOF
        "${IN_NS[@]}" mfschunkserver -f -c "$cs/mfschunkserver.cfg" start >"$PEER_DIR/cs$i.log" 2>&1 &
        PEER_PIDS+=($!)
    done
    for ((i = 1; i <= PEER_CHUNKSERVERS; i++)); do
        peer_wait "chunkserver $i listening" port_open $((p + 2 + i))
    done

    "${IN_NS[@]}" mfsmount -f -o "mfsmaster=$PEER_ADDR,mfsport=$((p + 2))" "$PEER_MNT" >"$PEER_DIR/mount.log" 2>&1 &
    PEER_PIDS+=($!)
    peer_wait "the mount at $PEER_MNT" peer_mounted
    peer_wait "all $PEER_CHUNKSERVERS chunkservers registered" peer_all_registered
    # Goal 3 on the root, inherited by everything created under it. The tools talk to the
    # master directly (the address from the mount's .masterinfo), so they run in the namespace. MooseFS 3.0 has goals;
    # 4.x replaced them with storage classes, where a class of 3 copies plays the same part.
    if in_ns mfssetgoal -r 3 "$PEER_MNT" >/dev/null 2>&1; then
        peer_wait "goal 3 on the root" peer_goal_is_3
    elif command -v mfsscadmin >/dev/null && in_ns mfsscadmin "$PEER_MNT" create -K '*,*,*' bench3 >/dev/null 2>&1; then
        in_ns mfssetsclass -r bench3 "$PEER_MNT" >/dev/null
    else
        die "MooseFS: could not set 3 copies on $PEER_MNT (neither mfssetgoal nor mfssetsclass worked)"
    fi
}

# The pids whose CPU time is MooseFS's, comma-separated.
peer_pids() {
    local IFS=,
    echo "${PEER_PIDS[*]}"
}

peer_describe() {
    local version
    version=$(mfsmaster -v 2>/dev/null | awk '{ print $2; exit }')
    echo "MooseFS ${version:-unknown} from Debian: 1 master, ${PEER_CHUNKSERVERS} chunkservers (each its own data directory on $(df -T "$PEER_DIR" | awk 'NR == 2 { print $2 }')), goal 3, one mfsmount, all on this machine (in a private network namespace); shipped defaults except NICE_LEVEL 0"
}

# Unmounts and stops every MooseFS process this script started, each step with a deadline;
# safe to call twice and after a partial start.
peer_down() {
    [[ -n "$PEER_DIR" ]] || return 0
    say "stopping MooseFS"
    if peer_mounted; then
        timeout 30 umount "$PEER_MNT" 2>/dev/null || timeout 10 umount -l "$PEER_MNT" || true
    fi
    local pid i deadline
    # Reverse order: the mount, the chunkservers, then the master (which saves its metadata
    # on SIGTERM).
    for ((i = ${#PEER_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PEER_PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PEER_PIDS=()
    if [[ -n "$PEER_NS_PID" ]]; then
        kill -KILL "$PEER_NS_PID" 2>/dev/null || true
        wait "$PEER_NS_PID" 2>/dev/null || true
        PEER_NS_PID=""
    fi
}

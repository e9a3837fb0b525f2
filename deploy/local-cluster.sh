#!/usr/bin/env bash
# Local Redis Cluster for development: 3 masters + 3 replicas on 127.0.0.1.
#
# Usage: deploy/local-cluster.sh start|stop|status|clean [DIR] [BASEPORT]
#
#   start   start the six nodes (ports BASEPORT..BASEPORT+5, cluster bus
#           ports +BUS_PORT_OFFSET) as daemons and create the cluster if it does not
#           exist yet.  Idempotent: running nodes are left alone, and a
#           stopped cluster comes back with its old topology (nodes.conf).
#   stop    shut the nodes down (SHUTDOWN NOSAVE, SIGKILL as a last resort).
#   status  show each node and the cluster's health; exit status 0 if all
#           six nodes run and the cluster is ok, 1 otherwise.
#   clean   stop, then delete DIR (the cluster is created afresh next start).
#
# DIR defaults to ./.local-cluster, BASEPORT to 7000.  The nodes keep no data
# on disk (no RDB/AOF): a restart loses the keys but keeps the topology.
# Environment: REDIS_SERVER, REDIS_CLI (binaries), NODE_TIMEOUT_MS (5000),
# BUS_PORT_OFFSET (10000; cluster bus port = port + offset, anything other
# than 10000 needs Redis >= 7).
set -euo pipefail

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit "${1:-2}"
}

[[ $# -ge 1 ]] || usage
action=$1
dir=${2:-./.local-cluster}
base=${3:-7000}
redis_server=${REDIS_SERVER:-redis-server}
redis_cli=${REDIS_CLI:-redis-cli}
node_timeout=${NODE_TIMEOUT_MS:-5000}
bus_offset=${BUS_PORT_OFFSET:-10000}
host=127.0.0.1
nodes=6

if ! [[ $bus_offset =~ ^[0-9]+$ ]] || ((bus_offset < nodes)); then
    echo "error: BUS_PORT_OFFSET must be a number >= $nodes" >&2
    exit 2
fi
if ! [[ $base =~ ^[0-9]+$ ]] || ((base < 1 || base + nodes - 1 + bus_offset > 65535)); then
    echo "error: BASEPORT must be a number from 1 to $((65535 - bus_offset - nodes + 1))" >&2
    exit 2
fi

log() { printf '[local-cluster] %s\n' "$*"; }
die() { printf '[local-cluster] error: %s\n' "$*" >&2; exit 1; }

ports() { seq "$base" $((base + nodes - 1)); }
cli() { local port=$1; shift; "$redis_cli" -h "$host" -p "$port" "$@"; }
pidfile() { echo "$dir/$1/redis.pid"; }

# Prints the pid of our node on port $1 if it is alive (not a zombie, and
# really a redis-server on that port, in case the pid was reused).
node_pid() {
    local pf pid stat
    pf=$(pidfile "$1")
    [[ -f $pf ]] || return 1
    pid=$(<"$pf")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r /proc/$pid/stat ]]; then
        stat=$(<"/proc/$pid/stat")
        stat=${stat##*) }
        [[ ${stat%% *} != Z ]] || return 1
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "redis-server.*:$1" || return 1
    fi
    echo "$pid"
}

answers_ping() { [[ $(cli "$1" ping 2>/dev/null) == PONG ]]; }

# cluster_field PORT FIELD: one field of CLUSTER INFO.
cluster_field() {
    cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

require_tools() {
    command -v "$redis_server" >/dev/null || die "$redis_server not found (apt-get install redis-server)"
    command -v "$redis_cli" >/dev/null || die "$redis_cli not found (apt-get install redis-tools)"
}

start_node() {
    local port=$1 ndir="$dir/$1"
    if node_pid "$port" >/dev/null; then
        log "node $port already running (pid $(node_pid "$port"))"
        return
    fi
    if answers_ping "$port"; then
        die "port $port is in use by a redis that is not ours (no live pid in $(pidfile "$port"))"
    fi
    mkdir -p "$ndir"
    local bus_args=()
    ((bus_offset == 10000)) || bus_args=(--cluster-port $((port + bus_offset)))
    log "starting node $port (dir $ndir)"
    "$redis_server" \
        --port "$port" --bind "$host" --protected-mode no \
        --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout "$node_timeout" "${bus_args[@]}" \
        --dir "$ndir" --save "" --appendonly no \
        --repl-diskless-sync-delay 0 \
        --daemonize yes --pidfile "$ndir/redis.pid" --logfile "$ndir/redis.log"
}

wait_for() {
    local what=$1 timeout=$2 i
    shift 2
    for ((i = 0; i < timeout * 10; i++)); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    die "timed out after ${timeout}s waiting for $what"
}

all_ping() {
    local port log
    for port in $(ports); do
        answers_ping "$port" && continue
        log="$dir/$port/redis.log"
        # A node that could not start (e.g. port taken) says so in its log.
        if [[ -f $log ]] && grep -qE 'aborting|Fatal error|FATAL' "$log"; then
            tail -n 5 "$log" >&2
            die "node $port failed to start (log: $log)"
        fi
        return 1
    done
}

all_ok() {
    local port
    for port in $(ports); do
        [[ $(cluster_field "$port" cluster_state) == ok ]] || return 1
    done
}

# True when no node has joined a cluster or been assigned slots yet.
cluster_is_fresh() {
    local port
    for port in $(ports); do
        [[ $(cluster_field "$port" cluster_known_nodes) == 1 &&
            $(cluster_field "$port" cluster_slots_assigned) == 0 ]] || return 1
    done
}

do_start() {
    require_tools
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local port addrs=()
    for port in $(ports); do
        start_node "$port"
        addrs+=("$host:$port")
    done
    wait_for "all nodes to answer PING" 15 all_ping
    if cluster_is_fresh; then
        log "creating the cluster: ${addrs[*]}"
        "$redis_cli" --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes </dev/null >"$dir/create.log" 2>&1 ||
            { cat "$dir/create.log" >&2; die "redis-cli --cluster create failed"; }
    fi
    wait_for "cluster_state:ok on every node" 60 all_ok
    log "cluster is up: $host:$base..$((base + nodes - 1)) (dir $dir)"
    log "stop it with: $0 stop $dir $base"
}

do_stop() {
    [[ -d $dir ]] || { log "nothing to stop ($dir does not exist)"; return; }
    local port pid
    for port in $(ports); do
        if ! pid=$(node_pid "$port"); then
            log "node $port not running"
            continue
        fi
        log "stopping node $port (pid $pid)"
        cli "$port" shutdown nosave now >/dev/null 2>&1 || cli "$port" shutdown nosave >/dev/null 2>&1 || true
        local i
        for ((i = 0; i < 50; i++)); do
            node_pid "$port" >/dev/null || break
            sleep 0.1
        done
        if node_pid "$port" >/dev/null; then
            log "node $port did not exit, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$(pidfile "$port")"
    done
}

do_status() {
    local port pid healthy=0 role state
    printf '%-8s %-8s %-8s %s\n' PORT PID ROLE CLUSTER_STATE
    for port in $(ports); do
        if pid=$(node_pid "$port"); then
            role=$(cli "$port" role 2>/dev/null | head -1)
            state=$(cluster_field "$port" cluster_state)
            [[ $state == ok ]] || healthy=1
        else
            pid=- role=- state=stopped
            healthy=1
        fi
        printf '%-8s %-8s %-8s %s\n' "$port" "$pid" "${role:-?}" "${state:-?}"
    done
    if [[ $healthy == 0 ]]; then
        "$redis_cli" --cluster check "$host:$base" </dev/null | sed 's/\x1b\[[0-9;]*m//g' | tail -n 3 || healthy=1
    fi
    return "$healthy"
}

case $action in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    clean)
        do_stop
        if [[ -d $dir ]]; then
            # Only delete directories that look like ours.
            for entry in "$dir"/* "$dir"/.[!.]*; do
                [[ -e $entry ]] || continue
                name=${entry##*/}
                [[ $name =~ ^[0-9]+$ || $name == create.log ]] ||
                    die "refusing to delete $dir: it contains $name, which local-cluster.sh did not create"
            done
            log "removing $dir"
            rm -rf -- "$dir"
        fi
        ;;
    -h | --help | help) usage 0 ;;
    *) usage ;;
esac

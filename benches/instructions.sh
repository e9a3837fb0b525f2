#!/usr/bin/env bash
# Instructions per request: the proxy's user-space work, counted exactly under valgrind.
#
# Usage: benches/instructions.sh [options]
#   --requests-p1 N    GET requests counted at pipeline 1    (default 20000)
#   --requests-p16 N   GET requests counted at pipeline 16   (default 160000)
#   --clients N        redis-benchmark connections           (default 50)
#   --base-port N      cluster ports N..N+5, bus N+100..N+105, proxies N+6, N+7 (default 31200)
#
# CPU time per request on a shared or virtual machine moves by 10-20% from run to run, more
# than most changes to the proxy's own code. This counts what that code does instead: it
# starts a 3+3 cluster (deploy/local-cluster.sh) and target/release/slotway (or $SLOTWAY_BIN)
# under `valgrind --tool=callgrind` with counting off, warms the connections up, then counts
# the instructions the proxy executes (user space only; system calls are not in the count)
# while redis-benchmark sends GETs at pipeline 1 and at pipeline 16. predixy ($PREDIXY_BIN)
# gets the same runs if it is set. Under valgrind the proxy runs about 50 times slower, so
# more requests share each wake-up than at full speed: compare figures from this script with
# each other, not with load.sh's. Needs valgrind (Debian: apt-get install valgrind).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
requests_p1=20000
requests_p16=160000
clients=50
base_port=31200
while [[ $# -gt 0 ]]; do
    case $1 in
        --requests-p1) requests_p1=$2; shift ;;
        --requests-p16) requests_p16=$2; shift ;;
        --clients) clients=$2; shift ;;
        --base-port) base_port=$2; shift ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

host=127.0.0.1
slotway=${SLOTWAY_BIN:-$repo/target/release/slotway}
log() { printf '[instructions] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in valgrind callgrind_control redis-server redis-cli redis-benchmark; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ -x $slotway ]] || die "$slotway not found (cargo build --release)"

workdir=$(mktemp -d)
proxy_pid=
declare -A per_request
cleanup() {
    [[ -n $proxy_pid ]] && kill "$proxy_pid" 2>/dev/null
    "$repo/deploy/local-cluster.sh" stop "$workdir/cluster" "$base_port" >/dev/null 2>&1 || true
    rm -rf "$workdir"
}
trap cleanup EXIT

log "starting a 3+3 cluster on $host:$base_port-$((base_port + 5))"
"$repo/deploy/local-cluster.sh" start "$workdir/cluster" "$base_port" >"$workdir/cluster.log" 2>&1 ||
    { cat "$workdir/cluster.log" >&2; die "cluster did not start"; }

# count NAME PORT PIPELINE REQUESTS CMD...: starts CMD under callgrind, counts one run, and
# sets per_request[NAME.PIPELINE] to the instructions per request.
count() {
    local name=$1 port=$2 pipeline=$3 requests=$4 i
    shift 4
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$workdir/$name.$pipeline.out" \
        "$@" >"$workdir/$name.log" 2>&1 &
    proxy_pid=$!
    for ((i = 0; i < 300; i++)); do
        [[ $(redis-cli -h "$host" -p "$port" set instructions:probe 1 2>/dev/null) == OK ]] && break
        kill -0 "$proxy_pid" 2>/dev/null || { tail -n 20 "$workdir/$name.log" >&2; die "$name exited"; }
        sleep 0.2
    done
    ((i < 300)) || die "$name did not accept a SET within 60s"
    redis-benchmark -h "$host" -p "$port" -c "$clients" -n $((requests / 10)) -P "$pipeline" \
        -t get -r 100000 -q >/dev/null 2>&1
    callgrind_control -i on "$proxy_pid" >/dev/null 2>&1
    redis-benchmark -h "$host" -p "$port" -c "$clients" -n "$requests" -P "$pipeline" \
        -t get -r 100000 -q >/dev/null 2>&1
    callgrind_control -i off "$proxy_pid" >/dev/null 2>&1
    kill -INT "$proxy_pid"
    wait "$proxy_pid" 2>/dev/null || true
    proxy_pid=
    per_request[$name.$pipeline]=$(awk -v n="$requests" '/^totals:/ { printf "%.0f", $2 / n }' \
        "$workdir/$name.$pipeline.out")
}

proxies=(slotway)
[[ -n ${PREDIXY_BIN:-} ]] && proxies+=(predixy)
for name in "${proxies[@]}"; do
    for pipeline in 1 16; do
        requests=$((pipeline == 1 ? requests_p1 : requests_p16))
        log "$name, pipeline $pipeline: $requests GETs from $clients clients"
        if [[ $name == slotway ]]; then
            # Slow-request logging off: under valgrind every request would be slow.
            count slotway $((base_port + 6)) "$pipeline" "$requests" \
                "$slotway" --listen "$host:$((base_port + 6))" --seed "$host:$base_port" \
                --metrics-listen "$host:$((base_port + 8))" --slowlog-slower-than-us -1
        else
            cat >"$workdir/predixy.conf" <<EOF
Name instructions
Bind $host:$((base_port + 7))
WorkerThreads 1
Log $workdir/predixy.log
LogVerbSample 0
LogDebugSample 0
LogInfoSample 0
LogNoticeSample 0
ClusterServerPool {
    Servers {
        + $host:$base_port
    }
}
EOF
            count predixy $((base_port + 7)) "$pipeline" "$requests" "$PREDIXY_BIN" "$workdir/predixy.conf"
        fi
    done
done

printf '\n%-10s %22s %22s\n' proxy "instr/request P1" "instr/request P16"
for name in "${proxies[@]}"; do
    printf '%-10s %22s %22s\n' "$name" "${per_request[$name.1]}" "${per_request[$name.16]}"
done
if [[ -n ${per_request[predixy.1]:-} ]]; then
    printf '%-10s %22s %22s\n' "ratio" \
        "$(awk -v a="${per_request[slotway.1]}" -v b="${per_request[predixy.1]}" 'BEGIN { printf "%.2f", a / b }')" \
        "$(awk -v a="${per_request[slotway.16]}" -v b="${per_request[predixy.16]}" 'BEGIN { printf "%.2f", a / b }')"
fi

#!/usr/bin/env bash
# Load benchmark: redis-benchmark straight against a Redis Cluster vs. through Slotway.
#
# Usage: benches/load.sh [options]
#   --direct-only        only benchmark the cluster directly (no proxy needed)
#   --memory             instead of throughput, measure resident memory per idle
#                        client connection (10,000 connections by default)
#   --requests-p1 N      requests per run without pipelining   (default 200000)
#   --requests-p16 N     requests per run with pipeline 16     (default 1000000)
#   --clients N          redis-benchmark connections           (default 50)
#   --keyspace N         random keys, redis-benchmark -r       (default 100000)
#   --data-size N        SET value size in bytes               (default 3)
#   --threads N          redis-benchmark threads               (default 1)
#   --connections N      connections for --memory              (default 10000)
#   --run-timeout S      give up on a redis-benchmark run after S seconds (default 180)
#   --base-port N        cluster ports N..N+5, bus N+100..N+105, proxy N+6, metrics N+7,
#                        reference proxies and their servers N+10..N+15, one standalone
#                        redis-server N+16 (default 31000)
#   --no-unix            do not also benchmark through slotway's Unix socket
#   --no-reference       do not also benchmark the reference proxies (below)
#   --keep               keep the work directory (logs) after the run
#
# It starts its own 3-master/3-replica cluster (deploy/local-cluster.sh, in a
# temporary directory) and target/release/slotway (or $SLOTWAY_BIN) in front
# of it, runs GET and SET at pipeline 1 and 16 both ways with the same request
# counts (and a third way, through slotway's Unix socket, unless --no-unix),
# samples the proxy's CPU time (utime+stime from /proc/PID/stat) around every
# proxied run and the whole machine's busy time (/proc/stat) around every run,
# and prints comparison tables.  Reference proxies, when present, get the same
# runs for a side-by-side CPU figure: twemproxy (`nutcracker` on the PATH or
# $NUTCRACKER_BIN; it cannot speak cluster, so it fronts three standalone
# redis-servers) and predixy ($PREDIXY_BIN, in front of the same cluster).  One
# standalone redis-server gets the same runs too: its own CPU per request is the
# floor of this machine (the socket work per request that a proxy also does, on
# its client side, before any node-side work).  If
# memtier_benchmark is installed, a short memtier run each way follows.
# Everything it started is stopped on exit.  See benches/README.md.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

direct_only=0
memory=0
requests_p1=200000
requests_p16=1000000
clients=50
keyspace=100000
data_size=3
threads=1
connections=10000
run_timeout=180
base_port=31000
keep=0
unix=1
reference=1

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit "${1:-2}"
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --direct-only) direct_only=1 ;;
        --memory) memory=1 ;;
        --requests-p1) requests_p1=$2; shift ;;
        --requests-p16) requests_p16=$2; shift ;;
        --clients) clients=$2; shift ;;
        --keyspace) keyspace=$2; shift ;;
        --data-size) data_size=$2; shift ;;
        --threads) threads=$2; shift ;;
        --connections) connections=$2; shift ;;
        --run-timeout) run_timeout=$2; shift ;;
        --base-port) base_port=$2; shift ;;
        --keep) keep=1 ;;
        --no-unix) unix=0 ;;
        --no-reference) reference=0 ;;
        -h | --help) usage 0 ;;
        *) echo "unknown option: $1" >&2; usage ;;
    esac
    shift
done

host=127.0.0.1
proxy_port=$((base_port + 6))
# Cluster bus ports next to the client ports rather than at +10000, which
# would land in the kernel's ephemeral port range (32768-60999).
export BUS_PORT_OFFSET=100
slotway=${SLOTWAY_BIN:-$repo/target/release/slotway}
clk_tck=$(getconf CLK_TCK)
workdir=$(mktemp -d "${TMPDIR:-/tmp}/slotway-bench.XXXXXX")
cluster_dir=$workdir/cluster
unix_socket=$workdir/slotway.sock
standalone_dir=$workdir/standalone
proxy_pid=
# Reference proxies, each with a port and, once started, a pid.
nutcracker_bin=${NUTCRACKER_BIN:-$(command -v nutcracker || true)}
predixy_bin=${PREDIXY_BIN:-}
declare -A ref_port=([nutcracker]=$((base_port + 13)) [predixy]=$((base_port + 15)) [node]=$((base_port + 16)))
declare -A ref_pid=()

log() { printf '[load] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $proxy_pid ]] && kill -0 "$proxy_pid" 2>/dev/null; then
        log "stopping slotway (pid $proxy_pid)"
        kill -TERM "$proxy_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$proxy_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
    fi
    local name pidfile
    for name in "${!ref_pid[@]}"; do
        log "stopping $name (pid ${ref_pid[$name]})"
        kill -KILL "${ref_pid[$name]}" 2>/dev/null || true
        wait "${ref_pid[$name]}" 2>/dev/null || true
    done
    for pidfile in "$standalone_dir"/*.pid; do
        if [[ -f $pidfile ]]; then kill -KILL "$(<"$pidfile")" 2>/dev/null || true; fi
    done
    if [[ -d $cluster_dir ]]; then
        log "stopping the cluster"
        "$repo/deploy/local-cluster.sh" stop "$cluster_dir" "$base_port" >/dev/null 2>&1 || true
    fi
    if [[ $keep == 1 || $rc != 0 ]]; then
        log "logs kept in $workdir"
    else
        rm -rf -- "$workdir"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

preflight() {
    command -v redis-benchmark >/dev/null || die "redis-benchmark not found (apt-get install redis-tools)"
    local p
    for p in $(seq "$base_port" $((base_port + 5))) $(seq $((base_port + BUS_PORT_OFFSET)) $((base_port + BUS_PORT_OFFSET + 5))) "$proxy_port" "${ref_port[node]}"; do
        port_in_use "$p" && die "port $p is in use; pick another range with --base-port"
    done
    if [[ $reference == 1 && $direct_only == 0 ]]; then
        for p in $(seq $((base_port + 10)) $((base_port + 15))); do
            port_in_use "$p" && die "port $p is in use; pick another range with --base-port (or --no-reference)"
        done
        [[ -z $predixy_bin || -x $predixy_bin ]] || die "PREDIXY_BIN=$predixy_bin is not an executable"
    fi
    if [[ $direct_only == 0 && ! -x $slotway ]]; then
        die "$slotway not found: run \`cargo build --release\` (or use --direct-only)"
    fi
    return 0
}

start_cluster() {
    log "starting a 3+3 cluster on $host:$base_port-$((base_port + 5)) in $cluster_dir"
    "$repo/deploy/local-cluster.sh" start "$cluster_dir" "$base_port" >"$workdir/cluster.log" 2>&1 ||
        { cat "$workdir/cluster.log" >&2; die "cluster did not start"; }
}

start_proxy() {
    log "starting slotway on $host:$proxy_port (log $workdir/slotway.log)"
    local unix_args=()
    ((unix)) && unix_args=(--unix-socket "$unix_socket")
    "$slotway" --listen "$host:$proxy_port" "${unix_args[@]}" \
        --seed "$host:$base_port" --seed "$host:$((base_port + 1))" --seed "$host:$((base_port + 2))" \
        --metrics-listen "$host:$((proxy_port + 1))" ${SLOTWAY_ARGS:-} \
        >"$workdir/slotway.log" 2>&1 &
    proxy_pid=$!
    local i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$proxy_pid" 2>/dev/null || { tail -n 30 "$workdir/slotway.log" >&2; die "slotway exited"; }
        [[ $(redis-cli -h "$host" -p "$proxy_port" ping 2>/dev/null) == PONG ]] && return 0
        sleep 0.1
    done
    tail -n 30 "$workdir/slotway.log" >&2
    die "slotway did not answer PING within 15s"
}

# wait_for_set PORT NAME PID: wait until a SET through PORT succeeds.
wait_for_set() {
    local i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$3" 2>/dev/null || { tail -n 30 "$workdir/$2.log" >&2; die "$2 exited"; }
        [[ $(redis-cli -h "$host" -p "$1" set load:probe 1 2>/dev/null) == OK ]] && return 0
        sleep 0.1
    done
    tail -n 30 "$workdir/$2.log" >&2
    die "$2 did not accept a SET within 15s"
}

# twemproxy in front of three standalone redis-servers (it has no cluster support): the same
# forwarding job (parse, hash the key, pick a server, pipeline, send the reply back), done by
# the most widely deployed C proxy.
start_nutcracker() {
    local port i
    mkdir -p "$standalone_dir"
    {
        printf 'bench:\n  listen: %s:%s\n  hash: fnv1a_64\n  distribution: ketama\n' "$host" "${ref_port[nutcracker]}"
        printf '  redis: true\n  auto_eject_hosts: false\n  server_connections: 1\n  servers:\n'
        for i in 0 1 2; do
            port=$((base_port + 10 + i))
            redis-server --bind "$host" --port "$port" --save '' --appendonly no --daemonize yes \
                --dir "$standalone_dir" --pidfile "$standalone_dir/$port.pid" --logfile "$standalone_dir/$port.log"
            printf '   - %s:%s:1\n' "$host" "$port"
        done
    } >"$workdir/nutcracker.yml"
    for i in 0 1 2; do
        port=$((base_port + 10 + i))
        until [[ $(redis-cli -h "$host" -p "$port" ping 2>/dev/null) == PONG ]]; do sleep 0.1; done
    done
    log "starting nutcracker on $host:${ref_port[nutcracker]} in front of $host:$((base_port + 10))-$((base_port + 12))"
    "$nutcracker_bin" -c "$workdir/nutcracker.yml" -s $((base_port + 14)) -o "$workdir/nutcracker.log" &
    ref_pid[nutcracker]=$!
    wait_for_set "${ref_port[nutcracker]}" nutcracker "${ref_pid[nutcracker]}"
}

# One standalone redis-server: what one node itself spends per request, the same runs.
start_node() {
    local port=${ref_port[node]}
    mkdir -p "$standalone_dir"
    log "starting one standalone redis-server on $host:$port (the floor)"
    redis-server --bind "$host" --port "$port" --save '' --appendonly no --daemonize yes \
        --dir "$standalone_dir" --pidfile "$standalone_dir/$port.pid" --logfile "$standalone_dir/$port.log"
    until [[ $(redis-cli -h "$host" -p "$port" ping 2>/dev/null) == PONG ]]; do sleep 0.1; done
    ref_pid[node]=$(<"$standalone_dir/$port.pid")
}

# predixy in front of the same cluster, one worker thread like slotway on two cores.
start_predixy() {
    cat >"$workdir/predixy.conf" <<EOF
Name load
Bind $host:${ref_port[predixy]}
WorkerThreads 1
Log $workdir/predixy.log
LogVerbSample 0
LogDebugSample 0
LogInfoSample 0
LogNoticeSample 0
ClusterServerPool {
    Servers {
        + $host:$base_port
        + $host:$((base_port + 1))
        + $host:$((base_port + 2))
    }
}
EOF
    log "starting predixy ($predixy_bin) on $host:${ref_port[predixy]}"
    "$predixy_bin" "$workdir/predixy.conf" >"$workdir/predixy.out" 2>&1 &
    ref_pid[predixy]=$!
    wait_for_set "${ref_port[predixy]}" predixy "${ref_pid[predixy]}"
}

# utime+stime of a process, in clock ticks.
cpu_ticks() {
    local stat f
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    read -r -a f <<<"$stat"
    echo $((f[11] + f[12]))
}

# utime+stime of the three masters together, in clock ticks: what the nodes themselves spend,
# for comparison (a redis-server also pays a read and a write per unpipelined request).
masters_ticks() {
    local port t=0
    for port in "$base_port" $((base_port + 1)) $((base_port + 2)); do
        t=$((t + $(cpu_ticks "$(<"$cluster_dir/$port/redis.pid")")))
    done
    echo "$t"
}

# Busy time of the whole machine (every process, the kernel's softirq work included), in ticks.
machine_ticks() {
    local cpu user nice system idle iowait irq softirq steal
    read -r cpu user nice system idle iowait irq softirq steal _ </proc/stat
    echo $((user + nice + system + irq + softirq + steal))
}

# ratio_of A B: A / B with two decimals.
ratio_of() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
}

# per_request TICKS N: microseconds per request.
per_request() {
    awk -v t="$1" -v hz="$clk_tck" -v n="$2" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }'
}

declare -A rps p50 p99 cpu nodes_cpu machine_cpu

# bench TARGET(direct|proxy|unix) TEST(set|get) PIPELINE REQUESTS
bench() {
    local target=$1 test=$2 pipeline=$3 n=$4 args pid before=0 after line key f nodes_before machine_before
    case $target in
        direct) args=(--cluster -h "$host" -p "$base_port") ;;
        proxy) args=(-h "$host" -p "$proxy_port") pid=$proxy_pid ;;
        unix) args=(-s "$unix_socket") pid=$proxy_pid ;;
        *) args=(-h "$host" -p "${ref_port[$target]}") pid=${ref_pid[$target]} ;;
    esac
    [[ $target == direct ]] || before=$(cpu_ticks "$pid")
    key="$target ${test^^} P$pipeline"
    nodes_before=$(masters_ticks)
    machine_before=$(machine_ticks)
    log "$key: redis-benchmark ${args[*]} -c $clients -n $n -P $pipeline -r $keyspace -d $data_size -t $test"
    local rc=0
    timeout "$run_timeout" redis-benchmark "${args[@]}" -c "$clients" -n "$n" -P "$pipeline" -r "$keyspace" \
        -d "$data_size" --threads "$threads" -t "$test" --csv \
        >"$workdir/bench.out" 2>"$workdir/bench.err" </dev/null || rc=$?
    if [[ $rc == 124 ]]; then
        die "redis-benchmark did not finish within ${run_timeout}s ($key); see $workdir"
    elif [[ $rc != 0 ]]; then
        cat "$workdir/bench.err" >&2
        die "redis-benchmark failed with status $rc ($key)"
    fi
    line=$(grep "^\"${test^^}\"" "$workdir/bench.out" || true)
    [[ -n $line ]] || { cat "$workdir/bench.out" "$workdir/bench.err" >&2; die "no result for $key"; }
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    IFS=, read -r -a f <<<"${line//\"/}"
    rps[$key]=${f[1]%.*}
    p50[$key]=${f[4]}
    p99[$key]=${f[6]}
    nodes_cpu[$key]=$(per_request $(($(masters_ticks) - nodes_before)) "$n")
    machine_cpu[$key]=$(per_request $(($(machine_ticks) - machine_before)) "$n")
    if [[ $target != direct ]]; then
        after=$(cpu_ticks "$pid")
        cpu[$key]=$(per_request $((after - before)) "$n")
    fi
    log "$key: ${rps[$key]} ops/s, p50 ${p50[$key]} ms, p99 ${p99[$key]} ms${cpu[$key]:+, proxy CPU ${cpu[$key]} us/req}, masters CPU ${nodes_cpu[$key]} us/req"
}

print_table() {
    local pipeline test key d p ratio
    printf '\nredis-benchmark: %s clients, %s random keys, %s-byte values, %s thread(s); P1 %s requests, P16 %s requests\n' \
        "$clients" "$keyspace" "$data_size" "$threads" "$requests_p1" "$requests_p16"
    printf '%s; latencies in ms; masters CPU: the three redis-server masters together, per request\n\n' \
        "$(nproc) cores, $(redis-server --version | cut -d' ' -f3)"
    printf '| %-8s | %13s | %12s | %6s | %15s | %15s | %17s | %25s |\n' \
        test "direct ops/s" "proxy ops/s" ratio "direct p50/p99" "proxy p50/p99" "proxy CPU us/req" \
        "masters CPU direct/proxy"
    printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' "----------" "---------------" "--------------" "--------" \
        "-----------------" "-----------------" "-------------------" "---------------------------"
    for pipeline in 1 16; do
        for test in set get; do
            d="direct ${test^^} P$pipeline"
            p="proxy ${test^^} P$pipeline"
            ratio=-
            [[ -n ${rps[$p]:-} ]] && ratio=$(ratio_of "${rps[$p]}" "${rps[$d]}")
            printf '| %-8s | %13s | %12s | %6s | %15s | %15s | %17s | %25s |\n' \
                "${test^^} P$pipeline" "${rps[$d]}" "${rps[$p]:--}" "$ratio" \
                "${p50[$d]}/${p99[$d]}" "${p50[$p]:--}/${p99[$p]:--}" "${cpu[$p]:--}" \
                "${nodes_cpu[$d]}/${nodes_cpu[$p]:--}"
        done
    done
    echo
    [[ $direct_only == 1 ]] && return 0
    printf 'Through the Unix socket (same proxy, redis-benchmark -s), and the whole machine'"'"'s CPU per request\n'
    printf '(every process and the kernel'"'"'s softirq work, from /proc/stat: what a request really costs here)\n\n'
    printf '| %-8s | %12s | %6s | %15s | %17s | %32s |\n' \
        test "unix ops/s" ratio "unix p50/p99" "proxy CPU us/req" "machine CPU us/req direct/TCP/unix"
    printf '|%s|%s|%s|%s|%s|%s|\n' "----------" "--------------" "--------" "-----------------" \
        "-------------------" "----------------------------------"
    for pipeline in 1 16; do
        for test in set get; do
            d="direct ${test^^} P$pipeline"
            p="proxy ${test^^} P$pipeline"
            u="unix ${test^^} P$pipeline"
            ratio=-
            [[ -n ${rps[$u]:-} ]] && ratio=$(ratio_of "${rps[$u]}" "${rps[$d]}")
            printf '| %-8s | %12s | %6s | %15s | %17s | %32s |\n' \
                "${test^^} P$pipeline" "${rps[$u]:--}" "$ratio" "${p50[$u]:--}/${p99[$u]:--}" "${cpu[$u]:--}" \
                "${machine_cpu[$d]}/${machine_cpu[$p]:--}/${machine_cpu[$u]:--}"
        done
    done
    echo
}

# The reference proxies' runs next to slotway's TCP runs.
print_reference_table() {
    [[ -n ${ref_pid[nutcracker]:-}${ref_pid[predixy]:-} ]] || return 0
    local pipeline test name d p r ratio
    printf 'Reference proxies, the same runs (twemproxy/nutcracker fronts three standalone redis-servers,\n'
    printf 'predixy the same cluster); CPU ratio = slotway CPU / reference CPU, below 1 means slotway spends less\n\n'
    printf '| %-8s | %-10s | %12s | %6s | %15s | %17s | %19s | %9s |\n' \
        test proxy "ops/s" ratio "p50/p99" "its CPU us/req" "slotway CPU us/req" "CPU ratio"
    printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' "----------" "------------" "--------------" "--------" \
        "-----------------" "-------------------" "---------------------" "-----------"
    for pipeline in 1 16; do
        for test in set get; do
            d="direct ${test^^} P$pipeline"
            p="proxy ${test^^} P$pipeline"
            for name in nutcracker predixy; do
                r="$name ${test^^} P$pipeline"
                [[ -n ${rps[$r]:-} ]] || continue
                ratio=$(ratio_of "${rps[$r]}" "${rps[$d]}")
                printf '| %-8s | %-10s | %12s | %6s | %15s | %17s | %19s | %9s |\n' \
                    "${test^^} P$pipeline" "$name" "${rps[$r]}" "$ratio" "${p50[$r]}/${p99[$r]}" "${cpu[$r]}" \
                    "${cpu[$p]}" "$(ratio_of "${cpu[$p]}" "${cpu[$r]}")"
            done
        done
    done
    echo
}

# One standalone redis-server next to slotway: the machine's floor per request.
print_node_table() {
    [[ -n ${ref_pid[node]:-} ]] || return 0
    local pipeline test n p
    printf 'One standalone redis-server, the same runs: its own CPU per request is the floor here (one read\n'
    printf 'and one write per client request, which a proxy pays too before any node-side work)\n\n'
    printf '| %-8s | %12s | %17s | %19s | %14s |\n' test "node ops/s" "node CPU us/req" "slotway CPU us/req" "slotway / node"
    printf '|%s|%s|%s|%s|%s|\n' "----------" "--------------" "-------------------" "---------------------" "----------------"
    for pipeline in 1 16; do
        for test in set get; do
            n="node ${test^^} P$pipeline"
            p="proxy ${test^^} P$pipeline"
            printf '| %-8s | %12s | %17s | %19s | %14s |\n' "${test^^} P$pipeline" "${rps[$n]}" "${cpu[$n]}" \
                "${cpu[$p]:--}" "$([[ -n ${cpu[$p]:-} ]] && ratio_of "${cpu[$p]}" "${cpu[$n]}" || echo -)"
        done
    done
    echo
}

# Multi-key commands through the proxy, against what a cluster client does instead: MGET and
# MSET of 10 random keys (spread over slots, so the proxy splits and merges them) versus 10
# pipelined GETs / SETs sent straight to the cluster. Figures are per key.
run_multikey() {
    local n=$((requests_p1 / 2)) cmd keys before after line f rate key
    for cmd in MGET MSET; do
        keys=()
        for ((i = 0; i < 10; i++)); do
            keys+=("key:__rand_int__")
            [[ $cmd == MSET ]] && keys+=("v")
        done
        key="proxy $cmd x10"
        before=$(cpu_ticks "$proxy_pid")
        log "$key: redis-benchmark -h $host -p $proxy_port -c $clients -n $n -r $keyspace $cmd (10 keys)"
        timeout "$run_timeout" redis-benchmark -h "$host" -p "$proxy_port" -c "$clients" -n "$n" -r "$keyspace" \
            --csv "$cmd" "${keys[@]}" >"$workdir/bench.out" 2>"$workdir/bench.err" </dev/null ||
            die "redis-benchmark $cmd failed; see $workdir"
        after=$(cpu_ticks "$proxy_pid")
        line=$(grep "^\"$cmd" "$workdir/bench.out" | head -n 1)
        IFS=, read -r -a f <<<"${line//\"/}"
        rate=${f[1]%.*}
        rps[$key]=$((rate * 10))
        p50[$key]=${f[4]}
        p99[$key]=${f[6]}
        cpu[$key]=$(per_request $((after - before)) $((n * 10)))
        local test=get
        [[ $cmd == MSET ]] && test=set
        key="direct ${test^^} x10"
        log "$key: redis-benchmark --cluster -P 10 -t $test"
        timeout "$run_timeout" redis-benchmark --cluster -h "$host" -p "$base_port" -c "$clients" -n "$((n * 10))" \
            -P 10 -r "$keyspace" -t "$test" --csv >"$workdir/bench.out" 2>"$workdir/bench.err" </dev/null ||
            die "redis-benchmark direct $test failed; see $workdir"
        line=$(grep "^\"${test^^}\"" "$workdir/bench.out")
        IFS=, read -r -a f <<<"${line//\"/}"
        rps[$key]=${f[1]%.*}
    done
    printf '\nmulti-key: keys per second (proxy: MGET/MSET of 10 keys; direct: 10 pipelined GET/SET)\n\n'
    printf '| %-10s | %19s | %15s | %6s | %17s | %17s |\n' test "direct keys/s (P10)" "proxy keys/s" ratio \
        "proxy p50/p99 ms" "proxy CPU us/key"
    printf '|%s|%s|%s|%s|%s|%s|\n' "------------" "---------------------" "-----------------" "--------" \
        "-------------------" "-------------------"
    for cmd in MGET MSET; do
        local test=GET
        [[ $cmd == MSET ]] && test=SET
        local p="proxy $cmd x10" d="direct $test x10"
        printf '| %-10s | %19s | %15s | %6s | %17s | %17s |\n' "$cmd x10" "${rps[$d]}" "${rps[$p]}" \
            "$(ratio_of "${rps[$p]}" "${rps[$d]}")" \
            "${p50[$p]}/${p99[$p]}" "${cpu[$p]}"
    done
    echo
}

memtier() {
    command -v memtier_benchmark >/dev/null || { log "memtier_benchmark not installed; skipping it"; return 0; }
    local common=(--protocol=redis -c 10 -t 2 --ratio=1:1 --key-maximum="$keyspace" --test-time=10 --hide-histogram)
    log "memtier_benchmark direct (--cluster-mode)"
    echo "memtier_benchmark, direct:"
    memtier_benchmark -s "$host" -p "$base_port" --cluster-mode "${common[@]}" 2>/dev/null | grep -E '^(Type|Totals)'
    if [[ $direct_only == 0 ]]; then
        log "memtier_benchmark through slotway"
        echo "memtier_benchmark, through slotway:"
        memtier_benchmark -s "$host" -p "$proxy_port" "${common[@]}" 2>/dev/null | grep -E '^(Type|Totals)'
    fi
}

run_memory() {
    local need=$((connections + 1024))
    if (($(ulimit -n) < need)); then
        ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
        (($(ulimit -n) >= need)) || die "open-file limit $(ulimit -n) < $need; run as root or raise the hard limit"
    fi
    log "open-file limit: $(ulimit -n)"
    start_cluster
    local master_pid
    master_pid=$(<"$cluster_dir/$base_port/redis.pid")
    log "reference: $connections connections to the redis-server master on $base_port"
    redis-cli -h "$host" -p "$base_port" config set maxclients $((connections + 100)) >/dev/null
    python3 "$repo/scripts/conn_memory.py" --host "$host" --port "$base_port" --pid "$master_pid" \
        --connections "$connections" --command PING --label "redis-server $base_port"
    if [[ $direct_only == 0 ]]; then
        start_proxy
        log "$connections connections to slotway"
        echo
        python3 "$repo/scripts/conn_memory.py" --host "$host" --port "$proxy_port" --pid "$proxy_pid" \
            --connections "$connections" --command GET --label slotway
    fi
}

run_throughput() {
    start_cluster
    start_node
    [[ $direct_only == 1 ]] || start_proxy
    if [[ $direct_only == 0 && $reference == 1 ]]; then
        if [[ -n $nutcracker_bin ]]; then
            start_nutcracker
        else
            log "nutcracker (twemproxy) not installed; no reference run with it (apt-get install nutcracker)"
        fi
        [[ -z $predixy_bin ]] || start_predixy
    fi
    local pipeline n test name
    for pipeline in 1 16; do
        n=$requests_p1
        [[ $pipeline == 16 ]] && n=$requests_p16
        for test in set get; do
            bench direct "$test" "$pipeline" "$n"
            [[ $direct_only == 1 ]] || bench proxy "$test" "$pipeline" "$n"
            [[ $direct_only == 1 || $unix == 0 ]] || bench unix "$test" "$pipeline" "$n"
            for name in nutcracker predixy node; do
                [[ -z ${ref_pid[$name]:-} ]] || bench "$name" "$test" "$pipeline" "$n"
            done
        done
    done
    print_table
    print_node_table
    print_reference_table
    [[ $direct_only == 1 ]] || run_multikey
    memtier
}

preflight
if [[ $memory == 1 ]]; then
    run_memory
else
    run_throughput
fi

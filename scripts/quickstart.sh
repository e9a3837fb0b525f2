#!/usr/bin/env bash
# Quickstart: from a fresh Debian/Ubuntu machine to a running Slotway.
#
#   1. installs redis-server and redis-tools with apt-get if they are missing
#      (through sudo unless already root),
#   2. builds the proxy: cargo build --release,
#   3. starts a local 3-master/3-replica cluster on 127.0.0.1:7000-7005
#      (deploy/local-cluster.sh, data in ./.local-cluster),
#   4. runs the proxy in the foreground on 127.0.0.1:6380.
#
# Then, in another terminal:  redis-cli -p 6380 set hello world
# Ctrl-C stops the proxy; the cluster keeps running until you run
#   deploy/local-cluster.sh stop
#
# Environment overrides: BASE_PORT (7000), PROXY_PORT (6380),
# CLUSTER_DIR (<repo>/.local-cluster), SLOTWAY_BIN (target/release/slotway).
# Extra arguments are passed on to slotway.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
base_port=${BASE_PORT:-7000}
proxy_port=${PROXY_PORT:-6380}
cluster_dir=${CLUSTER_DIR:-$repo/.local-cluster}
slotway=${SLOTWAY_BIN:-$repo/target/release/slotway}

step() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [[ $(id -u) == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "error: need root to run '$*' and sudo is not installed" >&2
        exit 1
    fi
}

step "Checking for redis-server and redis-cli"
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    echo "found $(redis-server --version | cut -d' ' -f1-3)"
else
    command -v apt-get >/dev/null || { echo "error: no apt-get; install Redis 7 yourself" >&2; exit 1; }
    echo "installing redis-server and redis-tools with apt-get"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools
    # Debian starts a default redis on 6379; we don't need it.
    if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
        echo "stopping the distribution's default redis-server service (port 6379)"
        as_root systemctl disable --now redis-server || true
    fi
fi

step "Building slotway (cargo build --release)"
if [[ -z ${SLOTWAY_BIN:-} ]]; then
    command -v cargo >/dev/null || {
        echo "error: cargo not found; install Rust (https://rustup.rs), then re-run" >&2
        exit 1
    }
    (cd "$repo" && cargo build --release)
else
    echo "using \$SLOTWAY_BIN=$SLOTWAY_BIN, not building"
fi

step "Starting the local cluster on 127.0.0.1:$base_port-$((base_port + 5))"
"$repo/deploy/local-cluster.sh" start "$cluster_dir" "$base_port"

seeds=()
for i in 0 1 2; do
    seeds+=(--seed "127.0.0.1:$((base_port + i))")
done

step "Running slotway on 127.0.0.1:$proxy_port (Ctrl-C to stop it)"
cat <<EOF
Try it from another terminal:
    redis-cli -p $proxy_port ping
    redis-cli -p $proxy_port set hello world
The cluster keeps running after Ctrl-C; stop it with:
    $repo/deploy/local-cluster.sh stop $cluster_dir $base_port

EOF
echo "+ $slotway --listen 127.0.0.1:$proxy_port ${seeds[*]} $*"

# Let Ctrl-C reach only the proxy, then print the reminder below.
trap ':' INT
status=0
"$slotway" --listen "127.0.0.1:$proxy_port" "${seeds[@]}" "$@" || status=$?
trap - INT

cat <<EOF

slotway exited (status $status). The cluster is still running:
    $repo/deploy/local-cluster.sh status $cluster_dir $base_port   # check it
    $repo/deploy/local-cluster.sh stop $cluster_dir $base_port     # stop it
EOF
# 130 = stopped with Ctrl-C, which is the normal way to end the quickstart.
if [[ $status == 130 ]]; then status=0; fi
exit "$status"

#!/usr/bin/env bash
# Runs every Slotway check, in order, and prints a summary:
#
#   1. cargo fmt --all -- --check
#   2. cargo clippy --workspace --all-targets -- -D warnings
#   3. cargo build --release
#   4. cargo test --workspace --release
#   5. protocol/fuzz/smoke.sh                 (if it exists)
#   6. pytest tests  (integration tests against real Redis Clusters)
#
# Usage: scripts/test.sh [--fast] [--fail-fast] [-- PYTEST_ARGS...]
#   --fast        skip fmt, clippy, cargo test and the fuzz smoke run
#   --fail-fast   stop at the first failing step (also FAIL_FAST=1)
#   PYTEST_ARGS   passed to pytest, e.g.  scripts/test.sh --fast -- -k failover -x
#
# Set-up it does on its own: installs redis-server/redis-tools with apt-get
# if they are missing (sudo unless root), creates tests/.venv and installs
# tests/requirements.txt into it (again only when that file changed).
# Nothing else is installed system-wide.
#
# Environment: PYTEST_TIMEOUT (per-test limit, 300 s), FUZZ_SECONDS (20).
# Exit status: 0 if every step passed, 1 otherwise.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

fast=0
fail_fast=${FAIL_FAST:-0}
pytest_args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --fast) fast=1 ;;
        --fail-fast) fail_fast=1 ;;
        --) shift; pytest_args=("$@"); break ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# The integration tests must test the binary this run builds.
if [[ -z ${SLOTWAY_BIN:-} && -n ${CARGO_TARGET_DIR:-} ]]; then
    export SLOTWAY_BIN=$CARGO_TARGET_DIR/release/slotway
fi

pytest_timeout=${PYTEST_TIMEOUT:-300}
fuzz_seconds=${FUZZ_SECONDS:-20}
venv=$repo/tests/.venv
started_at=$SECONDS

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
banner() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
note() { printf '    %s\n' "$*"; }

as_root() {
    if [[ $(id -u) == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "error: need root for '$*' and sudo is not installed" >&2
        return 1
    fi
}

apt_install() {
    command -v apt-get >/dev/null || { echo "error: apt-get not found; please install: $*" >&2; return 1; }
    note "installing with apt-get: $*"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# -- set-up ----------------------------------------------------------------------------

setup_redis() {
    banner "Checking Redis (redis-server, redis-cli, redis-benchmark)"
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        apt_install redis-server redis-tools
    fi
    note "$(redis-server --version)"
}

setup_venv() {
    banner "Python venv $venv"
    command -v python3 >/dev/null || apt_install python3 python3-venv
    if [[ ! -x $venv/bin/python ]]; then
        rm -rf "$venv"
        if ! python3 -m venv "$venv" 2>/dev/null; then
            rm -rf "$venv"
            apt_install python3-venv
            python3 -m venv "$venv"
        fi
    fi
    local stamp want
    stamp=$venv/.requirements.sha256
    want=$(cat tests/requirements.txt <("$venv/bin/python" --version) | sha256sum | cut -d' ' -f1)
    if [[ ! -f $stamp || $(<"$stamp") != "$want" ]]; then
        note "installing tests/requirements.txt"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/requirements.txt
        echo "$want" >"$stamp"
    else
        note "requirements up to date"
    fi
    note "$("$venv/bin/python" --version), $("$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null |
        awk '$1 == "redis" || $1 == "pytest" || $1 == "pytest-timeout" { printf "%s %s  ", $1, $2 }')"
}

setup_rust() {
    banner "Rust toolchain"
    command -v cargo >/dev/null || {
        echo "error: cargo not found. Install Rust (https://rustup.rs) first." >&2
        exit 1
    }
    note "$(cargo --version)"
}

# -- steps -----------------------------------------------------------------------------

names=()
results=()
durations=()
failed=0

# run_step NAME TIMEOUT CMD...: run CMD with a time limit and record the outcome.
run_step() {
    local name=$1 limit=$2 start status
    shift 2
    banner "$name"
    echo "+ $*"
    start=$SECONDS
    local timeout_cmd=(timeout -k 30 "$limit")
    # With a terminal, keep the command in our process group so Ctrl-C reaches it.
    if [[ -t 0 ]]; then timeout_cmd=(timeout --foreground -k 30 "$limit"); fi
    status=0
    "${timeout_cmd[@]}" "$@" || status=$?
    if [[ $status == 124 ]]; then
        echo "!! $name timed out after $limit"
        status="timed out after $limit"
    fi
    record "$name" "$status" $((SECONDS - start))
}

record() {
    names+=("$1")
    durations+=("$3")
    if [[ $2 == 0 ]]; then
        results+=(PASS)
    elif [[ $2 == skip* ]]; then
        results+=("SKIP (${2#skip:})")
    else
        results+=("FAIL ($2)")
        failed=1
        if [[ $fail_fast == 1 ]]; then
            summary
            exit 1
        fi
    fi
}

last_passed() { [[ ${results[-1]} == PASS ]]; }

summary() {
    banner "Summary"
    local i
    for i in "${!names[@]}"; do
        printf '    %-44s %-28s %4ss\n' "${names[$i]}" "${results[$i]}" "${durations[$i]}"
    done
    printf '    %-44s %-28s %4ss\n' "total" "$([[ $failed == 0 ]] && echo PASS || echo FAIL)" $((SECONDS - started_at))
}

setup_redis
setup_venv
setup_rust

if [[ $fast == 0 ]]; then
    run_step "cargo fmt --check" 5m cargo fmt --all -- --check
    run_step "cargo clippy -D warnings" 40m cargo clippy --workspace --all-targets -- -D warnings
fi
run_step "cargo build --release" 40m cargo build --release
build_ok=0
last_passed && build_ok=1
if [[ $fast == 0 ]]; then
    run_step "cargo test --workspace --release" 40m cargo test --workspace --release
    if [[ -f protocol/fuzz/smoke.sh ]]; then
        run_step "protocol/fuzz/smoke.sh $fuzz_seconds" 20m bash protocol/fuzz/smoke.sh "$fuzz_seconds"
    else
        record "protocol/fuzz/smoke.sh" "skip:not present" 0
    fi
fi
if [[ $build_ok == 1 ]]; then
    run_step "pytest tests" 30m "$venv/bin/python" -m pytest tests -q \
        --timeout="$pytest_timeout" --durations=10 "${pytest_args[@]}"
else
    # Never test a stale binary from an earlier build.
    record "pytest tests" "not run: build failed" 0
fi

summary
exit "$failed"

#!/usr/bin/env bash
# Fuzz smoke run of the `parse` target (protocol/fuzz/fuzz_targets/parse.rs).
#
#   protocol/fuzz/smoke.sh [seconds]      # default 20
#
# Installs cargo-fuzz if missing. cargo-fuzz passes nightly-only flags (-Zsanitizer=address);
# RUSTC_BOOTSTRAP=1 lets a stable toolchain accept them, so no nightly is needed. The first
# run builds the target in protocol/fuzz/target (about a minute); the fuzzing itself stops
# after the given time. New corpus entries go to protocol/fuzz/corpus/parse (git-ignored);
# a crash is written to protocol/fuzz/artifacts/parse/ and makes this script fail.
set -euo pipefail

seconds="${1:-20}"
fuzz_dir="$(cd "$(dirname "$0")" && pwd)"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

mkdir -p "$fuzz_dir/corpus/parse"
cd "$fuzz_dir/.."
RUSTC_BOOTSTRAP=1 cargo fuzz run parse \
    "$fuzz_dir/corpus/parse" "$fuzz_dir/seeds/parse" \
    -- -max_total_time="$seconds" -dict="$fuzz_dir/resp.dict" -print_final_stats=1

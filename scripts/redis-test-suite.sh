#!/usr/bin/env bash
# Runs Redis's own unit tests (tests/unit/*.tcl of a Redis source tree) against a running
# Slotway, in the suite's external-server mode: a way to hunt for differences from one node.
# Not part of scripts/test.sh: the suite is not packaged, needs tclsh, and some of its tests
# check what only one node can show (see tests/README.md for what differs and why).
#
# Usage: scripts/redis-test-suite.sh REDIS_SOURCE_DIR PORT [UNIT ...]
#   REDIS_SOURCE_DIR  e.g. from `apt-get source redis` (with deb-src enabled)
#   PORT              Slotway's port on 127.0.0.1 (in front of a cluster you may flush)
#   UNIT              e.g. unit/type/list unit/multi (default: the data-type and core units)
#
# Prints one line per unit: tests passed, failed, and whether the unit ran to its end. Each
# unit's full output is in /tmp/slotway-redis-suite/<unit>.log.
set -euo pipefail

src=${1:?usage: $0 REDIS_SOURCE_DIR PORT [UNIT ...]}
port=${2:?usage: $0 REDIS_SOURCE_DIR PORT [UNIT ...]}
shift 2
units=("$@")
if [ ${#units[@]} -eq 0 ]; then
    units=(unit/type/string unit/type/incr unit/type/list unit/type/list-2 unit/type/list-3
           unit/type/hash unit/type/set unit/type/zset unit/type/stream
           unit/type/stream-cgroups unit/expire unit/keyspace unit/multi unit/scripting
           unit/functions unit/pubsub unit/scan unit/bitops unit/bitfield unit/geo
           unit/hyperloglog unit/info-command unit/protocol unit/quit unit/other
           unit/introspection unit/introspection-2)
fi
command -v tclsh >/dev/null || { echo "tclsh is needed (apt-get install tcl)" >&2; exit 1; }
out=/tmp/slotway-redis-suite
mkdir -p "$out"
# Tests that need a node's own process, replication or DEBUG cannot run through a proxy.
skip=(needs:repl needs:debug needs:config-maxmemory needs:config-resetstat needs:reset
      needs:save needs:pfdebug needs:latency needs:local-process)
tags=()
for t in "${skip[@]}"; do tags+=(--tags "-$t"); done
cd "$src"
for unit in "${units[@]}"; do
    log="$out/$(echo "$unit" | tr / _).log"
    redis-cli -p "$port" flushall >/dev/null
    timeout 600 ./runtest --host 127.0.0.1 --port "$port" --singledb --single "$unit" \
        "${tags[@]}" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' > "$log" || true
    ok=$(grep -c '^\[ok\]' "$log" || true)
    err=$(grep -c '^\[err\]' "$log" || true)
    exc=$(grep -c '^\[exception\]' "$log" || true)
    whole=$(grep -q 'All tests passed' "$log" && echo "all passed" || echo "")
    echo "$unit ok=$ok err=$err exception=$exc $whole"
done

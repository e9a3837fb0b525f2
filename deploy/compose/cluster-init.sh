#!/bin/sh
# One-shot job of docker-compose.yml: joins redis-1..redis-6 into a cluster of 3 masters with
# one replica each, unless they already form one (a `docker compose up` after a stop).
set -eu
nodes=""
for i in 1 2 3 4 5 6; do
    host="redis-$i"
    until redis-cli -h "$host" -p 6379 ping >/dev/null 2>&1; do sleep 0.5; done
    # CLUSTER MEET needs IP addresses, not names.
    ip=$(getent hosts "$host" | awk '{ print $1 }')
    nodes="$nodes $ip:6379"
done
if redis-cli -h redis-1 -p 6379 cluster info | grep -q '^cluster_state:ok'; then
    echo "cluster already created"
    exit 0
fi
# shellcheck disable=SC2086 # one argument per node
redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes
until redis-cli -h redis-1 -p 6379 cluster info | grep -q '^cluster_state:ok'; do sleep 0.5; done
echo "cluster ready"

"""Multi-key and keyspace-wide commands answer exactly as one node would (issue 3).

Keys are spread over all masters; replies are compared with a standalone
redis-server that ran the same commands.
"""

from __future__ import annotations

import hashlib
import itertools
import random

import threading
import time

import pytest
import redis

from test_core import run_script, spread_keys


@pytest.fixture
def clean(cluster, standalone):
    """Both the cluster and the standalone node start empty."""
    cluster.flushall()
    standalone.client().flushall()


def compare(proxy, standalone, script, protocol=2, sort=()):
    p = run_script(proxy.client(protocol=protocol), script)
    s = run_script(standalone.client(protocol=protocol), script)
    for i, (cmd, a, b) in enumerate(zip(script, p, s)):
        if i in sort:
            a, b = sorted(a), sorted(b)
        assert a == b, f"{cmd}: proxy {a!r} != standalone {b!r} (RESP{protocol})"


@pytest.mark.parametrize("protocol", [2, 3])
def test_split_commands_match_a_single_node(proxy, standalone, cluster, clean, protocol):
    keys = spread_keys(cluster, "mk", per_master=4)
    pairs = [x for k in keys for x in (k, f"v-{k}")]
    missing = "mk:missing"
    script = [
        ["MSET", *pairs],
        ["MGET", keys[0], missing, *keys, keys[0], keys[-1]],
        ["EXISTS", *keys, keys[0], keys[0], missing],
        ["TOUCH", *keys[:5], missing],
        ["DBSIZE"],
        ["KEYS", "mk:*"],
        ["DEL", keys[0], keys[5], missing, keys[0]],
        ["UNLINK", keys[1], keys[6]],
        ["MGET", *keys],
        ["DBSIZE"],
        ["RPUSH", keys[2], "x"],  # WRONGTYPE from the node owning keys[2]
        ["MSET", keys[3], "new", keys[8], "new"],
        ["MGET", keys[3], keys[8]],
        ["FLUSHDB"],
        ["DBSIZE"],
        ["MGET", *keys[:3]],
    ]
    compare(proxy, standalone, script, protocol, sort={5})


@pytest.mark.parametrize("protocol", [2, 3])
def test_set_algebra_across_slots_matches_a_single_node(proxy, standalone, cluster, clean, protocol):
    s = spread_keys(cluster, "set", per_master=2)
    assert len({cluster.keyslot(k) for k in s}) == len(s)
    big = [f"m{i}" for i in range(1500)]
    script = [
        ["SADD", s[0], "a", "b", "c", "x"], ["SADD", s[2], "b", "c", "d"],
        ["SADD", s[4], "c", "e", "b"], ["SADD", s[1], *big], ["SADD", s[3], *big[::3], "a"],
        ["SET", s[5], "not a set"],
        ["SUNION", s[0], s[2], s[4]], ["SINTER", s[0], s[2], s[4]], ["SDIFF", s[0], s[2], s[4]],
        ["SDIFF", s[2], s[0]], ["SUNION", s[0], s[0], s[2], "set:missing"],
        ["SINTER", s[1], s[3]], ["SUNION", s[1], s[3]], ["SDIFF", s[1], s[3], s[0]],
        ["SINTER", s[0], "set:missing"], ["SDIFF", "set:missing", s[0]],
        ["SUNION", "set:missing", "set:missing2"],
        ["SINTER", s[0], s[5]], ["SUNION", s[5], s[0]], ["SDIFF", s[0], s[5]],
        ["SINTER", "set:missing", s[5]],
        ["SINTERCARD", "3", s[0], s[2], s[4]], ["SINTERCARD", "2", s[1], s[3]],
        ["SINTERCARD", "2", s[1], s[3], "LIMIT", "100"], ["SINTERCARD", "2", s[1], s[3], "LIMIT", "0"],
        ["SINTERCARD", "2", s[1], s[3], "LIMIT", "-1"], ["SINTERCARD", "2", s[1], s[3], "LIMIT"],
        ["SINTERCARD", "2", s[0], s[5]], ["SINTERCARD", "3", s[0], s[2]],
        ["ZADD", "set:z", "1", "b", "2", "c", "3", "q"],
        ["ZINTERCARD", "2", s[0], "set:z"], ["ZINTERCARD", "2", s[2], s[3], "LIMIT", "7"],
    ]
    compare(proxy, standalone, script, protocol, sort=set(range(6, 21)))
    # The reply's type, byte for byte: a set in RESP3, an array in RESP2 (one member each, so
    # that no node's hash order is involved).
    for hello in (b"", b"HELLO 3\r\n"):
        req = hello + f"SINTER {s[0]} {s[3]}\r\nSDIFF {s[4]} {s[0]}\r\nSINTER {s[0]} set:missing\r\n".encode()
        ours, theirs = (e.raw(req, timeout=0.5).split(b"modules\r\n*0\r\n")[-1] for e in (proxy, standalone))
        assert ours == theirs and ours.count(b"$1\r\n") == 2


@pytest.mark.parametrize("protocol", [2, 3])
def test_set_store_forms_across_slots_match_a_single_node(proxy, standalone, cluster, clean, protocol):
    s = spread_keys(cluster, "sst", per_master=2)
    dst, dst2 = s[5], s[4]
    big = [f"m{i}" for i in range(1500)]
    script = [
        ["SADD", s[0], "a", "b", "c", "x"], ["SADD", s[1], "b", "c", "d"], ["SADD", s[2], *big],
        ["SADD", s[3], *big[::2], "a"], ["SET", dst, "a string, replaced"], ["SET", "sst:str", "v"],
        ["SUNIONSTORE", dst, s[0], s[1], s[2]], ["TYPE", dst], ["SCARD", dst],
        ["SINTERSTORE", dst, s[2], s[3]], ["SCARD", dst], ["SMISMEMBER", dst, "m0", "m1", "m2", "a"],
        ["SDIFFSTORE", dst, s[0], s[1], s[3]], ["SMEMBERS", dst],
        ["SUNIONSTORE", s[0], s[0], s[1]], ["SMEMBERS", s[0]],
        ["SINTERSTORE", dst, s[0], "sst:missing"], ["EXISTS", dst],
        ["SADD", dst2, "keep"], ["SINTERSTORE", dst2, s[0], "sst:str"], ["SMEMBERS", dst2],
        ["SDIFFSTORE", dst2, "sst:missing", s[0]], ["EXISTS", dst2],
    ]
    compare(proxy, standalone, script, protocol, sort={13, 15, 20})
    # The result is where a cluster client finds it, on the destination's master.
    c = proxy.client()
    expected = {"b", "c", "d"} | set(big[::2]) | {"a"}
    assert c.sunionstore(dst, s[1], s[3]) == len(expected)
    assert cluster.node_client(cluster.node_for_key(dst)).smembers(dst) == expected


@pytest.mark.parametrize("protocol", [2, 3])
def test_sorted_set_store_forms_across_slots_match_a_single_node(proxy, standalone, cluster, clean, protocol):
    z = spread_keys(cluster, "zst", per_master=3)
    dst = z[8]
    big = {f"m{i}": i / 7 for i in range(1200)}

    def stored(*cmd):
        return [cmd, ["ZRANGE", cmd[1], "0", "-1", "WITHSCORES"]]

    script = [
        ["ZADD", z[0], "1", "a", "2.5", "b", "0.1", "c", "1e300", "x"],
        ["ZADD", z[1], "3", "b", "0.2", "c", "-4", "d", "1e300", "x"],
        ["ZADD", z[2], "5", "c", "1", "b", "inf", "e"], ["SADD", z[3], "a", "b", "e"],
        ["ZADD", z[4], "inf", "p"], ["ZADD", z[5], "-inf", "p"], ["SET", z[6], "a string"],
        ["ZADD", z[7], *[x for m, sc in big.items() for x in (str(sc), m)]],
        ["SET", dst, "replaced"],
        *stored("ZUNIONSTORE", dst, "3", z[0], z[1], z[2]),
        *stored("ZINTERSTORE", dst, "3", z[0], z[1], z[2]),
        *stored("ZDIFFSTORE", dst, "2", z[0], z[1]),
        *stored("ZUNIONSTORE", dst, "3", z[0], z[1], z[3], "WEIGHTS", "2", "0.5", "-1"),
        *stored("ZUNIONSTORE", dst, "2", z[0], z[1], "AGGREGATE", "MIN"),
        *stored("ZINTERSTORE", dst, "2", z[0], z[1], "aggregate", "max", "WEIGHTS", "0", "1"),
        *stored("ZINTERSTORE", dst, "2", z[0], z[3]),
        *stored("ZUNIONSTORE", dst, "2", z[4], z[5]),
        *stored("ZUNIONSTORE", dst, "2", z[4], z[0], "WEIGHTS", "0", "1"),
        *stored("ZUNIONSTORE", dst, "2", z[7], z[0], "WEIGHTS", "3", "1"),
        *stored("ZUNIONSTORE", z[0], "2", z[0], z[1]),
        ["ZINTERSTORE", dst, "2", z[0], "zst:missing"], ["EXISTS", dst],
        ["ZUNIONSTORE", dst, "1", "zst:missing"], ["EXISTS", dst],
        ["ZADD", dst, "1", "keep"],
        ["ZUNIONSTORE", dst, "2", z[0], z[6]], ["ZINTERSTORE", dst, "2", "zst:missing", z[6]],
        ["ZUNIONSTORE", dst, "2", z[0], z[1], "WEIGHTS", "1"],
        ["ZUNIONSTORE", dst, "2", z[0], z[1], "WEIGHTS", "1", "x"],
        ["ZUNIONSTORE", dst, "2", z[0], z[1], "WEIGHTS", "1", "nan"],
        ["ZUNIONSTORE", dst, "2", z[0], z[1], "AGGREGATE", "avg"],
        ["ZUNIONSTORE", dst, "2", z[0], z[1], "WITHSCORES"],
        ["ZDIFFSTORE", dst, "2", z[0], z[1], "WEIGHTS", "1", "2"],
        ["ZRANGE", dst, "0", "-1", "WITHSCORES"],
    ]
    compare(proxy, standalone, script, protocol)
    # The result is where a cluster client finds it, on the destination's master.
    c = proxy.client()
    assert c.zunionstore(dst, [z[7], z[1]]) == 1204
    assert cluster.node_client(cluster.node_for_key(dst)).zscore(dst, "m700") == 100.0


@pytest.mark.parametrize("protocol", [2, 3])
def test_bitop_across_slots_matches_a_single_node(proxy, standalone, cluster, clean, protocol):
    k = spread_keys(cluster, "bit", per_master=2)
    dst = k[5]
    script = [
        ["SET", k[0], b"foobar"], ["SET", k[1], b"abcdef\x00\xff\r\n"], ["SET", k[2], b"\x01"],
        ["SETBIT", k[3], "100000", "1"], ["SADD", k[4], "x"], ["SET", dst, "old", "EX", "100"],
        ["BITOP", "AND", dst, k[0], k[1]], ["GET", dst], ["TTL", dst],
        ["BITOP", "OR", dst, k[0], k[1], k[2]], ["GET", dst],
        ["BITOP", "xor", dst, k[0], k[1], "bit:missing"], ["GET", dst],
        ["BITOP", "NOT", dst, k[1]], ["GET", dst],
        ["BITOP", "OR", dst, k[3], k[2]], ["BITCOUNT", dst], ["STRLEN", dst],
        ["BITOP", "AND", k[4], k[0], k[2]], ["TYPE", k[4]], ["GET", k[4]],
        ["BITOP", "AND", dst, "bit:missing", "bit:missing2"], ["EXISTS", dst],
        ["SET", dst, "kept"], ["SADD", "bit:set", "x"],
        ["BITOP", "OR", dst, k[0], "bit:set"], ["BITOP", "NOT", dst, k[0], k[1]],
        ["BITOP", "NAND", dst, k[0], k[1]], ["GET", dst],
        ["BITOP", "AND", k[0], k[0], k[1]], ["GET", k[0]],
    ]
    ours = run_script(proxy.client(protocol=protocol, decode_responses=False), script)
    theirs = run_script(standalone.client(protocol=protocol, decode_responses=False), script)
    for cmd, a, b in zip(script, ours, theirs):
        assert a == b, f"{cmd}: proxy {a!r} != standalone {b!r} (RESP{protocol})"
    # The value is where a cluster client finds it, on the destination's master.
    assert proxy.client().bitop("OR", dst, k[2], k[1]) == 10
    node = cluster.node_client(cluster.node_for_key(dst), decode_responses=False)
    assert node.get(dst) == bytes([0x61 | 0x01]) + b"bcdef\x00\xff\r\n"


def test_pfcount_across_slots_matches_a_single_node(proxy, standalone, cluster, clean):
    keys = spread_keys(cluster, "hll", per_master=2)
    sizes = [1, 40, 3000, 20000, 0, 100_000]  # sparse and dense encodings
    rng = random.Random(11)
    clients = (proxy.client(decode_responses=False), standalone.client(decode_responses=False))
    for key, n in zip(keys, sizes):
        elements = [f"e{rng.randrange(10**9)}" for _ in range(n)]
        for c in clients:
            c.pfadd(key)
            for i in range(0, n, 5000):
                c.pfadd(key, *elements[i:i + 5000])
    assert {clients[0].get(k)[4] for k in keys} == {0, 1}  # both encodings are involved
    combos = [list(c) for r in (2, 3, 6) for c in itertools.combinations(keys, r)]
    combos += [[keys[0], "hll:missing"], ["hll:missing", "hll:missing2"], [*keys, keys[2]]]
    ours = [clients[0].pfcount(*combo) for combo in combos]
    theirs = [clients[1].pfcount(*combo) for combo in combos]
    assert ours == theirs
    assert max(ours) > 100_000
    # Errors in key order, in Redis's words.
    for c in clients:
        c.set("hll:str", "not an hll")
        c.sadd("hll:set", "x")
    for combo in ([keys[3], "hll:str"], ["hll:str", "hll:set"], ["hll:set", "hll:str"]):
        replies = []
        for c in clients:
            with pytest.raises(redis.ResponseError) as e:
                c.pfcount(*combo)
            replies.append(str(e.value))
        assert replies[0] == replies[1], combo


@pytest.mark.parametrize("protocol", [2, 3])
def test_rename_and_copy_across_slots_match_a_single_node(proxy, standalone, cluster, clean, protocol):
    k = spread_keys(cluster, "ren", per_master=3)
    script = [
        ["SET", k[0], "1"], ["RPUSH", k[1], "x", "y"], ["HSET", k[2], "f", "v"],
        ["SET", k[3], "with ttl", "EX", "1000"], ["SET", k[4], "old"], ["ZADD", k[5], "1.5", "m"],
        ["RENAME", k[0], k[4]], ["GET", k[4]], ["EXISTS", k[0]],
        ["RENAME", "ren:missing", k[6]], ["RENAMENX", "ren:missing", k[6]],
        ["RENAMENX", k[1], k[2]], ["RENAMENX", k[1], k[6]], ["LRANGE", k[6], "0", "-1"], ["EXISTS", k[1]],
        ["RENAME", k[3], k[7]], ["EXISTS", k[3]], ["GET", k[7]],
        ["COPY", k[2], k[8]], ["HGETALL", k[8]], ["HGETALL", k[2]],
        ["COPY", k[2], k[4]], ["GET", k[4]], ["COPY", k[2], k[4], "REPLACE"], ["TYPE", k[4]],
        ["COPY", "ren:missing", k[0]], ["COPY", k[5], k[0], "DB", "0"], ["ZSCORE", k[0], "m"],
        ["COPY", k[2], k[1], "FOO"], ["COPY", k[2], k[1], "DB", "x"], ["COPY", k[2], k[1], "DB"],
        ["RENAME", k[5], k[4]], ["ZRANGE", k[4], "0", "-1", "WITHSCORES"], ["EXISTS", k[5]],
    ]
    compare(proxy, standalone, script, protocol)
    # The TTL moved with the value; the value is on the destination's master, the source gone
    # from its own.
    ttl = proxy.client().ttl(k[7])
    assert 990 < ttl <= 1000
    assert cluster.node_client(cluster.node_for_key(k[7])).get(k[7]) == "with ttl"
    assert cluster.node_client(cluster.node_for_key(k[3])).exists(k[3]) == 0


def test_rename_swap_pattern_never_shows_a_missing_key(proxy, cluster, clean):
    """Build a new value under a temporary name, then RENAME it into place: readers of the
    live key see the old or the new value, never a missing key (as on one node)."""
    c = proxy.client()
    live, tmp = "swap:live", "swap:tmp"
    assert cluster.keyslot(live) != cluster.keyslot(tmp)
    c.set(live, "v0")
    seen, stop = set(), threading.Event()

    def reader():
        r = proxy.client()
        while not stop.is_set():
            seen.add(r.get(live))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1, 200):
            c.set(tmp, f"v{i}")
            assert c.rename(tmp, live) is True
            assert c.exists(tmp) == 0
    finally:
        stop.set()
        t.join()
    assert None not in seen and len(seen) > 1
    assert c.get(live) == "v199"


@pytest.mark.parametrize("protocol", [2, 3])
def test_smove_across_slots_matches_a_single_node(proxy, standalone, cluster, clean, protocol):
    k = spread_keys(cluster, "smv", per_master=1)
    src, dst, other = k
    script = [
        ["SET", other, "a string"], ["SADD", src, "a", "b"], ["SADD", dst, "c"],
        ["SMOVE", "smv:missing", other, "a"], ["SMOVE", src, other, "zz"], ["SMOVE", src, other, "a"],
        ["SMEMBERS", src], ["SMOVE", other, src, "a"], ["SMOVE", src, dst, "zz"],
        ["SMOVE", src, dst, "a"], ["SMEMBERS", dst], ["SMEMBERS", src],
        ["SMOVE", src, "smv:new", "b"], ["EXISTS", src], ["SMEMBERS", "smv:new"],
    ]
    compare(proxy, standalone, script, protocol, sort={6, 10, 11, 14})


def test_smove_across_slots_under_concurrency_loses_and_duplicates_nothing(proxy, cluster, clean):
    a, b = "smv:left", "smv:right"
    assert cluster.keyslot(a) != cluster.keyslot(b)
    members = [f"m{i}" for i in range(200)]
    proxy.client().sadd(a, *members)
    moved = []

    def mover(src, dst):
        c = proxy.client()
        n = 0
        for m in members:
            n += c.smove(src, dst, m)
        moved.append(n)

    threads = [threading.Thread(target=mover, args=args) for args in [(a, b), (b, a), (a, b)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c = proxy.client()
    left, right = c.smembers(a), c.smembers(b)
    assert not left & right
    assert left | right == set(members)
    assert sum(moved) >= len(members)


def test_multi_step_commands_follow_moved_at_every_stage(proxy_factory, cluster, clean):
    """A proxy whose slot map is stale: each stage of RENAME (read), SMOVE (take, two pipelined
    commands), SUNIONSTORE (write) and PFMERGE (the run over copies) meets a MOVED, follows it,
    and the client sees none."""
    from test_ops import value
    from test_sessions import move_slot

    # One proxy per command: the first MOVED refreshes the whole map.
    stale = [proxy_factory("--refresh-interval-ms", "60000", metrics=True) for _ in range(4)]
    clients = [p.client() for p in stale]
    assert all(c.ping() for c in clients)
    tags = ["{mv1}", "{mv2}", "{mv3}", "{mv4}"]
    homes = {t: cluster.node_for_key(t) for t in tags}
    for t in tags:
        move_slot(cluster, cluster.keyslot(t), next(m for m in cluster.masters() if m != homes[t]))
    try:
        owner = {t: cluster.node_client(cluster.node_for_key(t)) for t in tags}
        owner["{mv1}"].set("{mv1}src", "v")
        owner["{mv2}"].sadd("{mv2}set", "m")
        moved = [lambda p=p: value(p.metrics(), "slotway_redirects_total", kind="moved") for p in stale]
        assert [m() for m in moved] == [0, 0, 0, 0]
        assert clients[0].rename("{mv1}src", "mv:renamed") is True
        assert clients[1].smove("{mv2}set", "mv:set", "m") is True
        assert clients[2].sunionstore("{mv3}dst", "mv:set", "mv:missing") == 1
        clients[3].pfadd("mv:hll", "a", "b")
        assert clients[3].pfmerge("{mv4}hll", "mv:hll") is True
        assert [m() for m in moved] == [1, 1, 1, 1]
        c = clients[0]
        assert c.get("mv:renamed") == "v" and c.exists("{mv1}src", "{mv2}set") == 0
        assert owner["{mv3}"].smembers("{mv3}dst") == {"m"}
        assert owner["{mv4}"].pfcount("{mv4}hll") == 2
    finally:
        cluster.flushall()
        for t in tags:
            move_slot(cluster, cluster.keyslot(t), homes[t])


def test_multi_step_commands_work_while_their_slot_is_migrating(proxy, cluster, clean):
    """A slot half-way through a migration (MIGRATING on its master, IMPORTING on the next,
    some keys moved): SMOVE from a moved set is asked on the new node, an LMOVE or SMOVE
    whose destination refuses puts the element back on the new node, ZUNIONSTORE replaces a
    destination still on the old node, a transaction whose
    watched key left the node aborts as if the key had changed, and PFMERGE into a key still on
    the old node (run over copies) waits for the slot to settle instead of failing, as do a
    transaction over a moved and an unmoved key, and a run over copies pipelined with a read
    of its destination (which must not run first)."""
    tag = "{migr}"
    slot = cluster.keyslot(tag)
    home = cluster.node_for_slot(slot)
    away = next(m for m in cluster.masters() if m != home)
    old, new = cluster.node(home).admin, cluster.node(away).admin
    c = proxy.client()
    c.sadd(f"{tag}set", "m")
    c.pfadd(f"{tag}hll", "a")
    c.pfadd("migr:hll", "b", "c")
    c.set(f"{tag}w", "0")
    c.set(f"{tag}tx", "before")
    c.mset({f"{tag}ta": "0", f"{tag}tb": "0", f"{tag}geo": "x", f"{tag}ma": "0", f"{tag}mb": "0"})
    c.zadd(f"{tag}zdst", {"old": 1})
    c.zadd("migr:z1", {"a": 1})
    c.zadd("migr:z2", {"b": 2})
    host, port = away.rsplit(":", 1)
    new.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(home))
    old.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.node_id(away))

    def pfmerge():
        return proxy.client().pfmerge(f"{tag}hll", "migr:hll")

    def transaction():
        with proxy.client().pipeline(transaction=True) as p:
            p.incr(f"{tag}ta")
            p.incr(f"{tag}tb")
            return p.execute()

    def store_then_read():
        # GEOSEARCHSTORE from a missing source deletes its destination.
        with proxy.client().pipeline(transaction=False) as p:
            p.execute_command("GEOSEARCHSTORE", f"{tag}geo", "migr:nogeo",
                              "FROMLONLAT", "15", "37", "BYRADIUS", "300", "km")
            p.exists(f"{tag}geo")
            return p.execute()

    def multi_key_then_write():
        # MSET is refused (one key moved, one not) until the slot settles; INCR must see its
        # value, as on one node, not run first on the old node.
        with proxy.client().pipeline(transaction=False) as p:
            p.mset({f"{tag}ma": "1", f"{tag}mb": "2"})
            p.incr(f"{tag}mb")
            return p.execute()

    result: dict = {}

    def run(f):
        try:
            result[f.__name__] = f()
        except redis.RedisError as e:
            result[f.__name__] = str(e)

    waiting = [threading.Thread(target=run, args=(f,))
               for f in (pfmerge, transaction, store_then_read, multi_key_then_write)]
    try:
        old.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", f"{tag}set")
        # Regression: the take stage was two pipelined commands; after ASKING only the first
        # ran on the new node, and the client got the second's MOVED.
        assert c.smove(f"{tag}set", "migr:dst", "m") is True
        assert c.smembers("migr:dst") == {"m"}
        # Regression: a move refused by its destination put what it took back with a request
        # nobody followed; the old node answered ASK (the emptied key had left it) and the
        # element was lost.
        c.set("migr:str", "s")
        c.rpush(f"{tag}list", "x")
        c.sadd(f"{tag}set2", "p")
        old.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", f"{tag}list", f"{tag}set2")
        with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
            c.lmove(f"{tag}list", "migr:str", "LEFT", "LEFT")
        assert c.lrange(f"{tag}list", 0, -1) == ["x"]
        with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
            c.smove(f"{tag}set2", "migr:str", "p")
        assert c.smembers(f"{tag}set2") == {"p"}
        # Regression: a store's write (one script: DEL, then ZADD) to a destination still on
        # the old node was refused after its DEL, the emptied key being the new node's: the
        # client got "Script attempted to access a non local key", and the destination was gone.
        assert c.zunionstore(f"{tag}zdst", ["migr:z1", "migr:z2"]) == 2
        assert c.zrange(f"{tag}zdst", 0, -1, withscores=True) == [("a", 1.0), ("b", 2.0)]
        # Regression: answered EXECABORT (the node refused the queued SET with ASK).
        with proxy.client().pipeline() as p:
            p.watch(f"{tag}w")
            old.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", f"{tag}w")
            p.multi()
            p.set(f"{tag}w", "1")
            with pytest.raises(redis.WatchError):
                p.execute()
        # Regression: a transaction's group refused with ASK waited to be retried, and the
        # client's next write to the key, asked on the new node at once, ran before it.
        old.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", f"{tag}tx")
        script = [["MULTI"], ["SET", f"{tag}tx", "in-exec"], ["INCR", "migr:n"], ["EXEC"],
                  ["SET", f"{tag}tx", "after"], ["GET", f"{tag}tx"]]
        payload = b"".join(
            b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in cmd)
            for cmd in script)
        expected = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:1\r\n+OK\r\n$5\r\nafter\r\n"
        assert proxy.raw(payload, timeout=8, expect=expected) == expected
        # Regressions, in order: PFMERGE answered "Script attempted to access a non local
        # key"; the transaction (refused with ASK by the old node, then at EXEC with TRYAGAIN
        # by the new one, where only one of its keys is) answered that TRYAGAIN; the EXISTS
        # pipelined after GEOSEARCHSTORE ran while GEOSEARCHSTORE waited, and found the key.
        # And MSET (a multi-key request to a slot the proxy has seen migrating: the GET's ASK)
        # held the client's INCR pipelined after it.
        old.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", f"{tag}tb", f"{tag}ma")
        assert c.get(f"{tag}ma") == "0"
        for t in waiting:
            t.start()
        time.sleep(0.3)
        assert result == {}, "answered while the slot was migrating"
    finally:
        cluster.move_slot(slot, away)
    for t in waiting:
        t.join(timeout=10)
    try:
        assert result == {"pfmerge": True, "transaction": [1, 1], "store_then_read": [0, 0],
                          "multi_key_then_write": [True, 3]}
        assert c.pfcount(f"{tag}hll") == 3
        direct = cluster.node_client(away)
        assert direct.pfcount(f"{tag}hll") == 3
        assert direct.get(f"{tag}w") == "0" and direct.exists(f"{tag}set", f"{tag}geo") == 0
        assert direct.lrange(f"{tag}list", 0, -1) == ["x"]
        assert direct.smembers(f"{tag}set2") == {"p"}
        assert direct.zrange(f"{tag}zdst", 0, -1) == ["a", "b"]
        assert direct.mget(f"{tag}ta", f"{tag}tb") == ["1", "1"]
        assert not [k for k in c.keys("*") if "slotway-copy" in k]
    finally:
        cluster.move_slot(slot, home)
        cluster.wait_stable()


@pytest.mark.parametrize("protocol", [2, 3])
def test_commands_run_on_copies_across_slots_match_a_single_node(proxy, standalone, cluster, clean, protocol):
    """ZUNION, ZINTER, ZDIFF, LCS, PFMERGE, ZRANGESTORE, GEOSEARCHSTORE, GEORADIUS ... STORE and
    SORT ... STORE over keys of different masters: run by a node over copies, so replies (scores as the node
    prints them, errors) are the node's own, and no copy is left behind."""
    k = spread_keys(cluster, "cp", per_master=4)
    # Keys k[0..3] are on one master, k[4..7] on a second, k[8..11] on the third.
    z0, z1, s3, zdst = k[0], k[4], k[8], k[10]
    str1, str2, h1, h2, h3 = k[1], k[5], k[2], k[6], k[9]
    g, gdst, gdst2 = k[3], k[7], k[11]
    missing = "cp:missing"
    script = [
        ["ZADD", z0, "1.1", "a", "2.5", "b", "0.1", "c", "1e300", "x"],
        ["ZADD", z1, "3", "b", "0.2", "c", "-4", "d", "1e300", "x"],
        ["SADD", s3, "a", "b", "e"],
        ["SET", str1, "ohmytext"], ["SET", str2, "mynewtext"],
        ["ZUNION", "3", z0, z1, s3, "WITHSCORES"],
        ["ZUNION", "2", z0, z1, "WEIGHTS", "2", "0.5", "AGGREGATE", "MAX", "WITHSCORES"],
        ["ZUNION", "2", z0, z1],
        ["ZINTER", "2", z0, z1, "WITHSCORES"],
        ["ZINTER", "3", z0, s3, z1, "AGGREGATE", "MIN", "WITHSCORES"],
        ["ZDIFF", "2", z0, z1, "WITHSCORES"],
        ["ZDIFF", "3", s3, z0, missing],
        ["ZUNION", "2", z0, missing, "WITHSCORES"],
        ["ZINTER", "2", z0, str1],
        ["ZUNION", "2", z0, z1, "WEIGHTS", "1"],
        ["ZUNION", "2", z0, z1, "AGGREGATE", "avg"],
        ["LCS", str1, str2], ["LCS", str1, str2, "LEN"],
        ["LCS", str1, str2, "IDX", "MINMATCHLEN", "2", "WITHMATCHLEN"],
        ["LCS", str1, missing], ["LCS", str1, z0],
        ["PFADD", h1, "a", "b", "c"], ["PFADD", h2, "c", "d", "e"], ["PFADD", h3, "x"],
        ["PFMERGE", h3, h1, h2], ["PFCOUNT", h3],
        ["PFMERGE", zdst, h1, missing], ["PFCOUNT", zdst], ["DEL", zdst],
        ["PFMERGE", h3, str1],
        ["ZRANGESTORE", zdst, z0, "0", "-1"], ["ZRANGE", zdst, "0", "-1", "WITHSCORES"],
        ["ZRANGESTORE", zdst, z1, "(0", "+inf", "BYSCORE", "LIMIT", "0", "1"],
        ["ZRANGE", zdst, "0", "-1", "WITHSCORES"],
        ["ZRANGESTORE", zdst, missing, "0", "-1"], ["EXISTS", zdst],
        ["ZRANGESTORE", zdst, str1, "0", "-1"],
        ["GEOADD", g, "13.361389", "38.115556", "Palermo", "15.087269", "37.502669", "Catania"],
        ["GEOSEARCHSTORE", gdst, g, "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "ASC"],
        ["ZRANGE", gdst, "0", "-1", "WITHSCORES"],
        ["GEOSEARCHSTORE", gdst, g, "FROMMEMBER", "Palermo", "BYBOX", "400", "400", "km", "STOREDIST"],
        ["ZRANGE", gdst, "0", "-1", "WITHSCORES"],
        ["GEORADIUS", g, "15", "37", "200", "km", "STORE", gdst2],
        ["GEORADIUSBYMEMBER", g, "Palermo", "300", "km", "STOREDIST", gdst2],
        ["ZRANGE", gdst2, "0", "-1", "WITHSCORES"],
        ["RPUSH", str2 + "l", "3", "1", "2", "b", "a"],
        ["SORT", s3, "ALPHA", "DESC", "STORE", zdst], ["LRANGE", zdst, "0", "-1"],
        ["SORT", z1, "BY", "nosort", "STORE", zdst], ["LRANGE", zdst, "0", "-1"],
        ["SORT", z0, "LIMIT", "1", "2", "ALPHA", "STORE", zdst], ["LRANGE", zdst, "0", "-1"],
        ["SORT", str2 + "l", "STORE", zdst], ["SORT", missing, "STORE", zdst], ["EXISTS", zdst],
        ["SORT", str1, "STORE", zdst],
        ["DBSIZE"],
    ]
    compare(proxy, standalone, script, protocol)
    # The written keys are on their own masters, where a cluster client finds them.
    owner = lambda key: cluster.node_client(cluster.node_for_key(key))  # noqa: E731
    assert owner(h3).pfcount(h3) == 6
    assert owner(gdst2).zrange(gdst2, 0, -1) == ["Palermo", "Catania"]
    # No copy is left on any master, and the sources are untouched.
    for m in cluster.masters():
        assert cluster.node_client(m).keys("*slotway-copy*") == []
    assert owner(z0).zscore(z0, "a") == 1.1 and owner(str2).get(str2) == "mynewtext"


def test_mget_with_thousands_of_keys_keeps_order(proxy, clean):
    c = proxy.client()
    keys = [f"celery-task-meta-{i}" for i in range(2000)]
    c.mset({k: f"r{i}" for i, k in enumerate(keys) if i % 3})
    got = c.mget(keys)
    assert got == [None if i % 3 == 0 else f"r{i}" for i in range(2000)]
    assert c.delete(*keys) == len([i for i in range(2000) if i % 3])


def test_msetnx_and_multislot_commands_are_refused_without_writing(proxy, cluster, clean):
    c = proxy.client()
    c.sadd("src", "m")
    c.sadd("dst", "n")
    assert cluster.keyslot("src") != cluster.keyslot("dst")
    for cmd in (["MSETNX", "a1", "1", "b1", "2"],
                ["EVAL", "return redis.call('DEL', KEYS[2])", "2", "src", "dst"]):
        with pytest.raises(redis.ResponseError, match="same slot"):
            c.execute_command(*cmd)
    assert c.smembers("src") == {"m"} and c.smembers("dst") == {"n"}
    assert c.exists("a1", "b1") == 0
    # The same commands within one slot run natively.
    c.sadd("{t}src", "m")
    assert c.smove("{t}src", "{t}dst", "m") is True
    assert c.msetnx({"{t}a": "1", "{t}b": "2"}) is True


def test_scan_visits_every_key_with_match_count_and_type(proxy, clean):
    c = proxy.client()
    pipe = c.pipeline(transaction=False)
    for i in range(10_000):
        if i % 10 == 0:
            pipe.hset(f"scan:h:{i}", "f", i)
        else:
            pipe.set(f"scan:s:{i}", i)
    pipe.execute()
    assert c.dbsize() == 10_000

    def scan_all(**kw):
        seen, cursor, rounds = [], 0, 0
        while True:
            cursor, keys = c.scan(cursor=cursor, **kw)
            seen.extend(keys)
            rounds += 1
            if cursor == 0:
                return seen, rounds

    everything, rounds = scan_all(count=500)
    assert set(everything) == {f"scan:h:{i}" if i % 10 == 0 else f"scan:s:{i}" for i in range(10_000)}
    assert rounds > 3
    matched, _ = scan_all(match="scan:s:1*", count=200)
    assert set(matched) == {f"scan:s:{i}" for i in range(10_000) if i % 10 and str(i).startswith("1")}
    hashes, _ = scan_all(_type="hash", count=1000)
    assert set(hashes) == {f"scan:h:{i}" for i in range(0, 10_000, 10)}
    # redis-cli's own SCAN loop works through the proxy.
    out = proxy.cli("--scan", "--pattern", "scan:h:99*")
    assert set(out.split()) == {"scan:h:990", "scan:h:9900", "scan:h:9910", "scan:h:9920",
                                "scan:h:9930", "scan:h:9940", "scan:h:9950", "scan:h:9960",
                                "scan:h:9970", "scan:h:9980", "scan:h:9990"}
    with pytest.raises(redis.ResponseError, match="invalid cursor"):
        c.scan(cursor=1023)


def test_scan_of_a_small_keyspace_answers_like_one_node(proxy, standalone, cluster, clean):
    """One node's SCAN returns about COUNT keys per call, so a keyspace smaller than COUNT
    comes back whole, with cursor 0, from one call (scripts that call SCAN once rely on it).
    Through the proxy the masters' scans follow each other within that call."""
    keys = spread_keys(cluster, "small", per_master=3)
    for endpoint in (proxy, standalone):
        endpoint.client().mset({k: "v" for k in keys})
    for options in ({}, {"count": 1000}, {"count": 100, "match": "small:*"}, {"_type": "string"}):
        through = proxy.client().scan(0, **options)
        direct = standalone.client().scan(0, **options)
        assert (through[0], sorted(through[1])) == (direct[0], sorted(direct[1])), options
        assert through[0] == 0 and sorted(through[1]) == sorted(keys), options
    # A COUNT smaller than the keyspace still takes several calls, each key once.
    c = proxy.client()
    assert sorted(c.scan_iter(count=2)) == sorted(keys)


def test_keyspace_wide_commands(proxy, cluster, clean):
    c = proxy.client()
    assert c.randomkey() is None
    keys = spread_keys(cluster, "ks", per_master=2)
    for k in keys:
        c.set(k, "v", ex=1000)
    assert c.randomkey() in keys
    assert c.dbsize() == len(keys)
    assert sorted(c.keys("ks:*")) == sorted(keys)
    info = c.info("keyspace")["db0"]
    assert info["keys"] == len(keys) and info["expires"] == len(keys)
    # The oldest save among the masters, as a timestamp in the past.
    lastsave = proxy.raw(b"LASTSAVE\r\n", expect=b"\r\n")
    assert lastsave.startswith(b":") and 0 < int(lastsave[1:]) <= time.time()
    assert c.execute_command("WAIT", 1, 1000) == 1
    assert c.execute_command("WAIT", 1, 0) == 1
    assert isinstance(c.memory_usage(keys[0]), int)
    assert c.object("encoding", keys[0]) == "embstr"
    dumped = proxy.client(decode_responses=False).dump(keys[0])
    c.delete(keys[0])
    assert c.restore(keys[0], 0, dumped) in (True, "OK")
    assert c.get(keys[0]) == "v"
    assert c.flushall(asynchronous=True) is True
    assert c.dbsize() == 0


def test_evalsha_works_on_every_master_after_one_script_load(proxy, cluster, clean):
    c = proxy.client()
    script = "return redis.call('SET', KEYS[1], ARGV[1])"
    sha = c.script_load(script)
    for addr in cluster.masters():
        assert cluster.node_client(addr).script_exists(sha) == [True]
    keys = spread_keys(cluster, "lua", per_master=1)
    for k in keys:
        assert c.evalsha(sha, 1, k, "x") == "OK"
    assert c.script_exists(sha, "0" * 40) == [True, False]
    # A master that lost its scripts (as a new or promoted one) gets it loaded on NOSCRIPT.
    first = cluster.masters()[0]
    cluster.node_client(first).script_flush()
    key = next(k for k in keys if cluster.node_for_key(k) == first)
    assert c.evalsha(sha, 1, key, "again") == "OK"
    assert c.get(key) == "again"
    assert c.script_exists(sha) == [True]
    # Keyless scripts run on some master; scripts over one slot run natively.
    assert c.eval("return 7", 0) == 7
    assert c.eval("return redis.call('MGET', KEYS[1], KEYS[2])", 2, "{u}a", "{u}b") == [None, None]
    assert c.script_flush() is True
    for addr in cluster.masters():
        assert cluster.node_client(addr).script_exists(sha) == [False]


@pytest.mark.parametrize("kind", ["script", "function"])
def test_script_kill_stops_a_busy_script_wherever_it_runs(proxy, cluster, clean, kind):
    """A runaway script blocks one master; SCRIPT KILL (FUNCTION KILL) from another client
    reaches it, not only a random master, and not behind the script on a shared connection."""
    c = proxy.client()
    if kind == "script":
        run, kill = ("EVAL", "while true do end", 0), ("SCRIPT", "KILL")
    else:
        c.function_load("#!lua name=spin\nredis.register_function{function_name='spin', "
                        "callback=function() while true do end end, flags={'no-writes'}}",
                        replace=True)
        run, kill = ("FCALL", "spin", 0), ("FUNCTION", "KILL")
    masters = cluster.masters()  # asked now: a busy node answers CLUSTER SLOTS with BUSY
    nodes = [cluster.node_client(a) for a in masters]
    assert c.config_set("busy-reply-threshold", 100)
    try:
        outcome = []

        def spin():
            try:
                proxy.client().execute_command(*run)
            except redis.ResponseError as e:
                outcome.append(str(e))

        spinner = threading.Thread(target=spin)
        spinner.start()
        # Past the threshold the node answers BUSY (and takes KILL).
        deadline = time.monotonic() + 10
        while not any(_busy(n) for n in nodes) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len([n for n in nodes if _busy(n)]) == 1
        assert c.execute_command(*kill) in (True, "OK")
        spinner.join(10)
        assert not spinner.is_alive()
        assert outcome and "killed by user" in outcome[0]
        with pytest.raises(redis.ResponseError, match="NOTBUSY"):
            c.execute_command(*kill)
    finally:
        for node in nodes:  # never leave a node busy for the next test
            try:
                node.execute_command(*kill)
            except redis.ResponseError:
                pass
        c.config_set("busy-reply-threshold", 5000)
        if kind == "function":
            c.function_flush()


def _busy(node) -> bool:
    try:
        node.ping()
    except redis.ResponseError as e:
        return str(e).startswith("BUSY")
    return False


def test_evalsha_after_eval_works_on_every_master(proxy, cluster, clean):
    """One node caches the scripts it EVALs; through the proxy the EVAL ran on one master, and
    an EVALSHA whose key lives on another must work too."""
    c = proxy.client()
    script = "return {KEYS[1], ARGV[1]}"
    sha = hashlib.sha1(script.encode()).hexdigest()
    assert c.eval(script, 1, "evalcache", "x") == ["evalcache", "x"]
    keys = spread_keys(cluster, "evalcache", per_master=1)
    for k in keys:
        assert c.evalsha(sha, 1, k, "y") == [k, "y"]
    # SCRIPT FLUSH forgets it, as on one node.
    assert c.script_flush() is True
    with pytest.raises(redis.exceptions.NoScriptError):
        c.evalsha(sha, 1, keys[0], "z")


def test_functions_are_loaded_on_every_master(proxy, cluster, clean):
    c = proxy.client()
    lib = "#!lua name=slotwaytest\nredis.register_function('setit', function(k, a) return redis.call('SET', k[1], a[1]) end)"
    assert c.function_load(lib, replace=True) == "slotwaytest"
    for k in spread_keys(cluster, "fn", per_master=1):
        assert c.fcall("setit", 1, k, "1") == "OK"
    assert [l["library_name"] for l in proxy.client(protocol=3).function_list()] == ["slotwaytest"]
    assert c.function_delete("slotwaytest") is True
    for addr in cluster.masters():
        assert cluster.node_client(addr).function_list() == []


def test_config_get_and_set_reach_every_node(proxy, cluster):
    c = proxy.client()
    before = c.config_get("maxmemory-policy")["maxmemory-policy"]
    try:
        assert c.config_set("maxmemory-policy", "allkeys-lru") is True
        for addr in cluster.masters() + cluster.replicas():
            got = cluster.node_client(addr).config_get("maxmemory-policy")
            assert got == {"maxmemory-policy": "allkeys-lru"}, addr
        assert c.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
    finally:
        c.config_set("maxmemory-policy", before)


def test_admin_commands_that_make_no_sense_are_refused(proxy):
    for req in (b"CLUSTER INFO", b"SHUTDOWN", b"DEBUG SLEEP 0", b"REPLICAOF NO ONE",
                b"SLAVEOF NO ONE", b"MIGRATE h 1 k 0 10"):
        reply = proxy.raw(req + b"\r\n", expect=b"\r\n")
        assert reply.startswith(b"-ERR command '") and b"not supported by Slotway" in reply, reply
    assert proxy.client().ping() is True


def test_denied_commands_are_configurable(proxy_factory, tmp_path):
    config = tmp_path / "deny.yaml"
    config.write_text("deny_commands: [flushall, config|set]\n")
    proxy = proxy_factory("--config", str(config))
    c = proxy.client()
    with pytest.raises(redis.ResponseError, match="disabled by the proxy configuration"):
        c.flushall()
    with pytest.raises(redis.ResponseError, match="disabled"):
        c.config_set("maxmemory-policy", "noeviction")
    assert c.config_get("maxmemory")  # other subcommands still work
    assert c.flushdb() is True


@pytest.mark.slow
def test_reshard_during_mget_mset_loop_shows_no_errors(proxy, cluster, clean):
    keys = [f"rmk:{i}" for i in range(200)]
    stop = threading.Event()
    errors: list[str] = []
    rounds = [0]

    def loop(t):
        c = proxy.client(socket_timeout=20)
        n = 0
        while not stop.is_set():
            batch = keys[(n * 10) % 200:(n * 10) % 200 + 20]
            value = f"{t}-{n}"
            try:
                c.mset({k: value for k in batch})
                got = c.mget(batch)
                # Another thread may have overwritten some keys in between; values must be
                # values some thread wrote, never missing.
                if any(v is None for v in got):
                    errors.append(f"nil in MGET after MSET: {got}")
                rounds[0] += 1
            except redis.RedisError as e:
                errors.append(str(e))
            n += 1

    threads = [threading.Thread(target=loop, args=(t,), daemon=True) for t in range(3)]
    for t in threads:
        t.start()
    masters = cluster.masters()
    job = cluster.reshard(masters[2], masters[0], 1500, background=True, pipeline=50)
    job.wait(timeout=240)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert errors == [], errors[:5]
    assert rounds[0] > 100

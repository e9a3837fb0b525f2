"""Random command sequences answer through Slotway exactly as on one node.

A seeded generator draws a few thousand commands of every data type (and some MULTI/EXEC
blocks) over a dozen keys spread across the cluster's masters, so that most multi-key commands
cross slots. The same sequence goes, one command at a time, to a standalone redis-server and
through the proxy; every reply is compared after parsing (sets and maps in sorted order, since
their order is a node's hashing detail). A difference also shows up in every later reply that
reads the diverged key, so one bug fails loudly. Each sequence also goes as one pipeline, where
a single node still runs the commands one after the other.

Transactions either keep to one slot, or span slots with single-key commands (split into one
MULTI/EXEC per slot), sometimes after a WATCH; a few blocking commands with 10 ms timeouts and
a few HELLO 2 / HELLO 3 protocol switches are mixed in. Left out on purpose: OBJECT ENCODING (RENAME/COPY across slots go through
DUMP/RESTORE, which may store a string with another encoding), EXPIRETIME and TTL (the clock),
and what the README lists as refused (MSETNX and EVAL over several slots, multi-slot commands
and DBSIZE inside MULTI).
"""

from __future__ import annotations

import random
import socket

import pytest

# Keys of many slots (and so of every master), plus one hash-tagged family for transactions.
KEYS = ["a", "b", "c", "{t}1", "{t}2", "k:1", "k:2", "z", "l", "h", "s", "nope"]
TX_KEYS = ["{t}1", "{t}2", "{t}3"]
VALUES = ["1", "2", "10", "-3", "x", "hello", "", "3.5", "a b", "0"]


def generators(rnd: random.Random, keys: list[str]):
    """Command makers: each returns one random command over ``keys``."""

    def k():
        return rnd.choice(keys)

    def ks():
        return [k() for _ in range(rnd.randint(1, 4))]

    def v():
        return rnd.choice(VALUES)

    def i(lo=-3, hi=5):
        return str(rnd.randint(lo, hi))

    def member():
        return rnd.choice("mnop")

    return [
        # strings
        lambda: ["SET", k(), v()] + rnd.choice([[], ["NX"], ["XX"], ["GET"], ["KEEPTTL"], ["NX", "GET"]]),
        lambda: ["GET", k()], lambda: ["GETDEL", k()], lambda: ["APPEND", k(), v()],
        lambda: ["INCR", k()], lambda: ["INCRBY", k(), i()], lambda: ["DECR", k()],
        lambda: ["INCRBYFLOAT", k(), rnd.choice(["1.5", "-0.25", "x", "1e3"])],
        lambda: ["STRLEN", k()], lambda: ["SETRANGE", k(), i(0, 4), v()],
        lambda: ["GETRANGE", k(), i(), i()], lambda: ["SETNX", k(), v()], lambda: ["GETSET", k(), v()],
        lambda: ["MGET"] + ks(), lambda: ["MSET"] + sum([[key, v()] for key in ks()], []),
        lambda: ["LCS", k(), k()], lambda: ["SETBIT", k(), i(0, 20), rnd.choice("01")],
        lambda: ["GETBIT", k(), i(0, 20)], lambda: ["BITCOUNT", k()],
        lambda: ["BITOP", rnd.choice(["AND", "OR", "XOR"]), k()] + ks(),
        # keys
        lambda: ["DEL"] + ks(), lambda: ["UNLINK"] + ks(), lambda: ["EXISTS"] + ks(),
        lambda: ["TOUCH"] + ks(), lambda: ["TYPE", k()], lambda: ["PERSIST", k()],
        # Not GT / LT: with equal seconds, whether the new deadline is later depends on the
        # milliseconds elapsed since the last EXPIRE.
        lambda: ["EXPIRE", k(), "1000"] + rnd.choice([[], ["NX"], ["XX"]]),
        lambda: ["GETEX", k()] + rnd.choice([[], ["PERSIST"], ["EX", "500"]]),
        lambda: ["RENAME", k(), k()], lambda: ["RENAMENX", k(), k()],
        lambda: ["COPY", k(), k()] + rnd.choice([[], ["REPLACE"]]),
        lambda: ["SORT", k()] + rnd.choice([[], ["ALPHA"], ["DESC", "ALPHA"], ["LIMIT", "0", "2"]])
        + rnd.choice([[], ["STORE", k()]]),
        # lists
        lambda: ["LPUSH", k()] + [v() for _ in range(rnd.randint(1, 3))],
        lambda: ["RPUSH", k()] + [v() for _ in range(rnd.randint(1, 3))],
        lambda: ["LPOP", k()] + rnd.choice([[], [i(0, 3)]]),
        lambda: ["RPOP", k()] + rnd.choice([[], [i(0, 3)]]),
        lambda: ["LRANGE", k(), i(), i()], lambda: ["LLEN", k()], lambda: ["LINDEX", k(), i()],
        lambda: ["LSET", k(), i(), v()], lambda: ["LREM", k(), i(), v()],
        lambda: ["LTRIM", k(), i(), i()], lambda: ["LPOS", k(), v()],
        lambda: ["LINSERT", k(), rnd.choice(["BEFORE", "AFTER"]), v(), v()],
        lambda: ["LMOVE", k(), k(), rnd.choice(["LEFT", "RIGHT"]), rnd.choice(["LEFT", "RIGHT"])],
        lambda: ["RPOPLPUSH", k(), k()],
        lambda: ["LMPOP", "2", k(), k(), rnd.choice(["LEFT", "RIGHT"])]
        + rnd.choice([[], ["COUNT", i(1, 3)]]),
        # hashes
        lambda: ["HSET", k()] + sum([[rnd.choice("fgh"), v()] for _ in range(rnd.randint(1, 2))], []),
        lambda: ["HGET", k(), rnd.choice("fgh")], lambda: ["HDEL", k(), rnd.choice("fgh")],
        lambda: ["HGETALL", k()], lambda: ["HINCRBY", k(), rnd.choice("fgh"), i()],
        lambda: ["HLEN", k()], lambda: ["HMGET", k(), "f", "g"],
        lambda: ["HSETNX", k(), rnd.choice("fgh"), v()],
        # sets
        lambda: ["SADD", k()] + [v() for _ in range(rnd.randint(1, 3))],
        lambda: ["SREM", k(), v()], lambda: ["SMEMBERS", k()], lambda: ["SCARD", k()],
        lambda: ["SISMEMBER", k(), v()], lambda: ["SMISMEMBER", k(), v(), v()],
        lambda: ["SUNION"] + ks(), lambda: ["SINTER"] + ks(), lambda: ["SDIFF"] + ks(),
        lambda: ["SUNIONSTORE", k()] + ks(), lambda: ["SINTERSTORE", k()] + ks(),
        lambda: ["SDIFFSTORE", k()] + ks(), lambda: ["SINTERCARD", "2", k(), k()],
        lambda: ["SMOVE", k(), k(), v()],
        # sorted sets
        lambda: ["ZADD", k()] + rnd.choice([[], ["NX"], ["XX"], ["GT"], ["CH"], ["INCR"]])
        + [i(), member()],
        lambda: ["ZRANGE", k(), i(), i()] + rnd.choice([[], ["WITHSCORES"], ["REV"]]),
        lambda: ["ZSCORE", k(), member()], lambda: ["ZINCRBY", k(), i(), member()],
        lambda: ["ZREM", k(), member()], lambda: ["ZCARD", k()], lambda: ["ZRANK", k(), member()],
        lambda: ["ZPOPMIN", k()],
        lambda: ["ZUNIONSTORE", k(), "2", k(), k()]
        + rnd.choice([[], ["WEIGHTS", "2", "3"], ["AGGREGATE", "MAX"]]),
        lambda: ["ZINTERSTORE", k(), "2", k(), k()], lambda: ["ZDIFFSTORE", k(), "2", k(), k()],
        lambda: ["ZUNION", "2", k(), k(), "WITHSCORES"], lambda: ["ZINTER", "2", k(), k()],
        lambda: ["ZDIFF", "2", k(), k(), "WITHSCORES"], lambda: ["ZINTERCARD", "2", k(), k()],
        lambda: ["ZRANGESTORE", k(), k(), "0", "-1"],
        lambda: ["ZMPOP", "2", k(), k(), rnd.choice(["MIN", "MAX"])],
        # HyperLogLog
        lambda: ["PFADD", k(), v()], lambda: ["PFCOUNT"] + ks(), lambda: ["PFMERGE", k()] + ks(),
        # streams
        lambda: ["XADD", k(), f"{rnd.randint(1, 30)}-1", "f", v()], lambda: ["XLEN", k()],
        lambda: ["XRANGE", k(), "-", "+"], lambda: ["XDEL", k(), f"{rnd.randint(1, 30)}-1"],
        lambda: ["XREAD", "COUNT", "2", "STREAMS", k(), k(), "0", "0"],
        # ranges, bits, geo, more stream and hash forms
        lambda: ["ZRANGEBYSCORE", k(), rnd.choice(["-inf", "(1", "0"]), rnd.choice(["+inf", "3", "(5"])]
        + rnd.choice([[], ["WITHSCORES"], ["LIMIT", "0", "2"]]),
        lambda: ["ZRANGE", k(), "(0", "+inf", "BYSCORE", "LIMIT", "0", "2"],
        lambda: ["ZRANGEBYLEX", k(), "-", rnd.choice(["+", "[n", "(o"])],
        lambda: ["ZCOUNT", k(), "0", "+inf"], lambda: ["ZLEXCOUNT", k(), "-", "+"],
        lambda: ["ZREMRANGEBYSCORE", k(), "-inf", i()], lambda: ["ZREVRANK", k(), member()],
        lambda: ["ZMSCORE", k(), member(), member()], lambda: ["ZRANDMEMBER", k(), "0"],
        lambda: ["HSTRLEN", k(), rnd.choice("fgh")], lambda: ["HINCRBYFLOAT", k(), "f", "0.5"],
        lambda: ["HEXISTS", k(), rnd.choice("fgh")], lambda: ["HKEYS", k()], lambda: ["HVALS", k()],
        lambda: ["BITPOS", k(), rnd.choice("01")], lambda: ["BITFIELD", k(), "INCRBY", "u8", "0", i()],
        lambda: ["GEOADD", k(), "13.36", "38.11", rnd.choice(["pa", "ct"])],
        lambda: ["GEODIST", k(), "pa", "ct"], lambda: ["GEOPOS", k(), "pa"],
        lambda: ["GEOSEARCH", k(), "FROMLONLAT", "15", "37", "BYRADIUS", "300", "km", "ASC"],
        lambda: ["GEOSEARCHSTORE", k(), k(), "FROMLONLAT", "15", "37", "BYRADIUS", "300", "km"],
        lambda: ["XREVRANGE", k(), "+", "-", "COUNT", "2"], lambda: ["XTRIM", k(), "MAXLEN", "3"],
        lambda: ["XGROUP", "CREATE", k(), "g", "0", "MKSTREAM"],
        lambda: ["XREADGROUP", "GROUP", "g", "c", "COUNT", "2", "STREAMS", k(), ">"],
        lambda: ["XACK", k(), "g", f"{rnd.randint(1, 30)}-1"], lambda: ["XPENDING", k(), "g"],
        lambda: ["SINTERCARD", "3", k(), k(), k(), "LIMIT", "1"],
        lambda: ["LPUSHX", k(), v()], lambda: ["RPUSHX", k(), v()], lambda: ["SRANDMEMBER", k(), "0"],
        lambda: ["MSETNX", "{t}1", v(), "{t}2", v()], lambda: ["EXISTS", "{t}1", "{t}2", "{t}3"],
        lambda: ["SET", k(), v(), "PXAT", "99999999999999"], lambda: ["GETEX", k(), "PXAT", "99999999999999"],
        # scripts, keyless
        lambda: ["EVAL", "return redis.call('GET', KEYS[1])", "1", k()],
        lambda: ["EVAL", "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('STRLEN', KEYS[1])", "1", k(), v()],
        lambda: ["EVAL", "return redis.call('INCR', KEYS[1])", "1", k()],
        lambda: ["ECHO", v()], lambda: ["PING"], lambda: ["DBSIZE"],
    ]


# Commands of one key, which a transaction over several slots may hold.
SINGLE_KEY = {
    "GET", "SET", "INCR", "INCRBY", "DECR", "APPEND", "SETNX", "GETSET", "GETDEL", "SETRANGE",
    "STRLEN", "LPUSH", "RPUSH", "LPOP", "RPOP", "LRANGE", "LLEN", "HSET", "HGET", "HDEL",
    "HGETALL", "SADD", "SREM", "SMEMBERS", "ZADD", "ZSCORE", "ZINCRBY", "XADD", "XLEN", "PFADD",
    "EXPIRE", "PERSIST", "TYPE",
}


def blocking(rnd: random.Random) -> list[str]:
    """A blocking command with a 10 ms timeout, over keys of one or two slots."""
    k1, k2 = rnd.choice(KEYS), rnd.choice(KEYS)
    return rnd.choice([
        ["BLPOP", k1, k2, "0.01"], ["BRPOP", k1, "0.01"], ["BZPOPMIN", k1, k2, "0.01"],
        ["BLMOVE", k1, k2, "LEFT", "RIGHT", "0.01"], ["BRPOPLPUSH", k1, k2, "0.01"],
        ["BLMPOP", "0.01", "2", k1, k2, "LEFT"], ["XREAD", "BLOCK", "10", "STREAMS", k1, k2, "0", "0"],
    ])


def sequence(seed: int, count: int) -> list[list[str]]:
    """``count`` random commands (a MULTI ... EXEC/DISCARD block counts as several).

    Transactions either keep to one slot (any command), or span slots with commands of one
    key each, sometimes after a WATCH.
    """
    rnd = random.Random(seed)
    plain = generators(rnd, KEYS)
    in_tx = generators(rnd, TX_KEYS)
    commands: list[list[str]] = []
    while len(commands) < count:
        roll = rnd.random()
        if roll < 0.08:
            if rnd.random() < 0.5:
                # DBSIZE needs every node: refused inside MULTI.
                body = [c for c in (rnd.choice(in_tx)() for _ in range(4)) if c[0] != "DBSIZE"]
                body = body[: rnd.randint(1, 4)] or [["PING"]]
            else:
                body = []
                while len(body) < rnd.randint(1, 4):
                    command = rnd.choice(plain)()
                    if command[0] in SINGLE_KEY:
                        body.append(command)
                if rnd.random() < 0.5:
                    commands.append(["WATCH", rnd.choice(KEYS)])
            end = ["EXEC"] if rnd.random() < 0.85 else ["DISCARD"]
            commands += [["MULTI"], *body, end]
        elif roll < 0.09:
            commands.append(blocking(rnd))
        elif roll < 0.095:
            # The client changes protocol: replies before it keep the old one.
            commands.append(["HELLO", rnd.choice(["2", "3"])])
        else:
            commands.append(rnd.choice(plain)())
    return commands


def encode(command: list[str]) -> bytes:
    out = b"*%d\r\n" % len(command)
    for arg in command:
        data = arg.encode()
        out += b"$%d\r\n%s\r\n" % (len(data), data)
    return out


class RespConnection:
    """One connection that sends a command and parses its reply (sets and maps sorted)."""

    def __init__(self, endpoint, protocol: int):
        self.sock = socket.create_connection((endpoint.host, endpoint.port), timeout=10)
        self.reader = self.sock.makefile("rb")
        if protocol == 3:
            self.call(["HELLO", "3"])

    def call(self, command: list[str]):
        self.sock.sendall(encode(command))
        return self.read()

    def pipeline(self, commands: list[list[str]]):
        """Sends every command before reading any reply."""
        self.sock.sendall(b"".join(encode(c) for c in commands))
        return [self.read() for _ in commands]

    def read(self):
        line = self.reader.readline()
        assert line.endswith(b"\r\n"), f"connection closed: {line!r}"
        kind, rest = line[:1], line[1:-2]
        if kind in b"+-:,#(_":
            return (kind + rest).decode(errors="replace")
        if kind in b"$=":
            n = int(rest)
            return None if n < 0 else self.reader.read(n + 2)[:-2]
        if kind in b"*~>":
            n = int(rest)
            if n < 0:
                return None
            items = [self.read() for _ in range(n)]
            return ("set", sorted(items, key=repr)) if kind == b"~" else items
        if kind == b"%":
            pairs = [(self.read(), self.read()) for _ in range(int(rest))]
            return ("map", sorted(pairs, key=repr))
        raise AssertionError(f"not RESP: {line!r}")

    def close(self):
        self.reader.close()
        self.sock.close()


# Replies whose element order is a node's hashing detail.
UNORDERED = {"SMEMBERS", "SUNION", "SINTER", "SDIFF", "HGETALL", "HKEYS", "HVALS"}


def unordered(command: list[str], reply):
    """``reply`` in sorted order if ``command`` answers in a node's hashing order."""
    if command[0] == "HGETALL" and isinstance(reply, list):  # RESP2: field, value, ...
        return sorted(zip(reply[::2], reply[1::2]), key=repr)
    if command[0] in UNORDERED and isinstance(reply, list):
        return sorted(reply, key=repr)
    return reply


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-at-a-time", "pipelined"])
@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_command_sequences_match_a_single_node(
    proxy, standalone, cluster, seed, protocol, pipelined
):
    """Pipelined, the client's later commands must not overtake the steps of a command the
    proxy carries out in several (a store's write, a run over copies, a pop, a move)."""
    compare_sequence(proxy, standalone, cluster, sequence(seed, 2500), protocol, pipelined)


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("seed", [4, 5])
def test_random_command_sequences_in_a_namespaced_database_match_a_single_node(
    proxy_factory, standalone, cluster, seed, protocol
):
    """With `databases: namespaced`, in database 1 every key is stored under a prefix: every
    reply that names a key (pops, XREAD, errors about consumer groups, inside EXEC too) must
    name the client's key."""
    proxy = proxy_factory("--databases", "namespaced")
    compare_sequence(
        proxy, standalone, cluster, sequence(seed, 2500), protocol, pipelined=True, db=1
    )


def compare_sequence(proxy, standalone, cluster, commands, protocol, pipelined, db=0):
    # Spread over masters (all three, unless an earlier test moved slots around).
    assert len({cluster.node_for_key(k) for k in KEYS}) >= 2
    cluster.flushall()
    standalone.client().flushall()
    replies = []
    try:
        for endpoint in (standalone, proxy):
            conn = RespConnection(endpoint, protocol)
            try:
                if db:
                    assert conn.call(["SELECT", str(db)]) == "+OK"
                if pipelined:
                    replies.append(conn.pipeline(commands))
                else:
                    replies.append([conn.call(c) for c in commands])
            finally:
                conn.close()
    finally:
        # The standalone node is shared by the session's tests: leave it empty.
        standalone.client().flushall()
    differ = []
    queued: list[list[str]] = []
    for n, (command, mine, theirs) in enumerate(zip(commands, replies[1], replies[0])):
        if command[0] == "HELLO":
            continue  # the connection ids differ
        if command[0] == "MULTI":
            queued = []
        elif command[0] == "EXEC" and isinstance(mine, list) and isinstance(theirs, list):
            mine = [unordered(c, r) for c, r in zip(queued, mine)]
            theirs = [unordered(c, r) for c, r in zip(queued, theirs)]
        else:
            queued.append(command)
            mine, theirs = unordered(command, mine), unordered(command, theirs)
        if mine != theirs:
            differ.append(f"#{n} {command}: slotway {mine!r}, one node {theirs!r}")
    assert not differ, f"{len(differ)} of {len(commands)} replies differ:\n" + "\n".join(differ[:10])

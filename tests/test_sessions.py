"""Stateful sessions (issue 4): transactions, WATCH, blocking pops across slots, pub/sub,
co-location rules and namespaced databases.

Where one node is the reference, the same commands run against a standalone
redis-server and the replies are compared.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import pytest
import redis

from test_core import spread_keys


def raw_compare(proxy, standalone, payload: bytes, timeout: float = 1.0):
    mine = proxy.raw(payload, timeout=timeout)
    theirs = standalone.raw(payload, timeout=timeout)
    assert mine == theirs, f"\nproxy:      {mine!r}\nstandalone: {theirs!r}"


@pytest.fixture
def clean(cluster, standalone):
    cluster.flushall()
    standalone.client().flushall()


def run_until_consumed(consumers, producers, seen: list, total: int, stop: threading.Event) -> Counter:
    """Runs the consumer and producer threads until ``total`` items are in ``seen`` (at most
    30 s after the producers finish), stops the consumers, and counts each item seen."""
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join(60)
    deadline = time.monotonic() + 30
    while len(seen) < total and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for t in consumers:
        t.join(10)
    return Counter(seen)


def blocked_clients_after_settling(cluster, timeout: float = 3.0) -> int:
    """Blocked clients on all masters, once it reaches 0 or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        blocked = sum(int(cluster.node(m).info("clients")["blocked_clients"]) for m in cluster.masters())
        if blocked == 0 or time.monotonic() >= deadline:
            return blocked
        time.sleep(0.1)


# -- transactions --------------------------------------------------------------------------


def test_same_slot_transactions_are_exactly_redis(proxy, standalone, clean):
    payload = (
        b"MULTI\r\nSET {u}a 1\r\nINCR {u}a\r\nLPUSH {u}a x\r\nGET {u}a\r\nEXEC\r\n"  # WRONGTYPE inside
        b"MULTI\r\nSET {u}b 1\r\nNOSUCHCMD\r\nGET {u}b\r\nEXEC\r\nGET {u}b\r\n"  # EXECABORT
        b"MULTI\r\nMULTI\r\nDISCARD\r\nEXEC\r\nDISCARD\r\n"
        b"MULTI\r\nGET\r\nEXEC\r\n"  # arity error at queue time
        b"MULTI\r\nPING\r\nECHO hi\r\nEXEC\r\n"
        b"MULTI\r\nEXEC\r\n"
    )
    # The unknown command is refused at queue time only when the proxy refuses unknown
    # commands; by default it is sent on, so compare the rest byte for byte.
    raw_compare(proxy, standalone, payload.replace(b"NOSUCHCMD\r\n", b"GET\r\n"))


def test_watch_inside_multi_is_refused_without_aborting_the_transaction(proxy, standalone, clean):
    """From Redis's tests/unit/multi.tcl: the error, then EXEC runs what was queued; an arity
    error at queue time does abort it."""
    payload = (
        b"MULTI\r\nWATCH x\r\nEXEC\r\n"
        b"MULTI\r\nSET {u}a 1\r\nWATCH x\r\nGET {u}a\r\nEXEC\r\n"
        b"MULTI\r\nWATCH\r\nEXEC\r\n"
    )
    raw_compare(proxy, standalone, payload)


def test_client_reply_off_on_and_skip_answer_as_one_node(proxy, standalone, clean):
    payload = (
        b"CLIENT REPLY OFF\r\nSET a 1\r\nGET a\r\nINCRBY a x\r\nMGET a b c\r\n"
        b"CLIENT REPLY SKIP\r\nCLIENT REPLY ON\r\nGET a\r\n"
        b"CLIENT REPLY SKIP\r\nGET a\r\nMGET a b c\r\n"
        b"CLIENT REPLY SKIP\r\nBLPOP nolist 0.01\r\nPING\r\n"
        b"CLIENT REPLY SKIP\r\nNOSUCHCOMMAND\r\nCLIENT REPLY MAYBE\r\nCLIENT REPLY\r\n"
        b"CLIENT REPLY OFF\r\nCLIENT REPLY MAYBE\r\nMULTI\r\nSET a 2\r\nEXEC\r\n"
        b"CLIENT REPLY ON\r\nGET a\r\n"
        # Subscribe confirmations are written anyway; a subscribed PING's answer is not.
        b"CLIENT REPLY OFF\r\nSUBSCRIBE ch\r\nPING\r\nUNSUBSCRIBE ch\r\nCLIENT REPLY ON\r\nPING\r\n"
    )
    raw_compare(proxy, standalone, payload)


def test_cross_slot_transaction_runs_per_slot_group(proxy, cluster, clean):
    c = proxy.client()
    assert cluster.keyslot("unacked") != cluster.keyslot("unacked_index")
    pipe = c.pipeline(transaction=True)
    pipe.zadd("unacked_index", {"tag1": 1.5})
    pipe.hset("unacked", "tag1", "message")
    pipe.publish("no-one", "x")
    pipe.zscore("unacked_index", "tag1")
    pipe.llen("q")
    pipe.llen("q\x06\x163")
    assert pipe.execute() == [1, 1, 0, 1.5, 0, 0]
    # Applied on the cluster, each in its own slot.
    direct = cluster.cluster_client()
    assert direct.hget("unacked", "tag1") == "message"
    assert direct.zscore("unacked_index", "tag1") == 1.5


@pytest.mark.parametrize("protocol", [2, 3])
def test_cross_slot_transaction_replies_are_the_nodes_bytes(proxy, standalone, cluster, clean, protocol):
    """A cross-slot EXEC's reply is put together from its groups' replies: each value goes
    out as its node wrote it. Regression: RESP3 doubles were re-printed with 17 digits, and
    GEOPOS's, which Redis prints with more, came out different from a single node's."""
    assert cluster.keyslot("tx:geo") != cluster.keyslot("tx:z")
    payload = (
        b"HELLO %d\r\nECHO compare-from-here\r\n" % protocol
        + b"GEOADD tx:geo 180 85.05112878 edge 13.361389 38.115556 Palermo\r\n"
        b"ZADD tx:z 0.1 a 1e300 b\r\n"
        b"MULTI\r\nGEOPOS tx:geo edge Palermo nope\r\nZSCORE tx:z a\r\nZINCRBY tx:z 0.2 a\r\n"
        b"GEODIST tx:geo edge Palermo\r\nZRANGE tx:z 0 -1 WITHSCORES\r\nEXEC\r\n"
    )
    # HELLO's reply names the server: compare from ECHO's on.
    mine, theirs = (e.raw(payload).split(b"compare-from-here", 1)[1] for e in (proxy, standalone))
    assert mine == theirs, f"\nproxy:      {mine!r}\nstandalone: {theirs!r}"
    assert b"85.0511287799999" in mine


def test_cross_slot_transaction_can_be_refused(proxy_factory, cluster, clean):
    proxy = proxy_factory("--cross-slot-transactions", "refuse")
    c = proxy.client()
    pipe = c.pipeline(transaction=True)
    pipe.set("refuse:a", 1)
    pipe.set("refuse:b", 2)
    with pytest.raises(redis.ResponseError, match="cross_slot_transactions is refuse"):
        pipe.execute()
    assert c.exists("refuse:a", "refuse:b") == 0
    pipe = c.pipeline(transaction=True)
    pipe.set("{r}a", 1)
    pipe.incr("{r}a")
    assert pipe.execute() == [True, 2]


def test_watch_aborts_exec_when_the_key_changes(proxy, clean):
    c, other = proxy.client(), proxy.client()
    c.hset("unacked", "t", "m")
    c.zadd("unacked_index", {"t": 1})
    # kombu's restore: WATCH unacked; HGET; MULTI; ZREM; HDEL; LPUSH queue; EXEC.
    with c.pipeline(transaction=True) as pipe:
        pipe.watch("unacked")
        assert pipe.hget("unacked", "t") == "m"
        pipe.multi()
        pipe.zrem("unacked_index", "t")
        pipe.hdel("unacked", "t")
        pipe.lpush("celery", "m")
        assert pipe.execute() == [1, 1, 1]
    assert c.lrange("celery", 0, -1) == ["m"]
    # Someone changes the watched key: EXEC answers nil and nothing runs anywhere.
    c.hset("unacked", "t2", "m2")
    with c.pipeline(transaction=True) as pipe:
        pipe.watch("unacked")
        pipe.hget("unacked", "t2")
        other.hset("unacked", "t2", "changed")
        pipe.multi()
        pipe.hdel("unacked", "t2")
        pipe.lpush("celery", "m2")
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert c.hget("unacked", "t2") == "changed"
    assert c.lrange("celery", 0, -1) == ["m"]


def test_watch_across_slots_is_refused_and_unwatch_works(proxy, clean):
    reply = proxy.raw(b"WATCH wa wb\r\n", expect=b"\r\n")
    assert reply.startswith(b"-CROSSSLOT WATCH keys must all hash to one slot")
    reply = proxy.raw(b"WATCH {w}a\r\nUNWATCH\r\nMULTI\r\nSET {w}a 1\r\nEXEC\r\n", expect=b"*1\r\n+OK\r\n")
    assert reply == b"+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n"
    # WATCH inside MULTI: refused, the transaction goes on (as one node does).
    reply = proxy.raw(b"MULTI\r\nWATCH x\r\nEXEC\r\n", expect=b"*0\r\n")
    assert reply == b"+OK\r\n-ERR WATCH inside MULTI is not allowed\r\n*0\r\n"


# -- blocking commands -----------------------------------------------------------------------


def _unblock_transcript(server, keys: list[str]) -> list[bytes]:
    """A client blocks in BLPOP on ``keys``; another client ends it with CLIENT UNBLOCK, first
    as a timeout, then as an error. What both clients read."""
    seen = []
    with socket.create_connection((server.host, server.port), timeout=5) as blocked, \
            socket.create_connection((server.host, server.port), timeout=5) as other:
        def ask(sock, payload: bytes) -> bytes:
            sock.sendall(payload)
            return sock.recv(1000)

        client_id = int(ask(blocked, b"CLIENT ID\r\n")[1:])
        blpop = b"BLPOP " + b" ".join(k.encode() for k in keys) + b" 0\r\n"
        for how in (b"", b" TIMEOUT", b" ERROR"):
            blocked.sendall(blpop)
            time.sleep(0.5)  # blocked on the node (through the proxy: on its own connection)
            seen.append(ask(other, b"CLIENT UNBLOCK %d%s\r\n" % (client_id, how)))
            seen.append(blocked.recv(1000))
        seen.append(ask(other, b"CLIENT UNBLOCK %d\r\n" % client_id))  # not blocked now
        seen.append(ask(other, b"CLIENT UNBLOCK 999999999\r\n"))
        seen.append(ask(other, b"CLIENT UNBLOCK x\r\n"))
        seen.append(ask(other, b"CLIENT UNBLOCK %d MAYBE\r\n" % client_id))
        seen.append(ask(blocked, b"PING\r\n"))  # still connected and serving
    return seen


@pytest.mark.parametrize("keys", [["ub"], ["ub1", "ub2", "ub3"]], ids=["one-slot", "cross-slot"])
def test_client_unblock_ends_a_blocked_command_as_one_node_does(proxy, standalone, clean, keys):
    assert _unblock_transcript(proxy, keys) == _unblock_transcript(standalone, keys)


def test_client_unblock_right_after_the_blocking_command_still_ends_it(proxy, clean):
    """CLIENT UNBLOCK sent the moment the proxy has sent a BLPOP (its own node connection may
    still be opening): when it answers 1, the BLPOP ends."""
    other = proxy.client()
    for attempt in range(10):
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as blocked:
            blocked.sendall(b"CLIENT ID\r\n")
            client_id = int(blocked.recv(100)[1:])
            blocked.sendall(b"BLPOP unblockrace%d 0\r\n" % attempt)
            while other.execute_command("CLIENT", "UNBLOCK", client_id) == 0:
                pass  # not sent yet
            assert blocked.recv(100) == b"*-1\r\n"


def test_client_kill_closes_the_connections_it_names(proxy, standalone, clean):
    def open_client(server):
        sock = socket.create_connection((server.host, server.port), timeout=5)
        sock.sendall(b"CLIENT ID\r\nCLIENT INFO\r\n")
        time.sleep(0.2)
        reply = sock.recv(2000).decode()
        client_id = int(reply.split("\r\n")[0][1:])
        addr = reply.split(" addr=")[1].split()[0]
        return sock, client_id, addr

    def closed(sock) -> bool:
        try:
            return sock.recv(100) == b""
        except ConnectionResetError:
            return True

    for server in (proxy, standalone):
        admin = server.client()
        victim, client_id, addr = open_client(server)
        assert admin.execute_command("CLIENT", "KILL", "ID", client_id) == 1
        assert closed(victim)
        victim, _, addr = open_client(server)
        assert admin.execute_command("CLIENT", "KILL", addr) in (True, "OK")
        assert closed(victim)
        victim, _, addr = open_client(server)
        assert admin.execute_command("CLIENT", "KILL", "ADDR", addr, "SKIPME", "yes") == 1
        assert closed(victim)
        # A blocked client is killed too, and its blocked pop does not take what comes later.
        victim, client_id, _ = open_client(server)
        victim.sendall(b"BLPOP killedq 0\r\n")
        time.sleep(0.3)
        assert admin.execute_command("CLIENT", "KILL", "ID", client_id) == 1
        assert closed(victim)
        admin.rpush("killedq", "x")
        time.sleep(0.2)
        assert admin.lrange("killedq", 0, -1) == ["x"]
        assert admin.ping()
        # TYPE pubsub names subscribers only; TYPE normal the others.
        subscriber, _, _ = open_client(server)
        subscriber.sendall(b"SUBSCRIBE killch\r\n")
        time.sleep(0.2)
        subscriber.recv(1000)
        victim, client_id, _ = open_client(server)
        assert admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
        assert closed(subscriber)
        assert admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "ID", client_id) == 1
        assert closed(victim)
        assert admin.execute_command("CLIENT", "KILL", "TYPE", "master") == 0

    errors = (
        b"CLIENT KILL 1.2.3.4:5\r\nCLIENT KILL ID 0\r\nCLIENT KILL ID x\r\nCLIENT KILL TYPE foo\r\n"
        b"CLIENT KILL TYPE master\r\nCLIENT KILL SKIPME maybe\r\nCLIENT KILL ADDR\r\n"
        b"CLIENT KILL USER nobody\r\nCLIENT KILL ID 999999999\r\nCLIENT KILL FOO bar\r\n"
    )
    raw_compare(proxy, standalone, errors)


def test_client_list_shows_each_clients_latest_command_idle_time_and_flags(proxy, clean):
    def line_of(client_id: int) -> dict:
        listing = proxy.client().execute_command("CLIENT", "LIST")
        line = next(l for l in listing.splitlines() if l.startswith(f"id={client_id} "))
        return dict(field.split("=", 1) for field in line.split())

    idle = proxy.client()
    idle_id = idle.client_id()
    blocked = socket.create_connection((proxy.host, proxy.port), timeout=5)
    blocked.sendall(b"CLIENT ID\r\n")
    blocked_id = int(blocked.recv(100)[1:])
    blocked.sendall(b"BLPOP clientlistq 0\r\n")
    subscriber = socket.create_connection((proxy.host, proxy.port), timeout=5)
    subscriber.sendall(b"CLIENT ID\r\n")
    subscriber_id = int(subscriber.recv(100)[1:])
    subscriber.sendall(b"SUBSCRIBE clientlistch\r\n")
    time.sleep(1.1)
    assert line_of(idle_id)["cmd"] == "client|id" and line_of(idle_id)["flags"] == "N"
    idle.get("clientlist")
    time.sleep(1.1)
    listed = line_of(idle_id)
    assert listed["cmd"] == "get" and int(listed["idle"]) >= 1
    assert line_of(blocked_id)["flags"] == "b" and line_of(blocked_id)["cmd"] == "blpop"
    assert int(line_of(blocked_id)["idle"]) >= 2
    assert line_of(subscriber_id)["flags"] == "P"
    assert line_of(subscriber_id)["cmd"] == "subscribe"
    # The caller's own line shows the command it is running, not idle.
    own = proxy.client()
    own_id = own.client_id()
    assert f"id={own_id} " in own.execute_command("CLIENT", "LIST")
    line = next(l for l in own.execute_command("CLIENT", "LIST").splitlines()
                if l.startswith(f"id={own_id} "))
    assert "cmd=client|list" in line and " idle=0 " in line
    blocked.close()
    subscriber.close()


def test_client_list_counts_subscriptions_and_queued_commands_as_one_node(proxy, standalone, clean):
    """sub, psub, ssub, multi and the O/P/x flags, for the same clients on a standalone node."""
    def fields(server) -> list[dict]:
        conns = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(3)]
        subscriber, queuing, monitor = conns
        ids = []
        for c in conns:
            c.sendall(b"CLIENT ID\r\n")
            ids.append(int(c.recv(100)[1:]))
        subscriber.sendall(b"SUBSCRIBE a b\r\nPSUBSCRIBE p*\r\nSSUBSCRIBE {s}1 {s}2\r\n")
        queuing.sendall(b"MULTI\r\nSET k 1\r\nGET k\r\nINCR n\r\n")
        monitor.sendall(b"MONITOR\r\n")
        time.sleep(0.5)
        listing = server.client().execute_command("CLIENT", "LIST")
        got = []
        for cid in ids:
            line = next(l for l in listing.splitlines() if l.startswith(f"id={cid} "))
            f = dict(x.split("=", 1) for x in line.split())
            got.append({k: f[k] for k in ("flags", "sub", "psub", "ssub", "multi")})
        for c in conns:
            c.close()
        return got

    assert fields(proxy) == fields(standalone)


def test_blocking_pop_on_one_slot_does_not_block_others(proxy, clean):
    blocked = proxy.client(socket_timeout=10)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", blocked.blpop(["bq"], timeout=0)))
    t.start()
    time.sleep(0.3)
    other = proxy.client()
    started = time.monotonic()
    for i in range(100):
        other.set(f"nb:{i}", i)
    assert time.monotonic() - started < 5
    other.rpush("bq", "v")
    t.join(5)
    assert result["r"] == ("bq", "v")


def test_cross_slot_brpop_respects_argument_order(proxy, cluster, clean):
    c = proxy.client()
    keys = ["celery", "celery\x06\x163", "celery\x06\x166", "celery\x06\x169"]
    assert len({cluster.keyslot(k) for k in keys}) > 1
    c.lpush(keys[3], "p9")
    c.lpush(keys[1], "p3")
    assert c.brpop(keys, timeout=1) == (keys[1], "p3")
    assert c.brpop(keys, timeout=1) == (keys[3], "p9")
    started = time.monotonic()
    assert c.brpop(keys, timeout=0.5) is None
    assert 0.4 < time.monotonic() - started < 3
    # RESP3 and BLPOP / BZPOPMIN too.
    c3 = proxy.client(protocol=3)
    c3.rpush("bl:b", "x", "y")
    assert c3.blpop(["bl:a", "bl:b"], timeout=1) == ["bl:b", "x"]
    c3.zadd("bz:b", {"m": 2.5})
    assert c3.bzpopmin(["bz:a", "bz:b"], timeout=1) == ["bz:b", "m", 2.5]


def test_cross_slot_brpop_blocks_until_any_key_gets_an_element(proxy, clean):
    c = proxy.client(socket_timeout=10)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", c.brpop(["w:a", "w:b", "w:c"], timeout=5)))
    t.start()
    time.sleep(0.5)
    proxy.client().lpush("w:c", "late")
    t.join(6)
    assert result["r"] == ("w:c", "late")
    # Nothing was put back anywhere, nothing left behind.
    assert proxy.client().exists("w:a", "w:b", "w:c") == 0


def test_many_consumers_and_producers_lose_and_duplicate_nothing(proxy, clean):
    queues = [f"work:{i}" for i in range(5)]
    total = 1500
    consumed: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def consume():
        c = proxy.client(socket_timeout=10)
        while not stop.is_set():
            r = c.brpop(queues, timeout=0.2)
            if r:
                with lock:
                    consumed.append(r[1])

    def produce(p):
        c = proxy.client()
        for i in range(total // 3):
            c.lpush(queues[i % len(queues)], f"{p}-{i}")

    consumers = [threading.Thread(target=consume) for _ in range(4)]
    producers = [threading.Thread(target=produce, args=(p,)) for p in range(3)]
    counts = run_until_consumed(consumers, producers, consumed, total, stop)
    assert [m for m, n in counts.items() if n > 1] == []
    assert len(counts) == total, f"lost {total - len(counts)} elements"
    assert proxy.client().exists(*queues) == 0


@pytest.mark.parametrize("first,then", [(2, 3), (3, 2)])
def test_hello_under_watch_switches_what_follows(proxy, standalone, clean, first, then):
    """HELLO between WATCH and EXEC: the transaction still sees the watch, and EXEC's replies
    and a later blocking pop's come in the new protocol, byte for byte as from one node."""
    script = [["HELLO", first], ["HSET", "hw", "f", "v"], ["ZADD", "zw", "1.5", "m"],
              ["WATCH", "hw"], ["HELLO", then], ["MULTI"], ["HGETALL", "hw"], ["EXEC"],
              ["BZPOPMIN", "zw", "1"], ["PING"]]
    payload = b"".join(command_bytes(*cmd) for cmd in script)
    replies = []
    for endpoint in (standalone, proxy):
        raw = endpoint.raw(payload, timeout=2, expect=b"+PONG\r\n")
        assert raw.endswith(b"+PONG\r\n"), raw
        replies.append(raw[raw.index(b"+OK\r\n+QUEUED"):])
    assert replies[1] == replies[0]
    # The watch held across HELLO: a change from another client makes EXEC answer nil.
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        sock.sendall(b"".join(command_bytes(*cmd) for cmd in
                              [["HELLO", first], ["WATCH", "hw"], ["HELLO", then], ["PING"]]))
        seen = b""
        while not seen.endswith(b"+PONG\r\n"):
            seen += sock.recv(65536)
        proxy.client().hset("hw", "f", "changed")
        sock.sendall(b"".join(command_bytes(*cmd) for cmd in [["MULTI"], ["GET", "x"], ["EXEC"]]))
        nil = b"*-1\r\n" if then == 2 else b"_\r\n"
        seen = b""
        while not seen.endswith(nil) and len(seen) < 100:
            seen += sock.recv(65536)
        assert seen == b"+OK\r\n+QUEUED\r\n" + nil


def command_bytes(*args) -> bytes:
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


@pytest.mark.parametrize("resp3", [False, True])
def test_cross_slot_mpop_and_move_match_a_single_node(proxy, standalone, cluster, clean, resp3):
    # a, b, z, str, nope and other are all in different slots.
    names = ["a", "b", "z", "str", "nope", "other"]
    assert len({cluster.keyslot(k) for k in names}) == len(names)
    script = [
        ["RPUSH", "a", "1", "2", "3", "4"], ["RPUSH", "b", "x", "y"], ["SET", "str", "s"],
        ["ZADD", "z", "1", "m1", "2.5", "m2", "3", "m3"],
        # LMPOP / BLMPOP / ZMPOP / BZMPOP: the first non-empty key in argument order.
        ["LMPOP", "2", "nope", "a", "LEFT"], ["LMPOP", "3", "nope", "b", "a", "RIGHT", "COUNT", "5"],
        ["BLMPOP", "0.1", "2", "nope", "a", "LEFT", "COUNT", "2"], ["BLMPOP", "0.1", "2", "nope", "other", "LEFT"],
        ["ZMPOP", "2", "nope", "z", "MIN", "COUNT", "2"], ["BZMPOP", "1", "2", "nope", "z", "MAX"],
        ["BZMPOP", "0.1", "2", "nope", "other", "MAX"], ["LMPOP", "2", "nope", "z", "LEFT"],
        ["LMPOP", "2", "nope", "str", "LEFT"],
        # What one node checks before touching anything.
        ["BLMPOP", "-1", "2", "nope", "other", "LEFT"], ["BLMPOP", "x", "2", "nope", "other", "LEFT"],
        ["LMPOP", "2", "nope", "other", "UP"], ["LMPOP", "2", "nope", "other", "LEFT", "COUNT", "0"],
        ["BLPOP", "nope", "other", "-1"], ["BRPOP", "nope", "other", "soon"],
        # LMOVE / BLMOVE / RPOPLPUSH / BRPOPLPUSH between slots.
        ["RPUSH", "a", "1", "2", "3"], ["LMOVE", "a", "b", "LEFT", "RIGHT"], ["RPOPLPUSH", "a", "b"],
        ["BLMOVE", "a", "b", "RIGHT", "LEFT", "0"], ["LRANGE", "b", "0", "-1"], ["EXISTS", "a"],
        ["BRPOPLPUSH", "a", "b", "0.1"], ["BLMOVE", "a", "b", "LEFT", "LEFT", "0.1"], ["RPOPLPUSH", "a", "b"],
        ["LMOVE", "nope", "b", "UP", "LEFT"], ["BLMOVE", "nope", "b", "LEFT", "LEFT", "-1"],
        # WRONGTYPE at the destination: nothing moves.
        ["LMOVE", "b", "str", "LEFT", "LEFT"], ["LRANGE", "b", "0", "-1"], ["LMOVE", "str", "b", "LEFT", "LEFT"],
    ]
    payload = (b"HELLO 3\r\n" if resp3 else b"") + b"".join(command_bytes(*c) for c in script)
    mine = proxy.raw(payload, timeout=2.0)
    theirs = standalone.raw(payload, timeout=2.0)
    if resp3:  # the connection id in HELLO's reply differs
        mine, theirs = mine.split(b"*0\r\n", 1)[1], theirs.split(b"*0\r\n", 1)[1]
    assert mine.split(b"\r\n") == theirs.split(b"\r\n")


def test_pipelined_requests_run_in_order_around_blocking_commands(proxy, standalone, clean):
    """One node runs a client's commands one at a time: a blocking command sees none of the
    requests sent after it, and all of those sent before it."""
    payload = b"".join(command_bytes(*c) for c in [
        ["RPUSH", "po:q", "early"], ["DEL", "po:q"], ["BLPOP", "po:q", "0.3"],
        ["RPUSH", "po:q", "x"], ["LPOP", "po:q"],
        ["RPUSH", "po:a", "1"], ["BLMPOP", "0.3", "2", "po:b", "po:c", "LEFT"],
        ["RPUSH", "po:c", "2"], ["BRPOPLPUSH", "po:a", "po:c", "0.3"], ["LRANGE", "po:c", "0", "-1"],
        ["XREAD", "BLOCK", "300", "STREAMS", "po:s1", "po:s2", "$", "$"], ["XADD", "po:s2", "1-1", "f", "v"],
        ["PING"],
    ])
    raw_compare(proxy, standalone, payload, timeout=2.0)


def test_pipelined_writes_wait_for_the_last_step_of_the_commands_before_them(
    proxy, standalone, cluster, clean
):
    """A store across slots writes its destination after reading its sources, a command over
    copies runs after its DUMPs, a watched transaction's other groups commit after the watched
    one: a write pipelined after such a command must still land after it, as on one node."""
    keys = ["a", "b", "z", "a2", "b2", "z2", "a3", "b3", "z3"]
    assert len({cluster.keyslot(k) for k in keys}) == len(keys)
    payload = b"".join(command_bytes(*c) for c in [
        ["SADD", "b", "1"], ["SUNIONSTORE", "a", "b", "z"], ["SADD", "a", "2"],
        ["RPUSH", "z", "y", "x"], ["SORT", "z", "ALPHA", "STORE", "b"], ["RPUSH", "b", "w"],
        ["PFADD", "z2", "e"], ["PFMERGE", "a2", "z2", "b2"], ["SET", "a2", "plain"],
        ["WATCH", "a3"], ["MULTI"], ["SET", "a3", "1"], ["SET", "b3", "1"], ["SET", "z3", "1"],
        ["EXEC"], ["SET", "b3", "2"], ["SET", "z3", "2"],
        ["SMEMBERS", "a"], ["LRANGE", "b", "0", "-1"], ["GET", "a2"], ["MGET", "a3", "b3", "z3"],
    ])
    raw_compare(proxy, standalone, payload, timeout=2.0)
    # What stays, read afterwards on its own connection.
    c = proxy.client()
    assert sorted(c.smembers("a")) == ["1", "2"]
    assert c.lrange("b", 0, -1) == ["x", "y", "w"]
    assert c.get("a2") == "plain"
    assert c.mget("a3", "b3", "z3") == ["1", "2", "2"]


def test_watch_and_exec_run_after_the_clients_earlier_writes(proxy, standalone, clean):
    """WATCH and the watched EXEC go on the client's own connection to the node, the writes
    before them on the shared one: they must still run in the order sent. A write before
    WATCH does not abort the transaction; a write between WATCH and EXEC does."""
    payload = b"".join(
        [command_bytes("SET", "w", i) for i in range(200)]
        + [command_bytes(*c) for c in [["WATCH", "w"], ["MULTI"], ["INCR", "w"], ["EXEC"], ["WATCH", "w"]]]
        + [command_bytes("SET", "w", 5) for _ in range(200)]
        + [command_bytes(*c) for c in [["MULTI"], ["INCR", "w"], ["EXEC"], ["GET", "w"]]]
    )
    expected = b"+OK\r\n" * 200 + b"+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n:200\r\n+OK\r\n"
    expected += b"+OK\r\n" * 200 + b"+OK\r\n+QUEUED\r\n*-1\r\n$1\r\n5\r\n"
    assert standalone.raw(payload, expect=b"$1\r\n5\r\n") == expected
    assert proxy.raw(payload, timeout=2.0, expect=b"$1\r\n5\r\n") == expected


def test_hello_in_a_pipeline_switches_protocol_between_two_replies(proxy, standalone, cluster, clean):
    """Replies before HELLO keep the old protocol, those after it use the new one, blocking
    commands (on a connection of the client's own) and merged replies included; writes on
    either side of it run in order."""
    assert cluster.keyslot("hx") != cluster.keyslot("hy")
    payload = b"".join(command_bytes(*c) for c in [
        ["BLPOP", "hx", "0.01"], ["SET", "hy", "1"], ["MGET", "hx", "hy"], ["HELLO", "3"],
        ["BLPOP", "hx", "0.01"], ["DEL", "hy"], ["MGET", "hx", "hy"], ["HELLO", "2"],
        ["BLPOP", "hx", "hy", "0.01"], ["MGET", "hx", "hy"],
    ])
    end = b"*2\r\n$-1\r\n$-1\r\n"
    mine = proxy.raw(payload, timeout=2.0, expect=end)
    theirs = standalone.raw(payload, timeout=2.0, expect=end)

    def without_hello(raw: bytes) -> list[bytes]:
        # HELLO's own reply carries the connection id: compare what surrounds it.
        parts = raw.split(b"$7\r\nmodules\r\n*0\r\n")
        return [p.rsplit(b"%7\r\n", 1)[0].rsplit(b"*14\r\n", 1)[0] for p in parts]

    assert theirs.endswith(end) and b"_\r\n" in theirs
    assert without_hello(mine) == without_hello(theirs)


def test_cross_slot_xread_block_answers_wrongtype_as_one_node(proxy, standalone, cluster, clean):
    assert cluster.keyslot("xs") != cluster.keyslot("b")
    payload = b"".join(command_bytes(*c) for c in [
        ["XADD", "xs", "1-1", "f", "v"], ["SET", "b", "x"],
        ["XREAD", "BLOCK", "10", "STREAMS", "xs", "b", "0", "0"],
        ["XREAD", "BLOCK", "10", "STREAMS", "b", "xs", "0", "0"],
    ])
    raw_compare(proxy, standalone, payload)


def test_cross_slot_blmpop_and_blmove_block_until_an_element_arrives(proxy, clean):
    c = proxy.client(socket_timeout=10)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "mpop", c.execute_command("BLMPOP", "5", "3", "m:a", "m:b", "m:c", "RIGHT", "COUNT", "3")))
    t.start()
    time.sleep(0.5)
    proxy.client().rpush("m:c", "1", "2")
    t.join(6)
    assert result["mpop"] == ["m:c", ["2", "1"]]
    c2 = proxy.client(socket_timeout=10)
    t = threading.Thread(target=lambda: result.setdefault("move", c2.blmove("mv:src", "mv:dst", 5, "LEFT", "RIGHT")))
    t.start()
    time.sleep(0.5)
    proxy.client().rpush("mv:src", "job")
    t.join(6)
    assert result["move"] == "job"
    assert proxy.client().lrange("mv:dst", 0, -1) == ["job"]
    assert proxy.client().exists("m:a", "m:b", "m:c", "mv:src") == 0


def test_reliable_queue_and_mpop_consumers_lose_and_duplicate_nothing(proxy, cluster, clean):
    """BRPOPLPUSH into a processing list of another slot, and BLMPOP with COUNT over five
    queues: every element is delivered exactly once."""
    queues = [f"rq:{i}" for i in range(5)]
    assert len({cluster.keyslot(q) for q in queues + ["rq:processing"]}) > 2
    total = 900
    consumed: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def mpop_consumer():
        c = proxy.client(socket_timeout=10)
        while not stop.is_set():
            r = c.execute_command("BLMPOP", "0.2", len(queues), *queues, "LEFT", "COUNT", "2")
            if r:
                with lock:
                    consumed.extend(r[1])

    def move_consumer():
        c = proxy.client(socket_timeout=10)
        while not stop.is_set():
            m = c.brpoplpush(queues[0], "rq:processing", timeout=0.2)
            if m:
                with lock:
                    consumed.append(m)
                c.lrem("rq:processing", 1, m)

    def produce(p):
        c = proxy.client()
        for i in range(total // 3):
            c.rpush(queues[i % len(queues)], f"{p}-{i}")

    consumers = [threading.Thread(target=mpop_consumer) for _ in range(3)]
    consumers += [threading.Thread(target=move_consumer) for _ in range(2)]
    producers = [threading.Thread(target=produce, args=(p,)) for p in range(3)]
    counts = run_until_consumed(consumers, producers, consumed, total, stop)
    assert [m for m, n in counts.items() if n > 1] == []
    assert len(counts) == total, f"lost {total - len(counts)} elements"
    assert proxy.client().exists(*queues, "rq:processing") == 0


def test_cross_slot_xread_block_wakes_on_any_stream(proxy, cluster, clean):
    streams = ["xb:a", "xb:b", "xb:c"]
    assert len({cluster.keyslot(s) for s in streams}) == 3
    c = proxy.client(socket_timeout=10)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "r", c.xread({s: "$" for s in streams}, block=0)))
    t.start()
    time.sleep(0.5)
    started = time.monotonic()
    proxy.client().xadd("xb:c", {"f": "v"}, id="5-1")
    t.join(5)
    assert time.monotonic() - started < 2
    assert result["r"] == [["xb:c", [("5-1", {"f": "v"})]]]
    # The other nodes were told to stop blocking: no blocked client remains anywhere.
    assert blocked_clients_after_settling(cluster) == 0
    # A timeout answers nil after about the time asked.
    started = time.monotonic()
    assert not c.xread({s: "$" for s in streams}, block=300)
    assert 0.25 < time.monotonic() - started < 3


def test_xreadgroup_block_consumers_get_every_entry_once(proxy, cluster, clean):
    streams = [f"xg:{i}" for i in range(4)]
    assert len({cluster.keyslot(s) for s in streams}) > 2
    admin = proxy.client()
    for s in streams:
        admin.xgroup_create(s, "workers", id="0", mkstream=True)
    total = 600
    seen: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def consume(name):
        c = proxy.client(socket_timeout=10)
        while not stop.is_set():
            r = c.xreadgroup("workers", name, {s: ">" for s in streams}, count=5, block=200)
            for _stream, entries in r or []:
                with lock:
                    seen.extend(fields["n"] for _id, fields in entries)

    def produce(p):
        c = proxy.client()
        for i in range(total // 2):
            c.xadd(streams[i % len(streams)], {"n": f"{p}-{i}"})

    consumers = [threading.Thread(target=consume, args=(f"c{i}",)) for i in range(3)]
    producers = [threading.Thread(target=produce, args=(p,)) for p in range(2)]
    counts = run_until_consumed(consumers, producers, seen, total, stop)
    assert [m for m, n in counts.items() if n > 1] == []
    assert len(counts) == total, f"missing {total - len(counts)} entries"
    # Every delivered entry is pending for exactly one consumer, as on one node.
    assert sum(admin.xpending(s, "workers")["pending"] for s in streams) == total


def test_wait_runs_on_its_own_connections(proxy, cluster, clean):
    c = proxy.client(socket_timeout=10)
    for i in range(50):
        c.set(f"wait:{i}", i)
    # Every master has one replica: all of them acknowledge the client's writes.
    assert c.execute_command("WAIT", 1, 0) == 1
    started = time.monotonic()
    assert c.execute_command("WAIT", 2, 300) == 1
    assert 0.25 < time.monotonic() - started < 3
    # A WAIT that can never be satisfied blocks only its own client.
    waiter = proxy.client(socket_timeout=10)
    t = threading.Thread(target=lambda: waiter.execute_command("WAIT", 5, 0), daemon=True)
    t.start()
    time.sleep(0.3)
    other = proxy.client()
    started = time.monotonic()
    for i in range(200):
        other.get(f"wait:{i % 50}")
    assert time.monotonic() - started < 3
    # The marker keys the proxy writes are never visible.
    assert other.keys("__slotway*") == []
    # A client that goes away releases the nodes' blocked connections.
    waiter.connection_pool.disconnect()
    assert blocked_clients_after_settling(cluster) == 0
    with pytest.raises(redis.ResponseError, match="timeout is negative"):
        c.execute_command("WAIT", 1, -1)


# -- pub/sub ---------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_pubsub_messages_reach_subscribers_through_any_path(proxy, cluster, protocol):
    sub = proxy.client(protocol=protocol).pubsub()
    sub.subscribe("news")
    sub.psubscribe("ev.*")
    assert sub.get_message(timeout=2)["type"] == "subscribe"
    assert sub.get_message(timeout=2)["type"] == "psubscribe"
    pub = proxy.client()
    assert pub.publish("news", "through proxy") == 1
    # A message published directly on another node crosses the cluster bus.
    other = next(a for a in cluster.masters() if a != cluster.masters()[0])
    cluster.node_client(other).publish("ev.x", "direct")
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        m = sub.get_message(timeout=1)
        if m and m["type"] in ("message", "pmessage"):
            got.append((m["channel"], m["data"]))
    assert got == [("news", "through proxy"), ("ev.x", "direct")]
    # PING in subscribed mode (RESP2 answers it in subscriber form; RESP3 with +PONG).
    sub.ping()
    pong = sub.get_message(timeout=2)
    if protocol == 2:
        assert pong["type"] == "pong"
    else:
        assert pong is not None
    sub.unsubscribe()
    sub.punsubscribe()
    sub.close()


@pytest.fixture
def notifications(proxy, cluster):
    """Keyspace notifications on (CONFIG SET through the proxy reaches every node), then off."""
    c = proxy.client()
    assert c.config_set("notify-keyspace-events", "KEA")
    assert all(cluster.node_client(a).config_get("notify-keyspace-events")["notify-keyspace-events"]
               for a in cluster.masters())
    yield c
    c.config_set("notify-keyspace-events", "")


def next_message(sub, timeout: float = 5.0):
    """The next message or pmessage (skipping confirmations), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = sub.get_message(timeout=0.2)
        if m and m["type"] in ("message", "pmessage"):
            return m
    return None


@pytest.mark.parametrize("protocol", [2, 3])
def test_keyspace_notifications_come_from_every_master(proxy, cluster, notifications, protocol):
    """Each node publishes the notifications of its own keys to its own subscribers; the proxy
    subscribes on every master, so a subscriber sees all of them, each once, from the moment
    its confirmation arrives until its unsubscribe confirmation."""
    c = notifications
    keys = spread_keys(cluster, f"ksn{protocol}", per_master=2)
    sub = proxy.client(protocol=protocol).pubsub()
    sub.psubscribe("__keyevent@0__:set")
    assert sub.get_message(timeout=5)["type"] == "psubscribe"
    for key in keys:  # at once: the confirmation came after every master had subscribed
        c.set(key, "v")
    got = [next_message(sub) for _ in keys]
    assert sorted(m["data"] for m in got) == sorted(keys)
    assert {m["channel"] for m in got} == {"__keyevent@0__:set"}
    assert next_message(sub, 0.5) is None  # no duplicates

    # A keyspace channel for one key, on a master that is not the subscriber connection's.
    far = next(k for k in keys if cluster.node_for_key(k) != cluster.masters()[0])
    sub.subscribe(f"__keyspace@0__:{far}")
    assert sub.get_message(timeout=5)["type"] == "subscribe"
    c.expire(far, 100)
    m = next_message(sub)
    assert (m["type"], m["channel"], m["data"]) == ("message", f"__keyspace@0__:{far}", "expire")

    # After the unsubscribe confirmations nothing more arrives.
    sub.punsubscribe()
    sub.unsubscribe()
    for _ in range(2):
        assert sub.get_message(timeout=5)["type"] in ("punsubscribe", "unsubscribe")
    for key in keys:
        c.set(key, "w")
    assert next_message(sub, 0.5) is None
    sub.close()
    c.delete(*keys)


def test_a_catch_all_pattern_gets_notifications_of_every_master_and_messages_once(
        proxy, cluster, notifications):
    c = notifications
    keys = spread_keys(cluster, "kscatch", per_master=1)
    sub = proxy.client().pubsub()
    sub.psubscribe("*")
    assert sub.get_message(timeout=5)["type"] == "psubscribe"
    assert c.publish("plain", "hello") == 1  # one subscriber, as on one node
    for key in keys:
        c.sadd(key, "m")
    seen = []
    while (m := next_message(sub, 1.0)) is not None:
        seen.append((m["channel"], m["data"]))
    assert seen.count(("plain", "hello")) == 1
    for key in keys:
        assert (f"__keyspace@0__:{key}", "sadd") in seen
        assert ("__keyevent@0__:sadd", key) in seen
    sub.close()
    c.delete(*keys)


@pytest.mark.parametrize("subscribe", [
    b"SUBSCRIBE __keyspace@0__:a", b"SUBSCRIBE a", b"PSUBSCRIBE *", b"SSUBSCRIBE a",
])
def test_subscription_then_reset_in_one_pipeline_answers_as_one_node(
        proxy, standalone, notifications, subscribe):
    """RESET ends the subscriptions made before it, even those still being confirmed (it used to
    end them when read, and the SUBSCRIBE then went out after it, on a new connection)."""
    payload = subscribe + b"\r\nRESET\r\nPING\r\nPSUBSCRIBE __key*\r\nPUNSUBSCRIBE\r\nPING\r\n"
    raw_compare(proxy, standalone, payload, timeout=0.5)


def test_keyspace_notifications_are_refused_while_names_are_rewritten(proxy_factory, cluster):
    """Notifications name keys as stored; with co-location rules those are not the client's."""
    proxy = proxy_factory("--preset", "celery")
    reply = proxy.raw(b"SUBSCRIBE news __keyspace@0__:k\r\nPING\r\n", expect=b"+PONG\r\n")
    assert reply.startswith(b"-ERR Slotway cannot subscribe to keyspace notifications ('__keyspace@0__:k')")
    assert reply.endswith(b"\r\n+PONG\r\n")  # nothing subscribed: a plain PONG
    assert proxy.raw(b"SUBSCRIBE news\r\n", expect=b":1\r\n").endswith(b":1\r\n")


def test_publish_counts_channel_subscribers_on_every_node(proxy, cluster):
    subscribers = [proxy.client().pubsub()]
    for addr in (cluster.masters()[1], cluster.masters()[2], cluster.replicas()[0]):
        subscribers.append(cluster.node_client(addr).pubsub())
    for s in subscribers:
        s.subscribe("counted")
        assert s.get_message(timeout=2)["type"] == "subscribe"
    # One through the proxy, three directly on other nodes: one node would count all four.
    assert proxy.client().publish("counted", "hi") == 4
    for s in subscribers:
        m = None
        deadline = time.monotonic() + 5
        while (m is None or m["type"] != "message") and time.monotonic() < deadline:
            m = s.get_message(timeout=1)
        assert m and m["data"] == "hi"
        s.close()
    assert proxy.client().publish("counted", "nobody") == 0


def test_pubsub_raw_resp2_semantics(proxy, standalone):
    # One channel for UNSUBSCRIBE-all: a server lists several in its own (random) dict order.
    payload = (b"SUBSCRIBE a b\r\nPING\r\nGET x\r\nUNSUBSCRIBE b\r\nPSUBSCRIBE p*\r\n"
               b"UNSUBSCRIBE\r\nPUNSUBSCRIBE\r\nPING\r\nUNSUBSCRIBE\r\n")
    raw_compare(proxy, standalone, payload, timeout=0.5)


def test_thousands_of_channels_on_one_connection(proxy):
    sub = proxy.client().pubsub()
    channels = [f"celery-task-meta-{i}" for i in range(2000)]
    sub.subscribe(*channels)
    for _ in channels:
        assert sub.get_message(timeout=5)["type"] == "subscribe"
    c = proxy.client()
    assert c.pubsub_numsub("celery-task-meta-7", "nobody") == [("celery-task-meta-7", 1), ("nobody", 0)]
    assert "celery-task-meta-1999" in c.pubsub_channels("celery-task-meta-19*")
    assert c.publish("celery-task-meta-1234", "done") == 1
    msg = None
    while msg is None or msg["type"] != "message":
        msg = sub.get_message(timeout=5)
    assert msg["data"] == "done"
    sub.close()


def test_resp3_push_messages_mix_with_commands(proxy):
    c = proxy.client(protocol=3)
    received = []
    p = c.pubsub(push_handler_func=None)
    p.subscribe(**{"mixed": lambda m: received.append(m["data"])})
    p.get_message(timeout=2)
    proxy.client().publish("mixed", "one")
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        p.get_message(timeout=0.5)
    assert received == ["one"]
    p.close()


def test_publish_inside_multi(proxy, cluster, clean):
    # Subscribers through Slotway sit on the first master by address; a transaction's PUBLISH
    # runs in the group on that node when there is one, so it counts them.
    first = sorted(cluster.masters())[0]
    key = next(f"celery-task-meta-{i}" for i in range(10_000)
               if cluster.node_for_key(f"celery-task-meta-{i}") == first)
    sub = proxy.client().pubsub()
    sub.subscribe(key)
    sub.get_message(timeout=2)
    pipe = proxy.client().pipeline(transaction=True)
    pipe.setex(key, 100, "result")
    pipe.publish(key, "result")
    assert pipe.execute() == [True, 1]
    m = sub.get_message(timeout=5)
    assert m["data"] == "result"
    sub.close()


# -- sharded pub/sub -------------------------------------------------------------------------


def channels_per_master(cluster, prefix: str) -> list[str]:
    """One channel name per master (in ``cluster.masters()`` order), each owned by that master."""
    found: dict[str, str] = {}
    for i in range(10_000):
        name = f"{prefix}{i}"
        found.setdefault(cluster.node_for_key(name), name)
        if len(found) == len(cluster.masters()):
            break
    return [found[m] for m in cluster.masters()]


def skip_frame(data: bytes, pos: int = 0) -> int:
    """The offset just past the RESP frame starting at ``pos``."""
    end = data.index(b"\r\n", pos)
    kind, head = data[pos:pos + 1], data[pos + 1:end]
    pos = end + 2
    if kind in b"$=!" and head != b"-1":
        return pos + int(head) + 2
    if kind in b"*>~%|" and head != b"-1":
        for _ in range(int(head) * (2 if kind in b"%|" else 1)):
            pos = skip_frame(data, pos)
    return pos


@pytest.mark.parametrize("protocol", [2, 3])
def test_ssubscribe_confirmations_are_exactly_redis(proxy, standalone, cluster, protocol):
    a, b, c = (ch.encode() for ch in channels_per_master(cluster, "sraw-"))
    hello = b"HELLO 3\r\n" if protocol == 3 else b""
    payload = hello + (
        b"SSUBSCRIBE " + a + b" " + b + b"\r\n"
        b"SSUBSCRIBE " + a + b" " + c + b" " + c + b"\r\n"  # already subscribed, and twice
        b"SUNSUBSCRIBE not-subscribed\r\n"
        b"PING\r\nPING hi\r\nGET k\r\n"  # RESP2 subscribed mode
        b"SUBSCRIBE " + a + b"\r\n"  # counted apart from shard channels
        b"SUNSUBSCRIBE " + a + b" " + c + b"\r\n"
        b"UNSUBSCRIBE\r\nGET k\r\n"  # shard channel b still subscribed
        # One channel left for SUNSUBSCRIBE-all: a server lists several in its own dict order.
        b"SUNSUBSCRIBE\r\nSUNSUBSCRIBE\r\nGET k\r\n"
        b"SSUBSCRIBE\r\nSUBSCRIBE\r\nSSUBSCRIBE " + b + b"\r\nSUNSUBSCRIBE " + b + b"\r\nPING\r\n"
    )
    mine = proxy.raw(payload, timeout=0.5)
    theirs = standalone.raw(payload, timeout=0.5)
    if protocol == 3:  # the HELLO replies differ (server id, mode)
        mine, theirs = mine[skip_frame(mine):], theirs[skip_frame(theirs):]
    assert mine == theirs, f"\nproxy:      {mine!r}\nstandalone: {theirs!r}"


def test_ssubscribe_on_every_master_gets_every_message(proxy, cluster):
    channels = channels_per_master(cluster, "snews-")
    sub = proxy.client().pubsub()
    sub.ssubscribe(*channels)
    for i, ch in enumerate(channels, 1):
        assert sub.get_sharded_message(timeout=2) == {
            "type": "ssubscribe", "pattern": None, "channel": ch, "data": i}
    pub = proxy.client()
    for ch in channels:
        assert pub.spublish(ch, f"via proxy {ch}") == 1
        direct = cluster.node_client(cluster.node_for_key(ch))
        assert direct.spublish(ch, f"direct {ch}") == 1
    # Slotway's subscribers are counted where they are, as the cluster counts them.
    assert pub.pubsub_shardnumsub(*channels) == [(ch, 1) for ch in channels]
    assert sorted(pub.pubsub_shardchannels("snews-*")) == sorted(channels)
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 2 * len(channels) and time.monotonic() < deadline:
        m = sub.get_sharded_message(timeout=1)
        if m and m["type"] == "smessage":
            got.append((m["channel"], m["data"]))
    assert sorted(got) == sorted([(ch, f"via proxy {ch}") for ch in channels]
                                 + [(ch, f"direct {ch}") for ch in channels])
    sub.sunsubscribe()
    for _ in channels:
        assert sub.get_sharded_message(timeout=2)["type"] == "sunsubscribe"
    assert pub.spublish(channels[0], "nobody") == 0
    assert pub.pubsub_shardnumsub(*channels) == [(ch, 0) for ch in channels]
    sub.close()


def move_slot(cluster, slot: int, to: str) -> None:
    """Move a slot to master ``to`` and wait until the cluster agrees."""
    cluster.move_slot(slot, to)
    cluster.wait_stable()


@pytest.mark.parametrize("protocol", [2, 3])
def test_shard_subscription_follows_its_slot(proxy_factory, cluster, clean, protocol):
    proxy = proxy_factory()
    stale = proxy_factory("--refresh-interval-ms", "60000")  # knows the slot map before the move
    channel = "sfollow-1"
    slot = cluster.keyslot(channel)
    home = cluster.node_for_slot(slot)
    other = next(m for m in cluster.masters() if m != home)
    sub = proxy.client(protocol=protocol).pubsub()
    sub.ssubscribe(channel)
    assert sub.get_sharded_message(timeout=2)["type"] == "ssubscribe"
    try:
        move_slot(cluster, slot, other)
        # A proxy with the old map is redirected to the new master.
        def redirected():
            stats = cluster.node_client(home).info("commandstats").get("cmdstat_ssubscribe", {})
            return stats.get("rejected_calls", 0)
        before = redirected()
        late = stale.client(protocol=protocol).pubsub()
        late.ssubscribe("{sfollow-1}late")
        assert late.get_sharded_message(timeout=2)["type"] == "ssubscribe"
        assert redirected() == before + 1
        assert cluster.node_client(other).spublish("{sfollow-1}late", "moved") == 1
        m = late.get_sharded_message(timeout=5)
        assert (m["type"], m["data"]) == ("smessage", "moved")
        late.close()
        # The subscription moves with the slot, without the client noticing.
        deadline = time.monotonic() + 10
        while cluster.node_client(other).pubsub_shardnumsub(channel) != [(channel, 1)]:
            assert time.monotonic() < deadline, "not subscribed again on the slot's new master"
            time.sleep(0.05)
        assert cluster.node_client(other).spublish(channel, "after the move") == 1
        assert proxy.client().spublish(channel, "through the proxy") == 1
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            m = sub.get_sharded_message(timeout=1)
            if m:
                got.append((m["type"], m["data"]))
        assert got == [("smessage", "after the move"), ("smessage", "through the proxy")]
    finally:
        if cluster.node_for_slot(slot) != home:
            move_slot(cluster, slot, home)
    # And back again.
    deadline = time.monotonic() + 10
    while cluster.node_client(home).pubsub_shardnumsub(channel) != [(channel, 1)]:
        assert time.monotonic() < deadline, "not subscribed again after the slot came back"
        time.sleep(0.05)
    assert proxy.client().spublish(channel, "home") == 1
    m = sub.get_sharded_message(timeout=5)
    assert (m["type"], m["data"]) == ("smessage", "home")
    sub.close()


def test_reset_and_disconnect_drop_shard_subscriptions(proxy_factory, cluster):
    proxy = proxy_factory(metrics=True)
    channels = channels_per_master(cluster, "sreset-")
    payload = b"SSUBSCRIBE " + b" ".join(ch.encode() for ch in channels) + b"\r\nRESET\r\nGET k\r\n"
    assert proxy.raw(payload, expect=b"+RESET\r\n$-1\r\n").endswith(b"+RESET\r\n$-1\r\n")
    sub = proxy.client().pubsub()
    sub.ssubscribe(*channels)
    for _ in channels:
        sub.get_sharded_message(timeout=2)
    pub = proxy.client()
    assert pub.pubsub_shardnumsub(*channels) == [(ch, 1) for ch in channels]
    sub.close()
    deadline = time.monotonic() + 5
    while (pub.pubsub_shardnumsub(*channels) != [(ch, 0) for ch in channels]
           or "\nslotway_pubsub_subscriptions 0\n" not in proxy.metrics()):
        assert time.monotonic() < deadline, "shard subscriptions outlived their client"
        time.sleep(0.05)


def test_lost_shard_connection_disconnects_the_client(proxy, cluster):
    # As a subscriber of a failed node is disconnected: it may have missed messages.
    channel = "slost-1"
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        sock.sendall(b"SSUBSCRIBE " + channel.encode() + b"\r\n")
        confirmation = b"*3\r\n$10\r\nssubscribe\r\n$7\r\nslost-1\r\n:1\r\n"
        received = b""
        while received != confirmation:
            chunk = sock.recv(1024)
            assert chunk, received
            received += chunk
        cluster.node_client(cluster.node_for_key(channel)).client_kill_filter(_type="pubsub")
        assert sock.recv(1024) == b""  # closed by the proxy
    assert proxy.client().ping()


# -- co-location rules and databases ---------------------------------------------------------


CHORD_LIKE = """
local n = 0
for i, k in ipairs(KEYS) do redis.call('SET', k, ARGV[1]) n = n + 1 end
return redis.call('INCRBY', KEYS[3], n)
"""


def test_celery_preset_colocates_chord_keys(proxy_factory, cluster, clean):
    proxy = proxy_factory("--preset", "celery")
    c = proxy.client()
    gid = "a1b2c3"
    keys = [f"celery-taskset-meta-{gid}{s}" for s in ("", ".j", ".t", ".s", ".d", ".c")]
    assert len({cluster.keyslot(k) for k in keys}) > 1  # they would not share a slot
    sha = c.script_load(CHORD_LIKE)
    assert c.evalsha(sha, len(keys), *keys, "5") == 11
    assert sorted(c.keys("celery-taskset-meta-*")) == sorted(keys)
    assert c.get(keys[1]) == "5"
    # Stored under a hash tag, visible as such to a client of the cluster itself.
    direct = cluster.cluster_client()
    assert direct.get(f"{{{gid}}}celery-taskset-meta-{gid}.j") == "5"
    assert direct.get(keys[1]) is None
    # Transactions over the family run natively; names come back in replies.
    pipe = c.pipeline(transaction=True)
    pipe.get(keys[1])
    pipe.incr(keys[2])
    assert pipe.execute() == ["5", 12]
    c.delete(keys[1])
    c.rpush(keys[1], "r")
    assert c.brpop([keys[1]], timeout=1) == (keys[1], "r")
    found = set()
    cursor = 0
    while True:
        cursor, batch = c.scan(cursor, match="celery-taskset-meta-*")
        found.update(batch)
        if cursor == 0:
            break
    assert found == set(keys) - {keys[1]}
    # Without the rule the same script is refused, as on a cluster.
    plain = proxy_factory().client()
    with pytest.raises(redis.ResponseError, match="same slot"):
        plain.evalsha(sha, len(keys), *keys, "5")


@pytest.mark.parametrize("db", [0, 1])
def test_celery_preset_runs_kombus_binding_sweep(proxy_factory, standalone, clean, db):
    """kombu's sweep of expired binding tables gets the tables' key prefix as an argument and
    appends exchange names to it: with the preset's rule for those keys, what it builds is the
    stored name, so it deletes what one node would (it failed with "non local key")."""
    from kombu.transport.redis import SWEEP_BINDINGS

    proxy = proxy_factory("--preset", "celery", "--databases", "namespaced")
    results = []
    for endpoint in (standalone, proxy):
        c = endpoint.client(db=db)
        c.sadd("_kombu.binding.dead", "m")
        c.sadd("_kombu.binding.live", "m")
        c.sadd("_kombu.binding_permanent.live", "m")
        c.zadd("_kombu.binding_deadlines", {"dead": 0, "live": 0})
        swept = c.eval(SWEEP_BINDINGS, 1, "_kombu.binding_deadlines",
                       "_kombu.binding.", "_kombu.binding_permanent.", 100)
        results.append((swept, c.exists("_kombu.binding.dead"), c.exists("_kombu.binding.live"),
                        c.zcard("_kombu.binding_deadlines")))
        c.flushdb()
    assert results[1] == results[0] == (2, 0, 1, 0)


def test_custom_colocation_rule_from_config(proxy_factory, cluster, tmp_path, clean):
    config = tmp_path / "rules.yaml"
    config.write_text('colocate:\n  - prefix: "session:"\n    tag_until: ":"\n')
    c = proxy_factory("--config", str(config)).client()
    assert cluster.keyslot("session:42:a") != cluster.keyslot("session:42:b")
    assert c.mset({"session:42:a": "1", "session:42:b": "2"}) is True
    assert c.eval("return redis.call('GET', KEYS[1]) .. redis.call('GET', KEYS[2])", 2,
                  "session:42:a", "session:42:b") == "12"
    assert c.msetnx({"session:42:c": "3", "session:42:d": "4"}) is True


def test_select_without_namespaces_names_the_option(proxy):
    reply = proxy.raw(b"SELECT 1\r\n", expect=b"\r\n")
    assert reply.startswith(b"-ERR DB index is out of range") and b"databases: namespaced" in reply


def test_namespaced_databases_are_isolated(proxy_factory, cluster, clean):
    proxy = proxy_factory("--databases", "namespaced")
    db0 = proxy.client(db=0)
    db1 = proxy.client(db=1)
    db2 = proxy.client(db=2, protocol=3)
    keys = spread_keys(cluster, "ns", per_master=2)
    db0.mset({k: "zero" for k in keys})
    db1.mset({k: "one" for k in keys[:3]})
    db2.set(keys[0], "two")
    assert db0.mget(keys[:3]) == ["zero"] * 3
    assert db1.mget(keys[:4]) == ["one", "one", "one", None]
    assert db2.get(keys[0]) == "two"
    assert db0.dbsize() == len(keys) and db1.dbsize() == 3 and db2.dbsize() == 1
    assert sorted(db1.keys("*")) == sorted(keys[:3])
    assert sorted(db0.keys("ns:*")) == sorted(keys)
    assert sorted(db1.scan_iter("*")) == sorted(keys[:3])
    assert db1.randomkey() in keys[:3]
    db1.rpush("dbq", "x")
    assert db1.brpop(["dbq", "other"], timeout=1) == ("dbq", "x")
    assert db1.flushdb() is True
    assert db1.dbsize() == 0 and db0.dbsize() == len(keys) and db2.dbsize() == 1
    # Database 0 keys are stored as they are.
    assert cluster.cluster_client().get(keys[0]) == "zero"
    assert cluster.cluster_client().get(f"__slotway_db2__:{keys[0]}") == "two"
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        db0.execute_command("SELECT", 16)


@pytest.mark.parametrize("protocol", [2, 3])
def test_xread_across_slots_without_block_matches_a_single_node(proxy, standalone, cluster, clean, protocol):
    """XREAD and XREADGROUP over streams of several slots answer as one node, errors included,
    and an XREADGROUP that one node refuses delivers nothing on any slot."""
    streams = ["st:a", "st:b", "st:c", "st:d"]
    assert len({cluster.keyslot(s) for s in streams}) > 1
    script = [["XADD", "st:c", "1-1", "f", "c1"], ["XADD", "st:a", "1-1", "f", "a1"],
              ["XADD", "st:a", "2-1", "f", "a2"], ["XGROUP", "CREATE", "st:c", "g", "0"],
              ["XGROUP", "CREATE", "st:a", "g", "0"]]
    script += [["SET", "st:str", "s"]]
    group_read = ["XREADGROUP", "GROUP", "g", "c1", "STREAMS"]
    pending = [["XPENDING", "st:a", "g"], ["XPENDING", "st:c", "g"]]
    reads = [["XREAD", "COUNT", "5", "STREAMS", *streams, "0", "0", "0", "0"],
             ["XREAD", "STREAMS", "st:b", "st:d", "0", "0"],
             # One node checks every stream's type, group and ID before it delivers anything:
             # none of these may leave st:a's or st:c's entries pending.
             group_read + ["st:a", "st:b", ">", ">"],
             group_read + ["st:c", "st:str", ">", ">"],
             group_read + ["st:a", "st:c", ">", "$"],
             group_read + ["st:a", "st:c", ">", "1-x"],
             group_read + ["st:a", "st:c", "1-x", "$"],
             group_read + ["st:a", "st:b", "$", ">"],
             group_read + ["st:a", "st:c", ">", "+1"],
             group_read + ["st:a", "st:b", "st:c", ">", ">"],
             ["XREADGROUP", "GROUP", "nog", "c1", "STREAMS", "st:a", "st:c", ">", ">"],
             *pending,
             ["XREADGROUP", "GROUP", "g", "c1", "COUNT", "1", "STREAMS", "st:c", "st:a", ">", ">"],
             ["XREADGROUP", "GROUP", "g", "c2", "STREAMS", "st:c", "st:a", ">", ">"],
             ["XREADGROUP", "GROUP", "g", "c2", "STREAMS", "st:c", "st:a", ">", ">"],
             *pending]
    for endpoint in (proxy, standalone):
        c = endpoint.client(protocol=protocol)
        for cmd in script:
            c.execute_command(*cmd)
    p, s = proxy.client(protocol=protocol), standalone.client(protocol=protocol)

    def call(client, cmd):
        try:
            return client.execute_command(*cmd)
        except redis.ResponseError as e:
            return f"error: {e}"

    for cmd in reads:
        assert call(p, cmd) == call(s, cmd), cmd
    # With BLOCK: what has entries now is answered at once, merged, as one node does.
    blocked = ["XREAD", "BLOCK", "100", "STREAMS", *streams, "0", "0", "0", "0"]
    assert p.execute_command(*blocked) == s.execute_command(*blocked)


def test_redirects_without_a_host_go_to_the_sending_nodes_host(proxy_factory, cluster, clean):
    """With `cluster-preferred-endpoint-type unknown-endpoint`, MOVED says `:port`: the node to
    use is on the host of the node that answered."""
    stale = proxy_factory("--refresh-interval-ms", "60000")  # knows the slot map before the move
    key = "noendpoint:k"
    slot = cluster.keyslot(key)
    home = cluster.node_for_slot(slot)
    other = next(m for m in cluster.masters() if m != home)
    c = stale.client()
    assert c.get(key) is None  # the proxy's map is loaded
    nodes, masters = cluster.addrs(), cluster.masters()
    try:
        for addr in nodes:
            cluster.node(addr).admin.config_set("cluster-preferred-endpoint-type", "unknown-endpoint")
        # As move_slot, without waiting for the harness's view (it cannot read `?` endpoints).
        source_id, to_id = cluster.node_id(home), cluster.node_id(other)
        cluster.node(other).admin.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        cluster.node(home).admin.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", to_id)
        for addr in [other, home] + [m for m in masters if m not in (other, home)]:
            cluster.node(addr).admin.execute_command("CLUSTER", "SETSLOT", slot, "NODE", to_id)
        with pytest.raises(redis.ResponseError) as refused:
            cluster.node(home).admin.execute_command("GET", key)
        assert str(refused.value).endswith(f" :{other.rsplit(':', 1)[1]}"), str(refused.value)
        cluster.node_client(other).set(key, "moved")
        redirected = cluster.node_client(home).info("commandstats")["cmdstat_get"]["rejected_calls"]
        retries = c.info("proxy")["backend_retries"]
        assert c.get(key) == "moved"
        # Straight to the new owner: no failed connection to a host-less address, no retry.
        assert c.info("proxy")["backend_retries"] == retries
        # It was a redirect (the home node refused it), followed without an error.
        after = cluster.node_client(home).info("commandstats")["cmdstat_get"]["rejected_calls"]
        assert after > redirected
        cluster.node_client(other).delete(key)
    finally:
        for addr in nodes:
            cluster.node(addr).admin.config_set("cluster-preferred-endpoint-type", "ip")
        move_slot(cluster, slot, home)

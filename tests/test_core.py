"""Core proxy behaviour (issue: one RESP endpoint in front of a Redis Cluster).

Every test runs real clients (redis-py, redis-cli, raw sockets) against a real
slotway in front of a real 3+3 cluster, and where a single node is the
reference, runs the same commands against a standalone redis-server and
compares the replies.
"""

from __future__ import annotations

import random
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis


def spread_keys(cluster, prefix: str, per_master: int = 3) -> list[str]:
    """Keys named ``prefix:N`` chosen so that every master owns ``per_master`` of them."""
    masters = cluster.masters()
    found: dict[str, list[str]] = {m: [] for m in masters}
    i = 0
    while any(len(v) < per_master for v in found.values()):
        key = f"{prefix}:{i}"
        owner = cluster.node_for_key(key)
        if len(found[owner]) < per_master:
            found[owner].append(key)
        i += 1
    return [k for keys in found.values() for k in keys]


# -- handshake and local commands ----------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_connects_with_either_protocol(proxy, protocol):
    c = proxy.client(protocol=protocol)
    assert c.ping() is True
    assert c.set("greeting", "hello") is True
    assert c.get("greeting") == "hello"
    hello = c.execute_command("HELLO", protocol)
    hello = dict(zip(hello[::2], hello[1::2])) if isinstance(hello, list) else hello
    assert hello["proto"] == protocol
    assert hello["mode"] == "standalone"
    assert hello["role"] == "master"
    assert hello["version"].startswith("7.")


def test_resp3_replies_keep_their_types(proxy, standalone):
    for endpoint in (proxy, standalone):
        c = endpoint.client(protocol=3)
        c.delete("h3", "s3", "z3")
        c.hset("h3", mapping={"a": "1", "b": "2"})
        c.sadd("s3", "x", "y")
        c.zadd("z3", {"m": 1.5})
    p, s = proxy.client(protocol=3), standalone.client(protocol=3)
    for cmd in (["HGETALL", "h3"], ["SMEMBERS", "s3"], ["ZSCORE", "z3", "m"],
                ["ZRANGE", "z3", "0", "-1", "WITHSCORES"]):
        assert p.execute_command(*cmd) == s.execute_command(*cmd), cmd
    raw = proxy.raw(b"HELLO 3\r\nHGETALL h3\r\n", expect=b"\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n")
    assert b"%2\r\n" in raw.split(b"\r\n", 1)[1] or b"%2\r\n" in raw


def test_role_answers_like_a_master_without_replicas(proxy, standalone):
    for hello in (b"", b"HELLO 3\r\n"):
        ours = proxy.raw(hello + b"ROLE\r\n", timeout=0.5).split(b"modules\r\n*0\r\n")[-1]
        theirs = standalone.raw(hello + b"ROLE\r\n", timeout=0.5).split(b"modules\r\n*0\r\n")[-1]
        assert ours == theirs == b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"


def test_local_commands_answer_like_a_single_node(proxy):
    c = proxy.client()
    assert c.echo("hi there") == "hi there"
    assert proxy.raw(b"PING x\r\n", expect=b"\r\n") == b"$1\r\nx\r\n"
    assert c.client_setname("worker-1") is True
    assert c.client_getname() == "worker-1"
    assert isinstance(c.client_id(), int)
    assert "name=worker-1" in c.execute_command("CLIENT", "LIST")
    assert c.execute_command("CLIENT", "SETINFO", "LIB-NAME", "mylib") == "OK"
    assert "lib-name=mylib" in c.execute_command("CLIENT", "INFO")
    # The fields of a Redis 7.2 line, in its order (what redis-py's parser and Redis's own
    # introspection.tcl read).
    fields = [f.split("=")[0] for f in c.execute_command("CLIENT", "INFO").split()]
    assert fields == ["id", "addr", "laddr", "fd", "name", "age", "idle", "flags", "db", "sub",
                      "psub", "ssub", "multi", "qbuf", "qbuf-free", "argv-mem", "multi-mem",
                      "rbs", "rbp", "obl", "oll", "omem", "tot-mem", "events", "cmd", "user",
                      "redir", "resp", "lib-name", "lib-ver"]
    assert "cmd=client|info" in c.execute_command("CLIENT", "INFO")
    # The caller's own query buffer still holds the command being run, as on a node.
    assert " qbuf=26 " in c.execute_command("CLIENT", "INFO")  # *2 $6 CLIENT $4 INFO
    assert proxy.raw(b"SELECT 0\r\n", expect=b"\r\n") == b"+OK\r\n"
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        c.execute_command("SELECT", 1)
    seconds, micros = c.time()
    assert abs(seconds - time.time()) < 5 and 0 <= micros < 1_000_000
    assert proxy.raw(b"READONLY\r\n", expect=b"\r\n") == b"+OK\r\n"
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get' command"):
        c.execute_command("GET")


def test_info_is_shaped_like_redis(proxy, cluster):
    c = proxy.client()
    keys = spread_keys(cluster, "info", per_master=2)
    for k in keys:
        c.set(k, "v")
    info = c.info()
    assert info["redis_version"].startswith("7.")
    assert info["redis_mode"] == "standalone"
    assert info["arch_bits"] == 64
    assert info["cluster_enabled"] == 0
    assert info["db0"]["keys"] == c.dbsize() >= len(keys)
    text = proxy.raw(b"INFO proxy\r\n", timeout=1)
    assert b"# Proxy\r\n" in text and b"cluster_masters:3\r\n" in text
    assert b"# Server" not in text
    assert c.info("keyspace")["db0"]["keys"] >= len(keys)


def test_info_sums_what_the_masters_hold(proxy, cluster, standalone):
    """Memory, persistence, data counters and error counts of the masters, merged as one node
    holding all their data would report them; CPU is the proxy's own. Every section name and
    field a standalone node's INFO has in Memory, Persistence, Stats and CPU is there."""
    cluster.flushall()
    c = proxy.client()
    keys = spread_keys(cluster, "infosum", per_master=1)
    for k in keys:
        c.set(k, "x" * 100_000)
        c.get(k)
    c.get("infosum-missing")
    with pytest.raises(redis.ResponseError):
        c.execute_command("XGROUP", "CREATECONSUMER", "nostream", "g", "c")
    masters = [cluster.node_client(a) for a in cluster.masters()]
    info = c.info("everything")
    used = sum(m.info("memory")["used_memory"] for m in masters)
    assert abs(info["used_memory"] - used) < 0.1 * used
    assert info["used_memory_human"].endswith("M")
    assert info["maxmemory_policy"] == masters[0].info("memory")["maxmemory_policy"]
    hits = sum(m.info("stats")["keyspace_hits"] for m in masters)
    assert info["keyspace_hits"] == hits >= len(keys)
    assert info["keyspace_misses"] >= 1
    assert info["errorstat_ERR"]["count"] >= 1
    pongs = proxy.raw(b"PING\r\n" * 200_000, timeout=5, max_bytes=7 * 200_000)
    assert len(pongs) == 7 * 200_000  # some CPU time to see
    # The proxy's own CPU time, as /proc counts it for its process (in 10 ms ticks).
    ticks = Path(f"/proc/{proxy.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]
    cpu = c.info("cpu")
    assert cpu["used_cpu_user"] + cpu["used_cpu_sys"] > 0
    assert abs(cpu["used_cpu_user"] - int(ticks[0]) / 100) <= 0.05
    assert abs(cpu["used_cpu_sys"] - int(ticks[1]) / 100) <= 0.05
    assert info["loading"] == 0 and info["rdb_bgsave_in_progress"] == 0
    assert info["total_connections_received"] >= 1
    for section in ("memory", "persistence", "stats", "cpu", "replication"):
        missing = set(standalone.client().info(section)) - set(c.info(section))
        assert not missing, f"{section}: {sorted(missing)}"
    # The same section headers, in the same order, as a standalone node's (plus `# Proxy`).
    def headers(server, *args):
        text = server.raw(b" ".join([b"INFO", *args]) + b"\r\n", timeout=0.5)
        return [line for line in text.split(b"\r\n") if line.startswith(b"# ")]
    for args in ((), (b"all",), (b"everything",), (b"cpu", b"commandstats")):
        mine = [h for h in headers(proxy, *args) if h != b"# Proxy"]
        theirs = [h for h in headers(standalone, *args) if h != b"# Latencystats"]
        assert mine == theirs, args
    assert c.info("commandstats")["cmdstat_set"]["calls"] >= len(keys)
    assert not any(k.startswith("cmdstat_") for k in c.info())


def resp(*args) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def read_bulk(sock) -> bytes:
    data = b""
    while b"\r\n" not in data:
        data += sock.recv(4096)
    head, rest = data.split(b"\r\n", 1)
    n = int(head[1:])
    while len(rest) < n + 2:
        rest += sock.recv(4096)
    return rest[:n]


def monitor_lines(server, commands) -> tuple[list[bytes], str]:
    """MONITOR on ``server`` while another client pipelines ``commands``; the lines without
    their timestamps, and that client's address."""
    mon = socket.create_connection((server.host, server.port), timeout=5)
    client = socket.create_connection((server.host, server.port), timeout=5)
    try:
        mon.sendall(b"MONITOR\r\n")
        assert mon.recv(100) == b"+OK\r\n"
        client.sendall(resp("CLIENT", "INFO"))
        addr = read_bulk(client).split(b"addr=", 1)[1].split(b" ", 1)[0].decode()
        client.sendall(b"".join(resp(*cmd) for cmd in commands) + resp("ECHO", "the end"))
        data = b""
        mon.settimeout(5)
        while b'"ECHO" "the end"' not in data:
            chunk = mon.recv(65536)
            assert chunk, data
            data += chunk
        # RESET ends monitoring: what follows is not shown.
        mon.sendall(b"RESET\r\n")
        rest = b""
        while not rest.endswith(b"+RESET\r\n"):
            rest += mon.recv(100)
        client.sendall(resp("PING"))
        mon.sendall(b"PING\r\n")
        assert mon.recv(100) == b"+PONG\r\n"
    finally:
        mon.close()
        client.close()
    lines = [line.split(b" ", 1)[1] for line in data.split(b"\r\n") if line]
    assert all(line.startswith(b"[0 ") for line in lines), lines
    return lines, addr


def test_monitor_shows_each_clients_commands_as_one_node_does(proxy, standalone, cluster):
    keys = spread_keys(cluster, "mon", per_master=1)
    commands = [
        ("SET", keys[0], "a b\r\n\x01\"\\"),
        ("GET", keys[0]),
        ("MGET", *keys),  # one line as the client sent it, not one per node
        ("CONFIG", "GET", "maxmemory"),  # admin: not shown
        ("AUTH", "nobody", "secret"),  # shown redacted
        ("HELLO", "2", "AUTH", "nobody", "secret"),
        ("DEL", *keys),
    ]
    mine, my_addr = monitor_lines(proxy, commands)
    theirs, their_addr = monitor_lines(standalone, commands)
    strip = lambda lines, addr: [l.replace(f"[0 {addr}]".encode(), b"[0 ADDR]") for l in lines]
    assert strip(mine, my_addr) == strip(theirs, their_addr)
    assert b'"AUTH" "(redacted)" "(redacted)"' in mine[4] and b"secret" not in b"".join(mine)
    assert not any(b"CONFIG" in l for l in mine)
    assert mine[0] == f'[0 {my_addr}] "CLIENT" "INFO"'.encode()
    assert mine[1] == f'[0 {my_addr}] "SET" "{keys[0]}" "a b\\r\\n\\x01\\"\\\\"'.encode()


def test_command_docs_and_friends(proxy, standalone):
    for req in (b"COMMAND COUNT\r\n", b"COMMAND DOCS get\r\n", b"COMMAND INFO mget\r\n",
                b"COMMAND GETKEYS MSET a 1 b 2\r\n", b"HELLO 3\r\nCOMMAND DOCS set\r\n"):
        # HELLO's own reply differs in the client id; compare what follows it.
        mine = proxy.raw(req, timeout=0.5).split(b"modules\r\n*0\r\n")[-1]
        theirs = standalone.raw(req, timeout=0.5).split(b"modules\r\n*0\r\n")[-1]
        assert mine == theirs, req
    docs = proxy.raw(b"COMMAND DOCS\r\n", timeout=1)
    reference = standalone.raw(b"COMMAND DOCS\r\n", timeout=1)
    # Same number of entries (a server's dict order varies, so not byte for byte).
    assert len(docs) > 100_000 and docs.split(b"\r\n")[0] == reference.split(b"\r\n")[0]


def test_redis_cli_session(proxy):
    # Interactive-style input through stdin; redis-cli 7 sends COMMAND DOCS first when
    # attached to a terminal, which the test above covers directly.
    out = proxy.cli(input="SET cli:k v1\nGET cli:k\nINCR cli:n\nQUIT\n")
    assert out.split() == ["OK", "v1", "1", "OK"] or out.split()[:3] == ["OK", "v1", "1"]
    assert proxy.cli("GET", "cli:k").strip() == "v1"


def test_auth_is_enforced_when_a_password_is_set(proxy_factory):
    proxy = proxy_factory("--password", "s3cret")
    with pytest.raises(redis.AuthenticationError):
        proxy.client(password="wrong").ping()
    raw = proxy.raw(b"GET x\r\n", expect=b"\r\n")
    assert raw.startswith(b"-NOAUTH Authentication required.")
    c = proxy.client(password="s3cret")
    assert c.ping() is True
    c3 = proxy.client(protocol=3, password="s3cret")
    assert c3.set("authed", "1") is True


# -- single-key commands of every type, compared with one node -------------------------------


def run_script(client, script):
    out = []
    for cmd in script:
        try:
            out.append(client.execute_command(*cmd))
        except redis.ResponseError as e:
            out.append(("error", str(e)))
    return out


SCRIPT = [
    ["SET", "s", "v", "EX", "100"], ["GET", "s"], ["APPEND", "s", "x"], ["STRLEN", "s"],
    ["SET", "n", "10"], ["INCRBY", "n", "5"], ["INCRBYFLOAT", "n", "0.5"], ["GETRANGE", "s", "0", "1"],
    ["SETNX", "s", "other"], ["GETDEL", "n"], ["EXISTS", "n"], ["SET", "s2", "a", "GET"],
    ["EXPIRE", "s", "50", "NX"], ["EXPIRE", "s", "500", "GT"], ["TTL", "s"], ["PERSIST", "s"],
    ["TYPE", "s"], ["OBJECT", "ENCODING", "s"],
    ["RPUSH", "l", "a", "b", "c", "d"], ["LPOP", "l", "2"], ["LRANGE", "l", "0", "-1"],
    ["LINSERT", "l", "BEFORE", "d", "x"], ["LPOS", "l", "d"], ["LMOVE", "l", "l", "LEFT", "RIGHT"],
    ["HSET", "h", "f1", "1", "f2", "2"], ["HGET", "h", "f1"], ["HINCRBY", "h", "f1", "3"],
    ["HGETALL", "h"], ["HDEL", "h", "f2"], ["HEXISTS", "h", "f2"], ["HRANDFIELD", "h", "1"],
    ["SADD", "st", "a", "b", "c"], ["SISMEMBER", "st", "a"], ["SMISMEMBER", "st", "a", "z"],
    ["SCARD", "st"], ["SREM", "st", "a"],
    ["ZADD", "z", "1", "a", "2", "b", "3", "c"], ["ZADD", "z", "GT", "CH", "5", "a"],
    ["ZRANGE", "z", "+inf", "0", "BYSCORE", "REV", "LIMIT", "0", "10", "WITHSCORES"],
    ["ZRANK", "z", "c"], ["ZINCRBY", "z", "1.5", "b"], ["ZPOPMIN", "z"], ["ZCOUNT", "z", "-inf", "+inf"],
    ["PFADD", "hll", "a", "b", "c"], ["PFCOUNT", "hll"],
    ["SETBIT", "bits", "7", "1"], ["BITCOUNT", "bits"], ["BITPOS", "bits", "1"],
    ["GEOADD", "geo", "13.361389", "38.115556", "Palermo"], ["GEOPOS", "geo", "Palermo"],
    ["XADD", "x", "1-1", "f", "v"], ["XADD", "x", "2-1", "f", "w"], ["XLEN", "x"],
    ["XRANGE", "x", "-", "+"], ["XGROUP", "CREATE", "x", "g", "0"],
    ["XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", "x", ">"], ["XPENDING", "x", "g"],
    ["LPUSH", "s", "x"],  # WRONGTYPE from the node, forwarded as is
    ["SUNION", "{t}a", "{t}b"], ["SINTERSTORE", "{t}c", "{t}a", "{t}b"],
    ["RENAME", "{t}c", "{t}d"], ["EVAL", "return {KEYS[1], ARGV[1]}", "1", "k", "a"],
    ["EVAL", "return 42", "0"],
    ["DEL", "s", "s2", "l", "h", "st", "z", "hll", "bits", "geo", "x"],
]


def test_single_key_commands_match_a_standalone_node(proxy, standalone):
    standalone.admin.flushall() if hasattr(standalone, "admin") else standalone.client().flushall()
    for protocol in (2, 3):
        p = run_script(proxy.client(protocol=protocol), SCRIPT)
        s = run_script(standalone.client(protocol=protocol), SCRIPT)
        for cmd, a, b in zip(SCRIPT, p, s):
            assert a == b, f"{cmd}: proxy {a!r} != standalone {b!r} (RESP{protocol})"


def test_crossslot_commands_are_refused_clearly(proxy):
    c = proxy.client()
    c.sadd("cs:a", "1")
    c.sadd("cs:b", "2")
    with pytest.raises(redis.ResponseError, match=r"Keys in request don't hash to the same slot.*'eval'"):
        c.execute_command("EVAL", "return redis.call('DEL', KEYS[2])", "2", "cs:a", "cs:b")
    with pytest.raises(redis.ResponseError, match=r"same slot.*'msetnx'.*nothing was written"):
        c.msetnx({"cs:x": "1", "cs:y": "2"})
    assert c.exists("cs:x", "cs:y") == 0
    assert proxy.raw(b"EVAL return 2 cs:a cs:b\r\n", expect=b"\r\n").startswith(b"-CROSSSLOT ")
    assert c.smembers("cs:b") == {"2"}


def test_arguments_whose_keys_cannot_be_read_answer_as_one_node(proxy, standalone):
    """A bad numkeys, XREAD without STREAMS, MSET with a key and no value, PFMERGE with its
    destination only: the node's own answers, inside MULTI too (where one node queues them
    and fails them at EXEC)."""
    standalone.client().flushall()
    proxy.client().delete("dest", "k", "w", "y")
    cmds = [
        ["EVALSHA", "k", "v", "w"], ["FCALL", "k", "v", "w"], ["EVAL", "return 1", "x", "k"],
        ["EVAL", "return 1", "3", "k"], ["XREAD", "k", "v", "w", "x", "y"],
        ["MSET", "k", "v", "w", "x", "y"], ["MSETNX", "k", "v", "w"], ["PFMERGE", "dest"],
        ["TYPE", "dest"], ["MULTI"], ["EVAL", "return 1", "x", "k"], ["SET", "k", "1"], ["EXEC"],
    ]
    payload = b"".join(
        b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in c) for c in cmds
    )
    end = b"*2\r\n-ERR value is not an integer or out of range\r\n+OK\r\n"
    theirs = standalone.raw(payload, expect=end)
    assert theirs.endswith(end) and b"+string\r\n" in theirs
    assert proxy.raw(payload, expect=end) == theirs


def test_unknown_commands_are_routed_by_first_key(proxy, cluster):
    c = proxy.client()
    # Not in the table: routed to the owner of "mod:key", which refuses it as an unknown command.
    with pytest.raises(redis.ResponseError, match="unknown command 'MYMOD.GET'"):
        c.execute_command("MYMOD.GET", "mod:key")


def test_unknown_commands_can_be_refused(proxy_factory):
    proxy = proxy_factory("--unknown-commands", "refuse")
    raw = proxy.raw(b"MYMOD.GET k1 k2\r\n", expect=b"\r\n")
    assert raw == b"-ERR unknown command 'MYMOD.GET', with args beginning with: 'k1' 'k2' \r\n"


# -- data: binary, large, verified on the cluster -----------------------------------------


def test_binary_and_large_values_are_stored_exactly(proxy, cluster):
    c = proxy.client(decode_responses=False)
    binary = b"a\r\nb\x00c\r\n$3\r\n*1\r\n\xff"
    big = bytes(random.getrandbits(8) for _ in range(1024)) * 1024  # 1 MiB
    key_b, key_l = b"bin\r\n\x00key", b"large"
    assert c.set(key_b, binary)
    assert c.set(key_l, big)
    assert c.get(key_b) == binary
    assert c.get(key_l) == big
    # Verify on the node that owns each key, not only through the proxy.
    for key, value in ((key_b, binary), (key_l, big)):
        owner = cluster.node_for_key(key)
        assert cluster.node_client(owner, decode_responses=False).get(key) == value
    assert c.strlen(key_l) == len(big)


def test_a_script_reply_nested_thousands_deep_is_forwarded_as_one_node_sends_it(
    proxy, standalone
):
    """A table that holds itself comes back about 8,000 arrays deep; the proxy passes it on
    whole, and the node connection it came on keeps serving other clients."""
    script = b"local a = {}; local b = {a}; a[1] = b; return a"
    request = b"*3\r\n$4\r\nEVAL\r\n$%d\r\n%s\r\n$1\r\n0\r\n" % (len(script), script)
    ending = b"-ERR reached lua stack limit\r\n"
    theirs = standalone.raw(request + b"PING\r\n", expect=ending + b"+PONG\r\n")
    assert theirs.count(b"*1\r\n") > 5000
    other = proxy.client()
    other.set("before", 1)
    mine = proxy.raw(request + b"PING\r\n", expect=ending + b"+PONG\r\n")
    assert mine == theirs
    assert other.get("before") == "1" and other.ping()


def test_ten_thousand_command_pipeline_keeps_order(proxy, cluster):
    c = proxy.client()
    pipe = c.pipeline(transaction=False)
    n = 10_000
    for i in range(n):
        pipe.set(f"pipe:{i}", i)
        pipe.get(f"pipe:{i}")
    replies = pipe.execute()
    assert len(replies) == 2 * n
    assert replies[0::2] == [True] * n
    assert replies[1::2] == [str(i) for i in range(n)]
    # The keys really are spread over all masters, and stored there.
    owners = {cluster.node_for_key(f"pipe:{i}") for i in range(0, n, 97)}
    assert owners == set(cluster.masters())
    direct = cluster.cluster_client()
    sample = random.sample(range(n), 200)
    assert [direct.get(f"pipe:{i}") for i in sample] == [str(i) for i in sample]


def test_requests_buffered_beyond_max_pipeline_are_not_stalled(proxy_factory, tmp_path):
    # Regression: once the in-flight cap was reached, requests already read into the buffer
    # waited for the client to send more bytes (seconds, or for ever) before being decoded.
    config = tmp_path / "small-pipeline.yaml"
    config.write_text("max_pipeline: 8\n")
    proxy = proxy_factory("--config", str(config))
    payload = b"".join(b"*3\r\n$3\r\nSET\r\n$6\r\nmp:%03d\r\n$1\r\n1\r\n" % i for i in range(300))
    started = time.monotonic()
    reply = proxy.raw(payload + b"*2\r\n$3\r\nGET\r\n$6\r\nmp:299\r\n", timeout=4,
                      expect=b"+OK\r\n" * 300 + b"$1\r\n1\r\n")
    assert reply == b"+OK\r\n" * 300 + b"$1\r\n1\r\n"
    assert time.monotonic() - started < 3


def test_raw_pipeline_across_masters_in_one_write(proxy, cluster):
    keys = spread_keys(cluster, "rawp", per_master=5)
    payload = b"".join(
        b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k.encode(), len(k), k.encode())
        for k in keys
    ) + b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k.encode()) for k in keys)
    expected = b"+OK\r\n" * len(keys) + b"".join(b"$%d\r\n%s\r\n" % (len(k), k.encode()) for k in keys)
    assert proxy.raw(payload, expect=expected) == expected


def test_many_clients_share_few_backend_connections(proxy, cluster):
    def connection_ids(addr):
        listing = cluster.node_client(addr).execute_command("CLIENT", "LIST")
        return {line.split()[0] for line in listing.splitlines()}

    before = {addr: connection_ids(addr) for addr in cluster.masters()}
    clients = [proxy.client() for _ in range(100)]
    for i, c in enumerate(clients):
        c.set(f"many:{i}", i)
    for addr in cluster.masters():
        new = connection_ids(addr) - before[addr]
        # The pool (2 per node) plus this check's own admin connection, at most.
        assert len(new) <= 4, f"{addr} got {len(new)} new connections for 100 clients"


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, error",
    [
        (b"*2\r\n$3\r\nGET\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n:1\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
        (b"*x\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*4294967295\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$99999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b'SET "a b\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n"),
        (b"A" * (70 * 1024), b"-ERR Protocol error: too big inline request\r\n"),
    ],
)
def test_malformed_input_costs_only_that_connection(proxy, payload, error):
    other = proxy.client()
    other.set("survivor", "yes")
    # Valid commands before the bad bytes are answered first, then the error, then close.
    reply = proxy.raw(b"PING\r\n" + payload, timeout=2)
    assert reply == b"+PONG\r\n" + error
    assert other.get("survivor") == "yes"
    assert proxy.client().ping() is True


@pytest.mark.parametrize(
    "payload",
    [
        b"\r\nPING\r\n",  # an empty query
        b"*-10\r\nPING\r\n",  # a negative count is skipped, as *0 and *-1 are
        b"*-9223372036854775808\r\nPING\r\n",
        b"*0\r\n*-1\r\nPING\r\n",
        b"*-0\r\nPING\r\n",  # not a number to Redis
        b"*3000000000\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$2000000000\r\n",
    ],
)
def test_odd_request_framing_is_read_as_one_node_reads_it(proxy, standalone, payload):
    """The cases of Redis's own tests/unit/protocol.tcl, compared byte for byte."""
    assert proxy.raw(payload, timeout=0.5) == standalone.raw(payload, timeout=0.5)


def test_inline_commands_work_like_telnet(proxy):
    reply = proxy.raw(b'PING\r\nSET inl "a b\\x41"\r\nGET inl\r\n\r\nECHO \'x y\'\n',
                      expect=b"$3\r\nx y\r\n")
    assert reply == b"+PONG\r\n+OK\r\n$4\r\na bA\r\n$3\r\nx y\r\n"


def test_garbage_from_many_clients_never_crashes_the_proxy(proxy):
    rng = random.Random(7)
    for _ in range(200):
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
        try:
            proxy.raw(rng.choice([b"", b"*3\r\n", b"$5\r\n"]) + junk, timeout=0.05)
        except OSError:
            pass
    assert proxy.client().ping() is True


def test_half_closed_client_still_gets_its_replies(proxy):
    with socket.create_connection((proxy.host, proxy.port)) as s:
        s.sendall(b"SET hc 1\r\nGET hc\r\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        s.settimeout(5)
        while chunk := s.recv(1024):
            data += chunk
    assert data == b"+OK\r\n$1\r\n1\r\n"


# -- configuration ------------------------------------------------------------------------


def test_bad_configuration_is_refused_naming_the_field(tmp_path):
    from support.proxy import slotway_path

    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: 127.0.0.1:0\nseeds: [\"127.0.0.1:1\"]\nbackend_connections: 0\n")
    r = subprocess.run([slotway_path(), "--check-config", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "backend_connections" in r.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text("lisen: 127.0.0.1:0\n")
    r = subprocess.run([slotway_path(), "--check-config", str(typo)], capture_output=True, text=True)
    assert r.returncode != 0 and "lisen" in r.stderr
    good = tmp_path / "good.yaml"
    good.write_text("listen: 127.0.0.1:0\nseeds: [\"127.0.0.1:7000\"]\n")
    r = subprocess.run([slotway_path(), "--check-config", str(good)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([slotway_path(), "--seed", "nonsense"], capture_output=True, text=True)
    assert r.returncode != 0 and "seeds" in r.stderr


# -- resharding and failover under load ---------------------------------------------------


class Load:
    """Client threads doing SET then GET of their own keys through the proxy, recording every
    error and every acknowledged write."""

    def __init__(self, proxy, threads: int = 4, keys: int = 2000):
        self.proxy = proxy
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.acked: dict[str, tuple[str, float]] = {}
        self.ops = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(t, keys), daemon=True)
                        for t in range(threads)]

    def run(self, t: int, keys: int):
        c = self.proxy.client(socket_timeout=15)
        n = 0
        while not self.stop.is_set():
            key = f"load:{t}:{n % keys}"
            value = f"{n}"
            try:
                c.set(key, value)
                with self.lock:
                    self.acked[key] = (value, time.monotonic())
                got = c.get(key)
                if got != value:
                    self.errors.append(f"{key}: read {got!r}, wrote {value!r}")
                with self.lock:
                    self.ops += 1
            except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError) as e:
                with self.lock:
                    self.errors.append(f"{time.monotonic():.3f} {key}: {e}")
                    self.acked.pop(key, None)
            n += 1

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


@pytest.mark.slow
def test_live_reshard_under_load_shows_no_errors(proxy, cluster):
    c = proxy.client()
    for i in range(3000):
        c.set(f"pre:{i}", i)
    masters = cluster.masters()
    with Load(proxy) as load:
        time.sleep(0.5)
        job = cluster.reshard(masters[0], masters[1], 2000, background=True, pipeline=50)
        job.wait(timeout=240)
        time.sleep(0.5)
    assert load.errors == [], load.errors[:10]
    assert load.ops > 500
    assert int(c.info("proxy")["redirects_moved"]) + int(c.info("proxy")["redirects_ask"]) > 0
    direct = cluster.cluster_client()
    for key, (value, _) in list(load.acked.items())[:500]:
        assert direct.get(key) == value
    assert c.mget([f"pre:{i}" for i in range(0, 3000, 7)]) == [str(i) for i in range(0, 3000, 7)]


def test_pipelined_writes_keep_their_order_while_their_slot_moves(proxy, cluster):
    # Regression: requests already on their way to a slot's old owner were redirected and sent
    # again *after* requests decoded once the proxy knew the new owner, which had gone straight
    # there: a client's pipelined RPUSHes landed out of order during a reshard.
    key = "{order-moves}list"
    slot = cluster.keyslot(key)
    home = cluster.node_for_slot(slot)
    away = next(m for m in cluster.masters() if m != home)
    chunk = 500
    sock = socket.create_connection((proxy.host, proxy.port))
    sock.settimeout(0.5)
    stop = threading.Event()
    sent = [0]
    replies: list[bytes] = []

    def write_requests():
        while not stop.is_set():
            start = sent[0]
            sock.sendall(b"".join(
                b"*3\r\n$5\r\nRPUSH\r\n$%d\r\n%s\r\n$%d\r\n%d\r\n"
                % (len(key), key.encode(), len(str(i)), i)
                for i in range(start, start + chunk)))
            sent[0] += chunk

    def read_replies():
        buf = b""
        deadline = time.monotonic() + 120
        while not (stop.is_set() and len(replies) == sent[0]) and time.monotonic() < deadline:
            try:
                data = sock.recv(1 << 16)
            except socket.timeout:
                continue
            if not data:
                break
            lines = (buf + data).split(b"\r\n")
            buf = lines.pop()
            replies.extend(lines)

    writer = threading.Thread(target=write_requests)
    reader = threading.Thread(target=read_replies)
    writer.start()
    reader.start()
    try:
        for moves in range(8):
            time.sleep(0.1)
            cluster.move_slot(slot, away if moves % 2 == 0 else home)
        stop.set()
        writer.join(timeout=60)
        reader.join(timeout=130)
    finally:
        stop.set()
        sock.close()
        cluster.move_slot(slot, home)
        cluster.wait_stable()
    # Every RPUSH answered the list's length at its turn: in order, none lost, no error.
    n = sent[0]
    bad = [(i, r) for i, r in enumerate(replies) if r != b":%d" % (i + 1)]
    assert len(replies) == n and bad == [], (n, len(replies), bad[:5])
    stored = cluster.node_client(home).lrange(key, 0, -1)
    assert stored == [str(i) for i in range(n)]
    proxy.client().delete(key)


@pytest.mark.slow
def test_master_killed_under_load_recovers_without_losing_acknowledged_writes(proxy, cluster):
    with Load(proxy, threads=3, keys=500) as load:
        time.sleep(1.0)
        killed_at = time.monotonic()
        dead = cluster.kill_master()
        new_master = cluster.wait_for_failover(dead)
        promoted_at = time.monotonic()
        # The proxy serves the promoted replica within a second of the promotion.
        probe = next(k for k in (f"probe:{i}" for i in range(10_000))
                     if cluster.node_for_key(k) == new_master)
        c = proxy.client()
        deadline = promoted_at + 1.0
        while True:
            try:
                assert c.set(probe, "ok") is True
                break
            except redis.ResponseError:
                assert time.monotonic() < deadline, "promoted replica not served within 1 s"
                time.sleep(0.02)
        ops_at_promotion = load.ops
        time.sleep(2.0)
        assert load.ops > ops_at_promotion + 50, "clients did not recover after the failover"
    # Errors are allowed only while the master was down, and must be errors, never wrong data.
    assert not [e for e in load.errors if "read" in e and "wrote" in e]
    direct = cluster.cluster_client()
    lost = []
    for key, (value, acked_at) in load.acked.items():
        if direct.get(key) != value and acked_at < killed_at - 0.5:
            lost.append(key)
    assert lost == [], f"{len(lost)} acknowledged writes lost: {lost[:5]}"
    cluster.restart(dead)

#!/usr/bin/env python3
"""Generate routing/src/command_table.rs from a real redis-server's COMMAND reply.

Dev tool, not run in CI. Standard library only.

Usage (from anywhere):

    python3 routing/gen/gen_commands.py                   # starts its own redis-server
    python3 routing/gen/gen_commands.py --port 6379       # queries a running server instead
    cargo fmt -p slotway-routing

The table was last generated from redis-server 7.0.15. Commands and subcommands added in
Redis 7.2 and 7.4 are not in that server's reply; they are listed in OVERRIDES below, written
from the JSON command files of those releases (src/commands/*.json), and merged in. An override
replaces a command of the same name if the server has one.

The output is sorted by name in byte order, which `command::lookup` relies on (binary search).
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, "..", "src", "command_table.rs"))

# --- Commands newer than the generating server ------------------------------------------------
#
# Same shape as a parsed COMMAND entry (see `parse_command`). Of the key spec flags the table
# keeps INCOMPLETE and NOT_KEY; the others are listed for the reader.


def _index_range(pos, flags):
    return {
        "flags": flags,
        "begin_search": ("index", {"index": pos}),
        "find_keys": ("range", {"lastkey": 0, "keystep": 1, "limit": 0}),
    }


def _hash_field_expire(name):
    # HEXPIRE key seconds [NX|XX|GT|LT] FIELDS numfields field [field ...]   (7.4.0)
    return {
        "name": name,
        "arity": -6,
        "flags": ["write", "denyoom", "fast"],
        "first": 1,
        "last": 1,
        "step": 1,
        "tips": [],
        "key_specs": [_index_range(1, ["RW", "UPDATE"])],
        "subcommands": [],
        "since": "7.4.0",
    }


def _hash_field_ttl(name, tips):
    # HTTL key FIELDS numfields field [field ...]   (7.4.0)
    return {
        "name": name,
        "arity": -5,
        "flags": ["readonly", "fast"],
        "first": 1,
        "last": 1,
        "step": 1,
        "tips": tips,
        "key_specs": [_index_range(1, ["RO", "ACCESS"])],
        "subcommands": [],
        "since": "7.4.0",
    }


def _no_keys(name, arity, flags, tips=(), since="7.2.0"):
    return {
        "name": name,
        "arity": arity,
        "flags": list(flags),
        "first": 0,
        "last": 0,
        "step": 0,
        "tips": list(tips),
        "key_specs": [],
        "subcommands": [],
        "since": since,
    }


# Top-level commands.
OVERRIDES = [
    # WAITAOF numlocal numreplicas timeout   (7.2.0, src/commands/waitaof.json)
    _no_keys(
        "waitaof",
        4,
        ["blocking"],
        ["request_policy:all_shards", "response_policy:agg_min"],
    ),
    _hash_field_expire("hexpire"),
    _hash_field_expire("hpexpire"),
    _hash_field_expire("hexpireat"),
    _hash_field_expire("hpexpireat"),
    # TTL and PTTL carry nondeterministic_output, EXPIRETIME and PEXPIRETIME do not; the hash
    # field versions follow them.
    _hash_field_ttl("httl", ["nondeterministic_output"]),
    _hash_field_ttl("hpttl", ["nondeterministic_output"]),
    _hash_field_ttl("hexpiretime", []),
    _hash_field_ttl("hpexpiretime", []),
    # HPERSIST key FIELDS numfields field [field ...]   (7.4.0)
    {
        "name": "hpersist",
        "arity": -5,
        "flags": ["write", "fast"],
        "first": 1,
        "last": 1,
        "step": 1,
        "tips": [],
        "key_specs": [_index_range(1, ["RW", "UPDATE"])],
        "subcommands": [],
        "since": "7.4.0",
    },
]

# Subcommands, by container.
SUB_OVERRIDES = {
    "client": [
        # CLIENT SETINFO <LIB-NAME libname | LIB-VER libver>   (7.2.0)
        _no_keys("client|setinfo", 4, ["noscript", "loading", "stale"]),
        # CLIENT NO-TOUCH <ON | OFF>   (7.2.0)
        _no_keys("client|no-touch", 3, ["noscript", "loading", "stale"]),
    ],
    "cluster": [
        # CLUSTER MYSHARDID   (7.2.0)
        _no_keys("cluster|myshardid", 2, ["stale"], ["nondeterministic_output"]),
    ],
}

# --- RESP2 client ----------------------------------------------------------------------------


class Resp:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def command(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._read()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ValueError("unexpected RESP type %r" % kind)


# --- COMMAND reply parsing -------------------------------------------------------------------


def pairs(flat):
    """A RESP2 flattened map [k1, v1, k2, v2...] as a dict."""
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def parse_key_spec(flat):
    spec = pairs(flat)
    bs, fk = pairs(spec["begin_search"]), pairs(spec["find_keys"])
    return {
        "flags": list(spec.get("flags", [])),
        "begin_search": (bs["type"], pairs(bs["spec"]) if bs["spec"] else {}),
        "find_keys": (fk["type"], pairs(fk["spec"]) if fk["spec"] else {}),
    }


def parse_command(entry):
    name, arity, flags, first, last, step = entry[:6]
    tips = entry[7] if len(entry) > 7 else []
    key_specs = entry[8] if len(entry) > 8 else []
    subs = entry[9] if len(entry) > 9 else []
    return {
        "name": name.lower(),
        "arity": arity,
        "flags": [f.lower() for f in flags],
        "first": first,
        "last": last,
        "step": step,
        "tips": list(tips),
        "key_specs": [parse_key_spec(k) for k in key_specs],
        "subcommands": [parse_command(s) for s in subs],
    }


# --- Rust output -----------------------------------------------------------------------------

FLAG_CONSTS = {
    "write": "WRITE",
    "readonly": "READONLY",
    "denyoom": "DENYOOM",
    "admin": "ADMIN",
    "pubsub": "PUBSUB",
    "noscript": "NOSCRIPT",
    "blocking": "BLOCKING",
    "loading": "LOADING",
    "stale": "STALE",
    "fast": "FAST",
    "no_auth": "NO_AUTH",
    "movablekeys": "MOVABLE_KEYS",
    "no_multi": "NO_MULTI",
    "allow_busy": "ALLOW_BUSY",
    "may_replicate": "MAY_REPLICATE",
    "no_mandatory_keys": "NO_MANDATORY_KEYS",
    "skip_monitor": "SKIP_MONITOR",
    "skip_slowlog": "SKIP_SLOWLOG",
    "asking": "ASKING",
    "no_async_loading": "NO_ASYNC_LOADING",
    "module": "MODULE",
    "module_no_cluster": "MODULE_NO_CLUSTER",
}


def rust_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rust_flags(flags):
    consts = []
    for f in flags:
        if f not in FLAG_CONSTS:
            sys.exit("unknown command flag %r: add a Flags constant and map it in FLAG_CONSTS" % f)
        consts.append("Flags::" + FLAG_CONSTS[f])
    if not consts:
        return "Flags::NONE"
    out = consts[0]
    for c in consts[1:]:
        out += ".union(%s)" % c
    return out


def rust_key_spec(ks):
    bs_type, bs = ks["begin_search"]
    fk_type, fk = ks["find_keys"]
    if bs_type == "index":
        begin = "BeginSearch::Index(%d)" % bs["index"]
    elif bs_type == "keyword":
        begin = "BeginSearch::Keyword { keyword: %s, start_from: %d }" % (
            rust_str(bs["keyword"].upper()),
            bs["startfrom"],
        )
    elif bs_type == "unknown":
        begin = "BeginSearch::Unknown"
    else:
        sys.exit("unknown begin_search type %r" % bs_type)
    if fk_type == "range":
        find = "FindKeys::Range { last_key: %d, step: %d, limit: %d }" % (
            fk["lastkey"],
            fk["keystep"],
            fk["limit"],
        )
    elif fk_type == "keynum":
        find = "FindKeys::KeyNum { key_num_index: %d, first_key: %d, step: %d }" % (
            fk["keynumidx"],
            fk["firstkey"],
            fk["keystep"],
        )
    elif fk_type == "unknown":
        find = "FindKeys::Unknown"
    else:
        sys.exit("unknown find_keys type %r" % fk_type)
    flags = [f.upper() for f in ks["flags"]]
    return (
        "KeySpec { begin_search: %s, find_keys: %s, incomplete: %s, not_key: %s }"
        % (
            begin,
            find,
            str("INCOMPLETE" in flags).lower(),
            str("NOT_KEY" in flags).lower(),
        )
    )


def rust_command(c, indent):
    pad = " " * indent
    lines = [pad + "CommandSpec {"]
    inner = " " * (indent + 4)
    lines.append(inner + "name: %s," % rust_str(c["name"]))
    lines.append(inner + "arity: %d," % c["arity"])
    lines.append(inner + "flags: %s," % rust_flags(c["flags"]))
    lines.append(inner + "first_key: %d," % c["first"])
    lines.append(inner + "last_key: %d," % c["last"])
    lines.append(inner + "step: %d," % c["step"])
    if c["key_specs"]:
        lines.append(inner + "key_specs: &[")
        for ks in c["key_specs"]:
            lines.append(inner + "    " + rust_key_spec(ks) + ",")
        lines.append(inner + "],")
    else:
        lines.append(inner + "key_specs: &[],")
    lines.append(inner + "tips: &[%s]," % ", ".join(rust_str(t) for t in c["tips"]))
    if c["subcommands"]:
        lines.append(inner + "subcommands: &[")
        for s in sorted(c["subcommands"], key=lambda s: s["name"]):
            lines.extend(rust_command(s, indent + 8))
        lines.append(inner + "],")
    else:
        lines.append(inner + "subcommands: &[],")
    lines.append(pad + "},")
    return lines


def render(commands, version):
    commands = sorted(commands, key=lambda c: c["name"])
    max_len = 0
    n_subs = 0
    for c in commands:
        max_len = max(max_len, len(c["name"]))
        for s in c["subcommands"]:
            n_subs += 1
            max_len = max(max_len, len(s["name"].split("|", 1)[1]))
    added = [o["name"] for o in OVERRIDES] + [
        s["name"] for subs in SUB_OVERRIDES.values() for s in subs
    ]
    out = [
        "//! The generated Redis command table: %d commands and %d subcommands."
        % (len(commands), n_subs),
        "//!",
        "//! GENERATED FILE, DO NOT EDIT. Produced by `routing/gen/gen_commands.py` from the `COMMAND`",
    ]
    text = (
        "reply of redis-server %s, plus these commands of later releases, written into the "
        "generator by hand: %s." % (version, ", ".join("`%s`" % n for n in added))
    )
    out += ["//! " + line for line in textwrap.wrap(text, 96, break_on_hyphens=False)]
    out += [
        "//!",
        "//! To regenerate (needs `redis-server` on PATH, or pass `--port` to query a running server):",
        "//!",
        "//! ```text",
        "//! python3 routing/gen/gen_commands.py && cargo fmt -p slotway-routing",
        "//! ```",
        "",
        "use crate::command::{BeginSearch, CommandSpec, FindKeys, Flags, KeySpec};",
        "",
        "/// Length of the longest command name, and of the longest subcommand name without its",
        "/// container prefix. Longer names cannot be in the table.",
        "pub(crate) const MAX_NAME_LEN: usize = %d;" % max_len,
        "",
        "/// Every top-level command, sorted by name in byte order, each with its subcommands sorted",
        "/// the same way (binary search finds subcommands). A `const`, not a `static`, so that",
        "/// `command.rs` can build its hash index from it at compile time.",
        "pub(crate) const COMMANDS: &[CommandSpec] = &[",
    ]
    for c in commands:
        out.extend(rust_command(c, 4))
    out.append("];")
    return "\n".join(out) + "\n"


def merge(commands):
    by_name = {c["name"]: c for c in commands}
    for o in OVERRIDES:
        by_name[o["name"]] = o
    for container, subs in SUB_OVERRIDES.items():
        parent = by_name[container]
        existing = {s["name"]: s for s in parent["subcommands"]}
        for s in subs:
            existing[s["name"]] = s
        parent["subcommands"] = list(existing.values())
    return list(by_name.values())


# --- Driver ----------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary):
    if shutil.which(binary) is None:
        sys.exit("%s not found on PATH" % binary)
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="gen-commands-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            return proc, tmp, Resp("127.0.0.1", port)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start on port %d" % port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, help="query this running server instead of starting one")
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    proc = tmp = None
    if args.port:
        conn = Resp(args.host, args.port)
    else:
        proc, tmp, conn = start_server(args.redis_server)
    try:
        info = conn.command("INFO", "server")
        version = next(
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("redis_version:")
        )
        reply = conn.command("COMMAND")
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
            shutil.rmtree(tmp, ignore_errors=True)

    commands = merge([parse_command(e) for e in reply])
    with open(args.out, "w") as f:
        f.write(render(commands, version))
    print("wrote %s (%d commands, from redis %s)" % (args.out, len(commands), version))


if __name__ == "__main__":
    main()

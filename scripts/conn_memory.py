#!/usr/bin/env python3
"""Measure how much resident memory a server spends per idle client connection.

Opens N connections to HOST:PORT, sends one command on each (PING, or GET of a
missing key), waits for the reply, and keeps all of them open.  The resident
set size (VmRSS from /proc/PID/status) of the server process PID is read
before the first connection and after the last reply; the difference divided
by N is printed as KB per connection.

Used by ``benches/load.sh --memory``; standard library only.

Example::

    scripts/conn_memory.py --port 6380 --pid "$(pgrep -n slotway)" --connections 10000
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in KB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raise_fd_limit(needed: int) -> None:
    """Raise this process's open-file limit to the hard limit; fail if that is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft < needed:
        sys.exit(f"open-file limit is {soft}, need {needed}: raise it with `ulimit -n` (as root)")


def request_for(command: str, index: int) -> bytes:
    """The RESP bytes of the command sent on connection ``index``."""
    if command == "PING":
        return b"*1\r\n$4\r\nPING\r\n"
    key = f"connmem:missing:{index}".encode()
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)


async def open_connection(host: str, port: int, payload: bytes, gate: asyncio.Semaphore):
    """Connect, send ``payload``, read the one-line reply; return the open stream pair."""
    async with gate:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(payload)
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), timeout=30)
    if not reply or reply[:1] not in (b"+", b"$"):
        raise RuntimeError(f"unexpected reply {reply!r}")
    return reader, writer


async def run(args: argparse.Namespace) -> None:
    """Open the connections and report the memory difference."""
    before = rss_kb(args.pid)
    gate = asyncio.Semaphore(args.concurrency)
    started = time.monotonic()
    tasks = [
        open_connection(args.host, args.port, request_for(args.command, i), gate)
        for i in range(args.connections)
    ]
    streams = await asyncio.gather(*tasks)
    opened_in = time.monotonic() - started
    await asyncio.sleep(args.settle)  # let the server finish allocating/freeing
    after = rss_kb(args.pid)
    delta = after - before
    print(f"target            {args.label} (pid {args.pid}) at {args.host}:{args.port}")
    print(f"connections       {len(streams)} open, one {args.command} each ({opened_in:.1f}s to open)")
    print(f"VmRSS before      {before} KB")
    print(f"VmRSS after       {after} KB")
    print(f"per connection    {delta / len(streams):.2f} KB")
    for _reader, writer in streams:
        writer.close()


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="process whose VmRSS is measured")
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--command", choices=["PING", "GET"], default="PING")
    parser.add_argument("--concurrency", type=int, default=256, help="connections opened at a time")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to wait before measuring")
    parser.add_argument("--label", default="server")
    args = parser.parse_args()
    raise_fd_limit(args.connections + 64)
    try:
        asyncio.run(run(args))
    except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
        sys.exit(f"conn_memory: {args.label} at {args.host}:{args.port}: {exc!r}")


if __name__ == "__main__":
    main()

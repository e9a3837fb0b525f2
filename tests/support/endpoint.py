"""Common client helpers for anything that speaks RESP on a TCP port.

Both the standalone redis-server fixture and the slotway proxy fixture derive
from :class:`Endpoint`, so a test can run the same steps against both and
compare the replies byte for byte.
"""

from __future__ import annotations

import socket
import subprocess
import time

import redis

#: The RESP encoding of ``PING`` and the reply every server must give.
PING_REQUEST = b"*1\r\n$4\r\nPING\r\n"
PONG_REPLY = b"+PONG\r\n"


def ping_raw(host: str, port: int, timeout: float = 1.0, accept: tuple[bytes, ...] = (PONG_REPLY,)) -> bool:
    """Return True if ``host:port`` accepts a connection and answers PING.

    The first reply line must start with one of ``accept`` (by default only
    ``+PONG``).
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(PING_REQUEST)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
            return reply.endswith(b"\r\n") and reply.startswith(accept)
    except OSError:
        return False


class Endpoint:
    """A RESP server reachable at ``host:port`` (``self.host``, ``self.port``)."""

    host: str = "127.0.0.1"
    port: int

    def __init__(self) -> None:
        self._clients: list[redis.Redis] = []

    @property
    def addr(self) -> str:
        """``"host:port"``, the form redis-cli and slotway's --seed take."""
        return f"{self.host}:{self.port}"

    def client(self, protocol: int = 2, decode_responses: bool = True, **kwargs) -> redis.Redis:
        """Return a new ``redis.Redis`` connected to this endpoint.

        ``protocol`` is 2 (RESP2) or 3 (RESP3, sent as ``HELLO 3``).  Clients
        are closed automatically when the endpoint is stopped.
        """
        kwargs.setdefault("socket_timeout", 10)
        kwargs.setdefault("socket_connect_timeout", 5)
        client = redis.Redis(
            host=self.host,
            port=self.port,
            protocol=protocol,
            decode_responses=decode_responses,
            **kwargs,
        )
        self._clients.append(client)
        return client

    def raw(
        self,
        data: bytes,
        timeout: float = 1.0,
        expect: bytes | None = None,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> bytes:
        """Send ``data`` on a fresh connection and return everything read back.

        Reading stops when the server closes the connection, when nothing
        arrives for ``timeout`` seconds, when ``max_bytes`` were read, or, if
        ``expect`` is given, as soon as the received bytes end with it (which
        makes well-formed exchanges fast).  Meant for malformed-input tests and
        byte-exact reply comparisons.
        """
        received = bytearray()
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server hung up mid-request; return what it said before
            sock.settimeout(timeout)
            while len(received) < max_bytes:
                if expect is not None and received.endswith(expect):
                    break
                try:
                    chunk = sock.recv(65536)
                except (socket.timeout, ConnectionResetError):
                    break
                if not chunk:
                    break
                received += chunk
        return bytes(received)

    def cli(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 30) -> str:
        """Run ``redis-cli -h HOST -p PORT ARGS...`` and return its stdout.

        With ``check`` (the default) a non-zero exit status raises
        ``subprocess.CalledProcessError``.
        """
        from .cluster import redis_cli_path  # local import: avoids a cycle

        result = subprocess.run(
            [redis_cli_path(), "-h", self.host, "-p", str(self.port), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
        return result.stdout

    #: Replies to PING that count as "up" (see :func:`ping_raw`).
    ready_replies: tuple[bytes, ...] = (PONG_REPLY,)

    def wait_for_ping(self, timeout: float, alive=lambda: True) -> None:
        """Wait until the endpoint answers PING; stop early if ``alive()`` turns False."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError(f"process for {self.addr} exited during startup")
            if ping_raw(self.host, self.port, accept=self.ready_replies):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.addr} did not answer PING within {timeout:.0f}s")

    def close_clients(self) -> None:
        """Close every client handed out by :meth:`client`."""
        for client in self._clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        self._clients.clear()

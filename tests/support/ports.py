"""Free TCP port allocation for test processes.

Ports are picked at random from a range below the kernel's ephemeral range
(32768-60999 on Linux), so that outgoing client connections can never grab a
port between the moment we pick it and the moment a server binds it.  The
range deliberately avoids the ports other people use on a shared machine:

* 6379, 6380 and 7000-7005 (redis default, quickstart proxy, quickstart cluster)
* 17000-17005 (cluster bus of the quickstart cluster)
* 30000-30999 (other engineers' ad-hoc redis-servers; their cluster bus ports
  are 40000-40999, which is outside our range anyway)
* 31000-31015 and 31100-31105 (benches/load.sh), 31200-31208 and 31300-31305
  (benches/instructions.sh)

Within one pytest process a port is handed out at most once, so two servers
started back to back never get the same port even before either has bound it.
"""

from __future__ import annotations

import os
import random
import socket
import threading

#: Inclusive range the allocator draws from.  Override with
#: ``SLOTWAY_TEST_PORT_RANGE=LOW-HIGH`` if it collides with something local.
DEFAULT_RANGE = (21000, 29999)

_lock = threading.Lock()
_handed_out: set[int] = set()


def _port_range() -> tuple[int, int]:
    """Return the (low, high) port range to allocate from."""
    spec = os.environ.get("SLOTWAY_TEST_PORT_RANGE")
    if not spec:
        return DEFAULT_RANGE
    low, _, high = spec.partition("-")
    return int(low), int(high)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Return True if nothing is listening on ``host:port``.

    SO_REUSEADDR is set, like redis-server and most servers do, so ports that
    only have connections in TIME_WAIT count as free; a port with a listening
    socket (on this address or on 0.0.0.0) does not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def allocate_port() -> int:
    """Return a currently free loopback port that was not handed out before."""
    low, high = _port_range()
    rng = random.SystemRandom()
    with _lock:
        for _ in range(1000):
            port = rng.randint(low, high)
            if port in _handed_out or not port_is_free(port):
                continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"could not find a free TCP port in {low}-{high}")

#!/usr/bin/env python3
"""A stand-in for the slotway binary, used only to test the proxy fixture itself.

It accepts slotway's command line (``--listen HOST:PORT --seed ...``), and on
each connection answers ``PING`` with ``+PONG``, ``ECHO x`` with ``x``, and the
made-up command ``PANIC`` by printing a Rust-style panic message to stderr and
exiting with status 101, like a panicking Rust program.  Anything else gets an
error reply.  With ``--password P`` every command but ``AUTH P`` is refused
with ``-NOAUTH`` until the client has authenticated.  SIGTERM makes it exit
with status 0.
"""

import argparse
import signal
import socketserver
import sys


def read_command(rfile):
    """Read one RESP array of bulk strings; return a list of bytes or None at EOF."""
    line = rfile.readline()
    if not line:
        return None
    if not line.startswith(b"*"):
        return line.strip().split()  # inline command
    args = []
    for _ in range(int(line[1:])):
        length = int(rfile.readline()[1:])
        args.append(rfile.read(length + 2)[:-2])
    return args


class Handler(socketserver.StreamRequestHandler):
    """Serve one client connection."""

    def handle(self):
        authenticated = self.server.password is None
        while True:
            try:
                args = read_command(self.rfile)
            except (ValueError, ConnectionError):
                self.wfile.write(b"-ERR Protocol error\r\n")
                return
            if args is None:
                return
            name = args[0].upper() if args else b""
            if name == b"AUTH":
                authenticated = args[-1].decode() == self.server.password
                self.wfile.write(b"+OK\r\n" if authenticated else b"-WRONGPASS invalid password\r\n")
            elif not authenticated:
                self.wfile.write(b"-NOAUTH Authentication required.\r\n")
            elif name == b"PING":
                self.wfile.write(b"+PONG\r\n")
            elif name == b"ECHO" and len(args) == 2:
                self.wfile.write(b"$%d\r\n%s\r\n" % (len(args[1]), args[1]))
            elif name == b"PANIC":
                sys.stderr.write("thread 'main' panicked at proxy/src/main.rs:1:1:\nfake panic\n")
                sys.stderr.flush()
                self.wfile.write(b"+OK\r\n")
                self.wfile.flush()
                self.server.exit_code = 101
                self.server.shutdown_request_flag = True
                return
            else:
                self.wfile.write(b"-ERR unknown command\r\n")


class Server(socketserver.ThreadingTCPServer):
    """Threaded TCP server that can be told to exit from a handler."""

    allow_reuse_address = True
    daemon_threads = True
    exit_code = 0
    shutdown_request_flag = False
    password = None

    def service_actions(self):
        if self.shutdown_request_flag:
            raise SystemExit(self.exit_code)


def main() -> None:
    """Parse slotway's arguments and serve until SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--seed", action="append", default=[])
    parser.add_argument("--metrics-listen")
    parser.add_argument("--password")
    args, _unknown = parser.parse_known_args()
    host, _, port = args.listen.rpartition(":")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    print(f"fake slotway listening on {args.listen}, seeds {args.seed}", flush=True)
    with Server((host, int(port)), Handler) as server:
        server.password = args.password
        server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()

"""Certificates for TLS clusters: a throw-away CA and one certificate signed by it.

:func:`make_certs` runs the ``openssl`` command line.  The node certificate names
``127.0.0.1`` and ``localhost`` and has no extended key usage, so the same files
serve redis-server as server, as cluster-bus and replication client, and the
proxy as client (redis-server's ``tls-auth-clients yes``, its default, asks the
proxy for a certificate).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import process


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA certificate, and a certificate with its key."""

    ca: Path
    cert: Path
    key: Path

    def proxy_args(self) -> list[str]:
        """slotway flags that connect to nodes using these files."""
        return [
            "--backend-tls",
            "--backend-tls-ca-file", str(self.ca),
            "--backend-tls-cert-file", str(self.cert),
            "--backend-tls-key-file", str(self.key),
        ]

    def server_args(self) -> list[str]:
        """redis-server flags for these files (the caller adds ``--tls-port``)."""
        return [
            "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca),
        ]


def make_certs(directory: Path, name: str = "node", sans: str = "IP:127.0.0.1,DNS:localhost",
               ca: TlsFiles | None = None) -> TlsFiles:
    """Write a CA (or reuse ``ca``'s) and a certificate for ``sans`` into ``directory``."""
    openssl = process.find_executable("openssl", hint="Install it with `apt-get install openssl`.")
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        result = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")

    if ca is None:
        ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
        run("req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", str(ca_key),
            "-out", str(ca_cert), "-days", "3", "-subj", "/CN=Slotway test CA")
    else:
        ca_cert, ca_key = ca.ca, ca.ca.with_suffix(".key")
    cert, key, csr = (directory / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
    ext = directory / f"{name}.ext"
    ext.write_text(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n")
    run("req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/CN={name}")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "3", "-extfile", str(ext))
    return TlsFiles(ca=ca_cert, cert=cert, key=key)

"""A real redis-server on a free port for tests (never the machine's own 6379), which tests can pause
(SIGSTOP: it hangs, as a stuck Redis does), resume, kill and start again on the same port; optionally
on a unix socket only (no TCP at all) or with a password. And `replica()`: a real `qroute serve`
process on a config, for tests of several replicas sharing that Redis."""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from simulator.harness import free_port
from tests.gateway_process import gateway_process


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing: `make tools` (tests/tools.sh) installs it")
        pytest.skip("redis-server is not installed (`make tools` installs it)")
    return path


class RedisServer:
    """`unix_socket=True`: it listens on `<dir>/redis.sock` (mode 700) and on no TCP port at all.
    `password`: `--requirepass`; `command()` authenticates first. `tls=True`: TLS only, with a
    certificate for `localhost` from a CA made for it (`ca_path`), no plain TCP port."""

    def __init__(self, unix_socket: bool = False, password: str | None = None, tls: bool = False) -> None:
        self.port = 0 if unix_socket else free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="qroute-redis-"))
        self.socket_path = self.dir / "redis.sock" if unix_socket else None
        self.password = password
        self.tls = tls
        self.ca_path = self.dir / "ca.pem"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            return f"unix://{self.socket_path}?db=0"
        if self.tls:
            return f"rediss://localhost:{self.port}/0?ssl_ca_certs={self.ca_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--protected-mode", "no"]
        if self.socket_path is not None:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.tls:
            cert, key = write_tls_files(self.dir, self.ca_path)
            args[args.index("--port") + 1] = "0"
            args += ["--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                     "--tls-ca-cert-file", str(self.ca_path), "--tls-auth-clients", "no"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.command("PING").startswith(b"+PONG"):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _connect(self) -> socket.socket:
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.ca_path))
            return context.wrap_socket(socket.create_connection(("127.0.0.1", self.port), timeout=2),
                                       server_hostname="localhost")
        if self.socket_path is not None:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.settimeout(2)
            try:
                conn.connect(str(self.socket_path))
            except OSError:
                conn.close()
                raise
            return conn
        return socket.create_connection(("127.0.0.1", self.port), timeout=2)

    def command(self, *args: str) -> bytes:
        """One raw RESP command (for assertions), without a client library."""
        def encode(*words: str) -> bytes:
            return b"".join([f"*{len(words)}\r\n".encode()] +
                            [f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words])

        with self._connect() as conn:
            if self.password is not None:
                conn.sendall(encode("AUTH", self.password))
                if not conn.recv(64).startswith(b"+OK"):
                    raise OSError("redis-server refused the password")
            conn.sendall(encode(*args))
            return conn.recv(65536)


@contextmanager
def replica(tmp_path: Path, cfg: dict[str, Any], env: dict[str, str] | None = None,
            log: Path | None = None) -> Iterator[str]:
    """A `qroute serve` process (a replica of its own) with this config; yields its base URL."""
    with gateway_process(tmp_path, cfg, env=env, log=log) as base:
        yield base


def write_tls_files(folder: Path, ca_path: Path) -> tuple[Path, Path]:
    """A CA (written to `ca_path`) and a certificate for localhost signed by it; returns the
    certificate's and its key's paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("qroute test CA")).issuer_name(name("qroute test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path

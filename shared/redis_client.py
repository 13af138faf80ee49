"""Redis clients: the one place that knows how to reach the primary.

Everything that talks to Redis (the API, the worker and its arq pool, the
operator commands, the health check, `check`) gets its client here, so all of
them follow a failover and verify TLS the same way:

- a URL (`REDIS_URL`), or Sentinels that name the primary (`REDIS_SENTINELS`):
  redis-py's `Sentinel` asks them for the primary on each new connection, and a
  connection whose server answers READONLY (a primary demoted by a failover)
  is dropped and made again to the new one. During the switch a command fails
  with a connection error: the API answers 503 with Retry-After, the worker's
  supervisor reconnects with backoff (`worker.main`). Nothing here retries.
- TLS with `rediss://`: the server's certificate and host name are always
  verified, against `REDIS_TLS_CA_FILE` or the system's CAs; a client
  certificate when one is set. With Sentinels, their connections use TLS too.
- a Redis Cluster (`REDIS_CLUSTER`): every key is in one slot, so a plain client
  to the primary that serves it does (`shared.redis_cluster`), found from
  REDIS_URL's node and found again when the slot moves.

Bounded waits everywhere (connect 2 s, a command 5 s), so a dead Redis turns into
a fast 503, not a hung request.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from shared import redis_keys
from shared.arq_jobs import job_deserializer, job_serializer
from shared.redis_cluster import SlotOwnerPool
from shared.settings import RedisTarget

REDIS_CONNECT_TIMEOUT_SECONDS = 2.0
REDIS_COMMAND_TIMEOUT_SECONDS = 5.0
HEALTH_CHECK_SECONDS = 30


def target_of(where: RedisTarget | str) -> RedisTarget:
    """A plain URL (tests, benchmarks) or the settings' `RedisTarget`."""
    return RedisTarget(where) if isinstance(where, str) else where


def redis_location(where: RedisTarget | str) -> str:
    """Where Redis is, without credentials, for logs."""
    return target_of(where).location


def create_redis(where: RedisTarget | str) -> aioredis.Redis:
    """A pooled client that answers `str`, with bounded waits."""
    client: aioredis.Redis = _client(target_of(where), aioredis.Redis, decode_responses=True)
    return client


def arq_client(where: RedisTarget | str) -> ArqRedis:
    """An arq client, made without connecting: as arq's create_pool makes it (the
    same server, job serializers and queue), minus the I/O.

    Why not create_pool: it connects inside the call and, when a stop cancels it
    there, drops the client it made with its socket open; a worker stopped while
    it connected (a test that ends at once, a SIGTERM at start-up) left an
    unclosed Connection for the garbage collector. A client made here belongs to
    the worker from the start, and `stop_worker` always closes it."""
    client: ArqRedis = _client(target_of(where), ArqRedis, arq=True, encoding="utf8")
    client.job_serializer = job_serializer
    client.job_deserializer = job_deserializer
    client.default_queue_name = redis_keys.QUEUE_NAME
    return client


def arq_redis_settings(where: RedisTarget | str) -> RedisSettings:
    """arq's connection settings, for what arq's Worker reads of them (the worker
    is always given its pool, `arq_client`; a `create_pool` of these under
    Sentinel would lack the Sentinels' password and TLS files: use `arq_client`).
    Their repr holds the password: never log it (the logs mask it anyway). No
    retries of arq's own: the worker's supervisor (`worker.main.run_worker`)
    retries with a capped backoff and says why."""
    target = target_of(where)
    if target.sentinels:
        parts = urlsplit(target.url)
        settings = RedisSettings(
            host=list(target.sentinels),
            sentinel=True,
            sentinel_master=target.sentinel_service,
            database=_database(parts.path),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ssl=target.tls,
        )
    else:
        settings = RedisSettings.from_dsn(target.url)
    if target.tls:
        settings.ssl_ca_certs = target.tls_ca_file
        settings.ssl_certfile = target.tls_cert_file
        settings.ssl_keyfile = target.tls_key_file
        settings.ssl_check_hostname = True
    settings.conn_timeout = int(REDIS_CONNECT_TIMEOUT_SECONDS)
    settings.conn_retries = 0
    return settings


def _client(
    target: RedisTarget, redis_class: type[aioredis.Redis], *, arq: bool = False, **options: Any
) -> Any:
    options |= {"socket_connect_timeout": REDIS_CONNECT_TIMEOUT_SECONDS, **_tls_options(target)}
    # arq's pool as arq makes it: no command timeout or health check of ours (with
    # them, stopping an in-process worker after a burst of jobs could hang).
    if not arq:
        options |= {
            "socket_timeout": REDIS_COMMAND_TIMEOUT_SECONDS,
            "health_check_interval": HEALTH_CHECK_SECONDS,
        }
    if target.cluster:
        return redis_class.from_pool(_slot_owner_pool(target, options))
    if not target.sentinels:
        return redis_class.from_url(target.url, **options)
    parts = urlsplit(target.url)
    sentinel_options: dict[str, Any] = {
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_SECONDS,
        "socket_timeout": REDIS_COMMAND_TIMEOUT_SECONDS,
        "username": target.sentinel_username,
        "password": target.sentinel_password,
        **_tls_options(target),
    }
    if target.tls:
        sentinel_options["ssl"] = True
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        list(target.sentinels), sentinel_kwargs=sentinel_options
    )
    return sentinel.master_for(
        target.sentinel_service,
        redis_class=redis_class,
        connection_pool_class=_ClosingSentinelPool,
        db=_database(parts.path),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=target.tls,
        **options,
    )


def _slot_owner_pool(target: RedisTarget, options: dict[str, Any]) -> SlotOwnerPool:
    url_options: dict[str, Any] = dict(parse_url(target.url))
    url_options.pop("connection_class", None)  # rediss:// is target.tls
    seed = (url_options.pop("host", None) or "localhost", url_options.pop("port", None) or 6379)
    return SlotOwnerPool([seed], ssl=target.tls, **url_options, **options)


def _tls_options(target: RedisTarget) -> dict[str, Any]:
    if not target.tls:
        return {}
    return {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": target.tls_ca_file,
        "ssl_certfile": target.tls_cert_file,
        "ssl_keyfile": target.tls_key_file,
    }


def _database(path: str) -> int:
    return int(path.strip("/") or "0")


class _ClosingSentinelPool(SentinelConnectionPool):
    """Closing the client closes the Sentinels' connections too: redis-py leaves
    them open (one per Sentinel asked), a leak for every client made and closed.
    A failover's own disconnect (of idle connections only) leaves them be."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()

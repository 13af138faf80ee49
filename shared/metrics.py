"""What the API's and the worker's `GET /metrics` share: who may scrape, what is
read from Redis at scrape time, and the rendering in Prometheus' text format.

The counters and histograms themselves are each process's own (`api.metrics`,
`worker.metrics`), bound to their label values at start-up so that the hot path
pays a dictionary look-up and an increment. What describes shared state (the
queue's depth and its oldest wait, whether Redis answers) is read when a scrape
comes, in one round trip (`shared.backlog`), never kept up to date on the side.

Several API processes (`api --processes N`) share one port, so a scrape reaches
any one of them: each writes its samples to files under PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode, set up by `api.server`), and the process
that serves the scrape sums them all (`MultiProcessCollector`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from shared.backlog import Backlog, read_backlog

PREFIX = "flex_handover_"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
SCRAPE_REDIS_TIMEOUT_SECONDS = 1.0
"""The longest a scrape waits for Redis: a slow Redis reads as down, the scrape answers."""
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds a caller waits for its answer: milliseconds when all is well."""
DELIVERY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
"""Seconds from the ack to the Interaction: the worker's pick-up, retries, backoff."""
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds a create waits for its FLEX_API_MAX_RPS slot."""

# `<name>_created` samples double every counter's exposition and say nothing a
# dashboard reads (multiprocess mode never writes them): off for the process.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus-client leaves it untyped


class Access(Enum):
    """What a scrape's `Authorization` header allows."""

    OK = "ok"
    MISSING = "missing"  # no bearer token sent: 401
    WRONG = "wrong"  # one sent, not a configured one: 403


def scrape_access(tokens: Sequence[str], authorization: str | None) -> Access:
    """HANDOVER_METRICS_TOKEN's check: none configured lets anyone scrape; else a
    bearer token matching one of `tokens`, compared in constant time over their
    hashes (no length leaks) against every token (pure)."""
    if not tokens:
        return Access.OK
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    presented = credentials.strip()
    if scheme.lower() != "bearer" or not presented:
        return Access.MISSING
    digest = _digest(presented)
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(digest, _digest(token))
    return Access.OK if matched else Access.WRONG


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR when this process runs in multiprocess mode."""
    return os.environ.get(MULTIPROCESS_ENV) or None


@dataclass(frozen=True)
class RedisReading:
    """One scrape's read of Redis: whether it answered, and the backlog if it did."""

    up: bool
    backlog: Backlog | None


async def read_redis(redis: aioredis.Redis, now: float) -> RedisReading:
    """The backlog within SCRAPE_REDIS_TIMEOUT_SECONDS; down on any Redis trouble."""
    try:
        async with asyncio.timeout(SCRAPE_REDIS_TIMEOUT_SECONDS):
            return RedisReading(True, await read_backlog(redis, now))
    except (RedisError, OSError, TimeoutError):
        return RedisReading(False, None)


def redis_families(reading: RedisReading) -> list[Metric]:
    """The scrape-time gauges of a `RedisReading`; the queue's only when Redis answered
    (an absent series is "unknown", a 0 would read as "empty")."""
    families: list[Metric] = [
        GaugeMetricFamily(
            PREFIX + "redis_up",
            "1 if Redis answered this scrape's read within 1 s, else 0.",
            value=1.0 if reading.up else 0.0,
        )
    ]
    if reading.backlog is not None:
        families += [
            GaugeMetricFamily(
                PREFIX + "queue_depth",
                "Jobs in the arq queue: handovers queued, running or waiting to retry, "
                "and hand-backs.",
                value=reading.backlog.depth,
            ),
            GaugeMetricFamily(
                PREFIX + "queue_oldest_waiting_seconds",
                "How long the queue's first job has been due (0 when empty).",
                value=reading.backlog.oldest_waiting_seconds or 0.0,
            ),
        ]
    return families


class Scrape(Collector):
    """One scrape's samples: the process's own metrics (or, in multiprocess mode,
    every process's, summed), then the families read for this scrape."""

    def __init__(self, own: Collector | None, families: Iterable[Metric]):
        directory = multiprocess_dir()
        self._source = (
            MultiProcessCollector(None, directory)  # type: ignore[no-untyped-call]
            if directory
            else own
        )
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        if self._source is not None:
            yield from self._source.collect()
        yield from self._families


def render(own: Collector | None, families: Iterable[Metric]) -> bytes:
    """The exposition text of a scrape (CONTENT_TYPE)."""
    return generate_latest(Scrape(own, families))

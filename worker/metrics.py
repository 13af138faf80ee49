"""The worker's metrics, and its own `GET /metrics` (WORKER_METRICS_PORT).

Counted as the handover job goes: each `POST /v1/Interactions` attempt by the
class of Twilio's answer (`2xx`, `4xx`, `429`, `5xx`, or `timeout`/`network`
when none came; `other` for anything else), the ambiguous ones (the answer was
lost: the next step is a TaskRouter lookup), each lookup by result (`found`,
`not_found`, `failed`), each handover that ends by its final state and target,
the time from the ack to its Interaction, and the FLEX_API_MAX_RPS waits. Read
at scrape time: the job slots this process has and how many are busy, and from
Redis the queue (`shared.metrics`).

Label values are fixed at start-up: the configured targets (a record naming
another counts as `unknown`) and the sets below. The counters outlive the arq
worker `worker.main.run_worker` builds anew after a Redis outage: one
`WorkerMetrics` per process.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from aiohttp import web
from arq.worker import Worker
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from shared import metrics as shared_metrics
from shared.listening import bind
from shared.metrics import PREFIX, Access, read_redis, redis_families
from shared.model import Status, now
from shared.redis_client import create_redis
from shared.settings import Settings
from worker.errors import TIMEOUT, FlexError

logger = logging.getLogger(f"flex_handover.{__name__}")

METRICS_HOST = "0.0.0.0"  # noqa: S104 - a scrape comes from another host (or container)
PATH = "/metrics"
UNKNOWN_TARGET = "unknown"
OTHER = "other"
ATTEMPT_RESULTS = ("2xx", "4xx", "429", "5xx", "timeout", "network", OTHER)
LOOKUP_RESULTS = ("found", "not_found", "failed")
FINISHED_STATES = (Status.SUCCEEDED.value, Status.FAILED.value)


def attempt_result(error: FlexError | None) -> str:
    """The class of an attempt's answer: None is a 2xx Interaction (pure)."""
    if error is None:
        return "2xx"
    status = error.status
    if status is None:
        if error.transport is None:
            return OTHER
        return "timeout" if error.transport == TIMEOUT else "network"
    if status == 429:
        return "429"
    if 200 <= status < 300:
        return "2xx"  # an answer that is not an Interaction: ambiguous
    if 400 <= status < 500:
        return "4xx"
    if 500 <= status < 600:
        return "5xx"
    return OTHER


class WorkerMetrics:
    """The worker's counters and histograms, each labelled child bound once."""

    def __init__(self, targets: Iterable[str] = (), registry: CollectorRegistry | None = None):
        self.registry = CollectorRegistry() if registry is None else registry
        self.worker: Worker | None = None
        """The arq worker running now (`run_worker` sets it): its busy slots at scrape time."""
        self.slots = 0
        registry = self.registry
        finished = Counter(
            PREFIX + "handovers_finished",
            "Handovers that reached a final state (succeeded, failed), by target.",
            ("state", "target"),
            registry=registry,
        )
        names = [*dict.fromkeys(targets), UNKNOWN_TARGET]
        self._finished = {
            (state, target): finished.labels(state, target)
            for state in FINISHED_STATES
            for target in names
        }
        attempts = Counter(
            PREFIX + "attempts",
            "POST /v1/Interactions attempts by the class of Twilio's answer "
            "(2xx, 4xx, 429, 5xx; timeout or network when none came).",
            ("result",),
            registry=registry,
        )
        self._attempts = {result: attempts.labels(result) for result in ATTEMPT_RESULTS}
        self._ambiguous = Counter(
            PREFIX + "ambiguous_attempts",
            "Attempts whose outcome is unknown (timeout, reset, 5xx, unreadable 2xx, or "
            "a run lost mid-attempt): a TaskRouter lookup decides before any resend.",
            registry=registry,
        )
        lookups = Counter(
            PREFIX + "task_lookups",
            "TaskRouter lookups after an ambiguous attempt: found (it made its "
            "Interaction), not_found (sending again), failed (could not look).",
            ("result",),
            registry=registry,
        )
        self._lookups = {result: lookups.labels(result) for result in LOOKUP_RESULTS}
        self._delivered = Histogram(
            PREFIX + "ack_to_interaction_seconds",
            "Seconds from a handover's ack (or replay) to its Interaction.",
            buckets=shared_metrics.DELIVERY_BUCKETS,
            registry=registry,
        )
        self._rate_wait = Histogram(
            PREFIX + "rate_limit_wait_seconds",
            "Seconds a create waited for its FLEX_API_MAX_RPS slot (the bucket's "
            "round trip included).",
            buckets=shared_metrics.WAIT_BUCKETS,
            registry=registry,
        )
        self._deferred = Counter(
            PREFIX + "rate_limit_deferrals",
            "Runs handed back to arq because their FLEX_API_MAX_RPS slot was too far off.",
            registry=registry,
        )

    def finished(self, state: Status, target: str) -> None:
        children = self._finished
        child = children.get((state.value, target)) or children[(state.value, UNKNOWN_TARGET)]
        child.inc()

    def attempted(self, error: FlexError | None) -> None:
        self._attempts[attempt_result(error)].inc()
        if error is not None and error.ambiguous:
            self._ambiguous.inc()

    def lost_attempt(self) -> None:
        """An attempt left in flight by a run that stopped before its answer."""
        self._ambiguous.inc()

    def looked_up(self, result: str) -> None:
        self._lookups[result].inc()

    def delivered(self, acked_at: float) -> None:
        self._delivered.observe(max(0.0, now() - acked_at))

    def rate_limit_waited(self, seconds: float) -> None:
        self._rate_wait.observe(seconds)

    def rate_limit_deferred(self) -> None:
        self._deferred.inc()

    def slot_families(self) -> list[Metric]:
        """This process's job slots, read now."""
        busy = self.worker.job_counter if self.worker is not None else 0
        lent = getattr(self.worker, "following_up", 0)
        return [
            GaugeMetricFamily(
                PREFIX + "worker_slots", "Job slots of this worker (WORKER_CONCURRENCY).",
                value=self.slots,
            ),
            GaugeMetricFamily(
                PREFIX + "worker_slots_busy", "Job slots running a job now.", value=busy
            ),
            GaugeMetricFamily(
                PREFIX + "worker_slots_lent",
                "Jobs finishing on a lent slot: their create was answered, the channel "
                "read and the Conversation steps remain.",
                value=lent,
            ),
        ]  # fmt: skip


@asynccontextmanager
async def metrics_server(
    settings: Settings, metrics: WorkerMetrics, host: str = METRICS_HOST
) -> AsyncIterator[int | None]:
    """`GET /metrics` on WORKER_METRICS_PORT for the block (its port; None: off).
    CannotListen if the port cannot be had."""
    port = settings.worker_metrics_port
    if not port:
        yield None
        return
    metrics.slots = settings.worker_concurrency
    redis = create_redis(settings.redis)

    async def scrape(request: web.Request) -> web.Response:
        access = shared_metrics.scrape_access(
            settings.metrics_tokens, request.headers.get("Authorization")
        )
        if access is Access.MISSING:
            return web.Response(
                status=401, text="send 'Authorization: Bearer <metrics token>'\n",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        if access is Access.WRONG:
            return web.Response(status=403, text="the metrics token is not valid\n")
        reading = await read_redis(redis, now())
        families = [*redis_families(reading), *metrics.slot_families()]
        body = shared_metrics.render(metrics.registry, families)
        return web.Response(body=body, headers={"Content-Type": shared_metrics.CONTENT_TYPE})

    app = web.Application()
    app.router.add_get(PATH, scrape, allow_head=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await bind(web.TCPSite(runner, host, port).start(), host, port)
        logger.info("worker metrics on http://%s:%d%s", host, port, PATH)
        yield port
    finally:
        await runner.cleanup()
        await redis.aclose()

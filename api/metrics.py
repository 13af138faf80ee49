"""The API's metrics: every handover request counted by caller and outcome, its
answer timed, and `GET /metrics` to read them (with `shared.metrics`' Redis gauges).

Callers: `tool` (POST /tools/flex-handover[/{target}]), `mcp` (an MCP
`tools/call`), `voice` (POST /voice/handoff[/{target}]). Outcomes: `stored`,
`duplicate` (the conversation's live or recent handover answered), `declined`
(outside business hours, nothing stored), `rate_limited` (reason: the limit,
`conversation` or `identity`), `backlog_full`, `unavailable` (Redis down or
refusing writes; a voice call is answered anyway, without its record) and
`refused` (reason: the refusal's code, `unauthorized`, `invalid_identity`, …).

Every label value is one of a fixed set, bound at start-up: a code this module
does not know counts as `other`, an unknown target is a refusal, not a label.
The middleware (tool and voice routes) times the answer and counts what the
handler raised; a handler counts what it answered (`ApiMetrics.called`).
HANDOVER_METRICS=false builds `NoMetrics` and no middleware: nothing is counted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from enum import StrEnum

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram
from redis.exceptions import RedisError

from api.app_keys import METRICS, REDIS, SETTINGS
from api.errors import (
    ApiError,
    BacklogFull,
    Forbidden,
    NotReplicated,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from shared import metrics as shared_metrics
from shared.metrics import PREFIX, Access, multiprocess_dir, read_redis, redis_families
from shared.model import now
from shared.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PATH = "/metrics"
TOOL, MCP, VOICE = "tool", "mcp", "voice"
CALLERS = (TOOL, MCP, VOICE)
CALLER_OF_ROUTE = {
    "/tools/flex-handover": TOOL,
    "/tools/flex-handover/{target}": TOOL,
    "/voice/handoff": VOICE,
    "/voice/handoff/{target}": VOICE,
}
"""The routes the middleware counts, by their canonical path (POST only)."""


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    DECLINED = "declined"
    RATE_LIMITED = "rate_limited"
    BACKLOG_FULL = "backlog_full"
    NOT_REPLICATED = "not_replicated"
    UNAVAILABLE = "unavailable"
    REFUSED = "refused"


OTHER = "other"
RATE_LIMIT_REASONS = ("conversation", "identity")
REFUSAL_REASONS = (
    "unauthorized",
    "forbidden",
    "invalid_body",
    "invalid_identity",
    "invalid_conversation_sid",
    "invalid_tool_input",
    "missing_conversation",
    "missing_identity",
    "not_a_conversation",
    "unknown_target",
    "body_too_large",
    "unsupported_media_type",
    "method_not_allowed",
    "not_acceptable",
    "not_configured",
    OTHER,
)
"""The refusal codes of `api.errors` and `api.parsing` a tool call can meet."""


def label_sets() -> list[tuple[str, str, str]]:
    """Every (caller, outcome, reason) the counter has, all bound at start-up."""
    sets = []
    for caller in CALLERS:
        for outcome in Outcome:
            if outcome is Outcome.REFUSED:
                sets += [(caller, outcome.value, reason) for reason in REFUSAL_REASONS]
            elif outcome is Outcome.RATE_LIMITED:
                sets += [(caller, outcome.value, reason) for reason in RATE_LIMIT_REASONS]
            else:
                sets.append((caller, outcome.value, ""))
    return sets


def outcome_of(error: BaseException) -> tuple[Outcome, str]:
    """What a refusal (or a Redis error) counts as: (outcome, reason) (pure)."""
    if isinstance(error, RateLimited):
        limit = error.limited_by if error.limited_by in RATE_LIMIT_REASONS else "conversation"
        return Outcome.RATE_LIMITED, limit
    if isinstance(error, BacklogFull):
        return Outcome.BACKLOG_FULL, ""
    if isinstance(error, NotReplicated):
        return Outcome.NOT_REPLICATED, ""
    if isinstance(error, Unavailable) or not isinstance(error, ApiError):
        return Outcome.UNAVAILABLE, ""
    return Outcome.REFUSED, error.code if error.code in REFUSAL_REASONS else OTHER


class ApiMetrics:
    """The API's counters, each labelled child bound once.

    `registry`: where they are collected from in one process; None in multiprocess
    mode, where every sample goes to PROMETHEUS_MULTIPROC_DIR instead."""

    enabled = True

    def __init__(self, registry: CollectorRegistry | None):
        self.registry = registry
        calls = Counter(
            PREFIX + "tool_calls",
            "Handover requests by caller (tool, mcp, voice) and outcome; reason: the "
            "refusal's code, or the rate limit that refused.",
            ("caller", "outcome", "reason"),
            registry=registry,
        )
        self._calls = {labels: calls.labels(*labels) for labels in label_sets()}
        ack = Histogram(
            PREFIX + "ack_duration_seconds",
            "Seconds from receiving a handover request to its answer, by caller.",
            ("caller",),
            buckets=shared_metrics.ACK_BUCKETS,
            registry=registry,
        )
        self._ack = {caller: ack.labels(caller) for caller in CALLERS}

    def called(self, caller: str, outcome: Outcome, reason: str = "") -> None:
        self._calls[(caller, outcome.value, reason)].inc()

    def refused(self, caller: str, error: BaseException) -> None:
        outcome, reason = outcome_of(error)
        self._calls[(caller, outcome.value, reason)].inc()

    def answered(self, caller: str, seconds: float) -> None:
        self._ack[caller].observe(seconds)


class NoMetrics(ApiMetrics):
    """HANDOVER_METRICS=false: the same calls, counting nothing."""

    enabled = False

    def __init__(self) -> None:
        self.registry = None

    def called(self, caller: str, outcome: Outcome, reason: str = "") -> None:
        pass

    def refused(self, caller: str, error: BaseException) -> None:
        pass

    def answered(self, caller: str, seconds: float) -> None:
        pass


def build(settings: Settings) -> ApiMetrics:
    """The app's metrics: off, shared between processes, or its own registry."""
    if not settings.metrics:
        return NoMetrics()
    return ApiMetrics(None if multiprocess_dir() else CollectorRegistry())


def metrics_middleware(metrics: ApiMetrics) -> Middleware:
    """Times tool and voice requests and counts what their handlers raised; put it
    inside `json_errors` (which answers the refusal) and outside auth (whose refusals
    count)."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        caller = CALLER_OF_ROUTE.get(resource.canonical) if resource is not None else None
        if caller is None or request.method != "POST":
            return await handler(request)
        started = time.perf_counter()
        try:
            return await handler(request)
        except (ApiError, RedisError, OSError) as error:
            metrics.refused(caller, error)
            raise
        finally:
            metrics.answered(caller, time.perf_counter() - started)

    return count


async def scrape(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus' text format; a bearer token when HANDOVER_METRICS_TOKEN is set."""
    access = shared_metrics.scrape_access(
        request.app[SETTINGS].metrics_tokens, request.headers.get("Authorization")
    )
    if access is Access.MISSING:
        raise Unauthorized("Metrics need a token: send 'Authorization: Bearer <metrics token>'.")
    if access is Access.WRONG:
        raise Forbidden("The metrics token is not valid.")
    reading = await read_redis(request.app[REDIS], now())
    body = shared_metrics.render(request.app[METRICS].registry, redis_families(reading))
    return web.Response(body=body, headers={"Content-Type": shared_metrics.CONTENT_TYPE})


def routes(settings: Settings) -> list[web.RouteDef]:
    return [web.get(PATH, scrape, allow_head=False)] if settings.metrics else []

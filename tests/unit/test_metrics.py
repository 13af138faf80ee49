"""The metric pieces on their own: the backlog read, the scrape token, the label
mapping of outcomes and attempts, the counters' bound children, the rendering."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from api import metrics as api_metrics
from api.errors import (
    BacklogFull,
    BadRequest,
    InvalidIdentity,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnknownTarget,
)
from api.metrics import ApiMetrics, NoMetrics, Outcome, label_sets, outcome_of
from shared import redis_keys
from shared.backlog import Backlog, backlog_of, read_backlog
from shared.metrics import (
    Access,
    RedisReading,
    read_redis,
    redis_families,
    render,
    scrape_access,
)
from shared.model import Status
from tests.support.metrics import parse, value
from worker.errors import FlexError, classify
from worker.metrics import ATTEMPT_RESULTS, WorkerMetrics, attempt_result

TOKEN = "metrics-token-0123456789"


# --- the backlog ----------------------------------------------------------------------


def test_backlog_of_an_empty_queue_has_no_oldest_wait():
    assert backlog_of(0, [], now=100.0) == Backlog(0, None)


def test_backlog_oldest_wait_is_now_minus_the_first_due_score_in_ms():
    assert backlog_of(3, [("job", 90_000.0)], now=100.0) == Backlog(3, 10.0)


def test_a_head_not_due_yet_waits_zero():
    assert backlog_of(1, [("retry", 150_000.0)], now=100.0) == Backlog(1, 0.0)


async def test_read_backlog_reads_the_arq_queue(redis):
    assert await read_backlog(redis, now=1000.0) == Backlog(0, None)
    await redis.zadd(redis_keys.QUEUE_NAME, {"a": 995_000, "b": 999_000, "c": 1_200_000})
    assert await read_backlog(redis, now=1000.0) == Backlog(3, 5.0)


async def test_read_redis_is_down_when_redis_cannot_be_reached():
    class Unreachable:
        def pipeline(self, transaction: bool):
            raise RedisConnectionError("no route")

    assert await read_redis(Unreachable(), 0.0) == RedisReading(False, None)  # type: ignore[arg-type]


def test_the_queue_gauges_are_absent_when_redis_is_down():
    down = parse(render(None, redis_families(RedisReading(False, None))).decode())
    assert value(down, "flex_handover_redis_up") == 0.0
    assert value(down, "flex_handover_queue_depth") is None
    up = parse(render(None, redis_families(RedisReading(True, Backlog(4, None)))).decode())
    assert value(up, "flex_handover_redis_up") == 1.0
    assert value(up, "flex_handover_queue_depth") == 4.0
    assert value(up, "flex_handover_queue_oldest_waiting_seconds") == 0.0


# --- who may scrape ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "header", "access"),
    [
        ((), None, Access.OK),
        ((), "Bearer anything", Access.OK),
        ((TOKEN,), None, Access.MISSING),
        ((TOKEN,), "Basic abc", Access.MISSING),
        ((TOKEN,), "Bearer ", Access.MISSING),
        ((TOKEN,), "Bearer wrong-token-0123456789", Access.WRONG),
        ((TOKEN,), f"Bearer {TOKEN}", Access.OK),
        ((TOKEN,), f"bearer   {TOKEN} ", Access.OK),
        (("old-token-0123456789", TOKEN), f"Bearer {TOKEN}", Access.OK),
    ],
)
def test_scrape_access(tokens, header, access):
    assert scrape_access(tokens, header) is access


# --- the API's labels -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (RateLimited("identity", 60, 5), (Outcome.RATE_LIMITED, "identity")),
        (RateLimited("conversation", 60, 5), (Outcome.RATE_LIMITED, "conversation")),
        (BacklogFull(30), (Outcome.BACKLOG_FULL, "")),
        (Unavailable(), (Outcome.UNAVAILABLE, "")),
        (RedisConnectionError("gone"), (Outcome.UNAVAILABLE, "")),
        (OSError("reset"), (Outcome.UNAVAILABLE, "")),
        (Unauthorized("no"), (Outcome.REFUSED, "unauthorized")),
        (InvalidIdentity("bad"), (Outcome.REFUSED, "invalid_identity")),
        (UnknownTarget("no-such-target"), (Outcome.REFUSED, "unknown_target")),
        (BadRequest("invalid_something_new", "?"), (Outcome.REFUSED, "other")),
    ],
)
def test_outcome_of_a_refusal(error, counted):
    assert outcome_of(error) == counted


def test_every_label_set_is_bound_at_start_and_no_other_appears():
    registry = CollectorRegistry()
    counters = ApiMetrics(registry)
    counters.refused(api_metrics.TOOL, UnknownTarget("x" * 200))
    counters.refused(api_metrics.MCP, BadRequest("invalid_" + "y" * 50, "?"))
    samples = parse(render(registry, []).decode())
    series = {
        tuple(dict(labels)[name] for name in ("caller", "outcome", "reason"))
        for sample, labels in samples
        if sample == "flex_handover_tool_calls_total"
    }
    assert series == set(label_sets())
    assert value(
        samples, "flex_handover_tool_calls_total", caller="tool", outcome="refused",
        reason="unknown_target",
    ) == 1.0  # fmt: skip
    assert value(
        samples, "flex_handover_tool_calls_total", caller="mcp", outcome="refused", reason="other"
    ) == 1.0  # fmt: skip


def test_counts_and_ack_latency_by_caller():
    registry = CollectorRegistry()
    counters = ApiMetrics(registry)
    counters.called(api_metrics.TOOL, Outcome.STORED)
    counters.called(api_metrics.TOOL, Outcome.STORED)
    counters.called(api_metrics.VOICE, Outcome.DUPLICATE)
    counters.answered(api_metrics.TOOL, 0.003)
    counters.answered(api_metrics.TOOL, 0.2)
    samples = parse(render(registry, []).decode())

    def calls(caller, outcome):
        return value(
            samples, "flex_handover_tool_calls_total", caller=caller, outcome=outcome, reason=""
        )

    assert (calls("tool", "stored"), calls("voice", "duplicate"), calls("mcp", "stored")) == (
        2.0,
        1.0,
        0.0,
    )
    assert value(samples, "flex_handover_ack_duration_seconds_count", caller="tool") == 2.0
    assert (
        value(samples, "flex_handover_ack_duration_seconds_bucket", caller="tool", le="0.005")
        == 1.0
    )


def test_no_metrics_counts_nothing_and_has_no_registry():
    counters = NoMetrics()
    counters.called(api_metrics.TOOL, Outcome.STORED)
    counters.refused(api_metrics.TOOL, Unavailable())
    counters.answered(api_metrics.TOOL, 1.0)
    assert (counters.enabled, counters.registry) == (False, None)


# --- the worker's labels ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "result"),
    [
        (None, "2xx"),
        (FlexError("x", status=200, retryable=True, ambiguous=True), "2xx"),
        (FlexError("x", status=400), "4xx"),
        (FlexError("x", status=404), "4xx"),
        (FlexError("x", status=429, retryable=True), "429"),
        (FlexError("x", status=503, retryable=True, ambiguous=True), "5xx"),
        (classify(TimeoutError(), 2.0), "timeout"),
        (classify(ConnectionResetError(), 2.0), "network"),
        (FlexError("x", status=302), "other"),
        (FlexError("unexpected"), "other"),
    ],
)
def test_attempt_result(error, result):
    assert attempt_result(error) == result
    assert result in ATTEMPT_RESULTS


def test_worker_counters_keep_targets_to_the_configured_ones():
    counters = WorkerMetrics(["default", "billing"])
    counters.finished(Status.SUCCEEDED, "billing")
    counters.finished(Status.FAILED, "gone-from-settings")
    counters.attempted(classify(TimeoutError(), 2.0))
    counters.attempted(None)
    counters.lost_attempt()
    counters.looked_up("not_found")
    samples = parse(render(counters.registry, counters.slot_families()).decode())
    finished = "flex_handover_handovers_finished_total"
    assert value(samples, finished, state="succeeded", target="billing") == 1.0
    assert value(samples, finished, state="failed", target="unknown") == 1.0
    assert value(samples, finished, state="failed", target="gone-from-settings") is None
    assert value(samples, "flex_handover_attempts_total", result="timeout") == 1.0
    assert value(samples, "flex_handover_attempts_total", result="2xx") == 1.0
    assert value(samples, "flex_handover_ambiguous_attempts_total") == 2.0
    assert value(samples, "flex_handover_task_lookups_total", result="not_found") == 1.0
    assert value(samples, "flex_handover_worker_slots_busy") == 0.0


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_a_bad_worker_metrics_port_is_named(port):
    from shared.settings import Settings, SettingsError
    from tests.unit.test_settings import WORKER_ENV

    with pytest.raises(SettingsError, match="WORKER_METRICS_PORT"):
        Settings.from_env({**WORKER_ENV, "WORKER_METRICS_PORT": port}, role="worker")


def test_a_head_start_is_not_counted_as_waiting():
    # Scored 120 s before it arrived (a priority's head start), arrived 2 s ago.
    assert backlog_of(5, [("job", 0.0)], now=122.0, created_at=120.0) == Backlog(5, 2.0)
    # A retry due later than it arrived waits from when it is due.
    assert backlog_of(5, [("job", 110_000.0)], now=122.0, created_at=50.0) == Backlog(5, 12.0)


async def test_read_backlog_reads_the_head_handovers_arrival(redis):
    job_id = redis_keys.handover_job_id("ho_head")
    await redis.zadd(redis_keys.QUEUE_NAME, {job_id: 880_000, "other": 990_000})
    await redis.hset(redis_keys.handover_key("ho_head"), "created_at", "997.5")
    assert await read_backlog(redis, now=1000.0) == Backlog(2, 2.5)
    hand_back = redis_keys.HAND_BACK_JOB_PREFIX + "ho_head"
    await redis.zadd(redis_keys.QUEUE_NAME, {hand_back: 870_000})
    assert await read_backlog(redis, now=1000.0) == Backlog(3, 130.0)

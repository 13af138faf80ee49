"""What counts as Redis refusing writes, that the worker backs off for it, and what
it says: the pure pieces behind `tests/integration/test_redis_trouble.py` (how long
it backs off: `tests/unit/test_retry.py`)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from arq.connections import create_pool
from redis.asyncio.client import Pipeline
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
)

from shared.connections import redis_error_text, write_refusal
from shared.redis_client import arq_redis_settings
from shared.settings import Settings
from worker.main import create_worker, describe_trouble, redis_trouble

OOM_TEXT = "command not allowed when used memory > 'maxmemory'."
MISCONF_TEXT = "MISCONF Valkey is configured to save RDB snapshots, but it's currently unable"


def from_pipeline(error: Exception) -> Exception:
    """The error as redis-py's pipeline re-raises it: the command in front."""
    Pipeline.annotate_exception(None, error, 2, ("EVALSHA", "abc", "1", "key", '{"x": 1}'))
    return error


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (OutOfMemoryError(OOM_TEXT), "OOM"),
        (ReadOnlyError("You can't write against a read only replica."), "READONLY"),
        (ResponseError(MISCONF_TEXT), "MISCONF"),
        (ResponseError("NOREPLICAS Not enough good replicas to write."), "NOREPLICAS"),
        (ResponseError("MASTERDOWN Link with MASTER is down"), "MASTERDOWN"),
        (from_pipeline(OutOfMemoryError(OOM_TEXT)), "OOM"),
        (from_pipeline(ResponseError(MISCONF_TEXT)), "MISCONF"),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), None),
        (ResponseError("ERR Error running script: user_script:3: bad argument"), None),
        (from_pipeline(ResponseError("ERR value is not an integer or out of range")), None),
        (NoScriptError("No matching script."), None),
        (ConnectionError("Error 111 connecting"), None),
        (ValueError("MISCONF"), None),
    ],
)
def test_write_refusals_are_told_from_other_errors(error, code):
    assert write_refusal(error) == code


@pytest.mark.parametrize(
    "error",
    [
        OutOfMemoryError(OOM_TEXT),
        ReadOnlyError("read only"),
        ResponseError(MISCONF_TEXT),
        ConnectionError("Error 111"),
        BusyLoadingError("loading"),
        AuthenticationError("invalid password"),
        TimeoutError("timed out"),
        OSError("network unreachable"),
    ],
)
def test_the_worker_backs_off_for_redis_trouble(error):
    assert redis_trouble(error)


@pytest.mark.parametrize(
    "error", [ResponseError("WRONGTYPE x"), KeyError("handover"), RuntimeError("a bug")]
)
def test_anything_else_still_ends_the_worker(error):
    assert not redis_trouble(error)


def test_error_text_is_one_bounded_line_without_the_pipelines_command():
    text = redis_error_text(from_pipeline(ResponseError(MISCONF_TEXT + " " + "x" * 1000)))
    assert text.startswith("ResponseError: MISCONF Valkey")
    assert "EVALSHA" not in text and '{"x": 1}' not in text
    assert len(text) <= 250 and "\n" not in text


def test_what_the_worker_says_names_the_trouble_without_the_password():
    location = "redis://127.0.0.1:6390/0"
    never = SimpleNamespace(pool=None)
    connected = SimpleNamespace(pool=object())
    refused = describe_trouble(connected, OutOfMemoryError(OOM_TEXT), location)
    assert refused.startswith(f"Redis at {location} refuses writes (OOM; OutOfMemoryError:")
    unreachable = describe_trouble(never, ConnectionError("Error 111"), location)
    assert unreachable == f"cannot reach Redis at {location} (ConnectionError: Error 111)"
    lost = describe_trouble(connected, ConnectionError("Connection reset"), location)
    assert lost.startswith(f"worker lost Redis at {location}")


async def test_a_run_that_failed_to_tell_arq_is_kept_as_unfinished(redis, redis_server):
    """run_job ended in an error (arq's own write refused): the poll loop ends
    the worker, and the job is remembered so its in-progress key is freed on
    reconnect instead of holding the handover for `recovery_seconds`."""
    pool = await create_pool(arq_redis_settings(redis_server.url))
    worker = create_worker(Settings(redis_url=redis_server.url), redis_pool=pool,
                           handle_signals=False)  # fmt: skip
    try:

        async def refused() -> None:
            raise ReadOnlyError("You can't write against a read only replica.")

        ended, fine = asyncio.ensure_future(refused()), asyncio.ensure_future(asyncio.sleep(0))
        await asyncio.gather(ended, fine, return_exceptions=True)
        worker.tasks.update({"ho_refused": ended, "ho_fine": fine})
        worker.allow_pick_jobs = False
        with pytest.raises(ReadOnlyError):
            await worker._poll_iteration()
        assert worker.unfinished == ["ho_refused"]
        assert not worker.healthy
    finally:
        await pool.aclose()

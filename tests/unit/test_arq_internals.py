"""The arq internals worker/arq_worker.py and worker/main.py rely on are still there, as it expects them.

`HandoverWorker` replaces arq's private poll loop and `stop_worker` reads arq's
Worker state, so a new arq minor may break them without a word: these checks
fail first and say what to re-check.
"""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path
from typing import Any

import arq
from arq.worker import Worker

from shared.settings import Settings
from worker.arq_worker import (
    ARQ_PINNED_MINOR,
    ARQ_WORKER_ATTRIBUTES,
    ARQ_WORKER_METHODS,
    HandoverWorker,
)
from worker.main import create_worker

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
RECHECK = (
    f"HandoverWorker (worker/arq_worker.py) and stop_worker (worker/main.py) rely on arq {ARQ_PINNED_MINOR}'s "
    "Worker internals: re-read arq's Worker.main, _poll_iteration, start_jobs and close "
    "against them, then update ARQ_WORKER_METHODS / ARQ_WORKER_ATTRIBUTES, "
    "ARQ_PINNED_MINOR and the arq pin in pyproject.toml."
)


def shape(method: Any) -> str:
    """A method as ARQ_WORKER_METHODS writes it: "async (self, job_id)"."""
    prefix = "async " if inspect.iscoroutinefunction(method) else ""
    return f"{prefix}({', '.join(inspect.signature(method).parameters)})"


def test_the_installed_arq_is_the_pinned_minor():
    major, minor = ARQ_PINNED_MINOR.split(".")
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = [dep for dep in dependencies if dep.startswith("arq")]
    assert pins == [f"arq>={major}.{minor},<{major}.{int(minor) + 1}"], RECHECK
    installed = arq.VERSION.split(".")[:2]
    assert installed == [major, minor], f"arq {arq.VERSION} is installed. {RECHECK}"


def test_the_arq_methods_relied_on_keep_their_shape():
    for name, expected in ARQ_WORKER_METHODS.items():
        method = getattr(Worker, name, None)
        assert method is not None, f"arq {arq.VERSION} has no Worker.{name}. {RECHECK}"
        actual = shape(method)
        assert actual == expected, (
            f"arq {arq.VERSION}: Worker.{name} is {actual}, expected {expected}. {RECHECK}"
        )


def test_every_arq_method_handover_worker_overrides_is_listed():
    overridden = {
        name for name in vars(HandoverWorker) if not name.startswith("__") and hasattr(Worker, name)
    }
    assert overridden <= ARQ_WORKER_METHODS.keys(), RECHECK
    for name in overridden:
        assert shape(getattr(HandoverWorker, name)) == ARQ_WORKER_METHODS[name]


async def test_the_arq_attributes_relied_on_exist_after_construction():
    worker = create_worker(Settings(redis_url="redis://127.0.0.1:6399/0"), handle_signals=False)
    try:
        missing = [name for name in ARQ_WORKER_ATTRIBUTES if not hasattr(worker, name)]
        assert not missing, f"arq {arq.VERSION}: Worker has no {', '.join(missing)}. {RECHECK}"
        assert worker.pool is not None  # the client create_worker gave it, unconnected
    finally:
        await worker.pool.aclose()


def test_arqs_abort_set_is_renamed_under_the_key_tag():
    import arq.jobs
    import arq.worker

    from shared import redis_keys

    for module in (arq.worker, arq.jobs):
        assert module.abort_jobs_ss == redis_keys.ARQ_ABORT_KEY, RECHECK
    source = inspect.getsource(arq.worker.Worker.finish_job)
    assert "abort_jobs_ss" in source, f"arq {arq.VERSION}: finish_job no longer names it. {RECHECK}"

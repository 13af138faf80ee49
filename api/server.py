"""Runs the receiver: one process, or several sharing one port.

One Python process uses one core. With `--processes N` the parent starts N
children that each bind the port with SO_REUSEPORT, so the kernel spreads
connections across them, and supervises them: SIGTERM/SIGINT stop them all;
a child that dies takes the others down with it, so that Docker's restart
policy (or any supervisor) starts a clean set rather than a partial one.

Metrics: the children write theirs to one PROMETHEUS_MULTIPROC_DIR, so a scrape
that reaches any of them counts all (`shared.metrics`).

"listening" is logged only once the port is bound (by every child); a port
that cannot be bound (taken by another program, no permission) raises
`CannotListen`, which the console script prints as one line.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import cast

from aiohttp import web
from prometheus_client import multiprocess

from api.app import create_app
from shared.event_loop import new_event_loop
from shared.listening import CannotListen, cannot_listen
from shared.logging import configure_logging
from shared.metrics import MULTIPROCESS_ENV
from shared.settings import Settings

logger = logging.getLogger(f"flex_handover.{__name__}")
STOP_TIMEOUT_SECONDS = 15.0
LISTENING = "listening"  # what a child sends its parent once its port is bound
CANNOT_LISTEN_EXIT_CODE = 2


def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT. `on_listening` runs once the port is bound
    (default: log it); CannotListen if it cannot be."""
    listening = False

    def started(_banner: str) -> None:  # run_app's `print`: every site has started
        nonlocal listening
        listening = True
        # What start-up made (modules, settings, the app) lives as long as the
        # process: out of the collector's sight, a full collection under load no
        # longer walks it (it was the tool endpoint's p99, 5x its p50).
        gc.freeze()
        if on_listening is None:
            logger.info("api listening on http://%s:%d", host, port)
        else:
            on_listening()

    try:
        web.run_app(
            create_app(settings), host=host, port=port, access_log=None, print=started,
            reuse_port=reuse_port or None, loop=new_event_loop(),
        )  # fmt: skip
    except OSError as error:
        # Before the sites started, nothing but the bind does I/O (the Redis
        # client connects on first use).
        if listening:
            raise
        raise cannot_listen(host, port, error) from None


def serve_processes(host: str, port: int, processes: int, *, metrics: bool = True) -> int:
    """Start `processes` children on one port; 0 after a clean stop, 1 if one
    died. CannotListen (the others stopped) if one could not bind the port.
    With `metrics`, the children share a PROMETHEUS_MULTIPROC_DIR (`shared_metrics_dir`)."""
    with shared_metrics_dir(metrics) as directory:
        return _serve_processes(host, port, processes, directory)


@contextlib.contextmanager
def shared_metrics_dir(enabled: bool) -> Iterator[str | None]:
    """Where the children write their metrics, so that one scrape sums them all.

    PROMETHEUS_MULTIPROC_DIR is set before the children are spawned (prometheus-client
    reads it at import): an operator's own directory, emptied of an earlier run's
    files first, else a fresh temporary one, removed when the children have stopped."""
    if not enabled:
        yield None
        return
    given = os.environ.get(MULTIPROCESS_ENV)
    directory = given or tempfile.mkdtemp(prefix="flex-handover-metrics-")
    for stale in Path(directory).glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROCESS_ENV] = directory
    try:
        yield directory
    finally:
        if given is None:
            del os.environ[MULTIPROCESS_ENV]
            shutil.rmtree(directory, ignore_errors=True)


def _serve_processes(host: str, port: int, processes: int, metrics_dir: str | None) -> int:
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe(duplex=False) for _ in range(processes)]
    children = [
        context.Process(target=_child, args=(host, port, sender), name=f"api-{n}", daemon=True)
        for n, (_, sender) in enumerate(pipes)
    ]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        _terminate(children)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        for child in children:
            child.start()
        for _, sender in pipes:
            sender.close()  # the child holds its own end: EOF here when it exits
        problem = _wait_until_listening(children, [reader for reader, _ in pipes])
        if problem is not None and not stopping:
            _terminate(children)
            _join(children)
            if isinstance(problem, CannotListen):
                raise problem
            logger.error("api: %s; stopping the others", problem)
            return 1
        if not stopping:
            logger.info("api: %d processes listening on http://%s:%d", processes, host, port)
            ended = wait([child.sentinel for child in children])
            if not stopping:
                dead = next(child for child in children if child.sentinel in ended)
                dead.join()
                logger.error(
                    "api: %s exited with %s; stopping the others", dead.name, dead.exitcode
                )
                stop(signal.SIGTERM, None)
        _join(children)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _terminate(children)  # an exception above must not leave children running
        for reader, _ in pipes:
            reader.close()
        if metrics_dir is not None:
            _mark_dead(children, metrics_dir)
    return (
        0 if stopping and all(child.exitcode in (0, -signal.SIGTERM) for child in children) else 1
    )


def _wait_until_listening(
    children: Sequence[BaseProcess], readers: list[Connection]
) -> CannotListen | str | None:
    """None once every child has bound the port; else what went wrong first."""
    waiting = dict(zip(readers, children, strict=True))
    while waiting:
        for ready in wait(list(waiting)):
            # wait() hands back the objects it was given; typeshed widens them.
            reader = cast(Connection, ready)
            child = waiting.pop(reader)
            try:
                message = reader.recv()
            except EOFError:
                child.join()
                return f"{child.name} exited with {child.exitcode} before listening"
            if message != LISTENING:
                return CannotListen(message)
    return None


def _terminate(children: Sequence[BaseProcess]) -> None:
    for child in children:
        if child.is_alive():
            child.terminate()  # SIGTERM: aiohttp finishes its requests and exits


def _join(children: Sequence[BaseProcess]) -> None:
    for child in children:
        if child.pid is None:
            continue  # never started
        child.join(STOP_TIMEOUT_SECONDS)
        if child.is_alive():
            child.kill()
            child.join()


def _mark_dead(children: Sequence[BaseProcess], metrics_dir: str) -> None:
    """Drop the live gauges of children that have exited (their counters stay summed)."""
    for child in children:
        if child.pid is not None and not child.is_alive():
            multiprocess.mark_process_dead(child.pid, metrics_dir)  # type: ignore[no-untyped-call]


def _child(host: str, port: int, parent: Connection) -> None:
    settings = Settings.from_env(role="api")  # already checked by the parent
    configure_logging(settings.log_level, settings.log_format)
    # The parent handles Ctrl-C; a child stops on the SIGTERM the parent sends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        serve(settings, host, port, reuse_port=True, on_listening=lambda: parent.send(LISTENING))
    except CannotListen as error:
        parent.send(str(error))  # the parent says it, once for all children
        sys.exit(CANNOT_LISTEN_EXIT_CODE)
    sys.exit(0)

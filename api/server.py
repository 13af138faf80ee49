"""Runs the receiver: one process, or several sharing one port.

One Python process uses one core. With `--processes N` the parent starts N
children that each bind the port with SO_REUSEPORT, so the kernel spreads
connections across them, and supervises them: SIGTERM/SIGINT stop them all;
a child that dies takes the others down with it, so that Docker's restart
policy (or any supervisor) starts a clean set rather than a partial one.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
from multiprocessing.connection import wait
from types import FrameType

from aiohttp import web

from api.app import create_app
from shared.logging import configure_logging
from shared.settings import Settings

logger = logging.getLogger("flex_handover")
STOP_TIMEOUT_SECONDS = 15.0


def serve(settings: Settings, host: str, port: int, *, reuse_port: bool = False) -> None:
    web.run_app(
        create_app(settings), host=host, port=port, access_log=None, print=None,
        reuse_port=reuse_port or None,
    )  # fmt: skip


def serve_processes(host: str, port: int, processes: int) -> int:
    """Start `processes` children on one port; 0 after a clean stop, 1 if one died."""
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_child, args=(host, port), name=f"api-{n}", daemon=True)
        for n in range(processes)
    ]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: aiohttp finishes its requests and exits

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        for child in children:
            child.start()
        logger.info("api: %d processes on http://%s:%d", processes, host, port)
        ended = wait([child.sentinel for child in children])
        if not stopping:
            dead = next(child for child in children if child.sentinel in ended)
            dead.join()
            logger.error("api: %s exited with %s; stopping the others", dead.name, dead.exitcode)
            stop(signal.SIGTERM, None)
        for child in children:
            child.join(STOP_TIMEOUT_SECONDS)
            if child.is_alive():
                child.kill()
                child.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0 if stopping and all(child.exitcode in (0, -signal.SIGTERM) for child in children) else 1


def _child(host: str, port: int) -> None:
    settings = Settings.from_env(role="api")  # already checked by the parent
    configure_logging(settings.log_level)
    # The parent handles Ctrl-C; a child stops on the SIGTERM the parent sends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(settings, host, port, reuse_port=True)
    sys.exit(0)

"""The simulator as a blocking program: for `flex-handover simulator` and for a
benchmark's child process, which need a simulator that runs until Ctrl-C or
SIGTERM rather than one started inside their own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shared.listening import bind
from standins.flex_simulator.app import FlexSimulator


def run_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[str], None] | None = None,
    faults: Sequence[Mapping[str, Any]] = (),
    **simulator_options: Any,
) -> None:
    """Serve a FlexSimulator until Ctrl-C or SIGTERM (for a CLI or a benchmark's child process).

    `on_ready(base_url)` is called once listening (default: print the URL).
    `faults`: options of `POST /__sim/faults`, queued before it listens.
    `simulator_options` go to FlexSimulator (account_sid, auth_token, latency, ...).
    Raises CannotListen when host:port cannot be bound.
    """
    asyncio.run(_serve_until_stopped(host, port, on_ready or _print_url, faults, simulator_options))


def _print_url(base_url: str) -> None:
    print(f"Flex simulator listening on {base_url}", flush=True)


async def _serve_until_stopped(
    host: str,
    port: int,
    on_ready: Callable[[str], None],
    faults: Sequence[Mapping[str, Any]],
    simulator_options: dict[str, Any],
) -> None:
    simulator = FlexSimulator(**simulator_options)
    for options in faults:
        simulator.add_fault(options)
    stop = asyncio.Event()
    _stop_on_sigterm(stop)
    try:
        on_ready(await bind(simulator.start(host, port), host, port))
        await stop.wait()
    finally:
        await simulator.stop()


def _stop_on_sigterm(stop: asyncio.Event) -> None:
    # Outside the main thread, or without signal support, only Ctrl-C stops it.
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

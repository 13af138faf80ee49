"""The event loop the api and the worker run on: uvloop where it is installed.

Why: uvloop (libuv under asyncio's interface) runs the same code with less CPU
per socket read, write and callback, which is most of what the tool endpoint
and the worker do; `bench/load.py` measures it against bare aiohttp on both
loops. On a platform without uvloop (Windows) asyncio's own loop runs the same
code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
    uvloop = None  # type: ignore[assignment]

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop: uvloop's when it is installed, else asyncio's."""
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on `new_event_loop()`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)

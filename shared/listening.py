"""A server's port that cannot be had, said in one line.

`flex-handover api`, `dev` and `simulator` turn the OSError of a failed bind
(port taken, no permission, an address that is not this host's, a host name
that does not resolve) into `CannotListen`, which the console script prints as
one line and exits non-zero on, instead of a traceback.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class CannotListen(Exception):
    """A server could not bind its port; str() is the line to show."""


def cannot_listen(host: str, port: int, error: OSError) -> CannotListen:
    """`cannot listen on 0.0.0.0:8080: address already in use`, from a bind's OSError."""
    if isinstance(error, socket.gaierror) or not error.errno or error.errno < 0:
        reason = error.strerror or str(error)
    else:
        # asyncio rewords the message ("error while attempting to bind on …");
        # the errno says it plainly.
        reason = os.strerror(error.errno)
    shown = f"[{host}]" if ":" in host else host
    return CannotListen(f"cannot listen on {shown}:{port}: {reason[:1].lower()}{reason[1:]}")


async def bind(start: Awaitable[T], host: str, port: int) -> T:
    """Await a server's start (which binds host:port); CannotListen if it cannot."""
    try:
        return await start
    except OSError as error:
        raise cannot_listen(host, port, error) from None

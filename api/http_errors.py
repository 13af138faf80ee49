"""Malformed HTTP: one WARNING line per request, and JSON where aiohttp lets us.

aiohttp parses the request line and headers before any of our code runs. What
it cannot parse (a control character in a header, a duplicate Content-Length,
a bad request line, a chunk size that is not hex) it answers itself, in
`RequestHandler.handle_error`, and logs with `logger.exception`: a full ERROR
traceback per request, which anyone who can reach the port can provoke.

- The log: aiohttp's request handler takes its logger as an argument, which
  `web.Application(handler_args=…)` passes on (public API in every aiohttp the
  project allows, whichever runner serves the app: `run_app`, an `AppRunner` in
  the tests). `create_app` hands it `server_logger`, whose `MalformedRequestFilter`
  turns a 4xx parse error into one WARNING line without the traceback; server
  errors (5xx, our own bugs) keep theirs. aiohttp's own `aiohttp.server` logger
  is left alone. This is less invasive than the alternatives: a logging filter
  on `aiohttp.server` would change it for every app in the process, and a
  `RequestHandler` subclass can only be installed through private hooks.
- The answer: for a request it could not parse, aiohttp builds its plain-text
  400 inside `handle_error`, before any middleware or signal runs (the request
  has no route, so not even `on_response_prepare` fires). Changing that body
  needs a `RequestHandler` subclass wired in through `web.Server.__call__` and
  `BaseRunner._make_server`, private and out of reach of `web.run_app`, so the
  status is 400 and the body stays aiohttp's. A body aiohttp cannot decode
  (gzip that is not gzip, a chunk cut short) is only noticed when read, in our
  handler: `api.auth.read_body` answers that one with JSON `invalid_body`.
"""

from __future__ import annotations

import contextlib
import logging
import re

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from shared.logging import MAX_CALLER_TEXT, caller_text

server_logger = logging.getLogger(f"flex_handover.{__name__}")

_REPORTED = "_flex_handover_reported"
# `… when reading: b'aaaa…'`, `Bad status line 'GET …'` (C and Python parsers)
_QUOTED_BYTES = re.compile(r"(?::\s*|\s+)b?['\"]")


def client_error_status(exc: BaseException | None) -> int | None:
    """The 4xx status of a request aiohttp could not parse or whose body it could
    not decode; None for anything else (a server error keeps its traceback)."""
    if isinstance(exc, web.RequestPayloadError):
        return 400
    if isinstance(exc, HttpProcessingError):
        code = getattr(exc, "code", None)
        if isinstance(code, int) and 400 <= code < 500:
            return code
    return None


def reason_of(exc: BaseException) -> str:
    """`Invalid header value char`: the first line of aiohttp's message, without
    the bytes it quotes (they are the caller's and may hold anything)."""
    message = getattr(exc, "message", None)
    if not isinstance(message, str):
        message = str(exc)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    # A payload error reads "400, message:" then the reason.
    lines = [line for line in lines if line.rstrip(":") not in ("400, message", "message")]
    # Cut before splitting: the parser's message quotes the caller's bytes, and a
    # long run of spaces in them made the split quadratic.
    first = lines[0][: 2 * MAX_CALLER_TEXT] if lines else ""
    reason = _QUOTED_BYTES.split(first)[0] if first else type(exc).__name__
    return caller_text(reason.rstrip(":") or type(exc).__name__)


def report_malformed_body(request: web.BaseRequest, exc: BaseException) -> None:
    """The one line for a body that could not be read; aiohttp meets the same
    exception again when it drains the body, and that record is then dropped."""
    server_logger.warning(
        "malformed HTTP request from %s refused with 400: %s",
        request.remote or "?",
        reason_of(exc),
    )
    with contextlib.suppress(AttributeError):  # no __dict__: logged twice, no harm
        setattr(exc, _REPORTED, True)


class MalformedRequestFilter(logging.Filter):
    """aiohttp's ERROR-with-traceback for a malformed request → one WARNING line.

    aiohttp logs `Error handling request from <address>` (3.10 and later name
    the address) with the parser's exception; the record is rewritten in place,
    its traceback dropped, its level lowered to WARNING (a record aiohttp logs
    lower, e.g. a bad method on a fresh connection at DEBUG, stays as low).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = client_error_status(exc)
        if status is None or exc is None:
            return True
        if getattr(exc, _REPORTED, False):
            return False
        if isinstance(exc, web.RequestPayloadError):
            # Met while aiohttp drained a body the handler did not read: the
            # request was answered already, with whatever the handler said.
            record.msg, record.args = "malformed HTTP request body: %s", (reason_of(exc),)
        else:
            args = record.args if isinstance(record.args, tuple) else ()
            remote = args[0] if len(args) == 1 and isinstance(args[0], str) else "?"
            record.msg = "malformed HTTP request from %s refused with %d: %s"
            record.args = (remote, status, reason_of(exc))
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True


server_logger.addFilter(MalformedRequestFilter())

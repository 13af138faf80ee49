"""What went wrong calling Twilio, and whether trying again can help.

`classify` is pure, so the rules (429 and 5xx retry, other 4xx fail at once,
a timeout or reset may already have created the Interaction) are tested
without a server. So is `unreadable_answer`: a 2xx whose body is not what was
asked for (not JSON, a proxy's HTML, `null`, a body over the size limit) is no
refusal, since Twilio may have acted on the request, so it is retryable and
ambiguous. Every message is cut to MAX_ERROR_MESSAGE_CHARS when the error is
built: upstream text of any size never reaches a log line or a record whole.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioException

from shared.model import HandoverError, truncate_message

TIMEOUT, NETWORK = "timeout", "network"
"""`FlexError.transport`: why no answer came."""


class FlexError(Exception):
    """A failed call to Twilio, with what the retry policy needs to know."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        retryable: bool = False,
        ambiguous: bool = False,
        retry_after: float | None = None,
        transport: str | None = None,
    ):
        message = truncate_message(message)
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retryable = retryable
        self.ambiguous = ambiguous
        """The request may have reached Twilio: it might have created the Interaction."""
        self.retry_after = retry_after
        self.transport = transport
        """No answer came: `timeout` or `network` (a reset, a refused connection)."""

    def to_handover_error(self) -> HandoverError:
        return HandoverError(self.message, self.status, self.code)


class AnswerTooLarge(Exception):
    """Twilio's answer had a body over `limit` bytes: cut off there, never parsed."""

    def __init__(self, status: int, limit: int):
        super().__init__(f"Twilio answered {status} with a body over {limit} bytes")
        self.status = status
        self.limit = limit


def classify(
    exc: BaseException, attempt_timeout: float, answered_status: int | None = None
) -> FlexError:
    """Map any failure of a Twilio call to a FlexError (pure: no I/O).

    `answered_status`: the HTTP status of the answer, when one came. It wins
    over a status in the body (twilio-python takes a problem+json body's own
    `status`, which a proxy's body could set to anything).
    """
    if isinstance(exc, FlexError):
        return exc
    if isinstance(exc, AnswerTooLarge):
        if 200 <= exc.status < 300:
            return unreadable_answer(exc.status, f"a body over {exc.limit} bytes, cut off")
        return _http_error(exc.status, None, f"a body over {exc.limit} bytes, cut off")
    if isinstance(exc, TwilioException) and isinstance(getattr(exc, "status", None), int):
        # Not str(exc): twilio's __str__ paints ANSI colours when stderr is a terminal.
        detail = (
            getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", None)
        )
        status: int = exc.status
        if answered_status is not None:
            status = answered_status
        return _http_error(status, getattr(exc, "code", None), detail)
    page_response = _failed_page_response(exc)
    if page_response is not None:
        status, body = page_response
        detail = body.get("message") or body.get("detail") or body.get("title")
        return _http_error(status, body.get("code"), detail)
    if isinstance(exc, TimeoutError):
        return FlexError(
            f"Twilio did not answer within {attempt_timeout:g}s",
            retryable=True,
            ambiguous=True,
            transport=TIMEOUT,
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return FlexError(
            f"could not connect to Twilio: {exc.os_error}", retryable=True, transport=NETWORK
        )
    if isinstance(exc, (aiohttp.ClientError, ConnectionError)):
        return FlexError(
            f"connection to Twilio failed: {type(exc).__name__}",
            retryable=True,
            ambiguous=True,
            transport=NETWORK,
        )
    return FlexError(f"unexpected error calling Twilio: {type(exc).__name__}: {exc}")


def unreadable_answer(status: int, why: str, expected: str = "the resource asked for") -> FlexError:
    """A 2xx that is not `expected`: Twilio may have acted, so look before trying again."""
    return FlexError(
        f"Twilio answered {status} but not with {expected}: {why}",
        status=status,
        retryable=True,
        ambiguous=True,
    )


def parse_failure(exc: BaseException) -> str:
    """What twilio-python's parsing of a 2xx body tripped on, in a few words."""
    if isinstance(exc, ValueError):  # json.JSONDecodeError included
        return "the body is not JSON"
    if isinstance(exc, RecursionError):
        return "the body is JSON nested too deeply to read"
    if isinstance(exc, (AttributeError, TypeError, KeyError, IndexError)):
        return f"the body is not the JSON object expected ({type(exc).__name__})"
    return f"{type(exc).__name__} reading the body"


def _http_error(status: int, code: Any, detail: Any) -> FlexError:
    return FlexError(
        f"Twilio answered {status}: {detail}" if detail else f"Twilio answered {status}",
        status=status,
        code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        retryable=status == 429 or status >= 500,
        ambiguous=status >= 500,
    )


def _failed_page_response(exc: BaseException) -> tuple[int, dict[str, Any]] | None:
    """(status, error body) of a list call's failure, which twilio-python raises as a
    bare `TwilioException("Unable to fetch page", response)` with no status attribute."""
    if not isinstance(exc, TwilioException) or len(exc.args) < 2:
        return None
    status = getattr(exc.args[1], "status_code", None)
    if not isinstance(status, int) or isinstance(status, bool):
        return None
    try:
        body = json.loads(getattr(exc.args[1], "text", "") or "{}")
    except (TypeError, ValueError):
        body = {}
    return status, body if isinstance(body, dict) else {}

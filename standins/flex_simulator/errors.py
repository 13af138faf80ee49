"""Twilio's error answers, in one place so that every refusal the simulator makes
has the body and code Twilio would send: twilio-python then raises the same
`TwilioRestException` against the simulator as against Twilio. Pure: the checks
raise `TwilioError`, and the server (`app.error_response`) writes it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def default_error_code(status: int) -> int:
    """The Twilio error code Twilio pairs with an HTTP status."""
    special = {400: 20001, 401: 20003}
    if status in special:
        return special[status]
    return 20500 if status >= 500 else 20000 + status


def error_body(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class TwilioError(Exception):
    """An answer Twilio gives as an error body; raised by validation and handlers."""

    def __init__(
        self,
        status: int,
        code: int | None = None,
        message: str = "",
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = default_error_code(status) if code is None else code
        self.message = message
        self.headers = dict(headers or {})


def unauthorized() -> TwilioError:
    return TwilioError(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})


def header_value(value: str | float) -> str:
    """A header's text; whole numbers without a trailing `.0` (Retry-After: 7)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def bad_request(message: str) -> TwilioError:
    return TwilioError(400, 20001, message)


def not_found(path: str) -> TwilioError:
    return TwilioError(404, 20404, f"The requested resource {path} was not found")

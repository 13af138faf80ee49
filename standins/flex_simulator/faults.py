"""The fault modes: what the simulator answers instead of the resource (an error,
a hang, a dropped connection, a hostile 2xx), checked and described here with no
I/O, so that a bad `--fault` or `POST /__sim/faults` is refused before anything
is served, and `flex-handover simulator --help` describes every option.
The server (`app.py`) streams the answer a `Fault` describes."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from standins.flex_simulator.errors import TwilioError, error_body, header_value
from standins.flex_simulator.spec_checks import CHANNEL_STATUSES

FAULT_ROUTES = (
    "interactions",
    "users",
    "tasks",
    "channels",
    "conversations",
    "webhooks",
    "messages",
    "workspaces",
    "workflows",
    "task_channels",
)
# Routes whose requests act (create, update, delete): `after_create` acts, then faults.
ACTING_ROUTES = ("interactions", "conversations", "webhooks", "messages")
DEFAULT_CHANNEL_ERROR = (19025, "Channel validation error")  # the spec's example of a read
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True)
class Fault:
    """What to do instead of (or after) serving one request. See `FlexSimulator.fail_next`."""

    status: int = 500
    code: int | None = None
    message: str | None = None
    retry_after: str | float | None = None
    hang: float | None = None
    reset: bool = False
    after_create: bool = False
    route: str = "interactions"
    body: str | None = None
    pad: int = 0
    headers: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.status, bool) or not isinstance(self.status, int):
            raise ValueError("status must be an HTTP status (200-599)")
        if not 200 <= self.status <= 599:
            raise ValueError("status must be an HTTP status (200-599)")
        if self.route not in FAULT_ROUTES:
            raise ValueError(f"route must be one of {', '.join(FAULT_ROUTES)}")
        if self.after_create and self.route not in ACTING_ROUTES:
            raise ValueError(f"after_create only applies to the {', '.join(ACTING_ROUTES)} routes")
        if self.hang is not None and (not isinstance(self.hang, (int, float)) or self.hang < 0):
            raise ValueError("hang must be a number of seconds >= 0")
        if self.status < 400 and self.body is None and not self.after_create:
            raise ValueError(
                "a 2xx/3xx fault needs a body, or after_create to answer the created resource"
            )
        if self.body is not None and not isinstance(self.body, str):
            raise ValueError("body must be a string")
        if isinstance(self.pad, bool) or not isinstance(self.pad, int) or self.pad < 0:
            raise ValueError("pad must be a number of bytes >= 0")
        if self.headers is not None and (
            not isinstance(self.headers, Mapping)
            or not all(
                isinstance(name, str)
                and _HEADER_NAME.fullmatch(name)
                and isinstance(value, str)
                and "\r" not in value
                and "\n" not in value
                for name, value in self.headers.items()
            )
        ):
            raise ValueError("headers must map header names to one-line strings")

    @property
    def kind(self) -> str:
        if self.reset:
            return "reset"
        extras = [f"{self.pad} bytes of padding"] if self.pad else []
        if self.body is not None:
            extras.insert(0, "a raw body")
        return f"http {self.status}" + (f" with {' and '.join(extras)}" if extras else "")

    def error(self) -> TwilioError:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = header_value(self.retry_after)
        message = self.message or f"Simulated failure (HTTP {self.status})"
        return TwilioError(self.status, self.code, message, headers)

    def response_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.retry_after is not None:
            headers["Retry-After"] = header_value(self.retry_after)
        for name, value in (self.headers or {}).items():
            for known in [key for key in headers if key.lower() == name.lower()]:
                del headers[known]
            headers[name] = value
        return headers

    def body_parts(self, resource: Mapping[str, Any] | None) -> tuple[bytes, bytes]:
        """The body around its padding: (before, after). A raw `body` is padded
        with trailing spaces; a JSON object (for a 2xx the resource, else
        Twilio's error body) gets a `padding` string field."""
        if self.body is not None:
            return self.body.encode(), b""
        if resource is None or self.status >= 400:
            error = self.error()
            resource = error_body(error.status, error.code, error.message)
        text = json.dumps(resource).encode()
        if not self.pad:
            return text, b""
        before = text[:-1] + (b',"padding":"' if len(resource) else b'"padding":"')
        return before, b'"}'

    @property
    def filler(self) -> bytes:
        """The padding byte: spaces after a raw body, letters inside a JSON string."""
        return b" " if self.body is not None else b"x"


FAULT_OPTIONS = frozenset(field.name for field in fields(Fault)) | {"count"}

# What `flex-handover simulator --help` says of each option (help_text.py lays it out).
FAULT_HELP: dict[str, str] = {
    "status": "HTTP status to answer, 200-599 (a 2xx/3xx needs body or after_create)",
    "count": "how many of the next requests to the route get it",
    "code": "Twilio error code in the body (default from status: 429 -> 20429, "
    "5xx -> 20500, 400 -> 20001, 401 -> 20003)",
    "message": "error message in the body",
    "retry_after": "Retry-After header on the error: seconds or an HTTP date",
    "hang": "wait this many seconds before answering",
    "reset": "close the connection without answering",
    "after_create": "serve the request first (the Interaction, webhook or message is "
    "created, the Conversation updated, the webhook deleted), then answer with the fault "
    f"(it succeeded, the answer is lost); routes {', '.join(ACTING_ROUTES)}",
    "body": "raw text answered instead of the JSON body (HTML, null, [], a sid that is no SID)",
    "pad": "this many extra bytes, streamed without a Content-Length (a huge answer)",
    "headers": "response headers to add or replace, as a JSON object of strings",
    "route": f"which requests: {', '.join(FAULT_ROUTES)} (POST /v1/Interactions, "
    "GET /v1/Users/…, GET /v1/Workspaces/{WS}/Tasks, GET /v1/Interactions/{KD}/Channels/{UO}, "
    "GET and POST /v1/Conversations/{CH}, …/{CH}/Webhooks[/{WH}] (GET, POST, DELETE), "
    "…/{CH}/Messages (GET, POST), GET /v1/Conversations (conversations); "
    "GET /v1/Workspaces/{WS} (workspaces), …/{WS}/Workflows/{WW} (workflows), "
    "…/{WS}/TaskChannels/{TC or name} (task_channels))",
}


@dataclass(frozen=True)
class ChannelPlan:
    """What a created Interaction's channel shows on each read: `statuses` in
    turn, the last one for good. A status with an error (`failed`, or `closed` /
    `inactive` given `error_code`) carries `error_code` and `error_message`.
    See `FlexSimulator.next_channels`."""

    statuses: tuple[str, ...] = ("active",)
    error_code: int | None = None
    error_message: str | None = None

    def __post_init__(self) -> None:
        statuses: object = self.statuses  # from JSON: anything
        if isinstance(statuses, str) or not isinstance(statuses, (list, tuple)) or not statuses:
            raise ValueError("statuses must be a non-empty list of channel statuses")
        unknown = [s for s in statuses if s not in CHANNEL_STATUSES]
        if unknown:
            raise ValueError(f"statuses must be among {', '.join(CHANNEL_STATUSES)}")
        object.__setattr__(self, "statuses", tuple(statuses))
        code = self.error_code
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
            raise ValueError("error_code must be an integer")
        if self.error_message is not None and not isinstance(self.error_message, str):
            raise ValueError("error_message must be a string")

    def status_at(self, read: int) -> str:
        """The status the `read`-th read (from 0) shows."""
        return self.statuses[min(read, len(self.statuses) - 1)]

    def error_for(self, status: str) -> tuple[int | None, str | None]:
        """(error_code, error_message) a read showing `status` answers."""
        if status == "failed":
            code = DEFAULT_CHANNEL_ERROR[0] if self.error_code is None else self.error_code
            return code, self.error_message or DEFAULT_CHANNEL_ERROR[1]
        if status in ("closed", "inactive") and self.error_code is not None:
            return self.error_code, self.error_message or DEFAULT_CHANNEL_ERROR[1]
        return None, None


CHANNEL_OPTIONS = frozenset(field.name for field in fields(ChannelPlan)) | {"count"}

# What `flex-handover simulator --help` says of each `POST /__sim/channels` option.
CHANNEL_HELP: dict[str, str] = {
    "statuses": f"what each read of the channel shows, in turn, the last for good "
    f"({', '.join(CHANNEL_STATUSES)}), e.g. setup then failed",
    "count": "how many of the next created Interactions get it",
    "error_code": f"error_code of a failed channel (default {DEFAULT_CHANNEL_ERROR[0]}); "
    "given, closed and inactive carry it too",
    "error_message": f"error_message of a failed channel (default {DEFAULT_CHANNEL_ERROR[1]!r})",
}

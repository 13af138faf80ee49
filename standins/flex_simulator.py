"""A stand-in for the few Twilio APIs flex-handover calls, served on loopback.

Why it exists: `flex-handover dev` must run on a laptop with no Twilio account, and
the test suite needs a Flex that fails on demand (5xx, 429 + Retry-After, hung
requests, dropped connections, "created but the answer was lost") to prove the
worker's retries and de-duplication, and one that is hostile on demand, as a
proxy in front of Twilio could be: 2xx answers that are not the resource (HTML,
`null`, a sid that is no SID), bodies of any size streamed without a length,
odd headers and any `Retry-After` text (see `FlexSimulator.fail_next`). The real
twilio-python client talks to it unchanged: point `client.flex_api.base_url`,
`client.conversations.base_url` and `client.taskrouter.base_url` at the URL
`FlexSimulator.start()` returns.

Routes (shapes and checks follow Twilio's OpenAPI specs and `twilio-facts.md`):
- `POST /v1/Interactions`, `GET /v1/Interactions/{KD}`, `GET /v1/Interactions/{KD}/Channels`
- `GET /v1/Users/{US… or identity}` (Conversations)
- `GET /v1/Workspaces/{WS}/Tasks` (TaskRouter; every created Interaction makes a task)
- `/__sim/...`: fault injection, a rate limit and records for other processes (no auth).

Rate limit mode (`rate_limit_rps`, or `PUT /__sim/rate_limit`): creates above the
rate are answered 429 (code 20429, or 45010, Flex's own rate-limit code), with a
`Retry-After` only when one is configured: whether Twilio sends one is unconfirmed.

Every error answers with Twilio's JSON error body, so twilio-python raises
`TwilioRestException` with the right status and code.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import inspect
import json
import logging
import math
import re
import signal
import textwrap
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, NoReturn

from aiohttp import web

from shared.listening import bind
from shared.sids import is_sid
from shared.sids import pattern as sid_pattern

log = logging.getLogger(__name__)

CHANNEL_TYPES = ("voice", "sms", "email", "web", "whatsapp", "chat", "messenger", "gbm")
ASSIGNMENT_STATUSES = ("pending", "reserved", "assigned", "canceled", "wrapping", "completed")
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
FAULT_ROUTES = ("interactions", "users", "tasks")


# --- SIDs and times -------------------------------------------------------------


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def iso_time(epoch: float) -> str:
    """Twilio's date-time format: `2014-05-14T14:26:54Z`."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- Twilio errors --------------------------------------------------------------


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

    def to_response(self) -> web.Response:
        body = error_body(self.status, self.code, self.message)
        return web.json_response(body, status=self.status, headers=self.headers)


def unauthorized() -> TwilioError:
    return TwilioError(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})


def header_value(value: str | float) -> str:
    """A header's text; whole numbers without a trailing `.0` (Retry-After: 7)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def bad_request(message: str) -> TwilioError:
    return TwilioError(400, 20001, message)


def not_found(path: str) -> TwilioError:
    return TwilioError(404, 20404, f"The requested resource {path} was not found")


# --- Validation of CreateInteraction (pure) ---------------------------------------


@dataclass(frozen=True)
class FormParam:
    """One form parameter of a create request as the spec declares it."""

    required: bool = False
    pattern: str | None = None


# Mirrors CreateInteractionRequest in twilio_flex_v1.json (a test holds it to the spec).
CREATE_INTERACTION_PARAMS: dict[str, FormParam] = {
    "Channel": FormParam(required=True),
    "Routing": FormParam(),
    "InteractionContextSid": FormParam(pattern=sid_pattern("HQ")),
    "WebhookTtid": FormParam(),
}


def check_form_params(form: Mapping[str, str], params: Mapping[str, FormParam]) -> None:
    """Required parameters present, patterns matched; unknown parameters ignored."""
    for name, param in params.items():
        value = form.get(name)
        if value is None:
            if param.required:
                raise bad_request(f"Missing required parameter {name} in the post body")
        elif param.pattern and re.fullmatch(param.pattern, value) is None:
            raise bad_request(f"Invalid {name}: must match {param.pattern}")


def parse_json_object(text: str, name: str) -> dict[str, Any]:
    """A form parameter that must hold a JSON object."""
    try:
        value = json.loads(text)
    except ValueError:
        raise bad_request(f"{name} is not valid JSON") from None
    return require_object(value, name)


def require_object(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{name} must be a JSON object")
    return value


def optional_object(parent: Mapping[str, Any], key: str, name: str) -> dict[str, Any]:
    """`parent[key]` when it is an object, {} when absent; anything else is a 400."""
    if key not in parent:
        return {}
    return require_object(parent[key], name)


def check_optional_sid(properties: Mapping[str, Any], key: str, prefix: str, name: str) -> None:
    if key in properties and not is_sid(properties[key], prefix):
        raise bad_request(f"{name}.{key} must match {sid_pattern(prefix)}")


def validate_channel(channel: Mapping[str, Any]) -> None:
    """Twilio's semantic checks on the Channel object."""
    if channel.get("type") not in CHANNEL_TYPES:
        raise bad_request(f"Channel.type must be one of {', '.join(CHANNEL_TYPES)}")
    initiated_by = channel.get("initiated_by")
    if not isinstance(initiated_by, str) or not initiated_by:
        raise bad_request("Channel.initiated_by is required")
    properties = optional_object(channel, "properties", "Channel.properties")
    if initiated_by == "customer" and "media_channel_sid" not in properties:
        raise bad_request("Channel.properties.media_channel_sid is required for an inbound channel")
    check_optional_sid(properties, "media_channel_sid", "CH", "Channel.properties")


def validate_routing(routing: Mapping[str, Any]) -> None:
    """Twilio's semantic checks on the Routing object."""
    properties = optional_object(routing, "properties", "Routing.properties")
    check_optional_sid(properties, "workspace_sid", "WS", "Routing.properties")
    check_optional_sid(properties, "workflow_sid", "WW", "Routing.properties")
    optional_object(properties, "attributes", "Routing.properties.attributes")


def validate_create_interaction(form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parsed (channel, routing) of a valid create request; TwilioError(400) otherwise."""
    check_form_params(form, CREATE_INTERACTION_PARAMS)
    channel = parse_json_object(form["Channel"], "Channel")
    routing = parse_json_object(form.get("Routing", "{}"), "Routing")
    validate_channel(channel)
    validate_routing(routing)
    return channel, routing


# --- Authentication (pure) ---------------------------------------------------------


def parse_basic_auth(header: str) -> tuple[str, str] | None:
    """(username, password) from a `Basic …` Authorization header; None if malformed."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon and username else None


def credential_pairs(*pairs: tuple[str | None, str | None]) -> list[tuple[str, str]]:
    """The configured (username, password) pairs; half a pair is a mistake."""
    if any((user is None) != (secret is None) for user, secret in pairs):
        raise ValueError("give account_sid with auth_token, and api_key with api_secret")
    return [(user, secret) for user, secret in pairs if user is not None and secret is not None]


def credentials_match(username: str, password: str, pairs: list[tuple[str, str]]) -> bool:
    """Whether (username, password) is one of `pairs`, compared in constant time."""
    return any(
        hmac.compare_digest(username.encode(), user.encode())
        and hmac.compare_digest(password.encode(), secret.encode())
        for user, secret in pairs
    )


# --- TaskRouter filters (pure) ----------------------------------------------------

_EQUALS_EXPRESSION = re.compile(r"""\s*([A-Za-z_][\w.]*)\s*==\s*(?:"([^"]*)"|'([^']*)')\s*""")


def parse_task_expression(expression: str) -> tuple[list[str], str]:
    """`key == "value"` (or single quotes, dotted keys) as (key path, value)."""
    match = _EQUALS_EXPRESSION.fullmatch(expression)
    if match is None:
        raise bad_request(
            f"Invalid EvaluateTaskAttributes {expression!r}: "
            'the simulator understands only key == "value"'
        )
    key, double_quoted, single_quoted = match.groups()
    value = double_quoted if double_quoted is not None else single_quoted
    return key.split("."), value


def attribute_equals(attributes: Mapping[str, Any], path: list[str], value: str) -> bool:
    current: Any = attributes
    for key in path:
        if not isinstance(current, dict) or key not in current:
            return False
        current = current[key]
    return current == value


def assignment_status_filter(values: list[str]) -> set[str]:
    """Repeated `AssignmentStatus` parameters, each possibly comma-separated."""
    statuses = {status.strip() for value in values for status in value.split(",") if status.strip()}
    unknown = statuses - set(ASSIGNMENT_STATUSES)
    if unknown:
        raise bad_request(f"Invalid AssignmentStatus {', '.join(sorted(unknown))}")
    return statuses


def page_params(query: Mapping[str, str]) -> tuple[int, int]:
    """(page, page_size) from the query, as Twilio bounds them."""
    try:
        page = int(query.get("Page", "0"))
        size = int(query.get("PageSize", str(DEFAULT_PAGE_SIZE)))
    except ValueError:
        raise bad_request("Page and PageSize must be integers") from None
    if page < 0 or not 1 <= size <= MAX_PAGE_SIZE:
        raise bad_request(f"Page must be >= 0 and PageSize between 1 and {MAX_PAGE_SIZE}")
    return page, size


def list_envelope(
    url: Any, key: str, items: list[dict[str, Any]], query: Mapping[str, str]
) -> dict[str, Any]:
    """One page of `items` in Twilio's `{key: [...], meta: {...}}` list shape.

    `url` is the request's yarl URL; page links keep its other query parameters.
    """
    page, size = page_params(query)

    def page_url(number: int) -> str:
        return str(url.update_query(Page=str(number), PageSize=str(size)))

    has_next = (page + 1) * size < len(items)
    return {
        key: items[page * size : (page + 1) * size],
        "meta": {
            "page": page,
            "page_size": size,
            "first_page_url": page_url(0),
            "previous_page_url": page_url(page - 1) if page > 0 else None,
            "url": page_url(page),
            "next_page_url": page_url(page + 1) if has_next else None,
            "key": key,
        },
    }


# --- Faults --------------------------------------------------------------------


FAULT_CHUNK_BYTES = 64 * 1024
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
        if self.after_create and self.route != "interactions":
            raise ValueError("after_create only applies to the interactions route")
        if self.hang is not None and (not isinstance(self.hang, (int, float)) or self.hang < 0):
            raise ValueError("hang must be a number of seconds >= 0")
        if self.status < 400 and self.body is None and not self.after_create:
            raise ValueError(
                "a 2xx/3xx fault needs a body, or after_create to answer the created Interaction"
            )
        if self.body is not None and not isinstance(self.body, str):
            raise ValueError("body must be a string")
        if isinstance(self.pad, bool) or not isinstance(self.pad, int) or self.pad < 0:
            raise ValueError("pad must be a number of bytes >= 0")
        if self.headers is not None:
            if not isinstance(self.headers, Mapping) or not all(
                isinstance(name, str)
                and _HEADER_NAME.fullmatch(name)
                and isinstance(value, str)
                and "\r" not in value
                and "\n" not in value
                for name, value in self.headers.items()
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

    async def respond(
        self, request: web.Request, resource: Mapping[str, Any] | None = None
    ) -> web.StreamResponse:
        """The fault's answer. Padding is streamed in chunks without a
        Content-Length, so a client must stop reading by itself."""
        before, after = self.body_parts(resource)
        if not self.pad:
            return web.Response(status=self.status, body=before, headers=self.response_headers())
        filler = b" " if self.body is not None else b"x"
        response = web.StreamResponse(status=self.status, headers=self.response_headers())
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            await response.write(before)
            left = self.pad
            while left > 0:
                size = min(left, FAULT_CHUNK_BYTES)
                await response.write(filler * size)
                left -= size
            await response.write(after)
            await response.write_eof()
        except ConnectionError:  # the client stopped reading: what a bounded reader does
            pass
        return response


FAULT_OPTIONS = frozenset(field.name for field in fields(Fault)) | {"count"}
RATE_LIMIT_CODES = (20429, 45010)


class RateLimited(TwilioError):
    """A create refused by the simulator's rate limit."""


class SlidingWindowLimit:
    """At most `rps` admitted creates in any 1 s window (a sliding log).

    For a rate that is not a whole number the window stretches so that it holds
    a whole number: `max(1, floor(rps))` creates per `that / rps` seconds (0.5/s
    is one create per 2 s). Refused requests do not count: the limit is on what
    Twilio accepts. Not thread-safe on its own (the simulator holds its lock).
    """

    def __init__(self, rps: float, clock: Callable[[], float] = time.monotonic):
        if isinstance(rps, bool) or not isinstance(rps, (int, float)) or not rps > 0:
            raise ValueError("rps must be a number > 0")
        if not math.isfinite(rps):
            raise ValueError("rps must be finite")
        self.rps = float(rps)
        self.limit = max(1, math.floor(rps))
        self.window = self.limit / self.rps
        self._clock = clock
        self._admitted: deque[float] = deque()

    def admit(self) -> bool:
        """Count one create if the window has room for it."""
        now = self._clock()
        while self._admitted and self._admitted[0] <= now - self.window:
            self._admitted.popleft()
        if len(self._admitted) >= self.limit:
            return False
        self._admitted.append(now)
        return True

    def clear(self) -> None:
        self._admitted.clear()


@dataclass(frozen=True)
class RateLimit:
    """The rate limit mode: see `FlexSimulator.set_rate_limit`."""

    rps: float
    retry_after: str | float | None = None
    code: int = 20429

    def __post_init__(self) -> None:
        if self.code not in RATE_LIMIT_CODES:
            raise ValueError(f"code must be one of {', '.join(map(str, RATE_LIMIT_CODES))}")
        if self.retry_after is not None and (
            isinstance(self.retry_after, bool)
            or not isinstance(self.retry_after, (int, float, str))
        ):
            raise ValueError("retry_after must be seconds, an HTTP date or null")

    def error(self) -> RateLimited:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = header_value(self.retry_after)
        message = f"Too many requests: over the simulated limit of {self.rps:g}/s"
        return RateLimited(429, self.code, message, headers)


RATE_LIMIT_OPTIONS = frozenset(field.name for field in fields(RateLimit))


class ConnectionDropped(Exception):
    """Raised by a handler to close the connection without answering."""


class InjectedAnswer(Exception):
    """Raised by a handler to answer with a fault's own response."""

    def __init__(self, fault: Fault, resource: Mapping[str, Any] | None = None):
        super().__init__(fault.kind)
        self.fault = fault
        self.resource = resource

    async def respond(self, request: web.Request) -> web.StreamResponse:
        return await self.fault.respond(request, self.resource)


# --- Resource shapes -------------------------------------------------------------


def interaction_attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    """The task attributes Flex makes: the caller's routing attributes plus Flex's keys."""
    attributes = dict(record["routing"].get("properties", {}).get("attributes", {}))
    attributes.update(
        conversationSid=record["conversation_sid"],
        flexInteractionSid=record["sid"],
        flexInteractionChannelSid=record["channel_sid"],
    )
    return attributes


def interaction_resource(
    record: Mapping[str, Any], task: Mapping[str, Any], origin: str
) -> dict[str, Any]:
    """The spec's `flex.v1.interaction` for a created Interaction."""
    url = f"{origin}/v1/Interactions/{record['sid']}"
    routing_properties = dict(record["routing"].get("properties", {}))
    routing_properties.update(
        sid=task["sid"],
        account_sid=task["account_sid"],
        assignment_status=task["assignment_status"],
        attributes=json.dumps(task["attributes"]),
        date_created=int(task["created_at"]),
        date_updated=int(task["created_at"]),
        priority=0,
        age=0,
        timeout=86400,
        reason="",
        addons="{}",
    )
    return {
        "sid": record["sid"],
        "channel": {"type": record["channel"]["type"], "sid": record["channel_sid"]},
        "routing": {"reservation": None, "properties": routing_properties},
        "interaction_context_sid": record["interaction_context_sid"],
        "webhook_ttid": record["webhook_ttid"],
        "url": url,
        "links": {"channels": f"{url}/Channels"},
    }


def channel_resource(record: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """The spec's `flex.v1.interaction.interaction_channel`, always "active" here."""
    url = f"{origin}/v1/Interactions/{record['sid']}/Channels/{record['channel_sid']}"
    return {
        "sid": record["channel_sid"],
        "type": record["channel"]["type"],
        "interaction_sid": record["sid"],
        "status": "active",
        "error_code": None,
        "error_message": None,
        "url": url,
        "links": {
            name: f"{url}/{name.capitalize()}" for name in ("participants", "invites", "transfers")
        },
    }


def task_resource(task: Mapping[str, Any], origin: str, now: float) -> dict[str, Any]:
    """The spec's `taskrouter.v1.workspace.task`."""
    workspace_url = f"{origin}/v1/Workspaces/{task['workspace_sid']}"
    url = f"{workspace_url}/Tasks/{task['sid']}"
    created = iso_time(task["created_at"])
    return {
        "sid": task["sid"],
        "account_sid": task["account_sid"],
        "workspace_sid": task["workspace_sid"],
        "workflow_sid": task["workflow_sid"],
        "assignment_status": task["assignment_status"],
        "attributes": json.dumps(task["attributes"]),
        "task_channel_unique_name": task["task_channel_unique_name"],
        "task_channel_sid": None,
        "task_queue_sid": None,
        "task_queue_friendly_name": None,
        "workflow_friendly_name": None,
        "age": int(now - task["created_at"]),
        "priority": 0,
        "timeout": 86400,
        "reason": None,
        "addons": "{}",
        "date_created": created,
        "date_updated": created,
        "task_queue_entered_date": created,
        "virtual_start_time": created,
        "ignore_capacity": None,
        "routing_target": None,
        "url": url,
        "links": {"workspace": workspace_url, "reservations": f"{url}/Reservations"},
    }


def user_resource(
    identity: str, user: Mapping[str, Any], account_sid: str, origin: str
) -> dict[str, Any]:
    """The spec's `conversations.v1.user`."""
    url = f"{origin}/v1/Users/{user['sid']}"
    created = iso_time(user["created_at"])
    return {
        "sid": user["sid"],
        "account_sid": account_sid,
        "chat_service_sid": user["chat_service_sid"],
        "role_sid": user["role_sid"],
        "identity": identity,
        "friendly_name": user["friendly_name"],
        "attributes": "{}",
        "is_online": None,
        "is_notifiable": None,
        "date_created": created,
        "date_updated": created,
        "url": url,
        "links": {"user_conversations": f"{url}/Conversations"},
    }


# --- The simulator ---------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FlexSimulator:
    """Fake Flex, Conversations (users) and TaskRouter (tasks) APIs with fault injection.

    Records (plain lists, appended under a lock so other threads can read them):
    `interactions` (accepted creates), `requests` (every POST /v1/Interactions
    attempt: method, path, status answered or None when dropped, outcome:
    created, error, throttled (by the rate limit) or dropped), `tasks`, and
    `paths` (method and raw path, query string included, of every request to a
    Twilio API, whatever its route: what a client really asked for).

    `rate_limit_rps` > 0 answers creates above that rate with 429 (see
    `set_rate_limit`); `rate_limit_retry_after` and `rate_limit_code` go with it.
    """

    def __init__(
        self,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        latency: float = 0.0,
        task_visible_after: float = 0.0,
        rate_limit_rps: float = 0.0,
        rate_limit_retry_after: str | float | None = None,
        rate_limit_code: int = 20429,
    ):
        self._credentials = credential_pairs((account_sid, auth_token), (api_key, api_secret))
        self.account_sid = account_sid or "AC" + "0" * 32
        self.latency = latency
        self.task_visible_after = task_visible_after
        self.interactions: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.paths: list[tuple[str, str]] = []
        self.users: dict[str, dict[str, Any]] = {}
        self._chat_service_sid = new_sid("IS")
        self._faults: dict[str, deque[Fault]] = {route: deque() for route in FAULT_ROUTES}
        self._lock = threading.Lock()
        self._stopping = asyncio.Event()  # set by stop(); wakes hanging requests
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None
        self.rate_limit: RateLimit | None = None
        self._window: SlidingWindowLimit | None = None
        self.set_rate_limit(
            rate_limit_rps, retry_after=rate_limit_retry_after, code=rate_limit_code
        )
        self.app = self._build_app()

    # --- control (Python API) ---

    def fail_next(
        self,
        status: int = 500,
        *,
        count: int = 1,
        code: int | None = None,
        message: str | None = None,
        retry_after: str | float | None = None,
        hang: float | None = None,
        reset: bool = False,
        after_create: bool = False,
        route: str = "interactions",
        body: str | None = None,
        pad: int = 0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Queue a fault for each of the next `count` requests to `route` (FIFO):
        `interactions` (POST /v1/Interactions), `users` (GET /v1/Users/…) or
        `tasks` (GET /v1/Workspaces/{WS}/Tasks).

        `hang`: wait that many seconds first. `reset`: close the connection without
        answering. `retry_after`: `Retry-After` header on the answer, any text
        (`"0"`, `"-5"`, `"nan"`, an HTTP date). `after_create`: the Interaction is
        created before the fault is served. `code` defaults from `status`
        (429 -> 20429, 5xx -> 20500, 400 -> 20001, 401 -> 20003, 404 -> 20404).

        Hostile answers, as from a proxy in front of Twilio: `status` may be a
        2xx (with `after_create`: the created Interaction's resource, else a
        `body` is required), `body` answers that text instead of the JSON body
        (HTML, `null`, `[]`, `{}`, a sid that is no SID), `pad` adds that many
        bytes (a `padding` field in a JSON body, trailing spaces after a raw
        `body`), streamed without a Content-Length, and `headers` adds or
        replaces response headers. A 2xx to a create is only answered to a
        valid request (checked as always against the spec's parameters).
        """
        if not isinstance(count, int) or count < 1:
            raise ValueError("count must be an integer >= 1")
        fault = Fault(
            status,
            code,
            message,
            retry_after,
            hang,
            reset,
            after_create,
            route,
            body,
            pad,
            dict(headers) if isinstance(headers, Mapping) else headers,
        )
        with self._lock:
            self._faults[route].extend([fault] * count)

    def set_rate_limit(
        self,
        rps: float,
        *,
        retry_after: str | float | None = None,
        code: int = 20429,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Answer creates above `rps` per second (a sliding 1 s window over accepted
        creates) with 429 and Twilio error `code` (20429, or 45010, the Flex API
        rate limit), plus `Retry-After: retry_after` when given. 0 turns it off.
        Checked after authentication and before queued faults, which a refused
        create leaves queued."""
        if rps == 0:
            limit, window = None, None
        else:
            window = SlidingWindowLimit(rps, clock)
            limit = RateLimit(window.rps, retry_after, code)
        with self._lock:
            self.rate_limit, self._window = limit, window

    def throttled(self) -> int:
        """Creates refused by the rate limit so far."""
        with self._lock:
            return sum(1 for attempt in self.requests if attempt.get("outcome") == "throttled")

    def pending_faults(self, route: str = "interactions") -> int:
        with self._lock:
            return len(self._faults[route])

    def add_user(self, identity: str, friendly_name: str | None = None) -> dict[str, Any]:
        """Make a Conversations user fetchable by identity or by its new US SID."""
        user = {
            "sid": new_sid("US"),
            "friendly_name": friendly_name,
            "chat_service_sid": self._chat_service_sid,
            "role_sid": new_sid("RL"),
            "created_at": time.time(),
        }
        with self._lock:
            self.users[identity] = user
        return user

    def reset(self) -> None:
        """Forget records, users, queued faults and the rate limit's window (lists
        are cleared in place); the rate limit and latency settings stay."""
        with self._lock:
            for records in (self.interactions, self.requests, self.tasks, self.paths):
                records.clear()
            self.users.clear()
            for queue in self._faults.values():
                queue.clear()
            if self._window is not None:
                self._window.clear()

    # --- lifecycle ---

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 = any free port); returns the base URL."""
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(self.app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving; requests still hanging or waiting are dropped, not awaited."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FlexSimulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- app and middleware ---

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._twilio_errors])
        app.router.add_post("/v1/Interactions", self._create_interaction)
        app.router.add_get("/v1/Interactions/{sid}", self._fetch_interaction)
        app.router.add_get("/v1/Interactions/{sid}/Channels", self._list_channels)
        app.router.add_get("/v1/Users/{sid}", self._fetch_user)
        app.router.add_get("/v1/Workspaces/{workspace_sid}/Tasks", self._list_tasks)
        app.router.add_post("/__sim/faults", self._control_add_fault)
        app.router.add_get("/__sim/interactions", self._control_interactions)
        app.router.add_get("/__sim/requests", self._control_requests)
        app.router.add_post("/__sim/reset", self._control_reset)
        app.router.add_put("/__sim/latency", self._control_latency)
        app.router.add_put("/__sim/rate_limit", self._control_rate_limit)
        return app

    @web.middleware
    async def _twilio_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Turns TwilioError and aiohttp's own 404/405 into Twilio error bodies."""
        if not request.path.startswith("/__sim/"):
            with self._lock:
                self.paths.append((request.method, request.raw_path))
        try:
            return await handler(request)
        except TwilioError as error:
            return error.to_response()
        except InjectedAnswer as injected:
            return await injected.respond(request)
        except web.HTTPNotFound:
            return not_found(request.path).to_response()
        except web.HTTPMethodNotAllowed:
            return TwilioError(405, 20004, "Method not allowed").to_response()
        except ConnectionDropped:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=499)  # never reaches the client; for the access log

    def _authenticate(self, request: web.Request) -> None:
        """HTTP Basic auth against the configured pairs (any pair when none configured)."""
        credentials = parse_basic_auth(request.headers.get("Authorization", ""))
        if credentials is None:
            raise unauthorized()
        if self._credentials and not credentials_match(*credentials, self._credentials):
            raise unauthorized()

    def _take_fault(self, route: str) -> Fault | None:
        with self._lock:
            queue = self._faults[route]
            return queue.popleft() if queue else None

    async def _wait(self, seconds: float | None) -> None:
        """Sleep, unless the simulator stops first: then drop the connection."""
        if not seconds:
            return
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return
        raise ConnectionDropped

    async def _raise_fault(
        self, fault: Fault, resource: Mapping[str, Any] | None = None
    ) -> NoReturn:
        """Hang if asked, then drop the connection or raise the fault's answer
        (`resource`: what a 2xx fault answers when it has no raw body)."""
        log.info("flex simulator: injecting %s on %s", fault.kind, fault.route)
        await self._wait(fault.hang)
        if fault.reset:
            raise ConnectionDropped
        raise InjectedAnswer(fault, resource)

    # --- Flex Interactions ---

    async def _create_interaction(self, request: web.Request) -> web.StreamResponse:
        attempt = {
            "method": request.method,
            "path": request.path,
            "status": None,
            "received_at": time.time(),
        }
        with self._lock:
            self.requests.append(attempt)
        throttled = bad_answer = False
        try:
            response = await self._answer_create(request)
        except TwilioError as error:
            response = error.to_response()
            throttled = isinstance(error, RateLimited)
        except InjectedAnswer as answer:
            bad_answer = not answer.fault.after_create  # a 2xx that created nothing
            response = await answer.respond(request)
        except ConnectionDropped:
            attempt["outcome"] = "dropped"
            raise
        attempt["status"] = response.status
        if throttled:
            attempt["outcome"] = "throttled"
        elif response.status >= 400:
            attempt["outcome"] = "error"
        elif bad_answer:
            attempt["outcome"] = "bad answer"
        else:
            attempt["outcome"] = "created"
        return response

    async def _answer_create(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        self._check_rate_limit()
        fault = self._take_fault("interactions")
        if fault is not None and not fault.after_create and fault.status >= 400:
            await self._raise_fault(fault)
        form = await read_form(request)
        channel, routing = validate_create_interaction(form)
        if fault is not None:
            resource = None
            if fault.after_create:
                record, task = self._record_interaction(form, channel, routing)
                resource = interaction_resource(record, task, origin(request))
            await self._raise_fault(fault, resource)
        await self._wait(self.latency)
        record, task = self._record_interaction(form, channel, routing)
        log.info("flex simulator: created interaction %s (%s)", record["sid"], channel["type"])
        return web.json_response(interaction_resource(record, task, origin(request)))

    def _record_interaction(
        self, form: Mapping[str, str], channel: dict[str, Any], routing: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        now = time.time()
        media_channel_sid = channel.get("properties", {}).get("media_channel_sid")
        record = {
            "sid": new_sid("KD"),
            "channel_sid": new_sid("UO"),
            "channel": channel,
            "routing": routing,
            "conversation_sid": media_channel_sid or new_sid("CH"),
            "interaction_context_sid": form.get("InteractionContextSid"),
            "webhook_ttid": form.get("WebhookTtid"),
            "received_at": now,
        }
        routing_properties = routing.get("properties", {})
        task = {
            "sid": new_sid("WT"),
            "interaction_sid": record["sid"],
            "account_sid": self.account_sid,
            "workspace_sid": routing_properties.get("workspace_sid"),
            "workflow_sid": routing_properties.get("workflow_sid"),
            "task_channel_unique_name": routing_properties.get("task_channel_unique_name"),
            "assignment_status": "pending",
            "attributes": interaction_attributes(record),
            "created_at": now,
            "visible_at": now + self.task_visible_after,
        }
        record["task_sid"] = task["sid"]
        with self._lock:
            self.interactions.append(record)
            self.tasks.append(task)
        return record, task

    def _check_rate_limit(self) -> None:
        with self._lock:
            limit, window = self.rate_limit, self._window
            if limit is None or window is None or window.admit():
                return
        log.info("flex simulator: create over the %g/s rate limit, answering 429", limit.rps)
        raise limit.error()

    def _find_interaction(self, request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
        self._authenticate(request)
        sid = request.match_info["sid"]
        with self._lock:
            record = next((r for r in self.interactions if r["sid"] == sid), None)
            if record is None:
                raise not_found(request.path)
            task = next(t for t in self.tasks if t["sid"] == record["task_sid"])
        return record, task

    async def _fetch_interaction(self, request: web.Request) -> web.Response:
        record, task = self._find_interaction(request)
        return web.json_response(interaction_resource(record, task, origin(request)))

    async def _list_channels(self, request: web.Request) -> web.Response:
        record, _ = self._find_interaction(request)
        channels = [channel_resource(record, origin(request))]
        return web.json_response(list_envelope(request.url, "channels", channels, request.query))

    # --- Conversations users ---

    async def _fetch_user(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        fault = self._take_fault("users")
        if fault is not None:
            await self._raise_fault(fault)
        key = request.match_info["sid"]
        with self._lock:
            found = [
                (name, user) for name, user in self.users.items() if key in (name, user["sid"])
            ]
        if not found:
            raise not_found(request.path)
        identity, user = found[0]
        return web.json_response(user_resource(identity, user, self.account_sid, origin(request)))

    # --- TaskRouter tasks ---

    async def _list_tasks(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        fault = self._take_fault("tasks")
        if fault is not None:
            await self._raise_fault(fault)
        workspace_sid = request.match_info["workspace_sid"]
        if not is_sid(workspace_sid, "WS"):
            raise not_found(request.path)
        statuses = assignment_status_filter(request.query.getall("AssignmentStatus", []))
        expression = request.query.get("EvaluateTaskAttributes")
        condition = parse_task_expression(expression) if expression else None
        now = time.time()
        with self._lock:
            tasks = [
                task
                for task in self.tasks
                if task["workspace_sid"] == workspace_sid
                and task["visible_at"] <= now
                and (not statuses or task["assignment_status"] in statuses)
                and (condition is None or attribute_equals(task["attributes"], *condition))
            ]
        resources = [task_resource(task, origin(request), now) for task in tasks]
        return web.json_response(list_envelope(request.url, "tasks", resources, request.query))

    # --- /__sim control routes (no auth) ---

    def add_fault(self, options: Mapping[str, Any]) -> int:
        """`fail_next` from the options of `POST /__sim/faults` (or `flex-handover
        simulator --fault`); ValueError saying what is wrong. How many were queued."""
        unknown = set(options) - FAULT_OPTIONS
        if unknown:
            raise ValueError(f"Unknown fault options: {', '.join(sorted(unknown))}")
        try:
            self.fail_next(**options)
        except TypeError as error:
            raise ValueError(str(error)) from None
        return options.get("count", 1)

    async def _control_add_fault(self, request: web.Request) -> web.Response:
        """Queue a fault for the next requests to a route (options below)."""
        options = await read_json_object(request)
        try:
            queued = self.add_fault(options)
        except ValueError as error:
            raise bad_request(str(error)) from None
        return web.json_response({"queued": queued})

    async def _control_interactions(self, request: web.Request) -> web.Response:
        """The Interactions created so far, as recorded."""
        with self._lock:
            return web.json_response(list(self.interactions))

    async def _control_requests(self, request: web.Request) -> web.Response:
        """Every create attempt: status answered and outcome."""
        with self._lock:
            return web.json_response(list(self.requests))

    async def _control_reset(self, request: web.Request) -> web.Response:
        """Forget records, users and queued faults (rate limit and latency stay)."""
        self.reset()
        return web.json_response({"reset": True})

    async def _control_latency(self, request: web.Request) -> web.Response:
        """`{"seconds": S}`: every successful create answers S seconds late."""
        seconds = (await read_json_object(request)).get("seconds")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
            raise bad_request('Body must be {"seconds": <number >= 0>}')
        self.latency = float(seconds)
        return web.json_response({"seconds": self.latency})

    async def _control_rate_limit(self, request: web.Request) -> web.Response:
        """Answer creates above a rate with 429 (options below; rps 0 turns it off)."""
        options = await read_json_object(request)
        unknown = set(options) - RATE_LIMIT_OPTIONS
        if unknown:
            raise bad_request(f"Unknown rate limit options: {', '.join(sorted(unknown))}")
        rps = options.pop("rps", None)
        if isinstance(rps, bool) or not isinstance(rps, (int, float)) or rps < 0:
            raise bad_request('Body must be {"rps": <number >= 0>, ...}')
        try:
            self.set_rate_limit(rps, **options)
        except (TypeError, ValueError) as error:
            raise bad_request(str(error)) from None
        limit = self.rate_limit
        if limit is None:
            return web.json_response({"rps": 0})
        return web.json_response(
            {"rps": limit.rps, "retry_after": limit.retry_after, "code": limit.code}
        )


# --- request helpers ---------------------------------------------------------------


def origin(request: web.Request) -> str:
    """Scheme and host the client used, so resource URLs point back here."""
    return f"{request.scheme}://{request.host}"


async def read_form(request: web.Request) -> Mapping[str, str]:
    """The form body; any other content type is a Twilio 400."""
    if request.content_type != FORM_CONTENT_TYPE:
        raise bad_request(f"Content-Type must be {FORM_CONTENT_TYPE}")
    form = await request.post()
    return {name: value for name, value in form.items() if isinstance(value, str)}


async def read_json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("Body must be JSON") from None
    return require_object(body, "Body")


# --- help for `flex-handover simulator` ----------------------------------------------
# Generated from the simulator itself: every /__sim route the app serves (with
# its handler's docstring), every option of Fault / fail_next and of RateLimit,
# each with its default. A new route or option shows up by itself; the lines
# below only add a description.

FAULT_HELP: dict[str, str] = {
    "status": "HTTP status to answer, 200-599 (a 2xx/3xx needs body or after_create)",
    "count": "how many of the next requests to the route get it",
    "code": "Twilio error code in the body (default from status: 429 -> 20429, "
    "5xx -> 20500, 400 -> 20001, 401 -> 20003)",
    "message": "error message in the body",
    "retry_after": "Retry-After header on the error: seconds or an HTTP date",
    "hang": "wait this many seconds before answering",
    "reset": "close the connection without answering",
    "after_create": "create the Interaction first, then answer with the fault "
    "(the create succeeded, the answer is lost)",
    "body": "raw text answered instead of the JSON body (HTML, null, [], a sid that "
    "is no SID)",
    "pad": "this many extra bytes, streamed without a Content-Length (a huge answer)",
    "headers": "response headers to add or replace, as a JSON object of strings",
    "route": f"which requests: {', '.join(FAULT_ROUTES)} (POST /v1/Interactions, "
    "GET /v1/Users/…, GET /v1/Workspaces/{WS}/Tasks)",
}
RATE_LIMIT_HELP: dict[str, str] = {
    "rps": "accepted creates per second (a sliding 1 s window); 0 turns the limit off",
    "retry_after": "Retry-After header on the 429: seconds or an HTTP date (none by default)",
    "code": f"Twilio error code of the 429: {' or '.join(map(str, RATE_LIMIT_CODES))}",
}
_OPTION_COLUMN = 26
_HELP_WIDTH = 79


def fault_options() -> list[tuple[str, Any]]:
    """(name, default) of each `POST /__sim/faults` option, in `fail_next`'s order."""
    parameters = inspect.signature(FlexSimulator.fail_next).parameters
    defaults = {field.name: field.default for field in fields(Fault)}
    defaults.update(
        (name, parameter.default)
        for name, parameter in parameters.items()
        if name != "self" and parameter.default is not inspect.Parameter.empty
    )
    order = [name for name in parameters if name in FAULT_OPTIONS]
    order += sorted(FAULT_OPTIONS - set(order))
    return [(name, defaults.get(name)) for name in order]


def rate_limit_options() -> list[tuple[str, Any]]:
    """(name, default) of each `PUT /__sim/rate_limit` option."""
    return [("rps", None)] + [
        (field.name, field.default) for field in fields(RateLimit) if field.name != "rps"
    ]


def control_routes() -> list[tuple[str, str, str]]:
    """(method, path, what it does) of every /__sim route the simulator serves."""
    routes = []
    for route in FlexSimulator().app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/__sim/") and route.method != "HEAD":
            doc = inspect.getdoc(route.handler) or ""
            routes.append((route.method, path, doc.split("\n\n")[0].replace("\n", " ")))
    return routes


def control_help() -> str:
    """The fault controls, for `flex-handover simulator --help`."""
    lines = ["fault controls (HTTP on the simulator's own port, no authentication):"]
    options = {"/__sim/faults": (fault_options(), FAULT_HELP)}
    options["/__sim/rate_limit"] = (rate_limit_options(), RATE_LIMIT_HELP)
    for method, path, doc in control_routes():
        lines.append(_help_row(f"  {method} {path}", doc))
        if path in options:
            described, texts = options[path]
            lines.append("      JSON options, name=default:")
            for name, default in described:
                shown = name if default is None else f"{name}={_json_or_repr(default)}"
                lines.append(_help_row(f"        {shown}", texts.get(name, "")))
    lines += [
        "",
        "examples:",
        "  curl -X POST localhost:8081/__sim/faults -d '{\"status\": 503, \"count\": 2}'",
        "  curl -X POST localhost:8081/__sim/faults -d '{\"status\":429,\"retry_after\":3}'",
        "  curl -X PUT localhost:8081/__sim/rate_limit -d '{\"rps\": 5}'",
        "  flex-handover simulator --fault '{\"status\": 503, \"count\": 2}'  # at start-up",
    ]
    return "\n".join(lines)


def _json_or_repr(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _help_row(left: str, text: str) -> str:
    """`left`, then `text` wrapped in a column of its own (as argparse lays out options)."""
    if not text:
        return left
    indent = " " * _OPTION_COLUMN
    wrapped = textwrap.wrap(text, _HELP_WIDTH - _OPTION_COLUMN)
    first = left.ljust(_OPTION_COLUMN) + wrapped[0]
    if len(left) >= _OPTION_COLUMN - 1:
        first = f"{left}\n{indent}{wrapped[0]}"
    return "\n".join([first, *(indent + line for line in wrapped[1:])])


# --- blocking entry point ------------------------------------------------------------


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
    asyncio.run(
        _serve_until_stopped(host, port, on_ready or _print_url, faults, simulator_options)
    )


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

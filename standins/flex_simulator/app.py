"""The simulator's HTTP face: the aiohttp routes twilio-python calls and the
`/__sim` control routes, serving from `SimulatorState`. Everything that reads a
request or writes an answer is here (authentication from headers, form and JSON
bodies, faults streamed, hung or dropped), so the other modules stay pure."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn

from aiohttp import web

from shared.sids import is_sid
from standins.flex_simulator.auth import credentials_match, parse_basic_auth
from standins.flex_simulator.errors import (
    TwilioError,
    bad_request,
    error_body,
    not_found,
    unauthorized,
)
from standins.flex_simulator.faults import Fault
from standins.flex_simulator.rate_limit import RATE_LIMIT_OPTIONS, RateLimited
from standins.flex_simulator.resources import (
    channel_resource,
    interaction_resource,
    list_envelope,
    task_resource,
    user_resource,
)
from standins.flex_simulator.spec_checks import (
    FETCH_CHANNEL_PATH_PARAMS,
    FORM_CONTENT_TYPE,
    assignment_status_filter,
    parse_task_expression,
    require_object,
    valid_path_params,
    validate_create_interaction,
)
from standins.flex_simulator.state import SimulatorState

log = logging.getLogger(f"flex_handover.{__name__}")

FAULT_CHUNK_BYTES = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionDropped(Exception):
    """Raised by a handler to close the connection without answering."""


class InjectedAnswer(Exception):
    """Raised by a handler to answer with a fault's own response."""

    def __init__(self, fault: Fault, resource: Mapping[str, Any] | None = None):
        super().__init__(fault.kind)
        self.fault = fault
        self.resource = resource

    async def respond(self, request: web.Request) -> web.StreamResponse:
        return await answer_fault(self.fault, request, self.resource)


def error_response(error: TwilioError) -> web.Response:
    """A TwilioError as Twilio answers it: its status, headers and JSON error body."""
    body = error_body(error.status, error.code, error.message)
    return web.json_response(body, status=error.status, headers=error.headers)


async def answer_fault(
    fault: Fault, request: web.Request, resource: Mapping[str, Any] | None = None
) -> web.StreamResponse:
    """The fault's answer. Padding is streamed in chunks without a
    Content-Length, so a client must stop reading by itself."""
    before, after = fault.body_parts(resource)
    if not fault.pad:
        return web.Response(status=fault.status, body=before, headers=fault.response_headers())
    response = web.StreamResponse(status=fault.status, headers=fault.response_headers())
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        await response.write(before)
        left = fault.pad
        while left > 0:
            size = min(left, FAULT_CHUNK_BYTES)
            await response.write(fault.filler * size)
            left -= size
        await response.write(after)
        await response.write_eof()
    except ConnectionError:  # the client stopped reading: what a bounded reader does
        pass
    return response


class FlexSimulator(SimulatorState):
    """Fake Flex, Conversations (users) and TaskRouter (tasks) APIs with fault injection.

    Takes the settings of `SimulatorState` (credentials, latency, rate limit) and
    keeps its records; `start()` serves them on loopback.
    """

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        self._stopping = asyncio.Event()  # set by stop(); wakes hanging requests
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None
        self.app = self._build_app()

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
        app.router.add_get("/v1/Interactions/{sid}/Channels/{channel_sid}", self._fetch_channel)
        app.router.add_get("/v1/Users/{sid}", self._fetch_user)
        app.router.add_get("/v1/Workspaces/{workspace_sid}/Tasks", self._list_tasks)
        app.router.add_post("/__sim/faults", self._control_add_fault)
        app.router.add_post("/__sim/channels", self._control_add_channels)
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
            self._record_path(request.method, request.raw_path)
        try:
            return await handler(request)
        except TwilioError as error:
            return error_response(error)
        except InjectedAnswer as injected:
            return await injected.respond(request)
        except web.HTTPNotFound:
            return error_response(not_found(request.path))
        except web.HTTPMethodNotAllowed:
            return error_response(TwilioError(405, 20004, "Method not allowed"))
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
        attempt = self._record_attempt(request.method, request.path)
        throttled = bad_answer = False
        response: web.StreamResponse
        try:
            response = await self._answer_create(request)
        except TwilioError as error:
            response = error_response(error)
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

    def _find_interaction(self, request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
        self._authenticate(request)
        found = self._interaction(request.match_info["sid"])
        if found is None:
            raise not_found(request.path)
        return found

    async def _fetch_interaction(self, request: web.Request) -> web.Response:
        record, task = self._find_interaction(request)
        return web.json_response(interaction_resource(record, task, origin(request)))

    async def _list_channels(self, request: web.Request) -> web.Response:
        record, _ = self._find_interaction(request)
        status, error = self._read_channel(record, count=False)
        channels = [channel_resource(record, origin(request), status, error)]
        return web.json_response(list_envelope(request.url, "channels", channels, request.query))

    async def _fetch_channel(self, request: web.Request) -> web.StreamResponse:
        """FetchInteractionChannel: path parameters as the spec's patterns, then
        faults on the `channels` route, then the channel's next planned status."""
        self._authenticate(request)
        path = {
            "InteractionSid": request.match_info["sid"],
            "Sid": request.match_info["channel_sid"],
        }
        if not valid_path_params(path, FETCH_CHANNEL_PATH_PARAMS):
            raise not_found(request.path)
        fault = self._take_fault("channels")
        if fault is not None:
            await self._raise_fault(fault)
        found = self._interaction(path["InteractionSid"])
        if found is None or found[0]["channel_sid"] != path["Sid"]:
            raise not_found(request.path)
        record = found[0]
        status, error = self._read_channel(record)
        return web.json_response(channel_resource(record, origin(request), status, error))

    # --- Conversations users ---

    async def _fetch_user(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        fault = self._take_fault("users")
        if fault is not None:
            await self._raise_fault(fault)
        found = self._user(request.match_info["sid"])
        if found is None:
            raise not_found(request.path)
        identity, user = found
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
        tasks = self._visible_tasks(workspace_sid, statuses, condition, now)
        resources = [task_resource(task, origin(request), now) for task in tasks]
        return web.json_response(list_envelope(request.url, "tasks", resources, request.query))

    # --- /__sim control routes (no auth); help_text.py shows each docstring's first line ---

    async def _control_add_fault(self, request: web.Request) -> web.Response:
        """Queue a fault for the next requests to a route (options below)."""
        options = await read_json_object(request)
        try:
            queued = self.add_fault(options)
        except ValueError as error:
            raise bad_request(str(error)) from None
        return web.json_response({"queued": queued})

    async def _control_add_channels(self, request: web.Request) -> web.Response:
        """Plan the channels of the next created Interactions: what each read
        shows, e.g. setup then failed (options below)."""
        options = await read_json_object(request)
        try:
            queued = self.add_channels(options)
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

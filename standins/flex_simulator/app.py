"""The simulator's HTTP face: the aiohttp routes twilio-python calls and the
`/__sim` control routes, serving from `SimulatorState`. Everything that reads a
request or writes an answer is here (authentication from headers, form and JSON
bodies, faults streamed, hung or dropped, TaskRouter events POSTed to a
loopback callback), so the other modules stay pure."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn

import aiohttp
from aiohttp import web

from shared.sids import is_sid
from standins.flex_simulator.auth import credentials_match, parse_basic_auth
from standins.flex_simulator.conversation_checks import (
    LIST_MESSAGES_PARAMS,
    LIST_WEBHOOKS_PARAMS,
    WEBHOOK_SID,
    validate_create_message,
    validate_create_webhook,
    validate_list,
    validate_update_conversation,
)
from standins.flex_simulator.conversations import (
    Record,
    add_message,
    add_webhook,
    apply_update,
    find_webhook,
    ordered_messages,
    remove_webhook,
)
from standins.flex_simulator.errors import (
    TwilioError,
    bad_request,
    error_body,
    not_found,
    unauthorized,
)
from standins.flex_simulator.events import (
    BODY_SHOWN_BYTES,
    DELIVERY_TIMEOUT_SECONDS,
    event_params,
    parse_event_request,
    signature_header,
)
from standins.flex_simulator.faults import Fault
from standins.flex_simulator.rate_limit import RATE_LIMIT_OPTIONS, RateLimited
from standins.flex_simulator.resources import (
    channel_resource,
    conversation_resource,
    interaction_resource,
    list_envelope,
    message_resource,
    new_sid,
    task_channel_resource,
    task_resource,
    user_resource,
    webhook_resource,
    workflow_resource,
    workspace_resource,
)
from standins.flex_simulator.spec_checks import (
    FETCH_CHANNEL_PATH_PARAMS,
    FETCH_TASK_CHANNEL_PATH_PARAMS,
    FETCH_WORKFLOW_PATH_PARAMS,
    FETCH_WORKSPACE_PATH_PARAMS,
    FORM_CONTENT_TYPE,
    LIST_CONVERSATIONS_PARAMS,
    LIST_WORKSPACES_PARAMS,
    assignment_status_filter,
    check_params,
    parse_task_expression,
    require_object,
    valid_path_params,
    validate_create_interaction,
)
from standins.flex_simulator.state import SimulatorState
from standins.flex_simulator.voice import DELIVERY_TIMEOUT_SECONDS as VOICE_TIMEOUT_SECONDS
from standins.flex_simulator.voice import (
    MAX_ANSWER_BYTES,
    action_params,
    parse_voice_request,
)

log = logging.getLogger(f"flex_handover.{__name__}")

FAULT_CHUNK_BYTES = 64 * 1024
WEBHOOK_ENABLED = "X-Twilio-Webhook-Enabled"
# The request's record in api_requests; set on a request closed unanswered.
REQUEST_RECORD = web.RequestKey("flex_simulator.request_record", dict[str, Any])
DROPPED = web.RequestKey("flex_simulator.dropped", bool)
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
    """Fake Flex, Conversations (users, Conversations, their webhooks and messages)
    and TaskRouter (tasks, workspace events) APIs with fault injection.

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
        app.router.add_get("/v1/Workspaces", self._list_workspaces)
        app.router.add_get("/v1/Workspaces/{sid}", self._fetch_workspace)
        workspace = "/v1/Workspaces/{workspace_sid}"
        app.router.add_get(f"{workspace}/Workflows/{{sid}}", self._fetch_workflow)
        app.router.add_get(f"{workspace}/TaskChannels/{{sid}}", self._fetch_task_channel)
        app.router.add_get("/v1/Conversations", self._list_conversations)
        conversation = "/v1/Conversations/{sid}"
        app.router.add_get(conversation, self._fetch_conversation)
        app.router.add_post(conversation, self._update_conversation)
        app.router.add_get(f"{conversation}/Webhooks", self._list_webhooks)
        app.router.add_post(f"{conversation}/Webhooks", self._create_webhook)
        app.router.add_get(f"{conversation}/Webhooks/{{webhook_sid}}", self._fetch_webhook)
        app.router.add_delete(f"{conversation}/Webhooks/{{webhook_sid}}", self._delete_webhook)
        app.router.add_get(f"{conversation}/Messages", self._list_messages)
        app.router.add_post(f"{conversation}/Messages", self._create_message)
        app.router.add_post("/__sim/faults", self._control_add_fault)
        app.router.add_post("/__sim/channels", self._control_add_channels)
        app.router.add_get("/__sim/interactions", self._control_interactions)
        app.router.add_get("/__sim/requests", self._control_requests)
        app.router.add_post("/__sim/reset", self._control_reset)
        app.router.add_put("/__sim/latency", self._control_latency)
        app.router.add_put("/__sim/rate_limit", self._control_rate_limit)
        app.router.add_get("/__sim/conversations/{sid}", self._control_conversation)
        app.router.add_post("/__sim/conversations/{sid}", self._control_seed_conversation)
        app.router.add_post("/__sim/tasks/{task_sid}/events", self._control_task_event)
        app.router.add_put("/__sim/event_callback", self._control_event_callback)
        app.router.add_post("/__sim/voice/handoff", self._control_voice_handoff)
        return app

    @web.middleware
    async def _twilio_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Records each request to a Twilio API (`paths`, `api_requests`), then
        turns TwilioError and aiohttp's own 404/405 into Twilio error bodies."""
        if request.path.startswith("/__sim/"):
            return await self._answer(request, handler)
        self._record_path(request.method, request.raw_path)
        try:
            pairs = [*request.query.items(), *(await form_pairs(request))]
        except web.HTTPRequestEntityTooLarge:
            pairs = None
        record = self._record_request(
            request.method, request.path, grouped(pairs or []), request.headers.get(WEBHOOK_ENABLED)
        )
        request[REQUEST_RECORD] = record
        if pairs is None:
            response: web.StreamResponse = error_response(TwilioError(413, None, "Body too large"))
        else:
            response = await self._answer(request, handler)
        if not request.get(DROPPED, False):
            record["status"] = response.status
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
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
            request[DROPPED] = True
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

    async def _early_fault(self, request: web.Request, route: str) -> Fault | None:
        """Authenticate, then take the route's next fault: an error fault answers
        now, before the request is checked; any other is returned for `_act`."""
        self._authenticate(request)
        fault = self._take_fault(route)
        if fault is not None and not fault.after_create and fault.status >= 400:
            await self._raise_fault(fault)
        return fault

    async def _act(self, fault: Fault | None, act: Callable[[], Record]) -> Record:
        """Serve a checked request: `act` (create, update, delete or read, under
        the lock) makes the resource answered. A fault taken by `_early_fault`
        answers instead, after acting when it is `after_create`."""
        if fault is not None:
            await self._raise_fault(fault, act() if fault.after_create else None)
        return act()

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
        attempt = self._record_attempt(request[REQUEST_RECORD])
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

    # --- TaskRouter configuration and the Conversations list (`flex-handover check`) ---

    async def _checked_read(
        self, request: web.Request, route: str | None, path_params: Mapping[str, str]
    ) -> dict[str, str]:
        """Authenticate, take the route's fault, then the path as the spec's patterns
        (404 otherwise): the path parameters by the spec's names."""
        self._authenticate(request)
        fault = self._take_fault(route) if route is not None else None
        if fault is not None:
            await self._raise_fault(fault)
        names = {"WorkspaceSid": "workspace_sid", "Sid": "sid"}
        path = {name: request.match_info[names[name]] for name in path_params}
        if not valid_path_params(path, path_params):
            raise not_found(request.path)
        return path

    async def _list_workspaces(self, request: web.Request) -> web.Response:
        """ListWorkspace: the one workspace of an account that uses Flex. No faults:
        `flex-handover check` reads it to try the credentials alone."""
        await self._checked_read(request, None, {})
        check_params(list(request.query.items()), LIST_WORKSPACES_PARAMS, "query")
        sid = "WS" + "0" * 32
        items = [workspace_resource(sid, self.account_sid, origin(request))]
        return web.json_response(list_envelope(request.url, "workspaces", items, request.query))

    async def _fetch_workspace(self, request: web.Request) -> web.Response:
        path = await self._checked_read(request, "workspaces", FETCH_WORKSPACE_PATH_PARAMS)
        return web.json_response(workspace_resource(path["Sid"], self.account_sid, origin(request)))

    async def _fetch_workflow(self, request: web.Request) -> web.Response:
        path = await self._checked_read(request, "workflows", FETCH_WORKFLOW_PATH_PARAMS)
        resource = workflow_resource(
            path["WorkspaceSid"], path["Sid"], self.account_sid, origin(request)
        )
        return web.json_response(resource)

    async def _fetch_task_channel(self, request: web.Request) -> web.Response:
        path = await self._checked_read(request, "task_channels", FETCH_TASK_CHANNEL_PATH_PARAMS)
        resource = task_channel_resource(
            path["WorkspaceSid"], path["Sid"], self.account_sid, origin(request)
        )
        return web.json_response(resource)

    async def _list_conversations(self, request: web.Request) -> web.Response:
        """ListConversation: an empty page (any CH SID names a Conversation, so
        there is no list of them to give); faults on the `conversations` route."""
        await self._checked_read(request, "conversations", {})
        check_params(list(request.query.items()), LIST_CONVERSATIONS_PARAMS, "query")
        maximum = LIST_CONVERSATIONS_PARAMS["PageSize"].maximum or 1
        return web.json_response(
            list_envelope(request.url, "conversations", [], request.query, maximum)
        )

    # --- Conversations: a Conversation, its scoped webhooks and messages ---

    def _conversation_do(self, request: web.Request, action: Callable[[Record], Record]) -> Record:
        """`action` on the path's Conversation, under the lock (404 unless it exists)."""
        return self._with_conversation(request.match_info["sid"], request.path, action)

    def _conversation_resource(self, conversation: Record, request: web.Request) -> Record:
        return conversation_resource(
            conversation, self.account_sid, self._chat_service_sid, origin(request)
        )

    def _webhook_resource(
        self, webhook: Record, conversation: Record, request: web.Request
    ) -> Record:
        return webhook_resource(webhook, conversation["sid"], self.account_sid, origin(request))

    def _message_resource(
        self, message: Record, conversation: Record, request: web.Request
    ) -> Record:
        return message_resource(message, conversation["sid"], self.account_sid, origin(request))

    async def _fetch_conversation(self, request: web.Request) -> web.Response:
        fault = await self._early_fault(request, "conversations")
        resource = await self._act(
            fault,
            lambda: self._conversation_do(
                request, lambda c: self._conversation_resource(c, request)
            ),
        )
        return web.json_response(resource)

    async def _update_conversation(self, request: web.Request) -> web.Response:
        """UpdateConversation: Attributes and the rest replaced whole, as given."""
        fault = await self._early_fault(request, "conversations")
        params, header = validate_update_conversation(
            await read_form_pairs(request), request.headers.get(WEBHOOK_ENABLED)
        )

        def update(conversation: Record) -> Record:
            apply_update(conversation, params, header, time.time())
            return self._conversation_resource(conversation, request)

        resource = await self._act(fault, lambda: self._conversation_do(request, update))
        return web.json_response(resource)

    async def _list_webhooks(self, request: web.Request) -> web.Response:
        fault = await self._early_fault(request, "webhooks")
        validate_list(list(request.query.items()), LIST_WEBHOOKS_PARAMS)
        maximum = LIST_WEBHOOKS_PARAMS["PageSize"].maximum or 1

        def page(conversation: Record) -> Record:
            items = [
                self._webhook_resource(w, conversation, request) for w in conversation["webhooks"]
            ]
            return list_envelope(request.url, "webhooks", items, request.query, maximum)

        return web.json_response(
            await self._act(fault, lambda: self._conversation_do(request, page))
        )

    async def _create_webhook(self, request: web.Request) -> web.Response:
        fault = await self._early_fault(request, "webhooks")
        params = validate_create_webhook(await read_form_pairs(request))

        def create(conversation: Record) -> Record:
            webhook = add_webhook(conversation, params, time.time())
            return self._webhook_resource(webhook, conversation, request)

        resource = await self._act(fault, lambda: self._conversation_do(request, create))
        return web.json_response(resource, status=201)

    def _webhook_do(
        self, request: web.Request, action: Callable[[Record, Record], Record]
    ) -> Callable[[], Record]:
        """`action(webhook, conversation)` on the path's webhook (404 unless it exists)."""
        webhook_sid = request.match_info["webhook_sid"]
        if not valid_path_params({"Sid": webhook_sid}, {"Sid": WEBHOOK_SID}):
            raise not_found(request.path)

        def on_conversation(conversation: Record) -> Record:
            webhook = find_webhook(conversation, webhook_sid)
            if webhook is None:
                raise not_found(request.path)
            return action(webhook, conversation)

        return lambda: self._conversation_do(request, on_conversation)

    async def _fetch_webhook(self, request: web.Request) -> web.Response:
        fault = await self._early_fault(request, "webhooks")
        act = self._webhook_do(request, lambda w, c: self._webhook_resource(w, c, request))
        return web.json_response(await self._act(fault, act))

    async def _delete_webhook(self, request: web.Request) -> web.Response:
        fault = await self._early_fault(request, "webhooks")

        def delete(webhook: Record, conversation: Record) -> Record:
            remove_webhook(conversation, webhook)
            return {}

        await self._act(fault, self._webhook_do(request, delete))
        return web.Response(status=204)

    async def _list_messages(self, request: web.Request) -> web.Response:
        fault = await self._early_fault(request, "messages")
        query = validate_list(list(request.query.items()), LIST_MESSAGES_PARAMS)
        maximum = LIST_MESSAGES_PARAMS["PageSize"].maximum or 1

        def page(conversation: Record) -> Record:
            messages = ordered_messages(conversation, str(query.get("Order", "asc")))
            items = [self._message_resource(m, conversation, request) for m in messages]
            return list_envelope(request.url, "messages", items, request.query, maximum)

        return web.json_response(
            await self._act(fault, lambda: self._conversation_do(request, page))
        )

    async def _create_message(self, request: web.Request) -> web.Response:
        """CreateConversationMessage: no idempotency key, so a retried post is a second message."""
        fault = await self._early_fault(request, "messages")
        params, header = validate_create_message(
            await read_form_pairs(request), request.headers.get(WEBHOOK_ENABLED)
        )

        def create(conversation: Record) -> Record:
            message = add_message(conversation, params, header, time.time())
            return self._message_resource(message, conversation, request)

        resource = await self._act(fault, lambda: self._conversation_do(request, create))
        return web.json_response(resource, status=201)

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
        """Every request made to a Twilio API, in order: method, path, params,
        webhook_enabled, status answered (null: dropped or unanswered), and a
        create's outcome."""
        with self._lock:
            return web.json_response(list(self.api_requests))

    async def _control_reset(self, request: web.Request) -> web.Response:
        """Forget records, users, Conversations and queued faults (rate limit,
        latency and event callback stay)."""
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

    async def _control_conversation(self, request: web.Request) -> web.Response:
        """A Conversation as the simulator holds it: attributes, state, webhooks,
        messages and how often it was updated."""
        try:
            return web.json_response(self.conversation(request.match_info["sid"]))
        except ValueError as error:
            raise bad_request(str(error)) from None

    async def _control_seed_conversation(self, request: web.Request) -> web.Response:
        """Make a Conversation what the JSON says, replacing what it held (options below)."""
        options = await read_json_object(request)
        try:
            return web.json_response(self.seed_conversation(request.match_info["sid"], **options))
        except ValueError as error:
            raise bad_request(str(error)) from None

    async def _control_event_callback(self, request: web.Request) -> web.Response:
        """`{"url": U}`: where TaskRouter events go when their request names none
        (a loopback URL; null: nowhere)."""
        options = await read_json_object(request)
        url = options.get("url")
        if set(options) != {"url"} or not (url is None or isinstance(url, str)):
            raise bad_request('Body must be {"url": "<loopback URL>" or null}')
        try:
            self.set_event_callback(url)
        except ValueError as error:
            raise bad_request(str(error)) from None
        return web.json_response({"url": self.event_callback_url})

    async def _control_task_event(self, request: web.Request) -> web.Response:
        """Send a TaskRouter workspace event for a task the simulator made (or
        `latest`), signed as Twilio signs it, and move the task's status (options below)."""
        try:
            event = parse_event_request(await read_json_object(request), self.event_callback_url)
        except ValueError as error:
            raise bad_request(str(error)) from None
        if self._auth_token is None:
            raise bad_request(
                "The simulator has no auth token to sign events with: start it with "
                "account_sid and auth_token (flex-handover simulator --account-sid … --auth-token …)"
            )
        found = self._task_event(request.match_info["task_sid"], event.event_type)
        if found is None:
            raise not_found(request.path)
        task, related = found
        params = event_params(
            task, event.event_type, event_sid=new_sid("EV"), reason=event.reason, related=related
        )
        url = str(event.url)  # parse_event_request gives a URL or refuses
        headers = signature_header(self._auth_token, url, params, event.signature)
        deliveries = await deliver_event(url, params, headers, event.repeat)
        statuses = [delivery["status"] for delivery in deliveries]
        self._record_event(
            {
                "task_sid": task["sid"],
                "event_type": event.event_type,
                "sid": params["Sid"],
                "url": url,
                "signature": event.signature,
                "statuses": statuses,
            }
        )
        log.info(
            "flex simulator: sent %s for %s, answered %s", event.event_type, task["sid"], statuses
        )
        return web.json_response(
            {"sid": params["Sid"], "url": url, "params": params, "deliveries": deliveries}
        )

    async def _control_voice_handoff(self, request: web.Request) -> web.StreamResponse:
        """Play Twilio ending a ConversationRelay session: POST the signed
        `<Connect action>` request and answer with what it answered (options below)."""
        try:
            action = parse_voice_request(await read_json_object(request))
        except ValueError as error:
            raise bad_request(str(error)) from None
        if self._auth_token is None:
            raise bad_request(
                "The simulator has no auth token to sign the action request with: start it "
                "with account_sid and auth_token"
            )
        params = action_params(action, self.account_sid, session_id=new_sid("VX"))
        headers = {
            **signature_header(self._auth_token, action.url, params, action.signature),
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        timeout = aiohttp.ClientTimeout(total=VOICE_TIMEOUT_SECONDS)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(action.url, data=params, headers=headers) as answer,
            ):
                body = await read_at_most(answer, MAX_ANSWER_BYTES)
                status, content_type = answer.status, answer.headers.get("Content-Type", "")
        except (aiohttp.ClientError, TimeoutError) as error:
            return web.json_response(
                {"error": f"{type(error).__name__}: {error}", "url": action.url}, status=502
            )
        log.info("flex simulator: voice action for %s answered %s", action.call_sid, status)
        return web.Response(
            status=status,
            body=body,
            headers={"Content-Type": content_type, "X-Sim-Call-Sid": action.call_sid},
        )


# --- TaskRouter event delivery ---------------------------------------------------------


async def deliver_event(
    url: str, params: Mapping[str, str], headers: Mapping[str, str], repeat: int
) -> list[dict[str, Any]]:
    """POST the event `repeat` times, form-encoded as TaskRouter does (one
    idempotency token for all: a repeat is the same event): each delivery's
    status and the first BODY_SHOWN_BYTES of its body, or the error."""
    sent = {
        **headers,
        "User-Agent": "TwilioProxy/1.1",
        "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
    }
    deliveries: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(repeat):
            try:
                async with session.post(
                    url, data=dict(params), headers=sent, allow_redirects=False
                ) as response:
                    body = await read_at_most(response, BODY_SHOWN_BYTES)
                    delivery = {"status": response.status, "body": body.decode("utf-8", "replace")}
            except (aiohttp.ClientError, TimeoutError) as error:
                delivery = {"status": None, "error": f"{type(error).__name__}: {error}"}
            deliveries.append(delivery)
    return deliveries


async def read_at_most(response: aiohttp.ClientResponse, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = await response.content.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


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


async def form_pairs(request: web.Request) -> list[tuple[str, str]]:
    """A form body's (name, value) pairs as sent, repeats kept; [] for any other body."""
    if request.content_type != FORM_CONTENT_TYPE:
        return []
    form = await request.post()
    return [(name, value) for name, value in form.items() if isinstance(value, str)]


async def read_form_pairs(request: web.Request) -> list[tuple[str, str]]:
    """The form body's pairs; any other content type is a Twilio 400."""
    if request.content_type != FORM_CONTENT_TYPE:
        raise bad_request(f"Content-Type must be {FORM_CONTENT_TYPE}")
    return await form_pairs(request)


def grouped(pairs: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    """Parameters as recorded: name -> value, or a list of values when repeated."""
    params: dict[str, str | list[str]] = {}
    for name, value in pairs:
        if name not in params:
            params[name] = value
            continue
        previous = params[name]
        params[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
    return params


async def read_json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("Body must be JSON") from None
    return require_object(body, "Body")

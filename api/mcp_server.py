"""`/mcp`: the handover as a Model Context Protocol server (Streamable HTTP,
stateless, JSON answers), one tool per target (`api.mcp_tools`).

Why this module speaks the HTTP side itself: the `mcp` SDK's Streamable HTTP
server is an ASGI (Starlette) app driven by a session manager with its own task
group and lifespan. Inside aiohttp it would need an ASGI bridge and would answer
outside this app's body limit, authentication middleware and error format. What
it does for a stateless JSON POST is small: check the headers, read the JSON-RPC
message, hand it to the server kernel, write one JSON answer. That much is done
here; each message then goes to the SDK's own kernel: `mcp.server.lowlevel.Server`
run by `mcp.server.runner.serve_one`, the single-exchange driver the SDK's own
2026-07-28 HTTP entry uses. So method dispatch, the params check of each method
at each protocol version, the `initialize` negotiation, `ping`, `server/discover`
and the shape of every result at every version are the SDK's, not a copy. The
envelopes are read and written as `mcp.types` models.

- Versions: the SDK's handshake ones (2024-11-05 to 2025-11-25, negotiated by
  `initialize`) and its per-request one (2026-07-28: every request carries its own
  `_meta` envelope, checked by the SDK's `classify_inbound_request`).
- Stateless, as the SDK's own stateless mode: each POST stands alone, no
  `Mcp-Session-Id`. `initialize` is answered but not required, so a client that
  knows its version (or curl) may send `tools/call` at once. Without an
  `MCP-Protocol-Version` header a request is read as 2025-03-26 (the spec's rule for
  a server that cannot tell); a version we do not speak is a 400 with JSON-RPC error
  -32022 naming those we do.
- Batches (a JSON array) only at 2024-11-05 and 2025-03-26, the versions that have
  them: at most MAX_BATCH messages, `initialize` not among them. Later: -32600.
- JSON answers only, never an SSE stream: `GET /mcp` (a stream for server messages)
  and `DELETE /mcp` (ending a session) answer 405 with `Allow: POST`.
- Refusals of the HTTP request (credentials and `Origin` in `api.auth`, method,
  `Accept`, `Content-Type`, size) are the app's JSON `{"error", "message"}`.
  Protocol problems are JSON-RPC errors: -32700 (not JSON, or deeper than
  `api.parsing` allows), -32600 (not a request), -32601 (unknown method), -32602
  (bad params, unknown tool). At 400 when the message could not be read; once
  dispatched at 200 for the handshake versions (as the SDK's stateless transport
  answers), at the SDK's table status for 2026-07-28 (-32601 → 404, …). A refusal of
  the handover itself is a tool result with `isError` (`api.mcp_tools`).
- No per-request log line, as on the tool endpoint.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

import anyio
import mcp.types as types
from aiohttp import web
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.runner import serve_one
from mcp.shared.dispatcher import CallOptions, as_request_id
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp.shared.message import MessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp.types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    MODERN_PROTOCOL_VERSIONS,
    is_version_at_least,
)
from pydantic import ValidationError
from redis.exceptions import RedisError

from api import mcp_tools, metrics
from api.app_keys import METRICS
from api.auth import MCP_PATH, read_body
from api.errors import (
    ApiError,
    InvalidBody,
    MethodNotAllowed,
    NotAcceptable,
    Unavailable,
    UnsupportedMediaType,
)
from api.handover import hand_over
from api.metrics import ApiMetrics, Outcome
from api.parsing import IDENTITY_HEADER, SESSION_HEADER, handover_request, read_json
from shared.connections import write_refusal
from shared.logging import caller_text
from shared.settings import Settings

logger = logging.getLogger(f"flex_handover.{__name__}")

SERVER_NAME = "flex-handover"
INSTRUCTIONS = (
    "Hands a customer conversation from an AI agent to a human agent in Twilio Flex. "
    "Call a hand_over_to_human tool when the customer asks for a person or you cannot "
    "help, and tell the customer what it answers."
)
SUPPORTED_VERSIONS: tuple[str, ...] = (*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS)
DEFAULT_VERSION = types.DEFAULT_NEGOTIATED_VERSION
"""The version of a request without `MCP-Protocol-Version` (2025-03-26)."""
MAX_BATCH = 32
ALLOW = "POST"
_JSON = "application/json"


def allows_batches(protocol_version: str) -> bool:
    """JSON-RPC batches were part of MCP until 2025-06-18 removed them."""
    return protocol_version in HANDSHAKE_PROTOCOL_VERSIONS and not is_version_at_least(
        protocol_version, "2025-06-18"
    )


def accepts_json(accept: str | None) -> bool:
    """Whether an `Accept` header admits `application/json` (none sent: anything goes)."""
    if accept is None:
        return True
    ranges = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    return bool(ranges & {_JSON, "application/*", "*/*"})


def error(request_id: types.RequestId | None, code: int, message: str) -> types.JSONRPCError:
    return types.JSONRPCError(
        jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message)
    )


def invalid_request(request_id: types.RequestId | None, message: str) -> types.JSONRPCError:
    return error(request_id, types.INVALID_REQUEST, message)


def read_message(
    item: Any, *, responses_allowed: bool
) -> types.JSONRPCRequest | types.JSONRPCError | None:
    """One decoded JSON-RPC message: a request to dispatch, None for what is only
    acknowledged (a notification; a response, where one may be posted), or the
    -32600 error an invalid message gets."""
    if not isinstance(item, dict):
        return invalid_request(None, "A JSON-RPC message must be a JSON object.")
    request_id = as_request_id(item.get("id"))
    try:
        if "method" not in item and responses_allowed:
            types.jsonrpc_message_adapter.validate_python(item)  # a response or an error
            return None
        if "id" not in item:  # JSON-RPC: a request without an id is a notification
            types.JSONRPCNotification.model_validate(item)
            return None
        return types.JSONRPCRequest.model_validate(item)
    except ValidationError:
        return invalid_request(
            request_id,
            'Not a JSON-RPC 2.0 request: it needs "jsonrpc": "2.0", a "method" string, '
            'an "id" that is a string or an integer, and "params" as an object if any.',
        )


def dump(message: types.JSONRPCResponse | types.JSONRPCError) -> dict[str, Any]:
    body = message.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["id"] = message.id  # JSON-RPC: an error whose request id is unknown says `null`
    return body


@dataclass
class _Exchange:
    """The SDK's `DispatchContext` for one message answered in one JSON body: no way
    back to the client (no server requests, notifications are dropped)."""

    request_id: types.RequestId
    transport: TransportContext = field(
        default_factory=lambda: TransportContext(kind="streamable-http", can_send_request=False)
    )
    message_metadata: MessageMetadata = None
    cancel_requested: anyio.Event = field(default_factory=anyio.Event)
    can_send_request: bool = False

    async def send_raw_request(
        self, method: str, params: Any, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(self, method: str, params: Any, opts: CallOptions | None = None) -> None:
        return None

    async def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        return None


class McpEndpoint:
    """The tools of this deployment's targets, served by the SDK's server kernel."""

    def __init__(self, settings: Settings):
        self.max_body_bytes = settings.max_body_bytes
        self.tools = mcp_tools.tools(settings.targets)
        self.targets = mcp_tools.tool_targets(settings.targets)
        self.server: Server[web.Application] = Server(
            SERVER_NAME,
            version=_package_version(),
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )
        # The SDK's default middleware opens an OpenTelemetry span per message;
        # nothing here exports traces.
        self.server.middleware.clear()

    # --- HTTP ----------------------------------------------------------------------

    async def post(self, request: web.Request) -> web.Response:
        """POST /mcp: one JSON-RPC message (or, where the version has them, a batch)."""
        if not accepts_json(request.headers.get("Accept")):
            raise NotAcceptable("The MCP endpoint answers application/json; accept it.")
        content_type = request.headers.get("Content-Type", "")
        if request.content_type != _JSON or not content_type:
            raise UnsupportedMediaType(
                request.content_type if content_type else "",
                "a JSON-RPC message as application/json",
            )
        body = await read_body(request, self.max_body_bytes)
        # The host application may pin the conversation and the customer as the
        # tool endpoint's headers do: then a model cannot name another one.
        _pinned.set(
            {
                name: value.strip()
                for name in (SESSION_HEADER, IDENTITY_HEADER)
                if (value := request.headers.get(name, "")).strip()
            }
        )
        try:
            decoded = read_json(body)
        except InvalidBody as exc:
            return _answer(error(None, types.PARSE_ERROR, exc.message), 400)
        requested = request.headers.get(MCP_PROTOCOL_VERSION_HEADER)
        if requested is not None and requested not in SUPPORTED_VERSIONS:
            rejection = types.UnsupportedProtocolVersionErrorData(
                supported=list(SUPPORTED_VERSIONS), requested=requested[:64]
            )
            unsupported = types.JSONRPCError(
                jsonrpc="2.0",
                id=_id_of(decoded),
                error=types.ErrorData(
                    code=types.UNSUPPORTED_PROTOCOL_VERSION,
                    message=f"MCP protocol version {caller_text(requested, 40)!r} is not "
                    f"supported; this server speaks {', '.join(SUPPORTED_VERSIONS)}.",
                    data=rejection.model_dump(mode="json"),
                ),
            )
            return _answer(unsupported, 400)
        if requested in MODERN_PROTOCOL_VERSIONS:
            return await self._modern(request, decoded)
        return await self._handshake(request.app, requested or DEFAULT_VERSION, decoded)

    async def not_allowed(self, request: web.Request) -> NoReturn:
        """GET /mcp and DELETE /mcp: no SSE stream to open, no session to end."""
        raise MethodNotAllowed(request.method, MCP_PATH, ALLOW)

    async def _handshake(
        self, app: web.Application, protocol_version: str, decoded: Any
    ) -> web.Response:
        """A message of a handshake version: the connection is born ready at the
        version the header names, as in the SDK's stateless mode."""
        if isinstance(decoded, list):
            return await self._batch(app, protocol_version, decoded)
        message = read_message(decoded, responses_allowed=True)
        if message is None:
            return web.Response(status=202)
        if isinstance(message, types.JSONRPCError):
            return _answer(message, 400)
        return _answer(await self._dispatch(app, protocol_version, message), 200)

    async def _batch(
        self, app: web.Application, protocol_version: str, batch: list[Any]
    ) -> web.Response:
        if not allows_batches(protocol_version):
            refusal = f"MCP {protocol_version} has no batches: send one message per request."
            return _answer(invalid_request(None, refusal), 400)
        if not batch or len(batch) > MAX_BATCH:
            refusal = f"A batch holds 1 to {MAX_BATCH} messages."
            return _answer(invalid_request(None, refusal), 400)
        answers: list[dict[str, Any]] = []
        for item in batch:  # in order, one at a time: a batch costs what its calls cost
            message = read_message(item, responses_allowed=True)
            if message is None:
                continue
            if not isinstance(message, types.JSONRPCRequest):
                answers.append(dump(message))
            elif message.method == "initialize":
                refusal = "initialize must not be part of a batch."
                answers.append(dump(invalid_request(message.id, refusal)))
            else:
                answers.append(dump(await self._dispatch(app, protocol_version, message)))
        if not answers:
            return web.Response(status=202)
        return web.json_response(answers)

    async def _modern(self, request: web.Request, decoded: Any) -> web.Response:
        """A 2026-07-28 request: one message, its envelope checked as the SDK's own
        HTTP entry checks it (headers matching the body included)."""
        if isinstance(decoded, list):
            return _answer(invalid_request(None, "Send one JSON-RPC message, not a batch."), 400)
        message = read_message(decoded, responses_allowed=False)
        if message is None:
            return web.Response(status=202)
        if isinstance(message, types.JSONRPCError):
            return _answer(message, 400)
        duplicated = find_duplicated_routing_header(request.headers.items())
        headers = {name.lower(): value for name, value in request.headers.items()}
        verdict = (
            InboundLadderRejection(
                code=types.HEADER_MISMATCH, message=f"{duplicated} header appears more than once"
            )
            if duplicated is not None
            else classify_inbound_request(decoded, headers=headers)
        )
        if isinstance(verdict, InboundLadderRejection):
            rejection = types.JSONRPCError(
                jsonrpc="2.0",
                id=message.id,
                error=types.ErrorData(
                    code=verdict.code, message=verdict.message, data=verdict.data
                ),
            )
            return _answer(rejection, ERROR_CODE_HTTP_STATUS.get(verdict.code, 400))
        connection = Connection.from_envelope(
            verdict.protocol_version, verdict.client_info, verdict.client_capabilities
        )
        answer = await self._dispatch(request.app, verdict.protocol_version, message, connection)
        status = (
            ERROR_CODE_HTTP_STATUS.get(answer.error.code, 200)
            if isinstance(answer, types.JSONRPCError)
            else 200
        )
        return _answer(answer, status)

    # --- the server kernel ------------------------------------------------------------

    async def _dispatch(
        self,
        app: web.Application,
        protocol_version: str,
        message: types.JSONRPCRequest,
        connection: Connection | None = None,
    ) -> types.JSONRPCResponse | types.JSONRPCError:
        """The SDK's kernel answers one request (`serve_one`); its exceptions become
        the JSON-RPC error the SDK would send."""
        if connection is None:
            connection = Connection.from_envelope(protocol_version, None, None)
        try:
            result = await serve_one(
                self.server,
                _Exchange(message.id),
                message.method,
                message.params,
                connection=connection,
                lifespan_state=app,
            )
        except Exception as exc:
            known = handler_exception_to_error_data(exc)
            if known is None:
                logger.exception("MCP %s failed", caller_text(message.method, 64))
                known = types.ErrorData(code=types.INTERNAL_ERROR, message="Internal error")
            return types.JSONRPCError(jsonrpc="2.0", id=message.id, error=known)
        return types.JSONRPCResponse(jsonrpc="2.0", id=message.id, result=result)

    async def _list_tools(
        self,
        ctx: ServerRequestContext[web.Application, Any],
        params: types.PaginatedRequestParams | None,
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self.tools)  # one page, whatever the cursor

    async def _call_tool(
        self,
        ctx: ServerRequestContext[web.Application, Any],
        params: types.CallToolRequestParams,
    ) -> types.CallToolResult:
        """The tool endpoint's path: the same parsing, `api.handover.hand_over`, the
        same answer; its refusals as tool errors the model reads."""
        counters = ctx.lifespan_context[METRICS]
        started = time.perf_counter()
        try:
            return await self._hand_over(ctx.lifespan_context, params, counters)
        finally:
            counters.answered(metrics.MCP, time.perf_counter() - started)

    async def _hand_over(
        self, app: web.Application, params: types.CallToolRequestParams, counters: ApiMetrics
    ) -> types.CallToolResult:
        target = self.targets.get(params.name)
        if target is None:
            counters.called(metrics.MCP, Outcome.REFUSED, "unknown_target")
            raise MCPError(
                code=types.INVALID_PARAMS,
                message=f"Unknown tool: {caller_text(params.name, 80)!r}.",
            )
        try:
            handover = handover_request(_pinned.get(), params.arguments or {}, target)
            _status, answer, outcome = await hand_over(app, handover)
        except ApiError as refusal:
            counters.refused(metrics.MCP, refusal)
            return mcp_tools.refusal_result(refusal)
        except (RedisError, OSError) as exc:
            counters.refused(metrics.MCP, exc)
            problem = write_refusal(exc)
            logger.warning(
                "redis %s while serving an MCP tool call",
                f"refuses writes ({problem})" if problem else "unavailable",
            )
            return mcp_tools.refusal_result(Unavailable())
        counters.called(metrics.MCP, outcome)
        return mcp_tools.answer_result(answer)


_pinned: ContextVar[dict[str, str]] = ContextVar("flex_handover_mcp_pinned", default={})  # noqa: B039 - never mutated
"""`X-Session-Id` / `X-Identity` of the HTTP request being served, if it sent them."""


def _id_of(decoded: Any) -> types.RequestId | None:
    return as_request_id(decoded.get("id")) if isinstance(decoded, dict) else None


def _answer(message: types.JSONRPCResponse | types.JSONRPCError, status: int) -> web.Response:
    return web.json_response(dump(message), status=status)


def _package_version() -> str:
    try:
        return version("flex-handover")
    except PackageNotFoundError:  # running from a checkout that was not installed
        return "0.0.0"


def routes(settings: Settings) -> list[web.RouteDef]:
    endpoint = McpEndpoint(settings)
    return [
        web.post(MCP_PATH, endpoint.post),
        web.get(MCP_PATH, endpoint.not_allowed, allow_head=False),
        web.delete(MCP_PATH, endpoint.not_allowed),
    ]

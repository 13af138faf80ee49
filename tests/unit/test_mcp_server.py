"""api.mcp_server's pure parts and its use of the SDK's server kernel, without a
socket or Redis: the versions, batches, `Accept`, reading a JSON-RPC message, the
`Origin` check and `/mcp`'s scope in api.auth, and what the kernel answers for
requests that need no enqueue."""

from __future__ import annotations

import mcp.types as types
import pytest
from aiohttp import web
from mcp.types.version import LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION

from api import mcp_server
from api.app_keys import METRICS
from api.auth import Scope, origin_allowed, scope_of
from api.mcp_server import McpEndpoint, accepts_json, allows_batches, dump, read_message
from api.metrics import NoMetrics
from shared.settings import Settings, SettingsError

WORKFLOW_SID = "WW" + "c3" * 16
ENV = {
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "FLEX_WORKFLOW_SID": WORKFLOW_SID,
    "HANDOVER_TOOL_TOKENS": "unit-tool-token-0123456789",
}


def test_the_versions_are_the_sdks_and_a_request_without_one_is_2025_03_26():
    assert mcp_server.SUPPORTED_VERSIONS == (
        "2024-11-05",
        "2025-03-26",
        "2025-06-18",
        "2025-11-25",
        "2026-07-28",
    )
    assert LATEST_HANDSHAKE_VERSION in mcp_server.SUPPORTED_VERSIONS
    assert LATEST_MODERN_VERSION in mcp_server.SUPPORTED_VERSIONS
    assert mcp_server.DEFAULT_VERSION == "2025-03-26"


@pytest.mark.parametrize(
    ("version", "batches"),
    [
        ("2024-11-05", True),
        ("2025-03-26", True),
        ("2025-06-18", False),
        ("2025-11-25", False),
        ("2026-07-28", False),
        ("1999-01-01", False),
    ],
)
def test_batches_only_where_the_protocol_version_has_them(version, batches):
    assert allows_batches(version) is batches


@pytest.mark.parametrize(
    ("accept", "ok"),
    [
        (None, True),
        ("application/json, text/event-stream", True),
        ("text/event-stream, application/json;q=0.9", True),
        ("*/*", True),
        ("application/*", True),
        ("Application/JSON", True),
        ("text/event-stream", False),
        ("text/html", False),
        ("", False),
    ],
)
def test_accept_must_admit_json(accept, ok):
    assert accepts_json(accept) is ok


REQUEST = {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}


@pytest.mark.parametrize(
    ("item", "responses_allowed", "expected"),
    [
        (REQUEST, True, "request"),
        ({**REQUEST, "id": "seven"}, True, "request"),
        ({"jsonrpc": "2.0", "method": "notifications/initialized"}, True, None),
        ({"jsonrpc": "2.0", "id": 3, "result": {}}, True, None),
        ({"jsonrpc": "2.0", "id": 3, "error": {"code": 1, "message": "x"}}, True, None),
        ({"jsonrpc": "2.0", "id": 3, "result": {}}, False, (-32600, 3)),
        ({**REQUEST, "jsonrpc": "1.0"}, True, (-32600, 7)),
        ({**REQUEST, "id": None}, True, (-32600, None)),
        ({**REQUEST, "id": True}, True, (-32600, None)),  # not the request with id 1
        ({**REQUEST, "id": 1.5}, True, (-32600, None)),
        ({**REQUEST, "params": [1]}, True, (-32600, 7)),
        ({"jsonrpc": "2.0", "id": 4}, True, (-32600, 4)),
        ({"jsonrpc": "2.0", "method": 5}, True, (-32600, None)),
        ([REQUEST], True, (-32600, None)),
        ("tools/list", True, (-32600, None)),
    ],
)
def test_reading_one_message(item, responses_allowed, expected):
    message = read_message(item, responses_allowed=responses_allowed)
    if expected == "request":
        assert isinstance(message, types.JSONRPCRequest)
        assert (message.id, message.method) == (item["id"], "tools/list")
    elif expected is None:
        assert message is None
    else:
        assert isinstance(message, types.JSONRPCError)
        assert (message.error.code, message.id) == expected
        assert message.error.message


def test_an_error_for_an_unknown_request_id_says_null():
    unknown = mcp_server.invalid_request(None, "Not a request.")
    assert dump(unknown) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "Not a request."},
    }


# --- who may call: /mcp in api.auth -------------------------------------------------


def test_mcp_has_its_own_scope():
    assert scope_of("/mcp") is Scope.MCP
    assert scope_of("//mcp", "/mcp") is Scope.MCP
    assert scope_of("/mcpx") is Scope.OPEN
    assert scope_of("/tools/flex-handover") is Scope.TOOL


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser
        ("http://localhost:6274", True),  # an inspector on this machine
        ("http://127.0.0.1:8080", True),
        ("https://[::1]:3000", True),
        ("http://localhost", True),
        ("HTTP://LOCALHOST:6274/", True),
        ("https://app.example.com", True),  # configured
        ("https://app.example.com:8443", False),  # another origin
        ("https://evil.example", False),
        ("http://localhost.evil.example", False),
        ("http://127.0.0.1.nip.io", False),
        ("null", False),
        ("file://", False),
        ("http://localhost:99999", False),
        ("http://localhost/path", False),
        ("", False),
    ],
)
def test_only_loopback_and_configured_origins_may_call(origin, allowed):
    assert origin_allowed(origin, ("https://app.example.com",)) is allowed


def test_allowed_origins_are_read_as_a_browser_sends_them():
    settings = Settings.from_env(
        {**ENV, "HANDOVER_MCP_ALLOWED_ORIGINS": " https://App.Example.com/ ,http://[::1]:8080,"},
        role="api",
    )
    assert settings.mcp_allowed_origins == ("https://app.example.com", "http://[::1]:8080")


@pytest.mark.parametrize(
    "value",
    ["app.example.com", "https://app.example.com/mcp", "ftp://x", "https://x:0", "https://u@x"],
)
def test_an_allowed_origin_that_is_not_an_origin_is_refused_at_start_up(value):
    with pytest.raises(SettingsError, match="HANDOVER_MCP_ALLOWED_ORIGINS: each origin must be"):
        Settings.from_env({**ENV, "HANDOVER_MCP_ALLOWED_ORIGINS": value}, role="api")


# --- the SDK's kernel, for what needs no Redis ---------------------------------------


@pytest.fixture
def endpoint() -> McpEndpoint:
    return McpEndpoint(Settings.from_env({**ENV, "HANDOVER_TARGETS": ""}, role="api"))


async def ask(endpoint: McpEndpoint, method: str, params: dict | None = None, version=None):
    request = types.JSONRPCRequest(jsonrpc="2.0", id=1, method=method, params=params)
    app = web.Application()
    app[METRICS] = NoMetrics()  # what the app's start-up puts there
    return await endpoint._dispatch(app, version or LATEST_HANDSHAKE_VERSION, request)


INITIALIZE = {"capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}


@pytest.mark.parametrize(
    ("offered", "negotiated"),
    [
        ("2025-06-18", "2025-06-18"),
        ("2025-03-26", "2025-03-26"),
        ("2025-11-25", "2025-11-25"),
        ("2099-01-01", LATEST_HANDSHAKE_VERSION),  # unknown: the newest we speak
    ],
)
async def test_initialize_negotiates_the_protocol_version(endpoint, offered, negotiated):
    answer = await ask(endpoint, "initialize", {**INITIALIZE, "protocolVersion": offered})
    assert isinstance(answer, types.JSONRPCResponse)
    result = types.InitializeResult.model_validate(answer.result)
    assert result.protocol_version == negotiated
    assert result.server_info.name == "flex-handover"
    assert result.capabilities.tools is not None
    assert "hand_over_to_human" in (result.instructions or "")


async def test_tools_list_lists_the_targets_tools(endpoint):
    answer = await ask(endpoint, "tools/list")
    assert isinstance(answer, types.JSONRPCResponse)
    listed = types.ListToolsResult.model_validate(answer.result)
    assert [tool.name for tool in listed.tools] == ["hand_over_to_human"]
    assert listed.tools[0].input_schema["required"] == ["conversation_sid", "identity"]


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("resources/list", None, -32601),
        ("server/discover", None, -32601),  # a 2026-07-28 method, not at handshake versions
        ("tools/call", {"arguments": {}}, -32602),  # no name
        ("tools/call", {"name": "hand_over_to_human", "arguments": [1]}, -32602),
        ("tools/call", {"name": "hand_over_to_human_billing"}, -32602),  # no such target
    ],
)
async def test_protocol_problems_are_json_rpc_errors(endpoint, method, params, code):
    answer = await ask(endpoint, method, params)
    assert isinstance(answer, types.JSONRPCError)
    assert answer.error.code == code


async def test_ping_is_answered(endpoint):
    answer = await ask(endpoint, "ping")
    assert isinstance(answer, types.JSONRPCResponse) and answer.result == {}


async def test_bad_tool_input_is_a_tool_error_with_the_endpoints_message(endpoint):
    answer = await ask(
        endpoint,
        "tools/call",
        {"name": "hand_over_to_human", "arguments": {"conversation_sid": "CH" + "ab" * 16}},
    )
    assert isinstance(answer, types.JSONRPCResponse)
    result = types.CallToolResult.model_validate(answer.result)
    assert result.is_error is True
    assert result.content[0].text.startswith("No customer identity:")

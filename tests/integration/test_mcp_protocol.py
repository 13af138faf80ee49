"""`/mcp` on the wire, against the real app on loopback with a real Redis: the HTTP
refusals, JSON-RPC errors, batches per protocol version, the `Origin` check, the
stateless `tools/call` a curl line makes, and the tool endpoint's refusals as
tool errors in the endpoint's own words."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.parsing import MAX_NESTING
from shared import redis_keys
from shared.settings import Settings
from standins.redis_server import free_port
from tests.support.service import Service, service_env
from tests.support.values import TOOL_TOKEN, new_conversation_sid, tool_auth

ACCEPT = {"Accept": "application/json, text/event-stream"}
IDENTITY = "whatsapp:+14155550123"
LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
MODERN = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}


def call(arguments: dict[str, Any], name: str = "hand_over_to_human", id_: int = 1) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": id_,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


async def post(
    service: Service,
    body: Any = None,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    version: str | None = None,
    auth: bool = True,
) -> tuple[int, dict[str, str], Any]:
    """POST /mcp: (status, headers, JSON body or None)."""
    sent = {**ACCEPT, **(tool_auth() if auth else {}), **(headers or {})}
    if version is not None:
        sent["MCP-Protocol-Version"] = version
    if data is None:
        data = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    async with service.anonymous.post(service.url + "/mcp", data=data, headers=sent) as response:
        text = await response.text()
        return response.status, dict(response.headers), json.loads(text) if text else None


@pytest.fixture
async def api(start_service) -> Service:
    return await start_service(worker=False)


async def test_tools_call_needs_no_initialize_and_a_repeat_is_the_same_handover(api, redis):
    arguments = {"conversation_sid": new_conversation_sid(1201), "identity": IDENTITY}
    status, headers, first = await post(api, call(arguments), version="2025-11-25")
    assert (status, headers["Content-Type"]) == (200, "application/json; charset=utf-8")
    assert "Mcp-Session-Id" not in headers  # stateless
    assert first["id"] == 1 and first["result"]["isError"] is False
    answer = first["result"]["structuredContent"]
    assert answer["status"] == "queued"
    assert await redis.exists(redis_keys.handover_key(answer["handover_id"]))
    # Without MCP-Protocol-Version (read as 2025-03-26), the same conversation.
    status, _, repeat = await post(api, call(arguments, id_="two"))
    assert (status, repeat["id"]) == (200, "two")
    assert repeat["result"]["structuredContent"]["handover_id"] == answer["handover_id"]


async def test_the_host_can_pin_the_conversation_and_customer_as_on_the_tool_endpoint(api, redis):
    """A prompt-injected model names another conversation: the host application's
    X-Session-Id / X-Identity win, as they do on the tool endpoint."""
    pinned, injected = new_conversation_sid(1301), new_conversation_sid(1302)
    arguments = {"conversation_sid": injected, "identity": "whatsapp:+14155550999"}
    headers = {"X-Session-Id": f"conversations__IS{'0' * 32}/{pinned}", "X-Identity": IDENTITY}
    status, _, answer = await post(api, call(arguments), version="2025-11-25", headers=headers)
    assert status == 200 and answer["result"]["isError"] is False, answer
    handover_id = answer["result"]["structuredContent"]["handover_id"]
    record = await redis.hgetall(redis_keys.handover_key(handover_id))
    assert (record["conversation_sid"], record["identity"]) == (pinned, IDENTITY)
    assert await redis.get(redis_keys.conversation_key(injected)) is None


BAD_ARGUMENTS = [
    {"identity": IDENTITY},
    {"conversation_sid": "CHnope", "identity": IDENTITY},
    {"conversation_sid": 5, "identity": IDENTITY},
    {"conversation_sid": new_conversation_sid(1)},
    {"conversation_sid": new_conversation_sid(1), "identity": "customer-42"},
    {"conversation_sid": new_conversation_sid(1), "identity": "whatsapp:bob"},
    {"conversation_sid": new_conversation_sid(1), "identity": "user_id:FX/../../v2/Users"},
    {"conversation_sid": new_conversation_sid(1), "identity": IDENTITY, "reason": {"a": 1}},
    {"conversation_sid": new_conversation_sid(1), "identity": IDENTITY, "summary": "s" * 8001},
]


@pytest.mark.parametrize("arguments", BAD_ARGUMENTS)
async def test_bad_input_is_a_tool_error_in_the_tool_endpoints_words(api, redis, arguments):
    async with api.http.post(api.url + "/tools/flex-handover", json=arguments) as response:
        assert response.status == 400
        endpoint = await response.json()
    status, _, answer = await post(api, call(arguments))
    assert status == 200
    assert answer["result"] == {
        "content": [{"type": "text", "text": endpoint["message"]}],
        "isError": True,
    }
    assert await redis.dbsize() == 0


async def test_a_rate_limit_and_a_full_backlog_are_tool_errors(start_service, redis):
    api = await start_service(
        worker=False, HANDOVER_RATE_LIMIT_PER_IDENTITY="1", HANDOVER_MAX_PENDING="2"
    )
    first = call({"conversation_sid": new_conversation_sid(1301), "identity": IDENTITY})
    assert (await post(api, first))[2]["result"]["isError"] is False
    same_customer = call({"conversation_sid": new_conversation_sid(1302), "identity": IDENTITY})
    _, _, limited = await post(api, same_customer)
    assert limited["result"]["isError"] is True
    assert limited["result"]["content"][0]["text"].startswith(
        "Too many handovers were requested for this customer within 60 seconds."
    )
    another = call({"conversation_sid": new_conversation_sid(1303), "identity": "phone:+1415555"})
    assert (await post(api, another))[2]["result"]["isError"] is False
    full = call({"conversation_sid": new_conversation_sid(1304), "identity": "email:a@b.example"})
    _, _, refused = await post(api, full)
    assert refused["result"]["isError"] is True
    assert "Too many customers are waiting" in refused["result"]["content"][0]["text"]


async def test_redis_unavailable_is_a_tool_error_that_says_try_again(redis_server, simulator):
    env = service_env(f"redis://127.0.0.1:{free_port()}/0", simulator.base_url)
    api = await Service(Settings.from_env(env, role="api")).start(worker=False)
    try:
        arguments = {"conversation_sid": new_conversation_sid(1401), "identity": IDENTITY}
        status, _, answer = await post(api, call(arguments))
    finally:
        await api.stop()
    assert status == 200
    assert answer["result"]["isError"] is True
    assert "cannot store requests right now" in answer["result"]["content"][0]["text"]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_no_stream_and_no_session_405(api, method):
    async with api.anonymous.request(method, api.url + "/mcp", headers=tool_auth()) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        assert (await response.json())["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("headers", "data", "status", "error"),
    [
        ({"Accept": "text/event-stream"}, None, 406, "not_acceptable"),
        ({"Content-Type": "text/plain"}, None, 415, "unsupported_media_type"),
        ({"Content-Type": ""}, None, 415, "unsupported_media_type"),
        ({}, b"[" + b" " * 70_000 + b"]", 413, "body_too_large"),
    ],
)
async def test_http_refusals_are_the_apps_json_errors(api, headers, data, status, error):
    if data is None:
        answered, _, body = await post(api, LIST, headers=headers)
    else:
        json_headers = {"Content-Type": "application/json", **headers}
        answered, _, body = await post(api, data=data, headers=json_headers)
    assert (answered, body["error"]) == (status, error)


async def test_a_browser_origin_is_refused_unless_loopback_or_configured(start_service):
    api = await start_service(worker=False, HANDOVER_MCP_ALLOWED_ORIGINS="https://app.example")
    for origin, status in (
        ("https://evil.example", 403),
        ("http://localhost:6274", 200),
        ("https://app.example", 200),
    ):
        answered, _, body = await post(api, LIST, headers={"Origin": origin})
        assert answered == status, (origin, body)
    # Refused before the credentials are looked at.
    answered, _, body = await post(
        api, LIST, headers={"Origin": "https://evil.example"}, auth=False
    )
    assert (answered, body["error"]) == (403, "forbidden")


async def test_credentials(api):
    assert (await post(api, LIST, auth=False))[0] == 401
    assert (await post(api, LIST, headers={"Authorization": "Bearer wrong-token-0000000000"}))[
        0
    ] == 403
    async with api.anonymous.post(
        f"{api.url}/mcp?token={TOOL_TOKEN}", json=LIST, headers=ACCEPT
    ) as response:
        assert response.status == 401  # a token in the URL is not accepted here


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", -32700),
        (b'{"jsonrpc": "2.0", ', -32700),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": NaN}}', -32700),
        (b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1), -32700),
        (b'"tools/list"', -32600),
        (b'{"jsonrpc": "2.0", "id": 1}', -32600),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', -32600),
    ],
)
async def test_an_unreadable_message_is_a_json_rpc_error_at_400(api, data, code):
    status, _, answer = await post(api, data=data, headers={"Content-Type": "application/json"})
    assert (status, answer["error"]["code"]) == (400, code), answer
    assert answer["jsonrpc"] == "2.0" and "id" in answer


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"jsonrpc": "2.0", "id": 9, "method": "resources/list"}, -32601),
        ({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {}}, -32602),
        (call({}, name="hand_over_to_human_nobody", id_=9), -32602),
    ],
)
async def test_a_dispatched_protocol_problem_is_a_json_rpc_error(api, body, code):
    status, _, answer = await post(api, body, version="2025-06-18")
    assert (status, answer["id"], answer["error"]["code"]) == (200, 9, code)


async def test_an_unsupported_protocol_version_names_the_supported_ones(api):
    status, _, answer = await post(api, LIST, version="2024-01-01")
    assert (status, answer["id"], answer["error"]["code"]) == (400, 1, -32022)
    assert answer["error"]["data"]["requested"] == "2024-01-01"
    assert "2025-11-25" in answer["error"]["data"]["supported"]


async def test_notifications_and_responses_are_acknowledged_202(api):
    for body in (
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 5, "result": {}},
    ):
        status, _, answer = await post(api, body, version="2025-11-25")
        assert (status, answer) == (202, None)


async def test_batches_where_the_version_has_them(api):
    batch = [
        LIST,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "nope"},
        {"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": {}},
        "junk",
    ]
    status, _, answers = await post(api, batch, version="2025-03-26")
    assert status == 200
    assert [(a["id"], "result" in a, a.get("error", {}).get("code")) for a in answers] == [
        (1, True, None),
        (2, False, -32601),
        (3, False, -32600),
        (None, False, -32600),
    ]
    only_notifications = [{"jsonrpc": "2.0", "method": "notifications/initialized"}]
    status, _, answers = await post(api, only_notifications)  # no header: 2025-03-26
    assert (status, answers) == (202, None)
    for refused, version in (([LIST], "2025-06-18"), ([], "2025-03-26"), ([LIST] * 33, None)):
        status, _, answer = await post(api, refused, version=version)
        assert (status, answer["error"]["code"]) == (400, -32600), answer


async def test_the_per_request_protocol_checks_its_envelope(api):
    listed = {**LIST, "params": {"_meta": ENVELOPE}}
    routing = {"Mcp-Method": "tools/list"}
    status, _, answer = await post(api, listed, version=MODERN, headers=routing)
    assert status == 200 and answer["result"]["resultType"] == "complete"
    assert answer["result"]["tools"][0]["name"] == "hand_over_to_human"
    for body, headers, status, code in (
        (LIST, routing, 400, -32602),  # no envelope
        (listed, {"Mcp-Method": "tools/call"}, 400, -32020),  # the header disagrees
        ([listed], routing, 400, -32600),  # no batches
        (
            {"jsonrpc": "2.0", "id": 4, "method": "nope", "params": {"_meta": ENVELOPE}},
            {"Mcp-Method": "nope"},
            404,
            -32601,
        ),
    ):
        answered, _, answer = await post(api, body, version=MODERN, headers=headers)
        assert (answered, answer["error"]["code"]) == (status, code), answer

"""The receiver's contract: every request is stored before it is acknowledged,
or refused with an error that says what was wrong, storing nothing."""

from __future__ import annotations

import json

import pytest

from shared import redis_keys
from shared.redis_client import create_redis
from shared.settings import Settings
from standins.redis_server import free_port
from tests.support.service import Service, service_env
from tests.support.values import session_header

BAD_REQUESTS = [
    # (description, headers, body kwargs, status, error code)
    ("no session at all", {"X-Identity": "whatsapp:+14155550123"}, {}, 400, "missing_conversation"),
    (
        "a messaging session",
        {"X-Session-Id": "webhook:messaging__MG" + "1" * 32, "X-Identity": "phone:+14155550123"},
        {},
        400,
        "not_a_conversation",
    ),
    (
        "malformed conversation SID",
        {
            "X-Session-Id": "webhook:conversations__IS" + "1" * 32 + "/CH123",
            "X-Identity": "phone:+14155550123",
        },
        {},
        400,
        "invalid_conversation_sid",
    ),
    (
        "malformed conversation_sid in body",
        {},
        {"json": {"conversation_sid": "CHnope", "identity": "phone:+14155550123"}},
        400,
        "invalid_conversation_sid",
    ),
    ("no identity", {"X-Session-Id": session_header()}, {}, 400, "missing_identity"),
    (
        # (A bare number is a phone number: see test_handover_flow.)
        "identity without trait",
        {"X-Session-Id": session_header(), "X-Identity": "customer-42"},
        {},
        400,
        "invalid_identity",
    ),
    (
        "bare number not in E.164 form",
        {"X-Session-Id": session_header(), "X-Identity": "+1 415 555 0123"},
        {},
        400,
        "invalid_identity",
    ),
    (
        "Flex user id that is not an FX SID",
        {"X-Session-Id": session_header(), "X-Identity": "user_id:FX/../../v2/Users"},
        {},
        400,
        "invalid_identity",
    ),
    (
        "whatsapp identity that is not a number",
        {"X-Session-Id": session_header(), "X-Identity": "whatsapp:bob"},
        {},
        400,
        "invalid_identity",
    ),
    (
        "invalid JSON",
        {
            "X-Session-Id": session_header(),
            "X-Identity": "phone:+14155550123",
            "Content-Type": "application/json",
        },
        {"data": b'{"reason": '},
        400,
        "invalid_body",
    ),
    (
        "JSON that is not an object",
        {"X-Session-Id": session_header(), "X-Identity": "phone:+14155550123"},
        {"json": ["reason"]},
        400,
        "invalid_body",
    ),
    (
        "broken form encoding",
        {
            "X-Session-Id": session_header(),
            "X-Identity": "phone:+14155550123",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        {"data": b"reason=%ff%fe"},
        400,
        "invalid_body",
    ),
    (
        "a known field that is not text",
        {"X-Session-Id": session_header(), "X-Identity": "phone:+14155550123"},
        {"json": {"reason": {"nested": True}}},
        400,
        "invalid_tool_input",
    ),
    (
        "an unsupported media type",
        {
            "X-Session-Id": session_header(),
            "X-Identity": "phone:+14155550123",
            "Content-Type": "application/xml",
        },
        {"data": b"<reason/>"},
        415,
        "unsupported_media_type",
    ),
]


@pytest.mark.parametrize(
    ("description", "headers", "body", "status", "error"),
    BAD_REQUESTS,
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_input_is_refused_and_nothing_is_stored(
    service, redis, description, headers, body, status, error
):
    async with service.http.post(
        service.url + "/tools/flex-handover", headers=headers, **body
    ) as response:
        payload = await response.json()
        assert response.status == status, payload
    assert payload["error"] == error
    assert len(payload["message"]) > 20
    assert await redis.dbsize() == 0


async def test_unknown_target_is_404(service, redis):
    status, body, _ = await service.call_tool(
        path="/tools/flex-handover/nowhere", session_id=session_header()
    )
    assert status == 404
    assert body["error"] == "unknown_target"
    assert "nowhere" in body["message"]
    assert await redis.dbsize() == 0


async def test_body_over_the_limit_is_413(start_service, redis):
    service = await start_service(HANDOVER_MAX_BODY_BYTES=1024)
    status, body, _ = await service.call_tool(
        session_id=session_header(), json={"summary": "x" * 2000}
    )
    assert status == 413
    assert body["error"] == "body_too_large"
    assert "1024" in body["message"]
    assert await redis.dbsize() == 0


async def test_chunked_body_over_the_limit_is_413(start_service, redis):
    service = await start_service(HANDOVER_MAX_BODY_BYTES=1024)

    async def chunks():
        for _ in range(4):
            yield b"x" * 512

    async with service.http.post(
        service.url + "/tools/flex-handover",
        data=chunks(),
        headers={"X-Session-Id": session_header(), "X-Identity": "phone:+14155550123"},
    ) as response:
        assert response.status == 413
        assert (await response.json())["error"] == "body_too_large"
    assert await redis.dbsize() == 0


async def test_unknown_handover_and_unknown_route_are_json_404(service):
    for path in ("/handovers/ho_" + "0" * 32, "/handovers/nonsense", "/nowhere"):
        async with service.http.get(service.url + path) as response:
            assert response.status == 404
            body = await response.json()
            assert set(body) == {"error", "message"}


async def test_wrong_method_is_json_405(service):
    async with service.http.get(service.url + "/tools/flex-handover") as response:
        assert response.status == 405
        assert (await response.json())["error"] == "method_not_allowed"


async def test_health_and_readiness(service):
    for path in ("/healthz", "/readyz"):
        async with service.http.get(service.url + path) as response:
            assert response.status == 200


async def test_redis_unreachable_is_503_with_retry_after(redis_server, simulator):
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings.from_env(service_env(dead_url, simulator.base_url), role="api")
    service = await Service(settings).start(worker=False)
    try:
        status, body, response = await service.call_tool(session_id=session_header())
        assert status == 503
        assert body["error"] == "unavailable"
        assert int(response.headers["Retry-After"]) > 0
        async with service.http.get(service.url + "/readyz") as ready:
            assert ready.status == 503
        async with service.http.get(service.url + "/healthz") as healthy:
            assert healthy.status == 200
    finally:
        await service.stop()


async def test_api_recovers_when_redis_comes_back(redis_server, simulator):
    """Redis down → 503; the same process stores requests again once it is back."""
    from standins.redis_server import LocalRedisServer

    own = LocalRedisServer()
    own.start()
    settings = Settings.from_env(service_env(own.url, simulator.base_url), role="api")
    service = await Service(settings).start(worker=False)
    try:
        assert (await service.call_tool(session_id=session_header()))[0] == 202
        own.kill()
        assert (await service.call_tool(session_id=session_header("CH" + "9" * 32)))[0] == 503
        own.start()
        status, body, _ = await service.call_tool(session_id=session_header("CH" + "8" * 32))
        assert status == 202, body
        client = create_redis(own.url)
        try:
            assert await client.exists(redis_keys.handover_key(body["handover_id"])) == 1
        finally:
            await client.aclose()
    finally:
        await service.stop()
        own.close()


async def test_tool_input_beyond_ascii_is_stored_exactly_as_sent(service, redis):
    tool_input = {
        "reason": "Le client veut parler à quelqu'un — 今すぐ 👋",
        "order": {"id": "Ø-42", "lines": ["ß", "\u00e9", "\U0001f4e6"]},
    }
    status, ack, _ = await service.call_tool(session_id=session_header(), json=tool_input)
    assert status == 202, ack
    stored = await redis.hgetall(redis_keys.handover_key(ack["handover_id"]))
    assert json.loads(stored["tool_input"]) == {"reason": tool_input["reason"]}
    assert json.loads(stored["extra_input"]) == {"order": tool_input["order"]}
    assert stored["state"] == "queued" and stored["attempts"] == "0"

"""`/openapi.json` stays true: it is valid OpenAPI, it documents exactly the
routes the app registers, and a fuzzer (schemathesis) finds no 5xx and no
response that the document does not describe, on a live server on loopback.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
import redis as sync_redis
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, settings
from schemathesis import checks as st_checks

from api import openapi
from api.app import create_app
from shared import redis_keys
from shared.model import HandoverRequest, Identity, new_handover_record
from shared.settings import Settings
from standins.redis_server import LocalRedisServer, free_port

TOKEN = "fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WORKFLOW_SID = "WW" + "c3" * 16
FAILED_ID = "ho_" + "fa" * 16
SUCCEEDED_ID = "ho_" + "5c" * 16
CLOSED_HOURS = {"time_zone": "UTC", "weekly": {}}
# Only what the fuzzer must not find: no 5xx, no undocumented status, content
# type, header or body. (Checks such as negative_data_rejection judge the API's
# leniency, which is deliberate here: unknown body fields are kept, not refused.)
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_headers_conformance,
    st_checks.response_schema_conformance,
]
FUZZ = settings(
    # FUZZ_MAX_EXAMPLES=500 for a deeper hunt by hand; the suite keeps it short.
    max_examples=int(os.environ.get("FUZZ_MAX_EXAMPLES", "40")),
    derandomize=True,  # a fixed seed: the same cases every run
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: report a failure as found
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def app_with_openapi(app_settings: Settings) -> web.Application:
    """The app as `create_app` builds it, plus `/openapi.json` if it does not
    register it itself yet."""
    app = create_app(app_settings)
    if not any(route.resource.canonical == "/openapi.json" for route in app.router.routes()):
        app.router.add_routes(openapi.routes())
    return app


def fuzz_settings(redis_url: str) -> Settings:
    """Every credential the same token, so one header opens everything; no rate
    limits, so a 429 does not hide the rest of the tool endpoint."""
    return Settings.from_env(
        {
            "REDIS_URL": redis_url,
            "FLEX_WORKFLOW_SID": WORKFLOW_SID,
            "HANDOVER_TARGETS": json.dumps(
                {
                    "billing": {"workflow_sid": WORKFLOW_SID},
                    # Never open: every call gets the answers of business hours.
                    "closed": {
                        "workflow_sid": WORKFLOW_SID,
                        "hours": CLOSED_HOURS,
                        "outside_hours": "decline",
                    },
                    "after-hours": {"workflow_sid": WORKFLOW_SID, "hours": CLOSED_HOURS},
                }
            ),
            "HANDOVER_TOOL_TOKENS": TOKEN,
            "HANDOVER_ADMIN_TOKENS": TOKEN,
            # So the fuzzer meets /webhooks/taskrouter's signature check, not its 503.
            "TWILIO_AUTH_TOKEN": "fuzz-auth-token-0123456789",
            "HANDOVER_RATE_LIMIT_PER_CONVERSATION": "0",
            "HANDOVER_RATE_LIMIT_PER_IDENTITY": "0",
        },
        role="api",
    )


# --- the document itself --------------------------------------------------------------


def test_document_is_valid_openapi():
    schemathesis.openapi.from_dict(openapi.DOCUMENT).validate()


def test_every_schema_is_valid_json_schema():
    found = list(_schemas(openapi.DOCUMENT))
    assert len(found) > 20
    for where, schema in found:
        try:
            jsonschema_rs.meta.validate(schema)
        except jsonschema_rs.ValidationError as exc:
            raise AssertionError(f"{where}: {exc}") from None


def test_every_reference_resolves_and_every_component_is_used():
    refs = {value for _, value in _walk(openapi.DOCUMENT) if isinstance(value, str)}
    used = {ref for ref in refs if ref.startswith("#/components/")}
    for ref in used:
        node: Any = openapi.DOCUMENT
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
    defined = {
        f"#/components/{kind}/{name}"
        for kind, entries in openapi.DOCUMENT["components"].items()
        if kind != "securitySchemes"
        for name in entries
    }
    # 405 is documented once (no operation lists the methods it does not take).
    assert defined - used == {"#/components/responses/MethodNotAllowed"}


def test_every_operation_names_its_refusals_and_security():
    for path, item in openapi.DOCUMENT["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (method, path)
            assert "security" in operation, (method, path)
            assert operation["operationId"], (method, path)


def test_document_and_registered_routes_agree():
    app = app_with_openapi(fuzz_settings("redis://127.0.0.1:1/0"))
    registered = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
    }
    documented = {
        (method.upper(), path)
        for path, item in openapi.DOCUMENT["paths"].items()
        for method in item
    }
    assert documented == registered, (
        f"undocumented: {sorted(registered - documented)}; "
        f"documented but not registered: {sorted(documented - registered)}"
    )


def _walk(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    """Every (location, value) of `$ref`s, recursively."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield where, value
            else:
                yield from _walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{where}/{index}")


def _schemas(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    """Every top-level Schema Object: components' schemas and each `schema` field."""
    if isinstance(node, dict):
        for key, value in node.items():
            if (key == "schema" and isinstance(value, dict)) or where == "#/components/schemas":
                yield f"{where}/{key}", value
            elif key != "examples":
                yield from _schemas(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _schemas(value, f"{where}/{index}")


# --- a live server ---------------------------------------------------------------------


class LiveServer:
    """The real app on a loopback port, on its own event loop in a thread, so
    schemathesis's synchronous client can call it."""

    def __init__(self, app_settings: Settings):
        self.settings = app_settings
        self.url = ""
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> LiveServer:
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(app_with_openapi(self.settings), access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    def run(self, coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def stop(self) -> None:
        if self._runner is not None:
            self.run(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def seed_records(redis_url: str) -> None:
    """A failed handover (listed, replayable once) and a succeeded one (409),
    each after a channel that failed."""
    client = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        client.flushall()
        now = time.time()
        for handover_id, conversation, fields in (
            (
                FAILED_ID,
                "CH" + "f1" * 16,
                {
                    "state": "failed",
                    "attempts": "3",
                    "finished_at": repr(now),
                    "error": json.dumps(
                        {"status": 400, "code": 20001, "message": "bad workflow +14155550123"}
                    ),
                    "channel_status": "failed",
                    "channel_failures": "2",
                    "channel_error": json.dumps(
                        {"code": 19025, "message": "bad", "interaction_sid": "KD" + "c3" * 16}
                    ),
                },
            ),
            (
                SUCCEEDED_ID,
                "CH" + "5c" * 16,
                {
                    "state": "succeeded",
                    "attempts": "1",
                    "finished_at": repr(now),
                    "interaction_sid": "KD" + "a1" * 16,
                    "channel_sid": "UO" + "b2" * 16,
                    "channel_status": "active",
                    "channel_failures": "1",
                    "channel_error": json.dumps(
                        {"code": None, "message": "the channel is failed", "interaction_sid": None}
                    ),
                },
            ),
        ):
            request = HandoverRequest(
                conversation, Identity("whatsapp", "+14155550123"), "default", {"reason": "r"}
            )
            client.hset(
                redis_keys.handover_key(handover_id),
                mapping={**new_handover_record(handover_id, request, now), **fields},
            )
        client.zadd(redis_keys.FAILED_INDEX, {FAILED_ID: now})
        client.zadd(redis_keys.RECENT_INDEX, {FAILED_ID: now - 1, SUCCEEDED_ID: now})
        client.hset(redis_keys.outcome_bucket_key(redis_keys.outcome_bucket(now)), "failed", 1)
    finally:
        client.close()


@pytest.fixture(scope="module")
def live_api(redis_server: LocalRedisServer) -> Iterator[LiveServer]:
    seed_records(redis_server.url)
    server = LiveServer(fuzz_settings(redis_server.url)).start()
    yield server
    server.stop()


def test_live_server_serves_the_document(live_api: LiveServer):
    response = requests.get(live_api.url + "/openapi.json", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == json.loads(json.dumps(openapi.DOCUMENT))


# --- the fuzzer ------------------------------------------------------------------------


def _with_seeded_examples(document: dict[str, Any]) -> dict[str, Any]:
    """The served document plus examples naming the seeded records, so the
    fuzzer reaches 200/202/409 and not only 404."""
    document = copy.deepcopy(document)
    document["components"]["parameters"]["HandoverId"]["examples"] = {
        "failed": {"value": FAILED_ID},
        "succeeded": {"value": SUCCEEDED_ID},
    }
    document["components"]["parameters"]["Target"]["examples"] = {
        "default": {"value": "default"},
        "billing": {"value": "billing"},
        "closed": {"value": "closed"},
        "after-hours": {"value": "after-hours"},
    }
    return document


schema = schemathesis.openapi.from_dict(_with_seeded_examples(openapi.DOCUMENT))


@schema.parametrize()
@FUZZ
def test_fuzz_with_credentials(case, live_api: LiveServer):
    case.call_and_validate(base_url=live_api.url, headers=AUTH, checks=CHECKS, timeout=10)


@schema.parametrize()
@settings(FUZZ, max_examples=max(10, FUZZ.max_examples // 4))
def test_fuzz_without_credentials(case, live_api: LiveServer):
    # Whatever credentials schemathesis makes up for the security schemes are
    # random, so refused (401 without any, 403 with a wrong one).
    response = case.call_and_validate(base_url=live_api.url, checks=CHECKS, timeout=10)
    if case.operation.path.startswith(("/tools", "/handovers", "/mcp")):
        assert response.status_code in (401, 403), response.text


def test_the_acknowledgement_links_to_the_status_record(live_api: LiveServer):
    """What the document's `GetHandover` link (and `status_url`) promise: the
    acknowledged id answers 200 from `GET /handovers/{handover_id}`."""
    call = {
        "json": {"reason": "refund", "order": 42},
        "headers": {
            **AUTH,
            "X-Session-Id": "CH" + "ac" * 16,
            "X-Identity": "whatsapp:+14155550123",
        },
        "timeout": 5,
    }
    first = requests.post(live_api.url + "/tools/flex-handover/billing", **call)  # noqa: S113 - timeout in `call`
    repeat = requests.post(live_api.url + "/tools/flex-handover/billing", **call)  # noqa: S113 - timeout in `call`
    tool = schema["/tools/flex-handover/{target}"]["POST"]
    assert (first.status_code, repeat.status_code) == (202, 200)
    tool.validate_response(first)
    tool.validate_response(repeat)
    link = tool.definition.raw["responses"]["202"]["links"]["GetHandover"]
    assert link["parameters"] == {"handover_id": "$response.body#/handover_id"}
    handover_id = first.json()["handover_id"]
    assert repeat.json()["handover_id"] == handover_id
    assert first.json()["status_url"] == f"/handovers/{handover_id}"
    status = requests.get(live_api.url + first.json()["status_url"], headers=AUTH, timeout=5)
    assert status.status_code == 200
    schema["/handovers/{handover_id}"]["GET"].validate_response(status)
    assert status.json()["handover_id"] == handover_id
    assert status.json()["identity"] != "whatsapp:+14155550123"  # masked


def test_the_answers_outside_business_hours_are_documented(live_api: LiveServer):
    """A declining target's 200 `handed_over: false` (nothing stored) and a
    queueing one's 202 with `agents_available: false` match the document."""
    tool = schema["/tools/flex-handover/{target}"]["POST"]
    answers = {}
    for name in ("closed", "after-hours"):
        answers[name] = requests.post(
            f"{live_api.url}/tools/flex-handover/{name}",
            json={"reason": "after hours"},
            headers={**AUTH, "X-Session-Id": "CH" + "0d" * 16, "X-Identity": "phone:+14155550123"},
            timeout=5,
        )
        tool.validate_response(answers[name])
    declined, queued = answers["closed"], answers["after-hours"]
    assert (declined.status_code, declined.json()["handed_over"]) == (200, False)
    assert (queued.status_code, queued.json()["agents_available"]) == (202, False)
    assert declined.json()["opens_at"] is None and queued.json()["opens_at"] is None

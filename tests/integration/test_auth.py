"""Who may call, against the live app on loopback: tokens (header and query),
Twilio signatures (form and JSON, behind a proxy or not), admin tokens, and the
laptop-only unauthenticated mode. A refused call stores nothing."""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from shared import redis_keys
from tests.support.service import Service
from tests.support.values import (
    ADMIN_TOKEN,
    AUTH_TOKEN,
    TOOL_TOKEN,
    admin_auth,
    new_conversation_sid,
    session_header,
    tool_auth,
)

OTHER_TOKEN = "another-token-0123456789abcdef"
IDENTITY = "whatsapp:+14155550123"
PATH = "/tools/flex-handover"
SIGNING = {"HANDOVER_VERIFY_TWILIO_SIGNATURE": "true"}
SIGNATURE_ONLY = {**SIGNING, "HANDOVER_TOOL_TOKENS": ""}
PUBLIC = "https://handover.example.com"
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "handover.example.com"}


def twilio_headers(n: int = 1, **extra: str) -> dict[str, str]:
    return {
        "X-Session-Id": session_header(new_conversation_sid(n)),
        "X-Identity": IDENTITY,
        **extra,
    }


def sign(url: str, params: dict[str, str] | None = None) -> str:
    return RequestValidator(AUTH_TOKEN).compute_signature(url, params or {})


async def post(
    service: Service, path: str = PATH, *, headers: dict[str, str], body: bytes = b"",
    content_type: str = "application/json",
) -> tuple[int, dict[str, Any], Any]:  # fmt: skip
    """A tool call with no credentials but those given."""
    async with service.anonymous.post(
        service.url + path, data=body, headers={"Content-Type": content_type, **headers}
    ) as response:
        return response.status, await response.json(), response


async def get(service: Service, path: str, headers: dict[str, str] | None = None):
    async with service.anonymous.get(service.url + path, headers=headers or {}) as response:
        return response.status, await response.json(), response


def assert_refused(status: int, body: dict[str, Any], expected: int) -> None:
    assert status == expected, body
    assert set(body) == {"error", "message"}
    assert body["error"] == ("unauthorized" if expected == 401 else "forbidden")
    assert len(body["message"]) > 20


# --- tokens ------------------------------------------------------------------------


async def test_no_credentials_is_401_with_a_bearer_challenge_and_nothing_stored(
    start_service, redis
):
    service = await start_service(worker=False)
    for path in (PATH, PATH + "/billing", PATH + "/nowhere"):
        status, body, response = await post(service, path, headers=twilio_headers())
        assert_refused(status, body, 401)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "Authorization: Bearer" in body["message"] and "?token=" in body["message"]
    assert await redis.dbsize() == 0


@pytest.mark.parametrize(
    "credentials",
    [
        {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}},
        {"headers": {"Authorization": "Bearer"}},
        {"headers": {"X-Twilio-Signature": sign("http://x/tools")}},  # signatures are off
    ],
    ids=["basic", "empty-bearer", "signature-when-off"],
)
async def test_credentials_of_a_kind_not_accepted_are_401(start_service, redis, credentials):
    service = await start_service(worker=False)
    status, body, _ = await post(service, headers=twilio_headers(**credentials["headers"]))
    assert_refused(status, body, 401)
    assert await redis.dbsize() == 0


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (PATH, tool_auth(OTHER_TOKEN)),
        (PATH, tool_auth(TOOL_TOKEN + "x")),
        (PATH, tool_auth(TOOL_TOKEN[:-1])),
        (PATH, admin_auth()),  # an admin token does not open the tool endpoint
        (f"{PATH}?token={OTHER_TOKEN}", {}),
        (f"{PATH}?token=", {}),
        (f"{PATH}?token={ADMIN_TOKEN}", {}),
    ],
    ids=["other", "longer", "shorter", "admin-token", "query-other", "query-empty", "query-admin"],
)
async def test_wrong_credentials_are_403_and_nothing_stored(start_service, redis, path, headers):
    service = await start_service(worker=False)
    status, body, response = await post(
        service, path, headers=twilio_headers(**headers), body=b'{"reason": "refund"}'
    )
    assert_refused(status, body, 403)
    assert "WWW-Authenticate" not in response.headers
    assert await redis.dbsize() == 0


async def test_a_wrong_bearer_with_a_right_query_token_passes(start_service):
    service = await start_service(worker=False)
    status, body, _ = await post(
        service, f"{PATH}?token={TOOL_TOKEN}", headers=twilio_headers(**tool_auth(OTHER_TOKEN))
    )
    assert status == 202, body


async def test_bearer_token_is_accepted_and_the_handover_delivered(start_service):
    service = await start_service()
    status, body, _ = await post(service, headers=twilio_headers(**tool_auth()))
    assert status == 202, body
    assert (await service.wait_final(body["handover_id"]))["state"] == "succeeded"


async def test_query_token_in_the_tool_url_is_accepted(start_service, redis):
    service = await start_service(worker=False)
    status, body, _ = await post(
        service, f"{PATH}/billing?token={TOOL_TOKEN}", headers=twilio_headers(),
        body=b"reason=refund", content_type="application/x-www-form-urlencoded",
    )  # fmt: skip
    assert status == 202, body
    assert (await service.status(body["handover_id"]))["target"] == "billing"


async def test_token_rotation_old_and_new_both_work_until_the_old_is_removed(start_service):
    both = await start_service(worker=False, HANDOVER_TOOL_TOKENS=f"{TOOL_TOKEN},{OTHER_TOKEN}")
    for n, token in enumerate((TOOL_TOKEN, OTHER_TOKEN)):
        status, body, _ = await post(both, headers=twilio_headers(n, **tool_auth(token)))
        assert status == 202, body
    new_only = await start_service(worker=False, HANDOVER_TOOL_TOKENS=OTHER_TOKEN)
    assert (await post(new_only, headers=twilio_headers(5, **tool_auth(OTHER_TOKEN))))[0] == 202
    status, body, _ = await post(new_only, headers=twilio_headers(6, **tool_auth(TOOL_TOKEN)))
    assert_refused(status, body, 403)


async def test_oversized_body_without_credentials_is_401_and_not_read(start_service, redis):
    service = await start_service(worker=False, HANDOVER_MAX_BODY_BYTES=1024)
    status, body, _ = await post(service, headers=twilio_headers(), body=b"x" * 4096)
    assert_refused(status, body, 401)
    assert await redis.dbsize() == 0


# --- Twilio signatures ----------------------------------------------------------------


async def test_signed_form_body_is_accepted_and_read_by_the_handler(start_service, redis):
    service = await start_service(worker=False, **SIGNATURE_ONLY)
    params = {"reason": "refund", "summary": "wants a person"}
    signature = sign(service.url + PATH, params)
    status, body, _ = await post(
        service, headers=twilio_headers(**{"X-Twilio-Signature": signature}),
        body=urlencode(params).encode(), content_type="application/x-www-form-urlencoded",
    )  # fmt: skip
    assert status == 202, body
    # The middleware read the body to check it; the handler read the same bytes.
    stored = await redis.hget(redis_keys.handover_key(body["handover_id"]), "tool_input")
    assert json.loads(stored) == params


async def test_signed_json_body_with_body_hash_is_accepted(start_service):
    service = await start_service(worker=False, **SIGNATURE_ONLY)
    payload = json.dumps({"reason": "refund"}).encode()
    path = f"{PATH}?bodySHA256={hashlib.sha256(payload).hexdigest()}"
    signature = sign(service.url + path)
    status, body, _ = await post(
        service, path, headers=twilio_headers(**{"X-Twilio-Signature": signature}), body=payload
    )
    assert status == 202, body


async def test_tampered_signed_requests_are_403_and_nothing_stored(start_service, redis):
    service = await start_service(worker=False, **SIGNATURE_ONLY)
    form_signature = sign(service.url + PATH, {"reason": "refund"})
    payload = b'{"reason": "refund"}'
    json_path = f"{PATH}?bodySHA256={hashlib.sha256(payload).hexdigest()}"
    json_signature = sign(service.url + json_path)
    form = "application/x-www-form-urlencoded"
    cases = [
        (PATH, form_signature, b"reason=refunds", form),  # body changed
        (PATH + "/billing", form_signature, b"reason=refund", form),  # URL changed
        (json_path, json_signature, b'{"reason": "refunds"}', "application/json"),
        (PATH, sign(service.url + PATH), payload, "application/json"),  # JSON, no body hash
        (PATH, "bm90IGEgc2lnbmF0dXJl", b"", "application/json"),
    ]
    for path, signature, payload_sent, content_type in cases:
        status, body, _ = await post(
            service, path, headers=twilio_headers(**{"X-Twilio-Signature": signature}),
            body=payload_sent, content_type=content_type,
        )  # fmt: skip
        assert_refused(status, body, 403)
    assert await redis.dbsize() == 0


async def test_signature_only_mode_refuses_missing_and_bearer_credentials(start_service, redis):
    service = await start_service(worker=False, **SIGNATURE_ONLY)
    status, body, _ = await post(service, headers=twilio_headers())
    assert_refused(status, body, 401)
    assert "X-Twilio-Signature" in body["message"]
    status, body, _ = await post(service, headers=twilio_headers(**tool_auth()))
    assert_refused(status, body, 403)
    assert await redis.dbsize() == 0


async def test_either_mode_passes_when_both_are_configured(start_service):
    service = await start_service(worker=False, **SIGNING)
    assert (await post(service, headers=twilio_headers(1, **tool_auth())))[0] == 202
    signature = sign(service.url + PATH)
    signed = twilio_headers(2, **{"X-Twilio-Signature": signature})
    assert (await post(service, headers=signed))[0] == 202
    # A wrong token does not spoil a good signature, nor the reverse.
    signed_wrong_token = twilio_headers(
        3, **{"X-Twilio-Signature": signature}, **tool_auth(OTHER_TOKEN)
    )
    assert (await post(service, headers=signed_wrong_token))[0] == 202
    bad_signature_good_token = twilio_headers(4, **{"X-Twilio-Signature": "x"}, **tool_auth())
    assert (await post(service, headers=bad_signature_good_token))[0] == 202


async def test_behind_a_trusted_proxy_the_public_url_is_what_is_signed(start_service):
    service = await start_service(
        worker=False, HANDOVER_TRUST_PROXY_HEADERS="true", **SIGNATURE_ONLY
    )
    signature = sign(PUBLIC + PATH)
    headers = twilio_headers(**FORWARDED, **{"X-Twilio-Signature": signature})
    assert (await post(service, headers=headers))[0] == 202
    # First value of a list (the proxy nearest Twilio appends after it).
    chained = twilio_headers(
        2, **{"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "handover.example.com, lb:8080",
              "X-Twilio-Signature": signature},
    )  # fmt: skip
    assert (await post(service, headers=chained))[0] == 202
    # The internal URL is not what Twilio called.
    internal = twilio_headers(3, **FORWARDED, **{"X-Twilio-Signature": sign(service.url + PATH)})
    assert (await post(service, headers=internal))[0] == 403


async def test_forwarded_headers_are_ignored_unless_trusted(start_service, redis):
    service = await start_service(worker=False, **SIGNATURE_ONLY)
    headers = twilio_headers(**FORWARDED, **{"X-Twilio-Signature": sign(PUBLIC + PATH)})
    status, body, _ = await post(service, headers=headers)
    assert_refused(status, body, 403)
    assert await redis.dbsize() == 0
    direct = twilio_headers(**FORWARDED, **{"X-Twilio-Signature": sign(service.url + PATH)})
    assert (await post(service, headers=direct))[0] == 202


# --- admin tokens ---------------------------------------------------------------------


async def test_status_endpoint_needs_the_admin_token(start_service):
    service = await start_service(worker=False)
    _, ack, _ = await service.call_tool(session_id=session_header())
    path = f"/handovers/{ack['handover_id']}"

    status, body, response = await get(service, path)
    assert_refused(status, body, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    for headers in (tool_auth(), admin_auth(OTHER_TOKEN)):
        status, body, _ = await get(service, path, headers)
        assert_refused(status, body, 403)
    status, body, _ = await get(service, f"{path}?token={ADMIN_TOKEN}")
    assert_refused(status, body, 401)  # not in the URL
    assert "not accepted in the URL" in body["message"]

    status, body, _ = await get(service, path, admin_auth())
    assert status == 200 and body["handover_id"] == ack["handover_id"]


async def test_every_path_under_handovers_is_protected(start_service):
    service = await start_service(worker=False)
    for path in ("/handovers", "/handovers/nonsense", "/handovers/ho_1/replay", "//handovers/x"):
        status, body, _ = await get(service, path)
        assert_refused(status, body, 401)
    async with service.anonymous.post(service.url + "/handovers/ho_1/replay") as response:
        assert response.status == 401


async def test_admin_rotation(start_service):
    service = await start_service(
        worker=False, HANDOVER_ADMIN_TOKENS=f"{ADMIN_TOKEN},{OTHER_TOKEN}"
    )
    for token in (ADMIN_TOKEN, OTHER_TOKEN):
        status, _, _ = await get(service, "/handovers/ho_" + "0" * 32, admin_auth(token))
        assert status == 404  # past authentication


async def test_admin_endpoints_without_admin_tokens_answer_403_not_configured(start_service):
    service = await start_service(worker=False, HANDOVER_ADMIN_TOKENS="")
    for headers in ({}, tool_auth(), admin_auth()):
        status, body, _ = await get(service, "/handovers/ho_" + "0" * 32, headers)
        assert_refused(status, body, 403)
        assert "admin tokens are not configured" in body["message"]


async def test_open_endpoints_need_no_credentials(start_service):
    service = await start_service(worker=False)
    for path in ("/healthz", "/readyz"):
        assert (await get(service, path))[0] == 200
    async with service.anonymous.get(service.url + "/openapi.json") as response:
        assert response.status not in (401, 403)


# --- the laptop-only mode ------------------------------------------------------------------


async def test_unauthenticated_mode_opens_tool_and_admin_endpoints(start_service):
    service = await start_service(
        HANDOVER_ALLOW_UNAUTHENTICATED="true", HANDOVER_TOOL_TOKENS="", HANDOVER_ADMIN_TOKENS=""
    )
    status, body, _ = await post(service, headers=twilio_headers())
    assert status == 202, body
    status, record, _ = await get(service, body["status_url"])
    assert status == 200 and record["handover_id"] == body["handover_id"]


async def test_unauthenticated_mode_does_not_open_what_has_tokens(start_service, redis):
    service = await start_service(worker=False, HANDOVER_ALLOW_UNAUTHENTICATED="true")
    status, body, _ = await post(service, headers=twilio_headers())
    assert_refused(status, body, 401)
    assert_refused(*(await get(service, "/handovers/ho_" + "0" * 32))[:2], 401)
    assert await redis.dbsize() == 0


async def test_unauthenticated_mode_with_an_admin_token_keeps_admin_closed(start_service):
    service = await start_service(
        worker=False, HANDOVER_ALLOW_UNAUTHENTICATED="true", HANDOVER_TOOL_TOKENS=""
    )
    status, body, _ = await post(service, headers=twilio_headers())
    assert status == 202, body
    assert_refused(*(await get(service, body["status_url"]))[:2], 401)
    assert (await get(service, body["status_url"], admin_auth()))[0] == 200


async def test_start_up_warns_when_the_tool_endpoint_is_open(start_service, caplog):
    caplog.set_level("WARNING", logger="flex_handover.api.app")
    await start_service(
        worker=False, HANDOVER_ALLOW_UNAUTHENTICATED="true", HANDOVER_TOOL_TOKENS=""
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("tool endpoint open to anyone: for a laptop only" in w for w in warnings)
    assert not any("/handovers" in w for w in warnings)  # the admin token is set

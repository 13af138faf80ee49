"""The operator page's sign-in, end to end: the real API on loopback, the suite's
Redis, the worker and the Flex simulator. Sign-in and its limit, the cookie's
attributes, the session reading `/handovers…`, CSRF on a replay and on sign-out,
expiry, and the page's own headers."""

from __future__ import annotations

import hashlib
from http.cookies import SimpleCookie

import aiohttp

from api.ui.sessions import PLAIN_COOKIE, SECURE_COOKIE
from shared import redis_keys
from tests.integration.test_operator_lists import finished, hand_over
from tests.support.values import ADMIN_TOKEN

PLAIN = {"HANDOVER_UI_SECURE_COOKIE": "false"}


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1 (aiohttp's jar skips IP hosts by default)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(client: aiohttp.ClientSession, service, token: str = ADMIN_TOKEN, **kwargs):
    body = kwargs.pop("data", None)
    send = {"data": body} if body is not None else {"json": {"token": token}}
    async with client.post(service.url + "/ui/session", **send, **kwargs) as response:
        return response.status, await response.json(), response


async def get(client, url: str, **kwargs) -> tuple[int, dict]:
    async with client.get(url, **kwargs) as response:
        return response.status, await response.json()


async def test_sign_in_sets_a_bounded_http_only_strict_secure_cookie(service, redis):
    async with service.anonymous.post(
        service.url + "/ui/session", json={"token": ADMIN_TOKEN}
    ) as response:
        assert response.status == 200
        answer = await response.json()
        set_cookie = response.headers["Set-Cookie"]
    cookie = SimpleCookie(set_cookie)[SECURE_COOKIE]
    assert cookie["httponly"] is True and cookie["secure"] is True
    assert cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert cookie["max-age"] == str(8 * 3600) and not cookie["domain"]
    assert answer["signed_in"] is True and answer["open"] is False
    assert len(answer["csrf_token"]) >= 40 and answer["expires_at"].endswith("Z")
    assert ADMIN_TOKEN not in set_cookie and ADMIN_TOKEN not in str(answer)

    # Redis holds the token's hash only, for the session's lifetime.
    token = cookie.value
    key = redis_keys.ui_session_key(hashlib.sha256(token.encode()).hexdigest())
    fields = await redis.hgetall(key)
    assert set(fields) == {"csrf", "expires_at", "admin"}
    assert fields["csrf"] == answer["csrf_token"]
    assert fields["admin"] == hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
    assert 8 * 3600 - 5 < await redis.ttl(key) <= 8 * 3600
    for name in await redis.keys("*"):
        assert token not in name
        if await redis.type(name) == "hash":
            assert token not in (await redis.hgetall(name)).values()

    # Sent back (as a browser on https would), it reads the operator endpoints.
    headers = {"Cookie": f"{SECURE_COOKIE}={token}"}
    status, summary = await get(
        service.anonymous, service.url + "/handovers/summary", headers=headers
    )
    assert status == 200 and "counts" in summary
    status, state = await get(service.anonymous, service.url + "/ui/session", headers=headers)
    assert state == answer


async def test_a_wrong_or_missing_token_is_401_and_a_form_body_signs_in(start_service):
    service = await start_service(worker=False, **PLAIN)
    async with browser() as client:
        status, body, response = await sign_in(client, service, token="not-the-admin-token-0000")
        assert (status, body["error"]) == (401, "unauthorized")
        assert "Set-Cookie" not in response.headers
        async with client.post(service.url + "/ui/session") as response:
            assert response.status == 401
        async with client.post(
            service.url + "/ui/session", data="token", headers={"Content-Type": "text/csv"}
        ) as response:
            assert response.status == 415
        # A tool token is not an admin token.
        status, _, _ = await sign_in(client, service, token=service.settings.tool_tokens[0])
        assert status == 401
        status, _ = await get(client, service.url + "/handovers/summary")
        assert status == 401

        status, body, _ = await sign_in(client, service, data={"token": ADMIN_TOKEN})
        assert status == 200 and body["signed_in"]
        assert PLAIN_COOKIE in {cookie.key for cookie in client.cookie_jar}
        status, _ = await get(client, service.url + "/handovers?state=recent")
        assert status == 200


async def test_failed_sign_ins_are_limited_per_address_and_successes_do_not_count(
    start_service,
):
    service = await start_service(worker=False, **PLAIN)
    async with browser() as client:
        for _ in range(7):
            assert (await sign_in(client, service))[0] == 200
        for _ in range(5):
            assert (await sign_in(client, service, token="wrong-token-0123456789"))[0] == 401
        status, body, response = await sign_in(client, service)  # even the right one
        assert (status, body["error"]) == (429, "too_many_sign_ins")
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        status, _, _ = await sign_in(client, service, token="wrong-token-0123456789")
        assert status == 429


async def test_the_session_reads_the_lists_and_a_replay_needs_its_csrf_token(
    start_service, simulator, redis
):
    service = await start_service(**PLAIN)
    simulator.fail_next(400, code=20001, message="Invalid channel")
    handover_id = await hand_over(service, 1)
    await finished(service, redis, handover_id, "failed")
    replay_url = f"{service.url}/handovers/{handover_id}/replay"
    async with browser() as client:
        _, session, _ = await sign_in(client, service)
        status, page = await get(client, service.url + "/handovers?state=failed")
        assert status == 200
        assert [record["handover_id"] for record in page["handovers"]] == [handover_id]
        assert page["handovers"][0]["identity"] == "whatsapp:+14*******23"  # masked
        status, record = await get(client, f"{service.url}/handovers/{handover_id}")
        assert (status, record["state"]) == (200, "failed")

        for headers in ({}, {"X-CSRF-Token": "not-the-csrf-token"}, {"X-CSRF-Token": ""}):
            async with client.post(replay_url, headers=headers) as response:
                assert response.status == 403
                assert (await response.json())["error"] == "csrf"
        assert (await service.status(handover_id))["state"] == "failed"  # nothing queued

        async with client.post(
            replay_url, headers={"X-CSRF-Token": session["csrf_token"]}
        ) as response:
            assert response.status == 202, await response.text()
            replayed = await response.json()
        assert (replayed["state"], replayed["replays"]) == ("queued", 1)
        assert (await service.wait_final(handover_id))["state"] == "succeeded"


async def test_sign_out_needs_the_csrf_token_and_ends_the_session(start_service):
    service = await start_service(worker=False, **PLAIN)
    async with browser() as client:
        _, session, _ = await sign_in(client, service)
        token = next(cookie.value for cookie in client.cookie_jar if cookie.key == PLAIN_COOKIE)
        async with client.delete(service.url + "/ui/session") as response:
            assert response.status == 403 and (await response.json())["error"] == "csrf"
        assert (await get(client, service.url + "/ui/session"))[1]["signed_in"] is True

        async with client.delete(
            service.url + "/ui/session", headers={"X-CSRF-Token": session["csrf_token"]}
        ) as response:
            assert response.status == 204
            assert SimpleCookie(response.headers["Set-Cookie"])[PLAIN_COOKIE].value == ""
        status, state = await get(client, service.url + "/ui/session")
        assert (status, state["signed_in"], state["csrf_token"]) == (200, False, None)

    # The old cookie, kept by someone, opens nothing any more.
    headers = {"Cookie": f"{PLAIN_COOKIE}={token}"}
    status, body = await get(service.anonymous, service.url + "/handovers/summary", headers=headers)
    assert (status, body["error"]) == (401, "unauthorized")


async def test_an_expired_session_is_refused(start_service, redis):
    service = await start_service(worker=False, HANDOVER_UI_SESSION_SECONDS="60", **PLAIN)
    async with browser() as client:
        _, _, response = await sign_in(client, service)
        assert SimpleCookie(response.headers["Set-Cookie"])[PLAIN_COOKIE]["max-age"] == "60"
        token = next(cookie.value for cookie in client.cookie_jar if cookie.key == PLAIN_COOKIE)
        key = redis_keys.ui_session_key(hashlib.sha256(token.encode()).hexdigest())
        assert 55 < await redis.ttl(key) <= 60
        assert (await get(client, service.url + "/handovers/summary"))[0] == 200

        # Past its end (the key may outlive it by up to a second): refused.
        await redis.hset(key, "expires_at", "1000000000.0")
        status, body = await get(client, service.url + "/handovers/summary")
        assert (status, body["error"]) == (401, "unauthorized")
        assert (await get(client, service.url + "/ui/session"))[1]["signed_in"] is False
        # Once Redis dropped the key, the same.
        await redis.delete(key)
        assert (await get(client, service.url + "/handovers?state=recent"))[0] == 401


async def test_a_bearer_token_needs_no_csrf_and_a_cookie_never_opens_the_tool_endpoint(
    start_service,
):
    service = await start_service(worker=False, **PLAIN)
    async with browser() as client:
        await sign_in(client, service)
        status, _, _ = await service.call_tool(session_id=None)  # the service's tool token
        assert status == 400  # the tool endpoint answered (no conversation), not auth
        async with client.post(
            service.url + "/tools/flex-handover", json={}, headers={"X-Identity": "+14155550123"}
        ) as response:
            assert response.status == 401  # the session cookie is no tool credential
    # The bearer admin token as before: a replay without any CSRF header is judged
    # on the handover (404: no such id), not refused for CSRF.
    async with service.http.post(f"{service.url}/handovers/ho_{'0' * 32}/replay") as response:
        assert response.status == 404


async def test_the_page_is_served_with_its_security_headers(start_service):
    service = await start_service(worker=False, **PLAIN)
    client = service.anonymous
    async with client.get(service.url + "/ui") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
        headers = response.headers
    csp = headers["Content-Security-Policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert ADMIN_TOKEN not in page and "<script>" not in page  # no inline script
    assert 'method="post"' in page  # without the script, the token is not put in a URL

    async with client.get(service.url + "/ui/static/ui.js") as response:
        assert response.status == 200 and response.content_type == "text/javascript"
        script = await response.text()
        assert response.headers["Content-Security-Policy"] == csp
    assert "innerHTML" not in script and "eval(" not in script
    async with client.get(service.url + "/ui/static/ui.css") as response:
        assert response.status == 200 and response.content_type == "text/css"
    for path in ("/ui/static/index.html", "/ui/static/nope.js", "/ui/static/..%2Fpage.py"):
        async with client.get(service.url + path) as response:
            assert response.status == 404, path
            assert response.headers["Cache-Control"] == "no-store"
    # Refusals under /ui carry the headers too.
    async with client.post(service.url + "/ui/session", json={"token": "x"}) as response:
        assert response.status == 401 and response.headers["X-Frame-Options"] == "DENY"


async def test_open_mode_needs_no_sign_in_and_no_admin_token_disables_it(start_service):
    open_service = await start_service(
        worker=False, HANDOVER_ADMIN_TOKENS="", HANDOVER_ALLOW_UNAUTHENTICATED="true", **PLAIN
    )
    status, state = await get(open_service.anonymous, open_service.url + "/ui/session")
    assert (status, state["signed_in"], state["open"]) == (200, True, True)
    assert (await get(open_service.anonymous, open_service.url + "/handovers/summary"))[0] == 200

    closed = await start_service(worker=False, HANDOVER_ADMIN_TOKENS="", **PLAIN)
    async with closed.anonymous.post(
        closed.url + "/ui/session", json={"token": ADMIN_TOKEN}
    ) as response:
        assert response.status == 403
    status, state = await get(closed.anonymous, closed.url + "/ui/session")
    assert (status, state["signed_in"]) == (200, False)


async def test_another_site_cannot_post_a_sign_in(service):
    """A page elsewhere could send wrong tokens from the operator's browser and lock
    them out at 429: a cross-site sign-in is refused before it counts."""
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "https://evil.example"}):  # fmt: skip
        for _ in range(7):
            async with service.anonymous.post(
                service.url + "/ui/session", data={"token": "wrong"}, headers=headers
            ) as response:
                assert response.status == 403, headers
    async with service.anonymous.post(
        service.url + "/ui/session",
        json={"token": ADMIN_TOKEN},
        headers={"Sec-Fetch-Site": "same-origin", "Origin": service.url},
    ) as response:
        assert response.status == 200  # not locked out by any of the above


async def test_removing_the_admin_token_ends_its_sessions(start_service, redis):
    first = await start_service(worker=False)
    async with first.anonymous.post(
        first.url + "/ui/session", json={"token": ADMIN_TOKEN}
    ) as response:
        assert response.status == 200
        token = SimpleCookie(response.headers["Set-Cookie"])[SECURE_COOKIE].value
    headers = {"Cookie": f"{SECURE_COOKIE}={token}"}
    status, _ = await get(first.anonymous, first.url + "/handovers/summary", headers=headers)
    assert status == 200
    rotated = await start_service(
        worker=False, HANDOVER_ADMIN_TOKENS="a-new-admin-token-0123456789"
    )
    status, _ = await get(rotated.anonymous, rotated.url + "/handovers/summary", headers=headers)
    assert status == 401

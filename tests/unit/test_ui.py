"""The operator page's small pieces: sessions and their expiry (fakeredis, a clock
of our own), CSRF comparison, the sign-in limit, the client address, and the
page's files shipped as package data."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from types import SimpleNamespace

import fakeredis
import pytest
from multidict import CIMultiDict

from api.errors import CsrfRefused, TooManySignIns, Unauthorized
from api.ui import page
from api.ui.sessions import (
    Session,
    SessionStore,
    SignInLimiter,
    client_address,
    cookie_name,
    require_session,
)
from shared import redis_keys

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "an-admin-token-of-the-tests-0001"


class Clock:
    def __init__(self, at: float = 1_800_000_000.0):
        self.at = at

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def fake_redis():
    return fakeredis.FakeAsyncRedis(decode_responses=True)


async def test_a_session_is_stored_by_its_hash_and_ends_at_its_lifetime(fake_redis):
    clock = Clock()
    store = SessionStore(fake_redis, 3600, (ADMIN,), clock)
    token, session = await store.create(ADMIN)
    assert len(token) >= 43 and len(session.csrf_token) >= 43 and token != session.csrf_token
    key = redis_keys.ui_session_key(hashlib.sha256(token.encode()).hexdigest())
    assert await fake_redis.ttl(key) == 3600
    assert token not in str(await fake_redis.hgetall(key))
    assert ADMIN not in str(await fake_redis.hgetall(key))
    assert await store.find(token) == session

    clock.at += 3599
    assert await store.find(token) == session
    clock.at += 1  # the lifetime counts from the sign-in; use does not extend it
    assert await store.find(token) is None


@pytest.mark.parametrize("cookie", [None, "", "x" * 200, "not-a-session"])
async def test_no_session_for_a_missing_or_unknown_cookie(fake_redis, cookie):
    assert await SessionStore(fake_redis, 60, (ADMIN,)).find(cookie) is None


async def test_a_session_ends_when_its_admin_token_is_no_longer_configured(fake_redis):
    old, new = ADMIN, "the-admin-token-that-replaced-it"
    token, session = await SessionStore(fake_redis, 60, (old, new)).create(old)
    assert await SessionStore(fake_redis, 60, (new, old)).find(token) == session
    assert await SessionStore(fake_redis, 60, (new,)).find(token) is None  # rotated out


async def test_ending_a_session(fake_redis):
    store = SessionStore(fake_redis, 60, (ADMIN,))
    token, _ = await store.create(ADMIN)
    await store.end(token)
    assert await store.find(token) is None
    await store.end(None)  # nothing to end


def test_csrf_comparison():
    session = Session("the-csrf-token", 0.0)
    assert session.csrf_matches("the-csrf-token")
    for presented in (None, "", "the-csrf-toke", "the-csrf-token ", "THE-CSRF-TOKEN"):
        assert not session.csrf_matches(presented)


async def test_require_session_wants_the_csrf_token_on_what_changes_something(fake_redis):
    store = SessionStore(fake_redis, 60, (ADMIN,))
    token, session = await store.create(ADMIN)

    def request(method: str, headers: dict[str, str] | None = None):
        return SimpleNamespace(method=method, headers=headers or {})

    assert await require_session(store, request("GET"), token) == session
    assert await require_session(store, request("HEAD"), token) == session
    for method in ("POST", "DELETE", "PUT", "PATCH"):
        with pytest.raises(CsrfRefused):
            await require_session(store, request(method), token)
        with pytest.raises(CsrfRefused):
            await require_session(store, request(method, {"X-CSRF-Token": "nope"}), token)
    good = {"X-CSRF-Token": session.csrf_token}
    assert await require_session(store, request("POST", good), token) == session
    with pytest.raises(Unauthorized):
        await require_session(store, request("GET"), "unknown")


async def test_the_sign_in_limit_counts_attempts_and_takes_back_successes(fake_redis):
    limiter = SignInLimiter(fake_redis, limit=2, window_seconds=60)
    for _ in range(5):
        await limiter.attempt("10.0.0.1")
        await limiter.succeeded("10.0.0.1")
    await limiter.attempt("10.0.0.1")
    await limiter.attempt("10.0.0.1")
    with pytest.raises(TooManySignIns) as refused:
        await limiter.attempt("10.0.0.1")
    assert refused.value.status == 429 and refused.value.code == "too_many_sign_ins"
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    await limiter.attempt("10.0.0.2")  # another address has its own count
    key = redis_keys.ui_sign_in_failures_key("10.0.0.1")
    assert "10.0.0.1" not in key and 0 < await fake_redis.ttl(key) <= 60

    # A success whose window ended meanwhile leaves a key that expires, not one for ever.
    late = redis_keys.ui_sign_in_failures_key("10.0.0.3")
    await limiter.succeeded("10.0.0.3")
    assert int(await fake_redis.get(late)) == -1 and 0 < await fake_redis.ttl(late) <= 60


def test_the_client_address():
    def request(*forwarded: str):
        headers = CIMultiDict(("X-Forwarded-For", line) for line in forwarded)
        return SimpleNamespace(remote="10.1.1.1", headers=headers)

    assert client_address(request("1.2.3.4"), trust_proxy_headers=False) == "10.1.1.1"
    # Behind a proxy you run: the address it appended, not what the client sent.
    assert client_address(request("6.6.6.6, 1.2.3.4"), trust_proxy_headers=True) == "1.2.3.4"
    assert client_address(request(), trust_proxy_headers=True) == "10.1.1.1"
    # A proxy that adds its own header line: the last line's last value, not the
    # client's forged first line.
    assert client_address(request("6.6.6.6", "1.2.3.4"), trust_proxy_headers=True) == "1.2.3.4"


def test_the_cookie_is_host_prefixed_only_when_secure():
    assert cookie_name(True) == "__Host-flex_handover_session"
    assert cookie_name(False) == "flex_handover_session"


def test_the_page_files_are_package_data_and_loaded():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    assert "api.ui" in setuptools["packages"]
    folder = ROOT / "api" / "ui"
    shipped = {p for pattern in setuptools["package-data"]["api.ui"] for p in folder.glob(pattern)}
    files = set((folder / "static").iterdir())
    assert files == shipped
    assert set(page.STATIC) == {path.name for path in files}
    assert {"index.html", "ui.js", "ui.css"} <= set(page.STATIC)
    # The Dockerfile copies the whole api package into the image it installs.
    assert "COPY api/ api/" in (ROOT / "Dockerfile").read_text()


def test_the_page_loads_nothing_from_elsewhere():
    for name, (body, _) in page.STATIC.items():
        text = body.decode()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), name
        assert "https://" not in text, name
    assert "<script>" not in page.STATIC["index.html"][0].decode()

"""The operator page's sign-ins: sessions in Redis, their CSRF tokens, and the
limit on failed sign-ins.

- A session is a random 32-byte token in an HttpOnly, SameSite=Strict cookie.
  Redis holds only the token's sha256 (`shared.redis_keys.ui_session_key`) with
  the session's CSRF token and its end; the key expires then too. The lifetime
  (HANDOVER_UI_SESSION_SECONDS, at most a week) counts from the sign-in: using
  the page does not extend it. The session also keeps the sha256 of the admin
  token it was opened with, and is over once that token is no longer configured
  (a rotated-out token signs nobody in, by cookie either).
- A request that the cookie signs in and that changes something (any method but
  GET, HEAD, OPTIONS) must carry the session's CSRF token in `X-CSRF-Token`.
  `require_session` is the one check; `api.auth` calls it for the operator
  endpoints when no bearer token is sent.
- Sign-ins are counted per client address and minute before the token is
  compared; a successful one is taken back off the count. Past
  SIGN_IN_FAILURES_PER_MINUTE failures the address gets 429, whatever it sends,
  until the minute is over. The count is incremented first, so concurrent
  guesses cannot slip past it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from aiohttp import web

from api.errors import CsrfRefused, TooManySignIns, Unauthorized
from shared import redis_keys

SECURE_COOKIE = "__Host-flex_handover_session"
"""The cookie's name when it is `Secure`: the `__Host-` prefix makes the browser
refuse it unless it is Secure, for Path=/ and for this host only (no Domain), so
a sibling subdomain cannot plant one."""
PLAIN_COOKIE = "flex_handover_session"
"""Its name over plain http (HANDOVER_UI_SECURE_COOKIE=false), where `__Host-` is refused."""
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SIGN_IN_FAILURES_PER_MINUTE = 5
SIGN_IN_WINDOW_SECONDS = 60
_TOKEN_BYTES = 32
_MAX_TOKEN_CHARS = 128  # a cookie longer than any token we issue is not looked up


def cookie_name(secure: bool) -> str:
    return SECURE_COOKIE if secure else PLAIN_COOKIE


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class Session:
    csrf_token: str
    expires_at: float

    def csrf_matches(self, presented: str | None) -> bool:
        """Constant time; hashed first so that not even the length leaks."""
        if not presented:
            return False
        return hmac.compare_digest(token_digest(presented), token_digest(self.csrf_token))


class SessionStore:
    """Creates, finds and ends sessions; `clock` is what expiry is judged by."""

    def __init__(
        self,
        redis: aioredis.Redis,
        lifetime_seconds: int,
        admin_tokens: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ):
        self._redis = redis
        self.lifetime_seconds = lifetime_seconds
        self._admin_digests = frozenset(token_digest(token) for token in admin_tokens)
        self._clock = clock

    async def create(self, admin_token: str) -> tuple[str, Session]:
        """A new session opened with `admin_token`: the cookie's token (never
        stored) and the session."""
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        session = Session(
            secrets.token_urlsafe(_TOKEN_BYTES), self._clock() + self.lifetime_seconds
        )
        key = redis_keys.ui_session_key(token_digest(token))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "csrf": session.csrf_token,
                    "expires_at": repr(session.expires_at),
                    "admin": token_digest(admin_token),
                },
            )
            pipe.expire(key, self.lifetime_seconds)
            await pipe.execute()
        return token, session

    async def find(self, token: str | None) -> Session | None:
        """The live session this cookie value names, or None."""
        if not token or len(token) > _MAX_TOKEN_CHARS:
            return None
        # redis-py types the asyncio client's commands as sync-or-async.
        fields = await cast(
            Awaitable[dict[str, str]],
            self._redis.hgetall(redis_keys.ui_session_key(token_digest(token))),
        )
        try:
            session = Session(str(fields["csrf"]), float(fields["expires_at"]))
        except (KeyError, ValueError):
            return None
        if fields.get("admin") not in self._admin_digests:
            return None  # its admin token was removed from HANDOVER_ADMIN_TOKENS
        return session if session.expires_at > self._clock() else None

    async def end(self, token: str | None) -> None:
        if token and len(token) <= _MAX_TOKEN_CHARS:
            await self._redis.delete(redis_keys.ui_session_key(token_digest(token)))


class SignInLimiter:
    """At most `limit` failed sign-ins per client address per window."""

    def __init__(
        self,
        redis: aioredis.Redis,
        limit: int = SIGN_IN_FAILURES_PER_MINUTE,
        window_seconds: int = SIGN_IN_WINDOW_SECONDS,
    ):
        self._redis = redis
        self.limit = limit
        self.window_seconds = window_seconds

    async def attempt(self, client: str) -> None:
        """Count a sign-in attempt; raise TooManySignIns past the limit."""
        key = redis_keys.ui_sign_in_failures_key(client)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window_seconds, nx=True)
            pipe.pttl(key)
            count, _, pttl = await pipe.execute()
        if int(count) > self.limit:
            retry_after = max(1, math.ceil(int(pttl) / 1000)) if int(pttl) > 0 else 1
            raise TooManySignIns(self.limit, retry_after)

    async def succeeded(self, client: str) -> None:
        """The attempt was right: it does not count as a failure. Should the window
        have ended in between, the key the DECR makes lives one window too, never
        for ever."""
        key = redis_keys.ui_sign_in_failures_key(client)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.decr(key)
            pipe.expire(key, self.window_seconds, nx=True)
            await pipe.execute()


def client_address(request: web.Request, trust_proxy_headers: bool) -> str:
    """Who signs in, for the limit: the peer's address, or behind a proxy you run
    (HANDOVER_TRUST_PROXY_HEADERS) the address that proxy appended last to
    `X-Forwarded-For` (the values before it are the client's to choose)."""
    if trust_proxy_headers:
        # Every header line, joined: a proxy may add its own line, not extend one.
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return request.remote or "unknown"


async def require_session(store: SessionStore, request: web.Request, cookie: str) -> Session:
    """The one session check: the cookie names a live session, and a request that
    changes something carries its CSRF token. 401 / 403 `csrf` otherwise."""
    session = await store.find(cookie)
    if session is None:
        raise Unauthorized(
            "The operator page's session has ended (it expired or was signed out): "
            "sign in again at /ui, or send 'Authorization: Bearer <admin token>'."
        )
    if request.method not in SAFE_METHODS and not session.csrf_matches(
        request.headers.get(CSRF_HEADER)
    ):
        raise CsrfRefused()
    return session

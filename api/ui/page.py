"""`GET /ui`: the operator page, its static files, and its sign-in (`/ui/session`).

The page is plain HTML, CSS and one script from `api/ui/static/` (package data:
no build step, nothing from the internet), read once at import. The script reads
the operator endpoints (`/handovers…`) with the session cookie the sign-in
sets (`api.ui.sessions`); every answer under `/ui` carries a Content-Security-Policy
that allows only this origin's script and style, and is neither framed nor cached.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from api.app_keys import SETTINGS, UI_SESSIONS, UI_SIGN_INS
from api.auth import Tokens, read_body
from api.errors import (
    CsrfRefused,
    Forbidden,
    InvalidBody,
    NotFound,
    Unauthorized,
    UnsupportedMediaType,
)
from api.parsing import body_kind
from api.ui.sessions import CSRF_HEADER, Session, client_address, cookie_name

UI_PREFIX = "/ui"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
}


def _load_static() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("api.ui") / "static"
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _TYPES:
            files[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return files


STATIC = _load_static()
"""File name → (bytes, content type): all the page is made of."""


async def page(request: web.Request) -> web.Response:
    """GET /ui: the page. Open: it holds no data, the script asks for it."""
    body, content_type = STATIC["index.html"]
    return web.Response(body=body, content_type=content_type, charset="utf-8")


async def static_file(request: web.Request) -> web.Response:
    """GET /ui/static/{name}: one of the page's files, by exact name."""
    found = STATIC.get(request.match_info["name"])
    if found is None or found[1] == "text/html":
        raise NotFound("unknown_file", f"No such file: {request.path}")
    body, content_type = found
    return web.Response(body=body, content_type=content_type, charset="utf-8")


async def session_state(request: web.Request) -> web.Response:
    """GET /ui/session: whether this browser is signed in, and its CSRF token."""
    settings = request.app[SETTINGS]
    if _admin_open(request):
        return web.json_response(_answer(None, open_=True))
    cookie = request.cookies.get(cookie_name(settings.ui_secure_cookie))
    session = await request.app[UI_SESSIONS].find(cookie)
    return web.json_response(_answer(session))


async def sign_in(request: web.Request) -> web.Response:
    """POST /ui/session with the admin token (`{"token": …}` or a form's `token=`):
    a session cookie, and the session's CSRF token in the answer."""
    settings = request.app[SETTINGS]
    if _admin_open(request):
        return web.json_response(_answer(None, open_=True))
    if not settings.admin_tokens:
        raise Forbidden(
            "The operator page is disabled: admin tokens are not configured "
            "(set HANDOVER_ADMIN_TOKENS)."
        )
    if _cross_site(request):
        # Another site's form posting wrong tokens would lock the operator out.
        raise Forbidden("Sign in from the operator page itself (/ui), not another site.")
    body = await read_body(request, settings.max_body_bytes)
    token = _token_of(request.content_type, body)
    client = client_address(request, settings.trust_proxy_headers)
    limiter = request.app[UI_SIGN_INS]
    await limiter.attempt(client)  # counted before the comparison
    if not _admin_tokens(settings.admin_tokens).matches(token):
        raise Unauthorized("That is not an admin token (HANDOVER_ADMIN_TOKENS).")
    await limiter.succeeded(client)
    store = request.app[UI_SESSIONS]
    name = cookie_name(settings.ui_secure_cookie)
    await store.end(request.cookies.get(name))  # a sign-in replaces the browser's session
    assert token is not None  # noqa: S101 - it matched an admin token
    cookie, session = await store.create(token)
    response = web.json_response(_answer(session))
    response.set_cookie(
        name,
        cookie,
        max_age=store.lifetime_seconds,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=settings.ui_secure_cookie,
    )
    return response


async def sign_out(request: web.Request) -> web.Response:
    """DELETE /ui/session: ends the session (its CSRF token required) and clears
    the cookie; without a live session there is nothing to end (204 all the same)."""
    settings = request.app[SETTINGS]
    store = request.app[UI_SESSIONS]
    name = cookie_name(settings.ui_secure_cookie)
    cookie = request.cookies.get(name)
    session = await store.find(cookie)
    if session is not None:
        if not session.csrf_matches(request.headers.get(CSRF_HEADER)):
            raise CsrfRefused()
        await store.end(cookie)
    response = web.Response(status=204)
    response.del_cookie(
        name, path="/", secure=settings.ui_secure_cookie, httponly=True, samesite="Strict"
    )
    return response


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer under /ui, refusals too."""
    if request.path == UI_PREFIX or request.path.startswith(UI_PREFIX + "/"):
        response.headers.update(SECURITY_HEADERS)


def _cross_site(request: web.Request) -> bool:
    """A browser says where a request comes from: `Sec-Fetch-Site` (every current
    browser), else `Origin`. A client that sends neither (curl) is not a browser
    another site can drive."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    return urlsplit(origin).netloc.lower() != request.host.lower()


@functools.lru_cache(maxsize=4)
def _admin_tokens(tokens: tuple[str, ...]) -> Tokens:
    """Hashed once per configuration, not per sign-in."""
    return Tokens(tokens)


def _admin_open(request: web.Request) -> bool:
    """HANDOVER_ALLOW_UNAUTHENTICATED with no admin token: `/handovers…` is open,
    so the page needs no sign-in (a laptop only)."""
    settings = request.app[SETTINGS]
    return settings.allow_unauthenticated and not settings.admin_tokens


def _answer(session: Session | None, *, open_: bool = False) -> dict[str, Any]:
    return {
        "signed_in": open_ or session is not None,
        "open": open_,
        "csrf_token": session.csrf_token if session else None,
        "expires_at": (
            datetime.fromtimestamp(session.expires_at, UTC).isoformat().replace("+00:00", "Z")
            if session
            else None
        ),
    }


def _token_of(content_type: str, body: bytes) -> str | None:
    """The `token` of a JSON or form body; None when absent or not text."""
    kind = body_kind(content_type, body)
    if kind is None:
        raise UnsupportedMediaType(content_type, "JSON or a form-encoded body")
    if kind == "empty":
        return None
    try:
        text = body.decode("utf-8")
        if kind == "json":
            data = json.loads(text)
            value = data.get("token") if isinstance(data, dict) else None
        else:
            values = parse_qs(text, max_num_fields=20).get("token")
            value = values[0] if values else None
    except (UnicodeDecodeError, ValueError):
        raise InvalidBody("is neither valid JSON nor a valid form.") from None
    if not isinstance(value, str):
        return None
    return value.strip() or None


def routes() -> list[web.RouteDef]:
    return [
        web.get(UI_PREFIX, page),
        web.get(UI_PREFIX + "/static/{name}", static_file),
        web.get(UI_PREFIX + "/session", session_state),
        web.post(UI_PREFIX + "/session", sign_in),
        web.delete(UI_PREFIX + "/session", sign_out),
    ]

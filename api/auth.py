"""Who may call: shared tokens and Twilio signatures for the tool endpoint,
admin tokens for the operator endpoints.

Everything that decides is a pure function (tested without a server); the one
aiohttp middleware at the bottom only gathers what they need from the request.

- Tool calls (`/tools…`) pass if ANY configured mode accepts them: a tool token
  as `Authorization: Bearer …` or as `?token=…` in the tool URL, or a valid
  `X-Twilio-Signature` when HANDOVER_VERIFY_TWILIO_SIGNATURE is on.
- Operator endpoints (`/handovers…`) take an admin token, as a bearer token only
  (a query string ends up in browser history and proxy logs), or the operator
  page's session cookie (`api.ui.sessions`), with its CSRF token on a replay.
- The MCP endpoint (`/mcp`) takes a tool token as a bearer token only (MCP's
  authorization rules forbid tokens in the URL; no MCP client signs as Twilio
  does), after an `Origin` check: a browser page from any origin but loopback
  ones and HANDOVER_MCP_ALLOWED_ORIGINS gets 403 (DNS rebinding).
- No credentials → 401 with `WWW-Authenticate: Bearer`; wrong ones → 403.
- HANDOVER_ALLOW_UNAUTHENTICATED opens only what has no credentials configured:
  a token that is set is always required.
- Everything else (`/healthz`, `/readyz`, `/openapi.json`, unknown paths) is open
  here; `/webhooks/taskrouter` checks its signature itself (`api.taskrouter_events`,
  with the pure pieces below), always, so this middleware's modes do not apply to it.

Tokens are compared in constant time against every configured token (so a new
one can be added before the old one is removed), after hashing both sides so
that not even a token's length leaks. No token, signature or body is ever logged.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from urllib.parse import parse_qs, parse_qsl, urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from api.app_keys import UI_SESSIONS
from api.errors import ApiError, BodyTooLarge, Forbidden, InvalidBody, Unauthorized
from api.http_errors import report_malformed_body
from api.parsing import body_kind
from api.ui.sessions import cookie_name, require_session
from shared.logging import caller_text
from shared.settings import Settings

logger = logging.getLogger(f"flex_handover.{__name__}")

TOOL_PREFIX = "/tools"
ADMIN_PREFIX = "/handovers"
MCP_PATH = "/mcp"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
SIGNATURE_HEADER = "X-Twilio-Signature"
TOKEN_QUERY_PARAMETER = "token"  # noqa: S105 - the parameter's name, not a token
BODY_HASH_PARAMETER = "bodySHA256"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Scope(enum.Enum):
    OPEN = "open"
    TOOL = "tool"
    ADMIN = "admin"
    MCP = "mcp"


# --- pure pieces ------------------------------------------------------------------


def scope_of(*paths: str | None) -> Scope:
    """Which credentials a request needs, from its path (and its route's template:
    an encoded or doubled slash must not turn `/handovers/…` into an open path)."""
    for path in paths:
        if path and _under(path, TOOL_PREFIX):
            return Scope.TOOL
    for path in paths:
        if path and _under(path, ADMIN_PREFIX):
            return Scope.ADMIN
    for path in paths:
        if path and _under(path, MCP_PATH):
            return Scope.MCP
    return Scope.OPEN


def _under(path: str, prefix: str) -> bool:
    path = "/" + path.lstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def bearer_token(authorization: str | None) -> str | None:
    """`Bearer abc` → `abc` (scheme case-insensitive); None when absent, empty or
    another scheme."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


class Tokens:
    """A set of configured tokens, matched in constant time.

    Both sides are hashed first, so `hmac.compare_digest` always compares 32
    bytes (no length leak), and every configured token is compared whatever
    matched earlier (no hint of which one matched, rotation works).
    """

    def __init__(self, tokens: Iterable[str]):
        self._digests = tuple(_digest(token) for token in tokens)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:  # never the values
        return f"Tokens({len(self._digests)} configured)"

    def matches(self, candidate: str | None) -> bool:
        if candidate is None:
            return False
        presented = _digest(candidate)
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(presented, digest)
        return matched


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """Whether a request with this `Origin` header may reach `/mcp`: none sent
    (not a browser), a loopback origin (`http://localhost:6274`, an inspector on
    this machine), or one of `allowed` (lower-case `scheme://host[:port]`)."""
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    if origin in allowed:
        return True
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and parts.hostname in LOOPBACK_HOSTS
        and (port is None or port > 0)
        and not (parts.path or parts.query or parts.fragment or parts.username is not None)
    )


def first_value(header: str | None) -> str | None:
    """`https, http` → `https`: the value the first proxy (the one Twilio reached) set."""
    if not header:
        return None
    value = header.split(",", 1)[0].strip()
    return value or None


def public_url(
    scheme: str,
    host: str,
    path_and_query: str,
    headers: Mapping[str, str],
    trust_proxy_headers: bool,
) -> str:
    """The URL the caller used, as Twilio signed it.

    Behind a proxy that terminates TLS the request arrives as `http://internal:8080`;
    with `trust_proxy_headers` the scheme and host come from `X-Forwarded-Proto`
    and `X-Forwarded-Host` (first value each). Without it those headers are
    ignored: anyone can send them. `path_and_query` is the raw target as sent.
    """
    if trust_proxy_headers:
        forwarded_scheme = (first_value(headers.get("X-Forwarded-Proto")) or "").lower()
        if forwarded_scheme in ("http", "https"):
            scheme = forwarded_scheme
        host = first_value(headers.get("X-Forwarded-Host")) or host
    return f"{scheme}://{host}{path_and_query}"


def twilio_signature_valid(
    validator: RequestValidator,
    url: str,
    content_type: str,
    body: bytes,
    signature: str | None,
) -> bool:
    """Check `X-Twilio-Signature` the way Twilio signs webhooks.

    - JSON (or any body) with `bodySHA256=<hex sha256 of the body>` in the URL:
      the signature covers the URL, the hash covers the raw body.
    - form-encoded body (as `api.parsing.body_kind` reads it: the handler's own
      rule): the signature covers the URL plus the sorted parameters.
    - empty body: the URL alone.
    Any other body (JSON without `bodySHA256`) is not covered by the signature,
    so it does not pass.
    """
    if not signature:
        return False
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    kind = body_kind(content_type, body)
    if BODY_HASH_PARAMETER in query:
        expected = query[BODY_HASH_PARAMETER][0].encode("utf-8", "surrogateescape")
        actual = hashlib.sha256(body).hexdigest().encode()
        if not hmac.compare_digest(actual, expected):
            return False
        params: MultiDict[str] | dict[str, str] = {}
    elif not body:
        params = {}
    elif kind == "form":
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            return False
        params = MultiDict(pairs)
    else:
        return False
    try:
        return bool(validator.validate(url, params, signature))
    except (TypeError, ValueError, UnicodeError):
        return False


def describe_tool_modes(settings: Settings) -> str:
    modes = []
    if settings.tool_tokens:
        modes.append("send 'Authorization: Bearer <token>' or add '?token=<token>' to the tool URL")
    if settings.verify_twilio_signature:
        modes.append("sign the request with X-Twilio-Signature")
    return " or ".join(modes) or "no authentication mode is configured"


def startup_warnings(settings: Settings) -> list[str]:
    """What an operator must see in the log when the API starts."""
    warnings = []
    if settings.allow_unauthenticated:
        if not settings.authenticates_tool_calls:
            warnings.append(
                "HANDOVER_ALLOW_UNAUTHENTICATED=true: tool endpoint open to anyone: for a "
                "laptop only (set HANDOVER_TOOL_TOKENS or HANDOVER_VERIFY_TWILIO_SIGNATURE)"
            )
        if not settings.admin_tokens:
            warnings.append(
                "HANDOVER_ALLOW_UNAUTHENTICATED=true and no HANDOVER_ADMIN_TOKENS: operator "
                "endpoints (/handovers…) open to anyone: for a laptop only"
            )
        if settings.authenticates_tool_calls and settings.admin_tokens:
            warnings.append(
                "HANDOVER_ALLOW_UNAUTHENTICATED=true has no effect: tool and admin "
                "credentials are configured and required"
            )
    elif not settings.admin_tokens:
        warnings.append("no HANDOVER_ADMIN_TOKENS: operator endpoints (/handovers…) answer 403")
    return warnings


# --- the middleware ------------------------------------------------------------------


class Authenticator:
    """Holds what the checks need, built once per app (not per request)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.tool_tokens = Tokens(settings.tool_tokens)
        self.admin_tokens = Tokens(settings.admin_tokens)
        self.validator = (
            RequestValidator(settings.twilio_auth_token)
            if settings.verify_twilio_signature and settings.twilio_auth_token
            else None
        )
        self.tools_open = settings.allow_unauthenticated and not (
            self.tool_tokens or self.validator
        )
        self.admin_open = settings.allow_unauthenticated and not self.admin_tokens
        self.session_cookie = cookie_name(settings.ui_secure_cookie)

    async def check_tool_call(self, request: web.Request) -> None:
        if self.tools_open:
            return
        if not (self.tool_tokens or self.validator):
            raise _refused(request, Forbidden("Tool authentication is not configured."))
        bearer = bearer_token(request.headers.get("Authorization"))
        query_token = request.rel_url.query.get(TOKEN_QUERY_PARAMETER)
        if self.tool_tokens and (
            self.tool_tokens.matches(bearer) or self.tool_tokens.matches(query_token)
        ):
            return
        signature = request.headers.get(SIGNATURE_HEADER) if self.validator else None
        if signature and self.validator is not None:
            body = await read_body(request, self.settings.max_body_bytes)
            url = public_url(
                request.scheme,
                request.host,
                request.raw_path,
                request.headers,
                self.settings.trust_proxy_headers,
            )
            if twilio_signature_valid(self.validator, url, request.content_type, body, signature):
                return
        if bearer is None and query_token is None and not signature:
            raise _refused(
                request,
                Unauthorized(
                    f"This tool endpoint needs credentials: {describe_tool_modes(self.settings)}."
                ),
            )
        raise _refused(
            request, Forbidden("The credentials sent with this tool call are not valid.")
        )

    def check_mcp(self, request: web.Request) -> None:
        """The `Origin` first (a browser page from elsewhere is refused whatever it
        sends), then a tool token as a bearer token; open as the tool endpoint is."""
        if not origin_allowed(request.headers.get("Origin"), self.settings.mcp_allowed_origins):
            raise _refused(
                request,
                Forbidden(
                    "Requests from this Origin may not use the MCP endpoint: only loopback "
                    "origins and HANDOVER_MCP_ALLOWED_ORIGINS may."
                ),
            )
        if self.tools_open:
            return
        if not self.tool_tokens:
            raise _refused(
                request,
                Forbidden(
                    "The MCP endpoint takes a tool token as 'Authorization: Bearer <token>', "
                    "and no HANDOVER_TOOL_TOKENS are configured."
                ),
            )
        bearer = bearer_token(request.headers.get("Authorization"))
        if bearer is None:
            raise _refused(
                request,
                Unauthorized(
                    "The MCP endpoint needs a tool token: send 'Authorization: Bearer <tool "
                    "token>' (not accepted in the URL)."
                ),
            )
        if not self.tool_tokens.matches(bearer):
            raise _refused(
                request, Forbidden("The tool token sent to the MCP endpoint is not valid.")
            )

    async def check_admin(self, request: web.Request) -> None:
        """An admin token as a bearer token, or else the operator page's session
        cookie (`api.ui.sessions.require_session`: CSRF on what changes something)."""
        if self.admin_open:
            return
        if not self.admin_tokens:
            raise _refused(
                request,
                Forbidden(
                    "Operator endpoints are disabled: admin tokens are not configured "
                    "(set HANDOVER_ADMIN_TOKENS)."
                ),
            )
        bearer = bearer_token(request.headers.get("Authorization"))
        if bearer is None:
            cookie = request.cookies.get(self.session_cookie)
            if cookie is not None:
                try:
                    await require_session(request.app[UI_SESSIONS], request, cookie)
                except ApiError as refusal:
                    raise _refused(request, refusal) from None
                return
            raise _refused(
                request,
                Unauthorized(
                    "Operator endpoints need an admin token: send "
                    "'Authorization: Bearer <admin token>' (not accepted in the URL), "
                    "or sign in to the operator page at /ui."
                ),
            )
        if not self.admin_tokens.matches(bearer):
            raise _refused(request, Forbidden("The admin token is not valid."))


def auth_middleware(settings: Settings) -> Middleware:
    """The aiohttp middleware; put it inside `json_errors` so refusals are JSON."""
    authenticator = Authenticator(settings)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        scope = scope_of(request.path, route.canonical if route is not None else None)
        if scope is Scope.TOOL:
            await authenticator.check_tool_call(request)
        elif scope is Scope.ADMIN:
            await authenticator.check_admin(request)
        elif scope is Scope.MCP:
            authenticator.check_mcp(request)
        return await handler(request)

    return authenticate


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The body, read once (aiohttp caches it for the handler), within the limit.

    A body aiohttp cannot decode (its Content-Encoding or chunking is broken) or
    that the caller stops sending midway is a 400 `invalid_body` and one WARNING
    line, not a 500 with a traceback (nor, for a dropped connection, a "Redis
    unavailable" 503).
    """
    if request.content_length is not None and request.content_length > max_bytes:
        raise BodyTooLarge(max_bytes)
    try:
        return await request.read()
    except (web.RequestPayloadError, ConnectionResetError) as exc:
        report_malformed_body(request, exc)
        raise InvalidBody(
            "could not be read: "
            + (
                "the connection closed before all of it arrived."
                if isinstance(exc, ConnectionResetError)
                else "it does not match its Content-Encoding or Transfer-Encoding header."
            ),
        ) from None


def _refused(request: web.Request, refusal: ApiError) -> ApiError:
    # The path only: the query string may hold ?token=. Method and path are the
    # caller's to choose (up to 8 KB each): cut, so a refusal costs the same whatever
    # the caller sends.
    method, path = caller_text(request.method), caller_text(request.path)
    logger.info("refused %s %s: %d %s", method, path, refusal.status, refusal.code)
    return refusal

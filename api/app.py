"""The HTTP receiver: acknowledge a tool call as soon as it is stored in Redis.

Kept thin: parsing lives in `api.parsing`, who may call in `api.auth`, the
refusals in `api.errors`, the answer (business hours, rate and backlog refusals)
in `api.handover`, the enqueue path (de-duplication and rate limits included)
in `shared.connections`, the MCP server in `api.mcp_server`.
No per-request log line on the tool endpoint: at contact centre volume that is
the hot path, and access logs would carry query strings (`?token=`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from api import admin, mcp_server, metrics, openapi, taskrouter_events, voice
from api.app_keys import (
    CLOCK,
    ENQUEUER,
    METRICS,
    READY_PROBE,
    REDIS,
    REPLAYER,
    SETTINGS,
    STORE,
    SUMMARY,
    UI_SESSIONS,
    UI_SIGN_INS,
)
from api.auth import auth_middleware, read_body, startup_warnings
from api.availability import Clock, system_clock
from api.errors import ApiError, BodyTooLarge, HttpError, Unavailable, UnknownTarget
from api.handover import hand_over
from api.http_errors import server_logger
from api.parsing import parse_tool_call
from api.ready_probe import ReadyProbe
from api.schema_endpoint import routes as schema_routes
from api.ui import page as ui_page
from api.ui.sessions import SessionStore, SignInLimiter
from shared.connections import Enqueuer, write_refusal
from shared.deadletters import Replayer
from shared.json_text import json_bytes
from shared.logging import caller_text, log_context, register_secrets
from shared.redis_client import create_redis
from shared.settings import DEFAULT_TARGET, Settings
from shared.store import HandoverStore
from shared.summary import SummaryReader

logger = logging.getLogger(f"flex_handover.{__name__}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place a refusal becomes its answer, JSON `{"error", "message"}`:
    ours (`api.errors`), aiohttp's own 404/405/413, and Redis trouble (503).

    Also the request's log context (`shared.logging`): what a handler learns (the
    handover's id, its conversation) is on every record logged for the request,
    its refusal's included, and gone before the next request on the same
    connection (one middleware for both: each costs every call a coroutine)."""
    with log_context():
        try:
            return await handler(request)
        except ApiError as exc:
            refusal = exc
        except web.HTTPRequestEntityTooLarge:
            refusal = BodyTooLarge(request.app[SETTINGS].max_body_bytes)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            refusal = HttpError(exc.status, exc.reason, request.path)
        except (RedisError, OSError) as exc:
            problem = write_refusal(exc)
            if problem:
                logger.warning(
                    "redis refuses writes (%s) while serving %s", problem, caller_text(request.path)
                )
            else:
                logger.warning("redis unavailable while serving %s", caller_text(request.path))
            refusal = Unavailable()
        return web.json_response(refusal.body(), status=refusal.status, headers=refusal.headers)


async def tool_call(request: web.Request) -> web.Response:
    """POST /tools/flex-handover[/{target}]: store the handover, answer at once.

    Outside the target's business hours the answer says so; a target that
    declines then stores nothing (`api.availability`)."""
    settings = request.app[SETTINGS]
    target = request.match_info.get("target", DEFAULT_TARGET)
    if target not in settings.targets:
        raise UnknownTarget(target)
    body = await read_body(request, settings.max_body_bytes)  # cached if auth read it
    handover = parse_tool_call(request.headers, request.content_type, body, target)
    status, answer, outcome = await hand_over(request.app, handover)
    request.app[METRICS].called(metrics.TOOL, outcome)
    return web.Response(
        body=json_bytes(answer), status=status, content_type="application/json", charset="utf-8"
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    problem = await request.app[READY_PROBE].problem()
    if problem is not None:
        raise Unavailable(problem)
    return web.json_response({"status": "ready"})


def create_app(
    settings: Settings, redis: aioredis.Redis | None = None, *, clock: Clock = system_clock
) -> web.Application:
    """The aiohttp application; owns its Redis client unless one is passed in.
    `clock`: what business hours are read at (tests pass their own)."""
    register_secrets(*settings.secrets)
    counters = metrics.build(settings)
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            json_errors,
            # Counts the refusals of the auth middleware too; absent when metrics are off.
            *([metrics.metrics_middleware(counters)] if counters.enabled else []),
            auth_middleware(settings),
        ],
        # aiohttp's request handler logs a malformed request through this logger:
        # one WARNING line each, not an ERROR traceback (see api.http_errors).
        handler_args={"logger": server_logger},
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[METRICS] = counters
    app.on_startup.append(_log_startup_warnings)
    app.on_response_prepare.append(ui_page.security_headers)
    app.add_routes(
        [
            web.post("/tools/flex-handover", tool_call),
            web.post("/tools/flex-handover/{target}", tool_call),
            *schema_routes(settings),
            *admin.routes(),
            *taskrouter_events.routes(settings),
            *voice.routes(settings),
            *openapi.routes(),
            *mcp_server.routes(settings),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            *metrics.routes(settings),
            *ui_page.routes(),
        ]
    )
    app.cleanup_ctx.append(_redis_context(settings, redis))
    return app


async def _log_startup_warnings(app: web.Application) -> None:
    for warning in startup_warnings(app[SETTINGS]):
        logger.warning("%s", warning)


def _redis_context(
    settings: Settings, redis: aioredis.Redis | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        client = redis or create_redis(settings.redis)
        app[REDIS] = client
        app[ENQUEUER] = Enqueuer(client, settings)
        app[STORE] = HandoverStore(client, settings.status_ttl_seconds)
        app[REPLAYER] = Replayer(client, settings)
        app[SUMMARY] = SummaryReader(client, tuple(sorted(settings.targets)))
        app[READY_PROBE] = ReadyProbe(client)
        app[UI_SESSIONS] = SessionStore(client, settings.ui_session_seconds, settings.admin_tokens)
        app[UI_SIGN_INS] = SignInLimiter(client)
        yield
        if redis is None:
            await client.aclose()

    return context

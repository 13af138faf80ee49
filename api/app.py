"""The HTTP receiver: acknowledge a tool call as soon as it is stored in Redis.

Kept thin: parsing lives in `api.parsing`, who may call in `api.auth`, the
enqueue path (de-duplication and rate limits included) in `shared.connections`.
No per-request log line on the tool endpoint: at contact centre volume that is
the hot path, and access logs would carry query strings (`?token=`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from api import admin, openapi
from api.auth import auth_middleware, read_body, startup_warnings
from api.http_errors import server_logger
from api.app_keys import ENQUEUER, READY_PROBE, REDIS, SETTINGS, STORE
from api.parsing import ToolCallError, parse_tool_call
from api.ready_probe import ReadyProbe
from shared.connections import Enqueuer, create_redis, write_refusal
from shared.logging import caller_text, register_secrets
from shared.settings import DEFAULT_TARGET, Settings
from shared.store import HandoverStore

logger = logging.getLogger(f"flex_handover.{__name__}")

RETRY_AFTER_SECONDS = 2
UNAVAILABLE_MESSAGE = (
    "The handover service cannot store requests right now. Please try again in a few seconds."
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, error: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status, headers=headers)


def unavailable(message: str = UNAVAILABLE_MESSAGE) -> web.Response:
    return error_response(
        503, "unavailable", message, **{"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal is JSON `{"error", "message"}`, aiohttp's own 404/405/413 too."""
    try:
        return await handler(request)
    except ToolCallError as exc:
        return error_response(exc.status, exc.error, exc.message, **exc.headers)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes
        return error_response(
            413, "body_too_large", f"The request body is larger than {limit} bytes."
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(
            exc.status, exc.reason.lower().replace(" ", "_"), f"{exc.reason}: {request.path}"
        )
    except (RedisError, OSError) as exc:
        refusal = write_refusal(exc)
        if refusal:
            logger.warning(
                "redis refuses writes (%s) while serving %s", refusal, caller_text(request.path)
            )
        else:
            logger.warning("redis unavailable while serving %s", caller_text(request.path))
        return unavailable()


async def tool_call(request: web.Request) -> web.Response:
    """POST /tools/flex-handover[/{target}]: store the handover, answer at once."""
    settings = request.app[SETTINGS]
    target = request.match_info.get("target", DEFAULT_TARGET)
    if target not in settings.targets:
        raise ToolCallError(
            404, "unknown_target", f"There is no handover target named '{target}'."
        )
    body = await read_body(request, settings.max_body_bytes)  # cached if auth read it
    handover = parse_tool_call(request.headers, request.content_type, body, target)
    result = await request.app[ENQUEUER].enqueue(handover)
    if result.rate_limited:
        raise rate_limited(result.limited_by, result.retry_after_seconds, settings)
    if result.backlog_full:
        raise backlog_full(result.retry_after_seconds)
    return web.json_response(
        {
            "handover_id": result.handover_id,
            "status": result.state.value,
            "status_url": f"/handovers/{result.handover_id}",
            "message": settings.handover_message,
        },
        status=202 if result.created else 200,
    )


def rate_limited(limited_by: str, retry_after: int, settings: Settings) -> ToolCallError:
    """429: too many NEW handovers for this conversation or customer; nothing stored."""
    who = "this customer" if limited_by == "identity" else "this conversation"
    return ToolCallError(
        429,
        "rate_limited",
        f"Too many handovers were requested for {who} within "
        f"{settings.rate_limit_window_seconds} seconds. Try again in {retry_after} seconds.",
        {"Retry-After": str(retry_after)},
    )


def backlog_full(retry_after: int) -> ToolCallError:
    """503: HANDOVER_MAX_PENDING handovers wait for a worker; nothing stored."""
    return ToolCallError(
        503,
        "backlog_full",
        "Too many customers are waiting to be transferred right now, so this transfer "
        f"could not be started. Please try again in {retry_after} seconds.",
        {"Retry-After": str(retry_after)},
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    problem = await request.app[READY_PROBE].problem()
    if problem is not None:
        return unavailable(problem)
    return web.json_response({"status": "ready"})


def create_app(settings: Settings, redis: aioredis.Redis | None = None) -> web.Application:
    """The aiohttp application; owns its Redis client unless one is passed in."""
    register_secrets(*settings.secrets)
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[json_errors, auth_middleware(settings)],
        # aiohttp's request handler logs a malformed request through this logger:
        # one WARNING line each, not an ERROR traceback (see api.http_errors).
        handler_args={"logger": server_logger},
    )
    app[SETTINGS] = settings
    app.on_startup.append(_log_startup_warnings)
    app.add_routes(
        [
            web.post("/tools/flex-handover", tool_call),
            web.post("/tools/flex-handover/{target}", tool_call),
            *admin.routes(),
            *openapi.routes(),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
        ]
    )
    app.cleanup_ctx.append(_redis_context(settings, redis))
    return app


async def _log_startup_warnings(app: web.Application) -> None:
    for warning in startup_warnings(app[SETTINGS]):
        logger.warning("%s", warning)


def _redis_context(settings: Settings, redis: aioredis.Redis | None):
    async def context(app: web.Application):
        client = redis or create_redis(settings.redis_url or "")
        app[REDIS] = client
        app[ENQUEUER] = Enqueuer(client, settings)
        app[STORE] = HandoverStore(client, settings.status_ttl_seconds)
        app[READY_PROBE] = ReadyProbe(client)
        yield
        if redis is None:
            await client.aclose()

    return context

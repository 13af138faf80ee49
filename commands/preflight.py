"""`flex-handover check`: what the production settings can be shown to reach before
the first handover, without creating anything at Twilio or keeping anything in Redis.

One function per check, each returning a `Result` and never raising: a check that
cannot look is a FAIL that says why, not a traceback. The Twilio reads go through
the worker's bounded client (`worker.flex_client.FlexClient`: every request under
the attempt timeout, answers read bounded), so a hung Twilio cannot hang the check.
`line` and `exit_code` are pure; `run_check` does the I/O and the printing.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from shared import redis_keys, sids
from shared.logging import redact, register_secrets
from shared.settings import RedisTarget, Settings, Target

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from worker.flex_client import FlexClient

logger = logging.getLogger(f"flex_handover.{__name__}")

Status = Literal["ok", "warn", "FAIL"]
SCRATCH_TTL_MS = 10_000
"""The scratch key's lifetime: gone even if the DEL never arrives."""
SAFE_POLICIES = ("noeviction",)
"""Any other `maxmemory-policy` may evict a stored handover the API acknowledged."""
CHECK_TIMEOUT_SECONDS = 15.0
"""A bound on each check as a whole, over the client's own per-request timeout."""


@dataclass(frozen=True)
class Result:
    name: str
    status: Status
    reason: str


def line(result: Result) -> str:
    """`ok    redis: reachable …`: the status padded so the names line up (pure)."""
    return f"{result.status:<4}  {result.name}: {redact(result.reason)}"


def exit_code(results: Sequence[Result]) -> int:
    """0 only when every check passed; a warning is not a pass (pure)."""
    return 0 if results and all(result.status == "ok" for result in results) else 1


def run_check() -> int:
    """The command: read the worker's settings, run every check, one line each."""
    settings = Settings.from_env(role="worker")
    register_secrets(*settings.secrets)
    results = asyncio.run(run_checks(settings))
    for result in results:
        print(line(result), file=sys.stdout if result.status == "ok" else sys.stderr)
    return exit_code(results)


async def run_checks(settings: Settings) -> list[Result]:
    """Every check, in order: Redis, then Twilio (the rest of Twilio's are not
    tried once the credentials are refused: each would only say 401 again)."""
    from worker.flex_client import FlexClient

    results = list(await check_redis(settings.redis))
    client = FlexClient(settings)
    try:
        credentials = await bounded(check_credentials(client))
        results.append(credentials)
        twilio_checks: list[tuple[str, Callable[[], Awaitable[Result]]]] = [
            ("workspace", lambda: check_workspace(client, settings)),
        ]
        for target in settings.targets.values():
            twilio_checks.append(
                (f"workflow ({target.name})", _bind(check_workflow, client, settings, target))
            )
            twilio_checks.append(
                (
                    f"task channel ({target.name})",
                    _bind(check_task_channel, client, settings, target),
                )
            )
        twilio_checks.append(("taskrouter task read", lambda: check_task_read(client, settings)))
        twilio_checks.append(("conversations read", lambda: check_conversations_read(client)))
        for name, check in twilio_checks:
            if credentials.status != "ok":
                results.append(Result(name, "FAIL", "not checked: the Twilio credentials failed"))
            else:
                results.append(await bounded(check(), name))
    finally:
        await client.close()
    return results


def _bind(
    check: Callable[[FlexClient, Settings, Target], Awaitable[Result]],
    client: FlexClient,
    settings: Settings,
    target: Target,
) -> Callable[[], Awaitable[Result]]:
    return lambda: check(client, settings, target)


async def bounded(check: Awaitable[Result], name: str = "twilio credentials") -> Result:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            return await check
    except TimeoutError:
        return Result(name, "FAIL", f"no answer within {CHECK_TIMEOUT_SECONDS:g}s")


# --- Redis --------------------------------------------------------------------------


async def check_redis(where: RedisTarget | str) -> tuple[Result, Result]:
    """Reachable and writable (a scratch key set with a short TTL, then deleted),
    and its eviction policy."""
    from shared.redis_client import create_redis

    redis = create_redis(where)
    try:
        writable = await check_redis_writable(redis)
        if writable.status != "ok":
            return writable, Result("redis maxmemory-policy", "FAIL", "not checked: Redis failed")
        return writable, await check_redis_policy(redis)
    finally:
        await redis.aclose()


async def check_redis_writable(redis: Redis) -> Result:
    from redis.exceptions import RedisError

    key = f"{redis_keys.PREFIX}:check:{uuid.uuid4().hex}"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await redis.set(key, "1", px=SCRATCH_TTL_MS)
            await redis.delete(key)
    except (RedisError, OSError, TimeoutError) as exc:
        return Result("redis", "FAIL", f"cannot write (REDIS_URL): {_redis_reason(exc)}")
    return Result("redis", "ok", "reachable and writable")


async def check_redis_policy(redis: Redis) -> Result:
    """Warns unless `noeviction`; a server that refuses CONFIG (some managed ones) is
    a warning too: the policy must then be checked by hand."""
    from redis.exceptions import RedisError

    name = "redis maxmemory-policy"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            config: dict[str, Any] = await redis.config_get("maxmemory-policy")
    except (RedisError, OSError, TimeoutError) as exc:
        return Result(
            name, "warn", f"cannot read it ({_redis_reason(exc)}): check it is noeviction"
        )
    return policy_result(config.get("maxmemory-policy"))


def policy_result(policy: object) -> Result:
    """The verdict on a `maxmemory-policy` value (pure)."""
    name = "redis maxmemory-policy"
    if policy in SAFE_POLICIES:
        return Result(name, "ok", str(policy))
    shown = policy if isinstance(policy, str) else "unknown"
    return Result(name, "warn", f"{shown}: Redis may evict acknowledged handovers; set noeviction")


def _redis_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


# --- Twilio ---------------------------------------------------------------------------


async def check_credentials(client: FlexClient) -> Result:
    """A list of workspaces (one item): any valid credentials may read it."""
    name = "twilio credentials"
    try:
        await client.twilio.taskrouter.v1.workspaces.page_async(page_size=1)
    except Exception as exc:  # noqa: BLE001 - every failure is a line
        return Result(name, "FAIL", twilio_reason(exc))
    return Result(name, "ok", "accepted (TaskRouter workspaces read)")


async def check_workspace(client: FlexClient, settings: Settings) -> Result:
    return await _fetch_exists(
        "workspace", str(settings.flex_workspace_sid), lambda: _workspace(client, settings)
    )


async def check_workflow(client: FlexClient, settings: Settings, target: Target) -> Result:
    def workflow() -> Any:
        return _workspace(client, settings).workflows(
            sids.url_segment(target.workflow_sid, sids.WORKFLOW)
        )

    return await _fetch_exists(f"workflow ({target.name})", target.workflow_sid, workflow)


async def check_task_channel(client: FlexClient, settings: Settings, target: Target) -> Result:
    """By unique name or TC SID: `GET …/TaskChannels/{Sid}` takes either."""

    def channel() -> Any:
        return _workspace(client, settings).task_channels(quote(target.task_channel, safe=""))

    return await _fetch_exists(f"task channel ({target.name})", target.task_channel, channel)


async def _fetch_exists(name: str, what: str, resource: Callable[[], Any]) -> Result:
    """One `fetch_async` of a TaskRouter resource: `ok` when it exists, else why not.
    `resource` builds the context inside the guard (a bad SID raises there)."""
    try:
        await resource().fetch_async()
    except Exception as exc:  # noqa: BLE001 - every failure is a line
        return Result(name, "FAIL", f"{what}: {twilio_reason(exc)}")
    return Result(name, "ok", f"{what} exists")


async def check_task_read(client: FlexClient, settings: Settings) -> Result:
    """The read the worker's TaskRouter lookup makes (one task, no filter)."""
    name = "taskrouter task read"
    try:
        await _workspace(client, settings).tasks.page_async(page_size=1)
    except Exception as exc:  # noqa: BLE001 - every failure is a line
        return Result(name, "FAIL", twilio_reason(exc))
    return Result(name, "ok", "tasks can be listed (the lookup after an ambiguous create)")


async def check_conversations_read(client: FlexClient) -> Result:
    name = "conversations read"
    try:
        await client.twilio.conversations.v1.conversations.page_async(page_size=1)
    except Exception as exc:  # noqa: BLE001 - every failure is a line
        return Result(name, "FAIL", twilio_reason(exc))
    return Result(name, "ok", "Conversations can be listed")


def _workspace(client: FlexClient, settings: Settings) -> Any:
    return client.twilio.taskrouter.v1.workspaces(
        sids.url_segment(settings.flex_workspace_sid, sids.WORKSPACE)
    )


_STATUS_MEANING = {
    401: "credentials refused",
    403: "permission refused",
    404: "not found",
    429: "rate-limited",
}


def twilio_reason(exc: BaseException) -> str:
    """A failed Twilio read in a few words: what its status means, the status and
    Twilio's code (`worker.errors.classify` finds them in a failed page too); never
    the answer's text, which may echo a URL or a request (pure)."""
    from worker.errors import classify

    if isinstance(exc, ValueError):
        return f"not put in a URL ({exc})"
    error = classify(exc, CHECK_TIMEOUT_SECONDS)
    if error.status is None:
        return error.message
    meaning = _STATUS_MEANING.get(error.status) or (
        "Twilio failed" if error.status >= 500 else "refused"
    )
    code = f", code {error.code}" if error.code else ""
    return f"{meaning} (HTTP {error.status}{code})"

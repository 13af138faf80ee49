"""The operator's commands, `flex-handover failed`, `flex-handover list`,
`flex-handover replay` and `flex-handover migrate-keys`: the same records and refusals as the API's
/handovers?state=… and /handovers/{id}/replay (shared/handover_list.py,
shared/deadletters.py), for a shell with only REDIS_URL, printed as a table, as
JSON or one line per id."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from shared import deadletters, handover_list
from shared.logging import redact
from shared.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

ERROR_COLUMN_WIDTH = 120  # the full error is in --json


def run_operator(command: Coroutine[Any, Any, int]) -> int:
    """Run `failed`, `list` or `replay`; an unreachable Redis is one line, not a traceback."""
    from redis.exceptions import RedisError

    try:
        return asyncio.run(command)
    except (RedisError, OSError) as exc:
        print(f"flex-handover: cannot use Redis (REDIS_URL): {redact(str(exc))}", file=sys.stderr)
        return 2


async def list_failed(limit: int, before: str | None, *, as_json: bool) -> int:
    """`flex-handover failed`: the API's list, as a table or the same JSON."""
    settings = Settings.from_env(role="operator")
    async with _operator_redis(settings) as redis:
        try:
            page = await deadletters.list_failed(redis, limit, before)
        except ValueError as exc:
            print(f"flex-handover failed: {exc}", file=sys.stderr)
            return 2
    records = [record.to_public() for record in page.handovers]
    if as_json:
        print(json.dumps({"handovers": records, "next": page.next}, indent=2))
        return 0
    if not records:
        print("No failed handovers.")
        return 0
    print(failed_table(records))
    if page.next:
        print(f"\nMore: flex-handover failed --before {page.next}")
    return 0


async def list_handovers(
    state: str, target: str | None, limit: int, before: str | None, *, as_json: bool
) -> int:
    """`flex-handover list`: the API's `GET /handovers?state=…`, as a table or the same JSON."""
    settings = Settings.from_env(role="operator")
    async with _operator_redis(settings) as redis:
        try:
            page = await handover_list.list_handovers(redis, state, limit, before, target)
        except ValueError as exc:
            print(f"flex-handover list: {exc}", file=sys.stderr)
            return 2
    records = [record.to_public() for record in page.handovers]
    if as_json:
        print(json.dumps({"handovers": records, "next": page.next}, indent=2))
        return 0
    if records:
        print(handover_table(records))
    else:
        print("No handovers on this page." if page.next else "No handovers.")
    if page.next:
        more = f"flex-handover list --state {state}"
        if target:
            more += f" --target {target}"
        print(f"\nMore: {more} --before {page.next}")
    return 0


async def replay(handover_ids: Sequence[str]) -> int:
    """`flex-handover replay ID…`: one line per id; 1 if any was refused."""
    settings = Settings.from_env(role="operator")
    refused = 0
    async with _operator_redis(settings) as redis:
        replayer = deadletters.Replayer(redis, settings)
        for handover_id in handover_ids:
            try:
                result = await replayer.replay(handover_id)
            except deadletters.ReplayContended as exc:
                refused += 1
                print(f"{handover_id}: not replayed: {exc}")
                continue
            if result.record is not None:
                print(f"{handover_id}: replayed, queued (replay {result.record.replays})")
            else:
                refused += 1
                refusal = result.refusal.value if result.refusal else "unknown"
                print(f"{handover_id}: refused ({refusal}): {result.message}")
    return 1 if refused else 0


async def migrate_keys() -> int:
    """`flex-handover migrate-keys`: rename an earlier version's keys now (the
    worker does it at start); says what moved."""
    from shared.key_migration import migrate_legacy_keys

    settings = Settings.from_env(role="operator")
    if settings.redis.cluster:
        print("nothing to migrate: an earlier version could not run on a Redis Cluster")
        return 0
    async with _operator_redis(settings) as redis:
        report = await migrate_legacy_keys(redis)
    print(
        f"moved {report.jobs_moved} queued jobs and renamed {report.keys_renamed} other keys; "
        f"{report.keys_left} left as they were (their new name was taken)"
    )
    return 0


@contextlib.asynccontextmanager
async def _operator_redis(settings: Settings) -> AsyncIterator[Redis]:
    """A Redis client for one operator command, closed when it is done."""
    from shared.redis_client import create_redis

    redis = create_redis(settings.redis)
    try:
        yield redis
    finally:
        await redis.aclose()


_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("HANDOVER", lambda r: r["handover_id"]),
    ("FAILED AT (UTC)", lambda r: (r["finished_at"] or "")[:19].replace("T", " ")),
    ("CONVERSATION", lambda r: r["conversation_sid"]),
    ("IDENTITY", lambda r: r["identity"]),
    ("TARGET", lambda r: r["target"]),
    ("ATTEMPTS", lambda r: str(r["attempts"])),
    ("LAST ERROR", lambda r: _error_text(r["error"])),
)


_LIST_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("HANDOVER", lambda r: r["handover_id"]),
    ("STATE", lambda r: r["state"]),
    ("CREATED AT (UTC)", lambda r: (r["created_at"] or "")[:19].replace("T", " ")),
    ("CONVERSATION", lambda r: r["conversation_sid"] or r["call_sid"] or ""),
    ("IDENTITY", lambda r: r["identity"]),
    ("TARGET", lambda r: r["target"]),
    ("ATTEMPTS", lambda r: str(r["attempts"])),
    ("LAST ERROR", lambda r: _error_text(r["error"])),
)


def failed_table(records: list[dict[str, Any]]) -> str:
    """Left-aligned columns from the public (masked) records."""
    return _table(records, _COLUMNS)


def handover_table(records: list[dict[str, Any]]) -> str:
    """`failed_table` with each handover's state and creation time."""
    return _table(records, _LIST_COLUMNS)


def _table(
    records: list[dict[str, Any]], columns: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...]
) -> str:
    rows = [[name for name, _ in columns]]
    rows += [[cell(record) for _, cell in columns] for record in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns) - 1)]
    return "\n".join(
        "  ".join(
            [*(value.ljust(width) for value, width in zip(row, widths, strict=False)), row[-1]]
        ).rstrip()
        for row in rows
    )


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    origin = " ".join(str(part) for part in (error["status"], error["code"]) if part is not None)
    text = f"[{origin}] {error['message']}" if origin else error["message"]
    if len(text) > ERROR_COLUMN_WIDTH:
        text = text[: ERROR_COLUMN_WIDTH - 1] + "…"
    return text

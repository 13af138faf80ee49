"""Renames the keys an earlier version wrote before every key had the hash tag.

Why: shared/redis_keys.py now puts `{flex_handover}` in every key (one Redis
Cluster slot). A Redis that an earlier version wrote to still holds its handovers
under `flex_handover:…` and its queued jobs under untagged job ids; unrenamed,
they would be invisible to this version and never delivered. No library renames
an application's own keys, so this does, and the worker runs it at every start
(`migrate_if_needed`: one EXISTS when there is nothing to do), before it takes a
job; `flex-handover migrate-keys` runs it by hand.

What moves, in this order:
1. each job of the old queue, with its arq keys, to its tagged job id
   (`lua/migrate_job.lua`, one job per step, so never half moved);
2. every other `flex_handover:…` key to `{flex_handover}:…` (RENAMENX: value,
   type and TTL unchanged).
A key whose new name is already taken (written by this version meanwhile) is left
as it is and counted, never overwritten. Running it twice, or in two workers at
once, moves each key once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from redis.exceptions import ResponseError

from shared import lua_scripts, redis_keys

logger = logging.getLogger(f"flex_handover.{__name__}")

# Moves one queued job: shared/lua/migrate_job.lua.
MIGRATE_JOB_SCRIPT = lua_scripts.script("shared", "migrate_job.lua")
LEGACY_QUEUE = f"{redis_keys.LEGACY_PREFIX}:queue"
# Any of these existing means an earlier version's handovers are stored: its queue,
# its recent index (every handover is in it while its record lives), its failed index.
LEGACY_MARKERS = (
    LEGACY_QUEUE,
    f"{redis_keys.LEGACY_PREFIX}:recent",
    f"{redis_keys.LEGACY_PREFIX}:failed",
)
SCAN_COUNT = 1000


@dataclass(frozen=True)
class MigrationReport:
    jobs_moved: int = 0
    keys_renamed: int = 0
    keys_left: int = 0
    """Old keys whose new name was taken: left where they are."""

    @property
    def moved_anything(self) -> bool:
        return bool(self.jobs_moved or self.keys_renamed or self.keys_left)


def tagged_name(legacy_key: str) -> str:
    """`flex_handover:handover:ho_1` -> `{flex_handover}:handover:ho_1`."""
    return redis_keys.PREFIX + legacy_key.removeprefix(redis_keys.LEGACY_PREFIX)


def tagged_job_id(legacy_job_id: str) -> str:
    """A delivery's `ho_1` -> `{flex_handover}:ho_1`, a hand-back's
    `hand_back:ho_1` -> `{flex_handover}:hand_back:ho_1` (redis_keys' job ids)."""
    return redis_keys.HANDOVER_JOB_PREFIX + legacy_job_id


async def migrate_if_needed(redis: Any, *, cluster: bool = False) -> MigrationReport:
    """Migrate when an earlier version's keys are there (one EXISTS otherwise).
    Never on a Redis Cluster: an earlier version could not have run there (its
    scripts touched keys of several slots, which a cluster refuses), and its
    untagged names live in other slots, out of this client's reach."""
    if cluster or not await redis.exists(*LEGACY_MARKERS):
        return MigrationReport()
    report = await migrate_legacy_keys(redis)
    logger.warning(
        "renamed the keys of an earlier version (before the hash tag): %d queued jobs, "
        "%d other keys; %d left as they were (their new name was taken)",
        report.jobs_moved,
        report.keys_renamed,
        report.keys_left,
    )
    return report


async def migrate_legacy_keys(redis: Any) -> MigrationReport:
    """Move every queued job, then rename every other key of the old layout."""
    jobs_moved = await _move_jobs(redis)
    renamed, left = 0, 0
    async for key in redis.scan_iter(match=f"{redis_keys.LEGACY_PREFIX}:*", count=SCAN_COUNT):
        name = _text(key)
        if name == LEGACY_QUEUE:
            continue  # its jobs moved above; what is left (a job whose id was taken) stays
        try:
            if await redis.renamenx(name, tagged_name(name)):
                renamed += 1
            else:
                left += 1
        except ResponseError:  # no such key: another run renamed it meanwhile
            continue
    return MigrationReport(jobs_moved, renamed, left)


async def _move_jobs(redis: Any) -> int:
    script = redis.register_script(MIGRATE_JOB_SCRIPT)
    moved = 0
    async for member, _score in redis.zscan_iter(LEGACY_QUEUE, count=SCAN_COUNT):
        old = _text(member)
        new = tagged_job_id(old)
        keys = [LEGACY_QUEUE, redis_keys.QUEUE_NAME]
        for prefix in (job_key_prefix, in_progress_key_prefix, retry_key_prefix):
            keys += [prefix + old, prefix + new]
        moved += int(await script(keys=keys, args=[old, new]))
    return moved


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value

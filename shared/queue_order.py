"""Who goes first in the backlog: a target's `priority` as a head start.

arq's queue is a sorted set scored by when each job is due (ms), and both the
worker's pick (worker/lua/pick.lua) and a stock arq worker take the lowest
score first. A handover is scored `enqueue_ms - head start`: as if it had
arrived that much earlier. The target with the highest priority gets the full
`HANDOVER_PRIORITY_HEAD_START_SECONDS`, the others in proportion to theirs (no
priority: none). Bounded, so nothing starves: a handover is always picked
before one that arrived more than the full head start after it, whatever their
priorities. Only the first pick: a run handed back for a retry is re-scored to
when it is due again, as arq does.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.settings import Target


def head_starts_ms(targets: Mapping[str, Target], head_start_seconds: float) -> dict[str, int]:
    """Target name -> its head start in ms (targets with none left out)."""
    highest = max((target.priority or 0 for target in targets.values()), default=0)
    if highest <= 0 or head_start_seconds <= 0:
        return {}
    full_ms = head_start_seconds * 1000
    return {
        name: round(full_ms * target.priority / highest)
        for name, target in targets.items()
        if target.priority
    }


def queue_score(enqueue_ms: int, head_start_ms: int) -> int:
    """The job's score in arq's queue: its due time, moved earlier by its head start."""
    return enqueue_ms - head_start_ms

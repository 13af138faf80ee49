"""A target's priority as a bounded head start in arq's queue (pure)."""

from __future__ import annotations

import random

from shared.queue_order import head_starts_ms, queue_score
from shared.settings import Target

TARGETS = {
    "default": Target("default", "WW" + "0" * 32),
    "billing": Target("billing", "WW" + "1" * 32, priority=5),
    "urgent": Target("urgent", "WW" + "2" * 32, priority=10),
    "zero": Target("zero", "WW" + "3" * 32, priority=0),
}


def test_the_highest_priority_gets_the_full_head_start_and_others_their_share():
    assert head_starts_ms(TARGETS, 120) == {"billing": 60_000, "urgent": 120_000}
    assert head_starts_ms(TARGETS, 0) == {}
    assert head_starts_ms({"default": TARGETS["default"], "zero": TARGETS["zero"]}, 120) == {}
    assert head_starts_ms({}, 120) == {}


def test_higher_priority_goes_first_and_nothing_waits_past_the_bound():
    """Sort a random stream as the queue does; no handover is overtaken by one
    that arrived more than the full head start after it."""
    starts = head_starts_ms(TARGETS, 120)
    rng = random.Random(7)
    arrivals = sorted(rng.uniform(0, 600_000) for _ in range(3_000))
    jobs = [(int(t), rng.choice(list(TARGETS))) for t in arrivals]
    queue = sorted(jobs, key=lambda job: queue_score(job[0], starts.get(job[1], 0)))
    latest_ahead = 0
    for arrived, _ in queue:
        assert latest_ahead <= arrived + 120_000  # no one ahead came > 120 s later
        latest_ahead = max(latest_ahead, arrived)
    # An urgent handover goes before every default one that came up to 120 s before it,
    # and a billing one before every default one that came up to 60 s before it.
    for position, (arrived, name) in enumerate(queue):
        reach = {"urgent": 120_000, "billing": 60_000}.get(name, 0)
        behind = (a for a, n in queue[position + 1 :] if n == "default")
        assert all(a >= arrived - reach for a in behind)

"""Checks on how handovers ended, shared by the process-fault and backpressure tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from shared.store import HandoverStore
from standins.flex_simulator import FlexSimulator
from tests.support.processes import wait_until

# Short runs so that arq's in-progress key (job timeout + 10 s) expires soon.
FAST_RECOVERY = {
    "HANDOVER_RETRY_BUDGET_SECONDS": "0.5",
    "HANDOVER_ATTEMPT_TIMEOUT_SECONDS": "1",
    "HANDOVER_LOOKUP_GRACE_SECONDS": "0.2",
}
# How long the simulator holds a request: inside one attempt timeout, so the
# worker does not give up on it before the test acts.
HOLD_SECONDS = 0.8
# Start-up of a new worker and polling, on a busy machine.
SLACK_SECONDS = 20.0


async def wait_all_final(store: HandoverStore, handover_ids: Iterable[str], timeout: float) -> dict:
    """handover id → final public record; AssertionError naming the stragglers."""
    handover_ids = list(handover_ids)
    records: dict[str, dict] = {}

    async def all_final() -> bool:
        for handover_id in handover_ids:
            record = await store.get(handover_id)
            records[handover_id] = record.to_public() if record else {"state": "missing"}
        return all(r["state"] in ("succeeded", "failed") for r in records.values())

    try:
        await wait_until(all_final, timeout, "every handover final")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {records}") from None
    return records


def assert_each_ended_once(records: dict, simulator: FlexSimulator) -> None:
    """Every handover succeeded with its own Interaction, and Flex has no other."""
    assert {r["state"] for r in records.values()} == {"succeeded"}, records
    per_conversation = Counter(i["conversation_sid"] for i in simulator.interactions)
    expected = {r["conversation_sid"]: 1 for r in records.values()}
    assert per_conversation == expected, (
        "Interactions per conversation (a 2 is a duplicate):",
        dict(per_conversation),
    )
    sids = {i["sid"] for i in simulator.interactions}
    assert {r["interaction_sid"] for r in records.values()} == sids


async def snapshot(redis) -> dict[str, str]:
    """Every key and its value (or length): to prove a refusal changed nothing."""
    state = {}
    async for key in redis.scan_iter():
        kind = await redis.type(key)
        if kind == "string":
            state[key] = await redis.get(key)
        elif kind == "hash":
            state[key] = str(await redis.hgetall(key))
        elif kind == "zset":
            state[key] = str(await redis.zrange(key, 0, -1))
        else:
            state[key] = kind
    return state

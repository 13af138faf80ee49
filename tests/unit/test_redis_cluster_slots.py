"""Reading CLUSTER SLOTS: which primary serves the keys' slot (pure, no I/O)."""

from __future__ import annotations

from redis.crc import key_slot

from shared import redis_keys
from shared.redis_cluster import SLOT, nodes_named, slot_owner

# CLUSTER SLOTS as Redis 7 answers it: ranges, each with its primary, then replicas.
SLOTS = [
    [0, 5460, [b"10.0.0.1", 7000, b"id-a"], [b"10.0.0.4", 7003, b"id-d"]],
    [5461, 10922, [b"", 7001, b"id-b"]],  # an empty host: the node that was asked
    [10923, 16383, ["10.0.0.3", 7002, "id-c"]],
]


def test_every_key_the_product_writes_hashes_to_slot():
    for key in (redis_keys.QUEUE_NAME, redis_keys.arq_job_key("h-1"), redis_keys.ARQ_ABORT_KEY):
        assert key_slot(key.encode()) == SLOT, key
    assert 5461 <= SLOT <= 10922  # so the cases below test the middle range


def test_the_owner_is_the_primary_of_the_range_that_holds_the_slot():
    asked = ("10.0.0.9", 7009)
    assert slot_owner(SLOTS, 0, asked) == ("10.0.0.1", 7000)
    assert slot_owner(SLOTS, 5460, asked) == ("10.0.0.1", 7000)
    assert slot_owner(SLOTS, SLOT, asked) == ("10.0.0.9", 7001)
    assert slot_owner(SLOTS, 16383, asked) == ("10.0.0.3", 7002)
    assert slot_owner(SLOTS[:1], SLOT, asked) is None  # not served: the cluster is down
    assert slot_owner([], SLOT, asked) is None


def test_every_node_named_is_a_candidate_to_ask_next():
    assert nodes_named(SLOTS, ("10.0.0.9", 7009)) == [
        ("10.0.0.1", 7000), ("10.0.0.4", 7003), ("10.0.0.9", 7001), ("10.0.0.3", 7002),
    ]  # fmt: skip

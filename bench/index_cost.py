"""What the operator's index costs on the ack path: Redis bytes and Redis time per enqueue.

Stores N handovers through the real enqueue script (`shared.connections.Enqueuer`)
into a fresh Redis of its own, then reads:

- bytes per handover: `INFO memory` used_memory before and after, over N, and the
  recent index's own `MEMORY USAGE` over N (0 on a tree without one);
- Redis time per enqueue: `INFO commandstats` usec_per_call of EVALSHA (the time
  Redis spends running the script, without the network or the client).

Run it against two trees to compare, e.g. main's code and this branch's:

    PYTHONPATH=/path/to/main python bench/index_cost.py --handovers 20000
    python bench/index_cost.py --handovers 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after PYTHONPATH: another tree's code may be measured

import redis.asyncio as aioredis  # noqa: E402

from shared import redis_keys  # noqa: E402
from shared.connections import Enqueuer  # noqa: E402
from shared.model import HandoverRequest, Identity  # noqa: E402
from shared.settings import Settings  # noqa: E402
from standins.redis_server import LocalRedisServer  # noqa: E402

SETTINGS = Settings(rate_limit_per_conversation=0, rate_limit_per_identity=0, max_pending=0)


async def measure(url: str, handovers: int, batch: int) -> dict[str, float]:
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    enqueuer = Enqueuer(redis, SETTINGS)
    identity = Identity.parse("whatsapp:+14155550123")
    summary = "The customer asks for a refund of order 1234. " * 8
    await enqueuer.enqueue(HandoverRequest("CH" + "0" * 32, identity, "default"))  # load it
    await redis.config_resetstat()
    before = int((await redis.info("memory"))["used_memory"])
    for start in range(0, handovers, batch):
        await asyncio.gather(
            *(
                enqueuer.enqueue(
                    HandoverRequest(
                        "CH" + f"{n + 1:032x}",
                        identity,
                        "default",
                        {"reason": "refund", "summary": summary},
                    )
                )
                for n in range(start, min(start + batch, handovers))
            )
        )
    after = int((await redis.info("memory"))["used_memory"])
    stats = await redis.info("commandstats")
    recent = getattr(redis_keys, "RECENT_INDEX", None)  # None on a tree without it
    index = await redis.memory_usage(recent) if recent else None
    await redis.aclose()
    return {
        "bytes_per_handover": (after - before) / handovers,
        "index_bytes_per_handover": (index or 0) / handovers,
        "evalsha_usec_per_call": float(stats["cmdstat_evalsha"]["usec_per_call"]),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handovers", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=64, help="concurrent enqueues")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for _ in range(args.rounds):
        server = LocalRedisServer()
        server.start()
        try:
            runs.append(await measure(server.url, args.handovers, args.batch))
        finally:
            server.stop()
    medians = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    print(json.dumps({"tree": str(Path(sys.modules["shared"].__file__).parents[1]), **medians}))


if __name__ == "__main__":
    asyncio.run(main())

"""The peer for bench/worker_throughput.py: the arq worker a user would write.

Stock `arq.Worker` on the same queue and the same job records as the service
(shared.arq_jobs), a job that makes one bounded `create_async` and writes one
status key: no claim, no TaskRouter lookup, no retry policy, no rate limit, no
logging. The twilio client gets a connection per job slot, as the service's
worker has (aiohttp's default pool of 100 would cap it at 100 in flight), so
the comparison is of the work per handover, not of a pool setting.

    python bench/naive_worker.py --redis-url redis://… --flex-url http://… --concurrency 100
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker, func
from harness import interaction_params, twilio_client
from twilio.rest import Client

from shared import redis_keys
from shared.arq_jobs import job_deserializer, job_serializer

CREATE_TIMEOUT_SECONDS = 10.0
STATUS_TTL_SECONDS = 3600


async def deliver(ctx: dict[str, Any], handover_id: str, conversation_sid: str) -> None:
    client: Client = ctx["twilio"]
    async with asyncio.timeout(CREATE_TIMEOUT_SECONDS):  # twilio-python ignores its own
        interaction = await client.flex_api.v1.interaction.create_async(
            **interaction_params(conversation_sid, handoverId=handover_id)
        )
    await ctx["redis"].set(
        f"naive:status:{handover_id}", f"succeeded {interaction.sid}", ex=STATUS_TTL_SECONDS
    )


def main(args: argparse.Namespace) -> None:
    async def startup(ctx: dict[str, Any]) -> None:
        ctx["twilio"], ctx["http"] = twilio_client(args.flex_url, args.concurrency)

    async def shutdown(ctx: dict[str, Any]) -> None:
        await ctx["http"].close()

    worker = Worker(
        functions=[func(deliver, name=redis_keys.HANDOVER_FUNCTION, keep_result=0)],
        queue_name=redis_keys.QUEUE_NAME,
        redis_settings=RedisSettings.from_dsn(args.redis_url),
        on_startup=startup,
        on_shutdown=shutdown,
        max_jobs=args.concurrency,
        keep_result=0,
        poll_delay=args.poll_delay,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )
    worker.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--flex-url", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--poll-delay", type=float, default=0.05)
    main(parser.parse_args())

"""The peer for bench/worker_throughput.py: the arq worker a user would write.

Stock `arq.Worker` on the same queue and the same job records as the service
(shared.arq_jobs), a job that makes one bounded `create_async` and writes one
status key: no claim, no TaskRouter lookup, no retry policy, no rate limit, no
logging. The twilio client gets a connection per job slot, as the service's
worker has (aiohttp's default pool of 100 would cap it at 100 in flight), so
the comparison is of the work per handover, not of a pool setting.

With `--same-requests` the job also makes the three other requests the
service makes for a handover (the channel read that shows it was delivered,
the Conversation's fetch and its attributes' update that tell the bot), one
after the other, with none of the service's guarantees: what four requests
cost in twilio-python and aiohttp, so that the service's CPU over this peer's
is the price of its guarantees alone.

    python bench/naive_worker.py --redis-url redis://… --flex-url http://… --concurrency 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    if ctx["same_requests"]:
        async with asyncio.timeout(CREATE_TIMEOUT_SECONDS):
            await _tell_the_conversation(client, interaction, conversation_sid, handover_id)
    await ctx["redis"].set(
        f"naive:status:{handover_id}", f"succeeded {interaction.sid}", ex=STATUS_TTL_SECONDS
    )


async def _tell_the_conversation(
    client: Client, interaction: Any, conversation_sid: str, handover_id: str
) -> None:
    """The service's three other requests: the channel read, the Conversation's
    fetch and its attributes' update."""
    channel_sid = interaction.channel["sid"]
    await client.flex_api.v1.interaction(interaction.sid).channels(channel_sid).fetch_async()
    conversation = client.conversations.v1.conversations(conversation_sid)
    attributes = json.loads((await conversation.fetch_async()).attributes or "{}")
    attributes["handover"] = {"handoverId": handover_id, "status": "handed_over"}
    await conversation.update_async(attributes=json.dumps(attributes))


def main(args: argparse.Namespace) -> None:
    async def startup(ctx: dict[str, Any]) -> None:
        ctx["twilio"], ctx["http"] = twilio_client(args.flex_url, args.concurrency)
        ctx["twilio"].conversations.base_url = args.flex_url
        ctx["same_requests"] = args.same_requests

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
    parser.add_argument("--same-requests", action="store_true",
                        help="also the channel read and the Conversation's fetch and update")  # fmt: skip
    main(parser.parse_args())

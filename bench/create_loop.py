"""Baseline for bench/worker_throughput.py: a bare loop of `create_async` calls.

The twilio client library's own cost per Interaction, with no queue, no Redis
and no retries: `--count` creates from `--concurrency` coroutines against the
simulator at `--url`. Prints one line: `created <n> in <s> s, cpu <ms> ms`.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import ClientSession, TCPConnector
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client


async def main(args: argparse.Namespace) -> None:
    http = AsyncTwilioHttpClient(pool_connections=False)
    # A connection per coroutine, as the worker has one per job slot (aiohttp's
    # default pool of 100 would cap the loop at 100 requests in flight).
    http.session = ClientSession(connector=TCPConnector(limit=max(100, args.concurrency)))
    client = Client(args.account_sid, args.auth_token, http_client=http)
    client.flex_api.base_url = args.url
    channel = {"type": "whatsapp", "initiated_by": "customer",
               "properties": {"media_channel_sid": "CH" + "0" * 32}}  # fmt: skip
    routing = {"properties": {"workspace_sid": "WS" + "0" * 32, "workflow_sid": "WW" + "0" * 32,
                              "task_channel_unique_name": "chat",
                              "attributes": {"from": "whatsapp:+15555550100"}}}  # fmt: skip
    remaining = iter(range(args.count))
    created = 0

    async def loop() -> None:
        nonlocal created
        for _ in remaining:
            await client.flex_api.v1.interaction.create_async(channel=channel, routing=routing)
            created += 1

    cpu_started, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(args.concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await http.close()
    print(f"created {created} in {elapsed:.3f} s, cpu {cpu * 1000:.1f} ms", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token", required=True)
    asyncio.run(main(parser.parse_args()))

"""Baseline for bench/worker_throughput.py: a bare loop of `create_async` calls.

The twilio client library's own cost per Interaction, with no queue, no Redis
and no retries: `--count` creates from `--concurrency` coroutines against the
simulator at `--url`. Prints one line: `created <n> in <s> s, cpu <ms> ms`.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from harness import interaction_params, twilio_client


async def main(args: argparse.Namespace) -> None:
    client, http = twilio_client(args.url, args.concurrency, args.account_sid, args.auth_token)
    params = interaction_params("CH" + "0" * 32)
    remaining = iter(range(args.count))
    created = 0

    async def loop() -> None:
        nonlocal created
        for _ in remaining:
            await client.flex_api.v1.interaction.create_async(**params)
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

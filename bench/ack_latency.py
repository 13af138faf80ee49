"""How long the AI agent waits for its handover tool call: flex-handover vs inline.

Starts real parts on loopback: a Redis server, the Flex simulator answering
`POST /v1/Interactions` after --flex-latency seconds (Twilio's own latency),
`flex-handover api` + `flex-handover worker`, and the inline baseline
(bench/inline_receiver.py, the handover done inside the tool call as Twilio's
sample does). Then, alternating the two receivers round by round so that both
see the same machine noise, it sends --requests tool calls per round from
--concurrency connections (an aiohttp load generator in this process), each
for a new conversation, and prints requests/s, p50/p99/max latency and the
ratio of the medians.

    python bench/ack_latency.py                  # defaults below
    python bench/ack_latency.py --requests 50 --rounds 1   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import aiohttp
from harness import (
    ROOT,
    flex_handover_command,
    percentile,
    service_env,
    start_process,
    stop_processes,
    tool_headers,
    wait_listening,
)

from standins.redis_server import LocalRedisServer, free_port


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0

    def add(self, other: Sample) -> None:
        self.latencies += other.latencies
        self.errors += other.errors
        self.elapsed += other.elapsed


async def load(url: str, requests: int, concurrency: int, offset: int) -> Sample:
    """`requests` tool calls from `concurrency` connections, each a new conversation."""
    sample = Sample()
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client() -> None:
            for n in counter:
                headers = tool_headers(offset + n)
                started = time.perf_counter()
                async with http.post(url, json={"reason": "bench"}, headers=headers) as response:
                    await response.read()
                    ok = response.status in (200, 202)
                sample.latencies.append(time.perf_counter() - started)
                sample.errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        sample.elapsed = time.perf_counter() - started
    return sample


def report(name: str, sample: Sample) -> str:
    ms = [x * 1000 for x in sample.latencies]
    rate = len(ms) / sample.elapsed if sample.elapsed else 0.0
    return (
        f"{name:<22} {len(ms):>6} {rate:>9.0f} {statistics.median(ms):>9.2f} "
        f"{percentile(ms, 0.99):>9.2f} {max(ms):>9.2f} {sample.errors:>6}"
    )


async def main(args: argparse.Namespace) -> int:
    command = flex_handover_command()
    redis = LocalRedisServer()
    redis.start()
    ports = {name: free_port() for name in ("simulator", "api", "inline")}
    simulator_url = f"http://127.0.0.1:{ports['simulator']}"
    env = service_env(redis.url, simulator_url)
    inline = ROOT / "bench" / "inline_receiver.py"
    processes = [
        await start_process(command, "simulator", "--port", str(ports["simulator"]), env=env),
        await start_process(command, "api", "--port", str(ports["api"]), env=env),
        await start_process(command, "worker", env=env),
        await start_process(sys.executable, str(inline), "--port", str(ports["inline"]), env=env),
    ]
    try:
        for port in ports.values():
            await wait_listening(port)
        async with (
            aiohttp.ClientSession() as http,
            http.put(
                f"{simulator_url}/__sim/latency", json={"seconds": args.flex_latency}
            ) as response,
        ):
            response.raise_for_status()
        receivers = {
            "inline (Twilio sample)": f"http://127.0.0.1:{ports['inline']}/tools/flex-handover",
            "flex-handover": f"http://127.0.0.1:{ports['api']}/tools/flex-handover",
        }
        totals = {name: Sample() for name in receivers}
        offset = 0
        for url in receivers.values():  # warm-up: connections, imports, script load
            await load(url, min(20, args.requests), min(4, args.concurrency), offset)
            offset += 1_000_000
        for _ in range(args.rounds):
            for name, url in receivers.items():
                totals[name].add(await load(url, args.requests, args.concurrency, offset))
                offset += 1_000_000
        print(
            f"tool-call acknowledgement, {args.rounds} rounds x {args.requests} requests, "
            f"{args.concurrency} connections, Flex API latency {args.flex_latency * 1000:.0f} ms, "
            f"{os.cpu_count()} CPUs"
        )
        print(
            f"{'receiver':<22} {'calls':>6} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'errors':>6}"
        )
        for name, sample in totals.items():
            print(report(name, sample))
        inline, ours = totals["inline (Twilio sample)"], totals["flex-handover"]
        ratio = statistics.median(inline.latencies) / statistics.median(ours.latencies)
        print(f"median ack latency: flex-handover is {ratio:.0f}x faster than inline")
        return 1 if (inline.errors or ours.errors) else 0
    finally:
        await stop_processes(processes)
        redis.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="tool calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--concurrency", type=int, default=16, help="connections")
    parser.add_argument("--flex-latency", type=float, default=0.2, help="seconds")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))

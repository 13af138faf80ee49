"""One handover's whole journey in dev mode, every request made to Twilio, timed.

Real `flex-handover api` and `flex-handover worker` processes, a Redis they do
not own, and the Flex simulator (in this process) playing Twilio with no
latency of its own, as `flex-handover dev` runs them: the example Conversation
has the customer's attributes and the bot's webhook, the default target
silences the bot and gives it back. One tool call is acknowledged; the script
waits for the Conversation steps, then plays the agent completing the task
(TaskRouter's signed event) and waits for the hand-back. It prints each request
to Twilio with its time from the acknowledgement and what the customer sees,
then the medians over `--runs` handovers (each a new conversation) of: ack,
ack → Interaction created, → channel active, → Conversation marked.

    python bench/journey.py
    python bench/journey.py --runs 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp
from harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BENCH_ADMIN_TOKEN,
    CHAT_SERVICE,
    WORKFLOW_SID,
    flex_handover_command,
    service_env,
    start_process,
    stop_processes,
    tool_headers,
    wait_listening,
)

from commands.dev import EXAMPLE_BOT_URL, simulated_targets
from standins.flex_simulator import FlexSimulator
from standins.redis_server import LocalRedisServer, free_port


def seen(method: str, path: str, marked: bool) -> str:
    """What the customer experiences when this request is made (marked: the
    Conversation was marked before)."""
    conversation = path.startswith("/v1/Conversations/") and path.count("/") == 3
    if method == "POST" and path == "/v1/Interactions":
        return "the AI tells them an agent is coming (the tool answered at once)"
    if "/Channels/" in path:
        return "nothing yet: Flex routes the task to the queue"
    if method == "POST" and conversation:
        return "the agent has closed the task" if marked else "the bot goes quiet (flexHandover)"
    if method == "DELETE" and "/Webhooks/" in path:
        return "the bot's webhook is gone: it cannot answer"
    if method == "POST" and path.endswith("/Webhooks"):
        return "the bot's webhook is back: the bot answers again"
    return ""


async def post_json(http: aiohttp.ClientSession, url: str, body: Any) -> Any:
    async with http.post(url, json=body) as response:
        if response.status >= 300:
            raise RuntimeError(f"{url}: {response.status} {await response.text()}")
        return await response.json()


async def wait_record(
    http: aiohttp.ClientSession, url: str, done: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {BENCH_ADMIN_TOKEN}"}
    while time.monotonic() < deadline:
        async with http.get(url, headers=headers) as response:
            record = await response.json()
        if done == "aftercare" and record["aftercare"] == "done":
            return record
        if done == "hand_back" and record["handed_back"] is not None:
            return record
        await asyncio.sleep(0.01)
    raise RuntimeError(f"{done} not finished after {timeout}s: {record}")


async def one_journey(
    http: aiohttp.ClientSession, simulator: FlexSimulator, api_url: str, number: int
) -> dict[str, Any]:
    conversation_sid = f"CH{number:032x}"
    simulator.seed_conversation(
        conversation_sid,
        attributes=json.dumps({"customer": {"tier": "gold"}}),
        webhooks=[{"url": EXAMPLE_BOT_URL, "method": "post", "filters": ["onMessageAdded"]}],
    )
    first_request = len(simulator.api_requests)
    sent_at = time.time()
    async with http.post(
        f"{api_url}/tools/flex-handover",
        json={"reason": "wants a person"},
        headers=tool_headers(number),
    ) as response:
        ack = await response.json()
        acked_at = time.time()
    if response.status != 202:
        raise RuntimeError(f"tool call answered {response.status}: {ack}")
    status_url = api_url + ack["status_url"]
    record = await wait_record(http, status_url, "aftercare")
    event_sent_at = time.time()
    await post_json(
        http, f"{simulator.base_url}/__sim/tasks/latest/events", {"event_type": "task.completed"}
    )
    ended = await wait_record(http, status_url, "hand_back")
    requests = [
        r
        for r in simulator.api_requests[first_request:]
        if conversation_sid in r["path"] or r["path"].startswith("/v1/Interactions")
    ]
    return {
        "ack": acked_at - sent_at,
        "event_sent_at": event_sent_at,
        "acked_at": acked_at,
        "record": record,
        "ended": ended,
        "requests": requests,
    }


def milestones(journey: dict[str, Any]) -> dict[str, float]:
    """Seconds from the ack to each step, read from when the simulator got each request."""
    acked_at, requests = journey["acked_at"], journey["requests"]

    def first(method: str, test: Any) -> float:
        at = next(r["received_at"] for r in requests if r["method"] == method and test(r["path"]))
        return float(at) - acked_at

    return {
        "ack (tool call answered)": journey["ack"],
        "ack → Interaction created": first("POST", lambda p: p == "/v1/Interactions"),
        "ack → channel read active": max(
            float(r["received_at"]) - acked_at for r in requests if "/Channels/" in r["path"]
        ),
        "ack → Conversation marked": first(
            "POST", lambda p: p.startswith("/v1/Conversations/") and p.count("/") == 3
        ),
        "ack → bot's webhook removed": first("DELETE", lambda p: "/Webhooks/" in p),
    }


def print_journey(journey: dict[str, Any]) -> None:
    acked_at = journey["acked_at"]
    print(f"{'ms after ack':>12}  {'request':<70}  what the customer sees")
    marked = False
    event = {
        "method": "(TaskRouter",
        "path": "task.completed → POST /webhooks/taskrouter, signed)",
        "received_at": journey["event_sent_at"],
    }
    rows = sorted([*journey["requests"], event], key=lambda r: float(r["received_at"]))
    for request in rows:
        method, path = request["method"], request["path"]
        text = seen(method, path, marked)
        if method == "POST" and path.startswith("/v1/Conversations/") and path.count("/") == 3:
            marked = True
        shown = f"{method} {path}"
        if request.get("webhook_enabled"):
            shown += f" (X-Twilio-Webhook-Enabled: {request['webhook_enabled']})"
        elapsed = (float(request["received_at"]) - acked_at) * 1000
        print(f"{elapsed:12.1f}  {shown:<70}  {text}")


async def main(runs: int) -> None:
    redis_server = LocalRedisServer()
    redis_url = await asyncio.to_thread(redis_server.start)
    processes: list[asyncio.subprocess.Process] = []
    simulator = FlexSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    simulator.base_url = await simulator.start()
    try:
        port = free_port()
        env = service_env(
            redis_url,
            simulator.base_url,
            HANDOVER_TARGETS=simulated_targets(WORKFLOW_SID),
        )
        simulator.set_event_callback(f"http://127.0.0.1:{port}/webhooks/taskrouter")
        command = flex_handover_command()
        processes.append(await start_process(command, "api", "--port", str(port), env=env))
        processes.append(await start_process(command, "worker", env=env))
        await wait_listening(port)
        api_url = f"http://127.0.0.1:{port}"
        journeys = []
        async with aiohttp.ClientSession() as http:
            await one_journey(http, simulator, api_url, 1)  # warm-up: imports, connections
            for number in range(2, runs + 2):
                journeys.append(await one_journey(http, simulator, api_url, number))
        print(f"one handover in dev mode (conversation CH…, chat service {CHAT_SERVICE[:6]}…):")
        print_journey(journeys[len(journeys) // 2])
        print()
        print(f"medians over {runs} handovers (the simulator adds no latency):")
        rows = [milestones(journey) for journey in journeys]
        for name in rows[0]:
            median_ms = statistics.median(row[name] for row in rows) * 1000
            print(f"{name:<32}  {median_ms:8.1f} ms")
        states = {journey["ended"]["handed_back"] for journey in journeys}
        print(
            f"{'handed back':<32}  {sum(1 for j in journeys if j['ended']['handed_back'])}/{runs}"
        )
        if states != {True}:
            raise SystemExit("a hand-back did not complete")
    finally:
        await stop_processes(processes)
        await simulator.stop()
        redis_server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="handovers timed (default 9)")
    asyncio.run(main(parser.parse_args().runs))

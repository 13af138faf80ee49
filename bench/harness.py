"""What every benchmark here shares: real processes on loopback, started and
stopped the same way, and one way to read a percentile.

Not a test helper: benchmarks are run by hand (`python bench/<name>.py`) and
print their figures; tests/test_bench_smoke.py runs each one tiny.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "bench-auth-token-0000"
WORKSPACE_SID = "WS" + "0" * 32
WORKFLOW_SID = "WW" + "0" * 32
CHAT_SERVICE = "IS" + "0" * 32
BENCH_TOOL_TOKEN = "bench-token-0123456789abcdef"
BENCH_ADMIN_TOKEN = "bench-admin-0123456789abcdef"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def lost_of(handovers: int, states: Mapping[str, int]) -> int:
    """Acknowledged handovers that did not end: neither succeeded nor failed."""
    return handovers - states.get("succeeded", 0) - states.get("failed", 0)


def print_mode(label: str, rows: Sequence[tuple[str, object]], width: int = 36) -> None:
    """One mode of a two-mode bench: its label, then `mode  name  value` rows
    (the shape tests/test_bench_smoke.py reads)."""
    print(label)
    mode = label.split()[0]
    for name, value in rows:
        print(f"  {mode} {name:<{width}} {value!s:>8}")


def twilio_client(flex_url: str, concurrency: int, account_sid: str = ACCOUNT_SID,
                  auth_token: str = AUTH_TOKEN) -> tuple[Any, Any]:  # fmt: skip
    """A twilio `Client` for the simulator at `flex_url` and its HTTP client (to
    close), with a connection per coroutine as the worker has one per job slot
    (aiohttp's default pool of 100 would cap it at 100 requests in flight)."""
    from aiohttp import ClientSession, TCPConnector
    from twilio.http.async_http_client import AsyncTwilioHttpClient
    from twilio.rest import Client

    http = AsyncTwilioHttpClient(pool_connections=False)
    http.session = ClientSession(connector=TCPConnector(limit=max(100, concurrency)))
    client = Client(account_sid, auth_token, http_client=http)
    client.flex_api.base_url = flex_url
    return client, http


def interaction_params(conversation_sid: str, **attributes: str) -> dict[str, Any]:
    """`create_async`'s channel and routing for a WhatsApp conversation, as a
    naive peer would send them (the worker builds its own: worker/interaction.py)."""
    return {
        "channel": {"type": "whatsapp", "initiated_by": "customer",
                    "properties": {"media_channel_sid": conversation_sid}},
        "routing": {"properties": {"workspace_sid": WORKSPACE_SID, "workflow_sid": WORKFLOW_SID,
                                   "task_channel_unique_name": "chat",
                                   "attributes": {"from": "whatsapp:+15555550100", **attributes}}},
    }  # fmt: skip


def flex_handover_command() -> str:
    command = shutil.which("flex-handover")
    if command is None:
        raise SystemExit("flex-handover is not installed: pip install -e .")
    return command


def service_env(redis_url: str, simulator_url: str, **overrides: str) -> dict[str, str]:
    """The environment of the api and worker processes: the simulator stands in
    for Twilio, a bench token authenticates, rate limits are off (every call is
    a new conversation from one identity), and the backlog cap is far above any
    bench's flood (load.py stores ~40,000 handovers a run with no worker
    draining them): still checked on every call, as in production, never hit."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "TWILIO_", "FLEX_", "HANDOVER_", "WORKER_"))
    }
    env = {
        **inherited,
        "REDIS_URL": redis_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "FLEX_WORKSPACE_SID": WORKSPACE_SID,
        "FLEX_WORKFLOW_SID": WORKFLOW_SID,
        "FLEX_API_BASE_URL": simulator_url,
        "CONVERSATIONS_API_BASE_URL": simulator_url,
        "TASKROUTER_API_BASE_URL": simulator_url,
        "LOG_LEVEL": "WARNING",
        "HANDOVER_TOOL_TOKENS": BENCH_TOOL_TOKEN,
        "HANDOVER_ADMIN_TOKENS": BENCH_ADMIN_TOKEN,
        "HANDOVER_RATE_LIMIT_PER_IDENTITY": "0",
        "HANDOVER_RATE_LIMIT_PER_CONVERSATION": "0",
        "HANDOVER_MAX_PENDING": "100000000",
        # No cap of our own unless a bench sets one (rate_limit.py, priority.py):
        # the benches measure the worker, not Twilio's 20/s.
        "FLEX_API_MAX_RPS": "0",
        "PYTHONPATH": str(ROOT),
    }
    env.update(overrides)
    return env


def tool_headers(conversation_number: int) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {BENCH_TOOL_TOKEN}",
        "X-Session-Id": f"webhook:conversations__{CHAT_SERVICE}/CH{conversation_number:032x}",
        "X-Identity": "whatsapp:+15555550100",
    }


async def start_process(
    *args: str, env: dict[str, str], quiet: bool = True
) -> asyncio.subprocess.Process:
    output = asyncio.subprocess.DEVNULL if quiet else None
    return await asyncio.create_subprocess_exec(*args, env=env, stdout=output, stderr=output)


async def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


async def stop_processes(processes: list[asyncio.subprocess.Process], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL whatever has not exited after `timeout`."""
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()

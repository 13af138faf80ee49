"""Real `flex-handover` processes for the tests: started, signalled, awaited.

Each process logs to a file, not a pipe: a pipe nobody reads fills up and
blocks the process mid-test. Every wait has a deadline, and
`ProcessGroup.close()` kills whatever a test left running.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from standins.redis_server import free_port
from tests.support.values import session_header, tool_auth

COMMAND = shutil.which("flex-handover") or sys.executable
PREFIX = [] if shutil.which("flex-handover") else ["-m", "commands.cli"]
WORKER_READY = "worker ready"


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment minus any flex-handover settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("REDIS_", "TWILIO_", "FLEX_", "HANDOVER_", "WORKER_"))
    }
    env.update(extra)
    return env


async def wait_until(
    condition: Callable[[], Any | Awaitable[Any]], timeout: float, what: str
) -> Any:
    """Poll `condition` (sync or async) until it is truthy; its value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        await asyncio.sleep(0.02)


class ServiceProcess:
    """One `flex-handover` subprocess and its log file."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log_path: Path):
        self.name = name
        self.process = process
        self.log_path = log_path

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no handler runs, as with the OOM killer or a lost host."""
        self.process.kill()

    async def wait_exit(self, timeout: float) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name} still running after {timeout:g}s") from None

    async def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then its exit code within `timeout` (SIGKILL and fail otherwise)."""
        if self.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await self.wait_exit(timeout)
        except AssertionError:
            self.kill()
            await self.process.wait()
            raise

    async def wait_for_log(self, text: str, timeout: float = 20.0, count: int = 1) -> None:
        """Until `text` appears `count` times in the log; fails early if the process exits."""

        def seen() -> bool:
            if self.returncode is not None:
                raise AssertionError(f"{self.name} exited ({self.returncode}):\n{self.log()}")
            return self.log().count(text) >= count

        await wait_until(seen, timeout, f"{text!r} x{count} in the {self.name} log")


class ProcessGroup:
    """The processes one test started; `close()` kills those still running."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.processes: list[ServiceProcess] = []

    async def start(self, name: str, *args: str, env: dict[str, str]) -> ServiceProcess:
        log_path = self.log_dir / f"{name}-{len(self.processes)}.log"
        with open(log_path, "wb") as log:  # noqa: ASYNC230 - opening a fresh local file
            process = await asyncio.create_subprocess_exec(
                COMMAND, *PREFIX, *args, env=env, stdout=log, stderr=log
            )
        service = ServiceProcess(name, process, log_path)
        self.processes.append(service)
        return service

    async def start_api(self, env: dict[str, str]) -> tuple[ServiceProcess, str]:
        """`flex-handover api` on a free port, once /healthz answers; (process, base URL)."""
        port = free_port()
        api = await self.start("api", "api", "--port", str(port), env=env)
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url, api)
        return api, url

    async def start_worker(self, env: dict[str, str], timeout: float = 20.0) -> ServiceProcess:
        """`flex-handover worker`, once it has reached Redis and is taking jobs."""
        worker = await self.start("worker", "worker", env=env)
        await worker.wait_for_log(WORKER_READY, timeout)
        return worker

    async def close(self) -> None:
        for service in self.processes:
            if service.returncode is None:
                service.kill()
                await service.process.wait()


async def wait_healthy(
    url: str, process: ServiceProcess | asyncio.subprocess.Process, timeout: float = 20.0
) -> None:
    """Until `url`/healthz answers 200; fails at once, with its output, if `process` exits."""

    async def healthy() -> bool:
        if process.returncode is not None:
            raise AssertionError(f"{url}: exited early:\n{await _output(process)}")
        try:
            async with http.get(url + "/healthz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async with aiohttp.ClientSession() as http:
        await wait_until(healthy, timeout, f"{url}/healthz answers 200")


async def _output(process: ServiceProcess | asyncio.subprocess.Process) -> str:
    if isinstance(process, ServiceProcess):
        return process.log()
    if process.stderr is None:
        return "(stderr not captured)"
    return (await process.stderr.read()).decode(errors="replace")


async def run_command(env: dict[str, str], *args: str, timeout: float = 30) -> tuple[int, str]:
    """One `flex-handover ...` command to its end: its exit code and its output
    (stdout and stderr together)."""
    process = await asyncio.create_subprocess_exec(
        COMMAND, *PREFIX, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode or 0, output.decode()


async def call_tool(
    api_url: str, conversation_sid: str, http: aiohttp.ClientSession | None = None
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """One tool call to a real API process, with the tests' tool token: its
    status, its JSON body, and the (read) response for its headers. `http`: a
    session to send it on (a flood's), else one of its own."""
    if http is None:
        async with aiohttp.ClientSession() as own:
            return await call_tool(api_url, conversation_sid, own)
    async with http.post(
        f"{api_url}/tools/flex-handover",
        json={"reason": "a test's tool call"},
        headers={
            "X-Session-Id": session_header(conversation_sid),
            "X-Identity": "phone:+14155550123",
            **tool_auth(),
        },
    ) as response:
        return response.status, await response.json(content_type=None), response

"""The console script as an operator runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from shared.redis_server import free_port
from tests.conftest import (
    ADMIN_TOKEN,
    AUTH_TOKEN,
    TOOL_TOKEN,
    admin_auth,
    new_conversation_sid,
    service_env,
    session_header,
    tool_auth,
)
from tests.processes import COMMAND, PREFIX, clean_env


async def start(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        COMMAND, *PREFIX, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def wait_healthy(url: str, process: asyncio.subprocess.Process, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise AssertionError(f"exited early: {await process.stderr.read()}")
            try:
                async with http.get(url + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} not healthy after {timeout}s")


async def stop(process: asyncio.subprocess.Process, timeout: float = 15) -> tuple[int, str]:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        _, stderr = await process.communicate()
        raise AssertionError(f"did not exit within {timeout}s after SIGTERM") from None
    return process.returncode, stderr.decode(errors="replace")


async def poll_final(
    http: aiohttp.ClientSession, url: str, timeout: float = 15, headers: dict | None = None
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(url, headers=headers) as response:
            record = await response.json()
        if record["state"] in ("succeeded", "failed"):
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"not final after {timeout}s: {record}")


async def test_dev_runs_with_nothing_but_the_package_and_its_curl_line_works():
    port = free_port()
    process = await start("dev", "--port", str(port), env=clean_env())
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", process)
        banner = (await asyncio.wait_for(process.stdout.read(2048), 5)).decode()
        assert "LOCAL FLEX SIMULATOR" in banner
        curl = banner[banner.index("curl -s -X POST"):]
        url = re.search(r"(http://\S+/tools/flex-handover)", curl).group(1)
        headers = dict(re.findall(r"-H '([^:]+): ([^']+)'", curl))
        body = re.search(r"-d '([^']+)'", curl).group(1)
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=body.encode(), headers=headers) as response:
                assert response.status == 202
                ack = await response.json()
            record = await poll_final(http, f"http://127.0.0.1:{port}{ack['status_url']}")
        assert record["state"] == "succeeded"
        assert record["interaction_sid"].startswith("KD")
    finally:
        returncode, stderr = await stop(process)
    assert returncode == 0, stderr


async def test_api_and_worker_processes_deliver_a_handover(redis, redis_server, simulator):
    env = clean_env(**service_env(redis_server.url, simulator.base_url))
    port = free_port()
    api = await start("api", "--port", str(port), env=env)
    worker = await start("worker", env=env)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", api)
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{port}/tools/flex-handover",
                json={"reason": "refund"},
                headers={
                    "X-Session-Id": session_header(),
                    "X-Identity": "phone:+14155550123",
                    **tool_auth(),
                },
            ) as response:
                assert response.status == 202
                ack = await response.json()
            record = await poll_final(
                http, f"http://127.0.0.1:{port}{ack['status_url']}", headers=admin_auth()
            )
        assert record["state"] == "succeeded"
        assert [i["sid"] for i in simulator.interactions] == [record["interaction_sid"]]
    finally:
        api_code, api_log = await stop(api)
        worker_code, worker_log = await stop(worker)
    assert (api_code, worker_code) == (0, 0), api_log + worker_log
    for log in (api_log, worker_log):
        assert "+14155550123" not in log
        for secret in (AUTH_TOKEN, TOOL_TOKEN, ADMIN_TOKEN):
            assert secret not in log


@pytest.mark.parametrize(
    ("command", "env", "named"),
    [
        ("worker", {"REDIS_URL": "redis://localhost/0"}, ["TWILIO_ACCOUNT_SID", "FLEX_WORKSPACE_SID"]),
        ("api", {"REDIS_URL": "http://nope", "FLEX_WORKFLOW_SID": "WW1"}, ["REDIS_URL", "FLEX_WORKFLOW_SID"]),
        ("worker", {"TWILIO_AUTH_TOKEN": "s3cr3t"}, ["TWILIO_AUTH_TOKEN"]),
    ],
)
async def test_bad_settings_stop_start_up_naming_the_variable(command, env, named):
    process = await start(command, env=clean_env(**env))
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2
    for variable in named:
        assert variable in stderr.decode()
    assert "s3cr3t" not in stderr.decode()


def api_children(parent: int) -> list[int]:
    """The serving children of `flex-handover api --processes N` (multiprocessing spawns)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [
        int(pid)
        for pid in children
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


async def test_api_processes_share_the_port_and_stop_together(redis, redis_server):
    env = clean_env(**service_env(redis_server.url, "http://127.0.0.1:9"))
    port = free_port()
    api = await start("api", "--port", str(port), "--processes", "2", env=env)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", api)
        servers = api_children(api.pid)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            for n in range(20):
                async with http.post(
                    f"http://127.0.0.1:{port}/tools/flex-handover",
                    headers={"X-Session-Id": session_header(new_conversation_sid(n)),
                             "X-Identity": "phone:+14155550123",
                             **tool_auth()},  # fmt: skip
                ) as response:
                    assert response.status == 202
        assert await redis.zcard("flex_handover:queue") == 20
        assert len(servers) == 2
    finally:
        code, log = await stop(api)
    assert code == 0, log
    assert all(not Path(f"/proc/{pid}").exists() for pid in servers)


async def test_api_processes_all_stop_when_one_dies(redis_server):
    env = clean_env(**service_env(redis_server.url, "http://127.0.0.1:9"))
    port = free_port()
    api = await start("api", "--port", str(port), "--processes", "2", env=env)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", api)
        os.kill(api_children(api.pid)[-1], signal.SIGKILL)
        await asyncio.wait_for(api.wait(), 20)
    finally:
        if api.returncode is None:
            api.kill()
        _, stderr = await api.communicate()
    assert api.returncode == 1
    assert "stopping the others" in stderr.decode()

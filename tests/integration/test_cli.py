"""The console script as an operator runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import base64
import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from shared import redis_keys
from standins.flex_simulator import (
    CHANNEL_HELP,
    CHANNEL_OPTIONS,
    FAULT_HELP,
    FAULT_OPTIONS,
    RATE_LIMIT_HELP,
    RATE_LIMIT_OPTIONS,
    FlexSimulator,
    channel_options,
    fault_options,
    rate_limit_options,
)
from standins.redis_server import free_port
from tests.support.processes import COMMAND, PREFIX, clean_env, wait_healthy
from tests.support.service import service_env
from tests.support.twiml import enqueued
from tests.support.values import (
    ADMIN_TOKEN,
    AUTH_TOKEN,
    TOOL_TOKEN,
    admin_auth,
    new_conversation_sid,
    session_header,
    tool_auth,
)


async def start(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        COMMAND, *PREFIX, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


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
        if record["state"] in ("succeeded", "failed") and record["aftercare"] != "pending":
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"not final after {timeout}s: {record}")


async def get_json(url: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


class Dev:
    """One `flex-handover dev` for the tests that follow its banner: its port and
    what it printed. Started once for the module (each start costs seconds)."""

    def __init__(self, port: int, banner: str):
        self.port = port
        self.banner = banner


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    port = free_port()
    log_dir = tmp_path_factory.mktemp("dev")
    stdout_path, stderr_path = log_dir / "stdout", log_dir / "stderr"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [COMMAND, *PREFIX, "dev", "--port", str(port)],
            env=clean_env(), stdout=stdout, stderr=stderr,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        banner = ""
        while not ("/__sim/voice/handoff" in banner and banner.endswith("\n")):
            assert process.poll() is None, f"dev exited early:\n{stderr_path.read_text()}"
            assert time.monotonic() < deadline, f"no full banner in 30 s:\n{banner}"
            time.sleep(0.05)
            banner = stdout_path.read_text(errors="replace")
        asyncio.run(wait_healthy(f"http://127.0.0.1:{port}", process))
        yield Dev(port, banner)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError("dev did not exit within 15 s after SIGTERM") from None
    assert returncode == 0, stderr_path.read_text(errors="replace")


async def test_dev_runs_with_nothing_but_the_package_and_its_curl_line_works(dev: Dev):
    port, banner = dev.port, dev.banner
    assert "LOCAL FLEX SIMULATOR" in banner
    curl = banner[banner.index("curl -s -X POST") :]
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
    assert record["channel_status"] == "active"
    assert record["conversation_marked"] is True
    # The journey the banner shows: the bot silenced while the customer waits...
    conversation_url = re.search(r"curl -s (http://\S+/__sim/conversations/CH\w+)", banner)
    conversation = await get_json(conversation_url.group(1))
    assert json.loads(conversation["attributes"])["flexHandover"]["state"] == "handed_over"
    assert conversation["webhooks"] == []
    # ...and given back when the agent completes the task.
    end = re.search(r"curl -s -X POST (http://\S+/events) -d '([^']+)'", banner)
    async with (
        aiohttp.ClientSession() as http,
        http.post(end.group(1), data=end.group(2).encode()) as response,
    ):
        delivered = await response.json()
    assert json.loads(delivered["deliveries"][0]["body"])["outcome"] == "recorded"
    deadline = time.monotonic() + 15
    while len(conversation["webhooks"]) != 1:
        assert time.monotonic() < deadline, conversation
        await asyncio.sleep(0.05)
        conversation = await get_json(conversation_url.group(1))
    assert json.loads(conversation["attributes"])["flexHandover"]["state"] == "ended"
    tip = re.search(r"curl -s -X POST (http://\S+/__sim/channels) -d '([^']+)'", banner)
    async with (
        aiohttp.ClientSession() as http,
        http.post(tip.group(1), data=tip.group(2).encode()) as response,
    ):
        assert (response.status, await response.json()) == (200, {"queued": 1})
    # The tip does what it says: the next handover's first channel fails, a new attempt
    # follows (and the module's next tests find the simulator as dev started it).
    other = {**headers, "X-Session-Id": session_header(new_conversation_sid(0xD1))}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body.encode(), headers=other) as response:
            assert response.status == 202, await response.text()
            ack = await response.json()
        record = await poll_final(http, f"http://127.0.0.1:{port}{ack['status_url']}")
    assert (record["state"], record["attempts"]) == ("succeeded", 2), record


async def test_dev_prints_a_schema_and_a_plain_backend_call_that_work(dev: Dev):
    """The banner's lines for an agent framework (the tool's definitions) and a
    plain backend (a JSON body), run as printed: the handover succeeds."""
    port, banner = dev.port, dev.banner
    framework = banner[banner.index("Any agent framework") :]
    schema_url = re.search(r"curl -s (http://\S+/tools/flex-handover/schema)\n", framework)
    document = await get_json(schema_url.group(1))
    assert document["tools"][0]["function"]["name"] == "hand_over_to_human"
    assert document["routes"]["hand_over_to_human"]["path"] == "/tools/flex-handover"
    backend = banner[banner.index("A plain backend") :]
    backend = backend[: backend.index("'\n") + 2]  # up to the end of its -d line
    url = re.search(r"curl -s -X POST (http://\S+/tools/flex-handover) ", backend).group(1)
    headers = dict(re.findall(r"-H '([^:]+): ([^']+)'", backend))
    body = re.search(r"-d '([^']+)'", backend).group(1)
    assert headers == {"Content-Type": "application/json"}
    assert {"conversation_sid", "identity"} <= set(json.loads(body))
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body.encode(), headers=headers) as response:
            ack = await response.json()
            assert response.status == 202, ack
        record = await poll_final(http, f"http://127.0.0.1:{port}{ack['status_url']}")
    assert record["state"] == "succeeded", record
    assert record["conversation_sid"] == json.loads(body)["conversation_sid"]


async def test_dev_prints_an_mcp_tools_call_that_hands_over(dev: Dev):
    port, banner = dev.port, dev.banner
    assert f"mount http://127.0.0.1:{port}/mcp in an MCP client" in banner
    start_at = banner.index(f"curl -s -X POST http://127.0.0.1:{port}/mcp")
    curl = banner[start_at : banner.index("\n\n", start_at)]
    url = re.search(r"(http://\S+/mcp)", curl).group(1)
    headers = dict(re.findall(r"-H '([^:]+): ([^']+)'", curl))
    body = re.search(r"-d '([^']+)'", curl).group(1)
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body.encode(), headers=headers) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
        assert answer["result"]["isError"] is False, answer
        ack = answer["result"]["structuredContent"]
        assert ack["handover_id"] in answer["result"]["content"][0]["text"]
        record = await poll_final(http, f"http://127.0.0.1:{port}{ack['status_url']}")
    assert record["state"] == "succeeded"
    assert record["conversation_sid"] == json.loads(body)["params"]["arguments"]["conversation_sid"]


async def test_dev_prints_a_voice_handoff_that_works(dev: Dev):
    """The banner's ConversationRelay line: the simulator signs Twilio's action request,
    the API answers TwiML that enqueues the call, and the handover is recorded."""
    port, banner = dev.port, dev.banner
    line = next(line for line in banner.splitlines() if "/__sim/voice/handoff" in line)
    control = re.search(r"curl -s -X POST (http://\S+/__sim/voice/handoff) -d '([^']+)'", line)
    async with aiohttp.ClientSession() as http:
        async with http.post(control.group(1), data=control.group(2).encode()) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/xml")
            enqueue, _, attributes = enqueued(await response.text())
        assert enqueue["workflowSid"] == "WW" + "0" * 32
        assert attributes["channelType"] == "voice" and attributes["reason"]
        record = await get_json(f"http://127.0.0.1:{port}/handovers/{attributes['handoverId']}")
    assert (record["kind"], record["state"]) == ("voice", "succeeded")
    assert record["call_sid"] == attributes["callSid"]


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
        (
            "worker",
            {"REDIS_URL": "redis://localhost/0"},
            ["TWILIO_ACCOUNT_SID", "FLEX_WORKSPACE_SID"],
        ),
        (
            "api",
            {"REDIS_URL": "http://nope", "FLEX_WORKFLOW_SID": "WW1"},
            ["REDIS_URL", "FLEX_WORKFLOW_SID"],
        ),
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
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
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
                    headers={
                        "X-Session-Id": session_header(new_conversation_sid(n)),
                        "X-Identity": "phone:+14155550123",
                        **tool_auth(),
                    },
                ) as response:
                    assert response.status == 202
        assert await redis.zcard(redis_keys.QUEUE_NAME) == 20
        assert len(servers) == 2
    finally:
        code, log = await stop(api)
    assert code == 0, log
    assert all(not Path(f"/proc/{pid}").exists() for pid in servers)  # noqa: ASYNC240 - a test's last check, no loop to block


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


# --- What a new user trips over: one clear line and a non-zero exit, never a traceback


def occupy(host: str) -> socket.socket:
    """A port held by another program: a plain listening socket, no SO_REUSEPORT."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind((host, 0))
    holder.listen()
    return holder


def processes_marked(marker: str) -> list[int]:
    """Live processes whose environment holds `marker` (a command and its children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                status = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if status != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue  # exited meanwhile, or not ours to read
    return found


async def run_to_exit(*args: str, env: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    """Run a command that must exit by itself: (exit code, stdout and stderr)."""
    process = await asyncio.create_subprocess_exec(
        COMMAND, *PREFIX, *args, env=env, start_new_session=True,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)  # and what it started (dev's Redis server)
        output, _ = await process.communicate()
        raise AssertionError(f"still running after {timeout}s: {output.decode()}") from None
    return process.returncode, output.decode(errors="replace")


def assert_one_clear_line(output: str, expected: str) -> None:
    assert expected in output, output
    assert sum(expected in line for line in output.splitlines()) == 1, output
    assert "Traceback" not in output, output
    assert "listening" not in output, output


@pytest.mark.parametrize(
    ("host", "processes"), [("127.0.0.1", "1"), ("0.0.0.0", "1"), ("0.0.0.0", "3")]
)
async def test_api_on_a_port_in_use_says_so_in_one_line_and_exits(redis_server, host, processes):
    marker = f"FLEX_HANDOVER_TEST_RUN={uuid.uuid4().hex}"
    name, value = marker.split("=")
    env = clean_env(**service_env(redis_server.url, "http://127.0.0.1:9"), **{name: value})
    with occupy(host) as holder:
        port = holder.getsockname()[1]
        code, output = await run_to_exit(
            "api", "--host", host, "--port", str(port), "--processes", processes, env=env
        )
    assert code == 2, output
    assert_one_clear_line(
        output, f"flex-handover api: cannot listen on {host}:{port}: address already in use"
    )
    assert processes_marked(marker) == [], "children left running"


async def test_dev_on_a_port_in_use_says_so_and_stops_what_it_started():
    marker = f"FLEX_HANDOVER_TEST_RUN={uuid.uuid4().hex}"
    name, value = marker.split("=")
    with occupy("127.0.0.1") as holder:
        port = holder.getsockname()[1]
        code, output = await run_to_exit("dev", "--port", str(port), env=clean_env(**{name: value}))
    assert code == 2, output
    assert_one_clear_line(
        output, f"flex-handover dev: cannot listen on 127.0.0.1:{port}: address already in use"
    )
    assert "flex-handover dev is running" not in output
    assert processes_marked(marker) == [], "its Redis server is still running"


async def test_simulator_on_a_port_in_use_says_so_in_one_line():
    with occupy("127.0.0.1") as holder:
        port = holder.getsockname()[1]
        code, output = await run_to_exit("simulator", "--port", str(port), env=clean_env())
    assert code == 2, output
    assert_one_clear_line(
        output,
        f"flex-handover simulator: cannot listen on 127.0.0.1:{port}: address already in use",
    )


async def test_api_logs_listening_once_the_port_is_bound(redis_server):
    """ "listening" only after the bind, from the parent once every child has bound."""
    env = clean_env(**service_env(redis_server.url, "http://127.0.0.1:9"))
    for processes, expected in (("1", "api listening on"), ("2", "api: 2 processes listening")):
        port = free_port()
        api = await start("api", "--port", str(port), "--processes", processes, env=env)
        try:
            await wait_healthy(f"http://127.0.0.1:{port}", api)
            line = await asyncio.wait_for(api.stderr.readline(), 10)
            while b"listening" not in line:
                line = await asyncio.wait_for(api.stderr.readline(), 10)
        finally:
            code, log = await stop(api)
        assert expected in line.decode(), line
        assert f"127.0.0.1:{port}" in line.decode()
        assert code == 0, log


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        ((), {}, "usage: flex-handover"),
        (("bogus",), {}, "invalid choice: 'bogus'"),
        (("api", "--port", "99999"), {}, "argument --port: must be a port number"),
        (("api", "--port", "http"), {}, "argument --port: must be a port number"),
        (("dev", "--port", "0"), {}, "argument --port: must be a port number"),
        (("simulator", "--fault", "{"), {}, "argument --fault: must be a JSON object"),
        (("simulator", "--fault", '{"colour": 1}'), {}, "Unknown fault options: colour"),
        (("simulator", "--fault", '{"status": 200}'), {}, "a 2xx/3xx fault needs a body"),
        (("simulator", "--rate-limit-rps", "5", "--rate-limit-code", "1"), {}, "code must be"),
        (("dev",), {"LOG_LEVEL": "loud"}, "LOG_LEVEL: must be one of"),
        (("dev",), {"FLEX_HANDOVER_REDIS_SERVER": "/nonexistent"}, "cannot run /nonexistent"),
        (("worker",), {"REDIS_URL": "http://x"}, "REDIS_URL: must start with redis://"),
        (("failed",), {"REDIS_URL": "redis://127.0.0.1:1/0"}, "cannot use Redis (REDIS_URL)"),
        (("replay",), {}, "the following arguments are required: ID"),
    ],
)
async def test_mistakes_get_one_clear_message_and_exit_2(args, env, says):
    code, output = await run_to_exit(*args, env=clean_env(**env))
    assert code == 2, output
    assert says in output
    assert "Traceback" not in output


async def test_version_is_the_installed_package_version():
    code, output = await run_to_exit("--version", env=clean_env())
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert code == 0, output
    assert output == f"flex-handover {pyproject['project']['version']}\n"
    assert output == f"flex-handover {importlib.metadata.version('flex-handover')}\n"


async def test_simulator_help_lists_every_fault_control_it_serves():
    code, output = await run_to_exit("simulator", "--help", env=clean_env())
    assert code == 0, output
    served = [
        route.resource.canonical
        for route in FlexSimulator().app.router.routes()
        if route.resource.canonical.startswith("/__sim/")
    ]
    assert len(served) >= 6
    for path in served:
        assert path in output, path
    controls = output[output.index("fault controls") :]
    for option in (*FAULT_OPTIONS, *RATE_LIMIT_OPTIONS, *CHANNEL_OPTIONS):
        assert re.search(rf"^\s+{option}\b", controls, re.MULTILINE), option
    flags = ("--fault", "--latency", "--rate-limit-rps", "--rate-limit-retry-after")
    for flag in (*flags, "--channel-status"):
        assert flag in output
    assert "Traceback" not in output


def test_every_fault_control_option_is_described():
    """A fault option added to the simulator without a help text fails here."""
    assert sorted(name for name, _ in fault_options()) == sorted(FAULT_HELP)
    assert sorted(name for name, _ in rate_limit_options()) == sorted(RATE_LIMIT_HELP)
    assert sorted(name for name, _ in channel_options()) == sorted(CHANNEL_HELP)
    assert sorted(CHANNEL_HELP) == sorted(CHANNEL_OPTIONS)


async def test_simulator_start_up_options_are_applied():
    """`--fault` queues what POST /__sim/faults would; `--latency` delays creates."""
    port = free_port()
    fault = '{"status": 503, "count": 2, "route": "tasks", "retry_after": 7}'
    base = f"http://127.0.0.1:{port}"
    tasks = f"{base}/v1/Workspaces/WS{'0' * 32}/Tasks"
    credentials = base64.b64encode(b"AC" + b"0" * 32 + b":any-token").decode()
    auth = {"Authorization": f"Basic {credentials}"}
    process = await start("simulator", "--port", str(port), "--fault", fault, env=clean_env())
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert base in line.decode()
        async with aiohttp.ClientSession(headers=auth) as http:
            statuses = []
            for _ in range(3):
                async with http.get(tasks) as response:
                    statuses.append((response.status, response.headers.get("Retry-After")))
        assert statuses == [(503, "7"), (503, "7"), (200, None)]
    finally:
        code, log = await stop(process)
    assert code == 0, log

"""`flex-handover dev`: the whole service in one process, for a laptop.

Nothing to install but the package: with no REDIS_URL it starts a Redis
server it owns, with no Twilio credentials it runs against the built-in
Flex simulator (and says so loudly: no real agent will get these handovers),
and with no tool token it runs unauthenticated (loudly too: anyone who can
reach the port can create handovers and read them).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from aiohttp import web
from mcp.types.version import LATEST_HANDSHAKE_VERSION

from api.app import create_app
from api.tool_schema import SCHEMA_PATH, TOOL_NAME, TOOL_PATH
from shared import event_loop
from shared.listening import bind
from shared.logging import configure_logging
from shared.settings import Settings
from standins.flex_simulator import FlexSimulator
from standins.redis_server import LocalRedisServer, RedisServerError
from worker.main import create_worker, stop_worker

DEV_ACCOUNT_SID = "AC" + "0" * 32
DEV_AUTH_TOKEN = "flex-handover-dev-token"  # noqa: S105 - the simulator's own, never a Twilio one
DEV_WORKSPACE_SID = "WS" + "0" * 32
DEV_WORKFLOW_SID = "WW" + "0" * 32
EXAMPLE_SESSION = "webhook:conversations__IS" + "0" * 32 + "/CH" + "0" * 32
EXAMPLE_IDENTITY = "whatsapp:+15555550100"
EXAMPLE_CONVERSATION = "CH" + "0" * 32
BACKEND_CONVERSATION = "CH" + "0" * 31 + "1"
BACKEND_IDENTITY = "whatsapp:+15555550101"
EXAMPLE_BOT_URL = "https://bot.example.com/ai-assistant/messages"
DEV_FALLBACK_MESSAGE = (
    "We could not reach an agent right now; we will reply here as soon as one is free."
)


def simulated_targets(workflow_sid: str) -> str:
    """HANDOVER_TARGETS for a laptop with the simulator: the default target silences
    the example bot, gives it back when the agent is done, and tells the customer
    the truth when a handover fails, so `dev` shows the whole journey."""
    return json.dumps(
        {
            "default": {
                "workflow_sid": workflow_sid,
                "silence_webhooks": [EXAMPLE_BOT_URL.rsplit("/", 1)[0] + "/"],
                "return_to_bot": True,
                "fallback_message": DEV_FALLBACK_MESSAGE,
            }
        }
    )


def seed_example_conversation(simulator: FlexSimulator) -> None:
    """The example Conversation as an AI Assistant leaves it: the customer's
    attributes, and the bot's webhook on new messages."""
    simulator.seed_conversation(
        EXAMPLE_CONVERSATION,
        attributes=json.dumps({"customer": {"tier": "gold", "language": "en"}}),
        webhooks=[{"url": EXAMPLE_BOT_URL, "method": "post", "filters": ["onMessageAdded"]}],
    )


def simulator_env(base_url: str, env: Mapping[str, str]) -> dict[str, str]:
    """Variables that point the worker at the local simulator."""
    return {
        "TWILIO_ACCOUNT_SID": DEV_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": DEV_AUTH_TOKEN,
        "TWILIO_API_KEY": "",
        "TWILIO_API_SECRET": "",
        "FLEX_API_BASE_URL": base_url,
        "CONVERSATIONS_API_BASE_URL": base_url,
        "TASKROUTER_API_BASE_URL": base_url,
        "FLEX_WORKSPACE_SID": env.get("FLEX_WORKSPACE_SID") or DEV_WORKSPACE_SID,
        "FLEX_WORKFLOW_SID": env.get("FLEX_WORKFLOW_SID") or DEV_WORKFLOW_SID,
    }


def has_twilio_credentials(env: Mapping[str, str]) -> bool:
    return bool(
        env.get("TWILIO_ACCOUNT_SID")
        and (
            env.get("TWILIO_AUTH_TOKEN")
            or (env.get("TWILIO_API_KEY") and env.get("TWILIO_API_SECRET"))
        )
    )


def has_tool_authentication(env: Mapping[str, str]) -> bool:
    return bool(
        _configured(env, "HANDOVER_TOOL_TOKENS")
        or (env.get("HANDOVER_VERIFY_TWILIO_SIGNATURE") or "").strip().lower()
        in ("1", "true", "yes", "on")
    )


def _shown_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - compared, not bound


def _configured(env: Mapping[str, str], variable: str) -> bool:
    return bool((env.get(variable) or "").strip(" ,"))


def _bearer_option(variable: str) -> str:
    """A curl header the shell fills in from the first token of `variable`: the
    banner shows how to authenticate without printing a secret."""
    return f'-H "Authorization: Bearer ${{{variable}%%,*}}"'


def curl_example(host: str, port: int, env: Mapping[str, str] | None = None) -> str:
    env = env or {}
    token_line = (
        f"  {_bearer_option('HANDOVER_TOOL_TOKENS')} \\\n"
        if _configured(env, "HANDOVER_TOOL_TOKENS")
        else ""
    )
    return (
        f"curl -s -X POST http://{_shown_host(host)}:{port}/tools/flex-handover \\\n"
        f"{token_line}"
        f"  -H 'X-Session-Id: {EXAMPLE_SESSION}' \\\n"
        f"  -H 'X-Identity: {EXAMPLE_IDENTITY}' \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        '  -d \'{"reason": "customer asked for a person"}\''
    )


def callers_banner(host: str, port: int, env: Mapping[str, str] | None = None) -> list[str]:
    """The banner's lines for callers that are not an AI Assistant: an agent
    framework reads the tool's definitions, a backend posts a JSON body (for a
    conversation of its own, so it makes a handover of its own)."""
    env = env or {}
    base = f"http://{_shown_host(host)}:{port}"
    token = (
        f"{_bearer_option('HANDOVER_TOOL_TOKENS')} "
        if _configured(env, "HANDOVER_TOOL_TOKENS")
        else ""
    )
    body = json.dumps(
        {
            "conversation_sid": BACKEND_CONVERSATION,
            "identity": BACKEND_IDENTITY,
            "reason": "billing dispute",
        }
    )
    return [
        "Any agent framework: the tool's JSON Schema and a function definition per target:",
        "",
        f"curl -s {token}{base}{SCHEMA_PATH}",
        "",
        "A plain backend: a JSON body naming the conversation and the customer:",
        "",
        f"curl -s -X POST {base}{TOOL_PATH} \\",
        *([f"  {token.strip()} \\"] if token else []),
        "  -H 'Content-Type: application/json' \\",
        f"  -d '{body}'",
        "",
    ]


def mcp_example(host: str, port: int, env: Mapping[str, str] | None = None) -> list[str]:
    """The banner's MCP lines: where to mount it, and a stateless `tools/call` (no
    `initialize` needed) for the example conversation, so curl shows the same
    handover the tool endpoint's line makes."""
    env = env or {}
    url = f"http://{_shown_host(host)}:{port}/mcp"
    token_line = (
        f"  {_bearer_option('HANDOVER_TOOL_TOKENS')} \\\n"
        if _configured(env, "HANDOVER_TOOL_TOKENS")
        else ""
    )
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": TOOL_NAME,
            "arguments": {
                "conversation_sid": EXAMPLE_CONVERSATION,
                "identity": EXAMPLE_IDENTITY,
                "reason": "customer asked for a person",
            },
        },
    }
    return [
        f"Or as an MCP tool (Streamable HTTP: mount {url} in an MCP client; one call, no "
        "initialize needed):",
        "",
        f"curl -s -X POST {url} \\\n"
        f"{token_line}"
        "  -H 'Content-Type: application/json' \\\n"
        "  -H 'Accept: application/json, text/event-stream' \\\n"
        f"  -H 'MCP-Protocol-Version: {LATEST_HANDSHAKE_VERSION}' \\\n"
        f"  -d '{json.dumps(call)}'",
        "",
    ]


def run_dev(host: str, port: int) -> int:
    event_loop.run(_run_dev(host, port))
    return 0


async def _run_dev(host: str, port: int) -> None:
    env = dict(os.environ)
    redis_server: LocalRedisServer | None = None
    simulator: FlexSimulator | None = None
    runner: web.AppRunner | None = None
    worker = None
    worker_task: asyncio.Task[None] | None = None
    notes = []
    try:
        if not env.get("REDIS_URL"):
            redis_server = LocalRedisServer()
            try:
                env["REDIS_URL"] = await asyncio.to_thread(redis_server.start)
            except OSError as exc:  # the binary itself could not be run
                message = f"cannot run {redis_server.binary}: {exc.strerror}"
                raise RedisServerError(message) from None
            notes.append(f"Redis: started {redis_server.binary} at {env['REDIS_URL']}")
        if not has_twilio_credentials(env):
            simulator = FlexSimulator(account_sid=DEV_ACCOUNT_SID, auth_token=DEV_AUTH_TOKEN)
            simulator_url = await simulator.start()
            env.update(simulator_env(simulator_url, env))
            if not env.get("HANDOVER_TARGETS"):
                env["HANDOVER_TARGETS"] = simulated_targets(env["FLEX_WORKFLOW_SID"])
            seed_example_conversation(simulator)
            # TaskRouter's events (the agent's task ended) come to our endpoint.
            simulator.set_event_callback(f"http://{_shown_host(host)}:{port}/webhooks/taskrouter")
            notes.append(
                "!!! NO TWILIO CREDENTIALS: handovers go to the LOCAL FLEX SIMULATOR at "
                f"{simulator_url}, not to Twilio. No agent will see them. !!!"
            )
        if not has_tool_authentication(env):
            env["HANDOVER_ALLOW_UNAUTHENTICATED"] = "true"
            what = (
                "the tool endpoint and /mcp are"
                if _configured(env, "HANDOVER_ADMIN_TOKENS")
                else "the tool endpoint, /mcp and /handovers… are"
            )
            notes.append(
                f"!!! NO AUTHENTICATION (no HANDOVER_TOOL_TOKENS): {what} open to anyone "
                f"who can reach port {port}. For a laptop only. !!!"
            )
        # The operator page over plain http: a Secure cookie would not come back.
        env.setdefault("HANDOVER_UI_SECURE_COOKIE", "false")
        settings = Settings.from_env(env, role="worker")
        configure_logging(settings.log_level, settings.log_format)
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        await bind(web.TCPSite(runner, host, port).start(), host, port)
        worker = create_worker(settings, handle_signals=False)
        worker_task = asyncio.create_task(worker.async_run())
        tips = (
            []
            if simulator is None
            else [*simulator_tips(simulator_url), *voice_tips(simulator_url, host, port)]
        )
        _print_banner(host, port, notes, env, tips)
        await _wait_for_stop_signal()
    finally:
        if worker is not None:
            await stop_worker(worker, worker_task)
        if runner is not None:
            await runner.cleanup()
        if simulator is not None:
            await simulator.stop()
        if redis_server is not None:
            redis_server.close()


def simulator_tips(simulator_url: str) -> list[str]:
    """How to walk a handover's whole journey in the simulator: what the customer's
    Conversation holds, the agent ending the task, the failures."""
    conversation = f"{simulator_url}/__sim/conversations/{EXAMPLE_CONVERSATION}"
    completed = '{"event_type": "task.completed"}'
    failed_channel = '{"statuses": ["setup", "failed"]}'
    refused = '{"status": 400, "code": 20001, "message": "Invalid channel"}'
    return [
        "See the customer's Conversation (attributes with flexHandover, the bot's webhook, "
        f"messages): curl -s {conversation}",
        "The agent completes the task (TaskRouter's signed event; the bot is given back): "
        f"curl -s -X POST {simulator_url}/__sim/tasks/latest/events -d '{completed}'",
        "Make the next Interaction's channel fail (a new attempt follows): "
        f"curl -s -X POST {simulator_url}/__sim/channels -d '{failed_channel}'",
        "Make the next handover fail for good (the customer gets the fallback message): "
        f"curl -s -X POST {simulator_url}/__sim/faults -d '{refused}'",
        f"Every request made to Twilio: curl -s {simulator_url}/__sim/requests",
    ]


def voice_tips(simulator_url: str, host: str, port: int) -> list[str]:
    """A ConversationRelay voice handoff, played by the simulator as Twilio: the signed
    `<Connect action>` request with the agent's HandoffData, answered with TwiML."""
    action = {
        "url": f"http://{_shown_host(host)}:{port}/voice/handoff",
        "handoff_data": {"reason": "customer asked for a person", "summary": "refund"},
    }
    return [
        "A voice agent on ConversationRelay hands the call over (the simulator signs and "
        "sends Twilio's <Connect action> request; the answer is the TwiML that enqueues "
        f"the call): curl -s -X POST {simulator_url}/__sim/voice/handoff -d "
        f"'{json.dumps(action)}'",
    ]


def _print_banner(
    host: str, port: int, notes: list[str], env: Mapping[str, str], tips: Sequence[str] = ()
) -> None:
    lines = ["", "flex-handover dev is running", *notes, ""]
    lines += ["Hand over a conversation:", "", curl_example(host, port, env), ""]
    admin = (
        _bearer_option("HANDOVER_ADMIN_TOKENS") + " "
        if _configured(env, "HANDOVER_ADMIN_TOKENS")
        else ""
    )
    status_url = f"http://{_shown_host(host)}:{port}/handovers/<handover_id>"
    lines += [f"Then read its status: curl -s {admin}{status_url}", ""]
    sign_in = " (sign in with an admin token)" if admin else ""
    lines += [f"Watch it on the operator page{sign_in}: http://{_shown_host(host)}:{port}/ui", ""]
    lines += mcp_example(host, port, env)
    lines += callers_banner(host, port, env)
    lines += [line for tip in tips for line in (tip, "")]
    print("\n".join(lines), flush=True)
    for note in notes:
        if note.startswith("!!!"):
            print(note, file=sys.stderr, flush=True)


async def _wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

"""Baseline for bench/ack_latency.py: the handover done inline, as Twilio's sample does.

The tool call waits on `POST /v1/Interactions` before it answers, so the
model (and the customer) wait on Twilio; a Twilio error loses the escalation.
Run: python bench/inline_receiver.py --port P  (with the same env as the worker).
"""

from __future__ import annotations

import argparse

from aiohttp import web
from twilio.base.exceptions import TwilioException
from twilio.rest import Client

from api.parsing import ToolCallError, parse_tool_call
from shared.settings import DEFAULT_TARGET, Settings
from worker.flex_client import BoundedHttpClient
from worker.interaction import build_interaction

CLIENT = web.AppKey("client", Client)
SETTINGS = web.AppKey("settings", Settings)


async def tool_call(request: web.Request) -> web.Response:
    settings: Settings = request.app[SETTINGS]
    try:
        handover = parse_tool_call(
            request.headers, request.content_type, await request.read(), DEFAULT_TARGET
        )
    except ToolCallError as exc:
        return web.json_response({"error": exc.error, "message": exc.message}, status=exc.status)
    payload = build_interaction(
        "inline", handover, settings.targets[DEFAULT_TARGET], settings.flex_workspace_sid or ""
    )
    try:
        interaction = await request.app[CLIENT].flex_api.v1.interaction.create_async(
            channel=payload.channel, routing=payload.routing
        )
    except (TwilioException, TimeoutError) as exc:
        return web.json_response({"error": "twilio", "message": str(exc)}, status=500)
    return web.json_response({"interaction_sid": interaction.sid, "message": "Transferring you."})


async def client_context(app: web.Application):
    settings: Settings = app[SETTINGS]
    http = BoundedHttpClient(timeout=settings.attempt_timeout_seconds)
    client = Client(settings.twilio_username, settings.twilio_password,
                    account_sid=settings.twilio_account_sid, http_client=http)  # fmt: skip
    client.flex_api.base_url = settings.flex_api_base_url
    app[CLIENT] = client
    yield
    await http.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app[SETTINGS] = Settings.from_env(role="worker")
    app.cleanup_ctx.append(client_context)
    app.router.add_post("/tools/flex-handover", tool_call)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

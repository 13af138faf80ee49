"""Baseline for bench/ack_latency.py: the handover done inline, as Twilio's sample does.

The tool call waits on `POST /v1/Interactions` before it answers, so the
model (and the customer) wait on Twilio; a Twilio error loses the escalation.
Run: python bench/inline_receiver.py --port P  (with the same env as the worker).
"""

from __future__ import annotations

import argparse

from aiohttp import web

from api.errors import ApiError
from api.parsing import parse_tool_call
from shared.settings import DEFAULT_TARGET, Settings
from worker.errors import FlexError
from worker.flex_client import FlexClient
from worker.interaction import build_interaction

CLIENT = web.AppKey("client", FlexClient)
SETTINGS = web.AppKey("settings", Settings)


async def tool_call(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        handover = parse_tool_call(
            request.headers, request.content_type, await request.read(), DEFAULT_TARGET
        )
    except ApiError as exc:
        return web.json_response(exc.body(), status=exc.status)
    payload = build_interaction(
        "inline", handover, settings.targets[DEFAULT_TARGET], settings.flex_workspace_sid or ""
    )
    try:
        # The same bounded create_async the worker makes, but the caller waits on it.
        created = await request.app[CLIENT].create_interaction(payload)
    except FlexError as exc:
        return web.json_response({"error": "twilio", "message": exc.message}, status=500)
    return web.json_response(
        {"interaction_sid": created.interaction_sid, "message": "Transferring you."}
    )


async def client_context(app: web.Application):
    app[CLIENT] = FlexClient(app[SETTINGS])
    yield
    await app[CLIENT].close()


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

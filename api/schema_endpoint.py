"""`GET /tools/flex-handover/schema`: the tool as an agent framework registers it.

The body (`api.tool_schema.schema_document`) is the input schema, one
OpenAI-style function definition per configured target and the route of each;
built once per app, since targets only change with the settings. It holds
target names and no setting beyond them: no token, no SID, no auth token.
It sits under `/tools`, so it takes the tool endpoint's credentials
(`api.auth`): it lists the targets, which are not for anyone who asks, and
whoever registers the tool needs that token to call it anyway.
"""

from __future__ import annotations

import json

from aiohttp import web

from api.tool_schema import SCHEMA_PATH, schema_document
from shared.settings import Settings


def routes(settings: Settings) -> list[web.RouteDef]:
    body = json.dumps(schema_document(settings.targets), separators=(",", ":")).encode()

    async def tool_schema_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    return [web.get(SCHEMA_PATH, tool_schema_json)]

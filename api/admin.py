"""The operator's endpoints: read a handover's status (and, later, list and
replay failed ones). Kept apart from the tool endpoint, which is the hot path.
"""

from __future__ import annotations

import re

from aiohttp import web

from api.keys import STORE
from api.parsing import ToolCallError

_HANDOVER_ID = re.compile(r"ho_[0-9a-f]{32}")


async def handover_status(request: web.Request) -> web.Response:
    """GET /handovers/{handover_id}: the status record, identity masked."""
    handover_id = request.match_info["handover_id"]
    record = None
    if _HANDOVER_ID.fullmatch(handover_id):
        record = await request.app[STORE].get(handover_id)
    if record is None:
        raise ToolCallError(404, "unknown_handover", f"No handover with id '{handover_id}'.")
    return web.json_response(record.to_public())


def routes() -> list[web.RouteDef]:
    return [web.get("/handovers/{handover_id}", handover_status)]

"""The operator's endpoints: a handover's status, the lists by state, the summary,
and a failed one's replay. Kept apart from the tool endpoint, which is the hot path.
"""

from __future__ import annotations

import re

from aiohttp import web

from api.app_keys import REDIS, REPLAYER, STORE, SUMMARY
from api.errors import BadRequest, Conflict, Unavailable, UnknownHandover
from shared import deadletters, handover_list
from shared.deadletters import Refusal
from shared.handover_list import DEFAULT_LIMIT, LISTABLE_STATES, MAX_LIMIT
from shared.model import now
from shared.settings import is_target_name

_HANDOVER_ID = re.compile(r"ho_[0-9a-f]{32}")


async def handover_status(request: web.Request) -> web.Response:
    """GET /handovers/{handover_id}: the status record, identity masked."""
    handover_id = request.match_info["handover_id"]
    record = None
    if _HANDOVER_ID.fullmatch(handover_id):
        record = await request.app[STORE].get(handover_id)
    if record is None:
        raise UnknownHandover(handover_id)
    return web.json_response(record.to_public())


async def list_handovers(request: web.Request) -> web.Response:
    """GET /handovers?state=S[&target=NAME][&limit=N][&before=CURSOR]: newest first,
    each record as the status endpoint shows it (`shared.handover_list`)."""
    query = request.query
    state = query.get("state")
    if state not in LISTABLE_STATES:
        accepted = ", ".join(f"state={name}" for name in LISTABLE_STATES)
        given = "is required" if state is None else f"'{state[:40]}' is not supported"
        raise BadRequest("invalid_state", f"The state parameter {given}; accepted: {accepted}.")
    target = query.get("target")
    if target is not None and not is_target_name(target):
        raise BadRequest(
            "invalid_target",
            "The target parameter must be a target's name: lower-case letters, digits, "
            "'-' or '_', at most 64.",
        )
    limit = _parse_limit(query.get("limit"))
    try:
        page = await handover_list.list_handovers(
            request.app[REDIS], state, limit, query.get("before"), target
        )
    except ValueError as exc:
        raise BadRequest("invalid_cursor", str(exc)) from None
    return web.json_response(
        {"handovers": [record.to_public() for record in page.handovers], "next": page.next}
    )


async def handover_summary(request: web.Request) -> web.Response:
    """GET /handovers/summary: live counts, the last hour's outcomes by minute, the
    backlog's oldest wait and the targets (`shared.summary` says what each counts)."""
    summary = await request.app[SUMMARY].read(now())
    return web.json_response(summary.to_public())


async def replay_handover(request: web.Request) -> web.Response:
    """POST /handovers/{handover_id}/replay: queue a failed handover again.

    202 with the record (`queued`); 409 when it succeeded, is still live, or
    the conversation has a newer live or succeeded handover.
    """
    handover_id = request.match_info["handover_id"]
    if not _HANDOVER_ID.fullmatch(handover_id):
        raise UnknownHandover(handover_id)
    try:
        result = await request.app[REPLAYER].replay(handover_id)
    except deadletters.ReplayContended as exc:
        raise Unavailable(str(exc)) from None
    if result.refusal is Refusal.MISSING:
        raise UnknownHandover(handover_id)
    if result.refusal is not None:
        raise Conflict(result.refusal.value, result.message)
    assert result.record is not None  # noqa: S101 - a replay without a refusal carries its record
    return web.json_response(result.record.to_public(), status=202)


def _parse_limit(raw: str | None) -> int:
    """Absent: the default; above the maximum: the maximum (list_handovers caps it)."""
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if limit < 1:
        raise BadRequest(
            "invalid_limit",
            "The limit parameter must be a whole number of at least 1 "
            f"(a page holds at most {MAX_LIMIT}).",
        )
    return limit


def routes() -> list[web.RouteDef]:
    return [
        web.get("/handovers", list_handovers),
        # Before `{handover_id}`, which would take `summary` for an id.
        web.get("/handovers/summary", handover_summary),
        web.get("/handovers/{handover_id}", handover_status),
        web.post("/handovers/{handover_id}/replay", replay_handover),
    ]

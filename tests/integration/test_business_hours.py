"""Business hours at the tool endpoint: outside a target's hours the answer tells
the model the truth (`agents_available: false`, `opens_at`, a `message` saying when
agents are back); `queue` stores the handover as usual, `decline` stores nothing.

Two ways to choose "now", neither touching the process's time:
- the real `flex-handover api` process reads the real clock, so its targets' hours
  are chosen around today: every day open except today and tomorrow (closed
  dates in Pacific/Auckland), so "now" is closed however long the test takes
  and agents are back at midnight the day after tomorrow;
- the in-process API (`tests.support.service.Service`) takes the app's clock
  (`api.app_keys.CLOCK`), for instants at DST changes and a clock that moves.
Both against the suite's real Redis.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from shared import redis_keys
from shared.settings import DEFAULT_MESSAGE, Settings
from tests.support.processes import clean_env
from tests.support.service import Service, service_env
from tests.support.values import (
    BILLING_WORKFLOW_SID,
    new_conversation_sid,
    session_header,
    tool_auth,
)

AUCKLAND = ZoneInfo("Pacific/Auckland")
ALL_DAY = {key: ["00:00-24:00"] for key in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
ACK_FIELDS = {"handover_id", "status", "status_url", "handed_over", "message", "agents_available"}


def target(hours: dict | None = None, **extra) -> dict:
    spec: dict = {"workflow_sid": BILLING_WORKFLOW_SID, **extra}
    if hours is not None:
        spec["hours"] = hours
    return spec


async def stored_keys(redis) -> list[str]:
    """Every key but the readiness probe's: what a tool call left behind."""
    return sorted(key for key in await redis.keys("*") if key != redis_keys.READY_PROBE_KEY)


async def post_tool(url: str, name: str, conversation_sid: str) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/tools/flex-handover/{name}",
            json={"reason": "wants a person"},
            headers={
                "X-Session-Id": session_header(conversation_sid),
                "X-Identity": "whatsapp:+14155550123",
                **tool_auth(),
            },
        ) as response,
    ):
        return response.status, await response.json()


# --- the real API process, the real clock ----------------------------------------------


async def test_the_api_process_declines_or_queues_outside_hours(processes, redis, redis_server):
    today = datetime.now(AUCKLAND).date()
    closed_now = {
        "time_zone": "Pacific/Auckland",
        "weekly": ALL_DAY,
        "closed_dates": [str(today), str(today + timedelta(days=1))],
    }
    back = datetime.combine(today + timedelta(days=2), datetime.min.time(), AUCKLAND)
    targets = {
        "nights-decline": target(closed_now, outside_hours="decline"),
        "nights-queue": target(closed_now),  # outside_hours defaults to queue
        "always": target({"time_zone": "Pacific/Auckland", "weekly": ALL_DAY}),
    }
    env = clean_env(
        **service_env(redis_server.url, "http://127.0.0.1:9", HANDOVER_TARGETS=json.dumps(targets))
    )
    _, url = await processes.start_api(env)

    # decline: a 200 that says nobody was transferred, and nothing in Redis.
    status, body = await post_tool(url, "nights-decline", new_conversation_sid(1))
    assert status == 200, body
    assert set(body) == {"handed_over", "agents_available", "opens_at", "message"}
    assert (body["handed_over"], body["agents_available"]) == (False, False)
    assert body["opens_at"] == back.isoformat()
    assert datetime.fromisoformat(body["opens_at"]).utcoffset() == back.utcoffset()
    assert "could not transfer you" in body["message"]
    assert f"at 00:00 ({AUCKLAND.key} time)" in body["message"]
    assert await stored_keys(redis) == []

    # queue: stored as usual (record, arq job, queue entry), and the truth told.
    status, body = await post_tool(url, "nights-queue", new_conversation_sid(2))
    assert status == 202, body
    assert set(body) == ACK_FIELDS | {"opens_at"}
    assert (body["status"], body["handed_over"], body["agents_available"]) == (
        "queued",
        True,
        False,
    )
    assert body["opens_at"] == back.isoformat()
    assert "No agent is available right now" in body["message"]
    handover_id = body["handover_id"]
    record = await redis.hgetall(redis_keys.handover_key(handover_id))
    assert (record["state"], record["target"]) == ("queued", "nights-queue")
    assert await redis.exists(redis_keys.arq_job_key(handover_id)) == 1
    assert (
        await redis.zscore(redis_keys.QUEUE_NAME, redis_keys.handover_job_id(handover_id))
        is not None
    )

    # A target whose hours cover now answers as before, plus agents_available.
    status, body = await post_tool(url, "always", new_conversation_sid(3))
    assert status == 202, body
    assert set(body) == ACK_FIELDS
    assert (body["agents_available"], body["message"]) == (True, DEFAULT_MESSAGE)


# --- the in-process API, the app's clock -----------------------------------------------


class Clock:
    """A clock a test sets: what the API reads business hours at."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def start_api(redis, redis_server):
    """`await start_api(targets, clock)`: the API alone (no worker: nothing here
    needs Flex), its targets in HANDOVER_TARGETS."""
    services: list[Service] = []

    async def start(targets: dict, clock: Clock) -> Service:
        env = service_env(
            redis_server.url, "http://127.0.0.1:9", HANDOVER_TARGETS=json.dumps(targets)
        )
        service = await Service(Settings.from_env(env, role="api"), clock=clock).start(worker=False)
        services.append(service)
        return service

    yield start
    for service in services:
        await service.stop()


async def call(service: Service, name: str, conversation: int = 1) -> tuple[int, dict]:
    status, body, _ = await service.call_tool(
        path=f"/tools/flex-handover/{name}",
        session_id=session_header(new_conversation_sid(conversation)),
    )
    return status, body


async def test_inside_hours_the_answer_is_as_before_plus_agents_available(start_api):
    clock = Clock(datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo("Europe/Berlin")))  # a Monday
    office = {"time_zone": "Europe/Berlin", "weekly": {"mon": ["08:00-18:00"]}}
    service = await start_api({"office": target(office, outside_hours="decline")}, clock)

    status, body = await call(service, "office")

    assert status == 202
    assert body == {
        "handover_id": body["handover_id"],
        "status": "queued",
        "status_url": f"/handovers/{body['handover_id']}",
        "handed_over": True,
        "message": DEFAULT_MESSAGE,
        "agents_available": True,
    }
    # The default target has no hours: agents always available.
    status, body, _ = await service.call_tool(session_id=session_header(new_conversation_sid(2)))
    assert (status, body["agents_available"]) == (202, True)


async def test_queue_at_berlins_spring_gap_tells_when_agents_are_back(start_api, redis):
    # Sunday 2026-03-29, 01:30 CET; the range opens at 02:30, inside the skipped hour.
    clock = Clock(datetime(2026, 3, 29, 0, 30, tzinfo=UTC))
    sunday = {"time_zone": "Europe/Berlin", "weekly": {"sun": ["02:30-06:00"]}}
    service = await start_api({"early": target(sunday)}, clock)

    status, body = await call(service, "early")

    assert status == 202, body
    assert (body["agents_available"], body["opens_at"]) == (False, "2026-03-29T03:00:00+02:00")
    assert body["message"] == (
        "I'm transferring you to a human agent. No agent is available right now: they are "
        "back on Sunday 29 March 2026 at 03:00 (Europe/Berlin time), and your conversation "
        "waits for them until then."
    )
    assert await redis.exists(redis_keys.handover_key(body["handover_id"])) == 1


async def test_decline_in_new_yorks_repeated_hour_stores_nothing(start_api, redis):
    # 2026-11-01 01:15 EST: the second 01:15 of the night. The Sunday range
    # 01:00-01:30 was open during the first pass only.
    clock = Clock(datetime(2026, 11, 1, 6, 15, tzinfo=UTC))
    weekly = {"sun": ["01:00-01:30"], **{key: ["09:00-17:00"] for key in ("mon", "tue")}}
    hours = {"time_zone": "America/New_York", "weekly": weekly}
    service = await start_api({"ny": target(hours, outside_hours="decline")}, clock)

    status, body = await call(service, "ny")

    assert status == 200
    assert body == {
        "handed_over": False,
        "agents_available": False,
        "opens_at": "2026-11-02T09:00:00-05:00",
        "message": "No human agent is available right now, so I could not transfer you. "
        "Agents are back on Monday 2 November 2026 at 09:00 (America/New_York time); "
        "please ask again then.",
    }
    assert await stored_keys(redis) == []

    clock.now = datetime(2026, 11, 1, 5, 15, tzinfo=UTC)  # the first 01:15, EDT: open
    status, body = await call(service, "ny")
    assert (status, body["agents_available"]) == (202, True)


async def test_a_closed_message_replaces_the_default_and_may_say_when(start_api):
    clock = Clock(datetime(2026, 12, 25, 10, 0, tzinfo=UTC))
    hours = {
        "time_zone": "Europe/Berlin",
        "weekly": {key: ["08:00-18:00"] for key in ("mon", "fri")},
        "closed_dates": ["2026-12-25"],
    }
    service = await start_api(
        {
            "decline": target(hours, outside_hours="decline", closed_message="Back {opens_at}."),
            "queue": target(hours, closed_message="Closed for Christmas."),
        },
        clock,
    )

    _, declined = await call(service, "decline", 1)
    _, queued = await call(service, "queue", 2)

    assert declined["message"] == "Back Monday 28 December 2026 at 08:00 (Europe/Berlin time)."
    assert queued["message"] == "Closed for Christmas."
    assert declined["opens_at"] == queued["opens_at"] == "2026-12-28T08:00:00+01:00"


async def test_a_week_without_opening_hours_says_no_time_is_scheduled(start_api, redis):
    clock = Clock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    never = {"time_zone": "UTC", "weekly": {}}
    service = await start_api(
        {"gone": target(never, outside_hours="decline"), "later": target(never)}, clock
    )

    status, declined = await call(service, "gone", 1)
    assert (status, declined["opens_at"], declined["handed_over"]) == (200, None, False)
    assert "no opening time is scheduled" in declined["message"]

    status, queued = await call(service, "later", 2)
    assert (status, queued["opens_at"], queued["agents_available"]) == (202, None, False)
    assert "no opening time is scheduled" in queued["message"]


async def test_decline_after_closing_still_answers_the_handover_stored_before(start_api, redis):
    """Stored at 17:59, asked again at 18:01: the customer is on their way to an
    agent, so the answer is that handover (200), with the truth about the hours."""
    berlin = ZoneInfo("Europe/Berlin")
    clock = Clock(datetime(2026, 3, 2, 17, 59, tzinfo=berlin))
    office = {
        "time_zone": "Europe/Berlin",
        "weekly": {"mon": ["08:00-18:00"], "tue": ["08:00-18:00"]},
    }
    service = await start_api({"office": target(office, outside_hours="decline")}, clock)
    status, first = await call(service, "office")
    assert (status, first["agents_available"]) == (202, True)

    clock.now = datetime(2026, 3, 2, 18, 1, tzinfo=berlin)
    status, again = await call(service, "office")

    assert status == 200
    assert again["handover_id"] == first["handover_id"]
    assert (again["handed_over"], again["agents_available"]) == (True, False)
    assert again["opens_at"] == "2026-03-03T08:00:00+01:00"
    assert again["message"].startswith("I'm transferring you to a human agent.")
    assert await redis.zcard(redis_keys.QUEUE_NAME) == 1

    # A new conversation at 18:01 is declined: nothing stored for it.
    status, other = await call(service, "office", 2)
    assert (status, other["handed_over"]) == (200, False)
    assert await redis.zcard(redis_keys.QUEUE_NAME) == 1

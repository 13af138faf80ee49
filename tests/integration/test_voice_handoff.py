"""ConversationRelay's `<Connect action>` end to end: a real `flex-handover api`
process, real Redis, and the simulator playing Twilio (it builds the action
request's form as Twilio sends it and signs it with the account's auth token).

What must hold: a signed handoff gets TwiML that enqueues the call with the right
workflow and task JSON, and a `voice` record (masked caller, no job); the same call
twice is one handover; a bad signature is refused; no HandoffData is a goodbye;
bad input still gets TwiML; and with Redis stopped or frozen the caller still gets
the TwiML. The hand-back of a voice task only records it.
"""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from shared import redis_keys
from standins.flex_simulator import FlexSimulator, event_params, signature_header
from standins.redis_server import LocalRedisServer, free_port
from tests.support.processes import ProcessGroup, ServiceProcess, clean_env, wait_until
from tests.support.service import service_env
from tests.support.twiml import enqueued, goodbye
from tests.support.values import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BILLING_WORKFLOW_SID,
    WORKFLOW_SID,
    WORKSPACE_SID,
    admin_auth,
    tool_auth,
)

CALLER = "+14155550123"
CALL_SID = "CA" + "7c" * 16
GOODBYE = "Thanks for calling Example Co. Goodbye!"
WAIT_URL = "https://hold.example.com/music.xml?tone=soft&loop=2"
TARGETS = json.dumps(
    {
        "billing": {
            "workflow_sid": BILLING_WORKFLOW_SID,
            "priority": 5,
            "voice_timeout": 600,
            "wait_url": WAIT_URL,
            "attributes": {"department": "billing"},
        }
    }
)
HANDOFF = {"reason": "refund", "summary": "Order 1234 arrived broken </Task><Hangup/>", "n": 7}


def voice_env(redis_url: str, simulator: FlexSimulator, **overrides: str) -> dict[str, str]:
    return clean_env(
        **service_env(
            redis_url,
            simulator.base_url or "",
            **{"HANDOVER_TARGETS": TARGETS, "VOICE_GOODBYE_MESSAGE": GOODBYE, **overrides},
        )
    )


async def play_twilio(simulator: FlexSimulator, url: str, **options: Any) -> tuple[int, str, str]:
    """The simulator's `POST /__sim/voice/handoff`: (status, Content-Type, body) of
    what the API answered the signed action request."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{simulator.base_url}/__sim/voice/handoff", json={"url": url, **options}
        ) as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def get_record(api_url: str, handover_id: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{api_url}/handovers/{handover_id}", headers=admin_auth()) as response,
    ):
        return response.status, await response.json()


async def handover_keys(redis) -> list[str]:
    return [key async for key in redis.scan_iter(match=redis_keys.HANDOVER_KEY_PREFIX + "*")]


def assert_no_caller_in(log: str) -> None:
    assert CALLER not in log and "Order 1234" not in log
    for secret in (AUTH_TOKEN,):
        assert secret not in log


async def test_a_signed_handoff_is_enqueued_and_recorded(processes, redis, redis_server, simulator):
    api, url = await processes.start_api(voice_env(redis_server.url, simulator))
    status, content_type, body = await play_twilio(
        simulator,
        f"{url}/voice/handoff/billing",
        call_sid=CALL_SID,
        **{"from": CALLER},
        handoff_data=HANDOFF,
    )
    assert status == 200 and content_type.startswith("text/xml"), body
    enqueue, task, attributes = enqueued(body)
    assert enqueue == {"workflowSid": BILLING_WORKFLOW_SID, "waitUrl": WAIT_URL}
    assert task == {"priority": "5", "timeout": "600"}
    handover_id = attributes.pop("handoverId")
    assert handover_id.startswith("ho_")
    assert attributes == {
        "department": "billing",
        **HANDOFF,
        "from": CALLER,
        "callSid": CALL_SID,
        "channelType": "voice",
        "handoverTarget": "billing",
    }
    code, record = await get_record(url, handover_id)
    assert code == 200, record
    assert record["kind"] == "voice" and record["call_sid"] == CALL_SID
    assert record["conversation_sid"] is None
    assert record["identity"] == "phone:+14*******23"  # masked
    assert (record["state"], record["target"], record["problem"]) == ("succeeded", "billing", None)
    assert record["finished_at"] is not None and record["attempts"] == 0
    # Twilio enqueues the call: no arq job, no queue entry.
    assert await redis.zcard(redis_keys.QUEUE_NAME) == 0
    assert await redis.exists(redis_keys.arq_job_key(handover_id)) == 0
    assert simulator.interactions == []
    assert_no_caller_in(api.log())


async def test_the_same_call_twice_is_one_handover(processes, redis, redis_server, simulator):
    _, url = await processes.start_api(voice_env(redis_server.url, simulator))
    answers = [
        await play_twilio(
            simulator, f"{url}/voice/handoff", call_sid=CALL_SID, handoff_data=HANDOFF
        )
        for _ in range(2)
    ]
    assert answers[0] == answers[1]  # the same TwiML, the same handover id
    _, _, attributes = enqueued(answers[0][2])
    assert attributes["handoverTarget"] == "default"
    assert await handover_keys(redis) == [redis_keys.handover_key(attributes["handoverId"])]
    other = await play_twilio(simulator, f"{url}/voice/handoff", handoff_data=HANDOFF)
    assert enqueued(other[2])[2]["handoverId"] != attributes["handoverId"]  # another call
    assert len(await handover_keys(redis)) == 2


@pytest.mark.parametrize(("signature", "status"), [("bad", 403), ("missing", 401)])
async def test_a_request_not_signed_by_twilio_is_refused_as_json(
    processes, redis, redis_server, simulator, signature, status
):
    api, url = await processes.start_api(voice_env(redis_server.url, simulator))
    code, content_type, body = await play_twilio(
        simulator, f"{url}/voice/handoff", handoff_data=HANDOFF, signature=signature
    )
    assert (code, content_type.split(";")[0]) == (status, "application/json"), body
    assert json.loads(body)["error"] == ("forbidden" if status == 403 else "unauthorized")
    assert await handover_keys(redis) == []
    assert_no_caller_in(api.log())


async def test_a_signature_covers_the_url_and_the_form(processes, redis, redis_server, simulator):
    _, url = await processes.start_api(voice_env(redis_server.url, simulator))
    params = {"CallSid": CALL_SID, "From": CALLER, "HandoffData": json.dumps(HANDOFF)}
    signed_url = f"{url}/voice/handoff/billing"
    headers = signature_header(AUTH_TOKEN, signed_url, params)
    async with aiohttp.ClientSession() as http:
        for where, data in (
            (f"{url}/voice/handoff", params),  # another URL than the one signed
            (signed_url, {**params, "HandoffData": "{}"}),  # another form
        ):
            async with http.post(where, data=data, headers=headers) as response:
                assert response.status == 403, where
        async with http.post(signed_url, data=params, headers=headers) as response:
            assert response.status == 200  # as signed
    assert len(await handover_keys(redis)) == 1


async def test_a_session_that_ended_without_a_handoff_gets_the_goodbye(
    processes, redis, redis_server, simulator
):
    _, url = await processes.start_api(voice_env(redis_server.url, simulator))
    for options in (
        {"handoff_data": None},
        {"handoff_data": "  "},
        {"handoff_data": None, "error_code": "64105", "session_status": "failed"},
    ):
        status, content_type, body = await play_twilio(simulator, f"{url}/voice/handoff", **options)
        assert status == 200 and content_type.startswith("text/xml"), body
        assert goodbye(body) == GOODBYE
    assert await handover_keys(redis) == []  # not a handover: nothing recorded


async def test_bad_input_still_gets_twiml_and_the_record_says_what_was_wrong(
    processes, redis, redis_server, simulator
):
    """A tool token instead of a signature, no CallSid, HandoffData that is not JSON
    and a target that does not exist: the call is still enqueued (to `default`)."""
    _, url = await processes.start_api(voice_env(redis_server.url, simulator))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/voice/handoff/no-such-target",
            data={"From": CALLER, "HandoffData": "please get me a human"},
            headers=tool_auth(),
        ) as response,
    ):
        assert response.status == 200
        body = await response.text()
    enqueue, task, attributes = enqueued(body)
    assert enqueue == {"workflowSid": WORKFLOW_SID} and task == {}
    assert attributes["handoffDataText"] == "please get me a human"
    assert attributes["callSid"] is None and attributes["handoverTarget"] == "default"
    code, record = await get_record(url, attributes["handoverId"])
    assert code == 200 and record["call_sid"] is None and record["target"] == "default"
    problem = record["problem"]
    for said in ("no CallSid", "unknown target 'no-such-target'", "HandoffData is not JSON"):
        assert said in problem, problem
    # A body Twilio would never send is refused as the tool endpoint refuses it.
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/voice/handoff", json={"HandoffData": "x"}, headers=tool_auth()) as bad,
    ):
        assert (bad.status, (await bad.json())["error"]) == (400, "invalid_body")


async def test_with_redis_stopped_the_caller_still_gets_the_twiml(
    processes, simulator, own_redis: LocalRedisServer
):
    api, url = await processes.start_api(voice_env(own_redis.url, simulator))
    first = await play_twilio(simulator, f"{url}/voice/handoff", handoff_data=HANDOFF)
    recorded = enqueued(first[2])[2]["handoverId"]
    assert (await get_record(url, recorded))[0] == 200
    own_redis.stop()
    status, content_type, body = await play_twilio(
        simulator, f"{url}/voice/handoff/billing", call_sid=CALL_SID, handoff_data=HANDOFF
    )
    assert status == 200 and content_type.startswith("text/xml"), body
    enqueue, _, attributes = enqueued(body)
    assert enqueue["workflowSid"] == BILLING_WORKFLOW_SID
    assert attributes["handoverId"].startswith("ho_") and attributes["handoverId"] != recorded
    await api.wait_for_log(f"voice handoff {attributes['handoverId']} of call {CALL_SID} "
                           "answered without its record (Redis failed")  # fmt: skip
    assert_no_caller_in(api.log())


async def test_with_redis_frozen_the_twiml_does_not_wait_for_it(
    processes, simulator, own_redis: LocalRedisServer
):
    """A Redis that takes the connection and never answers (SIGSTOP): the answer
    goes out after the bookkeeping's own bound, not Redis's 5 s socket timeout."""
    api, url = await processes.start_api(voice_env(own_redis.url, simulator))
    await play_twilio(simulator, f"{url}/voice/handoff", handoff_data=HANDOFF)  # connected
    assert own_redis.process is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    try:
        status, _, body = await play_twilio(
            simulator, f"{url}/voice/handoff", call_sid=CALL_SID, handoff_data=HANDOFF
        )
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    assert status == 200
    handover_id = enqueued(body)[2]["handoverId"]
    await api.wait_for_log(
        f"voice handoff {handover_id} of call {CALL_SID} answered without its record "
        "(Redis did not answer within 1s)"
    )


async def test_with_nothing_listening_for_redis_the_twiml_is_answered(processes, simulator):
    api, url = await processes.start_api(voice_env(f"redis://127.0.0.1:{free_port()}/0", simulator))
    status, _, body = await play_twilio(simulator, f"{url}/voice/handoff", handoff_data=HANDOFF)
    assert status == 200
    assert enqueued(body)[2]["reason"] == "refund"
    await api.wait_for_log("answered without its record")


async def test_the_end_of_a_voice_task_is_recorded_with_nothing_to_hand_back(
    processes: ProcessGroup, redis, redis_server, simulator
):
    env = voice_env(redis_server.url, simulator)
    _, url = await processes.start_api(env)
    worker: ServiceProcess = await processes.start_worker(env)
    _, _, body = await play_twilio(
        simulator, f"{url}/voice/handoff", call_sid=CALL_SID, handoff_data=HANDOFF
    )
    _, _, attributes = enqueued(body)
    handover_id = attributes["handoverId"]
    # TaskRouter's task.completed for the task Twilio made from our <Task> JSON.
    task = {
        "sid": "WT" + "5e" * 16,
        "account_sid": ACCOUNT_SID,
        "workspace_sid": WORKSPACE_SID,
        "attributes": attributes,
        "assignment_status": "completed",
        "created_at": 0.0,
        "task_channel_unique_name": "voice",
        "workflow_sid": WORKFLOW_SID,
    }
    params = event_params(task, "task.completed", event_sid="EV" + "0" * 32)
    callback = f"{url}/webhooks/taskrouter"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            callback, data=params, headers=signature_header(AUTH_TOKEN, callback, params)
        ) as response,
    ):
        assert (await response.json())["outcome"] == "recorded"

    async def handed_back() -> dict[str, Any] | None:
        _, record = await get_record(url, handover_id)
        return record if record["handed_back"] is not None else None

    record = await wait_until(handed_back, 15, "the voice hand-back recorded")
    assert record["handed_back"] is True and record["ended_by"] == "task.completed"
    assert record["aftercare_error"] is None
    # No Conversation was touched.
    assert [r for r in simulator.api_requests if "/Conversations/" in r["path"]] == []
    assert "voice handover" in worker.log()


async def test_outside_business_hours_the_caller_hears_when_agents_are_back(
    processes, redis, redis_server, simulator
):
    """Outside hours a call is declined (told when agents are back, nothing
    recorded) unless its target queues with a bounded wait (`voice_timeout`): a
    caller is never held until Monday."""
    zone = ZoneInfo("Pacific/Auckland")
    today = datetime.now(zone).date()
    closed_now = {
        "time_zone": zone.key,
        "weekly": {
            day: ["00:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        },
        "closed_dates": [str(today), str(today + timedelta(days=1))],
    }
    targets = {
        "nights": {
            "workflow_sid": BILLING_WORKFLOW_SID,
            "hours": closed_now,
            "outside_hours": "decline",
        },
        "queue": {"workflow_sid": BILLING_WORKFLOW_SID, "hours": closed_now},
        "hold": {"workflow_sid": BILLING_WORKFLOW_SID, "hours": closed_now, "voice_timeout": 300},
    }
    _, url = await processes.start_api(
        voice_env(redis_server.url, simulator, HANDOVER_TARGETS=json.dumps(targets))
    )

    for name, call in (("nights", CALL_SID), ("queue", "CA" + "8d" * 16)):
        status, _, body = await play_twilio(
            simulator, f"{url}/voice/handoff/{name}", call_sid=call, handoff_data=HANDOFF
        )
        assert status == 200
        said = goodbye(body)
        assert said.startswith("No agent is available right now. Agents are back on "), said
        assert said.endswith("Please call again then.") and "(" not in said  # spoken
    assert await handover_keys(redis) == []

    status, _, body = await play_twilio(
        simulator, f"{url}/voice/handoff/hold", call_sid="CA" + "9e" * 16, handoff_data=HANDOFF
    )
    assert status == 200
    enqueue, task, attributes = enqueued(body, said="Please hold, or call again later.")
    assert enqueue["workflowSid"] == BILLING_WORKFLOW_SID and task["timeout"] == "300"
    assert len(await handover_keys(redis)) == 1 and attributes["handoverTarget"] == "hold"

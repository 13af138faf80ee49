"""Values from a tool call that end up in a Twilio URL, and SIDs spelled two ways.

- A Flex webchat user's id becomes `/v1/Users/{id}` in the Conversations API.
  `user_id:FX/../../v2/…` once made the worker send an authenticated GET to
  another resource: the API refuses anything that is not an FX SID, and the
  worker checks and escapes what it puts in a path anyway. The simulator
  records every path it is asked for, so the tests see what was really sent.
- `CHabc…` and `CHABC…` are one conversation: one handover, one Interaction.
"""

from __future__ import annotations

import pytest

from shared import sids
from tests.support.values import CONVERSATION_SID, WORKSPACE_SID, session_header
from worker.errors import FlexError
from worker.task_lookup import task_expression

FLEX_USER = "FX" + "5e" * 16
ESCAPES = [
    f"FX/../../v2/Workspaces/{WORKSPACE_SID}/Tasks",
    f"{FLEX_USER}/../../../v1/Interactions",
    f"{FLEX_USER}?PageSize=1000",
    f"{FLEX_USER}#",
    f"{FLEX_USER}%2F..%2F..",
    f"{FLEX_USER}/",
    "FX" + "5e" * 15 + "/.",
]
# Not an FX id to the API (kept as a `chat` user, never looked up); the worker
# must not put it in a path either.
NOT_FLEX_USERS = [f"..%2F{FLEX_USER}", f"../{FLEX_USER}", ""]


@pytest.mark.parametrize("value", ESCAPES)
@pytest.mark.parametrize("trait", ["user_id", "flex_participant"])
async def test_a_flex_user_id_that_is_not_a_sid_is_refused_and_nothing_is_sent(
    service, simulator, redis, trait, value
):
    status, body, _ = await service.call_tool(
        session_id=session_header(), identity=f"{trait}:{value}"
    )
    assert status == 400, body
    assert body["error"] == "invalid_identity"
    assert "FX followed by 32 hexadecimal characters" in body["message"]
    assert await redis.dbsize() == 0
    assert simulator.paths == []


@pytest.mark.parametrize("value", ESCAPES + NOT_FLEX_USERS)
async def test_the_worker_puts_nothing_but_a_sid_in_a_users_path(flex, simulator, value):
    """A record stored before the API checked identities (or written by hand):
    the lookup is skipped, the handover goes on without the name."""
    simulator.add_user(value, "Not To Be Fetched")
    assert await flex.friendly_name(value) is None
    assert simulator.paths == []


async def test_the_worker_asks_for_exactly_the_users_path_of_the_sid(flex, simulator):
    simulator.add_user(FLEX_USER, "Jane Web")
    assert await flex.friendly_name(FLEX_USER) == "Jane Web"
    assert simulator.paths == [("GET", f"/v1/Users/{FLEX_USER}")]


async def test_a_task_lookup_asks_for_exactly_its_workspaces_tasks(flex, simulator):
    await flex.list_task_attributes(WORKSPACE_SID, task_expression("ho_" + "1" * 32), ["pending"])
    [(method, path)] = simulator.paths
    assert method == "GET" and path.startswith(f"/v1/Workspaces/{WORKSPACE_SID}/Tasks?")


@pytest.mark.parametrize(
    "interaction_sid, channel_sid",
    [
        ("KD" + "1" * 32 + "/../../Users", "UO" + "2" * 32),
        ("KD" + "1" * 32, "UO" + "2" * 32 + "?PageSize=1000"),
        ("KD" + "1" * 32, "../Channels"),
    ],
)
async def test_a_channel_read_puts_nothing_but_sids_in_its_path(
    flex, simulator, interaction_sid, channel_sid
):
    with pytest.raises(FlexError) as caught:
        await flex.fetch_channel(interaction_sid, channel_sid)
    assert caught.value.retryable
    assert simulator.paths == []


async def test_a_whole_webchat_handover_sends_only_the_requests_it_should(service, simulator):
    """Hex digits in upper case arrive as Twilio spells them: lower case."""
    simulator.add_user(FLEX_USER, "Jane Web")
    status, body, _ = await service.call_tool(
        session_id=session_header("CH" + CONVERSATION_SID[2:].upper()),
        identity="user_id:FX" + FLEX_USER[2:].upper(),
    )
    assert status == 202, body
    record = await service.wait_final(body["handover_id"])
    assert record["state"] == "succeeded", record
    assert record["conversation_sid"] == CONVERSATION_SID
    assert record["identity"] == f"user_id:{FLEX_USER}"
    [interaction] = simulator.interactions
    assert sorted(simulator.paths) == [
        # Marking the Conversation after the success: read, merge, write.
        ("GET", f"/v1/Conversations/{CONVERSATION_SID}"),
        ("GET", f"/v1/Interactions/{interaction['sid']}/Channels/{interaction['channel_sid']}"),
        ("GET", f"/v1/Users/{FLEX_USER}"),
        ("POST", "/v1/Conversations/" + CONVERSATION_SID),
        ("POST", "/v1/Interactions"),
    ]
    attributes = interaction["routing"]["properties"]["attributes"]
    assert attributes["customerName"] == "Jane Web"
    assert attributes["conversationSid"] == CONVERSATION_SID


def case_variants(sid: str) -> list[str]:
    body = sid[2:]
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(body))
    return [sid[:2] + body.lower(), sid[:2] + body.upper(), sid[:2] + mixed]


async def test_case_variants_of_a_conversation_sid_are_one_handover(service, simulator):
    """Through the header and through the body, in three spellings: the first call
    makes the handover, the others get it back; Flex gets one Interaction."""
    first, *others = case_variants(CONVERSATION_SID)
    status, body, _ = await service.call_tool(session_id=session_header(first))
    assert status == 202, body
    handover_id = body["handover_id"]
    for variant in others:
        status, again, _ = await service.call_tool(session_id=session_header(variant))
        assert (status, again["handover_id"]) == (200, handover_id), again
        status, again, _ = await service.call_tool(
            identity=None,
            json={"conversation_sid": variant, "identity": "whatsapp:+14155550123"},
        )
        assert (status, again["handover_id"]) == (200, handover_id), again
    record = await service.wait_final(handover_id)
    assert record["state"] == "succeeded"
    [interaction] = simulator.interactions
    assert interaction["channel"]["properties"]["media_channel_sid"] == CONVERSATION_SID


async def test_case_variants_count_once_against_the_conversation_rate_limit(
    start_service, simulator
):
    """With de-duplication out of the way (each handover fails at once), spellings
    of one SID share one per-conversation counter."""
    service = await start_service(
        HANDOVER_RATE_LIMIT_PER_CONVERSATION="2", HANDOVER_DEDUP_SECONDS="0"
    )
    simulator.fail_next(400, count=10, code=21211, message="invalid")
    statuses = []
    for variant in case_variants(CONVERSATION_SID):
        status, body, _ = await service.call_tool(session_id=session_header(variant))
        statuses.append(status)
        if status == 202:
            assert (await service.wait_final(body["handover_id"]))["state"] == "failed"
    assert statuses == [202, 202, 429]
    assert sids.canonical(CONVERSATION_SID, sids.CONVERSATION) == CONVERSATION_SID

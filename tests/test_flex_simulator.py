"""The Flex simulator, driven by the real twilio-python client.

The worker's tests trust the simulator to behave like Twilio, so these tests hold it
to the OpenAPI specs in tests/spec/ and to what twilio-python sees: status, Twilio
error code, exception type, connection errors and hung requests.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from standins.flex_simulator import (
    CHANNEL_STATUSES,
    CHANNEL_TYPES,
    CREATE_INTERACTION_PARAMS,
    FETCH_CHANNEL_PATH_PARAMS,
    FlexSimulator,
    SlidingWindowLimit,
    TwilioError,
    validate_create_interaction,
)
from tests.support.values import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CONVERSATION_SID,
    WORKFLOW_SID,
    WORKSPACE_SID,
)

SPEC_DIR = Path(__file__).parent / "spec"
ROOT = Path(__file__).resolve().parent.parent
SID = r"[0-9a-fA-F]{32}"

# The stock AsyncTwilioHttpClient builds an aiohttp.BasicAuth, which aiohttp 3.14
# deprecates; these tests use the stock client on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")


def channel(**overrides: Any) -> dict[str, Any]:
    """The Channel Twilio's sample sends for an inbound conversation."""
    value = {
        "type": "web",
        "initiated_by": "customer",
        "properties": {"media_channel_sid": CONVERSATION_SID},
    }
    return value | overrides


def routing(handover_id: str = "h-1", **property_overrides: Any) -> dict[str, Any]:
    """The Routing Twilio's sample sends, with our attributes."""
    properties = {
        "workspace_sid": WORKSPACE_SID,
        "workflow_sid": WORKFLOW_SID,
        "task_channel_unique_name": "chat",
        "attributes": {"from": "Alice", "handoverId": handover_id},
    }
    return {"properties": properties | property_overrides}


def twilio_client(sim: FlexSimulator, username: str, password: str, **kwargs: Any) -> Client:
    """A real twilio Client whose Flex, Conversations and TaskRouter point at `sim`."""
    client = Client(username, password, http_client=AsyncTwilioHttpClient(), **kwargs)
    client.flex_api.base_url = sim.base_url
    client.conversations.base_url = sim.base_url
    client.taskrouter.base_url = sim.base_url
    return client


@pytest.fixture
async def client(simulator: FlexSimulator):
    twilio = twilio_client(simulator, ACCOUNT_SID, AUTH_TOKEN)
    yield twilio
    await twilio.http_client.close()


@pytest.fixture
async def http(simulator: FlexSimulator):
    """A plain aiohttp session, for what twilio-python hides (headers, raw bodies)."""
    async with aiohttp.ClientSession(base_url=simulator.base_url) as session:
        yield session


AUTH = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT_SID, AUTH_TOKEN)}


async def create(client: Client, **overrides: Any):
    arguments = {"channel": channel(), "routing": routing()} | overrides
    async with asyncio.timeout(5):
        return await client.flex_api.v1.interaction.create_async(**arguments)


async def create_error(client: Client, **overrides: Any) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as caught:
        await create(client, **overrides)
    return caught.value


# --- success -------------------------------------------------------------------


async def test_create_answers_200_with_interaction_and_records_it(client, simulator):
    async with asyncio.timeout(5):
        response = await client.flex_api.v1.interaction.create_with_http_info_async(
            channel=channel(), routing=routing("h-42")
        )

    assert response.status_code == 200
    interaction = response.data
    assert re.fullmatch(f"KD{SID}", interaction.sid)
    assert interaction.channel["type"] == "web"
    assert re.fullmatch(f"UO{SID}", interaction.channel["sid"])
    assert interaction.url == f"{simulator.base_url}/v1/Interactions/{interaction.sid}"
    assert interaction.links["channels"] == f"{interaction.url}/Channels"

    attributes = json.loads(interaction.routing["properties"]["attributes"])
    assert attributes == {
        "from": "Alice",
        "handoverId": "h-42",
        "conversationSid": CONVERSATION_SID,
        "flexInteractionSid": interaction.sid,
        "flexInteractionChannelSid": interaction.channel["sid"],
    }
    assert interaction.routing["properties"]["workspace_sid"] == WORKSPACE_SID

    [record] = simulator.interactions
    assert record["sid"] == interaction.sid
    assert record["channel_sid"] == interaction.channel["sid"]
    assert record["channel"] == channel()
    assert record["routing"] == routing("h-42")
    assert record["received_at"] <= time.time()
    assert [(r["method"], r["path"], r["status"]) for r in simulator.requests] == [
        ("POST", "/v1/Interactions", 200)
    ]


async def test_optional_params_are_echoed_and_unknown_params_ignored(simulator, http):
    context_sid = "HQ" + "4" * 32
    form = {
        "Channel": json.dumps(channel()),
        "Routing": json.dumps(routing()),
        "InteractionContextSid": context_sid,
        "WebhookTtid": "flex_interactionwebhook_1",
        "SomethingTwilioIgnores": "x",
    }
    async with (
        asyncio.timeout(5),
        http.post("/v1/Interactions", data=form, headers=AUTH) as response,
    ):
        body = await response.json()
        assert response.status == 200
        assert response.content_type == "application/json"

    assert body["interaction_context_sid"] == context_sid
    assert body["webhook_ttid"] == "flex_interactionwebhook_1"


async def test_fetch_interaction_and_its_active_channel(client):
    created = await create(client)

    async with asyncio.timeout(5):
        fetched = await client.flex_api.v1.interaction(created.sid).fetch_async()
        channels = await client.flex_api.v1.interaction(created.sid).channels.list_async()

    assert fetched.sid == created.sid
    assert fetched.channel == created.channel
    assert [(c.sid, c.status, c.interaction_sid) for c in channels] == [
        (created.channel["sid"], "active", created.sid)
    ]


async def test_unknown_interaction_is_twilio_404(client):
    unknown = "KD" + "0" * 32
    with pytest.raises(TwilioRestException) as caught:
        async with asyncio.timeout(5):
            await client.flex_api.v1.interaction(unknown).fetch_async()
    assert (caught.value.status, caught.value.code) == (404, 20404)


async def test_latency_delays_each_create(client, simulator):
    simulator.latency = 0.3
    started = time.monotonic()
    await create(client)
    assert time.monotonic() - started >= 0.3


# --- faults ----------------------------------------------------------------------


async def test_fail_next_500_then_recovers(client, simulator):
    simulator.fail_next(500)

    error = await create_error(client)
    assert (error.status, error.code) == (500, 20500)
    assert simulator.interactions == []

    created = await create(client)
    assert [r["sid"] for r in simulator.interactions] == [created.sid]
    assert [r["status"] for r in simulator.requests] == [500, 200]


async def test_faults_apply_in_fifo_order_with_counts(client, simulator):
    simulator.fail_next(503, count=2)
    simulator.fail_next(429, code=45010, message="Too many requests")

    errors = [await create_error(client) for _ in range(3)]

    assert [(e.status, e.code) for e in errors] == [(503, 20500), (503, 20500), (429, 45010)]
    assert "Too many requests" in errors[2].msg
    assert simulator.pending_faults() == 0
    await create(client)
    assert len(simulator.interactions) == 1


async def test_429_carries_retry_after_header(client, simulator, http):
    simulator.fail_next(429, retry_after=7, count=2)

    form = {"Channel": json.dumps(channel())}
    async with (
        asyncio.timeout(5),
        http.post("/v1/Interactions", data=form, headers=AUTH) as response,
    ):
        assert response.status == 429
        assert response.headers["Retry-After"] == "7"
        assert response.content_type == "application/json"
        body = await response.json()
    assert body == {
        "code": 20429,
        "message": "Simulated failure (HTTP 429)",
        "more_info": "https://www.twilio.com/docs/errors/20429",
        "status": 429,
    }

    error = await create_error(client)
    assert (error.status, error.code) == (429, 20429)


async def test_reset_drops_the_connection(client, simulator):
    simulator.fail_next(reset=True)

    with pytest.raises(aiohttp.ClientConnectionError):
        await create(client)

    assert simulator.interactions == []
    [attempt] = simulator.requests
    assert (attempt["status"], attempt["outcome"]) == (None, "dropped")


async def test_hang_trips_the_callers_timeout(client, simulator):
    simulator.fail_next(hang=5)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await client.flex_api.v1.interaction.create_async(channel=channel(), routing=routing())

    assert time.monotonic() - started < 2
    assert simulator.interactions == []


async def test_hang_then_answers_the_fault(client, simulator):
    simulator.fail_next(502, hang=0.2)
    started = time.monotonic()
    error = await create_error(client)
    assert time.monotonic() - started >= 0.2
    assert (error.status, error.code) == (502, 20500)


async def test_stop_does_not_wait_for_hanging_requests(client, simulator):
    simulator.fail_next(hang=30)
    hanging = asyncio.create_task(create(client))
    while not simulator.requests:  # noqa: ASYNC110 - polls the simulator's record, which has no event
        await asyncio.sleep(0.01)

    started = time.monotonic()
    async with asyncio.timeout(3):
        await simulator.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            await hanging
    # Well under aiohttp's own shutdown timeout (1 s here): the hang was cut short.
    assert time.monotonic() - started < 0.8


async def test_after_create_records_interaction_but_client_gets_error(client, simulator):
    simulator.fail_next(500, after_create=True)

    error = await create_error(client, routing=routing("h-ambiguous"))

    assert error.status == 500
    [record] = simulator.interactions
    async with asyncio.timeout(5):
        tasks = await client.taskrouter.v1.workspaces(WORKSPACE_SID).tasks.list_async(
            evaluate_task_attributes='handoverId == "h-ambiguous"'
        )
    assert [json.loads(t.attributes)["flexInteractionSid"] for t in tasks] == [record["sid"]]


async def test_after_create_with_reset_is_the_lost_answer_case(client, simulator):
    simulator.fail_next(reset=True, after_create=True)
    with pytest.raises(aiohttp.ClientConnectionError):
        await create(client)
    assert len(simulator.interactions) == 1


def test_fault_options_are_checked():
    sim = FlexSimulator()
    with pytest.raises(ValueError):
        sim.fail_next(200)
    with pytest.raises(ValueError):
        sim.fail_next(count=0)
    with pytest.raises(ValueError):
        sim.fail_next(route="nowhere")
    with pytest.raises(ValueError):
        sim.fail_next(after_create=True, route="users")
    assert sim.pending_faults() == 0


# --- hostile answers ---------------------------------------------------------------

CREATE_FORM = {"Channel": json.dumps(channel()), "Routing": json.dumps(routing())}


async def post_create(http, form=None):
    async with (
        asyncio.timeout(10),
        http.post("/v1/Interactions", data=form or CREATE_FORM, headers=AUTH) as response,
    ):
        return response.status, response.headers, await response.read()


async def test_a_2xx_fault_answers_a_raw_body_and_creates_nothing(simulator, http):
    simulator.fail_next(200, body="<html>proxy</html>", headers={"Content-Type": "text/html"})
    status, headers, body = await post_create(http)
    assert (status, body, headers["Content-Type"]) == (200, b"<html>proxy</html>", "text/html")
    assert simulator.interactions == []
    assert [r["outcome"] for r in simulator.requests] == ["bad answer"]


async def test_a_2xx_fault_after_create_makes_the_interaction_and_its_task(simulator, http):
    simulator.fail_next(200, body="null", after_create=True)
    status, _, body = await post_create(http)
    assert (status, body) == (200, b"null")
    [interaction] = simulator.interactions
    assert [t["interaction_sid"] for t in simulator.tasks] == [interaction["sid"]]
    assert [r["outcome"] for r in simulator.requests] == ["created"]


async def test_a_2xx_fault_still_validates_the_request(simulator, http):
    simulator.fail_next(200, body="{}")
    status, _, body = await post_create(http, {"Routing": "{}"})
    assert status == 400 and json.loads(body)["code"] == 20001


async def test_pad_streams_a_padded_resource_without_content_length(simulator, http):
    simulator.fail_next(200, after_create=True, pad=3_000_000)
    status, headers, body = await post_create(http)
    assert status == 200 and "Content-Length" not in headers
    assert headers["Transfer-Encoding"] == "chunked"
    resource = json.loads(body)
    assert resource["sid"] == simulator.interactions[0]["sid"]
    assert resource["padding"] == "x" * 3_000_000


async def test_pad_makes_an_error_body_that_large_and_keeps_twilios_fields(simulator, http):
    simulator.fail_next(503, pad=2_000_000, retry_after="-5", headers={"X-Odd": "yes"})
    status, headers, body = await post_create(http)
    assert status == 503 and len(body) > 2_000_000
    assert (headers["Retry-After"], headers["X-Odd"]) == ("-5", "yes")
    error = json.loads(body)
    assert (error["code"], error["status"]) == (20500, 503)


async def test_pad_after_a_raw_body_is_spaces(simulator, http):
    simulator.fail_next(200, body="null", pad=100_000)
    _, _, body = await post_create(http)
    assert body == b"null" + b" " * 100_000 and json.loads(body) is None


async def test_odd_retry_after_values_are_sent_verbatim(simulator, http):
    for value in ("0", "-5", "nan", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"):
        simulator.fail_next(429, retry_after=value)
        _, headers, _ = await post_create(http)
        assert headers["Retry-After"] == value


async def test_a_garbage_task_list(client, simulator):
    simulator.fail_next(200, route="tasks", body="[]")
    with pytest.raises(Exception):  # noqa: B017 - whatever twilio-python trips on
        await client.taskrouter.v1.workspaces(WORKSPACE_SID).tasks.list_async(limit=5)


@pytest.mark.parametrize(
    "options",
    [
        {"status": 200},
        {"status": 302},
        {"status": 200, "route": "tasks"},
        {"status": 600},
        {"status": True},
        {"pad": -1},
        {"pad": 1.5},
        {"body": 3},
        {"headers": {"X-Bad": "a\r\nInjected: 1"}},
        {"headers": {"bad name": "x"}},
        {"headers": ["X-A", "b"]},
    ],
)
def test_hostile_fault_options_are_checked(options):
    with pytest.raises(ValueError):
        FlexSimulator().fail_next(**options)


async def test_hostile_faults_over_http(simulator, http):
    fault = {"status": 200, "body": "[1, 2]", "pad": 10, "headers": {"X-Odd": "1"}}
    async with asyncio.timeout(5), http.post("/__sim/faults", json=fault) as response:
        assert response.status == 200
    status, headers, body = await post_create(http)
    assert (status, body, headers["X-Odd"]) == (200, b"[1, 2]" + b" " * 10, "1")


async def test_reset_clears_records_users_and_faults(client, simulator):
    await create(client)
    simulator.add_user("FX1", "Alice")
    simulator.fail_next(500)

    simulator.reset()

    assert (simulator.interactions, simulator.requests, simulator.tasks) == ([], [], [])
    assert simulator.users == {}
    await create(client)
    assert len(simulator.interactions) == 1


# --- auth --------------------------------------------------------------------------


async def test_wrong_token_is_401(simulator):
    wrong = twilio_client(simulator, ACCOUNT_SID, "not-the-token")
    try:
        error = await create_error(wrong)
    finally:
        await wrong.http_client.close()
    assert (error.status, error.code) == (401, 20003)
    assert simulator.interactions == []
    assert [r["status"] for r in simulator.requests] == [401]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer abc"}, {"Authorization": "Basic !!!not-base64"}],
    ids=["missing", "not-basic", "malformed"],
)
async def test_missing_or_malformed_authorization_is_401_even_without_credentials(headers):
    async with FlexSimulator() as sim:
        await sim.start()
        async with aiohttp.ClientSession() as session, asyncio.timeout(5):
            form = {"Channel": json.dumps(channel())}
            async with session.post(
                f"{sim.base_url}/v1/Interactions", data=form, headers=headers
            ) as response:
                body = await response.json()
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert (body["status"], body["code"]) == (401, 20003)


async def test_without_credentials_any_basic_auth_is_accepted():
    async with FlexSimulator() as sim:
        await sim.start()
        client = twilio_client(sim, ACCOUNT_SID, "anything")
        try:
            created = await create(client)
        finally:
            await client.http_client.close()
    assert created.sid == sim.interactions[0]["sid"]


async def test_api_key_and_secret_are_accepted():
    api_key = "SK" + "5" * 32
    async with FlexSimulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, api_key=api_key, api_secret="s3"
    ) as sim:
        await sim.start()
        client = twilio_client(sim, api_key, "s3", account_sid=ACCOUNT_SID)
        wrong = twilio_client(sim, api_key, AUTH_TOKEN, account_sid=ACCOUNT_SID)
        try:
            await create(client)
            error = await create_error(wrong)
        finally:
            await client.http_client.close()
            await wrong.http_client.close()
    assert len(sim.interactions) == 1
    assert error.status == 401


async def test_authorization_is_never_recorded(client, simulator):
    simulator.fail_next(500)
    await create_error(client)
    await create(client)
    recorded = json.dumps([simulator.requests, simulator.interactions])
    assert AUTH_TOKEN not in recorded
    assert "Basic" not in recorded


# --- validation --------------------------------------------------------------------

BAD_CREATES = [
    ("channel-missing", {"channel": None}, "Missing required parameter Channel"),
    ("channel-not-json", {"channel": "{type: web"}, "Channel is not valid JSON"),
    ("channel-not-object", {"channel": ["web"]}, "Channel must be a JSON object"),
    ("channel-type-unknown", {"channel": channel(type="fax")}, "Channel.type must be one of"),
    (
        "channel-type-missing",
        {"channel": {"initiated_by": "customer"}},
        "Channel.type must be one of",
    ),
    (
        "initiated-by-missing",
        {"channel": channel(initiated_by="")},
        "Channel.initiated_by is required",
    ),
    ("properties-not-object", {"channel": channel(properties="CH1")}, "Channel.properties must be"),
    (
        "media-channel-sid-missing",
        {"channel": channel(properties={})},
        "media_channel_sid is required",
    ),
    (
        "media-channel-sid-bad",
        {"channel": channel(properties={"media_channel_sid": "CH1"})},
        "media_channel_sid must",
    ),
    ("routing-not-json", {"routing": "nope"}, "Routing is not valid JSON"),
    ("routing-not-object", {"routing": [1]}, "Routing must be a JSON object"),
    (
        "workspace-sid-bad",
        {"routing": routing(workspace_sid="WW" + "2" * 32)},
        "workspace_sid must match ^WS",
    ),
    (
        "workflow-sid-bad",
        {"routing": routing(workflow_sid="WS" + "3" * 32)},
        "workflow_sid must match ^WW",
    ),
    (
        "attributes-not-object",
        {"routing": routing(attributes='{"a": 1}')},
        "attributes must be a JSON object",
    ),
    (
        "context-sid-bad",
        {"interaction_context_sid": "interaction_context_sid"},
        "InteractionContextSid",
    ),
]


@pytest.mark.parametrize(
    ("name", "overrides", "problem"), BAD_CREATES, ids=[case[0] for case in BAD_CREATES]
)
async def test_invalid_create_is_400_20001_naming_the_problem(
    client, simulator, name, overrides, problem
):
    error = await create_error(client, **overrides)

    assert (error.status, error.code) == (400, 20001)
    assert problem in error.msg
    assert simulator.interactions == []
    assert simulator.tasks == []


@pytest.mark.parametrize("channel_type", CHANNEL_TYPES)
def test_every_channel_type_is_accepted(channel_type):
    form = {"Channel": json.dumps(channel(type=channel_type))}
    parsed_channel, parsed_routing = validate_create_interaction(form)
    assert parsed_channel["type"] == channel_type
    assert parsed_routing == {}


def test_non_customer_channel_needs_no_media_channel_sid():
    form = {"Channel": json.dumps({"type": "sms", "initiated_by": "api"})}
    assert validate_create_interaction(form)[0] == {"type": "sms", "initiated_by": "api"}


def test_validation_raises_twilio_error():
    with pytest.raises(TwilioError) as caught:
        validate_create_interaction({"Routing": "{}"})
    assert (caught.value.status, caught.value.code) == (400, 20001)
    assert caught.value.message == "Missing required parameter Channel in the post body"


async def test_json_body_is_rejected(simulator, http):
    async with (
        asyncio.timeout(5),
        http.post("/v1/Interactions", json={"Channel": channel()}, headers=AUTH) as response,
    ):
        body = await response.json()
    assert (response.status, body["code"]) == (400, 20001)
    assert simulator.interactions == []


async def test_unknown_route_and_method_answer_twilio_errors(http):
    async with asyncio.timeout(5):
        async with http.get("/v1/Nothing", headers=AUTH) as response:
            assert (response.status, (await response.json())["code"]) == (404, 20404)
        async with http.delete("/v1/Interactions", headers=AUTH) as response:
            assert (response.status, (await response.json())["code"]) == (405, 20004)


# --- Conversations users ----------------------------------------------------------


async def test_user_fetched_by_identity_or_sid(client, simulator):
    user = simulator.add_user("FX" + "6" * 32, "Alice Example")

    async with asyncio.timeout(5):
        by_identity = await client.conversations.v1.users("FX" + "6" * 32).fetch_async()
        by_sid = await client.conversations.v1.users(user["sid"]).fetch_async()

    assert by_identity.friendly_name == "Alice Example"
    assert re.fullmatch(f"US{SID}", by_identity.sid)
    assert (by_sid.sid, by_sid.identity) == (by_identity.sid, "FX" + "6" * 32)


async def test_unknown_user_is_404(client):
    with pytest.raises(TwilioRestException) as caught:
        async with asyncio.timeout(5):
            await client.conversations.v1.users("FXunknown").fetch_async()
    assert (caught.value.status, caught.value.code) == (404, 20404)


async def test_fault_on_users_route_leaves_interactions_alone(client, simulator):
    simulator.add_user("FX1", "Alice")
    simulator.fail_next(503, route="users")

    await create(client)
    with pytest.raises(TwilioRestException) as caught:
        async with asyncio.timeout(5):
            await client.conversations.v1.users("FX1").fetch_async()

    assert (caught.value.status, caught.value.code) == (503, 20500)
    async with asyncio.timeout(5):
        assert (await client.conversations.v1.users("FX1").fetch_async()).friendly_name == "Alice"


# --- TaskRouter tasks --------------------------------------------------------------


async def list_tasks(client: Client, workspace_sid: str = WORKSPACE_SID, **filters: Any) -> list:
    async with asyncio.timeout(5):
        return await client.taskrouter.v1.workspaces(workspace_sid).tasks.list_async(**filters)


async def test_each_interaction_is_a_pending_task_found_by_attributes(client):
    wanted = await create(client, routing=routing("h-x"))
    await create(client, routing=routing("h-y"))

    tasks = await list_tasks(
        client, evaluate_task_attributes='handoverId == "h-x"', assignment_status=["pending"]
    )

    [task] = tasks
    assert re.fullmatch(f"WT{SID}", task.sid)
    assert task.assignment_status == "pending"
    assert task.workspace_sid == WORKSPACE_SID
    attributes = json.loads(task.attributes)
    assert attributes["handoverId"] == "h-x"
    assert attributes["flexInteractionSid"] == wanted.sid
    assert attributes["conversationSid"] == CONVERSATION_SID
    assert json.loads(wanted.routing["properties"]["attributes"]) == attributes
    assert wanted.routing["properties"]["sid"] == task.sid


async def test_task_filters(client):
    await create(client, routing=routing("h-x"))
    await create(client, routing=routing("h-y"))

    single_quoted = await list_tasks(client, evaluate_task_attributes="handoverId == 'h-y'")
    by_conversation = await list_tasks(
        client, evaluate_task_attributes=f'conversationSid == "{CONVERSATION_SID}"'
    )
    nested = await list_tasks(client, evaluate_task_attributes='from.name == "x"')
    assigned = await list_tasks(client, assignment_status=["assigned", "reserved"])
    either = await list_tasks(client, assignment_status=["assigned", "pending"])
    other_workspace = await list_tasks(client, "WS" + "9" * 32)

    assert [json.loads(t.attributes)["handoverId"] for t in single_quoted] == ["h-y"]
    assert len(by_conversation) == 2
    assert (nested, assigned, other_workspace) == ([], [], [])
    assert len(either) == 2


async def test_unsupported_task_expression_is_400(client):
    # twilio-python raises a bare TwilioException for a failed list page, with the
    # Response (not status/code attributes) as its second argument.
    with pytest.raises(TwilioException) as caught:
        await list_tasks(client, evaluate_task_attributes='handoverId IN ["a"]')
    response = caught.value.args[1]
    assert (response.status_code, json.loads(response.text)["code"]) == (400, 20001)


async def test_tasks_are_paged(client):
    for number in range(3):
        await create(client, routing=routing(f"h-{number}"))
    tasks = await list_tasks(client, page_size=2)
    assert sorted(json.loads(t.attributes)["handoverId"] for t in tasks) == ["h-0", "h-1", "h-2"]


async def test_task_visible_after_delays_the_task():
    async with FlexSimulator(task_visible_after=0.3) as sim:
        await sim.start()
        client = twilio_client(sim, ACCOUNT_SID, AUTH_TOKEN)
        try:
            await create(client)
            right_away = await list_tasks(client)
            await asyncio.sleep(0.4)
            later = await list_tasks(client)
        finally:
            await client.http_client.close()
    assert (len(right_away), len(later)) == (0, 1)


# --- /__sim control routes ------------------------------------------------------------


async def test_faults_and_latency_over_http(client, simulator, http):
    async with asyncio.timeout(5):
        async with http.post(
            "/__sim/faults", json={"status": 503, "retry_after": "2", "count": 2}
        ) as response:
            assert response.status == 200
        async with http.put("/__sim/latency", json={"seconds": 0.25}) as response:
            assert response.status == 200

    assert simulator.latency == 0.25
    errors = [await create_error(client) for _ in range(2)]
    assert [e.status for e in errors] == [503, 503]

    started = time.monotonic()
    created = await create(client)
    assert time.monotonic() - started >= 0.25

    async with asyncio.timeout(5):
        async with http.get("/__sim/interactions") as response:
            listed = await response.json()
        async with http.get("/__sim/requests") as response:
            attempts = await response.json()
        async with http.post("/__sim/reset") as response:
            assert response.status == 200
    assert [i["sid"] for i in listed] == [created.sid]
    assert [a["status"] for a in attempts] == [503, 503, 200]
    assert simulator.interactions == []


@pytest.mark.parametrize(
    "body",
    [{"status": 200}, {"colour": "red"}, {"count": 0}, ["status"]],
    ids=["not-an-error", "unknown-key", "bad-count", "not-object"],
)
async def test_bad_fault_requests_are_400(simulator, http, body):
    async with asyncio.timeout(5), http.post("/__sim/faults", json=body) as response:
        assert response.status == 400
    assert simulator.pending_faults() == 0


async def test_reset_fault_over_http(client, http):
    async with asyncio.timeout(5), http.post("/__sim/faults", json={"reset": True}) as response:
        assert response.status == 200
    with pytest.raises(aiohttp.ClientConnectionError):
        await create(client)


# --- rate limit mode -------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_admits_rps_in_any_second():
    clock = FakeClock()
    window = SlidingWindowLimit(50, clock)
    admitted = []
    for tick in range(10_000):  # 10 s, one request a millisecond
        clock.now = 1000.0 + tick / 1000
        if window.admit():
            admitted.append(clock.now)
    assert len(admitted) == 500
    assert all(
        later - earlier >= 1.0 for earlier, later in zip(admitted, admitted[50:], strict=False)
    )


def test_sliding_window_slides_and_stretches_for_rates_below_one():
    clock = FakeClock()
    window = SlidingWindowLimit(3, clock)
    assert [window.admit() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.999
    assert not window.admit()
    clock.now += 0.001
    assert [window.admit() for _ in range(4)] == [True, True, True, False]

    slow = SlidingWindowLimit(0.5, clock)
    assert (slow.limit, slow.window) == (1, 2.0)
    assert [slow.admit(), slow.admit()] == [True, False]
    clock.now += 1.5
    assert not slow.admit()
    clock.now += 0.5
    assert slow.admit()


@pytest.mark.parametrize("rps", [-1, float("nan"), float("inf"), True, "5"])
def test_bad_rates_are_refused(rps):
    with pytest.raises(ValueError):
        FlexSimulator().set_rate_limit(rps)


def test_rate_limit_options_are_checked():
    with pytest.raises(ValueError, match="code"):
        FlexSimulator(rate_limit_rps=5, rate_limit_code=20001)
    with pytest.raises(ValueError, match="retry_after"):
        FlexSimulator().set_rate_limit(5, retry_after=[1])
    assert FlexSimulator(rate_limit_rps=0).rate_limit is None


async def test_creates_over_the_rate_get_429_20429_without_retry_after(client, simulator, http):
    clock = FakeClock()
    simulator.set_rate_limit(2, clock=clock)
    first, second = await create(client), await create(client)

    error = await create_error(client)
    assert (error.status, error.code) == (429, 20429)
    simulator.fail_next(503)  # a refused create leaves it queued
    form = {"Channel": json.dumps(channel())}
    async with (
        asyncio.timeout(5),
        http.post("/v1/Interactions", data=form, headers=AUTH) as response,
    ):
        assert response.status == 429
        assert "Retry-After" not in response.headers
        body = await response.json()
    assert body == {
        "code": 20429,
        "message": "Too many requests: over the simulated limit of 2/s",
        "more_info": "https://www.twilio.com/docs/errors/20429",
        "status": 429,
    }
    assert simulator.pending_faults() == 1

    clock.now += 1.0  # the window has slid past both creates
    assert (await create_error(client)).status == 503  # the queued fault, now admitted
    third = await create(client)
    assert [i["sid"] for i in simulator.interactions] == [first.sid, second.sid, third.sid]
    outcomes = [a["outcome"] for a in simulator.requests]
    assert outcomes == ["created", "created", "throttled", "throttled", "error", "created"]
    assert simulator.throttled() == 2


async def test_rate_limit_with_retry_after_and_flex_code():
    clock = FakeClock()
    sim = FlexSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    sim.set_rate_limit(1, retry_after=1, code=45010, clock=clock)
    await sim.start()
    form = {"Channel": json.dumps(channel())}
    try:
        async with aiohttp.ClientSession(base_url=sim.base_url) as session:
            answers = []
            for _ in range(2):
                async with (
                    asyncio.timeout(5),
                    session.post("/v1/Interactions", data=form, headers=AUTH) as response,
                ):
                    body = await response.json()
                    answers.append((response.status, response.headers.get("Retry-After")))
            assert answers == [(200, None), (429, "1")]
            assert (body["code"], body["status"]) == (45010, 429)
            sim.reset()  # forgets the window, keeps the limit
            async with session.post("/v1/Interactions", data=form, headers=AUTH) as response:
                assert response.status == 200
            assert sim.rate_limit is not None and sim.rate_limit.code == 45010
    finally:
        await sim.stop()


async def test_rate_limit_over_http(client, simulator, http):
    async with (
        asyncio.timeout(5),
        http.put("/__sim/rate_limit", json={"rps": 1, "retry_after": 2}) as response,
    ):
        assert response.status == 200
        assert await response.json() == {"rps": 1.0, "retry_after": 2, "code": 20429}
    await create(client)
    with pytest.raises(TwilioRestException) as caught:
        await create(client)
    assert (caught.value.status, caught.value.code) == (429, 20429)

    async with asyncio.timeout(5), http.put("/__sim/rate_limit", json={"rps": 0}) as response:
        assert await response.json() == {"rps": 0}
    assert simulator.rate_limit is None
    await create(client)
    await create(client)


@pytest.mark.parametrize(
    "body",
    [{"rps": -1}, {"rps": "fast"}, {}, {"rps": 5, "colour": "red"}, {"rps": 5, "code": 400},
     ["rps"]],
    ids=["negative", "not-a-number", "missing", "unknown-key", "bad-code", "not-object"],
)  # fmt: skip
async def test_bad_rate_limit_requests_are_400(simulator, http, body):
    async with asyncio.timeout(5), http.put("/__sim/rate_limit", json=body) as response:
        assert response.status == 400
        assert (await response.json())["code"] == 20001
    assert simulator.rate_limit is None


# --- conformance to the OpenAPI specs ---------------------------------------------------


def load_spec(name: str) -> dict[str, Any]:
    return json.loads((SPEC_DIR / name).read_text())


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


PYTHON_TYPES = {
    "string": str,
    "integer": int,
    "boolean": bool,
    "object": dict,
    "array": list,
    "number": (int, float),
}
FORMATS = {"date-time": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "uri": r"https?://\S+"}


def schema_errors(
    spec: dict[str, Any], schema: dict[str, Any], value: Any, path: str = "$"
) -> list[str]:
    """Problems with `value` under the JSON Schema subset the specs use here.

    Covers type, nullable, enum, pattern, min/maxLength, format, required, properties.
    """
    schema = resolve(spec, schema)
    if value is None:
        return [] if schema.get("nullable") else [f"{path} is null"]
    expected = PYTHON_TYPES.get(schema.get("type"))
    if expected and (
        not isinstance(value, expected) or (expected is int and isinstance(value, bool))
    ):
        return [f"{path}: {value!r} is not {schema['type']}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
            errors.append(f"{path}: length {len(value)} out of bounds")
        format_pattern = FORMATS.get(schema.get("format", ""))
        if format_pattern and not re.fullmatch(format_pattern, value):
            errors.append(f"{path}: {value!r} is not {schema['format']}")
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{path}.{name} is missing")
    for name, property_schema in schema.get("properties", {}).items():
        if isinstance(value, dict) and name in value:
            errors.extend(schema_errors(spec, property_schema, value[name], f"{path}.{name}"))
    return errors


def check_resource(spec: dict[str, Any], schema_name: str, resource: dict[str, Any]) -> None:
    """`resource` has exactly the schema's fields, each valid."""
    schema = spec["components"]["schemas"][schema_name]
    assert set(resource) == set(schema["properties"])
    assert schema_errors(spec, schema, resource) == []


def test_schema_checker_catches_mistakes():
    spec = load_spec("twilio_flex_v1.json")
    schema = spec["components"]["schemas"]["flex.v1.interaction"]
    bad = {"sid": "KD123", "url": 5, "links": None, "interaction_context_sid": "HQ" + "0" * 32}
    errors = schema_errors(spec, schema, bad)
    assert len(errors) == 3, errors
    channel_schema = spec["components"]["schemas"]["flex.v1.interaction.interaction_channel"]
    assert schema_errors(spec, channel_schema, {"type": "fax"}) != []


def test_create_params_match_the_spec():
    spec = load_spec("twilio_flex_v1.json")
    operation = spec["paths"]["/v1/Interactions"]["post"]
    assert operation["operationId"] == "CreateInteraction"
    [(content_type, content)] = operation["requestBody"]["content"].items()
    schema = content["schema"]

    assert content_type == "application/x-www-form-urlencoded"
    assert set(CREATE_INTERACTION_PARAMS) == set(schema["properties"])
    assert [n for n, p in CREATE_INTERACTION_PARAMS.items() if p.required] == schema["required"]
    for name, param in CREATE_INTERACTION_PARAMS.items():
        assert param.pattern == schema["properties"][name].get("pattern"), name
    assert list(operation["responses"]) == ["200"]


def test_channel_types_match_the_spec():
    spec = load_spec("twilio_flex_v1.json")
    assert (
        list(CHANNEL_TYPES)
        == spec["components"]["schemas"]["interaction_channel_enum_type"]["enum"]
    )


async def test_flex_responses_match_the_spec(client, http):
    spec = load_spec("twilio_flex_v1.json")
    created = await create(client, interaction_context_sid="HQ" + "4" * 32, webhook_ttid="ttid")

    async with asyncio.timeout(5):
        async with http.get(f"/v1/Interactions/{created.sid}", headers=AUTH) as response:
            interaction = await response.json()
        async with http.get(f"/v1/Interactions/{created.sid}/Channels", headers=AUTH) as response:
            channels = await response.json()

    check_resource(spec, "flex.v1.interaction", interaction)
    [channel_item] = channels["channels"]
    check_resource(spec, "flex.v1.interaction.interaction_channel", channel_item)
    list_schema = spec["paths"]["/v1/Interactions/{InteractionSid}/Channels"]["get"]["responses"][
        "200"
    ]
    list_schema = list_schema["content"]["application/json"]["schema"]
    assert set(channels) == set(list_schema["properties"])
    assert set(channels["meta"]) == set(list_schema["properties"]["meta"]["properties"])
    assert schema_errors(spec, list_schema, channels) == []


async def test_create_response_has_the_spec_examples_fields(client, simulator, http):
    spec = load_spec("twilio_flex_v1.json")
    example = spec["paths"]["/v1/Interactions"]["post"]["responses"]["200"]["content"][
        "application/json"
    ]
    example = example["examples"]["create"]["value"]
    form = {"Channel": json.dumps(channel()), "Routing": json.dumps(routing())}

    async with (
        asyncio.timeout(5),
        http.post("/v1/Interactions", data=form, headers=AUTH) as response,
    ):
        created = await response.json()

    check_resource(spec, "flex.v1.interaction", created)
    assert set(created["channel"]) == set(example["channel"])
    assert set(created["routing"]) == set(example["routing"])
    assert isinstance(created["routing"]["properties"]["attributes"], str)


async def test_task_and_user_responses_match_their_specs(client, simulator, http):
    taskrouter = load_spec("twilio_taskrouter_v1.json")
    conversations = load_spec("twilio_conversations_v1.json")
    await create(client)
    user = simulator.add_user("FX1", "Alice")

    async with asyncio.timeout(5):
        async with http.get(f"/v1/Workspaces/{WORKSPACE_SID}/Tasks", headers=AUTH) as response:
            tasks = await response.json()
        async with http.get(f"/v1/Users/{user['sid']}", headers=AUTH) as response:
            fetched_user = await response.json()

    [task] = tasks["tasks"]
    check_resource(taskrouter, "taskrouter.v1.workspace.task", task)
    assert tasks["meta"]["key"] == "tasks"
    check_resource(conversations, "conversations.v1.user", fetched_user)


# --- blocking entry point -----------------------------------------------------------


def test_run_simulator_serves_until_sigterm():
    code = "from standins.flex_simulator import run_simulator; run_simulator('127.0.0.1', 0, latency=0)"
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        base_url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        asyncio.run(_post_fault(base_url))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()


async def _post_fault(base_url: str) -> None:
    url = f"{base_url}/__sim/faults"
    async with (
        aiohttp.ClientSession() as session,
        asyncio.timeout(5),
        session.post(url, json={"status": 500}) as response,
    ):
        assert response.status == 200


# --- the package's parts --------------------------------------------------------------

PURE_PARTS = ("auth", "errors", "faults", "rate_limit", "resources", "spec_checks")
PURE_PARTS += ("conversation_checks", "conversations", "events")
# What a pure part may not import: the server, its I/O, or the parts that do I/O.
IMPURE = ("aiohttp", "asyncio", "socket", "standins.flex_simulator.app")
IMPURE += ("standins.flex_simulator.serve", "standins.flex_simulator.state")


@pytest.mark.parametrize("part", PURE_PARTS)
def test_pure_parts_import_no_server_and_no_io(part):
    """Spec checks, fault and rate-limit parsing stay testable without a server."""
    source = (ROOT / "standins" / "flex_simulator" / f"{part}.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not {name for name in imported if name.split(".")[0] in IMPURE or name in IMPURE}


async def test_each_part_logs_under_the_service_name(client, simulator, caplog):
    """One logger per module, named `flex_handover.<module path>`."""
    caplog.set_level(logging.INFO)
    simulator.set_rate_limit(1)
    await create(client)
    assert (await create_error(client)).status == 429
    ours = [record for record in caplog.records if "flex simulator:" in record.getMessage()]
    prefix = "flex_handover.standins.flex_simulator"
    assert [(record.name, record.getMessage().split(" ")[2]) for record in ours] == [
        (f"{prefix}.app", "created"),
        (f"{prefix}.state", "create"),
    ]


# --- an Interaction's channel -------------------------------------------------------


async def fetch_channel(client: Client, created: Any):
    async with asyncio.timeout(5):
        interaction = client.flex_api.v1.interaction(created.sid)
        return await interaction.channels(created.channel["sid"]).fetch_async()


async def test_a_channel_is_active_unless_planned_otherwise(client, simulator):
    created = await create(client)
    fetched = await fetch_channel(client, created)
    assert (fetched.sid, fetched.status, fetched.error_code) == (
        created.channel["sid"],
        "active",
        None,
    )
    assert simulator.channel_reads(created.sid) == 1


async def test_planned_channels_show_their_statuses_in_turn_then_the_last(client, simulator):
    simulator.next_channels(["setup", "failed"], error_code=19026, error_message="no such user")
    failing = await create(client)
    default = await create(client)
    seen = [await fetch_channel(client, failing) for _ in range(3)]
    assert [(c.status, c.error_code, c.error_message) for c in seen] == [
        ("setup", None, None),
        ("failed", 19026, "no such user"),
        ("failed", 19026, "no such user"),
    ]
    assert (await fetch_channel(client, default)).status == "active"
    # The list shows the status too, without moving the plan on.
    async with asyncio.timeout(5):
        [listed] = await client.flex_api.v1.interaction(failing.sid).channels.list_async()
    assert listed.status == "failed" and simulator.channel_reads(failing.sid) == 3


async def test_a_failed_channel_has_the_specs_example_error_by_default(client, simulator):
    simulator.next_channels(["failed"])
    simulator.next_channels(["closed"], error_code=19025)
    simulator.next_channels(["closed"])
    failed, closed_with_error, closed = [await create(client) for _ in range(3)]
    assert (await fetch_channel(client, failed)).error_code == 19025
    assert (await fetch_channel(client, failed)).error_message == "Channel validation error"
    assert (await fetch_channel(client, closed_with_error)).error_code == 19025
    assert (await fetch_channel(client, closed)).error_code is None


async def test_the_default_channel_status_is_a_setting():
    async with FlexSimulator(channel_status="setup") as simulator:
        await simulator.start()
        twilio = twilio_client(simulator, ACCOUNT_SID, AUTH_TOKEN)
        try:
            assert (await fetch_channel(twilio, await create(twilio))).status == "setup"
        finally:
            await twilio.http_client.close()


async def test_channel_reads_take_faults_of_their_own_route(client, simulator):
    created = await create(client)
    simulator.fail_next(503, route="channels")
    with pytest.raises(TwilioRestException) as caught:
        await fetch_channel(client, created)
    assert caught.value.status == 503
    assert (await fetch_channel(client, created)).status == "active"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/Interactions/KD{kd}/Channels/UO" + "0" * 32,  # another channel
        "/v1/Interactions/KD" + "0" * 32 + "/Channels/UO{uo}",  # another Interaction
        "/v1/Interactions/KD{kd}/Channels/not-a-sid",
        "/v1/Interactions/not-a-sid/Channels/UO{uo}",
    ],
)
async def test_an_unknown_or_malformed_channel_is_twilio_404(client, http, path):
    created = await create(client)
    url = path.format(kd=created.sid[2:], uo=created.channel["sid"][2:])
    async with asyncio.timeout(5), http.get(url, headers=AUTH) as response:
        assert response.status == 404
        assert (await response.json())["code"] == 20404


@pytest.mark.parametrize(
    "options",
    [
        {"statuses": []},
        {"statuses": "failed"},
        {"statuses": ["broken"]},
        {"statuses": ["failed"], "count": 0},
        {"statuses": ["failed"], "error_code": "19025"},
        {"statuses": ["failed"], "error_message": 5},
        {"statuses": ["failed"], "colour": "red"},
    ],
)
def test_channel_plans_are_checked(simulator, options):
    with pytest.raises(ValueError):
        simulator.add_channels(options)


async def test_channel_plans_over_http(client, simulator, http):
    body = {"statuses": ["setup", "active"], "count": 2}
    async with asyncio.timeout(5), http.post("/__sim/channels", json=body) as response:
        assert (response.status, await response.json()) == (200, {"queued": 2})
    async with asyncio.timeout(5), http.post("/__sim/channels", json={"x": 1}) as response:
        assert response.status == 400
    created = await create(client)
    assert [(await fetch_channel(client, created)).status for _ in range(2)] == [
        "setup",
        "active",
    ]
    async with asyncio.timeout(5), http.get("/__sim/interactions") as response:
        [record] = await response.json()
    assert record["channel_plan"]["statuses"] == ["setup", "active"]


def test_channel_statuses_and_fetch_params_match_the_spec():
    spec = load_spec("twilio_flex_v1.json")
    schemas = spec["components"]["schemas"]
    assert list(CHANNEL_STATUSES) == schemas["interaction_channel_enum_channel_status"]["enum"]
    operation = spec["paths"]["/v1/Interactions/{InteractionSid}/Channels/{Sid}"]["get"]
    params = {p["name"]: p["schema"]["pattern"] for p in operation["parameters"]}
    assert params == FETCH_CHANNEL_PATH_PARAMS


async def test_a_fetched_channel_matches_the_spec(client, simulator, http):
    spec = load_spec("twilio_flex_v1.json")
    simulator.next_channels(["failed"])
    created = await create(client)
    url = f"/v1/Interactions/{created.sid}/Channels/{created.channel['sid']}"
    async with asyncio.timeout(5), http.get(url, headers=AUTH) as response:
        channel_read = await response.json()
    check_resource(spec, "flex.v1.interaction.interaction_channel", channel_read)
    example = spec["paths"]["/v1/Interactions/{InteractionSid}/Channels/{Sid}"]["get"]
    example = example["responses"]["200"]["content"]["application/json"]["examples"]
    assert set(channel_read) == set(example["fetch"]["value"])

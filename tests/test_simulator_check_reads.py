"""The simulator's reads behind `flex-handover check` (the TaskRouter workspace, a
workflow, a task channel, the workspaces and Conversations lists), held to the specs
in tests/spec/, through the real twilio client, and failing on demand."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from twilio.base.exceptions import TwilioRestException

from standins.flex_simulator import FlexSimulator
from standins.flex_simulator.spec_checks import (
    FETCH_TASK_CHANNEL_PATH_PARAMS,
    FETCH_WORKFLOW_PATH_PARAMS,
    FETCH_WORKSPACE_PATH_PARAMS,
    LIST_CONVERSATIONS_PARAMS,
    LIST_WORKSPACES_PARAMS,
)
from tests.support.values import ACCOUNT_SID, WORKFLOW_SID, WORKSPACE_SID
from tests.test_flex_simulator import AUTH, check_resource, load_spec
from worker.flex_client import FlexClient

WORKSPACE = f"/v1/Workspaces/{WORKSPACE_SID}"


@pytest.fixture
def client(flex: FlexClient):
    """The worker's bounded twilio client (conftest's `flex`), as `check` uses it."""
    return flex.twilio


@pytest.fixture
async def http(simulator: FlexSimulator):
    async with aiohttp.ClientSession(base_url=simulator.base_url) as session:
        yield session


async def get(http: aiohttp.ClientSession, path: str) -> tuple[int, dict]:
    async with asyncio.timeout(5), http.get(path, headers=AUTH) as response:
        return response.status, await response.json()


def test_path_and_query_params_match_the_spec():
    spec = load_spec("twilio_taskrouter_v1.json")

    def path_params(path: str) -> dict[str, str]:
        operation = spec["paths"][path]["get"]
        return {
            p["name"]: p["schema"].get("pattern", r"[^/]+")
            for p in operation["parameters"]
            if p["in"] == "path"
        }

    assert path_params("/v1/Workspaces/{Sid}") == FETCH_WORKSPACE_PATH_PARAMS
    assert path_params("/v1/Workspaces/{WorkspaceSid}/Workflows/{Sid}") == (
        FETCH_WORKFLOW_PATH_PARAMS
    )
    assert path_params("/v1/Workspaces/{WorkspaceSid}/TaskChannels/{Sid}") == (
        FETCH_TASK_CHANNEL_PATH_PARAMS
    )
    listed = {p["name"] for p in spec["paths"]["/v1/Workspaces"]["get"]["parameters"]}
    assert listed == set(LIST_WORKSPACES_PARAMS)
    conversations = load_spec("twilio_conversations_v1.json")
    listed = {p["name"] for p in conversations["paths"]["/v1/Conversations"]["get"]["parameters"]}
    assert listed == set(LIST_CONVERSATIONS_PARAMS)
    state = conversations["components"]["schemas"]["conversation_enum_state"]["enum"]
    assert list(LIST_CONVERSATIONS_PARAMS["State"].enum or ()) == state


async def test_the_reads_answer_the_specs_resources(http):
    taskrouter = load_spec("twilio_taskrouter_v1.json")
    conversations = load_spec("twilio_conversations_v1.json")

    status, workspace = await get(http, WORKSPACE)
    assert status == 200
    check_resource(taskrouter, "taskrouter.v1.workspace", workspace)
    status, workflow = await get(http, f"{WORKSPACE}/Workflows/{WORKFLOW_SID}")
    check_resource(taskrouter, "taskrouter.v1.workspace.workflow", workflow)
    assert workflow["sid"] == WORKFLOW_SID
    status, channel = await get(http, f"{WORKSPACE}/TaskChannels/chat")
    check_resource(taskrouter, "taskrouter.v1.workspace.task_channel", channel)
    status, again = await get(http, f"{WORKSPACE}/TaskChannels/{channel['sid']}")
    assert again["sid"] == channel["sid"]
    status, page = await get(http, "/v1/Workspaces?PageSize=1")
    [listed] = page["workspaces"]
    check_resource(taskrouter, "taskrouter.v1.workspace", listed)
    status, page = await get(http, "/v1/Conversations?PageSize=1")
    assert status == 200
    assert page["conversations"] == []
    assert page["meta"]["key"] == "conversations"
    assert "conversations.v1.conversation" in conversations["components"]["schemas"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/Workspaces/WS123",
        f"{WORKSPACE}/Workflows/WW123",
        f"{WORKSPACE}/Workflows/{WORKSPACE_SID}",
        "/v1/Workspaces/nope/TaskChannels/chat",
    ],
)
async def test_a_malformed_path_is_twilio_404(http, path):
    status, body = await get(http, path)
    assert (status, body["code"]) == (404, 20404)


@pytest.mark.parametrize(
    "query",
    ["/v1/Conversations?PageSize=101", "/v1/Conversations?Status=x", "/v1/Workspaces?PageSize=0"],
)
async def test_list_queries_are_checked(http, query):
    status, body = await get(http, query)
    assert (status, body["code"]) == (400, 20001)


async def test_the_official_client_reads_them(client):
    workspace = client.taskrouter.v1.workspaces(WORKSPACE_SID)
    assert (await workspace.fetch_async()).sid == WORKSPACE_SID
    assert (await workspace.workflows(WORKFLOW_SID).fetch_async()).sid == WORKFLOW_SID
    assert (await workspace.task_channels("voice").fetch_async()).unique_name == "voice"
    assert len(list(await client.taskrouter.v1.workspaces.page_async(page_size=1))) == 1
    assert list(await client.conversations.v1.conversations.page_async(page_size=1)) == []


@pytest.mark.parametrize(
    ("route", "read"),
    [
        ("workspaces", lambda c: c.taskrouter.v1.workspaces(WORKSPACE_SID).fetch_async()),
        (
            "workflows",
            lambda c: (
                c.taskrouter.v1.workspaces(WORKSPACE_SID).workflows(WORKFLOW_SID).fetch_async()
            ),
        ),
        (
            "task_channels",
            lambda c: c.taskrouter.v1.workspaces(WORKSPACE_SID).task_channels("chat").fetch_async(),
        ),
    ],
)
async def test_each_read_fails_on_its_own_route(client, simulator, route, read):
    simulator.fail_next(404, code=20404, route=route)
    with pytest.raises(TwilioRestException) as raised:
        await read(client)
    assert (raised.value.status, raised.value.code) == (404, 20404)
    await read(client)  # one fault, one failure


async def test_the_conversations_list_fails_on_the_conversations_route(client, simulator, http):
    simulator.fail_next(403, code=20403, route="conversations")
    status, body = await get(http, "/v1/Conversations")
    assert (status, body["code"]) == (403, 20403)
    status, _ = await get(http, "/v1/Conversations")
    assert status == 200


async def test_the_workspaces_list_takes_no_faults_but_checks_credentials(simulator):
    simulator.fail_next(500, route="workspaces")
    async with aiohttp.ClientSession(base_url=simulator.base_url) as session:
        wrong = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT_SID, "not-the-token")}
        async with session.get("/v1/Workspaces", headers=wrong) as response:
            assert response.status == 401
        status, _ = await get(session, "/v1/Workspaces")
        assert status == 200
    assert simulator.pending_faults("workspaces") == 1

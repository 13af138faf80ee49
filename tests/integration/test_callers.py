"""Callers that are not a Twilio AI Assistant: an agent framework that registers
the tool from `GET /tools/flex-handover/schema`, and a plain backend that posts
a JSON body. Real `flex-handover api` (and `worker`) processes, real Redis, the
Flex simulator on loopback.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema_rs
import pytest

from api import tool_schema
from standins.redis_server import free_port
from tests.support.processes import clean_env, wait_until
from tests.support.service import service_env
from tests.support.values import (
    ACCOUNT_SID,
    ADMIN_TOKEN,
    AUTH_TOKEN,
    BILLING_WORKFLOW_SID,
    CONVERSATION_SID,
    TOOL_TOKEN,
    WORKFLOW_SID,
    WORKSPACE_SID,
    admin_auth,
    new_conversation_sid,
    tool_auth,
)

TARGETS = {
    "billing": {"workflow_sid": BILLING_WORKFLOW_SID, "attributes": {"department": "billing"}},
    "after-hours": {"workflow_sid": BILLING_WORKFLOW_SID, "priority": 3},
}
SECRETS = (TOOL_TOKEN, ADMIN_TOKEN, AUTH_TOKEN)
# Not secrets, but no business of a model's either: the schema names targets only.
SETTINGS_VALUES = (ACCOUNT_SID, WORKSPACE_SID, WORKFLOW_SID, BILLING_WORKFLOW_SID, "department")


async def get_schema(url: str, **options: Any) -> tuple[int, Any, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}{tool_schema.SCHEMA_PATH}", **options) as response,
    ):
        text = await response.text()
        return response.status, json.loads(text), text


@pytest.fixture
async def api_url(processes, redis_server, redis) -> str:
    """`flex-handover api` with the default target and two named ones; no worker."""
    env = clean_env(
        **service_env(redis_server.url, "http://127.0.0.1:9", HANDOVER_TARGETS=json.dumps(TARGETS))
    )
    _, url = await processes.start_api(env)
    return url


async def test_the_schema_endpoint_defines_every_configured_target_and_holds_no_secret(api_url):
    status, document, text = await get_schema(api_url, headers=tool_auth())

    assert status == 200, document
    assert document == tool_schema.schema_document(["default", *TARGETS])
    names = [tool["function"]["name"] for tool in document["tools"]]
    assert names == [
        "hand_over_to_human",
        "hand_over_to_human_billing",
        "hand_over_to_human_after-hours",
    ]
    assert {name: route["path"] for name, route in document["routes"].items()} == {
        "hand_over_to_human": "/tools/flex-handover",
        "hand_over_to_human_billing": "/tools/flex-handover/billing",
        "hand_over_to_human_after-hours": "/tools/flex-handover/after-hours",
    }
    for tool in document["tools"]:
        assert tool["function"]["parameters"] == document["input_schema"]
    jsonschema_rs.meta.validate(document["input_schema"])
    for value in (*SECRETS, *SETTINGS_VALUES):
        assert value not in text


@pytest.mark.parametrize(
    "options, status",
    [
        ({}, 401),
        ({"headers": tool_auth("not-the-token")}, 403),
        ({"headers": admin_auth()}, 403),  # an admin token is not a tool token
        ({"params": {"token": TOOL_TOKEN}}, 200),  # as a tool URL may carry it
    ],
    ids=["no credentials", "wrong token", "admin token", "token in the URL"],
)
async def test_the_schema_endpoint_takes_the_tool_credentials(api_url, options, status):
    answer, body, text = await get_schema(api_url, **options)
    assert answer == status, body
    if status != 200:
        assert set(body) == {"error", "message"}
        assert "hand_over_to_human" not in text and "billing" not in text


async def test_a_call_built_from_the_schema_is_accepted_on_each_route(api_url, redis):
    """What a framework does: validate the model's arguments against the
    definition's parameters, then post them to the tool's route."""
    _, document, _ = await get_schema(api_url, headers=tool_auth())
    async with aiohttp.ClientSession() as http:
        for n, tool in enumerate(document["tools"]):
            function = tool["function"]
            (example,) = function["parameters"]["examples"]
            arguments = {**example, "conversation_sid": new_conversation_sid(100 + n)}
            jsonschema_rs.validate(function["parameters"], arguments)
            route = document["routes"][function["name"]]
            async with http.request(
                route["method"], api_url + route["path"], json=arguments, headers=tool_auth()
            ) as response:
                body = await response.json()
                assert response.status == 202, body
            async with http.get(api_url + body["status_url"], headers=admin_auth()) as response:
                record = await response.json()
            assert record["target"] == route["target"]
            assert record["conversation_sid"] == arguments["conversation_sid"]


async def test_a_plain_backend_json_call_reaches_flex(processes, simulator, redis_server, redis):
    """The README's plain-backend call: a JSON body naming the conversation and
    the customer, a bearer token, and the handover ends succeeded in Flex."""
    simulator.seed_conversation(CONVERSATION_SID)
    env = clean_env(**service_env(redis_server.url, simulator.base_url))
    _, url = await processes.start_api(env)
    await processes.start_worker(env)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/tools/flex-handover/billing",
            json={
                "conversation_sid": CONVERSATION_SID,
                "identity": "whatsapp:+14155550123",
                "reason": "refund",
                "order_id": "A-17",
            },
            headers=tool_auth(),
        ) as response:
            ack = await response.json()
            assert response.status == 202, ack
        assert ack["handed_over"] is True and ack["message"]

        async def final() -> dict[str, Any] | None:
            async with http.get(f"{url}{ack['status_url']}", headers=admin_auth()) as reply:
                record = await reply.json()
            done = record["state"] in ("succeeded", "failed") and record["aftercare"] != "pending"
            return record if done else None

        record = await wait_until(final, 20, "the handover ended")
    assert record["state"] == "succeeded", record
    [interaction] = simulator.interactions
    assert record["interaction_sid"] == interaction["sid"]
    assert interaction["channel"]["properties"]["media_channel_sid"] == CONVERSATION_SID
    properties = interaction["routing"]["properties"]
    assert properties["workflow_sid"] == BILLING_WORKFLOW_SID
    assert properties["attributes"]["from"] == "whatsapp:+14155550123"
    assert properties["attributes"]["reason"] == "refund"
    assert properties["attributes"]["handoverInput"] == {"order_id": "A-17"}


async def test_the_schema_route_leaves_the_tool_routes_as_they_were(api_url):
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{api_url}{tool_schema.SCHEMA_PATH}", json={}, headers=tool_auth()
        ) as response:  # a POST there is a tool call for a target named "schema"
            assert (response.status, (await response.json())["error"]) == (404, "unknown_target")
        for path in ("/tools/flex-handover", "/tools/flex-handover/billing"):
            async with http.get(api_url + path, headers=tool_auth()) as response:
                assert response.status == 405, path


# --- the README's examples, run as printed ------------------------------------------------

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def readme_example(containing: str) -> dict[str, Any]:
    """The one Python block of README's Callers section holding `containing`, run:
    its module namespace."""
    section = README.split("\n## Callers\n", 1)[1].split("\n## ", 1)[0]
    [block] = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if containing in b]
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    return namespace


async def stored(url: str, conversation_sid: str) -> dict[str, Any]:
    """The conversation's handover as the API holds it (through a repeat call's 200)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/tools/flex-handover",
            json={"conversation_sid": conversation_sid, "identity": "phone:+14155550100"},
            headers=tool_auth(),
        ) as response,
    ):
        assert response.status == 200, await response.text()
        ack = await response.json()
    async with (
        aiohttp.ClientSession() as http,
        http.get(url + ack["status_url"], headers=admin_auth()) as response,
    ):
        return await response.json()


async def test_the_readme_plain_backend_example_hands_over(api_url):
    hand_over = readme_example("async def hand_over(")["hand_over"]
    conversation = new_conversation_sid(200)

    status, answer = await hand_over(
        api_url, TOOL_TOKEN, conversation, "whatsapp:+14155550123", reason="refund"
    )
    repeat, again = await hand_over(api_url, TOOL_TOKEN, conversation, "whatsapp:+14155550123")

    assert (status, answer["handed_over"]) == (202, True), answer
    assert (repeat, again["handover_id"]) == (200, answer["handover_id"])
    assert (await hand_over(api_url, "wrong", conversation, "x"))[0] == 403


async def test_the_readme_framework_example_registers_the_tools_and_pins_the_customer(api_url):
    load_handover_tools = readme_example("async def load_handover_tools(")["load_handover_tools"]
    tools, call = await load_handover_tools(api_url, TOOL_TOKEN)
    assert [tool["function"]["name"] for tool in tools] == [
        "hand_over_to_human",
        "hand_over_to_human_billing",
        "hand_over_to_human_after-hours",
    ]
    conversation = new_conversation_sid(201)
    # The model's arguments name another conversation: the application's win.
    arguments = json.dumps({"reason": "refund", "conversation_sid": new_conversation_sid(202)})

    message = await call(
        "hand_over_to_human_billing", arguments, conversation, "whatsapp:+14155550123"
    )

    assert message == "I'm transferring you to a human agent now."
    record = await stored(api_url, conversation)
    assert (record["target"], record["conversation_sid"]) == ("billing", conversation)


class FakeSession:
    """What the tool reads of TAC's ConversationSession (src/tac/models/session.py)."""

    def __init__(self, conversation_id: str, address: str, channel: str = "WHATSAPP"):
        self.conversation_id = conversation_id
        self.channel = channel
        self.author_info = types.SimpleNamespace(address=address)


class FakeTool:
    """TACTool as src/tac/tools/base.py defines what the example uses: injected
    values merged over the caller's arguments, the implementation awaited."""

    def __init__(self, implementation, name: str, description: str):
        self.implementation, self.name, self.description = implementation, name, description
        self.injected: dict[str, Any] = {}

    def configure_injection(self, **values: Any) -> FakeTool:
        self.injected.update(values)
        return self

    async def __call__(self, **arguments: Any) -> Any:
        return await self.implementation(**{**arguments, **self.injected})


@pytest.fixture
def fake_tac(monkeypatch):
    """TAC's modules as far as the example imports them (TAC itself is not a
    dependency of this project)."""
    base = types.ModuleType("tac.tools.base")
    base.InjectedToolArg = type("InjectedToolArg", (), {})
    base.TACTool = FakeTool
    base.function_tool = lambda name, description: lambda f: FakeTool(f, name, description)
    session = types.ModuleType("tac.models.session")
    session.ConversationSession = FakeSession
    for name, module in {
        "tac": types.ModuleType("tac"),
        "tac.tools": types.ModuleType("tac.tools"),
        "tac.tools.base": base,
        "tac.models": types.ModuleType("tac.models"),
        "tac.models.session": session,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)


async def test_the_readme_tac_tool_stores_first_and_tells_the_model_the_truth(
    api_url, fake_tac, monkeypatch
):
    monkeypatch.setenv("HANDOVER_URL", f"{api_url}/tools/flex-handover/billing")
    monkeypatch.setenv("HANDOVER_TOOL_TOKEN", TOOL_TOKEN)
    create_handover_tool = readme_example("def create_handover_tool(")["create_handover_tool"]
    conversation = new_conversation_sid(203)

    tool = create_handover_tool(FakeSession(conversation, "whatsapp:+14155550123"))
    answer = await tool(reason="refund", summary="order 1234 arrived broken")
    short_number = create_handover_tool(FakeSession(new_conversation_sid(204), "+12345"))
    refused = await short_number(reason="refund")
    orchestrator_id = create_handover_tool(FakeSession("conv_123", "+14155550123"))
    not_a_sid = await orchestrator_id(reason="refund")

    assert tool.name == "hand_over_to_human"
    assert answer == {"handed_over": True, "message": "I'm transferring you to a human agent now."}
    record = await stored(api_url, conversation)
    assert (record["target"], record["identity"]) == ("billing", "whatsapp:+14*******23")
    assert refused["handed_over"] is False and "E.164" in refused["message"]
    assert not_a_sid["handed_over"] is False
    assert "does not name a Conversation" in not_a_sid["message"]


async def test_the_readme_tac_tool_says_so_when_the_service_cannot_be_reached(
    fake_tac, monkeypatch
):
    monkeypatch.setenv("HANDOVER_URL", f"http://127.0.0.1:{free_port()}/tools/flex-handover")
    monkeypatch.setenv("HANDOVER_TOOL_TOKEN", TOOL_TOKEN)
    example = readme_example("def create_handover_tool(")
    tool = example["create_handover_tool"](FakeSession(CONVERSATION_SID, "+14155550123"))

    assert await tool(reason="refund") == {"handed_over": False, "message": example["FAILED"]}

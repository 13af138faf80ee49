"""Callers that are not a Twilio AI Assistant: an agent framework that registers
the tool from `GET /tools/flex-handover/schema`, and a plain backend that posts
a JSON body. Real `flex-handover api` (and `worker`) processes, real Redis, the
Flex simulator on loopback.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import jsonschema_rs
import pytest

from api import tool_schema
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

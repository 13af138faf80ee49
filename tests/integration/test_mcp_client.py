"""The MCP server end to end: the official MCP Python client (`mcp`) against a real
`flex-handover api` process, a real worker and the Flex simulator."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import httpx2
import mcp.types as types
import pytest
from mcp import Client, ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.types.version import LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION

from api.parsing import KNOWN_FIELDS
from shared import redis_keys
from tests.support.processes import clean_env
from tests.support.service import service_env
from tests.support.values import (
    BILLING_WORKFLOW_SID,
    TOOL_TOKEN,
    WORKFLOW_SID,
    admin_auth,
    new_conversation_sid,
    tool_auth,
)

IDENTITY = "whatsapp:+14155550123"


async def wait_succeeded(api_url: str, handover_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """`GET /handovers/{id}` (admin token) until the handover has succeeded."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(headers=admin_auth()) as http:
        while True:
            async with http.get(f"{api_url}/handovers/{handover_id}") as response:
                assert response.status == 200, await response.text()
                record = await response.json()
            if record["state"] == "succeeded" and record["aftercare"] != "pending":
                return record
            assert record["state"] != "failed", record
            assert time.monotonic() < deadline, f"not succeeded within {timeout}s: {record}"
            await asyncio.sleep(0.05)


async def tool_endpoint_message(api_url: str, body: dict[str, Any]) -> str:
    """What the tool endpoint answers for the same input as a plain JSON body."""
    async with (
        aiohttp.ClientSession(headers=tool_auth()) as http,
        http.post(f"{api_url}/tools/flex-handover", json=body) as response,
    ):
        assert response.status == 400, await response.text()
        return (await response.json())["message"]


@pytest.fixture
async def api_url(redis, redis_server, simulator, processes) -> str:
    env = clean_env(**service_env(redis_server.url, simulator.base_url))
    _, url = await processes.start_api(env)
    await processes.start_worker(env)
    return url


async def test_the_official_client_hands_a_conversation_over_and_reads_it_back(api_url, simulator):
    conversation_sid = new_conversation_sid(1101)
    arguments = {"conversation_sid": conversation_sid, "identity": IDENTITY, "reason": "refund"}
    async with (
        httpx2.AsyncClient(headers=tool_auth()) as http,
        streamable_http_client(f"{api_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        initialized = await session.initialize()
        assert initialized.protocol_version == LATEST_HANDSHAKE_VERSION
        assert initialized.server_info.name == "flex-handover"

        listed = await session.list_tools()
        assert [tool.name for tool in listed.tools] == [
            "hand_over_to_human",
            "hand_over_to_human_billing",
        ]
        for tool in listed.tools:
            schema = tool.input_schema
            assert schema["required"] == ["conversation_sid", "identity"]
            assert set(schema["properties"]) == {"conversation_sid", "identity", *KNOWN_FIELDS}
            for name, limit in KNOWN_FIELDS.items():
                assert schema["properties"][name]["maxLength"] == limit

        # The client checks structuredContent against the tool's output schema.
        result = await session.call_tool("hand_over_to_human", arguments)
        assert result.is_error is False, result
        answer = result.structured_content
        handover_id = answer["handover_id"]
        assert (answer["status"], answer["handed_over"]) == ("queued", True)
        assert answer["status_url"] == f"/handovers/{handover_id}"
        [text] = result.content
        assert text.text.startswith("I'm transferring you to a human agent now.")
        assert handover_id in text.text

        record = await wait_succeeded(api_url, handover_id)
        assert record["conversation_sid"] == conversation_sid
        assert [i["sid"] for i in simulator.interactions] == [record["interaction_sid"]]
        properties = simulator.interactions[0]["routing"]["properties"]
        assert properties["workflow_sid"] == WORKFLOW_SID
        assert properties["attributes"]["reason"] == "refund"
        assert properties["attributes"]["handoverId"] == handover_id

        repeat = await session.call_tool("hand_over_to_human", arguments)
        assert repeat.structured_content["handover_id"] == handover_id
        assert repeat.structured_content["status"] == "succeeded"
        assert len(simulator.interactions) == 1

        bad = {"conversation_sid": "CHnope", "identity": IDENTITY}
        refused = await session.call_tool("hand_over_to_human", bad)
        assert refused.is_error is True
        assert refused.content[0].text == await tool_endpoint_message(api_url, bad)
        assert refused.content[0].text.startswith("conversation_sid does not name a Conversation")

        with pytest.raises(MCPError) as unknown:
            await session.call_tool("hand_over_to_human_vip", arguments)
        assert unknown.value.error.code == types.INVALID_PARAMS
    assert len(simulator.interactions) == 1


async def test_a_client_on_the_per_request_protocol_reaches_a_named_target(api_url, simulator):
    """`mcp.Client` probes `server/discover` first: it speaks 2026-07-28 here."""
    conversation_sid = new_conversation_sid(1102)
    async with (
        httpx2.AsyncClient(headers=tool_auth()) as http,
        Client(streamable_http_client(f"{api_url}/mcp", http_client=http)) as client,
    ):
        assert client.session.discover_result is not None
        assert client.session.discover_result.supported_versions == [LATEST_MODERN_VERSION]
        listed = await client.list_tools()
        assert [tool.name for tool in listed.tools][-1] == "hand_over_to_human_billing"
        arguments = {"conversation_sid": conversation_sid, "identity": "phone:+14155550123"}
        result = await client.call_tool("hand_over_to_human_billing", arguments)
        assert result.is_error is False, result
        handover_id = result.structured_content["handover_id"]
        again = await client.call_tool("hand_over_to_human_billing", arguments)
        assert again.structured_content["handover_id"] == handover_id
    record = await wait_succeeded(api_url, handover_id)
    assert record["target"] == "billing"
    assert [i["sid"] for i in simulator.interactions] == [record["interaction_sid"]]
    assert simulator.interactions[0]["routing"]["properties"]["workflow_sid"] == (
        BILLING_WORKFLOW_SID
    )


async def test_without_the_tool_token_the_client_gets_nowhere(api_url, redis, simulator):
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            f"{api_url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.json()["message"]
        # A token of the wrong kind, or in the URL, does not open it either.
        for url, headers in (
            (f"{api_url}/mcp?token={TOOL_TOKEN}", {}),
            (f"{api_url}/mcp", {"Authorization": "Bearer not-the-tool-token-000000"}),
        ):
            with pytest.raises(ExceptionGroup) as failed:  # the client's task groups wrap it
                async with (
                    httpx2.AsyncClient(headers=headers) as client_http,
                    streamable_http_client(url, http_client=client_http) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
            assert failed.group_contains(MCPError)
    assert await redis.keys(redis_keys.HANDOVER_KEY_PREFIX + "*") == []
    assert simulator.interactions == []

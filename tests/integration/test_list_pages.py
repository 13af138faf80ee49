"""Every list the worker reads is one page, whatever `next_page_url` says.

twilio-python's `list_async(limit=…)` follows `next_page_url` until it has read
`limit` records: a server answering empty pages that each link to another would
be asked without end (a reviewer counted 7,656 requests in 2 s). Here a server
on loopback does exactly that, for the webhooks, messages and TaskRouter tasks
lists, and counts what it is asked; the worker's real FlexClient and
ConversationClient (the twilio client with its BoundedHttpClient) read it. The
server stops linking after LINKED_PAGES requests, so a client that follows links
ends too, with a count the test tells from one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from shared.settings import Settings
from standins.redis_server import free_port
from tests.support.values import ACCOUNT_SID, AUTH_TOKEN, CONVERSATION_SID, WORKSPACE_SID
from worker.conversation_client import MESSAGE_LOOKUP_LIMIT, WEBHOOK_PAGE_SIZE, ConversationClient
from worker.errors import FlexError
from worker.flex_client import LOOKUP_LIMIT, FlexClient
from worker.task_lookup import task_expression

LINKED_PAGES = 50
WEBHOOKS_PATH = f"/v1/Conversations/{CONVERSATION_SID}/Webhooks"
MESSAGES_PATH = f"/v1/Conversations/{CONVERSATION_SID}/Messages"
TASKS_PATH = f"/v1/Workspaces/{WORKSPACE_SID}/Tasks"
KEYS = {WEBHOOKS_PATH: "webhooks", MESSAGES_PATH: "messages", TASKS_PATH: "tasks"}


class LinkingServer:
    """Answers every list with a page (empty unless `records` says otherwise)
    whose `meta.next_page_url` is the URL just asked for."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.status = 200
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    async def _page(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        key = KEYS.get(request.path)
        if key is None:
            return web.json_response({"status": 404, "code": 20404}, status=404)
        if self.status != 200:
            return web.json_response({"status": self.status, "code": 20500}, status=self.status)
        url = f"{self.base_url}{request.path_qs}"
        linked = len(self.requests) < LINKED_PAGES
        return web.json_response(
            {
                key: self.records.get(key, []),
                "meta": {
                    "page": 0,
                    "page_size": int(request.query.get("PageSize", "50")),
                    "first_page_url": url,
                    "previous_page_url": None,
                    "url": url,
                    "next_page_url": url if linked else None,
                    "key": key,
                },
            }
        )


@pytest.fixture
async def server() -> AsyncIterator[LinkingServer]:
    linking = LinkingServer()
    await linking.start()
    yield linking
    await linking.stop()


@pytest.fixture
async def flex(server: LinkingServer) -> AsyncIterator[FlexClient]:
    client = FlexClient(
        Settings(
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=AUTH_TOKEN,
            flex_workspace_sid=WORKSPACE_SID,
            conversations_api_base_url=server.base_url,
            taskrouter_api_base_url=server.base_url,
            flex_api_base_url=server.base_url,
            attempt_timeout_seconds=2.0,
        )
    )
    yield client
    await client.close()


def webhook(n: int) -> dict[str, Any]:
    return {
        "sid": "WH" + f"{n:032x}",
        "account_sid": ACCOUNT_SID,
        "conversation_sid": CONVERSATION_SID,
        "target": "webhook",
        "configuration": {"url": f"https://bot.example/{n}", "method": "POST", "filters": []},
    }


async def test_a_webhook_list_is_one_page_of_five(flex, server):
    assert await ConversationClient(flex).list_webhooks(CONVERSATION_SID) == []
    assert server.requests == [(WEBHOOKS_PATH, {"PageSize": str(WEBHOOK_PAGE_SIZE)})]


async def test_a_full_webhook_page_is_read_and_its_link_not_followed(flex, server):
    server.records["webhooks"] = [webhook(n) for n in range(WEBHOOK_PAGE_SIZE)]

    found = await ConversationClient(flex).list_webhooks(CONVERSATION_SID)

    assert [w.url for w in found] == [f"https://bot.example/{n}" for n in range(5)]
    assert server.paths() == [WEBHOOKS_PATH]


async def test_a_message_lookup_is_one_page_newest_first(flex, server):
    assert await ConversationClient(flex).recent_messages(CONVERSATION_SID) == []
    assert server.requests == [
        (MESSAGES_PATH, {"Order": "desc", "PageSize": str(MESSAGE_LOOKUP_LIMIT)})
    ]


async def test_a_task_lookup_is_one_page(flex, server):
    expression = task_expression("ho_" + "1" * 32)

    found = await flex.list_task_attributes(WORKSPACE_SID, expression, ["pending", "reserved"])

    assert found == []
    [(path, query)] = server.requests
    assert path == TASKS_PATH
    assert query["PageSize"] == str(LOOKUP_LIMIT)
    assert query["EvaluateTaskAttributes"] == expression


async def test_a_failed_page_is_still_a_retryable_failure_after_one_request(flex, server):
    """One page changes nothing in how a failed list is classified."""
    server.status = 503
    conversations = ConversationClient(flex)
    calls = [
        conversations.list_webhooks(CONVERSATION_SID),
        conversations.recent_messages(CONVERSATION_SID),
        flex.list_task_attributes(WORKSPACE_SID, task_expression("ho_" + "2" * 32), ["pending"]),
    ]
    for call in calls:
        with pytest.raises(FlexError) as caught:
            await call
        assert (caught.value.status, caught.value.retryable) == (503, True)
    assert server.paths() == [WEBHOOKS_PATH, MESSAGES_PATH, TASKS_PATH]

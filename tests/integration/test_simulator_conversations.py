"""The simulator as Twilio after a handover, driven by the real twilio-python
client the worker uses (its BoundedHttpClient, every API at the simulator's one
base URL): a Conversation's attributes and state, its scoped webhooks and
messages, spec violations refused with Twilio's error body, faults on the new
routes, every request listed, and TaskRouter workspace events signed as Twilio
signs them, verified by a receiver here with twilio's RequestValidator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from standins.flex_simulator import FlexSimulator
from standins.redis_server import free_port
from tests.support.processes import ProcessGroup, clean_env
from tests.support.values import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CONVERSATION_SID,
    WORKFLOW_SID,
    WORKSPACE_SID,
    new_conversation_sid,
)
from tests.test_flex_simulator import check_resource, load_spec, schema_errors
from worker.flex_client import BoundedHttpClient

CH = CONVERSATION_SID
BOT_URL = "https://bot.example/webhook"


def twilio_client(base_url: str, timeout: float = 5.0) -> Client:
    """The worker's client set-up (worker/flex_client.py): every API at `base_url`."""
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=BoundedHttpClient(timeout=timeout))
    client.flex_api.base_url = base_url
    client.conversations.base_url = base_url
    client.taskrouter.base_url = base_url
    return client


@pytest.fixture
async def twilio(simulator: FlexSimulator) -> AsyncIterator[Client]:
    client = twilio_client(simulator.base_url or "")
    yield client
    await client.http_client.close()


@pytest.fixture
async def http(simulator: FlexSimulator) -> AsyncIterator[aiohttp.ClientSession]:
    """Plain HTTP, for the control routes and what twilio-python would not send."""
    auth = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT_SID, AUTH_TOKEN)}
    async with aiohttp.ClientSession(base_url=simulator.base_url, headers=auth) as session:
        yield session


async def call(awaitable: Any) -> Any:
    async with asyncio.timeout(5):
        return await awaitable


@dataclass(frozen=True)
class Refusal:
    status: int
    code: int
    msg: str


async def refusal(awaitable: Any) -> Refusal:
    """The Twilio error a call raised. A list's error is no TwilioRestException:
    twilio-python raises TwilioException("Unable to fetch page", response)."""
    with pytest.raises(TwilioException) as caught:
        await call(awaitable)
    error = caught.value
    if isinstance(error, TwilioRestException):
        return Refusal(error.status, error.code, error.msg)
    response = error.args[1]
    body = json.loads(response.text)
    return Refusal(response.status_code, body["code"], body["message"])


async def control(http: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> Any:
    async with asyncio.timeout(20), http.request(method, path, json=body) as response:
        return response.status, await response.json()


# --- a Conversation --------------------------------------------------------------------


async def test_a_conversation_exists_for_any_ch_and_an_update_replaces_its_attributes(
    twilio, simulator
):
    conversation = twilio.conversations.v1.conversations(CH)
    fetched = await call(conversation.fetch_async())
    assert (fetched.sid, fetched.attributes, fetched.state) == (CH, "{}", "active")

    attributes = json.dumps({"handover": {"id": "h-1"}})
    updated = await call(
        conversation.update_async(attributes=attributes, x_twilio_webhook_enabled="false")
    )
    await call(conversation.update_async(state="inactive"))
    again = await call(conversation.fetch_async())

    assert updated.attributes == attributes
    assert (again.attributes, again.state) == (attributes, "inactive")
    view = simulator.conversation(CH)
    assert (view["attributes"], view["state"]) == (attributes, "inactive")
    assert (view["updates"], view["attribute_updates"]) == (2, 1)
    assert view["webhook_enabled"] is None  # the last update sent no header


async def test_a_conversation_sid_in_upper_case_hex_is_the_same_conversation(twilio, simulator):
    upper = "CH" + CH[2:].upper()
    await call(twilio.conversations.v1.conversations(upper).update_async(attributes='{"a": 1}'))
    fetched = await call(twilio.conversations.v1.conversations(CH).fetch_async())
    assert (fetched.sid, fetched.attributes) == (CH, '{"a": 1}')


async def test_seeded_conversations_and_missing_ones(twilio, simulator, http):
    seed = {
        "attributes": '{"bot": "assistant"}',
        "webhooks": [{"url": BOT_URL, "filters": ["onMessageAdded"]}],
        "messages": [{"author": "customer", "body": "I want a person"}],
    }
    status, view = await control(http, "POST", f"/__sim/conversations/{CH}", seed)
    assert status == 200
    assert view["webhooks"][0] | {"sid": None} == {
        "sid": None,
        "target": "webhook",
        "url": BOT_URL,
        "method": "post",
        "filters": ["onMessageAdded"],
        "triggers": [],
        "flow_sid": None,
        "replay_after": None,
    }
    conversation = twilio.conversations.v1.conversations(CH)
    assert (await call(conversation.fetch_async())).attributes == '{"bot": "assistant"}'
    [webhook] = await call(conversation.webhooks.list_async())
    assert (webhook.sid, webhook.configuration["url"]) == (view["webhooks"][0]["sid"], BOT_URL)
    [message] = await call(conversation.messages.list_async())
    assert (message.author, message.body, message.index) == ("customer", "I want a person", 0)

    gone = new_conversation_sid(7)
    assert (await control(http, "POST", f"/__sim/conversations/{gone}", {"missing": True}))[
        0
    ] == 200
    missing = twilio.conversations.v1.conversations(gone)
    requests: list[Callable[[], Any]] = [
        missing.fetch_async,
        lambda: missing.update_async(attributes="{}"),
        missing.webhooks.list_async,
        lambda: missing.messages.create_async(body="hi"),
    ]
    for request in requests:
        error = await refusal(request())
        assert (error.status, error.code) == (404, 20404)
    error = await refusal(twilio.conversations.v1.conversations("not-a-sid").fetch_async())
    assert (error.status, error.code) == (404, 20404)
    status, shown = await control(http, "GET", f"/__sim/conversations/{gone}")
    assert (status, shown["missing"], shown["updates"]) == (200, True, 0)


@pytest.mark.parametrize(
    "body",
    [{"colour": "red"}, {"attributes": "{"}, {"webhooks": [{"target": "webhook"}]}, ["x"]],
    ids=["unknown-option", "attributes-not-json", "webhook-without-url", "not-an-object"],
)
async def test_bad_seeds_are_400(http, body):
    status, answer = await control(http, "POST", f"/__sim/conversations/{CH}", body)
    assert status == 400
    assert answer["code"] == 20001


async def test_the_control_view_of_a_bad_sid_is_400(http):
    assert (await control(http, "GET", "/__sim/conversations/CH123"))[0] == 400


# --- scoped webhooks -------------------------------------------------------------------


async def test_webhooks_are_created_listed_fetched_and_deleted(twilio, simulator):
    webhooks = twilio.conversations.v1.conversations(CH).webhooks
    created = await call(
        webhooks.create_async(
            target="webhook",
            configuration_url=BOT_URL,
            configuration_method="POST",
            configuration_filters=["onMessageAdded", "onConversationUpdated"],
            configuration_replay_after=0,
        )
    )
    studio = await call(
        webhooks.create_async(target="studio", configuration_flow_sid="FW" + "a" * 32)
    )
    assert created.sid.startswith("WH") and created.conversation_sid == CH
    assert created.configuration == {
        "url": BOT_URL,
        "method": "post",
        "filters": ["onMessageAdded", "onConversationUpdated"],
        "replay_after": 0,
    }
    assert studio.configuration == {"flow_sid": "FW" + "a" * 32}
    listed = await call(webhooks.list_async())
    assert [w.sid for w in listed] == [created.sid, studio.sid]
    assert (await call(webhooks(created.sid).fetch_async())).target == "webhook"

    assert await call(webhooks(created.sid).delete_async()) is True
    assert [w.sid for w in await call(webhooks.list_async())] == [studio.sid]
    error = await refusal(webhooks(created.sid).fetch_async())
    assert (error.status, error.code) == (404, 20404)
    error = await refusal(webhooks("WH123").delete_async())
    assert (error.status, error.code) == (404, 20404)
    view = simulator.conversation(CH)
    assert [w["sid"] for w in view["deleted_webhooks"]] == [created.sid]


async def test_webhooks_are_paged_by_at_most_the_specs_five(twilio, simulator):
    simulator.seed_conversation(
        CH, webhooks=[{"url": f"{BOT_URL}/{n}", "filters": ["onMessageAdded"]} for n in range(5)]
    )
    webhooks = twilio.conversations.v1.conversations(CH).webhooks
    assert len(await call(webhooks.list_async(page_size=2))) == 5
    error = await refusal(webhooks.list_async(page_size=6))
    assert (error.status, error.code) == (400, 20001)
    error = await refusal(webhooks.create_async(target="webhook", configuration_url=BOT_URL))
    assert "at most 5" in error.msg


# --- messages --------------------------------------------------------------------------


async def test_messages_are_posted_with_an_index_and_listed_newest_first(twilio, simulator):
    messages = twilio.conversations.v1.conversations(CH).messages
    posted = []
    for n in range(3):
        posted.append(
            await call(
                messages.create_async(
                    author="flex-handover",
                    body=f"message {n}",
                    attributes=json.dumps({"n": n}),
                    x_twilio_webhook_enabled="false",
                )
            )
        )
    assert [m.index for m in posted] == [0, 1, 2]
    assert all(m.sid.startswith("IM") for m in posted)
    [newest] = await call(messages.list_async(order="desc", limit=1))
    assert (newest.sid, newest.body, newest.attributes) == (posted[2].sid, "message 2", '{"n": 2}')
    in_pages = await call(messages.list_async(page_size=2))
    assert [m.sid for m in in_pages] == [m.sid for m in posted]
    view = simulator.conversation(CH)
    assert [(m["index"], m["webhook_enabled"]) for m in view["messages"]] == [
        (0, "false"),
        (1, "false"),
        (2, "false"),
    ]
    system = await call(messages.create_async(body="no author"))
    assert system.author == "system"


async def test_the_answers_match_the_spec(simulator, http):
    spec = load_spec("twilio_conversations_v1.json")
    form = {"Target": "webhook", "Configuration.Url": BOT_URL}
    base = f"/v1/Conversations/{CH}"
    answers = {}
    for name, method, path, data in [
        ("conversation", "POST", base, {"Attributes": "{}"}),
        ("webhook", "POST", f"{base}/Webhooks", form),
        ("message", "POST", f"{base}/Messages", {"Body": "hi"}),
        ("webhooks", "GET", f"{base}/Webhooks", None),
        ("messages", "GET", f"{base}/Messages?Order=desc", None),
    ]:
        async with asyncio.timeout(5), http.request(method, path, data=data) as response:
            assert response.status == (201 if name in ("webhook", "message") else 200), name
            answers[name] = await response.json()
    check_resource(spec, "conversations.v1.conversation", answers["conversation"])
    check_resource(
        spec, "conversations.v1.conversation.conversation_scoped_webhook", answers["webhook"]
    )
    check_resource(spec, "conversations.v1.conversation.conversation_message", answers["message"])
    for key, path in (
        ("webhooks", "/v1/Conversations/{ConversationSid}/Webhooks"),
        ("messages", "/v1/Conversations/{ConversationSid}/Messages"),
    ):
        schema = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        assert schema_errors(spec, schema["schema"], answers[key]) == []
        assert answers[key]["meta"]["key"] == key
        assert len(answers[key][key]) == 1


# --- what Twilio refuses ---------------------------------------------------------------


async def test_spec_violations_are_refused_with_twilios_error_and_change_nothing(twilio, simulator):
    conversation = twilio.conversations.v1.conversations(CH)
    requests: list[tuple[Callable[[], Any], str]] = [
        (lambda: conversation.update_async(state="open"), "Invalid State"),
        (
            lambda: conversation.update_async(attributes="{'not': 'json'}"),
            "Attributes must be valid JSON",
        ),
        (
            lambda: conversation.update_async(messaging_service_sid="MG1"),
            "Invalid MessagingServiceSid",
        ),
        (lambda: conversation.update_async(timers_closed="PT1M"), "Timers.Closed"),
        (
            lambda: conversation.update_async(x_twilio_webhook_enabled="yes"),
            "X-Twilio-Webhook-Enabled",
        ),
        (lambda: conversation.webhooks.create_async(target="webhook"), "Configuration.Url"),
        (
            lambda: conversation.webhooks.create_async(target="bot", configuration_url=BOT_URL),
            "Target",
        ),
        (lambda: conversation.messages.create_async(author="bot"), "needs a Body"),
        (lambda: conversation.messages.list_async(order="newest"), "Invalid Order"),
        (lambda: conversation.messages.list_async(page_size=101), "PageSize"),
    ]
    for request, says in requests:
        error = await refusal(request())
        assert (error.status, error.code) == (400, 20001), says
        assert says in error.msg
    view = simulator.conversation(CH)
    assert (view["updates"], view["webhooks"], view["messages"]) == (0, [], [])


async def test_unknown_repeated_and_non_form_parameters_are_400(http, simulator):
    base = f"/v1/Conversations/{CH}"
    for path, data, says in [
        (base, {"Attribute": "{}"}, "Unknown parameter Attribute"),
        (base, [("State", "active"), ("State", "closed")], "given 2 times"),
        (f"{base}/Messages", {"Body": "hi", "IdempotencyKey": "1"}, "Unknown parameter"),
    ]:
        async with asyncio.timeout(5), http.post(path, data=data) as response:
            body = await response.json()
        assert (response.status, body["code"]) == (400, 20001)
        assert says in body["message"]
    async with asyncio.timeout(5), http.post(base, json={"Attributes": "{}"}) as response:
        assert response.status == 400
    async with asyncio.timeout(5), http.get(f"{base}/Webhooks?Colour=red") as response:
        assert response.status == 400
    assert simulator.conversation(CH)["updates"] == 0


async def test_credentials_are_checked(simulator):
    wrong = Client(ACCOUNT_SID, "wrong-token", http_client=BoundedHttpClient(timeout=5))
    wrong.conversations.base_url = simulator.base_url
    try:
        error = await refusal(wrong.conversations.v1.conversations(CH).fetch_async())
    finally:
        await wrong.http_client.close()
    assert (error.status, error.code) == (401, 20003)


# --- faults ----------------------------------------------------------------------------


async def test_the_next_two_conversation_updates_answer_503(twilio, simulator, http):
    status, _ = await control(
        http, "POST", "/__sim/faults", {"route": "conversations", "status": 503, "count": 2}
    )
    assert status == 200
    conversation = twilio.conversations.v1.conversations(CH)
    for _ in range(2):
        error = await refusal(conversation.update_async(attributes='{"a": 1}'))
        assert (error.status, error.code) == (503, 20500)
    await call(conversation.update_async(attributes='{"a": 1}'))
    assert simulator.conversation(CH)["updates"] == 1
    assert simulator.pending_faults("conversations") == 0


async def test_a_message_posted_but_unanswered_is_posted_once(twilio, simulator):
    """A create whose answer is lost: the message exists, the client saw no answer."""
    simulator.fail_next(route="messages", after_create=True, reset=True)
    messages = twilio.conversations.v1.conversations(CH).messages
    with pytest.raises(aiohttp.ClientError):
        await call(messages.create_async(body="Connecting you to an agent"))
    view = simulator.conversation(CH)
    assert [m["body"] for m in view["messages"]] == ["Connecting you to an agent"]
    record = simulator.api_requests[-1]
    assert (record["path"], record["status"]) == (f"/v1/Conversations/{CH}/Messages", None)


async def test_a_message_create_that_hangs_times_the_client_out(simulator):
    client = twilio_client(simulator.base_url or "", timeout=0.3)
    simulator.fail_next(route="messages", hang=30)
    simulator.fail_next(route="messages", hang=30, after_create=True)
    messages = client.conversations.v1.conversations(CH).messages
    try:
        for _ in range(2):
            with pytest.raises(TimeoutError):
                await messages.create_async(body="hello")
    finally:
        await client.http_client.close()
    # Only the second acted before hanging.
    assert [m["body"] for m in simulator.conversation(CH)["messages"]] == ["hello"]


async def test_after_create_on_each_acting_route(twilio, simulator):
    conversation = twilio.conversations.v1.conversations(CH)
    simulator.fail_next(503, route="conversations", after_create=True)
    simulator.fail_next(500, route="webhooks", after_create=True)
    simulator.fail_next(502, route="messages", after_create=True)
    requests: list[tuple[Callable[[], Any], int]] = [
        (lambda: conversation.update_async(attributes='{"done": true}'), 503),
        (
            lambda: conversation.webhooks.create_async(target="webhook", configuration_url=BOT_URL),
            500,
        ),
        (lambda: conversation.messages.create_async(body="hi"), 502),
    ]
    for request, status in requests:
        assert (await refusal(request())).status == status
    view = simulator.conversation(CH)
    assert (view["attributes"], len(view["webhooks"]), len(view["messages"])) == (
        '{"done": true}',
        1,
        1,
    )


async def test_a_failed_webhook_delete_leaves_the_webhook(twilio, simulator):
    [seeded] = simulator.seed_conversation(CH, webhooks=[{"url": BOT_URL}])["webhooks"]
    simulator.fail_next(500, route="webhooks")
    webhook = twilio.conversations.v1.conversations(CH).webhooks(seeded["sid"])
    assert (await refusal(webhook.delete_async())).status == 500
    assert [w["sid"] for w in simulator.conversation(CH)["webhooks"]] == [seeded["sid"]]
    assert await call(webhook.delete_async()) is True
    assert simulator.conversation(CH)["webhooks"] == []


async def test_faults_on_one_route_leave_the_others_alone(twilio, simulator):
    simulator.fail_next(500, route="messages")
    conversation = twilio.conversations.v1.conversations(CH)
    await call(conversation.fetch_async())
    await call(conversation.webhooks.list_async())
    assert simulator.pending_faults("messages") == 1
    assert (await refusal(conversation.messages.list_async())).status == 500


def test_fault_options_on_the_new_routes_are_checked():
    sim = FlexSimulator()
    with pytest.raises(ValueError):
        sim.fail_next(after_create=True, route="channels")
    with pytest.raises(ValueError):
        sim.fail_next(200, route="messages")  # a 2xx needs a body or after_create
    sim.fail_next(200, route="messages", after_create=True)
    assert sim.pending_faults("messages") == 1


async def test_a_2xx_after_create_answers_the_created_message(simulator, http):
    simulator.fail_next(200, route="messages", after_create=True, pad=100)
    async with (
        asyncio.timeout(5),
        http.post(f"/v1/Conversations/{CH}/Messages", data={"Body": "hi"}) as response,
    ):
        answer = await response.json()
    assert (response.status, answer["body"], len(answer["padding"])) == (200, "hi", 100)
    assert len(simulator.conversation(CH)["messages"]) == 1


# --- every request, listed -------------------------------------------------------------


async def test_requests_lists_every_request_with_its_params(twilio, simulator, http):
    conversation = twilio.conversations.v1.conversations(CH)
    await call(conversation.update_async(attributes='{"a": 1}', x_twilio_webhook_enabled="false"))
    await call(
        conversation.webhooks.create_async(
            target="webhook",
            configuration_url=BOT_URL,
            configuration_filters=["onMessageAdded", "onMessageUpdated"],
        )
    )
    await call(conversation.messages.list_async(order="desc", limit=1))
    status, listed = await control(http, "GET", "/__sim/requests")
    assert status == 200
    shown = [
        (r["method"], r["path"], r["params"], r["webhook_enabled"], r["status"]) for r in listed
    ]
    assert shown == [
        ("POST", f"/v1/Conversations/{CH}", {"Attributes": '{"a": 1}'}, "false", 200),
        (
            "POST",
            f"/v1/Conversations/{CH}/Webhooks",
            {
                "Target": "webhook",
                "Configuration.Url": BOT_URL,
                "Configuration.Filters": ["onMessageAdded", "onMessageUpdated"],
            },
            None,
            201,
        ),
        ("GET", f"/v1/Conversations/{CH}/Messages", {"Order": "desc", "PageSize": "1"}, None, 200),
    ]
    assert AUTH_TOKEN not in json.dumps(listed)
    assert simulator.requests == []  # the create attempts alone: there were none


# --- TaskRouter workspace events -------------------------------------------------------


class Receiver:
    """A tiny callback endpoint: verifies X-Twilio-Signature as the product must
    (RequestValidator with the auth token), answers 204 or 403, keeps what came."""

    def __init__(self, auth_token: str = AUTH_TOKEN):
        self.validator = RequestValidator(auth_token)
        self.received: list[tuple[dict[str, str], dict[str, str], bool]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        params = {name: str(value) for name, value in (await request.post()).items()}
        signature = request.headers.get("X-Twilio-Signature", "")
        valid = self.validator.validate(str(request.url), params, signature)
        self.received.append((params, dict(request.headers), valid))
        return web.Response(status=204 if valid else 403)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/webhooks/taskrouter", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/webhooks/taskrouter"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as running:
        yield running


async def create_interaction(twilio: Client, handover_id: str = "h-1") -> str:
    """An Interaction for the conversation; the SID of the task the simulator made."""
    interaction = await call(
        twilio.flex_api.v1.interaction.create_async(
            channel={
                "type": "web",
                "initiated_by": "customer",
                "properties": {"media_channel_sid": CH},
            },
            routing={
                "properties": {
                    "workspace_sid": WORKSPACE_SID,
                    "workflow_sid": WORKFLOW_SID,
                    "task_channel_unique_name": "chat",
                    "attributes": {"handoverId": handover_id},
                }
            },
        )
    )
    return str(interaction.routing["properties"]["sid"])


async def send_event(http: aiohttp.ClientSession, task_sid: str, **options: Any) -> Any:
    return await control(http, "POST", f"/__sim/tasks/{task_sid}/events", options)


async def tasks_with_status(twilio: Client, status: str) -> list[str]:
    tasks = twilio.taskrouter.v1.workspaces(WORKSPACE_SID).tasks
    return [task.sid for task in await call(tasks.list_async(assignment_status=[status]))]


async def test_a_signed_event_reaches_the_callback_and_moves_the_task(
    twilio, simulator, http, receiver
):
    task_sid = await create_interaction(twilio)
    status, answer = await send_event(
        http, task_sid, event_type="task.completed", url=receiver.url, reason="resolved"
    )
    assert status == 200
    assert answer["deliveries"] == [{"status": 204, "body": ""}]
    [(params, headers, valid)] = receiver.received
    assert valid
    assert params == answer["params"]
    assert (params["EventType"], params["TaskSid"], params["ResourceSid"]) == (
        "task.completed",
        task_sid,
        task_sid,
    )
    assert json.loads(params["TaskAttributes"])["handoverId"] == "h-1"
    assert json.loads(params["TaskAttributes"])["conversationSid"] == CH
    assert params["TaskAssignmentStatus"] == "completed"
    assert params["TaskCompletedReason"] == "resolved"
    assert (params["WorkspaceSid"], params["WorkflowSid"], params["AccountSid"]) == (
        WORKSPACE_SID,
        WORKFLOW_SID,
        ACCOUNT_SID,
    )
    assert params["Sid"].startswith("EV") and params["ResourceType"] == "task"
    assert headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert await tasks_with_status(twilio, "completed") == [task_sid]
    assert await tasks_with_status(twilio, "pending") == []
    assert [(e["event_type"], e["statuses"]) for e in simulator.events] == [
        ("task.completed", [204])
    ]


async def test_a_repeated_event_is_the_same_event_each_time(twilio, http, receiver):
    task_sid = await create_interaction(twilio)
    _, answer = await send_event(
        http, task_sid, event_type="task.canceled", url=receiver.url, repeat=3
    )
    assert [d["status"] for d in answer["deliveries"]] == [204, 204, 204]
    sids = {params["Sid"] for params, _, _ in receiver.received}
    tokens = {headers["I-Twilio-Idempotency-Token"] for _, headers, _ in receiver.received}
    assert len(receiver.received) == 3 and len(sids) == 1 and len(tokens) == 1


@pytest.mark.parametrize("signature", ["bad", "missing"])
async def test_a_bad_or_missing_signature_does_not_verify(twilio, http, receiver, signature):
    task_sid = await create_interaction(twilio)
    _, answer = await send_event(
        http, task_sid, event_type="task.canceled", url=receiver.url, signature=signature
    )
    assert answer["deliveries"][0]["status"] == 403
    [(_, headers, valid)] = receiver.received
    assert not valid
    assert ("X-Twilio-Signature" in headers) == (signature == "bad")


async def test_events_go_to_the_configured_callback_by_default(twilio, http, receiver):
    task_sid = await create_interaction(twilio)
    status, _ = await send_event(http, task_sid, event_type="task.deleted")
    assert status == 400  # no URL given and none configured
    status, answer = await control(http, "PUT", "/__sim/event_callback", {"url": receiver.url})
    assert (status, answer) == (200, {"url": receiver.url})
    _, answer = await send_event(http, task_sid, event_type="task.deleted")
    assert answer["deliveries"][0]["status"] == 204
    assert receiver.received[0][0]["EventType"] == "task.deleted"
    # A deleted task is gone from TaskRouter's lists, and takes no more events.
    assert await tasks_with_status(twilio, "pending") == []
    assert (await send_event(http, task_sid, event_type="task.canceled"))[0] == 404


@pytest.mark.parametrize(
    "body",
    [{"url": "http://example.com/"}, {"url": 5}, {"address": "x"}],
    ids=["not-loopback", "not-a-string", "unknown-key"],
)
async def test_bad_event_callbacks_are_400(http, body):
    assert (await control(http, "PUT", "/__sim/event_callback", body))[0] == 400


async def test_bad_event_requests_are_refused(twilio, http, receiver):
    task_sid = await create_interaction(twilio)
    url = receiver.url
    for sid, options, expected in [
        ("WT" + "0" * 32, {"event_type": "task.completed", "url": url}, 404),
        (task_sid, {"event_type": "task.finished", "url": url}, 400),
        (task_sid, {"event_type": "task.completed", "url": "http://198.51.100.1/"}, 400),
        (task_sid, {"event_type": "task.completed", "url": url, "repeat": 11}, 400),
    ]:
        assert (await send_event(http, sid, **options))[0] == expected, options
    assert receiver.received == []


async def test_an_unreachable_callback_is_reported_not_raised(twilio, http):
    task_sid = await create_interaction(twilio)
    url = f"http://127.0.0.1:{free_port()}/webhooks/taskrouter"
    status, answer = await send_event(http, task_sid, event_type="task.completed", url=url)
    assert status == 200
    [delivery] = answer["deliveries"]
    assert delivery["status"] is None and "Connect" in delivery["error"]


async def test_without_an_auth_token_events_are_refused_clearly(receiver):
    async with FlexSimulator() as simulator:
        base_url = await simulator.start()
        twilio = twilio_client(base_url)
        try:
            task_sid = await create_interaction(twilio)
        finally:
            await twilio.http_client.close()
        async with aiohttp.ClientSession(base_url=base_url) as http:
            options = {"event_type": "task.completed", "url": receiver.url}
            status, answer = await send_event(http, task_sid, **options)
    assert status == 400
    assert "no auth token" in answer["message"]
    assert receiver.received == []
    assert simulator.tasks[0]["assignment_status"] == "pending"


async def test_the_cli_flags_sign_and_send_events(tmp_path, receiver):
    port = free_port()
    processes = ProcessGroup(tmp_path)
    try:
        simulator = await processes.start(
            "simulator",
            "simulator",
            "--port",
            str(port),
            "--account-sid",
            ACCOUNT_SID,
            "--auth-token",
            AUTH_TOKEN,
            "--event-callback-url",
            receiver.url,
            env=clean_env(),
        )
        await simulator.wait_for_log("listening on", 20)
        base_url = f"http://127.0.0.1:{port}"
        twilio = twilio_client(base_url)
        try:
            task_sid = await create_interaction(twilio)
        finally:
            await twilio.http_client.close()
        async with aiohttp.ClientSession(base_url=base_url) as http:
            status, answer = await send_event(http, task_sid, event_type="task.wrapup")
    finally:
        await processes.close()
    assert status == 200, answer
    [(params, _, valid)] = receiver.received
    assert valid and params["TaskAssignmentStatus"] == "wrapping"

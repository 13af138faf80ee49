"""The simulator's pure checks for the Conversations requests, its Conversation
records and its TaskRouter events: the tables held to twilio_conversations_v1.json
(a parameter the spec adds or drops fails here), each check refusing what it
should, and an event's parameters and signature as twilio-python verifies them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from standins.flex_simulator import (
    CONVERSATION_STATES,
    CREATE_MESSAGE_PARAMS,
    CREATE_WEBHOOK_PARAMS,
    EVENT_HELP,
    EVENT_OPTIONS,
    EVENT_TYPES,
    LIST_MESSAGES_PARAMS,
    LIST_WEBHOOKS_PARAMS,
    MESSAGE_ORDERS,
    SEED_HELP,
    SEED_OPTIONS,
    UPDATE_CONVERSATION_PARAMS,
    WEBHOOK_ENABLED_HEADER,
    WEBHOOK_METHODS,
    WEBHOOK_SID,
    WEBHOOK_TARGETS,
    FormParam,
    TwilioError,
    check_params,
    conversation_options,
    event_options,
    event_params,
    signature_header,
    validate_create_message,
    validate_create_webhook,
    validate_update_conversation,
)
from standins.flex_simulator.conversations import (
    add_message,
    add_webhook,
    apply_update,
    ordered_messages,
    parse_seed,
)
from standins.flex_simulator.events import is_loopback_url, parse_event_request, status_after

SPEC = json.loads((Path(__file__).parents[1] / "spec" / "twilio_conversations_v1.json").read_text())
CH = "CH" + "e5" * 16
TOKEN = "sim-token-0123456789"


# --- the tables are the spec's ---------------------------------------------------------


def operation(path: str, method: str) -> dict[str, Any]:
    return SPEC["paths"][path][method]


def resolved(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def assert_table_is_the_spec(table: dict[str, FormParam], properties: dict[str, Any]) -> None:
    assert set(table) == set(properties)
    for name, param in table.items():
        schema = resolved(properties[name])
        assert param.type == schema.get("type", "string"), name
        assert param.pattern == schema.get("pattern"), name
        if param.type == "string":  # an integer's int64 is no check on a form's text
            assert param.format == schema.get("format"), name
        assert param.enum == (tuple(schema["enum"]) if "enum" in schema else None), name
        assert param.minimum == schema.get("minimum"), name
        assert param.maximum == schema.get("maximum"), name


@pytest.mark.parametrize(
    ("path", "method", "table", "operation_id"),
    [
        ("/v1/Conversations/{Sid}", "post", UPDATE_CONVERSATION_PARAMS, "UpdateConversation"),
        (
            "/v1/Conversations/{ConversationSid}/Webhooks",
            "post",
            CREATE_WEBHOOK_PARAMS,
            "CreateConversationScopedWebhook",
        ),
        (
            "/v1/Conversations/{ConversationSid}/Messages",
            "post",
            CREATE_MESSAGE_PARAMS,
            "CreateConversationMessage",
        ),
    ],
)
def test_form_tables_match_the_spec(path, method, table, operation_id):
    spec = operation(path, method)
    assert spec["operationId"] == operation_id
    [(content_type, content)] = spec["requestBody"]["content"].items()
    assert content_type == "application/x-www-form-urlencoded"
    schema = resolved(content["schema"])
    assert_table_is_the_spec(table, schema["properties"])
    required = [name for name, param in table.items() if param.required]
    assert required == schema.get("required", [])


@pytest.mark.parametrize(
    ("path", "table"),
    [
        ("/v1/Conversations/{ConversationSid}/Webhooks", LIST_WEBHOOKS_PARAMS),
        ("/v1/Conversations/{ConversationSid}/Messages", LIST_MESSAGES_PARAMS),
    ],
)
def test_list_query_tables_match_the_spec(path, table):
    query = {
        p["name"]: p["schema"] for p in operation(path, "get")["parameters"] if p["in"] == "query"
    }
    assert_table_is_the_spec(table, query)


def test_enums_headers_and_path_patterns_match_the_spec():
    schemas = SPEC["components"]["schemas"]
    assert list(CONVERSATION_STATES) == schemas["conversation_enum_state"]["enum"]
    assert list(WEBHOOK_TARGETS) == schemas["conversation_scoped_webhook_enum_target"]["enum"]
    assert list(WEBHOOK_METHODS) == schemas["conversation_scoped_webhook_enum_method"]["enum"]
    assert list(MESSAGE_ORDERS) == schemas["conversation_message_enum_order_type"]["enum"]
    for path in ("/v1/Conversations/{Sid}", "/v1/Conversations/{ConversationSid}/Messages"):
        [header] = [p for p in operation(path, "post")["parameters"] if p["in"] == "header"]
        assert header["name"] == "X-Twilio-Webhook-Enabled"
        assert WEBHOOK_ENABLED_HEADER.enum == tuple(resolved(header["schema"])["enum"])
    webhook = "/v1/Conversations/{ConversationSid}/Webhooks/{Sid}"
    for method in ("get", "delete"):
        sid = next(p for p in operation(webhook, method)["parameters"] if p["name"] == "Sid")
        assert sid["schema"]["pattern"] == WEBHOOK_SID
    # The spec gives a Conversation's path SID no pattern (a unique name is one too):
    # the simulator's Conversations are CH SIDs and anything else is a 404.
    fetch = operation("/v1/Conversations/{Sid}", "get")["parameters"]
    assert fetch == [{"name": "Sid", "in": "path", "description": fetch[0]["description"],
                      "schema": {"type": "string"}, "required": True}]  # fmt: skip


# --- check_params ---------------------------------------------------------------------


def refused(call: Any, *args: Any) -> str:
    with pytest.raises(TwilioError) as caught:
        call(*args)
    assert (caught.value.status, caught.value.code) == (400, 20001)
    return caught.value.message


def test_check_params_types_repeats_and_unknown_names():
    table = {
        "Name": FormParam(required=True),
        "Tags": FormParam(type="array"),
        "Size": FormParam(type="integer", minimum=1, maximum=5),
        "When": FormParam(format="date-time"),
        "Method": FormParam(enum=("get", "post"), any_case=True),
    }
    parsed = check_params(
        [("Name", "a"), ("Tags", "x"), ("Tags", "y"), ("Size", "5"), ("Method", "POST")],
        table,
        "post body",
    )
    assert parsed == {"Name": "a", "Tags": ["x", "y"], "Size": 5, "Method": "post"}
    assert "Unknown parameter Nmae" in refused(check_params, [("Nmae", "a")], table, "post body")
    assert "Missing required parameter Name" in refused(check_params, [], table, "post body")
    assert "given 2 times" in refused(check_params, [("Name", "a"), ("Name", "b")], table, "x")
    for bad in ("0", "6", "five", "1.5"):
        refused(check_params, [("Name", "a"), ("Size", bad)], table, "query")
    refused(check_params, [("Name", "a"), ("When", "yesterday")], table, "query")
    refused(check_params, [("Name", "a"), ("When", "2026-01-01")], table, "query")
    assert check_params([("Name", "a"), ("When", "2026-01-01T10:00:00Z")], table, "x")["When"]
    refused(check_params, [("Name", "a"), ("Method", "PUT")], table, "query")


# --- the Conversations checks ----------------------------------------------------------


def test_update_takes_attributes_as_given_and_checks_them():
    params, header = validate_update_conversation(
        [("Attributes", '{"a": 1}'), ("State", "closed")], "false"
    )
    assert (params, header) == ({"Attributes": '{"a": 1}', "State": "closed"}, "false")
    assert "valid JSON" in refused(validate_update_conversation, [("Attributes", "{'a': 1}")], None)
    big = json.dumps({"k": "x" * 16 * 1024})
    assert "16 KB" in refused(validate_update_conversation, [("Attributes", big)], None)
    refused(validate_update_conversation, [("State", "open")], None)
    refused(validate_update_conversation, [("MessagingServiceSid", "MG123")], None)
    refused(validate_update_conversation, [("FriendlyName", "n" * 257)], None)
    refused(validate_update_conversation, [], "yes")


def test_update_timers_are_iso_durations_above_twilios_minimums():
    params, _ = validate_update_conversation(
        [("Timers.Inactive", "PT5M"), ("Timers.Closed", "P1DT1H")], None
    )
    assert params == {"Timers.Inactive": 300, "Timers.Closed": 90000}
    for bad in ("5 minutes", "P", "PT", "PT30S"):
        refused(validate_update_conversation, [("Timers.Inactive", bad)], None)
    refused(validate_update_conversation, [("Timers.Closed", "PT9M")], None)


def test_a_webhook_needs_what_its_target_needs():
    params = validate_create_webhook(
        [
            ("Target", "webhook"),
            ("Configuration.Url", "https://bot.example/hook"),
            ("Configuration.Method", "POST"),
            ("Configuration.Filters", "onMessageAdded"),
            ("Configuration.Filters", "onMessageUpdated"),
            ("Configuration.ReplayAfter", "0"),
        ]
    )
    assert params["Configuration.Filters"] == ["onMessageAdded", "onMessageUpdated"]
    assert params["Configuration.Method"] == "post"
    assert params["Configuration.ReplayAfter"] == 0
    refused(validate_create_webhook, [("Configuration.Url", "https://bot.example/")])
    refused(validate_create_webhook, [("Target", "webhook")])
    refused(validate_create_webhook, [("Target", "webhook"), ("Configuration.Url", "/relative")])
    refused(validate_create_webhook, [("Target", "studio")])
    refused(validate_create_webhook, [("Target", "studio"), ("Configuration.FlowSid", "FW1")])
    assert validate_create_webhook(
        [("Target", "studio"), ("Configuration.FlowSid", "FW" + "a" * 32)]
    )
    refused(
        validate_create_webhook,
        [
            ("Target", "webhook"),
            ("Configuration.Url", "https://x/"),
            ("Configuration.ReplayAfter", "x"),
        ],
    )


def test_a_message_needs_a_body_and_keeps_to_twilios_sizes():
    params, header = validate_create_message([("Author", "bot"), ("Body", "Hi")], "true")
    assert (params, header) == ({"Author": "bot", "Body": "Hi"}, "true")
    assert "needs a Body" in refused(validate_create_message, [("Author", "bot")], None)
    refused(validate_create_message, [("Body", "x" * (32 * 1024 + 1))], None)
    refused(validate_create_message, [("Body", "x"), ("Attributes", json.dumps("y" * 4096))], None)
    refused(validate_create_message, [("Body", "x"), ("Attributes", "not json")], None)
    refused(validate_create_message, [("Body", "x"), ("Idempotency", "1")], None)


# --- a Conversation's record -----------------------------------------------------------


def test_updates_replace_attributes_whole_and_are_counted():
    conversation = parse_seed(CH, {"attributes": {"a": 1, "b": 2}}, 0.0)
    apply_update(conversation, {"Attributes": '{"b": 3}'}, "false", 10.0)
    apply_update(conversation, {"State": "inactive", "Timers.Closed": 600}, None, 20.0)
    assert conversation["attributes"] == '{"b": 3}'
    assert conversation["state"] == "inactive"
    assert (conversation["updates"], conversation["attribute_updates"]) == (2, 1)
    assert conversation["timers"] == {"date_closed": 620.0}
    assert conversation["webhook_enabled"] is None  # the last update's header


def test_messages_are_indexed_in_order_and_webhooks_are_at_most_five():
    conversation = parse_seed(CH, {"messages": [{"body": "hello", "author": "customer"}]}, 0.0)
    second = add_message(conversation, {"Body": "handing over"}, "false", 1.0)
    assert (second["index"], second["author"], second["sid"][:2]) == (1, "system", "IM")
    assert [m["index"] for m in ordered_messages(conversation, "desc")] == [1, 0]
    for _ in range(5):
        add_webhook(conversation, {"Target": "webhook", "Configuration.Url": "https://x/"}, 2.0)
    assert conversation["webhooks"][0]["method"] == "post"
    message = refused(
        add_webhook, conversation, {"Target": "webhook", "Configuration.Url": "https://x/"}, 3.0
    )
    assert "at most 5" in message


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"colour": "red"}, "Unknown conversation options: colour"),
        ({"attributes": "{"}, "valid JSON"),
        ({"attributes": 5}, "attributes must be"),
        ({"state": "open"}, "state must be"),
        ({"missing": "yes"}, "missing must be"),
        ({"webhooks": {"url": "https://x/"}}, "webhooks must be a list"),
        ({"webhooks": [{"url": "https://x/", "colour": 1}]}, "webhooks[0]: unknown options"),
        ({"webhooks": [{"target": "webhook"}]}, "webhooks[0]: Configuration.Url"),
        ({"webhooks": [{"url": "https://x/", "filters": "onMessageAdded"}]}, "lists of strings"),
        ({"messages": [{"author": "bot"}]}, "messages[0]: A message needs a Body"),
    ],
)
def test_seeds_are_checked(options, problem):
    with pytest.raises(ValueError) as caught:
        parse_seed(CH, options, 0.0)
    assert problem in str(caught.value)


def test_every_seed_and_event_option_is_described():
    assert sorted(name for name, _ in conversation_options()) == sorted(SEED_OPTIONS)
    assert sorted(SEED_HELP) == sorted(SEED_OPTIONS)
    assert sorted(name for name, _ in event_options()) == sorted(EVENT_OPTIONS)
    assert sorted(EVENT_HELP) == sorted(EVENT_OPTIONS)


# --- TaskRouter events ----------------------------------------------------------------

TASK = {
    "sid": "WT" + "1" * 32,
    "account_sid": "AC" + "2" * 32,
    "workspace_sid": "WS" + "3" * 32,
    "workflow_sid": "WW" + "4" * 32,
    "task_queue_sid": "WQ" + "5" * 32,
    "task_channel_unique_name": "chat",
    "assignment_status": "completed",
    "attributes": {"handoverId": "h-1", "conversationSid": CH},
    "created_at": 1000.0,
}


def test_an_events_params_are_what_taskrouter_posts():
    params = event_params(
        TASK, "task.completed", event_sid="EV" + "6" * 32, reason="done", now=1042.5
    )
    assert params["EventType"] == "task.completed"
    assert (params["ResourceType"], params["ResourceSid"]) == ("task", TASK["sid"])
    assert json.loads(params["TaskAttributes"]) == TASK["attributes"]
    assert params["TaskAssignmentStatus"] == "completed"
    assert (params["Timestamp"], params["TaskAge"]) == ("1042", "42")
    assert params["TaskCompletedReason"] == "done"
    for name in ("TaskQueueSid", "WorkflowSid", "WorkspaceSid", "AccountSid", "Sid"):
        assert params[name], name
    assert all(isinstance(value, str) for value in params.values())
    reservation = event_params(
        TASK, "reservation.accepted", event_sid="EV1", related={"ReservationSid": "WR1"}
    )
    assert (reservation["ResourceType"], reservation["ResourceSid"]) == ("reservation", "WR1")


def test_events_move_the_assignment_status_as_taskrouter_does():
    assert status_after("task.canceled", "pending") == "canceled"
    assert status_after("reservation.accepted", "reserved") == "assigned"
    assert status_after("task.wrapup", "assigned") == "wrapping"
    assert status_after("task.deleted", "assigned") == "assigned"
    assert status_after("task.updated", "reserved") == "reserved"
    assert set(EVENT_TYPES) >= {
        "task.completed",
        "task.canceled",
        "task.deleted",
        "workflow.timeout",
    }


def test_signatures_verify_only_when_valid():
    url = "http://127.0.0.1:8080/webhooks/taskrouter"
    params = event_params(TASK, "task.canceled", event_sid="EV" + "6" * 32)
    validator = RequestValidator(TOKEN)
    valid = signature_header(TOKEN, url, params)["X-Twilio-Signature"]
    bad = signature_header(TOKEN, url, params, "bad")["X-Twilio-Signature"]
    assert validator.validate(url, params, valid)
    assert not validator.validate(url, params, bad)
    assert not validator.validate(url, {**params, "TaskAssignmentStatus": "pending"}, valid)
    assert signature_header(TOKEN, url, params, "missing") == {}


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:1/x", "http://localhost:8080/", "https://127.8.9.1/", "http://[::1]:80/"],
)
def test_loopback_urls_are_accepted(url):
    assert is_loopback_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "http://10.0.0.1/",
        "ftp://127.0.0.1/",
        "127.0.0.1:80",
        "http://127.0.0.1:x/",
        5,
    ],
)
def test_other_urls_are_refused(url):
    assert not is_loopback_url(url)


@pytest.mark.parametrize(
    ("options", "default", "problem"),
    [
        ({}, None, "event_type is required"),
        ({"event_type": "task.exploded"}, None, "event_type must be one of"),
        ({"event_type": "task.completed"}, None, "no event callback URL"),
        ({"event_type": "task.completed", "url": "http://example.com/"}, None, "loopback"),
        ({"event_type": "task.completed", "repeat": 0}, "http://127.0.0.1/", "repeat"),
        ({"event_type": "task.completed", "signature": "forged"}, "http://127.0.0.1/", "signature"),
        ({"event_type": "task.completed", "colour": 1}, None, "Unknown event options"),
    ],
)
def test_event_requests_are_checked(options, default, problem):
    with pytest.raises(ValueError) as caught:
        parse_event_request(options, default)
    assert problem in str(caught.value)


def test_an_event_without_a_url_goes_to_the_default():
    event = parse_event_request({"event_type": "task.deleted", "repeat": 2}, "http://127.0.0.1:9/")
    assert (event.url, event.repeat, event.signature) == ("http://127.0.0.1:9/", 2, "valid")

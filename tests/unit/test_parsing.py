"""api.parsing: what a tool call may look like, and how each refusal reads."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from multidict import CIMultiDict

from api.errors import ApiError
from api.parsing import (
    KNOWN_FIELDS,
    parse_body,
    parse_identity,
    parse_session_id,
    parse_tool_call,
    split_tool_input,
)
from shared.model import HandoverRequest, Identity
from tests.support.values import (
    CHAT_SERVICE_SID,
    CONVERSATION_SID,
    new_conversation_sid,
)

OTHER_CONVERSATION_SID = new_conversation_sid(42)
FLEX_USER_SID = "FX" + "ab" * 16
WHATSAPP = "whatsapp:+14155550123"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def refused(call, *args, status: int = 400, error: str, mentions: str | None = None):
    """Run `call(*args)`, expect an ApiError and check what it says."""
    with pytest.raises(ApiError) as caught:
        call(*args)
    exc = caught.value
    assert (exc.status, exc.code) == (status, error)
    assert exc.message and exc.message == str(exc)
    assert exc.message.endswith(".")
    if mentions is not None:
        assert mentions in exc.message
    return exc


# --------------------------------------------------------------------------
# parse_session_id
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        (f"webhook:conversations__{CHAT_SERVICE_SID}/{CONVERSATION_SID}", CONVERSATION_SID),
        (f"conversations__{CHAT_SERVICE_SID}/{CONVERSATION_SID}", CONVERSATION_SID),
        (CONVERSATION_SID, CONVERSATION_SID),
        (f"  webhook:conversations__{CHAT_SERVICE_SID}/{CONVERSATION_SID}\t", CONVERSATION_SID),
        (CONVERSATION_SID.upper(), CONVERSATION_SID),  # hex digits: one spelling
        (f"conversations__{CHAT_SERVICE_SID}/x/{OTHER_CONVERSATION_SID}", OTHER_CONVERSATION_SID),
    ],
    ids=["webhook-prefix", "conversations-prefix", "bare", "padded", "upper-hex", "last-slash"],
)
def test_parse_session_id_returns_the_conversation_sid(raw, expected):
    assert parse_session_id(raw) == expected


@pytest.mark.parametrize(
    "raw, kind",
    [
        (f"messaging__MG{'11' * 16}/+14155550123", "messaging"),
        (f"webhook:messaging__MG{'11' * 16}", "messaging"),
        ("voice__CA123", "voice"),
    ],
)
def test_parse_session_id_refuses_sessions_without_a_conversation(raw, kind):
    exc = refused(parse_session_id, raw, error="not_a_conversation", mentions=f"'{kind}'")
    assert "Conversation" in exc.message


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "CH123",
        CONVERSATION_SID + "0",
        "CH" + "g" * 32,
        "IS" + "0" * 32,
        f"conversations__{CHAT_SERVICE_SID}/",
        f"conversations__{CHAT_SERVICE_SID}",
        f"webhook:conversations__{CHAT_SERVICE_SID}/{CONVERSATION_SID} x",
    ],
)
def test_parse_session_id_refuses_a_malformed_conversation_sid(raw):
    exc = refused(parse_session_id, raw, error="invalid_conversation_sid", mentions="X-Session-Id")
    assert "CH followed by 32 hexadecimal characters" in exc.message


# --------------------------------------------------------------------------
# parse_identity
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, trait, value",
    [
        (WHATSAPP, "whatsapp", "+14155550123"),
        ("phone:+447911123456", "phone", "+447911123456"),
        ("email:ada@example.com", "email", "ada@example.com"),
        (f"flex_participant:{FLEX_USER_SID}", "flex_participant", FLEX_USER_SID),
        ("user_id:+14155550123", "user_id", "+14155550123"),
        (f"user_id:{FLEX_USER_SID}", "user_id", FLEX_USER_SID),
        ("user_id:foo:bar", "user_id", "foo:bar"),
        ("user_id:customer 42", "user_id", "customer 42"),
        ("WhatsApp:+14155550123", "whatsapp", "+14155550123"),
        ("EMAIL:Ada@Example.com", "email", "Ada@Example.com"),
        ("  phone:+14155550123 \n", "phone", "+14155550123"),
        ("user_id:" + "x" * 256, "user_id", "x" * 256),
        # A bare number is a phone number (Flex gets an sms channel), as the README says.
        ("+14155550123", "phone", "+14155550123"),
        (" +447911123456 ", "phone", "+447911123456"),
        # Flex user SIDs are spelled one way: hex digits in lower case.
        ("user_id:FX" + "AB" * 16, "user_id", FLEX_USER_SID),
        ("flex_participant:FX" + "aB" * 16, "flex_participant", FLEX_USER_SID),
        # Not a Flex user id: not looked up, kept as sent.
        ("user_id:fx-customer", "user_id", "fx-customer"),
        ("email:FXavier@example.com", "email", "FXavier@example.com"),
    ],
)
def test_parse_identity_accepts(raw, trait, value):
    assert parse_identity(raw) == Identity(trait, value)


@pytest.mark.parametrize(
    "raw, mentions",
    [
        ("", "trait:value"),
        ("   ", "trait:value"),
        ("whatsapp+14155550123", "trait:value"),
        (":+14155550123", "trait:value"),
        ("whatsapp:", "trait:value"),
        ("what's up:+14155550123", "before the first ':'"),
        ("1phone:+14155550123", "before the first ':'"),
        ("t" * 33 + ":value", "before the first ':'"),
        ("user_id:" + "x" * 257, "too long"),
        ("user_id:foo\x00bar", "control characters"),
        ("user_id:foo\nbar", "control characters"),
        ("user_id:foo\tbar", "control characters"),
        ("user_id: foo", "space"),
        ("email: ada@example.com", "space"),
        ("whatsapp:14155550123", "E.164"),
        ("whatsapp:+0155550123", "E.164"),
        ("phone:+1415", "E.164"),
        ("phone:+1415555012345678", "E.164"),
        ("phone:+1 415 555 0123", "E.164"),
        ("PHONE:tel:+14155550123", "E.164"),
        ("email:ada.example.com", "e-mail address"),
        ("flex_participant:FX123", "FX followed by 32 hexadecimal characters"),
        ("flex_participant:ada", "FX followed by 32 hexadecimal characters"),
        ("+1 415 555 0123", "E.164"),
        ("+1415", "E.164"),
        ("+14155550123x", "E.164"),
        # A Flex user id goes into a Conversations API path: nothing but the SID.
        ("user_id:FX/../../v2/Workspaces", "FX followed by 32 hexadecimal characters"),
        ("user_id:FX" + "ab" * 16 + "/../x", "FX followed by 32 hexadecimal characters"),
        ("user_id:FX" + "ab" * 16 + "?PageSize=1000", "FX followed by 32 hexadecimal"),
        ("user_id:FX" + "ab" * 16 + "%2F..", "FX followed by 32 hexadecimal characters"),
        ("user_id:FX123", "a Flex webchat user (user_id:FX…)"),
        ("flex_participant:FX" + "ab" * 16 + "#", "a Flex webchat user (flex_participant:FX…)"),
    ],
)
def test_parse_identity_refuses(raw, mentions):
    exc = refused(parse_identity, raw, error="invalid_identity", mentions=mentions)
    assert exc.message.startswith("The customer identity is unusable")


# --------------------------------------------------------------------------
# parse_body
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type, body, expected",
    [
        (JSON, b'{"reason": "angry", "n": 2}', {"reason": "angry", "n": 2}),
        ("application/vnd.api+json", b'{"a": [1]}', {"a": [1]}),
        ("Application/JSON", b'{"a": null}', {"a": None}),
        (FORM, b"reason=angry+one&summary=a%26b", {"reason": "angry one", "summary": "a&b"}),
        (FORM, b"reason=&x=1", {"reason": "", "x": "1"}),
        (FORM, b"reason=caf%C3%A9", {"reason": "café"}),
        (JSON, b"", {}),
        (FORM, b"", {}),
        ("application/xml", b"", {}),
        (JSON, b"  \r\n\t ", {}),
        # No or a vague content type: sniffed from the first character.
        ("", b'{"reason": "x"}', {"reason": "x"}),
        ("text/plain", b'  \n{"reason": "x"}', {"reason": "x"}),
        ("application/octet-stream", b'{"reason": "x"}', {"reason": "x"}),
        ("", b"reason=x", {"reason": "x"}),
        ("text/plain", b"reason=x&summary=y", {"reason": "x", "summary": "y"}),
    ],
)
def test_parse_body(content_type, body, expected):
    assert parse_body(content_type, body) == expected


@pytest.mark.parametrize(
    "content_type, body, mentions",
    [
        (JSON, b'{"reason": ', "not valid JSON at character"),
        (JSON, b"{'reason': 'x'}", "not valid JSON at character 1"),
        (JSON, b"\xff\xfe{", "not valid JSON"),
        (JSON, b'{"reason": "caf\xe9"}', "not valid JSON"),
        ("", b"{not json", "not valid JSON"),
        (JSON, b'["reason"]', "must be a JSON object"),
        (JSON, b'"reason"', "must be a JSON object"),
        (JSON, b"42", "must be a JSON object"),
        (JSON, b"null", "must be a JSON object"),
        (JSON, b'{"priority": NaN}', "not valid JSON"),
        (JSON, b'{"priority": Infinity}', "not valid JSON"),
        (JSON, b'{"x": {"y": -Infinity}}', "not valid JSON"),
        (JSON, b'{"priority": 1e400}', "not valid JSON"),
        (JSON, b'{"n": ' + b"1" * 5000 + b"}", "not valid JSON"),
        (FORM, b"reason=caf\xe9", "form-encoded UTF-8"),
        (FORM, b"reason=caf%E9", "form-encoded UTF-8"),
        (FORM, b"just some words", "form-encoded UTF-8"),
        ("", b"[1, 2]", "form-encoded UTF-8"),
    ],
)
def test_parse_body_refuses_a_bad_body(content_type, body, mentions):
    refused(parse_body, content_type, body, error="invalid_body", mentions=mentions)


@pytest.mark.parametrize("content_type", ["application/xml", "multipart/form-data", "text/html"])
def test_parse_body_refuses_other_media_types(content_type):
    refused(
        parse_body,
        content_type,
        b"<reason>x</reason>",
        status=415,
        error="unsupported_media_type",
        mentions=content_type,
    )


# --------------------------------------------------------------------------
# split_tool_input
# --------------------------------------------------------------------------


def test_split_tool_input_keeps_known_fields_stripped_and_the_rest_as_sent():
    known, extra = split_tool_input(
        {
            "reason": "  wants a refund \n",
            "summary": "Order 123 arrived broken.",
            "customer_name": " Ada ",
            "priority": "high",
            "language": "en-GB",
            "order": {"id": 123},
            "Reason": "  unknown because of its case  ",
            "tags": ["a", "b"],
            "conversation_sid": CONVERSATION_SID,
            "identity": WHATSAPP,
        }
    )
    assert known == {
        "reason": "wants a refund",
        "summary": "Order 123 arrived broken.",
        "customer_name": "Ada",
        "priority": "high",
        "language": "en-GB",
    }
    assert extra == {
        "order": {"id": 123},
        "Reason": "  unknown because of its case  ",
        "tags": ["a", "b"],
    }


@pytest.mark.parametrize(
    "fields, known",
    [
        ({"priority": 5}, {"priority": 5}),
        ({"priority": 2.5}, {"priority": 2.5}),
        ({"priority": 0}, {"priority": 0}),
        ({"reason": 42}, {"reason": "42"}),
        ({"summary": 1.5}, {"summary": "1.5"}),
        ({"reason": "", "summary": None, "language": "  ", "customer_name": "\n"}, {}),
    ],
    ids=["int-priority", "float-priority", "zero-priority", "int-text", "float-text", "empty"],
)
def test_split_tool_input_values(fields, known):
    assert split_tool_input(fields) == (known, {})


def test_split_tool_input_keeps_empty_unknown_fields():
    assert split_tool_input({"note": "", "other": None}) == ({}, {"note": "", "other": None})


@pytest.mark.parametrize("value", [True, False, ["a"], {"a": 1}])
@pytest.mark.parametrize("name", sorted(KNOWN_FIELDS))
def test_split_tool_input_refuses_a_known_field_that_is_not_text(name, value):
    refused(
        split_tool_input,
        {name: value},
        error="invalid_tool_input",
        mentions=f"'{name}' must be text",
    )


@pytest.mark.parametrize("name, limit", sorted(KNOWN_FIELDS.items()))
def test_split_tool_input_length_limits(name, limit):
    assert split_tool_input({name: " " + "x" * limit + " "}) == ({name: "x" * limit}, {})
    refused(
        split_tool_input,
        {name: "x" * (limit + 1)},
        error="invalid_tool_input",
        mentions=f"'{name}' is longer than {limit} characters",
    )


# --------------------------------------------------------------------------
# parse_tool_call
# --------------------------------------------------------------------------

BODY_SID = "conversation_sid"
SESSION = f"webhook:conversations__{CHAT_SERVICE_SID}/{CONVERSATION_SID}"


def assistant_headers(headers_type=dict, session="X-Session-Id", identity="X-Identity"):
    return headers_type({session: SESSION, identity: WHATSAPP, "Content-Type": JSON})


@pytest.mark.parametrize(
    "headers",
    [
        assistant_headers(),
        assistant_headers(CIMultiDict),
        assistant_headers(CIMultiDict, "x-session-id", "x-identity"),
        assistant_headers(CIMultiDict, "X-SESSION-ID", "X-IDENTITY"),
    ],
    ids=["dict", "cimultidict", "cimultidict-lower", "cimultidict-upper"],
)
def test_parse_tool_call_from_ai_assistant_headers(headers):
    body = json.dumps({"reason": " angry ", "ticket": "T-1"}).encode()
    request = parse_tool_call(headers, JSON, body, "billing")
    assert request == HandoverRequest(
        conversation_sid=CONVERSATION_SID,
        identity=Identity("whatsapp", "+14155550123"),
        target="billing",
        tool_input={"reason": "angry"},
        extra_input={"ticket": "T-1"},
    )


def test_parse_tool_call_headers_win_over_the_body():
    body = {
        "conversation_sid": OTHER_CONVERSATION_SID,
        "identity": "email:other@example.com",
        "summary": "s",
    }
    request = parse_tool_call(assistant_headers(), JSON, json.dumps(body).encode(), "default")
    assert request.conversation_sid == CONVERSATION_SID
    assert request.identity == Identity("whatsapp", "+14155550123")
    assert (request.tool_input, request.extra_input) == ({"summary": "s"}, {})


@pytest.mark.parametrize("content_type", [JSON, FORM])
def test_parse_tool_call_from_the_body_alone(content_type):
    fields = {
        "conversation_sid": f" {CONVERSATION_SID} ",
        "identity": " phone:+14155550123 ",
        "reason": "asked for a human",
    }
    body = (json.dumps(fields) if content_type == JSON else urlencode(fields)).encode()
    request = parse_tool_call({}, content_type, body, "default")
    assert request == HandoverRequest(
        CONVERSATION_SID,
        Identity("phone", "+14155550123"),
        "default",
        {"reason": "asked for a human"},
        {},
    )


def test_parse_tool_call_mixes_a_header_with_a_body_field():
    body = json.dumps({"identity": "email:ada@example.com"}).encode()
    request = parse_tool_call({"X-Session-Id": CONVERSATION_SID}, JSON, body, "default")
    assert (request.conversation_sid, request.identity) == (
        CONVERSATION_SID,
        Identity("email", "ada@example.com"),
    )


def test_parse_tool_call_blank_headers_fall_back_to_the_body():
    headers = {"X-Session-Id": "  ", "X-Identity": ""}
    body = json.dumps({"conversation_sid": CONVERSATION_SID, "identity": WHATSAPP}).encode()
    request = parse_tool_call(headers, JSON, body, "default")
    assert (request.conversation_sid, str(request.identity)) == (CONVERSATION_SID, WHATSAPP)


@pytest.mark.parametrize(
    "headers, body, error, mentions",
    [
        ({}, {}, "missing_conversation", "X-Session-Id"),
        ({"X-Identity": WHATSAPP}, {"conversation_sid": ""}, "missing_conversation", BODY_SID),
        # Both the header and the body field are named, so either caller knows what to send.
        ({"X-Identity": WHATSAPP}, {}, "missing_conversation", "no conversation_sid"),
        # A plain dict is case-sensitive: these names are not the headers.
        ({"x-session-id": SESSION}, {}, "missing_conversation", "X-Session-Id"),
        ({"X-Session-Id": SESSION}, {}, "missing_identity", "X-Identity"),
        ({"X-Session-Id": SESSION}, {"identity": None}, "missing_identity", "identity"),
        ({}, {"conversation_sid": CONVERSATION_SID}, "missing_identity", "X-Identity"),
        ({}, {"conversation_sid": 7, "identity": WHATSAPP}, "invalid_conversation_sid", BODY_SID),
        ({}, {"conversation_sid": "CH1", "identity": WHATSAPP}, "invalid_conversation_sid", "CH f"),
        ({}, {BODY_SID: "CH1", "identity": WHATSAPP}, "invalid_conversation_sid", BODY_SID),
        ({"X-Session-Id": "CH1"}, {}, "invalid_conversation_sid", "X-Session-Id"),
        ({"X-Session-Id": "messaging__MG1/x"}, {}, "not_a_conversation", "'messaging'"),
        ({"X-Session-Id": SESSION}, {"identity": ["whatsapp"]}, "invalid_identity", "identity"),
        ({"X-Session-Id": SESSION, "X-Identity": "whatsapp:123"}, {}, "invalid_identity", "E.164"),
        ({"X-Session-Id": SESSION}, {"identity": "nocolon"}, "invalid_identity", "trait:value"),
        (assistant_headers(), {"reason": ["x"]}, "invalid_tool_input", "'reason'"),
    ],
)
def test_parse_tool_call_refusals(headers, body, error, mentions):
    refused(
        parse_tool_call,
        headers,
        JSON,
        json.dumps(body).encode(),
        "default",
        error=error,
        mentions=mentions,
    )


def test_parse_tool_call_refuses_a_bad_body_even_with_good_headers():
    refused(
        parse_tool_call,
        assistant_headers(),
        "application/xml",
        b"<x/>",
        "default",
        status=415,
        error="unsupported_media_type",
    )

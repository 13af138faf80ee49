"""api.parsing under arbitrary input: a tool call is either a HandoverRequest or
an ApiError with a 4xx, never another exception (that would be a 500), and
the documented shapes always parse back to what they wrap.

Fixed seed (`derandomize`) so a failure here is the same failure on every run.
"""

from __future__ import annotations

import json
import string
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from api.errors import ApiError
from api.parsing import (
    IDENTITY_HEADER,
    KNOWN_FIELDS,
    SESSION_HEADER,
    parse_body,
    parse_identity,
    parse_session_id,
    parse_tool_call,
)
from shared import redis_keys, sids
from shared.model import HandoverRequest, Identity

PROPERTIES = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

HEX = "0123456789abcdefABCDEF"
SPECIAL_TRAITS = ("whatsapp", "phone", "email", "flex_participant")
CONTENT_TYPES = st.sampled_from(
    [
        "",
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/octet-stream",
        "application/vnd.api+json",
        "multipart/form-data",
        "text/html",
    ]
) | st.text(max_size=30)
# What aiohttp can hand us as a header value: any str (it decodes with
# surrogateescape, so even lone surrogates).
HEADER_TEXT = st.text(max_size=120)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)  # fmt: skip


def sid_strategy(prefix: str) -> st.SearchStrategy[str]:
    return st.text(HEX, min_size=32, max_size=32).map(lambda body: prefix + body)


CONVERSATION_SIDS = sid_strategy("CH")
CHAT_SERVICE_SIDS = sid_strategy("IS")
PADDING = st.sampled_from(["", " ", "\t", "  \n"])
TRAITS = st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)
E164 = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
# A printable value that does not start or end with a space.
VALUES = (
    st.text(
        st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=60
    )
    .map(str.strip)
    .filter(lambda value: value and value.isprintable())
)


def refusal_is_a_4xx(call, *args):
    """Run `call`; a refusal must be an ApiError with a 4xx and a message."""
    try:
        return call(*args)
    except ApiError as exc:
        assert 400 <= exc.status < 500
        assert exc.code and exc.message
        return None


# --- X-Session-Id ----------------------------------------------------------------------


@PROPERTIES
@given(raw=HEADER_TEXT)
def test_any_session_header_parses_to_a_conversation_sid_or_a_400(raw):
    sid = refusal_is_a_4xx(parse_session_id, raw)
    assert sid is None or sids.is_sid(sid, sids.CONVERSATION)


@PROPERTIES
@given(
    sid=CONVERSATION_SIDS,
    service=CHAT_SERVICE_SIDS,
    webhook=st.booleans(),
    conversations=st.booleans(),
    before=PADDING,
    after=PADDING,
)
def test_a_conversation_sid_in_either_prefix_form_parses_back(
    sid, service, webhook, conversations, before, after
):
    raw = sid
    if conversations:
        raw = f"conversations__{service}/{raw}"
    if webhook:
        raw = "webhook:" + raw
    assert parse_session_id(before + raw + after) == sids.canonical(sid, sids.CONVERSATION)


@PROPERTIES
@given(
    kind=st.from_regex(r"[a-z]{1,20}", fullmatch=True).filter(lambda k: k != "conversations"),
    rest=st.text(string.ascii_letters + string.digits + "/_", max_size=40),
    webhook=st.booleans(),
)
def test_a_session_of_another_kind_is_not_a_conversation(kind, rest, webhook):
    raw = ("webhook:" if webhook else "") + f"{kind}__{rest}"
    with pytest.raises(ApiError) as caught:
        parse_session_id(raw)
    assert (caught.value.status, caught.value.code) == (400, "not_a_conversation")


# --- X-Identity -------------------------------------------------------------------------


@PROPERTIES
@given(raw=HEADER_TEXT)
def test_any_identity_header_parses_to_a_clean_identity_or_a_400(raw):
    identity = refusal_is_a_4xx(parse_identity, raw)
    if identity is not None:
        assert identity.trait == identity.trait.lower() and identity.trait
        assert identity.value and identity.value == identity.value.strip()
        assert identity.value.isprintable()
        assert str(identity) == f"{identity.trait}:{identity.value}"


@PROPERTIES
@given(trait=TRAITS.filter(lambda t: t not in SPECIAL_TRAITS), value=VALUES, padding=PADDING)
def test_identity_is_split_on_the_first_colon_only(trait, value, padding):
    assert parse_identity(f"{padding}{trait}:{value}{padding}") == Identity(trait, value)


@PROPERTIES
@given(trait=st.sampled_from(["whatsapp", "phone", "WhatsApp", "PHONE"]), number=E164)
def test_an_e164_number_is_a_whatsapp_or_phone_identity(trait, number):
    assert parse_identity(f"{trait}:{number}") == Identity(trait.lower(), number)


@PROPERTIES
@given(trait=st.sampled_from(["whatsapp", "phone"]), value=VALUES)
def test_a_whatsapp_or_phone_identity_is_refused_unless_e164(trait, value):
    identity = refusal_is_a_4xx(parse_identity, f"{trait}:{value}")
    assert identity is None or identity.value.startswith("+")


# --- the whole tool call ----------------------------------------------------------------


def bodies() -> st.SearchStrategy[bytes]:
    """Raw bytes, JSON (objects and not), and form-encoded text."""
    as_json = JSON_VALUES.map(lambda value: json.dumps(value).encode())
    objects = st.dictionaries(
        st.sampled_from([*KNOWN_FIELDS, "conversation_sid", "identity"]) | st.text(max_size=8),
        JSON_VALUES,
        max_size=6,
    ).map(lambda value: json.dumps(value).encode())
    forms = st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=4).map(
        lambda value: urlencode(value).encode()
    )
    return st.binary(max_size=200) | as_json | objects | forms


def headers() -> st.SearchStrategy[CIMultiDict[str]]:
    session = HEADER_TEXT | CONVERSATION_SIDS
    identity = HEADER_TEXT | E164.map(lambda number: f"whatsapp:{number}")
    return st.fixed_dictionaries(
        {}, optional={SESSION_HEADER: session, IDENTITY_HEADER: identity}
    ).map(CIMultiDict)


@PROPERTIES
@given(request_headers=headers(), content_type=CONTENT_TYPES, body=bodies())
def test_any_tool_call_is_a_handover_or_a_4xx(request_headers, content_type, body):
    handover = refusal_is_a_4xx(parse_tool_call, request_headers, content_type, body, "default")
    if handover is not None:
        assert isinstance(handover, HandoverRequest)
        assert sids.is_sid(handover.conversation_sid, sids.CONVERSATION)
        assert not {"conversation_sid", "identity"} & set(handover.extra_input)
        assert set(handover.tool_input) <= set(KNOWN_FIELDS)


@PROPERTIES
@given(content_type=CONTENT_TYPES, body=st.binary(max_size=200))
def test_parse_body_is_a_dict_or_a_4xx(content_type, body):
    fields = refusal_is_a_4xx(parse_body, content_type, body)
    assert fields is None or isinstance(fields, dict)


@PROPERTIES
@given(header_sid=CONVERSATION_SIDS, body_sid=CONVERSATION_SIDS, number=E164)
def test_headers_win_over_the_body(header_sid, body_sid, number):
    body = json.dumps({"conversation_sid": body_sid, "identity": "email:a@b.example"})
    handover = parse_tool_call(
        {SESSION_HEADER: header_sid, IDENTITY_HEADER: f"phone:{number}"},
        "application/json",
        body.encode(),
        "default",
    )
    assert handover.conversation_sid == sids.canonical(header_sid, sids.CONVERSATION)
    assert handover.identity == Identity("phone", number)


@PROPERTIES
@given(sid=CONVERSATION_SIDS, number=E164, form=st.booleans())
def test_routing_fields_in_the_body_stand_in_for_the_headers(sid, number, form):
    fields = {"conversation_sid": sid, "identity": f"whatsapp:{number}"}
    body = urlencode(fields) if form else json.dumps(fields)
    content_type = "application/x-www-form-urlencoded" if form else "application/json"
    handover = parse_tool_call({}, content_type, body.encode(), "default")
    assert (handover.conversation_sid, handover.identity) == (
        sids.canonical(sid, sids.CONVERSATION),
        Identity("whatsapp", number),
    )
    assert handover.extra_input == {} and handover.tool_input == {}


@PROPERTIES
@given(
    known=st.fixed_dictionaries(
        {}, optional={name: st.text(max_size=limit + 5) for name, limit in KNOWN_FIELDS.items()}
    ),
    extra=st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in KNOWN_FIELDS and k not in ("conversation_sid", "identity")),
        JSON_VALUES,
        max_size=4,
    ),
)  # fmt: skip
def test_known_fields_are_checked_and_everything_else_is_kept(known, extra):
    body = json.dumps({**known, **extra}).encode()
    call_headers = {SESSION_HEADER: "CH" + "0" * 32, IDENTITY_HEADER: "phone:+14155550123"}
    too_long = [name for name, text in known.items() if len(text.strip()) > KNOWN_FIELDS[name]]
    handover = refusal_is_a_4xx(parse_tool_call, call_headers, "application/json", body, "t")
    if too_long:
        assert handover is None
        return
    assert handover is not None
    assert handover.extra_input == json.loads(json.dumps(extra))
    assert handover.tool_input == {
        name: text.strip() for name, text in known.items() if text.strip()
    }


# --- found by hand while fuzzing: deeply nested JSON --------------------------------------


@pytest.mark.parametrize("depth", [33, 990, 5_000, 30_000])
def test_deeply_nested_json_is_a_400_not_a_crash(depth):
    body = b'{"x":' + b"[" * depth + b"]" * depth + b"}"  # well under the 64 KiB limit
    with pytest.raises(ApiError) as caught:
        parse_tool_call(
            {SESSION_HEADER: "CH" + "0" * 32, IDENTITY_HEADER: "phone:+14155550123"},
            "application/json",
            body,
            "default",
        )
    assert caught.value.status == 400
    assert "nested deeper than 32" in caught.value.message


def test_nesting_up_to_the_limit_is_kept_as_sent():
    depth = 31  # the body object plus 31 arrays: 32 levels
    body = b'{"x":' + b"[" * depth + b"]" * depth + b"}"
    request = parse_tool_call(
        {SESSION_HEADER: "CH" + "0" * 32, IDENTITY_HEADER: "phone:+14155550123"},
        "application/json",
        body,
        "default",
    )
    value = request.extra_input["x"]
    for _ in range(depth - 1):
        (value,) = value
    assert value == []


# --- one spelling per SID: case variants are one handover -------------------------------


def case_variants(sid: str) -> st.SearchStrategy[str]:
    """`sid` with each hex digit in either case (the two-letter prefix as it is)."""
    return st.lists(st.booleans(), min_size=32, max_size=32).map(
        lambda upper: sid[:2] + "".join(
            char.upper() if flip else char.lower() for char, flip in zip(sid[2:], upper, strict=True)
        )
    )  # fmt: skip


@PROPERTIES
@given(data=st.data(), sid=CONVERSATION_SIDS, service=CHAT_SERVICE_SIDS, form=st.booleans())
def test_any_case_variant_of_a_conversation_sid_is_one_handover_key(data, sid, service, form):
    """De-duplication, the delivery claim and the per-conversation rate limit are
    keyed on the conversation SID: every spelling of it must give the same keys."""
    canonical = sids.canonical(sid, sids.CONVERSATION)
    variant = data.draw(case_variants(sid))
    identity = {IDENTITY_HEADER: "phone:+14155550123"}
    by_header = parse_tool_call(
        {SESSION_HEADER: f"webhook:conversations__{service}/{variant}", **identity},
        "", b"", "default",
    )  # fmt: skip
    fields = {"conversation_sid": variant, "identity": "phone:+14155550123"}
    body = urlencode(fields) if form else json.dumps(fields)
    by_body = parse_tool_call({}, "", body.encode(), "default")
    for handover in (by_header, by_body):
        assert handover.conversation_sid == canonical == "CH" + sid[2:].lower()
        assert redis_keys.conversation_key(
            handover.conversation_sid
        ) == redis_keys.conversation_key(canonical)
        assert redis_keys.claim_key(handover.conversation_sid) == redis_keys.claim_key(canonical)
        assert redis_keys.rate_conversation_key(
            handover.conversation_sid
        ) == redis_keys.rate_conversation_key(canonical)


@PROPERTIES
@given(
    data=st.data(), sid=sid_strategy("FX"), trait=st.sampled_from(["user_id", "flex_participant"])
)
def test_any_case_variant_of_a_flex_user_is_one_customer(data, sid, trait):
    """The per-customer rate limit is keyed on the identity."""
    variant = data.draw(case_variants(sid))
    identity = parse_identity(f"{trait}:{variant}")
    assert identity == Identity(trait, sids.canonical(sid, sids.FLEX_USER))
    assert redis_keys.rate_identity_key(str(identity)) == redis_keys.rate_identity_key(
        f"{trait}:{sids.canonical(sid, sids.FLEX_USER)}"
    )


# --- identities that reach a Twilio URL ------------------------------------------------

URL_BREAKERS = st.sampled_from(["/", "/../", "..", "?", "#", "%2F", "%", " ", "\\", ";", "&", "@"])


@PROPERTIES
@given(
    raw=HEADER_TEXT
    | st.tuples(
        st.sampled_from(["user_id:FX", "flex_participant:FX", "user_id:"]),
        st.text(HEX, max_size=34),
        URL_BREAKERS,
        st.text(max_size=20),
    ).map("".join)
)
def test_a_flex_user_identity_that_parses_is_a_url_safe_sid(raw):
    """What the worker looks up in the Conversations API (`needs_friendly_name`) is
    exactly an FX SID: nothing that could change the URL's path or query."""
    identity = refusal_is_a_4xx(parse_identity, raw)
    if identity is None:
        return
    if identity.trait in ("user_id", "flex_participant") and identity.value.startswith("FX"):
        assert sids.url_segment(identity.value, sids.FLEX_USER) == identity.value
        assert sids.canonical(identity.value, sids.FLEX_USER) == identity.value


@PROPERTIES
@given(number=E164, padding=PADDING)
def test_a_bare_number_is_a_phone_identity(number, padding):
    assert parse_identity(padding + number + padding) == Identity("phone", number)

"""Turns a tool call (headers + body) into a HandoverRequest, or a refusal (`api.errors`).

Pure functions, no I/O: every rule about what Twilio sends lives here and is
tested without a server. Error messages are written for two readers: the model,
which may relay them, and the person who configured the tool.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from api.errors import BadRequest, InvalidBody, InvalidIdentity, UnsupportedMediaType
from shared import sids
from shared.model import HandoverRequest, Identity

SESSION_HEADER = "X-Session-Id"
IDENTITY_HEADER = "X-Identity"
KNOWN_FIELDS: dict[str, int] = {
    # field → longest accepted text
    "reason": 1000,
    "summary": 8000,
    "customer_name": 200,
    "priority": 32,
    "language": 35,
}
ROUTING_FIELDS = ("conversation_sid", "identity")
MAX_NESTING = 32  # JSON objects/arrays within the body; Twilio's attributes need few
_TOO_DEEP = object()
_TRAIT = re.compile(r"[a-z][a-z0-9_]{0,31}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_MAX_IDENTITY_VALUE = 256
_FORM_TYPES = ("application/x-www-form-urlencoded",)
_SNIFFED_TYPES = ("", "text/plain", "application/octet-stream")


def parse_session_id(raw: str) -> str:
    """`webhook:conversations__IS…/CH…` (each prefix optional) → the CH… SID."""
    session = raw.strip().removeprefix("webhook:")
    if session.startswith("conversations__"):
        session = session.removeprefix("conversations__")
    elif "__" in session:
        kind = session.split("__", 1)[0]
        raise BadRequest(
            "not_a_conversation",
            f"This session is a '{kind}' session, not a Twilio Conversation, so it cannot "
            "be handed to a Flex agent. Connect the AI Assistant to Conversations to use "
            "the handover.",
        )
    return _conversation_sid(session.rsplit("/", 1)[-1], f"The {SESSION_HEADER} header")


def parse_identity(raw: str) -> Identity:
    """`whatsapp:+1…` → Identity; split on the first colon only. A bare number
    (`+14155550123`) is a `phone` identity, which Flex gets as an sms channel.

    A Flex webchat user's id (`user_id:FX…`, `flex_participant:FX…`) becomes a
    Conversations API path in the worker: it must be an FX SID, spelled one way.
    """
    raw = raw.strip()
    if ":" not in raw and raw.startswith("+"):
        if not _E164.fullmatch(raw):
            raise InvalidIdentity("a number needs E.164 form, e.g. +14155550123")
        return Identity("phone", raw)
    identity = Identity.parse(raw)
    trait = identity.trait.lower()
    value = identity.value
    if not trait or not value:
        raise InvalidIdentity(
            "it must look like 'whatsapp:+14155550123' (trait:value), or be a number "
            "such as +14155550123"
        )
    if not _TRAIT.fullmatch(trait):
        raise InvalidIdentity("the part before the first ':' is not a known kind of identity")
    if len(value) > _MAX_IDENTITY_VALUE or not value.isprintable() or value != value.strip():
        raise InvalidIdentity(
            "the value is too long, starts or ends with a space, or holds control characters"
        )
    if trait in ("whatsapp", "phone") and not _E164.fullmatch(value):
        raise InvalidIdentity(f"a {trait} identity needs a number in E.164 form, e.g. +14155550123")
    if trait == "email" and "@" not in value:
        raise InvalidIdentity("an email identity needs an e-mail address")
    if trait == "flex_participant" or (trait == "user_id" and value.startswith(sids.FLEX_USER)):
        flex_user = sids.canonical(value, sids.FLEX_USER)
        if flex_user is None:
            raise InvalidIdentity(
                f"a Flex webchat user ({trait}:FX…) needs {sids.describe(sids.FLEX_USER)}"
            )
        value = flex_user
    return Identity(trait, value)


def body_kind(content_type: str, body: bytes) -> str | None:
    """How a body is read: `empty`, `json`, `form`, or None (unsupported type).

    The one decision both `parse_body` and the signature check (`api.auth`) use,
    so that a signature is checked against the body as the handler will read it.
    """
    if not body.strip():
        return "empty"
    content_type = content_type.lower()
    looks_like_json = body.lstrip()[:1] == b"{"
    if content_type in _SNIFFED_TYPES or (content_type in _FORM_TYPES and looks_like_json):
        # Twilio's encoding of tool bodies is unconfirmed, and `curl -d '{…}'`
        # labels JSON as a form: a body that opens with `{` is read as JSON.
        return "json" if looks_like_json else "form"
    if content_type == "application/json" or content_type.endswith("+json"):
        return "json"
    if content_type in _FORM_TYPES:
        return "form"
    return None


def parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    """The tool input as a dict: JSON, form-encoded or empty."""
    kind = body_kind(content_type, body)
    if kind == "empty":
        return {}
    if kind == "json":
        return _parse_json(body)
    if kind == "form":
        return _parse_form(body)
    raise UnsupportedMediaType(content_type)


def split_tool_input(fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Known fields (checked) and everything else (kept as sent)."""
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in fields.items():
        if name in ROUTING_FIELDS:
            continue
        if name not in KNOWN_FIELDS:
            extra[name] = value
            continue
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise BadRequest("invalid_tool_input", f"The tool input field '{name}' must be text.")
        if name == "priority" and isinstance(value, (int, float)):
            known[name] = value
            continue
        text = str(value).strip()
        if not text:
            continue
        if len(text) > KNOWN_FIELDS[name]:
            raise BadRequest(
                "invalid_tool_input",
                f"The tool input field '{name}' is longer than {KNOWN_FIELDS[name]} characters.",
            )
        known[name] = text
    return known, extra


def parse_tool_call(
    headers: Mapping[str, str], content_type: str, body: bytes, target: str
) -> HandoverRequest:
    """The whole request: headers win over the JSON body's routing fields."""
    return handover_request(headers, parse_body(content_type, body), target)


def handover_request(
    headers: Mapping[str, str], fields: Mapping[str, Any], target: str
) -> HandoverRequest:
    """The tool input already read (a body, or an MCP tool call's arguments with
    no headers), checked by the same rules and refused in the same words."""
    session_header = headers.get(SESSION_HEADER, "").strip()
    if session_header:
        conversation_sid = parse_session_id(session_header)
    else:
        body_sid = _routing_field(fields, "conversation_sid")
        if body_sid is None:
            raise BadRequest(
                "missing_conversation",
                f"No conversation to hand over: the {SESSION_HEADER} header is missing "
                "(AI Assistants send it) and the body has no conversation_sid.",
            )
        conversation_sid = _conversation_sid(body_sid, "conversation_sid")
    identity_header = headers.get(IDENTITY_HEADER, "").strip()
    raw_identity = identity_header or _routing_field(fields, "identity")
    if raw_identity is None:
        raise BadRequest(
            "missing_identity",
            f"No customer identity: the {IDENTITY_HEADER} header is missing (AI Assistants "
            "send it) and the body has no identity such as 'whatsapp:+14155550123'.",
        )
    known, extra = split_tool_input(fields)
    return HandoverRequest(conversation_sid, parse_identity(raw_identity), target, known, extra)


def _routing_field(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"invalid_{name}", f"The body's {name} must be a string.")
    return value.strip()


def _conversation_sid(value: str, where: str) -> str:
    """The Conversation SID, canonical: `CHABC…` and `CHabc…` are one conversation,
    so one handover (de-duplication, claims and rate limits are keyed on it)."""
    conversation_sid = sids.canonical(value, sids.CONVERSATION)
    if conversation_sid is None:
        raise BadRequest(
            "invalid_conversation_sid",
            f"{where} does not name a Conversation: expected {sids.describe(sids.CONVERSATION)}.",
        )
    return conversation_sid


def _parse_json(body: bytes) -> dict[str, Any]:
    document = read_json(body)
    if not isinstance(document, dict):
        raise InvalidBody('must be a JSON object, e.g. {"reason": "…"}.')
    return document


def read_json(body: bytes) -> Any:
    """Any JSON document, finite numbers only and at most MAX_NESTING deep, or
    InvalidBody (a JSON-RPC body may be an array: `api.mcp_server` reads it here too)."""
    try:
        # NaN, Infinity and 1e400 are not JSON: they would reach Twilio as invalid JSON.
        document = json.loads(body, parse_float=_finite, parse_constant=_finite)
    except RecursionError:
        document = _TOO_DEEP  # nested deeper than the parser goes: refused just below
    except (ValueError, UnicodeDecodeError) as exc:
        where = f" at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise InvalidBody(f"is not valid JSON{where}.") from None
    if document is _TOO_DEEP or (
        # Only a body with enough brackets can be too deep: most are never walked.
        body.count(b"{") + body.count(b"[") > MAX_NESTING and _nesting_depth(document) > MAX_NESTING
    ):
        raise InvalidBody(f"is nested deeper than {MAX_NESTING} levels.")
    return document


def _nesting_depth(document: Any) -> int:
    """Without recursion: a deep document would otherwise fail later, in the worker."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            if depth <= MAX_NESTING:
                stack.extend((item, depth + 1) for item in value)
    return deepest


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is not a finite number")
    return number


def twilio_form(content_type: str, body: bytes, sent_as: str) -> dict[str, str]:
    """A Twilio webhook's fields (the first value of each), read as the signature
    check reads them (`api.auth.twilio_signature_valid`); an empty body has none.
    `sent_as` ends the refusal of another body: "must be form-encoded, as …"."""
    kind = body_kind(content_type, body)
    if kind == "empty":
        return {}
    if kind != "form":
        raise InvalidBody(f"must be form-encoded, as {sent_as}.")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidBody("is not valid form-encoded UTF-8 text.") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def _parse_form(body: bytes) -> dict[str, Any]:
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=True, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidBody("is not valid form-encoded UTF-8 text.") from None
    return dict(pairs)

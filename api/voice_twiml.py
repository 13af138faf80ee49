"""Pure: a ConversationRelay action request in, the TwiML that answers it out.

When a `<Connect action="…"><ConversationRelay …/></Connect>` session ends, Twilio
requests the action URL (form-encoded, signed with `X-Twilio-Signature`) and plays
the TwiML it gets back on the live call. Built from the settings and the request
alone, so `api.voice` can answer at once, whatever Redis does.

What this relies on, and how sure it is (checked with the docs search, 2026):
- Confirmed (`twilio-facts.md`; Twilio's "Getting and sending WebSocket messages"
  page): the agent ends the session with `{"type": "end", "handoffData": "<string>"}`
  and the action request carries that string verbatim as `HandoffData`, beside the
  call's parameters (`AccountSid`, `CallSid`, `From`, `To`, `CallStatus`, …).
- Seen in the payload types of Twilio's own ConversationRelay samples, not in a
  reference table: the session fields are `SessionId` (`VX…`), `SessionStatus` and
  `SessionDuration`; `HandoffData` is absent when the agent sent none; a session
  whose WebSocket broke arrives with `ErrorCode` 64105 and `CallStatus=in-progress`.
- Unconfirmed: the values `SessionStatus` takes. So nothing here depends on them: a
  handoff is a non-blank `HandoffData`; anything else (no `HandoffData`, an error) is
  a session that ended for another reason and gets the goodbye message and
  `<Hangup/>`. `SessionStatus` and `ErrorCode` are only logged, cut short.
- `HandoffData` is the agent's own text: JSON by convention, not by rule. A JSON
  object's fields become task attributes (bounded, below); anything else is kept as
  text under `handoffDataText`, and the record says so.
- The answer to reach Flex (TwiML `<Enqueue>`/`<Task>`): `<Response><Enqueue
  workflowSid="WW…" [waitUrl]><Task [priority] [timeout]>{task attributes as
  JSON}</Task></Enqueue></Response>`; Twilio creates the TaskRouter task from it and
  holds the caller in the queue. Voice webhooks time out after 15 s.

The task JSON is written ASCII-only (every other character as a JSON `\\u` escape)
and the XML by `xml.etree`, so nothing the agent writes (`</Task><Hangup/>`, quotes,
any Unicode) can end the `<Task>` or make the document invalid.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

from shared import sids
from shared.settings import DEFAULT_TARGET, Target

MAX_HANDOFF_DATA_BYTES = 8 * 1024
"""The most of a `HandoffData` object that goes into the task, as JSON bytes: a
task is not a document store, and each voice record keeps it too."""
MAX_DEPTH = 32
"""A value nested deeper than this is dropped (as the tool input's nesting is bounded)."""
MAX_KEY_CHARS = 128
MAX_CALLER_CHARS = 256
MAX_LOGGED_CHARS = 64
MIN_CUT_CHARS = 32
"""A text value is cut to fit the bound only when this much of it would remain."""
MAX_NAMED_KEYS = 10
PRIORITY_KEYS = ("reason", "summary")
"""Kept first when the bound bites: what the human agent needs most."""
TEXT_ATTRIBUTE = "handoffDataText"
"""Where a `HandoffData` that is not a JSON object goes, as text."""
HANDOVER_ID_ATTRIBUTE = "handoverId"
RESERVED_ATTRIBUTES = frozenset(
    {HANDOVER_ID_ATTRIBUTE, "handoverTarget", "from", "callSid", "channelType"}
)
"""Ours: a `HandoffData` key of these names is dropped (ours win anyway)."""
_CUT_OFF = "… [cut off]"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Characters XML 1.0 cannot hold even escaped (tab, newline and return can).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class ActionRequest:
    """The fields of an action request this service reads."""

    call_sid: str | None
    """`CallSid` as `CA` + 32 lower-case hex digits; None when missing or not a call SID."""
    caller: str
    """`From`, cut to MAX_CALLER_CHARS ('' when missing). Never logged."""
    handoff_data: str | None
    """`HandoffData` as sent; None when missing or blank: no handoff."""
    session_status: str
    """`SessionStatus` cut to MAX_LOGGED_CHARS, for the log only."""
    error_code: str
    """`ErrorCode` likewise."""
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class HandoffData:
    """`HandoffData` as it goes into the task: JSON-safe fields within the bound,
    and what was wrong with it."""

    fields: dict[str, Any]
    problems: tuple[str, ...] = ()


def read_action(fields: Mapping[str, str]) -> ActionRequest:
    """The action request's parameters (first value of each) → ActionRequest."""
    problems = []
    raw_call = fields.get("CallSid", "")
    call_sid = sids.canonical(raw_call, sids.CALL)
    if call_sid is None:
        problems.append(
            "no CallSid" if not raw_call else f"CallSid is not {sids.describe(sids.CALL)}"
        )
    caller = fields.get("From", "")
    if len(caller) > MAX_CALLER_CHARS:
        caller = caller[:MAX_CALLER_CHARS]
        problems.append(f"From longer than {MAX_CALLER_CHARS} characters, cut")
    handoff_data = fields.get("HandoffData")
    return ActionRequest(
        call_sid=call_sid,
        caller=caller,
        handoff_data=handoff_data if handoff_data and handoff_data.strip() else None,
        session_status=fields.get("SessionStatus", "")[:MAX_LOGGED_CHARS],
        error_code=fields.get("ErrorCode", "")[:MAX_LOGGED_CHARS],
        problems=tuple(problems),
    )


def pick_target(targets: Mapping[str, Target], requested: str) -> tuple[Target | None, str | None]:
    """The target to enqueue to, and why not the one asked for. A caller on a live
    call who asked for a person is better served by some queue than by a hang-up:
    an unknown target falls back to `default`, or to the first one configured."""
    if requested in targets:
        return targets[requested], None
    fallback = targets.get(DEFAULT_TARGET) or next(iter(targets.values()), None)
    if fallback is None:
        return None, "no target is configured"
    return fallback, f"unknown target {_shown(requested)}: handed to {fallback.name!r}"


def parse_handoff_data(raw: str, limit: int = MAX_HANDOFF_DATA_BYTES) -> HandoffData:
    """`HandoffData` → the task's fields from it: a JSON object's JSON-safe keys,
    `reason` and `summary` first, within `limit` bytes of JSON (a text value cut to
    fit, what does not fit dropped); anything else as text under TEXT_ATTRIBUTE."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return _as_text(raw, "HandoffData is not JSON", limit)
    if not isinstance(document, dict):
        return _as_text(raw, "HandoffData is not a JSON object", limit)
    problems = []
    safe: dict[str, Any] = {}
    unsafe, reserved = [], []
    for key, value in document.items():
        if key in RESERVED_ATTRIBUTES:
            reserved.append(key)
        elif _key_ok(key) and json_safe(value):
            safe[key] = value
        else:
            unsafe.append(key)
    if unsafe:
        problems.append(f"HandoffData keys that are not JSON-safe dropped: {_names(unsafe)}")
    if reserved:
        problems.append(f"HandoffData keys that are ours dropped: {_names(reserved)}")
    fields, cut, dropped = bounded(safe, limit)
    if cut or dropped:
        what = [f"cut {_names(cut)}"] if cut else []
        what += [f"dropped {_names(dropped)}"] if dropped else []
        problems.append(f"HandoffData over {limit} bytes: {'; '.join(what)}")
    return HandoffData(fields, tuple(problems))


def _as_text(raw: str, problem: str, limit: int) -> HandoffData:
    fields, cut, _ = bounded({TEXT_ATTRIBUTE: raw} if json_safe(raw) else {}, limit)
    problems = [f"{problem}: kept as text under {TEXT_ATTRIBUTE}"]
    if cut:
        problems.append(f"HandoffData over {limit} bytes: cut")
    return HandoffData(fields, tuple(problems))


def json_safe(value: Any) -> bool:
    """Whether `value` serialises to JSON that any parser (and UTF-8) takes: no NaN
    or infinity, no lone surrogate in a string or key, nesting within MAX_DEPTH.
    Iterative, so no nesting can exhaust the stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        if isinstance(item, str):
            if not _encodable(item):
                return False
        elif isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            for key, nested in item.items():
                if not isinstance(key, str) or not _encodable(key):
                    return False
                stack.append((nested, depth + 1))
        elif isinstance(item, list):
            stack.extend((nested, depth + 1) for nested in item)
        elif item is not None and not isinstance(item, (bool, int)):
            return False
    return True


def bounded(fields: Mapping[str, Any], limit: int) -> tuple[dict[str, Any], list[str], list[str]]:
    """`fields` within `limit` bytes of compact ASCII JSON, PRIORITY_KEYS first:
    (kept, keys whose text was cut, keys dropped). `fields` must be JSON-safe."""
    order = [key for key in PRIORITY_KEYS if key in fields]
    order += [key for key in fields if key not in PRIORITY_KEYS]
    kept: dict[str, Any] = {}
    cut: list[str] = []
    dropped: list[str] = []
    used = 2  # {}
    for key in order:
        value = fields[key]
        head = (1 if kept else 0) + len(task_json(key)) + 1  # [,]"key":
        size = len(task_json(value))
        if used + head + size <= limit:
            kept[key] = value
            used += head + size
            continue
        room = limit - used - head
        if isinstance(value, str) and room >= MIN_CUT_CHARS + len(task_json(_CUT_OFF)):
            shortened = _cut_to(value, room)
            kept[key] = shortened
            used += head + len(task_json(shortened))
            cut.append(key)
        else:
            dropped.append(key)
    return kept, cut, dropped


def _cut_to(text: str, room: int) -> str:
    """The longest start of `text`, marked as cut, whose JSON takes at most `room` bytes."""
    low, high = 0, min(len(text), room)
    while low < high:
        middle = (low + high + 1) // 2
        if len(task_json(text[:middle] + _CUT_OFF)) <= room:
            low = middle
        else:
            high = middle - 1
    return text[:low] + _CUT_OFF


def task_attributes(
    target: Target,
    handover_id: str,
    call_sid: str | None,
    caller: str,
    handoff_fields: Mapping[str, Any],
) -> dict[str, Any]:
    """The task's attributes: the target's own, then `HandoffData`'s, then ours
    (which win): `from`, `callSid`, `channelType: "voice"`, `handoverId` (the
    TaskRouter hand-back finds the handover by it), `handoverTarget`."""
    attributes = {key: value for key, value in target.attributes.items() if json_safe(value)}
    attributes.update(handoff_fields)
    attributes.update(
        {
            "from": caller,
            "callSid": call_sid,
            "channelType": "voice",
            HANDOVER_ID_ATTRIBUTE: handover_id,
            "handoverTarget": target.name,
        }
    )
    return attributes


def task_json(value: Any) -> str:
    """Compact JSON, ASCII only: safe inside XML text, its size its byte count."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def enqueue_twiml(target: Target, attributes: Mapping[str, Any], say: str | None = None) -> str:
    """`[<Say>say</Say>]<Enqueue workflowSid [waitUrl]><Task [priority] [timeout]>{JSON}
    </Task></Enqueue>`: `say` tells the caller, first, what they should know (outside
    the target's business hours, when agents are back)."""
    response = Element("Response")
    if say:
        SubElement(response, "Say").text = xml_safe(say)
    enqueue = SubElement(response, "Enqueue", {"workflowSid": target.workflow_sid})
    if target.wait_url:
        enqueue.set("waitUrl", xml_safe(target.wait_url))
    task = SubElement(enqueue, "Task")
    if target.priority is not None:
        task.set("priority", str(target.priority))
    if target.voice_timeout is not None:
        task.set("timeout", str(target.voice_timeout))
    task.text = task_json(attributes)
    return _document(response)


def goodbye_twiml(message: str) -> str:
    """`<Say>message</Say><Hangup/>`: a session that ended without a handoff."""
    response = Element("Response")
    SubElement(response, "Say").text = xml_safe(message)
    SubElement(response, "Hangup")
    return _document(response)


def xml_safe(text: str) -> str:
    """`text` without the characters XML 1.0 cannot hold (escaping does the rest)."""
    return _NOT_XML.sub("", text)


def _document(root: Element) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>' + tostring(root, encoding="unicode")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _key_ok(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_CHARS and _encodable(key) and not _CONTROL.search(key)


def _shown(text: str) -> str:
    """A caller's name for something, safe to put in a record: printable, short."""
    cleaned = _CONTROL.sub("?", xml_safe(text)).encode("utf-8", "replace").decode()
    if len(cleaned) > MAX_LOGGED_CHARS:
        cleaned = cleaned[:MAX_LOGGED_CHARS] + "…"
    return repr(cleaned)


def _names(keys: Iterable[str]) -> str:
    names = list(keys)
    shown = ", ".join(_shown(key) for key in names[:MAX_NAMED_KEYS])
    more = len(names) - MAX_NAMED_KEYS
    return shown + (f" and {more} more" if more > 0 else "")

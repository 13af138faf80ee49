"""Twilio SID shapes: two letters and 32 hex digits.

Checked at the edges (settings, tool calls) so a typo fails with a clear message
instead of a Twilio 400 minutes later in the worker. Twilio's patterns accept
either case of hex digit, so `CHABC…` and `CHabc…` name one conversation:
`canonical` spells every SID one way (hex in lower case, as Twilio writes them)
before anything is keyed on it. A SID that goes into a Twilio URL path goes
through `url_segment`: twilio-python formats path parameters into the URL as
they are, so a value such as `FX/../../v2/…` would reach another resource.
"""

from __future__ import annotations

import re
from urllib.parse import quote

_SID_BODY = "[0-9a-fA-F]{32}"

ACCOUNT = "AC"
API_KEY = "SK"
CONVERSATION = "CH"
CHAT_SERVICE = "IS"
WORKSPACE = "WS"
WORKFLOW = "WW"
INTERACTION = "KD"
INTERACTION_CHANNEL = "UO"
FLEX_USER = "FX"
CONVERSATION_WEBHOOK = "WH"
MESSAGE = "IM"
TASK = "WT"
CALL = "CA"

_PATTERNS: dict[str, re.Pattern[str]] = {}


def pattern(prefix: str) -> str:
    """The regular expression Twilio's OpenAPI specs give, e.g. `^KD[0-9a-fA-F]{32}$`."""
    return f"^{prefix}{_SID_BODY}$"


def is_sid(value: object, prefix: str) -> bool:
    """True when `value` is a `prefix` SID such as CH followed by 32 hex digits."""
    compiled = _PATTERNS.get(prefix)
    if compiled is None:
        compiled = _PATTERNS[prefix] = re.compile(pattern(prefix))
    return isinstance(value, str) and compiled.fullmatch(value) is not None


def canonical(value: str, prefix: str) -> str | None:
    """`CHABC…` → `CHabc…`: the `prefix` SID with its hex digits in lower case; None
    when `value` is not a `prefix` SID (the prefix itself must be as given)."""
    if not is_sid(value, prefix):
        return None
    return prefix + value[len(prefix) :].lower()


def url_segment(value: object, prefix: str) -> str:
    """A SID as it may go into a Twilio URL path: checked against its pattern and
    percent-escaped anyway; ValueError for anything that is not a `prefix` SID."""
    if not isinstance(value, str) or not is_sid(value, prefix):
        raise ValueError(f"not {describe(prefix)}: not put in a Twilio URL")
    return quote(value, safe="")


def describe(prefix: str) -> str:
    """Human wording of a SID's shape, for error messages."""
    return f"{prefix} followed by 32 hexadecimal characters"

"""Twilio SID shapes: two letters and 32 hex digits.

Checked at the edges (settings, tool calls) so a typo fails with a clear message
instead of a Twilio 400 minutes later in the worker.
"""

from __future__ import annotations

import re

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


def describe(prefix: str) -> str:
    """Human wording of a SID's shape, for error messages."""
    return f"{prefix} followed by 32 hexadecimal characters"

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


def is_sid(value: str, prefix: str) -> bool:
    """True when `value` is a `prefix` SID such as CH followed by 32 hex digits."""
    pattern = _PATTERNS.get(prefix)
    if pattern is None:
        pattern = _PATTERNS[prefix] = re.compile(f"{prefix}{_SID_BODY}")
    return pattern.fullmatch(value) is not None


def describe(prefix: str) -> str:
    """Human wording of a SID's shape, for error messages."""
    return f"{prefix} followed by 32 hexadecimal characters"

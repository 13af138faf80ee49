"""The value types of the console script's options: each turns one option's text
into a value, or into argparse's one-line usage error (exit 2) that names what
was expected, so a typo never reaches a command."""

from __future__ import annotations

import argparse
import json
from typing import Any


def port(raw: str) -> int:
    return _port_in(raw, 1)


def any_port(raw: str) -> int:
    """A port, or 0 for any free port."""
    return _port_in(raw, 0)


def _port_in(raw: str, lowest: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not lowest <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number, {lowest}-65535, got {raw!r}")
    return value


def non_negative(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {raw!r}")
    return value


def positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {raw!r}")
    return value


def json_object(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f'must be a JSON object such as \'{{"status": 503, "count": 2}}\', got {raw!r}'
        )
    return value


def number_or_text(raw: str | None) -> str | float | None:
    """A Retry-After value as given: seconds as a number, anything else (an HTTP date) as text."""
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return raw

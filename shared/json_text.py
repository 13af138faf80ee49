"""Compact JSON for the tool endpoint's path: orjson, with the standard library
for what orjson will not write.

Why not `json.dumps` alone: a tool call encodes five documents (its answer, the
status record, the tool input and the rest of the input inside it, the arq job),
and `json.dumps` was ~8 % of the receiver's CPU under load; orjson writes the same
JSON several times faster. Why the fallback: `json.loads` reads JSON that orjson
refuses to write back (integers beyond 64 bits, strings with a lone surrogate
such as `"\\ud800"`); a caller's input may hold them, and storing it must not
fail, so such a document is written by `json.dumps` (escaped to ASCII), as
before. Both write the same JSON: any reader reads either.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def json_bytes(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: a huge integer, a lone surrogate
        return json.dumps(value, separators=(",", ":")).encode()


def json_text(value: Any) -> str:
    """`value` as compact JSON text (a field of a record)."""
    return json_bytes(value).decode()

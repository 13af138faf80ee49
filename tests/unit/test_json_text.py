"""shared.json_text: orjson's JSON, and the standard library's for what orjson refuses."""

from __future__ import annotations

import json

import pytest

from shared.json_text import json_bytes, json_text


@pytest.mark.parametrize(
    "value",
    [
        {"reason": "card declined", "priority": 5, "nested": {"a": [1, 2.5, None, True]}},
        {"name": "Zoë 🙂", "quote": '"\\', "control": "\x00\x1f"},
        [],
        {},
    ],
)
def test_reads_back_as_what_was_written(value):
    assert json.loads(json_bytes(value)) == value
    assert json.loads(json_text(value)) == value
    assert b" " not in json_bytes({"a": 1, "b": [1, 2]})  # compact


@pytest.mark.parametrize(
    "value",
    [
        {"huge": 2**70},  # beyond 64 bits: orjson will not write it
        {"lone": "\ud800"},  # json.loads reads "\ud800" from a caller's body
        {"deep": [{"x": "\udfff"}]},
    ],
)
def test_what_orjson_refuses_is_written_by_the_standard_library(value):
    written = json_bytes(value)
    assert written.isascii()
    assert json.loads(written) == value
    assert json_text(value) == written.decode()

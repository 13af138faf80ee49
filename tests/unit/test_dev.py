"""commands.dev's banner: the curl line authenticates without printing a secret."""

from __future__ import annotations

import json
import re

from commands.dev import callers_banner, curl_example, has_tool_authentication, mcp_example

TOKEN = "dev-tool-token-0123456789abcdef"


def test_without_tokens_the_curl_line_has_no_authorization():
    line = curl_example("0.0.0.0", 8080, {})
    assert "Authorization" not in line
    assert "http://127.0.0.1:8080/tools/flex-handover" in line


def test_with_tokens_the_shell_fills_in_the_first_one():
    line = curl_example(
        "127.0.0.1", 8080, {"HANDOVER_TOOL_TOKENS": f"{TOKEN},other-token-0123456789"}
    )
    assert TOKEN not in line
    assert '-H "Authorization: Bearer ${HANDOVER_TOOL_TOKENS%%,*}"' in line


def test_has_tool_authentication():
    assert not has_tool_authentication({})
    assert not has_tool_authentication({"HANDOVER_TOOL_TOKENS": " , "})
    assert has_tool_authentication({"HANDOVER_TOOL_TOKENS": TOKEN})
    assert has_tool_authentication({"HANDOVER_VERIFY_TWILIO_SIGNATURE": "true"})
    assert not has_tool_authentication({"HANDOVER_VERIFY_TWILIO_SIGNATURE": "false"})


def test_the_callers_lines_authenticate_like_the_curl_line():
    open_lines = "\n".join(callers_banner("0.0.0.0", 8080, {}))
    assert "Authorization" not in open_lines
    assert "curl -s http://127.0.0.1:8080/tools/flex-handover/schema" in open_lines
    lines = "\n".join(callers_banner("127.0.0.1", 8080, {"HANDOVER_TOOL_TOKENS": TOKEN}))
    assert TOKEN not in lines
    assert lines.count('-H "Authorization: Bearer ${HANDOVER_TOOL_TOKENS%%,*}"') == 2


def test_the_mcp_lines_call_the_tool_and_authenticate_as_the_curl_line_does():
    lines = "\n".join(mcp_example("0.0.0.0", 8080, {"HANDOVER_TOOL_TOKENS": TOKEN}))
    assert TOKEN not in lines
    assert '-H "Authorization: Bearer ${HANDOVER_TOOL_TOKENS%%,*}"' in lines
    assert "curl -s -X POST http://127.0.0.1:8080/mcp" in lines
    call = json.loads(re.search(r"-d '([^']+)'", lines).group(1))
    assert (call["method"], call["params"]["name"]) == ("tools/call", "hand_over_to_human")
    assert set(call["params"]["arguments"]) >= {"conversation_sid", "identity"}
    assert "Authorization" not in "\n".join(mcp_example("127.0.0.1", 8080, {}))

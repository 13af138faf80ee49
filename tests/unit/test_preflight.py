"""The pure parts of `flex-handover check`: the line, the exit code, the verdicts."""

from __future__ import annotations

import pytest
from twilio.base.exceptions import TwilioRestException

from commands.preflight import Result, exit_code, line, policy_result, twilio_reason


def test_a_line_is_the_status_padded_then_the_check_and_its_reason():
    assert line(Result("redis", "ok", "reachable and writable")) == (
        "ok    redis: reachable and writable"
    )
    assert line(Result("workspace", "FAIL", "not found")) == "FAIL  workspace: not found"
    assert line(Result("redis maxmemory-policy", "warn", "x")).startswith("warn  redis ")


def test_a_line_is_redacted():
    assert "+14155550123" not in line(Result("redis", "FAIL", "echoed +14155550123"))


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        (["ok", "ok"], 0),
        (["ok", "warn"], 1),
        (["FAIL", "ok"], 1),
        (["warn", "FAIL"], 1),
        ([], 1),  # nothing checked is no pass
    ],
)
def test_exit_zero_only_when_every_check_passed(statuses, code):
    assert exit_code([Result(str(i), s, "") for i, s in enumerate(statuses)]) == code


@pytest.mark.parametrize(
    ("policy", "status"),
    [("noeviction", "ok"), ("allkeys-lru", "warn"), ("volatile-ttl", "warn"), (None, "warn")],
)
def test_only_noeviction_keeps_acknowledged_handovers(policy, status):
    assert policy_result(policy).status == status


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (401, 20003, "credentials refused (HTTP 401, code 20003)"),
        (403, 20403, "permission refused (HTTP 403, code 20403)"),
        (404, 20404, "not found (HTTP 404, code 20404)"),
        (503, None, "Twilio failed (HTTP 503)"),
    ],
)
def test_a_twilio_failure_is_its_status_and_code_never_its_text(status, code, reason):
    exc = TwilioRestException(status, "https://x/v1/secret-path", msg="echo token-123", code=code)
    assert twilio_reason(exc) == reason

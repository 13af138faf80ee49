"""The voice handoff's settings: a target's `voice_timeout` and `wait_url`, checked
with an error naming the variable and the target, and VOICE_GOODBYE_MESSAGE."""

from __future__ import annotations

import json

import pytest

from shared.settings import (
    DEFAULT_VOICE_GOODBYE,
    MAX_VOICE_TIMEOUT_SECONDS,
    Settings,
    SettingsError,
    parse_targets,
)
from tests.support.values import BILLING_WORKFLOW_SID, WORKFLOW_SID

API_ENV = {
    "REDIS_URL": "redis://localhost:6379/0",
    "FLEX_WORKFLOW_SID": WORKFLOW_SID,
    "HANDOVER_TOOL_TOKENS": "tool-token-0123456789abcdef",
}


def test_voice_keys_are_read():
    raw = json.dumps(
        {
            "billing": {
                "workflow_sid": BILLING_WORKFLOW_SID,
                "voice_timeout": 3600,
                "wait_url": "https://hold.example.com/music.xml?x=1",
            }
        }
    )
    (billing,) = parse_targets(raw).values()
    assert billing.voice_timeout == 3600
    assert billing.wait_url == "https://hold.example.com/music.xml?x=1"


def test_voice_keys_are_optional():
    (billing,) = parse_targets(json.dumps({"b": {"workflow_sid": BILLING_WORKFLOW_SID}})).values()
    assert (billing.voice_timeout, billing.wait_url) == (None, None)
    default = Settings.from_env(API_ENV).targets["default"]
    assert (default.voice_timeout, default.wait_url) == (None, None)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"voice_timeout": 0}, "voice_timeout must be whole seconds from 1 to 1209600"),
        ({"voice_timeout": MAX_VOICE_TIMEOUT_SECONDS + 1}, "voice_timeout must be whole seconds"),
        ({"voice_timeout": 1.5}, "voice_timeout must be whole seconds"),
        ({"voice_timeout": True}, "voice_timeout must be whole seconds"),
        ({"voice_timeout": "60"}, "voice_timeout must be whole seconds"),
        ({"wait_url": "ftp://hold.example.com/"}, "wait_url must be an http(s) URL"),
        ({"wait_url": "https://"}, "wait_url must be an http(s) URL"),
        ({"wait_url": "https://x.example/a b"}, "wait_url must be an http(s) URL"),
        ({"wait_url": "https://x.example/" + "a" * 2048}, "of at most 2048 characters"),
        ({"wait_url": 42}, "wait_url must be an http(s) URL"),
    ],
)
def test_bad_voice_keys_name_the_variable_and_the_target(extra, says):
    raw = json.dumps({"billing": {"workflow_sid": BILLING_WORKFLOW_SID, **extra}})
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**API_ENV, "HANDOVER_TARGETS": raw})
    (problem,) = caught.value.problems
    assert problem.startswith("HANDOVER_TARGETS: target 'billing' ")
    assert says in problem


def test_the_goodbye_message_has_a_default_and_a_bound():
    assert Settings.from_env(API_ENV).voice_goodbye_message == DEFAULT_VOICE_GOODBYE
    custom = Settings.from_env({**API_ENV, "VOICE_GOODBYE_MESSAGE": "Bye now."})
    assert custom.voice_goodbye_message == "Bye now."
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**API_ENV, "VOICE_GOODBYE_MESSAGE": "x" * 501})
    assert caught.value.problems == ["VOICE_GOODBYE_MESSAGE: must be at most 500 characters"]

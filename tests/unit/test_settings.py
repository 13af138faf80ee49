"""shared.settings: defaults, one clear line per bad variable, and no leaked secrets.

Roles are `api` and `worker` (`flex-handover dev` builds a worker environment).
"""

from __future__ import annotations

import json
from dataclasses import fields
from types import MappingProxyType

import pytest

from shared.settings import (
    DEFAULT_MESSAGE,
    DEFAULT_TARGET,
    TWILIO_CONVERSATIONS_API,
    TWILIO_FLEX_API,
    TWILIO_TASKROUTER_API,
    Settings,
    SettingsError,
    Target,
    parse_targets,
)
from tests.support.values import (
    ACCOUNT_SID,
    BILLING_WORKFLOW_SID,
    WORKFLOW_SID,
    WORKSPACE_SID,
)

API_KEY = "SK" + "b2" * 16
AUTH_TOKEN = "auth-token-do-not-print-0123456789"
API_SECRET = "api-secret-do-not-print-9876543210"
REDIS_PASSWORD = "redis-password-do-not-print"

TOOL_TOKEN = "tool-token-do-not-print-0123"
API_ENV = {
    "REDIS_URL": "redis://localhost:6379/0",
    "FLEX_WORKFLOW_SID": WORKFLOW_SID,
    "HANDOVER_TOOL_TOKENS": TOOL_TOKEN,
}
WORKER_ENV = {
    **API_ENV,
    "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
    "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    "FLEX_WORKSPACE_SID": WORKSPACE_SID,
}


def problems_for(env: dict[str, str], role: str = "worker") -> list[str]:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env, role=role)
    error = caught.value
    assert str(error) == "invalid configuration:\n  " + "\n  ".join(error.problems)
    return error.problems


def only_problem(env: dict[str, str], role: str = "worker") -> str:
    problems = problems_for(env, role)
    assert len(problems) == 1, problems
    return problems[0]


# --------------------------------------------------------------------------
# Defaults and valid values
# --------------------------------------------------------------------------


def test_defaults():
    settings = Settings.from_env(API_ENV, role="api")
    assert settings == Settings(
        redis_url="redis://localhost:6379/0", targets=settings.targets, tool_tokens=(TOOL_TOKEN,)
    )
    assert settings.targets == {DEFAULT_TARGET: Target(DEFAULT_TARGET, WORKFLOW_SID, "chat")}
    assert {
        field.name: getattr(settings, field.name)
        for field in fields(settings)
        if field.name != "targets"
    } == {
        "redis_url": "redis://localhost:6379/0",
        "redis_sentinels": (),
        "redis_cluster": False,
        "redis_sentinel_service": "mymaster",
        "redis_sentinel_username": None,
        "redis_sentinel_password": None,
        "min_replicas": 0,
        "replica_timeout_seconds": 1.0,
        "redis_tls_ca_file": None,
        "redis_tls_cert_file": None,
        "redis_tls_key_file": None,
        "twilio_account_sid": None,
        "twilio_auth_token": None,
        "twilio_api_key": None,
        "twilio_api_secret": None,
        "flex_workspace_sid": None,
        "flex_api_base_url": TWILIO_FLEX_API,
        "conversations_api_base_url": TWILIO_CONVERSATIONS_API,
        "taskrouter_api_base_url": TWILIO_TASKROUTER_API,
        "handover_message": DEFAULT_MESSAGE,
        "voice_goodbye_message": "Thank you for calling. Goodbye.",
        "dedup_seconds": 600.0,
        "max_age_seconds": 900.0,
        "status_ttl_seconds": 7 * 24 * 3600,
        "attempt_timeout_seconds": 10.0,
        "retry_budget_seconds": 15.0,
        "backoff_initial_seconds": 0.5,
        "backoff_max_seconds": 8.0,
        "requeue_delay_seconds": 30.0,
        "max_body_bytes": 65536,
        "tool_tokens": (TOOL_TOKEN,),
        "admin_tokens": (),
        "verify_twilio_signature": False,
        "trust_proxy_headers": False,
        "allow_unauthenticated": False,
        "mcp_allowed_origins": (),
        "rate_limit_per_conversation": 5,
        "rate_limit_per_identity": 20,
        "rate_limit_window_seconds": 60,
        "max_pending": 10_000,
        "priority_head_start_seconds": 120.0,
        "lookup_grace_seconds": 5.0,
        "lookup_interval_seconds": 1.0,
        "flex_api_max_rps": 18.0,
        "worker_concurrency": 50,
        "worker_poll_delay_seconds": 0.05,
        "worker_shutdown_grace_seconds": 10,
        "worker_reconnect_max_seconds": 30.0,
        "log_level": "INFO",
        "log_format": "text",
        "ui_session_seconds": 8 * 3600,
        "ui_secure_cookie": True,
        "metrics": True,
        "metrics_tokens": (),
        "worker_metrics_port": 0,
    }
    assert (settings.twilio_username, settings.twilio_password) == (None, None)


def test_blank_values_count_as_unset():
    env = {**API_ENV, "LOG_LEVEL": "  ", "HANDOVER_DEDUP_SECONDS": "", "TWILIO_AUTH_TOKEN": " "}
    settings = Settings.from_env(env, role="api")
    assert (settings.log_level, settings.dedup_seconds, settings.twilio_auth_token) == (
        "INFO",
        600.0,
        None,
    )


def test_every_setting_read_from_the_environment():
    env = {
        **WORKER_ENV,
        "REDIS_URL": "  rediss://cache.example.com:6380/2  ",
        "FLEX_API_BASE_URL": "http://127.0.0.1:8081/",
        "CONVERSATIONS_API_BASE_URL": "http://127.0.0.1:8082",
        "TASKROUTER_API_BASE_URL": "https://taskrouter.example.com//",
        "FLEX_TASK_CHANNEL": "sms",
        "HANDOVER_MESSAGE": "One moment, please.",
        "HANDOVER_DEDUP_SECONDS": "0",
        "HANDOVER_MAX_AGE_SECONDS": "120",
        "HANDOVER_STATUS_TTL_SECONDS": "3600",
        "HANDOVER_ATTEMPT_TIMEOUT_SECONDS": "2.5",
        "HANDOVER_RETRY_BUDGET_SECONDS": "12",
        "HANDOVER_BACKOFF_INITIAL_SECONDS": "0.1",
        "HANDOVER_BACKOFF_MAX_SECONDS": "4",
        "HANDOVER_REQUEUE_DELAY_SECONDS": "5",
        "HANDOVER_MAX_BODY_BYTES": "1024",
        "HANDOVER_TOOL_TOKENS": f" {TOOL_TOKEN} ,, second-token-0123456789 ",
        "HANDOVER_ADMIN_TOKENS": "admin-token-0123456789",
        "HANDOVER_VERIFY_TWILIO_SIGNATURE": "TRUE",
        "HANDOVER_TRUST_PROXY_HEADERS": "yes",
        "HANDOVER_ALLOW_UNAUTHENTICATED": "0",
        "HANDOVER_RATE_LIMIT_PER_CONVERSATION": "0",
        "HANDOVER_RATE_LIMIT_PER_IDENTITY": "7",
        "HANDOVER_RATE_LIMIT_WINDOW_SECONDS": "30",
        "HANDOVER_MAX_PENDING": "250",
        "HANDOVER_LOOKUP_GRACE_SECONDS": "2",
        "HANDOVER_LOOKUP_INTERVAL_SECONDS": "0.25",
        "WORKER_CONCURRENCY": "8",
        "WORKER_POLL_DELAY_SECONDS": "0.01",
        "WORKER_SHUTDOWN_GRACE_SECONDS": "3",
        "WORKER_RECONNECT_MAX_SECONDS": "4.5",
        "FLEX_API_MAX_RPS": "12.5",
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "JSON",
    }
    assert Settings.from_env(env, role="worker") == Settings(
        redis_url="rediss://cache.example.com:6380/2",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        flex_workspace_sid=WORKSPACE_SID,
        flex_api_base_url="http://127.0.0.1:8081",
        conversations_api_base_url="http://127.0.0.1:8082",
        taskrouter_api_base_url="https://taskrouter.example.com",
        targets={DEFAULT_TARGET: Target(DEFAULT_TARGET, WORKFLOW_SID, "sms")},
        handover_message="One moment, please.",
        dedup_seconds=0.0,
        max_age_seconds=120.0,
        status_ttl_seconds=3600,
        attempt_timeout_seconds=2.5,
        retry_budget_seconds=12.0,
        backoff_initial_seconds=0.1,
        backoff_max_seconds=4.0,
        requeue_delay_seconds=5.0,
        max_body_bytes=1024,
        tool_tokens=(TOOL_TOKEN, "second-token-0123456789"),
        admin_tokens=("admin-token-0123456789",),
        verify_twilio_signature=True,
        trust_proxy_headers=True,
        allow_unauthenticated=False,
        rate_limit_per_conversation=0,
        rate_limit_per_identity=7,
        rate_limit_window_seconds=30,
        max_pending=250,
        lookup_grace_seconds=2.0,
        lookup_interval_seconds=0.25,
        worker_concurrency=8,
        worker_poll_delay_seconds=0.01,
        worker_shutdown_grace_seconds=3,
        worker_reconnect_max_seconds=4.5,
        flex_api_max_rps=12.5,
        log_level="DEBUG",
        log_format="json",
    )


# --------------------------------------------------------------------------
# One problem line per bad variable, starting with its name
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, says",
    [
        ("REDIS_URL", "localhost:6379", "redis://"),
        ("REDIS_URL", "http://localhost:6379", "redis://"),
        ("TWILIO_ACCOUNT_SID", "AC123", "AC followed by 32 hexadecimal characters"),
        ("TWILIO_ACCOUNT_SID", "SK" + "a1" * 16, "AC followed by 32"),
        ("TWILIO_AUTH_TOKEN", "short", "too short"),
        ("TWILIO_API_KEY", "AC" + "a1" * 16, "SK followed by 32"),
        ("FLEX_WORKSPACE_SID", "WW" + "c3" * 16, "WS followed by 32"),
        ("FLEX_WORKFLOW_SID", "WW-not-hex", "WW followed by 32"),
        ("FLEX_TASK_CHANNEL", "chat room", "task channel"),
        ("FLEX_API_BASE_URL", "flex-api.twilio.com", "http(s) URL"),
        ("FLEX_API_BASE_URL", "ftp://flex-api.twilio.com", "http(s) URL"),
        ("CONVERSATIONS_API_BASE_URL", "https://", "http(s) URL"),
        ("TASKROUTER_API_BASE_URL", "localhost:8081", "http(s) URL"),
        ("HANDOVER_MESSAGE", "x" * 501, "at most 500"),
        ("HANDOVER_DEDUP_SECONDS", "ten", "number of seconds"),
        ("HANDOVER_DEDUP_SECONDS", "-1", "at least 0 seconds"),
        ("HANDOVER_MAX_AGE_SECONDS", "0.5", "at least 1 seconds"),
        ("HANDOVER_MAX_AGE_SECONDS", "nan", "at least 1 seconds"),
        ("HANDOVER_STATUS_TTL_SECONDS", "59", "at least 60"),
        ("HANDOVER_STATUS_TTL_SECONDS", "3600.5", "whole number"),
        ("HANDOVER_ATTEMPT_TIMEOUT_SECONDS", "0", "at least 0.01 seconds"),
        ("HANDOVER_ATTEMPT_TIMEOUT_SECONDS", "inf", "at least 0.01 seconds"),
        ("HANDOVER_RETRY_BUDGET_SECONDS", "-0.1", "at least 0 seconds"),
        ("HANDOVER_BACKOFF_INITIAL_SECONDS", "fast", "number of seconds"),
        ("HANDOVER_BACKOFF_MAX_SECONDS", "-3", "at least 0 seconds"),
        ("HANDOVER_REQUEUE_DELAY_SECONDS", "0", "at least 0.01 seconds"),
        ("HANDOVER_MAX_BODY_BYTES", "100", "at least 256"),
        ("HANDOVER_MAX_BODY_BYTES", "64k", "whole number"),
        ("WORKER_CONCURRENCY", "0", "at least 1"),
        ("WORKER_POLL_DELAY_SECONDS", "0", "at least 0.001 seconds"),
        ("LOG_LEVEL", "TRACE", "DEBUG, INFO, WARNING, ERROR"),
        ("LOG_LEVEL", "critical", "DEBUG, INFO, WARNING, ERROR"),
        ("LOG_FORMAT", "logfmt", "must be text or json, got 'logfmt'"),
        ("HANDOVER_UI_SESSION_SECONDS", "59", "at least 60"),
        ("HANDOVER_UI_SESSION_SECONDS", "8h", "whole number"),
        ("HANDOVER_UI_SECURE_COOKIE", "maybe", "true or false"),
    ],
)
def test_a_bad_variable_is_reported_by_name(name, value, says):
    problem = only_problem({**WORKER_ENV, name: value})
    assert problem.startswith(f"{name}: ")
    assert says in problem


@pytest.mark.parametrize(
    "raw, says",
    [
        ("{not json", "must be a JSON object (Expecting property name"),
        ('["billing"]', "must be a JSON object such as"),
        ('"billing"', "must be a JSON object such as"),
        ('{"Billing": {"workflow_sid": "%s"}}' % BILLING_WORKFLOW_SID, "'Billing' must be lower"),
        ('{"bill ing": {"workflow_sid": "%s"}}' % BILLING_WORKFLOW_SID, "'bill ing' must be lower"),
        ('{"-billing": {"workflow_sid": "%s"}}' % BILLING_WORKFLOW_SID, "'-billing' must be lower"),
        ('{"billing": "%s"}' % BILLING_WORKFLOW_SID, "target 'billing' must be a JSON object"),
        (
            '{"schema": {"workflow_sid": "%s"}}' % BILLING_WORKFLOW_SID,
            "'schema' is taken by a route",
        ),
        ('{"billing": {}}', "target 'billing' needs workflow_sid"),
        ('{"billing": {"workflow_sid": "WW1"}}', "needs workflow_sid, WW followed by 32"),
        ('{"billing": {"workflow_sid": 5}}', "needs workflow_sid"),
        (
            '{"billing": {"workflow_sid": "%s", "queue": "x", "skill": 1}}' % BILLING_WORKFLOW_SID,
            "target 'billing' has unknown keys: queue, skill",
        ),
        (
            '{"billing": {"workflow_sid": "%s", "task_channel": "a b"}}' % BILLING_WORKFLOW_SID,
            "invalid task_channel",
        ),
        (
            '{"billing": {"workflow_sid": "%s", "task_channel": 3}}' % BILLING_WORKFLOW_SID,
            "invalid task_channel",
        ),
        (
            '{"billing": {"workflow_sid": "%s", "priority": -1}}' % BILLING_WORKFLOW_SID,
            "priority must be a whole number >= 0",
        ),
        (
            '{"billing": {"workflow_sid": "%s", "priority": 1.5}}' % BILLING_WORKFLOW_SID,
            "priority must be a whole number >= 0",
        ),
        (
            '{"billing": {"workflow_sid": "%s", "priority": true}}' % BILLING_WORKFLOW_SID,
            "priority must be a whole number >= 0",
        ),
        (
            '{"billing": {"workflow_sid": "%s", "attributes": []}}' % BILLING_WORKFLOW_SID,
            "attributes must be a JSON object",
        ),
        (
            '{"billing": {"workflow_sid": "%s", "silence_webhooks": "https://bot"}}'
            % BILLING_WORKFLOW_SID,
            "silence_webhooks must be a list of URL prefixes",
        ),
        (
            '{"billing": {"workflow_sid": "%s", "silence_webhooks": ["bot.example"]}}'
            % BILLING_WORKFLOW_SID,
            "silence_webhooks must be a list of URL prefixes",
        ),
        (
            '{"billing": {"workflow_sid": "%s", "fallback_message": " "}}' % BILLING_WORKFLOW_SID,
            "fallback_message must be text of 1 to 1600 characters",
        ),
        (
            '{"billing": {"workflow_sid": "%s", "fallback_message": "%s"}}'
            % (BILLING_WORKFLOW_SID, "x" * 1601),
            "fallback_message must be text of 1 to 1600 characters",
        ),
        (
            '{"billing": {"workflow_sid": "%s", "fallback_author": 7}}' % BILLING_WORKFLOW_SID,
            "fallback_author must be text",
        ),
        (
            '{"billing": {"workflow_sid": "%s", "return_to_bot": "yes"}}' % BILLING_WORKFLOW_SID,
            "return_to_bot must be true or false",
        ),
    ],
)
def test_malformed_handover_targets(raw, says):
    problem = only_problem({**WORKER_ENV, "HANDOVER_TARGETS": raw})
    assert problem.startswith("HANDOVER_TARGETS: ")
    assert says in problem


def test_several_problems_are_reported_at_once():
    env = {
        "REDIS_URL": "localhost",
        "TWILIO_ACCOUNT_SID": "AC1",
        "TWILIO_AUTH_TOKEN": "short",
        "FLEX_WORKSPACE_SID": "WS1",
        "FLEX_WORKFLOW_SID": "WW1",
        "HANDOVER_MAX_BODY_BYTES": "lots",
        "LOG_LEVEL": "loud",
    }
    problems = problems_for(env, role="worker")
    assert [problem.split(":", 1)[0] for problem in problems] == [
        "REDIS_URL",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "FLEX_WORKSPACE_SID",
        "FLEX_WORKFLOW_SID",
        "HANDOVER_MAX_BODY_BYTES",
        "LOG_LEVEL",
    ]
    # A bad value is reported once, not again as "required".
    assert not any("required" in problem for problem in problems)


# --------------------------------------------------------------------------
# What each role needs
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "role, env, missing",
    [
        ("api", {}, ["REDIS_URL", "FLEX_WORKFLOW_SID", "HANDOVER_TOOL_TOKENS"]),
        (
            "worker",
            {},
            [
                "REDIS_URL",
                "FLEX_WORKFLOW_SID",
                "TWILIO_ACCOUNT_SID",
                "TWILIO_AUTH_TOKEN",
                "FLEX_WORKSPACE_SID",
            ],
        ),
        ("api", {"FLEX_WORKFLOW_SID": WORKFLOW_SID}, ["REDIS_URL", "HANDOVER_TOOL_TOKENS"]),
        (
            "worker",
            {**API_ENV, "TWILIO_ACCOUNT_SID": ACCOUNT_SID},
            [
                "TWILIO_AUTH_TOKEN",
                "FLEX_WORKSPACE_SID",
            ],
        ),
        (
            "worker",
            {**WORKER_ENV, "TWILIO_AUTH_TOKEN": "", "TWILIO_API_KEY": API_KEY},
            [
                "TWILIO_API_SECRET",
            ],
        ),
        ("worker", {**WORKER_ENV, "TWILIO_ACCOUNT_SID": ""}, ["TWILIO_ACCOUNT_SID"]),
        ("operator", {}, ["REDIS_URL"]),
    ],
)
def test_role_requirements(role, env, missing):
    problems = problems_for(env, role=role)
    assert [problem.split(":", 1)[0] for problem in problems] == missing
    assert all("required" in problem for problem in problems)


@pytest.mark.parametrize(
    "role, env",
    [
        ("api", API_ENV),
        ("worker", WORKER_ENV),
        (
            "api",
            {
                "REDIS_URL": "unix:///tmp/redis.sock",
                "HANDOVER_TARGETS": json.dumps({"billing": {"workflow_sid": BILLING_WORKFLOW_SID}}),
                "HANDOVER_ALLOW_UNAUTHENTICATED": "true",
            },
        ),
    ],
)
def test_role_is_satisfied(role, env):
    assert Settings.from_env(env, role=role).targets


def test_operator_needs_only_redis_url():
    """`failed` and `replay` talk to Redis only: no targets, tokens or Twilio settings."""
    settings = Settings.from_env({"REDIS_URL": "redis://localhost:6379/0"}, role="operator")
    assert settings.missing_for("operator") == []
    assert not settings.targets


def test_api_key_auth_needs_no_auth_token():
    env = {**WORKER_ENV, "TWILIO_AUTH_TOKEN": "", "TWILIO_API_KEY": API_KEY}
    env["TWILIO_API_SECRET"] = API_SECRET
    settings = Settings.from_env(env, role="worker")
    assert (settings.twilio_username, settings.twilio_password) == (API_KEY, API_SECRET)


def test_api_key_auth_wins_over_an_auth_token():
    env = {**WORKER_ENV, "TWILIO_API_KEY": API_KEY, "TWILIO_API_SECRET": API_SECRET}
    settings = Settings.from_env(env, role="worker")
    assert (settings.twilio_username, settings.twilio_password) == (API_KEY, API_SECRET)


def test_auth_token_auth_uses_the_account_sid():
    settings = Settings.from_env({**WORKER_ENV, "TWILIO_API_SECRET": API_SECRET}, role="worker")
    assert (settings.twilio_username, settings.twilio_password) == (ACCOUNT_SID, AUTH_TOKEN)


def test_missing_for_lists_what_a_role_lacks():
    settings = Settings(redis_url="redis://localhost")
    assert [problem.split(":", 1)[0] for problem in settings.missing_for("api")] == [
        "FLEX_WORKFLOW_SID",
        "HANDOVER_TOOL_TOKENS",
    ]
    assert len(settings.missing_for("worker")) == 4


# --------------------------------------------------------------------------
# Secrets stay out of errors and reprs
# --------------------------------------------------------------------------

SECRETS = (AUTH_TOKEN, API_SECRET, REDIS_PASSWORD)


def test_secrets_never_appear_in_repr():
    env = {
        **WORKER_ENV,
        "REDIS_URL": f"redis://default:{REDIS_PASSWORD}@cache.example.com:6379/0",
        "TWILIO_API_KEY": API_KEY,
        "TWILIO_API_SECRET": API_SECRET,
    }
    settings = Settings.from_env(env, role="worker")
    assert settings.twilio_auth_token == AUTH_TOKEN and settings.twilio_password == API_SECRET
    text = repr(settings) + str(settings)
    assert ACCOUNT_SID in text  # the repr is still useful
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize(
    "env",
    [
        {"TWILIO_AUTH_TOKEN": "short1"},
        {"TWILIO_API_SECRET": "short2", "TWILIO_API_KEY": API_KEY},
        {"REDIS_URL": f"http://user:{REDIS_PASSWORD}@cache.example.com"},
        {"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": AUTH_TOKEN},
        {"TWILIO_API_KEY": API_KEY, "TWILIO_API_SECRET": API_SECRET, "TWILIO_ACCOUNT_SID": ""},
    ],
)
def test_secrets_never_appear_in_errors(env):
    problems = problems_for({**WORKER_ENV, **env}, role="worker")
    assert problems
    text = "\n".join(problems)
    for secret in (*SECRETS, "short1", "short2"):
        assert secret not in text


# --------------------------------------------------------------------------
# Derived values and targets
# --------------------------------------------------------------------------


@pytest.mark.parametrize("budget, attempt", [(30.0, 10.0), (0.0, 0.01), (5.0, 2.0), (600.0, 60.0)])
def test_job_timeout_outlasts_the_retry_budget_and_an_attempt(budget, attempt):
    settings = Settings(retry_budget_seconds=budget, attempt_timeout_seconds=attempt)
    # A run that starts its last attempt at the end of the budget, after a name lookup.
    assert settings.job_timeout_seconds > budget + 2 * attempt
    assert settings.job_timeout_seconds >= budget + attempt + 10.0
    assert settings.dedup_key_ttl_seconds > (
        settings.max_age_seconds + settings.job_timeout_seconds + settings.dedup_seconds
    )
    assert isinstance(settings.dedup_key_ttl_seconds, int)


def test_targets_from_handover_targets_and_the_default():
    targets_json = json.dumps(
        {
            "billing": {
                "workflow_sid": BILLING_WORKFLOW_SID,
                "task_channel": "voice",
                "priority": 5,
                "attributes": {"department": "billing", "skills": ["refunds"]},
            },
            "vip_2": {"workflow_sid": BILLING_WORKFLOW_SID, "priority": 0},
        }
    )
    env = {**API_ENV, "FLEX_TASK_CHANNEL": "sms", "HANDOVER_TARGETS": targets_json}
    targets = Settings.from_env(env, role="api").targets
    assert set(targets) == {DEFAULT_TARGET, "billing", "vip_2"}
    assert targets[DEFAULT_TARGET] == Target(DEFAULT_TARGET, WORKFLOW_SID, "sms")
    billing = targets["billing"]
    assert (billing.name, billing.workflow_sid, billing.task_channel, billing.priority) == (
        "billing",
        BILLING_WORKFLOW_SID,
        "voice",
        5,
    )
    assert dict(billing.attributes) == {"department": "billing", "skills": ["refunds"]}
    # vip_2 inherits FLEX_TASK_CHANNEL, keeps priority 0 and has no attributes.
    assert targets["vip_2"] == Target("vip_2", BILLING_WORKFLOW_SID, "sms", 0, MappingProxyType({}))


def test_targets_are_read_only():
    settings = Settings.from_env(
        {
            **API_ENV,
            "HANDOVER_TARGETS": json.dumps(
                {"billing": {"workflow_sid": BILLING_WORKFLOW_SID, "attributes": {"a": 1}}}
            ),
        },
        role="api",
    )
    with pytest.raises(TypeError):
        settings.targets["other"] = settings.targets["billing"]  # type: ignore[index]  # the point: read-only
    with pytest.raises(TypeError):
        settings.targets["billing"].attributes["a"] = 2  # type: ignore[index]  # the point: read-only


def test_handover_targets_can_redefine_the_default_target():
    env = {
        **API_ENV,
        "HANDOVER_TARGETS": json.dumps(
            {"default": {"workflow_sid": BILLING_WORKFLOW_SID, "priority": 3}}
        ),
    }
    default = Settings.from_env(env, role="api").targets[DEFAULT_TARGET]
    assert (default.workflow_sid, default.priority) == (BILLING_WORKFLOW_SID, 3)


def test_handover_targets_alone_satisfy_the_target_requirement():
    env = {
        **API_ENV,
        "FLEX_WORKFLOW_SID": "",
        "HANDOVER_TARGETS": json.dumps({"billing": {"workflow_sid": BILLING_WORKFLOW_SID}}),
    }
    assert set(Settings.from_env(env, role="api").targets) == {"billing"}


def test_parse_targets_reads_what_happens_in_the_conversation():
    raw = json.dumps(
        {
            "billing": {
                "workflow_sid": BILLING_WORKFLOW_SID,
                "silence_webhooks": ["https://bot.example/", "http://10.0.0.5:8080/hook"],
                "fallback_message": "No agent right now; we will reply here.",
                "fallback_author": "Support",
                "return_to_bot": True,
            },
            "sales": {"workflow_sid": BILLING_WORKFLOW_SID},
        }
    )
    targets = parse_targets(raw)
    billing, sales = targets["billing"], targets["sales"]
    assert billing.silence_webhooks == ("https://bot.example/", "http://10.0.0.5:8080/hook")
    assert billing.fallback_message == "No agent right now; we will reply here."
    assert billing.fallback_author == "Support"
    assert billing.return_to_bot is True
    assert (sales.silence_webhooks, sales.fallback_message, sales.fallback_author) == (
        (),
        None,
        None,
    )
    assert sales.return_to_bot is False


def test_parse_targets_uses_the_given_default_task_channel():
    targets = parse_targets(
        json.dumps({"a": {"workflow_sid": BILLING_WORKFLOW_SID}}), default_task_channel="email"
    )
    assert targets == {"a": Target("a", BILLING_WORKFLOW_SID, "email", None, MappingProxyType({}))}
    assert parse_targets("{}") == {}


def test_status_records_must_outlive_a_retrying_handover():
    env = {
        **API_ENV,
        "HANDOVER_MAX_AGE_SECONDS": "900",
        "HANDOVER_STATUS_TTL_SECONDS": "600",
    }
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env, role="api")
    assert caught.value.problems[0].startswith("HANDOVER_STATUS_TTL_SECONDS:")
    env["HANDOVER_STATUS_TTL_SECONDS"] = "3600"
    assert Settings.from_env(env, role="api").status_ttl_seconds == 3600


# --------------------------------------------------------------------------
# Who may call, and the bounds the worker's timings give
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, says",
    [
        ("HANDOVER_TOOL_TOKENS", "short", "token 1 must be 16 to 256"),
        ("HANDOVER_TOOL_TOKENS", f"{TOOL_TOKEN},has a space in it 0123", "token 2"),
        ("HANDOVER_ADMIN_TOKENS", "x" * 300, "token 1"),
        ("HANDOVER_VERIFY_TWILIO_SIGNATURE", "maybe", "true or false"),
        ("HANDOVER_ALLOW_UNAUTHENTICATED", "2", "true or false"),
        ("HANDOVER_RATE_LIMIT_PER_IDENTITY", "-1", "at least 0"),
        ("HANDOVER_RATE_LIMIT_WINDOW_SECONDS", "0", "at least 1"),
        ("WORKER_SHUTDOWN_GRACE_SECONDS", "1.5", "whole number"),
        ("HANDOVER_MAX_PENDING", "-1", "at least 0"),
        ("HANDOVER_MAX_PENDING", "lots", "whole number"),
        ("WORKER_RECONNECT_MAX_SECONDS", "0.1", "at least 0.5 seconds"),
        ("FLEX_API_MAX_RPS", "-1", "requests per second"),
        ("FLEX_API_MAX_RPS", "fast", "requests per second"),
    ],
)
def test_auth_and_limit_variables_are_checked(name, value, says):
    problem = only_problem({**API_ENV, name: value}, role="api")
    assert problem.startswith(f"{name}: ") and says in problem
    assert "has a space" not in problem and "x" * 20 not in problem


def test_api_refuses_to_start_without_authentication():
    env = {**API_ENV, "HANDOVER_TOOL_TOKENS": ""}
    problem = only_problem(env, role="api")
    assert problem.startswith("HANDOVER_TOOL_TOKENS: required")
    assert "HANDOVER_ALLOW_UNAUTHENTICATED" in problem
    assert Settings.from_env({**env, "HANDOVER_ALLOW_UNAUTHENTICATED": "true"}, role="api")


def test_signature_checking_alone_is_authentication_but_needs_the_auth_token():
    env = {**API_ENV, "HANDOVER_TOOL_TOKENS": "", "HANDOVER_VERIFY_TWILIO_SIGNATURE": "true"}
    assert only_problem(env, role="api").startswith("TWILIO_AUTH_TOKEN: required with")
    settings = Settings.from_env({**env, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}, role="api")
    assert settings.authenticates_tool_calls and not settings.tool_tokens


def test_tokens_stay_out_of_repr():
    env = {**API_ENV, "HANDOVER_ADMIN_TOKENS": "admin-token-do-not-print-42"}
    text = repr(Settings.from_env(env, role="api"))
    assert TOOL_TOKEN not in text and "admin-token-do-not-print-42" not in text


def test_a_killed_workers_handover_is_recovered_after_the_job_timeout_and_ten_seconds():
    settings = Settings.from_env(WORKER_ENV, role="worker")
    # 15 s retry budget + three 10 s requests (the last attempt, the name
    # lookup, a lookup's last query) + 5 s lookup window + 10 s reading the
    # new Interaction's channel + 2 s margin.
    assert settings.run_budget_seconds == 62.0
    # + 15 s for the Conversation steps after the outcome + 5 s.
    assert settings.job_timeout_seconds == 82.0
    assert settings.recovery_seconds == 92.0
    assert settings.run_budget_seconds < settings.claim_ttl_seconds < settings.recovery_seconds


def test_secrets_are_every_credential_the_logs_must_not_show():
    env = {
        **WORKER_ENV,
        "REDIS_URL": f"redis://default:{REDIS_PASSWORD}@cache.example.com:6379/0",
        "HANDOVER_ADMIN_TOKENS": "admin-token-do-not-print-42",
        "TWILIO_API_KEY": API_KEY,
        "TWILIO_API_SECRET": API_SECRET,
    }
    settings = Settings.from_env(env, role="worker")
    assert set(settings.secrets) == {
        TOOL_TOKEN,
        AUTH_TOKEN,
        API_SECRET,
        REDIS_PASSWORD,
        "admin-token-do-not-print-42",
    }


# --------------------------------------------------------------------------
# Business hours in a target (shared.business_hours has the edge cases)
# --------------------------------------------------------------------------

BERLIN_HOURS = {
    "time_zone": "Europe/Berlin",
    "weekly": {"mon": ["08:00-12:00", "13:00-18:00"], "sun": []},
    "closed_dates": ["2026-12-25"],
}


def test_parse_targets_reads_business_hours():
    targets = parse_targets(
        json.dumps(
            {
                "billing": {
                    "workflow_sid": BILLING_WORKFLOW_SID,
                    "hours": BERLIN_HOURS,
                    "outside_hours": "decline",
                    "closed_message": "We are closed; back {opens_at}.",
                },
                "support": {"workflow_sid": BILLING_WORKFLOW_SID, "hours": BERLIN_HOURS},
                "sales": {"workflow_sid": BILLING_WORKFLOW_SID},
            }
        )
    )
    billing, support, sales = targets["billing"], targets["support"], targets["sales"]
    assert billing.hours is not None and billing.hours.time_zone == "Europe/Berlin"
    assert billing.hours.weekly[0] == ((480, 720), (780, 1080))
    assert (billing.outside_hours, billing.closed_message) == (
        "decline",
        "We are closed; back {opens_at}.",
    )
    assert support.hours == billing.hours
    assert (support.outside_hours, support.closed_message) == ("queue", None)
    assert (sales.hours, sales.outside_hours, sales.closed_message) == (None, "queue", None)


@pytest.mark.parametrize(
    "extra, says",
    [
        (
            {"hours": {**BERLIN_HOURS, "time_zone": "Europe/Berln"}},
            "target 'billing' hours time_zone 'Europe/Berln' is not a known IANA time zone",
        ),
        ({"hours": "08:00-18:00"}, "target 'billing' hours must be a JSON object"),
        (
            {"hours": {**BERLIN_HOURS, "weekly": {"mon": ["22:00-02:00"]}}},
            "target 'billing' hours weekly mon range '22:00-02:00' crosses midnight",
        ),
        (
            {"hours": {**BERLIN_HOURS, "weekly": {"mon": ["08:00-12:00", "11:00-13:00"]}}},
            "target 'billing' hours weekly mon ranges '08:00-12:00' and '11:00-13:00' overlap",
        ),
        (
            {"hours": {**BERLIN_HOURS, "weekly": {"Mon": []}}},
            "target 'billing' hours weekly has unknown days: 'Mon'",
        ),
        (
            {"hours": BERLIN_HOURS, "outside_hours": "reject"},
            "target 'billing' outside_hours must be 'queue' or 'decline'",
        ),
        ({"outside_hours": "decline"}, "target 'billing' outside_hours needs hours"),
        ({"closed_message": "closed"}, "target 'billing' closed_message needs hours"),
        (
            {"hours": BERLIN_HOURS, "closed_message": ""},
            "target 'billing' closed_message must be text of 1 to 500 characters",
        ),
        (
            {"hours": BERLIN_HOURS, "closed_message": "x" * 501},
            "closed_message must be text of 1 to 500 characters",
        ),
    ],
)
def test_bad_business_hours_name_the_variable_and_the_target(extra, says):
    raw = json.dumps({"billing": {"workflow_sid": BILLING_WORKFLOW_SID, **extra}})
    problem = only_problem({**WORKER_ENV, "HANDOVER_TARGETS": raw})
    assert problem.startswith("HANDOVER_TARGETS: target 'billing' ")
    assert says in problem


def test_sentinels_are_host_port_pairs_and_a_bad_one_is_named():
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://:secret-pw@unused/3",
            "REDIS_SENTINELS": " s1:26379,[::1]:26380 ,",
            "REDIS_SENTINEL_PASSWORD": "sentinel-secret",
        },
        role="operator",
    )
    assert settings.redis.sentinels == (("s1", 26379), ("::1", 26380))
    assert settings.redis.location == "Sentinel master 'mymaster' via s1:26379,::1:26380, db 3"
    assert "sentinel-secret" in settings.secrets and "secret-pw" in settings.secrets
    assert "secret" not in repr(settings.redis)
    for bad in ("s1", "s1:0", "s1:x", "s1:26379/0", "user@s1:1"):
        with pytest.raises(SettingsError, match="REDIS_SENTINELS: entry 1 must be host:port"):
            Settings.from_env({"REDIS_URL": "redis://x/0", "REDIS_SENTINELS": bad}, role="operator")


def test_a_client_certificate_needs_its_key():
    with pytest.raises(SettingsError, match="REDIS_TLS_CERT_FILE: a client certificate needs"):
        Settings.from_env(
            {"REDIS_URL": "rediss://x/0", "REDIS_TLS_CERT_FILE": __file__}, role="operator"
        )


@pytest.mark.parametrize(
    "url",
    ["rediss://x:6380/0?ssl_cert_reqs=none", "redis://x/0?socket_timeout=600", "redis://x/0#f"],
)
def test_a_redis_url_with_a_query_string_is_refused(url):
    """redis-py would let the query override TLS verification and timeouts."""
    with pytest.raises(SettingsError, match="REDIS_URL: must have no query string"):
        Settings.from_env({"REDIS_URL": url}, role="operator")


def test_an_operator_session_lasts_at_most_a_week():
    env = {"REDIS_URL": "redis://x/0", "HANDOVER_UI_SESSION_SECONDS": str(7 * 24 * 3600 + 1)}
    with pytest.raises(SettingsError, match="HANDOVER_UI_SESSION_SECONDS: must be at most 604800"):
        Settings.from_env(env, role="operator")


def test_a_cluster_url_names_a_node_on_database_0_and_no_sentinels():
    settings = Settings.from_env(
        {"REDIS_URL": "rediss://:pw-9c1@node-a.example:7000/0", "REDIS_CLUSTER": "true"},
        role="operator",
    )
    assert settings.redis.cluster and settings.redis.tls
    assert settings.redis.location == "Redis Cluster via node-a.example:7000 over TLS"
    assert Settings.from_env({"REDIS_URL": "redis://x/0"}, role="operator").redis.cluster is False
    for extra, says in [
        ({"REDIS_URL": "redis://x/2"}, "REDIS_CLUSTER: a cluster has database 0 only"),
        ({"REDIS_URL": "unix:///run/redis.sock"}, "REDIS_CLUSTER: set, but REDIS_URL is a unix"),
        ({"REDIS_SENTINELS": "s1:26379"}, "REDIS_CLUSTER: a cluster has no Sentinels"),
    ]:
        env = {"REDIS_URL": "redis://x/0", "REDIS_CLUSTER": "1", **extra}
        with pytest.raises(SettingsError, match=says):
            Settings.from_env(env, role="operator")

"""`flex-handover check` as an operator runs it: a real process with the worker's
settings, against a real Redis and the Flex simulator on loopback; every check
passing, then one failing check of each kind."""

from __future__ import annotations

from typing import Any

import pytest

from standins.flex_simulator import FlexSimulator
from standins.redis_server import LocalRedisServer, free_port
from tests.integration.test_cli import run_to_exit
from tests.support.processes import clean_env
from tests.support.service import service_env
from tests.support.values import AUTH_TOKEN, BILLING_WORKFLOW_SID, WORKFLOW_SID

CHECKS = [
    "redis",
    "redis maxmemory-policy",
    "twilio credentials",
    "workspace",
    "workflow (default)",
    "task channel (default)",
    "workflow (billing)",
    "task channel (billing)",
    "taskrouter task read",
    "conversations read",
]


def parsed(output: str) -> dict[str, tuple[str, str]]:
    """name -> (status, reason) from the lines `check` printed."""
    results = {}
    for text in output.splitlines():
        status, _, rest = text.partition("  ")
        name, _, reason = rest.strip().partition(": ")
        results[name] = (status.strip(), reason)
    return results


async def run_check(redis_url: str, simulator: FlexSimulator, **overrides: Any):
    env = clean_env(**service_env(redis_url, simulator.base_url or "", **overrides))
    code, output = await run_to_exit("check", env=env)
    assert AUTH_TOKEN not in output
    return code, output, parsed(output)


async def test_every_check_passes_against_the_simulator(redis_server, simulator):
    code, output, results = await run_check(redis_server.url, simulator)

    assert code == 0, output
    assert list(results) == CHECKS
    assert all(status == "ok" for status, _ in results.values()), output
    assert results["workflow (billing)"][1] == f"{BILLING_WORKFLOW_SID} exists"
    assert results["redis maxmemory-policy"][1] == "noeviction"
    paths = [(r["method"], r["path"]) for r in simulator.api_requests]
    assert all(method == "GET" for method, _ in paths)  # creates nothing
    assert ("GET", "/v1/Conversations") in paths


async def test_an_unreachable_redis_fails(simulator):
    code, _, results = await run_check(f"redis://127.0.0.1:{free_port()}/0", simulator)

    assert code == 1
    assert results["redis"][0] == "FAIL"
    assert "cannot write" in results["redis"][1]
    assert results["twilio credentials"][0] == "ok"  # the Twilio checks still run


async def test_an_evicting_policy_is_a_warning(simulator):
    with LocalRedisServer() as server:
        await _config_set(server.url, "maxmemory-policy", "allkeys-lru")
        code, _, results = await run_check(server.url, simulator)

    assert code == 1
    assert results["redis"][0] == "ok"
    status, reason = results["redis maxmemory-policy"]
    assert status == "warn"
    assert reason.startswith("allkeys-lru: ")
    assert [name for name, (s, _) in results.items() if s != "ok"] == ["redis maxmemory-policy"]


async def test_refused_credentials_fail_and_the_rest_is_not_tried(redis_server, simulator):
    wrong = "wrong-token-" + "9" * 20
    code, output, results = await run_check(redis_server.url, simulator, TWILIO_AUTH_TOKEN=wrong)

    assert code == 1
    assert wrong not in output
    assert results["twilio credentials"] == ("FAIL", "credentials refused (HTTP 401, code 20003)")
    assert results["workspace"] == ("FAIL", "not checked: the Twilio credentials failed")
    assert len(simulator.api_requests) == 1


@pytest.mark.parametrize(
    ("route", "status", "code", "failing", "reason"),
    [
        ("workspaces", 404, 20404, "workspace", "not found (HTTP 404, code 20404)"),
        ("workflows", 404, 20404, "workflow (default)", "not found (HTTP 404, code 20404)"),
        ("task_channels", 404, 20404, "task channel (default)", "not found (HTTP 404, code 20404)"),
        ("tasks", 403, 20403, "taskrouter task read", "permission refused (HTTP 403, code 20403)"),
        (
            "conversations",
            403,
            20403,
            "conversations read",
            "permission refused (HTTP 403, code 20403)",
        ),
    ],
)
async def test_a_failing_twilio_read_names_its_check(
    redis_server, simulator, route, status, code, failing, reason
):
    simulator.fail_next(count=1, route=route, status=status, code=code)

    exit_code, output, results = await run_check(redis_server.url, simulator)

    assert exit_code == 1
    assert [name for name, (s, _) in results.items() if s != "ok"] == [failing], output
    assert results[failing][1].endswith(reason)
    if route == "workflows":
        assert results[failing][1].startswith(WORKFLOW_SID)
    if route == "task_channels":
        assert results[failing][1].startswith("chat: ")


async def _config_set(url: str, name: str, value: str) -> None:
    from shared.redis_client import create_redis

    client = create_redis(url)
    try:
        await client.config_set(name, value)
    finally:
        await client.aclose()

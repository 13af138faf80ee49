"""No secret and no customer PII in any log line, through a whole flow.

The flow: a handover that succeeds, one that Twilio refuses with a 400 whose
message holds the customer's phone number and e-mail, an e-mail identity with a
signed form body, wrong tokens (header, query string, admin), bad signatures,
a 413, rate-limited calls and Redis going away. It runs twice:

- in this process, with the root logger at DEBUG and every logger let through
  (twilio and aiohttp.access too): raw records must not hold a secret at all,
  and what the service's redacting handler writes must hold no PII either;
- as real `flex-handover api` and `flex-handover worker` processes at
  LOG_LEVEL=DEBUG, in both LOG_FORMATs: their whole stderr is checked and, in
  json, every line is a JSON object and a handover's lines carry its id.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from shared.logging import redacting_handler
from shared.settings import Settings
from standins.flex_simulator import FlexSimulator
from standins.redis_server import LocalRedisServer, free_port
from tests.support.processes import COMMAND, PREFIX, clean_env, wait_healthy
from tests.support.service import Service, service_env
from tests.support.values import (
    ADMIN_TOKEN,
    AUTH_TOKEN,
    TOOL_TOKEN,
    admin_auth,
    new_conversation_sid,
    session_header,
    tool_auth,
)

PHONE = "+14155550177"
EMAIL = "jane.doe@example.com"
WRONG_TOKEN = "wrong-token-QWERTYzxcvb0987654321"
FORGED_SIGNATURE = RequestValidator("not-the-auth-token-000000").compute_signature("x", {})
PATH = "/tools/flex-handover"
HYGIENE_ENV = {
    "HANDOVER_VERIFY_TWILIO_SIGNATURE": "true",
    "HANDOVER_RATE_LIMIT_PER_IDENTITY": "2",
    "HANDOVER_MAX_BODY_BYTES": "4096",
}

SECRETS = [TOOL_TOKEN, ADMIN_TOKEN, AUTH_TOKEN, WRONG_TOKEN, FORGED_SIGNATURE]
PII = [PHONE, PHONE[1:], EMAIL]

WaitFinal = Callable[[str], Awaitable[dict]]


def headers(n: int, identity: str, **extra: str) -> dict[str, str]:
    return {
        "X-Session-Id": session_header(new_conversation_sid(n)),
        "X-Identity": identity,
        **extra,
    }


async def exercise(
    url: str, simulator: FlexSimulator, wait_final: WaitFinal, signatures: list[str]
) -> list[str]:
    """Every path that could log a secret or PII, against the API at `url`; returns
    the ids of the handovers the worker delivered (the first succeeded, the second
    failed, the third succeeded)."""
    delivered: list[str] = []
    async with aiohttp.ClientSession() as http:

        async def post(path: str = PATH, **kwargs) -> tuple[int, dict]:
            async with http.post(url + path, **kwargs) as response:
                return response.status, await response.json()

        # 1. Success, with PII in the tool input as well as the identity.
        status, ack = await post(
            headers=headers(1, f"whatsapp:{PHONE}", **tool_auth()),
            json={"reason": "refund", "summary": f"call me on {PHONE} or {EMAIL}"},
        )
        assert status == 202, ack
        assert (await wait_final(ack["handover_id"]))["state"] == "succeeded"
        delivered.append(ack["handover_id"])

        # 2. Twilio 400 whose message holds the phone number (token in the URL).
        simulator.fail_next(
            400, code=21211, message=f"Invalid 'To' Phone Number: {PHONE} ({EMAIL})"
        )
        status, ack = await post(f"{PATH}?token={TOOL_TOKEN}", headers=headers(2, f"phone:{PHONE}"))
        assert status == 202, ack
        record = await wait_final(ack["handover_id"])
        assert record["state"] == "failed", record
        assert PHONE not in str(record) and EMAIL not in str(record)
        delivered.append(ack["handover_id"])

        # 3. An e-mail identity, signed form body.
        form = {"reason": "billing", "customer_name": "Jane"}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url + PATH, form)
        signatures.append(signature)
        status, ack = await post(
            headers=headers(3, f"email:{EMAIL}", **{"X-Twilio-Signature": signature}),
            data=urlencode(form).encode(),
        )
        assert status == 202, ack
        assert (await wait_final(ack["handover_id"]))["state"] == "succeeded"
        delivered.append(ack["handover_id"])

        # 4. Wrong and missing credentials.
        identity = f"whatsapp:{PHONE}"
        refusals = [
            await post(headers=headers(4, identity, **tool_auth(WRONG_TOKEN))),
            await post(f"{PATH}?token={WRONG_TOKEN}", headers=headers(4, identity)),
            await post(headers=headers(4, identity)),
            await post(headers=headers(4, identity, **admin_auth())),
            await post(
                f"{PATH}?token={WRONG_TOKEN}&bodySHA256=00",
                headers=headers(4, identity, **{"X-Twilio-Signature": FORGED_SIGNATURE}),
                data=b'{"reason": "x"}',
            ),
            await post(
                headers=headers(4, identity, **{"X-Twilio-Signature": FORGED_SIGNATURE}),
                data=urlencode(form).encode(),
            ),
        ]
        assert [status for status, _ in refusals] == [403, 403, 401, 403, 403, 403], refusals
        for auth_headers in (admin_auth(WRONG_TOKEN), tool_auth(), {}):
            async with http.get(
                f"{url}/handovers/ho_{'0' * 32}?token={WRONG_TOKEN}", headers=auth_headers
            ) as response:
                assert response.status in (401, 403)

        # 5. A body over the limit.
        status, _ = await post(
            headers=headers(5, identity, **tool_auth()), json={"summary": PHONE * 1000}
        )
        assert status == 413

        # 6. Rate limited: the third new handover of one customer.
        limited = f"user_id:{PHONE}"
        statuses = [
            (await post(headers=headers(10 + n, limited, **tool_auth())))[0] for n in range(3)
        ]
        assert statuses == [202, 202, 429]
    return delivered


async def redis_down_call(url: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}{PATH}?token={TOOL_TOKEN}", headers=headers(20, f"whatsapp:{PHONE}")
        ) as response,
    ):
        assert response.status == 503


def assert_clean(text: str, signatures: list[str], where: str) -> None:
    for value in [*SECRETS, *signatures, *PII]:
        assert value not in text, f"{value[:6]}… appears in {where}"


class Records(logging.Handler):
    """Keeps every record as it arrives, before any filter rewrites it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name} {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + logging.Formatter().formatException(record.exc_info)
        self.texts.append(text)


async def test_no_secret_or_pii_in_any_log_record_in_process(start_service, simulator):
    root = logging.getLogger()
    raw, written = Records(), io.StringIO()
    output = redacting_handler(written)
    quiet = {
        name: logging.getLogger(name).level
        for name in ("twilio", "aiohttp.access", "aiohttp_retry")
    }
    saved_level = root.level
    root.handlers.insert(0, raw)
    root.addHandler(output)
    root.setLevel(logging.DEBUG)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.NOTSET)
    signatures: list[str] = []
    try:
        service = await start_service(**HYGIENE_ENV)
        await exercise(service.url, simulator, service.wait_final, signatures)
        dead = service_env(f"redis://127.0.0.1:{free_port()}/0", simulator.base_url, **HYGIENE_ENV)
        down = await Service(Settings.from_env(dead, role="api")).start(worker=False)
        try:
            await redis_down_call(down.url)
        finally:
            await down.stop()
    finally:
        root.removeHandler(raw)
        root.removeHandler(output)
        root.setLevel(saved_level)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
    records = "\n".join(raw.texts)
    assert "redis unavailable" in records  # the flow did log
    assert "refused POST /tools/flex-handover" in records
    for value in [*SECRETS, *signatures]:
        assert value not in records, f"{value[:6]}… was passed to a logger"
    assert_clean(written.getvalue(), signatures, "the redacted log output")


async def start_logged(
    args: list[str], env: dict[str, str], log: Path
) -> asyncio.subprocess.Process:
    with open(log, "wb") as file:  # noqa: ASYNC230 - a file, not a pipe nobody reads
        return await asyncio.create_subprocess_exec(
            COMMAND, *PREFIX, *args, env=env, stdout=file, stderr=file
        )


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_secret_or_pii_in_the_api_and_worker_process_logs(simulator, tmp_path, log_format):
    redis_server = LocalRedisServer()
    redis_server.start()
    env = clean_env(
        **service_env(
            redis_server.url,
            simulator.base_url,
            LOG_LEVEL="DEBUG",
            LOG_FORMAT=log_format,
            **HYGIENE_ENV,
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = await start_logged(["api", "--port", str(port)], env, tmp_path / "api.log")
    worker = await start_logged(["worker"], env, tmp_path / "worker.log")
    signatures: list[str] = []
    try:
        await wait_healthy(url, api)

        async def wait_final(handover_id: str) -> dict:
            deadline = time.monotonic() + 20
            async with aiohttp.ClientSession() as http:
                while True:
                    async with http.get(
                        f"{url}/handovers/{handover_id}", headers=admin_auth()
                    ) as response:
                        record = await response.json()
                    if record.get("state") in ("succeeded", "failed"):
                        return record
                    assert time.monotonic() < deadline, record
                    await asyncio.sleep(0.05)

        delivered = await exercise(url, simulator, wait_final, signatures)
        redis_server.kill()
        await redis_down_call(url)
    finally:
        for process in (api, worker):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in (api, worker):
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        redis_server.close()
    logs = {
        name: (tmp_path / f"{name}.log").read_text(errors="replace") for name in ("api", "worker")
    }
    assert "redis unavailable" in logs["api"]
    assert "refused POST /tools/flex-handover" in logs["api"]
    assert "handover" in logs["worker"]
    for name, text in logs.items():
        assert_clean(text, signatures, f"the {name} process log")
    assert os.path.getsize(tmp_path / "api.log") > 0  # noqa: ASYNC240 - the processes have stopped
    if log_format == "json":
        check_json_logs(logs, delivered)


def check_json_logs(logs: dict[str, str], delivered: list[str]) -> None:
    """Every line a JSON object with the four fields; every line of ours that
    names a delivered handover carries its id (and its conversation and target)."""
    records = {
        name: [json.loads(line) for line in text.splitlines()] for name, text in logs.items()
    }
    for name, lines in records.items():
        assert lines, f"the {name} process logged nothing"
        for record in lines:
            assert {"time", "level", "logger", "message"} <= record.keys(), record
            assert record["time"].endswith("Z"), record
    for handover_id in delivered:
        ours = [
            record
            for record in records["worker"]
            if handover_id in record["message"] and record["logger"].startswith("flex_handover.")
        ]
        assert ours, f"no worker line names {handover_id}"
        for record in ours:
            assert record.get("handover_id") == handover_id, record
            assert record.get("conversation_sid", "").startswith("CH"), record
            assert record.get("target") == "default", record
    attempts = [r for r in records["worker"] if r.get("handover_id") == delivered[1]]
    assert any(r.get("attempt") == 1 for r in attempts), attempts  # the refused one's first
    [down] = [r for r in records["api"] if r["message"].startswith("redis unavailable")]
    assert (down["conversation_sid"], down["target"]) == (new_conversation_sid(20), "default")

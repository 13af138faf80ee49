"""What an unauthenticated caller can make a real `flex-handover api` process do.

- Refused calls are logged with their path, and the path is the caller's to
  choose: 8 KB of the shapes the redaction patterns used to backtrack on must
  not stall the event loop (`/healthz` answers at once throughout).
- Malformed HTTP, sent over raw sockets: a 400 (JSON where aiohttp lets us
  answer), and one WARNING line in the log per request, no traceback.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.processes import ProcessGroup, ServiceProcess, clean_env
from tests.support.service import service_env
from tests.support.values import tool_auth

# The longest request line aiohttp reads is 8190 bytes.
PATH_LENGTH = 8000
# The shapes the old patterns backtracked on: `a.` and `a-` cost ~0.2 s each at
# 8 KB, the others ~0.06 s (e-mail local part, URL scheme), plus shapes of the
# other patterns.
PATH_SHAPES = ["a.", "a-", "a", "+", "+1", "@a.", "x://a:", "token="]


@pytest.fixture
async def api(redis_server, simulator, tmp_path) -> AsyncIterator[tuple[ServiceProcess, str]]:
    group = ProcessGroup(tmp_path)
    try:
        yield await group.start_api(clean_env(**service_env(redis_server.url, simulator.base_url)))
    finally:
        await group.close()


def long_path(shape: str) -> str:
    return "/tools/" + (shape * PATH_LENGTH)[:PATH_LENGTH]


async def test_refused_calls_with_long_paths_do_not_stall_healthz(api):
    """Before redaction was linear, 20 such calls blocked `/healthz` for 3.5 s.

    Every refused call is logged, its path cut to 200 characters; meanwhile a
    probe keeps asking for /healthz, and each answer must come within a second
    (on the old code one refused 8 KB `a.a.a.` path held the loop for ~0.2 s).
    """
    process, url = api
    rounds = 3  # each: 20 paths of `a.a.a.` (4.5 s of redaction before) and the rest
    latencies: list[float] = []
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:

        async def refused(path: str) -> None:
            async with http.post(url + path, json={}) as response:
                statuses.append(response.status)
                assert (await response.json())["error"] == "unauthorized"

        async def probe(stop: asyncio.Event) -> None:
            while True:  # once at least, however fast the refusals are
                started = time.monotonic()
                async with http.get(url + "/healthz") as response:
                    assert response.status == 200
                latencies.append(time.monotonic() - started)
                if stop.is_set():
                    return
                await asyncio.sleep(0.01)

        stop = asyncio.Event()
        prober = asyncio.create_task(probe(stop))
        for _ in range(rounds):
            paths = [long_path("a.")] * 20 + [long_path(shape) for shape in PATH_SHAPES]
            await asyncio.gather(*(refused(path) for path in paths))
        stop.set()
        await prober
    calls = rounds * (20 + len(PATH_SHAPES))
    assert statuses == [401] * calls
    assert latencies and max(latencies) < 1.0, f"/healthz took up to {max(latencies):.2f}s"
    refusals = [line for line in process.log().splitlines() if "refused POST /tools/" in line]
    assert len(refusals) == calls
    for line in refusals:
        assert len(line) < 400, line[:500]
        assert "chars): 401 unauthorized" in line


# Raw requests aiohttp's parser refuses, and bodies it cannot decode.
MALFORMED_REQUESTS = {
    "control character in a header": (
        b"POST /tools/flex-handover HTTP/1.1\r\nHost: x\r\nX-Identity: phone:+1\x01\r\n"
        b"Content-Length: 0\r\n\r\n"
    ),
    "duplicate Content-Length": (
        b"POST /tools/flex-handover HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\nab"
    ),
    "bad request line": b"GET /healthz?token=abc HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    # Sent once the first is answered. (On a fresh connection aiohttp logs a bad
    # method at DEBUG, as TLS or other non-HTTP traffic: that stays as it is.)
    "bad method after a good request": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G\x01T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    "chunk size that is not hex": (
        b"POST /tools/flex-handover HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n"
    ),
    "header line too long": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    ),
}
AUTHORIZED = f"Authorization: {tool_auth()['Authorization']}\r\n".encode()
# Bodies aiohttp notices only when the handler reads them: these are answered by
# our code, so they get JSON.
UNREADABLE_BODIES = {
    "gzip that is not gzip": (
        b"POST /tools/flex-handover HTTP/1.1\r\nHost: x\r\n" + AUTHORIZED
        + b"Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\n"
        + b"not gzip!"
    ),
    "gzip labelled deflate": (
        b"POST /tools/flex-handover HTTP/1.1\r\nHost: x\r\n" + AUTHORIZED
        + b"Content-Type: application/json\r\nContent-Encoding: deflate\r\n"
        + b"Content-Length: 35\r\n\r\n" + gzip.compress(b'{"reason": "x"}', mtime=0)
    ),
}  # fmt: skip


async def exchange(url: str, raw: bytes | tuple[bytes, ...], timeout: float = 10.0) -> bytes:
    """Send `raw` on a fresh connection (a tuple: each part once the server has
    answered the one before); everything the server answers until it closes the
    connection."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    answer = b""
    try:
        for index, part in enumerate(raw if isinstance(raw, tuple) else (raw,)):
            if index:  # the answer to the part before
                answer += await asyncio.wait_for(reader.read(65536), timeout)
            writer.write(part)
            await writer.drain()
        return answer + await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def last_response(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the last response in `answer` (responses are
    read one after the other by their Content-Length: a body may quote a request
    line)."""
    responses = []
    while answer:
        head, _, rest = answer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", len(rest)))
        responses.append((int(status_line.split()[1]), headers, rest[:length]))
        answer = rest[length:]
    return responses[-1]


async def test_malformed_http_gets_a_400_and_one_warning_line(api):
    process, url = api
    for name, raw in {**MALFORMED_REQUESTS, **UNREADABLE_BODIES}.items():
        status, headers, body = last_response(await exchange(url, raw))
        assert status == 400, (name, status, body)
        if name in UNREADABLE_BODIES:
            assert headers["content-type"].startswith("application/json"), name
            assert json.loads(body)["error"] == "invalid_body", name
    await asyncio.sleep(0.5)  # aiohttp logs some after it has answered
    log = process.log()
    warnings = [line for line in log.splitlines() if "malformed HTTP request" in line]
    assert len(warnings) == len(MALFORMED_REQUESTS) + len(UNREADABLE_BODIES), log
    assert all(" WARNING flex_handover.api.http_errors: " in line for line in warnings), warnings
    assert "Traceback" not in log and " ERROR " not in log, log
    # aiohttp quotes the bytes it choked on; the log does not repeat them.
    assert "token=abc" not in log and "aaaaaaaa" not in log
    async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as response:
        assert response.status == 200

"""Redis over TLS, for real: Debian's redis-server (built with TLS) serving TLS
only, with a throwaway CA (tests/support/tls.py) and client certificates
required. The api and the worker connect with the certificate and host name
verified and deliver a handover; a wrong CA, a name the certificate is not for,
or no client certificate is refused, and said so, with nothing acknowledged.
"""

from __future__ import annotations

import re
import shutil

import aiohttp
import pytest

from shared.redis_client import create_redis
from shared.settings import Settings
from shared.store import HandoverStore
from standins.redis_server import LocalRedisServer, ServerTls
from tests.support.outcomes import assert_each_ended_once, wait_all_final
from tests.support.processes import call_tool, clean_env
from tests.support.service import service_env
from tests.support.tls import TlsFiles, make_tls_files
from tests.support.values import new_conversation_sid

PASSWORD = "tls-redis-pw-not-in-logs-51aa"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_redis(tls_files):
    binary = shutil.which("redis-server")
    assert binary, "Debian's redis-server (with TLS) is needed: .ci/run installs it"
    files = tls_files
    server = LocalRedisServer(
        password=PASSWORD,
        binary=binary,
        tls=ServerTls(
            files.server_cert_file, files.server_key_file, files.ca_file, "yes",
            files.client_cert_file, files.client_key_file,
        ),
    )  # fmt: skip
    server.start()
    yield server
    server.close()


def tls_env(server: LocalRedisServer, files: TlsFiles, **overrides: str) -> dict[str, str]:
    return {
        "REDIS_TLS_CA_FILE": files.ca_file,
        "REDIS_TLS_CERT_FILE": files.client_cert_file,
        "REDIS_TLS_KEY_FILE": files.client_key_file,
        **overrides,
    }


async def test_api_and_worker_deliver_over_verified_tls(processes, tls_redis, tls_files, simulator):
    assert tls_redis.url.startswith("rediss://") and "@localhost:" in tls_redis.url
    env = clean_env(
        **service_env(tls_redis.url, simulator.base_url), **tls_env(tls_redis, tls_files)
    )
    settings = Settings.from_env(env, role="worker")
    api, api_url = await processes.start_api(env)
    worker = await processes.start_worker(env)
    client = create_redis(settings.redis)
    try:
        status, body, _ = await call_tool(api_url, new_conversation_sid(1))
        assert status == 202, body
        records = await wait_all_final(
            HandoverStore(client, settings.status_ttl_seconds), [body["handover_id"]], timeout=30
        )
        assert_each_ended_once(records, simulator)
        async with aiohttp.ClientSession() as http, http.get(api_url + "/readyz") as response:
            assert response.status == 200
        # The server really took TLS connections from both processes.
        clients = await client.client_list()
        assert len(clients) >= 3, clients
        assert await worker.terminate() == 0
        assert await api.terminate() == 0
        for log in (worker.log(), api.log()):
            assert PASSWORD not in log and "Traceback" not in log, log
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("other CA", "certificate verify failed"),
        ("wrong host name", "certificate verify failed"),
        # TLS 1.3: the server refuses the missing certificate after the handshake,
        # and its alert may or may not arrive before the connection is closed.
        ("no client certificate", "certificate required|Connection reset by peer"),
        ("plain redis://", "Connection"),
    ],
)
async def test_a_connection_that_does_not_verify_is_refused_and_nothing_is_acknowledged(
    processes, tls_redis, tls_files, simulator, case, expected
):
    url = tls_redis.url
    overrides = tls_env(tls_redis, tls_files)
    if case == "other CA":
        overrides["REDIS_TLS_CA_FILE"] = tls_files.other_ca_file
    elif case == "wrong host name":
        url = url.replace("localhost", "127.0.0.1")  # the certificate is for localhost only
    elif case == "no client certificate":
        del overrides["REDIS_TLS_CERT_FILE"], overrides["REDIS_TLS_KEY_FILE"]
    else:
        url = url.replace("rediss://", "redis://")
        overrides = {}
    env = clean_env(**service_env(url, simulator.base_url), **overrides)

    client = create_redis(Settings.from_env(env, role="worker").redis)
    try:
        with pytest.raises(Exception) as raised:
            await client.ping()
        assert re.search(expected, str(raised.value)), raised.value
    finally:
        await client.aclose()

    _, api_url = await processes.start_api(env)
    status, body, _ = await call_tool(api_url, new_conversation_sid(2))
    assert (status, body["error"]) == (503, "unavailable"), body
    async with aiohttp.ClientSession() as http, http.get(api_url + "/readyz") as response:
        assert response.status == 503


def test_tls_files_without_rediss_are_a_settings_error_naming_the_variable(tls_files):
    with pytest.raises(ValueError, match="REDIS_TLS_CA_FILE: set, but REDIS_URL is not rediss://"):
        Settings.from_env(
            {"REDIS_URL": "redis://localhost:6379/0", "REDIS_TLS_CA_FILE": tls_files.ca_file},
            role="operator",
        )
    with pytest.raises(ValueError, match="REDIS_TLS_KEY_FILE: no such file"):
        Settings.from_env(
            {"REDIS_URL": "rediss://localhost:6379/0", "REDIS_TLS_KEY_FILE": "/nonexistent.key"},
            role="operator",
        )

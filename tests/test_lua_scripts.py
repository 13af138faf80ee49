"""The Lua scripts stay files, ship in the wheel, spell no state name, and load and run.

Every script is a `.lua` file of a package's `lua/` folder, read through
`shared.lua_scripts`: none is a Python string, none quotes a state name (the loader
puts `STATE`, `LIVE` and `FINAL` in its header, from the `Status` enum), each is
package data (the Dockerfile installs the wheel, not the checkout), and each
product script loads into the suite's real Redis and runs.
"""

from __future__ import annotations

import os
import re
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import redis_keys
from shared.connections import Enqueuer, enqueue_script
from shared.deadletters import REPLAY_SCRIPT, Refusal, Replayer
from shared.key_migration import LEGACY_QUEUE, MIGRATE_JOB_SCRIPT
from shared.lua_scripts import SHARED_CONSTANTS, lua_literal, script
from shared.model import HandoverRequest, Identity, Status, new_handover_id, new_handover_record
from shared.settings import Settings
from shared.store import (
    BEGIN_SCRIPT,
    CLAIM_HELD,
    HAND_BACK_SCRIPT,
    UPDATE_SCRIPT,
    ClaimRelease,
    EndOutcome,
    HandoverStore,
)
from shared.summary import SUMMARY_SCRIPT, SummaryReader
from shared.voice_records import VoiceRecorder, voice_script
from tests.support.values import CONVERSATION_SID
from worker.arq_worker import PICK_SCRIPT
from worker.claim import RELEASE_SCRIPT, ClaimReleaser
from worker.rate_limit import TOKEN_BUCKET_SCRIPT, FlexRateLimit, pick_gate

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = PYPROJECT["tool"]["setuptools"]["packages"]
LIBRARY = ROOT / "shared" / "lua" / "lib"
# Spelled in two parts so that this file does not hold what it looks for.
REDIS_CALL = "redis.call" + "("
STATE_NAMES = "|".join(re.escape(status.value) for status in Status)
QUOTED_STATE = re.compile(rf"""(['"])({STATE_NAMES})\1""")
SETTINGS = Settings()
REQUEST = HandoverRequest(CONVERSATION_SID, Identity.parse("whatsapp:+14155550123"), "default")


def repo_files(suffix: str) -> Iterator[Path]:
    """The repository's own files: no virtualenv, no build output, no VCS."""
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [
            name
            for name in dirs
            if name not in {".git", "__pycache__", "build", "dist", ".pytest_cache"}
            and not name.endswith(".egg-info")
            and not (Path(folder) / name / "pyvenv.cfg").exists()
        ]
        yield from (Path(folder) / name for name in names if name.endswith(suffix))


def product_scripts() -> list[Path]:
    """Every `.lua` file of the packages the wheel ships, library functions apart."""
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.lua")
        if LIBRARY not in path.parents
    )


def test_no_python_file_holds_a_redis_script():
    offenders = [
        str(path.relative_to(ROOT)) for path in repo_files(".py") if REDIS_CALL in path.read_text()
    ]
    assert offenders == [], f"Lua in Python strings: move it to a .lua file ({offenders})"


def test_no_lua_file_quotes_a_state_name():
    offenders = {
        str(path.relative_to(ROOT)): QUOTED_STATE.findall(path.read_text())
        for path in repo_files(".lua")
    }
    assert {path: found for path, found in offenders.items() if found} == {}, (
        "write STATE.SUCCEEDED, LIVE[state], FINAL[state] (shared/lua_scripts.py)"
    )


# The key a command acts on is its first argument. A product script takes it from
# KEYS, except where its header says why it cannot, from a prefix in the header.
FIRST_KEY = re.compile(r"redis\.call\('(?!TIME')[A-Z]+', ([^,)]+)")
DERIVED_KEYS = {
    "worker/lua/pick.lua": {"ARQ_IN_PROGRESS_PREFIX .. ids[i]"},
    "shared/lua/enqueue.lua": {"HANDOVER_KEY_PREFIX .. existing"},
    "shared/lua/summary.lua": {
        "ARQ_IN_PROGRESS_PREFIX .. due[i]",
        "HANDOVER_KEY_PREFIX .. handover_id",
    },
}


def test_every_key_comes_through_keys_but_the_documented_ones():
    derived = {}
    for path in product_scripts():
        name = path.relative_to(ROOT).as_posix()
        found = {arg for arg in FIRST_KEY.findall(path.read_text()) if not arg.startswith("KEYS[")}
        if found:
            derived[name] = found
    assert derived == DERIVED_KEYS
    for name in DERIVED_KEYS:
        lines = (ROOT / name).read_text().splitlines()
        header = " ".join(line for line in lines if line.startswith("--"))
        assert "built here, not passed" in header, f"{name}: its header must say why"


def test_every_lua_file_of_a_package_is_package_data():
    globs = PYPROJECT["tool"]["setuptools"].get("package-data", {})
    for package in PACKAGES:
        patterns = [*globs.get("*", []), *globs.get(package, [])]
        shipped = {path for pattern in patterns for path in (ROOT / package).glob(pattern)}
        missing = [
            str(path.relative_to(ROOT))
            for path in (ROOT / package).rglob("*.lua")
            if path not in shipped
        ]
        assert missing == [], f"add to [tool.setuptools.package-data] {package}: {missing}"


# --- every product script, as its module builds it: loaded, then run ---


async def runs_enqueue(redis) -> None:
    enqueuer = Enqueuer(redis, SETTINGS)
    first = await enqueuer.enqueue(REQUEST)
    again = await enqueuer.enqueue(REQUEST)
    assert first.created and (again.handover_id, again.created) == (first.handover_id, False)


async def runs_update(redis) -> None:
    handover_id = await stored_handover(redis)
    store = HandoverStore(redis, 3600)
    assert await store.mark_succeeded(handover_id, "KD1", None)
    record = await store.get(handover_id)
    assert record is not None and record.state is Status.SUCCEEDED


async def runs_begin_run(redis) -> None:
    handover_id = await stored_handover(redis)
    start = await HandoverStore(redis, 3600).begin_run(
        handover_id, CONVERSATION_SID, redis_keys.claim_key(CONVERSATION_SID), "run", 5000
    )
    assert start.outcome == CLAIM_HELD
    assert start.record is not None and start.record.state is Status.RUNNING


async def runs_hand_back(redis) -> None:
    handover_id = await stored_handover(redis, Status.SUCCEEDED)
    store = HandoverStore(redis, 3600)
    task_sid = "WT" + "ab" * 16
    first = await store.record_end(handover_id, "task.completed", task_sid, None)
    again = await store.record_end(handover_id, "task.deleted", task_sid, None)
    assert (first.outcome, again.outcome) == (EndOutcome.RECORDED, EndOutcome.DUPLICATE)
    missing = await store.record_end(new_handover_id(), "task.completed", task_sid, None)
    assert missing.outcome is EndOutcome.MISSING


async def runs_replay(redis) -> None:
    handover_id = await stored_handover(redis, Status.FAILED)
    assert (await Replayer(redis, SETTINGS).replay(new_handover_id())).refusal is Refusal.MISSING
    assert (await Replayer(redis, SETTINGS).replay(handover_id)).replayed


async def runs_pick(redis) -> None:
    await redis.zadd(redis_keys.QUEUE_NAME, {"ho_ready": 1, "ho_later": 2**50})
    picked = await redis.register_script(PICK_SCRIPT)(
        keys=[redis_keys.QUEUE_NAME, redis_keys.FLEX_API_RATE_KEY],
        args=[int(time.time() * 1000), 5, 5000, 100, *pick_gate(10)],
    )
    assert picked == ["ho_ready", "1"]
    assert await redis.exists(redis_keys.arq_in_progress_key("ho_ready")) == 1


async def runs_token_bucket(redis) -> None:
    limiter = FlexRateLimit(redis, 10)
    assert await limiter.take(1.0) == (True, 0.0)


async def runs_release_claim(redis) -> None:
    key = redis_keys.claim_key(CONVERSATION_SID)
    await redis.set(key, "mine")
    assert not await ClaimReleaser(redis).release(ClaimRelease(key, "not mine"))
    assert await ClaimReleaser(redis).release(ClaimRelease(key, "mine"))


async def runs_voice_handoff(redis) -> None:
    recorder = VoiceRecorder(redis, 3600)
    call = HandoverRequest("", REQUEST.identity, "default", kind="voice", call_sid="CA" + "1" * 32)
    first = await recorder.record(new_handover_id(), call, time.time(), None)
    again = await recorder.record(new_handover_id(), call, time.time(), None)
    assert first.created and (again.handover_id, again.created) == (first.handover_id, False)


async def runs_summary(redis) -> None:
    now = time.time()
    await redis.zadd(redis_keys.QUEUE_NAME, {"ho_ready": 1, "ho_later": now * 1000 + 60_000})
    summary = (await SummaryReader(redis, ("default",)).read(now)).to_public()
    assert summary["counts"]["queued"] == 1 and summary["counts"]["retrying"] == 1
    assert len(summary["throughput"]["buckets"]) == 60


async def stored_handover(redis, state: Status = Status.QUEUED) -> str:
    handover_id = new_handover_id()
    record = new_handover_record(handover_id, REQUEST, time.time())
    await redis.hset(redis_keys.handover_key(handover_id), mapping={**record, "state": state.value})
    return handover_id


async def runs_migrate_job(redis) -> None:
    await redis.zadd(LEGACY_QUEUE, {"ho_old": 7})
    await redis.set("arq:job:ho_old", "job")
    keys = [LEGACY_QUEUE, redis_keys.QUEUE_NAME, "arq:job:ho_old", "arq:job:new"]
    keys += ["arq:in-progress:ho_old", "arq:in-progress:new", "arq:retry:ho_old", "arq:retry:new"]
    script = redis.register_script(MIGRATE_JOB_SCRIPT)
    assert await script(keys=keys, args=["ho_old", "new"]) == 1
    assert await redis.zrange(redis_keys.QUEUE_NAME, 0, -1, withscores=True) == [("new", 7.0)]
    assert await redis.get("arq:job:new") == "job"
    assert await script(keys=keys, args=["ho_old", "new"]) == 0


SCRIPTS: dict[str, tuple[str, Callable[[Any], Awaitable[None]]]] = {
    "shared/lua/enqueue.lua": (enqueue_script(SETTINGS), runs_enqueue),
    "shared/lua/update.lua": (UPDATE_SCRIPT, runs_update),
    "shared/lua/begin_run.lua": (BEGIN_SCRIPT, runs_begin_run),
    "shared/lua/replay.lua": (REPLAY_SCRIPT, runs_replay),
    "shared/lua/hand_back.lua": (HAND_BACK_SCRIPT, runs_hand_back),
    "shared/lua/voice_handoff.lua": (voice_script(3600, 3600), runs_voice_handoff),
    "shared/lua/summary.lua": (SUMMARY_SCRIPT, runs_summary),
    "shared/lua/migrate_job.lua": (MIGRATE_JOB_SCRIPT, runs_migrate_job),
    "worker/lua/pick.lua": (PICK_SCRIPT, runs_pick),
    "worker/lua/token_bucket.lua": (TOKEN_BUCKET_SCRIPT, runs_token_bucket),
    "worker/lua/release_claim.lua": (RELEASE_SCRIPT, runs_release_claim),
}


def test_every_product_script_is_checked_here():
    assert sorted(SCRIPTS) == [str(path.relative_to(ROOT)) for path in product_scripts()]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
async def test_each_product_script_loads_and_runs(redis, name):
    source, run = SCRIPTS[name]
    assert source.endswith((ROOT / name).read_text())
    await redis.script_load(source)  # a syntax error fails here
    await run(redis)


def test_a_library_function_is_put_only_before_the_scripts_that_call_it():
    definition = "local function compare_and_delete("
    assert definition in RELEASE_SCRIPT and definition in UPDATE_SCRIPT
    assert definition not in BEGIN_SCRIPT and definition not in PICK_SCRIPT


# --- the header ---


@pytest.mark.parametrize(
    "value",
    ["arq:in-progress:", "it's \\ a\nline\x00\x7f", "ü €", "", 0, -7, 2**53, 0.1, 1e300, True],
)
async def test_a_lua_literal_reads_back_as_the_value(redis, value):
    reply = await redis.eval(
        f"local v = {lua_literal(value)}\n"
        "if type(v) == 'number' then return string.format('%.17g', v) end\n"
        "return tostring(v)",
        0,
    )
    if isinstance(value, bool):
        assert reply == str(value).lower()
    elif isinstance(value, str):
        assert reply == value
    else:
        assert float(reply) == value


async def test_the_header_names_the_states_and_the_arq_prefix(redis):
    assert SHARED_CONSTANTS["ARQ_IN_PROGRESS_PREFIX"] == redis_keys.ARQ_IN_PROGRESS_PREFIX
    probe = script("worker", "release_claim.lua").replace(
        "return compare_and_delete(KEYS[1], ARGV[1])",
        "return {STATE.QUEUED, STATE.SUCCEEDED, tostring(LIVE.retrying), tostring(FINAL.running)}",
    )
    assert await redis.eval(probe, 0) == ["queued", "succeeded", "true", "nil"]


def test_a_constant_must_be_a_lua_name_with_a_lua_value():
    with pytest.raises(ValueError):
        script("worker", "pick.lua", {"not a name": 1})
    with pytest.raises(ValueError):
        script("worker", "pick.lua", {"end": 1})
    with pytest.raises(ValueError):
        lua_literal(float("inf"))
    with pytest.raises(TypeError):
        lua_literal(None)  # type: ignore[arg-type]  # the point: a type it refuses

"""Lua scripts as Redis runs them: a `.lua` file of a package's `lua/` folder behind a header.

Why this exists: the scripts are files, so they read, diff and lint as Lua, and they
ship as package data (pyproject.toml) read once through `importlib.resources`, from a
wheel as from a checkout. No script spells a state name, an arq key prefix or a
deployment's setting: the header declares them as Lua locals, from the `Status` enum
and `SHARED_CONSTANTS` for every script and from the caller for a few (the enqueue
script's settings, the records' TTLs). A function in `shared/lua/lib/`
(`compare_and_delete`, `add_recent`) is written once and put in the header of each
script that calls it.

Line numbers in a script's error count from the top of the header.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from importlib.resources import files

from shared import redis_keys
from shared.model import FINAL_STATES, Status

LuaValue = bool | int | float | str | Mapping[str, "LuaValue"]

SHARED_CONSTANTS: dict[str, LuaValue] = {
    # STATE.QUEUED == 'queued', ...
    "STATE": {status.name: status.value for status in Status},
    # LIVE[state] / FINAL[state]: true for the states of a handover still / no longer going.
    "LIVE": {status.value: True for status in Status if status not in FINAL_STATES},
    "FINAL": {status.value: True for status in Status if status in FINAL_STATES},
    # The two key prefixes scripts build keys from, each script's header says why:
    # arq's in-progress keys (worker/lua/pick.lua) and the status record the
    # conversation's pointer names (shared/lua/enqueue.lua). Every other key is in KEYS.
    "ARQ_IN_PROGRESS_PREFIX": redis_keys.ARQ_IN_PROGRESS_PREFIX,
    "HANDOVER_KEY_PREFIX": redis_keys.HANDOVER_KEY_PREFIX,
    # How many of the recent index's oldest entries each new one may prune
    # (shared/lua/lib/add_recent.lua): more than one, so a backlog of them drains.
    "RECENT_PRUNE": 2,
    # How many expired entries of the failed index a failure may remove
    # (shared/lua/update.lua): a bound on one write's work, far above one a failure.
    "FAILED_PRUNE": 100,
    # The hand-back jobs' ids in the arq queue (shared/lua/summary.lua tells them apart).
    "HAND_BACK_JOB_PREFIX": redis_keys.HAND_BACK_JOB_PREFIX,
    # A delivery job's id is HANDOVER_JOB_PREFIX .. its handover id (redis_keys.py).
    "HANDOVER_JOB_PREFIX": redis_keys.HANDOVER_JOB_PREFIX,
}

_LIBRARY_PACKAGE = "shared"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = frozenset(
    {
        "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if", "in",
        "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    }
)  # fmt: skip


def script(package: str, name: str, constants: Mapping[str, LuaValue] | None = None) -> str:
    """`<package>/lua/<name>` with its header: the shared constants, `constants`,
    then the library functions the script calls."""
    body = _read(package, name)
    header = [_declarations(SHARED_CONSTANTS), _declarations(constants or {})]
    header += [source for function, source in _library().items() if _calls(body, function)]
    return "".join(header) + body


def lua_literal(value: LuaValue) -> str:
    """`value` as a Lua expression: a number, a boolean, a string, or a table of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no Lua literal for {value!r}")
        return repr(value)
    if isinstance(value, str):
        return _lua_string(value)
    if isinstance(value, Mapping):
        fields = ", ".join(
            f"{_table_key(key)} = {lua_literal(item)}" for key, item in value.items()
        )
        return "{" + fields + "}"
    raise TypeError(f"no Lua literal for a {type(value).__name__}")


def _declarations(constants: Mapping[str, LuaValue]) -> str:
    lines = []
    for name, value in constants.items():
        if not _IDENTIFIER.fullmatch(name) or name in _KEYWORDS:
            raise ValueError(f"not a Lua name: {name!r}")
        lines.append(f"local {name} = {lua_literal(value)}\n")
    return "".join(lines)


def _table_key(key: str) -> str:
    if _IDENTIFIER.fullmatch(key) and key not in _KEYWORDS:
        return key
    return f"[{_lua_string(key)}]"


def _lua_string(text: str) -> str:
    """Printable ASCII as it is; every other byte, quote and backslash as `\\ddd`."""
    escaped = "".join(
        chr(byte) if 0x20 <= byte < 0x7F and byte not in b"'\\" else f"\\{byte:03d}"
        for byte in text.encode("utf-8")
    )
    return f"'{escaped}'"


def _calls(body: str, function: str) -> bool:
    return re.search(rf"\b{re.escape(function)}\s*\(", body) is not None


@functools.cache
def _read(package: str, name: str) -> str:
    return files(package).joinpath("lua", *name.split("/")).read_text(encoding="utf-8")


@functools.cache
def _library() -> dict[str, str]:
    """`shared/lua/lib/<function>.lua`, by function name: each defines that local function."""
    folder = files(_LIBRARY_PACKAGE).joinpath("lua", "lib")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".lua"))
    return {name.removesuffix(".lua"): _read(_LIBRARY_PACKAGE, f"lib/{name}") for name in names}

"""The fault controls as `flex-handover simulator --help` shows them, generated
from the simulator itself: every /__sim route the app serves (with its handler's
docstring), every option of `Fault` / `fail_next`, of `next_channels`, of
`RateLimit`, of a seeded Conversation and of a TaskRouter event, each with its
default and its line of FAULT_HELP / CHANNEL_HELP / RATE_LIMIT_HELP / SEED_HELP /
EVENT_HELP. A new route or option shows up by itself, so the help cannot fall
behind the code."""

from __future__ import annotations

import inspect
import json
import textwrap
from dataclasses import MISSING, fields
from typing import Any

from standins.flex_simulator.app import FlexSimulator
from standins.flex_simulator.conversations import SEED_HELP
from standins.flex_simulator.events import EVENT_HELP, EventRequest
from standins.flex_simulator.faults import (
    CHANNEL_HELP,
    FAULT_HELP,
    FAULT_OPTIONS,
    Fault,
)
from standins.flex_simulator.rate_limit import RATE_LIMIT_HELP, RateLimit
from standins.flex_simulator.voice import VOICE_DEFAULTS, VOICE_HELP

_OPTION_COLUMN = 26
_HELP_WIDTH = 79


def fault_options() -> list[tuple[str, Any]]:
    """(name, default) of each `POST /__sim/faults` option, in `fail_next`'s order."""
    parameters = inspect.signature(FlexSimulator.fail_next).parameters
    defaults = {field.name: field.default for field in fields(Fault)}
    defaults.update(
        (name, parameter.default)
        for name, parameter in parameters.items()
        if name != "self" and parameter.default is not inspect.Parameter.empty
    )
    order = [name for name in parameters if name in FAULT_OPTIONS]
    order += sorted(FAULT_OPTIONS - set(order))
    return [(name, defaults.get(name)) for name in order]


def channel_options() -> list[tuple[str, Any]]:
    """(name, default) of each `POST /__sim/channels` option, in `next_channels`' order."""
    parameters = inspect.signature(FlexSimulator.next_channels).parameters
    return [
        (name, None if parameter.default is inspect.Parameter.empty else parameter.default)
        for name, parameter in parameters.items()
        if name != "self"
    ]


def rate_limit_options() -> list[tuple[str, Any]]:
    """(name, default) of each `PUT /__sim/rate_limit` option."""
    return [("rps", None)] + [
        (field.name, field.default) for field in fields(RateLimit) if field.name != "rps"
    ]


def conversation_options() -> list[tuple[str, Any]]:
    """(name, default) of each `POST /__sim/conversations/{CH}` option."""
    defaults: dict[str, Any] = {"attributes": "{}", "state": "active", "missing": False}
    defaults.update(webhooks=[], messages=[])
    return [(name, defaults.get(name)) for name in SEED_HELP]


def event_options() -> list[tuple[str, Any]]:
    """(name, default) of each `POST /__sim/tasks/{WT}/events` option."""
    return [
        (field.name, None if field.default is MISSING else field.default)
        for field in fields(EventRequest)
    ]


def voice_options() -> list[tuple[str, Any]]:
    """(name, default) of each `POST /__sim/voice/handoff` option."""
    return [(name, VOICE_DEFAULTS.get(name)) for name in VOICE_HELP]


def control_routes() -> list[tuple[str, str, str]]:
    """(method, path, what it does) of every /__sim route the simulator serves."""
    routes = []
    for route in FlexSimulator().app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/__sim/") and route.method != "HEAD":
            doc = inspect.getdoc(route.handler) or ""
            routes.append((route.method, path, doc.split("\n\n")[0].replace("\n", " ")))
    return routes


def control_help() -> str:
    """The fault controls, for `flex-handover simulator --help`."""
    lines = ["fault controls (HTTP on the simulator's own port, no authentication):"]
    options = {("POST", "/__sim/faults"): (fault_options(), FAULT_HELP)}
    options["POST", "/__sim/channels"] = (channel_options(), CHANNEL_HELP)
    options["PUT", "/__sim/rate_limit"] = (rate_limit_options(), RATE_LIMIT_HELP)
    options["POST", "/__sim/conversations/{sid}"] = (conversation_options(), SEED_HELP)
    options["POST", "/__sim/tasks/{task_sid}/events"] = (event_options(), EVENT_HELP)
    options["POST", "/__sim/voice/handoff"] = (voice_options(), VOICE_HELP)
    for method, path, doc in control_routes():
        lines.append(_help_row(f"  {method} {path}", doc))
        if (method, path) in options:
            described, texts = options[method, path]
            lines.append("      JSON options, name=default:")
            for name, default in described:
                shown = name if default is None else f"{name}={_json_or_repr(default)}"
                lines.append(_help_row(f"        {shown}", texts.get(name, "")))
    lines += [
        "",
        "examples:",
        '  curl -X POST localhost:8081/__sim/faults -d \'{"status": 503, "count": 2}\'',
        '  curl -X POST localhost:8081/__sim/faults -d \'{"status":429,"retry_after":3}\'',
        "  curl -X PUT localhost:8081/__sim/rate_limit -d '{\"rps\": 5}'",
        '  curl -X POST localhost:8081/__sim/channels -d \'{"statuses": ["setup", "failed"]}\'',
        "  curl -X POST localhost:8081/__sim/faults \\",
        '    -d \'{"route": "messages", "after_create": true, "reset": true}\'',
        "  curl -X POST localhost:8081/__sim/conversations/CH… \\",
        '    -d \'{"webhooks": [{"url": "https://bot.example/", "filters": ["onMessageAdded"]}]}\'',
        "  curl -X POST localhost:8081/__sim/tasks/WT…/events \\",
        '    -d \'{"event_type": "task.completed", "url": "http://127.0.0.1:8080/webhooks/taskrouter"}\'',
        "  curl -X POST localhost:8081/__sim/voice/handoff \\",
        '    -d \'{"url": "http://127.0.0.1:8080/voice/handoff", "handoff_data": {"reason": "refund"}}\'',
        '  flex-handover simulator --fault \'{"status": 503, "count": 2}\'  # at start-up',
    ]
    return "\n".join(lines)


def _json_or_repr(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _help_row(left: str, text: str) -> str:
    """`left`, then `text` wrapped in a column of its own (as argparse lays out options)."""
    if not text:
        return left
    indent = " " * _OPTION_COLUMN
    wrapped = textwrap.wrap(text, _HELP_WIDTH - _OPTION_COLUMN)
    first = left.ljust(_OPTION_COLUMN) + wrapped[0]
    if len(left) >= _OPTION_COLUMN - 1:
        first = f"{left}\n{indent}{wrapped[0]}"
    return "\n".join([first, *(indent + line for line in wrapped[1:])])

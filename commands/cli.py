"""The `flex-handover` command: api, worker, dev, the local Flex simulator, and
the operator's `failed` and `replay` for dead letters."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import logging
import sys
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from shared import deadletters
from shared.deadletters import DEFAULT_LIMIT, MAX_LIMIT
from shared.listening import CannotListen
from shared.logging import configure_logging, redact
from standins.redis_server import RedisServerError
from shared.settings import Settings, SettingsError

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("flex_handover")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
ERROR_COLUMN_WIDTH = 120  # the full error is in --json


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="flex-handover",
        description="Hand AI-agent conversations to Twilio Flex, acknowledged in milliseconds.",
        epilog="Settings come from the environment (see .env.example); "
        "`flex-handover COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    api = commands.add_parser(
        "api", help="serve the tool endpoint (needs REDIS_URL, FLEX_WORKFLOW_SID, a tool token)"
    )
    _add_listen_options(api)
    api.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        help="processes sharing the port (SO_REUSEPORT), about one per core; default 1",
    )
    worker = commands.add_parser(
        "worker", help="deliver queued handovers to Flex (an arq worker)"
    )
    worker.add_argument(
        "--check",
        action="store_true",
        help="health check: exit 0 if a worker on this host recorded its health in Redis "
        "within the last few seconds, else 1 (needs only REDIS_URL)",
    )
    dev = commands.add_parser(
        "dev",
        help="API and worker in one process; starts its own Redis and a local Flex "
        "simulator when REDIS_URL or Twilio credentials are unset",
    )
    _add_listen_options(dev)
    _add_simulator_parser(commands)
    failed = commands.add_parser(
        "failed", help="list failed handovers, newest first, with their last error "
        "(needs only REDIS_URL)"
    )
    failed.add_argument(
        "--limit",
        type=_positive_int,
        default=DEFAULT_LIMIT,
        help=f"default {DEFAULT_LIMIT}, at most {MAX_LIMIT}",
    )
    failed.add_argument("--before", help="the cursor printed under the previous page")
    failed.add_argument("--json", action="store_true", help="print the public records as JSON")
    replay = commands.add_parser(
        "replay", help="queue failed handovers again (needs only REDIS_URL; exit 1 if "
        "any is refused)"
    )
    replay.add_argument("handover_ids", nargs="+", metavar="ID")
    return parser


def _add_simulator_parser(commands: argparse._SubParsersAction) -> None:
    """`simulator`: start-up options here; the fault controls in the epilog, made
    from the simulator's own routes and options (imported only to show them)."""
    simulator = commands.add_parser(
        "simulator",
        help="run the local Flex API simulator on its own (no Twilio account)",
        description="A stand-in for the Flex, Conversations and TaskRouter APIs the worker\n"
        "calls, with faults on demand. Any credentials are accepted.",
        epilog=_simulator_controls,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_listen_options(simulator, default_port=8081, any_port=True)
    simulator.add_argument(
        "--fault",
        type=_json_object,
        action="append",
        default=[],
        metavar="JSON",
        help="queue a fault at start-up: the options of POST /__sim/faults (repeatable)",
    )
    simulator.add_argument(
        "--latency",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="answer every successful create this late; default 0",
    )
    simulator.add_argument(
        "--task-visible-after",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="a created Interaction's task shows in TaskRouter this late; default 0",
    )
    simulator.add_argument(
        "--rate-limit-rps",
        type=_non_negative,
        default=0.0,
        metavar="RPS",
        help="answer creates above this rate with 429, as PUT /__sim/rate_limit; default 0: off",
    )
    simulator.add_argument(
        "--rate-limit-retry-after",
        metavar="SECONDS",
        help="Retry-After header on those 429s (seconds or an HTTP date); default none",
    )
    simulator.add_argument(
        "--rate-limit-code",
        type=int,
        default=20429,
        metavar="CODE",
        help="Twilio error code on those 429s (20429, or Flex's 45010); default 20429",
    )


def _simulator_controls() -> str:
    from standins.flex_simulator import control_help

    return control_help()


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog may be a function, called only to show help."""

    def format_help(self) -> str:
        if callable(self.epilog):
            self.epilog = self.epilog()
        return super().format_help()


def _add_listen_options(
    parser: argparse.ArgumentParser, default_port: int = DEFAULT_PORT, *, any_port: bool = False
) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument(
        "--port",
        type=_any_port if any_port else _port,
        default=default_port,
        help=f"default {default_port}" + (" (0: any free port)" if any_port else ""),
    )


def version() -> str:
    """The installed package's version (pyproject.toml's, through the package metadata)."""
    try:
        return importlib.metadata.version("flex-handover")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """The console script. Exit 2 when it cannot start (usage, settings, a port
    that cannot be bound, Redis out of reach for failed/replay), one line each."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # what to type next, rather than "COMMAND is required"
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "api":
            return run_api(args.host, args.port, args.processes)
        if args.command == "worker":
            return check_worker() if args.check else run_worker()
        if args.command == "failed":
            return _run_operator(list_failed(args.limit, args.before, as_json=args.json))
        if args.command == "replay":
            return _run_operator(replay(args.handover_ids))
        if args.command == "dev":
            from commands.dev import run_dev

            return run_dev(args.host, args.port)
        return run_simulator(args)
    except (SettingsError, CannotListen, RedisServerError) as exc:
        print(f"flex-handover {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def run_api(host: str, port: int, processes: int = 1) -> int:
    from api.server import serve, serve_processes

    settings = Settings.from_env(role="api")  # checked here, before any child starts
    configure_logging(settings.log_level)
    if processes > 1:
        return serve_processes(host, port, processes)
    serve(settings, host, port)  # logs "listening" once the port is bound
    return 0


def run_simulator(args: argparse.Namespace) -> int:
    from standins.flex_simulator import FlexSimulator
    from standins.flex_simulator import run_simulator as run

    options = {
        "latency": args.latency,
        "task_visible_after": args.task_visible_after,
        "rate_limit_rps": args.rate_limit_rps,
        "rate_limit_retry_after": _number_or_text(args.rate_limit_retry_after),
        "rate_limit_code": args.rate_limit_code,
    }
    try:  # the simulator's own checks, before anything starts
        simulator = FlexSimulator(**options)
        for fault in args.fault:
            simulator.add_fault(fault)
    except ValueError as exc:
        print(f"flex-handover simulator: {exc}", file=sys.stderr)
        return 2
    configure_logging("INFO")
    run(args.host, args.port, faults=args.fault, **options)
    return 0


def run_worker() -> int:
    from worker.main import run_worker as run

    settings = Settings.from_env(role="worker")
    configure_logging(settings.log_level)
    asyncio.run(run(settings))
    return 0


def check_worker() -> int:
    """`flex-handover worker --check`: one line, exit 0 (healthy) or 1."""
    from worker.health import check

    settings = Settings.from_env(role="operator")
    healthy, message = asyncio.run(check(settings.redis_url or ""))
    print(redact(message), file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


def _run_operator(command: Coroutine[Any, Any, int]) -> int:
    """Run `failed` or `replay`; an unreachable Redis is one line, not a traceback."""
    from redis.exceptions import RedisError

    try:
        return asyncio.run(command)
    except (RedisError, OSError) as exc:
        print(f"flex-handover: cannot use Redis (REDIS_URL): {redact(str(exc))}", file=sys.stderr)
        return 2


async def list_failed(limit: int, before: str | None, *, as_json: bool) -> int:
    """`flex-handover failed`: the API's list, as a table or the same JSON."""
    settings = Settings.from_env(role="operator")
    async with _operator_redis(settings) as redis:
        try:
            page = await deadletters.list_failed(redis, limit, before)
        except ValueError as exc:
            print(f"flex-handover failed: {exc}", file=sys.stderr)
            return 2
    records = [record.to_public() for record in page.handovers]
    if as_json:
        print(json.dumps({"handovers": records, "next": page.next}, indent=2))
        return 0
    if not records:
        print("No failed handovers.")
        return 0
    print(_table(records))
    if page.next:
        print(f"\nMore: flex-handover failed --before {page.next}")
    return 0


async def replay(handover_ids: Sequence[str]) -> int:
    """`flex-handover replay ID…`: one line per id; 1 if any was refused."""
    settings = Settings.from_env(role="operator")
    refused = 0
    async with _operator_redis(settings) as redis:
        for handover_id in handover_ids:
            result = await deadletters.replay(redis, settings, handover_id)
            if result.replayed:
                print(f"{handover_id}: replayed, queued (replay {result.record.replays})")
            else:
                refused += 1
                print(f"{handover_id}: refused ({result.refusal.value}): {result.message}")
    return 1 if refused else 0


@contextlib.asynccontextmanager
async def _operator_redis(settings: Settings) -> AsyncIterator[Redis]:
    """A Redis client for one operator command, closed when it is done."""
    from shared.connections import create_redis

    redis = create_redis(settings.redis_url or "")
    try:
        yield redis
    finally:
        await redis.aclose()


_COLUMNS = (
    ("HANDOVER", lambda r: r["handover_id"]),
    ("FAILED AT (UTC)", lambda r: (r["finished_at"] or "")[:19].replace("T", " ")),
    ("CONVERSATION", lambda r: r["conversation_sid"]),
    ("IDENTITY", lambda r: r["identity"]),
    ("TARGET", lambda r: r["target"]),
    ("ATTEMPTS", lambda r: str(r["attempts"])),
    ("LAST ERROR", lambda r: _error_text(r["error"])),
)


def _table(records: list[dict[str, Any]]) -> str:
    """Left-aligned columns from the public (masked) records."""
    rows = [[name for name, _ in _COLUMNS]]
    rows += [[cell(record) for _, cell in _COLUMNS] for record in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    return "\n".join(
        "  ".join([*(value.ljust(width) for value, width in zip(row, widths)), row[-1]]).rstrip()
        for row in rows
    )


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    origin = " ".join(str(part) for part in (error["status"], error["code"]) if part is not None)
    text = f"[{origin}] {error['message']}" if origin else error["message"]
    if len(text) > ERROR_COLUMN_WIDTH:
        text = text[: ERROR_COLUMN_WIDTH - 1] + "…"
    return text


def _port(raw: str) -> int:
    return _port_in(raw, 1)


def _any_port(raw: str) -> int:
    return _port_in(raw, 0)


def _port_in(raw: str, lowest: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not lowest <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number, {lowest}-65535, got {raw!r}")
    return value


def _non_negative(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {raw!r}")
    return value


def _number_or_text(raw: str | None) -> str | float | None:
    """A Retry-After value as given: seconds as a number, anything else (an HTTP date) as text."""
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return raw


def _json_object(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object such as '{{\"status\": 503, \"count\": 2}}', got {raw!r}"
        )
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {raw!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())

"""The `flex-handover` console script: the parser and the dispatch, nothing more.

Each command is a subparser whose `run` default hands the parsed options to the
code that does the work: api/ and worker/ (imported only when their command
runs, so `flex-handover --help` stays fast), the Flex simulator in standins/,
`commands.dev` (the one-command local stack) and `commands.operator_commands`
(`failed`, `list` and `replay`), `commands.preflight` (`check`). A new command is one
more `_add_…` call in `build_parser`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import sys
from collections.abc import Callable, Sequence
from typing import Any

from commands import arguments
from shared import event_loop
from shared.handover_list import DEFAULT_LIMIT, LISTABLE_STATES, MAX_LIMIT
from shared.listening import CannotListen
from shared.logging import configure_logging, redact
from shared.settings import Settings, SettingsError
from standins.redis_server import RedisServerError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080

Command = Callable[[argparse.Namespace], int]
"""What a subparser's `run` default is: the parsed options in, the exit code out."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="flex-handover",
        description="Hand AI-agent conversations to Twilio Flex, acknowledged in milliseconds.",
        epilog="Settings come from the environment (see .env.example); "
        "`flex-handover COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_api(commands)
    _add_worker(commands)
    _add_dev(commands)
    _add_simulator(commands)
    _add_failed(commands)
    _add_list(commands)
    _add_replay(commands)
    _add_migrate_keys(commands)
    _add_check(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The console script. Exit 2 when it cannot start (usage, settings, a port
    that cannot be bound, Redis out of reach for failed/replay), one line each."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # what to type next, rather than "COMMAND is required"
        parser.print_help(sys.stderr)
        return 2
    run: Command = args.run
    try:
        return run(args)
    except (SettingsError, CannotListen, RedisServerError) as exc:
        print(f"flex-handover {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def version() -> str:
    """The installed package's version (pyproject.toml's, through the package metadata)."""
    try:
        return importlib.metadata.version("flex-handover")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


# --- api ---------------------------------------------------------------------------


def _add_api(commands: argparse._SubParsersAction[_Parser]) -> None:
    api = commands.add_parser(
        "api", help="serve the tool endpoint (needs REDIS_URL, FLEX_WORKFLOW_SID, a tool token)"
    )
    _add_listen_options(api)
    api.add_argument(
        "--processes",
        type=arguments.positive_int,
        default=1,
        help="processes sharing the port (SO_REUSEPORT), about one per core; default 1",
    )
    api.set_defaults(run=run_api)


def run_api(args: argparse.Namespace) -> int:
    from api.server import serve, serve_processes

    settings = Settings.from_env(role="api")  # checked here, before any child starts
    configure_logging(settings.log_level, settings.log_format)
    if args.processes > 1:
        return serve_processes(args.host, args.port, args.processes, metrics=settings.metrics)
    serve(settings, args.host, args.port)  # logs "listening" once the port is bound
    return 0


# --- worker ------------------------------------------------------------------------


def _add_worker(commands: argparse._SubParsersAction[_Parser]) -> None:
    worker = commands.add_parser("worker", help="deliver queued handovers to Flex (an arq worker)")
    worker.add_argument(
        "--check",
        action="store_true",
        help="health check: exit 0 if a worker on this host recorded its health in Redis "
        "within the last few seconds, else 1 (needs only REDIS_URL)",
    )
    worker.set_defaults(run=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    """`flex-handover worker`, or its health check with `--check`."""
    if args.check:
        return check_worker()
    from worker.main import run_worker as run

    settings = Settings.from_env(role="worker")
    configure_logging(settings.log_level, settings.log_format)
    event_loop.run(run(settings))
    return 0


def check_worker() -> int:
    """`flex-handover worker --check`: one line, exit 0 (healthy) or 1."""
    from worker.health import check

    settings = Settings.from_env(role="operator")
    healthy, message = asyncio.run(check(settings.redis))
    print(redact(message), file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


# --- dev ---------------------------------------------------------------------------


def _add_dev(commands: argparse._SubParsersAction[_Parser]) -> None:
    dev = commands.add_parser(
        "dev",
        help="API and worker in one process; starts its own Redis and a local Flex "
        "simulator when REDIS_URL or Twilio credentials are unset",
    )
    _add_listen_options(dev)
    dev.set_defaults(run=run_dev)


def run_dev(args: argparse.Namespace) -> int:
    from commands.dev import run_dev as run

    return run(args.host, args.port)


# --- simulator -----------------------------------------------------------------------


def _add_simulator(commands: argparse._SubParsersAction[_Parser]) -> None:
    """`simulator`: start-up options here; the fault controls in the epilog, made
    from the simulator's own routes and options (imported only to show them)."""
    simulator = commands.add_parser(
        "simulator",
        help="run the local Flex API simulator on its own (no Twilio account)",
        description="A stand-in for the Flex, Conversations and TaskRouter APIs the worker\n"
        "calls, with faults on demand, and for TaskRouter's signed workspace events.\n"
        "Any credentials are accepted unless --account-sid and --auth-token are given.",
        epilog_from=_simulator_controls,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_listen_options(simulator, default_port=8081, any_port=True)
    simulator.add_argument(
        "--fault",
        type=arguments.json_object,
        action="append",
        default=[],
        metavar="JSON",
        help="queue a fault at start-up: the options of POST /__sim/faults (repeatable)",
    )
    simulator.add_argument(
        "--latency",
        type=arguments.non_negative,
        default=0.0,
        metavar="SECONDS",
        help="answer every successful create this late; default 0",
    )
    simulator.add_argument(
        "--task-visible-after",
        type=arguments.non_negative,
        default=0.0,
        metavar="SECONDS",
        help="a created Interaction's task shows in TaskRouter this late; default 0",
    )
    simulator.add_argument(
        "--channel-status",
        default="active",
        metavar="STATUS",
        help="what a created Interaction's channel shows unless POST /__sim/channels "
        "planned otherwise (setup, active, failed, ...); default active",
    )
    simulator.add_argument(
        "--rate-limit-rps",
        type=arguments.non_negative,
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
    simulator.add_argument(
        "--account-sid",
        metavar="SID",
        help="accept only this account SID with --auth-token (default: any credentials)",
    )
    simulator.add_argument(
        "--auth-token",
        metavar="TOKEN",
        help="the auth token that goes with --account-sid, and the key TaskRouter "
        "events are signed with (a local token: never a real Twilio one)",
    )
    simulator.add_argument(
        "--event-callback-url",
        metavar="URL",
        help="where POST /__sim/tasks/{WT}/events sends an event that names no URL "
        "(loopback only), as PUT /__sim/event_callback",
    )
    simulator.set_defaults(run=run_simulator)


def _simulator_controls() -> str:
    from standins.flex_simulator import control_help

    return control_help()


def run_simulator(args: argparse.Namespace) -> int:
    from standins.flex_simulator import FlexSimulator
    from standins.flex_simulator import run_simulator as run

    options = {
        "latency": args.latency,
        "task_visible_after": args.task_visible_after,
        "rate_limit_rps": args.rate_limit_rps,
        "rate_limit_retry_after": arguments.number_or_text(args.rate_limit_retry_after),
        "rate_limit_code": args.rate_limit_code,
        "channel_status": args.channel_status,
        "account_sid": args.account_sid,
        "auth_token": args.auth_token,
        "event_callback_url": args.event_callback_url,
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


# --- failed, list and replay (commands/operator_commands.py) ----------------------------


def _add_failed(commands: argparse._SubParsersAction[_Parser]) -> None:
    failed = commands.add_parser(
        "failed",
        help="list failed handovers, newest first, with their last error (needs only REDIS_URL)",
    )
    failed.add_argument(
        "--limit",
        type=arguments.positive_int,
        default=DEFAULT_LIMIT,
        help=f"default {DEFAULT_LIMIT}, at most {MAX_LIMIT}",
    )
    failed.add_argument("--before", help="the cursor printed under the previous page")
    failed.add_argument("--json", action="store_true", help="print the public records as JSON")
    failed.set_defaults(run=run_failed)


def run_failed(args: argparse.Namespace) -> int:
    from commands.operator_commands import list_failed, run_operator

    return run_operator(list_failed(args.limit, args.before, as_json=args.json))


def _add_list(commands: argparse._SubParsersAction[_Parser]) -> None:
    listing = commands.add_parser(
        "list",
        help="list handovers in a state, or all of them (recent), newest first "
        "(needs only REDIS_URL)",
    )
    listing.add_argument("--state", choices=LISTABLE_STATES, default="recent")
    listing.add_argument("--target", help="only this target's handovers")
    listing.add_argument(
        "--limit",
        type=arguments.positive_int,
        default=DEFAULT_LIMIT,
        help=f"default {DEFAULT_LIMIT}, at most {MAX_LIMIT}",
    )
    listing.add_argument("--before", help="the cursor printed under the previous page")
    listing.add_argument("--json", action="store_true", help="print the public records as JSON")
    listing.set_defaults(run=run_list)


def run_list(args: argparse.Namespace) -> int:
    from commands.operator_commands import list_handovers, run_operator

    return run_operator(
        list_handovers(args.state, args.target, args.limit, args.before, as_json=args.json)
    )


def _add_replay(commands: argparse._SubParsersAction[_Parser]) -> None:
    replay = commands.add_parser(
        "replay",
        help="queue failed handovers again (needs only REDIS_URL; exit 1 if any is refused)",
    )
    replay.add_argument("handover_ids", nargs="+", metavar="ID")
    replay.set_defaults(run=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    from commands.operator_commands import replay, run_operator

    return run_operator(replay(args.handover_ids))


def _add_migrate_keys(commands: argparse._SubParsersAction[_Parser]) -> None:
    migrate = commands.add_parser(
        "migrate-keys",
        help="rename the keys an earlier version wrote before the hash tag (the worker "
        "does it at start; needs only REDIS_URL)",
    )
    migrate.set_defaults(run=run_migrate_keys)


def run_migrate_keys(args: argparse.Namespace) -> int:
    from commands.operator_commands import migrate_keys, run_operator

    return run_operator(migrate_keys())


# --- check (commands/preflight.py) ------------------------------------------------------


def _add_check(commands: argparse._SubParsersAction[_Parser]) -> None:
    check = commands.add_parser(
        "check",
        help="pre-flight check of the worker's settings: Redis and the Twilio reads "
        "(creates nothing); one line per check, exit 0 only when all pass",
    )
    check.set_defaults(run=run_check)


def run_check(args: argparse.Namespace) -> int:
    from commands.preflight import run_check as run

    return run()


# --- parser helpers ------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog may come from a function (`epilog_from`),
    called only to show help: the simulator's is made by importing it."""

    def __init__(self, *args: Any, epilog_from: Callable[[], str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._epilog_from = epilog_from

    def format_help(self) -> str:
        if self._epilog_from is not None:
            self.epilog, self._epilog_from = self._epilog_from(), None
        return super().format_help()


def _add_listen_options(
    parser: argparse.ArgumentParser, default_port: int = DEFAULT_PORT, *, any_port: bool = False
) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument(
        "--port",
        type=arguments.any_port if any_port else arguments.port,
        default=default_port,
        help=f"default {default_port}" + (" (0: any free port)" if any_port else ""),
    )


if __name__ == "__main__":
    sys.exit(main())

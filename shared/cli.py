"""The `flex-handover` command: api, worker, dev and the local Flex simulator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from shared.logging import configure_logging
from shared.settings import Settings, SettingsError

logger = logging.getLogger("flex_handover")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flex-handover",
        description="Hand AI-agent conversations to Twilio Flex, acknowledged in milliseconds.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    api = commands.add_parser("api", help="serve the tool endpoint (needs REDIS_URL)")
    _add_listen_options(api)
    commands.add_parser("worker", help="deliver queued handovers to Flex (an arq worker)")
    dev = commands.add_parser(
        "dev",
        help="API and worker in one process; starts its own Redis and a local Flex "
        "simulator when REDIS_URL or Twilio credentials are unset",
    )
    _add_listen_options(dev)
    simulator = commands.add_parser(
        "simulator", help="run the local Flex API simulator on its own (no Twilio account)"
    )
    _add_listen_options(simulator, default_port=8081)
    return parser


def _add_listen_options(
    parser: argparse.ArgumentParser, default_port: int = DEFAULT_PORT
) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument("--port", type=int, default=default_port, help=f"default {default_port}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "api":
            return run_api(args.host, args.port)
        if args.command == "worker":
            return run_worker()
        if args.command == "dev":
            from shared.dev import run_dev

            return run_dev(args.host, args.port)
        from shared.flex_simulator import run_simulator

        configure_logging("INFO")
        run_simulator(args.host, args.port)
        return 0
    except SettingsError as exc:
        print(f"flex-handover {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def run_api(host: str, port: int) -> int:
    from aiohttp import web

    from api.app import create_app

    settings = Settings.from_env(role="api")
    configure_logging(settings.log_level)
    logger.info("api listening on http://%s:%d", host, port)
    web.run_app(create_app(settings), host=host, port=port, access_log=None, print=None)
    return 0


def run_worker() -> int:
    from worker.main import run_worker as run

    settings = Settings.from_env(role="worker")
    configure_logging(settings.log_level)
    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())

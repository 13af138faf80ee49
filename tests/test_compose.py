"""Static checks of docker-compose.yml, Dockerfile and .dockerignore.

There is no Docker engine on the build machine, so these tests parse the files
and check the things that would otherwise only break at `docker compose up`:
the commands are real subcommands of the `flex-handover` console script, the
api port, healthcheck and published port agree, the worker can be scaled, Redis
persists its queue, and the image runs as non-root. No network is used.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

SCRIPT = "flex-handover"
APP_SERVICES = ("api", "worker")


# --------------------------------------------------------------------------
# Helpers: normalise the several syntaxes Compose accepts for the same thing.
# --------------------------------------------------------------------------


def as_argv(command) -> list[str]:
    """A Compose/Docker command (string or list) as an argv list."""
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), f"unexpected command type: {command!r}"
    return [str(part) for part in command]


def option_value(argv: list[str], option: str) -> str | None:
    """Value of `--opt VALUE` or `--opt=VALUE` in argv, else None."""
    for i, arg in enumerate(argv):
        if arg == option:
            assert i + 1 < len(argv), f"{option} has no value in {argv}"
            return argv[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def env_files(service: dict) -> list[str]:
    value = service.get("env_file")
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    return [item["path"] if isinstance(item, dict) else item for item in value]


def environment(service: dict) -> dict[str, str | None]:
    value = service.get("environment") or {}
    if isinstance(value, dict):
        return {k: (None if v is None else str(v)) for k, v in value.items()}
    result: dict[str, str | None] = {}
    for item in value:
        key, sep, val = item.partition("=")
        result[key] = val if sep else None
    return result


def published_ports(service: dict) -> list[tuple[str, str]]:
    """(published, target) pairs from short ("[ip:]host:container[/proto]")
    or long ({target, published}) port syntax."""
    pairs = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            pairs.append((str(port.get("published", "")), str(port["target"])))
            continue
        spec = str(port).split("/", 1)[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 1:  # container port only: random host port
            pairs.append(("", parts[0]))
        else:
            pairs.append((parts[-2], parts[-1]))
    return pairs


def healthcheck_text(healthcheck: dict) -> str:
    test = healthcheck.get("test")
    return test if isinstance(test, str) else " ".join(str(t) for t in test)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value) -> float:
    """Compose duration ("60s", "1m30s", "500ms") in seconds."""
    text = str(value).strip()
    parts = _DURATION.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {value!r}"
    return sum(float(n) * _UNIT[u] for n, u in parts)


def subcommand_names(parser: argparse.ArgumentParser) -> set[str]:
    names: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            names.update(action.choices)
    return names


def parse_with_cli(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse argv with the real CLI parser; fail (not exit) on a bad command."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports errors by exiting
        pytest.fail(f"`{SCRIPT} {' '.join(argv)}` is rejected by commands.cli (exit {exc.code})")


# --------------------------------------------------------------------------
# Dockerfile parsing (just enough: continuation lines, comments, stages).
# --------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuations joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # comment inside a continuation
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line:
            keyword, _, args = line.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def split_stages(instructions):
    """[(stage_name, base_image, [instructions...])], global ARGs substituted in FROM."""
    global_args: dict[str, str] = {}
    stages: list[tuple[str | None, str, list[tuple[str, str]]]] = []
    for keyword, args in instructions:
        if keyword == "FROM":
            tokens = [t for t in args.split() if not t.startswith("--")]
            image = re.sub(
                r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), tokens[0]
            )
            name = tokens[2] if len(tokens) >= 3 and tokens[1].upper() == "AS" else None
            stages.append((name, image, []))
        elif not stages:
            if keyword == "ARG":
                key, _, default = args.partition("=")
                global_args[key.strip()] = default.strip().strip('"')
        else:
            stages[-1][2].append((keyword, args))
    return stages


def exec_form(args: str, keyword: str) -> list[str]:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"{keyword} should use exec (JSON array) form, got: {args}")
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_assignments(args: str) -> dict[str, str]:
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens)


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


@pytest.fixture(scope="module")
def cli_parser() -> argparse.ArgumentParser:
    # The interface the container commands rely on: commands.cli.build_parser()
    # returns the parser behind the `flex-handover` console script.
    from commands.cli import build_parser

    parser = build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


@pytest.fixture(scope="module")
def stages():
    return split_stages(dockerfile_instructions(DOCKERFILE.read_text()))


@pytest.fixture(scope="module")
def final_stage(stages):
    assert stages, "Dockerfile has no FROM"
    return stages[-1]


def last(instructions, keyword: str) -> str | None:
    found = [args for kw, args in instructions if kw == keyword]
    return found[-1] if found else None


# --------------------------------------------------------------------------
# docker-compose.yml
# --------------------------------------------------------------------------


def test_compose_spec_has_no_version_key(compose):
    assert "version" not in compose, "Compose spec files have no top-level `version:`"


def test_services_exist(services):
    assert {"redis", "api", "worker"} <= set(services)


def test_cli_has_the_subcommands_compose_uses(cli_parser):
    assert {"api", "worker", "dev"} <= subcommand_names(cli_parser)


# ---- redis ---------------------------------------------------------------


def test_redis_persists_with_aof_everysec(services):
    argv = as_argv(services["redis"]["command"])
    assert argv[0] == "redis-server"
    assert option_value(argv, "--appendonly") == "yes"
    assert option_value(argv, "--appendfsync") == "everysec"


def test_redis_data_is_a_declared_named_volume(compose, services):
    declared = set(compose.get("volumes") or {})
    sources = []
    for volume in services["redis"].get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("target") == "/data":
                assert volume.get("type", "volume") == "volume"
                sources.append(volume.get("source"))
        else:
            source, _, rest = str(volume).partition(":")
            if rest.split(":")[0] == "/data":
                sources.append(source)
    assert len(sources) == 1, "redis needs exactly one volume mounted at /data"
    source = sources[0]
    assert source and not source.startswith((".", "/", "~")), f"/data is a bind mount: {source}"
    assert source in declared, f"volume {source!r} is not declared under top-level volumes:"


def test_redis_has_healthcheck(services):
    healthcheck = services["redis"].get("healthcheck")
    assert healthcheck and not healthcheck.get("disable")
    text = healthcheck_text(healthcheck)
    assert "redis-cli" in text and "ping" in text
    for key in ("interval", "timeout"):
        assert duration_seconds(healthcheck[key]) > 0
    assert int(healthcheck["retries"]) >= 1


_REDIS_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2,
                "g": 1000**3, "gb": 1024**3}  # fmt: skip


def redis_bytes(value: str) -> int:
    """A redis.conf memory size ("512mb", "1gb", "100000") in bytes."""
    match = re.fullmatch(r"(\d+)([a-z]*)", value.strip().lower())
    assert match and match.group(2) in _REDIS_UNITS, f"not a Redis memory size: {value!r}"
    return int(match.group(1)) * _REDIS_UNITS[match.group(2)]


def test_redis_memory_is_capped_and_never_evicts(services):
    # Without a cap Redis grows until the host kills it; with an eviction
    # policy it would drop jobs and status records: lost handovers.
    argv = as_argv(services["redis"]["command"])
    maxmemory = option_value(argv, "--maxmemory")
    assert maxmemory, "redis needs --maxmemory"
    assert redis_bytes(maxmemory) > 0, "maxmemory 0 means no cap"
    assert option_value(argv, "--maxmemory-policy") == "noeviction"


def test_redis_memory_cap_leaves_room_beyond_a_full_backlog(services):
    # The measured cost of a queued handover (bench/cost.py --parts bytes): a
    # full default backlog must take at most a tenth of the cap, the rest being
    # for the status records kept HANDOVER_STATUS_TTL_SECONDS.
    from shared.settings import Settings

    measured = json.loads((ROOT / "bench" / "results" / "cost.json").read_text())
    per_handover = measured["bytes"]["bytes_per_queued_handover"]
    maxmemory = redis_bytes(option_value(as_argv(services["redis"]["command"]), "--maxmemory"))
    assert Settings().max_pending * per_handover * 10 <= maxmemory


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512mb", 512 * 1024**2), ("1GB", 1024**3), ("100m", 10**8), ("4096", 4096)],
)
def test_redis_bytes_reads_redis_units(text, expected):
    assert redis_bytes(text) == expected


def test_redis_port_not_published_by_default(services):
    assert not services["redis"].get("ports"), "Redis has no auth: do not publish it by default"


# ---- api and worker --------------------------------------------------------


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_build_from_project_root(services, name):
    build = services[name].get("build")
    context = build.get("context") if isinstance(build, dict) else build
    assert context in (".", "./"), f"{name} should build from the project root"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_command_is_a_real_subcommand(services, cli_parser, name):
    argv = as_argv(services[name]["command"])
    assert argv[0] == name, f"{name} service should run `{SCRIPT} {name}`"
    assert argv[0] in subcommand_names(cli_parser)
    parse_with_cli(cli_parser, argv)


def test_api_listens_on_all_interfaces(services):
    argv = as_argv(services["api"]["command"])
    assert option_value(argv, "--host") == "0.0.0.0", (
        "the CLI defaults to 127.0.0.1, unreachable from outside the container"
    )


def test_api_publishes_the_port_it_listens_on(services):
    port = option_value(as_argv(services["api"]["command"]), "--port")
    assert port == "8080"
    assert ("8080", port) in published_ports(services["api"])


def test_api_healthcheck_probes_its_own_port(services):
    healthcheck = services["api"].get("healthcheck")
    assert healthcheck and not healthcheck.get("disable")
    text = healthcheck_text(healthcheck)
    port = option_value(as_argv(services["api"]["command"]), "--port")
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/(?:readyz|healthz))\b", text)
    assert match, f"api healthcheck should GET /readyz or /healthz: {text}"
    assert match.group(1) == port
    # slim images have no curl/wget: the probe must use what the image has.
    assert "curl" not in text and "wget" not in text


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_use_env_file(services, name):
    assert ".env" in [Path(p).as_posix().removeprefix("./") for p in env_files(services[name])]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_point_at_the_redis_service(services, name):
    url = environment(services[name]).get("REDIS_URL")
    assert url, f"{name} must set REDIS_URL (localhost is not Redis inside a container)"
    parts = urlsplit(url)
    assert parts.scheme in ("redis", "rediss")
    assert parts.hostname == "redis" and parts.hostname in services
    assert parts.port in (None, 6379)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_healthy_redis(services, name):
    depends_on = services[name].get("depends_on")
    assert isinstance(depends_on, dict), "use the long depends_on form to set a condition"
    assert depends_on.get("redis", {}).get("condition") == "service_healthy"


@pytest.mark.parametrize("name", ("redis", *APP_SERVICES))
def test_services_restart_unless_stopped(services, name):
    # The worker in particular relies on it: arq exits when Redis goes away.
    assert services[name].get("restart") == "unless-stopped"


def test_worker_is_scalable(services):
    worker = services["worker"]
    assert "container_name" not in worker, "container_name breaks --scale worker=N"
    assert not worker.get("ports"), "fixed host ports break --scale worker=N"


def test_worker_gets_time_to_finish_in_flight_handovers(services):
    grace = services["worker"].get("stop_grace_period")
    assert grace is not None, "the Docker default (10s) can cut a handover mid-retry"
    assert duration_seconds(grace) >= 30


def test_worker_stop_grace_period_outlasts_its_own_shutdown_grace(services):
    # Docker's SIGKILL must not land while the worker is still finishing or
    # re-queuing handovers (WORKER_SHUTDOWN_GRACE_SECONDS, then a few seconds to close).
    from shared.settings import Settings

    configured = environment(services["worker"]).get("WORKER_SHUTDOWN_GRACE_SECONDS")
    shutdown_grace = float(configured or Settings().worker_shutdown_grace_seconds)
    stop_grace = duration_seconds(services["worker"]["stop_grace_period"])
    assert stop_grace >= shutdown_grace + 10


def test_worker_healthcheck_runs_the_worker_check(services, cli_parser):
    # Unhealthy while the worker cannot reach Redis or Redis refuses its
    # writes: `flex-handover worker --check` reads the health record it keeps.
    healthcheck = services["worker"].get("healthcheck")
    assert healthcheck and not healthcheck.get("disable"), "the worker needs a health check"
    test = healthcheck["test"]
    assert isinstance(test, list) and test[0] == "CMD", "exec form: no shell in the image"
    assert test[1] == SCRIPT
    args = parse_with_cli(cli_parser, test[2:])
    assert (args.command, args.check) == ("worker", True)
    assert duration_seconds(healthcheck["timeout"]) < duration_seconds(healthcheck["interval"])


def test_worker_does_not_inherit_the_api_http_healthcheck(services, final_stage):
    # The image HEALTHCHECK probes the API over HTTP; the worker serves none.
    dockerfile_check = last(final_stage[2], "HEALTHCHECK")
    if dockerfile_check is None or "http" not in dockerfile_check:
        return
    healthcheck = services["worker"].get("healthcheck")
    assert healthcheck, "worker would inherit the image's HTTP healthcheck and be unhealthy"
    assert healthcheck.get("disable") or "http" not in healthcheck_text(healthcheck)


# --------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------


def test_final_stage_is_python_311_slim(final_stage):
    _, image, _ = final_stage
    assert image.startswith("python:3.11") and "slim" in image, image


def test_entrypoint_is_the_declared_console_script(final_stage, pyproject):
    entrypoint = last(final_stage[2], "ENTRYPOINT")
    assert entrypoint is not None, "final stage has no ENTRYPOINT"
    assert exec_form(entrypoint, "ENTRYPOINT") == [SCRIPT]
    assert SCRIPT in pyproject["project"]["scripts"]


def test_default_cmd_is_a_real_subcommand(final_stage, cli_parser):
    cmd = last(final_stage[2], "CMD")
    assert cmd is not None, "final stage has no CMD"
    argv = exec_form(cmd, "CMD")
    assert argv[0] in subcommand_names(cli_parser)
    parse_with_cli(cli_parser, argv)


def test_default_cmd_serves_the_exposed_port(final_stage):
    argv = exec_form(last(final_stage[2], "CMD"), "CMD")
    assert argv[0] == "api"
    assert option_value(argv, "--host") == "0.0.0.0"
    exposed = {
        p.split("/")[0] for kw, args in final_stage[2] if kw == "EXPOSE" for p in args.split()
    }
    assert option_value(argv, "--port") in exposed


def test_runs_as_non_root(final_stage):
    user = last(final_stage[2], "USER")
    assert user is not None, "final stage has no USER: it would run as root"
    name = user.split(":", 1)[0].strip()
    assert name not in ("root", "0", ""), f"USER {user} is root"


def test_python_is_unbuffered(final_stage):
    env: dict[str, str] = {}
    for kw, args in final_stage[2]:
        if kw == "ENV":
            env.update(env_assignments(args))
    assert env.get("PYTHONUNBUFFERED") == "1", "logs would be buffered and lost on crash"


def test_installs_the_project_with_pip(stages):
    def installs_project(args: str) -> bool:
        tokens = shlex.split(args.replace("&&", " && "))
        if "install" not in tokens:
            return False
        i = tokens.index("install")
        if "pip" not in tokens[:i] and not any(t.endswith("pip") for t in tokens[:i]):
            return False
        return any(t in (".", "./") for t in tokens[i + 1 :])

    installing = [
        name
        for name, _, stage in stages
        if any(kw == "RUN" and installs_project(args) for kw, args in stage)
    ]
    assert installing, "no `RUN pip install .` found"

    final_name, _, final = stages[-1]
    if final_name in installing or (final_name is None and len(stages) == 1):
        return
    # Multi-stage: the final stage must copy the installation from that stage.
    copied_from = {
        m.group(1)
        for kw, args in final
        if kw == "COPY"
        for m in [re.search(r"--from=(\S+)", args)]
        if m
    }
    assert copied_from & set(installing), (
        f"pip install runs in stage(s) {installing} but the final stage copies from {copied_from}"
    )


def test_copies_what_pip_install_needs(stages, pyproject):
    copied: set[str] = set()
    for _, _, stage in stages:
        for kw, args in stage:
            if kw == "COPY" and "--from=" not in args:
                sources = [t for t in shlex.split(args) if not t.startswith("--")][:-1]
                copied.update(s.rstrip("/").removeprefix("./") for s in sources)
    if "." in copied:  # COPY . . copies everything
        return
    packages = pyproject["tool"]["setuptools"]["packages"]  # a subpackage is in its top folder
    needed = {"pyproject.toml", *(name.split(".")[0] for name in packages)}
    readme = pyproject["project"].get("readme")
    if isinstance(readme, str):
        needed.add(readme)  # setuptools fails the build if the readme is missing
    assert needed <= copied, f"not copied into the build: {sorted(needed - copied)}"


def test_image_healthcheck_uses_stdlib_against_healthz(final_stage):
    healthcheck = last(final_stage[2], "HEALTHCHECK")
    assert healthcheck and healthcheck.upper() != "NONE", "no HEALTHCHECK in the final stage"
    assert "urllib" in healthcheck, "python:slim has no curl/wget: probe with urllib"
    exposed = {
        p.split("/")[0] for kw, args in final_stage[2] if kw == "EXPOSE" for p in args.split()
    }
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)/healthz\b", healthcheck)
    assert match and match.group(1) in exposed, healthcheck


# --------------------------------------------------------------------------
# .dockerignore
# --------------------------------------------------------------------------


def test_dockerignore_keeps_secrets_and_junk_out():
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    for required in (".git", ".env", ".venv", ".pytest_cache", "bench/results"):
        assert required in patterns, f".dockerignore should exclude {required}"
    assert "!.env" not in patterns

"""One typed settings object, read from environment variables.

Both processes call `Settings.from_env()` at start-up; every problem found is
reported at once, each naming its variable, so an operator fixes `.env` in one go.
Secret values never appear in an error message or a repr.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

from shared import sids

DEFAULT_TARGET = "default"
DEFAULT_MESSAGE = "I'm transferring you to a human agent now."
TWILIO_FLEX_API = "https://flex-api.twilio.com"
TWILIO_CONVERSATIONS_API = "https://conversations.twilio.com"
TWILIO_TASKROUTER_API = "https://taskrouter.twilio.com"

# "operator": the CLI's failed/replay commands, which talk to Redis only: they
# need REDIS_URL (and the TTLs a replay writes), no targets, neither the API's
# authentication nor Twilio credentials.
Role = Literal["api", "worker", "operator"]
_TARGET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_TASK_CHANNEL = re.compile(r"[A-Za-z0-9_-]{1,64}")
T = TypeVar("T")


class SettingsError(ValueError):
    """Raised with every configuration problem, one line per variable."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Target:
    """A named handover destination: where in TaskRouter the task lands."""

    name: str
    workflow_sid: str
    task_channel: str = "chat"
    priority: int | None = None
    attributes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_api_key: str | None = None
    twilio_api_secret: str | None = field(default=None, repr=False)
    flex_workspace_sid: str | None = None
    flex_api_base_url: str = TWILIO_FLEX_API
    conversations_api_base_url: str = TWILIO_CONVERSATIONS_API
    taskrouter_api_base_url: str = TWILIO_TASKROUTER_API
    targets: Mapping[str, Target] = field(default_factory=lambda: MappingProxyType({}))
    handover_message: str = DEFAULT_MESSAGE
    dedup_seconds: float = 600.0
    max_age_seconds: float = 900.0
    status_ttl_seconds: int = 7 * 24 * 3600
    attempt_timeout_seconds: float = 10.0
    retry_budget_seconds: float = 15.0
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 8.0
    requeue_delay_seconds: float = 30.0
    max_body_bytes: int = 64 * 1024
    tool_tokens: tuple[str, ...] = field(default=(), repr=False)
    admin_tokens: tuple[str, ...] = field(default=(), repr=False)
    verify_twilio_signature: bool = False
    trust_proxy_headers: bool = False
    allow_unauthenticated: bool = False
    rate_limit_per_conversation: int = 5
    rate_limit_per_identity: int = 20
    rate_limit_window_seconds: int = 60
    max_pending: int = 10_000  # live handovers (queued, running, retrying); 0: no cap
    lookup_grace_seconds: float = 5.0
    lookup_interval_seconds: float = 1.0
    flex_api_max_rps: float = 0.0
    worker_concurrency: int = 50
    worker_poll_delay_seconds: float = 0.05
    worker_shutdown_grace_seconds: int = 10
    worker_reconnect_max_seconds: float = 30.0
    log_level: str = "INFO"

    @property
    def run_budget_seconds(self) -> float:
        """How long one run of the handover job may take, everything included:
        the in-job retry budget, an attempt that starts at its end, the
        friendly-name lookup, and one TaskRouter lookup window plus its last
        query."""
        return (
            self.retry_budget_seconds
            + 3 * self.attempt_timeout_seconds
            + self.lookup_grace_seconds
            + 2.0
        )

    @property
    def job_timeout_seconds(self) -> float:
        """arq's per-job timeout: above the run budget.

        A job that hits arq's timeout is failed for good without our status
        being written, so the handover job must always finish first.
        """
        return self.run_budget_seconds + 5.0

    @property
    def recovery_seconds(self) -> float:
        """The longest a handover waits after its worker is killed (SIGKILL):
        arq re-runs a job only when its in-progress key, set for the job
        timeout plus 10 s, expires."""
        return self.job_timeout_seconds + 10.0

    @property
    def claim_ttl_seconds(self) -> int:
        """A delivery claim outlives any run, and expires before arq re-runs a
        killed worker's job."""
        return int(self.job_timeout_seconds) + 1

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every configured value that must never reach a log line
        (`shared.logging.register_secrets`)."""
        redis_password = urlsplit(self.redis_url or "").password
        values = (
            *self.tool_tokens,
            *self.admin_tokens,
            self.twilio_auth_token,
            self.twilio_api_secret,
            redis_password,
            unquote(redis_password) if redis_password else None,
        )
        return tuple(value for value in values if value)

    @property
    def authenticates_tool_calls(self) -> bool:
        return bool(self.tool_tokens) or self.verify_twilio_signature

    @property
    def dedup_key_ttl_seconds(self) -> int:
        """How long the conversation → handover pointer lives.

        Long enough to cover a handover that is still retrying at its max age
        and then the de-duplication window after its success.
        """
        return int(self.max_age_seconds + self.job_timeout_seconds + self.dedup_seconds) + 1

    @property
    def twilio_username(self) -> str | None:
        return self.twilio_api_key or self.twilio_account_sid

    @property
    def twilio_password(self) -> str | None:
        return self.twilio_api_secret if self.twilio_api_key else self.twilio_auth_token

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, role: Role = "api") -> Settings:
        """Read and validate settings; raise SettingsError naming each bad variable."""
        reader = _EnvReader(os.environ if env is None else env)
        settings = cls(
            redis_url=reader.get("REDIS_URL", _redis_url),
            twilio_account_sid=reader.get("TWILIO_ACCOUNT_SID", _sid(sids.ACCOUNT)),
            twilio_auth_token=reader.get("TWILIO_AUTH_TOKEN", _secret),
            twilio_api_key=reader.get("TWILIO_API_KEY", _sid(sids.API_KEY)),
            twilio_api_secret=reader.get("TWILIO_API_SECRET", _secret),
            flex_workspace_sid=reader.get("FLEX_WORKSPACE_SID", _sid(sids.WORKSPACE)),
            flex_api_base_url=reader.get("FLEX_API_BASE_URL", _http_url, TWILIO_FLEX_API),
            conversations_api_base_url=reader.get(
                "CONVERSATIONS_API_BASE_URL", _http_url, TWILIO_CONVERSATIONS_API
            ),
            taskrouter_api_base_url=reader.get(
                "TASKROUTER_API_BASE_URL", _http_url, TWILIO_TASKROUTER_API
            ),
            targets=MappingProxyType(_read_targets(reader)),
            handover_message=reader.get("HANDOVER_MESSAGE", _message, DEFAULT_MESSAGE),
            dedup_seconds=reader.get("HANDOVER_DEDUP_SECONDS", _seconds(0), 600.0),
            max_age_seconds=reader.get("HANDOVER_MAX_AGE_SECONDS", _seconds(1), 900.0),
            status_ttl_seconds=reader.get("HANDOVER_STATUS_TTL_SECONDS", _integer(60), 604800),
            attempt_timeout_seconds=reader.get(
                "HANDOVER_ATTEMPT_TIMEOUT_SECONDS", _seconds(0.01), 10.0
            ),
            retry_budget_seconds=reader.get("HANDOVER_RETRY_BUDGET_SECONDS", _seconds(0), 15.0),
            backoff_initial_seconds=reader.get(
                "HANDOVER_BACKOFF_INITIAL_SECONDS", _seconds(0), 0.5
            ),
            backoff_max_seconds=reader.get("HANDOVER_BACKOFF_MAX_SECONDS", _seconds(0), 8.0),
            requeue_delay_seconds=reader.get(
                "HANDOVER_REQUEUE_DELAY_SECONDS", _seconds(0.01), 30.0
            ),
            max_body_bytes=reader.get("HANDOVER_MAX_BODY_BYTES", _integer(256), 65536),
            tool_tokens=reader.get("HANDOVER_TOOL_TOKENS", _tokens, ()),
            admin_tokens=reader.get("HANDOVER_ADMIN_TOKENS", _tokens, ()),
            verify_twilio_signature=reader.get(
                "HANDOVER_VERIFY_TWILIO_SIGNATURE", _boolean, False
            ),
            trust_proxy_headers=reader.get("HANDOVER_TRUST_PROXY_HEADERS", _boolean, False),
            allow_unauthenticated=reader.get("HANDOVER_ALLOW_UNAUTHENTICATED", _boolean, False),
            rate_limit_per_conversation=reader.get(
                "HANDOVER_RATE_LIMIT_PER_CONVERSATION", _integer(0), 5
            ),
            rate_limit_per_identity=reader.get("HANDOVER_RATE_LIMIT_PER_IDENTITY", _integer(0), 20),
            rate_limit_window_seconds=reader.get(
                "HANDOVER_RATE_LIMIT_WINDOW_SECONDS", _integer(1), 60
            ),
            max_pending=reader.get("HANDOVER_MAX_PENDING", _integer(0), 10_000),
            lookup_grace_seconds=reader.get("HANDOVER_LOOKUP_GRACE_SECONDS", _seconds(0), 5.0),
            lookup_interval_seconds=reader.get(
                "HANDOVER_LOOKUP_INTERVAL_SECONDS", _seconds(0.01), 1.0
            ),
            flex_api_max_rps=reader.get("FLEX_API_MAX_RPS", _rate, 0.0),
            worker_concurrency=reader.get("WORKER_CONCURRENCY", _integer(1), 50),
            worker_poll_delay_seconds=reader.get(
                "WORKER_POLL_DELAY_SECONDS", _seconds(0.001), 0.05
            ),
            worker_shutdown_grace_seconds=reader.get(
                "WORKER_SHUTDOWN_GRACE_SECONDS", _integer(0), 10
            ),
            worker_reconnect_max_seconds=reader.get(
                "WORKER_RECONNECT_MAX_SECONDS", _seconds(0.5), 30.0
            ),
            log_level=reader.get("LOG_LEVEL", _log_level, "INFO"),
        )
        reported = {problem.split(":", 1)[0] for problem in reader.problems}
        reader.problems.extend(
            problem
            for problem in settings.missing_for(role)
            if problem.split(":", 1)[0] not in reported
        )
        if reader.problems:
            raise SettingsError(reader.problems)
        return settings

    def missing_for(self, role: Role) -> list[str]:
        """What `role` needs that is not set (formats were checked already)."""
        problems = []
        outlived = self.max_age_seconds + self.job_timeout_seconds
        if self.status_ttl_seconds <= outlived:
            problems.append(
                f"HANDOVER_STATUS_TTL_SECONDS: must exceed HANDOVER_MAX_AGE_SECONDS plus the "
                f"job timeout ({outlived:g}s), or a retrying handover's record would expire"
            )
        if not self.redis_url:
            problems.append("REDIS_URL: required (e.g. redis://localhost:6379/0)")
        if role != "operator" and not self.targets:
            problems.append(
                "FLEX_WORKFLOW_SID: required (or define targets in HANDOVER_TARGETS)"
            )
        if role == "api":
            if not (self.authenticates_tool_calls or self.allow_unauthenticated):
                problems.append(
                    "HANDOVER_TOOL_TOKENS: required, or HANDOVER_VERIFY_TWILIO_SIGNATURE=true "
                    "(on a laptop only: HANDOVER_ALLOW_UNAUTHENTICATED=true)"
                )
            if self.verify_twilio_signature and not self.twilio_auth_token:
                problems.append(
                    "TWILIO_AUTH_TOKEN: required with HANDOVER_VERIFY_TWILIO_SIGNATURE=true "
                    "(Twilio signs with the account's auth token, not an API key secret)"
                )
        if role == "worker":
            if not self.twilio_account_sid:
                problems.append("TWILIO_ACCOUNT_SID: required")
            if self.twilio_api_key and not self.twilio_api_secret:
                problems.append("TWILIO_API_SECRET: required with TWILIO_API_KEY")
            elif not self.twilio_api_key and not self.twilio_auth_token:
                problems.append(
                    "TWILIO_AUTH_TOKEN: required (or TWILIO_API_KEY and TWILIO_API_SECRET)"
                )
            if not self.flex_workspace_sid:
                problems.append("FLEX_WORKSPACE_SID: required")
        return problems


class _EnvReader:
    """Reads variables through parsers, collecting problems instead of stopping."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return value.strip() if value is not None and value.strip() else None

    def get(self, name: str, parse: Callable[[str], T], default: Any = None) -> Any:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError as exc:
            self.problems.append(f"{name}: {exc}")
            return default


def _sid(prefix: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not sids.is_sid(value, prefix):
            raise ValueError(f"must be {sids.describe(prefix)}, got {_preview(value)}")
        return value

    return parse


def _preview(value: str) -> str:
    """Enough of a bad value to spot a typo, not a whole secret pasted in the wrong place."""
    if len(value) <= 12:
        return repr(value)
    return f"{value[:6]!r}… ({len(value)} characters)"


def _secret(value: str) -> str:
    if len(value) < 8:
        raise ValueError("looks too short to be a Twilio secret (value not shown)")
    return value


_TOKEN = re.compile(r"[!-~]{16,256}")  # printable ASCII, no spaces or commas


def _tokens(value: str) -> tuple[str, ...]:
    """Comma-separated, so a new token can be added before the old one is removed."""
    tokens = tuple(token.strip() for token in value.split(",") if token.strip())
    for position, token in enumerate(tokens, 1):
        if "," in token or not _TOKEN.fullmatch(token):
            raise ValueError(
                f"token {position} must be 16 to 256 printable characters without spaces "
                "(value not shown)"
            )
    return tokens


def _rate(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"must be requests per second (0: no limit), got {value!r}") from None
    if not 0 <= number < float("inf"):
        raise ValueError(f"must be requests per second >= 0 (0: no limit), got {value!r}")
    return number


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {_preview(value)}")


def _redis_url(value: str) -> str:
    if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"must be an http(s) URL such as {TWILIO_FLEX_API}, got {_preview(value)}"
        )
    return value.rstrip("/")


def _message(value: str) -> str:
    if len(value) > 500:
        raise ValueError("must be at most 500 characters")
    return value


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return level


def _seconds(minimum: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"must be a number of seconds, got {value!r}") from None
        if not number >= minimum or number == float("inf"):
            raise ValueError(f"must be at least {minimum:g} seconds, got {value!r}")
        return number

    return parse


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"must be a whole number, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {value!r}")
        return number

    return parse


def _read_targets(reader: _EnvReader) -> dict[str, Target]:
    """The default target from FLEX_* variables plus named ones from HANDOVER_TARGETS."""
    targets: dict[str, Target] = {}
    default_workflow = reader.get("FLEX_WORKFLOW_SID", _sid(sids.WORKFLOW))
    task_channel = reader.get("FLEX_TASK_CHANNEL", _task_channel, "chat")
    if default_workflow:
        targets[DEFAULT_TARGET] = Target(DEFAULT_TARGET, default_workflow, task_channel)
    raw = reader.raw("HANDOVER_TARGETS")
    if raw is None:
        return targets
    try:
        targets.update(parse_targets(raw, default_task_channel=task_channel))
    except ValueError as exc:
        reader.problems.append(f"HANDOVER_TARGETS: {exc}")
    return targets


def _task_channel(value: str) -> str:
    if not _TASK_CHANNEL.fullmatch(value):
        raise ValueError(f"must be a task channel unique name such as 'chat', got {value!r}")
    return value


def parse_targets(raw: str, default_task_channel: str = "chat") -> dict[str, Target]:
    """Parse HANDOVER_TARGETS: a JSON object of name → {workflow_sid, task_channel,
    priority, attributes}."""
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"must be a JSON object ({exc.msg} at character {exc.pos})") from None
    if not isinstance(document, dict):
        raise ValueError('must be a JSON object such as {"billing": {"workflow_sid": "WW…"}}')
    targets = {}
    for name, spec in document.items():
        if not _TARGET_NAME.fullmatch(name):
            raise ValueError(
                f"target name {name!r} must be lower-case letters, digits, '-' or '_'"
            )
        if not isinstance(spec, dict):
            raise ValueError(f"target {name!r} must be a JSON object")
        unknown = set(spec) - {"workflow_sid", "task_channel", "priority", "attributes"}
        if unknown:
            raise ValueError(f"target {name!r} has unknown keys: {', '.join(sorted(unknown))}")
        workflow_sid = spec.get("workflow_sid")
        if not isinstance(workflow_sid, str) or not sids.is_sid(workflow_sid, sids.WORKFLOW):
            raise ValueError(
                f"target {name!r} needs workflow_sid, {sids.describe(sids.WORKFLOW)}"
            )
        task_channel = spec.get("task_channel", default_task_channel)
        if not isinstance(task_channel, str) or not _TASK_CHANNEL.fullmatch(task_channel):
            raise ValueError(f"target {name!r} has an invalid task_channel")
        priority = spec.get("priority")
        if priority is not None and (
            isinstance(priority, bool) or not isinstance(priority, int) or priority < 0
        ):
            raise ValueError(f"target {name!r} priority must be a whole number >= 0")
        attributes = spec.get("attributes", {})
        if not isinstance(attributes, dict):
            raise ValueError(f"target {name!r} attributes must be a JSON object")
        targets[name] = Target(
            name, workflow_sid, task_channel, priority, MappingProxyType(dict(attributes))
        )
    return targets

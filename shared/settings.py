"""One typed settings object, read from environment variables.

Each setting is declared once, as a field of `Settings`: its default, and in the
field's metadata the variable it is read from, the parser that checks it and a
line of help. `Settings.from_env` walks those fields, so a new setting cannot be
read without a default and a check; tests compare `.env.example` and the
README's table (printed by `python -m commands.settings_table`) with the same
declaration, so the documentation cannot drift from what is read. `Settings`
stays a plain frozen dataclass: code and tests build it directly.

Both processes call `Settings.from_env()` at start-up; every problem found is
reported at once, each naming its variable, so an operator fixes `.env` in one go.
Secret values never appear in an error message or a repr.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from shared import sids
from shared.business_hours import BusinessHours, parse_hours
from shared.logging import LOG_FORMATS

DEFAULT_TARGET = "default"
DEFAULT_MESSAGE = "I'm transferring you to a human agent now."
TWILIO_FLEX_API = "https://flex-api.twilio.com"
TWILIO_CONVERSATIONS_API = "https://conversations.twilio.com"
TWILIO_TASKROUTER_API = "https://taskrouter.twilio.com"
CHANNEL_CONFIRM_SECONDS = 10.0
"""The longest the worker reads a new Interaction's channel before it calls the
handover succeeded but unconfirmed (worker.retry's `channel_poll_waits` spends it).
Here, not in worker.retry, because the run budget below counts it."""
AFTERCARE_SECONDS = 15.0
"""The longest the Conversation steps after a handover's outcome may take
(`worker.aftercare`: marking, silencing the bot, the fallback message; and the
hand-back job): best effort, never worth holding a worker slot longer. The job
timeout counts it."""

# "operator": the CLI's failed/replay commands, which talk to Redis only: they
# need REDIS_URL (and the TTLs a replay writes), no targets, neither the API's
# authentication nor Twilio credentials.
Role = Literal["api", "worker", "operator"]
_TARGET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_TASK_CHANNEL = re.compile(r"[A-Za-z0-9_-]{1,64}")
_RESERVED_TARGET_NAMES = frozenset({"schema"})
"""`/tools/flex-handover/schema` is the tool's definition, not a target's endpoint."""
_TARGET_KEYS = frozenset(
    {
        "workflow_sid",
        "task_channel",
        "priority",
        "attributes",
        "silence_webhooks",
        "fallback_message",
        "fallback_author",
        "return_to_bot",
        "hours",
        "outside_hours",
        "closed_message",
        "voice_timeout",
        "wait_url",
    }
)
OUTSIDE_HOURS = ("queue", "decline")
"""A target's `outside_hours`: hand over anyway (the task waits in Flex), or store
nothing and tell the model so."""
MAX_CLOSED_MESSAGE_CHARS = 500
MAX_FALLBACK_MESSAGE_CHARS = 1600
"""A Conversations message body's limit, and an SMS's in segments."""
MAX_AUTHOR_CHARS = 256
MAX_VOICE_TIMEOUT_SECONDS = 14 * 24 * 3600
"""TaskRouter's longest task timeout (two weeks); its default is 24 hours."""
MAX_WAIT_URL_CHARS = 2048
DEFAULT_VOICE_GOODBYE = "Thank you for calling. Goodbye."
_VARIABLES = "variables"  # field metadata: the Variables a field is read from
_READ = "read"  # field metadata: how a field made of several variables is read


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
    silence_webhooks: tuple[str, ...] = ()
    """URL prefixes: the Conversation's own webhooks whose URL starts with one (the
    bot's) are removed once the handover succeeded, and kept in the record."""
    fallback_message: str | None = None
    """Posted into the Conversation, once, when the handover ends `failed`."""
    fallback_author: str | None = None
    """The fallback message's `Author` (None: Twilio's default, `system`)."""
    return_to_bot: bool = False
    """When the agent's task ends, put back the webhooks `silence_webhooks` removed."""
    hours: BusinessHours | None = None
    """When agents work (None: always); the API checks it on every tool call."""
    outside_hours: Literal["queue", "decline"] = "queue"
    closed_message: str | None = None
    """What the model is told outside `hours` (None: a default saying when agents are back)."""
    voice_timeout: int | None = None
    """A voice handoff's `<Task timeout>` in seconds (None: TaskRouter's default, 24 h)."""
    wait_url: str | None = None
    """A voice handoff's `<Enqueue waitUrl>`: what the caller hears while waiting (None:
    Twilio's default hold music)."""


@dataclass(frozen=True)
class RedisTarget:
    """How to reach the Redis primary: a URL, or Sentinels that name it (then the
    URL gives only the password, the database and whether to use TLS)."""

    url: str = field(repr=False)  # may hold a password
    sentinels: tuple[tuple[str, int], ...] = ()
    cluster: bool = False
    """The URL names a Redis Cluster node: connect to the owner of the keys' slot."""
    sentinel_service: str = "mymaster"
    sentinel_username: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "rediss"

    @property
    def location(self) -> str:
        """Where it is, without credentials: for logs and messages."""
        parts = urlsplit(self.url)
        if self.sentinels:
            via = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            tls = " over TLS" if self.tls else ""
            db = parts.path.strip("/") or "0"
            return f"Sentinel master {self.sentinel_service!r} via {via}{tls}, db {db}"
        if self.cluster:
            tls = " over TLS" if self.tls else ""
            return f"Redis Cluster via {parts.hostname or ''}:{parts.port or 6379}{tls}"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


@dataclass(frozen=True)
class Variable:
    """One environment variable: how it is checked, its value when unset, what it is for.

    `unset` is what the README's default column says when there is no default
    (e.g. who requires it); the requirements themselves are `Settings.missing_for`.
    """

    env: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    unset: str = ""

    @property
    def default_text(self) -> str | None:
        """The default as it is written in `.env`, or None when there is none."""
        if self.default is None or self.default == ():
            return None
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


def setting(
    env: str,
    parse: Callable[[str], Any],
    default: Any,
    help_text: str,
    *,
    unset: str = "",
    hidden: bool = False,
) -> Any:
    """A `Settings` field read from the variable `env`.

    `hidden`: kept out of the repr (a secret; `Settings.secrets` is what the logs mask).
    """
    variable = Variable(env, parse, default, help_text, unset)
    return field(default=default, repr=not hidden, metadata={_VARIABLES: (variable,)})


# --------------------------------------------------------------------------
# Parsers: a raw (stripped, non-empty) value in, a typed value out, or a
# ValueError whose message follows "VARIABLE: ".
# --------------------------------------------------------------------------


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


def _origins(value: str) -> tuple[str, ...]:
    """Comma-separated `scheme://host[:port]` origins, as a browser sends `Origin`:
    lower-cased, without a trailing slash, so they compare as sent."""
    origins = []
    for origin in (part.strip().rstrip("/").lower() for part in value.split(",")):
        if not origin:
            continue
        parts = urlsplit(origin)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:  # not a number, or out of range
            port_ok = False
        if (
            not port_ok
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.username is not None
            or parts.path
            or parts.query
            or parts.fragment
        ):
            raise ValueError(
                f"each origin must be scheme://host[:port], e.g. https://app.example.com, "
                f"got {origin[:80]!r}"
            )
        origins.append(origin)
    return tuple(origins)


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
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must start with redis://, rediss:// or unix://")
    if parts.query or parts.fragment:
        # redis-py would let `?ssl_cert_reqs=none` or `?socket_timeout=` override
        # what this service sets: TLS verification and timeouts are not the URL's.
        raise ValueError(
            "must have no query string: the database goes in the path (/0), TLS files in "
            "REDIS_TLS_CA_FILE / REDIS_TLS_CERT_FILE / REDIS_TLS_KEY_FILE"
        )
    return value


def _sentinels(value: str) -> tuple[tuple[str, int], ...]:
    """Comma-separated `host:port` of Redis Sentinels (a bracketed IPv6 `[::1]:26379`)."""
    found = []
    for position, part in enumerate((p.strip() for p in value.split(",") if p.strip()), 1):
        parts = urlsplit(f"//{part}")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None or port == 0 or parts.username or parts.path:
            raise ValueError(f"entry {position} must be host:port, e.g. sentinel-1:26379")
        found.append((parts.hostname, port))
    return tuple(found)


def _file(value: str) -> str:
    if not os.path.isfile(value):
        raise ValueError(f"no such file: {value[:200]}")
    return value


def _replica_timeout(value: str) -> float:
    """WAIT's timeout: above 0 (WAIT 0 would wait for ever) and below the Redis
    command timeout (5 s), so a slow replica is a clear 503, not a client timeout."""
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"must be seconds, got {_preview(value)}") from None
    if not 0.001 <= seconds <= 4.0:
        raise ValueError(f"must be between 0.001 and 4 seconds, got {value!r}")
    return seconds


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL such as {TWILIO_FLEX_API}, got {_preview(value)}")
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


def _log_format(value: str) -> str:
    lowered = value.lower()
    if lowered not in LOG_FORMATS:
        raise ValueError(f"must be text or json, got {_preview(value)}")
    return lowered


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


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"must be a whole number, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {value!r}")
        if maximum is not None and number > maximum:
            raise ValueError(f"must be at most {maximum}, got {value!r}")
        return number

    return parse


def _port(value: str) -> int:
    port = _integer(0)(value)
    if port > 65535:
        raise ValueError(f"must be a port from 0 to 65535, got {value!r}")
    return port


def _task_channel(value: str) -> str:
    if not _TASK_CHANNEL.fullmatch(value):
        raise ValueError(f"must be a task channel unique name such as 'chat', got {value!r}")
    return value


def _json_text(value: str) -> str:
    """HANDOVER_TARGETS is parsed with FLEX_TASK_CHANNEL in hand (`_read_targets`)."""
    return value


# --------------------------------------------------------------------------
# The targets: one field, three variables.
# --------------------------------------------------------------------------

FLEX_WORKFLOW_SID = Variable(
    "FLEX_WORKFLOW_SID", _sid(sids.WORKFLOW), None, "workflow `WW…` of the `default` target"
)
FLEX_TASK_CHANNEL = Variable("FLEX_TASK_CHANNEL", _task_channel, "chat", "task channel unique name")
HANDOVER_TARGETS = Variable(
    "HANDOVER_TARGETS",
    _json_text,
    None,
    'JSON: `{"billing": {"workflow_sid": "WW…", "task_channel": "chat", "priority": 10, '
    '"attributes": {…}, "hours": {…}, "outside_hours": "queue"}}` '
    "([business hours](#business-hours))",
)


class _EnvReader:
    """Reads variables through parsers, collecting problems instead of stopping."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[str] = []

    def get(self, variable: Variable) -> Any:
        value = self.env.get(variable.env)
        if value is None or not value.strip():
            return variable.default
        try:
            return variable.parse(value.strip())
        except ValueError as exc:
            self.report(variable, exc)
            return variable.default

    def report(self, variable: Variable, exc: ValueError) -> None:
        self.problems.append(f"{variable.env}: {exc}")


def _read_targets(reader: _EnvReader) -> Mapping[str, Target]:
    """The default target from FLEX_* variables plus named ones from HANDOVER_TARGETS."""
    targets: dict[str, Target] = {}
    default_workflow = reader.get(FLEX_WORKFLOW_SID)
    task_channel = reader.get(FLEX_TASK_CHANNEL)
    if default_workflow:
        targets[DEFAULT_TARGET] = Target(DEFAULT_TARGET, default_workflow, task_channel)
    raw = reader.get(HANDOVER_TARGETS)
    if raw is not None:
        try:
            targets.update(parse_targets(raw, default_task_channel=task_channel))
        except ValueError as exc:
            reader.report(HANDOVER_TARGETS, exc)
    return MappingProxyType(targets)


@dataclass(frozen=True)
class Settings:
    """Every setting, each declared once: `setting(VARIABLE, parser, default, help)`."""

    redis_url: str | None = setting(
        "REDIS_URL",
        _redis_url,
        None,
        "`redis://`, `rediss://` or `unix://`",
        unset="(required; `dev` starts a server)",
        hidden=True,  # may hold a password
    )
    redis_sentinels: tuple[tuple[str, int], ...] = setting(
        "REDIS_SENTINELS",
        _sentinels,
        (),
        "comma-separated `host:port` of Redis Sentinels: the primary is found through them "
        "(REDIS_URL's host is then unused; its password, database and `rediss://` still apply) "
        "([Sentinel](#sentinel))",
    )
    redis_cluster: bool = setting(
        "REDIS_CLUSTER",
        _boolean,
        False,
        "REDIS_URL names a node of a Redis Cluster (or a managed service's cluster-mode "
        "endpoint): the primary serving the keys' one slot is found from it "
        "([Redis Cluster](#redis-cluster))",
    )
    redis_sentinel_service: str = setting(
        "REDIS_SENTINEL_SERVICE",
        str,
        "mymaster",
        "the master's name Sentinel knows (`sentinel monitor <name> ...`)",
    )
    redis_sentinel_username: str | None = setting(
        "REDIS_SENTINEL_USERNAME",
        str,
        None,
        "the user the Sentinels require (ACL), if any",
    )
    redis_sentinel_password: str | None = setting(
        "REDIS_SENTINEL_PASSWORD",
        str,
        None,
        "the password the Sentinels require (`requirepass` in sentinel.conf), if any",
        hidden=True,
    )
    min_replicas: int = setting(
        "HANDOVER_MIN_REPLICAS",
        _integer(0),
        0,
        "replicas that must have a handover before it is acknowledged (Redis `WAIT`); none in "
        "time: 503 `not_replicated`, the caller retries. 0: off "
        "([nothing acknowledged lost](#nothing-acknowledged-lost-on-failover))",
    )
    replica_timeout_seconds: float = setting(
        "HANDOVER_REPLICA_TIMEOUT_SECONDS",
        _replica_timeout,
        1.0,
        "how long the acknowledgement waits for HANDOVER_MIN_REPLICAS (at most 4)",
    )
    redis_tls_ca_file: str | None = setting(
        "REDIS_TLS_CA_FILE",
        _file,
        None,
        "PEM file of the CA that signed Redis's certificate, with `rediss://`; unset: the "
        "system's CAs. Certificate and host name are always verified ([TLS](#tls))",
    )
    redis_tls_cert_file: str | None = setting(
        "REDIS_TLS_CERT_FILE",
        _file,
        None,
        "PEM client certificate, when Redis asks for one (`tls-auth-clients yes`)",
    )
    redis_tls_key_file: str | None = setting(
        "REDIS_TLS_KEY_FILE",
        _file,
        None,
        "PEM key of REDIS_TLS_CERT_FILE",
    )
    twilio_account_sid: str | None = setting(
        "TWILIO_ACCOUNT_SID", _sid(sids.ACCOUNT), None, "`AC…`", unset="(worker: required)"
    )
    twilio_auth_token: str | None = setting(
        "TWILIO_AUTH_TOKEN",
        _secret,
        None,
        "or `TWILIO_API_KEY` + `TWILIO_API_SECRET`; Twilio signatures need the auth token",
        hidden=True,
    )
    twilio_api_key: str | None = setting(
        "TWILIO_API_KEY",
        _sid(sids.API_KEY),
        None,
        "API key `SK…`, used with its secret instead of the auth token",
    )
    twilio_api_secret: str | None = setting(
        "TWILIO_API_SECRET", _secret, None, "the API key's secret", hidden=True
    )
    flex_workspace_sid: str | None = setting(
        "FLEX_WORKSPACE_SID",
        _sid(sids.WORKSPACE),
        None,
        "TaskRouter workspace `WS…`",
        unset="(worker: required)",
    )
    flex_api_base_url: str = setting(
        "FLEX_API_BASE_URL", _http_url, TWILIO_FLEX_API, "a proxy or the local simulator"
    )
    conversations_api_base_url: str = setting(
        "CONVERSATIONS_API_BASE_URL", _http_url, TWILIO_CONVERSATIONS_API, "likewise"
    )
    taskrouter_api_base_url: str = setting(
        "TASKROUTER_API_BASE_URL", _http_url, TWILIO_TASKROUTER_API, "likewise"
    )
    targets: Mapping[str, Target] = field(
        default_factory=lambda: MappingProxyType({}),
        metadata={
            _VARIABLES: (FLEX_WORKFLOW_SID, FLEX_TASK_CHANNEL, HANDOVER_TARGETS),
            _READ: _read_targets,
        },
    )
    handover_message: str = setting(
        "HANDOVER_MESSAGE", _message, DEFAULT_MESSAGE, "what the model is told"
    )
    voice_goodbye_message: str = setting(
        "VOICE_GOODBYE_MESSAGE",
        _message,
        DEFAULT_VOICE_GOODBYE,
        "what a caller hears (`<Say>`, then `<Hangup/>`) when a ConversationRelay session "
        "ends without a handoff ([voice](#voice-conversationrelay))",
    )
    dedup_seconds: float = setting(
        "HANDOVER_DEDUP_SECONDS",
        _seconds(0),
        600.0,
        "a succeeded handover still answers repeat calls this long, until its task ends",
    )
    max_age_seconds: float = setting(
        "HANDOVER_MAX_AGE_SECONDS",
        _seconds(1),
        900.0,
        "give up this long after the call (or the last replay)",
    )
    status_ttl_seconds: int = setting(
        "HANDOVER_STATUS_TTL_SECONDS",
        _integer(60),
        7 * 24 * 3600,
        "status records, and so dead letters, kept 7 days",
    )
    attempt_timeout_seconds: float = setting(
        "HANDOVER_ATTEMPT_TIMEOUT_SECONDS", _seconds(0.01), 10.0, "per Twilio request"
    )
    retry_budget_seconds: float = setting(
        "HANDOVER_RETRY_BUDGET_SECONDS", _seconds(0), 15.0, "in-job retrying"
    )
    backoff_initial_seconds: float = setting(
        "HANDOVER_BACKOFF_INITIAL_SECONDS",
        _seconds(0),
        0.5,
        "backoff base, and the shortest wait before Twilio is asked again for one handover, "
        "whatever `Retry-After` says (at least 0.01 s)",
    )
    backoff_max_seconds: float = setting(
        "HANDOVER_BACKOFF_MAX_SECONDS", _seconds(0), 8.0, "backoff cap"
    )
    requeue_delay_seconds: float = setting(
        "HANDOVER_REQUEUE_DELAY_SECONDS",
        _seconds(0.01),
        30.0,
        "wait after the in-job budget (or `Retry-After`), never past the handover's max age",
    )
    max_body_bytes: int = setting(
        "HANDOVER_MAX_BODY_BYTES", _integer(256), 64 * 1024, "larger bodies get 413"
    )
    tool_tokens: tuple[str, ...] = setting(
        "HANDOVER_TOOL_TOKENS",
        _tokens,
        (),
        "comma-separated tool tokens, as `Authorization: Bearer …` or `?token=…`",
        unset="(api: required, or `HANDOVER_VERIFY_TWILIO_SIGNATURE`)",
        hidden=True,
    )
    admin_tokens: tuple[str, ...] = setting(
        "HANDOVER_ADMIN_TOKENS",
        _tokens,
        (),
        "comma-separated admin tokens for `/handovers…` (status, list, replay), as a bearer "
        "token or through the operator page's sign-in (`/ui`); unset: 403",
        hidden=True,
    )
    verify_twilio_signature: bool = setting(
        "HANDOVER_VERIFY_TWILIO_SIGNATURE",
        _boolean,
        False,
        "accept calls carrying a valid `X-Twilio-Signature` (needs `TWILIO_AUTH_TOKEN`)",
    )
    trust_proxy_headers: bool = setting(
        "HANDOVER_TRUST_PROXY_HEADERS",
        _boolean,
        False,
        "rebuild the signed URL from `X-Forwarded-Proto`/`X-Forwarded-Host`; only behind a "
        "proxy you run",
    )
    allow_unauthenticated: bool = setting(
        "HANDOVER_ALLOW_UNAUTHENTICATED",
        _boolean,
        False,
        "laptop only: opens the tool endpoint if it has no token or signature check, the "
        "operator endpoints if no admin token (warns at start-up; `dev` sets it when no tool "
        "check is set)",
    )
    mcp_allowed_origins: tuple[str, ...] = setting(
        "HANDOVER_MCP_ALLOWED_ORIGINS",
        _origins,
        (),
        "comma-separated browser origins (`https://app.example.com`) that may call `/mcp` "
        "besides loopback ones; any other `Origin` gets 403 (DNS rebinding)",
    )
    rate_limit_per_conversation: int = setting(
        "HANDOVER_RATE_LIMIT_PER_CONVERSATION",
        _integer(0),
        5,
        "new handovers per conversation per window (0: off)",
    )
    rate_limit_per_identity: int = setting(
        "HANDOVER_RATE_LIMIT_PER_IDENTITY",
        _integer(0),
        20,
        "new handovers per identity per window (0: off)",
    )
    rate_limit_window_seconds: int = setting(
        "HANDOVER_RATE_LIMIT_WINDOW_SECONDS", _integer(1), 60, "the rate-limit window"
    )
    priority_head_start_seconds: float = setting(
        "HANDOVER_PRIORITY_HEAD_START_SECONDS",
        _seconds(0),
        120.0,
        "how far ahead in the queue a handover to the target with the highest `priority` "
        "goes (others in proportion to theirs): it is never overtaken by one that came more "
        "than this after it ([Urgent first](#urgent-first)); 0: first come, first served",
    )
    max_pending: int = setting(
        "HANDOVER_MAX_PENDING",
        _integer(0),
        10_000,
        "live handovers (queued, running, retrying) past which a new one gets 503 "
        "`backlog_full` and nothing is stored "
        "([backlog cap](#backlog-cap-and-redis-memory)); 0: no cap",
    )
    lookup_grace_seconds: float = setting(
        "HANDOVER_LOOKUP_GRACE_SECONDS",
        _seconds(0),
        5.0,
        "after an attempt whose answer was lost, how long TaskRouter is searched for its task "
        "before sending again",
    )
    lookup_interval_seconds: float = setting(
        "HANDOVER_LOOKUP_INTERVAL_SECONDS", _seconds(0.01), 1.0, "how often within that window"
    )
    flex_api_max_rps: float = setting(
        "FLEX_API_MAX_RPS",
        _rate,
        18.0,
        "`POST /v1/Interactions` per second for all workers together (a token bucket in "
        "Redis): 90 % of Twilio's documented 20 per second per account; raise it with "
        "your account's limit ([Under Twilio's cap](#under-twilios-cap)); 0: no limit",
    )
    worker_concurrency: int = setting(
        "WORKER_CONCURRENCY",
        _integer(1),
        50,
        "handovers per worker process at once, up to their create's answer; as many "
        "more may be finishing (channel read, Conversation steps) on lent slots",
    )
    worker_poll_delay_seconds: float = setting(
        "WORKER_POLL_DELAY_SECONDS",
        _seconds(0.001),
        0.05,
        "idle queue polling, i.e. pick-up latency",
    )
    worker_shutdown_grace_seconds: int = setting(
        "WORKER_SHUTDOWN_GRACE_SECONDS",
        _integer(0),
        10,
        "on SIGTERM, how long running handovers get to finish before they are re-queued; "
        "keep the container's stop grace period above it",
    )
    worker_reconnect_max_seconds: float = setting(
        "WORKER_RECONNECT_MAX_SECONDS",
        _seconds(0.5),
        30.0,
        "while Redis cannot be reached or refuses writes, the worker tries again after 0.5 s, "
        "doubling up to this",
    )
    log_level: str = setting(
        "LOG_LEVEL",
        _log_level,
        "INFO",
        "logs never hold a token, signature, auth token, full phone number or e-mail address "
        "([what never appears in logs](#what-never-appears-in-logs))",
    )
    log_format: str = setting(
        "LOG_FORMAT",
        _log_format,
        "text",
        "`text` for a terminal, or `json`: one JSON object a line, redacted the same way "
        "([JSON logs](#json-logs))",
    )
    ui_session_seconds: int = setting(
        "HANDOVER_UI_SESSION_SECONDS",
        _integer(60, 7 * 24 * 3600),
        8 * 3600,
        "how long a sign-in to the operator page (`/ui`) lasts, from sign-in (not renewed "
        "by use; at most a week; it ends sooner if its admin token is removed) "
        "([the operator page](#the-operator-page))",
    )
    ui_secure_cookie: bool = setting(
        "HANDOVER_UI_SECURE_COOKIE",
        _boolean,
        True,
        "the operator page's session cookie is `Secure` (sent over https only); `false` for "
        "plain http on a laptop (`dev` sets it)",
    )
    metrics: bool = setting(
        "HANDOVER_METRICS",
        _boolean,
        True,
        "`GET /metrics` on the API (Prometheus) and the counting behind it; `false`: neither "
        "([metrics](#metrics))",
    )
    metrics_tokens: tuple[str, ...] = setting(
        "HANDOVER_METRICS_TOKEN",
        _tokens,
        (),
        "comma-separated bearer tokens `/metrics` requires, on the API and the worker; unset: open",
        hidden=True,
    )
    worker_metrics_port: int = setting(
        "WORKER_METRICS_PORT",
        _port,
        0,
        "the worker's `GET /metrics` port, on all interfaces; 0: off",
    )

    @property
    def run_budget_seconds(self) -> float:
        """How long one run of the handover job may take, everything included:
        the in-job retry budget, an attempt that starts at its end, the
        friendly-name lookup, one TaskRouter lookup window plus its last
        query, and reading the new Interaction's channel."""
        return (
            self.retry_budget_seconds
            + 3 * self.attempt_timeout_seconds
            + self.lookup_grace_seconds
            + CHANNEL_CONFIRM_SECONDS
            + 2.0
        )

    @property
    def job_timeout_seconds(self) -> float:
        """arq's per-job timeout: above the run budget plus the Conversation steps
        after the outcome (AFTERCARE_SECONDS).

        A job that hits arq's timeout is failed for good without our status
        being written, so the handover job must always finish first.
        """
        return self.run_budget_seconds + AFTERCARE_SECONDS + 5.0

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
            self.redis_sentinel_password,
            *self.tool_tokens,
            *self.admin_tokens,
            *self.metrics_tokens,
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
    def recent_retention_seconds(self) -> int:
        """How long a handover stays in the recent index (shared/redis_keys.py,
        RECENT_INDEX) after it was queued: as long as its record can live, the
        status TTL counted from its final write, which comes at most the max age
        plus a job's run after it was queued."""
        return int(self.status_ttl_seconds + self.max_age_seconds + self.job_timeout_seconds) + 1

    @property
    def redis(self) -> RedisTarget:
        """Where Redis is, and how to reach it: what `shared.redis_client` connects to."""
        return RedisTarget(
            self.redis_url or "",
            sentinels=self.redis_sentinels,
            cluster=self.redis_cluster,
            sentinel_service=self.redis_sentinel_service,
            sentinel_username=self.redis_sentinel_username,
            sentinel_password=self.redis_sentinel_password,
            tls_ca_file=self.redis_tls_ca_file,
            tls_cert_file=self.redis_tls_cert_file,
            tls_key_file=self.redis_tls_key_file,
        )

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
        values = {}
        for setting_field in fields(cls):
            read = setting_field.metadata.get(_READ)
            if read is not None:
                values[setting_field.name] = read(reader)
            else:
                (variable,) = setting_field.metadata[_VARIABLES]
                values[setting_field.name] = reader.get(variable)
        settings = cls(**values)
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
        elif urlsplit(self.redis_url).scheme != "rediss":
            for name, value in (
                ("REDIS_TLS_CA_FILE", self.redis_tls_ca_file),
                ("REDIS_TLS_CERT_FILE", self.redis_tls_cert_file),
                ("REDIS_TLS_KEY_FILE", self.redis_tls_key_file),
            ):
                if value:
                    problems.append(f"{name}: set, but REDIS_URL is not rediss:// (TLS)")
        if bool(self.redis_tls_cert_file) != bool(self.redis_tls_key_file):
            problems.append(
                "REDIS_TLS_CERT_FILE: a client certificate needs REDIS_TLS_KEY_FILE too, "
                "and the key the certificate"
            )
        if self.redis_sentinels and (self.redis_url or "").startswith("unix:"):
            problems.append("REDIS_SENTINELS: set, but REDIS_URL is a unix:// socket")
        if self.redis_cluster:
            if self.redis_sentinels:
                problems.append("REDIS_CLUSTER: a cluster has no Sentinels; unset REDIS_SENTINELS")
            if (self.redis_url or "").startswith("unix:"):
                problems.append("REDIS_CLUSTER: set, but REDIS_URL is a unix:// socket")
            elif (urlsplit(self.redis_url or "").path.strip("/") or "0") != "0":
                problems.append(
                    "REDIS_CLUSTER: a cluster has database 0 only; REDIS_URL names another"
                )
        if role != "operator" and not self.targets:
            problems.append("FLEX_WORKFLOW_SID: required (or define targets in HANDOVER_TARGETS)")
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


def is_target_name(name: str) -> bool:
    """Whether `name` is spelled as a target's name may be (`HANDOVER_TARGETS`)."""
    return _TARGET_NAME.fullmatch(name) is not None


def parse_targets(raw: str, default_task_channel: str = "chat") -> dict[str, Target]:
    """Parse HANDOVER_TARGETS: a JSON object of name → {workflow_sid, task_channel,
    priority, attributes, …, hours, outside_hours, closed_message}."""
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"must be a JSON object ({exc.msg} at character {exc.pos})") from None
    if not isinstance(document, dict):
        raise ValueError('must be a JSON object such as {"billing": {"workflow_sid": "WW…"}}')
    targets = {}
    for name, spec in document.items():
        if not _TARGET_NAME.fullmatch(name):
            raise ValueError(f"target name {name!r} must be lower-case letters, digits, '-' or '_'")
        if name in _RESERVED_TARGET_NAMES:
            raise ValueError(
                f"target name {name!r} is taken by a route: /tools/flex-handover/{name}"
            )
        if not isinstance(spec, dict):
            raise ValueError(f"target {name!r} must be a JSON object")
        unknown = set(spec) - _TARGET_KEYS
        if unknown:
            raise ValueError(f"target {name!r} has unknown keys: {', '.join(sorted(unknown))}")
        workflow_sid = spec.get("workflow_sid")
        if not isinstance(workflow_sid, str) or not sids.is_sid(workflow_sid, sids.WORKFLOW):
            raise ValueError(f"target {name!r} needs workflow_sid, {sids.describe(sids.WORKFLOW)}")
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
            name,
            workflow_sid,
            task_channel,
            priority,
            MappingProxyType(dict(attributes)),
            **_target_aftercare(name, spec),
            **_target_hours(name, spec),
            **_target_voice(name, spec),
        )
    return targets


def _target_voice(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A target's keys for a voice handoff (`api.voice`): `voice_timeout`, the
    task's timeout in seconds, and `wait_url`, the `<Enqueue>`'s hold music."""
    timeout = spec.get("voice_timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int)
        or not 1 <= timeout <= MAX_VOICE_TIMEOUT_SECONDS
    ):
        raise ValueError(
            f"target {name!r} voice_timeout must be whole seconds from 1 to "
            f"{MAX_VOICE_TIMEOUT_SECONDS} (two weeks)"
        )
    wait_url = spec.get("wait_url")
    if wait_url is not None:
        parts = urlsplit(wait_url) if isinstance(wait_url, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.netloc
            or len(wait_url) > MAX_WAIT_URL_CHARS
            or any(ord(char) < 0x21 or ord(char) == 0x7F for char in wait_url)
        ):
            raise ValueError(
                f"target {name!r} wait_url must be an http(s) URL of at most "
                f"{MAX_WAIT_URL_CHARS} characters, without spaces"
            )
    return {"voice_timeout": timeout, "wait_url": wait_url}


def _target_aftercare(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a target that say what happens around the handover in the
    Conversation: `silence_webhooks`, `fallback_message`, `fallback_author`,
    `return_to_bot`."""
    prefixes = spec.get("silence_webhooks", [])
    if not isinstance(prefixes, list) or not all(
        isinstance(prefix, str) and prefix.startswith(("https://", "http://"))
        for prefix in prefixes
    ):
        raise ValueError(
            f"target {name!r} silence_webhooks must be a list of URL prefixes "
            '(each starting "https://" or "http://")'
        )
    fallback_message = spec.get("fallback_message")
    if fallback_message is not None and (
        not isinstance(fallback_message, str)
        or not fallback_message.strip()
        or len(fallback_message) > MAX_FALLBACK_MESSAGE_CHARS
    ):
        raise ValueError(
            f"target {name!r} fallback_message must be text of 1 to "
            f"{MAX_FALLBACK_MESSAGE_CHARS} characters"
        )
    author = spec.get("fallback_author")
    if author is not None and (
        not isinstance(author, str) or not author.strip() or len(author) > MAX_AUTHOR_CHARS
    ):
        raise ValueError(
            f"target {name!r} fallback_author must be text of 1 to {MAX_AUTHOR_CHARS} characters"
        )
    return_to_bot = spec.get("return_to_bot", False)
    if not isinstance(return_to_bot, bool):
        raise ValueError(f"target {name!r} return_to_bot must be true or false")
    return {
        "silence_webhooks": tuple(prefixes),
        "fallback_message": fallback_message,
        "fallback_author": author,
        "return_to_bot": return_to_bot,
    }


def _target_hours(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A target's `hours` (shared.business_hours), `outside_hours` and `closed_message`.

    The last two mean nothing without hours: set alone, they are a mistake to report."""
    raw_hours = spec.get("hours")
    hours = None
    if raw_hours is not None:
        try:
            hours = parse_hours(raw_hours)
        except ValueError as exc:
            raise ValueError(f"target {name!r} hours {exc}") from None
    outside_hours = spec.get("outside_hours", "queue")
    if outside_hours not in OUTSIDE_HOURS:
        raise ValueError(f"target {name!r} outside_hours must be 'queue' or 'decline'")
    closed_message = spec.get("closed_message")
    if closed_message is not None and (
        not isinstance(closed_message, str)
        or not closed_message.strip()
        or len(closed_message) > MAX_CLOSED_MESSAGE_CHARS
    ):
        raise ValueError(
            f"target {name!r} closed_message must be text of 1 to "
            f"{MAX_CLOSED_MESSAGE_CHARS} characters"
        )
    for key in ("outside_hours", "closed_message"):
        if key in spec and hours is None:
            raise ValueError(f"target {name!r} {key} needs hours")
    return {"hours": hours, "outside_hours": outside_hours, "closed_message": closed_message}


def variables() -> tuple[Variable, ...]:
    """Every variable the settings read, in the order `from_env` reads them."""
    return tuple(
        variable
        for setting_field in fields(Settings)
        for variable in setting_field.metadata[_VARIABLES]
    )

"""Logging set-up and the redaction that keeps PII and secrets out of logs.

Handover code logs ids (handover_id, conversation_sid), never identities.
The filter below is the safety net for anything else: phone numbers, e-mail
addresses, credentials in a URL or header (`token=`, `Authorization: …`,
`X-Twilio-Signature: …`) and every secret the process was configured with
(`register_secrets`: tool and admin tokens, Twilio auth token and API secret)
are masked before a line is written.

Redaction runs on text an unauthenticated caller can choose (a refused call's
path), on the event loop that serves everyone: it must cost time linear in
the text and the text must be bounded. Every pattern below is written so that
it cannot backtrack over a long run (possessive quantifiers, e-mails found from
their `@`), caller-supplied text is cut to `MAX_CALLER_TEXT` characters at the
log call (`caller_text`), and the filter cuts any message or traceback to
`MAX_LOG_TEXT`.

Each module logs through its own logger, named after it under `flex_handover`:
`logging.getLogger(f"flex_handover.{__name__}")` (`flex_handover.worker.delivery`).
`configure_logging` sets the level and the one redacting handler on the root
logger, so every one of them inherits both.

`LOG_FORMAT=json` writes each record as one JSON object a line (`JsonFormatter`)
for a log pipeline to read: the same redacted message and traceback as text,
plus the handover's fields. Those come from a context variable, not from
parsing messages: the worker sets them at a job's start (`set_log_context`)
and the API one around each request (`api.app.json_errors`), code that learns
more adds to it (`add_log_context`), and every record logged inside carries the fields,
whichever module logs it; an `extra={…}` on one call wins over the context.
The stdlib `logging.Formatter` and `json.dumps` do it in a few lines: a library
(python-json-logger) would add a dependency and still need the redaction, the
field choice and the one-line guarantee written here.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

MAX_CALLER_TEXT = 200
"""Characters of a caller-supplied value (a path, a method) that are logged."""
MAX_LOG_TEXT = 8192
"""Characters of one log message, and of one traceback, that are written."""
_CUT_MARGIN = 320
"""Redacted past a cut, then dropped: a secret (at most 256 characters), number or
address across the cut is masked whole rather than left half visible."""

_PHONE = re.compile(r"\+\d{6,15}")
# An e-mail address is found from its `@` (see `_mask_emails`), never by trying
# every character of a long run as the start of a local part.
_EMAIL_DOMAIN = re.compile(r"@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_LOCAL_PART = re.compile(r"[A-Za-z0-9._%+-]+")
# Possessive whitespace (`\s*+`): two optional runs of spaces side by side let
# the old pattern split a long run of spaces every way before it gave up.
_CREDENTIAL = re.compile(
    r"(?i)(authorization[\"']?\s*+[:=]\s*+[\"']?+(?:basic|bearer)?\s*+"
    r"|x-twilio-signature[\"']?\s*+[:=]\s*+[\"']?+|token=|password=|secret=)"
    r"[^\s&\"',]++"
)
# `scheme://user:password@host`: the password of any URL, however short. Found
# from its `://`: the scheme is copied unchanged, so it need not be matched (a
# scheme-first pattern rescanned a long `a.a.a…` run from each of its letters).
_URL_PASSWORD = re.compile(r"(://[^\s:/@]*+:)[^\s@/]++@")
_MIN_SECRET_LENGTH = 8
_secrets: tuple[str, ...] = ()


def register_secrets(*values: str | None) -> None:
    """Values never to print, whatever the context (longest first, so a secret
    that contains another is masked whole). Called with the settings' tokens."""
    global _secrets  # noqa: PLW0603 - one registry per process, replaced whole, never half-built
    known = set(_secrets)
    known.update(v for v in values if v and len(v) >= _MIN_SECRET_LENGTH)
    _secrets = tuple(sorted(known, key=len, reverse=True))
    _field_text_of.cache_clear()  # a text remembered before may hold a new secret


def mask_phone(match: re.Match[str]) -> str:
    digits = match.group(0)
    return digits[:3] + "*" * (len(digits) - 5) + digits[-2:]


def redact(text: str) -> str:
    """Mask phone numbers, e-mail addresses and credentials in free text.

    Linear in `len(text)` whatever its shape; bound the text first where a
    caller chooses it (`caller_text`, `redact_bounded`).
    """
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + "[redacted]@", text)
    text = _CREDENTIAL.sub(lambda m: m.group(1) + "[redacted]", text)
    text = _PHONE.sub(mask_phone, text)
    return _mask_emails(text)


def _mask_emails(text: str) -> str:
    """`ada@example.com` → `a***@example.com`.

    The same as substituting `([local])[local]*@(domain)` with `\\1***@\\2`, but
    linear: each `@` followed by a domain is found first, and its local part is
    then read backwards from the `@` (a match on the reversed text), never past
    the previous address. The runs read backwards lie between two `@`s, so no
    character is read twice.
    """
    if "@" not in text:
        return text
    backwards = text[::-1]
    size = len(text)
    pieces: list[str] = []
    done = 0
    for address in _EMAIL_DOMAIN.finditer(text):
        at = address.start()
        local = _LOCAL_PART.match(backwards, size - at, size - done)
        if local is None:
            continue
        start = at - (local.end() - local.start())
        pieces += (text[done:start], text[start], "***@", address.group(1))
        done = address.end()
    pieces.append(text[done:])
    return "".join(pieces)


def redact_bounded(text: str, limit: int = MAX_LOG_TEXT, *, keep_end: bool = False) -> str:
    """`redact(text)` cut to at most `limit` characters, with a marker saying how
    many more there were: its cost depends on `limit`, not on `len(text)`.

    Only a window a margin longer than `limit` is redacted, so that a secret or
    address across the cut is masked whole. The window's own edge may cut
    through one and leave a piece the patterns no longer recognise: a second,
    longer window masks that piece, so only what both redactions agree on is
    kept. `keep_end` keeps the last characters (a traceback ends with the
    exception).
    """
    if len(text) <= limit:
        return redact(text)
    beyond = len(text) - limit
    if keep_end:
        reverse = [redact(text[-(limit + margin) :])[::-1] for margin in _MARGINS]
        kept = reverse[0][: min(limit, _common_prefix(*reverse))][::-1]
        return f"…({beyond} chars before)…" + kept
    windows = [redact(text[: limit + margin]) for margin in _MARGINS]
    return windows[0][: min(limit, _common_prefix(*windows))] + f"…(+{beyond} chars)"


_MARGINS = (_CUT_MARGIN, 2 * _CUT_MARGIN)


def _common_prefix(first: str, second: str) -> int:
    """How many leading characters two strings share (compared a block at a time)."""
    size, same = min(len(first), len(second)), 0
    while same + 256 <= size and first[same : same + 256] == second[same : same + 256]:
        same += 256
    while same < size and first[same] == second[same]:
        same += 1
    return same


def caller_text(value: object, limit: int = MAX_CALLER_TEXT) -> str:
    """A value the caller chose (a path, a method, a header), as it may be logged:
    redacted and at most `limit` characters, so that a refused call costs the
    same whatever it sends."""
    return redact_bounded(value if isinstance(value, str) else str(value), limit)


def mask_identity(identity: str) -> str:
    """`whatsapp:+14155550123` → `whatsapp:+14*******23`; keeps the trait readable."""
    trait, sep, value = identity.partition(":")
    if not sep:
        return redact(identity)
    masked = redact(value)
    if masked == value and len(value) > 6 and not value.startswith(("FX", "US")):
        masked = value[:2] + "*" * (len(value) - 4) + value[-2:]
    return f"{trait}:{masked}"


class RedactingFilter(logging.Filter):
    """Rewrites each record's message through `redact` before any handler sees it,
    cut to `MAX_LOG_TEXT` characters (and its traceback too): no log line costs
    more than that to redact or to write, whatever it quotes."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not raise into the caller
            message = f"{record.msg} (log arguments that did not fit: {record.args!r})"
        cleaned = redact_bounded(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            trace = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact_bounded(trace, keep_end=True)
            record.exc_info = None
        context = _log_context.get()
        for name in LOG_FIELDS:
            value = record.__dict__.get(name)
            if value is None:
                value = context.get(name)
            if value is not None:
                record.__dict__[name] = _field_text(value)
        return True


# --------------------------------------------------------------------------
# The handover's fields on every record: a context variable
# --------------------------------------------------------------------------

LOG_FIELDS = ("handover_id", "conversation_sid", "target", "attempt")
"""The fields a JSON line carries where they apply (set in the log context or
passed as `extra`); text lines keep them in their message, as they always did."""
_log_context: ContextVar[Mapping[str, object]] = ContextVar(
    "flex_handover_log", default=MappingProxyType({})
)


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Records logged inside carry `fields` (None: not known, left out); the
    context before is back on exit, so a job or request never leaks into the next
    one run by the same task. asyncio copies the context into each task it starts."""
    current = _log_context.get()
    token = _log_context.set({**current, **_known(fields)} if fields else current)
    try:
        yield
    finally:
        _log_context.reset(token)


def set_log_context(**fields: object) -> None:
    """The current log context becomes `fields` alone: a job's start (arq runs each
    job in a task of its own, so they last as long as the job)."""
    _log_context.set(MappingProxyType(_known(fields)))


def add_log_context(**fields: object) -> None:
    """Add fields to the current log context, until the enclosing `log_context` ends."""
    _log_context.set({**_log_context.get(), **_known(fields)})


def count_attempt() -> None:
    """One more delivery attempt: `attempt` goes up by one (from the count the
    record had when the job started)."""
    attempt = _log_context.get().get("attempt")
    add_log_context(attempt=(attempt if isinstance(attempt, int) else 0) + 1)


_LOG_FIELD_NAMES = frozenset(LOG_FIELDS)


def _known(fields: Mapping[str, object]) -> dict[str, object]:
    unknown = fields.keys() - _LOG_FIELD_NAMES
    if unknown:
        raise TypeError(f"not a log field: {', '.join(sorted(unknown))}")
    return {name: value for name, value in fields.items() if value is not None and value != ""}


def _field_text(value: object) -> object:
    """A field's value as logged: a count as it is, anything else `caller_text`
    (a text remembered: a job logs the same handover id and conversation on
    every line, and a request that logs nothing costs nothing)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _field_text_of(value)
    return caller_text(value)


@functools.lru_cache(maxsize=4096)
def _field_text_of(value: str) -> str:
    return caller_text(value)


# U+2028, U+2029 and NEL are legal unescaped in JSON but end a line for many
# readers (Python's str.splitlines among them): escaped, a record stays one line.
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


class JsonFormatter(logging.Formatter):
    """One JSON object a line: `time` (ISO 8601, UTC), `level`, `logger`,
    `message`, the `LOG_FIELDS` a record carries, and `exc_info` (the traceback).

    It writes what `RedactingFilter` left on the record: use it only behind
    that filter (`redacting_handler` does)."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in LOG_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str).translate(_LINE_BREAKS)


LOG_FORMATS = ("text", "json")


def redacting_handler(stream: TextIO, log_format: str = "text") -> logging.Handler:
    """The one handler the service logs through: formatted (`text` or `json`), redacted."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(stream)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    return handler


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """One handler on stderr, redacted, in `log_format` (LOG_FORMAT); the chatty
    client loggers kept quiet.

    twilio-python logs every request's headers and URL at INFO, and aiohttp's
    access log would write every query string: both stay at WARNING.
    """
    handler = redacting_handler(sys.stderr, log_format)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("twilio", "aiohttp.access", "aiohttp_retry"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

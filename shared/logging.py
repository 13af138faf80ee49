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
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

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
        return True


def redacting_handler(stream: TextIO) -> logging.Handler:
    """The one handler the service logs through: formatted, redacted."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    return handler


def configure_logging(level: str = "INFO") -> None:
    """One handler on stderr, redacted; the chatty client loggers kept quiet.

    twilio-python logs every request's headers and URL at INFO, and aiohttp's
    access log would write every query string: both stay at WARNING.
    """
    handler = redacting_handler(sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("twilio", "aiohttp.access", "aiohttp_retry"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""Logging set-up and the redaction that keeps PII and secrets out of logs.

Handover code logs ids (handover_id, conversation_sid), never identities.
The filter below is the safety net for anything else: phone numbers, e-mail
addresses, credentials in a URL or header (`token=`, `Authorization: …`,
`X-Twilio-Signature: …`) and every secret the process was configured with
(`register_secrets`: tool and admin tokens, Twilio auth token and API secret)
are masked before a line is written.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

_PHONE = re.compile(r"\+\d{6,15}")
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_CREDENTIAL = re.compile(
    r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:basic|bearer)?\s*"
    r"|x-twilio-signature[\"']?\s*[:=]\s*[\"']?|token=|password=|secret=)"
    r"[^\s&\"',]+"
)
# `scheme://user:password@host`: the password of any URL, however short.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@", re.I)
_MIN_SECRET_LENGTH = 8
_secrets: tuple[str, ...] = ()


def register_secrets(*values: str | None) -> None:
    """Values never to print, whatever the context (longest first, so a secret
    that contains another is masked whole). Called with the settings' tokens."""
    global _secrets
    known = set(_secrets)
    known.update(v for v in values if v and len(v) >= _MIN_SECRET_LENGTH)
    _secrets = tuple(sorted(known, key=len, reverse=True))


def mask_phone(match: re.Match[str]) -> str:
    digits = match.group(0)
    return digits[:3] + "*" * (len(digits) - 5) + digits[-2:]


def redact(text: str) -> str:
    """Mask phone numbers, e-mail addresses and credentials in free text."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + "[redacted]@", text)
    text = _CREDENTIAL.sub(lambda m: m.group(1) + "[redacted]", text)
    text = _PHONE.sub(mask_phone, text)
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)


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
    """Rewrites each record's message through `redact` before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not raise into the caller
            message = f"{record.msg} (log arguments that did not fit: {record.args!r})"
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
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

"""HTTP Basic credentials as Twilio takes them (account SID and auth token, or an
API key and secret), as pure functions: the simulator refuses what Twilio
refuses, so a client that sends no or wrong credentials fails in tests too."""

from __future__ import annotations

import base64
import binascii
import hmac


def parse_basic_auth(header: str) -> tuple[str, str] | None:
    """(username, password) from a `Basic …` Authorization header; None if malformed."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon and username else None


def credential_pairs(*pairs: tuple[str | None, str | None]) -> list[tuple[str, str]]:
    """The configured (username, password) pairs; half a pair is a mistake."""
    if any((user is None) != (secret is None) for user, secret in pairs):
        raise ValueError("give account_sid with auth_token, and api_key with api_secret")
    return [(user, secret) for user, secret in pairs if user is not None and secret is not None]


def credentials_match(username: str, password: str, pairs: list[tuple[str, str]]) -> bool:
    """Whether (username, password) is one of `pairs`, compared in constant time."""
    return any(
        hmac.compare_digest(username.encode(), user.encode())
        and hmac.compare_digest(password.encode(), secret.encode())
        for user, secret in pairs
    )

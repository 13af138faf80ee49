"""api.auth, the pure parts: bearer parsing, token matching, the URL Twilio
signed, signature checking for form and JSON bodies, start-up warnings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from api import auth
from api.auth import (
    Scope,
    Tokens,
    bearer_token,
    first_value,
    public_url,
    scope_of,
    startup_warnings,
    twilio_signature_valid,
)
from shared.settings import Settings

AUTH_TOKEN = "unit-test-auth-token-0123456789"
VALIDATOR = RequestValidator(AUTH_TOKEN)
FORM = "application/x-www-form-urlencoded"
URL = "https://handover.example.com/tools/flex-handover?token=abc"


def reference_signature(url: str, params: list[tuple[str, str]] | None = None) -> str:
    """Twilio's scheme, written out independently of twilio-python: HMAC-SHA1 of
    the URL followed by each parameter name and value, sorted."""
    text = url
    for name in sorted({name for name, _ in params or []}):
        for value in sorted({v for n, v in params or [] if n == name}):
            text += name + value
    digest = hmac.new(AUTH_TOKEN.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def json_url(body: bytes, base: str = "https://handover.example.com/tools/flex-handover") -> str:
    return f"{base}?bodySHA256={hashlib.sha256(body).hexdigest()}"


# --- bearer tokens --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc123", "abc123"),
        ("bearer abc123", "abc123"),
        ("BEARER   abc123  ", "abc123"),
        ("  Bearer abc123", "abc123"),
        ("Bearer", None),
        ("Bearer    ", None),
        ("Basic QUM6eA==", None),
        ("Token abc123", None),
        ("abc123", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header, expected):
    assert bearer_token(header) == expected


def test_tokens_match_any_configured_token_so_rotation_works():
    tokens = Tokens(["old-token-0123456789", "new-token-0123456789"])
    assert tokens.matches("old-token-0123456789")
    assert tokens.matches("new-token-0123456789")
    assert not tokens.matches("new-token-012345678")  # a prefix
    assert not tokens.matches("new-token-01234567890")  # longer
    assert not tokens.matches("")
    assert not tokens.matches(None)
    assert not tokens.matches("nön-ascii-tøken-0123")  # compare_digest would raise on str


def test_no_tokens_match_nothing():
    tokens = Tokens([])
    assert not tokens
    assert not tokens.matches("anything-at-all-0123")


def test_every_configured_token_is_compared_whatever_matches(monkeypatch):
    """No early exit: the work done does not say which token matched."""
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    tokens = Tokens([f"token-number-{n}-0123456789" for n in range(3)])
    for candidate in ("token-number-0-0123456789", "token-number-2-0123456789", "x"):
        calls.clear()
        tokens.matches(candidate)
        assert calls == [(32, 32)] * 3  # hashed first: equal lengths, no length leak


def test_tokens_never_show_their_values():
    tokens = Tokens(["secret-token-0123456789"])
    assert "secret" not in repr(tokens) and "secret" not in str(tokens)


# --- which requests need which credentials ------------------------------------------------


@pytest.mark.parametrize(
    ("paths", "scope"),
    [
        (("/tools/flex-handover",), Scope.TOOL),
        (("/tools/flex-handover/billing",), Scope.TOOL),
        (("/tools",), Scope.TOOL),
        (("//tools/flex-handover",), Scope.TOOL),
        (("/handovers/ho_" + "0" * 32,), Scope.ADMIN),
        (("/handovers",), Scope.ADMIN),
        (("/handovers/ho_1/replay",), Scope.ADMIN),
        (("//handovers/x",), Scope.ADMIN),
        (("/weird", "/handovers/{handover_id}"), Scope.ADMIN),  # the route's template
        (("/handoversx",), Scope.OPEN),
        (("/toolsy",), Scope.OPEN),
        (("/healthz",), Scope.OPEN),
        (("/readyz",), Scope.OPEN),
        (("/openapi.json",), Scope.OPEN),
        (("/nowhere", None), Scope.OPEN),
    ],
)
def test_scope_of(paths, scope):
    assert scope_of(*paths) is scope


# --- the URL Twilio called ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("https", "https"),
        ("https, http", "https"),
        (" a.example , b", "a.example"),
        ("", None),
        (None, None),
        (",x", None),
    ],
)
def test_first_value(header, expected):
    assert first_value(header) == expected


PROXIED = {"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "handover.example.com, lb"}


def test_public_url_behind_a_trusted_proxy_uses_the_forwarded_scheme_and_host():
    url = public_url("http", "10.0.0.5:8080", "/tools/flex-handover?token=a%20b", PROXIED, True)
    assert url == "https://handover.example.com/tools/flex-handover?token=a%20b"


def test_public_url_ignores_forwarded_headers_unless_trusted():
    url = public_url("http", "10.0.0.5:8080", "/tools/flex-handover", PROXIED, False)
    assert url == "http://10.0.0.5:8080/tools/flex-handover"


def test_public_url_with_trust_but_no_headers_uses_the_request():
    assert public_url("http", "h:1", "/t", {}, True) == "http://h:1/t"


def test_public_url_refuses_a_forwarded_scheme_that_is_not_http():
    headers = {"X-Forwarded-Proto": "javascript", "X-Forwarded-Host": "h.example"}
    assert public_url("http", "h:1", "/t", headers, True) == "http://h.example/t"


# --- signatures ---------------------------------------------------------------------------


def test_form_body_signature():
    params = [("reason", "refund"), ("summary", "wants a person"), ("a", "2"), ("a", "1")]
    body = urlencode(params).encode()
    signature = reference_signature(URL, params)
    assert twilio_signature_valid(VALIDATOR, URL, FORM, body, signature)


def test_form_body_signature_tampered_body_or_url_fails():
    params = [("reason", "refund")]
    signature = reference_signature(URL, params)
    assert not twilio_signature_valid(VALIDATOR, URL, FORM, b"reason=refunds", signature)
    assert not twilio_signature_valid(VALIDATOR, URL, FORM, b"reason=refund&x=1", signature)
    assert not twilio_signature_valid(
        VALIDATOR, URL.replace("handover.", "evil."), FORM, b"reason=refund", signature
    )
    assert not twilio_signature_valid(VALIDATOR, URL + "x", FORM, b"reason=refund", signature)


def test_json_body_signature_with_body_hash():
    body = json.dumps({"reason": "refund", "summary": "x" * 100}).encode()
    url = json_url(body)
    signature = reference_signature(url)
    assert twilio_signature_valid(VALIDATOR, url, "application/json", body, signature)


def test_json_body_tampered_after_signing_fails():
    body = b'{"reason": "refund"}'
    url = json_url(body)
    signature = reference_signature(url)
    assert not twilio_signature_valid(
        VALIDATOR, url, "application/json", b'{"reason": "refunds"}', signature
    )
    # Rewriting the hash in the URL breaks the signature instead.
    forged = b'{"reason": "free money"}'
    assert not twilio_signature_valid(
        VALIDATOR, json_url(forged), "application/json", forged, signature
    )


def test_json_body_without_a_body_hash_is_not_covered_so_it_fails():
    body = b'{"reason": "refund"}'
    url = "https://handover.example.com/tools/flex-handover"
    signature = reference_signature(url)
    assert not twilio_signature_valid(VALIDATOR, url, "application/json", body, signature)


def test_empty_body_signs_the_url_alone():
    signature = reference_signature(URL)
    assert twilio_signature_valid(VALIDATOR, URL, "", b"", signature)
    assert twilio_signature_valid(VALIDATOR, URL, FORM, b"", signature)


def test_signature_with_or_without_the_default_port():
    """Twilio's back end signs inconsistently: both forms are accepted."""
    signature = reference_signature("https://handover.example.com:443/tools/flex-handover")
    assert twilio_signature_valid(
        VALIDATOR, "https://handover.example.com/tools/flex-handover", "", b"", signature
    )


@pytest.mark.parametrize("signature", [None, "", "not-base64", reference_signature(URL + "x")])
def test_missing_or_wrong_signature_fails(signature):
    assert not twilio_signature_valid(VALIDATOR, URL, "", b"", signature)


def test_signature_made_with_another_auth_token_fails():
    other = RequestValidator("another-auth-token-0123456")
    signature = other.compute_signature(URL, {"reason": "refund"})
    assert not twilio_signature_valid(VALIDATOR, URL, FORM, b"reason=refund", signature)


def test_form_body_that_is_not_utf8_fails():
    signature = reference_signature(URL)
    assert not twilio_signature_valid(VALIDATOR, URL, FORM, b"reason=\xff", signature)


def test_non_ascii_signature_header_does_not_raise():
    assert not twilio_signature_valid(VALIDATOR, URL, "", b"", "sïgnature")
    assert not twilio_signature_valid(VALIDATOR, json_url(b"{}"), "application/json", b"{}", "ß")


# --- property tests -----------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
paths = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12),
    min_size=1,
    max_size=3,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    params=st.lists(st.tuples(text.filter(bool), text), max_size=6),
    segments=paths,
    query=st.dictionaries(st.sampled_from(["token", "x", "lang"]), text, max_size=2),
)
def test_property_form_signatures_validate_and_any_change_fails(params, segments, query):
    url = "https://h.example/" + "/".join(segments)
    if query:
        url += "?" + urlencode(query, quote_via=quote)
    body = urlencode(params).encode()
    signature = reference_signature(url, params)
    assert twilio_signature_valid(VALIDATOR, url, FORM, body, signature)
    assert not twilio_signature_valid(VALIDATOR, url + "z", FORM, body, signature)
    changed = urlencode([*params, ("zz-added", "1")]).encode()
    assert not twilio_signature_valid(VALIDATOR, url, FORM, changed, signature)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(min_size=1, max_size=200), data=st.data())
def test_property_json_signatures_validate_and_any_body_byte_change_fails(body, data):
    url = json_url(body)
    signature = reference_signature(url)
    assert twilio_signature_valid(VALIDATOR, url, "application/json", body, signature)
    position = data.draw(st.integers(0, len(body) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = body[:position] + bytes([body[position] ^ flip]) + body[position + 1 :]
    assert not twilio_signature_valid(VALIDATOR, url, "application/json", tampered, signature)


@settings(max_examples=60)
@given(signature=st.text(max_size=40), body=st.binary(max_size=50))
def test_property_arbitrary_signatures_never_pass_or_raise(signature, body):
    assert not twilio_signature_valid(VALIDATOR, URL, FORM, body, signature)


# --- start-up warnings -----------------------------------------------------------------------


def test_unauthenticated_mode_warns_about_both_endpoints():
    warnings = " ".join(startup_warnings(Settings(allow_unauthenticated=True)))
    assert "tool endpoint open to anyone: for a laptop only" in warnings
    assert "/handovers" in warnings


def test_unauthenticated_mode_with_an_admin_token_warns_about_the_tool_endpoint_only():
    warnings = startup_warnings(
        Settings(allow_unauthenticated=True, admin_tokens=("admin-token-0123456789",))
    )
    assert len(warnings) == 1 and "tool endpoint open to anyone" in warnings[0]


def test_configured_tokens_warn_about_nothing_but_missing_admin_tokens():
    assert startup_warnings(Settings(tool_tokens=("t" * 16,), admin_tokens=("a" * 16,))) == []
    [warning] = startup_warnings(Settings(tool_tokens=("t" * 16,)))
    assert "HANDOVER_ADMIN_TOKENS" in warning and "403" in warning

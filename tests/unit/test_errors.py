"""api.errors: each refusal's status, code, headers and message, as callers get them."""

from __future__ import annotations

import pytest

from api import errors
from api.errors import (
    ApiError,
    BacklogFull,
    BadRequest,
    BodyTooLarge,
    Conflict,
    Forbidden,
    HttpError,
    InvalidBody,
    InvalidIdentity,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    Unavailable,
    UnknownHandover,
    UnknownTarget,
    UnsupportedMediaType,
)

REFUSALS = [
    (BadRequest("missing_identity", "No customer identity."), 400, "missing_identity", {}),
    (InvalidBody("is not valid JSON."), 400, "invalid_body", {}),
    (InvalidIdentity("it is empty"), 400, "invalid_identity", {}),
    (Unauthorized("Send a token."), 401, "unauthorized", {"WWW-Authenticate": "Bearer"}),
    (Forbidden("The admin token is not valid."), 403, "forbidden", {}),
    (UnknownTarget("vip"), 404, "unknown_target", {}),
    (UnknownHandover("ho_1"), 404, "unknown_handover", {}),
    (Conflict("in_progress", "still queued."), 409, "in_progress", {}),
    (BodyTooLarge(300), 413, "body_too_large", {}),
    (UnsupportedMediaType("Application/XML"), 415, "unsupported_media_type", {}),
    (RateLimited("identity", 60, 7), 429, "rate_limited", {"Retry-After": "7"}),
    (Unavailable(), 503, "unavailable", {"Retry-After": str(errors.RETRY_AFTER_SECONDS)}),
    (BacklogFull(30), 503, "backlog_full", {"Retry-After": "30"}),
    (HttpError(405, "Method Not Allowed", "/healthz"), 405, "method_not_allowed", {}),
    (MethodNotAllowed("GET", "/mcp", "POST"), 405, "method_not_allowed", {"Allow": "POST"}),
    (NotAcceptable("Accept JSON."), 406, "not_acceptable", {}),
]


@pytest.mark.parametrize(("refusal", "status", "code", "headers"), REFUSALS)
def test_each_refusal_carries_its_status_code_and_headers(refusal, status, code, headers):
    assert isinstance(refusal, ApiError)
    assert (refusal.status, refusal.code, refusal.headers) == (status, code, headers)
    assert refusal.body() == {"error": code, "message": refusal.message}
    assert str(refusal) == refusal.message


def test_the_status_classes_sort_the_refusals():
    assert issubclass(InvalidBody, BadRequest) and issubclass(InvalidIdentity, BadRequest)
    assert issubclass(UnknownTarget, NotFound) and issubclass(UnknownHandover, NotFound)
    assert issubclass(Unavailable, ServiceUnavailable)
    assert issubclass(BacklogFull, ServiceUnavailable)


def test_a_refusal_does_not_share_its_headers():
    first, second = Unauthorized("a."), Unauthorized("b.")
    first.headers["X-Extra"] = "1"
    assert second.headers == {"WWW-Authenticate": "Bearer"}


# The messages a class builds, word for word: the model may relay them.
MESSAGES = [
    (
        InvalidBody("is not valid JSON at character 3."),
        "The request body is not valid JSON at character 3.",
    ),
    (InvalidIdentity("it is empty"), "The customer identity is unusable: it is empty."),
    (UnknownTarget("vip"), "There is no handover target named 'vip'."),
    (UnknownHandover("ho_1"), "No handover with id 'ho_1'."),
    (BodyTooLarge(300), "The request body is larger than 300 bytes."),
    (
        UnsupportedMediaType("Application/XML"),
        "The request body is application/xml; send JSON, a form-encoded body or no body.",
    ),
    (
        UnsupportedMediaType("", "a JSON-RPC message as application/json"),
        "The request body is unlabelled; send a JSON-RPC message as application/json.",
    ),
    (MethodNotAllowed("GET", "/mcp", "POST"), "GET is not served at /mcp; it answers POST only."),
    (
        RateLimited("identity", 60, 7),
        (
            "Too many handovers were requested for this customer within 60 seconds. "
            "Try again in 7 seconds."
        ),
    ),
    (
        RateLimited("conversation", 1, 1),
        (
            "Too many handovers were requested for this conversation within 1 seconds. "
            "Try again in 1 seconds."
        ),
    ),
    (
        Unavailable(),
        "The handover service cannot store requests right now. Please try again in a few seconds.",
    ),
    (Unavailable("Redis cannot be reached."), "Redis cannot be reached."),
    (
        BacklogFull(30),
        (
            "Too many customers are waiting to be transferred right now, so this transfer could "
            "not be started. Please try again in 30 seconds."
        ),
    ),
    (HttpError(404, "Not Found", "/nope"), "Not Found: /nope"),
]


@pytest.mark.parametrize(("refusal", "message"), MESSAGES)
def test_each_class_words_its_message(refusal, message):
    assert refusal.message == message

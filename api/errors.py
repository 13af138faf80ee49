"""Every refusal the API answers, as one exception tree.

A refusal carries its HTTP status, a machine-readable code (the JSON answer's
`error`), a message written for the model that may relay it and the person who
configured the tool, and the headers it is sent with. Parsing, auth and the
handlers raise them; `api.app.json_errors` alone turns one into the answer
`{"error": code, "message": message}`. No aiohttp here: parsing raises these
and stays pure.

`BadRequest`, `NotFound`, `Conflict` and `ServiceUnavailable` take the code
they are raised with; every other class fixes its code and builds its message
from what it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

RETRY_AFTER_SECONDS = 2
"""The seconds `Unavailable` asks the caller to wait before trying again."""
CHALLENGE = {"WWW-Authenticate": "Bearer"}


class ApiError(Exception):
    """A request the API refuses: its status, code, message and headers."""

    status: int = 500

    def __init__(self, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        """The JSON answer's body."""
        return {"error": self.code, "message": self.message}


class BadRequest(ApiError):
    """400: the request is malformed; the message says what to fix."""

    status = 400


class InvalidBody(BadRequest):
    """400 `invalid_body`: the body cannot be read as the tool input."""

    def __init__(self, what: str):
        super().__init__("invalid_body", f"The request body {what}")


class InvalidIdentity(BadRequest):
    """400 `invalid_identity`: X-Identity (or the body's identity) names no usable customer."""

    def __init__(self, why: str):
        super().__init__("invalid_identity", f"The customer identity is unusable: {why}.")


class Unauthorized(ApiError):
    """401 `unauthorized`: no credentials were sent; the challenge says which kind."""

    status = 401

    def __init__(self, message: str):
        super().__init__("unauthorized", message, CHALLENGE)


class Forbidden(ApiError):
    """403 `forbidden`: the credentials are wrong, or none are configured to check."""

    status = 403

    def __init__(self, message: str):
        super().__init__("forbidden", message)


class CsrfRefused(ApiError):
    """403 `csrf`: a state-changing request signed in by the operator page's session
    cookie, without the session's `X-CSRF-Token` (or with another one)."""

    status = 403

    def __init__(self) -> None:
        super().__init__(
            "csrf",
            "This request is signed in by a session cookie and changes something: send the "
            "session's CSRF token as the X-CSRF-Token header (GET /ui/session answers it).",
        )


class NotFound(ApiError):
    """404: no such handover, target or path."""

    status = 404


class UnknownTarget(NotFound):
    def __init__(self, target: str):
        super().__init__("unknown_target", f"There is no handover target named '{target}'.")


class UnknownHandover(NotFound):
    def __init__(self, handover_id: str):
        super().__init__("unknown_handover", f"No handover with id '{handover_id}'.")


class Conflict(ApiError):
    """409: the handover's state forbids the request (a replay of a live one)."""

    status = 409


class BodyTooLarge(ApiError):
    """413 `body_too_large`."""

    status = 413

    def __init__(self, limit: int):
        super().__init__("body_too_large", f"The request body is larger than {limit} bytes.")


class UnsupportedMediaType(ApiError):
    """415 `unsupported_media_type`: a body that is neither JSON, a form nor empty."""

    status = 415

    def __init__(self, content_type: str, accepted: str = "JSON, a form-encoded body or no body"):
        super().__init__(
            "unsupported_media_type",
            f"The request body is {content_type.lower() or 'unlabelled'}; send {accepted}.",
        )


class MethodNotAllowed(ApiError):
    """405 `method_not_allowed` with `Allow`: a path we answer, not with this method
    (aiohttp's own 405 is an `HttpError`)."""

    status = 405

    def __init__(self, method: str, path: str, allow: str):
        super().__init__(
            "method_not_allowed",
            f"{method} is not served at {path}; it answers {allow} only.",
            {"Allow": allow},
        )


class NotAcceptable(ApiError):
    """406 `not_acceptable`: the caller's `Accept` excludes the one type we answer."""

    status = 406

    def __init__(self, message: str):
        super().__init__("not_acceptable", message)


class RateLimited(ApiError):
    """429 `rate_limited`: too many NEW handovers for one conversation or customer;
    nothing was stored."""

    status = 429

    def __init__(self, limited_by: str | None, window_seconds: int, retry_after: int):
        self.limited_by = limited_by
        who = "this customer" if limited_by == "identity" else "this conversation"
        super().__init__(
            "rate_limited",
            f"Too many handovers were requested for {who} within {window_seconds} seconds. "
            f"Try again in {retry_after} seconds.",
            {"Retry-After": str(retry_after)},
        )


class TooManySignIns(ApiError):
    """429 `too_many_sign_ins`: this client address failed to sign in to the operator
    page too often within a minute; not even the right token is checked until
    `Retry-After` has passed."""

    status = 429

    def __init__(self, limit: int, retry_after: int):
        super().__init__(
            "too_many_sign_ins",
            f"More than {limit} failed sign-ins from this address within a minute. "
            f"Try again in {retry_after} seconds.",
            {"Retry-After": str(retry_after)},
        )


class ServiceUnavailable(ApiError):
    """503: nothing was stored; try again after `Retry-After` seconds."""

    status = 503

    def __init__(self, code: str, message: str, retry_after: int):
        super().__init__(code, message, {"Retry-After": str(retry_after)})


class Unavailable(ServiceUnavailable):
    """503 `unavailable`: Redis cannot be reached or refuses writes."""

    MESSAGE: ClassVar[str] = (
        "The handover service cannot store requests right now. Please try again in a few seconds."
    )

    def __init__(self, message: str = MESSAGE):
        super().__init__("unavailable", message, RETRY_AFTER_SECONDS)


class NotReplicated(ServiceUnavailable):
    """503 `not_replicated`: stored on the primary, but too few replicas confirmed it
    (HANDOVER_MIN_REPLICAS): a failover could lose it. A retry is answered from what
    was stored (de-duplicated), once the replicas have it."""

    def __init__(self, detail: str):
        super().__init__(
            "not_replicated",
            f"The handover request was not confirmed by enough Redis replicas ({detail}). "
            "Please try again: a retry is answered with the same handover.",
            RETRY_AFTER_SECONDS,
        )


class BacklogFull(ServiceUnavailable):
    """503 `backlog_full`: HANDOVER_MAX_PENDING handovers already wait for a worker."""

    def __init__(self, retry_after: int):
        super().__init__(
            "backlog_full",
            "Too many customers are waiting to be transferred right now, so this transfer "
            f"could not be started. Please try again in {retry_after} seconds.",
            retry_after,
        )


class HttpError(ApiError):
    """A refusal aiohttp makes itself (an unknown path, a wrong method), in the
    same shape: its code is the reason phrase, `method_not_allowed`."""

    def __init__(self, status: int, reason: str, path: str):
        super().__init__(reason.lower().replace(" ", "_"), f"{reason}: {path}")
        self.status = status


class NotConfigured(ApiError):
    """503 `not_configured`: the endpoint needs a setting this deployment lacks (no
    `Retry-After`: waiting will not help, an operator must set it)."""

    status = 503

    def __init__(self, message: str):
        super().__init__("not_configured", message)

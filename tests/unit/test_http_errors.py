"""api.http_errors: aiohttp's record of a malformed request becomes one WARNING
line; anything else it logs (a server error, our own bug) is left as it is."""

from __future__ import annotations

import logging
import time

import pytest
from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadStatusLine,
    InvalidHeader,
    LineTooLong,
)

from api.http_errors import MalformedRequestFilter, client_error_status, reason_of
from shared.logging import MAX_CALLER_TEXT


def record_of(exc: BaseException, msg: str = "Error handling request from %s", args=("10.0.0.7",)):
    return logging.LogRecord(
        "flex_handover.api.http_errors",
        logging.ERROR,
        __file__,
        1,
        msg,
        args,
        (type(exc), exc, None),
    )


def test_a_parse_error_becomes_one_warning_line_without_its_traceback():
    exc = BadHttpMessage("Invalid header value char:\n\n  b'X-A: a\\x01b'\n          ^")
    record = record_of(exc)
    assert MalformedRequestFilter().filter(record)
    assert (record.levelno, record.levelname, record.exc_info) == (logging.WARNING, "WARNING", None)
    assert record.getMessage() == (
        "malformed HTTP request from 10.0.0.7 refused with 400: Invalid header value char"
    )


def test_the_bytes_aiohttp_quotes_are_not_repeated():
    assert reason_of(BadStatusLine("GET /?token=abc HTTP/1.1 x")) == "Bad status line"
    too_long = LineTooLong("b'" + "a" * 100 + "...'", "8190")
    assert "aaaa" not in reason_of(too_long) and reason_of(too_long).startswith("Got more than")


def test_a_record_aiohttp_logs_lower_stays_as_low():
    record = record_of(BadHttpMessage("Invalid method encountered"))
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    assert MalformedRequestFilter().filter(record)
    assert record.levelno == logging.DEBUG and record.exc_info is None


def test_a_server_error_keeps_its_traceback():
    for exc in (RuntimeError("bug"), ValueError("x")):
        record = record_of(exc, "Unhandled exception", ())
        assert MalformedRequestFilter().filter(record)
        assert record.levelno == logging.ERROR and record.exc_info is not None
    assert client_error_status(RuntimeError()) is None


def test_a_body_already_reported_is_not_reported_twice():
    from api.http_errors import report_malformed_body

    class Request:
        remote = "10.0.0.8"

    exc = web.RequestPayloadError("400, message:\n  Can not decode content-encoding: gzip")
    report_malformed_body(Request(), exc)  # type: ignore[arg-type]  # a stand-in with .remote only
    assert not MalformedRequestFilter().filter(record_of(exc, "Unhandled exception", ()))
    fresh = web.RequestPayloadError("400, message:\n  Can not decode content-encoding: gzip")
    record = record_of(fresh, "Unhandled exception", ())
    assert MalformedRequestFilter().filter(record)
    assert record.getMessage() == (
        "malformed HTTP request body: Can not decode content-encoding: gzip"
    )


@pytest.mark.parametrize("filler", [" ", "\t", ": ", " b"])
def test_the_reason_of_a_long_malformed_line_costs_a_bounded_amount(filler):
    """aiohttp's pure-Python parser quotes the caller's whole line; a long run of
    spaces with no quote after it made the split that drops the quote quadratic
    (8,000 spaces: about 1 s on the event loop)."""
    exc = InvalidHeader(b"a" + filler.encode() * 50_000 + b"\x00")
    started = time.process_time()
    reason = reason_of(exc)
    assert time.process_time() - started < 0.5
    assert len(reason) <= MAX_CALLER_TEXT + 20

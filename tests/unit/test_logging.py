"""shared.logging: phone numbers, e-mails and credentials never reach a log line."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import pytest

from shared.logging import RedactingFilter, configure_logging, mask_identity, redact

PHONE = "+14155550123"
MASKED_PHONE = "+14*******23"


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"calling {PHONE} now", f"calling {MASKED_PHONE} now"),
        (f"whatsapp:{PHONE}", f"whatsapp:{MASKED_PHONE}"),
        ("short +123456 long +123456789012345", "short +12**56 long +12***********45"),
        ("+12345 is too short to be a number", "+12345 is too short to be a number"),
        ("order 14155550123 has no plus", "order 14155550123 has no plus"),
        ("mail ada.lovelace@example.co.uk please", "mail a***@example.co.uk please"),
        ("to: a@b.io, b.c+tag@mail.example.com", "to: a***@b.io, b***@mail.example.com"),
        ("Authorization: Basic QUMxMjM6c2VjcmV0", "Authorization: Basic [redacted]"),
        ("authorization=Bearer eyJhbGciOi.x.y", "authorization=Bearer [redacted]"),
        (
            "{'Authorization': 'Basic QUMxMjM6c2VjcmV0', 'Accept': 'json'}",
            "{'Authorization': 'Basic [redacted]', 'Accept': 'json'}",
        ),
        ('{"Authorization": "Bearer abc"}', '{"Authorization": "Bearer [redacted]"}'),
        (
            "GET /x?token=abc123&page=2 and ?access_token=zzz",
            "GET /x?token=[redacted]&page=2 and ?access_token=[redacted]",
        ),
        ("password=hunter2 secret=s3cr3t", "password=[redacted] secret=[redacted]"),
        ("handover ho_123 for CH0123 succeeded", "handover ho_123 for CH0123 succeeded"),
    ],
)
def test_redact(text, expected):
    assert redact(text) == expected


def test_redact_everything_in_one_line():
    line = f"POST ?Token=t0k3n from {PHONE} <ada@example.com> Authorization: Basic QUM6eA=="
    cleaned = redact(line)
    for secret in ("t0k3n", PHONE, "ada@example.com", "QUM6eA=="):
        assert secret not in cleaned
    assert cleaned == (
        f"POST ?Token=[redacted] from {MASKED_PHONE} <a***@example.com> "
        "Authorization: Basic [redacted]"
    )


@pytest.mark.parametrize(
    "identity, expected",
    [
        (f"whatsapp:{PHONE}", f"whatsapp:{MASKED_PHONE}"),
        (f"phone:{PHONE}", f"phone:{MASKED_PHONE}"),
        (f"user_id:{PHONE}", f"user_id:{MASKED_PHONE}"),
        ("email:ada@example.com", "email:a***@example.com"),
        ("flex_participant:FX" + "ab" * 16, "flex_participant:FX" + "ab" * 16),
        ("user_id:FX" + "ab" * 16, "user_id:FX" + "ab" * 16),
        ("user_id:US" + "cd" * 16, "user_id:US" + "cd" * 16),
        ("user_id:customer-4711", "user_id:cu*********11"),
        ("user_id:foo:barbaz", "user_id:fo******az"),
        ("email:ada@localhost", "email:ad*********st"),
        ("user_id:bob", "user_id:bob"),
        (PHONE, MASKED_PHONE),
    ],
)
def test_mask_identity(identity, expected):
    assert mask_identity(identity) == expected


# --------------------------------------------------------------------------
# RedactingFilter on a real logger
# --------------------------------------------------------------------------


class ListHandler(logging.Handler):
    """Keeps each formatted line, as a stream handler would write it."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        self.addFilter(RedactingFilter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured():
    """A logger whose only handler redacts, like the one configure_logging installs."""
    logger = logging.getLogger("flex_handover.test_logging")
    handler = ListHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, handler.lines
    logger.removeHandler(handler)
    logger.propagate = True


def test_filter_redacts_percent_args(captured):
    logger, lines = captured
    logger.info("handover %s for %s via %r", "ho_1", PHONE, {"email": "ada@example.com"})
    assert lines == [f"INFO handover ho_1 for {MASKED_PHONE} via {{'email': 'a***@example.com'}}"]


def test_filter_keeps_clean_messages_as_they_are(captured):
    logger, lines = captured
    logger.warning("handover %s: attempt %d failed", "ho_2", 3)
    logger.warning("100%% of %s done", "ho_2")
    logger.warning("100%% literal")  # no args: logging does no %-formatting
    assert lines == [
        "WARNING handover ho_2: attempt 3 failed",
        "WARNING 100% of ho_2 done",
        "WARNING 100%% literal",
    ]


def test_filter_redacts_a_message_without_args(captured):
    logger, lines = captured
    logger.error("token=abc123 from " + PHONE)  # noqa: G003 - the message is built before the filter sees it
    assert lines == [f"ERROR token=[redacted] from {MASKED_PHONE}"]


def test_filter_redacts_exception_text(captured):
    logger, lines = captured
    try:
        raise ValueError(f"Invalid 'From' number {PHONE} for ada@example.com")
    except ValueError:
        logger.exception("delivery of %s failed", "ho_3")
    [line] = lines
    assert line.startswith("ERROR delivery of ho_3 failed\nTraceback (most recent call last):")
    assert f"ValueError: Invalid 'From' number {MASKED_PHONE} for a***@example.com" in line
    assert PHONE not in line and "ada@example.com" not in line


def test_filter_redacts_an_exception_passed_as_exc_info(captured):
    logger, lines = captured
    error = RuntimeError(f"Authorization: Basic c2VjcmV0 for {PHONE}")
    logger.warning("twilio call failed", exc_info=error)
    [line] = lines
    assert "RuntimeError: Authorization: Basic [redacted] for " + MASKED_PHONE in line
    assert "c2VjcmV0" not in line and PHONE not in line


def test_filter_never_raises_into_the_caller(captured):
    """A log call whose arguments do not fit its format must not break the job."""
    logger, lines = captured
    logger.info("handover %s for %s", PHONE)  # noqa: PLE1206 - one argument short on purpose
    [line] = lines
    assert line.startswith("INFO handover %s for %s")
    assert MASKED_PHONE in line and PHONE not in line


def test_configure_logging_installs_one_redacting_handler():
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_twilio = logging.getLogger("twilio").level
    try:
        configure_logging("DEBUG")
        [handler] = root.handlers
        assert any(isinstance(f, RedactingFilter) for f in handler.filters)
        assert root.level == logging.DEBUG
        assert logging.getLogger("twilio").level == logging.WARNING
        assert logging.getLogger("aiohttp.access").level == logging.WARNING
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        logging.getLogger("twilio").setLevel(saved_twilio)


def service_modules():
    """Every module of api/, worker/ and shared/, imported."""
    for package in ("api", "worker", "shared"):
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
            yield importlib.import_module(f"{package}.{info.name}")


def module_loggers() -> dict[str, logging.Logger]:
    """module name → the logger it defines (`logger`, or aiohttp's `server_logger`)."""
    found = {}
    for module in service_modules():
        for attribute in ("logger", "server_logger"):
            value = getattr(module, attribute, None)
            if isinstance(value, logging.Logger) and attribute in module.__dict__:
                found.setdefault(module.__name__, value)
    return found


def test_every_module_logs_under_its_own_name():
    loggers = module_loggers()
    assert {"api.app", "api.auth", "api.http_errors", "api.server"} <= loggers.keys()
    assert {"worker.main", "worker.delivery", "worker.claim", "worker.handover"} <= loggers.keys()
    for module, logger in loggers.items():
        assert logger.name == f"flex_handover.{module}", module
    imported = [
        (module.__name__, name)
        for module in service_modules()
        for name, value in vars(module).items()
        if isinstance(value, logging.Logger)
        and value.name.startswith("flex_handover")
        and value.name.removeprefix("flex_handover.") not in loggers
    ]
    assert imported == [], "a logger not named after the module that defines it"


def test_configuration_reaches_every_module_logger(capsys):
    """The level and the redacting handler are set once, on the root: every
    `flex_handover.<module>` logger inherits them."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("WARNING")
        for module, logger in module_loggers().items():
            assert logger.getEffectiveLevel() == logging.WARNING, module
            logger.info("quiet %s", module)
            logger.warning("from %s for %s", module, PHONE)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    written = capsys.readouterr().err
    assert "quiet" not in written and PHONE not in written
    for module in module_loggers():
        assert f" WARNING flex_handover.{module}: from {module} for {MASKED_PHONE}" in written


def test_twilio_signature_headers_are_redacted():
    assert (
        redact("X-Twilio-Signature: 0OsjNgUy+9bJ7mAx1fRQ0d3I1x8=")
        == "X-Twilio-Signature: [redacted]"
    )
    assert redact("{'X-Twilio-Signature': 'abc/def+='}") == "{'X-Twilio-Signature': '[redacted]'}"


def test_registered_secrets_are_masked_wherever_they_appear():
    from shared.logging import register_secrets

    register_secrets("unit-secret-value-0123", "short", None)
    assert redact("raw unit-secret-value-0123 in text") == "raw [redacted] in text"
    assert redact("short stays: too short to be a registered secret") == (
        "short stays: too short to be a registered secret"
    )


def test_a_url_password_is_masked_however_short():
    text = redact("lost redis://default:pw@cache:6379/0 and rediss://:s3@host/1")
    assert text == "lost redis://default:[redacted]@cache:6379/0 and rediss://:[redacted]@host/1"


def test_filter_cuts_a_long_message_and_its_traceback(captured):
    """No log line costs more than MAX_LOG_TEXT characters to redact or write,
    whatever it quotes; the traceback keeps its end, where the exception is."""
    from shared.logging import MAX_LOG_TEXT

    logger, lines = captured
    quoted = "x" * 50 + PHONE + "a." * 500_000
    try:
        raise ValueError("a." * 500_000 + f" for {PHONE}")
    except ValueError:
        logger.exception("twilio said %s", quoted)
    [line] = lines
    message, _, trace = line.partition("\n")
    assert message.startswith(f"ERROR twilio said {'x' * 50}{MASKED_PHONE}a.a.")
    assert message.endswith(f"…(+{len('twilio said ') + len(quoted) - MAX_LOG_TEXT} chars)")
    assert len(message) < MAX_LOG_TEXT + 40
    assert trace.startswith("…(") and "chars before)…" in trace
    assert trace.endswith(f"a.a. for {MASKED_PHONE}")
    assert len(trace) < MAX_LOG_TEXT + 40
    assert PHONE not in line


# --------------------------------------------------------------------------
# LOG_FORMAT=json: one redacted JSON object a line
# --------------------------------------------------------------------------


@pytest.fixture
def json_lines():
    """A logger whose only handler is the service's, in the json format, on a buffer."""
    import io

    from shared.logging import redacting_handler

    logger = logging.getLogger("flex_handover.test_logging.json")
    stream = io.StringIO()
    handler = redacting_handler(stream, "json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def lines() -> list[str]:
        return stream.getvalue().splitlines()

    yield logger, lines
    logger.removeHandler(handler)
    logger.propagate = True


def parsed(lines) -> list[dict]:
    import json

    return [json.loads(line) for line in lines()]


def test_json_lines_carry_time_level_logger_message_and_the_context(json_lines):
    from datetime import UTC, datetime, timedelta

    from shared.logging import add_log_context, count_attempt, log_context

    logger, lines = json_lines
    logger.info("before any job")
    with log_context(handover_id="ho_1", conversation_sid="CH" + "a" * 32):
        add_log_context(target="billing", attempt=2)
        count_attempt()
        logger.warning("handover %s: attempt failed", "ho_1")
        logger.info("one call names another", extra={"handover_id": "ho_2", "attempt": None})
    logger.info("after the job")
    before, during, named, after = parsed(lines)
    assert before.keys() == after.keys() == {"time", "level", "logger", "message"}
    assert during == {
        "time": during["time"],
        "level": "WARNING",
        "logger": "flex_handover.test_logging.json",
        "message": "handover ho_1: attempt failed",
        "handover_id": "ho_1",
        "conversation_sid": "CH" + "a" * 32,
        "target": "billing",
        "attempt": 3,
    }
    assert (named["handover_id"], named["attempt"]) == ("ho_2", 3)  # extra wins; None: not given
    assert during["time"].endswith("Z")
    written = datetime.fromisoformat(during["time"])
    assert written.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - written) < timedelta(minutes=5)


def test_the_log_context_is_per_task_and_ends_with_its_block(json_lines):
    import asyncio

    from shared.logging import add_log_context, log_context

    logger, lines = json_lines

    async def job(handover_id: str) -> None:
        with log_context(handover_id=handover_id):
            await asyncio.sleep(0)
            add_log_context(target=f"t-{handover_id}")
            await asyncio.sleep(0)
            logger.info("running")

    async def both() -> None:
        await asyncio.gather(job("ho_a"), job("ho_b"))

    asyncio.run(both())
    logger.info("outside")
    records = parsed(lines)
    assert sorted((r.get("handover_id", ""), r.get("target", "")) for r in records) == [
        ("", ""),
        ("ho_a", "t-ho_a"),
        ("ho_b", "t-ho_b"),
    ]
    with pytest.raises(TypeError, match="not a log field: phone"):
        add_log_context(phone=PHONE)


def test_json_lines_are_redacted_message_exception_and_fields(json_lines):
    from shared.logging import log_context

    logger, lines = json_lines
    with log_context(target=f"odd target {PHONE}"):
        try:
            raise ValueError(f"Invalid 'From' number {PHONE} for ada@example.com token=abc123")
        except ValueError:
            logger.exception("delivery for %s failed", PHONE)
    [record] = parsed(lines)
    assert record["message"] == f"delivery for {MASKED_PHONE} failed"
    assert record["exc_info"].startswith("Traceback (most recent call last):")
    assert record["exc_info"].endswith(
        f"ValueError: Invalid 'From' number {MASKED_PHONE} for a***@example.com token=[redacted]"
    )
    assert record["target"] == f"odd target {MASKED_PHONE}"
    text = "\n".join(lines())
    for value in (PHONE, PHONE[1:], "ada@example.com", "abc123"):
        assert value not in text


def test_json_keeps_non_ascii_and_line_breaks_inside_one_line(json_lines):
    logger, lines = json_lines
    message = "Zoë wrote:\nline two\r\nthree\u2028four\u2029five\x85six\x0bseven 日本"
    logger.info(message)
    logger.info("next")
    assert len(lines()) == 2
    first, second = parsed(lines)
    assert first["message"] == message
    assert "Zoë" in lines()[0] and "日本" in lines()[0]  # readable, not \\u-escaped
    assert second["message"] == "next"


def test_a_hostile_megabyte_is_cut_in_json_as_in_text(json_lines):
    from shared.logging import MAX_CALLER_TEXT, MAX_LOG_TEXT

    logger, lines = json_lines
    hostile = ("a." * 250_000 + PHONE + "\n") * 2
    try:
        raise RuntimeError(hostile)
    except RuntimeError:
        logger.exception("caller sent %s", hostile, extra={"conversation_sid": hostile})
    [line] = lines()
    [record] = parsed(lines)
    assert len(record["message"]) < MAX_LOG_TEXT + 40
    assert record["message"].endswith(" chars)")
    assert len(record["exc_info"]) < MAX_LOG_TEXT + 40
    assert len(record["conversation_sid"]) < MAX_CALLER_TEXT + 40
    assert len(line) < 3 * MAX_LOG_TEXT
    assert PHONE not in line


def test_the_text_format_is_unchanged_by_the_context(capsys):
    from shared.logging import log_context

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("INFO")
        with log_context(handover_id="ho_9", target="billing"):
            logging.getLogger("flex_handover.test").info("handover ho_9 stored")
        configure_logging("INFO", "json")
        with log_context(handover_id="ho_9"):
            logging.getLogger("flex_handover.test").info("handover ho_9 stored")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    text, json_line = capsys.readouterr().err.splitlines()
    assert text.endswith(" INFO flex_handover.test: handover ho_9 stored")
    assert json_line.startswith('{"time": "') and '"handover_id": "ho_9"' in json_line


def test_an_unknown_log_format_is_refused():
    import io

    from shared.logging import redacting_handler

    with pytest.raises(ValueError, match="text, json"):
        redacting_handler(io.StringIO(), "yaml")

"""The worker's only door to Twilio: the official client, bounded and classified.

twilio-python's async client ignores its timeout, reads any body whole and its
exceptions carry no response headers, so `BoundedHttpClient` adds all three:
every request is cut off after `attempt_timeout`, a body is read up to
MAX_ANSWER_BYTES and no further (`AnswerTooLarge`), and the last answer's
status and `Retry-After` are kept for the calling task (a ContextVar, so
concurrent jobs never see each other's). Its connection pool has room for
every job slot (aiohttp's default of 100 connections capped a worker at 100
requests in flight: 500/s at 200 ms).

A 2xx to the create is believed only when its body is an Interaction (a `KD…`
sid and a channel with a `UO…` sid, `interaction_answer`); anything else may
still mean Twilio created it, so it is an ambiguous, retryable FlexError and the
next step is a TaskRouter lookup. Every failure leaves this module as a
`FlexError` (see `worker.errors`).
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import logging
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientError, ClientResponse, ClientSession, TCPConnector
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from shared import sids
from shared.settings import Settings
from worker.arq_worker import FOLLOW_UPS_PER_SLOT
from worker.errors import AnswerTooLarge, FlexError, classify, parse_failure, unreadable_answer
from worker.interaction import InteractionPayload
from worker.retry import parse_retry_after

logger = logging.getLogger(f"flex_handover.{__name__}")

# A handover makes one task; more than a few means duplicates, which we only log.
LOOKUP_LIMIT = 20
"""The tasks a lookup reads: one page (`page_async`, not `list_async`, which follows
`next_page_url` until it has read this many, without end for empty linked pages)."""
MAX_ANSWER_BYTES = 1_000_000
"""The most of any Twilio answer body the worker reads (an Interaction is ~2 KB,
a page of 20 tasks ~40 KB). A longer one is cut off: ambiguous after a 2xx,
failed or retried by its status otherwise."""
MAX_NAME_CHARS = 256
"""The most of a customer's friendly name put in a task: a name, not a document."""
_READ_CHUNK_BYTES = 64 * 1024
# Failures after a 2xx's headers that are not about its body's contents.
_NOT_PARSING = (AnswerTooLarge, TimeoutError, ClientError, ConnectionError)
AN_INTERACTION = "an Interaction"


@dataclass(frozen=True)
class Answer:
    """What the calling task may need of the last HTTP answer it got."""

    status: int
    retry_after: str | None


_last_answer: ContextVar[Answer | None] = ContextVar("flex_handover_answer", default=None)


def forget_last_answer() -> None:
    """Before a call: a failure must be classified by its own answer, not an earlier one's."""
    _last_answer.set(None)


@dataclass(frozen=True)
class CreatedInteraction:
    interaction_sid: str | None
    """None only when a lookup found our task without Flex's `flexInteractionSid`."""
    channel_sid: str | None
    found_by_lookup: bool = False
    channel_status: str | None = None
    """What reading the channel after the create showed (`worker.confirm`)."""
    attempt_id: str | None = None
    """The attempt that made it (`handoverAttempt` in its task's attributes)."""


@dataclass(frozen=True)
class ChannelState:
    """One read of an Interaction's channel: Twilio's `status`, and for a failed
    channel its `error_code` and `error_message`."""

    status: str
    error_code: int | None = None
    error_message: str | None = None


class BoundedHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio has no types: Any
    """AsyncTwilioHttpClient whose requests time out, read at most `max_body`
    bytes of an answer, and expose the answer's status and Retry-After."""

    def __init__(self, timeout: float, connections: int = 100, max_body: int = MAX_ANSWER_BYTES):
        # max_retries stays None: the client would retry POSTs on 5xx by itself.
        super().__init__(timeout=timeout, pool_connections=False)
        self.session = ClientSession(connector=TCPConnector(limit=connections))
        self.max_body = max_body

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """One request, its body read in chunks up to `max_body` (raises
        AnswerTooLarge past it, leaving the rest unread on a closed connection)."""
        if auth is not None:
            # Sent as a header: aiohttp deprecates the `auth=` form twilio uses.
            credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers = {**(headers or {}), "Authorization": f"Basic {credentials}"}
        assert self.session is not None  # noqa: S101 - set in __init__; narrows twilio's Optional
        async with asyncio.timeout(timeout or self.timeout):
            async with self.session.request(
                method.upper(),
                url,
                params=params,
                data=data,
                headers=headers,
                allow_redirects=allow_redirects,
            ) as response:
                _last_answer.set(Answer(response.status, response.headers.get("Retry-After")))
                body = await self._read_bounded(response)
        return Response(response.status, _decoded(body, response.charset), response.headers)

    async def _read_bounded(self, response: ClientResponse) -> bytes:
        declared = response.content_length
        if declared is not None and declared > self.max_body:
            response.close()  # the connection goes, with whatever it was still sending
            raise AnswerTooLarge(response.status, self.max_body)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(_READ_CHUNK_BYTES):
            size += len(chunk)
            if size > self.max_body:
                response.close()
                raise AnswerTooLarge(response.status, self.max_body)
            chunks.append(chunk)
        return b"".join(chunks)


class FlexClient:
    """Creates Interactions, reads their channels, looks up customer names and
    lists tasks through the twilio client, every call under the attempt timeout."""

    def __init__(self, settings: Settings):
        self._attempt_timeout = settings.attempt_timeout_seconds
        # One request at a time per job, and a slot may be lent to a follow-up
        # job while its own finishes: a connection for each job that may run.
        self._http = BoundedHttpClient(
            timeout=settings.attempt_timeout_seconds,
            connections=max(100, settings.worker_concurrency * (1 + FOLLOW_UPS_PER_SLOT)),
        )
        self._client = Client(
            username=settings.twilio_username,
            password=settings.twilio_password,
            account_sid=settings.twilio_account_sid,
            http_client=self._http,
        )
        self._client.flex_api.base_url = settings.flex_api_base_url
        self._client.conversations.base_url = settings.conversations_api_base_url
        self._client.taskrouter.base_url = settings.taskrouter_api_base_url

    @property
    def twilio(self) -> Client:
        """The bounded twilio client, for `worker.conversation_client`'s calls."""
        return self._client

    def call_failure(self, exc: BaseException, expected: str, what: str | None = None) -> FlexError:
        """A failed call classified as this client's own are (the last answer's status
        and Retry-After included); with `what`, a read: always worth another try."""
        if what is not None:
            return self._read_failure(exc, expected, what)
        return self._failure(exc, expected)

    async def create_interaction(self, payload: InteractionPayload) -> CreatedInteraction:
        """One attempt at `POST /v1/Interactions`; raises FlexError."""
        _last_answer.set(None)
        try:
            interaction = await self._client.flex_api.v1.interaction.create_async(
                channel=payload.channel, routing=payload.routing
            )
        except Exception as exc:  # every failure is classified
            raise self._failure(exc, AN_INTERACTION) from exc
        answer = _last_answer.get()
        return interaction_answer(
            interaction.sid, interaction.channel, answer.status if answer else 200
        )

    def _read_failure(self, exc: BaseException, expected: str, what: str) -> FlexError:
        """A failed read, classified as `_failure` does, is always worth another try:
        reading changes nothing at Twilio."""
        error = self._failure(exc, expected)
        return FlexError(
            f"{what}: {error.message}",
            status=error.status,
            code=error.code,
            retryable=True,
            retry_after=error.retry_after,
            transport=error.transport,
        )

    def _failure(self, exc: BaseException, expected: str) -> FlexError:
        """The FlexError for a failed call, with the answer's Retry-After. A 2xx
        whose body twilio-python could not parse is `unreadable_answer`."""
        answer = _last_answer.get()
        status = answer.status if answer is not None else None
        if status is not None and 200 <= status < 300 and not isinstance(exc, _NOT_PARSING):
            error = unreadable_answer(status, parse_failure(exc), expected)
        else:
            error = classify(exc, self._attempt_timeout, status)
        error.retry_after = parse_retry_after(answer.retry_after if answer else None)
        return error

    async def list_task_attributes(
        self, workspace_sid: str, expression: str, assignment_statuses: Sequence[str]
    ) -> list[str]:
        """One TaskRouter query: the raw `attributes` JSON of the matching tasks.

        A failure is a retryable FlexError, never an empty list: "could not look"
        must not read as "no task".
        """
        _last_answer.set(None)
        try:
            workspace = self._client.taskrouter.v1.workspaces(
                sids.url_segment(workspace_sid, sids.WORKSPACE)
            )
            page = await workspace.tasks.page_async(
                evaluate_task_attributes=expression,
                assignment_status=list(assignment_statuses),
                page_size=LOOKUP_LIMIT,
            )
            tasks = list(page)
        except Exception as exc:  # every failure is classified
            raise self._read_failure(exc, "a task list", "TaskRouter lookup failed") from exc
        return [task.attributes for task in tasks if isinstance(task.attributes, str)]

    async def fetch_channel(self, interaction_sid: str, channel_sid: str) -> ChannelState:
        """One read of `GET /v1/Interactions/{KD}/Channels/{UO}`.

        Any failure, an answer without a text `status` included, is a retryable
        FlexError: "could not read" must not read as "failed" (that sends again).
        """
        _last_answer.set(None)
        try:
            interaction = self._client.flex_api.v1.interaction(
                sids.url_segment(interaction_sid, sids.INTERACTION)
            )
            channel = await interaction.channels(
                sids.url_segment(channel_sid, sids.INTERACTION_CHANNEL)
            ).fetch_async()
        except Exception as exc:  # every failure is classified
            raise self._read_failure(exc, "a channel", "reading the channel failed") from exc
        status = getattr(channel, "status", None)
        if not isinstance(status, str) or not status:
            raise FlexError(
                f"reading the channel failed: its status is {_shown(status)}", retryable=True
            )
        code = getattr(channel, "error_code", None)
        message = getattr(channel, "error_message", None)
        return ChannelState(
            status,
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            message if isinstance(message, str) else None,
        )

    async def friendly_name(self, identity: str) -> str | None:
        """The Conversations user's friendly name, or None: a handover goes on without it.

        `identity` becomes the URL path `/v1/Users/{identity}`: only an FX SID is
        looked up (the API refuses anything else; this guards older records).
        """
        try:
            path_segment = sids.url_segment(identity, sids.FLEX_USER)
        except ValueError:
            logger.warning("customer name lookup skipped: the identity is not a Flex user SID")
            return None
        try:
            user = await self._client.conversations.v1.users(path_segment).fetch_async()
        except Exception as exc:  # noqa: BLE001 - no failed name lookup may stop the handover
            error = classify(exc, self._attempt_timeout)
            logger.warning("customer name lookup failed, going on without it: %s", error.message)
            return None
        return usable_name(user.friendly_name)

    async def close(self) -> None:
        await self._http.close()


def usable_name(value: Any) -> str | None:
    """A Conversations user's `friendly_name` as the task may show it: text, at most
    MAX_NAME_CHARS, or None (an upstream answer of another type or an empty one
    must not reach the Interaction's attributes)."""
    if not isinstance(value, str) or not value.strip():
        return None
    name = value.strip()
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + "…"


def interaction_answer(sid: Any, channel: Any, status: int = 200) -> CreatedInteraction:
    """The Interaction a 2xx answer names; `unreadable_answer` (ambiguous) unless
    it has a `KD…` sid and a channel with a `UO…` sid (pure)."""
    if not sids.is_sid(sid, sids.INTERACTION):
        why = "it has no sid" if sid is None else f"its sid is {_shown(sid)}, not a KD… SID"
        raise unreadable_answer(status, why, AN_INTERACTION)
    channel_sid = channel.get("sid") if isinstance(channel, dict) else None
    if not sids.is_sid(channel_sid, sids.INTERACTION_CHANNEL):
        if not isinstance(channel, dict):
            why = "it has no channel object"
        elif channel_sid is None:
            why = "its channel has no sid"
        else:
            why = f"its channel sid is {_shown(channel_sid)}, not a UO… SID"
        raise unreadable_answer(status, why, AN_INTERACTION)
    return CreatedInteraction(sid, channel_sid)


def _shown(value: Any) -> str:
    """A hostile value in a message: a string's first 40 characters, else its type."""
    if not isinstance(value, str):
        return f"of type {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _decoded(body: bytes, charset: str | None) -> str:
    encoding = "utf-8"
    if charset:
        with contextlib.suppress(LookupError):
            encoding = codecs.lookup(charset).name
    return body.decode(encoding, errors="replace")

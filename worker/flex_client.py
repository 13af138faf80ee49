"""The worker's only door to Twilio: the official client, bounded and classified.

twilio-python's async client ignores its timeout and its exceptions carry no
response headers, so `BoundedHttpClient` adds both: every request is cut off
after `attempt_timeout`, and the last response's `Retry-After` is kept for the
calling task (a ContextVar, so concurrent jobs never see each other's headers).
Its connection pool has room for every job slot (aiohttp's default of 100
connections capped a worker at 100 requests in flight: 500/s at 200 ms).
Every failure leaves this module as a `FlexError` (see `worker.errors`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from aiohttp import ClientSession, TCPConnector
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from shared import sids
from shared.settings import Settings
from worker.errors import FlexError, classify
from worker.interaction import InteractionPayload
from worker.retry import parse_retry_after

logger = logging.getLogger("flex_handover.worker")

# A handover makes one task; more than a few means duplicates, which we only log.
LOOKUP_LIMIT = 20

_retry_after: ContextVar[str | None] = ContextVar("flex_handover_retry_after", default=None)


@dataclass(frozen=True)
class CreatedInteraction:
    interaction_sid: str | None
    """None only when a lookup found our task without Flex's `flexInteractionSid`."""
    channel_sid: str | None
    found_by_lookup: bool = False


class BoundedHttpClient(AsyncTwilioHttpClient):
    """AsyncTwilioHttpClient whose requests time out and expose Retry-After."""

    def __init__(self, timeout: float, connections: int = 100):
        # max_retries stays None: the client would retry POSTs on 5xx by itself.
        super().__init__(timeout=timeout, pool_connections=False)
        self.session = ClientSession(connector=TCPConnector(limit=connections))

    async def request(self, method, url, params=None, data=None, headers=None, auth=None,
                      timeout=None, allow_redirects=False) -> Response:  # fmt: skip
        if auth is not None:
            # Sent as a header: aiohttp deprecates the `auth=` form twilio uses.
            credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers = {**(headers or {}), "Authorization": f"Basic {credentials}"}
        async with asyncio.timeout(timeout or self.timeout):
            response = await super().request(
                method, url, params, data, headers, None, None, allow_redirects
            )
        _retry_after.set(response.headers.get("Retry-After") if response.headers else None)
        return response


class FlexClient:
    """Creates Interactions, looks up customer names and lists tasks through the
    twilio client, every call under the attempt timeout."""

    def __init__(self, settings: Settings):
        self._attempt_timeout = settings.attempt_timeout_seconds
        # One request at a time per job: a connection per job slot is enough.
        self._http = BoundedHttpClient(
            timeout=settings.attempt_timeout_seconds,
            connections=max(100, settings.worker_concurrency),
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

    async def create_interaction(self, payload: InteractionPayload) -> CreatedInteraction:
        """One attempt at `POST /v1/Interactions`; raises FlexError."""
        _retry_after.set(None)
        try:
            interaction = await self._client.flex_api.v1.interaction.create_async(
                channel=payload.channel, routing=payload.routing
            )
        except Exception as exc:  # noqa: BLE001 - every failure is classified
            error = classify(exc, self._attempt_timeout)
            error.retry_after = parse_retry_after(_retry_after.get())
            raise error from exc
        channel = interaction.channel if isinstance(interaction.channel, dict) else {}
        return CreatedInteraction(interaction.sid, channel.get("sid"))

    async def list_task_attributes(
        self, workspace_sid: str, expression: str, assignment_statuses: Sequence[str]
    ) -> list[str]:
        """One TaskRouter query: the raw `attributes` JSON of the matching tasks.

        A failure is a retryable FlexError, never an empty list: "could not look"
        must not read as "no task".
        """
        _retry_after.set(None)
        try:
            workspace = self._client.taskrouter.v1.workspaces(
                sids.url_segment(workspace_sid, sids.WORKSPACE)
            )
            tasks = await workspace.tasks.list_async(
                evaluate_task_attributes=expression,
                assignment_status=list(assignment_statuses),
                limit=LOOKUP_LIMIT,
                page_size=LOOKUP_LIMIT,
            )
        except Exception as exc:  # noqa: BLE001 - every failure is classified
            error = classify(exc, self._attempt_timeout)
            raise FlexError(
                f"TaskRouter lookup failed: {error.message}",
                status=error.status,
                code=error.code,
                retryable=True,
                retry_after=parse_retry_after(_retry_after.get()),
            ) from exc
        return [task.attributes or "{}" for task in tasks]

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
        except Exception as exc:  # noqa: BLE001
            error = classify(exc, self._attempt_timeout)
            logger.warning("customer name lookup failed, going on without it: %s", error.message)
            return None
        return user.friendly_name or None

    async def close(self) -> None:
        await self._http.close()

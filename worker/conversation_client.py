"""The Conversations API calls of the steps after a handover (`worker.aftercare`,
`worker.hand_back`), through the worker's one bounded twilio client.

The same rules as `worker.flex_client`: every call is cut off at the attempt
timeout, bodies are read up to a bound, and every failure leaves as a
`FlexError` classified by the answer that came (a read is always worth another
try; a write that got no answer is ambiguous). What twilio-python hands back is
upstream input: only text of the expected type is passed on. A list is one page
(`page_async`), never `list_async`: that follows `next_page_url` until it has read
its `limit`, so an answer of empty pages that each link to another would be
requested without end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared import sids
from worker.errors import FlexError
from worker.flex_client import FlexClient, forget_last_answer

WEBHOOK_PAGE_SIZE = 5
"""The most a page of conversation webhooks may hold (Twilio's spec; it allows five a
Conversation): one page is all of them."""
MESSAGE_LOOKUP_LIMIT = 50
"""How many of the newest messages are searched for a fallback already posted: one page."""
WEBHOOKS_OFF = "false"
"""`X-Twilio-Webhook-Enabled` on our writes: they must not wake the bot they silence."""


@dataclass(frozen=True)
class ConversationWebhook:
    """A conversation-scoped webhook, with what is needed to create it again."""

    sid: str
    target: str
    url: str | None = None
    method: str | None = None
    filters: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()
    flow_sid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "target": self.target,
            "url": self.url,
            "method": self.method,
            "filters": list(self.filters),
            "triggers": list(self.triggers),
            "flow_sid": self.flow_sid,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConversationWebhook:
        return cls(
            sid=_text(data.get("sid")) or "",
            target=_text(data.get("target")) or "webhook",
            url=_text(data.get("url")),
            method=_text(data.get("method")),
            filters=_texts(data.get("filters")),
            triggers=_texts(data.get("triggers")),
            flow_sid=_text(data.get("flow_sid")),
        )


@dataclass(frozen=True)
class PostedMessage:
    sid: str
    attributes: str | None


class ConversationClient:
    """Reads and writes one Conversation's attributes, webhooks and messages."""

    def __init__(self, flex: FlexClient):
        self._flex = flex

    def _conversation(self, conversation_sid: str) -> Any:
        segment = sids.url_segment(conversation_sid, sids.CONVERSATION)
        return self._flex.twilio.conversations.v1.conversations(segment)

    async def fetch_attributes(self, conversation_sid: str) -> str:
        """The Conversation's `attributes`, as the JSON text Twilio keeps."""
        forget_last_answer()
        try:
            conversation = await self._conversation(conversation_sid).fetch_async()
        except Exception as exc:  # every failure is classified
            raise self._flex.call_failure(
                exc, "a Conversation", "reading the Conversation failed"
            ) from exc
        attributes = getattr(conversation, "attributes", None)
        if attributes is None:
            return "{}"
        if not isinstance(attributes, str):
            raise FlexError(
                "reading the Conversation failed: its attributes are not JSON text",
                retryable=True,
            )
        return attributes

    async def update_attributes(self, conversation_sid: str, attributes: str) -> None:
        """Replace the Conversation's `attributes` (the caller merged them first)."""
        forget_last_answer()
        try:
            await self._conversation(conversation_sid).update_async(
                attributes=attributes, x_twilio_webhook_enabled=WEBHOOKS_OFF
            )
        except Exception as exc:  # every failure is classified
            error = self._flex.call_failure(exc, "a Conversation")
            raise _named(error, "writing the Conversation's attributes") from exc

    async def list_webhooks(self, conversation_sid: str) -> list[ConversationWebhook]:
        """The Conversation's webhooks: one page of WEBHOOK_PAGE_SIZE, all Twilio allows."""
        forget_last_answer()
        try:
            page = await self._conversation(conversation_sid).webhooks.page_async(
                page_size=WEBHOOK_PAGE_SIZE
            )
            webhooks = list(page)
        except Exception as exc:  # every failure is classified
            raise self._flex.call_failure(
                exc, "a webhook list", "listing the Conversation's webhooks failed"
            ) from exc
        found = []
        for webhook in webhooks:
            sid = getattr(webhook, "sid", None)
            if not sids.is_sid(sid, sids.CONVERSATION_WEBHOOK):
                continue
            configuration = getattr(webhook, "configuration", None)
            config = configuration if isinstance(configuration, dict) else {}
            found.append(
                ConversationWebhook.from_dict(
                    {**config, "sid": sid, "target": getattr(webhook, "target", None)}
                )
            )
        return found

    async def delete_webhook(self, conversation_sid: str, webhook_sid: str) -> None:
        """Remove one webhook; one already gone (404) is removed too."""
        forget_last_answer()
        segment = sids.url_segment(webhook_sid, sids.CONVERSATION_WEBHOOK)
        try:
            await self._conversation(conversation_sid).webhooks(segment).delete_async()
        except Exception as exc:  # every failure is classified
            error = self._flex.call_failure(exc, "an empty answer")
            if error.status == 404:
                return
            raise _named(error, "removing a webhook") from exc

    async def create_webhook(self, conversation_sid: str, webhook: ConversationWebhook) -> str:
        """Put a removed webhook back; returns the new webhook's sid."""
        forget_last_answer()
        options: dict[str, Any] = {"target": webhook.target}
        for name, value in (
            ("configuration_url", webhook.url),
            ("configuration_method", webhook.method),
            ("configuration_flow_sid", webhook.flow_sid),
        ):
            if value:
                options[name] = value
        if webhook.filters:
            options["configuration_filters"] = list(webhook.filters)
        if webhook.triggers:
            options["configuration_triggers"] = list(webhook.triggers)
        try:
            created = await self._conversation(conversation_sid).webhooks.create_async(**options)
        except Exception as exc:  # every failure is classified
            raise _named(self._flex.call_failure(exc, "a webhook"), "restoring a webhook") from exc
        return _text(getattr(created, "sid", None)) or ""

    async def recent_messages(self, conversation_sid: str) -> list[PostedMessage]:
        """The newest MESSAGE_LOOKUP_LIMIT messages (one page), newest first."""
        forget_last_answer()
        try:
            page = await self._conversation(conversation_sid).messages.page_async(
                order="desc", page_size=MESSAGE_LOOKUP_LIMIT
            )
            messages = list(page)
        except Exception as exc:  # every failure is classified
            raise self._flex.call_failure(
                exc, "a message list", "listing the Conversation's messages failed"
            ) from exc
        return [
            PostedMessage(sid, _text(getattr(message, "attributes", None)))
            for message in messages
            if isinstance(sid := getattr(message, "sid", None), str) and sid
        ]

    async def post_message(
        self, conversation_sid: str, body: str, attributes: str, author: str | None
    ) -> str:
        """Post one message; returns its sid. No idempotency key: the caller looks
        for its marker (`attributes`) before posting again."""
        forget_last_answer()
        options: dict[str, Any] = {"body": body, "attributes": attributes}
        if author:
            options["author"] = author
        try:
            message = await self._conversation(conversation_sid).messages.create_async(
                x_twilio_webhook_enabled=WEBHOOKS_OFF, **options
            )
        except Exception as exc:  # every failure is classified
            raise _named(self._flex.call_failure(exc, "a message"), "posting the message") from exc
        sid = getattr(message, "sid", None)
        if not sids.is_sid(sid, sids.MESSAGE):
            raise FlexError(
                "posting the message: the answer names no message", retryable=True, ambiguous=True
            )
        return str(sid)


def _named(error: FlexError, what: str) -> FlexError:
    return FlexError(
        f"{what}: {error.message}",
        status=error.status,
        code=error.code,
        retryable=error.retryable,
        ambiguous=error.ambiguous,
        retry_after=error.retry_after,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _texts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))

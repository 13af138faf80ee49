"""What every handover job needs, built once at worker start-up.

A module of its own so that the job (`worker.handover`) and its delivery step
(`worker.delivery`) both take it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.settings import Settings
from shared.store import HandoverStore
from worker.claim import DeliveryClaims
from worker.conversation_client import ConversationClient
from worker.flex_client import FlexClient
from worker.metrics import WorkerMetrics
from worker.rate_limit import FlexRateLimit


@dataclass
class HandoverContext:
    """The settings, the status store, the Flex client, the metrics, and what is built from them:
    the delivery claims, the rate limit shared by every worker, and the
    Conversations calls of the steps after the outcome."""

    settings: Settings
    store: HandoverStore
    flex: FlexClient
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    """The process's counters (`worker.main` passes one for the process's life)."""
    claims: DeliveryClaims = field(init=False)
    rate_limit: FlexRateLimit = field(init=False)
    conversations: ConversationClient = field(init=False)

    def __post_init__(self) -> None:
        self.conversations = ConversationClient(self.flex)
        self.claims = DeliveryClaims(self.store.redis, self.settings.claim_ttl_seconds)
        self.rate_limit = FlexRateLimit(
            self.store.redis,
            self.settings.flex_api_max_rps,
            attempt_timeout=self.settings.attempt_timeout_seconds,
        )

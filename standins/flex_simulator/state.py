"""What the simulator remembers: created Interactions and their tasks, users,
Conversations (their attributes, webhooks and messages), every request, the
TaskRouter events sent, queued faults and the rate limit, behind one lock so
that a test or benchmark in another thread reads the records while the server
writes them. No HTTP here: the server (`app.py`) answers from this state, and
the Python control API (`fail_next`, `next_channels`, `set_rate_limit`,
`add_user`, `seed_conversation`, `conversation`, `set_event_callback`, `reset`)
works on it directly."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any, TypeVar

from shared.sids import canonical, is_sid
from standins.flex_simulator.auth import credential_pairs
from standins.flex_simulator.conversations import (
    conversation_view,
    new_conversation,
    parse_seed,
)
from standins.flex_simulator.errors import not_found
from standins.flex_simulator.events import DELETING_EVENTS, is_loopback_url, status_after
from standins.flex_simulator.faults import (
    CHANNEL_OPTIONS,
    FAULT_OPTIONS,
    FAULT_ROUTES,
    ChannelPlan,
    Fault,
)
from standins.flex_simulator.rate_limit import RateLimit, SlidingWindowLimit
from standins.flex_simulator.resources import interaction_attributes, new_sid
from standins.flex_simulator.spec_checks import attribute_equals

log = logging.getLogger(f"flex_handover.{__name__}")

Record = dict[str, Any]
T = TypeVar("T")


LATEST_TASK = "latest"
"""In `POST /__sim/tasks/{WT}/events`: the newest task, for a person at a terminal."""


class SimulatorState:
    """The records and settings of one simulator (see `FlexSimulator`).

    Records (plain lists, appended under a lock so other threads can read them):
    `interactions` (accepted creates), `requests` (every POST /v1/Interactions
    attempt: method, path, params, status answered or None when dropped,
    outcome: created, error, throttled (by the rate limit), bad answer or
    dropped), `api_requests` (every request to a Twilio API, whatever its route,
    in order: method, path, params (form or query: a value, or a list when
    repeated), webhook_enabled (its X-Twilio-Webhook-Enabled header or None),
    status, received_at; the create attempts are the same records as in
    `requests`), `tasks`, `events` (TaskRouter events sent: task_sid,
    event_type, sid, url, statuses), `conversations` (CH SID -> record; see
    `conversation`) and `paths` (method and raw path, query string included, of
    every request to a Twilio API: what a client really asked for).

    `rate_limit_rps` > 0 answers creates above that rate with 429 (see
    `set_rate_limit`); `rate_limit_retry_after` and `rate_limit_code` go with it.
    `channel_status` is what a created Interaction's channel shows when no plan
    was queued for it (`next_channels`): `active` by default.
    `event_callback_url`: where TaskRouter events go when their request names no
    URL (a loopback URL; see `set_event_callback`). Events are signed with
    `auth_token`: without one the simulator cannot send them.
    """

    def __init__(
        self,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        latency: float = 0.0,
        task_visible_after: float = 0.0,
        rate_limit_rps: float = 0.0,
        rate_limit_retry_after: str | float | None = None,
        rate_limit_code: int = 20429,
        channel_status: str = "active",
        event_callback_url: str | None = None,
    ):
        self._credentials = credential_pairs((account_sid, auth_token), (api_key, api_secret))
        if account_sid is not None and not is_sid(account_sid, "AC"):
            raise ValueError("account_sid must be AC and 32 hex digits")
        self._auth_token = auth_token
        self.account_sid = account_sid or "AC" + "0" * 32
        self.latency = latency
        self.task_visible_after = task_visible_after
        self.interactions: list[Record] = []
        # By sid, beside the lists (kept in order): a channel read or a task
        # fetch must not cost more as a benchmark's thousands of records pile up.
        self._interaction_by_sid: dict[str, Record] = {}
        self._task_by_sid: dict[str, Record] = {}
        self.requests: list[Record] = []
        self.tasks: list[Record] = []
        self.paths: list[tuple[str, str]] = []
        self.api_requests: list[Record] = []
        self.events: list[Record] = []
        self.users: dict[str, Record] = {}
        self.conversations: dict[str, Record] = {}
        self._chat_service_sid = new_sid("IS")
        self._task_queue_sid = new_sid("WQ")
        self._worker_sid = new_sid("WK")
        self.event_callback_url: str | None = None
        self.set_event_callback(event_callback_url)
        self._faults: dict[str, deque[Fault]] = {route: deque() for route in FAULT_ROUTES}
        self.channel_plan = ChannelPlan((channel_status,))
        self._channel_plans: deque[ChannelPlan] = deque()
        self._lock = threading.Lock()
        self.rate_limit: RateLimit | None = None
        self._window: SlidingWindowLimit | None = None
        self.set_rate_limit(
            rate_limit_rps, retry_after=rate_limit_retry_after, code=rate_limit_code
        )

    # --- control (Python API) ---

    def fail_next(
        self,
        status: int = 500,
        *,
        count: int = 1,
        code: int | None = None,
        message: str | None = None,
        retry_after: str | float | None = None,
        hang: float | None = None,
        reset: bool = False,
        after_create: bool = False,
        route: str = "interactions",
        body: str | None = None,
        pad: int = 0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Queue a fault for each of the next `count` requests to `route` (FIFO):
        `interactions` (POST /v1/Interactions), `users` (GET /v1/Users/…),
        `tasks` (GET /v1/Workspaces/{WS}/Tasks), `channels` (GET
        /v1/Interactions/{KD}/Channels/{UO}), `conversations` (GET and POST
        /v1/Conversations/{CH}, and GET /v1/Conversations), `webhooks` (GET, POST
        and DELETE /v1/Conversations/{CH}/Webhooks[/{WH}]), `messages` (GET and POST
        /v1/Conversations/{CH}/Messages), `workspaces` (GET /v1/Workspaces/{WS}),
        `workflows` (GET …/{WS}/Workflows/{WW}) or `task_channels` (GET
        …/{WS}/TaskChannels/{TC or unique name}). GET /v1/Workspaces takes no
        faults: it is how `flex-handover check` tries the credentials, which
        `account_sid` and `auth_token` make fail.

        `hang`: wait that many seconds first. `reset`: close the connection without
        answering. `retry_after`: `Retry-After` header on the answer, any text
        (`"0"`, `"-5"`, `"nan"`, an HTTP date). `after_create` (routes
        interactions, conversations, webhooks, messages): the request is served
        first (the Interaction, webhook or message created, the Conversation
        updated, the webhook deleted), then the fault answers: with `hang`, after
        the act; with `reset`, the act done and no answer. `code` defaults from
        `status` (429 -> 20429, 5xx -> 20500, 400 -> 20001, 401 -> 20003, 404 -> 20404).

        Hostile answers, as from a proxy in front of Twilio: `status` may be a
        2xx (with `after_create`: the resource acted on, else a
        `body` is required), `body` answers that text instead of the JSON body
        (HTML, `null`, `[]`, `{}`, a sid that is no SID), `pad` adds that many
        bytes (a `padding` field in a JSON body, trailing spaces after a raw
        `body`), streamed without a Content-Length, and `headers` adds or
        replaces response headers. A 2xx to a create is only answered to a
        valid request (checked as always against the spec's parameters).
        """
        if not isinstance(count, int) or count < 1:
            raise ValueError("count must be an integer >= 1")
        fault = Fault(
            status,
            code,
            message,
            retry_after,
            hang,
            reset,
            after_create,
            route,
            body,
            pad,
            dict(headers) if isinstance(headers, Mapping) else headers,
        )
        with self._lock:
            self._faults[route].extend([fault] * count)

    def add_fault(self, options: Mapping[str, Any]) -> int:
        """`fail_next` from the options of `POST /__sim/faults` (or `flex-handover
        simulator --fault`); ValueError saying what is wrong. How many were queued."""
        unknown = set(options) - FAULT_OPTIONS
        if unknown:
            raise ValueError(f"Unknown fault options: {', '.join(sorted(unknown))}")
        try:
            self.fail_next(**options)
        except TypeError as error:
            raise ValueError(str(error)) from None
        return int(options.get("count", 1))

    def next_channels(
        self,
        statuses: list[str] | tuple[str, ...] = ("failed",),
        *,
        count: int = 1,
        error_code: int | None = None,
        error_message: str | None = None,
    ) -> None:
        """The channels of the next `count` created Interactions show `statuses`,
        one per read of `GET /v1/Interactions/{KD}/Channels/{UO}`, the last for
        good: `["failed"]` fails at once, `["setup", "active"]` or
        `["setup", "failed"]` is set up first. A failed channel answers
        `error_code` and `error_message` (default 19025, "Channel validation
        error", the spec's example); given, `closed` and `inactive` carry them
        too. The create itself answers 200 as always, and the task is made."""
        if not isinstance(count, int) or count < 1:
            raise ValueError("count must be an integer >= 1")
        plan = ChannelPlan(tuple(statuses), error_code, error_message)
        with self._lock:
            self._channel_plans.extend([plan] * count)

    def add_channels(self, options: Mapping[str, Any]) -> int:
        """`next_channels` from the options of `POST /__sim/channels`; ValueError
        saying what is wrong. How many were queued."""
        unknown = set(options) - CHANNEL_OPTIONS
        if unknown:
            raise ValueError(f"Unknown channel options: {', '.join(sorted(unknown))}")
        try:
            self.next_channels(**options)
        except TypeError as error:
            raise ValueError(str(error)) from None
        return int(options.get("count", 1))

    def channel_reads(self, interaction_sid: str) -> int:
        """How often the Interaction's channel was fetched."""
        with self._lock:
            record = self._interaction_by_sid.get(interaction_sid)
            return 0 if record is None else int(record["channel_reads"])

    def set_rate_limit(
        self,
        rps: float,
        *,
        retry_after: str | float | None = None,
        code: int = 20429,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Answer creates above `rps` per second (a sliding 1 s window over accepted
        creates) with 429 and Twilio error `code` (20429, or 45010, the Flex API
        rate limit), plus `Retry-After: retry_after` when given. 0 turns it off.
        Checked after authentication and before queued faults, which a refused
        create leaves queued."""
        if rps == 0:
            limit, window = None, None
        else:
            window = SlidingWindowLimit(rps, clock)
            limit = RateLimit(window.rps, retry_after, code)
        with self._lock:
            self.rate_limit, self._window = limit, window

    def throttled(self) -> int:
        """Creates refused by the rate limit so far."""
        with self._lock:
            return sum(1 for attempt in self.requests if attempt.get("outcome") == "throttled")

    def pending_faults(self, route: str = "interactions") -> int:
        with self._lock:
            return len(self._faults[route])

    def add_user(self, identity: str, friendly_name: str | None = None) -> Record:
        """Make a Conversations user fetchable by identity or by its new US SID."""
        user = {
            "sid": new_sid("US"),
            "friendly_name": friendly_name,
            "chat_service_sid": self._chat_service_sid,
            "role_sid": new_sid("RL"),
            "created_at": time.time(),
        }
        with self._lock:
            self.users[identity] = user
        return user

    def seed_conversation(self, sid: str, **options: Any) -> Record:
        """Make the Conversation `sid` what `options` say (those of `POST
        /__sim/conversations/{CH}`: attributes, state, friendly_name, webhooks,
        messages, missing; see conversations.SEED_HELP), replacing what it held.
        Returns it as `conversation` does; ValueError saying what is wrong."""
        key = _conversation_key(sid)
        record = parse_seed(key, options, time.time())
        with self._lock:
            self.conversations[key] = record
            return conversation_view(record)

    def conversation(self, sid: str) -> Record:
        """The Conversation `sid` as plain JSON: sid, missing, attributes (the
        string as stored), state, friendly_name, webhooks and deleted_webhooks
        ({sid, target, url, method, filters, triggers, flow_sid, replay_after}),
        messages by index ({sid, index, author, body, attributes,
        webhook_enabled}), updates (POSTs to it), attribute_updates (those
        carrying Attributes) and webhook_enabled (the last update's header). An
        untouched CH SID shows the Conversation Twilio has implicitly."""
        key = _conversation_key(sid)
        with self._lock:
            record = self.conversations.get(key) or new_conversation(key, time.time())
            return conversation_view(record)

    def set_event_callback(self, url: str | None) -> None:
        """Where TaskRouter events go when their request names no URL (None: nowhere)."""
        if url is not None and not is_loopback_url(url):
            raise ValueError("the event callback URL must be an http(s) URL on a loopback address")
        self.event_callback_url = url

    def reset(self) -> None:
        """Forget records, users, Conversations, queued faults and channel plans
        and the rate limit's window (lists are cleared in place); the rate limit,
        latency, channel status and event callback settings stay."""
        with self._lock:
            records = (self.interactions, self.requests, self.tasks, self.paths)
            for kept in (*records, self.api_requests, self.events):
                kept.clear()
            self._interaction_by_sid.clear()
            self._task_by_sid.clear()
            self.users.clear()
            self.conversations.clear()
            for queue in self._faults.values():
                queue.clear()
            self._channel_plans.clear()
            if self._window is not None:
                self._window.clear()

    # --- what the server asks of the state ---

    def _take_fault(self, route: str) -> Fault | None:
        """The next queued fault for `route` (a benchmark overrides this to draw its own)."""
        with self._lock:
            queue = self._faults[route]
            return queue.popleft() if queue else None

    def _check_rate_limit(self) -> None:
        """Count one create against the rate limit; RateLimited (a 429) when over it."""
        with self._lock:
            limit, window = self.rate_limit, self._window
            if limit is None or window is None or window.admit():
                return
        log.info("flex simulator: create over the %g/s rate limit, answering 429", limit.rps)
        raise limit.error()

    def _record_request(
        self, method: str, path: str, params: Record, webhook_enabled: str | None
    ) -> Record:
        """A request's record in `api_requests`; the server fills in its status."""
        record: Record = {
            "method": method,
            "path": path,
            "params": params,
            "webhook_enabled": webhook_enabled,
            "status": None,
            "received_at": time.time(),
        }
        with self._lock:
            self.api_requests.append(record)
        return record

    def _record_attempt(self, record: Record) -> Record:
        """A create attempt: its request's record, kept in `requests` too; the
        server fills in its outcome."""
        with self._lock:
            self.requests.append(record)
        return record

    def _record_path(self, method: str, raw_path: str) -> None:
        with self._lock:
            self.paths.append((method, raw_path))

    def _record_interaction(
        self, form: Mapping[str, str], channel: Record, routing: Record
    ) -> tuple[Record, Record]:
        now = time.time()
        media_channel_sid = channel.get("properties", {}).get("media_channel_sid")
        record = {
            "sid": new_sid("KD"),
            "channel_sid": new_sid("UO"),
            "channel": channel,
            "routing": routing,
            "conversation_sid": media_channel_sid or new_sid("CH"),
            "interaction_context_sid": form.get("InteractionContextSid"),
            "webhook_ttid": form.get("WebhookTtid"),
            "received_at": now,
        }
        routing_properties = routing.get("properties", {})
        task = {
            "sid": new_sid("WT"),
            "interaction_sid": record["sid"],
            "account_sid": self.account_sid,
            "workspace_sid": routing_properties.get("workspace_sid"),
            "workflow_sid": routing_properties.get("workflow_sid"),
            "task_channel_unique_name": routing_properties.get("task_channel_unique_name"),
            "assignment_status": "pending",
            "task_queue_sid": self._task_queue_sid,
            "attributes": interaction_attributes(record),
            "created_at": now,
            "visible_at": now + self.task_visible_after,
        }
        record["task_sid"] = task["sid"]
        with self._lock:
            plans = self._channel_plans
            plan = plans.popleft() if plans else self.channel_plan
            # Plain JSON in the record: /__sim/interactions answers the records.
            record["channel_plan"] = {**asdict(plan), "statuses": list(plan.statuses)}
            record["channel_reads"] = 0
            self.interactions.append(record)
            self.tasks.append(task)
            self._interaction_by_sid[str(record["sid"])] = record
            self._task_by_sid[str(task["sid"])] = task
        return record, task

    def _interaction(self, sid: str) -> tuple[Record, Record] | None:
        """An Interaction's record and its task; None when there is no such Interaction."""
        with self._lock:
            record = self._interaction_by_sid.get(sid)
            if record is None:
                return None
            task = self._task_by_sid[record["task_sid"]]
        return record, task

    def _read_channel(
        self, record: Record, *, count: bool = True
    ) -> tuple[str, tuple[int | None, str | None]]:
        """The channel's status and error at this read (`count`: a fetch, which
        moves its plan on; a list only shows it)."""
        with self._lock:
            plan = ChannelPlan(**record["channel_plan"])
            status = plan.status_at(record["channel_reads"])
            if count:
                record["channel_reads"] += 1
        return status, plan.error_for(status)

    def _user(self, key: str) -> tuple[str, Record] | None:
        """(identity, user) for an identity or a US SID; None when unknown."""
        with self._lock:
            found = [
                (name, user) for name, user in self.users.items() if key in (name, user["sid"])
            ]
        return found[0] if found else None

    def _visible_tasks(
        self,
        workspace_sid: str,
        statuses: set[str],
        condition: tuple[list[str], str] | None,
        now: float,
    ) -> list[Record]:
        """The workspace's tasks TaskRouter shows at `now` that pass the list's filters."""
        with self._lock:
            return [
                task
                for task in self.tasks
                if task["workspace_sid"] == workspace_sid
                and task["visible_at"] <= now
                and not task.get("deleted")
                and (not statuses or task["assignment_status"] in statuses)
                and (condition is None or attribute_equals(task["attributes"], *condition))
            ]

    def _with_conversation(self, sid: str, path: str, action: Callable[[Record], T]) -> T:
        """`action(record)` on the Conversation `sid`, under the lock; Twilio's
        404 when `sid` is no CH SID or the Conversation was seeded missing."""
        key = canonical(sid, "CH")
        if key is None:
            raise not_found(path)
        with self._lock:
            record = self.conversations.get(key)
            if record is None:
                record = self.conversations[key] = new_conversation(key, time.time())
            if record["missing"]:
                raise not_found(path)
            return action(record)

    def _task_event(self, task_sid: str, event_type: str) -> tuple[Record, Record] | None:
        """Apply `event_type` to a task the simulator made (its assignment
        status; a deleting event hides it from lists): (the task as it is now,
        a copy; the SIDs of a reservation event). None when there is no such task.
        `latest` names the newest task (what `flex-handover dev`'s banner uses)."""
        with self._lock:
            if task_sid == LATEST_TASK:
                task = self.tasks[-1] if self.tasks else None
            else:
                task = self._task_by_sid.get(task_sid)
            if task is None or task.get("deleted"):
                return None
            task["assignment_status"] = status_after(event_type, task["assignment_status"])
            if event_type in DELETING_EVENTS:
                task["deleted"] = True
            snapshot = {**task, "attributes": dict(task["attributes"])}
        related = {"ReservationSid": new_sid("WR"), "WorkerSid": self._worker_sid}
        return snapshot, related

    def _record_event(self, event: Record) -> None:
        with self._lock:
            self.events.append(event)


def _conversation_key(sid: str) -> str:
    key = canonical(sid, "CH")
    if key is None:
        raise ValueError(f"{sid!r} is not a Conversation SID (CH and 32 hex digits)")
    return key

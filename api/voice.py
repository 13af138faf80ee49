"""`POST /voice/handoff[/{target}]`: a ConversationRelay session's `<Connect action>`.

The call is live and Twilio waits for TwiML (15 s at most), so there is no queue on
this path: the answer is built from the settings and the request alone
(`api.voice_twiml`) and goes out whatever Redis does. Redis is bookkeeping only: one
script run (`shared.voice_records`, bounded by REDIS_TIMEOUT_SECONDS) writes the
handover's status record, kind `voice`, already `succeeded` (Twilio enqueues the call
from our TwiML; from there delivery is Twilio's), and de-duplicates by `CallSid`, so a
repeated action request answers the same TwiML with the same handover id. Redis down
or slow: the TwiML is answered anyway and a warning logged; the caller never hears
an error because our bookkeeping is down.

Who may call: a valid `X-Twilio-Signature` (checked with TWILIO_AUTH_TOKEN over the
public URL and the form, whatever HANDOVER_VERIFY_TWILIO_SIGNATURE says: Twilio signs
every voice webhook), or a tool token (bearer, or `?token=` in the action URL).
HANDOVER_ALLOW_UNAUTHENTICATED opens it only when neither is configured. A refused
request is not a live call (Twilio signs its own), so it gets the JSON refusal (401,
403) as the tool endpoint does, not TwiML. Everything a signed request can carry
(no CallSid, HandoffData that is not JSON, an unknown target) gets TwiML the caller
can live with, and the record's `problem` says what was wrong.

Never logged: the caller's number (`From`) and `HandoffData` (customer data).
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError
from twilio.request_validator import RequestValidator

from api import metrics
from api.app_keys import CLOCK, METRICS, REDIS
from api.auth import (
    SIGNATURE_HEADER,
    TOKEN_QUERY_PARAMETER,
    Tokens,
    bearer_token,
    public_url,
    read_body,
    twilio_signature_valid,
)
from api.availability import availability
from api.errors import Forbidden, Unauthorized
from api.metrics import Outcome
from api.parsing import twilio_form
from api.voice_twiml import (
    ActionRequest,
    enqueue_twiml,
    goodbye_twiml,
    parse_handoff_data,
    pick_target,
    read_action,
    task_attributes,
)
from shared.connections import redis_error_text
from shared.logging import caller_text
from shared.model import KIND_VOICE, HandoverRequest, Identity, new_handover_id, now
from shared.settings import DEFAULT_TARGET, Settings
from shared.voice_records import VoiceRecorder

logger = logging.getLogger(f"flex_handover.{__name__}")

PATH = "/voice/handoff"
TARGET_PATH = "/voice/handoff/{target}"
REDIS_TIMEOUT_SECONDS = 1.0
"""The longest the answer waits for its bookkeeping: well inside Twilio's 15 s, and
short enough that a caller does not notice a slow Redis."""
TWIML = "text/xml"


def caller_identity(caller: str) -> Identity:
    """`From` as the record's identity (masked wherever it is shown): a number is a
    `phone:`, `client:alice` or `sip:…` keeps its scheme, anything else is a `caller:`."""
    if caller.startswith("+"):
        return Identity("phone", caller)
    if ":" in caller:
        return Identity.parse(caller)
    return Identity("caller", caller)


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """The action request's fields: `api.parsing.twilio_form`."""
    return twilio_form(content_type, body, "Twilio sends the <Connect> action request")


MIN_VOICE_BODY_BYTES = 64 * 1024
"""The least an action request may be (HANDOVER_MAX_BODY_BYTES when higher): a
call's parameters plus an 8 KB HandoffData fit with room to spare."""


def twiml(document: str) -> web.Response:
    return web.Response(text=document, content_type=TWIML, charset="utf-8")


class VoiceHandoff:
    """The routes' handler, with the checks built once per app."""

    def __init__(self, settings: Settings):
        self._settings = settings
        # A live call must not be dropped because the tool endpoint's limit is low.
        self._max_body = max(settings.max_body_bytes, MIN_VOICE_BODY_BYTES)
        self._tokens = Tokens(settings.tool_tokens)
        token = settings.twilio_auth_token
        self._validator = RequestValidator(token) if token else None
        self._open = settings.allow_unauthenticated and not (self._tokens or self._validator)
        self._recorder: VoiceRecorder | None = None
        self._recorder_redis: aioredis.Redis | None = None
        if self._validator is None and self._tokens:
            logger.info(
                "no TWILIO_AUTH_TOKEN: %s takes tool tokens only (put ?token=<tool token> in "
                "the <Connect action> URL); Twilio's signature cannot be checked",
                PATH,
            )

    async def handle(self, request: web.Request) -> web.Response:
        await self._authenticate(request)
        settings = self._settings
        body = await read_body(request, self._max_body)
        action = read_action(parse_form(request.content_type, body))
        if action.handoff_data is None:
            logger.info(
                "voice session of call %s ended without a handoff (SessionStatus %s, "
                "ErrorCode %s): goodbye",
                action.call_sid,
                caller_text(action.session_status or "-"),
                caller_text(action.error_code or "-"),
            )
            return twiml(goodbye_twiml(settings.voice_goodbye_message))
        target, target_problem = pick_target(
            settings.targets, request.match_info.get("target", DEFAULT_TARGET)
        )
        if target is None:  # only a Settings built by hand has no target at all
            logger.error("voice handoff of call %s: no target configured", action.call_sid)
            request.app[METRICS].called(metrics.VOICE, Outcome.REFUSED, "not_configured")
            return twiml(goodbye_twiml(settings.voice_goodbye_message))
        hours = availability(target, request.app[CLOCK]())
        held = target.outside_hours == "queue" and target.voice_timeout is not None
        if not hours.agents_available and not held:
            # A call queued until agents are back would hold the caller for hours:
            # outside hours a call is declined (nothing recorded, the caller told
            # when agents are back) unless the target queues with a bounded wait.
            logger.info(
                "voice handoff of call %s declined: outside business hours", action.call_sid
            )
            request.app[METRICS].called(metrics.VOICE, Outcome.DECLINED)
            return twiml(goodbye_twiml(hours.voice_message(held=False)))
        data = parse_handoff_data(action.handoff_data)
        problems = [*action.problems, *([target_problem] if target_problem else []), *data.problems]
        problem = "; ".join(problems) or None
        if problem:
            logger.warning(
                "voice handoff of call %s answered despite: %s", action.call_sid, problem
            )
        handover = HandoverRequest(
            conversation_sid="",
            identity=caller_identity(action.caller),
            target=target.name,
            extra_input=data.fields,
            kind=KIND_VOICE,
            call_sid=action.call_sid,
        )
        handover_id = await self._record(request, new_handover_id(), handover, action, problem)
        attributes = task_attributes(
            target, handover_id, action.call_sid, action.caller, data.fields
        )
        if not hours.agents_available:
            return twiml(enqueue_twiml(target, attributes, say=hours.voice_message(held=True)))
        return twiml(enqueue_twiml(target, attributes))

    async def _record(
        self,
        request: web.Request,
        handover_id: str,
        handover: HandoverRequest,
        action: ActionRequest,
        problem: str | None,
    ) -> str:
        """The handover id to answer: this call's earlier one, or `handover_id`,
        recorded if Redis answers within REDIS_TIMEOUT_SECONDS."""
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                found = await self._recorder_for(request).record(
                    handover_id, handover, now(), problem
                )
        except TimeoutError:
            reason = f"Redis did not answer within {REDIS_TIMEOUT_SECONDS:g}s"
        except (RedisError, OSError) as exc:
            reason = f"Redis failed: {redis_error_text(exc)}"
        else:
            request.app[METRICS].called(
                metrics.VOICE, Outcome.STORED if found.created else Outcome.DUPLICATE
            )
            if found.created:
                logger.info(
                    "voice handoff %s of call %s to target %s: enqueued by TwiML",
                    found.handover_id,
                    action.call_sid,
                    handover.target,
                )
            else:
                logger.info(
                    "voice handoff of call %s repeated: answered with %s again",
                    action.call_sid,
                    found.handover_id,
                )
            return found.handover_id
        request.app[METRICS].called(metrics.VOICE, Outcome.UNAVAILABLE)
        logger.warning(
            "voice handoff %s of call %s answered without its record (%s)",
            handover_id,
            action.call_sid,
            reason,
        )
        return handover_id

    def _recorder_for(self, request: web.Request) -> VoiceRecorder:
        redis = request.app[REDIS]
        if self._recorder is None or self._recorder_redis is not redis:
            self._recorder = VoiceRecorder(
                redis,
                self._settings.status_ttl_seconds,
                self._settings.recent_retention_seconds,
            )
            self._recorder_redis = redis
        return self._recorder

    async def _authenticate(self, request: web.Request) -> None:
        if self._open:
            return
        if not (self._tokens or self._validator):
            raise _refused(
                request,
                Forbidden(
                    "Voice handoffs cannot be authenticated: set TWILIO_AUTH_TOKEN (Twilio "
                    "signs the action request with it) or HANDOVER_TOOL_TOKENS."
                ),
            )
        bearer = bearer_token(request.headers.get("Authorization"))
        query_token = request.rel_url.query.get(TOKEN_QUERY_PARAMETER)
        if self._tokens and (self._tokens.matches(bearer) or self._tokens.matches(query_token)):
            return
        signature = request.headers.get(SIGNATURE_HEADER)
        if signature and self._validator is not None:
            body = await read_body(request, self._max_body)
            url = public_url(
                request.scheme,
                request.host,
                request.raw_path,
                request.headers,
                self._settings.trust_proxy_headers,
            )
            if twilio_signature_valid(self._validator, url, request.content_type, body, signature):
                return
            # A live caller hears Twilio's application error: often a proxy that
            # changed the URL Twilio signed (scheme, host, path prefix).
            logger.warning(
                "voice handoff refused: X-Twilio-Signature does not match %s (behind a proxy? "
                "see HANDOVER_TRUST_PROXY_HEADERS)",
                caller_text(url.split("?", 1)[0]),
            )
        if bearer is None and query_token is None and not signature:
            raise _refused(
                request,
                Unauthorized(
                    "This voice endpoint takes Twilio's X-Twilio-Signature (with "
                    "TWILIO_AUTH_TOKEN set) or a tool token: 'Authorization: Bearer <token>' "
                    "or '?token=<token>' in the action URL."
                ),
            )
        raise _refused(
            request,
            Forbidden("The X-Twilio-Signature or token of this voice handoff is not valid."),
        )


def _refused(request: web.Request, refusal: Forbidden | Unauthorized) -> Forbidden | Unauthorized:
    # The path only (the query string may hold ?token=), cut: as api.auth logs refusals.
    logger.info("refused POST %s: %d %s", caller_text(request.path), refusal.status, refusal.code)
    return refusal


def routes(settings: Settings) -> list[web.RouteDef]:
    handler = VoiceHandoff(settings).handle
    return [web.post(PATH, handler), web.post(TARGET_PATH, handler)]

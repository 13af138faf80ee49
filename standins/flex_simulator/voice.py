"""Twilio's side of a ConversationRelay handoff, as the simulator plays it: the
`<Connect action>` request Twilio makes when the agent's session ends, its form
parameters as Twilio sends them (the call's, the session's, and `HandoffData`, the
agent's `end` message's text, verbatim) and its `X-Twilio-Signature`, made with the
account's auth token as Twilio signs voice webhooks (`events.signature_header`).
Pure: `app` POSTs it (loopback only) and answers with the TwiML it got back.

Parameter names follow Twilio's own ConversationRelay samples; the values Twilio
gives `SessionStatus` are unconfirmed (`completed` here unless the request names one).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.sids import CALL, is_sid
from standins.flex_simulator.events import SIGNATURES, is_loopback_url

DELIVERY_TIMEOUT_SECONDS = 15.0  # Twilio's voice webhook timeout
MAX_ANSWER_BYTES = 64 * 1024
DEFAULT_FROM = "+15555550100"
DEFAULT_TO = "+15555550199"
DEFAULT_SESSION_STATUS = "completed"

# What `flex-handover simulator --help` says of each `POST /__sim/voice/handoff` option.
VOICE_HELP: dict[str, str] = {
    "url": "the <Connect action> URL to POST to (loopback only), e.g. "
    "http://127.0.0.1:8080/voice/handoff",
    "handoff_data": "what the agent's end message carried: a JSON object (sent as its "
    "JSON text), a string (sent as it is), or null (no HandoffData: the session ended "
    "without a handoff); required",
    "call_sid": "the call's CallSid (default: a new CA…); the same one twice is Twilio "
    "repeating the request",
    "from": "the caller (From)",
    "to": "the number called (To)",
    "session_status": "SessionStatus (Twilio's values are unconfirmed)",
    "error_code": "ErrorCode, e.g. 64105 (the agent's WebSocket closed abruptly)",
    "signature": "valid, bad (an X-Twilio-Signature that does not verify) or missing",
}
VOICE_OPTIONS = frozenset(VOICE_HELP)
VOICE_DEFAULTS: dict[str, Any] = {
    "from": DEFAULT_FROM,
    "to": DEFAULT_TO,
    "session_status": DEFAULT_SESSION_STATUS,
    "signature": "valid",
}


@dataclass(frozen=True)
class VoiceAction:
    """One `POST /__sim/voice/handoff`: see VOICE_HELP."""

    url: str
    handoff_data: str | None
    call_sid: str
    caller: str
    called: str
    session_status: str
    error_code: str | None
    signature: str


def parse_voice_request(options: Mapping[str, Any]) -> VoiceAction:
    """A VoiceAction from the control route's JSON; ValueError saying what is wrong."""
    unknown = set(options) - VOICE_OPTIONS
    if unknown:
        raise ValueError(f"Unknown voice options: {', '.join(sorted(unknown))}")
    for required in ("url", "handoff_data"):
        if required not in options:
            raise ValueError(f"{required} is required")
    url = options["url"]
    if not is_loopback_url(url):
        raise ValueError("url must be an http(s) URL on a loopback address")
    data = options["handoff_data"]
    if isinstance(data, (dict, list)):
        handoff_data: str | None = json.dumps(data)
    elif data is None or isinstance(data, str):
        handoff_data = data
    else:
        raise ValueError("handoff_data must be a JSON object, a string or null")
    call_sid = options.get("call_sid") or new_call_sid()
    if not is_sid(call_sid, CALL):
        raise ValueError("call_sid must be CA and 32 hex digits")
    texts = {}
    for name in ("from", "to", "session_status", "error_code", "signature"):
        value = options.get(name, VOICE_DEFAULTS.get(name))
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        texts[name] = value
    if texts["signature"] not in SIGNATURES:
        raise ValueError(f"signature must be one of {', '.join(SIGNATURES)}")
    return VoiceAction(
        url=url,
        handoff_data=handoff_data,
        call_sid=call_sid,
        caller=texts["from"] or "",
        called=texts["to"] or "",
        session_status=texts["session_status"] or "",
        error_code=texts["error_code"],
        signature=texts["signature"] or "valid",
    )


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def action_params(
    action: VoiceAction, account_sid: str, *, session_id: str, duration: int = 42
) -> dict[str, str]:
    """The form parameters of the `<Connect action>` request: the call's, the
    session's, and `HandoffData` when the agent sent one."""
    params = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": action.call_sid,
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "From": action.caller,
        "Caller": action.caller,
        "To": action.called,
        "Called": action.called,
        "SessionId": session_id,
        "SessionStatus": action.session_status,
        "SessionDuration": str(duration),
    }
    if action.handoff_data is not None:
        params["HandoffData"] = action.handoff_data
    if action.error_code:
        params["ErrorCode"] = action.error_code
    return params

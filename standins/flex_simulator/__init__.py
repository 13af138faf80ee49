"""A stand-in for the few Twilio APIs flex-handover calls, served on loopback.

Why it exists: `flex-handover dev` must run on a laptop with no Twilio account, and
the test suite needs a Flex that fails on demand (5xx, 429 + Retry-After, hung
requests, dropped connections, "created but the answer was lost") to prove the
worker's retries and de-duplication, and one that is hostile on demand, as a
proxy in front of Twilio could be: 2xx answers that are not the resource (HTML,
`null`, a sid that is no SID), bodies of any size streamed without a length,
odd headers and any `Retry-After` text (see `FlexSimulator.fail_next`). The real
twilio-python client talks to it unchanged: point `client.flex_api.base_url`,
`client.conversations.base_url` and `client.taskrouter.base_url` at the URL
`FlexSimulator.start()` returns.

Routes (shapes and checks follow Twilio's OpenAPI specs and `twilio-facts.md`):
- `POST /v1/Interactions`, `GET /v1/Interactions/{KD}`, `GET /v1/Interactions/{KD}/Channels`,
  `GET /v1/Interactions/{KD}/Channels/{UO}` (its status as planned: `next_channels`)
- `GET /v1/Users/{US… or identity}` (Conversations)
- `GET` and `POST /v1/Conversations/{CH}`, `GET` and `POST …/{CH}/Webhooks`,
  `GET` and `DELETE …/{CH}/Webhooks/{WH}`, `GET` and `POST …/{CH}/Messages`
  (Conversations: any CH SID names a Conversation that exists, active with
  attributes "{}", unless seeded otherwise: `seed_conversation`)
- `GET /v1/Workspaces/{WS}/Tasks` (TaskRouter; every created Interaction makes a task)
- `/__sim/...`: fault injection, a rate limit, seeded Conversations, TaskRouter
  workspace events (signed with the auth token and POSTed to a loopback
  callback), a ConversationRelay session's signed `<Connect action>` request
  (`POST /__sim/voice/handoff`) and records for other processes (no auth).

Every error answers with Twilio's JSON error body, so twilio-python raises
`TwilioRestException` with the right status and code.

The parts, pure unless said otherwise: `spec_checks` and `conversation_checks`
(what a valid request is), `auth` (Basic credentials), `errors` (Twilio's error
bodies), `resources` (the JSON shapes answered), `conversations` (what a
Conversation holds and how a request changes it), `events` (TaskRouter's
events, their parameters and signature), `voice` (the `<Connect action>` request
Twilio makes when a ConversationRelay session ends), `faults` and `rate_limit` (the failure
modes and their help), `state` (the records, behind a lock), `app` (the aiohttp
routes: all the HTTP I/O), `help_text` (`flex-handover simulator --help`),
`serve` (a blocking run). Outside code imports from this package only the names
below.
"""

from standins.flex_simulator.app import FlexSimulator
from standins.flex_simulator.conversation_checks import (
    CONVERSATION_STATES,
    CREATE_MESSAGE_PARAMS,
    CREATE_WEBHOOK_PARAMS,
    LIST_MESSAGES_PARAMS,
    LIST_WEBHOOKS_PARAMS,
    MESSAGE_ORDERS,
    UPDATE_CONVERSATION_PARAMS,
    WEBHOOK_ENABLED_HEADER,
    WEBHOOK_METHODS,
    WEBHOOK_SID,
    WEBHOOK_TARGETS,
    validate_create_message,
    validate_create_webhook,
    validate_update_conversation,
)
from standins.flex_simulator.conversations import SEED_HELP, SEED_OPTIONS
from standins.flex_simulator.errors import TwilioError
from standins.flex_simulator.events import (
    EVENT_HELP,
    EVENT_OPTIONS,
    EVENT_TYPES,
    event_params,
    signature_header,
)
from standins.flex_simulator.faults import (
    CHANNEL_HELP,
    CHANNEL_OPTIONS,
    FAULT_HELP,
    FAULT_OPTIONS,
    ChannelPlan,
    Fault,
)
from standins.flex_simulator.help_text import (
    channel_options,
    control_help,
    conversation_options,
    event_options,
    fault_options,
    rate_limit_options,
    voice_options,
)
from standins.flex_simulator.rate_limit import (
    RATE_LIMIT_HELP,
    RATE_LIMIT_OPTIONS,
    SlidingWindowLimit,
)
from standins.flex_simulator.serve import run_simulator
from standins.flex_simulator.spec_checks import (
    ASSIGNMENT_STATUSES,
    CHANNEL_STATUSES,
    CHANNEL_TYPES,
    CREATE_INTERACTION_PARAMS,
    FETCH_CHANNEL_PATH_PARAMS,
    FormParam,
    check_params,
    validate_create_interaction,
)
from standins.flex_simulator.voice import VOICE_HELP, VOICE_OPTIONS

__all__ = [
    "ASSIGNMENT_STATUSES",
    "CHANNEL_HELP",
    "CHANNEL_OPTIONS",
    "CHANNEL_STATUSES",
    "CHANNEL_TYPES",
    "CONVERSATION_STATES",
    "CREATE_INTERACTION_PARAMS",
    "CREATE_MESSAGE_PARAMS",
    "CREATE_WEBHOOK_PARAMS",
    "EVENT_HELP",
    "EVENT_OPTIONS",
    "EVENT_TYPES",
    "FAULT_HELP",
    "FAULT_OPTIONS",
    "FETCH_CHANNEL_PATH_PARAMS",
    "LIST_MESSAGES_PARAMS",
    "LIST_WEBHOOKS_PARAMS",
    "MESSAGE_ORDERS",
    "RATE_LIMIT_HELP",
    "RATE_LIMIT_OPTIONS",
    "SEED_HELP",
    "SEED_OPTIONS",
    "UPDATE_CONVERSATION_PARAMS",
    "VOICE_HELP",
    "VOICE_OPTIONS",
    "WEBHOOK_ENABLED_HEADER",
    "WEBHOOK_METHODS",
    "WEBHOOK_SID",
    "WEBHOOK_TARGETS",
    "ChannelPlan",
    "Fault",
    "FlexSimulator",
    "FormParam",
    "SlidingWindowLimit",
    "TwilioError",
    "channel_options",
    "check_params",
    "control_help",
    "conversation_options",
    "event_options",
    "event_params",
    "fault_options",
    "rate_limit_options",
    "run_simulator",
    "signature_header",
    "validate_create_interaction",
    "validate_create_message",
    "validate_create_webhook",
    "validate_update_conversation",
    "voice_options",
]

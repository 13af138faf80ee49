"""The aiohttp application keys every handler module reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from aiohttp import web

from api.availability import Clock
from api.ready_probe import ReadyProbe
from api.ui.sessions import SessionStore, SignInLimiter
from shared.connections import Enqueuer
from shared.deadletters import Replayer
from shared.settings import Settings
from shared.store import HandoverStore
from shared.summary import SummaryReader

if TYPE_CHECKING:  # api.metrics reads these keys: no import at run time
    from api.metrics import ApiMetrics

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
ENQUEUER = web.AppKey("enqueuer", Enqueuer)
STORE = web.AppKey("store", HandoverStore)
REPLAYER = web.AppKey("replayer", Replayer)
SUMMARY = web.AppKey("summary", SummaryReader)
READY_PROBE = web.AppKey("ready_probe", ReadyProbe)
UI_SESSIONS = web.AppKey("ui_sessions", SessionStore)
UI_SIGN_INS = web.AppKey("ui_sign_ins", SignInLimiter)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
"""What the tool endpoint reads business hours at (`api.availability.system_clock`)."""
METRICS: web.AppKey[ApiMetrics] = web.AppKey("metrics")
"""The app's counters (`api.metrics`); `NoMetrics` when HANDOVER_METRICS=false."""

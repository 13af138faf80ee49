"""worker.confirm: what a channel read means, and reading until a verdict or the bound.

The verdict is pure; the reading runs against a scripted stand-in for
`FlexClient.fetch_channel` with no real sleeping (the schedule itself is
tested in test_retry.py), and once against a channel that never answers.
"""

from __future__ import annotations

import asyncio

import pytest

from shared.model import ChannelFailure
from standins.flex_simulator import CHANNEL_STATUSES as SPEC_CHANNEL_STATUSES
from worker.confirm import (
    CHANNEL_STATUSES,
    UNCONFIRMED,
    ChannelOutcome,
    confirm_channel,
    verdict,
)
from worker.errors import FlexError
from worker.flex_client import ChannelState

HANDOVER = "ho_" + "a" * 32
KD = "KD" + "1" * 32
UO = "UO" + "2" * 32


def test_every_status_twilio_lists_is_known():
    assert sorted(CHANNEL_STATUSES) == sorted(SPEC_CHANNEL_STATUSES)


@pytest.mark.parametrize(
    "state, expected",
    [
        (ChannelState("active"), ChannelOutcome("active")),
        (ChannelState("pause"), ChannelOutcome("pause")),
        (ChannelState("transfer"), ChannelOutcome("transfer")),
        (
            ChannelState("failed", 19025, "Channel validation error"),
            ChannelOutcome("failed", ChannelFailure(19025, "Channel validation error", KD)),
        ),
        (
            ChannelState("failed"),
            ChannelOutcome("failed", ChannelFailure(None, "the channel is failed", KD)),
        ),
        # The spec's own example: closed, with the error that closed it.
        (
            ChannelState("closed", 19025, "Channel validation error"),
            ChannelOutcome("closed", ChannelFailure(19025, "Channel validation error", KD)),
        ),
        (
            ChannelState("inactive", 19026),
            ChannelOutcome("inactive", ChannelFailure(19026, "the channel is inactive", KD)),
        ),
        # Ended by someone after it was set up: delivered, never sent again.
        (ChannelState("closed"), ChannelOutcome("closed")),
        (ChannelState("inactive"), ChannelOutcome("inactive")),
        (ChannelState("setup"), None),
        (ChannelState("exploded"), None),
    ],
)
def test_verdict(state, expected):
    assert verdict(state, KD) == expected


class ScriptedChannel:
    """Answers `fetch_channel` from a script: a ChannelState or a FlexError each read."""

    def __init__(self, *answers: ChannelState | FlexError):
        self.answers = list(answers)
        self.reads = 0

    async def fetch_channel(self, interaction_sid: str, channel_sid: str) -> ChannelState:
        assert (interaction_sid, channel_sid) == (KD, UO)
        answer = self.answers[min(self.reads, len(self.answers) - 1)]
        self.reads += 1
        if isinstance(answer, FlexError):
            raise answer
        return answer


async def no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


async def confirm(flex: ScriptedChannel, **options) -> ChannelOutcome:
    return await confirm_channel(flex, HANDOVER, KD, UO, sleep=no_sleep, **options)


async def test_setup_is_read_again_until_active():
    flex = ScriptedChannel(ChannelState("setup"), ChannelState("setup"), ChannelState("active"))
    assert await confirm(flex) == ChannelOutcome("active")
    assert flex.reads == 3


async def test_setup_then_failed_is_a_failure_with_the_channels_error():
    flex = ScriptedChannel(ChannelState("setup"), ChannelState("failed", 19025, "bad"))
    outcome = await confirm(flex)
    assert outcome == ChannelOutcome("failed", ChannelFailure(19025, "bad", KD))


async def test_unreadable_reads_are_read_again_not_taken_for_failed():
    unreadable = FlexError("reading the channel failed: 503", status=503, retryable=True)
    flex = ScriptedChannel(unreadable, unreadable, ChannelState("active"))
    assert await confirm(flex) == ChannelOutcome("active")


@pytest.mark.parametrize(
    "answer",
    [
        FlexError("reading the channel failed: 503", status=503, retryable=True),
        ChannelState("setup"),
        ChannelState("exploded"),
    ],
)
async def test_no_verdict_within_the_schedule_is_unconfirmed(answer, caplog):
    flex = ScriptedChannel(answer)
    assert await confirm(flex) == ChannelOutcome(UNCONFIRMED)
    assert flex.reads == 5  # 0.2, 0.6, 1.4, 3.0 and 6.2 s
    assert "unconfirmed" in caplog.text and "not sending again" in caplog.text


async def test_a_read_that_hangs_is_cut_off_at_the_bound():
    class Hangs:
        async def fetch_channel(self, interaction_sid: str, channel_sid: str) -> ChannelState:
            await asyncio.sleep(60)
            raise AssertionError("not reached")

    started = asyncio.get_running_loop().time()
    outcome = await confirm_channel(Hangs(), HANDOVER, KD, UO, waits=(0.01,), total=0.2)
    assert outcome == ChannelOutcome(UNCONFIRMED)
    assert asyncio.get_running_loop().time() - started < 1.0

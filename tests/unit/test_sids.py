"""shared.sids: one spelling per SID, and nothing but a SID in a Twilio URL path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import sids

SID = "CH" + "0123456789abcdef" * 2
PROPERTIES = settings(max_examples=200, derandomize=True, database=None, deadline=None)


@pytest.mark.parametrize(
    "value, expected",
    [
        (SID, SID),
        ("CH" + SID[2:].upper(), SID),
        ("CH0123456789ABCDEF0123456789abcdef", SID),
        ("ch" + SID[2:], None),  # the prefix is part of the pattern, case and all
        ("KD" + SID[2:], None),
        (SID + "0", None),
        (SID[:-1], None),
        (SID + "\n", None),
        ("CH" + "g" * 32, None),
        ("CH" + "٠" * 32, None),  # noqa: RUF001 - Arabic-Indic digits are not hex digits
    ],
)
def test_canonical(value, expected):
    assert sids.canonical(value, sids.CONVERSATION) == expected


@PROPERTIES
@given(body=st.text("0123456789abcdefABCDEF", min_size=32, max_size=32))
def test_every_spelling_of_a_sid_has_one_canonical_form(body):
    canonical = sids.canonical("FX" + body, sids.FLEX_USER)
    assert canonical == "FX" + body.lower()
    assert sids.canonical(canonical, sids.FLEX_USER) == canonical
    assert sids.is_sid(canonical, sids.FLEX_USER)


def test_url_segment_passes_a_sid_as_it_is():
    assert sids.url_segment(SID, sids.CONVERSATION) == SID


@pytest.mark.parametrize(
    "value",
    [SID + "/../x", "../" + SID, SID + "?a=1", SID + "#", SID + "%2F", "", None, 7, SID[:-1] + "/"],
)
def test_url_segment_refuses_anything_else(value):
    with pytest.raises(ValueError, match="CH followed by 32 hexadecimal characters"):
        sids.url_segment(value, sids.CONVERSATION)


@PROPERTIES
@given(value=st.text(max_size=40))
def test_a_url_segment_is_a_sid_or_an_error(value):
    try:
        segment = sids.url_segment(value, sids.FLEX_USER)
    except ValueError:
        return
    assert segment == value and sids.is_sid(segment, sids.FLEX_USER)
    assert not set(segment) & set("/?#%.;&@ \\")

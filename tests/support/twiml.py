"""TwiML as the voice tests read it: parsed, and held to the exact structure a
ConversationRelay action answer must have."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def parse(twiml: str) -> ET.Element:
    assert twiml.startswith(DECLARATION), twiml[:80]
    return ET.fromstring(twiml.encode("utf-8"))  # noqa: S314 - the service's own answer, checked


def enqueued(
    twiml: str, said: str | None = None
) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """The <Enqueue> and <Task> attributes and the task's JSON, after checking that the
    document is exactly Response > Enqueue > Task, with no text outside the Task (or,
    with `said`, Response > Say, Enqueue > Task, the Say's text containing `said`)."""
    root = parse(twiml)
    expected = ["Enqueue"] if said is None else ["Say", "Enqueue"]
    assert root.tag == "Response" and [child.tag for child in root] == expected, twiml
    if said is not None:
        assert said in (root[0].text or ""), twiml
    enqueue = root[-1]
    assert [child.tag for child in enqueue] == ["Task"], twiml
    (task,) = enqueue
    assert len(task) == 0 and not (enqueue.text or "").strip() and not (task.tail or "").strip()
    return dict(enqueue.attrib), dict(task.attrib), json.loads(task.text or "")


def goodbye(twiml: str) -> str:
    """The <Say> text of a goodbye, after checking it is Response > Say, Hangup."""
    root = parse(twiml)
    assert [child.tag for child in root] == ["Say", "Hangup"], twiml
    return root[0].text or ""

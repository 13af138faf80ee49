"""Reading a `/metrics` answer in the tests: Prometheus' own parser, samples by name and labels."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, its labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, or None when the exposition has no such series."""
    return samples.get((name, frozenset(labels.items())))


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    """Every value `label` takes on the series of `name`."""
    return {
        dict(labels)[label]
        for sample, labels in samples
        if sample == name and label in dict(labels)
    }


async def scrape(url: str, **options: Any) -> tuple[int, str, aiohttp.ClientResponse]:
    """GET `url` (a /metrics URL) on a new connection: (status, body text, response)."""
    async with aiohttp.ClientSession() as http, http.get(url, **options) as response:
        return response.status, await response.text(), response


async def samples_at(url: str, **options: Any) -> Samples:
    status, text, _ = await scrape(url, **options)
    assert status == 200, text
    return parse(text)

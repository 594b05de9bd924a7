"""Reading the service's ``/metrics`` in tests: one parser (prometheus_client's own), not a line scan per test file."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> str:
    """The text exposition of ``url``'s ``/metrics``."""
    response = httpx.get(f"{url}/metrics", timeout=30)
    response.raise_for_status()
    return response.text


def sample(exposition: str, name: str, **labels: str) -> float:
    """The value of the one sample with exactly these labels (KeyError if absent)."""
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise KeyError(f"{name}{labels}")


def total(exposition: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 when there are none)."""
    return sum(
        float(s.value)
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )

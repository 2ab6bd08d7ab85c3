"""Helpers for the operations tests: fetching the daemon's HTTP endpoints and reading a
Prometheus scrape as {(sample name, labels): value}."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "headend.json"
DASHBOARD_SCHEMA = ROOT / "docs" / "grafana" / "dashboard.schema.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def fetch(url: str) -> tuple[int, str]:
    """(status, body) of a GET; a 503 is an answer, not an exception."""
    return await asyncio.to_thread(_get, url)


class Scrape:
    """One /metrics answer, parsed by prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = list(text_string_to_metric_families(text))
        self.samples: Samples = {}
        for family in self.families:
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                self.samples[key] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 for a labelled series not created yet."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Sum over the samples of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def exported_names(self) -> set[str]:
        """Every sample name a query may use, whether or not a series exists yet: a family's
        name with its type's suffixes (a labelled family with no series yet still has its
        HELP and TYPE lines)."""
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("_count", "_sum", "_created"),
            "gauge": ("",),
            "info": ("_info",),
        }
        names: set[str] = set()
        for family in self.families:
            for suffix in suffixes.get(family.type, ("",)):
                names.add(family.name + suffix)
        names.update(name for name, _ in self.samples)
        return names


async def scrape(base_url: str) -> Scrape:
    status, body = await fetch(f"{base_url}/metrics")
    assert status == 200, body
    return Scrape(body)


METRIC_NAME = re.compile(r"\b(?:headend|process|python)_[a-z0-9_]+")


def dashboard_metric_names(dashboard: dict[str, Any]) -> set[str]:
    """Every metric name the dashboard's queries use."""
    found: set[str] = set()

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.update(METRIC_NAME.findall(target.get("expr", "")))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return found

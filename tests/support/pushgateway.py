"""Read what the real Pushgateway holds."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(base_url: str) -> list[Sample]:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def groups(base_url: str) -> list[dict[str, Any]]:
    """The groups (grouping keys and their metric families) from the Pushgateway's API."""
    with urllib.request.urlopen(f"{base_url}/api/v1/metrics", timeout=5) as response:
        return list(json.loads(response.read())["data"])


def wipe(base_url: str) -> None:
    request = urllib.request.Request(f"{base_url}/api/v1/admin/wipe", method="PUT")
    with urllib.request.urlopen(request, timeout=5):
        pass

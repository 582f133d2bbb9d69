"""A guard on label cardinality: past a limit of distinct values per (metric, label), values fold into one.

A Pushgateway keeps every series it was ever sent until the group is deleted, and Prometheus pays per
series, so one producer that puts ids in event types must not be able to explode either of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

OVERFLOW_VALUE = "__overflow__"


class CardinalityGuard:
    def __init__(self, limit: int, on_overflow: Callable[[str, str], None]) -> None:
        self._limit = limit
        self._on_overflow = on_overflow
        self._seen: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    def value(self, metric: str, label: str, value: str) -> str:
        """`value` while the label has room for it, else the overflow value (and the folding is counted)."""
        seen = self._seen.get((metric, label))
        if seen is not None and value in seen:  # the common case, read without the lock
            return value
        with self._lock:
            seen = self._seen.setdefault((metric, label), set())
            if value in seen:
                return value
            if len(seen) < self._limit:
                seen.add(value)
                return value
        self._on_overflow(metric, label)
        return OVERFLOW_VALUE

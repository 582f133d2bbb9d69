"""The one change model every source is decoded into, as plain values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cdc.exceptions import CdcError

# Debezium's op codes and DynamoDB Streams' event names -> the operation of the event type
OPERATIONS = {
    "c": "created",
    "u": "updated",
    "d": "deleted",
    "r": "snapshot",
    "t": "truncated",
    "m": "message",
    "INSERT": "created",
    "MODIFY": "updated",
    "REMOVE": "deleted",
}


class UndecodableChangeError(CdcError):
    """A record that will never become a change (broken JSON, unknown op, no key): it goes to the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Change:
    connector: str
    table: str
    operation: str  # created | updated | deleted | snapshot | truncated | message
    key: dict[str, Any]  # the primary key; empty when the table has none
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    source_time_ms: int | None = None
    position: str = ""
    database: str | None = None
    schema: str | None = None
    traceparent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    identity: str = ""  # what makes this change unique in its source's log (Debezium: the source block)

    @property
    def changed_columns(self) -> list[str]:
        """Columns whose value differs between before and after (all of after's for a create)."""
        before, after = self.before or {}, self.after or {}
        return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))

    @property
    def key_text(self) -> str:
        """The Kafka key: the primary key as canonical JSON, so a row's changes share a partition; for a table
        without a primary key, the table (`{"table": ...}`, as a truncate), so its changes share one."""
        key = self.key or {"table": self.table}
        return json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)

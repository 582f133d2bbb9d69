"""A change as a CloudEvent: type `<prefix>.<table>.<operation>`, keyed by the row's primary key (a table's
keyless changes and its truncates by the table), `time` the source change time, an id stable across
redeliveries (so consumers deduplicate them). Built through the event contract, so the events CDC publishes
follow the rules ingest and the consumer check."""

from __future__ import annotations

import hashlib
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from lambda_event_bus.bus.contract import Event, make_event, timestamp

from cdc.model import Change


def to_cloud_event(change: Change, prefix: str) -> Event:
    # stable across redeliveries, distinct for two changes of one row (the source block differs: LSN, binlog
    # position, SCN, change_lsn, ordinal...; DynamoDB: the sequence number)
    where = change.identity or change.position
    identity = f"{change.connector}|{change.table}|{where}|{change.key_text}|{change.operation}"
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": hashlib.sha256(identity.encode()).hexdigest()[:32],
        "type": f"{prefix}.{change.table}.{change.operation}",
        # a URI-reference: each name percent-encoded (a table name may hold spaces)
        "source": "/cdc/"
        + "/".join(
            urllib.parse.quote(part, safe="") for part in (change.connector, change.database, change.table) if part
        ),
        "subject": change.key_text,
        "datacontenttype": "application/json",
        "partitionkey": change.key_text,
    }
    if change.source_time_ms is not None:
        attributes["time"] = timestamp(datetime.fromtimestamp(change.source_time_ms / 1000, UTC))
    data: dict[str, Any] = {
        "connector": change.connector,
        "table": change.table,
        "operation": change.operation,
        "key": change.key,
        "before": change.before,
        "after": change.after,
        "changed": change.changed_columns,
        "source_time_ms": change.source_time_ms,
        "position": change.position,
        **change.extra,
    }
    if change.database:
        data["database"] = change.database
    if change.schema:
        data["schema"] = change.schema
    return make_event(attributes, data)

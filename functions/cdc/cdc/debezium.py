"""Debezium change events -> changes. The envelope may come with or without Kafka Connect's
`schema`/`payload` wrapper; `op` is c/u/d/r/t/m.

The documented rules: a tombstone (a null value, which follows a delete so that log compaction can drop the
key) publishes nothing, since the delete event already did; a truncate (`t`) concerns the whole table, so it
is published as `<prefix>.<table>.truncated` keyed by the table; a logical decoding message (`m`) is
published as `<prefix>.<connector>.message` keyed by its prefix. A change of a table without a primary key
(a null record key; Debezium Server's Kinesis sink puts `default` in the partition key) is published with an
empty `key`, keyed by its table: the table's keyless changes keep their order, on one partition.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cdc.model import OPERATIONS, Change, UndecodableChangeError


def _unwrap(document: Any) -> Any:  # noqa: ANN401 - JSON
    """Kafka Connect's JSON converter with schemas enabled wraps the value: {"schema": ..., "payload": ...}."""
    if isinstance(document, Mapping) and "payload" in document and "schema" in document:
        return document["payload"]
    return document


def parse_json(data: bytes | None, what: str) -> Any:  # noqa: ANN401 - JSON
    if data is None or not data.strip():
        return None
    try:
        return _unwrap(json.loads(data))
    except (ValueError, UnicodeDecodeError):
        raise UndecodableChangeError(f"the {what} is not valid JSON") from None


def _position(source: Mapping[str, Any]) -> str:
    """Where the change is in the source's log: Postgres' LSN, MySQL's binlog file and position or GTID."""
    if source.get("lsn") is not None:
        return f"lsn:{source['lsn']}"
    if source.get("file") is not None:
        return f"binlog:{source['file']}:{source.get('pos')}:{source.get('row', 0)}"
    if source.get("gtid") is not None:
        return f"gtid:{source['gtid']}"
    return f"ts:{source.get('ts_ms')}"


KEYLESS_PARTITION_KEY = b"default"
"""What Debezium Server's Kinesis sink puts in the partition key of a record without a key (its `null.key`)."""


def _row_key(key: bytes | None) -> dict[str, Any]:
    """The row's primary key from the record key (its JSON); empty for a table without one."""
    if key is None or key.strip() in (b"", KEYLESS_PARTITION_KEY):
        return {}
    row_key = parse_json(key, "record key")
    if row_key is None:  # a key of JSON null
        return {}
    if not isinstance(row_key, Mapping):
        raise UndecodableChangeError("the record key is not a JSON object (Debezium keys a row by its primary key)")
    return dict(row_key)


def decode(
    value: bytes | None, key: bytes | None, *, traceparent: str | None = None, traceparent_column: str = "traceparent"
) -> Change | None:
    """A Debezium record's change; None for a tombstone."""
    envelope = parse_json(value, "change event")
    if envelope is None:
        return None  # tombstone
    if not isinstance(envelope, Mapping):
        raise UndecodableChangeError("the change event is not a JSON object")
    op = envelope.get("op")
    if op not in ("c", "u", "d", "r", "t", "m"):
        raise UndecodableChangeError(f"unknown op {op!r}")
    source = envelope.get("source")
    if not isinstance(source, Mapping):
        raise UndecodableChangeError("the change event has no source block")
    connector = str(source.get("name") or "debezium")
    table = source.get("table")
    before, after = envelope.get("before"), envelope.get("after")
    for image in (before, after):
        if image is not None and not isinstance(image, Mapping):
            raise UndecodableChangeError("before/after must be objects")
    if op == "t":
        change_key: dict[str, Any] = {"table": table}
    elif op == "m":
        message = envelope.get("message")
        change_key = {"prefix": message.get("prefix") if isinstance(message, Mapping) else None}
        table = table or connector
    else:
        change_key = _row_key(key)
    if not isinstance(table, str) or not table:
        raise UndecodableChangeError("the source block names no table")
    # a delete's `before` holds the previous writer's trace: only the new row's column continues one
    column_trace = after.get(traceparent_column) if isinstance(after, Mapping) else None
    ts_ms = source.get("ts_ms")
    return Change(
        connector=connector,
        table=table,
        operation=OPERATIONS[op],
        key=change_key,
        before=dict(before) if before else None,
        after=dict(after) if after else None,
        source_time_ms=int(ts_ms) if isinstance(ts_ms, (int, float)) else None,
        position=_position(source),
        identity=json.dumps(source, sort_keys=True, separators=(",", ":"), default=str),
        database=source.get("db"),
        schema=source.get("schema"),
        traceparent=traceparent or (column_trace if isinstance(column_trace, str) else None),
        extra={"message": envelope["message"]} if op == "m" and "message" in envelope else {},
    )

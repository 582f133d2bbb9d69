"""DynamoDB Streams records -> changes (NEW_AND_OLD_IMAGES; values through boto3's TypeDeserializer)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from cdc.model import OPERATIONS, Change, UndecodableChangeError

_DESERIALIZER = TypeDeserializer()


def _plain(value: Any) -> Any:  # noqa: ANN401 - DynamoDB values of any shape
    """JSON-friendly: Decimals become int or float, sets become sorted lists, binary stays bytes."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(item) for item in value), key=str)
    return value


def _image(image: object, what: str) -> dict[str, Any] | None:
    if image is None:
        return None
    if not isinstance(image, Mapping):
        raise UndecodableChangeError(f"{what} is not a DynamoDB item")
    try:
        return {name: _plain(_DESERIALIZER.deserialize(value)) for name, value in image.items()}
    except (TypeError, ValueError, KeyError) as error:
        raise UndecodableChangeError(f"{what} does not deserialize: {error}") from None


def table_of(arn: object) -> str:
    """arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label> -> <name>."""
    if isinstance(arn, str) and ":table/" in arn:
        return arn.split(":table/", 1)[1].split("/", 1)[0]
    raise UndecodableChangeError("the record has no table stream ARN")


def decode(record: Mapping[str, Any], *, connector: str, traceparent_attribute: str) -> Change:
    name = record.get("eventName")
    if name not in ("INSERT", "MODIFY", "REMOVE"):
        raise UndecodableChangeError(f"unknown DynamoDB Streams event {name!r}")
    stream = record.get("dynamodb")
    if not isinstance(stream, Mapping):
        raise UndecodableChangeError("the record has no dynamodb section")
    key = _image(stream.get("Keys"), "Keys")
    if not key:
        raise UndecodableChangeError("the record has no key")
    before, after = _image(stream.get("OldImage"), "OldImage"), _image(stream.get("NewImage"), "NewImage")
    created = stream.get("ApproximateCreationDateTime")
    traceparent = (after or before or {}).get(traceparent_attribute)
    return Change(
        connector=connector,
        table=table_of(record.get("eventSourceARN")),
        operation=OPERATIONS[name],
        key=key,
        before=before,
        after=after,
        source_time_ms=int(float(created) * 1000) if isinstance(created, (int, float, Decimal)) else None,
        position=str(stream.get("SequenceNumber", "")),
        traceparent=traceparent if isinstance(traceparent, str) else None,
    )

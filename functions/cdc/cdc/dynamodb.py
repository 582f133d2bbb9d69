"""DynamoDB Streams records -> changes (NEW_AND_OLD_IMAGES; values through boto3's TypeDeserializer)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer

from cdc.model import OPERATIONS, Change, UndecodableChangeError

_DESERIALIZER = TypeDeserializer()


def _plain(value: Any) -> Any:  # noqa: ANN401, PLR0911 - DynamoDB values of any shape, one return per kind
    """JSON values: integers stay exact, other numbers become floats only where a float holds them exactly
    (else the exact decimal text: DynamoDB keeps 38 digits), binary becomes base64 text, sets sorted lists."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, Binary):
        raw: bytes = getattr(value, "value")  # noqa: B009 - the stubs do not declare it
        return base64.b64encode(raw).decode()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(item) for item in value), key=lambda item: (str(type(item)), str(item)))
    return value


def _decode_binary(value: Any) -> Any:  # noqa: ANN401 - an AttributeValue
    """Lambda's stream events carry B and BS values as base64 text; TypeDeserializer wants bytes."""
    if not isinstance(value, Mapping):
        return value
    if isinstance(value.get("B"), str):
        return {"B": base64.b64decode(value["B"])}
    if isinstance(value.get("BS"), list):
        return {"BS": [base64.b64decode(item) if isinstance(item, str) else item for item in value["BS"]]}
    if isinstance(value.get("M"), Mapping):
        return {"M": {name: _decode_binary(item) for name, item in value["M"].items()}}
    if isinstance(value.get("L"), list):
        return {"L": [_decode_binary(item) for item in value["L"]]}
    return value


def _image(image: object, what: str) -> dict[str, Any] | None:
    if image is None:
        return None
    if not isinstance(image, Mapping):
        raise UndecodableChangeError(f"{what} is not a DynamoDB item")
    try:
        return {name: _plain(_DESERIALIZER.deserialize(_decode_binary(value))) for name, value in image.items()}
    except (TypeError, ValueError, KeyError, binascii.Error) as error:
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
    traceparent = (after or {}).get(traceparent_attribute)  # a delete's old image holds the previous writer's trace
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

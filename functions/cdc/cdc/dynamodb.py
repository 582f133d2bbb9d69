"""DynamoDB Streams records -> changes (NEW_AND_OLD_IMAGES; DynamoDB JSON values as plain JSON values)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from decimal import Clamped, Context, Decimal, Inexact, InvalidOperation, Overflow, Rounded, Underflow
from typing import Any

from cdc.model import OPERATIONS, Change, UndecodableChangeError

# DynamoDB's numbers: up to 38 significant digits, exponents -130..125 (a number outside fails, never rounds)
_NUMBERS = Context(
    prec=38, Emin=-128, Emax=126, traps=[Clamped, Overflow, Inexact, Rounded, Underflow, InvalidOperation]
)


def _number(text: object) -> int | float | str:
    """Integers stay exact; other numbers become floats only where a float holds them exactly (else the exact
    decimal text: DynamoDB keeps 38 digits)."""
    if not isinstance(text, str):
        raise TypeError("a number that is not text")
    try:
        value = _NUMBERS.create_decimal(text)
    except (ArithmeticError, ValueError) as error:
        raise ValueError(f"{text[:40]!r} is not a DynamoDB number ({type(error).__name__})") from None
    # DynamoDB's range: magnitudes from 1E-130 to under 1E+126, or zero; no infinities, no NaN
    if not value.is_finite() or (value and not -130 <= value.adjusted() <= 125):
        raise ValueError(f"{text[:40]!r} is not a DynamoDB number (outside its range)")
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    return as_float if Decimal(repr(as_float)) == value else str(value)


def _binary(value: object) -> str:
    """Lambda's stream events carry B and BS values as base64 text: checked, and kept as that text."""
    if not isinstance(value, str):
        raise TypeError("a binary value that is not base64 text")
    return base64.b64encode(base64.b64decode(value, validate=True)).decode()


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("a string set member that is not text")
    return value


def _sorted_set(items: object, item: Callable[[object], Any]) -> list[Any]:
    if not isinstance(items, list):
        raise TypeError("a set that is not a list")
    return sorted({item(value) for value in items}, key=lambda plain: (str(type(plain)), str(plain)))


def _plain(attribute: object) -> Any:  # noqa: ANN401, PLR0911 - DynamoDB values of any shape, one return per type
    """One DynamoDB AttributeValue as a JSON value: numbers as `_number`, binary as base64 text, sets as sorted
    lists, maps and lists walked. The same values boto3's TypeDeserializer gives, without importing boto3 (~55 ms
    of the function's cold start for this one class)."""
    if not isinstance(attribute, Mapping) or len(attribute) != 1:
        raise TypeError("a value that is not a one-key DynamoDB AttributeValue")
    ((kind, value),) = attribute.items()
    if kind in {"S", "BOOL"}:
        return value
    if kind == "N":
        return _number(value)
    if kind == "NULL":
        return None
    if kind == "M":
        if not isinstance(value, Mapping):
            raise TypeError("a map that is not an object")
        return {name: _plain(item) for name, item in value.items()}
    if kind == "L":
        if not isinstance(value, list):
            raise TypeError("a list that is not a list")
        return [_plain(item) for item in value]
    if kind == "B":
        return _binary(value)
    if kind == "SS":
        return _sorted_set(value, _string)
    if kind == "NS":
        return _sorted_set(value, _number)
    if kind == "BS":
        return _sorted_set(value, _binary)
    raise TypeError(f"DynamoDB type {kind} is not supported")


def _image(image: object, what: str) -> dict[str, Any] | None:
    if image is None:
        return None
    if not isinstance(image, Mapping):
        raise UndecodableChangeError(f"{what} is not a DynamoDB item")
    try:
        return {name: _plain(value) for name, value in image.items()}
    except (TypeError, ValueError, KeyError, ArithmeticError, binascii.Error) as error:
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

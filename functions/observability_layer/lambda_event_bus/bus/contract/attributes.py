"""The rules a CloudEvent's context attributes follow, whichever binding carried them.

Sections cited are those of the CloudEvents 1.0 specification (`spec.md`) and its JSON event format
(`json-format.md`). Every function checks every event it takes in with `checked_attributes`, so an event one
function accepts the others accept too.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from lambda_event_bus.bus.exceptions import BusError

SPECVERSION = "1.0"
REQUIRED = ("specversion", "id", "source", "type")
OPTIONAL = ("datacontenttype", "dataschema", "subject", "time")
CORE = frozenset(REQUIRED + OPTIONAL)
NON_EMPTY = frozenset({"id", "source", "type", "subject", "datacontenttype", "dataschema"})
INT32 = range(-(2**31), 2**31)
TIME_EXAMPLE = "2026-01-31T12:00:00Z"

_NAME = re.compile("[a-z0-9]+")  # spec §3.1.1: lower-case ASCII letters and digits
# spec §3.1.1 type system, String: no control characters, no Unicode noncharacters, no lone surrogates (a str
# holds a surrogate only unpaired: a JSON pair decodes to one character)
_SURROGATE = "\ud800-\udfff"
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    chr(plane * 0x10000 + 0xFFFE) + chr(plane * 0x10000 + 0xFFFF) for plane in range(17)
)
_CONTROL = "\x00-\x1f\x7f-\x9f"
_FORBIDDEN = re.compile(f"[{_CONTROL}{_NONCHARACTERS}{_SURROGATE}]")
_UNENCODABLE = re.compile(f"[{_SURROGATE}]")
# RFC 3339 §5.6 date-time, the only form of a Timestamp (spec §3.1.1)
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))", re.ASCII
)
# RFC 3986 §2: the characters a URI-reference may hold, anything else percent-encoded
_URI_TEXT = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*", re.ASCII)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*", re.ASCII)
# RFC 2046 / RFC 7231 §3.1.1.1: type "/" subtype, then parameters
_MEDIA_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z\-]+"
_MEDIA_TYPE = re.compile(rf"{_MEDIA_NAME}/{_MEDIA_NAME}\s*(?:;.*)?", re.ASCII | re.DOTALL)


class ContractError(BusError, ValueError):
    """An input the event contract refuses; `reason` says why in the sender's terms."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidEventError(ContractError):
    """The input is meant as a CloudEvent but breaks a rule of the specification."""


class UnsupportedFormatError(ContractError):
    """The input names a CloudEvents format or mode this bus does not read (e.g. `application/cloudevents+avro`)."""


Value = str | int | bool


def checked_attributes(attributes: Mapping[str, object]) -> dict[str, Value]:
    """The event's attributes with the unset ones (JSON `null`, JSON format §2.2) left out; InvalidEventError
    names the first rule broken. Nothing is added: an event keeps exactly the attributes it was sent with."""
    checked: dict[str, Value] = {}
    for name, value in attributes.items():
        if value is None:
            continue
        problem = _problem(name, value)
        if problem:
            raise InvalidEventError(problem)
        checked[name] = value  # type: ignore[assignment]  # _problem checked the type
    if checked.get("specversion") != SPECVERSION:
        shown = checked.get("specversion")
        raise InvalidEventError(
            "attribute 'specversion' is required" if shown is None else f"specversion must be '1.0', got {shown!r}"
        )
    for name in REQUIRED:
        if name not in checked:
            raise InvalidEventError(f"attribute {name!r} is required")
    return checked


def _problem(name: str, value: object) -> str | None:
    if name not in CORE and not _NAME.fullmatch(name):
        return f"attribute name {name!r} must be lower-case letters and digits only (spec §3.1.1)"
    if name == "data":
        return "'data' is reserved and cannot be an attribute"
    if isinstance(value, str):
        return _text_problem(name, value)
    return _typed_problem(name, value)


def _typed_problem(name: str, value: object) -> str | None:
    """A value that is not a string: only extensions may be integers (32-bit) or booleans (spec §3.1.1)."""
    if name in CORE:
        return f"attribute {name!r} must be a string, got {_json_type(value)}"
    if isinstance(value, bool) or (isinstance(value, int) and value in INT32):
        return None
    if isinstance(value, int):
        return f"extension {name!r} must be a 32-bit integer, got {value}"
    return f"extension {name!r} must be a string, a 32-bit integer or a boolean, got {_json_type(value)}"


_URI_ATTRIBUTES = {"source": False, "dataschema": True}  # absolute?


def _text_problem(name: str, value: str) -> str | None:
    if not value and name in NON_EMPTY:
        return f"attribute {name!r} must be a non-empty string"
    problem = text_problem(value, f"attribute {name!r}", control=True)
    if problem is None and name in _URI_ATTRIBUTES:
        problem = uri_problem(value, name, absolute=_URI_ATTRIBUTES[name])
    elif problem is None and name == "time":
        problem = time_problem(value)
    elif problem is None and name == "datacontenttype" and not _MEDIA_TYPE.fullmatch(value):
        problem = f"attribute 'datacontenttype' must be a media type such as application/json (RFC 2046), got {value!r}"
    return problem


def text_problem(value: str, what: str, *, control: bool = False) -> str | None:
    """Why `value` cannot travel as text: a lone surrogate (no UTF-8 document or Kafka header can carry one),
    or, when `control` is set, a control character or a noncharacter (which CloudEvents' String type forbids).
    ASCII text is checked by `isprintable` (~0.1 us), anything else by one regular expression search."""
    if value.isascii() and (value.isprintable() or not control):  # most attributes: no control character
        return None
    found = (_FORBIDDEN if control else _UNENCODABLE).search(value)
    if found is None:
        return None
    code = ord(found.group())
    if 0xD800 <= code <= 0xDFFF:
        return f"{what} is not valid Unicode text (a lone surrogate)"
    kind = "a control character" if code <= 0x9F else "a Unicode noncharacter"
    return f"{what} contains {kind} (U+{code:04X}), which CloudEvents forbids"


def uri_problem(value: str, name: str, *, absolute: bool) -> str | None:
    """`source` is a URI-reference and `dataschema` a URI (spec §3.1.1, RFC 3986): characters outside RFC 3986's
    set (spaces, non-ASCII) must be percent-encoded, and a scheme, when there is one, is well formed."""
    kind = "an absolute URI" if absolute else "a URI-reference"
    if not _URI_TEXT.fullmatch(value) or value.count("#") > 1:
        return f"attribute {name!r} must be {kind} (RFC 3986: spaces and such percent-encoded), got {value!r}"
    head = re.split("[/?#]", value, maxsplit=1)[0]
    if ":" in head:
        if not _SCHEME.fullmatch(head.split(":", 1)[0]):
            return f"attribute {name!r} must be {kind} (RFC 3986): {head.split(':', 1)[0]!r} is not a scheme"
    elif absolute:
        return f"attribute {name!r} must be an absolute URI with a scheme (RFC 3986), got {value!r}"
    return None


def time_problem(value: object) -> str | None:
    """`time` is an RFC 3339 timestamp: the form and a real date and time of day."""
    found = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if found:
        year, month, day, hour, minute, second = (int(found.group(index)) for index in range(1, 7))
        offset_hour, offset_minute = int(found.group(7) or 0), int(found.group(8) or 0)
        if (
            1 <= month <= 12
            and 1 <= day <= (28 if day <= 28 else calendar.monthrange(year, month)[1])
            and hour <= 23
            and minute <= 59
            and second <= 60  # a leap second
            and offset_hour <= 23
            and offset_minute <= 59
        ):
            return None
    return f"attribute 'time' must be an RFC 3339 timestamp such as {TIME_EXAMPLE} (got {value!r})"


def timestamp(moment: datetime) -> str:
    """A time attribute's text: RFC 3339 in UTC with a `Z`, as the CloudEvents SDK writes it."""
    return moment.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"


def canonical(value: object) -> str:
    """An attribute's canonical string (spec §3.1.1): what binary modes carry; `true`/`false` for booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):  # an SDK event's time
        return timestamp(value)
    return str(value)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", float: "a number with a fraction", str: "a string"}
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    return names.get(type(value), type(value).__name__)


def describe(error: Exception, limit: int = 300) -> str:
    """A parser's error on one line, at most `limit` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

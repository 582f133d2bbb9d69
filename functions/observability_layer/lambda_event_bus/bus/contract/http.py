"""CloudEvents over HTTP (`http-protocol-binding.md`): which content mode a request uses, and binary mode's
headers read into attributes. Header names are expected lower-cased (HTTP names are case-insensitive)."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Literal

from lambda_event_bus.bus.contract.attributes import InvalidEventError, UnsupportedFormatError
from lambda_event_bus.bus.contract.event import Event, make_event
from lambda_event_bus.bus.contract.json_format import BATCH, STRUCTURED

HttpMode = Literal["structured", "batch", "binary"]
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def media_type(content_type: str | None) -> str:
    """A Content-Type's media type, lower-cased, without its parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def http_mode(headers: Mapping[str, str]) -> HttpMode | None:
    """The request's content mode, decided by Content-Type first (§3): `application/cloudevents-batch...` is a
    batch, `application/cloudevents...` one structured event (even with `ce-` headers), anything else binary
    mode when a `ce-` header is present; None when the request is not a CloudEvent at all."""
    kind = media_type(headers.get("content-type"))
    if kind.startswith("application/cloudevents-batch"):
        if kind != BATCH:
            raise UnsupportedFormatError(f"{kind} is not a batch format this bus reads; send {BATCH}")
        return "batch"
    if kind.startswith("application/cloudevents"):
        if kind != STRUCTURED:
            raise UnsupportedFormatError(f"{kind} is not an event format this bus reads; send {STRUCTURED}")
        return "structured"
    if any(name.startswith("ce-") for name in headers):
        return "binary"
    return None


def read_binary(headers: Mapping[str, str], body: bytes) -> Event:
    """Binary mode (§3.1): each `ce-` header is an attribute, Content-Type is `datacontenttype`, the body is the
    data, kept as the bytes that were sent."""
    if "ce-datacontenttype" in headers:
        raise InvalidEventError(
            "binary mode carries datacontenttype in Content-Type: a ce-datacontenttype header must not be present "
            "(§3.1.1)"
        )
    attributes: dict[str, object] = {
        name[3:]: header_value(name, value) for name, value in headers.items() if name.startswith("ce-")
    }
    if headers.get("content-type"):
        attributes["datacontenttype"] = headers["content-type"]
    return make_event(attributes, body or None)


def header_value(name: str, value: str) -> str:
    """An attribute from its header value (§3.1.3.2): a double-quoted string unquoted (RFC 7230 §3.2.6), then one
    round of percent-decoding whose bytes must be UTF-8: invalid and overlong sequences (`%C0%A0`) are refused."""
    text = value.strip(" \t")
    if text.startswith('"'):
        text = _unquoted(name, text)
    if _LONE_PERCENT.search(text):
        raise InvalidEventError(f"header {name}: '%' must start a percent-encoded byte such as %20 (§3.1.3.2)")
    try:
        return urllib.parse.unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEventError(f"header {name} percent-decodes to bytes that are not UTF-8 (§3.1.3.2)") from None


def _unquoted(name: str, text: str) -> str:
    characters: list[str] = []
    escaped = False
    for index, character in enumerate(text[1:], start=1):
        if escaped:
            characters.append(character)
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == '"':
            if index != len(text) - 1:
                break
            return "".join(characters)
        else:
            characters.append(character)
    raise InvalidEventError(f"header {name} is not a valid quoted string (RFC 7230 §3.2.6)")

"""The event contract's round trip: any event ingest accepts is delivered by the consumer with the same
attributes and data (property-based).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as event_label
from hypothesis import strategies as st
from lambda_event_bus.bus.contract import data_value, read_structured
from lambda_event_bus.bus.contract.event import bytes_kind
from samhost.kafka_events import lambda_record
from support.conformance import BATCH_TYPE, STRUCTURED_TYPE, Bus, conformance_bus

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def bus(kafka_bootstrap: str) -> Iterator[Bus]:
    with conformance_bus(kafka_bootstrap) as started:
        yield started


# Round trip: any event ingest accepts is delivered by the consumer with the same attributes and data.

TEXT = st.text(
    st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="\ufdd0\ufffe\uffff"), min_size=1, max_size=16
)
EXTENSION_NAMES = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True).filter(
    lambda name: (
        name not in ("specversion", "id", "source", "type", "subject", "time", "data", "dataschema")
        and name != "datacontenttype"
    )
)
EXTENSION_VALUES = st.one_of(TEXT, st.integers(-(2**31), 2**31 - 1), st.booleans())
TIMES = st.builds(
    lambda moment, fraction, zone: moment.isoformat() + fraction + zone,
    st.integers(0, 32_503_679_999).map(  # 1970 to 2999, as wall-clock text: the offset is added after
        lambda seconds: datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
    ),
    st.sampled_from(["", ".000", ".5", ".123456789"]),
    st.sampled_from(["Z", "+02:00", "-11:30", "z"]),
)
JSON_VALUES = st.recursive(
    st.integers(-(10**12), 10**12) | st.booleans() | TEXT | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
# (datacontenttype, data as a structured event's member: ("data", value) or ("data_base64", bytes), body bytes)
PAYLOADS = st.one_of(
    st.tuples(st.sampled_from(["application/json", "application/vnd.x+json", None]), JSON_VALUES).map(
        lambda pair: (pair[0], ("data", pair[1]), json.dumps(pair[1]).encode())
    ),
    st.tuples(st.sampled_from(["text/plain", "application/xml", "text/csv; charset=utf-8"]), TEXT).map(
        lambda pair: (pair[0], ("data", pair[1]), pair[1].encode())
    ),
    st.tuples(st.sampled_from(["application/octet-stream", "image/png", None]), st.binary(min_size=1, max_size=24)).map(
        lambda pair: (pair[0], ("data_base64", pair[1]), pair[1])
    ),
    st.just((None, None, b"")),
)


@st.composite
def sent_events(draw: st.DrawFn) -> dict[str, Any]:
    """An event's attributes (core and extensions, some null) and payload, before any binding shapes it."""
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": "set-by-the-test",
        "source": draw(st.sampled_from(["/shop/orders", "urn:example:crm", "https://example.com/a?b=c#d"])),
        "type": draw(st.from_regex(r"conformance\.[a-z]{1,8}(\.[a-z0-9]{1,6}){0,2}", fullmatch=True)),
    }
    optional = {
        "subject": TEXT,
        "time": TIMES,
        "dataschema": st.just("https://example.com/schema/v1"),
    }
    for name, values in optional.items():
        choice = draw(st.sampled_from(["absent", "null", "set"]))
        if choice != "absent":
            attributes[name] = None if choice == "null" else draw(values)
    attributes.update(draw(st.dictionaries(EXTENSION_NAMES, EXTENSION_VALUES, max_size=3)))
    content_type, member, body = draw(PAYLOADS)
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    return {"attributes": attributes, "member": member, "body": body}


def structured(sent: dict[str, Any]) -> dict[str, Any]:
    document = dict(sent["attributes"])
    if sent["member"] is not None:
        name, value = sent["member"]
        document[name] = base64.b64encode(value).decode() if name == "data_base64" else value
    return document


def binary_request(sent: dict[str, Any], quote: bool) -> tuple[dict[str, str], bytes]:
    """http-protocol-binding.md §3.1: each attribute a `ce-` header in its canonical string, percent-encoded
    (§3.1.3.2), optionally also double-quoted; datacontenttype as Content-Type."""
    headers: dict[str, str] = {}
    for name, value in sent["attributes"].items():
        if value is None:
            continue
        if name == "datacontenttype":
            headers["Content-Type"] = value
            continue
        encoded = "".join(
            character if 0x21 <= ord(character) <= 0x7E and character not in '"%' else quote_character(character)
            for character in canonical_text(value)
        )
        quoted = encoded.replace("\\", "\\\\")  # inside a quoted string a backslash escapes (RFC 7230 §3.2.6)
        headers[f"ce-{name}"] = f'"{quoted}"' if quote else encoded
    return headers, sent["body"]


def quote_character(character: str) -> str:
    return "".join(f"%{byte:02X}" for byte in character.encode())


def canonical_text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def expected_delivery(sent: dict[str, Any], mode: str) -> tuple[dict[str, str], str | None, Any]:
    """The attributes the consumer must deliver (each as its canonical string: Kafka's headers carry them so),
    the data member it must use, and the data's value."""
    attributes = {name: canonical_text(value) for name, value in sent["attributes"].items() if value is not None}
    content_type = attributes.get("datacontenttype")
    if sent["member"] is None:
        return attributes, None, None
    name, value = sent["member"]
    if content_type is None and name == "data":
        if mode == "binary":  # binary mode with no Content-Type: bytes, no assumption made (json-format §3.1.1)
            return attributes, "data_base64", sent["body"]
        attributes["datacontenttype"] = "application/json"  # json-format §3.1.2, the one documented addition
    kind = {"json": "data", "text": "data"}.get(bytes_kind(attributes.get("datacontenttype")), "data_base64")
    if kind == "data_base64":
        return attributes, kind, sent["body"]
    return attributes, kind, value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mode=st.sampled_from(["structured", "binary", "binary-quoted", "batch"]),
    sent=st.lists(sent_events(), min_size=1, max_size=3),
    mapping=st.sampled_from(["aws:kafka", "SelfManagedKafka"]),
)
def test_any_event_ingest_accepts_is_delivered_with_the_same_attributes_and_data(bus, mode, sent, mapping):
    if mode != "batch":
        sent = sent[:1]
    for event in sent:
        event["attributes"]["id"] = uuid.uuid4().hex
    if mode == "batch":
        status, answer = bus.post(json.dumps([structured(e) for e in sent]), {"Content-Type": BATCH_TYPE})
    elif mode == "structured":
        status, answer = bus.post(json.dumps(structured(sent[0])), {"Content-Type": STRUCTURED_TYPE})
    else:
        headers, body = binary_request(sent[0], quote=mode == "binary-quoted")
        status, answer = bus.post(body, headers)
    assert status == 202, answer
    ids = [event["attributes"]["id"] for event in sent]
    delivered = bus.deliver([lambda_record(bus.on_kafka(event_id)) for event_id in ids], mapping)["delivered"]
    event_label(mode)
    for event in sent:
        attributes, member, value = expected_delivery(event, "binary" if mode.startswith("binary") else mode)
        document = delivered[event["attributes"]["id"]]
        assert {k: v for k, v in document.items() if k not in ("data", "data_base64")} == attributes
        assert [name for name in ("data", "data_base64") if name in document] == ([member] if member else [])
        if member:
            assert data_value(read_structured(document)) == value

"""The event contract against the specifications over HTTP: what IngestFunction accepts (structured, binary,
batch) reaches the consumer's subscribers unchanged, and what the specifications forbid is refused.

Each case cites its source (see tests/support/conformance.py).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import pytest
from samhost.kafka_events import lambda_record
from support.conformance import (
    HELLO,
    STRUCTURED_TYPE,
    Bus,
    accepted_and_delivered,
    ce_headers,
    conformance_bus,
    unique,
)

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def bus(kafka_bootstrap: str) -> Iterator[Bus]:
    with conformance_bus(kafka_bootstrap) as started:
        yield started


class TestConformanceSuiteOverHttp:
    """features/http-protocol-binding.feature, then the same events on through the consumer."""

    @pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
    def test_binary_content_mode(self, bus, content_type):
        event_id = f"1234-1234-1234-{uuid.uuid4().hex}"
        headers = {
            "ce-specversion": "1.0",
            "ce-type": "com.example.someevent",
            "ce-time": "2018-04-05T03:56:24Z",
            "ce-id": event_id,
            "ce-source": "/mycontext/subcontext",
            "Content-Type": content_type,
        }
        message, delivered = accepted_and_delivered(bus, HELLO, headers, event_id)
        expected = {
            "id": event_id,
            "specversion": "1.0",
            "type": "com.example.someevent",
            "source": "/mycontext/subcontext",
            "time": "2018-04-05T03:56:24Z",
            "datacontenttype": content_type,
        }
        assert message.value() == HELLO, "binary mode: the body goes to Kafka exactly as sent"
        assert ce_headers(message) == {f"ce_{k}": v for k, v in expected.items() if k != "datacontenttype"} | {
            "content-type": content_type
        }
        assert delivered == expected | {"data": {"message": "Hello World!"}}

    @pytest.mark.parametrize(
        "content_type", ["application/cloudevents+json", "application/cloudevents+json; charset=utf-8"]
    )
    def test_structured_content_mode(self, bus, content_type):
        event = {
            "specversion": "1.0",
            "type": "com.example.someevent",
            "time": "2018-04-05T03:56:24Z",
            "id": f"1234-1234-1234-{uuid.uuid4().hex}",
            "source": "/mycontext/subcontext",
            "datacontenttype": "application/json",
            "data": {"message": "Hello World!"},
        }
        _, delivered = accepted_and_delivered(
            bus, json.dumps(event, indent=4), {"Content-Type": content_type}, event["id"]
        )
        assert delivered == event


class TestAttributes:
    def test_null_attributes_are_unset(self, bus):
        """json-format.md §2.2: a null value is unset; §3.2's examples send `"subject": null`,
        `"unsetextension": null`, and §2.3 lists `time` as null."""
        event = unique(type="com.example.someevent", source="/mycontext", subject=None, time=None, unsetextension=None)
        message, delivered = accepted_and_delivered(
            bus, json.dumps(event), {"Content-Type": "application/cloudevents+json"}, event["id"]
        )
        assert set(ce_headers(message)) == {"ce_specversion", "ce_id", "ce_type", "ce_source"}
        assert delivered == {
            "specversion": "1.0",
            "id": event["id"],
            "type": "com.example.someevent",
            "source": "/mycontext",
        }

    def test_no_attribute_is_invented_and_time_keeps_its_text(self, bus):
        """spec.md, time: OPTIONAL, so an event without it stays without it (the SDK would stamp "now");
        Type System: a Timestamp may be routed as its string through every hop, so its text is kept as sent."""
        without_time = unique(type="t.untimed", source="/s")
        fraction = unique(type="t.timed", source="/s", time="2018-04-05T03:56:24.000Z")
        offset = unique(type="t.offset", source="/s", time="2018-04-05t05:56:24.123456789+02:00")
        for event in (without_time, fraction, offset):
            message, delivered = accepted_and_delivered(
                bus, json.dumps(event), {"Content-Type": "application/cloudevents+json"}, event["id"]
            )
            assert delivered == event
            assert ce_headers(message).get("ce_time") == event.get("time")

    def test_the_kafka_key_does_not_become_an_attribute(self, bus):
        """kafka-protocol-binding.md §3.1: a key mapper MUST NOT modify the event: ingest keys the record by
        subject, and the consumer reads no `partitionkey` from the key."""
        event = unique(type="t.keyed", source="/s", subject="order-7")
        message, delivered = accepted_and_delivered(
            bus, json.dumps(event), {"Content-Type": "application/cloudevents+json"}, event["id"]
        )
        assert message.key() == b"order-7"
        assert delivered == event

    def test_extension_values_travel_as_their_canonical_strings(self, bus):
        """spec.md, Type System: Integer and Boolean have canonical strings, which Kafka's headers carry
        (kafka-protocol-binding.md §3.2.3); the delivered event has them as strings."""
        event = unique(type="t.ext", source="/s", count=5, flag=True, negative=-(2**31))
        message, delivered = accepted_and_delivered(
            bus, json.dumps(event), {"Content-Type": "application/cloudevents+json"}, event["id"]
        )
        assert {name: ce_headers(message)[f"ce_{name}"] for name in ("count", "flag", "negative")} == {
            "count": "5",
            "flag": "true",
            "negative": "-2147483648",
        }
        assert delivered == event | {"count": "5", "flag": "true", "negative": "-2147483648"}

    def test_uri_references_and_absolute_uris(self, bus):
        """spec.md, source is a URI-reference and dataschema a URI (RFC 3986 §4.1, §4.3)."""
        for source in ("urn:example:orders", "https://example.com/shop?region=eu#x", "/a%20b/c", "relative"):
            event = unique(type="t.uri", source=source, dataschema="https://example.com/schema/v1.json")
            status, answer = bus.post(json.dumps(event), {"Content-Type": "application/cloudevents+json"})
            assert status == 202, (source, answer)


class TestHttpModes:
    def test_the_content_type_decides_structured_mode_even_with_ce_headers(self, bus):
        """http-protocol-binding.md §3: the mode is read from Content-Type first; §3.2.3 lets a structured
        message carry the binary headers too, and the body is what counts."""
        event = unique(type="t.both", source="/body")
        headers = {
            "Content-Type": "application/cloudevents+json",
            "ce-specversion": "1.0",
            "ce-id": "from-a-header",
            "ce-type": "t.header",
            "ce-source": "/header",
        }
        _, delivered = accepted_and_delivered(bus, json.dumps(event), headers, event["id"])
        assert delivered == event

    def test_header_values_are_unquoted_and_percent_decoded(self, bus):
        """http-protocol-binding.md §3.1.3.2: double-quoted values are unquoted (backslash escapes too), then
        one round of percent-decoding; lower-case hex digits are accepted; its example of U+20AC and U+1F600."""
        event_id = uuid.uuid4().hex
        headers = {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-type": '"com.example.\\"quoted\\""',
            "ce-source": "%2Fmy%2fsource",
            "ce-subject": "Euro%20%E2%82%AC%20%f0%9f%98%80",
            "ce-note": '"a b"',
            "Content-Type": "text/plain",
        }
        _, delivered = accepted_and_delivered(bus, "hello", headers, event_id)
        assert delivered == {
            "specversion": "1.0",
            "id": event_id,
            "type": 'com.example."quoted"',
            "source": "/my/source",
            "subject": "Euro € 😀",
            "note": "a b",
            "datacontenttype": "text/plain",
            "data": "hello",
        }

    def test_an_empty_batch_is_accepted_with_nothing_produced(self, bus):
        """json-format.md §4.3: `[]` is an empty batch, "also valid in a request"."""
        status, answer = bus.post("[]", {"Content-Type": "application/cloudevents-batch+json"})
        assert (status, answer) == (202, {"accepted": [], "results": []})

    def test_a_batch_is_read_as_structured_events(self, bus):
        """json-format.md §4.1: an array of events in the JSON event format."""
        events = [
            unique(type="t.batch", source="/b", datacontenttype="application/json", data=[index]) for index in range(3)
        ]
        status, answer = bus.post(json.dumps(events), {"Content-Type": "application/cloudevents-batch+json"})
        assert status == 202, answer
        outcome = bus.deliver([lambda_record(bus.on_kafka(event["id"])) for event in events])
        assert [outcome["delivered"][event["id"]] for event in events] == events


class TestData:
    """json-format.md §3.1: how data is written is decided by datacontenttype, not by the bytes."""

    def test_binary_data_is_delivered_as_data_base64_even_when_it_is_utf8(self, bus):
        event_id = uuid.uuid4().hex
        headers = binary_headers(event_id, "application/octet-stream")
        message, delivered = accepted_and_delivered(bus, b"plain ascii bytes", headers, event_id)
        assert message.value() == b"plain ascii bytes"
        assert "data" not in delivered
        assert base64.b64decode(delivered["data_base64"]) == b"plain ascii bytes"

    def test_binary_data_without_a_content_type_has_none_after_either(self, bus):
        """§3.1.1: without datacontenttype no assumption is made, and none is added."""
        event_id = uuid.uuid4().hex
        _, delivered = accepted_and_delivered(bus, b"\x00\x01\xff", binary_headers(event_id, None), event_id)
        assert "datacontenttype" not in delivered
        assert base64.b64decode(delivered["data_base64"]) == b"\x00\x01\xff"

    @pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "text/csv; charset=utf-8"])
    def test_text_data_is_delivered_as_a_string(self, bus, content_type):
        event_id = uuid.uuid4().hex
        text = '<much wow="xml"/> ünïcode'
        _, delivered = accepted_and_delivered(bus, text.encode(), binary_headers(event_id, content_type), event_id)
        assert delivered["data"] == text

    def test_json_data_of_a_json_subtype_is_delivered_as_json(self, bus):
        """§3.1.1: `*/json` and `*/*+json` declare JSON."""
        event_id = uuid.uuid4().hex
        headers = binary_headers(event_id, "application/vnd.example+json")
        _, delivered = accepted_and_delivered(bus, b'[1, "two", {"three": 3.5}]', headers, event_id)
        assert delivered["data"] == [1, "two", {"three": 3.5}]

    def test_data_base64_stays_binary_and_a_json_string_stays_a_string(self, bus):
        """§3.1.2: data_base64 is decoded to bytes; a `data` string under a JSON type is a JSON string, not a
        document to parse again."""
        binary = unique(type="t.b64", source="/s", datacontenttype="image/png", data_base64="iVBORw0KGgo=")
        string = unique(type="t.str", source="/s", datacontenttype="application/json", data='{"not": "parsed"}')
        for event in (binary, string):
            _, delivered = accepted_and_delivered(
                bus, json.dumps(event), {"Content-Type": "application/cloudevents+json"}, event["id"]
            )
            assert delivered == event

    def test_json_data_without_a_content_type_is_delivered_as_application_json(self, bus):
        """§3.1.2: data with no datacontenttype is JSON, and an event re-serialised in another binding SHOULD
        say so: the one attribute the bus adds (Kafka's content-type header)."""
        event = unique(type="t.implied", source="/s", data={"k": 1})
        message, delivered = accepted_and_delivered(
            bus, json.dumps(event), {"Content-Type": "application/cloudevents+json"}, event["id"]
        )
        assert ce_headers(message)["content-type"] == "application/json"
        assert delivered == event | {"datacontenttype": "application/json"}


def binary_headers(event_id: str, content_type: str | None) -> dict[str, str]:
    headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-type": "t.binary", "ce-source": "/s"}
    return headers | ({"Content-Type": content_type} if content_type else {})


STRUCTURED = {"Content-Type": STRUCTURED_TYPE}
REJECTED = [
    # each: why (the rule and where it is written), body, headers, the status, a part of the detail
    (
        "http §3.1.1: ce-datacontenttype in binary mode",
        "{}",
        binary_headers("x", "application/json") | {"ce-datacontenttype": "application/json"},
        400,
        "ce-datacontenttype header must not be present",
    ),
    ("http §3.1.3.2: overlong UTF-8", "x", binary_headers("x", "text/plain") | {"ce-subject": "%C0%A0"}, 400, "UTF-8"),
    (
        "http §3.1.3.2: an encoded surrogate",
        "x",
        binary_headers("x", "text/plain") | {"ce-subject": "%ED%A0%80"},
        400,
        "UTF-8",
    ),
    ("http §3.1.3.2: a lone percent", "x", binary_headers("x", "text/plain") | {"ce-subject": "100%"}, 400, "percent"),
    (
        "RFC 7230 §3.2.6: unterminated quote",
        "x",
        binary_headers("x", "text/plain") | {"ce-subject": '"abc'},
        400,
        "quoted",
    ),
    (
        "spec Type System: a control character",
        json.dumps(unique(type="t", source="/s", subject="a\u0007b")),
        STRUCTURED,
        400,
        "U+0007",
    ),
    (
        "spec Type System: a C1 control character",
        json.dumps(unique(type="t", source="/s", ext="a\u0085")),
        STRUCTURED,
        400,
        "U+0085",
    ),
    (
        "spec Type System: a noncharacter",
        json.dumps(unique(type="t", source="/s", subject="\ufdd0")),
        STRUCTURED,
        400,
        "noncharacter",
    ),
    (
        "spec Type System: a lone surrogate",
        '{"specversion":"1.0","id":"i","type":"t","source":"/s","subject":"\\udead"}',
        STRUCTURED,
        400,
        "surrogate",
    ),
    (
        "spec source: not a URI-reference",
        json.dumps(unique(type="t", source="my source")),
        STRUCTURED,
        400,
        "URI-reference",
    ),
    ("spec source: a bad scheme", json.dumps(unique(type="t", source="1a:b")), STRUCTURED, 400, "scheme"),
    (
        "spec dataschema: a relative URI",
        json.dumps(unique(type="t", source="/s", dataschema="/schema")),
        STRUCTURED,
        400,
        "absolute URI",
    ),
    ("spec subject: empty", json.dumps(unique(type="t", source="/s", subject="")), STRUCTURED, 400, "non-empty"),
    (
        "spec time: not a real date",
        json.dumps(unique(type="t", source="/s", time="2018-02-30T00:00:00Z")),
        STRUCTURED,
        400,
        "RFC 3339",
    ),
    (
        "spec Type System: Integer is 32-bit",
        json.dumps(unique(type="t", source="/s", big=2**31)),
        STRUCTURED,
        400,
        "32-bit",
    ),
    (
        "spec Type System: no fractions",
        json.dumps(unique(type="t", source="/s", ratio=1.5)),
        STRUCTURED,
        400,
        "fraction",
    ),
    (
        "spec Type System: no objects",
        json.dumps(unique(type="t", source="/s", nested={"a": 1})),
        STRUCTURED,
        400,
        "object",
    ),
    (
        "spec Naming Conventions",
        json.dumps(unique(type="t", source="/s", **{"Bad-Name": "x"})),
        STRUCTURED,
        400,
        "lower-case",
    ),
    ("spec type: a string", json.dumps(unique(type=5, source="/s")), STRUCTURED, 400, "'type' must be a string"),
    (
        "json §3.1.1: data and data_base64",
        json.dumps(unique(type="t", source="/s", data=1, data_base64="AA==")),
        STRUCTURED,
        400,
        "mutually exclusive",
    ),
    (
        "json §3.1.2: non-JSON data is a string",
        json.dumps(unique(type="t", source="/s", datacontenttype="text/plain", data={"a": 1})),
        STRUCTURED,
        400,
        "must be a string",
    ),
    (
        "json §3.1.2: data_base64 is base64",
        json.dumps(unique(type="t", source="/s", data_base64="@@")),
        STRUCTURED,
        400,
        "base64",
    ),
    ("binary data declared JSON is JSON", "{nope", binary_headers("x", "application/json"), 400, "not JSON"),
    ("binary data declared text is UTF-8", b"\xff\xfe", binary_headers("x", "text/plain"), 400, "not UTF-8"),
    (
        "http §3: a format the bus does not read",
        "x",
        {"Content-Type": "application/cloudevents+avro"},
        415,
        "cloudevents+avro",
    ),
]


@pytest.mark.parametrize(("why", "body", "headers", "status", "detail"), REJECTED, ids=[case[0] for case in REJECTED])
def test_ingest_rejects_what_the_specifications_forbid(bus, why, body, headers, status, detail):
    answered, problem = bus.post(body, headers)
    assert answered == status, problem
    assert detail in problem["detail"], problem

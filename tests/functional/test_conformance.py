"""The event contract against the specifications, through the real handlers: IngestFunction over HTTP to the
real broker, KafkaConsumerFunction over batches shaped as the event source mapping sends them (MSK and
self-managed) to SQS (moto) and a real webhook.

Every case names where its rule comes from: the CloudEvents specification (`spec.md`), its JSON event format
(`json-format.md`), its HTTP and Kafka protocol bindings, or a scenario of the CloudEvents conformance suite
(github.com/cloudevents/conformance, `features/*.feature`), whose inputs are reproduced as it states them.
CDC's cases (Debezium's keyless tables) are in test_cdc.py with the rest of CDC's harness.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import boto3
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from eventbus.contract import data_value, read_structured
from eventbus.contract.event import bytes_kind
from hypothesis import HealthCheck, given, settings
from hypothesis import event as event_label
from hypothesis import strategies as st
from localbus.context import LambdaContext
from localbus.kafka_events import lambda_event, lambda_record
from localbus.webhook import WebhookReceiver
from moto import mock_aws
from support.consumer import raw_record
from support.functions import load_function
from support.moto import use_moto_credentials

pytestmark = pytest.mark.servers

REGION = "us-east-1"
SECRET = "conformance-secret"
HELLO = b'{\n    "message": "Hello World!"\n}'
"""The conformance suite's data, as its HTTP scenarios send it."""


@dataclass
class Bus:
    """Ingest producing every event to one topic, and a consumer delivering every event to SQS and a webhook."""

    ingest: ModuleType
    consumer: ModuleType
    topic: str
    sqs: Any
    queue: str
    dlq: str
    webhook: WebhookReceiver
    reader: Consumer
    seen: dict[str, Message] = field(default_factory=dict)
    offsets: Iterator[int] = field(default_factory=lambda: iter(range(1_000, 10**9, 10)))

    def post(self, body: bytes | str, headers: dict[str, str]) -> tuple[int, Any]:
        raw = body if isinstance(body, bytes) else body.encode()
        request = {
            "resource": "/events",
            "path": "/events",
            "httpMethod": "POST",
            "headers": headers,
            "requestContext": {"requestId": uuid.uuid4().hex},
            "body": base64.b64encode(raw).decode(),
            "isBase64Encoded": True,
        }
        response = self.ingest.handler(request, LambdaContext(function_name="ingest"))
        return response["statusCode"], json.loads(response["body"])

    def find(self, wanted: Callable[[dict[str, bytes]], bool], timeout_s: float = 10.0) -> Message:
        """The first record read from the topic whose headers `wanted` accepts."""
        return self._read(
            lambda: next((m for m in self.seen.values() if wanted(dict(m.headers() or []))), None), timeout_s
        )

    def on_kafka(self, event_id: str, timeout_s: float = 10.0) -> Message:
        """The record ingest produced for this event id, read from the broker."""
        return self._read(lambda: self.seen.get(event_id), timeout_s)

    def _read(self, found: Callable[[], Message | None], timeout_s: float) -> Message:
        if not self.reader.assignment():  # the topic exists once something has produced to it
            partitions = self.reader.list_topics(self.topic, timeout=10).topics[self.topic].partitions
            self.reader.assign([TopicPartition(self.topic, number, OFFSET_BEGINNING) for number in partitions])
        for _ in range(int(timeout_s / 0.2)):
            if (message := found()) is not None:
                return message
            polled = self.reader.poll(0.2)
            if polled is not None and not polled.error():
                self.seen[(dict(polled.headers() or []).get("ce_id") or b"").decode()] = polled
        raise AssertionError(f"not on {self.topic} within {timeout_s} s")

    def deliver(self, records: list[dict[str, Any]], source: str = "aws:kafka") -> dict[str, Any]:
        """Run the consumer over the records; what reached SQS and the webhook, by event id, and the dead
        letters, by offset."""
        hooked = len(self.webhook.received)
        response = self.consumer.handler(lambda_event(records, source=source), LambdaContext(function_name="c"))
        assert response == {"batchItemFailures": []}
        queued = [json.loads(message["Body"]) for message in drain(self.sqs, self.queue)]
        hooks = [delivery["event"] for delivery in self.webhook.received[hooked:]]
        letters = [json.loads(message["Body"]) for message in drain(self.sqs, self.dlq)]
        delivered = {document["id"]: document for document in queued}
        assert delivered == {document["id"]: document for document in hooks}, "SQS and the webhook get the same"
        return {
            "delivered": delivered,
            "dead": {letter["offset"]: letter["reason"] for letter in letters},
        }

    def record(self, value: bytes | None, headers: list[tuple[str, bytes]], key: bytes | None = None) -> dict:
        return raw_record(self.topic, next(self.offsets), value, headers, key=key)


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        found.extend(batch)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
        )
    return found


@pytest.fixture(scope="module")
def bus(kafka_bootstrap: str) -> Iterator[Bus]:
    topic = f"conformance-{uuid.uuid4().hex[:8]}"
    webhook = WebhookReceiver(SECRET)
    with pytest.MonkeyPatch.context() as monkeypatch, mock_aws():
        use_moto_credentials(monkeypatch, REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        queue, dlq = sqs.create_queue(QueueName="all")["QueueUrl"], sqs.create_queue(QueueName="dlq")["QueueUrl"]
        common = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "OTEL_TRACES_EXPORTER": "none"}
        ingest = load_function("ingest", "ingest", {**common, "TOPIC_ROUTES": json.dumps({"*": topic})}, monkeypatch)
        subscriptions = [
            {"name": "queue", "match": {"type": "*"}, "target": {"type": "sqs", "url": queue}},
            {"name": "hook", "match": {"type": "*"}, "target": {"type": "webhook", "url": webhook.start()}},
        ]
        environment = {**common, "SUBSCRIPTIONS": json.dumps(subscriptions), "DLQ_URL": dlq, "WEBHOOK_SECRET": SECRET}
        consumer = load_function("consumer", "consumer", environment, monkeypatch)
        reader = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"conformance-{uuid.uuid4().hex}"})
        try:
            yield Bus(ingest, consumer, topic, sqs, queue, dlq, webhook, reader)
        finally:
            reader.close()
            webhook.stop()


def ce_headers(message: Message) -> dict[str, str]:
    """A record's attributes as it carries them: `ce_*` headers and content-type, decoded."""
    return {
        name: value.decode()
        for name, value in message.headers() or []
        if name.startswith("ce_") or name == "content-type"
    }


def unique(**attributes: Any) -> dict[str, Any]:
    """A structured event with a fresh id (the consumer rightly skips an id it has delivered)."""
    return {"specversion": "1.0", "id": uuid.uuid4().hex, **attributes}


def accepted_and_delivered(bus: Bus, body: bytes | str, headers: dict[str, str], event_id: str) -> tuple:
    status, answer = bus.post(body, headers)
    assert status == 202, answer
    message = bus.on_kafka(event_id)
    outcome = bus.deliver([lambda_record(message)])
    return message, outcome["delivered"][event_id]


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


STRUCTURED_TYPE, BATCH_TYPE = "application/cloudevents+json", "application/cloudevents-batch+json"
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


class TestKafkaRecords:
    """features/kafka-protocol-binding.feature and the Kafka binding's rules, for records as the event source
    mapping delivers them from MSK (`aws:kafka`) and from a self-managed cluster (`SelfManagedKafka`)."""

    SOURCES = ("aws:kafka", "SelfManagedKafka")

    @pytest.mark.parametrize("source", SOURCES)
    def test_binary_content_mode(self, bus, source):
        event_id = f"1234-1234-1234-{uuid.uuid4().hex}"
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", event_id.encode()),
            ("ce_type", b"com.example.someevent"),
            ("ce_source", b"/mycontext/subcontext"),
            ("ce_time", b"2018-04-05T03:56:24Z"),
            ("content-type", b"application/json"),
        ]
        outcome = bus.deliver([bus.record(b'{"message": "Hello World!"}', headers, key=b"mykey")], source)
        assert outcome["delivered"][event_id] == {
            "specversion": "1.0",
            "id": event_id,
            "type": "com.example.someevent",
            "source": "/mycontext/subcontext",
            "time": "2018-04-05T03:56:24Z",
            "datacontenttype": "application/json",
            "data": {"message": "Hello World!"},
        }, "the key (mykey) is not read into a partitionkey attribute (§3.1)"

    @pytest.mark.parametrize("source", SOURCES)
    @pytest.mark.parametrize(
        "content_type", [b"application/cloudevents+json", b"application/cloudevents+json; charset=UTF-8", None]
    )
    def test_structured_content_mode(self, bus, source, content_type):
        """§3.3.1: the content-type header, if present, names the format; a structured record may go without."""
        event = {
            "specversion": "1.0",
            "type": "com.example.someevent",
            "time": "2018-04-05T03:56:24.000Z",
            "id": f"1234-1234-1234-{uuid.uuid4().hex}",
            "source": "/mycontext/subcontext",
            "subject": None,
            "datacontenttype": "application/json",
            "data": {"message": "Hello World!"},
        }
        headers = [("content-type", content_type)] if content_type else []
        outcome = bus.deliver([bus.record(json.dumps(event, indent=4).encode(), headers)], source)
        assert outcome["delivered"][event["id"]] == {k: v for k, v in event.items() if v is not None}

    def test_binary_mode_data_follows_the_content_type(self, bus):
        """json-format.md §3.1.1 on delivery; kafka-protocol-binding.md §3.2.2: no value is an event without
        data."""
        ids = [uuid.uuid4().hex for _ in range(3)]
        records = [
            bus.record(b"utf-8 but binary", kafka_binary(ids[0], b"application/octet-stream")),
            bus.record("grüße".encode(), kafka_binary(ids[1], b"text/plain; charset=utf-8")),
            bus.record(None, kafka_binary(ids[2], None)),
        ]
        delivered = bus.deliver(records)["delivered"]
        assert base64.b64decode(delivered[ids[0]]["data_base64"]) == b"utf-8 but binary"
        assert delivered[ids[1]]["data"] == "grüße"
        assert delivered[ids[2]] == {"specversion": "1.0", "id": ids[2], "type": "t.kafka", "source": "/k"}

    def test_what_the_specifications_forbid_is_dead_lettered_with_the_reason(self, bus):
        cases = [
            (
                [*kafka_binary("a", b"application/json"), ("ce_datacontenttype", b"application/json")],
                b"{}",
                "content-type",
            ),
            ([*kafka_binary("b", None), ("ce_subject", b"\xff")], b"x", "not UTF-8"),
            ([*kafka_binary("c", None), ("ce_subject", b"a\x01")], b"x", "control character"),
            ([*kafka_binary("d", None)[:3], ("ce_source", b"not a uri")], b"x", "URI-reference"),
            (kafka_binary("e", b"application/json"), b"{nope", "not JSON"),
            ([("content-type", b"application/cloudevents-batch+json")], b"[]", "not a Kafka record format"),
            ([("content-type", b"application/cloudevents+avro")], b"x", "cloudevents+avro"),
            (
                [("content-type", b"application/cloudevents+json")],
                json.dumps(unique(type="t", source="/s", ratio=0.5)).encode(),
                "fraction",
            ),
        ]
        records = [bus.record(value, headers) for headers, value, _ in cases]
        outcome = bus.deliver(records)
        assert outcome["delivered"] == {}
        reasons = [outcome["dead"][record["offset"]] for record in records]
        assert all(expected in reason for (_, _, expected), reason in zip(cases, reasons, strict=True)), reasons


def test_cdc_events_pass_the_consumers_contract_unchanged(bus, monkeypatch):
    """CdcFunction builds its events through the same contract: what it publishes from a Debezium change (a
    table name with a space, a keyless table) is delivered with exactly the attributes it carries on Kafka."""
    envelope = {
        "op": "c",
        "after": {"id": 1, "note": "grüße"},
        "source": {"name": "pg", "db": "shop", "table": "order lines", "ts_ms": 1_795_000_000_000, "lsn": 7},
    }
    record = {
        "kinesis": {
            "partitionKey": "default",
            "sequenceNumber": "4959" + "0" * 39 + "1",
            "data": base64.b64encode(json.dumps(envelope).encode()).decode(),
        },
        "eventSource": "aws:kinesis",
        "eventID": "shardId-000000000000:1",
        "eventSourceARN": f"arn:aws:kinesis:{REGION}:123456789012:stream/cdc",
    }
    environment = {"CDC_TOPIC": bus.topic, "OTEL_TRACES_EXPORTER": "none", "DLQ_URL": bus.dlq}
    cdc = load_function("cdc", "cdc", environment, monkeypatch)
    assert cdc.handler({"Records": [record]}, LambdaContext(function_name="cdc")) == {"batchItemFailures": []}
    message = bus.find(lambda headers: headers.get("ce_type") == b"cdc.order lines.created")
    carried = ce_headers(message)
    event_id = carried["ce_id"]
    delivered = bus.deliver([lambda_record(message)])["delivered"][event_id]
    attributes = {name.removeprefix("ce_"): value for name, value in carried.items() if name.startswith("ce_")}
    assert {k: v for k, v in delivered.items() if k != "data"} == attributes | {"datacontenttype": "application/json"}
    assert attributes["source"] == "/cdc/pg/shop/order%20lines"
    assert attributes["partitionkey"] == '{"table":"order lines"}'
    assert delivered["data"] == json.loads(message.value())


def kafka_binary(event_id: str, content_type: bytes | None) -> list[tuple[str, bytes]]:
    headers = [("ce_specversion", b"1.0"), ("ce_id", event_id.encode()), ("ce_type", b"t.kafka"), ("ce_source", b"/k")]
    return headers + ([("content-type", content_type)] if content_type else [])


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

"""The event contract against the specifications on Kafka: records as producers other than ingest write them
(structured, binary), read by KafkaConsumerFunction, and CDC's events through the consumer's contract.

Each case cites its source (see tests/support/conformance.py).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import pytest
from samhost.kafka_events import lambda_record
from support.conformance import REGION, Bus, ce_headers, conformance_bus, unique
from support.context import LambdaContext
from support.functions import load_function

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def bus(kafka_bootstrap: str) -> Iterator[Bus]:
    with conformance_bus(kafka_bootstrap) as started:
        yield started


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

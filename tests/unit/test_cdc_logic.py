"""CdcFunction's plain logic: Debezium and DynamoDB decoding, the change model, the CloudEvent, settings."""

from __future__ import annotations

import json

import pytest
from cdc import debezium, dynamodb
from cdc.events import to_cloud_event
from cdc.model import UndecodableChangeError
from cdc.settings import CdcSettings
from lambda_event_bus.base import ConfigError


def envelope(op: str, **fields: object) -> bytes:
    source = {
        "name": "pg",
        "db": "shop",
        "schema": "public",
        "table": "customers",
        "ts_ms": 1_700_000_000_000,
        "lsn": 9,
    }
    return json.dumps({"op": op, "source": source, **fields}).encode()


KEY = b'{"id": 1}'


class TestDebezium:
    def test_message_and_truncate_rules(self):
        message = debezium.decode(envelope("m", message={"prefix": "audit", "content": "aGk="}), None)
        assert (message.operation, message.key, message.extra["message"]["prefix"]) == (
            "message",
            {"prefix": "audit"},
            "audit",
        )
        truncate = debezium.decode(envelope("t"), None)
        assert (truncate.operation, truncate.key) == ("truncated", {"table": "customers"})

    def test_a_tombstone_is_nothing(self):
        assert debezium.decode(None, KEY) is None
        assert debezium.decode(b"   ", KEY) is None

    def test_traceparent_from_the_header_or_a_column(self):
        column = debezium.decode(envelope("c", after={"id": 1, "traceparent": "00-a-b-01"}), KEY)
        assert column.traceparent == "00-a-b-01"
        header = debezium.decode(
            envelope("c", after={"id": 1, "traceparent": "00-a-b-01"}), KEY, traceparent="00-c-d-01"
        )
        assert header.traceparent == "00-c-d-01"

    @pytest.mark.parametrize(
        ("value", "key", "reason"),
        [
            (b"{nope", KEY, "not valid JSON"),
            (b"[1]", KEY, "not a JSON object"),
            (envelope("z"), KEY, "unknown op"),
            (json.dumps({"op": "c"}).encode(), KEY, "no source"),
            (envelope("c", after={"id": 1}), b'"scalar"', "not a JSON object"),
            (envelope("c", after=[1]), KEY, "before/after"),
        ],
    )
    def test_undecodable(self, value, key, reason):
        with pytest.raises(UndecodableChangeError, match=reason):
            debezium.decode(value, key)


class TestDynamoDB:
    def record(self, name: str = "MODIFY", **stream: object) -> dict:
        return {
            "eventName": name,
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/orders/stream/2026",
            "dynamodb": {"Keys": {"order_id": {"S": "o-1"}}, "SequenceNumber": "100", **stream},
        }

    def test_images_are_deserialized_into_plain_values(self):
        change = dynamodb.decode(
            self.record(
                OldImage={"order_id": {"S": "o-1"}, "n": {"N": "1"}, "tags": {"SS": ["b", "a"]}},
                NewImage={"order_id": {"S": "o-1"}, "n": {"N": "2.5"}, "tags": {"SS": ["b", "a"]}},
                ApproximateCreationDateTime=1_700_000_000,
            ),
            connector="dynamodb",
            traceparent_attribute="traceparent",
        )
        assert (change.table, change.operation, change.key) == ("orders", "updated", {"order_id": "o-1"})
        assert change.after == {"order_id": "o-1", "n": 2.5, "tags": ["a", "b"]}
        assert change.changed_columns == ["n"]
        assert change.source_time_ms == 1_700_000_000_000

    def test_every_dynamodb_type_becomes_a_json_value(self):
        image = {
            "order_id": {"S": "o-1"},
            "paid": {"BOOL": True},
            "note": {"NULL": True},
            "count": {"N": "-40"},
            "tiny": {"N": "1E-130"},
            "sizes": {"NS": ["10", "2", "2.5"]},
            "lines": {"L": [{"M": {"sku": {"S": "a"}, "qty": {"N": "2"}}}, {"NULL": True}]},
        }
        change = dynamodb.decode(
            self.record("INSERT", NewImage=image), connector="dynamodb", traceparent_attribute="traceparent"
        )
        assert change.after == {
            "order_id": "o-1",
            "paid": True,
            "note": None,
            "count": -40,
            "tiny": 1e-130,  # a float holds it exactly
            "sizes": [2.5, 10, 2],  # a set has no order: sorted by type, then text, so it is stable
            "lines": [{"sku": "a", "qty": 2}, None],
        }

    @pytest.mark.parametrize(
        ("record", "reason"),
        [
            ({"eventName": "WHAT"}, "unknown DynamoDB Streams event"),
            ({"eventName": "INSERT", "dynamodb": {"Keys": {}}}, "no key"),
            ({"eventName": "INSERT", "dynamodb": {"Keys": {"k": {"S": "v"}}}}, "stream ARN"),
            ({"eventName": "INSERT", "dynamodb": {"Keys": {"k": {"BAD": "v"}}}}, "does not deserialize"),
            # what DynamoDB never sends: past its 38 digits, outside its exponents, not a number, bad base64
            ({"eventName": "INSERT", "dynamodb": {"Keys": {"k": {"N": "1" * 39}}}}, "not a DynamoDB number"),
            ({"eventName": "INSERT", "dynamodb": {"Keys": {"k": {"N": "1E+200"}}}}, "not a DynamoDB number"),
            ({"eventName": "INSERT", "dynamodb": {"Keys": {"k": {"N": "abc"}}}}, "not a DynamoDB number"),
            ({"eventName": "INSERT", "dynamodb": {"Keys": {"k": {"N": "Infinity"}}}}, "not a DynamoDB number"),
            ({"eventName": "INSERT", "dynamodb": {"Keys": {"k": {"N": "NaN"}}}}, "not a DynamoDB number"),
            ({"eventName": "INSERT", "dynamodb": {"Keys": {"k": {"N": "sNaN"}}}}, "not a DynamoDB number"),
            ({"eventName": "INSERT", "dynamodb": {"Keys": {"k": {"N": "1E+126"}}}}, "not a DynamoDB number"),
            ({"eventName": "INSERT", "dynamodb": {"Keys": {"k": {"N": "1E-131"}}}}, "not a DynamoDB number"),
            ({"eventName": "INSERT", "dynamodb": {"Keys": {"k": {"B": "not base64!"}}}}, "does not deserialize"),
            ({"eventName": "INSERT", "dynamodb": {"Keys": {"k": {"S": "v", "N": "1"}}}}, "one-key"),
            ({"eventName": "INSERT", "dynamodb": {"Keys": {"k": {"SS": [1]}}}}, "does not deserialize"),
        ],
    )
    def test_undecodable(self, record, reason):
        with pytest.raises(UndecodableChangeError, match=reason):
            dynamodb.decode(record, connector="d", traceparent_attribute="traceparent")


def test_the_cloudevent_is_stable_across_redeliveries_and_keyed_by_the_row():
    change = debezium.decode(envelope("u", before={"id": 1, "a": 1}, after={"id": 1, "a": 2}), KEY)
    first, again = to_cloud_event(change, "cdc"), to_cloud_event(change, "cdc")
    assert first.get_id() == again.get_id()
    assert first.get_type() == "cdc.customers.updated"
    assert first.get_extension("partitionkey") == '{"id":1}'
    assert first.get_time().year == 2023


@pytest.mark.parametrize(
    ("variable", "value"), [("CDC_TOPIC", "bad topic"), ("CDC_EVENT_TYPE_PREFIX", "a b"), ("PUBLISH_TIMEOUT_MS", "0")]
)
def test_bad_settings_fail_with_one_line(variable, value):
    with pytest.raises(ConfigError) as raised:
        CdcSettings.from_env({variable: value})
    assert str(raised.value).startswith(f"{variable}=")


class TestReviewedEdges:
    def test_lambda_events_carry_binary_as_base64_and_it_stays_json(self):
        from lambda_event_bus.bus.contract import to_kafka_record

        record = {
            "eventName": "INSERT",
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/files/stream/2026",
            "dynamodb": {
                "Keys": {"id": {"B": "AQI="}},
                "NewImage": {
                    "id": {"B": "AQI="},
                    "chunks": {"BS": ["Ag==", "AQ=="]},
                    "meta": {"M": {"thumb": {"B": "/w=="}}},
                    "price": {"N": "12345678901234567.89"},
                    "ratio": {"N": "12.5"},
                },
                "SequenceNumber": "7",
            },
        }
        change = dynamodb.decode(record, connector="d", traceparent_attribute="traceparent")
        assert change.key == {"id": "AQI="}
        assert change.after["chunks"] == ["AQ==", "Ag=="]
        assert change.after["meta"] == {"thumb": "/w=="}
        assert change.after["price"] == "12345678901234567.89", "38-digit numbers keep every digit"
        assert change.after["ratio"] == 12.5
        value = to_kafka_record(to_cloud_event(change, "cdc"), "t", change.key_text).value
        assert json.loads(value)["after"]["id"] == "AQI="

    @pytest.mark.parametrize("key", [None, b"default", b"null"], ids=["null key", "kinesis default", "json null"])
    def test_a_change_of_a_table_without_a_primary_key_is_published_keyed_by_its_table(self, key):
        """Debezium documents keyless tables: a null record key (Kafka), `default` as the partition key
        (Debezium Server's Kinesis sink). They are changes like any other, ordered per table."""
        change = debezium.decode(envelope("c", after={"id": 1}), key)
        assert change.key == {}
        assert change.key_text == '{"table":"customers"}'
        event = to_cloud_event(change, "cdc")
        assert event.get_subject() == event.get_extension("partitionkey") == '{"table":"customers"}'
        assert event.get_data()["after"] == {"id": 1}
        assert event.get_data()["key"] == {}
        truncate = debezium.decode(envelope("t"), b"default")
        assert truncate.key == {"table": "customers"}

    def test_two_changes_in_one_millisecond_without_lsn_get_different_ids(self):
        def sqlserver(change_lsn: str) -> bytes:
            source = {
                "name": "mssql",
                "db": "shop",
                "table": "orders",
                "ts_ms": 1_700_000_000_000,
                "change_lsn": change_lsn,
            }
            return json.dumps({"op": "u", "source": source, "before": {"id": 1}, "after": {"id": 1}}).encode()

        first = to_cloud_event(debezium.decode(sqlserver("00000025:00000d98:0002"), KEY), "cdc")
        second = to_cloud_event(debezium.decode(sqlserver("00000025:00000d98:0003"), KEY), "cdc")
        assert first.get_id() != second.get_id()

    def test_a_delete_does_not_continue_the_previous_writers_trace(self):
        change = debezium.decode(envelope("d", before={"id": 1, "traceparent": "00-a-b-01"}), KEY)
        assert change.traceparent is None

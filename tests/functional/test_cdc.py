"""CdcFunction in-process: DynamoDB Streams records read from a real (moto) stream and Debezium change events
(Postgres and MySQL connectors, over Kinesis and over Kafka) become the right CloudEvents on the real broker,
in order per key, with the CDC metrics in the real Pushgateway; bad records are dead-lettered with a reason."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from confluent_kafka import Producer
from moto import mock_aws
from samhost.kafka_events import lambda_event, lambda_record
from samhost.processes import free_port
from support import pushgateway as gateway
from support.context import LambdaContext
from support.functions import load_function
from support.kafka import header, read_topic
from support.moto import use_moto_credentials

pytestmark = pytest.mark.servers

REGION = "us-east-1"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    # botocore 1.44 routes DynamoDB Streams through account endpoints moto does not serve (LOCAL_STACK.md)
    use_moto_credentials(monkeypatch, REGION, AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled")
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        yield {"sqs": sqs, "dlq": sqs.create_queue(QueueName="cdc-dlq")["QueueUrl"]}


def load_cdc(
    monkeypatch: pytest.MonkeyPatch, bootstrap: str, aws: dict[str, Any], **extra: str
) -> tuple[ModuleType, str]:
    topic = f"cdc-{uuid.uuid4().hex[:8]}"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_SERVICE_NAME": f"cdc-{uuid.uuid4().hex[:6]}",
        "AWS_LAMBDA_FUNCTION_NAME": "cdc",
        "CDC_TOPIC": topic,
        "DLQ_URL": aws["dlq"],
        **extra,
    }
    return load_function("cdc", "cdc", env, monkeypatch), topic


def letters(aws: dict[str, Any]) -> list[dict[str, Any]]:
    messages = aws["sqs"].receive_message(QueueUrl=aws["dlq"], MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def events_on(bootstrap: str, topic: str, count: int) -> list[tuple[bytes, dict[str, Any], Any]]:
    """(key, ce_* headers, data) of the topic's records, in offset order."""
    records = read_topic(bootstrap, topic, count)
    return [
        (
            record.key(),
            {name: value.decode() for name, value in record.headers() or [] if name.startswith("ce_")},
            json.loads(record.value()),
        )
        for record in records
    ]


def per_key(published: list[tuple[bytes, dict[str, Any], Any]]) -> dict[bytes, list[str]]:
    order: dict[bytes, list[str]] = {}
    for key, headers, _ in published:
        order.setdefault(key, []).append(headers["ce_type"])
    return order


def dynamodb_stream_event(table: str, writes) -> dict[str, Any]:
    """Write to a real (moto) table with a stream, then read the stream and shape it as Lambda does."""
    client = boto3.client("dynamodb", region_name=REGION)
    description = client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]
    writes(client)
    streams = boto3.client("dynamodbstreams", region_name=REGION)
    stream_arn = description["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    for record in records:
        record["eventSourceARN"] = stream_arn
        created = record["dynamodb"].get("ApproximateCreationDateTime")
        if created is not None and not isinstance(created, (int, float)):
            record["dynamodb"]["ApproximateCreationDateTime"] = created.timestamp()
    return {"Records": records}


class TestDynamoDBStreams:
    def test_table_writes_become_ordered_cloudevents_with_metrics_in_the_pushgateway(
        self, kafka_bootstrap, pushgateway, aws, monkeypatch
    ):
        def writes(client) -> None:
            client.put_item(
                TableName="orders", Item={"order_id": {"S": "o-1"}, "status": {"S": "new"}, "total": {"N": "12.5"}}
            )
            client.put_item(TableName="orders", Item={"order_id": {"S": "o-2"}, "status": {"S": "new"}})
            client.update_item(
                TableName="orders",
                Key={"order_id": {"S": "o-1"}},
                UpdateExpression="SET #s = :s, traceparent = :t",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {"S": "paid"}, ":t": {"S": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}},
            )
            client.delete_item(TableName="orders", Key={"order_id": {"S": "o-2"}})

        event = dynamodb_stream_event("orders", writes)
        cdc, topic = load_cdc(monkeypatch, kafka_bootstrap, aws, PUSHGATEWAY_URL=pushgateway)
        assert cdc.handler(event, LambdaContext(function_name="cdc")) == {"batchItemFailures": []}

        published = events_on(kafka_bootstrap, topic, 4)
        assert per_key(published) == {
            b'{"order_id":"o-1"}': ["cdc.orders.created", "cdc.orders.updated"],
            b'{"order_id":"o-2"}': ["cdc.orders.created", "cdc.orders.deleted"],
        }, "one row's changes share a key, so a partition, in order"
        _, update_headers, update = next(item for item in published if item[1]["ce_type"] == "cdc.orders.updated")
        assert update["before"]["status"] == "new"
        assert update["after"]["status"] == "paid"
        assert "status" in update["changed"]
        assert update["key"] == {"order_id": "o-1"}
        first = next(item for item in published if item[0] == b'{"order_id":"o-1"}')
        assert first[2]["after"]["total"] == 12.5
        assert update_headers["ce_source"] == "/cdc/dynamodb/orders"
        assert "ce_time" in update_headers
        updated_record = next(
            record
            for record in read_topic(kafka_bootstrap, topic, 4)
            if header(record, "ce_type") == b"cdc.orders.updated"
        )
        assert header(updated_record, "traceparent").decode().split("-")[1] == TRACE_ID, "the change's trace goes on"

        samples = [
            s for s in gateway.samples(pushgateway) if s.labels.get("job") == cdc.telemetry.settings.service_name
        ]
        created = [s for s in samples if s.name == "cdc_events_total" and s.labels.get("operation") == "created"]
        assert [(s.labels["connector"], s.labels["table"], s.value) for s in created] == [("dynamodb", "orders", 2.0)]
        lag = [s for s in samples if s.name == "cdc_lag_seconds_count"]
        assert lag[0].value == 4
        assert sum(s.value for s in samples if s.name == "events_produced_total") == 4


def debezium(
    op: str, table: str, *, before=None, after=None, connector: str = "pg", schema: bool = False, **source: Any
):
    envelope = {
        "op": op,
        "before": before,
        "after": after,
        "ts_ms": 1_795_000_000_500,
        "source": {"name": connector, "db": "shop", "table": table, "ts_ms": 1_795_000_000_000, **source},
    }
    return {"schema": {"type": "struct"}, "payload": envelope} if schema else envelope


def kinesis_record(key: dict[str, Any] | None, value: Any, sequence: int) -> dict[str, Any]:
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": json.dumps(key) if key is not None else "",
            "sequenceNumber": f"4959{sequence:040d}",
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": 1_795_000_001.0,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000000:4959{sequence:040d}",
        "eventName": "aws:kinesis:record",
        "awsRegion": REGION,
        "eventSourceARN": f"arn:aws:kinesis:{REGION}:123456789012:stream/cdc",
    }


class TestDebeziumOverKinesis:
    def test_postgres_and_mysql_change_events_with_and_without_schema(self, kafka_bootstrap, aws, monkeypatch):
        records = [
            kinesis_record(
                {"id": 1}, debezium("r", "customers", after={"id": 1, "name": "Ada"}, lsn=100, schema=True), 1
            ),
            kinesis_record(
                {"id": 1},
                debezium("u", "customers", before={"id": 1, "name": "Ada"}, after={"id": 1, "name": "Ada L."}, lsn=101),
                2,
            ),
            kinesis_record(
                {"id": 7},
                debezium("c", "items", after={"id": 7, "sku": "x"}, connector="mysql", file="binlog.000003", pos=154),
                3,
            ),
            kinesis_record(
                {"id": 7},
                debezium(
                    "d",
                    "items",
                    before={"id": 7, "sku": "x"},
                    connector="mysql",
                    file="binlog.000003",
                    pos=200,
                    schema=True,
                ),
                4,
            ),
            kinesis_record({"id": 7}, b"", 5),  # the tombstone after a delete: nothing to publish
            kinesis_record(None, debezium("t", "items", connector="mysql", file="binlog.000003", pos=300), 6),
        ]
        cdc, topic = load_cdc(monkeypatch, kafka_bootstrap, aws)
        assert cdc.handler({"Records": records}, LambdaContext(function_name="cdc")) == {"batchItemFailures": []}
        published = events_on(kafka_bootstrap, topic, 5)
        assert per_key(published) == {
            b'{"id":1}': ["cdc.customers.snapshot", "cdc.customers.updated"],
            b'{"id":7}': ["cdc.items.created", "cdc.items.deleted"],
            b'{"table":"items"}': ["cdc.items.truncated"],
        }
        by_type = {headers["ce_type"]: (headers, data) for _, headers, data in published}
        assert by_type["cdc.customers.updated"][1]["changed"] == ["name"]
        assert by_type["cdc.customers.updated"][1]["position"] == "lsn:101"
        assert by_type["cdc.items.created"][1]["position"] == "binlog:binlog.000003:154:0"
        assert by_type["cdc.customers.snapshot"][0]["ce_source"] == "/cdc/pg/shop/customers"
        assert by_type["cdc.customers.snapshot"][0]["ce_time"].startswith("2026-11-18")
        assert letters(aws) == []
        labels = {"connector": "mysql", "table": "items", "operation": "deleted"}
        assert cdc.telemetry.metrics.value("cdc_events_total", **labels) == 1

    def test_bad_records_are_dead_lettered_and_the_rest_is_published(self, kafka_bootstrap, aws, monkeypatch):
        records = [
            kinesis_record({"id": 1}, debezium("x", "customers", after={"id": 1}), 1),  # unknown op
            kinesis_record({"id": 2}, b"{broken", 2),
            kinesis_record({"id": 4}, debezium("c", "customers", after={"id": 4}), 4),
        ]
        cdc, topic = load_cdc(monkeypatch, kafka_bootstrap, aws)
        assert cdc.handler({"Records": records}, LambdaContext(function_name="cdc")) == {"batchItemFailures": []}
        reasons = sorted(letter["reason"] for letter in letters(aws))
        assert len(reasons) == 2
        assert any("unknown op 'x'" in reason for reason in reasons)
        assert any("not valid JSON" in reason for reason in reasons)
        assert [key for key, _, _ in events_on(kafka_bootstrap, topic, 1)] == [b'{"id":4}']

    def test_a_broker_that_is_down_names_exactly_the_unpublished_records(self, aws, monkeypatch):
        records = [
            kinesis_record({"id": 1}, debezium("c", "customers", after={"id": 1}), 1),
            kinesis_record({"id": 2}, b"{broken", 2),
            kinesis_record({"id": 3}, debezium("c", "customers", after={"id": 3}), 3),
        ]
        cdc, _ = load_cdc(monkeypatch, f"127.0.0.1:{free_port()}", aws, PUBLISH_TIMEOUT_MS="500")
        response = cdc.handler({"Records": records}, LambdaContext(function_name="cdc"))
        assert response == {
            "batchItemFailures": [
                {"itemIdentifier": records[0]["kinesis"]["sequenceNumber"]},
                {"itemIdentifier": records[2]["kinesis"]["sequenceNumber"]},
            ]
        }
        assert len(letters(aws)) == 1, "the broken record is dead-lettered, not retried"


class TestDebeziumOverKafka:
    def test_records_from_a_debezium_topic_with_keys_and_trace_headers(self, kafka_bootstrap, aws, monkeypatch):
        source_topic = f"dbserver1.shop.customers-{uuid.uuid4().hex[:6]}"
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
        key = {"schema": {"type": "struct"}, "payload": {"id": 42}}
        producer.produce(
            source_topic,
            key=json.dumps(key).encode(),
            value=json.dumps(
                debezium("c", "customers", after={"id": 42, "name": "Grace"}, schema=True, lsn=5)
            ).encode(),
            headers=[("traceparent", traceparent.encode())],
        )
        producer.produce(source_topic, key=json.dumps(key).encode(), value=None)  # a tombstone
        producer.flush(10)
        batch = lambda_event([lambda_record(m) for m in read_topic(kafka_bootstrap, source_topic, 2)])
        cdc, topic = load_cdc(monkeypatch, kafka_bootstrap, aws)
        assert cdc.handler(batch, LambdaContext(function_name="cdc")) == {"batchItemFailures": []}
        (record,) = read_topic(kafka_bootstrap, topic, 1)
        assert record.key() == b'{"id":42}'
        assert header(record, "ce_type") == b"cdc.customers.created"
        assert header(record, "traceparent").decode().split("-")[1] == TRACE_ID


class TestKeylessTables:
    """Debezium documents tables without a primary key: their change events have a null record key (Kafka
    Connect), and Debezium Server's Kinesis sink writes the partition key `default` for them. They are changes
    like any other: published, keyed by their table, in order on one partition."""

    def test_over_kinesis(self, kafka_bootstrap, aws, monkeypatch):
        records = [
            kinesis_record(None, debezium("c", "audit log", after={"at": 1}, lsn=10), 1),
            kinesis_record(None, debezium("c", "audit log", after={"at": 2}, lsn=11), 2),
        ]
        records[0]["kinesis"]["partitionKey"] = "default"  # Debezium Server's null.key
        cdc, topic = load_cdc(monkeypatch, kafka_bootstrap, aws)
        assert cdc.handler({"Records": records}, LambdaContext(function_name="cdc")) == {"batchItemFailures": []}
        published = events_on(kafka_bootstrap, topic, 2)
        assert letters(aws) == []
        assert [key for key, _, _ in published] == [b'{"table":"audit log"}'] * 2
        assert [data["after"]["at"] for _, _, data in published] == [1, 2], "in source order"
        assert [data["key"] for _, _, data in published] == [{}, {}]
        headers = published[0][1]
        assert headers["ce_source"] == "/cdc/pg/shop/audit%20log", "a URI-reference: the table name encoded"
        assert headers["ce_subject"] == headers["ce_partitionkey"] == '{"table":"audit log"}'

    def test_over_kafka(self, kafka_bootstrap, aws, monkeypatch):
        source_topic = f"dbserver1.shop.events-{uuid.uuid4().hex[:6]}"
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(source_topic, key=None, value=json.dumps(debezium("u", "events", after={"n": 1}, lsn=3)))
        producer.flush(10)
        batch = lambda_event([lambda_record(m) for m in read_topic(kafka_bootstrap, source_topic, 1)])
        cdc, topic = load_cdc(monkeypatch, kafka_bootstrap, aws)
        assert cdc.handler(batch, LambdaContext(function_name="cdc")) == {"batchItemFailures": []}
        ((key, headers, data),) = events_on(kafka_bootstrap, topic, 1)
        assert (key, headers["ce_type"], data["key"]) == (b'{"table":"events"}', "cdc.events.updated", {})
        assert letters(aws) == []


class TestRefusals:
    def test_a_change_kafka_refuses_is_dead_lettered_not_retried(self, kafka_bootstrap, aws, monkeypatch):
        big_row = {"id": 9, "blob": "x" * 1_100_000}  # over the producer's 1 MB message.max.bytes
        records = [
            kinesis_record({"id": 9}, debezium("c", "files", after=big_row), 1),
            kinesis_record({"id": 10}, debezium("c", "files", after={"id": 10}), 2),
        ]
        cdc, topic = load_cdc(monkeypatch, kafka_bootstrap, aws)
        assert cdc.handler({"Records": records}, LambdaContext(function_name="cdc")) == {"batchItemFailures": []}
        (letter,) = letters(aws)
        assert "refused by Kafka" in letter["reason"]
        assert [key for key, _, _ in events_on(kafka_bootstrap, topic, 1)] == [b'{"id":10}']

    def test_a_record_of_an_unknown_source_is_dead_lettered(self, kafka_bootstrap, aws, monkeypatch):
        cdc, _ = load_cdc(monkeypatch, kafka_bootstrap, aws)
        event = {"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}
        assert cdc.handler(event, LambdaContext(function_name="cdc")) == {"batchItemFailures": []}
        (letter,) = letters(aws)
        assert "unknown event source 'aws:sqs'" in letter["reason"]

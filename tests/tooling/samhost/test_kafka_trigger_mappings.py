"""The Kafka trigger's mappings come from template.yaml exactly as AWS would create the self-managed ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from samhost.cfn import TemplateError
from samhost.kafka_trigger import KafkaMapping, kafka_mappings, samconfig_parameters

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "template.yaml"
DLQ_ARN = "arn:aws:sqs:us-east-1:000000000000:event-bus-local-DeadLetterQueue-abc"
PHYSICAL = {
    "KafkaConsumerFunction": "event-bus-local-KafkaConsumerFunction-XYZ",
    "CdcFunction": "event-bus-local-CdcFunction-XYZ",
    "DeadLetterQueue.Arn": DLQ_ARN,
}


def local_parameters(**extra: str) -> dict[str, str]:
    """What the stack passes: samconfig's local overrides plus the live addresses."""
    return {
        **samconfig_parameters(ROOT / "samconfig.toml", "local"),
        "KafkaBootstrapServers": "127.0.0.1:39092",
        **extra,
    }


def test_samconfig_local_overrides_are_read():
    parameters = samconfig_parameters(ROOT / "samconfig.toml", "local")
    assert parameters["Stage"] == "local"
    assert parameters["OtlpEndpoint"] == "http://127.0.0.1:4318"


def test_two_topics_make_exactly_two_mappings_with_their_own_groups():
    mappings = kafka_mappings(TEMPLATE, local_parameters(KafkaTopics="orders,payments"), PHYSICAL)

    assert [(m.logical_id, m.topic, m.group_id) for m in mappings] == [
        ("KafkaConsumerSelfManagedMapping", "orders", "event-bus-consumer-orders"),
        ("KafkaConsumerSelfManagedMapping2", "payments", "event-bus-consumer-payments"),
    ]
    first = mappings[0]
    assert first == KafkaMapping(
        logical_id="KafkaConsumerSelfManagedMapping",
        # the mapping invokes the alias SAM publishes (Ref KafkaConsumerFunction.Alias), as on AWS
        function_name="event-bus-local-KafkaConsumerFunction-XYZ:live",
        function_arn="arn:aws:lambda:us-east-1:000000000000:function:event-bus-local-KafkaConsumerFunction-XYZ:live",
        function_timeout_s=60.0,
        topic="orders",
        group_id="event-bus-consumer-orders",
        bootstrap_servers="127.0.0.1:39092",
        batch_size=100,
        batching_window_s=1.0,
        starting_position="TRIM_HORIZON",
        max_retry_attempts=3,
        max_record_age_s=3600,
        bisect_on_error=True,
        on_failure_destination=DLQ_ARN,
        function_response_types=("ReportBatchItemFailures",),
    )
    assert first.auto_offset_reset == "earliest"
    assert first.reports_batch_item_failures


def test_the_template_default_topics_make_four_mappings():
    mappings = kafka_mappings(TEMPLATE, {"Stage": "local"}, PHYSICAL)
    assert [m.topic for m in mappings] == ["orders", "payments", "customers", "events"]


def test_parameters_flow_into_the_mapping_settings():
    (mapping,) = kafka_mappings(
        TEMPLATE,
        local_parameters(
            KafkaTopics="orders",
            KafkaConsumerGroupId="bus",
            KafkaBootstrapServers="127.0.0.1:1, 127.0.0.1:2",
            KafkaBatchSize="7",
            KafkaBatchWindowSeconds="0",
            KafkaMaxRetryAttempts="5",
            KafkaMaxRecordAgeSeconds="120",
        ),
        PHYSICAL,
    )
    assert (mapping.group_id, mapping.batch_size, mapping.batching_window_s) == ("bus-orders", 7, 0.0)
    assert (mapping.max_retry_attempts, mapping.retry_limit, mapping.max_record_age_s) == (5, 5, 120)
    assert mapping.bootstrap_servers == "127.0.0.1:1,127.0.0.1:2"


def test_cdc_topics_give_the_cdc_function_its_own_mappings():
    mappings = kafka_mappings(
        TEMPLATE,
        local_parameters(
            KafkaTopics="orders",
            CdcKafkaTopics="dbserver1.inventory.customers,dbserver1.inventory.orders",
            CdcMaxRetryAttempts="1",
            CdcMaxRecordAgeSeconds="600",
            KafkaBatchSize="5",
        ),
        PHYSICAL,
    )
    cdc = [m for m in mappings if m.logical_id.startswith("Cdc")]
    assert [(m.logical_id, m.topic, m.group_id) for m in cdc] == [
        (
            "CdcSelfManagedMapping1",
            "dbserver1.inventory.customers",
            "event-bus-consumer-cdc-dbserver1.inventory.customers",
        ),
        ("CdcSelfManagedMapping2", "dbserver1.inventory.orders", "event-bus-consumer-cdc-dbserver1.inventory.orders"),
    ]
    assert {m.function_name for m in cdc} == {"event-bus-local-CdcFunction-XYZ:live"}
    assert {(m.batch_size, m.max_retry_attempts, m.max_record_age_s, m.on_failure_destination) for m in cdc} == {
        (100, 1, 600, DLQ_ARN)
    }
    assert mappings[0].batch_size == 5


def test_only_the_physical_ids_the_mappings_use_are_asked_for():
    asked: set[str] = set()

    def lookup(key: str) -> str:
        asked.add(key)
        return PHYSICAL[key]

    kafka_mappings(TEMPLATE, local_parameters(KafkaTopics="orders", MskClusterArn="arn:aws:kafka:x"), lookup)
    assert asked == {"KafkaConsumerFunction", "DeadLetterQueue.Arn"}, "no MSK mapping, no secrets, no subnets"


def test_the_queue_arn_may_be_given_under_its_logical_id():
    physical = {"KafkaConsumerFunction": "fn", "DeadLetterQueue": DLQ_ARN}
    (mapping,) = kafka_mappings(TEMPLATE, local_parameters(KafkaTopics="orders"), physical)
    assert mapping.on_failure_destination == DLQ_ARN


def test_parameters_the_template_refuses_are_refused_here_too():
    with pytest.raises(TemplateError, match="KafkaTriggerIsMisconfigured"):
        kafka_mappings(TEMPLATE, local_parameters(KafkaTopics="a,b,c,d,e,f,g"), PHYSICAL)
    with pytest.raises(TemplateError, match="Nope"):
        kafka_mappings(TEMPLATE, local_parameters(Nope="1"), PHYSICAL)

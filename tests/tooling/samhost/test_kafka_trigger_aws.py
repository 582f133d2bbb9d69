"""The Kafka trigger's AWS side against moto: the SQS on-failure destination by ARN, and a deployed stack's
physical ids (the LocalStack invoke path is tested end to end on the local stack)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from moto import mock_aws
from samhost.cfn import MissingPhysicalIdError
from samhost.kafka_trigger import DeadLetter, Record, ResponseContext, SqsDestination, StackResources, destination_for
from support.moto import use_moto_credentials

REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    use_moto_credentials(monkeypatch, REGION)
    with mock_aws():
        yield


def letter(*sizes: int) -> DeadLetter:
    records = tuple(
        Record.from_message(
            Message(topic="orders", partition=0, offset=n, value=b"x" * size, timestamp=(TIMESTAMP_CREATE_TIME, 1))
        )
        for n, size in enumerate(sizes)
    )
    return DeadLetter(records, "RetryAttemptsExhausted", "arn:fn", "127.0.0.1:9092", 4, ResponseContext(200))


def test_dead_letters_reach_the_queue_named_by_its_arn(aws):
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="bus-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    destination = destination_for(arn)
    assert isinstance(destination, SqsDestination)

    destination.send(letter(10, 10))
    destination.send(letter(200_000, 200_000))  # too large together: one message each

    bodies = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]]
    assert [body["KafkaBatchInfo"]["batchSize"] for body in bodies] == [2, 1, 1]
    assert {body["requestContext"]["condition"] for body in bodies} == {"RetryAttemptsExhausted"}


def test_a_missing_queue_fails_the_send(aws):
    destination = SqsDestination(f"arn:aws:sqs:{REGION}:123456789012:nowhere")
    with pytest.raises(Exception, match=r"NonExistentQueue|does not exist"):
        destination.send(letter(1))


def test_only_sqs_destinations_are_supported():
    assert destination_for(None) is None
    with pytest.raises(ValueError, match="SQS queues only"):
        destination_for("arn:aws:sns:us-east-1:000000000000:topic")


def test_physical_ids_and_queue_arns_come_from_the_deployed_stack(aws):
    template = {"Resources": {"DeadLetterQueue": {"Type": "AWS::SQS::Queue"}}}
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.create_stack(StackName="bus", TemplateBody=json.dumps(template))
    resources = StackResources("bus")

    url = resources("DeadLetterQueue")
    assert url.startswith("https://")
    arn = resources("DeadLetterQueue.Arn")
    assert arn.startswith(f"arn:aws:sqs:{REGION}:")
    assert arn.endswith(url.rsplit("/", 1)[1])
    with pytest.raises(MissingPhysicalIdError, match="KafkaConsumerFunction"):
        resources("KafkaConsumerFunction")

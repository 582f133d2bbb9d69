"""LocalStack on the host with the project's plugins: DynamoDB and its streams from moto (directly, through
CloudFormation and through LocalStack's own Lambda stream poller), Kinesis bound to loopback, and a clean stop.

One LocalStack serves the module; the last test stops it (keep it last).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from samhost.localstack import LocalStack, ensure_localstack_venv, start_localstack
from samhost.processes import running

pytestmark = pytest.mark.localstack

REPO = Path(__file__).resolve().parents[2]
LOCALSTACK_VENV = Path(os.environ.get("LOCALSTACK_VENV", REPO / ".venv-localstack"))
REGION = "us-east-1"
# measured ~1.1-1.7 s once the venv and LocalStack's cache exist; the budget leaves room for a slow machine
START_BUDGET_SECONDS = 15.0
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}

Aws = Callable[[str], Any]


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, float]]:
    """LocalStack (venv ensured first, not timed) and how long its start took."""
    python = ensure_localstack_venv(LOCALSTACK_VENV, sys.executable)
    root = tmp_path_factory.mktemp("localstack")
    began = time.monotonic()
    server = start_localstack(root, root / "filesystem", python)
    seconds = time.monotonic() - began
    yield server, seconds
    server.stop()


@pytest.fixture(scope="module")
def localstack(started: tuple[LocalStack, float]) -> LocalStack:
    return started[0]


@pytest.fixture(scope="module")
def aws(localstack: LocalStack) -> Aws:
    config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"})

    def client(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=localstack.url,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=config,
        )

    return client


def create_streamed_table(dynamodb: Any) -> tuple[str, str]:
    """A new table with a NEW_AND_OLD_IMAGES stream: (name, stream ARN)."""
    name = f"items-{uuid.uuid4().hex[:8]}"
    table = dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]
    return name, table["LatestStreamArn"]


def stream_records(streams: Any, stream_arn: str, iterator_type: str = "TRIM_HORIZON") -> list[dict[str, Any]]:
    (shard,) = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType=iterator_type
    )["ShardIterator"]
    return list(streams.get_records(ShardIterator=iterator)["Records"])


def test_starts_within_budget(started: tuple[LocalStack, float]) -> None:
    _, seconds = started
    assert seconds < START_BUDGET_SECONDS, f"LocalStack took {seconds:.1f} s to become healthy"


def test_table_stream_records_every_change_with_its_images(aws: Aws) -> None:
    dynamodb, streams = aws("dynamodb"), aws("dynamodbstreams")
    table, stream_arn = create_streamed_table(dynamodb)
    assert dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"] == stream_arn
    description = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]
    assert (description["StreamStatus"], description["StreamViewType"]) == ("ENABLED", "NEW_AND_OLD_IMAGES")
    assert stream_arn in [stream["StreamArn"] for stream in streams.list_streams(TableName=table)["Streams"]]

    key = {"pk": {"S": "order-1"}}
    dynamodb.put_item(TableName=table, Item={**key, "status": {"S": "new"}})
    dynamodb.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "paid"}},
    )
    dynamodb.delete_item(TableName=table, Key=key)

    records = stream_records(streams, stream_arn)
    assert [record["eventName"] for record in records] == ["INSERT", "MODIFY", "REMOVE"]
    assert {(record["eventSource"], record["awsRegion"]) for record in records} == {("aws:dynamodb", REGION)}
    insert, modify, remove = (record["dynamodb"] for record in records)
    assert all(change["Keys"] == key for change in (insert, modify, remove))
    assert insert["NewImage"] == {**key, "status": {"S": "new"}}
    assert "OldImage" not in insert
    assert modify["OldImage"] == {**key, "status": {"S": "new"}}
    assert modify["NewImage"] == {**key, "status": {"S": "paid"}}
    assert remove["OldImage"] == {**key, "status": {"S": "paid"}}
    assert "NewImage" not in remove
    sequence = [int(change["SequenceNumber"]) for change in (insert, modify, remove)]
    assert sequence == sorted(set(sequence))


def test_stream_has_one_record_per_real_change_as_on_aws(aws: Aws) -> None:
    """moto alone writes two INSERTs for an UpdateItem that creates its item and a MODIFY for a write that
    changes nothing; AWS writes one INSERT and nothing."""
    dynamodb, streams = aws("dynamodb"), aws("dynamodbstreams")
    table, stream_arn = create_streamed_table(dynamodb)
    upsert = {"UpdateExpression": "SET n = :n", "ExpressionAttributeValues": {":n": {"N": "1"}}}
    dynamodb.update_item(TableName=table, Key={"pk": {"S": "upserted"}}, **upsert)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "upserted"}, "n": {"N": "1"}})
    dynamodb.update_item(TableName=table, Key={"pk": {"S": "upserted"}}, **upsert)
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "never-written"}})
    dynamodb.transact_write_items(
        TransactItems=[{"Update": {"TableName": table, "Key": {"pk": {"S": "in-transaction"}}, **upsert}}]
    )

    records = stream_records(streams, stream_arn)
    assert [(record["eventName"], record["dynamodb"]["NewImage"]) for record in records] == [
        ("INSERT", {"pk": {"S": "upserted"}, "n": {"N": "1"}}),
        ("INSERT", {"pk": {"S": "in-transaction"}, "n": {"N": "1"}}),
    ]


def test_latest_iterator_sees_only_later_changes_and_unknown_iterators_expire(aws: Aws) -> None:
    dynamodb, streams = aws("dynamodb"), aws("dynamodbstreams")
    table, stream_arn = create_streamed_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "before"}})
    (shard,) = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="LATEST")[
        "ShardIterator"
    ]
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "after"}})

    page = streams.get_records(ShardIterator=iterator)
    assert [record["dynamodb"]["Keys"]["pk"]["S"] for record in page["Records"]] == ["after"]
    assert streams.get_records(ShardIterator=page["NextShardIterator"])["Records"] == []
    with pytest.raises(streams.exceptions.ExpiredIteratorException):
        streams.get_records(ShardIterator=f"{stream_arn}|1|not-an-iterator")


# LocalStack's own DynamoDB-stream poller (what a Lambda event source mapping runs), driven in LocalStack's venv
POLLER_SCRIPT = """
import json, sys
import boto3
from localstack.services.lambda_.event_source_mapping.event_processor import EventProcessor
from localstack.services.lambda_.event_source_mapping.pollers.dynamodb_poller import DynamoDBPoller

class Recorder(EventProcessor):
    def __init__(self):
        self.batches = []
    def process_events_batch(self, input_events):
        self.batches.append(input_events)
    def generate_event_failure_context(self, abort_condition, **kwargs):
        return {}

url, stream_arn = sys.argv[1:]
client = boto3.client("dynamodbstreams", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
recorder = Recorder()
parameters = {"StartingPosition": "TRIM_HORIZON", "BatchSize": 10, "MaximumRetryAttempts": 0}
poller = DynamoDBPoller(stream_arn, {"DynamoDBStreamParameters": parameters}, client, recorder)
poller.shards = poller.initialize_shards()
poller.poll_events()
print(json.dumps(recorder.batches, default=str))
"""


def test_lambda_stream_poller_reads_the_stream(aws: Aws) -> None:
    dynamodb = aws("dynamodb")
    table, stream_arn = create_streamed_table(dynamodb)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "n": {"N": "1"}})
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "a"}})

    python = LOCALSTACK_VENV / "bin" / "python"
    url = aws("dynamodb").meta.endpoint_url
    result = subprocess.run(
        [str(python), "-c", POLLER_SCRIPT, url, stream_arn], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (batch,) = json.loads(result.stdout)
    assert [event["eventName"] for event in batch] == ["INSERT", "REMOVE"]
    assert {event["eventSourceARN"] for event in batch} == {stream_arn}
    assert batch[0]["dynamodb"]["NewImage"] == {"pk": {"S": "a"}, "n": {"N": "1"}}
    assert isinstance(batch[0]["dynamodb"]["ApproximateCreationDateTime"], float)


TEMPLATE = {
    "Resources": {
        "Table": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "StreamSpecification": {"StreamViewType": "NEW_AND_OLD_IMAGES"},
            },
        },
        "Changes": {"Type": "AWS::Kinesis::Stream", "Properties": {"ShardCount": 1}},
    },
    "Outputs": {
        "TableName": {"Value": {"Ref": "Table"}},
        "TableStreamArn": {"Value": {"Fn::GetAtt": ["Table", "StreamArn"]}},
        "KinesisStreamName": {"Value": {"Ref": "Changes"}},
    },
}


def test_cloudformation_creates_a_streamed_table_and_a_kinesis_stream(aws: Aws) -> None:
    cloudformation = aws("cloudformation")
    stack = f"localstack-{uuid.uuid4().hex[:8]}"
    cloudformation.create_stack(StackName=stack, TemplateBody=json.dumps(TEMPLATE))
    cloudformation.get_waiter("stack_create_complete").wait(
        StackName=stack, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    outputs = {
        output["OutputKey"]: output["OutputValue"]
        for output in cloudformation.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]
    }

    dynamodb = aws("dynamodb")
    table = dynamodb.describe_table(TableName=outputs["TableName"])["Table"]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert table["LatestStreamArn"] == outputs["TableStreamArn"]
    dynamodb.put_item(TableName=outputs["TableName"], Item={"pk": {"S": "from-stack"}})
    (record,) = stream_records(aws("dynamodbstreams"), outputs["TableStreamArn"])
    assert record["dynamodb"]["NewImage"] == {"pk": {"S": "from-stack"}}

    kinesis = aws("kinesis")
    kinesis.put_record(StreamName=outputs["KinesisStreamName"], Data=b"hello", PartitionKey="k")
    (shard,) = kinesis.describe_stream(StreamName=outputs["KinesisStreamName"])["StreamDescription"]["Shards"]
    iterator = kinesis.get_shard_iterator(
        StreamName=outputs["KinesisStreamName"], ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    assert [record["Data"] for record in kinesis.get_records(ShardIterator=iterator)["Records"]] == [b"hello"]


def list_conditions() -> dict[str, Any]:
    """template.yaml's conditions that test a CommaDelimitedList parameter for emptiness, with those parameters."""
    from sam.test_ingest_template import load_intrinsics

    template = load_intrinsics()
    lists = {name for name, spec in template["Parameters"].items() if spec["Type"] == "CommaDelimitedList"}
    tested = {name: _list_tested(condition, lists) for name, condition in template["Conditions"].items()}
    conditions = {name: template["Conditions"][name] for name, parameter in tested.items() if parameter}
    parameters = {parameter: template["Parameters"][parameter] for parameter in tested.values() if parameter}
    return {"Parameters": parameters, "Conditions": conditions}


def _list_tested(condition: Any, lists: set[str]) -> str | None:
    """The list parameter a condition tests directly (a condition built on other conditions is left out)."""
    refs = [name for name in lists if {"Ref": name} in _walk(condition)]
    negated = isinstance(condition, dict) and "Fn::Not" in condition
    return refs[0] if negated and len(refs) == 1 and "Condition" not in str(condition) else None


def _walk(value: Any) -> list[Any]:
    found = [value]
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    for child in children:
        found.extend(_walk(child))
    return found


def test_a_stack_with_the_templates_list_conditions_deletes_cleanly(aws: Aws) -> None:
    """`make deploy ARGS=--redeploy` deletes the stack first: LocalStack re-evaluates every condition on delete,
    with the list parameters as deployed (non-empty here, as the local deploy passes the fulfilment queue)."""
    part = list_conditions()
    assert part["Conditions"], "the template tests its list parameters somewhere"
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        **part,
        "Resources": {f"Queue{name}": {"Type": "AWS::SQS::Queue", "Condition": name} for name in part["Conditions"]},
    }
    cloudformation = aws("cloudformation")
    stack = f"lists-{uuid.uuid4().hex[:8]}"
    values = {"arn:aws:sqs:us-east-1:000000000000:a", "arn:aws:sqs:us-east-1:000000000000:b"}
    cloudformation.create_stack(
        StackName=stack,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": name, "ParameterValue": ",".join(sorted(values))} for name in part["Parameters"]],
    )
    waiter = {"StackName": stack, "WaiterConfig": {"Delay": 1, "MaxAttempts": 60}}
    cloudformation.get_waiter("stack_create_complete").wait(**waiter)
    created = {
        r["LogicalResourceId"] for r in cloudformation.describe_stack_resources(StackName=stack)["StackResources"]
    }
    assert {"QueueHasDeliveryQueues", "QueueHasWebhookSecrets"} <= created, "non-empty lists are not empty"
    cloudformation.delete_stack(StackName=stack)
    cloudformation.get_waiter("stack_delete_complete").wait(**waiter)


def listening_sockets(pids: list[int]) -> list[tuple[int, str, str, int]]:
    """TCP sockets in LISTEN state held by `pids`: (pid, command, address, port)."""
    listeners: dict[str, tuple[str, int]] = {}
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            address, port = fields[1].split(":")
            # the kernel prints each 32-bit word of the address in host (little-endian) order
            packed = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8))
            listeners[fields[9]] = (socket.inet_ntop(family, packed), int(port, 16))
    found = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/comm").read_text().strip()
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:  # gone meanwhile
            continue
        for link in links:
            inode = link.removeprefix("socket:[").removesuffix("]")
            if link.startswith("socket:[") and inode in listeners:
                found.append((pid, command, *listeners[inode]))
    return found


def test_every_process_localstack_started_listens_on_loopback_only(aws: Aws, localstack: LocalStack) -> None:
    aws("kinesis").list_streams()  # Kinesis runs in Node processes LocalStack starts on first use
    sockets = listening_sockets(list(localstack.processes()))
    assert any(command == "node" for _, command, _, _ in sockets), sockets
    assert any(port == int(localstack.url.rsplit(":", 1)[1]) for _, _, _, port in sockets), sockets
    assert [entry for entry in sockets if entry[2] not in LOOPBACK] == []


def test_stop_ends_every_process_localstack_started(aws: Aws, localstack: LocalStack) -> None:
    """Runs last: it stops the module's LocalStack."""
    aws("kinesis").list_streams()
    tree = localstack.processes()
    assert len(tree) > 1, "expected Kinesis's Node process under LocalStack"
    localstack.stop()
    assert localstack.process.process.poll() is not None
    assert running(tree) == []
    assert running(localstack.started) == []

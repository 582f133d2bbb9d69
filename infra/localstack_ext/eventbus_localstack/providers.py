"""LocalStack providers that serve DynamoDB and DynamoDB Streams from LocalStack's bundled moto.

LocalStack's own DynamoDB forwards to DynamoDB Local (Java and downloaded jars), which cannot run here. These
providers hand every operation to moto in-process instead (`dynamodb:moto`, `dynamodbstreams:moto`; selected with
`PROVIDER_OVERRIDE_DYNAMODB=moto` and `PROVIDER_OVERRIDE_DYNAMODBSTREAMS=moto`). Tables, items, streams, the
CloudFormation `AWS::DynamoDB::Table` resource and the Lambda DynamoDB-stream poller then work with moto's semantics.

Streams keep moto's storage but behave like AWS where the difference reaches a consumer: a write that changes
nothing leaves no record, an UpdateItem that creates its item leaves one INSERT (moto writes two, the first with
the key only), records carry the real region and event version, INSERT records have no OldImage and REMOVE
records no NewImage, creation times are UTC, and shard iterators expire after 15 minutes (moto keeps every
iterator it hands out, and a poller asks for a new one each second).
"""

from __future__ import annotations

import datetime
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from localstack.aws.api import RequestContext
from localstack.aws.api.dynamodb import DynamodbApi
from localstack.aws.api.dynamodbstreams import (
    DynamodbstreamsApi,
    ExpiredIteratorException,
    GetRecordsOutput,
    GetShardIteratorOutput,
    PositiveIntegerObject,
    SequenceNumber,
    ShardId,
    ShardIterator,
    ShardIteratorType,
    StreamArn,
)
from localstack.services.moto import MotoFallbackDispatcher, call_moto
from localstack.services.plugins import Service, aws_provider

if TYPE_CHECKING:
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import StreamShard
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend

# AWS lets a shard iterator live 15 minutes after it is returned
SHARD_ITERATOR_LIFETIME_SECONDS = 15 * 60
# the stream record version AWS sends today
STREAM_EVENT_VERSION = "1.1"


class MotoDynamoDBProvider(DynamodbApi):
    """Every DynamoDB operation goes to moto (none is implemented here, so the fallback dispatcher sends it on);
    moto's stream writes are made to follow AWS's rules first."""

    def __init__(self) -> None:
        _record_changes_like_aws()


class MotoDynamoDBStreamsProvider(DynamodbstreamsApi):
    """DynamoDB Streams from moto's tables, with AWS's record shape and shard iterator lifetime."""

    def __init__(self) -> None:
        # iterator -> (account, region, monotonic time handed out), oldest first
        self._issued: OrderedDict[str, tuple[str, str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get_shard_iterator(
        self,
        context: RequestContext,
        stream_arn: StreamArn,
        shard_id: ShardId,
        shard_iterator_type: ShardIteratorType,
        sequence_number: SequenceNumber | None = None,
        **kwargs: object,
    ) -> GetShardIteratorOutput:
        response: GetShardIteratorOutput = call_moto(context)
        if iterator := response.get("ShardIterator"):
            self._issue(context, iterator)
        return response

    def get_records(
        self,
        context: RequestContext,
        shard_iterator: ShardIterator,
        limit: PositiveIntegerObject | None = None,
        **kwargs: object,
    ) -> GetRecordsOutput:
        self._expire_old_iterators()
        if shard_iterator not in _moto_streams_backend(context.account_id, context.region).shard_iterators:
            # moto would fail with a KeyError (HTTP 500); AWS says the iterator expired and pollers start over
            raise ExpiredIteratorException("Iterator expired or unknown: request a new shard iterator")
        response: GetRecordsOutput = call_moto(context)
        if next_iterator := response.get("NextShardIterator"):
            self._issue(context, next_iterator)
        for record in response.get("Records") or []:
            _as_aws_record(record, context.region)
        return response

    def _issue(self, context: RequestContext, iterator: str) -> None:
        with self._lock:
            self._issued[iterator] = (context.account_id, context.region, time.monotonic())

    def _expire_old_iterators(self) -> None:
        deadline = time.monotonic() - SHARD_ITERATOR_LIFETIME_SECONDS
        with self._lock:
            while self._issued:
                iterator, (account_id, region, issued_at) = next(iter(self._issued.items()))
                if issued_at > deadline:
                    return
                del self._issued[iterator]
                _moto_streams_backend(account_id, region).shard_iterators.pop(iterator, None)


def _moto_streams_backend(account_id: str, region: str) -> DynamoDBStreamsBackend:
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    return dynamodbstreams_backends[account_id][region]


def _as_aws_record(record: dict[str, Any], region: str) -> None:
    """Reshape one of moto's stream records the way AWS sends it (in place)."""
    record["awsRegion"] = region  # moto always says us-east-1
    record["eventVersion"] = STREAM_EVENT_VERSION
    change = record.get("dynamodb") or {}
    # moto sends an empty image for the side that does not exist; AWS leaves it out
    if record.get("eventName") == "INSERT":
        change.pop("OldImage", None)
    elif record.get("eventName") == "REMOVE":
        change.pop("NewImage", None)
    created = change.get("ApproximateCreationDateTime")
    if isinstance(created, datetime.datetime) and created.tzinfo is None:
        # moto writes naive UTC times; left naive they would be read as local time
        change["ApproximateCreationDateTime"] = created.replace(tzinfo=datetime.UTC)


# the stream writes of the UpdateItem running on this thread, held back to be written as one
_held_writes = threading.local()
_PATCHED = "_eventbus_records_like_aws"


def _record_changes_like_aws() -> None:
    """Make moto write stream records as AWS does: one per write that changed the item, none otherwise."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamShard

    if getattr(StreamShard.add, _PATCHED, False):
        return
    moto_add = StreamShard.add
    moto_update_item = DynamoDBBackend.update_item

    def add(shard: StreamShard, old: Item | None, new: Item | None) -> None:
        held: list[tuple[StreamShard, Item | None, Item | None]] | None = getattr(_held_writes, "writes", None)
        if held is not None:
            held.append((shard, old, new))
        elif old is None or new is None or old.to_json() != new.to_json():
            moto_add(shard, old, new)

    def update_item(backend: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - moto's own
        # moto creates a missing item with its key (one INSERT), then updates it (a second INSERT): keep one
        if getattr(_held_writes, "writes", None) is not None:
            return moto_update_item(backend, *args, **kwargs)
        _held_writes.writes = []
        try:
            return moto_update_item(backend, *args, **kwargs)
        finally:
            held, _held_writes.writes = _held_writes.writes, None
            if held:
                # the item object is updated in place: the last write's new image is the final one
                add(held[0][0], held[0][1], held[-1][2])

    for patched in (add, update_item):
        setattr(patched, _PATCHED, True)
    _set(StreamShard, "add", add)
    _set(DynamoDBBackend, "update_item", update_item)


def _set(owner: type, name: str, function: Callable[..., Any]) -> None:
    setattr(owner, name, function)


@aws_provider(api="dynamodb", name="moto")
def dynamodb_moto() -> Service:
    return Service.for_provider(MotoDynamoDBProvider(), dispatch_table_factory=MotoFallbackDispatcher)


@aws_provider(api="dynamodbstreams", name="moto")
def dynamodbstreams_moto() -> Service:
    return Service.for_provider(MotoDynamoDBStreamsProvider(), dispatch_table_factory=MotoFallbackDispatcher)

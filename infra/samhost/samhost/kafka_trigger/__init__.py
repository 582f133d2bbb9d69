"""The local stack's Kafka trigger: a poller with the semantics of AWS's self-managed Kafka event source mapping,
which invokes the deployed function through the Lambda Invoke API (LocalStack community runs no Kafka mapping).

Configuration comes from template.yaml itself (`kafka_mappings`): the `AWS::Lambda::EventSourceMapping`
resources with a `SelfManagedEventSource` that AWS would create for the given parameters with
KafkaTriggerSource=self-managed (Stage=local counts as dev, since the template keeps Kafka mappings off the
local stage). Each mapping gets a consumer per partition of its topic, each on its own thread, so that
partitions are invoked side by side (with one partition it subscribes; with several each is assigned its
partitions directly, because tansu's rebalancing of a group with several members can take minutes), all
committing to its ConsumerGroupId, auto commit off, `auto.offset.reset` from StartingPosition:

- a batch is BatchSize records, or what arrived within MaximumBatchingWindowInSeconds of the first one, or
  less than Lambda's 6 MB payload; the event is a `SelfManagedKafka` event (samhost.kafka_events);
- invoked RequestResponse; success without `batchItemFailures` commits the batch;
- a partial batch response (`{"itemIdentifier": {"partition": "<topic>-<n>", "offset": n}}`) commits each
  partition up to its first failed record and rewinds it there: that record and the rest of its partition are
  read again, other partitions move on; only the named records count a failed attempt;
- a function error (or no answer within the function's timeout plus a margin) retries the batch with
  exponential backoff; with BisectBatchOnFunctionError it is split in halves first (splitting does not count as
  a retry); an invalid partial response fails the whole batch;
- a record is given up after MaximumRetryAttempts retries (10 when -1 with a destination, as Lambda does) or
  when older than MaximumRecordAgeInSeconds: it goes to the on-failure destination (an SQS queue), then is
  committed. If that send fails nothing is committed past it; it is tried again after a backoff;
- offsets are committed only past records that succeeded or were dead-lettered: a restart reads the rest again;
- SIGTERM/SIGINT: the invoke in flight finishes, what is done is committed, nothing else; consumers close.

How it differs from AWS:
- the on-failure message carries the records themselves: besides AWS's requestContext, responseContext,
  version, timestamp and KafkaBatchInfo (batchSize, bootstrapServers, payloadSize, recordsInfo per partition),
  `payload` is the `SelfManagedKafka` event of the given-up records (base64 key and value, headers), so nothing
  is lost with the broker's memory storage. AWS sends only that metadata to SQS (and the records stay in Kafka
  until retention). A record set over SQS's 256 KiB goes as one message per record; a single record too large
  even then goes without key and value (`"truncated": true`);
- an invoke that fails before the function runs (LocalStack down, function not deployed yet, throttled) is
  retried with backoff until the records are too old, without counting attempts (as Lambda does for errors
  before invocation); a payload Lambda refuses counts as a failed attempt;
- one poller per partition of the topic, up to 8, started once (no scaling between MinimumPollers and
  MaximumPollers, and partitions added later get no poller of their own), PLAINTEXT brokers only (the
  mapping's SourceAccessConfigurations are not applied), SQS destinations only, retry counts in memory (a
  restart starts them again).

Run it: `python -m samhost.kafka_trigger --help` (see samhost.kafka_trigger.__main__).
"""

from __future__ import annotations

from samhost.kafka_trigger.aws import LambdaInvoker, SqsDestination, StackResources, destination_for
from samhost.kafka_trigger.batches import DeadLetter, Position, Record, ResponseContext
from samhost.kafka_trigger.delivery import (
    DeliveryReport,
    FailureDestination,
    FunctionFailedError,
    Invoker,
    InvokeResult,
    RetryPolicy,
)
from samhost.kafka_trigger.mappings import KafkaMapping, kafka_mappings, samconfig_parameters
from samhost.kafka_trigger.poller import MappingPoller, PollerSettings, start_pollers

__all__ = [
    "DeadLetter",
    "DeliveryReport",
    "FailureDestination",
    "FunctionFailedError",
    "InvokeResult",
    "Invoker",
    "KafkaMapping",
    "LambdaInvoker",
    "MappingPoller",
    "PollerSettings",
    "Position",
    "Record",
    "ResponseContext",
    "RetryPolicy",
    "SqsDestination",
    "StackResources",
    "destination_for",
    "kafka_mappings",
    "samconfig_parameters",
    "start_pollers",
]

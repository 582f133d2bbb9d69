"""Delivering CloudEvents to a subscription's target: an SQS queue or SNS topic (in batches of 10), an HTTP
webhook (signed with HMAC-SHA256, on keep-alive connections) or another Kafka topic (one produce and one flush
for many events). A failure says whether a retry may succeed (`transient`)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.client
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudevents.core.base import BaseCloudEvent
from lambda_event_bus.bus.contract import EVENT_FORMAT, to_kafka_record
from lambda_event_bus.bus.producer import EventProducer
from opentelemetry.context import Context

from consumer.errors import ConsumerError
from consumer.subscriptions import Subscription

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sns.type_defs import PublishBatchRequestEntryTypeDef
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef, SendMessageBatchRequestEntryTypeDef

SIGNATURE_HEADER = "X-Eventbus-Signature"
"""`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: receivers check the MAC and the timestamp's age."""
# 401/403 too: after a secret rotation the next read of the secret fixes them
TRANSIENT_HTTP = frozenset({401, 403, 408, 425, 429, 500, 502, 503, 504})
SECRET_TTL_S = 300.0
# what reusing a keep-alive connection the host has closed meanwhile raises (the request was not taken)
STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
TRANSIENT_AWS_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "ServiceUnavailable",
        "InternalError",
        "KMS.ThrottlingException",
    }
)


class DeliveryError(ConsumerError):
    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


def structured_body(event: BaseCloudEvent) -> bytes:
    """The event in CloudEvents' structured JSON format (what SQS, SNS and webhooks receive): its attributes as
    they came, its data by its content type (JSON, text, or `data_base64`)."""
    return EVENT_FORMAT.write(event)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


@dataclass(frozen=True)
class Outbound:
    """One event on its way to a target: the event, its structured body, and the trace context it carries."""

    event: BaseCloudEvent
    trace_headers: Mapping[str, str]

    @functools.cached_property
    def body(self) -> bytes:
        return structured_body(self.event)


BATCH_ENTRIES = 10  # SendMessageBatch and PublishBatch take 10 entries ...
BATCH_BYTES = 256 * 1024  # ... of at most 256 KiB together


def batches(outbounds: Sequence[Outbound]) -> list[list[Outbound]]:
    """SQS/SNS batch calls for `outbounds`, in order: 10 entries and 256 KiB at most each (an event larger
    than that goes alone)."""
    calls: list[list[Outbound]] = []
    size = 0
    for outbound in outbounds:
        weight = len(outbound.body) + 1024  # the attributes
        if not calls or len(calls[-1]) == BATCH_ENTRIES or size + weight > BATCH_BYTES:
            calls.append([])
            size = 0
        calls[-1].append(outbound)
        size += weight
    return calls


class Deliverer:
    """Calls the targets. Webhooks keep one keep-alive connection per host and thread; SQS and SNS take
    batches (`send_batch`); Kafka targets one produce and one flush for many events (`produce`)."""

    def __init__(
        self,
        *,
        sqs: SQSClient | None = None,
        sns: SNSClient | None = None,
        producer: Callable[[], EventProducer] | None = None,
        webhook_timeout_s: float = 2.0,
        webhook_secret: str | None = None,
        read_secret: Callable[[str], str] | None = None,
    ) -> None:
        self._sqs, self._sns, self._producer = sqs, sns, producer
        self._webhook_timeout_s = webhook_timeout_s
        self._webhook_secret = webhook_secret
        self._read_secret = read_secret
        self._secrets: dict[str, tuple[float, str]] = {}
        self._connections = threading.local()

    def deliver(self, subscription: Subscription, event: BaseCloudEvent, trace_headers: Mapping[str, str]) -> None:
        """One event to its subscription's target; raises DeliveryError."""
        outbound = Outbound(event, trace_headers)
        if subscription.target.type == "webhook":
            self.post(subscription, outbound)
            return
        if subscription.target.type == "kafka":
            (failure,) = self.produce(subscription, [outbound], [None])
        else:
            (failure,) = self.send_batch(subscription, [outbound])
        if failure is not None:
            raise failure

    def send_batch(self, subscription: Subscription, outbounds: Sequence[Outbound]) -> list[DeliveryError | None]:
        """One SendMessageBatch (SQS) or PublishBatch (SNS) call for at most 10 events: each entry's failure."""
        target = subscription.target
        attributes = [_attributes(outbound.event, outbound.trace_headers) for outbound in outbounds]
        try:
            if target.type == "sqs":
                sqs = self._client(self._sqs, "SQS")
                messages: list[SendMessageBatchRequestEntryTypeDef] = [
                    {"Id": str(index), "MessageAttributes": attributes[index], "MessageBody": outbound.body.decode()}
                    for index, outbound in enumerate(outbounds)
                ]
                response = self._aws(lambda: sqs.send_message_batch(QueueUrl=target.address, Entries=messages))
            else:
                sns = self._client(self._sns, "SNS")
                notes: list[PublishBatchRequestEntryTypeDef] = [
                    {"Id": str(index), "MessageAttributes": attributes[index], "Message": outbound.body.decode()}
                    for index, outbound in enumerate(outbounds)
                ]
                response = self._aws(
                    lambda: sns.publish_batch(TopicArn=target.address, PublishBatchRequestEntries=notes)
                )
        except DeliveryError as failure:
            return [failure] * len(outbounds)
        failures: list[DeliveryError | None] = [None] * len(outbounds)
        for failed in response.get("Failed", []):
            code = str(failed.get("Code", "error"))
            failures[int(failed["Id"])] = DeliveryError(
                f"{code}: {failed.get('Message', '')}".strip(": "),
                transient=not failed.get("SenderFault", False) or code in TRANSIENT_AWS_CODES,
            )
        return failures

    def produce(
        self, subscription: Subscription, outbounds: Sequence[Outbound], parents: Sequence[Context | None]
    ) -> list[DeliveryError | None]:
        """Every event to the subscription's Kafka topic: one produce call each, one flush for all."""
        if self._producer is None:
            return [DeliveryError("no Kafka producer is configured", transient=False)] * len(outbounds)
        topic = subscription.target.address
        records = [to_kafka_record(outbound.event, topic) for outbound in outbounds]
        deliveries = self._producer().send(
            records, timeout_s=self._webhook_timeout_s, parents=[parent or Context() for parent in parents]
        )
        return [
            None
            if delivery.ok
            else DeliveryError(f"Kafka topic {topic}: {delivery.error}", transient=not delivery.permanent)
            for delivery in deliveries
        ]

    def post(self, subscription: Subscription, outbound: Outbound) -> None:
        """One signed POST to the subscription's webhook, on this thread's keep-alive connection to its host."""
        try:
            url = urllib.parse.urlsplit(subscription.target.address)
            port = url.port
        except ValueError:
            raise DeliveryError(f"webhook URL {subscription.target.address!r} is invalid", transient=False) from None
        if url.scheme not in ("http", "https") or not url.hostname:
            raise DeliveryError(f"webhook URL {subscription.target.address!r} is not http(s)", transient=False)
        body = outbound.body
        headers = {"Content-Type": "application/cloudevents+json", **outbound.trace_headers}
        secret = self._secret_for(subscription)
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body, int(time.time()))
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        origin = (url.scheme, url.hostname, port)
        for reused in (True, False):
            connection, was_open = self._connection(origin)
            try:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out
                self._close(origin)
                if reused and was_open and isinstance(error, STALE_CONNECTION_ERRORS):
                    continue  # the host closed an idle keep-alive connection: once more on a new one
                raise DeliveryError(
                    f"webhook {url.hostname}: {type(error).__name__}: {error}", transient=True
                ) from None
            if response.will_close:
                self._close(origin)
            break
        if response.status in (401, 403):
            self.forget_secret(subscription)
        if not 200 <= response.status < 300:
            raise DeliveryError(
                f"webhook {url.hostname} answered HTTP {response.status}", transient=response.status in TRANSIENT_HTTP
            )

    def _connection(self, origin: tuple[str, str, int | None]) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to `origin`, and whether it was already open (a kept-alive one)."""
        pool: dict[tuple[str, str, int | None], http.client.HTTPConnection] | None = getattr(
            self._connections, "pool", None
        )
        if pool is None:
            pool = self._connections.pool = {}
        connection = pool.get(origin)
        if connection is not None:
            return connection, connection.sock is not None
        scheme, host, port = origin
        connection_type = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        connection = pool[origin] = connection_type(host, port, timeout=self._webhook_timeout_s)
        return connection, False

    def _close(self, origin: tuple[str, str, int | None]) -> None:
        pool = getattr(self._connections, "pool", {})
        connection = pool.pop(origin, None)
        if connection is not None:
            connection.close()

    def _secret_for(self, subscription: Subscription) -> str | None:
        arn = subscription.target.secret_arn
        if not arn or self._read_secret is None:
            return self._webhook_secret
        cached = self._secrets.get(arn)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            secret = self._read_secret(arn)
        except Exception as error:
            raise DeliveryError(
                f"the webhook secret could not be read: {type(error).__name__}", transient=True
            ) from None
        self._secrets[arn] = (time.monotonic() + SECRET_TTL_S, secret)  # re-read now and then: rotations
        return secret

    def forget_secret(self, subscription: Subscription) -> None:
        """After a 401/403: the secret may have been rotated; read it again next time."""
        if subscription.target.secret_arn:
            self._secrets.pop(subscription.target.secret_arn, None)

    @staticmethod
    def _client[C](client: C | None, service: str) -> C:
        """The service's client; a subscription to a service the function has no client for is a permanent
        failure (its dead letter says so) rather than an AttributeError."""
        if client is None:
            raise DeliveryError(f"no {service} client is configured for this function", transient=False)
        return client

    @staticmethod
    def _aws(call: Callable[[], Any]) -> Any:  # noqa: ANN401 - a boto3 response
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            raise DeliveryError(
                f"{code or 'AWS error'}: {error}", transient=code in TRANSIENT_AWS_CODES or status >= 500
            ) from None
        except BotoCoreError as error:  # endpoint unreachable, timeouts
            raise DeliveryError(f"{type(error).__name__}: {error}", transient=True) from None


def _attributes(event: BaseCloudEvent, trace_headers: Mapping[str, str]) -> dict[str, MessageAttributeValueTypeDef]:
    """CloudEvents attributes and trace context as SQS/SNS message attributes (at most 10 of them)."""
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        f"ce_{name}": {"DataType": "String", "StringValue": str(event.get_attributes()[name])}
        for name in ("id", "type", "source", "subject")
        if event.get_attributes().get(name)
    }
    for name, value in list(trace_headers.items())[:4]:
        attributes[name] = {"DataType": "String", "StringValue": value}
    return attributes

"""Delivering a CloudEvent to a subscription's target: an SQS queue, an SNS topic, an HTTP webhook (signed
with HMAC-SHA256) or another Kafka topic. A failure says whether a retry may succeed (`transient`)."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from eventbus.producer import EventProducer
from eventbus.records import to_kafka_record

from consumer.errors import ConsumerError
from consumer.subscriptions import Subscription

SIGNATURE_HEADER = "X-Eventbus-Signature"
"""`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: receivers check the MAC and the timestamp's age."""
# 401/403 too: after a secret rotation the next read of the secret fixes them
TRANSIENT_HTTP = frozenset({401, 403, 408, 425, 429, 500, 502, 503, 504})
SECRET_TTL_S = 300.0
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
    """The event in CloudEvents' structured JSON format (what SQS, SNS and webhooks receive)."""
    from eventbus.records import EVENT_FORMAT

    return EVENT_FORMAT.write(event)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class Deliverer:
    def __init__(
        self,
        *,
        sqs: Any = None,  # noqa: ANN401 - boto3 clients are untyped here
        sns: Any = None,  # noqa: ANN401
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

    def deliver(self, subscription: Subscription, event: BaseCloudEvent, trace_headers: Mapping[str, str]) -> None:
        target = subscription.target
        if target.type == "kafka":
            self._to_kafka(target.address, event)
            return
        body = structured_body(event)
        if target.type == "webhook":
            self._to_webhook(subscription, body, trace_headers)
        elif target.type == "sqs":
            self._aws(
                lambda: self._sqs.send_message(
                    QueueUrl=target.address,
                    MessageBody=body.decode(),
                    MessageAttributes=_attributes(event, trace_headers),
                )
            )
        else:
            self._aws(
                lambda: self._sns.publish(
                    TopicArn=target.address, Message=body.decode(), MessageAttributes=_attributes(event, trace_headers)
                )
            )

    def _to_kafka(self, topic: str, event: BaseCloudEvent) -> None:
        if self._producer is None:
            raise DeliveryError("no Kafka producer is configured", transient=False)
        key = str(event.get_extension("partitionkey") or event.get_subject() or event.get_id())
        (delivery,) = self._producer().send([to_kafka_record(event, topic, key)], timeout_s=self._webhook_timeout_s)
        if not delivery.ok:
            raise DeliveryError(f"Kafka topic {topic}: {delivery.error}", transient=not delivery.permanent)

    def _to_webhook(self, subscription: Subscription, body: bytes, trace_headers: Mapping[str, str]) -> None:
        try:
            url = urllib.parse.urlsplit(subscription.target.address)
            port = url.port
        except ValueError:
            raise DeliveryError(f"webhook URL {subscription.target.address!r} is invalid", transient=False) from None
        if url.scheme not in ("http", "https") or not url.hostname:
            raise DeliveryError(f"webhook URL {subscription.target.address!r} is not http(s)", transient=False)
        headers = {"Content-Type": "application/cloudevents+json", **trace_headers}
        secret = self._secret_for(subscription)
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body, int(time.time()))
        connection_type = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        connection = connection_type(url.hostname, port, timeout=self._webhook_timeout_s)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out
            raise DeliveryError(f"webhook {url.hostname}: {type(error).__name__}: {error}", transient=True) from None
        finally:
            connection.close()
        if response.status in (401, 403):
            self.forget_secret(subscription)
        if not 200 <= response.status < 300:
            raise DeliveryError(
                f"webhook {url.hostname} answered HTTP {response.status}", transient=response.status in TRANSIENT_HTTP
            )

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
    def _aws(call: Callable[[], object]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            call()
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            raise DeliveryError(
                f"{code or 'AWS error'}: {error}", transient=code in TRANSIENT_AWS_CODES or status >= 500
            ) from None
        except BotoCoreError as error:  # endpoint unreachable, timeouts
            raise DeliveryError(f"{type(error).__name__}: {error}", transient=True) from None


def _attributes(event: BaseCloudEvent, trace_headers: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """CloudEvents attributes and trace context as SQS/SNS message attributes (at most 10 of them)."""
    attributes = {
        f"ce_{name}": {"DataType": "String", "StringValue": str(event.get_attributes()[name])}
        for name in ("id", "type", "source", "subject")
        if event.get_attributes().get(name)
    }
    for name, value in list(trace_headers.items())[:4]:
        attributes[name] = {"DataType": "String", "StringValue": value}
    return attributes

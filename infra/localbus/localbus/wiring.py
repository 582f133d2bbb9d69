"""What the local stage is deployed with: the live addresses of the stack's servers and the subscribers' targets.

samconfig.toml's `local` environment holds the fixed parameters (Stage=local, the topics, the API's auth); this
module adds what only exists once the stack runs: the broker, the OTLP receiver and the Pushgateway (free ports),
and KafkaConsumerFunction's subscriptions, kept where a team would keep them in AWS, an SSM parameter
(`SubscriptionsParameterName`), with the webhook's signing secret in Secrets Manager.

The local subscribers: a `fulfilment` SQS queue and the stack's webhook receiver. Orders go to both (the
end-to-end test checks each gets an event exactly once), payments, customers, demo events and the CDC function's
change events go to the webhook. One more subscription shows a short retry policy: the orders of the fault
matrix's webhook-outage scenario (source `/ledger/webhook-outage`) also go to the webhook under its own path
with a 60 s retry window, so an outage longer than that dead-letters them while `orders-webhook` (24 h) waits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import KafkaException, NewTopic
from hoststack.state import StackState
from samhost.deploy import aws_client

SUBSCRIPTIONS_PARAMETER = "/event-bus-local/subscriptions"
WEBHOOK_SECRET_NAME = "event-bus-local/webhook-secret"  # noqa: S105 - a name, not a secret
FULFILMENT_QUEUE = "fulfilment"
BRIEF_WINDOW = "orders-brief-window"  # the subscription with a 60 s retry window
BRIEF_WINDOW_PATH = "/brief-window"  # its path under the webhook receiver's URL
OUTAGE_SOURCE = "/ledger/webhook-outage"  # the only events it matches
# One: with two, tansu once left an offset out of a fetch (orders-1@206..209 came as 3 records; the missing
# one was never delivered, in the e2e otlp-down scenario); the trigger's pollers per partition are
# ready for more once the broker is trusted with them
TOPIC_PARTITIONS = 1


@dataclass(frozen=True)
class Targets:
    queue_url: str
    queue_arn: str
    webhook_url: str
    secret_arn: str


def subscriptions(targets: Targets) -> list[dict[str, Any]]:
    webhook = {"type": "webhook", "url": targets.webhook_url, "secret_arn": targets.secret_arn}
    return [
        {
            "name": "orders-to-fulfilment",
            "match": {"type": "com.example.order.*"},
            "target": {"type": "sqs", "url": targets.queue_url},
        },
        {"name": "orders-webhook", "match": {"type": "com.example.order.*"}, "target": webhook},
        {"name": "payments-webhook", "match": {"type": "com.example.payment.*"}, "target": webhook},
        {"name": "customers-webhook", "match": {"type": "com.example.customer.*"}, "target": webhook},
        {"name": "demo-webhook", "match": {"type": "demo.*"}, "target": webhook},
        {"name": "changes-webhook", "match": {"type": "cdc.*"}, "target": webhook},
        {
            "name": BRIEF_WINDOW,
            "match": {"type": "com.example.order.*", "source": OUTAGE_SOURCE},
            "target": {**webhook, "url": targets.webhook_url + BRIEF_WINDOW_PATH},
            "retry_policy": {"maximum_event_age_seconds": 60},
        },
    ]


def prepare_targets(endpoint_url: str, webhook_url: str, webhook_secret: str) -> Targets:
    """Create (or update) the queue, the secret and the subscriptions parameter on LocalStack."""
    sqs = aws_client("sqs", endpoint_url)
    queue_url = sqs.create_queue(QueueName=FULFILMENT_QUEUE)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    secrets = aws_client("secretsmanager", endpoint_url)
    try:
        secret_arn = secrets.create_secret(Name=WEBHOOK_SECRET_NAME, SecretString=webhook_secret)["ARN"]
    except secrets.exceptions.ResourceExistsException:
        secret_arn = secrets.put_secret_value(SecretId=WEBHOOK_SECRET_NAME, SecretString=webhook_secret)["ARN"]
    targets = Targets(queue_url, queue_arn, webhook_url, secret_arn)
    aws_client("ssm", endpoint_url).put_parameter(
        Name=SUBSCRIPTIONS_PARAMETER, Value=json.dumps(subscriptions(targets)), Type="String", Overwrite=True
    )
    return targets


def local_parameters(state: StackState, targets: Targets) -> dict[str, str]:
    """The parameters that depend on the running stack; samconfig.toml's `local` environment has the rest."""
    return {
        "KafkaBootstrapServers": state.address("kafka"),
        "OtlpEndpoint": state.address("otlp"),
        "PushgatewayUrl": state.address("pushgateway"),
        "SubscriptionsParameterName": SUBSCRIPTIONS_PARAMETER,
        "DeliveryQueueArns": targets.queue_arn,
        "WebhookSecretArns": targets.secret_arn,
    }


def create_topics(bootstrap: str, parameters: dict[str, str]) -> list[str]:
    """The topics the bus uses, made before anything polls them (MSK topics exist before their mappings too):
    the consumer's (KafkaTopics) and the CDC function's (CdcTopic), TOPIC_PARTITIONS partitions each (the Kafka
    trigger polls each partition of a topic on its own; a key stays on its partition, so its order holds)."""
    names = [topic for topic in parameters.get("KafkaTopics", "").split(",") if topic]
    names.append(parameters.get("CdcTopic") or "cdc-events")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=TOPIC_PARTITIONS, replication_factor=1) for name in dict.fromkeys(names)]
    )
    for future in futures.values():
        try:
            future.result(10)
        except KafkaException as error:
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise
    return list(futures)

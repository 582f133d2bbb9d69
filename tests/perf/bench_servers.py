"""The real servers a benchmark run measures against (a Pushgateway, tansu, rotel, moto's server), the AWS
resources and topics the functions' deployed configuration names, and that configuration's environment."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class LocalServers:
    pushgateway: Any
    tansu: Any
    rotel: Any
    moto: Any


@contextlib.contextmanager
def local_servers(log_dir: Path) -> Iterator[LocalServers]:
    from hoststack import servers

    started: list[Any] = []
    try:
        pushgateway = servers.start_pushgateway(log_dir)
        started.append(pushgateway)
        tansu = servers.start_tansu(log_dir)
        started.append(tansu)
        rotel = servers.start_rotel(log_dir, tansu.url)
        started.append(rotel)
        moto = servers.start_moto(log_dir)
        started.append(moto)
        yield LocalServers(pushgateway, tansu, rotel, moto)
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()


def closed_port() -> int:
    """A port that was free a moment ago: nothing listens on it, connections are refused at once."""
    from samhost.processes import free_port

    return int(free_port())


@contextlib.contextmanager
def hung_listener() -> Iterator[str]:
    """A collector that hangs: the kernel completes the TCP handshake (listen backlog) but nothing ever
    accepts or answers, so a client waits for its own timeout, as with a blackholed endpoint."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@dataclass(frozen=True)
class AwsResources:
    """What the functions' deployed configuration names, created in moto's server and on the broker."""

    endpoint: str
    table: str
    queues: dict[str, str]


def create_resources(endpoint: str, bootstrap: str) -> AwsResources:
    import botocore.session
    from confluent_kafka.admin import AdminClient, NewTopic

    session = botocore.session.get_session()
    options = {
        "region_name": "eu-west-1",
        "endpoint_url": endpoint,
        "aws_access_key_id": "bench",
        "aws_secret_access_key": "bench",
    }
    session.create_client("dynamodb", **options).create_table(
        TableName="bench-idempotency",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    sqs = session.create_client("sqs", **options)
    queues = {name: sqs.create_queue(QueueName=f"bench-{name}")["QueueUrl"] for name in ("dlq", "retry", "fulfilment")}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic(topic, num_partitions=1, replication_factor=1) for topic in ("orders", "events", "cdc-events")]
    for future in admin.create_topics(topics).values():
        future.result(timeout=10)
    return AwsResources(endpoint, "bench-idempotency", queues)


def telemetry_env(servers: LocalServers) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": servers.rotel.http_endpoint,
        "PUSHGATEWAY_URL": servers.pushgateway.url,
    }


def function_env(servers: LocalServers, aws: AwsResources) -> Callable[[str], dict[str, str]]:
    """template.yaml's Globals and each function's own variables, pointed at the local servers."""
    common = {
        **telemetry_env(servers),
        "ENVIRONMENT": "bench",
        "VERSION": "bench",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_PROPAGATORS": "tracecontext,baggage",
        "TELEMETRY_FLUSH_TIMEOUT_MS": "300",
        "KAFKA_BOOTSTRAP_SERVERS": servers.tansu.url.removeprefix("tcp://"),
        "KAFKA_SECURITY": "plaintext",
        "AWS_ENDPOINT_URL": aws.endpoint,
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
    }
    subscriptions = [
        {
            "name": "orders-to-fulfilment",
            "match": {"type": "com.example.order.*"},
            "target": {"type": "sqs", "url": aws.queues["fulfilment"]},
        }
    ]
    own = {
        "ingest": {"DEFAULT_TOPIC": "events", "IDEMPOTENCY_TABLE": aws.table},
        "consumer": {
            "SUBSCRIPTIONS": json.dumps(subscriptions),
            "DLQ_URL": aws.queues["dlq"],
            "IDEMPOTENCY_TABLE": aws.table,
            "RETRY_QUEUE_URL": aws.queues["retry"],
            "WEBHOOK_TIMEOUT_MS": "2000",
        },
        "cdc": {"CDC_TOPIC": "cdc-events", "CDC_EVENT_TYPE_PREFIX": "cdc", "DLQ_URL": aws.queues["dlq"]},
    }
    return lambda code_uri: {**common, **own[code_uri]}

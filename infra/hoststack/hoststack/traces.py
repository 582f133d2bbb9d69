"""Read back the spans and metrics the local OTLP receiver (rotel) got: rotel writes TracesData and MetricsData
protobufs to Kafka topics on the local broker (tansu), and this reads those topics from the beginning."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import MetricsData
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

TRACES_TOPIC = "otlp_traces"
METRICS_TOPIC = "otlp_metrics"


def _value(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in attributes if isinstance(item, KeyValue)}


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    links: tuple[tuple[str, str], ...]
    events: tuple[str, ...]
    status_code: int
    status_message: str = ""
    event_attributes: tuple[dict[str, Any], ...] = ()  # of each event in `events`, in order
    start_ns: int = 0  # Unix nanoseconds
    end_ns: int = 0


@dataclass
class _ReceivedTopic:
    """One of rotel's Kafka topics, read from its beginning; subclasses turn each message into what they keep."""

    bootstrap: str
    topic: str = ""
    _consumer: Consumer | None = None

    def create_topic(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(self.topic, num_partitions=1, replication_factor=1)])
        for future in futures.values():
            try:
                future.result(timeout=10)
            except KafkaException as error:  # a receiver started again on the same broker
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def _poll(self, seconds: float) -> None:
        if self._consumer is None:
            self._consumer = Consumer(
                {"bootstrap.servers": self.bootstrap, "group.id": f"{self.topic}-store", "enable.auto.commit": False}
            )
            self._consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self._consumer.poll(0.1)
            if message is None or message.error():
                continue
            self._received(message.value() or b"")

    def _received(self, value: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


@dataclass
class TraceStore(_ReceivedTopic):
    topic: str = TRACES_TOPIC
    spans: list[ReceivedSpan] = field(default_factory=list)

    def _received(self, value: bytes) -> None:
        data = TracesData()
        data.ParseFromString(value)
        for resource_spans in data.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes=_attributes(span.attributes),
                            resource=resource,
                            links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                            events=tuple(event.name for event in span.events),
                            status_code=span.status.code,
                            status_message=span.status.message,
                            event_attributes=tuple(_attributes(event.attributes) for event in span.events),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                        )
                    )

    def read(self, seconds: float = 0.3) -> list[ReceivedSpan]:
        """Every span received so far, after reading for up to `seconds` more."""
        self._poll(seconds)
        return self.spans

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], service: str, timeout: float = 15.0
    ) -> list[ReceivedSpan]:
        """The spans of `service` once `predicate` holds for them (fails after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            mine = [span for span in self.spans if span.resource.get("service.name") == service]
            if predicate(mine):
                return mine
            if time.monotonic() > deadline:
                raise AssertionError(f"spans of {service} never satisfied the check; got {[s.name for s in mine]}")
            self._poll(0.3)


@dataclass(frozen=True)
class ReceivedPoint:
    """One data point of an OTLP metric: a number (gauge, sum) or a histogram's count, sum and buckets."""

    metric: str
    kind: str  # gauge, sum or histogram
    attributes: dict[str, Any]
    resource: dict[str, Any]
    value: float = 0.0
    count: int = 0
    bounds: tuple[float, ...] = ()
    bucket_counts: tuple[int, ...] = ()
    start_ns: int = 0
    time_ns: int = 0


@dataclass
class MetricStore(_ReceivedTopic):
    topic: str = METRICS_TOPIC
    points: list[ReceivedPoint] = field(default_factory=list)

    def _received(self, value: bytes) -> None:
        data = MetricsData()
        data.ParseFromString(value)
        for resource_metrics in data.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data") or ""
                    for point in getattr(metric, kind).data_points if kind else ():
                        histogram = kind == "histogram"
                        self.points.append(
                            ReceivedPoint(
                                metric=metric.name,
                                kind=kind,
                                attributes=_attributes(point.attributes),
                                resource=resource,
                                value=point.sum if histogram else point.as_double or float(point.as_int),
                                count=point.count if histogram else 0,
                                bounds=tuple(point.explicit_bounds) if histogram else (),
                                bucket_counts=tuple(point.bucket_counts) if histogram else (),
                                start_ns=point.start_time_unix_nano,
                                time_ns=point.time_unix_nano,
                            )
                        )

    def wait_for(
        self, predicate: Callable[[list[ReceivedPoint]], bool], service: str, timeout: float = 15.0
    ) -> list[ReceivedPoint]:
        """The points of `service` once `predicate` holds for them (fails after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            mine = [point for point in self.points if point.resource.get("service.name") == service]
            if predicate(mine):
                return mine
            if time.monotonic() > deadline:
                raise AssertionError(f"metrics of {service} never satisfied the check; got {len(mine)} points")
            self._poll(0.3)


def span_tree(spans: Iterable[ReceivedSpan]) -> list[tuple[int, ReceivedSpan]]:
    """The spans depth first, each with its depth: roots (spans whose parent is not among them) first, children
    after their parent, siblings in the order they started."""
    ordered = sorted(spans, key=lambda span: span.start_ns)
    ids = {span.span_id for span in ordered}
    children: dict[str, list[ReceivedSpan]] = {}
    for span in ordered:
        children.setdefault(span.parent_span_id if span.parent_span_id in ids else "", []).append(span)
    tree: list[tuple[int, ReceivedSpan]] = []

    def visit(span: ReceivedSpan, depth: int) -> None:
        tree.append((depth, span))
        for child in children.get(span.span_id, []):
            visit(child, depth + 1)

    for root in children.get("", []):
        visit(root, 0)
    return tree

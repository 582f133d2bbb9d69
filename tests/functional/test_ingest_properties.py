"""Property: whatever body and headers a client sends to POST /events, the handler never raises, never
answers 5xx for the client's mistakes, and every answer is a 202 or a valid problem+json document."""

from __future__ import annotations

import base64
import json
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as event_label
from hypothesis import strategies as st
from support.context import LambdaContext
from support.functions import load_function

pytestmark = pytest.mark.servers

CLIENT_STATUSES = {400, 413, 415, 422}  # POST /events, no idempotency: no 404/405/409 either
# any code point, lone surrogates included (Hypothesis leaves them out of text() by default)
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=20)
CONTENT_TYPES = [
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "",
]
ATTRIBUTE_VALUES = st.one_of(
    ANY_TEXT,
    st.floats(allow_nan=False),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.integers(),
    st.none(),
    st.booleans(),
    st.sampled_from(["1.0", "0.3", "", "2026-01-01"]),
)
STRUCTURED = st.dictionaries(
    st.sampled_from(
        [
            "specversion",
            "id",
            "source",
            "type",
            "subject",
            "time",
            "data",
            "data_base64",
            "dataschema",
            "datacontenttype",
            "partitionkey",
            "Bad-Name",
            "x" * 30,
        ]
    ),
    st.one_of(ATTRIBUTE_VALUES, st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)),
    max_size=10,
)
VALID_CORE = st.fixed_dictionaries(
    {
        "specversion": st.just("1.0"),
        "id": st.text(min_size=1, max_size=20),
        "source": st.text(min_size=1, max_size=20),
        "type": st.sampled_from(["com.example.order.created", "demo.x", "t"]),
    },
    optional={"data": st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=3))},
)
BODIES = st.one_of(
    st.binary(max_size=200).map(lambda raw: raw.decode("latin-1")),
    st.text(max_size=200),
    STRUCTURED.map(json.dumps),
    VALID_CORE.map(json.dumps),
    st.lists(st.one_of(STRUCTURED, VALID_CORE), max_size=4).map(json.dumps),
    st.none(),
)
HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "Content-Type",
            "ce-specversion",
            "ce-id",
            "ce-source",
            "ce-type",
            "ce-time",
            "ce-Bad_Name",
            "traceparent",
            "X-Correlation-Id",
            "content-type",
        ]
    ),
    st.one_of(st.sampled_from(CONTENT_TYPES), st.text(max_size=40)),
    max_size=6,
)


@pytest.fixture(scope="module")
def ingest(kafka_bootstrap: str) -> ModuleType:
    with pytest.MonkeyPatch.context() as monkeypatch:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "ingest-properties",
            "MAX_REQUEST_BYTES": "4096",
        }
        yield load_function("ingest", "ingest", env, monkeypatch)


CHAOTIC = st.fixed_dictionaries(
    {
        "body": BODIES,
        "headers": HEADERS,
        "base64": st.booleans(),
        "query": st.dictionaries(
            st.sampled_from(["type", "source", "id", "subject"]), st.text(max_size=10), max_size=3
        ),
    }
)
STRUCTURED_REQUESTS = st.fixed_dictionaries(
    {
        "body": st.one_of(VALID_CORE, STRUCTURED).map(json.dumps),
        "headers": st.just({"Content-Type": "application/cloudevents+json"}),
        "base64": st.booleans(),
        "query": st.just({}),
    }
)
BATCH_REQUESTS = st.fixed_dictionaries(
    {
        "body": st.lists(st.one_of(VALID_CORE, VALID_CORE, STRUCTURED), min_size=1, max_size=4).map(json.dumps),
        "headers": st.just({"Content-Type": "application/cloudevents-batch+json"}),
        "base64": st.just(False),
        "query": st.just({}),
    }
)
BINARY_REQUESTS = st.fixed_dictionaries(
    {
        "body": st.one_of(st.text(max_size=50), st.none()),
        "headers": st.fixed_dictionaries(
            {
                "ce-specversion": st.sampled_from(["1.0", "1.0", "0.3"]),
                "ce-id": st.text(min_size=1, max_size=10),
                "ce-source": st.text(min_size=1, max_size=10),
                "ce-type": st.sampled_from(["demo.b", "com.example.order.created"]),
            },
            optional={
                "Content-Type": st.sampled_from(CONTENT_TYPES),
                "ce-time": st.text(max_size=25),
                "ce-partitionkey": st.text(max_size=10),
            },
        ),
        "base64": st.booleans(),
        "query": st.just({}),
    }
)
PLAIN_REQUESTS = st.fixed_dictionaries(
    {
        "body": st.one_of(
            st.just("{}"), st.text(max_size=30), st.dictionaries(st.text(max_size=5), st.integers()).map(json.dumps)
        ),
        "headers": st.just({"Content-Type": "application/json"}),
        "base64": st.just(False),
        "query": st.fixed_dictionaries(
            {}, optional={"type": st.text(max_size=10), "source": st.text(max_size=10), "id": st.text(max_size=10)}
        ),
    }
)
REQUESTS = st.one_of(CHAOTIC, STRUCTURED_REQUESTS, BATCH_REQUESTS, BINARY_REQUESTS, PLAIN_REQUESTS)


def encode(body: str | None, base64_encoded: bool) -> str | None:
    if body is None or not base64_encoded:
        return body
    return base64.b64encode(body.encode("utf-8", errors="surrogatepass")).decode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=REQUESTS)
def test_any_request_gets_a_202_or_a_problem_and_never_a_5xx(ingest, request):
    headers = request["headers"]
    event = {
        "resource": "/events",
        "path": "/events",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": request["query"] or None,
        "requestContext": {"requestId": "r-1", "stage": "test"},
        "body": encode(request["body"], request["base64"]),
        "isBase64Encoded": request["base64"],
    }
    response = ingest.handler(event, LambdaContext(function_name="ingest"))
    status = response["statusCode"]
    event_label(f"status {status}")  # `pytest --hypothesis-show-statistics` shows the mix
    if status == 202:
        answer = json.loads(response["body"])
        assert answer["accepted"] == [result["id"] for result in answer["results"]]
        # nothing accepted only for an empty batch (json-format.md §4.3: `[]` is valid)
        assert answer["accepted"] or json.loads(request["body"]) == []
        return
    assert status in CLIENT_STATUSES, response
    assert response["headers"]["Content-Type"] == "application/problem+json"
    problem = json.loads(response["body"])
    assert problem["status"] == status
    assert isinstance(problem["type"], str)
    assert isinstance(problem["title"], str)
    assert isinstance(problem["detail"], str)
    assert problem["detail"]

"""The idempotency claim against a real DynamoDB API (moto's server) behind a proxy that answers late: a
conditional PutItem that succeeded but answered after botocore's read timeout is retried by botocore, and the
retry must recognise the claim's own write instead of reporting another owner."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import boto3
import pytest
from functional.test_ingest import api_request, base_env, call, cloud_event
from hoststack.proxy import DelayingProxy, first_n
from hoststack.servers import start_moto
from support.functions import load_function
from support.kafka import header, read_topic

pytestmark = pytest.mark.servers

PUT_ITEM = "DynamoDB_20120810.PutItem"
LATE_S = 1.6  # past the store's 1 s read timeout


@pytest.fixture(scope="module")
def dynamodb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's server: the DynamoDB API over HTTP, so a proxy can sit in front of it."""
    server = start_moto(tmp_path_factory.mktemp("moto-server"))
    yield server.url
    server.stop()


@pytest.fixture
def table(dynamodb: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    name = f"idempotency-{uuid.uuid4().hex[:8]}"
    boto3.client("dynamodb", endpoint_url=dynamodb, region_name="eu-west-1").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@pytest.fixture
def slow_proxy(dynamodb: str) -> Iterator[DelayingProxy]:
    proxy = DelayingProxy(dynamodb, rule=first_n(PUT_ITEM, 1, LATE_S)).start()
    yield proxy
    proxy.stop()


def store(table: str, endpoint: str, monkeypatch: pytest.MonkeyPatch):
    from lambda_event_bus.bus.idempotency import DynamoDBIdempotency

    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return DynamoDBIdempotency(table, 3600, function_name="ingest")


def test_a_claim_whose_answer_came_late_is_still_ours(table, slow_proxy, monkeypatch):
    claims = store(table, slow_proxy.url, monkeypatch)
    key = {"source": "/shop", "id": uuid.uuid4().hex}
    claim = claims.claim(key, 30_000)
    assert len(slow_proxy.requests_for(PUT_ITEM)) >= 2, "botocore timed out and retried the PutItem"
    assert claim.state.value == "new", claim.detail


def test_a_claim_the_store_never_answered_leaves_nothing_behind(table, dynamodb, monkeypatch):
    """Every attempt of the conditional write lands but answers late: the claim reports the store unavailable
    ("nothing was done"), so it must withdraw what landed, or a retry would meet an "in progress" claim."""
    proxy = DelayingProxy(dynamodb, rule=first_n(PUT_ITEM, 10, LATE_S)).start()
    try:
        unseen = store(table, proxy.url, monkeypatch)
        key = {"source": "/shop", "id": uuid.uuid4().hex}
        assert unseen.claim(key, 30_000).state.value == "unavailable"
        assert len(proxy.requests_for(PUT_ITEM)) >= 2, "botocore retried"
    finally:
        proxy.stop()
    assert store(table, dynamodb, monkeypatch).claim(key, 30_000).state.value == "new", "the retry may go ahead"


def test_another_owners_claim_is_still_in_progress_and_is_not_released_by_others(table, dynamodb, monkeypatch):
    mine, theirs = store(table, dynamodb, monkeypatch), store(table, dynamodb, monkeypatch)
    key = {"source": "/shop", "id": uuid.uuid4().hex}
    assert mine.claim(key, 1).state.value == "new"  # held for 1 ms: expired by the time the other claims it
    time.sleep(0.01)
    assert theirs.claim(key, 30_000).state.value == "new", "taken over"
    busy = mine.claim(key, 30_000)
    assert busy.state.value == "in_progress"
    assert busy.retry_after_s in (29, 30), "a retry is worth it once the other claim's hold ends"
    mine.release(key, "mine expired: the claim is theirs now")
    assert mine.claim(key, 30_000).state.value == "in_progress", "a release only ever deletes its own claim"
    theirs.complete(key, {"topic": "orders", "offset": 7})
    duplicate = mine.claim(key, 30_000)
    assert (duplicate.state.value, duplicate.previous) == ("duplicate", {"topic": "orders", "offset": 7})


def test_a_claim_kept_open_on_purpose_is_not_handed_back_to_the_same_instance(table, dynamodb, monkeypatch):
    """Ingest keeps the claim of an event whose fate is unknown (it may be on the broker) until it expires: a
    retry meanwhile must answer 409 even when it lands on the same execution environment."""
    claims = store(table, dynamodb, monkeypatch)
    key = {"source": "/shop", "id": uuid.uuid4().hex}
    assert claims.claim(key, 30_000).state.value == "new"
    assert claims.claim(key, 30_000).state.value == "in_progress"


def test_a_released_claim_can_be_taken_again(table, dynamodb, monkeypatch):
    first, second = store(table, dynamodb, monkeypatch), store(table, dynamodb, monkeypatch)
    key = {"source": "/shop", "id": uuid.uuid4().hex}
    assert first.claim(key, 30_000).state.value == "new"
    first.release(key, "the broker refused it")
    assert second.claim(key, 30_000).state.value == "new"


def test_an_expired_claim_can_be_taken_over(table, dynamodb, monkeypatch):
    first, second = store(table, dynamodb, monkeypatch), store(table, dynamodb, monkeypatch)
    key = {"source": "/shop", "id": uuid.uuid4().hex}
    assert first.claim(key, 1).state.value == "new"  # held for 1 ms: gone by the next call
    assert second.claim(key, 30_000).state.value == "new"


def test_ingest_accepts_a_unique_event_when_the_store_answers_late(table, slow_proxy, kafka_bootstrap, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", slow_proxy.url)
    ingest = load_function("ingest", "ingest", base_env(kafka_bootstrap, IDEMPOTENCY_TABLE=table), monkeypatch)
    event = cloud_event()
    status, _, body = call(
        ingest, api_request(body=json.dumps(event), headers={"Content-Type": "application/cloudevents+json"})
    )
    assert status == 202, body
    assert len(slow_proxy.requests_for(PUT_ITEM)) >= 2, "the late answer made botocore retry the claim"
    records = read_topic(
        kafka_bootstrap, "orders", 2, 3, accept=lambda message: header(message, "ce_id") == event["id"].encode()
    )
    assert len(records) == 1

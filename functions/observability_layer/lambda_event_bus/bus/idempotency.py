"""Idempotency for the bus's side effects: a repeated unit of work (an event produced by ingest, an event
delivered to one subscription by the consumer) within the window is acknowledged without being done twice.

With a DynamoDB table, each unit of work has one item, keyed by a hash of its key fields: claimed (INPROGRESS,
with a hold time) before the work, COMPLETED with its result once done, deleted when it was not done, so that
a retry can do it. The item layout is Powertools idempotency's (`id`, `status`, `expiration`,
`in_progress_expiration`, `data`), plus a claim token: every claim writes a token of its own and compares it
on conflict, so a claim whose PutItem succeeded but answered late (botocore then retries it and the retry
meets the first write) is recognised as the claimant's own instead of as another request's, and a release
deletes only its own claim. Powertools' persistence layer cannot carry or compare such a token."""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

__all__ = [
    "STORE_UNAVAILABLE",
    "Claim",
    "ClaimState",
    "DynamoDBIdempotency",
    "Idempotency",
    "LocalIdempotency",
    "NoIdempotency",
]

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)
STORE_UNAVAILABLE = "the idempotency store did not answer; nothing was done"


class ClaimState(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    IN_PROGRESS = "in_progress"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    previous: dict[str, Any] | None = None  # the stored delivery of a duplicate
    detail: str | None = None
    retry_after_s: int | None = None  # IN_PROGRESS: when the other claim's hold ends


Key = Mapping[str, str]


class Idempotency(Protocol):
    remote: bool  # each call is a round trip to a store (worth running side by side)

    def claim(self, key: Key, hold_ms: int) -> Claim: ...

    def complete(self, key: Key, result: dict[str, Any]) -> None: ...

    def release(self, key: Key, reason: str) -> None: ...


class NoIdempotency:
    """IDEMPOTENCY_TABLE unset: every unit of work is new."""

    remote = False

    def claim(self, key: Key, hold_ms: int) -> Claim:
        return Claim(ClaimState.NEW)

    def complete(self, key: Key, result: dict[str, Any]) -> None:
        return None

    def release(self, key: Key, reason: str) -> None:
        return None


class LocalIdempotency:
    """Without a table: what this execution environment completed is remembered (bounded, with the TTL), so
    a redelivery to the same environment is skipped. Across environments there is no guarantee: set
    IDEMPOTENCY_TABLE for that."""

    remote = False

    def __init__(self, ttl_s: int, *, max_entries: int = 50_000) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._done: OrderedDict[tuple[tuple[str, str], ...], tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, key: Key, hold_ms: int) -> Claim:
        with self._lock:
            entry = self._done.get(_frozen(key))
            if entry is not None and entry[0] > time.monotonic():
                return Claim(ClaimState.DUPLICATE, previous=entry[1])
        return Claim(ClaimState.NEW)

    def complete(self, key: Key, result: dict[str, Any]) -> None:
        with self._lock:
            self._done[_frozen(key)] = (time.monotonic() + self._ttl_s, result)
            self._done.move_to_end(_frozen(key))
            while len(self._done) > self._max_entries:
                self._done.popitem(last=False)

    def release(self, key: Key, reason: str) -> None:
        return None


def _frozen(key: Key) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(key.items()))


class DynamoDBIdempotency:
    """Claims in a DynamoDB table (IDEMPOTENCY_TABLE): see the module's docstring for the item and the token."""

    IN_PROGRESS, COMPLETED = "INPROGRESS", "COMPLETED"
    remote = True

    def __init__(
        self,
        table: str,
        ttl_s: int,
        *,
        function_name: str,
        key_fields: Sequence[str] = ("source", "id"),
        client: DynamoDBClient | None = None,
    ) -> None:
        self._table = table
        self._ttl_s = ttl_s
        self._prefix = function_name
        self._key_fields = tuple(key_fields)
        self._tokens: dict[str, str] = {}  # item id -> the token of this instance's open claim on it
        self._unanswered: dict[str, str] = {}  # item id -> the token of a claim whose write got no answer
        self._lock = threading.Lock()
        if client is None:
            from lambda_event_bus.bus import aws

            # botocore's defaults (60 s timeouts) could outlast the invocation: fail fast; a retried write is
            # safe because the claim token recognises it
            client = aws.client("dynamodb", aws.fast_config(connect_timeout=1, read_timeout=1))
        self._client = client

    def _item_id(self, key: Key) -> str:
        missing = [name for name in self._key_fields if not key.get(name)]
        if missing:
            raise ValueError(f"idempotency key without {', '.join(missing)}")
        material = json.dumps([key[name] for name in self._key_fields], separators=(",", ":"))
        return f"{self._prefix}#{hashlib.sha256(material.encode()).hexdigest()}"

    def claim(self, key: Key, hold_ms: int) -> Claim:
        item_id = self._item_id(key)
        # a claim whose write got no answer (it may have landed unseen) is tried again with the same token; any
        # other claim gets a new one, so a claim this instance keeps open on purpose is never handed back
        with self._lock:
            unanswered = self._unanswered.pop(item_id, None)
        token = unanswered or uuid.uuid4().hex
        try:
            self._put_claim(item_id, token, hold_ms, condition=CLAIMABLE)
        except Exception as error:
            if _error_code(error) != "ConditionalCheckFailedException":  # down, throttled: do not work blind
                logger.warning("idempotency claim %s failed", dict(key), exc_info=True)
                with self._lock:
                    self._unanswered[item_id] = token
                    _bound(self._unanswered)
                self._withdraw(item_id, token)  # "nothing was done": a claim that landed unseen must not block
                return Claim(ClaimState.UNAVAILABLE, detail=STORE_UNAVAILABLE)
            return self._existing(key, item_id, token, _old_item(error), hold_ms=hold_ms, renew=bool(unanswered))
        self._remember(item_id, token)
        return Claim(ClaimState.NEW)

    def _put_claim(self, item_id: str, token: str, hold_ms: int, *, condition: str) -> None:
        now = time.time()
        self._client.put_item(
            TableName=self._table,
            Item={
                "id": {"S": item_id},
                "status": {"S": self.IN_PROGRESS},
                "expiration": {"N": str(int(now) + self._ttl_s)},
                "in_progress_expiration": {"N": str(int(now * 1000) + max(1, hold_ms))},
                "claim": {"S": token},
            },
            ConditionExpression=condition,
            ExpressionAttributeNames={"#status": "status"},
            # DynamoDB refuses values the expression does not use
            ExpressionAttributeValues={
                name: value
                for name, value in {
                    ":now": {"N": str(int(now))},
                    ":now_ms": {"N": str(int(now * 1000))},
                    ":in_progress": {"S": self.IN_PROGRESS},
                    ":token": {"S": token},
                }.items()
                if name in condition
            },
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )

    def _existing(
        self,
        key: Key,
        item_id: str,
        token: str,
        item: Mapping[str, Any] | None,
        *,
        hold_ms: int,
        renew: bool,
    ) -> Claim:
        """The claim met an item: our own write (a retried PutItem), a completed unit, or another owner's."""
        if item is None:  # an API without ReturnValuesOnConditionCheckFailure: read it
            try:
                item = self._client.get_item(TableName=self._table, Key={"id": {"S": item_id}}, ConsistentRead=True)[
                    "Item"
                ]
            except KeyError:  # expired and removed in between: claim again next time
                return Claim(ClaimState.IN_PROGRESS, detail="the event's idempotency record changed; retry")
            except Exception:
                logger.warning("idempotency record %s could not be read", dict(key), exc_info=True)
                return Claim(ClaimState.UNAVAILABLE, detail=STORE_UNAVAILABLE)
        if _text(item, "claim") == token and _text(item, "status") == self.IN_PROGRESS:
            # ours: botocore retried a write that had succeeded, or an earlier claim's write landed unseen
            if renew:  # that earlier claim's hold is not this one's
                try:
                    self._put_claim(item_id, token, hold_ms, condition=OWN_CLAIM)
                except Exception:
                    logger.warning("idempotency claim %s not renewed", dict(key), exc_info=True)
                    return Claim(ClaimState.UNAVAILABLE, detail=STORE_UNAVAILABLE)
            self._remember(item_id, token)
            return Claim(ClaimState.NEW)
        self._forget(item_id)
        if _text(item, "status") == self.COMPLETED:
            try:
                previous = json.loads(_text(item, "data") or "{}")
            except ValueError:
                previous = {}
            return Claim(ClaimState.DUPLICATE, previous=previous if isinstance(previous, dict) else {})
        held_ms = _number(item, "in_progress_expiration") - time.time() * 1000
        return Claim(
            ClaimState.IN_PROGRESS,
            detail="another request is producing this event; retry later",
            retry_after_s=max(1, math.ceil(held_ms / 1000)),
        )

    def complete(self, key: Key, result: dict[str, Any]) -> None:
        # the work is done: a failure to record it only risks doing it again later, never a loss
        item_id = self._item_id(key)
        self._forget(item_id)
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "id": {"S": item_id},
                    "status": {"S": self.COMPLETED},
                    "expiration": {"N": str(int(time.time()) + self._ttl_s)},
                    "data": {"S": json.dumps(result, separators=(",", ":"), default=str)},
                },
            )
        except Exception:
            logger.warning("idempotency record %s not completed", dict(key), exc_info=True)

    def release(self, key: Key, reason: str) -> None:
        """Delete this instance's own claim on `key` (never another owner's), so that a retry can do the work."""
        item_id = self._item_id(key)
        token = self._forget(item_id)
        if token is not None and not self._withdraw(item_id, token):
            logger.warning("idempotency claim %s not released (%s); it expires with its hold", dict(key), reason)

    def _withdraw(self, item_id: str, token: str) -> bool:
        """Delete the claim if it is still `token`'s; True unless the store did not answer."""
        try:
            self._client.delete_item(
                TableName=self._table,
                Key={"id": {"S": item_id}},
                ConditionExpression="claim = :token",
                ExpressionAttributeValues={":token": {"S": token}},
            )
        except Exception as error:  # taken over after it expired (fine), or the store is down: it expires anyway
            return _error_code(error) == "ConditionalCheckFailedException"
        return True

    def _remember(self, item_id: str, token: str) -> None:
        with self._lock:
            self._tokens[item_id] = token
            _bound(self._tokens)

    def _forget(self, item_id: str) -> str | None:
        with self._lock:
            return self._tokens.pop(item_id, None)


MAX_OPEN_CLAIMS = 10_000
CLAIMABLE = (
    "attribute_not_exists(id) OR expiration < :now OR (#status = :in_progress AND in_progress_expiration < :now_ms)"
)
OWN_CLAIM = "claim = :token AND #status = :in_progress"


def _bound(tokens: dict[str, str]) -> None:
    """Claims never settled (a crash mid-work) expire on their own: forget the oldest past the bound."""
    while len(tokens) > MAX_OPEN_CLAIMS:
        tokens.pop(next(iter(tokens)))


def _error_code(error: Exception) -> str | None:
    response = getattr(error, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def _old_item(error: Exception) -> Mapping[str, Any] | None:
    response = getattr(error, "response", None)
    item = response.get("Item") if isinstance(response, dict) else None
    return item if isinstance(item, Mapping) else None


def _number(item: Mapping[str, Any], name: str) -> float:
    value = item.get(name)
    try:
        return float(value.get("N", 0)) if isinstance(value, Mapping) else 0.0
    except (TypeError, ValueError):
        return 0.0


def _text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return value.get("S") if isinstance(value, Mapping) else None

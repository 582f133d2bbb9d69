"""Lanes: which events of an ordered subscription wait in the retry queue, per key, so that a later event of a
key is never delivered before an earlier one that is parked.

With a DynamoDB table (IDEMPOTENCY_TABLE), each lane that has parked events is one item beside the idempotency
records: `pending` (the parked events' places, `<topic>/<partition>/<offset>`, whose smallest is the lane's
head), `next_attempt_at` (when the head is retried next) and `head_at` (when the head last moved or was
tried; new events joining the lane do not change it). The consumer parks
a lane's new events behind its head; the retry function delivers only the head, and takes it out once
delivered or dead-lettered. A head whose ticket is gone (its message lost) is dropped once it has not changed
for longer than any retry delay could explain, so that its lane cannot stay blocked.

Without a table there is no lane state: ordering then holds within one batch (an event behind a failure of its
key is parked with it), but retried events are delivered as their delays end, possibly after later events of
their key.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from consumer.errors import ConsumerError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)
LaneId = tuple[str, str]  # (subscription name, lane)


class LaneStoreError(ConsumerError):
    """The lane store did not answer."""


@dataclass(frozen=True)
class LaneState:
    pending: frozenset[str]
    next_attempt_at: float = 0.0
    head_at: float = 0.0  # when the head last moved or was attempted

    @property
    def head(self) -> str:
        return min(self.pending)


class Lanes(Protocol):
    tracks_order: bool

    def waiting(self, lanes: Collection[LaneId]) -> dict[LaneId, LaneState]:
        """The lanes among `lanes` that have parked events; raises LaneStoreError."""
        ...

    def join(self, lane: LaneId, seqs: Sequence[str], next_attempt_at: float) -> None:
        """Add parked events to a lane; raises LaneStoreError."""
        ...

    def state(self, lane: LaneId) -> LaneState | None:
        """raises LaneStoreError"""
        ...

    def leave(self, lane: LaneId, seq: str) -> None:
        """Take a delivered or dead-lettered event out of its lane; raises LaneStoreError."""
        ...

    def progress(self, lane: LaneId, next_attempt_at: float) -> None:
        """The head was attempted and is retried at `next_attempt_at` (best effort)."""
        ...

    def drop_stale_head(self, lane: LaneId, state: LaneState) -> bool:
        """Drop the head of `state` if the lane has not changed since; True when it was dropped."""
        ...


class NoLanes:
    """No table: nothing is known across invocations."""

    tracks_order = False

    def waiting(self, lanes: Collection[LaneId]) -> dict[LaneId, LaneState]:
        return {}

    def join(self, lane: LaneId, seqs: Sequence[str], next_attempt_at: float) -> None:
        return None

    def state(self, lane: LaneId) -> LaneState | None:
        return None

    def leave(self, lane: LaneId, seq: str) -> None:
        return None

    def progress(self, lane: LaneId, next_attempt_at: float) -> None:
        return None

    def drop_stale_head(self, lane: LaneId, state: LaneState) -> bool:
        return False


class DynamoDBLanes:
    tracks_order = True

    def __init__(self, table: str, ttl_s: int, client: DynamoDBClient | None = None) -> None:
        self._table = table
        self._ttl_s = ttl_s
        if client is None:
            from lambda_event_bus.bus import aws

            client = aws.client("dynamodb", aws.fast_config(connect_timeout=1, read_timeout=2))
        self._client = client

    @staticmethod
    def item_id(lane: LaneId) -> str:
        return "lane#" + hashlib.sha256("\n".join(lane).encode()).hexdigest()

    def waiting(self, lanes: Collection[LaneId]) -> dict[LaneId, LaneState]:
        by_id = {self.item_id(lane): lane for lane in lanes}
        ids = list(by_id)
        found: dict[LaneId, LaneState] = {}
        for start in range(0, len(ids), 100):
            keys: list[dict[str, Any]] = [{"id": {"S": item_id}} for item_id in ids[start : start + 100]]
            for _ in range(5):  # what DynamoDB leaves unprocessed is asked again
                try:
                    response = self._client.batch_get_item(
                        RequestItems={self._table: {"Keys": keys, "ConsistentRead": True}}
                    )
                except Exception as error:
                    raise LaneStoreError(f"the lane store did not answer: {type(error).__name__}") from error
                for item in response.get("Responses", {}).get(self._table, []):
                    state = _state(item)
                    if state is not None:
                        found[by_id[item["id"]["S"]]] = state
                unprocessed = response.get("UnprocessedKeys") or {}
                keys = list(unprocessed[self._table]["Keys"]) if self._table in unprocessed else []
                if not keys:
                    break
            else:
                raise LaneStoreError("the lane store left keys unprocessed")
        return found

    def join(self, lane: LaneId, seqs: Sequence[str], next_attempt_at: float) -> None:
        now = time.time()
        self._update(
            lane,
            "ADD pending :seqs SET expiration = :expiration, head_at = if_not_exists(head_at, :now),"
            " next_attempt_at = if_not_exists(next_attempt_at, :next)",
            {
                ":seqs": {"SS": list(seqs)},
                ":now": {"N": f"{now:.3f}"},
                ":expiration": {"N": str(int(now) + self._ttl_s)},
                ":next": {"N": f"{next_attempt_at:.3f}"},
            },
        )

    def state(self, lane: LaneId) -> LaneState | None:
        try:
            item = self._client.get_item(
                TableName=self._table, Key={"id": {"S": self.item_id(lane)}}, ConsistentRead=True
            ).get("Item")
        except Exception as error:
            raise LaneStoreError(f"the lane store did not answer: {type(error).__name__}") from error
        return _state(item) if item else None

    def leave(self, lane: LaneId, seq: str) -> None:
        self._update(lane, "DELETE pending :seq SET head_at = :now", {":seq": {"SS": [seq]}, **_now()})

    def progress(self, lane: LaneId, next_attempt_at: float) -> None:
        try:
            self._update(
                lane,
                "SET next_attempt_at = :next, head_at = :now",
                {":next": {"N": f"{next_attempt_at:.3f}"}, **_now()},
            )
        except LaneStoreError:
            logger.warning("lane %s: its next attempt was not recorded", lane[0], exc_info=True)

    def drop_stale_head(self, lane: LaneId, state: LaneState) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"id": {"S": self.item_id(lane)}},
                UpdateExpression="DELETE pending :seq SET head_at = :now",
                ConditionExpression="head_at = :seen",
                ExpressionAttributeValues={
                    ":seq": {"SS": [state.head]},
                    ":seen": {"N": f"{state.head_at:.3f}"},
                    **_now(),
                },
            )
        except Exception as error:
            code = getattr(error, "response", {}).get("Error", {}).get("Code")
            if code == "ConditionalCheckFailedException":
                return False  # it moved meanwhile: not stale
            raise LaneStoreError(f"the lane store did not answer: {type(error).__name__}") from error
        return True

    def _update(self, lane: LaneId, expression: str, values: Mapping[str, Any]) -> None:
        """`expression` on the lane's item; one that is gone (expired, or never joined) is left alone, except by
        `join`, which makes it."""
        condition = {} if expression.startswith("ADD pending") else {"ConditionExpression": "attribute_exists(id)"}
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"id": {"S": self.item_id(lane)}},
                UpdateExpression=expression,
                ExpressionAttributeValues=dict(values),
                **condition,  # type: ignore[arg-type]
            )
        except Exception as error:
            if getattr(error, "response", {}).get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return
            raise LaneStoreError(f"the lane store did not answer: {type(error).__name__}") from error


def _now() -> dict[str, Any]:
    return {":now": {"N": f"{time.time():.3f}"}}


def _state(item: Mapping[str, Any]) -> LaneState | None:
    pending = item.get("pending", {}).get("SS") or []
    if not pending:
        return None
    return LaneState(
        pending=frozenset(pending),
        next_attempt_at=float(item.get("next_attempt_at", {}).get("N", 0)),
        head_at=float(item.get("head_at", {}).get("N", 0)),
    )

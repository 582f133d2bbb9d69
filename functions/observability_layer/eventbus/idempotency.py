"""Idempotency for the bus's side effects: a repeated unit of work (an event produced by ingest, an event
delivered to one subscription by the consumer) within the window is acknowledged without being done twice.

Powertools' DynamoDB persistence layer keeps the records, keyed by a hash of the key fields: claimed
(INPROGRESS) before the work, COMPLETED with its result once done, deleted when it was not done, so that a
retry can do it."""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

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


Key = Mapping[str, str]


class Idempotency(Protocol):
    def claim(self, key: Key, hold_ms: int) -> Claim: ...

    def complete(self, key: Key, result: dict[str, Any]) -> None: ...

    def release(self, key: Key, reason: str) -> None: ...


class NoIdempotency:
    """IDEMPOTENCY_TABLE unset: every unit of work is new."""

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
    def __init__(
        self, table: str, ttl_s: int, *, function_name: str, key_fields: Sequence[str] = ("source", "id")
    ) -> None:
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
        from botocore.config import Config

        # botocore's defaults (60 s timeouts, retries) could outlast the invocation: fail fast instead
        boto_config = Config(connect_timeout=1, read_timeout=1, retries={"max_attempts": 2, "mode": "standard"})
        self._store: BasePersistenceLayer = DynamoDBPersistenceLayer(table_name=table, boto_config=boto_config)
        config = IdempotencyConfig(
            event_key_jmespath=f"[{', '.join(key_fields)}]",
            expires_after_seconds=ttl_s,
            raise_on_no_idempotency_key=True,
        )
        self._store.configure(config, function_name=function_name)

    def claim(self, key: Key, hold_ms: int) -> Claim:
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyItemAlreadyExistsError,
            IdempotencyItemNotFoundError,
        )

        data = dict(key)
        try:
            self._store.save_inprogress(data, remaining_time_in_millis=hold_ms)
        except IdempotencyItemAlreadyExistsError as exists:
            try:
                record = exists.old_data_record or self._store.get_record(data)
            except IdempotencyItemNotFoundError:  # expired and removed in between: claim again next time
                return Claim(ClaimState.IN_PROGRESS, detail="the event's idempotency record changed; retry")
            except Exception:
                logger.warning("idempotency record %s could not be read", data, exc_info=True)
                return Claim(ClaimState.UNAVAILABLE, detail=STORE_UNAVAILABLE)
            if record is not None and record.status == "COMPLETED":
                return Claim(ClaimState.DUPLICATE, previous=record.response_json_as_dict() or {})
            return Claim(ClaimState.IN_PROGRESS, detail="another request is producing this event; retry later")
        except Exception:  # the store is down or throttling: do not produce blind
            logger.warning("idempotency claim %s failed", data, exc_info=True)
            return Claim(ClaimState.UNAVAILABLE, detail=STORE_UNAVAILABLE)
        return Claim(ClaimState.NEW)

    def complete(self, key: Key, result: dict[str, Any]) -> None:
        # the work is done: a failure to record it only risks doing it again later, never a loss
        try:
            self._store.save_success(dict(key), result)
        except Exception:
            logger.warning("idempotency record %s not completed", dict(key), exc_info=True)

    def release(self, key: Key, reason: str) -> None:
        try:
            self._store.delete_record(dict(key), RuntimeError(reason))
        except Exception:  # the INPROGRESS record expires on its own
            logger.warning("idempotency claim %s not released", dict(key), exc_info=True)

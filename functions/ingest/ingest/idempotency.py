"""Idempotent ingest: a repeated event (same source and id) within the window is acknowledged without
being produced twice. Powertools' DynamoDB persistence layer keeps the records: claimed (INPROGRESS)
before producing, COMPLETED with the delivery once the broker acknowledged, deleted when it did not, so a
retry can produce it."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

logger = logging.getLogger(__name__)
STORE_UNAVAILABLE = "the idempotency store did not answer; the event was not produced"


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


class Idempotency(Protocol):
    def claim(self, source: str, event_id: str, remaining_ms: int) -> Claim: ...

    def complete(self, source: str, event_id: str, delivery: dict[str, Any]) -> None: ...

    def release(self, source: str, event_id: str, reason: str) -> None: ...


class NoIdempotency:
    """IDEMPOTENCY_TABLE unset: every event is new."""

    def claim(self, source: str, event_id: str, remaining_ms: int) -> Claim:
        return Claim(ClaimState.NEW)

    def complete(self, source: str, event_id: str, delivery: dict[str, Any]) -> None:
        return None

    def release(self, source: str, event_id: str, reason: str) -> None:
        return None


class DynamoDBIdempotency:
    def __init__(self, table: str, ttl_s: int, *, function_name: str) -> None:
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
        from botocore.config import Config

        # botocore's defaults (60 s timeouts, retries) could outlast the invocation: fail fast instead
        boto_config = Config(connect_timeout=1, read_timeout=1, retries={"max_attempts": 2, "mode": "standard"})
        self._store: BasePersistenceLayer = DynamoDBPersistenceLayer(table_name=table, boto_config=boto_config)
        config = IdempotencyConfig(
            event_key_jmespath="[source, id]", expires_after_seconds=ttl_s, raise_on_no_idempotency_key=True
        )
        self._store.configure(config, function_name=function_name)

    def claim(self, source: str, event_id: str, remaining_ms: int) -> Claim:
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyItemAlreadyExistsError,
            IdempotencyItemNotFoundError,
        )

        data = {"source": source, "id": event_id}
        try:
            self._store.save_inprogress(data, remaining_time_in_millis=remaining_ms)
        except IdempotencyItemAlreadyExistsError as exists:
            try:
                record = exists.old_data_record or self._store.get_record(data)
            except IdempotencyItemNotFoundError:  # expired and removed in between: claim again next time
                return Claim(ClaimState.IN_PROGRESS, detail="the event's idempotency record changed; retry")
            except Exception:
                logger.warning("idempotency record of %s/%s could not be read", source, event_id, exc_info=True)
                return Claim(ClaimState.UNAVAILABLE, detail=STORE_UNAVAILABLE)
            if record is not None and record.status == "COMPLETED":
                return Claim(ClaimState.DUPLICATE, previous=record.response_json_as_dict() or {})
            return Claim(ClaimState.IN_PROGRESS, detail="another request is producing this event; retry later")
        except Exception:  # the store is down or throttling: do not produce blind
            logger.warning("idempotency claim of %s/%s failed", source, event_id, exc_info=True)
            return Claim(ClaimState.UNAVAILABLE, detail=STORE_UNAVAILABLE)
        return Claim(ClaimState.NEW)

    def complete(self, source: str, event_id: str, delivery: dict[str, Any]) -> None:
        # the event is on Kafka: a failure to record it only risks a duplicate later, never a loss
        try:
            self._store.save_success({"source": source, "id": event_id}, delivery)
        except Exception:
            logger.warning("idempotency record of %s/%s not completed", source, event_id, exc_info=True)

    def release(self, source: str, event_id: str, reason: str) -> None:
        try:
            self._store.delete_record({"source": source, "id": event_id}, RuntimeError(reason))
        except Exception:  # the INPROGRESS record expires on its own
            logger.warning("idempotency claim of %s/%s not released", source, event_id, exc_info=True)

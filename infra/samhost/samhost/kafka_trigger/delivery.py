"""One polled batch through the function, with the error handling of a Kafka event source mapping in provisioned
mode: partial batch responses, retries with backoff, bisection on function errors, a maximum record age and
the on-failure destination. No Kafka here: the poller feeds records in and commits what comes back done."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from samhost.kafka_trigger.batches import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    Attempts,
    DeadLetter,
    ItemFailures,
    Partition,
    Position,
    Record,
    ResponseContext,
    event_for,
    halves,
    item_failures,
    spans,
    split_at_failures,
)
from samhost.kafka_trigger.mappings import INFINITE, KafkaMapping

logger = logging.getLogger("samhost.kafka_trigger")


@dataclass(frozen=True)
class InvokeResult:
    """A synchronous invocation's answer: `function_error` set (Unhandled, Handled) when the function failed."""

    status_code: int
    payload: bytes
    function_error: str | None = None
    executed_version: str = "$LATEST"
    request_id: str = ""


class FunctionFailedError(Exception):
    """The function may have run and did not answer (its read timeout passed) or the invoke was refused for its
    payload: counts as a failed attempt. Any other exception from an invoker means the function did not run."""


class Invoker(Protocol):
    def invoke(self, function_name: str, payload: bytes, *, timeout_s: float) -> InvokeResult: ...


class FailureDestination(Protocol):
    """Where records go that the trigger gives up on; raises when they could not be stored."""

    def send(self, letter: DeadLetter) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff between retries of a failing batch, as Lambda's pollers back off."""

    base_delay_s: float = 0.5
    max_delay_s: float = 20.0

    def delay(self, attempt: int) -> float:
        if attempt <= 0 or self.base_delay_s <= 0:
            return 0.0
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class DeliveryReport:
    """`done`: records that succeeded or were dead-lettered (safe to commit). `redeliver_after_s`: how long to
    wait before reading again when some records wait for redelivery (partial failures, destination down)."""

    done: frozenset[Position]
    redeliver_after_s: float = 0.0


@dataclass
class _Run:
    done: set[Position]
    waiting: set[Partition]  # partitions with an undone record: their later records are read again
    redeliver_after_s: float = 0.0
    invoke_failures: int = 0

    def wait(self, records: Sequence[Record], delay_s: float) -> None:
        self.waiting.update(record.position.of for record in records)
        self.redeliver_after_s = max(self.redeliver_after_s, delay_s)


class Delivery:
    def __init__(
        self,
        mapping: KafkaMapping,
        invoker: Invoker,
        destination: FailureDestination | None,
        *,
        attempts: Attempts,
        stop: threading.Event,
        retry: RetryPolicy,
        invoke_timeout_margin_s: float = 10.0,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.mapping = mapping
        self.invoker = invoker
        self.destination = destination
        self.attempts = attempts
        self.stop = stop
        self.retry = retry
        self.invoke_timeout_s = mapping.function_timeout_s + invoke_timeout_margin_s
        self.now_ms = now_ms
        self._destination_failures = 0  # in a row: the wait before trying the destination again grows

    def deliver(self, records: Sequence[Record]) -> DeliveryReport:
        """Invoke until every record is done or waits for redelivery, or until asked to stop (what is not done by
        then is read again by whoever polls next)."""
        run = _Run(done=set(), waiting=set())
        work = [list(records)]  # a stack: bisection puts the first half on top, so partitions keep their order
        while work and not self.stop.is_set():
            batch = [record for record in work.pop() if record.position.of not in run.waiting]
            batch = self._give_up_on_expired(batch, run)
            if batch:
                self._invoke(batch, run, work)
        return DeliveryReport(frozenset(run.done), run.redeliver_after_s if run.waiting else 0.0)

    # records past their retries or their age go to the destination without another invoke

    def _give_up_on_expired(self, batch: list[Record], run: _Run) -> list[Record]:
        now_ms = self.now_ms()
        too_old = [record for record in batch if self._too_old(record, now_ms)]
        exhausted = [record for record in batch if record not in too_old and self._exhausted(record)]
        for candidates, condition in ((too_old, RECORD_AGE_EXCEEDED), (exhausted, RETRY_ATTEMPTS_EXHAUSTED)):
            # behind a record whose send failed, a partition waits: its later records are read again
            group = [record for record in candidates if record.position.of not in run.waiting]
            if not group:
                continue
            if self._dead_letter(group, condition):
                run.done.update(record.position for record in group)
            else:
                run.wait(group, self.retry.delay(self._destination_failures))
        given_up = {id(record) for record in (*too_old, *exhausted)}
        return [record for record in batch if id(record) not in given_up and record.position.of not in run.waiting]

    def _too_old(self, record: Record, now_ms: int) -> bool:
        age = record.age_s(now_ms)
        return self.mapping.max_record_age_s != INFINITE and age is not None and age > self.mapping.max_record_age_s

    def _exhausted(self, record: Record) -> bool:
        limit = self.mapping.retry_limit
        return limit is not None and self.attempts.count(record) > limit

    def _dead_letter(self, records: list[Record], condition: str) -> bool:
        """True when the records are stored (or there is no destination: Lambda then discards them)."""
        counts = [self.attempts.count(record) for record in records]
        last = next(
            (self.attempts.last[record.position] for record in records if record.position in self.attempts.last),
            ResponseContext(),
        )
        letter = DeadLetter(
            records=tuple(records),
            condition=condition,
            function_arn=self.mapping.function_arn,
            bootstrap_servers=self.mapping.bootstrap_servers,
            invoke_count=max(counts),
            response=last,
        )
        if self.destination is None:
            logger.warning(
                "%s %s: %s, discarded (no on-failure destination)", self.mapping.logical_id, spans(records), condition
            )
            return True
        try:
            self.destination.send(letter)
        except Exception as error:
            self._destination_failures += 1
            logger.warning(
                "%s %s: %s, the on-failure destination failed (%s); not committed, tried again later",
                self.mapping.logical_id,
                spans(records),
                condition,
                error,
            )
            return False
        self._destination_failures = 0
        logger.info(
            "%s %s: %s, sent to %s",
            self.mapping.logical_id,
            spans(records),
            condition,
            self.mapping.on_failure_destination,
        )
        return True

    # one invocation

    def _invoke(self, batch: list[Record], run: _Run, work: list[list[Record]]) -> None:
        payload = json.dumps(event_for(batch, self.mapping.bootstrap_servers), separators=(",", ":")).encode()
        try:
            result = self.invoker.invoke(self.mapping.function_name, payload, timeout_s=self.invoke_timeout_s)
        except FunctionFailedError as error:
            result = InvokeResult(status_code=0, payload=b"", function_error=f"Unhandled ({error})")
        except Exception as error:  # the function did not run: retried until the records are too old
            run.invoke_failures += 1
            delay = self.retry.delay(run.invoke_failures)
            self._log(batch, f"invoke failed ({type(error).__name__}: {error}), again in {delay:.1f}s")
            work.append(batch)
            self.stop.wait(delay)
            return
        run.invoke_failures = 0
        response = ResponseContext(
            result.status_code, result.executed_version, result.function_error, result.request_id
        )
        if result.function_error is not None:
            self._function_error(batch, work, response)
            return
        failures = self._item_failures(result, batch)
        if failures.invalid is not None:
            self._whole_batch_failed(batch, work, response, f"invalid partial batch response: {failures.invalid}")
        elif failures.positions:
            done, again = split_at_failures(batch, failures.positions)
            run.done.update(record.position for record in done)
            failed = [record for record in again if record.position in failures.positions]
            self.attempts.failed(failed, response)
            run.wait(again, self.retry.delay(max(self.attempts.count(record) for record in failed)))
            self._log(batch, f"partial: {len(failed)} failed, redelivered from {spans(again)}")
        else:
            run.done.update(record.position for record in batch)
            self._log(batch, "ok")

    def _item_failures(self, result: InvokeResult, batch: Sequence[Record]) -> ItemFailures:
        if not self.mapping.reports_batch_item_failures or not result.payload.strip():
            return ItemFailures()
        try:
            answer = json.loads(result.payload)
        except ValueError:
            return ItemFailures(frozenset(record.position for record in batch), "not JSON")
        return item_failures(answer, batch)

    def _function_error(self, batch: list[Record], work: list[list[Record]], response: ResponseContext) -> None:
        if self.mapping.bisect_on_error and len(batch) > 1:
            first, second = halves(batch)
            work.extend([second, first])  # bisection does not count as a retry (as Lambda documents)
            self._log(batch, f"function error {response.function_error}, bisected")
            return
        # retried here and now (not redelivered through Kafka), so that the halves keep their order
        self._whole_batch_failed(batch, work, response, f"function error {response.function_error}")

    def _whole_batch_failed(
        self, batch: list[Record], work: list[list[Record]], response: ResponseContext, reason: str
    ) -> None:
        self.attempts.failed(batch, response)
        attempt = max(self.attempts.count(record) for record in batch)
        limit = self.mapping.retry_limit
        self._log(batch, f"{reason}, attempt {attempt} of {'unbounded' if limit is None else limit + 1}")
        work.append(batch)
        if not all(self._exhausted(record) for record in batch):
            self.stop.wait(self.retry.delay(attempt))

    def _log(self, batch: Sequence[Record], outcome: str) -> None:
        logger.info(
            "%s %s %s (%d records): %s",
            self.mapping.logical_id,
            self.mapping.function_name,
            spans(batch),
            len(batch),
            outcome,
        )

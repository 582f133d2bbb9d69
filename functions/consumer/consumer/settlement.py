"""Settling attempts, shared by the consumer and the retry function: every delivery ends delivered, parked in
the retry queue (with its lane), or dead-lettered with the reason; its idempotency claim is completed (it
must not happen again) or released (a retry may do it); each outcome is counted in `deliveries_total`."""

from __future__ import annotations

import dataclasses
import enum
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from lambda_event_bus.bus.idempotency import Idempotency
from lambda_event_bus.telemetry import Telemetry

from consumer.dead_letters import DeadLetter, DeadLetterQueue
from consumer.deliveries import Attempt, Delivery, Status
from consumer.lanes import Lanes, LaneStoreError
from consumer.parking import RetryQueue, Ticket
from consumer.targets import DeliveryError

SETTLE_CONCURRENCY = 16  # claim completions and dead letters in flight at once
T = TypeVar("T")


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    PARKED = "parked"  # in the retry queue
    DEAD_LETTERED = "dead_lettered"
    UNSETTLED = "unsettled"  # neither parked nor dead-lettered (SQS did not answer): the source must retry it


@dataclass(frozen=True)
class Parking:
    """A delivery to park: its ticket, the delay, and why (the reason a dead letter gives if parking fails)."""

    attempt: Attempt
    ticket: Ticket
    delay_s: int


class Settler:
    def __init__(
        self,
        telemetry: Telemetry,
        *,
        idempotency: Idempotency,
        dead_letters: DeadLetterQueue,
        retry_queue: RetryQueue,
        lanes: Lanes,
    ) -> None:
        self.telemetry = telemetry
        self.idempotency = idempotency
        self.dead_letters = dead_letters
        self.retry_queue = retry_queue
        self.lanes = lanes
        self._pool: ThreadPoolExecutor | None = None  # for delivered_all, kept for the environment's life

    def delivered_all(
        self, attempts: Sequence[Attempt], then: Callable[[Attempt], None] | None = None
    ) -> list[tuple[Attempt, Outcome]]:
        """Settle delivered (and duplicate) attempts side by side: each claim's completion is a write of its
        own, and a batch has up to thousands (one after another they would take seconds of the invocation).
        `then` runs after each one's completion, in the same worker."""

        def one(attempt: Attempt) -> tuple[Attempt, Outcome]:
            if attempt.claimed:
                self.idempotency.complete(attempt.delivery.idempotency_key, {"delivered_at": time.time()})
            outcome = Outcome.DUPLICATE if attempt.status is Status.DUPLICATE else Outcome.DELIVERED
            self.count(attempt.delivery, outcome, attempt.seconds)
            if then is not None:
                then(attempt)
            return attempt, outcome

        if not self.idempotency.remote or not any(attempt.claimed for attempt in attempts):
            return [one(attempt) for attempt in attempts]  # nothing to wait for: no thread hand-offs
        return self.side_by_side([functools.partial(one, attempt) for attempt in attempts])

    def side_by_side(self, jobs: Sequence[Callable[[], T]]) -> list[T]:
        """Run settling jobs (each a write or two: a claim's completion, a dead letter) SETTLE_CONCURRENCY at
        a time; their results in order."""
        if len(jobs) <= 1:
            return [job() for job in jobs]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(SETTLE_CONCURRENCY, thread_name_prefix="settle")
        return list(self._pool.map(lambda job: job(), jobs))

    def dead_letter(
        self,
        attempt: Attempt,
        reason: str,
        *,
        attempts: int,
        first_failed_at: float | None = None,
        error_event_id: str | None = None,
        ticket: Ticket | None = None,
    ) -> Outcome:
        """The delivery's dead letter, with `reason`, the attempts made and the last error. With the `ticket` it
        was parked with: once the letter is stored, its lane goes on (unsettled, it keeps its place)."""
        delivery = attempt.delivery
        event = delivery.event
        if error_event_id is None:
            context = {"event_type": event.get_type(), "source": event.get_source(), "event_id": event.get_id()}
            error_event_id = self.telemetry.capture_error(
                DeliveryError(reason, transient=False), "consumer", f"deliver {delivery.subscription.name}", context
            )
        letter = DeadLetter.of(
            delivery.raw,
            reason,
            error_event_id,
            subscription=delivery.subscription.name,
            event={"id": event.get_id(), "type": event.get_type(), "source": event.get_source()},
            attempts=attempts,
            last_error=attempt.error.reason if attempt.error is not None else None,
            first_failed_at=first_failed_at,
        )
        if not self.send_letter(letter):
            self.release(attempt, reason)
            self.count(delivery, Outcome.UNSETTLED, attempt.seconds)
            return Outcome.UNSETTLED
        if attempt.claimed:  # settled: a redelivery must neither send it nor dead-letter it again
            self.idempotency.complete(delivery.idempotency_key, {"dead_lettered_at": time.time(), "reason": reason})
        self.count(delivery, Outcome.DEAD_LETTERED, attempt.seconds)
        if ticket is not None:
            self.leave(delivery, ticket)
        return Outcome.DEAD_LETTERED

    def send_letter(self, letter: DeadLetter) -> bool:
        try:
            self.dead_letters.send(letter)
        except Exception as error:
            self.telemetry.capture_error(
                error, "consumer", "dead-letter", {"topic": letter.topic, "offset": letter.offset}
            )
            return False
        return True

    def park(self, parkings: Sequence[Parking], *, join_lanes: bool = True) -> list[Outcome]:
        """Put each delivery in the retry queue (joining its lane first, so that nothing overtakes it); one
        that cannot be parked is dead-lettered with why."""
        tickets = list(parkings)
        if join_lanes and self.lanes.tracks_order:
            tickets = self._join_lanes(parkings)
        errors = self.retry_queue.send(
            [(p.ticket, p.delay_s, self._message_attributes(p.attempt.delivery)) for p in tickets]
        )
        outcomes: list[Outcome] = []
        for parking, error in zip(tickets, errors, strict=True):
            attempt = parking.attempt
            if error is None:
                self.release(attempt, "parked for a retry")
                self.count(attempt.delivery, Outcome.PARKED, attempt.seconds)
                outcomes.append(Outcome.PARKED)
                continue
            last = f"; last error: {attempt.error.reason}" if attempt.error is not None else ""
            reason = f"delivery to {attempt.delivery.subscription.name} could not be parked for a retry ({error}){last}"
            outcome = self.dead_letter(
                attempt,
                reason,
                attempts=parking.ticket.attempts,
                first_failed_at=parking.ticket.first_failed_at,
                ticket=parking.ticket,
            )
            outcomes.append(outcome)
        return outcomes

    def _join_lanes(self, parkings: Sequence[Parking]) -> list[Parking]:
        by_lane: dict[tuple[str, str], list[Parking]] = {}
        for parking in parkings:
            if parking.ticket.ordered:
                by_lane.setdefault((parking.ticket.subscription, parking.ticket.lane), []).append(parking)
        unordered: set[int] = set()
        for lane, members in by_lane.items():
            next_attempt = time.time() + min(p.delay_s for p in members)
            try:
                self.lanes.join(lane, [p.ticket.seq for p in members], next_attempt)
            except LaneStoreError:
                # parked all the same (nothing is lost); its retry may then overtake or follow others of its key
                self.telemetry.logger.warning(
                    "lane of %s not recorded: %d parked events of one key may be retried out of order",
                    lane[0],
                    len(members),
                    exc_info=True,
                )
                unordered.update(id(p) for p in members)
        return [Parking(p.attempt, _unordered(p.ticket), p.delay_s) if id(p) in unordered else p for p in parkings]

    def _leave(self, delivery: Delivery, ticket: Ticket) -> None:
        try:
            self.lanes.leave((ticket.subscription, ticket.lane), ticket.seq)
        except LaneStoreError:
            self.telemetry.logger.warning(
                "lane of %s not updated: its next event waits until the lane is found stale",
                delivery.subscription.name,
                exc_info=True,
            )

    def leave(self, delivery: Delivery, ticket: Ticket) -> None:
        if ticket.ordered and self.lanes.tracks_order:
            self._leave(delivery, ticket)

    def release(self, attempt: Attempt, reason: str) -> None:
        if attempt.claimed:
            self.idempotency.release(attempt.delivery.idempotency_key, reason)

    def _message_attributes(self, delivery: Delivery) -> Mapping[str, str]:
        return {
            **self.telemetry.http_headers(delivery.parent),
            "subscription": delivery.subscription.name,
            "ce_id": delivery.event.get_id(),
        }

    def count(self, delivery: Delivery, outcome: Outcome, seconds: float) -> None:
        labels = {"subscription": delivery.subscription.name, "target_type": delivery.subscription.target.type}
        self.telemetry.metrics.inc("deliveries_total", 1.0, outcome=outcome.value, **labels)
        if outcome in (Outcome.DELIVERED, Outcome.DEAD_LETTERED) and seconds:
            self.telemetry.metrics.observe("delivery_duration_seconds", seconds, **labels)


def _unordered(ticket: Ticket) -> Ticket:
    return dataclasses.replace(ticket, ordered=False)

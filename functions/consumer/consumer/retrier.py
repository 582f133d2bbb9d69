"""The retry path of KafkaConsumerFunction (`app.handler` hands it the SQS batches of its `RetryQueueTickets`
event): tickets from the retry queue, each one delivery tried again when its delay ends, up to 100 per batch
side by side.

- A ticket whose retry window ended before it came back (a backed-up queue) -> DLQ, no attempt.
- Delivered (or found delivered before) -> done, and its lane moves on to the next event.
- Refused by the target -> DLQ with the reason.
- Failed again -> parked again with the next step of the backoff; once the subscription's retry policy is
  used up (`maximum_retry_attempts`, or the event is `maximum_event_age_seconds` old) -> DLQ once, with the
  reason, the attempts made, when the first failed and the last error.
- An ordered ticket that is not its lane's head waits: it is parked again until the head's next retry,
  without counting an attempt.
- A message that is not a ticket, or names a subscription that no longer exists -> DLQ with the reason.
- Only what can be neither parked again nor dead-lettered is reported in `batchItemFailures`: SQS then
  redelivers the message after its visibility timeout (and the queue's redrive policy is the last resort).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from lambda_event_bus.base import LambdaContext
from lambda_event_bus.telemetry import Telemetry
from opentelemetry.trace import SpanKind

from consumer.dead_letters import DeadLetter
from consumer.decoding import PoisonRecordError, read_record, to_cloud_event
from consumer.deliveries import Attempt, Delivery, Status
from consumer.engine import DeliveryEngine
from consumer.lanes import LaneId, LaneState, LaneStoreError
from consumer.parking import Backoff, Ticket
from consumer.settings import ConsumerSettings
from consumer.settlement import Outcome, Parking, Settler
from consumer.targets import DeliveryError

RESERVE_S = 2.0


@dataclass(frozen=True)
class _Ticketed:
    """One retry message read: its ticket, the delivery it stands for, and when its retry window ends."""

    ticket: Ticket
    delivery: Delivery
    window_ends_at: float  # unix time
    index: int  # its place in the SQS batch

    def window_left(self) -> float:
        return self.window_ends_at - time.time()


class Retrier:
    def __init__(
        self, settings: ConsumerSettings, telemetry: Telemetry, *, engine: DeliveryEngine, settler: Settler
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.engine = engine
        self.settler = settler
        self.backoff = Backoff(settings.retry_base_delay_s, settings.retry_max_delay_s)
        self.subscriptions = {subscription.name: subscription for subscription in settings.subscriptions}
        # longer than any delay between two attempts at a lane's head: a head unchanged for this long is lost
        self.stale_after_s = 2 * settings.retry_max_delay_s + 120

    def handle(self, event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
        """The batch's tickets side by side: read them, look up their lanes at once, deliver those whose turn
        it is in one run of the engine (each subscription's lanes concurrently), then settle each."""
        messages = [record for record in event.get("Records") or [] if isinstance(record, Mapping)]
        time_left = context.get_remaining_time_in_millis() / 1000 if context is not None else 60.0
        deadline = time.monotonic() + time_left - self.settings.webhook_timeout_s - RESERVE_S
        settled: list[bool] = []
        with ExitStack() as spans:
            work: list[_Ticketed] = []
            for index, message in enumerate(messages):
                if time.monotonic() >= deadline:  # back to the queue as they are: SQS shows them again
                    settled.append(False)
                    continue
                read = self._read(message, index, spans)
                settled.append(read if isinstance(read, bool) else False)
                if not isinstance(read, bool):
                    work.append(read)
            for item, ok in self._run(work, deadline, int(time_left * 1000) + 1000):
                settled[item.index] = ok
        failures = [
            {"itemIdentifier": message.get("messageId")}
            for message, ok in zip(messages, settled, strict=True)
            if not ok
        ]
        return {"batchItemFailures": failures}

    def _read(self, message: Mapping[str, Any], index: int, spans: ExitStack) -> _Ticketed | bool:
        """The message's ticket and delivery (the `index`-th of the batch), in a span of its own; True/False when
        it is settled already (dead-lettered as unreadable) or must come back."""
        parent = self.telemetry.context_from_http_headers(_attribute_strings(message))
        span = spans.enter_context(self.telemetry.span("retry delivery", kind=SpanKind.CONSUMER, context=parent))
        try:
            ticket = Ticket.parse(str(message.get("body", "")))
        except ValueError as error:
            return self._unreadable(message, f"the retry message is not a ticket: {error}")
        span.set_attribute("eventbus.subscription", ticket.subscription)
        span.set_attribute("eventbus.attempt", ticket.attempts + 1)
        subscription = self.subscriptions.get(ticket.subscription)
        if subscription is None:
            return self._unreadable(message, f"subscription {ticket.subscription!r} no longer exists")
        try:
            raw = read_record(ticket.record)
            cloud_event = to_cloud_event(
                raw, max_bytes=self.settings.max_record_bytes, plain_event_type=self.settings.default_event_type
            )
        except PoisonRecordError as poison:
            return self._unreadable(message, f"the ticket's record no longer decodes: {poison.reason}")
        if cloud_event is None:
            return True
        span.set_attribute("messaging.message.id", cloud_event.get_id())
        born = raw.timestamp_ms / 1000 if raw.timestamp_ms else ticket.first_failed_at
        window_ends_at = born + subscription.retry.maximum_event_age_s
        return _Ticketed(ticket, Delivery(subscription, raw, cloud_event, parent), window_ends_at, index)

    def _run(self, work: Sequence[_Ticketed], deadline: float, hold_ms: int) -> Iterator[tuple[_Ticketed, bool]]:
        states = self._lane_states(work)
        waits: list[tuple[_Ticketed, Parking]] = []
        ready: list[_Ticketed] = []
        for item in work:
            window_left = item.window_left()
            if window_left <= 0:  # the window ended before this attempt (a backed-up queue): no attempt
                yield item, self._expired(item)
                continue
            wait = self._turn(item.ticket, states, window_left)
            if wait is None:
                ready.append(item)
                continue
            attempt = Attempt(
                item.delivery, Status.HELD, DeliveryError("waiting behind an earlier event of its key", transient=True)
            )
            waits.append((item, Parking(attempt, item.ticket, min(wait, int(window_left) + 1))))
        ready.sort(key=lambda item: item.delivery.seq)  # one lane's tickets in its order
        attempts = self.engine.run([item.delivery for item in ready], deadline=deadline, hold_ms=hold_ms)
        by_delivery = {id(item.delivery): item for item in ready}
        done = [attempt for attempt in attempts if attempt.done]
        for attempt, outcome in self.settler.delivered_all(
            done, then=lambda attempt: self.settler.leave(attempt.delivery, by_delivery[id(attempt.delivery)].ticket)
        ):
            yield by_delivery[id(attempt.delivery)], outcome is not Outcome.UNSETTLED
        for attempt in attempts:
            if attempt.done:
                continue
            item = by_delivery[id(attempt.delivery)]
            settled = self._settle(attempt, item, waits)
            if settled is not None:
                yield item, settled is not Outcome.UNSETTLED
        if waits:  # all parked again in SendMessageBatch calls
            outcomes = self.settler.park([parking for _, parking in waits], join_lanes=False)
            for (item, _), outcome in zip(waits, outcomes, strict=True):
                yield item, outcome is not Outcome.UNSETTLED

    def _lane_states(self, work: Sequence[_Ticketed]) -> dict[LaneId, LaneState] | None:
        """The lanes of the batch's ordered tickets, in one read; None when the lane store does not answer."""
        if not self.settler.lanes.tracks_order:
            return {}
        lanes = {(item.ticket.subscription, item.ticket.lane) for item in work if item.ticket.ordered}
        if not lanes:
            return {}
        try:
            return self.settler.lanes.waiting(lanes)
        except LaneStoreError:
            return None

    def _turn(self, ticket: Ticket, states: Mapping[LaneId, LaneState] | None, window_left: float) -> int | None:
        """None when the ticket may be delivered now; else how long to wait for its lane's head."""
        if not ticket.ordered or not self.settler.lanes.tracks_order:
            return None
        if states is None:
            return max(1, self.backoff.delay_s(1, time_left_s=window_left))  # the order cannot be known yet
        lane = (ticket.subscription, ticket.lane)
        state = states.get(lane)
        for _ in range(3):
            if state is None or ticket.seq not in state.pending or state.head == ticket.seq:
                return None  # its turn (or its lane lost track of it: the claim still prevents a double delivery)
            if not self._stale(state) or not self._drop(lane, state):
                return max(1, min(int(state.next_attempt_at - time.time()) + 1, self.settings.retry_max_delay_s))
            try:
                state = self.settler.lanes.state(lane)
            except LaneStoreError:
                return max(1, self.backoff.delay_s(1, time_left_s=window_left))
        return None

    def _stale(self, state: LaneState) -> bool:
        return time.time() - state.head_at > self.stale_after_s

    def _drop(self, lane: tuple[str, str], state: LaneState) -> bool:
        try:
            dropped = self.settler.lanes.drop_stale_head(lane, state)
        except LaneStoreError:
            return False
        if dropped:
            self.telemetry.logger.warning(
                "lane of %s: head %s unchanged for %d s, its ticket is lost; the lane goes on without it",
                lane[0],
                state.head,
                int(time.time() - state.head_at),
            )
        return dropped

    def _expired(self, item: _Ticketed) -> bool:
        """The window ended before the ticket's next attempt: one dead letter, no attempt."""
        ticket, delivery = item.ticket, item.delivery
        window = delivery.subscription.retry.maximum_event_age_s
        if ticket.attempts == 0:
            reason = (
                f"delivery to {ticket.subscription} not attempted: the retry window ({window} s) ended while it "
                "waited behind an earlier event of its key"
            )
        else:
            elapsed = _duration(time.time() - ticket.first_failed_at)
            reason = (
                f"delivery to {ticket.subscription} failed {ticket.attempts} times over {elapsed}: its retry window "
                f"({window} s) ended before the next attempt; last error: {ticket.last_error}"
            )
        attempt = Attempt(delivery, Status.HELD, DeliveryError(ticket.last_error or "not attempted", transient=True))
        outcome = self.settler.dead_letter(
            attempt, reason, attempts=ticket.attempts, first_failed_at=ticket.first_failed_at, ticket=ticket
        )
        return outcome is not Outcome.UNSETTLED

    def _settle(self, attempt: Attempt, item: _Ticketed, waits: list[tuple[_Ticketed, Parking]]) -> Outcome | None:
        """Settle one attempt that did not succeed; None when it is to be parked again (added to `waits`, parked
        with the rest)."""
        delivery, ticket = attempt.delivery, item.ticket
        policy = delivery.subscription.retry
        error = attempt.error or DeliveryError("not attempted", transient=True)
        if attempt.status is Status.HELD:  # out of time, or behind a failure of its lane: back, no attempt counted
            waits.append((item, Parking(attempt, ticket, 0)))
            return None
        after = ticket if attempt.held_elsewhere else ticket.then(error.reason)
        elapsed = _duration(time.time() - ticket.first_failed_at)
        window_left = item.window_left()
        if not error.transient:
            reason = f"delivery to {ticket.subscription} refused after {after.attempts} attempts: {error.reason}"
        elif after.attempts > policy.maximum_retry_attempts:
            reason = (
                f"delivery to {ticket.subscription} failed {after.attempts} times over {elapsed}: its retry policy "
                f"allows {policy.maximum_retry_attempts} retries; last error: {error.reason}"
            )
        elif window_left <= 1:
            reason = (
                f"delivery to {ticket.subscription} failed {after.attempts} times over {elapsed}: its retry window "
                f"({policy.maximum_event_age_s} s) ended; last error: {error.reason}"
            )
        else:
            delay = max(1, self.backoff.delay_s(after.attempts, time_left_s=window_left))
            if ticket.ordered and self.settler.lanes.tracks_order:
                self.settler.lanes.progress((ticket.subscription, ticket.lane), time.time() + delay)
            waits.append((item, Parking(attempt, after, delay)))
            return None
        return self.settler.dead_letter(
            attempt, reason, attempts=after.attempts, first_failed_at=ticket.first_failed_at, ticket=ticket
        )

    def _unreadable(self, message: Mapping[str, Any], reason: str) -> bool:
        """A message no retry can use: to the DLQ as it came, with why."""
        error_event_id = self.telemetry.capture_error(
            DeliveryError(reason, transient=False), "consumer", "retry", {"message_id": message.get("messageId")}
        )
        letter = DeadLetter(
            reason=reason,
            error_event_id=error_event_id,
            topic="",
            partition=-1,
            offset=-1,
            value_base64=None,
            event={"retry_message": str(message.get("body", ""))[:200_000]},
        )
        return self.settler.send_letter(letter)


def _attribute_strings(message: Mapping[str, Any]) -> dict[str, str]:
    attributes = message.get("messageAttributes") or {}
    return {
        str(name): str(value.get("stringValue"))
        for name, value in attributes.items()
        if isinstance(value, Mapping) and value.get("stringValue") is not None
    }


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {seconds} s" if minutes else f"{seconds} s"

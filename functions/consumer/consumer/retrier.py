"""The retry function (`app.retry_handler`, DeliveryRetryFunction): tickets from the retry queue, each one
delivery tried again when its delay ends.

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
from collections.abc import Mapping
from typing import Any

from observability import Telemetry
from observability.types import LambdaContext
from opentelemetry.trace import SpanKind

from consumer.dead_letters import DeadLetter
from consumer.decoding import PoisonRecordError, read_record, to_cloud_event
from consumer.deliveries import Attempt, Delivery, Status
from consumer.engine import DeliveryEngine
from consumer.lanes import LaneState, LaneStoreError
from consumer.parking import Backoff, Ticket
from consumer.settings import ConsumerSettings
from consumer.settlement import Outcome, Parking, Settler
from consumer.targets import DeliveryError

RESERVE_S = 2.0


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
        messages = [record for record in event.get("Records") or [] if isinstance(record, Mapping)]
        time_left = context.get_remaining_time_in_millis() / 1000 if context is not None else 60.0
        deadline = time.monotonic() + time_left - self.settings.webhook_timeout_s - RESERVE_S
        failures: list[dict[str, Any]] = []
        for message in messages:
            if time.monotonic() >= deadline:  # back to the queue as they are: SQS shows them again
                failures.append({"itemIdentifier": message.get("messageId")})
                continue
            if not self._one(message, deadline, int(time_left * 1000) + 1000):
                failures.append({"itemIdentifier": message.get("messageId")})
        return {"batchItemFailures": failures}

    def _one(self, message: Mapping[str, Any], deadline: float, hold_ms: int) -> bool:
        """True when the message is settled (it can be deleted)."""
        parent = self.telemetry.context_from_http_headers(_attribute_strings(message))
        with self.telemetry.span("retry delivery", kind=SpanKind.CONSUMER, context=parent) as span:
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
            delivery = Delivery(subscription, raw, cloud_event, parent)
            now = time.time()
            born = raw.timestamp_ms / 1000 if raw.timestamp_ms else ticket.first_failed_at
            window_left = born + subscription.retry.maximum_event_age_s - now
            wait = self._turn(ticket, window_left)
            if wait is not None:
                return self._wait(delivery, ticket, wait, window_left)
            (attempt,) = self.engine.run([delivery], deadline=deadline, hold_ms=hold_ms)
            return self._settle(attempt, ticket, window_left) is not Outcome.UNSETTLED

    def _turn(self, ticket: Ticket, window_left: float) -> int | None:
        """None when the ticket may be delivered now; else how long to wait for its lane's head."""
        if not ticket.ordered or not self.settler.lanes.tracks_order:
            return None
        lane = (ticket.subscription, ticket.lane)
        for _ in range(3):
            try:
                state = self.settler.lanes.state(lane)
            except LaneStoreError:
                return max(1, self.backoff.delay_s(1, time_left_s=window_left))  # the order cannot be known yet
            if state is None or ticket.seq not in state.pending or state.head == ticket.seq:
                return None  # its turn (or its lane lost track of it: the claim still prevents a double delivery)
            if not self._stale(state) or not self._drop(lane, state):
                return max(1, min(int(state.next_attempt_at - time.time()) + 1, self.settings.retry_max_delay_s))
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

    def _wait(self, delivery: Delivery, ticket: Ticket, wait_s: int, window_left: float) -> bool:
        attempt = Attempt(
            delivery, Status.HELD, DeliveryError("waiting behind an earlier event of its key", transient=True)
        )
        if window_left <= 0:
            reason = (
                f"delivery to {ticket.subscription} not attempted: the retry window "
                f"({delivery.subscription.retry.maximum_event_age_s} s) ended while it waited behind an earlier "
                "event of its key"
            )
            outcome = self.settler.dead_letter(
                attempt, reason, attempts=ticket.attempts, first_failed_at=ticket.first_failed_at
            )
            if outcome is Outcome.DEAD_LETTERED:
                self.settler.leave(delivery, ticket)
            return outcome is not Outcome.UNSETTLED
        (outcome,) = self.settler.park([Parking(attempt, ticket, min(wait_s, int(window_left) + 1))], join_lanes=False)
        return outcome is not Outcome.UNSETTLED

    def _settle(self, attempt: Attempt, ticket: Ticket, window_left: float) -> Outcome:
        delivery = attempt.delivery
        policy = delivery.subscription.retry
        if attempt.status in (Status.DELIVERED, Status.DUPLICATE):
            outcome = self.settler.delivered(
                attempt, Outcome.DELIVERED if attempt.status is Status.DELIVERED else Outcome.DUPLICATE
            )
            self.settler.leave(delivery, ticket)
            return outcome
        error = attempt.error or DeliveryError("not attempted", transient=True)
        if attempt.status is Status.HELD:  # out of time: back at once, no attempt counted
            (outcome,) = self.settler.park([Parking(attempt, ticket, 0)], join_lanes=False)
            return outcome
        after = ticket if attempt.held_elsewhere else ticket.then(error.reason)
        elapsed = _duration(time.time() - ticket.first_failed_at)
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
            if attempt.held_elsewhere:  # another invocation is delivering it now: wait, no attempt counted
                after = ticket
            delay = max(1, self.backoff.delay_s(after.attempts, time_left_s=window_left))
            if ticket.ordered and self.settler.lanes.tracks_order:
                self.settler.lanes.progress((ticket.subscription, ticket.lane), time.time() + delay)
            (outcome,) = self.settler.park([Parking(attempt, after, delay)], join_lanes=False)
            return outcome
        outcome = self.settler.dead_letter(
            attempt, reason, attempts=after.attempts, first_failed_at=ticket.first_failed_at
        )
        if outcome is Outcome.DEAD_LETTERED:
            self.settler.leave(delivery, ticket)
        return outcome

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

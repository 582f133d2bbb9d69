"""The delivery engine: one batch's deliveries, each subscription on its own, as fast as its target allows.

- Subscriptions run side by side: a failing or slow target never delays another subscription's deliveries.
- Within a subscription, `ordering: key` keeps each lane (a record key) in order: a lane's next event is sent
  only after the one before it was delivered, and a transient failure holds the rest of its lane (they are
  parked behind it); other lanes keep flowing. `ordering: none` holds nothing back.
- Webhooks: one task per lane on the subscription's pool (`max_concurrency` requests in flight), each worker
  on its own keep-alive connection. SQS and SNS: rounds of one event per lane, in batch calls of 10 sent
  concurrently. Kafka: one produce call per event and one flush for all.
- Each delivery is claimed in the idempotency store first: a duplicate is skipped; a claim not granted is a
  failed attempt (retried later, like any transient failure).

The engine only attempts; `Processor` settles each attempt (park, dead-letter, complete or release the claim).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from lambda_event_bus.bus.idempotency import ClaimState, Idempotency
from lambda_event_bus.telemetry import Telemetry
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace import Status as SpanStatus

from consumer.deliveries import Attempt, Delivery, Status, lanes
from consumer.subscriptions import Subscription
from consumer.targets import Deliverer, DeliveryError, Outbound, batches

T = TypeVar("T")
R = TypeVar("R")
OUT_OF_TIME = "not attempted: the invocation ran out of time"
MAX_SUBSCRIPTIONS_AT_ONCE = 32


class DeliveryEngine:
    def __init__(self, deliverer: Deliverer, idempotency: Idempotency, telemetry: Telemetry) -> None:
        self._deliverer = deliverer
        self._idempotency = idempotency
        self._telemetry = telemetry
        self._pools: dict[str, ThreadPoolExecutor] = {}  # per subscription, kept for the environment's life
        self._drivers = ThreadPoolExecutor(MAX_SUBSCRIPTIONS_AT_ONCE, thread_name_prefix="subscription")

    def run(
        self,
        deliveries: Sequence[Delivery],
        *,
        deadline: float,
        hold_ms: int,
        held: Mapping[tuple[str, str], str] | None = None,
        context: Context | None = None,
    ) -> list[Attempt]:
        """Attempt every delivery once, until `deadline` (time.monotonic()); those past it are HELD.

        `held`: lanes (subscription name, lane) that wait behind events parked earlier, with why: their
        deliveries are not attempted. `hold_ms`: how long a claim holds (until this invocation ends).
        `context`: the batch span's, parent of the batch calls' spans."""
        by_subscription: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            by_subscription.setdefault(delivery.subscription.name, []).append(delivery)
        run = _Run(self, deadline, hold_ms, held or {}, context or Context())
        if len(by_subscription) == 1:
            (items,) = by_subscription.values()
            return run.subscription(items)
        futures = [self._drivers.submit(run.subscription, items) for items in by_subscription.values()]
        return [attempt for future in futures for attempt in future.result()]

    def pool(self, subscription: Subscription) -> ThreadPoolExecutor:
        pool = self._pools.get(subscription.name)
        if pool is None:
            pool = self._pools[subscription.name] = ThreadPoolExecutor(
                subscription.max_concurrency, thread_name_prefix=f"deliver-{subscription.name}"[:40]
            )
        return pool


class _Run:
    """One call of `DeliveryEngine.run`: its deadline, claim hold and held lanes."""

    def __init__(
        self,
        engine: DeliveryEngine,
        deadline: float,
        hold_ms: int,
        held: Mapping[tuple[str, str], str],
        context: Context,
    ) -> None:
        self.engine = engine
        self.deadline = deadline
        self.hold_ms = hold_ms
        self.held = held
        self.context = context

    def subscription(self, deliveries: Sequence[Delivery]) -> list[Attempt]:
        subscription = deliveries[0].subscription
        attempts: list[Attempt] = []
        open_lanes: dict[str, list[Delivery]] = {}
        for lane, items in lanes(deliveries).items():
            why = self.held.get((subscription.name, lane))
            if why is None:
                open_lanes[lane] = items
            else:
                attempts.extend(Attempt(d, Status.HELD, DeliveryError(why, transient=True)) for d in items)
        if not open_lanes:
            return attempts
        if subscription.target.type == "webhook":
            attempts.extend(self._concurrently(subscription, self._serial, list(open_lanes.values())))
        elif subscription.target.type == "kafka":
            attempts.extend(self._produce(subscription, [d for items in open_lanes.values() for d in items]))
        else:
            attempts.extend(self._rounds(subscription, open_lanes))
        return attempts

    # webhooks: each lane in order, lanes side by side

    def _serial(self, items: Sequence[Delivery]) -> list[Attempt]:
        attempts: list[Attempt] = []
        behind: DeliveryError | None = None
        for delivery in items:
            if behind is not None:
                attempts.append(Attempt(delivery, Status.HELD, behind))
                continue
            if time.monotonic() >= self.deadline:
                attempts.append(Attempt(delivery, Status.HELD, DeliveryError(OUT_OF_TIME, transient=True)))
                continue
            attempt = self._claim(delivery) or self._post(delivery)
            attempts.append(attempt)
            behind = _holds_lane(attempt)
        return attempts

    def _post(self, delivery: Delivery) -> Attempt:
        telemetry = self.engine._telemetry
        started = time.perf_counter()
        with telemetry.span(
            f"deliver {delivery.subscription.name}",
            kind=SpanKind.CLIENT,
            attributes=_span_attributes(delivery.subscription),
            context=delivery.parent,
        ) as span:
            try:
                self.engine._deliverer.post(delivery.subscription, Outbound(delivery.event, telemetry.http_headers()))
            except Exception as error:
                failure = _as_delivery_error(error)
                span.set_status(SpanStatus(StatusCode.ERROR, failure.reason[:256]))
                return Attempt(delivery, Status.FAILED, failure, time.perf_counter() - started, claimed=True)
        return Attempt(delivery, Status.DELIVERED, None, time.perf_counter() - started, claimed=True)

    # SQS and SNS: rounds of one event per lane, in batch calls

    def _rounds(self, subscription: Subscription, by_lane: Mapping[str, list[Delivery]]) -> list[Attempt]:
        attempts: list[Attempt] = []
        waiting = {lane: deque(items) for lane, items in by_lane.items()}
        while waiting:
            if time.monotonic() >= self.deadline:
                out_of_time = DeliveryError(OUT_OF_TIME, transient=True)
                attempts.extend(Attempt(d, Status.HELD, out_of_time) for queue in waiting.values() for d in queue)
                break
            heads = [queue.popleft() for queue in waiting.values()]
            chunks = [heads[start : start + 10] for start in range(0, len(heads), 10)]
            for attempt in self._concurrently(subscription, self._send_batch, chunks):
                attempts.append(attempt)
                lane = attempt.delivery.lane
                behind = _holds_lane(attempt)
                if behind is not None:
                    attempts.extend(Attempt(d, Status.HELD, behind) for d in waiting.pop(lane, ()))
            waiting = {lane: queue for lane, queue in waiting.items() if queue}
        return attempts

    def _send_batch(self, chunk: Sequence[Delivery]) -> list[Attempt]:
        attempts, claimed = self._claim_all(chunk)
        if not claimed:
            return attempts
        subscription = claimed[0].subscription
        telemetry = self.engine._telemetry
        for call in batches([Outbound(d.event, telemetry.http_headers(d.parent)) for d in claimed]):
            members, claimed = claimed[: len(call)], claimed[len(call) :]
            started = time.perf_counter()
            # one event: its span is a child of the event's; a batch call sits in the batch's trace, linked to each
            single = len(members) == 1
            with telemetry.span(
                f"deliver {subscription.name}",
                kind=SpanKind.PRODUCER,
                attributes={**_span_attributes(subscription), "messaging.batch.message_count": len(call)},
                links=None if single else telemetry.links(d.parent for d in members),
                context=members[0].parent if single else self.context,
            ) as span:
                try:
                    failures = self.engine._deliverer.send_batch(subscription, call)
                except Exception as error:
                    failures = [_as_delivery_error(error)] * len(call)
                if any(failures):
                    span.set_status(SpanStatus(StatusCode.ERROR, "some entries failed"))
            seconds = time.perf_counter() - started
            attempts.extend(
                Attempt(d, Status.FAILED if failure else Status.DELIVERED, failure, seconds, claimed=True)
                for d, failure in zip(members, failures, strict=True)
            )
        return attempts

    # Kafka: one produce per event, one flush for all

    def _produce(self, subscription: Subscription, deliveries: Sequence[Delivery]) -> list[Attempt]:
        chunks = [deliveries[start : start + 10] for start in range(0, len(deliveries), 10)]
        claims = self._concurrently(subscription, lambda chunk: [self._claim_all(chunk)], chunks)
        attempts = [attempt for done, _ in claims for attempt in done]
        # in lane order: a claim not granted holds the rest of its lane (the first such claim of each lane)
        holding: dict[str, tuple[str, DeliveryError]] = {}
        for attempt in sorted(attempts, key=lambda a: a.delivery.seq):
            why = _holds_lane(attempt)
            if why is not None and attempt.delivery.lane not in holding:
                holding[attempt.delivery.lane] = (attempt.delivery.seq, why)
        claimed: list[Delivery] = []
        for delivery in (d for _, todo in claims for d in todo):
            held = holding.get(delivery.lane)
            if held is not None and held[0] < delivery.seq:
                self.engine._idempotency.release(delivery.idempotency_key, held[1].reason)
                attempts.append(Attempt(delivery, Status.HELD, held[1]))
            else:
                claimed.append(delivery)
        if not claimed:
            return attempts
        started = time.perf_counter()
        telemetry = self.engine._telemetry
        try:
            failures = self.engine._deliverer.produce(
                subscription,
                [Outbound(d.event, telemetry.http_headers(d.parent)) for d in claimed],
                [d.parent for d in claimed],
            )
        except Exception as error:
            failures = [_as_delivery_error(error)] * len(claimed)
        seconds = time.perf_counter() - started
        attempts.extend(
            Attempt(d, Status.FAILED if failure else Status.DELIVERED, failure, seconds, claimed=True)
            for d, failure in zip(claimed, failures, strict=True)
        )
        return attempts

    # claims and the pool

    def _claim(self, delivery: Delivery) -> Attempt | None:
        """None when the claim is granted (go on and deliver); else the attempt's end."""
        claim = self.engine._idempotency.claim(delivery.idempotency_key, self.hold_ms)
        if claim.state is ClaimState.NEW:
            return None
        if claim.state is ClaimState.DUPLICATE:
            return Attempt(delivery, Status.DUPLICATE)
        # being delivered elsewhere, or the store did not answer: a failed attempt, retried like any other
        detail = claim.detail or claim.state.value
        return Attempt(
            delivery,
            Status.FAILED,
            DeliveryError(f"deferred: {detail}", transient=True),
            held_elsewhere=claim.state is ClaimState.IN_PROGRESS,
        )

    def _claim_all(self, deliveries: Sequence[Delivery]) -> tuple[list[Attempt], list[Delivery]]:
        ended: list[Attempt] = []
        claimed: list[Delivery] = []
        for delivery in deliveries:
            attempt = self._claim(delivery)
            if attempt is None:
                claimed.append(delivery)
            else:
                ended.append(attempt)
        return ended, claimed

    def _concurrently(self, subscription: Subscription, work: Callable[[T], list[R]], items: Sequence[T]) -> list[R]:
        """`work` on each item on the subscription's pool; the results in the items' order."""
        if len(items) == 1:
            return list(work(items[0]))
        pool = self.engine.pool(subscription)
        futures: list[Future[list[R]]] = [pool.submit(work, item) for item in items]
        return [result for future in futures for result in future.result()]


def _holds_lane(attempt: Attempt) -> DeliveryError | None:
    """After a transient failure, the rest of an ordered lane waits behind it (a refusal settles the event:
    it is dead-lettered, and its lane goes on)."""
    if attempt.status is not Status.FAILED or attempt.error is None or not attempt.error.transient:
        return None
    if attempt.delivery.subscription.ordering != "key":
        return None
    return DeliveryError(f"behind {attempt.delivery.event.get_id()} of the same key, which failed", transient=True)


def _as_delivery_error(error: Exception) -> DeliveryError:
    """An exception no target documents (a bug, a library surprise): assume a retry may help."""
    if isinstance(error, DeliveryError):
        return error
    return DeliveryError(f"unexpected {type(error).__name__}: {error}", transient=True)


def _span_attributes(subscription: Subscription) -> dict[str, str]:
    return {"eventbus.subscription": subscription.name, "eventbus.target.type": subscription.target.type}

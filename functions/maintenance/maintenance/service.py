"""One maintenance run: connector status into `cdc_connector_status`, stale Pushgateway groups deleted, and a
small JSON summary back. A backend that is down is captured as an error and reported, never raised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from lambda_event_bus.telemetry import Telemetry

from maintenance.connectors import ConnectorSource, SourceReport
from maintenance.deadline import Deadline
from maintenance.groups import PushgatewaySweeper, describe

COMPONENT = "maintenance"


class ErrorSummary(TypedDict):
    operation: str
    event_id: str


class MaintenanceSummary(TypedDict):
    connectors: dict[str, int]
    """Every connector this run reported, 1 running, 0 not."""
    deleted_groups: list[dict[str, str]]
    """The grouping keys (job included) of the groups deleted."""
    kept_groups: int
    """Groups the Pushgateway still holds of those it listed: fresh ones, this function's own, and stale ones
    that could not be deleted this time."""
    errors: list[ErrorSummary]
    """One per captured error, with the event id its log line (and Sentry event) carries."""


class Maintenance:
    """Built once per execution environment. It remembers the connectors it has reported: a connector it can
    no longer see (its source is down, or it was deleted) is reported as 0 rather than left at its last value,
    which would keep saying "running" while nobody can tell."""

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        sources: Sequence[ConnectorSource] = (),
        sweeper: PushgatewaySweeper | None = None,
        reserve_s: float = 0.5,
    ) -> None:
        self._telemetry = telemetry
        self._sources = tuple(sources)
        self._sweeper = sweeper
        self._reserve_s = reserve_s
        self._known: dict[str, set[str]] = {source.name: set() for source in self._sources}

    def run(self, remaining_s: float | None = None) -> MaintenanceSummary:
        """`remaining_s`: the invocation's remaining time; `reserve_s` of it is left for the flush."""
        deadline = Deadline.after(None if remaining_s is None else remaining_s - self._reserve_s)
        summary = MaintenanceSummary(connectors={}, deleted_groups=[], kept_groups=0, errors=[])
        for source in self._sources:
            self._report_connectors(source, deadline, summary)
        if self._sweeper is not None:
            self._sweep(self._sweeper, deadline, summary)
        self._telemetry.logger.info(
            "maintenance: %d connectors (%d running), %d groups deleted, %d kept, %d errors",
            len(summary["connectors"]),
            sum(summary["connectors"].values()),
            len(summary["deleted_groups"]),
            summary["kept_groups"],
            len(summary["errors"]),
            extra={"fields": {"summary": dict(summary)}},
        )
        return summary

    def _report_connectors(self, source: ConnectorSource, deadline: Deadline, summary: MaintenanceSummary) -> None:
        with self._telemetry.span("maintenance connector_status", attributes={"maintenance.source": source.name}):
            try:
                report = source.check(deadline)
            except Exception as error:  # a source's own bug must not cost the other source or the sweep
                summary["errors"].append(self._capture(error, source.name, "check", {}))
                report = SourceReport(complete=False)
            for failure in report.failures:
                context: dict[str, object] = {"source": source.name, "endpoint": source.endpoint}
                if failure.connector is not None:
                    context["connector"] = failure.connector
                summary["errors"].append(self._capture(failure.error, source.name, failure.operation, context))
            known = self._known[source.name]
            known.update(report.running)
            for connector in sorted(known):
                value = 1 if report.running.get(connector, False) else 0
                self._telemetry.metrics.set("cdc_connector_status", value, connector=connector)
                summary["connectors"][connector] = value

    def _sweep(self, sweeper: PushgatewaySweeper, deadline: Deadline, summary: MaintenanceSummary) -> None:
        with self._telemetry.span("maintenance pushgateway_sweep") as span:
            result = sweeper.sweep(deadline)
            for operation, error, group in result.failures:
                context: dict[str, object] = {"endpoint": sweeper.endpoint}
                if group is not None:
                    context["group"] = dict(group.labels)
                summary["errors"].append(self._capture(error, "pushgateway", operation, context))
            summary["deleted_groups"] = describe(result.deleted)
            summary["kept_groups"] = result.kept
            span.set_attribute("maintenance.groups.deleted", len(result.deleted))
            span.set_attribute("maintenance.groups.kept", result.kept)

    def _capture(self, error: Exception, target: str, operation: str, context: dict[str, object]) -> ErrorSummary:
        qualified = f"{target}.{operation}"
        return ErrorSummary(
            operation=qualified, event_id=self._telemetry.capture_error(error, COMPONENT, qualified, context)
        )

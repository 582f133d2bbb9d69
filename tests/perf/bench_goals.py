"""Table 0 of `make bench`: every budget of tests/perf/budgets.py against what the run measured, and the page the
run writes (docs/benchmarks.md)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import after_response
import budgets
import per_record
from bench_env import ROOT, Settings
from bench_tables import fmt, render_table
from cold_start import FUNCTIONS, ColdResult
from per_record import RecordResult


@dataclass(frozen=True)
class Goal:
    name: str
    budget: str
    measured: float | None
    limit: float
    unit: str = "x"
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "not measured"
        return "met" if self.measured <= self.limit else "NOT MET"

    def cells(self) -> list[str]:
        shown = "-" if self.measured is None else f"{self.measured:.2f}{self.unit}"
        return [self.name, self.budget, shown, self.verdict, self.note]


def ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def goals(
    cold: Mapping[str, ColdResult],
    invocations: Sequence[Any],
    flushes: Sequence[Any],
    records: Sequence[RecordResult],
    flush_modes: Sequence[after_response.FlushModeResult],
) -> list[Goal]:
    layer, otel, combined, baseline = cold["layer"], cold["otel"], cold["combined"], cold["baseline"]
    found = [
        Goal(
            "layer cold start (init + 1st response) vs OTel",
            f"<= {budgets.LAYER_COLD_START_VS_OTEL}x",
            ratio(layer.to_first_response, otel.to_first_response),
            budgets.LAYER_COLD_START_VS_OTEL,
        ),
        Goal(
            "layer cold start (init + 1st response) vs combined",
            f"<= {budgets.LAYER_COLD_START_VS_COMBINED}x",
            ratio(layer.to_first_response, combined.to_first_response),
            budgets.LAYER_COLD_START_VS_COMBINED,
        ),
    ]
    for key in FUNCTIONS:
        function = cold[key]
        extra = None if function.first is None or function.second is None else function.first - function.second
        found.append(
            Goal(
                f"{function.case.label.split()[0]} init vs combined init",
                f"<= {budgets.FUNCTION_INIT_VS_COMBINED}x",
                ratio(function.init, combined.init),
                budgets.FUNCTION_INIT_VS_COMBINED,
                note="" if extra is None else f"1st request {fmt(extra)} ms over the 2nd",
            )
        )
        over_bare = None
        if function.rss_mib is not None and baseline.rss_mib is not None:
            over_bare = function.rss_mib - baseline.rss_mib
        found.append(
            Goal(
                f"{function.case.label.split()[0]} peak memory over bare Python",
                f"<= {budgets.FUNCTION_PEAK_RSS_OVER_BARE_MIB:.0f} MiB",
                over_bare,
                budgets.FUNCTION_PEAK_RSS_OVER_BARE_MIB,
                unit=" MiB",
            )
        )
    by_key = {result.case.key: result for result in [*invocations, *flushes]}
    found.append(
        Goal(
            "HTTP invocation, in-process, vs OTel instrumentor",
            f"<= {budgets.HTTP_INVOCATION_VS_OTEL}x",
            ratio(by_key["ours_http"].median(1000), by_key["otel_lambda"].median(1000)),
            budgets.HTTP_INVOCATION_VS_OTEL,
            note="export none on both; answer over telemetry off (5.): "
            f"{fmt(after_response.over_off(flush_modes, 'after_gzip'), 2)} ms after the response, "
            f"{fmt(after_response.over_off(flush_modes, 'inline_gzip'), 2)} ms inline",
        )
    )
    batched, each = (
        after_response.by_key(flush_modes, "after_interval"),
        after_response.by_key(flush_modes, "after_gzip"),
    )
    found.append(
        Goal(
            "OTLP bytes per span, single HTTP invocations",
            f"<= {budgets.OTLP_BYTES_PER_SPAN:.0f} B",
            batched.median_bytes_per_span if batched else None,
            budgets.OTLP_BYTES_PER_SPAN,
            unit=" B",
            note=f"gzip, TELEMETRY_EXPORT_INTERVAL_MS={after_response.INTERVAL_MS}, 10/s; every invocation exporting: "
            f"{fmt(each.median_bytes_per_span if each else None, 0)} B gzip, "
            f"{fmt(by_key['flush_up'].bytes_per_span, 0)} B raw; "
            f"OTel instrumentor: {fmt(by_key['otel_up'].bytes_per_span, 0)} B",
        )
    )
    for mode, limit in (("sampled", budgets.RECORD_SAMPLED_US), ("unsampled", budgets.RECORD_UNSAMPLED_US)):
        delivered = per_record.layer_cost(records, "webhook", mode)
        found.append(
            Goal(
                f"per record, {mode}, over telemetry off",
                f"<= {limit:.0f} us",
                per_record.layer_cost(records, "none", mode),
                limit,
                unit=" us",
                note=f"no subscription matches; delivered to a webhook: {fmt(delivered)} us",
            )
        )
    return found


def goals_table(found: Sequence[Goal]) -> str:
    headers = ["goal (tests/perf/budgets.py)", "budget", "measured", "verdict", "note"]
    return render_table("0. Goals", headers, [goal.cells() for goal in found])


DOCS_PAGE = ROOT / "docs" / "benchmarks.md"


def write_docs(report: str, settings: Settings, *, quick: bool) -> None:
    """docs/benchmarks.md: what was run, on what, and the tables as printed."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown CPU",
    )
    DOCS_PAGE.parent.mkdir(exist_ok=True)
    DOCS_PAGE.write_text(
        DOCS_HEAD.format(
            command="make bench ARGS=--quick" if quick else "make bench",
            date=time.strftime("%Y-%m-%d"),
            machine=f"{os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}",
            runs=settings.cold_runs,
        )
        + "```\n"
        + report.rstrip()
        + "\n```\n"
    )


DOCS_HEAD = """# Benchmarks

What the layer costs, measured side by side with what a team would use instead: the OpenTelemetry SDK with its
Lambda instrumentor, prometheus_client pushing to a Pushgateway, Powertools' Logger and sentry-sdk's Lambda
integration. Every figure that matters is a ratio within one run: cases run in fresh processes, alternated, and
the medians are compared, because this kind of machine moves by 20-30% within minutes.

    make bench              # the full run (about 5 minutes, after .venv-bench is made); writes this page
    make bench ARGS=--quick # a smoke run

The budgets are named constants in `tests/perf/budgets.py`; table 0 says which are met. The delivery engine has a
benchmark of its own (`make bench-delivery`), and so has the whole local stack under load (`make bench-stack`).

This page was written by `{command}` on {date}, on {machine}; cold starts are medians of {runs} runs.

"""

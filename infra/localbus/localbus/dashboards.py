"""The Grafana dashboards (infra/grafana/dashboards/*.json) as data, and every panel's query made runnable as a plain
Prometheus instant query: Grafana's `$__rate_interval`, `$__interval`, `$__range` (and their `_s`/`_ms` forms) and
the dashboards' template variables are replaced by plain values (`1m`, `1h`, a variable's default, `.*` for All).

Every query aggregates across execution environments (each environment pushes its own Pushgateway group), so a
panel shows one series per label set it groups by, never one per environment.

The rule for panels that could be empty. A panel must show something whenever the traffic it is about happened, so
an empty answer can be told from a zero:

- series that a working bus always creates once it has seen traffic (requests, events produced and consumed,
  deliveries, durations, lag, `push_time_seconds`, and every unlabelled catalog metric, which each environment pushes
  from its first flush) are queried plainly: an empty answer there is a real signal (nothing flows, or nothing
  reaches Prometheus), and is not hidden;
- series that a healthy bus may never create are failure and overflow counters with labels (a labelled series
  only exists once it has been incremented), the `outcome="dead_lettered"` / 5xx / `status="error"` slices of the
  others, and `cdc_connector_status` (none when no connector is configured). Their queries end in
  `or on() vector(0)`, which adds a single 0 only when the left side is empty (`on()` makes it match any series,
  so it never sits beside real ones), or, where the panel groups by a label that traffic always creates, in
  `or 0 * <the same grouping over an always-present series>`, which gives each such group its 0;
- the fallback stands only where "no series" really means zero: a connector-status panel counts the connectors
  running and not running (an absent gauge is "none reported", not "down"), and no panel showing a gauge's value
  or a latency gets one.

`MAY_BE_ABSENT` and `MAY_BE_ABSENT_SELECTORS` list those series; tests/unit/test_dashboards.py checks that every
query over them has a fallback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"

# the values Grafana's own interval variables take in an instant query
RATE_INTERVAL = "1m"
INTERVAL = "1m"
TIME_RANGE = "1h"

MAY_BE_ABSENT = frozenset(
    {
        "event_processing_errors_total",
        "events_redelivered_total",
        "errors_captured_total",
        "telemetry_export_failures_total",
        "telemetry_export_skipped_total",
        "telemetry_spans_dropped_total",
        "sentry_events_dropped_total",
        "metric_label_overflow_total",
        "cdc_connector_status",
    }
)
MAY_BE_ABSENT_SELECTORS = ('outcome="dead_lettered"', 'status=~"5.."', 'status="error"')
ZERO_FALLBACK = re.compile(r"\bor\s+(?:on\s*\(\s*\)\s*vector\s*\(\s*0\s*\)|0\s*\*)")

_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800, "y": 31_536_000}
ALL = "$__all"


@dataclass(frozen=True)
class Target:
    ref_id: str
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    id: int
    title: str
    type: str
    description: str
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    path: Path
    panels: tuple[Panel, ...]
    # each template variable's value for an instant query: its default, or the All value when All is the default
    variables: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    datasource_uids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PanelQuery:
    dashboard_uid: str
    dashboard_title: str
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str  # runnable as it is: every Grafana variable substituted
    template: str  # the panel's expression as the dashboard holds it

    @property
    def name(self) -> str:
        return f"{self.dashboard_uid}/{self.panel_id}/{self.ref_id} ({self.panel_title})"


def load_dashboards(directory: Path | None = None) -> list[Dashboard]:
    """Every `*.json` dashboard in `directory` (default: the repo's infra/grafana/dashboards), sorted by file name.
    Rows' nested panels are flattened; panels without targets (rows, text) are left out."""
    folder = directory or DASHBOARDS
    paths = sorted(folder.glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no dashboards (*.json) in {folder}")
    return [_dashboard(path, json.loads(path.read_text())) for path in paths]


def panel_queries(
    dashboards: Iterable[Dashboard] | Path | None = None,
    *,
    rate_interval: str = RATE_INTERVAL,
    interval: str = INTERVAL,
    time_range: str = TIME_RANGE,
    variables: Mapping[str, str] | None = None,
) -> list[PanelQuery]:
    """Every target of every panel, its expression made an instant query. `variables` overrides the dashboards'
    template variables' defaults (e.g. {"job": "event-bus-ingest"})."""
    if dashboards is None or isinstance(dashboards, Path):
        dashboards = load_dashboards(dashboards)
    builtins = {
        "__rate_interval": rate_interval,
        "__interval": interval,
        "__interval_ms": _as_number(_seconds(interval) * 1000),
        "__range": time_range,
        "__range_s": _as_number(_seconds(time_range)),
        "__range_ms": _as_number(_seconds(time_range) * 1000),
    }
    queries: list[PanelQuery] = []
    for dashboard in dashboards:
        values = {**dashboard.variables, **(variables or {}), **builtins}
        for panel in dashboard.panels:
            queries.extend(
                PanelQuery(
                    dashboard_uid=dashboard.uid,
                    dashboard_title=dashboard.title,
                    panel_id=panel.id,
                    panel_title=panel.title,
                    ref_id=target.ref_id,
                    expr=substitute(target.expr, values),
                    template=target.expr,
                )
                for target in panel.targets
            )
    return queries


def substitute(expression: str, values: Mapping[str, str]) -> str:
    """Replace `$name`, `${name}`, `${name:format}` and `[[name]]`; an unknown variable raises KeyError."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise KeyError(f"unknown variable ${name} in {expression!r}")
        return values[name]

    return _VARIABLE.sub(replace, expression)


def may_be_absent(expression: str) -> bool:
    """Whether the expression reads a series that a healthy bus may never create (see the module's rule)."""
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expression))
    return bool(names & MAY_BE_ABSENT) or any(selector in expression for selector in MAY_BE_ABSENT_SELECTORS)


def _dashboard(path: Path, document: Mapping[str, Any]) -> Dashboard:
    uid, title = document.get("uid"), document.get("title")
    if not isinstance(uid, str) or not uid or not isinstance(title, str) or not title:
        raise ValueError(f"{path.name}: a dashboard needs a uid and a title")
    panels = tuple(_panel(path, raw) for raw in _flatten(document.get("panels", [])) if raw.get("targets"))
    templating = document.get("templating", {}).get("list", [])
    variables = {str(variable["name"]): _default(path, variable) for variable in templating}
    sources = {
        str(source["uid"])
        for raw in _flatten(document.get("panels", []))
        for source in (raw.get("datasource"), *(target.get("datasource") for target in raw.get("targets", [])))
        if isinstance(source, Mapping) and "uid" in source
    }
    return Dashboard(
        uid=uid,
        title=title,
        path=path,
        panels=panels,
        variables=variables,
        tags=tuple(str(tag) for tag in document.get("tags", [])),
        datasource_uids=frozenset(sources),
    )


def _flatten(panels: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    flat: list[Mapping[str, Any]] = []
    for panel in panels:
        flat.append(panel)
        flat.extend(_flatten(panel.get("panels", [])))  # a collapsed row holds its panels
    return flat


def _panel(path: Path, raw: Mapping[str, Any]) -> Panel:
    targets = tuple(
        Target(
            ref_id=str(target.get("refId", "")), expr=str(target.get("expr", "")), legend=target.get("legendFormat", "")
        )
        for target in raw["targets"]
        if not target.get("hide")
    )
    panel_id = raw.get("id")
    if not isinstance(panel_id, int):
        raise TypeError(f"{path.name}: panel {raw.get('title')!r} has no numeric id")
    return Panel(
        id=panel_id,
        title=str(raw.get("title", "")),
        type=str(raw.get("type", "")),
        description=str(raw.get("description", "")),
        targets=targets,
    )


def _default(path: Path, variable: Mapping[str, Any]) -> str:
    """A template variable's value in an instant query: All (the default here) becomes its allValue."""
    current = variable.get("current") or {}
    value = current.get("value")
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    if value == ALL or (value is None and variable.get("includeAll")):
        all_value = variable.get("allValue")
        if not all_value:
            raise ValueError(f"{path.name}: variable {variable.get('name')!r} defaults to All without an allValue")
        return str(all_value)
    if isinstance(value, str) and value:
        return value
    if variable.get("type") in ("constant", "textbox") and variable.get("query"):
        return str(variable["query"])
    raise ValueError(f"{path.name}: variable {variable.get('name')!r} has no default value")


def _seconds(duration: str) -> float:
    match = _DURATION.match(duration)
    if match is None:
        raise ValueError(f"not a single-unit duration: {duration!r}")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _as_number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def run(prometheus_url: str, queries: Sequence[PanelQuery]) -> list[tuple[PanelQuery, str]]:
    """Each query as an instant query against `prometheus_url`: the ones that failed or came back empty, with why."""
    problems: list[tuple[PanelQuery, str]] = []
    for query in queries:
        url = f"{prometheus_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query.expr})}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a Prometheus the caller names
                body = json.loads(response.read())
        except Exception as error:
            problems.append((query, f"error: {error}"))
            continue
        if body.get("status") != "success":
            problems.append((query, f"error: {body.get('error')}"))
        elif not body["data"]["result"]:
            problems.append((query, "empty"))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prometheus", help="run every query against this Prometheus (e.g. http://127.0.0.1:9090)")
    parser.add_argument("--directory", type=Path, default=None, help="dashboards folder (default: the repo's)")
    parser.add_argument("--rate-interval", default=RATE_INTERVAL)
    args = parser.parse_args(argv)
    queries = panel_queries(load_dashboards(args.directory), rate_interval=args.rate_interval)
    if not args.prometheus:
        for query in queries:
            print(f"{query.name}\n    {query.expr}")
        return 0
    problems = run(args.prometheus, queries)
    for query, why in problems:
        print(f"{query.name}: {why}\n    {query.expr}")
    print(f"{len(queries) - len(problems)} of {len(queries)} queries returned data")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

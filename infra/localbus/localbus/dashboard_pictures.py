"""Pictures of the Grafana dashboards, drawn from a Prometheus' data without Grafana: each panel's query is run as a
range query over the last minutes and drawn where the dashboard places it (its gridPos), a time series as lines
with the panel's legend, a stat as its last value.

    make dashboard-pictures        # the local stack running, after `make demo` (or any traffic)

They are what docs/dashboards.md shows; Grafana itself draws the same queries (infra/docker-compose.yml provisions
it). matplotlib comes from the `pictures` dependency group (the Makefile target installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localbus.dashboards import DASHBOARDS, RATE_INTERVAL, load_dashboards, panel_queries

OUTPUT = Path(__file__).resolve().parents[3] / "docs" / "images"
GRID_COLUMNS = 24
ROW_INCHES = 0.42  # one gridPos height unit
WIDTH_INCHES = 16.0
BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#d8d9da", "#2c3235"
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_UNITS = {"percentunit": ("{:.1%}", 1.0), "s": ("{:.3g} s", 1.0), "ms": ("{:.3g} ms", 1.0)}


@dataclass(frozen=True)
class Series:
    label: str
    times: list[float]
    values: list[float]


def query_range(prometheus: str, expression: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    parameters = urllib.parse.urlencode({"query": expression, "start": start, "end": end, "step": step})
    url = f"{prometheus.rstrip('/')}/api/v1/query_range?{parameters}"
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - the Prometheus the caller names
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise RuntimeError(f"{expression}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def legend(template: str, labels: dict[str, str]) -> str:
    if template:
        return _LEGEND.sub(lambda match: labels.get(match.group(1), ""), template).strip() or "value"
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items()) if key != "__name__") or "value"


def panel_series(
    prometheus: str, panel: dict[str, Any], expressions: dict[str, str], window: tuple[float, float]
) -> list[Series]:
    start, end = window
    series = []
    for target in panel.get("targets", []):
        expression = expressions[target["refId"]]
        for result in query_range(prometheus, expression, start, end, step=max(1.0, (end - start) / 240)):
            points = [(float(t), float(v)) for t, v in result["values"] if v not in ("NaN", "+Inf", "-Inf")]
            if points:
                times, values = zip(*points, strict=True)
                label = legend(target.get("legendFormat", ""), result["metric"])
                series.append(Series(label, [t - end for t in times], list(values)))
    return series


def formatted(value: float, unit: str) -> str:
    pattern, scale = _UNITS.get(unit, ("{:.3g}", 1.0))
    return pattern.format(value * scale)


def draw(prometheus: str, dashboard_path: Path, minutes: float, output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    document = json.loads(dashboard_path.read_text())
    (board,) = [board for board in load_dashboards(dashboard_path.parent) if board.uid == document["uid"]]
    expressions: dict[int, dict[str, str]] = {}
    for query in panel_queries([board], rate_interval=RATE_INTERVAL):
        expressions.setdefault(query.panel_id, {})[query.ref_id] = query.expr
    panels = [panel for panel in document["panels"] if panel.get("type") in ("timeseries", "stat")]
    rows = max(panel["gridPos"]["y"] + panel["gridPos"]["h"] for panel in panels)
    title_rows = 1.6
    figure = plt.figure(figsize=(WIDTH_INCHES, (rows + title_rows) * ROW_INCHES), facecolor=BACKGROUND)
    total = rows + title_rows
    figure.text(0.01, 1 - 0.55 / total, document["title"], color=TEXT, fontsize=15, weight="bold", va="center")
    figure.text(
        0.99,
        1 - 0.55 / total,
        f"last {minutes:g} min of the local stack's Prometheus, drawn by `make dashboard-pictures`",
        color="#8e8e8e",
        fontsize=9,
        ha="right",
        va="center",
    )
    end = time.time()
    window = (end - minutes * 60, end)
    for panel in panels:
        grid = panel["gridPos"]
        left, width = grid["x"] / GRID_COLUMNS, grid["w"] / GRID_COLUMNS
        bottom, height = 1 - (title_rows + grid["y"] + grid["h"]) / total, grid["h"] / total
        axes = figure.add_axes((left + 0.004, bottom + 0.006, width - 0.008, height - 0.012), facecolor=PANEL)
        axes.set_title(panel["title"], color=TEXT, fontsize=9, loc="left")
        for spine in axes.spines.values():
            spine.set_color(GRID)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        series = panel_series(prometheus, panel, expressions.get(panel["id"], {}), window)
        if panel["type"] == "stat":
            axes.set_xticks([])
            axes.set_yticks([])
            text = "  ".join(formatted(line.values[-1], unit) for line in series[:3]) if series else "No data"
            axes.text(0.5, 0.42, text, color="#73bf69", fontsize=18, ha="center", va="center", transform=axes.transAxes)
            continue
        for line in series[:8]:
            axes.plot(line.times, line.values, linewidth=1.2, label=line.label)
        axes.tick_params(colors="#8e8e8e", labelsize=7)
        axes.grid(color=GRID, linewidth=0.5)
        axes.set_xlim(-minutes * 60, 0)
        axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda seconds, _: f"{seconds / 60:.0f}m"))
        if series:
            axes.legend(fontsize=6, loc="upper left", frameon=False, labelcolor=TEXT)
        else:
            axes.text(0.5, 0.5, "No data", color="#8e8e8e", ha="center", va="center", transform=axes.transAxes)
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"dashboard-{document['uid'].removeprefix('eventbus-')}.png"
    figure.savefig(path, dpi=80, facecolor=BACKGROUND)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prometheus", help="Prometheus base URL (default: the running local stack's)")
    parser.add_argument("--minutes", type=float, default=10.0, help="the window drawn, ending now")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    prometheus = args.prometheus
    if prometheus is None:
        from hoststack.state import DEFAULT_STATE_DIR, current

        state = current(Path(os.environ.get("LOCALBUS_STATE_DIR") or DEFAULT_STATE_DIR))
        if state is None:
            print("error: no local stack is running (make demo first), or give --prometheus", file=sys.stderr)
            return 1
        prometheus = state.address("prometheus")
    for path in sorted(DASHBOARDS.glob("*.json")):
        print(draw(prometheus, path, args.minutes, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())

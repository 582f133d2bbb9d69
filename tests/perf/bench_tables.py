"""Plain-text tables and number formats for the benchmark scripts' output."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 200 samples is the second largest)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def fmt_ratio(value: float | None, reference: float | None) -> str:
    if value is None or reference is None or reference <= 0:
        return "-"
    return f"{value / reference:.2f}x"


def render_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first, *others = cells
        parts = [str(first).ljust(widths[0])]
        parts += [str(cell).rjust(width) for cell, width in zip(others, widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "-" * len(line(headers))
    body = [title, rule, line(headers), rule, *(line(row) for row in rows), rule]
    body += [f"  {note}" for note in notes]
    return "\n".join(body)


def status_cell(missing: Sequence[str], error: str) -> str | None:
    """What a row shows instead of numbers when its case could not run."""
    if missing:
        return "not installed"
    return "failed" if error else None


def status_notes(labelled: Sequence[tuple[str, Sequence[str], str]]) -> list[str]:
    """One note per case that could not run: (label, missing modules, error)."""
    notes = []
    for label, missing, error in labelled:
        if missing:
            notes.append(f"{label}: not installed (cannot import {', '.join(missing)})")
        elif error:
            notes.append(f"{label}: failed: {error}")
    return notes

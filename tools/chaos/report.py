"""The table `make chaos` prints, and its JSON form."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any, Final

from chaos.verdicts import Summary

COLUMNS: Final = (
    ("scenario", 30),
    ("bots", 4),
    ("pods", 4),
    ("joins", 5),
    ("double", 6),
    ("missed", 6),
    ("contra", 6),
    ("offtime", 7),
    ("late p50/p99/max ms", 22),
    ("health ms", 9),
    ("tb", 3),
    ("verdict", 7),
)


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def verdict(summary: Summary) -> str:
    if summary.passed is None:
        return "n/a" if summary.outcome.startswith("not applicable") else summary.outcome.split(":", 1)[0].upper()
    return "PASS" if summary.passed else "FAIL"


def row(summary: Summary) -> list[str]:
    if summary.passed is None:
        return [summary.name, *[""] * (len(COLUMNS) - 2), verdict(summary)]
    late = f"{_ms(summary.lateness_p50_ms)}/{_ms(summary.lateness_p99_ms)}/{_ms(summary.lateness_max_ms)}"
    return [
        summary.name,
        str(summary.bots),
        str(summary.pods_max),
        str(summary.joins_max),
        str(summary.double_joins),
        str(summary.missed_joins),
        str(summary.contradictions),
        str(summary.off_time),
        late,
        _ms(summary.health_max_ms),
        str(summary.tracebacks),
        verdict(summary),
    ]


def table(summaries: Sequence[Summary]) -> str:
    """A Markdown table (it reads as plain text too), then each failure's problems and each n/a's reason."""
    lines = [
        "| " + " | ".join(name.ljust(width) for name, width in COLUMNS) + " |",
        "|" + "|".join("-" * (width + 2) for _, width in COLUMNS) + "|",
    ]
    for summary in summaries:
        cells = row(summary)
        lines.append(
            "| " + " | ".join(cell.ljust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True)) + " |"
        )
    notes = []
    for summary in summaries:
        if summary.passed is None:
            notes.append(f"- {summary.name}: {summary.outcome}")
        elif summary.problems:
            shown = "; ".join(summary.problems[:4])
            more = f" (+{len(summary.problems) - 4} more)" if len(summary.problems) > 4 else ""
            cause = f" [known cause: {summary.hint}]" if summary.hint else ""
            notes.append(f"- {summary.name}: {shown}{more}{cause}")
    return "\n".join([*lines, *(["", *notes] if notes else [])])


def to_json(summaries: Sequence[Summary], meta: dict[str, Any]) -> str:
    """Every figure, NaN as null, with the run's parameters (`meta`)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, tuple | list):
            return [clean(item) for item in value]
        return value

    rows = [{key: clean(value) for key, value in dataclasses.asdict(s).items()} for s in summaries]
    return json.dumps({**meta, "scenarios": rows}, indent=2)

"""Small statistics over runs: summaries, medians, milliseconds (percentiles: localcluster.stats)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from localcluster.stats import percentile


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
        "min": min(values) if values else math.nan,
    }


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def fmt_ms(seconds: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.{digits}f}"

"""How bench figures are summarised and printed: median with min and max over repeats.

Shared by benchmarks.bench and its sections in other modules (benchmarks.bench_workers), which import
this leaf rather than benchmarks.bench itself (that would make an import cycle).
"""
from __future__ import annotations

import statistics


def spread(values: list[float]) -> dict:
    """Median with min and max: the median resists one disturbed repeat, min/max show the noise."""
    values = [float(v) for v in values]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(s: dict | None, unit: str = "s", digits: int = 3) -> str:
    if not s or s.get("median") is None:
        return "n/a"
    return f"{s['median']:.{digits}f} {unit} (min {s['min']:.{digits}f}, max {s['max']:.{digits}f}, n={s['n']})"

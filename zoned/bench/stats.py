"""Statistics of benchmark samples: nearest-rank percentiles, summaries, a least-squares
slope. Plain stdlib, so the report and its unit tests need no root and no numpy."""
from __future__ import annotations

import math
import statistics


def percentile(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list: always one of the
    samples, so a p95 of few samples is honest about being the largest ones."""
    if not xs:
        raise ValueError("percentile of no samples")
    s = sorted(xs)
    k = max(1, math.ceil(p / 100 * len(s)))
    return s[k - 1]


def summary(xs: list[float]) -> dict:
    """n, median, p95, min, max, mean, stdev of samples (same unit as the input);
    {"n": 0} for none."""
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "median": statistics.median(xs),
        "p95": percentile(xs, 95),
        "min": min(xs),
        "max": max(xs),
        "mean": statistics.fmean(xs),
        "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0,
    }


def slope(xs: list[float], ys: list[float]) -> dict | None:
    """Least-squares line y = a + b*x: {"slope", "intercept", "r2", "n"}; None with fewer
    than two distinct x. Density uses it for memory per instance: the slope of host memory
    used against the number of instances is the cost of one more, without the fixed part."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    syy = sum((y - my) ** 2 for y in ys)
    b = sxy / sxx
    a = my - b * mx
    r2 = (sxy * sxy) / (sxx * syy) if syy else 1.0
    return {"slope": b, "intercept": a, "r2": r2, "n": n}


def theil_sen(xs: list[float], ys: list[float]) -> float | None:
    """The median of the slopes between every two points (Theil-Sen): a line fit that one
    outlier cannot move, such as the first instance paying for cold caches, or a memcg
    charge landing in a per-CPU batch. None with fewer than two distinct x."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    pairs = [(ys[j] - ys[i]) / (xs[j] - xs[i])
             for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i]]
    return statistics.median(pairs) if pairs else None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None where either is missing or b is 0."""
    if a is None or b in (None, 0):
        return None
    return a / b

"""Spread across runs (seeds), pure: mean, sample std, min and max of a value, and the band of several curves."""
from __future__ import annotations

import math


def spread(values) -> dict:
    """n, mean, std (sample, n - 1; None under 2 values), min and max of the values that are not None."""
    xs = [float(x) for x in values if x is not None]
    n = len(xs)
    if not n:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    m = sum(xs) / n
    std = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": m, "std": std, "min": min(xs), "max": max(xs)}


def band(curves: list[tuple[list, list]]) -> tuple[list, list, list, list]:
    """(steps, mean, min, max) across curves at each step any of them has a value (runs differ in length: a step
    counts the curves that reach it)."""
    at: dict = {}
    for steps, ys in curves:
        for s, y in zip(steps, ys):
            if y is not None:
                at.setdefault(s, []).append(y)
    steps = sorted(at)
    return (steps, [sum(at[s]) / len(at[s]) for s in steps], [min(at[s]) for s in steps],
            [max(at[s]) for s in steps])

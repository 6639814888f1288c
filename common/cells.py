"""A value as a table cell: formatted, or a mark where the value does not exist (no passes counted, no time, a
quarter without blocks). Every report writes its numbers through ``fmt``: the benchmark's tables, the experiments',
the main job's README, the learner's progress line."""
from __future__ import annotations


def fmt(x, spec: str = ".3f") -> str:
    """``x`` formatted with ``spec``, or ``-`` where ``x`` is None."""
    return "-" if x is None else format(x, spec)

"""The process-wide side effects of a run's flags, in one explicit call after parsing (never while parsing):

    --num-threads   torch's intra-op threads
    --engine        auto: decode steps and verify passes on the lean C++ CPU engine where it applies; plain: off
"""
from __future__ import annotations


def apply_runtime(args) -> None:
    """Apply ``args.num_threads`` (when given) and ``args.engine`` (``auto`` when the parser has no such flag)."""
    import torch

    from kangaroo import cpu_engine

    if getattr(args, "num_threads", None) is not None:
        torch.set_num_threads(args.num_threads)
    cpu_engine.set_enabled(getattr(args, "engine", "auto") == "auto")

"""What bounds a decode step on this core, measured with the engine's own kind of code (the rate probes,
``kangaroo/csrc/profiling/rate_probes.cpp``, an extension of their own: ``cpu_engine.rate_probes()``):

    stream rate   bytes per second one thread reads from memory with the engine's streaming read (not a BLAS call)
    FMA rate      float32 FMAs per second one thread chains at the engine's vector width
    bytes/token   the bytes a decode step reads: every decoder matrix and the head in the format the engine reads
                  them (``--weights``), plus the norms

so a step cannot beat bytes / stream rate, and verifying n tokens cannot beat n x weights / FMA rate (every
output is a float32 FMA chain over its weights, whatever the format they are stored in).
"""
from __future__ import annotations

import torch

from common.errors import UserError
from kangaroo import cpu_engine


def _probes():
    ext = cpu_engine.rate_probes()
    if ext is None:
        raise UserError("the rate probes could not be built (see the notice above): the limits need a C++ compiler, "
                        "`ninja` and an AVX2 CPU")
    return ext


def stream_rate(mb: int, repeats: int) -> float:
    """Bytes per second the engine's streaming read reaches over an ``mb`` MiB buffer (the best of ``repeats``:
    a limit, so the least disturbed run)."""
    buf = torch.empty(mb * 2 ** 20, dtype=torch.uint8).random_()
    ext = _probes()
    ext.stream_read(buf)
    return buf.numel() / min(ext.stream_read(buf) for _ in range(repeats))


def fma_rate(repeats: int) -> float:
    """float32 FMAs per second one thread runs (the best of ``repeats`` runs of ~50M)."""
    ext = _probes()
    ext.fma_rate(10 ** 5)
    return max(ext.fma_rate(5 * 10 ** 5) for _ in range(repeats))


def matrices_of(lm) -> list:
    return [m for name, m in lm.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name] + [lm.lm_head]


def bytes_per_token(lm) -> int:
    """Bytes one decode step reads: the decoder matrices and the head as the engine reads them, and the norms
    (the embedding gives one row a token: left out)."""
    total = sum(p.numel() * p.element_size() for name, p in lm.named_parameters() if "norm" in name)
    for m in matrices_of(lm):
        stored = cpu_engine.stored_of(m)
        total += stored.nbytes if stored is not None else m.weight.numel() * 4
    return total


def weights_per_token(lm) -> int:
    """Multiply-adds per token row: one per weight of the decoder matrices and the head."""
    return sum(m.weight.numel() for m in matrices_of(lm))


def stored_formats(lm) -> str:
    """The formats the engine reads for ``lm``'s matrices, e.g. 'q4_1 x210, q8_0 x1'."""
    counts: dict[str, int] = {}
    for m in matrices_of(lm):
        stored = cpu_engine.stored_of(m)
        fmt = stored.fmt if stored is not None else "float32"
        counts[fmt] = counts.get(fmt, 0) + 1
    return ", ".join(f"{f} x{n}" for f, n in counts.items())

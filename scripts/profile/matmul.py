"""The engine's matmul alone (``kangaroo/csrc/matmul.cpp``): one decoder layer's matrices in a weight format, times
1..N input rows, against the FMA rate of this core. What a verify pass pays per added row, without the model.

    python -m scripts.profile matmul --fmt q4_1 --rows 8 --out runs/profile/matmul

Shapes default to SmolLM2-135M's layer (q/k/v fused 960 x 576, o 576 x 576, gate/up fused 3072 x 576, down
576 x 1536); random weights, quantized with ggml's reference quantizers (timing does not depend on the values).
"""
from __future__ import annotations

import time

import torch

from evaluation.cli import OneLineParser, fail
from kangaroo import cpu_engine
from kangaroo.weight_formats import FORMATS, quantize
from scripts.profile.limits import fma_rate
from scripts.profile.report import command, mode_parser, write_report

LAYER = "960x576,576x576,3072x576,576x1536"


def build_parser() -> OneLineParser:
    p = mode_parser("matmul", __doc__, model=False, speculation=False)
    p.add_argument("--fmt", default="q4_1", choices=FORMATS)
    p.add_argument("--shapes", default=LAYER, help="rows x cols of each matrix, comma-separated")
    p.add_argument("--rows", type=int, default=8, help="time 1..ROWS input rows")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--out", default="runs/profile/matmul", help="writes OUT/matmul.md and OUT/matmul.json")
    return p


def parse_shapes(text: str) -> list[tuple[int, int]]:
    try:
        shapes = [tuple(int(v) for v in s.split("x")) for s in text.split(",")]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        fail(f"--shapes {text!r}: use ROWSxCOLS[,ROWSxCOLS...], e.g. {LAYER}")
    return shapes


def time_rows(weights: list, cols: list[int], n: int, repeats: int) -> float:
    """Seconds one call over every matrix takes with ``n`` input rows (the best of ``repeats``)."""
    ext = cpu_engine.extension()
    xs = [torch.randn(n, c) for c in cols]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for w, x in zip(weights, xs):
            ext.linear(x, w)
        best = min(best, time.perf_counter() - t0)
    return best


def table_markdown(args, isa: str, peak: float, seconds: list[float], per_row: int) -> str:
    """One row per input-row count n: ms, against one row, the added row, the FMA rate and its share of the peak."""
    lines = [f"# matmul: {args.fmt}, shapes {args.shapes}, {args.num_threads} thread(s), {isa}; FMA probe "
             f"{peak / 1e9:.1f} G/s", "", f"- command: `{command('matmul', args.argv)}`", "",
             "| rows | ms | / 1 row | added row ms | G FMA/s | of the FMA peak |", "|---:|---:|---:|---:|---:|---:|"]
    for n, t in enumerate(seconds, 1):
        added = "" if n == 1 else f"{(t - seconds[n - 2]) * 1e3:.3f}"
        rate = n * per_row / t
        lines.append(f"| {n} | {t * 1e3:.3f} | {t / seconds[0]:.2f} | {added} | {rate / 1e9:.1f} | {rate / peak:.0%} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = argv
    shapes = parse_shapes(args.shapes)
    if args.rows < 1 or args.repeats < 1:
        fail("--rows and --repeats must be at least 1")
    if cpu_engine.extension() is None:
        fail("the engine's C++ extension is not built on this machine (a C++ compiler and AVX2 are needed)")
    torch.set_num_threads(args.num_threads)
    torch.manual_seed(0)
    try:
        weights = [cpu_engine.engine_weight(quantize(torch.randn(r, c) * 0.02, args.fmt)) for r, c in shapes]
    except ValueError as e:
        fail(f"--fmt {args.fmt}: {e}")
    peak, isa = fma_rate(3), cpu_engine.extension().isa
    seconds = [time_rows(weights, [c for _, c in shapes], n, args.repeats) for n in range(1, args.rows + 1)]
    md = table_markdown(args, isa, peak, seconds, sum(r * c for r, c in shapes))
    record = {"fmt": args.fmt, "shapes": args.shapes, "threads": args.num_threads, "isa": isa, "fma_per_s": peak,
              "seconds_by_rows": seconds, "command": command("matmul", argv)}
    write_report(args.out, "matmul", md, record)
    return 0

"""Losslessness and speed of the baseline greedy decoder against Hugging Face ``generate`` (and Kangaroo): an alias
of the one benchmark entry point (``scripts.benchmark_methods``) kept for the command in runs/baseline/README.md.

    python -m scripts.bench_baseline --model-id smollm2-135m --question-end 10 --max-new-tokens 128

runs ``python -m scripts.benchmark_methods --methods hf_generate,kangaroo --all-turns`` on questions
--question-begin..--question-end (every one of them, whatever its category), with this script's defaults; any
other benchmark flag may follow. Writes OUT/raw.jsonl, table.md, summary.json, config.json and speedup.png
(the old OUT/lossless_speed.json is no longer written); exit code 1 if an output differs from the baseline's.
"""
from __future__ import annotations

import sys

from evaluation.cli import run_main
from scripts.benchmark.cli import main as benchmark_main

DEFAULTS = ["--model-id", "smollm2-135m", "--question-end", "10", "--max-new-tokens", "128", "--out", "runs/baseline"]
ALL = str(10 ** 6)  # --per-category: every selected question


def benchmark_argv(argv: list[str]) -> list[str]:
    """The benchmark's argv: this alias's defaults, then its fixed choices, then the caller's flags (last wins)."""
    return [*DEFAULTS, "--per-category", ALL, "--methods", "hf_generate,kangaroo", "--all-turns", *argv]


def main(argv=None) -> int:
    return benchmark_main(benchmark_argv(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    raise SystemExit(run_main(main))

"""The method comparison table: ``python -m scripts.benchmark_methods`` (flags and outputs: scripts/benchmark/cli.py,
the parts: scripts/benchmark/)."""
from evaluation.cli import run_main
from scripts.benchmark.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(run_main(main))

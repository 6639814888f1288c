"""python -m scripts.benchmark [flags]: the method comparison table (flags and outputs: cli.py; the parts:
scripts/benchmark/__init__.py)."""
from evaluation.cli import run_main
from scripts.benchmark.cli import main

if __name__ == "__main__":
    raise SystemExit(run_main(main))

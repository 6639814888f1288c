"""python -m scripts.profile MODE [flags]: one profiler, its modes (scripts/profile/__init__.py says what each
measures)."""
from __future__ import annotations

from common.command_line import run_main, run_named
from scripts.profile import block, engine, matmul, overhead, shape

MODES = {"block": block.main, "shape": shape.main, "overhead": overhead.main, "matmul": matmul.main,
         "engine": engine.main}


def main(argv=None) -> int:
    return run_named("python -m scripts.profile", MODES, argv)


if __name__ == "__main__":
    raise SystemExit(run_main(main))

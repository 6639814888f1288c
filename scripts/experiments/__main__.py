"""python -m scripts.experiments NAME [flags]: run one experiment (see scripts/experiments/__init__.py)."""
from __future__ import annotations

import sys

from evaluation.cli import fail, run_main
from scripts.experiments import heldout, sweeps

NAMES = (*sweeps.SWEEPS, "heldout")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in NAMES:
        fail(f"name an experiment first: python -m scripts.experiments {{{','.join(NAMES)}}} [flags] "
             f"(got {argv[0] if argv else 'nothing'})")
    name, rest = argv[0], argv[1:]
    return heldout.main(rest) if name == "heldout" else sweeps.main(name, rest)


if __name__ == "__main__":
    raise SystemExit(run_main(main))

"""python -m scripts.experiments NAME [flags]: run one experiment (scripts/experiments/__init__.py lists them)."""
from __future__ import annotations

from functools import partial

from common.command_line import run_main, run_named
from scripts.experiments import ablations, heldout, standalone, sweeps
from scripts.experiments.ceiling import draft_ceiling, feature_ceiling, feature_cost, learnability, projection
from scripts.experiments.drafter_sweep import sweep as drafter_sweep
from scripts.experiments.replay import lookup as replay_lookup, online as replay_online
from scripts.experiments.report_files import ENTRY

EXPERIMENTS = {**{name: partial(sweeps.main, name) for name in sweeps.SWEEPS}, "heldout": heldout.main,
               "ablations": ablations.main, "drafter_sweep": drafter_sweep.main, "ceiling": draft_ceiling.main,
               "learnability": learnability.main, "projection": projection.main,
               "feature_ceiling": feature_ceiling.main, "feature_cost": feature_cost.main,
               "replay_online": replay_online.main, "replay_lookup": replay_lookup.main, "standalone": standalone.main}


def main(argv=None) -> int:
    return run_named(ENTRY, EXPERIMENTS, argv)


if __name__ == "__main__":
    raise SystemExit(run_main(main))

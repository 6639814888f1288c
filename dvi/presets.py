"""Loss ablation presets, chosen by ``--dvi-ablation``.

Each factor multiplies its term's schedule weight: total = w_kl (kd KD_fwd + rkl KL_rev) + w_ce ce CE + w_pg pg PG.
``cold_start=True`` applies the CE/PG weight at its full value (ce_max / pgmax) from step 0, with no KD warm-up:
the DVI paper's "from a cold start" ablation (and why those runs collapse).
"""
from __future__ import annotations

from dataclasses import dataclass

from common.errors import ConfigError


@dataclass(frozen=True)
class LossPreset:
    kd: float
    rkl: float
    ce: float
    pg: float
    cold_start: bool = False


PRESETS = {
    "full": LossPreset(kd=1.0, rkl=1.0, ce=1.0, pg=1.0, cold_start=False),
    "kd_only": LossPreset(kd=1.0, rkl=1.0, ce=0.0, pg=0.0, cold_start=False),
    "ce_only": LossPreset(kd=0.0, rkl=0.0, ce=1.0, pg=0.0, cold_start=True),
    "pg_only": LossPreset(kd=0.0, rkl=0.0, ce=0.0, pg=1.0, cold_start=True),
    "kd+ce": LossPreset(kd=1.0, rkl=1.0, ce=1.0, pg=0.0, cold_start=False),
    "kd+pg": LossPreset(kd=1.0, rkl=1.0, ce=0.0, pg=1.0, cold_start=False),
}


def get_preset(name: str) -> LossPreset:
    if name not in PRESETS:
        raise ConfigError(f"--dvi-ablation {name!r} is not a choice: pick one of {', '.join(PRESETS)}")
    return PRESETS[name]

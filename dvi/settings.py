"""Named DVI settings: the values of the ``--dvi-*`` training flags a run leaves out (``--dvi-settings NAME``).

    tuned     the defaults of ``dvi.config.DVIConfig``, measured on the bundled SmolLM2-135M (exit layer 2):
              runs/replay and runs/main say which sweeps chose each value and what they gave
    workplan  the work plan's quick reference, tuned for Vicuna-7B on a GPU (one flag away: --dvi-settings workplan)

The training flags are the ``DVIConfig`` fields marked ``named`` (their flags default to None). A flag given on the
command line always wins over the named settings; ``--dvi-lora-r`` / ``--dvi-lora-alpha`` left out take the
``--load-lora`` checkpoint's shape first (``kangaroo_dvi.session_flags.resolve_lora_shape``).
"""
from __future__ import annotations

from functools import reduce

from common.config_fields import dest_of, walk_fields
from common.errors import ConfigError
from dvi.config import DVIConfig

# training flag (its parsed destination) -> path of its DVIConfig field, e.g. "dvi_lr" -> ("trainer", "lr")
FLAG_FIELDS = {dest_of(f.metadata["flag"]): path for path, f in walk_fields(DVIConfig) if f.metadata.get("named")}


def flag_values(c: DVIConfig) -> dict:
    """The training flags' values (parsed destinations) of a ``DVIConfig``."""
    return {dest: reduce(getattr, path, c) for dest, path in FLAG_FIELDS.items()}


SETTINGS = {
    "tuned": flag_values(DVIConfig()),  # the typed config's defaults
    "workplan": {"dvi_lr": 1e-3, "dvi_lora_r": 8, "dvi_lora_alpha": 8.0, "dvi_tau": 1.5, "dvi_warmup_steps": 1000,
                 "dvi_kl_lambda0": 1.0, "dvi_kl_lambdamin": 0.1, "dvi_pg_lambda_max": 0.2, "dvi_update_every": 8,
                 "dvi_ablation": "full", "dvi_kd_top1": 0.0, "dvi_pg_form": "reinforce", "dvi_dense": False},
}
DEFAULT = "tuned"


def settings(name: str) -> dict:
    if name not in SETTINGS:
        raise ConfigError(f"--dvi-settings {name!r} is not a choice: pick one of {', '.join(SETTINGS)}")
    return dict(SETTINGS[name])

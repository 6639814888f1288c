"""Named DVI settings: the values of the ``--dvi-*`` training flags a run leaves out (``--dvi-settings NAME``).

    tuned     the defaults of ``dvi.config.DVIConfig``, measured on the bundled SmolLM2-135M (exit layer 2):
              runs/replay and runs/main say which sweeps chose each value and what they gave
    workplan  the work plan's quick reference, tuned for Vicuna-7B on a GPU (one flag away: --dvi-settings workplan)

A flag given on the command line always wins over the named settings; ``--dvi-lora-r`` / ``--dvi-lora-alpha`` left out
take the ``--load-lora`` checkpoint's shape first (``evaluation.cli.resolve_lora_shape``).
"""
from __future__ import annotations

from dvi.config import DVIConfig
from dvi.types import DVIConfigError


# training flag (argparse destination) -> (DVIConfig section, field): the one map between the two
FLAG_FIELDS = {"dvi_lr": ("trainer", "lr"), "dvi_lora_r": ("lora", "r"), "dvi_lora_alpha": ("lora", "alpha"),
               "dvi_tau": ("trainer", "tau"), "dvi_warmup_steps": ("schedule", "warmup"),
               "dvi_kl_lambda0": ("schedule", "kl0"), "dvi_kl_lambdamin": ("schedule", "klmin"),
               "dvi_pg_lambda_max": ("schedule", "pgmax"), "dvi_update_every": ("trainer", "update_every"),
               "dvi_ablation": ("trainer", "ablation"), "dvi_kd_top1": ("trainer", "kd_top1"),
               "dvi_pg_form": ("trainer", "pg_form"), "dvi_dense": ("dense", "enabled")}


def flag_values(c: DVIConfig) -> dict:
    """The training flags' values (argparse destinations) of a ``DVIConfig``."""
    return {dest: getattr(getattr(c, section), name) for dest, (section, name) in FLAG_FIELDS.items()}


def config_fields(args) -> dict:
    """The training flags of parsed ``args`` as ``{section: {field: value}}`` for the ``DVIConfig`` sections."""
    out: dict = {}
    for dest, (section, name) in FLAG_FIELDS.items():
        out.setdefault(section, {})[name] = getattr(args, dest)
    return out


SETTINGS = {
    "tuned": flag_values(DVIConfig()),  # the typed config's defaults
    "workplan": {"dvi_lr": 1e-3, "dvi_lora_r": 8, "dvi_lora_alpha": 8.0, "dvi_tau": 1.5, "dvi_warmup_steps": 1000,
                 "dvi_kl_lambda0": 1.0, "dvi_kl_lambdamin": 0.1, "dvi_pg_lambda_max": 0.2, "dvi_update_every": 8,
                 "dvi_ablation": "full", "dvi_kd_top1": 0.0, "dvi_pg_form": "reinforce", "dvi_dense": False},
}
DEFAULT = "tuned"


def settings(name: str) -> dict:
    if name not in SETTINGS:
        raise DVIConfigError(f"--dvi-settings {name!r} is not a named setting; choose one of {', '.join(SETTINGS)}")
    return dict(SETTINGS[name])

"""Named DVI settings: the values of the ``--dvi-*`` training flags a run leaves out (``--dvi-settings NAME``).

    tuned     measured on the bundled SmolLM2-135M (exit layer 2): runs/replay and runs/main say which sweeps
              chose each value and what they gave
    workplan  the work plan's quick reference, tuned for Vicuna-7B on a GPU (one flag away: --dvi-settings workplan)

A flag given on the command line always wins over the named settings; ``--dvi-lora-r`` / ``--dvi-lora-alpha`` left out
take the ``--load-lora`` checkpoint's shape first (``evaluation.cli.resolve_lora_shape``).
"""
from __future__ import annotations

from dvi.types import DVIConfigError

# keys are the argparse destinations of the flags
SETTINGS = {
    "workplan": {"dvi_lr": 1e-3, "dvi_lora_r": 8, "dvi_lora_alpha": 8.0, "dvi_tau": 1.5, "dvi_warmup_steps": 1000,
                 "dvi_kl_lambda0": 1.0, "dvi_kl_lambdamin": 0.1, "dvi_pg_lambda_max": 0.2, "dvi_update_every": 8,
                 "dvi_ablation": "full", "dvi_kd_top1": 0.0, "dvi_pg_form": "reinforce", "dvi_dense": False},
    "tuned": {"dvi_lr": 3e-3, "dvi_lora_r": 64, "dvi_lora_alpha": 64.0, "dvi_tau": 1.0, "dvi_warmup_steps": 500,
              "dvi_kl_lambda0": 1.0, "dvi_kl_lambdamin": 1.0, "dvi_pg_lambda_max": 0.2, "dvi_update_every": 8,
              "dvi_ablation": "full", "dvi_kd_top1": 1.0, "dvi_pg_form": "expected", "dvi_dense": True},
}
DEFAULT = "tuned"


def settings(name: str) -> dict:
    if name not in SETTINGS:
        raise DVIConfigError(f"--dvi-settings {name!r} is not a named setting; choose one of {', '.join(SETTINGS)}")
    return dict(SETTINGS[name])

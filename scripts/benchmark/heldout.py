"""The benchmark's held-out agreement: each self-drafter the run deploys (dvi's trained one, kangaroo's identity
drafter as the untrained reference) on the fixed held-out set every DVI run evaluates on (``dvi/heldout.py``)."""
from __future__ import annotations

from common.config_fields import add_flags, from_args
from common.errors import ConfigError
from dvi.config import HeldoutConfig
from evaluation.cli import drafter_config, fail


def add_heldout_args(p) -> None:
    add_flags(p.add_argument_group("held-out agreement of the trained drafter (dvi/heldout.py)"), HeldoutConfig,
              skip={"--heldout-every"})


def heldout_config(args):
    """The --heldout-* flags as a ``HeldoutConfig`` (one line on a bad value)."""
    try:
        return from_args(HeldoutConfig, args)
    except ConfigError as e:
        fail(str(e))


def heldout_scores(args, models: dict, tokenizer) -> dict:
    """The held-out agreement of each self-drafter the run deploys, on the one held-out set, as the methods draft
    (their head precision set, as ``build_drafter`` sets it): dvi's trained drafter (--load-lora) and, where the
    run has it, the identity drafter (kangaroo's, untrained) as the reference."""
    from dvi.heldout_eval import evaluate_deployed
    from kangaroo.packed_head import configure

    cfg, out = heldout_config(args), {}
    for name in ("dvi", "kangaroo"):
        if name in models:
            configure(models[name], drafter_config(args).head_precision, frozen=True)
            row = evaluate_deployed(models[name], tokenizer, cfg, args.steps)
            if row is not None:
                out[name] = row | {"drafter": args.load_lora if name == "dvi" else "identity (untrained)"}
    return out

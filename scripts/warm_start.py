"""Build the feature drafter's warm start once (``dvi/warm_start.py``): an online run then starts from it with
``--dvi-warm-start PATH`` (``bash scripts/main.sh`` does both).

    python -m scripts.warm_start [--model-id smollm2-135m] [--out .cache/warm_start/smollm2-135m.pt]
                                 [--begin 1000 --end 2000 --epochs 3 ...]

Cached: when ``--out`` already holds a warm start built with the same settings, the command says so and returns
(``--rebuild`` builds it anew). The drafters are shaped as an online run's with the same ``--feature-window``,
``--dvi-lora-r``/``--dvi-lora-alpha`` and ``--drafter-vocab`` (the defaults by default), which the online run checks
when it loads the file.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from common.command_line import OneLineParser, run_main
from common.config_fields import add_flags, from_args
from dvi.config import LoRAConfig
from dvi.warm_start import DEFAULT_DIR, WarmStartConfig, cached_settings, collect, save, train
from kangaroo.drafter_config import DrafterConfig


def parse_args(argv=None):
    p = OneLineParser(prog="python -m scripts.warm_start", description=__doc__.splitlines()[0])
    p.add_argument("--model-id", default="smollm2-135m")
    p.add_argument("--out", default=None, help=f"the warm-start checkpoint (default {DEFAULT_DIR}/<model>.pt)")
    p.add_argument("--rebuild", action="store_true", help="build it even when --out holds one with these settings")
    p.add_argument("--num-threads", type=int, default=None, help="torch threads (default: torch's)")
    add_flags(p, WarmStartConfig)
    add_flags(p, DrafterConfig, only={"--feature-window", "--drafter-vocab"})
    add_flags(p, LoRAConfig)
    return p.parse_args(argv)


def out_path(args) -> Path:
    return Path(args.out or f"{DEFAULT_DIR}/{Path(args.model_id).name}.pt")


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = from_args(WarmStartConfig, args)
    dcfg = from_args(DrafterConfig, args)
    lora = LoRAConfig(r=args.dvi_lora_r or LoRAConfig.r, alpha=args.dvi_lora_alpha or LoRAConfig.alpha)
    out = out_path(args)
    if not args.rebuild and cached_settings(out) == asdict(cfg):
        print(f"[warm-start] {out} holds a warm start with these settings (--rebuild builds it anew)")
        return 0
    from kangaroo.runtime import apply_runtime

    apply_runtime(args)
    from kangaroo.drafter_config import apply_drafter_vocab
    from kangaroo.drafter_head import attach_drafter_head
    from kangaroo.feature_drafter import attach_feature_drafter
    from kangaroo.kangaroo_model import KangarooModel
    from kangaroo.model_loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(args.model_id)
    model = KangarooModel(model_id=args.model_id, base_model=load_causal_lm(args.model_id))
    apply_drafter_vocab(dcfg, model, tokenizer)
    attach_drafter_head(model, r=lora.r, alpha=lora.alpha)
    attach_feature_drafter(model, dcfg.feature_window, lora.r, lora.alpha)
    curve = train(model, collect(model, tokenizer, cfg), cfg)
    save(out, model, cfg, curve)
    print(f"[warm-start] -> {out} (start an online run from it: --dvi-warm-start {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))

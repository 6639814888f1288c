"""The feature drafter's offline ceiling: the same architecture (``kangaroo/feature_drafter.py``) and the same trainer
(``dvi.online_trainer.OnlineTrainer`` on its ``FeaturePart``) trained for N epochs on the positions the main job's
online run trains on, scored by held-out top-1 agreement on prompts it never trained on.

    python -m scripts.experiments feature_ceiling --answers runs/main/answers.jsonl \
        --out runs/exp_feature_drafter/offline \
        --epochs 6 [--lr 3e-3 --window 16 --init identity --lora-r 64]

Data (``feature_data.py``, captured once into ``--data``, default OUT/../data.pt): the first
``--train-prompts`` ShareGPT prompts with the main job's answers, each position with the verifier's top-K, and the
next ``--heldout-prompts`` prompts answered greedily. Each training position p gives one tuple, as online: the
feature drafter's entry p - 1 (its segment of the ``--window`` entries ending there: the TRUE features and tokens)
and the verifier's logits at p. An epoch is one pass over them in random batches of ``--batch-size``; the held-out
top-1 (the drafter's argmax against the verifier's greedy token, teacher-forced, over every held-out answer
position) is taken every ``--eval-every`` steps and at the end. OUT/result.json holds the curve. ``--extra B:E``
adds a warm start's rows (``dvi/warm_start.py``: prompts B..E-1, ``--extra-source``) to the main job's: what more
data of the same kind buys (``runs/exp_warm_start``).
``--eval-checkpoints CKPT...`` scores the feature drafters of DVI checkpoints (an online run's) on the same held-out
positions instead (OUT/online.json): the online side of the comparison.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from common.atomic import atomic_write_text
from dvi import warm_start
from dvi.offline_data import heldout_top1, tuples
from dvi.warm_start import SOURCES, WarmStartConfig
from common.command_line import OneLineParser
from kangaroo.runtime import apply_runtime
from scripts.experiments.report_files import ENTRY
from kangaroo.feature_drafter import DEFAULT_WINDOW, INITS, attach_feature_drafter


def parse_args(argv=None):
    p = OneLineParser(prog=f"{ENTRY} feature_ceiling", description=__doc__.splitlines()[0])
    p.add_argument("--model-id", default="smollm2-135m")
    p.add_argument("--answers", default="runs/main/answers.jsonl", help="the main job's answers (its prompts' order)")
    p.add_argument("--prompts-jsonl", default="assets/sharegpt.jsonl")
    p.add_argument("--train-prompts", type=int, default=150)
    p.add_argument("--heldout-prompts", type=int, default=40)
    p.add_argument("--prefill", type=int, default=32, help="prompt positions per prompt, as --dvi-prefill-positions")
    p.add_argument("--topk", type=int, default=1024)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--data", default=None, help="captured data file (default OUT/../data.pt)")
    p.add_argument("--out", default="runs/exp_feature_drafter/offline")
    p.add_argument("--epochs", type=float, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    p.add_argument("--init", default="identity", choices=INITS)
    p.add_argument("--lora-r", type=int, default=64)
    p.add_argument("--kd-top1", type=float, default=1.0, help="weight of top-1 distillation (as --dvi-kd-top1)")
    p.add_argument("--rkl", type=float, default=1.0, help="factor of the reverse KL term (the full preset's: 1)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="the trainer's gradient norm clip (0: none)")
    p.add_argument("--bf16", default="true", choices=("true", "false"),
                   help="the trainer's forward in bfloat16 where native (as --dvi-feature-bf16)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-checkpoints", nargs="*", default=None,
                   help="instead of training: the held-out top-1 of the feature drafter of each DVI checkpoint given "
                        "(e.g. an online run's step_*.pt and final.pt), into OUT/online.json")
    p.add_argument("--extra", default=None, metavar="BEGIN:END",
                   help="also train on prompts BEGIN..END-1 of --prompts-jsonl as a warm start collects them "
                        "(dvi/warm_start.py; every training row's top-K then cut to --extra-topk)")
    p.add_argument("--extra-source", default="greedy", choices=SOURCES, help="the warm start's --source")
    p.add_argument("--extra-topk", type=int, default=64)
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--engine", default="auto", choices=("auto", "plain"))
    return p.parse_args(argv)


def train(model, data: dict, args, log=print) -> list[dict]:
    """Train the attached feature drafter (``dvi.warm_start.train``); the held-out curve [{step, epoch, examples,
    top1, loss}]."""
    cfg = WarmStartConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    return warm_start.train(model, data["train"], cfg, bf16=args.bf16 == "true", kd_top1=args.kd_top1, rkl=args.rkl,
                            grad_clip=args.grad_clip or None, eval_every=args.eval_every, log=log,
                            evaluate=lambda: heldout_top1(model.feature_drafter, model.drafter_vocab, data["heldout"]))


def evaluate_checkpoints(model, data: dict, args, out: Path) -> int:
    """The held-out top-1 of each checkpoint's feature drafter (its global step: blocks of the online run)."""
    from dvi.checkpoint import read_ckpt
    from dvi.deploy import deploy_drafter, read_deployment

    rows = []
    for path in args.eval_checkpoints:
        model.feature_drafter = model.drafter_head = None
        deploy_drafter(model, read_deployment(path))
        ck = read_ckpt(path)
        rows.append({"checkpoint": str(path), "blocks": ck.get("global_step"),
                     "train_steps": (ck.get("extra") or {}).get("train_steps"),
                     "top1": heldout_top1(model.feature_drafter, model.drafter_vocab, data["heldout"])})
        print(f"[offline] {path}: block {rows[-1]['blocks']}, held-out top-1 {rows[-1]['top1']:.4f}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "online.json", json.dumps(rows, indent=1))
    return 0


def add_extra(model, tokenizer, data: dict, args) -> None:
    """``--extra``: a warm start's rows after the main job's (every row's top-K cut to ``--extra-topk``)."""
    begin, _, end = args.extra.partition(":")
    cfg = WarmStartConfig(prompts_jsonl=args.prompts_jsonl, begin=int(begin), end=int(end), source=args.extra_source,
                          topk=args.extra_topk, prefill_positions=args.prefill)
    for s in data["train"]:
        s["top_idx"], s["top_val"] = s["top_idx"][:, :cfg.topk].contiguous(), s["top_val"][:, :cfg.topk].contiguous()
    data["train"] = data["train"] + warm_start.collect(model, tokenizer, cfg)


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_runtime(args)
    torch.manual_seed(args.seed)
    from kangaroo.drafter_config import DrafterConfig, apply_drafter_vocab
    from kangaroo.kangaroo_model import KangarooModel
    from kangaroo.model_loading import load_causal_lm, load_tokenizer
    from scripts.experiments.ceiling.feature_data import load_or_build

    tok = load_tokenizer(args.model_id)
    model = KangarooModel(model_id=args.model_id, base_model=load_causal_lm(args.model_id))
    apply_drafter_vocab(DrafterConfig(model_id=args.model_id), model, tok)
    out = Path(args.out)
    data = load_or_build(Path(args.data) if args.data else out.parent / "data.pt", model, tok, args)
    if args.eval_checkpoints is not None:
        return evaluate_checkpoints(model, data, args, out)
    if args.extra:
        add_extra(model, tok, data, args)
    attach_feature_drafter(model, args.window, args.lora_r, float(args.lora_r), args.init)
    curve = train(model, data, args)
    result = {"settings": {k: v for k, v in vars(args).items()}, "tuples": len(tuples(data["train"])),
              "heldout_positions": sum(len(s["pos"]) for s in data["heldout"]), "curve": curve,
              "best_top1": max(c["top1"] for c in curve), "final_top1": curve[-1]["top1"]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "result.json", json.dumps(result, indent=1))
    print(f"[offline] held-out top-1: final {result['final_top1']:.4f}, best {result['best_top1']:.4f} -> {out}")
    return 0


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
position) is taken every ``--eval-every`` steps and after each epoch. OUT/result.json holds the curve.
``--eval-checkpoints CKPT...`` scores the feature drafters of DVI checkpoints (an online run's) on the same held-out
positions instead (OUT/online.json): the online side of the comparison.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from common.atomic import atomic_write_text
from dvi.config import ScheduleConfig, TrainerConfig
from dvi.online_trainer import OnlineTrainer
from dvi.presets import LossPreset
from dvi.trainable_parts import FeaturePart
from dvi.types import Batch
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
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--engine", default="auto", choices=("auto", "plain"))
    return p.parse_args(argv)


def tuples(seqs: list[dict]) -> list[tuple[int, int]]:
    """(sequence, row) of every scored position with an entry before it (position >= 1)."""
    return [(i, r) for i, s in enumerate(seqs) for r, p in enumerate(s["pos"].tolist()) if p >= 1]


def make_batch(seqs: list[dict], items: list[tuple[int, int]], window: int) -> Batch:
    """The tuples ``items`` as the buffer would hand them to the trainer: each entry's segment right-aligned,
    the verifier's top-K at its position, KD-only."""
    n, d = len(items), seqs[0]["f"].shape[1]
    f = torch.zeros(n, window, d, dtype=torch.float16)
    ids = torch.zeros(n, window, dtype=torch.long)
    length, first = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    for b, (i, r) in enumerate(items):
        s, k = seqs[i], int(seqs[i]["pos"][r]) - 1
        a = max(0, k - window + 1)
        c = k - a + 1
        f[b, window - c:] = s["f"][a:k + 1]
        ids[b, window - c:] = s["ids"][a + 1:k + 2].long()
        length[b], first[b] = c, a
    z_idx = torch.stack([seqs[i]["top_idx"][r] for i, r in items]).long()
    z_val = torch.stack([seqs[i]["top_val"][r] for i, r in items])
    zeros = torch.zeros(n, dtype=torch.long)
    return Batch(hk=torch.zeros(n, d, dtype=torch.float16), token=z_idx[:, 0], reward=zeros.float(), pos=zeros,
                 is_first_reject=zeros.bool(), z_idx=z_idx, z_val=z_val, kd_only=torch.ones(n, dtype=torch.bool),
                 feat_f=f, feat_ids=ids, feat_len=length, feat_pos=first)


@torch.no_grad()
def heldout_top1(model, seqs: list[dict]) -> float:
    """Teacher-forced top-1 agreement with the verifier's greedy token over every held-out answer position."""
    fd, hits, total = model.feature_drafter, 0, 0
    for s in seqs:
        g = fd.teacher_forced(s["f"].to(fd.dtype), s["ids"].long())
        cols = fd.drafter_logits_from_hk(g).argmax(-1)
        pred = cols if model.drafter_vocab is None else model.drafter_vocab[cols]
        pos = s["pos"]
        hits += int((pred[pos - 1] == s["top_idx"][:, 0].long()).sum())
        total += len(pos)
    return hits / max(1, total)


def train(model, data: dict, args, log=print) -> list[dict]:
    """Train the attached feature drafter; the held-out curve [{step, epoch, examples, top1}]."""
    part = FeaturePart(model.feature_drafter, bf16=args.bf16 == "true")
    trainer = OnlineTrainer(part, TrainerConfig(lr=args.lr, kd_top1=args.kd_top1, max_ms=None),
                            ScheduleConfig(warmup=0), model.config.vocab_size,
                            preset=LossPreset(kd=1.0, rkl=args.rkl, ce=0.0, pg=0.0), grad_clip=args.grad_clip or None)
    items = tuples(data["train"])
    g = torch.Generator().manual_seed(args.seed)
    total = int(args.epochs * len(items) / args.batch_size)
    curve = [{"step": 0, "epoch": 0.0, "examples": 0, "top1": heldout_top1(model, data["heldout"])}]
    log(f"[offline] {len(items)} training tuples, {total} steps of {args.batch_size}; held-out top-1 at start "
        f"{curve[0]['top1']:.4f}")
    order, at, t0 = [], 0, time.time()
    for step in range(1, total + 1):
        if at + args.batch_size > len(order):
            order, at = torch.randperm(len(items), generator=g).tolist(), 0
        batch = make_batch(data["train"], [items[i] for i in order[at:at + args.batch_size]], args.window)
        at += args.batch_size
        stats = trainer.step(batch, step)
        epoch_end = (step * args.batch_size) // len(items) > ((step - 1) * args.batch_size) // len(items)
        if step % args.eval_every == 0 or epoch_end or step == total:
            curve.append({"step": step, "epoch": step * args.batch_size / len(items),
                          "examples": step * args.batch_size, "top1": heldout_top1(model, data["heldout"]),
                          "loss": stats["loss"]})
            log(f"[offline] step {step} epoch {curve[-1]['epoch']:.2f}: held-out top-1 {curve[-1]['top1']:.4f} "
                f"loss {stats['loss']:.3f} ({time.time() - t0:.0f}s)")
    return curve


def evaluate_checkpoints(model, data: dict, args, out: Path) -> int:
    """The held-out top-1 of each checkpoint's feature drafter (its global step: blocks of the online run)."""
    from dvi.checkpoint import read_ckpt
    from dvi.deploy import deploy_drafter

    rows = []
    for path in args.eval_checkpoints:
        model.feature_drafter = model.drafter_head = None
        deploy_drafter(model, path)
        ck = read_ckpt(path)
        rows.append({"checkpoint": str(path), "blocks": ck.get("global_step"),
                     "train_steps": (ck.get("extra") or {}).get("train_steps"),
                     "top1": heldout_top1(model, data["heldout"])})
        print(f"[offline] {path}: block {rows[-1]['blocks']}, held-out top-1 {rows[-1]['top1']:.4f}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "online.json", json.dumps(rows, indent=1))
    return 0


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
    attach_feature_drafter(model, args.window, args.lora_r, float(args.lora_r), args.init)
    curve = train(model, data, args)
    result = {"settings": {k: v for k, v in vars(args).items()}, "tuples": len(tuples(data["train"])),
              "heldout_positions": sum(len(s["pos"]) for s in data["heldout"]), "curve": curve,
              "best_top1": max(c["top1"] for c in curve), "final_top1": curve[-1]["top1"]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "result.json", json.dumps(result, indent=1))
    print(f"[offline] held-out top-1: final {result['final_top1']:.4f}, best {result['best_top1']:.4f} -> {out}")
    return 0


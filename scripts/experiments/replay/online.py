"""Online DVI learning replayed offline, prequentially: a fast, deterministic way to compare objectives and
settings on a model before spending hours of online runs, and to see what each does to the drafter's confidence.

Teacher-forced data (``scripts/experiments/teacher_forced.py``: the prompts and greedy answers of an answer file, in
file order: every answer position gives hk, the verifier's top-K logits and its greedy token). Then each run trains a
fresh LoRA drafter head with the real ``OnlineTrainer`` the way the online loop does, in stream order: for each
answer, first the current drafter is scored on its positions (top-1 agreement with the verifier and its top-1
probability, i.e. the confidence that gates drafting), then its tuples enter a ring buffer and ``--steps-per-answer``
trainer steps run on random batches of it. Every position is treated as a first drafted position: the drafted token
is the current drafter's argmax, reward = agreement, a disagreement is the block's first reject (on-policy tuples,
as the online loop would push them). The schedule step is the number of positions seen (~ blocks).

    python -m scripts.experiments replay_online --answers runs/main/answers.jsonl --max-answers 200 --out runs/replay \\
        --run "kd_soft ablation=kd_only" --run "full ablation=full" --run "top1 ablation=kd_only kd_top1=1"

A run is ``NAME key=value ...`` with keys of ``dvi.config.TrainerConfig`` (lr, tau, ablation, kd_top1, pg_form,
entropy_weight, batch_size), ``ScheduleConfig`` (warmup, kl0, klmin, pgmax), ``r`` / ``alpha`` (LoRA) and
``steps_per_answer``; the rest come from the flags (the small-model settings by default). Per run and per quarter
of the stream: top1_agree, mean confidence, expected calibration error (10 bins), the share of positions whose
confidence passes ``--threshold`` (they would be drafted) and how many of those agree (they would be accepted).
"""
from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path

import torch

from common.atomic import atomic_write_text
from dvi.buffer import DVIRingBuffer
from dvi.config import BufferConfig, ScheduleConfig, TrainerConfig
from dvi.online_trainer import OnlineTrainer
from dvi.types import DVITrainSample
from evaluation.cli import OneLineParser, add_exitlayer_arg, add_model_args, fail
from kangaroo.drafter_head import attach_drafter_head
from scripts.experiments.report_files import ENTRY
from scripts.experiments.teacher_forced import load_answer_data

TRAINER_KEYS = {f.name for f in fields(TrainerConfig)}
SCHEDULE_KEYS = {f.name for f in fields(ScheduleConfig)}
OTHER_KEYS = {"r", "alpha", "steps_per_answer"}


def parse_run(spec: str, base: dict) -> tuple[str, dict]:
    name, *pairs = spec.split()
    out = dict(base)
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or k not in TRAINER_KEYS | SCHEDULE_KEYS | OTHER_KEYS:
            fail(f"--run {spec!r}: {p!r} is not KEY=VALUE with a key of TrainerConfig, ScheduleConfig, r, alpha "
                 "or steps_per_answer")
        out[k] = type(base[k])(v) if k in base and base[k] is not None else _auto(v)
    return name, out


def _auto(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def calibration(conf: torch.Tensor, agree: torch.Tensor, threshold: float, bins: int = 10) -> dict:
    """Mean confidence, top-1 agreement, expected calibration error, and the draft/accept shares at ``threshold``."""
    n = max(1, conf.numel())
    b = (conf * bins).long().clamp(max=bins - 1)
    ece = sum(abs(float(conf[b == i].sum() - agree[b == i].float().sum())) for i in range(bins)) / n
    passed = conf >= threshold
    return {"top1_agree": float(agree.float().mean()), "mean_conf": float(conf.mean()), "ece": ece,
            "drafted_share": float(passed.float().mean()),
            "precision_at_threshold": float(agree[passed].float().mean()) if bool(passed.any()) else None}


@torch.no_grad()
def score(model, hk: torch.Tensor, target: torch.Tensor):
    probs = torch.softmax(model.drafter_logits_from_hk(hk), dim=-1)
    conf, idx = probs.max(dim=-1)
    return conf, idx, idx == target


def replay(model, data, cfg: dict, threshold: float) -> dict:
    torch.manual_seed(0)
    attach_drafter_head(model, r=cfg["r"], alpha=cfg["alpha"])
    tcfg = TrainerConfig(**{k: v for k, v in cfg.items() if k in TRAINER_KEYS})
    trainer = OnlineTrainer(model, tcfg, ScheduleConfig(**{k: v for k, v in cfg.items() if k in SCHEDULE_KEYS}),
                            model.config.vocab_size)
    V, d = model.config.vocab_size, model.config.hidden_size
    buf = DVIRingBuffer(BufferConfig(), d, V)
    confs, agrees, seen, t0 = [], [], 0, time.time()
    for hk, z_idx, z_val, target, _ in data:
        conf, idx, agree = score(model, hk, target)
        confs.append(conf)
        agrees.append(agree)
        for j in range(hk.shape[0]):
            z = torch.full((V,), -1e4)
            z[z_idx[j].long()] = z_val[j].float()
            buf.push(DVITrainSample(hk=hk[j], token=int(idx[j]), z_phi=z, reward=int(agree[j]), pos=1,
                                    is_first_reject=not bool(agree[j])))
        seen += hk.shape[0]
        for _ in range(cfg["steps_per_answer"]):
            if len(buf) >= tcfg.batch_size:
                trainer.step(buf.sample(tcfg.batch_size), seen)
    conf, agree = torch.cat(confs), torch.cat(agrees)
    q = len(conf) // 4
    parts = {"all": slice(None), "first_quarter": slice(0, q), "last_quarter": slice(len(conf) - q, None)}
    return {"config": cfg, "positions": len(conf), "s": round(time.time() - t0, 1),
            **{k: calibration(conf[s], agree[s], threshold) for k, s in parts.items()}}


def main(argv=None) -> int:
    ap = OneLineParser(prog=f"{ENTRY} replay_online", description=__doc__.splitlines()[0])
    add_model_args(ap)
    add_exitlayer_arg(ap)
    ap.set_defaults(model_id="smollm2-135m", num_threads=1)
    ap.add_argument("--answers", required=True, help="answer file of an online/Kangaroo run (token_ids)")
    ap.add_argument("--prompts-jsonl", default="assets/sharegpt.jsonl")
    ap.add_argument("--max-answers", type=int, default=None)
    ap.add_argument("--run", action="append", required=True, help="NAME key=value ... (see the module doc)")
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--out", default="runs/replay")
    args = ap.parse_args(argv)
    base = {**{f.name: f.default for f in fields(TrainerConfig)}, **{f.name: f.default for f in fields(ScheduleConfig)},
            # the small-model settings of scripts/main.sh; one trainer step per 8 blocks ~ 3 per 32-token answer
            "lr": 3e-3, "tau": 1.0, "warmup": 500, "klmin": 1.0, "max_ms": None, "kind": "inline",
            "r": 64, "alpha": 64.0, "steps_per_answer": 3}
    runs = [parse_run(s, base) for s in args.run]
    model, data = load_answer_data(args, args.answers, args.max_answers)
    results = {}
    for name, cfg in runs:
        results[name] = res = replay(model, data, cfg, args.threshold)
        lq = res["last_quarter"]
        print(f"[replay] {name}: last quarter top1_agree {lq['top1_agree']:.3f}, mean conf {lq['mean_conf']:.3f}, "
              f"ECE {lq['ece']:.3f}, drafted {lq['drafted_share']:.3f}, precision {lq['precision_at_threshold']} "
              f"({res['s']} s)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "replay.json", json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0

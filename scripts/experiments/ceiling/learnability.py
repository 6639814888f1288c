"""How well can a LoRA drafter head on layer-k features learn, and how fast? An offline training for choosing
DVI settings on a new model without hours of online runs.

Teacher-forced data: the prompts and greedy answers of a DVI/Kangaroo answer file (``token_ids``) are run once
through the model; every answer position gives (hk, verifier top-K logits, verifier argmax), exactly the tuples
the online loop would see. Then each configuration (lr x rank x loss preset) trains a fresh drafter head with the
real ``OnlineTrainer`` on random batches of the training split and reports held-out top-1 agreement with the
verifier (= acc@1 of the first draft) as it goes.

    python -m scripts.experiments learnability --answers runs/main/answers.jsonl --prompts-jsonl assets/sharegpt.jsonl \
        --lrs 1e-3,1e-2 --ranks 8,64 --train-steps 400 --out runs/probe

With ``--costs`` (the block_costs.json of ``python -m scripts.profile block`` at the same exit layer) each trained
drafter is also priced under ideal policies (``policies.py``); with ``--eval-raw`` (a benchmark's raw.jsonl) on that
benchmark's questions too, beside the n-gram and memory drafters and with its prefill counted (``draft_ceiling.py``
runs both over several exit layers). The teacher-forced data: ``scripts/experiments/teacher_forced.py``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from common.atomic import atomic_write_text
from dvi.config import ScheduleConfig, TrainerConfig
from dvi.online_trainer import OnlineTrainer
from dvi.types import Batch
from evaluation.cli import OneLineParser, add_exitlayer_arg, add_model_args, resolve_question_file
from kangaroo.drafter_head import attach_drafter_head
from scripts.experiments.ceiling.policies import (StepCosts, lookup_agreement, needed_agreement, policy_table,
                                                  prefill_steps, source_table)
from scripts.experiments.report_files import ENTRY
from scripts.experiments.teacher_forced import collect, load_answer_data, questions_data


@torch.no_grad()
def guesses(model, hk, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The drafter's softmax top-1 probability and its top-2 tokens at each of ``hk``'s positions."""
    conf, top2 = [], []
    for s in range(0, len(hk), chunk):
        logits = model.drafter_logits_from_hk(hk[s:s + chunk]).float()
        conf.append(torch.softmax(logits, dim=-1).amax(-1))
        top2.append(logits.topk(2, dim=-1).indices)
    return torch.cat(conf), torch.cat(top2)


def agreement(model, hk, target) -> float:
    """The drafter's top-1 agreement with ``target`` over ``hk``'s positions."""
    return float((guesses(model, hk)[1][:, 0] == target).float().mean())


def ceiling(model, hk, target, before, costs: StepCosts, lookups: dict | None = None, prefill=None) -> dict:
    """``policies.policy_table`` for the drafter as it is now, over the positions given; with the
    lookup drafters' agreement at the same positions (``lookups``), their ``source_table`` too (with ``prefill``)."""
    conf, top2 = guesses(model, hk)
    correct, correct2 = top2[:, 0] == target, (top2 == target[:, None]).any(-1)
    table = policy_table(conf, correct, correct2, before, costs)
    if lookups is not None:
        table.update(source_table(correct, lookups, costs, prefill))
    return table


def benchmark_data(args, model) -> tuple[tuple, dict, tuple]:
    """``collect`` over a benchmark's prompts and recorded greedy outputs (``--eval-raw``), the lookup drafters'
    agreement there, and (positions, prefill steps) per question from its baseline's wall times."""
    pairs = questions_data(Path(args.eval_raw), args.model_id, args.question_file)
    data = collect(model, pairs, topk=2)
    hk, _, _, top1, before = (torch.cat(x) for x in zip(*data))
    recorded = torch.tensor([t for _, out in pairs for t in out])
    print(f"[bench] {len(pairs)} questions, {len(hk)} positions; the verifier's argmax is the recorded greedy token at "
          f"{int((recorded == top1).sum())} of them")
    base = [json.loads(line)["methods"]["baseline"] for line in open(args.eval_raw) if line.strip()]
    lengths = [len(out) for _, out in pairs]
    prefill = prefill_steps([len(p) for p, _ in pairs], [b["new_tokens"][0] for b in base],
                            [b["wall_s"][0] for b in base])
    share = float((prefill / (prefill + torch.tensor(lengths))).mean())
    print(f"[bench] prefill: {float(prefill.sum()) / sum(lengths):.2f} greedy steps per answer token; its share of a "
          f"question's greedy time, mean over questions: {share:.2f}")
    return (hk, top1, before), lookup_agreement(pairs), (lengths, prefill)


def train_one(model, args, data, tr, ev, lr: float, r: int, preset: str) -> dict:
    """A fresh drafter head trained on ``tr`` for ``args.train_steps`` steps; its held-out curve on ``ev``."""
    hk, idx, val, top1 = data
    attach_drafter_head(model, r=r, alpha=float(r))
    # the DVI defaults (dvi/config.py) except what the training varies
    tcfg = TrainerConfig(lr=lr, tau=args.tau, ablation=preset, batch_size=args.batch, max_ms=None)
    trainer = OnlineTrainer(model, tcfg, ScheduleConfig(warmup=args.warmup), model.config.vocab_size)
    curve = [(0, agreement(model, hk[ev], top1[ev]))]
    t0 = time.time()
    for step in range(1, args.train_steps + 1):
        b = tr[torch.randint(len(tr), (args.batch,))]
        # every teacher-forced position is a drafted position; reward = did the untrained drafter agree
        batch = Batch(hk=hk[b], token=top1[b], reward=torch.ones(args.batch), pos=torch.ones(args.batch).long(),
                      is_first_reject=torch.zeros(args.batch, dtype=torch.bool), z_idx=idx[b], z_val=val[b])
        stats = trainer.step(batch, step)
        if step % args.eval_every == 0:
            curve.append((step, agreement(model, hk[ev], top1[ev])))
    ms = (time.time() - t0) * 1e3 / args.train_steps
    print(f"[probe] lr {lr:g} r {r} {preset}: held-out top-1 agreement "
          + " ".join(f"{s}:{a:.3f}" for s, a in curve) + f" | kd {stats['kd']:.3g} | {ms:.0f} ms/step", flush=True)
    return {"lr": lr, "r": r, "preset": preset, "curve": curve, "final_kd": stats["kd"], "ms_per_step": ms}


def print_ceiling(table: dict, costs: StepCosts, tag: str = "ceiling") -> None:
    print(f"[{tag}] costs per greedy step: drafted token {costs.draft:.3f}, verified row {costs.row:.3f}")
    for name, v in table.items():
        print(f"[{tag}] {name}: {v:.3f}" + ("" if name.startswith("agreement") else "x greedy"))
    for target in (1.15, 1.40):
        before, after = (needed_agreement(target, costs, after_draft=a) for a in (False, True))
        print(f"[{tag}] agreement needed for {target:.2f}x with a perfect decision: before drafting {before:.2f}, "
              f"after drafting {after:.2f}")


def main(argv=None) -> int:
    ap = OneLineParser(prog=f"{ENTRY} learnability", description=__doc__.splitlines()[0])
    add_model_args(ap)
    add_exitlayer_arg(ap)
    ap.set_defaults(model_id="smollm2-135m", num_threads=1)
    ap.add_argument("--answers", required=True)
    ap.add_argument("--prompts-jsonl", default="assets/sharegpt.jsonl")
    ap.add_argument("--lrs", default="1e-3,1e-2")
    ap.add_argument("--ranks", default="8")
    ap.add_argument("--presets", default="kd_only")
    ap.add_argument("--train-steps", type=int, default=400, help="trainer steps per configuration")
    ap.add_argument("--warmup", type=int, default=0, help="schedule warm-up in trainer steps")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--topk", type=int, default=1024)
    ap.add_argument("--tau", type=float, default=1.5)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--costs", default="", help="block_costs.json of python -m scripts.profile block at the same "
                    "exit layer: then each trained drafter's ceiling under ideal policies (ceiling/policies.py)")
    ap.add_argument("--eval-raw", default="", help="with --costs: a benchmark's raw.jsonl (baseline_ids); each "
                    "trained drafter's ceiling on its questions too, beside the n-gram and memory drafters")
    ap.add_argument("--question-file", default=None, help="the questions of --eval-raw (default: Spec-Bench's)")
    ap.add_argument("--out", default="runs/probe")
    ap.set_defaults(bench_name="spec_bench")
    args = ap.parse_args(argv)
    if args.eval_raw and not (args.costs and Path(args.eval_raw).is_file()):
        ap.error(f"--eval-raw {args.eval_raw}: needs --costs and an existing benchmark raw.jsonl")
    if args.eval_raw:  # its questions, found as the benchmark finds them (--prompts-jsonl is the training's)
        bench_args = argparse.Namespace(question_file=args.question_file, bench_name=args.bench_name)
        resolve_question_file(bench_args)
        args.question_file = bench_args.question_file
    costs = StepCosts.from_file(args.costs) if args.costs else None
    torch.manual_seed(0)
    model, data = load_answer_data(args, args.answers, topk=args.topk)
    if costs is not None:
        costs = costs.with_shallow_rows(model.config.num_hidden_layers, args.exitlayer)
    bench, lookups, prefill = benchmark_data(args, model) if args.eval_raw else (None, None, None)
    hk, idx, val, top1, before = (torch.cat(x) for x in zip(*data))
    n = hk.shape[0]
    perm = torch.randperm(n)
    n_eval = max(1, n // 5)
    ev, tr = perm[:n_eval], perm[n_eval:]
    print(f"[probe] eval on {n_eval} of {n} positions")
    results = []
    for lr, r, preset in itertools.product([float(x) for x in args.lrs.split(",")],
                                          [int(x) for x in args.ranks.split(",")], args.presets.split(",")):
        res = train_one(model, args, (hk, idx, val, top1), tr, ev, lr, r, preset)
        if costs is not None:
            res["ceiling"] = ceiling(model, hk[ev], top1[ev], before[ev], costs)
            print_ceiling(res["ceiling"], costs)
        if bench is not None:
            res["benchmark"] = ceiling(model, *bench, costs, lookups, prefill)
            print_ceiling(res["benchmark"], costs, "bench")
        results.append(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"args": vars(args), "positions": n, "results": results,
              "costs": None if costs is None else vars(costs)}
    atomic_write_text(out / "probe.json", json.dumps(record, indent=1))
    return 0

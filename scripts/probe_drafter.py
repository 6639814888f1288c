"""How well can a LoRA drafter head on layer-k features learn, and how fast? An offline probe for choosing DVI
settings on a new model without hours of online runs.

Teacher-forced data: the prompts and greedy answers of a DVI/Kangaroo answer file (``token_ids``) are run once
through the model; every answer position gives (hk, verifier top-K logits, verifier argmax), exactly the tuples
the online loop would see. Then each configuration (lr x rank x loss preset) trains a fresh drafter head with the
real ``OnlineTrainer`` on random batches of the training split and reports held-out top-1 agreement with the
verifier (= acc@1 of the first draft) as it goes.

    python -m scripts.probe_drafter --answers runs/main/answers.jsonl --prompts-jsonl assets/sharegpt.jsonl \
        --lrs 1e-3,1e-2 --ranks 8,64 --train-steps 400 --out runs/probe
"""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import torch

from common.atomic import atomic_write_text
from dvi.config import ScheduleConfig, TrainerConfig
from dvi.online_trainer import OnlineTrainer
from dvi.types import Batch
from evaluation.eval_loop import sharegpt_questions
from evaluation.questions import chat_prompt_ids
from evaluation.cli import (OneLineParser, add_exitlayer_arg, add_model_args, apply_runtime, resolve_device_dtype,
                            resolve_model_id)
from kangaroo.drafter_head import attach_drafter_head
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.model_loading import load_causal_lm, load_tokenizer


@torch.no_grad()
def collect(model, tok, answers: list[dict], prompts: dict, topk: int) -> list[tuple]:
    """Per answer, in file order: (hk [n, d] fp16, verifier top-K indices [n, K], their logits fp16, verifier
    argmax)."""
    out = []
    for rec in answers:
        q = prompts[rec["question_id"]]
        ids = chat_prompt_ids(tok, [{"role": "user", "content": q["turns"][0]}], model.model_id, device=model.device)
        gen = rec["token_ids"][0]
        seq = torch.cat([ids, torch.tensor([gen], device=model.device)], dim=1)
        caches = model.new_caches(seq.shape[1])
        sh = model.forward_shallow(seq, caches.shallow)
        logits = model.verifier_logits(model.forward_deep(sh.h, caches.deep))[0]
        n0 = ids.shape[1] - 1  # position whose output is the first answer token
        span = slice(n0, n0 + len(gen))
        v, i = logits[span].float().topk(topk, dim=-1)
        out.append((sh.hk[0, span].half(), i, v.half(), i[:, 0]))
    return out


def load_answer_data(args, answers_path: str, max_answers: int | None = None, topk: int = 1024):
    """The model (``args``: model, device, dtype, exit layer) and ``collect`` over the answers of ``answers_path``."""
    resolve_model_id(args)
    resolve_device_dtype(args)
    apply_runtime(args)
    tok = load_tokenizer(args.model_id)
    model = KangarooModel(model_id=args.model_id, exit_layer=args.exitlayer,
                          base_model=load_causal_lm(args.model_id, device=args.device, dtype=args.dtype))
    answers = [json.loads(line) for line in open(answers_path) if line.strip()][:max_answers]
    wanted = {a["question_id"] for a in answers}
    prompts = {}
    for q in sharegpt_questions(args.prompts_jsonl, None):
        if q["question_id"] in wanted:
            prompts[q["question_id"]] = q
        if len(prompts) == len(wanted):
            break
    t0 = time.time()
    data = collect(model, tok, answers, prompts, topk)
    print(f"[data] {sum(len(x[0]) for x in data)} positions from {len(answers)} answers ({time.time() - t0:.0f}s)")
    return model, data


def agreement(model, hk, target) -> float:
    with torch.no_grad():
        return float((model.drafter_logits_from_hk(hk).argmax(-1) == target).float().mean())


def main(argv=None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
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
    ap.add_argument("--out", default="runs/probe")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model, data = load_answer_data(args, args.answers, topk=args.topk)
    hk, idx, val, top1 = (torch.cat(x) for x in zip(*data))
    n = hk.shape[0]
    perm = torch.randperm(n)
    n_eval = max(1, n // 5)
    ev, tr = perm[:n_eval], perm[n_eval:]
    print(f"[probe] eval on {n_eval} of {n} positions")
    results = []
    for lr, r, preset in itertools.product([float(x) for x in args.lrs.split(",")],
                                          [int(x) for x in args.ranks.split(",")], args.presets.split(",")):
        attach_drafter_head(model, r=r, alpha=float(r))
        # the DVI defaults (dvi/config.py) except what the probe varies
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
        res = {"lr": lr, "r": r, "preset": preset, "curve": curve, "final_kd": stats["kd"], "ms_per_step": ms}
        results.append(res)
        print(f"[probe] lr {lr:g} r {r} {preset}: held-out top-1 agreement "
              + " ".join(f"{s}:{a:.3f}" for s, a in curve) + f" | kd {stats['kd']:.3g} | {ms:.0f} ms/step", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"args": vars(args), "positions": n, "results": results}
    atomic_write_text(out / "probe.json", json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

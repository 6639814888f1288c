"""Losslessness and speed of the baseline driver against Hugging Face ``generate`` (and Kangaroo).

For the first N questions of a question file, every turn (multi-turn prompts carry the model's own earlier
answers) is decoded by HF ``generate(do_sample=False)``, by the baseline greedy decoder, and by Kangaroo with
the identity adapter, taking turns in a rotating order so machine drift hits all alike. Each output is compared
token by token with ``generate``'s. Writes ``OUT/lossless_speed.json`` and prints a markdown table.

    python -m scripts.bench_baseline --model-id smollm2-135m --question-end 10 --max-new-tokens 128
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from evaluation.questions import chat_prompt_ids, load_questions
from evaluation.cli import (OneLineParser, add_model_args, add_speculation_args, resolve_device_dtype,
                                resolve_model_id)
from kangaroo.greedy import eos_ids_of, greedy_decode
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.model_loading import load_causal_lm, load_tokenizer
from kangaroo.speculative import kangaroo_generate

DEFAULT_Q = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "spec_bench" / "question.jsonl"


def main(argv=None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    add_speculation_args(ap)
    ap.set_defaults(model_id="smollm2-135m")
    ap.add_argument("--question-file", default=str(DEFAULT_Q))
    ap.add_argument("--question-begin", type=int, default=0)
    ap.add_argument("--question-end", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--out", default="runs/baseline")
    args = ap.parse_args(argv)
    resolve_model_id(args)
    resolve_device_dtype(args)
    tok = load_tokenizer(args.model_id)
    lm = load_causal_lm(args.model_id, device=args.device, dtype=args.dtype)
    km = KangarooModel(model_id=args.model_id, base_model=lm, exit_layer=args.exitlayer)
    eos = eos_ids_of(tok, lm.config)
    n = args.max_new_tokens
    methods = {
        "hf_generate": lambda ids: lm.generate(ids, max_new_tokens=n, do_sample=False)[0, ids.shape[1]:].tolist(),
        "baseline": lambda ids: greedy_decode(lm, ids, n, eos).tokens,
        "kangaroo": lambda ids: kangaroo_generate(km, ids, n, eos, steps=args.steps, threshold=args.threshold).tokens,
    }
    warm = chat_prompt_ids(tok, [{"role": "user", "content": "Hi"}], args.model_id, device=args.device)
    for f in methods.values():
        f(warm)
    totals = {m: {"tokens": 0, "seconds": 0.0} for m in methods}
    rows, mismatches, turn_no = [], [], 0
    for q in load_questions(args.question_file, args.question_begin, args.question_end):
        messages = []
        for t, turn in enumerate(q["turns"]):
            messages.append({"role": "user", "content": turn})
            ids = chat_prompt_ids(tok, messages, args.model_id, device=args.device)
            names = list(methods)
            names = names[turn_no % 3:] + names[:turn_no % 3]
            turn_no += 1
            outs = {}
            for m in names:
                t0 = time.perf_counter()
                outs[m] = methods[m](ids)
                dt = time.perf_counter() - t0
                totals[m]["tokens"] += len(outs[m])
                totals[m]["seconds"] += dt
            same = {m: outs[m] == outs["hf_generate"] for m in methods}
            if not all(same.values()):
                mismatches.append({"question_id": q["question_id"], "turn": t, **same})
            rows.append({"question_id": q["question_id"], "turn": t, "new_tokens": len(outs["hf_generate"]), **same})
            messages.append({"role": "assistant", "content": tok.decode(outs["hf_generate"], skip_special_tokens=True)})
            print(f"q{q['question_id']} turn {t}: {len(outs['hf_generate'])} tokens, equal to generate: {same}", flush=True)
    speed = {m: v["tokens"] / v["seconds"] for m, v in totals.items()}
    result = {"model_id": args.model_id, "questions": [args.question_begin, args.question_end],
              "max_new_tokens": n, "turns": len(rows), "mismatches": mismatches, "totals": totals,
              "tokens_per_s": speed, "baseline_over_generate": speed["baseline"] / speed["hf_generate"],
              "kangaroo_over_baseline": speed["kangaroo"] / speed["baseline"], "torch_threads": torch.get_num_threads(),
              "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lossless_speed.json").write_text(json.dumps(result, indent=2))
    print(f"\n| method | tokens | seconds | tok/s |\n|---|---|---|---|")
    for m, v in totals.items():
        print(f"| {m} | {v['tokens']} | {v['seconds']:.1f} | {speed[m]:.2f} |")
    print(f"\nbaseline / generate = {result['baseline_over_generate']:.3f}; kangaroo / baseline = "
          f"{result['kangaroo_over_baseline']:.3f}; {len(rows)} turns, {len(mismatches)} mismatches")
    return 0 if not mismatches else 1


if __name__ == "__main__":
    raise SystemExit(main())

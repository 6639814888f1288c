"""A trained drafter exported standalone vs the project's self-drafter, on the same prompts: mean accepted length
and losslessness of each (issue 20's target: HF assisted generation with the export equals greedy, and its mean
accepted length is within 0.05 of the self-drafter's).

    python -m scripts.experiments standalone --load-lora runs/main/checkpoints/final.pt --out runs/eco/standalone

  greedy            kangaroo.greedy.greedy_decode: the reference every output must equal
  self_drafter      kangaroo_generate with the checkpoint's self-drafter (LoRA head, trained adapter), Kangaroo's
                    threshold rule (--threshold, --steps): what the export reproduces
  hf_assist_window  lm.generate(assistant_model=the standalone export, --standalone-attention window: exact)
  hf_assist_full    the same with --standalone-attention full (Llama; the adapter attends over the whole context)

The HF assistant is configured like the self-drafter: num_assistant_tokens = --steps, a constant schedule,
assistant_confidence_threshold = --threshold (it keeps the token under the threshold and stops, as Kangaroo does).
Mean accepted length = new tokens / target-model passes (HF: a forward hook counts the target's calls). Prompts: the
--num-prompts ShareGPT prompts after the first --prompt-offset (the main job trains on the first 300). Writes
OUT/compare.json and OUT/compare.md; exit 1 if some output differs from greedy.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from common.atomic import atomic_write_text
from evaluation.cli import OneLineParser, apply_runtime, fail
from scripts.experiments.report_files import ENTRY, command_line

METHODS = ("self_drafter", "hf_assist_window", "hf_assist_full")


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=f"{ENTRY} standalone", description=__doc__.splitlines()[0])
    p.add_argument("--load-lora", default="runs/main/checkpoints/final.pt", help="the trained drafter checkpoint")
    p.add_argument("--model-id", default=None, help="default: the checkpoint's model")
    p.add_argument("--prompts-jsonl", default="assets/sharegpt.jsonl")
    p.add_argument("--prompt-offset", type=int, default=300, help="skip this many usable prompts first")
    p.add_argument("--num-prompts", type=int, default=20)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threshold", type=float, default=0.6)
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--out", default="runs/eco/standalone")
    return p


def held_out_prompts(path: str, offset: int, n: int) -> list[str]:
    from evaluation.eval_loop import sharegpt_questions

    return [q["turns"][0] for i, q in enumerate(sharegpt_questions(path, offset + n)) if i >= offset]


def assistant(folder, steps: int, threshold: float):
    from transformers import AutoModelForCausalLM

    sa = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    gc = sa.generation_config
    gc.num_assistant_tokens, gc.num_assistant_tokens_schedule = steps, "constant"
    gc.assistant_confidence_threshold = threshold
    return sa


def make_methods(args, dm, lm, folders: dict, eos: set, pad_id):
    """name -> decode(ids) -> (new token ids, target passes)."""
    from kangaroo.draft_policy import ThresholdStop
    from kangaroo.drafters import SelfDrafter
    from kangaroo.speculative import kangaroo_generate
    from scripts.benchmark.methods import TargetCalls

    n, calls = args.max_new_tokens, TargetCalls(lm)

    def self_drafter(ids):
        r = kangaroo_generate(dm, ids, n, eos, drafter=SelfDrafter(args.steps, ThresholdStop(args.threshold)))
        return r.tokens, r.steps

    def hf_assist(sa):
        def decode(ids):
            calls.reset()
            out = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                              assistant_model=sa, eos_token_id=sorted(eos) or None, pad_token_id=pad_id)
            return out[0, ids.shape[1]:].tolist(), calls.target
        return decode

    return {"self_drafter": self_drafter,
            **{f"hf_assist_{a}": hf_assist(assistant(f, args.steps, args.threshold)) for a, f in folders.items()}}


def compare(args) -> dict:
    from evaluation.questions import chat_prompt_ids
    from kangaroo.greedy import eos_ids_of, greedy_decode
    from kangaroo.model_loading import load_tokenizer
    from kangaroo_dvi.export import export_standalone, load_drafter

    dm = load_drafter(args.load_lora, args.model_id)
    lm, tok = dm.base_model, load_tokenizer(dm.model_id)
    eos = eos_ids_of(tok, lm.config)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else min(eos, default=None)
    tmp = Path(tempfile.mkdtemp(prefix="standalone-"))
    folders = {a: export_standalone(dm, tmp / a, tok, a, args.load_lora) for a in ("window", "full")}
    methods = make_methods(args, dm, lm, folders, eos, pad_id)
    rows = {m: {"new_tokens": 0, "passes": 0, "matches": 0} for m in methods}
    prompts = held_out_prompts(args.prompts_jsonl, args.prompt_offset, args.num_prompts)
    for text in prompts:
        ids = chat_prompt_ids(tok, [{"role": "user", "content": text}], dm.model_id)
        ref = greedy_decode(lm, ids, args.max_new_tokens, eos).tokens
        for m, decode in methods.items():
            tokens, passes = decode(ids)
            r = rows[m]
            r["new_tokens"] += len(tokens)
            r["passes"] += passes
            r["matches"] += tokens == ref
    for r in rows.values():
        r["mean_accepted"] = r["new_tokens"] / max(1, r["passes"])
    return {"prompts": len(prompts), "methods": rows, "adapter_window": json.loads(
        (folders["window"] / "kangaroo_dvi.json").read_text())["adapter_window"]}


def markdown(result: dict, command: str) -> str:
    rows, ref = result["methods"], result["methods"]["self_drafter"]["mean_accepted"]
    lines = [f"# Standalone export vs the self-drafter ({result['prompts']} prompts)", "", f"command: `{command}`", "",
             f"adapter window: {result['adapter_window']}", "",
             "| method | mean accepted length | minus self_drafter | equal to greedy |", "|---|---:|---:|---|"]
    for m, r in rows.items():
        lines.append(f"| {m} | {r['mean_accepted']:.3f} | {r['mean_accepted'] - ref:+.3f} | "
                     f"{r['matches']}/{result['prompts']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if min(args.num_prompts, args.max_new_tokens, args.steps) < 1 or args.prompt_offset < 0:
        fail("--num-prompts, --max-new-tokens and --steps must be >= 1, --prompt-offset >= 0")
    apply_runtime(args)  # --num-threads (and the engine on, as every driver)
    result = compare(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = command_line("standalone", argv)
    atomic_write_text(out / "compare.json", json.dumps({"command": command, **result}, indent=2))
    atomic_write_text(out / "compare.md", markdown(result, command))
    print(markdown(result, command))
    lossless = all(r["matches"] == result["prompts"] for r in result["methods"].values())
    return 0 if lossless else 1

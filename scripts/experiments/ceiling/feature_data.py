"""The data of the feature drafter's offline ceiling (``scripts/feature_ceiling.py``): ShareGPT prompts, their greedy
answers and the verifier's features, captured once with the frozen model.

    training   the main job's prompts (the first N of the stream) and its answers (``--answers``, the main job's
               answers.jsonl; they equal greedy): the positions DVI's online loop trains on, each with the
               verifier's top-K logits there: every committed answer row, and ``--dvi-prefill-positions`` prompt
               positions (``kangaroo.speculative.pick_prefill_positions``)
    held out   the next M prompts of the stream, never trained on, answered greedily here; every answer position
               is scored (teacher-forced top-1 against the verifier's greedy token)

One sequence is ``dvi/offline_data.py``'s (the ids, the verifier's features, the scored positions and its top-K
there).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from evaluation.eval_loop import sharegpt_questions
from evaluation.questions import chat_prompt_ids
from kangaroo.greedy import eos_ids_of, greedy_decode
from dvi.offline_data import capture, scored_positions


def prompts(tokenizer, model_id: str, path: str, begin: int, end: int) -> list[list[int]]:
    """The chat-template ids of ShareGPT prompts ``begin .. end - 1`` of the stream (as the driver builds them)."""
    out = []
    for i, q in enumerate(sharegpt_questions(path, end)):
        if i >= begin:
            out.append(chat_prompt_ids(tokenizer, [{"role": "user", "content": q["turns"][0]}], model_id)[0].tolist())
    return out


def build(model, tokenizer, args, log=print) -> dict:
    """``{"train": [...], "heldout": [...], "meta": {...}}`` (see the module docstring)."""
    answers = [json.loads(line) for line in open(args.answers) if line.strip()][:args.train_prompts]
    train_prompts = prompts(tokenizer, args.model_id, args.prompts_jsonl, 0, len(answers))
    held_prompts = prompts(tokenizer, args.model_id, args.prompts_jsonl, len(answers),
                           len(answers) + args.heldout_prompts)
    eos = eos_ids_of(tokenizer, model.config)
    t0, data = time.time(), {"train": [], "heldout": []}
    for p, a in zip(train_prompts, answers):
        gen = a["token_ids"][0]
        scored = scored_positions(len(p), len(gen), args.prefill)
        data["train"].append(capture(model, p + gen, len(p), scored, args.topk))
    log(f"[data] training: {len(data['train'])} sequences, {sum(len(s['pos']) for s in data['train'])} positions "
        f"({time.time() - t0:.0f}s)")
    for p in held_prompts:
        gen = greedy_decode(model.base_model, torch.tensor([p]), args.max_new_tokens, eos).tokens
        data["heldout"].append(capture(model, p + gen, len(p), list(range(len(p) - 1, len(p) - 1 + len(gen))), 1))
    log(f"[data] held out: {len(data['heldout'])} sequences, {sum(len(s['pos']) for s in data['heldout'])} "
        f"positions ({time.time() - t0:.0f}s)")
    data["meta"] = {"model_id": args.model_id, "answers": str(args.answers), "prompts_jsonl": args.prompts_jsonl,
                    "train_prompts": len(answers), "heldout_prompts": args.heldout_prompts,
                    "prefill_positions": args.prefill, "topk": args.topk, "max_new_tokens": args.max_new_tokens}
    return data


def load_or_build(path: Path, model, tokenizer, args, log=print) -> dict:
    """The captured data at ``path`` (built and saved there first when missing, or made with other settings)."""
    if path.is_file():
        data = torch.load(path, weights_only=True)
        if data["meta"]["answers"] == str(args.answers) and data["meta"]["heldout_prompts"] == args.heldout_prompts:
            return data
    data = build(model, tokenizer, args, log)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data

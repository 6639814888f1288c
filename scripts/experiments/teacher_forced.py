"""Recorded greedy outputs as the data of offline experiments: (prompt ids, greedy answer ids) pairs from a run's
answer file (``token_ids``, with their ShareGPT prompts) or a benchmark's raw.jsonl (``baseline_ids``, with their
Spec-Bench questions), and the teacher-forced tuples of those pairs: the prompt and answer run once through the model,
every answer position giving (hk, the verifier's top-K logits, its greedy token), exactly what the online loop sees.
The ceiling (``ceiling/``) and the replays (``replay/``) read them."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from evaluation.cli import apply_runtime, fail, resolve_device_dtype, resolve_model_id
from evaluation.eval_loop import sharegpt_questions
from evaluation.questions import chat_prompt_ids
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.model_loading import load_causal_lm, load_tokenizer


@torch.no_grad()
def collect(model, pairs: list[tuple[list[int], list[int]]], topk: int) -> list[tuple]:
    """Per (prompt ids, greedy answer ids), in order: (hk [n, d] fp16, verifier top-K indices [n, K], their logits
    fp16, verifier argmax, the verifier's softmax top-1 probability at the position before: its confidence in the
    token it had just committed, known before a draft is made)."""
    out = []
    for prompt, gen in pairs:
        seq = torch.tensor([list(prompt) + list(gen)], device=model.device)
        caches = model.new_caches(seq.shape[1])
        sh = model.forward_shallow(seq, caches.shallow)
        logits = model.verifier_logits(model.forward_deep(sh.h, caches.deep))[0]
        n0 = len(prompt) - 1  # position whose output is the first answer token
        span = slice(n0, n0 + len(gen))
        v, i = logits[span].float().topk(topk, dim=-1)
        before = torch.softmax(logits[n0 - 1:n0 - 1 + len(gen)].float(), dim=-1).amax(-1)
        out.append((sh.hk[0, span].half(), i, v.half(), i[:, 0], before))
    return out


def load_model(args) -> KangarooModel:
    """The model of ``args`` (model, device, dtype, exit layer)."""
    resolve_model_id(args)
    resolve_device_dtype(args)
    apply_runtime(args)
    return KangarooModel(model_id=args.model_id, exit_layer=args.exitlayer,
                         base_model=load_causal_lm(args.model_id, device=args.device, dtype=args.dtype))


def load_answer_data(args, answers_path: str, max_answers: int | None = None, topk: int = 1024):
    """The model (``args``: model, device, dtype, exit layer) and ``collect`` over the answers of ``answers_path``
    (their ShareGPT prompts, first turn, in the chat template)."""
    model = load_model(args)
    tok = load_tokenizer(args.model_id)
    answers = [json.loads(line) for line in open(answers_path) if line.strip()][:max_answers]
    wanted = {a["question_id"] for a in answers}
    prompts = {}
    for q in sharegpt_questions(args.prompts_jsonl, None):
        if q["question_id"] in wanted:
            prompts[q["question_id"]] = q
        if len(prompts) == len(wanted):
            break
    pairs = [(chat_prompt_ids(tok, [{"role": "user", "content": prompts[a["question_id"]]["turns"][0]}],
                              model.model_id)[0].tolist(), a["token_ids"][0]) for a in answers]
    t0 = time.time()
    data = collect(model, pairs, topk)
    print(f"[data] {sum(len(x[0]) for x in data)} positions from {len(answers)} answers ({time.time() - t0:.0f}s)")
    return model, data


def questions_data(raw: Path, model_id: str, question_file: str) -> list[tuple[list[int], list[int]]]:
    from evaluation.questions import load_questions

    tok = load_tokenizer(model_id)
    qs = {q["question_id"]: q for q in load_questions(question_file, None, None)}
    recs = [json.loads(line) for line in raw.read_text().splitlines() if line.strip()]
    missing = [r["question_id"] for r in recs if r["question_id"] not in qs]
    if missing:
        fail(f"--raw {raw} has questions {missing[:5]} that --question-file {question_file} lacks: pass the file "
             "the benchmark ran on")
    return [(chat_prompt_ids(tok, [{"role": "user", "content": qs[r["question_id"]]["turns"][0]}], model_id)[0]
             .tolist(), r["baseline_ids"][0]) for r in recs]

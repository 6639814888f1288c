"""The decoding methods the benchmark compares, each ``decode(ids) -> (new token ids, verifier passes, drafter
calls or None)``, and one question decoded by all of them (timed by ``kangaroo.timing.timed``)."""
from __future__ import annotations

import sys

import torch

from kangaroo.timing import timed

METHODS = ("baseline", "hf_generate", "prompt_lookup", "early_exit_assist", "kangaroo", "dvi", "dvi_self", "ngram",
           "dvi_threshold")
LORA_METHODS = ("dvi", "dvi_self", "dvi_threshold")
HF_KWARGS = {"hf_generate": {}, "prompt_lookup": {"prompt_lookup_num_tokens": 6}}


def rotated(methods: list[str], i: int) -> list[str]:
    k = i % len(methods)
    return methods[k:] + methods[:k]

class TargetCalls:
    """Counts forward calls of the HF model. The early-exit assistant is the same module, but HF lowers
    config.num_hidden_layers to the exit layer while it drafts, which tells its calls apart."""

    def __init__(self, lm):
        self.lm, self.full = lm, lm.config.num_hidden_layers
        self.target = self.assistant = 0
        lm.register_forward_pre_hook(self._hook)

    def _hook(self, module, inputs):
        if self.lm.model.config.num_hidden_layers < self.full:
            self.assistant += 1
        else:
            self.target += 1

    def reset(self) -> None:
        self.target = self.assistant = 0


def make_methods(args, lm, models: dict, eos: set[int], pad_id: int | None, calls: TargetCalls,
                 tokenizer=None) -> dict:
    """name -> decode(ids) -> (new token ids, verifier passes, drafter calls or None)."""
    from kangaroo.greedy import greedy_decode
    from kangaroo.speculative import kangaroo_generate

    n = args.max_new_tokens

    def baseline(ids):
        r = greedy_decode(lm, ids, n, eos)
        return r.tokens, r.steps, None

    def ours(model, drafter=None):
        def decode(ids):
            r = kangaroo_generate(model, ids, n, eos, steps=args.steps, threshold=args.threshold, drafter=drafter)
            return r.tokens, r.steps, None
        return decode

    from dataclasses import replace

    from evaluation.cli import drafter_config
    from kangaroo.drafter_config import cost_curve, policy_factory
    from kangaroo.drafters import make_drafter
    from kangaroo.packed_head import configure

    def drafter(kind, policy, model):
        """One drafter per method for the whole run: its calibration carries over questions, as when serving."""
        if model is None:
            return None
        cfg = replace(drafter_config(args), draft_policy=policy)
        configure(model, cfg.head_precision, frozen=True)  # deployed: the LoRA merged into the packed head
        cost = cost_curve(cfg, model) if policy == "goodput" else None
        return make_drafter(kind, args.steps, policy_factory(cfg, cost), args.ngram_min, args.ngram_max)

    lora_model, plain = models.get("dvi"), models.get("kangaroo")

    def hf(**kw):
        def decode(ids):
            calls.reset()
            out = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                              eos_token_id=sorted(eos) or None, pad_token_id=pad_id, **kw)
            assistant = calls.assistant if "assistant_early_exit" in kw else None
            return out[0, ids.shape[1]:].tolist(), calls.target, assistant
        return decode

    builders = {"baseline": lambda: baseline, "early_exit_assist": lambda: hf(assistant_early_exit=args.exitlayer),
                **{m: (lambda kw=kw: hf(**kw)) for m, kw in HF_KWARGS.items()},
                "kangaroo": lambda: ours(plain),
                "dvi": lambda: ours(lora_model, drafter(args.drafter, args.draft_policy, lora_model)),
                "dvi_self": lambda: ours(lora_model, drafter("self", args.draft_policy, lora_model)),
                "ngram": lambda: ours(plain, drafter("ngram", args.draft_policy, plain)),
                "dvi_threshold": lambda: ours(lora_model, drafter("self", "threshold", lora_model))}
    return {m: builders[m]() for m in args.methods}


def build_models(args, lm, tokenizer=None) -> dict:
    from dvi.deploy import deployed_model
    from evaluation.cli import drafter_config
    from kangaroo.drafter_config import apply_drafter_vocab
    from kangaroo.kangaroo_model import KangarooModel

    models = {}
    if {"kangaroo", "ngram"} & set(args.methods):
        models["kangaroo"] = KangarooModel(model_id=args.model_id, exit_layer=args.exitlayer, base_model=lm)
    if set(LORA_METHODS) & set(args.methods):
        # deploy: the LoRA tensors (and a trained adapter), no trainer; a full-vocabulary LoRA loads sliced to the
        # kept rows of a pruned drafter vocabulary
        models["dvi"] = deployed_model(args.model_id, args.exitlayer, lm, args.load_lora,
                                       lambda km: apply_drafter_vocab(drafter_config(args), km, tokenizer))
    return models

def decode_question(q: dict, order: list[str], methods: dict, tokenizer, args, judge_fn=None) -> dict:
    """All methods on every decoded turn of ``q``; later turns hold the baseline's earlier answers.
    ``judge_fn(ids, reference, output) -> kangaroo.lossless.Verdict`` rules on a difference (float16: a flip at a
    near-tie within the stated tolerance counts as a match, and is recorded with its gap)."""
    from evaluation.questions import chat_prompt_ids

    per = {m: {"new_tokens": [], "wall_s": [], "passes": [], "drafter_calls": [], "match": []} for m in order}
    base_ids, messages = [], []
    for t, turn in enumerate(q["turns"] if args.all_turns else q["turns"][:1]):
        messages.append({"role": "user", "content": turn})
        ids = chat_prompt_ids(tokenizer, messages, args.model_id, device=args.device)
        outs = {}
        for m in order:
            (tokens, passes, drafter), wall = timed(lambda: methods[m](ids), args.device)
            outs[m] = tokens
            r = per[m]
            r["new_tokens"].append(len(tokens))
            r["wall_s"].append(wall)
            r["passes"].append(passes)
            r["drafter_calls"].append(drafter)
        for m in order:
            same = outs[m] == outs["baseline"]
            if not same and judge_fn is not None:
                v = judge_fn(ids, outs["baseline"], outs[m])
                per[m].setdefault("first_difference", []).append([t, v.position, v.gap, v.tolerance])
                print(f"[{m}] question {q['question_id']} turn {t}: {v.line()}", file=sys.stderr)
                same = v.ok
            per[m]["match"].append(same)
            if not same:
                per[m].setdefault("mismatch_ids", []).append([t, outs[m]])
        base_ids.append(outs["baseline"])
        messages.append({"role": "assistant",
                         "content": tokenizer.decode(outs["baseline"], skip_special_tokens=True).strip()})
    return {"question_id": q["question_id"], "category": q.get("category", "uncategorized"), "order": order,
            "baseline_ids": base_ids, "methods": {m: per[m] for m in methods}}

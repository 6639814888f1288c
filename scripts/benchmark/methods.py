"""The decoding methods the benchmark compares, each ``decode(ids) -> (new token ids, verifier passes, drafter
calls or None, tokens per verifier pass or None)``, and one question decoded by all of them (timed by
``kangaroo.timing.timed``). Our methods' ``decode.drafter`` is the drafter chain the method keeps for the whole run
(its calibration and the memory drafter's memory carry over questions, as when serving); each turn's record holds
what its drafters did, by source (``kangaroo.drafters.counters``)."""
from __future__ import annotations

import itertools
import sys

import torch

from kangaroo.timing import timed

METHODS = ("baseline", "hf_generate", "prompt_lookup", "early_exit_assist", "kangaroo", "dvi", "dvi_self", "ngram",
           "memory", "dvi_threshold", "dvi_feature")
HF_METHODS = ("hf_generate", "prompt_lookup", "early_exit_assist")  # greedy only here: HF samples from its own
                                                                    # generator, never equal to plain sampling's
MEMORY_CHAIN = "ngram,memory"   # the memory method: prompt lookup, then the outputs of the earlier questions
LORA_METHODS = ("dvi", "dvi_self", "dvi_threshold", "dvi_feature")
HF_KWARGS = {"hf_generate": {}, "prompt_lookup": {"prompt_lookup_num_tokens": 6}}


def rotated(methods: list[str], i: int) -> list[str]:
    k = i % len(methods)
    return methods[k:] + methods[:k]

class TargetCalls:
    """Counts forward calls of the HF model. The early-exit assistant is the same module, but HF lowers
    config.num_hidden_layers to the exit layer while it drafts, which tells its calls apart. Each target call's
    first position (``position_ids``) is kept: a call feeds the last committed token (the first call: the prompt)
    and drafts, so the next call's start tells how many tokens this one committed."""

    def __init__(self, lm):
        self.lm, self.full = lm, lm.config.num_hidden_layers
        self.target = self.assistant = 0
        self.starts: list = []
        lm.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if self.lm.model.config.num_hidden_layers < self.full:
            self.assistant += 1
        else:
            self.target += 1
            pos = kwargs.get("position_ids")
            self.starts.append(None if pos is None else int(pos.reshape(-1)[0]))

    def reset(self) -> None:
        self.target = self.assistant = 0
        self.starts = []

    def accept_lengths(self, prompt_len: int, new_tokens: int) -> list[int] | None:
        """Tokens committed by each target call (None when a call's positions were not seen)."""
        if not self.starts or self.starts[0] != 0 or None in self.starts:
            return None
        ends = [prompt_len] + [s + 1 for s in self.starts[1:]] + [prompt_len + new_tokens]
        return [b - a for a, b in itertools.pairwise(ends)]


def make_methods(args, lm, models: dict, eos: set[int], pad_id: int | None, calls: TargetCalls,
                 tokenizer=None) -> dict:
    """name -> decode(ids) -> (new token ids, verifier passes, drafter calls or None, accept lengths or None)."""
    from evaluation.cli import sampling_params
    from kangaroo.greedy import greedy_decode
    from kangaroo.speculative import kangaroo_generate

    n, sampling = args.max_new_tokens, sampling_params(args)

    def baseline(ids):
        r = greedy_decode(lm, ids, n, eos, sampling=sampling)
        return r.tokens, r.steps, None, r.accept_lengths

    def ours(model, drafter=None):
        def decode(ids):
            r = kangaroo_generate(model, ids, n, eos, steps=args.steps, threshold=args.threshold, drafter=drafter,
                                  sampling=sampling)
            return r.tokens, r.steps, None, r.accept_lengths
        decode.drafter = drafter
        return decode

    from dataclasses import replace

    from evaluation.cli import drafter_config
    from kangaroo.drafter_config import build_drafter

    def drafter(kind, policy, model):
        """One drafter chain per method for the whole run."""
        if model is None:
            return None
        return build_drafter(replace(drafter_config(args), drafter=kind, draft_policy=policy), model)

    lora_model, plain = models.get("dvi"), models.get("kangaroo")

    def hf(**kw):
        def decode(ids):
            calls.reset()
            out = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                              eos_token_id=sorted(eos) or None, pad_token_id=pad_id, **kw)
            new = out[0, ids.shape[1]:].tolist()
            return (new, calls.target, calls.assistant if "assistant_early_exit" in kw else None,
                    calls.accept_lengths(ids.shape[1], len(new)))
        return decode

    builders = {"baseline": lambda: baseline, "early_exit_assist": lambda: hf(assistant_early_exit=args.exitlayer),
                **{m: (lambda kw=kw: hf(**kw)) for m, kw in HF_KWARGS.items()},
                "kangaroo": lambda: ours(plain),
                "dvi": lambda: ours(lora_model, drafter(args.drafter, args.draft_policy, lora_model)),
                "dvi_self": lambda: ours(lora_model, drafter("self", args.draft_policy, lora_model)),
                "dvi_feature": lambda: ours(lora_model, drafter("feature", args.draft_policy, lora_model)),
                "ngram": lambda: ours(plain, drafter("ngram", args.draft_policy, plain)),
                "memory": lambda: ours(plain, drafter(MEMORY_CHAIN, args.draft_policy, plain)),
                "dvi_threshold": lambda: ours(lora_model, drafter("self", "threshold", lora_model))}
    return {m: builders[m]() for m in args.methods}


def build_models(args, lm, tokenizer=None) -> dict:
    from evaluation.cli import drafter_config, session_config
    from kangaroo.kangaroo_model import KangarooModel
    from kangaroo_dvi.session import NO_DRAFTER, build_session

    models = {}
    if {"kangaroo", "ngram", "memory"} & set(args.methods):
        models["kangaroo"] = KangarooModel(model_id=args.model_id, exit_layer=args.exitlayer, base_model=lm)
    if set(LORA_METHODS) & set(args.methods):
        # deploy --load-lora as every entry point does (its trained adapter and pruned vocabulary come along), no
        # trainer; the methods build their own drafters (make_methods)
        session = build_session(session_config(args), drafter_config(args), base_model=lm, tokenizer=tokenizer,
                                drafting=NO_DRAFTER)
        models["dvi"] = session.model
    return models

def decode_question(q: dict, order: list[str], methods: dict, tokenizer, args, judge_fn=None) -> dict:
    """All methods on every decoded turn of ``q``; later turns hold the baseline's earlier answers.
    ``judge_fn(ids, reference, output) -> kangaroo.lossless.Verdict`` rules on a difference (float16: a flip at a
    near-tie within the stated tolerance counts as a match, and is recorded with its gap)."""
    from evaluation.questions import chat_prompt_ids
    from kangaroo.drafters.counters import since, snapshot

    per = {m: {"new_tokens": [], "wall_s": [], "passes": [], "drafter_calls": [], "match": [], "accept_lengths": [],
               "turns": [], "recounted_tokens": [], "sources": []} for m in order}
    base_ids, messages = [], []
    for t, turn in enumerate(q["turns"] if args.all_turns else q["turns"][:1]):
        messages.append({"role": "user", "content": turn})
        ids = chat_prompt_ids(tokenizer, messages, args.model_id, device=args.device)
        outs = {}
        for m in order:
            chain = getattr(methods[m], "drafter", None)
            before = snapshot(chain.by_source) if chain is not None else None
            (tokens, passes, drafter, accept), wall = timed(lambda: methods[m](ids), args.device)
            outs[m] = tokens
            text = tokenizer.decode(tokens, skip_special_tokens=True).strip()  # the answer text, as Spec-Bench's
            for key, v in (("new_tokens", len(tokens)), ("wall_s", wall), ("passes", passes),
                           ("drafter_calls", drafter), ("accept_lengths", accept), ("turns", text),
                           ("recounted_tokens", len(tokenizer(text).input_ids) - 1),  # speed.py's re-count
                           ("sources", since(chain.by_source, before) if chain is not None else None)):
                per[m][key].append(v)
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
        messages.append({"role": "assistant", "content": per["baseline"]["turns"][-1]})
    return {"question_id": q["question_id"], "category": q.get("category", "uncategorized"), "order": order,
            "baseline_ids": base_ids, "methods": {m: per[m] for m in methods}}

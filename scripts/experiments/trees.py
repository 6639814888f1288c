"""What a token tree costs and what it can gain on this machine (runs/exp_trees).

Cost, per weight format (``--weights-list``): a verify pass over n rows as a chain against a token tree of the same n
rows, timed in one process, interleaved rep by rep (so a busy machine slows both alike; ratios, not speeds):

    deep       the deep layers, the final norm and the verifier's head over the n rows (what the cost curve times)
    verify     ``speculative.verify`` + the commit (picks, accept, the caches cropped or compacted, the block): the
               Python around the engine included
    shapes     chain (x, d_1..d_{n-1}); tree (x, d_1..d_{n-2} and one sibling of d_1: a top-2 branch at the first
               position); star (x and n-1 children: top-(n-1) at the first position)

with the cost curve's one-token step and verified row, and the tree width ``auto_tree_width`` starts with there.

Gain: the self-drafter's first-position agreement, teacher-forced over greedy answers (an answer file with
``token_ids``: their ShareGPT prompts in the chat template, the prompt and the answer run once): how often its top-1,
top-2, top-3 guess at an answer position holds the verifier's token (the identity drafter of a fresh run, over the
default pruned vocabulary, float32 head). The gain of a k-th branch is top-k minus top-(k-1).

Decode (``--decode-prompts N``, float32 weights): the first N answers' prompts decoded (``--max-new-tokens``) by the
same drafter chain (``--drafter``, goodput, one cost curve) at each width of ``--widths``, prompt by prompt in turn,
each width's drafter kept across prompts as a run keeps it: tokens per verify pass, the blocks that verified a
tree and those that accepted a branch, and the wall time against width 1 (every output checked equal).

    python -m scripts.experiments.trees --answers runs/record_nov30b/main/answers.jsonl --max-answers 40 \\
        --weights-list stored,float32 --out runs/exp_trees
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from common.atomic import atomic_write_text
from kangaroo.blocks import Draft
from kangaroo.draft_policy import auto_tree_width
from kangaroo.kangaroo_model import KangarooModel
from kangaroo.model_loading import load_causal_lm
from kangaroo.speculative import _commit, verify
from kangaroo.token_tree import TokenTree, TreeSlots
from kangaroo.verify_cost import measure_cost_curve

MODEL = "smollm2-135m"


def shapes(n: int) -> dict[str, TokenTree]:
    """The shapes of n rows (x and n - 1 drafted nodes)."""
    out = {"chain": TokenTree.chain(n - 1)}   # n = 1: a plain greedy step
    if n >= 3:
        out["tree"] = TokenTree(tuple(range(n - 2)) + (0,))
        out["star"] = TokenTree((0,) * (n - 1))
    return out


def _ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


@torch.no_grad()
def time_shapes(km: KangarooModel, max_rows: int, reps: int, prefix: int = 64) -> dict:
    """Median ms of the deep pass and of verify + commit for each shape of n = 1..max_rows rows; every rep times every
    (n, shape) in turn, so a change of the machine's load falls on all of them alike."""
    caches = km.new_caches(prefix + max_rows + 2)
    ids = torch.arange(100, 100 + prefix)[None]
    km.forward_deep(km.forward_shallow(ids, caches.shallow).h, caches.deep)
    tokens = list(range(200, 200 + max_rows - 1))
    h = km.forward_shallow(torch.tensor([[99] + tokens]), caches.shallow).h  # layer-k rows (values do not matter)
    caches.crop(prefix)
    cases = [(n, name, tree) for n in range(1, max_rows + 1) for name, tree in shapes(n).items()]
    times: dict[tuple[int, str], dict[str, list[float]]] = {(n, s): {"deep": [], "verify": []} for n, s, _ in cases}
    for rep in range(reps + 1):   # the first rep warms up
        for n, name, tree in cases:
            slots = None if tree.is_chain else TreeSlots(prefix, tree)
            deep = _ms(lambda: km.verifier_logits(km.forward_deep(h[:, :n], caches.deep, slots)).argmax(-1))
            caches.crop(prefix)
            caches.shallow.advance(n)   # the draft covers x and its nodes in the shallow cache, as a self draft's
            d = Draft(tokens[:n - 1], h[:, :n], None, [0.5] * (n - 1), source="self", last_token=99,
                      tree=None if tree.is_chain else tree)
            full = _ms(lambda: _commit(km, d, verify(km, d, caches), caches, prefix))
            caches.crop(prefix)
            if rep:
                times[n, name]["deep"].append(deep)
                times[n, name]["verify"].append(full)
    out: dict = {}
    for (n, name), t in times.items():
        out.setdefault(n, {})[name] = {k: statistics.median(v) for k, v in t.items()}
    return out


def cost_part(weights: str, max_rows: int, reps: int) -> dict:
    km = KangarooModel(model_id=MODEL, base_model=load_causal_lm(MODEL, weights=weights))
    curve = measure_cost_curve(km, max_rows)
    step = curve.shallow_ms[0] + curve.deep_ms[0]
    rows = time_shapes(km, max_rows, reps)
    print(f"[{weights}] step {step:.2f} ms, row {curve.row_ms:.2f} ms ({curve.row_ms / step:.3f} of a step), "
          f"auto tree width {auto_tree_width(curve)}", flush=True)
    return {"weights": weights, "step_ms": step, "row_ms": curve.row_ms, "shallow_row_ms": curve.shallow_row_ms,
            "auto_tree_width": auto_tree_width(curve), "curve": {"deep_ms": curve.deep_ms,
                                                                   "shallow_ms": curve.shallow_ms},
            "rows": rows}


@torch.no_grad()
def agreement_part(answers: str, prompts: str, max_answers: int) -> dict:
    """Top-1/2/3 agreement of the identity drafter (default pruned vocabulary) at every answer position."""
    from kangaroo.drafter_config import DrafterConfig, apply_drafter_vocab
    from kangaroo.model_loading import load_tokenizer
    from scripts.probe_drafter import collect

    km = KangarooModel(model_id=MODEL, base_model=load_causal_lm(MODEL))
    tok = load_tokenizer(MODEL)
    apply_drafter_vocab(DrafterConfig(model_id=MODEL), km, tok, print_fn=lambda *a: None)
    pairs = answer_pairs(tok, answers, prompts, max_answers)
    hits = torch.zeros(3)
    total = 0
    for hk, _, _, target, _ in collect(km, pairs, topk=1):
        top = km.drafter_logits_from_hk(hk.float()).topk(3, dim=-1).indices
        ids = km.drafter_vocab[top] if km.drafter_vocab is not None else top
        hits += torch.stack([(ids[:, :k] == target[:, None]).any(-1).float().sum() for k in (1, 2, 3)])
        total += len(target)
    top = (hits / total).tolist()
    print(f"[agreement] {total} positions of {len(pairs)} answers: top-1 {top[0]:.3f} top-2 {top[1]:.3f} "
          f"top-3 {top[2]:.3f}", flush=True)
    return {"answers": len(pairs), "positions": total, "top1": top[0], "top2": top[1], "top3": top[2],
            "gain2": top[1] - top[0], "gain3": top[2] - top[1], "vocab": None if km.drafter_vocab is None
            else len(km.drafter_vocab)}


def answer_pairs(tok, answers: str, prompts: str, max_answers: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids in the chat template, the answer's token ids) of the first answers of an answer file."""
    from evaluation.eval_loop import sharegpt_questions
    from evaluation.questions import chat_prompt_ids

    rows = [json.loads(line) for line in open(answers) if line.strip()][:max_answers]
    wanted = {a["question_id"] for a in rows}
    qs = {q["question_id"]: q for q in sharegpt_questions(prompts, None) if q["question_id"] in wanted}
    return [(chat_prompt_ids(tok, [{"role": "user", "content": qs[a["question_id"]]["turns"][0]}], MODEL)[0].tolist(),
             a["token_ids"][0]) for a in rows]


@torch.no_grad()
def decode_part(answers: str, prompts: str, n: int, new_tokens: int, spec: str, widths: list[int]) -> dict:
    from dataclasses import replace

    from kangaroo.drafter_config import DrafterConfig, apply_drafter_vocab, build_drafter, cost_curve
    from kangaroo.greedy import eos_ids_of
    from kangaroo.model_loading import load_tokenizer
    from kangaroo.speculative import kangaroo_generate

    km = KangarooModel(model_id=MODEL, base_model=load_causal_lm(MODEL, weights="float32"))
    tok = load_tokenizer(MODEL)
    cfg = DrafterConfig(model_id=MODEL, drafter=spec, draft_policy="goodput")
    apply_drafter_vocab(cfg, km, tok, print_fn=lambda *a: None)
    cost, eos = cost_curve(cfg, km), eos_ids_of(tok, km.config)
    drafters = {w: build_drafter(replace(cfg, tree_width=w), km, cost=cost) for w in widths}
    stats = {w: {"ms": 0.0, "blocks": 0, "committed": 0, "tree_blocks": 0, "branch_accepted": 0} for w in widths}
    for prompt, _ in answer_pairs(tok, answers, prompts, n):
        ids, outs = torch.tensor([prompt]), {}
        for w in widths:
            st = stats[w]

            def on_block(b, st=st):
                st["blocks"] += 1
                st["committed"] += len(b.committed)
                st["tree_blocks"] += int(b.tree is not None)
                st["branch_accepted"] += int(b.tree is not None and any(not b.tree.draft.tree.is_main(i)
                                                                        for i in b.tree.path[1:]))
            t0 = time.perf_counter()
            outs[w] = kangaroo_generate(km, ids, new_tokens, eos, drafter=drafters[w], on_block=on_block).tokens
            st["ms"] += (time.perf_counter() - t0) * 1e3
        assert all(o == outs[widths[0]] for o in outs.values()), "a width changed the output"
    for w in widths:
        st = stats[w]
        st["per_pass"] = st["committed"] / st["blocks"]
        st["time_vs_first"] = st["ms"] / stats[widths[0]]["ms"]
        print(f"[decode] {spec} width {w}: {st['per_pass']:.3f} tokens a pass, {st['tree_blocks']} tree blocks, "
              f"{st['branch_accepted']} accepted a branch, time {st['time_vs_first']:.3f}x width {widths[0]}",
              flush=True)
    return {"drafter": spec, "prompts": n, "new_tokens": new_tokens, "widths": {str(w): stats[w] for w in widths}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--answers", default="runs/record_nov30b/main/answers.jsonl")
    p.add_argument("--prompts-jsonl", default="assets/sharegpt.jsonl")
    p.add_argument("--max-answers", type=int, default=40)
    p.add_argument("--weights-list", default="stored,float32")
    p.add_argument("--max-rows", type=int, default=7)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--skip-agreement", action="store_true")
    p.add_argument("--skip-costs", action="store_true")
    p.add_argument("--decode-prompts", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--drafter", default="ngram,memory,self")
    p.add_argument("--widths", default="1,2,3")
    p.add_argument("--out", default="runs/exp_trees")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = {}
    if not args.skip_costs:
        out["costs"] = [cost_part(w, args.max_rows, args.reps) for w in args.weights_list.split(",")]
    if not args.skip_agreement:
        out["agreement"] = agreement_part(args.answers, args.prompts_jsonl, args.max_answers)
    if args.decode_prompts:
        out["decode"] = decode_part(args.answers, args.prompts_jsonl, args.decode_prompts, args.max_new_tokens,
                                    args.drafter, [int(w) for w in args.widths.split(",")])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    name = "trees.json" if not args.decode_prompts else f"decode_{args.drafter.replace(',', '+')}.json"
    atomic_write_text(Path(args.out) / name, json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a token of the feature drafter costs against a greedy step, in each weight regime, in one process (ratios
only: take them on a quiet machine for the record).

    python -m scripts.experiments feature_cost [--weights stored,float32] [--reps 50] [--window 16] [--out FILE.json]

Per regime (``--weights``: the bytes the engine reads), with the bundled model's pruned drafter vocabulary: the
median over ``--reps`` of a greedy step (the shallow and deep layers and the verifier's head over one token, after a
64-token context), of the feature drafter's token (its layer on one entry after a 64-entry context, then its head's
proposal: ``kangaroo.verify_cost``'s ``feature_ms``), of its catch-up after a block of 4 committed tokens (the
layer over 4 entries) and of a verify pass over 2 rows (a verified row: its excess over a step), interleaved so that
drift hits all alike; then the price of each target (``price``): the agreement a perfect-decision drafter at these
costs needs for 1.10x-1.45x.
"""
from __future__ import annotations

import json
import statistics

import torch

from common.atomic import atomic_write_text
from common.command_line import OneLineParser
from scripts.experiments.report_files import ENTRY
from kangaroo.timing import elapsed_ms


def parse_args(argv=None):
    p = OneLineParser(prog=f"{ENTRY} feature_cost", description=__doc__.splitlines()[0])
    p.add_argument("--model-id", default="smollm2-135m")
    p.add_argument("--weights", default="stored,float32", help="comma-separated --weights regimes")
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the figures there as JSON")
    return p.parse_args(argv)


@torch.no_grad()
def measure(weights: str, args) -> dict:
    from kangaroo.drafter_config import DrafterConfig, apply_drafter_vocab
    from kangaroo.feature_drafter import attach_feature_drafter
    from kangaroo.kangaroo_model import KangarooModel
    from kangaroo.model_loading import load_causal_lm, load_tokenizer
    from kangaroo.packed_head import configure, propose

    lm = load_causal_lm(args.model_id, weights=weights)
    km = KangarooModel(model_id=args.model_id, base_model=lm)
    apply_drafter_vocab(DrafterConfig(model_id=args.model_id), km, load_tokenizer(args.model_id))
    fd = attach_feature_drafter(km, args.window)
    configure(fd, "auto", frozen=True)
    ctx, d = 64, km.config.hidden_size
    caches = km.new_caches(ctx + 8)
    ids = torch.arange(ctx + 1)[None] + 100
    km.forward_deep(km.forward_shallow(ids[:, :ctx], caches.shallow).h, caches.deep)
    own = fd.new_cache(ctx + 8)
    f = torch.randn(ctx + 4, d)
    fd.step(f[:ctx], ids[0, 1:ctx + 1], own)

    def greedy():
        km.verifier_logits(km.forward_deep(km.forward_shallow(ids[:, ctx:], caches.shallow).h, caches.deep))
        caches.crop(ctx)

    def verify_2():
        km.verifier_logits(km.forward_deep(km.forward_shallow(ids[:, ctx - 1:ctx + 1], caches.shallow).h, caches.deep))
        caches.crop(ctx - 1)

    def token():
        propose(fd, fd.step(f[ctx:ctx + 1], ids[0, :1], own))
        own.crop(ctx)

    def catch_up():
        propose(fd, fd.step(f[ctx:ctx + 4], ids[0, :4], own))
        own.crop(ctx)

    times = {"greedy_step_ms": [], "verify_2_ms": [], "feature_token_ms": [], "catch_up_4_ms": []}
    for _ in range(args.reps + 3):
        for name, fn in zip(times, (greedy, verify_2, token, catch_up)):
            times[name].append(elapsed_ms(fn, km.device))
    out = {k: statistics.median(v[3:]) for k, v in times.items()}
    out["token_share_of_step"] = out["feature_token_ms"] / out["greedy_step_ms"]
    out["row_share_of_step"] = max(0.0, out["verify_2_ms"] / out["greedy_step_ms"] - 1)
    out["needed_agreement"] = price(out["token_share_of_step"], out["row_share_of_step"])
    return out


def price(draft: float, row: float) -> dict:
    """The agreement the feature drafter needs for each target speedup at these costs, drafting one token a position
    under a perfect decision (``policies.needed_agreement``): (decided before drafting, after): a floor, since a real
    gate is not perfect, and an upper bound on what chains add only where a row is free."""
    from scripts.experiments.ceiling.policies import StepCosts, needed_agreement

    c = StepCosts(draft=draft, row=row)
    return {f"{t:.2f}x": [round(needed_agreement(t, c, after_draft=a), 3) for a in (False, True)]
            for t in (1.10, 1.15, 1.30, 1.45)}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    result = {}
    for w in args.weights.split(","):
        result[w] = measure(w, args)
        r = result[w]
        print(f"[feature-cost] --weights {w}: greedy step {r['greedy_step_ms']:.2f} ms, feature token "
              f"{r['feature_token_ms']:.3f} ms ({r['token_share_of_step']:.1%} of a step), catch-up of 4 "
              f"{r['catch_up_4_ms']:.3f} ms, a verified row {r['row_share_of_step']:.1%} of a step; agreement needed "
              f"(before / after the draft): {r['needed_agreement']}")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1))
    return 0


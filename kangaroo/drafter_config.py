"""Flags -> drafter: resolve the ``auto`` choices, prune the drafter head, get the verify-cost curve.

    auto drafter      hybrid (n-gram match first, self-drafter otherwise)
    auto policy       goodput when deploying; threshold with --dvi-online true, so that every block drafts and
                      the online trainer gets tuples from the first block on (the goodput policy's declined
                      candidates feed it too, but far fewer)

Call ``apply_drafter_vocab`` before ``model.attach_drafter_head`` (the LoRA lives on the pruned sub-head), and
``build_drafter`` after it (the cost curve's head time is that of the head in use).
"""
from __future__ import annotations

from pathlib import Path

from kangaroo.draft_policy import make_policy
from kangaroo.drafters import make_drafter
from kangaroo.errors import UserError


def resolve_auto(args) -> None:
    if args.drafter == "auto":
        args.drafter = "hybrid"
    if args.draft_policy == "auto":
        args.draft_policy = "threshold" if getattr(args, "dvi_online", False) else "goodput"


def apply_drafter_vocab(args, model, tokenizer=None, print_fn=print):
    """Prune the drafter head to --drafter-vocab N tokens (no-op for 0). Counts come from --drafter-vocab-file,
    or are counted once from assets/sharegpt.jsonl and written to the default path."""
    n = getattr(args, "drafter_vocab", 0)
    if not n:
        return None
    from kangaroo.greedy import eos_ids_of
    from kangaroo.subvocab import count_tokens, default_counts_path, load_counts, save_counts, top_ids

    path = Path(args.drafter_vocab_file) if args.drafter_vocab_file else default_counts_path(args.model_id)
    if path.is_file():
        counts, meta = load_counts(path)
    elif args.drafter_vocab_file:
        raise UserError(f"--drafter-vocab-file {path} does not exist: write it with python -m scripts.build_subvocab")
    else:
        src = Path(__file__).resolve().parent.parent / "assets" / "sharegpt.jsonl"
        if not src.is_file() or tokenizer is None:
            raise UserError(f"--drafter-vocab needs token counts: {path} is missing and {src} cannot be counted; "
                            "run python -m scripts.build_subvocab (or python -m scripts.fetch_assets first)")
        print_fn(f"[drafter] counting tokens of {src} for the pruned drafter vocabulary (once) -> {path}")
        counts = count_tokens(tokenizer, src, model.config.vocab_size)
        save_counts(path, counts, {"model_id": args.model_id, "source": str(src), "tokens": int(counts.sum())})
    if len(counts) != model.config.vocab_size:
        raise UserError(f"{path} counts {len(counts)} tokens but the model's vocabulary has "
                        f"{model.config.vocab_size}: pass counts made with this model's tokenizer")
    ids = top_ids(counts, n, always=eos_ids_of(tokenizer, model.config) if tokenizer is not None else ())
    model.set_drafter_vocab(ids)
    return ids


def cost_curve(args, model, print_fn=print):
    from kangaroo.verify_cost import CostCurve, measure_cost_curve

    path = Path(args.cost_curve) if getattr(args, "cost_curve", "") else None
    if path is not None and path.is_file():
        try:
            return CostCurve.from_json(path)
        except (ValueError, KeyError) as e:
            raise UserError(f"--cost-curve {path} is not a cost curve ({e}): delete it to measure afresh")
    cost = measure_cost_curve(model, args.steps + 1)
    print_fn("[drafter] verify cost (ms) for n=1..{}: deep {} shallow {} head {:.2f}".format(
        args.steps + 1, [round(x, 2) for x in cost.deep_ms], [round(x, 2) for x in cost.shallow_ms], cost.head_ms))
    if path is not None:
        cost.to_json(path)
    return cost


def build_drafter(args, model, print_fn=print, cost=None):
    resolve_auto(args)
    if args.draft_policy == "goodput" and cost is None:
        cost = cost_curve(args, model, print_fn)
    return make_drafter(args.drafter, args.steps,
                        lambda: make_policy(args.draft_policy, args.threshold, cost, args.goodput_prior),
                        args.ngram_min, args.ngram_max)

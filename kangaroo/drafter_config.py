"""DrafterConfig -> drafter: resolve the ``auto`` choices, prune the drafter head, get the verify-cost curve.

``DrafterConfig`` (frozen) is built once from the flags by ``evaluation/cli.py``; nothing here reads flags.

    auto drafter      hybrid (n-gram match first, self-drafter otherwise)
    auto policy       goodput, deployed and online alike: with the packed head a probe costs ~1-3% of a step, so
                      the gate probes nearly every block and the trainer gets the judged candidates (kept or
                      declined) and the dense KD rows of every block; threshold made every block draft, costing
                      the online run its speed
    auto vocabulary   DEFAULT_VOCAB (FR-Spec) where the model's token counts are in runs/subvocab
    head precision    auto: int8 on the engine (kangaroo/packed_head.py); the LoRA merged when deployed

Call ``apply_drafter_vocab`` before ``drafter_head.attach_drafter_head`` (the LoRA lives on the pruned sub-head), and
``build_drafter`` after it (the cost curve's head time is that of the head in use).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from common.errors import UserError

AUTO_VOCAB = -1
DEFAULT_VOCAB = 8192  # auto: the pruned drafter vocabulary when the model's token counts are in runs/subvocab
from kangaroo.draft_policy import make_policy
from kangaroo.drafters import make_drafter


@dataclass(frozen=True)
class DrafterConfig:
    model_id: str = ""
    drafter: str = "auto"            # auto | self | ngram | hybrid
    draft_policy: str = "auto"       # auto | threshold | goodput
    threshold: float = 0.6
    steps: int = 6
    ngram_min: int = 1
    ngram_max: int = 3
    cost_curve: str = ""             # JSON verify-cost curve to read, or to write the measured one to
    goodput_prior: float = 4.0
    drafter_vocab: int = AUTO_VOCAB  # pruned drafter head: N most frequent tokens; 0: full; -1: auto (below)
    drafter_vocab_file: str = ""
    head_precision: str = "auto"     # the drafter head's weights: auto | int8 | bf16 | float32 (packed_head.py)
    probe_gate: bool = True          # goodput: decide self probes by kangaroo/probe_gate.py (else a fixed backoff)
    calibration_decay: float = 0.995  # goodput: the calibrator forgets old verdicts (a drafter learning online)


def resolve_auto(cfg: DrafterConfig, online: bool = False) -> DrafterConfig:
    """``auto`` drafter: hybrid; ``auto`` policy: goodput (online too: ``online`` is kept for callers)."""
    return replace(cfg, drafter="hybrid" if cfg.drafter == "auto" else cfg.drafter,
                   draft_policy="goodput" if cfg.draft_policy == "auto" else cfg.draft_policy)


def apply_drafter_vocab(cfg: DrafterConfig, model, tokenizer=None, print_fn=print):
    """Prune the drafter head to ``cfg.drafter_vocab`` N tokens (no-op for 0). Counts come from
    ``cfg.drafter_vocab_file``, or are counted once from assets/sharegpt.jsonl and written to the default path."""
    from kangaroo.greedy import eos_ids_of
    from kangaroo.subvocab import count_tokens, default_counts_path, load_counts, save_counts, top_ids

    path = Path(cfg.drafter_vocab_file) if cfg.drafter_vocab_file else default_counts_path(cfg.model_id)
    n = auto_vocab(cfg, model, path)
    if not n:
        return None
    if path.is_file():
        counts, meta = load_counts(path)
    elif cfg.drafter_vocab_file:
        raise UserError(f"--drafter-vocab-file {path} does not exist: write it with python -m scripts.build_subvocab")
    else:
        src = Path(__file__).resolve().parent.parent / "assets" / "sharegpt.jsonl"
        if not src.is_file() or tokenizer is None:
            raise UserError(f"--drafter-vocab needs token counts: {path} is missing and {src} cannot be counted; "
                            "run python -m scripts.build_subvocab (or python -m scripts.fetch_assets first)")
        print_fn(f"[drafter] counting tokens of {src} for the pruned drafter vocabulary (once) -> {path}")
        counts = count_tokens(tokenizer, src, model.config.vocab_size)
        save_counts(path, counts, {"model_id": cfg.model_id, "source": str(src), "tokens": int(counts.sum())})
    if len(counts) != model.config.vocab_size:
        raise UserError(f"{path} counts {len(counts)} tokens but the model's vocabulary has "
                        f"{model.config.vocab_size}: pass counts made with this model's tokenizer")
    ids = top_ids(counts, n, always=eos_ids_of(tokenizer, model.config) if tokenizer is not None else ())
    model.set_drafter_vocab(ids)
    return ids


def auto_vocab(cfg: DrafterConfig, model, counts_path: Path) -> int:
    """``cfg.drafter_vocab``, with auto resolved: ``DEFAULT_VOCAB`` when this model's token counts exist (the
    bundled model's are in runs/subvocab) and its vocabulary is at least twice that, else the full vocabulary."""
    if cfg.drafter_vocab != AUTO_VOCAB:
        return cfg.drafter_vocab
    fits = model.config.vocab_size >= 2 * DEFAULT_VOCAB and counts_path.is_file()
    return DEFAULT_VOCAB if fits else 0


def cost_curve(cfg: DrafterConfig, model, print_fn=print):
    from kangaroo.verify_cost import CostCurve, measure_cost_curve

    path = Path(cfg.cost_curve) if cfg.cost_curve else None
    if path is not None and path.is_file():
        try:
            return CostCurve.from_json(path)
        except (ValueError, KeyError) as e:
            raise UserError(f"--cost-curve {path} is not a cost curve ({e}): delete it to measure afresh")
    cost = measure_cost_curve(model, cfg.steps + 1)
    print_fn("[drafter] verify cost (ms) for n=1..{}: deep {} shallow {} head {:.2f}".format(
        cfg.steps + 1, [round(x, 2) for x in cost.deep_ms], [round(x, 2) for x in cost.shallow_ms], cost.head_ms))
    if path is not None:
        cost.to_json(path)
    return cost


def build_drafter(cfg: DrafterConfig, model, print_fn=print, cost=None, online: bool = False):
    """The drafter ``cfg`` names (``auto`` resolved; ``online``: the run trains the drafter); a goodput policy
    measures (or reads) the verify-cost curve unless ``cost`` is given."""
    from kangaroo.packed_head import configure

    cfg = resolve_auto(cfg, online)
    configure(model, cfg.head_precision, frozen=not online)  # before the cost curve times the head
    if cfg.draft_policy == "goodput" and cost is None:
        cost = cost_curve(cfg, model, print_fn)
    return make_drafter(cfg.drafter, cfg.steps, policy_factory(cfg, cost), cfg.ngram_min, cfg.ngram_max)


def policy_factory(cfg: DrafterConfig, cost):
    """One new policy per call (each drafter calibrates apart), as ``cfg`` says."""
    return lambda: make_policy(cfg.draft_policy, cfg.threshold, cost, cfg.goodput_prior, gate=cfg.probe_gate,
                               decay=cfg.calibration_decay)

"""The seeds' regime on paper: what the drafters' MEASURED held-out skill would buy on a 7B-class model decoded on a
GPU, where a decode step is memory-bound. A PROJECTION, not a measurement: no GPU ran it.

The cost model (shares of one plain decode step, which reads every weight once): a verify pass over up to
``free_rows`` rows costs one step (rows are nearly free when a step streams 13 GB of weights); a drafted token costs
the weights its drafter reads over the model's (``weight_share_costs``): the self-drafter its first k layers and its
head's rows, the feature drafter one decoder layer, its input projection and its head's rows. Kernel launches,
attention over the context and the sampler are not counted, so every figure is optimistic in the same way.

The skill: each trainable drafter's top-1 agreement at every position of the fixed held-out set
(``dvi/heldout.py``: teacher-forced, which is exact for the self-drafter while its drafts are accepted). A block at
position s drafts ``gamma`` tokens, accepts the run of agreeing positions from s (at most gamma) and commits it plus
the verifier's token; ``foresight`` drafts exactly as many as will be accepted, plus the one that is not (the best any
stopping rule could do with this skill).

    python -m scripts.experiments projection --model-id smollm2-135m --load-lora runs/main/checkpoints/final.pt \
        --out runs/exp_projection

OUT/table.md and OUT/summary.json: per drafter, the measured held-out agreement and the projected speed against
plain decoding per gamma and with foresight, beside the DVI paper's 2.16x (Vicuna-7B, one H100, Spec-Bench).
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from common.command_line import OneLineParser
from scripts.experiments.report_files import ENTRY, command_line, meta_markdown, write_report

# lmsys/vicuna-7b-v1.5's config.json: the DVI paper's model
VICUNA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32000}
DVI_PAPER_SPEEDUP = 2.16   # DVI (Vicuna-7B, one H100, Spec-Bench), the figure this projection is set beside


@dataclass(frozen=True)
class GpuCosts:
    draft: dict           # drafter name -> one drafted token, as a share of a decode step
    free_rows: int = 8    # a verify pass over up to this many rows costs one step
    row: float = 0.0      # each row beyond them


def layer_params(cfg: dict) -> int:
    d, i = cfg["hidden_size"], cfg["intermediate_size"]
    kv = d * cfg["num_key_value_heads"] // cfg["num_attention_heads"]
    return 2 * d * d + 2 * d * kv + 3 * d * i


def weight_share_costs(cfg: dict, exit_layer: int, drafter_vocab: int | None) -> GpuCosts:
    """A drafted token's weights over a decode step's (all layers and the head), for a memory-bound GPU decode.
    ``drafter_vocab``: the rows of a pruned drafter head (None: the full vocabulary)."""
    d, v = cfg["hidden_size"], cfg["vocab_size"]
    head = (drafter_vocab or v) * d
    step = cfg["num_hidden_layers"] * layer_params(cfg) + v * d
    return GpuCosts({"self": (exit_layer * layer_params(cfg) + head) / step,
                     "feature": (layer_params(cfg) + 2 * d * d + head) / step})


def chain_runs(agree: torch.Tensor, seq: torch.Tensor) -> list[list[int]]:
    """Per sequence, the run of consecutive agreeing positions from each of its positions (uncapped)."""
    runs, out = [], {}
    for a, s in zip(reversed(agree.tolist()), reversed(seq.tolist())):
        prev = out.setdefault(s, [])
        prev.append((prev[-1] + 1 if prev else 1) if a else 0)
    for s in dict.fromkeys(seq.tolist()):
        runs.append(list(reversed(out[s])))
    return runs


def block_walk(runs: list[list[int]], draft: float, gamma: int | None, costs: GpuCosts) -> float:
    """Tokens per step over every held-out sequence, blocks walked from its first position: ``gamma`` drafts per
    block, or (None) foresight: as many drafts as will be accepted, plus the first that is not (at most 8)."""
    tokens = spent = 0.0
    for run in runs:
        s = 0
        while s < len(run):
            accepted = min(run[s], gamma if gamma is not None else costs.free_rows - 1)
            drafted = gamma if gamma is not None else min(accepted + 1, costs.free_rows - 1)
            rows = drafted + 1
            spent += 1 + drafted * draft + max(0, rows - costs.free_rows) * costs.row
            n = min(accepted + 1, len(run) - s)
            tokens += n
            s += n
    return tokens / spent if spent else 0.0


def project(agree: torch.Tensor, seq: torch.Tensor, draft: float, costs: GpuCosts,
            gammas: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)) -> dict:
    """One drafter's projected speed against plain decoding: per gamma, the best of them, and foresight."""
    runs = chain_runs(agree, seq)
    per = {g: block_walk(runs, draft, g, costs) for g in gammas}
    best = max(per, key=per.get)
    return {"top1": float(agree.double().mean()), "draft_cost": draft, "per_gamma": per, "best_gamma": best,
            "best": per[best], "foresight": block_walk(runs, draft, None, costs)}


def heldout_agreement(args) -> tuple[dict[str, torch.Tensor], torch.Tensor, int | None]:
    """Each trainable drafter of ``--load-lora`` (and the identity drafter, Kangaroo's) on the held-out set: whether
    its top-1 agrees at every position; the positions' sequences; the drafter vocabulary."""
    from dvi.config import HeldoutConfig
    from dvi.heldout import SelfHeldout
    from dvi.heldout_eval import heldout_set
    from kangaroo.drafter_config import DrafterConfig
    from kangaroo.packed_head import configure
    from kangaroo_dvi.session import NO_DRAFTER, build_session
    from kangaroo_dvi.session_config import SessionConfig

    agree, capture, vocab = {}, None, None
    for name, ckpt, full in (("identity", "", 0), ("self", args.load_lora, -1)):  # Kangaroo's: the full head
        s = build_session(SessionConfig(model_id=args.model_id, num_threads=args.num_threads, drafter_checkpoint=ckpt),
                          DrafterConfig(drafter_vocab=full), drafting=NO_DRAFTER)
        configure(s.model, "auto", frozen=True)  # the head as deployed
        capture = capture or heldout_set(s.model, s.tokenizer, HeldoutConfig())
        drafter = SelfHeldout(s.model)
        drafter.prepare()
        agree[name] = drafter.predict(capture) == capture.target
        vocab = None if s.model.drafter_vocab is None else len(s.model.drafter_vocab)
        for extra in drafters_of(s):
            agree[extra.name] = extra.predict(capture) == capture.target
    return agree, capture.seq, vocab


def drafters_of(session) -> list:
    """The session's held-out drafters other than the self-drafter: its feature drafter, when the checkpoint holds
    one."""
    from dvi.heldout import FeatureHeldout

    return [FeatureHeldout(session.model)] if getattr(session.model, "feature_drafter", None) is not None else []


def table(results: dict, costs: GpuCosts, meta: dict) -> str:
    gammas = sorted(next(iter(results.values()))["per_gamma"])
    head = ["drafter", "held-out top-1", "drafted token / step"] + [f"gamma {g}" for g in gammas] + ["foresight"]
    lines = meta_markdown("The seeds' regime on paper: a PROJECTION onto a 7B-class model on a GPU", meta)
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, r in results.items():
        cells = [name, f"{r['top1']:.3f}", f"{r['draft_cost']:.3f}"]
        cells += [f"{r['per_gamma'][g]:.2f}x" for g in gammas] + [f"{r['foresight']:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Rows free up to {costs.free_rows} per pass. The DVI paper measures {DVI_PAPER_SPEEDUP}x on "
              "Spec-Bench (Vicuna-7B, one H100); this projects the skill measured here onto that regime's costs.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = OneLineParser(prog=f"{ENTRY} projection", description=__doc__.splitlines()[0])
    p.add_argument("--model-id", default="smollm2-135m")
    p.add_argument("--load-lora", required=True, help="the trained drafter checkpoint (e.g. the main job's final.pt)")
    p.add_argument("--exitlayer-7b", type=int, default=2, help="the self-drafter's exit layer on the 7B model")
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    agree, seq, vocab = heldout_agreement(args)
    costs = weight_share_costs(VICUNA_7B, args.exitlayer_7b, vocab)
    results = {name: project(a, seq, costs.draft["self" if name in ("identity", "self") else name], costs)
               for name, a in agree.items()}
    meta = {"model (skill)": args.model_id, "checkpoint": args.load_lora, "costs": "Vicuna-7B weight shares "
            f"(exit layer {args.exitlayer_7b}, drafter vocabulary {vocab or 'full'})", "positions": int(seq.numel()),
            "command": command_line("projection", list(argv) if argv is not None else sys.argv[1:])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = table(results, costs, meta)
    write_report(out, md, {"meta": meta, "costs": asdict(costs), "results": results})
    print(md)
    return 0

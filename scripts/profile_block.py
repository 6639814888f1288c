"""What one Kangaroo/DVI block costs on this machine, part by part, and the mean accepted length it needs to win.

    python -m scripts.profile_block --model-id smollm2-135m --context 160 --out runs/profile [--num-threads 1]

Times (median of --repeats, each after a warm-up), all at a context of --context tokens in the KV cache:

  ar         one plain greedy step: all layers on one token + the verifier head (what the baseline pays per token)
  shallow    the first k layers on one token (the drafter body; paid once per drafted token and once for the
             block's first token)
  head       the drafter head on one hk: the verifier's head (identity Kangaroo) and the LoRA head (DVI)
  deep(n)    layers k.. on n tokens + the verifier head on n rows: the verify pass of a block of n-1 drafts
  train      one DVI trainer step (--dvi-batch-size tuples, top-K KD + CE + PG, the full preset past warm-up)
  stream_limit  the model's weight bytes one token reads (decoder layers + head) / the rate one core streams
             weights, measured in the same run as a 1-row F.linear over a --stream-mb matrix: the floor of ``ar``

Each part is timed for every engine of --engines (auto: the lean C++ CPU engine, plain: PyTorch ops) at every
thread count of --threads; the top-level ``costs`` are the first engine at the first thread count, the others
are under ``variants`` ("ENGINE/THREADSt"); the trainer step is timed once, in the first variant.

Cost model of a block that drafts m tokens and commits c of them (c = accepted + 1):

  block(m)  = (m + 1) shallow + m head + deep(m + 1) [+ train / --dvi-update-every while learning online]
  speedup   = c * ar / block(m),  so the block breaks even at c = block(m) / ar committed tokens

The cost model and its tables are ``scripts/profile/cost_model.py`` (pure), the timing ``scripts/profile/measure.py``;
one self-drafted token's cost as a share of ``ar``, per drafter vocabulary and head precision, is
``scripts/profile/draft.py`` (--drafter-vocabs, --head-precisions, --draft-adapter).
Writes OUT/block_costs.json and OUT/block_costs.md. The DVI head's rank is --dvi-lora-r (default: the rank of
--load-lora when given, else 64). Timing only: no answer is decoded and nothing is asserted.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import torch

from common.atomic import atomic_write_text
from evaluation.cli import (OneLineParser, add_model_args, add_speculation_args, apply_runtime, resolve_device_dtype,
                            resolve_model_id)
from kangaroo import cpu_engine
from scripts.profile.cost_model import report_markdown, variants_markdown
from scripts.profile.draft import draft_markdown, measure_draft
from scripts.profile.measure import measure, stream_rate, weight_bytes


def build_parser() -> OneLineParser:
    p = OneLineParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    add_speculation_args(p)
    p.add_argument("--context", type=int, default=160, help="tokens already in the KV cache when timing")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--load-lora", default=None, help="a DVI checkpoint: its rank/alpha set the LoRA head")
    p.add_argument("--dvi-lora-r", type=int, default=None)
    p.add_argument("--dvi-batch-size", type=int, default=64)
    p.add_argument("--dvi-topk", type=int, default=1024)
    p.add_argument("--dvi-update-every", type=int, default=8)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts to time")
    p.add_argument("--engines", default="auto,plain", help="comma-separated engines to time: auto, plain")
    p.add_argument("--stream-mb", type=int, default=512, help="size of the matrix that measures the stream rate")
    p.add_argument("--drafter-vocabs", default="0,16384,8192,4096",
                   help="drafter vocabulary sizes to time one self-drafted token at (0: the full vocabulary)")
    p.add_argument("--head-precisions", default="float32,bf16,int8",
                   help="drafter head precisions to time one self-drafted token with (kangaroo/packed_head.py)")
    p.add_argument("--draft-adapter", default="none", choices=("none", "train"),
                   help="the drafter of the drafted-token rows: none (layer-k features) or a trained Kangaroo adapter "
                        "(its layer runs per drafted token too)")
    p.add_argument("--out", default="runs/profile")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    resolve_model_id(args)
    resolve_device_dtype(args)
    apply_runtime(args)
    from kangaroo.kangaroo_model import KangarooModel
    from kangaroo.model_loading import load_causal_lm

    r, alpha = args.dvi_lora_r or 64, float(args.dvi_lora_r or 64)
    if args.load_lora:
        from dvi.checkpoint import read_ckpt

        meta = read_ckpt(args.load_lora)["meta"]
        r, alpha = int(meta["lora_r"]), float(meta["lora_alpha"])
    lm = load_causal_lm(args.model_id, device=args.device, dtype=args.dtype)
    km = KangarooModel(model_id=args.model_id, exit_layer=args.exitlayer, base_model=lm)
    rate = stream_rate(args.stream_mb, args.repeats, km.device, km.dtype)
    limit_ms = weight_bytes(lm) / rate * 1e3
    variants = {}
    for engine in args.engines.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            cpu_engine.set_enabled(engine == "auto")
            torch.set_num_threads(threads)
            costs = measure(km, args, r, alpha, train=not variants)
            variants[f"{engine}/{threads}t"] = {**costs, "stream_limit_ms": limit_ms}
    costs = {**variants[next(iter(variants))]}
    costs["variants"] = variants
    first = next(iter(variants))
    cpu_engine.set_enabled(first.startswith("auto"))
    torch.set_num_threads(int(first.split("/")[1][:-1]))
    drafter_km = km if args.draft_adapter == "none" else KangarooModel(
        model_id=args.model_id, exit_layer=args.exitlayer, base_model=lm, adapter_mode="train")
    costs["draft"] = measure_draft(drafter_km, args, r, alpha)
    meta = {"model": args.model_id, "device": args.device, "dtype": args.dtype, "threads": args.threads,
            "engines": args.engines, "exit layer": args.exitlayer, "context": args.context, "repeats": args.repeats,
            "lora r": r, "drafter adapter": args.draft_adapter, "trainer batch": args.dvi_batch_size,
            "top-K": args.dvi_topk,
            "update every": args.dvi_update_every, "weight MB per token": round(weight_bytes(lm) / 1e6, 1),
            "stream GB/s (1 thread)": round(rate / 1e9, 2),
            "command": shlex.join(["python", "-m", "scripts.profile_block", *(sys.argv[1:] if argv is None else argv)])}
    md = report_markdown(costs, meta, args.steps, args.dvi_update_every)
    md += "\n" + "\n".join(draft_markdown(costs["draft"], costs["ar_ms"], costs["shallow_ms"])) + "\n"
    md += "\nAll variants (ms; head = the identity drafter head):\n\n" + "\n".join(variants_markdown(variants)) + "\n"
    write_report(args.out, md, meta, costs)
    return 0


def write_report(out: str, md: str, meta: dict, costs: dict) -> None:
    """OUT/block_costs.md and OUT/block_costs.json, and the markdown on stdout."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "block_costs.md", md)
    atomic_write_text(out / "block_costs.json", json.dumps({"meta": meta, "costs": costs}, indent=2))
    print(md)


if __name__ == "__main__":
    from evaluation.cli import run_main

    raise SystemExit(run_main(main))

"""What one Kangaroo/DVI block costs on this machine, part by part, and the mean accepted length it needs to win.

    python -m scripts.profile block --model-id smollm2-135m --context 160 --out runs/profile [--num-threads 1]

Times (median of --repeats, each after a warm-up), all at a context of --context tokens in the KV cache:

  ar         one plain greedy step: all layers on one token + the verifier head (what the baseline pays per token)
  shallow    the first k layers on one token (the drafter body; paid once per drafted token and once for the
             block's first token)
  head       the drafter head on one hk: the verifier's head (identity Kangaroo) and the LoRA head (DVI)
  deep(n)    layers k.. on n tokens + the verifier head on n rows: the verify pass of a block of n-1 drafts
  train      one DVI trainer step (--dvi-batch-size tuples, top-K KD + CE + PG, the full preset past warm-up)
  stream_limit  the bytes one token reads in the format the engine reads (decoder layers + head) / the rate one
             core streams them with the engine's read loop over a --stream-mb buffer: the floor of ``ar``
  fma_floor(n)  n x the weights a token row multiplies by / the float32 FMA rate of one core: the floor of
             deep(n) + shallow, whatever the weight format (``scripts/profile/limits.py``)
  batch(c)   one greedy step of c sequences at once, each over its own caches, as the server batches requests
             (--batch-sizes; ``batch.py``), and the ceiling c x batch(1) / batch(c) it sets

Each part is timed for every weight format of --weights-list (stored: as the file holds them, float32, or a
conversion: bfloat16, float16, q8_0, q4_0, q4_1), engine of --engines (auto: the lean C++ CPU engine, plain:
PyTorch ops; plain only with the first format: it multiplies by the float32 values) and thread count of
--threads; the top-level ``costs`` are the first variant, the others are under ``variants``
("FORMAT/ENGINE/THREADSt"); the trainer step is timed once, in the first variant.

Cost model of a block that drafts m tokens and commits c of them (c = accepted + 1):

  block(m)  = (m + 1) shallow + m head + deep(m + 1) [+ train / --dvi-update-every while learning online]
  speedup   = c * ar / block(m),  so the block breaks even at c = block(m) / ar committed tokens

The cost model and its tables are ``cost_model.py`` (pure), the timing ``measure.py``; one self-drafted token's
cost as a share of ``ar``, per drafter vocabulary and head precision, is ``draft.py`` (--drafter-vocabs,
--head-precisions, --draft-adapter).
Writes OUT/block_costs.json and OUT/block_costs.md. The DVI head's rank is --dvi-lora-r (default: the rank of
--load-lora when given, else 64). Timing only: no answer is decoded and nothing is asserted.
"""
from __future__ import annotations

import torch

from evaluation.cli import OneLineParser, apply_runtime, int_list, resolve_device_dtype, resolve_model_id
from kangaroo import cpu_engine
from scripts.profile import limits
from scripts.profile.batch import batch_costs, batch_markdown
from scripts.profile.cost_model import report_markdown, variants_markdown
from scripts.profile.draft import draft_markdown, measure_draft
from scripts.profile.measure import measure
from scripts.profile.report import command, mode_parser, write_report


def build_parser() -> OneLineParser:
    p = mode_parser("block", __doc__)
    p.add_argument("--context", type=int, default=160, help="tokens already in the KV cache when timing")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--load-lora", default=None, help="a DVI checkpoint: its rank/alpha set the LoRA head")
    p.add_argument("--dvi-lora-r", type=int, default=None)
    p.add_argument("--dvi-batch-size", type=int, default=64)
    p.add_argument("--dvi-topk", type=int, default=1024)
    p.add_argument("--dvi-update-every", type=int, default=8)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts to time")
    p.add_argument("--engines", default="auto,plain", help="comma-separated engines to time: auto, plain")
    p.add_argument("--weights-list", default="stored",
                   help="comma-separated --weights formats to time (stored, float32, bfloat16, float16, q8_0, q4_0, "
                        "q4_1): one model each, converted where the format is not the file's")
    p.add_argument("--stream-mb", type=int, default=512, help="size of the buffer that measures the stream rate")
    p.add_argument("--drafter-vocabs", default="0,16384,8192,4096",
                   help="drafter vocabulary sizes to time one self-drafted token at (0: the full vocabulary)")
    p.add_argument("--head-precisions", default="float32,bf16,int8",
                   help="drafter head precisions to time one self-drafted token with (kangaroo/packed_head.py)")
    p.add_argument("--draft-adapter", default="none", choices=("none", "train"),
                   help="the drafter of the drafted-token rows: none (layer-k features) or a trained Kangaroo adapter "
                        "(its layer runs per drafted token too)")
    p.add_argument("--batch-sizes", default="1,2,4,8",
                   help="comma-separated counts of sequences to time one batched greedy step of, in the first "
                        "variant ('' to skip)")
    p.add_argument("--out", default="runs/profile")
    return p


def lora_shape(args) -> tuple[int, float]:
    """The DVI head's rank and alpha: --load-lora's, else --dvi-lora-r (default 64)."""
    if not args.load_lora:
        return args.dvi_lora_r or 64, float(args.dvi_lora_r or 64)
    from dvi.checkpoint import read_ckpt

    meta = read_ckpt(args.load_lora)["meta"]
    return int(meta["lora_r"]), float(meta["lora_alpha"])


def measure_formats(args, r: int, alpha: float, rate: float, fmas: float) -> tuple[dict, dict, list, dict]:
    """Every variant's costs (with its stream limit and FMA floors), bytes per token per format, and, in the first
    format, engine and thread count, one self-drafted token's costs (``draft.py``) and the batched greedy steps
    (``batch.py``)."""
    from kangaroo.kangaroo_model import KangarooModel
    from kangaroo.model_loading import load_causal_lm

    variants, per_format, draft, batch = {}, {}, [], {}
    for i, fmt in enumerate(args.weights_list.split(",")):
        lm = load_causal_lm(args.model_id, device=args.device, dtype=args.dtype, weights=fmt)
        km = KangarooModel(model_id=args.model_id, exit_layer=args.exitlayer, base_model=lm)
        nbytes, weights = limits.bytes_per_token(lm), limits.weights_per_token(lm)
        per_format[fmt] = f"{nbytes / 1e6:.1f} ({limits.stored_formats(lm)})"
        floors = {n: n * weights / fmas * 1e3 for n in range(1, args.steps + 2)}
        for engine in args.engines.split(",") if i == 0 else ["auto"]:
            for threads in (int(t) for t in args.threads.split(",")):
                cpu_engine.set_enabled(engine == "auto")
                torch.set_num_threads(threads)
                costs = measure(km, args, r, alpha, train=not variants)
                variants[f"{fmt}/{engine}/{threads}t"] = {**costs, "stream_limit_ms": nbytes / rate * 1e3,
                                                          "fma_floor_ms": floors}
        if i == 0:
            cpu_engine.set_enabled(args.engines.split(",")[0] == "auto")
            torch.set_num_threads(int(args.threads.split(",")[0]))
            drafter_km = km if args.draft_adapter == "none" else KangarooModel(
                model_id=args.model_id, exit_layer=args.exitlayer, base_model=lm, adapter_mode="train")
            draft = measure_draft(drafter_km, args, r, alpha)
            batch = batch_costs(km, args.context, args.batch_sizes, args.repeats) if args.batch_sizes else {}
        del km, lm
    return variants, per_format, draft, batch


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.batch_sizes = int_list(args.batch_sizes, "--batch-sizes", 1) if args.batch_sizes.strip() else []
    resolve_model_id(args)
    resolve_device_dtype(args)
    apply_runtime(args)
    r, alpha = lora_shape(args)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rate, fmas = limits.stream_rate(args.stream_mb, args.repeats), limits.fma_rate(args.repeats)
    torch.set_num_threads(threads)
    variants, per_format, draft, batch = measure_formats(args, r, alpha, rate, fmas)
    costs = {**variants[next(iter(variants))]}
    costs["variants"] = variants
    costs["draft"] = draft
    costs["batch_ms"] = batch
    meta = {"model": args.model_id, "device": args.device, "dtype": args.dtype, "threads": args.threads,
            "engines": args.engines, "weights": args.weights_list, "exit layer": args.exitlayer,
            "context": args.context, "repeats": args.repeats, "lora r": r, "trainer batch": args.dvi_batch_size,
            "top-K": args.dvi_topk, "drafter adapter": args.draft_adapter, "update every": args.dvi_update_every,
            "stream GB/s (1 thread, engine read loop)": round(rate / 1e9, 2),
            "float32 FMA G/s (1 thread)": round(fmas / 1e9, 2),
            **{f"{fmt}: MB per token (read as)": v for fmt, v in per_format.items()},
            "command": command("block", argv)}
    md = report_markdown(costs, meta, args.steps, args.dvi_update_every)
    md += "\n" + "\n".join(draft_markdown(costs["draft"], costs["ar_ms"], costs["shallow_ms"])) + "\n"
    if batch:
        md += "\n".join(batch_markdown(batch)) + "\n"
    md += "\nAll variants (ms; head = the identity drafter head):\n\n" + "\n".join(variants_markdown(variants)) + "\n"
    write_report(args.out, "block_costs", md, {"meta": meta, "costs": costs})
    return 0
